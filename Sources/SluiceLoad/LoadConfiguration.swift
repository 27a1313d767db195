import NIOCore
import SluiceCore

/// Everything one `sluice load` run needs to know.
public struct LoadConfiguration: Sendable {
    /// What the generator sends.
    public enum Mode: String, Sendable, CaseIterable {
        /// One TCP connection per upload: send `uploadSize` bytes, half-close, wait for the server to close
        /// (or, with `expectReceipt`, for its receipt line).
        case tcp
        /// `PUT` requests with a `Content-Length` body to the target URL's path + a unique name.
        case http
        /// Like `tcp`, but each upload is whole lines of `lineSize` bytes; records are counted.
        case lines
        /// Open `concurrency` connections that each trickle `rate` bytes per second for `duration`.
        case hold
    }

    public var mode: Mode
    public var target: LoadTarget
    /// Concurrent connections (uploads in flight, or connections held).
    public var concurrency: Int
    /// Bytes per upload (per request in http mode).
    public var uploadSize: Int
    /// Stop after this many uploads (if set).
    public var count: Int?
    /// Stop starting uploads after this long (if set); in hold mode, how long to hold.
    public var duration: Duration?
    public var payload: Payload.Kind
    /// Per-connection send rate in bytes per second (nil: as fast as the socket takes it).
    public var rate: Int?
    /// Bytes per socket write.
    public var chunk: Int
    /// Bytes per line, newline included (lines mode).
    public var lineSize: Int
    /// Send many requests per connection (http).
    public var keepAlive: Bool
    /// Require the server's receipt line after the half-close (tcp/lines).
    public var expectReceipt: Bool
    /// An upload (or held connection's connect) not finished after this long fails.
    public var timeout: Duration
    /// Event-loop threads for the generator.
    public var threads: Int
    /// Prefix of the object names used in http mode (unique per run by default).
    public var namePrefix: String
    /// In hold mode, connects in flight at once (per thread), so a listen backlog is not overrun.
    public var holdConnectWindow: Int
    /// Speak TLS on every connection (an `https://` target, or `--tls`), if set.
    public var tls: LoadTLS?

    public static let defaultChunk = 256 << 10
    public static let defaultLineSize = 200
    public static let defaultTimeout: Duration = .seconds(120)
    public static let defaultHoldRate = 2
    public static let defaultHoldConnectWindow = 64

    public init(
        mode: Mode, target: LoadTarget, concurrency: Int = 1, uploadSize: Int = 1 << 20, count: Int? = nil,
        duration: Duration? = nil, payload: Payload.Kind = .random, rate: Int? = nil, chunk: Int = defaultChunk,
        lineSize: Int = defaultLineSize, keepAlive: Bool = false, expectReceipt: Bool = false,
        timeout: Duration = defaultTimeout, threads: Int = System.coreCount, namePrefix: String? = nil,
        holdConnectWindow: Int = defaultHoldConnectWindow, tls: LoadTLS? = nil
    ) {
        self.mode = mode
        self.target = target
        self.concurrency = concurrency
        self.uploadSize = uploadSize
        self.count = count
        self.duration = duration
        self.payload = payload
        self.rate = rate
        self.chunk = chunk
        self.lineSize = lineSize
        self.keepAlive = keepAlive
        self.expectReceipt = expectReceipt
        self.timeout = timeout
        self.threads = threads
        self.namePrefix = namePrefix ?? LoadConfiguration.uniquePrefix()
        self.holdConnectWindow = holdConnectWindow
        self.tls = tls ?? (target.https ? LoadTLS() : nil)
    }

    /// Checks the combination of settings; the message names the offending option.
    public func validate() throws {
        func fail(_ message: String) -> SluiceError { SluiceError(.badRequest, message) }
        if concurrency < 1 { throw fail("--concurrency must be at least 1") }
        if uploadSize < 0 { throw fail("--size must not be negative") }
        if chunk < 1 { throw fail("--chunk must be at least 1 byte") }
        if let rate, rate < 1 { throw fail("--rate must be at least 1 byte/s") }
        if let count, count < 0 { throw fail("--count must not be negative") }
        if mode == .hold, duration == nil { throw fail("hold mode needs --duration") }
        if mode != .hold, count == nil, duration == nil { throw fail("give --count or --duration") }
        if mode == .lines, lineSize < 2 { throw fail("--line-size must be at least 2 (a byte and the newline)") }
        if mode == .http, target.httpPath == nil { throw fail("http mode needs a URL target like http://127.0.0.1:8080/upload/") }
        if threads < 1 { throw fail("--threads must be at least 1") }
    }

    /// Bytes one upload sends: `uploadSize`, rounded down to whole lines in lines mode.
    public var bytesPerUpload: Int {
        mode == .lines ? (uploadSize / lineSize) * lineSize : uploadSize
    }

    /// Lines one upload sends (lines mode), else 0.
    public var linesPerUpload: Int { mode == .lines ? uploadSize / lineSize : 0 }

    static func uniquePrefix() -> String {
        var rng = SystemRandomNumberGenerator()
        return "load-" + String(rng.next() & 0xFF_FFFF, radix: 16) + "-"
    }
}

/// TLS for a load run: the server's certificate is verified against `caFile`, or the
/// system's trusted CAs, for the target's host name or IP address.
public struct LoadTLS: Sendable, Equatable {
    /// A PEM file of CA certificates to trust instead of the system's.
    public var caFile: String?

    public init(caFile: String? = nil) {
        self.caFile = caFile
    }
}

/// Where to send: `host:port`, or an `http://host:port/path/` (or `https://`) URL.
public struct LoadTarget: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The path prefix from a URL target (names are appended to it), nil for `host:port`.
    public var httpPath: String?
    /// Whether the URL's scheme was `https`.
    public var https: Bool

    public init(host: String, port: Int, httpPath: String? = nil, https: Bool = false) {
        self.host = host
        self.port = port
        self.httpPath = httpPath
        self.https = https
    }

    /// Parses `127.0.0.1:8888`, `localhost:8888`, `[::1]:8888`, `http://127.0.0.1:8080/upload/`,
    /// `https://localhost:8443/upload/`.
    public init?(parsing text: String) {
        for (scheme, https, defaultPort) in [("http://", false, 80), ("https://", true, 443)] where text.hasPrefix(scheme) {
            let rest = text.dropFirst(scheme.count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = String(rest[..<slash])
            let path = slash == rest.endIndex ? "/" : String(rest[slash...])
            if let address = ListenAddress(parsing: authority), !authority.hasPrefix(":") {
                self.init(host: address.host, port: address.port, httpPath: path, https: https)
            } else if !authority.isEmpty, !authority.contains(":") {
                self.init(host: authority, port: defaultPort, httpPath: path, https: https)
            } else {
                return nil
            }
            return
        }
        guard !text.hasPrefix(":"), let address = ListenAddress(parsing: text), address.port > 0 else { return nil }
        self.init(host: address.host, port: address.port)
    }

    /// The `Host` header value.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (https ? 443 : 80) ? h : "\(h):\(port)"
    }

    public var description: String {
        if let httpPath { return "\(https ? "https" : "http")://\(hostHeader)\(httpPath)" }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
