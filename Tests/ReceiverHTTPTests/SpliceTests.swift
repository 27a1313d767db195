import Foundation
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

/// `PUT` bodies with a Content-Length through a pipeline without stages into the disk
/// sink are spliced: socket → pipe → file. These tests run that path with real clients
/// and check the bytes, the connection's later requests, and what a failure leaves.
@Suite("http receiver splicing into the disk sink", .timeLimit(.minutes(1)))
struct HTTPSpliceTests {
    /// A server from YAML: listener `http` with route `/upload` into a disk sink under a
    /// temporary root (`memory_buffer` 64KiB, the default).
    struct DiskServer {
        let generation: ServerGeneration
        let dir: TempDir
        var root: String { dir.path + "/root" }
        var base: String { "http://127.0.0.1:\(generation.port(of: "http") ?? 0)" }
        var port: Int { generation.port(of: "http") ?? 0 }

        /// With `tmpfsSize`, the root is a tmpfs of that size (needs root; `nil` when it cannot be mounted).
        static func start(listener: String = "", tmpfsSize: String? = nil) async throws -> DiskServer? {
            let dir = try TempDir()
            if let tmpfsSize {
                try FileManager.default.createDirectory(atPath: dir.path + "/root", withIntermediateDirectories: true)
                let mounted = try await run(["mount", "-t", "tmpfs", "-o", "size=\(tmpfsSize)", "tmpfs", dir.path + "/root"])
                guard mounted.status == 0 else {
                    dir.cleanup()
                    return nil
                }
            }
            let yaml = """
            listeners:
              http:
                type: http
                listen: 127.0.0.1:0
                routes:
                  /upload: { pipeline: p }
            \(listener.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
            pipelines:
              p:
                sink: { type: disk, root: \(dir.path)/root }
            """
            let config = try LoadedConfig.parse(yaml, file: "test.yaml", registry: .builtin)
            let generation = try await ServerGeneration.start(config, logger: quietLogger, drainTimeout: .seconds(5))
            return DiskServer(generation: generation, dir: dir, mounted: tmpfsSize != nil)
        }

        static func start(listener: String = "") async throws -> DiskServer {
            try #require(try await start(listener: listener, tmpfsSize: nil))
        }
        let mounted: Bool

