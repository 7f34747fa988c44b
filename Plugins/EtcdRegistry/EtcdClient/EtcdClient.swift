import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf

/// A client of etcd's v3 API for what the registry needs: reads and version-conditioned writes of keys,
/// leases, and resumable prefix watches (`watch(prefix:from:handler:)`).
///
/// Every call goes to the endpoint in use and fails over to the next on a connection failure (see
/// `EtcdConnection`). Reads and unconditional writes are retried on the next endpoint; a conditional write is
/// made again only when a read shows it was not applied (its outcome would otherwise be unknown).
///
/// - Important: Thread-safe; every method may be called concurrently.
public final class EtcdClient: Sendable {
    let connection: EtcdConnection

    /// - Throws: `EtcdError` (`.invalidConfiguration`) when the configuration is unusable.
    public init(_ configuration: EtcdConfiguration) throws {
        connection = try EtcdConnection(configuration)
    }

    public var configuration: EtcdConfiguration { connection.configuration }

    /// Closes every connection; calls and watches in flight end.
    public func close() async { await connection.close() }

    // MARK: Reads

    /// The key, or nil when absent, and the store's revision the read saw.
    /// - Parameter revision: the revision to read at; 0 for the newest.
    public func get(_ key: [UInt8], revision: Int64 = 0) async throws -> (EtcdKeyValue?, revision: Int64) {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key)
        request.revision = revision
        let response = try await range(request, "Range \(Self.show(key))")
        return (response.kvs.first.map(Self.keyValue), response.header.revision)
    }

    /// Every key under `prefix` in byte order, read in pages at one revision, and that revision.
    /// - Parameter revision: the revision to read at; 0 for the newest.
    /// - Throws: `EtcdError` (`.compacted`) when `revision` is older than etcd's history.
    public func list(prefix: [UInt8], revision: Int64 = 0, pageSize: Int64 = 500) async throws -> (
        [EtcdKeyValue], revision: Int64
    ) {
        try await Self.list(connection, prefix: prefix, revision: revision, pageSize: pageSize)
    }

    private func range(_ request: Etcdserverpb_RangeRequest, _ operation: String) async throws
        -> Etcdserverpb_RangeResponse
    {
        try await connection.unary(operation) { client, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: client).range(request, metadata: metadata, options: options)
        }
    }

    // MARK: Writes

    /// Puts `value` at `key` (attached to `lease` when non-zero) if the key's version meets `condition`.
    /// - Returns: `.written` with the key's new version and the change's revision, or `.conflict` with its
    ///   current version.
    public func put(_ key: [UInt8], _ value: [UInt8], lease: Int64 = 0, if condition: EtcdVersionCondition = .any)
        async throws -> EtcdWriteResult
    {
        var put = Etcdserverpb_PutRequest()
        put.key = Data(key)
        put.value = Data(value)
        put.lease = lease
        put.prevKv = true
        var op = Etcdserverpb_RequestOp()
        op.requestPut = put
        let response = try await txn(key, condition, success: op, "Put \(Self.show(key))")
        guard response.succeeded else { return try Self.conflict(response, key: key) }
        guard case .responsePut(let reply)? = response.responses.first?.response else {
            throw EtcdError(.invalidResponse, operation: "Put \(Self.show(key))", "the txn answered without a put")
        }
        let version = reply.hasPrevKv ? reply.prevKv.version + 1 : 1
        return .written(version: version, revision: response.header.revision)
    }

    /// Deletes `key` if its version meets `condition`.
    /// - Returns: `.written(version: 0, …)`, `.conflict`, or `.absent` when there was no key to delete.
    public func delete(_ key: [UInt8], if condition: EtcdVersionCondition = .any) async throws -> EtcdWriteResult {
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data(key)
        var op = Etcdserverpb_RequestOp()
        op.requestDeleteRange = delete
        let response = try await txn(key, condition, success: op, "Delete \(Self.show(key))")
        guard response.succeeded else { return try Self.conflict(response, key: key) }
        guard case .responseDeleteRange(let reply)? = response.responses.first?.response else {
            throw EtcdError(
                .invalidResponse, operation: "Delete \(Self.show(key))", "the txn answered without a delete")
        }
        return reply.deleted > 0
            ? .written(version: 0, revision: response.header.revision) : .absent(revision: response.header.revision)
    }

    /// Deletes every key under `prefix`; returns how many.
    @discardableResult
    public func deletePrefix(_ prefix: [UInt8]) async throws -> Int64 {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(prefix)
        request.rangeEnd = Data(etcdPrefixEnd(prefix))
        return try await connection.unary("DeleteRange prefix \(Self.show(prefix))") { client, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: client).deleteRange(
                request, metadata: metadata, options: options
            ).deleted
        }
    }

    /// A transaction on one key: `success` when its version meets `condition`, else a read of the key.
    private func txn(
        _ key: [UInt8], _ condition: EtcdVersionCondition, success: Etcdserverpb_RequestOp, _ operation: String
    ) async throws -> Etcdserverpb_TxnResponse {
        var request = Etcdserverpb_TxnRequest()
        if case .exactly(let version) = condition {
            var compare = Etcdserverpb_Compare()
            compare.key = Data(key)
            compare.target = .version
            compare.result = .equal
            compare.version = version
            request.compare = [compare]
            var read = Etcdserverpb_RangeRequest()
            read.key = Data(key)
            var failure = Etcdserverpb_RequestOp()
            failure.requestRange = read
            request.failure = [failure]
        }
        request.success = [success]
        let txn = request
        guard case .exactly(let expected) = condition else {
            return try await connection.unary(operation) { client, metadata, options in
                try await Etcdserverpb_KV.Client(wrapping: client).txn(txn, metadata: metadata, options: options)
            }
        }
        // A conditional write whose call failed may or may not have been applied. It is made again only when a
        // read shows the key still at the expected version (so it was not applied); otherwise the failure
        // stands and the caller reads the key to learn the outcome.
        var attempt = 0
        while true {
            do {
                return try await connection.unary(operation, retry: false) { client, metadata, options in
                    try await Etcdserverpb_KV.Client(wrapping: client).txn(txn, metadata: metadata, options: options)
                }
            } catch let failure as EtcdError where failure.code == .unavailable && attempt < 3 {
                attempt += 1
                let (now, _) = try await get(key)
                guard (now?.version ?? 0) == expected else { throw failure }
            }
        }
    }

    private static func conflict(_ response: Etcdserverpb_TxnResponse, key: [UInt8]) throws -> EtcdWriteResult {
        guard case .responseRange(let read)? = response.responses.first?.response else {
            throw EtcdError(
                .invalidResponse, operation: "Txn \(show(key))", "a failed compare answered without the read")
        }
        return .conflict(currentVersion: read.kvs.first?.version ?? 0, revision: response.header.revision)
    }

    /// Compacts etcd's history up to `revision` (tests and operators).
    public func compact(revision: Int64) async throws {
        var request = Etcdserverpb_CompactionRequest()
        request.revision = revision
        request.physical = true
        _ = try await connection.unary("Compact \(revision)") { client, metadata, options in
            try await Etcdserverpb_KV.Client(wrapping: client).compact(request, metadata: metadata, options: options)
        }
    }

    // MARK: Leases

    /// Grants a lease of `ttlSeconds`; returns its id and the TTL etcd chose (never less than its minimum).
    public func grantLease(ttlSeconds: Int64) async throws -> (id: Int64, ttl: Int64) {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttlSeconds
        let response = try await connection.unary("LeaseGrant \(ttlSeconds)s") { client, metadata, options in
            try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(
                request, metadata: metadata, options: options)
        }
        guard response.error.isEmpty, response.id != 0 else {
            throw EtcdError(.rejected, operation: "LeaseGrant \(ttlSeconds)s", response.error)
        }
        return (response.id, response.ttl)
    }

    /// Revokes a lease: every key attached to it is deleted. A lease etcd no longer has is not an error.
    public func revokeLease(_ id: Int64) async throws {
        var request = Etcdserverpb_LeaseRevokeRequest()
        request.id = id
        do {
            _ = try await connection.unary("LeaseRevoke \(id)") { client, metadata, options in
                try await Etcdserverpb_Lease.Client(wrapping: client).leaseRevoke(
                    request, metadata: metadata, options: options)
            }
        } catch let error as EtcdError where error.code == .notFound {
            return
        }
    }

    /// Renews a lease once (one `LeaseKeepAlive` exchange) and returns its new TTL in seconds.
    /// - Throws: `EtcdError` (`.notFound`) when the lease expired or never existed.
    public func renewLease(_ id: Int64) async throws -> Int64 {
        let ttl = try await connection.unary("LeaseKeepAlive \(id)") { client, metadata, options in
            try await Etcdserverpb_Lease.Client(wrapping: client).leaseKeepAlive(
                metadata: metadata, options: options,
                requestProducer: { writer in
                    var request = Etcdserverpb_LeaseKeepAliveRequest()
                    request.id = id
                    try await writer.write(request)
                },
                onResponse: { response in
                    for try await reply in response.messages { return reply.ttl }
                    return Int64(-1)
                })
        }
        guard ttl > 0 else {
            throw EtcdError(.notFound, operation: "LeaseKeepAlive \(id)", "the lease expired or does not exist")
        }
        return ttl
    }

    static func keyValue(_ kv: Mvccpb_KeyValue) -> EtcdKeyValue {
        EtcdKeyValue(
            key: Array(kv.key), value: Array(kv.value), createRevision: kv.createRevision,
            modRevision: kv.modRevision, version: kv.version, lease: kv.lease)
    }

    static func show(_ key: [UInt8]) -> String { String(decoding: key, as: UTF8.self) }
}
