#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import SluiceCore
import Synchronization

/// Gives rotated files their final names, compressing them first when configured,
/// and prunes old ones. One finisher per active path in the process, working on
/// ``RotatePools/finishers``.
///
/// A rotation only renames the active file aside (`.app.log.STAMP.rotated`, hidden);
/// everything after that is done here, driven by what is on disk rather than by
/// memory, so a crash at any step is finished by the next start:
///
/// 1. `.app.log.STAMP.rotated` — complete, uncompressed.
/// 2. `.app.log.STAMP.gz.tmp` — compression in progress (deleted and redone after a crash).
/// 3. `.app.log.STAMP.gz.ready` — complete, compressed (the `.rotated` file is then removed).
/// 4. `app.log.1[.gz]` (older ones shifted up) or `app.log.STAMP[.gz]` — placed with one rename.
///
/// The `.gz` therefore appears atomically, and a rotated file is placed exactly once.
final class Finisher: Sendable {
    let directory: String
    let baseName: String

    private struct State {
        var request: (settings: RotationSettings, logger: Logger)?
        var running = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    private static let all = Mutex<[String: Finisher]>([:])

    /// The one finisher for an active path (shared by every sink and config generation
    /// of the process, so two never work on the same files).
    static func shared(directory: String, baseName: String) -> Finisher {
        all.withLock { map in
            let key = directory + "/" + baseName
            if let existing = map[key] { return existing }
            let finisher = Finisher(directory: directory, baseName: baseName)
            map[key] = finisher
            return finisher
        }
    }

    private init(directory: String, baseName: String) {
        self.directory = directory
        self.baseName = baseName
    }

    static func asideName(directory: String, baseName: String, stamp: Int64) -> String {
        "\(directory)/.\(baseName).\(Stamp.format(stamp)).rotated"
    }

    /// Asks for a pass over the directory (after a rotation, or to recover leftovers).
    func kick(_ settings: RotationSettings, logger: Logger) {
        let start = state.withLock { s in
            s.request = (settings, logger)
            if s.running { return false }
            s.running = true
            return true
        }
        if start {
            RotatePools.finishers.submit { _ in self.run() }
        }
    }

