import Logging
import NIOCore
import SluiceCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Re-cuts a byte stream into chunks of whole newline-terminated records (`framing: lines`).
///
/// Every chunk it emits ends on `\n` and holds only whole records, so an appending
/// sink can write each chunk as a unit and records from concurrent senders never
/// interleave. Chunks stay as large as what was read (many records each); only a
/// record split across two reads is copied. A final record without a newline gets one.
///
/// A record longer than `maxLength` bytes (without its newline) is cut to its first
/// `maxLength` bytes plus a newline (`truncate`), or fails the upload (`reject`).
/// Memory is bounded: at most one partial record (`maxLength` bytes) is held.
struct LineFramer: ChunkTransform {
    let maxLength: Int
    let policy: TCPReceiverPlugin.LongRecordPolicy
    let logger: Logger
    /// The start of a record whose newline has not arrived yet.
    private var carry = ByteBuffer()
    /// Dropping the rest of a record that was truncated.
    private var discarding = false
    private var truncated = 0

    private static let newline = UInt8(ascii: "\n")

    init(maxLength: Int, policy: TCPReceiverPlugin.LongRecordPolicy, logger: Logger) {
        self.maxLength = maxLength
        self.policy = policy
        self.logger = logger
    }

    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        var out = Output(chunk: chunk, reserve: carry.readableBytes + 1)
        let count = chunk.readableBytes
        var position = 0
        while position < count {
            if discarding {
                guard let newline = Self.firstNewline(in: chunk, from: position) else { break }
                discarding = false
                position = newline + 1
                continue
            }
            if let newline = Self.firstNewline(in: chunk, from: position) {
                if carry.readableBytes + (newline - position) <= maxLength {
                    if carry.readableBytes > 0 {
                        out.append(carry)
                        carry.clear()
                    }
                    out.append(range: position..<(newline + 1))
                } else {
                    try longRecord()
                    out.appendTruncated(carry, chunk.getSlice(at: chunk.readerIndex + position, length: newline - position)!, to: maxLength)
                    carry.clear()
                }
                position = newline + 1
            } else {
                let rest = chunk.getSlice(at: chunk.readerIndex + position, length: count - position)!
                if carry.readableBytes + rest.readableBytes <= maxLength {
                    carry.writeImmutableBuffer(rest)
                } else {
                    try longRecord()
                    out.appendTruncated(carry, rest, to: maxLength)
                    carry.clear()
                    discarding = true
                }
                position = count
            }
        }
        return out.result()
    }

    mutating func finish() throws -> ByteBuffer? {
        if truncated > 1 {
            logger.warning("\(truncated) records were longer than max_record_length (\(ByteSize(Int64(maxLength)))) and were truncated")
        }
        guard carry.readableBytes > 0 else { return nil }
        var last = carry
        carry = ByteBuffer()
        last.writeInteger(Self.newline)
        return last
    }

    private mutating func longRecord() throws {
        switch policy {
        case .reject:
            throw SluiceError(.payloadTooLarge, "a record is longer than max_record_length (\(ByteSize(Int64(maxLength))))")
        case .truncate:
            truncated += 1
            if truncated == 1 {
                logger.warning("a record is longer than max_record_length (\(ByteSize(Int64(maxLength)))); keeping its first \(maxLength) bytes")
            }
        }
    }

    /// The offset (from the reader index) of the first newline at or after `offset`.
    private static func firstNewline(in buffer: ByteBuffer, from offset: Int) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            guard offset < raw.count, let base = raw.baseAddress else { return nil }
            guard let found = memchr(base + offset, Int32(newline), raw.count - offset) else { return nil }
            return base.distance(to: UnsafeRawPointer(found))
        }
    }

    /// Collects one output chunk: contiguous ranges of the input stay a zero-copy
    /// slice; anything else (a completed partial record, a truncated one) makes a copy.
    private struct Output {
        let chunk: ByteBuffer
        let reserve: Int
        private var run: Range<Int>?
        private var buffer: ByteBuffer?

        init(chunk: ByteBuffer, reserve: Int) {
            self.chunk = chunk
            self.reserve = reserve
        }

        mutating func append(range: Range<Int>) {
            if let current = run, current.upperBound == range.lowerBound {
                run = current.lowerBound..<range.upperBound
            } else {
                flushRun()
                run = range
            }
        }

        mutating func append(_ bytes: ByteBuffer) {
            flushRun()
            write { $0.writeImmutableBuffer(bytes) }
        }

        mutating func appendTruncated(_ head: ByteBuffer, _ tail: ByteBuffer, to limit: Int) {
            flushRun()
            let keep = head.getSlice(at: head.readerIndex, length: min(head.readableBytes, limit))!
            let fromTail = min(limit - keep.readableBytes, tail.readableBytes)
            write { out in
                out.writeImmutableBuffer(keep)
                if fromTail > 0 {
                    out.writeImmutableBuffer(tail.getSlice(at: tail.readerIndex, length: fromTail)!)
                }
                out.writeInteger(LineFramer.newline)
            }
        }

        /// Writes into the output copy, allocating it on first use. The stored buffer is
        /// moved out while writing so the write never triggers a copy-on-write.
        private mutating func write(_ body: (inout ByteBuffer) -> Void) {
            var out = buffer ?? ByteBufferAllocator().buffer(capacity: chunk.readableBytes + reserve)
            buffer = nil
            body(&out)
            buffer = out
        }

        private mutating func flushRun() {
            guard let current = run else { return }
            run = nil
            let slice = chunk.getSlice(at: chunk.readerIndex + current.lowerBound, length: current.count)!
            write { $0.writeImmutableBuffer(slice) }
        }

        mutating func result() -> ByteBuffer? {
            if buffer == nil, let current = run {
                return chunk.getSlice(at: chunk.readerIndex + current.lowerBound, length: current.count)
            }
            flushRun()
            return buffer
        }
    }
}
