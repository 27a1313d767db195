import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import SinkSpool

private func makeSink(_ configuration: SinkSpool.Configuration) throws -> SpoolSink {
    try #require(try SinkSpool.make(configuration, environment: PluginEnvironment()) as? SpoolSink)
}

/// A body that yields `bytes` in chunks, pausing between them (a slow client).
private func slowBody(_ bytes: [UInt8], chunkSize: Int, pause: Duration) -> UploadBody {
    let chunks = stride(from: 0, to: bytes.count, by: chunkSize).map { ByteBuffer(bytes: bytes[$0..<min($0 + chunkSize, bytes.count)]) }
    return UploadBody(SlowChunks(chunks: chunks, pause: pause))
}

private struct SlowChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let chunks: [ByteBuffer]
    let pause: Duration
    func makeAsyncIterator() -> Iterator { Iterator(chunks: chunks, pause: pause) }
    struct Iterator: AsyncIteratorProtocol {
        let chunks: [ByteBuffer]
        let pause: Duration
        var index = 0
        mutating func next() async throws -> ByteBuffer? {
            guard index < chunks.count else { return nil }
            try await Task.sleep(for: pause)
            defer { index += 1 }
            return chunks[index]
        }
    }
}


private final class WatchState: Sendable {
    let writersDone = Mutex(false)
    let violations = Mutex<[String]>([])
    let checked = Mutex(0)
}

@Suite("spool sink", .timeLimit(.minutes(1)))
struct SinkSpoolTests {
    @Test("new/ never shows a partial file under concurrent writers")
    func newOnlyHoldsCompleteFiles() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        let sink = try makeSink(.init(root: dir.path))
        try await sink.start()
        let pipeline = Pipeline(name: "spool", stages: [], sink: sink)

        // Distinct sizes, so a file seen in new/ tells which upload it must be.
        let payloads = (0..<16).map { pseudoRandomBytes(count: 200_000 + $0 * 1013, seed: UInt64($0 + 1)) }
        let expected = Dictionary(uniqueKeysWithValues: payloads.map { (Int64($0.count), sha256Hex($0)) })
        let state = WatchState()

