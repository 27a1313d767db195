import CZlib
import NIOCore

/// The container around deflate data.
public enum ZlibFormat: String, Sendable, Codable, CaseIterable {
    /// RFC 1952 gzip: what `gzip -t`, `zcat` and `Content-Encoding: gzip` use.
    case gzip
    /// RFC 1950 zlib (HTTP's `Content-Encoding: deflate`).
    case zlib
    /// RFC 1951 raw deflate, no header or checksum.
    case deflate

    /// zlib's `windowBits` for this format (15-bit window).
    var windowBits: Int32 {
        switch self {
        case .gzip: 15 + 16
        case .zlib: 15
        case .deflate: -15
        }
    }
}

/// A streaming zlib compressor with bounded memory (zlib's own state plus one output buffer).
///
/// Owns a `z_stream`; not thread-safe; released in `deinit`, so dropping it on an
/// error or cancellation path frees it.
public final class Deflater {
    private var stream = z_stream()
    private let format: ZlibFormat
    private let level: Int32
    private var finished = false
    /// Output buffer growth step.
    private let outputChunk: Int

    /// - Parameters:
    ///   - format: gzip, zlib or raw deflate.
    ///   - level: 0 (store) … 9 (best); 1 is fastest.
    ///   - outputChunk: Size of each output allocation step.
    public init(format: ZlibFormat, level: Int, outputChunk: Int = 64 * 1024) throws {
        self.format = format
        self.level = Int32(level)
        self.outputChunk = max(outputChunk, 256)
        let rc = sluice_deflateInit2(&stream, Int32(level), Z_DEFLATED, format.windowBits, 8, Z_DEFAULT_STRATEGY)
        guard rc == Z_OK else { throw SluiceError(.internal, "deflateInit2 failed (\(rc))") }
    }

    deinit { deflateEnd(&stream) }

    /// Compresses `input`; returns whatever output zlib produced (often empty for small inputs).
    public func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        try run(input, flush: Z_NO_FLUSH, allocator: allocator)
    }

    /// Compresses `input`, then flushes pending output so everything so far is
    /// decodable (`Z_SYNC_FLUSH`).
    public func flush(_ input: ByteBuffer = ByteBuffer(), allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        try run(input, flush: Z_SYNC_FLUSH, allocator: allocator)
    }

    /// Ends the stream (trailer and checksum). The deflater can be ``reset()`` and reused.
    public func finish(_ input: ByteBuffer = ByteBuffer(), allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        let out = try run(input, flush: Z_FINISH, allocator: allocator)
        finished = true
        return out
    }

    /// Starts a new, independent stream (for example the next gzip member) with the same settings.
    public func reset() throws {
        let rc = deflateReset(&stream)
        guard rc == Z_OK else { throw SluiceError(.internal, "deflateReset failed (\(rc))") }
        finished = false
    }

    private func run(_ input: ByteBuffer, flush: Int32, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        guard !finished else {
            // zlib would answer Z_BUF_ERROR forever while input remains.
            throw SluiceError(.internal, "the \(format.rawValue) stream already ended; reset() the deflater first")
        }
        let bound = Int(deflateBound(&stream, uLong(input.readableBytes))) + 64
        var output = allocator.buffer(capacity: min(bound, outputChunk))
        // Read-only access: a mutable view would copy the chunk when it is shared (it
        // usually is). zlib never writes through `next_in`.
        try input.withUnsafeReadableBytes { inBytes in
            stream.next_in = UnsafeMutablePointer(mutating: inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(inBytes.count)
            defer { stream.next_in = nil; stream.avail_in = 0 }
            while true {
                if output.writableBytes == 0 {
                    output.reserveCapacity(minimumWritableBytes: outputChunk)
                }
                var rc: Int32 = Z_OK
                var filled = false
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { outBytes -> Int in
                    stream.next_out = outBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(outBytes.count)
                    rc = deflate(&stream, flush)
                    filled = stream.avail_out == 0
                    let written = outBytes.count - Int(stream.avail_out)
                    stream.next_out = nil
                    stream.avail_out = 0
                    return written
                }
                switch rc {
                case Z_STREAM_END:
                    return
                case Z_OK, Z_BUF_ERROR:
                    // Out of room: go round with more. Otherwise zlib has taken all
                    // input and, for a flush, written everything pending.
                    if filled { continue }
                    if flush == Z_FINISH {
                        // Z_FINISH with room left must end the stream.
                        throw SluiceError(.internal, "deflate did not finish (\(rc))")
                    }
                    if stream.avail_in == 0 { return }
                    if rc == Z_BUF_ERROR {
                        throw SluiceError(.internal, "deflate made no progress")
                    }
                default:
                    throw SluiceError(.internal, "deflate failed (\(rc))")
                }
            }
        }
        return output
    }
}

/// A streaming zlib decompressor with bounded memory and a cap on total output
/// (compression bombs are refused with ``SluiceError/Code/payloadTooLarge``).
///
/// Feed it with ``decompress(from:maxBytes:allocator:)`` to get output in pieces of
/// bounded size, however well the input compresses:
///
/// ```swift
/// var input = chunk
/// while input.readableBytes > 0 || inflater.hasPendingOutput {
///     let piece = try inflater.decompress(from: &input, maxBytes: 64 * 1024)
///     try await write(piece)
/// }
/// // … after the last chunk:
/// try inflater.finish()
/// ```
public final class Inflater {
    private var stream = z_stream()
    public let format: ZlibFormat
    private let maxOutput: Int64
    private var produced: Int64 = 0
    private let outputChunk: Int
    /// True once the compressed stream (the last gzip member, for gzip) ended.
    public private(set) var isFinished = false
    /// True when the last call stopped because its output was full, so zlib may
    /// hold more output for the input it already took: call again, even without input.
    public private(set) var hasPendingOutput = false

