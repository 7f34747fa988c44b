import PlexusPluginSDK

/// How an event is laid out as the fields of one stream entry, and read back: one field per CloudEvents
/// attribute present (`specversion`, `id`, `source`, `type`, `datacontenttype`, `dataschema`, `subject`,
/// `time`), one per extension under its own name, and `data` for the data bytes.
enum StreamEntry {
    static let attributes: Set<String> = [
        "specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time",
    ]

    /// The XADD arguments after the stream key and id: field, value, field, value, …
    static func fields(of event: CloudEvent) -> [[UInt8]] {
        var out: [[UInt8]] = []
        func add(_ name: String, _ value: String?) {
            guard let value else { return }
            out.append(Array(name.utf8))
            out.append(Array(value.utf8))
        }
        add("specversion", event.specversion)
        add("id", event.id)
        add("source", event.source)
        add("type", event.type)
        add("datacontenttype", event.datacontenttype)
        add("dataschema", event.dataschema)
        add("subject", event.subject)
        add("time", event.time)
        for (key, value) in event.extensions { add(key, value) }
        out.append(Array("data".utf8))
        out.append(event.data)
        return out
    }

    /// The event an entry carries. An entry written by another producer (without `type` or `source`) still
    /// becomes an event: its id defaults to the entry id, its source to `/redis/<stream>`, its type to
    /// `io.plexus.redis.entry`; fields whose names are not valid extension names (lowercase letters and
    /// digits) are counted in `dropped` and left out.
    static func event(stream: String, entryID: String, fields: [(String, [UInt8])], dropped: inout Int) -> CloudEvent {
        var event = CloudEvent(id: entryID, source: "/redis/\(stream)", type: "io.plexus.redis.entry")
        for (name, value) in fields {
            let text = String(decoding: value, as: UTF8.self)
            switch name {
            case "data": event.data = value
            case "specversion": event.specversion = text
            case "id": event.id = text
            case "source": event.source = text
            case "type": event.type = text
            case "datacontenttype": event.datacontenttype = text
            case "dataschema": event.dataschema = text
            case "subject": event.subject = text
            case "time": event.time = text
            default:
                if isExtensionName(name) {
                    event.extensions.append((key: name, value: text))
                } else {
                    dropped += 1
                }
            }
        }
        return event
    }

    static func isExtensionName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 20
            && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    /// Compares two stream ids (`ms-seq`) numerically.
    static func precedes(_ a: String, _ b: String) -> Bool {
        func parts(_ id: String) -> (UInt64, UInt64) {
            let split = id.split(separator: "-", maxSplits: 1)
            return (UInt64(split.first ?? "") ?? 0, split.count > 1 ? UInt64(split[1]) ?? 0 : 0)
        }
        let (x, y) = (parts(a), parts(b))
        return x.0 < y.0 || (x.0 == y.0 && x.1 < y.1)
    }
}
