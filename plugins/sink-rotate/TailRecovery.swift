import CZlib
import Logging
import SluiceCore

/// Cuts a torn record off the end of an active file found at start, so that later
/// records never follow a half-written one (a crash or `kill -9` mid-write).
///
/// A text file must end with `\n`: everything after the last `\n` is removed. A file
/// of gzip members (written through `compress` with member flushes) must end at a
/// member boundary: members are decoded in turn and everything after the last complete
/// one is removed, so the file decodes with `gzip -t` and `zcat`.
enum TailRecovery {
    static func recover(fd: CInt, size: Int64, path: String, logger: Logger) throws -> Int64 {
        var magic: [UInt8] = [0, 0]
        let n = try magic.withUnsafeMutableBytes { try Posix.readAt(fd, into: $0, at: 0, path: path) }
        let gzip = n == 2 && magic == [0x1F, 0x8B]
        let end = gzip ? try lastMemberEnd(fd: fd, size: size, path: path) : try lastNewlineEnd(fd: fd, size: size, path: path)
        if end < size {
            try Posix.truncate(fd, to: end, path: path)
            logger.warning("removed a torn record from the end of the active file", metadata: [
                "path": "\(path)", "removed_bytes": "\(size - end)", "kept_bytes": "\(end)",
            ])
        }
        return end
    }

    /// The offset just past the last `\n` (0 if there is none).
    static func lastNewlineEnd(fd: CInt, size: Int64, path: String) throws -> Int64 {
        let blockSize = 64 << 10
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 16)
        defer { block.deallocate() }
        var end = size
        while end > 0 {
            let start = max(0, end - Int64(blockSize))
            let want = Int(end - start)
            var got = 0
            while got < want {
                let n = try Posix.readAt(fd, into: UnsafeMutableRawBufferPointer(rebasing: block[got..<want]), at: start + Int64(got), path: path)
                if n == 0 { break }
                got += n
            }
            if let i = block[0..<got].lastIndex(of: 0x0A) {
                return start + Int64(i) + 1
            }
            end = start
        }
        return 0
    }

    /// The offset just past the last complete gzip member (0 if there is none).
    static func lastMemberEnd(fd: CInt, size: Int64, path: String) throws -> Int64 {
        var stream = z_stream()
        guard sluice_inflateInit2(&stream, 15 + 16) == Z_OK else {
            throw SluiceError(.internal, "inflateInit2 failed")
        }
        defer { inflateEnd(&stream) }
        let blockSize = 256 << 10
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 16)
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 16)
        defer {
            input.deallocate()
            output.deallocate()
        }
        var offset: Int64 = 0
        var lastEnd: Int64 = 0
        while offset < size {
            let n = try Posix.readAt(fd, into: input, at: offset, path: path)
            if n == 0 { break }
            stream.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_in = uInt(n)
            while stream.avail_in > 0 {
                stream.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(blockSize)
                let before = stream.avail_in
                let rc = inflate(&stream, Z_NO_FLUSH)
                switch rc {
                case Z_STREAM_END:
                    lastEnd = offset + Int64(n) - Int64(stream.avail_in)
                    guard inflateReset(&stream) == Z_OK else { return lastEnd }
                case Z_OK:
                    continue
                case Z_BUF_ERROR where stream.avail_in < before || stream.avail_out == 0:
                    continue
                default:
                    // Corrupt data (or no progress): keep what decoded completely.
                    return lastEnd
                }
            }
            offset += Int64(n)
        }
        return lastEnd
    }
}
