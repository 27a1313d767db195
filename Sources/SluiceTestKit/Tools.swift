import Foundation
import SluiceCore

// Helpers for tests that check outcomes with real files and real tools (gzip, zcat,
// sha256sum, python3), shared so every test target does it the same way.

/// A unique directory under the system temporary directory, for one test.
///
/// Remove it when the test ends, also on failure:
///
/// ```swift
/// let dir = try TemporaryDirectory()
/// defer { dir.remove() }
/// let input = try dir.write(bytes, to: "input.bin")
/// ```
public struct TemporaryDirectory: Sendable {
    /// The directory.
    public let url: URL

    /// Creates a new, empty directory.
    ///
    /// - Parameter prefix: The start of the directory's name; a UUID follows it.
    /// - Throws: The error from creating the directory.
    public init(prefix: String = "sluice-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The directory's path.
    public var path: String { url.path }

    /// The path of `name` inside the directory (the file need not exist).
    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `bytes` to the file `name` inside the directory.
    ///
    /// - Returns: The file's path.
    /// - Throws: The error from writing the file.
    public func write(_ bytes: [UInt8], to name: String) throws -> String {
        let p = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// The names in the subdirectory `sub` (the directory itself by default), sorted;
    /// empty if it does not exist.
    public func list(_ sub: String = "") -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: sub.isEmpty ? path : path + "/" + sub)) ?? []).sorted()
    }

    /// Removes the directory and everything in it; errors are ignored.
    public func remove() { try? FileManager.default.removeItem(at: url) }
}

/// What a tool printed and how it exited.
public struct ToolResult: Sendable {
    /// The exit status (or the signal number if the tool was killed).
    public var status: Int32
    /// Everything the tool wrote to standard output.
    public var stdout: [UInt8]
    /// Everything the tool wrote to standard error, decoded as UTF-8.
    public var stderr: String

    /// Standard output as UTF-8 text, without leading and trailing white space.
    public var text: String { String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Runs a command and waits for it to exit without blocking a thread.
///
/// `arguments[0]` is looked up on `PATH`. Standard input is empty; standard output and
/// standard error go through files, so a large output cannot make the tool wait for a reader.
/// The wait suspends the calling task (the process's termination handler resumes it), so
/// many concurrent calls do not exhaust the cooperative thread pool.
///
/// ```swift
/// let result = try await runTool(["gzip", "-t", path])
/// #expect(result.status == 0)
/// ```
///
/// - Parameters:
///   - arguments: The command and its arguments.
///   - directory: The working directory, or `nil` for the current one.
/// - Returns: The exit status and the output.
/// - Throws: The error from starting the process or from reading its output.
public func runTool(_ arguments: [String], in directory: String? = nil) async throws -> ToolResult {
    let scratch = try TemporaryDirectory(prefix: "sluice-tool")
    defer { scratch.remove() }
    let out = URL(fileURLWithPath: scratch.path("out")), err = URL(fileURLWithPath: scratch.path("err"))
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let outHandle = try FileHandle(forWritingTo: out), errHandle = try FileHandle(forWritingTo: err)
    defer {
        try? outHandle.close()
        try? errHandle.close()
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.standardOutput = outHandle
    process.standardError = errHandle
    process.standardInput = FileHandle.nullDevice
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        // Set before `run()` so an instantly exiting tool cannot be missed.
        process.terminationHandler = { finished in continuation.resume(returning: finished.terminationStatus) }
        do {
            try process.run()
        } catch {
            // The handler never runs for a process that did not start.
            process.terminationHandler = nil
            continuation.resume(throwing: error)
        }
    }
    return ToolResult(
        status: status,
        stdout: Array(try Data(contentsOf: out)),
        stderr: String(decoding: try Data(contentsOf: err), as: UTF8.self)
    )
}

/// The lowercase hexadecimal SHA-256 of `bytes`.
public func sha256Hex(_ bytes: some Sequence<UInt8>) -> String {
    var computer = DigestAlgorithm.sha256.makeComputer()
    Array(bytes).withUnsafeBytes { computer.update(bytes: $0) }
    return Hex.encode(computer.finalize())
}

/// Deterministic text that looks like a log file: compressible lines with varying numbers.
///
/// - Parameter count: The number of bytes to return.
/// - Returns: Exactly `count` bytes of newline-separated lines (the last one may be cut).
public func logLikeText(bytes count: Int) -> [UInt8] {
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

/// The temporary files of a disk sink whose temporary directory is `directory`: the
/// named ones in it, and the anonymous ones (`O_TMPFILE`, which have no name until they
/// are linked into place) that this process holds open there, as `#<inode>` entries
/// read from `/proc/self/fd`. Tests see an upload start, and check that none is left,
/// either way.
public func temporaryFiles(in directory: String) -> [String] {
    let named = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    var anonymous: [String] = []
    let prefix = directory + "/#"
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + entry) else { continue }
        if target.hasPrefix(prefix), target.hasSuffix(" (deleted)") {
            anonymous.append(String(target.dropFirst(directory.count + 1).dropLast(" (deleted)".count)))
        }
    }
    return (named + anonymous).sorted()
}
