import DequeModule
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The original design's semaphore, made safe: at most `maxConcurrent` uploads run;
/// up to `maxQueued` more wait in FIFO order for at most `queueTimeout`; the rest
/// are refused at once with ``SluiceError/Code/overloaded``.
///
/// Receivers of one listener share one gate (`max_concurrent_uploads`,
/// `max_queued_uploads`, `queue_timeout`).
public final class UploadGate: Sendable {
    public let maxConcurrent: Int
    public let maxQueued: Int
    public let queueTimeout: Duration

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var available: Int
        var waiters = Deque<Waiter>()
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>
    private let queueWait: Metrics.Timer
    private let refused: Counter

    public init(maxConcurrent: Int, maxQueued: Int, queueTimeout: Duration, listener: String = "") {
        precondition(maxConcurrent > 0, "maxConcurrent must be positive")
        self.maxConcurrent = maxConcurrent
        self.maxQueued = max(0, maxQueued)
        self.queueTimeout = queueTimeout
        self.state = Mutex(State(available: maxConcurrent))
        self.queueWait = Metrics.Timer(label: "sluice_queue_wait_seconds", dimensions: [("listener", listener)], preferredDisplayUnit: .seconds)
        self.refused = Counter(label: "sluice_queue_refused_total", dimensions: [("listener", listener)])
    }

    /// Uploads running now.
    public var active: Int { state.withLock { maxConcurrent - $0.available } }
    /// Uploads waiting now.
    public var queued: Int { state.withLock { $0.waiters.count } }

    /// Runs `body` holding a permit, waiting for one if needed.
    ///
    /// - Throws: ``SluiceError/Code/overloaded`` when the queue is full or the wait
    ///   timed out; `CancellationError` if the task is cancelled while waiting; and
    ///   whatever `body` throws.
    public func withPermit<R>(_ body: () async throws -> R) async throws -> R {
        try await acquire()
        defer { release() }
        return try await body()
    }

    /// Takes a permit, waiting in line if none is free. Pair with ``release()``.
    public func acquire() async throws {
        enum Decision { case granted, refused, wait(UInt64) }
        let decision: Decision = state.withLock { s in
            if s.available > 0, s.waiters.isEmpty {
                s.available -= 1
                return .granted
            }
            if s.waiters.count >= maxQueued { return .refused }
            s.nextID += 1
            return .wait(s.nextID)
        }
        switch decision {
        case .granted:
            queueWait.recordNanoseconds(0)
            return
        case .refused:
            refused.increment()
            throw SluiceError(.overloaded, "too many uploads: \(maxConcurrent) running and \(maxQueued) waiting")
        case .wait(let id):
            let started = ContinuousClock.now
            let timeout = Task { [queueTimeout] in
                try await Task.sleep(for: queueTimeout)
                self.fail(id, SluiceError(.overloaded, "waited \(ConfigDuration(queueTimeout)) for an upload slot; \(self.maxConcurrent) uploads are running"))
            }
            defer { timeout.cancel() }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let cancelled = state.withLock { s -> Bool in
                        if Task.isCancelled { return true }
                        s.waiters.append(Waiter(id: id, continuation: continuation))
                        return false
                    }
                    if cancelled { continuation.resume(throwing: CancellationError()) }
                }
            } onCancel: {
                self.fail(id, CancellationError())
            }
            let waited = ContinuousClock.now - started
            let c = waited.components
            queueWait.recordNanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
        }
    }

    /// Returns a permit: hands it to the first waiter, or makes it available.
    public func release() {
        let next: Waiter? = state.withLock { s in
            if let first = s.waiters.popFirst() { return first }
            s.available += 1
            return nil
        }
        next?.continuation.resume()
    }

    private func fail(_ id: UInt64, _ error: any Error) {
        let waiter: Waiter? = state.withLock { s in
            guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: index)
        }
        if error is SluiceError, waiter != nil { refused.increment() }
        waiter?.continuation.resume(throwing: error)
    }
}

