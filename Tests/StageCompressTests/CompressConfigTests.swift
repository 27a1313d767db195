import Foundation
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import StageCompress
import Testing

@Suite("compress configuration")
struct CompressConfigTests {
    @Test("defaults: gzip, level 6, flush auto")
    func defaults() throws {
        let pipelines = try testRegistry.buildPipelines("""
            pipelines:
              p:
                stages:
                  - type: compress
                sink:
                  type: memory
            """)
        let stage = try #require(pipelines["p"]?.stages.first?.stage as? CompressStage)
        #expect(stage.format == .gzip)
        #expect(stage.level == 6)
        #expect(stage.flush == .auto)
        #expect(stage.effectiveFlush(for: .records) == .member)
        #expect(stage.effectiveFlush(for: .object) == .none)
    }

    @Test("a level out of range is reported with file, line and key path")
    func badLevel() {
        let message = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: compress
                    level: 12
                sink:
                  type: memory
            """)
        #expect(message.contains("test.yaml:5: pipelines.p.stages[0].level: expected a level from 0 to 9, got 12"), "\(message)")
    }

    @Test("unknown keys and bad values are rejected")
    func unknownKey() {
        let typo = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: compress
                    levl: 1
                sink: { type: memory }
            """)
        #expect(typo.contains("test.yaml:5: pipelines.p.stages[0].levl: unknown key \"levl\" (did you mean \"level\"?)"), "\(typo)")
        let format = testRegistry.configError("""
            pipelines:
              p:
                stages: [{ type: compress, format: bzip2 }]
                sink: { type: memory }
            """)
        #expect(format.contains("test.yaml:3: pipelines.p.stages[0].format: expected gzip, zlib or deflate, got \"bzip2\""), "\(format)")
        let member = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: compress
                    format: zlib
                    flush: member
                sink: { type: memory }
            """)
        #expect(member.contains("test.yaml:6: pipelines.p.stages[0].flush: member flushing writes gzip members; it needs format gzip, not zlib"), "\(member)")
    }

    @Test("the keys table documents every accepted key")
    func keysDocumented() {
        #expect(CompressPlugin.keys.map(\.name) == ["format", "level", "flush"])
        #expect(PluginRegistry.builtin.descriptor(.stage, "compress") != nil)
    }
}

/// Stand-ins for the `tcp` listener and `disk` sink (other helpers' plugins), with the
/// keys they accept, used only when the built-in registry does not have them yet.
enum StubTCPPlugin: ReceiverPlugin {
    static let type = "tcp"
    static let summary = "stub"
    static let keys: [ConfigKey] = []
    struct Configuration: Decodable, Sendable {
        enum CodingKeys: String, CodingKey { case listen, pipeline }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            _ = try c.decode(ListenAddress.self, forKey: .listen)
            _ = try c.decode(String.self, forKey: .pipeline)
        }
    }
    static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver {
        throw environment.plugin.issue(nil, "stub listener")
    }
}

enum StubDiskPlugin: SinkPlugin {
    static let type = "disk"
    static let summary = "stub"
    static let keys: [ConfigKey] = []
    struct Configuration: Decodable, Sendable {
        enum CodingKeys: String, CodingKey {
            case root, name, fsync
            case onConflict = "on_conflict"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            _ = try c.decode(String.self, forKey: .root)
            _ = try c.decodeIfPresent(String.self, forKey: .name)
            _ = try c.decodeIfPresent(Bool.self, forKey: .fsync)
            _ = try c.decodeIfPresent(String.self, forKey: .onConflict)
        }
    }
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink { InMemorySink() }
}

@Suite("examples")
struct ExampleConfigTests {
    /// The repository's `examples/` folder, found from this file's path.
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples")

    @Test("the stage examples load and their pipelines build", arguments: ["gzip-archive.yaml", "artifacts-sha256.yaml", "ratelimited-logs.yaml"])
    func loads(file: String) throws {
        var registry = PluginRegistry.builtin
        if registry.descriptor(.receiver, "tcp") == nil { registry.register(StubTCPPlugin.self) }
        if registry.descriptor(.sink, "disk") == nil { registry.register(StubDiskPlugin.self) }
        let loaded = try LoadedConfig.load(path: Self.examples.appendingPathComponent(file).path, registry: registry, environment: [:])
        #expect(!loaded.config.pipelines.isEmpty)
        for (name, spec) in loaded.config.pipelines {
            let pipeline = try spec.build(name: name, environment: PluginEnvironment(path: [.key("pipelines"), .key(name)]))
            #expect(!pipeline.stages.isEmpty)
        }
    }
}
