import ReceiverHTTP
import ReceiverSpool
import ReceiverTCP
import SinkDisk
import SinkRotate
import SinkS3
import SinkSpool
import SinkTee
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
        registry.register(ReceiverSpool.self)
        // Stages
        registry.register(CompressPlugin.self)
        registry.register(DecompressPlugin.self)
        registry.register(HashPlugin.self)
        registry.register(RateLimitPlugin.self)
        // Sinks
        registry.register(DiskSinkPlugin.self)
        registry.register(S3SinkPlugin.self)
        registry.register(SinkRotate.self)
        registry.register(SinkSpool.self)
        registry.register(SinkTee.self)
        return registry
    }()
}
