import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SluiceCore

/// The running `http` listener: a Hummingbird server whose responder turns each
/// `PUT`/`POST` into an ``Upload`` for the route's pipeline.
public struct HTTPReceiver: Receiver {
    /// A route with its pipeline and tokens looked up.
    struct ResolvedRoute: Sendable {
        var route: HTTPReceiverPlugin.Route
        var pipeline: Pipeline
        var tokens: BearerTokens?
        /// `{route}` in name templates: the prefix as a relative path (`upload`, `ci/artifacts`); `nil` for `/`.
        let name: String?

        init(route: HTTPReceiverPlugin.Route, pipeline: Pipeline, tokens: BearerTokens?) {
            self.route = route
            self.pipeline = pipeline
            self.tokens = tokens
            let name = route.prefix.split(separator: "/").joined(separator: "/")
            self.name = name.isEmpty ? nil : name
        }
    }

    public let name: String
    let configuration: HTTPReceiverPlugin.Configuration
    let routes: [ResolvedRoute]
    let environment: ReceiverEnvironment
    let gate: UploadGate
    let connections: ConnectionLimiter
    /// The listener's TLS context (`tls`), if it serves HTTPS.
    let tls: TLSServer?

    init(name: String, configuration: HTTPReceiverPlugin.Configuration, routes: [ResolvedRoute], tls: TLSServer? = nil, environment: ReceiverEnvironment) {
        self.name = name
        self.tls = tls
        self.configuration = configuration
        self.routes = routes
        self.environment = environment
        self.gate = UploadGate(
            maxConcurrent: configuration.maxConcurrentUploads,
            maxQueued: configuration.maxQueuedUploads,
            queueTimeout: configuration.queueTimeout.duration,
            listener: name
        )
        self.connections = ConnectionLimiter(limit: configuration.maxConnections, listener: name)
    }

    public func run() async throws {
        let logger = environment.logger
        if configuration.splices { SplicePipe.registerMetrics() }
        let handler = RequestHandler(receiver: self)
        let channel = UploadChannel(
            responder: { request, writer, channel in
                await handler.respond(to: request, writer: writer, channel: channel)
            },
            limits: .init(
                headerTimeout: TimeAmount(configuration.headerTimeout.duration),
                idleTimeout: TimeAmount(configuration.idleTimeout.duration)
            ),
            connections: connections,
            maxHeaderSize: Int(configuration.maxHeaderSize.bytes),
            splice: configuration.splices,
            tls: tls,
            listenerLogger: logger
        )
        let listen = configuration.listen
        let announce = environment.announce
        let detail = routes.map { "\($0.route.prefix) → \($0.pipeline.name)" }.joined(separator: ", ")
        let listenerName = name
        let tls = self.tls
        let server = Server(
            childChannelSetup: channel,
            configuration: ServerConfiguration(address: .hostname(listen.host, port: listen.port), backlog: 1024),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? listen.port
                let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                announce(ListenerAnnouncement(listener: listenerName, type: HTTPReceiverPlugin.type, address: "\(host):\(port)", port: port, detail: (tls == nil ? "" : "TLS, ") + "routes \(detail)"))
            },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Self.quietServerLogger(logger)
        )
        // Hummingbird's accept loop and the start and end of each connection's task run
        // on an event loop, not the cooperative pool, which was idle: waking its threads
        // for each accepted connection and back cost context switches. Measured (64
        // concurrent 4 KiB PUTs, one connection each): 3.7 → 1.9 context switches per
        // upload; 256 × 1 MiB PUTs +2% throughput, -2.5% CPU.
        try await withTaskExecutorPreference(EventLoopTaskExecutor(MultiThreadedEventLoopGroup.singleton.any())) {
            try await server.run()
        }
    }

    /// Hummingbird logs its own start at info; Sluice announces listeners itself.
    private static func quietServerLogger(_ logger: Logger) -> Logger {
        var copy = logger
        copy.logLevel = max(logger.logLevel, .warning)
        return copy
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let c = duration.components
        self = .nanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }
}

/// Answers one request. Every outcome, success or failure, is one response.
struct RequestHandler: Sendable {
    let receiver: HTTPReceiver

    static let expect = HTTPField.Name("Expect")!
    private static let json = "application/json"

