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
            event's offset (TOPIC@OFFSET) once the node reports it durable, one event at a time.

            A refused event is reported on standard error and the next one is sent. A lost connection stops \
            at once with a summary on standard error (how many events were acknowledged, which one was in \
            flight, that the rest was not sent) and exit status 2, unless --retry is given: then the client \
            reconnects with backoff (100 ms doubling to 2 s) and sends the unacknowledged event again, with \
            the same id. Delivery is then at least once: an event in flight when the connection broke may have \
            been stored already and is stored a second time.

            Exit status: 0 every event acknowledged; 1 some refused by the node; 2 stopped on a lost \
            connection (or --retry-for ran out).
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

    @Flag(
        name: .long,
        help:
            "On a lost connection (or an unavailable node), reconnect with backoff and resend the unacknowledged event: at-least-once."
    )
    var retry = false

    @Option(
        name: .long,
        help:
            "With --retry: give up (exit 2) after the node has been unreachable this long, e.g. 30s, 5m (default: never)."
    )
    var retryFor: String?

    @OptionGroup var server: ServerOptions

    func validate() throws {
        if data != nil, file != nil { throw ValidationError("give --data or --file, not both") }
        if topic.isEmpty { throw ValidationError("the topic is empty") }
        if retryFor != nil, !retry { throw ValidationError("--retry-for applies only with --retry") }
        if let retryFor { _ = try CLIDuration.parse(retryFor, option: "--retry-for") }
    }

    func event(_ bytes: [UInt8]) -> CloudEvent {
        CloudEvent(
            id: id ?? UUID().uuidString.lowercased(), source: source, type: type, datacontenttype: contentType,
            time: ISO8601DateFormatter().string(from: Date()), extensions: key.map { [("partitionkey", $0)] } ?? [],
            data: bytes)
    }

    /// Whether `error` means the connection, not the event, is the trouble; with --retry, also a refusal that
    /// says to try again (unavailable, resource exhausted).
    static func isConnectionTrouble(_ error: any Error, retrying: Bool) -> Bool {
        guard let error = error as? PlexusClientError else { return false }
        switch error.code {
        case .notConnected, .connectionLost, .closed, .timeout: return true
        case .refused: return retrying && (error.status == 7 || error.status == 8)
        case .invalidArgument: return false
        }
    }

    func run() async throws {
        let window = try retryFor.map { try CLIDuration.parse($0, option: "--retry-for") }
        var config = try server.configuration(name: "plexus-pub")
        config.reconnect = retry
        config.reconnectMaxDelay = .seconds(2)
        var progress = PublishProgress(server: server.server, retry: retry)
        let client: PlexusClient
        do {
            client = try await progress.connect(config, window: window)
        } catch {
            progress.stop(because: "\(error)")
            throw ExitCode(2)
        }
        func publish(_ bytes: [UInt8]) async -> Bool {
            let outgoing = self.event(bytes)
            var unreachableSince: ContinuousClock.Instant?
            var delay = Duration.milliseconds(100)
            while true {
                do {
                    let offset = try await client.publish(topic: topic, outgoing)
                    // Straight to the descriptor, unbuffered: a reader of a pipe sees each acknowledgement at once.
                    FileHandle.standardOutput.write(Data("\(topic)@\(offset)\n".utf8))
                    progress.acknowledged += 1
                    return true
                } catch  where Self.isConnectionTrouble(error, retrying: retry) {
                    guard retry else {
                        progress.inFlight = outgoing.id
                        progress.stop(because: "\(error)")
                        return false
                    }
                    let since = unreachableSince ?? .now
                    unreachableSince = since
                    if let window, ContinuousClock.now - since >= window {
                        progress.inFlight = outgoing.id
                        progress.stop(because: "\(error); still failing after --retry-for \(window)")
                        return false
                    }
                    progress.retries += 1
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(2))
                } catch {
                    FileHandle.standardError.write(Data("plexus pub: event \(outgoing.id) refused: \(error)\n".utf8))
                    progress.refused += 1
                    return true
                }
            }
        }
        if let data {
            _ = await publish(Array(data.utf8))
        } else if let file {
            guard let bytes = FileManager.default.contents(atPath: file) else {
                await client.close()
                throw ValidationError("cannot read --file \(file)")
            }
            _ = await publish(Array(bytes))
        } else {
            while let line = readLine(strippingNewline: true) {
                guard await publish(Array(line.utf8)) else { break }
            }
        }
        await client.close()
        if progress.stopped { throw ExitCode(2) }
        if progress.refused > 0 {
            progress.summarize()
            throw ExitCode.failure
        }
        if progress.retries > 0 { progress.summarize() }
    }
}

/// What `plexus pub` has done so far, and the summary it prints when it stops or something went wrong.
struct PublishProgress {
    var server: String
    var retry: Bool
    var acknowledged = 0
    var refused = 0
    var retries = 0
    /// The id of the event that was sent but not acknowledged when the connection was lost.
    var inFlight: String?
    var stopped = false

