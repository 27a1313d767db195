#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CLinux
import Metrics
import NIOCore
import Synchronization

/// A kernel pipe that carries an upload's bytes from its socket to its file without
/// copying them into the process (Linux `splice(2)`).
///
/// A receiver that can hand its socket to the kernel fills the pipe (``fill(from:limit:)``),
/// the sink drains it into its file (``drain(_:into:path:)``): the bytes are copied once,
/// into the page cache, instead of twice (socket → process → page cache). Measured on
/// 2 cores into the disk sink: one 256 MiB TCP upload at a time 0.54 → 0.28 server
/// CPU-s per GiB (1.7 → 3.6 GB/s); 256 concurrent 1 MiB uploads 1.10 → 0.85.
///
/// One pipe serves one upload at a time and is empty whenever that upload is not
/// between a fill and its drain. Its descriptors close when the last reference goes.
public final class SplicePipe: Sendable {
    /// The end the sink splices from.
    public let readEnd: CInt
    /// The end the receiver splices (or writes) into.
    public let writeEnd: CInt
    /// The most bytes the pipe holds.
    public let capacity: Int

    /// The capacity asked for: one splice then moves up to this much, like one large read.
    /// (An unprivileged user whose pipes together pass `/proc/sys/fs/pipe-user-pages-soft`
    /// gets smaller ones; they work the same, in smaller steps.)
    static let preferredCapacity = 1 << 20

    private init(readEnd: CInt, writeEnd: CInt, capacity: Int) {
        self.readEnd = readEnd
        self.writeEnd = writeEnd
        self.capacity = capacity
    }

    deinit {
        close(readEnd)
        close(writeEnd)
        FileDescriptorBudget.shared.release(2)
    }

    /// A new pipe, or `nil` when the system gives none (out of descriptors, not Linux):
    /// the caller then reads the usual way. Its two descriptors count against
    /// ``FileDescriptorBudget/shared``, so pipes never push the process to its open-file
    /// limit; with the budget spent there is no pipe either.
    public static func make() -> SplicePipe? {
        let budget = FileDescriptorBudget.shared
        guard budget.tryAcquire(2) else { return nil }
        var fds: [CInt] = [-1, -1]
        guard sluice_pipe(&fds) == 0 else {
            budget.release(2)
            return nil
        }
        var capacity = Int(sluice_pipe_set_size(fds[1], CInt(preferredCapacity)))
        if capacity <= 0 { capacity = Int(sluice_pipe_size(fds[1])) }
        guard capacity > 0 else {
            close(fds[0])
            close(fds[1])
            budget.release(2)
            return nil
        }
        return SplicePipe(readEnd: fds[0], writeEnd: fds[1], capacity: capacity)
    }

    /// Moves up to `limit` bytes from `socket` (non-blocking) into the pipe.
    ///
    /// - Returns: The bytes moved; `0` at the socket's end of input; `nil` when the
    ///   socket has nothing to read now (or the pipe is full).
    /// - Throws: ``SystemCallError`` with the socket's error (a reset: `ECONNRESET`).
    public func fill(from socket: CInt, limit: Int) throws(SystemCallError) -> Int? {
        while true {
            let n = sluice_splice(socket, writeEnd, UInt(max(0, limit)), 1)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            case let code: throw SystemCallError("cannot read from the connection", "socket", code: code)
            }
        }
    }

    /// Moves what `socket` has now into the pipe, up to `limit` bytes (at most the capacity).
    ///
    /// - Returns: The bytes moved (0 when the socket has none now), and whether the
    ///   socket's input ended after them.
    public func fillAvailable(from socket: CInt, limit: Int) throws(SystemCallError) -> (count: Int, ended: Bool) {
        let want = min(capacity, limit)
        var held = 0
        while held < want, let n = try fill(from: socket, limit: want - held) {
            if n == 0 { return (held, true) }
            held += n
        }
        return (held, false)
    }

    /// Moves exactly `count` bytes (what the pipe holds) into `fd` at its current offset.
    /// Blocks as a `write` to the file would.
    ///
    /// - Parameter path: The file's path, for the error.
    public func drain(_ count: Int, into fd: CInt, path: String) throws(SystemCallError) {
        var left = count
        while left > 0 {
            let n = sluice_splice(readEnd, fd, UInt(left), 0)
            if n > 0 {
                left -= n
                continue
            }
            if n < 0, errno == EINTR { continue }
            // 0 would mean the pipe ran dry before `count` bytes: a caller's accounting error.
            throw SystemCallError("cannot write", path, code: n < 0 ? errno : EIO)
        }
        Self.drained.add(count, ordering: .relaxed)
        Self.drainedCounter.increment(by: Int64(count))
    }

    private static let drained = Atomic<Int>(0)
    private static let drainedCounter = Counter(label: "sluice_bytes_spliced_total")

    /// Bytes moved from pipes into files by this process so far (also the metric
    /// `sluice_bytes_spliced_total`).
    public static var bytesDrained: Int { drained.load(ordering: .relaxed) }

    /// Creates the `sluice_bytes_spliced_total` metric now, so that it is exported (at 0)
    /// before the first splice. A receiver that may splice calls it when it starts.
    public static func registerMetrics() {
        drainedCounter.increment(by: 0)
    }
}

/// A piece of an upload body as a sink that can take pipes reads it: bytes in memory,
/// or bytes waiting in a kernel pipe.
public enum BodyPiece: Sendable {
    case bytes(ByteBuffer)
    /// `count` bytes wait in the pipe; the consumer moves all of them out
    /// (``SplicePipe/drain(_:into:path:)``) before it asks for the next piece.
    case piped(SplicePipe, count: Int)

    /// The bytes this piece holds.
    public var count: Int {
        switch self {
        case .bytes(let buffer): buffer.readableBytes
        case .piped(_, let count): count
        }
    }
}

/// Reads a body piece by piece (see ``UploadBody/makePieceIterator()``).
public protocol BodyPieceIterator {
    /// The next piece, or `nil` at the end of the body.
    ///
    /// - Parameter allowPipe: Whether the caller can take a ``BodyPiece/piped(_:count:)``
    ///   piece now; with `false` (a sink still gathering in memory) every piece is bytes.
    mutating func next(allowPipe: Bool) async throws -> BodyPiece?

    /// How many more bytes are ready to be read at once (a socket's receive queue), as a
    /// hint; 0 when unknown. A sink uses it to decide early: the disk sink stops gathering
    /// a body in memory when the bytes already waiting take it past `memory_buffer`.
    /// Layers that pass pieces on unchanged forward it.
    mutating func bytesWaiting() async -> Int
}

extension BodyPieceIterator {
    public mutating func bytesWaiting() async -> Int { 0 }
}

/// A ``ChunkTransform`` that only counts the bytes passing (a size limit, a counter),
/// and so can also see bytes that pass through a kernel pipe without being read:
/// a body wrapped in it keeps offering pieces (``UploadBody/makePieceIterator()``).
///
/// Requirements: `process(_:)` returns its chunk unchanged (or throws) and `finish()`
/// returns `nil`; ``count(_:)`` does for `count` piped bytes what `process` does for a
/// chunk of that size.
public protocol ByteCountingTransform: ChunkTransform, SendableMetatype {
    mutating func count(_ count: Int) throws
}
