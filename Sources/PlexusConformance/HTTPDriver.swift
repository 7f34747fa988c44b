import Foundation
import PlexusCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP protocol through plain HTTP/1.1 requests on a socket: publishes in binary mode on one
/// keep-alive connection, subscribes with a pull stream (server-sent events) on a connection of its own,
/// settles each delivery at its own URL.
final class HTTPDriver: ProtocolDriver {
    let name = "http"
    let port: Int
    private let connection = Mutex<HTTPSocket?>(nil)

    init(port: Int) throws {
        self.port = port
        _ = try withConnection { _ in () }
    }

    /// Runs `body` on the keep-alive connection (opened once; a closed connection is an error, since the
    /// suite checks that the server keeps it).
    private func withConnection<R: Sendable>(_ body: (HTTPSocket) throws -> R) throws -> R {
        try connection.withLock { socket in
            if socket == nil { socket = try HTTPSocket(port: port) }
            guard let open = socket else { throw Violation("no connection") }
            return try body(open)
        }
    }

    static func path(_ topic: String) -> String {
        "/topics/" + (topic.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? topic)
    }

    func publish(topic: String, _ events: [CloudEvent]) async throws -> Refusal? {
        for event in events {
            let response = try withConnection { socket in
                try socket.request(
                    "POST", Self.path(topic), headers: CloudEventHTTP.binaryHeaders(event), body: event.data)
            }
            if response.status != 202 { return Refusal(description: "HTTP \(response.status) \(response.text)") }
        }
        return nil
    }

    func subscribe(topic: String, group: String, ordered: Bool) async throws -> any DriverSubscription {
        try HTTPPull(
            port: port, topic: topic, group: group,
            settle: { [self] id, verb in
                let response = try withConnection { socket in
                    try socket.request("POST", Self.path(topic) + "/deliveries/\(id)/\(verb)", headers: [], body: [])
                }
                try check(
                    response.status == 204, expected: "204 for \(verb) of delivery \(id)",
                    observed: "HTTP \(response.status) \(response.text)")
            })
    }

    func publishInvalid(topic: String) async throws -> (what: String, refusal: Refusal?) {
        let body = Array(#"{"specversion":"1.0","source":"/conformance","type":"t"}"#.utf8)
        let response = try withConnection { socket in
            try socket.request(
                "POST", Self.path(topic), headers: [("Content-Type", "application/cloudevents+json")], body: body)
        }
        let refusal = response.status == 202 ? nil : Refusal(description: "HTTP \(response.status) \(response.text)")
        return ("a structured event without an id", refusal)
    }

    func close() async { connection.withLock { $0?.close() } }
}

/// A pull subscription: `GET /topics/{topic}/events` read on a thread of its own.
final class HTTPPull: DriverSubscription {
    let socket: HTTPSocket
    let inbox = DeliveryInbox()
    let settle: @Sendable (UInt64, String) throws -> Void

