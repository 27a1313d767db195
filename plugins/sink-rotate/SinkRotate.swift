import Foundation
import SluiceCore

/// The `rotate` sink: appends records and streams to one active file per rendered
/// path, rotating it by size and/or age, keeping the newest rotated files.
///
/// Keys:
/// - `path` (template, required): the active file, relative to `root`
///   (`app.log`, `{listener}.log`, `{date}/app.log`); rendered per upload.
/// - `root` (path, required): the directory everything lives under.
/// - `max_size` (size, none): rotate before a write would take the active file past this.
/// - `max_age` (duration, none): rotate once the active file is this old.
/// - `keep` (int, 10): how many rotated files to keep per active file.
/// - `max_total` (size, none): the most bytes the rotated files of one active file may take.
/// - `naming` (`numbered` | `timestamp`, `numbered`): `app.log.1` (newest) … `app.log.N`,
///   or `app.log.20261126T165407.123Z` (rotation time, UTC; names sort by age).
/// - `compress_rotated` (bool, false): gzip rotated files in the background (`app.log.1.gz`).
/// - `compress_level` (int, 6): zlib level for `compress_rotated`.
/// - `fsync` (`never` | `rotate` | `interval` | `every_chunk`, `interval`): when data is made durable.
/// - `fsync_interval` (duration, 1s): the period of `fsync: interval`.
///
/// Records (`mode: records` uploads, such as `tcp` with `framing: lines`) are appended
/// chunk by chunk; each chunk is written in one call under the file's writer, so
/// records from concurrent senders never interleave. Objects (streams) are staged in an
/// unlinked temporary file and appended as one unit once complete, so a failed or
/// cancelled stream leaves nothing behind and a slow sender never blocks the others.
public enum SinkRotate: SinkPlugin {
    public static let type = "rotate"
    public static let summary = "Appends records and streams to rotating files (by size and/or age), optionally gzipping rotated files."

    /// How rotated files are named.
    public enum Naming: String, Sendable, CaseIterable {
        /// `app.log.1` is the newest; older files shift up on each rotation.
        case numbered
        /// `app.log.20261126T165407.123Z`: the rotation time; names never change.
        case timestamp
    }

    /// When written data is flushed to stable storage.
    public enum FsyncPolicy: String, Sendable, CaseIterable {
        /// Never: the kernel writes back when it likes.
        case never
        /// When a file is rotated or closed.
        case rotate
        /// As `rotate`, and every `fsync_interval` while data is being written.
        case interval
        /// After every write (writes from concurrent uploads are fsynced together):
        /// an upload's receipt means its records are durable.
        case everyChunk = "every_chunk"
    }

    public struct Configuration: Decodable, Sendable {
        public static let defaultKeep = 10
        public static let defaultNaming = Naming.numbered
        public static let defaultCompressRotated = false
        public static let defaultCompressLevel = 6
        public static let defaultFsync = FsyncPolicy.interval
        public static let defaultFsyncInterval = ConfigDuration.seconds(1)

        public var path: NameTemplate
        public var root: String
        public var maxSize: ByteSize?
        public var maxAge: ConfigDuration?
        public var keep: Int
        public var maxTotal: ByteSize?
        public var naming: Naming
        public var compressRotated: Bool
        public var compressLevel: Int
        public var fsync: FsyncPolicy
        public var fsyncInterval: ConfigDuration

        public init(
            path: NameTemplate,
            root: String,
            maxSize: ByteSize? = nil,
            maxAge: ConfigDuration? = nil,
            keep: Int = Self.defaultKeep,
            maxTotal: ByteSize? = nil,
            naming: Naming = Self.defaultNaming,
            compressRotated: Bool = Self.defaultCompressRotated,
            compressLevel: Int = Self.defaultCompressLevel,
            fsync: FsyncPolicy = Self.defaultFsync,
            fsyncInterval: ConfigDuration = Self.defaultFsyncInterval
        ) {
            self.path = path
            self.root = root
            self.maxSize = maxSize
            self.maxAge = maxAge
            self.keep = keep
            self.maxTotal = maxTotal
            self.naming = naming
            self.compressRotated = compressRotated
            self.compressLevel = compressLevel
            self.fsync = fsync
            self.fsyncInterval = fsyncInterval
        }

