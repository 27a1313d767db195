import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import SinkS3

/// The `s3` sink against a real S3 server (SeaweedFS from `scripts/s3-server.sh`).
///
/// Skipped with a message when `S3_ENDPOINT` is unset outside CI; under `CI=true` they
/// always run. Each test writes under its own key prefix, so they run in parallel.
@Suite(.enabled(if: S3Env.enabled, "S3 tests skipped: set S3_ENDPOINT (eval \"$(scripts/s3-server.sh start)\")"), .timeLimit(.minutes(1)))
struct S3SinkTests {
    private func withPipeline<T>(
        _ yaml: String, stages: [(String, any Stage)] = [], _ body: (Pipeline, S3Sink) async throws -> T
    ) async throws -> T {
        let sink = try S3Env.makeSink(yaml)
        let pipeline = Pipeline(name: "s3test", stages: stages, sink: sink)
        do {
            try await pipeline.start()
            let result = try await body(pipeline, sink)
            await pipeline.stop()
            return result
        } catch {
            await pipeline.stop()
            throw error
        }
    }

    @Test func singlePartObjectIsByteExactAndReadableByAwsCli() async throws {
        let prefix = S3Env.uniquePrefix("single")
        let bytes = pseudoRandomBytes(count: 1_000_003, seed: 7)
        let receipt = try await withPipeline(try S3Env.yaml(prefix: prefix)) { pipeline, _ in
            try await pipeline.process(.test(name: "dir/small file.bin", bytes: bytes, chunkSize: 65_536))
        }
        let key = prefix + "dir/small file.bin"
        #expect(receipt.location == "s3://\(S3Env.bucket)/\(key)")
        #expect(receipt.bytesStored == Int64(bytes.count))
        let copy = try await Tool.aws(["s3", "cp", "s3://\(S3Env.bucket)/\(key)", "-"])
        #expect(copy.status == 0, "aws s3 cp failed: \(copy.stderr)")
        #expect(sha256Hex(copy.stdout) == sha256Hex(bytes))
    }

    @Test func multipartObjectIsByteExactAndHeadObjectSeesIt() async throws {
        let prefix = S3Env.uniquePrefix("multi")
        // Three parts of 5 MiB and a tail, fed in chunks that straddle part boundaries.
        let bytes = pseudoRandomBytes(count: 3 * (5 << 20) + 12_345, seed: 11)
        let receipt = try await withPipeline(try S3Env.yaml(prefix: prefix, extra: "parallel_parts: 3")) { pipeline, _ in
            try await pipeline.process(.test(name: "big.bin", bytes: bytes, chunkSize: 100_003))
        }
        #expect(receipt.bytesStored == Int64(bytes.count))
        let key = prefix + "big.bin"
        let head = try await Tool.aws(["s3api", "head-object", "--bucket", S3Env.bucket, "--key", key, "--output", "json"])
        #expect(head.status == 0, "aws s3api head-object failed: \(head.stderr)")
        let json = try JSONSerialization.jsonObject(with: head.stdout) as? [String: Any]
        #expect((json?["ContentLength"] as? Int) == bytes.count)
        #expect((json?["ETag"] as? String)?.hasSuffix("-4\"") == true, "expected a 4-part multipart ETag, got \(String(describing: json?["ETag"]))")
        let stored = try await Tool.object(key)
        #expect(stored.map(sha256Hex) == sha256Hex(bytes))
    }

    @Test func unknownLengthStreamLargerThanThreeParts() async throws {
        let prefix = S3Env.uniquePrefix("stream")
        let generated = GeneratedBody(count: 3 * (5 << 20) + 777_777, chunkSize: 65_537)
        let upload = Upload(metadata: UploadMetadata(name: "stream.bin", listener: "test"), body: UploadBody(generated))
        let receipt = try await withPipeline(try S3Env.yaml(prefix: prefix)) { pipeline, _ in
            try await pipeline.process(upload)
        }
        #expect(receipt.bytesStored == Int64(generated.count))
        let stored = try await Tool.object(prefix + "stream.bin")
        #expect(stored.map(sha256Hex) == sha256Hex(generated.expected()))
    }