        func stored(_ name: String) -> [UInt8]? {
            FileManager.default.contents(atPath: root + "/" + name).map(Array.init)
        }
        var files: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.sorted() }
        /// The disk sink's temporary files, named or anonymous (open, unlinked).
        var temporaries: [String] { temporaryFiles(in: root + "/.sluice-tmp") }
        func stop() async {
            await generation.shutdown()
            if mounted { _ = try? await run(["umount", root]) }
            dir.cleanup()
        }
    }

    @Test("curl -T of several files on one keep-alive connection: byte-exact, spliced, one connection")
    func keepAlive() async throws {
        let server = try await DiskServer.start()
        let sizes = [1, 65_536, 65_537, 1_000_003, 2 << 20, 200_000]
        var arguments = ["-s", "-w", "%{http_code} %{num_connects}\\n"]
        var payloads: [[UInt8]] = []
        for (i, size) in sizes.enumerated() {
            let payload = pseudoRandomBytes(count: size, seed: UInt64(40 + i))
            payloads.append(payload)
            arguments += ["-T", try server.dir.file("in\(i)", payload), "\(server.base)/upload/out\(i)"]
        }
        let splicedBefore = SplicePipe.bytesDrained
        let result = try await run(["curl"] + arguments)
        let answers = result.stdout.split(separator: "\n").filter { $0.hasPrefix("201 ") || $0.hasPrefix("4") || $0.hasPrefix("5") }
        #expect(answers.count == sizes.count, "\(result.stdout)")
        // curl counts a new connection as 1, a reused one as 0.
        #expect(answers.map { $0.split(separator: " ")[1] } == ["1"] + Array(repeating: "0", count: sizes.count - 1), "\(result.stdout)")
        for (i, payload) in payloads.enumerated() {
            let stored = try #require(server.stored("out\(i)"))
            #expect(stored.count == payload.count)
            #expect(sha256Hex(stored) == sha256Hex(payload), "upload of \(sizes[i]) bytes")
        }
        // Bodies past memory_buffer are spliced from their first bytes, but for those NIO read
        // with the head (up to 1 MiB); other tests may splice meanwhile.
        #expect(SplicePipe.bytesDrained - splicedBefore >= 1 << 20)
        #expect(server.temporaries.isEmpty)
        await server.stop()
    }

    @Test("pipelined requests: the request after a spliced body is parsed and stored too")
    func pipelined() async throws {
        let server = try await DiskServer.start()
        let script = """
        import hashlib, socket, sys
        first = bytes((i * 7 + 3) % 251 for i in range(1_500_000))
        second = b"second body"
        s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=10)
        s.sendall(b"PUT /upload/first HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(first) + first
                  + b"PUT /upload/second HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(second) + second)
        data = b""
        while data.count(b"HTTP/1.1 201") < 2:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        print(data.count(b"HTTP/1.1 201"), hashlib.sha256(first).hexdigest())
        """
        let result = try await run(["python3", "-c", script])
        let fields = result.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(fields.first == "2", "\(result.stdout) \(result.stderr)")
        #expect(sha256Hex(try #require(server.stored("first"))) == fields.last)
        #expect(server.stored("second") == Array("second body".utf8))
        await server.stop()
    }

    @Test("200 small PUTs pipelined in one write: 200 answers in order, every body stored")
    func manyPipelined() async throws {
        // The receiver reads the next request as soon as one ends (one request ahead): this
        // must neither stall a pipelining client nor reorder its answers.
        let server = try await DiskServer.start()
        let script = """
        import socket
        s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=10)
        requests = b"".join(b"PUT /upload/p%03d HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 4\\r\\n\\r\\n%04d" % (i, i) for i in range(200))
        s.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 201") < 200:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        names = [part.split(b'"name":"')[1].split(b'"')[0].decode() for part in data.split(b"HTTP/1.1 201")[1:]]
        print(" ".join(names))
        """
        let result = try await run(["python3", "-c", script])
        let names = result.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(names == (0..<200).map { String(format: "p%03d", $0) }, "\(result.stdout.prefix(300)) \(result.stderr)")
        #expect(server.files.count == 200)
        #expect(server.stored("p123") == Array("0123".utf8))
        await server.stop()
    }

    @Test("a client that half-closes after its body (NIO then reads up to the FIN at once) is stored and answered")
    func halfCloseAfterBody() async throws {
        let server = try await DiskServer.start()
        let script = """
        import hashlib, socket
        body = bytes((i * 7 + 3) % 251 for i in range(3_000_000))
        s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=10)
        s.sendall(b"PUT /upload/half HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        print(data.split(b"\\r\\n")[0].decode(), hashlib.sha256(body).hexdigest())
        """
        let result = try await run(["python3", "-c", script])
        #expect(result.stdout.hasPrefix("HTTP/1.1 201"), "\(result.stdout) \(result.stderr)")
        let digest = result.stdout.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(sha256Hex(try #require(server.stored("half"))) == digest)
        #expect(server.temporaries.isEmpty)
        await server.stop()
    }

    @Test("a client that drops mid-body while spliced leaves no file; the server keeps serving")
    func dropWhileSpliced() async throws {
        let server = try await DiskServer.start()
        let result = try await droppedPUT(port: server.port, contentLength: 4 << 20, sending: 1_000_000, pause: 0.3)
        #expect(result.status == 0, "\(result.stderr)")
        try await Task.sleep(for: .milliseconds(300))
        let (status, _, _) = try await curl(["-T", try server.dir.file("after", pseudoRandomBytes(count: 500_000)), "\(server.base)/upload/after"])
        #expect(status == 201)
        #expect(server.files == ["after"])
        #expect(server.temporaries.isEmpty)
        await server.stop()
    }

    @Test("a spliced body that stalls gets 408 after idle_timeout; nothing is stored")
    func stallWhileSpliced() async throws {
        let server = try await DiskServer.start(listener: "idle_timeout: 500ms")
        let result = try await stalledPUT(port: server.port, contentLength: 4 << 20, sending: 300_000)
        #expect(result.stdout.hasPrefix("HTTP/1.1 408"), "\(result.stdout) \(result.stderr)")
        #expect(server.files.isEmpty)
        #expect(server.temporaries.isEmpty)
        await server.stop()
    }

    @Test("a client digest is checked (the body is read, not spliced): a mismatch is 400 and stores nothing")
    func digestNotSpliced() async throws {
        let server = try await DiskServer.start()
        let payload = pseudoRandomBytes(count: 2 << 20, seed: 9)
        let file = try server.dir.file("body", payload)
        var (status, body, _) = try await curl(["-T", file, "-H", "X-Checksum-Sha256: \(sha256Hex(payload))", "\(server.base)/upload/good"])
        #expect(status == 201, "\(body)")
        (status, body, _) = try await curl(["-T", file, "-H", "X-Checksum-Sha256: \(String(repeating: "0", count: 64))", "\(server.base)/upload/bad"])
        #expect(status == 400, "\(body)")
        #expect(errorCode(body) == "digest_mismatch")
        #expect(server.files == ["good"])
        #expect(sha256Hex(try #require(server.stored("good"))) == sha256Hex(payload))
        #expect(server.temporaries.isEmpty)
        await server.stop()
    }

    @Test("a PUT larger than the free space gets 507 at once, chunked or not, and leaves nothing; the next that fits lands",
          .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
    func diskFull() async throws {
        guard let server = try await DiskServer.start(tmpfsSize: "1m") else { return }  // no permission to mount here
        let large = try server.dir.file("large", pseudoRandomBytes(count: 4 << 20, seed: 12))
        // With a Content-Length the free space is checked when the file is made, before the body is read.
        var (status, body, _) = try await curl(["-T", large, "\(server.base)/upload/declared"])
        #expect(status == 507, "\(body)")
        #expect(errorCode(body) == "insufficient_storage")
        #expect(body.contains("the upload is 4MiB but the disk has"), "\(body)")
        // Chunked: no length to reserve; the writes find the disk full.
        (status, body, _) = try await curl(["-T", large, "-H", "Transfer-Encoding: chunked", "\(server.base)/upload/chunked"])
        #expect(status == 507, "\(body)")
        #expect(errorCode(body) == "insufficient_storage")
        #expect(server.files.isEmpty)
        #expect(server.temporaries.isEmpty)

        let payload = pseudoRandomBytes(count: 600_000, seed: 13)
        (status, body, _) = try await curl(["-T", try server.dir.file("fits", payload), "\(server.base)/upload/fits"])
        #expect(status == 201, "\(body)")
        #expect(server.stored("fits") == payload)
        await server.stop()
    }

    @Test("splice: false stores the same bytes by reading them")
    func spliceOff() async throws {
        let server = try await DiskServer.start(listener: "splice: false")
        let payload = pseudoRandomBytes(count: 1 << 20, seed: 11)
        let (status, _, _) = try await curl(["-T", try server.dir.file("body", payload), "\(server.base)/upload/x"])
        #expect(status == 201)
        #expect(sha256Hex(try #require(server.stored("x"))) == sha256Hex(payload))
        await server.stop()
    }
}
