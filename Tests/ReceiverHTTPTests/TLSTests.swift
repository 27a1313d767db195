import Foundation
import ReceiverHTTP
import ServiceLifecycle
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

/// HTTPS on the http receiver and the admin listener (`tls:`), with curl as the client.
@Suite("http receiver over TLS", .serialized, .timeLimit(.minutes(1)))
struct HTTPTLSTests {
    static let openssl = FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")

    @Test("curl -T over HTTPS: 201 with a receipt, stored byte-exact; plain HTTP on the port gets 400, nothing stored",
          .enabled(if: openssl, "needs openssl"))
    func httpsUpload() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let bytes = pseudoRandomBytes(count: 3 << 20, seed: 11)
            let file = try directory.write(bytes, to: "three.bin")
            try await withServer(configure: { $0.tls = ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.serverKey) }) { server in
                let https = "https://localhost:\(server.port)"
                let (status, body, result) = try await curl(["--cacert", certs.caCertificate, "-T", file, "\(https)/upload/three.bin"])
                #expect(status == 201, "\(body) \(result.stderr)")
                #expect(try receipt(body).bytesStored == Int64(bytes.count))
                #expect(server.sink.bytes(of: "three.bin").map(sha256Hex) == sha256Hex(bytes))

                // Chunked, from stdin, over the same listener.
                let (chunked, _, _) = try await curl(
                    ["--cacert", certs.caCertificate, "-X", "PUT", "--data-binary", "@-", "-H", "Transfer-Encoding: chunked", "\(https)/upload/chunked.bin"],
                    stdin: Array(bytes.prefix(100_000))
                )
                #expect(chunked == 201)
                #expect(server.sink.bytes(of: "chunked.bin").map(sha256Hex) == sha256Hex(bytes.prefix(100_000)))

                // Plain HTTP to the HTTPS port: 400 saying so, nothing stored.
                let (plain, plainBody, _) = try await curl(["-T", file, "http://127.0.0.1:\(server.port)/upload/plain.bin"])
                #expect(plain == 400)
                #expect(plainBody.contains("tls_required"), "\(plainBody)")
                #expect(server.sink.bytes(of: "plain.bin") == nil)
                // A client that does not trust the certificate stops at the handshake.
                let (untrusted, _, _) = try await curl(["-T", file, "\(https)/upload/untrusted.bin"])
                #expect(untrusted == 0)
                #expect(server.sink.bytes(of: "untrusted.bin") == nil)
            }
        }
    }

    @Test("client_ca: curl without a certificate or with another CA's is refused, with the CA's is stored",
          .enabled(if: openssl, "needs openssl"))
    func clientCertificates() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let tls = ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.serverKey, clientCA: certs.caCertificate)
            try await withServer(configure: { $0.tls = tls }) { server in
                let url = "https://localhost:\(server.port)/upload/"
                let trust = ["--cacert", certs.caCertificate, "--data-binary", "hello"]
                let (none, _, _) = try await curl(trust + ["-X", "PUT", url + "none.txt"])
                let (stranger, _, _) = try await curl(trust + ["-X", "PUT", "--cert", certs.strangerCertificate, "--key", certs.strangerKey, url + "stranger.txt"])
                let (known, body, _) = try await curl(trust + ["-X", "PUT", "--cert", certs.clientCertificate, "--key", certs.clientKey, url + "known.txt"])
                #expect(none == 0)
                #expect(stranger == 0)
                #expect(known == 201, "\(body)")
                #expect(server.sink.bytes(of: "none.txt") == nil)
                #expect(server.sink.bytes(of: "stranger.txt") == nil)
                #expect(server.sink.bytes(of: "known.txt") == Array("hello".utf8))
            }
        }
    }

    @Test("sluice send over HTTPS: --cacert to trust the listener, --cert/--key for client_ca",
          .enabled(if: openssl && FileManager.default.isExecutableFile(atPath: sluiceBinary), "needs openssl and the sluice binary"))
    func sendOverHTTPS() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let bytes = pseudoRandomBytes(count: 2 << 20, seed: 5)
            let file = try directory.write(bytes, to: "artifact.bin")
            let tls = ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.serverKey, clientCA: certs.caCertificate)
            try await withServer(configure: { $0.tls = tls }) { server in
                for host in ["localhost", "127.0.0.1"] {
                    let url = "https://\(host):\(server.port)/upload/\(host).bin"
                    let result = try await run([sluiceBinary, "send", file, "--to", url, "--cacert", certs.caCertificate,
                                                "--cert", certs.clientCertificate, "--key", certs.clientKey])
                    #expect(result.status == 0, "\(result.stderr)")
                    #expect(try receipt(result.stdout).bytesStored == Int64(bytes.count))
                    #expect(server.sink.bytes(of: "\(host).bin").map(sha256Hex) == sha256Hex(bytes))
                }
                // Without --cacert the self-made CA is not trusted; without a client certificate the listener refuses.
                let untrusted = try await run([sluiceBinary, "send", file, "--to", "https://localhost:\(server.port)/upload/u.bin"])
                #expect(untrusted.status == 1)
                #expect(untrusted.stderr.lowercased().contains("certificate"), "\(untrusted.stderr)")
                let anonymous = try await run([sluiceBinary, "send", file, "--to", "https://localhost:\(server.port)/upload/a.bin", "--cacert", certs.caCertificate])
                #expect(anonymous.status == 1, "\(anonymous.stdout)")
                #expect(server.sink.bytes(of: "u.bin") == nil)
                #expect(server.sink.bytes(of: "a.bin") == nil)
                // TLS options on an http:// URL are a usage error.
                let misuse = try await run([sluiceBinary, "send", file, "--to", "http://localhost:\(server.port)/upload/", "--cacert", certs.caCertificate])
                #expect(misuse.status != 0 && misuse.stderr.contains("https:// URLs only"), "\(misuse.stderr)")
            }
        }
    }

    @Test("sluice load against an https:// target: every PUT lands",
          .enabled(if: openssl && FileManager.default.isExecutableFile(atPath: sluiceBinary), "needs openssl and the sluice binary"))
    func loadOverHTTPS() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            try await withServer(configure: { $0.tls = ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.serverKey) }) { server in
                let result = try await run([sluiceBinary, "load", "--mode", "http", "--keepalive", "--target", "https://localhost:\(server.port)/upload/",
                                            "--cacert", certs.caCertificate, "--concurrency", "3", "--size", "64KiB", "--count", "12",
                                            "--name-prefix", "tls-", "--json"])
                let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
                #expect(report?["uploads_ok"] as? Int == 12, "\(result.stdout) \(result.stderr)")
                #expect((0..<12).allSatisfy { server.sink.bytes(of: "tls-\($0)")?.count == 64 * 1024 })
                // Without --cacert the generator does not trust the listener: every upload fails.
                let untrusted = try await run([sluiceBinary, "load", "--mode", "http", "--target", "https://localhost:\(server.port)/upload/",
                                               "--size", "1KiB", "--count", "2", "--name-prefix", "untrusted-"])
                #expect(untrusted.status != 0)
                #expect(server.sink.bytes(of: "untrusted-0") == nil)
            }
        }
    }

    @Test("admin over HTTPS: /healthz answers through TLS only", .enabled(if: openssl, "needs openssl"))
    func adminTLS() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let config = try LoadedConfig.parse("""
                admin:
                  listen: 127.0.0.1:0
                  tls: { certificate: \(certs.serverCertificate), private_key: \(certs.serverKey) }
                listeners: {}
                pipelines: {}
                """, file: "admin.yaml", registry: .builtin)
            let admin = try #require(config.config.admin)
            _ = sharedMetrics
            let (ports, continuation) = AsyncStream<Int>.makeStream()
            let service = AdminService(listen: admin.listen, tls: admin.tlsConfiguration, registry: sharedMetrics, logger: quietLogger, onAnnounce: { continuation.yield($0.port ?? 0) })
            let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: quietLogger))
            let task = Task { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())
            let health = try await curl(["--cacert", certs.caCertificate, "https://localhost:\(port)/healthz"])
            #expect(health.status == 200)
            #expect(health.body == "ok\n")
            let plain = try await curl(["http://127.0.0.1:\(port)/healthz"])
            #expect(plain.status == 0)
            await group.triggerGracefulShutdown()
            try await task.value
        }
    }

    @Test("shutdown closes an idle HTTPS keep-alive connection without waiting out the client's silence (close_timeout)",
          .enabled(if: openssl, "needs openssl"))
    func closeTimeout() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let yaml = """
                listeners:
                  web:
                    type: http
                    listen: 127.0.0.1:0
                    routes: { /upload: { pipeline: p } }
                    tls: { certificate: \(certs.serverCertificate), private_key: \(certs.serverKey), close_timeout: 200ms }
                pipelines:
                  p: { sink: { type: disk, root: \(directory.path("root")) } }
                """
            let config = try LoadedConfig.parse(yaml, file: "tls.yaml", registry: .builtin)
            let generation = try await ServerGeneration.start(config, logger: quietLogger, drainTimeout: .seconds(20))
            let port = try #require(generation.port(of: "web"))
            // A client that uploads once on a keep-alive connection, then holds it without a word
            // (it never answers the server's close_notify).
            let script = """
                import socket, ssl, sys, time
                ctx = ssl.create_default_context(cafile="\(certs.caCertificate)")
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port))), server_hostname="localhost")
                s.sendall(b"PUT /upload/idle.txt HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 5\\r\\n\\r\\nhello")
                print(s.recv(4096).split(b"\\r\\n")[0].decode(), flush=True)
                time.sleep(30)
                """
            let client = Process()
            client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            client.arguments = ["python3", "-c", script]
            let output = Pipe()
            client.standardOutput = output
            try client.run()
            defer { client.terminate() }
            let status = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            #expect(status.hasPrefix("HTTP/1.1 201"), "\(status)")

            // swift-nio-ssl's own default waits 5 s for the client's close_notify.
            let started = ContinuousClock.now
            await generation.shutdown()
            let took = ContinuousClock.now - started
            #expect(took < .seconds(3), "shutdown took \(took)")
            #expect(FileManager.default.contents(atPath: directory.path("root") + "/idle.txt") == Data("hello".utf8))
        }
    }

    @Test("bad tls files are config issues that name the key and the file", .enabled(if: openssl, "needs openssl"))
    func badFiles() async throws {
        try await TestCertificates.withTemporary { certs, directory in
            let notPEM = try directory.write(Array("not a certificate\n".utf8), to: "junk.pem")
            let cases: [(ListenerTLS, String)] = [
                (ListenerTLS(certificate: directory.path("missing.pem"), privateKey: certs.serverKey), "cannot read certificate \(directory.path("missing.pem")): no such file"),
                (ListenerTLS(certificate: notPEM, privateKey: certs.serverKey), "certificate \(notPEM) holds no"),
                (ListenerTLS(certificate: certs.serverCertificate, privateKey: notPEM), "private_key \(notPEM) holds no usable PEM private key"),
                (ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.clientKey), "cannot be used together"),
                (ListenerTLS(certificate: certs.serverCertificate, privateKey: certs.serverKey, clientCA: directory.path("nope.pem")), "cannot read client_ca"),
            ]
            for (tls, expected) in cases {
                var configuration = HTTPReceiverPlugin.Configuration(
                    listen: ListenAddress(host: "127.0.0.1", port: 0),
                    routes: [.init(prefix: "/upload", pipeline: "p")]
                )
                configuration.tls = tls
                let environment = ReceiverEnvironment(
                    plugin: PluginEnvironment(logger: quietLogger),
                    name: "http",
                    pipelines: ["p": Pipeline(name: "p", stages: [], sink: InMemorySink(), logger: quietLogger)],
                    announce: { _ in }
                )
                do {
                    _ = try HTTPReceiverPlugin.make(configuration, environment: environment)
                    Issue.record("no error for \(expected)")
                } catch {
                    #expect("\(error)".contains(expected), "\(error)")
                    #expect("\(error)".contains("tls"), "\(error)")
                }
            }
            // The same check runs for `sluice validate`, with the file and line.
            let yaml = """
                listeners:
                  web:
                    type: http
                    listen: 127.0.0.1:0
                    routes: { /upload: { pipeline: p } }
                    tls:
                      certificate: \(directory.path("missing.pem"))
                      private_key: \(certs.serverKey)
                      min_version: "1.1"
                pipelines:
                  p: { sink: { type: disk, root: \(directory.path("root")) } }
                """
            do {
                _ = try LoadedConfig.parse(yaml, file: "tls.yaml", registry: .builtin)
                Issue.record("min_version 1.1 was accepted")
            } catch {
                #expect("\(error)".contains("tls.yaml:9"), "\(error)")
                #expect("\(error)".contains("expected 1.2 or 1.3"), "\(error)")
            }
            do {
                _ = try LoadedConfig.parse(
                    yaml.replacingOccurrences(of: "min_version: \"1.1\"", with: "close_timeout: soon"), file: "tls.yaml", registry: .builtin
                )
                Issue.record("close_timeout: soon was accepted")
            } catch {
                #expect("\(error)".contains("tls.yaml:9: listeners.web.tls.close_timeout"), "\(error)")
            }
        }
    }
}
