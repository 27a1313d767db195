/// A component named by `type:` in a config, decoded into its plugin's typed
/// configuration and ready to build.
///
/// Decoding looks the `type` up in the registry and decodes the rest of the mapping
/// as that plugin's `Configuration`. An unknown type is an error that lists the
/// known ones. When the plugin's configuration has errors they are recorded and
/// decoding goes on, so every problem in a file is reported at once.
public struct ComponentSpec<Environment: Sendable, Product: Sendable>: Decodable, Sendable {
    /// The `type:` string.
    public let type: String
    /// Where the component sits in the config.
    public let path: [PathComponent]
    private let factory: @Sendable (Environment) throws -> Product

    private enum TypeKey: String, CodingKey { case type }

    static var kind: ComponentKind {
        if Product.self == (any Stage).self { return .stage }
        if Product.self == (any Sink).self { return .sink }
        return .receiver
    }

    /// A spec built in code rather than decoded.
    public init(type: String, path: [PathComponent] = [], factory: @escaping @Sendable (Environment) throws -> Product) {
        self.type = type
        self.path = path
        self.factory = factory
    }

    public init(from decoder: any Decoder) throws {
        let kind = Self.kind
        let container = try decoder.container(keyedBy: TypeKey.self)
        let type = try container.decode(String.self, forKey: .type)
        guard let registry = decoder.pluginRegistry, let nodeDecoder = decoder as? NodeDecoder else {
            throw decoder.configIssue("type", "components can only be decoded from a Sluice config")
        }
        self.type = type
        self.path = nodeDecoder.path
        guard let factory = registry.factory(kind, type) else {
            let known = registry.types(of: kind).map { "\"\($0)\"" }.joined(separator: ", ")
            throw decoder.configIssue("type", "unknown \(kind.rawValue) type \"\(type)\" (known: \(known))")
        }
        do {
            let built = try factory(decoder)
            guard let typed = built as? @Sendable (Environment) throws -> Product else {
                throw decoder.configIssue("type", "\(kind.rawValue) \"\(type)\" cannot be used here")
            }
            self.factory = typed
        } catch {
            // Record and go on: the caller sees every issue at the end of the pass.
            nodeDecoder.owner.record(error, at: nodeDecoder.path)
            let path = nodeDecoder.path
            self.factory = { _ in throw ConfigIssue(file: "", line: 0, path: PathComponent.render(path), message: "invalid configuration") }
        }
    }

    /// Builds the component.
    public func build(_ environment: Environment) throws -> Product {
        try factory(environment)
    }
}

public typealias StageSpec = ComponentSpec<PluginEnvironment, any Stage>
public typealias SinkSpec = ComponentSpec<PluginEnvironment, any Sink>
public typealias ListenerSpec = ComponentSpec<ReceiverEnvironment, any Receiver>

/// A pipeline in a config: zero or more stages and one sink.
///
/// ```yaml
/// pipelines:
///   archive:
///     stages:
///       - type: hash
///       - type: compress
///         format: gzip
///     sink:
///       type: disk
///       root: /var/lib/sluice/archive
/// ```
public struct PipelineSpec: Decodable, Sendable {
    public var stages: [StageSpec]
    public var sink: SinkSpec
    /// Where the pipeline sits in the config.
    public var path: [PathComponent]

    enum CodingKeys: String, CodingKey { case stages, sink }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.stages = try container.decode([StageSpec].self, forKey: .stages, default: [])
        self.sink = try container.decode(SinkSpec.self, forKey: .sink)
        self.path = (decoder as? NodeDecoder)?.path ?? []
    }

    /// Builds the stages and the sink.
    ///
    /// - Parameters:
    ///   - name: The pipeline's name (for receipts, logs and metrics).
    ///   - environment: The environment of the pipeline; each component gets a child of it.
    public func build(name: String, environment: PluginEnvironment) throws -> Pipeline {
        var issues: [ConfigIssue] = []
        var built: [(String, any Stage)] = []
        for (i, spec) in stages.enumerated() {
            do {
                built.append((spec.type, try spec.build(environment.child(.key("stages"), .index(i)))))
            } catch {
                issues.append(contentsOf: Self.issues(from: error, environment.child(.key("stages"), .index(i))))
            }
        }
        var sink: (any Sink)?
        do {
            sink = try self.sink.build(environment.child(.key("sink")))
        } catch {
            issues.append(contentsOf: Self.issues(from: error, environment.child(.key("sink"))))
        }
        guard issues.isEmpty, let sink else { throw ConfigError(issues) }
        return Pipeline(name: name, stages: built, sink: sink, logger: environment.logger)
    }

    static func issues(from error: any Error, _ environment: PluginEnvironment) -> [ConfigIssue] {
        switch error {
        case let error as ConfigError: error.issues
        case let error as ConfigIssue: [error]
        default: [environment.issue(nil, "\(error)")]
        }
    }
}
