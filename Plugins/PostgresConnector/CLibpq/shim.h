/* Debian's libpq (libpq-dev), found through pkg-config. */
#include <libpq-fe.h>
