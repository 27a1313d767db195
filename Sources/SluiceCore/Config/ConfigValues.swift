import Foundation
import NIOCore

/// A size in bytes, written `64KiB`, `100MiB`, `1GiB`, `500MB`, `1.5GiB` or a plain integer.
public struct ByteSize: Sendable, Hashable, Comparable, Decodable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var bytes: Int64

    public init(_ bytes: Int64) { self.bytes = bytes }
    public init(integerLiteral value: Int64) { self.bytes = value }

    public static func kibibytes(_ n: Int64) -> ByteSize { ByteSize(n << 10) }
    public static func mebibytes(_ n: Int64) -> ByteSize { ByteSize(n << 20) }
    public static func gibibytes(_ n: Int64) -> ByteSize { ByteSize(n << 30) }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    private static let units: [(String, Double)] = [
        ("kib", 1024), ("mib", 1_048_576), ("gib", 1_073_741_824), ("tib", 1_099_511_627_776),
        ("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12),
        ("k", 1024), ("m", 1_048_576), ("g", 1_073_741_824), ("t", 1_099_511_627_776),
        ("b", 1),
    ]

    /// Parses `64KiB`, `1.5 GiB`, `100MB`, `4096`; `nil` if the text is not a size.
    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "")
        if let n = Int64(trimmed), n >= 0 {
            self.bytes = n
            return
        }
        let lower = trimmed.lowercased()
        for (suffix, factor) in Self.units where lower.hasSuffix(suffix) {
            let number = lower.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            guard let value = Double(number), value >= 0, value.isFinite, value * factor < 9.2e18 else { return nil }
            self.bytes = Int64((value * factor).rounded())
            return
        }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let size = ByteSize(parsing: text) else {
            throw decoder.configIssue(nil, "expected a size like \"100MiB\", got \"\(text)\"")
        }
        self = size
    }

    /// `64KiB`, `100MiB`, `1.5GiB`, or bytes when not a round unit.
    public var description: String {
        let units: [(String, Int64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        for (name, factor) in units where bytes >= factor {
            if bytes % factor == 0 { return "\(bytes / factor)\(name)" }
            return String(format: "%.1f%@", Double(bytes) / Double(factor), name)
        }
        return "\(bytes)B"
    }
}

/// A duration, written `500ms`, `30s`, `5m`, `1h`, `1d`, or combined: `1m30s`.
public struct ConfigDuration: Sendable, Hashable, Comparable, Decodable, CustomStringConvertible {
    public var duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public static func seconds(_ s: Int64) -> ConfigDuration { ConfigDuration(.seconds(s)) }
    public static func milliseconds(_ ms: Int64) -> ConfigDuration { ConfigDuration(.milliseconds(ms)) }

    public static func < (a: ConfigDuration, b: ConfigDuration) -> Bool { a.duration < b.duration }

    public var seconds: Double {
        let c = duration.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    /// The duration as NIO's `TimeAmount` (whole nanoseconds).
    public var timeAmount: TimeAmount {
        let c = duration.components
        return .nanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }

    /// Parses `500ms`, `30s`, `1m30s`, `2h`, `1d`, `250us`; `nil` otherwise.
    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard !t.isEmpty else { return nil }
        var total = 0.0
        var number = ""
        var unit = ""
        func flush() -> Bool {
            guard let value = Double(number) else { return false }
            let factor: Double
            switch unit {
            case "us", "µs": factor = 1e-6
            case "ms": factor = 1e-3
            case "s": factor = 1
            case "m": factor = 60
            case "h": factor = 3600
            case "d": factor = 86400
            default: return false
            }
            total += value * factor
            number = ""
            unit = ""
            return true
        }
        for ch in t {
            if ch.isNumber || ch == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(ch)
            } else if ch.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(ch)
            } else {
                return nil
            }
        }
        guard !unit.isEmpty, flush(), total.isFinite, total >= 0 else { return nil }
        self.duration = .nanoseconds(Int64((total * 1e9).rounded()))
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = ConfigDuration(parsing: text) else {
            throw decoder.configIssue(nil, "expected a duration like \"500ms\", \"30s\" or \"1h\", got \"\(text)\"")
        }
        self = value
    }

    public var description: String {
        // Below a millisecond (inline_writes: 500us), microseconds, which parse back.
        if duration > .zero, duration < .milliseconds(1) {
            return "\(Int64((seconds * 1_000_000).rounded()))us"
        }
        let ms = Int64((seconds * 1000).rounded())
        if ms % 3_600_000 == 0, ms > 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0, ms > 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }
}

/// A `host:port` to listen on: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8888`, `:8888`
/// (all interfaces). Port 0 picks a free port.
public struct ListenAddress: Sendable, Hashable, Decodable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(parsing text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(portText), (0...65535).contains(port) else { return nil }
        self.host = String(host)
        self.port = port
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = ListenAddress(parsing: text) else {
            throw decoder.configIssue(nil, "expected an address like \"127.0.0.1:8080\", got \"\(text)\"")
        }
        self = value
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
