import Foundation
import SluiceCore
import SluiceTestKit
import Testing

/// `tls:` on a tcp listener, with real TLS clients: socat (OpenSSL) and Python's `ssl`.
@Suite("tcp receiver over TLS", .serialized)
struct TCPTLSTests {
    static let tools = ["socat", "openssl", "python3"].allSatisfy { tool in
        ["/usr/bin/", "/bin/", "/usr/local/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + tool) }
    }

    /// Starts a tcp listener with TLS (and `extra` TLS keys) and certificates made for it.
    private func start(extra: String = "") async throws -> (TestServer, TestCertificates, TemporaryDirectory) {
        let directory = try TemporaryDirectory(prefix: "sluice-tls")
        let certs = try await TestCertificates.make(in: directory)
        let server = try await TestServer.start(listener: """
            tls:
              certificate: \(certs.serverCertificate)
              private_key: \(certs.serverKey)
            \(extra.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
            """)
        return (server, certs, directory)
    }

    @Test("socat over TLS: the upload ends with close_notify, lands byte-exact, and the receipt comes back encrypted",
          .enabled(if: tools, "needs socat, openssl and python3"))
    func socatUpload() async throws {
        let (server, certs, directory) = try await start()
        defer { directory.remove() }
        let bytes = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255) }
        let file = try directory.write(bytes, to: "payload.bin")
        let result = try await runTool([
            "sh", "-c", "socat -t 10 - OPENSSL:localhost:\(server.port),cafile=\(certs.caCertificate) < \(file)",
        ])
        #expect(result.status == 0, "socat: \(result.stderr)")
        let stored = try receipt(String(decoding: result.stdout, as: UTF8.self))
        #expect(stored.bytesReceived == Int64(bytes.count))
        #expect(server.scratch.contents("root/" + stored.location).map(sha256) == sha256(bytes))
        #expect(stored.digests["sha256"] == sha256(bytes))
        await server.stop()
    }

    @Test("a TLS stream cut without close_notify (truncated) is discarded; the listener keeps serving",
          .enabled(if: tools, "needs socat, openssl and python3"))
    func truncatedStreamIsDiscarded() async throws {
        let (server, certs, directory) = try await start()
        defer { directory.remove() }
        // Python's ssl: send 200 kB over TLS, then end the TCP stream with a FIN and no close_notify.
        let script = directory.path("ragged.py")
        try """
        import socket, ssl, sys, time
        ctx = ssl.create_default_context(cafile=sys.argv[2])
        raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"x" * 200000)
        socket.socket.shutdown(tls, socket.SHUT_WR)
        time.sleep(1)
        print("sent")
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let ragged = try await runTool(["python3", script, "\(server.port)", certs.caCertificate])
        #expect(ragged.status == 0 && ragged.text == "sent", "python: \(ragged.stderr)")
        let outcome = try await server.logs.wait(for: "the truncated upload's outcome") { $0.message.hasPrefix("upload rejected") }
        #expect(outcome.metadata["code"] == "client_aborted")
        #expect(server.scratch.files(in: "root").isEmpty)
        #expect(server.scratch.temporaries(root: "root").isEmpty)

        // A plain-text client on the TLS port fails its handshake and stores nothing.
        _ = try? await Client.upload(Array("not TLS\n".utf8), port: server.port)
        let failure = try await server.logs.wait(for: "the failed handshake") { $0.message.contains("TLS handshake") }
        #expect(failure.message.contains("does not speak TLS"), "\(failure.message)")
        #expect(server.scratch.files(in: "root").isEmpty)

        // And the listener still serves a proper client.
        let file = try directory.write(Array("after\n".utf8), to: "after.txt")
        let ok = try await runTool(["sh", "-c", "socat -t 10 - OPENSSL:localhost:\(server.port),cafile=\(certs.caCertificate) < \(file)"])
        #expect(try receipt(String(decoding: ok.stdout, as: UTF8.self)).bytesStored == 6, "socat: \(ok.stderr)")
        await server.stop()
    }

    @Test("sluice load --tls: uploads end with close_notify and land; one cut by --timeout is reset (no close_notify) and discarded",
          .enabled(if: tools && BinaryTests.executable != nil, "needs socat, openssl, python3 and the sluice binary"))
    func loadGeneratorOverTLS() async throws {
        let executable = try #require(BinaryTests.executable)
        let (server, certs, directory) = try await start()
        defer { directory.remove() }
        let ok = try await runTool([executable, "load", "--tls", "--cacert", certs.caCertificate, "--target", "127.0.0.1:\(server.port)",
                                    "--concurrency", "4", "--size", "300KiB", "--count", "8", "--expect-receipt", "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(ok.stdout)) as? [String: Any]
        #expect(report?["uploads_ok"] as? Int == 8, "\(ok.text) \(ok.stderr)")
        let stored = server.scratch.files(in: "root")
        #expect(stored.count == 8)
        #expect(stored.allSatisfy { server.scratch.contents("root/" + $0)?.count == 300 * 1024 })

        // Cut after 1 s at 100 KiB/s: the generator resets the socket under the TLS layer.
        let cut = try await runTool([executable, "load", "--tls", "--cacert", certs.caCertificate, "--target", "127.0.0.1:\(server.port)",
                                     "--size", "10MiB", "--rate", "100KiB", "--timeout", "1s", "--count", "1"])
        #expect(cut.text.contains("timed out"), "\(cut.text)")
        let outcome = try await server.logs.wait(for: "the cut upload's outcome") { $0.message.hasPrefix("upload rejected") }
        #expect(outcome.metadata["code"] == "client_aborted")
        #expect(server.scratch.files(in: "root").count == 8)
        await server.stop()
    }

    @Test("client_ca: only clients with a certificate the CA issued may upload",
          .enabled(if: tools, "needs socat, openssl and python3"))
    func clientCertificates() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let server = try await TestServer.start(listener: """
                tls:
                  certificate: \(certs.serverCertificate)
                  private_key: \(certs.serverKey)
                  client_ca: \(certs.caCertificate)
                  min_version: "1.3"
                """)
            let file = try directory.write(Array(repeating: UInt8(ascii: "a"), count: 50_000), to: "a.txt")
            func send(_ options: String) async throws -> ToolResult {
                try await runTool(["sh", "-c", "socat -t 10 - OPENSSL:localhost:\(server.port),cafile=\(certs.caCertificate)\(options) < \(file)"])
            }
            let anonymous = try await send(",verify=1")
            #expect(anonymous.text.isEmpty, "a client without a certificate got: \(anonymous.text)")
            let stranger = try await send(",cert=\(certs.strangerCertificate),key=\(certs.strangerKey)")
            #expect(stranger.text.isEmpty, "a client with another CA's certificate got: \(stranger.text)")
            #expect(server.scratch.files(in: "root").isEmpty)

            let known = try await send(",cert=\(certs.clientCertificate),key=\(certs.clientKey)")
            let stored = try receipt(String(decoding: known.stdout, as: UTF8.self))
            #expect(stored.bytesStored == 50_000, "socat: \(known.stderr)")
            #expect(server.scratch.files(in: "root") == [stored.location])
            #expect(server.logs.all.contains { $0.message.contains("sent no certificate") })
            #expect(server.logs.all.contains { $0.message.contains("not issued by client_ca") })
            await server.stop()
        }
    }
}
