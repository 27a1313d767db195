import Foundation

extension UUID {
    /// A random (version 4) UUID drawn from `SystemRandomNumberGenerator`.
    ///
    /// Unlike `UUID()`, which on Linux reads `/dev/urandom` and silently returns the
    /// all-zero UUID `00000000-0000-4000-8000-000000000000` when the process is out of
    /// file descriptors (`EMFILE`), this uses `getrandom(2)` and needs no descriptor, so
    /// upload ids and temporary file names stay unique under descriptor pressure.
    public static func systemRandom() -> UUID {
        var generator = SystemRandomNumberGenerator()
        return .random(using: &generator)
    }
}
