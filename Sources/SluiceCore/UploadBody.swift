import NIOCore

/// The bytes of one upload: an `AsyncSequence` of `ByteBuffer` chunks.
///
/// A body is single pass: iterate it once. It is back-pressured: the producer
/// (a socket, a file) is read only as fast as the consumer asks for chunks, so a
/// slow sink slows the sender instead of growing a buffer.
///
/// Stages return new bodies that wrap the one they were given:
///
/// ```swift
/// let upper = body.transformed { UppercaseTransform() }
/// ```
public struct UploadBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    public typealias Failure = any Error

    private let makeBase: @Sendable () -> any AsyncIteratorProtocol<ByteBuffer, any Error>
    /// The body as pieces that may sit in a kernel pipe (see ``makePieceIterator()``);
    /// `nil` when its source cannot splice or a layer reads the bytes.
    private let makePieces: (@Sendable () -> any BodyPieceIterator)?
    /// How many bytes the body yields if it completes, when that is known before reading
    /// it: an HTTP `Content-Length` without a content coding, a spooled file's size.
    /// `nil` otherwise. Layers that pass the bytes on unchanged (counting, metering,
    /// verifying, hashing, rate limiting) keep it; a transform that changes them drops
    /// it. A sink may use it to prepare (the disk sink refuses a body the disk has no room
    /// for before reading it, and allocates blocks no further), never to trust: a body
    /// that ends short or runs long fails on its own.
    public private(set) var length: Int64?

    /// Wraps any sendable sequence of `ByteBuffer`s.
    public init<Base: AsyncSequence & Sendable>(_ base: Base) where Base.Element == ByteBuffer {
        if let body = base as? UploadBody {
            self = body
            return
        }
        self.makeBase = { ErasedIterator(base: base.makeAsyncIterator()) }
        self.makePieces = nil
    }

    /// A body whose source can also hand its bytes to the kernel: `pieces` makes an
    /// iterator over the same bytes as `base` that may yield ``BodyPiece/piped(_:count:)``
    /// pieces (a receiver whose socket can be spliced). A consumer uses one of the two.
    public init<Base: AsyncSequence & Sendable>(
        _ base: Base, pieces: @escaping @Sendable () -> any BodyPieceIterator
    ) where Base.Element == ByteBuffer {
        self.makeBase = { ErasedIterator(base: base.makeAsyncIterator()) }
        self.makePieces = pieces
    }

    /// A body that yields `chunks` in order.
    public init(chunks: [ByteBuffer]) {
        self.init(ChunkArraySequence(chunks: chunks))
        self.length = chunks.reduce(0) { $0 + Int64($1.readableBytes) }
    }

    /// This body, declaring that it yields `length` bytes (see ``length``); `nil` clears it.
    public func declaringLength(_ length: Int64?) -> UploadBody {
        var body = self
        body.length = length
        return body
    }

    /// An empty body.
    public static var empty: UploadBody { UploadBody(chunks: []) }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: makeBase())
    }

    /// Whether ``makePieceIterator()`` may yield bytes in a kernel pipe: the source can
    /// splice, and every layer between it and here only counts bytes.
    public var offersPipedPieces: Bool { makePieces != nil }

    /// Reads the body as ``BodyPiece``s instead of chunks (use this or
    /// ``makeAsyncIterator()``, not both): a sink that writes to a file descriptor can
    /// then take bytes that never enter the process. When the body does not offer piped
    /// pieces, every piece is a chunk of bytes.
    public func makePieceIterator() -> any BodyPieceIterator {
        if let makePieces { return makePieces() }
        return ChunkPieces(base: makeAsyncIterator())
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: any AsyncIteratorProtocol<ByteBuffer, any Error>

        public mutating func next() async throws -> ByteBuffer? {
            try await base.next()
        }
    }
}

/// A body's chunks as pieces of bytes.
private struct ChunkPieces: BodyPieceIterator {
    var base: UploadBody.AsyncIterator
    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        try await base.next().map { .bytes($0) }
    }
}

/// Adapts an iterator whose failure type is not spelled out to `any Error`.
private struct ErasedIterator<Base: AsyncIteratorProtocol>: AsyncIteratorProtocol where Base.Element == ByteBuffer {
    var base: Base
    mutating func next() async throws -> ByteBuffer? {
        try await base.next()
    }
}

private struct ChunkArraySequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let chunks: [ByteBuffer]
    func makeAsyncIterator() -> Iterator { Iterator(chunks: chunks) }
    struct Iterator: AsyncIteratorProtocol {
        var chunks: [ByteBuffer]
        var index = 0
        mutating func next() async throws -> ByteBuffer? {
            guard index < chunks.count else { return nil }
            defer { index += 1 }
            return chunks[index]
        }
    }
}

