import Foundation

/// The admin endpoint's token check (`admin.token` in the node file).
///
/// Reads (`GET`, `HEAD`) stay open so that probes, scrapers and the dashboard work without the token; every
/// other method (installs, upgrades, rollbacks, removals, plugin stop/start/restart and manifest operations)
/// needs `Authorization: Bearer <token>` when the node has a token. A node whose admin endpoint binds beyond
/// loopback refuses to start without one (`requireToken(host:token:)`).
enum AdminAuth {
    /// Why a request is refused (401), or nil when it may go on.
    /// - Parameters:
    ///   - method: the request's method; `GET` and `HEAD` are never refused.
    ///   - authorization: the request's `Authorization` header, if any.
    ///   - token: the node's `admin.token`; nil: no check.
    static func refusal(method: String, authorization: String?, token: String?) -> String? {
        guard let token, method != "GET", method != "HEAD" else { return nil }
        guard let header = authorization else {
            return "this node requires its admin token for \(method) requests: send 'Authorization: Bearer "
                + "<admin.token>' (plexus: --token or PLEXUS_ADMIN_TOKEN)"
        }
        let prefix = "bearer "
        guard header.count > prefix.count, header.prefix(prefix.count).lowercased() == prefix else {
            return "the Authorization header is not 'Bearer <admin.token>'"
        }
        let presented = header.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        guard constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
            return "the admin token does not match this node's admin.token"
        }
        return nil
    }

    /// Compares in time that depends on the lengths only, not on where the bytes first differ.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = a.count == b.count ? 0 : 1
        let count = max(a.count, b.count)
        for index in 0..<count {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }

    /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
    static func isLoopback(_ host: String) -> Bool {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if bare == "localhost" || bare == "::1" || bare == "0:0:0:0:0:0:0:1" { return true }
        var address = in_addr()
        return inet_pton(AF_INET, bare, &address) == 1 && (UInt32(bigEndian: address.s_addr) >> 24) == 127
    }

    /// Refuses an admin endpoint bound beyond loopback without a token: anyone who reaches it could stop
    /// plugins and call their operations.
    /// - Throws: `KernelError(.nodeConfigInvalid)` naming `admin.host` and `admin.token`.
    static func requireToken(host: String, token: String?) throws {
        guard token == nil, !isLoopback(host) else { return }
        throw KernelError(
            .nodeConfigInvalid, subject: "admin endpoint", field: "admin.token",
            "admin.host is \(host), beyond loopback, and the node file sets no admin.token; set admin.token "
                + "(for example admin.token: ${PLEXUS_ADMIN_TOKEN}) or bind admin.host to 127.0.0.1")
    }
}
