/*
 * abi11_source.c - fixture: a source built against the published ABI 1.1
 * header, loaded into a newer (1.2+) kernel.
 *
 * Proves: a plugin built against 1.1 keeps working in a later minor, using
 * what 1.1 added to the host table. It checks them with PX_HAS_FIELD (new in
 * 1.1), makes a counter with metric_create, and on start hands `count` work
 * items to the kernel's pool with run; each work item publishes one event to
 * `topic` and the publish completion records into the counter. Its 1.1
 * descriptor (same layout as 1.2's) and host-table reads must be accepted as
 * they are.
 *
 * Name "abi11-source", version "1.0.0", kind connector. No config keys: it
 * publishes 20 events to topic "abi11".
 *
 * Operations (manifest `operations`):
 *   px_op_abi11_source_ran     uint64 (instance)  work items that ran
 *   px_op_abi11_source_acked   uint64 (instance)  publishes acknowledged
 *   px_op_abi11_source_failed  uint64 (instance)  publishes refused or failed
 *
 * Built at test time against the 1.1 header, C99 and libc only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.1 abi11_source.c -o libabi11_source.so
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

#define SRC_NAME "abi11-source"

typedef struct {
    const px_host_api *api;
    px_host *host;
    px_metric *published; /* made once with metric_create (1.1) */
    char topic[128];
    uint64_t count;
    pthread_mutex_t lock;
    uint64_t ran, acked, failed;
} src_instance;

static px_str src_cstr(const char *s) { return (px_str){s, strlen(s)}; }

static void src_add(src_instance *src, uint64_t *field) {
    pthread_mutex_lock(&src->lock);
    (*field)++;
    pthread_mutex_unlock(&src->lock);
}

static void src_published(void *user, px_status status, uint64_t first_offset, px_str error) {
    src_instance *src = user;
    (void)first_offset;
    (void)error;
    if (status == PX_OK) {
        src_add(src, &src->acked);
        src->api->metric_record(src->published, 1);
    } else {
        src_add(src, &src->failed);
    }
}

/* One work item on the kernel's pool (run, 1.1): publishes one event. */
static void src_work(void *user) {
    src_instance *src = user;
    char id[32], message[PX_ERROR_CAPACITY];
    px_event event;
    const px_event *pointer = &event;
    px_error err = {sizeof err, 0, message, sizeof message};
    uint64_t n;
    pthread_mutex_lock(&src->lock);
    n = ++src->ran;
    pthread_mutex_unlock(&src->lock);
    memset(&event, 0, sizeof event);
    event.struct_size = sizeof event;
    event.id = (px_str){id, (size_t)snprintf(id, sizeof id, "abi11-%" PRIu64, n)};
    event.source = src_cstr("/fixtures/abi-1.1/source");
    event.specversion = src_cstr("1.0");
    event.type = src_cstr("io.plexus.fixture.abi11");
    event.data = (px_bytes){(const uint8_t *)"abi11", 5};
    if (src->api->publish(src->host, src_cstr(src->topic), &pointer, 1, src_published, src, &err) != PX_OK) {
        src_add(src, &src->failed);
    }
}

static px_status src_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                               void **out_instance, px_error *err) {
    src_instance *src;
    px_metric_spec spec;
    if (api == NULL || !PX_HAS_FIELD(api, px_host_api, metric_record) || api->run == NULL ||
        api->metric_create == NULL || api->metric_record == NULL || api->publish == NULL) {
        px_error_set(err, SRC_NAME ": the host lacks the 1.1 services run and metric_create");
        return PX_ERR_UNSUPPORTED;
    }
    src = calloc(1, sizeof *src);
    if (src == NULL || pthread_mutex_init(&src->lock, NULL) != 0) {
        free(src);
        px_error_set(err, SRC_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    src->api = api;
    src->host = host;
    (void)config;
    strcpy(src->topic, "abi11");
    src->count = 20;
    memset(&spec, 0, sizeof spec);
    spec.struct_size = sizeof spec;
    spec.kind = PX_METRIC_COUNTER;
    spec.name = src_cstr("abi11_published");
    spec.help = src_cstr("Events the 1.1 fixture published and the kernel acknowledged.");
    if (api->metric_create(host, &spec, &src->published, err) != PX_OK) {
        free(src);
        return PX_ERR_INTERNAL;
    }
    *out_instance = src;
    return PX_OK;
}

static px_status src_on_start(void *instance, px_error *err) {
    src_instance *src = instance;
    uint64_t i;
    for (i = 0; i < src->count; i++) {
        px_status status = src->api->run(src->host, src_work, src, err);
        if (status != PX_OK) {
            return status;
        }
    }
    return PX_OK;
}

static px_status src_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK; /* the kernel runs what is owed to the instance before on_destroy */
}

static void src_on_destroy(void *instance) {
    src_instance *src = instance;
    pthread_mutex_destroy(&src->lock);
    free(src);
}

static uint64_t src_read(src_instance *src, const uint64_t *field) {
    uint64_t value;
    pthread_mutex_lock(&src->lock);
    value = *field;
    pthread_mutex_unlock(&src->lock);
    return value;
}

PX_EXPORT uint64_t px_op_abi11_source_ran(void *instance);
PX_EXPORT uint64_t px_op_abi11_source_ran(void *instance) { return src_read(instance, &((src_instance *)instance)->ran); }
PX_EXPORT uint64_t px_op_abi11_source_acked(void *instance);
PX_EXPORT uint64_t px_op_abi11_source_acked(void *instance) {
    return src_read(instance, &((src_instance *)instance)->acked);
}
PX_EXPORT uint64_t px_op_abi11_source_failed(void *instance);
PX_EXPORT uint64_t px_op_abi11_source_failed(void *instance) {
    return src_read(instance, &((src_instance *)instance)->failed);
}

static const px_plugin_descriptor src_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 1, from the 1.1 header */
    SRC_NAME,                     /* name */
    "1.0.0",                      /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    src_on_create,
    src_on_start,
    src_on_stop,
    src_on_destroy,
    NULL, /* on_health */
    NULL, /* storage */
    NULL  /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &src_descriptor;
    return PX_OK;
}
