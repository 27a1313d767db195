import CZlib
import Crypto
import Foundation
import NIOCore

/// A digest algorithm Sluice can compute and verify.
public enum DigestAlgorithm: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case sha256
    case sha1
    case md5
    case crc32

    public var description: String { rawValue }

    /// Starts an incremental computation.
    public func makeComputer() -> DigestComputer { DigestComputer(self) }
}

/// Incremental digest computation over byte chunks.
public struct DigestComputer {
    private enum State {
        case sha256(SHA256)
        case sha1(Insecure.SHA1)
        case md5(Insecure.MD5)
        case crc32(UInt)
        /// Held only while a hasher is taken out for an update (see `update(bytes:)`).
        case updating
    }

    public let algorithm: DigestAlgorithm
    private var state: State

    public init(_ algorithm: DigestAlgorithm) {
        self.algorithm = algorithm
        switch algorithm {
        case .sha256: state = .sha256(SHA256())
        case .sha1: state = .sha1(Insecure.SHA1())
        case .md5: state = .md5(Insecure.MD5())
        case .crc32: state = .crc32(CZlib.crc32(0, nil, 0))
        }
    }

    /// Feeds the readable bytes of `chunk`.
    public mutating func update(_ chunk: ByteBuffer) {
        chunk.withUnsafeReadableBytes { update(bytes: $0) }
    }

    /// Feeds raw bytes.
    public mutating func update(bytes: UnsafeRawBufferPointer) {
        // Take the hasher out and leave a placeholder, so the hasher is uniquely
        // referenced: swift-crypto copies its context on every update otherwise.
        var current = State.updating
        swap(&current, &state)
        switch consume current {
        case .sha256(var h):
            h.update(bufferPointer: bytes)
            state = .sha256(h)
        case .sha1(var h):
            h.update(bufferPointer: bytes)
            state = .sha1(h)
        case .md5(var h):
            h.update(bufferPointer: bytes)
            state = .md5(h)
        case .updating:
            preconditionFailure("DigestComputer.update re-entered")
        case .crc32(var crc):
            var base = bytes.baseAddress?.assumingMemoryBound(to: Bytef.self)
            var remaining = bytes.count
            // zlib takes a 32-bit length; feed huge buffers in slices.
            while remaining > 0, let pointer = base {
                let n = min(remaining, Int(UInt32.max >> 1))
                crc = CZlib.crc32(crc, pointer, uInt(n))
                base = pointer + n
                remaining -= n
            }
            state = .crc32(crc)
        }
    }

    /// Finishes the computation and returns the digest bytes (big-endian for crc32).
    public func finalize() -> [UInt8] {
        switch state {
        case .sha256(let h): return Array(h.finalize())
        case .sha1(let h): return Array(h.finalize())
        case .md5(let h): return Array(h.finalize())
        case .updating:
            preconditionFailure("DigestComputer.finalize during an update")
        case .crc32(let crc):
            let v = UInt32(truncatingIfNeeded: crc)
            return [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
        }
    }
}

/// A digest the client sent with an upload, to be checked against the bytes received.
public struct ExpectedDigest: Sendable, Equatable, CustomStringConvertible {
    public var algorithm: DigestAlgorithm
    public var bytes: [UInt8]
    /// Where the client put it (a header name), for error messages.
    public var source: String

    public init(algorithm: DigestAlgorithm, bytes: [UInt8], source: String) {
        self.algorithm = algorithm
        self.bytes = bytes
        self.source = source
    }

    public var description: String { "\(algorithm)=\(Hex.encode(bytes)) (from \(source))" }
}

/// Hex and base64 encodings used by digests and receipts.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lower- or upper-case hex; `nil` if the text is not hex of even length.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = value(utf8[i]), let lo = value(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    /// The value of one hex digit (either case); `nil` for any other byte.
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
