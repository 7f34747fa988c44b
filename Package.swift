// swift-tools-version: 6.1
import PackageDescription

/// Exports only the plugin entry symbol and manifest operations (`px_op_*`) from a plugin image (the SDK's script).
let pluginVersionScript = "\(Context.packageDirectory)/sdk/plexus-sdk/plugin.version-script"

/// A product of the plugin SDK (sdk/plexus-sdk, a package of its own that outside plugin authors use too).
func sdk(_ name: String) -> Target.Dependency { .product(name: name, package: "plexus-sdk") }

/// One Swift plugin: a target under `Plugins/<name>/Sources` and a `.dynamic` library product `lib<name>.so`.
/// (Plugins written in C are built by the system C compiler, not by SwiftPM: `scripts/build-c-plugins`.)
func plugin(_ name: String, dependencies: [Target.Dependency] = []) -> (product: Product, target: Target) {
    let product = Product.library(name: name, type: .dynamic, targets: [name])
    let linker: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "--version-script=\(pluginVersionScript)"])]
    return (
        product,
        .target(
            name: name,
            dependencies: [sdk("PlexusPluginSDK")] + dependencies,
            path: "Plugins/\(name)/Sources",
            linkerSettings: linker
        )
    )
}

let plugins = [
    plugin("ConsoleSink"),
    plugin("MemoryStorage"),
    plugin("RaftLogStorage", dependencies: ["RaftCore", "StorageIO"]),
    plugin("LedgerStorage", dependencies: ["LedgerCore", "StorageIO"]),
    plugin("StandaloneRegistry", dependencies: ["RegistrySupport"]),
    // Connectors (issue 16): each tested against the real server its tests start (Tests/PlexusConnectorTests).
    plugin("RedisStreamsConnector", dependencies: ["CHiredis"]),
    plugin("FileConnector"),
    plugin("PostgresConnector", dependencies: ["CLibpq"]),
    plugin("MQTTConnector", dependencies: ["CMosquitto"]),
    plugin("NATSConnector", dependencies: ["CNats"]),
    plugin("S3Connector", dependencies: ["CCurl", .product(name: "Crypto", package: "swift-crypto")]),
    plugin(
        "KnativeSource",
        dependencies: [
            "PlexusNIOServer", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    plugin("EtcdRegistry", dependencies: ["EtcdClient", "RegistrySupport"]),
    plugin(
        "TCPProtocol",
        dependencies: [
            "PlexusWire", "PlexusNIOServer", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
    plugin(
        "HTTPProtocol",
        dependencies: [
            "PlexusProtos", "PlexusNIOServer",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    plugin(
        "GRPCProtocol",
        dependencies: [
            "PlexusGRPCServices", .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
]

let package = Package(
    name: "Plexus",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "plexus", targets: ["plexus"]),
        .library(name: "PlexusConformance", targets: ["PlexusConformance"]),
        .library(name: "PlexusClient", targets: ["PlexusClient"]),
        // The benchmark harness's pieces, for benchmarks/RaftBench (a package of its own).
        .library(name: "PlexusBench", targets: ["PlexusBench"]),
        .executable(name: "plexus-bench-abi", targets: ["PlexusBenchABI"]),
        .executable(name: "plexus-bench-core", targets: ["PlexusBenchCore"]),
        .executable(name: "plexus-bench-raft-local", targets: ["PlexusBenchRaftLocal"]),
        .executable(name: "plexus-bench-grpc", targets: ["PlexusBenchGRPC"]),
        .executable(name: "plexus-bench-deploy", targets: ["PlexusBenchDeploy"]),
        .executable(name: "plexus-bench-ledger", targets: ["PlexusBenchLedger"]),
        .executable(name: "plexus-bench-registry", targets: ["PlexusBenchRegistry"]),
        .executable(name: "plexus-bench-connectors", targets: ["PlexusBenchConnectors"]),
    ] + plugins.map(\.product),
    dependencies: [
        .package(path: "sdk/plexus-sdk"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"4.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.0"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CFFI", path: "Sources/CFFI"),
        // Debian's client libraries for the connectors (scripts/interop-deps installs them).
        .systemLibrary(name: "CHiredis", path: "Plugins/RedisStreamsConnector/CHiredis", pkgConfig: "hiredis"),
        .systemLibrary(name: "CLibpq", path: "Plugins/PostgresConnector/CLibpq", pkgConfig: "libpq"),
        .systemLibrary(name: "CMosquitto", path: "Plugins/MQTTConnector/CMosquitto", pkgConfig: "libmosquitto"),
        .systemLibrary(name: "CNats", path: "Plugins/NATSConnector/CNats", pkgConfig: "libnats"),
        .systemLibrary(name: "CCurl", path: "Plugins/S3Connector/CCurl", pkgConfig: "libcurl"),
        .target(
            name: "PlexusKernel",
            dependencies: [
                sdk("PlexusABI"),
                sdk("PlexusCore"),
                "CFFI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The messages generated from protos/ (scripts/gen-protos) and the conversion of the CloudEvent
        // messages to and from the SDK's events: shared by the HTTP and gRPC plugins, never linked by the kernel.
        .target(
            name: "PlexusProtos",
            dependencies: [sdk("PlexusCore"), .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // The gRPC services generated from protos/: servers for the gRPC plugin, clients for its benchmark.
        .target(
            name: "PlexusGRPCServices",
            dependencies: [
                "PlexusProtos", .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),
        // The consensus of raft-log (messages, their codec, the Raft state machine, the node-to-node transport),
        // a library of its own so that it is unit-tested without a kernel.
        .target(
            name: "RaftCore", dependencies: ["StorageIO", .product(name: "Crypto", package: "swift-crypto")],
            path: "Plugins/RaftLogStorage/RaftCore"),
        // The file helpers and CRC-32C the durable storages share (raft-log's segments, ledger-storage's journal
        // and entry logs): no dependency beyond the C library.
        .target(name: "StorageIO", dependencies: ["CStorageIO"], path: "Plugins/Shared/StorageIO"),
        // CRC-32C with the CPU's instruction (SSE4.2, the AArch64 CRC extension), chosen at run time.
        .target(name: "CStorageIO", path: "Plugins/Shared/CStorageIO"),
        // What the registry plugins share: a service watch whose handler runs in order on a queue of its own.
        .target(
            name: "RegistrySupport", dependencies: [sdk("PlexusPluginSDK")], path: "Plugins/Shared/RegistrySupport"),
        // ledger-storage's bookie (journal with group commit, entry logs, index, checkpoints, recovery, fencing)
        // and its ledger client (quorum writes, reads, recovery), a library of its own so that it is unit-tested
        // without a kernel.
        .target(
            name: "LedgerCore",
            dependencies: [
                "StorageIO", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Plugins/LedgerStorage/LedgerCore"),
        // The etcd v3 client of the etcd registry (its generated messages and clients, failover, leases,
        // resumable watches), a library of its own so that it is tested against a real etcd without a kernel.
        .target(
            name: "EtcdClient",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Plugins/EtcdRegistry/EtcdClient"
        ),
        .target(
            name: "PlexusClient",
            dependencies: [
                "PlexusWire", sdk("PlexusCore"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "PlexusNIOServer",
            dependencies: [
                sdk("PlexusPluginSDK"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "PlexusWire",
            dependencies: [sdk("PlexusABI"), sdk("PlexusCore"), .product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "PlexusBench",
            dependencies: [
                "PlexusClient", sdk("PlexusCore"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "PlexusConformance",
            dependencies: [
                "PlexusKernel", sdk("PlexusABI"), sdk("PlexusCore"), "PlexusClient", "PlexusGRPCServices",
                .product(name: "Logging", package: "swift-log"), .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),
        .executableTarget(
            name: "plexus",
            dependencies: [
                "PlexusKernel",
                "PlexusClient",
                "PlexusConformance",
                "PlexusBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "PlexusBenchABI",
            dependencies: ["PlexusKernel", sdk("PlexusABI"), .product(name: "Logging", package: "swift-log")],
            path: "benchmarks/ABIBench"
        ),
        .executableTarget(
            name: "PlexusBenchCore",
            dependencies: [
                "PlexusKernel", sdk("PlexusABI"), sdk("PlexusCore"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/CoreBench"
        ),
        .executableTarget(
            name: "PlexusBenchRaftLocal",
            dependencies: [
                "PlexusKernel", sdk("PlexusABI"), "PlexusBench", sdk("PlexusCore"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/RaftLocalBench"
        ),
        .executableTarget(
            name: "PlexusBenchGRPC",
            dependencies: [
                "PlexusBench", "PlexusGRPCServices", .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            path: "benchmarks/GRPCBench"
        ),
        .executableTarget(
            name: "PlexusBenchDeploy",
            dependencies: [
                "PlexusClient", sdk("PlexusCore"), .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "benchmarks/DeployBench"
        ),
        .executableTarget(
            name: "PlexusBenchLedger", dependencies: ["LedgerCore", "StorageIO"], path: "benchmarks/LedgerBench"),
        .executableTarget(
            name: "PlexusBenchRegistry",
            dependencies: [
                "PlexusKernel", sdk("PlexusABI"), "PlexusBench", .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/RegistryBench"
        ),
        // make bench-connectors: each shipped connector beside its external system's own client (issue 16).
        .executableTarget(
            name: "PlexusBenchConnectors",
            dependencies: [
                "PlexusKernel", "PlexusBench", sdk("PlexusCore"), "CHiredis", "CLibpq", "CMosquitto", "CNats",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/ConnectorBench"
        ),
        .testTarget(
            name: "PlexusKernelTests",
            dependencies: [
                "PlexusKernel", sdk("PlexusABI"), sdk("PlexusCore"), "PlexusConformance", "EtcdClient", "PlexusBench",
                "LedgerCore",  // the ledger metadata store run against the real registries
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(name: "PlexusCoreTests", dependencies: [sdk("PlexusCore")]),
        // The CLI's own pieces (its table renderer), tested through `@testable import plexus`.
        .testTarget(name: "PlexusCLITests", dependencies: ["plexus"]),
        .testTarget(name: "PlexusPluginSDKTests", dependencies: [sdk("PlexusPluginSDK")]),
        .testTarget(
            name: "PlexusProtosTests",
            dependencies: [
                "PlexusProtos", sdk("PlexusCore"), .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore"]),
        // The connectors against real Redis and PostgreSQL servers and real files, through an in-process node.
        .testTarget(
            name: "PlexusConnectorTests",
            dependencies: [
                "PlexusKernel", sdk("PlexusCore"), sdk("PlexusPluginSDK"), "PlexusBench", "CHiredis", "CLibpq",
                "CMosquitto", "CNats",
                .product(name: "Logging", package: "swift-log"),
                "PlexusConformance",  // the connector conformance kit run against each shipped connector
            ]
        ),
        .testTarget(
            name: "LedgerCoreTests",
            dependencies: [
                "LedgerCore", "StorageIO", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .testTarget(
            name: "PlexusBenchTests",
            dependencies: [
                "PlexusBench",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PlexusWireTests",
            dependencies: [
                "PlexusWire", sdk("PlexusABI"), sdk("PlexusCore"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PlexusEndToEndTests",
            dependencies: [
                "PlexusBench", "PlexusKernel", "PlexusClient", "PlexusWire", "PlexusGRPCServices",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ] + plugins.map(\.target)
)
