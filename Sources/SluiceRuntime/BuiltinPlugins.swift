import ReceiverHTTP
import SluiceCore

extension PluginRegistry {
    /// Every built-in plugin: the one registration list.
    ///
    /// Adding a plugin is adding its folder under `plugins/`, its target in
    /// Package.swift, and one line here.
    public static let builtin: PluginRegistry = {
        var registry = PluginRegistry()
        // Receivers
        registry.register(HTTPReceiverPlugin.self)
        // Stages
        // Sinks
        return registry
    }()
}
