import Foundation
import SluiceCore
import Testing

@Suite("memory tuning")
struct MemoryTuningTests {
    // The effect (no page faults per read buffer) is measured in docs/benchmarks.md; a
    // unit test cannot show it, as glibc's own adaptive threshold hides it in a simple
    // allocate-free loop. This checks that the tuning is found and accepted on Linux.
    @Test("glibc's mallopt is found and accepts the thresholds",
          .enabled(if: ProcessInfo.processInfo.environment["MALLOC_MMAP_THRESHOLD_"] == nil
                   && ProcessInfo.processInfo.environment["MALLOC_TRIM_THRESHOLD_"] == nil))
    func applies() {
        #if os(Linux)
        #expect(MemoryTuning.apply())
        #endif
    }
}
