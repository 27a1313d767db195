import Foundation
import NIOCore
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

    @Test("SIGHUP: a renewed TLS certificate is served from then on; a config that cannot build is refused and the running one keeps serving",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/socat") && FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl"),
                   "needs socat and openssl"))
    func reloadRenewsCertificate() async throws {
        let executable = try #require(Self.executable, "build the sluice executable first (swift build)")
        let dir = try Scratch()
        defer { dir.remove() }
        let first = try TemporaryDirectory(prefix: "sluice-reload-a"), second = try TemporaryDirectory(prefix: "sluice-reload-b")
        defer { first.remove(); second.remove() }
        let old = try await TestCertificates.make(in: first), renewed = try await TestCertificates.make(in: second)
        // The listener reads these paths; renewing copies new files over them.
        let certificate = dir.path + "/server.pem", key = dir.path + "/server.key"
        try FileManager.default.copyItem(atPath: old.serverCertificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: old.serverKey, toPath: key)
        let port = try freePort()
        let config = dir.path + "/sluice.yaml"
        try """
            listeners:
              tcp:
                type: tcp
                listen: 127.0.0.1:\(port)
                pipeline: files
                tls: { certificate: \(certificate), private_key: \(key) }
            pipelines:
              files:
                sink: { type: disk, root: \(dir.path)/data }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let input = dir.path + "/line.txt"
        _ = FileManager.default.createFile(atPath: input, contents: Data("renewed\n".utf8))
        func send(trusting ca: String) async throws -> String {
            try await run(["/usr/bin/socat", "-t", "5", "-", "OPENSSL:localhost:\(port),cafile=\(ca)"], stdin: input).1
        }
        let server = try await startSluice(executable, config: config, in: dir, log: "server")
        defer { if server.isRunning { server.terminate() } }
        /// Sends SIGHUP and waits until the server logged its `count`th SIGHUP outcome.
        func reload(waitingFor count: Int) async throws {
            kill(server.processIdentifier, SIGHUP)
            let deadline = ContinuousClock.now + .seconds(10)
            while dir.text("server.err").components(separatedBy: "SIGHUP:").count - 1 < count, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        #expect(try receipt(try await send(trusting: old.caCertificate)).bytesStored == 8)

        // Renewed: new certificate and key on the same paths, then SIGHUP.
        try FileManager.default.removeItem(atPath: certificate)
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: renewed.serverCertificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: renewed.serverKey, toPath: key)
        try await reload(waitingFor: 1)
        #expect(dir.text("server.err").contains("SIGHUP: reloaded"), "\(dir.text("server.err"))")
        // The new listener binds beside the old one (SO_REUSEPORT); wait until the old one closed.
        let closed = ContinuousClock.now + .seconds(10)
        while !dir.text("server.err").contains("stopped listening"), ContinuousClock.now < closed {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try receipt(try await send(trusting: renewed.caCertificate)).bytesStored == 8)
        #expect(try await send(trusting: old.caCertificate).isEmpty, "the old certificate is still served")

        // A key that does not match the certificate: refused, the running listener goes on.
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: renewed.clientKey, toPath: key)
        try await reload(waitingFor: 2)
        #expect(dir.text("server.err").contains("SIGHUP: keeping the running config"), "\(dir.text("server.err"))")
        #expect(dir.text("server.err").contains("cannot be used together"), "\(dir.text("server.err"))")
        #expect(try receipt(try await send(trusting: renewed.caCertificate)).bytesStored == 8)

        try await stopWithSIGTERM(server)
        #expect(server.terminationStatus == 0, "stderr: \(dir.text("server.err"))")
        #expect(dir.files(in: "data").count == 3)
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

        let server = try await startSluice(executable, config: config, in: dir, log: "server")
        defer { if server.isRunning { server.terminate() } }
        #expect(dir.text("server.out").contains("127.0.0.1:\(port)"), "stdout: \(dir.text("server.out"))\nstderr: \(dir.text("server.err"))")

        let (status, output) = try await run(["/usr/bin/env", "nc", "-N", "127.0.0.1", "\(port)"], stdin: input)
        #expect(status == 0)
        let r = try receipt(output)
        #expect(r.bytesReceived == Int64(payload.count))
        #expect(r.location.hasSuffix(".bin"))
        #expect(dir.contents("data/" + r.location) == payload)

        try await stopWithSIGTERM(server)
        #expect(!server.isRunning)
        #expect(server.terminationStatus == 0, "stderr: \(dir.text("server.err"))")
        #expect(dir.temporaries(root: "data").isEmpty)
        #expect(dir.files(in: "data") == [r.location])
    }

    @Test("on SIGTERM the admin listener answers 503 draining while an upload in flight finishes, then the server exits 0",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl"))
    func healthDuringDrain() async throws {
        let executable = try #require(Self.executable, "build the sluice executable first (swift build)")
        let dir = try Scratch()
        defer { dir.remove() }
        let port = try freePort(), adminPort = try freePort()
        let config = dir.path + "/sluice.yaml"
        try """
        listeners:
          tcp:
            type: tcp
            listen: 127.0.0.1:\(port)
            pipeline: files
            prebuffer: 0
        pipelines:
          files:
            sink: { type: disk, root: \(dir.path)/data, name: "{name}.bin", memory_buffer: 0 }
        admin:
          listen: 127.0.0.1:\(adminPort)
        shutdown:
          drain_timeout: 20s
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try await startSluice(executable, config: config, in: dir, log: "server")
        defer { if server.isRunning { server.terminate() } }
        func health() async throws -> String {
            try await runCommand(["/usr/bin/curl", "-s", "--max-time", "5", "-w", " %{http_code}", "http://127.0.0.1:\(adminPort)/healthz"])
        }
        #expect(try await health() == "ok\n 200")

        // An upload in flight: half its bytes sent, the rest held back until the server drains.
        let head = pseudoRandomBytes(count: 300_000, seed: 7), tail = pseudoRandomBytes(count: 300_000, seed: 8)
        let upload = try await Client.heldUpload(port, head: head, tail: tail)
        // Under way once the server received the first half (bytes received are counted as they
        // arrive; its temporary file is anonymous, in the server's process).
        func received() async throws -> Bool {
            let metrics = try await runCommand(["/usr/bin/curl", "-s", "--max-time", "5", "http://127.0.0.1:\(adminPort)/metrics"])
            return metrics.split(separator: "\n").contains { $0.hasPrefix("sluice_bytes_received_total{") && $0.hasSuffix(" 300000") }
        }
        let started = ContinuousClock.now + .seconds(10)
        while try await !received(), ContinuousClock.now < started { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await received(), "the upload did not start")

        kill(server.processIdentifier, SIGTERM)
        var answer = ""
        let draining = ContinuousClock.now + .seconds(10)
        repeat {
            try await Task.sleep(for: .milliseconds(50))
            answer = try await health()
        } while answer != "draining\n 503" && ContinuousClock.now < draining
        #expect(answer == "draining\n 503")
        let metrics = try await runCommand(["/usr/bin/curl", "-s", "--max-time", "5", "http://127.0.0.1:\(adminPort)/metrics"])
        #expect(metrics.contains("sluice_"), "/metrics during the drain: \(metrics.prefix(200))")
        #expect(server.isRunning)

        let stored = try receipt(try await upload.finish())
        #expect(stored.bytesStored == 600_000)
        let exited = ContinuousClock.now + .seconds(15)
        while server.isRunning, ContinuousClock.now < exited { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!server.isRunning)
        #expect(server.terminationStatus == 0, "stderr: \(dir.text("server.err"))")
        #expect(dir.contents("data/" + stored.location) == head + tail)
        #expect(dir.temporaries(root: "data").isEmpty)
    }

    /// R-K2/R-K5: `kill -9` in the middle of a burst of line senders into `rotate`; after a
    /// restart every file decodes, no record is torn, acknowledged lines are all there.
    @Test("kill -9 mid-burst into rotate: after restart no torn record, acknowledged lines present",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs python3"))
    func killNineMidBurstIntoRotate() async throws {
        let executable = try #require(Self.executable, "build the sluice executable first (swift build)")
        let dir = try Scratch()
        defer { dir.remove() }
        let port = try freePort()
        let config = dir.path + "/sluice.yaml"
        try """
        listeners:
          lines:
            type: tcp
            listen: 127.0.0.1:\(port)
            pipeline: logs
            framing: lines
        pipelines:
          logs:
            sink:
              type: rotate
              root: \(dir.path)/logs
              path: app.log
              max_size: 256KiB
              keep: 1000
              compress_rotated: true
              compress_level: 1
        """.write(toFile: config, atomically: true, encoding: .utf8)
        // Senders: 8 threads, each opening connections of 400 lines, half-closing, and
        // recording a connection as acknowledged only when its receipt line arrives.
        let sender = dir.path + "/send.py"
        try #"""
        import socket, sys, threading
        port, ack_path, rounds, tag = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
        lock = threading.Lock()
        def worker(t):
            for c in range(rounds):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    body = "".join("%s%d-c%d-l%d %s\n" % (tag, t, c, i, "x" * (i % 50)) for i in range(400))
                    s.sendall(body.encode()); s.shutdown(socket.SHUT_WR)
                    reply = b""
                    while True:
                        d = s.recv(65536)
                        if not d: break
                        reply += d
                    s.close()
                    if b'"bytes_received"' in reply:
                        with lock, open(ack_path, "a") as f: f.write("%s%d-c%d\n" % (tag, t, c))
                except OSError:
                    return
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        [th.start() for th in threads]; [th.join() for th in threads]
        """#.write(toFile: sender, atomically: true, encoding: .utf8)

        let first = try await startSluice(executable, config: config, in: dir, log: "first")
        let burst = Process()
        burst.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        burst.arguments = [sender, "\(port)", dir.path + "/acked", "1000", "a"]
        try burst.run()
        // Let some connections complete, then kill the server in the middle of the burst.
        let deadline = ContinuousClock.now + .seconds(20)
        while dir.text("acked").split(separator: "\n").count < 40, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(first.processIdentifier, SIGKILL)
        while first.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        burst.waitUntilExit()
        let acknowledged = Set(dir.text("acked").split(separator: "\n").map(String.init))
        #expect(acknowledged.count >= 40)

        // Restart: the sink repairs the active file; new lines follow whole records.
        let second = try await startSluice(executable, config: config, in: dir, log: "second")
        let more = Process()
        more.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        more.arguments = [sender, "\(port)", dir.path + "/acked2", "2", "b"]
        try more.run()
        more.waitUntilExit()
        kill(second.processIdentifier, SIGTERM)
        while second.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(second.terminationStatus == 0, "stderr: \(dir.text("second.err"))")
        let acknowledgedAfter = Set(dir.text("acked2").split(separator: "\n").map(String.init))
        #expect(acknowledgedAfter.count == 16)

        // Check every file with Python: each decodes (gzip or plain), every line is a whole
        // record, and every acknowledged connection has all 400 of its lines.
        let checker = dir.path + "/check.py"
        try #"""
        import gzip, os, re, sys, collections
        root, acked = sys.argv[1], set(open(sys.argv[2]).read().split()) | set(open(sys.argv[3]).read().split())
        pattern = re.compile(r"^([ab]\d+)-c(\d+)-l(\d+) x*$")
        lines_by_conn = collections.Counter(); bad = 0; files = 0
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if not os.path.isfile(path) or name.startswith("."): continue
            files += 1
            data = gzip.open(path).read() if name.endswith(".gz") else open(path, "rb").read()
            text = data.decode()
            assert text == "" or text.endswith("\n"), "file %s ends mid-record" % name
            for line in text.splitlines():
                m = pattern.match(line)
                if not m: bad += 1; print("torn:", name, repr(line[:80])); continue
                lines_by_conn["%s-c%s" % (m.group(1), m.group(2))] += 1
        missing = [c for c in acked if lines_by_conn[c] != 400]
        print("files", files, "connections", len(lines_by_conn), "acked", len(acked), "bad", bad, "missing", missing[:5])
        sys.exit(1 if bad or missing else 0)
        """#.write(toFile: checker, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: dir.path + "/acked2", contents: nil, attributes: nil) || true
        let (status, output) = try await run(["/usr/bin/python3", checker, dir.path + "/logs", dir.path + "/acked", dir.path + "/acked2"], stdin: "/dev/null")
        #expect(status == 0, "\(output)")
        #expect(output.contains(" bad 0 "), "\(output)")
        print("kill -9 check: \(output)")
    }
}

extension Scratch {
    func text(_ relative: String) -> String {
        String(decoding: contents(relative) ?? [], as: UTF8.self)
    }
}

/// Sends SIGTERM and waits up to 15 s for the server to exit (a drain can take that long).
private func stopWithSIGTERM(_ server: Process) async throws {
    kill(server.processIdentifier, SIGTERM)
    let exited = ContinuousClock.now + .seconds(15)
    while server.isRunning, ContinuousClock.now < exited { try await Task.sleep(for: .milliseconds(50)) }
}

/// Starts `sluice serve --config config`, stdout/stderr to `<log>.out`/`<log>.err` in `dir`,
/// and returns once it printed where it listens (or after 20 s, or if it exited).
private func startSluice(_ executable: String, config: String, in dir: Scratch, log: String) async throws -> Process {
    let server = Process()
    server.executableURL = URL(fileURLWithPath: executable)
    server.arguments = ["serve", "--config", config]
    server.standardOutput = try FileHandle(forWritingTo: touch(dir.path + "/\(log).out"))
    server.standardError = try FileHandle(forWritingTo: touch(dir.path + "/\(log).err"))
    try server.run()
    let deadline = ContinuousClock.now + .seconds(20)
    while !dir.text("\(log).out").contains("listening"), ContinuousClock.now < deadline, server.isRunning {
        try await Task.sleep(for: .milliseconds(50))
    }
    return server
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

/// Runs a command without input; returns its stdout.
private func runCommand(_ command: [String]) async throws -> String {
    let input = NSTemporaryDirectory() + "sluice-empty-stdin"
    _ = FileManager.default.createFile(atPath: input, contents: nil)
    return try await run(command, stdin: input).1
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
