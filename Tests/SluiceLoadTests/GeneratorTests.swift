import NIOCore
import NIOPosix
import Testing

@testable import SluiceLoad

/// The generator against the in-process NIO discard server on 127.0.0.1:0.
@Suite("Load generator against a discard server", .timeLimit(.minutes(1)))
struct GeneratorTests {
    func withServer<T>(_ proto: DiscardServer.Mode, _ body: (DiscardServer) async throws -> T) async throws -> T {
        let server = try await DiscardServer.start(mode: proto)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    @Test("tcp: counted uploads land byte-exact, receipts read")
    func tcpUploads() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .tcp, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 4,
                uploadSize: (1 << 20) + 123, count: 10, chunk: 64 << 10, expectReceipt: true, threads: 2
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 10)
            #expect(report.uploadsFailed == 0)
            #expect(report.bytes == 10 * Int64((1 << 20) + 123))
            #expect(server.counters.bytes == 10 * ((1 << 20) + 123))
            #expect(server.counters.completed == 10)
            #expect(server.counters.connections == 10)
            #expect(report.latency.count == 10)
            #expect(report.latency.maxMs > 0 && report.latency.p50Ms <= report.latency.maxMs)
            #expect(report.megabytesPerSecond > 0)
        }
    }

    @Test("tcp: zero-byte uploads and duration-bounded runs")
    func durationRun() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .tcp, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 3,
                uploadSize: 0, duration: .milliseconds(300), threads: 1
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK > 3)
            #expect(report.uploadsFailed == 0)
            // The run stops on its own: the upper bound only catches a run that ignores its duration
            // (tests share two cores, so it is far from the 0.3 s asked for).
            #expect(report.wallSeconds >= 0.3 && report.wallSeconds < 60)
        }
    }

    @Test("lines: whole lines, records counted")
    func lines() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .lines, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 2,
                uploadSize: 10_000, count: 6, lineSize: 300
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 6)
            #expect(report.records == 6 * 33)
            #expect(server.counters.bytes == 6 * 33 * 300)
        }
    }

    @Test("http: keep-alive PUTs, one connection per slot")
    func httpKeepAlive() async throws {
        try await withServer(.http) { server in
            let config = LoadConfiguration(
                mode: .http, target: LoadTarget(parsing: "http://127.0.0.1:\(server.port)/upload/")!, concurrency: 4,
                uploadSize: 4096, count: 200, keepAlive: true, threads: 2
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 200)
            #expect(report.statuses == ["201": 200])
            #expect(server.counters.connections == 4)
            #expect(server.counters.bytes == 200 * 4096)
        }
    }

    @Test("http: one PUT per connection")
    func httpClose() async throws {
        try await withServer(.http) { server in
            let config = LoadConfiguration(
                mode: .http, target: LoadTarget(parsing: "http://127.0.0.1:\(server.port)/u/")!, concurrency: 3,
                uploadSize: 300_000, count: 9
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 9)
            #expect(server.counters.connections == 9)
            #expect(server.counters.bytes == 9 * 300_000)
        }
    }

    @Test("a per-connection rate paces the upload")
    func rate() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .tcp, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 1,
                uploadSize: 40_000, count: 1, rate: 50_000
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 1)
            // 40 kB at 50 kB/s with a 5 kB head start: about 0.7 s. Unpaced it takes milliseconds; the
            // upper bound is loose because the tests share two cores.
            #expect(report.latency.maxMs > 600 && report.latency.maxMs < 20_000)
        }
    }

    @Test("an upload cut by --timeout is reset, never half-closed (a server must not commit it)")
    func timeoutResets() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .tcp, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 2,
                uploadSize: 1 << 20, count: 2, rate: 20_000, timeout: .milliseconds(300)
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.uploadsOK == 0)
            #expect(report.uploadsFailed == 2)
            #expect(report.errors.keys.allSatisfy { $0.hasPrefix("timed out") })
            try await Task.sleep(for: .milliseconds(200))
            #expect(server.counters.completed == 0, "the server saw a clean end of stream")
        }
    }

    @Test("hold: every connection held, then reset")
    func hold() async throws {
        try await withServer(.tcp) { server in
            let config = LoadConfiguration(
                mode: .hold, target: LoadTarget(host: "127.0.0.1", port: server.port), concurrency: 50,
                duration: .milliseconds(1500), rate: 3, threads: 2
            )
            let report = try await LoadGenerator.run(config)
            #expect(report.hold == HoldSummary(requested: 50, opened: 50, refused: 0, dropped: 0, openAtEnd: 50, connectSeconds: report.hold?.connectSeconds ?? 0))
            #expect(server.counters.connections == 50)
            #expect(server.counters.bytes > 0)
        }
    }

    @Test("a closed port counts failures, not a crash")
    func refused() async throws {
        // Bind then close to find a port nobody listens on.
        let server = try await DiscardServer.start(mode: .tcp)
        let port = server.port
        await server.stop()
        let config = LoadConfiguration(mode: .tcp, target: LoadTarget(host: "127.0.0.1", port: port), concurrency: 2, uploadSize: 10, count: 4)
        let report = try await LoadGenerator.run(config)
        #expect(report.uploadsOK == 0)
        #expect(report.uploadsFailed == 4)
        #expect(report.errors.keys.allSatisfy { $0.hasPrefix("connect:") })
    }
}
