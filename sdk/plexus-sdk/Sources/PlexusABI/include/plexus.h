/*
 * plexus.h - the Plexus plugin ABI, version 1.4.
 *
 * This header is the whole contract between the Plexus kernel and a plugin.
 * It is pure C99: a plugin may be written in C, Swift, or anything that can
 * export a C symbol. Reference documentation: docs/abi.md. History:
 * docs/abi-changelog.md. The committed baseline (abi/baseline.xml) and
 * scripts/abi-check guard it.
 *
 * Naming:
 *   px_*            types and constants
 *   px_plugin_on_*  lifecycle hooks the PLUGIN implements
 *   px_storage_on_*, px_registry_on_*
 *                   kind-specific hooks the PLUGIN implements
 *   px_host_*       functions the KERNEL implements (reached through px_host_api)
 *
 * Rules that hold for every declaration below:
 *   - Every struct and table begins with `uint32_t struct_size` and only ever
 *     grows at its end. A field is never removed, renamed or reordered. The
 *     kernel refuses a plugin struct larger than it knows and treats missing
 *     trailing fields of a smaller one as zero. The value pairs px_str, px_bytes
 *     and px_kv are frozen forever and therefore carry no struct_size.
 *   - Arrays of growable structs are passed as arrays of pointers, so that the
 *     stride never depends on which side's sizeof is larger.
 *   - Borrowed data is valid for the duration of the call (or callback) only.
 *   - An asynchronous function that returns PX_OK calls its completion exactly
 *     once, on any thread, possibly before it returns. One that returns an
 *     error never calls its completion.
 *   - No function may block a kernel thread on I/O; long work completes through
 *     a callback.
 *   - Fields named `reserved` are set to 0 by whoever fills the struct.
 *   - The kernel calls every completion it owes a plugin instance before that
 *     instance's on_destroy begins; a completion is never called afterwards.
 *
 * Operations: besides the entry symbol, a plugin image may export
 * administrative operations as plain C functions named px_op_*; its manifest
 * declares each one's C signature (e.g. `int32 (instance, uint64)`), and the
 * kernel calls them through libffi. A parameter declared `instance` receives
 * the void * the plugin returned from on_create. Operations are called only
 * between on_create and on_destroy, on a kernel thread, possibly concurrently
 * with the plugin's own work and with each other: they must be thread-safe.
 */
#ifndef PLEXUS_H
#define PLEXUS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versioning                                                               */
/* ------------------------------------------------------------------------ */

/* The ABI version this header describes. A plugin built against M.m loads
 * into a host offering M.n when n >= m. */
#define PX_ABI_VERSION_MAJOR 1
#define PX_ABI_VERSION_MINOR 4

#define PX_STRINGIFY_(x) #x
#define PX_STRINGIFY(x) PX_STRINGIFY_(x)

/* The one symbol every plugin exports. */
#define PX_PLUGIN_ENTRY_SYMBOL "px_plugin_entry_v1"

#if defined(__GNUC__) || defined(__clang__)
#define PX_EXPORT __attribute__((visibility("default")))
#else
#define PX_EXPORT
#endif

/* Whether a struct handed over by the other side is large enough to hold
 * `field`: true when its struct_size covers the field's end. A plugin built
 * against 1.1 tests a 1.1 field of a host struct this way before using it
 * (a 1.0 kernel's px_host_api is shorter), and so does the kernel for a
 * plugin's structs. Since 1.1.
 * THREADING: plain data. */
#define PX_HAS_FIELD(ptr, type, field) ((ptr) != NULL && (size_t)(ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */
/* ------------------------------------------------------------------------ */

/* The result of every call that can fail. Details go to a px_error buffer. */
typedef int32_t px_status;

enum px_status_code {
    PX_OK = 0,
    PX_ERR_INVALID_ARGUMENT = 1,   /* the caller passed something malformed */
    PX_ERR_NOT_FOUND = 2,          /* no such stream, topic, service, id */
    PX_ERR_ALREADY_EXISTS = 3,
    PX_ERR_UNSUPPORTED = 4,        /* this plugin or host does not offer it */
    PX_ERR_VERSION_MISMATCH = 5,   /* ABI negotiation refused */
    PX_ERR_TIMEOUT = 6,
    PX_ERR_UNAVAILABLE = 7,        /* transient: try again later */
    PX_ERR_RESOURCE_EXHAUSTED = 8, /* backpressure: a bound was reached */
    PX_ERR_OUT_OF_RANGE = 9,       /* offset before the first or past the end */
    PX_ERR_FAILED_PRECONDITION = 10, /* not in a state that allows the call */
    PX_ERR_IO = 11,
    PX_ERR_CORRUPTION = 12,        /* stored data failed a check */
    PX_ERR_CANCELLED = 13,
    PX_ERR_PERMISSION_DENIED = 14,
    PX_ERR_INTERNAL = 15,
    PX_DEGRADED = 16               /* since 1.2, from on_health only: serving, but impaired; err says how */
};

/* ------------------------------------------------------------------------ */
/* Frozen value pairs                                                       */
/* ------------------------------------------------------------------------ */

/* UTF-8 text, not necessarily NUL-terminated. {NULL, 0} means absent.
 * OWNERSHIP: always borrowed; whoever passes it keeps ownership.
 * THREADING: plain data. */
typedef struct px_str {
    const char *ptr;
    size_t len;
} px_str;

/* Bytes. {NULL, 0} means empty.
 * OWNERSHIP: always borrowed.
 * THREADING: plain data. */
typedef struct px_bytes {
    const uint8_t *ptr;
    size_t len;
} px_bytes;

/* A key and a value, both text.
 * OWNERSHIP: always borrowed.
 * THREADING: plain data. */
typedef struct px_kv {
    px_str key;
    px_str value;
} px_kv;

/* ------------------------------------------------------------------------ */
/* Error buffer                                                             */
/* ------------------------------------------------------------------------ */

/* A caller-provided buffer the callee writes a human-readable reason into,
 * as NUL-terminated UTF-8 truncated to capacity - 1 bytes.
 * OWNERSHIP: the caller owns `message`; the callee only writes into it.
 *            A px_error pointer may be NULL: then no text is written.
 * THREADING: used by one call at a time. */
typedef struct px_error {
    uint32_t struct_size;
    uint32_t reserved;
    char *message;
    size_t capacity;
} px_error;

/* The capacity the kernel gives every px_error it passes. */
#define PX_ERROR_CAPACITY 1024

