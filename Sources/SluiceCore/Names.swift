import Foundation

/// Rules for names that come from clients (R-X1).
public enum UploadName {
    /// The longest accepted name, in bytes.
    public static let maxLength = 1024
    /// The longest accepted path component, in bytes (the usual filesystem limit).
    public static let maxComponentLength = 255

    /// Checks a client-supplied relative name and returns it normalised.
    ///
    /// Accepted: one or more `/`-separated components of printable characters.
    /// Rejected with ``SluiceError/Code/invalidName``: empty names, absolute paths,
    /// `.` and `..` components, empty components (`a//b`), backslashes, NUL and
    /// other control characters, over-long names or components.
    public static func sanitize(_ name: String) throws -> String {
        func reject(_ why: String) -> SluiceError {
            SluiceError(.invalidName, "name \(quoted(name)) \(why)")
        }
        guard !name.isEmpty else { throw reject("is empty") }
        guard name.utf8.count <= maxLength else { throw reject("is longer than \(maxLength) bytes") }
        guard !name.hasPrefix("/") else { throw reject("is an absolute path") }
        // One pass over the UTF-8 bytes (this runs for every upload): control characters
        // (C0, DEL, and C1, which UTF-8 encodes as C2 80…C2 9F), backslashes, and the
        // `/`-separated components.
        var componentLength = 0
        var componentDots = 0
        var previous: UInt8 = 0
        func checkComponent(_ length: Int, dots: Int) throws {
            if length == 0 { throw reject("has an empty path component") }
            if length == dots, length <= 2 { throw reject("has a \"\(length == 1 ? "." : "..")\" path component") }
            if length > maxComponentLength { throw reject("has a component longer than \(maxComponentLength) bytes") }
        }
        for byte in name.utf8 {
            if byte < 0x20 || byte == 0x7f || (previous == 0xc2 && (0x80...0x9f).contains(byte)) {
                throw reject("contains a control character")
            }
            if byte == UInt8(ascii: "\\") { throw reject("contains a backslash") }
            if byte == UInt8(ascii: "/") {
                try checkComponent(componentLength, dots: componentDots)
                componentLength = 0
                componentDots = 0
            } else {
                componentLength += 1
                if byte == UInt8(ascii: ".") { componentDots += 1 }
            }
            previous = byte
        }
        try checkComponent(componentLength, dots: componentDots)
        return name
    }

    /// The name quoted and escaped for messages (control characters made visible).
    public static func quoted(_ name: String) -> String {
        var out = "\""
        for scalar in name.unicodeScalars.prefix(200) {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += String(format: "\\x%02x", scalar.value)
            } else if scalar == "\"" {
                out += "\\\""
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + (name.unicodeScalars.count > 200 ? "…\"" : "\"")
    }
}

/// A name template such as `{date}/{name}` or `{listener}-{datetime}-{uuid}.log`.
///
/// Placeholders:
/// - `{name}`: the upload's name (may contain `/`); `{stem}` and `{ext}`: the last
///   component without and with its extension (`{ext}` includes the dot, or is empty);
/// - `{date}` (`2026-11-26`), `{time}` (`165407`), `{datetime}` (`20261126T165407Z`),
///   `{year}`, `{month}`, `{day}`, `{hour}`: UTC, when the upload was received;
/// - `{uuid}`: the upload's id; `{listener}`, `{pipeline}`, `{route}`;
/// - `{remote}`: the client's IP address;
/// - `{sha256}` etc.: a digest recorded by a `hash` stage (only for sinks that name the
///   object after the body was read, such as `disk`).
public struct NameTemplate: Sendable, Hashable, Decodable, CustomStringConvertible {
    public let text: String
    private let parts: [Part]
    /// Placeholders the template uses.
    public let usedPlaceholders: Set<String>
    /// Whether rendering needs the upload's time, or the last component of its name.
    private let usesClock: Bool
    private let usesStemOrExt: Bool

    private enum Part: Sendable, Hashable {
        case literal(String)
        case placeholder(String)
    }

    public static let placeholders: Set<String> = Set([
        "name", "stem", "ext", "date", "time", "datetime", "year", "month", "day", "hour",
        "uuid", "listener", "pipeline", "route", "remote",
    ]).union(DigestAlgorithm.allCases.map(\.rawValue))

