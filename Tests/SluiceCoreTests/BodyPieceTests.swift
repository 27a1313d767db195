import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

/// A source that yields two chunks, then one piped piece of `piped` bytes (really in the pipe).
private struct FakeSplicingSource: BodyPieceIterator {
    let pipe: SplicePipe
    let piped: Int
    var step = 0

    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        defer { step += 1 }
        switch step {
        case 0: return .bytes(ByteBuffer(string: "ab"))
        case 1: return .bytes(ByteBuffer(string: "cd"))
        case 2 where allowPipe:
            return .piped(pipe, count: piped)
        default: return nil
        }
    }

    mutating func bytesWaiting() async -> Int { 123 }
}

/// Writes every byte twice: changes the body's length.
private struct Doubling: ChunkTransform {
    mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
        ByteBuffer(bytes: chunk.readableBytesView.flatMap { [$0, $0] })
    }
    mutating func finish() -> ByteBuffer? { nil }
}

private struct DoublingStage: Stage {
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        body.transformed { Doubling() }
    }
}

/// Records the length each body declared when it reached the sink.
private final class LengthRecordingSink: Sink {
    let lengths = Mutex<[Int64?]>([])
    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        lengths.withLock { $0.append(body.length) }
        var count: Int64 = 0
        for try await chunk in body { count += Int64(chunk.readableBytes) }
        return SinkReceipt(location: "nowhere", bytesStored: count)
    }
}

@Suite("body pieces")
struct BodyPieceTests {
    static func body(piped: Int) throws -> UploadBody {
        let pipe = try #require(SplicePipe.make())
        return UploadBody(UploadBody(chunks: [ByteBuffer(string: "abcd")])) {
            FakeSplicingSource(pipe: pipe, piped: piped)
        }
    }

    @Test("layers that only count keep piped pieces; a layer that reads the bytes drops them")
    func layers() throws {
        let body = try Self.body(piped: 10)
        #expect(body.offersPipedPieces)
        #expect(body.limited(to: 100).offersPipedPieces)
        #expect(!body.observed { _ in }.offersPipedPieces)
        #expect(!body.verifying([], context: nil).offersPipedPieces)
        #expect(!UploadBody(chunks: [ByteBuffer(string: "x")]).offersPipedPieces)
    }

    @Test("a declared length survives layers that pass the bytes on unchanged and is dropped by a transform")
    func declaredLength() async throws {
        let body = UploadBody(chunks: [ByteBuffer(string: "abc"), ByteBuffer(string: "de")])
        #expect(body.length == 5)
        #expect(body.declaringLength(nil).length == nil)
        #expect(try Self.body(piped: 10).length == nil)  // a source says nothing unless it declares
        let declared = try Self.body(piped: 10).declaringLength(14)
        #expect(declared.length == 14)
        #expect(declared.limited(to: 100).length == 14)
        #expect(declared.observed { _ in }.length == 14)
        #expect(declared.verifying([], context: nil).length == 14)
        #expect(declared.limited(to: 100).offersPipedPieces)
        #expect(body.transformed { Doubling() }.length == nil)
        #expect(try await body.transformed { Doubling() }.collect().count == 10)

        // Through a pipeline: the sink sees it when no stage changes the bytes.
        let sink = LengthRecordingSink()
        _ = try await Pipeline(name: "plain", stages: [], sink: sink).process(.test(name: "a", bytes: Array("hello".utf8)))
        _ = try await Pipeline(name: "doubled", stages: [("double", DoublingStage())], sink: sink).process(.test(name: "b", bytes: Array("hello".utf8)))
        #expect(sink.lengths.withLock { $0 } == [5, nil])
    }

    @Test("max size counts piped bytes")
    func limitCountsPipedBytes() async throws {
        var within = try Self.body(piped: 96).limited(to: 100).makePieceIterator()
        var seen = 0
        while let piece = try await within.next(allowPipe: true) { seen += piece.count }
        #expect(seen == 100)

        var over = try Self.body(piped: 97).limited(to: 100).makePieceIterator()
        await #expect(throws: SluiceError.self) {
            while try await over.next(allowPipe: true) != nil {}
        }
    }

    @Test("a body without piped pieces reads as pieces of bytes")
    func chunksAsPieces() async throws {
        var pieces = UploadBody(chunks: [ByteBuffer(string: "ab"), ByteBuffer(string: "c")]).makePieceIterator()
        var text = ""
        while let piece = try await pieces.next(allowPipe: true) {
            guard case .bytes(let bytes) = piece else { Issue.record("a piped piece"); return }
            text += String(buffer: bytes)
        }
        #expect(text == "abc")
    }

    @Test("bytes waiting: layers that count pass the source's figure on; a layer that reads the bytes knows none")
    func bytesWaiting() async throws {
        var counted = try Self.body(piped: 10).limited(to: 100).makePieceIterator()
        #expect(await counted.bytesWaiting() == 123)
        var read = try Self.body(piped: 10).observed { _ in }.makePieceIterator()
        #expect(await read.bytesWaiting() == 0)
    }

    @Test("a socket's receive queue: the bytes sent and not yet read")
    func bytesQueued() throws {
        var fds: [CInt] = [-1, -1]
        try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        #expect(SystemCalls.bytesQueued(fds[1]) == 0)
        let bytes = pseudoRandomBytes(count: 3000, seed: 8)
        #expect(bytes.withUnsafeBytes { write(fds[0], $0.baseAddress!, $0.count) } == 3000)
        #expect(SystemCalls.bytesQueued(fds[1]) == 3000)
        var buffer = [UInt8](repeating: 0, count: 1000)
        #expect(read(fds[1], &buffer, 1000) == 1000)
        #expect(SystemCalls.bytesQueued(fds[1]) == 2000)
        #expect(SystemCalls.bytesQueued(-1) == nil)
    }

    @Test("a pipe drains into a file byte-exact")
    func drain() throws {
        let pipe = try #require(SplicePipe.make())
        #expect(pipe.capacity >= 4096)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-pipe-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/out"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        let bytes = pseudoRandomBytes(count: 4000, seed: 5)
        let written = bytes.withUnsafeBytes { write(pipe.writeEnd, $0.baseAddress!, $0.count) }
        #expect(written == 4000)
        try pipe.drain(4000, into: fd, path: path)
        #expect(FileManager.default.contents(atPath: path).map(Array.init) == bytes)
    }
}
