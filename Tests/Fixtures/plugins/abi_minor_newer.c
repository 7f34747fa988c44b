/*
 * abi_minor_newer.c - fixture plugin "abi-minor-newer".
 *
 * Embodies: a plugin built against a newer minor version (ABI 1.99) than the
 * kernel offers (1.0), which does not refuse itself: its entry returns PX_OK
 * and a descriptor with abi_major = 1, abi_minor = 99.
 * The kernel must refuse it with a version-mismatch error: a plugin may only
 * use a minor version no greater than the host's (it may rely on host table
 * entries or descriptor fields the kernel does not have). The report names
 * both versions. on_create is never called.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     abi_minor_newer.c -o libabi_minor_newer.so
 */
#include <stdlib.h>

#include "plexus.h"

static px_status fx_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    int *instance;
    (void)api;
    (void)host;
    (void)config;
    instance = calloc(1, sizeof *instance);
    if (instance == NULL) {
        px_error_set(err, "abi-minor-newer: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = instance;
    return PX_OK;
}

static px_status fx_on_start(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

static px_status fx_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance;
    (void)timeout_ms;
    (void)err;
    return PX_OK;
}

static void fx_on_destroy(void *instance) { free(instance); }

static px_status fx_on_health(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

/* Claims ABI 1.99. */
static const px_plugin_descriptor fx_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    1,                           /* abi_major */
    99,                          /* abi_minor */
    "abi-minor-newer",            /* name */
    "1.0.0",                      /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain */
    fx_on_create,
    fx_on_start,
    fx_on_stop,
    fx_on_destroy,
    fx_on_health,
    NULL, /* storage */
    NULL  /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

/* Does not negotiate: answers every host with its descriptor. */
PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    (void)api;
    (void)err;
    *out_descriptor = &fx_descriptor;
    return PX_OK;
}
