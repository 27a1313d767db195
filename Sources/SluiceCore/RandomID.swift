import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension UUID {
    /// A random (version 4) UUID drawn from the kernel's random source.
    ///
    /// Unlike `UUID()`, which on Linux reads `/dev/urandom` and silently returns the
    /// all-zero UUID `00000000-0000-4000-8000-000000000000` when the process is out of
    /// file descriptors (`EMFILE`), this uses `getrandom(2)` and needs no descriptor, so
    /// upload ids stay unique under descriptor pressure. One call fills all 16 bytes
    /// (`UUID.random(using:)` with `SystemRandomNumberGenerator` makes two).
    public static func systemRandom() -> UUID {
        var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        #if canImport(Glibc)
        let filled = withUnsafeMutableBytes(of: &bytes) { raw -> Bool in
            guard let getrandom = GetRandom.function else { return false }
            while true {
                let n = getrandom(raw.baseAddress, raw.count, 0)
                if n == raw.count { return true }
                if n < 0, errno == EINTR { continue }
                return false
            }
        }
        #else
        let filled = false
        #endif
        guard filled else {
            var generator = SystemRandomNumberGenerator()
            return .random(using: &generator)
        }
        bytes.6 = (bytes.6 & 0x0f) | 0x40  // version 4
        bytes.8 = (bytes.8 & 0x3f) | 0x80  // RFC 4122 variant
        return UUID(uuid: bytes)
    }
}

#if canImport(Glibc)
/// `getrandom(2)`, looked up at run time: the Swift Glibc module does not export it
/// (`<sys/random.h>` is not in it); glibc has had it since 2.25.
private enum GetRandom {
    typealias Function = @convention(c) (UnsafeMutableRawPointer?, Int, UInt32) -> Int
    static let function: Function? = {
        // RTLD_DEFAULT is a null handle on glibc.
        guard let symbol = dlsym(nil, "getrandom") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}
#endif
