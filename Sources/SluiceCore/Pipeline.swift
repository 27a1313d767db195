import Foundation
import Logging
import Metrics
import Synchronization

/// Stages and a sink: what one upload flows through.
///
/// Built from a config (``PipelineSpec``) or in code:
///
/// ```swift
/// let pipeline = Pipeline(
///     name: "archive",
///     stages: [("hash", HashStage(.sha256))],
///     sink: try DiskSink(root: "/srv/archive")
/// )
/// let receipt = try await pipeline.process(upload)
/// ```
///
/// `process(_:)` verifies client digests, applies the stages in order, lets the
/// sink commit, records metrics, logs one line for the outcome and returns the
/// receipt. Any error leaves nothing committed (that is the sink's contract).
public struct Pipeline: Sendable {
    public let name: String
    /// The stages, each with the name used in metrics (its `type:` when built from config).
    public let stages: [(name: String, stage: any Stage)]
    public let sink: any Sink
    public let logger: Logger
    fileprivate let metrics: PipelineMetrics

    public init(name: String, stages: [(String, any Stage)], sink: any Sink, logger: Logger = Logger(label: "sluice")) {
        self.name = name
        self.stages = stages.map { (name: $0.0, stage: $0.1) }
        self.sink = sink
        var logger = logger
        logger[metadataKey: "pipeline"] = "\(name)"
        self.logger = logger
        self.metrics = PipelineMetrics(pipeline: name, stageNames: stages.map(\.0))
    }

    /// Prepares the sink (creates directories, sweeps stale temporary files…).
    /// Call once before the first upload.
    public func start() async throws {
        try await sink.start()
    }

    /// Lets the sink release what it holds (closes active files). Call after the last upload.
    public func stop() async {
        await sink.stop()
    }

    /// Runs one upload through the stages into the sink.
    ///
    /// - Parameter upload: The upload; its body is consumed.
    /// - Returns: The receipt, once the sink committed.
    /// - Throws: ``SluiceError`` describing why nothing was committed.
    public func process(_ upload: Upload) async throws -> Receipt {
        // The async part holds only what it must across its suspensions (the run's
        // state is one reference): every connection keeps this frame for the whole of
        // its upload, so its size is memory per held connection. The work before and
        // after the streaming is synchronous and leaves nothing in the frame.
        let run = UploadRun(upload.metadata, pipeline: self)
        do {
            var body = prepareBody(upload.body, run: run)
            for (i, entry) in stages.enumerated() {
                body = try await entry.stage.apply(to: body, context: run.context)
                body = run.meter.wrap(body, index: i + 1)
            }
            return committed(try await sink.store(body, context: run.context), run: run)
        } catch {
            throw failed(error, run: run)
        }
    }

    /// The receiver's body, counted, metered and verified against client digests no stage covers.
    private func prepareBody(_ body: UploadBody, run: UploadRun) -> UploadBody {
        let context = run.context
        // One layer both meters the client's body and counts it as received.
        var body = run.meter.wrap(body, index: 0, counting: context)
        let covered = stages.first?.stage.verifiesClientDigests ?? []
        let pending = run.metadata.expectedDigests.filter { !covered.contains($0.algorithm) }
        if !pending.isEmpty {
            body = body.verifying(pending, context: context)
        }
        return body
    }

    /// The receipt of a committed upload; records its metrics and logs its line.
    private func committed(_ stored: SinkReceipt, run: UploadRun) -> Receipt {
        let context = run.context
        let metadata = run.metadata
        let digests = Dictionary(context.digests.map { ($0.label, $0.hex) }, uniquingKeysWith: { a, _ in a })
        let receipt = Receipt(
            name: metadata.name,
            pipeline: name,
            bytesReceived: context.bytesReceived,
            bytesStored: stored.bytesStored,
            digests: digests,
            location: stored.location,
            id: metadata.id.uuidString.lowercased()
        )
        let elapsed = ContinuousClock.now - run.started
        metrics.record(outcome: "stored", stored: receipt.bytesStored, elapsed: elapsed, meter: run.meter)
        // Metadata passed with the call is built only when the line is logged.
        logger.info("upload stored", metadata: {
            var line = UploadContext.logMetadata(metadata)
            line["bytes"] = "\(receipt.bytesReceived)"
            line["stored"] = "\(receipt.bytesStored)"
            line["location"] = "\(receipt.location)"
            line["ms"] = "\(Self.milliseconds(elapsed))"
            for (label, hex) in digests { line[label] = "\(hex)" }
            if let remote = metadata.remoteAddress { line["remote"] = "\(remote)" }
            return line
        }())
        return receipt
    }

