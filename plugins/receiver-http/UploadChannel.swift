import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import SluiceCore

/// Hummingbird's HTTP/1 child channel with Sluice's connection guard added:
/// the connection cap, header/idle timeouts, and closing a connection whose
/// request body was refused before it was read.
struct UploadChannel: HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let limits: ConnectionGuard.Limits
    let connections: ConnectionLimiter
    let maxHeaderSize: Int
    /// Whether request bodies may be spliced into their files (the listener's `splice`,
    /// never with TLS).
    let splice: Bool
    /// The listener's TLS context, if it serves HTTPS.
    let tls: TLSServer?
    /// The listener's logger (the `logger` Hummingbird passes is quieted to warnings).
    let listenerLogger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard connections.tryAcquire() else {
            // Over max_connections: refuse at once rather than queue (like the tcp receiver).
            logger.warning("refusing a connection: \(connections.limit) are open (max_connections)")
            return channel.close().flatMapThrowing { throw SluiceError(.overloaded, "max_connections reached") }
        }
        let connections = self.connections
        channel.closeFuture.whenComplete { _ in connections.release() }
        return channel.eventLoop.makeCompletedFuture {
            // First in the pipeline: every handler after it sees plaintext.
            try tls?.addHandler(to: channel, logger: listenerLogger, answeringPlainHTTP: true)
            let pace = ReadPace()
            let clock = ConnectionClock(pace: pace)
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderFieldSize = maxHeaderSize
            limits.maxHeaderListSize = maxHeaderSize
            // Reads grow to 1 MiB while a body streams in (NIO's default stops at 64 KiB):
            // fewer, larger chunks mean fewer hops through stages and sinks per GiB. Body
            // parts are slices of these buffers, never copies; idle connections keep small
            // ones. As for tcp, reads are capped by the pipeline's pace and by a share of
            // the read budget among open connections (ReadPace), so a slow pipeline or many
            // connections do not each hold megabytes.
            try channel.syncOptions?.setOption(
                ChannelOptions.recvAllocator,
                value: PacedRecvAllocator(adaptive: Self.readSizes, pace: pace, connections: connections)
            )
            // One read per wake-up (NIO's default is four, each growing): the handler is then
            // at most a read ahead, and a body about to be spliced is not read into memory
            // first (measured, 256 × 1 MiB PUTs: 19% of the bytes were, with four).
            try channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(InboundBytesObserver(clock: clock))
            let connectionGuard = ConnectionGuard(limits: self.limits, clock: clock, logger: logger)
            if splice {
                let splicer = HTTPSpliceHandler(pace: pace, connectionGuard: connectionGuard)
                connectionGuard.splice = splicer
                try sync.addHandler(splicer)
            }
            try sync.configureHTTPServerPipeline(
                withPipeliningAssistance: false,
                withErrorHandling: false,
                withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: limits
            )
            try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try sync.addHandler(connectionGuard)
            // Hummingbird's handler closes idle connections when a graceful shutdown starts.
            try sync.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            // Reading stops while one part waits for the handler (NIO's default lets ten
            // wait): what a connection holds is then about a read or two, and the pace
            // measures the pipeline, not a queue filling up.
            return try NIOAsyncChannel(
                wrappingChannelSynchronously: channel,
                configuration: .init(
                    backPressureStrategy: .init(lowWatermark: 1, highWatermark: 1),
                    isOutboundHalfClosureEnabled: true
                )
            )
        }
    }

    static let readSizes = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 * 1024, maximum: 1 << 20)

    func handle(value asyncChannel: Value, logger: Logger) async {
        // The connection's requests run on its event loop: reading a body part and
        // consuming it happen on one thread, with no hop to the cooperative pool and
        // back for every chunk and every response.
        await withTaskExecutorPreference(EventLoopTaskExecutor(asyncChannel.channel.eventLoop)) {
            await handleHTTP(asyncChannel: asyncChannel, logger: logger)
        }
    }
}

/// When bytes last arrived on a connection, and the pace its pipeline takes them at,
/// shared by the two handlers of one channel (both run on the channel's event loop only).
final class ConnectionClock {
    let pace: ReadPace
    init(pace: ReadPace) { self.pace = pace }

    /// Set when bytes arrive; cleared when a read is asked for.
    var bytesSinceRead = false
    /// When the first byte of the current request head arrived.
    var headStartedAt: NIODeadline?
}

/// Sits before the HTTP decoder and notes when raw bytes arrive.
final class InboundBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let clock: ConnectionClock

    init(clock: ConnectionClock) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock.pace.didDeliver(bytes: unwrapInboundIn(data).readableBytes)
        clock.bytesSinceRead = true
        if clock.headStartedAt == nil { clock.headStartedAt = .now() }
        context.fireChannelRead(data)
    }
}

