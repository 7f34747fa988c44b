import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Appends each event as one line of CloudEvents JSON to a file. With `fsync: always` a batch is fsynced
/// before it is acknowledged; with `interval`, it is acknowledged once written (in the page cache) and the
/// file is fsynced at most every `fsyncIntervalMs`, so a machine crash may lose that long of acknowledged
/// events (a process crash loses none).
final class FileSink: SinkDriver, @unchecked Sendable {
    // Safe: the file sink runs one worker (`concurrency` 1, checked at creation), the only caller.
    let path: String
    let syncAlways: Bool
    let intervalMs: UInt64
    private var fd: Int32 = -1
    private var lastSync: UInt64 = 0
    private var unsynced = false

    init(path: String, syncAlways: Bool, intervalMs: UInt64) {
        self.path = path
        self.syncAlways = syncAlways
        self.intervalMs = intervalMs
    }

    deinit { if fd >= 0 { close(fd) } }

    func connect(worker: Int) throws {
        disconnect(worker: worker)
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard opened >= 0 else { throw FileError("cannot open", path) }
        fd = opened
        // A new file's directory entry must survive a crash too.
        try FilePositionStore.syncDirectory(of: path)
        lastSync = ConnectorClock.nowMs()
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        guard fd >= 0 else { throw FileError("not open", path, errno: EBADF) }
        var bytes: [UInt8] = []
        for delivery in batch {
            bytes.append(contentsOf: CloudEventJSON.encode(delivery.event).utf8)
            bytes.append(0x0A)
        }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("cannot append to", path)
            }
            written += n
        }
        unsynced = true
        let now = ConnectorClock.nowMs()
        if syncAlways || now - lastSync >= intervalMs {
            guard fsync(fd) == 0 else { throw FileError("cannot fsync", path) }
            lastSync = now
            unsynced = false
        }
    }

    func disconnect(worker: Int) {
        if fd >= 0 {
            if unsynced { _ = fsync(fd) }
            close(fd)
        }
        fd = -1
        unsynced = false
    }
}
