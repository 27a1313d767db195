import NIOCore
import NIOPosix
import SluiceCore
import Synchronization

/// Writes an upload's chunks to its temporary file without waiting for each write
/// before reading on.
///
/// A write runs on the caller's event loop when ``InlineWrites`` allows it (no thread
/// hand-off at all); otherwise on the disk pool, as follows.
///
/// One write at a time runs on the disk pool; chunks that arrive meanwhile are
/// gathered and go out together in the next one. A fast stream thus makes a few
/// large writes (fewer thread hops and wake-ups, the main CPU cost measured), a slow
/// one writes each chunk as it comes and holds nothing. At most ``maxPending`` bytes
/// wait besides the write in progress; beyond that the upload waits for the disk,
/// and so does its sender (back pressure). Small chunks (log records, a trickle) are
/// copied into one buffer so a batch is a few system calls, not one per chunk.
struct PipelinedWriter {
    let temp: TempFile
    /// Whether a write may run on the caller's event loop (see ``InlineWrites``).
    let inline: InlineWrites?
    /// Bytes gathered while a write runs before reading waits for it.
    static let maxPending = 256 * 1024
    /// Chunks smaller than this are copied together rather than kept as they came.
    static let smallChunk = 8 * 1024

    private var inFlight: (future: EventLoopFuture<Void>, done: Completion)?
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    /// Whether the last pending buffer is this writer's own gathering buffer (safe to append to).
    private var lastIsGathered = false
    /// Bytes handed to the disk so far (all written once ``finish()`` returns).
    private(set) var written: Int64 = 0
    /// Blocks allocated ahead of the writes (see ``Reservation``).
    private(set) var reservation: Reservation

    init(temp: TempFile, inline: InlineWrites? = nil, reservation: Reservation = .off) {
        self.temp = temp
        self.inline = inline
        self.reservation = reservation
    }

    /// Queues `chunk`; starts a write when none is running, waits for the running one
    /// when too much is queued.
    mutating func append(_ chunk: ByteBuffer) async throws {
        let count = chunk.readableBytes
        guard count > 0 else { return }
        if count < Self.smallChunk {
            if lastIsGathered {
                pending[pending.count - 1].writeImmutableBuffer(chunk)
            } else {
                var gathered = ByteBufferAllocator().buffer(capacity: count)
                gathered.writeImmutableBuffer(chunk)
                pending.append(gathered)
                lastIsGathered = true
            }
        } else {
            pending.append(chunk)
            lastIsGathered = false
        }
        pendingBytes += count
        if let running = inFlight {
            if !running.done.isDone, pendingBytes < Self.maxPending { return }
            inFlight = nil
            try await running.future.get()
        }
        submit()
    }

    /// Moves `count` bytes waiting in `pipe` into the file, after everything queued before
    /// them; returns once the pipe is empty (the upload's next piece may refill it). The
    /// bytes go from the pipe to the page cache without passing through this process.
    mutating func append(_ pipe: SplicePipe, count: Int) async throws {
        guard count > 0 else { return }
        try await finish()
        let fd = temp.fd
        let extend = reservation.stretch(before: written, count: count)
        written += Int64(count)
        if let inline, inline.eventLoop() != nil {
            let started = NIODeadline.now()
            Reservation.apply(extend, to: fd)
            try FileSystemCalls.drain(pipe, count, into: fd)
            inline.record(NIODeadline.now() - started)
            return
        }
        try await FileSystemCalls.submit {
            Reservation.apply(extend, to: fd)
            try FileSystemCalls.drain(pipe, count, into: fd)
        }.get()
    }

    /// Writes what is queued and waits until every byte is written.
    mutating func finish() async throws {
        if let running = inFlight {
            inFlight = nil
            try await running.future.get()
        }
        guard pendingBytes > 0 else { return }
        submit()
        if let running = inFlight {
            inFlight = nil
            try await running.future.get()
        }
    }

    /// Waits for a write in progress, ignoring its outcome: call before closing the file after a failure.
    mutating func settle() async {
        if let running = inFlight {
            inFlight = nil
            _ = try? await running.future.get()
        }
    }

