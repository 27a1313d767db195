import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import StageDecompress
import Testing

private func decompressPipeline(_ configuration: DecompressPlugin.Configuration, sink: InMemorySink) -> Pipeline {
    Pipeline(name: "test", stages: [("decompress", DecompressStage(configuration))], sink: sink)
}

/// `payload` compressed by real tools: gzip by `gzip`, zlib and deflate by Python.
private func compressWithTools(_ payload: [UInt8], _ format: ZlibFormat, dir: TemporaryDirectory) async throws -> [UInt8] {
    let input = try dir.write(payload, to: "plain-\(UUID().uuidString)")
    let result: ToolResult
    switch format {
    case .gzip:
        result = try await runTool(["gzip", "-c", "-6", input])
    case .zlib, .deflate:
        let wbits = format == .zlib ? 15 : -15
        result = try await runTool([
            "python3", "-c",
            "import zlib,sys; c=zlib.compressobj(6, zlib.DEFLATED, int(sys.argv[2])); sys.stdout.buffer.write(c.compress(open(sys.argv[1],'rb').read()) + c.flush())",
            input, "\(wbits)",
        ])
    }
    #expect(result.status == 0, "\(result.stderr)")
    return result.stdout
}

@Suite("decompress", .timeLimit(.minutes(2)))
struct DecompressTests {
    static let payload = logLikeText(bytes: 200_000) + pseudoRandomBytes(count: 30_000)

