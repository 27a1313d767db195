import Foundation
import SluiceCore
import Testing

@Suite struct NameTests {
    @Test(arguments: ["a.txt", "dir/sub/file.tgz", "ünïcode name.bin", "..hidden", "a..b", "...", "x/.../y", "\u{A0}nbsp",
                      String(repeating: "x", count: 255), String(repeating: "é", count: 127)])
    func acceptedNames(name: String) throws {
        #expect(try UploadName.sanitize(name) == name)
    }

    @Test(arguments: ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\u{0}b", "new\nline", "back\\slash", "..", ".", "a/", "a/.", "../", "c1\u{85}control", "del\u{7F}", "tab\tname", "x/..",
                      String(repeating: "x", count: 256), String(repeating: "a/", count: 600) + "b"])
    func hostileNamesAreRejected(name: String) {
        let error = #expect(throws: SluiceError.self) { try UploadName.sanitize(name) }
        #expect(error?.code == .invalidName)
    }

    @Test func templatesExpand() throws {
        let id = UUID(uuidString: "12345678-1234-1234-1234-123456789ABC")!
        let date = Date(timeIntervalSince1970: 1_790_000_000) // 2026-09-21T14:13:20Z
        let metadata = UploadMetadata(id: id, name: "builds/app-1.2.tgz", listener: "http", remoteAddress: "10.0.0.7", receivedAt: date)
        let context = UploadContext(metadata: metadata, pipeline: "artifacts", logger: .init(label: "t"))
        #expect(try NameTemplate("{date}/{name}").render(context) == "2026-09-21/builds/app-1.2.tgz")
        #expect(try NameTemplate("{stem}-{uuid}{ext}").render(context) == "app-1.2-12345678-1234-1234-1234-123456789abc.tgz")
        #expect(try NameTemplate("{listener}/{pipeline}/{remote}-{datetime}").render(context) == "http/artifacts/10.0.0.7-20260921T141320Z")
        #expect(try NameTemplate("{year}/{month}/{day}/{hour}/{time}").render(context) == "2026/09/21/14/141320")
        let newYear = UploadMetadata(id: id, name: "n", listener: "l", receivedAt: Date(timeIntervalSince1970: 1_798_761_599.9))  // 2026-12-31T23:59:59.9Z
        #expect(try NameTemplate("{datetime}").render(UploadContext(metadata: newYear, pipeline: "p", logger: .init(label: "t"))) == "20261231T235959Z")
        #expect(throws: SluiceError.self) { try NameTemplate("{nope}") }
        #expect(throws: SluiceError.self) { try NameTemplate("../{name}").render(context) }
        #expect(throws: SluiceError.self) { try NameTemplate("/abs/{name}").render(context) }
    }
}
