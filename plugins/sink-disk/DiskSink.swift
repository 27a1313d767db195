import Foundation
import Logging
import NIOCore
import SluiceCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Stores each upload as one file under a root directory; see ``DiskSinkPlugin`` for the keys.
///
/// Two phases (``PreparingSink``): `prepare` streams the body into
/// `<root>/.sluice-tmp/<pid>-<random>-<n>.part`; `commit` renames it to its final name
/// (creating subdirectories, applying the conflict policy, writing sidecars);
/// `abort` removes the temporary file. Every failure removes it too. `store` (one
/// step) uses an anonymous temporary file where it can and links it into place
/// (``AnonymousFiles``).
///
/// A name can never leave the root: the rendered name is checked by
/// ``UploadName/sanitize(_:)`` (no `..`, no absolute path), and each directory on the
/// way is opened with `O_NOFOLLOW` relative to its parent, so a symbolic link inside
/// the root cannot redirect a write elsewhere.
public struct DiskSink: PreparingSink {
    public let configuration: DiskSinkPlugin.Configuration
    let logger: Logger
    let tempDirectory: String
    let inlineWrites: InlineWrites
    /// Whether uploads stored in one step use anonymous temporary files (see ``AnonymousFiles``).
    let anonymous = AnonymousFiles()

    /// Where temporary files live, relative to the root.
    public static let tempDirectoryName = ".sluice-tmp"
    /// Suffix of temporary files (what the start-up sweep looks for).
    static let tempSuffix = ".part"
    /// How many `name-N.ext` candidates `on_conflict: unique` tries.
    static let maxUniqueAttempts = 10_000

    public init(configuration: DiskSinkPlugin.Configuration, logger: Logger = Logger(label: "sluice.disk")) {
        self.configuration = configuration
        self.logger = logger
        self.tempDirectory = configuration.root + "/" + Self.tempDirectoryName
        self.inlineWrites = InlineWrites(
            limit: TimeAmount(configuration.inlineWrites.duration),
            root: configuration.root,
            logger: logger
        )
    }

    /// Whether a rendered name points into the temporary directory.
    static func isReserved(_ name: String) -> Bool {
        name == tempDirectoryName || name.hasPrefix(tempDirectoryName + "/")
    }

    // MARK: Start

