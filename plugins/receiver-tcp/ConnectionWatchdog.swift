import NIOCore
import SluiceCore

/// Watches one connection: reports whether it sent any byte, and enforces the idle timeout.
///
/// The idle clock runs only while the server is waiting for the client: from a
/// `read()` request to the data that answers it. While back pressure holds reads
/// (a slow sink, an upload queued for a slot) the client is not idle, so a slow
/// pipeline never times a client out. On timeout the handler fires a
/// ``SluiceError/Code/timeout`` error: the upload body then fails, nothing is
/// committed, and the connection's task answers and closes the channel.
final class ConnectionWatchdog: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let firstData: EventLoopPromise<Bool>
    private var settled = false
    /// When the oldest unanswered read was requested; `nil` when no read is waiting.
    private var waitingSince: NIODeadline?
    private var timer: Scheduled<Void>?
    private let pace: ReadPace?

    /// - Parameters:
    ///   - timeout: The idle timeout.
    ///   - firstData: Succeeds with `true` at the first byte, `false` if the input ends
    ///     before any byte; fails if the connection fails first.
    ///   - pace: Told whether the pipeline takes chunks slowly (see ``ReadPace``).
    init(timeout: TimeAmount, firstData: EventLoopPromise<Bool>, pace: ReadPace? = nil) {
        self.timeout = timeout
        self.firstData = firstData
        self.pace = pace
    }

    func read(context: ChannelHandlerContext) {
        pace?.willRead()
        if waitingSince == nil {
            waitingSince = .now()
            if timer == nil { schedule(in: timeout, context: context) }
        }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        waitingSince = nil
        pace?.didDeliver(bytes: unwrapInboundIn(data).readableBytes)
        if !settled, unwrapInboundIn(data).readableBytes > 0 {
            settle(.success(true))
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            stop()
            settle(.success(false))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settle(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        settle(.success(false))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        settle(.success(false))
    }

    private func settle(_ result: Result<Bool, any Error>) {
        guard !settled else { return }
        settled = true
        firstData.completeWith(result)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        waitingSince = nil
    }

    private func schedule(in delay: TimeAmount, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.timerFired(context: context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        guard let since = waitingSince else { return }  // data arrived; the next read() re-arms
        let idle = NIODeadline.now() - since
        if idle < timeout {
            schedule(in: timeout - idle, context: context)
            return
        }
        waitingSince = nil
        // The connection's task sees the error (its upload body fails), answers with an
        // error line and closes the channel.
        context.fireErrorCaught(SluiceError(.timeout, "no data from the client for \(ConfigDuration(.nanoseconds(timeout.nanoseconds)))"))
    }
}
