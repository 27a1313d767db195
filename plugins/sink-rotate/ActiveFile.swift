#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceCore
import Synchronization

/// The rotation rules of one sink, resolved from its configuration.
struct RotationSettings: Sendable {
    var maxSize: Int64?
    var maxAge: TimeInterval?
    var keep: Int
    var maxTotal: Int64?
    var naming: SinkRotate.Naming
    var compress: Bool
    var compressLevel: Int
    var fsync: SinkRotate.FsyncPolicy
    var fsyncInterval: TimeInterval
    /// An active file nobody wrote to for this long is closed (and reopened on the next write).
    var idleClose: TimeInterval = 60
}

/// Thread pools for the blocking file work of every rotate sink in the process.
enum RotatePools {
    /// Runs the writers' drains (appends, rotations, fsyncs).
    static let writers: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
    /// Compresses and renames rotated files, off the writers' threads.
    static let finishers: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()
}

/// A complete object staged in an unlinked temporary file, ready to be appended as one unit.
struct StagedObject: Sendable {
    let fd: CInt
    let size: Int64
    /// Appends `\n` after the object so the next record starts on its own line.
    let needsNewline: Bool
}

/// One active file: a queue of appends drained by one writer at a time.
///
/// Uploads never touch the file themselves. Each chunk (a run of whole records) or
/// staged object is queued with a continuation; a drain on ``RotatePools/writers``
/// takes everything queued, checks rotation before each unit (so a unit never spans
/// two files), writes consecutive units with one `write` call, fsyncs once for the
/// batch when the policy asks, then resumes the writers. Many uploads therefore share
/// one write and one fsync (group commit), no record is ever split or interleaved, and
/// memory is bounded by one chunk per waiting upload.
final class ActiveFile: Sendable {
    /// The path relative to the sink's root (the receipts' location).
    let relativePath: String
    let path: String
    let directory: String
    let baseName: String
    let settings: RotationSettings
    let finisher: Finisher
    private let now: @Sendable () -> Date
    private let logger: Logger

    enum Job: Sendable {
        case write(ByteBuffer, CheckedContinuation<Void, any Error>)
        case copy(StagedObject, CheckedContinuation<Void, any Error>)
        case open(CheckedContinuation<Void, any Error>)
        case tick
        case close(CheckedContinuation<Void, any Error>, release: Bool)
    }

    private struct Queue {
        var jobs: [Job] = []
        var draining = false
    }

    /// What the drain knows about the file; only the (single) drain touches it.
    private struct FileState {
        var fd: CInt = -1
        var size: Int64 = 0
        /// When the current file was started (nil: no current file).
        var createdAt: Date?
        var lastWrite = Date.distantPast
        var lastSync = Date.distantPast
        /// Written since the last fsync.
        var dirty = false
        /// The torn-tail check ran (once per process for this path).
        var checked = false
        /// The last rotation stamp used, in milliseconds, to keep stamps increasing.
        var lastStamp: Int64 = 0
    }

    private let queue = Mutex(Queue())
    private let file = Mutex(FileState())

    /// Writes larger than this are flushed before more units are merged in.
    private static let mergeLimit = 4 << 20

    init(relativePath: String, root: String, settings: RotationSettings, now: @escaping @Sendable () -> Date, logger: Logger) {
        self.relativePath = relativePath
        self.path = root + "/" + relativePath
        let slash = path.lastIndex(of: "/")!
        self.directory = String(path[..<slash])
        self.baseName = String(path[path.index(after: slash)...])
        self.settings = settings
        self.now = now
        var logger = logger
        logger[metadataKey: "file"] = "\(relativePath)"
        self.logger = logger
        self.finisher = Finisher.shared(directory: directory, baseName: baseName)
    }

    // MARK: Public operations (each queues a job and waits for it)

    /// Appends `chunk` (whole records, or one gzip member) as one unit.
    func append(_ chunk: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { submit(.write(chunk, $0)) }
    }

    /// Appends a staged object as one unit.
    func append(_ staged: StagedObject) async throws {
        try await withCheckedThrowingContinuation { submit(.copy(staged, $0)) }
    }

    /// Opens the file now (running the torn-tail recovery), instead of at the first write.
    func open() async throws {
        try await withCheckedThrowingContinuation { submit(.open($0)) }
    }

    /// Fsyncs (unless the policy is `never`) and closes the file; the next write reopens it.
    ///
    /// - Parameter release: The sink is stopping: this writer no longer counts as one
    ///   of the process's open writers of the path (see ``openWriters``).
    func close(release: Bool = false) async throws {
        try await withCheckedThrowingContinuation { submit(.close($0, release: release)) }
    }

    /// How many writers in this process have the path open (several during a config
    /// reload, when the old generation drains while the new one starts).
    ///
    /// Only the first looks for a torn record at the end: a writer of this process
    /// writes whole units, so an incomplete tail while another writer of the process is
    /// active is a write in progress, not a crash's leftover, and must not be cut.
    private static let openWriters = Mutex<[String: Int]>([:])

