import Foundation
import PlexusConformance
import Testing

@testable import PlexusKernel

/// The protocol suite: one body of publish/subscribe scenarios, run over each shipped protocol plugin on a
/// real node (memory storage, the plugin on a free 127.0.0.1 port) through that protocol's client driver.
@Suite("Conformance kit: protocols")
struct ProtocolConformanceTests {
    static func shipped(_ name: String) -> String {
        FixtureLibraries.repositoryRoot.appendingPathComponent("plugin-manifests/\(name).yaml").path
    }

    @Test(
        "every protocol scenario passes over the shipped protocol plugins",
        arguments: [
            ("libTCPProtocol.so", "tcp-protocol", ProtocolDriverKind.tcp),
            ("libHTTPProtocol.so", "http-protocol", ProtocolDriverKind.http),
            ("libGRPCProtocol.so", "grpc-protocol", ProtocolDriverKind.grpc),
        ])
    func shippedProtocol(library: String, manifest: String, driver: ProtocolDriverKind) throws {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(5)
        options.ruleTimeout = .seconds(30)
        let report = try Conformance.runProtocol(
            library: try ConformanceTests.builtLibrary(library), manifest: Self.shipped(manifest), driver: driver,
            storage: (try ConformanceTests.builtLibrary("libMemoryStorage.so"), Self.shipped("memory-storage")),
            options: options)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.map(\.rule) == Conformance.rules(for: .protocol).map(\.name))
    }
}