/* Writes `text` into `err`, truncating. Safe with err == NULL.
 * OWNERSHIP: text is borrowed.
 * THREADING: any thread. */
static inline void px_error_set(px_error *err, const char *text) {
    size_t n;
    if (err == NULL || err->message == NULL || err->capacity == 0) {
        return;
    }
    n = text != NULL ? strlen(text) : 0;
    if (n >= err->capacity) {
        n = err->capacity - 1;
        /* Never cut a UTF-8 sequence in two. */
        while (n > 0 && (((unsigned char)text[n]) & 0xC0u) == 0x80u) {
            n--;
        }
    }
    if (n > 0) {
        memcpy(err->message, text, n);
    }
    err->message[n] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* A CloudEvents 1.0 event: one in-memory shape from wire to disk and back.
 * Required: id, source, specversion ("1.0"), type. Optional attributes are
 * {NULL, 0} when absent. `time` is RFC 3339 text. Extension values are the
 * canonical string form of their CloudEvents type.
 * OWNERSHIP: borrowed wherever it is passed; copy what you keep.
 * THREADING: plain data. */
typedef struct px_event {
    uint32_t struct_size;
    uint32_t reserved;
    px_str id;
    px_str source;
    px_str specversion;
    px_str type;
    px_str datacontenttype;
    px_str dataschema;
    px_str subject;
    px_str time;
    const px_kv *extensions;
    size_t extension_count;
    px_bytes data;
} px_event;

/* An event as stored in a stream, with the offset the storage assigned.
 * OWNERSHIP: borrowed for the callback that hands it over.
 * THREADING: plain data. */
typedef struct px_record {
    uint32_t struct_size;
    uint32_t reserved;
    uint64_t offset;
    uint64_t append_time_ns; /* Unix time in ns when stored; 0 if unknown */
    const px_event *event;
} px_record;

/* The CloudEvents extension that carries an event's partition key: events
 * with the same key are delivered in publish order to ordered subscriptions. */
#define PX_EXTENSION_PARTITION_KEY "partitionkey"

/* Returned where an offset does not exist (no committed offset yet). */
#define PX_OFFSET_NONE UINT64_MAX

/* ------------------------------------------------------------------------ */
/* Opaque handles                                                           */
/* ------------------------------------------------------------------------ */

/* The kernel's handle for one plugin instance; the first argument of every
 * host function, so the kernel knows who is calling.
 * OWNERSHIP: owned by the kernel; valid from on_create until on_destroy
 *            returns.
 * THREADING: may be used from any thread. */
typedef struct px_host px_host;

/* A storage plugin's handle for one open stream.
 * OWNERSHIP: created by px_storage_on_open_stream, released by
 *            px_storage_on_close_stream.
 * THREADING: as the storage vtable says. */
typedef struct px_stream px_stream;

/* ------------------------------------------------------------------------ */
/* Completions                                                              */
/* ------------------------------------------------------------------------ */

/* A completion that carries only a status.
 * OWNERSHIP: `error` is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_done_fn)(void *user, px_status status, px_str error);

/* Completion of an append or publish: the offset of the first event; the
 * batch occupies first_offset .. first_offset + count - 1.
 * OWNERSHIP: `error` is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_append_done_fn)(void *user, px_status status, uint64_t first_offset, px_str error);

/* Completion of a read: records in offset order, and the offset to read from
 * next.
 * OWNERSHIP: records and error are borrowed for the callback; copy them.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_read_done_fn)(void *user, px_status status, const px_record *const *records, size_t count,
                                uint64_t next_offset, px_str error);

/* Completion of an offset fetch: PX_OFFSET_NONE when nothing is committed.
 * OWNERSHIP: `error` is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_offset_done_fn)(void *user, px_status status, uint64_t offset, px_str error);

/* A timer firing.
 * THREADING: called on a thread of the kernel's shared pool, never
 *            concurrently for one timer; must return quickly. */
typedef void (*px_timer_fn)(void *user, uint64_t timer_id);

/* A read's records, lent to the kernel until it releases them (since 1.1).
 * The storage fills it and hands it over through px_read_batch_done_fn; the
 * records, their events and every byte they point to stay valid and
 * unchanged until the kernel calls release(batch) — exactly once, on any
 * thread, possibly long after the callback returned (the kernel keeps a batch
 * until the last delivery made from it is settled). This is how a record
 * travels from the storage's read buffer to subscribers without a copy.
 * OWNERSHIP: owned by the storage; lent to the kernel from the callback
 *            until release. release frees what the storage allocated.
 * THREADING: release may run on any thread, concurrently with any other
 *            storage call, but never twice for one batch. */
typedef struct px_record_batch {
    uint32_t struct_size;
    uint32_t reserved;
    const px_record *const *records;   /* in offset order */
    size_t count;
    uint64_t next_offset;              /* where the next read starts */
    void (*release)(struct px_record_batch *batch);
    void *storage_data;                /* the storage's own; the kernel never reads it */
} px_record_batch;

/* Completion of a batch read (since 1.1). On PX_OK the kernel owns `batch`
 * until it calls batch->release; on an error `batch` is NULL.
 * OWNERSHIP: error is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_read_batch_done_fn)(void *user, px_status status, px_record_batch *batch, px_str error);

/* Completion of an asynchronous stream open (since 1.1): the stream handle
 * on PX_OK (owned by the plugin until px_storage_on_close_stream), NULL on
 * an error.
 * OWNERSHIP: error is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_open_done_fn)(void *user, px_status status, px_stream *stream, px_str error);

/* A unit of work for the kernel's shared pool (since 1.1).
 * THREADING: runs once, on a pool thread; should not block for long (the
 *            pool has one thread per core). */
typedef void (*px_work_fn)(void *user);

/* ------------------------------------------------------------------------ */
/* Service registry values                                                  */
/* ------------------------------------------------------------------------ */

/* One registered instance of a service.
 * OWNERSHIP: borrowed wherever it is passed.
 * THREADING: plain data. */
typedef struct px_service_instance {
    uint32_t struct_size;
    uint32_t reserved;
    px_str service;
    px_str instance_id;
    px_str address;          /* host:port or a URL */
    const px_kv *metadata;
    size_t metadata_count;
    uint64_t ttl_ms;         /* 0: until deregistered */
} px_service_instance;

/* Completion of a lookup.
 * OWNERSHIP: instances and error are borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_lookup_done_fn)(void *user, px_status status, const px_service_instance *const *instances,
                                  size_t count, px_str error);

enum px_watch_event_kind {
    PX_WATCH_PUT = 1,    /* registered or changed */
    PX_WATCH_DELETE = 2  /* deregistered or expired */
};

