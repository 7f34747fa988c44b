/// The files `plexus plugin new --lang swift` writes: an out-of-tree SwiftPM package whose only dependency is the
/// Plexus SDK package (by path), building one `.dynamic` library linked with the SDK's version script, with a
/// test target, a manifest, a Makefile and a README. Placeholders: `@NAME@` the plugin's name, `@IDENT@` a C
/// identifier made from it, `@TARGET@` its Swift target (UpperCamelCase), `@SDK@` the SDK package's path,
/// `@TOOLCHAIN@` the toolchain this CLI was built with, `@ABI_MINOR@` the ABI minor, `@KIND@` the kind.
enum SwiftTemplates {
    static let package = #"""
        // swift-tools-version: 6.1
        // @NAME@: a Plexus @KIND@ plugin in Swift, scaffolded by `plexus plugin new` (see README.md).
        import PackageDescription

        /// The Plexus SDK package (`plexus plugin new --sdk`): the SDK of the kernel that loads this plugin. Build with
        /// the toolchain that kernel was built with (@TOOLCHAIN@, the manifest's `toolchain`): Swift's ABI is not
        /// stable on Linux across compiler versions, and the kernel refuses a plugin built by another.
        let sdk = "@SDK@"

        let package = Package(
            name: "@NAME@",
            platforms: [.macOS(.v15)],
            products: [
                // The plugin image the kernel loads: lib@TARGET@.so.
                .library(name: "@TARGET@", type: .dynamic, targets: ["@TARGET@"])
            ],
            dependencies: [.package(path: sdk)],
            targets: [
                .target(
                    name: "@TARGET@",
                    dependencies: [.product(name: "PlexusPluginSDK", package: "plexus-sdk")],
                    // Exports only px_plugin_entry_v1 and the manifest's px_op_* operations.
                    linkerSettings: [.unsafeFlags(["-Xlinker", "--version-script=\(sdk)/plugin.version-script"])]
                ),
                .testTarget(name: "@TARGET@Tests", dependencies: ["@TARGET@"]),
            ]
        )

        """#

    static let makefile = #"""
        # `swift build` builds .build/debug/lib@TARGET@.so; `make` also copies it beside the manifest, where
        # `plexus dev`, `plexus plugin pack` and a node's manifest directory look for it.
        SWIFT ?= swift
        PLEXUS ?= plexus

        lib@TARGET@.so: Package.swift $(shell find Sources -name '*.swift')
        	$(SWIFT) build
        	cp .build/debug/lib@TARGET@.so $@

        # A throwaway node with this plugin loaded; it reloads the plugin when `make` rebuilds it.
        dev: lib@TARGET@.so
        	$(PLEXUS) dev @NAME@.yaml

        # The unit tests of Tests/.
        test:
        	$(SWIFT) test

        # The @KIND@ contract, rule by rule, against the built library (docs/conformance.md).
        conformance: lib@TARGET@.so
        	$(PLEXUS) conformance --kind @KIND@ --manifest @NAME@.yaml lib@TARGET@.so

        clean:
        	rm -rf .build lib@TARGET@.so

        .PHONY: dev test conformance clean

        """#

    static let gitignore = """
        .build/
        Package.resolved
        *.so

        """

    // MARK: - connector

    static let connectorSource = #"""
        import Dispatch
        import PlexusPluginSDK
        import Synchronization

        #if canImport(Glibc)
            import Glibc
        #elseif canImport(Darwin)
            import Darwin
        #endif

        /// @NAME@: a sink connector. It consumes `topic` as consumer group `group` and appends every event to `path`
        /// as one line of CloudEvents JSON; an event is acknowledged only once its line is written and, with
        /// `fsync: always`, synced to disk.
        ///
        /// The pattern every subscriber keeps: the delivery handler runs on a kernel thread and must not block, so it
        /// encodes the event and queues it; one serial writer drains the queue (one write and one fsync for all that
        /// is queued), then acks each event, or nacks it on a failed write so the kernel redelivers it. `stop`
        /// unsubscribes first (no delivery runs or starts after that), lets the writer finish within half the stop
        /// deadline, and nacks whatever is left.
        public final class @TARGET@: Plugin {
            public static let name = "@NAME@"
            public static let version = "0.1.0"
            public static let kinds: PluginKinds = [.connector]

            /// The configuration (the manifest's `config.schema`); a key left out takes its default.
            struct Settings: Decodable {
                var topic = "events"
                var group = "@NAME@"
                var path = "@NAME@.jsonl"
                var fsync = "always"

                init() {}

                init(from decoder: any Decoder) throws {
                    let keys = try decoder.container(keyedBy: CodingKeys.self)
                    topic = try keys.decodeIfPresent(String.self, forKey: .topic) ?? topic
                    group = try keys.decodeIfPresent(String.self, forKey: .group) ?? group
                    path = try keys.decodeIfPresent(String.self, forKey: .path) ?? path
                    fsync = try keys.decodeIfPresent(String.self, forKey: .fsync) ?? fsync
                }

                enum CodingKeys: String, CodingKey { case topic, group, path, fsync }
            }

            /// One delivery waiting for the writer: its id and its encoded line.
            struct Pending {
                var deliveryID: UInt64
                var line: [UInt8]
            }

            struct State {
                var pending: [Pending] = []
                /// Whether a drain is scheduled on the writer queue.
                var draining = false
                /// Set when stop's deadline passed: the writer nacks instead of writing.
                var abandon = false
                var subscription: Subscription?
                var file: JSONLinesFile?
            }

            let host: Host
            let settings: Settings
            let path: String
            private let state = Mutex(State())
            private let writer = DispatchQueue(label: "@NAME@.writer")
            let written = Atomic<UInt64>(0)

            public init(host: Host, config: PluginConfig) throws {
                self.host = host
                settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
                guard !settings.topic.isEmpty, ["always", "never"].contains(settings.fsync) else {
                    throw PluginError.invalidArgument("@NAME@: topic must not be empty; fsync is always or never")
                }
                // A relative path is inside the instance's own data directory.
                path =
                    settings.path.hasPrefix("/") || config.dataDirectory.isEmpty
                    ? settings.path : config.dataDirectory + "/" + settings.path
            }

            public func start() throws {
                let file = try JSONLinesFile(path: path)
                state.withLock {
                    $0.file = file
                    $0.abandon = false
                }
                do {
                    let subscription = try host.subscribe(topic: settings.topic, group: settings.group) { [self] in
                        deliver($0)
                    }
                    state.withLock { $0.subscription = subscription }
                } catch {
                    state.withLock { $0.file = nil }
                    file.close()
                    throw error
                }
            }

            /// A kernel thread hands over one event: encode, queue, return.
            private func deliver(_ delivery: Delivery) {
                let line = Array(CloudEventJSON.encode(delivery.event).utf8) + [0x0A]
                let schedule = state.withLock { state -> Bool in
                    state.pending.append(Pending(deliveryID: delivery.deliveryID, line: line))
                    defer { state.draining = true }
                    return !state.draining
                }
                if schedule { writer.async { [self] in drain() } }
            }

