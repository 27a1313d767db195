import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SluiceCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves one `tcp` listener; see ``TCPReceiverPlugin`` for the keys.
public struct TCPReceiver: Receiver {
    public let name: String
    public let configuration: TCPReceiverPlugin.Configuration
    let pipeline: Pipeline
    let logger: Logger
    let announce: @Sendable (ListenerAnnouncement) -> Void
    let gate: UploadGate
    let connections: ConnectionLimiter
    /// The listener's TLS context (`tls`), if it speaks TLS.
    let tls: TLSServer?

    /// Back pressure between the socket and the pipeline: the channel stops reading
    /// once this many chunks wait for the pipeline, and reads again below the low mark.
    /// Together with the read size it bounds what one connection buffers: about three
    /// reads (one waiting, one in the pipeline, one in the channel's pool). Measured
    /// (release, 256 concurrent 16 MiB uploads into the disk sink): RSS peaks near
    /// 130 MiB with 128 KiB reads and a high mark of 1, near 270 MiB with 256 KiB reads
    /// and a high mark of 2 (which was ~30% cheaper in CPU per GiB). 256 uploads held
    /// back by a 50 MB/s `rate_limit` (bench/tcp-disk/bench.py slow), with the disk
    /// sink's pipelined writes: 121 MiB with 128 KiB reads, 81 MiB with 64 KiB reads,
    /// which cost ~25% more CPU per GiB. Reads are now capped by the pipeline's pace
    /// (``ReadPace``: the slow-sink run holds ~75 MiB steady) and by a share of a read
    /// budget among open connections (``PacedRecvAllocator``), so a few fast uploads
    /// read up to 512 KiB at a time and many read 128 KiB.
    static let lowWatermark = 1
    static let highWatermark = 1
    /// Read sizes adapt between these bounds: a trickling connection keeps a small
    /// buffer, a fast one reads large chunks (fewer wake-ups and pipeline steps).
    static let minimumReadSize = 512
    static let initialReadSize = 512
    static let maximumReadSize = 512 * 1024
    static let readSizes = AdaptiveRecvByteBufferAllocator(minimum: minimumReadSize, initial: initialReadSize, maximum: maximumReadSize)
    /// Reads per readiness event: each may leave a buffer in the channel's pool.
    static let readsPerWakeup: UInt = 1
    static let acceptBacklog: Int32 = 4096

    public init(configuration: TCPReceiverPlugin.Configuration, pipeline: Pipeline, tls: TLSServer? = nil, environment: ReceiverEnvironment) {
        self.name = environment.name
        self.tls = tls
        self.configuration = configuration
        self.pipeline = pipeline
        self.logger = environment.logger
        self.announce = environment.announce
        self.gate = UploadGate(
            maxConcurrent: configuration.maxConcurrentUploads,
            maxQueued: configuration.maxQueuedUploads,
            queueTimeout: configuration.queueTimeout.duration,
            listener: environment.name
        )
        self.connections = ConnectionLimiter(limit: configuration.maxConnections, listener: environment.name)
    }

    /// One accepted connection: its async channel, whether its upload may start (see
    /// ``ConnectionWatchdog``), and its side of the race with graceful shutdown.
    struct Connection: Sendable {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        let ready: EventLoopFuture<Bool>
        let race: ShutdownRace
        /// Set when the upload may be spliced into its file (`splice`, `framing: stream`).
        let splicer: ConnectionSplicer?
    }

