import NIOCore
import NIOPosix
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// The listening channel of a protocol plugin: on the kernel's socket when the kernel offers one
/// (`Host.listen`, ABI 1.2), so that replacing the plugin on a running node refuses no connection; on a socket
/// of the plugin's own otherwise.
/// - Parameters:
///   - backlog: the accept queue; the bootstrap should set the same with `.serverChannelOption(.backlog, …)`.
/// - Throws: what binding throws (an address in use, a bad port), as the kernel or SwiftNIO says it.
public func bindListener(
    _ bootstrap: ServerBootstrap, host: Host, address: String, port: Int, backlog: Int32
) throws -> any Channel {
    guard let fd = try host.listen(host: address, port: port, backlog: Int(backlog)) else {
        return try bootstrap.bind(host: address, port: port).wait()
    }
    let listener = try bootstrap.withBoundSocket(fd).wait()
    // SwiftNIO listens again on a socket it is given, with its default backlog (128), which would shrink the
    // kernel's shared socket; set ours back.
    _ = Glibc.listen(fd, backlog)
    return listener
}
