// In-process stage cost: each stage inside a Pipeline versus the raw library call, in
// MB of input per CPU-second, side by side. Build in release:
//
//     swift run -c release stages-bench [MiB]
//     swift run -c release stages-bench rate [seconds]
//
// The second form checks rate_limit's accuracy: 1, 10 and 100 concurrent uploads
// sharing one 20 MiB/s bucket for about `seconds` (default 10).
//
// "stage" is (CPU of a pipeline with the stage − CPU of the same pipeline without it),
// so the pipeline's own cost (metering, the sink) is taken out, as in the benchmark of
// issue 4 but without sockets.
import Foundation
import Logging
import NIOCore
import SluiceCore
import StageCompress
import StageHash
import StageDecompress
import StageRateLimit

func cpuSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

struct CountingSink: Sink {
    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        var n: Int64 = 0
        for try await chunk in body { n += Int64(chunk.readableBytes) }
        return SinkReceipt(location: "count", bytesStored: n)
    }
}

func logText(bytes count: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count + 300)
    var rng = SystemRandomNumberGenerator()
    let methods = ["GET", "GET", "GET", "POST", "PUT"]
    var i = 0
    while out.count < count {
        let status = [200, 200, 200, 200, 201, 204, 304, 404, 500].randomElement(using: &rng)!
        let line = "2026-11-26T17:\(10 + i / 60 % 50):\(10 + i % 50).\(i % 1000)Z host-\(Int.random(in: 0..<8, using: &rng)) app[\(1000 + Int.random(in: 0..<97, using: &rng))]: \(methods.randomElement(using: &rng)!) /api/v1/items/\(Int.random(in: 0..<300, using: &rng)) status=\(status) bytes=\(Int.random(in: 0..<65536, using: &rng)) ms=\(Int.random(in: 0..<2000, using: &rng)) id=\(String(UInt32.random(in: 0...UInt32.max, using: &rng), radix: 16))\n"
        out.append(contentsOf: line.utf8)
        i += 1
    }
    return Array(out.prefix(count))
}

func randomBytes(_ count: Int) -> [UInt8] {
    var rng = SystemRandomNumberGenerator()
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for i in words.indices { words[i] = rng.next() }
    }
    return out
}

func chunks(_ bytes: [UInt8], size: Int = 65_536) -> [ByteBuffer] {
    stride(from: 0, to: bytes.count, by: size).map { ByteBuffer(bytes: bytes[$0..<min($0 + size, bytes.count)]) }
}

func measure(repeat n: Int = 3, _ body: () throws -> Void) rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<n {
        let t = cpuSeconds()
        try body()
        best = min(best, cpuSeconds() - t)
    }
    return best
}

func measureAsync(repeat n: Int = 3, _ body: () async throws -> Void) async rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<n {
        let t = cpuSeconds()
        try await body()
        best = min(best, cpuSeconds() - t)
    }
    return best
}

func pipelineCPU(_ stages: [(String, any Stage)], _ input: [ByteBuffer]) async throws -> Double {
    let pipeline = Pipeline(name: "bench", stages: stages, sink: CountingSink())
    return try await measureAsync {
        _ = try await pipeline.process(Upload(metadata: UploadMetadata(name: "b", listener: "bench"), body: UploadBody(chunks: input)))
    }
}

// One log line per upload would swamp the table.
LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }

if CommandLine.arguments.dropFirst().first == "rate" {
    let seconds = CommandLine.arguments.dropFirst(2).first.flatMap(Double.init) ?? 10
    let rate = 20 << 20
    let chunk = ByteBuffer(repeating: 0x61, count: 65_536)
    print("rate_limit accuracy: one shared bucket of 20 MiB/s (default burst 2 MiB), \(seconds) s")
    for uploads in [1, 10, 100] {
        let stage = RateLimitStage(.init(rate: ByteSize(Int64(rate)), scope: .pipeline))
        let pipeline = Pipeline(name: "rate", stages: [("rate_limit", stage)], sink: CountingSink())
        let chunksEach = max(1, Int(Double(rate) * seconds) / 65_536 / uploads)
        let started = ContinuousClock.now
        let finishes = try await withThrowingTaskGroup(of: Double.self) { group in
            for i in 0..<uploads {
                group.addTask {
                    let body = UploadBody(chunks: Array(repeating: chunk, count: chunksEach))
                    _ = try await pipeline.process(Upload(metadata: UploadMetadata(name: "u\(i)", listener: "bench"), body: body))
                    let d = (ContinuousClock.now - started).components
                    return Double(d.seconds) + Double(d.attoseconds) / 1e18
                }
            }
            var all: [Double] = []
            for try await t in group { all.append(t) }
            return all.sorted()
        }
        let total = Double(chunksEach * uploads * 65_536)
        let measured = total / finishes.last!
        print(String(format: "  %3d uploads: %.2f MiB/s (%+.1f%% of the rate, burst included), first done at %.2f s, last at %.2f s",
                     uploads, measured / 1_048_576, 100 * (measured / Double(rate) - 1), finishes.first!, finishes.last!))
    }
    exit(0)
}

