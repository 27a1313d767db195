import Foundation
import Testing

@testable import SinkS3

/// Signing checked against AWS's published examples, so correctness does not depend on
/// any particular S3 server.
@Suite struct SigV4Tests {
    /// AWS S3 documentation, "Signature Calculations for the Authorization Header",
    /// example "GET Object" (first 10 bytes of examplebucket/test.txt).
    @Test func s3GetObjectExample() {
        let signer = SigV4Signer(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash),
            ("x-amz-date", "20130524T000000Z"),
        ]
        let canonical = SigV4Signer.canonicalRequest(method: "GET", path: "/test.txt", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(canonical.request == """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
        #expect(SigV4Signer.amzDate(date) == "20130524T000000Z")
        let authorization = signer.authorization(method: "GET", path: "/test.txt", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        #expect(authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// The same document's "PUT Object" example: a signed payload, a storage class and
    /// a `$` in the key (encoded once, as S3 expects).
    @Test func s3PutObjectExample() {
        let signer = SigV4Signer(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let payloadHash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"  // "Welcome to Amazon S3."
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", payloadHash),
        ]
        let path = "/" + SigV4Signer.uriEncode("test$file.text", keepSlash: true)
        #expect(path == "/test%24file.text")
        let authorization = signer.authorization(method: "PUT", path: path, query: [], headers: headers, payloadHash: payloadHash, date: Date(timeIntervalSince1970: 1_369_353_600))
        #expect(authorization.hasSuffix("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
    }

    /// AWS Signature Version 4 test suite, `get-vanilla` (service "service").
    @Test func testSuiteGetVanilla() {
        let signer = SigV4Signer(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "service")
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
        let date = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z
        #expect(SigV4Signer.amzDate(date) == "20150830T123600Z")
        let authorization = signer.authorization(method: "GET", path: "/", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash, date: date)
        #expect(authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test func queryIsSortedAndEncoded() {
        let canonical = SigV4Signer.canonicalRequest(
            method: "PUT", path: "/b/k", query: [("uploadId", "a b/c"), ("partNumber", "2")],
            headers: [("host", "h")], payloadHash: SigV4Signer.unsignedPayload)
        #expect(canonical.request.split(separator: "\n", omittingEmptySubsequences: false)[2] == "partNumber=2&uploadId=a%20b%2Fc")
    }
}
