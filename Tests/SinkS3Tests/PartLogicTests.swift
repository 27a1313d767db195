import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import SinkS3

/// The parts of the sink that need no server: part sizing, the reader, the memory cap.
@Suite struct PartLogicTests {
    @Test func partSizeGrowsSoUnknownLengthsFitInTenThousandParts() {
        let base: Int64 = 8 << 20
        let cap: Int64 = 1 << 40
        #expect(S3Sink.partSize(1, base: base, cap: cap) == base)
        #expect(S3Sink.partSize(1000, base: base, cap: cap) == base)
        #expect(S3Sink.partSize(1001, base: base, cap: cap) == 2 * base)
        #expect(S3Sink.partSize(10_000, base: base, cap: cap) == 4 << 30)
        #expect(S3Sink.partSize(10_000, base: 64 << 20, cap: cap) == S3Sink.maxPartSize)
        func capacity(base: Int64) -> Int64 { (1...S3Sink.maxParts).reduce(0) { $0 + S3Sink.partSize($1, base: base, cap: cap) } }
        #expect(capacity(base: base) >= 5 << 40)  // from the default 8MiB: S3's largest object, 5 TiB
        #expect(capacity(base: 5 << 20) >= 4_800 << 30)  // from the smallest part: 4.8 TiB
        #expect(S3Sink.partSize(5000, base: base, cap: 64 << 20) == 64 << 20)  // never above the memory cap
    }

    @Test func readerSplitsChunksAcrossParts() async throws {
        let bytes = pseudoRandomBytes(count: 25_000)
        var reader = PartReader(iterator: UploadBody.bytes(bytes, chunkSize: 3_001).makeAsyncIterator())
        var parts: [[UInt8]] = []
        var ended = false
        while !ended {
            let (buffer, done) = try await reader.fill(capacity: 10_000)
            parts.append(Array(buffer.readableBytesView))
            ended = done
        }
        #expect(parts.map(\.count) == [10_000, 10_000, 5_000])
        #expect(parts.flatMap { $0 } == bytes)
    }

    @Test func readerKnowsAnExactMultipleEndsWithTheLastFullPart() async throws {
        var reader = PartReader(iterator: UploadBody.bytes(pseudoRandomBytes(count: 20_000), chunkSize: 5_000).makeAsyncIterator())
        let (first, firstEnded) = try await reader.fill(capacity: 10_000)
        let (second, secondEnded) = try await reader.fill(capacity: 10_000)
        #expect(first.readableBytes == 10_000 && !firstEnded)
        #expect(second.readableBytes == 10_000 && secondEnded)
    }

    @Test func readerOnEmptyBody() async throws {
        var reader = PartReader(iterator: UploadBody.empty.makeAsyncIterator())
        let (buffer, ended) = try await reader.fill(capacity: 10)
        #expect(buffer.readableBytes == 0 && ended)
    }

    @Test func memoryBudgetBoundsAndCancels() async throws {
        let budget = MemoryBudget(capacity: 100)
        try await budget.acquire(60)
        try await budget.acquire(40)
        #expect(budget.available == 0)
        let waiter = Task { try await budget.acquire(50) }
        try await Task.sleep(for: .milliseconds(50))
        budget.release(60)
        try await waiter.value
        #expect(budget.available == 10)
        let cancelled = Task { try await budget.acquire(80) }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        budget.release(90)
        #expect(budget.available == 100)
    }

    @Test func errorsInsideOKAnswersAreFound() {
        let body = ByteBuffer(string: "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error &amp; more</Message></Error>")
        let error = S3Error(embeddedIn: S3Response(status: 200, headers: [:], body: body))
        #expect(error?.code == "InternalError")
        #expect(error?.message == "We encountered an internal error & more")
        #expect(error?.isRetryable == true)
        #expect(S3Error(embeddedIn: S3Response(status: 200, headers: [:], body: ByteBuffer(string: "<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>"))) == nil)
    }
}
