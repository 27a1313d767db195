import Foundation

/// Latency percentiles over a set of samples.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count: Int
    public var p50Ms: Double
    public var p90Ms: Double
    public var p99Ms: Double
    public var maxMs: Double
    public var meanMs: Double

    enum CodingKeys: String, CodingKey {
        case count, p50Ms = "p50_ms", p90Ms = "p90_ms", p99Ms = "p99_ms", maxMs = "max_ms", meanMs = "mean_ms"
    }

    public init(count: Int, p50Ms: Double, p90Ms: Double, p99Ms: Double, maxMs: Double, meanMs: Double) {
        self.count = count
        self.p50Ms = p50Ms
        self.p90Ms = p90Ms
        self.p99Ms = p99Ms
        self.maxMs = maxMs
        self.meanMs = meanMs
    }

    /// Summarises latencies in nanoseconds (nearest-rank percentiles; all zero when empty).
    public init(nanoseconds samples: [UInt64]) {
        let sorted = samples.sorted()
        func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }
        count = sorted.count
        p50Ms = ms(Self.percentile(sorted, 50))
        p90Ms = ms(Self.percentile(sorted, 90))
        p99Ms = ms(Self.percentile(sorted, 99))
        maxMs = ms(sorted.last ?? 0)
        meanMs = sorted.isEmpty ? 0 : sorted.reduce(0.0) { $0 + ms($1) } / Double(sorted.count)
    }

    /// The nearest-rank percentile `p` (0–100) of ascending `sorted`; 0 when empty.
    ///
    /// Nearest rank: the smallest sample such that at least p% of samples are ≤ it,
    /// so p99 of 100 samples is the 99th, and p100 the maximum.
    public static func percentile<T: BinaryInteger>(_ sorted: [T], _ p: Double) -> T {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }
}

/// Counts for `hold` mode.
public struct HoldSummary: Sendable, Codable, Equatable {
    /// Connections asked for.
    public var requested: Int
    /// Connections that were established.
    public var opened: Int
    /// Connections whose connect failed (refused, timed out, out of fds).
    public var refused: Int
    /// Connections the server closed (or reset) before the hold ended.
    public var dropped: Int
    /// Connections still open when the hold ended.
    public var openAtEnd: Int
    /// Seconds from the first connect to the last connect attempt finishing.
    public var connectSeconds: Double

    enum CodingKeys: String, CodingKey {
        case requested, opened, refused, dropped, openAtEnd = "open_at_end", connectSeconds = "connect_s"
    }
}

/// What one `sluice load` run measured.
public struct LoadReport: Sendable, Codable {
    public var mode: String
    public var target: String
    public var concurrency: Int
    public var payload: String
    public var uploadSize: Int64
    public var uploadsOK: Int
    public var uploadsFailed: Int
    /// Bytes of uploads that succeeded.
    public var bytes: Int64
    /// Bytes written to sockets, including failed uploads.
    public var bytesSent: Int64
    /// Lines sent in successful uploads (`lines` mode), else 0.
    public var records: Int64
    public var wallSeconds: Double
    public var latency: LatencySummary
    /// Failure reasons and how often each happened.
    public var errors: [String: Int]
    /// HTTP status codes seen and how often (http mode).
    public var statuses: [String: Int]
    public var hold: HoldSummary?

    public var megabytesPerSecond: Double { wallSeconds > 0 ? Double(bytes) / 1e6 / wallSeconds : 0 }
    public var mebibytesPerSecond: Double { wallSeconds > 0 ? Double(bytes) / 1_048_576 / wallSeconds : 0 }
    public var uploadsPerSecond: Double { wallSeconds > 0 ? Double(uploadsOK) / wallSeconds : 0 }
    public var recordsPerSecond: Double { wallSeconds > 0 ? Double(records) / wallSeconds : 0 }

    enum CodingKeys: String, CodingKey {
        case mode, target, concurrency, payload, uploadSize = "upload_size", uploadsOK = "uploads_ok"
        case uploadsFailed = "uploads_failed", bytes, bytesSent = "bytes_sent", records, wallSeconds = "wall_s"
        case latency, errors, statuses, hold
        case megabytesPerSecond = "mb_per_s", mebibytesPerSecond = "mib_per_s"
        case uploadsPerSecond = "uploads_per_s", recordsPerSecond = "records_per_s"
    }

