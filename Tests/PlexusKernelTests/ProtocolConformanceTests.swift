import Foundation
import PlexusConformance
import Synchronization
import Testing

@testable import PlexusKernel

/// The protocol suite: one body of publish/subscribe scenarios, run over each shipped protocol plugin on a
/// real node (memory storage, the plugin on a free 127.0.0.1 port) through that protocol's client driver.
@Suite("Conformance kit: protocols")
struct ProtocolConformanceTests {
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let outcome = Result { try body() }
            result.withLock { $0 = outcome }
            done.signal()
        }.start()
        done.wait()
        return try #require(result.withLock { $0 }).get()
    }

    static func shipped(_ name: String) -> String {
        FixtureLibraries.repositoryRoot.appendingPathComponent("plugin-manifests/\(name).yaml").path
    }

    @Test(
        "every protocol scenario passes over the shipped protocol plugins",
        .serialized,
        arguments: [
            ("libTCPProtocol.so", "tcp-protocol", ProtocolDriverKind.tcp),
            ("libHTTPProtocol.so", "http-protocol", ProtocolDriverKind.http),
            ("libGRPCProtocol.so", "grpc-protocol", ProtocolDriverKind.grpc),
        ])
    func shippedProtocol(library: String, manifest: String, driver: ProtocolDriverKind) throws {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(5)
        options.ruleTimeout = .seconds(30)
        // On a thread of its own: the suite blocks its caller while its drivers' tasks run on the shared pool.
        let settings = options
        let report = try Self.onThread {
            try Conformance.runProtocol(
                library: try ConformanceTests.builtLibrary(library), manifest: Self.shipped(manifest), driver: driver,
                storage: (try ConformanceTests.builtLibrary("libMemoryStorage.so"), Self.shipped("memory-storage")),
                options: settings)
        }
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.map(\.rule) == Conformance.rules(for: .protocol).map(\.name))
    }
}
