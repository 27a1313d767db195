import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SluiceCore
import Synchronization

/// How each request body is protected end to end.
enum S3Checksum: String, Sendable, CaseIterable {
    /// `x-amz-checksum-sha256` per part, and the part's sha256 signed as the payload hash.
    case sha256
    /// `Content-MD5` per part (payload unsigned).
    case md5
    /// No checksum (payload unsigned).
    case none
}

/// The runtime of the `s3` sink: streaming multipart uploads with a two-phase commit.
///
/// `prepare` streams the body into part buffers (at most `parallelParts` per upload,
/// and at most `maxMemory` bytes across all uploads) and uploads full parts while the
/// body still arrives. An upload whose body ends before the first part is full is held
/// in memory and sent as one PutObject at `commit()` — a PutObject is visible at once,
/// so it cannot happen earlier. Larger uploads become visible only at
/// CompleteMultipartUpload; any failure or cancellation aborts the multipart upload.
final class S3Sink: PreparingSink {
    struct Settings: Sendable {
        var keyTemplate: NameTemplate
        var prefix: String
        var partSize: Int64
        var parallelParts: Int
        var checksum: S3Checksum
        var storageClass: String?
        var abortStaleAfter: Duration?
    }

    /// S3's limits on multipart uploads.
    static let maxParts = 10_000
    static let minPartSize: Int64 = 5 << 20
    static let maxPartSize: Int64 = 5 << 30
    /// Part size doubles after every this many parts, so a stream of unknown length
    /// reaches S3's largest object before it runs out of part numbers.
    static let partsPerSizeStep = 1000

    let client: S3Client
    let settings: Settings
    let memory: MemoryBudget
    let buffers: PartBufferPool
    let logger: Logger

    init(client: S3Client, settings: Settings, maxMemory: Int64, logger: Logger) {
        self.client = client
        self.settings = settings
        self.memory = MemoryBudget(capacity: maxMemory)
        self.buffers = PartBufferPool(capacity: Int(settings.partSize), limit: Int(maxMemory / settings.partSize))
        self.logger = logger
    }

    /// The size of part number `n` (1-based): `part_size`, doubled every 1000 parts,
    /// never above S3's largest part or the memory cap.
    static func partSize(_ n: Int, base: Int64, cap: Int64) -> Int64 {
        min(maxPartSize, cap, base << min(40, (n - 1) / partsPerSizeStep))
    }

    func partSize(_ n: Int) -> Int64 {
        Self.partSize(n, base: settings.partSize, cap: memory.capacity)
    }

    func objectKey(_ context: UploadContext) throws -> String {
        settings.prefix + (try settings.keyTemplate.render(context))
    }

    // MARK: Lifecycle

    func start() async throws {
        guard let age = settings.abortStaleAfter else { return }
        try await abortStaleUploads(olderThan: age)
    }

    func stop() async {
        await client.shutdown()
    }

    /// Lists multipart uploads under the prefix and aborts those started more than `age` ago.
    @discardableResult
    func abortStaleUploads(olderThan age: Duration) async throws -> Int {
        let cutoff = Date().addingTimeInterval(-Double(age.nanoseconds) / 1e9)
        var aborted = 0
        var keyMarker: String?
        var uploadMarker: String?
        repeat {
            var query: [(String, String)] = [("uploads", ""), ("prefix", settings.prefix)]
            if let keyMarker { query.append(("key-marker", keyMarker)) }
            if let uploadMarker { query.append(("upload-id-marker", uploadMarker)) }
            let response = try await client.send(S3Request(method: .GET, key: nil, query: query, operation: "ListMultipartUploads"))
            let text = response.text
            for block in XMLText.blocks("Upload", in: text) {
                guard let key = XMLText.first("Key", in: block), let id = XMLText.first("UploadId", in: block) else { continue }
                let initiated = XMLText.first("Initiated", in: block).flatMap(Self.parseISO8601) ?? .distantPast
                guard initiated < cutoff else { continue }
                _ = try await client.send(S3Request(method: .DELETE, key: key, query: [("uploadId", id)], operation: "AbortMultipartUpload"))
                logger.notice("aborted stale multipart upload \(client.location.display(key)) (started \(initiated))")
                aborted += 1
            }
            if XMLText.first("IsTruncated", in: text) == "true" {
                keyMarker = XMLText.first("NextKeyMarker", in: text)
                uploadMarker = XMLText.first("NextUploadIdMarker", in: text)
            } else {
                keyMarker = nil
            }
        } while keyMarker != nil
        return aborted
    }

    static func parseISO8601(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let date = plain.date(from: text) { return date }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }

    // MARK: Prepare

