import NIOHTTP1
import PlexusPluginSDK

/// The events of a request in the CloudEvents HTTP binding, decoded and checked with the SDK's shared
/// CloudEvents code (`CloudEventHTTP`, `CloudEventJSON`: the same the HTTP protocol plugin's ingress uses), or
/// the status and reason that say why it carries none.
enum KnativeIngress {
    enum Outcome {
        case success([CloudEvent])
        case failure(HTTPResponseStatus, String)
    }

    static func events(headers: [(name: String, value: String)], body: [UInt8]) -> Outcome {
        let contentType = headers.first { $0.name.lowercased() == "content-type" }?.value
        let events: [CloudEvent]
        do throws(CloudEventJSON.DecodingError) {
            switch CloudEventHTTP.mode(contentType: contentType) {
            case .binary:
                guard headers.contains(where: { $0.name.utf8.count > 3 && $0.name.lowercased().hasPrefix("ce-") })
                else {
                    return .failure(
                        .unsupportedMediaType,
                        "not a CloudEvent: expected binary mode (ce-* headers) or Content-Type "
                            + "\(CloudEventHTTP.structuredType) or \(CloudEventHTTP.batchType); got "
                            + (contentType.map { "'\($0)'" } ?? "no Content-Type"))
                }
                events = [try CloudEventHTTP.decodeBinary(headers: headers, body: body)]
            case .structured:
                events = [try CloudEventJSON.decode(body)]
            case .batch:
                events = try CloudEventJSON.decodeBatch(body)
            case .unsupportedFormat(let media):
                return .failure(
                    .unsupportedMediaType,
                    "event format '\(media)' is not supported; use binary mode, \(CloudEventHTTP.structuredType) or "
                        + CloudEventHTTP.batchType)
            }
        } catch {
            return .failure(.badRequest, error.description)
        }
        for (index, event) in events.enumerated() {
            if let (attribute, message) = CloudEventHTTP.problem(event) {
                return .failure(.badRequest, (events.count > 1 ? "event \(index): " : "") + "\(attribute): \(message)")
            }
        }
        return .success(events)
    }
}
