import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// The connector framework's pieces that need no kernel: settings, the file position store, the queue.
@Suite("Connector helpers")
struct ConnectorHelpersTests {
    @Test("settings: defaults, the subscription they make, and a refusal naming the key")
    func settings() throws {
        let defaults = try ConnectorSettings(entries: ["topic": "t"], instanceName: "c")
        #expect(
            defaults.group == "c" && defaults.batchSize == 100 && defaults.concurrency == 1 && defaults.startEarliest)
        let set = try ConnectorSettings(
            entries: [
                "topic": "t", "group": "g", "batchSize": "5", "retry": "7", "deadLetterTopic": "dlq",
                "maxInFlight": "9", "start": "latest", "backoffDelayMs": "11",
            ], instanceName: "c")
        let options = set.subscriptionOptions
        #expect(options.group == "g" && options.retry == 7 && options.deadLetterTopic == "dlq")
        #expect(options.maxInFlight == 9 && options.start == .latest && options.backoffDelayMs == 11)
        #expect(throws: PluginError.self) { try ConnectorSettings(entries: [:], instanceName: "c") }
        do {
            _ = try ConnectorSettings(entries: ["topic": "t", "batchSize": "0"], instanceName: "c")
            Issue.record("batchSize 0 was accepted")
        } catch let error as PluginError {
            #expect(error.message.contains("batchSize") && error.status == PX_ERR_INVALID_ARGUMENT.status)
        }
    }

    @Test("file position store: absent, then the last saved value, with no temporary file left")
    func filePositionStore() throws {
        var template = Array("/tmp/plexus-position-XXXXXX".utf8CString)
        let directory = try #require(
            template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map {
                String(cString: $0)
            })
        defer {
            unlink(directory + "/sub/position")
            rmdir(directory + "/sub")
            rmdir(directory)
        }
        let store = try FilePositionStore(directory: directory + "/sub")
        #expect(try store.load() == nil)
        try store.save(Array("1:100".utf8))
        try store.save(Array("1:250".utf8))
        #expect(try FilePositionStore(directory: directory + "/sub").load() == Array("1:250".utf8))
        #expect(access(directory + "/sub/position.tmp", F_OK) != 0, "the temporary file was renamed away")
    }

    @Test("queue: a batch is at most max, waits to fill only up to its deadline, and close hands back the rest")
    func queue() throws {
        let queue = ConnectorQueue<Int>()
        #expect(queue.take(max: 4, idle: .milliseconds(10), fill: .milliseconds(10)).isEmpty)
        for n in 0..<10 { queue.push(n) }
        #expect(queue.take(max: 4, idle: .milliseconds(10), fill: .milliseconds(10)) == [0, 1, 2, 3])
        #expect(queue.take(max: 4, idle: .milliseconds(10), fill: .milliseconds(10)) == [4, 5, 6, 7])
        #expect(queue.take(max: 4, idle: .milliseconds(10), fill: .milliseconds(20)) == [8, 9], "a partial batch")
        queue.push(10)
        queue.push(11)
        #expect(queue.close() == [10, 11])
        #expect(queue.push(12) == false, "a closed queue takes nothing")
        #expect(queue.take(max: 4, idle: .milliseconds(10), fill: .milliseconds(10)).isEmpty)
    }

    @Test("signal: a wait returns early when signalled from another thread, and times out otherwise")
    func signal() throws {
        let signal = ConnectorSignal()
        #expect(signal.wait(timeout: .milliseconds(20)) == false)
        let thread = try ConnectorThread(name: "t") {
            usleep(20_000)
            signal.signal()
        }
        #expect(signal.wait(timeout: .seconds(10)))
        #expect(thread.join(timeout: .seconds(10)))
    }
}
