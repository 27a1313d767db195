import Foundation
import SluiceCore

/// The `http` receiver: streaming `PUT /<route>/<name>` (one object) and
/// `POST /<route>` (a batch of newline-delimited records) over HTTP/1.1 and 1.0.
///
/// Keys:
/// - listen (address, required): `host:port` to listen on.
/// - routes (map of path prefix → route, required): each route has
///   `pipeline` (string, required), `allow_content_encoding` (bool, default false)
///   and `auth` (mapping, default: the listener's `auth`).
/// - auth (mapping, default none): bearer tokens for every route without its own
///   `auth`: `tokens_file` (a file, one token per line) and/or `tokens_env` (the name
///   of an environment variable holding comma-separated tokens).
/// - max_connections (int, default 10000): open connections; more are closed at once.
/// - max_concurrent_uploads (int, default 256): uploads processed at the same time.
/// - max_queued_uploads (int, default 1024): uploads waiting for a slot; more get 503.
/// - queue_timeout (duration, default 30s): how long an upload waits for a slot (then 503).
/// - max_upload_size (size, default 10GiB): bytes per request body as sent (413).
/// - max_decoded_size (size, default 10GiB): bytes per body after Content-Encoding decoding (413).
/// - max_record_size (size, default 1MiB): longest record in a POST batch (413).
/// - max_header_size (size, default 16KiB): the request head's header fields (431/400).
/// - header_timeout (duration, default 10s): time to receive a request head once its first byte arrived.
/// - idle_timeout (duration, default 60s): how long a connection may stay silent while
///   the server waits for it (between keep-alive requests, or for body bytes it asked for).
/// - splice (bool, default true): move `PUT` bodies with a Content-Length from the socket
///   into the file in the kernel when nothing reads them (see the plugin's README).
/// - tls (mapping, optional): serve HTTPS (see ``ListenerTLS``); no splicing then.
public enum HTTPReceiverPlugin: ReceiverPlugin {
    public static let type = "http"
    public static let summary = "HTTP/1.1 uploads: PUT /<route>/<name> streams one object, POST /<route> appends a batch of records; 201 with a JSON receipt."

    public static let keys: [ConfigKey] = [
        ConfigKey("listen", "address", "`host:port` to listen on (port 0 picks a free port)."),
        ConfigKey("routes", "map of path prefix → route", "Each route: `pipeline` (required), `allow_content_encoding` (bool, default false: gzip/deflate bodies get 415), `auth` (default: the listener's). `PUT <prefix>/<name>` stores one object, `POST <prefix>` a batch of records."),
        ConfigKey("auth", "mapping", default: "none", "Bearer tokens required on every route without its own `auth`: `tokens_file` (one token per line) and/or `tokens_env` (an environment variable with comma-separated tokens)."),
        ConfigKey("max_connections", "int", default: "\(Configuration.defaultMaxConnections)", "Open connections; more are closed at once."),
        ConfigKey("max_concurrent_uploads", "int", default: "\(Configuration.defaultMaxConcurrentUploads)", "Uploads processed at the same time."),
        ConfigKey("max_queued_uploads", "int", default: "\(Configuration.defaultMaxQueuedUploads)", "Uploads waiting for a slot; more are refused with 503."),
        ConfigKey("queue_timeout", "duration", default: "\(Configuration.defaultQueueTimeout)", "How long an upload may wait for a slot before 503."),
        ConfigKey("max_upload_size", "size", default: "\(Configuration.defaultMaxUploadSize)", "Largest request body as sent: 413 from Content-Length before reading, and while streaming."),
        ConfigKey("max_decoded_size", "size", default: "\(Configuration.defaultMaxDecodedSize)", "Largest body after Content-Encoding decoding (compression bombs get 413)."),
        ConfigKey("max_record_size", "size", default: "\(Configuration.defaultMaxRecordSize)", "Longest record (line) in a POST batch; a longer one gets 413."),
        ConfigKey("max_header_size", "size", default: "\(Configuration.defaultMaxHeaderSize)", "Largest request head (all header fields); larger heads are refused."),
        ConfigKey("header_timeout", "duration", default: "\(Configuration.defaultHeaderTimeout)", "Time to receive a complete request head once its first byte arrived (slowloris)."),
        ConfigKey("idle_timeout", "duration", default: "\(Configuration.defaultIdleTimeout)", "How long a connection may stay silent while the server waits for it: between keep-alive requests, or for body bytes (408 mid-body)."),
        ConfigKey("splice", "bool", default: "\(Configuration.defaultSplice)", "Past the sink's memory_buffer, move a PUT body with a Content-Length (no Content-Encoding) from the socket to the file in the kernel (Linux splice) when the route's pipeline has no stage that reads the bytes and its sink writes files (disk): one copy instead of two. false: always read them into memory."),
        ListenerTLS.configKey,
    ]