/// Enforces per-connection timeouts and closes connections whose request body
/// was answered before it was read.
///
/// - Header timeout: once the first byte of a request arrived, its head must be
///   complete within `headerTimeout`, however slowly it trickles (slowloris).
/// - Idle timeout: between requests, and whenever the server asked for body bytes,
///   the client may stay silent at most `idleTimeout`. Silence while the *server*
///   is not reading (a slow sink holding back pressure) does not count.
/// - Early answers: a final response finished before the request's end arrived
///   (401, 404, 413 from Content-Length, 503…) gets `Connection: close`; the
///   connection's output is closed once it is flushed, remaining input is
///   discarded for a short linger (so the client reads the answer instead of a
///   reset), then the connection closes.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct Limits: Sendable {
        var headerTimeout: TimeAmount
        var idleTimeout: TimeAmount
        /// How long input is discarded after an early answer before closing.
        var linger: TimeAmount = .seconds(2)
    }

    private enum Phase {
        /// Waiting for the next request head (idle since the given time).
        case awaitingHead(since: NIODeadline)
        /// Reading a request body.
        case readingBody
        /// The request ended; the response is being produced.
        case responding
        /// An early answer was sent; input is discarded until the connection closes.
        case lingering
    }

    private let limits: Limits
    private let clock: ConnectionClock
    private let logger: Logger
    private var phase: Phase = .awaitingHead(since: .now())
    /// When the server last asked for bytes that have not arrived yet.
    private var readRequestedAt: NIODeadline?
    private var requestEnded = true
    /// Request heads received minus final responses finished (more than one when pipelining).
    private var outstanding = 0
    private var closeAfterResponse = false
    private var timer: Scheduled<Void>?
    private let tick: TimeAmount
    private var context: ChannelHandlerContext?
    /// The connection's splice handler, told when a spliced body stalls.
    weak var splice: HTTPSpliceHandler?
    /// Body bytes still to drop: the decoder's parts for bytes that were spliced (see ``HTTPSpliceHandler``).
    private var dropping = 0

    init(limits: Limits, clock: ConnectionClock, logger: Logger) {
        self.limits = limits
        self.clock = clock
        self.logger = logger
        let shortest = min(limits.headerTimeout, limits.idleTimeout)
        self.tick = max(.milliseconds(20), min(.seconds(1), .nanoseconds(shortest.nanoseconds / 4)))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        phase = .awaitingHead(since: .now())
        scheduleTick(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .lingering = phase {
            // Answered already: the rest of this request is dropped unread.
            return
        }
        switch part {
        case .head:
            phase = .readingBody
            dropping = 0
            requestEnded = false
            closeAfterResponse = false
            outstanding += 1
        case .body(let bytes):
            if dropping > 0 {
                dropping -= bytes.readableBytes
                return
            }
        case .end:
            requestEnded = true
            if case .readingBody = phase { phase = .responding }
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A request just ended and it is the only one in progress: ask for the next
        // request's bytes now. The async channel asks only once its handler took every
        // part, and by then the connection has stopped waiting for input: NIO takes the
        // socket out of the poll set after every request and puts it back for the next
        // (two `epoll_ctl` calls a request on a keep-alive connection, ~10,000 a second
        // at 64 × 4 KiB). Asking here keeps it in the set. A client that does not pipeline
        // sends nothing more until it has the response, so this read waits; one that
        // does gets one request read ahead, no more (`outstanding` is then 2).
        if requestEnded, outstanding == 1, case .responding = phase {
            context.read()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .lingering = phase, let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        clock.pace.willRead()
        noteReadRequested()
        context.read()
    }

    /// The server waits for body bytes from now on (a read, or a spliced body's wait).
    func noteReadRequested() {
        if readRequestedAt == nil || clock.bytesSinceRead {
            readRequestedAt = .now()
            clock.bytesSinceRead = false
        }
    }

    // MARK: Splicing (see HTTPSpliceHandler)

    /// Whether the current request's body may switch to splicing: it is being read and
    /// has not ended.
    var canSplice: Bool {
        guard context != nil, !requestEnded, case .readingBody = phase else { return false }
        return true
    }

    /// Sends an empty body part after those decoded so far: where the spliced bytes start.
    func fireSpliceMarker() {
        guard let context else { return }
        context.fireChannelRead(wrapInboundOut(.body(ByteBuffer())))
        context.fireChannelReadComplete()
    }

    /// Body bytes arrived without a read (spliced).
    func noteBodyBytes() { clock.bytesSinceRead = true }

    /// Drops the next `count` bytes of body parts (the decoder's parts for spliced bytes).
    func dropBodyBytes(_ count: Int) { dropping = count }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.kind != .informational:
            if !requestEnded {
                closeAfterResponse = true
                head.headerFields[.connection] = "close"
                context.write(wrapOutboundOut(.head(head)), promise: promise)
                return
            }
        case .end:
            if closeAfterResponse {
                phase = .lingering
                let linger = limits.linger
                context.writeAndFlush(data, promise: promise)
                let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.close(mode: .output, promise: nil)
                context.eventLoop.assumeIsolated().scheduleTask(in: linger) {
                    loopContext.value.close(promise: nil)
                }
                return
            }
            outstanding -= 1
            if outstanding <= 0 {
                outstanding = 0
                phase = .awaitingHead(since: .now())
                clock.headStartedAt = nil
            }
        default:
            break
        }
        context.write(data, promise: promise)
    }

    private func scheduleTick(_ context: ChannelHandlerContext) {
        let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: tick) { [self] in
            self.check(loopContext.value)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        timer = nil
        guard context.channel.isActive else { return }
        let now = NIODeadline.now()
        switch phase {
        case .awaitingHead(let since):
            if let started = clock.headStartedAt {
                if now - started > limits.headerTimeout {
                    logger.debug("closing a connection: request head not complete within header_timeout")
                    context.close(promise: nil)
                    return
                }
            } else if now - since > limits.idleTimeout {
                logger.trace("closing an idle keep-alive connection")
                context.close(promise: nil)
                return
            }
        case .readingBody:
            if let asked = readRequestedAt, !clock.bytesSinceRead, now - asked > limits.idleTimeout {
                logger.debug("request body stalled longer than idle_timeout")
                // Fails the body the upload is reading; the responder answers 408 and,
                // as the request did not end, the connection is closed after it.
                readRequestedAt = nil
                let error = SluiceError(.timeout, "no body bytes for \(ConfigDuration(.nanoseconds(limits.idleTimeout.nanoseconds))) (idle_timeout)")
                splice?.fail(error)
                context.fireErrorCaught(error)
            }
        case .responding, .lingering:
            break
        }
        scheduleTick(context)
    }
}
