import Foundation
import Logging
import SluiceCore
import Testing

@testable import SinkS3

/// The sink's keys as a config file gives them: defaults, checks, credentials.
@Suite struct ConfigurationTests {
    private func decode(_ yaml: String, environment: [String: String] = [:]) throws -> S3SinkPlugin.Configuration {
        let root = try ConfigNode.parse(yaml, file: "s3.yaml")
        return try ConfigDecoder(file: "s3.yaml", root: root, registry: PluginRegistry(), environment: environment)
            .decode(S3SinkPlugin.Configuration.self)
    }

    private func issues(_ yaml: String) -> String {
        do {
            _ = try decode(yaml)
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func defaults() throws {
        let c = try decode("bucket: b")
        #expect(c.region == "us-east-1" && c.key.text == "{name}" && c.prefix == "")
        #expect(c.partSize == .mebibytes(8) && c.parallelParts == 2 && c.maxMemory == .mebibytes(256))
        #expect(c.retries == 5 && c.checksum == "sha256" && c.addressing == "path" && c.abortStaleAfter == nil)
    }

    @Test func semanticErrorsNameTheKey() {
        #expect(issues("bucket: b\npart_size: 1MiB").contains("s3.yaml:2: part_size: must be at least 5MiB"))
        #expect(issues("bucket: b\nchecksum: crc").contains("checksum: expected sha256, md5 or none"))
        #expect(issues("bucket: b\naddressing: host").contains("addressing: expected \"path\" or \"virtual\""))
        #expect(issues("bucket: b\nendpoint: ftp://x").contains("endpoint: expected an http(s) URL"))
        #expect(issues("bucket: b\nmax_memory: 8MiB\npart_size: 16MiB").contains("max_memory: must be at least part_size"))
        #expect(issues("bucket: b\nkey: \"{nope}\"").contains("unknown placeholder {nope}"))
        #expect(issues("bucket: b\nprefix: ../up/").contains("prefix: is not a safe relative key prefix"))
        #expect(issues("bucket: b\npart_sise: 8MiB").contains("unknown key \"part_sise\""))
        #expect(issues("region: x").contains("missing required key \"bucket\""))
    }

    @Test func credentialsFromConfigEnvironmentOrTheStandardVariables() throws {
        let fromConfig = try decode("bucket: b\naccess_key_id: ${MY_ID}\nsecret_access_key: ${MY_SECRET}", environment: ["MY_ID": "id1", "MY_SECRET": "s1"])
        let sink = try S3SinkPlugin.makeSink(fromConfig, environment: PluginEnvironment(), processEnvironment: [:])
        #expect(sink.client.signer.accessKeyID == "id1" && sink.client.signer.secretAccessKey == "s1")

        let plain = try decode("bucket: b")
        let fromEnv = try S3SinkPlugin.makeSink(plain, environment: PluginEnvironment(), processEnvironment: ["AWS_ACCESS_KEY_ID": "id2", "AWS_SECRET_ACCESS_KEY": "s2"])
        #expect(fromEnv.client.signer.accessKeyID == "id2" && fromEnv.client.signer.secretAccessKey == "s2")
        // Defaults to AWS when no endpoint is given.
        #expect(fromEnv.client.location.hostHeader == "s3.us-east-1.amazonaws.com")

        #expect(throws: ConfigIssue.self) {
            try S3SinkPlugin.makeSink(plain, environment: PluginEnvironment(), processEnvironment: ["AWS_ACCESS_KEY_ID": "id2"])
        }
    }

    @Test func addressingStyles() throws {
        let path = S3Location(endpoint: URL(string: "http://127.0.0.1:8333")!, bucket: "logs", addressing: .path)
        #expect(path.hostHeader == "127.0.0.1:8333")
        #expect(path.path(key: "a b/c+d.txt") == "/logs/a%20b/c%2Bd.txt")
        #expect(path.url(path: path.path(key: "k"), query: [("uploads", "")]) == "http://127.0.0.1:8333/logs/k?uploads")
        let virtual = S3Location(endpoint: URL(string: "https://s3.eu-west-1.amazonaws.com:443")!, bucket: "logs", addressing: .virtual)
        #expect(virtual.hostHeader == "logs.s3.eu-west-1.amazonaws.com")
        #expect(virtual.path(key: "k/1") == "/k/1")
        #expect(virtual.display("k/1") == "s3://logs/k/1")
    }
}
