/* Debian's libmosquitto (libmosquitto-dev), found through pkg-config. */
#include <mosquitto.h>
