import NIOCore
import SluiceCore

/// Splicing a connection's bytes into its file: the kernel moves them from the socket
/// into a pipe and from the pipe into the page cache, and they never enter the process.
///
/// An upload starts as chunks read by NIO. Once its sink asks for piped pieces (a disk
/// sink past `memory_buffer`, with no stage in between that reads the bytes), the
/// connection switches over:
///
/// 1. ``SpliceHandler`` stops passing reads on and sends an empty buffer after the
///    last one it passed: chunks NIO read before the switch reach the upload first.
/// 2. From then on the upload splices from the socket itself, as long as the socket
///    has bytes. When it has none, the handler asks NIO for a read, which wakes the
///    connection as any read does (so the idle timeout and back pressure work as
///    before). That read is one byte long (``ReadPace/limit``); the byte reaches the
///    file ahead of the bytes spliced behind it.
/// 3. Reads NIO makes on its own are full-sized and their bytes go to the file the
///    usual way: when the client's FIN arrives, NIO reads everything up to it at once
///    (`readEOF`), so an upload whose sender finished while much of it still waited in
///    the socket buffer ends as chunks.
///
/// The end of input is the splice that returns 0; a reset is a splice error.

/// Sits between ``ConnectionWatchdog`` and the async channel. Passes everything on
/// until ``begin(context:)``; afterwards keeps the reads for the upload.
final class SpliceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private let pace: ReadPace
    private var splicing = false
    /// Bytes NIO read after the switch (the one-byte wake-up reads).
    private var pending: ByteBuffer?
    private var inputEnded = false
    private var failure: (any Error)?
    private var waiter: EventLoopPromise<Void>?

    init(pace: ReadPace) { self.pace = pace }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        fail(ChannelError.ioOnClosedChannel)
    }

    /// Switches to splicing. Returns the socket's descriptor, or `nil` (nothing changed:
    /// the upload goes on reading chunks) when it cannot be had.
    func begin() -> CInt? {
        guard let context, !splicing, let fd = ChannelDescriptor.of(context.channel) else { return nil }
        splicing = true
        // The marker: everything NIO read before it is already on its way to the upload.
        context.fireChannelRead(wrapInboundOut(ByteBuffer()))
        context.fireChannelReadComplete()
        return fd
    }

    /// The bytes NIO read since the last call.
    func takePending() -> ByteBuffer? {
        defer { pending = nil }
        return pending
    }

    /// Succeeds `promise` once NIO read a byte, the input ended, or the connection
    /// failed (then fails it); asks NIO for a read if none of that has happened yet.
    func wait(_ promise: EventLoopPromise<Void>) {
        if let failure {
            promise.fail(failure)
        } else if pending != nil || inputEnded {
            promise.succeed()
        } else if let context {
            waiter?.succeed()
            waiter = promise
            // This read only says that the socket has bytes: one byte long.
            pace.limit = 1
            context.read()
        } else {
            promise.fail(ChannelError.ioOnClosedChannel)
        }
    }

    /// Fails the wait (cancellation of the upload).
    func fail(_ error: any Error) {
        if failure == nil { failure = error }
        waiter?.fail(failure!)
        waiter = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard splicing else {
            context.fireChannelRead(data)
            return
        }
        let bytes = unwrapInboundIn(data)
        // Reads after the one asked for (NIO reading up to the FIN) take what is there.
        pace.limit = .max
        if pending == nil {
            pending = bytes
        } else {
            pending!.writeImmutableBuffer(bytes)
        }
        wake()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !splicing { context.fireChannelReadComplete() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if splicing, case ChannelEvent.inputClosed = event {
            inputEnded = true
            wake()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if splicing { fail(error) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if splicing, !inputEnded { fail(ChannelError.eof) }
        context.fireChannelInactive()
    }

    private func wake() {
        waiter?.succeed()
        waiter = nil
    }
}

/// The upload's handle on its connection's ``SpliceHandler``: every call runs on the
/// channel's event loop (directly when the upload already runs there, as it does).
struct ConnectionSplicer: Sendable {
    let handler: NIOLoopBound<SpliceHandler>

    init(_ handler: SpliceHandler, eventLoop: any EventLoop) {
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
    }

    private var eventLoop: any EventLoop { handler.eventLoop }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable (SpliceHandler) -> T) async -> T {
        if eventLoop.inEventLoop { return body(handler.value) }
        let handler = self.handler
        return try! await eventLoop.submit { body(handler.value) }.get()  // submit fails only when the loop shut down, which outlives every connection
    }

    func begin() async -> CInt? { await onLoop { $0.begin() } }
    func takePending() async -> ByteBuffer? { await onLoop { $0.takePending() } }

    /// Waits until the socket has bytes or the input ended.
    func waitForBytes() async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        await onLoop { $0.wait(promise) }
        try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: { [handler] in
            handler.eventLoop.execute { handler.value.fail(CancellationError()) }
        }
    }
}

/// A connection's body as pieces: chunks until the sink takes piped pieces, then
/// spliced straight from the socket (see ``SpliceHandler``).
struct SplicingPieces: BodyPieceIterator {
    private enum Phase {
        /// Chunks from NIO; the switch has not been asked for.
        case chunks
        /// Chunks only: the switch was refused (no pipe, no descriptor).
        case chunksOnly
        /// Switched; the chunks NIO read before the marker come first.
        case beforeMarker(fd: CInt, pipe: SplicePipe)
        case splicing(fd: CInt, pipe: SplicePipe)
        case ended
    }

    private var chunks: ConnectionBody.Iterator
    private let splicer: ConnectionSplicer
    private var phase = Phase.chunks

    init(chunks: ConnectionBody.Iterator, splicer: ConnectionSplicer) {
        self.chunks = chunks
        self.splicer = splicer
    }

    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        while true {
            switch phase {
            case .chunks:
                guard allowPipe else { return try await chunks.next().map { .bytes($0) } }
                guard let pipe = SplicePipe.make(), let fd = await splicer.begin() else {
                    phase = .chunksOnly
                    continue
                }
                phase = .beforeMarker(fd: fd, pipe: pipe)
            case .chunksOnly:
                return try await chunks.next().map { .bytes($0) }
            case .beforeMarker(let fd, let pipe):
                guard let chunk = try await chunks.next() else {
                    // The input ended before the switch: all of it came as chunks.
                    phase = .ended
                    return nil
                }
                if chunk.readableBytes > 0 { return .bytes(chunk) }
                phase = .splicing(fd: fd, pipe: pipe)
            case .splicing(let fd, let pipe):
                return try await spliced(fd: fd, pipe: pipe)
            case .ended:
                return nil
            }
        }
    }

    /// Fills the pipe with what the socket has, waiting for bytes when it has none.
    private mutating func spliced(fd: CInt, pipe: SplicePipe) async throws -> BodyPiece? {
        while true {
            // Bytes NIO read come first (the pipe is empty: the sink drained the last piece).
            if let read = await splicer.takePending() { return .bytes(read) }
            let (held, ended): (Int, Bool)
            do {
                (held, ended) = try pipe.fillAvailable(from: fd, limit: pipe.capacity)
            } catch {
                throw SluiceError(.clientAborted, "the connection failed: \(error.reason)")
            }
            if ended { phase = .ended }
            if held > 0 { return .piped(pipe, count: held) }
            if ended { return nil }
            do {
                try await splicer.waitForBytes()
            } catch {
                throw ConnectionBody.failure(error)
            }
        }
    }
}
