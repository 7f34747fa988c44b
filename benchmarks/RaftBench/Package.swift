// swift-tools-version: 6.1
import PackageDescription

// `make bench-raft`: the replicated raft-log against a three-member etcd 3.4, the single member against the
// disk's group-commit ceiling, and leader failover. A package of its own so that gRPC (the etcd client) never
// enters the main package's build: CI builds the main package on every run, this one only for the benchmark.
let package = Package(
    name: "RaftBench",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "plexus-bench-raft", targets: ["PlexusBenchRaft"])
    ],
    dependencies: [
        .package(name: "Plexus", path: "../.."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", exact: "2.9.2"),
    ],
    targets: [
        // Everything the executable does, as a library so that the tests reach it: the etcd client (hand-written
        // protobuf for the few messages used), the Plexus and etcd clusters, the closed loop, the reports.
        .target(
            name: "RaftBenchKit",
            dependencies: [
                .product(name: "PlexusClient", package: "Plexus"),
                .product(name: "PlexusBench", package: "Plexus"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "PlexusBenchRaft",
            dependencies: [
                "RaftBenchKit", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "RaftBenchKitTests",
            dependencies: [
                "RaftBenchKit", .product(name: "PlexusBench", package: "Plexus"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
