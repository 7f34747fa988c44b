import Foundation
import PlexusCore
import SwiftProtobuf

/// Why a protobuf CloudEvent cannot become a Plexus event: the attribute at fault and the reason.
public struct CloudEventConversionError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The attribute at fault, if one is.
    public var attribute: String?
    public var message: String

    public init(attribute: String?, _ message: String) {
        self.attribute = attribute
        self.message = message
    }

    public var description: String { message }
}

extension CECloudEvent {
    /// The attributes `CloudEvent` keeps in fields of its own rather than as extensions.
    static let fieldAttributes: Set<String> = ["datacontenttype", "dataschema", "subject", "time"]

    /// The Plexus event this message carries (CloudEvents protobuf format).
    ///
    /// Optional attributes of any type become their canonical string form (booleans `true`/`false`, integers
    /// in decimal, bytes in base64, timestamps in RFC 3339); `text_data` is stored as its UTF-8 bytes,
    /// `binary_data` as is, and `proto_data` as the `Any`'s value bytes, with `datacontenttype`
    /// `application/protobuf` and `dataschema` the `Any`'s type URL (with `https://` when it has no scheme, as
    /// any.proto says) unless the event names its own.
    /// - Parameter dropping: attribute names left out (credentials a protocol takes out of the event).
    /// - Throws: `CloudEventConversionError` for a missing required attribute or an invalid extension name.
    public func plexusEvent(dropping: Set<String> = []) throws -> CloudEvent {
        var event = CloudEvent(id: id, source: source, specversion: specVersion, type: type)
        for (name, value) in attributes.sorted(by: { $0.key < $1.key }) where !dropping.contains(name) {
            let text = value.canonicalString
            switch name {
            case "datacontenttype": event.datacontenttype = text
            case "dataschema": event.dataschema = text
            case "subject": event.subject = text
            case "time": event.time = text
            case "id", "source", "specversion", "type":
                throw CloudEventConversionError(
                    attribute: name, "attribute '\(name)' belongs in its field, not in 'attributes'")
            default: event.extensions.append((name, text))
            }
        }
        switch data {
        case .binaryData(let bytes): event.data = [UInt8](bytes)
        case .textData(let text): event.data = Array(text.utf8)
        case .protoData(let any):
            event.data = [UInt8](any.value)
            if event.datacontenttype == nil { event.datacontenttype = "application/protobuf" }
            // dataschema must be an absolute URI; an Any's type URL without a scheme means https (any.proto).
            if event.dataschema == nil, !any.typeURL.isEmpty {
                event.dataschema = any.typeURL.contains("://") ? any.typeURL : "https://" + any.typeURL
            }
        case nil: break
        }
        if let reason = event.invalidReason {
            let attribute = ["id", "source", "specversion", "type"].first { reason.contains("'\($0)'") }
            throw CloudEventConversionError(attribute: attribute ?? "extension", reason)
        }
        return event
    }

    /// The message for a Plexus event: extensions as `ce_string`, `time` as `ce_timestamp` when it parses
    /// (`ce_string` otherwise, or always with `timeAsString`), and the data as `text_data` when the content
    /// type is textual and the bytes are UTF-8, `binary_data` otherwise.
    public init(_ event: CloudEvent, timeAsString: Bool = false) {
        self.init()
        id = event.id
        source = event.source
        specVersion = event.specversion
        type = event.type
        if let v = event.datacontenttype { attributes["datacontenttype"] = .string(v) }
        if let v = event.dataschema { attributes["dataschema"] = .init(uriRef: v) }
        if let v = event.subject { attributes["subject"] = .string(v) }
        if let v = event.time {
            if !timeAsString, let stamp = RFC3339.timestamp(v) {
                attributes["time"] = .init(timestamp: stamp)
            } else {
                attributes["time"] = .string(v)
            }
        }
        for (key, value) in event.extensions { attributes[key] = .string(value) }
        if !event.data.isEmpty {
            if Self.isTextual(event.datacontenttype), let text = String(validating: event.data, as: UTF8.self) {
                textData = text
            } else {
                binaryData = Data(event.data)
            }
        }
    }

