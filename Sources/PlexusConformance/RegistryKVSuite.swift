import Foundation
import PlexusABI
import Synchronization

/// The registry's metadata store and keep-alive (ABI 1.4, optional hooks): one rule per MUST of
/// `px_registry_on_kv_*` and `px_registry_on_keepalive`. A registry without the hooks (NULL, or
/// PX_ERR_UNSUPPORTED on the first call) has each rule reported as not supported rather than failed.
///
/// Every rule works on keys under a prefix of its own; revisions are store-wide, so rules compare them with
/// each other only within what they wrote themselves.
enum RegistryKVRules {
    static let rules: [Rule<RegistryHarness>] = [
        RegistrySuite.rule(
            "registry.kv.get-put",
            "a put creates a key at version 1 and each put adds one, under increasing store revisions; a get returns "
                + "the value written, and PX_ERR_NOT_FOUND with a NULL entry for an absent key", getPut),
        RegistrySuite.rule(
            "registry.kv.cas",
            "expected version 0 creates only an absent key; a stale or wrong version is refused with "
                + "PX_ERR_FAILED_PRECONDITION carrying the key's current version, and changes nothing", compareAndSwap),
        RegistrySuite.rule(
            "registry.kv.delete",
            "a delete under the key's version removes it (version 0); a stale version is refused with the current "
                + "version; an absent key with PX_KV_ANY_VERSION is PX_ERR_NOT_FOUND", deleteIfVersion),
        RegistrySuite.rule(
            "registry.kv.list-prefix",
            "a listing has exactly the keys under the prefix, in byte order of their keys, with the revision it "
                + "was read at", listPrefix),
        RegistrySuite.rule(
            "registry.kv.watch-order",
            "a watch sees every put and delete under its prefix, in revision order, each once, never two calls at "
                + "once, and nothing outside the prefix or after on_kv_unwatch", watchOrder),
        RegistrySuite.rule(
            "registry.kv.watch-resume",
            "a watch from revision n replays every change with revision >= n exactly once, in order, then the live "
                + "ones; listing and watching from its revision + 1 misses nothing", watchResume),
        RegistrySuite.rule(
            "registry.kv.cas-race",
            "concurrent writers incrementing one counter by compare-and-swap retry loops lose no increment", casRace),
        RegistrySuite.rule(
            "registry.keepalive.renews",
            "on_keepalive renews a registered instance's TTL so that it outlives it; without renewal it expires; "
                + "an unknown instance is PX_ERR_NOT_FOUND", keepAliveRenews),
    ]

    static let any = UInt64.max
    static let failedPrecondition = PX_ERR_FAILED_PRECONDITION.status

    /// A prefix of the rule's own, ending in `/`.
    static func prefix(_ h: RegistryHarness, _ label: String) -> String { h.uniqueName("kv-\(label)") + "/" }

    static func getPut(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        let p = prefix(h, "get-put")
        let key = p + "config"
        let first = try c.supported(c.kvPut(key, "one"))
        let (v1, r1) = try c.kvWriteOK(first, "putting \(key) for the first time")
        try check(v1 == 1, expected: "a new key at version 1", observed: "version \(v1)")
        try check(r1 >= 1, expected: "a store revision of at least 1", observed: "revision \(r1)")
        let (read, readRevision) = try c.kvGetOK(key)
        try check(
            read == KVRecord(key: key, value: Array("one".utf8), version: 1, createRevision: r1, modRevision: r1),
            expected: "reading \(key) to give value \"one\", version 1, create and mod revision \(r1)",
            observed: read?.description ?? "PX_ERR_NOT_FOUND")
        try check(
            readRevision >= r1, expected: "the read's revision to be at least the put's (\(r1))",
            observed: "\(readRevision)")
        let (v2, r2) = try c.kvPutOK(key, "two")
        try check(
            v2 == 2 && r2 > r1, expected: "the second put at version 2 under a later revision than \(r1)",
            observed: "version \(v2), revision \(r2)")
        let (again, _) = try c.kvGetOK(key)
        try check(
            again?.text == "two" && again?.version == 2 && again?.createRevision == r1 && again?.modRevision == r2,
            expected: "value \"two\", version 2, create_revision \(r1), mod_revision \(r2)",
            observed: again?.description ?? "PX_ERR_NOT_FOUND")
        let (absent, _) = try c.kvGetOK(p + "absent", "reading a key nobody wrote")
        try check(absent == nil, expected: "PX_ERR_NOT_FOUND for a key nobody wrote", observed: "\(absent!)")
        try c.kvPut("", "x").expectFailure(
            PX_ERR_INVALID_ARGUMENT.status, "a put with an empty key", timeout: c.timeout)
    }

