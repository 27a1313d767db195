#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CLinux
import NIOCore

/// A failed system call: what was attempted, on which path, and the `errno` it set.
///
/// ``SystemCalls`` throws this instead of a ``SluiceError`` so that each sink keeps its
/// own mapping from `errno` to an error code (a full disk is
/// ``SluiceError/Code/insufficientStorage`` everywhere, other codes differ per sink).
public struct SystemCallError: Error, Sendable {
    /// What failed, as the start of a message, for example `"cannot fsync"`.
    public var operation: String
    /// The path the call was about.
    public var path: String
    /// The `errno` value.
    public var code: Int32

    /// Creates an error for `operation` on `path`.
    public init(_ operation: String, _ path: String, code: Int32) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    /// `strerror(code)`.
    public var reason: String { String(cString: strerror(code)) }
}

/// Thin, blocking wrappers over POSIX file calls that more than one sink needs.
///
/// Sinks that must control durability exactly (`fsync` of files and of directories,
/// positioned writes, exclusive creation) use these instead of higher-level file APIs.
/// Every function blocks: run it on a thread pool, never on the cooperative executor.
/// Failures are ``SystemCallError``s; map them to ``SluiceError``s at the sink.
public enum SystemCalls {
    /// Writes all of `buffer` to `fd` starting at `offset`, retrying short writes and `EINTR`.
    ///
    /// - Parameters:
    ///   - fd: An open file descriptor.
    ///   - buffer: The bytes to write (its readable bytes).
    ///   - offset: The file offset of the first byte.
    ///   - path: The file's path, for the error.
    /// - Throws: ``SystemCallError`` (`"cannot write"`).
    public static func pwriteAll(_ fd: CInt, _ buffer: ByteBuffer, at offset: Int64, path: String) throws(SystemCallError) {
        let failure: Int32? = buffer.withUnsafeReadableBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + Int64(done)))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return nil
        }
        if let failure { throw SystemCallError("cannot write", path, code: failure) }
    }

    /// Flushes `fd` to stable storage (`fsync(2)`).
    ///
    /// - Throws: ``SystemCallError`` (`"cannot fsync"`).
    public static func sync(_ fd: CInt, path: String) throws(SystemCallError) {
        guard fsync(fd) == 0 else { throw SystemCallError("cannot fsync", path, code: errno) }
    }

    /// Makes creations, links and renames in `directory` durable (`fsync(2)` of the directory).
    ///
    /// - Throws: ``SystemCallError`` (`"cannot open directory"` or `"cannot fsync directory"`).
    public static func syncDirectory(_ directory: String) throws(SystemCallError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("cannot open directory", directory, code: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SystemCallError("cannot fsync directory", directory, code: errno) }
    }

    /// Removes the file at `path`; a missing file is not an error.
    ///
    /// - Throws: ``SystemCallError`` (`"cannot remove"`).
    public static func remove(_ path: String) throws(SystemCallError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw SystemCallError("cannot remove", path, code: errno) }
    }

    /// Creates `path` and its missing parents with mode `0755` (like `mkdir -p`).
    ///
    /// - Throws: ``SystemCallError`` (`"cannot create directory"`, on the first component that failed).
    public static func makeDirectories(_ path: String) throws(SystemCallError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0, errno != EEXIST {
                throw SystemCallError("cannot create directory", current, code: errno)
            }
        }
    }

    /// The names in `directory`, without `.` and `..`, in no particular order.
    ///
    /// - Returns: The names; empty if `directory` does not exist.
    /// - Throws: ``SystemCallError`` (`"cannot list"`).
    public static func list(_ directory: String) throws(SystemCallError) -> [String] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw SystemCallError("cannot list", directory, code: errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }

    /// Whether process `pid` is alive (or exists under another user).
    ///
    /// Sinks use it at start to sweep temporary files whose name records a process that is gone.
    public static func processExists(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// Closes `fd`, ignoring errors (for failure paths, where the first error is the one to report).
    public static func closeQuietly(_ fd: CInt) {
        _ = close(fd)
    }

    /// The bytes the file system holding `fd` has free for this process (`fstatvfs(2)`:
    /// the blocks available to unprivileged users, or all free blocks for root), or `nil`
    /// when it cannot tell.
    public static func freeSpace(_ fd: CInt) -> Int64? {
        var info = statvfs()
        guard fstatvfs(fd, &info) == 0 else { return nil }
        let blocks = geteuid() == 0 ? info.f_bfree : info.f_bavail
        let (bytes, overflow) = Int64(clamping: blocks).multipliedReportingOverflow(by: Int64(clamping: info.f_frsize))
        return overflow ? .max : bytes
    }

    /// Allocates the blocks of `length` bytes at `offset` without changing the file's
    /// size (`fallocate(2)` with `FALLOC_FL_KEEP_SIZE`), so that later writes there find
    /// their blocks instead of reserving them page by page.
    ///
    /// - Returns: `0`, or the `errno` of the failure: `ENOSPC`/`EDQUOT` when the space is
    ///   not there, `EOPNOTSUPP` where the file system cannot allocate ahead.
    public static func reserve(_ fd: CInt, at offset: Int64, length: Int64) -> Int32 {
        while sluice_reserve(fd, offset, length) != 0 {
            if errno != EINTR { return errno }
        }
        return 0
    }

    /// The bytes waiting in a socket's receive queue (`ioctl(FIONREAD)`), or `nil` when
    /// the call fails.
    public static func bytesQueued(_ fd: CInt) -> Int? {
        let count = sluice_bytes_queued(fd)
        return count >= 0 ? Int(count) : nil
    }
}