/* A change to a watched service.
 * OWNERSHIP: instance is borrowed for the callback.
 * THREADING: called on any thread, never concurrently for one watch, in the
 *            order the changes happened; must not block. */
typedef void (*px_watch_fn)(void *user, uint32_t kind, const px_service_instance *instance);

/* The registry's metadata store (since 1.4): keys shared by every plugin of
 * the node (and, with a clustered registry, by every node), each with a
 * version, changed under store-wide revisions. Revisions start at 1 and
 * increase by one per change (put or delete), like etcd's. Keys follow the
 * convention `<area>/<owner>/...` (`connectors/<instance name>/position`,
 * `ledgers/<stream>/...`, `cluster/nodes/<id>`). */

/* put/delete without a version condition (since 1.4). */
#define PX_KV_ANY_VERSION UINT64_MAX

/* One key of the registry's metadata store (since 1.4).
 * OWNERSHIP: borrowed wherever it is passed.
 * THREADING: plain data. */
typedef struct px_kv_entry {
    uint32_t struct_size;
    uint32_t reserved;
    px_str key;                 /* UTF-8, 1..1024 bytes */
    px_bytes value;             /* up to 1 MiB */
    uint64_t version;           /* 1 when created, +1 per put; 0 in a delete notification */
    uint64_t create_revision;   /* store revision that created the key */
    uint64_t mod_revision;      /* store revision of the last change (the delete's, in a delete notification) */
} px_kv_entry;

/* Completion of a metadata read (since 1.4): PX_OK with entry, or
 * PX_ERR_NOT_FOUND with entry NULL; revision = the store's revision the read
 * saw.
 * OWNERSHIP: entry, everything it points to, and error are borrowed for the
 *            callback; copy what you keep.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_kv_get_done_fn)(void *user, px_status status, const px_kv_entry *entry, uint64_t revision,
                                  px_str error);

/* Completion of a metadata write (since 1.4).
 * put: version = the key's new version, revision = the change's revision.
 * delete: version = 0, revision = the change's revision.
 * PX_ERR_FAILED_PRECONDITION when the version condition failed: `version` is
 * then the key's current version (0: absent) and revision the store's
 * current revision. Called once the change is durable (standalone: fsynced;
 * etcd: committed).
 * OWNERSHIP: error is borrowed for the callback.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_kv_write_done_fn)(void *user, px_status status, uint64_t version, uint64_t revision,
                                    px_str error);

/* Completion of a metadata listing (since 1.4): the entries under the prefix
 * in byte order of their keys, as of `revision`.
 * OWNERSHIP: entries, everything they point to, and error are borrowed for
 *            the callback; copy what you keep.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_kv_list_done_fn)(void *user, px_status status, const px_kv_entry *const *entries, size_t count,
                                   uint64_t revision, px_str error);

/* A change under a watched prefix (since 1.4): kind PX_WATCH_PUT (entry = the
 * key after the put) or PX_WATCH_DELETE (entry->key, empty value, version 0,
 * mod_revision = the delete's revision). In revision order, never
 * concurrently for one watch, no change missed or repeated (a registry that
 * reconnects resumes from the last revision it delivered, or resyncs by
 * listing and sending the differences if its backend compacted that
 * history).
 * OWNERSHIP: entry is borrowed for the callback.
 * THREADING: any thread, never concurrently for one watch; must not block. */
typedef void (*px_kv_watch_fn)(void *user, uint32_t kind, const px_kv_entry *entry);

/* ------------------------------------------------------------------------ */
/* Subscriptions and deliveries                                             */
/* ------------------------------------------------------------------------ */

enum px_group_mode {
    PX_GROUP_CLUSTERING = 0, /* each event to one member of the group */
    PX_GROUP_BROADCAST = 1   /* each event to every member */
};

enum px_backoff_policy {
    PX_BACKOFF_EXPONENTIAL = 0, /* delay * 2^n */
    PX_BACKOFF_LINEAR = 1       /* delay * n */
};

enum px_start_position {
    PX_START_LATEST = 0,
    PX_START_EARLIEST = 1,
    PX_START_OFFSET = 2
};

/* One event handed to a subscriber. Acknowledge it with px_host_api.ack or
 * px_host_api.nack, passing delivery_id.
 * OWNERSHIP: borrowed for the px_deliver_fn call; copy what you keep.
 * THREADING: plain data. */
typedef struct px_delivery {
    uint32_t struct_size;
    uint32_t attempt;          /* 1 on first delivery */
    uint64_t delivery_id;
    uint64_t subscription_id;
    px_str topic;
    const px_record *record;
} px_delivery;

/* Receives deliveries for one subscription.
 * OWNERSHIP: delivery is borrowed for the call.
 * THREADING: called on a kernel thread, possibly concurrently for different
 *            partition keys; must not block. Ack or nack later, from any
 *            thread. */
typedef void (*px_deliver_fn)(void *user, const px_delivery *delivery);

/* What a subscriber asks for. Zero means "the kernel's default" for every
 * numeric delivery option.
 * OWNERSHIP: borrowed for the subscribe call; the kernel copies it. `user`
 *            must stay valid until unsubscribe returns.
 * THREADING: plain data. */
typedef struct px_subscription_spec {
    uint32_t struct_size;
    uint32_t group_mode;        /* px_group_mode */
    px_str topic;
    px_str group;
    const px_kv *filters;       /* exact match on attribute or extension */
    size_t filter_count;
    uint32_t retry;             /* attempts after the first */
    uint32_t backoff_policy;    /* px_backoff_policy */
    uint64_t backoff_delay_ms;
    uint64_t backoff_max_ms;
    uint64_t timeout_ms;        /* per attempt, until ack or nack */
    px_str dead_letter_topic;   /* {NULL,0}: drop and count */
    uint32_t ordered;           /* 1: one in flight per partition key */
    uint32_t max_in_flight;     /* unacknowledged events per member */
    uint32_t start_position;    /* px_start_position */
    uint32_t reserved;
    uint64_t start_offset;      /* with PX_START_OFFSET */
    px_deliver_fn deliver;
    void *user;
} px_subscription_spec;

enum px_nack_action {
    PX_NACK_RETRY = 0,        /* redeliver after the subscription's backoff */
    PX_NACK_DEAD_LETTER = 1   /* give up now: dead-letter without retrying */
};

/* ------------------------------------------------------------------------ */
/* Host services: implemented by the kernel                                 */
/* ------------------------------------------------------------------------ */

