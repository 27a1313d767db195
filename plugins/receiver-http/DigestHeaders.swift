import Foundation
import HTTPTypes
import SluiceCore

/// Reads the digests a client sent with a request (R-R4).
///
/// - `Content-Digest` / `Repr-Digest` (RFC 9530): a structured-field dictionary such as
///   `sha-256=:BASE64:, md5=:BASE64:`. `sha-256`, `sha-1` and `md5` are verified;
///   other algorithms (`sha-512`, …) are ignored, as RFC 9530 lets a receiver do.
/// - `Content-MD5` (base64, RFC 1864).
/// - `X-Checksum-Sha256` (hex, as Artifactory and Nexus clients send it).
///
/// All of them describe the body as sent (before any Content-Encoding is decoded).
enum DigestHeaders {
    static let contentDigest = HTTPField.Name("Content-Digest")!
    static let reprDigest = HTTPField.Name("Repr-Digest")!
    static let contentMD5 = HTTPField.Name("Content-MD5")!
    static let checksumSHA256 = HTTPField.Name("X-Checksum-Sha256")!

    private static let rfc9530Algorithms: [String: DigestAlgorithm] = [
        "sha-256": .sha256, "sha-1": .sha1, "md5": .md5,
    ]

    /// - Throws: ``SluiceError/Code/badRequest`` for a malformed header or two
    ///   headers that disagree.
    static func parse(_ fields: HTTPFields) throws -> [ExpectedDigest] {
        var out: [ExpectedDigest] = []
        func add(_ digest: ExpectedDigest) throws {
            if let same = out.first(where: { $0.algorithm == digest.algorithm }) {
                guard same.bytes == digest.bytes else {
                    throw SluiceError(.badRequest, "\(same.source) and \(digest.source) give different \(digest.algorithm) digests")
                }
                return
            }
            out.append(digest)
        }
        for name in [contentDigest, reprDigest] {
            for value in fields[values: name] {
                for digest in try parseDictionary(value, header: name.canonicalName) { try add(digest) }
            }
        }
        for value in fields[values: contentMD5] {
            guard let bytes = Data(base64Encoded: value.trimmingCharacters(in: .whitespaces)), bytes.count == 16 else {
                throw SluiceError(.badRequest, "Content-MD5 must be 16 bytes in base64, got \"\(value.prefix(64))\"")
            }
            try add(ExpectedDigest(algorithm: .md5, bytes: Array(bytes), source: "Content-MD5"))
        }
        for value in fields[values: checksumSHA256] {
            guard let bytes = Hex.decode(value.trimmingCharacters(in: .whitespaces)), bytes.count == 32 else {
                throw SluiceError(.badRequest, "X-Checksum-Sha256 must be 64 hex digits, got \"\(value.prefix(80))\"")
            }
            try add(ExpectedDigest(algorithm: .sha256, bytes: bytes, source: "X-Checksum-Sha256"))
        }
        return out
    }

    /// Parses an RFC 8941 dictionary whose members are byte sequences (`key=:base64:`).
    private static func parseDictionary(_ value: String, header: String) throws -> [ExpectedDigest] {
        var out: [ExpectedDigest] = []
        for member in value.split(separator: ",") {
            let trimmed = member.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw SluiceError(.badRequest, "\(header): expected algorithm=:base64:, got \"\(trimmed.prefix(80))\"")
            }
            let key = trimmed[..<eq].lowercased()
            // Parameters (`;foo=bar`) may follow the item; digests do not use them.
            let item = trimmed[trimmed.index(after: eq)...].split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
            guard item.count >= 2, item.hasPrefix(":"), item.hasSuffix(":"),
                  let bytes = Data(base64Encoded: String(item.dropFirst().dropLast()))
            else {
                throw SluiceError(.badRequest, "\(header): the value of \(key) must be a byte sequence like :BASE64:")
            }
            guard let algorithm = rfc9530Algorithms[key] else { continue }
            let expectedLength = algorithm.makeComputer().finalize().count
            guard bytes.count == expectedLength else {
                throw SluiceError(.badRequest, "\(header): \(key) must be \(expectedLength) bytes, got \(bytes.count)")
            }
            out.append(ExpectedDigest(algorithm: algorithm, bytes: Array(bytes), source: header))
        }
        return out
    }
}
