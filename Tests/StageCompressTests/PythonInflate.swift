import SluiceTestKit

/// Python's zlib decoding of the file at `path` with `wbits`: "<sha256 hex> <length>".
func pythonInflate(_ path: String, wbits: Int) async throws -> ToolResult {
    try await runTool([
        "python3", "-c",
        "import zlib,sys,hashlib; d=zlib.decompress(open(sys.argv[1],'rb').read(), int(sys.argv[2])); print(hashlib.sha256(d).hexdigest(), len(d))",
        path, "\(wbits)",
    ])
}
