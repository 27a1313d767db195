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

/// The runtime of the `spool` sink (see ``SinkSpool``).
final class SpoolSink: PreparingSink {
    let configuration: SinkSpool.Configuration
    let root: String
    var tmp: String { root + "/tmp" }
    var new: String { root + "/new" }
    var cur: String { root + "/cur" }
    let usage: SpoolUsage
    private let logger: Logger

    /// Threads for the spool's blocking calls. Each delivery fsyncs twice (the file, then
    /// `new/`), and an fsync holds its thread for a disk flush: many threads let
    /// concurrent uploads' fsyncs reach the filesystem together (one journal commit can
    /// serve them all) instead of queueing behind each other on NIO's shared pool, which
    /// `NIOFileSystem` (and so the spool receiver) also uses.
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        return pool
    }()

    /// Maildir readers delete `tmp/` files this old whatever their process: a pid may be reused.
    static let staleAge: TimeInterval = 36 * 3600

    init(configuration: SinkSpool.Configuration, logger: Logger) {
        self.configuration = configuration
        // Absolute and normalised (no `./`, no trailing `/`), relative to the working directory.
        self.root = URL(fileURLWithPath: configuration.root).standardizedFileURL.path
        self.logger = logger
        self.usage = SpoolUsage(newDirectory: self.root + "/new", limit: configuration.maxSize?.bytes)
    }

    /// Creates `tmp/`, `new/` and `cur/`, and removes `tmp/` files of processes that died.
    func start() async throws {
        let (tmp, new, cur) = (self.tmp, self.new, self.cur)
        let logger = self.logger
        try await SpoolSink.pool.runIfActive {
            for directory in [tmp, new, cur] { try Posix.makeDirectories(directory) }
            let now = Date().timeIntervalSince1970
            var swept = 0
            for name in try Posix.list(tmp) {
                let path = tmp + "/" + name
                guard let info = Posix.fileInfo(path) else { continue }
                let pid = pid_t(name.split(separator: "-").first ?? "")
                let owned = pid.map { $0 == getpid() || Posix.processExists($0) } ?? false
                if !owned || now - info.modified > Self.staleAge {
                    try? Posix.remove(path)
                    swept += 1
                }
            }
            if swept > 0 { logger.notice("removed \(swept) stale temporary file(s) from \(tmp)") }
        }
        try await usage.rescan()
    }

    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        // The length of the bytes this sink gets, when known (a Content-Length through stages
        // that keep the bytes): refused before a byte is read if it cannot fit.
        if let declared = body.length {
            try await usage.check(adding: declared)
        }
        let tmpPath = tmp + "/\(getpid())-\(context.metadata.id.uuidString.lowercased())"
        let fsync = configuration.fsync
        let fd = try await SpoolSink.pool.runIfActive { try Posix.createExclusive(tmpPath) }
        var reserved: Int64 = 0
        var open = true
        do {
            for try await chunk in body where chunk.readableBytes > 0 {
                try await usage.reserve(Int64(chunk.readableBytes))
                let offset = reserved
                reserved += Int64(chunk.readableBytes)
                try await SpoolSink.pool.runIfActive {
                    try Posix.pwriteAll(fd, chunk, at: offset, path: tmpPath)
                }
            }
            if fsync {
                try await SpoolSink.pool.runIfActive { try Posix.sync(fd, path: tmpPath) }
            }
            Posix.closeQuietly(fd)
            open = false
            // Named after the body ended, so the template may use digests ({sha256}).
            let name = SpoolFileName.encode(try configuration.name.render(context))
            guard name.utf8.count <= 255 else {
                throw SluiceError(.invalidName, "spool file name \(UploadName.quoted(name)) is longer than 255 bytes")
            }
            return PreparedSpoolFile(sink: self, tmpPath: tmpPath, name: name, size: reserved)
        } catch {
            // Synchronous on purpose: cleanup must happen even when the task is cancelled.
            if open { Posix.closeQuietly(fd) }
            try? Posix.remove(tmpPath)
            usage.release(reserved)
            throw error
        }
    }
}

