import Foundation
import Logging
import NIOSSL

/// The whole config file: listeners, pipelines, and server settings.
///
/// ```yaml
/// listeners:
///   tcp:
///     type: tcp
///     listen: 127.0.0.1:8888
///     pipeline: default
/// pipelines:
///   default:
///     stages: [{ type: hash }]
///     sink: { type: disk, root: ./sluice-data }
/// ```
public struct SluiceConfig: Decodable, Sendable {
    /// Listeners in file order.
    public var listeners: [(name: String, spec: ListenerSpec)]
    /// Pipelines in file order.
    public var pipelines: [(name: String, spec: PipelineSpec)]
    /// The admin listener (`/healthz`, `/metrics`), if configured.
    public var admin: AdminConfiguration?
    /// Shutdown behaviour.
    public var shutdown: ShutdownConfiguration
    /// Minimum log level (`trace`, `debug`, `info`, `notice`, `warning`, `error`, `critical`).
    public var logLevel: Logger.Level

    /// The top-level keys, documented like a plugin's.
    public static let keys: [ConfigKey] = [
        ConfigKey("listeners", "map of name → listener", default: "{}", "Receivers, each with a `type:` (see Receivers)."),
        ConfigKey("pipelines", "map of name → pipeline", default: "{}", "Each pipeline has `stages:` (a list, default empty) and one `sink:`."),
        ConfigKey("admin", "mapping", default: "none", "Admin HTTP listener serving /healthz (200 ok; 503 draining once a shutdown started, until the listeners drained) and /metrics: `listen` (address), optional `tls` (as on a listener: `certificate`, `private_key`, `client_ca`, `min_version`; read once at start, not on reload)."),
        ConfigKey("shutdown.drain_timeout", "duration", default: "\(ShutdownConfiguration.defaultDrainTimeout)", "How long SIGTERM/SIGINT waits for in-flight uploads before aborting them."),
        ConfigKey("log_level", "string", default: "info", "Minimum log level: trace, debug, info, notice, warning, error, critical."),
    ]

    enum CodingKeys: String, CodingKey {
        case listeners, pipelines, admin, shutdown
        case logLevel = "log_level"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.listeners = try Self.decodeMap(ListenerSpec.self, container, .listeners, decoder)
        self.pipelines = try Self.decodeMap(PipelineSpec.self, container, .pipelines, decoder)
        self.admin = try Self.recovering(decoder, [.key("admin")]) {
            try container.decodeIfPresent(AdminConfiguration.self, forKey: .admin)
        } ?? nil
        self.shutdown = try Self.recovering(decoder, [.key("shutdown")]) {
            try container.decode(ShutdownConfiguration.self, forKey: .shutdown, default: ShutdownConfiguration())
        } ?? ShutdownConfiguration()
        let level = try container.decode(String.self, forKey: .logLevel, default: "info")
        guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
            throw decoder.configIssue("log_level", "expected one of trace, debug, info, notice, warning, error, critical; got \"\(level)\"")
        }
        self.logLevel = parsed
    }

    /// Decodes a name → value map, recording each entry's failure and going on.
    private static func decodeMap<T: Decodable>(
        _ type: T.Type, _ container: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys, _ decoder: any Decoder
    ) throws -> [(name: String, spec: T)] {
        guard try !container.decodeNil(forKey: key) else { return [] }
        let map = try container.nestedContainer(keyedBy: StringKey.self, forKey: key)
        var out: [(name: String, spec: T)] = []
        for name in map.allKeys {
            let path: [PathComponent] = [.key(key.rawValue), .key(name.stringValue)]
            if let value = try recovering(decoder, path, { try map.decode(T.self, forKey: name) }) {
                out.append((name.stringValue, value))
            }
        }
        return out
    }

    private static func recovering<T>(_ decoder: any Decoder, _ path: [PathComponent], _ body: () throws -> T) throws -> T? {
        guard let owner = (decoder as? NodeDecoder)?.owner else { return try body() }
        do {
            return try body()
        } catch {
            owner.record(error, at: path)
            return nil
        }
    }
}

/// `admin:` — the admin HTTP listener.
public struct AdminConfiguration: Decodable, Sendable {
    /// Address to listen on.
    public var listen: ListenAddress
    /// HTTPS on the admin listener, if set.
    public var tls: ListenerTLS?
    /// `tls` read and checked when the config was decoded (the admin listener is
    /// not rebuilt on reload, so its files are read once).
    public private(set) var tlsConfiguration: TLSConfiguration?

    public init(listen: ListenAddress) {
        self.listen = listen
    }

