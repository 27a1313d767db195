import Foundation
import NIOCore
import SluiceCore
import SluiceRuntime
import SluiceTestKit
import Testing

/// Graceful shutdown of a generation with several listeners (SIGTERM, or the old side of a reload).
@Suite("graceful shutdown", .timeLimit(.minutes(1)))
struct ShutdownTests {
    @Test("every listener stops accepting at once, while an upload in flight on another finishes and is committed")
    func allListenersStopAtOnce() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        // Two listeners: the group used to signal them one after another (the last first),
        // so `first` kept accepting while `second` drained.
        let yaml = """
        listeners:
          first:
            type: tcp
            listen: 127.0.0.1:0
            pipeline: p
          second:
            type: tcp
            listen: 127.0.0.1:0
            pipeline: p
            prebuffer: 0
        pipelines:
          p:
            sink:
              type: disk
              root: \(scratch.path)/root
              memory_buffer: 0
        shutdown:
          drain_timeout: 20s
        """
        let logs = LogCapture()
        let config = try LoadedConfig.parse(yaml, file: "two.yaml", registry: testRegistry)
        let generation = try await ServerGeneration.start(config, logger: logs.logger)
        let first = try #require(generation.port(of: "first")), second = try #require(generation.port(of: "second"))

        // An upload in flight on `second`: half its bytes sent, the rest held back.
        let head = Array(repeating: UInt8(ascii: "a"), count: 100_000), tail = Array(repeating: UInt8(ascii: "b"), count: 100_000)
        let upload = try await Client.heldUpload(second, head: head, tail: tail)
        // The upload has started once its temporary file exists.
        let started = ContinuousClock.now + .seconds(10)
        while scratch.temporaries(root: "root").isEmpty, ContinuousClock.now < started { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!scratch.temporaries(root: "root").isEmpty, "the upload on `second` did not start")

        let stopping = Task { await generation.shutdown() }
        // Both listeners log that they stop accepting while the upload is still in flight.
        _ = try await logs.wait(for: "both listeners stopping") { _ in
            logs.all.filter { $0.message.hasPrefix("stopping: no new connections") }.count == 2
        }
        // `first` refuses new connections now (before, it accepted and stored them until `second` drained).
        let refused = await Result(catching: { try await Client.upload(Array("late\n".utf8), port: first) })
        if case .success(let answer) = refused {
            #expect(answer.isEmpty, "`first` still accepted an upload during the drain: \(answer)")
        }
        #expect(!scratch.files(in: "root").contains { (scratch.contents("root/" + $0) ?? []) == Array("late\n".utf8) })

        // The upload in flight finishes and is committed.
        let line = try await upload.finish()
        let stored = try receipt(line)
        #expect(stored.bytesStored == 200_000)
        await stopping.value
        #expect(scratch.files(in: "root") == [stored.location])
        #expect(scratch.contents("root/" + stored.location) == head + tail)
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