    private mutating func submit() {
        let chunks = pending
        let fd = temp.fd
        let done = Completion()
        let extend = reservation.stretch(before: written, count: pendingBytes)
        written += Int64(pendingBytes)
        pending = []
        pendingBytes = 0
        lastIsGathered = false
        if let inline, let eventLoop = inline.eventLoop() {
            // On this thread, now: the write is done (or failed) when `submit` returns.
            let started = NIODeadline.now()
            do {
                Reservation.apply(extend, to: fd)
                for chunk in chunks {
                    try FileSystemCalls.writeAll(fd: fd, chunk, what: "the temporary file")
                }
                inline.record(NIODeadline.now() - started)
                inFlight = (eventLoop.makeSucceededVoidFuture(), done)
            } catch {
                inFlight = (eventLoop.makeFailedFuture(error), done)
            }
            done.set()
            return
        }
        let future = FileSystemCalls.submit {
            defer { done.set() }
            Reservation.apply(extend, to: fd)
            for chunk in chunks {
                try FileSystemCalls.writeAll(fd: fd, chunk, what: "the temporary file")
            }
        }
        inFlight = (future, done)
    }

    /// Set by the disk thread when a write has finished, so the upload can tell
    /// without waiting whether it may start the next one.
    final class Completion: Sendable {
        private let flag = Atomic<Bool>(false)
        var isDone: Bool { flag.load(ordering: .acquiring) }
        func set() { flag.store(true, ordering: .releasing) }
    }
}

/// Blocks allocated ahead of an upload's writes, growing with the file.
///
/// ext4 (like most file systems) allocates a buffered write's blocks lazily, reserving
/// space page by page as the page cache fills; allocating a stretch of the file at once
/// with `fallocate(2)` lets each write find its blocks instead. Measured on this
/// machine's ext4 (1,024 files of 1 MiB, 64 KiB writes, warm memory): 0.28 CPU-s of
/// kernel time per GiB without, 0.22–0.24 with; at 64 KiB files there is no gain, and
/// at 4 KiB the extra call costs 6 µs a file. So nothing is reserved until a file
/// passes ``threshold``; then each reservation reaches twice the file's size so far
/// (at least ``minimumStep``, at most ``maximumStep`` ahead), rounded up to a whole
/// ``minimumStep``. What the upload did not use is released when it ends (``trim``).
/// The size the file shows is always what was written (`FALLOC_FL_KEEP_SIZE`).
///
/// A body of known length is never reserved past its end (and so needs no trim), and
/// not all at once either: space is allocated as the bytes arrive, so a client that
/// declares a large length and then sends slowly holds no more than twice what it sent.
/// (Whether the declared length fits is checked when the file is made,
/// ``TempFile/create(in:mode:anonymous:length:)``.)
///
/// A reservation that fails (a full disk, a file system that cannot) is not an error:
/// the writes go on as without it, and report a full disk themselves.
struct Reservation: Sendable {
    /// The end of the allocated stretch (`[0, end)`); `-1` when reserving is off.
    private(set) var end: Int64
    /// The body's declared length: nothing is reserved past it.
    private(set) var limit: Int64?

    static let threshold: Int64 = 128 * 1024
    static let minimumStep: Int64 = 1024 * 1024
    static let maximumStep: Int64 = 64 * 1024 * 1024

    /// No reservations.
    static let off = Reservation(end: -1, limit: nil)
    /// Reservations from the first write past ``threshold``, never past `limit` (a declared length).
    static func growing(upTo limit: Int64? = nil) -> Reservation { Reservation(end: 0, limit: limit) }

    /// What to allocate before writing `count` bytes at `offset` (`nil`: nothing);
    /// records it as allocated.
    mutating func stretch(before offset: Int64, count: Int) -> (offset: Int64, length: Int64)? {
        let target = offset + Int64(count)
        guard end >= 0, target > end, target > Self.threshold else { return nil }
        let wanted = target <= Self.minimumStep ? Self.minimumStep : min(2 * target, target + Self.maximumStep)
        var newEnd = (wanted + Self.minimumStep - 1) / Self.minimumStep * Self.minimumStep
        if let limit { newEnd = min(newEnd, max(limit, target)) }
        defer { end = newEnd }
        return (end, newEnd - end)
    }

    /// Blocking: allocates `stretch` of `fd`, if any. A failure is ignored: the writes
    /// allocate as they go and report a full disk themselves.
    static func apply(_ stretch: (offset: Int64, length: Int64)?, to fd: Int32) {
        guard let stretch else { return }
        _ = SystemCalls.reserve(fd, at: stretch.offset, length: stretch.length)
    }

    /// The size to truncate the file to when `written` bytes are all it got: blocks
    /// allocated past its end are released only by a truncation; `nil` when none are.
    func trim(written: Int64) -> Int64? {
        end > written ? written : nil
    }
}
