import Foundation
import Logging
import ServiceLifecycle
import SluiceCore
import UnixSignals

/// Runs the server: one ``ServerGeneration`` at a time, a new one on SIGHUP.
///
/// SIGHUP re-reads the config file. A config that does not load or build is
/// refused with a log line and the running generation keeps serving. A good one
/// is started first (listeners bind with `SO_REUSEPORT`, so there is no gap), then
/// the old generation drains.
public struct Supervisor: Service {
    public let configPath: String?
    public let registry: PluginRegistry
    public let logger: Logger
    public let onAnnounce: @Sendable (ListenerAnnouncement) -> Void
    private let initial: LoadedConfig

    public init(
        initial: LoadedConfig,
        configPath: String?,
        registry: PluginRegistry,
        logger: Logger,
        onAnnounce: @escaping @Sendable (ListenerAnnouncement) -> Void
    ) {
        self.initial = initial
        self.configPath = configPath
        self.registry = registry
        self.logger = logger
        self.onAnnounce = onAnnounce
    }

    public func run() async throws {
        var current = try await ServerGeneration.start(initial, logger: logger, onAnnounce: onAnnounce)
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for await _ in hangups.cancelOnGracefulShutdown() {
                    guard let path = configPath else {
                        logger.notice("SIGHUP: running the embedded default config; nothing to reload")
                        continue
                    }
                    do {
                        let config = try LoadedConfig.load(path: path, registry: registry)
                        let next = try await ServerGeneration.start(config, logger: logger, onAnnounce: onAnnounce)
                        let old = current
                        current = next
                        group.addTask { await old.shutdown() }
                        logger.notice("SIGHUP: reloaded \(path)")
                    } catch {
                        logger.error("SIGHUP: keeping the running config; the new one was refused:\n\(error)")
                    }
                }
            }
        } onGracefulShutdown: {
            // Handled below: the loop above ends, then the current generation drains.
        }
        await current.shutdown()
    }
}
