import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import StageCompress
import Testing

/// The wbits Python's zlib needs for each format.
private func wbits(_ format: ZlibFormat) -> Int {
    switch format {
    case .gzip: 31
    case .zlib: 15
    case .deflate: -15
    }
}

private func compressPipeline(_ configuration: CompressPlugin.Configuration, sink: InMemorySink) throws -> Pipeline {
    Pipeline(name: "test", stages: [("compress", try CompressStage(configuration))], sink: sink)
}

@Suite("compress", .timeLimit(.minutes(2)))
struct CompressTests {
    static let payload = logLikeText(bytes: 300_000) + pseudoRandomBytes(count: 50_000) + logLikeText(bytes: 100_000)

    @Test("every format decodes with Python's zlib, across chunk sizes", arguments: ZlibFormat.allCases)
    func pythonRoundTrip(format: ZlibFormat) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        for chunkSize in [1, 7, 4093, 1 << 20] {
            // 1-byte chunks over the full payload would take long: a smaller one exercises the same path.
            let payload = chunkSize == 1 ? Array(Self.payload.prefix(20_000)) : Self.payload
            let sink = InMemorySink()
            let receipt = try await compressPipeline(.init(format: format, level: 6), sink: sink)
                .process(.test(name: "p", bytes: payload, chunkSize: chunkSize))
            let stored = try #require(sink.bytes(of: "p"))
            #expect(receipt.bytesStored == Int64(stored.count))
            #expect(stored.count < payload.count)
            let path = try dir.write(stored, to: "out-\(chunkSize).\(format.rawValue)")
            let result = try await pythonInflate(path, wbits: wbits(format))
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.text == "\(sha256Hex(payload)) \(payload.count)", "format \(format) chunk size \(chunkSize)")
        }
    }

    @Test("gzip output passes gzip -t and zcat, at every level")
    func gzipTools() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        for (level, chunkSize) in [(0, 4093), (1, 7), (6, 1 << 20), (9, 65_536)] {
            let sink = InMemorySink()
            _ = try await compressPipeline(.init(format: .gzip, level: level), sink: sink)
                .process(.test(name: "a.log", bytes: Self.payload, chunkSize: chunkSize))
            let path = try dir.write(try #require(sink.bytes(of: "a.log")), to: "level\(level).gz")
            let test = try await runTool(["gzip", "-t", path])
            #expect(test.status == 0, "gzip -t at level \(level): \(test.stderr)")
            let zcat = try await runTool(["zcat", path])
            #expect(zcat.status == 0)
            #expect(zcat.stdout == Self.payload, "zcat at level \(level)")
        }
    }

    @Test("sync flush: every chunk's output decodes up to that chunk")
    func syncFlush() async throws {
        let stage = try CompressStage(.init(format: .zlib, level: 6, flush: .sync))
        let context = UploadContext(metadata: UploadMetadata(name: "s", listener: "t"), pipeline: "t", logger: .init(label: "t"))
        let lines = (0..<20).map { "line \($0) " + String(repeating: "x", count: $0 * 10) + "\n" }
        let body = UploadBody(chunks: lines.map { ByteBuffer(string: $0) })
        let inflater = try Inflater(format: .zlib)
        var decoded: [UInt8] = []
        var chunks = 0
        for try await chunk in try await stage.apply(to: body, context: context) {
            let piece = try inflater.decompress(chunk)
            decoded += Array(piece.readableBytesView)
            chunks += 1
            if chunks <= lines.count {
                // Everything sent so far is already decodable.
                #expect(decoded == Array(lines.prefix(chunks).joined().utf8))
            }
        }
        try inflater.finish()
        #expect(decoded == Array(lines.joined().utf8))
    }

    @Test("member flush: chunks of two interleaved uploads appended to one file make a valid gzip file")
    func memberFlushInterleaved() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // auto = member for record uploads.
        let stage = try CompressStage(.init(format: .gzip, level: 6))
        func records(_ tag: String) -> [String] { (0..<50).map { i in (0...(i % 4)).map { "\(tag) record \(i).\($0)\n" }.joined() } }
        let a = records("A"), b = records("B")
        func open(_ name: String, _ chunks: [String]) async throws -> UploadBody.AsyncIterator {
            let context = UploadContext(metadata: UploadMetadata(name: name, listener: "t", mode: .records), pipeline: "t", logger: .init(label: "t"))
            return try await stage.apply(to: UploadBody(chunks: chunks.map { ByteBuffer(string: $0) }), context: context).makeAsyncIterator()
        }
        var itA = try await open("a", a), itB = try await open("b", b)
        var file: [UInt8] = []
        var expected = ""
        var outputs = 0
        for i in 0..<50 {
            // Every output chunk is a complete member: a cut after any of them decodes.
            let ca = try #require(try await itA.next())
            file += Array(ca.readableBytesView)
            expected += a[i]
            let cb = try #require(try await itB.next())
            file += Array(cb.readableBytesView)
            expected += b[i]
            outputs += 2
            if i == 24 {
                let path = try dir.write(file, to: "half.gz")
                #expect(try await runTool(["gzip", "-t", path]).status == 0)
                #expect(try await runTool(["zcat", path]).stdout == Array(expected.utf8))
            }
        }
        #expect(try await itA.next() == nil)
        #expect(try await itB.next() == nil)
        let path = try dir.write(file, to: "all.gz")
        let test = try await runTool(["gzip", "-t", path])
        #expect(test.status == 0, "\(test.stderr)")
        #expect(try await runTool(["zcat", path]).stdout == Array(expected.utf8))
        // A file cut inside the last member decodes up to the member before it.
        var last = try await open("b2", [b[49]])
        let lastLength = try #require(try await last.next()).readableBytes
        let cut = try dir.write(Array(file.dropLast(lastLength / 2)), to: "cut.gz")
        let partial = try await runTool(["zcat", cut])
        #expect(partial.status != 0)
        #expect(String(decoding: partial.stdout, as: UTF8.self).hasPrefix(String(expected.dropLast(b[49].count))))
    }

    @Test("explicit member flush on an object upload: members per chunk, still one valid file")
    func memberFlushObject() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let sink = InMemorySink()
        _ = try await compressPipeline(.init(format: .gzip, level: 1, flush: .member), sink: sink)
            .process(.test(name: "m", bytes: Self.payload, chunkSize: 4093))
        let path = try dir.write(try #require(sink.bytes(of: "m")), to: "m.gz")
        #expect(try await runTool(["gzip", "-t", path]).status == 0)
        #expect(try await runTool(["zcat", path]).stdout == Self.payload)
    }

    @Test("an empty upload is a valid empty file in every format and flush mode")
    func emptyUpload() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        for (format, flush) in [(ZlibFormat.gzip, CompressFlush.auto), (.gzip, .member), (.gzip, .sync), (.zlib, .none), (.deflate, .auto)] {
            let sink = InMemorySink()
            _ = try await compressPipeline(.init(format: format, flush: flush), sink: sink).process(.test(name: "e", bytes: []))
            let stored = try #require(sink.bytes(of: "e"))
            #expect(!stored.isEmpty)
            let path = try dir.write(stored, to: "e-\(format)-\(flush).bin")
            let result = try await pythonInflate(path, wbits: wbits(format))
            #expect(result.text == "\(sha256Hex([])) 0", "\(format) \(flush): \(result.stderr)")
            if format == .gzip {
                #expect(try await runTool(["gzip", "-t", path]).status == 0)
            }
        }
        // An empty run of records appends nothing.
        let sink = InMemorySink()
        _ = try await compressPipeline(.init(), sink: sink).process(.test(name: "r", bytes: [], mode: .records))
        #expect(sink.bytes(of: "r") == [])
    }

    @Test("a failing upstream fails the upload; nothing committed")
    func upstreamFailure() async throws {
        let sink = InMemorySink()
        let upload = Upload(metadata: UploadMetadata(name: "f", listener: "t"), body: .failing(after: Array(Self.payload.prefix(10_000))))
        await #expect(throws: SluiceError.self) {
            _ = try await compressPipeline(.init(), sink: sink).process(upload)
        }
        #expect(sink.committed.isEmpty)
    }
}
