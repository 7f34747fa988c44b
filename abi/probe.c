/* abi/probe.c - makes every public type of plexus.h visible to abidiff.
 *
 * abidiff compares only the types reachable from a library's exported
 * functions, and plexus.h itself exports none. This probe defines one
 * exported function per public type, so that every struct, enum and
 * function-pointer typedef of the header appears in a function signature
 * and therefore in the DWARF that abidw records in abi/baseline.xml.
 *
 * When a type is added to plexus.h, add a probe function for it here
 * (scripts/abi-check fails when a public type name does not appear in this
 * file). Built by scripts/abi-check only: gcc -g -shared -fPIC. */
#include "plexus.h"

#define PX_PROBE(name, type)                                                                                 \
    PX_EXPORT void px_probe_##name(type value);                                                              \
    PX_EXPORT void px_probe_##name(type value) { (void)value; }

/* Scalars and enums. */
PX_PROBE(status, px_status)
PX_PROBE(status_code, enum px_status_code)
PX_PROBE(watch_event_kind, enum px_watch_event_kind)
PX_PROBE(group_mode, enum px_group_mode)
PX_PROBE(backoff_policy, enum px_backoff_policy)
PX_PROBE(start_position, enum px_start_position)
PX_PROBE(nack_action, enum px_nack_action)
PX_PROBE(log_level, enum px_log_level)
PX_PROBE(durability, enum px_durability)
PX_PROBE(plugin_kind, enum px_plugin_kind)
PX_PROBE(metric_kind, enum px_metric_kind)

/* Frozen value pairs, passed by value. */
PX_PROBE(str, px_str)
PX_PROBE(bytes, px_bytes)
PX_PROBE(kv, px_kv)

/* Growable structs and tables. */
PX_PROBE(error, const px_error *)
PX_PROBE(event, const px_event *)
PX_PROBE(record, const px_record *)
PX_PROBE(service_instance, const px_service_instance *)
PX_PROBE(delivery, const px_delivery *)
PX_PROBE(subscription_spec, const px_subscription_spec *)
PX_PROBE(host_api, const px_host_api *)
PX_PROBE(plugin_config, const px_plugin_config *)
PX_PROBE(stream_options, const px_stream_options *)
PX_PROBE(stream_info, const px_stream_info *)
PX_PROBE(storage_vtable, const px_storage_vtable *)
PX_PROBE(registry_vtable, const px_registry_vtable *)
PX_PROBE(plugin_descriptor, const px_plugin_descriptor *)
PX_PROBE(record_batch, const px_record_batch *)
PX_PROBE(metric_spec, const px_metric_spec *)
PX_PROBE(group_offset, const px_group_offset *)
PX_PROBE(kv_entry, const px_kv_entry *)

/* Opaque handles. */
PX_PROBE(host, px_host *)
PX_PROBE(stream, px_stream *)
PX_PROBE(metric, px_metric *)

/* Completions and callbacks. */
PX_PROBE(done_fn, px_done_fn)
PX_PROBE(append_done_fn, px_append_done_fn)
PX_PROBE(read_done_fn, px_read_done_fn)
PX_PROBE(offset_done_fn, px_offset_done_fn)
PX_PROBE(timer_fn, px_timer_fn)
PX_PROBE(lookup_done_fn, px_lookup_done_fn)
PX_PROBE(watch_fn, px_watch_fn)
PX_PROBE(deliver_fn, px_deliver_fn)
PX_PROBE(read_batch_done_fn, px_read_batch_done_fn)
PX_PROBE(open_done_fn, px_open_done_fn)
PX_PROBE(work_fn, px_work_fn)
PX_PROBE(list_streams_done_fn, px_list_streams_done_fn)
PX_PROBE(list_offsets_done_fn, px_list_offsets_done_fn)
PX_PROBE(kv_get_done_fn, px_kv_get_done_fn)
PX_PROBE(kv_write_done_fn, px_kv_write_done_fn)
PX_PROBE(kv_list_done_fn, px_kv_list_done_fn)
PX_PROBE(kv_watch_fn, px_kv_watch_fn)

