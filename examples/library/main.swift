// Using Sluice as a library: build a pipeline in code with a stage of your own,
// run uploads through it, and serve it over TCP with a custom sink registered
// next to the built-in plugins.
//
//   swift run sluice-library-example /path/to/file
//
// It stores the file (upper-cased, with its sha256 recorded) under ./library-example-data,
// prints the receipt, then serves the same config-driven way `sluice serve` does on a
// random port for a second and stops.

import Foundation
import Logging
import NIOCore
import SinkDisk
import SluiceCore
import SluiceRuntime
import StageHash

/// A stage of our own: counts newline-terminated lines and logs the count at the end.
struct LineCounter: Stage {
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        body.transformed { Counter(logger: context.logger) }
    }

    struct Counter: ChunkTransform {
        let logger: Logger
        var lines = 0
        mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
            lines += chunk.readableBytesView.lazy.filter { $0 == UInt8(ascii: "\n") }.count
            return chunk
        }
        mutating func finish() -> ByteBuffer? {
            logger.info("counted \(lines) lines")
            return nil
        }
    }
}

/// A sink of our own, made selectable from config by a plugin type.
struct NullSink: Sink {
    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        var bytes: Int64 = 0
        for try await chunk in body { bytes += Int64(chunk.readableBytes) }
        return SinkReceipt(location: "/dev/null", bytesStored: bytes)
    }
}

enum NullSinkPlugin: SinkPlugin {
    struct Configuration: Decodable, Sendable {
        init(from decoder: any Decoder) throws { _ = try decoder.container(keyedBy: StringCodingKey.self) }
    }
    struct StringCodingKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
    static let type = "null"
    static let summary = "Discards every upload (library example)."
    static let keys: [ConfigKey] = []
    static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink { NullSink() }
}

@main
struct LibraryExample {
    static func main() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let path = CommandLine.arguments.dropFirst().first ?? "/etc/hostname"

        // 1. A pipeline in code: our stage, the built-in hash stage, the built-in disk sink.
        let pipeline = Pipeline(
            name: "library",
            stages: [
                ("lines", LineCounter()),
                ("hash", HashStage(HashPlugin.Configuration(algorithm: .sha256), isFirstStage: false)),
            ],
            sink: DiskSink(configuration: .init(root: "library-example-data", onConflict: .unique))
        )
        try await pipeline.start()
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let upload = Upload(
            metadata: UploadMetadata(name: URL(fileURLWithPath: path).lastPathComponent, listener: "library"),
            body: UploadBody(chunks: [ByteBuffer(bytes: data)])
        )
        let receipt = try await pipeline.process(upload)
        print(receipt.jsonLine())
        await pipeline.stop()

        // 2. The config-driven server, with our sink registered next to the built-ins.
        var registry = PluginRegistry.builtin
        registry.register(NullSinkPlugin.self)
        let config = try LoadedConfig.parse("""
            listeners:
              tcp: { type: tcp, listen: "127.0.0.1:0", pipeline: discard }
            pipelines:
              discard:
                stages: [{ type: hash }]
                sink: { type: "null" }
            """, file: "inline.yaml", registry: registry)
        let server = try await ServerGeneration.start(config, logger: Logger(label: "example"))
        print("serving on port \(server.port(of: "tcp") ?? 0)")
        try await Task.sleep(for: .seconds(1))
        await server.shutdown()
    }
}
