import Foundation
import NIOCore
import SinkSpool
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import ReceiverSpool

/// Records when each upload was committed downstream.
private final class TimingSink: PreparingSink {
    let inner: any PreparingSink
    let committedAt = Mutex<[String: ContinuousClock.Instant]>([:])
    init(inner: any PreparingSink) { self.inner = inner }
    func start() async throws { try await inner.start() }
    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        let prepared = try await inner.prepare(body, context: context)
        return Timed(inner: prepared, name: context.metadata.name, sink: self)
    }
    final class Timed: PreparedObject {
        let inner: any PreparedObject
        let name: String
        let sink: TimingSink
        init(inner: any PreparedObject, name: String, sink: TimingSink) {
            self.inner = inner
            self.name = name
            self.sink = sink
        }
        func commit() async throws -> SinkReceipt {
            let receipt = try await inner.commit()
            sink.committedAt.withLock { $0[name] = .now }
            return receipt
        }
        func abort() async { await inner.abort() }
    }
}

private final class Shared: Sendable {
    let next = Mutex(0)
    let spooledAt = Mutex<[String: ContinuousClock.Instant]>([:])
}

/// Spool hand-off: uploads through `spool` → `spool` receiver → a downstream on disk.
/// Run with `SLUICE_BENCH=1 swift test -c release --filter SpoolBenchmark`.
@Suite("spool benchmark", .enabled(if: ProcessInfo.processInfo.environment["SLUICE_BENCH"] != nil))
struct SpoolBenchmark {
    @Test("10,000 small uploads: throughput and new/ → downstream commit latency")
    func handOff() async throws {
        let root = FileManager.default.temporaryDirectory.path + "/sluice-spoolbench-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let count = Int(ProcessInfo.processInfo.environment["SLUICE_BENCH_COUNT"] ?? "") ?? 10_000
        let spoolSink = try SinkSpool.make(.init(root: root + "/spool", name: try NameTemplate("{name}")), environment: PluginEnvironment())
        try await spoolSink.start()
        let inbound = Pipeline(name: "in", stages: [], sink: spoolSink)
        let downstream = TimingSink(inner: try #require(try SinkSpool.make(.init(root: root + "/out", name: try NameTemplate("{name}"), fsync: ProcessInfo.processInfo.environment["SLUICE_BENCH_NOFSYNC"] == nil), environment: PluginEnvironment()) as? any PreparingSink))
        try await downstream.start()
        let outbound = Pipeline(name: "out", stages: [], sink: downstream)
        let configuration = ReceiverSpool.Configuration(root: root + "/spool", pipeline: "out", pollInterval: .milliseconds(100), concurrency: 16)
        let receiver = try ReceiverSpool.make(configuration, environment: ReceiverEnvironment(plugin: PluginEnvironment(), name: "fwd", pipelines: ["out": outbound]))
        let prespool = ProcessInfo.processInfo.environment["SLUICE_BENCH_PRESPOOL"] != nil
        var run: Task<Void, any Error>? = prespool ? nil : Task { try await receiver.run() }

        let shared = Shared()
        let payload = pseudoRandomBytes(count: 1024)
        let started = ContinuousClock.now
        // Optional pacing (uploads per second), to measure latency below saturation.
        let rate = Double(ProcessInfo.processInfo.environment["SLUICE_BENCH_RATE"] ?? "")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    while true {
                        let i = shared.next.withLock { n -> Int in defer { n += 1 }; return n }
                        guard i < count else { return }
                        if let rate { try await Task.sleep(until: started + .milliseconds(Int64(Double(i) * 1000 / rate))) }
                        let name = String(format: "u%06d", i)
                        _ = try await inbound.process(.test(name: name, bytes: payload))
                        shared.spooledAt.withLock { $0[name] = .now }
                    }
                }
            }
            try await group.waitForAll()
        }
        let spooled = ContinuousClock.now
        if run == nil { run = Task { try await receiver.run() } }
        while downstream.committedAt.withLock({ $0.count }) < count {
            try await Task.sleep(for: .milliseconds(10))
        }
        let finished = ContinuousClock.now
        run?.cancel()
        _ = try? await run?.value

        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        let committed = downstream.committedAt.withLock { $0 }
        let spooledTimes = shared.spooledAt.withLock { $0 }
        let latencies = spooledTimes.compactMap { name, t in committed[name].map { seconds($0 - t) * 1000 } }.sorted()
        let p50 = latencies[latencies.count / 2]
        let p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
        print("BENCH spool uploads=\(count) spool_in_s=\(String(format: "%.2f", seconds(spooled - started))) end_to_end_s=\(String(format: "%.2f", seconds(finished - started))) forward_s=\(String(format: "%.2f", seconds(finished - spooled))) uploads_per_s=\(Int(Double(count) / seconds(finished - started))) latency_ms_p50=\(String(format: "%.1f", p50)) p99=\(String(format: "%.1f", p99))")
        #expect(committed.count == count)
    }
}
