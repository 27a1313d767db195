import Foundation

/// Certificates for TLS tests, made with the `openssl` command in a temporary directory:
/// a CA, a server certificate it issued for `localhost` and `127.0.0.1`, a client
/// certificate it issued, and a client certificate from another CA (a stranger).
///
/// ```swift
/// let certs = try await TestCertificates.make(in: directory)
/// // tls: { certificate: certs.serverCertificate, private_key: certs.serverKey }
/// // curl --cacert certs.caCertificate https://localhost:PORT/...
/// ```
public struct TestCertificates: Sendable {
    public let caCertificate: String
    public let serverCertificate: String
    public let serverKey: String
    public let clientCertificate: String
    public let clientKey: String
    public let strangerCertificate: String
    public let strangerKey: String

    /// Makes the certificates in a new temporary directory, runs `body` with them, and
    /// removes the directory afterwards (also when `body` throws).
    ///
    /// ```swift
    /// try await TestCertificates.withTemporary { certs, directory in
    ///     // tls: { certificate: certs.serverCertificate, private_key: certs.serverKey }
    /// }
    /// ```
    public static func withTemporary<T>(_ body: (TestCertificates, TemporaryDirectory) async throws -> T) async throws -> T {
        let directory = try TemporaryDirectory(prefix: "sluice-tls")
        defer { directory.remove() }
        return try await body(try await make(in: directory), directory)
    }

    /// Makes the certificates in `directory` (P-256 keys, valid for a day).
    public static func make(in directory: TemporaryDirectory) async throws -> TestCertificates {
        let dir = directory.path
        func p(_ name: String) -> String { directory.path(name) }
        let extensions = p("server.ext")
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: extensions, atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "1", "-subj", "/CN=Sluice test CA"],
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", p("other-ca.key"), "-out", p("other-ca.pem"), "-days", "1", "-subj", "/CN=Another CA"],
        ] + issue("server", "localhost", ca: "ca", extensions: extensions, in: p)
          + issue("client", "ci-runner", ca: "ca", extensions: nil, in: p)
          + issue("stranger", "stranger", ca: "other-ca", extensions: nil, in: p)
        for step in steps {
            let result = try await runTool(step, in: dir)
            guard result.status == 0 else {
                throw CertificateError(message: "\(step.joined(separator: " ")) failed (\(result.status)): \(result.stderr)")
            }
        }
        return TestCertificates(
            caCertificate: p("ca.pem"),
            serverCertificate: p("server.pem"), serverKey: p("server.key"),
            clientCertificate: p("client.pem"), clientKey: p("client.key"),
            strangerCertificate: p("stranger.pem"), strangerKey: p("stranger.key")
        )
    }

    /// A key, a request and the certificate `ca` issues for it.
    private static func issue(_ name: String, _ commonName: String, ca: String, extensions: String?, in p: (String) -> String) -> [[String]] {
        var sign = ["openssl", "x509", "-req", "-in", p("\(name).csr"), "-CA", p("\(ca).pem"), "-CAkey", p("\(ca).key"),
                    "-CAcreateserial", "-out", p("\(name).pem"), "-days", "1"]
        if let extensions { sign += ["-extfile", extensions] }
        return [
            ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", p("\(name).key"), "-out", p("\(name).csr"), "-subj", "/CN=\(commonName)"],
            sign,
        ]
    }

    struct CertificateError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
