import Foundation
import NIOCore
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

@Suite("tcp receiver into the disk sink", .timeLimit(.minutes(1)))
struct TCPReceiverTests {
    @Test("50 concurrent uploads land byte-exact, each with a matching receipt")
    func concurrentUploads() async throws {
        let server = try await TestServer.start()
        defer { server.scratch.remove() }
        let sizes = (0..<50).map { i in i == 0 ? 1 : i == 1 ? 1 << 20 : (i * 104_729) % (1 << 20) + 1 }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, size) in sizes.enumerated() {
                group.addTask {
                    let payload = pseudoRandomBytes(count: size, seed: UInt64(i + 1))
                    return (i, try await Client.upload(payload, port: server.port, piece: 16_384 + i * 1000))
                }
            }
            var all: [(Int, String)] = []
            for try await result in group { all.append(result) }
            return all
        }
        var locations = Set<String>()
        for (i, line) in results {
            let payload = pseudoRandomBytes(count: sizes[i], seed: UInt64(i + 1))
            let r = try receipt(line)
            #expect(r.bytesReceived == Int64(payload.count))
            #expect(r.bytesStored == Int64(payload.count))
            #expect(r.digests["sha256"] == sha256(payload))
            #expect(r.pipeline == "p")
            #expect(r.name.hasPrefix("tcp-"))
            let stored = try #require(server.scratch.contents("root/" + r.location))
            #expect(sha256(stored) == sha256(payload))
            locations.insert(r.location)
        }
        #expect(locations.count == 50)
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").count == 50)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    /// With no stage the upload is spliced from the socket (``SpliceTests``).
    @Test("a client that resets mid-upload leaves no file and no temporary file", arguments: [false, true])
    func resetMidUpload(spliced: Bool) async throws {
        let server = try await TestServer.start(stages: spliced ? [] : ["test_sha256"])
        defer { server.scratch.remove() }
        // No half-close: the client's close is a reset (SO_LINGER 0), never a FIN.
        let channel = try await Client.connect(server.port, halfClose: false)
        try await channel.executeThenClose { _, outbound in
            try await outbound.write(ByteBuffer(bytes: pseudoRandomBytes(count: 300_000)))
            // Let the server start the upload (a temporary file exists) before the reset.
            try await server.logs.wait(for: "upload start") { _ in server.scratch.temporaries(root: "root").count == 1 }
            try await Client.resetOnClose(channel.channel)
        }
        let outcome = try await server.logs.wait(for: "outcome") { $0.message.hasPrefix("upload rejected") }
        #expect(outcome.metadata["code"] == "client_aborted")
        // The server keeps serving.
        let after = try receipt(try await Client.upload(Array("after".utf8), port: server.port))
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root") == [after.location])
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("a hostile name template is refused when the config loads")
    func hostileTemplateRefused() async throws {
        for (listenerName, sinkName) in [("{listener}", "../{name}"), ("{listener}", "/etc/{name}"), ("../{uuid}", "{name}"), ("{name}", "{name}")] {
            let yaml = """
            listeners:
              tcp: { type: tcp, listen: "127.0.0.1:0", pipeline: p, name: "\(listenerName)" }
            pipelines:
              p:
                sink: { type: disk, root: /tmp/never, name: "\(sinkName)" }
            """
            do {
                let config = try LoadedConfig.parse(yaml, file: "hostile.yaml", registry: testRegistry)
                _ = try config.build(logger: LogCapture().logger)
                // The receiver-side template renders safe names; a bad one must fail at its first upload.
                Issue.record("accepted listener name \(listenerName), sink name \(sinkName)")
            } catch {
                #expect("\(error)".contains("hostile.yaml:"), "\(error)")
            }
        }
    }

    @Test("a symbolic link in the root cannot take an upload outside it")
    func symlinkEscape() async throws {
        let server = try await TestServer.start(sink: "name: \"link/{name}\"")
        defer { server.scratch.remove() }
        try FileManager.default.createDirectory(atPath: server.scratch.path + "/outside", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: server.scratch.path + "/root/link", withDestinationPath: server.scratch.path + "/outside")
        let line = try await Client.upload(Array("evil".utf8), port: server.port)
        #expect(errorCode(line) == "invalid_name")
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "outside").isEmpty)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("an upload over max_upload_size is refused and leaves nothing; one at the limit is stored", arguments: [false, true])
    func maxUploadSize(spliced: Bool) async throws {
        let server = try await TestServer.start(listener: "max_upload_size: 100KiB", stages: spliced ? [] : ["test_sha256"])
        defer { server.scratch.remove() }
        let atLimit = try receipt(try await Client.upload(pseudoRandomBytes(count: 100 * 1024), port: server.port))
        #expect(atLimit.bytesReceived == 100 * 1024)
        // The server stops reading and closes: the client sees the error line, or a reset if
        // it was still sending. Either way nothing is stored.
        let line = (try? await Client.upload(pseudoRandomBytes(count: 1 << 20), port: server.port)) ?? ""
        if !line.isEmpty { #expect(errorCode(line) == "payload_too_large") }
        let outcome = try await server.logs.wait(for: "rejection") { $0.message.hasPrefix("upload rejected") }
        #expect(outcome.metadata["code"] == "payload_too_large")
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root") == [atLimit.location])
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("max_concurrent_uploads queues, then refuses after queue_timeout, or at once when the queue is full")
    func uploadQueue() async throws {
        let server = try await TestServer.start(listener: "max_concurrent_uploads: 1\nmax_queued_uploads: 1\nqueue_timeout: 300ms")
        defer { server.scratch.remove() }
        // A holds the only slot: it sends, but does not finish yet.
        let a = try await Client.connect(server.port)
        try await a.executeThenClose { aInbound, aOutbound in
            try await aOutbound.write(ByteBuffer(string: "first part "))
            try await server.logs.wait(for: "A started") { _ in server.scratch.temporaries(root: "root").count == 1 }

            // B waits in the queue, C finds the queue full.
            let started = ContinuousClock.now
            async let b = Client.upload(Array("queued".utf8), port: server.port)
            try await Task.sleep(for: .milliseconds(100))
            let c = try await Client.upload(Array("refused".utf8), port: server.port)
            let cElapsed = ContinuousClock.now - started
            #expect(errorCode(c) == "overloaded")
            let bLine = try await b
            let bElapsed = ContinuousClock.now - started
            #expect(errorCode(bLine) == "overloaded")
            #expect(bElapsed >= .milliseconds(280))
            #expect(bElapsed < .seconds(3))
            // C was not queued: it was answered before B's wait ran out.
            #expect(cElapsed < bElapsed)

            // A still completes.
            try await aOutbound.write(ByteBuffer(string: "second part"))
            aOutbound.finish()
            let r = try receipt(try await Client.readAll(aInbound))
            #expect(server.scratch.contents("root/" + r.location) == Array("first part second part".utf8))
        }
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").count == 1)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("a connection that closes without sending a byte is not an upload")
    func emptyConnection() async throws {
        let server = try await TestServer.start()
        defer { server.scratch.remove() }
        #expect(try await Client.upload([], port: server.port) == "")  // half-close, then read: no receipt
        let channel = try await Client.connect(server.port)  // a full close, like a health check
        try await channel.executeThenClose { _, _ in }
        try await server.logs.wait(for: "health checks") { $0.message.contains("not an upload") }
        // A real upload after them still works, and is the only outcome logged.
        _ = try receipt(try await Client.upload(Array("x".utf8), port: server.port))
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").count == 1)
        #expect(server.logs.outcomes.count == 1)
        #expect(server.logs.all.filter { $0.message.contains("not an upload") }.count == 2)
    }

    /// With a prebuffer the stalled bytes are still being gathered (no upload started yet):
    /// the upload starts with them and fails the same way.
    @Test("idle_timeout closes a stalled upload and discards it (started, or still gathering its prebuffer)",
          arguments: ["prebuffer: 0", "prebuffer: 64KiB"])
    func idleTimeout(prebuffer: String) async throws {
        // 2s: the idle clock starts at the accept, and a loaded run (CI runs every suite at once
        // on 2 cores) has delayed the client's first write past 300 ms three times running.
        let server = try await TestServer.start(listener: "\(prebuffer)\nidle_timeout: 2s")
        defer { server.scratch.remove() }
        var stalled: (line: String, outcome: LogCapture.Entry)?
        for _ in 0..<3 where stalled == nil {
            let started = ContinuousClock.now  // before connecting: the server's clock cannot start earlier
            stalled = try await Client.stall("some bytes, then silence", server: server)
            let elapsed = ContinuousClock.now - started
            #expect(elapsed >= .milliseconds(1_950), "\(elapsed)")
        }
        #expect(errorCode(stalled?.line ?? "") == "timeout")
        #expect(stalled?.outcome.metadata["code"] == "timeout")
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").isEmpty)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("max_connections: one more is accepted and closed at once")
    func maxConnections() async throws {
        let server = try await TestServer.start(listener: "max_connections: 2")
        defer { server.scratch.remove() }
        // Two uploads in progress hold both connection slots. (Waiting for them on the
        // server side matters: accepted connections can reach the accept loop out of order.)
        let first = try await Client.connect(server.port)
        let second = try await Client.connect(server.port)
        try await first.executeThenClose { _, firstOut in
            try await second.executeThenClose { _, secondOut in
                try await firstOut.write(ByteBuffer(string: "1"))
                try await secondOut.write(ByteBuffer(string: "2"))
                try await server.logs.wait(for: "two uploads") { _ in server.scratch.temporaries(root: "root").count == 2 }
                // Closed unread: the client sees the end of the stream, or a reset if its bytes arrived first.
                let third = (try? await Client.upload(Array("x".utf8), port: server.port)) ?? ""
                #expect(third == "")
                try await server.logs.wait(for: "warning") { $0.level == .warning && $0.message.contains("max_connections") }
            }
        }
        // Slots free up again.
        var stored = false
        for _ in 0..<50 where !stored {
            stored = (try? receipt(try await Client.upload(Array("y".utf8), port: server.port))) != nil
            if !stored { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(stored)
        await server.generation.shutdown()
    }

    @Test("graceful shutdown stops accepting, lets an in-flight upload finish, then stops")
    func drain() async throws {
        let server = try await TestServer.start()
        defer { server.scratch.remove() }
        let port = server.port
        let channel = try await Client.connect(port)
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "before shutdown, "))
            try await server.logs.wait(for: "upload started") { _ in server.scratch.temporaries(root: "root").count == 1 }
            let stopping = Task { await server.generation.shutdown() }
            try await server.logs.wait(for: "stop accepting") { $0.message.hasPrefix("stopping: no new connections") }
            var refused = false
            for _ in 0..<100 where !refused {
                do {
                    try await Client.connect(port).executeThenClose { _, _ in }
                    try await Task.sleep(for: .milliseconds(20))
                } catch {
                    refused = true
                }
            }
            #expect(refused)
            try await outbound.write(ByteBuffer(string: "after shutdown began"))
            outbound.finish()
            let r = try receipt(try await Client.readAll(inbound))
            #expect(server.scratch.contents("root/" + r.location) == Array("before shutdown, after shutdown began".utf8))
            await stopping.value
        }
    }

    /// With no stage the upload is spliced (waiting for bytes on the socket, not on NIO's stream).
    @Test("when the drain timeout runs out, in-flight uploads are aborted and leave nothing", arguments: [false, true])
    func drainTimeout(spliced: Bool) async throws {
        let server = try await TestServer.start(stages: spliced ? [] : ["test_sha256"], drainTimeout: .milliseconds(300))
        defer { server.scratch.remove() }
        let channel = try await Client.connect(server.port)
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: pseudoRandomBytes(count: 200_000)))
            try await server.logs.wait(for: "upload started") { _ in server.scratch.temporaries(root: "root").count == 1 }
            let started = ContinuousClock.now
            await server.generation.shutdown()
            #expect(ContinuousClock.now - started < .seconds(3))
            let line = try await Client.readAll(inbound)
            #expect(line.isEmpty || errorCode(line) == "shutting_down")
        }
        #expect(server.scratch.files(in: "root").isEmpty)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
        let outcome = try await server.logs.wait(for: "outcome") { $0.message.hasPrefix("upload") }
        // The abort is logged as a shutdown; when cancellation reaches the sink's write first
        // it surfaces as a cancelled upload. Either way nothing was committed (checked above).
        #expect(["shutting_down", "client_aborted"].contains(outcome.metadata["code"] ?? ""))
    }

    @Test("lines framing: chunks end on record boundaries, records stay whole, a final newline is added")
    func linesFraming() async throws {
        let server = try await TestServer.start(listener: "framing: lines", stages: ["test_record_check", "test_sha256"])
        defer { server.scratch.remove() }
        var text = ""
        for i in 0..<20_000 { text += "record \(i) " + String(repeating: "x", count: i % 97) + "\n" }
        text += "last record without newline"
        let chunksBefore = TestRecordCheckPlugin.chunks.load(ordering: .relaxed)
        // Odd piece sizes split records everywhere.
        let r = try receipt(try await Client.upload(Array(text.utf8), port: server.port, piece: 4093))
        let chunks = TestRecordCheckPlugin.chunks.load(ordering: .relaxed) - chunksBefore
        let stored = try #require(server.scratch.contents("root/" + r.location))
        #expect(stored == Array((text + "\n").utf8))
        // Lines framing adds the missing final newline before the pipeline counts the bytes.
        #expect(r.bytesReceived == Int64(text.utf8.count + 1))
        // Many records per chunk, not one chunk per record.
        #expect(chunks < 20_000 / 10, "\(chunks) chunks")
        await server.generation.shutdown()
    }

    @Test("lines framing: a long record is truncated (with a warning) or rejected, as configured")
    func longRecords() async throws {
        let long = String(repeating: "L", count: 250)
        let text = "short\n\(long)\nafter\n"
        let truncating = try await TestServer.start(listener: "framing: lines\nmax_record_length: 100")
        defer { truncating.scratch.remove() }
        let r = try receipt(try await Client.upload(Array(text.utf8), port: truncating.port, piece: 7))
        #expect(truncating.scratch.contents("root/" + r.location) == Array("short\n\(long.prefix(100))\nafter\n".utf8))
        try await truncating.logs.wait(for: "warning") { $0.level == .warning && $0.message.contains("max_record_length") }
        await truncating.generation.shutdown()

        let rejecting = try await TestServer.start(listener: "framing: lines\nmax_record_length: 100\non_long_record: reject")
        defer { rejecting.scratch.remove() }
        let line = try await Client.upload(Array(text.utf8), port: rejecting.port)
        #expect(errorCode(line) == "payload_too_large")
        await rejecting.generation.shutdown()
        #expect(rejecting.scratch.files(in: "root").isEmpty)
        #expect(rejecting.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("receipt: false writes nothing back")
    func noReceipt() async throws {
        let server = try await TestServer.start(listener: "receipt: false")
        defer { server.scratch.remove() }
        #expect(try await Client.upload(Array("quiet".utf8), port: server.port) == "")
        try await server.logs.wait(for: "stored") { $0.message.hasPrefix("upload stored") }
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").count == 1)
    }

    @Test("config errors name the file, line and key")
    func configErrors() {
        let cases: [(String, String)] = [
            ("framing: words", "listeners.tcp.framing: expected one of stream, lines"),
            ("max_record_length: 1KiB", "listeners.tcp.max_record_length: applies only to framing: lines"),
            ("max_concurrent_uploads: 0", "listeners.tcp.max_concurrent_uploads: must be at least 1"),
            ("queue_timeout: soon", "listeners.tcp.queue_timeout: expected a duration"),
            ("max_upload_size: lots", "listeners.tcp.max_upload_size: expected a size"),
            ("prebuffer: 17MiB", "listeners.tcp.prebuffer: must be at most 16MiB"),
            ("name: \"{sha256}\"", "cannot be used here"),
            ("pipeline: nope", "listeners.tcp.pipeline: unknown pipeline \"nope\" (known: p)"),
            ("max_conections: 5", "unknown key \"max_conections\" (did you mean \"max_connections\"?)"),
        ]
        for (extra, message) in cases {
            let yaml = """
            listeners:
              tcp:
                type: tcp
                listen: 127.0.0.1:0
                \(extra.hasPrefix("pipeline:") ? extra : "pipeline: p\n    " + extra)
            pipelines:
              p:
                sink: { type: disk, root: /tmp/never }
            """
            do {
                let config = try LoadedConfig.parse(yaml, file: "bad.yaml", registry: testRegistry)
                _ = try config.build(logger: LogCapture().logger)
                Issue.record("accepted: \(extra)")
            } catch {
                #expect("\(error)".contains("bad.yaml:"), "\(error)")
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
