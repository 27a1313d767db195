import ReceiverTCP
import SinkDisk
import SluiceCore

extension PluginRegistry {
    /// Every built-in plugin: the one registration list.
    ///
    /// Adding a plugin is adding its folder under `plugins/`, its target in
    /// Package.swift, and one line here.
    public static let builtin: PluginRegistry = {
        var registry = PluginRegistry()
        // Receivers
        registry.register(TCPReceiverPlugin.self)
        // Stages
        // Sinks
        registry.register(DiskSinkPlugin.self)
        return registry
    }()
}
