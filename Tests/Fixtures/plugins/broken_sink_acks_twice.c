/*
 * broken_sink_acks_twice.c - fixture: conformance_sink.c with one flaw: every
 * delivery it stores is acknowledged twice.
 *
 * `plexus conformance --kind connector` must fail exactly these rules (the
 * conformance tests read this list):
 *   connector.sink.answers-exactly-once    a second ack of each delivery
 *   connector.sink.max-in-flight-no-loss   each delivery of the burst answered twice
 */
#define FIXTURE_NAME "broken-sink-acks-twice"
#define FLAW_ACKS_TWICE 1
#include "conformance_sink.c"
