import Foundation
import SluiceCore
import SluiceTestKit
import Testing

// Test-only plugins, so the config machinery is tested without the real ones.
struct EchoSinkPlugin: SinkPlugin {
    struct Configuration: Decodable, Sendable {
        var root: String
        var maxSize: ByteSize
        var timeout: ConfigDuration
        var level: Int
        enum CodingKeys: String, CodingKey { case root, level, timeout; case maxSize = "max_size" }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            root = try c.decode(String.self, forKey: .root)
            maxSize = try c.decode(ByteSize.self, forKey: .maxSize, default: .mebibytes(100))
            timeout = try c.decode(ConfigDuration.self, forKey: .timeout, default: .seconds(30))
            level = try c.decode(Int.self, forKey: .level, default: 6)
            guard (0...9).contains(level) else { throw decoder.configIssue("level", "must be 0...9, got \(level)") }
        }
    }
    static let type = "echo"
    static let summary = "test sink"
    static let keys = [ConfigKey("root", "path", "where")]
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        if configuration.root == "/forbidden" { throw environment.issue("root", "is forbidden") }
        return InMemorySink()
    }
}

struct NoopStagePlugin: StagePlugin {
    struct Configuration: Decodable, Sendable {
        var factor: Int
        enum CodingKeys: String, CodingKey { case factor }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            factor = try c.decode(Int.self, forKey: .factor, default: 1)
        }
    }
    struct Noop: Stage {
        func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody { body }
    }
    static let type = "noop"
    static let summary = "test stage"
    static let keys: [ConfigKey] = []
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage { Noop() }
}

struct IdleReceiverPlugin: ReceiverPlugin {
    struct Configuration: Decodable, Sendable {
        var pipeline: String
        var listen: ListenAddress
        enum CodingKeys: String, CodingKey { case pipeline, listen }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            pipeline = try c.decode(String.self, forKey: .pipeline)
            listen = try c.decode(ListenAddress.self, forKey: .listen)
        }
    }
    struct Idle: Receiver {
        let name: String
        func run() async throws {}
    }
    static let type = "idle"
    static let summary = "test receiver"
    static let keys: [ConfigKey] = []
    static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver {
        _ = try environment.pipeline(named: configuration.pipeline, key: "pipeline")
        return Idle(name: environment.name)
    }
}

let testRegistry: PluginRegistry = {
    var r = PluginRegistry()
    r.register(EchoSinkPlugin.self)
    r.register(NoopStagePlugin.self)
    r.register(IdleReceiverPlugin.self)
    return r
}()

let validYAML = """
listeners:
  in:
    type: idle
    listen: 127.0.0.1:0
    pipeline: logs
pipelines:
  logs:
    stages:
      - type: noop
        factor: 2
    sink:
      type: echo
      root: /tmp/x
      max_size: 1GiB
      timeout: 1m30s
shutdown:
  drain_timeout: 5s
"""

@Suite struct ConfigTests {
    @Test func validConfigLoadsAndBuilds() throws {
        let loaded = try LoadedConfig.parse(validYAML, file: "sluice.yaml", registry: testRegistry)
        #expect(loaded.config.listeners.map(\.name) == ["in"])
        #expect(loaded.config.pipelines.map(\.name) == ["logs"])
        #expect(loaded.config.shutdown.drainTimeout == .seconds(5))
        let built = try loaded.build(logger: .init(label: "test"))
        #expect(built.pipelines["logs"]?.stages.map(\.name) == ["noop"])
        #expect(built.receivers.count == 1)
    }

    @Test func jsonIsAccepted() throws {
        let json = #"{"pipelines": {"p": {"sink": {"type": "echo", "root": "/tmp"}}}}"#
        let loaded = try LoadedConfig.parse(json, file: "sluice.json", registry: testRegistry)
        #expect(loaded.config.pipelines.count == 1)
    }

