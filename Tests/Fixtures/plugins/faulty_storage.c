/*
 * faulty_storage.c - fixture plugin "faulty-storage", for process isolation.
 *
 * Embodies: a storage plugin (durability NONE) that keeps only a count of
 * events per stream, and fails the way its config key `fault` says:
 *
 *   fault: create   segfaults in on_create
 *   fault: start    segfaults in on_start
 *   fault: append   segfaults on the 10th append of the process (mid-traffic)
 *   fault: stop     on_stop never returns
 *   fault: thread   on_start leaks a thread that never ends; stop and destroy
 *                   behave (the thread outlives the instance)
 *   anything else   behaves
 *
 * With `isolation: process` the node must stay up through each: the child is
 * killed or dies alone, calls in flight fail with PX_ERR_UNAVAILABLE, and the
 * instance is restarted or quarantined. In-process the first three kill the
 * node: that is what isolation is for.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I Sources/PlexusABI/include
 *                     faulty_storage.c -o libfaulty_storage.so -lpthread
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

typedef struct fs_stream {
    uint64_t next_offset;
} fs_stream;

typedef struct fs_instance {
    char fault[16];
    pthread_mutex_t lock;
} fs_instance;

/* Appends made by this process, across streams. */
static uint64_t fs_appends = 0;
static pthread_mutex_t fs_appends_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int fs_forever = 1;

static void fs_crash(void) {
    volatile int *nowhere = NULL;
    *nowhere = 11;
}

static void *fs_leaked_thread(void *arg) {
    struct timespec second = {1, 0};
    (void)arg;
    while (fs_forever) {
        nanosleep(&second, NULL);
    }
    return NULL;
}

static int fs_is(const fs_instance *instance, const char *fault) { return strcmp(instance->fault, fault) == 0; }

