import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

#if canImport(Glibc)
    import Glibc
#endif

/// Both ends of process isolation's host proxy in this process: the `px_host_api` a plugin-host child gives its
/// plugin (`ChildHost.api`) on one end of a real socket pair, the kernel serving it for an isolated instance on
/// the other. The calls cross the same frames as with a child process; only the fork is left out.
final class ProxyPair {
    let kernelEnd: PluginHostProcess
    let childHost: ChildHost
    let instance: IsolatedInstance

    /// - Parameter client: the plugin context the kernel makes the child's calls with.
    init(_ client: LocalClient) throws {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IsolationWireError("socketpair: \(String(cString: strerror(errno)))")
        }
        let spec = ProcessIsolation.Spec(
            manifest: try ManifestSamples.parse(ManifestSamples.minimal), mappedPath: "", executable: "",
            observer: { _ in })
        instance = IsolatedInstance(
            spec: spec, api: HostServices.api, host: client.context.handle,
            config: .init(instanceName: "proxied", nodeID: "node", dataDir: "", json: "{}", entries: []))
        kernelEnd = PluginHostProcess.unspawned(fd: fds[0], name: "proxied")
        instance.adopt(kernelEnd)
        let child = ChildHost(channel: IsolationChannel(fd: fds[1], name: "proxy-test.child"))
        childHost = child
        ChildHost.shared = child
        child.channel.start(onFrame: { frame in child.handle(frame) }, onClose: { _ in })
    }

    /// A plugin's view: the child's table, the child's handle.
    func caller(_ client: LocalClient) -> KVHostCaller {
        KVHostCaller(client, table: ChildHost.api, handle: childHost.hostHandle)
    }

    /// Ends the pair as a dying child would: the kernel's end sees its socket close.
    func close() {
        kernelEnd.kill(because: "the test closed the socket pair")
        kernelEnd.waitForExit(timeout: .seconds(10))
        ChildHost.shared = nil
    }
}

/// Process isolation's proxy of the ABI 1.4 host services (`registry_keepalive`, `kv_*`), and that the host
/// table a plugin gets in a child leaves no entry NULL.
@Suite("process isolation's host proxy", .serialized)
struct IsolationProxyTests {
    /// The labels of a host table's entries that are NULL.
    static func nullEntries(_ table: px_host_api) -> [String] {
        Mirror(reflecting: table).children.compactMap { child in
            let value = Mirror(reflecting: child.value)
            // C pointers and function pointers are imported as Optionals: an empty one is NULL.
            return value.displayStyle == .optional && value.children.isEmpty ? child.label ?? "?" : nil
        }
    }

    @Test("the plugin-host's px_host_api is full size and sets every entry the header has, as the kernel's does")
    func everyEntrySet() {
        let child = ChildHost.api.pointee
        #expect(Int(child.struct_size) == MemoryLayout<px_host_api>.size)
        #expect(child.abi_major == UInt16(PX_ABI_VERSION_MAJOR) && child.abi_minor == UInt16(PX_ABI_VERSION_MINOR))
        #expect(Self.nullEntries(child).isEmpty, "NULL in the plugin-host's table: \(Self.nullEntries(child))")
        #expect(Self.nullEntries(HostServices.api.pointee).isEmpty, "the check sees the kernel's table as full")
        // The check itself finds a NULL entry.
        var emptied = child
        emptied.kv_watch = nil
        #expect(Self.nullEntries(emptied) == ["kv_watch"])
    }

