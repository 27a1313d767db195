import Logging
import ServiceLifecycle

/// Turns network or disk input into uploads and hands each to a ``Pipeline``.
///
/// A receiver is a `Service`: `run()` binds or opens its input, serves until
/// graceful shutdown is triggered, then stops accepting and lets in-flight uploads
/// finish (they are cancelled, and clean up, if the drain time runs out).
///
/// Implementation requirements:
/// - Isolate failures per connection or file: one bad client never ends `run()`.
/// - Throw from `run()` only when the receiver cannot serve at all (the port is taken).
/// - Announce the bound address through ``ReceiverEnvironment/announce``.
public protocol Receiver: Service {
    /// The listener's name (its key under `listeners:`).
    var name: String { get }
}

/// Where a receiver is listening, once bound.
public struct ListenerAnnouncement: Sendable, CustomStringConvertible {
    public var listener: String
    public var type: String
    /// `host:port`, a directory, …
    public var address: String
    /// The bound port, for network listeners (useful when the config asked for port 0).
    public var port: Int?
    /// What it feeds, for the startup line (`pipeline default`, `routes /upload → default`).
    public var detail: String

    public init(listener: String, type: String, address: String, port: Int?, detail: String) {
        self.listener = listener
        self.type = type
        self.address = address
        self.port = port
        self.detail = detail
    }

    public var description: String { "\(listener) (\(type)) on \(address) → \(detail)" }
}

/// What a receiver plugin gets when it is built: the plugin environment, the built
/// pipelines it may route to, and a way to announce where it listens.
public struct ReceiverEnvironment: Sendable {
    public var plugin: PluginEnvironment
    /// The listener's name.
    public var name: String
    /// Every pipeline in the config, by name.
    public var pipelines: [String: Pipeline]
    /// Called once the receiver listens.
    public var announce: @Sendable (ListenerAnnouncement) -> Void
    /// Pipelines that failed to build (their problems are already reported).
    var failedPipelines: Set<String> = []

    public init(
        plugin: PluginEnvironment,
        name: String,
        pipelines: [String: Pipeline],
        announce: @escaping @Sendable (ListenerAnnouncement) -> Void = { _ in }
    ) {
        self.plugin = plugin
        self.name = name
        self.pipelines = pipelines
        self.announce = announce
    }

    public var logger: Logger { plugin.logger }

    /// The pipeline called `name`, or a config issue at `key` that lists the known ones.
    public func pipeline(named name: String, key: String) throws -> Pipeline {
        if failedPipelines.contains(name) { throw PipelineUnavailable() }
        guard let pipeline = pipelines[name] else {
            let known = pipelines.keys.sorted().joined(separator: ", ")
            throw plugin.issue(key, "unknown pipeline \"\(name)\" (known: \(known.isEmpty ? "none" : known))")
        }
        return pipeline
    }
}

/// Thrown when a listener names a pipeline that failed to build: that problem is
/// already reported, so the listener adds none of its own.
struct PipelineUnavailable: Error {}
