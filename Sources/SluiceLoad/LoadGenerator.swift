import NIOCore
import NIOPosix
import NIOSSL
import SluiceCore
import Synchronization

/// Runs a load test: a fixed number of connections in flight, each on one event loop, raw channel
/// handlers writing slices of one pre-generated ``Payload``, so the generator is not the bottleneck.
///
/// ```swift
/// let config = LoadConfiguration(mode: .tcp, target: LoadTarget(parsing: "127.0.0.1:8888")!,
///                                concurrency: 16, uploadSize: 16 << 20, count: 64)
/// let report = try await LoadGenerator.run(config)
/// print(report.text())
/// ```
public enum LoadGenerator {
    /// Runs `configuration` to completion and reports what happened.
    ///
    /// - Parameters:
    ///   - configuration: What to send, where, how much.
    ///   - progress: Called (from any thread) with short status lines, e.g. when hold mode has opened everything.
    /// - Throws: If the configuration is invalid or the target cannot be resolved. Failed uploads do not
    ///   throw; they are counted in the report.
    public static func run(
        _ configuration: LoadConfiguration,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> LoadReport {
        try configuration.validate()
        let address = try SocketAddress.makeAddressResolvingHost(configuration.target.host, port: configuration.target.port)
        let threads = Swift.min(configuration.threads, configuration.concurrency)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            let report = try await run(configuration, address: address, group: group, threads: threads, progress: progress)
            try? await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// The client context every connection shares, or nil without TLS.
    static func makeTLSContext(_ tls: LoadTLS?) throws -> NIOSSLContext? {
        guard let tls else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = tls.caFile { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SluiceError(.badRequest, "--cacert \(tls.caFile ?? "-"): \(error)")
        }
    }

    private static func run(
        _ configuration: LoadConfiguration, address: SocketAddress, group: MultiThreadedEventLoopGroup, threads: Int,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> LoadReport {

        let payload: Payload
        switch configuration.mode {
        case .lines:
            payload = .lines(lineSize: configuration.lineSize, maxChunk: configuration.chunk)
        case .tcp, .http, .hold:
            payload = .make(configuration.payload, maxChunk: configuration.chunk)
        }
        let shared = SharedState(configuration: configuration, address: address, payload: payload, tls: try makeTLSContext(configuration.tls))

        // Spread the connections over the loops: loop i gets every threads-th slot.
        var loops: [any EventLoop] = []
        var slots: [Int] = []
        for i in 0..<threads {
            loops.append(group.next())
            slots.append(configuration.concurrency / threads + (i < configuration.concurrency % threads ? 1 : 0))
        }

        let started = ContinuousClock.now
        if configuration.mode == .hold {
            return try await runHold(shared: shared, loops: loops, slots: slots, started: started, progress: progress)
        }
        if let duration = configuration.duration { shared.deadline = .now() + TimeAmount(duration) }

        let futures = zip(loops, slots).map { loop, n in
            loop.flatSubmit {
                let worker = Worker(loop: loop, shared: shared)
                return worker.start(slots: n)
            }
        }
        var results: [WorkerResult] = []
        for future in futures { results.append(try await future.get()) }
        let wall = ContinuousClock.now - started
        return makeReport(shared: shared, results: results, wall: wall, hold: nil)
    }

    private static func runHold(
        shared: SharedState, loops: [any EventLoop], slots: [Int], started: ContinuousClock.Instant,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> LoadReport {
        let configuration = shared.configuration
        let workers = try await withThrowingTaskGroup(of: NIOLoopBound<Worker>.self) { group in
            for (loop, n) in zip(loops, slots) {
                group.addTask {
                    try await loop.flatSubmit {
                        let worker = Worker(loop: loop, shared: shared)
                        let bound = NIOLoopBound(worker, eventLoop: loop)
                        return worker.startHold(slots: n).map { bound }
                    }.get()
                }
            }
            var all: [NIOLoopBound<Worker>] = []
            for try await w in group { all.append(w) }
            return all
        }
        let connectSeconds = (ContinuousClock.now - started).seconds
        progress("hold: connect phase done in \(String(format: "%.2f", connectSeconds)) s; holding for \(configuration.duration!)")
        try await Task.sleep(for: configuration.duration!)
        var results: [WorkerResult] = []
        for worker in workers {
            results.append(try await worker.eventLoop.submit { worker.value.endHold() }.get())
        }
        let wall = ContinuousClock.now - started
        var hold = HoldSummary(requested: configuration.concurrency, opened: 0, refused: 0, dropped: 0, openAtEnd: 0, connectSeconds: connectSeconds)
        for r in results {
            hold.opened += r.holdOpened
            hold.refused += r.holdRefused
            hold.dropped += r.holdDropped
            hold.openAtEnd += r.holdOpenAtEnd
        }
        return makeReport(shared: shared, results: results, wall: wall, hold: hold)
    }

    private static func makeReport(shared: SharedState, results: [WorkerResult], wall: Duration, hold: HoldSummary?) -> LoadReport {
        var total = WorkerResult()
        for r in results { total.merge(r) }
        let c = shared.configuration
        return LoadReport(
            mode: c.mode.rawValue, target: c.target.description, concurrency: c.concurrency,
            payload: c.mode == .lines ? "lines of \(c.lineSize) bytes" : c.payload.rawValue,
            uploadSize: Int64(c.bytesPerUpload), uploadsOK: total.ok, uploadsFailed: total.failed,
            bytes: total.bytes, bytesSent: total.bytesSent, records: total.records, wallSeconds: wall.seconds,
            latency: LatencySummary(nanoseconds: total.latencies), errors: total.errors, statuses: total.statuses,
            hold: hold
        )
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let c = duration.components
        self = .nanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }
}

/// State every worker reads; only the ticket counter changes (atomically).
final class SharedState: Sendable {
    let configuration: LoadConfiguration
    let address: SocketAddress
    let payload: Payload
    let issued = Atomic<Int>(0)
    private let deadlineNanos = Atomic<UInt64>(UInt64.max)

    /// The TLS client context (`https://` targets, `--tls`), or nil.
    let tls: NIOSSLContext?

    init(configuration: LoadConfiguration, address: SocketAddress, payload: Payload, tls: NIOSSLContext? = nil) {
        self.configuration = configuration
        self.address = address
        self.payload = payload
        self.tls = tls
    }

    /// Adds the TLS handler to a new connection's pipeline when the run speaks TLS: the
    /// upload handlers after it write and read plaintext.
    func addTLS(to channel: any Channel) throws {
        guard let tls else { return }
        let host = configuration.target.host
        // An IP address is verified against the certificate's IP entries; SNI carries names only.
        let name = host.first?.isNumber == true || host.contains(":") ? nil : host
        try channel.pipeline.syncOperations.addHandler(AbortPoint())
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: name))
    }

    var deadline: NIODeadline {
        get { .uptimeNanoseconds(deadlineNanos.load(ordering: .relaxed)) }
        set { deadlineNanos.store(newValue.uptimeNanoseconds, ordering: .relaxed) }
    }

    /// The number of the next upload to start, or nil when the count or duration is used up.
    func claim() -> Int? {
        if NIODeadline.now() >= deadline { return nil }
        let n = issued.wrappingAdd(1, ordering: .relaxed).oldValue
        if let count = configuration.count, n >= count { return nil }
        return n
    }
}

/// What one worker saw; merged at the end.
struct WorkerResult: Sendable {
    var ok = 0
    var failed = 0
    var bytes: Int64 = 0
    var bytesSent: Int64 = 0
    var records: Int64 = 0
    var latencies: [UInt64] = []
    var errors: [String: Int] = [:]
    var statuses: [String: Int] = [:]
    var holdOpened = 0
    var holdRefused = 0
    var holdDropped = 0
    var holdOpenAtEnd = 0

    mutating func merge(_ other: WorkerResult) {
        ok += other.ok
        failed += other.failed
        bytes += other.bytes
        bytesSent += other.bytesSent
        records += other.records
        latencies += other.latencies
        errors.merge(other.errors, uniquingKeysWith: +)
        statuses.merge(other.statuses, uniquingKeysWith: +)
        holdOpened += other.holdOpened
        holdRefused += other.holdRefused
        holdDropped += other.holdDropped
        holdOpenAtEnd += other.holdOpenAtEnd
    }
}

/// The connections of one event loop. Confined to `loop`: every method runs on it, so no locks.
final class Worker {
    let loop: any EventLoop
    let shared: SharedState
    var result = WorkerResult()
    private var active = 0
    private var done: EventLoopPromise<WorkerResult>?
    // Hold mode.
    private var holdToOpen = 0
    private var holdConnecting = 0
    private var holders: [HoldHandler] = []
    private var holdConnected: EventLoopPromise<Void>?

    init(loop: any EventLoop, shared: SharedState) {
        self.loop = loop
        self.shared = shared
    }

    var configuration: LoadConfiguration { shared.configuration }

    /// Starts `slots` connections; the future completes when the count/duration is used up and all closed.
    func start(slots: Int) -> EventLoopFuture<WorkerResult> {
        let promise = loop.makePromise(of: WorkerResult.self)
        done = promise
        for _ in 0..<slots { startNext() }
        finishIfIdle()
        return promise.futureResult
    }

    /// Claims the next upload and connects for it, if any is left.
    func startNext() {
        guard let ticket = shared.claim() else {
            finishIfIdle()
            return
        }
        active += 1
        let started = NIODeadline.now()
        let bootstrap: ClientBootstrap
        // The initializers capture the shared state, not this loop-bound worker.
        let shared = self.shared
        switch configuration.mode {
        case .http:
            let handler = NIOLoopBound(HTTPUploadHandler(worker: self, firstTicket: ticket, started: started), eventLoop: loop)
            bootstrap = makeBootstrap().channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try shared.addTLS(to: channel)
                    try channel.pipeline.syncOperations.addHandler(handler.value)
                }
            }
        case .tcp, .lines, .hold:
            let handler = NIOLoopBound(StreamUploadHandler(worker: self, ticket: ticket, started: started), eventLoop: loop)
            bootstrap = makeBootstrap().channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try shared.addTLS(to: channel)
                    try channel.pipeline.syncOperations.addHandler(handler.value)
                }
            }
        }
        bootstrap.connect(to: shared.address).assumeIsolated().whenFailure { error in
            self.recordFailure("connect: \(error)", bytesSent: 0)
            self.connectionClosed()
        }
    }

    func makeBootstrap() -> ClientBootstrap {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .connectTimeout(.seconds(30))
    }

    func recordSuccess(latency: UInt64, bytes: Int, records: Int) {
        result.ok += 1
        result.bytes += Int64(bytes)
        result.bytesSent += Int64(bytes)
        result.records += Int64(records)
        result.latencies.append(latency)
    }

    func recordFailure(_ reason: String, bytesSent: Int) {
        result.failed += 1
        result.bytesSent += Int64(bytesSent)
        result.errors[reason, default: 0] += 1
    }

    func recordStatus(_ status: Int) {
        result.statuses[String(status), default: 0] += 1
    }

    /// A connection ended (after reporting its uploads): start the next one.
    func connectionClosed() {
        active -= 1
        startNext()
    }

    private func finishIfIdle() {
        if active == 0, let done {
            self.done = nil
            done.succeed(result)
        }
    }

    // MARK: Hold mode

    func startHold(slots: Int) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        holdConnected = promise
        holdToOpen = slots
        openMoreHeld()
        return promise.futureResult
    }

    private func openMoreHeld() {
        while holdToOpen > 0, holdConnecting < configuration.holdConnectWindow {
            holdToOpen -= 1
            holdConnecting += 1
            let handler = HoldHandler(worker: self)
            holders.append(handler)
            let bound = NIOLoopBound(handler, eventLoop: loop)
            let shared = self.shared
            makeBootstrap().channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try shared.addTLS(to: channel)
                    try channel.pipeline.syncOperations.addHandler(bound.value)
                }
            }
            .connect(to: shared.address).assumeIsolated().whenComplete { result in
                self.holdConnecting -= 1
                switch result {
                case .success: self.result.holdOpened += 1
                case .failure(let error):
                    self.result.holdRefused += 1
                    self.result.errors["connect: \(error)", default: 0] += 1
                    handler.refused = true
                }
                self.openMoreHeld()
            }
        }
        if holdToOpen == 0, holdConnecting == 0, let promise = holdConnected {
            holdConnected = nil
            promise.succeed(())
        }
    }

    func holdDropped(_ reason: String) {
        result.holdDropped += 1
        result.errors[reason, default: 0] += 1
    }

    /// Ends the hold: counts the connections still open, then resets them (so a server discards
    /// rather than commits thousands of trickled fragments).
    func endHold() -> WorkerResult {
        for holder in holders where holder.isOpen {
            result.holdOpenAtEnd += 1
            holder.end()
        }
        result.bytesSent = holders.reduce(0) { $0 + Int64($1.sent) }
        holders = []
        return result
    }
}
