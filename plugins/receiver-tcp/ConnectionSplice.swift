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
/// 3. NIO also reads on its own: when the client's FIN arrives it reads everything up
///    to it at once (`readEOF`, whatever the back pressure). So a read the upload did
///    not ask for makes the handler splice what the socket holds into extra pipes
///    (up to ``SpliceHandler/maxStagedPipes``; kernel memory the socket held anyway),
///    and NIO's next read finds the end of input: `cat f | nc -N`, whose FIN arrives
///    while megabytes still wait in the socket buffer, is spliced to its last byte.
///
/// The end of input is the splice that returns 0; a reset is a splice error. The socket's
/// bytes must be the upload's bytes: a listener that adds TLS (not implemented) must not
/// add ``SpliceHandler``, or ciphertext would be stored.

/// Sits between ``ConnectionWatchdog`` and the async channel. Passes everything on
/// until ``begin()``; afterwards keeps the reads for the upload.
final class SpliceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private let pace: ReadPace
    private var splicing = false
    /// The socket, once splicing.
    private var fd: CInt = -1
    /// What arrived without the upload splicing it itself, in order: bytes NIO read (the
    /// one-byte wake-up reads), and bytes staged in pipes when NIO read on its own.
    private var arrived: [BodyPiece] = []
    private var stagedPipes = 0
    /// The most pipes bytes are staged in while the upload has not taken them (1 MiB each
    /// where the system allows; two descriptors each, counted in the process's descriptor
    /// budget): past that, NIO's own reads bring the rest into memory. Linux's largest
    /// default TCP receive buffer is 6 MiB.
    static let maxStagedPipes = 6
    private var inputEnded = false
    private var failure: (any Error)?
    private var waiter: EventLoopPromise<Void>?

    init(pace: ReadPace) { self.pace = pace }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        fail(ChannelError.ioOnClosedChannel)
    }

    /// The socket's descriptor while the channel is open (looked up once: the lookup
    /// checks the descriptor's addresses, two system calls). NIO closes the socket only
    /// on this event loop, where every call here runs, and the channel is inactive from
    /// then on: a descriptor number reused after the close is never returned.
    private var descriptor: CInt?? = .none

    private func socketDescriptor(_ context: ChannelHandlerContext) -> CInt? {
        guard context.channel.isActive else { return nil }
        if case .some(let known) = descriptor { return known }
        let fd = ChannelDescriptor.of(context.channel)
        descriptor = .some(fd)
        return fd
    }

    /// The bytes waiting in the socket, not yet read by NIO (0 when unknown).
    func bytesWaiting() -> Int {
        guard let context, let fd = socketDescriptor(context) else { return 0 }
        return SystemCalls.bytesQueued(fd) ?? 0
    }

    /// Switches to splicing. Returns the socket's descriptor, or `nil` (nothing changed:
    /// the upload goes on reading chunks) when it cannot be had.
    func begin() -> CInt? {
        guard let context, !splicing, let fd = socketDescriptor(context) else { return nil }
        splicing = true
        self.fd = fd
        // Reads from here on only say that the socket has bytes (the chunks before the
        // marker are still being consumed, and each asks NIO for a read): one byte long.
        pace.limit = 1
        // The marker: everything NIO read before it is already on its way to the upload.
        context.fireChannelRead(wrapInboundOut(ByteBuffer()))
        context.fireChannelReadComplete()
        return fd
    }

    /// The oldest of what arrived (see ``arrived``).
    func take() -> BodyPiece? {
        guard !arrived.isEmpty else { return nil }
        let piece = arrived.removeFirst()
        if case .piped = piece { stagedPipes -= 1 }
        return piece
    }

    /// Succeeds `promise` once NIO read a byte, the input ended, or the connection
    /// failed (then fails it); asks NIO for a read if none of that has happened yet.
    func wait(_ promise: EventLoopPromise<Void>) {
        if let failure {
            promise.fail(failure)
        } else if !arrived.isEmpty || inputEnded {
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
        let asked = waiter != nil
        if case .bytes(var last) = arrived.last {
            last.writeImmutableBuffer(bytes)
            arrived[arrived.count - 1] = .bytes(last)
        } else {
            arrived.append(.bytes(bytes))
        }
        // A read nobody asked for: NIO reading up to a FIN (or a read left over from before
        // the switch). Stage what the socket holds; if that cannot take it all, let NIO's
        // next reads take the rest, full-sized.
        if !asked, !stage() { pace.limit = .max }
        wake()
    }

    /// Splices what the socket holds into new pipes. Returns whether it took all of it.
    private func stage() -> Bool {
        while stagedPipes < Self.maxStagedPipes {
            guard let pipe = SplicePipe.make() else { return false }
            do {
                let (count, ended) = try pipe.fillAvailable(from: fd, limit: pipe.capacity)
                if count > 0 {
                    arrived.append(.piped(pipe, count: count))
                    stagedPipes += 1
                }
                if ended || count < pipe.capacity { return true }
            } catch {
                // The upload's own splice meets the same error after the staged pieces.
                return true
            }
        }
        return false
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
    func bytesWaiting() async -> Int { await onLoop { $0.bytesWaiting() } }
    func take() async -> BodyPiece? { await onLoop { $0.take() } }

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

    /// Before the switch, what the socket holds beyond the chunks NIO read: a sink that
    /// gathers the start of a body in memory stops early when the rest is already here.
    mutating func bytesWaiting() async -> Int {
        guard case .chunks = phase else { return 0 }
        return await splicer.bytesWaiting()
    }

    /// Fills the pipe with what the socket has, waiting for bytes when it has none.
    private mutating func spliced(fd: CInt, pipe: SplicePipe) async throws -> BodyPiece? {
        while true {
            // What arrived otherwise comes first (the pipe is empty: the sink drained the last piece).
            if let piece = await splicer.take() { return piece }
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
