import ReceiverSpool
import SinkRotate
import SinkSpool
import SinkTee
import SluiceCore

extension PluginRegistry {
    /// Every built-in plugin: the one registration list.
    ///
    /// Adding a plugin is adding its folder under `plugins/`, its target in
    /// Package.swift, and one line here.
    public static let builtin: PluginRegistry = {
        var registry = PluginRegistry()
        // Receivers
        registry.register(ReceiverSpool.self)
        // Stages
        // Sinks
        registry.register(SinkRotate.self)
        registry.register(SinkSpool.self)
        registry.register(SinkTee.self)
        return registry
    }()
}
