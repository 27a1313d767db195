import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import _NIOFileSystem

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload files to a Sluice HTTP listener (PUT), printing each receipt.",
        discussion: """
        Each FILE is streamed from disk (never read whole) with a Content-Length.
        With one FILE and a URL not ending in "/", the file is PUT to exactly that URL;
        otherwise to URL/BASENAME. An https:// URL is verified against the system's
        trusted CAs, or against --cacert (a listener with its own CA).
          sluice send build.tgz --to http://127.0.0.1:8080/upload/
          sluice send a.log b.log --to http://127.0.0.1:8080/upload --token "$TOKEN"
          sluice send build.tgz --to https://sluice:8443/artifacts/ --cacert ca.pem \\
            --cert runner.pem --key runner.key
        A progress bar is drawn on stderr when it is a terminal. Exit status 1 if any upload failed.
        """
    )

    @Argument(help: "Files to upload.")
    var files: [String]

    @Option(help: "Target URL: http(s)://HOST:PORT/ROUTE[/NAME].")
    var to: String

    @Option(help: "Bearer token for routes with auth.")
    var token: String?

    @Option(help: ArgumentHelp("https: PEM file of the CA certificates to trust instead of the system's.", valueName: "file"))
    var cacert: String?

    @Option(help: ArgumentHelp("https: PEM client certificate, for a listener with client_ca (with --key).", valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("https: PEM private key of --cert.", valueName: "file"))
    var key: String?

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one file") }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    }

    func run() async throws {
        let scheme = URLComponents(string: to)?.scheme?.lowercased()
        guard let url = URLComponents(string: to), scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty else {
            throw ValidationError("--to must be an http:// or https:// URL like http://127.0.0.1:8080/upload/")
        }
        let secure = scheme == "https"
        if !secure, cacert != nil || cert != nil {
            throw ValidationError("--cacert, --cert and --key apply to https:// URLs only")
        }
        let tls = try secure ? makeTLSContext() : nil
        let port = url.port ?? (secure ? 443 : 80)
        let basePath = url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath
        var failed = 0
        for file in files {
            let path: String
            if files.count == 1, !basePath.hasSuffix("/") {
                path = basePath
            } else {
                let name = (file as NSString).lastPathComponent
                let encoded = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
                path = (basePath.hasSuffix("/") ? basePath : basePath + "/") + encoded
            }
            do {
                let (status, body) = try await HTTPUploader(host: host, port: port, token: token, tls: tls).put(file: file, path: path)
                if (200..<300).contains(status) {
                    print(body.trimmingCharacters(in: .whitespacesAndNewlines))
                } else {
                    failed += 1
                    let message = Self.errorMessage(from: body) ?? body
                    FileHandle.standardError.write(Data("sluice send: \(file): HTTP \(status): \(message)\n".utf8))
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("sluice send: \(file): \(error)\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }

    /// The client's TLS context: the system's CAs or `--cacert`, and `--cert`/`--key` if given.
    func makeTLSContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let cacert { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cacert)) }
            if let cert, let key {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ValidationError("cannot use the TLS files given (--cacert, --cert, --key): \(error)")
        }
    }

    /// The `message` of a Sluice error body `{"error":{"code":…,"message":…}}`.
    static func errorMessage(from body: String) -> String? {
        guard let data = body.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let error = object["error"] as? [String: Any],
              let message = error["message"] as? String
        else { return nil }
        return "\(message) (\(error["code"] as? String ?? "error"))"
    }
}

/// One PUT over SwiftNIO's HTTP/1 client codec, streaming the file with back pressure.
struct HTTPUploader {
    let host: String
    let port: Int
    let token: String?
    /// Set for https: the connection speaks TLS, verifying the server's certificate for `host`.
    var tls: NIOSSLContext? = nil

    func put(file: String, path: String) async throws -> (status: Int, body: String) {
        let info = try await FileSystem.shared.info(forFileAt: FilePath(file))
        guard let info, info.type == .regular else {
            throw SendError("\(file) is not a regular file")
        }
        let size = info.size
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // An IP address is checked against the certificate's IP entries; SNI takes names only.
                        let name = host.first?.isNumber == true || host.contains(":") ? nil : host
                        let handler = try NIOSSLClientHandler(context: tls, serverHostname: name)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        let progress = Progress(name: (file as NSString).lastPathComponent, total: size)
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: .PUT, uri: path)
            head.headers.add(name: "Host", value: "\(host):\(port)")
            head.headers.add(name: "Content-Length", value: String(size))
            head.headers.add(name: "Content-Type", value: "application/octet-stream")
            head.headers.add(name: "Connection", value: "close")
            if let token { head.headers.add(name: "Authorization", value: "Bearer \(token)") }
            let requestHead = head

            return try await withThrowingTaskGroup(of: (Int, String)?.self) { group in
                group.addTask {
                    do {
                        try await outbound.write(.head(requestHead))
                        try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(file)) { handle in
                            for try await chunk in handle.readChunks(chunkLength: .kibibytes(256)) {
                                try await outbound.write(.body(.byteBuffer(chunk)))
                                progress.add(chunk.readableBytes)
                            }
                        }
                        try await outbound.write(.end(nil))
                    } catch is CancellationError {
                        return nil
                    } catch let error as FileSystemError {
                        throw SendError("cannot read \(file): \(error)")
                    } catch {
                        // A refused upload (401, 413) closes the connection while the body
                        // is still being sent: the reader below reports the server's answer.
                    }
                    return nil
                }
                group.addTask {
                    var status = 0
                    var body = ByteBuffer()
                    for try await part in inbound {
                        switch part {
                        case .head(let response):
                            // Interim responses (100 Continue) carry no answer.
                            if response.status.code >= 200 { status = Int(response.status.code) }
                        case .body(var chunk):
                            body.writeBuffer(&chunk)
                        case .end:
                            if status >= 200 { return (status, String(buffer: body)) }
                        }
                    }
                    throw SendError("the server closed the connection without an answer")
                }
                // The answer may come before the body is sent (401, 413): it wins.
                while let result = try await group.next() {
                    if let answer = result {
                        group.cancelAll()
                        progress.finish()
                        return answer
                    }
                }
                throw SendError("no answer")
            }
        }
    }
}

struct SendError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A progress line on stderr, drawn only when stderr is a terminal.
final class Progress: Sendable {
    private let name: String
    private let total: Int64
    private let enabled = isatty(2) == 1
    private let state = Mutex((sent: Int64(0), lastDraw: ContinuousClock.now, started: ContinuousClock.now))

    init(name: String, total: Int64) {
        self.name = name
        self.total = total
    }

    func add(_ n: Int) {
        guard enabled else { return }
        let line: String? = state.withLock { s in
            s.sent += Int64(n)
            let now = ContinuousClock.now
            guard now - s.lastDraw > .milliseconds(100) || s.sent == total else { return nil }
            s.lastDraw = now
            return render(sent: s.sent, elapsed: now - s.started)
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        guard enabled else { return }
        let line = state.withLock { render(sent: $0.sent, elapsed: ContinuousClock.now - $0.started) }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    private func render(sent: Int64, elapsed: Duration) -> String {
        let fraction = total > 0 ? Double(sent) / Double(total) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 0.001)
        let rate = Double(sent) / seconds / 1_048_576
        return String(format: "\r%@ [%@] %3d%% %.1f MiB/s", name, bar, Int(fraction * 100), rate)
    }
}
