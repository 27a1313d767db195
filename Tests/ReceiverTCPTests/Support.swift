import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Synchronization
import Testing

// MARK: - Scratch directories

/// A unique directory under the system temp directory, removed by `remove()`.
struct Scratch {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "sluice-tcp-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    func contents(_ relative: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path + "/" + relative).map(Array.init)
    }

    /// Regular files under `relative` (default: everything), relative to it, sorted; temporary files excluded.
    func files(in relative: String = "") -> [String] {
        let base = relative.isEmpty ? path : path + "/" + relative
        guard let e = FileManager.default.enumerator(atPath: base) else { return [] }
        var out: [String] = []
        while let item = e.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: base + "/" + item, isDirectory: &isDirectory), !isDirectory.boolValue,
               !item.hasPrefix(".sluice-tmp/") {
                out.append(item)
            }
        }
        return out.sorted()
    }

    /// The disk sink's temporary files under `root`, named or anonymous (open, unlinked).
    func temporaries(root: String) -> [String] {
        temporaryFiles(in: path + "/" + root + "/.sluice-tmp")
    }
}

// MARK: - Test plugins

/// Records the sha256 of the bytes it sees, like the `hash` stage (which these tests do not depend on).
enum TestSHA256Plugin: StagePlugin {
    struct Configuration: Decodable, Sendable {
        init(from decoder: any Decoder) throws {}
    }
    static let type = "test_sha256"
    static let summary = "test only: records sha256"
    static let keys: [ConfigKey] = []
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage { HashStage() }

    struct HashStage: Stage {
        func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
            body.transformed { Transform(context: context) }
        }
    }

    struct Transform: ChunkTransform {
        let context: UploadContext
        var computer = DigestAlgorithm.sha256.makeComputer()
        mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
            computer.update(chunk)
            return chunk
        }
        mutating func finish() -> ByteBuffer? {
            context.recordDigest(computer.finalize(), algorithm: .sha256)
            return nil
        }
    }
}

/// Fails the upload if a chunk does not end on a newline (the `records` contract),
/// and counts chunks so a test can see that records are batched.
enum TestRecordCheckPlugin: StagePlugin {
    struct Configuration: Decodable, Sendable {
        init(from decoder: any Decoder) throws {}
    }
    static let type = "test_record_check"
    static let summary = "test only: every chunk ends with a newline"
    static let keys: [ConfigKey] = []
    static let chunks = Atomic<Int>(0)
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage { CheckStage() }

    struct CheckStage: Stage {
        func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
            guard context.metadata.mode == .records else { throw SluiceError(.internal, "expected records mode") }
            return body.observed { chunk in
                TestRecordCheckPlugin.chunks.add(1, ordering: .relaxed)
                guard chunk.readableBytesView.last == UInt8(ascii: "\n") else {
                    throw SluiceError(.internal, "a chunk does not end on a newline")
                }
            }
        }
    }
}

/// The built-in plugins plus the test stages.
let testRegistry: PluginRegistry = {
    var registry = PluginRegistry.builtin
    registry.register(TestSHA256Plugin.self)
    registry.register(TestRecordCheckPlugin.self)
    return registry
}()

// MARK: - Log capture

/// Keeps every log record, so tests can wait for an upload's outcome line.
final class LogCapture: Sendable {
    struct Entry: Sendable, CustomStringConvertible {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
        var description: String { "\(level) \(message) \(metadata)" }
    }

    private let entries = Mutex<[Entry]>([])

    var all: [Entry] { entries.withLock { $0 } }

    func append(_ entry: Entry) { entries.withLock { $0.append(entry) } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(capture: self) }
    }

    /// Waits (up to `timeout`) for a record matching `predicate`.
    @discardableResult
    func wait(for what: String, timeout: Duration = .seconds(10), _ predicate: (Entry) -> Bool) async throws -> Entry {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let entry = all.first(where: predicate) { return entry }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("no log record for \(what); got:\n\(all.map(\.description).joined(separator: "\n"))")
        throw SluiceError(.timeout, "no log record for \(what)")
    }

    /// Outcome lines (`upload stored` / `upload rejected` / `upload failed`).
    var outcomes: [Entry] { all.filter { $0.message.hasPrefix("upload stored") || $0.message.hasPrefix("upload rejected") || $0.message.hasPrefix("upload failed") } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let level = event.level
            let message = event.message
            var all = self.metadata
            if let extra = event.metadata { all.merge(extra) { _, new in new } }
            capture.append(Entry(level: level, message: message.description, metadata: all.mapValues { "\($0)" }))
            if ProcessInfo.processInfo.environment["SLUICE_TEST_LOG"] != nil {
                FileHandle.standardError.write(Data("\(level) \(message) \(all)\n".utf8))
            }
        }
    }
}

// MARK: - Server

/// A server generation started from YAML in-process, with its scratch directory and captured logs.
struct TestServer {
    let generation: ServerGeneration
    let scratch: Scratch
    let logs: LogCapture

    var port: Int { generation.port(of: "tcp") ?? 0 }

