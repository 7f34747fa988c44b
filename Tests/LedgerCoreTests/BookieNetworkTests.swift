import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import LedgerCore

#if canImport(Glibc)
    import Glibc
#endif

/// Bookies on 127.0.0.1 (`BookieServer` over `LocalBookie`) driven through `RemoteBookie`: the wire protocol,
/// ensembles of several bookies, an ensemble change when a bookie dies mid-writes, fencing over the network and
/// malformed frames.
@Suite("Bookies on the network")
struct BookieNetworkTests {
    /// Bookie servers on 127.0.0.1, each over its own `LocalBookie` in a temporary directory.
    final class Cluster: Sendable {
        let directory = TemporaryDirectory()
        let bookies: [LocalBookie]
        let servers: [BookieServer]
        let ports: [Int]
        let logs = Recorder<String>()
        /// The metadata store every client shares (as nodes share the registry's).
        let store: FileMetadataStore

        init(count: Int) throws {
            store = try FileMetadataStore(path: directory.path + "/metadata")
            var bookies: [LocalBookie] = []
            var servers: [BookieServer] = []
            var ports: [Int] = []
            for index in 0..<count {
                let bookie = try LocalBookie(id: "b\(index)", directory: directory.path + "/b\(index)")
                let server = BookieServer(
                    bookie: bookie, maxFrameBytes: BookieWire.maxFrameBytes(maxPayloadBytes: 1 << 20),
                    log: { [logs] _, line in logs.record(line) })
                ports.append(try server.start(listen: "127.0.0.1:0"))
                bookies.append(bookie)
                servers.append(server)
            }
            self.bookies = bookies
            self.servers = servers
            self.ports = ports
        }

        /// `b0=127.0.0.1:PORT,...` for the `bookies` setting.
        var list: String { ports.enumerated().map { "b\($0.offset)=127.0.0.1:\($0.element)" }.joined(separator: ",") }

        /// A client's view: remote bookies for every server (connections of its own), the shared metadata store.
        func client(timeout: Duration = .seconds(5)) throws -> (
            BookieDirectory, LedgerManager
        ) {
            var options = RemoteBookie.Options()
            options.timeout = timeout
            let directory = try BookieDirectory.connecting(local: nil, list: list, options: options)
            return (directory, LedgerManager(store: store, prefix: "ledgers", directory: directory))
        }

        func kill(_ index: Int) {
            servers[index].stop()
            bookies[index].stop(checkpoint: false)
        }

        func stop() {
            for index in servers.indices { kill(index) }
            directory.remove()
        }
    }

    static func payload(_ entry: Int) -> [UInt8] { Array("entry-\(entry)-".utf8) + Array(repeating: 7, count: 100) }

    /// Appends `count` entries without waiting, then waits for every completion (at most 30 s).
    static func appendAll(
        _ writer: LedgerWriter, _ range: Range<Int>, during: ((Int) -> Void)? = nil
    ) -> [Result<Int64, LedgerError>] {
        let results = Recorder<Result<Int64, LedgerError>>()
        let done = DispatchSemaphore(value: 0)
        for entry in range {
            writer.append(payload(entry)) { result in
                results.record(result)
                done.signal()
            }
            during?(entry)
        }
        for _ in range { _ = done.wait(timeout: .now() + 30) }
        return results.values
    }

    @Test("E 3, Qw 2, Qa 2 over three bookie servers: entries striped, acknowledged, read back")
    func writeAndRead() throws {
        let cluster = try Cluster(count: 3)
        defer { cluster.stop() }
        let (directory, manager) = try cluster.client()
        defer { directory.shutdown() }
        let quorum = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let ensemble = try directory.chooseEnsemble(size: 3)
        #expect(Set(ensemble) == ["b0", "b1", "b2"])
        let (metadata, writer) = try manager.create(ensemble: ensemble, quorum: quorum)
        let results = Self.appendAll(writer, 0..<200)
        #expect(results.count == 200)
        #expect(results.allSatisfy { (try? $0.get()) != nil }, "\(results.first { (try? $0.get()) == nil }!)")
        #expect(writer.lastAddConfirmed == 199)
        // Each bookie holds the two thirds of the entries its positions stripe to.
        for (position, id) in ensemble.enumerated() {
            let bookie = cluster.bookies[Int(id.dropFirst())!]
            let expected = (0..<200).filter { quorum.writeSet(Int64($0)).contains(position) }.count
            #expect(bookie.tail(metadata.id).lastEntry >= 198)
            let held = (0..<200).filter { entry in
                (try? waitFor { bookie.readEntry(ledger: metadata.id, entry: Int64(entry), completion: $0) }) != nil
            }.count
            #expect(held == expected, "bookie \(id)")
        }
        let reader = try manager.reader(try manager.read(metadata.id).0)
        let entries = try waitFor { reader.read(0, through: 199, completion: $0) }
        #expect(entries.map(\.payload) == (0..<200).map(Self.payload))
        // The bookies learn the LAC from the entries that carry it: one more add sent after 199 completed.
        #expect(Self.appendAll(writer, 200..<201).allSatisfy { (try? $0.get()) == 200 })
        #expect(try waitFor { reader.readLastAddConfirmed(completion: $0) } == 199)
    }

