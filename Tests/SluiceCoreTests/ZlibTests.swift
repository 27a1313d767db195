import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

/// Compresses `bytes` in chunks of `chunkSize` and returns the whole stream.
private func deflate(_ bytes: [UInt8], format: ZlibFormat, level: Int = 6, chunkSize: Int = 65_536) throws -> [UInt8] {
    let deflater = try Deflater(format: format, level: level)
    var out: [UInt8] = []
    var offset = 0
    while offset < bytes.count {
        let end = min(offset + chunkSize, bytes.count)
        out += Array(try deflater.compress(ByteBuffer(bytes: bytes[offset..<end])).readableBytesView)
        offset = end
    }
    out += Array(try deflater.finish().readableBytesView)
    return out
}

/// Decompresses `bytes` fed in chunks of `chunkSize`, taking output in pieces of at most `piece`.
private func inflate(_ bytes: [UInt8], format: ZlibFormat, chunkSize: Int = 65_536, piece: Int = 65_536) throws -> (bytes: [UInt8], largest: Int) {
    let inflater = try Inflater(format: format)
    var out: [UInt8] = []
    var largest = 0
    var offset = 0
    repeat {
        let end = min(offset + chunkSize, bytes.count)
        var input = ByteBuffer(bytes: bytes[offset..<end])
        offset = end
        while input.readableBytes > 0 || inflater.hasPendingOutput {
            let output = try inflater.decompress(from: &input, maxBytes: piece)
            largest = max(largest, output.readableBytes)
            out += Array(output.readableBytesView)
        }
    } while offset < bytes.count
    try inflater.finish()
    return (out, largest)
}

@Suite("zlib wrapper")
struct ZlibTests {
    static let text = Array((0..<4000).map { "line \($0): the quick brown fox \($0 % 17)\n" }.joined().utf8)
    static let noise = pseudoRandomBytes(count: 100_000)

    @Test("round trips in every format and level, across chunk sizes", arguments: ZlibFormat.allCases)
    func roundTrip(format: ZlibFormat) throws {
        for level in [0, 1, 6, 9] {
            for chunkSize in [1, 7, 4093, 1 << 20] where level == 6 || chunkSize == 4093 {
                let payload = chunkSize == 1 ? Array(Self.text.prefix(5000)) : Self.text + Self.noise
                let compressed = try deflate(payload, format: format, level: level, chunkSize: chunkSize)
                #expect(try inflate(compressed, format: format, chunkSize: chunkSize).bytes == payload, "\(format) level \(level) chunk \(chunkSize)")
                // The one-buffer API agrees.
                let inflater = try Inflater(format: format)
                #expect(Array(try inflater.decompress(ByteBuffer(bytes: compressed)).readableBytesView) == payload)
                try inflater.finish()
            }
        }
    }

    @Test("empty streams are valid")
    func empty() throws {
        for format in ZlibFormat.allCases {
            let compressed = try deflate([], format: format)
            #expect(!compressed.isEmpty)
            #expect(try inflate(compressed, format: format).bytes == [])
        }
        #expect(try deflate([], format: .gzip).count == 20)
    }

    @Test("output comes in bounded pieces however well the input compresses")
    func boundedPieces() throws {
        let zeros = [UInt8](repeating: 0, count: 8 << 20)
        let compressed = try deflate(zeros, format: .gzip, level: 9)
        #expect(compressed.count < 64 * 1024)
        let (bytes, largest) = try inflate(compressed, format: .gzip, chunkSize: 1 << 20, piece: 1000)
        #expect(bytes.count == zeros.count)
        #expect(largest == 1000)
    }

