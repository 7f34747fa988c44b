import Testing

@testable import PlexusKernel

@Suite("Operation signatures")
struct OperationSignatureTests {
    struct Valid: Sendable, CustomTestStringConvertible {
        var text: String
        var returnType: OperationSignature.CType
        var parameters: [OperationSignature.CType]
        var callerParameters: [OperationSignature.CType]
        var canonical: String
        var testDescription: String { "'\(text)'" }
    }

    @Test(
        "parses the manifest notation",
        arguments: [
            Valid(
                text: "int32 (instance, uint64)", returnType: .int32, parameters: [.instance, .uint64],
                callerParameters: [.uint64], canonical: "int32 (instance, uint64)"),
            Valid(
                text: "int32 compact(pointer, uint64)", returnType: .int32, parameters: [.instance, .uint64],
                callerParameters: [.uint64], canonical: "int32 (instance, uint64)"),
            Valid(
                text: "status (instance, uint64)", returnType: .status, parameters: [.instance, .uint64],
                callerParameters: [.uint64], canonical: "status (instance, uint64)"),
            Valid(text: "void ()", returnType: .void, parameters: [], callerParameters: [], canonical: "void ()"),
            Valid(text: "void (void)", returnType: .void, parameters: [], callerParameters: [], canonical: "void ()"),
            Valid(
                text: "uint64 (instance)", returnType: .uint64, parameters: [.instance], callerParameters: [],
                canonical: "uint64 (instance)"),
            Valid(
                text: "double  scale ( instance ,double,  uint32 )", returnType: .double,
                parameters: [.instance, .double, .uint32], callerParameters: [.double, .uint32],
                canonical: "double (instance, double, uint32)"),
            Valid(
                text: "bool (string, int8, int16, uint8, uint16, float, int64)", returnType: .bool,
                parameters: [.string, .int8, .int16, .uint8, .uint16, .float, .int64],
                callerParameters: [.string, .int8, .int16, .uint8, .uint16, .float, .int64],
                canonical: "bool (string, int8, int16, uint8, uint16, float, int64)"),
            Valid(
                text: "text (instance, string)", returnType: .text, parameters: [.instance, .string],
                callerParameters: [.string], canonical: "text (instance, string)"),
        ])
    func parses(_ c: Valid) throws {
        let signature = try OperationSignature(parsing: c.text)
        #expect(signature.returnType == c.returnType)
        #expect(signature.parameters == c.parameters)
        #expect(signature.callerParameters == c.callerParameters)
        #expect(signature.description == c.canonical)
        #expect(try OperationSignature(parsing: signature.description) == signature, "the canonical form parses back")
    }

    struct Invalid: Sendable, CustomTestStringConvertible {
        var text: String
        var phrase: String
        var testDescription: String { "'\(text)'" }
    }

    @Test(
        "refuses what it cannot call, saying why",
        arguments: [
            Invalid(text: "int32 (instance, uint128)", phrase: "unknown type 'uint128'"),
            Invalid(text: "int (instance)", phrase: "unknown type 'int'"),
            Invalid(text: "int32 (instance, char*)", phrase: "unknown type 'char*'"),
            Invalid(text: "int32 (instance, void)", phrase: "void is not a parameter type"),
            Invalid(text: "int32 (void, void)", phrase: "void is not a parameter type"),
            Invalid(text: "string (instance)", phrase: "may not return string"),
            Invalid(text: "int32 (instance, text)", phrase: "text is a return type only"),
            Invalid(text: "int32 (instance, status)", phrase: "status is a return type only"),
            Invalid(text: "instance (instance)", phrase: "may not return instance"),
            Invalid(text: "pointer ()", phrase: "may not return instance"),
            Invalid(text: "int32", phrase: "is not a signature"),
            Invalid(text: "int32 (instance", phrase: "is not a signature"),
            Invalid(text: "(instance)", phrase: "expected a return type"),
            Invalid(text: "static int32 go(instance)", phrase: "expected a return type"),
            Invalid(
                text: "int32 (\(Array(repeating: "uint8", count: 17).joined(separator: ", ")))",
                phrase: "at most 16 parameters"),
        ])
    func refuses(_ c: Invalid) throws {
        let error = try #require(throws: OperationSignature.ParseError.self) { try OperationSignature(parsing: c.text) }
        #expect(error.message.contains(c.phrase), "'\(error.message)' should contain '\(c.phrase)'")
    }

    @Test(
        "an empty parameter (a stray comma) is malformed, not silently dropped",
        arguments: [
            "int32 (instance,)", "int32 (, uint64)", "int32 (instance,, uint64)",
        ])
    func refusesEmptyParameter(_ text: String) {
        #expect(throws: OperationSignature.ParseError.self, "'\(text)' must not parse") {
            try OperationSignature(parsing: text)
        }
    }

    @Test("sixteen parameters are allowed")
    func sixteenParameters() throws {
        let text = "void (\(Array(repeating: "uint8", count: 16).joined(separator: ", ")))"
        #expect(try OperationSignature(parsing: text).parameters.count == 16)
    }
}
