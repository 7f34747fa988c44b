/*
 * missing_entry.c - fixture plugin "missing-entry".
 *
 * Embodies: a library that does not export px_plugin_entry_v1. It exports a
 * near miss, px_plugin_entry_v0, with the right signature.
 * The kernel must refuse it at load time: dlsym of "px_plugin_entry_v1"
 * fails, and the report names the library, the missing symbol and the
 * dlerror() text. It must call nothing in the image.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     missing_entry.c -o libmissing_entry.so
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
        px_error_set(err, "missing-entry: out of memory");
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

static const px_plugin_descriptor fx_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major */
    PX_ABI_VERSION_MINOR,         /* abi_minor */
    "missing-entry",              /* name */
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

/* Not the entry symbol: the kernel must not look for anything but
 * PX_PLUGIN_ENTRY_SYMBOL. */
PX_EXPORT px_status px_plugin_entry_v0(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v0(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &fx_descriptor;
    return PX_OK;
}
