import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

/// Uploads through a pipeline without stages into the disk sink are spliced: the bytes go
/// from the socket through a pipe into the file. These tests run that path (no stages, so
/// nothing reads the bytes) and check that splicing really happened; the reset, size-limit
/// and drain-timeout tests in ``TCPReceiverTests`` run it too (their `spliced` cases).
@Suite("tcp receiver splicing into the disk sink", .timeLimit(.minutes(1)))
struct SpliceTests {
    @Test("uploads of every size land byte-exact through the pipe; the bytes past the first read are spliced")
    func byteExact() async throws {
        // The default memory_buffer and prebuffer: small uploads stay in memory, large ones splice.
        let server = try await TestServer.start(listener: "prebuffer: 16KiB", stages: [], sink: "memory_buffer: 64KiB")
        defer { server.scratch.remove() }
        let sizes = [1, 16_384, 65_536, 65_537, 300_001, 3 << 20]
        let payloads = sizes.enumerated().map { pseudoRandomBytes(count: $1, seed: UInt64($0 + 7)) }
        let splicedBefore = SplicePipe.bytesDrained
        let lines = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, payload) in payloads.enumerated() {
                group.addTask {
                    (i, try await Client.upload(payload, port: server.port, piece: 40_000 + i))
                }
            }
            var all: [(Int, String)] = []
            for try await line in group { all.append(line) }
            return all
        }
        for (i, line) in lines {
            let payload = payloads[i]
            let r = try receipt(line)
            #expect(r.bytesReceived == Int64(payload.count))
            #expect(r.bytesStored == Int64(payload.count))
            let stored = try #require(server.scratch.contents("root/" + r.location))
            #expect(stored.count == payload.count)
            #expect(sha256(stored) == sha256(payload), "upload of \(sizes[i]) bytes")
        }
        // The largest has 3 MiB past its first 64 KiB (NIO may read more of it before the
        // switch; other tests may splice meanwhile).
        #expect(SplicePipe.bytesDrained - splicedBefore >= 2 << 20)
        await server.generation.shutdown()
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    @Test("splice: false stores the same bytes by reading them")
    func spliceOff() async throws {
        let server = try await TestServer.start(listener: "splice: false", stages: [])
        defer { server.scratch.remove() }
        let payload = pseudoRandomBytes(count: 1 << 20, seed: 3)
        let r = try receipt(try await Client.upload(payload, port: server.port))
        #expect(sha256(try #require(server.scratch.contents("root/" + r.location))) == sha256(payload))
        await server.generation.shutdown()
    }

    @Test("idle_timeout ends a spliced upload that stalls; nothing is stored")
    func stallWhileSplicing() async throws {
        let server = try await TestServer.start(listener: "idle_timeout: 2s", stages: [])
        defer { server.scratch.remove() }
        var stalled: (line: String, outcome: LogCapture.Entry)?
        for _ in 0..<3 where stalled == nil {
            stalled = try await Client.stall(String(repeating: "some bytes, then silence. ", count: 4000), server: server)
        }
        #expect(errorCode(stalled?.line ?? "") == "timeout")
        #expect(stalled?.outcome.metadata["code"] == "timeout")
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").isEmpty)
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }
}