    init(port: Int, topic: String, group: String, settle: @escaping @Sendable (UInt64, String) throws -> Void) throws {
        self.settle = settle
        socket = try HTTPSocket(port: port)
        let query =
            "?group=\(group.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? group)&start=earliest"
        try socket.send("GET \(HTTPDriver.path(topic))/events\(query) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let head = try socket.readHead()
        guard head.status == 200 else {
            socket.close()
            throw Violation(expected: "200 and an event stream", observed: "HTTP \(head.status)")
        }
        let chunked = head.header("transfer-encoding")?.lowercased().contains("chunked") ?? false
        let thread = Thread { [socket, inbox] in
            var id: UInt64?
            var data: [String] = []
            do {
                while true {
                    let line = try chunked ? socket.readChunkedLine() : socket.readLine()
                    if line.isEmpty {
                        if let delivery = id, !data.isEmpty {
                            let event = try CloudEventJSON.decode(Array(data.joined(separator: "\n").utf8))
                            inbox.put(DriverDelivery(event: event, attempt: nil, id: delivery))
                        }
                        id = nil
                        data = []
                    } else if line.hasPrefix("id:") {
                        id = UInt64(line.dropFirst(3).trimmingCharacters(in: .whitespaces))
                    } else if line.hasPrefix("data:") {
                        var value = line.dropFirst(5)
                        if value.first == " " { value = value.dropFirst() }
                        data.append(String(value))
                    }
                }
            } catch {
                inbox.end("\(error)")
            }
        }
        thread.name = "plexus.conformance.http-pull"
        thread.start()
    }

    func next(timeout: Duration) async throws -> DriverDelivery? { try await inbox.next(timeout: timeout) }
    func ack(_ delivery: DriverDelivery) async throws { try settle(delivery.id, "ack") }
    func nack(_ delivery: DriverDelivery) async throws { try settle(delivery.id, "nack") }
    func cancel() async { socket.close() }
}

/// One blocking TCP connection to 127.0.0.1 speaking just enough HTTP/1.1 for the suite.
final class HTTPSocket: @unchecked Sendable {
    // Safe: used by one thread at a time (the driver's lock, or the pull stream's reader thread); `close`
    // only shuts the descriptor down, which makes a blocked read return.
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var chunkLeft = 0

    struct Head {
        var status: Int
        var headers: [(String, String)]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
    }

    struct Response {
        var status: Int
        var body: [UInt8]
        var text: String { String(decoding: body.prefix(300), as: UTF8.self) }
    }

    struct Closed: Error, CustomStringConvertible {
        var description: String { "the server closed the connection" }
    }

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Violation("cannot create a socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw Violation("cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        var timeout = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    deinit { Glibc.close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Closed() }
            sent += n
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw Closed() }
        buffer += chunk[0..<n]
    }

    /// One line without its CR LF (or LF).
    func readLine() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<end])
                buffer.removeFirst(end + 1)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            try fill()
        }
    }

    func readExact(_ count: Int) throws -> [UInt8] {
        while buffer.count < count { try fill() }
        let out = Array(buffer[..<count])
        buffer.removeFirst(count)
        return out
    }

    /// A line of a chunked body (chunk boundaries may fall anywhere in it).
    func readChunkedLine() throws -> String {
        var line: [UInt8] = []
        while true {
            if chunkLeft == 0 {
                let size = try readLine()
                if size.isEmpty { continue }
                chunkLeft = Int(size.split(separator: ";")[0], radix: 16) ?? 0
                if chunkLeft == 0 { throw Closed() }
            }
            while buffer.isEmpty { try fill() }
            let take = min(chunkLeft, buffer.count)
            if let end = buffer[..<take].firstIndex(of: UInt8(ascii: "\n")) {
                line += buffer[..<end]
                buffer.removeFirst(end + 1)
                chunkLeft -= end + 1
                if chunkLeft == 0 { _ = try readLine() }
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            line += buffer[..<take]
            buffer.removeFirst(take)
            chunkLeft -= take
            if chunkLeft == 0 { _ = try readLine() }
        }
    }

    func readHead() throws -> Head {
        let status = try readLine()
        let parts = status.split(separator: " ")
        guard parts.count >= 2, let code = Int(parts[1]) else { throw Violation("not an HTTP status line: \(status)") }
        var headers: [(String, String)] = []
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            if let colon = line.firstIndex(of: ":") {
                headers.append(
                    (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        }
        return Head(status: code, headers: headers)
    }

    /// Sends a request and reads its response.
    func request(_ method: String, _ path: String, headers: [(name: String, value: String)], body: [UInt8]) throws
        -> Response
    {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        try send(Array((head + "\r\n").utf8) + body)
        let response = try readHead()
        var content: [UInt8] = []
        if let length = response.header("content-length").flatMap({ Int($0) }) {
            content = try readExact(length)
        } else if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            while true {
                let size = Int(try readLine().split(separator: ";").first ?? "0", radix: 16) ?? 0
                if size == 0 {
                    _ = try readLine()
                    break
                }
                content += try readExact(size)
                _ = try readLine()
            }
        }
        return Response(status: response.status, body: content)
    }
}
