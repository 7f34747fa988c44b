import NIOCore
import Synchronization

/// Time for the delivery engine: real in a node, manual in tests (retries and timeouts without sleeps).
public protocol DeliveryClock: Sendable {
    /// Monotonic nanoseconds.
    func now() -> UInt64
    /// Runs `action` at `deadline` (monotonic ns) or soon after, on any thread.
    func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void)
}

/// The system's monotonic clock; deadlines are tasks in the kernel pool's scheduled-task heaps (no thread,
/// queue or timer source per deadline).
public struct SystemDeliveryClock: DeliveryClock {
    public init() {}

    /// The same monotonic clock as the pool's `NIODeadline` (and `DispatchTime`).
    public func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// Runs `action` on a pool thread at `deadline`; it must not block.
    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) {
        KernelPool.next().scheduleTask(deadline: .uptimeNanoseconds(deadline), action)
    }
}

/// A clock that moves only when told: `advance(by:)` runs every action that has come due, in deadline order.
public final class ManualDeliveryClock: DeliveryClock {
    private struct Item {
        var deadline: UInt64
        var sequence: UInt64
        var action: @Sendable () -> Void

        func before(_ other: Item) -> Bool { (deadline, sequence) < (other.deadline, other.sequence) }
    }

    private struct State {
        var now: UInt64 = 1_000_000_000
        var heap: [Item] = []
        var sequence: UInt64 = 0

        mutating func push(_ item: Item) {
            heap.append(item)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard heap[child].before(heap[parent]) else { break }
                heap.swapAt(child, parent)
                child = parent
            }
        }

        mutating func popDue(_ limit: UInt64) -> Item? {
            guard let first = heap.first, first.deadline <= limit else { return nil }
            heap.swapAt(0, heap.count - 1)
            heap.removeLast()
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < heap.count && heap[left].before(heap[smallest]) { smallest = left }
                if right < heap.count && heap[right].before(heap[smallest]) { smallest = right }
                guard smallest != parent else { break }
                heap.swapAt(parent, smallest)
                parent = smallest
            }
            return first
        }
    }

    private let state = Mutex(State())

    public init() {}

    public func now() -> UInt64 { state.withLock { $0.now } }

    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) {
        state.withLock {
            $0.sequence += 1
            $0.push(Item(deadline: deadline, sequence: $0.sequence, action: action))
        }
    }

    /// Moves time forward, running due actions one at a time (an action may schedule more).
    public func advance(byNanoseconds delta: UInt64) {
        let target = state.withLock { $0.now + delta }
        while let due = state.withLock({ s -> Item? in
            guard let item = s.popDue(target) else { return nil }
            s.now = max(s.now, item.deadline)
            return item
        }) {
            due.action()
        }
        state.withLock { $0.now = max($0.now, target) }
    }

    /// How many actions wait.
    public var scheduledCount: Int { state.withLock { $0.heap.count } }
}
