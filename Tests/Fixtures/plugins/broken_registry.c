/*
 * broken_registry.c - fixture: a tiny in-memory registry plugin that breaks
 * the registry contract on purpose, for the conformance kit's own tests.
 *
 * Embodies: name "broken-registry", version "1.0.0", kind registry. It loads,
 * creates, starts, stops and destroys cleanly; registration, replacement,
 * lookup, deregistration and watches of changes are right, and watch
 * callbacks run one at a time, in order, never after on_unwatch returned
 * (they run under the registry's lock). These bugs are deliberate:
 *
 *   - deregistering an instance that is not registered succeeds;
 *   - a new watch gets no PX_WATCH_PUT for the instances already live;
 *   - on_lookup calls its completion twice;
 *   - on_register accepts an empty service name;
 *   - ttl_ms is ignored: instances never expire.
 *
 * `plexus conformance --kind registry` must fail exactly these rules (the
 * conformance tests read this list):
 *   registry.deregister.unknown-not-found  PX_OK for an unknown instance
 *   registry.watch.existing-first          no PUTs for live instances
 *   registry.ttl.expires                   nothing expires
 *   registry.errors.invalid-arguments      an empty service is accepted
 *   registry.completion.exactly-once       on_lookup completes twice
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     broken_registry.c -o libbroken_registry.so
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

typedef struct br_entry {
    px_str service; /* every string owned, NUL-terminated */
    px_str instance_id;
    px_str address;
    px_kv *metadata;
    size_t metadata_count;
    uint64_t ttl_ms;
} br_entry;

typedef struct br_watch {
    uint64_t id;
    px_str service;
    px_watch_fn fn;
    void *user;
} br_watch;

typedef struct br_instance {
    pthread_mutex_t lock; /* also held while watch callbacks run */
    br_entry *entries;
    size_t entry_count;
    br_watch *watches;
    size_t watch_count;
    uint64_t next_watch_id;
} br_instance;

static const px_str br_no_error = {NULL, 0};

static int br_copy(px_str *out, px_str in) {
    char *copy = malloc(in.len + 1);
    if (copy == NULL) {
        return -1;
    }
    if (in.len > 0) {
        memcpy(copy, in.ptr, in.len);
    }
    copy[in.len] = '\0';
    out->ptr = copy;
    out->len = in.len;
    return 0;
}

static int br_same(px_str a, px_str b) { return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0); }

static void br_free_entry_fields(br_entry *e) {
    size_t i;
    free((void *)e->service.ptr);
    free((void *)e->instance_id.ptr);
    free((void *)e->address.ptr);
    for (i = 0; i < e->metadata_count; i++) {
        free((void *)e->metadata[i].key.ptr);
        free((void *)e->metadata[i].value.ptr);
    }
    free(e->metadata);
    memset(e, 0, sizeof *e);
}

/* Fills `e` with a copy of `si`; 0 on success. */
static int br_fill(br_entry *e, const px_service_instance *si) {
    size_t i;
    int failed = 0;
    memset(e, 0, sizeof *e);
    failed |= br_copy(&e->service, si->service);
    failed |= br_copy(&e->instance_id, si->instance_id);
    failed |= br_copy(&e->address, si->address);
    if (si->metadata != NULL && si->metadata_count > 0) {
        e->metadata = calloc(si->metadata_count, sizeof *e->metadata);
        if (e->metadata == NULL) {
            failed = 1;
        } else {
            e->metadata_count = si->metadata_count;
            for (i = 0; i < si->metadata_count; i++) {
                failed |= br_copy(&e->metadata[i].key, si->metadata[i].key);
                failed |= br_copy(&e->metadata[i].value, si->metadata[i].value);
            }
        }
    }
    e->ttl_ms = si->ttl_ms; /* BUG (registry.ttl.expires): kept, never acted on */
    if (failed) {
        br_free_entry_fields(e);
        return -1;
    }
    return 0;
}

static px_service_instance br_view(const br_entry *e) {
    px_service_instance si;
    memset(&si, 0, sizeof si);
    si.struct_size = sizeof si;
    si.service = e->service;
    si.instance_id = e->instance_id;
    si.address = e->address;
    si.metadata = e->metadata;
    si.metadata_count = e->metadata_count;
    si.ttl_ms = e->ttl_ms;
    return si;
}

/* Tells every watch of the entry's service; the lock is held. */
static void br_notify(br_instance *br, uint32_t kind, const br_entry *e) {
    size_t i;
    px_service_instance si = br_view(e);
    for (i = 0; i < br->watch_count; i++) {
        if (br_same(br->watches[i].service, e->service)) {
            br->watches[i].fn(br->watches[i].user, kind, &si);
        }
    }
}

