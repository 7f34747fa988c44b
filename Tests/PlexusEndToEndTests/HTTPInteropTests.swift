import Foundation
import PlexusCore
import Testing

/// The HTTP protocol plugin against clients this project did not write: the CloudEvents Python SDK (PyPI
/// `cloudevents`, installed into `.build/interop-venv` by `scripts/interop-deps`) and curl, running the
/// examples of the plugin's README.
@Suite("HTTP interop", .serialized, .timeLimit(.minutes(5)))
struct HTTPInteropTests {
    /// The interpreter of the interop virtual environment, installing it first if needed (idempotent).
    static func python(in directory: URL) async throws -> URL {
        let deps = try await Command.run(
            Repository.root.appendingPathComponent("scripts/interop-deps"), [], in: directory, timeout: .seconds(300))
        try #require(deps.status == 0, "scripts/interop-deps failed:\n\(deps.stdout)\(deps.stderr)")
        return Repository.root.appendingPathComponent(".build/interop-venv/bin/python")
    }

    @Test("the CloudEvents Python SDK publishes binary and structured events and receives webhooks unchanged")
    func pythonSDK() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let python = try await Self.python(in: directory.url)
        let (node, port, tcp) = try await HTTPProtocolTests.node(in: directory)
        defer { node.kill() }
        let script = Repository.root.appendingPathComponent("Tests/Interop/http/cloudevents_sdk.py")
        let run = try await Command.run(python, [script.path, String(port), "interop"], in: directory.url)
        #expect(run.status == 0, "the SDK's checks failed:\n\(run.stderr)")

        // What the SDK published is in storage as it sent it: the data's bytes, every attribute it set.
        let published = run.stdout.split(separator: "\n").compactMap { line -> (String, [UInt8])? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String],
                let id = object["id"], let data = object["data"].flatMap({ Data(base64Encoded: $0) })
            else { return nil }
            return (id, Array(data))
        }
        #expect(published.count == 5, "\(run.stdout)")
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "interop", count: published.count)
        let byID = Dictionary(stored.values.map { ($0.event.id, $0.event) }) { first, _ in first }
        for (id, data) in published {
            let event = try #require(byID[id], "\(id) is not in storage")
            #expect(event.data == data, "\(id): the stored data differs from what the SDK sent")
            #expect(event.time == "2026-11-25T10:00:01.500000Z", "\(id): \(event.time ?? "no time")")
        }
        #expect(byID["py-binary-json"]?.subject == "ümlaut \"quoted\" 100%")
        #expect(byID["py-binary-json"]?.attribute("pyext") == "value with spaces")
        #expect(byID["py-structured-json"]?.attribute("traceparent")?.hasPrefix("00-0af7") == true)
    }

    @Test("the README's curl examples give the answers the README shows")
    func readmeExamples() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await HTTPProtocolTests.node(in: directory)
        defer { node.kill() }
        let sink = try await TestSink.start()
        defer { sink.stop() }
        let readme = try String(
            contentsOf: Repository.root.appendingPathComponent("Plugins/HTTPProtocol/README.md"), encoding: .utf8)
        let examples = Self.examples(in: readme)
        #expect(examples.count >= 6, "the README has its examples")
        for (script, expected) in examples {
            let command = script.replacingOccurrences(of: "127.0.0.1:10105", with: "127.0.0.1:\(port)")
                .replacingOccurrences(of: "http://127.0.0.1:8080", with: sink.url)
            let result = try await Command.run(
                URL(fileURLWithPath: "/usr/bin/env"), ["bash", "-euo", "pipefail", "-c", command], in: directory.url)
            #expect(result.status == 0, "\(script)\n\(result.stderr)")
            // Split on bytes: "\r\n" is one Character, which splitting the String on "\n" would miss.
            let lines = Array(result.stdout.utf8).split(separator: 10, omittingEmptySubsequences: false).map {
                String(decoding: $0.last == 13 ? $0.dropLast() : $0, as: UTF8.self)
            }
            // Each shown line appears in the output, in order; "…" stands for anything after it.
            var next = 0
            for line in expected where !line.isEmpty {
                let found = lines[next...].firstIndex { output in
                    if let ellipsis = line.firstIndex(of: "…") { return output.hasPrefix(line[..<ellipsis]) }
                    return output == line
                }
                #expect(found != nil, "'\(line)' not in the output of\n\(script)\n---\n\(result.stdout)")
                if let found { next = found + 1 }
            }
        }
    }

    /// Each ```sh block followed by a ```text block: the script and the lines it should print.
    static func examples(in markdown: String) -> [(script: String, expected: [String])] {
        var blocks: [(kind: String, body: [String])] = []
        var current: (kind: String, body: [String])?
        for line in markdown.components(separatedBy: "\n") {
            if line.hasPrefix("```") {
                if let block = current {
                    blocks.append(block)
                    current = nil
                } else {
                    current = (String(line.dropFirst(3)), [])
                }
            } else if current != nil {
                current?.body.append(line)
            } else if !line.trimmingCharacters(in: .whitespaces).isEmpty {
                blocks.append(("prose", []))
            }
        }
        var examples: [(String, [String])] = []
        for (i, block) in blocks.enumerated() where block.kind == "sh" && i + 1 < blocks.count {
            if blocks[i + 1].kind == "text" {
                examples.append((block.body.joined(separator: "\n"), blocks[i + 1].body))
            }
        }
        return examples
    }
}
