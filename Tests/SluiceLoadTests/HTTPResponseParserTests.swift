import NIOCore
import Testing

@testable import SluiceLoad

@Suite("HTTP response parser")
struct HTTPResponseParserTests {
    func feed(_ parser: inout HTTPResponseParser, _ text: String, split: Int? = nil) throws -> [HTTPResponseParser.Response] {
        let bytes = Array(text.utf8)
        guard let split else { return try parser.feed(ByteBuffer(bytes: bytes)) }
        var out: [HTTPResponseParser.Response] = []
        var i = 0
        while i < bytes.count {
            out += try parser.feed(ByteBuffer(bytes: bytes[i..<min(i + split, bytes.count)]))
            i += split
        }
        return out
    }

    @Test("Content-Length body, fed one byte at a time and whole", arguments: [nil, 1, 3, 7] as [Int?])
    func contentLength(split: Int?) throws {
        var parser = HTTPResponseParser()
        let r = try feed(&parser, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"bytes\":1}", split: split)
        #expect(r == [.init(status: 201, closeConnection: false, bodyLength: 11)])
        #expect(parser.isIdle)
    }

    @Test("pipelined responses, 100 Continue skipped, Connection: close noted")
    func pipelined() throws {
        var parser = HTTPResponseParser()
        let r = try feed(&parser, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno")
        #expect(r == [.init(status: 204, closeConnection: false, bodyLength: 0), .init(status: 413, closeConnection: true, bodyLength: 2)])
    }

    @Test("chunked body with extensions and trailers", arguments: [nil, 1, 5] as [Int?])
    func chunked(split: Int?) throws {
        var parser = HTTPResponseParser()
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        let r = try feed(&parser, text, split: split)
        #expect(r == [.init(status: 200, closeConnection: false, bodyLength: 11), .init(status: 201, closeConnection: false, bodyLength: 0)])
    }

    @Test("HTTP/1.0 and bodies delimited by close")
    func untilClose() throws {
        var parser = HTTPResponseParser()
        #expect(try feed(&parser, "HTTP/1.0 200 OK\r\n\r\nsome body").isEmpty)
        #expect(try parser.feedEOF() == .init(status: 200, closeConnection: true, bodyLength: 9))
        var p2 = HTTPResponseParser()
        #expect(try feed(&p2, "HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n") == [.init(status: 201, closeConnection: true, bodyLength: 0)])
    }

    @Test("garbage and truncation are errors")
    func errors() throws {
        var parser = HTTPResponseParser()
        #expect(throws: HTTPResponseParser.ParseError.self) { try feed(&parser, "SSH-2.0-OpenSSH\r\n\r\n") }
        var p2 = HTTPResponseParser()
        _ = try feed(&p2, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        #expect(throws: HTTPResponseParser.ParseError.self) { try p2.feedEOF() }
        var p3 = HTTPResponseParser()
        #expect(try p3.feedEOF() == nil)
    }
}