        async let watcher: Void = {
            var verified = Set<String>()
            while !state.writersDone.withLock({ $0 }) {
                for name in dir.list("new") where !verified.contains(name) {
                    let data = (try? Data(contentsOf: URL(fileURLWithPath: dir.path + "/new/" + name))) ?? Data()
                    if expected[Int64(data.count)] != sha256Hex(data) {
                        state.violations.withLock { $0.append("\(name): \(data.count) bytes") }
                    }
                    verified.insert(name)
                    state.checked.withLock { $0 += 1 }
                }
                try? await Task.sleep(for: .milliseconds(2))
            }
        }()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for payload in payloads {
                group.addTask {
                    let upload = Upload(metadata: UploadMetadata(name: "p", listener: "t"), body: slowBody(payload, chunkSize: 16_384, pause: .milliseconds(3)))
                    let receipt = try await pipeline.process(upload)
                    #expect(receipt.location.hasPrefix("new/"))
                    #expect(receipt.bytesStored == Int64(payload.count))
                }
            }
            try await group.waitForAll()
        }
        state.writersDone.withLock { $0 = true }
        await watcher

        #expect(state.violations.withLock { $0 }.isEmpty)
        #expect(state.checked.withLock { $0 } > 0)
        #expect(dir.list("new").count == 16)
        #expect(dir.list("tmp").isEmpty)
        for name in dir.list("new") {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/new/" + name))
            #expect(expected[Int64(data.count)] == sha256Hex(data))
        }
    }

    @Test("a failing or cancelled upload leaves nothing in tmp/ or new/")
    func failureCleansUp() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        let sink = try makeSink(.init(root: dir.path))
        try await sink.start()
        let pipeline = Pipeline(name: "spool", stages: [], sink: sink)
        let failing = Upload(metadata: UploadMetadata(name: "f", listener: "t"), body: .failing(after: Array(repeating: 1, count: 5000)))
        await #expect(throws: SluiceError.self) { try await pipeline.process(failing) }

        let task = Task {
            try await pipeline.process(Upload(metadata: UploadMetadata(name: "c", listener: "t"), body: slowBody(Array(repeating: 2, count: 100_000), chunkSize: 1000, pause: .milliseconds(5))))
        }
        try await Task.sleep(for: .milliseconds(60))
        task.cancel()
        _ = try? await task.value
        #expect(dir.list("tmp").isEmpty)
        #expect(dir.list("new").isEmpty)
    }

    @Test("over max_size: refused with 507, before writing when the length is declared")
    func maxSize() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        let sink = try makeSink(.init(root: dir.path, maxSize: 100_000))
        try await sink.start()
        let pipeline = Pipeline(name: "spool", stages: [], sink: sink)
        _ = try await pipeline.process(.test(name: "a", bytes: Array(repeating: 1, count: 60_000)))

        // Declared: refused before a byte is read.
        let declared = Upload.test(name: "b", bytes: Array(repeating: 2, count: 60_000))
        do {
            _ = try await pipeline.process(declared)
            Issue.record("expected a refusal")
        } catch let error as SluiceError {
            #expect(error.code == .insufficientStorage)
            #expect(error.code.httpStatus == 507)
        }
        // Undeclared: refused while streaming, and cleaned up.
        let undeclared = Upload(
            metadata: UploadMetadata(name: "c", listener: "t"), body: .bytes(Array(repeating: 3, count: 60_000), chunkSize: 8192).declaringLength(nil)
        )
        await #expect(throws: SluiceError.self) { try await pipeline.process(undeclared) }
        #expect(dir.list("tmp").isEmpty)
        #expect(dir.list("new").count == 1)

        // A reader takes the file away: there is room again.
        for name in dir.list("new") { try FileManager.default.removeItem(atPath: dir.path + "/new/" + name) }
        try await Task.sleep(for: SpoolUsage.rescanInterval)
        _ = try await pipeline.process(.test(name: "d", bytes: Array(repeating: 4, count: 60_000)))
        #expect(dir.list("new").count == 1)
    }

    @Test("start removes temporary files of dead processes only")
    func sweepsStaleTemporaries() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.path + "/tmp", withIntermediateDirectories: true)
        let dead = "2147483000-\(UUID().uuidString.lowercased())"
        let mine = "\(getpid())-\(UUID().uuidString.lowercased())"
        _ = FileManager.default.createFile(atPath: dir.path + "/tmp/" + dead, contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: dir.path + "/tmp/" + mine, contents: Data("y".utf8))
        let sink = try makeSink(.init(root: dir.path))
        try await sink.start()
        #expect(dir.list("tmp") == [mine])
        #expect(dir.list("new").isEmpty && dir.list("cur").isEmpty)
    }

    @Test("names: templates render into one flat file name; / is stored as %2F")
    func names() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        let sink = try makeSink(.init(root: dir.path, name: try NameTemplate("{uuid}/{name}")))
        try await sink.start()
        let id = UUID()
        let upload = Upload(metadata: UploadMetadata(id: id, name: "dir/file%.txt", listener: "t"), body: .string("hello"))
        let receipt = try await Pipeline(name: "spool", stages: [], sink: sink).process(upload)
        let expected = "\(id.uuidString.lowercased())%2Fdir%2Ffile%25.txt"
        #expect(receipt.location == "new/" + expected)
        #expect(dir.list("new") == [expected])
        #expect(SpoolFileName.encode(".hidden") == "%2Ehidden")
    }

    @Test("a name that is already in new/ is a conflict, never a replacement")
    func conflict() async throws {
        let dir = try TemporaryDirectory(prefix: "sluice-spool")
        defer { dir.remove() }
        let sink = try makeSink(.init(root: dir.path, name: try NameTemplate("{name}")))
        try await sink.start()
        let pipeline = Pipeline(name: "spool", stages: [], sink: sink)
        _ = try await pipeline.process(.test(name: "same", bytes: Array("first".utf8)))
        do {
            _ = try await pipeline.process(.test(name: "same", bytes: Array("second".utf8)))
            Issue.record("expected a conflict")
        } catch let error as SluiceError {
            #expect(error.code == .conflict)
        }
        #expect(try String(contentsOfFile: dir.path + "/new/same", encoding: .utf8) == "first")
        #expect(dir.list("tmp").isEmpty)
    }
}
