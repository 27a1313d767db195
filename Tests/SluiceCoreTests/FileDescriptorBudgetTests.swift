import Testing
@testable import SluiceCore

/// Regression for the hold-test crash: the process must never reach its open-file limit
/// (libdispatch traps when it cannot open /proc/<tid>/stat), so connections are refused
/// while the descriptor budget is spent, even below max_connections.
@Suite struct FileDescriptorBudgetTests {
    @Test func budgetKeepsAReserveBelowTheProcessLimit() {
        let small = FileDescriptorBudget(processLimit: 1024)
        #expect(small.reserve == 128)
        #expect(small.capacity == 896)
        let large = FileDescriptorBudget(processLimit: 20_000)
        #expect(large.reserve == 400)
        #expect(large.capacity == 19_600)
        #expect(FileDescriptorBudget(processLimit: 50).capacity == 0)
    }

    @Test func budgetRefusesWhenSpentAndRecoversOnRelease() {
        let budget = FileDescriptorBudget(processLimit: 130)  // capacity 2
        #expect(budget.tryAcquire())
        #expect(budget.tryAcquire())
        #expect(!budget.tryAcquire())
        #expect(budget.used == 2)
        budget.release()
        #expect(budget.tryAcquire())
        #expect(budget.used == 2)
    }

    @Test func aPipeTakesTwoDescriptorsOrNone() {
        let budget = FileDescriptorBudget(processLimit: 131)  // capacity 3
        #expect(budget.tryAcquire(2))
        #expect(!budget.tryAcquire(2))  // one left: a pipe would need two
        #expect(budget.used == 2)
        #expect(budget.tryAcquire())
        budget.release(2)
        #expect(budget.used == 1)
    }

    @Test func connectionLimiterRefusesWhenDescriptorsRunShort() {
        let budget = FileDescriptorBudget(processLimit: 131)  // capacity 3
        let limiter = ConnectionLimiter(limit: 10_000, budget: budget)
        // Another holder (a sink's temporary file) takes one descriptor.
        #expect(budget.tryAcquire())
        #expect(limiter.tryAcquire())
        #expect(limiter.tryAcquire())
        // Far below max_connections, but no descriptor left: refused, nothing counted.
        #expect(!limiter.tryAcquire())
        #expect(limiter.current == 2)
        #expect(budget.used == 3)
        limiter.release()
        #expect(limiter.current == 1)
        #expect(budget.used == 2)
        #expect(limiter.tryAcquire())
    }

    @Test func connectionLimiterStillEnforcesMaxConnections() {
        let budget = FileDescriptorBudget(processLimit: 10_000)
        let limiter = ConnectionLimiter(limit: 2, budget: budget)
        #expect(limiter.tryAcquire())
        #expect(limiter.tryAcquire())
        #expect(!limiter.tryAcquire())
        #expect(budget.used == 2)
    }
}
