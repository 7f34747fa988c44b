import Synchronization

/// A flag that can be claimed once, so that exactly one of several racing paths (an answer, a timeout, a
/// closed connection) resumes a continuation.
///
/// - Important: Any thread.
final class OneShot: Sendable {
    private let claimed = Mutex(false)

    /// `true` for the first caller only.
    func claim() -> Bool {
        claimed.withLock { claimed in
            if claimed { return false }
            claimed = true
            return true
        }
    }
}
