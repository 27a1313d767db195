import Foundation
import NIOCore
import SluiceCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An upload written to its temporary file, waiting to be renamed into place.
struct PreparedDiskFile: PreparedObject {
    let sink: DiskSink
    let temp: TempFile
    /// The rendered, sanitised name relative to the root.
    let name: String
    let bytes: Int64
    /// Sidecar files to write next to the object: (algorithm, hex digest).
    let sidecars: [(algorithm: String, hex: String)]

    func commit() async throws -> SinkReceipt {
        let placement = sink.placement(temp, name: name, sidecars: sidecars)
        let location = try await FileSystemCalls.run(syncs: placement.fsync) { try placement.place() }
        InFlightTemporaries.remove(temp.path)
        return SinkReceipt(location: location, bytesStored: bytes)
    }

    func abort() async {
        await temp.discard(closing: false)
    }
}

/// The blocking part of a commit: find (or create) the directory without following
/// symbolic links, rename the temporary file into it under the conflict policy,
/// write the sidecars, and fsync what changed.
struct Placement: Sendable {
    let root: String
    let temp: TempFile
    let name: String
    let policy: DiskSinkPlugin.ConflictPolicy
    let createDirectories: Bool
    let fsync: Bool
    let fileMode: UInt32?
    let sidecars: [(algorithm: String, hex: String)]

