import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal blocking HTTP/1.1 client for the node's admin endpoint on loopback.
struct AdminClient {
    /// A non-success answer of the node: its HTTP status and body (`{"error", "code"}` when it is JSON).
    struct Failure: Error, CustomStringConvertible {
        var status: Int
        var body: String
        var description: String { "the node answered \(status): \(problem)" }
        /// The node's error text and code (`heartbeat-source: operations.set-interval: returned
        /// PX_ERR_INVALID_ARGUMENT [operation-failed, HTTP 422]`), or the body as it is when it is not JSON.
        var problem: String {
            struct Problem: Decodable {
                var error: String
                var code: String?
            }
            guard let answer = try? JSONDecoder().decode(Problem.self, from: Data(body.utf8)) else { return body }
            return "\(answer.error) [\(answer.code.map { "\($0), " } ?? "")HTTP \(status)]"
        }
    }

    struct ConnectionError: Error, CustomStringConvertible {
        var description: String
    }

    var host: String
    var port: UInt16
    /// Sent as `Authorization: Bearer …` on every request when set (the node's `admin.token`).
    var token: String?

    /// - Parameter token: the admin token; nil takes `PLEXUS_ADMIN_TOKEN` from the environment, if set.
    init(address: String, token: String? = nil) throws {
        self.token =
            token ?? ProcessInfo.processInfo.environment["PLEXUS_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw ConnectionError(description: "'\(address)' is not HOST:PORT")
        }
        self.host = String(address[..<colon])
        self.port = port
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/")))
            ?? s
    }

    /// Sends one request and returns the status and body.
    func request(_ method: String, _ path: String, body: String = "") throws -> (Int, String) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let first = info else {
            throw ConnectionError(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(info) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { throw ConnectionError(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            throw ConnectionError(
                description:
                    "no node answers at \(host):\(port) (\(String(cString: strerror(errno)))); is `plexus serve` running, and is --admin right?"
            )
        }
        let authorization = token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
        let request =
            "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\(authorization)"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        var bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, 0) }
            guard n > 0 else { throw ConnectionError(description: "send failed: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n") else {
            throw ConnectionError(description: "the node's answer was not HTTP")
        }
        let statusLine = text[..<headerEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw ConnectionError(description: "the node's answer had no status")
        }
        return (status, String(text[headerEnd.upperBound...]))
    }
}
