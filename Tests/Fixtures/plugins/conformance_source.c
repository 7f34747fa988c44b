/*
 * conformance_source.c - fixture: a small source connector that keeps the
 * connector contract, for the conformance kit's own tests.
 * broken_source_drops_refused.c includes it with one flaw switched on.
 *
 * Embodies: name "conformance-source" (or FIXTURE_NAME), version "1.0.0",
 * kind connector. Its "external system" is a numbered sequence of records;
 * every `interval_ms` (default 10) it publishes the record after its position
 * to `topic` (default "conformance"), one publish in flight at a time, as the
 * event `record-<n>`. Only a publish the host completed with PX_OK moves the
 * position, which is kept in the file `position` of its data_dir (or, with
 * `position: kv`, under the key `connectors/<name>/position` of the host's
 * metadata store, ABI 1.4): a refused or
 * failed publish, or one unfinished at a stop, is published again (same id),
 * by this instance or the next one. on_stop cancels the timer; a completion
 * that comes later only records the outcome.
 *
 * `plexus conformance --kind connector` must fail none of its rules (the
 * conformance tests read the list below, empty here):
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     conformance_source.c -o libconformance_source.so
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plexus.h"

#ifndef FIXTURE_NAME
#define FIXTURE_NAME "conformance-source"
#endif

typedef struct co_source {
    const px_host_api *api;
    px_host *host;
    char topic[256];
    char position_file[1100];
    uint64_t interval_ms;
    uint64_t timer;
    int timer_running;
    pthread_mutex_t lock;
    uint64_t position; /* the last record the host stored */
    uint64_t in_flight; /* the record being published; 0: none */
    int stopping;
    int use_kv;          /* keep the position in the host's metadata store */
    char key[300];       /* its key there */
    pthread_cond_t read; /* signalled when the kv read at start completed */
    int read_done;
} co_source;

static px_str co_str(const char *s) {
    px_str out = {s, strlen(s)};
    return out;
}

static int co_config(const px_plugin_config *config, const char *key, const char *fallback, char *out, size_t cap) {
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

static void co_kv_written(void *user, px_status status, uint64_t version, uint64_t revision, px_str error) {
    (void)user;
    (void)status;
    (void)version;
    (void)revision;
    (void)error;
}

/* Keeps the position in its file (write a temporary file, then rename), or in the metadata store. Called
 * under the lock. */
static void co_save(const co_source *source) {
    char temporary[1200];
    FILE *file;
    if (source->use_kv) {
        px_bytes value;
        snprintf(temporary, sizeof temporary, "%" PRIu64, source->position);
        value.ptr = (const uint8_t *)temporary;
        value.len = strlen(temporary);
        source->api->kv_put(source->host, co_str(source->key), value, PX_KV_ANY_VERSION, co_kv_written, NULL, NULL);
        return;
    }
    snprintf(temporary, sizeof temporary, "%s.tmp", source->position_file);
    file = fopen(temporary, "w");
    if (file == NULL) return;
    fprintf(file, "%" PRIu64 "\n", source->position);
    fclose(file);
    rename(temporary, source->position_file);
}

/* Moves the position past `record` (called under the lock). */
static void co_advance(co_source *source, uint64_t record) {
    if (record > source->position) {
        source->position = record;
        co_save(source);
    }
}

static void co_published(void *user, px_status status, uint64_t first_offset, px_str error) {
    co_source *source = user;
    (void)first_offset;
    (void)error;
    pthread_mutex_lock(&source->lock);
    if (status == PX_OK) {
        co_advance(source, source->in_flight);
    }
#ifdef FLAW_DROPS_REFUSED
    else {
        /* The flaw: a publish that failed is given up, its record skipped. */
        co_advance(source, source->in_flight);
    }
#endif
    source->in_flight = 0;
    pthread_mutex_unlock(&source->lock);
}

static void co_tick(void *user, uint64_t timer_id) {
    co_source *source = user;
    char id[64], data[64];
    uint64_t record;
    px_event event;
    const px_event *events[1];
    px_status status;
    (void)timer_id;
    pthread_mutex_lock(&source->lock);
    if (source->stopping || source->in_flight != 0) {
        pthread_mutex_unlock(&source->lock);
        return;
    }
    record = source->position + 1;
    source->in_flight = record;
    pthread_mutex_unlock(&source->lock);

    snprintf(id, sizeof id, "record-%" PRIu64, record);
    snprintf(data, sizeof data, "{\"record\":%" PRIu64 "}", record);
    memset(&event, 0, sizeof event);
    event.struct_size = sizeof event;
    event.id = co_str(id);
    event.source = co_str("/fixtures/" FIXTURE_NAME);
    event.specversion = co_str("1.0");
    event.type = co_str("org.plexus.fixture.record");
    event.datacontenttype = co_str("application/json");
    event.data.ptr = (const uint8_t *)data;
    event.data.len = strlen(data);
    events[0] = &event;
    status = source->api->publish(source->host, co_str(source->topic), events, 1, co_published, source, NULL);
    if (status != PX_OK) {
        pthread_mutex_lock(&source->lock);
#ifdef FLAW_DROPS_REFUSED
        /* The flaw: a refused record is skipped instead of offered again. */
        co_advance(source, record);
#endif
        source->in_flight = 0;
        pthread_mutex_unlock(&source->lock);
    }
}

static void co_kv_read(void *user, px_status status, const px_kv_entry *entry, uint64_t revision, px_str error) {
    co_source *source = user;
    char text[32];
    (void)revision;
    (void)error;
    pthread_mutex_lock(&source->lock);
    if (status == PX_OK && entry != NULL && entry->value.len < sizeof text) {
        memcpy(text, entry->value.ptr, entry->value.len);
        text[entry->value.len] = '\0';
        source->position = strtoull(text, NULL, 10);
    }
    source->read_done = 1;
    pthread_cond_signal(&source->read);
    pthread_mutex_unlock(&source->lock);
}

static px_status co_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    char interval[32], position[8];
    FILE *file;
    co_source *source = calloc(1, sizeof(co_source));
    if (source == NULL) return PX_ERR_RESOURCE_EXHAUSTED;
    source->api = api;
    source->host = host;
    if (!co_config(config, "topic", "conformance", source->topic, sizeof source->topic) ||
        !co_config(config, "interval_ms", "10", interval, sizeof interval) || config->data_dir.len > 1024) {
        free(source);
        px_error_set(err, FIXTURE_NAME ": bad `topic`, `interval_ms` or data_dir");
        return PX_ERR_INVALID_ARGUMENT;
    }
    source->interval_ms = strtoull(interval, NULL, 10);
    if (source->interval_ms == 0) source->interval_ms = 10;
    memcpy(source->position_file, config->data_dir.ptr, config->data_dir.len);
    strcpy(source->position_file + config->data_dir.len, "/position");
    source->use_kv = co_config(config, "position", "file", position, sizeof position) && strcmp(position, "kv") == 0;
    if (source->use_kv && (!PX_HAS_FIELD(api, px_host_api, kv_get) || api->kv_get == NULL)) {
        free(source);
        px_error_set(err, FIXTURE_NAME ": `position: kv` needs a host with the metadata store (ABI 1.4)");
        return PX_ERR_UNSUPPORTED;
    }
    snprintf(source->key, sizeof source->key, "connectors/%.*s/position", (int)config->instance_name.len,
             config->instance_name.ptr);
    file = source->use_kv ? NULL : fopen(source->position_file, "r");
    if (file != NULL) {
        if (fscanf(file, "%" SCNu64, &source->position) != 1) source->position = 0;
        fclose(file);
    }
    pthread_mutex_init(&source->lock, NULL);
    pthread_cond_init(&source->read, NULL);
    *out_instance = source;
    return PX_OK;
}

