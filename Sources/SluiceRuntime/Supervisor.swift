import Foundation
import Logging
import ServiceLifecycle
import SluiceCore
import NIOCore
import UnixSignals

/// Runs the server: one ``ServerGeneration`` at a time, a new one on SIGHUP.
///
/// SIGHUP re-reads the config file. A config that does not load or build is
/// refused with a log line and the running generation keeps serving. A good one
/// is started beside the old one when its ports are free; on the same ports the old
/// generation first stops accepting (a gap of milliseconds), the new one binds, and
/// the old one's in-flight uploads drain in the background.
public struct Supervisor: Service {
    public let configPath: String?
    public let registry: PluginRegistry
    public let logger: Logger
    public let onAnnounce: @Sendable (ListenerAnnouncement) -> Void
    /// Marked draining when a graceful shutdown starts (the admin listener's `/healthz` reads it).
    public let state: ServingState
    private let initial: LoadedConfig

    public init(
        initial: LoadedConfig,
        configPath: String?,
        registry: PluginRegistry,
        logger: Logger,
        state: ServingState = ServingState(),
        onAnnounce: @escaping @Sendable (ListenerAnnouncement) -> Void
    ) {
        self.initial = initial
        self.state = state
        self.configPath = configPath
        self.registry = registry
        self.logger = logger
        self.onAnnounce = onAnnounce
    }

    public func run() async throws {
        var current = try await ServerGeneration.start(initial, logger: logger, onAnnounce: onAnnounce)
        var currentConfig = initial
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for await _ in hangups.cancelOnGracefulShutdown() {
                    guard let path = configPath else {
                        logger.notice("SIGHUP: running the embedded default config; nothing to reload")
                        continue
                    }
                    let config: LoadedConfig
                    do {
                        config = try LoadedConfig.load(path: path, registry: registry)
                        // Build once without binding: a config that cannot build is refused
                        // before anything running is touched.
                        _ = try config.build(logger: Logger(label: "sluice-reload", factory: { _ in SwiftLogNoOpLogHandler() }))
                    } catch {
                        logger.error("SIGHUP: keeping the running config; the new one was refused:\n\(error)")
                        continue
                    }
                    let old = current
                    do {
                        // New listeners on new ports (or SO_REUSEPORT ones) bind beside the old.
                        current = try await ServerGeneration.start(config, logger: logger, onAnnounce: onAnnounce)
                        group.addTask { await old.shutdown() }
                    } catch where Self.isAddressInUse(error) {
                        // Same ports: the old generation stops accepting (its in-flight uploads
                        // go on draining), then the new one binds.
                        group.addTask { await old.shutdown() }
                        do {
                            current = try await Self.startRetryingBind(config, logger: logger, onAnnounce: onAnnounce)
                        } catch {
                            logger.error("SIGHUP: the new config could not start (\(error)); restarting the previous one")
                            current = try await Self.startRetryingBind(currentConfig, logger: logger, onAnnounce: onAnnounce)
                            continue
                        }
                    } catch {
                        logger.error("SIGHUP: keeping the running config; the new one could not start:\n\(error)")
                        continue
                    }
                    currentConfig = config
                    logger.notice("SIGHUP: reloaded \(path)")
                }
            }
        } onGracefulShutdown: { [state] in
            // The loop above ends, then the current generation drains (below).
            state.markDraining()
        }
        await current.shutdown()
    }

    /// Starts `config`, retrying for a few seconds while its ports are still held by a
    /// generation that is closing its listeners.
    static func startRetryingBind(
        _ config: LoadedConfig, logger: Logger, onAnnounce: @escaping @Sendable (ListenerAnnouncement) -> Void
    ) async throws -> ServerGeneration {
        var attempt = 0
        while true {
            do {
                return try await ServerGeneration.start(config, logger: logger, onAnnounce: onAnnounce)
            } catch where isAddressInUse(error) && attempt < 50 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    static func isAddressInUse(_ error: any Error) -> Bool {
        if let error = error as? IOError, error.errnoCode == EADDRINUSE { return true }
        return "\(error)".contains("Address already in use") || "\(error)".contains("EADDRINUSE")
    }
}
