import Crypto
import Synchronization

/// What a version 2 HELLO carries to prove its sender knows the cluster secret.
public struct HelloProof: Sendable, Equatable {
    /// The sender's clock, Unix milliseconds.
    public var timestampMs: UInt64
    /// 16 random bytes, never accepted twice within the clock window.
    public var nonce: [UInt8]
    /// HMAC-SHA256 under the secret of `signed`.
    public var mac: [UInt8]
    /// The HELLO's payload bytes the MAC covers: from its type byte through the nonce (set by the decoder).
    public var signed: [UInt8] = []

    public init(timestampMs: UInt64, nonce: [UInt8], mac: [UInt8]) {
        self.timestampMs = timestampMs
        self.nonce = nonce
        self.mac = mac
    }
}

/// A raft-log cluster's shared secret (`clusterSecret`): every outbound connection opens with a HELLO that proves
/// the sender knows it (HMAC-SHA256 over the HELLO's node id, a timestamp and a random nonce), and an inbound
/// connection whose HELLO does not is closed before any message reaches the state machine.
///
/// A HELLO is accepted once: its timestamp must be within `clockWindowMs` of this node's clock and its nonce
/// must not have been seen within the window, so a recorded HELLO cannot be replayed. This authenticates who
/// opens a connection, not each frame after it: against an attacker on the path between nodes, use a private
/// network or a tunnel (the plugin README says so).
public final class PeerSecret: Sendable {
    /// The fewest bytes a secret may have.
    public static let minimumBytes = 16
    static let nonceBytes = 16
    static let macBytes = 32
    /// How far a HELLO's timestamp may be from this node's clock, either way.
    public static let clockWindowMs: UInt64 = 120_000
    /// The most nonces remembered; beyond it the oldest are dropped (a flood of valid HELLOs needs the secret).
    static let maxRemembered = 100_000

    /// The secret's bytes (a `SymmetricKey` is made per use: it is not `Sendable`).
    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }
    /// Nonces accepted, with their HELLO's timestamp, until they leave the window.
    private let seen = Mutex<[[UInt8]: UInt64]>([:])

    /// - Throws: `PeerTransportError` (`.invalidArgument`) when the secret is shorter than `minimumBytes`.
    public init(_ secret: String) throws(PeerTransportError) {
        guard secret.utf8.count >= Self.minimumBytes else {
            throw PeerTransportError(
                .invalidArgument,
                "the cluster secret has \(secret.utf8.count) bytes; it needs at least \(Self.minimumBytes)")
        }
        self.secret = Array(secret.utf8)
    }

    func mac(_ bytes: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key))
    }

    /// Checks a HELLO's proof at `now` (Unix milliseconds) and remembers its nonce.
    /// - Returns: nil when the HELLO is accepted, else why it is not.
    public func check(_ proof: HelloProof?, now: UInt64 = PeerSecret.nowMs()) -> String? {
        guard let proof else { return "its HELLO carries no proof of the cluster secret (is clusterSecret set there?)" }
        guard HMAC<SHA256>.isValidAuthenticationCode(proof.mac, authenticating: proof.signed, using: key) else {
            return "its HELLO's proof does not match this node's cluster secret"
        }
        let skew = proof.timestampMs > now ? proof.timestampMs - now : now - proof.timestampMs
        guard skew <= Self.clockWindowMs else {
            return "its HELLO is \(skew / 1000) s away from this node's clock (at most \(Self.clockWindowMs / 1000) s)"
        }
        return seen.withLock { seen -> String? in
            if seen.count >= Self.maxRemembered {
                seen = seen.filter { now < $0.value + Self.clockWindowMs * 2 }
                if seen.count >= Self.maxRemembered { seen.removeAll() }
            }
            guard seen.updateValue(proof.timestampMs, forKey: proof.nonce) == nil else {
                return "its HELLO was accepted before (a replayed connection)"
            }
            return nil
        }
    }

    /// Unix time in milliseconds (StorageIO's clock).
    public static func nowMs() -> UInt64 { Files.now() / 1_000_000 }

    static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}
