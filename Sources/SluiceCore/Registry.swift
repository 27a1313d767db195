import Logging

/// Documentation of one configuration key: `name (type, default): meaning`.
///
/// Each plugin lists its keys; `sluice plugins` prints them and the config
/// reference (`docs/configuration.md`) is generated from them and tested against them.
public struct ConfigKey: Sendable, Equatable {
    public var name: String
    public var type: String
    public var defaultValue: String?
    public var meaning: String

    public init(_ name: String, _ type: String, default defaultValue: String? = nil, _ meaning: String) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.meaning = meaning
    }

    /// `name (type, default): meaning`, or `name (type, required): meaning`.
    public var line: String {
        "\(name) (\(type), \(defaultValue.map { "default \($0)" } ?? "required")): \(meaning)"
    }
}

/// The kinds of component a config can name by `type:`.
public enum ComponentKind: String, Sendable, CaseIterable {
    case receiver
    case stage
    case sink
}

/// A config-selectable component: a `type:` string, a typed configuration, its documentation.
public protocol Plugin: SendableMetatype {
    /// The configuration decoded from the component's config mapping (minus `type`).
    ///
    /// Unknown keys are rejected by the decoder; give every optional key its default
    /// in one place (`init(from:)` with ``Swift/KeyedDecodingContainer/decode(_:forKey:default:)``).
    associatedtype Configuration: Decodable & Sendable
    /// The `type:` string that selects this plugin.
    static var type: String { get }
    /// One line describing the plugin.
    static var summary: String { get }
    /// Every key the configuration accepts.
    static var keys: [ConfigKey] { get }
}

/// A plugin that builds a ``Stage``.
public protocol StagePlugin: Plugin {
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage
}

/// A plugin that builds a ``Sink``.
public protocol SinkPlugin: Plugin {
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink
}

/// A plugin that builds a ``Receiver`` (a listener).
public protocol ReceiverPlugin: Plugin {
    static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver
}

/// What a registry knows about a plugin, for documentation and error messages.
public struct PluginDescriptor: Sendable {
    public var kind: ComponentKind
    public var type: String
    public var summary: String
    public var keys: [ConfigKey]
}

/// Every plugin a config may name, keyed by kind and `type:`.
///
/// The built-in list lives in one place (`PluginRegistry.builtin` in SluiceRuntime);
/// a library user may register more before loading a config.
public struct PluginRegistry: Sendable {
    typealias Factory = @Sendable (any Decoder) throws -> any Sendable

    public private(set) var descriptors: [PluginDescriptor] = []
    private var factories: [String: Factory] = [:]

    public init() {}

    private static func key(_ kind: ComponentKind, _ type: String) -> String { "\(kind.rawValue):\(type)" }

    private mutating func add<P: Plugin>(_ plugin: P.Type, kind: ComponentKind, factory: @escaping Factory) {
        precondition(factories[Self.key(kind, P.type)] == nil, "\(kind) plugin \"\(P.type)\" registered twice")
        descriptors.append(PluginDescriptor(kind: kind, type: P.type, summary: P.summary, keys: P.keys))
        factories[Self.key(kind, P.type)] = factory
    }

    public mutating func register<P: StagePlugin>(_ plugin: P.Type) {
        add(plugin, kind: .stage) { decoder in
            let configuration = try P.Configuration(from: decoder)
            return { @Sendable (environment: PluginEnvironment) throws -> any Stage in
                try P.make(configuration, environment: environment)
            }
        }
    }

    public mutating func register<P: SinkPlugin>(_ plugin: P.Type) {
        add(plugin, kind: .sink) { decoder in
            let configuration = try P.Configuration(from: decoder)
            return { @Sendable (environment: PluginEnvironment) throws -> any Sink in
                try P.make(configuration, environment: environment)
            }
        }
    }

    public mutating func register<P: ReceiverPlugin>(_ plugin: P.Type) {
        add(plugin, kind: .receiver) { decoder in
            let configuration = try P.Configuration(from: decoder)
            return { @Sendable (environment: ReceiverEnvironment) throws -> any Receiver in
                try P.make(configuration, environment: environment)
            }
        }
    }

    /// The registered `type:` strings of one kind, sorted.
    public func types(of kind: ComponentKind) -> [String] {
        descriptors.filter { $0.kind == kind }.map(\.type).sorted()
    }

    public func descriptor(_ kind: ComponentKind, _ type: String) -> PluginDescriptor? {
        descriptors.first { $0.kind == kind && $0.type == type }
    }

    func factory(_ kind: ComponentKind, _ type: String) -> Factory? {
        factories[Self.key(kind, type)]
    }
}

/// What a plugin gets when it is built: where it sits in the config, a logger, a clock.
public struct PluginEnvironment: Sendable {
    /// The config file the component came from.
    public var file: String
    /// The component's key path in the config (for example `pipelines.logs.sink`).
    public var path: [PathComponent]
    /// A logger labelled with the component.
    public var logger: Logger
    /// The wall clock; tests inject their own.
    public var now: @Sendable () -> Date
    let locate: @Sendable ([PathComponent]) -> Int

    public init(
        file: String = "<code>",
        path: [PathComponent] = [],
        logger: Logger = Logger(label: "sluice"),
        now: @escaping @Sendable () -> Date = { Date() },
        locate: @escaping @Sendable ([PathComponent]) -> Int = { _ in 0 }
    ) {
        self.file = file
        self.path = path
        self.logger = logger
        self.now = now
        self.locate = locate
    }

    /// A config issue located at this component (or one of its keys).
    ///
    /// Throw it from `make` for problems found when building: `throw environment.issue("root", "is not a directory")`.
    public func issue(_ key: String? = nil, _ message: String) -> ConfigIssue {
        let full = path + (key.map { [PathComponent.key($0)] } ?? [])
        return ConfigIssue(file: file, line: locate(full), path: PathComponent.render(full), message: message)
    }

    /// The environment for a nested component (a tee branch's sink, say).
    public func child(_ components: PathComponent...) -> PluginEnvironment {
        var copy = self
        copy.path += components
        return copy
    }
}

import Foundation
