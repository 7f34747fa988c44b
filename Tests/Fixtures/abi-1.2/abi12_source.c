/*
 * abi12_source.c - fixture: a connector built against the published ABI 1.2
 * header, loaded into a newer (1.3+) kernel.
 *
 * Proves: a plugin built against 1.2 keeps working in a later minor, using
 * what 1.2 added. On start it takes a listening socket from the kernel with
 * `listen` (1.2; tested with PX_HAS_FIELD) on 127.0.0.1, a free port, and
 * hands `count` work items to the kernel's pool with run (1.1); each work item
 * publishes one event to `topic`. Its on_health answers PX_DEGRADED (1.2) with
 * a reason, so the node must report it degraded and still ready. Its 1.2
 * descriptor and host-table reads must be accepted as they are.
 *
 * Name "abi12-source", version "1.0.0", kind connector. No config keys: it
 * publishes 20 events to topic "abi12".
 *
 * Operations (manifest `operations`):
 *   px_op_abi12_source_port    uint64 (instance)  the port the kernel's socket is bound to (0: none)
 *   px_op_abi12_source_acked   uint64 (instance)  publishes acknowledged
 *   px_op_abi12_source_failed  uint64 (instance)  publishes refused or failed
 *
 * Built at test time against the 1.2 header, C99 and POSIX only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.2 abi12_source.c -o libabi12_source.so
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "plexus.h"

#define SRC_NAME "abi12-source"

typedef struct {
    const px_host_api *api;
    px_host *host;
    char topic[128];
    uint64_t count;
    pthread_mutex_t lock;
    int fd;        /* the plugin's descriptor of the kernel's socket (listen, 1.2); -1 when none */
    uint64_t port; /* where it is bound */
    uint64_t ran, acked, failed;
} src_instance;

static px_str src_cstr(const char *s) { return (px_str){s, strlen(s)}; }

static void src_add(src_instance *src, uint64_t *field) {
    pthread_mutex_lock(&src->lock);
    (*field)++;
    pthread_mutex_unlock(&src->lock);
}

static uint64_t src_read(src_instance *src, const uint64_t *field) {
    uint64_t value;
    pthread_mutex_lock(&src->lock);
    value = *field;
    pthread_mutex_unlock(&src->lock);
    return value;
}

static void src_published(void *user, px_status status, uint64_t first_offset, px_str error) {
    src_instance *src = user;
    (void)first_offset;
    (void)error;
    src_add(src, status == PX_OK ? &src->acked : &src->failed);
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
    event.id = (px_str){id, (size_t)snprintf(id, sizeof id, "abi12-%" PRIu64, n)};
    event.source = src_cstr("/fixtures/abi-1.2/source");
    event.specversion = src_cstr("1.0");
    event.type = src_cstr("io.plexus.fixture.abi12");
    event.data = (px_bytes){(const uint8_t *)"abi12", 5};
    if (src->api->publish(src->host, src_cstr(src->topic), &pointer, 1, src_published, src, &err) != PX_OK) {
        src_add(src, &src->failed);
    }
}

static px_status src_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                               void **out_instance, px_error *err) {
    src_instance *src;
    if (api == NULL || !PX_HAS_FIELD(api, px_host_api, listen) || api->listen == NULL || api->run == NULL ||
        api->publish == NULL) {
        px_error_set(err, SRC_NAME ": the host lacks the 1.2 service listen");
        return PX_ERR_UNSUPPORTED;
    }
    src = calloc(1, sizeof *src);
    if (src == NULL || pthread_mutex_init(&src->lock, NULL) != 0) {
        free(src);
        px_error_set(err, SRC_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    (void)config;
    src->api = api;
    src->host = host;
    src->fd = -1;
    strcpy(src->topic, "abi12");
    src->count = 20;
    *out_instance = src;
    return PX_OK;
}

static px_status src_on_start(void *instance, px_error *err) {
    src_instance *src = instance;
    struct sockaddr_in bound;
    socklen_t length = sizeof bound;
    int32_t fd = -1;
    uint64_t i;
    px_status status = src->api->listen(src->host, src_cstr("127.0.0.1"), 0, 16, &fd, err);
    if (status != PX_OK) {
        return status;
    }
    memset(&bound, 0, sizeof bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &length) != 0) {
        close(fd);
        px_error_set(err, SRC_NAME ": getsockname failed on the kernel's socket");
        return PX_ERR_IO;
    }
    pthread_mutex_lock(&src->lock);
    src->fd = fd;
    src->port = ntohs(bound.sin_port);
    pthread_mutex_unlock(&src->lock);
    for (i = 0; i < src->count; i++) {
        status = src->api->run(src->host, src_work, src, err);
        if (status != PX_OK) {
            return status;
        }
    }
    return PX_OK;
}

static px_status src_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    src_instance *src = instance;
    (void)timeout_ms;
    (void)err;
    pthread_mutex_lock(&src->lock);
    if (src->fd >= 0) {
        close(src->fd); /* closes this descriptor only: never shutdown() the kernel's socket */
        src->fd = -1;
    }
    pthread_mutex_unlock(&src->lock);
    return PX_OK;
}

static void src_on_destroy(void *instance) {
    src_instance *src = instance;
    pthread_mutex_destroy(&src->lock);
    free(src);
}

/* PX_DEGRADED (1.2): serving, but impaired. */
static px_status src_on_health(void *instance, px_error *err) {
    (void)instance;
    px_error_set(err, SRC_NAME ": impaired on purpose");
    return PX_DEGRADED;
}

PX_EXPORT uint64_t px_op_abi12_source_port(void *instance);
PX_EXPORT uint64_t px_op_abi12_source_port(void *instance) {
    return src_read(instance, &((src_instance *)instance)->port);
}
PX_EXPORT uint64_t px_op_abi12_source_acked(void *instance);
PX_EXPORT uint64_t px_op_abi12_source_acked(void *instance) {
    return src_read(instance, &((src_instance *)instance)->acked);
}
PX_EXPORT uint64_t px_op_abi12_source_failed(void *instance);
PX_EXPORT uint64_t px_op_abi12_source_failed(void *instance) {
    return src_read(instance, &((src_instance *)instance)->failed);
}

static const px_plugin_descriptor src_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 2, from the 1.2 header */
    SRC_NAME,                     /* name */
    "1.0.0",                      /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    src_on_create,
    src_on_start,
    src_on_stop,
    src_on_destroy,
    src_on_health,
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
