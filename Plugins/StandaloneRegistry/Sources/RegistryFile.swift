import Foundation
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// The registry's file, `<data_dir>/registry.json`: every live instance, written whole and atomically
/// (temporary file, fsync, rename, fsync of the directory), so that a crash leaves the old or the new file.
struct RegistryFile: Sendable {
    let directory: String
    var path: String { directory + "/registry.json" }
    var temporaryPath: String { directory + "/registry.json.tmp" }

    /// The file's shape. `format` changes only with an incompatible layout.
    struct Contents: Codable {
        var format: Int
        var instances: [Record]
    }

    struct Record: Codable {
        var service: String
        var instanceID: String
        var address: String
        var metadata: [String: String]
        var ttlMs: UInt64
        /// Unix time in milliseconds; absent without a TTL.
        var expiresAtMs: UInt64?
    }

    static let format = 1

    /// The instances in the file; none when there is no file yet.
    /// - Throws: `PX_ERR_IO` when it cannot be read, `PX_ERR_CORRUPTION` when it does not decode.
    func load() throws -> [StandaloneRegistry.Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw PluginError(PX_ERR_IO, "standalone-registry: cannot read \(path): \(error.localizedDescription)")
        }
        let contents: Contents
        do {
            contents = try JSONDecoder().decode(Contents.self, from: data)
        } catch {
            throw PluginError(
                PX_ERR_CORRUPTION,
                "standalone-registry: \(path) is not a registry file: \(error); move it away to start empty")
        }
        guard contents.format == Self.format else {
            throw PluginError(
                PX_ERR_CORRUPTION,
                "standalone-registry: \(path) has format \(contents.format); this version reads format \(Self.format)")
        }
        return contents.instances.map { record in
            StandaloneRegistry.Entry(
                instance: ServiceInstance(
                    service: record.service, instanceID: record.instanceID, address: record.address,
                    metadata: record.metadata, ttlMilliseconds: record.ttlMs),
                expiresAt: record.expiresAtMs)
        }
    }

    /// Replaces the file with `entries`.
    /// - Throws: `PX_ERR_IO` naming the step that failed.
    func save(_ entries: [StandaloneRegistry.Entry]) throws {
        let records = entries.map { entry in
            Record(
                service: entry.instance.service, instanceID: entry.instance.instanceID,
                address: entry.instance.address, metadata: entry.instance.metadata,
                ttlMs: entry.instance.ttlMilliseconds, expiresAtMs: entry.expiresAt)
        }.sorted { ($0.service, $0.instanceID) < ($1.service, $1.instanceID) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(Contents(format: Self.format, instances: records))

        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.failure("open \(temporaryPath)") }
        var failed: PluginError?
        data.withUnsafeBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    failed = Self.failure("write \(temporaryPath)")
                    return
                }
                done += n
            }
        }
        if failed == nil && fsync(fd) != 0 { failed = Self.failure("fsync \(temporaryPath)") }
        close(fd)
        if let failed { throw failed }
        guard rename(temporaryPath, path) == 0 else { throw Self.failure("rename \(temporaryPath) to \(path)") }
        // The rename itself is durable only once the directory is.
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw Self.failure("open \(directory)") }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw Self.failure("fsync \(directory)") }
    }

    private static func failure(_ step: String) -> PluginError {
        PluginError(PX_ERR_IO, "standalone-registry: \(step): \(String(cString: strerror(errno)))")
    }
}
