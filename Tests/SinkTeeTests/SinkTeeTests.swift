import Foundation
import NIOCore
import SinkRotate
import SinkSpool
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import SinkTee

/// A two-phase sink kept in memory: fails after `failAfter` bytes, or reads slowly.
/// A counter tasks share.
private final class Count: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
    func load() -> Int { value.load(ordering: .relaxed) }
}

private final class MemoryPreparingSink: PreparingSink {
    let failAfter: Int?
    let delayPerChunk: Duration?
    let committed = Mutex<[[UInt8]]>([])
    let aborted = Count()
    let chunksRead = Count()

    init(failAfter: Int? = nil, delayPerChunk: Duration? = nil) {
        self.failAfter = failAfter
        self.delayPerChunk = delayPerChunk
    }

    final class Prepared: PreparedObject {
        let sink: MemoryPreparingSink
        let bytes: [UInt8]
        init(sink: MemoryPreparingSink, bytes: [UInt8]) {
            self.sink = sink
            self.bytes = bytes
        }
        func commit() async throws -> SinkReceipt {
            sink.committed.withLock { $0.append(bytes) }
            return SinkReceipt(location: "memory", bytesStored: Int64(bytes.count))
        }
        func abort() async { sink.aborted.add() }
    }

    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        var bytes: [UInt8] = []
        for try await chunk in body {
            bytes += chunk.readableBytesView
            chunksRead.add()
            if let failAfter, bytes.count >= failAfter { throw SluiceError(.insufficientStorage, "memory full") }
            if let delayPerChunk { try await Task.sleep(for: delayPerChunk) }
        }
        return Prepared(sink: self, bytes: bytes)
    }
}

/// Reverses the bytes of each chunk (a stand-in for a branch's own stage).
private struct ReverseStage: Stage {
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        body.transformed { Reverse() }
    }
    struct Reverse: ChunkTransform {
        mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? { ByteBuffer(bytes: chunk.readableBytesView.reversed()) }
        mutating func finish() -> ByteBuffer? { nil }
    }
}

/// A body that counts how many chunks were pulled from it.
private struct CountingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let chunks: Int
    let pulled: Count
    func makeAsyncIterator() -> Iterator { Iterator(remaining: chunks, pulled: pulled) }
    struct Iterator: AsyncIteratorProtocol {
        var remaining: Int
        let pulled: Count
        mutating func next() async throws -> ByteBuffer? {
            guard remaining > 0 else { return nil }
            remaining -= 1
            pulled.add()
            return ByteBuffer(repeating: 7, count: 1000)
        }
    }
}

private func spoolSink(_ root: String) throws -> any PreparingSink {
    try #require(try SinkSpool.make(.init(root: root), environment: PluginEnvironment()) as? any PreparingSink)
}