            /// On the writer queue: writes everything queued with one write and one fsync, then acks it.
            private func drain() {
                while true {
                    let (batch, abandon, file) = state.withLock { state in
                        defer { state.pending.removeAll() }
                        if state.pending.isEmpty { state.draining = false }
                        return (state.pending, state.abandon, state.file)
                    }
                    guard !batch.isEmpty else { return }
                    do {
                        guard !abandon, let file else {
                            throw PluginError(PX_ERR_UNAVAILABLE, "@NAME@: stopping")
                        }
                        try file.append(batch.map(\.line), sync: settings.fsync == "always")
                        for item in batch { _ = host.ack(deliveryID: item.deliveryID) }
                        written.add(UInt64(batch.count), ordering: .relaxed)
                    } catch {
                        for item in batch { _ = host.nack(deliveryID: item.deliveryID, reason: "\(error)") }
                    }
                }
            }

            public func stop(timeout: Duration) throws {
                // 1. No delivery runs or starts after unsubscribe returns.
                if let subscription = state.withLock({ $0.subscription.take() }) { host.unsubscribe(subscription) }
                // 2. The writer finishes what is queued, within half the deadline.
                let drained = DispatchSemaphore(value: 0)
                writer.async { drained.signal() }
                let (seconds, attoseconds) = timeout.components
                let half = Int(seconds) * 500 + Int(attoseconds / 2_000_000_000_000_000)
                if drained.wait(timeout: .now() + .milliseconds(half)) == .timedOut {
                    // 3. What it could not finish goes back to the kernel, to be redelivered.
                    state.withLock { $0.abandon = true }
                    writer.sync {}
                }
                state.withLock { $0.file.take() }?.close()
            }

            public func health() throws {
                guard state.withLock({ $0.file != nil }) else {
                    throw PluginError(PX_ERR_UNAVAILABLE, "@NAME@: the output file is not open")
                }
            }
        }

        /// An append-only file of lines: `append` writes whole lines and, when asked, fsyncs them.
        final class JSONLinesFile: @unchecked Sendable {
            let path: String
            private let fd: Int32

            /// Opens (creating) `path` for appending.
            init(path: String) throws {
                self.path = path
                fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
                guard fd >= 0 else { throw Self.failure("cannot open", path) }
            }

            /// Writes `lines` (each ending in a newline) in one go, then fsyncs when `sync` is true.
            /// - Throws: `PluginError` with `PX_ERR_IO` and the errno's text.
            func append(_ lines: [[UInt8]], sync: Bool) throws {
                let bytes = lines.flatMap { $0 }
                try bytes.withUnsafeBytes { buffer in
                    var done = 0
                    while done < buffer.count {
                        let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                        if n < 0 {
                            if errno == EINTR { continue }
                            throw Self.failure("cannot write", path)
                        }
                        done += n
                    }
                }
                if sync, fsync(fd) != 0 { throw Self.failure("cannot fsync", path) }
            }

            /// Syncs and closes the file; call once, when no append runs.
            func close() {
                _ = fsync(fd)
                #if canImport(Glibc)
                    _ = Glibc.close(fd)
                #else
                    _ = Darwin.close(fd)
                #endif
            }

            static func failure(_ what: String, _ path: String) -> PluginError {
                PluginError(PX_ERR_IO, "@NAME@: \(what) \(path): \(String(cString: strerror(errno)))")
            }
        }

        @_cdecl("px_plugin_entry_v1")
        public func pluginEntry(
            _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
            _ err: UnsafeMutablePointer<px_error>?
        ) -> px_status {
            PluginExport.entry(@TARGET@.self, api, out, err)
        }

        /// Operation `written` (`plexus plugin call @NAME@ written`): how many events this instance has written.
        /// Its symbol and signature are in the manifest's `operations`.
        @_cdecl("px_op_@IDENT@_written")
        public func writtenOperation(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
            PluginExport.instance(@TARGET@.self, instance)?.written.load(ordering: .relaxed) ?? 0
        }

        """#

    static let connectorTest = #"""
        import PlexusPluginSDK
        import Testing

        #if canImport(Glibc)
            import Glibc
        #endif

        @testable import @TARGET@

