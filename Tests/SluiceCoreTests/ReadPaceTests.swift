import NIOCore
import SluiceCore
import Testing


@Suite("read pace")
struct ReadPaceTests {
    let adaptive = AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 128 * 1024, maximum: 128 * 1024)
    let connections = ConnectionLimiter(limit: 1_000, listener: "read-pace-test")

    @Test("a pipeline that takes chunks at once leaves reads at the adaptive size")
    func fastPipeline() {
        let pace = ReadPace()
        let allocator = PacedRecvAllocator(adaptive: adaptive, pace: pace, connections: connections)
        #expect(allocator.nextBufferSize() == 128 * 1024)
        pace.taken(bytes: 128 * 1024, after: .microseconds(50))
        #expect(allocator.nextBufferSize() == 128 * 1024)
        #expect(allocator.buffer(allocator: ByteBufferAllocator()).capacity >= 128 * 1024)
        // Even a busy event loop's delay (10 ms for 128 KiB: 13 MB/s) leaves 50 ms' worth above 128 KiB.
        pace.taken(bytes: 128 * 1024, after: .milliseconds(10))
        #expect(allocator.nextBufferSize() == 128 * 1024)
    }

    @Test("a slow pipeline caps reads at 50 ms of its pace, never below 16 KiB; they grow back when it speeds up")
    func slowPipeline() {
        let pace = ReadPace()
        let allocator = PacedRecvAllocator(adaptive: adaptive, pace: pace, connections: connections)
        // 128 KiB taken after 200 ms: 640 KiB/s, so 32 KiB per 50 ms.
        pace.taken(bytes: 128 * 1024, after: .milliseconds(200))
        #expect(allocator.nextBufferSize() == 32 * 1024)
        let buffer = allocator.buffer(allocator: ByteBufferAllocator())
        #expect(buffer.capacity >= 32 * 1024 && buffer.capacity < 64 * 1024)
        // 200 KB/s (a 50 MB/s limit shared by 256 uploads): the floor.
        pace.taken(bytes: 32 * 1024, after: .milliseconds(160))
        #expect(allocator.nextBufferSize() == ReadPace.minimumReadSize)
        // Back to taking chunks at once: no cap.
        pace.taken(bytes: 16 * 1024, after: .microseconds(20))
        #expect(allocator.nextBufferSize() == 128 * 1024)
    }

    @Test("many open connections share the read budget: 512 KiB reads for a few, less for many, never below 16 KiB")
    func sharedBudget() {
        let large = AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 512 * 1024, maximum: 512 * 1024)
        let limiter = ConnectionLimiter(limit: 10_000, listener: "read-budget-test")
        let allocator = PacedRecvAllocator(adaptive: large, pace: ReadPace(), connections: limiter)
        #expect(allocator.nextBufferSize() == 512 * 1024)
        func open(_ n: Int) { for _ in 0..<n { #expect(limiter.tryAcquire()) } }
        open(64)
        #expect(allocator.nextBufferSize() == PacedRecvAllocator.readBudget / 64)
        open(192)
        #expect(allocator.nextBufferSize() == PacedRecvAllocator.readBudget / 256)
        open(4_000)
        #expect(allocator.nextBufferSize() == ReadPace.minimumReadSize)
        for _ in 0..<(64 + 192 + 4_000) { limiter.release() }
        #expect(allocator.nextBufferSize() == 512 * 1024)
    }

    @Test("a zero gap is not a division by zero")
    func zeroGap() {
        let pace = ReadPace()
        pace.taken(bytes: 1, after: .nanoseconds(0))
        #expect(pace.cap >= 16 * 1024)
        pace.taken(bytes: 0, after: .seconds(1))
        #expect(pace.cap == ReadPace.minimumReadSize)
    }

    @Test("a receiver's limit bounds the cap below the pace's, and lifting it restores the pace's")
    func limit() {
        let pace = ReadPace()
        pace.taken(bytes: 64 * 1024, after: .milliseconds(100))  // 32 KiB per 50 ms
        #expect(pace.cap == 32 * 1024)
        pace.limit = 1_000
        #expect(pace.cap == 1_000)
        pace.limit = 1 << 20
        #expect(pace.cap == 32 * 1024)
        pace.limit = .max
        pace.taken(bytes: 64 * 1024, after: .nanoseconds(0))
        #expect(pace.cap > 1 << 30)
    }
}