    func prepare(_ body: UploadBody, context: UploadContext) async throws -> any PreparedObject {
        let key = try objectKey(context)
        var reader = PartReader(iterator: body.makeAsyncIterator())

        // The first part decides: a body that ends inside it is one PutObject at commit.
        let firstSize = partSize(1)
        try await memory.acquire(firstSize)
        let first: ByteBuffer
        let ended: Bool
        do {
            (first, ended) = try await reader.fill(into: buffers.take(capacity: Int(firstSize)), capacity: Int(firstSize))
        } catch {
            memory.release(firstSize)
            throw error
        }
        if ended {
            return PreparedPut(sink: self, key: key, body: first, reserved: firstSize, context: context)
        }

        let uploadID: String
        do {
            uploadID = try await createMultipartUpload(key: key, context: context)
        } catch {
            memory.release(firstSize)
            throw error
        }
        do {
            // `consume`: this scope must not keep the first part's buffer alive for the
            // whole upload (one extra part of memory per upload otherwise).
            let (parts, total) = try await uploadParts(key: key, uploadID: uploadID, first: consume first, firstReserved: firstSize, reader: &reader)
            return PreparedMultipart(sink: self, key: key, uploadID: uploadID, parts: parts, bytes: total, context: context)
        } catch {
            await abortMultipart(key: key, uploadID: uploadID)
            throw error
        }
    }

    struct CompletedPart: Sendable {
        var number: Int
        var etag: String
        var checksum: String?
    }

    /// Uploads `first` and every further part of the body, at most `parallelParts`
    /// buffers alive at once (the one filling included).
    private func uploadParts(
        key: String, uploadID: String, first: consuming ByteBuffer, firstReserved: Int64, reader: inout PartReader
    ) async throws -> ([CompletedPart], Int64) {
        var handOver: ByteBuffer? = consume first
        return try await withThrowingTaskGroup(of: CompletedPart.self) { group in
            var completed: [CompletedPart] = []
            var inFlight = 0
            var total: Int64 = 0
            var number = 1
            var buffer = handOver.take()!
            var reserved = firstReserved
            var ended = false
            while true {
                let part = buffer
                let partNumber = number
                let partReserved = reserved
                total += Int64(part.readableBytes)
                group.addTask {
                    defer { self.memory.release(partReserved) }
                    let done = try await self.uploadPart(key: key, uploadID: uploadID, number: partNumber, body: part)
                    self.buffers.give(back: part)
                    return done
                }
                inFlight += 1
                buffer = ByteBuffer()  // the task owns the part now; don't pin it while waiting
                if ended { break }
                number += 1
                guard number <= Self.maxParts else {
                    throw SluiceError(.payloadTooLarge, "\(client.location.display(key)): more than \(Self.maxParts) parts (S3's limit)")
                }
                // Keep at most parallelParts buffers: wait for an upload before filling another.
                while inFlight >= settings.parallelParts, let done = try await group.next() {
                    completed.append(done)
                    inFlight -= 1
                }
                reserved = partSize(number)
                try await memory.acquire(reserved)
                do {
                    (buffer, ended) = try await reader.fill(into: buffers.take(capacity: Int(reserved)), capacity: Int(reserved))
                } catch {
                    memory.release(reserved)
                    throw error
                }
                if buffer.readableBytes == 0 {
                    // The body ended exactly on a part boundary: nothing more to send.
                    buffers.give(back: buffer)
                    memory.release(reserved)
                    break
                }
            }
            while let done = try await group.next() { completed.append(done) }
            return (completed.sorted { $0.number < $1.number }, total)
        }
    }

    private func checksumHeaders(_ body: ByteBuffer) -> (headers: [(String, String)], payloadHash: String, checksum: String?) {
        switch settings.checksum {
        case .sha256:
            var hash = SHA256()
            body.withUnsafeReadableBytes { hash.update(bufferPointer: $0) }
            let digest = Array(hash.finalize())
            let base64 = Data(digest).base64EncodedString()
            return ([("x-amz-checksum-sha256", base64)], Hex.encode(digest), base64)
        case .md5:
            var hash = Insecure.MD5()
            body.withUnsafeReadableBytes { hash.update(bufferPointer: $0) }
            return ([("content-md5", Data(hash.finalize()).base64EncodedString())], SigV4Signer.unsignedPayload, nil)
        case .none:
            return ([], SigV4Signer.unsignedPayload, nil)
        }
    }

    static func sha256Hex(_ body: ByteBuffer) -> String {
        var hash = SHA256()
        body.withUnsafeReadableBytes { hash.update(bufferPointer: $0) }
        return Hex.encode(Array(hash.finalize()))
    }

