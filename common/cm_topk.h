/*
 * Heavy hitters in bounded memory: the space-saving algorithm (Metwally,
 * Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k Elements
 * in Data Streams", 2005).
 *
 * CM_TOPK_SLOTS counters of (key, count, error). A key already tracked is
 * counted exactly from then on; an untracked key replaces the counter with
 * the smallest count c and starts at c + 1 with error c. Guarantees, for a
 * stream of N items: every key with more than N / CM_TOPK_SLOTS occurrences is
 * tracked; a tracked key's count overestimates its true count by at most its
 * error (<= N / CM_TOPK_SLOTS), never underestimates it.
 *
 * Keys are byte strings of at most CM_TOPK_KEY_MAX bytes (longer ones are cut).
 * Memory is fixed: sizeof(cm_topk_t), about 6 KiB; no allocation.
 * Not thread-safe: one writer at a time (the gateway keeps one per worker
 * behind an uncontended mutex and merges them on read).
 */
#ifndef CM_TOPK_H
#define CM_TOPK_H

#include <stddef.h>
#include <stdint.h>

#define CM_TOPK_SLOTS 64
#define CM_TOPK_KEY_MAX 64

typedef struct cm_topk_entry {
    uint64_t hash; /* 0 = empty slot */
    uint64_t count;
    uint64_t error; /* count may exceed the true count by at most this */
    uint8_t len;
    char key[CM_TOPK_KEY_MAX];
} cm_topk_entry_t;

/* The counters by field, not by entry: an add compares every slot's hash
 * (64 x 8 bytes: 8 cache lines) and, for a key not tracked, every count,
 * never the keys of slots whose hash differs. */
typedef struct cm_topk {
    uint64_t total;                 /* items counted */
    size_t last;                    /* the slot the last add found or took: tried first */
    uint64_t hash[CM_TOPK_SLOTS];   /* 0 = empty slot */
    uint64_t count[CM_TOPK_SLOTS];
    uint64_t error[CM_TOPK_SLOTS];
    uint8_t len[CM_TOPK_SLOTS];
    char key[CM_TOPK_SLOTS][CM_TOPK_KEY_MAX];
} cm_topk_t;

/* Empties t. */
void cm_topk_init(cm_topk_t *t);
/* Counts one occurrence of key. O(CM_TOPK_SLOTS) compares of a 64-bit hash
 * (and of a count, when the key is not tracked). */
void cm_topk_add(cm_topk_t *t, const void *key, size_t len);
/*
 * Adds every counter of src into dst as if src's items had been added to dst
 * (counts and errors of a shared key add up; dst keeps the CM_TOPK_SLOTS
 * largest). The result keeps the guarantee for the union of both streams.
 */
void cm_topk_merge(cm_topk_t *dst, const cm_topk_t *src);
/*
 * Copies the tracked entries, largest count first, into out (at most `max`)
 * and returns how many were copied.
 */
size_t cm_topk_sorted(const cm_topk_t *t, cm_topk_entry_t *out, size_t max);

#endif
