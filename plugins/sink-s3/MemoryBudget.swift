import DequeModule
import Synchronization

/// A byte-counting semaphore: the global cap on part buffers across all uploads of one sink.
///
/// Waiters are served first come, first served, so a large request is not starved by
/// a stream of small ones. Cancellation of a waiting task removes it from the queue
/// and throws `CancellationError`.
final class MemoryBudget: Sendable {
    private struct Waiter {
        let id: UInt64
        let bytes: Int64
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var available: Int64
        var waiters: Deque<Waiter> = []
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>
    /// The cap, in bytes.
    let capacity: Int64

    init(capacity: Int64) {
        self.capacity = capacity
        self.state = Mutex(State(available: capacity))
    }

    /// Bytes not reserved right now (for tests and metrics).
    var available: Int64 { state.withLock { $0.available } }

    /// Waits until `bytes` can be reserved, then reserves them.
    ///
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    func acquire(_ bytes: Int64) async throws {
        precondition(bytes <= capacity, "a reservation larger than the whole budget would wait forever")
        let id: UInt64? = state.withLock { s in
            if s.waiters.isEmpty, s.available >= bytes {
                s.available -= bytes
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Bool = state.withLock { s in
                    if Task.isCancelled { return true }
                    s.waiters.append(Waiter(id: id, bytes: bytes, continuation: continuation))
                    Self.wake(&s)
                    return false
                }
                if resumeNow { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let waiter: Waiter? = state.withLock { s in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                let waiter = s.waiters.remove(at: index)
                Self.wake(&s)
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Returns `bytes` reserved by ``acquire(_:)``.
    func release(_ bytes: Int64) {
        guard bytes > 0 else { return }
        state.withLock { s in
            s.available += bytes
            Self.wake(&s)
        }
    }

    /// Hands reservations to waiters at the head of the queue while they fit.
    /// Resuming a continuation under the lock is fine: it only schedules the task.
    private static func wake(_ s: inout State) {
        while let first = s.waiters.first, first.bytes <= s.available {
            s.available -= first.bytes
            s.waiters.removeFirst()
            first.continuation.resume()
        }
    }
}