    /// Creates the root and its temporary directory, and removes temporary files left
    /// by processes that no longer run (a crash, `kill -9`).
    ///
    /// Files of this process are kept when an upload still owns them: a config reload
    /// starts a new sink while the old one drains.
    public func start() async throws {
        let root = configuration.root
        let tempDirectory = self.tempDirectory
        let removed = try await FileSystemCalls.run { () throws -> Int in
            try FileSystemCalls.makeDirectories(root)
            try FileSystemCalls.makeDirectories(tempDirectory)
            guard let directory = opendir(tempDirectory) else {
                throw FileSystemCalls.failure("list", Self.tempDirectoryName, errno)
            }
            defer { closedir(directory) }
            let ownPID = getpid()
            var removed = 0
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard name.hasSuffix(Self.tempSuffix), let dash = name.firstIndex(of: "-"),
                      let pid = Int32(name[..<dash]) else { continue }
                let path = tempDirectory + "/" + name
                let stale = pid == ownPID ? !InFlightTemporaries.contains(path) : !FileSystemCalls.processExists(pid)
                if stale, unlink(path) == 0 { removed += 1 }
            }
            return removed
        }
        if removed > 0 {
            logger.notice("removed \(removed) stale temporary file(s) from \(root)/\(Self.tempDirectoryName)")
        }
        let supported = try await FileSystemCalls.run { AnonymousFiles.probe(in: tempDirectory) }
        anonymous.supported = supported
        if !supported {
            logger.info("\(root): the file system cannot link anonymous files (O_TMPFILE and /proc): temporary files are named")
        }
    }

    // MARK: Prepare

    public func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        switch try await write(body, context: context, commitSmall: false) {
        case .prepared(let file): return file
        case .stored: preconditionFailure("an upload is stored only when asked to commit small ones")
        }
    }

    /// Prepares and commits. An upload that ends within `memory_buffer` takes a single
    /// trip to the disk pool for all of it — create, write, close, rename — instead of
    /// one to write and one to commit.
    public func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        switch try await write(body, context: context, commitSmall: true) {
        case .stored(let receipt):
            return receipt
        case .prepared(let file):
            do {
                return try await file.commit()
            } catch {
                await file.abort()
                throw error
            }
        }
    }

    private enum Written {
        case prepared(PreparedDiskFile)
        case stored(SinkReceipt)
    }

    // The phases are separate functions so that the frame a waiting upload keeps (this
    // one and the gathering one) holds only what the wait needs: with thousands of slow
    // connections, every byte of an async frame counts thousands of times.
    private func write(_ body: UploadBody, context: UploadContext, commitSmall: Bool) async throws -> Written {
        // Without digest placeholders the name is known now: refuse a bad one before reading the body.
        let name = usesDigestPlaceholders ? nil : try checkedName(context)
        // Pieces rather than chunks: past `memory_buffer`, a body whose bytes can stay in the
        // kernel (a spliced socket) goes from its pipe into the file without being read.
        var pieces = body.makePieceIterator()
        let memoryBuffer = configuration.memoryBuffer.bytes
        // A body of known length is checked against the free space when its file is made.
        let declared = body.length
        if let declared = body.length ?? context.metadata.declaredLength, declared > memoryBuffer {
            // Known to be larger (an HTTP Content-Length): no point gathering the start.
            return try await writeStreaming(ByteBuffer(), ByteBuffer(), &pieces, name: name, context: context, commit: commitSmall, length: declared)
        }
        let (gathered, overflow) = try await Self.gather(&pieces, limit: Int(clamping: memoryBuffer))
        if let overflow {
            return try await writeStreaming(gathered, overflow, &pieces, name: name, context: context, commit: commitSmall, length: declared)
        }
        return try await writeGathered(gathered, name: name, context: context, commitSmall: commitSmall)
    }

    private var usesDigestPlaceholders: Bool {
        !configuration.name.usedPlaceholders.isDisjoint(with: Self.digestPlaceholders)
    }
    private static let digestPlaceholders = Set(DigestAlgorithm.allCases.map(\.rawValue))

    /// Gathers the start of the body in memory, up to `limit` bytes: an upload that ends
    /// within it is written with one create-write-close on the disk pool, and holds no
    /// file descriptor while it arrives (a slow sender costs a socket only). Returns the
    /// bytes gathered and, if the body went on, the chunk that did not fit.
    ///
    /// When the first chunk and the bytes already waiting behind it (``BodyPieceIterator/bytesWaiting()``,
    /// a socket's receive queue) pass `limit`, the body is known to outgrow it: gathering
    /// stops at once and the rest streams (or splices) into the file instead of being read
    /// into memory first.
    @inline(never)
    private static func gather(_ pieces: inout any BodyPieceIterator, limit: Int) async throws -> (ByteBuffer, overflow: ByteBuffer?) {
        var gathered = ByteBuffer()
        var first = true
        do {
            while let piece = try await pieces.next(allowPipe: false) {
                guard case .bytes(let chunk) = piece else { preconditionFailure("a piped piece while gathering") }
                if gathered.readableBytes + chunk.readableBytes > limit {
                    return (gathered, chunk)
                }
                if first {
                    first = false
                    if chunk.readableBytes + (await pieces.bytesWaiting()) > limit { return (gathered, chunk) }
                }
                gathered.writeImmutableBuffer(chunk)
            }
            // Some sequences end quietly when their consumer is cancelled: that is not a complete upload.
            try Task.checkCancellation()
        } catch {
            throw SluiceError.from(error)
        }
        return (gathered, nil)
    }

    /// A whole upload gathered in memory: one trip to the disk pool (two when the commit is separate).
    @inline(never)
    private func writeGathered(_ gathered: ByteBuffer, name: String?, context: UploadContext, commitSmall: Bool) async throws -> Written {
        do {
            if commitSmall {
                let name = try name ?? checkedName(context)
                let sidecars = context.sidecars.map { ($0.algorithm.rawValue, $0.hex) }
                let location = try await TempFile.createWrittenAndPlaced(
                    in: tempDirectory, mode: configuration.fileMode, bytes: gathered, sync: configuration.fsync, anonymous: anonymous.supported
                ) { temp in
                    placement(temp, name: name, sidecars: sidecars)
                }
                return .stored(SinkReceipt(location: location, bytesStored: Int64(gathered.readableBytes)))
            }
            let temp = try await TempFile.createWritten(in: tempDirectory, mode: configuration.fileMode, bytes: gathered, sync: configuration.fsync)
            return .prepared(try prepared(temp, bytes: Int64(gathered.readableBytes), name: name, context: context))
        } catch {
            throw SluiceError.from(error)
        }
    }

    /// An upload larger than `memory_buffer`: streamed into its temporary file from here
    /// on. With `commit`, closing the file and renaming it into place take one trip to
    /// the disk pool.
    @inline(never)
    private func writeStreaming(
        _ gathered: ByteBuffer, _ overflow: ByteBuffer, _ pieces: inout any BodyPieceIterator, name: String?, context: UploadContext,
        commit: Bool, length: Int64?
    ) async throws -> Written {
        // A two-step commit (prepare, then commit) needs a name between the steps.
        let temp = try await TempFile.create(
            in: tempDirectory, mode: configuration.fileMode, anonymous: commit && anonymous.supported, length: length
        )
        var writer = PipelinedWriter(
            temp: temp, inline: inlineWrites, reservation: configuration.preallocate ? .growing(upTo: length) : .off
        )
        var open = true
        do {
            try await writer.append(gathered)
            try await writer.append(overflow)
            while let piece = try await pieces.next(allowPipe: true) {
                switch piece {
                case .bytes(let chunk): try await writer.append(chunk)
                case .piped(let pipe, let count): try await writer.append(pipe, count: count)
                }
            }
            try Task.checkCancellation()
            try await writer.finish()
            let written = writer.written
            let trim = writer.reservation.trim(written: written)
            if commit {
                let name = try name ?? checkedName(context)
                let sidecars = context.sidecars.map { ($0.algorithm.rawValue, $0.hex) }
                open = false
                let location = try await temp.finishAndPlace(sync: configuration.fsync, trimmingTo: trim, placement(temp, name: name, sidecars: sidecars))
                return .stored(SinkReceipt(location: location, bytesStored: written))
            }
            open = false
            try await temp.finish(sync: configuration.fsync, trimmingTo: trim)
            return .prepared(try prepared(temp, bytes: written, name: name, context: context))
        } catch {
            // A write still running must end before its descriptor is closed.
            await writer.settle()
            await temp.discard(closing: open)
            throw SluiceError.from(error)
        }
    }

    /// The written temporary file as a prepared object; removes the file if the name
    /// (rendered now when it uses digests) is refused.
    private func prepared(_ temp: TempFile, bytes: Int64, name known: String?, context: UploadContext) throws -> PreparedDiskFile {
        let name: String
        do {
            name = try known ?? checkedName(context)
        } catch {
            // The file is closed; the commit that would have moved it will not happen.
            unlink(temp.path)
            InFlightTemporaries.remove(temp.path)
            throw error
        }
        return PreparedDiskFile(
            sink: self,
            temp: temp,
            name: name,
            bytes: bytes,
            sidecars: context.sidecars.map { ($0.algorithm.rawValue, $0.hex) }
        )
    }

    /// How `temp` goes into place as `name`.
    func placement(_ temp: TempFile, name: String, sidecars: [(algorithm: String, hex: String)]) -> Placement {
        Placement(
            root: configuration.root,
            temp: temp,
            name: name,
            policy: configuration.onConflict,
            createDirectories: configuration.createDirectories,
            fsync: configuration.fsync,
            fileMode: configuration.fileMode,
            sidecars: sidecars
        )
    }

    private func checkedName(_ context: UploadContext) throws -> String {
        let name = try configuration.name.render(context)
        if Self.isReserved(name) {
            throw SluiceError(.invalidName, "name \(UploadName.quoted(name)) is inside \(Self.tempDirectoryName)/, which is reserved")
        }
        return name
    }
}

