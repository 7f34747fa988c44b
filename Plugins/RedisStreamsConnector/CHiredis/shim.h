/* Debian's libhiredis (libhiredis-dev), found through pkg-config. */
#include <hiredis/hiredis.h>
