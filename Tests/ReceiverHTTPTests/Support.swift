import Foundation
import Logging
import Metrics
import NIOCore
import Prometheus
import ReceiverHTTP
import ServiceLifecycle
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Synchronization

/// swift-metrics may be bootstrapped once per process: every test shares this registry.
/// Touch it before building pipelines (metrics made before the bootstrap go nowhere).
let sharedMetrics: PrometheusCollectorRegistry = AdminService.bootstrapMetrics()

/// A running `http` receiver on 127.0.0.1, port 0, feeding in-memory sinks.
struct TestServer {
    let port: Int
    let sink: InMemorySink
    var base: String { "http://127.0.0.1:\(port)" }
}

/// Starts an `http` receiver with one route `/upload` (plus `/logs` for POST tests)
/// into `sink`, runs `body`, and shuts the receiver down gracefully.
func withServer<T>(
    sink: InMemorySink = InMemorySink(),
    pipelineName: String = "default",
    configure: (inout HTTPReceiverPlugin.Configuration) -> Void = { _ in },
    _ body: (TestServer) async throws -> T
) async throws -> T {
    _ = sharedMetrics
    let pipeline = Pipeline(name: pipelineName, stages: [], sink: sink, logger: quietLogger)
    var configuration = HTTPReceiverPlugin.Configuration(
        listen: ListenAddress(host: "127.0.0.1", port: 0),
        routes: [
            .init(prefix: "/upload", pipeline: pipelineName, allowContentEncoding: true, auth: nil),
            .init(prefix: "/logs", pipeline: pipelineName, allowContentEncoding: true, auth: nil),
        ]
    )
    configure(&configuration)
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let environment = ReceiverEnvironment(
        plugin: PluginEnvironment(logger: quietLogger),
        name: "http",
        pipelines: [pipelineName: pipeline],
        announce: { continuation.yield($0.port ?? 0) }
    )
    let receiver = try HTTPReceiverPlugin.make(configuration, environment: environment)
    let group = ServiceGroup(configuration: .init(services: [.init(service: receiver)], logger: quietLogger))
    let task = Task { try await group.run() }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else { throw SluiceError(.internal, "no port announced") }
    do {
        let result = try await body(TestServer(port: port, sink: sink))
        await group.triggerGracefulShutdown()
        try await task.value
        return result
    } catch {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        throw error
    }
}

let quietLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

/// The result of running a command.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double
}

/// Runs `arguments` with optional stdin bytes, bounded by `timeout`.
///
/// The waiting happens on a thread of its own: blocking the test's task, or a Dispatch
/// global-queue thread (on Linux the same small pool Swift tasks run on), would starve
/// the server under test while the command waits for it — measured: two such waits at
/// once stalled every test for the ~1 s Dispatch takes to add a thread.
func run(_ arguments: [String], stdin: [UInt8]? = nil, environment: [String: String] = [:], timeout: Double = 20) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try runBlocking(arguments, stdin: stdin, environment: environment, timeout: timeout) })
        }
    }
}

private func runBlocking(_ arguments: [String], stdin: [UInt8]?, environment: [String: String], timeout: Double) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = stdin == nil ? FileHandle.nullDevice : input
    let started = Date()
    try process.run()
    if let stdin {
        Thread.detachNewThread {
            input.fileHandleForWriting.write(Data(stdin))
            try? input.fileHandleForWriting.close()
        }
    }
    let killer = DispatchWorkItem { process.terminate() }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    return CommandResult(
        status: process.terminationStatus,
        stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self),
        seconds: Date().timeIntervalSince(started)
    )
}

/// `PUT /upload/stall` declaring `contentLength` body bytes, sends `sending` of them (Python's
/// socket module), then reads until the server closes; prints the response's status line.
func stalledPUT(port: Int, contentLength: Int, sending: Int) async throws -> CommandResult {
    let script = """
    import socket
    s = socket.create_connection(("127.0.0.1", \(port)), timeout=10)
    s.sendall(b"PUT /upload/stall HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: \(contentLength)\\r\\n\\r\\n" + b"x" * \(sending))
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    print(data.split(b"\\r\\n")[0].decode())
    """
    return try await run(["python3", "-c", script])
}

/// `PUT /upload/drop.bin` declaring `contentLength` body bytes, sends `sending` of them,
/// waits `pause` seconds and closes the connection mid-body (Python's socket module).
func droppedPUT(port: Int, contentLength: Int, sending: Int, pause: Double) async throws -> CommandResult {
    let script = """
    import socket, time
    s = socket.create_connection(("127.0.0.1", \(port)), timeout=5)
    s.sendall(b"PUT /upload/drop.bin HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: \(contentLength)\\r\\n\\r\\n" + b"x" * \(sending))
    time.sleep(\(pause))
    s.close()
    """
    return try await run(["python3", "-c", script])
}

/// A unique temporary directory, removed by `cleanup()`.
struct TempDir {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "sluice-http-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// The HTTP status code curl printed with `-w '%{http_code}'` at the end of stdout.
func curlStatus(_ result: CommandResult) -> Int {
    Int(result.stdout.suffix(3)) ?? 0
}

/// `curl -s -o <body> -w %{http_code}` plus `arguments`; returns (status, body, result).
func curl(_ arguments: [String], stdin: [UInt8]? = nil, timeout: Double = 20) async throws -> (status: Int, body: String, result: CommandResult) {
    let bodyFile = NSTemporaryDirectory() + "curl-body-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: bodyFile) }
    let result = try await run(["curl", "-s", "-o", bodyFile, "-w", "%{http_code}", "--max-time", "15"] + arguments, stdin: stdin, timeout: timeout)
    let body = (try? String(contentsOfFile: bodyFile, encoding: .utf8)) ?? ""
    return (curlStatus(result), body, result)
}

/// Reads the receipt JSON.
func receipt(_ body: String) throws -> Receipt {
    try JSONDecoder().decode(Receipt.self, from: Data(body.utf8))
}

/// The error code of an error body.
func errorCode(_ body: String) -> String? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
          let error = object["error"] as? [String: Any] else { return nil }
    return error["code"] as? String
}
