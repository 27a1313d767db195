import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// `tls:` on a listener (R-X3): the listener speaks TLS (swift-nio-ssl, BoringSSL).
///
/// Keys:
/// - `certificate` (path, required): PEM file with the server's certificate, followed by
///   any intermediate certificates clients need to build the chain.
/// - `private_key` (path, required): PEM file with the certificate's private key
///   (not encrypted).
/// - `client_ca` (path, optional): PEM file with one or more CA certificates. When set,
///   every client must present a certificate issued by one of them (mutual TLS);
///   a client without one fails the handshake and sends nothing.
/// - `min_version` (`1.2` | `1.3`, default `1.2`): the oldest TLS version accepted.
/// - `close_timeout` (duration, default `1s`): how long a connection the server closes
///   (an idle keep-alive one at shutdown, one past its idle timeout) waits for the
///   client's `close_notify` after sending its own; then the socket is closed anyway.
///   swift-nio-ssl's default is 5 s, which held `sluice serve` 5 s past a SIGTERM
///   whenever a client kept an idle HTTPS connection open (measured by hand).
///
/// The files are read when the configuration is built, so `sluice validate` and a
/// reload (SIGHUP) report a missing file, a file without PEM data or a key that does
/// not belong to the certificate; a reload also picks up renewed certificates.
///
/// ```yaml
/// tls:
///   certificate: /etc/sluice/tls/fullchain.pem
///   private_key: /etc/sluice/tls/key.pem
/// ```
public struct ListenerTLS: Decodable, Sendable {
    /// The oldest TLS version a listener accepts.
    public enum Version: String, Sendable, CaseIterable, Decodable {
        case v1_2 = "1.2"
        case v1_3 = "1.3"

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let value = Version(rawValue: text) else {
                throw decoder.configIssue(nil, "expected 1.2 or 1.3; got \"\(text)\"")
            }
            self = value
        }

        var nio: TLSVersion {
            switch self {
            case .v1_2: .tlsv12
            case .v1_3: .tlsv13
            }
        }
    }

    public static let defaultMinVersion = Version.v1_2
    public static let defaultCloseTimeout = ConfigDuration.seconds(1)

    /// The config reference's line for a listener's `tls` key.
    public static let configKey = ConfigKey(
        "tls", "mapping", default: "none (no TLS)",
        "Serve TLS: `certificate` (PEM: the certificate, then intermediates), `private_key` (PEM, unencrypted), optional `client_ca` (PEM CA certificates: clients must present a certificate one of them issued) `min_version` (1.2 or 1.3, default 1.2) and `close_timeout` (how long a connection the server closes waits for the client's close_notify, default 1s). Files are read at start and on reload. Bytes are never spliced on a TLS listener."
    )

    public var certificate: String
    public var privateKey: String
    public var clientCA: String?
    public var minVersion: Version
    /// How long a closing connection waits for the client's `close_notify`.
    public var closeTimeout: ConfigDuration

    public init(
        certificate: String, privateKey: String, clientCA: String? = nil, minVersion: Version = Self.defaultMinVersion,
        closeTimeout: ConfigDuration = Self.defaultCloseTimeout
    ) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.clientCA = clientCA
        self.minVersion = minVersion
        self.closeTimeout = closeTimeout
    }

    enum CodingKeys: String, CodingKey {
        case certificate
        case privateKey = "private_key"
        case clientCA = "client_ca"
        case minVersion = "min_version"
        case closeTimeout = "close_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificate = try c.decode(String.self, forKey: .certificate)
        privateKey = try c.decode(String.self, forKey: .privateKey)
        clientCA = try c.decodeIfPresent(String.self, forKey: .clientCA)
        minVersion = try c.decode(Version.self, forKey: .minVersion, default: Self.defaultMinVersion)
        closeTimeout = try c.decode(ConfigDuration.self, forKey: .closeTimeout, default: Self.defaultCloseTimeout)
        if closeTimeout.duration < .zero { throw decoder.configIssue("close_timeout", "must not be negative") }
        if certificate.isEmpty { throw decoder.configIssue("certificate", "must name a PEM file") }
        if privateKey.isEmpty { throw decoder.configIssue("private_key", "must name a PEM file") }
        if clientCA?.isEmpty == true { throw decoder.configIssue("client_ca", "must name a PEM file") }
    }

    /// Reads the certificate and key and makes the server context every connection of
    /// the listener shares.
    ///
    /// - Parameters:
    ///   - applicationProtocols: ALPN protocols offered (`["http/1.1"]` for HTTP).
    ///   - issue: Makes the error to throw from a message (a config issue at `tls`).
    public func makeServer(applicationProtocols: [String] = [], issue: (String) -> any Error) throws -> TLSServer {
        let (_, context) = try makeConfiguration(applicationProtocols: applicationProtocols, issue: issue)
        return TLSServer(context: context)
    }

    /// Reads the certificate and key into a server configuration, and checks that they
    /// make a context (a key that does not belong to the certificate does not).
    public func makeConfiguration(applicationProtocols: [String] = [], issue: (String) -> any Error) throws -> (TLSConfiguration, NIOSSLContext) {
        let chain = try Self.certificates(certificate, key: "certificate", issue: issue)
        let keyBytes = try Self.read(privateKey, key: "private_key", issue: issue)
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw issue("private_key \(privateKey) holds no usable PEM private key (an encrypted key is not supported): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = minVersion.nio
        configuration.shutdownTimeout = closeTimeout.timeAmount
        configuration.applicationProtocols = applicationProtocols
        if let clientCA {
            let roots = try Self.certificates(clientCA, key: "client_ca", issue: issue)
            configuration.trustRoots = .certificates(roots)
            // Clients are not named hosts: their chain is verified, no name is matched.
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            return (configuration, try NIOSSLContext(configuration: configuration))
        } catch {
            throw issue("the certificate in \(certificate) and the key in \(privateKey) cannot be used together: \(error)")
        }
    }

    private static func read(_ path: String, key: String, issue: (String) -> any Error) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file"
            throw issue("cannot read \(key) \(path): \(reason)")
        }
        return Array(data)
    }

    private static func certificates(_ path: String, key: String, issue: (String) -> any Error) throws -> [NIOSSLCertificate] {
        let bytes = try read(path, key: key, issue: issue)
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            throw issue("\(key) \(path) holds no usable PEM certificate: \(error)")
        }
        guard !chain.isEmpty else { throw issue("\(key) \(path) holds no PEM certificate") }
        return chain
    }
}

