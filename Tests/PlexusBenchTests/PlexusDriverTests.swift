import Testing

@testable import PlexusBench

/// The Plexus driver's headline rows send one event per PUBLISH frame, as the baselines send one message per
/// request; coalescing is only on when asked for (the batched rows).
struct PlexusDriverTests {
    @Test func oneEventPerFrameUnlessCoalescingIsAskedFor() throws {
        let plain = try DriverOptions(address: "127.0.0.1:4000")
        #expect(PlexusDriver.configuration(options: plain, role: "producer").maxBatchEvents == 1)
        #expect(!PlexusDriver(options: plain).coalesces)
        #expect(PlexusDriver(options: plain).semantics.contains("one event per PUBLISH frame"))

        var batched = plain
        batched.settings["coalesce"] = "true"
        let config = PlexusDriver.configuration(options: batched, role: "producer")
        #expect(config.maxBatchEvents > 1)
        #expect(PlexusDriver(options: batched).semantics.contains("BATCHED"))

        batched.settings["coalesce"] = "no"
        #expect(PlexusDriver.configuration(options: batched, role: "producer").maxBatchEvents == 1)
    }

    @Test func fireAndForgetSaysWhenAPublishCompletes() throws {
        let options = try DriverOptions(address: "127.0.0.1:4000", fireAndForget: true)
        #expect(PlexusDriver(options: options).semantics.contains("written to the socket"))
    }
}
