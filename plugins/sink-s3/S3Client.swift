import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SluiceCore
import Synchronization

/// Where a bucket lives and how its objects are addressed.
struct S3Location: Sendable {
    enum Addressing: String, Sendable { case path, virtual }

    let scheme: String
    let host: String
    let port: Int?
    let basePath: String
    let bucket: String
    let addressing: Addressing

    init(endpoint: URL, bucket: String, addressing: Addressing) {
        self.scheme = endpoint.scheme ?? "https"
        self.host = endpoint.host ?? "localhost"
        let defaultPort = scheme == "https" ? 443 : 80
        self.port = endpoint.port.flatMap { $0 == defaultPort ? nil : $0 }
        let path = endpoint.path
        self.basePath = path.hasSuffix("/") ? String(path.dropLast()) : path
        self.bucket = bucket
        self.addressing = addressing
    }

    /// The `Host` header value (and the authority of the URL).
    var hostHeader: String {
        let name = addressing == .virtual ? "\(bucket).\(host)" : host
        let bracketed = name.contains(":") ? "[\(name)]" : name
        return port.map { "\(bracketed):\($0)" } ?? bracketed
    }

    /// The encoded request path for `key` (or the bucket itself when `key` is nil).
    func path(key: String?) -> String {
        let bucketPart = addressing == .path ? "/" + SigV4Signer.uriEncode(bucket) : ""
        let keyPart = key.map { "/" + SigV4Signer.uriEncode($0, keepSlash: true) } ?? (addressing == .path ? "" : "/")
        return basePath + bucketPart + keyPart
    }

    func url(path: String, query: [(String, String)]) -> String {
        var url = "\(scheme)://\(hostHeader)\(path)"
        if !query.isEmpty {
            url += "?" + query.map { $0.1.isEmpty && $0.0 == "uploads" ? $0.0 : "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }
                .joined(separator: "&")
        }
        return url
    }

    /// `s3://bucket/key`, for receipts and messages.
    func display(_ key: String?) -> String { "s3://\(bucket)/\(key ?? "")" }
}

/// One S3 API call, ready to sign and send (again, on retry).
struct S3Request: Sendable {
    var method: HTTPMethod
    var key: String?
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var body: ByteBuffer?
    /// Hex sha256 of `body`, or ``SigV4Signer/unsignedPayload``.
    var payloadHash: String = SigV4Signer.emptyPayloadHash
    /// What the call is, for messages: `UploadPart 3`, `CreateMultipartUpload`…
    var operation: String
}

struct S3Response: Sendable {
    var status: UInt
    var headers: HTTPHeaders
    var body: ByteBuffer
    var text: String { String(buffer: body) }
}

/// Retry policy: bounded attempts with exponential backoff and jitter.
struct RetryPolicy: Sendable {
    /// Retries after the first attempt.
    var retries: Int
    var base: Duration = .milliseconds(200)
    var maximum: Duration = .seconds(10)

    /// "Equal jitter": half the exponential delay plus a random part of the other half,
    /// so retries from many uploads spread out but never come back at once.
    func delay(beforeRetry attempt: Int) -> Duration {
        let exponential = base * (1 << min(attempt - 1, 20))
        let capped = min(exponential, maximum)
        let nanos = Double(capped.components.seconds) * 1e9 + Double(capped.components.attoseconds) / 1e9
        return .nanoseconds(Int64(nanos / 2 + Double.random(in: 0...(nanos / 2))))
    }
}

/// Signs, sends and retries S3 calls over one `HTTPClient`.
///
/// The HTTP client is created on first use and shut down by ``shutdown()``, so building
/// a sink (`sluice validate`) creates nothing that needs tearing down.
final class S3Client: Sendable {
    let location: S3Location
    let signer: SigV4Signer
    let retry: RetryPolicy
    let requestTimeout: Duration
    let maxConnections: Int
    let logger: Logger
    private let http = Mutex<HTTPClient?>(nil)
    private let isShutDown = Mutex(false)

    init(location: S3Location, signer: SigV4Signer, retry: RetryPolicy, requestTimeout: Duration, maxConnections: Int, logger: Logger) {
        self.location = location
        self.signer = signer
        self.retry = retry
        self.requestTimeout = requestTimeout
        self.maxConnections = maxConnections
        self.logger = logger
    }

    private func client() throws -> HTTPClient {
        try http.withLock { http in
            if let http { return http }
            guard !isShutDown.withLock({ $0 }) else {
                throw SluiceError(.shuttingDown, "the s3 sink for \(location.display(nil)) is stopped")
            }
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: maxConnections)
            // Our own bounded retries handle a refused connection; the pool's built-in
            // retry would keep trying until each request's deadline.
            configuration.connectionPool.retryConnectionEstablishment = false
            configuration.timeout = .init(connect: .seconds(10), read: .seconds(Int64(max(1, requestTimeout.components.seconds))))
            configuration.decompression = .disabled
            configuration.redirectConfiguration = .disallow
            let created = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            http = created
            return created
        }
    }