/// A listener's TLS context, shared by its connections.
public struct TLSServer: Sendable {
    public let context: NIOSSLContext

    /// Adds the TLS handler at the front of a new connection's pipeline: every handler
    /// after it sees plaintext. Call on the channel's event loop.
    ///
    /// - Parameters:
    ///   - channel: The new connection.
    ///   - logger: Where failed handshakes are logged (at `info`).
    ///   - answeringPlainHTTP: Whether a client that sends a plain HTTP request instead
    ///     of a TLS handshake gets a `400` saying so (an HTTPS listener), rather than
    ///     only a closed connection.
    public func addHandler(to channel: any Channel, logger: Logger, answeringPlainHTTP: Bool = false) throws {
        let sync = channel.pipeline.syncOperations
        if answeringPlainHTTP { try sync.addHandler(PlainHTTPOnTLSPort()) }
        try sync.addHandler(NIOSSLServerHandler(context: context))
        try sync.addHandler(TLSFailureLogger(logger: logger))
    }
}

/// Looks at a connection's first bytes on an HTTPS listener: a TLS handshake starts with
/// the record type 0x16, an HTTP request with the letters of its method. A plain HTTP
/// request is answered `400` with a JSON error (as nginx answers "The plain HTTP request
/// was sent to HTTPS port") and the connection closed; anything else goes on to the TLS
/// handler, which this handler then leaves alone.
final class PlainHTTPOnTLSPort: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var answered = false

    static let answer: String = {
        let error = SluiceError(.tlsRequired, "this listener speaks HTTPS: use an https:// URL")
        let body = error.json + "\n"
        return "HTTP/1.1 \(error.code.httpStatus) Bad Request\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z") {
            answered = true
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.answer))).whenComplete { _ in
                channel.close(promise: nil)
            }
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Logs a connection's failed TLS handshake once, at `info` (a client with the wrong
/// certificate, a plain-text client on a TLS port), then passes the error on: the
/// connection closes and sends nothing into any pipeline.
final class TLSFailureLogger: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let logger: Logger
    private var handshakeDone = false
    private var logged = false

    init(logger: Logger) { self.logger = logger }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { handshakeDone = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !handshakeDone, !logged {
            logged = true
            let remote = context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
            logger.info("TLS handshake with \(remote) failed: \(Self.describe(error))")
        }
        context.fireErrorCaught(error)
    }

    /// BoringSSL's reason (`WRONG_VERSION_NUMBER`) with what it usually means, instead of
    /// the whole error stack with its source paths.
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        guard let range = text.range(of: "OPENSSL_internal:") else { return text }
        let reason = String(text[range.upperBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" })
        let meanings = [
            "WRONG_VERSION_NUMBER": "the client does not speak TLS (plain text on a TLS port?)",
            "HTTP_REQUEST": "a plain HTTP request on an HTTPS port",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (client_ca requires one)",
            "CERTIFICATE_VERIFY_FAILED": "the client's certificate was not issued by client_ca",
            "UNSUPPORTED_PROTOCOL": "the client's TLS version is older than min_version",
            "NO_SHARED_CIPHER": "no cipher both sides support",
        ]
        return meanings[reason].map { "\($0) (\(reason))" } ?? reason
    }
}
