import NIOHTTP1
import PlexusPluginSDK

/// One complete response: a status, headers and a body.
struct Response: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: [UInt8] = []
    /// Close the connection after this response (the request could not be read to its end).
    var close = false

    static let accepted = Response(status: .accepted)

    /// A JSON body.
    static func json(_ status: HTTPResponseStatus, _ text: String, headers: [(String, String)] = []) -> Response {
        Response(status: status, headers: [("Content-Type", "application/json")] + headers, body: Array(text.utf8))
    }

    /// An RFC 7807 problem: `{"type", "title", "status", "detail"}`, plus `attribute` (the CloudEvents
    /// attribute or field at fault) and `index` (the event of a batch) when known.
    static func problem(
        _ status: HTTPResponseStatus, _ detail: String, attribute: String? = nil, index: Int? = nil,
        headers: [(String, String)] = [], close: Bool = false
    ) -> Response {
        var members = [
            ("type", CloudEventJSON.quote("about:blank")), ("title", CloudEventJSON.quote(status.reasonPhrase)),
            ("status", String(status.code)), ("detail", CloudEventJSON.quote(detail)),
        ]
        if let attribute { members.append(("attribute", CloudEventJSON.quote(attribute))) }
        if let index { members.append(("index", String(index))) }
        let text = "{" + members.map { "\(CloudEventJSON.quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
        return Response(
            status: status, headers: [("Content-Type", "application/problem+json")] + headers, body: Array(text.utf8),
            close: close)
    }

    /// The problem for a failure the kernel reported (a refused or failed publish, subscribe, …).
    static func problem(for error: PluginError, overloadRetryAfter: Int) -> Response {
        switch error.status {
        case PX_ERR_NOT_FOUND.status: return .problem(.notFound, error.message)
        case PX_ERR_INVALID_ARGUMENT.status: return .problem(.badRequest, error.message)
        case PX_ERR_UNAVAILABLE.status:
            return .problem(.serviceUnavailable, error.message, headers: [("Retry-After", String(overloadRetryAfter))])
        case PX_ERR_RESOURCE_EXHAUSTED.status:
            return .problem(.tooManyRequests, error.message, headers: [("Retry-After", String(overloadRetryAfter))])
        case PX_ERR_PERMISSION_DENIED.status: return .problem(.forbidden, error.message)
        case PX_ERR_TIMEOUT.status: return .problem(.gatewayTimeout, error.message)
        default: return .problem(.internalServerError, error.message)
        }
    }

    /// 405 with the methods the resource allows.
    static func methodNotAllowed(_ method: HTTPMethod, allowed: [String]) -> Response {
        .problem(
            .methodNotAllowed, "\(method.rawValue) is not allowed here; use \(allowed.joined(separator: " or "))",
            headers: [("Allow", allowed.joined(separator: ", "))])
    }
}