enum px_log_level {
    PX_LOG_TRACE = 0,
    PX_LOG_DEBUG = 1,
    PX_LOG_INFO = 2,
    PX_LOG_NOTICE = 3,
    PX_LOG_WARNING = 4,
    PX_LOG_ERROR = 5,
    PX_LOG_CRITICAL = 6
};

/* Writes one log line attributed to the calling plugin.
 * OWNERSHIP: message is borrowed.
 * THREADING: any thread. */
typedef void (*px_host_log)(px_host *host, int32_t level, px_str message);

/* Adds to a monotonically increasing counter named for the calling plugin.
 * OWNERSHIP: name is borrowed.
 * THREADING: any thread. */
typedef void (*px_host_counter_add)(px_host *host, px_str name, uint64_t delta);

/* Sets a gauge, or records a value into a histogram.
 * OWNERSHIP: name is borrowed.
 * THREADING: any thread. */
typedef void (*px_host_gauge_set)(px_host *host, px_str name, double value);
typedef void (*px_host_histogram_record)(px_host *host, px_str name, double value);

/* Publishes a batch of events to a topic. `done` runs once the storage bound
 * to the topic reports the batch durable (per that storage's durability).
 * OWNERSHIP: events are borrowed for this call only: the kernel hands them
 *            to the storage within the call (or copies them first).
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_host_publish)(px_host *host, px_str topic, const px_event *const *events, size_t count,
                                     px_append_done_fn done, void *user, px_error *err);

/* Creates a subscription; deliveries arrive through spec->deliver.
 * OWNERSHIP: spec is borrowed; the kernel copies it.
 * THREADING: any thread. */
typedef px_status (*px_host_subscribe)(px_host *host, const px_subscription_spec *spec,
                                       uint64_t *out_subscription_id, px_error *err);

/* Ends a subscription. After it returns no delivery for it is running or will
 * start; events delivered but not acknowledged are redelivered to other
 * members. PX_ERR_NOT_FOUND for an unknown id.
 * THREADING: any thread except inside that subscription's px_deliver_fn. */
typedef px_status (*px_host_unsubscribe)(px_host *host, uint64_t subscription_id);

/* Acknowledges a delivery: the event counts as delivered. PX_ERR_NOT_FOUND
 * when the delivery is unknown or already settled.
 * THREADING: any thread, including inside px_deliver_fn. */
typedef px_status (*px_host_ack)(px_host *host, uint64_t delivery_id);

/* Rejects a delivery; `action` is a px_nack_action. PX_ERR_NOT_FOUND when the
 * delivery is unknown or already settled (acknowledged, timed out).
 * OWNERSHIP: reason is borrowed; it is recorded with a dead-lettered event.
 * THREADING: any thread, including inside px_deliver_fn. */
typedef px_status (*px_host_nack)(px_host *host, uint64_t delivery_id, uint32_t action, px_str reason);

/* Starts a timer: first after delay_ns, then every interval_ns (0: once).
 * THREADING: any thread; fn runs on a thread of the kernel's shared pool. */
typedef px_status (*px_host_timer_start)(px_host *host, uint64_t delay_ns, uint64_t interval_ns, px_timer_fn fn,
                                         void *user, uint64_t *out_timer_id, px_error *err);

/* Cancels a timer. After it returns, fn is not running and will not run,
 * unless it is called from inside fn itself. PX_ERR_NOT_FOUND for an unknown
 * id or a one-shot timer that already fired.
 * THREADING: any thread. */
typedef px_status (*px_host_timer_cancel)(px_host *host, uint64_t timer_id);

/* The node's active registry: register, deregister, look up and watch.
 * OWNERSHIP: every argument is borrowed for the call; the kernel copies.
 * THREADING: any thread; completions on any thread. */
typedef px_status (*px_host_registry_register)(px_host *host, const px_service_instance *instance, px_done_fn done,
                                               void *user, px_error *err);
typedef px_status (*px_host_registry_deregister)(px_host *host, px_str service, px_str instance_id,
                                                 px_done_fn done, void *user, px_error *err);
typedef px_status (*px_host_registry_lookup)(px_host *host, px_str service, px_lookup_done_fn done, void *user,
                                             px_error *err);
typedef px_status (*px_host_registry_watch)(px_host *host, px_str service, px_watch_fn fn, void *user,
                                            uint64_t *out_watch_id, px_error *err);
/* registry_unwatch: after it returns the watch's fn is not running and will
 * not run; not to be called from inside that fn. */
typedef px_status (*px_host_registry_unwatch)(px_host *host, uint64_t watch_id);

/* The node's active registry's leases and metadata store (since 1.4): the
 * same calls as px_registry_on_keepalive and px_registry_on_kv_* (see there
 * for their semantics), routed to the node's active registry. Keys are
 * shared by every plugin of the node (and, with a clustered registry, by
 * every node): convention `<area>/<owner>/...`.
 * Errors: PX_ERR_UNSUPPORTED, synchronously with the reason in err, when the
 * node has no registry or its registry lacks the hook. A plugin built
 * against 1.4 tests PX_HAS_FIELD(api, px_host_api, kv_get) before using them
 * on an older kernel.
 * OWNERSHIP: every argument is borrowed for the call; the kernel copies.
 *            kv_watch's `user` must stay valid until kv_unwatch returns.
 * THREADING: any thread; completions exactly once, on any thread; kv_unwatch
 *            not from inside that watch's fn. */
typedef px_status (*px_host_registry_keepalive)(px_host *host, px_str service, px_str instance_id, px_done_fn done,
                                                void *user, px_error *err);
typedef px_status (*px_host_kv_get)(px_host *host, px_str key, px_kv_get_done_fn done, void *user, px_error *err);
typedef px_status (*px_host_kv_put)(px_host *host, px_str key, px_bytes value, uint64_t expected_version,
                                    px_kv_write_done_fn done, void *user, px_error *err);
typedef px_status (*px_host_kv_delete)(px_host *host, px_str key, uint64_t expected_version,
                                       px_kv_write_done_fn done, void *user, px_error *err);
typedef px_status (*px_host_kv_list)(px_host *host, px_str prefix, px_kv_list_done_fn done, void *user,
                                     px_error *err);
typedef px_status (*px_host_kv_watch)(px_host *host, px_str prefix, uint64_t from_revision, px_kv_watch_fn fn,
                                      void *user, uint64_t *out_watch_id, px_error *err);