        enum CodingKeys: String, CodingKey {
            case path, root, keep, naming, fsync
            case maxSize = "max_size"
            case maxAge = "max_age"
            case maxTotal = "max_total"
            case compressRotated = "compress_rotated"
            case compressLevel = "compress_level"
            case fsyncInterval = "fsync_interval"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            path = try c.decode(NameTemplate.self, forKey: .path)
            root = try c.decode(String.self, forKey: .root)
            maxSize = try c.decodeIfPresent(ByteSize.self, forKey: .maxSize)
            maxAge = try c.decodeIfPresent(ConfigDuration.self, forKey: .maxAge)
            keep = try c.decode(Int.self, forKey: .keep, default: Self.defaultKeep)
            maxTotal = try c.decodeIfPresent(ByteSize.self, forKey: .maxTotal)
            compressRotated = try c.decode(Bool.self, forKey: .compressRotated, default: Self.defaultCompressRotated)
            compressLevel = try c.decode(Int.self, forKey: .compressLevel, default: Self.defaultCompressLevel)
            fsyncInterval = try c.decode(ConfigDuration.self, forKey: .fsyncInterval, default: Self.defaultFsyncInterval)

            let namingText = try c.decode(String.self, forKey: .naming, default: Self.defaultNaming.rawValue)
            guard let naming = Naming(rawValue: namingText) else {
                throw decoder.configIssue("naming", "expected one of \(Naming.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(namingText)\"")
            }
            self.naming = naming
            let fsyncText = try c.decode(String.self, forKey: .fsync, default: Self.defaultFsync.rawValue)
            guard let fsync = FsyncPolicy(rawValue: fsyncText) else {
                throw decoder.configIssue("fsync", "expected one of \(FsyncPolicy.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(fsyncText)\"")
            }
            self.fsync = fsync

            if root.isEmpty { throw decoder.configIssue("root", "must not be empty") }
            if let maxSize, maxSize.bytes <= 0 { throw decoder.configIssue("max_size", "must be more than 0 bytes") }
            if let maxAge, maxAge.duration <= .zero { throw decoder.configIssue("max_age", "must be longer than 0s") }
            if keep < 0 { throw decoder.configIssue("keep", "must be 0 or more") }
            if let maxTotal, maxTotal.bytes <= 0 { throw decoder.configIssue("max_total", "must be more than 0 bytes") }
            if !(0...9).contains(compressLevel) { throw decoder.configIssue("compress_level", "must be 0…9, got \(compressLevel)") }
            if fsyncInterval.duration <= .zero { throw decoder.configIssue("fsync_interval", "must be longer than 0s") }
            if path.usedPlaceholders.isEmpty {
                do {
                    let fixed = try UploadName.sanitize(path.text)
                    if fixed.split(separator: "/").contains(where: { $0.hasPrefix(".") }) {
                        throw decoder.configIssue("path", "components starting with \".\" are reserved for the sink's own files")
                    }
                } catch let error as SluiceError {
                    throw decoder.configIssue("path", error.message)
                }
            }
            if let digest = path.usedPlaceholders.first(where: { DigestAlgorithm(rawValue: $0) != nil }) {
                throw decoder.configIssue("path", "{\(digest)} is not known when an append starts; use upload facts such as {listener}, {name} or {date}")
            }
        }
    }

    public static let keys: [ConfigKey] = [
        ConfigKey("path", "template", "The active file relative to `root`, rendered per upload: `app.log`, `{listener}.log`, `{date}/{remote}.log`. Components may not start with `.` (reserved)."),
        ConfigKey("root", "path", "Directory holding the active and rotated files; created at start."),
        ConfigKey("max_size", "size", default: "none", "Rotate before a write would take the active file past this size (a chunk never spans two files)."),
        ConfigKey("max_age", "duration", default: "none", "Rotate a non-empty active file once it is this old (checked on every write and by a timer)."),
        ConfigKey("keep", "int", default: "\(Configuration.defaultKeep)", "Rotated files kept per active file; older ones are deleted (0 keeps none)."),
        ConfigKey("max_total", "size", default: "none", "Most bytes the rotated files of one active file may take; the oldest are deleted beyond it."),
        ConfigKey("naming", "numbered | timestamp", default: Configuration.defaultNaming.rawValue, "Rotated names: `app.log.1` (newest) … `app.log.N`, or `app.log.20261126T165407.123Z` (rotation time, UTC)."),
        ConfigKey("compress_rotated", "bool", default: "\(Configuration.defaultCompressRotated)", "Gzip rotated files in the background (`app.log.1.gz`); the .gz appears atomically."),
        ConfigKey("compress_level", "int", default: "\(Configuration.defaultCompressLevel)", "zlib level 0…9 for `compress_rotated`."),
        ConfigKey("fsync", "never | rotate | interval | every_chunk", default: Configuration.defaultFsync.rawValue, "When data reaches stable storage: never; when a file is rotated or closed; also every `fsync_interval`; or after every write, before the writers continue (receipts mean durable)."),
        ConfigKey("fsync_interval", "duration", default: "\(Configuration.defaultFsyncInterval)", "Period of `fsync: interval`."),
    ]

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        RotateSink(configuration: configuration, logger: environment.logger, now: environment.now)
    }
}
