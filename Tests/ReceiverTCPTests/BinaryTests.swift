import Foundation
import SluiceCore
import SluiceTestKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Drives the built `sluice` executable as a user would: serve, `nc -N`, SIGTERM.
@Suite("sluice binary", .timeLimit(.minutes(1)))
struct BinaryTests {
    /// The `sluice` executable next to the test bundle (`swift build` puts both in one directory).
    static var executable: String? {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("sluice").path,
            URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("sluice").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var hasNetcat: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/nc") || FileManager.default.isExecutableFile(atPath: "/bin/nc")
    }

    @Test("sluice serve stores a file sent with nc -N, prints the receipt, exits 0 on SIGTERM",
          .enabled(if: hasNetcat, "needs nc (netcat-openbsd)"))
    func serveSendStop() async throws {
        let executable = try #require(Self.executable, "build the sluice executable first (swift build)")
        let dir = try Scratch()
        defer { dir.remove() }
        let port = try freePort()
        let config = dir.path + "/sluice.yaml"
        try """
        listeners:
          tcp:
            type: tcp
            listen: 127.0.0.1:\(port)
            pipeline: files
        pipelines:
          files:
            sink:
              type: disk
              root: \(dir.path)/data
              name: "{name}.bin"
        shutdown:
          drain_timeout: 5s
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let payload = pseudoRandomBytes(count: 3 * 1024 * 1024 + 5, seed: 42)
        let input = dir.path + "/payload.bin"
        _ = FileManager.default.createFile(atPath: input, contents: Data(payload))

        let server = Process()
        server.executableURL = URL(fileURLWithPath: executable)
        server.arguments = ["serve", "--config", config]
        server.standardOutput = try FileHandle(forWritingTo: touch(dir.path + "/stdout"))
        server.standardError = try FileHandle(forWritingTo: touch(dir.path + "/stderr"))
        try server.run()
        defer { if server.isRunning { server.terminate() } }

        // Ready when it prints where it listens.
        let deadline = ContinuousClock.now + .seconds(20)
        while !(dir.text("stdout").contains("listening")), ContinuousClock.now < deadline, server.isRunning {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(dir.text("stdout").contains("127.0.0.1:\(port)"), "stdout: \(dir.text("stdout"))\nstderr: \(dir.text("stderr"))")

        let (status, output) = try await run(["/usr/bin/env", "nc", "-N", "127.0.0.1", "\(port)"], stdin: input)
        #expect(status == 0)
        let r = try receipt(output)
        #expect(r.bytesReceived == Int64(payload.count))
        #expect(r.location.hasSuffix(".bin"))
        #expect(dir.contents("data/" + r.location) == payload)

        kill(server.processIdentifier, SIGTERM)
        let exited = ContinuousClock.now + .seconds(15)
        while server.isRunning, ContinuousClock.now < exited { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!server.isRunning)
        #expect(server.terminationStatus == 0, "stderr: \(dir.text("stderr"))")
        #expect(dir.temporaries(root: "data").isEmpty)
        #expect(dir.files(in: "data") == [r.location])
    }
}

extension Scratch {
    func text(_ relative: String) -> String {
        String(decoding: contents(relative) ?? [], as: UTF8.self)
    }
}

private func touch(_ path: String) -> URL {
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    return URL(fileURLWithPath: path)
}

/// A port that was free a moment ago (bind to 0, read it, close).
private func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SluiceError(.internal, "socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw SluiceError(.internal, "bind failed") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw SluiceError(.internal, "getsockname failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Runs a command with stdin from a file; returns its exit status and stdout.
private func run(_ command: [String], stdin: String) async throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: command[0])
    process.arguments = Array(command.dropFirst())
    process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: stdin))
    let output = Pipe()
    process.standardOutput = output
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        process.terminationHandler = { _ in continuation.resume() }
        do { try process.run() } catch { continuation.resume(throwing: error) }
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
