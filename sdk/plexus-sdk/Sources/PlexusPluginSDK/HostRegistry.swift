import PlexusABI

/// The node's service registry as host services (`px_host_api`: `registry_register`, `registry_lookup`).
/// Each completion is called exactly once, on any thread; a thrown error (the kernel refused the call outright,
/// `PX_ERR_UNAVAILABLE` when the node has no registry) means it is never called.
extension Host {
    /// Registers an instance; with `ttlMilliseconds` > 0 the kernel renews it (ABI 1.4) until the plugin stops.
    public func registryRegister(
        _ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        typealias Completion = Box<@Sendable (Result<Void, PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let laidOut = CServiceInstances([instance])
        let (status, message) = withExtendedLifetime(laidOut) {
            Self.errorBuffer { err in
                api.pointee.registry_register(
                    handle, laidOut.instance(at: 0),
                    { user, status, error in
                        guard let user else { return }
                        let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                        box.value(
                            status == PX_OK.status ? .success(()) : .failure(PluginError(status: status, error.string)))
                    }, box, err)
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// The live instances of a service.
    public func registryLookup(
        service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
    ) throws {
        typealias Completion = Box<@Sendable (Result<[ServiceInstance], PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let (status, message) = withPXStr(service) { serviceStr in
            Self.errorBuffer { err in
                api.pointee.registry_lookup(
                    handle, serviceStr,
                    { user, status, instances, count, error in
                        guard let user else { return }
                        let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                        guard status == PX_OK.status else {
                            return box.value(.failure(PluginError(status: status, error.string)))
                        }
                        var found: [ServiceInstance] = []
                        for index in 0..<count {
                            if let instance = instances?[index], let copy = try? ServiceInstance(copying: instance) {
                                found.append(copy)
                            }
                        }
                        box.value(.success(found))
                    }, box, err)
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }
}