/// A temporary file in `<root>/.sluice-tmp/`, open for writing: named, or anonymous
/// (`O_TMPFILE`: no name until it is linked into place; see ``AnonymousFiles``).
struct TempFile: Sendable {
    let fd: Int32
    /// The file's path; for an anonymous file, the directory it was created in.
    let path: String
    /// The file name within the temporary directory; empty for an anonymous file.
    let name: String

    var isAnonymous: Bool { name.isEmpty }

    /// A path to the open file's inode, for `linkat(2)` (an anonymous file has no other).
    var descriptorPath: String { "/proc/self/fd/\(fd)" }

    /// Creates and opens a temporary file for an upload of `length` bytes, if known: one
    /// the file system has not got the free space for is refused with
    /// `insufficientStorage` before its body is read. (Checked, not reserved: a client
    /// declaring a large length and then sending slowly must not hold the space.)
    static func create(in directory: String, mode: UInt32?, anonymous: Bool = false, length: Int64? = nil) async throws -> TempFile {
        let named = unopened(in: directory, anonymous: anonymous)
        try acquireDescriptor()
        if !anonymous { InFlightTemporaries.insert(named.path) }
        do {
            let fd = try await FileSystemCalls.run {
                let fd = try openNew(named, mode: mode)
                if let length, let free = SystemCalls.freeSpace(fd), free < length {
                    FileSystemCalls.closeQuietly(fd)
                    if !named.isAnonymous { unlink(named.path) }
                    throw SluiceError(.insufficientStorage, "the upload is \(ByteSize(length)) but the disk has \(ByteSize(free)) free")
                }
                return fd
            }
            return TempFile(fd: fd, path: named.path, name: named.name)
        } catch {
            if !anonymous { InFlightTemporaries.remove(named.path) }
            FileDescriptorBudget.shared.release()
            throw error
        }
    }

