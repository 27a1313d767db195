import Foundation
import SluiceCore

/// The `disk` sink: one file per upload under a root directory (R-K1, R-K5, R-X1).
///
/// Each upload is streamed to a temporary file in `<root>/.sluice-tmp/` (the same
/// filesystem as its destination) and linked or renamed into place only after the body ended
/// without error, so a reader of the root never sees a partial file.
///
/// Keys:
/// - `root` (path, required): the directory files are stored under; created at start.
/// - `name` (name template, default `{name}`): the file's path relative to `root`;
///   may contain `/` (subdirectories). See ``NameTemplate`` for the placeholders.
/// - `fsync` (bool, default `false`): fsync the file and its directory before the
///   receipt is sent, so a receipt means durable.
/// - `on_conflict` (`fail` | `overwrite` | `unique`, default `fail`): what to do when
///   the name exists: refuse with `conflict` (HTTP 409), replace it atomically, or
///   store as `name-1.ext`, `name-2.ext`, ….
/// - `create_directories` (bool, default `true`): create subdirectories that a
///   rendered name needs; when `false`, a missing directory refuses the upload.
/// - `file_mode` (octal string, default none): permissions of stored files, such as
///   `"0640"`; without it files get `0666` minus the process umask.
/// - `memory_buffer` (size, default `64KiB`): an upload is gathered in memory up to
///   this size; one that ends within it is written with a single create-write-close,
///   and holds no file descriptor while it arrives. Larger uploads stream into their
///   temporary file from there on, and so does one that declares a larger size (an HTTP
///   `Content-Length`) from its first byte, or whose bytes already waiting in the socket
///   take it past this size when its first chunk arrives (a fast `tcp` sender). `0` opens
///   the file at the first byte.
/// - `inline_writes` (duration, default `20ms`): writes to the temporary file run on
///   the connection's own event-loop thread (no hand-off to a disk thread, like nginx)
///   while each takes less than this; a slower one (the kernel throttling writers, a
///   busy disk) moves the sink's writes to its disk threads for a second, doubling up to a
///   minute while writes stay slow. `0s`: always
///   on the disk threads — for file systems that can hang, such as NFS.
/// - `preallocate` (bool, default `true`): allocate a streamed file's blocks ahead of its
///   writes with `fallocate(2)` (the size it shows stays what was written), in growing
///   steps once the file passes 128 KiB, never past a declared size (an HTTP
///   `Content-Length`), the unused part released at the end. Less kernel work per byte
///   written on ext4 and XFS; file systems that cannot are left to allocate as they write.
///
/// An upload that declares a size larger than the file system's free space is refused
/// with `insufficient_storage` (HTTP 507) before its body is read (checked, not reserved:
/// a client that declares much and sends slowly holds no space it did not fill).
///
/// ```yaml
/// sink:
///   type: disk
///   root: /var/lib/sluice/uploads
///   name: "{date}/{name}"
///   on_conflict: unique
///   fsync: true
/// ```
public enum DiskSinkPlugin: SinkPlugin {
    public static let type = "disk"
    public static let summary = "One file per upload under a root directory, written to a temporary file and linked or renamed into place."