    @Test("a bookie killed mid-writes: a new fragment replaces it, every acknowledged entry stays readable")
    func ensembleChangeOnKill() throws {
        let cluster = try Cluster(count: 4)
        defer { cluster.stop() }
        let (directory, manager) = try cluster.client()
        defer { directory.shutdown() }
        let quorum = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let (metadata, writer) = try manager.create(ensemble: ["b0", "b1", "b2"], quorum: quorum)
        // 100 entries acknowledged first, so that the new fragment starts after them.
        #expect(Self.appendAll(writer, 0..<100).allSatisfy { (try? $0.get()) != nil })
        let killed = Mutex(false)
        let results = Self.appendAll(writer, 100..<400) { entry in
            guard entry == 150 else { return }
            killed.withLock { $0 = true }
            cluster.kill(1)
        }
        #expect(killed.withLock { $0 })
        let failures = results.compactMap { result -> LedgerError? in
            if case .failure(let error) = result { return error }
            return nil
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        #expect(writer.lastAddConfirmed == 399)
        #expect(writer.ensembleChanges == 1)
        let (after, _) = try manager.read(metadata.id)
        try #require(after.fragments.count == 2)
        #expect(after.fragments[0].ensemble == ["b0", "b1", "b2"])
        #expect(after.fragments[1].ensemble == ["b0", "b3", "b2"])
        let firstEntry = after.fragments[1].firstEntry
        #expect(firstEntry >= 100 && firstEntry <= 151, "the new fragment starts at the LAC + 1 of the failure")
        // Every acknowledged entry reads back (b1 is gone: entries of the first fragment come from b0 or b2).
        let reader = try manager.reader(after)
        let entries = try waitFor { reader.read(0, through: 399, completion: $0) }
        #expect(entries.map(\.payload) == (0..<400).map(Self.payload))
        // The replacement holds the entries of its position from the new fragment on (re-sent ones included).
        let replacement = cluster.bookies[3]
        for entry in firstEntry..<400 where quorum.writeSet(entry).contains(1) {
            #expect(
                (try? waitFor { replacement.readEntry(ledger: metadata.id, entry: entry, completion: $0) }) != nil,
                "entry \(entry)")
        }
        // Another client recovers the ledger: it ends at the last acknowledged entry, nothing beyond is visible.
        let (otherDirectory, other) = try cluster.client()
        defer { otherDirectory.shutdown() }
        let recovered = try other.recover(metadata.id)
        #expect(recovered.state == .closed)
        #expect(recovered.lastEntry == 399)
        let beyond = outcome { reader.read(400, completion: $0) }
        #expect(throws: LedgerError.self) { try beyond.get() }
    }

    @Test("no bookie left to replace a dead one: the adds fail, acknowledged entries stay")
    func noReplacement() throws {
        let cluster = try Cluster(count: 3)
        defer { cluster.stop() }
        let (directory, manager) = try cluster.client()
        defer { directory.shutdown() }
        let quorum = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let (metadata, writer) = try manager.create(ensemble: ["b0", "b1", "b2"], quorum: quorum)
        #expect(Self.appendAll(writer, 0..<20).allSatisfy { (try? $0.get()) != nil })
        cluster.kill(2)
        let later = Self.appendAll(writer, 20..<30)
        let failed = later.compactMap { result -> LedgerError? in
            if case .failure(let error) = result { return error }
            return nil
        }
        #expect(!failed.isEmpty)
        #expect(failed.allSatisfy { $0.code == .notEnoughBookies }, "\(failed.first!)")
        #expect(failed.first!.message.contains("b2"), "\(failed.first!)")
        let lac = writer.lastAddConfirmed
        #expect(lac >= 19)
        let reader = try manager.reader(try manager.read(metadata.id).0)
        let entries = try waitFor { reader.read(0, through: lac, completion: $0) }
        #expect(entries.map(\.payload) == (0...Int(lac)).map(Self.payload))
    }

