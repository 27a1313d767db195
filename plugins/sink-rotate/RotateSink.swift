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

/// The runtime of the `rotate` sink (see ``SinkRotate`` for the keys).
final class RotateSink: Sink {
    let configuration: SinkRotate.Configuration
    let root: String
    let settings: RotationSettings
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let files = Mutex<[String: ActiveFile]>([:])
    private let timer = Mutex<Task<Void, Never>?>(nil)

    /// Where objects are staged before they are appended (files are unlinked at once).
    var stagingDirectory: String { root + "/.rotate-tmp" }

    init(configuration: SinkRotate.Configuration, logger: Logger, now: @escaping @Sendable () -> Date) {
        self.configuration = configuration
        // Absolute and normalised (no `./`, no trailing `/`), relative to the working directory.
        self.root = URL(fileURLWithPath: configuration.root).standardizedFileURL.path
        self.settings = RotationSettings(
            maxSize: configuration.maxSize?.bytes,
            maxAge: configuration.maxAge?.seconds,
            keep: configuration.keep,
            maxTotal: configuration.maxTotal?.bytes,
            naming: configuration.naming,
            compress: configuration.compressRotated,
            compressLevel: configuration.compressLevel,
            fsync: configuration.fsync,
            fsyncInterval: configuration.fsyncInterval.seconds
        )
        self.logger = logger
        self.now = now
    }

    // MARK: Lifecycle

    /// Creates the root, sweeps stale staging files, finishes rotations a crash
    /// interrupted, opens a fixed-path active file (cutting a torn record off its end),
    /// and starts the timer for age rotation, interval fsyncs and idle files.
    func start() async throws {
        let root = self.root
        let staging = stagingDirectory
        let leftovers = try await RotatePools.writers.runIfActive {
            try Posix.makeDirectories(root)
            try Posix.makeDirectories(staging)
            for name in try Posix.list(staging) {
                // Staged files are unlinked as soon as they are opened; a name left here is
                // from a process that died in between.
                if let pid = pid_t(name.split(separator: "-").first ?? ""), Posix.processExists(pid), pid != getpid() { continue }
                try? Posix.remove(staging + "/" + name)
            }
            return Self.findLeftovers(root: root)
        }
        for relative in leftovers {
            _ = activeFile(relative)
        }
        if configuration.path.usedPlaceholders.isEmpty {
            try await activeFile(configuration.path.text).open()
        }
        startTimer()
    }

    func stop() async {
        let task = timer.withLock { t in
            defer { t = nil }
            return t
        }
        task?.cancel()
        let all = files.withLock { Array($0.values) }
        for file in all {
            do {
                try await file.close(release: true)
            } catch {
                logger.error("closing \(file.relativePath) failed: \(error)")
            }
        }
        for file in all {
            await file.finisher.waitIdle()
        }
    }

    /// Waits until rotated files are compressed, renamed and pruned (for tests and shutdown).
    func waitForFinishers() async {
        for file in files.withLock({ Array($0.values) }) {
            await file.finisher.waitIdle()
        }
    }

