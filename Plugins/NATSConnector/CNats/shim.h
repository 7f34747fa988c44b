/* Debian's libnats (libnats-dev), the official NATS C client, found through pkg-config. */
#include <nats/nats.h>
