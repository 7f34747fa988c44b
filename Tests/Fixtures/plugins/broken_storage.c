/*
 * broken_storage.c - fixture: a tiny in-memory storage plugin that breaks the
 * storage contract on purpose, for the conformance kit's own tests.
 *
 * Embodies: name "broken-storage", version "1.0.0", kind storage, durability
 * NONE. It loads, creates, starts, stops and destroys cleanly, and most of
 * its storage hooks are right. These bugs are deliberate:
 *
 *   - after every 10th append to a stream, one offset is skipped;
 *   - an empty batch fails with PX_ERR_INVALID_ARGUMENT;
 *   - reading at the end of a stream fails with PX_ERR_OUT_OF_RANGE instead
 *     of returning zero records;
 *   - fetching the offset of a group that never committed returns 0 instead
 *     of PX_OFFSET_NONE;
 *   - on_commit_offset calls its completion twice;
 *   - on_trim with nothing to discard (before_offset at or below the first
 *     retained offset) returns PX_OK and never calls its completion;
 *   - on_read with max_records 0 returns PX_ERR_INVALID_ARGUMENT and calls
 *     its completion as well.
 *
 * Its new streams start at offset 1: the contract fixes no first offset, so
 * that must fail nothing.
 *
 * `plexus conformance --kind storage` must fail exactly these rules (the
 * conformance tests read this list):
 *   storage.append.dense-offsets          the skipped offsets
 *   storage.append.concurrent-appenders   the skipped offsets
 *   storage.append.empty-batch            the refused empty batch
 *   storage.read.at-end-returns-nothing   PX_ERR_OUT_OF_RANGE at the end
 *   storage.offsets.none-before-commit    0 instead of PX_OFFSET_NONE
 *   storage.trim.keeps-offsets            the trim that never completes
 *   storage.completion.exactly-once       commit twice, that trim never
 *   storage.completion.never-after-error  the completion after an error
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     broken_storage.c -o libbroken_storage.so
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

/* ------------------------------------------------------------------------ */
/* Stored events                                                            */
/* ------------------------------------------------------------------------ */

typedef struct bs_record {
    px_record record; /* record.event points at `event` */
    px_event event;   /* every string and byte span owned by the record */
    size_t size;      /* bytes counted against max_bytes and size_bytes */
} bs_record;

typedef struct bs_group {
    char *name;
    uint64_t offset;
} bs_group;

typedef struct bs_stream {
    char *name;
    bs_record **records; /* in offset order; offsets may have gaps (the bug) */
    size_t count;
    size_t capacity;
    uint64_t first_offset;
    uint64_t next_offset;
    uint64_t size_bytes;
    uint64_t appends;
    bs_group *groups;
    size_t group_count;
} bs_stream;

typedef struct bs_instance {
    pthread_mutex_t lock;
    bs_stream **streams; /* never freed before on_destroy: handles stay valid */
    size_t stream_count;
} bs_instance;

static const px_str bs_no_error = {NULL, 0};

