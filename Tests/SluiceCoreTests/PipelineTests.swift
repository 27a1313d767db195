import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

private struct UppercaseStage: Stage {
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        body.transformed { Upper() }
    }
    struct Upper: ChunkTransform {
        mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
            ByteBuffer(bytes: chunk.readableBytesView.map { (97...122).contains($0) ? $0 - 32 : $0 })
        }
        mutating func finish() -> ByteBuffer? { nil }
    }
}

@Suite struct PipelineTests {
    @Test func stagesApplyInOrderAndReceiptReportsBytes() async throws {
        let sink = InMemorySink()
        let pipeline = Pipeline(name: "p", stages: [("upper", UppercaseStage())], sink: sink)
        let receipt = try await pipeline.process(.test(name: "a.txt", bytes: Array("hello world".utf8), chunkSize: 3))
        #expect(sink.bytes(of: "a.txt") == Array("HELLO WORLD".utf8))
        #expect(receipt.bytesReceived == 11)
        #expect(receipt.bytesStored == 11)
        #expect(receipt.location == "memory:a.txt")
        #expect(receipt.jsonLine().contains(#""bytes_received":11"#))
    }

    @Test func clientDigestIsVerified() async throws {
        let bytes = pseudoRandomBytes(count: 100_000)
        var good = DigestAlgorithm.sha256.makeComputer()
        bytes.withUnsafeBytes { good.update(bytes: $0) }
        let sink = InMemorySink()
        let pipeline = Pipeline(name: "p", stages: [], sink: sink)
        let ok = try await pipeline.process(.test(name: "ok", bytes: bytes, chunkSize: 4093,
            expectedDigests: [ExpectedDigest(algorithm: .sha256, bytes: good.finalize(), source: "X-Checksum-Sha256")]))
        #expect(ok.digests["sha256"] == Hex.encode(good.finalize()))

        let wrong = Array(repeating: UInt8(0), count: 32)
        let error = await #expect(throws: SluiceError.self) {
            try await pipeline.process(.test(name: "bad", bytes: bytes,
                expectedDigests: [ExpectedDigest(algorithm: .sha256, bytes: wrong, source: "X-Checksum-Sha256")]))
        }
        #expect(error?.code == .digestMismatch)
        #expect(sink.bytes(of: "bad") == nil)
    }

    @Test func failingBodyCommitsNothing() async throws {
        let sink = InMemorySink()
        let pipeline = Pipeline(name: "p", stages: [], sink: sink)
        let upload = Upload(metadata: UploadMetadata(name: "reset", listener: "t"), body: .failing(after: [1, 2, 3]))
        let error = await #expect(throws: SluiceError.self) { try await pipeline.process(upload) }
        #expect(error?.code == .clientAborted)
        #expect(sink.committed.isEmpty)
    }

    @Test func sizeLimitIsEnforcedWhileStreaming() async throws {
        let sink = InMemorySink()
        let pipeline = Pipeline(name: "p", stages: [], sink: sink)
        var upload = Upload.test(name: "big", bytes: pseudoRandomBytes(count: 10_000), chunkSize: 1000)
        upload.body = upload.body.limited(to: 5000)
        let error = await #expect(throws: SluiceError.self) { try await pipeline.process(upload) }
        #expect(error?.code == .payloadTooLarge)
        #expect(sink.committed.isEmpty)
    }

    @Test func digestDescriptors() {
        var crc = DigestAlgorithm.crc32.makeComputer()
        Array("123456789".utf8).withUnsafeBytes { crc.update(bytes: $0) }
        #expect(Hex.encode(crc.finalize()) == "cbf43926")
        var md5 = DigestAlgorithm.md5.makeComputer()
        Array("".utf8).withUnsafeBytes { md5.update(bytes: $0) }
        #expect(Hex.encode(md5.finalize()) == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(Hex.decode("CBF43926") == [0xcb, 0xf4, 0x39, 0x26])
        #expect(Hex.decode("xyz") == nil)
    }
}

@Suite struct UploadGateTests {
    @Test func queuesThenTimesOut() async throws {
        let gate = UploadGate(maxConcurrent: 1, maxQueued: 1, queueTimeout: .milliseconds(200))
        try await gate.acquire()
        // The second waits in the queue and times out; a third is refused at once.
        let second = Task { try await gate.acquire() }
        // Other tests may keep the cooperative threads busy: wait for the waiter, boundedly.
        for _ in 0..<1000 where gate.queued == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(gate.queued == 1)
        let third = await #expect(throws: SluiceError.self) { try await gate.acquire() }
        #expect(third?.code == .overloaded)
        // The queued one ends by timing out (it is never given a permit).
        let timedOut = await #expect(throws: SluiceError.self) { try await second.value }
        #expect(timedOut?.code == .overloaded)
        #expect(timedOut?.message.contains("waited") == true)
        gate.release()
        #expect(gate.active == 0)
    }

    @Test func waitersAreServedInOrder() async throws {
        let gate = UploadGate(maxConcurrent: 1, maxQueued: 10, queueTimeout: .seconds(10))
        let order = OrderLog()
        try await gate.acquire()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<5 {
                group.addTask {
                    try await gate.withPermit { order.append(i) }
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            gate.release()
            try await group.waitForAll()
        }
        #expect(order.values == [0, 1, 2, 3, 4])
        #expect(gate.active == 0)
    }
}

private final class OrderLog: Sendable {
    private let entries = Mutex<[Int]>([])
    func append(_ i: Int) { entries.withLock { $0.append(i) } }
    var values: [Int] { entries.withLock { $0 } }
}