    @Test("fencing over the network: after another client recovers the ledger, the old writer's adds fail 'fenced'")
    func fencingOverTheNetwork() throws {
        let cluster = try Cluster(count: 3)
        defer { cluster.stop() }
        let (directory, manager) = try cluster.client()
        defer { directory.shutdown() }
        let quorum = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let (metadata, zombie) = try manager.create(ensemble: ["b0", "b1", "b2"], quorum: quorum)
        #expect(Self.appendAll(zombie, 0..<10).allSatisfy { (try? $0.get()) != nil })
        let (otherDirectory, other) = try cluster.client()
        defer { otherDirectory.shutdown() }
        let recovered = try other.recover(metadata.id)
        #expect(recovered.lastEntry == 9)
        let refused = outcome { zombie.append(Self.payload(10), completion: $0) }
        guard case .failure(let error) = refused else {
            Issue.record("an add to a fenced ledger succeeded")
            return
        }
        #expect(error.code == .fenced, "\(error)")
        #expect(throws: LedgerError.self) { try manager.close(metadata.id, lastEntry: zombie.lastAddConfirmed) }
    }

    /// A blocking TCP connection for sending raw bytes.
    static func rawConnection(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else { throw LedgerError(.io, "connect: errno \(errno)") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Whether the server closed `fd` (a read returns end of stream) after `bytes` were sent.
    static func closedAfterSending(_ bytes: [UInt8], port: Int) throws -> Bool {
        let fd = try rawConnection(port: port)
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var scratch = [UInt8](repeating: 0, count: 256)
        let count = recv(fd, &scratch, scratch.count, 0)
        return count == 0 || (count < 0 && errno == ECONNRESET)
    }

    @Test("malformed frames close their connection with a log line naming the peer; the server serves the others")
    func malformedFrames() throws {
        let cluster = try Cluster(count: 1)
        defer { cluster.stop() }
        let port = cluster.ports[0]
        // A healthy client first, kept connected throughout.
        var options = RemoteBookie.Options()
        options.timeout = .seconds(5)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let client = try RemoteBookie(id: "b0", address: "127.0.0.1:\(port)", group: group, options: options)
        defer { client.shutdown() }
        try waitFor {
            client.addEntry(
                ledger: 5, entry: 0, lastAddConfirmed: -1, payload: [1, 2, 3], recovery: false, completion: $0)
        }

        var good = ByteBufferAllocator().buffer(capacity: 64)
        BookieWire.read(&good, request: 1, ledger: 5, entry: 0)
        let goodBytes = Array(good.readableBytesView)
        // A bad CRC.
        var badCRC = goodBytes
        badCRC[badCRC.count - 1] ^= 0xFF
        #expect(try Self.closedAfterSending(badCRC, port: port))
        // A length beyond the limit.
        #expect(try Self.closedAfterSending([0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0], port: port))
        // A length below the header.
        #expect(try Self.closedAfterSending([0, 0, 0, 2, 0, 0], port: port))
        // An unknown op with a valid CRC.
        var unknown = ByteBufferAllocator().buffer(capacity: 64)
        let start = BookieWire.begin(&unknown, op: 42, request: 7)
        unknown.writeInteger(UInt64(5))
        BookieWire.end(&unknown, start: start)
        #expect(try Self.closedAfterSending(Array(unknown.readableBytesView), port: port))

        let lines = cluster.logs.values.filter { $0.contains("closing the connection from") }
        #expect(lines.count == 4, "\(cluster.logs.values)")
        #expect(lines.allSatisfy { $0.contains("127.0.0.1") })
        #expect(lines.contains { $0.contains("CRC") } && lines.contains { $0.contains("unknown op 42") })
        // The server and the healthy connection still serve.
        let stored = try waitFor { client.readEntry(ledger: 5, entry: 0, completion: $0) }
        #expect(stored.payload == [1, 2, 3])
        let missing = outcome { client.readEntry(ledger: 5, entry: 9, completion: $0) }
        #expect(missing.failure?.code == .noSuchEntry)
    }

    @Test("frames split at every byte boundary decode to the same frames")
    func decoderSplits() throws {
        var stream = ByteBufferAllocator().buffer(capacity: 256)
        BookieWire.add(
            &stream, request: 1, ledger: 3, entry: 4, lastAddConfirmed: 3, payload: Array(0..<40), recovery: true)
        BookieWire.read(&stream, request: 2, ledger: 3, entry: 4)
        BookieWire.ledgerOnly(&stream, op: .fence, request: 3, ledger: 3)
        let bytes = Array(stream.readableBytesView)
        let expected: [BookieWire.Request] = [
            .add(ledger: 3, entry: 4, lastAddConfirmed: 3, recovery: true, payload: Array(0..<40)),
            .read(ledger: 3, entry: 4), .fence(ledger: 3),
        ]
        for split in 0...bytes.count {
            var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
            var decoded: [BookieWire.Request] = []
            for part in [bytes[..<split], bytes[split...]] {
                buffer.writeBytes(part)
                while let frame = try BookieWire.decodeFrame(&buffer, maxFrameBytes: 1024) {
                    decoded.append(try BookieWire.decodeRequest(frame))
                }
            }
            #expect(decoded == expected, "split at \(split)")
        }
    }

    @Test("requests a stalled client could not send before their deadline are not failed when it runs again")
    func stalledClient() throws {
        let cluster = try Cluster(count: 1)
        defer { cluster.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        var options = RemoteBookie.Options()
        options.timeout = .milliseconds(400)
        let bookie = try RemoteBookie(
            id: "b0", address: "127.0.0.1:\(cluster.ports[0])", group: group, options: options)
        defer { bookie.shutdown() }
        let connected = outcome {
            bookie.addEntry(ledger: 1, entry: 0, lastAddConfirmed: -1, payload: [1], recovery: false, completion: $0)
        }
        try #require(connected.failureCode == nil, "\(connected)")
        // Three adds made on the client's event loop, which then stalls for three timeouts before it can send
        // them (as a SIGSTOP of the process or a long pause would): once it runs again they go out and are
        // answered; before the fix the overdue deadline check failed them all, unsent.
        let results = Recorder<Result<Void, LedgerError>>()
        let done = DispatchSemaphore(value: 0)
        group.next().execute {
            for entry in 1...3 {
                bookie.addEntry(ledger: 1, entry: Int64(entry), lastAddConfirmed: 0, payload: [1], recovery: false) {
                    results.record($0)
                    done.signal()
                }
            }
            Thread.sleep(forTimeInterval: 1.2)
        }
        for _ in 1...3 { #expect(done.wait(timeout: .now() + 10) == .success) }
        #expect(results.values.count == 3 && results.values.allSatisfy { $0.failureCode == nil }, "\(results.values)")
        #expect(bookie.isAvailable)
    }

    @Test("an unreachable or silent bookie fails requests with bookieUnavailable, each completion once")
    func unavailable() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        // Nothing listens: connection refused.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &length) }
        }
        let freePort = Int(UInt16(bigEndian: address.sin_port))
        close(probe)
        let refused = try RemoteBookie(id: "gone", address: "127.0.0.1:\(freePort)", group: group)
        defer { refused.shutdown() }
        let result = outcome { refused.readTail(ledger: 1, completion: $0) }
        #expect(result.failure?.code == .bookieUnavailable, "\(result)")
        #expect(result.failure?.message.contains("gone") == true)
        #expect(!refused.isAvailable)

        // A listener that accepts and never answers: the request times out.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        address.sin_port = 0
        length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, length) }
        }
        listen(silent, 4)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(silent, $0, &length) }
        }
        var options = RemoteBookie.Options()
        options.timeout = .milliseconds(300)
        let mute = try RemoteBookie(
            id: "mute", address: "127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))", group: group,
            options: options)
        defer { mute.shutdown() }
        let calls = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        let errors = Recorder<LedgerError>()
        for entry in 0..<5 {
            mute.addEntry(ledger: 1, entry: Int64(entry), lastAddConfirmed: -1, payload: [1], recovery: false) {
                result in
                calls.add(1, ordering: .relaxed)
                if case .failure(let error) = result { errors.record(error) }
                done.signal()
            }
        }
        for _ in 0..<5 { #expect(done.wait(timeout: .now() + 10) == .success) }
        Thread.sleep(forTimeInterval: 0.5)
        #expect(calls.load(ordering: .relaxed) == 5, "every completion exactly once")
        #expect(errors.values.count == 5)
        #expect(errors.values.allSatisfy { $0.code == .bookieUnavailable && $0.message.contains("mute") })
        #expect(mute.pendingCount == 0)
    }
}