    /// The failure as a ``SluiceError``; records its metrics and logs its line.
    private func failed(_ error: any Error, run: UploadRun) -> SluiceError {
        let failure = SluiceError.from(error)
        let context = run.context
        let elapsed = ContinuousClock.now - run.started
        metrics.record(outcome: failure.code.rawValue, stored: 0, elapsed: elapsed, meter: run.meter)
        var line = UploadContext.logMetadata(run.metadata)
        line["bytes"] = "\(context.bytesReceived)"
        line["code"] = "\(failure.code.rawValue)"
        line["ms"] = "\(Self.milliseconds(elapsed))"
        if let remote = run.metadata.remoteAddress { line["remote"] = "\(remote)" }
        switch failure.code {
        case .internal, .upstreamFailed, .insufficientStorage:
            logger.error("upload failed: \(failure.message)", metadata: line)
        default:
            logger.warning("upload rejected: \(failure.message)", metadata: line)
        }
        return failure
    }

    private static func milliseconds(_ d: Duration) -> Int64 {
        let c = d.components
        return c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000
    }
}

extension UploadBody {
    /// Returns a body that fails with ``SluiceError/Code/digestMismatch`` at its end
    /// if its bytes do not match every expected digest.
    ///
    /// - Parameters:
    ///   - expected: The digests the bytes must have.
    ///   - context: Where to record each matching digest not recorded yet, or `nil` to
    ///     record nothing (for bytes that are not the ones stored, such as a body before decoding).
    ///   - subject: What the bytes are, for the error message.
    public func verifying(_ expected: [ExpectedDigest], context: UploadContext?, subject: String = "the body") -> UploadBody {
        transformed { VerifyTransform(expected: expected, context: context, subject: subject) }.declaringLength(length)
    }
}

private struct VerifyTransform: ChunkTransform {
    let expected: [ExpectedDigest]
    let context: UploadContext?
    let subject: String
    var computers: [DigestComputer]

    init(expected: [ExpectedDigest], context: UploadContext?, subject: String) {
        self.expected = expected
        self.context = context
        self.subject = subject
        self.computers = expected.map { $0.algorithm.makeComputer() }
    }

    mutating func process(_ chunk: ByteBuffer) -> ByteBuffer? {
        for i in computers.indices { computers[i].update(chunk) }
        return chunk
    }

    mutating func finish() throws -> ByteBuffer? {
        for (digest, computer) in zip(expected, computers) {
            let actual = computer.finalize()
            guard actual == digest.bytes else {
                throw SluiceError(.digestMismatch, "\(digest.algorithm) of \(subject) is \(Hex.encode(actual)) but \(digest.source) says \(Hex.encode(digest.bytes))")
            }
            if let context, context.digest(digest.algorithm) == nil {
                context.recordDigest(actual, algorithm: digest.algorithm)
            }
        }
        return nil
    }
}

import NIOCore

// MARK: - Metrics

/// Per-upload byte and time accounting for each stage's output.
///
/// Stages pull from each other, so the time spent inside the n-th wrapper's
/// `next()` includes every stage before it; a stage's own time is the difference
/// between its wrapper and the previous one.
/// One upload's state in ``Pipeline/process(_:)``, held by reference so the async frame stays small.
final class UploadRun: Sendable {
    let started = ContinuousClock.now
    let metadata: UploadMetadata
    let context: UploadContext
    let meter: StageMeter

    init(_ metadata: UploadMetadata, pipeline: Pipeline) {
        self.metadata = metadata
        self.context = UploadContext(metadata: metadata, pipeline: pipeline.name, logger: pipeline.logger)
        self.meter = StageMeter(count: pipeline.stages.count + 1, received: pipeline.metrics.bytesReceived)
    }
}

final class StageMeter: Sendable {
    private struct Totals {
        var bytes: [Int64]
        var nanos: [Int64]
    }
    private let totals: Mutex<Totals>
    /// The pipeline's `sluice_bytes_received_total`, counted as the client's bytes arrive
    /// (at the end of each upload, a long one would show as one late spike in a rate).
    let receivedCounter: Counter?

    init(count: Int, received: Counter? = nil) {
        totals = Mutex(Totals(bytes: Array(repeating: 0, count: count), nanos: Array(repeating: 0, count: count)))
        receivedCounter = received
    }

    /// Counts `bytes` of the client's body as received, for the upload and the pipeline's metric.
    func received(_ bytes: Int, by context: UploadContext) {
        context.addReceived(bytes)
        receivedCounter?.increment(by: bytes)
    }

    /// `body` with its chunks metered at `index`, and counted as received by `counting`.
    func wrap(_ body: UploadBody, index: Int, counting context: UploadContext? = nil) -> UploadBody {
        let metered = MeteredBody(base: body, meter: self, index: index, received: context)
        guard body.offersPipedPieces else { return UploadBody(metered).declaringLength(body.length) }
        return UploadBody(metered) { [self] in
            MeteredPieces(base: body.makePieceIterator(), meter: self, index: index, received: context)
        }.declaringLength(body.length)
    }

