import Testing

@testable import RaftBenchKit

@Suite("raft-log status JSON")
struct RaftStatusTests {
    /// The example of the replication contract.
    static let contract = """
        {"node":"a","streams":[{"stream":"orders","role":"leader","term":3,"leader":"a","commitIndex":120,
          "lastIndex":120,"firstIndex":1,"nextOffset":117,"commitChain":305419896,
          "peers":[{"id":"b","match":120,"next":121,"lag":0,"inflight":0,"learner":false,"active":true}]}]}
        """

    @Test("the contract's example")
    func contractExample() throws {
        let status = try RaftStatus(json: Self.contract)
        #expect(status.node == "a")
        let orders = try #require(status.stream("orders"))
        #expect(orders.role == "leader" && orders.leader == "a" && orders.term == 3)
        #expect(orders.commitIndex == 120 && orders.lastIndex == 120 && orders.firstIndex == 1)
        #expect(orders.nextOffset == 117 && orders.commitChain == 305_419_896)
        #expect(
            orders.peers?.first
                == .init(id: "b", match: 120, next: 121, lag: 0, inflight: 0, learner: false, active: true))
        #expect(status.stream("other") == nil)
    }

    @Test("a follower without peers, an unknown leader, fields added later")
    func follower() throws {
        let status = try RaftStatus(
            json:
                #"{"node":"b","streams":[{"stream":"s","role":"follower","leader":"","commitIndex":7,"peers":[],"newField":{"x":1}}],"uptime":3}"#
        )
        let stream = try #require(status.stream("s"))
        #expect(stream.role == "follower" && stream.leader.isEmpty && stream.commitIndex == 7 && stream.peers == [])
        #expect(try RaftStatus(json: #"{"node":"c","streams":[]}"#).streams.isEmpty)
    }

    @Test("not the contract's JSON: the error quotes the text")
    func invalid() {
        #expect {
            _ = try RaftStatus(json: "unknown operation 'status'")
        } throws: { error in
            "\(error)".contains("unknown operation 'status'")
        }
        #expect(throws: HarnessError.self) { _ = try RaftStatus(json: #"{"node":"a"}"#) }
    }
}
