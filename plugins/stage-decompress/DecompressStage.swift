import NIOCore
import SluiceCore

/// `decompress`: zlib decompression (gzip, zlib, raw deflate, or sniffed) on the system libz.
///
/// Keys:
/// - format (string, default gzip): gzip, zlib, deflate (raw) or auto. `auto` reads the
///   first two bytes: the gzip magic means gzip, a valid zlib header means zlib,
///   anything else is taken as raw deflate.
/// - max_output_size (size, default 10GiB): the most decompressed bytes accepted per
///   upload; more fails the upload with `payload_too_large` (compression bombs).
///
/// Concatenated gzip members decode as one stream, as `gzip -d` does. Corrupt or
/// truncated input (including an empty upload) fails with `corrupt_input`, and the
/// sink commits nothing. Output comes in pieces of at most 64 KiB, however well the
/// input compresses. For record uploads every piece ends after a newline (the start
/// of the next record waits for the next piece; a record over 1 MiB is passed on in
/// pieces), so an appending sink never interleaves records.
///
/// ```yaml
/// stages:
///   - type: decompress
///     format: auto
///     max_output_size: 1GiB
/// ```
public enum DecompressPlugin: StagePlugin {
    public static let type = "decompress"
    public static let summary = "Decompresses a gzip, zlib or raw deflate body (bounded output per chunk and per upload)."

    public static let keys: [ConfigKey] = [
        ConfigKey("format", "string", default: Configuration.defaultFormat.rawValue, "gzip, zlib, deflate (raw) or auto (sniff gzip magic or zlib header; otherwise raw deflate)."),
        ConfigKey("max_output_size", "size", default: "\(Configuration.defaultMaxOutputSize)", "Most decompressed bytes per upload; more fails with payload_too_large."),
    ]

    /// The `decompress` stage's configuration.
    public struct Configuration: Decodable, Sendable {
        public static let defaultFormat = DecompressFormat.gzip
        public static let defaultMaxOutputSize = ByteSize.gibibytes(10)

        /// `format`: the container expected, or `auto`.
        public var format: DecompressFormat
        /// `max_output_size`: the most decompressed bytes per upload.
        public var maxOutputSize: ByteSize

        public init(format: DecompressFormat = defaultFormat, maxOutputSize: ByteSize = defaultMaxOutputSize) {
            self.format = format
            self.maxOutputSize = maxOutputSize
        }

        enum CodingKeys: String, CodingKey {
            case format
            case maxOutputSize = "max_output_size"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let name = try c.decode(String.self, forKey: .format, default: Self.defaultFormat.rawValue)
            guard let format = DecompressFormat(rawValue: name.lowercased()) else {
                throw decoder.configIssue("format", "expected gzip, zlib, deflate or auto, got \"\(name)\"")
            }
            let max = try c.decode(ByteSize.self, forKey: .maxOutputSize, default: Self.defaultMaxOutputSize)
            guard max.bytes > 0 else {
                throw decoder.configIssue("max_output_size", "must be more than 0")
            }
            self.init(format: format, maxOutputSize: max)
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage {
        DecompressStage(configuration)
    }
}

/// The container `decompress` expects.
public enum DecompressFormat: String, Sendable, CaseIterable {
    case gzip
    case zlib
    case deflate
    /// Sniffed from the first two bytes.
    case auto

    /// Picks the format for a stream starting with `first` (up to two bytes).
    public static func sniff(_ first: some Collection<UInt8>) -> ZlibFormat {
        let bytes = Array(first.prefix(2))
        guard bytes.count == 2 else { return .deflate }
        if bytes[0] == 0x1f, bytes[1] == 0x8b { return .gzip }
        // RFC 1950: CM = 8 (deflate), CINFO <= 7, and CMF*256 + FLG a multiple of 31.
        if bytes[0] & 0x0f == 8, bytes[0] >> 4 <= 7, (UInt16(bytes[0]) << 8 | UInt16(bytes[1])) % 31 == 0 { return .zlib }
        return .deflate
    }
}

/// Decompresses each upload's body, in output pieces of bounded size.
public struct DecompressStage: Stage {
    /// The largest chunk this stage yields (for records, plus the start of a record
    /// carried over from the previous piece).
    public static let outputPieceSize = 64 * 1024
    /// For record uploads, the most bytes held back waiting for the end of a record;
    /// a longer record is passed on in pieces.
    public static let maxRecordCarry = 1 << 20

