/*
 * Private to inventory/: a counting set of 32-bit idempotency-key
 * fingerprints, the memory backend's per-sale answer to "could this raw
 * (unscoped) Idempotency-Key belong to an order this sale holds?".
 *
 * The buy path asks it before verifying anything for a keyed buy on a sold-out
 * sale: a key not in the set cannot be a retry of a held order, so the buy is
 * answered 410 from the sale's flag. A fingerprint is a multiset member (one
 * count per held order carrying it, any user), so a release removes exactly
 * what its order added. A false positive (two keys, one fingerprint) only
 * costs the full path; a false negative must not exist: a count never wraps
 * (it saturates and then is never decremented).
 *
 * Bounded by a budget shared by every set of the process (the memory
 * backend's: inventory.max_held_orders over all sales): at most budget->max
 * distinct fingerprints in all its sets together (8 bytes each, up to 8/3 of
 * that with the tables' room: a table doubles past 3/4 full; plus a shard's
 * first table of 16 slots, 128 bytes); a new fingerprint past it saturates
 * the set it was added to, which then answers true for every key (the full
 * path, as without the set) until it is cleared. The owner may saturate it
 * too, for an order whose raw key it cannot know.
 */
#ifndef INV_KEYSET_H
#define INV_KEYSET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_KEYSET_SHARDS 16 /* power of two; a shard is chosen by the fingerprint */

typedef struct inv_keyset_entry {
    uint32_t fp;    /* 0 = empty slot */
    uint32_t count; /* held orders with this fingerprint; UINT32_MAX = saturated, stays */
} inv_keyset_entry_t;

typedef struct inv_keyset_shard {
    _Alignas(64) pthread_mutex_t lock;
    inv_keyset_entry_t *slots; /* NULL until the first add */
    uint32_t nslots, used;
} inv_keyset_shard_t;

/* The process-wide bound of inv_keyset_t's fingerprints (see above). */
typedef struct inv_keyset_budget {
    uint64_t max;            /* distinct fingerprints over all the sets */
    _Atomic uint64_t used;   /* in the sets' tables now */
} inv_keyset_budget_t;

typedef struct inv_keyset {
    inv_keyset_shard_t shards[INV_KEYSET_SHARDS];
    inv_keyset_budget_t *budget; /* shared; outlives the set */
    _Atomic uint64_t distinct;  /* fingerprints in the tables */
    _Atomic _Bool saturated;    /* every key may be held */
} inv_keyset_t;

/* Initialises a budget of max distinct fingerprints for the sets that share it. */
void inv_keyset_budget_init(inv_keyset_budget_t *b, uint64_t max);
/* Initialises an empty set that takes its fingerprints from budget (borrowed:
 * it must outlive the set). No allocation. */
void inv_keyset_init(inv_keyset_t *ks, inv_keyset_budget_t *budget);
/* Frees the set's tables; ks may be initialised again. */
void inv_keyset_deinit(inv_keyset_t *ks);
/* Makes every inv_keyset_has answer true until inv_keyset_clear. Thread-safe. */
void inv_keyset_saturate(inv_keyset_t *ks);
/* Empties the set (and ends a saturation), freeing its tables. Thread-safe. */
void inv_keyset_clear(inv_keyset_t *ks);
/* Counts one more order with fingerprint fp (fp != 0; 0 is ignored); a new
 * fingerprint past the budget saturates the set instead. Aborts on OOM
 * (cm_xmalloc's policy). Thread-safe. */
void inv_keyset_add(inv_keyset_t *ks, uint32_t fp);
/* Counts one held order with fingerprint fp less (after inv_keyset_add of the
 * same fp; a saturated count stays). Thread-safe. */
void inv_keyset_del(inv_keyset_t *ks, uint32_t fp);
/* true if some counted order may carry fingerprint fp (always when saturated). Thread-safe. */
bool inv_keyset_has(inv_keyset_t *ks, uint32_t fp);
/* Distinct fingerprints in the set. */
size_t inv_keyset_size(inv_keyset_t *ks);
/* true once saturated (and not cleared since). */
bool inv_keyset_saturated(inv_keyset_t *ks);
/* Bytes of the set's tables (same caveat). */
size_t inv_keyset_bytes(inv_keyset_t *ks);

#endif
