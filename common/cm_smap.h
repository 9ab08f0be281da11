/*
 * A string-keyed hash map: open addressing with linear probing and
 * backward-shift deletion (no tombstones, so a table under steady insert and
 * delete never degrades), keys copied, one 64-bit value per key. It is the
 * one map for tables keyed by order ids and the like that need no layout of
 * their own: the relay's settled-id sets, the load tester's audit.
 *
 * Written here because Debian 12 packages no small C hash map that fits
 * (glib's GHashTable would bring GLib into every binary for two tables).
 * Keys are hashed with cm_hash_mem (SipHash under a per-process random key),
 * so client-chosen ids cannot be made to collide. The table doubles at 1/2
 * load. Not thread-safe: callers lock.
 *
 * Hot tables with a fixed memory budget (the per-user limiter, the inventory's
 * user marks, the order-status table) keep their own layouts on purpose.
 */
#ifndef CM_SMAP_H
#define CM_SMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef union cm_smap_val {
    uint64_t u;
    void *p;
} cm_smap_val_t;

typedef struct cm_smap_entry {
    char *key; /* NULL: empty slot */
    uint64_t hash;
    cm_smap_val_t val;
} cm_smap_entry_t;

typedef struct cm_smap {
    cm_smap_entry_t *slots;
    size_t cap, len; /* cap is 0 or a power of two */
} cm_smap_t;

/* An empty map; `hint` entries fit before the first growth (0: grow on first put). */
void cm_smap_init(cm_smap_t *m, size_t hint);
/* Frees the keys and the slots; with free_val, calls it on each value first. */
void cm_smap_free(cm_smap_t *m, void (*free_val)(cm_smap_val_t));

/* The entry of key, or NULL. */
cm_smap_entry_t *cm_smap_get(const cm_smap_t *m, const char *key);
/*
 * The entry of key, created with a zero value if absent (*created says which).
 * The pointer is valid until the next put or del.
 */
cm_smap_entry_t *cm_smap_put(cm_smap_t *m, const char *key, bool *created);
/* Removes key; returns true and its value in *out (if out) when it was there. */
bool cm_smap_del(cm_smap_t *m, const char *key, cm_smap_val_t *out);

static inline size_t cm_smap_len(const cm_smap_t *m)
{
    return m->len;
}

/*
 * Iteration: `for (size_t i = 0; (e = cm_smap_next(m, &i));)` visits each
 * entry once; no put or del meanwhile.
 */
cm_smap_entry_t *cm_smap_next(const cm_smap_t *m, size_t *i);

#endif
