import Foundation

/// Decodes `Decodable` configuration types from a ``ConfigNode`` tree.
///
/// Beyond a plain decoder it
/// - rejects keys no type asked for (typos must not pass silently),
/// - interpolates `${ENV_VAR}` in string values,
/// - locates every error by file, line and key path,
/// - keeps going after a component fails so `sluice validate` reports every problem.
public final class ConfigDecoder {
    public let file: String
    public let root: ConfigNode
    let registry: PluginRegistry
    let environment: [String: String]

    // Decoding is single-threaded; these collect what the pass saw.
    var accessed: [String: Set<String>] = [:]
    var mappings: [(path: [PathComponent], node: ConfigNode)] = []
    var issues: [ConfigIssue] = []
    var failedPaths: [[PathComponent]] = []

    public init(file: String, root: ConfigNode, registry: PluginRegistry, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.file = file
        self.root = root
        self.registry = registry
        self.environment = environment
    }

    /// Decodes `T` from the root, then checks for unknown keys.
    ///
    /// - Throws: ``ConfigError`` with every issue found.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let value: T?
        do {
            value = try T(from: NodeDecoder(node: root, path: [], owner: self))
        } catch {
            record(error, at: [])
            value = nil
        }
        checkUnknownKeys()
        if !issues.isEmpty || value == nil {
            throw ConfigError(sortedIssues())
        }
        return value!
    }

    func sortedIssues() -> [ConfigIssue] {
        var seen = Set<String>()
        return issues.sorted { ($0.line, $0.path) < ($1.line, $1.path) }.filter { seen.insert($0.description).inserted }
    }

    // MARK: Locating

    /// The line of the value at `path`, or of the closest ancestor that exists.
    public func line(at path: [PathComponent]) -> Int {
        var node = root
        var line = root.line
        for component in path {
            switch (component, node) {
            case (.key(let key), .mapping(let pairs, _)):
                guard let pair = pairs.first(where: { $0.key == key }) else { return line }
                node = pair.value
                line = pair.value.line > 0 ? pair.value.line : pair.keyLine
            case (.index(let i), .sequence(let items, _)) where i < items.count:
                node = items[i]
                line = node.line
            default:
                return line
            }
        }
        return line
    }

    func issue(at path: [PathComponent], _ message: String) -> ConfigIssue {
        ConfigIssue(file: file, line: line(at: path), path: PathComponent.render(path), message: message)
    }

    /// Records an error thrown while decoding the value at `path`, and marks that
    /// subtree as failed so its keys are not also reported as unknown.
    func record(_ error: any Error, at path: [PathComponent]) {
        failedPaths.append(path)
        switch error {
        case let error as ConfigError:
            issues.append(contentsOf: error.issues)
        case let error as ConfigIssue:
            issues.append(error)
        case let error as DecodingError:
            issues.append(translate(error, fallback: path))
        default:
            issues.append(issue(at: path, "\(error)"))
        }
    }

    func translate(_ error: DecodingError, fallback: [PathComponent]) -> ConfigIssue {
        switch error {
        case .keyNotFound(let key, let context):
            let path = PathComponent.from(context.codingPath)
            return issue(at: path, "missing required key \"\(key.stringValue)\"")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return issue(at: PathComponent.from(context.codingPath), context.debugDescription)
        @unknown default:
            return issue(at: fallback, "\(error)")
        }
    }

    func checkUnknownKeys() {
        for (path, node) in mappings {
            guard case .mapping(let pairs, _) = node else { continue }
            if failedPaths.contains(where: { path.starts(with: $0) }) { continue }
            let key = PathComponent.render(path)
            let used = accessed[key] ?? []
            let known = used.sorted()
            for pair in pairs where !used.contains(pair.key) {
                let childPath = path + [.key(pair.key)]
                var message = "unknown key \"\(pair.key)\""
                if let suggestion = Self.closest(pair.key, in: known) {
                    message += " (did you mean \"\(suggestion)\"?)"
                } else if !known.isEmpty {
                    message += " (known here: \(known.joined(separator: ", ")))"
                }
                issues.append(ConfigIssue(file: file, line: pair.keyLine, path: PathComponent.render(childPath), message: message))
            }
        }
    }

    static func closest(_ word: String, in candidates: [String]) -> String? {
        var best: (String, Int)?
        for candidate in candidates {
            let d = editDistance(word, candidate)
            if d <= max(1, word.count / 3), d < (best?.1 ?? .max) { best = (candidate, d) }
        }
        return best?.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    // MARK: Interpolation

    /// Replaces `${NAME}` with the environment variable's value; `$${` is a literal `${`.
    func interpolate(_ text: String, at path: [PathComponent]) throws -> String {
        guard text.contains("${") else { return text }
        var out = ""
        var rest = Substring(text)
        while let range = rest.range(of: "${") {
            if range.lowerBound > rest.startIndex, rest[rest.index(before: range.lowerBound)] == "$" {
                out += rest[..<rest.index(before: range.lowerBound)] + "${"
                rest = rest[range.upperBound...]
                continue
            }
            out += rest[..<range.lowerBound]
            guard let close = rest[range.upperBound...].firstIndex(of: "}") else {
                throw issue(at: path, "unterminated \"${\" in \"\(text)\"")
            }
            let name = String(rest[range.upperBound..<close])
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw issue(at: path, "invalid environment variable name \"\(name)\" in \"\(text)\"")
            }
            guard let value = environment[name] else {
                throw issue(at: path, "environment variable \(name) is not set")
            }
            out += value
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        return out
    }
}