    static func compareAndSwap(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        let key = prefix(h, "cas") + "leader"
        let (v1, _) = try c.kvWriteOK(
            try c.supported(c.kvPut(key, "a", expected: 0)), "creating \(key) with expected version 0")
        try check(v1 == 1, expected: "the created key at version 1", observed: "version \(v1)")
        let again = try c.kvWritten(c.kvPut(key, "b", expected: 0), "creating \(key) again with expected version 0")
        try check(
            again.status == failedPrecondition && again.version == 1,
            expected: "PX_ERR_FAILED_PRECONDITION with the current version 1 (create of an existing key)",
            observed: "\(statusName(again.status)) with version \(again.version)")
        let (v2, _) = try c.kvPutOK(key, "b", expected: 1, "a compare-and-swap from version 1")
        try check(v2 == 2, expected: "version 2 after a swap from 1", observed: "version \(v2)")
        let stale = try c.kvWritten(c.kvPut(key, "c", expected: 1), "a compare-and-swap from the stale version 1")
        try check(
            stale.status == failedPrecondition && stale.version == 2 && stale.revision >= 1,
            expected: "PX_ERR_FAILED_PRECONDITION with the current version 2 and the store's revision",
            observed: "\(statusName(stale.status)) with version \(stale.version), revision \(stale.revision)")
        let absent = try c.kvWritten(
            c.kvPut(key + "-absent", "x", expected: 3), "a compare-and-swap on an absent key")
        try check(
            absent.status == failedPrecondition && absent.version == 0,
            expected: "PX_ERR_FAILED_PRECONDITION with version 0 (absent)",
            observed: "\(statusName(absent.status)) with version \(absent.version)")
        let (now, _) = try c.kvGetOK(key)
        try check(
            now?.text == "b" && now?.version == 2, expected: "the refused writes to change nothing (\"b\", version 2)",
            observed: now?.description ?? "PX_ERR_NOT_FOUND")
        let (missing, _) = try c.kvGetOK(key + "-absent")
        try check(missing == nil, expected: "the refused create to create nothing", observed: "\(missing!)")
    }

    static func deleteIfVersion(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        let key = prefix(h, "delete") + "lock"
        _ = try c.kvWriteOK(try c.supported(c.kvPut(key, "a")), "putting \(key)")
        let (v2, r2) = try c.kvPutOK(key, "b")
        let stale = try c.kvWritten(try c.supported(c.kvDelete(key, expected: 1)), "deleting at the stale version 1")
        try check(
            stale.status == failedPrecondition && stale.version == v2,
            expected: "PX_ERR_FAILED_PRECONDITION with the current version \(v2)",
            observed: "\(statusName(stale.status)) with version \(stale.version)")
        let (version, revision) = try c.kvWriteOK(c.kvDelete(key, expected: v2), "deleting at version \(v2)")
        try check(
            version == 0 && revision > r2, expected: "version 0 under a revision later than \(r2)",
            observed: "version \(version), revision \(revision)")
        let (gone, _) = try c.kvGetOK(key)
        try check(gone == nil, expected: "the deleted key to be absent", observed: "\(gone!)")
        try c.kvDelete(key).expectFailure(
            PX_ERR_NOT_FOUND.status, "deleting an absent key with PX_KV_ANY_VERSION", timeout: c.timeout)
        let (v1, _) = try c.kvPutOK(key, "again", expected: 0, "creating the deleted key again")
        try check(v1 == 1, expected: "a key created again at version 1", observed: "version \(v1)")
    }

    static func listPrefix(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        let p = prefix(h, "list")
        let names = ["b", "a", "c/d", "B", "a0", "é"]
        var last: UInt64 = 0
        for name in names {
            last = try c.kvWriteOK(try c.supported(c.kvPut(p + name, "v-" + name)), "putting").revision
        }
        _ = try c.kvPutOK(String(p.dropLast()), "the prefix without its slash")
        _ = try c.kvPutOK(String(p.dropLast()) + "0", "a neighbour outside the prefix")
        _ = try c.kvWriteOK(c.kvDelete(p + "a0"), "deleting \(p)a0")
        let (entries, revision) = try c.kvListOK(p)
        let wanted = ["B", "a", "b", "c/d", "é"].map { p + $0 }
        try check(
            entries.map(\.key) == wanted, expected: "exactly \(wanted) in byte order",
            observed: "\(entries.map(\.key))")
        try check(
            entries.allSatisfy { $0.text == "v-" + $0.key.dropFirst(p.count) && $0.version == 1 },
            expected: "each listed key with its value at version 1", observed: entries.map(\.description).joined())
        try check(
            revision > last, expected: "the listing's revision to be at least that of the last change (> \(last))",
            observed: "\(revision)")
        let (none, _) = try c.kvListOK(p + "nothing/", "listing a prefix without keys")
        try check(none.isEmpty, expected: "an empty listing", observed: "\(none.map(\.key))")
    }

