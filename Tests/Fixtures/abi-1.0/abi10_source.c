/*
 * abi10_source.c - fixture: a source connector built against the published
 * ABI 1.0 header, loaded into a newer (1.1+) kernel.
 *
 * Proves: a connector built against an older minor publishes through the
 * newer kernel's host table (px_host_api is larger than the 1.0 plugin
 * knows; it reads only the 1.0 entries). On a timer (host->timer_start) it
 * publishes `count` events in batches of `batch` through host->publish
 * (an array of pointers to 1.0-sized px_event), and checks every completion:
 * each must come exactly once, with PX_OK, and the batches must occupy dense
 * offsets in publish order.
 *
 * Name "abi10-source", version "1.0.0", kind connector. Config keys:
 *   topic  (default "abi10")   where to publish
 *   count  (default 24)        events in all
 *   batch  (default 3)         events per publish (count must be a multiple)
 * Event n (1-based) is fully determined by n, so a test can rebuild it:
 *   id "abi10-<n>", source "/fixtures/abi-1.0/source", specversion "1.0",
 *   type "io.plexus.fixture.abi10", subject "item-<n>",
 *   datacontenttype "application/octet-stream",
 *   dataschema "https://plexus.example/schemas/abi10", time
 *   "2026-01-02T03:04:05Z", extensions seq=<n> and partitionkey=k<n % 3>,
 *   data the 8 bytes {0x00, 0xff, n & 0xff, n >> 8 & 0xff, 'p', 'x', '\n', 0x7f}.
 *
 * Operations (manifest `operations`):
 *   px_op_abi10_source_acked      uint64 (instance)  events whose batch completed with PX_OK
 *   px_op_abi10_source_failed     uint64 (instance)  events refused by publish or failed in completion
 *   px_op_abi10_source_anomalies  uint64 (instance)  completions that came twice, or for no batch
 *   px_op_abi10_source_offsets    text   (instance)  each batch's first_offset, in publish order,
 *                                                    comma-separated ("-": not completed,
 *                                                    "!": completed with an error)
 *
 * Threading: the tick runs on a kernel timer thread; completions on any
 * thread, possibly inside publish; operations on the caller's thread. One
 * mutex guards the counters and batch table; it is never held across a host
 * call (a completion may run inside publish and take it).
 *
 * Built at test time against the 1.0 header, C99 and libc only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.0 abi10_source.c -o libabi10_source.so
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

#define SRC_NAME "abi10-source"

typedef struct src_batch {
    struct src_instance *src;
    size_t index;
    int completions;
    px_status status;
    uint64_t first_offset;
} src_batch;

typedef struct src_instance {
    const px_host_api *api;
    px_host *host;
    char topic[128];
    uint64_t count;
    uint64_t batch;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t settled;
    src_batch *batches; /* count / batch of them, made in on_create */
    size_t next_batch;  /* the next to publish */
    uint64_t in_flight; /* publishes whose completion has not run */
    uint64_t acked;
    uint64_t failed;
    uint64_t anomalies;

    int timer_running; /* lifecycle thread only */
    uint64_t timer_id;
} src_instance;

static px_str src_cstr(const char *s) { return (px_str){s, strlen(s)}; }

static const px_str *src_config_value(const px_plugin_config *config, const char *key) {
    size_t i, len = strlen(key);
    for (i = 0; config != NULL && config->entries != NULL && i < config->entry_count; i++) {
        const px_kv *kv = &config->entries[i];
        if (kv->key.len == len && memcmp(kv->key.ptr, key, len) == 0) {
            return &kv->value;
        }
    }
    return NULL;
}

/* A decimal config value from 1 to 100000, or `fallback` when absent. */
static int src_config_number(const px_plugin_config *config, const char *key, uint64_t fallback, uint64_t *out) {
    const px_str *value = src_config_value(config, key);
    uint64_t n = 0;
    size_t i;
    if (value == NULL) {
        *out = fallback;
        return 0;
    }
    if (value->len == 0 || value->len > 6) {
        return -1;
    }
    for (i = 0; i < value->len; i++) {
        if (value->ptr[i] < '0' || value->ptr[i] > '9') {
            return -1;
        }
        n = n * 10 + (uint64_t)(value->ptr[i] - '0');
    }
    if (n < 1 || n > 100000) {
        return -1;
    }
    *out = n;
    return 0;
}

/* Completion of one batch.
 * THREADING: any thread, possibly inside publish. */
static void src_published(void *user, px_status status, uint64_t first_offset, px_str error) {
    src_batch *b = user;
    src_instance *src = b->src;
    (void)error;
    pthread_mutex_lock(&src->lock);
    if (++b->completions > 1) {
        src->anomalies++; /* the completion rule: exactly once */
    } else {
        b->status = status;
        if (status == PX_OK) {
            b->first_offset = first_offset;
            src->acked += src->batch;
        } else {
            src->failed += src->batch;
        }
        src->in_flight--;
        pthread_cond_broadcast(&src->settled);
    }
    pthread_mutex_unlock(&src->lock);
}