    public init(
        mode: String, target: String, concurrency: Int, payload: String, uploadSize: Int64, uploadsOK: Int,
        uploadsFailed: Int, bytes: Int64, bytesSent: Int64, records: Int64, wallSeconds: Double,
        latency: LatencySummary, errors: [String: Int], statuses: [String: Int], hold: HoldSummary?
    ) {
        self.mode = mode
        self.target = target
        self.concurrency = concurrency
        self.payload = payload
        self.uploadSize = uploadSize
        self.uploadsOK = uploadsOK
        self.uploadsFailed = uploadsFailed
        self.bytes = bytes
        self.bytesSent = bytesSent
        self.records = records
        self.wallSeconds = wallSeconds
        self.latency = latency
        self.errors = errors
        self.statuses = statuses
        self.hold = hold
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.decode(String.self, forKey: .mode)
        target = try c.decode(String.self, forKey: .target)
        concurrency = try c.decode(Int.self, forKey: .concurrency)
        payload = try c.decode(String.self, forKey: .payload)
        uploadSize = try c.decode(Int64.self, forKey: .uploadSize)
        uploadsOK = try c.decode(Int.self, forKey: .uploadsOK)
        uploadsFailed = try c.decode(Int.self, forKey: .uploadsFailed)
        bytes = try c.decode(Int64.self, forKey: .bytes)
        bytesSent = try c.decode(Int64.self, forKey: .bytesSent)
        records = try c.decode(Int64.self, forKey: .records)
        wallSeconds = try c.decode(Double.self, forKey: .wallSeconds)
        latency = try c.decode(LatencySummary.self, forKey: .latency)
        errors = try c.decode([String: Int].self, forKey: .errors)
        statuses = try c.decode([String: Int].self, forKey: .statuses)
        hold = try c.decodeIfPresent(HoldSummary.self, forKey: .hold)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mode, forKey: .mode)
        try c.encode(target, forKey: .target)
        try c.encode(concurrency, forKey: .concurrency)
        try c.encode(payload, forKey: .payload)
        try c.encode(uploadSize, forKey: .uploadSize)
        try c.encode(uploadsOK, forKey: .uploadsOK)
        try c.encode(uploadsFailed, forKey: .uploadsFailed)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(bytesSent, forKey: .bytesSent)
        try c.encode(records, forKey: .records)
        try c.encode(wallSeconds, forKey: .wallSeconds)
        try c.encode(megabytesPerSecond, forKey: .megabytesPerSecond)
        try c.encode(mebibytesPerSecond, forKey: .mebibytesPerSecond)
        try c.encode(uploadsPerSecond, forKey: .uploadsPerSecond)
        try c.encode(recordsPerSecond, forKey: .recordsPerSecond)
        try c.encode(latency, forKey: .latency)
        try c.encode(errors, forKey: .errors)
        try c.encode(statuses, forKey: .statuses)
        try c.encodeIfPresent(hold, forKey: .hold)
    }

    /// One JSON object on one line.
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// The human-readable summary.
    public func text() -> String {
        func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
        var lines: [String] = []
        lines.append("sluice load: \(mode) → \(target), concurrency \(concurrency), payload \(payload)")
        if let hold {
            lines.append("  held: \(hold.openAtEnd) of \(hold.requested) open at end; opened \(hold.opened), refused \(hold.refused), dropped \(hold.dropped); connect phase \(f(hold.connectSeconds, 2)) s")
        } else {
            lines.append("  uploads: \(uploadsOK) ok, \(uploadsFailed) failed, \(uploadSize) bytes each")
            lines.append("  bytes:   \(bytes) in \(f(wallSeconds, 3)) s")
            lines.append("  rate:    \(f(megabytesPerSecond)) MB/s, \(f(mebibytesPerSecond)) MiB/s, \(f(uploadsPerSecond)) uploads/s")
            if records > 0 { lines.append("  records: \(records), \(f(recordsPerSecond, 0)) records/s") }
            lines.append("  latency: p50 \(f(latency.p50Ms, 2)) ms, p99 \(f(latency.p99Ms, 2)) ms, max \(f(latency.maxMs, 2)) ms")
        }
        if !statuses.isEmpty {
            lines.append("  statuses: " + statuses.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: ", "))
        }
        for (reason, count) in errors.sorted(by: { $0.value > $1.value }).prefix(10) {
            lines.append("  error ×\(count): \(reason)")
        }
        return lines.joined(separator: "\n")
    }
}
