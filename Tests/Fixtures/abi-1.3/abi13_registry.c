/*
 * abi13_registry.c - fixture: a registry built against the published ABI 1.3
 * header, loaded into a newer (1.4+) kernel.
 *
 * Proves: a registry whose px_registry_vtable ends at on_unwatch (48 bytes,
 * no keep-alive and no metadata store) is bound as the node's registry; its
 * 1.3 hooks keep serving the host's registry calls, and the kernel answers
 * the 1.4 host calls that need the missing hooks (registry_keepalive, kv_*)
 * with PX_ERR_UNSUPPORTED instead of calling past the plugin's table; the
 * kernel's keep-alive of instances registered with a TTL calls nothing
 * either.
 *
 * Name "abi13-registry", version "1.0.0", kind registry. Up to 64 instances
 * in memory (service, instance id and address only); watches are refused with
 * PX_ERR_UNSUPPORTED.
 *
 * Operations (manifest `operations`):
 *   px_op_abi13_registry_registered  uint64 (instance)  instances registered now
 *   px_op_abi13_registry_calls       uint64 (instance)  hooks called so far
 *
 * Built at test time against the 1.3 header, C99 and libc only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.3 abi13_registry.c -o libabi13_registry.so
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

#define REG_NAME "abi13-registry"
#define REG_MAX 64
#define REG_TEXT 128

typedef struct {
    int used;
    char service[REG_TEXT], id[REG_TEXT], address[REG_TEXT];
    uint64_t ttl_ms;
} reg_entry;

typedef struct {
    pthread_mutex_t lock;
    reg_entry entries[REG_MAX];
    uint64_t calls;
} reg_instance;

static int reg_copy(char *target, px_str text) {
    if (text.len == 0 || text.len >= REG_TEXT || text.ptr == NULL) {
        return 0;
    }
    memcpy(target, text.ptr, text.len);
    target[text.len] = '\0';
    return 1;
}

static int reg_same(const char *stored, px_str text) {
    return strlen(stored) == text.len && (text.len == 0 || memcmp(stored, text.ptr, text.len) == 0);
}

static reg_entry *reg_find(reg_instance *reg, px_str service, px_str id) {
    int i;
    for (i = 0; i < REG_MAX; i++) {
        reg_entry *e = &reg->entries[i];
        if (e->used && reg_same(e->service, service) && reg_same(e->id, id)) {
            return e;
        }
    }
    return NULL;
}

static px_status reg_on_register(void *instance, const px_service_instance *si, px_done_fn done, void *user,
                                 px_error *err) {
    reg_instance *reg = instance;
    reg_entry copy, *slot = NULL;
    int i;
    memset(&copy, 0, sizeof copy);
    if (si == NULL || done == NULL || !reg_copy(copy.service, si->service) || !reg_copy(copy.id, si->instance_id) ||
        (si->address.len > 0 && !reg_copy(copy.address, si->address))) {
        px_error_set(err, REG_NAME ": a service and an instance id of 1..127 bytes are needed");
        return PX_ERR_INVALID_ARGUMENT;
    }
    copy.used = 1;
    copy.ttl_ms = si->ttl_ms;
    pthread_mutex_lock(&reg->lock);
    reg->calls++;
    slot = reg_find(reg, si->service, si->instance_id);
    for (i = 0; slot == NULL && i < REG_MAX; i++) {
        if (!reg->entries[i].used) {
            slot = &reg->entries[i];
        }
    }
    if (slot == NULL) {
        pthread_mutex_unlock(&reg->lock);
        px_error_set(err, REG_NAME ": full");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *slot = copy;
    pthread_mutex_unlock(&reg->lock);
    done(user, PX_OK, (px_str){NULL, 0});
    return PX_OK;
}

static px_status reg_on_deregister(void *instance, px_str service, px_str instance_id, px_done_fn done, void *user,
                                   px_error *err) {
    reg_instance *reg = instance;
    reg_entry *e;
    if (done == NULL) {
        px_error_set(err, REG_NAME ": no completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&reg->lock);
    reg->calls++;
    e = reg_find(reg, service, instance_id);
    if (e == NULL) {
        pthread_mutex_unlock(&reg->lock);
        px_error_set(err, REG_NAME ": no such instance");
        return PX_ERR_NOT_FOUND;
    }
    e->used = 0;
    pthread_mutex_unlock(&reg->lock);
    done(user, PX_OK, (px_str){NULL, 0});
    return PX_OK;
}

static px_status reg_on_lookup(void *instance, px_str service, px_lookup_done_fn done, void *user, px_error *err) {
    reg_instance *reg = instance;
    px_service_instance found[REG_MAX];
    const px_service_instance *pointers[REG_MAX];
    reg_entry copies[REG_MAX];
    size_t count = 0;
    int i;
    if (done == NULL) {
        px_error_set(err, REG_NAME ": no completion");
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&reg->lock);
    reg->calls++;
    for (i = 0; i < REG_MAX; i++) {
        if (reg->entries[i].used && reg_same(reg->entries[i].service, service)) {
            copies[count++] = reg->entries[i];
        }
    }
    pthread_mutex_unlock(&reg->lock);
    for (i = 0; i < (int)count; i++) {
        memset(&found[i], 0, sizeof found[i]);
        found[i].struct_size = sizeof found[i];
        found[i].service = (px_str){copies[i].service, strlen(copies[i].service)};
        found[i].instance_id = (px_str){copies[i].id, strlen(copies[i].id)};
        found[i].address = (px_str){copies[i].address, strlen(copies[i].address)};
        found[i].ttl_ms = copies[i].ttl_ms;
        pointers[i] = &found[i];
    }
    done(user, PX_OK, pointers, count, (px_str){NULL, 0});
    return PX_OK;
}

static px_status reg_on_watch(void *instance, px_str service, px_watch_fn fn, void *user, uint64_t *out_watch_id,
                              px_error *err) {
    reg_instance *reg = instance;
    (void)service;
    (void)fn;
    (void)user;
    (void)out_watch_id;
    pthread_mutex_lock(&reg->lock);
    reg->calls++;
    pthread_mutex_unlock(&reg->lock);
    px_error_set(err, REG_NAME ": watches are not supported");
    return PX_ERR_UNSUPPORTED;
}

static px_status reg_on_unwatch(void *instance, uint64_t watch_id) {
    (void)instance;
    (void)watch_id;
    return PX_ERR_NOT_FOUND;
}

static px_status reg_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                               void **out_instance, px_error *err) {
    reg_instance *reg = calloc(1, sizeof *reg);
    (void)api;
    (void)host;
    (void)config;
    if (reg == NULL || pthread_mutex_init(&reg->lock, NULL) != 0) {
        free(reg);
        px_error_set(err, REG_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = reg;
    return PX_OK;
}

static px_status reg_on_start(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

static px_status reg_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK;
}

static void reg_on_destroy(void *instance) {
    reg_instance *reg = instance;
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static uint64_t reg_count(reg_instance *reg, int calls) {
    uint64_t n = 0;
    int i;
    pthread_mutex_lock(&reg->lock);
    if (calls) {
        n = reg->calls;
    } else {
        for (i = 0; i < REG_MAX; i++) {
            n += reg->entries[i].used ? 1 : 0;
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return n;
}

PX_EXPORT uint64_t px_op_abi13_registry_registered(void *instance);
PX_EXPORT uint64_t px_op_abi13_registry_registered(void *instance) { return reg_count(instance, 0); }
PX_EXPORT uint64_t px_op_abi13_registry_calls(void *instance);
PX_EXPORT uint64_t px_op_abi13_registry_calls(void *instance) { return reg_count(instance, 1); }

/* The 1.3 table: it ends at on_unwatch (struct_size 48). */
static const px_registry_vtable reg_vtable = {
    sizeof(px_registry_vtable), /* struct_size: 48, from the 1.3 header */
    0,                          /* reserved */
    reg_on_register,
    reg_on_deregister,
    reg_on_lookup,
    reg_on_watch,
    reg_on_unwatch,
};

static const px_plugin_descriptor reg_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 3, from the 1.3 header */
    REG_NAME,                     /* name */
    "1.0.0",                      /* version */
    PX_KIND_REGISTRY,             /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    reg_on_create,
    reg_on_start,
    reg_on_stop,
    reg_on_destroy,
    NULL,        /* on_health */
    NULL,        /* storage */
    &reg_vtable  /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &reg_descriptor;
    return PX_OK;
}
