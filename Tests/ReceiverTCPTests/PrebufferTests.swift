import Foundation
import NIOCore
import NIOEmbedded
import SluiceCore
import SluiceTestKit
import Testing

@testable import ReceiverTCP

/// `prebuffer`: a connection gathers its first bytes before its upload starts.
@Suite("tcp receiver: prebuffer", .timeLimit(.minutes(1)))
struct PrebufferTests {
    @Test("uploads ending before, at and past the prebuffer land byte-exact", arguments: [1, 65_535, 65_536, 65_537, 1 << 20])
    func sizes(size: Int) async throws {
        let server = try await TestServer.start(listener: "prebuffer: 64KiB")
        defer { server.scratch.remove() }
        let payload = pseudoRandomBytes(count: size, seed: UInt64(size))
        let r = try receipt(try await Client.upload(payload, port: server.port, piece: 7_000))
        #expect(r.bytesReceived == Int64(size))
        #expect(server.scratch.contents("root/" + r.location).map(sha256) == sha256(payload))
        await server.generation.shutdown()
        #expect(server.scratch.temporaries(root: "root").isEmpty)
    }

    /// A holds its first bytes and waits; B then wants the only upload slot. With
    /// `prebuffer: 0`, A's upload started at its first byte and holds the slot, so B is
    /// refused; with a prebuffer, A holds nothing and B is stored. A completes either way.
    @Test("a connection still gathering its first bytes holds no upload slot", arguments: [0, 65_536])
    func noSlotWhileGathering(prebuffer: Int) async throws {
        let server = try await TestServer.start(listener: "prebuffer: \(prebuffer)\nmax_concurrent_uploads: 1\nmax_queued_uploads: 0")
        defer { server.scratch.remove() }
        let a = try await Client.connect(server.port)
        try await a.executeThenClose { aInbound, aOutbound in
            try await aOutbound.write(ByteBuffer(string: "slow start, "))
            if prebuffer == 0 {
                try await server.logs.wait(for: "A started") { _ in server.scratch.temporaries(root: "root").count == 1 }
            } else {
                // Nothing to observe on the server while A gathers: give its bytes time to arrive.
                try await Task.sleep(for: .milliseconds(200))
            }
            let b = try await Client.upload(Array("B".utf8), port: server.port)
            if prebuffer == 0 {
                #expect(errorCode(b) == "overloaded")
            } else {
                let stored = try receipt(b)
                #expect(server.scratch.contents("root/" + stored.location) == Array("B".utf8))
            }
            try await aOutbound.write(ByteBuffer(string: "then the rest"))
            aOutbound.finish()
            let r = try receipt(try await Client.readAll(aInbound))
            #expect(server.scratch.contents("root/" + r.location) == Array("slow start, then the rest".utf8))
        }
        await server.generation.shutdown()
        #expect(server.scratch.files(in: "root").count == (prebuffer == 0 ? 1 : 2))
    }

    @Test("graceful shutdown closes a connection that sent nothing and serves one still gathering")
    func shutdownWhileGathering() async throws {
        // Nothing on the server shows that the gathering connection's bytes arrived; should a
        // loaded test run delay them past the shutdown, it counts as silent: try again.
        var served = false
        for _ in 0..<3 where !served {
            let server = try await TestServer.start(listener: "prebuffer: 64KiB")
            defer { server.scratch.remove() }
            let gathering = try await Client.connect(server.port)
            let silent = try await Client.connect(server.port)
            let line = try? await gathering.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "before shutdown, "))
                return try await silent.executeThenClose { silentInbound, _ in
                    try await Task.sleep(for: .milliseconds(300))  // the bytes reach the server
                    let stopping = Task { await server.generation.shutdown() }
                    defer { stopping.cancel() }
                    try await server.logs.wait(for: "stopping") { $0.message.hasPrefix("stopping: no new connections") }
                    // The silent connection is closed without an answer.
                    #expect(try await Client.readAll(silentInbound) == "")
                    try await outbound.write(ByteBuffer(string: "after shutdown began"))
                    outbound.finish()
                    let line = try await Client.readAll(inbound)
                    await stopping.value
                    return line
                }
            }
            guard let line, !line.isEmpty else { continue }
            let r = try receipt(line)
            #expect(server.scratch.contents("root/" + r.location) == Array("before shutdown, after shutdown began".utf8))
            #expect(server.logs.outcomes.count == 1)
            served = true
        }
        #expect(served)
    }

    @Test("idle_timeout: a connection that sends nothing is told why and closed; it is not an upload")
    func idleWithoutData() async throws {
        let server = try await TestServer.start(listener: "idle_timeout: 300ms")
        defer { server.scratch.remove() }
        let channel = try await Client.connect(server.port)
        let line = try await channel.executeThenClose { inbound, _ in
            try await Client.readAll(inbound)
        }
        #expect(errorCode(line) == "timeout")
        await server.generation.shutdown()
        #expect(server.logs.outcomes.isEmpty)
        #expect(server.scratch.files(in: "root").isEmpty)
    }
}

@Suite("tcp receiver: connections waiting for their first byte")
struct WaitingConnectionsTests {
    private func connection() throws -> (TCPReceiver.Connection, EmbeddedChannel, EventLoopPromise<Bool>) {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let ready = channel.eventLoop.makePromise(of: Bool.self)
        let async = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        return (TCPReceiver.Connection(channel: async, ready: ready.futureResult, race: ShutdownRace(), splicer: nil), channel, ready)
    }

    @Test("graceful shutdown closes silent connections, including one accepted after it began; one that sent a byte stays")
    func closeIdle() throws {
        let waiting = WaitingConnections()
        let (before, beforeChannel, beforeReady) = try connection()
        let (gathering, gatheringChannel, gatheringReady) = try connection()
        #expect(gathering.race.startUpload())  // its first byte arrived
        waiting.add(before)
        waiting.add(gathering)
        waiting.closeIdle()
        let (after, afterChannel, afterReady) = try connection()
        waiting.add(after)  // accepted while the listener was closing
        #expect(!beforeChannel.isActive)
        #expect(!afterChannel.isActive)
        #expect(gatheringChannel.isActive)
        for promise in [beforeReady, gatheringReady, afterReady] { promise.succeed(false) }
        _ = try? gatheringChannel.finish()
    }
}
