import PlexusABI

/// How a call that was expected to fail answered.
enum Answer {
    /// The hook returned an error (and must not call its completion).
    case returned(px_status, String)
    /// The hook returned `PX_OK` and its completion carried this.
    case completed(CompletionPayload)
    /// The hook returned `PX_OK` and its completion did not come in time.
    case silent
}

extension CallRecord {
    /// The completion of a call that must succeed.
    /// - Throws: `Violation` when the hook returned an error, its completion did not come within `timeout`,
    ///   or the completion reported an error.
    func completed(_ what: String, timeout: Duration) throws -> CompletionPayload {
        let returned = returnedStatus ?? PX_ERR_INTERNAL.status
        try check(
            returned == PX_OK.status, expected: "\(what) to succeed",
            observed: "\(operation) returned \(statusName(returned))\(Self.reason(returnedMessage))")
        guard let payload = wait(timeout) else {
            throw Violation(
                expected: "\(operation) (\(what)) to call its completion, as it returned PX_OK",
                observed: "no completion within \(timeout)")
        }
        try check(
            payload.status == PX_OK.status, expected: "\(what) to succeed",
            observed:
                "\(operation) returned PX_OK, then its completion reported \(statusName(payload.status))\(Self.reason(payload.error))"
        )
        return payload
    }

    /// How the call answered: an error return, a completion, or silence within `timeout`.
    func answer(timeout: Duration) -> Answer {
        let returned = returnedStatus ?? PX_ERR_INTERNAL.status
        guard returned == PX_OK.status else { return .returned(returned, returnedMessage) }
        guard let payload = wait(timeout) else { return .silent }
        return .completed(payload)
    }

    /// Checks that the call failed with `expected`, either by returning it or (after returning `PX_OK`)
    /// through its completion: the completion rule allows both.
    func expectFailure(_ expected: px_status, _ what: String, timeout: Duration) throws {
        let wanted = "\(what) to fail with \(statusName(expected))"
        switch answer(timeout: timeout) {
        case .returned(let status, _) where status == expected:
            return
        case .completed(let payload) where payload.status == expected:
            return
        case .returned(let status, let message):
            throw Violation(
                expected: wanted, observed: "\(operation) returned \(statusName(status))\(Self.reason(message))")
        case .completed(let payload):
            var detail = ""
            if case .read(_, let records, let next, _) = payload {
                detail = " with \(records.count) record(s) and next_offset \(next)"
            } else if case .lookup(_, let instances, _) = payload {
                detail = " with \(instances.count) instance(s)"
            }
            throw Violation(
                expected: wanted,
                observed:
                    "\(operation) returned PX_OK and its completion reported \(statusName(payload.status))\(detail)")
        case .silent:
            throw Violation(
                expected: wanted,
                observed: "\(operation) returned PX_OK and never called its completion within \(timeout)")
        }
    }

    /// ` ("reason")`, or nothing for an empty reason.
    static func reason(_ message: String) -> String { message.isEmpty ? "" : " (\"\(message)\")" }
}