/// A sink's view of ``SystemCalls`` that throws ``SluiceError``s made by the sink's own mapping.
///
/// Conform a caseless enum and implement ``error(_:_:errno:)``; the shared calls then
/// come with it, under the same names as in ``SystemCalls``:
///
/// ```swift
/// enum Posix: MappedSystemCalls {
///     static func error(_ what: String, _ path: String, errno code: Int32) -> SluiceError {
///         SluiceError(code == ENOSPC ? .insufficientStorage : .internal, "\(what) \(path)")
///     }
/// }
/// try Posix.syncDirectory(directory)
/// ```
public protocol MappedSystemCalls {
    /// The error for `what` (for example `"cannot fsync"`) failing on `path` with `errno` `code`.
    static func error(_ what: String, _ path: String, errno code: Int32) -> SluiceError
}

extension MappedSystemCalls {
    /// ``SystemCalls/pwriteAll(_:_:at:path:)``, failing with ``error(_:_:errno:)``.
    public static func pwriteAll(_ fd: CInt, _ buffer: ByteBuffer, at offset: Int64, path: String) throws {
        try mapped { () throws(SystemCallError) in try SystemCalls.pwriteAll(fd, buffer, at: offset, path: path) }
    }

    /// ``SystemCalls/sync(_:path:)``, failing with ``error(_:_:errno:)``.
    public static func sync(_ fd: CInt, path: String) throws {
        try mapped { () throws(SystemCallError) in try SystemCalls.sync(fd, path: path) }
    }

    /// ``SystemCalls/syncDirectory(_:)``, failing with ``error(_:_:errno:)``.
    public static func syncDirectory(_ directory: String) throws {
        try mapped { () throws(SystemCallError) in try SystemCalls.syncDirectory(directory) }
    }

    /// ``SystemCalls/remove(_:)``, failing with ``error(_:_:errno:)``.
    public static func remove(_ path: String) throws {
        try mapped { () throws(SystemCallError) in try SystemCalls.remove(path) }
    }

    /// ``SystemCalls/makeDirectories(_:)``, failing with ``error(_:_:errno:)``.
    public static func makeDirectories(_ path: String) throws {
        try mapped { () throws(SystemCallError) in try SystemCalls.makeDirectories(path) }
    }

    /// ``SystemCalls/list(_:)``, failing with ``error(_:_:errno:)``.
    public static func list(_ directory: String) throws -> [String] {
        try mapped { () throws(SystemCallError) in try SystemCalls.list(directory) }
    }

    /// ``SystemCalls/processExists(_:)``.
    public static func processExists(_ pid: pid_t) -> Bool { SystemCalls.processExists(pid) }

    /// ``SystemCalls/closeQuietly(_:)``.
    public static func closeQuietly(_ fd: CInt) { SystemCalls.closeQuietly(fd) }

    private static func mapped<T>(_ body: () throws(SystemCallError) -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw Self.error(error.operation, error.path, errno: error.code)
        }
    }
}
