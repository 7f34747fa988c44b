import NIOHTTP1
import PlexusPluginSDK
import PlexusProtos

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
            case .unsupportedFormat(let media) where media == protobufType || media == protobufBatchType:
                switch protobufEvents(body, batch: media == protobufBatchType) {
                case .success(let decoded): events = decoded
                case .failure(let problem): return .failure(problem)
                }
            case .unsupportedFormat(let media):
                return .failure(
                    .problem(
                        .unsupportedMediaType,
                        "event format '\(media)' is not supported; use \(CloudEventHTTP.structuredType), "
                            + "\(protobufType), their batch forms or binary mode"))
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

    /// `application/cloudevents+protobuf`: one event in the CloudEvents protobuf format (structured mode).
    static let protobufType = "application/cloudevents+protobuf"
    /// `application/cloudevents-batch+protobuf`: a `CloudEventBatch` message.
    static let protobufBatchType = "application/cloudevents-batch+protobuf"

    /// The events of a protobuf body (the same generated message and conversion as the gRPC plugin's).
    static func protobufEvents(_ body: [UInt8], batch: Bool) -> Outcome {
        let messages: [CECloudEvent]
        do {
            messages =
                batch ? try CECloudEventBatch(serializedBytes: body).events : [try CECloudEvent(serializedBytes: body)]
        } catch {
            return .failure(.problem(.badRequest, "the body is not a CloudEvents protobuf message: \(error)"))
        }
        var events: [CloudEvent] = []
        for (index, message) in messages.enumerated() {
            do {
                events.append(try message.plexusEvent())
            } catch let error as CloudEventConversionError {
                return .failure(
                    .problem(
                        .badRequest, batch ? "event \(index): \(error.message)" : error.message,
                        attribute: error.attribute, index: batch ? index : nil))
            } catch {
                return .failure(.problem(.badRequest, "event \(index): \(error)"))
            }
        }
        return .success(events)
    }
}
