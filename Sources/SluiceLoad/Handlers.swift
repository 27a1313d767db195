import NIOCore
import NIOTLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Paces writes to `rate` bytes per second from `start`, allowing a small burst.
struct Pacer {
    let rate: Int
    let start: NIODeadline
    let burst: Int

    init(rate: Int, start: NIODeadline, chunk: Int) {
        self.rate = rate
        self.start = start
        // A tenth of a second's worth at a time keeps the stream smooth at any rate.
        self.burst = Swift.max(1, Swift.min(chunk, rate / 10))
    }

    /// Bytes that may be written now, given `sent` so far (≤ 0: wait).
    func allowance(sent: Int, now: NIODeadline) -> Int {
        let elapsed = Double((now - start).nanoseconds) / 1e9
        return Int(Double(rate) * elapsed) + burst - sent
    }

    /// Whether to wait instead of writing `allowed` bytes with `remaining` left to send:
    /// writes go out a whole burst (or the rest) at a time. Writing whatever trickle had
    /// accrued would, on a slow build, never get back to the event loop — each tiny write
    /// takes as long as the next few bytes take to accrue — and starve its timers.
    func shouldWait(allowed: Int, remaining: Int) -> Bool {
        allowed < Swift.min(burst, remaining)
    }

    /// How long until `burst` more bytes are allowed.
    func wait(sent: Int, now: NIODeadline) -> TimeAmount {
        let due = Double(sent + 1) / Double(rate)  // seconds from start at which byte `sent` may go
        let elapsed = Double((now - start).nanoseconds) / 1e9
        return .nanoseconds(Swift.max(1_000_000, Int64((due - elapsed) * 1e9)))
    }
}

