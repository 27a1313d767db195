import Logging
import Synchronization

/// Per-upload state shared by the pipeline, its stages and its sink.
///
/// Stages record facts here (a digest, a byte count) as the body streams; the sink
/// reads the metadata for naming and may read facts after the body ended (a digest
/// is known only then). The pipeline turns the facts into the ``Receipt``.
public final class UploadContext: Sendable {
    /// What the receiver knew about the upload.
    public let metadata: UploadMetadata
    /// The pipeline processing the upload.
    public let pipeline: String
    /// A logger with the upload's id, name and listener attached (made on first use:
    /// attaching metadata costs, and most uploads never log through it).
    public var logger: Logger {
        attachedLogger.withLock { attached in
            if let attached { return attached }
            var logger = baseLogger
            logger.handler.metadata.merge(Self.logMetadata(metadata)) { _, new in new }
            attached = logger
            return logger
        }
    }
    /// The logger the pipeline passed, without the upload's metadata.
    let baseLogger: Logger
    private let attachedLogger = Mutex<Logger?>(nil)

    /// The upload's id, name and listener as log metadata.
    static func logMetadata(_ metadata: UploadMetadata) -> Logger.Metadata {
        [
            "upload": "\(metadata.id.uuidString.prefix(8))",
            "name": "\(metadata.name)",
            "listener": "\(metadata.listener)",
        ]
    }

    private struct Facts {
        var digests: [(label: String, algorithm: DigestAlgorithm, hex: String)] = []
        var bytesReceived: Int64 = 0
        var sidecars: [DigestAlgorithm] = []
    }
    private let facts = Mutex(Facts())

    public init(metadata: UploadMetadata, pipeline: String, logger: Logger) {
        self.metadata = metadata
        self.pipeline = pipeline
        self.baseLogger = logger
    }

    /// Records a digest under `label` (for example `sha256`, or `stored_sha256`).
    ///
    /// If `label` is already taken by another digest, `_2`, `_3`… is appended, so
    /// two hash stages of the same algorithm both show up in the receipt.
    @discardableResult
    public func recordDigest(_ bytes: [UInt8], algorithm: DigestAlgorithm, label: String? = nil) -> String {
        let hex = Hex.encode(bytes)
        return facts.withLock { facts in
            let base = label ?? algorithm.rawValue
            var candidate = base
            var n = 2
            while facts.digests.contains(where: { $0.label == candidate }) {
                candidate = "\(base)_\(n)"
                n += 1
            }
            facts.digests.append((candidate, algorithm, hex))
            return candidate
        }
    }

    /// Digests recorded so far, in the order they were recorded.
    public var digests: [(label: String, algorithm: DigestAlgorithm, hex: String)] {
        facts.withLock { $0.digests }
    }

    /// The hex digest recorded first for `algorithm`, if any.
    public func digest(_ algorithm: DigestAlgorithm) -> String? {
        facts.withLock { $0.digests.first { $0.algorithm == algorithm }?.hex }
    }

    /// Asks the sink to write a checksum file next to the object (`NAME.sha256` in
    /// `sha256sum -c` format) holding the first digest recorded for `algorithm`.
    ///
    /// Sinks that store files (`disk`) honour it; others record it in the receipt only.
    public func requestSidecar(_ algorithm: DigestAlgorithm) {
        facts.withLock { if !$0.sidecars.contains(algorithm) { $0.sidecars.append(algorithm) } }
    }

    /// Sidecar files requested so far, with their digests (hex), in request order.
    public var sidecars: [(algorithm: DigestAlgorithm, hex: String)] {
        facts.withLock { facts in
            facts.sidecars.compactMap { algorithm in
                facts.digests.first { $0.algorithm == algorithm }.map { (algorithm, $0.hex) }
            }
        }
    }

    /// Bytes read from the client so far.
    public var bytesReceived: Int64 { facts.withLock { $0.bytesReceived } }

    func addReceived(_ n: Int) {
        facts.withLock { $0.bytesReceived += Int64(n) }
    }
}
