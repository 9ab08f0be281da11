/*
 * Order ids: unique across a fleet (the gateway's node id is in every id),
 * time-ordered (ids from one node sort by acceptance time; across nodes by
 * millisecond), printable and URL-safe.
 *
 * Layout of the 64-bit value: 42 bits of milliseconds since 2024-01-01T00:00Z
 * (good until 2163), 10 bits of node id (0..1023), 12 bits of sequence. The
 * generator never goes backwards: if the wall clock steps back, or more than
 * 4096 ids are needed in one millisecond, it borrows from the next
 * millisecond. The text form is the value in 13 characters of Crockford
 * base32 (0-9 A-Z without I L O U), fixed width, so text order = numeric order.
 */
#ifndef CM_ID_H
#define CM_ID_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_ID_TEXT_LEN 13
#define CM_ID_NODE_MAX 1023u
#define CM_ID_EPOCH_MS 1704067200000LL /* 2024-01-01T00:00:00Z */

typedef struct cm_id_gen {
    _Atomic uint64_t last; /* last value handed out */
    uint32_t node_id;
} cm_id_gen_t;

/* Single-threaded init. node_id must be <= CM_ID_NODE_MAX. */
void cm_id_gen_init(cm_id_gen_t *g, uint32_t node_id);
/* Next id for wall-clock time now_ms. Thread-safe, lock-free. */
uint64_t cm_id_next(cm_id_gen_t *g, int64_t now_ms);
/* Writes CM_ID_TEXT_LEN chars and a NUL into out (>= 14 bytes). */
void cm_id_format(uint64_t id, char *out);
/* Parses the text form. Returns 0 or CM_EINVAL. */
int cm_id_parse(const char *s, size_t len, uint64_t *out);
/* Parts of an id. */
int64_t cm_id_time_ms(uint64_t id);
uint32_t cm_id_node(uint64_t id);

#endif
