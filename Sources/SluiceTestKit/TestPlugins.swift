import SluiceCore

/// The `memory` sink plugin: a ``InMemorySink`` selectable from a config, for config tests.
///
/// It takes no keys. It is not built in; register it in a test's registry:
///
/// ```swift
/// let registry = PluginRegistry.builtin.registering(InMemorySinkPlugin.self)
/// let pipelines = try registry.buildPipelines("""
///     pipelines:
///       p:
///         sink: { type: memory }
///     """)
/// ```
public enum InMemorySinkPlugin: SinkPlugin {
    public static let type = "memory"
    public static let summary = "Keeps uploads in memory (tests)."
    public static let keys: [ConfigKey] = []

    /// No keys; unknown keys are rejected.
    public struct Configuration: Decodable, Sendable {
        enum CodingKeys: CodingKey {}
        public init(from decoder: any Decoder) throws { _ = try decoder.container(keyedBy: CodingKeys.self) }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink { InMemorySink() }
}

extension PluginRegistry {
    /// A copy of this registry with `plugin` registered too.
    public func registering<P: SinkPlugin>(_ plugin: P.Type) -> PluginRegistry {
        var copy = self
        copy.register(plugin)
        return copy
    }

    /// Parses `yaml` as the file `test.yaml` (no environment variables) and builds its pipelines.
    ///
    /// - Parameter yaml: A whole config file.
    /// - Returns: The built pipelines by name.
    /// - Throws: The first configuration error.
    public func buildPipelines(_ yaml: String) throws -> [String: Pipeline] {
        let loaded = try LoadedConfig.parse(yaml, file: "test.yaml", registry: self, environment: [:])
        var pipelines: [String: Pipeline] = [:]
        for (name, spec) in loaded.config.pipelines {
            pipelines[name] = try spec.build(name: name, environment: PluginEnvironment(file: "test.yaml", path: [.key("pipelines"), .key(name)]))
        }
        return pipelines
    }

    /// The error ``buildPipelines(_:)`` throws for `yaml`, as text; empty if it builds.
    public func configError(_ yaml: String) -> String {
        do {
            _ = try buildPipelines(yaml)
            return ""
        } catch {
            return "\(error)"
        }
    }
}
