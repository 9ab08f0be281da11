/*
 * The counting fingerprint set (inv_keyset.h): per shard, an open-addressing
 * table with linear probing and backward-shift deletion (no tombstones), so
 * a set that grows and shrinks with the held orders never fills with dead
 * slots. A fingerprint is already a keyed hash: it is its own home.
 */
#include "inventory/inv_keyset.h"

#include "common/cm_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define KS_SLOTS_MIN 16u /* a shard's first table */
#define KS_LOAD_NUM 3u   /* grows when more than 3/4 full, doubling */
#define KS_LOAD_DEN 4u

static inv_keyset_shard_t *shard_of(inv_keyset_t *ks, uint32_t fp)
{
    return &ks->shards[fp & (INV_KEYSET_SHARDS - 1)];
}

/* The shard index uses the low bits; the home slot the high ones. */
static uint32_t home_of(uint32_t fp, uint32_t n)
{
    return (uint32_t)(((uint64_t)(fp >> 4) * n) >> 28);
}

static uint32_t next_slot(uint32_t i, uint32_t n)
{
    return i + 1 == n ? 0 : i + 1;
}

/* Shard lock held. The slot of fp, or the empty slot where it would go. */
static uint32_t find_slot(const inv_keyset_shard_t *sh, uint32_t fp)
{
    uint32_t i = home_of(fp, sh->nslots);
    while (sh->slots[i].fp && sh->slots[i].fp != fp)
        i = next_slot(i, sh->nslots);
    return i;
}

static void grow(inv_keyset_shard_t *sh)
{
    uint32_t n = sh->nslots ? sh->nslots * 2 : KS_SLOTS_MIN;
    inv_keyset_entry_t *ns = cm_xcalloc(n, sizeof(*ns));
    inv_keyset_shard_t t = {.slots = ns, .nslots = n};
    for (uint32_t j = 0; j < sh->nslots; j++)
        if (sh->slots[j].fp)
            ns[find_slot(&t, sh->slots[j].fp)] = sh->slots[j];
    free(sh->slots);
    sh->slots = ns;
    sh->nslots = n;
}

void inv_keyset_budget_init(inv_keyset_budget_t *b, uint64_t max)
{
    b->max = max;
    atomic_store(&b->used, 0);
}

void inv_keyset_init(inv_keyset_t *ks, inv_keyset_budget_t *budget)
{
    memset(ks, 0, sizeof(*ks));
    ks->budget = budget;
    for (int i = 0; i < INV_KEYSET_SHARDS; i++)
        pthread_mutex_init(&ks->shards[i].lock, NULL);
}

void inv_keyset_clear(inv_keyset_t *ks)
{
    for (int i = 0; i < INV_KEYSET_SHARDS; i++) {
        inv_keyset_shard_t *sh = &ks->shards[i];
        pthread_mutex_lock(&sh->lock);
        free(sh->slots);
        sh->slots = NULL;
        /* the shard's fingerprints go back to the budget with its table */
        atomic_fetch_sub(&ks->distinct, sh->used);
        atomic_fetch_sub(&ks->budget->used, sh->used);
        sh->nslots = sh->used = 0;
        pthread_mutex_unlock(&sh->lock);
    }
    atomic_store(&ks->saturated, false);
}

void inv_keyset_saturate(inv_keyset_t *ks)
{
    atomic_store(&ks->saturated, true);
}

bool inv_keyset_saturated(inv_keyset_t *ks)
{
    return atomic_load(&ks->saturated);
}

void inv_keyset_deinit(inv_keyset_t *ks)
{
    inv_keyset_clear(ks);
    for (int i = 0; i < INV_KEYSET_SHARDS; i++)
        pthread_mutex_destroy(&ks->shards[i].lock);
}

void inv_keyset_add(inv_keyset_t *ks, uint32_t fp)
{
    if (!fp)
        return;
    inv_keyset_shard_t *sh = shard_of(ks, fp);
    pthread_mutex_lock(&sh->lock);
    inv_keyset_entry_t *e = sh->slots ? &sh->slots[find_slot(sh, fp)] : NULL;
    if (!e || !e->fp) {
        /* a new fingerprint: counted first, so the budget is never passed */
        if (atomic_fetch_add(&ks->budget->used, 1) >= ks->budget->max) {
            atomic_fetch_sub(&ks->budget->used, 1);
            atomic_store(&ks->saturated, true);
            pthread_mutex_unlock(&sh->lock);
            return;
        }
        atomic_fetch_add(&ks->distinct, 1);
        if ((uint64_t)(sh->used + 1) * KS_LOAD_DEN > (uint64_t)sh->nslots * KS_LOAD_NUM)
            grow(sh);
        e = &sh->slots[find_slot(sh, fp)];
        e->fp = fp;
        sh->used++;
    }
    if (e->count != UINT32_MAX)
        e->count++;
    pthread_mutex_unlock(&sh->lock);
}

void inv_keyset_del(inv_keyset_t *ks, uint32_t fp)
{
    if (!fp)
        return;
    inv_keyset_shard_t *sh = shard_of(ks, fp);
    pthread_mutex_lock(&sh->lock);
    if (!sh->slots)
        goto out;
    uint32_t n = sh->nslots, i = find_slot(sh, fp);
    inv_keyset_entry_t *e = &sh->slots[i];
    if (!e->fp || e->count == UINT32_MAX || --e->count > 0)
        goto out;
    /* backward shift: move later entries of the run into the hole when the
     * hole lies between their home and their slot */
    for (uint32_t j = next_slot(i, n);; j = next_slot(j, n)) {
        inv_keyset_entry_t *f = &sh->slots[j];
        if (!f->fp)
            break;
        uint32_t h = home_of(f->fp, n);
        bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            sh->slots[i] = *f;
            i = j;
        }
    }
    sh->slots[i] = (inv_keyset_entry_t){0};
    sh->used--;
    atomic_fetch_sub(&ks->distinct, 1);
    atomic_fetch_sub(&ks->budget->used, 1);
out:
    pthread_mutex_unlock(&sh->lock);
}

bool inv_keyset_has(inv_keyset_t *ks, uint32_t fp)
{
    if (atomic_load_explicit(&ks->saturated, memory_order_acquire))
        return true;
    if (!fp)
        return false;
    inv_keyset_shard_t *sh = shard_of(ks, fp);
    pthread_mutex_lock(&sh->lock);
    bool has = sh->slots && sh->slots[find_slot(sh, fp)].fp == fp;
    pthread_mutex_unlock(&sh->lock);
    return has;
}

size_t inv_keyset_size(inv_keyset_t *ks)
{
    return (size_t)atomic_load(&ks->distinct);
}

size_t inv_keyset_bytes(inv_keyset_t *ks)
{
    size_t n = 0;
    for (int i = 0; i < INV_KEYSET_SHARDS; i++) {
        pthread_mutex_lock(&ks->shards[i].lock);
        n += (size_t)ks->shards[i].nslots * sizeof(inv_keyset_entry_t);
        pthread_mutex_unlock(&ks->shards[i].lock);
    }
    return n;
}
