import Logging
import SluiceCore
import NIOCore
import NIOPosix
import Synchronization

/// Whether a disk sink's writes may run on the uploading connection's own event loop.
///
/// A write into the page cache usually takes microseconds; handing it to a disk thread
/// costs two thread switches and a wake-up of the event loop for the result, and on a
/// busy machine that is the larger part. Measured on 2 cores (release, `bench/tcp-disk`
/// scenarios into the disk sink): 256 concurrent 1 MiB TCP uploads 1,030–1,240 MB/s at
/// 1.29–1.53 CPU-s per GiB with every write on the disk threads, 1,300–1,370 MB/s at
/// 1.20–1.23 with writes on the event loop; one 256 MiB upload at a time 0.60 → 0.44–0.49
/// CPU-s per GiB. nginx writes request bodies the same way.
///
/// A write can also block: the kernel throttles writers while too much dirty data waits
/// for the disk, and then every connection on that event loop would wait too. So each
/// inline write is timed, and one slower than ``limit`` sends this sink's writes to its
/// disk threads for ``backoff``, after which they are tried inline again; a slow write
/// soon after that doubles the time on the threads (up to ``maxBackoff``), so a disk
/// that stays slow costs an event loop one slow write a minute at most. Creating,
/// closing, renaming and fsyncing files always run on the disk threads (they take
/// directory locks, or wait for the disk by design; measured with creates and links on
/// the event loops: 4 KiB keep-alive PUTs fell from 13,900–17,000 to 10,600–11,200
/// uploads/s, the two event loops waiting on one directory's lock).
final class InlineWrites: Sendable {
    /// The longest an inline write may take; `.zero` turns inline writes off.
    let limit: TimeAmount
    /// How long writes stay on the disk threads after a slow one.
    let backoff: TimeAmount
    private let logger: Logger
    private let root: String
    /// The longest time on the disk threads after repeated slow writes.
    let maxBackoff: TimeAmount
    /// Until when (`NIODeadline.uptimeNanoseconds`) writes go to the disk threads.
    private let threadsUntil = Atomic<UInt64>(0)
    /// The current time on the threads after a slow write, in nanoseconds.
    private let currentBackoff: Atomic<Int64>
    private let noticed = Atomic<Bool>(false)

    static let defaultBackoff = TimeAmount.seconds(1)
    static let defaultMaxBackoff = TimeAmount.seconds(60)

    init(limit: TimeAmount, backoff: TimeAmount = defaultBackoff, maxBackoff: TimeAmount = defaultMaxBackoff, root: String, logger: Logger) {
        self.limit = limit
        self.backoff = backoff
        self.maxBackoff = max(backoff, maxBackoff)
        self.currentBackoff = Atomic(backoff.nanoseconds)
        self.root = root
        self.logger = logger
    }

    /// The event loop to write on now, or `nil` for the disk threads: inline writes are
    /// on, the caller runs on an event loop (a receiver's connection), and no write was
    /// slow within ``backoff``.
    func eventLoop() -> (any EventLoop)? {
        guard limit > .zero, let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop else { return nil }
        guard NIODeadline.now().uptimeNanoseconds >= threadsUntil.load(ordering: .relaxed) else { return nil }
        return eventLoop
    }

    /// How long the next switch to the disk threads lasts (doubles while writes stay slow).
    var currentBackoffTime: TimeAmount { .nanoseconds(currentBackoff.load(ordering: .relaxed)) }

    /// Records how long an inline write took.
    func record(_ took: TimeAmount) {
        guard took > limit else { return }
        let now = NIODeadline.now()
        // Slow again within one backoff of going back inline: double it; otherwise start over.
        let previous = currentBackoff.load(ordering: .relaxed)
        let recentlyBack = now.uptimeNanoseconds < threadsUntil.load(ordering: .relaxed) &+ UInt64(previous)
        let next = recentlyBack ? min(previous * 2, maxBackoff.nanoseconds) : backoff.nanoseconds
        currentBackoff.store(next, ordering: .relaxed)
        threadsUntil.store((now + .nanoseconds(next)).uptimeNanoseconds, ordering: .relaxed)
        func text(_ nanoseconds: Int64) -> String { "\(ConfigDuration(.nanoseconds(nanoseconds)))" }
        let message: Logger.Message = "a write under \(root) took \(text(took.nanoseconds)) on an event loop (inline_writes \(text(limit.nanoseconds))): writes go to the disk threads for \(text(next))"
        if noticed.exchange(true, ordering: .relaxed) {
            logger.debug(message)
        } else {
            logger.notice("\(message) (further such switches are logged at debug level)")
        }
    }
}
