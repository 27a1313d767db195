import HTTPTypes
import NIOCore
import SluiceCore
import Synchronization

/// Splicing a request body into its file: the kernel moves the bytes from the socket
/// into a pipe and from the pipe into the page cache, and they never enter the process.
///
/// A body with a `Content-Length` (no `Content-Encoding` to decode, a `PUT` of one
/// object) starts as chunks from the HTTP decoder. Once its sink asks for piped pieces
/// (a disk sink past `memory_buffer`, with no stage that reads the bytes):
///
/// 1. ``HTTPSpliceHandler``, which sits in front of the HTTP decoder, stops passing raw
///    bytes to it, and ``ConnectionGuard`` sends an empty body part after the last one
///    decoded: the parts decoded before the switch reach the upload first.
/// 2. The upload then splices exactly the rest of the body (`Content-Length` minus the
///    bytes it got as parts) from the socket. When the socket has no bytes, it asks for
///    a one-byte read that wakes the connection like any read (idle timeout, back
///    pressure); bytes NIO reads go to the file the usual way, ahead of what follows.
/// 3. At the end of the body the decoder still expects those bytes: it is given as many
///    zero bytes, whose body parts ``ConnectionGuard`` drops, so it produces the
///    request's end and parses the next request on the connection as usual
///    (keep-alive and pipelining unchanged). Bytes read past the body go to it next.
///
/// The socket's bytes must be the body's bytes: a listener that adds TLS (not implemented)
/// must not add this handler, or ciphertext would be stored.
///
/// An upload that fails while spliced leaves the decoder behind: its connection gets
/// `Connection: close` with the error (as any request answered before its end), and raw
/// bytes are dropped until it closes.
final class HTTPSpliceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum Mode {
        /// Raw bytes go to the decoder.
        case passing
        /// Raw bytes are kept for the spliced upload.
        case diverting
        /// A spliced upload failed: raw bytes are dropped until the connection closes.
        case discarding
    }

    private var mode = Mode.passing
    private var context: ChannelHandlerContext?
    private let pace: ReadPace
    private let connectionGuard: ConnectionGuard
    /// Bytes NIO read while diverting (the one-byte wake-up reads, or the rest up to a FIN).
    private var pending: ByteBuffer?
    /// The client's FIN arrived while diverting; passed on to the decoder after the body.
    private var inputEnded = false
    private var failure: (any Error)?
    private var waiter: EventLoopPromise<Void>?
    /// The socket's descriptor, found at the connection's first splice.
    private var fd: CInt?

    /// Body parts the decoder makes of ``finish(expected:)``'s zero bytes share this buffer.
    private static let zeros = ByteBuffer(repeating: 0, count: 1 << 20)

    init(pace: ReadPace, connectionGuard: ConnectionGuard) {
        self.pace = pace
        self.connectionGuard = connectionGuard
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        fail(ChannelError.ioOnClosedChannel)
    }

    /// Switches the current request's body to splicing. Returns the socket's descriptor
    /// and a pipe for the body, or `nil` (nothing changed) when the request already ended
    /// (its body came with its head), is being answered, or the descriptor or a pipe
    /// cannot be had.
    func begin() -> (CInt, SplicePipe)? {
        guard case .passing = mode, let context, connectionGuard.canSplice,
              let fd = fd ?? ChannelDescriptor.of(context.channel), let pipe = SplicePipe.make()
        else { return nil }
        self.fd = fd
        mode = .diverting
        failure = nil
        // Reads from here on only say that the socket has bytes (the parts before the marker
        // are still being consumed, and each asks NIO for a read): one byte long. (The
        // channel reads once per wake-up, see UploadChannel: a second read in the same
        // wake-up would count as one nobody asked for, full-sized.)
        pace.limit = 1
        connectionGuard.fireSpliceMarker()
        return (fd, pipe)
    }

    /// Up to `limit` bytes of those NIO read since the switch.
    func takePending(upTo limit: Int) -> ByteBuffer? {
        guard var bytes = pending, limit > 0 else { return nil }
        let slice = bytes.readSlice(length: min(limit, bytes.readableBytes))
        pending = bytes.readableBytes > 0 ? bytes : nil
        return slice
    }

    /// Bytes arrived by splicing: the connection is not idle.
    func noteProgress() { connectionGuard.noteBodyBytes() }

    /// Succeeds `promise` once NIO read a byte or the input ended, fails it when the
    /// connection failed or stalled; asks NIO for a one-byte read otherwise.
    func wait(_ promise: EventLoopPromise<Void>) {
        if let failure {
            promise.fail(failure)
        } else if pending != nil || inputEnded {
            promise.succeed()
        } else if let context, case .diverting = mode {
            waiter?.succeed()
            waiter = promise
            pace.limit = 1
            connectionGuard.noteReadRequested()
            context.read()
        } else {
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }

    /// The body was spliced to its end: the decoder gets `expected` zero bytes in place of
    /// the body bytes it did not see (their parts are dropped), then what was read past them.
    func finish(expected: Int) {
        guard case .diverting = mode, let context else { return }
        mode = .passing
        pace.limit = .max
        connectionGuard.dropBodyBytes(expected)
        var left = expected
        while left > 0 {
            let n = min(left, Self.zeros.readableBytes)
            context.fireChannelRead(wrapInboundOut(Self.zeros.getSlice(at: Self.zeros.readerIndex, length: n)!))
            left -= n
        }
        if let rest = pending {
            pending = nil
            context.fireChannelRead(wrapInboundOut(rest))
        }
        if inputEnded {
            inputEnded = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        context.fireChannelReadComplete()
    }

    /// The spliced upload ended without ``finish(expected:)`` (it failed).
    func abandon() {
        guard case .diverting = mode else { return }
        mode = .discarding
        pending = nil
        pace.limit = .max
        fail(SluiceError(.internal, "the upload stopped"))
    }

    /// Fails the wait (a stall, a reset, cancellation).
    func fail(_ error: any Error) {
        if failure == nil { failure = error }
        waiter?.fail(failure!)
        waiter = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch mode {
        case .passing:
            context.fireChannelRead(data)
        case .diverting:
            let bytes = unwrapInboundIn(data)
            // A read nobody asked for is NIO reading up to a FIN (or a reset), whatever the
            // back pressure: let it take what is there in full-sized reads, not byte by byte.
            if waiter == nil { pace.limit = .max }
            if pending == nil {
                pending = bytes
            } else {
                pending!.writeImmutableBuffer(bytes)
            }
            waiter?.succeed()
            waiter = nil
        case .discarding:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .passing = mode { context.fireChannelReadComplete() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            switch mode {
            case .passing: break
            case .diverting:
                inputEnded = true
                waiter?.succeed()
                waiter = nil
                return
            case .discarding:
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .diverting = mode { fail(error) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .diverting = mode, !inputEnded { fail(ChannelError.eof) }
        context.fireChannelInactive()
    }
}

/// One request body's splice: the upload's handle on the connection's
/// ``HTTPSpliceHandler``. Every call runs on the channel's event loop (directly when the
/// upload already runs there, as it does). If the upload lets go of it before the body
/// was finished, the connection drops raw bytes until it closes.
final class HTTPSpliceSession: Sendable {
    let handler: NIOLoopBound<HTTPSpliceHandler>
    private let finished = Atomic<Bool>(false)

    private init(handler: NIOLoopBound<HTTPSpliceHandler>) {
        self.handler = handler
    }

    deinit {
        guard !finished.load(ordering: .relaxed) else { return }
        let handler = self.handler
        handler.eventLoop.execute { handler.value.abandon() }
    }

    /// Switches `channel`'s current request to splicing: the session, the socket's
    /// descriptor and the body's pipe, or `nil` when it cannot (see ``HTTPSpliceHandler/begin()``).
    static func begin(on channel: any Channel) async -> (HTTPSpliceSession, CInt, SplicePipe)? {
        await onLoop(channel.eventLoop) {
            guard let handler = try? channel.pipeline.syncOperations.handler(type: HTTPSpliceHandler.self),
                  let (fd, pipe) = handler.begin()
            else { return nil }
            return (HTTPSpliceSession(handler: NIOLoopBound(handler, eventLoop: channel.eventLoop)), fd, pipe)
        }
    }

    func takePending(upTo limit: Int) async -> ByteBuffer? {
        let handler = self.handler
        return await Self.onLoop(handler.eventLoop) { handler.value.takePending(upTo: limit) }
    }

    func noteProgress() async {
        let handler = self.handler
        await Self.onLoop(handler.eventLoop) { handler.value.noteProgress() }
    }

    /// Waits until the socket has bytes or the input ended.
    func waitForBytes() async throws {
        let handler = self.handler
        let promise = handler.eventLoop.makePromise(of: Void.self)
        await Self.onLoop(handler.eventLoop) { handler.value.wait(promise) }
        try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            handler.eventLoop.execute { handler.value.fail(CancellationError()) }
        }
    }

    func finish(expected: Int) async {
        finished.store(true, ordering: .relaxed)
        let handler = self.handler
        await Self.onLoop(handler.eventLoop) { handler.value.finish(expected: expected) }
    }

    private static func onLoop<T: Sendable>(_ eventLoop: any EventLoop, _ body: @escaping @Sendable () -> T) async -> T {
        if eventLoop.inEventLoop { return body() }
        // submit fails only when the loop shut down, which outlives every connection.
        return try! await eventLoop.submit(body).get()
    }
}

/// A request body as pieces: chunks until the sink takes piped pieces, then spliced
/// from the socket up to `Content-Length` (see ``HTTPSpliceHandler``).
struct RequestBodyPieces: BodyPieceIterator {
    private enum Phase {
        case chunks
        /// The switch was refused: chunks to the end.
        case chunksOnly
        /// Switched; the parts decoded before the marker come first.
        case beforeMarker(HTTPSpliceSession, fd: CInt, pipe: SplicePipe)
        /// `left` body bytes remain in the socket, `expected` of them unseen by the decoder.
        case splicing(HTTPSpliceSession, fd: CInt, pipe: SplicePipe, left: Int, expected: Int)
        case ended
    }

    private var chunks: RequestBodySequence.Iterator
    private let channel: any Channel
    private let contentLength: Int
    /// Body bytes received so far.
    private var received = 0
    private var phase = Phase.chunks

    init(chunks: RequestBodySequence.Iterator, channel: any Channel, contentLength: Int) {
        self.chunks = chunks
        self.channel = channel
        self.contentLength = contentLength
    }

    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        while true {
            switch phase {
            case .chunks:
                guard allowPipe else { return try await chunk() }
                guard let (session, fd, pipe) = await HTTPSpliceSession.begin(on: channel) else {
                    phase = .chunksOnly
                    continue
                }
                phase = .beforeMarker(session, fd: fd, pipe: pipe)
            case .chunksOnly:
                return try await chunk()
            case .beforeMarker(let session, let fd, let pipe):
                guard let part = try await chunks.next() else {
                    phase = .ended
                    return nil
                }
                if part.readableBytes > 0 {
                    received += part.readableBytes
                    return .bytes(part)
                }
                let left = contentLength - received
                phase = .splicing(session, fd: fd, pipe: pipe, left: left, expected: left)
            case .splicing(let session, let fd, let pipe, let left, let expected):
                if left <= 0 {
                    await session.finish(expected: expected)
                    phase = .ended
                    return nil
                }
                return try await spliced(session, fd: fd, pipe: pipe, left: left, expected: expected)
            case .ended:
                return nil
            }
        }
    }

    private mutating func chunk() async throws -> BodyPiece? {
        guard let part = try await chunks.next() else { return nil }
        received += part.readableBytes
        return .bytes(part)
    }

    /// Fills the pipe with up to `left` bytes of what the socket has, waiting for bytes
    /// when it has none.
    private mutating func spliced(_ session: HTTPSpliceSession, fd: CInt, pipe: SplicePipe, left: Int, expected: Int) async throws -> BodyPiece? {
        while true {
            // Bytes NIO read come first (the pipe is empty: the sink drained the last piece).
            if let read = await session.takePending(upTo: left) {
                phase = .splicing(session, fd: fd, pipe: pipe, left: left - read.readableBytes, expected: expected)
                received += read.readableBytes
                return .bytes(read)
            }
            let (held, ended): (Int, Bool)
            do {
                (held, ended) = try pipe.fillAvailable(from: fd, limit: left)
            } catch {
                throw SluiceError(.clientAborted, "the client went away before the body was complete (\(error.reason))")
            }
            if held > 0 {
                await session.noteProgress()
                phase = .splicing(session, fd: fd, pipe: pipe, left: left - held, expected: expected)
                received += held
                return .piped(pipe, count: held)
            }
            if ended {
                throw SluiceError(.clientAborted, "the client closed the connection \(contentLength - received) bytes before the end of the body")
            }
            do {
                try await session.waitForBytes()
            } catch let error as SluiceError {
                throw error
            } catch is CancellationError {
                throw SluiceError(.clientAborted, "the upload was cancelled")
            } catch {
                throw SluiceError(.clientAborted, "the client went away before the body was complete (\(error))", cause: error)
            }
        }
    }
}
