import ArgumentParser
import Foundation
import PlexusKernel

/// `plexus cluster status`: the nodes of the cluster as a running node sees them through its registry, their
/// health, and which node leads each replicated stream (docs/operations.md, "Clusters").
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Show the cluster a node belongs to.", subcommands: [Status.self])

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the registered nodes, their health and addresses, and each replicated stream's leader.")
        @OptionGroup var options: AdminCall

        func run() throws {
            let body = try options.call("GET", "/v1/cluster")
            if options.json { return print(body) }
            let report = try AdminCall.decode(ClusterStatusReport.self, body)
            for problem in report.problems { FileHandle.standardError.write(Data("plexus: \(problem)\n".utf8)) }
            print(
                Table(columns: ["NODE", "HEALTH", "ADMIN", "LEADS", "PROTOCOLS", "STORAGE"]).render(
                    rows: report.nodes.map { node in
                        [
                            node.id, node.health, node.admin.isEmpty ? "-" : node.admin, String(node.leads),
                            node.protocols.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                                .joined(separator: " "),
                            node.storages.joined(separator: ","),
                        ]
                    }))
            guard !report.streams.isEmpty else { return }
            print("")
            print(
                Table(columns: ["STREAM", "LEADER", "VOTERS"]).render(
                    rows: report.streams.map {
                        [$0.stream, $0.leader.isEmpty ? "-" : $0.leader, $0.voters.joined(separator: ",")]
                    }
                ))
        }
    }
}
