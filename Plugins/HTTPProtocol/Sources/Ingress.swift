import NIOHTTP1
import PlexusPluginSDK

/// Turns a request into the events it carries, in whichever mode it uses, or into the problem that says
/// why it carries none.
enum Ingress {
    enum Outcome {
        case success([CloudEvent])
        case failure(Response)
    }

    /// The events of a `POST /topics/{topic}` request, checked as the HTTP binding and the CloudEvents
    /// type system ask (required attributes, `specversion` 1.0, RFC 3339 `time`, no control characters).
    static func events(headers: HTTPHeaders, body: [UInt8]) -> Outcome {
        let contentType = headers.first(name: "content-type")
        let events: [CloudEvent]
        do throws(CloudEventJSON.DecodingError) {
            switch CloudEventHTTP.mode(contentType: contentType) {
            case .binary:
                guard headers.contains(where: { $0.name.utf8.count > 3 && $0.name.lowercased().hasPrefix("ce-") })
                else {
                    return .failure(
                        .problem(
                            .unsupportedMediaType,
                            "not a CloudEvent: expected binary mode (ce-* headers) or Content-Type "
                                + "\(CloudEventHTTP.structuredType) or \(CloudEventHTTP.batchType); got "
                                + (contentType.map { "'\($0)'" } ?? "no Content-Type")))
                }
                events = [try CloudEventHTTP.decodeBinary(headers: headers.map { ($0.name, $0.value) }, body: body)]
            case .structured:
                events = [try CloudEventJSON.decode(body)]
            case .batch:
                events = try CloudEventJSON.decodeBatch(body)
            case .unsupportedFormat(let media):
                return .failure(
                    .problem(
                        .unsupportedMediaType,
                        "event format '\(media)' is not supported; use \(CloudEventHTTP.structuredType), "
                            + "\(CloudEventHTTP.batchType) or binary mode"))
            }
        } catch {
            return .failure(.problem(.badRequest, error.description, attribute: error.attribute, index: error.index))
        }
        for (index, event) in events.enumerated() {
            if let (attribute, message) = CloudEventHTTP.problem(event) {
                let batch = events.count > 1 || CloudEventHTTP.mode(contentType: contentType) == .batch
                return .failure(
                    .problem(
                        .badRequest, batch ? "event \(index): \(message)" : message, attribute: attribute,
                        index: batch ? index : nil))
            }
        }
        return .success(events)
    }
}