    /// A fresh temporary file in `directory`, not created yet (`fd` is -1).
    private static func unopened(in directory: String, anonymous: Bool = false) -> TempFile {
        if anonymous { return TempFile(fd: -1, path: directory, name: "") }
        let name = TemporaryNames.next()
        return TempFile(fd: -1, path: directory + "/" + name, name: name)
    }

    /// Takes one descriptor from the budget, or refuses the upload rather than take the
    /// process to its open-file limit (see FileDescriptorBudget).
    private static func acquireDescriptor() throws {
        guard FileDescriptorBudget.shared.tryAcquire() else {
            throw SluiceError(.overloaded, "too many open files: no descriptor to spare for a temporary file")
        }
    }

    /// Creates a temporary file holding `bytes`, optionally fsynced, and closes it: one
    /// trip to the disk pool for an upload that fit in memory. The returned file's
    /// descriptor is closed (`fd` is -1).
    static func createWritten(in directory: String, mode: UInt32?, bytes: ByteBuffer, sync: Bool) async throws -> TempFile {
        try await withNewName(in: directory) { temp in
            try await FileSystemCalls.run(syncs: sync) {
                try writeNew(temp, mode: mode, bytes: bytes, sync: sync)
            }
            return temp
        }
    }

    /// ``createWritten(in:mode:bytes:sync:)`` and the rename into place, in one trip to
    /// the disk pool; returns the stored location. Nothing is left behind on failure.
    static func createWrittenAndPlaced(
        in directory: String, mode: UInt32?, bytes: ByteBuffer, sync: Bool, anonymous: Bool, _ placement: @escaping @Sendable (TempFile) -> Placement
    ) async throws -> String {
        if anonymous {
            try acquireDescriptor()
            defer { FileDescriptorBudget.shared.release() }
            let unopened = unopened(in: directory, anonymous: true)
            return try await FileSystemCalls.run(syncs: sync) {
                let fd = try openNew(unopened, mode: mode)
                let temp = TempFile(fd: fd, path: unopened.path, name: "")
                // Closing frees an anonymous file that was not linked: nothing to remove.
                defer { FileSystemCalls.closeQuietly(fd) }
                try FileSystemCalls.writeAll(fd: fd, bytes, what: "the temporary file")
                try syncIfAsked(fd, sync)
                return try placement(temp).place()
            }
        }
        return try await withNewName(in: directory) { temp in
            let placement = placement(temp)
            let location = try await FileSystemCalls.run(syncs: sync) {
                try writeNew(temp, mode: mode, bytes: bytes, sync: sync)
                do {
                    return try placement.place()
                } catch {
                    unlink(temp.path)
                    throw error
                }
            }
            InFlightTemporaries.remove(temp.path)
            return location
        }
    }

