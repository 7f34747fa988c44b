// plexus-bench-grpc: `plexus bench`'s harness (Sources/PlexusBench: the same runner, workloads, stamps and
// histograms) with the gRPC drivers beside the TCP one, so that `make bench-grpc` compares the two protocols
// like for like. It is a binary of its own so that the `plexus` CLI does not link gRPC.
//
//   plexus-bench-grpc WORKLOAD --driver plexus|grpc-stream|grpc-unary --server HOST:PORT
//       [--duration S] [--warmup S] [--json FILE] [--label NAME]
import Foundation
import PlexusBench

var registry = BenchDriverRegistry()
registry.register("plexus") { try BenchDrivers.make(name: "plexus", options: $0) }
registry.register("grpc-stream") { GRPCDriver(options: $0, streaming: true) }
registry.register("grpc-unary") { GRPCDriver(options: $0, streaming: false) }

var arguments = Array(CommandLine.arguments.dropFirst())
var options: [String: String] = [:]
var positional: [String] = []
while let argument = arguments.first {
    arguments.removeFirst()
    if argument.hasPrefix("--"), let value = arguments.first {
        options[String(argument.dropFirst(2))] = value
        arguments.removeFirst()
    } else {
        positional.append(argument)
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("plexus-bench-grpc: \(message)\n".utf8))
    exit(2)
}

guard let path = positional.first, let driverName = options["driver"], let server = options["server"] else {
    fail("usage: plexus-bench-grpc WORKLOAD --driver \(registry.names.joined(separator: "|")) --server HOST:PORT")
}
do {
    var workload = try Workload.load(path: path)
    if let duration = options["duration"].flatMap(Double.init) { workload.durationSeconds = duration }
    if let warmup = options["warmup"].flatMap(Double.init) { workload.warmupSeconds = warmup }
    try workload.validate()
    let driverOptions = try DriverOptions(address: server)
    let driver = try registry.make(name: driverName, options: driverOptions)
    let runner = BenchRunner(
        workload: workload, driver: driver, server: driverOptions.address, label: options["label"],
        progress: { line in FileHandle.standardError.write(Data((line + "\n").utf8)) })
    let report = try await runner.run()
    print(ReportFormatter.table(report))
    if let json = options["json"] {
        try ReportFormatter.json(report).write(to: URL(fileURLWithPath: json))
    }
} catch {
    fail("\(error)")
}
