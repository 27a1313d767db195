import Logging
import NIOCore

/// Logs failed `accept(2)` calls on a listening socket (`EMFILE` and the like).
///
/// NIO's accept back-off handler, which sits after this one, already pauses accepting
/// for a second after such an error and then goes on serving; it only does so silently.
/// This handler makes the condition visible, at most one warning per second, and passes
/// the error on unchanged.
final class AcceptErrorLogger: ChannelInboundHandler {
    typealias InboundIn = any Channel

    private let logger: Logger
    private let address: String
    private var lastLogged: NIODeadline?
    private var suppressed = 0
    static let interval = TimeAmount.seconds(1)

    init(logger: Logger, address: String) {
        self.logger = logger
        self.address = address
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let now = NIODeadline.now()
        if let last = lastLogged, now - last < Self.interval {
            suppressed += 1
        } else {
            let more = suppressed > 0 ? " (\(suppressed) more since the last warning)" : ""
            logger.warning("cannot accept a connection on \(address): \(error); accepting again shortly\(more)")
            lastLogged = now
            suppressed = 0
        }
        context.fireErrorCaught(error)
    }
}