typedef px_status (*px_host_kv_unwatch)(px_host *host, uint64_t watch_id);

/* Reads stored events of a topic directly, from `from_offset`, through the
 * storage bound to it (replay, pull consumers): up to max_records and about
 * max_bytes (at least one record), as px_storage_on_read.
 * OWNERSHIP: records in the completion are borrowed for the callback.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_host_storage_read)(px_host *host, px_str topic, uint64_t from_offset, size_t max_records,
                                          size_t max_bytes, px_read_done_fn done, void *user, px_error *err);

/* Runs fn(user) once on the kernel's shared pool, a fixed set of threads
 * sized to the cores (since 1.1). Use it for short work that must leave the
 * caller's thread (a completion that must not run inline, a batch to
 * encode); never for blocking I/O.
 * THREADING: any thread; fn runs later on a pool thread, exactly once when
 *            this returns PX_OK. Work items run concurrently with each
 *            other; order between them is not promised. */
typedef px_status (*px_host_run)(px_host *host, px_work_fn fn, void *user, px_error *err);

enum px_metric_kind {
    PX_METRIC_COUNTER = 1,   /* record(v) adds v in whole units (v >= 0) */
    PX_METRIC_GAUGE = 2,     /* record(v) sets the value */
    PX_METRIC_HISTOGRAM = 3  /* record(v) observes v into the buckets */
};

/* A metric made once and then recorded into without a name lookup (since
 * 1.1).
 * OWNERSHIP: owned by the kernel; valid until the plugin instance's
 *            on_destroy returns. Never freed by the plugin.
 * THREADING: any thread. */
typedef struct px_metric px_metric;

/* Describes a metric to make.
 * `name` is a Prometheus name without the plexus_ prefix (the kernel adds
 * it, and _total for counters); the kernel adds the label plugin="<name of
 * the calling plugin>". `buckets` are a histogram's upper bounds in
 * increasing order (NULL: the kernel's default latency buckets, seconds).
 * OWNERSHIP: borrowed for the call.
 * THREADING: plain data. */
typedef struct px_metric_spec {
    uint32_t struct_size;
    uint32_t kind;             /* px_metric_kind */
    px_str name;
    px_str help;
    const px_kv *labels;
    size_t label_count;
    const double *buckets;
    size_t bucket_count;
} px_metric_spec;

/* Makes (or finds: the same name, kind and labels give the same handle) a
 * metric. A name already used with another kind is PX_ERR_ALREADY_EXISTS.
 * OWNERSHIP: spec is borrowed; *out_metric is the kernel's (see px_metric).
 * THREADING: any thread. */
typedef px_status (*px_host_metric_create)(px_host *host, const px_metric_spec *spec, px_metric **out_metric,
                                           px_error *err);

/* Records into a metric per its kind (see px_metric_kind). A counter ignores
 * negative values.
 * THREADING: any thread; lock-free or nearly so; never blocks. */
typedef void (*px_host_metric_record)(px_metric *metric, double value);

/* Gives the plugin a listening TCP socket the kernel owns (since 1.2), for a
 * protocol plugin's listener. The kernel binds host_address:port (port 0: a
 * free port, chosen once), listens with `backlog`, and keeps the socket open
 * while the plugin is replaced on a running node, so a new instance accepts
 * from the same socket before the old one stops: connections waiting in its
 * backlog are taken by whichever instance accepts first, and none is refused
 * while instances change. The same plugin asking again for the same address
 * (or for port 0 on the same host) gets the same socket. The kernel closes
 * its socket when the plugin stops for good, or when a replacing instance no
 * longer asks for that address.
 * OWNERSHIP: host_address is borrowed for the call; *out_fd is a new
 *            descriptor of the socket (a dup) that the plugin owns: it accepts
 *            on it and closes it when it stops. Closing it never closes the
 *            kernel's socket. Never call shutdown() on it: that would stop the
 *            socket for every holder.
 * THREADING: any thread; binds synchronously (quick).
 * Errors: PX_ERR_INVALID_ARGUMENT for a bad address or port,
 *         PX_ERR_UNAVAILABLE when the address cannot be bound (the reason,
 *         such as "address already in use", is in err). */
typedef px_status (*px_host_listen)(px_host *host, px_str host_address, int32_t port, int32_t backlog,
                                    int32_t *out_fd, px_error *err);

/* The table of host services. The kernel builds it once; it stays valid and
 * unchanged for the life of the process.
 * OWNERSHIP: owned by the kernel; a plugin may keep the pointer.
 * THREADING: read-only; every function in it may be called from any thread. */
typedef struct px_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    const char *kernel_version;   /* NUL-terminated SemVer of the kernel */
    px_host_log log;
    px_host_counter_add counter_add;
    px_host_gauge_set gauge_set;
    px_host_histogram_record histogram_record;
    px_host_publish publish;
    px_host_subscribe subscribe;
    px_host_unsubscribe unsubscribe;
    px_host_ack ack;
    px_host_nack nack;
    px_host_timer_start timer_start;
    px_host_timer_cancel timer_cancel;
    px_host_registry_register registry_register;
    px_host_registry_deregister registry_deregister;
    px_host_registry_lookup registry_lookup;
    px_host_registry_watch registry_watch;
    px_host_registry_unwatch registry_unwatch;
    px_host_storage_read storage_read;
    /* 1.1 */
    px_host_run run;
    px_host_metric_create metric_create;
    px_host_metric_record metric_record;
    /* 1.2 */
    px_host_listen listen;
    /* 1.4 */
    px_host_registry_keepalive registry_keepalive;
    px_host_kv_get kv_get;
    px_host_kv_put kv_put;
    px_host_kv_delete kv_delete;
    px_host_kv_list kv_list;
    px_host_kv_watch kv_watch;
    px_host_kv_unwatch kv_unwatch;
} px_host_api;

/* ------------------------------------------------------------------------ */
/* Plugin configuration                                                     */
/* ------------------------------------------------------------------------ */

/* What a plugin instance is created with: the manifest's config validated
 * against its schema, defaults filled in.
 * OWNERSHIP: borrowed for on_create; copy what you keep.
 * THREADING: plain data. */
typedef struct px_plugin_config {
    uint32_t struct_size;
    uint32_t reserved;
    px_str instance_name;  /* the manifest's name */
    px_str node_id;
    px_str data_dir;       /* a directory this instance owns; exists */
    px_str json;           /* the whole config as one JSON object */
    const px_kv *entries;  /* top-level keys: scalars as text, others as JSON */
    size_t entry_count;
} px_plugin_config;