    /// Returns once no pass is running or requested.
    func waitIdle() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { s in
                if !s.running { return true }
                s.waiters.append(waiter)
                return false
            }
            if idle { waiter.resume() }
        }
    }

    private func run() {
        while true {
            let next: (request: (settings: RotationSettings, logger: Logger)?, waiters: [CheckedContinuation<Void, Never>]) = state.withLock { s in
                if let request = s.request {
                    s.request = nil
                    return (request, [])
                }
                s.running = false
                let waiters = s.waiters
                s.waiters = []
                return (nil, waiters)
            }
            guard let request = next.request else {
                for waiter in next.waiters { waiter.resume() }
                return
            }
            do {
                try pass(request.settings, logger: request.logger)
            } catch {
                // Left on disk as it is; the next rotation or start picks it up again.
                request.logger.error("finishing rotated files failed: \(error)")
            }
        }
    }

    // MARK: One pass

    private enum Leftover: String, CaseIterable {
        case rotated = ".rotated"
        case ready = ".gz.ready"
        case partial = ".gz.tmp"
    }

    private func pass(_ settings: RotationSettings, logger: Logger) throws {
        let prefix = "." + baseName + "."
        var stamps: [String: Set<Leftover>] = [:]
        for name in try Posix.list(directory) where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            for kind in Leftover.allCases where rest.hasSuffix(kind.rawValue) {
                let stamp = String(rest.dropLast(kind.rawValue.count))
                if Stamp.parse(stamp) != nil { stamps[stamp, default: []].insert(kind) }
            }
        }
        // Oldest first, so the newest ends up as `.1`.
        for stamp in stamps.keys.sorted() {
            let kinds = stamps[stamp]!
            let base = "\(directory)/.\(baseName).\(stamp)"
            if kinds.contains(.partial) { try Posix.remove(base + Leftover.partial.rawValue) }
            if kinds.contains(.ready) {
                if kinds.contains(.rotated) { try Posix.remove(base + Leftover.rotated.rawValue) }
                try place(base + Leftover.ready.rawValue, stamp: stamp, compressed: true, settings: settings)
            } else if kinds.contains(.rotated) {
                if settings.compress {
                    try compress(base + Leftover.rotated.rawValue, partial: base + Leftover.partial.rawValue, ready: base + Leftover.ready.rawValue, settings: settings)
                    try place(base + Leftover.ready.rawValue, stamp: stamp, compressed: true, settings: settings)
                } else {
                    try place(base + Leftover.rotated.rawValue, stamp: stamp, compressed: false, settings: settings)
                }
            }
            logger.debug("rotated file placed", metadata: ["stamp": "\(stamp)"])
        }
        try prune(settings, logger: logger)
    }

    private func compress(_ source: String, partial: String, ready: String, settings: RotationSettings) throws {
        try Posix.remove(partial)
        let input = try Posix.openRead(source)
        defer { Posix.closeQuietly(input) }
        let output = try Posix.createExclusive(partial)
        var outputOpen = true
        defer { if outputOpen { Posix.closeQuietly(output) } }
        do {
            let deflater = try Deflater(format: .gzip, level: settings.compressLevel)
            let blockSize = 256 << 10
            var block = ByteBufferAllocator().buffer(capacity: blockSize)
            var offset: Int64 = 0
            while true {
                block.clear()
                let n = try block.writeWithUnsafeMutableBytes(minimumWritableBytes: blockSize) { bytes in
                    try Posix.readAt(input, into: bytes, at: offset, path: source)
                }
                if n == 0 { break }
                offset += Int64(n)
                let out = try deflater.compress(block)
                if out.readableBytes > 0 { try Posix.writeAll(output, out, path: partial) }
            }
            try Posix.writeAll(output, try deflater.finish(), path: partial)
            if settings.fsync != .never { try Posix.sync(output, path: partial) }
            Posix.closeQuietly(output)
            outputOpen = false
            try Posix.move(partial, to: ready)
            try Posix.remove(source)
            if settings.fsync != .never { try Posix.syncDirectory(directory) }
        } catch {
            try? Posix.remove(partial)
            throw error
        }
    }

    private func place(_ source: String, stamp: String, compressed: Bool, settings: RotationSettings) throws {
        let suffix = compressed ? ".gz" : ""
        switch settings.naming {
        case .numbered:
            // Shift older files up, oldest first, so no rename overwrites a file still needed.
            for entry in rotatedFiles(naming: .numbered).sorted(by: { $0.order > $1.order }) {
                let target = "\(directory)/\(baseName).\(entry.order + 1)\(entry.compressed ? ".gz" : "")"
                try Posix.move("\(directory)/\(entry.name)", to: target)
            }
            try Posix.move(source, to: "\(directory)/\(baseName).1\(suffix)")
        case .timestamp:
            // The stamp is unique among rotations; only a clock that went backwards across
            // a restart can make it collide, then take the next free millisecond.
            var ms = Stamp.parse(stamp)!
            var target = "\(directory)/\(baseName).\(stamp)\(suffix)"
            while Posix.exists(target) {
                ms += 1
                target = "\(directory)/\(baseName).\(Stamp.format(ms))\(suffix)"
            }
            try Posix.move(source, to: target)
        }
        if settings.fsync != .never { try Posix.syncDirectory(directory) }
    }

    /// Rotated files of this base, with their order (numbered: the index, 1 = newest;
    /// timestamp: milliseconds, larger = newer).
    private func rotatedFiles(naming: SinkRotate.Naming) -> [(name: String, order: Int64, compressed: Bool)] {
        let prefix = baseName + "."
        var out: [(name: String, order: Int64, compressed: Bool)] = []
        for name in (try? Posix.list(directory)) ?? [] where name.hasPrefix(prefix) {
            var rest = Substring(name.dropFirst(prefix.count))
            let compressed = rest.hasSuffix(".gz")
            if compressed { rest = rest.dropLast(3) }
            switch naming {
            case .numbered:
                if !rest.isEmpty, rest.allSatisfy(\.isASCII), rest.allSatisfy(\.isNumber), let index = Int64(rest), index > 0 {
                    out.append((name, index, compressed))
                }
            case .timestamp:
                if let ms = Stamp.parse(String(rest)) { out.append((name, ms, compressed)) }
            }
        }
        return out
    }

    private func prune(_ settings: RotationSettings, logger: Logger) throws {
        var files = rotatedFiles(naming: settings.naming)
        switch settings.naming {
        case .numbered: files.sort { $0.order < $1.order }
        case .timestamp: files.sort { $0.order > $1.order }
        }
        var total: Int64 = 0
        var removed = 0
        for (position, entry) in files.enumerated() {
            let path = "\(directory)/\(entry.name)"
            total += Posix.size(at: path) ?? 0
            let overCount = position >= settings.keep
            let overTotal = settings.maxTotal.map { total > $0 } ?? false
            if overCount || overTotal {
                try Posix.remove(path)
                removed += 1
            }
        }
        if removed > 0 {
            logger.debug("pruned rotated files", metadata: ["removed": "\(removed)"])
        }
    }
}

/// Rotation stamps: UTC with milliseconds, `20261126T165407.123Z`, so names sort by time.
enum Stamp {
    static func format(_ milliseconds: Int64) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return pad(parts.tm_year + 1900, 4) + pad(parts.tm_mon + 1, 2) + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + pad(parts.tm_min, 2) + pad(parts.tm_sec, 2) + "."
            + pad(Int32(milliseconds % 1000), 3) + "Z"
    }

    /// Milliseconds since the epoch, or nil if `text` is not a stamp.
    static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        guard b.count == 20, b[8] == UInt8(ascii: "T"), b[15] == UInt8(ascii: "."), b[19] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int32? {
            var v: Int32 = 0
            for i in range {
                guard (48...57).contains(b[i]) else { return nil }
                v = v * 10 + Int32(b[i] - 48)
            }
            return v
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
              let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
              let millis = number(16..<19) else { return nil }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = month - 1
        parts.tm_mday = day
        parts.tm_hour = hour
        parts.tm_min = minute
        parts.tm_sec = second
        return Int64(timegm(&parts)) * 1000 + Int64(millis)
    }
}