    public func run() async throws {
        let idleTimeout = configuration.idleTimeout.timeAmount
        let prebuffer = Int(clamping: configuration.effectivePrebuffer.bytes)
        // A TLS socket carries ciphertext: its bytes must pass through the TLS handler.
        let splice = configuration.splice && configuration.framing == .stream && tls == nil
        let tls = self.tls
        if splice { SplicePipe.registerMetrics() }
        let logger = self.logger
        let listenAddress = "\(configuration.listen)"
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // Runs before NIO's accept back-off: an accept error (EMFILE) is logged, then
            // accepting pauses briefly and resumes; the listener never stops on it.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(logger: logger, address: listenAddress))
                }
            }
            .serverChannelOption(.backlog, value: Self.acceptBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A reload (SIGHUP) binds the new generation before the old one drains.
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            // The client half-closes to end its upload; the receipt goes back on the open half.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.maxMessagesPerRead, value: Self.readsPerWakeup)
            .bind(host: configuration.listen.host, port: configuration.listen.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // First in the pipeline: every handler after it sees plaintext.
                    try tls?.addHandler(to: channel, logger: logger)
                    let ready = channel.eventLoop.makePromise(of: Bool.self)
                    let race = ShutdownRace()
                    // Reads shrink while the pipeline holds back (see ReadPace).
                    let pace = ReadPace()
                    try channel.syncOptions?.setOption(
                        .recvAllocator, value: PacedRecvAllocator(adaptive: Self.readSizes, pace: pace, connections: connections)
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionWatchdog(timeout: idleTimeout, prebuffer: prebuffer, ready: ready, race: race, pace: pace)
                    )
                    var splicer: ConnectionSplicer?
                    if splice {
                        let handler = SpliceHandler(pace: pace)
                        try channel.pipeline.syncOperations.addHandler(handler)
                        splicer = ConnectionSplicer(handler, eventLoop: channel.eventLoop)
                    }
                    let async = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(
                            backPressureStrategy: .init(lowWatermark: Self.lowWatermark, highWatermark: Self.highWatermark),
                            inboundType: ByteBuffer.self,
                            outboundType: ByteBuffer.self
                        )
                    )
                    return Connection(channel: async, ready: ready.futureResult, race: race, splicer: splicer)
                }
            }

        let port = server.channel.localAddress?.port ?? configuration.listen.port
        let address = ListenAddress(host: configuration.listen.host, port: port)
        announce(ListenerAnnouncement(listener: name, type: TCPReceiverPlugin.type, address: "\(address)", port: port, detail: tls == nil ? "pipeline \(pipeline.name)" : "TLS, pipeline \(pipeline.name)"))
        logger.info("listening on \(address) (\(tls == nil ? "tcp" : "tcp+tls"), framing \(configuration.framing.rawValue)) → pipeline \(pipeline.name)")

        // A connection gets a task only once its upload may start (``ConnectionWatchdog``):
        // until then it waits here, as a channel and a few bytes.
        let waiting = WaitingConnections()
        try await withGracefulShutdownHandler {
            // A discarding group: finished connections are dropped at once instead of
            // piling up until the listener stops.
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    defer { waiting.acceptEnded() }
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            guard connections.tryAcquire() else {
                                let reason = connections.current >= connections.limit
                                    ? "max_connections (\(configuration.maxConnections)) reached"
                                    : "too few free file descriptors"
                                logger.warning("\(reason): closing a new connection from \(Self.remote(connection.channel.channel))")
                                // Through executeThenClose: the channel's writer must be finished before it goes away.
                                try? await connection.channel.executeThenClose { _, _ in }
                                continue
                            }
                            waiting.add(connection)
                        }
                    }
                }
                await withTaskCancellationHandler {
                    for await (connection, ready) in waiting.started {
                        // The connection's task runs on its channel's event loop: no thread
                        // hop between reading a chunk and consuming it.
                        group.addTask(executorPreference: EventLoopTaskExecutor(connection.channel.channel.eventLoop)) {
                            defer { connections.release() }
                            await handle(connection, ready: ready)
                        }
                    }
                } onCancel: {
                    // The drain timeout ran out: connections still gathering their first bytes go too.
                    waiting.closeAll()
                }
            }
        } onGracefulShutdown: {
            // Stop accepting and close the connections that sent nothing yet; the group
            // above then waits for in-flight uploads (including those still gathering).
            logger.info("stopping: no new connections on \(address); in-flight uploads may finish")
            server.channel.close(promise: nil)
            waiting.closeIdle()
        }
        logger.info("stopped listening on \(address)")
    }

    /// Serves one connection from the start of its upload to its receipt.
    ///
    /// It does not throw: whatever goes wrong concerns this client only, and an error
    /// escaping into the accept loop's task group would end the listener and every
    /// other connection with it.
    func handle(_ connection: Connection, ready: Result<Bool, any Error>) async {
        let channel = connection.channel.channel
        // The remote address is attached only when a line is logged: attaching metadata
        // costs, and most connections log nothing here.
        let logger = ConnectionLogger(base: self.logger, channel: channel)
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                switch ready {
                case .failure(let error as SluiceError) where error.code == .timeout:
                    // Not an upload, but the client may be waiting to hear why it was closed.
                    logger.debug("connection closed before sending data: \(error.message)")
                    try await reply(errorLine(error), outbound)
                    return
                case .failure(let error):
                    logger.debug("connection failed before sending data: \(error)")
                    return
                case .success(false):
                    logger.debug("connection closed without sending data (not an upload)")
                    return
                case .success(true):
                    break
                }

                do {
                    try await gate.acquire()
                } catch {
                    let failure = error is CancellationError
                        ? SluiceError(.shuttingDown, "the server stopped before the upload got a slot")
                        : SluiceError.from(error)
                    logger.warning("upload refused: \(failure.message)")
                    try await reply(errorLine(failure), outbound)
                    return
                }
                defer { gate.release() }

                let upload = makeUpload(inbound, splicer: connection.splicer, remote: channel.remoteAddress, logger: logger)
                let answer: ByteBuffer
                do {
                    answer = ByteBuffer(string: try await pipeline.process(upload).jsonLine() + "\n")
                } catch {
                    // The pipeline logged the outcome; the client gets the reason if it still listens.
                    answer = errorLine(SluiceError.from(error))
                }
                try await reply(answer, outbound)
            }
        } catch {
            logger.debug("connection ended: \(error)")
        }
    }

    private func makeUpload(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, splicer: ConnectionSplicer?, remote: SocketAddress?, logger: ConnectionLogger
    ) -> Upload {
        var metadata = UploadMetadata(
            name: "",
            listener: name,
            remoteAddress: remote?.ipAddress,
            mode: configuration.framing == .lines ? .records : .object
        )
        metadata.name = uploadName(metadata)
        let chunks = ConnectionBody(inbound: inbound)
        var body = UploadBody(chunks)
        if let splicer {
            body = UploadBody(chunks) { SplicingPieces(chunks: chunks.makeAsyncIterator(), splicer: splicer) }
        }
        body = body.limited(to: configuration.maxUploadSize.bytes)
        if configuration.framing == .lines {
            let maxLength = Int(clamping: configuration.maxRecordLength.bytes)
            let policy = configuration.onLongRecord
            let logger = logger.logger
            body = body.transformed { LineFramer(maxLength: maxLength, policy: policy, logger: logger) }
        }
        return Upload(metadata: metadata, body: body)
    }

    /// Renders the `name` template. The template was checked when the config was
    /// loaded; should a rendering still fail (an odd remote address), the upload id
    /// is a safe name.
    private func uploadName(_ metadata: UploadMetadata) -> String {
        let context = UploadContext(metadata: metadata, pipeline: pipeline.name, logger: logger)
        return (try? configuration.name.render(context)) ?? "\(name)-\(metadata.id.uuidString.lowercased())"
    }

    private func reply(_ line: ByteBuffer, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        guard configuration.receipt else { return }
        try await outbound.write(line)
    }

    private func errorLine(_ error: SluiceError) -> ByteBuffer {
        ByteBuffer(string: error.json + "\n")
    }

    static func remote(_ channel: any Channel) -> String {
        channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
    }
}

