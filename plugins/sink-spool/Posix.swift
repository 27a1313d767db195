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
enum Posix {
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

    static func pwriteAll(_ fd: CInt, _ buffer: ByteBuffer, at offset: Int64, path: String) throws {
        try buffer.withUnsafeReadableBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + Int64(done)))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw error("cannot write", path)
                }
                done += n
            }
        }
    }

    static func sync(_ fd: CInt, path: String) throws {
        guard fsync(fd) == 0 else { throw error("cannot fsync", path) }
    }

    static func syncDirectory(_ directory: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw error("cannot open directory", directory) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw error("cannot fsync directory", directory) }
    }

    /// Hard-links `from` to `to`; fails with ``SluiceError/Code/conflict`` if `to` exists
    /// (so delivery never replaces a file already in `new/`).
    static func link(_ from: String, to: String) throws {
        guard systemLink(from, to) == 0 else { throw error("cannot link \(from) to", to) }
    }

    static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw error("cannot remove", path) }
    }

    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0, errno != EEXIST {
                throw error("cannot create directory", current)
            }
        }
    }

    static func list(_ directory: String) throws -> [String] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw error("cannot list", directory)
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

    /// Size and modification time (seconds since the epoch) of a regular file, or nil.
    static func fileInfo(_ path: String) -> (size: Int64, modified: Double)? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return (Int64(st.st_size), Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9)
    }

    static func processExists(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    static func closeQuietly(_ fd: CInt) {
        _ = close(fd)
    }
}

/// `link(2)`, under a name that does not clash with ``Posix/link(_:to:)``.
private func systemLink(_ from: String, _ to: String) -> Int32 {
    link(from, to)
}
