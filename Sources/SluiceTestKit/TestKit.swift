import Foundation
import NIOCore
import SluiceCore
import Synchronization

/// A sink that keeps committed uploads in memory, for tests and examples.
///
/// It streams like a real sink (reads chunk by chunk, commits only when the body
/// ended without error) and can be told to be slow or to fail.
public final class InMemorySink: Sink {
    /// One committed object.
    public struct Object: Sendable {
        public var name: String
        public var bytes: [UInt8]
        public var digests: [String: String]
    }

    private let objects = Mutex<[Object]>([])
    private let delayPerChunk: Duration?
    private let failAfterBytes: Int?

    /// - Parameters:
    ///   - delayPerChunk: Sleep this long after each chunk (a slow sink).
    ///   - failAfterBytes: Throw once this many bytes were read (a failing sink).
    public init(delayPerChunk: Duration? = nil, failAfterBytes: Int? = nil) {
        self.delayPerChunk = delayPerChunk
        self.failAfterBytes = failAfterBytes
    }

    /// Objects committed so far, in commit order.
    public var committed: [Object] { objects.withLock { $0 } }

    /// The bytes of the object called `name`, if committed.
    public func bytes(of name: String) -> [UInt8]? { committed.last { $0.name == name }?.bytes }

    public func store(_ body: UploadBody, context: UploadContext) async throws -> SinkReceipt {
        var bytes: [UInt8] = []
        for try await chunk in body {
            bytes.append(contentsOf: chunk.readableBytesView)
            if let failAfterBytes, bytes.count >= failAfterBytes {
                throw SluiceError(.insufficientStorage, "in-memory sink told to fail after \(failAfterBytes) bytes")
            }
            if let delayPerChunk { try await Task.sleep(for: delayPerChunk) }
        }
        let digests = Dictionary(context.digests.map { ($0.label, $0.hex) }, uniquingKeysWith: { a, _ in a })
        let object = Object(name: context.metadata.name, bytes: bytes, digests: digests)
        objects.withLock { $0.append(object) }
        return SinkReceipt(location: "memory:\(context.metadata.name)", bytesStored: Int64(bytes.count))
    }
}

extension UploadBody {
    /// A body that yields `bytes` in chunks of `chunkSize`.
    public static func bytes(_ bytes: some Collection<UInt8>, chunkSize: Int = 64 * 1024) -> UploadBody {
        precondition(chunkSize > 0)
        let all = Array(bytes)
        var chunks: [ByteBuffer] = []
        var offset = 0
        while offset < all.count {
            let end = Swift.min(offset + chunkSize, all.count)
            chunks.append(ByteBuffer(bytes: all[offset..<end]))
            offset = end
        }
        return UploadBody(chunks: chunks)
    }

    /// A body that yields `string`'s UTF-8 in chunks of `chunkSize`.
    public static func string(_ string: String, chunkSize: Int = 64 * 1024) -> UploadBody {
        bytes(Array(string.utf8), chunkSize: chunkSize)
    }

    /// A body that fails with `error` after yielding `bytes` (a client that resets mid-upload).
    public static func failing(after bytes: [UInt8], with error: any Error = SluiceError(.clientAborted, "connection reset by peer")) -> UploadBody {
        UploadBody(FailingSequence(prefix: bytes, error: SendableError(error)))
    }

    /// Reads the whole body into memory (tests only: real code streams).
    public func collect() async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await chunk in self { out.append(contentsOf: chunk.readableBytesView) }
        return out
    }
}

private struct SendableError: @unchecked Sendable {
    // Only ever rethrown, never mutated or inspected across tasks: the box is read-only.
    let error: any Error
    init(_ error: any Error) { self.error = error }
}

private struct FailingSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let prefix: [UInt8]
    let error: SendableError
    func makeAsyncIterator() -> Iterator { Iterator(prefix: prefix, error: error) }
    struct Iterator: AsyncIteratorProtocol {
        let prefix: [UInt8]
        let error: SendableError
        var sent = false
        mutating func next() async throws -> ByteBuffer? {
            if !sent, !prefix.isEmpty {
                sent = true
                return ByteBuffer(bytes: prefix)
            }
            throw error.error
        }
    }
}

extension Upload {
    /// An upload of `bytes` named `name`, for tests.
    public static func test(
        name: String = "test.bin",
        bytes: some Collection<UInt8>,
        chunkSize: Int = 64 * 1024,
        listener: String = "test",
        expectedDigests: [ExpectedDigest] = [],
        mode: UploadMode = .object
    ) -> Upload {
        Upload(
            metadata: UploadMetadata(name: name, listener: listener, declaredLength: Int64(bytes.count), expectedDigests: expectedDigests, mode: mode),
            body: .bytes(bytes, chunkSize: chunkSize)
        )
    }
}

/// Deterministic pseudo-random bytes (xorshift), for payloads that must be reproducible.
public func pseudoRandomBytes(count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed == 0 ? 1 : seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        var v = state
        for _ in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: v)
            v >>= 8
            i += 1
        }
    }
    return out
}
