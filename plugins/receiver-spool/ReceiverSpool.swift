import SluiceCore

/// The `spool` receiver: forwards the files a `spool` sink delivered into `new/`
/// through a pipeline, removing (or archiving) each only after that pipeline's sink
/// committed it.
///
/// Keys:
/// - `root` (path, required): the spool (the `spool` sink's `root`); files are read from `new/`.
/// - `pipeline` (string, required): the pipeline each file goes through.
/// - `poll_interval` (duration, 1s): how often `new/` is listed when idle.
/// - `concurrency` (int, 4): files forwarded at once.
/// - `archive` (bool, false): move forwarded files to `cur/` instead of deleting them.
/// - `retry_initial` (duration, 1s), `retry_max` (duration, 60s): exponential backoff
///   while the downstream fails.
/// - `chunk_size` (size, 128KiB): read size.
///
/// Delivery is at least once: a file leaves `new/` only after the downstream committed,
/// so a crash in between sends it again on restart. The upload's name is the file's
/// name (decoded, see ``SpoolFileName`` in the spool sink), which makes it the
/// idempotency key: with a `disk` sink with `on_conflict: overwrite`, or an `s3` key
/// template using `{name}`, a re-sent file lands on the same object.
public enum ReceiverSpool: ReceiverPlugin {
    public static let type = "spool"
    public static let summary = "Forwards files from a spool's new/ through a pipeline, removing each only after it was committed; retries with backoff."

    public struct Configuration: Decodable, Sendable {
        public static let defaultPollInterval = ConfigDuration.seconds(1)
        public static let defaultConcurrency = 4
        public static let defaultArchive = false
        public static let defaultRetryInitial = ConfigDuration.seconds(1)
        public static let defaultRetryMax = ConfigDuration.seconds(60)
        public static let defaultChunkSize = ByteSize.kibibytes(128)

        public var root: String
        public var pipeline: String
        public var pollInterval: ConfigDuration
        public var concurrency: Int
        public var archive: Bool
        public var retryInitial: ConfigDuration
        public var retryMax: ConfigDuration
        public var chunkSize: ByteSize

        public init(
            root: String,
            pipeline: String,
            pollInterval: ConfigDuration = Self.defaultPollInterval,
            concurrency: Int = Self.defaultConcurrency,
            archive: Bool = Self.defaultArchive,
            retryInitial: ConfigDuration = Self.defaultRetryInitial,
            retryMax: ConfigDuration = Self.defaultRetryMax,
            chunkSize: ByteSize = Self.defaultChunkSize
        ) {
            self.root = root
            self.pipeline = pipeline
            self.pollInterval = pollInterval
            self.concurrency = concurrency
            self.archive = archive
            self.retryInitial = retryInitial
            self.retryMax = retryMax
            self.chunkSize = chunkSize
        }

        enum CodingKeys: String, CodingKey {
            case root, pipeline, concurrency, archive
            case pollInterval = "poll_interval"
            case retryInitial = "retry_initial"
            case retryMax = "retry_max"
            case chunkSize = "chunk_size"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            root = try c.decode(String.self, forKey: .root)
            pipeline = try c.decode(String.self, forKey: .pipeline)
            pollInterval = try c.decode(ConfigDuration.self, forKey: .pollInterval, default: Self.defaultPollInterval)
            concurrency = try c.decode(Int.self, forKey: .concurrency, default: Self.defaultConcurrency)
            archive = try c.decode(Bool.self, forKey: .archive, default: Self.defaultArchive)
            retryInitial = try c.decode(ConfigDuration.self, forKey: .retryInitial, default: Self.defaultRetryInitial)
            retryMax = try c.decode(ConfigDuration.self, forKey: .retryMax, default: Self.defaultRetryMax)
            chunkSize = try c.decode(ByteSize.self, forKey: .chunkSize, default: Self.defaultChunkSize)
            if root.isEmpty { throw decoder.configIssue("root", "must not be empty") }
            if pollInterval.duration <= .zero { throw decoder.configIssue("poll_interval", "must be longer than 0s") }
            if concurrency < 1 { throw decoder.configIssue("concurrency", "must be at least 1") }
            if retryInitial.duration <= .zero { throw decoder.configIssue("retry_initial", "must be longer than 0s") }
            if retryMax < retryInitial { throw decoder.configIssue("retry_max", "must be at least retry_initial (\(retryInitial))") }
            if chunkSize.bytes < 1024 || chunkSize.bytes > 64 << 20 { throw decoder.configIssue("chunk_size", "must be between 1KiB and 64MiB") }
        }
    }

    public static let keys: [ConfigKey] = [
        ConfigKey("root", "path", "The spool directory (the `spool` sink's `root`); files are taken from `new/`."),
        ConfigKey("pipeline", "string", "The pipeline each file is sent through."),
        ConfigKey("poll_interval", "duration", default: "\(Configuration.defaultPollInterval)", "How often `new/` is listed while idle (it is listed again at once while files keep coming)."),
        ConfigKey("concurrency", "int", default: "\(Configuration.defaultConcurrency)", "Files forwarded at the same time."),
        ConfigKey("archive", "bool", default: "\(Configuration.defaultArchive)", "Move forwarded files to `cur/` instead of deleting them."),
        ConfigKey("retry_initial", "duration", default: "\(Configuration.defaultRetryInitial)", "First backoff after a failed forward; doubles with each failure in a row."),
        ConfigKey("retry_max", "duration", default: "\(Configuration.defaultRetryMax)", "Longest backoff."),
        ConfigKey("chunk_size", "size", default: "\(Configuration.defaultChunkSize)", "Read size when streaming a file into the pipeline."),
    ]

    public static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver {
        let pipeline = try environment.pipeline(named: configuration.pipeline, key: "pipeline")
        return SpoolReceiver(configuration: configuration, pipeline: pipeline, environment: environment)
    }
}
