import PlexusABI
import Synchronization

/// Makes a Swift completion obey the ABI's completion rule, whatever the plugin's code does with it.
///
/// The rule: a hook that returns an error never calls its C completion; one that returns `PX_OK` calls it
/// exactly once, possibly before returning. The gate holds back a result the plugin reports while its
/// method is still running, delivers it only once the method has returned normally, drops it if the
/// method threw, ignores every result after the first, and reports `PX_ERR_INTERNAL` if the plugin lets go
/// of the completion without ever calling it (so that the kernel is never left waiting).
final class CompletionGate<Value: Sendable>: @unchecked Sendable {
    // Safe: `deliver` runs at most once, chosen under `state`'s lock; it only calls a C completion,
    // which the ABI allows on any thread.
    private enum State {
        /// The plugin's method is running; a result reported meanwhile waits here.
        case running(Result<Value, PluginError>?)
        /// The method returned normally and the result is still owed.
        case owed
        /// Delivered, or refused because the method threw.
        case settled
    }

    private let state = Mutex<State>(.running(nil))
    private let deliver: (Result<Value, PluginError>) -> Void

    private init(deliver: @escaping (Result<Value, PluginError>) -> Void) {
        self.deliver = deliver
    }

    /// Runs a plugin method that takes a completion and returns the hook's status.
    /// - Parameters:
    ///   - err: the hook's error buffer.
    ///   - deliver: calls the C completion with a result; called at most once, only after `PX_OK`.
    ///   - body: calls the plugin's method with the completion to hand it.
    static func run(
        _ err: UnsafeMutablePointer<px_error>?, deliver: @escaping (Result<Value, PluginError>) -> Void,
        _ body: (@escaping @Sendable (Result<Value, PluginError>) -> Void) throws -> Void
    ) -> px_status {
        let gate = CompletionGate(deliver: deliver)
        let status = PluginExport.guarded(err) { try body { gate.complete($0) } }
        if status == PX_OK.status { gate.returned() } else { gate.refused() }
        return status
    }

    /// The plugin reports its result.
    private func complete(_ result: Result<Value, PluginError>) {
        let now = state.withLock { state -> Bool in
            switch state {
            case .running(nil):
                state = .running(result)
                return false
            case .owed:
                state = .settled
                return true
            case .running(.some), .settled:
                return false
            }
        }
        if now { deliver(result) }
    }

    /// The plugin's method returned normally: deliver a result it already reported, or wait for it.
    private func returned() {
        let early = state.withLock { state -> Result<Value, PluginError>? in
            guard case .running(let result) = state else { return nil }
            state = result == nil ? .owed : .settled
            return result
        }
        if let early { deliver(early) }
    }

    /// The plugin's method threw: the hook returns an error, so the completion must never run.
    private func refused() {
        state.withLock { $0 = .settled }
    }

    deinit {
        let owed = state.withLock { state -> Bool in
            guard case .owed = state else { return false }
            state = .settled
            return true
        }
        if owed {
            deliver(.failure(PluginError(PX_ERR_INTERNAL, "the plugin released its completion without calling it")))
        }
    }
}

extension PluginError {
    /// The status to report: a failure never travels as `PX_OK`.
    var failureStatus: px_status { status == PX_OK.status ? PX_ERR_INTERNAL.status : status }
}
