import Foundation

/// What a sink reports after it committed an upload.
public struct SinkReceipt: Sendable {
    /// Where the object now lives: a path relative to the sink's root, an `s3://` URL…
    public var location: String
    /// Bytes written to the final location.
    public var bytesStored: Int64

    public init(location: String, bytesStored: Int64) {
        self.location = location
        self.bytesStored = bytesStored
    }
}

/// The answer to a committed upload: sent as JSON to the client (HTTP `201` body,
/// TCP receipt line) and logged.
public struct Receipt: Sendable, Codable, Equatable {
    /// The upload's name.
    public var name: String
    /// The pipeline that processed it.
    public var pipeline: String
    /// Bytes read from the client.
    public var bytesReceived: Int64
    /// Bytes written by the sink.
    public var bytesStored: Int64
    /// Digests recorded by `hash` stages (and by client-digest verification), label → lowercase hex.
    public var digests: [String: String]
    /// Where it was stored (sink-specific).
    public var location: String
    /// The upload's id.
    public var id: String

    public init(
        name: String, pipeline: String, bytesReceived: Int64, bytesStored: Int64,
        digests: [String: String], location: String, id: String
    ) {
        self.name = name
        self.pipeline = pipeline
        self.bytesReceived = bytesReceived
        self.bytesStored = bytesStored
        self.digests = digests
        self.location = location
        self.id = id
    }

    enum CodingKeys: String, CodingKey {
        case name, pipeline, digests, location, id
        case bytesReceived = "bytes_received"
        case bytesStored = "bytes_stored"
    }

    /// One line of JSON (no trailing newline), keys sorted for stable output.
    ///
    /// Written directly rather than through `JSONEncoder`, which cost a few percent of
    /// the server's CPU on small uploads; a test holds it to `JSONEncoder`'s output
    /// (`.sortedKeys`, `.withoutEscapingSlashes`) byte for byte.
    public func jsonLine() -> String {
        var out = "{\"bytes_received\":\(bytesReceived),\"bytes_stored\":\(bytesStored),\"digests\":{"
        for (i, label) in digests.keys.sorted().enumerated() {
            if i > 0 { out += "," }
            JSONText.append(label, to: &out)
            out += ":"
            JSONText.append(digests[label] ?? "", to: &out)
        }
        out += "},\"id\":"
        JSONText.append(id, to: &out)
        out += ",\"location\":"
        JSONText.append(location, to: &out)
        out += ",\"name\":"
        JSONText.append(name, to: &out)
        out += ",\"pipeline\":"
        JSONText.append(pipeline, to: &out)
        out += "}"
        return out
    }
}

/// JSON string literals, escaped as `JSONEncoder` does with `.withoutEscapingSlashes`.
public enum JSONText {
    /// Appends `text` as a quoted JSON string.
    public static func append(_ text: String, to out: inout String) {
        out += "\""
        var plain = true
        for byte in text.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            plain = false
            break
        }
        if plain {
            out += text
        } else {
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
