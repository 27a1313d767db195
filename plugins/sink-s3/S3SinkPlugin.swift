import Foundation
import SluiceCore

/// The `s3` sink: stores each upload as one object in an S3-compatible store
/// (AWS S3, SeaweedFS, Ceph RGW, MinIO, R2…) with streaming multipart uploads.
///
/// Keys:
/// - `bucket (string, required)`: the bucket.
/// - `endpoint (URL, default https://s3.<region>.amazonaws.com)`: the store's base URL.
/// - `region (string, default us-east-1)`: the SigV4 signing region.
/// - `key (template, default {name})`: the object key, a name template as for `disk`.
/// - `prefix (string, default "")`: prepended to every key (and the scope of `abort_stale_after`).
/// - `access_key_id (string, default $AWS_ACCESS_KEY_ID)`, `secret_access_key (string,
///   default $AWS_SECRET_ACCESS_KEY)`: credentials; `${ENV}` works.
/// - `addressing (path|virtual, default path)`: `host/bucket/key` or `bucket.host/key`.
/// - `part_size (size, default 8MiB, at least 5MiB)`: the first part size; doubles every 1000 parts.
/// - `parallel_parts (int, default 2)`: part buffers per upload (one filling, the rest uploading).
/// - `max_memory (size, default 256MiB)`: cap on part buffers across all uploads of this sink.
/// - `retries (int, default 5)`: retries per request on 5xx, throttling, timeouts and connection errors.
/// - `checksum (sha256|md5|none, default sha256)`: per-request integrity check by the store.
/// - `storage_class (string, optional)`: `x-amz-storage-class` of new objects.
/// - `abort_stale_after (duration, optional)`: at start, abort multipart uploads under `prefix` older than this.
/// - `request_timeout (duration, default 2m)`: deadline of one request (one part).
public enum S3SinkPlugin: SinkPlugin {
    public static let type = "s3"
    public static let summary = "one object per upload in an S3-compatible store (streaming multipart, SigV4)"

    public static let defaultRegion = "us-east-1"
    public static let defaultKey = "{name}"
    public static let defaultPartSize = ByteSize.mebibytes(8)
    public static let defaultParallelParts = 2
    public static let defaultMaxMemory = ByteSize.mebibytes(256)
    public static let defaultRetries = 5
    public static let defaultChecksum = "sha256"
    public static let defaultAddressing = "path"
    public static let defaultRequestTimeout = ConfigDuration.seconds(120)

    public static let keys: [ConfigKey] = [
        ConfigKey("bucket", "string", "the bucket objects are written to"),
        ConfigKey("endpoint", "URL", default: "https://s3.<region>.amazonaws.com", "base URL of the S3-compatible store (http://127.0.0.1:8333 for a local SeaweedFS)"),
        ConfigKey("region", "string", default: defaultRegion, "SigV4 signing region"),
        ConfigKey("key", "template", default: defaultKey, "object key: a name template ({name}, {date}, {uuid}, {listener}, {ext}…) as for disk"),
        ConfigKey("prefix", "string", default: "\"\"", "prepended to every key; also the scope of abort_stale_after"),
        ConfigKey("access_key_id", "string", default: "$AWS_ACCESS_KEY_ID", "access key id; ${ENV} is interpolated"),
        ConfigKey("secret_access_key", "string", default: "$AWS_SECRET_ACCESS_KEY", "secret access key; ${ENV} is interpolated"),
        ConfigKey("addressing", "path|virtual", default: defaultAddressing, "path style (host/bucket/key) or virtual-host style (bucket.host/key)"),
        ConfigKey("part_size", "size", default: "\(defaultPartSize)", "size of the first parts (at least 5MiB); doubles every 1000 parts so unknown lengths never exceed 10,000 parts"),
        ConfigKey("parallel_parts", "int", default: "\(defaultParallelParts)", "part buffers per upload: one fills from the body while the others upload (memory per upload = part_size × parallel_parts)"),
        ConfigKey("max_memory", "size", default: "\(defaultMaxMemory)", "cap on part buffers across all uploads of this sink; uploads wait (back pressure) when it is reached"),
        ConfigKey("retries", "int", default: "\(defaultRetries)", "retries per request on 5xx, throttling, timeouts and connection errors (exponential backoff 200ms…10s with jitter); 4xx answers are not retried"),
        ConfigKey("checksum", "sha256|md5|none", default: defaultChecksum, "integrity check of every request by the store: x-amz-checksum-sha256 (and a signed payload), Content-MD5, or none"),
        ConfigKey("storage_class", "string", default: "none", "x-amz-storage-class of new objects (STANDARD, STANDARD_IA…)"),
        ConfigKey("abort_stale_after", "duration", default: "none", "at start, abort multipart uploads under prefix started longer ago than this (left by a crash)"),
        ConfigKey("request_timeout", "duration", default: "\(defaultRequestTimeout)", "deadline of one request (one part upload)"),
    ]