    /// The container expected, or `auto`.
    public let format: DecompressFormat
    /// The most decompressed bytes per upload.
    public let maxOutputSize: ByteSize

    /// Builds the stage from its configuration.
    public init(_ configuration: DecompressPlugin.Configuration) {
        self.format = configuration.format
        self.maxOutputSize = configuration.maxOutputSize
    }

    public func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        UploadBody(InflatingBody(
            base: body, format: format, maxOutput: maxOutputSize.bytes, piece: Self.outputPieceSize,
            recordCarry: context.metadata.mode == .records ? Self.maxRecordCarry : nil
        ))
    }
}

/// One input chunk may expand to many output pieces, so this is a sequence of its
/// own rather than a one-to-one ``ChunkTransform``.
struct InflatingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: UploadBody
    let format: DecompressFormat
    let maxOutput: Int64
    let piece: Int
    /// For records: cut output after the last newline, holding back at most this many bytes.
    let recordCarry: Int?

    func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), format: format, maxOutput: maxOutput, piece: piece, recordCarry: recordCarry)
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: UploadBody.AsyncIterator
        let format: DecompressFormat
        let maxOutput: Int64
        let piece: Int
        let recordCarry: Int?
        /// Output after the last newline so far (records only).
        var carry: ByteBuffer?
        /// Created once the format is known; frees zlib's state in its `deinit`.
        var inflater: Inflater?
        /// Input not yet taken by zlib (or held back to sniff the format).
        var pending = ByteBuffer()
        /// The base body ended.
        var ended = false
        /// The stream was checked complete; nothing more to yield.
        var done = false

        init(base: UploadBody.AsyncIterator, format: DecompressFormat, maxOutput: Int64, piece: Int, recordCarry: Int?) {
            self.base = base
            self.format = format
            self.maxOutput = maxOutput
            self.piece = piece
            self.recordCarry = recordCarry
        }

        mutating func next() async throws -> ByteBuffer? {
            while !done {
                if let inflater, pending.readableBytes > 0 || inflater.hasPendingOutput {
                    let out = try inflater.decompress(from: &pending, maxBytes: piece)
                    guard out.readableBytes > 0 else { continue }
                    guard let recordCarry else { return out }
                    if let records = cutAtRecordEnd(out, limit: recordCarry) { return records }
                    continue
                }
                if ended {
                    done = true
                    // A stream that stops before its end is as corrupt as a bad one.
                    try inflater?.finish()
                    // The last record may lack its newline.
                    defer { carry = nil }
                    return carry
                }
                if let chunk = try await base.next() {
                    if inflater != nil || pending.readableBytes == 0 {
                        pending = chunk
                    } else {
                        pending.writeImmutableBuffer(chunk)
                    }
                    if inflater == nil, pending.readableBytes >= 2 { try start() }
                } else {
                    ended = true
                    // Fewer than two bytes in all: let zlib judge them.
                    if inflater == nil { try start() }
                }
            }
            return nil
        }

        /// Record uploads: returns the output up to its last newline and keeps the
        /// rest for the next piece, so every chunk ends on a record boundary (unless a
        /// record outgrows `limit`, which is then passed on as it is).
        private mutating func cutAtRecordEnd(_ out: ByteBuffer, limit: Int) -> ByteBuffer? {
            var combined: ByteBuffer
            if var held = carry {
                held.writeImmutableBuffer(out)
                combined = held
                carry = nil
            } else {
                combined = out
            }
            guard let newline = combined.readableBytesView.lastIndex(of: UInt8(ascii: "\n")) else {
                if combined.readableBytes >= limit { return combined }
                carry = combined
                return nil
            }
            let records = combined.readSlice(length: newline - combined.readerIndex + 1)!
            if combined.readableBytes > 0 { carry = combined }
            return records
        }

        private mutating func start() throws {
            let chosen: ZlibFormat = switch format {
            case .gzip: .gzip
            case .zlib: .zlib
            case .deflate: .deflate
            case .auto: DecompressFormat.sniff(pending.readableBytesView)
            }
            inflater = try Inflater(format: chosen, maxOutput: maxOutput, outputChunk: piece)
        }
    }
}
