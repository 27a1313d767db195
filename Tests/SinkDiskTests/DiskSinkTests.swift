import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceCore
import SluiceTestKit
import Synchronization
import Testing

@testable import SinkDisk

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A unique directory under the system temp directory, removed by `remove()`.
struct Scratch {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "sluice-disk-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// A scratch directory with a tmpfs of `size` mounted on it (a small disk to fill);
    /// `nil` when mounting is not permitted.
    static func tmpfs(size: String) throws -> Scratch? {
        let dir = try Scratch()
        guard try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", dir.path]) == 0 else {
            dir.remove()
            return nil
        }
        return dir
    }

    func unmountAndRemove() {
        _ = try? run("/bin/umount", [path])
        remove()
    }

    func contents(_ relative: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path + "/" + relative).map(Array.init)
    }

    /// Every regular file under the directory, relative, sorted.
    func files() -> [String] {
        guard let e = FileManager.default.enumerator(atPath: path) else { return [] }
        var out: [String] = []
        while let item = e.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path + "/" + item, isDirectory: &isDirectory), !isDirectory.boolValue {
                out.append(item)
            }
        }
        return out.sorted()
    }

    /// Waits up to 2 s for exactly one file in the sink's temporary directory.
    func waitForOneTemporary() async throws -> Bool {
        for _ in 0..<100 {
            if temporaries().count == 1 { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// The sink's temporary files, named or anonymous (open, unlinked).
    func temporaries(root: String? = nil) -> [String] {
        temporaryFiles(in: (root ?? path) + "/.sluice-tmp")
    }
}

func context(name: String, mode: UploadMode = .object) -> UploadContext {
    UploadContext(metadata: UploadMetadata(name: name, listener: "test", mode: mode), pipeline: "p", logger: Logger(label: "test"))
}

func sink(_ root: String, name: String = "{name}", onConflict: DiskSinkPlugin.ConflictPolicy = .fail,
          fsync: Bool = false, createDirectories: Bool = true, fileMode: UInt32? = nil,
          memoryBuffer: ByteSize = DiskSinkPlugin.Configuration.defaultMemoryBuffer) throws -> DiskSink {
    DiskSink(configuration: .init(root: root, name: try NameTemplate(name), fsync: fsync, onConflict: onConflict,
                                  createDirectories: createDirectories, fileMode: fileMode, memoryBuffer: memoryBuffer))
}

func code(of body: () async throws -> some Any) async -> SluiceError.Code? {
    do {
        _ = try await body()
        return nil
    } catch {
        return SluiceError.from(error).code
    }
}

@Suite("disk sink")
struct DiskSinkTests {
    @Test("stores the bytes exactly, reports a relative location, leaves no temporary file")
    func storesBytes() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path + "/root", name: "{listener}/{name}")
        try await disk.start()
        let payload = pseudoRandomBytes(count: 3 * 1024 * 1024 + 17)
        // Small chunks exercise coalescing; large ones the direct path.
        for (name, chunkSize) in [("small.bin", 1000), ("large.bin", 300_000)] {
            let receipt = try await disk.store(.bytes(payload, chunkSize: chunkSize), context: context(name: name))
            #expect(receipt.location == "test/\(name)")
            #expect(receipt.bytesStored == Int64(payload.count))
            #expect(dir.contents("root/test/\(name)") == payload)
        }
        #expect(dir.temporaries(root: dir.path + "/root").isEmpty)
    }

    @Test("named temporary files (where anonymous ones are unsupported) store the same bytes under every conflict policy",
          arguments: [DiskSinkPlugin.ConflictPolicy.fail, .overwrite, .unique])
    func namedTemporaries(policy: DiskSinkPlugin.ConflictPolicy) async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, onConflict: policy)
        try await disk.start()
        #expect(disk.anonymous.supported)  // Linux with /proc: the probe passes on ext4 and tmpfs
        disk.anonymous.supported = false
        for (name, size) in [("small.bin", 1000), ("large.bin", 1 << 20)] {
            let payload = pseudoRandomBytes(count: size)
            let receipt = try await disk.store(.bytes(payload, chunkSize: 100_000), context: context(name: name))
            #expect(dir.contents(receipt.location) == payload)
            if policy != .fail {
                let again = try await disk.store(.bytes(Array(payload.reversed()), chunkSize: 100_000), context: context(name: name))
                #expect(dir.contents(again.location) == Array(payload.reversed()))
            }
        }
        #expect(dir.temporaries().isEmpty)
    }

    @Test("an empty body stores an empty file")
    func emptyBody() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let receipt = try await disk.store(.empty, context: context(name: "empty"))
        #expect(receipt.bytesStored == 0)
        #expect(dir.contents("empty") == [])
    }

    @Test("a body that fails mid-way leaves no file and no temporary file (within memory_buffer or past it)",
          arguments: [100, 100_000])
    func failingBody(size: Int) async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let result = await code { try await disk.store(.failing(after: Array(repeating: 7, count: size)), context: context(name: "broken")) }
        #expect(result == .clientAborted)
        #expect(dir.files().isEmpty)
    }

    @Test("cancellation leaves no file even when the body just ends")
    func cancellation() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        // AsyncStream ends quietly when its consumer is cancelled: the sink must not take that for a complete upload.
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        continuation.yield(ByteBuffer(repeating: 1, count: 1000))
        let task = Task { try await disk.store(UploadBody(stream), context: context(name: "cancelled")) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let result = await code { try await task.value }
        #expect(result == .clientAborted)
        #expect(dir.files().isEmpty)
    }

    @Test("memory_buffer: an upload holds no temporary file until it outgrows the buffer, then streams into one")
    func memoryBuffer() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, memoryBuffer: .kibibytes(16))
        try await disk.start()
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let task = Task { try await disk.store(UploadBody(stream), context: context(name: "grows")) }
        let first = pseudoRandomBytes(count: 10_000, seed: 1)
        continuation.yield(ByteBuffer(bytes: first))
        try await Task.sleep(for: .milliseconds(200))
        #expect(dir.temporaries().isEmpty, "a file was opened for 10,000 bytes with a 16 KiB buffer")
        let second = pseudoRandomBytes(count: 10_000, seed: 2)
        continuation.yield(ByteBuffer(bytes: second))
        // Past the buffer: the temporary file appears while the upload is still open.
        #expect(try await dir.waitForOneTemporary())
        continuation.finish()
        let receipt = try await task.value
        #expect(receipt.bytesStored == 20_000)
        #expect(dir.contents("grows") == first + second)
        #expect(dir.temporaries().isEmpty)
    }

    @Test("memory_buffer: a body whose waiting bytes already take it past the buffer streams into its file after the first chunk",
          arguments: [0, 1 << 20])
    func memoryBufferSkippedWhenBytesWait(waiting: Int) async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, memoryBuffer: .kibibytes(64))
        try await disk.start()
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let body = UploadBody(stream) { WaitingPieces(base: stream.makeAsyncIterator(), waiting: waiting) }
        let task = Task { try await disk.store(body, context: context(name: "early")) }
        let first = pseudoRandomBytes(count: 1_000, seed: 4)
        continuation.yield(ByteBuffer(bytes: first))
        if waiting > 0 {
            // 1,000 bytes read, a MiB waiting behind them: the file is open at once.
            #expect(try await dir.waitForOneTemporary())
        } else {
            try await Task.sleep(for: .milliseconds(200))
            #expect(dir.temporaries().isEmpty, "a file was opened for 1,000 bytes with nothing waiting")
        }
        let second = pseudoRandomBytes(count: 100_000, seed: 5)
        continuation.yield(ByteBuffer(bytes: second))
        continuation.finish()
        let receipt = try await task.value
        #expect(receipt.bytesStored == 101_000)
        #expect(dir.contents("early") == first + second)
        #expect(dir.temporaries().isEmpty)
    }

    @Test("memory_buffer: 0 opens the temporary file at the first byte")
    func memoryBufferZero() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, memoryBuffer: ByteSize(0))
        try await disk.start()
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let task = Task { try await disk.store(UploadBody(stream), context: context(name: "direct")) }
        continuation.yield(ByteBuffer(string: "x"))
        #expect(try await dir.waitForOneTemporary())
        continuation.finish()
        _ = try await task.value
        #expect(dir.contents("direct") == Array("x".utf8))
    }

    @Test("on_conflict: fail refuses with conflict and keeps the original")
    func conflictFail() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        _ = try await disk.store(.string("first"), context: context(name: "a.txt"))
        let result = await code { try await disk.store(.string("second"), context: context(name: "a.txt")) }
        #expect(result == .conflict)
        #expect(result?.httpStatus == 409)
        #expect(dir.contents("a.txt") == Array("first".utf8))
        #expect(dir.files() == ["a.txt"])
    }

    @Test("a streamed upload (past memory_buffer) that conflicts leaves the original and no temporary file")
    func conflictStreamed() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, memoryBuffer: .kibibytes(16))
        try await disk.start()
        let first = pseudoRandomBytes(count: 100_000, seed: 3)
        let stored = try await disk.store(.bytes(first, chunkSize: 10_000), context: context(name: "big.bin"))
        #expect(stored.bytesStored == 100_000)
        let result = await code { try await disk.store(.bytes(pseudoRandomBytes(count: 100_000, seed: 4), chunkSize: 10_000), context: context(name: "big.bin")) }
        #expect(result == .conflict)
        #expect(dir.contents("big.bin") == first)
        #expect(dir.files() == ["big.bin"])
    }

    @Test("on_conflict: fail is atomic under concurrent uploads of one name: exactly one wins")
    func conflictRace() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let outcomes = await withTaskGroup(of: SluiceError.Code?.self) { group in
            for i in 0..<20 {
                group.addTask { await code { try await disk.store(.string("writer \(i)"), context: context(name: "same")) } }
            }
            var all: [SluiceError.Code?] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        #expect(outcomes.filter { $0 == nil }.count == 1)
        #expect(outcomes.filter { $0 == .conflict }.count == 19)
        #expect(dir.files() == ["same"])
    }

    @Test("on_conflict: overwrite replaces; unique numbers")
    func conflictPolicies() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let overwrite = try sink(dir.path + "/o", onConflict: .overwrite)
        try await overwrite.start()
        _ = try await overwrite.store(.string("first"), context: context(name: "a.txt"))
        _ = try await overwrite.store(.string("second"), context: context(name: "a.txt"))
        #expect(dir.contents("o/a.txt") == Array("second".utf8))
        #expect(dir.temporaries(root: dir.path + "/o").isEmpty)

        let unique = try sink(dir.path + "/u", onConflict: .unique)
        try await unique.start()
        var locations: [String] = []
        for i in 0..<3 {
            locations.append(try await unique.store(.string("v\(i)"), context: context(name: "logs.tar.gz")).location)
        }
        for i in 0..<2 {
            locations.append(try await unique.store(.string("r\(i)"), context: context(name: "README")).location)
        }
        #expect(locations == ["logs.tar.gz", "logs-1.tar.gz", "logs-2.tar.gz", "README", "README-1"])
        #expect(dir.contents("u/logs-2.tar.gz") == Array("v2".utf8))
    }

    @Test("hostile names never write outside the root", arguments: ["../escape", "a/../../escape", "/etc/escape", "a//b", ".", "bad\u{1}name"])
    func hostileNames(name: String) async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path + "/root")
        try await disk.start()
        let result = await code { try await disk.store(.string("evil"), context: context(name: name)) }
        #expect(result == .invalidName)
        #expect(dir.files().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/etc/escape"))
    }

    @Test("a symbolic link inside the root cannot redirect a write outside it")
    func symlinkEscape() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.path + "/outside", withIntermediateDirectories: true)
        let disk = try sink(dir.path + "/root", onConflict: .overwrite)
        try await disk.start()
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/root/link", withDestinationPath: dir.path + "/outside")
        let result = await code { try await disk.store(.string("evil"), context: context(name: "link/file")) }
        #expect(result == .invalidName)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/outside").isEmpty)
        // A symbolic link as the final name is replaced itself, never written through.
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/root/target", withDestinationPath: dir.path + "/outside/victim")
        _ = try await disk.store(.string("safe"), context: context(name: "target"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/outside/victim"))
        #expect(dir.contents("root/target") == Array("safe".utf8))
        #expect(dir.temporaries(root: dir.path + "/root").isEmpty)
    }

    @Test("the temporary directory cannot be named")
    func reservedName() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let result = await code { try await disk.store(.string("x"), context: context(name: ".sluice-tmp/123-abc.part")) }
        #expect(result == .invalidName)
    }

    @Test("create_directories: false refuses a missing directory; true creates it")
    func createDirectories() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let strict = try sink(dir.path + "/s", createDirectories: false)
        try await strict.start()
        #expect(await code { try await strict.store(.string("x"), context: context(name: "sub/x")) } == .invalidName)
        #expect(dir.temporaries(root: dir.path + "/s").isEmpty)
        let lenient = try sink(dir.path + "/l", fsync: true)
        try await lenient.start()
        _ = try await lenient.store(.string("x"), context: context(name: "a/b/c/x"))
        #expect(dir.contents("l/a/b/c/x") == Array("x".utf8))
    }

    @Test("file_mode sets the permissions of stored files and sidecars")
    func fileMode() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, fileMode: 0o640)
        try await disk.start()
        let ctx = context(name: "m")
        ctx.recordDigest(Array(repeating: 1, count: 32), algorithm: .sha256)
        ctx.requestSidecar(.sha256)
        _ = try await disk.store(.string("x"), context: ctx)
        for file in ["m", "m.sha256"] {
            let attributes = try FileManager.default.attributesOfItem(atPath: dir.path + "/" + file)
            #expect((attributes[.posixPermissions] as? Int) == 0o640)
        }
    }

    @Test("sidecars are in sha256sum -c format and pass sha256sum -c")
    func sidecars() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, onConflict: .unique)
        try await disk.start()
        let payload = pseudoRandomBytes(count: 100_000)
        for _ in 0..<2 {
            let ctx = context(name: "data.bin")
            var computer = DigestAlgorithm.sha256.makeComputer()
            computer.update(ByteBuffer(bytes: payload))
            ctx.recordDigest(computer.finalize(), algorithm: .sha256)
            ctx.requestSidecar(.sha256)
            _ = try await disk.store(.bytes(payload), context: ctx)
        }
        #expect(dir.files() == ["data-1.bin", "data-1.bin.sha256", "data.bin", "data.bin.sha256"])
        let line = String(decoding: dir.contents("data-1.bin.sha256") ?? [], as: UTF8.self)
        #expect(line.hasSuffix("  data-1.bin\n"))
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["sha256sum", "--quiet", "-c", "data.bin.sha256", "data-1.bin.sha256"]
        check.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0)
    }

    @Test("the name may use a digest recorded while the body streamed")
    func digestName() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path, name: "{sha256}{ext}")
        try await disk.start()
        let ctx = context(name: "x.txt")
        let body = UploadBody.string("hello").observed({ _ in }, onEnd: {
            ctx.recordDigest(Array(repeating: 0xab, count: 4), algorithm: .sha256)
        })
        let receipt = try await disk.store(body, context: ctx)
        #expect(receipt.location == "abababab.txt")
    }

    @Test("start sweeps temporary files of dead processes and keeps live ones")
    func sweep() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let temp = dir.path + "/.sluice-tmp/"
        let deadPID = try deadProcessID()
        let files = [
            "\(deadPID)-11111111.part",  // a crashed run
            "\(getpid())-22222222.part",  // this process, not owned by an upload: a leftover
            "1-33333333.part",  // a live process (init): maybe another server
            "notes.txt",  // not ours
        ]
        for file in files { #expect(FileManager.default.createFile(atPath: temp + file, contents: Data("x".utf8))) }
        // One owned by an in-flight upload of this process (a reload must not remove it).
        InFlightTemporaries.insert(temp + "\(getpid())-44444444.part")
        defer { InFlightTemporaries.remove(temp + "\(getpid())-44444444.part") }
        #expect(FileManager.default.createFile(atPath: temp + "\(getpid())-44444444.part", contents: Data("x".utf8)))

        try await disk.start()
        #expect(dir.temporaries() == ["\(getpid())-44444444.part", "1-33333333.part", "notes.txt"].sorted())
    }

    @Test("errors map to client-actionable codes: disk full is insufficient_storage")
    func errorMapping() {
        #expect(FileSystemCalls.failure("write", "x", ENOSPC).code == .insufficientStorage)
        #expect(FileSystemCalls.failure("write", "x", EDQUOT).code == .insufficientStorage)
        #expect(FileSystemCalls.failure("store", "x", EEXIST).code == .conflict)
        #expect(FileSystemCalls.failure("write", "x", EIO).code == .internal)
    }

    @Test("a full disk refuses the upload with insufficient_storage and leaves nothing",
          .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
    func diskFull() async throws {
        // No permission to mount here (a container without CAP_SYS_ADMIN): the mapping test covers it.
        guard let dir = try Scratch.tmpfs(size: "256k") else { return }
        defer { dir.unmountAndRemove() }
        let disk = try sink(dir.path)
        try await disk.start()
        // No declared length: the writes find the disk full (the reservations ahead fail quietly).
        let result = await code {
            try await disk.store(.bytes(pseudoRandomBytes(count: 1024 * 1024)).declaringLength(nil), context: context(name: "big"))
        }
        #expect(result == .insufficientStorage)
        #expect(dir.files().isEmpty)
    }

    @Test("a declared length the disk cannot hold is refused before the body is read; one that fits lands",
          .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
    func declaredLengthTooLarge() async throws {
        guard let dir = try Scratch.tmpfs(size: "1m") else { return }  // no permission to mount here
        defer { dir.unmountAndRemove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let read = ReadFlag()
        let tooLarge = UploadBody(WatchedBody(flag: read, count: 4 << 20)).declaringLength(4 << 20)
        #expect(await code { try await disk.store(tooLarge, context: context(name: "big")) } == .insufficientStorage)
        #expect(!read.value, "the body was read")
        #expect(dir.files().isEmpty)
        #expect(dir.temporaries().isEmpty)

        let payload = pseudoRandomBytes(count: 300_000, seed: 3)
        _ = try await disk.store(.bytes(payload), context: context(name: "fits"))
        #expect(dir.contents("fits") == payload)
    }

    @Test("a declared length is checked, not reserved: an upload that sent a little holds a little of the disk",
          .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
    func declaredLengthNotReserved() async throws {
        guard let dir = try Scratch.tmpfs(size: "4m") else { return }  // no permission to mount here
        defer { dir.unmountAndRemove() }
        let disk = try sink(dir.path)
        try await disk.start()
        func free() -> Int {
            var info = statvfs()
            return statvfs(dir.path, &info) == 0 ? Int(info.f_bfree) * Int(info.f_frsize) : 0
        }
        let before = free()
        let payload = pseudoRandomBytes(count: 3_000_000, seed: 21)
        let (gate, opener) = AsyncStream<Void>.makeStream()
        let body = UploadBody(HeldBody(bytes: payload, heldAfter: 200_000, gate: gate)).declaringLength(Int64(payload.count))
        let upload = Task { try await disk.store(body, context: context(name: "held")) }
        // The file is being written once the free space moved (the writer may keep up to 256 KiB
        // of what arrived in memory while the body pauses, so how much of the 200,000 bytes is
        // in the file by then varies); reserving the declared length would take 3,000,000 at once.
        let deadline = ContinuousClock.now + .seconds(10)
        while free() >= before, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(200))
        let held = before - free()
        #expect(held > 0 && held <= 1_100_000, "an upload 200,000 bytes into 3,000,000 holds \(held) bytes of the disk")
        opener.yield()
        opener.finish()
        _ = try await upload.value
        #expect(dir.contents("held") == payload)
    }

    @Test("streamed files show what was written and keep no blocks reserved past it, declared or not, preallocate on or off")
    func preallocation() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        for preallocate in [true, false] {
            var configuration = DiskSinkPlugin.Configuration(root: dir.path + "/\(preallocate)")
            configuration.preallocate = preallocate
            let disk = DiskSink(configuration: configuration)
            try await disk.start()
            for size in [200_000, 1 << 20, 3 * (1 << 20) / 2 + 17, 9 << 20] {
                let payload = pseudoRandomBytes(count: size, seed: UInt64(size))
                for declared in [true, false] {
                    let name = "\(size)-\(declared)"
                    let body = UploadBody.bytes(payload, chunkSize: 100_000).declaringLength(declared ? Int64(size) : nil)
                    let receipt = try await disk.store(body, context: context(name: name))
                    #expect(receipt.bytesStored == Int64(size))
                    var info = stat()
                    #expect(stat(dir.path + "/\(preallocate)/" + name, &info) == 0)
                    #expect(Int(info.st_size) == size, "\(name)")
                    // Blocks allocated: the data rounded up to a 4 KiB block, plus slack for the
                    // file system's own; a reservation left in place would add up to 8 MiB.
                    #expect(Int(info.st_blocks) * 512 <= size + 64 * 1024, "\(name): \(info.st_blocks * 512) bytes allocated")
                    #expect(dir.contents("\(preallocate)/" + name) == payload)
                }
            }
        }
    }

    @Test("reservations: none below the threshold, then whole MiB steps reaching twice the size written, capped")
    func reservationSteps() {
        var reservation = Reservation.growing()
        func next(_ offset: Int64, _ count: Int) -> [Int64] {
            reservation.stretch(before: offset, count: count).map { [$0.offset, $0.length] } ?? []
        }
        #expect(next(0, 65_536) == [])
        #expect(next(65_536, 65_536) == [])  // 128 KiB: not past the threshold
        #expect(next(131_072, 1) == [0, 1 << 20])
        #expect(next(131_073, 900_000) == [])  // within the first MiB
        #expect(next(1 << 20, 4096) == [1 << 20, 2 << 20])  // to 3 MiB (2 × (1 MiB + 4 KiB), rounded up)
        let trimmed = reservation.trim(written: (1 << 20) + 4096)
        #expect(trimmed == Int64((1 << 20) + 4096))
        #expect(reservation.trim(written: 3 << 20) == nil)

        var large = Reservation.growing()
        #expect(large.stretch(before: 0, count: 100 << 20)?.length == 164 << 20)  // 64 MiB ahead at most
        let next = large.stretch(before: 100 << 20, count: (64 << 20) + 1)
        #expect(next?.offset == 164 << 20)
        #expect(next?.length == 65 << 20)  // from 164 MiB + 1 byte: 64 MiB ahead, rounded up to whole MiB

        // A declared length: never reserved past it, so nothing is left to trim.
        let length: Int64 = (3 << 20) + 17
        var declared = Reservation.growing(upTo: length)
        #expect(declared.stretch(before: 0, count: 200_000)?.length == 1 << 20)  // not all at once
        #expect(declared.stretch(before: 1 << 20, count: 4096)?.length == 2 << 20)
        let last = declared.stretch(before: 3 << 20, count: 17)
        #expect(last?.offset == 3 << 20)
        #expect(last?.length == 17)
        #expect(declared.trim(written: length) == nil)

        var off = Reservation.off
        #expect(off.stretch(before: 10 << 20, count: 1 << 20) == nil)
        #expect(off.trim(written: 11 << 20) == nil)
    }

    /// Receivers run uploads on their connection's event loop, where writes run inline.
    @Test("on an event loop (inline writes): streamed uploads land exactly; a failing one leaves nothing")
    func inlineWrites() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let disk = try sink(dir.path)
        try await disk.start()
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let payload = pseudoRandomBytes(count: 3 * 1024 * 1024 + 17)
        for (name, chunkSize) in [("small.bin", 1000), ("large.bin", 300_000)] {
            let receipt = try await Task(executorPreference: EventLoopTaskExecutor(eventLoop)) {
                #expect(disk.inlineWrites.eventLoop() != nil)
                return try await disk.store(.bytes(payload, chunkSize: chunkSize), context: context(name: name))
            }.value
            #expect(receipt.bytesStored == Int64(payload.count))
            #expect(dir.contents(name) == payload)
        }
        let failed = await code {
            try await Task(executorPreference: EventLoopTaskExecutor(eventLoop)) {
                try await disk.store(.failing(after: Array(repeating: 7, count: 500_000)), context: context(name: "broken"))
            }.value
        }
        #expect(failed == .clientAborted)
        #expect(dir.files() == ["large.bin", "small.bin"])
    }

    @Test("inline writes: only on an event loop, off after a slow write until the backoff passed, never with 0s")
    func inlineWritesPolicy() async throws {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let inline = InlineWrites(limit: .milliseconds(20), backoff: .milliseconds(200), root: "/r", logger: Logger(label: "test"))
        #expect(inline.eventLoop() == nil)  // not on an event loop here
        #expect(try await eventLoop.submit { inline.eventLoop() != nil }.get())
        inline.record(.milliseconds(5))
        #expect(try await eventLoop.submit { inline.eventLoop() != nil }.get())
        inline.record(.milliseconds(25))
        #expect(try await eventLoop.submit { inline.eventLoop() == nil }.get())
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await eventLoop.submit { inline.eventLoop() != nil }.get())
        let off = InlineWrites(limit: .zero, root: "/r", logger: Logger(label: "test"))
        #expect(try await eventLoop.submit { off.eventLoop() == nil }.get())
    }

    @Test("inline writes: slow writes in a row double the time on the disk threads up to the maximum; a later one starts over")
    func inlineWritesBackoff() async throws {
        let inline = InlineWrites(limit: .milliseconds(20), backoff: .milliseconds(20), maxBackoff: .milliseconds(100), root: "/r", logger: Logger(label: "test"))
        inline.record(.milliseconds(30))
        #expect(inline.currentBackoffTime == .milliseconds(20))
        inline.record(.milliseconds(30))  // still on the threads: slow again at once
        #expect(inline.currentBackoffTime == .milliseconds(40))
        inline.record(.milliseconds(30))
        inline.record(.milliseconds(30))
        #expect(inline.currentBackoffTime == .milliseconds(100))  // 80, then capped
        try await Task.sleep(for: .milliseconds(400))  // well past the window and one more backoff
        inline.record(.milliseconds(30))
        #expect(inline.currentBackoffTime == .milliseconds(20))
    }

    @Test("config: keys decode with defaults; bad values are located errors")
    func configuration() throws {
        var registry = PluginRegistry()
        registry.register(DiskSinkPlugin.self)
        func parse(_ sink: String) throws -> LoadedConfig {
            try LoadedConfig.parse("pipelines:\n  p:\n    sink:\n" + sink, file: "t.yaml", registry: registry)
        }
        _ = try parse("      type: disk\n      root: /tmp/x\n")
        let cases: [(String, String)] = [
            ("      type: disk\n", "missing required key \"root\""),
            ("      type: disk\n      root: /x\n      on_conflict: merge\n", "expected one of fail, overwrite, unique"),
            ("      type: disk\n      root: /x\n      name: \"../{name}\"\n", "does not make a safe relative name"),
            ("      type: disk\n      root: /x\n      name: \"/abs/{name}\"\n", "does not make a safe relative name"),
            ("      type: disk\n      root: /x\n      name: \".sluice-tmp/{name}\"\n", "reserved for temporary files"),
            ("      type: disk\n      root: /x\n      name: \"{nope}\"\n", "unknown placeholder {nope}"),
            ("      type: disk\n      root: /x\n      file_mode: rw\n", "expected an octal mode"),
            ("      type: disk\n      root: /x\n      fsync: maybe\n", "expected true or false"),
            ("      type: disk\n      root: /x\n      memory_buffer: 1GiB\n", "memory_buffer: must be at most 16MiB"),
            ("      type: disk\n      root: /x\n      inline_writes: soon\n", "inline_writes: expected a duration"),
            ("      type: disk\n      root: /x\n      roots: /y\n", "unknown key \"roots\""),
        ]
        for (yaml, message) in cases {
            do {
                _ = try parse(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
                #expect("\(error)".contains("t.yaml:"), "\(error)")
            }
        }
    }
}

