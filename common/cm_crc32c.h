/*
 * CRC-32C (Castagnoli): the checksum of every framed file the product keeps
 * (the spool's records, the journals of common/cm_journal.h). SSE4.2's crc32
 * instruction when the CPU has it, slicing-by-8 tables otherwise; both give
 * the same value (tests/unit/queue/test_oq_spool.c checks the vectors on both).
 */
#ifndef CM_CRC32C_H
#define CM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf, continuing from crc (start with 0). Thread-safe. */
uint32_t cm_crc32c(uint32_t crc, const void *buf, size_t len);
/* Test seam: cm_crc32c uses its table code from now on, whatever the CPU has.
 * Single-threaded: before any other thread computes a CRC. */
void cm__crc32c_force_table(void);

#endif
