import DequeModule
import Foundation
import Logging
import Metrics
import NIOCore
import NIOFileSystem
import ServiceLifecycle
import SluiceCore
import Synchronization

/// The runtime of the `spool` receiver (see ``ReceiverSpool``).
///
/// One loop lists `new/` (when its queue ran dry, on each poll tick) and starts up to
/// `concurrency` forwards; each finished forward wakes the loop, so a backlog drains
/// at the downstream's speed rather than one poll interval at a time.
///
/// Failures: a retryable failure (the downstream is down, full, or failed) pauses
/// all forwarding with exponential backoff — when the store is away there is no
/// point in trying every file — and the file itself waits its own backoff, so one
/// file that keeps failing cannot hold up the others. Permanent failures (the
/// downstream refused the file itself: bad name, corrupt data, too large, conflict)
/// move the file to `failed/` with an error log line, so it is not retried forever.
final class SpoolReceiver: Receiver {
    let name: String
    let configuration: ReceiverSpool.Configuration
    let pipeline: Pipeline
    private let environment: ReceiverEnvironment
    private let logger: Logger
    let root: String
    var newDirectory: String { root + "/new" }
    var curDirectory: String { root + "/cur" }
    var failedDirectory: String { root + "/failed" }

    private struct Schedule {
        var queue = Deque<String>()
        var queued = Set<String>()
        var inFlight = Set<String>()
        var attempts: [String: Int] = [:]
        var notBefore: [String: ContinuousClock.Instant] = [:]
        var failuresInARow = 0
        var pausedUntil: ContinuousClock.Instant?
    }
    private let schedule = Mutex(Schedule())

    /// Files being forwarded by any spool receiver in this process (a reload runs two
    /// generations side by side for a while; they must not both send one file).
    private static let claims = Mutex<Set<String>>([])

    private let forwarded: Counter
    private let failures: Counter
    private let backlog: Gauge

    init(configuration: ReceiverSpool.Configuration, pipeline: Pipeline, environment: ReceiverEnvironment) {
        self.name = environment.name
        self.configuration = configuration
        self.pipeline = pipeline
        self.environment = environment
        self.logger = environment.logger
        // Absolute and normalised (no `./`, no trailing `/`), relative to the working directory.
        self.root = URL(fileURLWithPath: configuration.root).standardizedFileURL.path
        let dimensions = [("listener", environment.name)]
        forwarded = Counter(label: "sluice_spool_forwarded_total", dimensions: dimensions)
        failures = Counter(label: "sluice_spool_failures_total", dimensions: dimensions)
        backlog = Gauge(label: "sluice_spool_backlog_files", dimensions: dimensions)
    }