    public static let keys: [ConfigKey] = [
        ConfigKey("root", "path", "Directory the files are stored under; created (with .sluice-tmp/ for temporary files) when the server starts."),
        ConfigKey("name", "name template", default: Configuration.defaultName.text,
                  "Path of the stored file relative to root; may contain \"/\". Placeholders: {name}, {stem}, {ext}, {date}, {time}, {datetime}, {uuid}, {listener}, {pipeline}, {route}, {remote}, {sha256}…"),
        ConfigKey("fsync", "bool", default: "\(Configuration.defaultFsync)", "Fsync the file and its directory before the receipt is sent: a receipt then means durable."),
        ConfigKey("on_conflict", "fail | overwrite | unique", default: Configuration.defaultOnConflict.rawValue,
                  "When the name exists: refuse the upload (conflict, HTTP 409), replace the file atomically, or store as name-1.ext, name-2.ext…"),
        ConfigKey("create_directories", "bool", default: "\(Configuration.defaultCreateDirectories)", "Create the subdirectories a rendered name needs; when false a missing directory refuses the upload."),
        ConfigKey("file_mode", "octal string", default: "none", "Permissions of stored files, such as \"0640\"; without it 0666 minus the umask."),
        ConfigKey("inline_writes", "duration", default: "\(Configuration.defaultInlineWrites)",
                  "Writes run on the connection's own event-loop thread (no hand-off to a disk thread) while each takes less than this; a slower one moves the sink's writes to its disk threads for 1s, doubling up to 1m while writes stay slow. 0s: always on the disk threads (for file systems that can hang, such as NFS)."),
        ConfigKey("memory_buffer", "size", default: "\(Configuration.defaultMemoryBuffer)",
                  "Uploads are gathered in memory up to this size: one that ends within it is written with a single create-write-close and holds no file descriptor while it arrives; larger ones stream into a temporary file (from the first byte when they declare a larger size, as an HTTP Content-Length does, or when the bytes already waiting in the socket behind the first chunk take them past it). 0 opens the file at the first byte."),
        ConfigKey("preallocate", "bool", default: "\(Configuration.defaultPreallocate)",
                  "Allocate a streamed file's blocks ahead of its writes (fallocate; the size shown stays what was written), in growing steps once it passes 128KiB, never past a declared size (HTTP Content-Length); the unused part is released at the end. (A declared size larger than the free space is refused with 507 before the body is read, either way.)"),
    ]