    /// Renames the file into place and returns its path relative to the root.
    func place() throws -> String {
        if let placed = try linkDirectly() { return placed }
        let components = name.split(separator: "/").map(String.init)
        let directories = components.dropLast()
        let base = components[components.count - 1]

        let rootFD = try FileSystemCalls.openDirectory(root, what: "the root directory")
        // Every directory on the way stays open: the last one is where the file goes,
        // and the ones that gained an entry are fsynced.
        var chain: [Int32] = [rootFD]
        defer { for fd in chain { FileSystemCalls.closeQuietly(fd) } }
        // Opened only when needed: an anonymous file linked under a free name never needs it.
        let temporaries = TemporaryDirectory(root: rootFD)
        defer { temporaries.close() }

        var firstChanged: Int?  // index in `chain` of the first directory that gained an entry
        for (i, component) in directories.enumerated() {
            let parent = chain[chain.count - 1]
            var fd = openat(parent, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0, errno == ENOENT, createDirectories {
                if mkdirat(parent, component, 0o777) == 0 {
                    if firstChanged == nil { firstChanged = chain.count - 1 }
                } else if errno != EEXIST {
                    throw FileSystemCalls.failure("create directory", directories.prefix(i + 1).joined(separator: "/"), errno)
                }
                fd = openat(parent, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard fd >= 0 else {
                let code = errno
                let prefix = directories.prefix(i + 1).joined(separator: "/")
                switch code {
                case ELOOP, ENOTDIR:
                    throw SluiceError(.invalidName, "\"\(prefix)\" is a symbolic link or not a directory; stored names never pass through either")
                case ENOENT:
                    throw SluiceError(.invalidName, "directory \"\(prefix)\" does not exist and create_directories is false")
                default:
                    throw FileSystemCalls.failure("open directory", prefix, code)
                }
            }
            chain.append(fd)
        }
        let parent = chain[chain.count - 1]
        let directoryPrefix = directories.isEmpty ? "" : directories.joined(separator: "/") + "/"

        let stored = try rename(from: temporaries, into: parent, base: base, prefix: directoryPrefix)
        do {
            for sidecar in sidecars {
                try writeSidecar(sidecar, tempFD: temporaries.fd(), parent: parent, objectName: stored, prefix: directoryPrefix)
            }
        } catch {
            // All or nothing: a receipt is only sent for an object with its sidecars.
            unlinkat(parent, stored, 0)
            for sidecar in sidecars { unlinkat(parent, "\(stored).\(sidecar.algorithm)", 0) }
            throw error
        }
        if fsync {
            for fd in chain[(firstChanged ?? chain.count - 1)...] {
                try FileSystemCalls.fsyncDirectory(fd, what: "the directory of \(directoryPrefix + stored)")
            }
        }
        return directoryPrefix + stored
    }

    /// The common case in one call: an anonymous file, a name without directories, no
    /// sidecars, no fsync — linked straight to `<root>/<name>`, without opening the root
    /// (`linkat(2)` never follows or replaces the final component, as with the root's
    /// descriptor). Returns `nil` when this does not apply or the name is taken (the full
    /// path then applies the conflict policy).
    private func linkDirectly() throws -> String? {
        guard temp.isAnonymous, !fsync, sidecars.isEmpty, !name.utf8.contains(UInt8(ascii: "/")) else { return nil }
        if linkat(AT_FDCWD, temp.descriptorPath, AT_FDCWD, root + "/" + name, AT_SYMLINK_FOLLOW) == 0 { return name }
        let code = errno
        guard code == EEXIST else { throw FileSystemCalls.failure("store", name, code) }
        return nil
    }

    /// Renames the temporary file to `base` (or a `unique` variant) in `parent`; returns the name used.
    private func rename(from temporaries: TemporaryDirectory, into parent: Int32, base: String, prefix: String) throws -> String {
        func refuse(_ candidate: String, _ code: Int32) -> SluiceError {
            switch code {
            case EEXIST, EISDIR, ENOTEMPTY:
                return SluiceError(.conflict, "\"\(prefix + candidate)\" already exists")
            default:
                return FileSystemCalls.failure("store", prefix + candidate, code)
            }
        }
        if temp.isAnonymous {
            return try link(into: parent, base: base, prefix: prefix, temporaries: temporaries, refuse: refuse)
        }
        let tempFD = try temporaries.fd()
        switch policy {
        case .fail:
            let code = FileSystemCalls.renameNoReplace(tempFD, temp.name, parent, base)
            guard code == 0 else { throw refuse(base, code) }
            return base
        case .overwrite:
            let code = FileSystemCalls.renameReplacing(tempFD, temp.name, parent, base)
            guard code == 0 else { throw refuse(base, code) }
            return base
        case .unique:
            for n in 0..<DiskSink.maxUniqueAttempts {
                let candidate = n == 0 ? base : Self.numbered(base, n)
                let code = FileSystemCalls.renameNoReplace(tempFD, temp.name, parent, candidate)
                if code == 0 { return candidate }
                if code != EEXIST { throw refuse(candidate, code) }
            }
            throw SluiceError(.conflict, "\"\(prefix + base)\" and \(DiskSink.maxUniqueAttempts - 1) numbered variants already exist")
        }
    }

    /// Links an anonymous temporary file into `parent` as `base` (or a `unique` variant)
    /// under the conflict policy; returns the name used. `linkat(2)` never replaces an
    /// existing name, so `fail` and `unique` are atomic as they stand; `overwrite` links a
    /// file that finds its name taken under a temporary name and renames it over the old one.
    private func link(into parent: Int32, base: String, prefix: String, temporaries: TemporaryDirectory, refuse: (String, Int32) -> SluiceError) throws -> String {
        let source = temp.descriptorPath
        func link(_ directory: Int32, _ name: String) -> Int32 {
            linkat(AT_FDCWD, source, directory, name, AT_SYMLINK_FOLLOW) == 0 ? 0 : errno
        }
        switch policy {
        case .fail:
            let code = link(parent, base)
            guard code == 0 else { throw refuse(base, code) }
            return base
        case .unique:
            for n in 0..<DiskSink.maxUniqueAttempts {
                let candidate = n == 0 ? base : Self.numbered(base, n)
                let code = link(parent, candidate)
                if code == 0 { return candidate }
                if code != EEXIST { throw refuse(candidate, code) }
            }
            throw SluiceError(.conflict, "\"\(prefix + base)\" and \(DiskSink.maxUniqueAttempts - 1) numbered variants already exist")
        case .overwrite:
            let code = link(parent, base)
            if code == 0 { return base }
            guard code == EEXIST else { throw refuse(base, code) }
            // A name in the temporary directory (swept at start should a crash leave it), then an atomic replace.
            let tempFD = try temporaries.fd()
            let name = TemporaryNames.next()
            let path = root + "/" + DiskSink.tempDirectoryName + "/" + name
            InFlightTemporaries.insert(path)
            defer { InFlightTemporaries.remove(path) }
            let linked = link(tempFD, name)
            guard linked == 0 else { throw FileSystemCalls.failure("link", "the temporary file", linked) }
            let renamed = FileSystemCalls.renameReplacing(tempFD, name, parent, base)
            guard renamed == 0 else {
                unlinkat(tempFD, name, 0)
                throw refuse(base, renamed)
            }
            return base
        }
    }

    /// `report.txt` → `report-3.txt`; `logs.tar.gz` → `logs-3.tar.gz`; `README` → `README-3`.
    static func numbered(_ base: String, _ n: Int) -> String {
        let compound = [".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst"]
        if let ext = compound.first(where: { base.hasSuffix($0) && base.count > $0.count }) {
            return "\(base.dropLast(ext.count))-\(n)\(ext)"
        }
        if let dot = base.lastIndex(of: "."), dot != base.startIndex {
            return "\(base[..<dot])-\(n)\(base[dot...])"
        }
        return "\(base)-\(n)"
    }

    /// Writes `<object>.<algorithm>` holding `<hex>  <object>\n` (the `sha256sum -c` format),
    /// through a temporary file and a rename so it is never seen half-written.
    private func writeSidecar(_ sidecar: (algorithm: String, hex: String), tempFD: Int32, parent: Int32, objectName: String, prefix: String) throws {
        let tempName = TemporaryNames.next()
        let tempPath = root + "/" + DiskSink.tempDirectoryName + "/" + tempName
        let target = "\(objectName).\(sidecar.algorithm)"
        InFlightTemporaries.insert(tempPath)
        defer { InFlightTemporaries.remove(tempPath) }
        let fd = openat(tempFD, tempName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw FileSystemCalls.failure("create", prefix + target, errno) }
        var isOpen = true
        do {
            if let fileMode, fchmod(fd, mode_t(fileMode)) != 0 {
                throw FileSystemCalls.failure("set the mode of", prefix + target, errno)
            }
            var line = "\(sidecar.hex)  \(objectName)\n"
            let buffer = line.withUTF8 { ByteBuffer(bytes: $0) }
            try FileSystemCalls.writeAll(fd: fd, buffer, what: prefix + target)
            if fsync, FileSystemCalls.sync(fd) != 0 {
                throw FileSystemCalls.failure("fsync", prefix + target, errno)
            }
            // Linux releases the descriptor even when close(2) fails: never close it twice.
            isOpen = false
            guard close(fd) == 0 || errno == EINTR else { throw FileSystemCalls.failure("close", prefix + target, errno) }
        } catch {
            if isOpen { FileSystemCalls.closeQuietly(fd) }
            unlinkat(tempFD, tempName, 0)
            throw error
        }
        let code = FileSystemCalls.renameReplacing(tempFD, tempName, parent, target)
        guard code == 0 else {
            unlinkat(tempFD, tempName, 0)
            throw FileSystemCalls.failure("store", prefix + target, code)
        }
    }
}

/// `<root>/.sluice-tmp`, opened (without following a symbolic link) on first use and
/// closed by ``close()``. Used on the disk pool's thread only, within one placement.
private final class TemporaryDirectory {
    private let root: Int32
    private var descriptor: Int32 = -1

    init(root: Int32) { self.root = root }

    func fd() throws -> Int32 {
        if descriptor < 0 {
            descriptor = openat(root, DiskSink.tempDirectoryName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard descriptor >= 0 else { throw FileSystemCalls.failure("open", DiskSink.tempDirectoryName, errno) }
        }
        return descriptor
    }

    func close() {
        if descriptor >= 0 { FileSystemCalls.closeQuietly(descriptor) }
        descriptor = -1
    }
}