/// A stream's chunks as pieces, reporting `waiting` bytes ready behind each (a socket's queue).
struct WaitingPieces: BodyPieceIterator {
    var base: AsyncStream<ByteBuffer>.Iterator
    let waiting: Int
    mutating func next(allowPipe: Bool) async throws -> BodyPiece? {
        await base.next().map { .bytes($0) }
    }
    mutating func bytesWaiting() async -> Int { waiting }
}

/// Set once a body was read.
final class ReadFlag: Sendable {
    private let flag = Mutex(false)
    var value: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}

/// `count` zero bytes in 64 KiB chunks that set `flag` when first asked for one.
struct WatchedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let flag: ReadFlag
    let count: Int
    func makeAsyncIterator() -> Iterator { Iterator(flag: flag, remaining: count) }
    struct Iterator: AsyncIteratorProtocol {
        let flag: ReadFlag
        var remaining: Int
        mutating func next() async throws -> ByteBuffer? {
            flag.set()
            guard remaining > 0 else { return nil }
            let n = Swift.min(remaining, 65_536)
            remaining -= n
            return ByteBuffer(repeating: 0, count: n)
        }
    }
}

/// `bytes` in 64 KiB chunks, waiting on `gate` once `heldAfter` bytes went out (a client that pauses).
struct HeldBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let bytes: [UInt8]
    let heldAfter: Int
    let gate: AsyncStream<Void>
    func makeAsyncIterator() -> Iterator { Iterator(body: self) }
    struct Iterator: AsyncIteratorProtocol {
        let body: HeldBody
        var offset = 0
        var waited = false
        mutating func next() async throws -> ByteBuffer? {
            if offset >= body.heldAfter, !waited {
                waited = true
                for await _ in body.gate { break }
            }
            guard offset < body.bytes.count else { return nil }
            let end = Swift.min(offset + 65_536, offset < body.heldAfter ? body.heldAfter : body.bytes.count)
            defer { offset = end }
            return ByteBuffer(bytes: body.bytes[offset..<end])
        }
    }
}

/// The id of a process that has exited.
func deadProcessID() throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/true")
    try p.run()
    p.waitUntilExit()
    return p.processIdentifier
}

func run(_ executable: String, _ arguments: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}