static px_status fs_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    fs_instance *instance;
    size_t i;
    (void)api;
    (void)host;
    instance = calloc(1, sizeof *instance);
    if (instance == NULL) {
        px_error_set(err, "faulty-storage: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_init(&instance->lock, NULL);
    for (i = 0; i < config->entry_count; i++) {
        const px_kv *kv = &config->entries[i];
        if (kv->key.len == 5 && memcmp(kv->key.ptr, "fault", 5) == 0 && kv->value.len < sizeof instance->fault) {
            memcpy(instance->fault, kv->value.ptr, kv->value.len);
        }
    }
    if (fs_is(instance, "create")) {
        fs_crash();
    }
    *out_instance = instance;
    return PX_OK;
}

static px_status fs_on_start(void *raw, px_error *err) {
    fs_instance *instance = raw;
    pthread_t thread;
    if (fs_is(instance, "start")) {
        fs_crash();
    }
    if (fs_is(instance, "thread")) {
        if (pthread_create(&thread, NULL, fs_leaked_thread, NULL) != 0) {
            px_error_set(err, "faulty-storage: cannot start its thread");
            return PX_ERR_INTERNAL;
        }
        pthread_detach(thread);
    }
    return PX_OK;
}

static px_status fs_on_stop(void *raw, uint64_t timeout_ms, px_error *err) {
    fs_instance *instance = raw;
    struct timespec second = {1, 0};
    (void)timeout_ms;
    (void)err;
    while (fs_is(instance, "stop") && fs_forever) {
        nanosleep(&second, NULL);
    }
    return PX_OK;
}

static void fs_on_destroy(void *raw) {
    fs_instance *instance = raw;
    pthread_mutex_destroy(&instance->lock);
    free(instance);
}

static px_status fs_open_stream(void *raw, px_str name, const px_stream_options *options, px_stream **out_stream,
                                px_error *err) {
    fs_stream *stream;
    (void)raw;
    (void)name;
    (void)options;
    stream = calloc(1, sizeof *stream);
    if (stream == NULL) {
        px_error_set(err, "faulty-storage: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_stream = (px_stream *)stream;
    return PX_OK;
}

static void fs_close_stream(void *raw, px_stream *stream) {
    (void)raw;
    free(stream);
}

static px_status fs_append(void *raw, px_stream *handle, const px_event *const *events, size_t count,
                           px_append_done_fn done, void *user, px_error *err) {
    fs_instance *instance = raw;
    fs_stream *stream = (fs_stream *)handle;
    uint64_t first;
    uint64_t appends;
    px_str none = {NULL, 0};
    (void)events;
    (void)err;
    pthread_mutex_lock(&fs_appends_lock);
    appends = ++fs_appends;
    pthread_mutex_unlock(&fs_appends_lock);
    if (fs_is(instance, "append") && appends == 10) {
        fs_crash();
    }
    pthread_mutex_lock(&instance->lock);
    first = stream->next_offset;
    stream->next_offset += count;
    pthread_mutex_unlock(&instance->lock);
    done(user, PX_OK, first, none);
    return PX_OK;
}

static px_status fs_read(void *raw, px_stream *handle, uint64_t from_offset, size_t max_records, size_t max_bytes,
                         px_read_done_fn done, void *user, px_error *err) {
    fs_stream *stream = (fs_stream *)handle;
    px_str none = {NULL, 0};
    (void)raw;
    (void)max_records;
    (void)max_bytes;
    (void)err;
    /* Events are counted, not kept: every read is at the end. */
    done(user, PX_OK, NULL, 0, from_offset > stream->next_offset ? from_offset : stream->next_offset, none);
    return PX_OK;
}

static px_status fs_commit_offset(void *raw, px_stream *stream, px_str group, uint64_t offset, px_done_fn done,
                                  void *user, px_error *err) {
    px_str none = {NULL, 0};
    (void)raw;
    (void)stream;
    (void)group;
    (void)offset;
    (void)err;
    done(user, PX_OK, none);
    return PX_OK;
}

static px_status fs_fetch_offset(void *raw, px_stream *stream, px_str group, px_offset_done_fn done, void *user,
                                 px_error *err) {
    px_str none = {NULL, 0};
    (void)raw;
    (void)stream;
    (void)group;
    (void)err;
    done(user, PX_OK, PX_OFFSET_NONE, none);
    return PX_OK;
}

static px_status fs_trim(void *raw, px_stream *stream, uint64_t before_offset, px_done_fn done, void *user,
                         px_error *err) {
    px_str none = {NULL, 0};
    (void)raw;
    (void)stream;
    (void)before_offset;
    (void)err;
    done(user, PX_OK, none);
    return PX_OK;
}

static px_status fs_stream_info(void *raw, px_stream *handle, px_stream_info *out, px_error *err) {
    fs_instance *instance = raw;
    fs_stream *stream = (fs_stream *)handle;
    (void)err;
    pthread_mutex_lock(&instance->lock);
    out->first_offset = stream->next_offset;
    out->next_offset = stream->next_offset;
    out->size_bytes = 0;
    pthread_mutex_unlock(&instance->lock);
    return PX_OK;
}

static const px_storage_vtable fs_storage = {
    sizeof(px_storage_vtable), PX_DURABILITY_NONE, fs_open_stream, fs_close_stream, fs_append, fs_read,
    fs_commit_offset, fs_fetch_offset, fs_trim, fs_stream_info, NULL, NULL, NULL, NULL, NULL, NULL};

static const px_plugin_descriptor fs_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major */
    PX_ABI_VERSION_MINOR,         /* abi_minor */
    "faulty-storage",             /* name */
    "1.0.0",                      /* version */
    PX_KIND_STORAGE,              /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain */
    fs_on_create,
    fs_on_start,
    fs_on_stop,
    fs_on_destroy,
    NULL,        /* on_health */
    &fs_storage, /* storage */
    NULL         /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &fs_descriptor;
    return PX_OK;
}