    private func uploadPart(key: String, uploadID: String, number: Int, body: ByteBuffer) async throws -> CompletedPart {
        let (headers, payloadHash, checksum) = checksumHeaders(body)
        let response = try await client.send(S3Request(
            method: .PUT, key: key, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
            headers: headers, body: body, payloadHash: payloadHash, operation: "UploadPart \(number)"))
        guard let etag = response.headers.first(name: "ETag") else {
            throw SluiceError(.upstreamFailed, "S3 UploadPart \(number) \(client.location.display(key)): no ETag in the answer")
        }
        return CompletedPart(number: number, etag: etag, checksum: checksum)
    }

    private func objectHeaders(_ context: UploadContext) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let type = context.metadata.contentType { headers.append(("content-type", type)) }
        if let storageClass = settings.storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        return headers
    }

    private func createMultipartUpload(key: String, context: UploadContext) async throws -> String {
        var headers = objectHeaders(context)
        if settings.checksum == .sha256 { headers.append(("x-amz-checksum-algorithm", "SHA256")) }
        let response = try await client.send(S3Request(
            method: .POST, key: key, query: [("uploads", "")], headers: headers, operation: "CreateMultipartUpload"))
        guard let id = XMLText.first("UploadId", in: response.text), !id.isEmpty else {
            throw SluiceError(.upstreamFailed, "S3 CreateMultipartUpload \(client.location.display(key)): no UploadId in the answer")
        }
        return id
    }

    /// Aborts a multipart upload; never throws (logs instead). Runs in its own task so
    /// it still happens when the upload's task was cancelled.
    func abortMultipart(key: String, uploadID: String) async {
        let client = self.client
        let logger = self.logger
        await Task {
            do {
                _ = try await client.send(S3Request(method: .DELETE, key: key, query: [("uploadId", uploadID)], operation: "AbortMultipartUpload"))
            } catch {
                logger.error("could not abort multipart upload \(client.location.display(key)) (\(uploadID)): \(error); abort_stale_after cleans it up at the next start")
            }
        }.value
    }

    // MARK: Commit

    /// Writes `<key>.sha256` (`sha256sum -c` format) when a hash stage asked for a sidecar.
    func writeSidecars(key: String, context: UploadContext) async throws -> [String] {
        var written: [String] = []
        for (algorithm, hex) in context.sidecars {
            let sidecarKey = "\(key).\(algorithm.rawValue)"
            let name = key.split(separator: "/").last.map(String.init) ?? key
            let text = ByteBuffer(string: "\(hex)  \(name)\n")
            let (headers, payloadHash, _) = checksumHeaders(text)
            _ = try await client.send(S3Request(
                method: .PUT, key: sidecarKey, headers: headers + [("content-type", "text/plain")], body: text,
                payloadHash: payloadHash, operation: "PutObject (sidecar)"))
            written.append(sidecarKey)
        }
        return written
    }

    func deleteObjects(_ keys: [String]) async {
        let client = self.client
        await Task {
            for key in keys {
                _ = try? await client.send(S3Request(method: .DELETE, key: key, operation: "DeleteObject"))
            }
        }.value
    }

    func putObject(key: String, body: ByteBuffer, context: UploadContext) async throws {
        let (headers, payloadHash, _) = checksumHeaders(body)
        _ = try await client.send(S3Request(
            method: .PUT, key: key, headers: headers + objectHeaders(context), body: body,
            payloadHash: payloadHash, operation: "PutObject"))
    }

    func completeMultipart(key: String, uploadID: String, parts: [CompletedPart]) async throws {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts {
            xml += "<Part><PartNumber>\(part.number)</PartNumber><ETag>\(XMLText.escape(part.etag))</ETag>"
            if let checksum = part.checksum { xml += "<ChecksumSHA256>\(checksum)</ChecksumSHA256>" }
            xml += "</Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let body = ByteBuffer(string: xml)
        // Not checksumHeaders: on this call x-amz-checksum-sha256 would name the whole
        // object's checksum, not the request body's. The signed payload hash covers the body.
        let response = try await client.send(S3Request(
            method: .POST, key: key, query: [("uploadId", uploadID)], headers: [("content-type", "application/xml")],
            body: body, payloadHash: Self.sha256Hex(body), operation: "CompleteMultipartUpload"))
        // S3 may answer 200 and report the failure in the body.
        if let error = S3Error(embeddedIn: response) {
            throw SluiceError(.upstreamFailed, "S3 CompleteMultipartUpload \(client.location.display(key)): \(error)")
        }
    }
}

/// Reads a body into part-sized buffers, carrying the overflow of a chunk into the next part.
struct PartReader {
    var iterator: UploadBody.AsyncIterator
    var carry: ByteBuffer?
    var finished = false

