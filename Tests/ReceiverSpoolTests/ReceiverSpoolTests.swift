import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import SinkSpool
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import ReceiverSpool

/// A sink that fails its first `failures` uploads (after reading part of them), then stores.
private final class FlakySink: Sink {
    private let remainingFailures: Mutex<Int>
    private let failure: SluiceError.Code
    let delayPerChunk: Duration?
    let stored = Mutex<[String: [[UInt8]]]>([:])
    let attempts = Mutex(0)

    init(failures: Int, code: SluiceError.Code = .upstreamFailed, delayPerChunk: Duration? = nil) {
        remainingFailures = Mutex(failures)
        failure = code
        self.delayPerChunk = delayPerChunk
    }

    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        attempts.withLock { $0 += 1 }
        let fail = remainingFailures.withLock { n in
            defer { n -= 1 }
            return n > 0
        }
        var bytes: [UInt8] = []
        for try await chunk in body {
            bytes += chunk.readableBytesView
            if fail { throw SluiceError(failure, "the store is away") }
            if let delayPerChunk { try await Task.sleep(for: delayPerChunk) }
        }
        if fail { throw SluiceError(failure, "the store is away") }
        let name = context.metadata.name
        stored.withLock { $0[name, default: []].append(bytes) }
        return SinkReceipt(location: "flaky:\(name)", bytesStored: Int64(bytes.count))
    }

    var storedCount: Int { stored.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}

/// Spools `count` files through a real spool sink; returns their contents by upload name.
private func spool(_ count: Int, into root: String, size: Int = 20_000) async throws -> [String: [UInt8]] {
    let sink = try SinkSpool.make(.init(root: root, name: try NameTemplate("{name}")), environment: PluginEnvironment())
    try await sink.start()
    let pipeline = Pipeline(name: "in", stages: [], sink: sink)
    var sent: [String: [UInt8]] = [:]
    for i in 0..<count {
        let bytes = pseudoRandomBytes(count: size + i, seed: UInt64(i + 7))
        let name = String(format: "file-%03d", i)
        _ = try await pipeline.process(.test(name: name, bytes: bytes))
        sent[name] = bytes
    }
    return sent
}

private func startReceiver(
    root: String, sink: any Sink, archive: Bool = false, concurrency: Int = 4, chunkSize: ByteSize = .kibibytes(128)
) throws -> (ServiceGroup, Task<Void, any Error>) {
    let pipeline = Pipeline(name: "out", stages: [], sink: sink)
    let configuration = ReceiverSpool.Configuration(
        root: root, pipeline: "out", pollInterval: .milliseconds(50), concurrency: concurrency, archive: archive,
        retryInitial: .milliseconds(20), retryMax: .milliseconds(200), chunkSize: chunkSize
    )
    let environment = ReceiverEnvironment(plugin: PluginEnvironment(), name: "spool-in", pipelines: ["out": pipeline])
    let receiver = try ReceiverSpool.make(configuration, environment: environment)
    let group = ServiceGroup(configuration: .init(services: [receiver], logger: Logger(label: "test")))
    let task = Task { try await group.run() }
    return (group, task)
}

private func eventually(_ seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

@Suite("spool receiver", .timeLimit(.minutes(1)))
struct ReceiverSpoolTests {
    @Test("a failing downstream is retried with backoff; then every file is delivered exactly once and removed")
    func retriesThenDeliversExactlyOnce() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spoolrx")
        defer { dir.remove() }
        let sent = try await spool(20, into: dir.path)
        let sink = FlakySink(failures: 6)
        let (group, task) = try startReceiver(root: dir.path, sink: sink)
        let done = await eventually(30) { sink.storedCount == 20 && dir.list("new").isEmpty }
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(done)
        #expect(sink.attempts.withLock { $0 } == 26)
        let stored = sink.stored.withLock { $0 }
        #expect(stored.count == 20)
        for (name, bytes) in sent {
            #expect(stored[name] == [bytes], "\(name) not delivered exactly once")
        }
        #expect(dir.list("new").isEmpty)
        #expect(dir.list("tmp").isEmpty)
    }

    @Test("graceful shutdown stops picking files and lets in-flight ones finish")
    func gracefulShutdown() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spoolrx")
        defer { dir.remove() }
        _ = try await spool(6, into: dir.path, size: 8192)
        let sink = FlakySink(failures: 0, delayPerChunk: .milliseconds(150))
        let (group, task) = try startReceiver(root: dir.path, sink: sink, concurrency: 2, chunkSize: .kibibytes(1))
        let started = await eventually(20) { sink.attempts.withLock { $0 } == 2 }
        #expect(started)
        await group.triggerGracefulShutdown()
        try await task.value
        // The two in flight finished; nothing else was started.
        #expect(sink.attempts.withLock { $0 } == 2)
        #expect(sink.storedCount == 2)
        #expect(dir.list("new").count == 4)
        let delivered = Set(sink.stored.withLock { Array($0.keys) })
        #expect(delivered.isDisjoint(with: dir.list("new")))
    }

    @Test("files left in new/ by an earlier run are sent under their (decoded) names, then archived to cur/")
    func restartAndArchive() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spoolrx")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.path + "/new", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir.path + "/new/batch%2F2026%2Fa.log", contents: Data("a\n".utf8))
        _ = FileManager.default.createFile(atPath: dir.path + "/new/.hidden", contents: Data("skip".utf8))
        let sink = InMemorySink()
        let (group, task) = try startReceiver(root: dir.path, sink: sink, archive: true)
        let done = await eventually(20) { sink.committed.count == 1 && dir.list("cur").count == 1 }
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(done)
        #expect(sink.bytes(of: "batch/2026/a.log") == Array("a\n".utf8))
        #expect(dir.list("new") == [".hidden"])
        #expect(dir.list("cur") == ["batch%2F2026%2Fa.log"])
    }

    @Test("a file the downstream refuses for good moves to failed/ instead of being retried forever")
    func permanentFailure() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spoolrx")
        defer { dir.remove() }
        _ = try await spool(1, into: dir.path)
        let sink = FlakySink(failures: 100, code: .corruptInput)
        let (group, task) = try startReceiver(root: dir.path, sink: sink)
        let moved = await eventually(20) { dir.list("failed").count == 1 }
        try await Task.sleep(for: .milliseconds(200))
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(moved)
        #expect(sink.attempts.withLock { $0 } == 1)
        #expect(dir.list("new").isEmpty)
    }

    @Test("names round-trip through the spool encoding")
    func nameDecoding() {
        for name in ["a", "dir/file.txt", "100%/x", ".dot", "%2F-literal"] {
            #expect(SpoolReceiver.decode(SpoolFileName.encode(name)) == name)
        }
        #expect(SpoolReceiver.decode("odd%zz") == "odd%zz")
    }
}
