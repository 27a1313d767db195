import NIOCore
import SluiceCore

/// `hash`: records a digest of the bytes at its position in the pipeline.
///
/// Keys:
/// - algorithm (string, default sha256): sha256, sha1, md5 or crc32.
/// - label (string, default the algorithm name): the receipt key, `digests[label]`.
/// - verify (bool, default true): when this is the pipeline's first stage, it checks
///   the client's digest for the same algorithm itself (from the digest it computes
///   anyway) instead of the pipeline hashing the body a second time. A mismatch fails
///   the upload with `digest_mismatch` and nothing is committed. Client digests are
///   always verified; this only decides who does it.
/// - sidecar (bool, default false): asks the sink to write `NAME.<algorithm>` next to
///   the object, in `sha256sum -c` format (sinks that store files honour it).
///
/// Before `compress` it records the content's digest; after it, the stored bytes'.
///
/// ```yaml
/// stages:
///   - type: hash                 # content sha256, checked against the client's
///     sidecar: true
///   - type: compress
///   - type: hash                 # digest of the stored .gz
///     label: stored_sha256
/// ```
public enum HashPlugin: StagePlugin {
    public static let type = "hash"
    public static let summary = "Records a digest (sha256, sha1, md5, crc32) of the bytes at its position; verifies client digests; sidecar files."

    public static let keys: [ConfigKey] = [
        ConfigKey("algorithm", "string", default: Configuration.defaultAlgorithm.rawValue, "sha256, sha1, md5 or crc32."),
        ConfigKey("label", "string", default: "the algorithm", "Receipt key of the digest (digests[label])."),
        ConfigKey("verify", "bool", default: "\(Configuration.defaultVerify)", "As the first stage, check the client's digest of this algorithm here (mismatch: digest_mismatch, nothing stored) instead of hashing twice."),
        ConfigKey("sidecar", "bool", default: "\(Configuration.defaultSidecar)", "Ask the sink to write NAME.<algorithm> in `sha256sum -c` format next to the object."),
    ]

    /// The `hash` stage's configuration.
    public struct Configuration: Decodable, Sendable {
        public static let defaultAlgorithm = DigestAlgorithm.sha256
        public static let defaultVerify = true
        public static let defaultSidecar = false

        /// `algorithm`: the digest to compute.
        public var algorithm: DigestAlgorithm
        /// `label`: the receipt key; `nil` means the algorithm's name.
        public var label: String?
        /// `verify`: as the first stage, check the client's digest here.
        public var verify: Bool
        /// `sidecar`: ask the sink for a `NAME.<algorithm>` file.
        public var sidecar: Bool

        public init(algorithm: DigestAlgorithm = defaultAlgorithm, label: String? = nil, verify: Bool = defaultVerify, sidecar: Bool = defaultSidecar) {
            self.algorithm = algorithm
            self.label = label
            self.verify = verify
            self.sidecar = sidecar
        }

        enum CodingKeys: String, CodingKey { case algorithm, label, verify, sidecar }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let name = try c.decode(String.self, forKey: .algorithm, default: Self.defaultAlgorithm.rawValue)
            guard let algorithm = DigestAlgorithm(rawValue: name.lowercased()) else {
                let known = DigestAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")
                throw decoder.configIssue("algorithm", "expected one of \(known), got \"\(name)\"")
            }
            let label = try c.decodeIfPresent(String.self, forKey: .label)
            if let label {
                guard !label.isEmpty, label.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }) else {
                    throw decoder.configIssue("label", "expected letters, digits, \"_\", \"-\" or \".\", got \"\(label)\"")
                }
            }
            self.init(
                algorithm: algorithm,
                label: label,
                verify: try c.decode(Bool.self, forKey: .verify, default: Self.defaultVerify),
                sidecar: try c.decode(Bool.self, forKey: .sidecar, default: Self.defaultSidecar)
            )
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage {
        // Only a pipeline's first stage sees the bytes as the client sent them (and only
        // that stage's claim is honoured by the pipeline). Path pipelines.NAME.stages[0];
        // a stage inside a tee branch is never first. Built in code (no path), the
        // caller decides with HashStage(_:isFirstStage:).
        let path = environment.path
        let isFirst = path.isEmpty || (path.count == 4 && path[0] == .key("pipelines") && path[2] == .key("stages") && path[3] == .index(0))
        return HashStage(configuration, isFirstStage: isFirst)
    }
}

/// Hashes each upload's body as it streams, recording the digest in the upload's context.
public struct HashStage: Stage {
    /// The digest computed.
    public let algorithm: DigestAlgorithm
    /// The receipt key the digest is recorded under.
    public let label: String
    /// Whether this stage checks the client's digest itself.
    public let verifies: Bool
    /// Whether the sink is asked for a `NAME.<algorithm>` sidecar file.
    public let sidecar: Bool

    /// - Parameters:
    ///   - configuration: The stage's settings.
    ///   - isFirstStage: Whether the stage is first in its pipeline, so it sees the
    ///     client's bytes; only then does `verify` apply.
    public init(_ configuration: HashPlugin.Configuration, isFirstStage: Bool) {
        self.algorithm = configuration.algorithm
        self.label = configuration.label ?? configuration.algorithm.rawValue
        self.verifies = configuration.verify && isFirstStage
        self.sidecar = configuration.sidecar
    }

    public var verifiesClientDigests: Set<DigestAlgorithm> {
        verifies ? [algorithm] : []
    }

    public func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        let algorithm = self.algorithm
        let label = self.label
        let sidecar = self.sidecar
        let expected = verifies ? context.metadata.expectedDigests.filter { $0.algorithm == algorithm } : []
        // The bytes pass on unchanged: their length stays known.
        return body.transformed {
            HashTransform(computer: algorithm.makeComputer(), label: label, sidecar: sidecar, expected: expected, context: context)
        }.declaringLength(body.length)
    }
}

/// Feeds each chunk's bytes to the digest in place (no copy) and passes the chunk on.
struct HashTransform: ChunkTransform {
    var computer: DigestComputer
    let label: String
    let sidecar: Bool
    let expected: [ExpectedDigest]
    let context: UploadContext

    mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
        chunk.withUnsafeReadableBytes { computer.update(bytes: $0) }
        return chunk
    }

    mutating func finish() throws -> ByteBuffer? {
        let digest = computer.finalize()
        for claim in expected where claim.bytes != digest {
            throw SluiceError(
                .digestMismatch,
                "\(claim.algorithm) of the body is \(Hex.encode(digest)) but \(claim.source) says \(Hex.encode(claim.bytes))"
            )
        }
        context.recordDigest(digest, algorithm: computer.algorithm, label: label)
        if sidecar { context.requestSidecar(computer.algorithm) }
        return nil
    }
}