/// A file complete in `tmp/`, not yet in `new/`.
final class PreparedSpoolFile: PreparedObject {
    let sink: SpoolSink
    let tmpPath: String
    let name: String
    let size: Int64

    init(sink: SpoolSink, tmpPath: String, name: String, size: Int64) {
        self.sink = sink
        self.tmpPath = tmpPath
        self.name = name
        self.size = size
    }

    func commit() async throws -> SinkReceipt {
        let (tmpPath, target, new, fsync) = (self.tmpPath, sink.new + "/" + name, sink.new, sink.configuration.fsync)
        try await SpoolSink.pool.runIfActive {
            // link + unlink, as Maildir delivery does: never replaces a file already in new/.
            try Posix.link(tmpPath, to: target)
            try? Posix.remove(tmpPath)
            if fsync { try Posix.syncDirectory(new) }
        }
        sink.usage.commit(size)
        return SinkReceipt(location: "new/" + name, bytesStored: size)
    }

    func abort() async {
        try? Posix.remove(tmpPath)
        sink.usage.release(size)
    }
}

/// How full the spool is: `new/` as last scanned, plus what was delivered since, plus
/// what uploads are writing now.
///
/// Readers remove files from `new/` without telling the sink, so the figure only grows
/// between scans; when a reservation would go over the limit, `new/` is scanned again
/// (at most every `rescanInterval`) before the upload is refused.
final class SpoolUsage: Sendable {
    let newDirectory: String
    let limit: Int64?
    static let rescanInterval: Duration = .milliseconds(100)

    private struct State {
        var scanned: Int64 = 0
        var scannedAt: ContinuousClock.Instant?
        var deliveredSinceScan: Int64 = 0
        var inFlight: Int64 = 0
        var total: Int64 { scanned + deliveredSinceScan + inFlight }
    }
    private let state = Mutex(State())

    init(newDirectory: String, limit: Int64?) {
        self.newDirectory = newDirectory
        self.limit = limit
    }

    /// Bytes the spool holds or is being written, as far as known.
    var current: Int64 { state.withLock { $0.total } }

    func rescan() async throws {
        guard limit != nil else { return }
        let directory = newDirectory
        let started = ContinuousClock.now
        let total = try await SpoolSink.pool.runIfActive {
            try Posix.list(directory).reduce(Int64(0)) { sum, name in sum + (Posix.fileInfo(directory + "/" + name)?.size ?? 0) }
        }
        state.withLock {
            $0.scanned = total
            $0.deliveredSinceScan = 0
            $0.scannedAt = started
        }
    }

    /// Refuses early when `bytes` more would not fit (a declared length).
    func check(adding bytes: Int64) async throws {
        guard let limit else { return }
        if try await fits(bytes, limit: limit, reserve: false) { return }
        throw full(limit)
    }

    /// Counts `bytes` being written, or throws ``SluiceError/Code/insufficientStorage``.
    func reserve(_ bytes: Int64) async throws {
        guard let limit else {
            state.withLock { $0.inFlight += bytes }
            return
        }
        if try await fits(bytes, limit: limit, reserve: true) { return }
        throw full(limit)
    }

    private func fits(_ bytes: Int64, limit: Int64, reserve: Bool) async throws -> Bool {
        func attempt() -> (fits: Bool, stale: Bool) {
            state.withLock { s in
                if s.total + bytes <= limit {
                    if reserve { s.inFlight += bytes }
                    return (true, false)
                }
                let stale = s.scannedAt.map { ContinuousClock.now - $0 >= Self.rescanInterval } ?? true
                return (false, stale)
            }
        }
        let first = attempt()
        if first.fits { return true }
        guard first.stale else { return false }
        try await rescan()
        return attempt().fits
    }

    private func full(_ limit: Int64) -> SluiceError {
        SluiceError(.insufficientStorage, "the spool is full (max_size \(ByteSize(limit)))")
    }

    /// An upload ended without delivery: its bytes no longer count.
    func release(_ bytes: Int64) {
        state.withLock { $0.inFlight -= bytes }
    }

    /// An upload was delivered into `new/`.
    func commit(_ bytes: Int64) {
        state.withLock {
            $0.inFlight -= bytes
            $0.deliveredSinceScan += bytes
        }
    }
}
