import NIOCore

/// The bytes `sluice load` sends, generated once and then only sliced.
///
/// The buffer holds one *cycle* of content followed by a copy of its first `maxChunk` bytes,
/// so a slice of up to `maxChunk` bytes starting anywhere in the cycle is contiguous and the
/// stream a connection sends is the cycle repeated. Slicing a `ByteBuffer` shares storage:
/// sending costs no CPU per upload beyond the socket write.
public struct Payload: Sendable {
    /// What the bytes look like.
    public enum Kind: String, Sendable, CaseIterable, Codable {
        /// Pseudo-random bytes: incompressible.
        case random
        /// Log-like text lines: compressible about like real logs.
        case text
    }

    /// Cycle content plus the wrap-around copy.
    public let storage: ByteBuffer
    /// Length of the repeating content.
    public let cycle: Int
    /// The longest slice ``slice(at:length:)`` can return.
    public let maxChunk: Int

    /// Wraps `content` (one cycle) so slices of up to `maxChunk` bytes never need a copy.
    public init(content: [UInt8], maxChunk: Int) {
        precondition(!content.isEmpty && maxChunk > 0)
        var buffer = ByteBufferAllocator().buffer(capacity: content.count + maxChunk)
        buffer.writeBytes(content)
        var remaining = maxChunk
        while remaining > 0 {
            let n = Swift.min(remaining, content.count)
            buffer.writeBytes(content[0..<n])
            remaining -= n
        }
        self.storage = buffer
        self.cycle = content.count
        self.maxChunk = maxChunk
    }

    /// The `length` bytes at stream position `position` (a view into the shared storage).
    @inlinable
    public func slice(at position: Int, length: Int) -> ByteBuffer {
        precondition(length <= maxChunk)
        return storage.getSlice(at: position % cycle, length: length)!
    }

    /// `count` bytes of the stream starting at `position`, copied (tests and checks only).
    public func bytes(at position: Int, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var p = position
        while out.count < count {
            let n = Swift.min(maxChunk, count - out.count)
            out.append(contentsOf: slice(at: p, length: n).readableBytesView)
            p += n
        }
        return out
    }

    /// The default cycle length: large enough that zlib's 32 KiB window and any dedup see no repeats
    /// within a chunk, small enough to generate in milliseconds.
    public static let defaultCycle = 8 << 20

    /// A payload of `kind` for writes of up to `maxChunk` bytes.
    public static func make(_ kind: Kind, maxChunk: Int, cycle: Int = defaultCycle, seed: UInt64 = 0x5EED) -> Payload {
        switch kind {
        case .random: Payload(content: randomBytes(cycle, seed: seed), maxChunk: maxChunk)
        case .text: Payload(content: logText(cycle, seed: seed), maxChunk: maxChunk)
        }
    }

    /// Fixed-size log lines (`lineSize` bytes each, newline included), for `lines` mode.
    /// The cycle is a whole number of lines, so any whole number of lines sent is whole lines.
    public static func lines(lineSize: Int, maxChunk: Int, cycle: Int = 4 << 20, seed: UInt64 = 0x5EED) -> Payload {
        precondition(lineSize >= 2)
        var rng = SplitMix64(seed: seed)
        let count = Swift.max(1, cycle / lineSize)
        var content: [UInt8] = []
        content.reserveCapacity(count * lineSize)
        var sequence = 0
        while content.count < count * lineSize {
            var line = LogLineGenerator.line(&rng, sequence: sequence)
            sequence += 1
            while line.count < lineSize - 1 {
                line.append(0x20)
                line.append(contentsOf: LogLineGenerator.words[Int(rng.next() % UInt64(LogLineGenerator.words.count))].utf8)
            }
            content.append(contentsOf: line.prefix(lineSize - 1))
            content.append(0x0A)
        }
        return Payload(content: content, maxChunk: maxChunk)
    }

    /// `count` pseudo-random bytes (SplitMix64), deterministic for a seed.
    public static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count {
                raw.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            var last = rng.next()
            while i < count {
                raw[i] = UInt8(truncatingIfNeeded: last)
                last >>= 8
                i += 1
            }
        }
        return out
    }

    /// About `count` bytes of log-like lines (ending on a newline).
    public static func logText(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(count + 512)
        var sequence = 0
        while out.count < count {
            out.append(contentsOf: LogLineGenerator.line(&rng, sequence: sequence))
            out.append(0x0A)
            sequence += 1
        }
        return out
    }
}

/// A small, fast, deterministic PRNG (not for cryptography).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds web-server / application log lines: timestamps, hosts, levels, paths, ids and numbers,
/// so compression ratios come out like real logs (a mix of repeated structure and varying fields).
enum LogLineGenerator {
    static let hosts = ["web-01", "web-02", "web-03", "api-07", "api-11", "worker-3", "db-proxy-1", "edge-fra-2"]
    static let services = ["nginx", "api", "auth", "billing", "search", "queue", "scheduler"]
    static let levels = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"]
    static let methods = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
    static let paths = [
        "/api/v1/items", "/api/v1/users", "/api/v2/orders", "/healthz", "/static/app.js", "/login",
        "/api/v1/search", "/metrics", "/api/v2/cart/checkout", "/images/banner.png",
    ]
    static let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "curl/8.5.0", "python-requests/2.31.0",
        "Go-http-client/1.1", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
    ]
    static let words = [
        "cache", "miss", "hit", "retry", "upstream", "timeout", "connection", "accepted", "queued", "done",
        "user", "session", "token", "refreshed", "batch", "flushed", "shard", "replica", "lag", "ok",
    ]

    static func pick(_ list: [String], _ rng: inout SplitMix64) -> String {
        list[Int(rng.next() % UInt64(list.count))]
    }

    static func line(_ rng: inout SplitMix64, sequence: Int) -> [UInt8] {
        let ms = 1_764_000_000_000 + sequence * 7 + Int(rng.next() % 5)
        let seconds = ms / 1000
        let h = (seconds / 3600) % 24, m = (seconds / 60) % 60, s = seconds % 60
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        func three(_ v: Int) -> String { v < 10 ? "00\(v)" : v < 100 ? "0\(v)" : "\(v)" }
        let time = "2026-11-26T\(two(h)):\(two(m)):\(two(s)).\(three(ms % 1000))Z"
        let id = String(rng.next() & 0xFFFF_FFFF_FFFF, radix: 16)
        let status = [200, 200, 200, 200, 201, 204, 304, 404, 500][Int(rng.next() % 9)]
        let path = pick(paths, &rng) + (rng.next() % 2 == 0 ? "/\(rng.next() % 10_000)" : "")
        let ip = "10.\(rng.next() % 4).\(rng.next() % 256).\(rng.next() % 256)"
        let text = "\(time) \(pick(hosts, &rng)) \(pick(services, &rng))[\(1000 + rng.next() % 64)]: "
            + "\(pick(levels, &rng)) request_id=\(id) client=\(ip) method=\(pick(methods, &rng)) path=\(path) "
            + "status=\(status) bytes=\(rng.next() % 60_000) duration_ms=\(rng.next() % 900).\(rng.next() % 10) "
            + "msg=\"\(pick(words, &rng)) \(pick(words, &rng))\" ua=\"\(pick(agents, &rng))\""
        return Array(text.utf8)
    }
}
