import Foundation
import SluiceCore

/// The bearer tokens a route accepts, kept as SHA-256 digests so every comparison
/// takes the same time whatever the presented token (R-X2).
struct BearerTokens: Sendable {
    private let digests: [[UInt8]]

    init(tokens: [String]) {
        digests = tokens.map { Self.digest(Substring($0)) }
    }

    /// Reads the tokens named by `configuration` (when the config is built, so
    /// `sluice validate` reports a missing file or an empty variable).
    static func load(_ configuration: HTTPReceiverPlugin.AuthConfiguration, issue: (String) -> any Error) throws -> BearerTokens {
        var tokens: [String] = []
        if let path = configuration.tokensFile {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw issue("cannot read tokens_file \(path): \(error.localizedDescription)")
            }
            tokens += text.split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        if let name = configuration.tokensEnv {
            let value = ProcessInfo.processInfo.environment[name] ?? ""
            tokens += value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if tokens.isEmpty {
            throw issue("no bearer tokens found (tokens_file \(configuration.tokensFile ?? "-"), tokens_env \(configuration.tokensEnv ?? "-"))")
        }
        return BearerTokens(tokens: tokens)
    }

    /// Whether an `Authorization` header value carries one of the tokens.
    ///
    /// Compares the digest of the presented token with every known digest, without
    /// stopping early, so timing reveals neither which token nor how much matched.
    func accepts(authorization: String?) -> Bool {
        guard let authorization else { return false }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        let presented = Self.digest(parts[1].trimmingCharacters(in: .whitespaces)[...])
        var matched: UInt8 = 1
        for known in digests {
            var difference: UInt8 = 0
            for i in 0..<known.count { difference |= known[i] ^ presented[i] }
            // matched becomes 0 once any token matched; no branch depends on the bytes.
            matched &= difference == 0 ? 0 : 1
        }
        return matched == 0
    }

    private static func digest(_ token: Substring) -> [UInt8] {
        var computer = DigestAlgorithm.sha256.makeComputer()
        var bytes = Array(token.utf8)
        bytes.withUnsafeMutableBytes { computer.update(bytes: UnsafeRawBufferPointer($0)) }
        return computer.finalize()
    }
}