static px_status br_register(void *instance, const px_service_instance *si, px_done_fn done, void *user,
                             px_error *err) {
    br_instance *br = instance;
    br_entry fresh;
    size_t i;
    /* BUG (registry.errors.invalid-arguments): an empty service is not refused. */
    if (si == NULL || done == NULL || si->instance_id.ptr == NULL || si->instance_id.len == 0) {
        px_error_set(err, "broken-registry: on_register needs an instance with an id and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (br_fill(&fresh, si) != 0) {
        px_error_set(err, "broken-registry: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_lock(&br->lock);
    for (i = 0; i < br->entry_count; i++) {
        if (br_same(br->entries[i].service, fresh.service) && br_same(br->entries[i].instance_id, fresh.instance_id)) {
            break;
        }
    }
    if (i == br->entry_count) {
        br_entry *grown = realloc(br->entries, (br->entry_count + 1) * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&br->lock);
            br_free_entry_fields(&fresh);
            px_error_set(err, "broken-registry: out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        br->entries = grown;
        br->entry_count++;
    } else {
        br_free_entry_fields(&br->entries[i]);
    }
    br->entries[i] = fresh;
    br_notify(br, PX_WATCH_PUT, &br->entries[i]);
    pthread_mutex_unlock(&br->lock);
    done(user, PX_OK, br_no_error);
    return PX_OK;
}

static px_status br_deregister(void *instance, px_str service, px_str instance_id, px_done_fn done, void *user,
                               px_error *err) {
    br_instance *br = instance;
    size_t i;
    if (service.len == 0 || instance_id.len == 0 || done == NULL) {
        px_error_set(err, "broken-registry: on_deregister needs a service, an id and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&br->lock);
    for (i = 0; i < br->entry_count; i++) {
        if (br_same(br->entries[i].service, service) && br_same(br->entries[i].instance_id, instance_id)) {
            br_entry gone = br->entries[i];
            br->entries[i] = br->entries[--br->entry_count];
            br_notify(br, PX_WATCH_DELETE, &gone);
            br_free_entry_fields(&gone);
            break;
        }
    }
    pthread_mutex_unlock(&br->lock);
    /* BUG (registry.deregister.unknown-not-found): PX_OK even when nothing was registered. */
    done(user, PX_OK, br_no_error);
    return PX_OK;
}

static px_status br_lookup(void *instance, px_str service, px_lookup_done_fn done, void *user, px_error *err) {
    br_instance *br = instance;
    px_service_instance *views;
    const px_service_instance **pointers;
    size_t i, n = 0;
    if (service.len == 0 || done == NULL) {
        px_error_set(err, "broken-registry: on_lookup needs a service and a completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&br->lock);
    views = calloc(br->entry_count + 1, sizeof *views);
    pointers = calloc(br->entry_count + 1, sizeof *pointers);
    if (views == NULL || pointers == NULL) {
        pthread_mutex_unlock(&br->lock);
        free(views);
        free((void *)pointers);
        px_error_set(err, "broken-registry: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    for (i = 0; i < br->entry_count; i++) {
        if (br_same(br->entries[i].service, service)) {
            views[n] = br_view(&br->entries[i]);
            pointers[n] = &views[n];
            n++;
        }
    }
    pthread_mutex_unlock(&br->lock);
    done(user, PX_OK, pointers, n, br_no_error);
    done(user, PX_OK, pointers, n, br_no_error); /* BUG (registry.completion.exactly-once) */
    free(views);
    free((void *)pointers);
    return PX_OK;
}

static px_status br_watch_service(void *instance, px_str service, px_watch_fn fn, void *user,
                                  uint64_t *out_watch_id, px_error *err) {
    br_instance *br = instance;
    br_watch *grown;
    px_str copy;
    if (service.len == 0 || fn == NULL || out_watch_id == NULL) {
        px_error_set(err, "broken-registry: on_watch needs a service, a function and an out id");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (br_copy(&copy, service) != 0) {
        px_error_set(err, "broken-registry: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    pthread_mutex_lock(&br->lock);
    grown = realloc(br->watches, (br->watch_count + 1) * sizeof *grown);
    if (grown == NULL) {
        pthread_mutex_unlock(&br->lock);
        free((void *)copy.ptr);
        px_error_set(err, "broken-registry: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    br->watches = grown;
    br->watches[br->watch_count].id = ++br->next_watch_id;
    br->watches[br->watch_count].service = copy;
    br->watches[br->watch_count].fn = fn;
    br->watches[br->watch_count].user = user;
    *out_watch_id = br->watches[br->watch_count].id;
    br->watch_count++;
    /* BUG (registry.watch.existing-first): no PX_WATCH_PUT for the instances already live. */
    pthread_mutex_unlock(&br->lock);
    return PX_OK;
}

static px_status br_unwatch(void *instance, uint64_t watch_id) {
    br_instance *br = instance;
    size_t i;
    pthread_mutex_lock(&br->lock);
    for (i = 0; i < br->watch_count; i++) {
        if (br->watches[i].id == watch_id) {
            free((void *)br->watches[i].service.ptr);
            br->watches[i] = br->watches[--br->watch_count];
            pthread_mutex_unlock(&br->lock);
            return PX_OK;
        }
    }
    pthread_mutex_unlock(&br->lock);
    return PX_ERR_NOT_FOUND;
}

static px_status br_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    br_instance *br;
    (void)api;
    (void)host;
    (void)config;
    br = calloc(1, sizeof *br);
    if (br == NULL || pthread_mutex_init(&br->lock, NULL) != 0) {
        free(br);
        px_error_set(err, "broken-registry: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = br;
    return PX_OK;
}

static px_status br_on_start(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

static px_status br_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK;
}

static void br_on_destroy(void *instance) {
    br_instance *br = instance;
    size_t i;
    for (i = 0; i < br->entry_count; i++) {
        br_free_entry_fields(&br->entries[i]);
    }
    for (i = 0; i < br->watch_count; i++) {
        free((void *)br->watches[i].service.ptr);
    }
    free(br->entries);
    free(br->watches);
    pthread_mutex_destroy(&br->lock);
    free(br);
}

static const px_registry_vtable br_registry = {
    sizeof(px_registry_vtable), /* struct_size */
    0,                          /* reserved */
    br_register,
    br_deregister,
    br_lookup,
    br_watch_service,
    br_unwatch,
};

static const px_plugin_descriptor br_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major */
    PX_ABI_VERSION_MINOR,         /* abi_minor */
    "broken-registry",            /* name */
    "1.0.0",                      /* version */
    PX_KIND_REGISTRY,             /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain */
    br_on_create,
    br_on_start,
    br_on_stop,
    br_on_destroy,
    NULL,        /* on_health: always healthy */
    NULL,        /* storage */
    &br_registry /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &br_descriptor;
    return PX_OK;
}
