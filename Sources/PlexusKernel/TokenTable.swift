import Synchronization

/// Values handed through a C `void *user` as integer tokens rather than pointers.
///
/// A plugin that calls a completion twice, or after its call returned an error, finds no entry the second
/// time: nothing is freed twice and nothing runs twice.
final class TokenTable<Value: Sendable>: Sendable {
    private let entries = Mutex<[UInt64: Value]>([:])
    private let next = Atomic<UInt64>(1)

    /// Stores `value`; returns the token to pass as `user`.
    func add(_ value: Value) -> UnsafeMutableRawPointer? {
        let token = next.wrappingAdd(1, ordering: .relaxed).oldValue
        entries.withLock { $0[token] = value }
        return UnsafeMutableRawPointer(bitPattern: UInt(token))
    }

    /// Takes the value for a token, once; `nil` when it was already taken (or never stored).
    func take(_ user: UnsafeMutableRawPointer?) -> Value? {
        let token = UInt64(UInt(bitPattern: user))
        return entries.withLock { $0.removeValue(forKey: token) }
    }
}
