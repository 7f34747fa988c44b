import PlexusPluginSDK

// The manifest's operations (plugin-manifests/ledger-storage.yaml): C entry points the kernel calls with the
// instance pointer, from any thread while the instance exists; they read counters and never block.

/// Operation `journal-syncs`: fdatasyncs of the journal that completed records (group commits).
@_cdecl("px_op_ledger_storage_journal_syncs")
public func ledgerStorageJournalSyncs(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(LedgerStorage.self, instance)?.context.bookie.journalStatistics.syncs ?? 0
}

/// Operation `journal-records`: records the journal made durable.
@_cdecl("px_op_ledger_storage_journal_records")
public func ledgerStorageJournalRecords(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(LedgerStorage.self, instance)?.context.bookie.journalStatistics.records ?? 0
}

/// Operation `journal-bytes`: bytes written to the journal.
@_cdecl("px_op_ledger_storage_journal_bytes")
public func ledgerStorageJournalBytes(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(LedgerStorage.self, instance)?.context.bookie.journalStatistics.bytes ?? 0
}

/// Operation `bookie-port`: the port this node's bookie serves other nodes on (0: it serves none).
@_cdecl("px_op_ledger_storage_bookie_port")
public func ledgerStorageBookiePort(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(LedgerStorage.self, instance)?.context.server?.port ?? 0)
}
