/*
 * broken_source_drops_refused.c - fixture: conformance_source.c with one flaw:
 * a record whose publish the host refused or failed is skipped, not offered
 * again (its position moves on as if it had been stored).
 *
 * `plexus conformance --kind connector` must fail exactly these rules (the
 * conformance tests read this list):
 *   connector.source.refused-offered-again          the refused records are skipped
 *   connector.source.at-least-once-across-restart   the record unfinished at the stop is skipped
 */
#define FIXTURE_NAME "broken-source-drops-refused"
#define FLAW_DROPS_REFUSED 1
#include "conformance_source.c"
