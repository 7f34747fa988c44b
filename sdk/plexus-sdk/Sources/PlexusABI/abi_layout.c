/* Compile-time guards on the ABI's layout. Any change here is an ABI change:
 * record it in docs/abi-changelog.md and bump the version. The numbers are
 * for LP64 targets (x86_64, aarch64), the platforms Plexus ships for. */
#include "plexus.h"

#if defined(__LP64__)
#define PX_ASSERT_SIZE(T, N) _Static_assert(sizeof(T) == (N), "ABI: sizeof(" #T ") changed")
#define PX_ASSERT_OFFSET(T, F, N) _Static_assert(offsetof(T, F) == (N), "ABI: offsetof(" #T ", " #F ") changed")

PX_ASSERT_SIZE(px_str, 16);
PX_ASSERT_SIZE(px_bytes, 16);
PX_ASSERT_SIZE(px_kv, 32);
PX_ASSERT_SIZE(px_error, 24);
PX_ASSERT_SIZE(px_event, 168);
PX_ASSERT_OFFSET(px_event, id, 8);
PX_ASSERT_OFFSET(px_event, time, 120);
PX_ASSERT_OFFSET(px_event, extensions, 136);
PX_ASSERT_OFFSET(px_event, data, 152);
PX_ASSERT_SIZE(px_record, 32);
PX_ASSERT_OFFSET(px_record, event, 24);
PX_ASSERT_SIZE(px_service_instance, 80);
PX_ASSERT_SIZE(px_delivery, 48);
PX_ASSERT_OFFSET(px_delivery, record, 40);
PX_ASSERT_SIZE(px_subscription_spec, 144);
PX_ASSERT_OFFSET(px_subscription_spec, deliver, 128);
PX_ASSERT_SIZE(px_host_api, 240);
PX_ASSERT_OFFSET(px_host_api, log, 16);
PX_ASSERT_OFFSET(px_host_api, storage_read, 144);
PX_ASSERT_OFFSET(px_host_api, run, 152);
PX_ASSERT_OFFSET(px_host_api, metric_record, 168);
PX_ASSERT_OFFSET(px_host_api, listen, 176);
PX_ASSERT_OFFSET(px_host_api, registry_keepalive, 184);
PX_ASSERT_OFFSET(px_host_api, kv_get, 192);
PX_ASSERT_OFFSET(px_host_api, kv_unwatch, 232);
PX_ASSERT_SIZE(px_plugin_config, 88);
PX_ASSERT_SIZE(px_stream_options, 24);
PX_ASSERT_SIZE(px_stream_info, 32);
PX_ASSERT_SIZE(px_storage_vtable, 120);
PX_ASSERT_OFFSET(px_storage_vtable, on_open_stream_async, 72);
PX_ASSERT_OFFSET(px_storage_vtable, on_read_batch, 80);
PX_ASSERT_OFFSET(px_storage_vtable, on_list_streams, 88);
PX_ASSERT_OFFSET(px_storage_vtable, on_delete_offset, 112);
PX_ASSERT_SIZE(px_group_offset, 32);
PX_ASSERT_OFFSET(px_group_offset, offset, 24);
PX_ASSERT_SIZE(px_record_batch, 48);
PX_ASSERT_OFFSET(px_record_batch, release, 32);
PX_ASSERT_SIZE(px_metric_spec, 72);
PX_ASSERT_SIZE(px_registry_vtable, 104);
PX_ASSERT_OFFSET(px_registry_vtable, on_unwatch, 40);
PX_ASSERT_OFFSET(px_registry_vtable, on_keepalive, 48);
PX_ASSERT_OFFSET(px_registry_vtable, on_kv_get, 56);
PX_ASSERT_OFFSET(px_registry_vtable, on_kv_unwatch, 96);
PX_ASSERT_SIZE(px_kv_entry, 64);
PX_ASSERT_OFFSET(px_kv_entry, key, 8);
PX_ASSERT_OFFSET(px_kv_entry, value, 24);
PX_ASSERT_OFFSET(px_kv_entry, version, 40);
PX_ASSERT_OFFSET(px_kv_entry, mod_revision, 56);
PX_ASSERT_SIZE(px_plugin_descriptor, 96);
PX_ASSERT_OFFSET(px_plugin_descriptor, on_create, 40);
PX_ASSERT_OFFSET(px_plugin_descriptor, registry, 88);
#endif

/* Keeps this translation unit non-empty on every platform. */
const int px_abi_layout_version = PX_ABI_VERSION_MAJOR * 1000 + PX_ABI_VERSION_MINOR;
