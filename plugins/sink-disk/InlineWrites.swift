import Logging
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
/// disk threads for ``backoff``, after which they are tried inline again. Creating,
/// closing, renaming and fsyncing files always run on the disk threads (they take
/// directory locks, or wait for the disk by design).
final class InlineWrites: Sendable {
    /// The longest an inline write may take; `.zero` turns inline writes off.
    let limit: TimeAmount
    /// How long writes stay on the disk threads after a slow one.
    let backoff: TimeAmount
    private let logger: Logger
    private let root: String
    /// Until when (`NIODeadline.uptimeNanoseconds`) writes go to the disk threads.
    private let threadsUntil = Atomic<UInt64>(0)
    private let noticed = Atomic<Bool>(false)

    static let defaultBackoff = TimeAmount.seconds(1)

    init(limit: TimeAmount, backoff: TimeAmount = defaultBackoff, root: String, logger: Logger) {
        self.limit = limit
        self.backoff = backoff
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

    /// Records how long an inline write took.
    func record(_ took: TimeAmount) {
        guard took > limit else { return }
        let until = NIODeadline.now() + backoff
        threadsUntil.store(until.uptimeNanoseconds, ordering: .relaxed)
        let message: Logger.Message = "a write under \(root) took \(took.nanoseconds / 1_000_000) ms on an event loop (inline_writes \(limit.nanoseconds / 1_000_000) ms): writes go to the disk threads for \(backoff.nanoseconds / 1_000_000) ms"
        if noticed.exchange(true, ordering: .relaxed) {
            logger.debug(message)
        } else {
            logger.notice("\(message) (further such switches are logged at debug level)")
        }
    }
}
