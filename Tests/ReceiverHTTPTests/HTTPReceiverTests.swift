import Foundation
import ReceiverHTTP
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

@Suite(.serialized, .timeLimit(.minutes(1)))
struct HTTPReceiverTests {
    @Test("curl -T of 2 MiB with curl's default Expect: stored byte-exact, no 1 s stall")
    func curlPutWithExpect() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let bytes = pseudoRandomBytes(count: 2 << 20)
        let file = try dir.file("two.bin", bytes)
        try await withServer { server in
            // curl would wait 10 s for the 100 before sending anyway: finishing well before
            // that proves the answer came at once, even on a loaded machine.
            let (status, body, result) = try await curl(["-v", "--expect100-timeout", "10", "-T", file, "\(server.base)/upload/two.bin"])
            #expect(status == 201, "\(body)")
            #expect(result.stderr.contains("< HTTP/1.1 100 Continue"))
            #expect(result.seconds < 5, "curl took \(result.seconds) s: Expect: 100-continue not answered? \(result.stderr)")
            let r = try receipt(body)
            #expect(r.name == "two.bin")
            #expect(r.bytesReceived == Int64(bytes.count))
            let stored = try #require(server.sink.bytes(of: "two.bin"))
            #expect(sha256Hex(stored) == sha256Hex(bytes))
        }
    }

    @Test("chunked request body from stdin")
    func chunkedPut() async throws {
        let bytes = pseudoRandomBytes(count: 300_000, seed: 7)
        try await withServer { server in
            let (status, body, _) = try await curl(
                ["-X", "PUT", "--data-binary", "@-", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream", "\(server.base)/upload/dir/chunked.bin"],
                stdin: bytes
            )
            #expect(status == 201, "\(body)")
            #expect(server.sink.bytes(of: "dir/chunked.bin").map(sha256Hex) == sha256Hex(bytes))
        }
    }

    @Test("HTTP/1.0 client")
    func http10() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let bytes = pseudoRandomBytes(count: 50_000, seed: 3)
        let file = try dir.file("old.bin", bytes)
        try await withServer { server in
            let (status, body, _) = try await curl(["-0", "-T", file, "\(server.base)/upload/old.bin"])
            #expect(status == 201, "\(body)")
            #expect(server.sink.bytes(of: "old.bin").map(sha256Hex) == sha256Hex(bytes))
        }
    }

    @Test("Python http.client and urllib; keep-alive: several PUTs on one connection")
    func pythonClients() async throws {
        try await withServer { server in
            let script = """
            import http.client, urllib.request, json, sys
            c = http.client.HTTPConnection("127.0.0.1", \(server.port))
            socks = set()
            for i in range(3):
                c.request("PUT", f"/upload/py{i}.txt", body=(f"hello {i}\\n" * 1000).encode())
                r = c.getresponse()
                body = r.read()
                assert r.status == 201, (r.status, body)
                socks.add(id(c.sock))
                assert json.loads(body)["name"] == f"py{i}.txt"
            assert len(socks) == 1, "connection was not kept alive"
            req = urllib.request.Request(f"http://127.0.0.1:\(server.port)/upload/url.txt", data=b"from urllib", method="PUT")
            with urllib.request.urlopen(req) as r:
                assert r.status == 201
                print(json.loads(r.read())["bytes_received"])
            """
            let result = try await run(["python3", "-c", script])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "11")
            #expect(server.sink.bytes(of: "py2.txt").map(sha256Hex) == sha256Hex(Array(String(repeating: "hello 2\n", count: 1000).utf8)))
            #expect(server.sink.bytes(of: "url.txt") == Array("from urllib".utf8))
        }
    }

    @Test("client digests: a match is recorded, a mismatch is 400 and commits nothing")
    func digests() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let bytes = pseudoRandomBytes(count: 100_000, seed: 11)
        let file = try dir.file("d.bin", bytes)
        let sha = sha256Hex(bytes)
        let b64 = Data(Hex.decode(sha)!).base64EncodedString()
        try await withServer { server in
            var (status, body, _) = try await curl(["-T", file, "-H", "Content-Digest: sha-256=:\(b64):, sha-512=:AAAA:", "\(server.base)/upload/good.bin"])
            #expect(status == 201, "\(body)")
            #expect(try receipt(body).digests["sha256"] == sha)

            (status, body, _) = try await curl(["-T", file, "-H", "X-Checksum-Sha256: \(String(repeating: "0", count: 64))", "\(server.base)/upload/bad.bin"])
            #expect(status == 400)
            #expect(errorCode(body) == "digest_mismatch")

            (status, body, _) = try await curl(["-T", file, "-H", "Content-MD5: not-base64!", "\(server.base)/upload/bad2.bin"])
            #expect(status == 400)
            #expect(errorCode(body) == "bad_request")
            #expect(server.sink.committed.map(\.name) == ["good.bin"])
        }
    }

    @Test("max_upload_size: 413 from Content-Length before the body, and mid-stream for chunked")
    func oversize() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 5)
        let file = try dir.file("big.bin", bytes)
        try await withServer(configure: { $0.maxUploadSize = ByteSize(1 << 20) }) { server in
            // curl waits up to 10 s for an answer to its Expect before sending the body anyway; an early
            // 413 ends it well before that, even on a loaded machine.
            var (status, body, result) = try await curl(["--expect100-timeout", "10", "-T", file, "\(server.base)/upload/big.bin"])
            #expect(status == 413, "\(body)")
            #expect(errorCode(body) == "payload_too_large")
            #expect(result.seconds < 5, "curl took \(result.seconds) s: 413 not sent before the body?")

            (status, body, _) = try await curl(
                ["-X", "PUT", "--data-binary", "@-", "-H", "Transfer-Encoding: chunked", "\(server.base)/upload/big2.bin"],
                stdin: bytes
            )
            #expect(status == 413, "\(body)")
            #expect(server.sink.committed.isEmpty)
        }
    }

    @Test("bearer auth: 401 before the body is read; the right token stores")
    func auth() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let tokens = try dir.file("tokens", Array("# ci tokens\nsecret-one\nsecret-two\n".utf8))
        try await withServer(configure: { $0.auth = .init(tokensFile: tokens) }) { server in
            // A raw client announces 50 MiB and sends none of it: the answer must come anyway.
            let script = """
            import socket
            s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=5)
            s.sendall(b"PUT /upload/x HTTP/1.1\\r\\nHost: t\\r\\nAuthorization: Bearer wrong\\r\\nContent-Length: 52428800\\r\\n\\r\\n")
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            print(data.split(b"\\r\\n")[0].decode())
            """
            let result = try await run(["python3", "-c", script])
            #expect(result.stdout.hasPrefix("HTTP/1.1 401"), "\(result.stdout) \(result.stderr)")

            var (status, _, _) = try await curl(["-T", tokens, "\(server.base)/upload/t"])
            #expect(status == 401)
            (status, _, _) = try await curl(["-T", tokens, "-H", "Authorization: Bearer secret-two", "\(server.base)/upload/t"])
            #expect(status == 201)
            #expect(server.sink.committed.map(\.name) == ["t"])
        }
    }

    @Test("hostile names are refused with 400", arguments: [
        "/upload/../etc/passwd", "/upload/%2e%2e/x", "/upload/a/%2E%2E/%2E%2E/b", "/upload//abs", "/upload/a%00b", "/upload/a%0Ab",
        // Percent-encoding that does not decode: a stray `%`, bytes that are not UTF-8.
        "/upload/bad%zzname", "/upload/100%", "/upload/%C3%28", "/upload/x%FF",
    ])
    func traversal(path: String) async throws {
        try await withServer { server in
            let (status, body, _) = try await curl(["--path-as-is", "-X", "PUT", "--data-binary", "x", "\(server.base)\(path)"])
            #expect(status == 400, "\(path): \(body)")
            #expect(errorCode(body) == "invalid_name")
            #expect(server.sink.committed.isEmpty)
        }
    }

    @Test("percent-encoded names are stored decoded; Content-Location is the location percent-encoded")
    func percentEncodedNames() async throws {
        try await withServer { server in
            let (status, body, result) = try await curl(["-D", "-", "-X", "PUT", "--data-binary", "x", "\(server.base)/upload/%C3%A9t%C3%A9%20x%3Fy.txt"])
            #expect(status == 201, "\(body)")
            #expect(server.sink.committed.map(\.name) == ["été x?y.txt"])
            // The memory sink's location is `memory:<name>`; `:` is encoded too (a scheme otherwise).
            #expect(result.stdout.contains("Content-Location: memory%3A%C3%A9t%C3%A9%20x%3Fy.txt\r\n"), "\(result.stdout)")
        }
    }

    @Test("gzip bodies are decoded; corrupt gzip is 400; unknown encodings 415; bombs 413")
    func contentEncoding() async throws {
        let text = String(repeating: "a log line that compresses well\n", count: 5000)
        let dir = try TempDir()
        defer { dir.cleanup() }
        let plain = try dir.file("plain.txt", Array(text.utf8))
        _ = try await run(["gzip", "-k", plain])
        let gzFile = plain + ".gz"
        var corrupt = Array(try Data(contentsOf: URL(fileURLWithPath: gzFile)))
        corrupt[corrupt.count / 2] ^= 0xff
        corrupt[corrupt.count / 2 + 1] ^= 0xff
        let corruptFile = try dir.file("corrupt.gz", corrupt)
        try await withServer(configure: { $0.maxDecodedSize = ByteSize(100_000) }) { server in
            var (status, body, _) = try await curl(["-T", gzFile, "-H", "Content-Encoding: gzip", "\(server.base)/upload/small.txt"])
            #expect(status == 413, "decoded size 160000 > 100000: \(body)")

            (status, body, _) = try await curl(["-T", corruptFile, "-H", "Content-Encoding: gzip", "\(server.base)/upload/c.txt"])
            #expect(status == 400 || status == 413, "\(body)")
            (status, body, _) = try await curl(["-T", plain, "-H", "Content-Encoding: br", "\(server.base)/upload/br.txt"])
            #expect(status == 415, "\(body)")
            #expect(server.sink.committed.isEmpty)
        }
        try await withServer { server in
            var (status, body, _) = try await curl(["-T", gzFile, "-H", "Content-Encoding: gzip", "\(server.base)/upload/log.txt"])
            #expect(status == 201, "\(body)")
            #expect(server.sink.bytes(of: "log.txt").map(sha256Hex) == sha256Hex(Array(text.utf8)))
            (status, body, _) = try await curl(["-T", corruptFile, "-H", "Content-Encoding: gzip", "\(server.base)/upload/c.txt"])
            #expect(status == 400, "\(body)")
            #expect(errorCode(body) == "corrupt_input")
            #expect(server.sink.committed.map(\.name) == ["log.txt"])
        }
    }

    @Test("a client dropping mid-body commits nothing; the server keeps serving")
    func clientDrop() async throws {
        try await withServer { server in
            let result = try await droppedPUT(port: server.port, contentLength: 1 << 20, sending: 100_000, pause: 0.2)
            #expect(result.status == 0, "\(result.stderr)")
            try await Task.sleep(for: .milliseconds(300))
            let (status, _, _) = try await curl(["-X", "PUT", "--data-binary", "after", "\(server.base)/upload/after.txt"])
            #expect(status == 201)
            #expect(server.sink.committed.map(\.name) == ["after.txt"])
        }
    }

    @Test("POST appends a batch of records with a generated name; 404 and 405")
    func postAndRouting() async throws {
        try await withServer { server in
            let lines = (0..<2000).map { "record \($0)\n" }.joined()
            var (status, body, _) = try await curl(["--data-binary", "@-", "\(server.base)/logs"], stdin: Array(lines.utf8))
            #expect(status == 201, "\(body)")
            let name = try receipt(body).name
            #expect(name.hasPrefix("logs-"), "\(name)")
            let stored = try #require(server.sink.bytes(of: name))
            #expect(sha256Hex(stored) == sha256Hex(Array(lines.utf8)))

            (status, body, _) = try await curl(["-X", "PUT", "--data-binary", "x", "\(server.base)/nowhere/x"])
            #expect(status == 404)
            #expect(errorCode(body) == "not_found")
            (status, _, _) = try await curl(["-X", "DELETE", "\(server.base)/upload/x"])
            #expect(status == 405)
            (status, _, _) = try await curl(["-X", "PUT", "--data-binary", "x", "\(server.base)/upload"])
            #expect(status == 405)
        }
    }

    @Test("max_connections: connections over the cap are closed; the server keeps serving")
    func connectionCap() async throws {
        try await withServer(configure: { $0.maxConnections = 1 }) { server in
            let script = """
            import socket, time, http.client
            held = socket.create_connection(("127.0.0.1", \(server.port)), timeout=5)
            time.sleep(0.2)
            s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=5)
            s.settimeout(3)
            try:
                refused = s.recv(10) == b""
            except OSError:
                refused = True
            held.close()
            time.sleep(0.3)
            c = http.client.HTTPConnection("127.0.0.1", \(server.port), timeout=5)
            c.request("PUT", "/upload/cap.txt", body=b"ok")
            print("refused" if refused else "accepted", c.getresponse().status)
            """
            let result = try await run(["python3", "-c", script])
            #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "refused 201", "\(result.stdout) \(result.stderr)")
        }
    }

    @Test("a body that stalls gets 408 after idle_timeout; nothing is committed")
    func bodyTimeout() async throws {
        try await withServer(configure: { $0.idleTimeout = .milliseconds(300) }) { server in
            let result = try await stalledPUT(port: server.port, contentLength: 1000, sending: 10)
            #expect(result.stdout.hasPrefix("HTTP/1.1 408"), "\(result.stdout) \(result.stderr)")
            #expect(server.sink.committed.isEmpty)
        }
    }

    @Test("slowloris: a request head that trickles is cut off by header_timeout")
    func headerTimeout() async throws {
        try await withServer(configure: { $0.headerTimeout = .milliseconds(300) }) { server in
            let script = """
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(server.port)), timeout=5)
            s.sendall(b"PUT /upload/slow HTTP/1.1\\r\\nHost: t\\r\\n")
            start = time.time()
            closed = False
            try:
                for _ in range(30):
                    s.sendall(b"X-Slow: 1\\r\\n")
                    time.sleep(0.1)
            except OSError:
                closed = True
            if not closed:
                s.settimeout(2)
                try:
                    closed = s.recv(100) == b""
                except OSError:
                    closed = True
            print("closed" if closed else "open", round(time.time() - start, 1))
            """
            let result = try await run(["python3", "-c", script])
            #expect(result.stdout.hasPrefix("closed"), "\(result.stdout) \(result.stderr)")
        }
    }
}

