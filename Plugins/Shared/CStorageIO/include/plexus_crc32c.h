#ifndef PLEXUS_CRC32C_H
#define PLEXUS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU computes CRC-32C in hardware (x86-64 SSE4.2 `crc32`, AArch64 CRC extension).
int plexus_crc32c_hardware(void);

/// Continues a CRC-32C over `count` bytes with the CPU's instruction. `state` is the running register (the
/// complement of a checksum; ~0 to start), and so is the result. Only call it when `plexus_crc32c_hardware()`.
uint32_t plexus_crc32c_update(uint32_t state, const void *bytes, size_t count);

#endif
