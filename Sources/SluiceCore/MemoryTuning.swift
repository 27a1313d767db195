#if canImport(Glibc)
import Glibc
#endif

/// Tunes glibc's allocator for a server that streams through 16 KiB–8 MiB buffers.
///
/// By default glibc serves allocations from 128 KiB up with a fresh `mmap` and
/// returns them with `munmap` (raising that threshold only as it sees large frees, and
/// trimming freed heap memory above twice it). Read buffers (128 KiB for TCP, up to
/// 1 MiB for HTTP) are exactly that size, so each one cost a map, a page fault per
/// 4 KiB with the page zeroed, and an unmap — measured: ~350,000 page faults and ~1.7×
/// the server CPU for 2 GiB of HTTP PUTs (`allocate_slab`, `clear_page_erms` in `perf`).
/// With a fixed 2 MiB threshold those buffers come from the heap and are reused, and
/// up to 64 MiB freed stays for reuse before it is trimmed. Larger buffers (S3 parts,
/// 8 MiB by default) are still mapped, so their memory goes back to the system when a
/// part is done: a 16 MiB threshold put them in the heap too, and 16 concurrent S3
/// uploads (8 MiB × 2 parts) then peaked at 411 MiB instead of 300 MiB.
///
/// `sluice serve` applies this at start unless the operator set glibc's own
/// variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), which then win.
/// A program embedding Sluice as a library may call ``apply()`` first thing in `main`.
public enum MemoryTuning {
    public static let mmapThreshold: Int32 = 2 << 20
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
