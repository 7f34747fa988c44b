// The shared file helpers and CRC-32C moved to StorageIO; everything that imports RaftCore keeps seeing them.
@_exported import StorageIO

/// The module's storage helpers come from StorageIO. (A function of its own gives this file's object code, so that
/// the instrumented fuzz build's check that every object carries coverage finds some here.)
@inline(never)
func storageHelpersModule() -> String { "StorageIO" }
