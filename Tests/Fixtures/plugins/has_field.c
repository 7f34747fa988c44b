/*
 * has_field.c - fixture: not a plugin (it exports no entry), a probe of the
 * header's PX_HAS_FIELD macro, which Swift cannot import.
 *
 * Proves: PX_HAS_FIELD(ptr, type, field) is true exactly when the struct the
 * other side handed over is large enough to hold `field`, by its
 * struct_size. A test hands these functions tables it built with the
 * published sizes: a 1.0 host table (px_host_api, 152 bytes) lacks `run`,
 * `metric_create` and `metric_record` and has `storage_read`; a 1.1 one
 * (176 bytes) has them all; a 72-byte (1.0) storage vtable lacks
 * `on_read_batch`, an 88-byte (1.1) one has it; NULL has nothing.
 *
 * Built at test time: cc -std=c99 -shared -fPIC -I sdk/plexus-sdk/Sources/PlexusABI/include
 *                     has_field.c -o libhas_field.so
 */
#include "plexus.h"

PX_EXPORT int px_fixture_host_has_run(const px_host_api *api);
PX_EXPORT int px_fixture_host_has_run(const px_host_api *api) { return PX_HAS_FIELD(api, px_host_api, run); }

PX_EXPORT int px_fixture_host_has_metric_create(const px_host_api *api);
PX_EXPORT int px_fixture_host_has_metric_create(const px_host_api *api) {
    return PX_HAS_FIELD(api, px_host_api, metric_create);
}

PX_EXPORT int px_fixture_host_has_metric_record(const px_host_api *api);
PX_EXPORT int px_fixture_host_has_metric_record(const px_host_api *api) {
    return PX_HAS_FIELD(api, px_host_api, metric_record);
}

PX_EXPORT int px_fixture_host_has_storage_read(const px_host_api *api);
PX_EXPORT int px_fixture_host_has_storage_read(const px_host_api *api) {
    return PX_HAS_FIELD(api, px_host_api, storage_read);
}

PX_EXPORT int px_fixture_storage_has_read_batch(const px_storage_vtable *table);
PX_EXPORT int px_fixture_storage_has_read_batch(const px_storage_vtable *table) {
    return PX_HAS_FIELD(table, px_storage_vtable, on_read_batch);
}

PX_EXPORT int px_fixture_storage_has_open_stream_async(const px_storage_vtable *table);
PX_EXPORT int px_fixture_storage_has_open_stream_async(const px_storage_vtable *table) {
    return PX_HAS_FIELD(table, px_storage_vtable, on_open_stream_async);
}
