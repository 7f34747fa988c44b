import Foundation
import PlexusABI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One end of the socket pair between the kernel and a plugin-host child: writes frames from any thread, reads
/// them on its own thread, and matches replies to the requests that are waiting for them.
///
/// The reader thread only reads: a reply to `request` runs its `answer` on the channel's completions queue
/// (serial, so completions keep the order their replies came in), and a reply to `call` wakes its waiting
/// caller directly. So an answer may itself make a `call` on this channel (the kernel's read completion asks
/// the storage for its stream info): the reader that will dispatch that reply is never the thread waiting.
///
/// When the socket closes (the other side exited, was killed, or sent a frame the decoder refused) every
/// request still waiting completes with `PX_ERR_UNAVAILABLE` and the reason `closeReason` gives.
final class IsolationChannel: @unchecked Sendable {
    // Safe: the descriptor is written under `writeLock` and read only by the reader thread; every other
    // mutable state is in a Mutex.

    /// What a reply resolves to: its payload, or the reason the channel closed first.
    enum Answer: Sendable {
        case reply([UInt8])
        case closed(String)
    }

    let fd: Int32
    /// Whether the descriptor is still open; writes happen under this lock, and so does the close.
    private let writeLock = Mutex<Bool>(true)
    /// Requests waiting for their reply, with whether the answer runs on the reader thread (a `call`'s wake-up)
    /// or on `completions`.
    private let pending = Mutex<
        (next: UInt64, waiting: [UInt64: (answer: @Sendable (Answer) -> Void, inline: Bool)], closed: String?)
    >((1, [:], nil))
    /// Where answers to `request` run, in the order their replies arrived.
    private let completions: DispatchQueue
    /// Descriptors received as `SCM_RIGHTS`, in arrival order.
    private let receivedDescriptors = Mutex<[Int32]>([])
    // Set by `start`, before the reader thread exists, and read only by it.
    private var onFrame: @Sendable (IsolationFrame) -> Void = { _ in }
    private var onClose: @Sendable (String) -> Void = { _ in }
    private var closeReason: @Sendable (String) -> String = { $0 }
    private let name: String