    /// Checks age rotation, the fsync interval and idleness.
    func tick() {
        submit(.tick)
    }

    private func submit(_ job: Job) {
        let start = queue.withLock { q in
            q.jobs.append(job)
            if q.draining { return false }
            q.draining = true
            return true
        }
        if start { schedule() }
    }

    private func schedule() {
        RotatePools.writers.submit { _ in
            // The pool is never stopped, so the work item always runs.
            self.drainOnce()
        }
    }

    /// Processes everything queued now; reschedules itself if more arrived, so one busy
    /// file cannot hold a pool thread forever.
    private func drainOnce() {
        let batch = queue.withLock { q in
            let jobs = q.jobs
            q.jobs.removeAll(keepingCapacity: true)
            return jobs
        }
        process(batch)
        let more = queue.withLock { q in
            if q.jobs.isEmpty {
                q.draining = false
                return false
            }
            return true
        }
        if more { schedule() }
    }

    // MARK: The drain (runs on a writer thread, one at a time per file)

    private func process(_ batch: [Job]) {
        var outcomes: [(CheckedContinuation<Void, any Error>, (any Error)?)] = []
        outcomes.reserveCapacity(batch.count)
        file.withLock { st in
            var merged: [ByteBuffer] = []
            var mergedBytes = 0
            var mergedWaiters: [CheckedContinuation<Void, any Error>] = []
            var written: [CheckedContinuation<Void, any Error>] = []

            func flushMerged() {
                guard !merged.isEmpty else { return }
                defer {
                    merged.removeAll(keepingCapacity: true)
                    mergedBytes = 0
                    mergedWaiters.removeAll(keepingCapacity: true)
                }
                let data: ByteBuffer
                if merged.count == 1 {
                    data = merged[0]
                } else {
                    var all = ByteBufferAllocator().buffer(capacity: mergedBytes)
                    for chunk in merged { all.writeImmutableBuffer(chunk) }
                    data = all
                }
                let before = st.size
                do {
                    try Posix.writeAll(st.fd, data, path: path)
                    st.size += Int64(data.readableBytes)
                    st.dirty = true
                    st.lastWrite = now()
                    written.append(contentsOf: mergedWaiters)
                } catch {
                    // A partial write (disk full) would leave a torn record: cut it off.
                    try? Posix.truncate(st.fd, to: before, path: path)
                    outcomes.append(contentsOf: mergedWaiters.map { ($0, error) })
                }
            }

            /// Makes room for a unit of `adding` bytes: opens the file, and rotates
            /// first when the unit would take a non-empty file past `max_size` or the
            /// file is too old.
            func makeRoom(adding: Int64) throws {
                try ensureOpen(&st)
                if needsRotation(st, current: st.size + Int64(mergedBytes), adding: adding) {
                    flushMerged()
                    if needsRotation(st, current: st.size, adding: adding) {
                        rotate(&st)
                        try ensureOpen(&st)
                    }
                }
            }

            for job in batch {
                switch job {
                case .write(let chunk, let waiter):
                    do {
                        try makeRoom(adding: Int64(chunk.readableBytes))
                        merged.append(chunk)
                        mergedBytes += chunk.readableBytes
                        mergedWaiters.append(waiter)
                        if mergedBytes >= Self.mergeLimit { flushMerged() }
                    } catch {
                        outcomes.append((waiter, error))
                    }
                case .copy(let staged, let waiter):
                    flushMerged()
                    do {
                        let total = staged.size + (staged.needsNewline ? 1 : 0)
                        try makeRoom(adding: total)
                        try copy(staged, into: &st)
                        written.append(waiter)
                    } catch {
                        outcomes.append((waiter, error))
                    }
                case .open(let waiter):
                    flushMerged()
                    do {
                        try ensureOpen(&st)
                        outcomes.append((waiter, nil))
                    } catch {
                        outcomes.append((waiter, error))
                    }
                case .tick:
                    flushMerged()
                    housekeeping(&st)
                case .close(let waiter, let release):
                    flushMerged()
                    outcomes.append((waiter, closeFile(&st)))
                    if release, st.checked {
                        st.checked = false
                        Self.openWriters.withLock { counts in
                            counts[path, default: 1] -= 1
                            if counts[path] == 0 { counts[path] = nil }
                        }
                    }
                }
            }
            flushMerged()

            // Group commit: one fsync covers every unit written in this batch.
            var syncError: (any Error)?
            if settings.fsync == .everyChunk, st.dirty, st.fd >= 0 {
                syncError = syncFile(&st)
            }
            outcomes.append(contentsOf: written.map { ($0, syncError) })
        }
        for (waiter, error) in outcomes {
            if let error {
                waiter.resume(throwing: error)
            } else {
                waiter.resume()
            }
        }
    }

