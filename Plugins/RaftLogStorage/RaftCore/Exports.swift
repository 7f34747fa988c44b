// The shared file helpers and CRC-32C moved to StorageIO; everything that imports RaftCore keeps seeing them.
@_exported import StorageIO
