/*
 * start_hangs.c - fixture plugin "start-hangs".
 *
 * Embodies: on_start never returns (it sleeps in a loop forever); on_create,
 * on_stop and on_destroy behave.
 * The kernel must give up after the manifest's start deadline, report the
 * plugin failed with a timeout naming the hook and the deadline, and keep
 * running the other plugins. Since on_start is still running it must not call
 * on_stop or on_destroy (no hook runs concurrently with another), and it
 * never unloads the image. The hung thread is abandoned.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     start_hangs.c -o libstart_hangs.so
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <time.h>

#include "plexus.h"

/* Never cleared: volatile so that the loop below is not "obviously" infinite
 * to the compiler, which would then warn about the missing return. */
static volatile int fx_forever = 1;

static px_status fx_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    int *instance;
    (void)api;
    (void)host;
    (void)config;
    instance = calloc(1, sizeof *instance);
    if (instance == NULL) {
        px_error_set(err, "start-hangs: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = instance;
    return PX_OK;
}

static px_status fx_on_start(void *instance, px_error *err) {
    struct timespec second = {1, 0};
    (void)instance;
    (void)err;
    while (fx_forever) {
        nanosleep(&second, NULL);
    }
    return PX_OK; /* never reached */
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
    "start-hangs",                /* name */
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
