import Foundation
import NIOCore
import SluiceCore
import SluiceTestKit
import StageCompress
import StageHash
import Testing
import Synchronization

/// Writes each upload to `root/NAME` and the requested sidecars to `root/NAME.<algorithm>`
/// in `sha256sum -c` format — what a file sink does with ``UploadContext/sidecars``.
private struct SidecarFileSink: Sink {
    let root: String
    func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        var bytes: [UInt8] = []
        for try await chunk in body { bytes += Array(chunk.readableBytesView) }
        let name = context.metadata.name
        try Data(bytes).write(to: URL(fileURLWithPath: "\(root)/\(name)"))
        for (algorithm, hex) in context.sidecars {
            try Data("\(hex)  \(name)\n".utf8).write(to: URL(fileURLWithPath: "\(root)/\(name).\(algorithm)"))
        }
        return SinkReceipt(location: name, bytesStored: Int64(bytes.count))
    }
}

private func hashStage(_ algorithm: DigestAlgorithm = .sha256, label: String? = nil, verify: Bool = true, sidecar: Bool = false, first: Bool = true) -> HashStage {
    HashStage(.init(algorithm: algorithm, label: label, verify: verify, sidecar: sidecar), isFirstStage: first)
}

@Suite("hash", .timeLimit(.minutes(2)))
struct HashTests {
    static let payload = logLikeText(bytes: 150_000) + pseudoRandomBytes(count: 70_000)

    @Test("digests match Python's hashlib and zlib.crc32 across chunk sizes", arguments: DigestAlgorithm.allCases)
    func matchesPython(algorithm: DigestAlgorithm) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = try dir.write(Self.payload, to: "p.bin")
        let expression = algorithm == .crc32
            ? "'%08x' % zlib.crc32(d)"
            : "hashlib.new('\(algorithm.rawValue)', d).hexdigest()"
        let python = try await runTool(["python3", "-c", "import sys,zlib,hashlib; d=open(sys.argv[1],'rb').read(); print(\(expression))", path])
        #expect(python.status == 0, "\(python.stderr)")
        for chunkSize in [1, 7, 4093, 1 << 20] {
            let payload = chunkSize == 1 ? Array(Self.payload.prefix(20_000)) : Self.payload
            let expected = chunkSize == 1
                ? try await runTool(["python3", "-c", "import sys,zlib,hashlib; d=open(sys.argv[1],'rb').read()[:20000]; print(\(expression))", path]).text
                : python.text
            let sink = InMemorySink()
            let pipeline = Pipeline(name: "t", stages: [("hash", hashStage(algorithm))], sink: sink)
            let receipt = try await pipeline.process(.test(name: "h", bytes: payload, chunkSize: chunkSize))
            #expect(receipt.digests[algorithm.rawValue] == expected, "\(algorithm) chunk size \(chunkSize)")
            #expect(sink.bytes(of: "h") == payload)
        }
    }

    @Test("the empty upload's digests are the well-known ones")
    func empty() async throws {
        let stages: [(String, any Stage)] = DigestAlgorithm.allCases.map { ("hash", hashStage($0) as any Stage) }
        let receipt = try await Pipeline(name: "t", stages: stages, sink: InMemorySink()).process(.test(name: "e", bytes: []))
        #expect(receipt.digests["sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(receipt.digests["sha1"] == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(receipt.digests["md5"] == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(receipt.digests["crc32"] == "00000000")
    }

    @Test("a sidecar checks out with sha256sum -c")
    func sidecar() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pipeline = Pipeline(name: "t", stages: [("hash", hashStage(sidecar: true))], sink: SidecarFileSink(root: dir.url.path))
        let receipt = try await pipeline.process(.test(name: "artifact.tar", bytes: Self.payload, chunkSize: 4093))
        let check = try await runTool(["sha256sum", "-c", "artifact.tar.sha256"], in: dir.url.path)
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.text == "artifact.tar: OK")
        let line = try String(contentsOfFile: dir.path("artifact.tar.sha256"), encoding: .utf8)
        #expect(line == "\(receipt.digests["sha256"]!)  artifact.tar\n")
        // Without `sidecar`, none is asked for.
        _ = try await Pipeline(name: "t", stages: [("hash", hashStage())], sink: SidecarFileSink(root: dir.url.path))
            .process(.test(name: "plain.bin", bytes: Self.payload))
        #expect(!FileManager.default.fileExists(atPath: dir.path("plain.bin.sha256")))
    }

    @Test("stage order decides what is hashed: content before compress, stored bytes after")
    func order() async throws {
        let sink = InMemorySink()
        let pipeline = Pipeline(
            name: "t",
            stages: [
                ("hash", hashStage()),
                ("compress", try CompressStage(.init(format: .gzip, level: 6))),
                ("hash", hashStage(label: "stored_sha256", first: false)),
                ("hash", hashStage(first: false)),
            ],
            sink: sink
        )
        let receipt = try await pipeline.process(.test(name: "o", bytes: Self.payload, chunkSize: 4093))
        let stored = try #require(sink.bytes(of: "o"))
        #expect(receipt.digests["sha256"] == sha256Hex(Self.payload))
        #expect(receipt.digests["stored_sha256"] == sha256Hex(stored))
        // The same default label twice: the second is numbered.
        #expect(receipt.digests["sha256_2"] == sha256Hex(stored))
        #expect(receipt.digests["sha256"] != receipt.digests["stored_sha256"])
        #expect(sink.committed.first?.digests == receipt.digests)
    }

    @Test("verify: a matching client digest stores, a wrong one stores nothing")
    func verify() async throws {
        let right = ExpectedDigest(algorithm: .sha256, bytes: Hex.decode(sha256Hex(Self.payload))!, source: "X-Checksum-Sha256")
        var wrongBytes = right.bytes
        wrongBytes[0] ^= 1
        let wrong = ExpectedDigest(algorithm: .sha256, bytes: wrongBytes, source: "X-Checksum-Sha256")
        let stage = hashStage()
        #expect(stage.verifiesClientDigests == [.sha256])
        #expect(hashStage(first: false).verifiesClientDigests.isEmpty)
        #expect(hashStage(verify: false).verifiesClientDigests.isEmpty)

        let sink = InMemorySink()
        let ok = try await Pipeline(name: "t", stages: [("hash", stage)], sink: sink)
            .process(.test(name: "good", bytes: Self.payload, expectedDigests: [right]))
        #expect(ok.digests["sha256"] == sha256Hex(Self.payload))

        // Wrong digest, verified by the stage itself, by the pipeline (verify off), and
        // with the hash behind compress (the pipeline checks the client's bytes).
        let setups: [(String, [(String, any Stage)])] = [
            ("stage", [("hash", stage)]),
            ("pipeline", [("hash", hashStage(verify: false))]),
            ("after compress", [("compress", try CompressStage(.init())), ("hash", hashStage(first: false))]),
        ]
        for (label, stages) in setups {
            let sink = InMemorySink()
            do {
                _ = try await Pipeline(name: "t", stages: stages, sink: sink)
                    .process(.test(name: "bad", bytes: Self.payload, chunkSize: 4093, expectedDigests: [wrong]))
                Issue.record("\(label): accepted a wrong digest")
            } catch let error as SluiceError {
                #expect(error.code == .digestMismatch, "\(label): \(error)")
                #expect(error.message.contains("X-Checksum-Sha256"))
            }
            #expect(sink.committed.isEmpty, "\(label)")
        }
    }

    @Test("the first stage verifies once: the pipeline does not hash the body again")
    func verifiesOnce() async throws {
        // If the pipeline verified too, it would record its own `sha256` digest first
        // and the stage's labelled one would be the only other entry; with the stage
        // covering it, exactly one digest is recorded.
        let right = ExpectedDigest(algorithm: .sha256, bytes: Hex.decode(sha256Hex(Self.payload))!, source: "test")
        let receipt = try await Pipeline(name: "t", stages: [("hash", hashStage(label: "content"))], sink: InMemorySink())
            .process(.test(name: "v", bytes: Self.payload, expectedDigests: [right]))
        #expect(receipt.digests == ["content": sha256Hex(Self.payload)])
    }
}