    @Test("output still held by zlib when the input runs out is not lost")
    func pendingOutputAtEnd() throws {
        // One input byte of a stream of zeros expands to far more than a small output
        // buffer: the final bytes must still come out and the stream must end.
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        let compressed = try deflate(zeros, format: .gzip, level: 9)
        let small = try Inflater(format: .gzip, outputChunk: 256)
        var total = 0
        for byte in compressed {
            total += try small.decompress(ByteBuffer(bytes: [byte])).readableBytes
        }
        #expect(total == zeros.count)
        try small.finish()
        #expect(try inflate(compressed, format: .gzip, chunkSize: 1, piece: 256).bytes.count == zeros.count)
    }

    @Test("sync flush makes everything so far decodable; finish, reset, finish makes two members")
    func flushAndMembers() throws {
        let deflater = try Deflater(format: .gzip, level: 6)
        let inflater = try Inflater(format: .gzip)
        let first = try deflater.flush(ByteBuffer(string: "hello "))
        #expect(String(buffer: try inflater.decompress(first)) == "hello ")
        let rest = try deflater.finish(ByteBuffer(string: "world"))
        #expect(String(buffer: try inflater.decompress(rest)) == "world")
        try inflater.finish()

        // After finish, input is refused until reset (zlib would otherwise spin).
        #expect(throws: SluiceError.self) { _ = try deflater.compress(ByteBuffer(string: "more")) }
        try deflater.reset()
        var members = try Deflater(format: .gzip, level: 1).finish(ByteBuffer(string: "one\n"))
        var second = try deflater.finish(ByteBuffer(string: "two\n"))
        members.writeBuffer(&second)
        let both = try Inflater(format: .gzip)
        #expect(String(buffer: try both.decompress(members)) == "one\ntwo\n")
        try both.finish()
    }

    @Test("corrupt, truncated, trailing and oversized input are refused with the right code")
    func refusals() throws {
        let compressed = try deflate(Self.text, format: .gzip)
        var corrupt = compressed
        corrupt[40] ^= 0xff
        do {
            _ = try inflate(corrupt, format: .gzip)
            Issue.record("corrupt data accepted")
        } catch let error as SluiceError {
            #expect(error.code == .corruptInput)
        }

        let truncated = try Inflater(format: .gzip)
        _ = try truncated.decompress(ByteBuffer(bytes: compressed.dropLast(3)))
        #expect(!truncated.isFinished)
        do {
            try truncated.finish()
            Issue.record("a truncated stream finished")
        } catch let error as SluiceError {
            #expect(error.code == .corruptInput)
        }

        let zlib = try deflate(Self.text, format: .zlib)
        do {
            _ = try Inflater(format: .zlib).decompress(ByteBuffer(bytes: zlib + [1, 2, 3]))
            Issue.record("trailing bytes accepted")
        } catch let error as SluiceError {
            #expect(error.code == .corruptInput)
        }

        do {
            _ = try Inflater(format: .gzip, maxOutput: 1000).decompress(ByteBuffer(bytes: compressed))
            Issue.record("output over the limit accepted")
        } catch let error as SluiceError {
            #expect(error.code == .payloadTooLarge)
        }
    }

    @Test("compressing does not change the caller's buffer")
    func inputUntouched() throws {
        let input = ByteBuffer(bytes: Self.text)
        let before = input
        _ = try Deflater(format: .gzip, level: 1).finish(input)
        #expect(input == before)
    }

    @Test("crc32 matches the standard check value and DigestComputer")
    func crc32() {
        let check = Array("123456789".utf8)
        #expect(check.withUnsafeBytes { zlibCRC32(0, $0) } == 0xCBF4_3926)
        var computer = DigestAlgorithm.crc32.makeComputer()
        computer.update(ByteBuffer(bytes: check))
        #expect(computer.finalize() == [0xCB, 0xF4, 0x39, 0x26])
        // Continuing from a previous value equals one pass.
        let split = check.withUnsafeBytes { all in
            zlibCRC32(zlibCRC32(0, UnsafeRawBufferPointer(rebasing: all[..<4])), UnsafeRawBufferPointer(rebasing: all[4...]))
        }
        #expect(split == 0xCBF4_3926)
    }
}
