/// The Swift toolchain this kernel was built with, as `swift-MAJOR.MINOR.PATCH`.
///
/// Swift's ABI is not stable on Linux across compiler versions, so a Swift plugin must be built by the same
/// toolchain as the kernel. The compiler offers its version only through `#if compiler(...)`, hence the ladder;
/// a compiler newer than the ladder's top reports the top with a `+`, which matches no manifest until the
/// ladder is extended (a refusal, never a silent mismatch).
public enum Toolchain {
    public static let current: String = {
        #if compiler(>=6.4)
            return "swift-6.4+"
        #elseif compiler(>=6.3.2)
            return "swift-6.3.2+"
        #elseif compiler(>=6.3.1)
            return "swift-6.3.1"
        #elseif compiler(>=6.3)
            return "swift-6.3.0"
        #elseif compiler(>=6.2.3)
            return "swift-6.2.3"
        #elseif compiler(>=6.2.2)
            return "swift-6.2.2"
        #elseif compiler(>=6.2.1)
            return "swift-6.2.1"
        #elseif compiler(>=6.2)
            return "swift-6.2.0"
        #else
            return "swift-older-than-6.2"
        #endif
    }()

    /// `6.3` → `6.3.0`, so that `swift-6.3` and `swift-6.3.0` name the same toolchain.
    public static func normalized(_ version: String) -> String {
        version.split(separator: ".").count == 2 ? version + ".0" : version
    }

    /// Whether two toolchain names denote the same toolchain.
    public static func same(_ a: String, _ b: String) -> Bool {
        guard a.hasPrefix("swift-"), b.hasPrefix("swift-") else { return a == b }
        return normalized(String(a.dropFirst(6))) == normalized(String(b.dropFirst(6)))
    }
}
