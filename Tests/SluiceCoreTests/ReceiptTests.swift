import Foundation
import SluiceCore
import Testing

@Suite("Receipt JSON")
struct ReceiptTests {
    /// What `jsonLine()` must equal: `JSONEncoder` with the options the receipt promises.
    func encoderLine(_ receipt: Receipt) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(receipt), as: UTF8.self)
    }

    @Test("plain receipt: the same bytes as JSONEncoder")
    func plain() throws {
        let receipt = Receipt(
            name: "builds/app-1.2.tgz", pipeline: "artifacts", bytesReceived: 123_456_789, bytesStored: 0,
            digests: ["sha256": String(repeating: "ab", count: 32), "stored_sha256": "00ff", "md5": "d41d8cd98f00b204e9800998ecf8427e", "sha256_2": "11", "crc32": "deadbeef"],
            location: "builds/app-1.2.tgz", id: "0b7c54b6-5fb4-4c1c-9b4e-2f2f1a1e3c4d"
        )
        #expect(receipt.jsonLine() == (try encoderLine(receipt)))
        #expect(try JSONDecoder().decode(Receipt.self, from: Data(receipt.jsonLine().utf8)) == receipt)
    }

    @Test("names with quotes, backslashes, control characters and non-ASCII: the same bytes as JSONEncoder")
    func escaping() throws {
        let controls = String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) })
        let names = ["a\"b\\c/d", controls, "tab\there\nnewline\r", "naïve-日本-😀.log", "\u{7F}del", ""]
        for name in names {
            let receipt = Receipt(name: name, pipeline: "p\"", bytesReceived: 0, bytesStored: 0, digests: [name: name], location: name, id: "x")
            #expect(receipt.jsonLine() == (try encoderLine(receipt)), "\(Array(name.utf8))")
            #expect(try JSONDecoder().decode(Receipt.self, from: Data(receipt.jsonLine().utf8)) == receipt)
        }
    }

    @Test("no digests: an empty object")
    func empty() throws {
        let receipt = Receipt(name: "n", pipeline: "p", bytesReceived: 1, bytesStored: 1, digests: [:], location: "l", id: "i")
        #expect(receipt.jsonLine() == #"{"bytes_received":1,"bytes_stored":1,"digests":{},"id":"i","location":"l","name":"n","pipeline":"p"}"#)
        #expect(receipt.jsonLine() == (try encoderLine(receipt)))
    }
}
