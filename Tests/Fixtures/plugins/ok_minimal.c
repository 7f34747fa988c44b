/*
 * ok_minimal.c - fixture: a well-behaved plugin.
 *
 * Embodies: no failure. Negotiates with px_negotiate, returns a valid
 * descriptor (name "ok-minimal", version "1.0.0", kind connector), and every
 * lifecycle hook succeeds. It also exports manifest operations for the
 * kernel's libffi tests:
 *   px_op_add       int32  (instance, int32, int32)  -> a + b
 *   px_op_scale     double (instance, double, uint32) -> x * factor
 *   px_op_started   uint64 (instance)                 -> 1 while started, else 0
 *   px_op_echo_len  int32  (instance, pointer)        -> strlen(s)
 * The kernel must load, create, start, stop and destroy it without error,
 * and report it active after start.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     ok_minimal.c -o libok_minimal.so
 */
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

typedef struct ok_instance {
    int started;
} ok_instance;

static px_status ok_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    ok_instance *ok;
    (void)api;
    (void)host;
    (void)config;
    ok = calloc(1, sizeof *ok);
    if (ok == NULL) {
        px_error_set(err, "ok-minimal: out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    *out_instance = ok;
    return PX_OK;
}

static px_status ok_on_start(void *instance, px_error *err) {
    (void)err;
    ((ok_instance *)instance)->started = 1;
    return PX_OK;
}

static px_status ok_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)timeout_ms;
    (void)err;
    ((ok_instance *)instance)->started = 0;
    return PX_OK;
}

static void ok_on_destroy(void *instance) { free(instance); }

static px_status ok_on_health(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

PX_EXPORT int32_t px_op_add(void *instance, int32_t a, int32_t b);
PX_EXPORT double px_op_scale(void *instance, double x, uint32_t factor);
PX_EXPORT uint64_t px_op_started(void *instance);
PX_EXPORT int32_t px_op_echo_len(void *instance, const char *s);

PX_EXPORT int32_t px_op_add(void *instance, int32_t a, int32_t b) {
    (void)instance;
    return a + b;
}

PX_EXPORT double px_op_scale(void *instance, double x, uint32_t factor) {
    (void)instance;
    return x * (double)factor;
}

PX_EXPORT uint64_t px_op_started(void *instance) {
    return instance != NULL && ((const ok_instance *)instance)->started ? 1u : 0u;
}

PX_EXPORT int32_t px_op_echo_len(void *instance, const char *s) {
    (void)instance;
    return s == NULL ? 0 : (int32_t)strlen(s);
}

/* The version it reports; the deployment tests build a second image with -DOK_MINIMAL_VERSION='"1.1.0"'. */
#ifndef OK_MINIMAL_VERSION
#define OK_MINIMAL_VERSION "1.0.0"
#endif

static const px_plugin_descriptor ok_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size */
    PX_ABI_VERSION_MAJOR,         /* abi_major */
    PX_ABI_VERSION_MINOR,         /* abi_minor */
    "ok-minimal",                 /* name */
    OK_MINIMAL_VERSION,           /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain */
    ok_on_create,
    ok_on_start,
    ok_on_stop,
    ok_on_destroy,
    ok_on_health,
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
    *out_descriptor = &ok_descriptor;
    return PX_OK;
}
