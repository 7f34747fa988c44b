// swift-tools-version: 6.1
import PackageDescription

/// Exports only the plugin entry symbol and manifest operations (`px_op_*`) from a plugin image.
let pluginVersionScript = "\(Context.packageDirectory)/Plugins/plugin.version-script"

/// One Swift plugin: a target under `Plugins/<name>/Sources` and a `.dynamic` library product `lib<name>.so`.
/// (Plugins written in C are built by the system C compiler, not by SwiftPM: `scripts/build-c-plugins`.)
func plugin(_ name: String, dependencies: [Target.Dependency] = []) -> (product: Product, target: Target) {
    let product = Product.library(name: name, type: .dynamic, targets: [name])
    let linker: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "--version-script=\(pluginVersionScript)"])]
    return (
        product,
        .target(
            name: name,
            dependencies: ["PlexusPluginSDK"] + dependencies,
            path: "Plugins/\(name)/Sources",
            linkerSettings: linker
        )
    )
}

let plugins = [
    plugin("ConsoleSink"),
    plugin("MemoryStorage"),
    plugin("RaftLogStorage", dependencies: ["RaftCore"]),
    plugin("StandaloneRegistry"),
    plugin("EtcdRegistry", dependencies: ["EtcdClient"]),
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
        .library(name: "PlexusPluginSDK", targets: ["PlexusPluginSDK"]),
        .library(name: "PlexusConformance", targets: ["PlexusConformance"]),
        .library(name: "PlexusClient", targets: ["PlexusClient"]),
        // The benchmark harness's pieces, for benchmarks/RaftBench (a package of its own).
        .library(name: "PlexusBench", targets: ["PlexusBench"]),
        .executable(name: "plexus-bench-abi", targets: ["PlexusBenchABI"]),
        .executable(name: "plexus-bench-core", targets: ["PlexusBenchCore"]),
        .executable(name: "plexus-bench-raft-local", targets: ["PlexusBenchRaftLocal"]),
        .executable(name: "plexus-bench-grpc", targets: ["PlexusBenchGRPC"]),
        .executable(name: "plexus-bench-registry", targets: ["PlexusBenchRegistry"]),
    ] + plugins.map(\.product),
    dependencies: [
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
        .target(name: "PlexusABI", path: "Sources/PlexusABI"),
        .target(name: "PlexusCore", dependencies: ["PlexusABI"]),
        .systemLibrary(name: "CFFI", path: "Sources/CFFI"),
        .target(
            name: "PlexusKernel",
            dependencies: [
                "PlexusABI",
                "PlexusCore",
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
        .target(name: "PlexusPluginSDK", dependencies: ["PlexusABI", "PlexusCore"]),
        // The messages generated from protos/ (scripts/gen-protos) and the conversion of the CloudEvent
        // messages to and from the SDK's events: shared by the HTTP and gRPC plugins, never linked by the kernel.
        .target(
            name: "PlexusProtos",
            dependencies: ["PlexusCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
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
        .target(name: "RaftCore", path: "Plugins/RaftLogStorage/RaftCore"),
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
                "PlexusWire", "PlexusCore", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "PlexusNIOServer",
            dependencies: [
                "PlexusPluginSDK", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "PlexusWire",
            dependencies: ["PlexusABI", "PlexusCore", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "PlexusBench",
            dependencies: [
                "PlexusClient", "PlexusCore",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "PlexusConformance",
            dependencies: [
                "PlexusKernel", "PlexusABI", "PlexusCore", .product(name: "Logging", package: "swift-log"),
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
            dependencies: ["PlexusKernel", "PlexusABI", .product(name: "Logging", package: "swift-log")],
            path: "benchmarks/ABIBench"
        ),
        .executableTarget(
            name: "PlexusBenchCore",
            dependencies: [
                "PlexusKernel", "PlexusABI", "PlexusCore", .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/CoreBench"
        ),
        .executableTarget(
            name: "PlexusBenchRaftLocal",
            dependencies: [
                "PlexusKernel", "PlexusABI", "PlexusBench", "PlexusCore",
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
            name: "PlexusBenchRegistry",
            dependencies: [
                "PlexusKernel", "PlexusABI", "PlexusBench", .product(name: "Logging", package: "swift-log"),
            ],
            path: "benchmarks/RegistryBench"
        ),
        .testTarget(
            name: "PlexusKernelTests",
            dependencies: [
                "PlexusKernel", "PlexusABI", "PlexusCore", "PlexusConformance", "EtcdClient", "PlexusBench",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(name: "PlexusCoreTests", dependencies: ["PlexusCore"]),
        // The CLI's own pieces (its table renderer), tested through `@testable import plexus`.
        .testTarget(name: "PlexusCLITests", dependencies: ["plexus"]),
        .testTarget(name: "PlexusPluginSDKTests", dependencies: ["PlexusPluginSDK"]),
        .testTarget(
            name: "PlexusProtosTests",
            dependencies: ["PlexusProtos", "PlexusCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore"]),
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
                "PlexusWire", "PlexusABI", "PlexusCore",
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
