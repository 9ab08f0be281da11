/*
 * String-keyed map, open addressing (see cm_smap.h). Linear probing keeps a
 * lookup in one or two cache lines; deletion shifts the following run back
 * (Knuth vol. 3, 6.4, algorithm R) instead of leaving tombstones.
 */
#include "cm_smap.h"

#include <stdlib.h>
#include <string.h>

#include "cm_alloc.h"
#include "cm_hash.h"

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

void cm_smap_init(cm_smap_t *m, size_t hint)
{
    m->len = 0;
    m->cap = hint ? pow2_at_least(hint * 2) : 0;
    m->slots = m->cap ? cm_xcalloc(m->cap, sizeof(*m->slots)) : NULL;
}

void cm_smap_free(cm_smap_t *m, void (*free_val)(cm_smap_val_t))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        if (free_val)
            free_val(m->slots[i].val);
        free(m->slots[i].key);
    }
    CM_FREE(m->slots);
    m->cap = m->len = 0;
}

/* The slot holding key, or the empty slot where it would go. cap > 0. */
static size_t find(const cm_smap_t *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    while (m->slots[i].key && (m->slots[i].hash != h || strcmp(m->slots[i].key, key) != 0))
        i = (i + 1) & mask;
    return i;
}

static void grow(cm_smap_t *m)
{
    cm_smap_t n = {.cap = m->cap ? m->cap * 2 : 16, .len = m->len};
    n.slots = cm_xcalloc(n.cap, sizeof(*n.slots));
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = (size_t)m->slots[i].hash & (n.cap - 1);
        while (n.slots[j].key)
            j = (j + 1) & (n.cap - 1);
        n.slots[j] = m->slots[i];
    }
    free(m->slots);
    *m = n;
}

cm_smap_entry_t *cm_smap_get(const cm_smap_t *m, const char *key)
{
    if (m->len == 0)
        return NULL;
    size_t i = find(m, key, cm_hash_str(key));
    return m->slots[i].key ? &m->slots[i] : NULL;
}

cm_smap_entry_t *cm_smap_put(cm_smap_t *m, const char *key, bool *created)
{
    if ((m->len + 1) * 2 > m->cap)
        grow(m);
    uint64_t h = cm_hash_str(key);
    size_t i = find(m, key, h);
    bool c = m->slots[i].key == NULL;
    if (c) {
        m->slots[i] = (cm_smap_entry_t){.key = cm_xstrdup(key), .hash = h};
        m->len++;
    }
    if (created)
        *created = c;
    return &m->slots[i];
}

bool cm_smap_del(cm_smap_t *m, const char *key, cm_smap_val_t *out)
{
    if (m->len == 0)
        return false;
    size_t mask = m->cap - 1, i = find(m, key, cm_hash_str(key));
    if (!m->slots[i].key)
        return false;
    if (out)
        *out = m->slots[i].val;
    free(m->slots[i].key);
    /* Shift back every entry of the run after i that may move into the hole. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = (size_t)m->slots[j].hash & mask;
        /* j's entry may fill the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i] = (cm_smap_entry_t){0};
    m->len--;
    return true;
}

cm_smap_entry_t *cm_smap_next(const cm_smap_t *m, size_t *i)
{
    while (*i < m->cap) {
        cm_smap_entry_t *e = &m->slots[(*i)++];
        if (e->key)
            return e;
    }
    return NULL;
}
