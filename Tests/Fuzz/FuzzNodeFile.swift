import Glibc

// A libFuzzer target for the node-file parser (`NodeConfig.parse`, Sources/PlexusKernel/NodeConfig.swift, over
// Yams). Each input is parsed as the text of `plexus.yaml`. The parser must never crash, must refuse with a
// `KernelError` coded `node-config-invalid` that names the file, and a node file it accepts must hold what the
// node relies on (a valid node id, a port in range, every path resolved against the file's directory, each
// topic bound once) and come back equal when written out as YAML and parsed again.

let path = "/fuzz/plexus.yaml"
let base = "/fuzz"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let config: NodeConfig
    do {
        config = try NodeConfig.parse(text, path: path, baseDirectory: base)
    } catch let error as KernelError {
        guard error.code == .nodeConfigInvalid, error.subject == path, !error.message.isEmpty else {
            finding("a refusal with code \(error.code), subject \(error.subject): \(error)")
        }
        return 0
    } catch {
        finding("not a KernelError: \(error)")
    }
    check(config)
    let written = yaml(config)
    do {
        let again = try NodeConfig.parse(written, path: path, baseDirectory: base)
        guard fields(again) == fields(config) else {
            finding("\(fields(config)) written as\n\(written)\nparses as \(fields(again))")
        }
    } catch {
        finding("\(fields(config)) written as\n\(written)\nis refused: \(error)")
    }
    return 0
}

/// What the node relies on in a parsed node file.
func check(_ config: NodeConfig) {
    guard ManifestParser.isValidName(config.nodeID) else { finding("accepted the node id '\(config.nodeID)'") }
    guard (0...65535).contains(config.adminPort) else { finding("accepted the port \(config.adminPort)") }
    let paths =
        [config.dataDirectory] + config.manifestDirectories + config.pluginSearchPath
        + (config.pluginCacheDirectory.map { [$0] } ?? [])
    for path in paths where !path.hasPrefix("/") { finding("the path '\(path)' is not resolved") }
    let topics = config.topics.bindings.map(\.topic)
    guard Set(topics).count == topics.count else { finding("a topic bound twice in \(topics)") }
}

/// A node file's fields as text, to compare two parses.
func fields(_ c: NodeConfig) -> String {
    "\(c.nodeID) \(c.dataDirectory) \(c.adminHost) \(c.adminPort) \(c.manifestDirectories) \(c.pluginSearchPath) "
        + "\(c.pluginCacheDirectory ?? "-") \(c.requireSHA256) \(c.topics)"
}

/// The node file that says what `config` holds, every section written out.
func yaml(_ c: NodeConfig) -> String {
    var out = "node:\n  id: \(quote(c.nodeID))\n  dataDirectory: \(quote(c.dataDirectory))\n"
    out += "admin:\n  host: \(quote(c.adminHost))\n  port: \(c.adminPort)\n"
    out += "plugins:\n  manifestDirectories: [\(c.manifestDirectories.map(quote).joined(separator: ", "))]\n"
    out += "  searchPath: [\(c.pluginSearchPath.map(quote).joined(separator: ", "))]\n"
    if let cache = c.pluginCacheDirectory { out += "  cacheDirectory: \(quote(cache))\n" }
    out += "  requireSha256: \(c.requireSHA256)\n"
    guard c.topics.isDeclared else { return out }
    let t = c.topics
    out += "topics:\n  autoCreate: \(t.autoCreate)\n"
    if let storage = t.defaultStorage { out += "  defaultStorage: \(quote(storage))\n" }
    out += "  defaultRetentionBytes: \(t.defaultRetentionBytes)\n  defaultRetentionMs: \(t.defaultRetentionMs)\n"
    out += "  bindings:\n"
    for b in t.bindings {
        out += "    - {topic: \(quote(b.topic)), storage: \(quote(b.storage)), "
        out += "retentionBytes: \(b.retentionBytes), retentionMs: \(b.retentionMs)}\n"
    }
    if t.bindings.isEmpty { out += "    []\n" }
    return out
}

/// A YAML double-quoted scalar: printable ASCII as itself, everything else escaped.
func quote(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar.value {
        case 0x22: out += "\\\""
        case 0x5C: out += "\\\\"
        case 0x20...0x7E: out.unicodeScalars.append(scalar)
        case 0...0xFFFF:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default:
            let hex = String(scalar.value, radix: 16)
            out += "\\U" + String(repeating: "0", count: 8 - hex.count) + hex
        }
    }
    return out + "\""
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let full = """
        node:
          id: node-2
          dataDirectory: data
        admin: {host: 0.0.0.0, port: 10107}
        plugins:
          manifestDirectories: [plugin-manifests, /srv/plexus/manifests]
          searchPath: [lib]
          cacheDirectory: cache
          requireSha256: true
        topics:
          defaultStorage: raft-log
          autoCreate: false
          defaultRetentionBytes: 1048576
          defaultRetentionMs: 60000
          bindings:
            - {topic: orders, storage: memory-storage, retentionBytes: 10, retentionMs: 20}
            - topic: audit
              storage: raft-log

        """
    writeSeeds([("full.yaml", Array(full.utf8)), ("minimal.yaml", Array("node: {id: n}\n".utf8))])
    return 0
}