/* One tick: publishes the next batch, if any is left.
 * THREADING: a kernel timer thread, never concurrently for one timer. */
static void src_tick(void *user, uint64_t timer_id) {
    src_instance *src = user;
    px_event events[8];
    const px_event *pointers[8];
    char ids[8][32], subjects[8][32], seqs[8][24], keys[8][8];
    uint8_t data[8][8];
    px_kv extensions[8][2];
    char message[PX_ERROR_CAPACITY];
    px_error err;
    src_batch *b;
    size_t i;
    px_status status;
    (void)timer_id;

    pthread_mutex_lock(&src->lock);
    if (src->next_batch * src->batch >= src->count) {
        pthread_mutex_unlock(&src->lock);
        return; /* all published; on_stop cancels the timer */
    }
    b = &src->batches[src->next_batch++];
    src->in_flight++; /* counted before the call: the completion may run inside it */
    pthread_mutex_unlock(&src->lock);

    for (i = 0; i < src->batch; i++) {
        uint64_t n = b->index * src->batch + i + 1;
        int id_len = snprintf(ids[i], sizeof ids[i], "abi10-%" PRIu64, n);
        int subject_len = snprintf(subjects[i], sizeof subjects[i], "item-%" PRIu64, n);
        int seq_len = snprintf(seqs[i], sizeof seqs[i], "%" PRIu64, n);
        int key_len = snprintf(keys[i], sizeof keys[i], "k%u", (unsigned)(n % 3));
        data[i][0] = 0x00;
        data[i][1] = 0xff;
        data[i][2] = (uint8_t)(n & 0xff);
        data[i][3] = (uint8_t)((n >> 8) & 0xff);
        data[i][4] = 'p';
        data[i][5] = 'x';
        data[i][6] = '\n';
        data[i][7] = 0x7f;
        extensions[i][0].key = src_cstr("seq");
        extensions[i][0].value = (px_str){seqs[i], (size_t)seq_len};
        extensions[i][1].key = src_cstr("partitionkey");
        extensions[i][1].value = (px_str){keys[i], (size_t)key_len};
        memset(&events[i], 0, sizeof events[i]);
        events[i].struct_size = sizeof(px_event); /* 1.0's size */
        events[i].id = (px_str){ids[i], (size_t)id_len};
        events[i].source = src_cstr("/fixtures/abi-1.0/source");
        events[i].specversion = src_cstr("1.0");
        events[i].type = src_cstr("io.plexus.fixture.abi10");
        events[i].datacontenttype = src_cstr("application/octet-stream");
        events[i].dataschema = src_cstr("https://plexus.example/schemas/abi10");
        events[i].subject = (px_str){subjects[i], (size_t)subject_len};
        events[i].time = src_cstr("2026-01-02T03:04:05Z");
        events[i].extensions = extensions[i];
        events[i].extension_count = 2;
        events[i].data = (px_bytes){data[i], sizeof data[i]};
        pointers[i] = &events[i];
    }
    message[0] = '\0';
    err.struct_size = sizeof err;
    err.reserved = 0;
    err.message = message;
    err.capacity = sizeof message;
    status = src->api->publish(src->host, src_cstr(src->topic), pointers, (size_t)src->batch, src_published, b, &err);
    if (status != PX_OK) {
        /* Refused outright: no completion will come, so undo the count here. */
        pthread_mutex_lock(&src->lock);
        src->failed += src->batch;
        src->in_flight--;
        pthread_cond_broadcast(&src->settled);
        pthread_mutex_unlock(&src->lock);
        src->api->log(src->host, PX_LOG_WARNING, src_cstr(message));
    }
    /* The kernel copied the events during the call: the stack buffers may go. */
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static void src_free(src_instance *src) {
    pthread_cond_destroy(&src->settled);
    pthread_mutex_destroy(&src->lock);
    free(src->batches);
    free(src);
}

static px_status src_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                               void **out_instance, px_error *err) {
    src_instance *src;
    const px_str *topic = src_config_value(config, "topic");
    uint64_t count, batch;
    size_t i;
    /* A 1.0 plugin checks the host's table by its size (PX_HAS_FIELD came with 1.1). */
    if (api == NULL || api->struct_size < offsetof(px_host_api, timer_cancel) + sizeof(api->timer_cancel) ||
        api->publish == NULL || api->timer_start == NULL || api->timer_cancel == NULL || api->log == NULL) {
        px_error_set(err, SRC_NAME ": the host lacks publish, timers or log");
        return PX_ERR_UNSUPPORTED;
    }
    if (src_config_number(config, "count", 24, &count) != 0 || src_config_number(config, "batch", 3, &batch) != 0 ||
        batch > 8 || count % batch != 0) {
        px_error_set(err, SRC_NAME ": config keys 'count' (1-100000) and 'batch' (1-8) must be numbers, "
                              "count a multiple of batch");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (topic != NULL && (topic->len == 0 || topic->len >= sizeof src->topic)) {
        px_error_set(err, SRC_NAME ": config key 'topic' must have 1 to 127 bytes");
        return PX_ERR_INVALID_ARGUMENT;
    }
    src = calloc(1, sizeof *src);
    if (src == NULL || (src->batches = calloc((size_t)(count / batch), sizeof *src->batches)) == NULL) {
        free(src);
        px_error_set(err, SRC_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    if (pthread_mutex_init(&src->lock, NULL) != 0 || pthread_cond_init(&src->settled, NULL) != 0) {
        free(src->batches);
        free(src);
        px_error_set(err, SRC_NAME ": cannot make a mutex");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    src->api = api;
    src->host = host;
    if (topic != NULL) {
        memcpy(src->topic, topic->ptr, topic->len);
    } else {
        strcpy(src->topic, "abi10");
    }
    src->count = count;
    src->batch = batch;
    for (i = 0; i < count / batch; i++) {
        src->batches[i].src = src;
        src->batches[i].index = i;
    }
    *out_instance = src;
    return PX_OK;
}

static px_status src_on_start(void *instance, px_error *err) {
    src_instance *src = instance;
    /* First tick after 5 ms, then every 5 ms. */
    px_status status = src->api->timer_start(src->host, 5000000u, 5000000u, src_tick, src, &src->timer_id, err);
    if (status == PX_OK) {
        src->timer_running = 1;
    }
    return status;
}

static px_status src_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    src_instance *src = instance;
    struct timespec deadline;
    int waited = 0;
    if (src->timer_running) {
        src->api->timer_cancel(src->host, src->timer_id); /* after it returns no tick runs */
        src->timer_running = 0;
    }
    /* Let publishes in flight complete, within the deadline. */
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(timeout_ms / 1000);
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&src->lock);
    while (src->in_flight > 0 && waited == 0) {
        waited = pthread_cond_timedwait(&src->settled, &src->lock, &deadline);
    }
    pthread_mutex_unlock(&src->lock);
    (void)err;
    return PX_OK; /* the kernel runs what it still owes before on_destroy */
}

static void src_on_destroy(void *instance) { src_free(instance); }

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t src_read(void *instance, const uint64_t *field) {
    src_instance *src = instance;
    uint64_t value;
    pthread_mutex_lock(&src->lock);
    value = *field;
    pthread_mutex_unlock(&src->lock);
    return value;
}

/* manifest: acked: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_source_acked(void *instance);
PX_EXPORT uint64_t px_op_abi10_source_acked(void *instance) {
    return src_read(instance, &((src_instance *)instance)->acked);
}

/* manifest: failed: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_source_failed(void *instance);
PX_EXPORT uint64_t px_op_abi10_source_failed(void *instance) {
    return src_read(instance, &((src_instance *)instance)->failed);
}

/* manifest: anomalies: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_source_anomalies(void *instance);
PX_EXPORT uint64_t px_op_abi10_source_anomalies(void *instance) {
    return src_read(instance, &((src_instance *)instance)->anomalies);
}

/* manifest: offsets: text (instance). The kernel frees the text. */
PX_EXPORT char *px_op_abi10_source_offsets(void *instance);
PX_EXPORT char *px_op_abi10_source_offsets(void *instance) {
    src_instance *src = instance;
    size_t batches = (size_t)(src->count / src->batch), i, used = 0, cap = batches * 21 + 1;
    char *text = malloc(cap);
    if (text == NULL) {
        return NULL;
    }
    text[0] = '\0';
    pthread_mutex_lock(&src->lock);
    for (i = 0; i < batches; i++) {
        const src_batch *b = &src->batches[i];
        int n;
        if (b->completions == 0) {
            n = snprintf(text + used, cap - used, "%s-", i ? "," : "");
        } else if (b->status != PX_OK) {
            n = snprintf(text + used, cap - used, "%s!", i ? "," : "");
        } else {
            n = snprintf(text + used, cap - used, "%s%" PRIu64, i ? "," : "", b->first_offset);
        }
        used += (size_t)n;
    }
    pthread_mutex_unlock(&src->lock);
    return text;
}

/* ------------------------------------------------------------------------ */
/* Descriptor and entry                                                     */
/* ------------------------------------------------------------------------ */

static const px_plugin_descriptor src_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size: 96 in 1.0 */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 0, from the 1.0 header */
    SRC_NAME,                     /* name */
    "1.0.0",                      /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    src_on_create,
    src_on_start,
    src_on_stop,
    src_on_destroy,
    NULL, /* on_health: always healthy */
    NULL, /* storage */
    NULL  /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);
PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &src_descriptor;
    return PX_OK;
}