let mib = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 64
let size = mib << 20
let inputs: [(String, [ByteBuffer])] = [("log text", chunks(logText(bytes: size))), ("random", chunks(randomBytes(size)))]
let mb = Double(size) / 1e6

print("\(mib) MiB inputs in 64 KiB chunks; MB of input per CPU-second, best of 3")
print("operation".padding(toLength: 22, withPad: " ", startingAt: 0), "input".padding(toLength: 9, withPad: " ", startingAt: 0), "      raw", "    stage", "  stage/raw")
func row(_ op: String, _ input: String, _ raw: Double, _ stage: Double) {
    print(op.padding(toLength: 22, withPad: " ", startingAt: 0), input.padding(toLength: 9, withPad: " ", startingAt: 0),
          String(format: "%9.0f %9.0f %10.1f%%", mb / raw, mb / stage, 100 * raw / stage))
}

for (label, input) in inputs {
    let base = try await pipelineCPU([], input)
    for level in [1, 6] {
        let raw = try measure {
            let d = try Deflater(format: .gzip, level: level)
            for c in input { _ = try d.compress(c) }
            _ = try d.finish()
        }
        let staged = try await pipelineCPU([("compress", try CompressStage(.init(format: .gzip, level: level)))], input) - base
        row("compress gzip \(level)", label, raw, staged)
    }
    for algorithm in [DigestAlgorithm.sha256, .crc32, .md5] {
        let raw = measure {
            var h = algorithm.makeComputer()
            for c in input { c.withUnsafeReadableBytes { h.update(bytes: $0) } }
            _ = h.finalize()
        }
        let staged = try await pipelineCPU([("hash", HashStage(.init(algorithm: algorithm), isFirstStage: true))], input) - base
        row("hash \(algorithm)", label, raw, staged)
    }
    // Decompress: raw inflate of the gzip of this input; output MB.
    let deflater = try Deflater(format: .gzip, level: 6)
    var packed: [ByteBuffer] = []
    for c in input { let out = try deflater.compress(c); if out.readableBytes > 0 { packed.append(out) } }
    packed.append(try deflater.finish())
    let raw = try measure {
        let inflater = try Inflater(format: .gzip)
        for c in packed {
            var c = c
            while c.readableBytes > 0 || inflater.hasPendingOutput { _ = try inflater.decompress(from: &c, maxBytes: 65_536) }
        }
        try inflater.finish()
    }
    let packedBase = try await pipelineCPU([], packed)
    let staged = try await pipelineCPU([("decompress", DecompressStage(.init()))], packed) - packedBase
    row("decompress gzip", label, raw, staged)
    print(String(format: "  (pass-through pipeline: %.0f MB per CPU-second)", mb / base))
}

// compress (level 1) + hash in one pipeline: one upload versus two at once, wall clock.
do {
    let input = inputs[0].1
    let pipeline = Pipeline(
        name: "both",
        stages: [("hash", HashStage(.init(), isFirstStage: true)), ("compress", try CompressStage(.init(format: .gzip, level: 1)))],
        sink: CountingSink()
    )
    func wall(_ uploads: Int) async throws -> (wall: Double, cpu: Double) {
        let cpu = cpuSeconds()
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<uploads {
                group.addTask {
                    _ = try await pipeline.process(Upload(metadata: UploadMetadata(name: "c\(i)", listener: "bench"), body: UploadBody(chunks: input)))
                }
            }
            try await group.waitForAll()
        }
        let d = (ContinuousClock.now - started).components
        return (Double(d.seconds) + Double(d.attoseconds) / 1e18, cpuSeconds() - cpu)
    }
    let one = try await wall(1)
    let two = try await wall(2)
    print(String(format: "hash + compress gzip 1, log text: 1 upload %.0f MB/s wall (%.0f MB per CPU-second), 2 uploads %.0f MB/s wall (%.0f per CPU-second): %.2fx on %d cores (wall figures need an idle machine)",
                 mb / one.wall, mb / one.cpu, 2 * mb / two.wall, 2 * mb / two.cpu, (2 * mb / two.wall) / (mb / one.wall), ProcessInfo.processInfo.activeProcessorCount))
}