    @Test("kv calls and keep-alive through the proxy reach the standalone registry as in-process")
    func metadataThroughProxy() throws {
        try RegistryMetadataTests.withStandalone { _, kernel, _ in
            let client = LocalClient(kernel: kernel, name: "proxied")
            let pair = try ProxyPair(client)
            defer { pair.close() }
            let kv = pair.caller(client)
            RegistryMetadataTests.putGetListWatchDelete(kv)

            let registered = kv.register("leased", "a", ttlMs: 30_000)
            #expect(registered.status == PX_OK.status && registered.completed, "\(registered)")
            let renewed = kv.keepAlive("leased", "a")
            #expect(renewed.status == PX_OK.status && renewed.completed, "\(renewed)")
            let unknown = kv.keepAlive("leased", "nobody")
            #expect(
                unknown.status == PX_ERR_NOT_FOUND.status && !unknown.completed, "refused synchronously: \(unknown)")
            #expect(unknown.message.contains("nobody"), "with the registry's reason: \(unknown.message)")

            // A value with every byte value, and an empty one, cross intact.
            let bytes = String(decoding: (0...255).map { UInt8($0) }, as: UTF8.self)
            #expect(kv.put("bin/all", bytes).status == PX_OK.status)
            #expect(kv.put("bin/empty", "").status == PX_OK.status)
            #expect(kv.get("bin/all").entry?.value == bytes)
            #expect(kv.get("bin/empty").entry?.value == "")
            #expect(kv.list("bin/").entries.map(\.key) == ["bin/all", "bin/empty"])
        }
    }

    @Test("without a registry, the proxied 1.4 calls are refused synchronously with the reason, never completed")
    func refusedThroughProxy() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let pair = try ProxyPair(h.client)
        defer { pair.close() }
        RegistryMetadataTests.refusedWithoutRegistry(pair.caller(h.client))
    }

    @Test("a child that goes away leaves no metadata watch in the kernel")
    func watchesReleasedWithChild() throws {
        try RegistryMetadataTests.withStandalone { _, kernel, _ in
            let client = LocalClient(kernel: kernel, name: "proxied")
            let pair = try ProxyPair(client)
            let kv = pair.caller(client)
            let (first, _, _) = kv.watch("gone/")
            let (second, _, changes) = kv.watch("gone/")
            #expect(first.status == PX_OK.status && second.status == PX_OK.status)
            #expect(kernel.services.kvWatches.withLock { $0.count } == 2)
            #expect(kv.put("gone/a", "1").status == PX_OK.status)
            #expect(changes.wait(for: 1) == ["PUT gone/a=1@1"])
            pair.close()
            // Released once the kernel's end has handled the close (after the reap `close` waits for).
            let deadline = ContinuousClock.now + .seconds(10)
            while kernel.services.kvWatches.withLock({ $0.count }) > 0 && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
            #expect(kernel.services.kvWatches.withLock { $0.count } == 0, "the kernel unwatched for the child")
            // The registry calls nothing of the gone child's.
            let direct = KVHostCaller(client)
            #expect(direct.put("gone/b", "2").status == PX_OK.status)
        }
    }
}

/// The channel under process isolation: where answers run.
@Suite("isolation channel")
struct IsolationChannelTests {
    /// A channel pair over a socket pair: the far end answers every request with the request's own payload.
    static func echoPair() throws -> (near: IsolationChannel, far: IsolationChannel) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IsolationWireError("socketpair: \(String(cString: strerror(errno)))")
        }
        let near = IsolationChannel(fd: fds[0], name: "channel-test.near")
        let far = IsolationChannel(fd: fds[1], name: "channel-test.far")
        near.start(onFrame: { _ in }, onClose: { _ in })
        far.start(
            onFrame: { [far] frame in
                var w = WireWriter()
                w.outcome(PX_OK.status, "")
                w.data(frame.payload)
                far.reply(to: frame, w.bytes)
            }, onClose: { _ in })
        return (near, far)
    }

    @Test("an answer may make a synchronous call on the same channel (a read completion asking for stream info)")
    func callFromAnswer() throws {
        let (near, far) = try Self.echoPair()
        defer {
            near.shutDown()
            far.shutDown()
        }
        let inner = Mutex<IsolationChannel.Answer?>(nil)
        let done = DispatchSemaphore(value: 0)
        near.request(.read, [1]) { _ in
            // Before the fix this ran on the reader thread, which alone could dispatch the reply it waited for:
            // the call timed out.
            inner.withLock { $0 = near.call(.streamInfo, [2], timeout: .seconds(20)) }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 60) == .success, "the answer never ran")
        let answer = try #require(inner.withLock { $0 }, "the call from inside an answer got no reply")
        guard case .success(let (status, _, reader)) = answer.outcome() else {
            Issue.record("the call failed: \(answer)")
            return
        }
        var r = reader
        #expect(status == PX_OK.status && (try? r.data()) == [2])
    }

    @Test("answers run in the order their replies came")
    func answersInOrder() throws {
        let (near, far) = try Self.echoPair()
        defer {
            near.shutDown()
            far.shutDown()
        }
        let seen = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        for n in 0..<200 {
            near.request(.append, [UInt8(n)]) { answer in
                guard case .success(let (_, _, reader)) = answer.outcome() else { return }
                var r = reader
                let count = seen.withLock { seen -> Int in
                    seen.append((try? r.data())?.first ?? 255)
                    return seen.count
                }
                if count == 200 { done.signal() }
            }
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        #expect(seen.withLock { $0 } == (0..<200).map { UInt8($0) })
    }
}