    /// One route: a path prefix and what it feeds.
    public struct Route: Sendable {
        /// The prefix, normalised: leading `/`, no trailing `/` (`/upload`).
        public var prefix: String
        public var pipeline: String
        public var allowContentEncoding: Bool
        public var auth: AuthConfiguration?

        public init(prefix: String, pipeline: String, allowContentEncoding: Bool = false, auth: AuthConfiguration? = nil) {
            self.prefix = prefix
            self.pipeline = pipeline
            self.allowContentEncoding = allowContentEncoding
            self.auth = auth
        }
    }

    /// Where bearer tokens come from.
    public struct AuthConfiguration: Decodable, Sendable {
        public var tokensFile: String?
        public var tokensEnv: String?

        enum CodingKeys: String, CodingKey {
            case tokensFile = "tokens_file"
            case tokensEnv = "tokens_env"
        }

        public init(tokensFile: String? = nil, tokensEnv: String? = nil) {
            self.tokensFile = tokensFile
            self.tokensEnv = tokensEnv
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            tokensFile = try c.decodeIfPresent(String.self, forKey: .tokensFile)
            tokensEnv = try c.decodeIfPresent(String.self, forKey: .tokensEnv)
            if tokensFile == nil, tokensEnv == nil {
                throw decoder.configIssue(nil, "needs tokens_file and/or tokens_env")
            }
        }
    }

    public struct Configuration: Decodable, Sendable {
        public static let defaultMaxConnections = 10_000
        public static let defaultMaxConcurrentUploads = 256
        public static let defaultMaxQueuedUploads = 1024
        public static let defaultQueueTimeout = ConfigDuration.seconds(30)
        public static let defaultMaxUploadSize = ByteSize(10 << 30)
        public static let defaultMaxDecodedSize = ByteSize(10 << 30)
        public static let defaultMaxRecordSize = ByteSize(1 << 20)
        public static let defaultMaxHeaderSize = ByteSize(16 << 10)
        public static let defaultHeaderTimeout = ConfigDuration.seconds(10)
        public static let defaultIdleTimeout = ConfigDuration.seconds(60)
        public static let defaultSplice = true

        public var listen: ListenAddress
        /// Routes, longest prefix first (the order they are matched in).
        public var routes: [Route]
        public var auth: AuthConfiguration?
        public var maxConnections = Self.defaultMaxConnections
        public var maxConcurrentUploads = Self.defaultMaxConcurrentUploads
        public var maxQueuedUploads = Self.defaultMaxQueuedUploads
        public var queueTimeout = Self.defaultQueueTimeout
        public var maxUploadSize = Self.defaultMaxUploadSize
        public var maxDecodedSize = Self.defaultMaxDecodedSize
        public var maxRecordSize = Self.defaultMaxRecordSize
        public var maxHeaderSize = Self.defaultMaxHeaderSize
        public var headerTimeout = Self.defaultHeaderTimeout
        public var idleTimeout = Self.defaultIdleTimeout
        public var splice = Self.defaultSplice
        /// HTTPS on this listener, if set.
        public var tls: ListenerTLS?

        /// Whether bodies may be spliced: `splice`, and not on a TLS listener (its
        /// socket carries ciphertext).
        public var splices: Bool { splice && tls == nil }

        /// A configuration built in code (tests, library users).
        public init(listen: ListenAddress, routes: [Route], auth: AuthConfiguration? = nil) {
            self.listen = listen
            self.routes = routes.sorted { $0.prefix.count > $1.prefix.count }
            self.auth = auth
        }

        enum CodingKeys: String, CodingKey {
            case listen, routes, auth
            case maxConnections = "max_connections"
            case maxConcurrentUploads = "max_concurrent_uploads"
            case maxQueuedUploads = "max_queued_uploads"
            case queueTimeout = "queue_timeout"
            case maxUploadSize = "max_upload_size"
            case maxDecodedSize = "max_decoded_size"
            case maxRecordSize = "max_record_size"
            case maxHeaderSize = "max_header_size"
            case headerTimeout = "header_timeout"
            case idleTimeout = "idle_timeout"
            case splice, tls
        }

