/*
 * broken_sink_blocks.c - fixture: conformance_sink.c with one flaw: its first
 * delivery waits 400 ms inside the deliver call (a slow external system called
 * on the kernel's thread).
 *
 * `plexus conformance --kind connector` must fail exactly these rules (the
 * conformance tests read this list):
 *   connector.sink.deliver-never-blocks    one deliver call took 400 ms
 */
#define FIXTURE_NAME "broken-sink-blocks"
#define FLAW_BLOCKS 1
#include "conformance_sink.c"
