// s3-bench: drives uploads through a Sluice Pipeline into the `s3` sink and reports
// throughput and peak RSS, for comparison with aws-cli against the same server.
//
//   eval "$(scripts/s3-server.sh start)"
//   swift run -c release s3-bench --count 16 --size 64MiB [--part-size 8MiB] [--parallel-parts 2]
//
// Bodies are generated in memory (64 KiB chunks of a repeated random block), so the
// figure is the sink's: signing, hashing, HTTP, and the server.
import Foundation
import Logging
import NIOCore
import SinkS3
import SluiceCore
import Synchronization

func argument(_ name: String, _ fallback: String) -> String {
    let args = CommandLine.arguments
    if let i = args.firstIndex(of: "--\(name)"), i + 1 < args.count { return args[i + 1] }
    return fallback
}

func rssMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        return kb / 1024
    }
    return 0
}

struct RepeatingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let size: Int64
    let block: ByteBuffer
    func makeAsyncIterator() -> Iterator { Iterator(remaining: size, block: block) }
    struct Iterator: AsyncIteratorProtocol {
        var remaining: Int64
        let block: ByteBuffer
        mutating func next() async throws -> ByteBuffer? {
            guard remaining > 0 else { return nil }
            let n = Int(Swift.min(Int64(block.readableBytes), remaining))
            remaining -= Int64(n)
            return block.getSlice(at: block.readerIndex, length: n)
        }
    }
}

// As `sluice serve` does: the figures should be the server's.
MemoryTuning.apply()
let env = ProcessInfo.processInfo.environment
guard let endpoint = env["S3_ENDPOINT"] else {
    FileHandle.standardError.write(Data("set S3_ENDPOINT (eval \"$(scripts/s3-server.sh start)\")\n".utf8))
    exit(2)
}
let count = Int(argument("count", "1"))!
let size = ByteSize(parsing: argument("size", "1GiB"))!.bytes
let yaml = """
    endpoint: \(endpoint)
    bucket: \(env["S3_BUCKET"] ?? "sluice-test")
    prefix: bench/
    part_size: \(argument("part-size", "8MiB"))
    parallel_parts: \(argument("parallel-parts", "2"))
    max_memory: \(argument("max-memory", "1GiB"))
    checksum: \(argument("checksum", "sha256"))
    """
let root = try ConfigNode.parse(yaml, file: "bench")
let configuration = try ConfigDecoder(file: "bench", root: root, registry: PluginRegistry()).decode(S3SinkPlugin.Configuration.self)
var logger = Logger(label: "s3-bench")
logger.logLevel = .warning
let sink = try S3SinkPlugin.make(configuration, environment: PluginEnvironment(logger: logger))
let pipeline = Pipeline(name: "bench", stages: [], sink: sink, logger: logger)
try await pipeline.start()

let block: ByteBuffer = {
    var buffer = ByteBuffer()
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<(64 * 1024 / 8) { buffer.writeInteger(generator.next() as UInt64) }
    return buffer
}()

let peak = Mutex<Double>(0)
let sampler = Task {
    while !Task.isCancelled {
        let now = rssMiB()
        peak.withLock { $0 = max($0, now) }
        try? await Task.sleep(for: .milliseconds(50))
    }
}
let started = ContinuousClock.now
try await withThrowingTaskGroup(of: Void.self) { group in
    for i in 0..<count {
        group.addTask {
            let upload = Upload(metadata: UploadMetadata(name: "obj-\(i).bin", listener: "bench"), body: UploadBody(RepeatingBody(size: size, block: block)))
            _ = try await pipeline.process(upload)
        }
    }
    try await group.waitForAll()
}
let elapsed = ContinuousClock.now - started
sampler.cancel()
_ = await sampler.value
await pipeline.stop()
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let total = Double(size) * Double(count) / 1_048_576
print(String(format: "sluice: %d × %@ in %.2f s = %.1f MiB/s, peak RSS %.0f MiB", count, "\(ByteSize(size))", seconds, total / seconds, peak.withLock { $0 }))
