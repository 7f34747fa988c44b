// The few messages of etcd's v3 API (etcdserverpb, api/etcdserverpb/rpc.proto of etcd 3.4) the benchmark
// sends and reads, encoded by hand in protobuf's wire format: no protoc and no generated code. Only the fields
// used are written; unknown fields are skipped when reading, as protobuf requires.

/// `etcdserverpb.ResponseHeader`: `cluster_id = 1`, `member_id = 2`, `revision = 3` (int64), `raft_term = 4`.
public struct EtcdResponseHeader: Sendable, Equatable {
    public var clusterID: UInt64 = 0
    public var memberID: UInt64 = 0
    public var revision: Int64 = 0
    public var raftTerm: UInt64 = 0

    public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64 = 0, raftTerm: UInt64 = 0) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.revision = revision
        self.raftTerm = raftTerm
    }

    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.next() {
            switch (field.number, field.value) {
            case (1, .varint(let v)): clusterID = v
            case (2, .varint(let v)): memberID = v
            case (3, .varint(let v)): revision = Int64(bitPattern: v)
            case (4, .varint(let v)): raftTerm = v
            default: break
            }
        }
    }
}

/// `etcdserverpb.PutRequest`: `key = 1` (bytes), `value = 2` (bytes); `lease`, `prev_kv`, `ignore_value` and
/// `ignore_lease` stay at their defaults and are therefore not written.
public struct EtcdPutRequest: Sendable, Equatable, ProtobufEncodable {
    public var key: [UInt8]
    public var value: [UInt8]

    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }

    public func encode(into writer: inout ProtobufWriter) {
        writer.bytes(1, key)
        writer.bytes(2, value)
    }
}

/// `etcdserverpb.PutResponse`: `header = 1`; `prev_kv = 2` is not asked for.
public struct EtcdPutResponse: Sendable, Equatable, ProtobufDecodable {
    public var header = EtcdResponseHeader()

    public init(header: EtcdResponseHeader = EtcdResponseHeader()) { self.header = header }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.next() {
            if case (1, .lengthDelimited(let body)) = (field.number, field.value) {
                header = try EtcdResponseHeader(decoding: body)
            }
        }
    }
}

/// `etcdserverpb.RangeRequest` for one key: `key = 1`.
public struct EtcdRangeRequest: Sendable, Equatable, ProtobufEncodable {
    public var key: [UInt8]

    public init(key: [UInt8]) { self.key = key }

    public func encode(into writer: inout ProtobufWriter) { writer.bytes(1, key) }
}

/// `mvccpb.KeyValue`: `key = 1`, `create_revision = 2`, `mod_revision = 3`, `version = 4`, `value = 5`.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: [UInt8] = []
    public var createRevision: Int64 = 0
    public var modRevision: Int64 = 0
    public var version: Int64 = 0
    public var value: [UInt8] = []

    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.next() {
            switch (field.number, field.value) {
            case (1, .lengthDelimited(let b)): key = Array(b)
            case (2, .varint(let v)): createRevision = Int64(bitPattern: v)
            case (3, .varint(let v)): modRevision = Int64(bitPattern: v)
            case (4, .varint(let v)): version = Int64(bitPattern: v)
            case (5, .lengthDelimited(let b)): value = Array(b)
            default: break
            }
        }
    }
}

/// `etcdserverpb.RangeResponse`: `header = 1`, `kvs = 2` (repeated), `more = 3`, `count = 4`.
public struct EtcdRangeResponse: Sendable, Equatable, ProtobufDecodable {
    public var header = EtcdResponseHeader()
    public var kvs: [EtcdKeyValue] = []
    public var count: Int64 = 0

    public init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.next() {
            switch (field.number, field.value) {
            case (1, .lengthDelimited(let b)): header = try EtcdResponseHeader(decoding: b)
            case (2, .lengthDelimited(let b)): kvs.append(try EtcdKeyValue(decoding: b))
            case (4, .varint(let v)): count = Int64(bitPattern: v)
            default: break
            }
        }
    }
}

/// `etcdserverpb.StatusRequest`: no fields.
public struct EtcdStatusRequest: Sendable, Equatable, ProtobufEncodable {
    public init() {}
    public func encode(into writer: inout ProtobufWriter) {}
}

/// `etcdserverpb.StatusResponse`: `header = 1`, `version = 2`, `leader = 4`, `raftIndex = 5`, `raftTerm = 6`,
/// `raftAppliedIndex = 7`. The member that answers is the leader when `leader == header.memberID`.
public struct EtcdStatusResponse: Sendable, Equatable, ProtobufDecodable {
    public var header = EtcdResponseHeader()
    public var version = ""
    public var leader: UInt64 = 0
    public var raftIndex: UInt64 = 0
    public var raftTerm: UInt64 = 0
    public var raftAppliedIndex: UInt64 = 0

    public init(decoding bytes: UnsafeRawBufferPointer) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.next() {
            switch (field.number, field.value) {
            case (1, .lengthDelimited(let b)): header = try EtcdResponseHeader(decoding: b)
            case (2, .lengthDelimited(let b)): version = String(decoding: b, as: UTF8.self)
            case (4, .varint(let v)): leader = v
            case (5, .varint(let v)): raftIndex = v
            case (6, .varint(let v)): raftTerm = v
            case (7, .varint(let v)): raftAppliedIndex = v
            default: break
            }
        }
    }

    /// Whether the member that answered leads the cluster.
    public var isLeader: Bool { leader != 0 && leader == header.memberID }
}
