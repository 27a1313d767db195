import ArgumentParser
import Foundation
import SluiceCore
import SluiceLoad

/// `sluice load`: the built-in load generator every benchmark figure is measured with.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate load: many concurrent TCP or HTTP uploads, line senders, or held slow connections.",
        discussion: """
        Examples:
          sluice load --target 127.0.0.1:8888 --concurrency 16 --size 16MiB \\
            --count 64
          sluice load --mode http --target http://127.0.0.1:8080/upload/ \\
            --concurrency 256 --size 1MiB --count 1024
          sluice load --mode http --target http://127.0.0.1:8080/upload/ \\
            --keepalive --concurrency 64 --size 4KiB --duration 10s
          sluice load --mode lines --target 127.0.0.1:5140 --concurrency 64 \\
            --line-size 200 --size 2MiB --count 256
          sluice load --mode hold --target 127.0.0.1:8888 --concurrency 10000 \\
            --rate 2 --duration 20s
          sluice load --serve-discard tcp --target 127.0.0.1:9999

        tcp, lines: one connection per upload. The client half-closes; the
        upload is done when the server closes (or, with --expect-receipt, when
        its receipt line arrives). A receipt line reporting an error counts as
        a failure. Latency runs from the connect.
        http: PUT <url path><prefix><n> with a Content-Length; 2xx is done.
        With --keepalive, many PUTs per connection; latency is per request.
        hold: opens --concurrency connections that each trickle --rate bytes/s
        (default 2) for --duration, reports how many are still open, then
        resets them. With an http:// target each sends a PUT head first.
        An upload cut by --timeout is reset (RST), so a server discards it.
        --serve-discard tcp|http runs a server that reads and drops everything
        instead: the reference for the generator's own ceiling.
        TLS: an https:// target, or --tls with host:port, speaks TLS on every
        connection (a tcp upload then ends with close_notify); the server's
        certificate is verified against --cacert, or the system's CAs.
          sluice load --mode http --target https://localhost:8443/upload/ \\
            --cacert ca.pem --concurrency 16 --size 16MiB --count 64
        """
    )

    @Option(help: "tcp, http, lines or hold.")
    var mode: String = "tcp"

    @Option(help: "host:port, or for http a URL like http://127.0.0.1:8080/upload/.")
    var target: String = "127.0.0.1:8888"

    @Option(help: "Concurrent connections.")
    var concurrency: Int = 1

    @Option(help: "Bytes per upload (per request in http mode; rounded down to whole lines in lines mode).")
    var size: String = "1MiB"

    @Option(help: "Number of uploads (requests) in all.")
    var count: Int?

    @Option(help: "Keep starting uploads for this long (e.g. 10s); in hold mode, how long to hold.")
    var duration: String?

    @Option(help: "random (incompressible) or text (log-like lines).")
    var payload: String = "random"

    @Option(help: "Per-connection send rate in bytes/s (e.g. 1KiB); default unlimited (hold: 2).")
    var rate: String?

    @Option(help: "Bytes per socket write.")
    var chunk: String = "256KiB"

    @Option(help: "Bytes per line including the newline (lines mode).")
    var lineSize: Int = LoadConfiguration.defaultLineSize

    @Flag(help: "http: many PUTs per connection.")
    var keepalive = false

    @Flag(help: "tcp/lines: require the server's receipt line after the half-close.")
    var expectReceipt = false

    @Option(help: "Fail an upload not done after this long.")
    var timeout: String = "120s"

    @Option(help: "Generator event-loop threads (default: one per core).")
    var threads: Int?

    @Option(help: "http: object name prefix (default: load-<random>-).")
    var namePrefix: String?

    @Flag(help: "Print one JSON object instead of the summary.")
    var json = false

    @Option(help: "Instead of generating load, run a discard server (tcp or http) on --target.")
    var serveDiscard: String?

    @Flag(help: "tcp/lines/hold: speak TLS (an https:// target always does).")
    var tls = false

    @Option(help: ArgumentHelp("TLS: PEM file of the CA certificates to trust instead of the system's.", valueName: "file"))
    var cacert: String?

    func run() async throws {
        if let serveDiscard {
            try await runDiscard(serveDiscard)
            return
        }
        guard let mode = LoadConfiguration.Mode(rawValue: mode) else {
            throw ValidationError("--mode must be tcp, http, lines or hold")
        }
        guard let loadTarget = LoadTarget(parsing: target) else {
            throw ValidationError("--target must be host:port or http(s)://host:port/path/, got \"\(target)\"")
        }
        guard let uploadSize = ByteSize(parsing: size) else { throw ValidationError("--size: not a size: \(size)") }
        guard let chunkSize = ByteSize(parsing: chunk) else { throw ValidationError("--chunk: not a size: \(chunk)") }
        guard let payloadKind = Payload.Kind(rawValue: payload) else { throw ValidationError("--payload must be random or text") }
        var rateBytes: Int?
        if let rate {
            guard let parsed = ByteSize(parsing: rate) else { throw ValidationError("--rate: not a size: \(rate)") }
            rateBytes = Int(parsed.bytes)
        }
        var runFor: Duration?
        if let duration {
            guard let parsed = ConfigDuration(parsing: duration) else { throw ValidationError("--duration: not a duration: \(duration)") }
            runFor = parsed.duration
        }
        guard let timeoutValue = ConfigDuration(parsing: timeout) else { throw ValidationError("--timeout: not a duration: \(timeout)") }

        let configuration = LoadConfiguration(
            mode: mode, target: loadTarget, concurrency: concurrency, uploadSize: Int(uploadSize.bytes), count: count,
            duration: runFor, payload: payloadKind, rate: rateBytes, chunk: Int(chunkSize.bytes), lineSize: lineSize,
            keepAlive: keepalive, expectReceipt: expectReceipt, timeout: timeoutValue.duration,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount, namePrefix: namePrefix,
            tls: tls || loadTarget.https ? LoadTLS(caFile: cacert) : nil
        )
        if cacert != nil, configuration.tls == nil {
            throw ValidationError("--cacert needs --tls or an https:// target")
        }
        do {
            try configuration.validate()
        } catch let error as SluiceError {
            throw ValidationError(error.message)
        }
        let report = try await LoadGenerator.run(configuration) { line in
            FileHandle.standardError.write(Data("sluice load: \(line)\n".utf8))
        }
        print(json ? report.json() : report.text())
        if report.uploadsOK == 0 && report.hold == nil && report.uploadsFailed > 0 { throw ExitCode(1) }
    }

    private func runDiscard(_ protocolName: String) async throws {
        guard let proto = DiscardServer.Mode(rawValue: protocolName) else {
            throw ValidationError("--serve-discard must be tcp or http")
        }
        guard let address = ListenAddress(parsing: target.hasPrefix("http://") ? String(target.dropFirst(7).prefix { $0 != "/" }) : target) else {
            throw ValidationError("--target must be host:port to listen on")
        }
        let server = try await DiscardServer.start(
            host: address.host, port: address.port, mode: proto,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount
        )
        FileHandle.standardOutput.write(Data("sluice load: discard server (\(proto.rawValue)) on \(address.host):\(server.port)\n".utf8))
        try await server.wait()
    }
}
