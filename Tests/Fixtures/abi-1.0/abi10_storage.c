/*
 * abi10_storage.c - fixture: an in-memory storage built against the
 * published ABI 1.0 header, loaded into a newer (1.1+) kernel.
 *
 * Proves: a storage plugin built against an older minor keeps working. It
 * declares ABI 1.0 in its descriptor (from the 1.0 header's
 * PX_ABI_VERSION_MINOR) and its px_storage_vtable is the 1.0 size, 72 bytes:
 * it has none of the hooks 1.1 appended (on_open_stream_async,
 * on_read_batch). The kernel must
 *   - accept the 72-byte table and copy it into a full-size one whose 1.1
 *     hooks are zero, so that it falls back to on_open_stream and on_read;
 *   - never read past the end of the plugin's table: the table is followed
 *     in this image by two non-NULL words exactly where a 1.1 table has its
 *     new hooks (abi10_image.beyond). Were the kernel to read the table in
 *     place at its own size, it would see "hooks" there and call them; they
 *     count the calls (px_op_abi10_storage_beyond_end_calls), and a test
 *     expects zero. (They are called through another function type, which C
 *     leaves undefined: it is a trap for a defect, not an API.)
 *   - pass every rule of the conformance kit's storage suite
 *     (Conformance.run(.storage, ...)).
 *
 * Name "abi10-storage", version "1.0.0", kind storage, durability NONE.
 * Thread-safe: one pthread mutex per instance guards every stream. Records
 * are reference-counted, so a read lends them to its completion without
 * holding the lock (the completion may call back into the storage) and
 * without copying; a trim that runs meanwhile frees them afterwards.
 * Completions are called after the lock is released, exactly once when a
 * hook returns PX_OK and never when it returns an error.
 *
 * Operations (manifest `operations`):
 *   px_op_abi10_storage_beyond_end_calls  uint64 (instance)
 *   px_op_abi10_storage_committed         uint64 (instance, string, string)
 *       the committed offset of group (3rd) on stream (2nd), or
 *       PX_OFFSET_NONE
 *
 * Built at test time against the 1.0 header, C99 and libc only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.0 abi10_storage.c -o libabi10_storage.so
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

#define ST_NAME "abi10-storage"

/* ------------------------------------------------------------------------ */
/* Stored events                                                            */
/* ------------------------------------------------------------------------ */

typedef struct st_record {
    px_record record; /* record.event points at `event` */
    px_event event;   /* every string and byte span owned by the record */
    size_t size;      /* bytes counted against max_bytes and size_bytes */
    size_t refs;      /* 1 while the stream holds it, +1 per read lending it; under the lock */
} st_record;

typedef struct st_group {
    char *name;
    size_t name_len;
    uint64_t offset;
} st_group;

typedef struct st_stream {
    char *name;
    size_t name_len;
    st_record **records; /* dense: records[i] has offset first_offset + i */
    size_t count;
    size_t capacity;
    uint64_t first_offset;
    uint64_t next_offset;
    uint64_t size_bytes;
    st_group *groups;
    size_t group_count;
} st_stream;

typedef struct st_instance {
    pthread_mutex_t lock;
    st_stream **streams; /* kept until on_destroy: a reopened name finds its events */
    size_t stream_count;
} st_instance;

static const px_str st_no_error = {NULL, 0};

static int st_same(const char *a, size_t a_len, px_str b) { return a_len == b.len && memcmp(a, b.ptr, b.len) == 0; }

/* A NUL-terminated copy of a borrowed string; absent ({NULL, 0}) stays absent. */
static int st_copy_str(px_str *out, px_str in) {
    char *copy;
    if (in.ptr == NULL) {
        out->ptr = NULL;
        out->len = 0;
        return 0;
    }
    copy = malloc(in.len + 1);
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, in.ptr, in.len);
    copy[in.len] = '\0';
    out->ptr = copy;
    out->len = in.len;
    return 0;
}

