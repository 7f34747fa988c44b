import RaftCore
import Testing

@Suite struct MembershipTests {
    @Test func votersAndLearnersAreSortedById() {
        let membership = Membership(members: [
            .init(id: "c", address: "127.0.0.1:3"), .init(id: "a", address: "127.0.0.1:1"),
            .init(id: "b", address: "127.0.0.1:2", learner: true),
        ])
        #expect(membership.voters == ["a", "c"])
        #expect(membership.learners == ["b"])
        #expect(membership.member("b")?.address == "127.0.0.1:2")
        #expect(membership.member("z") == nil)
    }
}
