import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import SinkRotate

@Suite("rotate sink", .timeLimit(.minutes(1)))
struct SinkRotateTests {
    @Test("32 concurrent senders: rotated files hold exactly the lines sent, none split or merged, in order per sender")
    func concurrentSenders() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: .kibibytes(64), keep: 10_000))
        try await sink.start()
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)

        var plans: [[[String]]] = []
        var rng = SplitMix(state: 42)
        for sender in 0..<32 {
            var chunks: [[String]] = []
            var n = 0
            for _ in 0..<Int.random(in: 20...60, using: &rng) {
                var chunk: [String] = []
                for _ in 0..<Int.random(in: 1...12, using: &rng) {
                    let filler = String(repeating: "x", count: Int.random(in: 0...400, using: &rng))
                    chunk.append("s\(sender)-\(n) \(filler)")
                    n += 1
                }
                chunks.append(chunk)
            }
            plans.append(chunks)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for plan in plans {
                group.addTask { _ = try await pipeline.process(recordsUpload(plan)) }
            }
            try await group.waitForAll()
        }
        await sink.stop()

        let sent = plans.flatMap { $0.flatMap { $0 } }
        let stored = try allLines(directory: dir.path, base: "app.log")
        #expect(stored.count == sent.count)
        #expect(stored.sorted() == sent.sorted())
        // Each sender's lines keep their order across rotated files.
        var next: [String: Int] = [:]
        for line in stored {
            let id = line.split(separator: " ")[0].split(separator: "-")
            let sender = String(id[0])
            let n = Int(id[1])!
            #expect(n == next[sender, default: 0], "line \(line.prefix(20)) out of order")
            next[sender] = n + 1
        }
        // Rotation happened, and no file was taken past max_size by more than one chunk.
        let rotated = dir.list().filter { $0.hasPrefix("app.log.") }
        #expect(rotated.count > 3)
        for name in rotated {
            #expect(Int64(read(dir.path + "/" + name).count) <= ByteSize.kibibytes(64).bytes)
        }
    }

    @Test("rotates by size before a chunk would pass max_size; app.log.1 is the newest")
    func rotationBySize() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: 1000))
        try await sink.start()
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        // Seven chunks of 299 + 1 bytes: three fit in 1000 bytes.
        for i in 0..<7 {
            let line = "chunk\(i)" + String(repeating: ".", count: 299 - 6)
            _ = try await pipeline.process(recordsUpload([[line]]))
        }
        await sink.stop()
        #expect(dir.list().filter { !$0.hasPrefix(".") } == ["app.log", "app.log.1", "app.log.2"])
        #expect(read(dir.path + "/app.log.2").count == 900)
        #expect(read(dir.path + "/app.log.1").count == 900)
        #expect(read(dir.path + "/app.log").count == 300)
        #expect(String(decoding: read(dir.path + "/app.log.1"), as: UTF8.self).hasPrefix("chunk3"))
        #expect(String(decoding: read(dir.path + "/app.log"), as: UTF8.self).hasPrefix("chunk6"))
    }

    @Test("a chunk larger than max_size goes into a file of its own, whole")
    func oversizedChunk() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: 100, fsync: .everyChunk))
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        _ = try await pipeline.process(recordsUpload([["small"]]))
        _ = try await pipeline.process(recordsUpload([[String(repeating: "B", count: 500)]]))
        _ = try await pipeline.process(recordsUpload([["after"]]))
        await sink.stop()
        #expect(read(dir.path + "/app.log.2") == Array("small\n".utf8))
        #expect(read(dir.path + "/app.log.1").count == 501)
        #expect(read(dir.path + "/app.log") == Array("after\n".utf8))
    }

    @Test("rotates by age, on write and by the timer, with an injected clock")
    func rotationByAge() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let clock = TestClock()
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxAge: .seconds(3600)), clock: clock)
        try await sink.start()
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        _ = try await pipeline.process(recordsUpload([["first"]]))
        clock.advance(1800)
        _ = try await pipeline.process(recordsUpload([["second"]]))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/app.log.1"))
        clock.advance(1801)
        _ = try await pipeline.process(recordsUpload([["third"]]))
        await sink.waitForFinishers()
        #expect(read(dir.path + "/app.log.1") == Array("first\nsecond\n".utf8))
        #expect(read(dir.path + "/app.log") == Array("third\n".utf8))

        // No write: the timer rotates the old file.
        clock.advance(3601)
        let rotated = await eventually(20) { FileManager.default.fileExists(atPath: dir.path + "/app.log.2") }
        #expect(rotated)
        await sink.stop()
        #expect(read(dir.path + "/app.log.1") == Array("third\n".utf8))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/app.log"))
    }

    @Test("keeps only `keep` rotated files, the newest")
    func keepPruning() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: 10, keep: 3, fsync: .never))
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        for i in 0..<10 {
            _ = try await pipeline.process(recordsUpload([["line-\(i)"]]))
        }
        await sink.stop()
        #expect(dir.list().filter { !$0.hasPrefix(".") } == ["app.log", "app.log.1", "app.log.2", "app.log.3"])
        #expect(read(dir.path + "/app.log") == Array("line-9\n".utf8))
        #expect(read(dir.path + "/app.log.1") == Array("line-8\n".utf8))
        #expect(read(dir.path + "/app.log.3") == Array("line-6\n".utf8))
    }

    @Test("timestamp naming sorts by age; max_total bounds the rotated bytes")
    func timestampNamingAndMaxTotal() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let clock = TestClock()
        let sink = try makeSink(.init(path: try NameTemplate("{listener}.log"), root: dir.path, maxSize: 10, keep: 100, maxTotal: 25, naming: .timestamp), clock: clock)
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        for i in 0..<6 {
            _ = try await pipeline.process(recordsUpload([["line-\(i)"]], listener: "edge"))
            clock.advance(1)
        }
        await sink.stop()
        let rotated = dir.list().filter { $0.hasPrefix("edge.log.") }
        // 7 bytes each: three fit in 25 bytes.
        #expect(rotated.count == 3)
        #expect(rotated.allSatisfy { $0.count == "edge.log.".count + 20 && $0.hasSuffix("Z") })
        #expect(rotated.map { read(dir.path + "/" + $0) } == ["line-2\n", "line-3\n", "line-4\n"].map { Array($0.utf8) })
        #expect(read(dir.path + "/edge.log") == Array("line-5\n".utf8))
    }

    @Test("compressed rotated files pass gzip -t and hold every line; no temporary file is left")
    func compressedRotation() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path, maxSize: .kibibytes(16), keep: 1000, compressRotated: true, compressLevel: 1))
        try await sink.start()
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        var sent: [String] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sender in 0..<8 {
                let lines = (0..<400).map { "sender \(sender) line \($0) " + String(repeating: "z", count: $0 % 97) }
                sent += lines
                group.addTask {
                    _ = try await pipeline.process(recordsUpload(stride(from: 0, to: lines.count, by: 5).map { Array(lines[$0..<min($0 + 5, lines.count)]) }))
                }
            }
            try await group.waitForAll()
        }
        await sink.stop()
        let gz = dir.list().filter { $0.hasSuffix(".gz") }
        #expect(gz.count > 5)
        for name in gz {
            #expect(try run("/usr/bin/gzip", ["-t", dir.path + "/" + name]) == 0, "\(name) fails gzip -t")
        }
        #expect(dir.list().filter { $0.hasPrefix(".") && $0 != ".rotate-tmp" }.isEmpty)
        #expect(try allLines(directory: dir.path, base: "app.log").sorted() == sent.sorted())
    }

    @Test("a restart continues the active file and cuts off a torn record")
    func restartCutsTornRecord() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let configuration = SinkRotate.Configuration(path: try NameTemplate("app.log"), root: dir.path, maxSize: .mebibytes(1))
        let first = try makeSink(configuration)
        try await first.start()
        _ = try await Pipeline(name: "logs", stages: [], sink: first).process(recordsUpload([["one", "two"], ["three"]]))
        await first.stop()

        // A crash mid-write: half a record at the end.
        let handle = try #require(FileHandle(forWritingAtPath: dir.path + "/app.log"))
        handle.seekToEndOfFile()
        handle.write(Data("torn recor".utf8))
        try handle.close()

        let second = try makeSink(configuration)
        try await second.start()
        #expect(read(dir.path + "/app.log") == Array("one\ntwo\nthree\n".utf8))
        _ = try await Pipeline(name: "logs", stages: [], sink: second).process(recordsUpload([["four"]]))
        await second.stop()
        #expect(read(dir.path + "/app.log") == Array("one\ntwo\nthree\nfour\n".utf8))
    }

    @Test("a second sink of the same process (a config reload) never cuts the first one's write in progress")
    func reloadDoesNotCut() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let configuration = SinkRotate.Configuration(path: try NameTemplate("app.log"), root: dir.path)
        let old = try makeSink(configuration)
        try await old.start()
        _ = try await Pipeline(name: "logs", stages: [], sink: old).process(recordsUpload([["one"]]))
        // What a write in progress looks like from outside.
        let handle = try #require(FileHandle(forWritingAtPath: dir.path + "/app.log"))
        handle.seekToEndOfFile()
        handle.write(Data("in progre".utf8))
        try handle.close()
        let new = try makeSink(configuration)
        try await new.start()
        #expect(read(dir.path + "/app.log") == Array("one\nin progre".utf8))
        await old.stop()
        await new.stop()
    }

    @Test("a restart cuts a torn gzip member off a compressed active file")
    func restartCutsTornGzipMember() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        func member(_ text: String) throws -> ByteBuffer {
            try Deflater(format: .gzip, level: 6).finish(ByteBuffer(string: text))
        }
        let configuration = SinkRotate.Configuration(path: try NameTemplate("app.log.gz"), root: dir.path)
        let first = try makeSink(configuration)
        let upload = Upload(metadata: UploadMetadata(name: "x", listener: "tcp", mode: .records), body: UploadBody(chunks: [try member("a\nb\n"), try member("c\n")]))
        _ = try await Pipeline(name: "logs", stages: [], sink: first).process(upload)
        await first.stop()
        let good = read(dir.path + "/app.log.gz")

        var torn = try member("torn\n")
        let half = torn.readBytes(length: torn.readableBytes / 2)!
        let handle = try #require(FileHandle(forWritingAtPath: dir.path + "/app.log.gz"))
        handle.seekToEndOfFile()
        handle.write(Data(half))
        try handle.close()
        #expect(try run("/usr/bin/gzip", ["-t", dir.path + "/app.log.gz"]) != 0)

        let second = try makeSink(configuration)
        try await second.start()
        #expect(read(dir.path + "/app.log.gz") == good)
        let more = Upload(metadata: UploadMetadata(name: "x", listener: "tcp", mode: .records), body: UploadBody(chunks: [try member("d\n")]))
        _ = try await Pipeline(name: "logs", stages: [], sink: second).process(more)
        await second.stop()
        #expect(try run("/usr/bin/gzip", ["-t", dir.path + "/app.log.gz"]) == 0)
        #expect(try gunzip(read(dir.path + "/app.log.gz")) == Array("a\nb\nc\nd\n".utf8))
    }

    @Test("a stream is appended whole (with a final newline) or not at all")
    func streamsAreUnits() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("app.log"), root: dir.path))
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        let receipt = try await pipeline.process(.test(name: "batch", bytes: Array("x\ny\nno newline".utf8), chunkSize: 3))
        #expect(receipt.location == "app.log")
        #expect(receipt.bytesStored == 15)
        let failing = Upload(metadata: UploadMetadata(name: "bad", listener: "tcp"), body: .failing(after: Array("partial\nlines\n".utf8)))
        await #expect(throws: SluiceError.self) { try await pipeline.process(failing) }
        _ = try await pipeline.process(recordsUpload([["after"]]))
        await sink.stop()
        #expect(read(dir.path + "/app.log") == Array("x\ny\nno newline\nafter\n".utf8))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/.rotate-tmp")) ?? []).isEmpty)
    }

    @Test("start finishes rotations a crash interrupted")
    func startFinishesLeftovers() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.path + "/sub", withIntermediateDirectories: true)
        let stamp = Stamp.format(1_795_000_000_000)
        _ = FileManager.default.createFile(atPath: dir.path + "/sub/.app.log.\(stamp).rotated", contents: Data("old\n".utf8))
        _ = FileManager.default.createFile(atPath: dir.path + "/sub/.app.log.\(stamp).gz.tmp", contents: Data("garbage".utf8))
        let sink = try makeSink(.init(path: try NameTemplate("{listener}/app.log"), root: dir.path, compressRotated: true))
        try await sink.start()
        await sink.waitForFinishers()
        await sink.stop()
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/sub")) ?? []).sorted()
        #expect(names == ["app.log.1.gz"])
        #expect(try gunzip(read(dir.path + "/sub/app.log.1.gz")) == Array("old\n".utf8))
    }

    @Test("rejects paths into the sink's reserved names and bad keys")
    func validation() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-rotate")
        defer { dir.remove() }
        let sink = try makeSink(.init(path: try NameTemplate("{name}"), root: dir.path))
        let pipeline = Pipeline(name: "logs", stages: [], sink: sink)
        await #expect(throws: SluiceError.self) { try await pipeline.process(recordsUpload([["x"]], name: ".rotate-tmp/x")) }
        await #expect(throws: SluiceError.self) { try await pipeline.process(recordsUpload([["x"]], name: "../x")) }

        var registry = PluginRegistry()
        registry.register(SinkRotate.self)
        let yaml = """
        pipelines:
          logs:
            sink:
              type: rotate
              path: app.log
              root: /tmp/x
              naming: weekly
              fsync: sometimes
          other:
            sink: { type: rotate, path: ../escape.log, root: /tmp/x }
        """
        #expect {
            try LoadedConfig.parse(yaml, file: "t.yaml", registry: registry)
        } throws: { error in
            let text = "\(error)"
            return text.contains("pipelines.logs.sink.naming") && text.contains("numbered, timestamp")
                && text.contains("pipelines.other.sink.path")
        }
    }
}
