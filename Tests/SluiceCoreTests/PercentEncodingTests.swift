import Foundation
import SluiceCore
import Testing

/// ``PercentEncoding`` replaces Foundation's percent-encoding in the HTTP receiver's hot
/// path: it must answer as Foundation does, except that it refuses bytes that are not
/// UTF-8 where Foundation may substitute U+FFFD.
@Suite struct PercentEncodingTests {
    static let samples = [
        "", "plain.txt", "dir/sub/file.tgz", "a%20b", "%2e%2E/x", "%C3%A9t%C3%A9", "100%", "%", "%4", "%zz", "%4g", "a%2Fb",
        "%FF", "%C3", "%c3%a9", "ünïcode name.bin", "spaces and ? # [ ] { } \" < > \\ ^ ` |", "-._~!$&'()*+,;=:@/", "a:b;c", "%00nul",
        "emoji 🚀", "%F0%9F%9A%80", "tab\tand\nnewline",
    ]

    @Test(arguments: samples)
    func decodesAsFoundationDoes(text: String) {
        #expect(PercentEncoding.decode(text) == Self.foundationDecode(text))
    }

    @Test(arguments: ["%FF", "%C3", "#%a9", "a%A9b", "%C3%28", "%ED%A0%80"])
    func refusesBytesThatAreNotUTF8(text: String) {
        #expect(PercentEncoding.decode(text) == nil)
    }

    /// Foundation's answer, with its U+FFFD substitutions taken as the refusal they stand for.
    static func foundationDecode(_ text: String) -> String? {
        guard let decoded = text.removingPercentEncoding else { return nil }
        return decoded.contains("\u{FFFD}") && !text.contains("\u{FFFD}") ? nil : decoded
    }

    @Test(arguments: samples)
    func encodesAPathAsFoundationDoes(text: String) {
        #expect(PercentEncoding.encodePath(text) == text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed))
    }

    @Test func randomStringsAgreeWithFoundation() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ab%2Fe9C3A/ .é🚀?#~".unicodeScalars)
        for _ in 0..<2_000 {
            let length = Int.random(in: 0...12, using: &generator)
            var text = ""
            for _ in 0..<length { text.unicodeScalars.append(alphabet.randomElement(using: &generator)!) }
            #expect(PercentEncoding.decode(text) == Self.foundationDecode(text), "decode \(text.debugDescription)")
            #expect(PercentEncoding.encodePath(text) == text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed),
                    "encode \(text.debugDescription)")
        }
    }

    @Test func everyByteEncodesAsFoundationDoes() {
        for scalar in (0x01...0x7F).compactMap(Unicode.Scalar.init) {
            let text = "x\(Character(scalar))y"
            #expect(PercentEncoding.encodePath(text) == text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed))
            #expect(PercentEncoding.decode(PercentEncoding.encodePath(text)) == text)
        }
    }
}
