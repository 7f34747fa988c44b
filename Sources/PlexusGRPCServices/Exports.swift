// The generated services (Generated/, from protos/ by scripts/gen-protos) use the messages of PlexusProtos.
@_exported import PlexusProtos
