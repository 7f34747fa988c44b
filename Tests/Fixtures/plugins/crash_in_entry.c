/*
 * crash_in_entry.c - fixture: a plugin whose entry point crashes.
 *
 * Embodies: px_plugin_entry_v1 writes through a null pointer (SIGSEGV). Loaded in-process it would take the
 * node down with it; with `plugins.probe: true` the node loads it in a child process first, sees the child
 * die by the signal, and refuses the plugin with that reason. Never load it into a test process.
 *
 *   cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include crash_in_entry.c -o libcrash_in_entry.so
 */
#include "plexus.h"

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out, px_error *err) {
    (void)api;
    (void)err;
    volatile int *nowhere = (volatile int *)0;
    *nowhere = 1;
    *out = 0;
    return PX_OK;
}
