/// A workload file or value that cannot be run: which file, which field, what it held and what is expected.
public struct WorkloadError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The workload file, or `workload` when it did not come from a file.
    public var source: String
    /// The field at fault (`messageSize`), or `nil` when the document as a whole is wrong.
    public var field: String?
    /// What is wrong and what is expected.
    public var message: String

    public init(source: String = "workload", field: String?, _ message: String) {
        self.source = source
        self.field = field
        self.message = message
    }

    public var description: String {
        if let field { return "\(source): \(field): \(message)" }
        return "\(source): \(message)"
    }
}
