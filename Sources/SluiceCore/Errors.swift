import Foundation

/// An error a client or an operator can act on: a stable code, a readable message,
/// and the underlying cause when there is one.
///
/// Receivers map ``Code`` to a protocol answer in one place (``Code/httpStatus``);
/// everything else only throws.
public struct SluiceError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in terms a client can act on.
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The request itself is malformed (bad name, bad header, bad framing).
        case badRequest = "bad_request"
        /// A name from the client is not acceptable (traversal, control characters…).
        case invalidName = "invalid_name"
        /// The body did not match a digest the client sent.
        case digestMismatch = "digest_mismatch"
        /// The body could not be decoded (corrupt gzip, truncated stream…).
        case corruptInput = "corrupt_input"
        /// Missing or wrong credentials.
        case unauthorized = "unauthorized"
        /// No route or object.
        case notFound = "not_found"
        /// The method is not allowed on this route.
        case methodNotAllowed = "method_not_allowed"
        /// The body's media type or content coding is not accepted (`Content-Encoding: br`).
        case unsupportedMediaType = "unsupported_media_type"
        /// The target exists and the conflict policy is `fail`.
        case conflict = "conflict"
        /// The upload is larger than allowed.
        case payloadTooLarge = "payload_too_large"
        /// The client was too slow (headers, body, idle).
        case timeout = "timeout"
        /// Too many uploads: the queue is full or waiting timed out.
        case overloaded = "overloaded"
        /// The sink has no room (disk full, spool over its bound).
        case insufficientStorage = "insufficient_storage"
        /// A downstream service (an object store) failed or is unreachable.
        case upstreamFailed = "upstream_failed"
        /// The client went away before the upload completed.
        case clientAborted = "client_aborted"
        /// The server is shutting down.
        case shuttingDown = "shutting_down"
        /// A plain-text request reached a listener that speaks TLS.
        case tlsRequired = "tls_required"
        /// A bug or an unexpected local failure.
        case `internal` = "internal"

        /// The HTTP status this code is answered with: the one mapping for every receiver.
        public var httpStatus: Int {
            switch self {
            case .badRequest, .invalidName, .digestMismatch, .corruptInput, .tlsRequired: 400
            case .unauthorized: 401
            case .notFound: 404
            case .methodNotAllowed: 405
            case .timeout: 408
            case .conflict: 409
            case .payloadTooLarge: 413
            case .unsupportedMediaType: 415
            case .clientAborted: 499
            case .internal: 500
            case .upstreamFailed: 502
            case .overloaded, .shuttingDown: 503
            case .insufficientStorage: 507
            }
        }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?
    public var file: String
    public var line: Int

    public init(
        _ code: Code,
        _ message: String,
        cause: (any Error)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.cause = cause
        self.file = file
        self.line = line
    }

    public var description: String {
        if let cause {
            return "\(code.rawValue): \(message) (\(cause))"
        }
        return "\(code.rawValue): \(message)"
    }

    /// `{"error":{"code":"…","message":"…"}}` (keys sorted, one line): how every
    /// receiver tells a client about this error.
    public var json: String {
        struct Body: Encodable {
            struct Detail: Encodable { var code: String; var message: String }
            var error: Detail
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Two strings always encode.
        let data = (try? encoder.encode(Body(error: .init(code: code.rawValue, message: message)))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Classifies any error: a `SluiceError` as itself, cancellation as `clientAborted`,
    /// anything else as `internal` with the error as its cause.
    public static func from(_ error: any Error) -> SluiceError {
        if let error = error as? SluiceError { return error }
        if error is CancellationError {
            return SluiceError(.clientAborted, "the upload was cancelled", cause: error)
        }
        return SluiceError(.internal, "\(error)", cause: error)
    }
}
