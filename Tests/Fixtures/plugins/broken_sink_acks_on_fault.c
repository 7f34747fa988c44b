/*
 * broken_sink_acks_on_fault.c - fixture: conformance_sink.c with one flaw: it
 * acknowledges a delivery even when its file (its external system) could not
 * be written, so an ack no longer means the event was handed on.
 *
 * `plexus conformance --kind connector --fault-config ...` must fail exactly
 * these rules (the conformance tests read this list):
 *   connector.sink.fault-nacks-never-acks  acks what it could not write
 */
#define FIXTURE_NAME "broken-sink-acks-on-fault"
#define FLAW_ACKS_ON_FAULT 1
#include "conformance_sink.c"