        private struct PrefixKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        private enum RouteKeys: String, CodingKey {
            case pipeline, auth
            case allowContentEncoding = "allow_content_encoding"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            listen = try c.decode(ListenAddress.self, forKey: .listen)
            auth = try c.decodeIfPresent(AuthConfiguration.self, forKey: .auth)
            maxConnections = try c.decode(forKey: .maxConnections, default: Self.defaultMaxConnections)
            maxConcurrentUploads = try c.decode(forKey: .maxConcurrentUploads, default: Self.defaultMaxConcurrentUploads)
            maxQueuedUploads = try c.decode(forKey: .maxQueuedUploads, default: Self.defaultMaxQueuedUploads)
            queueTimeout = try c.decode(forKey: .queueTimeout, default: Self.defaultQueueTimeout)
            maxUploadSize = try c.decode(forKey: .maxUploadSize, default: Self.defaultMaxUploadSize)
            maxDecodedSize = try c.decode(forKey: .maxDecodedSize, default: Self.defaultMaxDecodedSize)
            maxRecordSize = try c.decode(forKey: .maxRecordSize, default: Self.defaultMaxRecordSize)
            maxHeaderSize = try c.decode(forKey: .maxHeaderSize, default: Self.defaultMaxHeaderSize)
            headerTimeout = try c.decode(forKey: .headerTimeout, default: Self.defaultHeaderTimeout)
            idleTimeout = try c.decode(forKey: .idleTimeout, default: Self.defaultIdleTimeout)
            splice = try c.decode(forKey: .splice, default: Self.defaultSplice)
            tls = try c.decodeIfPresent(ListenerTLS.self, forKey: .tls)

            if maxConnections < 1 { throw decoder.configIssue("max_connections", "must be at least 1") }
            if maxConcurrentUploads < 1 { throw decoder.configIssue("max_concurrent_uploads", "must be at least 1") }
            if maxQueuedUploads < 0 { throw decoder.configIssue("max_queued_uploads", "must not be negative") }
            if maxUploadSize.bytes < 1 { throw decoder.configIssue("max_upload_size", "must be at least 1 byte") }
            if maxRecordSize.bytes < 1 { throw decoder.configIssue("max_record_size", "must be at least 1 byte") }
            if maxHeaderSize.bytes < 1024 { throw decoder.configIssue("max_header_size", "must be at least 1KiB") }
            if headerTimeout.duration <= .zero { throw decoder.configIssue("header_timeout", "must be positive") }
            if idleTimeout.duration <= .zero { throw decoder.configIssue("idle_timeout", "must be positive") }

            let map = try c.nestedContainer(keyedBy: PrefixKey.self, forKey: .routes)
            var routes: [Route] = []
            for key in map.allKeys {
                var prefix = key.stringValue
                guard prefix.hasPrefix("/") else {
                    throw decoder.configIssue("routes", "route \"\(prefix)\" must start with \"/\"")
                }
                while prefix.count > 1, prefix.hasSuffix("/") { prefix.removeLast() }
                if prefix.contains("//") || prefix.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) {
                    throw decoder.configIssue("routes", "route \"\(key.stringValue)\" is not a clean path")
                }
                let r = try map.nestedContainer(keyedBy: RouteKeys.self, forKey: key)
                let pipeline = try r.decode(String.self, forKey: .pipeline)
                let allow = try r.decode(forKey: .allowContentEncoding, default: false)
                let routeAuth = try r.decodeIfPresent(AuthConfiguration.self, forKey: .auth)
                if routes.contains(where: { $0.prefix == prefix }) {
                    throw decoder.configIssue("routes", "route \"\(prefix)\" is given twice")
                }
                routes.append(Route(prefix: prefix, pipeline: pipeline, allowContentEncoding: allow, auth: routeAuth))
            }
            if routes.isEmpty { throw decoder.configIssue("routes", "needs at least one route, like `/upload: { pipeline: default }`") }
            self.routes = routes.sorted { $0.prefix.count > $1.prefix.count }
        }
    }

    public static func make(_ configuration: Configuration, environment: ReceiverEnvironment) throws -> any Receiver {
        var routes: [HTTPReceiver.ResolvedRoute] = []
        let listenerTokens = try configuration.auth.map { try BearerTokens.load($0, issue: { environment.plugin.issue("auth", $0) }) }
        for route in configuration.routes {
            let pipeline = try environment.pipeline(named: route.pipeline, key: "routes")
            let tokens = try route.auth.map { try BearerTokens.load($0, issue: { environment.plugin.issue("routes", $0) }) } ?? listenerTokens
            routes.append(HTTPReceiver.ResolvedRoute(route: route, pipeline: pipeline, tokens: tokens))
        }
        let tls = try configuration.tls.map {
            try $0.makeServer(applicationProtocols: ["http/1.1"], issue: { environment.plugin.issue("tls", $0) })
        }
        return HTTPReceiver(name: environment.name, configuration: configuration, routes: routes, tls: tls, environment: environment)
    }
}
