#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SluiceCore

/// Thin, blocking wrappers over the POSIX calls the rotate sink needs.
///
/// The sink needs exact control that higher-level file APIs do not give: `O_APPEND`
/// writes of whole chunks in one call, `ftruncate` back to a record boundary, and
/// `fsync` of files and directories. Every function here blocks, so callers run
/// them on a thread pool, never on the cooperative executor.
/// The calls other sinks need too (`fsync`, `pwrite`, `mkdir -p`, listing) come from
/// ``MappedSystemCalls`` in the core, with this sink's errno mapping.
enum Posix: MappedSystemCalls {
    static func error(_ what: String, _ path: String, errno code: Int32 = errno) -> SluiceError {
        let message = "\(what) \(path): \(String(cString: strerror(code)))"
        switch code {
        case ENOSPC, EDQUOT:
            return SluiceError(.insufficientStorage, message)
        default:
            return SluiceError(.internal, message)
        }
    }

    /// Opens (creating if needed) `path` for appending and reading.
    static func openAppend(_ path: String) throws -> CInt {
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw error("cannot open", path) }
        return fd
    }

    static func openRead(_ path: String) throws -> CInt {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw error("cannot open", path) }
        return fd
    }

    /// Creates `path` exclusively for writing.
    static func createExclusive(_ path: String, mode: mode_t = 0o644) throws -> CInt {
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw error("cannot create", path) }
        return fd
    }

    static func size(of fd: CInt, path: String) throws -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw error("cannot stat", path) }
        return Int64(st.st_size)
    }

    /// The size of the file at `path`, or nil if it does not exist.
    static func size(at path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Writes all of `bytes`, looping over short writes.
    static func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw error("cannot write", path)
            }
            offset += n
        }
    }

    static func writeAll(_ fd: CInt, _ buffer: ByteBuffer, path: String) throws {
        try buffer.withUnsafeReadableBytes { try writeAll(fd, $0, path: path) }
    }

    /// Reads up to `count` bytes at `offset`; returns how many were read (0 at the end).
    static func readAt(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws -> Int {
        while true {
            let n = pread(fd, buffer.baseAddress!, buffer.count, off_t(offset))
            if n < 0 {
                if errno == EINTR { continue }
                throw error("cannot read", path)
            }
            return n
        }
    }

    static func truncate(_ fd: CInt, to size: Int64, path: String) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw error("cannot truncate", path) }
    }

    static func move(_ from: String, to: String) throws {
        guard rename(from, to) == 0 else { throw error("cannot rename \(from) to", to) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}

import Foundation

extension Posix {
    /// When the file was created, if the filesystem records it (Foundation reads the
    /// birth time with `statx` on Linux).
    static func birthTime(of path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.creationDate] as? Date
    }
}