/// One step of a key path.
public enum PathComponent: Sendable, Equatable {
    case key(String)
    case index(Int)

    public static func render(_ path: [PathComponent]) -> String {
        var out = ""
        for component in path {
            switch component {
            case .key(let key): out += out.isEmpty ? key : ".\(key)"
            case .index(let i): out += "[\(i)]"
            }
        }
        return out
    }

    static func from(_ codingPath: [any CodingKey]) -> [PathComponent] {
        codingPath.map { key in
            if let i = key.intValue, key.stringValue == "Index \(i)" || key is IndexKey { return .index(i) }
            return .key(key.stringValue)
        }
    }

    var codingKey: any CodingKey {
        switch self {
        case .key(let key): StringKey(key)
        case .index(let i): IndexKey(i)
        }
    }
}

struct StringKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

struct IndexKey: CodingKey {
    var stringValue: String { "Index \(index)" }
    var intValue: Int? { index }
    let index: Int
    init(_ index: Int) { self.index = index }
    init?(stringValue: String) { return nil }
    init?(intValue: Int) { index = intValue }
}

// MARK: - Decoder

struct NodeDecoder: Decoder {
    let node: ConfigNode
    let path: [PathComponent]
    let owner: ConfigDecoder

    var codingPath: [any CodingKey] { path.map(\.codingKey) }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .mapping(let pairs, _) = node else {
            throw owner.issue(at: path, "expected a mapping of keys to values, got \(node.kindDescription)")
        }
        let rendered = PathComponent.render(path)
        if owner.accessed[rendered] == nil {
            owner.accessed[rendered] = []
            owner.mappings.append((path, node))
        }
        return KeyedDecodingContainer(KeyedContainer<Key>(pairs: pairs, decoder: self, renderedPath: rendered))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .sequence(let items, _) = node else {
            throw owner.issue(at: path, "expected a list, got \(node.kindDescription)")
        }
        return UnkeyedContainer(items: items, decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleContainer(decoder: self)
    }

    func child(_ node: ConfigNode, _ component: PathComponent) -> NodeDecoder {
        NodeDecoder(node: node, path: path + [component], owner: owner)
    }

    // MARK: Scalars

    func scalarText(expecting what: String) throws -> String {
        guard case .scalar(let text, _, _) = node else {
            throw owner.issue(at: path, "expected \(what), got \(node.kindDescription)")
        }
        return try owner.interpolate(text, at: path)
    }

