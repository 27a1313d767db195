import ReceiverHTTP
import ReceiverTCP
import SinkDisk
import SluiceCore
import StageCompress
import StageDecompress
import StageHash
import StageRateLimit

extension PluginRegistry {
    /// Every built-in plugin: the one registration list.
    ///
    /// Adding a plugin is adding its folder under `plugins/`, its target in
    /// Package.swift, and one line here.
    public static let builtin: PluginRegistry = {
        var registry = PluginRegistry()
        // Receivers
        registry.register(TCPReceiverPlugin.self)
        registry.register(HTTPReceiverPlugin.self)
        // Stages
        registry.register(CompressPlugin.self)
        registry.register(DecompressPlugin.self)
        registry.register(HashPlugin.self)
        registry.register(RateLimitPlugin.self)
        // Sinks
        registry.register(DiskSinkPlugin.self)
        return registry
    }()
}
