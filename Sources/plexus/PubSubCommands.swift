import ArgumentParser
import Foundation
import PlexusClient
import PlexusCore

/// Where the TCP protocol plugin listens, and how to authenticate.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The node's TCP protocol endpoint, HOST:PORT.")
    var server: String = "127.0.0.1:10000"

    @Option(name: .long, help: "The token the server requires, if any.")
    var token: String = ""

    func configuration(name: String) throws -> ClientConfiguration {
        var config = ClientConfiguration(name: name, token: token, reconnect: false)
        do {
            try config.setAddress(server)
        } catch {
            throw ValidationError("--server: \(error)")
        }
        return config
    }
}

struct Pub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish events to a topic over the TCP protocol.",
        discussion: """
            The data comes from --data, from --file, or else one event per line of standard input. Prints each \
            event's offset once the node reports it durable.
            """)

    @Argument(help: "The topic.")
    var topic: String

    @Option(name: .long, help: "The event's data.")
    var data: String?

    @Option(name: .long, help: "A file whose bytes are the event's data.")
    var file: String?

    @Option(name: .long, help: "The CloudEvents type attribute.")
    var type: String = "plexus.cli"

    @Option(name: .long, help: "The CloudEvents source attribute.")
    var source: String = "/plexus/cli"

    @Option(name: .long, help: "The partition key (the partitionkey extension): same key, same order.")
    var key: String?

    @Option(name: .long, help: "The datacontenttype attribute.")
    var contentType: String = "text/plain"

    @Option(name: .long, help: "The CloudEvents id (default: a new UUID per event).")
    var id: String?

    @OptionGroup var server: ServerOptions

    func validate() throws {
        if data != nil, file != nil { throw ValidationError("give --data or --file, not both") }
        if topic.isEmpty { throw ValidationError("the topic is empty") }
    }

    func event(_ bytes: [UInt8]) -> CloudEvent {
        CloudEvent(
            id: id ?? UUID().uuidString.lowercased(), source: source, type: type, datacontenttype: contentType,
            time: ISO8601DateFormatter().string(from: Date()), extensions: key.map { [("partitionkey", $0)] } ?? [],
            data: bytes)
    }

    func run() async throws {
        let client = try await PlexusClient.connect(try server.configuration(name: "plexus-pub"))
        var failed = false
        func publish(_ bytes: [UInt8]) async {
            do {
                let offset = try await client.publish(topic: topic, event(bytes))
                print("\(topic)@\(offset)")
            } catch {
                FileHandle.standardError.write(Data("plexus pub: \(error)\n".utf8))
                failed = true
            }
        }
        if let data {
            await publish(Array(data.utf8))
        } else if let file {
            guard let bytes = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read --file \(file)")
            }
            await publish(Array(bytes))
        } else {
            while let line = readLine(strippingNewline: true) { await publish(Array(line.utf8)) }
        }
        await client.close()
        if failed { throw ExitCode.failure }
    }
}

struct Sub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribe to a topic over the TCP protocol; print each event as a line of CloudEvents JSON.",
        discussion: """
            Each line is the event in the CloudEvents JSON format plus "topic", "offset" and "attempt" members. \
            Every event is acknowledged once printed.
            """)

    @Argument(help: "The topic.")
    var topic: String

    @Option(name: .long, help: "The consumer group (default: a group of its own).")
    var group: String = ""

    @Option(name: .long, help: "Where a new group starts: earliest, latest or an offset.")
    var from: String = "latest"

    @Option(name: .long, help: "Exit after this many events.")
    var count: Int?

    @Option(name: .long, help: "Exact-match filter NAME=VALUE on an attribute or extension (repeatable).")
    var filter: [String] = []

    @OptionGroup var server: ServerOptions

    func run() async throws {
        var options = SubscribeOptions(group: group)
        switch from {
        case "earliest": options.start = .earliest
        case "latest": options.start = .latest
        default:
            guard let offset = UInt64(from) else {
                throw ValidationError("--from: '\(from)' is not earliest, latest or an offset")
            }
            options.start = .offset(offset)
        }
        for f in filter {
            guard let eq = f.firstIndex(of: "="), eq != f.startIndex else {
                throw ValidationError("--filter: '\(f)' is not NAME=VALUE")
            }
            options.filters.append((String(f[..<eq]), String(f[f.index(after: eq)...])))
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        var config = try server.configuration(name: "plexus-sub")
        config.reconnect = true
        let client = try await PlexusClient.connect(config)
        let stream = try await client.subscribe(topic: topic, options: options)
        FileHandle.standardError.write(Data("plexus sub: subscribed to \(topic)\n".utf8))
        var seen = 0
        for await received in stream {
            let line = CloudEventJSON.encode(
                received.event,
                fields: [
                    ("topic", CloudEventJSON.quote(received.topic)), ("offset", "\(received.offset)"),
                    ("attempt", "\(received.attempt)"),
                ])
            // Written straight to the descriptor, unbuffered, so a reader of a pipe sees each event at once.
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
            received.ack()
            seen += 1
            if let count, seen >= count { break }
        }
        await client.close()
    }
}