    enum CodingKeys: String, CodingKey { case listen, tls }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.listen = try c.decode(ListenAddress.self, forKey: .listen)
        self.tls = try c.decodeIfPresent(ListenerTLS.self, forKey: .tls)
        if let tls {
            self.tlsConfiguration = try tls.makeConfiguration(
                applicationProtocols: ["http/1.1"], issue: { decoder.configIssue("tls", $0) }
            ).0
        }
    }
}

/// `shutdown:` — graceful shutdown.
public struct ShutdownConfiguration: Decodable, Sendable {
    public static let defaultDrainTimeout = ConfigDuration.seconds(30)
    /// How long in-flight uploads may take to finish after SIGTERM/SIGINT.
    public var drainTimeout: ConfigDuration

    public init(drainTimeout: ConfigDuration = Self.defaultDrainTimeout) {
        self.drainTimeout = drainTimeout
    }

    enum CodingKeys: String, CodingKey { case drainTimeout = "drain_timeout" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.drainTimeout = try c.decode(ConfigDuration.self, forKey: .drainTimeout, default: Self.defaultDrainTimeout)
    }
}

/// A config file parsed, decoded and validated, ready to build.
public struct LoadedConfig: Sendable {
    public let file: String
    public let config: SluiceConfig
    private let root: ConfigNode
    public let registry: PluginRegistry

    /// Reads and decodes the file at `path`.
    ///
    /// - Throws: ``ConfigError`` listing every problem, each with file, line and key path.
    public static func load(path: String, registry: PluginRegistry, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> LoadedConfig {
        let display = (path as NSString).lastPathComponent == path ? path : path
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError([ConfigIssue(file: display, line: 0, path: "", message: "cannot read the config file: \(error.localizedDescription)")])
        }
        return try parse(text, file: display, registry: registry, environment: environment)
    }

    /// Decodes config text; `file` is used in messages.
    public static func parse(_ text: String, file: String, registry: PluginRegistry, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> LoadedConfig {
        let root = try ConfigNode.parse(text, file: file)
        let decoder = ConfigDecoder(file: file, root: root, registry: registry, environment: environment)
        let config = try decoder.decode(SluiceConfig.self)
        return LoadedConfig(file: file, config: config, root: root, registry: registry)
    }

    /// The line of the value at `path` in the file.
    public func line(at path: [PathComponent]) -> Int {
        ConfigDecoder(file: file, root: root, registry: registry, environment: [:]).line(at: path)
    }

    /// Builds every pipeline and listener; does not start or bind anything.
    ///
    /// - Throws: ``ConfigError`` with every problem found while building.
    public func build(
        logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() },
        announce: @escaping @Sendable (ListenerAnnouncement) -> Void = { _ in }
    ) throws -> BuiltConfig {
        let root = self.root
        let file = self.file
        let registry = self.registry
        let locate: @Sendable ([PathComponent]) -> Int = { path in
            ConfigDecoder(file: file, root: root, registry: registry, environment: [:]).line(at: path)
        }
        var issues: [ConfigIssue] = []
        var pipelines: [String: Pipeline] = [:]
        var failed: Set<String> = []
        for (name, spec) in config.pipelines {
            var pipelineLogger = logger
            pipelineLogger[metadataKey: "pipeline"] = "\(name)"
            let environment = PluginEnvironment(file: file, path: [.key("pipelines"), .key(name)], logger: pipelineLogger, now: now, locate: locate)
            do {
                pipelines[name] = try spec.build(name: name, environment: environment)
            } catch {
                failed.insert(name)
                issues.append(contentsOf: PipelineSpec.issues(from: error, environment))
            }
        }
        var receivers: [any Receiver] = []
        for (name, spec) in config.listeners {
            var listenerLogger = logger
            listenerLogger[metadataKey: "listener"] = "\(name)"
            let plugin = PluginEnvironment(file: file, path: [.key("listeners"), .key(name)], logger: listenerLogger, now: now, locate: locate)
            var environment = ReceiverEnvironment(plugin: plugin, name: name, pipelines: pipelines, announce: announce)
            environment.failedPipelines = failed
            do {
                receivers.append(try spec.build(environment))
            } catch is PipelineUnavailable {
                continue
            } catch {
                issues.append(contentsOf: PipelineSpec.issues(from: error, plugin))
            }
        }
        guard issues.isEmpty else {
            throw ConfigError(issues.sorted { ($0.line, $0.path) < ($1.line, $1.path) })
        }
        return BuiltConfig(config: config, pipelines: pipelines, receivers: receivers)
    }
}

/// Pipelines and receivers built from a config, not yet started.
public struct BuiltConfig: Sendable {
    public var config: SluiceConfig
    public var pipelines: [String: Pipeline]
    public var receivers: [any Receiver]
}