@Suite("hash configuration")
struct HashConfigTests {
    @Test("keys decode; only the first stage verifies")
    func decode() throws {
        let pipelines = try testRegistry.buildPipelines("""
            pipelines:
              p:
                stages:
                  - type: hash
                    sidecar: true
                  - type: hash
                    algorithm: crc32
                    label: stored_crc32
                    verify: false
                  - type: hash
                    algorithm: md5
                sink: { type: memory }
            """)
        let stages = try #require(pipelines["p"]?.stages.map { $0.stage as? HashStage })
        #expect(stages[0]?.algorithm == .sha256)
        #expect(stages[0]?.label == "sha256")
        #expect(stages[0]?.sidecar == true)
        #expect(stages[0]?.verifiesClientDigests == [.sha256])
        #expect(stages[1]?.label == "stored_crc32")
        #expect(stages[1]?.verifiesClientDigests.isEmpty == true)
        #expect(stages[2]?.verifiesClientDigests.isEmpty == true)
    }

    @Test("bad values and unknown keys are located")
    func errors() {
        let algorithm = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: hash
                    algorithm: sha512
                sink: { type: memory }
            """)
        #expect(algorithm.contains("test.yaml:5: pipelines.p.stages[0].algorithm: expected one of sha256, sha1, md5, crc32, got \"sha512\""), "\(algorithm)")
        let typo = testRegistry.configError("""
            pipelines:
              p:
                stages:
                  - type: hash
                    sidecars: true
                sink: { type: memory }
            """)
        #expect(typo.contains("test.yaml:5: pipelines.p.stages[0].sidecars: unknown key \"sidecars\" (did you mean \"sidecar\"?)"), "\(typo)")
        let flag = testRegistry.configError("""
            pipelines:
              p:
                stages: [{ type: hash, verify: maybe }]
                sink: { type: memory }
            """)
        #expect(flag.contains("test.yaml:3: pipelines.p.stages[0].verify: expected true or false, got \"maybe\""), "\(flag)")
    }
}