    public init(_ text: String) throws {
        var parts: [Part] = []
        var literal = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            literal += rest[..<open]
            guard let close = rest[open...].firstIndex(of: "}") else {
                throw SluiceError(.badRequest, "unclosed \"{\" in template \"\(text)\"")
            }
            let key = String(rest[rest.index(after: open)..<close])
            guard Self.placeholders.contains(key) else {
                throw SluiceError(.badRequest, "unknown placeholder {\(key)} in template \"\(text)\" (known: \(Self.placeholders.sorted().map { "{\($0)}" }.joined(separator: ", ")))")
            }
            if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
            parts.append(.placeholder(key))
            rest = rest[rest.index(after: close)...]
        }
        literal += rest
        if !literal.isEmpty { parts.append(.literal(literal)) }
        guard !parts.isEmpty else { throw SluiceError(.badRequest, "empty name template") }
        self.text = text
        self.parts = parts
        let used = Set(parts.compactMap { part -> String? in if case .placeholder(let p) = part { p } else { nil } })
        self.usedPlaceholders = used
        self.usesClock = !used.isDisjoint(with: ["date", "time", "datetime", "year", "month", "day", "hour"])
        self.usesStemOrExt = used.contains("stem") || used.contains("ext")
    }

    public static func == (a: NameTemplate, b: NameTemplate) -> Bool { a.text == b.text }
    public func hash(into hasher: inout Hasher) { hasher.combine(text) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(text)
        } catch let error as SluiceError {
            throw decoder.configIssue(nil, error.message)
        }
    }

    public var description: String { text }

    /// Expands the template for one upload and checks the result with ``UploadName/sanitize(_:)``.
    ///
    /// - Throws: ``SluiceError/Code/invalidName`` when the result is not a safe relative name.
    public func render(_ context: UploadContext, now: Date? = nil) throws -> String {
        let m = context.metadata
        // Only what the template uses is computed: this runs for every upload.
        let f = usesClock ? UTCTime(now ?? m.receivedAt) : UTCTime()
        let two = UTCTime.twoDigits
        let lastComponent = usesStemOrExt ? (m.name.split(separator: "/").last.map(String.init) ?? m.name) : ""
        let dot = lastComponent.lastIndex(of: ".").flatMap { $0 == lastComponent.startIndex ? nil : $0 }
        var out = ""
        for part in parts {
            switch part {
            case .literal(let s): out += s
            case .placeholder(let key):
                switch key {
                case "name": out += m.name
                case "stem": out += dot.map { String(lastComponent[..<$0]) } ?? lastComponent
                case "ext": out += dot.map { String(lastComponent[$0...]) } ?? ""
                case "date": out += "\(f.year)-\(two(f.month))-\(two(f.day))"
                case "time": out += "\(two(f.hour))\(two(f.minute))\(two(f.second))"
                case "datetime": out += f.compact
                case "year": out += "\(f.year)"
                case "month": out += two(f.month)
                case "day": out += two(f.day)
                case "hour": out += two(f.hour)
                case "uuid": out += m.id.uuidString.lowercased()
                case "listener": out += m.listener
                case "pipeline": out += context.pipeline
                case "route": out += m.route ?? ""
                case "remote": out += Self.safeRemote(m.remoteAddress)
                default:
                    if let algorithm = DigestAlgorithm(rawValue: key) {
                        guard let hex = context.digest(algorithm) else {
                            throw SluiceError(.internal, "template \"\(text)\" uses {\(key)} but no hash stage recorded a \(key) digest")
                        }
                        out += hex
                    }
                }
            }
        }
        return try UploadName.sanitize(out)
    }

    private static func safeRemote(_ address: String?) -> String {
        guard let address else { return "unknown" }
        return String(address.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
    }
}

/// A time's UTC calendar fields, from the C library (`gmtime_r`): Foundation's
/// `Calendar` costs microseconds per call, and names are rendered for every upload.
public struct UTCTime: Sendable {
    public var year = 1970, month = 1, day = 1, hour = 0, minute = 0, second = 0

    public init() {}

    public init(_ date: Date) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var fields = tm()
        guard gmtime_r(&seconds, &fields) != nil else { return }
        year = Int(fields.tm_year) + 1900
        month = Int(fields.tm_mon) + 1
        day = Int(fields.tm_mday)
        hour = Int(fields.tm_hour)
        minute = Int(fields.tm_min)
        second = Int(fields.tm_sec)
    }

    /// `7` → `"07"`.
    public static func twoDigits(_ value: Int) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }

    /// `20261126T165407Z` (the `{datetime}` placeholder).
    public var compact: String {
        let two = Self.twoDigits
        return "\(year)\(two(month))\(two(day))T\(two(hour))\(two(minute))\(two(second))Z"
    }
}