    /// Each case: a replacement applied to the valid config, and the exact message expected.
    @Test(arguments: [
        ("max_size: 1GiB", "max_size: lots",
         #"sluice.yaml:14: pipelines.logs.sink.max_size: expected a size like "100MiB", got "lots""#),
        ("timeout: 1m30s", "timeout: soon",
         #"sluice.yaml:15: pipelines.logs.sink.timeout: expected a duration like "500ms", "30s" or "1h", got "soon""#),
        ("max_size: 1GiB", "max_sise: 1GiB",
         #"sluice.yaml:14: pipelines.logs.sink.max_sise: unknown key "max_sise" (did you mean "max_size"?)"#),
        ("type: echo", "type: echoo",
         #"sluice.yaml:12: pipelines.logs.sink.type: unknown sink type "echoo" (known: "echo")"#),
        ("type: noop", "type: nope",
         #"sluice.yaml:9: pipelines.logs.stages[0].type: unknown stage type "nope" (known: "noop")"#),
        ("factor: 2", "factor: two",
         #"sluice.yaml:10: pipelines.logs.stages[0].factor: expected an integer, got "two""#),
        ("      root: /tmp/x\n", "",
         #"sluice.yaml:12: pipelines.logs.sink: missing required key "root""#),
        ("listen: 127.0.0.1:0", "listen: nowhere",
         #"sluice.yaml:4: listeners.in.listen: expected an address like "127.0.0.1:8080", got "nowhere""#),
        ("drain_timeout: 5s", "drain_timeuot: 5s",
         #"sluice.yaml:17: shutdown.drain_timeuot: unknown key "drain_timeuot" (did you mean "drain_timeout"?)"#),
        ("shutdown:", "shutdwn:",
         #"sluice.yaml:16: shutdwn: unknown key "shutdwn" (did you mean "shutdown"?)"#),
        ("root: /tmp/x", "root: ${SLUICE_TEST_UNSET_VARIABLE}",
         #"sluice.yaml:13: pipelines.logs.sink.root: environment variable SLUICE_TEST_UNSET_VARIABLE is not set"#),
        ("    type: idle", "    type: idle\n    type: idle",
         #"sluice.yaml:3: duplicate key "type""#),
    ])
    func invalidConfigsNameFileLineAndKeyPath(original: String, replacement: String, expected: String) throws {
        #expect(validYAML.contains(original))
        let text = validYAML.replacingOccurrences(of: original, with: replacement)
        let error = #expect(throws: ConfigError.self) {
            try LoadedConfig.parse(text, file: "sluice.yaml", registry: testRegistry, environment: [:])
        }
        #expect(error?.issues.map(\.description).contains(expected) == true, "got: \(error?.description ?? "nothing")")
    }

    @Test func everyProblemIsReportedAtOnce() throws {
        let text = validYAML
            .replacingOccurrences(of: "max_size: 1GiB", with: "max_size: lots")
            .replacingOccurrences(of: "factor: 2", with: "factor: 2\n        facter: 3")
            .replacingOccurrences(of: "drain_timeout: 5s", with: "drain_timeout: never")
        let error = #expect(throws: ConfigError.self) {
            try LoadedConfig.parse(text, file: "f.yaml", registry: testRegistry)
        }
        let messages = error?.issues.map(\.description) ?? []
        #expect(messages.count == 3, "\(messages)")
        #expect(messages.contains { $0.contains("pipelines.logs.stages[0].facter: unknown key") })
        #expect(messages.contains { $0.contains("pipelines.logs.sink.max_size") })
        #expect(messages.contains { $0.contains("shutdown.drain_timeout") })
    }

    @Test func semanticChecksAndBuildErrorsAreLocated() throws {
        let bad = validYAML.replacingOccurrences(of: "timeout: 1m30s", with: "timeout: 1m30s\n      level: 12")
        let e1 = #expect(throws: ConfigError.self) { try LoadedConfig.parse(bad, file: "s.yaml", registry: testRegistry) }
        #expect(e1?.description == "s.yaml:16: pipelines.logs.sink.level: must be 0...9, got 12")

        let forbidden = validYAML.replacingOccurrences(of: "root: /tmp/x", with: "root: /forbidden")
        let loaded = try LoadedConfig.parse(forbidden, file: "s.yaml", registry: testRegistry)
        let e2 = #expect(throws: ConfigError.self) { try loaded.build(logger: .init(label: "t")) }
        #expect(e2?.description == "s.yaml:13: pipelines.logs.sink.root: is forbidden")

        let unknownPipeline = validYAML.replacingOccurrences(of: "pipeline: logs", with: "pipeline: lgos")
        let loaded2 = try LoadedConfig.parse(unknownPipeline, file: "s.yaml", registry: testRegistry)
        let e3 = #expect(throws: ConfigError.self) { try loaded2.build(logger: .init(label: "t")) }
        #expect(e3?.description == #"s.yaml:5: listeners.in.pipeline: unknown pipeline "lgos" (known: logs)"#)
    }

    @Test func yamlSyntaxErrorsHaveALine() throws {
        let error = #expect(throws: ConfigError.self) {
            try LoadedConfig.parse("pipelines:\n  p: [unclosed\n", file: "bad.yaml", registry: testRegistry)
        }
        #expect(error?.description.hasPrefix("bad.yaml:") == true)
        #expect(error?.description.contains("invalid YAML") == true)
    }

    @Test func environmentInterpolation() throws {
        let text = validYAML.replacingOccurrences(of: "root: /tmp/x", with: "root: \"${SLUICE_ROOT}/data-$${literal}\"")
        let loaded = try LoadedConfig.parse(text, file: "s.yaml", registry: testRegistry, environment: ["SLUICE_ROOT": "/srv"])
        _ = try loaded.build(logger: .init(label: "t"))
    }
}

@Suite struct ValueParsingTests {
    @Test func sizes() {
        #expect(ByteSize(parsing: "64KiB")?.bytes == 65536)
        #expect(ByteSize(parsing: "100MiB")?.bytes == 100 << 20)
        #expect(ByteSize(parsing: "1.5GiB")?.bytes == 3 << 29)
        #expect(ByteSize(parsing: "500MB")?.bytes == 500_000_000)
        #expect(ByteSize(parsing: "4096")?.bytes == 4096)
        #expect(ByteSize(parsing: "lots") == nil)
        #expect(ByteSize(parsing: "-1") == nil)
        #expect(ByteSize.mebibytes(100).description == "100MiB")
    }

    @Test func durations() {
        #expect(ConfigDuration(parsing: "500ms")?.duration == .milliseconds(500))
        #expect(ConfigDuration(parsing: "30s")?.duration == .seconds(30))
        #expect(ConfigDuration(parsing: "1h")?.duration == .seconds(3600))
        #expect(ConfigDuration(parsing: "1m30s")?.duration == .seconds(90))
        #expect(ConfigDuration(parsing: "30") == nil)
        #expect(ConfigDuration(parsing: "soon") == nil)
        for text in ["250us", "20ms", "1s", "90s", "1m", "2h"] {
            #expect(ConfigDuration(parsing: text)?.description == text)
        }
    }

    @Test func addresses() {
        #expect(ListenAddress(parsing: "127.0.0.1:8080") == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(ListenAddress(parsing: "[::1]:80") == ListenAddress(host: "::1", port: 80))
        #expect(ListenAddress(parsing: ":8888") == ListenAddress(host: "0.0.0.0", port: 8888))
        #expect(ListenAddress(parsing: "host") == nil)
        #expect(ListenAddress(parsing: "h:99999") == nil)
    }
}
