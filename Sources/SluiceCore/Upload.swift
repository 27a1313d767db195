import Foundation
import NIOCore

/// One incoming stream: who sent it, what it claims to be, and its bytes.
///
/// A receiver builds one `Upload` per stream (a TCP connection, an HTTP request,
/// a spooled file) and hands it to a ``Pipeline``. The body may be iterated once.
public struct Upload: Sendable {
    /// What is known about the stream before its bytes are read.
    public var metadata: UploadMetadata
    /// The stream's bytes, single pass and back-pressured.
    public var body: UploadBody

    public init(metadata: UploadMetadata, body: UploadBody) {
        self.metadata = metadata
        self.body = body
    }
}

/// How a sink should treat an upload's bytes.
public enum UploadMode: String, Sendable, Codable {
    /// One complete object (a file, an artifact): stored as a unit or not at all.
    case object
    /// A run of newline-delimited records that may be appended to a shared target.
    ///
    /// Every chunk of a `records` body ends on a record boundary, so an appending
    /// sink may write each chunk as a unit without ever interleaving two senders'
    /// records. Stages that sit in front of such sinks keep that property (they map
    /// one chunk to one chunk, or emit self-contained chunks such as gzip members).
    case records
}

/// Everything a receiver knows about an upload before reading its body.
public struct UploadMetadata: Sendable {
    /// Unique id of this upload (also used for `{uuid}` in name templates).
    public var id: UUID
    /// The client-supplied or receiver-generated name, already sanitised (see ``UploadName``).
    public var name: String
    /// The listener (config key under `listeners:`) that received the upload.
    public var listener: String
    /// The HTTP route prefix, when the receiver has routes.
    public var route: String?
    /// The peer's address, for logs and `{remote}`.
    public var remoteAddress: String?
    /// The length the client declared (HTTP `Content-Length`), if any.
    public var declaredLength: Int64?
    /// The media type the client declared, if any.
    public var contentType: String?
    /// Digests the client sent for the body as transferred; verified by the pipeline.
    public var expectedDigests: [ExpectedDigest]
    /// Whether the body is one object or a run of records.
    public var mode: UploadMode
    /// When the receiver accepted the upload.
    public var receivedAt: Date

    public init(
        id: UUID = .systemRandom(),
        name: String,
        listener: String,
        route: String? = nil,
        remoteAddress: String? = nil,
        declaredLength: Int64? = nil,
        contentType: String? = nil,
        expectedDigests: [ExpectedDigest] = [],
        mode: UploadMode = .object,
        receivedAt: Date = Date()
    ) {
        self.id = id
        self.name = name
        self.listener = listener
        self.route = route
        self.remoteAddress = remoteAddress
        self.declaredLength = declaredLength
        self.contentType = contentType
        self.expectedDigests = expectedDigests
        self.mode = mode
        self.receivedAt = receivedAt
    }
}
