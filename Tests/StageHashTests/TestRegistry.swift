import SluiceCore
import SluiceRuntime
import SluiceTestKit

/// A `memory` sink for config tests (the built-in sinks live in other plugins).
enum MemorySinkPlugin: SinkPlugin {
    static let type = "memory"
    static let summary = "Keeps uploads in memory (tests)."
    static let keys: [ConfigKey] = []
    struct Configuration: Decodable, Sendable {
        enum CodingKeys: CodingKey {}
        init(from decoder: any Decoder) throws { _ = try decoder.container(keyedBy: CodingKeys.self) }
    }
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink { InMemorySink() }
}

/// The built-in registry plus the test sink.
let testRegistry: PluginRegistry = {
    var registry = PluginRegistry.builtin
    registry.register(MemorySinkPlugin.self)
    return registry
}()

/// Parses `yaml` as `test.yaml` and builds its pipelines.
func buildPipelines(_ yaml: String, registry: PluginRegistry = testRegistry) throws -> [String: Pipeline] {
    let loaded = try LoadedConfig.parse(yaml, file: "test.yaml", registry: registry, environment: [:])
    var pipelines: [String: Pipeline] = [:]
    for (name, spec) in loaded.config.pipelines {
        pipelines[name] = try spec.build(name: name, environment: PluginEnvironment(file: "test.yaml", path: [.key("pipelines"), .key(name)]))
    }
    return pipelines
}

/// The config error `yaml` produces, as text (empty if it loads).
func configError(_ yaml: String) -> String {
    do {
        _ = try buildPipelines(yaml)
        return ""
    } catch {
        return "\(error)"
    }
}