    init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
        completions = DispatchQueue(label: "\(name).completions")
    }

    /// Starts reading.
    /// - Parameters:
    ///   - closeReason: words the reason the socket closed (the kernel adds the child's exit status).
    ///   - onFrame: requests and notices from the other side (called on the reader thread).
    ///   - onClose: called once, on the reader thread, after the socket closed and every waiting request was
    ///     answered.
    func start(
        closeReason: @escaping @Sendable (String) -> String = { $0 },
        onFrame: @escaping @Sendable (IsolationFrame) -> Void, onClose: @escaping @Sendable (String) -> Void
    ) {
        self.closeReason = closeReason
        self.onFrame = onFrame
        self.onClose = onClose
        let thread = Thread { [self] in readLoop() }
        thread.name = name
        thread.start()
    }

    var isClosed: Bool { pending.withLock { $0.closed != nil } }

    /// Sends a request; `answer` runs once with the reply or the reason the channel closed (possibly inline,
    /// when it already had).
    func request(
        _ op: IsolationOp, _ payload: [UInt8], fd passed: Int32? = nil, answer: @escaping @Sendable (Answer) -> Void
    ) {
        send(op, payload, fd: passed, inline: false, answer: answer)
    }

    private func send(
        _ op: IsolationOp, _ payload: [UInt8], fd passed: Int32?, inline: Bool,
        answer: @escaping @Sendable (Answer) -> Void
    ) {
        let registered = pending.withLock { state -> (UInt64, String?) in
            if let closed = state.closed { return (0, closed) }
            let id = state.next
            state.next &+= 1
            state.waiting[id] = (answer, inline)
            return (id, nil)
        }
        if let closed = registered.1 { return answer(.closed(closed)) }
        send(IsolationFrame(kind: .request, op: op, id: registered.0, payload: payload), fd: passed)
    }

    /// Sends a request and waits up to `timeout` for its reply: `nil` when none came in time.
    func call(_ op: IsolationOp, _ payload: [UInt8], timeout: Duration) -> Answer? {
        let box = AnswerBox()
        let semaphore = DispatchSemaphore(value: 0)
        send(op, payload, fd: nil, inline: true) { answer in
            box.set(answer)
            semaphore.signal()
        }
        let nanoseconds = max(
            0, timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        guard semaphore.wait(timeout: .now() + .nanoseconds(Int(min(nanoseconds, Int64(Int.max))))) == .success else {
            return nil
        }
        return box.get()
    }

    /// Answers a request.
    func reply(to request: IsolationFrame, _ payload: [UInt8], fd passed: Int32? = nil) {
        send(IsolationFrame(kind: .reply, op: request.op, id: request.id, payload: payload), fd: passed)
    }

    /// Sends a notice (no reply).
    func notify(_ op: IsolationOp, _ payload: [UInt8]) {
        send(IsolationFrame(kind: .notice, op: op, id: 0, payload: payload))
    }

    /// The next descriptor received beside a frame, if any.
    func takeDescriptor() -> Int32? {
        receivedDescriptors.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }

    /// Shuts the socket down: the reader thread sees the end and closes the channel.
    func shutDown() {
        writeLock.withLock { open in
            if open { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    private func send(_ frame: IsolationFrame, fd passed: Int32? = nil) {
        let bytes = frame.encoded()
        writeLock.withLock { open in
            guard open else { return }
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                if let passed {
                    guard let sent = sendWithDescriptor(buffer, passed), sent > 0 else { return }
                    offset = sent
                }
                while offset < buffer.count {
                    let written = Glibc.send(
                        fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                    if written < 0 {
                        if errno == EINTR { continue }
                        return
                    }
                    offset += written
                }
            }
        }
    }

    /// Sends the first bytes of a frame with a descriptor attached.
    private func sendWithDescriptor(_ buffer: UnsafeRawBufferPointer, _ passed: Int32) -> Int? {
        let controlLength = Int(MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size + 7) & ~7
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlLength, alignment: 8)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: controlLength)
        let header = control.assumingMemoryBound(to: cmsghdr.self)
        header.pointee.cmsg_level = SOL_SOCKET
        header.pointee.cmsg_type = Int32(SCM_RIGHTS)
        header.pointee.cmsg_len = MemoryLayout<cmsghdr>.size + MemoryLayout<Int32>.size
        (control + MemoryLayout<cmsghdr>.size).storeBytes(of: passed, as: Int32.self)
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            message.msg_control = control
            message.msg_controllen = controlLength
            while true {
                let sent = sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                if sent < 0, errno == EINTR { continue }
                return sent < 0 ? nil : sent
            }
        }
    }

    private func readLoop() {
        var decoder = IsolationFrameDecoder()
        let capacity = 256 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        let controlLength = 256
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlLength, alignment: 8)
        defer {
            buffer.deallocate()
            control.deallocate()
        }
        var reason = "the socket closed"
        reading: while true {
            var iov = iovec(iov_base: buffer, iov_len: capacity)
            let received = withUnsafeMutablePointer(to: &iov) { iovPointer -> Int in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = control
                message.msg_controllen = controlLength
                let count = recvmsg(fd, &message, Int32(MSG_CMSG_CLOEXEC))
                if count > 0, message.msg_controllen >= MemoryLayout<cmsghdr>.size {
                    collectDescriptors(control, length: Int(message.msg_controllen))
                }
                return count
            }
            if received < 0 {
                if errno == EINTR { continue }
                reason = "the socket failed: \(String(cString: strerror(errno)))"
                break
            }
            if received == 0 { break }
            decoder.append(UnsafeRawBufferPointer(start: buffer, count: received))
            do {
                while let frame = try decoder.next() { dispatch(frame) }
            } catch {
                reason = "a malformed frame: \(error)"
                break reading
            }
        }
        close(reason: reason)
    }

    private func collectDescriptors(_ control: UnsafeMutableRawPointer, length: Int) {
        var offset = 0
        while offset + MemoryLayout<cmsghdr>.size <= length {
            let header = (control + offset).assumingMemoryBound(to: cmsghdr.self).pointee
            let headerLength = Int(header.cmsg_len)
            guard headerLength >= MemoryLayout<cmsghdr>.size else { return }
            if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                let count = (headerLength - MemoryLayout<cmsghdr>.size) / MemoryLayout<Int32>.size
                for index in 0..<count {
                    let descriptor = (control + offset + MemoryLayout<cmsghdr>.size).loadUnaligned(
                        fromByteOffset: index * 4, as: Int32.self)
                    receivedDescriptors.withLock { $0.append(descriptor) }
                }
            }
            offset += (headerLength + 7) & ~7
        }
    }

    private func dispatch(_ frame: IsolationFrame) {
        guard frame.kind == .reply else { return onFrame(frame) }
        guard let waiting = pending.withLock({ $0.waiting.removeValue(forKey: frame.id) }) else { return }
        if waiting.inline { return waiting.answer(.reply(frame.payload)) }
        let payload = frame.payload
        completions.async { waiting.answer(.reply(payload)) }
    }

    private func close(reason raw: String) {
        let reason = closeReason(raw)
        let waiting = pending.withLock { state -> [(answer: @Sendable (Answer) -> Void, inline: Bool)] in
            state.closed = reason
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for waiter in waiting where waiter.inline { waiter.answer(.closed(reason)) }
        let queued = waiting.filter { !$0.inline }.map(\.answer)
        completions.async {
            for answer in queued { answer(.closed(reason)) }
        }
        // Every answer has run (after any still queued) before `onClose`.
        completions.sync {}
        for descriptor in receivedDescriptors.withLock({ all -> [Int32] in
            defer { all = [] }
            return all
        }) {
            Glibc.close(descriptor)
        }
        writeLock.withLock { open in
            open = false
            Glibc.close(fd)
        }
        onClose(reason)
    }
}

/// Where a waiting caller finds its answer.
private final class AnswerBox: @unchecked Sendable {
    // Safe: every access holds `lock`.
    private let lock = NSLock()
    private var answer: IsolationChannel.Answer?
    func set(_ value: IsolationChannel.Answer) {
        lock.lock()
        answer = value
        lock.unlock()
    }
    func get() -> IsolationChannel.Answer? {
        lock.lock()
        defer { lock.unlock() }
        return answer
    }
}

/// A value carried across threads where the compiler cannot see that it is safe: the plugin's and the kernel's
/// C functions and pointers, which the ABI makes callable from any thread.
struct Unchecked<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

extension IsolationChannel.Answer {
    /// The reply's reader positioned after its status and error text, or the failure to report.
    func outcome() -> Result<(px_status, String, WireReader), IsolationWireError> {
        switch self {
        case .closed(let reason): return .failure(IsolationWireError(reason))
        case .reply(let payload):
            var reader = WireReader(payload)
            do {
                let (status, error) = try reader.outcome()
                return .success((status, error, reader))
            } catch let error as IsolationWireError {
                return .failure(error)
            } catch {
                return .failure(IsolationWireError("\(error)"))
            }
        }
    }
}
