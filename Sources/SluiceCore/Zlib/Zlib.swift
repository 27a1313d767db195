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
        self.outputChunk = outputChunk
        let rc = sluice_deflateInit2(&stream, Int32(level), Z_DEFLATED, format.windowBits, 8, Z_DEFAULT_STRATEGY)
        guard rc == Z_OK else { throw SluiceError(.internal, "deflateInit2 failed (\(rc))") }
    }

    deinit { deflateEnd(&stream) }

    /// Compresses `input`; returns whatever output zlib produced (often empty for small inputs).
    public func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        try run(input, flush: Z_NO_FLUSH, allocator: allocator)
    }

    /// Flushes pending output so everything so far is decodable (`Z_SYNC_FLUSH`).
    public func flush(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        try run(ByteBuffer(), flush: Z_SYNC_FLUSH, allocator: allocator)
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
        var input = input
        let bound = Int(deflateBound(&stream, uLong(input.readableBytes))) + 64
        var output = allocator.buffer(capacity: min(max(bound, 256), max(outputChunk, 256)))
        try input.withUnsafeMutableReadableBytes { inBytes in
            stream.next_in = inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.avail_in = uInt(inBytes.count)
            defer { stream.next_in = nil; stream.avail_in = 0 }
            while true {
                if output.writableBytes == 0 {
                    output.reserveCapacity(minimumWritableBytes: outputChunk)
                }
                let rc = output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { outBytes -> Int in
                    stream.next_out = outBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(outBytes.count)
                    let rc = deflate(&stream, flush)
                    let written = outBytes.count - Int(stream.avail_out)
                    stream.next_out = nil
                    lastRC = rc
                    return written
                }
                _ = rc
                if lastRC == Z_STREAM_ERROR {
                    throw SluiceError(.internal, "deflate failed (Z_STREAM_ERROR)")
                }
                if flush == Z_FINISH {
                    if lastRC == Z_STREAM_END { break }
                } else if stream.avail_in == 0, output.writableBytes > 0 {
                    // All input consumed and zlib did not fill the output: done for now.
                    break
                }
            }
        }
        return output
    }
    private var lastRC: Int32 = Z_OK
}

/// A streaming zlib decompressor with bounded memory and a cap on total output
/// (compression bombs are refused with ``SluiceError/Code/payloadTooLarge``).
public final class Inflater {
    private var stream = z_stream()
    public let format: ZlibFormat
    private let maxOutput: Int64
    private var produced: Int64 = 0
    private let outputChunk: Int
    /// True once the compressed stream (the last gzip member, for gzip) ended.
    public private(set) var isFinished = false

    /// - Parameters:
    ///   - format: The expected container.
    ///   - maxOutput: The most decompressed bytes accepted.
    ///   - outputChunk: Size of each output buffer.
    public init(format: ZlibFormat, maxOutput: Int64 = .max, outputChunk: Int = 64 * 1024) throws {
        self.format = format
        self.maxOutput = maxOutput
        self.outputChunk = outputChunk
        let rc = sluice_inflateInit2(&stream, format.windowBits)
        guard rc == Z_OK else { throw SluiceError(.internal, "inflateInit2 failed (\(rc))") }
    }

    deinit { inflateEnd(&stream) }

    /// Decompresses `input`. Concatenated gzip members are decoded as one stream,
    /// as `gzip -d` does.
    ///
    /// - Throws: ``SluiceError/Code/corruptInput`` for invalid data,
    ///   ``SluiceError/Code/payloadTooLarge`` past `maxOutput`.
    public func decompress(_ input: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        var input = input
        var output = allocator.buffer(capacity: outputChunk)
        while input.readableBytes > 0 {
            if isFinished {
                // Another gzip member follows; anything else after the end is garbage.
                guard format == .gzip else {
                    throw SluiceError(.corruptInput, "\(input.readableBytes) unexpected bytes after the end of the \(format.rawValue) stream")
                }
                let rc = inflateReset(&stream)
                guard rc == Z_OK else { throw SluiceError(.internal, "inflateReset failed (\(rc))") }
                isFinished = false
            }
            if output.writableBytes == 0 {
                output.reserveCapacity(minimumWritableBytes: outputChunk)
            }
            var rc: Int32 = Z_OK
            let consumed = input.withUnsafeMutableReadableBytes { inBytes -> Int in
                stream.next_in = inBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.avail_in = uInt(inBytes.count)
                _ = output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { outBytes -> Int in
                    stream.next_out = outBytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(outBytes.count)
                    rc = inflate(&stream, Z_NO_FLUSH)
                    let written = outBytes.count - Int(stream.avail_out)
                    stream.next_out = nil
                    return written
                }
                let consumed = inBytes.count - Int(stream.avail_in)
                stream.next_in = nil
                stream.avail_in = 0
                return consumed
            }
            input.moveReaderIndex(forwardBy: consumed)
            switch rc {
            case Z_OK, Z_BUF_ERROR:
                break
            case Z_STREAM_END:
                isFinished = true
            case Z_NEED_DICT:
                throw SluiceError(.corruptInput, "\(format.rawValue) data needs a preset dictionary")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw SluiceError(.corruptInput, "invalid \(format.rawValue) data: \(message)")
            }
            produced = Int64(output.readableBytes) + producedBefore
            if produced > maxOutput {
                throw SluiceError(.payloadTooLarge, "decompressed data exceeds the limit of \(ByteSize(maxOutput))")
            }
            if rc == Z_BUF_ERROR, consumed == 0, output.writableBytes > 0 {
                break
            }
        }
        producedBefore += Int64(output.readableBytes)
        return output
    }
    private var producedBefore: Int64 = 0

    /// Checks that the compressed stream ended properly (a truncated stream is corrupt).
    public func finish() throws {
        guard isFinished else {
            throw SluiceError(.corruptInput, "the \(format.rawValue) stream is truncated")
        }
    }
}

/// The crc32 of `bytes` continuing from `crc` (zlib's `crc32`).
public func zlibCRC32(_ crc: UInt32 = 0, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    guard let base = bytes.baseAddress else { return crc }
    return UInt32(truncatingIfNeeded: CZlib.crc32(uLong(crc), base.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
}
