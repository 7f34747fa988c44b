import CCurl
import Crypto
import PlexusPluginSDK

/// A failure talking to the S3 endpoint: the request, and curl's error or the server's status and answer.
struct S3Error: Error, CustomStringConvertible {
    var request: String
    var reason: String
    var description: String { "\(request): \(reason)" }
}

/// Credentials for SigV4: from the configuration, else the AWS environment variables.
struct S3Credentials: Sendable {
    var accessKeyID: String
    var secretAccessKey: String
    var sessionToken: String?
}

/// One libcurl easy handle that sends SigV4-signed, path-style requests (`<endpoint>/<bucket>/<key>`) to an
/// S3-compatible endpoint; libcurl signs them (`CURLOPT_AWS_SIGV4`) and keeps the connection alive between them.
///
/// - Important: Not thread-safe: one per worker thread.
final class S3Client {
    let endpoint: String
    let region: String
    let bucket: String
    let credentials: S3Credentials
    let timeoutMs: Int
    private let handle: UnsafeMutableRawPointer

    /// - Throws: `S3Error` when libcurl cannot make a handle.
    init(endpoint: String, region: String, bucket: String, credentials: S3Credentials, timeoutMs: Int) throws {
        guard let handle = curl_easy_init() else {
            throw S3Error(request: "curl_easy_init", reason: "libcurl could not allocate a handle")
        }
        self.handle = handle
        self.endpoint = endpoint
        self.region = region
        self.bucket = bucket
        self.credentials = credentials
        self.timeoutMs = timeoutMs
    }

    deinit { curl_easy_cleanup(handle) }

    /// Checks that the bucket exists and the credentials are accepted (`HEAD /<bucket>`).
    /// - Throws: `S3Error` unless the answer is 200.
    func headBucket() throws {
        let (status, body) = try perform(method: "HEAD", key: nil, body: [], contentType: nil)
        guard status == 200 else {
            throw S3Error(request: "HEAD \(bucket)", reason: Self.explain(status, body))
        }
    }

    /// Writes an object and returns once the server answered 200 (S3 has it durably by then).
    /// - Throws: `S3Error` for any other outcome.
    func putObject(key: String, body: [UInt8], contentType: String) throws {
        let (status, answer) = try perform(method: "PUT", key: key, body: body, contentType: contentType)
        guard status == 200 else {
            throw S3Error(request: "PUT \(bucket)/\(key)", reason: Self.explain(status, answer))
        }
    }

    static func explain(_ status: Int, _ body: [UInt8]) -> String {
        let text = String(decoding: body.prefix(512), as: UTF8.self)
        return "HTTP \(status)" + (text.isEmpty ? "" : ": \(text)")
    }

    /// An object key percent-encoded for a URL path: RFC 3986 unreserved bytes and `/` kept, all else `%XX`
    /// (the form SigV4's canonical URI expects).
    static func encodePath(_ key: String) -> String {
        var out = ""
        for byte in key.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E, 0x2F:
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    /// Sends one request; the status and at most 4 KiB of the answer.
    private func perform(method: String, key: String?, body: [UInt8], contentType: String?) throws -> (
        Int, [UInt8]
    ) {
        curl_easy_reset(handle)
        let url = endpoint + "/" + Self.encodePath(bucket) + (key.map { "/" + Self.encodePath($0) } ?? "")
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headers) }
        let digest = SHA256.hash(data: body).map { byte -> String in
            let hex = Array("0123456789abcdef".utf8)
            return String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
        }.joined()
        // No "Expect:" override: libcurl 7.88 would sign the header it then leaves out. Content-Type is always
        // set (libcurl's default for a body is a form type, which some servers parse away).
        var lines = ["x-amz-content-sha256: \(digest)"]
        if let contentType { lines.append("Content-Type: \(contentType)") }
        if let token = credentials.sessionToken { lines.append("x-amz-security-token: \(token)") }
        for line in lines { headers = curl_slist_append(headers, line) }
        let answer = ResponseBody()
        let unmanaged = Unmanaged.passRetained(answer)
        defer { unmanaged.release() }
        var problems: [String] = []
        func check(_ code: CURLcode, _ what: String) {
            if code != CURLE_OK { problems.append("\(what): \(String(cString: curl_easy_strerror(code)))") }
        }
        check(px_curl_set_string(handle, CURLOPT_URL, url), "URL")
        check(px_curl_set_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        check(px_curl_set_long(handle, CURLOPT_TIMEOUT_MS, timeoutMs), "TIMEOUT_MS")
        check(px_curl_set_long(handle, CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMs, 5000)), "CONNECTTIMEOUT_MS")
        check(px_curl_set_string(handle, CURLOPT_AWS_SIGV4, "aws:amz:\(region):s3"), "AWS_SIGV4")
        check(px_curl_set_string(handle, CURLOPT_USERNAME, credentials.accessKeyID), "USERNAME")
        check(px_curl_set_string(handle, CURLOPT_PASSWORD, credentials.secretAccessKey), "PASSWORD")
        check(px_curl_set_headers(handle, headers), "HTTPHEADER")
        check(px_curl_set_writer(handle, s3ResponseWriter, unmanaged.toOpaque()), "WRITEFUNCTION")
        if method == "HEAD" {
            check(px_curl_set_long(handle, CURLOPT_NOBODY, 1), "NOBODY")
        } else {
            check(px_curl_set_string(handle, CURLOPT_CUSTOMREQUEST, method), "CUSTOMREQUEST")
        }
        guard problems.isEmpty else {
            throw S3Error(request: "\(method) \(url)", reason: problems.joined(separator: "; "))
        }
        // Never an empty buffer: libcurl reads a NULL `POSTFIELDS` as "read the body from a callback".
        let storage = body.isEmpty ? [0] : body
        let code = storage.withUnsafeBytes { bytes -> CURLcode in
            if method != "HEAD", let start = bytes.baseAddress {
                // The body is borrowed for the transfer (POSTFIELDS does not copy), which ends before this returns.
                _ = px_curl_set_size(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
                _ = px_curl_set_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: start))
            }
            return curl_easy_perform(handle)
        }
        guard code == CURLE_OK else {
            throw S3Error(request: "\(method) \(url)", reason: String(cString: curl_easy_strerror(code)))
        }
        return (Int(px_curl_response_code(handle)), answer.bytes)
    }
}

/// The first 4 KiB of a response body (for error messages).
private final class ResponseBody {
    var bytes: [UInt8] = []
}

/// libcurl's write callback: keeps the start of the answer in the `ResponseBody` passed as `user`.
private let s3ResponseWriter: px_curl_write_fn = { data, size, count, user in
    let n = size * count
    if let data, let user {
        let body = Unmanaged<ResponseBody>.fromOpaque(user).takeUnretainedValue()
        let room = max(0, 4096 - body.bytes.count)
        if room > 0 {
            body.bytes.append(contentsOf: UnsafeRawBufferPointer(start: data, count: min(n, room)))
        }
    }
    return n
}
