import Foundation
import SluiceCore

/// The `spool` sink: Maildir delivery. Each upload is written to `tmp/`, fsynced, and
/// linked into `new/` under a unique name, so `new/` only ever holds complete files.
/// A `spool` receiver (or any Maildir-style reader) takes them from there.
///
/// Keys:
/// - `root` (path, required): the spool; `tmp/`, `new/` and `cur/` are created at start.
/// - `name` (template, `{datetime}-{uuid}`): the file name in `new/`. It must be unique
///   (keep `{uuid}`); `/` in it is stored as `%2F` (and `%` as `%25`), and the spool
///   receiver turns it back, so `{uuid}/{name}` keeps the client's name for the next hop.
/// - `fsync` (bool, true): fsync each file before delivery and `new/` after it, so a
///   receipt means the file survives a crash.
/// - `max_size` (size, none): bound on the spool (`new/` plus files being written);
///   beyond it uploads are refused with `insufficient_storage` (HTTP 507), before
///   anything is written when the client declared its length.
///
/// `spool` commits in two phases (it is a ``PreparingSink``), so it can be a `tee` branch.
public enum SinkSpool: SinkPlugin {
    public static let type = "spool"
    public static let summary = "Maildir-style spool: writes to tmp/, fsyncs, and moves complete files into new/ for a spool receiver."

    public struct Configuration: Decodable, Sendable {
        public static let defaultName = try! NameTemplate("{datetime}-{uuid}")
        public static let defaultFsync = true

        public var root: String
        public var name: NameTemplate
        public var fsync: Bool
        public var maxSize: ByteSize?

        public init(root: String, name: NameTemplate = Self.defaultName, fsync: Bool = Self.defaultFsync, maxSize: ByteSize? = nil) {
            self.root = root
            self.name = name
            self.fsync = fsync
            self.maxSize = maxSize
        }

        enum CodingKeys: String, CodingKey {
            case root, name, fsync
            case maxSize = "max_size"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            root = try c.decode(String.self, forKey: .root)
            name = try c.decode(NameTemplate.self, forKey: .name, default: Self.defaultName)
            fsync = try c.decode(Bool.self, forKey: .fsync, default: Self.defaultFsync)
            maxSize = try c.decodeIfPresent(ByteSize.self, forKey: .maxSize)
            if root.isEmpty { throw decoder.configIssue("root", "must not be empty") }
            if let maxSize, maxSize.bytes <= 0 { throw decoder.configIssue("max_size", "must be more than 0 bytes") }
        }
    }

    public static let keys: [ConfigKey] = [
        ConfigKey("root", "path", "The spool directory; `tmp/`, `new/` and `cur/` are created at start."),
        ConfigKey("name", "template", default: Configuration.defaultName.text, "File name in `new/`; must be unique (keep `{uuid}`). `/` is stored as `%2F` and restored by the spool receiver."),
        ConfigKey("fsync", "bool", default: "\(Configuration.defaultFsync)", "Fsync each file before it enters `new/`, and `new/` after: a receipt means durable."),
        ConfigKey("max_size", "size", default: "none", "Bound on the spool (`new/` plus files being written); over it uploads are refused with 507, before writing when the length is declared."),
    ]

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        SpoolSink(configuration: configuration, logger: environment.logger)
    }
}

/// How a rendered name becomes one flat, visible file name in `new/`, and back.
///
/// `%` → `%25`, `/` → `%2F`, a leading `.` → `%2E`; the spool receiver decodes it.
public enum SpoolFileName {
    public static func encode(_ name: String) -> String {
        var out = ""
        for (i, ch) in name.enumerated() {
            switch ch {
            case "%": out += "%25"
            case "/": out += "%2F"
            case "." where i == 0: out += "%2E"
            default: out.append(ch)
            }
        }
        return out
    }
}
