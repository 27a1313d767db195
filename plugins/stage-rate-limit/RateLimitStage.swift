import Foundation
import NIOCore
import SluiceCore
import Synchronization

/// `rate_limit`: a token bucket in bytes per second that slows senders by waiting.
///
/// Keys:
/// - rate (size per second, required): the sustained rate, such as `10MiB` or `10MiB/s`.
/// - burst (size, default rate/10): the bucket's depth, the most bytes that pass
///   without waiting after a quiet spell. The default (100 ms of traffic) keeps the
///   average within 1% of `rate` over 10 s.
/// - scope (string, default upload): `upload` (a bucket per upload), `pipeline` (one
///   bucket shared by every upload through this stage) or `listener` (one bucket per
///   listener, shared by every pipeline whose `rate_limit` has the same rate and burst).
///
/// The stage waits before passing a chunk on and reads the next one only when asked, so
/// back pressure reaches the sender's socket; it never drops bytes. Object uploads are
/// passed in pieces of at most min(burst, 64KiB) so the rate holds at a fine grain;
/// record uploads keep their chunks whole (each ends on a record boundary). Uploads
/// sharing a bucket are served first come, first served: each piece reserves its
/// tokens in order, so none is starved.
///
/// ```yaml
/// stages:
///   - type: rate_limit
///     rate: 10MiB
///     scope: listener
/// ```
public enum RateLimitPlugin: StagePlugin {
    public static let type = "rate_limit"
    public static let summary = "Throttles the body to a byte rate (token bucket) by waiting, per upload, pipeline or listener."

    public static let keys: [ConfigKey] = [
        ConfigKey("rate", "size per second", "Sustained rate in bytes per second, such as 10MiB or 10MiB/s."),
        ConfigKey("burst", "size", default: "rate/10", "Bucket depth: bytes that may pass at once after a quiet spell."),
        ConfigKey("scope", "string", default: Configuration.defaultScope.rawValue, "upload (a bucket per upload), pipeline (one per pipeline) or listener (one per listener, shared across pipelines with the same rate and burst)."),
    ]

    /// The `rate_limit` stage's configuration.
    public struct Configuration: Decodable, Sendable {
        public static let defaultScope = RateLimitScope.upload
        /// The default burst is this fraction of a second of traffic.
        public static let defaultBurstSeconds = 0.1

        /// `rate`: bytes per second.
        public var rate: ByteSize
        /// `burst`: the bucket's depth.
        public var burst: ByteSize
        /// `scope`: who shares a bucket.
        public var scope: RateLimitScope

        /// - Parameters:
        ///   - rate: Bytes per second; more than 0.
        ///   - burst: Bucket depth; `nil` means ``defaultBurst(for:)``.
        ///   - scope: Who shares a bucket.
        public init(rate: ByteSize, burst: ByteSize? = nil, scope: RateLimitScope = defaultScope) {
            self.rate = rate
            self.burst = burst ?? Self.defaultBurst(for: rate)
            self.scope = scope
        }

        /// A tenth of a second of traffic, at least one byte.
        public static func defaultBurst(for rate: ByteSize) -> ByteSize {
            ByteSize(max(1, Int64((Double(rate.bytes) * defaultBurstSeconds).rounded(.up))))
        }

        enum CodingKeys: String, CodingKey { case rate, burst, scope }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let rateText = try c.decode(String.self, forKey: .rate)
            var sizeText = rateText.trimmingCharacters(in: .whitespaces)
            for suffix in ["/s", "/sec", "ps"] where sizeText.lowercased().hasSuffix(suffix) {
                sizeText = String(sizeText.dropLast(suffix.count))
                break
            }
            guard let rate = ByteSize(parsing: sizeText) else {
                throw decoder.configIssue("rate", "expected a size per second like \"10MiB\" or \"10MiB/s\", got \"\(rateText)\"")
            }
            guard rate.bytes > 0 else { throw decoder.configIssue("rate", "must be more than 0") }
            let burst = try c.decodeIfPresent(ByteSize.self, forKey: .burst)
            if let burst, burst.bytes <= 0 { throw decoder.configIssue("burst", "must be more than 0") }
            let scopeName = try c.decode(String.self, forKey: .scope, default: Self.defaultScope.rawValue)
            guard let scope = RateLimitScope(rawValue: scopeName.lowercased()) else {
                throw decoder.configIssue("scope", "expected upload, pipeline or listener, got \"\(scopeName)\"")
            }
            self.init(rate: rate, burst: burst, scope: scope)
        }
    }

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Stage {
        RateLimitStage(configuration)
    }
}

/// Who shares one token bucket.
public enum RateLimitScope: String, Sendable, CaseIterable {
    /// Each upload has its own bucket.
    case upload
    /// Every upload through the stage (its pipeline) shares one bucket.
    case pipeline
    /// Every upload from one listener shares one bucket, across pipelines.
    case listener
}

/// Throttles each upload's body to a byte rate.
public struct RateLimitStage: Stage {
    /// The largest piece an object upload is passed in (smaller when the burst is).
    public static let maxPieceSize = 64 * 1024

