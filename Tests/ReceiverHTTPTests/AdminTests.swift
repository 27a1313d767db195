import Foundation
import Logging
import ServiceLifecycle
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

@Suite(.serialized, .timeLimit(.minutes(1)))
struct AdminTests {
    /// The value of the first sample line starting with `prefix` in Prometheus text, or 0.
    func sample(_ text: String, _ prefix: String) -> Double {
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
        }
        return 0
    }

    @Test("/healthz answers ok; /metrics counters move as uploads happen")
    func healthAndMetrics() async throws {
        _ = sharedMetrics
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let admin = AdminService(listen: ListenAddress(host: "127.0.0.1", port: 0), registry: sharedMetrics, logger: quietLogger, onAnnounce: { continuation.yield($0.port ?? 0) })
        let group = ServiceGroup(configuration: .init(services: [.init(service: admin)], logger: quietLogger))
        let task = Task { try await group.run() }
        defer { task.cancel() }
        var iterator = ports.makeAsyncIterator()
        let adminPort = try #require(await iterator.next())

        let health = try await curl(["http://127.0.0.1:\(adminPort)/healthz"])
        #expect(health.status == 200)
        #expect(health.body == "ok\n")

        try await withServer(pipelineName: "metrics_test") { server in
            let before = try await curl(["http://127.0.0.1:\(adminPort)/metrics"]).body
            let stored = #"sluice_uploads_total{pipeline="metrics_test",outcome="stored"}"#
            let bytes = #"sluice_bytes_received_total{pipeline="metrics_test"}"#
            for i in 0..<3 {
                let (status, _, _) = try await curl(["-X", "PUT", "--data-binary", "12345", "\(server.base)/upload/m\(i)"])
                #expect(status == 201)
            }
            let (status, _, _) = try await curl(["-X", "PUT", "--data-binary", "x", "-H", "X-Checksum-Sha256: \(String(repeating: "1", count: 64))", "\(server.base)/upload/bad"])
            #expect(status == 400)
            let after = try await curl(["http://127.0.0.1:\(adminPort)/metrics"]).body
            #expect(sample(after, stored) - sample(before, stored) == 3, "\(after)")
            #expect(sample(after, bytes) - sample(before, bytes) == 16)
            #expect(sample(after, #"sluice_uploads_total{pipeline="metrics_test",outcome="digest_mismatch"}"#) >= 1)
            #expect(after.contains("sluice_upload_duration_seconds_bucket"))
            #expect(after.contains(#"sluice_active_connections{listener="http"}"#))
        }
        await group.triggerGracefulShutdown()
        try await task.value
    }

    @Test("the embedded default config declares HTTP on 8080 with /upload, TCP and admin")
    func defaultConfig() {
        #expect(DefaultConfig.yaml.contains("listen: 127.0.0.1:8080"))
        #expect(DefaultConfig.yaml.contains("/upload:"))
        #expect(DefaultConfig.yaml.contains("listen: 127.0.0.1:9090"))
        #expect(DefaultConfig.yaml.contains("type: tcp"))
    }

    @Test("config: routes, auth and limits decode; mistakes are located")
    func configDecoding() throws {
        let yaml = """
        listeners:
          web:
            type: http
            listen: 127.0.0.1:0
            max_upload_size: 1GiB
            idle_timeout: 5s
            routes:
              /artifacts/:
                pipeline: p
              /logs:
                pipeline: p
                allow_content_encoding: true
        pipelines:
          p:
            sink: { type: memory }
        """
        var registry = PluginRegistry.builtin
        registry.register(InMemorySinkPlugin.self)
        let loaded = try LoadedConfig.parse(yaml, file: "t.yaml", registry: registry)
        let built = try loaded.build(logger: quietLogger)
        #expect(built.receivers.count == 1)

        let bad = yaml.replacingOccurrences(of: "pipeline: p\n      /logs", with: "pipelin: p\n      /logs")
        #expect(throws: ConfigError.self) { try LoadedConfig.parse(bad, file: "t.yaml", registry: registry) }
        let unknownPipeline = yaml.replacingOccurrences(of: "      /logs:\n        pipeline: p", with: "      /logs:\n        pipeline: nope")
        let loaded2 = try LoadedConfig.parse(unknownPipeline, file: "t.yaml", registry: registry)
        #expect(throws: ConfigError.self) { try loaded2.build(logger: quietLogger) }
    }
}
