#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SluiceCore

/// The blocking POSIX calls the spool sink needs (run on a thread pool): Maildir
/// delivery is `open(O_EXCL)` in `tmp/`, `fsync`, `link` into `new/`, `unlink`, and an
/// `fsync` of `new/`.
/// The calls other sinks need too come from ``MappedSystemCalls`` in the core.
enum Posix: MappedSystemCalls {
    static func error(_ what: String, _ path: String, errno code: Int32 = errno) -> SluiceError {
        let message = "\(what) \(path): \(String(cString: strerror(code)))"
        switch code {
        case ENOSPC, EDQUOT: return SluiceError(.insufficientStorage, message)
        case EEXIST: return SluiceError(.conflict, message)
        case ENAMETOOLONG: return SluiceError(.invalidName, message)
        default: return SluiceError(.internal, message)
        }
    }

    static func createExclusive(_ path: String) throws -> CInt {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw error("cannot create", path) }
        return fd
    }

    /// Hard-links `from` to `to`; fails with ``SluiceError/Code/conflict`` if `to` exists
    /// (so delivery never replaces a file already in `new/`).
    static func link(_ from: String, to: String) throws {
        guard systemLink(from, to) == 0 else { throw error("cannot link \(from) to", to) }
    }

    /// Size and modification time (seconds since the epoch) of a regular file, or nil.
    static func fileInfo(_ path: String) -> (size: Int64, modified: Double)? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return (Int64(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
    }
}

/// `link(2)`, under a name that does not clash with ``Posix/link(_:to:)``.
private func systemLink(_ from: String, _ to: String) -> Int32 {
    link(from, to)
}