/* ------------------------------------------------------------------------ */
/* Storage kind: implemented by the plugin                                  */
/* ------------------------------------------------------------------------ */

enum px_durability {
    PX_DURABILITY_NONE = 0,       /* memory: lost when the process ends */
    PX_DURABILITY_LOCAL = 1,      /* on this node's disk per its fsync policy */
    PX_DURABILITY_REPLICATED = 2  /* on a quorum of nodes' disks */
};

/* Per-stream settings. Zero means unlimited.
 * OWNERSHIP: borrowed for the call.
 * THREADING: plain data. */
typedef struct px_stream_options {
    uint32_t struct_size;
    uint32_t reserved;
    uint64_t retention_bytes;
    uint64_t retention_ms;
} px_stream_options;

/* The extent of a stream: offsets first_offset .. next_offset - 1 exist.
 * OWNERSHIP: written by the callee into caller memory.
 * THREADING: plain data. */
typedef struct px_stream_info {
    uint32_t struct_size;
    uint32_t reserved;
    uint64_t first_offset;
    uint64_t next_offset;
    uint64_t size_bytes;
} px_stream_info;

/* Opens (creating if needed) a named stream.
 * OWNERSHIP: name and options are borrowed; *out_stream is owned by the
 *            plugin until px_storage_on_close_stream.
 * THREADING: any thread. */
typedef px_status (*px_storage_on_open_stream)(void *instance, px_str name, const px_stream_options *options,
                                               px_stream **out_stream, px_error *err);

/* Closes a stream handle. No call on it is in flight when this is called.
 * THREADING: any thread. */
typedef void (*px_storage_on_close_stream)(void *instance, px_stream *stream);

/* Appends a batch of events to a stream, assigning dense increasing offsets.
 * An empty batch succeeds with first_offset = the stream's next offset.
 * OWNERSHIP: events are borrowed for this call only; copy what you keep.
 * THREADING: any thread, concurrently; batches are ordered as the calls
 *            were made; done is called exactly once, on any thread, when
 *            the batch is durable per the plugin's durability. */
typedef px_status (*px_storage_on_append)(void *instance, px_stream *stream, const px_event *const *events,
                                          size_t count, px_append_done_fn done, void *user, px_error *err);

/* Reads up to max_records (and about max_bytes; at least one record) from
 * from_offset. Reading at the end returns zero records. Reading before the
 * first retained offset fails with PX_ERR_OUT_OF_RANGE.
 * OWNERSHIP: records in the completion are borrowed for the callback.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_read)(void *instance, px_stream *stream, uint64_t from_offset,
                                        size_t max_records, size_t max_bytes, px_read_done_fn done, void *user,
                                        px_error *err);

/* Stores a consumer group's committed offset (the next offset to consume).
 * OWNERSHIP: group is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread, when
 *            the offset is durable per the plugin's durability. */
typedef px_status (*px_storage_on_commit_offset)(void *instance, px_stream *stream, px_str group, uint64_t offset,
                                                 px_done_fn done, void *user, px_error *err);

/* Fetches a consumer group's committed offset (PX_OFFSET_NONE if none).
 * OWNERSHIP: group is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_fetch_offset)(void *instance, px_stream *stream, px_str group,
                                                px_offset_done_fn done, void *user, px_error *err);

/* Discards events with offsets below before_offset. Offsets never move.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_trim)(void *instance, px_stream *stream, uint64_t before_offset, px_done_fn done,
                                        void *user, px_error *err);

/* Reports the stream's extent.
 * OWNERSHIP: writes into *out, whose struct_size the caller has set.
 * THREADING: any thread. */
typedef px_status (*px_storage_on_stream_info)(void *instance, px_stream *stream, px_stream_info *out,
                                               px_error *err);

/* Opens (creating if needed) a named stream without blocking the caller
 * (since 1.1). A storage whose open does disk work (mkdir, fsync, recovery)
 * implements this: the kernel then never calls on_open_stream, and opens a
 * stream behind its own future, under no node-wide lock. Opening the same
 * name twice concurrently is not done by the kernel.
 * OWNERSHIP: name and options are borrowed for the call; the stream passed
 *            to done is owned by the plugin until px_storage_on_close_stream.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_open_stream_async)(void *instance, px_str name, const px_stream_options *options,
                                                     px_open_done_fn done, void *user, px_error *err);

/* Reads as px_storage_on_read does, but lends the records to the kernel in
 * a px_record_batch instead of for the callback only (since 1.1), so that
 * the delivery engine hands them to subscribers without copying. A storage
 * that implements it keeps the batch's memory alive until release.
 * OWNERSHIP: see px_record_batch and px_read_batch_done_fn.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_read_batch)(void *instance, px_stream *stream, uint64_t from_offset,
                                              size_t max_records, size_t max_bytes, px_read_batch_done_fn done,
                                              void *user, px_error *err);

/* One consumer group's committed offset, as px_storage_on_list_offsets
 * reports it (since 1.3).
 * OWNERSHIP: borrowed for the callback that hands it over; group too.
 * THREADING: plain data. */
typedef struct px_group_offset {
    uint32_t struct_size;
    uint32_t reserved;
    px_str group;
    uint64_t offset;   /* the next offset the group consumes */
} px_group_offset;

/* Completion of a stream listing (since 1.3): the name of every stream the
 * storage holds, in no particular order; none is not an error.
 * OWNERSHIP: names, the text they point to, and error are borrowed for the
 *            callback; copy what you keep.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_list_streams_done_fn)(void *user, px_status status, const px_str *names, size_t count,
                                        px_str error);

/* Completion of an offset listing (since 1.3): every consumer group with a
 * committed offset on the stream, in no particular order.
 * OWNERSHIP: offsets, everything they point to, and error are borrowed for
 *            the callback; copy what you keep.
 * THREADING: called exactly once, on any thread; must not block. */
typedef void (*px_list_offsets_done_fn)(void *user, px_status status, const px_group_offset *const *offsets,
                                        size_t count, px_str error);

