/// Transforms one chunk sequence into another, and may record facts for the receipt.
///
/// A stage is built once from its configuration and applied to every upload that
/// flows through its pipeline, concurrently: keep per-upload state in the body you
/// return (see ``UploadBody/transformed(_:)``), shared state behind a lock.
///
/// Implementation requirements:
/// - Never collect the body: return a body that pulls from the one given, chunk by
///   chunk, so back pressure reaches the socket.
/// - Throw ``SluiceError`` for input problems (corrupt data, digest mismatch); the
///   sink then commits nothing.
/// - In ``UploadMode/records`` mode, emit only self-contained chunks (see ``UploadMode``).
///
/// ```swift
/// struct CountLines: Stage {
///     func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
///         let lines = Counter(label: "lines")
///         return body.observed { chunk in
///             lines.increment(by: chunk.readableBytesView.lazy.filter { $0 == 10 }.count)
///         }
///     }
/// }
/// ```
public protocol Stage: Sendable {
    /// Returns the body this stage produces from `body`.
    ///
    /// - Parameters:
    ///   - body: The upstream body, not yet read.
    ///   - context: The upload's metadata and fact store.
    /// - Returns: The transformed body; reading it reads `body`.
    /// - Throws: When the stage cannot start (reading errors surface through the body).
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody

    /// Digest algorithms this stage verifies against the client's digests, when it
    /// sees the bytes as the client sent them (first in the pipeline). The pipeline
    /// skips its own verification for these.
    var verifiesClientDigests: Set<DigestAlgorithm> { get }
}

extension Stage {
    public var verifiesClientDigests: Set<DigestAlgorithm> { [] }
}
