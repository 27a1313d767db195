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
    public func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a struct of strings and integers cannot fail.
        let data = (try? encoder.encode(self)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
