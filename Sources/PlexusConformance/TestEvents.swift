import PlexusCore

/// The events the storage suite appends.
enum TestEvents {
    static let source = "/plexus/conformance"
    static let type = "org.plexus.conformance.test"

    /// A small event whose data names it, padded with a pattern to `size` bytes when larger.
    static func simple(_ id: String, size: Int = 0) -> CloudEvent {
        var data = Array("payload of \(id)".utf8)
        if data.count < size {
            data += (data.count..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 17) }
        }
        return CloudEvent(id: id, source: source, type: type, data: data)
    }

    /// Events that exercise every attribute: all optional attributes present (non-ASCII text included),
    /// several extensions, binary data with every byte value; and events with every optional attribute
    /// absent, no extensions and no data.
    static let roundTrip: [CloudEvent] = [
        CloudEvent(
            id: "rt-full", source: "https://example.com/sources/conformance?a=1&b=ü", specversion: "1.0",
            type: "org.plexus.conformance.round-trip", datacontenttype: "application/octet-stream",
            dataschema: "https://example.com/schemas/round-trip/1.json", subject: "räksmörgås/🦀/1",
            time: "2026-01-02T03:04:05.123456789Z",
            extensions: [
                ("partitionkey", "key-42"), ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("sequence", "7"), ("flag", "true"), ("blob", "aGVsbG8gd29ybGQ="),
            ],
            data: Array(0...255) + Array((0...255).reversed())),
        CloudEvent(id: "rt-minimal", source: "/s", type: "t"),
        CloudEvent(
            id: "rt-json", source: source, type: "org.plexus.conformance.json", datacontenttype: "application/json",
            subject: "s", extensions: [("partitionkey", "")],
            data: Array(#"{"k":"v","n":[1,2,3],"text":"naïve"}"#.utf8)),
        CloudEvent(id: "rt-nul", source: source, type: "org.plexus.conformance.binary", data: [0, 0, 0, 1, 0]),
    ]

    /// How `observed` differs from `expected`, or `nil` when every attribute, extension and data byte is the
    /// same (extensions compared as a set of pairs: their order carries no meaning).
    static func difference(_ expected: CloudEvent, _ observed: CloudEvent) -> String? {
        let attributes: [(String, String?, String?)] = [
            ("id", expected.id, observed.id), ("source", expected.source, observed.source),
            ("specversion", expected.specversion, observed.specversion), ("type", expected.type, observed.type),
            ("datacontenttype", expected.datacontenttype, observed.datacontenttype),
            ("dataschema", expected.dataschema, observed.dataschema), ("subject", expected.subject, observed.subject),
            ("time", expected.time, observed.time),
        ]
        func show(_ value: String?) -> String { value.map { "\"\($0)\"" } ?? "absent" }
        for (name, a, b) in attributes where a != b {
            return "attribute \(name) is \(show(b)) instead of \(show(a))"
        }
        let wanted = expected.extensions.map { "\($0.key)=\($0.value)" }.sorted()
        let got = observed.extensions.map { "\($0.key)=\($0.value)" }.sorted()
        if wanted != got {
            return "extensions are [\(got.joined(separator: ", "))] instead of [\(wanted.joined(separator: ", "))]"
        }
        if expected.data != observed.data {
            let firstDifference = zip(expected.data, observed.data).enumerated().first { $1.0 != $1.1 }?.offset
            let at = firstDifference.map { ", first differing at byte \($0)" } ?? ""
            return "data is \(observed.data.count) bytes instead of \(expected.data.count)\(at)"
        }
        return nil
    }
}
