/// Why bytes are not a protobuf message of the expected shape.
public struct ProtobufError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was wrong, and at which byte of the message.
    public var description: String

    init(_ description: String) { self.description = description }
}

/// A message the benchmark sends, written in protobuf's wire format.
public protocol ProtobufEncodable: Sendable {
    /// Appends the message's fields to `writer`.
    func encode(into writer: inout ProtobufWriter)
}

extension ProtobufEncodable {
    /// The message's encoding.
    public var protobufBytes: [UInt8] {
        var writer = ProtobufWriter()
        encode(into: &writer)
        return writer.bytes
    }
}

/// A message the benchmark reads, from protobuf's wire format.
public protocol ProtobufDecodable: Sendable {
    /// Reads a message; unknown fields are skipped.
    ///
    /// - Throws: ``ProtobufError`` when the bytes are not a well-formed protobuf message.
    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError)
}

extension ProtobufDecodable {
    /// Reads a message from an array.
    ///
    /// - Throws: ``ProtobufError`` when the bytes are not a well-formed protobuf message.
    public init(decoding bytes: [UInt8]) throws(ProtobufError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(ProtobufError) -> Self in try Self(decoding: buffer) }
        }
        self = try result.get()
    }
}

/// Writes fields in protobuf's wire format (proto3: fields at their default value are left out by the caller).
public struct ProtobufWriter: Sendable {
    /// The encoding so far.
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// A base-128 varint, least significant group first.
    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A field's key: its number and wire type (0 varint, 2 length-delimited).
    mutating func key(_ field: UInt32, wireType: UInt8) { varint(UInt64(field) << 3 | UInt64(wireType)) }

    /// A `bytes` or `string` field (wire type 2): key, length, contents. Empty ones are left out (proto3).
    public mutating func bytes(_ field: UInt32, _ value: [UInt8]) {
        guard !value.isEmpty else { return }
        key(field, wireType: 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// A `uint64`/`int64`/`bool` field (wire type 0). Zero is left out (proto3).
    public mutating func uint64(_ field: UInt32, _ value: UInt64) {
        guard value != 0 else { return }
        key(field, wireType: 0)
        varint(value)
    }
}

/// Reads the fields of one protobuf message, in order.
public struct ProtobufReader {
    /// A field's value by wire type; length-delimited values point into the message being read.
    public enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case lengthDelimited(UnsafeRawBufferPointer)
        case fixed32(UInt32)
    }

    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    /// - Important: `bytes` must outlive the reader and every value it returns.
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The next field, or `nil` at the end of the message.
    ///
    /// - Throws: ``ProtobufError`` for a truncated field, an overlong varint, a field number 0 or a group
    ///   (wire types 3 and 4, which proto3 never writes).
    public mutating func next() throws(ProtobufError) -> (number: UInt32, value: Value)? {
        guard position < bytes.count else { return nil }
        let start = position
        let key = try varint()
        let number = key >> 3
        guard number > 0, number <= UInt64(UInt32.max >> 3) else {
            throw ProtobufError("field number \(number) at byte \(start)")
        }
        switch key & 7 {
        case 0:
            return (UInt32(number), .varint(try varint()))
        case 1:
            return (UInt32(number), .fixed64(try fixed(8)))
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count - position) else {
                throw ProtobufError(
                    "field \(number) at byte \(start) declares \(length) bytes; \(bytes.count - position) remain")
            }
            let body = UnsafeRawBufferPointer(rebasing: bytes[position..<position + Int(length)])
            position += Int(length)
            return (UInt32(number), .lengthDelimited(body))
        case 5:
            return (UInt32(number), .fixed32(UInt32(truncatingIfNeeded: try fixed(4))))
        case let wireType:
            throw ProtobufError("field \(number) at byte \(start) has wire type \(wireType), which proto3 never writes")
        }
    }

    private mutating func varint() throws(ProtobufError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            guard shift < 64, shift < 63 || byte <= 1 else {
                throw ProtobufError("varint at byte \(start) is too long")
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
        throw ProtobufError("varint at byte \(start) is truncated")
    }

    private mutating func fixed(_ width: Int) throws(ProtobufError) -> UInt64 {
        guard bytes.count - position >= width else {
            throw ProtobufError("fixed\(width * 8) at byte \(position) is truncated")
        }
        var result: UInt64 = 0
        for i in 0..<width { result |= UInt64(bytes[position + i]) << (8 * UInt64(i)) }
        position += width
        return result
    }
}