    private func startTimer() {
        var period = 1.0
        if settings.fsync == .interval { period = min(period, settings.fsyncInterval) }
        if let maxAge = settings.maxAge { period = min(period, maxAge / 2) }
        period = max(period, 0.01)
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64(period * 1000)))
                guard let self, !Task.isCancelled else { return }
                for file in self.files.withLock({ Array($0.values) }) {
                    file.tick()
                }
            }
        }
        timer.withLock { old in
            old?.cancel()
            old = task
        }
    }

    /// Active paths (relative to `root`) that have rotation leftovers on disk.
    private static func findLeftovers(root: String) -> [String] {
        var found: Set<String> = []
        func walk(_ relative: String) {
            let directory = relative.isEmpty ? root : root + "/" + relative
            for name in (try? Posix.list(directory)) ?? [] {
                let child = relative.isEmpty ? name : relative + "/" + name
                if name.hasPrefix(".") {
                    for suffix in [".rotated", ".gz.ready", ".gz.tmp"] where name.hasSuffix(suffix) {
                        // .BASE.STAMP.SUFFIX, the stamp being 20 characters.
                        let core = name.dropFirst().dropLast(suffix.count)
                        guard core.count > 21, Stamp.parse(String(core.suffix(20))) != nil else { continue }
                        let base = String(core.dropLast(21))
                        found.insert(relative.isEmpty ? base : relative + "/" + base)
                    }
                } else if Posix.isDirectory(root + "/" + child) {
                    walk(child)
                }
            }
        }
        walk("")
        return found.sorted()
    }

    // MARK: Storing

    func activeFile(_ relative: String) -> ActiveFile {
        let (file, created) = files.withLock { map -> (ActiveFile, Bool) in
            if let file = map[relative] { return (file, false) }
            let file = ActiveFile(relativePath: relative, root: root, settings: settings, now: now, logger: logger)
            map[relative] = file
            return (file, true)
        }
        if created {
            // Finish whatever a crash left half-rotated next to this file.
            file.finisher.kick(settings, logger: logger)
        }
        return file
    }

    func renderPath(_ context: UploadContext) throws -> String {
        let relative = try configuration.path.render(context)
        for component in relative.split(separator: "/") where component.hasPrefix(".") {
            throw SluiceError(.invalidName, "path \(UploadName.quoted(relative)) has a component starting with \".\" (reserved for the sink's own files)")
        }
        return relative
    }

    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        let relative = try renderPath(context)
        let file = activeFile(relative)
        if context.metadata.mode == .records, context.metadata.expectedDigests.isEmpty {
            // Each chunk holds whole records: append it as it comes, as one unit.
            var stored: Int64 = 0
            for try await chunk in body where chunk.readableBytes > 0 {
                let unit = Self.terminated(chunk)
                try await file.append(unit)
                stored += Int64(unit.readableBytes)
            }
            return SinkReceipt(location: relative, bytesStored: stored)
        }
        // A stream (or records the client sent a digest for): stage it, then append it
        // as one unit, so a failed or cancelled upload appends nothing.
        let stored = try await stageAndAppend(body, to: file)
        return SinkReceipt(location: relative, bytesStored: stored)
    }

    private func stageAndAppend(_ body: UploadBody, to file: ActiveFile) async throws -> Int64 {
        let staging = stagingDirectory
        let fd = try await NIOThreadPool.singleton.runIfActive {
            let path = staging + "/\(getpid())-\(UUID.systemRandom().uuidString.lowercased())"
            var fd: CInt
            do {
                fd = try Posix.createExclusive(path, mode: 0o600)
            } catch {
                // The staging directory may not exist when the sink was not started.
                try Posix.makeDirectories(staging)
                fd = try Posix.createExclusive(path, mode: 0o600)
            }
            // Unlinked at once: the data lives only as long as the descriptor.
            try? Posix.remove(path)
            return fd
        }
        defer { Posix.closeQuietly(fd) }
        var size: Int64 = 0
        var head: [UInt8] = []
        var last: UInt8?
        for try await chunk in body where chunk.readableBytes > 0 {
            let offset = size
            try await NIOThreadPool.singleton.runIfActive {
                try Posix.pwriteAll(fd, chunk, at: offset, path: "staged upload")
            }
            if head.count < 2 { head += chunk.readableBytesView.prefix(2 - head.count) }
            last = chunk.readableBytesView.last
            size += Int64(chunk.readableBytes)
        }
        guard size > 0 else { return 0 }
        let gzip = head == [0x1F, 0x8B]
        let staged = StagedObject(fd: fd, size: size, needsNewline: !gzip && last != 0x0A)
        try await file.append(staged)
        return size + (staged.needsNewline ? 1 : 0)
    }

    /// The chunk, with a `\n` added when it is text that does not end with one, so every
    /// unit in a text file ends on a record boundary (what restart recovery relies on).
    static func terminated(_ chunk: ByteBuffer) -> ByteBuffer {
        let bytes = chunk.readableBytesView
        if bytes.last == 0x0A { return chunk }
        if bytes.count >= 2, bytes[bytes.startIndex] == 0x1F, bytes[bytes.startIndex + 1] == 0x8B { return chunk }
        var copy = chunk
        copy.writeInteger(UInt8(0x0A))
        return copy
    }
}