    /// Connects; with --retry, keeps trying with backoff (within `window`) while the node is unreachable.
    mutating func connect(_ config: ClientConfiguration, window: Duration?) async throws -> PlexusClient {
        let start = ContinuousClock.now
        var delay = Duration.milliseconds(100)
        while true {
            do {
                return try await PlexusClient.connect(config)
            } catch  where retry && Pub.isConnectionTrouble(error, retrying: true) {
                if let window, ContinuousClock.now - start >= window { throw error }
                retries += 1
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// Stops publishing: prints the reason and the summary once.
    mutating func stop(because reason: String) {
        stopped = true
        FileHandle.standardError.write(Data("plexus pub: stopped: \(server): \(reason)\n".utf8))
        summarize()
    }

    /// One line: acknowledged, refused, in flight, not sent.
    func summarize() {
        var parts = ["\(acknowledged) acknowledged"]
        if refused > 0 { parts.append("\(refused) refused") }
        if let inFlight {
            parts.append("1 not acknowledged (id \(inFlight): it may or may not have been stored)")
        }
        if stopped { parts.append("the rest of the input not sent") }
        if retries > 0 { parts.append("\(retries) retries after connection trouble") }
        FileHandle.standardError.write(Data("plexus pub: \(parts.joined(separator: ", "))\n".utf8))
    }
}

/// A duration given on the command line: a number with a unit, `ms`, `s`, `m` or `h` (`500ms`, `2s`, `1.5m`);
/// a bare number is seconds.
enum CLIDuration {
    static func parse(_ text: String, option: String) throws -> Duration {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let (number, scale) =
            units.first { trimmed.hasSuffix($0.0) }.map { (String(trimmed.dropLast($0.0.count)), $0.1) } ?? (trimmed, 1)
        guard let value = Double(number), value.isFinite, value >= 0 else {
            throw ValidationError("\(option): '\(text)' is not a duration such as 500ms, 2s, 5m or 1h")
        }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }
}

struct Sub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribe to a topic over the TCP protocol; print each event as a line of CloudEvents JSON.",
        discussion: """
            Each line is the event in the CloudEvents JSON format plus "topic", "offset" and "attempt" members. \
            Every event is acknowledged once printed.

            Without --count and --timeout it runs until interrupted. --count N exits 0 after N events; with \
            --timeout as well, it exits 1 with a message when fewer than N arrived in time (those that did are \
            printed). --timeout alone stops after the duration and exits 0. Without --timeout, --count waits \
            as long as it takes.

            --from says where a group with no committed offset starts. A group that has committed an offset \
            (a named --group that consumed before) resumes after it, whatever --from says; the command warns \
            when --from is given with --group. Move a group's offset with `plexus group reset`.
            """)

    @Argument(help: "The topic.")
    var topic: String

    @Option(name: .long, help: "The consumer group (default: a group of its own).")
    var group: String = ""

    @Option(
        name: .long,
        help: "Where a group without a committed offset starts: earliest, latest or an offset (default: latest).")
    var from: String?

    @Option(name: .long, help: "Exit after this many events.")
    var count: Int?

    @Option(
        name: .long,
        help: "Stop after this long, e.g. 2s, 500ms, 1m; with --count, exit 1 when fewer events arrived by then.")
    var timeout: String?

    @Option(name: .long, help: "Exact-match filter NAME=VALUE on an attribute or extension (repeatable).")
    var filter: [String] = []

    @OptionGroup var server: ServerOptions

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let timeout { _ = try CLIDuration.parse(timeout, option: "--timeout") }
    }

    /// The warning printed when --from is given with a named group: the server does not say whether the group
    /// already had a committed offset, so the command says when --from applies.
    static func fromWarning(from: String, group: String, topic: String) -> String {
        """
        plexus sub: note: --from \(from) applies only if group '\(group)' has no committed offset on '\(topic)'; \
        if it has one (it consumed before), delivery resumes after it and --from \(from) does not apply \
        (move it with `plexus group reset`)
        """
    }

    func run() async throws {
        var options = SubscribeOptions(group: group)
        let start = from ?? "latest"
        switch start {
        case "earliest": options.start = .earliest
        case "latest": options.start = .latest
        default:
            guard let offset = UInt64(start) else {
                throw ValidationError("--from: '\(start)' is not earliest, latest or an offset")
            }
            options.start = .offset(offset)
        }
        for f in filter {
            guard let eq = f.firstIndex(of: "="), eq != f.startIndex else {
                throw ValidationError("--filter: '\(f)' is not NAME=VALUE")
            }
            options.filters.append((String(f[..<eq]), String(f[f.index(after: eq)...])))
        }
        let limit = try timeout.map { try CLIDuration.parse($0, option: "--timeout") }
        var config = try server.configuration(name: "plexus-sub")
        config.reconnect = true
        let client = try await PlexusClient.connect(config)
        let stream = try await client.subscribe(topic: topic, options: options)
        FileHandle.standardError.write(Data("plexus sub: subscribed to \(topic)\n".utf8))
        if let from, !group.isEmpty {
            FileHandle.standardError.write(Data((Self.fromWarning(from: from, group: group, topic: topic) + "\n").utf8))
        }
        let count = self.count
        let topic = self.topic
        let seen = await withTaskGroup(of: Int?.self) { tasks in
            tasks.addTask {
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
                return seen
            }
            if let limit {
                tasks.addTask {
                    try? await Task.sleep(for: limit)
                    return nil
                }
            }
            var result = 0
            while let next = await tasks.next() {
                if let printed = next {
                    result = printed
                    break
                }
                // The time is up: end the subscription loop, which then reports what it printed.
                tasks.cancelAll()
            }
            tasks.cancelAll()
            return result
        }
        await client.close()
        if let count, seen < count {
            let why = limit.map { "within --timeout \($0)" } ?? "before the subscription ended"
            FileHandle.standardError.write(
                Data("plexus sub: \(seen) of \(count) events arrived on \(topic) \(why)\n".utf8))
            throw ExitCode.failure
        }
    }
}