    func run() async throws {
        for directory in [newDirectory] + (configuration.archive ? [curDirectory] : []) {
            try await FileSystem.shared.createDirectory(at: FilePath(directory), withIntermediateDirectories: true)
        }
        environment.announce(ListenerAnnouncement(
            listener: name, type: ReceiverSpool.type, address: newDirectory, port: nil,
            detail: "pipeline \(pipeline.name)"
        ))

        let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let poll = configuration.pollInterval.duration
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: poll)
                if case .terminated = wake.yield() { return }
            }
        }
        defer { ticker.cancel() }
        wake.yield()

        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await _ in wakeups {
                    await refillIfDry()
                    for file in dispatchable() {
                        group.addTask {
                            if let retryAt = await self.forward(file) {
                                // Come back when the backoff ends, not at the next poll.
                                Task {
                                    try? await Task.sleep(until: retryAt)
                                    wake.yield()
                                }
                            }
                            wake.yield()
                        }
                    }
                }
                // Shutting down: nothing new starts; the group waits for in-flight forwards.
            }
        } onGracefulShutdown: {
            wake.finish()
        }
    }

    // MARK: Scheduling

    private func refillIfDry() async {
        let dry = schedule.withLock { $0.queue.isEmpty }
        guard dry else { return }
        let names: [String]
        do {
            names = try await listNew()
        } catch {
            logger.error("cannot list \(newDirectory): \(error)")
            return
        }
        backlog.record(names.count)
        schedule.withLock { s in
            for name in names where !s.queued.contains(name) && !s.inFlight.contains(name) {
                s.queue.append(name)
                s.queued.insert(name)
            }
            // Forget backoff state of files that are gone.
            if s.attempts.count > 0 {
                let present = Set(names)
                s.attempts = s.attempts.filter { present.contains($0.key) }
                s.notBefore = s.notBefore.filter { present.contains($0.key) }
            }
        }
    }

    /// Visible files in `new/`, oldest name first (default spool names start with the time).
    private func listNew() async throws -> [String] {
        try await FileSystem.shared.withDirectoryHandle(atPath: FilePath(newDirectory)) { directory in
            var names: [String] = []
            for try await entry in directory.listContents() where entry.type == .regular {
                let name = entry.name.string
                if !name.hasPrefix(".") { names.append(name) }
            }
            return names.sorted()
        }
    }

    private func dispatchable() -> [String] {
        schedule.withLock { s in
            let now = ContinuousClock.now
            if let paused = s.pausedUntil, now < paused { return [] }
            var out: [String] = []
            while s.inFlight.count < configuration.concurrency, let name = s.queue.popFirst() {
                s.queued.remove(name)
                // A file waiting out its own backoff is listed again later.
                if let due = s.notBefore[name], due > now { continue }
                s.inFlight.insert(name)
                out.append(name)
            }
            return out
        }
    }

    private func backoff(_ failures: Int) -> Duration {
        let initial = configuration.retryInitial.duration
        let exponent = min(max(failures - 1, 0), 30)
        let delay = initial * (1 << exponent)
        return min(delay, configuration.retryMax.duration)
    }

    // MARK: Forwarding one file

    private enum Outcome {
        case delivered
        case vanished
        case retry(SluiceError)
        case quarantine(SluiceError)
    }

    /// Forwards one file; returns when to wake the loop for a retry, if it failed.
    private func forward(_ file: String) async -> ContinuousClock.Instant? {
        let path = newDirectory + "/" + file
        let outcome: Outcome
        if Self.claims.withLock({ $0.insert(path).inserted }) {
            outcome = await send(file, path: path)
            Self.claims.withLock { _ = $0.remove(path) }
        } else {
            outcome = .vanished
        }
        return schedule.withLock { s -> ContinuousClock.Instant? in
            s.inFlight.remove(file)
            switch outcome {
            case .delivered, .vanished, .quarantine:
                s.attempts[file] = nil
                s.notBefore[file] = nil
                if case .delivered = outcome {
                    s.failuresInARow = 0
                    s.pausedUntil = nil
                }
                return nil
            case .retry(let error):
                let now = ContinuousClock.now
                let attempts = (s.attempts[file] ?? 0) + 1
                s.attempts[file] = attempts
                let fileDue = now + backoff(attempts)
                s.notBefore[file] = fileDue
                // Concurrent failures of one outage count once.
                if s.pausedUntil.map({ now >= $0 }) ?? true {
                    s.failuresInARow += 1
                    s.pausedUntil = now + backoff(s.failuresInARow)
                }
                let pause = s.pausedUntil!
                logger.warning("forwarding failed, will retry", metadata: [
                    "file": "\(file)", "attempt": "\(attempts)", "code": "\(error.code.rawValue)",
                    "retry_in_ms": "\(Self.milliseconds(max(pause, fileDue) - now))", "error": "\(error.message)",
                ])
                return min(pause, fileDue)
            }
        }
    }

    private func send(_ file: String, path: String) async -> Outcome {
        do {
            let uploadName = try UploadName.sanitize(Self.decode(file))
            let chunk = Int(configuration.chunkSize.bytes)
            _ = try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path)) { handle in
                let info = try await handle.info()
                let modified = info.lastDataModificationTime
                let metadata = UploadMetadata(
                    name: uploadName,
                    listener: name,
                    remoteAddress: nil,
                    declaredLength: info.size,
                    mode: .object,
                    receivedAt: Date(timeIntervalSince1970: Double(modified.seconds) + Double(modified.nanoseconds) / 1e9)
                )
                // A file in new/ is complete: its size is the body's length.
                let body = UploadBody(handle.readChunks(chunkLength: .bytes(Int64(chunk)))).declaringLength(info.size)
                return try await pipeline.process(Upload(metadata: metadata, body: body))
            }
        } catch let error as FileSystemError where error.code == .notFound {
            return .vanished
        } catch {
            let failure = SluiceError.from(error)
            failures.increment()
            if Self.isPermanent(failure.code) {
                return await quarantine(file, path: path, failure)
            }
            return .retry(failure)
        }
        // Committed downstream: only now does the file leave new/.
        do {
            if configuration.archive {
                try await FileSystem.shared.moveItem(at: FilePath(path), to: FilePath(curDirectory + "/" + file))
            } else {
                _ = try await FileSystem.shared.removeItem(at: FilePath(path))
            }
        } catch {
            // It will be sent again (at least once); the idempotent name keeps that harmless.
            logger.error("forwarded but could not remove \(path): \(error)")
            return .retry(SluiceError(.internal, "cannot remove a forwarded file: \(error)"))
        }
        forwarded.increment()
        return .delivered
    }

    private func quarantine(_ file: String, path: String, _ failure: SluiceError) async -> Outcome {
        logger.error("the downstream refused the file; moving it to failed/", metadata: [
            "file": "\(file)", "code": "\(failure.code.rawValue)", "error": "\(failure.message)",
        ])
        do {
            try await FileSystem.shared.createDirectory(at: FilePath(failedDirectory), withIntermediateDirectories: true)
            try await FileSystem.shared.moveItem(at: FilePath(path), to: FilePath(failedDirectory + "/" + file))
            return .quarantine(failure)
        } catch {
            logger.error("cannot move \(path) to failed/: \(error)")
            return .retry(failure)
        }
    }

    /// Failures about the file itself, which a retry cannot fix.
    static func isPermanent(_ code: SluiceError.Code) -> Bool {
        switch code {
        case .badRequest, .invalidName, .digestMismatch, .corruptInput, .payloadTooLarge, .conflict, .unauthorized, .notFound, .methodNotAllowed:
            true
        default:
            false
        }
    }

    /// Reverses the spool sink's encoding of a name into one file name (`%2F` → `/`, …).
    static func decode(_ file: String) -> String {
        guard file.contains("%") else { return file }
        var out = ""
        var rest = Substring(file)
        while let percent = rest.firstIndex(of: "%") {
            out += rest[..<percent]
            let code = rest[percent...].prefix(3).uppercased()
            switch code {
            case "%2F": out += "/"
            case "%25": out += "%"
            case "%2E": out += "."
            default:
                out += "%"
                rest = rest[rest.index(after: percent)...]
                continue
            }
            rest = rest[rest.index(percent, offsetBy: 3)...]
        }
        return out + rest
    }

    private static func milliseconds(_ d: Duration) -> Int64 {
        let c = d.components
        return c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000
    }
}
