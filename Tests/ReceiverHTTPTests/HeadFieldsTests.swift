import HTTPTypes
import Testing

@testable import ReceiverHTTP

@Suite("request head fields")
struct HeadFieldsTests {
    @Test("one pass finds the fields the receiver reads; a repeated field joins its values as a lookup would")
    func fields() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: .contentLength, value: "5"))
        fields.append(HTTPField(name: .contentLength, value: "6"))
        fields.append(HTTPField(name: .contentType, value: "text/plain"))
        fields.append(HTTPField(name: HTTPField.Name("expect")!, value: "100-continue"))
        fields.append(HTTPField(name: .authorization, value: "Bearer t"))
        let head = HeadFields(fields)
        #expect(head.contentLength == fields[.contentLength])
        #expect(head.contentLength == "5, 6")
        #expect(head.contentType == "text/plain")
        #expect(head.expect == "100-continue")
        #expect(head.authorization == "Bearer t")
        #expect(head.contentEncoding == nil)
        #expect(!head.hasDigests)

        var withDigest = HTTPFields()
        withDigest.append(HTTPField(name: HTTPField.Name("repr-digest")!, value: "sha-256=:AAAA:"))
        #expect(HeadFields(withDigest).hasDigests)
    }

    @Test("trimming removes spaces and tabs at both ends only")
    func trimming() {
        #expect(HeadFields.trimmed(" \t42 \t") == "42")
        #expect(HeadFields.trimmed("4 2") == "4 2")
        #expect(HeadFields.trimmed("   ") == "")
        #expect(HeadFields.trimmed("") == "")
    }
}
