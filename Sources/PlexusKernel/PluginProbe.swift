import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Loads a plugin image in a child process before the node maps it (`plugins.probe`), as GStreamer's plugin
/// scanner does: a constructor or entry point that crashes, or never returns, takes down the child, and the
/// node refuses the plugin with the reason instead of dying with it.
///
/// The child is the node's own executable run as `plexus plugin-host --probe LIBRARY --name NAME`: it checks the
/// ELF image, maps it, calls the entry under the start deadline and copies the descriptor, exactly as the
/// node would, then exits. It creates no instance: hooks that crash later are what process isolation is for.
public enum PluginProbe {
    /// What the child does: loads `path` and calls its entry. Prints `ok NAME VERSION` and returns 0, or
    /// prints the refusal on stderr and returns 2.
    public static func runChild(path: String, name: String, deadline: Duration) -> Int32 {
        do {
            let (_, descriptor) = try PluginLoader.open(
                path, subject: path, library: path, entryName: name, deadline: deadline)
            let version = descriptor.version.map { String(cString: $0) } ?? "?"
            print("ok \(descriptor.name.map { String(cString: $0) } ?? "?") \(version)")
            return 0
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            return 2
        }
    }

    /// Runs the probe of `path` in a child process of `executable`.
    /// - Throws: `KernelError(.loadFailed)` when the child is killed by a signal, overruns `deadline`, or
    ///   refuses the image; the message says which, with what the child printed.
    static func check(path: String, name: String, subject: String, executable: String, deadline: Duration) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let milliseconds = deadline.components.seconds * 1000 + deadline.components.attoseconds / 1_000_000_000_000_000
        process.arguments = ["plugin-host", "--probe", path, "--name", name, "--deadline-ms", "\(milliseconds)"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        // Swift's backtracer would catch the crash and exit normally; the signal itself must end the child.
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        do {
            try process.run()
        } catch {
            throw KernelError(
                .loadFailed, subject: subject, field: "library",
                "cannot start the probe process \(executable): \(error.localizedDescription)")
        }
        // The child's own deadline covers the entry; this one covers constructors and everything else.
        let limit = ContinuousClock.now + deadline + .seconds(5)
        while process.isRunning, ContinuousClock.now < limit { usleep(5_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw KernelError(
                .loadFailed, subject: subject, field: "library",
                "the probe process loading \(path) did not finish within \(deadline + .seconds(5)) (a constructor or the entry hangs); not loaded into the node"
            )
        }
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        switch process.terminationReason {
        case .uncaughtSignal:
            let signal = process.terminationStatus
            let signalName = strsignal(signal).map { String(cString: $0) } ?? "signal \(signal)"
            throw KernelError(
                .loadFailed, subject: subject, field: "library",
                "the probe process died with signal \(signal) (\(signalName)) while loading \(path) or calling its entry; not loaded into the node"
            )
        case .exit where process.terminationStatus != 0:
            throw KernelError(
                .loadFailed, subject: subject, field: "library",
                "the probe process refused \(path): \(said.isEmpty ? "exit status \(process.terminationStatus)" : said)"
            )
        default:
            return
        }
    }
}
