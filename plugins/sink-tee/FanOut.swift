import DequeModule
import NIOCore
import SluiceCore
import Synchronization

/// Feeds one body to several consumers with back pressure from the slowest.
///
/// The producer hands each chunk to every branch (a `ByteBuffer` is copy-on-write, so
/// the branches share its storage) and waits while any branch holds `capacity` chunks
/// it has not read yet. Memory is therefore bounded by `branches × capacity` chunks,
/// and the slowest branch paces the socket.
///
/// Failing (the source body failed, a branch failed, a task was cancelled) ends every
/// side at once: waiting consumers and the producer get the first error.
final class FanOut: Sendable {
    private struct Branch {
        var buffer = Deque<ByteBuffer>()
        var consumer: CheckedContinuation<ByteBuffer?, any Error>?
        /// The branch stopped reading (it finished): further chunks are not kept for it.
        var detached = false
    }

    private struct State {
        var branches: [Branch]
        var finished = false
        var failure: (any Error)?
        var producer: CheckedContinuation<Void, any Error>?
    }

    private let state: Mutex<State>
    let capacity: Int

    init(branches: Int, capacity: Int) {
        precondition(branches > 0 && capacity > 0)
        self.capacity = capacity
        self.state = Mutex(State(branches: Array(repeating: Branch(), count: branches)))
    }

    /// The first error the fan-out failed with, if any.
    var failure: (any Error)? { state.withLock { $0.failure } }

    // MARK: Producer

    /// Delivers `chunk` to every branch; returns once every branch has room for more.
    func send(_ chunk: ByteBuffer) async throws {
        var wake: [(CheckedContinuation<ByteBuffer?, any Error>, ByteBuffer)] = []
        let full = try state.withLock { s -> Bool in
            if let failure = s.failure { throw failure }
            for i in s.branches.indices where !s.branches[i].detached {
                if let consumer = s.branches[i].consumer {
                    s.branches[i].consumer = nil
                    wake.append((consumer, chunk))
                } else {
                    s.branches[i].buffer.append(chunk)
                }
            }
            return Self.anyFull(s, capacity: capacity)
        }
        for (consumer, chunk) in wake { consumer.resume(returning: chunk) }
        guard full else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if let failure = s.failure { return .failure(failure) }
                    if !Self.anyFull(s, capacity: capacity) { return .success(()) }
                    s.producer = waiter
                    return nil
                }
                if let outcome { waiter.resume(with: outcome) }
            }
        } onCancel: {
            self.fail(CancellationError())
        }
    }

    /// The body ended: branches get `nil` once they read what is buffered.
    func finish() {
        let waiting = state.withLock { s -> [CheckedContinuation<ByteBuffer?, any Error>] in
            s.finished = true
            var waiting: [CheckedContinuation<ByteBuffer?, any Error>] = []
            for i in s.branches.indices {
                if let consumer = s.branches[i].consumer {
                    s.branches[i].consumer = nil
                    waiting.append(consumer)
                }
            }
            return waiting
        }
        for consumer in waiting { consumer.resume(returning: nil) }
    }

    /// Ends every side with `error` (the first error wins).
    func fail(_ error: any Error) {
        let (consumers, producer, failure) = state.withLock { s -> ([CheckedContinuation<ByteBuffer?, any Error>], CheckedContinuation<Void, any Error>?, any Error) in
            if s.failure == nil { s.failure = error }
            var consumers: [CheckedContinuation<ByteBuffer?, any Error>] = []
            for i in s.branches.indices {
                s.branches[i].buffer.removeAll()
                if let consumer = s.branches[i].consumer {
                    s.branches[i].consumer = nil
                    consumers.append(consumer)
                }
            }
            let producer = s.producer
            s.producer = nil
            return (consumers, producer, s.failure!)
        }
        for consumer in consumers { consumer.resume(throwing: failure) }
        producer?.resume(throwing: failure)
    }

    // MARK: Consumers

    /// The body branch `index` reads.
    func body(_ index: Int) -> UploadBody {
        UploadBody(BranchBody(fanOut: self, index: index))
    }

    /// Stops keeping chunks for branch `index` (it finished reading).
    func detach(_ index: Int) {
        let producer = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            s.branches[index].detached = true
            s.branches[index].buffer.removeAll()
            return Self.releaseProducerIfRoom(&s, capacity: capacity)
        }
        producer?.resume()
    }

    func next(_ index: Int) async throws -> ByteBuffer? {
        enum Step {
            case chunk(ByteBuffer, CheckedContinuation<Void, any Error>?)
            case end
            case failed(any Error)
            case wait
        }
        let step = state.withLock { s -> Step in
            if let failure = s.failure { return .failed(failure) }
            if let chunk = s.branches[index].buffer.popFirst() {
                return .chunk(chunk, Self.releaseProducerIfRoom(&s, capacity: capacity))
            }
            return s.finished ? .end : .wait
        }
        switch step {
        case .chunk(let chunk, let producer):
            producer?.resume()
            return chunk
        case .end:
            return nil
        case .failed(let error):
            throw error
        case .wait:
            break
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<ByteBuffer?, any Error>) in
                let ready: Result<ByteBuffer?, any Error>? = state.withLock { s in
                    if let failure = s.failure { return .failure(failure) }
                    if let chunk = s.branches[index].buffer.popFirst() { return .success(chunk) }
                    if s.finished { return .success(nil) }
                    s.branches[index].consumer = waiter
                    return nil
                }
                if let ready { waiter.resume(with: ready) }
            }
        } onCancel: {
            self.fail(CancellationError())
        }
    }

    private static func anyFull(_ s: State, capacity: Int) -> Bool {
        s.branches.contains { !$0.detached && $0.buffer.count >= capacity }
    }

    private static func releaseProducerIfRoom(_ s: inout State, capacity: Int) -> CheckedContinuation<Void, any Error>? {
        guard let producer = s.producer, !anyFull(s, capacity: capacity) else { return nil }
        s.producer = nil
        return producer
    }
}

private struct BranchBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let fanOut: FanOut
    let index: Int

    func makeAsyncIterator() -> Iterator { Iterator(fanOut: fanOut, index: index) }

    struct Iterator: AsyncIteratorProtocol {
        let fanOut: FanOut
        let index: Int
        mutating func next() async throws -> ByteBuffer? {
            try await fanOut.next(index)
        }
    }
}
