import NIOCore
import NIOPosix
import Synchronization

/// What a ``DiscardServer`` has received so far.
public final class DiscardCounters: Sendable {
    let bytesCounter = Atomic<Int>(0)
    let connectionsCounter = Atomic<Int>(0)
    let requestsCounter = Atomic<Int>(0)

    /// Bytes read (HTTP: bodies only).
    public var bytes: Int { bytesCounter.load(ordering: .relaxed) }
    /// Connections accepted.
    public var connections: Int { connectionsCounter.load(ordering: .relaxed) }
    /// Streams completed (TCP: half-closes answered; HTTP: requests answered).
    public var completed: Int { requestsCounter.load(ordering: .relaxed) }
}

/// A server that reads and drops everything, as fast as NIO can: the reference target for checking
/// that `sluice load` is not the bottleneck, and the peer in the generator's own tests.
///
/// TCP: when the client half-closes it writes `{"bytes":N}` and a newline (the receipt shape of
/// Sluice's stream framing) and closes. HTTP: answers each request `201 Created` after its
/// `Content-Length` body, keeping the connection open unless asked to close.
public final class DiscardServer: Sendable {
    /// What the server speaks.
    public enum Mode: String, Sendable {
        case tcp
        case http
    }

    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup
    /// What it has received.
    public let counters: DiscardCounters
    /// The port it listens on (useful when bound to port 0).
    public let port: Int

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup, counters: DiscardCounters) {
        self.channel = channel
        self.group = group
        self.counters = counters
        self.port = channel.localAddress?.port ?? 0
    }

    /// Starts listening on `host:port` (port 0 picks one).
    public static func start(host: String = "127.0.0.1", port: Int = 0, mode proto: Mode, threads: Int = 1) async throws -> DiscardServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counters = DiscardCounters()
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20))
                .childChannelInitializer { channel in
                    counters.connectionsCounter.add(1, ordering: .relaxed)
                    return channel.eventLoop.makeCompletedFuture {
                        switch proto {
                        case .tcp: try channel.pipeline.syncOperations.addHandler(TCPDiscardHandler(counters: counters))
                        case .http: try channel.pipeline.syncOperations.addHandler(HTTPDiscardHandler(counters: counters))
                        }
                    }
                }
                .bind(host: host, port: port).get()
            return DiscardServer(channel: channel, group: group, counters: counters)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Stops listening and shuts the threads down.
    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Runs until the listening channel closes.
    public func wait() async throws {
        try await channel.closeFuture.get()
    }
}

private final class TCPDiscardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let counters: DiscardCounters
    private var bytes = 0

    init(counters: DiscardCounters) { self.counters = counters }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let n = unwrapInboundIn(data).readableBytes
        bytes += n
        counters.bytesCounter.add(n, ordering: .relaxed)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(ChannelEvent.inputClosed) = event as? ChannelEvent {
            counters.requestsCounter.add(1, ordering: .relaxed)
            var receipt = context.channel.allocator.buffer(capacity: 32)
            receipt.writeString("{\"bytes\":\(bytes)}\n")
            context.writeAndFlush(wrapOutboundOut(receipt)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

private final class HTTPDiscardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var head: [UInt8] = []
    private var bodyRemaining = 0
    private var inBody = false
    private var closeAfter = false
    private let counters: DiscardCounters

    init(counters: DiscardCounters) { self.counters = counters }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        while buffer.readableBytes > 0 {
            if inBody {
                let n = Swift.min(bodyRemaining, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: n)
                bodyRemaining -= n
                counters.bytesCounter.add(n, ordering: .relaxed)
                if bodyRemaining == 0 { respond(context: context) }
                continue
            }
            // Accumulate the head up to the blank line.
            let byte = buffer.readInteger(as: UInt8.self)!
            head.append(byte)
            if head.count > 64 << 10 {
                context.close(promise: nil)
                return
            }
            if byte == 10, head.count >= 4, head[head.count - 2] == 13, head[head.count - 3] == 10, head[head.count - 4] == 13 {
                let text = String(decoding: head, as: UTF8.self).lowercased()
                head.removeAll(keepingCapacity: true)
                bodyRemaining = 0
                closeAfter = text.contains("connection: close") || text.hasPrefix("http/1.0")
                for line in text.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    bodyRemaining = Int(line.dropFirst("content-length:".count).trimmingSpaces()) ?? 0
                }
                if bodyRemaining == 0 { respond(context: context) } else { inBody = true }
            }
        }
    }

    private func respond(context: ChannelHandlerContext) {
        inBody = false
        counters.requestsCounter.add(1, ordering: .relaxed)
        var response = context.channel.allocator.buffer(capacity: 64)
        response.writeString("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\(closeAfter ? "Connection: close\r\n" : "")\r\n")
        if closeAfter {
            context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(response), promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(ChannelEvent.inputClosed) = event as? ChannelEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
