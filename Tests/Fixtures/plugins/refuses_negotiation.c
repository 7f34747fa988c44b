/*
 * refuses_negotiation.c - fixture plugin "refuses-negotiation".
 *
 * Embodies: a plugin whose entry refuses every host: px_plugin_entry_v1
 * returns PX_ERR_VERSION_MISMATCH and writes "fixture: refuses every host"
 * into the error buffer, leaving *out_descriptor untouched.
 * The kernel must report the plugin as failed to load with status
 * PX_ERR_VERSION_MISMATCH and the plugin's own text, must not read
 * *out_descriptor, and must keep running the other plugins.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     refuses_negotiation.c -o librefuses_negotiation.so
 */
#include "plexus.h"

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    (void)api;
    (void)out_descriptor;
    px_error_set(err, "fixture: refuses every host");
    return PX_ERR_VERSION_MISMATCH;
}
