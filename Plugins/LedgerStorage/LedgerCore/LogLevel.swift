/// How much a line LedgerCore logs matters; the plugin maps it to the node's log levels.
public enum LogLevel: Sendable, Equatable {
    case info, warning, error
}
