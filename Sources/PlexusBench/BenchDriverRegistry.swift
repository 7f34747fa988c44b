/// The drivers `plexus bench --driver NAME` can run, by name.
///
/// ``BenchDrivers/registry`` holds the built-in ones; another module can copy it and ``register(_:_:)`` its own.
public struct BenchDriverRegistry: Sendable {
    /// Builds a driver from its options.
    public typealias Factory = @Sendable (DriverOptions) throws -> any BenchDriver

    private var factories: [String: Factory] = [:]

    public init() {}

    /// Adds (or replaces) the driver called `name`.
    public mutating func register(_ name: String, _ factory: @escaping Factory) {
        factories[name] = factory
    }

    /// The registered names, sorted.
    public var names: [String] { factories.keys.sorted() }

    /// Builds the driver called `name`.
    ///
    /// - Throws: ``BenchError`` with code `unknownDriver` listing the known names, or what the factory throws.
    public func make(name: String, options: DriverOptions) throws -> any BenchDriver {
        guard let factory = factories[name] else {
            throw BenchError(
                .unknownDriver, subject: "--driver \(name)", "unknown driver; known: \(names.joined(separator: ", "))")
        }
        return try factory(options)
    }
}

/// The built-in drivers.
public enum BenchDrivers {
    /// Every driver this module ships. The Plexus driver is added here, one line, beside the baselines.
    public static let registry: BenchDriverRegistry = {
        var registry = BenchDriverRegistry()
        registry.register("nats") { NATSCoreDriver(options: $0) }
        registry.register("jetstream") { JetStreamDriver(options: $0) }
        registry.register("redis") { RedisStreamsDriver(options: $0) }
        registry.register("plexus") { PlexusDriver(options: $0) }
        return registry
    }()

    /// Builds the built-in driver called `name`.
    ///
    /// - Throws: ``BenchError`` with code `unknownDriver` when there is none.
    public static func make(name: String, options: DriverOptions) throws -> any BenchDriver {
        try registry.make(name: name, options: options)
    }
}