    /// - Parameters:
    ///   - format: The expected container.
    ///   - maxOutput: The most decompressed bytes accepted.
    ///   - outputChunk: Size of each output buffer.
    public init(format: ZlibFormat, maxOutput: Int64 = .max, outputChunk: Int = 64 * 1024) throws {
        self.format = format
        self.maxOutput = maxOutput
        self.outputChunk = max(outputChunk, 256)
        let rc = sluice_inflateInit2(&stream, format.windowBits)
        guard rc == Z_OK else { throw SluiceError(.internal, "inflateInit2 failed (\(rc))") }
    }

    deinit { inflateEnd(&stream) }

    /// Decompresses all of `input` into one buffer. Concatenated gzip members are
    /// decoded as one stream, as `gzip -d` does.
    ///
    /// The output may be much larger than the input (up to `maxOutput`); to bound
    /// memory per piece use ``decompress(from:maxBytes:allocator:)``.
    ///
    /// - Throws: ``SluiceError/Code/corruptInput`` for invalid data,
    ///   ``SluiceError/Code/payloadTooLarge`` past `maxOutput`.
    public func decompress(_ input: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        var input = input
        var output = allocator.buffer(capacity: outputChunk)
        try inflate(from: &input, into: &output, limit: .max)
        return output
    }

    /// Decompresses from the front of `input` until `maxBytes` of output are ready
    /// or `input` is used up, moving `input`'s reader index past what was consumed.
    ///
    /// Call it again while `input` has readable bytes or ``hasPendingOutput`` is true.
    ///
    /// - Parameters:
    ///   - input: Compressed bytes; consumed from the front.
    ///   - maxBytes: The most output bytes to return.
    /// - Returns: Up to `maxBytes` decompressed bytes (possibly none).
    /// - Throws: ``SluiceError/Code/corruptInput`` for invalid data,
    ///   ``SluiceError/Code/payloadTooLarge`` past `maxOutput`.
    public func decompress(from input: inout ByteBuffer, maxBytes: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        precondition(maxBytes > 0, "maxBytes must be positive")
        var output = allocator.buffer(capacity: min(maxBytes, outputChunk))
        try inflate(from: &input, into: &output, limit: maxBytes)
        return output
    }

    /// Appends up to `limit` bytes to `output`.
    private func inflate(from input: inout ByteBuffer, into output: inout ByteBuffer, limit: Int) throws {
        var room = limit
        hasPendingOutput = false
        while room > 0 {
            if isFinished {
                guard input.readableBytes > 0 else { return }
                // Another gzip member follows; anything else after the end is garbage.
                guard format == .gzip else {
                    throw SluiceError(.corruptInput, "\(input.readableBytes) unexpected bytes after the end of the \(format.rawValue) stream")
                }
                let rc = inflateReset(&stream)
                guard rc == Z_OK else { throw SluiceError(.internal, "inflateReset failed (\(rc))") }
                isFinished = false
            }
            if output.writableBytes == 0 {
                output.reserveCapacity(minimumWritableBytes: min(room, outputChunk))
            }
            var rc: Int32 = Z_OK
            var written = 0
            // Read-only access to the input: a mutable view would copy a shared chunk.
            let consumed = input.withUnsafeReadableBytes { inBytes -> Int in
                stream.next_in = UnsafeMutablePointer(mutating: inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(inBytes.count)
                written = output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { outBytes -> Int in
                    let want = min(room, outBytes.count)
                    stream.next_out = outBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(want)
                    rc = CZlib.inflate(&stream, Z_NO_FLUSH)
                    let written = want - Int(stream.avail_out)
                    stream.next_out = nil
                    stream.avail_out = 0
                    return written
                }
                let consumed = inBytes.count - Int(stream.avail_in)
                stream.next_in = nil
                stream.avail_in = 0
                return consumed
            }
            input.moveReaderIndex(forwardBy: consumed)
            room -= written
            produced += Int64(written)
            if produced > maxOutput {
                throw SluiceError(.payloadTooLarge, "decompressed data exceeds the limit of \(ByteSize(maxOutput))")
            }
            switch rc {
            case Z_OK:
                break
            case Z_BUF_ERROR:
                // No progress possible: zlib needs more input than it has.
                guard consumed > 0 || written > 0 else {
                    if input.readableBytes > 0 {
                        throw SluiceError(.internal, "inflate made no progress")
                    }
                    return
                }
            case Z_STREAM_END:
                isFinished = true
            case Z_NEED_DICT:
                throw SluiceError(.corruptInput, "\(format.rawValue) data needs a preset dictionary")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw SluiceError(.corruptInput, "invalid \(format.rawValue) data: \(message)")
            }
        }
        // Output full: zlib may still hold output for input it already consumed.
        hasPendingOutput = !isFinished
    }

    /// Checks that the compressed stream ended properly (a truncated stream is corrupt).
    public func finish() throws {
        guard isFinished else {
            throw SluiceError(.corruptInput, "the \(format.rawValue) stream is truncated")
        }
    }
}

/// The crc32 of `bytes` continuing from `crc` (zlib's `crc32`).
public func zlibCRC32(_ crc: UInt32 = 0, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    guard var base = bytes.baseAddress?.assumingMemoryBound(to: Bytef.self) else { return crc }
    var value = uLong(crc)
    var remaining = bytes.count
    // zlib takes a 32-bit length; feed huge buffers in slices.
    while remaining > 0 {
        let n = min(remaining, Int(UInt32.max >> 1))
        value = CZlib.crc32(value, base, uInt(n))
        base += n
        remaining -= n
    }
    return UInt32(truncatingIfNeeded: value)
}
