import SinkS3
import SluiceCore

extension PluginRegistry {
    /// Every built-in plugin: the one registration list.
    ///
    /// Adding a plugin is adding its folder under `plugins/`, its target in
    /// Package.swift, and one line here.
    public static let builtin: PluginRegistry = {
        var registry = PluginRegistry()
        // Receivers
        // Stages
        // Sinks
        registry.register(S3SinkPlugin.self)
        return registry
    }()
}
