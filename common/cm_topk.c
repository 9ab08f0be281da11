/*
 * Space-saving heavy hitters (see cm_topk.h). A linear scan over the 64
 * slots' hashes, then (for a key not tracked) over their counts: the fields
 * are arrays of their own, so a scan reads 8 cache lines of hashes, not the
 * ~97 lines of 64 entries of 97 bytes it read before (every 429 counts its
 * user and its address). The slot the last add used is tried first: a client
 * refused again and again finds its counter without a hash or a scan.
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
    size_t i, empty = CM_TOPK_SLOTS;
    for (i = 0; i < CM_TOPK_SLOTS; i++) {
        if (t->hash[i] == h && t->len[i] == len && memcmp(t->key[i], key, len) == 0) {
            t->count[i] += n;
            t->error[i] += err;
            t->last = i;
            return;
        }
        if (t->hash[i] == 0 && empty == CM_TOPK_SLOTS)
            empty = i;
    }
    /* Not tracked: the first empty slot, else replace the smallest counter
     * (the newcomer inherits its count as error). */
    size_t m = empty;
    uint64_t base = 0;
    if (m == CM_TOPK_SLOTS) {
        m = 0;
        for (i = 1; i < CM_TOPK_SLOTS; i++)
            if (t->count[i] < t->count[m])
                m = i;
        base = t->count[m];
    }
    t->last = m;
    t->hash[m] = h;
    t->count[m] = base + n;
    t->error[m] = base + err;
    t->len[m] = (uint8_t)len;
    memcpy(t->key[m], key, len);
}

void cm_topk_add(cm_topk_t *t, const void *key, size_t len)
{
    if (len > CM_TOPK_KEY_MAX)
        len = CM_TOPK_KEY_MAX;
    t->total++;
    /* The slot used last, compared before hashing: a client refused again
     * and again costs no hash either (~40 instructions of each of a 429's two
     * adds; callgrind: python3 bench/profile.py build rate calls). */
    size_t i = t->last;
    if (t->hash[i] && t->len[i] == len && memcmp(t->key[i], key, len) == 0) {
        t->count[i]++;
        return;
    }
    add_n(t, hash_key(key, len), key, len, 1, 0);
}

void cm_topk_merge(cm_topk_t *dst, const cm_topk_t *src)
{
    dst->total += src->total;
    for (size_t i = 0; i < CM_TOPK_SLOTS; i++)
        if (src->hash[i])
            add_n(dst, src->hash[i], src->key[i], src->len[i], src->count[i], src->error[i]);
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
    for (size_t i = 0; i < CM_TOPK_SLOTS; i++) {
        if (!t->hash[i])
            continue;
        cm_topk_entry_t *e = &tmp[n++];
        e->hash = t->hash[i];
        e->count = t->count[i];
        e->error = t->error[i];
        e->len = t->len[i];
        memcpy(e->key, t->key[i], t->len[i]);
    }
    /* cppcheck-suppress uninitvar ; only the n entries written above are sorted */
    qsort(tmp, n, sizeof(tmp[0]), by_count_desc);
    if (n > max)
        n = max;
    memcpy(out, tmp, n * sizeof(tmp[0]));
    return n;
}