    /// Fills a new buffer of `capacity` bytes.
    ///
    /// - Returns: The buffer and whether the body ended with it. A full buffer is
    ///   returned with `ended == false` only once more bytes are known to follow, so the
    ///   last part is never empty (except for an empty body).
    mutating func fill(capacity: Int) async throws -> (ByteBuffer, ended: Bool) {
        try await fill(into: ByteBufferAllocator().buffer(capacity: capacity), capacity: capacity)
    }

    /// Fills `buffer` (empty) with up to `capacity` bytes. The buffer's own capacity may
    /// be larger (NIO rounds allocations up), so the part size is passed explicitly.
    mutating func fill(into buffer: ByteBuffer, capacity: Int) async throws -> (ByteBuffer, ended: Bool) {
        var buffer = buffer
        while true {
            var chunk: ByteBuffer
            if let pending = carry {
                chunk = pending
                carry = nil
            } else if finished {
                return (buffer, true)
            } else if let next = try await iterator.next() {
                chunk = next
                if chunk.readableBytes == 0 { continue }
            } else {
                finished = true
                return (buffer, true)
            }
            let room = capacity - buffer.readableBytes
            if room == 0 {
                carry = chunk
                return (buffer, false)
            }
            if chunk.readableBytes <= room {
                buffer.writeBuffer(&chunk)
            } else {
                var head = chunk.readSlice(length: room)!
                buffer.writeBuffer(&head)
                carry = chunk
            }
        }
    }
}

/// Part buffers kept for reuse, so parts do not each cost a fresh multi-megabyte
/// allocation: glibc serves those from its heaps after the first few and rarely hands
/// the memory back, which let RSS drift far above `max_memory`. Buffers are only
/// allocated under a `max_memory` reservation, so the pool never holds more than that.
final class PartBufferPool: Sendable {
    let capacity: Int
    let limit: Int
    private let free = Mutex<[ByteBuffer]>([])

    init(capacity: Int, limit: Int) {
        self.capacity = capacity
        self.limit = limit
    }

    /// An empty buffer of `capacity` bytes: a pooled one when the size is the pool's.
    func take(capacity: Int) -> ByteBuffer {
        if capacity == self.capacity, var buffer = free.withLock({ $0.popLast() }) {
            buffer.clear()
            return buffer
        }
        return ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Returns a part's buffer once its upload no longer needs it.
    func give(back buffer: ByteBuffer) {
        // Only buffers made for the pool's size (NIO may have rounded their capacity up).
        guard buffer.capacity >= capacity, buffer.capacity < 2 * capacity else { return }
        free.withLock { if $0.count < limit { $0.append(buffer) } }
    }
}

/// A small upload held in memory until commit, then sent as one PutObject.
final class PreparedPut: PreparedObject {
    let sink: S3Sink
    let key: String
    let body: ByteBuffer
    let context: UploadContext
    private let reserved: Mutex<Int64>

    init(sink: S3Sink, key: String, body: ByteBuffer, reserved: Int64, context: UploadContext) {
        self.sink = sink
        self.key = key
        self.body = body
        self.context = context
        self.reserved = Mutex(reserved)
    }

    private func releaseMemory() {
        let bytes = reserved.withLock { r in defer { r = 0 }; return r }
        sink.memory.release(bytes)
    }

    func commit() async throws -> SinkReceipt {
        defer { releaseMemory() }
        let sidecars = try await sink.writeSidecars(key: key, context: context)
        do {
            try await sink.putObject(key: key, body: body, context: context)
        } catch {
            await sink.deleteObjects(sidecars)
            throw error
        }
        return SinkReceipt(location: sink.client.location.display(key), bytesStored: Int64(body.readableBytes))
    }

    func abort() async {
        releaseMemory()
    }
}

/// A multipart upload with every part uploaded, waiting for CompleteMultipartUpload.
final class PreparedMultipart: PreparedObject {
    let sink: S3Sink
    let key: String
    let uploadID: String
    let parts: [S3Sink.CompletedPart]
    let bytes: Int64
    let context: UploadContext
    private let sidecars = Mutex<[String]>([])

    init(sink: S3Sink, key: String, uploadID: String, parts: [S3Sink.CompletedPart], bytes: Int64, context: UploadContext) {
        self.sink = sink
        self.key = key
        self.uploadID = uploadID
        self.parts = parts
        self.bytes = bytes
        self.context = context
    }

    func commit() async throws -> SinkReceipt {
        let written = try await sink.writeSidecars(key: key, context: context)
        sidecars.withLock { $0 = written }
        try await sink.completeMultipart(key: key, uploadID: uploadID, parts: parts)
        return SinkReceipt(location: sink.client.location.display(key), bytesStored: bytes)
    }

    func abort() async {
        await sink.abortMultipart(key: key, uploadID: uploadID)
        await sink.deleteObjects(sidecars.withLock { $0 })
    }
}
