import Foundation
import NIOCore
import SluiceCore

// Helpers for running real tools on real files (each test target keeps its own copy:
// test targets cannot share sources, and these are too test-specific for SluiceTestKit).

/// A unique temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-stages-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    func write(_ bytes: [UInt8], to name: String) throws -> String {
        let p = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// What a tool printed and how it exited.
struct ToolResult {
    var status: Int32
    var stdout: [UInt8]
    var stderr: String
    var text: String { String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Runs `arguments` (looked up on PATH), optionally in `directory`; output goes through
/// files so a large output cannot block the tool.
func runTool(_ arguments: [String], in directory: String? = nil) throws -> ToolResult {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-tool-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let out = scratch.appendingPathComponent("out"), err = scratch.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.standardOutput = outHandle
    process.standardError = errHandle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    try outHandle.close()
    try errHandle.close()
    return ToolResult(
        status: process.terminationStatus,
        stdout: Array(try Data(contentsOf: out)),
        stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self)
    )
}

/// Python's zlib decoding of the file at `path` with `wbits`: "<sha256 hex> <length>".
func pythonInflate(_ path: String, wbits: Int) throws -> ToolResult {
    try runTool([
        "python3", "-c",
        "import zlib,sys,hashlib; d=zlib.decompress(open(sys.argv[1],'rb').read(), int(sys.argv[2])); print(hashlib.sha256(d).hexdigest(), len(d))",
        path, "\(wbits)",
    ])
}

/// Lowercase hex sha256 of `bytes`.
func sha256Hex(_ bytes: [UInt8]) -> String {
    var computer = DigestAlgorithm.sha256.makeComputer()
    bytes.withUnsafeBytes { computer.update(bytes: $0) }
    return Hex.encode(computer.finalize())
}

/// Log-like text: compressible, with varying numbers.
func logText(bytes count: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(count + 200)
    var i = 0
    while out.count < count {
        let line = "2026-11-26T17:\(10 + i % 50):\(10 + i % 49).\(i % 1000)Z host-\(i % 7) app[\(1000 + i % 97)]: request id=\(i &* 2_654_435_761 % 1_000_003) path=/api/v1/items/\(i % 313) status=\(i % 11 == 0 ? 500 : 200) bytes=\(i % 65_536)\n"
        out.append(contentsOf: line.utf8)
        i += 1
    }
    return Array(out.prefix(count))
}
