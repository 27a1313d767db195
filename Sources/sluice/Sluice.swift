import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SluiceCore
import SluiceRuntime

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A high-concurrency ingest server: TCP and HTTP streams through stages into sinks.",
        discussion: """
        Start on the embedded default (HTTP 127.0.0.1:8080, TCP 127.0.0.1:8888, into ./sluice-data):
          sluice serve
        Send a file:
          curl -T file http://127.0.0.1:8080/upload/file
          sluice send file --to http://127.0.0.1:8080/upload/
          cat file | nc -N 127.0.0.1 8888
        """,
        subcommands: [Serve.self, Validate.self, Plugins.self, Send.self, Load.self]
    )
}

/// Reads the config named on the command line, or the embedded default.
func loadConfig(_ path: String?) throws -> LoadedConfig {
    if let path {
        return try LoadedConfig.load(path: path, registry: .builtin)
    }
    return try LoadedConfig.parse(DefaultConfig.yaml, file: DefaultConfig.fileName, registry: .builtin)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server.",
        discussion: """
        Without --config, runs the embedded default config (print it with `sluice serve --print-default-config`).
        SIGTERM or SIGINT: stop accepting, let in-flight uploads finish within shutdown.drain_timeout, exit 0.
        SIGHUP: re-read the config file; an invalid one is refused and the running one keeps serving.
        """
    )

    @Option(name: .shortAndLong, help: "The config file (YAML or JSON).")
    var config: String?

    @Option(help: "Override the config's log_level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    @Flag(help: "Print the embedded default config and exit.")
    var printDefaultConfig = false

    func run() async throws {
        if printDefaultConfig {
            print(DefaultConfig.yaml, terminator: "")
            return
        }
        MemoryTuning.apply()
        let loaded: LoadedConfig
        do {
            loaded = try loadConfig(config)
        } catch {
            FileHandle.standardError.write(Data("sluice: invalid config\n\(error)\n".utf8))
            throw ExitCode(2)
        }
        var level = loaded.config.logLevel
        if let logLevel {
            guard let parsed = Logger.Level(rawValue: logLevel) else {
                throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
            }
            level = parsed
        }
        let chosenLevel = level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = chosenLevel
            return handler
        }
        let logger = Logger(label: "sluice")
        // Before anything records a metric: metrics made earlier would go nowhere.
        let metrics = AdminService.bootstrapMetrics()
        let announce: @Sendable (ListenerAnnouncement) -> Void = { announcement in
            // Written straight to fd 1 so a pipe reader sees it at once.
            FileHandle.standardOutput.write(Data("sluice: listening: \(announcement)\n".utf8))
        }
        let state = ServingState()
        let supervisor = Supervisor(
            initial: loaded,
            configPath: config,
            registry: .builtin,
            logger: logger,
            state: state,
            onAnnounce: announce
        )
        // A group shuts its services down one at a time, the last first: the listeners
        // drain while the admin listener still answers (`/healthz` then says draining).
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let admin = loaded.config.admin {
            services.append(.init(service: AdminService(
                listen: admin.listen, tls: admin.tlsConfiguration, state: state, registry: metrics, logger: logger, onAnnounce: announce
            )))
        }
        services.append(.init(service: supervisor))
        FileHandle.standardOutput.write(Data("sluice: config \(config ?? DefaultConfig.fileName)\n".utf8))
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            logger.critical("sluice stopped: \(error)")
            throw ExitCode(1)
        }
        print("sluice: stopped")
    }
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config file, like `nginx -t`: exit 0 if valid, else print every problem and exit 2.",
        discussion: "Builds every pipeline and listener without binding or writing anything."
    )

    @Argument(help: "The config file to check.")
    var file: String

    func run() async throws {
        do {
            let loaded = try LoadedConfig.load(path: file, registry: .builtin)
            _ = try loaded.build(logger: Logger(label: "sluice-validate", factory: { _ in SwiftLogNoOpLogHandler() }))
            print("\(file): ok (\(loaded.config.listeners.count) listeners, \(loaded.config.pipelines.count) pipelines)")
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

struct Plugins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the receivers, stages and sinks a config can name, with their keys.",
        discussion: "The output is the body of docs/configuration.md."
    )

    func run() async throws {
        print(ConfigReference.markdown(registry: .builtin), terminator: "")
    }
}
