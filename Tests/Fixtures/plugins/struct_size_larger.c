/*
 * struct_size_larger.c - fixture plugin "struct-size-larger".
 *
 * Embodies: a descriptor that claims to be larger than the kernel knows:
 * abi 1.0 but struct_size = sizeof(px_plugin_descriptor) + 64, as if built
 * against a future header with fields appended. The descriptor is embedded in
 * a larger static object, so reading all struct_size bytes is memory-safe.
 * The kernel must refuse it (the ABI rule: a plugin struct larger than the
 * kernel knows is refused), with an error naming the struct, the size given
 * and the size the kernel knows. on_create is never called.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     struct_size_larger.c -o libstruct_size_larger.so
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
        px_error_set(err, "struct-size-larger: out of memory");
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

/* The descriptor followed by 64 bytes of "future fields". */
static const struct {
    px_plugin_descriptor descriptor;
    unsigned char future_fields[64];
} fx_larger = {
    {
        (uint32_t)(sizeof(px_plugin_descriptor) + 64), /* struct_size */
        PX_ABI_VERSION_MAJOR,                          /* abi_major */
        PX_ABI_VERSION_MINOR,                          /* abi_minor */
        "struct-size-larger",                          /* name */
        "1.0.0",                                       /* version */
        PX_KIND_CONNECTOR,                             /* kinds */
        0,                                             /* reserved */
        NULL,                                          /* toolchain */
        fx_on_create,
        fx_on_start,
        fx_on_stop,
        fx_on_destroy,
        fx_on_health,
        NULL, /* storage */
        NULL  /* registry */
    },
    {0}
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &fx_larger.descriptor;
    return PX_OK;
}
