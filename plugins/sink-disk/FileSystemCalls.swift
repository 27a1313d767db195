import NIOCore
import NIOPosix
import SluiceCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Blocking file-system calls, run on NIO's blocking thread pool so that disk I/O
/// never stalls the cooperative thread pool.
///
/// Every call reports failures as ``SluiceError``: out of space as
/// `insufficientStorage`, an existing target as `conflict`, the rest as `internal`.
/// Messages name paths relative to the sink's root, never absolute server paths.
enum FileSystemCalls {
    /// The threads disk I/O runs on: the sink's own, so that disk calls never block the
    /// cooperative pool or the event loops, nor queue behind other users of NIO's
    /// singleton pool. Started on first use.
    ///
    /// Two pools. Creates, closes and renames of files that are not fsynced take
    /// microseconds and contend for the same directory locks: one thread per core
    /// (measured, 4 KiB uploads over HTTP keep-alive on 2 cores: ~12,000 uploads/s with
    /// 2 threads, ~10,000 with 16, which spend the difference switching and spinning on
    /// the directory's lock). Writes and fsyncs can take milliseconds and gain from
    /// running side by side (the file system groups journal commits; 256 uploads' writes
    /// queued on 2 threads held ~130 MiB more in pending buffers): 16 threads.
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threadCount)
        pool.start()
        return pool
    }()
    static let threadCount = max(2, System.coreCount)
    static let ioPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: ioThreadCount)
        pool.start()
        return pool
    }()
    static let ioThreadCount = 16

    /// Runs `body` on the disk pool (the I/O pool when it `syncs`), and always runs it:
    /// the future-based API is used on purpose, because the async one drops queued work
    /// when the calling task is cancelled, and the cleanup that runs after a cancellation
    /// (close, unlink) and commits (renames) must not be dropped. The result arrives on
    /// the caller's event loop when it runs on one (no further hop to resume it).
    static func run<T: Sendable>(syncs: Bool = false, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
        return try await (syncs ? ioPool : pool).runIfActive(eventLoop: eventLoop, body).get()
    }

    /// Starts `body` (a write) on the I/O pool and returns at once; it always runs (see ``run(_:)``).
    /// The result arrives on the caller's event loop when it runs on one (a receiver may
    /// run uploads there): no further hop to resume it.
    static func submit(_ body: @escaping @Sendable () throws -> Void) -> EventLoopFuture<Void> {
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
        return ioPool.runIfActive(eventLoop: eventLoop, body)
    }

    static func message(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// The error for a failed call on `what` (a relative path for messages).
    static func failure(_ operation: String, _ what: String, _ code: Int32) -> SluiceError {
        let text = "cannot \(operation) \(what): \(message(code))"
        switch code {
        case ENOSPC, EDQUOT, EFBIG:
            return SluiceError(.insufficientStorage, text)
        case EEXIST:
            return SluiceError(.conflict, text)
        default:
            return SluiceError(.internal, text)
        }
    }

    /// Writes all of `buffer` to `fd`, retrying short writes and `EINTR`.
    static func writeAll(fd: Int32, _ buffer: ByteBuffer, what: String) throws {
        try buffer.withUnsafeReadableBytes { raw in
            guard var pointer = raw.baseAddress else { return }
            var remaining = raw.count
            while remaining > 0 {
                let n = write(fd, pointer, remaining)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("write", what, errno)
                }
                pointer += n
                remaining -= n
            }
        }
    }

    /// Moves `count` bytes from `pipe` into `fd` (see ``SplicePipe/drain(_:into:path:)``).
    static func drain(_ pipe: SplicePipe, _ count: Int, into fd: Int32) throws {
        do {
            try pipe.drain(count, into: fd, path: "the temporary file")
        } catch {
            throw failure("write", "the temporary file", error.code)
        }
    }

    /// Closes `fd`, ignoring errors (used on failure paths, where the first error is the one to report).
    static func closeQuietly(_ fd: Int32) { SystemCalls.closeQuietly(fd) }

    /// Opens a directory for `*at` calls.
    static func openDirectory(_ path: String, what: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open directory", what, errno) }
        return fd
    }

    /// Creates `path` and its missing parents (like `mkdir -p`).
    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/\(component)"
            if mkdir(current, 0o777) != 0, errno != EEXIST {
                throw failure("create directory", current, errno)
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw failure("stat", path, errno) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw SluiceError(.internal, "\(path) exists and is not a directory")
        }
    }

    /// `fsync(2)`; a named wrapper because sink types have an `fsync` setting that shadows it.
    static func sync(_ fd: Int32) -> Int32 {
        fsync(fd)
    }

    static func fsyncDirectory(_ fd: Int32, what: String) throws {
        guard fsync(fd) == 0 else { throw failure("fsync directory", what, errno) }
    }

    /// Moves `from` (in `fromDirectory`) to `to` (in `toDirectory`) only if `to` does not exist.
    ///
    /// Uses `renameat2(RENAME_NOREPLACE)` where the kernel and filesystem support it,
    /// otherwise `linkat` + `unlinkat` (`linkat` refuses an existing target atomically too).
    ///
    /// - Returns: `0`, or the `errno` of the failure (`EEXIST` when the target exists).
    static func renameNoReplace(_ fromDirectory: Int32, _ from: String, _ toDirectory: Int32, _ to: String) -> Int32 {
        #if os(Linux)
        if let renameat2 = Renameat2.function {
            if renameat2(fromDirectory, from, toDirectory, to, Renameat2.noReplace) == 0 { return 0 }
            let code = errno
            // EINVAL: this filesystem does not support the flag; ENOSYS: an old kernel.
            if code != EINVAL && code != ENOSYS { return code }
        }
        #endif
        if linkat(fromDirectory, from, toDirectory, to, 0) != 0 { return errno }
        _ = unlinkat(fromDirectory, from, 0)
        return 0
    }

    /// Moves `from` to `to`, replacing `to` atomically if it exists.
    static func renameReplacing(_ fromDirectory: Int32, _ from: String, _ toDirectory: Int32, _ to: String) -> Int32 {
        renameat(fromDirectory, from, toDirectory, to) == 0 ? 0 : errno
    }

    /// Whether process `pid` exists (it may belong to another user).
    static func processExists(_ pid: Int32) -> Bool { SystemCalls.processExists(pid) }
}

#if os(Linux)
/// `renameat2(2)`, looked up at run time: the Swift Glibc module does not export it
/// (it sits behind `_GNU_SOURCE`), and glibc before 2.28 does not have it.
enum Renameat2 {
    typealias Function = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    static let noReplace: UInt32 = 1  // RENAME_NOREPLACE in <linux/fs.h>
    static let function: Function? = {
        // RTLD_DEFAULT is a null handle on glibc and musl.
        guard let symbol = dlsym(nil, "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}
#endif

/// Temporary files this process is writing, so a sweep at start (a config reload in
/// the same process starts a new sink) never removes a file another upload still owns.
enum InFlightTemporaries {
    private static let paths = Mutex<Set<String>>([])

    static func insert(_ path: String) { _ = paths.withLock { $0.insert(path) } }
    static func remove(_ path: String) { _ = paths.withLock { $0.remove(path) } }
    static func contains(_ path: String) -> Bool { paths.withLock { $0.contains(path) } }
}
