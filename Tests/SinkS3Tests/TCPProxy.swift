import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A loopback TCP proxy that can be cut: `stop()` closes the listener and every relayed
/// connection, so the client sees the server vanish mid-request.
final class TCPProxy: Sendable {
    let port: Int
    private let channels = Mutex<[any Channel]>([])
    private let stopped = Mutex(false)
    private let task = Mutex<Task<Void, Never>?>(nil)

    private init(port: Int) { self.port = port }

    static func start(forwardingTo target: URL) async throws -> TCPProxy {
        let host = target.host ?? "127.0.0.1"
        let targetPort = target.port ?? 80
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let proxy = TCPProxy(port: server.channel.localAddress?.port ?? 0)
        proxy.track(server.channel)
        let task = Task<Void, Never> {
            _ = try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await client in inbound {
                        proxy.track(client.channel)
                        group.addTask { try? await proxy.relay(client, host: host, port: targetPort) }
                    }
                }
            }
        }
        proxy.task.withLock { $0 = task }
        return proxy
    }

    private func track(_ channel: any Channel) {
        let closeNow = stopped.withLock { stopped in
            if !stopped { channels.withLock { $0.append(channel) } }
            return stopped
        }
        if closeNow { channel.close(promise: nil) }
    }

    private func relay(_ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>, host: String, port: Int) async throws {
        let upstream = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        track(upstream.channel)
        try await client.executeThenClose { clientIn, clientOut in
            try await upstream.executeThenClose { upstreamIn, upstreamOut in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { for try await chunk in clientIn { try await upstreamOut.write(chunk) } }
                    group.addTask { for try await chunk in upstreamIn { try await clientOut.write(chunk) } }
                    // Either side ending ends the relay (no half-close needed for HTTP).
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    /// Closes the listener and every connection; later connection attempts are refused.
    func stop() async {
        stopped.withLock { $0 = true }
        let all = channels.withLock { channels in defer { channels = [] }; return channels }
        for channel in all { try? await channel.close() }
        let task = task.withLock { $0 }
        task?.cancel()
        await task?.value
    }
}
