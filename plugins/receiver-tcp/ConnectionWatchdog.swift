import NIOCore
import SluiceCore

/// Watches one connection until its upload starts, and enforces the idle timeout.
///
/// **Start.** The first `prebuffer` bytes are gathered here, not handed on: the upload
/// starts (``ready`` succeeds with `true`) once that many arrived, or the input ended,
/// failed or timed out after some data. Until then the connection has no task, no
/// upload slot and no pipeline: a client that trickles a few bytes a second costs its
/// socket and these bytes only (10,000 such clients were measured at ~5 KiB each with
/// the bytes gathered here, ~8 KiB with a task waiting for the first byte, and ~14 KiB
/// with the upload waiting inside its pipeline). `ready` succeeds with `false` when the
/// connection ends without a byte (a health check: not an upload) and fails when it
/// fails before its first byte.
///
/// **Idle timeout.** The idle clock runs only while the server is waiting for the
/// client: from a `read()` request to the data that answers it. While back pressure
/// holds reads (a slow sink, an upload queued for a slot) the client is not idle, so a
/// slow pipeline never times a client out. On timeout the handler fires a
/// ``SluiceError/Code/timeout`` error: the upload body then fails, nothing is
/// committed, and the connection's task answers and closes the channel.
final class ConnectionWatchdog: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let prebuffer: Int
    private let ready: EventLoopPromise<Bool>
    private let race: ShutdownRace
    private var settled = false
    /// Bytes gathered before the upload starts.
    private var held: ByteBuffer?
    /// When the oldest unanswered read was requested; `nil` when no read is waiting.
    private var waitingSince: NIODeadline?
    private var timer: Scheduled<Void>?
    private let pace: ReadPace?
    /// Gathered bytes past which a sender counts as fast (see `channelRead`).
    static let fastStart = 4096

    /// - Parameters:
    ///   - timeout: The idle timeout.
    ///   - prebuffer: Bytes to gather before the upload starts; 0 starts it at the first byte.
    ///   - ready: Completed as described above.
    ///   - race: Claimed for the upload at the first byte, unless shutdown claimed it first.
    ///   - pace: Told whether the pipeline takes chunks slowly (see ``ReadPace``).
    init(timeout: TimeAmount, prebuffer: Int, ready: EventLoopPromise<Bool>, race: ShutdownRace, pace: ReadPace? = nil) {
        self.timeout = timeout
        self.prebuffer = max(1, prebuffer)
        self.ready = ready
        self.race = race
        self.pace = pace
        if self.prebuffer > 1 { pace?.limit = self.prebuffer }
    }

    func read(context: ChannelHandlerContext) {
        pace?.willRead()
        if waitingSince == nil {
            waitingSince = .now()
            if timer == nil { schedule(in: timeout, context: context) }
        }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        waitingSince = nil
        let chunk = unwrapInboundIn(data)
        pace?.didDeliver(bytes: chunk.readableBytes)
        if settled {
            context.fireChannelRead(data)
            return
        }
        guard chunk.readableBytes > 0 else { return }
        if held == nil {
            // Shutdown closes connections that sent nothing; one that did is an upload and is served.
            guard race.startUpload() else { return }
            held = Self.compacted(chunk)
        } else {
            if held!.writableBytes < chunk.readableBytes, held!.readableBytes + chunk.readableBytes >= Self.fastStart {
                // A fast sender: room for the whole prebuffer at once, rather than a
                // buffer that doubles its way there, copying at each step.
                held!.reserveCapacity(prebuffer)
            }
            held!.writeImmutableBuffer(chunk)
        }
        if held!.readableBytes >= prebuffer {
            start(context, flushing: false)
        } else {
            // Read no more than the rest: the gathered bytes then fit in `prebuffer` (a
            // buffer grows to a power of two), and many connections starting at once hold
            // little more than their prebuffers.
            pace?.limit = prebuffer - held!.readableBytes
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            stop()
            start(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        start(context, failure: error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        start(context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        held = nil
        settle(.success(false))
    }

    /// Starts the upload if any byte arrived: hands the gathered bytes on and succeeds
    /// `ready`. Without data, `ready` succeeds with `false`, or fails with `failure`.
    ///
    /// - Parameter flushing: whether to end the read burst (outside `channelRead`, the
    ///   next handler delivers what it got at a read-complete).
    private func start(_ context: ChannelHandlerContext, failure: (any Error)? = nil, flushing: Bool = true) {
        guard !settled else { return }
        guard let bytes = held else {
            settle(failure.map { .failure($0) } ?? .success(false))
            return
        }
        held = nil
        pace?.limit = .max
        settle(.success(true))
        context.fireChannelRead(wrapInboundOut(bytes))
        if flushing { context.fireChannelReadComplete() }
    }

    /// A small first chunk in a large read buffer is copied out, so that a trickling
    /// connection keeps a few bytes rather than the whole buffer.
    private static func compacted(_ chunk: ByteBuffer) -> ByteBuffer {
        guard chunk.capacity >= 4 * chunk.readableBytes else { return chunk }
        var copy = ByteBufferAllocator().buffer(capacity: chunk.readableBytes)
        copy.writeImmutableBuffer(chunk)
        return copy
    }

    private func settle(_ result: Result<Bool, any Error>) {
        guard !settled else { return }
        settled = true
        ready.completeWith(result)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        waitingSince = nil
    }

    private func schedule(in delay: TimeAmount, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.timerFired(context: context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        guard let since = waitingSince else { return }  // data arrived; the next read() re-arms
        let idle = NIODeadline.now() - since
        if idle < timeout {
            schedule(in: timeout - idle, context: context)
            return
        }
        waitingSince = nil
        let error = SluiceError(.timeout, "no data from the client for \(ConfigDuration(.nanoseconds(timeout.nanoseconds)))")
        // Before the upload started: it starts now with what arrived and fails at once, or
        // (nothing arrived) the connection is closed. After: the connection's task sees the
        // error (its upload body fails), answers with an error line and closes the channel.
        start(context, failure: error)
        context.fireErrorCaught(error)
    }
}