/// The listener's logger with a connection's remote address, attached when a line is
/// logged rather than when the connection opens.
struct ConnectionLogger: Sendable {
    let base: Logger
    let channel: any Channel

    var logger: Logger {
        var logger = base
        logger[metadataKey: "remote"] = "\(TCPReceiver.remote(channel))"
        return logger
    }

    func debug(_ message: @autoclosure () -> Logger.Message) {
        if base.logLevel <= .debug { logger.debug(message()) }
    }

    func warning(_ message: @autoclosure () -> Logger.Message) {
        if base.logLevel <= .warning { logger.warning(message()) }
    }
}

/// Decides, once, between a connection starting its upload and graceful shutdown
/// closing it while it still waits for its first byte.
final class ShutdownRace: Sendable {
    private enum State: UInt8 { case waiting, uploading, closing }
    private let state = Atomic<UInt8>(State.waiting.rawValue)

    /// `true` if the connection was still waiting: the caller closes it.
    func closeIfWaiting() -> Bool {
        state.compareExchange(expected: State.waiting.rawValue, desired: State.closing.rawValue, ordering: .relaxed).exchanged
    }

    /// `true` if shutdown has not claimed the connection: the upload may start.
    func startUpload() -> Bool {
        state.compareExchange(expected: State.waiting.rawValue, desired: State.uploading.rawValue, ordering: .relaxed).exchanged
    }
}

