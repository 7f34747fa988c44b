import CFFI
import Foundation
import PlexusCore

/// Calls a manifest operation through libffi: resolves the `px_op_*` symbol, checks the caller's text
/// arguments against the declared C signature, and formats the return value.
struct OperationInvoker: @unchecked Sendable {
    // Safe: `function` points into a mapped image that is never unmapped; the invoker is otherwise immutable.
    enum Value: Sendable {
        case signed(Int64)
        case unsigned(UInt64)
        case float(Float)
        case double(Double)
        case string(String)
    }

    let declaration: OperationDeclaration
    let function: UnsafeMutableRawPointer
    let plugin: String

    init(declaration: OperationDeclaration, handle: UnsafeMutableRawPointer, plugin: String) throws {
        self.declaration = declaration
        self.plugin = plugin
        dlerror()
        guard let symbol = dlsym(handle, declaration.symbol) else {
            let reason = dlerror().map { String(cString: $0) } ?? ""
            throw KernelError(
                .operationInvalid, subject: plugin, field: "operations.\(declaration.name)",
                "the library does not export \(declaration.symbol) (\(reason)); operation symbols must be exported and named px_op_*"
            )
        }
        self.function = symbol
    }

    /// Converts text arguments to the declared types.
    /// - Throws: `KernelError` naming the argument, its position and the expected type.
    func convert(_ arguments: [String]) throws -> [Value] {
        let expected = declaration.signature.callerParameters
        guard arguments.count == expected.count else {
            throw KernelError(
                .operationInvalid, subject: plugin, field: "operations.\(declaration.name)",
                "takes \(expected.count) argument(s) (\(expected.map(\.rawValue).joined(separator: ", "))), \(arguments.count) given; signature \(declaration.signature)"
            )
        }
        return try zip(arguments, expected).enumerated().map { index, pair in
            let (text, type) = pair
            func bad() -> KernelError {
                KernelError(
                    .operationInvalid, subject: plugin, field: "operations.\(declaration.name)",
                    "argument \(index + 1) '\(text)' is not a valid \(type.rawValue)\(Self.range(type))")
            }
            switch type {
            case .bool:
                switch text.lowercased() {
                case "true", "1", "yes": return .unsigned(1)
                case "false", "0", "no": return .unsigned(0)
                default: throw bad()
                }
            case .int8, .int16, .int32, .int64:
                guard let v = Int64(text), Self.fits(v, type) else { throw bad() }
                return .signed(v)
            case .uint8, .uint16, .uint32, .uint64:
                guard let v = UInt64(text), Self.fits(v, type) else { throw bad() }
                return .unsigned(v)
            case .float:
                guard let v = Float(text), v.isFinite else { throw bad() }
                return .float(v)
            case .double:
                guard let v = Double(text), v.isFinite else { throw bad() }
                return .double(v)
            case .string:
                guard !text.utf8.contains(0) else { throw bad() }
                return .string(text)
            case .void, .instance, .text, .status:
                throw bad()
            }
        }
    }

    private static func range(_ type: OperationSignature.CType) -> String {
        switch type {
        case .int8: return " (-128...127)"
        case .int16: return " (-32768...32767)"
        case .int32: return " (-2147483648...2147483647)"
        case .uint8: return " (0...255)"
        case .uint16: return " (0...65535)"
        case .uint32: return " (0...4294967295)"
        case .bool: return " (true or false)"
        default: return ""
        }
    }

    private static func fits(_ v: Int64, _ type: OperationSignature.CType) -> Bool {
        switch type {
        case .int8: return Int8(exactly: v) != nil
        case .int16: return Int16(exactly: v) != nil
        case .int32: return Int32(exactly: v) != nil
        default: return true
        }
    }

    private static func fits(_ v: UInt64, _ type: OperationSignature.CType) -> Bool {
        switch type {
        case .uint8: return UInt8(exactly: v) != nil
        case .uint16: return UInt16(exactly: v) != nil
        case .uint32: return UInt32(exactly: v) != nil
        default: return true
        }
    }

    static func ffiType(_ type: OperationSignature.CType) -> UnsafeMutablePointer<ffi_type> {
        switch type {
        case .void: return px_ffi_type_void()
        case .bool, .uint8: return px_ffi_type_uint8()
        case .int8: return px_ffi_type_sint8()
        case .int16: return px_ffi_type_sint16()
        case .uint16: return px_ffi_type_uint16()
        case .int32, .status: return px_ffi_type_sint32()
        case .uint32: return px_ffi_type_uint32()
        case .int64: return px_ffi_type_sint64()
        case .uint64: return px_ffi_type_uint64()
        case .float: return px_ffi_type_float()
        case .double: return px_ffi_type_double()
        case .string, .instance, .text: return px_ffi_type_pointer()
        }
    }

