import Hummingbird
import HummingbirdTLS
import Logging
import Metrics
import NIOCore
import NIOSSL
import Prometheus
import ServiceLifecycle
import SluiceCore
import Synchronization

/// The admin listener (R-R6): `GET /healthz` answers `200 ok` while the server serves
/// and `503 draining` once it is shutting down, `GET /metrics` the Prometheus text of
/// every metric Sluice records.
///
/// Not a plugin: there is one per process, configured by the top-level `admin:` key.
/// `sluice serve` bootstraps swift-metrics with ``AdminService/bootstrapMetrics()``
/// and runs this service beside the ``Supervisor``, ahead of it in the service group so
/// that it stops only after the listeners drained: a load balancer sees `draining` and
/// stops sending, and an operator can watch the in-flight uploads finish on `/metrics`.
public struct AdminService: Service {
    public let listen: ListenAddress
    /// Whether the server is draining (``ServingState``), for `/healthz`.
    public let state: ServingState
    /// HTTPS, if set (the `admin.tls` key, read when the config was decoded).
    public let tls: TLSConfiguration?
    public let registry: PrometheusCollectorRegistry
    public let logger: Logger
    public let onAnnounce: @Sendable (ListenerAnnouncement) -> Void

    /// Upload durations span milliseconds (4 KiB PUTs) to minutes (GiB artifacts).
    public static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300),
    ]

    public init(
        listen: ListenAddress,
        tls: TLSConfiguration? = nil,
        state: ServingState = ServingState(),
        registry: PrometheusCollectorRegistry,
        logger: Logger,
        onAnnounce: @escaping @Sendable (ListenerAnnouncement) -> Void = { _ in }
    ) {
        self.listen = listen
        self.tls = tls
        self.state = state
        self.registry = registry
        self.logger = logger
        self.onAnnounce = onAnnounce
    }

    /// Makes swift-metrics record into a new Prometheus registry and returns it.
    ///
    /// `MetricsSystem.bootstrap` may run once per process: call this once, at startup,
    /// before any pipeline or listener is built (metrics made earlier go nowhere).
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(makeFactory(registry: registry))
        return registry
    }

    /// The swift-metrics factory Sluice uses, writing into `registry`.
    public static func makeFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        return factory
    }

    public func run() async throws {
        let router = Router()
        let state = self.state
        router.get("/healthz") { _, _ -> Response in
            let draining = state.isDraining
            return Response(
                status: draining ? .serviceUnavailable : .ok,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: draining ? "draining\n" : "ok\n"))
            )
        }
        let registry = self.registry
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 * 1024)
            registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let listen = self.listen
        let onAnnounce = self.onAnnounce
        let tls = self.tls
        let app = Application(
            router: router,
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: ApplicationConfiguration(address: .hostname(listen.host, port: listen.port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? listen.port
                let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                onAnnounce(ListenerAnnouncement(listener: "admin", type: "admin", address: "\(host):\(port)", port: port, detail: (tls == nil ? "" : "TLS, ") + "/healthz, /metrics"))
            },
            logger: quiet
        )
        try await app.run()
    }
}

/// Whether the server still takes new uploads: shared by the ``Supervisor``, which marks
/// it draining when a graceful shutdown starts, and the ``AdminService``, whose `/healthz`
/// reports it.
public final class ServingState: Sendable {
    private let draining = Atomic<Bool>(false)

    public init() {}

    /// Set once a graceful shutdown started: listeners stop accepting, in-flight uploads drain.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    public func markDraining() { draining.store(true, ordering: .relaxed) }
}