    func add(index: Int, bytes: Int, nanos: Int64) {
        totals.withLock {
            $0.bytes[index] += Int64(bytes)
            $0.nanos[index] += nanos
        }
    }

    /// (bytes out, exclusive nanoseconds) per position; position 0 is the client's body.
    var snapshot: [(bytes: Int64, nanos: Int64)] {
        totals.withLock { t in
            t.bytes.indices.map { i in (t.bytes[i], t.nanos[i] - (i > 0 ? t.nanos[i - 1] : 0)) }
        }
    }
}

private struct MeteredBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: UploadBody
    let meter: StageMeter
    let index: Int
    let received: UploadContext?

    func makeAsyncIterator() -> Iterator { Iterator(base: base.makeAsyncIterator(), meter: meter, index: index, received: received) }

    struct Iterator: AsyncIteratorProtocol {
        var base: UploadBody.AsyncIterator
        let meter: StageMeter
        let index: Int
        let received: UploadContext?

        mutating func next() async throws -> ByteBuffer? {
            let start = ContinuousClock.now
            let chunk = try await base.next()
            let d = (ContinuousClock.now - start).components
            let bytes = chunk?.readableBytes ?? 0
            meter.add(index: index, bytes: bytes, nanos: d.seconds * 1_000_000_000 + d.attoseconds / 1_000_000_000)
            if let received, bytes > 0 { meter.received(bytes, by: received) }
            return chunk
        }
    }
}

/// ``MeteredBody`` for a body read as pieces (bytes in a pipe count like bytes read).
private struct MeteredPieces: BodyPieceIterator {
    var base: any BodyPieceIterator
    let meter: StageMeter
    let index: Int
    let received: UploadContext?

    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        let start = ContinuousClock.now
        let piece = try await base.next(allowPipe: allowPipe)
        let d = (ContinuousClock.now - start).components
        let bytes = piece?.count ?? 0
        meter.add(index: index, bytes: bytes, nanos: d.seconds * 1_000_000_000 + d.attoseconds / 1_000_000_000)
        if let received, bytes > 0 { meter.received(bytes, by: received) }
        return piece
    }

    mutating func bytesWaiting() async -> Int {
        await base.bytesWaiting()
    }
}

/// The metrics one pipeline reports (names are documented in docs/metrics.md).
final class PipelineMetrics: Sendable {
    let pipeline: String
    let stageNames: [String]
    let bytesReceived: Counter
    let bytesStored: Counter
    let duration: Metrics.Timer
    let stageBytesIn: [Counter]
    let stageBytesOut: [Counter]
    let stageSeconds: [FloatingPointCounter]
    private let outcomes = Mutex<[String: Counter]>([:])

    init(pipeline: String, stageNames: [String]) {
        self.pipeline = pipeline
        self.stageNames = stageNames
        let p = [("pipeline", pipeline)]
        bytesReceived = Counter(label: "sluice_bytes_received_total", dimensions: p)
        bytesStored = Counter(label: "sluice_bytes_stored_total", dimensions: p)
        duration = Metrics.Timer(label: "sluice_upload_duration_seconds", dimensions: p, preferredDisplayUnit: .seconds)
        stageBytesIn = stageNames.enumerated().map { i, s in Counter(label: "sluice_stage_bytes_in_total", dimensions: p + [("stage", "\(i):\(s)")]) }
        stageBytesOut = stageNames.enumerated().map { i, s in Counter(label: "sluice_stage_bytes_out_total", dimensions: p + [("stage", "\(i):\(s)")]) }
        stageSeconds = stageNames.enumerated().map { i, s in FloatingPointCounter(label: "sluice_stage_seconds_total", dimensions: p + [("stage", "\(i):\(s)")]) }
    }

    func record(outcome: String, stored: Int64, elapsed: Duration, meter: StageMeter) {
        let counter = outcomes.withLock { map in
            if let c = map[outcome] { return c }
            let c = Counter(label: "sluice_uploads_total", dimensions: [("pipeline", pipeline), ("outcome", outcome)])
            map[outcome] = c
            return c
        }
        counter.increment()
        // Bytes received were counted as they arrived (StageMeter.received).
        bytesStored.increment(by: stored)
        duration.recordInterval(elapsed)
        let snapshot = meter.snapshot
        for i in stageNames.indices where i + 1 < snapshot.count {
            stageBytesIn[i].increment(by: snapshot[i].bytes)
            stageBytesOut[i].increment(by: snapshot[i + 1].bytes)
            stageSeconds[i].increment(by: Double(max(0, snapshot[i + 1].nanos)) / 1e9)
        }
    }
}

extension Metrics.Timer {
    func recordInterval(_ d: Duration) {
        let c = d.components
        recordNanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
    }
}
