import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import SinkRotate

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let current: Mutex<Date>
    init(_ start: Date = Date(timeIntervalSince1970: 1_795_000_000)) { current = Mutex(start) }
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 += seconds } }
}

func makeSink(_ configuration: SinkRotate.Configuration, clock: TestClock? = nil) throws -> RotateSink {
    var environment = PluginEnvironment()
    if let clock { environment.now = { clock.now } }
    return try #require(try SinkRotate.make(configuration, environment: environment) as? RotateSink)
}

/// A records upload whose chunks each hold whole lines.
func recordsUpload(_ chunks: [[String]], name: String = "logs", listener: String = "tcp") -> Upload {
    let buffers = chunks.map { lines in ByteBuffer(string: lines.map { $0 + "\n" }.joined()) }
    return Upload(
        metadata: UploadMetadata(name: name, listener: listener, mode: .records),
        body: UploadBody(chunks: buffers)
    )
}

func read(_ path: String) -> [UInt8] {
    (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))) ?? []
}

/// Decodes concatenated gzip members with the core inflater.
func gunzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let inflater = try Inflater(format: .gzip)
    var out = try inflater.decompress(ByteBuffer(bytes: bytes))
    try inflater.finish()
    return out.readBytes(length: out.readableBytes) ?? []
}

/// Runs a program and returns its exit status.
@discardableResult
func run(_ program: String, _ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// The lines of every file of `base` under `directory`: rotated (oldest first, gz
/// decoded) then the active file.
func allLines(directory: String, base: String) throws -> [String] {
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
    func index(_ name: String) -> Int? {
        var rest = name.dropFirst(base.count + 1)
        if rest.hasSuffix(".gz") { rest = rest.dropLast(3) }
        return Int(rest)
    }
    let rotated = names.filter { $0.hasPrefix(base + ".") && index($0) != nil }.sorted { index($0)! > index($1)! }
    var lines: [String] = []
    for name in rotated + (names.contains(base) ? [base] : []) {
        var bytes = read(directory + "/" + name)
        if name.hasSuffix(".gz") { bytes = try gunzip(bytes) }
        if !bytes.isEmpty { #expect(bytes.last == 0x0A, "\(name) does not end with a newline") }
        lines += String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }
    return lines
}

/// Polls `condition` every 20 ms for up to `seconds`.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// Deterministic pseudo-random numbers for test data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
