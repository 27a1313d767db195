import SluiceCore

/// The `tcp` receiver: the classic protocol, `cat file | nc -N host port` (R-R1, R-R5).
///
/// One connection is one upload. It is committed when the client closes its write
/// side cleanly (EOF); the server then writes one JSON receipt line and closes. A
/// reset, an idle timeout or an error discards the upload. A connection that closes
/// without sending a byte (a load balancer's health check) is not an upload.
///
/// Keys:
/// - `listen` (address, required): `host:port` to listen on; port 0 picks a free port.
/// - `pipeline` (string, required): the pipeline uploads go through.
/// - `framing` (`stream` | `lines`, default `stream`): `stream` makes each connection
///   one object; `lines` makes it a run of newline-delimited records (log senders) that
///   are never split between chunks, so appending sinks never interleave records.
/// - `name` (name template, default `{listener}-{datetime}-{uuid}`): the upload's name
///   (the sink's own template, `{name}` by default, turns it into a path).
/// - `max_connections` (integer, default 10000): open connections allowed; one more is
///   accepted and closed at once, with a warning.
/// - `max_concurrent_uploads` (integer, default 256): uploads processed at once.
/// - `max_queued_uploads` (integer, default 1024): uploads waiting for a slot; one more
///   is refused at once with an `overloaded` error line.
/// - `queue_timeout` (duration, default 30s): how long an upload waits for a slot
///   before it is refused with an `overloaded` error line.
/// - `max_upload_size` (size, default 10GiB): larger uploads are refused
///   (`payload_too_large`) and nothing is stored.
/// - `idle_timeout` (duration, default 60s): a connection that sends nothing for this
///   long while the server is ready to read is closed and its upload discarded.
/// - `receipt` (bool, default true): write the JSON receipt line (or a JSON error line)
///   before closing.
/// - `prebuffer` (size, default 16KiB with `framing: stream`, 0 with `lines`): bytes a
///   connection gathers before its upload starts — takes an upload slot and enters the
///   pipeline. A connection still gathering holds no slot and no task, so thousands of
///   slow senders cost little; an upload that ends within it starts with all its bytes.
///   0 starts each upload at its first byte (`lines` does, so records reach the sink as
///   they arrive). At most 16MiB.
/// - `max_record_length` (size, default 64KiB): `lines` only: the longest record.
/// - `on_long_record` (`truncate` | `reject`, default `truncate`): `lines` only: keep the
///   first `max_record_length` bytes of a longer record (with a warning), or fail the upload.
/// - `tls` (mapping, optional): serve TLS (see ``ListenerTLS``). The upload then ends
///   with the client's TLS `close_notify` (`openssl s_client`, `socat OPENSSL:`, `ncat
///   --ssl`); a connection that ends without one (truncated) is discarded. No splicing.
///
/// ```yaml
/// listeners:
///   tcp:
///     type: tcp
///     listen: 0.0.0.0:8888
///     pipeline: default
///     max_concurrent_uploads: 100
///     queue_timeout: 10s
/// ```
public enum TCPReceiverPlugin: ReceiverPlugin {
    public static let type = "tcp"
    public static let summary = "Plain TCP: one connection is one upload (cat file | nc -N host port), committed on a clean half-close."

