#if canImport(Glibc)
    import Glibc
#endif

/// An I/O failure: the operation, the path and `strerror(errno)`.
public struct IOFailure: Error, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var code: Int32
    public var description: String { "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))" }

    public init(_ operation: String, _ path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }
}

/// An open file: a descriptor closed when the last reference goes, so a reader holding a segment can finish
/// its `pread` after the segment was deleted.
public final class OpenFile: Sendable {
    public let path: String
    public let fd: Int32

    /// Opens `path` read-write, creating it when `create` (and failing if it exists then).
    public init(path: String, create: Bool = false) throws {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw IOFailure(create ? "create" : "open", path) }
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    public var size: Int {
        get throws {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw IOFailure("fstat", path) }
            return Int(info.st_size)
        }
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOFailure("write", path)
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// The most buffers one `pwritev` takes (Linux's `IOV_MAX`, which Glibc's module does not export).
    public static let maxVectors = 1024

    /// Writes the buffers `vectors` points at, one after the other, at `offset` (a gather write: nothing is
    /// copied into a buffer of ours first). `vectors` is consumed.
    public func write(vectors: inout [iovec], at offset: Int) throws {
        var first = 0
        var position = offset
        while first < vectors.count {
            let count = Int32(min(vectors.count - first, Self.maxVectors))
            var n = vectors.withUnsafeBufferPointer { pwritev(fd, $0.baseAddress! + first, count, off_t(position)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IOFailure("write", path)
            }
            position += n
            // Skip what was written whole; trim the buffer written in part.
            while first < vectors.count && n >= vectors[first].iov_len {
                n -= vectors[first].iov_len
                first += 1
            }
            if n > 0 {
                vectors[first].iov_base = vectors[first].iov_base.map { $0 + n }
                vectors[first].iov_len -= n
            }
        }
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`, which holds at least `count` bytes.
    public func read(count: Int, at offset: Int, into buffer: UnsafeMutableRawPointer) throws {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOFailure("read", path)
            }
            if n == 0 { throw IOFailure("read", path, code: EIO) }
            done += n
        }
    }

    /// Reads exactly `count` bytes at `offset`.
    public func read(count: Int, at offset: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw IOFailure("read", path)
                }
                if n == 0 { throw IOFailure("read", path, code: EIO) }
                done += n
            }
            initialized = count
        }
    }

    public func syncData() throws {
        guard fdatasync(fd) == 0 else { throw IOFailure("fdatasync", path) }
    }

    public func truncate(to size: Int) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw IOFailure("truncate", path) }
    }

    /// Maps the whole file read-only for `body` (an empty buffer for an empty file).
    public func withMapping<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let length = try size
        guard length > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        guard let base = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw IOFailure("mmap", path)
        }
        defer { munmap(base, length) }
        return try body(UnsafeRawBufferPointer(start: base, count: length))
    }
}

/// Directory and path helpers over the C library.
public enum Files {
    /// `fsync` of a directory, so that names created, renamed or removed in it survive a crash.
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw IOFailure("open directory", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw IOFailure("fsync directory", path) }
    }

    public static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw IOFailure("mkdir", path) }
    }

    public static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw IOFailure("unlink", path) }
    }

    public static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw IOFailure("rename to \(to)", from) }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Removes `path` and, when it is a directory, everything under it (symbolic links are not followed).
    public static func removeTree(_ path: String) throws {
        if unlink(path) == 0 || errno == ENOENT { return }
        guard errno == EISDIR || errno == EPERM else { throw IOFailure("unlink", path) }
        for name in try list(path) { try removeTree(path + "/" + name) }
        guard rmdir(path) == 0 || errno == ENOENT else { throw IOFailure("rmdir", path) }
    }

    /// The names in a directory, without `.` and `..`.
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw IOFailure("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes `bytes` to `path` atomically: a temporary file, `fdatasync` (when `sync`), rename over `path`,
    /// then `fsync` of the directory (when `sync`). A crash leaves the old file or the new one, never a mix.
    public static func replace(_ path: String, with bytes: [UInt8], directory: String, sync: Bool) throws {
        let temporary = path + ".tmp"
        try remove(temporary)
        let file = try OpenFile(path: temporary, create: true)
        try file.write(bytes, at: 0)
        if sync { try file.syncData() }
        try rename(temporary, path)
        if sync { try syncDirectory(directory) }
    }

    /// Unix time in nanoseconds.
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}