    @Test("decodes what gzip and Python's zlib wrote, across chunk sizes", arguments: ZlibFormat.allCases)
    func toolRoundTrip(format: ZlibFormat) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let compressed = try await compressWithTools(Self.payload, format, dir: dir)
        for chunkSize in [1, 7, 4093, 1 << 20] {
            for configured in [DecompressFormat(rawValue: format.rawValue)!, .auto] {
                let sink = InMemorySink()
                let receipt = try await decompressPipeline(.init(format: configured), sink: sink)
                    .process(.test(name: "d", bytes: compressed, chunkSize: chunkSize))
                #expect(sink.bytes(of: "d") == Self.payload, "\(format) as \(configured), chunk size \(chunkSize)")
                #expect(receipt.bytesReceived == Int64(compressed.count))
            }
        }
    }

    @Test("concatenated gzip members decode as one stream, like gzip -d")
    func multiMember() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let a = Array("first member\n".utf8), b = logLikeText(bytes: 70_000)
        let both = try await compressWithTools(a, .gzip, dir: dir) + compressWithTools(b, .gzip, dir: dir)
        for chunkSize in [1, 10, 1 << 20] {
            let sink = InMemorySink()
            _ = try await decompressPipeline(.init(), sink: sink).process(.test(name: "m", bytes: both, chunkSize: chunkSize))
            #expect(sink.bytes(of: "m") == a + b)
        }
    }

    @Test("a highly compressible chunk comes out in bounded pieces")
    func boundedPieces() async throws {
        // 16 MiB of zeros compress to about 16 KiB: one input chunk, 256 output pieces.
        let deflater = try Deflater(format: .gzip, level: 9)
        var compressed = ByteBuffer()
        let zeros = ByteBuffer(repeating: 0, count: 1 << 20)
        for _ in 0..<16 {
            var out = try deflater.compress(zeros)
            compressed.writeBuffer(&out)
        }
        var tail = try deflater.finish()
        compressed.writeBuffer(&tail)
        let context = UploadContext(metadata: UploadMetadata(name: "z", listener: "t"), pipeline: "t", logger: .init(label: "t"))
        let body = try await DecompressStage(.init()).apply(to: UploadBody(chunks: [compressed]), context: context)
        var total = 0, largest = 0, pieces = 0
        for try await piece in body {
            total += piece.readableBytes
            largest = max(largest, piece.readableBytes)
            pieces += 1
            #expect(piece.getInteger(at: piece.readerIndex, as: UInt8.self) == 0)
            #expect(piece.getInteger(at: piece.writerIndex - 1, as: UInt8.self) == 0)
        }
        #expect(total == 16 << 20)
        #expect(largest <= DecompressStage.outputPieceSize)
        #expect(pieces >= (16 << 20) / DecompressStage.outputPieceSize)
    }

    @Test("corrupt, truncated, trailing-garbage and empty input fail with corrupt_input; nothing committed")
    func corruptInput() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let good = try await compressWithTools(Self.payload, .gzip, dir: dir)
        var flipped = good
        flipped[good.count / 2] ^= 0x55
        var badCRC = good
        badCRC[good.count - 6] ^= 0x01
        let zlibGood = try await compressWithTools(Self.payload, .zlib, dir: dir)
        let cases: [(String, DecompressFormat, [UInt8])] = [
            ("flipped byte", .gzip, flipped),
            ("bad crc", .gzip, badCRC),
            ("truncated", .gzip, Array(good.dropLast(100))),
            ("missing trailer", .gzip, Array(good.dropLast(4))),
            ("not gzip", .gzip, Array("plain text, not gzip\n".utf8)),
            ("garbage after a member", .gzip, good + Array("junk".utf8)),
            ("garbage after zlib", .zlib, zlibGood + [0]),
            ("empty", .gzip, []),
            ("one byte", .auto, [0x1f]),
        ]
        for (label, format, bytes) in cases {
            let sink = InMemorySink()
            do {
                _ = try await decompressPipeline(.init(format: format), sink: sink).process(.test(name: "c", bytes: bytes, chunkSize: 4093))
                Issue.record("\(label): accepted")
            } catch let error as SluiceError {
                #expect(error.code == .corruptInput, "\(label): \(error)")
            }
            #expect(sink.committed.isEmpty, "\(label)")
        }
    }

    @Test("more output than max_output_size fails with payload_too_large")
    func bomb() async throws {
        let deflater = try Deflater(format: .gzip, level: 9)
        let compressed = try deflater.finish(ByteBuffer(repeating: 0, count: 4 << 20))
        let sink = InMemorySink()
        do {
            _ = try await decompressPipeline(.init(maxOutputSize: .mebibytes(1)), sink: sink)
                .process(.test(name: "b", bytes: Array(compressed.readableBytesView)))
            Issue.record("accepted")
        } catch let error as SluiceError {
            #expect(error.code == .payloadTooLarge)
        }
        #expect(sink.committed.isEmpty)
    }

    @Test("record uploads come out in chunks that end on a newline")
    func recordBoundaries() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // Lines of varied length, the last without its newline.
        let text = logLikeText(bytes: 120_000) + Array("last record without newline".utf8)
        let compressed = try await compressWithTools(text, .gzip, dir: dir)
        for chunkSize in [7, 4093, 1 << 20] {
            let context = UploadContext(metadata: UploadMetadata(name: "r", listener: "t", mode: .records), pipeline: "t", logger: .init(label: "t"))
            let body = try await DecompressStage(.init()).apply(to: .bytes(compressed, chunkSize: chunkSize), context: context)
            var all: [UInt8] = []
            var chunks: [ByteBuffer] = []
            for try await chunk in body {
                chunks.append(chunk)
                all += Array(chunk.readableBytesView)
            }
            #expect(all == text, "chunk size \(chunkSize)")
            #expect(chunks.dropLast().allSatisfy { $0.getInteger(at: $0.writerIndex - 1, as: UInt8.self) == UInt8(ascii: "\n") })
            // The unterminated last record comes alone, at the end.
            let tail = text[(text.lastIndex(of: UInt8(ascii: "\n"))! + 1)...]
            #expect(Array(chunks.last!.readableBytesView) == Array(tail))
            #expect(chunks.count >= 3)
        }
    }

    @Test("auto sniffs gzip magic and zlib headers")
    func sniff() {
        #expect(DecompressFormat.sniff([0x1f, 0x8b]) == .gzip)
        #expect(DecompressFormat.sniff([0x78, 0x9c]) == .zlib)
        #expect(DecompressFormat.sniff([0x78, 0x01]) == .zlib)
        #expect(DecompressFormat.sniff([0x78, 0xda]) == .zlib)
        #expect(DecompressFormat.sniff([0x78, 0x9d]) == .deflate)
        #expect(DecompressFormat.sniff([0xed, 0xc1]) == .deflate)
    }
}

@Suite("decompress configuration")
struct DecompressConfigTests {
    @Test("keys decode; bad values and unknown keys are located")
    func config() throws {
        let pipelines = try testRegistry.buildPipelines("""
            pipelines:
              p:
                stages:
                  - type: decompress
                    format: auto
                    max_output_size: 1GiB
                sink: { type: memory }
            """)
        let stage = try #require(pipelines["p"]?.stages.first?.stage as? DecompressStage)
        #expect(stage.format == .auto)
        #expect(stage.maxOutputSize == .gibibytes(1))
        let bad = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: decompress
                    format: brotli
                    max_size: 1GiB
                sink: { type: memory }
            """)
        #expect(bad.contains("test.yaml:5: pipelines.p.stages[0].format: expected gzip, zlib, deflate or auto, got \"brotli\""), "\(bad)")
        let unknown = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: decompress
                    max_size: 1GiB
                sink: { type: memory }
            """)
        #expect(unknown.contains("test.yaml:5: pipelines.p.stages[0].max_size: unknown key \"max_size\""), "\(unknown)")
        let size = testRegistry.configError("""
            pipelines:
              p:
                stages: [{ type: decompress, max_output_size: lots }]
                sink: { type: memory }
            """)
        #expect(size.contains("test.yaml:3: pipelines.p.stages[0].max_output_size: expected a size like \"100MiB\", got \"lots\""), "\(size)")
    }
}