    public static let keys: [ConfigKey] = [
        ConfigKey("listen", "address", "host:port to listen on, such as 127.0.0.1:8888 or :8888; port 0 picks a free port."),
        ConfigKey("pipeline", "string", "The pipeline uploads from this listener go through."),
        ConfigKey("framing", "stream | lines", default: Configuration.defaultFraming.rawValue,
                  "stream: each connection is one object. lines: newline-delimited records (log senders); records are never split or interleaved."),
        ConfigKey("name", "name template", default: Configuration.defaultName.text,
                  "The upload's name; placeholders {listener}, {pipeline}, {remote}, {date}, {time}, {datetime}, {year}, {month}, {day}, {hour}, {uuid}."),
        ConfigKey("max_connections", "integer", default: "\(Configuration.defaultMaxConnections)", "Open connections allowed; one more is accepted and closed at once (logged as a warning)."),
        ConfigKey("max_concurrent_uploads", "integer", default: "\(Configuration.defaultMaxConcurrentUploads)", "Uploads processed at once; the others wait in a queue."),
        ConfigKey("max_queued_uploads", "integer", default: "\(Configuration.defaultMaxQueuedUploads)", "Uploads allowed to wait for a slot; one more is refused with an overloaded error line."),
        ConfigKey("queue_timeout", "duration", default: "\(Configuration.defaultQueueTimeout)", "How long an upload waits for a slot before it is refused with an overloaded error line."),
        ConfigKey("max_upload_size", "size", default: "\(Configuration.defaultMaxUploadSize)", "Larger uploads are refused (payload_too_large) and nothing is stored."),
        ConfigKey("idle_timeout", "duration", default: "\(Configuration.defaultIdleTimeout)", "A connection that sends nothing for this long (while the server is ready to read) is closed; its upload is discarded."),
        ConfigKey("receipt", "bool", default: "\(Configuration.defaultReceipt)", "Write one JSON receipt line after the commit (or a JSON error line on failure) before closing."),
        ConfigKey("prebuffer", "size", default: "\(Configuration.defaultPrebuffer) (stream), 0 (lines)",
                  "Bytes a connection gathers before its upload starts (takes an upload slot, enters the pipeline); a connection still gathering holds neither. 0: start at the first byte. At most \(Configuration.maxPrebuffer)."),
        ConfigKey("splice", "bool", default: "\(Configuration.defaultSplice)",
                  "framing: stream only. Past the sink's memory_buffer, move the bytes from the socket to the file in the kernel (Linux splice) when the pipeline has no stage that reads them and its sink writes files (disk): one copy instead of two. false: always read them into memory."),
        ConfigKey("max_record_length", "size", default: "\(Configuration.defaultMaxRecordLength)", "framing: lines only. The longest record, without its newline."),
        ConfigKey("on_long_record", "truncate | reject", default: Configuration.defaultOnLongRecord.rawValue,
                  "framing: lines only. truncate: keep the first max_record_length bytes and a newline (logged as a warning); reject: fail the upload."),
        ListenerTLS.configKey,
    ]

    /// How a connection's bytes are cut into an upload.
    public enum Framing: String, Sendable, CaseIterable, Decodable {
        /// The connection is one object.
        case stream
        /// The connection is newline-delimited records.
        case lines

        public init(from decoder: any Decoder) throws {
            self = try decodeChoice(decoder)
        }
    }

    /// What `lines` framing does with a record longer than `max_record_length`.
    public enum LongRecordPolicy: String, Sendable, CaseIterable, Decodable {
        /// Keep the first `max_record_length` bytes, end the record there, log a warning.
        case truncate
        /// Fail the upload.
        case reject

        public init(from decoder: any Decoder) throws {
            self = try decodeChoice(decoder)
        }
    }

    /// The `tcp` receiver's configuration.
    public struct Configuration: Decodable, Sendable {
        public static let defaultFraming = Framing.stream
        // A literal that parses: the initializer only throws for malformed templates.
        public static let defaultName: NameTemplate = {
            do { return try NameTemplate("{listener}-{datetime}-{uuid}") } catch { preconditionFailure("\(error)") }
        }()
        public static let defaultMaxConnections = 10_000
        public static let defaultMaxConcurrentUploads = 256
        public static let defaultMaxQueuedUploads = 1024
        public static let defaultQueueTimeout = ConfigDuration.seconds(30)
        public static let defaultMaxUploadSize = ByteSize.gibibytes(10)
        public static let defaultIdleTimeout = ConfigDuration.seconds(60)
        public static let defaultReceipt = true
        public static let defaultMaxRecordLength = ByteSize.kibibytes(64)
        // 16KiB: enough that a trickling client never starts an upload; measured with 256
        // uploads behind a 50 MB/s rate_limit, 16KiB left the server's RSS as without a
        // prebuffer (~75 MiB), 64KiB raised it to ~110 MiB.
        public static let defaultPrebuffer = ByteSize.kibibytes(16)
        public static let maxPrebuffer = ByteSize.mebibytes(16)
        public static let defaultOnLongRecord = LongRecordPolicy.truncate
        public static let defaultSplice = true

