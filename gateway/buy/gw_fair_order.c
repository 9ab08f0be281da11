/*
 * The lottery's draw order (gw_fair.h gw_fair_order): a pure function of the
 * entrants' keys and the seed, in a file of its own so that the simulator
 * (sim/) runs the real draw without linking the gateway.
 */
#include "gateway/buy/gw_fair.h"

#include "common/cm_alloc.h"
#include "common/cm_rand.h"

#include <stdlib.h>

typedef struct keyidx {
    uint64_t key;
    uint32_t idx;
} keyidx_t;

static int keyidx_cmp(const void *a, const void *b)
{
    const keyidx_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

void gw_fair_order(const uint64_t *keys, size_t n, uint64_t seed, uint32_t *perm)
{
    if (!n)
        return;
    keyidx_t *k = cm_xmalloc(n * sizeof(*k));
    for (size_t i = 0; i < n; i++)
        k[i] = (keyidx_t){keys[i], (uint32_t)i};
    qsort(k, n, sizeof(*k), keyidx_cmp);
    for (size_t i = 0; i < n; i++)
        perm[i] = k[i].idx;
    free(k);
    /* xoshiro256** seeded by splitmix64, rejection for the bound: the draw is
     * a function of the seed alone (docs/design.md "Fair start") */
    cm_rand_t rng;
    cm_rand_seed(&rng, seed);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)cm_rand_below(&rng, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
