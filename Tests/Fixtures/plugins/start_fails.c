/*
 * start_fails.c - fixture plugin "start-fails".
 *
 * Embodies: on_start refuses: it returns PX_ERR_UNAVAILABLE with the text
 * "fixture: start refused on purpose" (or START_FAILS_MESSAGE, a C string
 * literal given with -D, for example one with line breaks).
 * The kernel must report the plugin failed with that status and text, must
 * not call on_stop (the instance never started), must call on_destroy
 * exactly once to free the instance, and must keep running the other
 * plugins.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     start_fails.c -o libstart_fails.so
 */
#include <stdlib.h>

#include "plexus.h"

#ifndef START_FAILS_MESSAGE
#define START_FAILS_MESSAGE "fixture: start refused on purpose"
#endif

static px_status fx_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    int *instance;
    (void)api;
    (void)host;
    (void)config;
    instance = calloc(1, sizeof *instance);
    if (instance == NULL) {
        px_error_set(err, "start-fails: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = instance;
    return PX_OK;
}

static px_status fx_on_start(void *instance, px_error *err) {
    (void)instance;
    px_error_set(err, START_FAILS_MESSAGE);
    return PX_ERR_UNAVAILABLE;
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
    "start-fails",                /* name */
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

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &fx_descriptor;
    return PX_OK;
}