    static func watchOrder(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        // A registry whose hooks answer PX_ERR_UNSUPPORTED (the SDK's defaults) is reported as not supported.
        _ = try c.supported(c.kvPut(prefix(h, "watch-probe") + "k", "probe"))
        let p = prefix(h, "watch")
        let watch = try h.kvWatch(p, from: 0)
        let outside = try h.kvWatch(p + "elsewhere/", from: 0)
        var writes: [(String, String?, UInt64)] = []  // key, value (nil: delete), revision
        for (key, value) in [("x", "1"), ("y", "1"), ("x", "2"), ("y", nil), ("z", "1"), ("x", nil)] {
            if let value {
                writes.append((p + key, value, try c.kvPutOK(p + key, value).revision))
            } else {
                writes.append((p + key, nil, try c.kvWriteOK(c.kvDelete(p + key), "deleting \(p + key)").revision))
            }
            _ = try c.kvPutOK(String(p.dropLast()) + "-sibling", "noise")
        }
        let got = watch.recorder.wait(for: writes.count, h.options.completionTimeout)
        h.pause(h.options.grace)
        let all = watch.recorder.received
        let wanted = writes.map { $0.1 == nil ? "DELETE \($0.0)@\($0.2)" : "PUT \($0.0)=\"\($0.1!)\"@\($0.2)" }
        try check(
            all.map(\.description) == wanted, expected: wanted.joined(separator: ", "),
            observed: all.isEmpty ? "no events" : all.map(\.description).joined(separator: ", "))
        try check(
            got.allSatisfy { $0.isPut || ($0.entry?.version == 0 && $0.entry?.value.isEmpty == true) },
            expected: "deletes with version 0 and an empty value", observed: got.map(\.description).joined())
        try check(!watch.recorder.didOverlap, expected: "no two callbacks at once", observed: "overlapping callbacks")
        try check(
            outside.recorder.received.isEmpty, expected: "nothing for a watch on another prefix",
            observed: outside.recorder.received.map(\.description).joined(separator: ", "))
        let status = h.kvUnwatch(watch)
        try check(status == PX_OK.status, expected: "on_kv_unwatch to return PX_OK", observed: statusName(status))
        _ = try c.kvPutOK(p + "after", "unwatch")
        h.pause(h.options.grace)
        try check(
            watch.recorder.lateCalls == 0, expected: "no callback after on_kv_unwatch returned",
            observed: "\(watch.recorder.lateCalls) callback(s)")
    }

    static func watchResume(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        // A registry whose hooks answer PX_ERR_UNSUPPORTED (the SDK's defaults) is reported as not supported.
        _ = try c.supported(c.kvPut(prefix(h, "resume-probe") + "k", "probe"))
        let p = prefix(h, "resume")
        var revisions: [UInt64] = []
        for i in 1...5 { revisions.append(try c.kvPutOK(p + "k\(i % 2)", "v\(i)").revision) }
        let from = revisions[1]
        let watch = try h.kvWatch(p, from: from)
        let replayed = watch.recorder.wait(for: 4, h.options.completionTimeout)
        let live = try c.kvPutOK(p + "k9", "v6").revision
        _ = watch.recorder.wait(for: 5, h.options.completionTimeout)
        h.pause(h.options.grace)
        let got = watch.recorder.received.map { $0.entry?.modRevision ?? 0 }
        let wanted = Array(revisions[1...]) + [live]
        try check(
            got == wanted,
            expected: "from revision \(from): the changes at \(revisions[1...].map(String.init)) replayed once each, "
                + "in order, then the live one at \(live)",
            observed: "changes at \(got) (first \(replayed.count) before the live write)")
        let values = watch.recorder.received.compactMap { $0.entry?.text }
        try check(
            values == ["v2", "v3", "v4", "v5", "v6"], expected: "the values v2…v6 in order", observed: "\(values)")
        // The pattern for missing nothing: list, then watch from the listing's revision + 1.
        let (listed, at) = try c.kvListOK(p)
        let follower = try h.kvWatch(p, from: at + 1)
        let next = try c.kvPutOK(p + "k1", "v7").revision
        let followed = follower.recorder.wait(for: 1, h.options.completionTimeout)
        h.pause(h.options.grace)
        try check(
            listed.count == 3 && follower.recorder.received.map { $0.entry?.modRevision ?? 0 } == [next],
            expected: "3 keys listed, then exactly the change at \(next)",
            observed: "\(listed.count) listed, then changes at \(followed.map { $0.entry?.modRevision ?? 0 })")
    }

