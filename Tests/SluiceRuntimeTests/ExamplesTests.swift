import Foundation
import Logging
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

/// The package root, found from this file's location.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Every config in examples/ must load and build: examples are documentation that cannot rot.
@Suite struct ExamplesTests {
    static var exampleFiles: [String] {
        let dir = packageRoot.appendingPathComponent("examples")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }.sorted()
    }

    @Test func thereAreExamples() {
        #expect(Self.exampleFiles.contains("default.yaml"))
    }

    @Test(arguments: exampleFiles)
    func exampleConfigLoadsAndBuilds(file: String) async throws {
        // Examples read secrets from the environment; give them stand-ins.
        var environment = ProcessInfo.processInfo.environment
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT", "SLUICE_TOKEN"] where environment[key] == nil {
            environment[key] = key == "S3_ENDPOINT" ? "http://127.0.0.1:8333" : "example-\(key.lowercased())"
        }
        // TLS files are read when a config is built: real ones, made for the test.
        let certificates = try TemporaryDirectory(prefix: "sluice-example-tls")
        defer { certificates.remove() }
        if try String(contentsOfFile: packageRoot.appendingPathComponent("examples/\(file)").path, encoding: .utf8).contains("SLUICE_TLS_CERT") {
            let made = try await TestCertificates.make(in: certificates)
            environment["SLUICE_TLS_CERT"] = made.serverCertificate
            environment["SLUICE_TLS_KEY"] = made.serverKey
            environment["SLUICE_CLIENT_CA"] = made.caCertificate
        }
        let path = packageRoot.appendingPathComponent("examples").appendingPathComponent(file).path
        let loaded = try LoadedConfig.load(path: path, registry: .builtin, environment: environment)
        _ = try loaded.build(logger: Logger(label: "examples", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    @Test func embeddedDefaultIsExamplesDefault() throws {
        let path = packageRoot.appendingPathComponent("examples/default.yaml").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == DefaultConfig.yaml, "examples/default.yaml must be a copy of DefaultConfig.yaml")
    }

    @Test func configReferenceIsUpToDate() throws {
        let path = packageRoot.appendingPathComponent("docs/configuration.md").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == ConfigReference.markdown(registry: .builtin), "regenerate with: swift run sluice plugins > docs/configuration.md")
    }
}

/// The README names every plugin a config can select, so docs and code cannot drift apart.
@Suite struct ReadmeTests {
    @Test func readmeListsEveryPlugin() throws {
        let readme = try String(contentsOfFile: packageRoot.appendingPathComponent("README.md").path, encoding: .utf8)
        for kind in ComponentKind.allCases {
            for type in PluginRegistry.builtin.types(of: kind) {
                #expect(readme.contains("| \(kind.rawValue) | [`\(type)`]"), "README.md's plugin table lacks the \(kind.rawValue) \(type)")
            }
        }
    }
}
