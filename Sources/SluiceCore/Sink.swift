/// Consumes an upload's final body and commits it atomically, or throws and leaves
/// nothing behind.
///
/// Implementation requirements:
/// - Stream: write chunks as they arrive; never hold the whole body.
/// - Commit only after the body ended without error: an error from the body (a
///   client reset, a digest mismatch, a size limit) or cancellation means nothing
///   becomes visible at the final location, and temporary data is removed.
/// - Return only once the commit is durable to the degree the sink promises
///   (for example after `fsync` when configured).
/// - A sink serves many uploads concurrently.
///
/// ```swift
/// struct CountingSink: Sink {
///     func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
///         var n: Int64 = 0
///         for try await chunk in body { n += Int64(chunk.readableBytes) }
///         return SinkReceipt(location: "nowhere", bytesStored: n)
///     }
/// }
/// ```
public protocol Sink: Sendable {
    /// Stores `body` and returns where it went.
    ///
    /// - Parameters:
    ///   - body: The body after all stages; single pass.
    ///   - context: The upload's metadata and facts (digests are complete once `body` ended).
    /// - Returns: The location and the number of bytes stored.
    /// - Throws: ``SluiceError`` (or any error) when nothing was committed.
    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt

    /// Prepares the sink before the first upload: create directories, sweep stale
    /// temporary files, abort stale multipart uploads. Not called by `sluice validate`,
    /// so building a sink must have no side effects; this is where they go.
    func start() async throws

    /// Releases what the sink holds (closes active files) after the last upload.
    func stop() async
}

extension Sink {
    public func start() async throws {}
    public func stop() async {}
}

/// A sink that can commit in two phases, so a ``Sink`` such as `tee` can make
/// several sinks all-or-nothing: every branch prepares (writes everything to a
/// temporary place), and only when all succeeded does each commit.
///
/// Implementation requirements:
/// - `prepare` consumes the body and leaves nothing visible at the final location.
/// - `commit()` makes the object visible (a rename, CompleteMultipartUpload) and
///   should be cheap and unlikely to fail.
/// - `abort()` removes everything `prepare` wrote; it must not throw.
/// - Exactly one of `commit()` or `abort()` is called on a prepared object.
public protocol PreparingSink: Sink {
    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject
}

/// An upload fully written by a ``PreparingSink`` but not yet visible.
public protocol PreparedObject: Sendable {
    /// Makes the object visible and returns its receipt.
    func commit() async throws -> SinkReceipt
    /// Removes the prepared data.
    func abort() async
}

extension PreparingSink {
    /// Prepares, then commits; aborts if the commit fails.
    public func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        let prepared = try await prepare(body, context: context)
        do {
            return try await prepared.commit()
        } catch {
            await prepared.abort()
            throw error
        }
    }
}
