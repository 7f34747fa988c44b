import PlexusABI

/// Lays out a manifest's validated configuration as the `px_plugin_config` a plugin's `on_create` reads.
enum PluginConfigBuffer {
    static func with<R>(
        manifest: Manifest, nodeID: String, dataDirectory: String, _ body: (UnsafePointer<px_plugin_config>) -> R
    ) -> R {
        var texts: [String] = [manifest.name, nodeID, dataDirectory, manifest.config.json]
        var keys: [String] = []
        if case .object(let pairs) = manifest.config {
            for (key, value) in pairs {
                keys.append(key)
                texts.append(key)
                texts.append(value.text)
            }
        }
        // One NUL-separated arena keeps every borrowed pointer alive for the call.
        var arena: [UInt8] = []
        var spans: [(Int, Int)] = []
        for text in texts {
            spans.append((arena.count, text.utf8.count))
            arena.append(contentsOf: text.utf8)
            arena.append(0)
        }
        return arena.withUnsafeBufferPointer { bytes in
            func str(_ i: Int) -> px_str {
                let base = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
                return px_str(ptr: base + spans[i].0, len: spans[i].1)
            }
            let entries = (0..<keys.count).map { px_kv(key: str(4 + 2 * $0), value: str(5 + 2 * $0)) }
            return entries.withUnsafeBufferPointer { entryBuffer in
                var config = px_plugin_config(
                    struct_size: UInt32(MemoryLayout<px_plugin_config>.size), reserved: 0, instance_name: str(0),
                    node_id: str(1), data_dir: str(2), json: str(3), entries: entryBuffer.baseAddress,
                    entry_count: entryBuffer.count)
                return withUnsafePointer(to: &config) { body($0) }
            }
        }
    }
}