@Suite("tee sink", .timeLimit(.minutes(1)))
struct SinkTeeTests {
    @Test("every branch stores every byte through its own stages; the receipt lists all locations")
    func fansOut() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-tee")
        defer { dir.remove() }
        let memory = MemoryPreparingSink()
        let tee = TeeSink(branches: [
            .init(stages: [], sink: try spoolSink(dir.path + "/a")),
            .init(stages: [ReverseStage()], sink: memory),
        ])
        try await tee.start()
        let payload = pseudoRandomBytes(count: 300_000)
        let receipt = try await Pipeline(name: "tee", stages: [], sink: tee).process(.test(name: "x", bytes: payload, chunkSize: 10_000))
        await tee.stop()
        let files = dir.list("a/new")
        #expect(files.count == 1)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/a/new/" + files[0]))) == payload)
        let expected = stride(from: 0, to: payload.count, by: 10_000).flatMap { payload[$0..<min($0 + 10_000, payload.count)].reversed() }
        #expect(memory.committed.withLock { $0 } == [expected])
        #expect(receipt.location == "new/\(files[0]), memory")
        #expect(receipt.bytesStored == 600_000)
    }

    @Test("a failing branch fails the upload and leaves nothing in the others")
    func allOrNothing() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-tee")
        defer { dir.remove() }
        let failing = MemoryPreparingSink(failAfter: 50_000)
        let tee = TeeSink(branches: [
            .init(stages: [], sink: try spoolSink(dir.path + "/a")),
            .init(stages: [], sink: failing),
            .init(stages: [], sink: try spoolSink(dir.path + "/b")),
        ])
        try await tee.start()
        do {
            _ = try await Pipeline(name: "tee", stages: [], sink: tee).process(.test(name: "x", bytes: pseudoRandomBytes(count: 200_000), chunkSize: 10_000))
            Issue.record("expected the upload to fail")
        } catch let error as SluiceError {
            #expect(error.code == .insufficientStorage)
        }
        for branch in ["a", "b"] {
            #expect(dir.list("\(branch)/new").isEmpty)
            #expect(dir.list("\(branch)/tmp").isEmpty)
        }
        #expect(failing.committed.withLock { $0 }.isEmpty)

        // A body that fails: every branch aborts.
        let memory = MemoryPreparingSink()
        let tee2 = TeeSink(branches: [.init(stages: [], sink: try spoolSink(dir.path + "/c")), .init(stages: [], sink: memory)])
        try await tee2.start()
        let upload = Upload(metadata: UploadMetadata(name: "y", listener: "t"), body: .failing(after: Array(repeating: 1, count: 4096)))
        await #expect(throws: SluiceError.self) { try await Pipeline(name: "tee", stages: [], sink: tee2).process(upload) }
        #expect(dir.list("c/new").isEmpty && dir.list("c/tmp").isEmpty)
        #expect(memory.committed.withLock { $0 }.isEmpty)
    }

    @Test("the slowest branch paces the body: read-ahead stays bounded")
    func backPressure() async throws {
        let fast = MemoryPreparingSink()
        let slow = MemoryPreparingSink(delayPerChunk: .milliseconds(5))
        let tee = TeeSink(branches: [.init(stages: [], sink: fast), .init(stages: [], sink: slow)])
        let pulled = Count()
        var maxLead = 0
        let upload = Upload(metadata: UploadMetadata(name: "z", listener: "t"), body: UploadBody(CountingBody(chunks: 200, pulled: pulled)))
        async let stored = Pipeline(name: "tee", stages: [], sink: tee).process(upload)
        while slow.committed.withLock({ $0.isEmpty }) && pulled.load() < 200 {
            maxLead = max(maxLead, pulled.load() - slow.chunksRead.load())
            try await Task.sleep(for: .milliseconds(1))
        }
        let receipt = try await stored
        #expect(receipt.bytesStored == 400_000)
        #expect(maxLead <= TeeSink.bufferedChunks + 2)
    }

    @Test("config: branches are pipelines; a branch sink that cannot prepare is an error naming its key path")
    func configuration() throws {
        var registry = PluginRegistry()
        registry.register(SinkTee.self)
        registry.register(SinkSpool.self)
        registry.register(SinkRotate.self)
        let good = """
        pipelines:
          both:
            sink:
              type: tee
              branches:
                - sink: { type: spool, root: /tmp/sluice-tee-a }
                - sink:
                    type: tee
                    branches:
                      - sink: { type: spool, root: /tmp/sluice-tee-b }
        """
        let built = try LoadedConfig.parse(good, file: "good.yaml", registry: registry).build(logger: .init(label: "t"))
        #expect(built.pipelines["both"]?.sink is TeeSink)

        let bad = """
        pipelines:
          both:
            sink:
              type: tee
              branches:
                - sink: { type: spool, root: /tmp/sluice-tee-a }
                - sink: { type: rotate, root: /tmp/sluice-tee-r, path: app.log }
        """
        #expect {
            try LoadedConfig.parse(bad, file: "bad.yaml", registry: registry).build(logger: .init(label: "t"))
        } throws: { error in
            let text = "\(error)"
            return text.contains("bad.yaml:7: pipelines.both.sink.branches[1].sink") && text.contains("\"rotate\"")
        }
    }
}