// MARK: - Chunk transforms

/// A step that turns each chunk into zero or one output chunk, with a final flush.
///
/// Most stages are a transform: compression, hashing, counting. The transform is
/// created when iteration starts (so it may own non-sendable resources such as a
/// `z_stream`) and lives inside the body's iterator.
///
/// Implementation requirements:
/// - `process(_:)` is called once per input chunk, in order; return `nil` (or an
///   empty buffer) when there is no output yet.
/// - `finish()` is called once after the input ends; return trailing output.
///   Throwing from either fails the upload: the sink sees the error and commits nothing.
/// - Iteration may stop early (an error upstream or downstream, cancellation); a
///   transform that owns resources releases them in `deinit` (make it a class, or
///   hold one), never only in `finish()`.
public protocol ChunkTransform {
    mutating func process(_ chunk: ByteBuffer) async throws -> ByteBuffer?
    mutating func finish() async throws -> ByteBuffer?
}

extension UploadBody {
    /// Returns a body that passes every chunk through a transform made by `makeTransform`.
    public func transformed<T: ChunkTransform>(
        _ makeTransform: @escaping @Sendable () -> T
    ) -> UploadBody {
        UploadBody(TransformedBody(base: self, makeTransform: makeTransform))
    }

    /// Returns a body that passes every chunk through a transform that only counts
    /// bytes; unlike other transforms, it keeps the body's piped pieces.
    public func transformed<T: ByteCountingTransform>(
        _ makeTransform: @escaping @Sendable () -> T
    ) -> UploadBody {
        let chunks = TransformedBody(base: self, makeTransform: makeTransform)
        guard let makePieces else { return UploadBody(chunks).declaringLength(length) }
        return UploadBody(chunks) {
            CountingPieces(base: makePieces(), transform: makeTransform())
        }.declaringLength(length)
    }

    /// Returns a body that calls `observe` with each chunk before passing it on unchanged,
    /// and `onEnd` once the body ends without error.
    public func observed(
        _ observe: @escaping @Sendable (ByteBuffer) throws -> Void,
        onEnd: @escaping @Sendable () throws -> Void = {}
    ) -> UploadBody {
        transformed { ObservingTransform(observe: observe, onEnd: onEnd) }.declaringLength(length)
    }

    /// Returns a body that fails with ``SluiceError/Code/payloadTooLarge`` once more
    /// than `limit` bytes have passed.
    public func limited(to limit: Int64) -> UploadBody {
        transformed { LimitTransform(limit: limit) }
    }
}

private struct ObservingTransform: ChunkTransform {
    let observe: @Sendable (ByteBuffer) throws -> Void
    let onEnd: @Sendable () throws -> Void
    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        try observe(chunk)
        return chunk
    }
    mutating func finish() throws -> ByteBuffer? {
        try onEnd()
        return nil
    }
}

private struct LimitTransform: ByteCountingTransform {
    let limit: Int64
    var seen: Int64 = 0
    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        try count(chunk.readableBytes)
        return chunk
    }
    mutating func count(_ count: Int) throws {
        seen += Int64(count)
        if seen > limit {
            throw SluiceError(.payloadTooLarge, "upload exceeds the maximum size of \(ByteSize(limit))")
        }
    }
    mutating func finish() throws -> ByteBuffer? { nil }
}

/// A body's pieces through a ``ByteCountingTransform``.
private struct CountingPieces<T: ByteCountingTransform>: BodyPieceIterator {
    var base: any BodyPieceIterator
    var transform: T
    var finished = false

    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        guard !finished else { return nil }
        guard let piece = try await base.next(allowPipe: allowPipe) else {
            finished = true
            _ = try await transform.finish()
            return nil
        }
        switch piece {
        case .bytes(let chunk): _ = try await transform.process(chunk)
        case .piped(_, let count): try transform.count(count)
        }
        return piece
    }

    mutating func bytesWaiting() async -> Int {
        finished ? 0 : await base.bytesWaiting()
    }
}

struct TransformedBody<T: ChunkTransform>: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: UploadBody
    let makeTransform: @Sendable () -> T

    func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), transform: makeTransform())
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: UploadBody.AsyncIterator
        var transform: T
        var finished = false

        mutating func next() async throws -> ByteBuffer? {
            while !finished {
                if let chunk = try await base.next() {
                    if let out = try await transform.process(chunk), out.readableBytes > 0 {
                        return out
                    }
                } else {
                    finished = true
                    if let out = try await transform.finish(), out.readableBytes > 0 {
                        return out
                    }
                }
            }
            return nil
        }
    }
}