    /// Shuts the HTTP client down (after the last upload).
    func shutdown() async {
        isShutDown.withLock { $0 = true }
        let client = http.withLock { http in
            defer { http = nil }
            return http
        }
        try? await client?.shutdown()
    }

    /// Sends `request`, retrying on 5xx, throttling, timeouts and connection errors.
    ///
    /// - Returns: A 2xx response (whose body may still hold an `<Error>`, see ``S3Error``).
    /// - Throws: ``SluiceError`` `.upstreamFailed` on a 4xx answer (no retry) or once
    ///   the retries are used up; `CancellationError` when the task is cancelled.
    func send(_ request: S3Request) async throws -> S3Response {
        var attempt = 0
        while true {
            attempt += 1
            let outcome: Result<S3Response, any Error>
            do {
                outcome = .success(try await sendOnce(request))
            } catch {
                outcome = .failure(error)
            }
            try Task.checkCancellation()
            let reason: String
            switch outcome {
            case .success(let response) where (200..<300).contains(response.status):
                return response
            case .success(let response):
                let error = S3Error(response: response)
                if !error.isRetryable {
                    throw SluiceError(.upstreamFailed, "S3 \(request.operation) \(location.display(request.key)): \(error)")
                }
                reason = "\(error)"
            case .failure(let error):
                if error is CancellationError { throw error }
                if let error = error as? HTTPClientError, error == .cancelled { throw CancellationError() }
                reason = "\(error)"
            }
            guard attempt <= retry.retries else {
                throw SluiceError(.upstreamFailed, "S3 \(request.operation) \(location.display(request.key)) failed after \(attempt) attempts: \(reason)")
            }
            let delay = retry.delay(beforeRetry: attempt)
            logger.warning("S3 \(request.operation) \(location.display(request.key)) failed (\(reason)); retry \(attempt)/\(retry.retries) in \(delay)")
            try await Task.sleep(for: delay)
        }
    }

    private func sendOnce(_ request: S3Request) async throws -> S3Response {
        let date = Date()
        let path = location.path(key: request.key)
        var signed: [(String, String)] = [
            ("host", location.hostHeader),
            ("x-amz-date", SigV4Signer.amzDate(date)),
            ("x-amz-content-sha256", request.payloadHash),
        ]
        signed += request.headers
        let authorization = signer.authorization(
            method: request.method.rawValue, path: path, query: request.query, headers: signed,
            payloadHash: request.payloadHash, date: date)
        var http = HTTPClientRequest(url: location.url(path: path, query: request.query))
        http.method = request.method
        for (name, value) in signed { http.headers.replaceOrAdd(name: name == "host" ? "Host" : name, value: value) }
        http.headers.add(name: "Authorization", value: authorization)
        if let body = request.body {
            http.body = .bytes(body)
        } else if request.method == .PUT || request.method == .POST {
            http.headers.add(name: "Content-Length", value: "0")
        }
        let response = try await client().execute(http, timeout: .nanoseconds(requestTimeout.nanoseconds), logger: nil)
        let body = try await response.body.collect(upTo: 16 << 20)
        return S3Response(status: response.status.code, headers: response.headers, body: body)
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}

/// An S3 error answer: HTTP status plus the `<Code>` and `<Message>` of its XML body.
struct S3Error: CustomStringConvertible, Sendable {
    var status: UInt
    var code: String
    var message: String

    init(response: S3Response) {
        let text = response.text
        status = response.status
        code = XMLText.first("Code", in: text) ?? HTTPResponseStatus(statusCode: Int(response.status)).reasonPhrase
        message = XMLText.first("Message", in: text) ?? ""
    }

    /// An `<Error>` inside a 200 answer (CompleteMultipartUpload may fail that way).
    init?(embeddedIn response: S3Response) {
        let text = response.text
        guard text.contains("<Error>"), let code = XMLText.first("Code", in: text) else { return nil }
        self.status = response.status
        self.code = code
        self.message = XMLText.first("Message", in: text) ?? ""
    }

    /// Server-side trouble is worth retrying; a client error (bad key, no bucket) is not.
    var isRetryable: Bool {
        status >= 500 || status == 429 || ["RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"].contains(code)
    }

    var description: String { "\(status) \(code)" + (message.isEmpty ? "" : ": \(message)") }
}

/// Just enough XML for S3's flat answers: the text of every `<Tag>…</Tag>`.
enum XMLText {
    static func all(_ tag: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "<\(tag)>") {
            guard let close = rest[open.upperBound...].range(of: "</\(tag)>") else { break }
            out.append(unescape(String(rest[open.upperBound..<close.lowerBound])))
            rest = rest[close.upperBound...]
        }
        return out
    }

    static func first(_ tag: String, in text: String) -> String? { all(tag, in: text).first }

    /// The blocks `<Tag>…</Tag>` (inner text, not unescaped) for nested parsing.
    static func blocks(_ tag: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "<\(tag)>") {
            guard let close = rest[open.upperBound...].range(of: "</\(tag)>") else { break }
            out.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return out
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&#34;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }
}
