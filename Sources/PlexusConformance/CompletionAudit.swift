import PlexusABI

/// Checks the completion rule over every call a suite made.
enum CompletionAudit {
    /// A violation listing the hooks that returned `PX_OK` and called their completion other than once.
    static func exactlyOnce(_ records: [CallRecord]) -> Violation? {
        let offenders = records.filter { $0.returnedStatus == PX_OK.status && $0.completionCount != 1 }
        guard !offenders.isEmpty else { return nil }
        let okCalls = records.filter { $0.returnedStatus == PX_OK.status }
        return Violation(
            expected: "every hook that returned PX_OK to call its completion exactly once",
            observed: describe(offenders, among: okCalls))
    }

    /// A violation listing the hooks that returned an error and still called their completion.
    static func neverAfterError(_ records: [CallRecord]) -> Violation? {
        let failed = records.filter { $0.returnedStatus.map { $0 != PX_OK.status } ?? false }
        let offenders = failed.filter { $0.completionCount > 0 }
        guard !offenders.isEmpty else { return nil }
        return Violation(
            expected: "no hook that returned an error to call its completion",
            observed: describe(offenders, among: failed, returned: true))
    }

    /// `on_commit_offset called it 2 times in 5 of 5 calls (storage.offsets.commit-fetch, …)`, one clause per
    /// hook and count.
    private static func describe(_ offenders: [CallRecord], among calls: [CallRecord], returned: Bool = false) -> String
    {
        var groups: [String: [CallRecord]] = [:]
        var order: [String] = []
        for call in offenders {
            let key = "\(call.operation)|\(call.completionCount)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(call)
        }
        return order.map { key -> String in
            let group = groups[key] ?? []
            let operation = group[0].operation
            let count = group[0].completionCount
            let total = calls.filter { $0.operation == operation }.count
            let what = count == 0 ? "never called it" : "called it \(count == 1 ? "once" : "\(count) times")"
            let statuses =
                returned
                ? " after returning \(Set(group.compactMap(\.returnedStatus)).sorted().map(statusName).joined(separator: "/"))"
                : ""
            var rules: [String] = []
            for call in group where !rules.contains(call.rule) { rules.append(call.rule) }
            let shown = rules.prefix(3).joined(separator: ", ") + (rules.count > 3 ? ", …" : "")
            return "\(operation) \(what)\(statuses) in \(group.count) of \(total) such calls (\(shown))"
        }.joined(separator: "; ")
    }
}
