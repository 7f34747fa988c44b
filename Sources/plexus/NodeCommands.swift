import ArgumentParser
import Foundation
import PlexusKernel

extension PluginCommand {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one plugin of a running node: state, health, error, files, operations, deployment.")

        @OptionGroup var options: AdminOptions
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        @Argument(help: "The plugin's name.") var name: String

        func run() throws {
            let (status, body) = try options.client().request(
                "GET", "/v1/plugins/\(AdminClient.escape(name))")
            guard status == 200 else { throw AdminClient.Failure(status: status, body: body) }
            if json {
                print(body)
                return
            }
            let p = try JSONDecoder().decode(PluginStatus.self, from: Data(body.utf8))
            var fields: [(String, String)] = [
                ("name", p.name), ("state", p.state.rawValue), ("version", p.version),
                ("kinds", p.kinds.joined(separator: ",")), ("health", p.health ?? "-"),
                ("last error", p.lastError.map { "\($0) [\(p.errorCode ?? "")]" } ?? "-"), ("manifest", p.manifest),
                ("library", p.library ?? "-"), ("sha256", p.sha256 ?? "-"),
            ]
            if let deployment = p.deployment { fields.append(("deployment", deployment)) }
            if let previous = p.previousVersion { fields.append(("previous version", previous)) }
            for op in p.operations { fields.append(("operation", "\(op.name): \(op.signature) — \(op.description)")) }
            let width = fields.map(\.0.count).max() ?? 0
            for (key, value) in fields { print(Table.cut(key, to: width) + Table.separator + Table.singleLine(value)) }
        }
    }
}

/// Liveness of a running node (`GET /v1/health`).
struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running node whether it is up (the admin endpoint's /v1/health); exits 1 when not.")

    @OptionGroup var options: PluginCommand.AdminOptions
    @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false

    func run() throws {
        struct Answer: Decodable {
            var status: String
            var node: String
        }
        let (status, body) = try options.client().request("GET", "/v1/health")
        if json {
            print(body)
        } else if status == 200, let answer = try? JSONDecoder().decode(Answer.self, from: Data(body.utf8)) {
            print("\(answer.node): \(answer.status)")
        } else {
            throw AdminClient.Failure(status: status, body: body)
        }
        if status != 200 { throw ExitCode.failure }
    }
}

/// Readiness of a running node (`GET /v1/ready`).
struct Ready: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Ask a running node whether it is ready (the admin endpoint's /v1/ready); prints why not and exits 1 when not."
    )

    @OptionGroup var options: PluginCommand.AdminOptions
    @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false

    func run() throws {
        struct Answer: Decodable {
            var status: String
            var node: String
            var reasons: [String]
        }
        let (status, body) = try options.client().request("GET", "/v1/ready")
        if json {
            print(body)
        } else if status == 200 || status == 503,
            let answer = try? JSONDecoder().decode(Answer.self, from: Data(body.utf8))
        {
            print("\(answer.node): \(answer.status)")
            for reason in answer.reasons { print("  " + Table.singleLine(reason)) }
        } else {
            throw AdminClient.Failure(status: status, body: body)
        }
        if status != 200 { throw ExitCode.failure }
    }
}