    /// What to do when the rendered name already exists.
    public enum ConflictPolicy: String, Sendable, CaseIterable, Decodable {
        /// Refuse the upload with ``SluiceError/Code/conflict``.
        case fail
        /// Replace the existing file atomically.
        case overwrite
        /// Store under the first free name of `name-1.ext`, `name-2.ext`, ….
        case unique

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let value = ConflictPolicy(rawValue: text) else {
                let known = Self.allCases.map(\.rawValue).joined(separator: ", ")
                throw decoder.configIssue(nil, "expected one of \(known); got \"\(text)\"")
            }
            self = value
        }
    }

    /// The `disk` sink's configuration.
    public struct Configuration: Decodable, Sendable {
        // A literal that parses: the initializer only throws for malformed templates.
        public static let defaultName: NameTemplate = {
            do { return try NameTemplate("{name}") } catch { preconditionFailure("\(error)") }
        }()
        public static let defaultFsync = false
        public static let defaultOnConflict = ConflictPolicy.fail
        public static let defaultCreateDirectories = true
        public static let defaultMemoryBuffer = ByteSize.kibibytes(64)
        public static let defaultInlineWrites = ConfigDuration.milliseconds(20)
        public static let defaultPreallocate = true
        /// Larger values would hold too much per upload in memory.
        public static let maxMemoryBuffer = ByteSize.mebibytes(16)

        public var root: String
        public var name: NameTemplate
        public var fsync: Bool
        public var onConflict: ConflictPolicy
        public var createDirectories: Bool
        /// Permission bits for stored files, or `nil` for `0666` minus the umask.
        public var fileMode: UInt32?
        /// How much of an upload is gathered in memory before its temporary file is opened.
        public var memoryBuffer: ByteSize
        /// The longest a write may take on an event loop before writes move to the disk threads; zero: never inline.
        public var inlineWrites: ConfigDuration
        /// Whether streamed files get their blocks allocated ahead of the writes (see `Reservation`).
        public var preallocate: Bool

        public init(
            root: String,
            name: NameTemplate = Configuration.defaultName,
            fsync: Bool = Configuration.defaultFsync,
            onConflict: ConflictPolicy = Configuration.defaultOnConflict,
            createDirectories: Bool = Configuration.defaultCreateDirectories,
            fileMode: UInt32? = nil,
            memoryBuffer: ByteSize = Configuration.defaultMemoryBuffer,
            inlineWrites: ConfigDuration = Configuration.defaultInlineWrites,
            preallocate: Bool = Configuration.defaultPreallocate
        ) {
            self.root = root
            self.name = name
            self.fsync = fsync
            self.onConflict = onConflict
            self.createDirectories = createDirectories
            self.fileMode = fileMode
            self.memoryBuffer = memoryBuffer
            self.inlineWrites = inlineWrites
            self.preallocate = preallocate
        }

        enum CodingKeys: String, CodingKey {
            case root, name, fsync
            case onConflict = "on_conflict"
            case createDirectories = "create_directories"
            case fileMode = "file_mode"
            case memoryBuffer = "memory_buffer"
            case inlineWrites = "inline_writes"
            case preallocate
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.root = try c.decode(String.self, forKey: .root)
            guard !root.isEmpty else { throw decoder.configIssue("root", "must not be empty") }
            self.name = try c.decode(NameTemplate.self, forKey: .name, default: Self.defaultName)
            if let problem = Self.problem(with: name) {
                throw decoder.configIssue("name", problem)
            }
            self.fsync = try c.decode(Bool.self, forKey: .fsync, default: Self.defaultFsync)
            self.onConflict = try c.decode(ConflictPolicy.self, forKey: .onConflict, default: Self.defaultOnConflict)
            self.createDirectories = try c.decode(Bool.self, forKey: .createDirectories, default: Self.defaultCreateDirectories)
            if let text = try c.decodeIfPresent(String.self, forKey: .fileMode) {
                let digits = text.hasPrefix("0o") ? String(text.dropFirst(2)) : text
                guard let mode = UInt32(digits, radix: 8), mode <= 0o7777 else {
                    throw decoder.configIssue("file_mode", "expected an octal mode like \"0640\", got \"\(text)\"")
                }
                self.fileMode = mode
            } else {
                self.fileMode = nil
            }
            self.memoryBuffer = try c.decode(ByteSize.self, forKey: .memoryBuffer, default: Self.defaultMemoryBuffer)
            guard memoryBuffer.bytes <= Self.maxMemoryBuffer.bytes else {
                throw decoder.configIssue("memory_buffer", "must be at most \(Self.maxMemoryBuffer), got \(memoryBuffer)")
            }
            self.inlineWrites = try c.decode(ConfigDuration.self, forKey: .inlineWrites, default: Self.defaultInlineWrites)
            guard inlineWrites.duration >= .zero else { throw decoder.configIssue("inline_writes", "must not be negative") }
            self.preallocate = try c.decode(Bool.self, forKey: .preallocate, default: Self.defaultPreallocate)
        }

        /// Why `template` can never produce a safe name, or `nil` if it can: rendered
        /// for a sample upload, it must pass ``UploadName/sanitize(_:)`` and must not
        /// point into the temporary directory.
        static func problem(with template: NameTemplate) -> String? {
            let metadata = UploadMetadata(name: "sample.bin", listener: "listener", route: "route", remoteAddress: "127.0.0.1")
            let context = UploadContext(metadata: metadata, pipeline: "pipeline", logger: .init(label: "sluice.validate"))
            for algorithm in DigestAlgorithm.allCases {
                context.recordDigest(Array(repeating: 0, count: 4), algorithm: algorithm)
            }
            do {
                let rendered = try template.render(context)
                if DiskSink.isReserved(rendered) {
                    return "\"\(template.text)\" names a file inside \(DiskSink.tempDirectoryName)/, which is reserved for temporary files"
                }
                return nil
            } catch let error as SluiceError {
                return "\"\(template.text)\" does not make a safe relative name: \(error.message)"
            } catch {
                return "\"\(template.text)\": \(error)"
            }
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        DiskSink(configuration: configuration, logger: environment.logger)
    }
}