    @Test func zeroByteUploadIsARealEmptyObject() async throws {
        let prefix = S3Env.uniquePrefix("empty")
        let receipt = try await withPipeline(try S3Env.yaml(prefix: prefix)) { pipeline, _ in
            try await pipeline.process(.test(name: "empty.txt", bytes: []))
        }
        #expect(receipt.bytesStored == 0)
        let head = try await Tool.aws(["s3api", "head-object", "--bucket", S3Env.bucket, "--key", prefix + "empty.txt", "--output", "json"])
        #expect(head.status == 0, "the empty object does not exist: \(head.stderr)")
        let json = try JSONSerialization.jsonObject(with: head.stdout) as? [String: Any]
        #expect((json?["ContentLength"] as? Int) == 0)
    }

    @Test func bodyFailingMidUploadLeavesNoObjectAndNoPendingUpload() async throws {
        let prefix = S3Env.uniquePrefix("drop")
        // Two full parts are uploaded before the client "drops".
        let body = GeneratedBody(count: 40 << 20, chunkSize: 65_536, failAfter: 12 << 20)
        let upload = Upload(metadata: UploadMetadata(name: "dropped.bin", listener: "test"), body: UploadBody(body))
        let failure = await #expect(throws: SluiceError.self) {
            try await withPipeline(try S3Env.yaml(prefix: prefix)) { pipeline, _ in try await pipeline.process(upload) }
        }
        #expect(failure?.code == .clientAborted)
        #expect(try await Tool.statusOf(prefix + "dropped.bin") == 404)
        #expect(try await Tool.pendingUploads(prefix: prefix) == [])
    }

    @Test func wrongSecretIsAClearErrorAndStoresNothing() async throws {
        let prefix = S3Env.uniquePrefix("badkey")
        let yaml = try S3Env.yaml(prefix: prefix, extra: "secret_access_key: not-the-secret\nretries: 1")
        for size in [1_000, 6 << 20] {  // the PutObject path and the multipart path
            let failure = await #expect(throws: SluiceError.self) {
                try await withPipeline(yaml) { pipeline, _ in
                    try await pipeline.process(.test(name: "x\(size).bin", bytes: pseudoRandomBytes(count: size)))
                }
            }
            #expect(failure?.code == .upstreamFailed)
            let message = failure?.message ?? ""
            #expect(message.contains("403") && message.contains("SignatureDoesNotMatch"), "unclear error: \(message)")
            #expect(try await Tool.statusOf(prefix + "x\(size).bin") == 404)
        }
    }

    @Test func unknownAccessKeyIsAClearErrorWithoutRetries() async throws {
        // (A missing bucket cannot be tested here: SeaweedFS creates buckets on first write.)
        let prefix = S3Env.uniquePrefix("badid")
        let yaml = try S3Env.yaml(prefix: prefix, extra: "access_key_id: AKNOSUCHKEY\nretries: 5")
        let failure = await #expect(throws: SluiceError.self) {
            try await withPipeline(yaml) { pipeline, _ in try await pipeline.process(.test(name: "a.txt", bytes: Array("hi".utf8))) }
        }
        let message = failure?.message ?? ""
        #expect(failure?.code == .upstreamFailed)
        #expect(message.contains("403 InvalidAccessKeyId"), "unclear error: \(message)")
        #expect(!message.contains("attempts"), "a 4xx answer must not be retried: \(message)")
        #expect(try await Tool.statusOf(prefix + "a.txt") == 404)
    }

    @Test func unreachableServerGivesUpAfterBoundedRetries() async throws {
        // A port nothing listens on: every attempt fails to connect.
        let yaml = """
            endpoint: http://127.0.0.1:9
            bucket: \(S3Env.bucket)
            part_size: 5MiB
            retries: 2
            request_timeout: 1s
            """
        let started = ContinuousClock.now
        let failure = await #expect(throws: SluiceError.self) {
            try await withPipeline(yaml) { pipeline, _ in
                try await pipeline.process(.test(name: "lost.bin", bytes: pseudoRandomBytes(count: 6 << 20)))
            }
        }
        #expect(failure?.code == .upstreamFailed)
        #expect(failure?.message.contains("after 3 attempts") == true, "\(failure?.message ?? "")")
        #expect(ContinuousClock.now - started < .seconds(15))
    }

    @Test func serverLostMidUploadFailsBoundedAndLeavesNoObject() async throws {
        let prefix = S3Env.uniquePrefix("lost")
        let target = try S3Env.requireEndpoint()
        let proxy = try await TCPProxy.start(forwardingTo: URL(string: target)!)
        let yaml = """
            endpoint: http://127.0.0.1:\(proxy.port)
            bucket: \(S3Env.bucket)
            prefix: \(prefix)
            part_size: 5MiB
            retries: 2
            request_timeout: 2s
            """
        // The proxy goes away once two parts' worth of bytes went through.
        let body = GeneratedBody(count: 30 << 20, chunkSize: 65_536).observedCutting(after: 11 << 20) {
            await proxy.stop()
        }
        let upload = Upload(metadata: UploadMetadata(name: "lost.bin", listener: "test"), body: body)
        let started = ContinuousClock.now
        let failure = await #expect(throws: SluiceError.self) {
            try await withPipeline(yaml) { pipeline, _ in try await pipeline.process(upload) }
        }
        #expect(failure?.code == .upstreamFailed, "\(String(describing: failure))")
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(try await Tool.statusOf(prefix + "lost.bin") == 404)
        // The abort could not reach the server either; the next start sweeps it away.
        let sweeper = try S3Env.makeSink(try S3Env.yaml(prefix: prefix, extra: "abort_stale_after: 0s"))
        try await sweeper.start()
        await sweeper.stop()
        #expect(try await Tool.pendingUploads(prefix: prefix) == [])
    }

    @Test func sidecarCarriesTheContentDigest() async throws {
        let prefix = S3Env.uniquePrefix("sidecar")
        let bytes = pseudoRandomBytes(count: 6 << 20, seed: 3)
        let receipt = try await withPipeline(try S3Env.yaml(prefix: prefix, extra: "checksum: md5"), stages: [("hash", RecordSHA256())]) { pipeline, _ in
            try await pipeline.process(.test(name: "with-sum.bin", bytes: bytes))
        }
        #expect(receipt.digests["sha256"] == sha256Hex(bytes))
        let sidecar = try await Tool.object(prefix + "with-sum.bin.sha256")
        #expect(sidecar.map { String(decoding: $0, as: UTF8.self) } == "\(sha256Hex(bytes))  with-sum.bin\n")
        #expect(try await Tool.object(prefix + "with-sum.bin").map(sha256Hex) == sha256Hex(bytes))
    }

    @Test func abortStaleUploadsAtStart() async throws {
        let prefix = S3Env.uniquePrefix("stale")
        let created = try await Tool.aws(["s3api", "create-multipart-upload", "--bucket", S3Env.bucket, "--key", prefix + "left-behind.bin"])
        #expect(created.status == 0, "\(created.stderr)")
        // A young upload survives a generous threshold…
        let lenient = try S3Env.makeSink(try S3Env.yaml(prefix: prefix, extra: "abort_stale_after: 1h"))
        #expect(try await lenient.abortStaleUploads(olderThan: .seconds(3600)) == 0)
        await lenient.stop()
        // …and is aborted by a strict one.
        let strict = try S3Env.makeSink(try S3Env.yaml(prefix: prefix, extra: "abort_stale_after: 0s"))
        #expect(try await strict.abortStaleUploads(olderThan: .zero) == 1)
        await strict.stop()
        #expect(try await Tool.pendingUploads(prefix: prefix) == [])
    }

    @Test func concurrentUploadsShareTheMemoryCap() async throws {
        let prefix = S3Env.uniquePrefix("many")
        let yaml = try S3Env.yaml(prefix: prefix, extra: "max_memory: 10MiB\nparallel_parts: 2")
        let payloads = (0..<6).map { pseudoRandomBytes(count: (5 << 20) + 1000 * $0, seed: UInt64($0 + 100)) }
        try await withPipeline(yaml) { pipeline, sink in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, bytes) in payloads.enumerated() {
                    group.addTask { _ = try await pipeline.process(.test(name: "f\(i).bin", bytes: bytes)) }
                }
                try await group.waitForAll()
            }
            #expect(sink.memory.available == 10 << 20)
        }
        for (i, bytes) in payloads.enumerated() {
            #expect(try await Tool.object(prefix + "f\(i).bin").map(sha256Hex) == sha256Hex(bytes))
        }
    }
}

extension GeneratedBody {
    /// This body, calling `action` once (and waiting for it) when `after` bytes have passed.
    func observedCutting(after: Int, _ action: @escaping @Sendable () async -> Void) -> UploadBody {
        UploadBody(self).transformed { CutTransform(after: after, action: action) }
    }
}

private struct CutTransform: ChunkTransform {
    let after: Int
    let action: @Sendable () async -> Void
    var seen = 0
    var fired = false
    mutating func process(_ chunk: ByteBuffer) async throws -> ByteBuffer? {
        seen += chunk.readableBytes
        if seen >= after, !fired {
            fired = true
            await action()
        }
        return chunk
    }
    mutating func finish() -> ByteBuffer? { nil }
}