    /// Starts a config with one `tcp` listener named `tcp` feeding pipeline `p`, whose
    /// disk sink stores under `<scratch>/root`.
    ///
    /// - Parameters:
    ///   - listener: Extra listener keys (YAML lines, indented 4).
    ///   - stages: Stage types in pipeline `p`.
    ///   - sink: Extra disk sink keys (YAML lines, indented 6).
    static func start(listener: String = "", stages: [String] = ["test_sha256"], sink: String = "", drainTimeout: Duration = .seconds(5)) async throws -> TestServer {
        let scratch = try Scratch()
        let yaml = """
        listeners:
          tcp:
            type: tcp
            listen: 127.0.0.1:0
            pipeline: p
        \(indent(listener.contains("prebuffer:") ? listener : listener + "\n# The tests see that an upload started by its temporary file appearing.\nprebuffer: 0", 4))
        pipelines:
          p:
            stages: [\(stages.map { "{ type: \($0) }" }.joined(separator: ", "))]
            sink:
              type: disk
              root: \(scratch.path)/root
        \(indent(sink.contains("memory_buffer:") ? sink : sink + "\n# The tests see that an upload started by its temporary file appearing.\nmemory_buffer: 0", 6))
        """
        let logs = LogCapture()
        let config = try LoadedConfig.parse(yaml, file: "test.yaml", registry: testRegistry)
        let generation = try await ServerGeneration.start(config, logger: logs.logger, drainTimeout: drainTimeout)
        return TestServer(generation: generation, scratch: scratch, logs: logs)
    }

    func stop() async {
        await generation.shutdown()
        scratch.remove()
    }

    private static func indent(_ text: String, _ n: Int) -> String {
        text.split(separator: "\n").map { String(repeating: " ", count: n) + $0 }.joined(separator: "\n")
    }
}

// MARK: - Client

typealias ClientChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

enum Client {
    /// Connects to 127.0.0.1:`port`; finishing the outbound writer half-closes (like `nc -N`).
    ///
    /// With `halfClose: false` finishing the writer sends nothing (for a client that resets).
    static func connect(_ port: Int, halfClose: Bool = true) async throws -> ClientChannel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try ClientChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: halfClose))
                }
            }
    }

    /// Starts an upload that sends `head` at once and holds `tail` back until
    /// ``HeldUpload/finish()``, which sends it, half-closes and returns the server's answer.
    static func heldUpload(_ port: Int, head: [UInt8], tail: [UInt8]) async throws -> HeldUpload {
        let channel = try await connect(port)
        let (release, releaser) = AsyncStream<Void>.makeStream()
        let task = Task {
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: head))
                for await _ in release { break }
                try await outbound.write(ByteBuffer(bytes: tail))
                outbound.finish()
                return try await readAll(inbound)
            }
        }
        return HeldUpload(task: task, releaser: releaser)
    }

    /// Sends `text`, then stays silent until the server's `idle_timeout` answers and closes.
    ///
    /// Returns the answer and the upload's logged outcome, or `nil` when the server closed
    /// the connection as one that sent nothing: its idle clock starts at the accept, and a
    /// loaded test run can delay the client's first write past it. Callers retry then.
    static func stall(_ text: String, server: TestServer) async throws -> (line: String, outcome: LogCapture.Entry)? {
        let outcomesBefore = server.logs.outcomes.count
        let silentBefore = server.logs.all.filter { $0.message.contains("before sending data") }.count
        let channel = try await connect(server.port)
        // A late write can also meet the closed socket: a reset instead of the answer.
        let line = try? await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: text))
            return try await readAll(inbound)
        }
        try await server.logs.wait(for: "the connection's end") { _ in
            server.logs.outcomes.count > outcomesBefore
                || server.logs.all.filter { $0.message.contains("before sending data") }.count > silentBefore
        }
        guard server.logs.outcomes.count > outcomesBefore, let line else { return nil }
        return (line, server.logs.outcomes[outcomesBefore])
    }


    static func upload(_ bytes: [UInt8], port: Int, piece: Int = 64 * 1024) async throws -> String {
        let channel = try await connect(port)
        return try await channel.executeThenClose { inbound, outbound in
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + piece, bytes.count)
                try await outbound.write(ByteBuffer(bytes: bytes[offset..<end]))
                offset = end
            }
            outbound.finish()
            return try await readAll(inbound)
        }
    }

    static func readAll(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async throws -> String {
        var text = ""
        for try await buffer in inbound { text += String(buffer: buffer) }
        return text
    }

    /// Makes the next close send a reset (RST) instead of a clean FIN.
    static func resetOnClose(_ channel: any Channel) async throws {
        guard let provider = channel as? any SocketOptionProvider else {
            throw SluiceError(.internal, "the channel has no socket options")
        }
        try await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
    }
}

// MARK: - Answers

func receipt(_ line: String) throws -> Receipt {
    guard line.hasSuffix("\n"), line.filter({ $0 == "\n" }).count == 1 else {
        throw SluiceError(.internal, "expected one receipt line, got \(line.debugDescription)")
    }
    return try JSONDecoder().decode(Receipt.self, from: Data(line.utf8))
}

/// The `code` of a `{"error":{"code":…,"message":…}}` line.
func errorCode(_ line: String) -> String? {
    guard let data = line.data(using: .utf8),
          let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
          let error = object["error"] as? [String: Any] else { return nil }
    return error["code"] as? String
}

func sha256(_ bytes: some Collection<UInt8>) -> String {
    var computer = DigestAlgorithm.sha256.makeComputer()
    computer.update(ByteBuffer(bytes: Array(bytes)))
    return Hex.encode(computer.finalize())
}

/// An upload in flight with part of its bytes held back (``Client/heldUpload(_:head:tail:)``).
struct HeldUpload {
    let task: Task<String, any Error>
    let releaser: AsyncStream<Void>.Continuation

    /// Sends the rest, half-closes, and returns the server's answer.
    func finish() async throws -> String {
        releaser.yield()
        return try await task.value
    }
}