    func respond(to request: Request, writer: consuming ResponseWriter, channel: any Channel) async {
        var head: HTTPResponse
        let body: String
        do {
            let receipt = try await upload(request, writer: writer, channel: channel)
            head = HTTPResponse(status: .created)
            head.headerFields[.contentLocation] = PercentEncoding.encodePath(receipt.location)
            body = receipt.jsonLine() + "\n"
        } catch {
            let failure = SluiceError.from(error)
            head = HTTPResponse(status: .init(code: failure.code.httpStatus))
            switch failure.code {
            case .unauthorized: head.headerFields[.wwwAuthenticate] = "Bearer"
            case .methodNotAllowed: head.headerFields[.allow] = allowed(for: request)
            case .overloaded, .shuttingDown: head.headerFields[.retryAfter] = "1"
            default: break
            }
            body = failure.json + "\n"
        }
        head.headerFields[.contentType] = Self.json
        // A failed write means the client is gone; there is no one left to tell.
        try? await write(head, body: body, to: writer)
    }

    private func write(_ head: HTTPResponse, body: String, to writer: consuming ResponseWriter) async throws {
        var head = head
        let buffer = ByteBuffer(string: body)
        head.headerFields[.contentLength] = String(buffer.readableBytes)
        try await writer.write(response: head, body: ResponseBody(byteBuffer: buffer))
    }

    private func allowed(for request: Request) -> String {
        guard let (_, name) = try? match(request.uri.path) else { return "PUT, POST" }
        return name == nil ? "POST" : "PUT"
    }

    /// The route for `path` and the name after its prefix (nil for the prefix itself).
    private func match(_ path: String) throws -> (HTTPReceiver.ResolvedRoute, String?) {
        for route in receiver.routes {
            let prefix = route.route.prefix
            if path == prefix || (prefix != "/" && path == prefix + "/") { return (route, nil) }
            let withSlash = prefix == "/" ? "/" : prefix + "/"
            if path.hasPrefix(withSlash) { return (route, String(path.dropFirst(withSlash.count))) }
        }
        throw SluiceError(.notFound, "no route for \(UploadName.quoted(path)) (routes: \(receiver.routes.map(\.route.prefix).sorted().joined(separator: ", ")))")
    }

    /// Validates the head, waits for an upload slot, and runs the body through the pipeline.
    private func upload(_ request: Request, writer: borrowing ResponseWriter, channel: any Channel) async throws -> Receipt {
        let configuration = receiver.configuration
        let (route, rawName) = try match(request.uri.path)

        let mode: UploadMode
        switch (request.method, rawName) {
        case (.put, .some): mode = .object
        case (.post, nil): mode = .records
        case (.put, nil):
            throw SluiceError(.methodNotAllowed, "PUT needs a name: PUT \(route.route.prefix)/NAME; POST \(route.route.prefix) appends a batch")
        case (.post, .some):
            throw SluiceError(.methodNotAllowed, "POST goes to the route itself (\(route.route.prefix)); PUT \(route.route.prefix)/NAME stores one object")
        default:
            throw SluiceError(.methodNotAllowed, "\(request.method) is not allowed; use PUT \(route.route.prefix)/NAME or POST \(route.route.prefix)")
        }

        let head = HeadFields(request.headers)
        if let tokens = route.tokens, !tokens.accepts(authorization: head.authorization) {
            throw SluiceError(.unauthorized, head.authorization == nil ? "a bearer token is required" : "the bearer token is not valid")
        }

        let name: String
        if let rawName {
            guard let decoded = PercentEncoding.decode(rawName) else {
                throw SluiceError(.invalidName, "name \(UploadName.quoted(rawName)) has invalid percent-encoding")
            }
            name = try UploadName.sanitize(decoded)
        } else {
            name = ""  // generated below, once the upload id exists
        }

        let encoding = try contentEncoding(head.contentEncoding, allowed: route.route.allowContentEncoding)

        var declaredLength: Int64?
        if let text = head.contentLength {
            guard let length = Int64(HeadFields.trimmed(text)), length >= 0 else {
                throw SluiceError(.badRequest, "Content-Length \"\(text.prefix(40))\" is not a number")
            }
            if length > configuration.maxUploadSize.bytes {
                throw SluiceError(.payloadTooLarge, "Content-Length \(length) exceeds max_upload_size (\(configuration.maxUploadSize))")
            }
            declaredLength = length
        }

        let digests = head.hasDigests ? try DigestHeaders.parse(request.headers) : []

        try await receiver.gate.acquire()
        defer { receiver.gate.release() }

        if let expect = head.expect {
            guard expect.lowercased() == "100-continue" else {
                throw SluiceError(.badRequest, "unsupported Expect: \(expect.prefix(40))")
            }
            // Hummingbird does not answer it; without this, curl waits a second before sending.
            try await writer.writeInformationalHead(HTTPResponse(status: .continue))
        }

        var metadata = UploadMetadata(
            name: name,
            listener: receiver.name,
            route: route.name,
            remoteAddress: channel.remoteAddress?.ipAddress,
            // Content-Length counts encoded bytes; a sink sees decoded ones.
            declaredLength: encoding == nil ? declaredLength : nil,
            contentType: head.contentType,
            mode: mode
        )
        if mode == .records {
            metadata.name = Self.batchName(route: route.route.prefix, id: metadata.id, at: metadata.receivedAt)
        }

        let chunks = RequestBodySequence(base: request.body)
        var body = UploadBody(chunks)
        if configuration.splices, mode == .object, encoding == nil, !head.hasTransferEncoding, let declaredLength {
            // Layers that read the bytes (decoding, digests, stages) drop the pieces again.
            let length = Int(declaredLength)
            body = UploadBody(chunks) { RequestBodyPieces(chunks: chunks.makeAsyncIterator(), channel: channel, contentLength: length) }
        }
        body = body.limited(to: configuration.maxUploadSize.bytes)
        if !head.hasTransferEncoding {
            // Content-Length frames the body (the decoder drops it again for a coded one).
            body = body.declaringLength(declaredLength)
        }
        if let encoding {
            // Client digests describe the bytes as sent: check them below the decoder.
            if !digests.isEmpty {
                body = body.verifying(digests, context: nil, subject: "the body as sent")
            }
            let maxDecoded = configuration.maxDecodedSize.bytes
            body = body.transformed { InflateTransform(format: encoding, maxOutput: maxDecoded) }
        } else {
            metadata.expectedDigests = digests
        }
        if mode == .records {
            let maxRecord = Int(clamping: configuration.maxRecordSize.bytes)
            body = body.transformed { RecordChunker(maxRecordSize: maxRecord) }
        }
        return try await route.pipeline.process(Upload(metadata: metadata, body: body))
    }

