import Foundation
import NIOCore
import SluiceCore
import Testing

@testable import SluiceLoad

@Suite("Load generator logic")
struct LoadLogicTests {
    @Test("nearest-rank percentiles")
    func percentiles() {
        let samples = Array(1...100).map { UInt64($0) }
        #expect(LatencySummary.percentile(samples, 50) == 50)
        #expect(LatencySummary.percentile(samples, 99) == 99)
        #expect(LatencySummary.percentile(samples, 100) == 100)
        #expect(LatencySummary.percentile(samples, 0) == 1)
        #expect(LatencySummary.percentile([UInt64](), 50) == 0)
        #expect(LatencySummary.percentile([7, 9] as [UInt64], 50) == 7)
        #expect(LatencySummary.percentile([7, 9] as [UInt64], 51) == 9)

        // Shuffled input, nanoseconds → milliseconds.
        let summary = LatencySummary(nanoseconds: samples.map { $0 * 1_000_000 }.shuffled())
        #expect(summary.count == 100)
        #expect(summary.p50Ms == 50)
        #expect(summary.p99Ms == 99)
        #expect(summary.maxMs == 100)
        #expect(summary.meanMs == 50.5)
        #expect(LatencySummary(nanoseconds: []).maxMs == 0)
    }

    @Test("targets: host:port and URLs")
    func targets() {
        #expect(LoadTarget(parsing: "127.0.0.1:8888") == LoadTarget(host: "127.0.0.1", port: 8888))
        #expect(LoadTarget(parsing: "[::1]:9000") == LoadTarget(host: "::1", port: 9000))
        #expect(LoadTarget(parsing: "http://127.0.0.1:8080/upload/") == LoadTarget(host: "127.0.0.1", port: 8080, httpPath: "/upload/"))
        #expect(LoadTarget(parsing: "http://localhost:8080") == LoadTarget(host: "localhost", port: 8080, httpPath: "/"))
        #expect(LoadTarget(parsing: "http://example/x/") == LoadTarget(host: "example", port: 80, httpPath: "/x/"))
        #expect(LoadTarget(parsing: "http://127.0.0.1:8080/upload/")?.hostHeader == "127.0.0.1:8080")
        #expect(LoadTarget(parsing: "127.0.0.1") == nil)
        #expect(LoadTarget(parsing: ":8888") == nil)
        #expect(LoadTarget(parsing: "127.0.0.1:0") == nil)
        #expect(LoadTarget(parsing: "127.0.0.1:99999") == nil)
    }

    @Test("sizes and durations parse as the CLI takes them")
    func sizes() {
        #expect(ByteSize(parsing: "1MiB")?.bytes == 1 << 20)
        #expect(ByteSize(parsing: "256KiB")?.bytes == 256 << 10)
        #expect(ByteSize(parsing: "1GiB")?.bytes == 1 << 30)
        #expect(ByteSize(parsing: "50MB")?.bytes == 50_000_000)
        #expect(ByteSize(parsing: "4096")?.bytes == 4096)
        #expect(ByteSize(parsing: "lots") == nil)
        #expect(ConfigDuration(parsing: "10s")?.duration == .seconds(10))
        #expect(ConfigDuration(parsing: "1m30s")?.duration == .seconds(90))
    }

    @Test("configuration checks name the option")
    func validation() {
        let target = LoadTarget(host: "127.0.0.1", port: 1)
        func message(_ c: LoadConfiguration) -> String? {
            do { try c.validate(); return nil } catch let e as SluiceError { return e.message } catch { return "\(error)" }
        }
        #expect(message(LoadConfiguration(mode: .tcp, target: target, count: 1)) == nil)
        #expect(message(LoadConfiguration(mode: .tcp, target: target)) == "give --count or --duration")
        #expect(message(LoadConfiguration(mode: .hold, target: target)) == "hold mode needs --duration")
        #expect(message(LoadConfiguration(mode: .http, target: target, count: 1))?.contains("URL") == true)
        #expect(message(LoadConfiguration(mode: .tcp, target: target, concurrency: 0, count: 1))?.contains("--concurrency") == true)
        #expect(LoadConfiguration(mode: .lines, target: target, uploadSize: 1000, count: 1, lineSize: 300).bytesPerUpload == 900)
        #expect(LoadConfiguration(mode: .lines, target: target, uploadSize: 1000, count: 1, lineSize: 300).linesPerUpload == 3)
    }