/* Host services. */
PX_PROBE(host_log, px_host_log)
PX_PROBE(host_counter_add, px_host_counter_add)
PX_PROBE(host_gauge_set, px_host_gauge_set)
PX_PROBE(host_histogram_record, px_host_histogram_record)
PX_PROBE(host_publish, px_host_publish)
PX_PROBE(host_subscribe, px_host_subscribe)
PX_PROBE(host_unsubscribe, px_host_unsubscribe)
PX_PROBE(host_ack, px_host_ack)
PX_PROBE(host_nack, px_host_nack)
PX_PROBE(host_timer_start, px_host_timer_start)
PX_PROBE(host_timer_cancel, px_host_timer_cancel)
PX_PROBE(host_registry_register, px_host_registry_register)
PX_PROBE(host_registry_deregister, px_host_registry_deregister)
PX_PROBE(host_registry_lookup, px_host_registry_lookup)
PX_PROBE(host_registry_watch, px_host_registry_watch)
PX_PROBE(host_registry_unwatch, px_host_registry_unwatch)
PX_PROBE(host_storage_read, px_host_storage_read)
PX_PROBE(host_run, px_host_run)
PX_PROBE(host_metric_create, px_host_metric_create)
PX_PROBE(host_metric_record, px_host_metric_record)
PX_PROBE(host_listen, px_host_listen)
PX_PROBE(host_registry_keepalive, px_host_registry_keepalive)
PX_PROBE(host_kv_get, px_host_kv_get)
PX_PROBE(host_kv_put, px_host_kv_put)
PX_PROBE(host_kv_delete, px_host_kv_delete)
PX_PROBE(host_kv_list, px_host_kv_list)
PX_PROBE(host_kv_watch, px_host_kv_watch)
PX_PROBE(host_kv_unwatch, px_host_kv_unwatch)

/* Storage hooks. */
PX_PROBE(storage_on_open_stream, px_storage_on_open_stream)
PX_PROBE(storage_on_close_stream, px_storage_on_close_stream)
PX_PROBE(storage_on_append, px_storage_on_append)
PX_PROBE(storage_on_read, px_storage_on_read)
PX_PROBE(storage_on_commit_offset, px_storage_on_commit_offset)
PX_PROBE(storage_on_fetch_offset, px_storage_on_fetch_offset)
PX_PROBE(storage_on_trim, px_storage_on_trim)
PX_PROBE(storage_on_stream_info, px_storage_on_stream_info)
PX_PROBE(storage_on_open_stream_async, px_storage_on_open_stream_async)
PX_PROBE(storage_on_read_batch, px_storage_on_read_batch)
PX_PROBE(storage_on_list_streams, px_storage_on_list_streams)
PX_PROBE(storage_on_delete_stream, px_storage_on_delete_stream)
PX_PROBE(storage_on_list_offsets, px_storage_on_list_offsets)
PX_PROBE(storage_on_delete_offset, px_storage_on_delete_offset)

/* Registry hooks. */
PX_PROBE(registry_on_register, px_registry_on_register)
PX_PROBE(registry_on_deregister, px_registry_on_deregister)
PX_PROBE(registry_on_lookup, px_registry_on_lookup)
PX_PROBE(registry_on_watch, px_registry_on_watch)
PX_PROBE(registry_on_unwatch, px_registry_on_unwatch)
PX_PROBE(registry_on_keepalive, px_registry_on_keepalive)
PX_PROBE(registry_on_kv_get, px_registry_on_kv_get)
PX_PROBE(registry_on_kv_put, px_registry_on_kv_put)
PX_PROBE(registry_on_kv_delete, px_registry_on_kv_delete)
PX_PROBE(registry_on_kv_list, px_registry_on_kv_list)
PX_PROBE(registry_on_kv_watch, px_registry_on_kv_watch)
PX_PROBE(registry_on_kv_unwatch, px_registry_on_kv_unwatch)

/* Plugin lifecycle and entry. */
PX_PROBE(plugin_on_create, px_plugin_on_create)
PX_PROBE(plugin_on_start, px_plugin_on_start)
PX_PROBE(plugin_on_stop, px_plugin_on_stop)
PX_PROBE(plugin_on_destroy, px_plugin_on_destroy)
PX_PROBE(plugin_on_health, px_plugin_on_health)
PX_PROBE(plugin_entry_fn, px_plugin_entry_fn)
