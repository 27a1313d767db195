import HummingbirdCore
import NIOCore
import NIOHTTP1
import SluiceCore

/// A request body as an ``UploadBody``: errors from the connection (a reset, a
/// truncated chunked body, a timeout) become ``SluiceError``s with a code the
/// client's answer and the log line can use.
struct RequestBodySequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: RequestBody

    func makeAsyncIterator() -> Iterator { Iterator(base: base.makeAsyncIterator()) }

    struct Iterator: AsyncIteratorProtocol {
        var base: RequestBody.AsyncIterator

        mutating func next() async throws -> ByteBuffer? {
            do {
                return try await base.next()
            } catch let error as SluiceError {
                throw error
            } catch let error as HTTPParserError where error != .invalidEOFState {
                // Invalid chunked framing and the like; a connection closed mid-body
                // (invalidEOFState) is the client going away, handled below.
                throw SluiceError(.badRequest, "malformed request body (\(error))", cause: error)
            } catch is CancellationError {
                throw SluiceError(.clientAborted, "the upload was cancelled")
            } catch {
                throw SluiceError(.clientAborted, "the client went away before the body was complete (\(error))", cause: error)
            }
        }
    }
}

/// Decodes a `Content-Encoding: gzip`/`deflate` body with the core ``Inflater``.
///
/// The inflater (a `z_stream`) is made when the first chunk arrives, inside the
/// body's iterator, and freed with it, also on errors and cancellation.
struct InflateTransform: ChunkTransform {
    let format: ZlibFormat
    let maxOutput: Int64
    var inflater: Inflater?

    init(format: ZlibFormat, maxOutput: Int64) {
        self.format = format
        self.maxOutput = maxOutput
    }

    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        if inflater == nil { inflater = try Inflater(format: format, maxOutput: maxOutput) }
        return try inflater!.decompress(chunk)
    }

    mutating func finish() throws -> ByteBuffer? {
        guard let inflater, inflater.isFinished else {
            throw SluiceError(.corruptInput, "the \(format.rawValue) body is empty or truncated")
        }
        return nil
    }
}

/// Cuts a body on newline boundaries so every chunk holds whole records, as
/// ``UploadMode/records`` requires.
///
/// The bytes after a chunk's last newline wait for the next chunk (bounded by
/// `maxRecordSize`). A final record without a newline is passed on as it is: the
/// bytes stored are the bytes sent.
struct RecordChunker: ChunkTransform {
    let maxRecordSize: Int
    var pending: ByteBuffer?

    init(maxRecordSize: Int) {
        self.maxRecordSize = maxRecordSize
    }

    mutating func process(_ chunk: ByteBuffer) throws -> ByteBuffer? {
        guard let lastNewline = chunk.readableBytesView.lastIndex(of: UInt8(ascii: "\n")) else {
            try keep(chunk)
            return nil
        }
        let headLength = lastNewline - chunk.readerIndex + 1
        var chunk = chunk
        // Slices share storage with the chunk: no copy unless a partial record waits.
        var head = chunk.readSlice(length: headLength)!
        if var waiting = pending {
            waiting.writeBuffer(&head)
            head = waiting
            pending = nil
        }
        if chunk.readableBytes > 0 { try keep(chunk) }
        return head
    }

    mutating func finish() -> ByteBuffer? {
        defer { pending = nil }
        return pending
    }

    private mutating func keep(_ chunk: ByteBuffer) throws {
        if var waiting = pending {
            var chunk = chunk
            waiting.writeBuffer(&chunk)
            pending = waiting
        } else {
            pending = chunk
        }
        if let pending, pending.readableBytes > maxRecordSize {
            throw SluiceError(.payloadTooLarge, "a record is longer than max_record_size (\(ByteSize(Int64(maxRecordSize))))")
        }
    }
}