    static func casRace(_ h: RegistryHarness) throws {
        let c = h.client
        try c.requireMetadataStore()
        let key = prefix(h, "race") + "counter"
        _ = try c.kvWriteOK(try c.supported(c.kvPut(key, "0", expected: 0)), "creating the counter")
        let writers = 4
        let each = 25
        let conflicts = Atomic<Int>(0)
        try RuleRunner.concurrently(writers, timeout: h.options.completionTimeout * 8) { _ in
            var done = 0
            var attempts = 0
            while done < each {
                attempts += 1
                guard attempts < each * 200 else { throw Violation("a writer made \(attempts) attempts for \(each)") }
                let (entry, _) = try c.kvGetOK(key)
                guard let entry, let value = Int(entry.text) else { throw Violation("the counter vanished") }
                let answer = try c.kvWritten(
                    c.kvPut(key, String(value + 1), expected: entry.version), "incrementing the counter")
                if answer.status == PX_OK.status {
                    done += 1
                } else if answer.status == failedPrecondition {
                    conflicts.add(1, ordering: .relaxed)
                } else {
                    throw Violation(
                        expected: "a compare-and-swap to succeed or fail with PX_ERR_FAILED_PRECONDITION",
                        observed: statusName(answer.status))
                }
            }
        }
        let (final, _) = try c.kvGetOK(key)
        let total = writers * each
        try check(
            final?.text == String(total) && final?.version == UInt64(total + 1),
            expected: "the counter at \(total), version \(total + 1), after \(writers) writers × \(each) increments",
            observed: "\(final?.description ?? "absent") (\(conflicts.load(ordering: .relaxed)) conflicts retried)")
    }

    static func keepAliveRenews(_ h: RegistryHarness) throws {
        let c = h.client
        guard c.vtable.on_keepalive != nil else {
            throw NotSupported(description: "the registry has no keep-alive (its on_keepalive is NULL)")
        }
        let service = h.uniqueName("lease")
        let ttl = h.options.ttlMilliseconds
        let unknown = try c.supported(c.keepAlive(service: service, id: "never-registered"))
        try unknown.expectFailure(PX_ERR_NOT_FOUND.status, "renewing an instance nobody registered", timeout: c.timeout)
        try c.registerOK(RegistrySuite.instance(service, "renewed", ttl: ttl))
        try c.registerOK(RegistrySuite.instance(service, "left", ttl: ttl))
        let started = ContinuousClock.now
        // Renewed every ttl/3 for three TTLs: it must outlive them all, while `left` expires.
        while ContinuousClock.now - started < .milliseconds(Int(ttl) * 3) {
            _ = try c.keepAlive(service: service, id: "renewed").completed("renewing renewed", timeout: c.timeout)
            h.pause(.milliseconds(Int(max(ttl / 3, 1))))
        }
        var listed = try c.lookupOK(service)
        let deadline = started + .milliseconds(Int(ttl)) + h.options.ttlSlack
        while listed.contains(where: { $0.instanceID == "left" }), ContinuousClock.now < deadline {
            _ = try c.keepAlive(service: service, id: "renewed").completed("renewing renewed", timeout: c.timeout)
            h.pause(.milliseconds(Int(max(ttl / 3, 1))))
            listed = try c.lookupOK(service)
        }
        try check(
            listed.map(\.instanceID) == ["renewed"],
            expected: "renewed (kept alive every \(ttl / 3) ms) listed and left (never renewed) expired",
            observed: "\(listed.map(\.instanceID))")
        try c.deregisterOK(service: service, id: "renewed")
        try c.keepAlive(service: service, id: "renewed").expectFailure(
            PX_ERR_NOT_FOUND.status, "renewing a deregistered instance", timeout: c.timeout)
    }
}