/// Counts open connections against `max_connections`.
public final class ConnectionLimiter: Sendable {
    public let limit: Int
    private let count = Atomic<Int>(0)
    private let gauge: Gauge

    /// A limiter that also counts each connection's socket in ``FileDescriptorBudget/shared``.
    public convenience init(limit: Int, listener: String = "") {
        self.init(limit: limit, listener: listener, budget: .shared)
    }

    /// Open connections now.
    public var current: Int { count.load(ordering: .relaxed) }

    /// Where each connection's socket is also counted.
    private let budget: FileDescriptorBudget

    /// - Parameters:
    ///   - limit: `max_connections`.
    ///   - budget: Where each connection's socket is also counted.
    public init(limit: Int, listener: String = "", budget: FileDescriptorBudget) {
        self.limit = limit
        self.budget = budget
        self.gauge = Gauge(label: "sluice_active_connections", dimensions: [("listener", listener)])
    }

    /// Counts a new connection; `false` (and nothing counted) when at the limit, or when
    /// the process is short of file descriptors (``FileDescriptorBudget/shared``).
    public func tryAcquire() -> Bool {
        var current = count.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = count.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged {
                guard budget.tryAcquire() else {
                    count.subtract(1, ordering: .relaxed)
                    return false
                }
                gauge.record(current + 1)
                return true
            }
            current = original
        }
        return false
    }

    public func release() {
        budget.release()
        let now = count.subtract(1, ordering: .relaxed).newValue
        gauge.record(now)
    }
}

/// Keeps the process clear of its open-file limit (`RLIMIT_NOFILE`).
///
/// Reaching the limit is fatal, not just a failed call: on Linux, libdispatch (which runs
/// Swift concurrency's threads) opens `/proc/<tid>/stat` about once a second to watch its
/// worker pool and crashes the process ("workq: registered worker exited prematurely",
/// SIGILL) when that `open` fails with `EMFILE`; Foundation's `UUID()` also returns the
/// all-zero UUID then. So every long-lived descriptor the server holds per client (a
/// connection's socket, a sink's temporary file) is counted here, and a new one is
/// refused while fewer than ``reserve`` descriptors would stay free for everything else
/// (listening sockets, logs, commits, the runtime).
public final class FileDescriptorBudget: Sendable {
    /// Descriptors that may be held through this budget.
    public let capacity: Int
    /// Descriptors kept free below the process limit.
    public let reserve: Int
    private let count = Atomic<Int>(0)

    /// The process-wide budget, sized from the soft `RLIMIT_NOFILE` at first use.
    public static let shared: FileDescriptorBudget = {
        var limit = rlimit()
        let soft = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? limit.rlim_cur : rlim_t(1024)
        // RLIM_INFINITY (or anything huge) needs no budget worth the name.
        return FileDescriptorBudget(processLimit: soft >= rlim_t(Int32.max) ? Int(Int32.max) : Int(soft))
    }()

    /// The reserve kept free below a process limit: 128 descriptors, or 2% of a large limit.
    public static func reserve(forLimit limit: Int) -> Int {
        max(128, limit / 50)
    }

    /// - Parameter processLimit: The process's open-file limit.
    public init(processLimit: Int) {
        self.reserve = Self.reserve(forLimit: processLimit)
        self.capacity = max(0, processLimit - reserve)
    }

    /// Descriptors held through this budget now.
    public var used: Int { count.load(ordering: .relaxed) }

    /// Counts `descriptors` (one by default); `false` (and nothing counted) when the budget
    /// has fewer left.
    public func tryAcquire(_ descriptors: Int = 1) -> Bool {
        var current = count.load(ordering: .relaxed)
        while current + descriptors <= capacity {
            let (exchanged, original) = count.compareExchange(expected: current, desired: current + descriptors, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Returns descriptors counted by ``tryAcquire(_:)``.
    public func release(_ descriptors: Int = 1) {
        count.subtract(descriptors, ordering: .relaxed)
    }
}