/* A copy of a borrowed string; absent ({NULL, 0}) stays absent. */
static int bs_copy_str(px_str *out, px_str in) {
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

static void bs_free_record(bs_record *r) {
    size_t i;
    if (r == NULL) {
        return;
    }
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

/* A deep copy of a borrowed event, or NULL when out of memory. */
static bs_record *bs_copy_event(const px_event *e, uint64_t offset, uint64_t now_ns) {
    size_t i;
    int failed = 0;
    bs_record *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->event.struct_size = sizeof(px_event);
    failed |= bs_copy_str(&r->event.id, e->id);
    failed |= bs_copy_str(&r->event.source, e->source);
    failed |= bs_copy_str(&r->event.specversion, e->specversion);
    failed |= bs_copy_str(&r->event.type, e->type);
    failed |= bs_copy_str(&r->event.datacontenttype, e->datacontenttype);
    failed |= bs_copy_str(&r->event.dataschema, e->dataschema);
    failed |= bs_copy_str(&r->event.subject, e->subject);
    failed |= bs_copy_str(&r->event.time, e->time);
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
                failed |= bs_copy_str(&ext[i].key, e->extensions[i].key);
                failed |= bs_copy_str(&ext[i].value, e->extensions[i].value);
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
        bs_free_record(r);
        return NULL;
    }
    r->record.struct_size = sizeof(px_record);
    r->record.offset = offset;
    r->record.append_time_ns = now_ns;
    r->record.event = &r->event;
    return r;
}

static uint64_t bs_now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int bs_reserve(bs_stream *s, size_t more) {
    size_t wanted = s->count + more;
    bs_record **grown;
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

static void bs_free_stream(bs_stream *s) {
    size_t i;
    for (i = 0; i < s->count; i++) {
        bs_free_record(s->records[i]);
    }
    for (i = 0; i < s->group_count; i++) {
        free(s->groups[i].name);
    }
    free(s->groups);
    free(s->records);
    free(s->name);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* Storage hooks                                                            */
/* ------------------------------------------------------------------------ */

static px_status bs_open_stream(void *instance, px_str name, const px_stream_options *options,
                                px_stream **out_stream, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = NULL;
    bs_stream **grown;
    size_t i;
    (void)options;
    if (name.ptr == NULL || name.len == 0 || out_stream == NULL) {
        px_error_set(err, "broken-storage: a stream needs a name and an out pointer");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    for (i = 0; i < bs->stream_count; i++) {
        if (strlen(bs->streams[i]->name) == name.len && memcmp(bs->streams[i]->name, name.ptr, name.len) == 0) {
            s = bs->streams[i];
            break;
        }
    }
    if (s == NULL) {
        px_str copy;
        s = calloc(1, sizeof *s);
        grown = realloc(bs->streams, (bs->stream_count + 1) * sizeof *grown);
        if (s == NULL || grown == NULL || bs_copy_str(&copy, name) != 0) {
            free(s);
            if (grown != NULL) {
                bs->streams = grown;
            }
            pthread_mutex_unlock(&bs->lock);
            px_error_set(err, "broken-storage: out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        s->name = (char *)copy.ptr;
        s->first_offset = 1; /* allowed: the contract fixes no first offset */
        s->next_offset = 1;
        bs->streams = grown;
        bs->streams[bs->stream_count++] = s;
    }
    pthread_mutex_unlock(&bs->lock);
    *out_stream = (px_stream *)s;
    return PX_OK;
}

static void bs_close_stream(void *instance, px_stream *stream) {
    /* Streams live until on_destroy, so a reopened name finds its events. */
    (void)instance;
    (void)stream;
}

static px_status bs_append(void *instance, px_stream *stream, const px_event *const *events, size_t count,
                           px_append_done_fn done, void *user, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    uint64_t first, now;
    size_t i;
    if (s == NULL || done == NULL || (events == NULL && count > 0)) {
        px_error_set(err, "broken-storage: on_append needs a stream, a completion and events");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (count == 0) {
        /* BUG (storage.append.empty-batch): an empty batch must succeed. */
        px_error_set(err, "broken-storage: refuses empty batches");
        return PX_ERR_INVALID_ARGUMENT;
    }
    for (i = 0; i < count; i++) {
        if (events[i] == NULL) {
            px_error_set(err, "broken-storage: a NULL event in the batch");
            return PX_ERR_INVALID_ARGUMENT;
        }
    }
    now = bs_now_ns();
    pthread_mutex_lock(&bs->lock);
    if (bs_reserve(s, count) != 0) {
        pthread_mutex_unlock(&bs->lock);
        px_error_set(err, "broken-storage: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    first = s->next_offset;
    for (i = 0; i < count; i++) {
        bs_record *r = bs_copy_event(events[i], first + i, now);
        if (r == NULL) {
            while (i > 0) {
                bs_free_record(s->records[--s->count]);
                i--;
            }
            pthread_mutex_unlock(&bs->lock);
            px_error_set(err, "broken-storage: out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        s->records[s->count++] = r;
        s->size_bytes += r->size;
    }
    s->next_offset = first + count;
    s->appends++;
    if (s->appends % 10 == 0) {
        s->next_offset++; /* BUG (storage.append.dense-offsets): skips an offset */
    }
    pthread_mutex_unlock(&bs->lock);
    done(user, PX_OK, first, bs_no_error);
    return PX_OK;
}

static px_status bs_read(void *instance, px_stream *stream, uint64_t from_offset, size_t max_records,
                         size_t max_bytes, px_read_done_fn done, void *user, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    const px_record **out;
    size_t i, n = 0, bytes = 0;
    uint64_t next;
    if (s == NULL || done == NULL) {
        px_error_set(err, "broken-storage: on_read needs a stream and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (max_records == 0) {
        /* BUG (storage.completion.never-after-error): completes although it returns an error. */
        px_str why = {"max_records is 0", 16};
        done(user, PX_ERR_INVALID_ARGUMENT, NULL, 0, from_offset, why);
        px_error_set(err, "broken-storage: max_records is 0");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    /* BUG (storage.read.at-end-returns-nothing): `>=` refuses a read at the end. */
    if (from_offset < s->first_offset || from_offset >= s->next_offset) {
        pthread_mutex_unlock(&bs->lock);
        px_error_set(err, "broken-storage: offset out of range");
        return PX_ERR_OUT_OF_RANGE;
    }
    out = malloc((max_records < s->count ? max_records : s->count) * sizeof *out + 1);
    if (out == NULL) {
        pthread_mutex_unlock(&bs->lock);
        px_error_set(err, "broken-storage: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    for (i = 0; i < s->count && n < max_records; i++) {
        bs_record *r = s->records[i];
        if (r->record.offset < from_offset) {
            continue;
        }
        if (n > 0 && bytes + r->size > max_bytes) {
            break;
        }
        out[n++] = &r->record;
        bytes += r->size;
    }
    next = n > 0 ? out[n - 1]->offset + 1 : s->next_offset;
    /* The records stay valid for the callback because the lock is held. */
    done(user, PX_OK, out, n, next, bs_no_error);
    pthread_mutex_unlock(&bs->lock);
    free(out);
    return PX_OK;
}

static px_status bs_commit_offset(void *instance, px_stream *stream, px_str group, uint64_t offset,
                                  px_done_fn done, void *user, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    size_t i;
    if (s == NULL || done == NULL || group.ptr == NULL) {
        px_error_set(err, "broken-storage: on_commit_offset needs a stream, a group and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    for (i = 0; i < s->group_count; i++) {
        if (strlen(s->groups[i].name) == group.len && memcmp(s->groups[i].name, group.ptr, group.len) == 0) {
            break;
        }
    }
    if (i == s->group_count) {
        px_str copy;
        bs_group *grown = realloc(s->groups, (s->group_count + 1) * sizeof *grown);
        if (grown == NULL || bs_copy_str(&copy, group) != 0) {
            if (grown != NULL) {
                s->groups = grown;
            }
            pthread_mutex_unlock(&bs->lock);
            px_error_set(err, "broken-storage: out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        s->groups = grown;
        s->groups[i].name = (char *)copy.ptr;
        s->group_count++;
    }
    s->groups[i].offset = offset;
    pthread_mutex_unlock(&bs->lock);
    done(user, PX_OK, bs_no_error);
    done(user, PX_OK, bs_no_error); /* BUG (storage.completion.exactly-once): a second call */
    return PX_OK;
}

static px_status bs_fetch_offset(void *instance, px_stream *stream, px_str group, px_offset_done_fn done,
                                 void *user, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    uint64_t offset = 0; /* BUG (storage.offsets.none-before-commit): should be PX_OFFSET_NONE */
    size_t i;
    if (s == NULL || done == NULL || group.ptr == NULL) {
        px_error_set(err, "broken-storage: on_fetch_offset needs a stream, a group and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    for (i = 0; i < s->group_count; i++) {
        if (strlen(s->groups[i].name) == group.len && memcmp(s->groups[i].name, group.ptr, group.len) == 0) {
            offset = s->groups[i].offset;
            break;
        }
    }
    pthread_mutex_unlock(&bs->lock);
    done(user, PX_OK, offset, bs_no_error);
    return PX_OK;
}

static px_status bs_trim(void *instance, px_stream *stream, uint64_t before_offset, px_done_fn done, void *user,
                         px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    size_t dropped = 0, i;
    if (s == NULL || done == NULL) {
        px_error_set(err, "broken-storage: on_trim needs a stream and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    if (before_offset <= s->first_offset) {
        pthread_mutex_unlock(&bs->lock);
        return PX_OK; /* BUG (storage.trim.keeps-offsets): PX_OK, and done is never called */
    }
    if (before_offset > s->next_offset) {
        before_offset = s->next_offset;
    }
    while (dropped < s->count && s->records[dropped]->record.offset < before_offset) {
        s->size_bytes -= s->records[dropped]->size;
        bs_free_record(s->records[dropped]);
        dropped++;
    }
    for (i = dropped; i < s->count; i++) {
        s->records[i - dropped] = s->records[i];
    }
    s->count -= dropped;
    s->first_offset = before_offset;
    pthread_mutex_unlock(&bs->lock);
    done(user, PX_OK, bs_no_error);
    return PX_OK;
}

static px_status bs_stream_info(void *instance, px_stream *stream, px_stream_info *out, px_error *err) {
    bs_instance *bs = instance;
    bs_stream *s = (bs_stream *)stream;
    if (s == NULL || out == NULL) {
        px_error_set(err, "broken-storage: on_stream_info needs a stream and an out struct");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&bs->lock);
    out->first_offset = s->first_offset;
    out->next_offset = s->next_offset;
    out->size_bytes = s->size_bytes;
    pthread_mutex_unlock(&bs->lock);
    return PX_OK;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static px_status bs_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    bs_instance *bs;
    (void)api;
    (void)host;
    (void)config;
    bs = calloc(1, sizeof *bs);
    if (bs == NULL || pthread_mutex_init(&bs->lock, NULL) != 0) {
        free(bs);
        px_error_set(err, "broken-storage: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = bs;
    return PX_OK;
}

static px_status bs_on_start(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

static px_status bs_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK;
}

static void bs_on_destroy(void *instance) {
    bs_instance *bs = instance;
    size_t i;
    for (i = 0; i < bs->stream_count; i++) {
        bs_free_stream(bs->streams[i]);
    }
    free(bs->streams);
    pthread_mutex_destroy(&bs->lock);
    free(bs);
}

static const px_storage_vtable bs_storage = {
    sizeof(px_storage_vtable), /* struct_size */
    PX_DURABILITY_NONE,        /* durability */
    bs_open_stream,
    bs_close_stream,
    bs_append,
    bs_read,
    bs_commit_offset,
    bs_fetch_offset,
    bs_trim,
    bs_stream_info,
};

static const px_plugin_descriptor bs_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major */
    PX_ABI_VERSION_MINOR,         /* abi_minor */
    "broken-storage",             /* name */
    "1.0.0",                      /* version */
    PX_KIND_STORAGE,              /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain */
    bs_on_create,
    bs_on_start,
    bs_on_stop,
    bs_on_destroy,
    NULL,        /* on_health: always healthy */
    &bs_storage, /* storage */
    NULL         /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &bs_descriptor;
    return PX_OK;
}
