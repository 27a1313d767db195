import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import SinkRotate

/// Throughput of the rotate sink alone (no sockets): 64 concurrent senders of 200-byte
/// lines. Run with `SLUICE_BENCH=1 swift test -c release --filter RotateBenchmark`.
@Suite("rotate benchmark", .enabled(if: ProcessInfo.processInfo.environment["SLUICE_BENCH"] != nil))
struct RotateBenchmark {
    @Test("64 senders × 200-byte lines into rotate", arguments: [1, 32, 320])
    func lines(linesPerChunk: Int) async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-bench")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: .mebibytes(256), keep: 100))
        try await sink.start()
        let pipeline = Pipeline(name: "bench", stages: [], sink: sink)
        let senders = 64
        let linesPerSender = linesPerChunk == 1 ? 5_000 : 40_000
        let line = String(repeating: "x", count: 199)
        let chunk = ByteBuffer(string: Array(repeating: line + "\n", count: linesPerChunk).joined())
        let chunks = linesPerSender / linesPerChunk
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<senders {
                group.addTask {
                    let upload = Upload(metadata: UploadMetadata(name: "b", listener: "t", mode: .records), body: UploadBody(chunks: Array(repeating: chunk, count: chunks)))
                    _ = try await pipeline.process(upload)
                }
            }
            try await group.waitForAll()
        }
        await sink.stop()
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let records = senders * chunks * linesPerChunk
        let size = dir.list().filter { $0.hasPrefix("app.log") }.reduce(Int64(0)) { $0 + (Posix.size(at: dir.path + "/" + $1) ?? 0) }
        #expect(size == Int64(records * 200))
        print("BENCH rotate lines_per_chunk=\(linesPerChunk) records=\(records) seconds=\(String(format: "%.3f", seconds)) records_per_s=\(Int(Double(records) / seconds)) MB_per_s=\(String(format: "%.1f", Double(records * 200) / seconds / 1e6))")
    }
}