    /// Whether a content type names text: `text/*`, JSON, XML, or none (the CloudEvents default is JSON).
    static func isTextual(_ contentType: String?) -> Bool {
        guard let type = contentType?.lowercased() else { return true }
        let media = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? type
        return media.hasPrefix("text/") || media == "application/json" || media.hasSuffix("+json")
            || media == "application/xml" || media.hasSuffix("+xml")
    }

    /// The value of an attribute as a string (`nil` when absent).
    public func attributeString(_ name: String) -> String? { attributes[name]?.canonicalString }
}

extension CECloudEvent.CloudEventAttributeValue {
    /// A `ce_string` value.
    public static func string(_ value: String) -> Self {
        var v = Self()
        v.ceString = value
        return v
    }

    init(uriRef: String) {
        self.init()
        ceUriRef = uriRef
    }

    init(timestamp: Google_Protobuf_Timestamp) {
        self.init()
        ceTimestamp = timestamp
    }

    /// The value's canonical string form (CloudEvents type system).
    public var canonicalString: String {
        switch attr {
        case .ceBoolean(let b): return b ? "true" : "false"
        case .ceInteger(let i): return String(i)
        case .ceString(let s), .ceUri(let s), .ceUriRef(let s): return s
        case .ceBytes(let d): return d.base64EncodedString()
        case .ceTimestamp(let t): return RFC3339.format(t)
        case nil: return ""
        }
    }
}

/// RFC 3339 text to and from protobuf timestamps.
enum RFC3339 {
    /// The timestamp of RFC 3339 text, `nil` when it does not parse.
    static func timestamp(_ text: String) -> Google_Protobuf_Timestamp? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = withFraction.date(from: text) { return Google_Protobuf_Timestamp(date: date) }
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        return plain.date(from: text).map { Google_Protobuf_Timestamp(date: $0) }
    }

    /// UTC RFC 3339 text with the timestamp's nanoseconds (none when they are 0).
    static func format(_ stamp: Google_Protobuf_Timestamp) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        let base = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(stamp.seconds)))
        guard stamp.nanos > 0 else { return base }
        var fraction = String(format: "%09d", stamp.nanos)
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return base.replacingOccurrences(of: "Z", with: ".\(fraction)Z")
    }

    /// The current time as RFC 3339 text (UTC, milliseconds).
    public static func now() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}

extension EMCloudEvent {
    /// The same event in the CloudEvents protobuf format: both messages have the same fields and numbers,
    /// so the bytes of one parse as the other.
    public var cloudEventsFormat: CECloudEvent {
        get throws { try CECloudEvent(serializedBytes: try serializedBytes() as [UInt8]) }
    }

    /// This event from a CloudEvents-format message.
    public init(_ event: CECloudEvent) throws {
        try self.init(serializedBytes: try event.serializedBytes() as [UInt8])
    }

    /// The value of an attribute as a string (`nil` when absent).
    public func attributeString(_ name: String) -> String? {
        guard let value = attributes[name] else { return nil }
        switch value.attr {
        case .ceBoolean(let b): return b ? "true" : "false"
        case .ceInteger(let i): return String(i)
        case .ceString(let s), .ceUri(let s), .ceUriRef(let s): return s
        case .ceBytes(let d): return d.base64EncodedString()
        case .ceTimestamp(let t): return RFC3339.format(t)
        case nil: return ""
        }
    }

    /// Sets a `ce_string` attribute.
    public mutating func setString(_ name: String, _ value: String) {
        var v = EMCloudEvent.CloudEventAttributeValue()
        v.ceString = value
        attributes[name] = v
    }
}

/// The current time as RFC 3339 text, for response attributes.
public func rfc3339Now() -> String { RFC3339.now() }