static void st_free_record(st_record *r) {
    size_t i;
    free((void *)r->event.id.ptr);
    free((void *)r->event.source.ptr);
    free((void *)r->event.specversion.ptr);
    free((void *)r->event.type.ptr);
    free((void *)r->event.datacontenttype.ptr);
    free((void *)r->event.dataschema.ptr);
    free((void *)r->event.subject.ptr);
    free((void *)r->event.time.ptr);
    for (i = 0; i < r->event.extension_count; i++) {
        free((void *)r->event.extensions[i].key.ptr);
        free((void *)r->event.extensions[i].value.ptr);
    }
    free((void *)r->event.extensions);
    free((void *)r->event.data.ptr);
    free(r);
}

/* Drops one reference; frees the record with the last. Under the lock. */
static void st_release(st_record *r) {
    if (--r->refs == 0) {
        st_free_record(r);
    }
}

/* A deep copy of a borrowed event, or NULL when out of memory. */
static st_record *st_copy_event(const px_event *e, uint64_t offset, uint64_t now_ns) {
    size_t i;
    int failed = 0;
    st_record *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->refs = 1;
    r->event.struct_size = sizeof(px_event);
    failed |= st_copy_str(&r->event.id, e->id);
    failed |= st_copy_str(&r->event.source, e->source);
    failed |= st_copy_str(&r->event.specversion, e->specversion);
    failed |= st_copy_str(&r->event.type, e->type);
    failed |= st_copy_str(&r->event.datacontenttype, e->datacontenttype);
    failed |= st_copy_str(&r->event.dataschema, e->dataschema);
    failed |= st_copy_str(&r->event.subject, e->subject);
    failed |= st_copy_str(&r->event.time, e->time);
    r->size = e->id.len + e->source.len + e->specversion.len + e->type.len + e->datacontenttype.len +
              e->dataschema.len + e->subject.len + e->time.len + e->data.len;
    if (e->extensions != NULL && e->extension_count > 0) {
        px_kv *ext = calloc(e->extension_count, sizeof *ext);
        if (ext == NULL) {
            failed = 1;
        } else {
            r->event.extensions = ext;
            r->event.extension_count = e->extension_count;
            for (i = 0; i < e->extension_count; i++) {
                failed |= st_copy_str(&ext[i].key, e->extensions[i].key);
                failed |= st_copy_str(&ext[i].value, e->extensions[i].value);
                r->size += e->extensions[i].key.len + e->extensions[i].value.len;
            }
        }
    }
    if (e->data.ptr != NULL && e->data.len > 0) {
        uint8_t *data = malloc(e->data.len);
        if (data == NULL) {
            failed = 1;
        } else {
            memcpy(data, e->data.ptr, e->data.len);
            r->event.data.ptr = data;
            r->event.data.len = e->data.len;
        }
    }
    if (failed) {
        st_free_record(r);
        return NULL;
    }
    r->record.struct_size = sizeof(px_record);
    r->record.offset = offset;
    r->record.append_time_ns = now_ns;
    r->record.event = &r->event;
    return r;
}

static uint64_t st_now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int st_reserve(st_stream *s, size_t more) {
    size_t wanted = s->count + more;
    st_record **grown;
    if (wanted <= s->capacity) {
        return 0;
    }
    if (wanted < s->capacity * 2) {
        wanted = s->capacity * 2;
    }
    if (wanted < 16) {
        wanted = 16;
    }
    grown = realloc(s->records, wanted * sizeof *grown);
    if (grown == NULL) {
        return -1;
    }
    s->records = grown;
    s->capacity = wanted;
    return 0;
}

static void st_free_stream(st_stream *s) {
    size_t i;
    for (i = 0; i < s->count; i++) {
        st_release(s->records[i]);
    }
    for (i = 0; i < s->group_count; i++) {
        free(s->groups[i].name);
    }
    free(s->groups);
    free(s->records);
    free(s->name);
    free(s);
}

