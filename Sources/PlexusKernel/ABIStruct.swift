import PlexusABI

/// The growth rule of plexus.h, applied to what plugins hand the kernel: a struct or table of any size
/// from the first published one up to the size this kernel knows is accepted; the kernel reads only the
/// fields that size covers and treats the rest as zero. Sizes per published version come from
/// `ABISizes` (generated from the committed layouts).
enum ABIStruct {
    /// The smallest size `name` had in any published minor version: the smallest the kernel accepts.
    /// A struct no published version has (a programming error) accepts only the current size.
    static func minimumSize(_ name: String, known: Int) -> Int {
        minimumSizes[name] ?? known
    }

    /// Every struct's smallest published size, computed once.
    private static let minimumSizes: [String: Int] = {
        var sizes: [String: Int] = [:]
        for table in ABISizes.byMinor.values {
            for (name, size) in table { sizes[name] = min(sizes[name] ?? size, size) }
        }
        return sizes
    }()

    /// The size `name` had in ABI 1.`minor`, or `nil` when that version did not have it.
    static func size(_ name: String, minor: UInt16) -> Int? { ABISizes.byMinor[minor]?[name] }

    /// Why a struct of `size` bytes is refused, or `nil` when it is accepted.
    /// - Parameters:
    ///   - name: the C type name (`px_event`), to find its published sizes.
    ///   - known: this kernel's size of the type.
    ///   - what: how the error names the struct ("event 3", "the subscription spec").
    static func sizeProblem(
        _ size: UInt32, of name: String, known: Int, what: @autoclosure () -> String
    ) -> String? {
        // The common case: a plugin built against this kernel's own header.
        if Int(size) == known { return nil }
        let what = what()
        if Int(size) > known {
            return "\(what) has struct_size \(size), larger than the \(known) bytes this kernel knows "
                + "(ABI \(PX_ABI_VERSION_MAJOR).\(PX_ABI_VERSION_MINOR)); the plugin was built against a newer ABI"
        }
        let minimum = minimumSize(name, known: known)
        if Int(size) < minimum {
            return "\(what) has struct_size \(size); the smallest published \(name) is \(minimum) bytes"
        }
        return nil
    }

    /// A full-size copy of a struct of `size` bytes (clamped to the kernel's size), the rest zero.
    static func copy<T>(_ raw: UnsafeRawPointer, size: Int, as type: T.Type = T.self, zero: T) -> T {
        var copy = zero
        let count = min(max(size, 0), MemoryLayout<T>.size)
        withUnsafeMutableBytes(of: &copy) { target in
            target.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: count))
        }
        return copy
    }

    /// A full-size, zero-filled copy of a plugin's static table, on the heap for the life of the process (the
    /// plugin's image is never unmapped either). Its `struct_size` stays the plugin's, so checks see it.
    static func tableCopy<T>(_ raw: UnsafePointer<T>?, zero: T) -> UnsafePointer<T>? {
        guard let raw else { return nil }
        let size = Int(UnsafeRawPointer(raw).load(as: UInt32.self))
        let table = UnsafeMutablePointer<T>.allocate(capacity: 1)
        table.initialize(to: copy(UnsafeRawPointer(raw), size: size, zero: zero))
        return UnsafePointer(table)
    }
}
