import Yams

/// A parsed config document that remembers where each value came from.
///
/// YAML (and JSON, which is YAML) is parsed with Yams and turned into this tree
/// so every error can name the file, the line and the key path.
public indirect enum ConfigNode: Sendable {
    case scalar(String, plain: Bool, line: Int)
    case mapping([(key: String, keyLine: Int, value: ConfigNode)], line: Int)
    case sequence([ConfigNode], line: Int)

    public var line: Int {
        switch self {
        case .scalar(_, _, let line), .mapping(_, let line), .sequence(_, let line): line
        }
    }

    /// True for `~`, `null`, `Null`, `NULL` and an empty plain scalar.
    public var isNull: Bool {
        if case .scalar(let text, let plain, _) = self, plain {
            return text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL"
        }
        return false
    }

    public subscript(key: String) -> ConfigNode? {
        if case .mapping(let pairs, _) = self {
            return pairs.first { $0.key == key }?.value
        }
        return nil
    }

    /// Parses YAML or JSON text.
    ///
    /// - Throws: ``ConfigError`` with the file and line of a syntax error.
    public static func parse(_ text: String, file: String) throws -> ConfigNode {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError([ConfigIssue(file: file, line: Self.line(of: error), path: "", message: Self.describe(error))])
        } catch {
            throw ConfigError([ConfigIssue(file: file, line: 0, path: "", message: "cannot parse: \(error)")])
        }
        guard let node else {
            return .mapping([], line: 1)
        }
        return try convert(node, file: file)
    }

    private static func convert(_ node: Node, file: String) throws -> ConfigNode {
        let line = node.mark?.line ?? 0
        switch node {
        case .scalar(let scalar):
            return .scalar(scalar.string, plain: scalar.style == .plain, line: line)
        case .mapping(let mapping):
            var pairs: [(key: String, keyLine: Int, value: ConfigNode)] = []
            for (key, value) in mapping {
                guard case .scalar(let k) = key else {
                    throw ConfigError([ConfigIssue(file: file, line: key.mark?.line ?? line, path: "", message: "mapping keys must be plain strings")])
                }
                if pairs.contains(where: { $0.key == k.string }) {
                    throw ConfigError([ConfigIssue(file: file, line: key.mark?.line ?? line, path: k.string, message: "duplicate key \"\(k.string)\"")])
                }
                pairs.append((k.string, key.mark?.line ?? line, try convert(value, file: file)))
            }
            return .mapping(pairs, line: line)
        case .sequence(let sequence):
            return .sequence(try sequence.map { try convert($0, file: file) }, line: line)
        case .alias:
            throw ConfigError([ConfigIssue(file: file, line: line, path: "", message: "YAML aliases are not supported")])
        }
    }

    private static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        case .duplicatedKeysInMapping(_, let context):
            return context.mark.line
        default:
            return 0
        }
    }

    private static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _),
             .composer(let context, let problem, _, _):
            let ctx = context.map { "\($0.text) " } ?? ""
            return "invalid YAML: \(ctx)\(problem)"
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate key \(duplicates.map { "\"\($0)\"" }.joined(separator: ", "))"
        default:
            return "invalid YAML: \(error)"
        }
    }
}

/// One problem in a config file, located by file, line and key path.
public struct ConfigIssue: Error, Sendable, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    /// Dotted key path, `[i]` for sequence items: `pipelines.logs.stages[0].level`.
    public var path: String
    public var message: String

    public init(file: String, line: Int, path: String, message: String) {
        self.file = file
        self.line = line
        self.path = path
        self.message = message
    }

    /// `sluice.yaml:14: pipelines.logs.sink.max_size: expected a size like "100MiB", got "lots"`
    public var description: String {
        let location = line > 0 ? "\(file):\(line)" : file
        return path.isEmpty ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}

/// Every problem found in a config file.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]

    public init(_ issues: [ConfigIssue]) {
        self.issues = issues
    }

    public var description: String {
        issues.map(\.description).joined(separator: "\n")
    }
}
