import NIOCore

/// Runs a connection's task on its channel's event loop (receivers use it for
/// each connection's task: `tcp` and `http`).
///
/// Without it, every chunk the event loop reads wakes a thread of the cooperative
/// pool to consume it (and every disk write resumes there): a thread hop and a
/// wake-up per chunk. With the connection's task preferring its event loop, the
/// consumer runs on the thread that just read the data. Blocking work still leaves
/// the loop: the disk sink writes on its own thread pool.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) {
        self.loop = loop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
