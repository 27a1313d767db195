import Logging
import NIOCore
import SluiceCore
import SluiceTestKit
import Testing

@testable import ReceiverTCP

@Suite("lines framing")
struct LineFramerTests {
    /// Runs `input` cut into pieces of the given sizes (cycled) through a framer.
    func frame(_ input: String, pieces: [Int], maxLength: Int = 64, policy: TCPReceiverPlugin.LongRecordPolicy = .truncate) async throws -> [String] {
        try await frameCounting(input, pieces: pieces, maxLength: maxLength, policy: policy).output
    }

    func frameCounting(_ input: String, pieces: [Int], maxLength: Int = 64, policy: TCPReceiverPlugin.LongRecordPolicy = .truncate) async throws -> (output: [String], inputChunks: Int) {
        let bytes = Array(input.utf8)
        var chunks: [ByteBuffer] = []
        var offset = 0
        var i = 0
        while offset < bytes.count {
            let end = min(offset + pieces[i % pieces.count], bytes.count)
            chunks.append(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            i += 1
        }
        let body = UploadBody(chunks: chunks).transformed {
            LineFramer(maxLength: maxLength, policy: policy, logger: Logger(label: "test"))
        }
        var out: [String] = []
        for try await chunk in body { out.append(String(buffer: chunk)) }
        return (out, chunks.count)
    }

    @Test("every chunk ends on a newline and the records come out whole, however the input was cut")
    func recut() async throws {
        var input = ""
        for i in 0..<500 { input += "line \(i) " + String(repeating: "y", count: i % 40) + "\n" }
        input += "tail"
        for pieces in [[1], [3, 7], [64], [1000], [13, 1, 200], [100_000]] {
            let (out, inputChunks) = try await frameCounting(input, pieces: pieces, maxLength: 100)
            #expect(out.allSatisfy { $0.hasSuffix("\n") }, "pieces \(pieces)")
            #expect(out.joined() == input + "\n", "pieces \(pieces)")
            // Chunks batch records: at most one per input piece, plus the final record.
            #expect(out.count <= inputChunks + 1)
        }
    }

    @Test("a chunk that holds whole records passes through without a copy")
    func zeroCopy() async throws {
        #expect(try await frame("a\nb\n", pieces: [4]) == ["a\nb\n"])
    }

    @Test("long records are truncated to max_record_length plus a newline, across chunk boundaries")
    func truncate() async throws {
        let long = String(repeating: "x", count: 50)
        let input = "ok\n\(long)\n\(long)tail-without-newline"
        for pieces in [[1], [7], [1000]] {
            let out = try await frame(input, pieces: pieces, maxLength: 10)
            #expect(out.joined() == "ok\n" + String(repeating: "x", count: 10) + "\n" + String(repeating: "x", count: 10) + "\n", "pieces \(pieces)")
            #expect(out.allSatisfy { $0.hasSuffix("\n") })
        }
        // Exactly max_record_length is not long.
        #expect(try await frame("0123456789\n", pieces: [3], maxLength: 10).joined() == "0123456789\n")
    }

    @Test("reject fails the upload with payload_too_large")
    func reject() async throws {
        await #expect(throws: SluiceError.self) {
            _ = try await frame("ok\n" + String(repeating: "x", count: 11) + "\n", pieces: [5], maxLength: 10, policy: .reject)
        }
    }

    @Test("empty input and empty lines")
    func edges() async throws {
        #expect(try await frame("", pieces: [1]) == [])
        #expect(try await frame("\n\n\n", pieces: [1]).joined() == "\n\n\n")
    }
}