        /// The file half of the sink, without a kernel: lines appended (and fsynced) are read back as the same
        /// CloudEvents. `plexus dev` and `make conformance` exercise the plugin in a kernel.
        @Test func appendedLinesReadBackAsTheSameEvents() throws {
            let path = "/tmp/@NAME@-test-\(getpid()).jsonl"
            defer { unlink(path) }
            let events = [
                CloudEvent(id: "1", source: "/test", type: "example.created", data: Array("hello".utf8)),
                CloudEvent(
                    id: "2", source: "/test", type: "example.created", datacontenttype: "application/json",
                    data: Array(#"{"n":2}"#.utf8)),
            ]
            let file = try JSONLinesFile(path: path)
            try file.append(events.map { Array(CloudEventJSON.encode($0).utf8) + [0x0A] }, sync: true)
            file.close()

            let lines = try readAll(path).split(separator: 0x0A).map(Array.init)
            #expect(lines.count == 2)
            #expect(try lines.map { try CloudEventJSON.decode($0) } == events)
        }

        func readAll(_ path: String) throws -> [UInt8] {
            guard let stream = fopen(path, "r") else { throw PluginError(PX_ERR_IO, "cannot open \(path)") }
            defer { fclose(stream) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = fread(&buffer, 1, buffer.count, stream)
                if n == 0 { break }
                bytes += buffer[0..<n]
            }
            return bytes
        }

        """#

    static let connectorManifest = #"""
        # @NAME@: a sink connector in Swift (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Appends every event of a topic to a file as CloudEvents JSON lines.
        kind: connector
        library: lib@TARGET@.so
        abi: {major: 1, minor: @ABI_MINOR@}
        toolchain: @TOOLCHAIN@
        requires:
          - {capability: storage, version: ^1.0.0, optional: true}
        config:
          schema:
            topic: {type: string, default: events, description: The topic to consume.}
            group: {type: string, default: @NAME@, description: The consumer group (its offsets survive restarts).}
            path:
              type: string
              default: @NAME@.jsonl
              description: The file events are appended to; a relative path is in the instance's data directory.
            fsync:
              type: string
              enum: [always, never]
              default: always
              description: "always: fsync before acknowledging; never: leave it to the OS."
          values: {}
        operations:
          - {name: written, symbol: px_op_@IDENT@_written, signature: uint64 (instance)}

        """#

    static let connectorReadme = #"""
        # @NAME@

        A sink connector in Swift, scaffolded by `plexus plugin new --kind connector --lang swift @NAME@`. It
        consumes `topic` as consumer group `group` and appends every event to `path` as one line of CloudEvents
        JSON (the format `CloudEventJSON.decode` and any CloudEvents SDK read back).

        | key | default | meaning |
        |---|---|---|
        | `topic` | `events` | the topic consumed |
        | `group` | `@NAME@` | the consumer group; its committed offset survives restarts |
        | `path` | `@NAME@.jsonl` | the output file; a relative path is in the instance's data directory |
        | `fsync` | `always` | `always`: `fsync` before acknowledging; `never`: the OS decides |

        Guarantees: at least once. An event is acknowledged only after its line is written (and synced with
        `fsync: always`); a failed write is nacked and the kernel retries it. On stop, what is queued is finished
        within half the stop deadline and the rest is nacked, so the kernel redelivers it.

        - `swift build` builds `.build/debug/lib@TARGET@.so` against the SDK package named in `Package.swift` — its
          only dependency. Build with the toolchain of the kernel that loads it (`toolchain:` in the manifest).
        - `make` also copies the library beside `@NAME@.yaml`; `make dev` runs it in a throwaway node (`plexus dev`),
          which reloads it on every rebuild.
        - `swift test` (or `make test`) runs the unit tests in `Tests/`.
        - `make conformance` runs `plexus conformance --kind @KIND@` against the built library.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        The tutorial: docs/authoring.md in the Plexus repository.

        """#

    // MARK: - registry

    static let registrySource = #"""
        import Dispatch
        import PlexusPluginSDK
        import Synchronization

        #if canImport(Glibc)
            import Glibc
        #elseif canImport(Darwin)
            import Darwin
        #endif

        /// @NAME@: a service registry. Instances live in memory (a restart forgets them); an instance registered with a
        /// TTL disappears after it (a host timer sweeps every `sweepMs`), reported to watches as a delete.
        ///
        /// Put your backend behind `Services` and keep the rules the kernel relies on, which `plexus conformance --kind
        /// registry` checks: every method that returns normally calls its completion exactly once (one that throws never
        /// does); a new watch sees a put for every live instance first, then every change in the order it happened,
        /// never two callbacks at once; after `unwatch` returns its handler never runs. Changes are applied and queued
        /// to each watch's serial queue under one lock, which gives the order.
        public final class @TARGET@: RegistryPlugin {
            public static let name = "@NAME@"
            public static let version = "0.1.0"

            struct Settings: Decodable {
                var sweepMs = 100

                init() {}

                init(from decoder: any Decoder) throws {
                    let keys = try decoder.container(keyedBy: CodingKeys.self)
                    sweepMs = try keys.decodeIfPresent(Int.self, forKey: .sweepMs) ?? sweepMs
                }

                enum CodingKeys: String, CodingKey { case sweepMs }
            }

            struct State {
                var services = Services()
                var watches: [UInt64: Watch] = [:]
                var nextWatchID: UInt64 = 1

                /// Queues `event` to every watch of its service. Call under the lock, in the order of the changes.
                func notify(_ event: WatchEvent) {
                    for watch in watches.values where watch.service == event.instance.service { watch.send(event) }
                }

                /// Removes what expired at `now`, telling the watches.
                mutating func expire(now: UInt64) {
                    for instance in services.expire(now: now) { notify(.delete(instance)) }
                }
            }

            let host: Host
            let settings: Settings
            private let state = Mutex(State())
            private let sweeper = Mutex<HostTimer?>(nil)
            let registered = Atomic<UInt64>(0)

            public init(host: Host, config: PluginConfig) throws {
                self.host = host
                settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
                guard settings.sweepMs > 0 else { throw PluginError.invalidArgument("@NAME@: sweepMs must be positive") }
            }

            public func start() throws {
                let every = Duration.milliseconds(settings.sweepMs)
                let timer = try host.startTimer(after: every, every: every) { [weak self] in
                    guard let self else { return }
                    let now = Self.now()
                    state.withLock { $0.expire(now: now) }
                }
                sweeper.withLock { $0 = timer }
            }

            public func stop(timeout: Duration) throws {
                if let timer = sweeper.withLock({ $0.take() }) { host.cancel(timer) }
                let watches = state.withLock { state in
                    defer { state.watches.removeAll() }
                    return Array(state.watches.values)
                }
                for watch in watches { watch.end() }
            }

            public func register(
                _ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                try Self.check(service: instance.service, instanceID: instance.instanceID)
                let now = Self.now()
                state.withLock { state in
                    state.expire(now: now)
                    let expiresAt = instance.ttlMilliseconds > 0 ? now + instance.ttlMilliseconds : nil
                    if state.services.put(instance, expiresAt: expiresAt) { state.notify(.put(instance)) }
                }
                registered.add(1, ordering: .relaxed)
                completion(.success(()))
            }

            public func deregister(
                service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                try Self.check(service: service, instanceID: instanceID)
                let now = Self.now()
                try state.withLock { state in
                    state.expire(now: now)
                    guard let removed = state.services.remove(service: service, instanceID: instanceID) else {
                        throw PluginError(PX_ERR_NOT_FOUND, "@NAME@: service '\(service)' has no instance '\(instanceID)'")
                    }
                    state.notify(.delete(removed))
                }
                completion(.success(()))
            }

            public func lookup(
                service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
            ) throws {
                try Self.check(service: service)
                let now = Self.now()
                let found = state.withLock { state in
                    state.expire(now: now)
                    return state.services.instances(of: service)
                }
                completion(.success(found))
            }

            public func watch(service: String, handler: @escaping @Sendable (WatchEvent) -> Void) throws -> UInt64 {
                try Self.check(service: service)
                let now = Self.now()
                return state.withLock { state in
                    state.expire(now: now)
                    let watch = Watch(id: state.nextWatchID, service: service, handler: handler)
                    state.nextWatchID += 1
                    state.watches[watch.id] = watch
                    // Every live instance first, under the same lock as the changes: nothing slips in between.
                    for instance in state.services.instances(of: service) { watch.send(.put(instance)) }
                    return watch.id
                }
            }

            public func unwatch(_ id: UInt64) throws {
                guard let watch = state.withLock({ $0.watches.removeValue(forKey: id) }) else {
                    throw PluginError(PX_ERR_NOT_FOUND, "@NAME@: no watch \(id)")
                }
                watch.end()
            }

            static func check(service: String, instanceID: String? = nil) throws {
                guard !service.isEmpty, instanceID?.isEmpty != true else {
                    throw PluginError.invalidArgument("@NAME@: the service and the instance id must not be empty")
                }
            }

            /// Milliseconds on the monotonic clock.
            static func now() -> UInt64 {
                var time = timespec()
                clock_gettime(CLOCK_MONOTONIC, &time)
                return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
            }
        }

        /// The registry's data: instances by service and instance id, with their expiry. Plain values, so it is tested
        /// without a kernel (Tests/); replace it with your backend.
        struct Services {
            struct Entry: Equatable {
                var instance: ServiceInstance
                /// Monotonic milliseconds when it expires; `nil` without a TTL.
                var expiresAt: UInt64?
            }

            private var entries: [String: [String: Entry]] = [:]

            /// Registers or replaces; true when the instance changed (a renewal of the TTL alone is no news).
            mutating func put(_ instance: ServiceInstance, expiresAt: UInt64?) -> Bool {
                let previous = entries[instance.service]?[instance.instanceID]
                entries[instance.service, default: [:]][instance.instanceID] = Entry(instance: instance, expiresAt: expiresAt)
                return previous?.instance != instance
            }

            /// Removes an instance; `nil` when it is not registered.
            mutating func remove(service: String, instanceID: String) -> ServiceInstance? {
                guard let entry = entries[service]?.removeValue(forKey: instanceID) else { return nil }
                if entries[service]?.isEmpty == true { entries[service] = nil }
                return entry.instance
            }

            /// The instances of a service, by instance id.
            func instances(of service: String) -> [ServiceInstance] {
                (entries[service] ?? [:]).values.map(\.instance).sorted { $0.instanceID < $1.instanceID }
            }

            /// Removes and returns the instances expired at `now`.
            mutating func expire(now: UInt64) -> [ServiceInstance] {
                var expired: [ServiceInstance] = []
                for (service, byID) in entries {
                    for (id, entry) in byID.sorted(by: { $0.key < $1.key }) {
                        guard let expiresAt = entry.expiresAt, expiresAt <= now else { continue }
                        entries[service]?[id] = nil
                        expired.append(entry.instance)
                    }
                    if entries[service]?.isEmpty == true { entries[service] = nil }
                }
                return expired
            }
        }

        /// One watch: its events go through a serial queue, so its handler never runs twice at once, in order.
        final class Watch: Sendable {
            let id: UInt64
            let service: String
            private let handler: @Sendable (WatchEvent) -> Void
            private let queue: DispatchQueue
            private let active = Atomic<Bool>(true)
            private static let current = DispatchSpecificKey<UInt64>()

            init(id: UInt64, service: String, handler: @escaping @Sendable (WatchEvent) -> Void) {
                self.id = id
                self.service = service
                self.handler = handler
                queue = DispatchQueue(label: "@NAME@.watch.\(id)")
                queue.setSpecific(key: Self.current, value: id)
            }

            func send(_ event: WatchEvent) {
                queue.async { [self] in
                    guard active.load(ordering: .acquiring) else { return }
                    handler(event)
                }
            }

            /// Stops the watch: when it returns the handler is not running (unless called from the handler itself) and
            /// will not run again.
            func end() {
                active.store(false, ordering: .releasing)
                if DispatchQueue.getSpecific(key: Self.current) != id { queue.sync {} }
            }
        }

        @_cdecl("px_plugin_entry_v1")
        public func pluginEntry(
            _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
            _ err: UnsafeMutablePointer<px_error>?
        ) -> px_status {
            PluginExport.entry(@TARGET@.self, api, out, err)
        }

        /// Operation `registered` (`plexus plugin call @NAME@ registered`): how many registrations were accepted.
        @_cdecl("px_op_@IDENT@_registered")
        public func registeredOperation(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
            PluginExport.instance(@TARGET@.self, instance)?.registered.load(ordering: .relaxed) ?? 0
        }

        """#

    static let registryTest = #"""
        import PlexusPluginSDK
        import Testing

        @testable import @TARGET@

        /// The registry's data without a kernel; `make conformance` checks the whole plugin against the contract.
        @Suite struct ServicesTests {
            let a = ServiceInstance(service: "orders", instanceID: "a", address: "127.0.0.1:7001", metadata: ["zone": "z1"])
            let b = ServiceInstance(service: "orders", instanceID: "b", address: "127.0.0.1:7002", metadata: [:])

            @Test func putReplacesAndReportsOnlyChanges() {
                var services = Services()
                let first = services.put(a, expiresAt: nil)
                let renewal = services.put(a, expiresAt: nil)
                var moved = a
                moved.address = "127.0.0.1:7999"
                let change = services.put(moved, expiresAt: nil)
                #expect(first && !renewal && change, "a renewal alone is no change")
                #expect(services.instances(of: "orders") == [moved])
            }

            @Test func removeAndExpire() {
                var services = Services()
                _ = services.put(a, expiresAt: 100)
                _ = services.put(b, expiresAt: nil)
                let early = services.expire(now: 99)
                let due = services.expire(now: 100)
                #expect(early.isEmpty && due == [a])
                let gone = services.remove(service: "orders", instanceID: "a")
                let removed = services.remove(service: "orders", instanceID: "b")
                #expect(gone == nil && removed == b)
                #expect(services.instances(of: "orders").isEmpty)
            }
        }

        """#

    static let registryManifest = #"""
        # @NAME@: a service registry in Swift (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Keeps service instances in memory, expires them by TTL, and reports changes to watches.
        kind: registry
        library: lib@TARGET@.so
        abi: {major: 1, minor: @ABI_MINOR@}
        toolchain: @TOOLCHAIN@
        provides:
          - {capability: registry, version: 1.0.0}
        config:
          schema:
            sweepMs: {type: integer, default: 100, minimum: 1, description: How often expired instances are removed.}
          values: {}
        operations:
          - {name: registered, symbol: px_op_@IDENT@_registered, signature: uint64 (instance)}

        """#

    static let registryReadme = #"""
        # @NAME@

        A service registry in Swift, scaffolded by `plexus plugin new --kind registry --lang swift @NAME@`. Instances
        live in memory (a restart forgets them); one registered with a TTL disappears after it, and watches see a
        delete.

        | key | default | meaning |
        |---|---|---|
        | `sweepMs` | `100` | how often a host timer removes expired instances |

        Put your backend behind `Services` and keep the rules `plexus conformance --kind registry` checks: every method
        that returns normally calls its completion exactly once, one that throws never does; a new watch sees a put for
        every live instance first, then each change in order, never two callbacks at once; after `unwatch` returns the
        handler never runs.

        - `swift build` builds `.build/debug/lib@TARGET@.so` against the SDK package named in `Package.swift` — its
          only dependency. Build with the toolchain of the kernel that loads it (`toolchain:` in the manifest).
        - `swift test` (or `make test`) runs the unit tests in `Tests/`.
        - `make` also copies the library beside `@NAME@.yaml`; `make dev` loads it in a throwaway node.
        - `make conformance` runs `plexus conformance --kind @KIND@` against the built library.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        The tutorial: docs/authoring.md in the Plexus repository.

        """#

    // MARK: - storage

    static let storageSource = #"""
        // @NAME@: a storage plugin in Swift, scaffolded by `plexus plugin new` from the shipped memory-storage: streams
        // kept in memory (durability none). Replace @TARGET@Stream's arrays with your engine (files, a database) and
        // raise `durability` to what your completions guarantee; `make conformance` checks the storage contract.
        import PlexusPluginSDK
        import Synchronization

        #if canImport(Glibc)
            import Glibc
        #endif

        /// Streams kept in memory: the storage for tests and for topics that may lose their events when the process
        /// ends (`PX_DURABILITY_NONE`).
        ///
        /// Each stream has its own lock, so appenders to different streams never wait for each other and batches to
        /// one stream are ordered as the calls took the lock. Completions are called before the hook returns.
        ///
        /// An appended batch is copied once, from the kernel's borrowed events into one allocation in C layout
        /// (`CopiedEventBatch`), and never again: reads lend the kernel pointers into those immutable batches
        /// (`LendingStoragePlugin`), and a lent read keeps the batches it points into alive however the stream is
        /// trimmed meanwhile.
        public final class @TARGET@: LendingStoragePlugin, ManagedStoragePlugin {
            public static let name = "@NAME@"
            public static let version = "0.1.0"
            public static let durability = Durability.none

            /// The manifest's `config` (defaults filled in by the kernel; repeated here for a bare `on_create`).
            struct Settings: Decodable {
                var maxEventBytes: Int = 4 << 20
                var maxStreamBytes: Int = 1 << 30

                enum CodingKeys: String, CodingKey { case maxEventBytes, maxStreamBytes }

                init() {}

                init(from decoder: any Decoder) throws {
                    let keys = try decoder.container(keyedBy: CodingKeys.self)
                    maxEventBytes = try keys.decodeIfPresent(Int.self, forKey: .maxEventBytes) ?? maxEventBytes
                    maxStreamBytes = try keys.decodeIfPresent(Int.self, forKey: .maxStreamBytes) ?? maxStreamBytes
                }
            }

            let settings: Settings
            private let streams = Mutex<[String: @TARGET@Stream]>([:])

            public init(host: Host, config: PluginConfig) throws {
                settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
                guard settings.maxEventBytes > 0 else {
                    throw PluginError.invalidArgument("@NAME@: maxEventBytes must be positive")
                }
                guard settings.maxStreamBytes > 0 else {
                    throw PluginError.invalidArgument("@NAME@: maxStreamBytes must be positive")
                }
            }

            public func start() throws {}

            public func stop(timeout: Duration) throws {}

            /// Opens a stream, creating it on first use. Opening an existing stream again returns the same stream and
            /// replaces its retention with `options` (applied from the next append).
            public func openStream(name: String, options: StreamOptions) throws -> @TARGET@Stream {
                guard !name.isEmpty else { throw PluginError.invalidArgument("@NAME@: the stream name is empty") }
                let stream = streams.withLock { streams in
                    if let existing = streams[name] { return existing }
                    let created = @TARGET@Stream(name: name, options: options)
                    streams[name] = created
                    return created
                }
                stream.setOptions(options)
                return stream
            }

            public func append(
                _ stream: @TARGET@Stream, _ events: EventBatchView,
                completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
            ) throws {
                var sizes: [Int] = []
                sizes.reserveCapacity(events.count)
                for (index, event) in events.enumerated() {
                    let size = event.byteCount
                    guard size <= settings.maxEventBytes else {
                        throw PluginError.invalidArgument(
                            "@NAME@: event \(index) (id '\(event.id)') is \(size) bytes, more than maxEventBytes "
                                + "(\(settings.maxEventBytes))")
                    }
                    sizes.append(size)
                }
                // The one copy of the batch's bytes, made before the stream's lock is taken.
                let batch = events.isEmpty ? nil : CopiedEventBatch(copying: events)
                let first = try stream.append(batch, sizes: sizes, now: Self.now(), maxStreamBytes: settings.maxStreamBytes)
                completion(.success(first))
            }

            public func readBatch(
                _ stream: @TARGET@Stream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
                completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
            ) throws {
                guard maxRecords > 0 else { throw PluginError.invalidArgument("@NAME@: maxRecords must be at least 1") }
                completion(.success(try stream.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)))
            }

            public func commitOffset(
                _ stream: @TARGET@Stream, group: String, offset: UInt64,
                completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                guard offset != UInt64.max else {
                    throw PluginError.invalidArgument("@NAME@: PX_OFFSET_NONE cannot be committed")
                }
                stream.commit(group: group, offset: offset)
                completion(.success(()))
            }

            public func fetchOffset(
                _ stream: @TARGET@Stream, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
            ) throws {
                completion(.success(stream.committed(group: group)))
            }

            public func trim(
                _ stream: @TARGET@Stream, before offset: UInt64,
                completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                try stream.trim(before: offset)
                completion(.success(()))
            }

            public func streamInfo(_ stream: @TARGET@Stream) throws -> StreamInfo { stream.info() }

            public func listStreams(completion: @escaping @Sendable (Result<[String], PluginError>) -> Void) throws {
                completion(.success(streams.withLock { Array($0.keys) }))
            }

            /// Forgets the stream: it leaves the listing, its events and offsets go, and opening the name again
            /// creates an empty stream from offset 0.
            public func deleteStream(
                _ stream: @TARGET@Stream, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                streams.withLock { streams in
                    if streams[stream.name] === stream { streams[stream.name] = nil }
                }
                stream.markDeleted()
                completion(.success(()))
            }

            public func listOffsets(
                _ stream: @TARGET@Stream, completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
            ) throws {
                completion(.success(stream.committedOffsets()))
            }

            public func deleteOffset(
                _ stream: @TARGET@Stream, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
            ) throws {
                stream.forget(group: group)
                completion(.success(()))
            }

            /// Unix time in nanoseconds.
            static func now() -> UInt64 {
                var spec = timespec()
                clock_gettime(CLOCK_REALTIME, &spec)
                return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
            }
        }

        @_cdecl("px_plugin_entry_v1")
        public func pluginEntry(
            _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
            _ err: UnsafeMutablePointer<px_error>?
        ) -> px_status {
            PluginExport.entry(@TARGET@.self, api, out, err)
        }

        // MARK: - One stream

        /// One stream of `@TARGET@`: its records, offsets and committed group offsets under one lock.
        ///
        /// Each record points at its event in the immutable batch it was appended with (`CopiedEventBatch`); the batch
        /// is freed once no record and no lent read refers to it.
        public final class @TARGET@Stream: Sendable {
            struct Entry {
                /// The batch holding the event, and the event's place in it.
                var batch: CopiedEventBatch
                var index: Int
                var appendTime: UInt64
                var size: Int
            }

            struct State {
                var options: StreamOptions
                /// Retained records; `entries[head...]` hold offsets `firstOffset ..< nextOffset`.
                var entries: [Entry] = []
                var head = 0
                var firstOffset: UInt64 = 0
                var sizeBytes = 0
                var committed: [String: UInt64] = [:]
                /// Deleted (`on_delete_stream`): the handle takes no more appends.
                var deleted = false

                var count: Int { entries.count - head }
                var nextOffset: UInt64 { firstOffset + UInt64(count) }

                /// Drops the oldest `n` records.
                mutating func dropFirst(_ n: Int) {
                    guard n > 0 else { return }
                    for index in head..<(head + n) { sizeBytes -= entries[index].size }
                    head += n
                    firstOffset += UInt64(n)
                    // Reclaim the dropped prefix once it is most of the array: amortised O(1) per record.
                    if head >= 1024 && head * 2 >= entries.count {
                        entries.removeFirst(head)
                        head = 0
                    }
                }
            }

            let name: String
            private let state: Mutex<State>

            init(name: String, options: StreamOptions) {
                self.name = name
                self.state = Mutex(State(options: options))
            }

            func setOptions(_ options: StreamOptions) { state.withLock { $0.options = options } }

            /// Appends a batch after enforcing retention; returns the first offset.
            /// - Throws: `PX_ERR_RESOURCE_EXHAUSTED` when the stream would exceed `maxStreamBytes` even after retention.
            func append(_ batch: CopiedEventBatch?, sizes: [Int], now: UInt64, maxStreamBytes: Int) throws -> UInt64 {
                let batchBytes = sizes.reduce(0, +)
                return try state.withLock { s in
                    guard !s.deleted else {
                        throw PluginError(PX_ERR_NOT_FOUND, "@NAME@: stream '\(name)' was deleted")
                    }
                    let first = s.nextOffset
                    guard let batch, batch.count > 0 else { return first }
                    // Time retention: records older than retentionMs go now.
                    var expired = 0
                    if s.options.retentionMilliseconds > 0 {
                        let (window, overflow) = s.options.retentionMilliseconds.multipliedReportingOverflow(by: 1_000_000)
                        let cutoff = overflow || window > now ? 0 : now - window
                        while expired < s.count && s.entries[s.head + expired].appendTime < cutoff { expired += 1 }
                    }
                    // Byte retention, counting the new batch: oldest first, always keeping the newest record.
                    var projected = s.sizeBytes + batchBytes
                    for index in (s.head)..<(s.head + expired) { projected -= s.entries[index].size }
                    var evicted = expired
                    let limit = s.options.retentionBytes
                    if limit > 0 {
                        // The new records may be evicted too, except the last one.
                        var newIndex = 0
                        while projected > limit {
                            if evicted < s.count {
                                projected -= s.entries[s.head + evicted].size
                                evicted += 1
                            } else if newIndex < sizes.count - 1 {
                                projected -= sizes[newIndex]
                                newIndex += 1
                                evicted += 1
                            } else {
                                break
                            }
                        }
                    }
                    guard projected <= maxStreamBytes else {
                        throw PluginError(
                            PX_ERR_RESOURCE_EXHAUSTED,
                            "@NAME@: stream '\(name)' holds \(s.sizeBytes) bytes; \(batchBytes) more would exceed "
                                + "maxStreamBytes (\(maxStreamBytes))")
                    }
                    for (index, size) in sizes.enumerated() {
                        s.entries.append(Entry(batch: batch, index: index, appendTime: now, size: size))
                    }
                    s.sizeBytes += batchBytes
                    s.dropFirst(evicted)
                    return first
                }
            }

            /// Up to `maxRecords` records from `offset`, about `maxBytes` (0: no limit) but at least one, lent: the
            /// records point into the stored batches, which the lent batch retains.
            func read(from offset: UInt64, maxRecords: Int, maxBytes: Int) throws -> LentRecordBatch {
                try state.withLock { s in
                    guard offset >= s.firstOffset else {
                        throw PluginError(
                            PX_ERR_OUT_OF_RANGE,
                            "@NAME@: offset \(offset) of stream '\(name)' is before its first retained offset "
                                + "\(s.firstOffset)")
                    }
                    guard offset <= s.nextOffset else {
                        throw PluginError(
                            PX_ERR_OUT_OF_RANGE,
                            "@NAME@: offset \(offset) of stream '\(name)' is past its end (next offset \(s.nextOffset))"
                        )
                    }
                    // How many records the read takes, then the batch lending them.
                    let start = s.head + Int(offset - s.firstOffset)
                    var end = start
                    var bytes = 0
                    while end < s.entries.count && end - start < maxRecords {
                        let size = s.entries[end].size
                        if maxBytes > 0 && end > start && bytes + size > maxBytes { break }
                        bytes += size
                        end += 1
                    }
                    return LentRecordBatch(records: end - start, nextOffset: offset + UInt64(end - start)) { builder in
                        for index in start..<end {
                            let entry = s.entries[index]
                            builder.retain(entry.batch)
                            builder.append(
                                offset: s.firstOffset + UInt64(index - s.head), appendTime: entry.appendTime,
                                event: entry.batch.event(at: entry.index))
                        }
                    }
                }
            }

            func commit(group: String, offset: UInt64) { state.withLock { $0.committed[group] = offset } }

            func committed(group: String) -> UInt64? { state.withLock { $0.committed[group] } }

            /// Every group's committed offset, by group name.
            func committedOffsets() -> [GroupOffset] {
                state.withLock { s in s.committed.map { GroupOffset(group: $0.key, offset: $0.value) } }
            }

            func forget(group: String) { _ = state.withLock { $0.committed.removeValue(forKey: group) } }

            /// Marks the stream deleted and lets go of its events and offsets (lent batches keep what they point into).
            func markDeleted() {
                state.withLock { s in
                    s.deleted = true
                    s.dropFirst(s.count)
                    s.committed = [:]
                }
            }

            /// Discards records below `offset`.
            /// - Throws: `PX_ERR_OUT_OF_RANGE` past the end of the stream.
            func trim(before offset: UInt64) throws {
                try state.withLock { s in
                    guard offset <= s.nextOffset else {
                        throw PluginError(
                            PX_ERR_OUT_OF_RANGE,
                            "@NAME@: cannot trim stream '\(name)' before \(offset), past its end (next offset "
                                + "\(s.nextOffset))")
                    }
                    if offset > s.firstOffset { s.dropFirst(Int(offset - s.firstOffset)) }
                }
            }

            func info() -> StreamInfo {
                state.withLock {
                    StreamInfo(firstOffset: $0.firstOffset, nextOffset: $0.nextOffset, sizeBytes: UInt64($0.sizeBytes))
                }
            }

        }

        """#

    static let storageTest = #"""
        import PlexusPluginSDK
        import Testing

        @testable import @TARGET@

        /// One stream without a kernel: a batch appended from borrowed events reads back as the same events at dense
        /// offsets, and a committed offset is kept per group. `make conformance` checks the whole storage contract.
        @Test func appendedEventsReadBackInOrder() throws {
            let stream = @TARGET@Stream(name: "orders", options: StreamOptions())
            let events = (1...3).map { CloudEvent(id: "\($0)", source: "/test", type: "example", data: Array("e\($0)".utf8)) }
            let first = try EventBatchView.withBorrowed(events) { view in
                try stream.append(
                    CopiedEventBatch(copying: view), sizes: view.map(\.byteCount), now: 1, maxStreamBytes: 1 << 20)
            }
            #expect(first == 0)
            let read = try stream.read(from: 0, maxRecords: 10, maxBytes: 0)
            #expect(read.count == 3 && read.nextOffset == 3)
            #expect(read.copy().map(\.event) == events)
            #expect(read.copy().map(\.offset) == [0, 1, 2])

            stream.commit(group: "g", offset: 2)
            #expect(stream.committed(group: "g") == 2)
            #expect(stream.committed(group: "other") == nil)
        }

        """#

    static let storageManifest = #"""
        # @NAME@: a storage plugin in Swift (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Keeps streams of events in memory (durability none); lost when the process ends.
        kind: storage
        library: lib@TARGET@.so
        abi: {major: 1, minor: @ABI_MINOR@}
        toolchain: @TOOLCHAIN@
        provides:
          - {capability: storage, version: 1.0.0}
        config:
          schema:
            maxEventBytes: {type: integer, default: 4194304, minimum: 1, description: "The largest event accepted, in bytes."}
            maxStreamBytes:
              type: integer
              default: 1073741824
              minimum: 1
              description: The most bytes one stream holds after retention; appends beyond it are refused as exhausted.
          values: {}

        """#

    static let storageReadme = #"""
        # @NAME@

        A storage plugin in Swift, scaffolded by `plexus plugin new --kind storage --lang swift @NAME@` from the
        shipped `memory-storage`: named streams of events with dense offsets, consumer offsets per group, retention and
        trimming, kept in memory (`durability` none). Reads lend the kernel the stored events without copying them
        again (`LendingStoragePlugin`); streams can be listed and deleted (`ManagedStoragePlugin`).

        | key | default | meaning |
        |---|---|---|
        | `maxEventBytes` | `4194304` | the largest event accepted |
        | `maxStreamBytes` | `1073741824` | the most bytes one stream holds after retention |

        Replace `@TARGET@Stream`'s arrays with your engine and raise `durability` to what your completions promise
        (`.process` or `.disk`): a completion reports success only once the batch is as durable as that says. The
        rules are in `StoragePlugin`'s documentation and docs/abi.md ("Storage plugins"); `make conformance` checks
        them.

        - `swift build` builds `.build/debug/lib@TARGET@.so` against the SDK package named in `Package.swift` — its
          only dependency. Build with the toolchain of the kernel that loads it (`toolchain:` in the manifest).
        - `swift test` (or `make test`) runs the unit tests in `Tests/`.
        - `make` also copies the library beside `@NAME@.yaml`; `make dev` loads it in a throwaway node (bind a topic
          to it with `topics.bindings` in a node file to use it beyond the conformance suite).
        - `make conformance` runs `plexus conformance --kind @KIND@` against the built library.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        The tutorial: docs/authoring.md in the Plexus repository.

        """#

    // MARK: - protocol

    static let protocolSource = #"""
        import Dispatch
        import PlexusPluginSDK
        import Synchronization

        #if canImport(Glibc)
            import Glibc
        #elseif canImport(Darwin)
            import Darwin
        #endif

        /// @NAME@: a protocol plugin. A line protocol over TCP: a client connects to `host`:`port` and sends lines;
        /// each line is published to `topic` as one event (its data the line), and once the storage reports it durable
        /// the client gets `ok <offset>` (or `error <text>`).
        ///
        /// Replace the framing with your protocol's and keep the rules the kernel relies on: take the listening socket
        /// from the host (`host.listen`), so a replacing instance keeps the port without refusing a connection, and
        /// never `shutdown` it, only close your descriptor; answer a client only from the publish completion (called
        /// exactly once, on any thread); and in `stop` wake the acceptor and every connection and wait for them, so
        /// nothing of the instance runs after it returns. (The repository's TCP, HTTP and gRPC protocols do the same on
        /// SwiftNIO: `ServerBootstrap.withBoundSocket` on the host's descriptor.)
        public final class @TARGET@: Plugin {
            public static let name = "@NAME@"
            public static let version = "0.1.0"
            public static let kinds: PluginKinds = [.protocolKind]

            struct Settings: Decodable {
                var host = "127.0.0.1"
                var port = 0
                var topic = "events"
                var source = "/@NAME@"

                init() {}

                init(from decoder: any Decoder) throws {
                    let keys = try decoder.container(keyedBy: CodingKeys.self)
                    host = try keys.decodeIfPresent(String.self, forKey: .host) ?? host
                    port = try keys.decodeIfPresent(Int.self, forKey: .port) ?? port
                    topic = try keys.decodeIfPresent(String.self, forKey: .topic) ?? topic
                    source = try keys.decodeIfPresent(String.self, forKey: .source) ?? source
                }

                enum CodingKeys: String, CodingKey { case host, port, topic, source }
            }

            struct State {
                var listener: Int32 = -1
                var wake: (read: Int32, write: Int32) = (-1, -1)
                var connections: Set<Int32> = []
                var stopping = false
            }

            let host: Host
            let settings: Settings
            private let state = Mutex(State())
            /// The acceptor and every connection: `stop` waits for all of them.
            private let running = DispatchGroup()
            let published = Atomic<UInt64>(0)
            private let nextID = Atomic<UInt64>(1)

            public init(host: Host, config: PluginConfig) throws {
                self.host = host
                settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
                guard (0...65535).contains(settings.port), !settings.topic.isEmpty else {
                    throw PluginError.invalidArgument("@NAME@: port is 0 to 65535 and topic must not be empty")
                }
            }

            public func start() throws {
                guard let listener = try host.listen(host: settings.host, port: settings.port) else {
                    throw PluginError(PX_ERR_UNSUPPORTED, "@NAME@: the kernel offers no listening sockets (ABI 1.2)")
                }
                var pipeFDs: [Int32] = [-1, -1]
                guard pipe(&pipeFDs) == 0 else {
                    _ = close(listener)
                    throw PluginError(PX_ERR_RESOURCE_EXHAUSTED, "@NAME@: cannot make a pipe")
                }
                _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
                state.withLock {
                    $0 = State()
                    $0.listener = listener
                    $0.wake = (pipeFDs[0], pipeFDs[1])
                }
                var address = sockaddr_in()
                var size = socklen_t(MemoryLayout<sockaddr_in>.size)
                let named = withUnsafeMutablePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &size) }
                }
                if named == 0 { host.log(.notice, "@NAME@: listening on \(settings.host):\(UInt16(bigEndian: address.sin_port))") }
                let wake = pipeFDs[0]
                running.enter()
                Thread.detach { [self] in
                    accept(listener: listener, wake: wake)
                    running.leave()
                }
            }

            /// Accepts connections until the wake pipe is written, each served on a thread of its own.
            private func accept(listener: Int32, wake: Int32) {
                var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
                while true {
                    if poll(&fds, 2, 1000) < 0 && errno != EINTR { return }
                    if fds[1].revents != 0 { return }
                    guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
                    let connection = Glibc.accept(listener, nil, nil)
                    guard connection >= 0 else { continue }  // another instance took it, or a transient error
                    let admitted = state.withLock { state in
                        guard !state.stopping else { return false }
                        state.connections.insert(connection)
                        return true
                    }
                    guard admitted else {
                        _ = close(connection)
                        continue
                    }
                    running.enter()
                    Thread.detach { [self] in
                        serve(connection)
                        state.withLock { _ = $0.connections.remove(connection) }
                        _ = close(connection)
                        running.leave()
                    }
                }
            }

            /// Reads lines until the client closes (or `stop` shuts the connection down), publishing each.
            private func serve(_ connection: Int32) {
                var framer = LineFramer()
                var chunk = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return }
                    guard let lines = framer.feed(chunk[0..<n]) else {
                        _ = send("error line too long\n", to: connection)
                        return
                    }
                    for line in lines { guard send(publish(line), to: connection) else { return } }
                }
            }

            /// Publishes one line and waits for the completion; returns the answer to send.
            func publish(_ line: [UInt8]) -> String {
                let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
                let event = CloudEvent(
                    id: "@NAME@-\(id)", source: settings.source, type: "@NAME@.line", datacontenttype: "text/plain",
                    data: line)
                let done = DispatchSemaphore(value: 0)
                let result = Mutex<Result<UInt64, PluginError>?>(nil)
                do {
                    try host.publish(topic: settings.topic, [event]) { outcome in
                        result.withLock { $0 = outcome }
                        done.signal()
                    }
                } catch {
                    return "error \(error)\n"
                }
                done.wait()  // the completion is called exactly once
                switch result.withLock({ $0 }) {
                case .success(let offset)?:
                    published.add(1, ordering: .relaxed)
                    return "ok \(offset)\n"
                case .failure(let error)?: return "error \(error.message)\n"
                case nil: return "error no completion\n"
                }
            }

            private func send(_ text: String, to connection: Int32) -> Bool {
                var bytes = Array(text.utf8)[...]
                while !bytes.isEmpty {
                    let n = bytes.withUnsafeBytes { Glibc.send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return false }
                    bytes = bytes.dropFirst(n)
                }
                return true
            }

            public func stop(timeout: Duration) throws {
                let (listener, wake, connections) = state.withLock { state in
                    state.stopping = true
                    return (state.listener, state.wake, state.connections)
                }
                if wake.write >= 0 {
                    var byte: UInt8 = 1
                    _ = write(wake.write, &byte, 1)
                }
                for connection in connections { _ = shutdown(connection, Int32(SHUT_RDWR)) }  // wakes its recv
                running.wait()
                for fd in [listener, wake.read, wake.write] where fd >= 0 { _ = close(fd) }  // our dup: the kernel's socket stays
                state.withLock { $0 = State() }
            }
        }

        /// Splits a byte stream into lines: `\n` ends a line, a `\r` before it is dropped.
        struct LineFramer {
            /// The longest line accepted, without its newline.
            let maxLine: Int
            private var pending: [UInt8] = []

            init(maxLine: Int = 65536) { self.maxLine = maxLine }

            /// The lines `bytes` completes, or `nil` once a line is longer than `maxLine`.
            mutating func feed(_ bytes: ArraySlice<UInt8>) -> [[UInt8]]? {
                pending += bytes
                var lines: [[UInt8]] = []
                while let newline = pending.firstIndex(of: 0x0A) {
                    var line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    if line.last == 0x0D { line.removeLast() }
                    lines.append(line)
                }
                return lines.contains(where: { $0.count > maxLine }) || pending.count > maxLine ? nil : lines
            }
        }

        /// A thread of its own for blocking work (the acceptor, one per connection), without Foundation.
        enum Thread {
            final class Body {
                let run: () -> Void
                init(_ run: @escaping () -> Void) { self.run = run }
            }

            static func detach(_ body: @escaping @Sendable () -> Void) {
                let context = Unmanaged.passRetained(Body(body)).toOpaque()
                var thread = pthread_t()
                let created = pthread_create(&thread, nil, { context in
                    Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
                    return nil
                }, context)
                if created == 0 {
                    pthread_detach(thread)
                } else {
                    Unmanaged<Body>.fromOpaque(context).release()
                    body()
                }
            }
        }

        @_cdecl("px_plugin_entry_v1")
        public func pluginEntry(
            _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
            _ err: UnsafeMutablePointer<px_error>?
        ) -> px_status {
            PluginExport.entry(@TARGET@.self, api, out, err)
        }

        /// Operation `published` (`plexus plugin call @NAME@ published`): how many lines this instance has published.
        @_cdecl("px_op_@IDENT@_published")
        public func publishedOperation(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
            PluginExport.instance(@TARGET@.self, instance)?.published.load(ordering: .relaxed) ?? 0
        }

        """#

    static let protocolTest = #"""
        import Testing

        @testable import @TARGET@

        /// The framing without a kernel; `make conformance` and `plexus dev` exercise the plugin in one.
        @Test func linesSplitAcrossReadsAndCRLF() {
            var framer = LineFramer()
            #expect(framer.feed(Array("one\r\ntw".utf8)[...]) == [Array("one".utf8)])
            #expect(framer.feed(Array("o\n\nthree\n".utf8)[...]) == [Array("two".utf8), [], Array("three".utf8)])
            #expect(framer.feed([][...]) == [])
        }

        @Test func aLineLongerThanTheBoundIsRefused() {
            var framer = LineFramer(maxLine: 4)
            #expect(framer.feed(Array("abcd\n".utf8)[...]) == [Array("abcd".utf8)])
            #expect(framer.feed(Array("abcde".utf8)[...]) == nil)
        }

        """#

    static let protocolManifest = #"""
        # @NAME@: a protocol plugin in Swift (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Publishes every line a TCP client sends as one event and answers with its offset.
        kind: protocol
        library: lib@TARGET@.so
        abi: {major: 1, minor: @ABI_MINOR@}
        toolchain: @TOOLCHAIN@
        requires:
          - {capability: storage, version: ^1.0.0, optional: true}
        config:
          schema:
            host: {type: string, default: 127.0.0.1, description: The address to listen on.}
            port: {type: integer, default: 0, minimum: 0, maximum: 65535, description: "The TCP port (0: a free port, logged)."}
            topic: {type: string, default: events, description: The topic every line is published to.}
            source: {type: string, default: /@NAME@, description: The CloudEvents source of the events.}
          values: {}
        operations:
          - {name: published, symbol: px_op_@IDENT@_published, signature: uint64 (instance)}

        """#

    static let protocolReadme = #"""
        # @NAME@

        A protocol plugin in Swift, scaffolded by `plexus plugin new --kind protocol --lang swift @NAME@`: a line
        protocol over TCP. Every line a client sends is published to `topic` as one event (`type` `@NAME@.line`, the
        line as `text/plain` data); once the storage reports it durable the client gets `ok <offset>` (or
        `error <text>`). Try it: `make dev`, then `nc 127.0.0.1 PORT` with the port the plugin logs.

        | key | default | meaning |
        |---|---|---|
        | `host` | `127.0.0.1` | the address to listen on |
        | `port` | `0` | the TCP port; 0 takes a free one, logged at start |
        | `topic` | `events` | the topic lines are published to |
        | `source` | `/@NAME@` | the events' CloudEvents `source` |

        The rules to keep when you put your own protocol in (on SwiftNIO, say: `ServerBootstrap.withBoundSocket` on
        the host's descriptor, as the repository's TCP, HTTP and gRPC plugins do): take the listening socket from the
        host (`host.listen`), so a replacing instance keeps the port without refusing a connection, and never
        `shutdown` it; answer a client only from the publish completion; in `stop`, wake the acceptor and every
        connection and wait for them.

        - `swift build` builds `.build/debug/lib@TARGET@.so` against the SDK package named in `Package.swift` — its
          only dependency. Build with the toolchain of the kernel that loads it (`toolchain:` in the manifest).
        - `swift test` (or `make test`) runs the unit tests in `Tests/` (the line framing).
        - `make` also copies the library beside `@NAME@.yaml`; `make dev` loads it in a throwaway node.
        - `make conformance` runs `plexus conformance --kind @KIND@` against the built library.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        The tutorial: docs/authoring.md in the Plexus repository.

        """#
}
