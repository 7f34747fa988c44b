import Glibc

// A libFuzzer target for the manifest parser (Sources/PlexusKernel/ManifestParser.swift, over Yams): a
// manifest is a file an operator or a plugin author writes, so anything can be in it. Each input is parsed as
// the text of a manifest. The parser must never crash; it must refuse with a `KernelError` of its own codes
// that names the file; the same text must give the same result twice; and a manifest it accepts must hold
// what the kernel relies on (a valid name, at least one kind, sorted; bounded ABI numbers and deadlines,
// unique operations, a lowercase sha256, a configuration that its own schema accepts unchanged).

let path = "fuzz/manifest.yaml"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let first = parse(text)
    let second = parse(text)
    switch (first, second) {
    case (.success(let manifest), .success(let again)):
        check(manifest)
        guard summary(manifest) == summary(again) else { finding("the same text parses as two manifests") }
    case (.failure(let error), .failure(let again)):
        guard error == again else { finding("the same text fails with \(error), then \(again)") }
        guard [.manifestInvalid, .configInvalid].contains(error.code), error.subject == path, !error.message.isEmpty
        else { finding("a refusal with code \(error.code), subject \(error.subject): \(error)") }
    default:
        finding("the same text parses once and fails once")
    }
    return 0
}

func parse(_ text: String) -> Result<Manifest, KernelError> {
    do {
        return .success(try ManifestParser.parse(text, path: path))
    } catch let error as KernelError {
        return .failure(error)
    } catch {
        finding("not a KernelError: \(error)")
    }
}

/// What the kernel relies on in a parsed manifest.
func check(_ manifest: Manifest) {
    guard ManifestParser.isValidName(manifest.name) else { finding("accepted the name '\(manifest.name)'") }
    guard !manifest.kinds.isEmpty, manifest.kinds == manifest.kinds.sorted() else {
        finding("kinds \(manifest.kinds)")
    }
    guard !manifest.library.isEmpty else { finding("an empty library") }
    guard (0...0xFFFF).contains(manifest.abiMajor), (0...0xFFFF).contains(manifest.abiMinor) else {
        finding("ABI \(manifest.abiMajor).\(manifest.abiMinor)")
    }
    if let sha = manifest.sha256, sha.count != 64 || !sha.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
        finding("sha256 '\(sha)'")
    }
    let bounds = Duration.milliseconds(1)...Duration.milliseconds(3_600_000)
    guard bounds.contains(manifest.startTimeout), bounds.contains(manifest.stopTimeout) else {
        finding("deadlines \(manifest.startTimeout), \(manifest.stopTimeout)")
    }
    guard Set(manifest.operations.map(\.name)).count == manifest.operations.count else {
        finding("duplicate operations \(manifest.operations.map(\.name))")
    }
    for operation in manifest.operations where !operation.symbol.hasPrefix("px_op_") {
        finding("operation symbol '\(operation.symbol)'")
    }
    do {
        let again = try manifest.configSchema.validate(manifest.config, subject: path, field: "config.values")
        // Compared as JSON text: a NaN (YAML's .nan) is not equal to itself.
        guard again.json == manifest.config.json else {
            finding("the validated config \(manifest.config) validates again as \(again)")
        }
    } catch {
        finding("the validated config \(manifest.config) fails its own schema: \(error)")
    }
}

/// The fields of a manifest as text, to compare two parses.
func summary(_ m: Manifest) -> String {
    "\(m.name) \(m.version) \(m.kinds) \(m.library) \(m.sha256 ?? "") \(m.abiMajor).\(m.abiMinor) \(m.toolchain ?? "") "
        + "\(m.requires.map { "\($0.capability) \($0.range) \($0.optional)" }) "
        + "\(m.provides.map { "\($0.capability) \($0.version)" }) \(m.config.json) \(m.isolation) "
        + "\(m.operations.map { "\($0.name) \($0.symbol) \($0.signature)" }) \(m.startTimeout) \(m.stopTimeout) "
        + "\(m.enabled) \(m.description)"
}

/// The seeds are the shipped manifests (plugin-manifests/, passed by scripts/fuzz) and this one, which uses
/// every section.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let full = """
        manifest: 1
        name: full-plugin
        version: 1.2.3-rc.1+build.5
        description: "every section"
        kind: [storage, protocol]
        library: libFull.so
        sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        abi: {major: 1, minor: 1}
        toolchain: swift-6.3
        requires:
          - {capability: storage, version: ">=1.0.0 <2.0.0", optional: true}
          - capability: registry
            version: ^1.2.0
        provides:
          - {capability: protocol.http, version: 1.0.0}
        config:
          schema:
            port: {type: integer, description: the port, default: 8080, minimum: 0, maximum: 65535}
            mode: {type: string, description: a mode, enum: [a, b], required: true}
            ratio: {type: number, description: a ratio, default: 0.5}
            tags: {type: list, description: tags, default: [x, y]}
            extra: {type: object, description: more, default: {k: v}}
            on: {type: boolean, description: a flag, default: true}
          values: {mode: a, port: 9090}
        isolation: in-process
        operations:
          - {name: compact, symbol: px_op_compact, signature: "int32 (instance, uint64)", description: compacts}
        deadlines: {start_ms: 5000, stop_ms: 100}
        enabled: false

        """
    writeSeeds([("full.yaml", Array(full.utf8))])
    return 0
}