/* The group's slot on a stream, or NULL. Under the lock. */
static st_group *st_find_group(st_stream *s, px_str group) {
    size_t i;
    for (i = 0; i < s->group_count; i++) {
        if (st_same(s->groups[i].name, s->groups[i].name_len, group)) {
            return &s->groups[i];
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Storage hooks (every one of ABI 1.0)                                     */
/* ------------------------------------------------------------------------ */

static px_status st_open_stream(void *instance, px_str name, const px_stream_options *options,
                                px_stream **out_stream, px_error *err) {
    st_instance *st = instance;
    st_stream *s = NULL;
    size_t i;
    (void)options; /* retention is not applied: events live until trimmed */
    if (st == NULL || name.ptr == NULL || name.len == 0 || out_stream == NULL) {
        px_error_set(err, ST_NAME ": on_open_stream needs a name and an out pointer");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    for (i = 0; i < st->stream_count && s == NULL; i++) {
        if (st_same(st->streams[i]->name, st->streams[i]->name_len, name)) {
            s = st->streams[i];
        }
    }
    if (s == NULL) {
        px_str copy = {NULL, 0};
        st_stream **grown = realloc(st->streams, (st->stream_count + 1) * sizeof *grown);
        if (grown != NULL) {
            st->streams = grown;
        }
        s = calloc(1, sizeof *s);
        if (grown == NULL || s == NULL || st_copy_str(&copy, name) != 0) {
            free(s);
            pthread_mutex_unlock(&st->lock);
            px_error_set(err, ST_NAME ": out of memory opening a stream");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        s->name = (char *)copy.ptr;
        s->name_len = copy.len;
        st->streams[st->stream_count++] = s;
    }
    pthread_mutex_unlock(&st->lock);
    *out_stream = (px_stream *)s;
    return PX_OK;
}

static void st_close_stream(void *instance, px_stream *stream) {
    /* Streams live until on_destroy, so a reopened name finds its events and offsets. */
    (void)instance;
    (void)stream;
}

static px_status st_append(void *instance, px_stream *stream, const px_event *const *events, size_t count,
                           px_append_done_fn done, void *user, px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    uint64_t first, now;
    size_t i;
    if (st == NULL || s == NULL || done == NULL || (events == NULL && count > 0)) {
        px_error_set(err, ST_NAME ": on_append needs a stream, events and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    for (i = 0; i < count; i++) {
        if (events[i] == NULL) {
            px_error_set(err, ST_NAME ": the batch holds a NULL event");
            return PX_ERR_INVALID_ARGUMENT;
        }
    }
    now = st_now_ns();
    pthread_mutex_lock(&st->lock);
    if (st_reserve(s, count) != 0) {
        pthread_mutex_unlock(&st->lock);
        px_error_set(err, ST_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    first = s->next_offset;
    for (i = 0; i < count; i++) {
        st_record *r = st_copy_event(events[i], first + i, now);
        if (r == NULL) {
            while (i-- > 0) { /* all or nothing */
                s->size_bytes -= s->records[s->count - 1]->size;
                st_release(s->records[--s->count]);
            }
            pthread_mutex_unlock(&st->lock);
            px_error_set(err, ST_NAME ": out of memory copying an event");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        s->records[s->count++] = r;
        s->size_bytes += r->size;
    }
    s->next_offset = first + count;
    pthread_mutex_unlock(&st->lock);
    /* Durability NONE: stored in memory is as durable as it gets. */
    done(user, PX_OK, first, st_no_error);
    return PX_OK;
}

static px_status st_read(void *instance, px_stream *stream, uint64_t from_offset, size_t max_records,
                         size_t max_bytes, px_read_done_fn done, void *user, px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    st_record **lent = NULL;
    const px_record **out = NULL;
    size_t i, n = 0, bytes = 0, start, available;
    uint64_t next;
    if (st == NULL || s == NULL || done == NULL || max_records == 0) {
        px_error_set(err, ST_NAME ": on_read needs a stream, a completion and max_records > 0");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    if (from_offset < s->first_offset || from_offset > s->next_offset) {
        pthread_mutex_unlock(&st->lock);
        px_error_set(err, from_offset < s->first_offset ? ST_NAME ": offset before the first retained one"
                                                        : ST_NAME ": offset past the end of the stream");
        return PX_ERR_OUT_OF_RANGE;
    }
    start = (size_t)(from_offset - s->first_offset);
    available = s->count - start;
    if (available > max_records) {
        available = max_records;
    }
    if (available > 0) {
        lent = malloc(available * sizeof *lent);
        out = malloc(available * sizeof *out);
        if (lent == NULL || out == NULL) {
            pthread_mutex_unlock(&st->lock);
            free(lent);
            free((void *)out);
            px_error_set(err, ST_NAME ": out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
    }
    for (i = start; n < available; i++) {
        st_record *r = s->records[i];
        if (n > 0 && bytes + r->size > max_bytes) {
            break; /* at least one record, then about max_bytes */
        }
        r->refs++; /* lent to the completion: a concurrent trim cannot free it */
        lent[n] = r;
        out[n] = &r->record;
        n++;
        bytes += r->size;
    }
    next = n > 0 ? out[n - 1]->offset + 1 : from_offset;
    pthread_mutex_unlock(&st->lock);

    /* Outside the lock: the completion may call the storage again. */
    done(user, PX_OK, out, n, next, st_no_error);

    if (n > 0) {
        pthread_mutex_lock(&st->lock);
        for (i = 0; i < n; i++) {
            st_release(lent[i]);
        }
        pthread_mutex_unlock(&st->lock);
    }
    free(lent);
    free((void *)out);
    return PX_OK;
}

static px_status st_commit_offset(void *instance, px_stream *stream, px_str group, uint64_t offset,
                                  px_done_fn done, void *user, px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    st_group *g;
    if (st == NULL || s == NULL || done == NULL || group.ptr == NULL || group.len == 0) {
        px_error_set(err, ST_NAME ": on_commit_offset needs a stream, a group and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    g = st_find_group(s, group);
    if (g == NULL) {
        px_str copy = {NULL, 0};
        st_group *grown = realloc(s->groups, (s->group_count + 1) * sizeof *grown);
        if (grown != NULL) {
            s->groups = grown;
        }
        if (grown == NULL || st_copy_str(&copy, group) != 0) {
            pthread_mutex_unlock(&st->lock);
            px_error_set(err, ST_NAME ": out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        g = &s->groups[s->group_count++];
        g->name = (char *)copy.ptr;
        g->name_len = copy.len;
    }
    g->offset = offset;
    pthread_mutex_unlock(&st->lock);
    done(user, PX_OK, st_no_error);
    return PX_OK;
}

static px_status st_fetch_offset(void *instance, px_stream *stream, px_str group, px_offset_done_fn done,
                                 void *user, px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    const st_group *g;
    uint64_t offset;
    if (st == NULL || s == NULL || done == NULL || group.ptr == NULL || group.len == 0) {
        px_error_set(err, ST_NAME ": on_fetch_offset needs a stream, a group and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    g = st_find_group(s, group);
    offset = g != NULL ? g->offset : PX_OFFSET_NONE;
    pthread_mutex_unlock(&st->lock);
    done(user, PX_OK, offset, st_no_error);
    return PX_OK;
}

static px_status st_trim(void *instance, px_stream *stream, uint64_t before_offset, px_done_fn done, void *user,
                         px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    size_t dropped = 0, i;
    if (st == NULL || s == NULL || done == NULL) {
        px_error_set(err, ST_NAME ": on_trim needs a stream and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    if (before_offset > s->next_offset) {
        before_offset = s->next_offset; /* offsets never move past the end */
    }
    if (before_offset > s->first_offset) {
        dropped = (size_t)(before_offset - s->first_offset);
        for (i = 0; i < dropped; i++) {
            s->size_bytes -= s->records[i]->size;
            st_release(s->records[i]); /* a read lending it frees it later */
        }
        memmove(s->records, s->records + dropped, (s->count - dropped) * sizeof *s->records);
        s->count -= dropped;
        s->first_offset = before_offset;
    }
    pthread_mutex_unlock(&st->lock);
    done(user, PX_OK, st_no_error);
    return PX_OK;
}

static px_status st_stream_info(void *instance, px_stream *stream, px_stream_info *out, px_error *err) {
    st_instance *st = instance;
    st_stream *s = (st_stream *)stream;
    if (st == NULL || s == NULL || out == NULL) {
        px_error_set(err, ST_NAME ": on_stream_info needs a stream and an out struct");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&st->lock);
    /* Only the fields 1.0 knows; struct_size stays as the caller set it. */
    out->first_offset = s->first_offset;
    out->next_offset = s->next_offset;
    out->size_bytes = s->size_bytes;
    pthread_mutex_unlock(&st->lock);
    return PX_OK;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static px_status st_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    st_instance *st;
    (void)api;
    (void)host;
    (void)config;
    if (out_instance == NULL) {
        px_error_set(err, ST_NAME ": on_create needs out_instance");
        return PX_ERR_INVALID_ARGUMENT;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        px_error_set(err, ST_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        px_error_set(err, ST_NAME ": cannot make a mutex");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = st;
    return PX_OK;
}

static px_status st_on_start(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK; /* nothing runs on its own: no threads, no timers */
}

static px_status st_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK; /* every hook completes before it returns: nothing is in flight */
}

static void st_on_destroy(void *instance) {
    st_instance *st = instance;
    size_t i;
    for (i = 0; i < st->stream_count; i++) {
        st_free_stream(st->streams[i]);
    }
    free(st->streams);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* ------------------------------------------------------------------------ */
/* The trap past the end of the 1.0 table                                   */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t st_beyond_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t st_beyond_calls;

/* Stands where a 1.1 table has on_open_stream_async and on_read_batch.
 * Only a kernel that reads this plugin's table past its struct_size calls
 * it; it refuses whatever it was asked, and counts. */
static px_status st_beyond_end(void) {
    pthread_mutex_lock(&st_beyond_lock);
    st_beyond_calls++;
    pthread_mutex_unlock(&st_beyond_lock);
    return PX_ERR_INTERNAL;
}

/* The 1.0 vtable, then two non-NULL words where 1.1 appended its hooks. */
static const struct abi10_image {
    px_storage_vtable table;
    px_status (*beyond[2])(void);
} abi10_image = {
    {
        sizeof(px_storage_vtable), /* struct_size: 72, the 1.0 size */
        PX_DURABILITY_NONE,        /* durability */
        st_open_stream,
        st_close_stream,
        st_append,
        st_read,
        st_commit_offset,
        st_fetch_offset,
        st_trim,
        st_stream_info,
    },
    {st_beyond_end, st_beyond_end},
};

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* manifest: beyond-end-calls: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_storage_beyond_end_calls(void *instance);
PX_EXPORT uint64_t px_op_abi10_storage_beyond_end_calls(void *instance) {
    uint64_t calls;
    (void)instance;
    pthread_mutex_lock(&st_beyond_lock);
    calls = st_beyond_calls;
    pthread_mutex_unlock(&st_beyond_lock);
    return calls;
}

/* manifest: committed: uint64 (instance, string, string) - stream, group */
PX_EXPORT uint64_t px_op_abi10_storage_committed(void *instance, const char *stream, const char *group);
PX_EXPORT uint64_t px_op_abi10_storage_committed(void *instance, const char *stream, const char *group) {
    st_instance *st = instance;
    px_str stream_name = {stream, strlen(stream)};
    px_str group_name = {group, strlen(group)};
    uint64_t offset = PX_OFFSET_NONE;
    size_t i;
    pthread_mutex_lock(&st->lock);
    for (i = 0; i < st->stream_count; i++) {
        if (st_same(st->streams[i]->name, st->streams[i]->name_len, stream_name)) {
            const st_group *g = st_find_group(st->streams[i], group_name);
            if (g != NULL) {
                offset = g->offset;
            }
        }
    }
    pthread_mutex_unlock(&st->lock);
    return offset;
}

/* ------------------------------------------------------------------------ */
/* Descriptor and entry                                                     */
/* ------------------------------------------------------------------------ */

static const px_plugin_descriptor st_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size: 96 in 1.0 */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 0, from the 1.0 header */
    ST_NAME,                      /* name */
    "1.0.0",                      /* version */
    PX_KIND_STORAGE,              /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    st_on_create,
    st_on_start,
    st_on_stop,
    st_on_destroy,
    NULL,               /* on_health: always healthy */
    &abi10_image.table, /* storage */
    NULL                /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);
PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err); /* 1.0's: accepts any 1.x host from 1.0 up */
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &st_descriptor;
    return PX_OK;
}
