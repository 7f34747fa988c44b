import Foundation
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// The push subscriptions on disk: `subscriptions.json` in the plugin's data directory, replaced atomically
/// (written to a temporary file, fsync'd, renamed over the old one, and the directory fsync'd), so that a
/// crash leaves either the old set or the new one, never a torn file.
struct SubscriptionStore: Sendable {
    let directory: String

    var path: String { directory + "/subscriptions.json" }

    private struct File: Codable {
        var version: Int
        var subscriptions: [SubscriptionSpec]
    }

    /// The stored subscriptions; none when the file does not exist.
    /// - Throws: `PluginError` naming the file when it cannot be read or decoded.
    func load() throws -> [SubscriptionSpec] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let file = try JSONDecoder().decode(File.self, from: data)
            guard file.version == 1 else {
                throw PluginError(PX_ERR_CORRUPTION, "http-protocol: \(path) has version \(file.version); this reads 1")
            }
            return file.subscriptions
        } catch let error as PluginError {
            throw error
        } catch {
            throw PluginError(PX_ERR_CORRUPTION, "http-protocol: cannot read \(path): \(error)")
        }
    }

    /// Replaces the stored set with `subscriptions`.
    /// - Throws: `PluginError` naming the file and the failing step.
    func save(_ subscriptions: [SubscriptionSpec]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(File(version: 1, subscriptions: subscriptions))
        } catch {
            throw PluginError(PX_ERR_INTERNAL, "http-protocol: cannot encode the subscriptions: \(error)")
        }
        let temporary = path + ".tmp"
        func fail(_ step: String) -> PluginError {
            PluginError(PX_ERR_IO, "http-protocol: \(step) \(temporary): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create") }
        var written = 0
        let ok = data.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return true
        }
        guard ok, fsync(fd) == 0 else {
            let error = fail("cannot write")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = fail("cannot rename")
            unlink(temporary)
            throw error
        }
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }
}
