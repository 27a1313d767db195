import NIOCore
import SluiceCore

/// `compress`: zlib compression (gzip, zlib or raw deflate) on the system libz.
///
/// Keys:
/// - format (string, default gzip): gzip, zlib or deflate (raw).
/// - level (integer, default 6): 0 (store) … 9 (smallest); 1 is fastest.
/// - flush (string, default auto): none, member, sync or auto. `none` compresses the
///   whole upload as one stream. `member` makes every output chunk a complete gzip
///   member, so an appending sink's file decodes up to its last chunk (gzip only).
///   `sync` ends every chunk with a zlib sync flush. `auto` is `member` for
///   ``UploadMode/records`` uploads (`sync` for zlib and deflate) and `none` otherwise.
///
/// ```yaml
/// stages:
///   - type: compress
///     format: gzip
///     level: 6
/// ```
public enum CompressPlugin: StagePlugin {
    public static let type = "compress"
    public static let summary = "Compresses the body with zlib (gzip, zlib or raw deflate) on the system libz."

    public static let keys: [ConfigKey] = [
        ConfigKey("format", "string", default: Configuration.defaultFormat.rawValue, "Container: gzip, zlib or deflate (raw)."),
        ConfigKey("level", "integer", default: "\(Configuration.defaultLevel)", "Compression level 0 (store) … 9 (smallest); 1 is fastest."),
        ConfigKey(
            "flush", "string", default: Configuration.defaultFlush.rawValue,
            "none (one stream per upload), member (every output chunk is a complete gzip member; gzip only), sync (zlib sync flush after every chunk), auto (member for record uploads — sync for zlib/deflate — none otherwise)."
        ),
    ]

    /// The `compress` stage's configuration.
    public struct Configuration: Decodable, Sendable {
        public static let defaultFormat = ZlibFormat.gzip
        public static let defaultLevel = 6
        public static let defaultFlush = CompressFlush.auto

        /// `format`: the container.
        public var format: ZlibFormat
        /// `level`: 0 (store) … 9 (smallest).
        public var level: Int
        /// `flush`: when output becomes decodable.
        public var flush: CompressFlush

        public init(format: ZlibFormat = defaultFormat, level: Int = defaultLevel, flush: CompressFlush = defaultFlush) {
            self.format = format
            self.level = level
            self.flush = flush
        }

        enum CodingKeys: String, CodingKey { case format, level, flush }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let formatName = try c.decode(String.self, forKey: .format, default: Self.defaultFormat.rawValue)
            guard let format = ZlibFormat(rawValue: formatName.lowercased()) else {
                throw decoder.configIssue("format", "expected gzip, zlib or deflate, got \"\(formatName)\"")
            }
            let level = try c.decode(Int.self, forKey: .level, default: Self.defaultLevel)
            guard (0...9).contains(level) else {
                throw decoder.configIssue("level", "expected a level from 0 to 9, got \(level)")
            }
            let flushName = try c.decode(String.self, forKey: .flush, default: Self.defaultFlush.rawValue)
            guard let flush = CompressFlush(rawValue: flushName.lowercased()) else {
                throw decoder.configIssue("flush", "expected none, member, sync or auto, got \"\(flushName)\"")
            }
            if flush == .member, format != .gzip {
                throw decoder.configIssue("flush", "member flushing writes gzip members; it needs format gzip, not \(format.rawValue)")
            }
            self.init(format: format, level: level, flush: flush)
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage {
        try CompressStage(configuration)
    }
}

/// When `compress` makes its output decodable before the end of the upload.
public enum CompressFlush: String, Sendable, CaseIterable {
    /// One compressed stream per upload; output is decodable only once complete.
    case none
    /// Every output chunk is a complete gzip member (deflate finished and reset per input chunk).
    case member
    /// A zlib sync flush after every input chunk.
    case sync
    /// `member` (gzip) or `sync` (zlib, deflate) for record uploads, `none` for objects.
    case auto
}

/// Compresses each upload's body with zlib.
///
/// Memory per upload is zlib's deflate state (about 256 KiB at the default settings)
/// plus the output of one chunk.
public struct CompressStage: Stage {
    /// The container written.
    public let format: ZlibFormat
    /// zlib's level, 0…9.
    public let level: Int
    /// The configured flush mode (see ``effectiveFlush(for:)``).
    public let flush: CompressFlush

    /// Builds the stage from its configuration (in code, or from a config file).
    ///
    /// - Throws: ``SluiceError/Code/internal`` when `level` is outside 0…9 or `member`
    ///   flushing is asked for a format other than gzip.
    public init(_ configuration: CompressPlugin.Configuration) throws {
        guard (0...9).contains(configuration.level) else {
            throw SluiceError(.internal, "compress level must be 0…9, got \(configuration.level)")
        }
        guard configuration.flush != .member || configuration.format == .gzip else {
            throw SluiceError(.internal, "compress flush member needs format gzip")
        }
        self.format = configuration.format
        self.level = configuration.level
        self.flush = configuration.flush
    }

    /// The flush mode used for an upload in `mode`.
    public func effectiveFlush(for mode: UploadMode) -> CompressFlush {
        guard flush == .auto else { return flush }
        switch mode {
        case .object: return .none
        case .records: return format == .gzip ? .member : .sync
        }
    }

    public func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        let format = self.format
        let level = self.level
        let flush = effectiveFlush(for: context.metadata.mode)
        let emptyMember = context.metadata.mode == .object
        return body.transformed {
            CompressTransform(format: format, level: level, flush: flush, emptyMemberAtEnd: emptyMember)
        }
    }
}

/// The per-upload compressor; the deflater frees zlib's state in its `deinit`,
/// also when iteration stops early.
struct CompressTransform: ChunkTransform {
    let format: ZlibFormat
    let level: Int
    let flush: CompressFlush
    /// In member mode, whether an upload with no bytes still yields one (empty) member,
    /// so an object is a valid gzip file.
    let emptyMemberAtEnd: Bool
    private var deflater: Deflater?
    private var membersWritten = 0

    init(format: ZlibFormat, level: Int, flush: CompressFlush, emptyMemberAtEnd: Bool) {
        self.format = format
        self.level = level
        self.flush = flush
        self.emptyMemberAtEnd = emptyMemberAtEnd
    }

    private mutating func compressor() throws -> Deflater {
        if let deflater { return deflater }
        let made = try Deflater(format: format, level: level)
        deflater = made
        return made
    }

    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        guard chunk.readableBytes > 0 else { return nil }
        let deflater = try compressor()
        switch flush {
        case .none, .auto:
            return try deflater.compress(chunk)
        case .sync:
            return try deflater.flush(chunk)
        case .member:
            let member = try deflater.finish(chunk)
            try deflater.reset()
            membersWritten += 1
            return member
        }
    }

    mutating func finish() throws -> ByteBuffer? {
        switch flush {
        case .member:
            guard membersWritten == 0, emptyMemberAtEnd else { return nil }
            return try compressor().finish()
        case .none, .sync, .auto:
            return try compressor().finish()
        }
    }
}