    func decodeScalar<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is String.Type:
            return try scalarText(expecting: "a string") as! T
        case is Bool.Type:
            let text = try scalarText(expecting: "true or false")
            switch text.lowercased() {
            case "true", "yes", "on": return true as! T
            case "false", "no", "off": return false as! T
            default: throw owner.issue(at: path, "expected true or false, got \"\(text)\"")
            }
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt16.Type, is UInt32.Type, is UInt64.Type, is UInt.Type, is UInt8.Type:
            let text = try scalarText(expecting: "an integer")
            guard let value = Int64(text.replacingOccurrences(of: "_", with: "")) else {
                throw owner.issue(at: path, "expected an integer, got \"\(text)\"")
            }
            switch type {
            case is Int.Type: return Int(value) as! T
            case is Int64.Type: return value as! T
            case is Int32.Type:
                guard let v = Int32(exactly: value) else { throw owner.issue(at: path, "\(value) is out of range") }
                return v as! T
            case is UInt16.Type:
                guard let v = UInt16(exactly: value) else { throw owner.issue(at: path, "\(value) is out of range 0...65535") }
                return v as! T
            case is UInt32.Type:
                guard let v = UInt32(exactly: value) else { throw owner.issue(at: path, "\(value) is out of range") }
                return v as! T
            case is UInt8.Type:
                guard let v = UInt8(exactly: value) else { throw owner.issue(at: path, "\(value) is out of range 0...255") }
                return v as! T
            default:
                guard value >= 0 else { throw owner.issue(at: path, "expected a non-negative integer, got \(value)") }
                if type is UInt64.Type { return UInt64(value) as! T }
                return UInt(value) as! T
            }
        case is Double.Type, is Float.Type:
            let text = try scalarText(expecting: "a number")
            guard let value = Double(text) else {
                throw owner.issue(at: path, "expected a number, got \"\(text)\"")
            }
            return (type is Float.Type ? Float(value) as! T : value as! T)
        default:
            return try T(from: self)
        }
    }
}

extension ConfigNode {
    var kindDescription: String {
        switch self {
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .scalar(let text, _, _): isNull ? "nothing (null)" : "\"\(text)\""
        }
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let pairs: [(key: String, keyLine: Int, value: ConfigNode)]
    let decoder: NodeDecoder
    let renderedPath: String

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { pairs.compactMap { Key(stringValue: $0.key) } }

    private func markAccessed(_ key: Key) {
        decoder.owner.accessed[renderedPath, default: []].insert(key.stringValue)
    }

    private func value(_ key: Key) throws -> ConfigNode {
        markAccessed(key)
        guard let pair = pairs.first(where: { $0.key == key.stringValue }) else {
            throw decoder.owner.issue(at: decoder.path, "missing required key \"\(key.stringValue)\"")
        }
        return pair.value
    }

    func contains(_ key: Key) -> Bool {
        markAccessed(key)
        return pairs.contains { $0.key == key.stringValue }
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        markAccessed(key)
        guard let pair = pairs.first(where: { $0.key == key.stringValue }) else { return true }
        return pair.value.isNull
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let node = try value(key)
        return try decoder.child(node, .key(key.stringValue)).decodeScalar(type)
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        markAccessed(key)
        guard let pair = pairs.first(where: { $0.key == key.stringValue }), !pair.value.isNull else { return nil }
        return try decoder.child(pair.value, .key(key.stringValue)).decodeScalar(type)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder.child(try value(key), .key(key.stringValue)).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder.child(try value(key), .key(key.stringValue)).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { decoder }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder.child(try value(key), .key(key.stringValue))
    }
}

private struct UnkeyedContainer: UnkeyedDecodingContainer {
    let items: [ConfigNode]
    let decoder: NodeDecoder
    var currentIndex = 0

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    private mutating func next() throws -> NodeDecoder {
        guard !isAtEnd else {
            throw decoder.owner.issue(at: decoder.path, "list has too few items")
        }
        defer { currentIndex += 1 }
        return decoder.child(items[currentIndex], .index(currentIndex))
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return true }
        if items[currentIndex].isNull {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try next().decodeScalar(type)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try next().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { try next() }
}

private struct SingleContainer: SingleValueDecodingContainer {
    let decoder: NodeDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }

    func decodeNil() -> Bool { decoder.node.isNull }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try decoder.decodeScalar(type)
    }
}

// MARK: - Helpers for configuration types

extension KeyedDecodingContainer {
    /// Decodes the value for `key`, or returns `defaultValue` when the key is absent or null.
    public func decode<T: Decodable>(_ type: T.Type = T.self, forKey key: Key, default defaultValue: @autoclosure () -> T) throws -> T {
        try decodeIfPresent(type, forKey: key) ?? defaultValue()
    }
}

extension Decoder {
    /// A config error located at this decoder's key path (plus `key`, if given).
    ///
    /// Use it for semantic checks in `init(from:)`: `throw decoder.configIssue("level", "must be 0...9")`.
    public func configIssue(_ key: String? = nil, _ message: String) -> any Error {
        guard let decoder = self as? NodeDecoder else {
            return DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: message))
        }
        let path = decoder.path + (key.map { [.key($0)] } ?? [])
        return decoder.owner.issue(at: path, message)
    }

    /// The plugin registry, when decoding a Sluice config file.
    var pluginRegistry: PluginRegistry? { (self as? NodeDecoder)?.owner.registry }
}