    /// Runs `body` with a fresh temporary file name, under the descriptor budget (the
    /// file is open only inside `body`), keeping the start-up sweep away from it meanwhile.
    private static func withNewName<T>(in directory: String, _ body: (TempFile) async throws -> T) async throws -> T {
        let temp = unopened(in: directory)
        try acquireDescriptor()
        defer { FileDescriptorBudget.shared.release() }
        InFlightTemporaries.insert(temp.path)
        do {
            return try await body(temp)
        } catch {
            InFlightTemporaries.remove(temp.path)
            throw error
        }
    }

    /// Blocking: creates `temp`, writes `bytes`, optionally fsyncs, closes; removes it on failure.
    private static func writeNew(_ temp: TempFile, mode: UInt32?, bytes: ByteBuffer, sync: Bool) throws {
        let fd = try openNew(temp, mode: mode)
        do {
            try FileSystemCalls.writeAll(fd: fd, bytes, what: "the temporary file")
            try syncIfAsked(fd, sync)
        } catch {
            FileSystemCalls.closeQuietly(fd)
            unlink(temp.path)
            throw error
        }
        // close(2) can report a deferred write error (NFS, quotas).
        if close(fd) != 0, errno != EINTR {
            let code = errno
            unlink(temp.path)
            throw FileSystemCalls.failure("close", "the temporary file", code)
        }
    }

    /// Creates and opens `temp` for writing (a named one must not exist) with `mode` applied.
    private static func openNew(_ temp: TempFile, mode: UInt32?) throws -> Int32 {
        let fd = temp.isAnonymous
            ? open(temp.path, AnonymousFiles.openFlags, 0o666)
            : open(temp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw FileSystemCalls.failure("create a temporary file in", DiskSink.tempDirectoryName, errno)
        }
        if let mode, fchmod(fd, mode_t(mode)) != 0 {
            let code = errno
            FileSystemCalls.closeQuietly(fd)
            if !temp.isAnonymous { unlink(temp.path) }
            throw FileSystemCalls.failure("set the mode of", DiskSink.tempDirectoryName + "/" + temp.name, code)
        }
        return fd
    }

    /// Optionally truncates (releasing blocks reserved past the end, see ``Reservation``),
    /// fsyncs, and closes the file. The descriptor is closed even when this throws.
    func finish(sync: Bool, trimmingTo size: Int64? = nil) async throws {
        let fd = self.fd
        defer { FileDescriptorBudget.shared.release() }
        try await FileSystemCalls.run(syncs: sync) {
            Self.trim(fd, to: size)
            try Self.closeFile(fd, sync: sync)
        }
    }

    /// ``finish(sync:trimmingTo:)`` and the rename into place in one trip to the disk pool;
    /// returns the stored location. On failure the file is closed and removed.
    func finishAndPlace(sync: Bool, trimmingTo size: Int64? = nil, _ placement: Placement) async throws -> String {
        let fd = self.fd
        let path = self.path
        defer { FileDescriptorBudget.shared.release() }
        if isAnonymous {
            // Linked into place through its descriptor, then closed (closing an unlinked one frees it).
            return try await FileSystemCalls.run(syncs: sync) {
                defer { FileSystemCalls.closeQuietly(fd) }
                Self.trim(fd, to: size)
                try Self.syncIfAsked(fd, sync)
                return try placement.place()
            }
        }
        let location = try await FileSystemCalls.run(syncs: sync) {
            do {
                Self.trim(fd, to: size)
                try Self.closeFile(fd, sync: sync)
                return try placement.place()
            } catch {
                unlink(path)
                throw error
            }
        }
        InFlightTemporaries.remove(path)
        return location
    }

