/* The plugin the ABI benchmark loads: compiled once per name with
 * -DBENCH_NAME='"bench-N"', so that 50 distinct plugins can be loaded.
 *   px_op_bench_noop(instance, x)       -> x + 1: the kernel->plugin call target
 *   px_op_bench_host_loop(instance, n)  calls host->counter_add n times: plugin->host calls */
#include "plexus.h"
#include <stdlib.h>

#ifndef BENCH_NAME
#define BENCH_NAME "bench-0"
#endif

typedef struct bench {
    const px_host_api *api;
    px_host *host;
} bench;

static px_status bench_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out, px_error *err) {
    bench *b = calloc(1, sizeof *b);
    (void)config;
    if (b == NULL) {
        px_error_set(err, "out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    b->api = api;
    b->host = host;
    *out = b;
    return PX_OK;
}

static px_status bench_start(void *instance, px_error *err) { (void)instance; (void)err; return PX_OK; }
static px_status bench_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    (void)instance; (void)timeout_ms; (void)err;
    return PX_OK;
}
static void bench_destroy(void *instance) { free(instance); }
static px_status bench_health(void *instance, px_error *err) { (void)instance; (void)err; return PX_OK; }

static const px_plugin_descriptor descriptor = {
    sizeof(px_plugin_descriptor), PX_ABI_VERSION_MAJOR, PX_ABI_VERSION_MINOR, BENCH_NAME, "1.0.0",
    PX_KIND_CONNECTOR, 0, NULL, bench_create, bench_start, bench_stop, bench_destroy, bench_health, NULL, NULL};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out, px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out = &descriptor;
    return PX_OK;
}

PX_EXPORT uint64_t px_op_bench_noop(void *instance, uint64_t x) {
    (void)instance;
    return x + 1;
}

PX_EXPORT uint64_t px_op_bench_host_loop(void *instance, uint64_t n) {
    bench *b = instance;
    px_str name = {"bench_calls", 11};
    uint64_t i;
    for (i = 0; i < n; i++) {
        b->api->counter_add(b->host, name, 1);
    }
    return n;
}
