import Foundation
import Testing

@testable import PlexusKernel

@Suite("admin token")
struct AdminAuthTests {
    @Test("admin.token is read with ${VAR} substitution; an empty or unset one is an error")
    func nodeFile() throws {
        let config = try NodeConfig.parse(
            "admin:\n  host: 0.0.0.0\n  token: ${TOKEN}\n", path: "plexus.yaml", baseDirectory: "/srv",
            environment: ["TOKEN": "abc"])
        #expect(config.adminToken == "abc")
        #expect(throws: KernelError.self) {
            try NodeConfig.parse("admin:\n  token: ${TOKEN}\n", path: "p", baseDirectory: "/", environment: [:])
        }
        #expect(throws: KernelError.self) {
            try NodeConfig.parse("admin:\n  token: ${TOKEN:-}\n", path: "p", baseDirectory: "/", environment: [:])
        }
        #expect(try NodeConfig.parse("admin: {port: 0}\n", path: "p", baseDirectory: "/").adminToken == nil)
    }

    @Test("loopback addresses; beyond loopback a token is required")
    func loopback() throws {
        for host in ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"] {
            #expect(AdminAuth.isLoopback(host), "\(host)")
        }
        for host in ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.org", ""] {
            #expect(!AdminAuth.isLoopback(host), "\(host)")
        }
        #expect(throws: KernelError.self) { try AdminAuth.requireToken(host: "0.0.0.0", token: nil) }
        try AdminAuth.requireToken(host: "0.0.0.0", token: "t")
        try AdminAuth.requireToken(host: "127.0.0.1", token: nil)
    }

    @Test("GET and HEAD stay open; anything else needs the exact bearer token")
    func refusal() {
        #expect(AdminAuth.refusal(method: "POST", authorization: nil, token: nil) == nil)
        #expect(AdminAuth.refusal(method: "GET", authorization: nil, token: "t0k") == nil)
        #expect(AdminAuth.refusal(method: "HEAD", authorization: nil, token: "t0k") == nil)
        #expect(AdminAuth.refusal(method: "POST", authorization: nil, token: "t0k") != nil)
        #expect(AdminAuth.refusal(method: "DELETE", authorization: "Bearer t0", token: "t0k") != nil)
        #expect(AdminAuth.refusal(method: "PUT", authorization: "Bearer t0kk", token: "t0k") != nil)
        #expect(AdminAuth.refusal(method: "POST", authorization: "Basic t0k", token: "t0k") != nil)
        #expect(AdminAuth.refusal(method: "POST", authorization: "Bearer t0k", token: "t0k") == nil)
        #expect(AdminAuth.refusal(method: "POST", authorization: "bearer  t0k ", token: "t0k") == nil)
        #expect(AdminAuth.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!AdminAuth.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!AdminAuth.constantTimeEqual([], Array("a".utf8)))
        #expect(!AdminAuth.constantTimeEqual(Array(repeating: 0, count: 256), []))
    }
}
