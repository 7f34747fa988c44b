import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a source connector keeps its position in the external system (an offset, a stream id, an inode
/// and byte offset): written after the events before it were published and acknowledged by the node, read
/// when the connector starts again, so that a restart neither skips events nor repeats more than the last
/// batch.
///
/// - Important: `load` and `save` block; call them from the connector's own thread, never a kernel thread.
public protocol PositionStore: Sendable {
    /// Where the position lives, for logs and errors.
    var location: String { get }

    /// The saved position; `nil` when none was saved yet.
    /// - Throws: `PluginError` when the store cannot be read.
    func load() throws -> [UInt8]?

    /// Saves `position` durably (it survives a crash once this returns).
    /// - Throws: `PluginError` when it could not be saved; the previous position then stays.
    func save(_ position: [UInt8]) throws
}

/// A position in a file of the instance's data directory: written to a temporary file, fsynced, renamed
/// over the old one and the directory fsynced, so a crash leaves the old position or the new one, never a
/// torn one. Used when the node offers no metadata store.
public struct FilePositionStore: PositionStore {
    public let path: String
    public var location: String { "file \(path)" }

    /// A store at `<directory>/<name>`; creates `directory` when missing.
    /// - Throws: `PluginError` (`PX_ERR_IO`) when the directory cannot be created.
    public init(directory: String, name: String = "position") throws {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw PluginError(PX_ERR_IO, "cannot create \(directory): \(Self.errorText())")
        }
        path = directory + "/" + name
    }

    public func load() throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw PluginError(PX_ERR_IO, "cannot open \(path): \(Self.errorText())")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw PluginError(PX_ERR_IO, "cannot read \(path): \(Self.errorText())")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }

    public func save(_ position: [UInt8]) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PluginError(PX_ERR_IO, "cannot create \(temporary): \(Self.errorText())") }
        var written = 0
        while written < position.count {
            let n = position.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let text = Self.errorText()
                close(fd)
                throw PluginError(PX_ERR_IO, "cannot write \(temporary): \(text)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let text = Self.errorText()
            close(fd)
            throw PluginError(PX_ERR_IO, "cannot fsync \(temporary): \(text)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            throw PluginError(PX_ERR_IO, "cannot rename \(temporary) to \(path): \(Self.errorText())")
        }
        try Self.syncDirectory(of: path)
    }

    /// Fsyncs the directory holding `path`, so that a rename or a new file in it survives a crash.
    /// - Throws: `PluginError` (`PX_ERR_IO`).
    public static func syncDirectory(of path: String) throws {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw PluginError(PX_ERR_IO, "cannot open \(directory): \(errorText())") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw PluginError(PX_ERR_IO, "cannot fsync \(directory): \(errorText())") }
    }

    static func errorText() -> String { String(cString: strerror(errno)) }
}

/// A position held in memory only: for tests, and for external systems that keep the position themselves.
public final class MemoryPositionStore: PositionStore {
    private let value: Mutex<[UInt8]?>

    public init(_ value: [UInt8]? = nil) { self.value = Mutex(value) }
    public var location: String { "memory" }
    public func load() throws -> [UInt8]? { value.withLock { $0 } }
    public func save(_ position: [UInt8]) throws { value.withLock { $0 = position } }
}

/// Chooses where a source connector keeps its position.
public enum PositionStores {
    /// The instance's position store: the registry's metadata store (ABI 1.4, key
    /// `connectors/<instance name>/position`) when the kernel offers it and the node's registry has one,
    /// else a file `position` in the instance's data directory. Which one is decided at the first `load`.
    /// - Throws: `PluginError` when the data directory cannot be created.
    public static func open(host: Host, config: PluginConfig) throws -> any PositionStore {
        let file = try FilePositionStore(directory: config.dataDirectory)
        let metadata =
            host.hasMetadataStore ? MetadataPositionStore(host: host, instanceName: config.instanceName) : nil
        return AutomaticPositionStore(metadata: metadata, file: file)
    }
}
