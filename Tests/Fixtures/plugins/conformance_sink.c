/*
 * conformance_sink.c - fixture: a small file sink connector that keeps the
 * connector contract, for the conformance kit's own tests. The broken_sink_*
 * fixtures include it with one flaw switched on each.
 *
 * Embodies: name "conformance-sink" (or FIXTURE_NAME), version "1.0.0", kind
 * connector. On start it subscribes to `topic` (default "conformance") with
 * max_in_flight 16. Each delivery's event id is appended to the file `path`
 * (its "external system"), then the delivery is acknowledged; when the file
 * cannot be written the delivery is nacked for retry. on_stop unsubscribes.
 *
 * `plexus conformance --kind connector` must fail none of its rules (the
 * conformance tests read the list below, empty here):
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     conformance_sink.c -o libconformance_sink.so
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plexus.h"

#ifndef FIXTURE_NAME
#define FIXTURE_NAME "conformance-sink"
#endif

typedef struct cs_sink {
    const px_host_api *api;
    px_host *host;
    char topic[256];
    char path[1024];
    uint64_t subscription;
    int subscribed;
} cs_sink;

static px_str cs_str(const char *s) {
    px_str out = {s, strlen(s)};
    return out;
}

/* Copies the config value of `key` (or `fallback`) into out; 0 when it does not fit. */
static int cs_config(const px_plugin_config *config, const char *key, const char *fallback, char *out, size_t cap) {
    size_t i;
    for (i = 0; i < config->entry_count; i++) {
        const px_kv *kv = &config->entries[i];
        if (kv->key.len == strlen(key) && memcmp(kv->key.ptr, key, kv->key.len) == 0) {
            if (kv->value.len + 1 > cap) return 0;
            memcpy(out, kv->value.ptr, kv->value.len);
            out[kv->value.len] = '\0';
            return 1;
        }
    }
    if (fallback == NULL || strlen(fallback) + 1 > cap) return 0;
    strcpy(out, fallback);
    return 1;
}

/* Appends the event's id and a newline to the file; 1 on success. */
static int cs_write(const cs_sink *sink, const px_delivery *delivery) {
    const px_event *event = delivery->record->event;
    int fd = open(sink->path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    ssize_t written;
    if (fd < 0) return 0;
    written = write(fd, event->id.ptr, event->id.len);
    if (written == (ssize_t)event->id.len) written = write(fd, "\n", 1) == 1 ? written : -1;
    close(fd);
    return written == (ssize_t)event->id.len;
}

static void cs_deliver(void *user, const px_delivery *delivery) {
    cs_sink *sink = user;
    int stored;
#ifdef FLAW_BLOCKS
    /* The flaw: the first delivery waits on a slow external system inside the kernel's call. */
    static int first = 1;
    if (first) {
        struct timespec pause = {0, 400 * 1000 * 1000};
        first = 0;
        nanosleep(&pause, NULL);
    }
#endif
    stored = cs_write(sink, delivery);
#ifdef FLAW_ACKS_ON_FAULT
    /* The flaw: acknowledges whether or not the external system took the event. */
    stored = 1;
#endif
    if (stored) {
        sink->api->ack(sink->host, delivery->delivery_id);
#ifdef FLAW_ACKS_TWICE
        /* The flaw: a second acknowledgement of the same delivery. */
        sink->api->ack(sink->host, delivery->delivery_id);
#endif
    } else {
        sink->api->nack(sink->host, delivery->delivery_id, PX_NACK_RETRY, cs_str("cannot write to the file"));
    }
}

static px_status cs_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    cs_sink *sink = calloc(1, sizeof(cs_sink));
    if (sink == NULL) return PX_ERR_RESOURCE_EXHAUSTED;
    sink->api = api;
    sink->host = host;
    if (!cs_config(config, "topic", "conformance", sink->topic, sizeof sink->topic) ||
        !cs_config(config, "path", NULL, sink->path, sizeof sink->path)) {
        free(sink);
        px_error_set(err, FIXTURE_NAME ": needs `path` (and an optional `topic`) of at most 1023 bytes");
        return PX_ERR_INVALID_ARGUMENT;
    }
    *out_instance = sink;
    return PX_OK;
}

static px_status cs_on_start(void *instance, px_error *err) {
    cs_sink *sink = instance;
    px_subscription_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.struct_size = sizeof spec;
    spec.topic = cs_str(sink->topic);
    spec.group = cs_str(FIXTURE_NAME);
    spec.max_in_flight = 16;
    spec.deliver = cs_deliver;
    spec.user = sink;
    if (sink->api->subscribe(sink->host, &spec, &sink->subscription, err) != PX_OK) return PX_ERR_UNAVAILABLE;
    sink->subscribed = 1;
    return PX_OK;
}

static px_status cs_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    cs_sink *sink = instance;
    (void)timeout_ms;
    (void)err;
    if (sink->subscribed) sink->api->unsubscribe(sink->host, sink->subscription);
    sink->subscribed = 0;
    return PX_OK;
}

static void cs_on_destroy(void *instance) { free(instance); }

static const px_plugin_descriptor cs_descriptor = {
    sizeof(px_plugin_descriptor), PX_ABI_VERSION_MAJOR, PX_ABI_VERSION_MINOR, FIXTURE_NAME, "1.0.0",
    PX_KIND_CONNECTOR, 0, NULL, cs_on_create, cs_on_start, cs_on_stop, cs_on_destroy, NULL, NULL, NULL};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) return status;
    *out_descriptor = &cs_descriptor;
    return PX_OK;
}
