import Glibc
import PlexusCore

// What every fuzz target but `frames` (which predates it and keeps its own) shares: the trap that is a
// finding, and the seed files a target writes at start-up.

/// Stops the process with what went wrong: the fuzzer records the input that got here.
func finding(_ message: String) -> Never {
    fatalError("fuzz finding: \(message)")
}

/// With `PLEXUS_FUZZ_SEEDS` set to a directory, writes `seeds` there, one file each. libFuzzer calls a target's
/// `LLVMFuzzerInitialize` before it reads its corpus directories, so the same run starts from them.
func writeSeeds(_ seeds: [(name: String, bytes: [UInt8])]) {
    guard let directory = getenv("PLEXUS_FUZZ_SEEDS").map({ String(cString: $0) }) else { return }
    mkdir(directory, 0o755)
    for (name, bytes) in seeds {
        let path = "\(directory)/\(name)"
        guard let file = fopen(path, "wb") else { fatalError("cannot create seed file \(path): errno \(errno)") }
        defer { fclose(file) }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == bytes.count else { fatalError("cannot write seed file \(path): errno \(errno)") }
    }
}
