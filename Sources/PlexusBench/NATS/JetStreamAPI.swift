import Foundation

/// The JetStream API requests the driver sends, and how their answers are read.
///
/// Requests go to `$JS.API.…` subjects with a reply inbox; the answer is JSON with an `error` object when
/// the request failed (`{"error":{"code":400,"err_code":10058,"description":"…"}}`).
enum JetStreamAPI {
    /// `$JS.API.STREAM.CREATE.<stream>`: a stream on subject `stream`, file storage, every other setting the
    /// server's default (limits retention, no limits on count, bytes or age).
    static func createStream(_ stream: String) -> (subject: String, body: [UInt8]) {
        let body = #"{"name":"\#(stream)","subjects":["\#(stream)"],"storage":"file"}"#
        return ("$JS.API.STREAM.CREATE.\(stream)", Array(body.utf8))
    }

    /// `$JS.API.STREAM.DELETE.<stream>`.
    static func deleteStream(_ stream: String) -> (subject: String, body: [UInt8]) {
        ("$JS.API.STREAM.DELETE.\(stream)", [])
    }

    /// `$JS.API.CONSUMER.DURABLE.CREATE.<stream>.<durable>`: a durable push consumer delivering to
    /// `deliverSubject` for the queue group `group`, from the stream's start, with explicit acks (each message
    /// acknowledged on its own); ack wait, max deliveries and max ack pending (1000) are the server's defaults.
    static func createConsumer(stream: String, durable: String, deliverSubject: String, group: String) -> (
        subject: String, body: [UInt8]
    ) {
        let body = """
            {"stream_name":"\(stream)","config":{"durable_name":"\(durable)","deliver_subject":"\(deliverSubject)",\
            "deliver_group":"\(group)","deliver_policy":"all","ack_policy":"explicit"}}
            """
        return ("$JS.API.CONSUMER.DURABLE.CREATE.\(stream).\(durable)", Array(body.utf8))
    }

    /// The error an API answer or a publish acknowledgement carries, or `nil` when it succeeded.
    ///
    /// - Parameters:
    ///   - answer: The reply message.
    ///   - label: The subject of the error (`jetstream 127.0.0.1:4222 stream bench_x_0`).
    static func error(in answer: NATSMessage, label: String) -> BenchError? {
        if answer.status == 503 {
            return BenchError(.serverError, subject: label, "no responders: is JetStream enabled (nats-server -js)?")
        }
        if let status = answer.status, status >= 400 {
            return BenchError(.serverError, subject: label, "status \(status)")
        }
        // The usual answer is short and error-free; only look closer when it mentions an error.
        guard containsError(answer.payload) else { return nil }
        let text = String(decoding: answer.payload, as: UTF8.self)
        if let object = try? JSONSerialization.jsonObject(with: Data(answer.payload)) as? [String: Any],
            let error = object["error"] as? [String: Any]
        {
            let code = error["err_code"].map { " err_code \($0)" } ?? ""
            return BenchError(.serverError, subject: label, "\(error["description"] ?? text)\(code)")
        }
        return BenchError(.serverError, subject: label, text)
    }

    private static let errorKey = Array(#""error""#.utf8)

    private static func containsError(_ payload: [UInt8]) -> Bool {
        guard payload.count >= errorKey.count else { return false }
        for start in 0...(payload.count - errorKey.count) where payload[start] == errorKey[0] {
            if payload[start..<(start + errorKey.count)].elementsEqual(errorKey) { return true }
        }
        return false
    }
}