    /// Blocking: truncates `fd` to `size` (its size already: this releases the blocks
    /// reserved past it). A failure leaves those blocks allocated, which costs space,
    /// not correctness: it is ignored.
    private static func trim(_ fd: Int32, to size: Int64?) {
        guard let size else { return }
        while ftruncate(fd, off_t(size)) != 0, errno == EINTR {}
    }

    /// Blocking: fsyncs `fd` when `sync` is set.
    private static func syncIfAsked(_ fd: Int32, _ sync: Bool) throws {
        if sync, fsync(fd) != 0 {
            throw FileSystemCalls.failure("fsync", "the temporary file", errno)
        }
    }

    /// Blocking: optionally fsyncs, then closes `fd` (closed even when this throws).
    private static func closeFile(_ fd: Int32, sync: Bool) throws {
        if sync, fsync(fd) != 0 {
            let code = errno
            FileSystemCalls.closeQuietly(fd)
            throw FileSystemCalls.failure("fsync", "the temporary file", code)
        }
        // close(2) can report a deferred write error (NFS, quotas).
        if close(fd) != 0, errno != EINTR {
            throw FileSystemCalls.failure("close", "the temporary file", errno)
        }
    }

    /// Removes the file (closing it first when `closing`); never throws.
    func discard(closing: Bool) async {
        let fd = self.fd
        let path = self.path
        let anonymous = isAnonymous
        _ = try? await FileSystemCalls.run {
            if closing { FileSystemCalls.closeQuietly(fd) }
            if !anonymous { unlink(path) }
        }
        if closing { FileDescriptorBudget.shared.release() }
        if !anonymous { InFlightTemporaries.remove(path) }
    }
}

/// Names for temporary files: `<pid>-<random>-<n>.part`, where `<random>` is drawn once
/// per process and `<n>` counts up. Unique without a system call per file (a random
/// UUID each cost two `getrandom(2)` calls); the leading pid is what the start-up sweep
/// reads, and `O_EXCL` refuses a clash with a file that exists all the same.
enum TemporaryNames {
    private static let prefix: String = {
        var generator = SystemRandomNumberGenerator()
        return "\(getpid())-\(String(generator.next() as UInt64, radix: 16))-"
    }()
    private static let counter = Atomic<UInt64>(0)

    static func next() -> String {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        return prefix + String(n, radix: 16) + DiskSink.tempSuffix
    }
}

/// Anonymous temporary files: `open(dir, O_TMPFILE)` creates a file with no name, and
/// `linkat(2)` through `/proc/self/fd/N` gives it its final one. Against a named
/// temporary file and a rename, that is one directory entry fewer to create and remove
/// and no cross-directory rename (which takes the file system's rename lock): measured,
/// two processes storing 4 KiB files into one directory spent 55 µs of CPU per file with
/// named files and renames, 36 µs with anonymous files and links. A crash leaves nothing
/// behind (the kernel frees unlinked files). Used by uploads stored in one step; a
/// two-step commit (`tee`) keeps named files, which need a name between the steps.
final class AnonymousFiles: Sendable {
    /// `O_TMPFILE | O_WRONLY | O_CLOEXEC` (`__O_TMPFILE` is 020000000 on Linux; the Swift
    /// Glibc module does not export the constant).
    static let openFlags: Int32 = 0o20_000_000 | O_DIRECTORY | O_WRONLY | O_CLOEXEC

    private let flag = Atomic<Bool>(false)

    /// Set when the sink starts and its temporary directory passed ``probe(in:)``.
    var supported: Bool {
        get { flag.load(ordering: .relaxed) }
        set { flag.store(newValue, ordering: .relaxed) }
    }

    /// Blocking: whether an anonymous file can be created in `directory` and linked
    /// into it (the file system supports `O_TMPFILE`, `/proc` is mounted).
    static func probe(in directory: String) -> Bool {
        #if os(Linux)
        let fd = open(directory, openFlags, 0o600)
        guard fd >= 0 else { return false }
        defer { FileSystemCalls.closeQuietly(fd) }
        let name = directory + "/" + TemporaryNames.next()
        guard linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0 else { return false }
        unlink(name)
        return true
        #else
        return false
        #endif
    }
}
