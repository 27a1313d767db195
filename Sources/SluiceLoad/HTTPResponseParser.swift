import NIOCore

/// An incremental parser for HTTP/1.1 responses, just enough for `sluice load`: status code,
/// `Content-Length`, chunked or read-until-close bodies, `Connection: close`, and 1xx interim responses.
///
/// Responses to uploads are small, so bytes are accumulated and re-scanned; bodies are skipped, not kept.
public struct HTTPResponseParser: Sendable {
    /// A complete response.
    public struct Response: Sendable, Equatable {
        public var status: Int
        /// The server asked to close (or spoke HTTP/1.0 without keep-alive), or the body ran to EOF.
        public var closeConnection: Bool
        public var bodyLength: Int
    }

    /// The response was not valid HTTP.
    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    private enum State: Sendable {
        case head
        case body(status: Int, close: Bool, remaining: Int, length: Int)
        case chunkSize(status: Int, close: Bool, length: Int)
        case chunkData(status: Int, close: Bool, remaining: Int, length: Int)
        case chunkDataEnd(status: Int, close: Bool, length: Int)
        case trailers(status: Int, close: Bool, length: Int)
        case untilClose(status: Int, length: Int)
    }

    private var state = State.head
    private var pending: [UInt8] = []
    /// Head bytes beyond this are an error (a response head is a few hundred bytes).
    public static let maxHeadSize = 64 << 10

    public init() {}

    /// True while no part of a response has been consumed (between responses).
    public var isIdle: Bool {
        if case .head = state { return pending.isEmpty }
        return false
    }

    /// Consumes `buffer`, returning the responses it completed.
    public mutating func feed(_ buffer: ByteBuffer) throws -> [Response] {
        pending.append(contentsOf: buffer.readableBytesView)
        var done: [Response] = []
        while let response = try step() { done.append(response) }
        return done
    }

    /// The peer closed: completes a read-until-close body, else throws if a response was cut short.
    public mutating func feedEOF() throws -> Response? {
        switch state {
        case .untilClose(let status, let length):
            state = .head
            return Response(status: status, closeConnection: true, bodyLength: length + pending.count)
        case .head where pending.isEmpty:
            return nil
        default:
            throw ParseError(description: "connection closed in the middle of a response")
        }
    }

    private func find(_ needle: [UInt8], from: Int = 0) -> Int? {
        guard pending.count >= needle.count + from else { return nil }
        var i = from
        while i + needle.count <= pending.count {
            if pending[i] == needle[0] && pending[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    private static let crlf: [UInt8] = [13, 10]
    private static let crlfcrlf: [UInt8] = [13, 10, 13, 10]

    /// Advances as far as the pending bytes allow; returns a response when one completes.
    private mutating func step() throws -> Response? {
        switch state {
        case .head:
            guard let end = find(Self.crlfcrlf) else {
                if pending.count > Self.maxHeadSize { throw ParseError(description: "response head over \(Self.maxHeadSize) bytes") }
                return nil
            }
            let head = String(decoding: pending[0..<end], as: UTF8.self)
            pending.removeFirst(end + 4)
            var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
            guard !lines.isEmpty else { throw ParseError(description: "empty response head") }
            let statusLine = lines.removeFirst()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
                throw ParseError(description: "bad status line: \(statusLine.prefix(80))")
            }
            var close = parts[0] == "HTTP/1.0"
            var contentLength: Int?
            var chunked = false
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingSpaces().lowercased()
                switch name {
                case "content-length":
                    guard let n = Int(value), n >= 0 else { throw ParseError(description: "bad Content-Length: \(value)") }
                    contentLength = n
                case "transfer-encoding": chunked = value.contains("chunked")
                case "connection":
                    if value.contains("close") { close = true }
                    if value.contains("keep-alive") { close = false }
                default: break
                }
            }
            if (100..<200).contains(status) { return try step() }  // interim (100 Continue): the real one follows
            if status == 204 || status == 304 {
                return Response(status: status, closeConnection: close, bodyLength: 0)
            }
            if chunked {
                state = .chunkSize(status: status, close: close, length: 0)
            } else if let contentLength {
                state = .body(status: status, close: close, remaining: contentLength, length: contentLength)
            } else {
                state = .untilClose(status: status, length: 0)
            }
            return try step()

        case .body(let status, let close, let remaining, let length):
            let n = Swift.min(remaining, pending.count)
            pending.removeFirst(n)
            if remaining - n > 0 {
                state = .body(status: status, close: close, remaining: remaining - n, length: length)
                return nil
            }
            state = .head
            return Response(status: status, closeConnection: close, bodyLength: length)

        case .chunkSize(let status, let close, let length):
            guard let end = find(Self.crlf) else { return nil }
            let text = String(decoding: pending[0..<end], as: UTF8.self)
            pending.removeFirst(end + 2)
            let hex = text.split(separator: ";").first.map { $0.trimmingSpaces() } ?? ""
            guard let size = Int(hex, radix: 16), size >= 0 else { throw ParseError(description: "bad chunk size: \(text.prefix(40))") }
            state = size == 0
                ? .trailers(status: status, close: close, length: length)
                : .chunkData(status: status, close: close, remaining: size, length: length + size)
            return try step()

        case .chunkData(let status, let close, let remaining, let length):
            let n = Swift.min(remaining, pending.count)
            pending.removeFirst(n)
            if remaining - n > 0 {
                state = .chunkData(status: status, close: close, remaining: remaining - n, length: length)
                return nil
            }
            state = .chunkDataEnd(status: status, close: close, length: length)
            return try step()

        case .chunkDataEnd(let status, let close, let length):
            guard pending.count >= 2 else { return nil }
            guard pending[0] == 13, pending[1] == 10 else { throw ParseError(description: "chunk not followed by CRLF") }
            pending.removeFirst(2)
            state = .chunkSize(status: status, close: close, length: length)
            return try step()

        case .trailers(let status, let close, let length):
            guard let end = find(Self.crlf) else { return nil }
            pending.removeFirst(end + 2)
            if end > 0 { return try step() }  // a trailer line; the empty line ends the message
            state = .head
            return Response(status: status, closeConnection: close, bodyLength: length)

        case .untilClose(let status, let length):
            let n = pending.count
            pending.removeAll(keepingCapacity: true)
            state = .untilClose(status: status, length: length + n)
            return nil
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