    public struct Configuration: Decodable, Sendable {
        public var bucket: String
        public var endpoint: URL?
        public var region: String
        public var key: NameTemplate
        public var prefix: String
        public var accessKeyID: String?
        public var secretAccessKey: String?
        public var addressing: String
        public var partSize: ByteSize
        public var parallelParts: Int
        public var maxMemory: ByteSize
        public var retries: Int
        public var checksum: String
        public var storageClass: String?
        public var abortStaleAfter: ConfigDuration?
        public var requestTimeout: ConfigDuration

        enum CodingKeys: String, CodingKey {
            case bucket, endpoint, region, key, prefix, addressing, retries, checksum
            case accessKeyID = "access_key_id"
            case secretAccessKey = "secret_access_key"
            case partSize = "part_size"
            case parallelParts = "parallel_parts"
            case maxMemory = "max_memory"
            case storageClass = "storage_class"
            case abortStaleAfter = "abort_stale_after"
            case requestTimeout = "request_timeout"
        }

        /// A configuration built in code; unset credentials come from the environment at `make`.
        public init(
            bucket: String, endpoint: URL? = nil, region: String = defaultRegion, key: NameTemplate? = nil,
            prefix: String = "", accessKeyID: String? = nil, secretAccessKey: String? = nil,
            addressing: String = defaultAddressing, partSize: ByteSize = defaultPartSize,
            parallelParts: Int = defaultParallelParts, maxMemory: ByteSize = defaultMaxMemory,
            retries: Int = defaultRetries, checksum: String = defaultChecksum, storageClass: String? = nil,
            abortStaleAfter: ConfigDuration? = nil, requestTimeout: ConfigDuration = defaultRequestTimeout
        ) {
            self.bucket = bucket
            self.endpoint = endpoint
            self.region = region
            // "{name}" is a valid template.
            self.key = key ?? (try! NameTemplate(defaultKey))
            self.prefix = prefix
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.addressing = addressing
            self.partSize = partSize
            self.parallelParts = parallelParts
            self.maxMemory = maxMemory
            self.retries = retries
            self.checksum = checksum
            self.storageClass = storageClass
            self.abortStaleAfter = abortStaleAfter
            self.requestTimeout = requestTimeout
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            bucket = try c.decode(String.self, forKey: .bucket)
            if let text = try c.decodeIfPresent(String.self, forKey: .endpoint) {
                guard let url = URL(string: text), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
                    throw decoder.configIssue("endpoint", "expected an http(s) URL like \"https://s3.eu-west-1.amazonaws.com\", got \"\(text)\"")
                }
                endpoint = url
            } else {
                endpoint = nil
            }
            region = try c.decode(String.self, forKey: .region, default: defaultRegion)
            key = try c.decodeIfPresent(NameTemplate.self, forKey: .key) ?? NameTemplate(defaultKey)
            prefix = try c.decode(String.self, forKey: .prefix, default: "")
            accessKeyID = try c.decodeIfPresent(String.self, forKey: .accessKeyID)
            secretAccessKey = try c.decodeIfPresent(String.self, forKey: .secretAccessKey)
            addressing = try c.decode(String.self, forKey: .addressing, default: defaultAddressing)
            partSize = try c.decode(ByteSize.self, forKey: .partSize, default: defaultPartSize)
            parallelParts = try c.decode(Int.self, forKey: .parallelParts, default: defaultParallelParts)
            maxMemory = try c.decode(ByteSize.self, forKey: .maxMemory, default: defaultMaxMemory)
            retries = try c.decode(Int.self, forKey: .retries, default: defaultRetries)
            checksum = try c.decode(String.self, forKey: .checksum, default: defaultChecksum)
            storageClass = try c.decodeIfPresent(String.self, forKey: .storageClass)
            abortStaleAfter = try c.decodeIfPresent(ConfigDuration.self, forKey: .abortStaleAfter)
            requestTimeout = try c.decode(ConfigDuration.self, forKey: .requestTimeout, default: defaultRequestTimeout)

