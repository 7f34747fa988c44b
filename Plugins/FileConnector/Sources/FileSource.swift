import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A failure on the connector's file: the operation, the path and the system's reason.
struct FileError: Error, CustomStringConvertible {
    var operation: String
    var path: String
    var reason: String
    var description: String { "\(operation) \(path): \(reason)" }

    init(_ operation: String, _ path: String, errno code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.reason = String(cString: strerror(code))
    }
}

/// Tails a JSON-lines file: each complete line becomes one event (a line holding a CloudEvent in the JSON
/// format is that event; any other line is wrapped). The position is the file's inode and the byte offset
/// after the last published line. A rotated file (the path now names another inode) is read to its end
/// before the new one is opened from its start; a truncated one (shorter than the offset) is read again
/// from its start.
final class FileSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only.
    let path: String
    private var fd: Int32 = -1
    private var inode: UInt64 = 0
    /// The offset after the last complete line handed out.
    private var offset: UInt64 = 0
    /// Bytes read past `offset` that do not end a line yet.
    private var pending: [UInt8] = []

    init(path: String) { self.path = path }

    deinit { if fd >= 0 { close(fd) } }

    /// Encodes a position: `<inode>:<offset>`.
    static func position(inode: UInt64, offset: UInt64) -> [UInt8] { Array("\(inode):\(offset)".utf8) }

    static func parse(_ position: [UInt8]?) -> (inode: UInt64, offset: UInt64)? {
        guard let position else { return nil }
        let parts = String(decoding: position, as: UTF8.self).split(separator: ":")
        guard parts.count == 2, let inode = UInt64(parts[0]), let offset = UInt64(parts[1]) else { return nil }
        return (inode, offset)
    }

    func connect(position: [UInt8]?) throws {
        disconnect()
        let saved = Self.parse(position)
        let opened = open(path, O_RDONLY | O_CLOEXEC)
        guard opened >= 0 else { throw FileError("cannot open", path) }
        var info = stat()
        guard fstat(opened, &info) == 0 else {
            let error = FileError("cannot stat", path)
            close(opened)
            throw error
        }
        fd = opened
        inode = UInt64(info.st_ino)
        // The same file as the saved position: resume after it, unless it was truncated below it since.
        if let saved, saved.inode == inode, saved.offset <= UInt64(info.st_size) {
            offset = saved.offset
        } else {
            offset = 0
        }
        guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { throw FileError("cannot seek", path) }
        pending = []
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard fd >= 0 else { throw FileError("not open", path, errno: EBADF) }
        var events = takeLines(max)
        let deadline =
            ConnectorClock.nowMs() + UInt64(wait.components.seconds * 1000)
            + UInt64(wait.components.attoseconds / 1_000_000_000_000_000)
        while events.isEmpty {
            let n = try readMore()
            if n > 0 {
                events = takeLines(max)
                continue
            }
            // At the end: a new file at the path (rotation), or this one cut short (truncation)?
            if try switchedFile() { continue }
            if ConnectorClock.nowMs() >= deadline { break }
            usleep(20_000)
        }
        return SourceBatch(events: events, position: Self.position(inode: inode, offset: offset))
    }

    func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        pending = []
    }

    /// Reads what is there past the pending bytes; the number of bytes read.
    private func readMore() throws -> Int {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("cannot read", path)
            }
            pending.append(contentsOf: chunk[0..<n])
            return n
        }
    }

    /// At the end of the open file: opens the file now at the path when it is another one, or starts
    /// again from 0 when the open one was truncated; `true` when it did either.
    private func switchedFile() throws -> Bool {
        var info = stat()
        if stat(path, &info) == 0, UInt64(info.st_ino) != inode {
            // Rotated: everything of the old file was read (read returned 0). A partial last line stays
            // unpublished, as a writer that rotates mid-line lost it anyway.
            try connect(position: nil)
            return true
        }
        var own = stat()
        if fstat(fd, &own) == 0, UInt64(own.st_size) < offset + UInt64(pending.count) {
            offset = 0
            pending = []
            guard lseek(fd, 0, SEEK_SET) >= 0 else { throw FileError("cannot seek", path) }
            return true
        }
        return false
    }

    /// Cuts up to `max` complete lines off the pending bytes, advancing `offset` past each.
    private func takeLines(_ max: Int) -> [CloudEvent] {
        var events: [CloudEvent] = []
        var start = 0
        while events.count < max, let end = pending[start...].firstIndex(of: 0x0A) {
            let line = Array(pending[start..<end])
            let lineOffset = offset
            offset += UInt64(end - start + 1)
            start = end + 1
            if line.isEmpty || line == [0x0D] { continue }
            events.append(Self.event(line, inode: inode, offset: lineOffset, path: path))
        }
        pending.removeFirst(start)
        return events
    }

    /// The event a line holds: itself when it is a CloudEvent in JSON, else the line as JSON data with the
    /// id `<inode>-<offset>` (stable, so a line read twice is the same event).
    static func event(_ line: [UInt8], inode: UInt64, offset: UInt64, path: String) -> CloudEvent {
        if let event = try? CloudEventJSON.decode(line), event.invalidReason == nil { return event }
        return CloudEvent(
            id: "\(inode)-\(offset)", source: "file://\(path)", type: "io.plexus.file.line",
            datacontenttype: "application/json", data: line)
    }
}