/// The `sluice` executable next to the test bundle (built by `swift build --build-tests`).
let sluiceBinary: String = {
    let dir = (ProcessInfo.processInfo.arguments[0] as NSString).deletingLastPathComponent
    return dir + "/sluice"
}()

@Suite(.serialized, .timeLimit(.minutes(1)), .enabled(if: FileManager.default.isExecutableFile(atPath: sluiceBinary)))
struct SendCommandTests {
    @Test("sluice send streams files, prints receipts, reports the server's error")
    func send() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = try dir.file("a.bin", pseudoRandomBytes(count: 3 << 20, seed: 21))
        let b = try dir.file("b b.txt", Array("second file\n".utf8))
        let tokens = try dir.file("tokens", Array("tok\n".utf8))
        try await withServer(configure: { $0.auth = .init(tokensFile: tokens) }) { server in
            var result = try await run([sluiceBinary, "send", a, b, "--to", "\(server.base)/upload/", "--token", "tok"])
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(lines.count == 2)
            #expect(try receipt(lines[0]).bytesReceived == 3 << 20)
            #expect(try receipt(lines[1]).name == "b b.txt")
            #expect(server.sink.bytes(of: "a.bin").map(sha256Hex) == sha256Hex(pseudoRandomBytes(count: 3 << 20, seed: 21)))

            result = try await run([sluiceBinary, "send", a, "--to", "\(server.base)/upload/exact.bin", "--token", "tok"])
            #expect(result.status == 0)
            #expect(try receipt(result.stdout).name == "exact.bin")

            result = try await run([sluiceBinary, "send", a, "--to", "\(server.base)/upload/", "--token", "nope"])
            #expect(result.status == 1)
            #expect(result.stderr.contains("401") && result.stderr.contains("not valid"), "\(result.stderr)")
        }
    }
}
