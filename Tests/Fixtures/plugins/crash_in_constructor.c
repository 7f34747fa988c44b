/*
 * crash_in_constructor.c - fixture: a library whose constructor crashes while dlopen maps it.
 *
 * Embodies: an ELF constructor (run by the dynamic loader before dlopen returns, before any Plexus code of the
 * plugin) that raises SIGSEGV. No check of the file can catch this; only loading it in a child process first
 * (`plugins.probe: true`) does. Never load it into a test process.
 *
 *   cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include crash_in_constructor.c -o libcrash_in_constructor.so
 */
#include <signal.h>

#include "plexus.h"

__attribute__((constructor)) static void crash_on_load(void) { raise(SIGSEGV); }

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out, px_error *err) {
    (void)api;
    (void)out;
    (void)err;
    return PX_ERR_INTERNAL;
}