        /// Placeholders a receiver-side name cannot use: they are only known after the body was read,
        /// or they are the name itself.
        static let unavailablePlaceholders: Set<String> = Set(["name", "stem", "ext"]).union(DigestAlgorithm.allCases.map(\.rawValue))

        public var listen: ListenAddress
        public var pipeline: String
        public var framing: Framing
        public var name: NameTemplate
        public var maxConnections: Int
        public var maxConcurrentUploads: Int
        public var maxQueuedUploads: Int
        public var queueTimeout: ConfigDuration
        public var maxUploadSize: ByteSize
        public var idleTimeout: ConfigDuration
        public var receipt: Bool
        public var maxRecordLength: ByteSize
        public var onLongRecord: LongRecordPolicy
        /// `nil`: the framing's default (see ``effectivePrebuffer``).
        public var prebuffer: ByteSize?
        /// Whether a `stream` upload may be spliced from the socket into its file
        /// (never on a TLS listener: the socket carries ciphertext).
        public var splice: Bool
        /// TLS on this listener, if set.
        public var tls: ListenerTLS?

        /// The bytes gathered before an upload starts: `prebuffer`, or 16KiB for `stream`
        /// and 0 for `lines` (records reach the sink as they arrive).
        public var effectivePrebuffer: ByteSize {
            prebuffer ?? (framing == .lines ? ByteSize(0) : Self.defaultPrebuffer)
        }

        public init(listen: ListenAddress, pipeline: String) {
            self.listen = listen
            self.pipeline = pipeline
            self.framing = Self.defaultFraming
            self.name = Self.defaultName
            self.maxConnections = Self.defaultMaxConnections
            self.maxConcurrentUploads = Self.defaultMaxConcurrentUploads
            self.maxQueuedUploads = Self.defaultMaxQueuedUploads
            self.queueTimeout = Self.defaultQueueTimeout
            self.maxUploadSize = Self.defaultMaxUploadSize
            self.idleTimeout = Self.defaultIdleTimeout
            self.receipt = Self.defaultReceipt
            self.maxRecordLength = Self.defaultMaxRecordLength
            self.onLongRecord = Self.defaultOnLongRecord
            self.splice = Self.defaultSplice
        }

