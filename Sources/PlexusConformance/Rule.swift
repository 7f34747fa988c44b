import Foundation
import PlexusABI
import PlexusKernel
import Synchronization

/// A broken promise a rule found: what the contract expects and what the plugin did.
struct Violation: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }

    /// `expected …; observed …`.
    init(expected: String, observed: String) { self.description = "expected \(expected); observed \(observed)" }
}

/// Fails the rule with `expected …; observed …` unless `condition` holds.
func check(_ condition: Bool, expected: @autoclosure () -> String, observed: @autoclosure () -> String) throws {
    if !condition { throw Violation(expected: expected(), observed: observed()) }
}

/// A status as the header names it (`PX_ERR_OUT_OF_RANGE`).
func statusName(_ status: px_status) -> String { StatusText.name(status) }

/// One named rule of a suite: a MUST of the contract in plexus.h, checked against a running instance.
struct Rule<Harness: Sendable>: Sendable {
    let name: String
    /// One sentence: the promise checked.
    let summary: String
    let body: @Sendable (Harness) throws -> Void
}

/// A rule's name and the promise it checks, for listings and documentation.
public struct RuleDescription: Sendable, Equatable {
    public var name: String
    public var summary: String
}

/// Runs rules one after another, each on a thread of its own under a deadline, so that a hook or a
/// completion that never returns fails its rule instead of hanging the suite.
enum RuleRunner {
    /// Runs `rules` in order. After a rule overran `ruleTimeout` (a hook blocked, still running in the
    /// plugin), the instance is in an unknown state: the remaining rules are failed as not run, and
    /// `hung` is true so that the caller abandons the instance instead of stopping it.
    static func run<H: Sendable>(
        _ rules: [Rule<H>], harness: H, ledger: CallLedger, ruleTimeout: Duration,
        progress: (RuleResult) -> Void
    ) -> (results: [RuleResult], hung: Bool) {
        var results: [RuleResult] = []
        var hungIn: String?
        for rule in rules {
            if let hungIn {
                let result = RuleResult(
                    rule: rule.name, passed: false,
                    reason:
                        "not run: the plugin was still inside a hook called by \(hungIn), so the instance was abandoned",
                    milliseconds: 0)
                results.append(result)
                progress(result)
                continue
            }
            ledger.currentRule = rule.name
            let started = ContinuousClock.now
            let outcome = runOnThread(name: "plexus.conformance.\(rule.name)", timeout: ruleTimeout) {
                try rule.body(harness)
            }
            let elapsed = ContinuousClock.now - started
            let result: RuleResult
            switch outcome {
            case .none:
                hungIn = rule.name
                result = RuleResult(
                    rule: rule.name, passed: false,
                    reason:
                        "expected the rule to finish within \(ruleTimeout); observed a hook that had not returned by then (a hook must not block)",
                    milliseconds: elapsed.wholeMilliseconds)
            case .some(.success):
                result = RuleResult(rule: rule.name, passed: true, reason: nil, milliseconds: elapsed.wholeMilliseconds)
            case .some(.failure(let skip as NotSupported)):
                // An optional hook the plugin does not have: nothing to check, nothing broken.
                result = RuleResult(
                    rule: rule.name, passed: true, reason: "not supported: \(skip)",
                    milliseconds: elapsed.wholeMilliseconds)
            case .some(.failure(let error)):
                result = RuleResult(
                    rule: rule.name, passed: false, reason: "\(error)", milliseconds: elapsed.wholeMilliseconds)
            }
            results.append(result)
            progress(result)
        }
        return (results, hungIn != nil)
    }

    /// Runs `body` on a new thread; `nil` when it did not finish within `timeout` (it goes on running).
    static func runOnThread(name: String, timeout: Duration, _ body: @escaping @Sendable () throws -> Void) -> Result<
        Void, any Error
    >? {
        let result = Mutex<Result<Void, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let outcome = Result { try body() }
            result.withLock { $0 = outcome }
            done.signal()
        }
        thread.name = name
        thread.stackSize = 4 << 20
        thread.start()
        guard done.wait(timeout: .now() + .nanoseconds(timeout.nanoseconds)) == .success else { return nil }
        return result.withLock { $0 }
    }

    /// Runs `count` bodies on threads of their own at once and waits for all, up to `timeout`.
    /// - Throws: the first error a body threw, or a `Violation` when they did not all finish in time.
    static func concurrently(_ count: Int, timeout: Duration, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        let errors = Mutex<[Int: any Error]>([:])
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let thread = Thread {
                do { try body(index) } catch { errors.withLock { $0[index] = error } }
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        guard group.wait(timeout: .now() + .nanoseconds(timeout.nanoseconds)) == .success else {
            throw Violation(
                expected: "\(count) concurrent callers to finish within \(timeout)",
                observed: "some were still waiting for hooks or completions")
        }
        if let first = errors.withLock({ $0.sorted { $0.key < $1.key }.first }) { throw first.value }
    }
}

extension Duration {
    var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}

/// `PX_OFFSET_NONE` (`UINT64_MAX`, a macro Swift does not import).
let offsetNone = UInt64.max