    @Test("payload slices are views of one cycle, contiguous across the wrap")
    func payloadSlicing() {
        let content: [UInt8] = Array(0..<100)
        let payload = Payload(content: content, maxChunk: 30)
        #expect(payload.cycle == 100)
        #expect(payload.storage.readableBytes == 130)
        // A slice across the end of the cycle continues at its start.
        #expect(Array(payload.slice(at: 90, length: 20).readableBytesView) == Array(90..<100) + Array(0..<10))
        #expect(Array(payload.slice(at: 1234, length: 5).readableBytesView) == [34, 35, 36, 37, 38])
        // A long stream is the cycle repeated.
        let stream = payload.bytes(at: 0, count: 350)
        #expect(stream == Array((content + content + content + content).prefix(350)))
        // Slicing shares storage: no copy per upload.
        let a = payload.slice(at: 0, length: 30), b = payload.slice(at: 0, length: 30)
        a.withUnsafeReadableBytes { pa in
            b.withUnsafeReadableBytes { pb in #expect(pa.baseAddress == pb.baseAddress) }
        }
    }

    @Test("random payload is deterministic and incompressible; text compresses like logs")
    func payloadContent() throws {
        let random = Payload.make(.random, maxChunk: 1024, cycle: 1 << 20)
        #expect(random.cycle == 1 << 20)
        #expect(Payload.randomBytes(4096, seed: 1) == Payload.randomBytes(4096, seed: 1))
        #expect(Payload.randomBytes(4096, seed: 1) != Payload.randomBytes(4096, seed: 2))
        let sample = random.bytes(at: 0, count: 1 << 20)
        let randomRatio = try compressionRatio(sample)
        #expect(randomRatio < 1.01)

        let text = Payload.make(.text, maxChunk: 1024, cycle: 1 << 20)
        let textSample = text.bytes(at: 0, count: text.cycle)
        #expect(textSample.last == 0x0A)
        #expect(textSample.allSatisfy { $0 == 0x0A || (0x20..<0x7F).contains($0) })
        let textRatio = try compressionRatio(textSample)
        #expect(textRatio > 2.5 && textRatio < 15, "log-like text should compress like logs, got \(textRatio)")
    }

    @Test("lines payload: every line exactly lineSize bytes, whole lines per cycle")
    func linesPayload() {
        for lineSize in [2, 17, 200, 1000] {
            let payload = Payload.lines(lineSize: lineSize, maxChunk: 4096, cycle: 64 << 10)
            #expect(payload.cycle % lineSize == 0)
            let stream = payload.bytes(at: 0, count: payload.cycle * 2 + lineSize * 3)
            let lines = stream.split(separator: 0x0A, omittingEmptySubsequences: false)
            #expect(lines.last?.isEmpty == true)
            #expect(lines.dropLast().allSatisfy { $0.count == lineSize - 1 })
        }
    }

    @Test("pacer: allowance follows the rate")
    func pacer() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let pacer = Pacer(rate: 1000, start: start, chunk: 65536)
        #expect(pacer.burst == 100)
        #expect(pacer.allowance(sent: 0, now: start) == 100)
        #expect(pacer.allowance(sent: 100, now: start) == 0)
        #expect(pacer.allowance(sent: 100, now: start + .milliseconds(500)) == 500)
        #expect(pacer.wait(sent: 1000, now: start + .milliseconds(500)) >= .milliseconds(500))
        #expect(Pacer(rate: 2, start: start, chunk: 65536).burst == 1)
    }

    @Test("report JSON carries the derived rates")
    func reportJSON() throws {
        let report = LoadReport(
            mode: "tcp", target: "127.0.0.1:1", concurrency: 2, payload: "random", uploadSize: 1_000_000,
            uploadsOK: 4, uploadsFailed: 0, bytes: 4_000_000, bytesSent: 4_000_000, records: 0, wallSeconds: 2,
            latency: LatencySummary(nanoseconds: [1_000_000]), errors: [:], statuses: [:], hold: nil
        )
        let object = try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any]
        #expect(object?["mb_per_s"] as? Double == 2)
        #expect(object?["uploads_per_s"] as? Double == 2)
        #expect((object?["latency"] as? [String: Any])?["p99_ms"] as? Double == 1)
        let decoded = try JSONDecoder().decode(LoadReport.self, from: Data(report.json().utf8))
        #expect(decoded.bytes == 4_000_000)
        #expect(report.text().contains("2.0 MB/s"))
    }
}

/// zlib level 6 compressed size ratio (original / compressed), via the system gzip binary.
func compressionRatio(_ bytes: [UInt8]) throws -> Double {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-load-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("sample")
    try Data(bytes).write(to: file)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/gzip")
    process.arguments = ["-6", "-k", file.path]
    try process.run()
    process.waitUntilExit()
    let compressed = try FileManager.default.attributesOfItem(atPath: file.path + ".gz")[.size] as! Int
    return Double(bytes.count) / Double(compressed)
}