        enum CodingKeys: String, CodingKey {
            case listen, pipeline, framing, name, receipt
            case maxConnections = "max_connections"
            case maxConcurrentUploads = "max_concurrent_uploads"
            case maxQueuedUploads = "max_queued_uploads"
            case queueTimeout = "queue_timeout"
            case maxUploadSize = "max_upload_size"
            case idleTimeout = "idle_timeout"
            case maxRecordLength = "max_record_length"
            case onLongRecord = "on_long_record"
            case prebuffer, splice, tls
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.listen = try c.decode(ListenAddress.self, forKey: .listen)
            self.pipeline = try c.decode(String.self, forKey: .pipeline)
            self.framing = try c.decode(Framing.self, forKey: .framing, default: Self.defaultFraming)
            self.name = try c.decode(NameTemplate.self, forKey: .name, default: Self.defaultName)
            let unavailable = name.usedPlaceholders.intersection(Self.unavailablePlaceholders)
            if !unavailable.isEmpty {
                let list = unavailable.sorted().map { "{\($0)}" }.joined(separator: ", ")
                throw decoder.configIssue("name", "\(list) cannot be used here: a TCP upload is named before its bytes are read")
            }
            let sample = UploadContext(
                metadata: UploadMetadata(name: "", listener: "listener", remoteAddress: "127.0.0.1"),
                pipeline: pipeline,
                logger: .init(label: "sluice.validate")
            )
            do {
                _ = try name.render(sample)
            } catch let error as SluiceError {
                throw decoder.configIssue("name", "\"\(name.text)\" does not make a safe name: \(error.message)")
            }
            self.maxConnections = try c.decode(Int.self, forKey: .maxConnections, default: Self.defaultMaxConnections)
            guard maxConnections >= 1 else { throw decoder.configIssue("max_connections", "must be at least 1") }
            self.maxConcurrentUploads = try c.decode(Int.self, forKey: .maxConcurrentUploads, default: Self.defaultMaxConcurrentUploads)
            guard maxConcurrentUploads >= 1 else { throw decoder.configIssue("max_concurrent_uploads", "must be at least 1") }
            self.maxQueuedUploads = try c.decode(Int.self, forKey: .maxQueuedUploads, default: Self.defaultMaxQueuedUploads)
            guard maxQueuedUploads >= 0 else { throw decoder.configIssue("max_queued_uploads", "must not be negative") }
            self.queueTimeout = try c.decode(ConfigDuration.self, forKey: .queueTimeout, default: Self.defaultQueueTimeout)
            self.maxUploadSize = try c.decode(ByteSize.self, forKey: .maxUploadSize, default: Self.defaultMaxUploadSize)
            guard maxUploadSize.bytes >= 1 else { throw decoder.configIssue("max_upload_size", "must be at least 1 byte") }
            self.idleTimeout = try c.decode(ConfigDuration.self, forKey: .idleTimeout, default: Self.defaultIdleTimeout)
            guard idleTimeout.duration > .zero else { throw decoder.configIssue("idle_timeout", "must be longer than 0s") }
            self.receipt = try c.decode(Bool.self, forKey: .receipt, default: Self.defaultReceipt)
            let recordLength = try c.decodeIfPresent(ByteSize.self, forKey: .maxRecordLength)
            let longRecord = try c.decodeIfPresent(LongRecordPolicy.self, forKey: .onLongRecord)
            if framing != .lines {
                if recordLength != nil { throw decoder.configIssue("max_record_length", "applies only to framing: lines") }
                if longRecord != nil { throw decoder.configIssue("on_long_record", "applies only to framing: lines") }
            }
            self.maxRecordLength = recordLength ?? Self.defaultMaxRecordLength
            guard maxRecordLength.bytes >= 1 else { throw decoder.configIssue("max_record_length", "must be at least 1 byte") }
            self.onLongRecord = longRecord ?? Self.defaultOnLongRecord
            self.prebuffer = try c.decodeIfPresent(ByteSize.self, forKey: .prebuffer)
            let splice = try c.decodeIfPresent(Bool.self, forKey: .splice)
            if splice != nil, framing != .stream { throw decoder.configIssue("splice", "applies only to framing: stream") }
            self.splice = splice ?? Self.defaultSplice
            self.tls = try c.decodeIfPresent(ListenerTLS.self, forKey: .tls)
            if let prebuffer, prebuffer.bytes > Self.maxPrebuffer.bytes {
                throw decoder.configIssue("prebuffer", "must be at most \(Self.maxPrebuffer): it is held in memory for every connection")
            }
        }
    }

    public static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver {
        let pipeline = try environment.pipeline(named: configuration.pipeline, key: "pipeline")
        let tls = try configuration.tls.map { try $0.makeServer(issue: { environment.plugin.issue("tls", $0) }) }
        return TCPReceiver(configuration: configuration, pipeline: pipeline, tls: tls, environment: environment)
    }
}

/// Decodes a string that must be one of `T`'s raw values, with a message that lists them.
private func decodeChoice<T: RawRepresentable & CaseIterable>(_ decoder: any Decoder) throws -> T where T.RawValue == String {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let value = T(rawValue: text) else {
        let known = T.allCases.map(\.rawValue).joined(separator: ", ")
        throw decoder.configIssue(nil, "expected one of \(known); got \"\(text)\"")
    }
    return value
}
