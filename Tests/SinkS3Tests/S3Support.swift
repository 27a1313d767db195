import Crypto
import Foundation
import Logging
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import SinkS3

/// The S3 server the tests talk to: `S3_ENDPOINT` and the standard `AWS_*` variables,
/// as printed by `scripts/s3-server.sh start`.
enum S3Env {
    static let environment = ProcessInfo.processInfo.environment
    static let endpoint = environment["S3_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 }
    static let bucket = environment["S3_BUCKET"] ?? "sluice-test"
    static let isCI = environment["CI"] == "true"

    /// Without an endpoint the S3 tests are skipped, except under CI where they must run
    /// (and fail loudly if the server is missing).
    static let enabled: Bool = {
        if endpoint == nil && !isCI {
            FileHandle.standardError.write(Data("S3 tests skipped: set S3_ENDPOINT (eval \"$(scripts/s3-server.sh start)\")\n".utf8))
            return false
        }
        return true
    }()

    static func requireEndpoint() throws -> String {
        guard let endpoint else {
            throw SluiceError(.internal, "CI=true but S3_ENDPOINT is not set: .ci/run must start scripts/s3-server.sh")
        }
        return endpoint
    }

    /// A key prefix no other test (or run) uses.
    static func uniquePrefix(_ test: String) -> String {
        "tests/\(test)-\(UUID().uuidString.prefix(8).lowercased())/"
    }

    /// Builds an `s3` sink from YAML keys, as a config file would.
    static func makeSink(_ yaml: String, environment: [String: String] = S3Env.environment) throws -> S3Sink {
        let root = try ConfigNode.parse(yaml, file: "test.yaml")
        let configuration = try ConfigDecoder(file: "test.yaml", root: root, registry: PluginRegistry(), environment: environment)
            .decode(S3SinkPlugin.Configuration.self)
        var logger = Logger(label: "s3-test")
        logger.logLevel = .error
        return try S3SinkPlugin.makeSink(configuration, environment: PluginEnvironment(logger: logger), processEnvironment: environment)
    }

    /// The YAML for a sink on the test server with small parts.
    static func yaml(prefix: String, extra: String = "") throws -> String {
        """
        endpoint: \(try requireEndpoint())
        bucket: \(bucket)
        prefix: \(prefix)
        part_size: 5MiB
        \(extra)
        """
    }
}

/// Runs an external tool (aws-cli, curl) with a deadline.
struct Tool {
    struct Output {
        var status: Int32
        var stdout: Data
        var stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    static func run(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let reader = Task.detached { (out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile()) }
        let watchdog = Task.detached {
            try await Task.sleep(for: timeout)
            if process.isRunning { process.terminate() }
        }
        let (stdout, stderr) = await reader.value
        process.waitUntilExit()
        watchdog.cancel()
        return Output(status: process.terminationStatus, stdout: stdout, stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// `aws …` against the test endpoint.
    static func aws(_ arguments: [String]) async throws -> Output {
        try await run(["aws", "--endpoint-url", try S3Env.requireEndpoint()] + arguments, timeout: .seconds(60))
    }

    /// A signed request with curl (much faster to start than aws-cli).
    static func curl(_ method: String, key: String, query: String = "") async throws -> Output {
        let endpoint = try S3Env.requireEndpoint()
        let env = S3Env.environment
        let user = "\(env["AWS_ACCESS_KEY_ID"] ?? ""):\(env["AWS_SECRET_ACCESS_KEY"] ?? "")"
        let region = env["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let path = "/\(S3Env.bucket)/\(SigV4Signer.uriEncode(key, keepSlash: true))\(query)"
        var args = ["curl", "-s", "-m", "30", "-X", method, "--aws-sigv4", "aws:amz:\(region):s3", "--user", user]
        args.append("\(endpoint)\(path)")
        return try await run(args)
    }

    /// The object's bytes via curl; nil when it does not exist.
    static func object(_ key: String) async throws -> [UInt8]? {
        let head = try await statusOf(key)
        if head == 404 { return nil }
        let out = try await curl("GET", key: key)
        return Array(out.stdout)
    }

    /// HTTP status of HEAD on `key`.
    static func statusOf(_ key: String) async throws -> Int {
        let endpoint = try S3Env.requireEndpoint()
        let env = S3Env.environment
        let user = "\(env["AWS_ACCESS_KEY_ID"] ?? ""):\(env["AWS_SECRET_ACCESS_KEY"] ?? "")"
        let region = env["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let out = try await run([
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "30", "-I", "--aws-sigv4", "aws:amz:\(region):s3", "--user", user,
            "\(endpoint)/\(S3Env.bucket)/\(SigV4Signer.uriEncode(key, keepSlash: true))",
        ])
        return Int(out.text) ?? -1
    }

    /// Pending multipart uploads under `prefix`, per aws-cli.
    static func pendingUploads(prefix: String) async throws -> [String] {
        let out = try await aws(["s3api", "list-multipart-uploads", "--bucket", S3Env.bucket, "--prefix", prefix, "--output", "json"])
        #expect(out.status == 0, "aws s3api list-multipart-uploads failed: \(out.stderr)")
        guard let json = try? JSONSerialization.jsonObject(with: out.stdout) as? [String: Any] else { return [] }
        return (json["Uploads"] as? [[String: Any]] ?? []).compactMap { $0["Key"] as? String }
    }
}

/// A body of `count` deterministic bytes produced on the fly in odd-sized chunks, with no
/// declared length (a stream of unknown size), optionally failing after `failAfter` bytes.
struct GeneratedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let count: Int
    let chunkSize: Int
    var failAfter: Int?

    func makeAsyncIterator() -> Iterator { Iterator(remaining: count, chunkSize: chunkSize, failAfter: failAfter) }

    struct Iterator: AsyncIteratorProtocol {
        var remaining: Int
        let chunkSize: Int
        let failAfter: Int?
        var sent = 0
        var seed: UInt64 = 42

        mutating func next() async throws -> ByteBuffer? {
            if let failAfter, sent >= failAfter { throw SluiceError(.clientAborted, "connection reset by peer") }
            guard remaining > 0 else { return nil }
            let n = Swift.min(chunkSize, remaining)
            seed &+= 1
            let chunk = ByteBuffer(bytes: pseudoRandomBytes(count: n, seed: seed))
            remaining -= n
            sent += n
            return chunk
        }
    }

    /// The bytes the body yields (for comparison).
    func expected() -> [UInt8] {
        var out: [UInt8] = []
        var seed: UInt64 = 42
        var remaining = count
        while remaining > 0 {
            let n = Swift.min(chunkSize, remaining)
            seed &+= 1
            out += pseudoRandomBytes(count: n, seed: seed)
            remaining -= n
        }
        return out
    }
}

/// A stage that records the sha256 of the bytes and asks for a sidecar, standing in for
/// the `hash` stage (a separate plugin this module may not depend on).
struct RecordSHA256: Stage {
    func apply(to body: UploadBody, context: UploadContext) async throws -> UploadBody {
        context.requestSidecar(.sha256)
        return body.transformed { Hashing(context: context) }
    }

    struct Hashing: ChunkTransform {
        let context: UploadContext
        var hash = SHA256()
        mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
            chunk.withUnsafeReadableBytes { hash.update(bufferPointer: $0) }
            return chunk
        }
        mutating func finish() -> ByteBuffer? {
            context.recordDigest(Array(hash.finalize()), algorithm: .sha256)
            return nil
        }
    }
}
