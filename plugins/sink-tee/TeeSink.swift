import Logging
import SluiceCore
import Synchronization

/// The runtime of the `tee` sink (see ``SinkTee``).
///
/// Commit semantics: every branch *prepares* concurrently (writes everything to its
/// temporary place: a temp file, an open multipart upload). If any branch fails, or the
/// body fails, every prepared branch is aborted and the upload fails: no branch shows
/// anything. Only when all branches prepared does each commit (a rename, a
/// CompleteMultipartUpload). A commit failing after another branch committed is the one
/// window that cannot be closed without distributed transactions; it is logged with the
/// branches that did commit, and the upload fails.
///
/// A tee is itself a ``PreparingSink``, so tees nest.
final class TeeSink: PreparingSink {
    struct Branch: Sendable {
        var stages: [any Stage]
        var sink: any PreparingSink
    }

    let branches: [Branch]
    /// Chunks each branch may have unread before the body waits for it.
    static let bufferedChunks = 2

    init(branches: [Branch]) {
        self.branches = branches
    }

    func start() async throws {
        var started: [any PreparingSink] = []
        do {
            for branch in branches {
                try await branch.sink.start()
                started.append(branch.sink)
            }
        } catch {
            for sink in started { await sink.stop() }
            throw error
        }
    }

    func stop() async {
        for branch in branches { await branch.sink.stop() }
    }

    private enum Outcome: Sendable {
        case pumped
        case pumpFailed(any Error)
        case prepared(Int, any PreparedObject)
        case failed(Int, any Error)
    }

    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        let fanOut = FanOut(branches: branches.count, capacity: Self.bufferedChunks)
        let branches = self.branches
        let outcomes = await withTaskGroup(of: Outcome.self, returning: [Outcome].self) { group in
            group.addTask {
                do {
                    for try await chunk in body {
                        try await fanOut.send(chunk)
                    }
                    fanOut.finish()
                    return .pumped
                } catch {
                    fanOut.fail(error)
                    return .pumpFailed(error)
                }
            }
            for (index, branch) in branches.enumerated() {
                group.addTask {
                    do {
                        var branchBody = fanOut.body(index).declaringLength(body.length)
                        for stage in branch.stages {
                            branchBody = try await stage.apply(to: branchBody, context: context)
                        }
                        let prepared = try await branch.sink.prepare(branchBody, context: context)
                        // A sink that did not read to the end must not hold the others up.
                        fanOut.detach(index)
                        return .prepared(index, prepared)
                    } catch {
                        fanOut.fail(error)
                        return .failed(index, error)
                    }
                }
            }
            var outcomes: [Outcome] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }

        var prepared: [(Int, any PreparedObject)] = []
        var failed = false
        for outcome in outcomes {
            switch outcome {
            case .prepared(let index, let object): prepared.append((index, object))
            case .failed, .pumpFailed: failed = true
            case .pumped: break
            }
        }
        if failed {
            await withTaskGroup(of: Void.self) { group in
                for (_, object) in prepared {
                    group.addTask { await object.abort() }
                }
            }
            // The first failure is the cause; the others are its echo through the fan-out.
            throw fanOut.failure ?? SluiceError(.internal, "a tee branch failed")
        }
        prepared.sort { $0.0 < $1.0 }
        return PreparedTee(objects: prepared.map(\.1), logger: context.logger)
    }
}

/// Every branch prepared; commits them all, or aborts them all.
final class PreparedTee: PreparedObject {
    private enum BranchState { case prepared, committed, failed, aborted }
    private let objects: [any PreparedObject]
    private let states: Mutex<[BranchState]>
    private let logger: Logger

    init(objects: [any PreparedObject], logger: Logger) {
        self.objects = objects
        self.states = Mutex(Array(repeating: .prepared, count: objects.count))
        self.logger = logger
    }

    func commit() async throws -> SinkReceipt {
        let results = await withTaskGroup(of: (Int, Result<SinkReceipt, any Error>).self, returning: [(Int, Result<SinkReceipt, any Error>)].self) { group in
            for (index, object) in objects.enumerated() {
                group.addTask {
                    do {
                        return (index, .success(try await object.commit()))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var results: [(Int, Result<SinkReceipt, any Error>)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }
        }
        var receipts: [SinkReceipt] = []
        var firstError: (any Error)?
        states.withLock { states in
            for (index, result) in results {
                switch result {
                case .success(let receipt):
                    states[index] = .committed
                    receipts.append(receipt)
                case .failure(let error):
                    states[index] = .failed
                    if firstError == nil { firstError = error }
                }
            }
        }
        if let firstError {
            if !receipts.isEmpty {
                logger.error("tee commit failed after some branches committed", metadata: [
                    "committed": "\(receipts.map(\.location).joined(separator: ", "))",
                    "error": "\(firstError)",
                ])
            }
            throw firstError
        }
        return SinkReceipt(
            location: receipts.map(\.location).joined(separator: ", "),
            bytesStored: receipts.reduce(0) { $0 + $1.bytesStored }
        )
    }

    func abort() async {
        // Branches that committed stay committed; those that did not are aborted once.
        let pending = states.withLock { states -> [Int] in
            var pending: [Int] = []
            for i in states.indices where states[i] == .prepared || states[i] == .failed {
                states[i] = .aborted
                pending.append(i)
            }
            return pending
        }
        await withTaskGroup(of: Void.self) { group in
            for index in pending {
                let object = objects[index]
                group.addTask { await object.abort() }
            }
        }
    }
}
