import Foundation
import Logging
import SluiceCore
import SluiceRuntime
import Testing

@Suite("spool in a running server", .timeLimit(.minutes(1)))
struct SpoolServerTests {
    @Test("a config with a spool listener forwarding into a tee of two spools runs and drains")
    func runsFromConfig() async throws {
        let root = FileManager.default.temporaryDirectory.path + "/sluice-spoolsrv-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/in/new", withIntermediateDirectories: true)
        for i in 0..<5 {
            _ = FileManager.default.createFile(atPath: root + "/in/new/f\(i)", contents: Data("file \(i)\n".utf8))
        }
        let yaml = """
        listeners:
          forward:
            type: spool
            root: \(root)/in
            pipeline: fanout
            poll_interval: 50ms
        pipelines:
          fanout:
            sink:
              type: tee
              branches:
                - sink: { type: spool, root: \(root)/a, name: "{name}" }
                - sink: { type: spool, root: \(root)/b, name: "{name}", fsync: false }
          logs:
            sink: { type: rotate, root: \(root)/logs, path: app.log, max_size: 1MiB }
        """
        let config = try LoadedConfig.parse(yaml, file: "test.yaml", registry: .builtin)
        let server = try await ServerGeneration.start(config, logger: Logger(label: "test"))
        #expect(server.announcements.map(\.listener) == ["forward"])
        let deadline = ContinuousClock.now + .seconds(30)
        func list(_ sub: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + sub)) ?? []).sorted() }
        while ContinuousClock.now < deadline, !(list("in/new").isEmpty && list("b/new").count == 5) {
            try await Task.sleep(for: .milliseconds(20))
        }
        await server.shutdown()
        #expect(list("in/new").isEmpty)
        #expect(list("a/new") == (0..<5).map { "f\($0)" })
        #expect(list("b/new") == (0..<5).map { "f\($0)" })
        #expect(try String(contentsOfFile: root + "/b/new/f3", encoding: .utf8) == "file 3\n")
        // The rotate sink was started (its root exists) although nothing wrote to it.
        #expect(FileManager.default.fileExists(atPath: root + "/logs/app.log"))
    }
}