    /// Bytes per second.
    public let rate: Int64
    /// Bucket depth in bytes.
    public let burst: Int64
    /// Who shares a bucket.
    public let scope: RateLimitScope
    /// The bucket of the `pipeline` scope.
    private let shared: TokenBucket?

    /// Builds the stage from its configuration; the `pipeline` scope's bucket is made here.
    public init(_ configuration: RateLimitPlugin.Configuration) {
        self.rate = max(1, configuration.rate.bytes)
        self.burst = max(1, configuration.burst.bytes)
        self.scope = configuration.scope
        self.shared = configuration.scope == .pipeline ? TokenBucket(bytesPerSecond: rate, burst: burst) : nil
    }

    public func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        let bucket: TokenBucket = switch scope {
        case .upload: TokenBucket(bytesPerSecond: rate, burst: burst)
        case .pipeline: shared!
        case .listener: ListenerBuckets.bucket(listener: context.metadata.listener, rate: rate, burst: burst)
        }
        let piece = context.metadata.mode == .object ? Int(min(burst, Int64(Self.maxPieceSize))) : nil
        return UploadBody(ThrottledBody(base: body, bucket: bucket, piece: piece)).declaringLength(body.length)
    }
}

/// A token bucket that hands out tokens first come, first served.
///
/// Each request reserves its bytes at once, going into debt if need be, and learns
/// the instant its bytes may pass: later requests queue behind earlier ones on this
/// virtual clock, so every waiter gets its turn and the long-run rate is exact
/// whatever the scheduler's latency (waiters sleep until an absolute instant).
public final class TokenBucket: Sendable {
    /// Bytes per second.
    public let rate: Double
    /// Bucket depth in bytes.
    public let burst: Double

    private struct State {
        /// Available tokens; negative while requests wait for their turn.
        var tokens: Double
        var updated: ContinuousClock.Instant
    }
    private let state: Mutex<State>

    /// A full bucket.
    public init(bytesPerSecond: Int64, burst: Int64) {
        precondition(bytesPerSecond > 0 && burst > 0, "rate and burst must be positive")
        self.rate = Double(bytesPerSecond)
        self.burst = Double(burst)
        self.state = Mutex(State(tokens: Double(burst), updated: .now))
    }

    /// Takes `bytes` tokens and returns when they may pass: now, or later if the
    /// bucket is in debt.
    public func reserve(_ bytes: Int, now: ContinuousClock.Instant = .now) -> ContinuousClock.Instant {
        state.withLock { s in
            if now > s.updated {
                let c = (now - s.updated).components
                let elapsed = Double(c.seconds) + Double(c.attoseconds) * 1e-18
                s.tokens = min(burst, s.tokens + elapsed * rate)
                s.updated = now
            }
            s.tokens -= Double(bytes)
            return s.tokens >= 0 ? now : now + .seconds(-s.tokens / rate)
        }
    }

    /// Waits until `bytes` may pass.
    ///
    /// - Throws: `CancellationError` when the task is cancelled while waiting.
    public func acquire(_ bytes: Int) async throws {
        let now = ContinuousClock.now
        let at = reserve(bytes, now: now)
        if at > now {
            try await Task.sleep(until: at, clock: .continuous)
        }
    }
}

/// The process-wide buckets of the `listener` scope, one per listener name (and rate
/// and burst, so two differently configured stages never share by accident).
///
/// Entries live as long as the process: one small object per listener and setting,
/// bounded by the config, kept across reloads so a reload does not refill the bucket.
enum ListenerBuckets {
    private struct Key: Hashable {
        var listener: String
        var rate: Int64
        var burst: Int64
    }
    private static let buckets = Mutex<[Key: TokenBucket]>([:])

    static func bucket(listener: String, rate: Int64, burst: Int64) -> TokenBucket {
        buckets.withLock { map in
            let key = Key(listener: listener, rate: rate, burst: burst)
            if let bucket = map[key] { return bucket }
            let bucket = TokenBucket(bytesPerSecond: rate, burst: burst)
            map[key] = bucket
            return bucket
        }
    }
}

/// Passes chunks (or pieces of them) on only once the bucket allows; reads the next
/// chunk only when asked, so waiting here stalls the sender.
struct ThrottledBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: UploadBody
    let bucket: TokenBucket
    /// The largest piece to pass; `nil` keeps chunks whole (records).
    let piece: Int?

    func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), bucket: bucket, piece: piece)
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: UploadBody.AsyncIterator
        let bucket: TokenBucket
        let piece: Int?
        /// The rest of a chunk passed in pieces.
        var pending: ByteBuffer?

        mutating func next() async throws -> ByteBuffer? {
            var chunk: ByteBuffer
            if let rest = pending {
                chunk = rest
                pending = nil
            } else {
                guard let next = try await base.next() else { return nil }
                chunk = next
            }
            let out: ByteBuffer
            if let piece, chunk.readableBytes > piece {
                // A slice shares the chunk's storage: no copy.
                out = chunk.readSlice(length: piece)!
                pending = chunk
            } else {
                out = chunk
            }
            try await bucket.acquire(out.readableBytes)
            return out
        }
    }
}