/* Lists the streams the storage holds, open or not, including those it
 * recovered from disk (since 1.3). A storage that cannot tell leaves the
 * hook NULL; the kernel then reports that it cannot list its topics.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_list_streams)(void *instance, px_list_streams_done_fn done, void *user,
                                                px_error *err);

/* Deletes the stream `stream` was opened on, with its events and every
 * consumer offset (since 1.3), durably per the plugin's durability. The
 * kernel makes no other call on the handle while this one is in flight and
 * afterwards only closes it; opening the name again creates an empty stream.
 * A storage that cannot delete a stream now (a replicated one whose members
 * would disagree) refuses with PX_ERR_UNSUPPORTED or
 * PX_ERR_FAILED_PRECONDITION and a reason.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_delete_stream)(void *instance, px_stream *stream, px_done_fn done, void *user,
                                                 px_error *err);

/* Lists the committed offset of every consumer group of a stream (since
 * 1.3), as on_fetch_offset would report each one.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_storage_on_list_offsets)(void *instance, px_stream *stream, px_list_offsets_done_fn done,
                                                void *user, px_error *err);

/* Forgets a consumer group's committed offset (since 1.3): on_fetch_offset
 * then reports PX_OFFSET_NONE and on_list_offsets leaves the group out.
 * Forgetting a group with no offset succeeds.
 * OWNERSHIP: group is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread, when
 *            the removal is durable per the plugin's durability. */
typedef px_status (*px_storage_on_delete_offset)(void *instance, px_stream *stream, px_str group, px_done_fn done,
                                                 void *user, px_error *err);

/* The storage vtable, hung off the descriptor of a PX_KIND_STORAGE plugin.
 * OWNERSHIP: owned by the plugin; must stay valid while the image is mapped
 *            (a static const table).
 * THREADING: read-only. */
typedef struct px_storage_vtable {
    uint32_t struct_size;
    uint32_t durability;  /* px_durability */
    px_storage_on_open_stream on_open_stream;
    px_storage_on_close_stream on_close_stream;
    px_storage_on_append on_append;
    px_storage_on_read on_read;
    px_storage_on_commit_offset on_commit_offset;
    px_storage_on_fetch_offset on_fetch_offset;
    px_storage_on_trim on_trim;
    px_storage_on_stream_info on_stream_info;
    /* 1.1: each may be NULL (the kernel then uses the 1.0 hook above). */
    px_storage_on_open_stream_async on_open_stream_async;
    px_storage_on_read_batch on_read_batch;
    /* 1.3: each may be NULL (the kernel then answers that the storage does
     * not support the operation). */
    px_storage_on_list_streams on_list_streams;
    px_storage_on_delete_stream on_delete_stream;
    px_storage_on_list_offsets on_list_offsets;
    px_storage_on_delete_offset on_delete_offset;
} px_storage_vtable;

/* ------------------------------------------------------------------------ */
/* Registry kind: implemented by the plugin                                 */
/* ------------------------------------------------------------------------ */

/* Registers or replaces an instance of a service.
 * OWNERSHIP: instance is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_register)(void *instance, const px_service_instance *service_instance,
                                             px_done_fn done, void *user, px_error *err);

/* Removes an instance; PX_ERR_NOT_FOUND if it is not registered.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_deregister)(void *instance, px_str service, px_str instance_id,
                                               px_done_fn done, void *user, px_error *err);

/* Lists the live instances of a service (none is not an error).
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_lookup)(void *instance, px_str service, px_lookup_done_fn done, void *user,
                                           px_error *err);

/* Watches a service: fn sees a PX_WATCH_PUT for every live instance first,
 * then every change, until unwatch.
 * OWNERSHIP: `user` must stay valid until unwatch returns.
 * THREADING: any thread. */
typedef px_status (*px_registry_on_watch)(void *instance, px_str service, px_watch_fn fn, void *user,
                                          uint64_t *out_watch_id, px_error *err);

/* Ends a watch. After it returns fn is not running and will not run.
 * THREADING: any thread except inside that watch's fn. */
typedef px_status (*px_registry_on_unwatch)(void *instance, uint64_t watch_id);

/* Renews a registered instance's TTL (its lease) for another ttl_ms (since
 * 1.4). PX_ERR_NOT_FOUND if it expired or was never registered (the caller
 * registers again).
 * OWNERSHIP: service and instance_id are borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_keepalive)(void *instance, px_str service, px_str instance_id, px_done_fn done,
                                              void *user, px_error *err);

/* Reads one key of the metadata store (since 1.4); see px_kv_get_done_fn.
 * OWNERSHIP: key is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_kv_get)(void *instance, px_str key, px_kv_get_done_fn done, void *user,
                                           px_error *err);

/* Writes one key (since 1.4). expected_version: PX_KV_ANY_VERSION =
 * unconditional; 0 = only if the key is absent (create); n = only if the
 * key's current version is n (compare-and-swap). A failed condition
 * completes with PX_ERR_FAILED_PRECONDITION (see px_kv_write_done_fn).
 * OWNERSHIP: key and value are borrowed for the call; the registry copies.
 * THREADING: any thread; done is called exactly once, on any thread, once
 *            the change is durable. */
typedef px_status (*px_registry_on_kv_put)(void *instance, px_str key, px_bytes value, uint64_t expected_version,
                                           px_kv_write_done_fn done, void *user, px_error *err);

/* Deletes one key (since 1.4), under the same version condition as
 * on_kv_put. Deleting an absent key with PX_KV_ANY_VERSION is
 * PX_ERR_NOT_FOUND.
 * OWNERSHIP: key is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread, once
 *            the change is durable. */
typedef px_status (*px_registry_on_kv_delete)(void *instance, px_str key, uint64_t expected_version,
                                              px_kv_write_done_fn done, void *user, px_error *err);

/* Lists the keys under a prefix (since 1.4; the empty prefix lists all), in
 * byte order of their keys; see px_kv_list_done_fn.
 * OWNERSHIP: prefix is borrowed for the call.
 * THREADING: any thread; done is called exactly once, on any thread. */
typedef px_status (*px_registry_on_kv_list)(void *instance, px_str prefix, px_kv_list_done_fn done, void *user,
                                            px_error *err);

/* Watches the keys under a prefix (since 1.4). from_revision 0: changes
 * after the watch is made (list first and watch from the list's revision + 1
 * to miss nothing); n > 0: every change with revision >= n, replayed first,
 * then live ones. PX_ERR_OUT_OF_RANGE (returned synchronously) when history
 * before n is no longer kept (compacted).
 * OWNERSHIP: prefix is borrowed for the call; `user` must stay valid until
 *            unwatch returns.
 * THREADING: any thread; fn as px_kv_watch_fn says. */
typedef px_status (*px_registry_on_kv_watch)(void *instance, px_str prefix, uint64_t from_revision,
                                             px_kv_watch_fn fn, void *user, uint64_t *out_watch_id, px_error *err);

/* Ends a metadata watch (since 1.4). After it returns fn is not running and
 * will not run.
 * THREADING: any thread except inside that watch's fn. */
