import NIOCore

/// Read sizes that follow the consumer: large reads while the pipeline keeps up,
/// small ones while it holds back.
///
/// Under back pressure (a rate limit, a slow disk or store) every read fills its
/// buffer, so an adaptive allocator settles on its largest size, and each waiting
/// connection holds two or three of those buffers (one in the pipeline, one queued,
/// one in the read that stopped) — measured: 256 uploads behind a 50 MB/s
/// `rate_limit` held ~450 KiB each with 128 KiB reads (server RSS ~160 MiB), ~130 KiB
/// each with reads paced as below (~70 MiB).
///
/// The pace is the rate at which the pipeline takes data: the bytes of the last chunk
/// over the time from its delivery to the pipeline asking for the next. A read is
/// capped at what the pipeline takes in ``window`` at that rate (at least
/// ``minimumReadSize``): the rest waits in the kernel's socket buffer, and TCP flow
/// control slows the sender. A pipeline that keeps up asks at once, so its rate is
/// high and the cap never binds; a busy event loop only lengthens the gap a little,
/// which a rate-based cap tolerates where a fixed time threshold would not (measured:
/// a 20 ms threshold throttled 16 fast uploads sharing two cores).
///
/// One per connection, shared by the channel's ``PacedRecvAllocator`` (which the
/// channel calls when it reads) and the receiver's handlers, which report data
/// delivered (``didDeliver(bytes:)``) and reads requested (``willRead()``). Both
/// receivers use it: `tcp` (its connection watchdog) and `http` (its connection guard).
public final class ReadPace: @unchecked Sendable {
    // @unchecked: every member is used only on the connection's event loop — by the
    // receiver's channel handlers and by the channel's read path, which calls the
    // allocator — so no two threads ever touch it.

    /// How much time's worth of the pipeline's pace one read may hold.
    public static let window = TimeAmount.milliseconds(50)
    /// The smallest cap: below it, reads would cost more than the memory they save.
    public static let minimumReadSize = 16 * 1024

    /// The largest read allowed now: the pace's cap, or ``limit`` if lower.
    public var cap: Int { min(paceCap, limit) }
    /// The receiver's own bound on the next reads, such as the bytes a connection still
    /// gathers before its upload starts (`Int.max`: none).
    public var limit = Int.max
    private var paceCap = Int.max
    /// When the last data went up the pipeline, and how much; `nil` once the next read was asked for.
    private var delivered: (at: NIODeadline, bytes: Int)?

    public init() {}

    /// A read delivered `bytes` towards the pipeline (call from `channelRead`).
    public func didDeliver(bytes: Int) {
        delivered = (.now(), bytes)
    }

    /// The pipeline asked for more (call from the outbound `read`).
    public func willRead() {
        guard let last = delivered else { return }
        delivered = nil
        taken(bytes: last.bytes, after: .now() - last.at)
    }

    /// Records that the pipeline asked for more `gap` after it was handed `bytes`.
    public func taken(bytes: Int, after gap: TimeAmount) {
        let nanoseconds = max(gap.nanoseconds, 1)
        let windowBytes = Double(bytes) * Double(Self.window.nanoseconds) / Double(nanoseconds)
        paceCap = windowBytes >= Double(Int.max / 2) ? Int.max : max(Self.minimumReadSize, Int(windowBytes))
    }
}

/// The channel's receive allocator: the adaptive allocator's choice, capped by the
/// pipeline's pace (``ReadPace``) and by a share of ``readBudget`` among the listener's
/// open connections.
///
/// Larger reads cost less CPU per byte (fewer wake-ups, pipeline steps and disk
/// writes), but every connection may hold two or three of its reads. Measured on 2 cores
/// into the disk sink, 512 KiB reads with this budget against 128 KiB reads: one 256 MiB
/// upload 0.59–0.61 CPU-s per GiB against 0.87–0.97, 16 × 16 MiB 0.73–0.79 against
/// 0.96–1.01, 256 × 1 MiB no different (1.45–2.09 against 1.74–2.13; a fixed 512 KiB
/// made it 10–15% worse, its buffers no longer fitting the caches). So a few connections read up to
/// ``maximumReadSize`` and many share ``readBudget``: 512 KiB each up to 64 connections,
/// 128 KiB at 256, never below ``ReadPace/minimumReadSize``.
public struct PacedRecvAllocator: RecvByteBufferAllocator {
    public var adaptive: AdaptiveRecvByteBufferAllocator
    public let pace: ReadPace
    public let connections: ConnectionLimiter

    public static let readBudget = 32 << 20

    public init(adaptive: AdaptiveRecvByteBufferAllocator, pace: ReadPace, connections: ConnectionLimiter) {
        self.adaptive = adaptive
        self.pace = pace
        self.connections = connections
    }

    public func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(capacity: size)
    }

    public func nextBufferSize() -> Int? {
        size
    }

    private var size: Int {
        let share = max(ReadPace.minimumReadSize, Self.readBudget / max(1, connections.current))
        return min(adaptive.nextBufferSize() ?? adaptive.maximum, pace.cap, share)
    }

    public mutating func record(actualReadBytes: Int) -> Bool {
        adaptive.record(actualReadBytes: actualReadBytes)
    }
}
