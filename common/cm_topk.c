/*
 * Space-saving heavy hitters (see cm_topk.h). A linear scan over 64 slots
 * compares hashes only (one cache line per 2 slots' worth of hashes would be
 * better still, but 64 compares cost ~40 ns and run only on rejections).
 */
#include "common/cm_topk.h"
#include "common/cm_hash.h"

#include <stdlib.h>
#include <string.h>

/*
 * Only a pre-filter of the key compare: every add scans all 64 slots whatever
 * the hash, so keys made to collide cost at most 64 memcmps and change no
 * count. The unkeyed cm_hash_fast is allowed here (cm_hash.h); the two
 * SipHashes of a rejection's count (user and address) were ~400 of its ~680
 * instructions. Never 0 (0 marks an empty slot).
 */
static uint64_t hash_key(const void *key, size_t len)
{
    uint64_t h = cm_hash_fast(key, len);
    return h ? h : 1;
}

void cm_topk_init(cm_topk_t *t)
{
    memset(t, 0, sizeof(*t));
}

static void add_n(cm_topk_t *t, uint64_t h, const void *key, size_t len, uint64_t n,
                  uint64_t err)
{
    cm_topk_entry_t *min = NULL;
    for (size_t i = 0; i < CM_TOPK_SLOTS; i++) {
        cm_topk_entry_t *e = &t->e[i];
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->count += n;
            e->error += err;
            return;
        }
        if (e->hash == 0) {
            if (!min || min->hash != 0)
                min = e;
            continue;
        }
        if (!min || (min->hash != 0 && e->count < min->count))
            min = e;
    }
    /* Replace the smallest counter: the newcomer inherits its count as error. */
    uint64_t base = min->hash ? min->count : 0;
    min->hash = h;
    min->count = base + n;
    min->error = base + err;
    min->len = (uint8_t)len;
    memcpy(min->key, key, len);
}

void cm_topk_add(cm_topk_t *t, const void *key, size_t len)
{
    if (len > CM_TOPK_KEY_MAX)
        len = CM_TOPK_KEY_MAX;
    t->total++;
    add_n(t, hash_key(key, len), key, len, 1, 0);
}

void cm_topk_merge(cm_topk_t *dst, const cm_topk_t *src)
{
    dst->total += src->total;
    for (size_t i = 0; i < CM_TOPK_SLOTS; i++) {
        const cm_topk_entry_t *e = &src->e[i];
        if (e->hash)
            add_n(dst, e->hash, e->key, e->len, e->count, e->error);
    }
}

static int by_count_desc(const void *a, const void *b)
{
    const cm_topk_entry_t *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return 0;
}

size_t cm_topk_sorted(const cm_topk_t *t, cm_topk_entry_t *out, size_t max)
{
    cm_topk_entry_t tmp[CM_TOPK_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < CM_TOPK_SLOTS; i++)
        if (t->e[i].hash)
            tmp[n++] = t->e[i];
    /* cppcheck-suppress uninitvar ; only the n entries written above are sorted */
    qsort(tmp, n, sizeof(tmp[0]), by_count_desc);
    if (n > max)
        n = max;
    memcpy(out, tmp, n * sizeof(tmp[0]));
    return n;
}