    private func needsRotation(_ st: FileState, current: Int64, adding: Int64) -> Bool {
        // An empty file takes any unit, even one larger than max_size: a unit never spans files.
        guard current > 0 else { return false }
        if let maxSize = settings.maxSize, current + adding > maxSize { return true }
        if let maxAge = settings.maxAge, let created = st.createdAt, now().timeIntervalSince(created) >= maxAge { return true }
        return false
    }

    private func ensureOpen(_ st: inout FileState) throws {
        guard st.fd < 0 else { return }
        try Posix.makeDirectories(directory)
        let fd = try Posix.openAppend(path)
        do {
            var size = try Posix.size(of: fd, path: path)
            if !st.checked {
                let first = Self.openWriters.withLock { counts in
                    defer { counts[path, default: 0] += 1 }
                    return counts[path, default: 0] == 0
                }
                st.checked = true
                if first, size > 0 {
                    size = try TailRecovery.recover(fd: fd, size: size, path: path, logger: logger)
                }
            }
            st.fd = fd
            st.size = size
            if size == 0 || st.createdAt == nil {
                st.createdAt = size == 0 ? now() : (Posix.birthTime(of: path) ?? now())
            }
        } catch {
            Posix.closeQuietly(fd)
            throw error
        }
    }

    private func copy(_ staged: StagedObject, into st: inout FileState) throws {
        let before = st.size
        do {
            let blockSize = 1 << 20
            let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 16)
            defer { block.deallocate() }
            var offset: Int64 = 0
            while offset < staged.size {
                let n = try Posix.readAt(staged.fd, into: block, at: offset, path: "staged upload")
                guard n > 0 else { throw SluiceError(.internal, "staged upload ended early at \(offset) of \(staged.size) bytes") }
                try Posix.writeAll(st.fd, UnsafeRawBufferPointer(rebasing: block[0..<n]), path: path)
                offset += Int64(n)
            }
            if staged.needsNewline {
                var newline: UInt8 = 0x0A
                try withUnsafeBytes(of: &newline) { try Posix.writeAll(st.fd, $0, path: path) }
            }
            st.size += staged.size + (staged.needsNewline ? 1 : 0)
            st.dirty = true
            st.lastWrite = now()
        } catch {
            try? Posix.truncate(st.fd, to: before, path: path)
            throw error
        }
    }

    private func syncFile(_ st: inout FileState) -> (any Error)? {
        do {
            try Posix.sync(st.fd, path: path)
            st.dirty = false
            st.lastSync = now()
            return nil
        } catch {
            logger.error("fsync failed: \(error)")
            return error
        }
    }

    private func closeFile(_ st: inout FileState) -> (any Error)? {
        guard st.fd >= 0 else { return nil }
        var failure: (any Error)?
        if settings.fsync != .never, st.dirty {
            failure = syncFile(&st)
        }
        Posix.closeQuietly(st.fd)
        st.fd = -1
        return failure
    }

    private func housekeeping(_ st: inout FileState) {
        let now = now()
        if let maxAge = settings.maxAge, st.size > 0, let created = st.createdAt, now.timeIntervalSince(created) >= maxAge {
            rotate(&st)
            return
        }
        if settings.fsync == .interval, st.dirty, st.fd >= 0, now.timeIntervalSince(st.lastSync) >= settings.fsyncInterval {
            _ = syncFile(&st)
        }
        if st.fd >= 0, now.timeIntervalSince(st.lastWrite) >= settings.idleClose {
            _ = closeFile(&st)
        }
    }

    /// Moves the active file aside (a hidden `.NAME.STAMP.rotated`) and lets the
    /// finisher give it its rotated name (compressing it first when configured).
    ///
    /// A failure is logged and writing goes on into the current file: records are
    /// never dropped because a rename failed.
    private func rotate(_ st: inout FileState) {
        if let error = closeFile(&st) {
            logger.error("rotation skipped, fsync failed: \(error)")
            return
        }
        guard st.size > 0 || Posix.exists(path) else { return }
        var stamp = max(Int64((now().timeIntervalSince1970 * 1000).rounded(.down)), st.lastStamp + 1)
        var aside = Finisher.asideName(directory: directory, baseName: baseName, stamp: stamp)
        while Posix.exists(aside) {
            stamp += 1
            aside = Finisher.asideName(directory: directory, baseName: baseName, stamp: stamp)
        }
        do {
            try Posix.move(path, to: aside)
            if settings.fsync != .never { try Posix.syncDirectory(directory) }
        } catch {
            logger.error("rotation failed, appending to the current file: \(error)")
            return
        }
        logger.debug("rotated", metadata: ["bytes": "\(st.size)"])
        st.lastStamp = stamp
        st.size = 0
        st.createdAt = nil
        st.dirty = false
        finisher.kick(settings, logger: logger)
    }
}