static px_status co_on_start(void *instance, px_error *err) {
    co_source *source = instance;
    uint64_t ns = source->interval_ms * 1000000u;
    if (source->use_kv) {
        /* Read the position before the first tick; the completion may come on any thread. */
        struct timespec until;
        if (source->api->kv_get(source->host, co_str(source->key), co_kv_read, source, err) != PX_OK) {
            return PX_ERR_UNAVAILABLE;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&source->lock);
        while (!source->read_done) {
            if (pthread_cond_timedwait(&source->read, &source->lock, &until) != 0) break;
        }
        int done = source->read_done;
        pthread_mutex_unlock(&source->lock);
        if (!done) {
            px_error_set(err, FIXTURE_NAME ": the metadata store did not answer the position read within 5 s");
            return PX_ERR_TIMEOUT;
        }
    }
    if (source->api->timer_start(source->host, ns, ns, co_tick, source, &source->timer, err) != PX_OK) {
        return PX_ERR_UNAVAILABLE;
    }
    source->timer_running = 1;
    return PX_OK;
}

static px_status co_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    co_source *source = instance;
    (void)timeout_ms;
    (void)err;
    pthread_mutex_lock(&source->lock);
    source->stopping = 1;
    pthread_mutex_unlock(&source->lock);
    if (source->timer_running) source->api->timer_cancel(source->host, source->timer);
    source->timer_running = 0;
    return PX_OK;
}

static void co_on_destroy(void *instance) {
    co_source *source = instance;
    pthread_mutex_destroy(&source->lock);
    pthread_cond_destroy(&source->read);
    free(source);
}

static const px_plugin_descriptor co_descriptor = {
    sizeof(px_plugin_descriptor), PX_ABI_VERSION_MAJOR, PX_ABI_VERSION_MINOR, FIXTURE_NAME, "1.0.0",
    PX_KIND_CONNECTOR, 0, NULL, co_on_create, co_on_start, co_on_stop, co_on_destroy, NULL, NULL, NULL};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) return status;
    *out_descriptor = &co_descriptor;
    return PX_OK;
}