    /// Makes the call. Arguments must come from `convert`.
    func call(instance: UnsafeMutableRawPointer?, arguments: [Value]) throws -> String {
        let signature = declaration.signature
        let count = signature.parameters.count
        let argTypes = UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>.allocate(capacity: max(count, 1))
        // Every argument gets an 8-byte slot (large enough for any supported type), written with its C type.
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 8, alignment: 8)
        let argPointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(count, 1))
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer {
            argTypes.deallocate()
            slots.deallocate()
            argPointers.deallocate()
            strings.forEach { free($0) }
        }
        var next = arguments.makeIterator()
        for (i, type) in signature.parameters.enumerated() {
            argTypes[i] = Self.ffiType(type)
            let slot = slots + i * 8
            argPointers[i] = slot
            if type == .instance {
                slot.storeBytes(of: instance, as: UnsafeMutableRawPointer?.self)
                continue
            }
            switch (type, next.next()) {
            case (.int8, .signed(let v)?): slot.storeBytes(of: Int8(truncatingIfNeeded: v), as: Int8.self)
            case (.int16, .signed(let v)?): slot.storeBytes(of: Int16(truncatingIfNeeded: v), as: Int16.self)
            case (.int32, .signed(let v)?): slot.storeBytes(of: Int32(truncatingIfNeeded: v), as: Int32.self)
            case (.int64, .signed(let v)?): slot.storeBytes(of: v, as: Int64.self)
            case (.bool, .unsigned(let v)?), (.uint8, .unsigned(let v)?):
                slot.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
            case (.uint16, .unsigned(let v)?): slot.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
            case (.uint32, .unsigned(let v)?): slot.storeBytes(of: UInt32(truncatingIfNeeded: v), as: UInt32.self)
            case (.uint64, .unsigned(let v)?): slot.storeBytes(of: v, as: UInt64.self)
            case (.float, .float(let v)?): slot.storeBytes(of: v, as: Float.self)
            case (.double, .double(let v)?): slot.storeBytes(of: v, as: Double.self)
            case (.string, .string(let s)?):
                let copy = strdup(s)!
                strings.append(copy)
                slot.storeBytes(of: copy, as: UnsafeMutablePointer<CChar>.self)
            default:
                slot.storeBytes(of: UInt64(0), as: UInt64.self)
            }
        }
        var cif = ffi_cif()
        let prepared = ffi_prep_cif(
            &cif, px_ffi_default_abi(), UInt32(count), Self.ffiType(signature.returnType), argTypes)
        guard prepared == FFI_OK else {
            throw KernelError(
                .operationInvalid, subject: plugin, field: "operations.\(declaration.name)",
                "libffi could not prepare a call with signature \(signature) (ffi status \(prepared.rawValue))")
        }
        // Integer returns narrower than a register come back widened to ffi_arg (8 bytes here).
        var result = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &result) { raw in
            ffi_call(&cif, unsafeBitCast(function, to: (@convention(c) () -> Void).self), raw.baseAddress, argPointers)
        }
        if signature.returnType == .status {
            // PX_OK (0) and PX_DEGRADED (16) are answers; every other px_status is a failure.
            let status = Int32(truncatingIfNeeded: withUnsafeBytes(of: &result) { $0.load(as: Int64.self) })
            guard status == 0 || status == 16 else {
                throw KernelError(
                    .operationFailed, subject: plugin, field: "operations.\(declaration.name)",
                    "returned \(StatusText.name(status))")
            }
            return StatusText.name(status)
        }
        return withUnsafeBytes(of: &result) { raw -> String in
            switch signature.returnType {
            case .void: return ""
            case .bool: return raw.load(as: UInt64.self) & 0xFF != 0 ? "true" : "false"
            case .int8: return String(Int8(truncatingIfNeeded: raw.load(as: Int64.self)))
            case .int16: return String(Int16(truncatingIfNeeded: raw.load(as: Int64.self)))
            case .int32: return String(Int32(truncatingIfNeeded: raw.load(as: Int64.self)))
            case .int64: return String(raw.load(as: Int64.self))
            case .uint8: return String(UInt8(truncatingIfNeeded: raw.load(as: UInt64.self)))
            case .uint16: return String(UInt16(truncatingIfNeeded: raw.load(as: UInt64.self)))
            case .uint32: return String(UInt32(truncatingIfNeeded: raw.load(as: UInt64.self)))
            case .uint64: return String(raw.load(as: UInt64.self))
            case .float: return String(raw.load(as: Float.self))
            case .double: return String(raw.load(as: Double.self))
            case .string, .instance, .status: return ""
            case .text:
                // The plugin's malloc'd string, ours to free.
                guard let text = raw.load(as: UnsafeMutablePointer<CChar>?.self) else { return "" }
                defer { free(text) }
                return String(cString: text)
            }
        }
    }
}