/// The accepted connections whose upload has not started yet, and the stream that
/// hands each on (with its ``ConnectionWatchdog`` outcome) once it may start.
///
/// The stream ends when accepting has ended and no connection waits any more.
final class WaitingConnections: Sendable {
    typealias Started = (connection: TCPReceiver.Connection, ready: Result<Bool, any Error>)

    private struct State {
        var waiting: [ObjectIdentifier: TCPReceiver.Connection] = [:]
        var acceptEnded = false
        /// Set by ``closeIdle()``: connections still accepted after it are closed as they come
        /// unless they already sent a byte.
        var shuttingDown = false
    }

    private let state = Mutex(State())
    let started: AsyncStream<Started>
    private let continuation: AsyncStream<Started>.Continuation

    init() {
        (started, continuation) = AsyncStream.makeStream(of: Started.self)
    }

    /// Keeps `connection` until its upload may start (or it ends without one).
    func add(_ connection: TCPReceiver.Connection) {
        let key = ObjectIdentifier(connection.channel.channel)
        let shuttingDown = state.withLock { state in
            state.waiting.updateValue(connection, forKey: key)
            return state.shuttingDown
        }
        connection.ready.whenComplete { result in
            self.resolve(key, result)
        }
        // Accepted while the listener was closing: treated as the connections closeIdle() saw.
        if shuttingDown, connection.race.closeIfWaiting() {
            connection.channel.channel.close(promise: nil)
        }
    }

    private func resolve(_ key: ObjectIdentifier, _ result: Result<Bool, any Error>) {
        let (connection, finished) = state.withLock { state in
            let connection = state.waiting.removeValue(forKey: key)
            return (connection, state.acceptEnded && state.waiting.isEmpty)
        }
        if let connection { continuation.yield((connection, result)) }
        if finished { continuation.finish() }
    }

    /// No connection will be added any more.
    func acceptEnded() {
        let finished = state.withLock { state in
            state.acceptEnded = true
            return state.waiting.isEmpty
        }
        if finished { continuation.finish() }
    }

    /// Graceful shutdown: closes the connections that have not sent a byte (they have
    /// nothing in flight); those gathering an upload's first bytes go on.
    func closeIdle() {
        let connections = state.withLock { state in
            state.shuttingDown = true
            return Array(state.waiting.values)
        }
        for connection in connections where connection.race.closeIfWaiting() {
            connection.channel.channel.close(promise: nil)
        }
    }

    /// Closes every waiting connection (the listener is being cancelled).
    func closeAll() {
        for connection in snapshot() {
            connection.channel.channel.close(promise: nil)
        }
    }

    private func snapshot() -> [TCPReceiver.Connection] {
        state.withLock { Array($0.waiting.values) }
    }
}

/// A connection's inbound bytes as an upload body.
///
/// It ends cleanly only at the client's end of input. Failures become
/// ``SluiceError``s a client and a log reader understand: a reset is
/// `client_aborted`, cancellation (the drain timeout ran out) is `shutting_down`.
struct ConnectionBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let inbound: NIOAsyncChannelInboundStream<ByteBuffer>

    func makeAsyncIterator() -> Iterator {
        Iterator(base: inbound.makeAsyncIterator())
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator

        mutating func next() async throws -> ByteBuffer? {
            do {
                if let chunk = try await base.next() { return chunk }
                // Never let a cancelled read pass for the end of the upload.
                if Task.isCancelled { throw CancellationError() }
                return nil
            } catch {
                throw ConnectionBody.failure(error)
            }
        }
    }

    /// What a failure to read the connection means for its upload.
    static func failure(_ error: any Error) -> SluiceError {
        switch error {
        case let error as SluiceError: error
        case is CancellationError: SluiceError(.shuttingDown, "the server stopped before the upload completed")
        default: SluiceError(.clientAborted, "the connection failed: \(error)", cause: error)
        }
    }
}