typedef px_status (*px_registry_on_kv_unwatch)(void *instance, uint64_t watch_id);

/* The registry vtable, hung off the descriptor of a PX_KIND_REGISTRY plugin.
 * OWNERSHIP: owned by the plugin; static for the life of the image.
 * THREADING: read-only. */
typedef struct px_registry_vtable {
    uint32_t struct_size;
    uint32_t reserved;
    px_registry_on_register on_register;
    px_registry_on_deregister on_deregister;
    px_registry_on_lookup on_lookup;
    px_registry_on_watch on_watch;
    px_registry_on_unwatch on_unwatch;
    /* 1.4: each may be NULL (the kernel then answers PX_ERR_UNSUPPORTED:
     * "registry X has no metadata store" / "... has no keep-alive"). */
    px_registry_on_keepalive on_keepalive;
    px_registry_on_kv_get on_kv_get;
    px_registry_on_kv_put on_kv_put;
    px_registry_on_kv_delete on_kv_delete;
    px_registry_on_kv_list on_kv_list;
    px_registry_on_kv_watch on_kv_watch;
    px_registry_on_kv_unwatch on_kv_unwatch;
} px_registry_vtable;

/* ------------------------------------------------------------------------ */
/* The plugin: lifecycle hooks and descriptor                               */
/* ------------------------------------------------------------------------ */

enum px_plugin_kind {
    PX_KIND_PROTOCOL = 1u << 0,
    PX_KIND_REGISTRY = 1u << 1,
    PX_KIND_STORAGE = 1u << 2,
    PX_KIND_CONNECTOR = 1u << 3
};

/* Creates an instance from its configuration. Must not start work yet.
 * OWNERSHIP: api is the kernel's for the process lifetime; host is valid
 *            until on_destroy returns; config is borrowed for the call;
 *            *out_instance is owned by the plugin until on_destroy.
 * THREADING: called once, on a kernel lifecycle thread. */
typedef px_status (*px_plugin_on_create)(const px_host_api *api, px_host *host, const px_plugin_config *config,
                                         void **out_instance, px_error *err);

/* Starts the instance's work (listeners, timers, subscriptions). On failure
 * it undoes its own partial work before returning: the kernel then calls
 * on_destroy without on_stop.
 * THREADING: called once after on_create, on a kernel lifecycle thread,
 *            never concurrently with another lifecycle hook of the instance.
 *            The kernel gives up after the manifest's start deadline and
 *            abandons the instance: no further hook is called (it leaks). */
typedef px_status (*px_plugin_on_start)(void *instance, px_error *err);

/* Stops the instance's work within timeout_ms: close listeners, cancel
 * timers and subscriptions, finish or hand back in-flight work.
 * THREADING: called once, on a kernel lifecycle thread; the kernel gives up
 *            waiting after timeout_ms, marks the plugin failed and abandons
 *            the instance (on_destroy is not called). */
typedef px_status (*px_plugin_on_stop)(void *instance, uint64_t timeout_ms, px_error *err);

/* Frees the instance. Called after on_stop returned (or after on_create
 * when start failed), never while any other hook of the instance runs.
 * OWNERSHIP: the plugin frees everything it owns.
 * THREADING: a kernel lifecycle thread. */
typedef void (*px_plugin_on_destroy)(void *instance);

/* Reports health: PX_OK when healthy, an error status and a reason when not.
 * THREADING: any thread, concurrently with the plugin's own work; must be
 *            quick. */
typedef px_status (*px_plugin_on_health)(void *instance, px_error *err);
/* on_health answers PX_OK (healthy), PX_DEGRADED with the reason in err
 * (since 1.2: still serving, but part of it is impaired, e.g. one stream
 * fenced; the node stays ready), or any error status (unhealthy: the node is
 * not ready while it lasts). A 1.1 kernel reports PX_DEGRADED as unhealthy. */

/* What a plugin is: returned by the entry symbol.
 * OWNERSHIP: owned by the plugin; must stay valid while the image is mapped
 *            (a static const object).
 * THREADING: read-only. */
typedef struct px_plugin_descriptor {
    uint32_t struct_size;
    uint16_t abi_major;           /* the ABI the plugin was built against */
    uint16_t abi_minor;
    const char *name;             /* NUL-terminated */
    const char *version;          /* NUL-terminated SemVer */
    uint32_t kinds;               /* px_plugin_kind bits */
    uint32_t reserved;
    const char *toolchain;        /* "swift-6.3.1" for Swift plugins; NULL for C */
    px_plugin_on_create on_create;
    px_plugin_on_start on_start;
    px_plugin_on_stop on_stop;
    px_plugin_on_destroy on_destroy;
    px_plugin_on_health on_health; /* may be NULL: always healthy */
    const px_storage_vtable *storage;   /* non-NULL iff PX_KIND_STORAGE */
    const px_registry_vtable *registry; /* non-NULL iff PX_KIND_REGISTRY */
} px_plugin_descriptor;

/* The entry point, exported as PX_PLUGIN_ENTRY_SYMBOL. The host offers its
 * version in api->abi_major/abi_minor; the plugin refuses with
 * PX_ERR_VERSION_MISMATCH unless the majors match and its minor is no
 * greater than the host's, else it sets *out_descriptor. It must do nothing
 * else: no threads, no I/O.
 * OWNERSHIP: api is the kernel's for the process lifetime.
 * THREADING: called once per image, on a kernel lifecycle thread. */
typedef px_status (*px_plugin_entry_fn)(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                        px_error *err);

/* The entry point itself; every plugin defines it with PX_EXPORT. */
PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

/* Negotiation as every plugin should do it: PX_OK when a plugin built
 * against this header may run on the host offering `api`.
 * THREADING: any thread. */
static inline px_status px_negotiate(const px_host_api *api, px_error *err) {
    const uint32_t needed_minor = PX_ABI_VERSION_MINOR;
    if (api == NULL) {
        px_error_set(err, "no host API table was offered");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (api->abi_major != PX_ABI_VERSION_MAJOR) {
        px_error_set(err, "plugin needs ABI major version " PX_STRINGIFY(PX_ABI_VERSION_MAJOR));
        return PX_ERR_VERSION_MISMATCH;
    }
    if ((uint32_t)api->abi_minor < needed_minor) {
        px_error_set(err, "plugin needs a newer ABI minor version than the host offers");
        return PX_ERR_VERSION_MISMATCH;
    }
    return PX_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* PLEXUS_H */