            if let problem = validate() { throw decoder.configIssue(problem.key, problem.message) }
        }

        /// The first semantic problem, if any (shared by the decoder and `make`).
        func validate() -> (key: String, message: String)? {
            if bucket.isEmpty { return ("bucket", "must not be empty") }
            if S3Location.Addressing(rawValue: addressing) == nil { return ("addressing", "expected \"path\" or \"virtual\", got \"\(addressing)\"") }
            if partSize.bytes < S3Sink.minPartSize { return ("part_size", "must be at least 5MiB (S3's smallest part), got \(partSize)") }
            if partSize.bytes > S3Sink.maxPartSize { return ("part_size", "must be at most 5GiB (S3's largest part), got \(partSize)") }
            if !(1...64).contains(parallelParts) { return ("parallel_parts", "must be 1...64, got \(parallelParts)") }
            if maxMemory.bytes < partSize.bytes { return ("max_memory", "must be at least part_size (\(partSize)), got \(maxMemory)") }
            if !(0...20).contains(retries) { return ("retries", "must be 0...20, got \(retries)") }
            if S3Checksum(rawValue: checksum) == nil { return ("checksum", "expected sha256, md5 or none, got \"\(checksum)\"") }
            if requestTimeout.duration < .seconds(1) { return ("request_timeout", "must be at least 1s, got \(requestTimeout)") }
            if let prefixProblem = prefix.isEmpty ? nil : (try? UploadName.sanitize(prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix)) == nil ? "is not a safe relative key prefix" : nil {
                return ("prefix", prefixProblem)
            }
            return nil
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        try makeSink(configuration, environment: environment, processEnvironment: ProcessInfo.processInfo.environment)
    }

    /// Builds the sink; credentials missing from the configuration come from `processEnvironment`.
    static func makeSink(_ configuration: Configuration, environment: PluginEnvironment, processEnvironment: [String: String]) throws -> S3Sink {
        if let problem = configuration.validate() { throw environment.issue(problem.key, problem.message) }
        guard let accessKey = nonEmpty(configuration.accessKeyID) ?? nonEmpty(processEnvironment["AWS_ACCESS_KEY_ID"]) else {
            throw environment.issue("access_key_id", "no access key: set access_key_id (for example \"${AWS_ACCESS_KEY_ID}\") or the AWS_ACCESS_KEY_ID environment variable")
        }
        guard let secret = nonEmpty(configuration.secretAccessKey) ?? nonEmpty(processEnvironment["AWS_SECRET_ACCESS_KEY"]) else {
            throw environment.issue("secret_access_key", "no secret key: set secret_access_key (for example \"${AWS_SECRET_ACCESS_KEY}\") or the AWS_SECRET_ACCESS_KEY environment variable")
        }
        let endpoint = configuration.endpoint ?? URL(string: "https://s3.\(configuration.region).amazonaws.com")!
        let addressing = S3Location.Addressing(rawValue: configuration.addressing)!
        let location = S3Location(endpoint: endpoint, bucket: configuration.bucket, addressing: addressing)
        let partsInFlight = Int(configuration.maxMemory.bytes / configuration.partSize.bytes)
        let client = S3Client(
            location: location,
            signer: SigV4Signer(accessKeyID: accessKey, secretAccessKey: secret, region: configuration.region),
            retry: RetryPolicy(retries: configuration.retries),
            requestTimeout: configuration.requestTimeout.duration,
            maxConnections: max(8, partsInFlight + 8),
            logger: environment.logger)
        let settings = S3Sink.Settings(
            keyTemplate: configuration.key,
            prefix: configuration.prefix,
            partSize: configuration.partSize.bytes,
            parallelParts: configuration.parallelParts,
            checksum: S3Checksum(rawValue: configuration.checksum)!,
            storageClass: configuration.storageClass,
            abortStaleAfter: configuration.abortStaleAfter?.duration)
        return S3Sink(client: client, settings: settings, maxMemory: configuration.maxMemory.bytes, logger: environment.logger)
    }

    private static func nonEmpty(_ text: String?) -> String? {
        guard let text, !text.isEmpty else { return nil }
        return text
    }
}