/// One TCP upload (`tcp` and `lines` modes): write the bytes, half-close, then wait for the server to
/// close (its way of saying "done") or, with `expectReceipt`, for its receipt line.
final class StreamUploadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let worker: Worker
    private let size: Int
    private let chunk: Int
    private let expectReceipt: Bool
    private let payload: Payload
    private let started: NIODeadline
    private let streamStart: Int
    private var pacer: Pacer?
    /// Over TLS (see the write loop).
    private lazy var flushEachWrite = worker.shared.tls != nil
    private var sent = 0
    private var writeDone = false
    private var receipt: [UInt8] = []
    private var reported = false
    private var pumpScheduled = false
    private var timeout: Scheduled<Void>?

    init(worker: Worker, ticket: Int, started: NIODeadline) {
        let c = worker.configuration
        self.worker = worker
        self.size = c.bytesPerUpload
        self.chunk = c.chunk
        self.expectReceipt = c.expectReceipt
        self.payload = worker.shared.payload
        self.started = started
        // Start each upload somewhere else in the cycle (whole lines in lines mode), so uploads differ.
        let step = c.mode == .lines ? c.lineSize * 7919 : 1_048_573
        self.streamStart = (ticket &* step) % worker.shared.payload.cycle
        if let rate = c.rate { self.pacer = Pacer(rate: rate, start: started, chunk: c.chunk) }
    }

    func channelActive(context: ChannelHandlerContext) {
        let timeoutAmount = TimeAmount(worker.configuration.timeout)
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: timeoutAmount) { [self] in
            fail("timed out after \(worker.configuration.timeout)")
            resetAndClose(context)
        }
        // Over TLS the bytes wait for the handshake: a half-close sent before it completes
        // would end the connection before the server saw a byte.
        if worker.shared.tls == nil { pump(context: context) }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { pump(context: context) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    private func pump(context: ChannelHandlerContext) {
        guard !writeDone, !pumpScheduled, context.channel.isActive else { return }
        var wrote = false
        while sent < size, context.channel.isWritable {
            var n = Swift.min(chunk, size - sent)
            if let pacer {
                let now = NIODeadline.now()
                let allowed = pacer.allowance(sent: sent, now: now)
                if pacer.shouldWait(allowed: allowed, remaining: size - sent) {
                    pumpScheduled = true
                    context.eventLoop.assumeIsolated().scheduleTask(in: pacer.wait(sent: sent, now: now)) { [self] in
                        pumpScheduled = false
                        pump(context: context)
                    }
                    break
                }
                n = Swift.min(n, allowed)
            }
            context.write(wrapOutboundOut(payload.slice(at: streamStart + sent, length: n)), promise: nil)
            sent += n
            wrote = true
            // Unflushed writes wait in the TLS handler, where the channel's writability does not
            // count them: flush each one, so writability stops the loop (else a whole upload is
            // encrypted at once — 256 connections × 256 MiB ran the generator out of memory).
            if flushEachWrite { context.flush() }
        }
        if sent == size {
            writeDone = true
            context.flush()
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.assumeIsolated().whenFailure { [self] error in
                fail("half-close: \(error)")
                context.close(promise: nil)
            }
            context.close(mode: .output, promise: promise)
        } else if wrote {
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Without --expect-receipt the line is still read, so an error receipt counts as a failure.
        guard !reported, receipt.count <= 1 << 20 else { return }
        let buffer = unwrapInboundIn(data)
        receipt.append(contentsOf: buffer.readableBytesView)
        if receipt.contains(0x0A) {
            let line = String(decoding: receipt.prefix { $0 != 0x0A }, as: UTF8.self)
            if line.contains("\"error\"") {
                fail("receipt reports an error: \(line.prefix(200))")
                context.close(promise: nil)
            } else if !writeDone {
                fail("receipt before the upload was sent")
                context.close(promise: nil)
            } else if expectReceipt {
                succeed()
                context.close(promise: nil)
            }
        } else if receipt.count > 1 << 20 {
            fail("receipt line over 1 MiB")
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail("\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if !reported {
            if writeDone && !expectReceipt {
                succeed()
            } else if writeDone {
                fail("closed without a receipt")
            } else {
                fail("closed by the server after \(sent) of \(size) bytes")
            }
        }
        worker.connectionClosed()
        context.fireChannelInactive()
    }

    private func succeed() {
        guard !reported else { return }
        reported = true
        let latency = (NIODeadline.now() - started).nanoseconds
        worker.recordSuccess(latency: UInt64(Swift.max(0, latency)), bytes: size, records: worker.configuration.linesPerUpload)
        timeout?.cancel()
    }

    /// Records the first failure reason; later ones are consequences.
    private func fail(_ reason: String) {
        guard !reported else { return }
        reported = true
        timeout?.cancel()
        worker.recordFailure(reason, bytesSent: sent)
    }
}

/// HTTP PUT uploads on one connection: one request, or (keep-alive) as many as the worker has tickets.
final class HTTPUploadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let worker: Worker
    private let size: Int
    private let chunk: Int
    private let payload: Payload
    private let keepAlive: Bool
    private var pacer: Pacer?
    /// Over TLS (see the write loop).
    private lazy var flushEachWrite = worker.shared.tls != nil
    private var parser = HTTPResponseParser()
    private var ticket: Int
    private var requestStarted: NIODeadline
    private var sent = 0
    private var inFlight = false
    /// Over TLS, until the handshake completed (the first request waits for it).
    private var awaitingHandshake = false
    private var bodyDone = false
    private var pumpScheduled = false
    private var timeout: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(worker: Worker, firstTicket: Int, started: NIODeadline) {
        let c = worker.configuration
        self.worker = worker
        self.size = c.uploadSize
        self.chunk = c.chunk
        self.payload = worker.shared.payload
        self.keepAlive = c.keepAlive
        self.ticket = firstTicket
        self.requestStarted = started
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        // Over TLS the request waits for the handshake: writes made before it wait in the
        // TLS handler, uncounted by writability, so a whole body would queue there.
        if worker.shared.tls == nil {
            startRequest(context: context, started: requestStarted)
        } else {
            awaitingHandshake = true
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, awaitingHandshake {
            awaitingHandshake = false
            startRequest(context: context, started: requestStarted)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A connection that failed its TLS handshake counts its first upload as failed.
    private func failHandshake(_ reason: String) {
        guard awaitingHandshake else { return }
        awaitingHandshake = false
        worker.recordFailure(reason, bytesSent: 0)
    }

    private func startRequest(context: ChannelHandlerContext, started: NIODeadline) {
        requestStarted = started
        sent = 0
        bodyDone = false
        inFlight = true
        let c = worker.configuration
        if let rate = c.rate { pacer = Pacer(rate: rate, start: started, chunk: chunk) }
        let path = (c.target.httpPath ?? "/") + c.namePrefix + String(ticket)
        var head = context.channel.allocator.buffer(capacity: 160 + path.utf8.count)
        head.writeString("PUT \(path) HTTP/1.1\r\nHost: \(c.target.hostHeader)\r\nContent-Length: \(size)\r\n")
        head.writeString(keepAlive ? "\r\n" : "Connection: close\r\n\r\n")
        context.write(wrapOutboundOut(head), promise: nil)
        timeout?.cancel()
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(c.timeout)) { [self] in
            failRequest("timed out after \(c.timeout)")
            resetAndClose(context)
        }
        pump(context: context, flushAnyway: true)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context, flushAnyway: false) }
        context.fireChannelWritabilityChanged()
    }

    private func pump(context: ChannelHandlerContext, flushAnyway: Bool) {
        guard inFlight, !bodyDone, !pumpScheduled, context.channel.isActive else { return }
        var wrote = flushAnyway
        while sent < size, context.channel.isWritable {
            var n = Swift.min(chunk, size - sent)
            if let pacer {
                let now = NIODeadline.now()
                let allowed = pacer.allowance(sent: sent, now: now)
                if pacer.shouldWait(allowed: allowed, remaining: size - sent) {
                    pumpScheduled = true
                    context.eventLoop.assumeIsolated().scheduleTask(in: pacer.wait(sent: sent, now: now)) { [self] in
                        pumpScheduled = false
                        pump(context: context, flushAnyway: false)
                    }
                    break
                }
                n = Swift.min(n, allowed)
            }
            context.write(wrapOutboundOut(payload.slice(at: (ticket &* 1_048_573 &+ sent) % payload.cycle, length: n)), promise: nil)
            sent += n
            wrote = true
            // As in StreamUploadHandler: over TLS, writability only sees flushed bytes.
            if flushEachWrite { context.flush() }
        }
        if sent == size { bodyDone = true }
        if wrote { context.flush() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let responses: [HTTPResponseParser.Response]
        do {
            responses = try parser.feed(buffer)
        } catch {
            failRequest("bad response: \(error)")
            context.close(promise: nil)
            return
        }
        for response in responses { handle(response, context: context) }
    }

    private func handle(_ response: HTTPResponseParser.Response, context: ChannelHandlerContext) {
        guard inFlight else {
            worker.recordFailure("unsolicited response \(response.status)", bytesSent: 0)
            context.close(promise: nil)
            return
        }
        worker.recordStatus(response.status)
        inFlight = false
        timeout?.cancel()
        let early = !bodyDone
        if (200..<300).contains(response.status) && !early {
            let latency = (NIODeadline.now() - requestStarted).nanoseconds
            worker.recordSuccess(latency: UInt64(Swift.max(0, latency)), bytes: size, records: 0)
        } else {
            worker.recordFailure(early ? "status \(response.status) before the body was sent" : "status \(response.status)", bytesSent: sent)
        }
        if keepAlive, !response.closeConnection, !early, let next = worker.shared.claim() {
            ticket = next
            startRequest(context: context, started: .now())
        } else {
            context.close(promise: nil)
        }
    }

    private func failRequest(_ reason: String) {
        guard inFlight else { return }
        inFlight = false
        worker.recordFailure(reason, bytesSent: sent)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failHandshake("\(error)")
        failRequest("\(error)")
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        failHandshake("closed during the TLS handshake")
        if inFlight {
            if let response = try? parser.feedEOF() {
                handle(response, context: context)
            } else {
                failRequest(bodyDone ? "closed before the response" : "closed by the server after \(sent) of \(size) body bytes")
            }
        }
        self.context = nil
        worker.connectionClosed()
        context.fireChannelInactive()
    }
}

/// A held connection (`hold` mode): trickles a few bytes a second until told to end.
/// With an http:// target it first sends a PUT head with a large Content-Length, so an HTTP
/// server sees a slow upload rather than a malformed request.
final class HoldHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let worker: Worker
    private let rate: Int
    private(set) var sent = 0
    private(set) var isOpen = false
    private var ending = false
    var refused = false
    private var context: ChannelHandlerContext?
    private var ticker: Scheduled<Void>?
    private static var trickle: ByteBuffer { ByteBuffer(repeating: UInt8(ascii: "x"), count: 4096) }

    init(worker: Worker) {
        self.worker = worker
        self.rate = worker.configuration.rate ?? LoadConfiguration.defaultHoldRate
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        isOpen = true
        let c = worker.configuration
        if let path = c.target.httpPath {
            var head = context.channel.allocator.buffer(capacity: 200)
            head.writeString("PUT \(path)\(c.namePrefix)hold-\(ObjectIdentifier(self).hashValue & 0xFFFFFF) HTTP/1.1\r\nHost: \(c.target.hostHeader)\r\nContent-Length: \(1 << 30)\r\n\r\n")
            context.writeAndFlush(wrapOutboundOut(head), promise: nil)
        }
        // Spread the ticks so thousands of connections do not write in the same millisecond.
        scheduleTick(context: context, in: .milliseconds(Int64.random(in: 0..<1000)))
        context.fireChannelActive()
    }

    private func scheduleTick(context: ChannelHandlerContext, in delay: TimeAmount) {
        ticker = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            guard self.context != nil, !ending else { return }
            let n = Swift.min(rate, 4096)
            context.writeAndFlush(wrapOutboundOut(Self.trickle.getSlice(at: 0, length: n)!), promise: nil)
            sent += n
            scheduleTick(context: context, in: .seconds(1))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !ending && isOpen { worker.holdDropped("dropped: \(error)") ; isOpen = false }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        if !ending && isOpen {
            worker.holdDropped("dropped: closed by the server")
        }
        isOpen = false
        self.context = nil
        context.fireChannelInactive()
    }

    /// Resets the connection, so the server discards the partial upload.
    func end() {
        ending = true
        ticker?.cancel()
        if let context { resetAndClose(context) }
    }
}

/// Closes with a reset (SO_LINGER 0) rather than a FIN: an upload cut short must read as aborted,
/// not as a clean end of stream that a server would commit.
func resetAndClose(_ context: ChannelHandlerContext) {
    // Over TLS the close starts below the TLS handler: closing through it would send a
    // close_notify first, a clean end that makes the server commit the cut upload.
    let closer = (try? context.pipeline.syncOperations.context(handlerType: AbortPoint.self)) ?? context
    guard let provider = context.channel as? any SocketOptionProvider else {
        closer.close(promise: nil)
        return
    }
    provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
        closer.close(promise: nil)
    }
}

/// Sits at the head of a TLS connection's pipeline, before the TLS handler: a close
/// issued from here reaches the socket without a TLS close_notify (see ``resetAndClose(_:)``).
final class AbortPoint: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
}
