#if canImport(Glibc)
import Glibc
#endif

/// Tunes glibc's allocator for a server that streams through 16 KiB–8 MiB buffers.
///
/// By default glibc serves allocations from 128 KiB up with a fresh `mmap` and
/// returns them with `munmap` (raising that threshold only as it sees large frees, and
/// trimming freed heap memory above twice it). Read buffers (128 KiB for TCP, up to
/// 1 MiB for HTTP) and S3 parts are exactly that size, so every one cost a map, a
/// page fault per 4 KiB with the page zeroed, and an unmap — measured in `perf` as
/// `allocate_slab`, `clear_page_erms` and page faults, ~12% of the server's CPU on a
/// 1 GiB HTTP PUT. Allocations up to 16 MiB now come from the heap and are reused,
/// and up to 64 MiB of freed memory stays for reuse before it is trimmed.
///
/// `sluice serve` applies this at start unless the operator set glibc's own
/// variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), which then win.
/// A program embedding Sluice as a library may call ``apply()`` first thing in `main`.
public enum MemoryTuning {
    public static let mmapThreshold: Int32 = 16 << 20
    public static let trimThreshold: Int32 = 64 << 20

    /// Applies the thresholds; returns whether it did (glibc, no operator override).
    @discardableResult
    public static func apply() -> Bool {
        #if canImport(Glibc)
        guard getenv("MALLOC_MMAP_THRESHOLD_") == nil, getenv("MALLOC_TRIM_THRESHOLD_") == nil else { return false }
        // <malloc.h> is not part of the Glibc module: look `mallopt` up (absent on musl).
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return false }
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        // <malloc.h>: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3; mallopt returns 1 on success.
        return mallopt(-3, mmapThreshold) == 1 && mallopt(-1, trimThreshold) == 1
        #else
        return false
        #endif
    }
}
