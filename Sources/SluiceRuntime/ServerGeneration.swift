import Foundation
import Logging
import ServiceLifecycle
import SluiceCore
import Synchronization

/// One running set of listeners and pipelines built from one config.
///
/// `sluice serve` runs one generation at a time (a SIGHUP starts a new one and
/// drains the old); tests start one in-process on port 0 and read the bound ports.
public final class ServerGeneration: Sendable {
    public let built: BuiltConfig
    /// One service group per listener (see ``start(_:logger:drainTimeout:onAnnounce:)``).
    private let groups: [ServiceGroup]
    private let task: Task<Void, any Error>
    private let announced: AnnouncementLog

    /// Where each listener listens, once started.
    public var announcements: [ListenerAnnouncement] { announced.all }

    /// The bound port of `listener`.
    public func port(of listener: String) -> Int? {
        announcements.first { $0.listener == listener }?.port
    }

    /// Builds `config`, starts its sinks and listeners, and returns once every
    /// listener is bound.
    ///
    /// - Parameters:
    ///   - config: A loaded config.
    ///   - logger: The server's logger.
    ///   - drainTimeout: Overrides the config's `shutdown.drain_timeout`.
    ///   - onAnnounce: Called as each listener binds (the CLI prints it).
    /// - Throws: ``ConfigError`` for build problems, or the first listener's bind error.
    public static func start(
        _ config: LoadedConfig,
        logger: Logger,
        drainTimeout: Duration? = nil,
        onAnnounce: @escaping @Sendable (ListenerAnnouncement) -> Void = { _ in }
    ) async throws -> ServerGeneration {
        let (stream, continuation) = AsyncStream<ListenerAnnouncement>.makeStream()
        let announced = AnnouncementLog()
        let built = try config.build(logger: logger, announce: { announcement in
            announced.append(announcement)
            onAnnounce(announcement)
            continuation.yield(announcement)
        })
        var started: [Pipeline] = []
        do {
            for pipeline in built.pipelines.values {
                try await pipeline.start()
                started.append(pipeline)
            }
        } catch {
            for pipeline in started { await pipeline.stop() }
            throw error
        }

        // One service group per listener, all signalled at once: a single group shuts its
        // services down one after another (in reverse order, each after the previous one
        // finished), so one listener kept accepting new uploads while another drained, and
        // on a reload the new generation could not bind a port the old one still held.
        let drain = drainTimeout ?? config.config.shutdown.drainTimeout.duration
        let groups = built.receivers.map { receiver in
            var groupConfig = ServiceGroupConfiguration(
                services: [.init(service: receiver, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup)],
                logger: logger
            )
            groupConfig.maximumGracefulShutdownDuration = drain
            groupConfig.maximumCancellationDuration = .seconds(10)
            return ServiceGroup(configuration: groupConfig)
        }
        let pipelines = Array(built.pipelines.values)
        let task = Task {
            defer { continuation.finish() }
            do {
                try await Self.runAll(groups)
            } catch {
                for pipeline in pipelines { await pipeline.stop() }
                throw error
            }
            for pipeline in pipelines { await pipeline.stop() }
        }
        let generation = ServerGeneration(built: built, groups: groups, task: task, announced: announced)

        // Wait until every listener announced itself, or the group ended (a bind failed).
        var count = 0
        for await _ in stream {
            count += 1
            if count == built.receivers.count { break }
        }
        if count < built.receivers.count {
            try await task.value
            throw SluiceError(.internal, "the listeners stopped before all of them were bound")
        }
        return generation
    }

    private init(built: BuiltConfig, groups: [ServiceGroup], task: Task<Void, any Error>, announced: AnnouncementLog) {
        self.built = built
        self.groups = groups
        self.task = task
        self.announced = announced
    }

    /// Runs every listener's group; when one fails, the others shut down gracefully too
    /// (as one group did with `gracefullyShutdownGroup`), and the first error is thrown.
    private static func runAll(_ groups: [ServiceGroup]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { running in
            for group in groups { running.addTask { try await group.run() } }
            do {
                // A listener that returns (graceful shutdown) just leaves the others running.
                while try await running.next() != nil {}
            } catch {
                await withDiscardingTaskGroup { stopping in
                    for group in groups { stopping.addTask { await group.triggerGracefulShutdown() } }
                }
                // Wait for every group to drain (a second error changes nothing: the first is thrown).
                while true {
                    do {
                        if try await running.next() == nil { break }
                    } catch {
                        continue
                    }
                }
                throw error
            }
        }
    }

    /// Stops accepting on every listener at once, lets in-flight uploads finish within
    /// the drain timeout (then cancels them; sinks clean up), and returns when
    /// everything stopped.
    public func shutdown() async {
        await withDiscardingTaskGroup { stopping in
            for group in groups { stopping.addTask { await group.triggerGracefulShutdown() } }
        }
        _ = try? await task.value
    }

    /// Waits until the generation stops (after ``shutdown()`` or a fatal listener error).
    public func wait() async throws {
        try await task.value
    }
}

private final class AnnouncementLog: Sendable {
    private let entries = Mutex<[ListenerAnnouncement]>([])
    func append(_ a: ListenerAnnouncement) { entries.withLock { $0.append(a) } }
    var all: [ListenerAnnouncement] { entries.withLock { $0 } }
}