    /// `nil` for identity; the zlib format for gzip/deflate when the route allows it.
    private func contentEncoding(_ header: String?, allowed: Bool) throws -> ZlibFormat? {
        guard let header else { return nil }
        let value = header.trimmingCharacters(in: .whitespaces).lowercased()
        if value.isEmpty || value == "identity" { return nil }
        let format: ZlibFormat
        switch value {
        case "gzip", "x-gzip": format = .gzip
        case "deflate": format = .zlib
        default:
            throw SluiceError(.unsupportedMediaType, "Content-Encoding \"\(header.prefix(40))\" is not supported (gzip and deflate are)")
        }
        guard allowed else {
            throw SluiceError(.unsupportedMediaType, "this route does not accept Content-Encoding \(value) (allow_content_encoding is off)")
        }
        return format
    }

    /// `{route}-{datetime}-{uuid}` for a POSTed batch, for example `logs-20261126T165407Z-0f1e….`
    static func batchName(route: String, id: UUID, at date: Date) -> String {
        let stamp = UTCTime(date).compact
        let routePart = route.split(separator: "/").joined(separator: "-")
        return "\(routePart.isEmpty ? "batch" : routePart)-\(stamp)-\(id.uuidString.lowercased())"
    }
}

/// The request headers the receiver reads, found in one pass over the fields (looking
/// each up by name scans them all and joins repeated values: ~1% of the time of a 4 KiB
/// upload). A repeated field keeps all its values joined by ", ", as a lookup would.
struct HeadFields {
    var authorization: String?
    var contentEncoding: String?
    var contentLength: String?
    var contentType: String?
    var expect: String?
    /// Whether a `Transfer-Encoding` is present (the body is not framed by Content-Length alone).
    var hasTransferEncoding = false
    /// Whether any digest header is present (``DigestHeaders`` then parses them).
    var hasDigests = false

    init(_ fields: HTTPFields) {
        func add(_ value: String, to slot: inout String?) {
            slot = slot.map { $0 + ", " + value } ?? value
        }
        for field in fields {
            switch field.name {
            case .authorization: add(field.value, to: &authorization)
            case .contentEncoding: add(field.value, to: &contentEncoding)
            case .contentLength: add(field.value, to: &contentLength)
            case .contentType: add(field.value, to: &contentType)
            case RequestHandler.expect: add(field.value, to: &expect)
            case .transferEncoding: hasTransferEncoding = true
            case DigestHeaders.contentDigest, DigestHeaders.reprDigest, DigestHeaders.contentMD5, DigestHeaders.checksumSHA256:
                hasDigests = true
            default: break
            }
        }
    }

    /// `text` without leading and trailing spaces and tabs.
    static func trimmed(_ text: String) -> Substring {
        var slice = Substring(text)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return slice
    }
}
