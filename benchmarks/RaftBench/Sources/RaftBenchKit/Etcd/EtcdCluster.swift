import Foundation

/// A three-member etcd cluster on 127.0.0.1, each member with its own data directory, every setting at etcd's
/// default apart from names, addresses and directories (so the WAL is fsynced before an entry counts toward
/// the quorum, etcd's only mode).
public final class EtcdCluster: Sendable {
    /// One member: its client and peer ports and its process.
    public struct Member: Sendable {
        public var name: String
        public var clientPort: Int
        public var peerPort: Int
        public var process: ServerProcess
    }

    public let members: [Member]

    private init(members: [Member]) { self.members = members }

    /// Starts `count` members with data directories under `directory` and waits until they have a leader.
    ///
    /// - Parameter executable: The `etcd` binary (a path, or a name on `PATH`).
    /// - Throws: ``HarnessError`` (with the member's log) when a member does not start or no leader is elected
    ///   within `timeout`; the members already started are stopped.
    public static func start(
        executable: String = "etcd", directory: String, count: Int = 3, timeout: Duration = .seconds(30)
    ) async throws -> EtcdCluster {
        let ports = try Loopback.freePorts(2 * count)
        let names = (1...count).map { "etcd-\($0)" }
        let initialCluster = names.indices.map { "\(names[$0])=http://127.0.0.1:\(ports[count + $0])" }
            .joined(separator: ",")
        let token = "plexus-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var members: [Member] = []
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (index, name) in names.enumerated() {
                let client = "http://127.0.0.1:\(ports[index])"
                let peer = "http://127.0.0.1:\(ports[count + index])"
                let process = try ServerProcess(
                    name: name, executable: executable,
                    arguments: [
                        "--name", name, "--data-dir", "\(directory)/\(name)",
                        "--listen-client-urls", client, "--advertise-client-urls", client,
                        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
                        "--initial-cluster-token", token,
                    ],
                    logPath: "\(directory)/\(name).log")
                members.append(
                    Member(name: name, clientPort: ports[index], peerPort: ports[count + index], process: process))
            }
            for member in members {
                try await Loopback.waitUntilListening(member.process, port: member.clientPort, timeout: timeout)
            }
            let cluster = EtcdCluster(members: members)
            _ = try await cluster.leader(timeout: timeout)
            return cluster
        } catch {
            for member in members { member.process.stop() }
            throw error
        }
    }

    /// The member that leads, asked of every member through `Maintenance/Status` until one says it leads.
    ///
    /// - Throws: ``HarnessError`` when no member leads within `timeout`.
    public func leader(timeout: Duration = .seconds(30)) async throws -> (member: Member, status: EtcdStatusResponse) {
        let deadline = ContinuousClock.now + timeout
        var last = "no answer yet"
        while ContinuousClock.now < deadline {
            for member in members {
                if member.process.hasExited {
                    throw HarnessError("\(member.name) exited; \(member.process.logPath):\n\(member.process.logTail())")
                }
                do {
                    let status = try await Self.status(of: member)
                    if status.isLeader { return (member, status) }
                    last = "\(member.name): leader \(String(status.leader, radix: 16))"
                } catch {
                    last = "\(member.name): \(error)"
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("the etcd cluster has no leader after \(timeout) (\(last))")
    }

    /// One member's `Maintenance/Status`, over a connection of its own.
    static func status(of member: Member) async throws -> EtcdStatusResponse {
        let client = try EtcdClient(host: Loopback.host, port: member.clientPort)
        do {
            let status = try await client.status()
            await client.close()
            return status
        } catch {
            await client.close()
            throw error
        }
    }

    /// Stops every member (SIGTERM, then SIGKILL after 10 s).
    public func stop() {
        for member in members { member.process.stop() }
    }
}
