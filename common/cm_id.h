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

/*
 * A generator issues ids under a lease: a node id and the last millisecond
 * its ids may carry. The fleet holds a node id in Redis and records there,
 * before it issues ids up to a millisecond, that millisecond (the node id's
 * floor): whoever takes the node id next starts after it (cm_id_gen_after_ms),
 * so an id taken away and given to another gateway never repeats an id. A
 * gateway with a fixed node id has a lease without end.
 */
typedef struct cm_id_gen {
    _Atomic uint64_t last;  /* last value handed out */
    _Atomic uint64_t lease; /* (last ms allowed, from the epoch, + 1) << 10 | node; ms part 0: none */
} cm_id_gen_t;

/* Single-threaded init: node_id (<= CM_ID_NODE_MAX) with a lease without end. */
void cm_id_gen_init(cm_id_gen_t *g, uint32_t node_id);
/* From now on ids carry node_id and a millisecond <= until_ms (wall clock). Thread-safe. */
void cm_id_gen_lease(cm_id_gen_t *g, uint32_t node_id, int64_t until_ms);
/* No more ids until the next lease (cm_id_next returns 0). Thread-safe. */
void cm_id_gen_revoke(cm_id_gen_t *g);
/* The node id of the current (or last) lease. Thread-safe. */
uint32_t cm_id_gen_node(const cm_id_gen_t *g);
/* The millisecond (wall clock) of the last id handed out, or 0. Thread-safe. */
int64_t cm_id_gen_last_ms(const cm_id_gen_t *g);
/* The next ids come after `id` (its millisecond and sequence). Thread-safe. */
void cm_id_gen_after(cm_id_gen_t *g, uint64_t id);
/* The next ids carry a millisecond > ms (wall clock). Thread-safe. */
void cm_id_gen_after_ms(cm_id_gen_t *g, int64_t ms);
/*
 * Next id for wall-clock time now_ms, or 0 when the lease does not cover it
 * (revoked, or its millisecond would be past the lease's end: nothing is
 * handed out). Thread-safe, lock-free.
 */
uint64_t cm_id_next(cm_id_gen_t *g, int64_t now_ms);
/* Writes CM_ID_TEXT_LEN chars and a NUL into out (>= 14 bytes). */
void cm_id_format(uint64_t id, char *out);
/* Parses the text form. Returns 0 or CM_EINVAL. */
int cm_id_parse(const char *s, size_t len, uint64_t *out);
/* Parts of an id. */
int64_t cm_id_time_ms(uint64_t id);
uint32_t cm_id_node(uint64_t id);

#endif
