import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A POSIX thread that can be joined, so that `PeerTransport.stop()` returns only once its threads are gone.
///
/// `@unchecked Sendable`: `handle` is written once in `init` before the value is shared (on Darwin `pthread_t`
/// is a pointer type, hence not `Sendable`), and `join` is guarded by a mutex.
final class NativeThread: @unchecked Sendable {
    private let handle: pthread_t
    private let joined = Mutex(false)

    private final class Start {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread; `name` names it in errors (and, on Darwin, in the debugger).
    /// - Throws: `PeerTransportError.resources` when the system refuses the thread.
    init(name: String, _ body: @escaping @Sendable () -> Void) throws(PeerTransportError) {
        let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        #if os(Linux)
            var handle = pthread_t()
            let status = pthread_create(
                &handle, nil,
                { argument in
                    guard let argument else { return nil }
                    let start = Unmanaged<Start>.fromOpaque(argument).takeRetainedValue()
                    start.body()
                    return nil
                }, start)
        #else
            var handle: pthread_t?
            let status = pthread_create(
                &handle, nil,
                { argument in
                    let start = Unmanaged<Start>.fromOpaque(argument).takeRetainedValue()
                    _ = pthread_setname_np(start.name)
                    start.body()
                    return nil
                }, start)
        #endif
        guard status == 0 else {
            Unmanaged<Start>.fromOpaque(start).release()
            throw PeerTransportError(.resources, "cannot start thread '\(name)': \(Socket.errorText(status))")
        }
        #if os(Linux)
            self.handle = handle
        #else
            self.handle = handle!
        #endif
    }

    /// Waits for the thread to end; at once when it ended or was joined before. Called on the thread itself (a
    /// callback that stops the transport), it detaches the thread instead of waiting for itself.
    func join() {
        joined.withLock { joined in
            guard !joined else { return }
            joined = true
            if pthread_equal(pthread_self(), handle) != 0 {
                pthread_detach(handle)
            } else {
                pthread_join(handle, nil)
            }
        }
    }
}
