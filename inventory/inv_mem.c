/*
 * The memory backend: one node, all state in this process.
 *
 * The stock of a sale is the view's own `_Atomic int64_t stock_left`, taken
 * with a compare-and-swap that never lets it go below zero (only the start-up
 * replay may, mem_replay). Each sale keeps
 * its held orders (accepted, not released) in a table split into MEM_SHARDS
 * shards by a keyed hash of the user id, one mutex per shard (memcached lock
 * striping). The atomic step runs under the buyer's shard lock, in this order:
 *
 *   1. idempotency key seen for this user   -> INV_DUPLICATE (original order)
 *   2. user units + qty > per_user_limit     -> INV_LIMIT_REACHED
 *   3. inventory.max_held_orders reached     -> CM_EFULL (503; sold out stays 410)
 *   4. CAS stock_left -= qty fails            -> INV_SOLD_OUT (flag set at 0)
 *   5. record the order in the shard's table -> INV_RESERVED
 *
 * Two requests of one user serialise on the shard lock, so the limit holds;
 * different users meet only at the CAS, so stock holds. An order is held only
 * until it is released, so memory is bounded by the stock and by the cap, not
 * by the crowd: 24 bytes per held order, 27-34 with the table's room to grow
 * (mem_entry_t), no malloc per order, no chains to follow.
 *
 * Sale definitions (not orders) are written to <data_dir>/sales.json on every
 * admin change (write tmp, fsync, rename, fsync dir) and read at open; the
 * gateway replays the accepted orders from its spool through inv_replay.
 */
#include "common/cm_plant.h"
#include "common/cm_yield.h"
#include "inventory/inv_backend.h"
#include "common/cm_hash.h"
#include "inventory/inv_keyset.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEM_SHARDS 256      /* power of two; small shards: a growth stalls one shard briefly */
#define MEM_SLOTS_MIN 8      /* a shard's first table (allocated on its first buyer) */
#define MEM_LOAD_NUM 7       /* a shard grows when more than 7/8 full ... */
#define MEM_LOAD_DEN 8
#define MEM_GROW_DIV 4       /* ... by a quarter: 24-byte entries cost 27-34 bytes each */
#define MEM_FOREIGN 0x80000000u /* in mem_entry_t.qty: `order` points to a malloc'd id */
#define MEM_FILE "sales.json"
#define MEM_FILE_FORMAT 1

/*
 * One held order: 24 bytes, no pointers for the gateway's own orders, no
 * user id text. The buyer is a keyed 64-bit SipHash of the user id, the
 * order its 64-bit cm_id value, the idempotency key a 32-bit fingerprint.
 *
 * What a hash instead of the text can get wrong, and how likely (n buyers of
 * one sale): two users whose hashes are equal share a record, so the later
 * one is refused (409) or shares a per-user limit; never an oversell, never a
 * user above the limit. P = n^2 / 2^65: 2.7e-6 for a sale of 10 million
 * buyers, and a client cannot aim for it (the key is random per process).
 * A new idempotency key of a user who holds orders matches one of them by
 * fingerprint with P = orders / 2^32 per keyed request: that user is answered
 * with the order they already hold (as a retry would be) instead of buying
 * again. Order ids that are not canonical cm_ids (tests, foreign callers) are
 * kept as text behind a pointer, flagged by MEM_FOREIGN.
 */
typedef struct mem_entry {
    uint64_t user;  /* keyed hash of the user id, never 0; 0 = empty slot */
    uint64_t order; /* the cm_id value, or (MEM_FOREIGN) a char * from cm_xstrdup */
    uint32_t idem;  /* fingerprint of the idempotency key; 0 = none */
    uint32_t qty;   /* units of this order, | MEM_FOREIGN */
} mem_entry_t;
_Static_assert(sizeof(mem_entry_t) == 24, "a held order costs 24 bytes in its table");

/*
 * A shard: an open-addressing table with Robin Hood linear probing (Celis
 * 1986), so a lookup stops as soon as it meets an entry nearer its home than
 * the probe is, and a miss (every new buyer) reads a few slots even 7/8 full.
 * A user's orders share one home and so lie next to each other. Deletion
 * shifts the entries after the hole back (no tombstones). The table grows by
 * a quarter, not doubled, so the bytes per held order stay within 27-34 in a
 * sale of some thousands of orders or more. Below that the shards' first
 * tables dominate (8 slots, 192 bytes, on a shard's first buyer: ~170 bytes
 * per order at 100 orders, ~50 at 1,000); and while the 256 shards' tables
 * cross into whole pages (slots_alloc), between ~30,000 and ~60,000 orders, a
 * sale costs up to ~55-64 per order (54 at 37,000; 29-37 from 60,000 orders
 * on). The held-order tables' bytes per order at N orders:
 * `python3 bench/bench_mem.py N`.
 */
typedef struct mem_shard {
    _Alignas(64) pthread_mutex_t lock; /* one cache line per shard: no false sharing */
    mem_entry_t *slots;                /* NULL until the first buyer */
    uint32_t nslots, used;
} mem_shard_t;

typedef struct mem_sale {
    mem_shard_t shards[MEM_SHARDS];
    /* The fingerprints of the raw Idempotency-Keys (as the client sent them,
     * before identity scoped them by user) of the sale's keyed orders, any
     * user's (inv_keyset.h): a keyed buy on a sold-out sale whose key is not
     * among them is answered 410 with nothing verified (mem_key_may_hold).
     * An order's fingerprint goes in before its stock is taken, so the sale
     * never reads sold out without the keys of the orders that emptied it.
     * A release leaves it (a false positive: a verification). An order whose
     * raw key is unknown (identity's scoped key in a record without a
     * key_fp of the current secret: inv_replay_keyed) saturates the set: every keyed buy takes the full path. At most
     * inventory.max_held_orders fingerprints over all sales (mb->key_budget),
     * then the set that would pass it is saturated. */
    inv_keyset_t keys;
    /* Keys of the last keyed restocks (admin_lock): a retried restock adds nothing. */
    uint64_t restock_keys[INV_RESTOCK_KEYS_MEM];
    uint32_t nrestock_keys;
} mem_sale_t;

typedef struct mem_backend {
    /* Serialises admin changes (put, restock) with each other and with the
     * file they write; the buy path never takes it. */
    pthread_mutex_t admin_lock;
    /* Ids of sales deleted with orders held (admin_lock; in sales.json with
     * a data_dir): those orders stay in the spool, and the gateway's start-up
     * replay (inv_replay) would give them, their units, per-user counts and
     * idempotency keys, to a new sale of the same id. So the id is not
     * defined again (mem_sale_put). */
    char (*deleted)[INV_SALE_ID_MAX + 1];
    uint32_t ndeleted, deleted_cap;
    uint64_t max_held; /* inventory.max_held_orders: entries over all sales */
    /* The sales' key sets (mem_sale_t.keys) together hold at most max_held
     * fingerprints: a sale past it has its set saturated (keyed sold-out buys
     * verified), so the sets' memory is bounded whatever the number of sales. */
    inv_keyset_budget_t key_budget;
    _Atomic uint64_t held, table_bytes, refused_full, over_cap_replayed;
} mem_backend_t;

/* The order id as the table keeps it. */
typedef struct order_key {
    uint64_t id;       /* cm_id value; 0 = foreign */
    const char *text;  /* the id as given */
} order_key_t;

static uint64_t user_hash(const char *s)
{
    uint64_t h = cm_hash_str(s); /* keyed: a crowd chooses user ids */
    return h ? h : 1;
}

/*
 * The last buyer this thread hashed for mem_prefetch, which the reserve that
 * follows hashes again (~240 instructions; the process's hash key never
 * changes once set, so an id's hash never does).
 */
static _Thread_local struct {
    uint64_t hash; /* 0: none */
    char id[INV_USER_ID_MAX + 1];
} prefetched_user;

static uint64_t user_hash_memo(const char *s)
{
    if (prefetched_user.hash && strcmp(prefetched_user.id, s) == 0)
        return prefetched_user.hash;
    return user_hash(s);
}

static uint32_t idem_fp(const char *key)
{
    return inv_idem_key_fp(key);
}

/* The form identity gives a key ("id-" and 64 hex digits, gw_identity.c):
 * the raw key it came from cannot be known. */
static bool key_is_scoped(const char *k)
{
    if (strncmp(k, "id-", 3) != 0 || strlen(k) != 67)
        return false;
    for (k += 3; *k; k++)
        if (!((*k >= '0' && *k <= '9') || (*k >= 'a' && *k <= 'f')))
            return false;
    return true;
}

/* Counts a keyed order in ms->keys (mem_sale_t.keys): raw_fp, the client's
 * raw key's fingerprint when the caller knows it (0: the stored key is taken
 * as raw unless it has identity's scoped form, which saturates the set).
 * Returns the fingerprint counted, 0 if none. */
static uint32_t keys_add(mem_sale_t *ms, uint32_t raw_fp, const char *stored)
{
    if (!stored[0])
        return 0;
    if (!raw_fp) {
        if (key_is_scoped(stored)) {
            inv_keyset_saturate(&ms->keys);
            return 0;
        }
        raw_fp = idem_fp(stored);
    }
    inv_keyset_add(&ms->keys, raw_fp);
    return raw_fp;
}

/* A canonical cm_id is kept as its value; anything else as text. */
static order_key_t order_key(const char *order_id)
{
    order_key_t k = {0, order_id};
    uint64_t v;
    char back[CM_ID_TEXT_LEN + 1];
    if (cm_id_parse(order_id, strlen(order_id), &v) == 0 && v != 0) {
        cm_id_format(v, back);
        if (memcmp(back, order_id, CM_ID_TEXT_LEN) == 0)
            k.id = v;
    }
    return k;
}

static bool entry_is(const mem_entry_t *e, const order_key_t *k)
{
    if (e->qty & MEM_FOREIGN)
        return !k->id && strcmp((const char *)(uintptr_t)e->order, k->text) == 0;
    return k->id && e->order == k->id;
}

static uint32_t entry_qty(const mem_entry_t *e)
{
    return e->qty & ~MEM_FOREIGN;
}

static void entry_order_text(const mem_entry_t *e, char *out)
{
    if (e->qty & MEM_FOREIGN)
        snprintf(out, INV_ORDER_ID_MAX + 1, "%s", (const char *)(uintptr_t)e->order);
    else
        cm_id_format(e->order, out);
}

static void entry_free(mem_entry_t *e)
{
    if (e->qty & MEM_FOREIGN)
        free((void *)(uintptr_t)e->order);
}

/*
 * The backend's per-sale state is published once, with release order, after
 * it is fully built; the buy path loads it with acquire order. NULL means the
 * view exists but the sale is not (yet) defined here.
 */
static mem_sale_t *sale_state(const inv_sale_t *sale)
{
    return __atomic_load_n(&sale->backend, __ATOMIC_ACQUIRE);
}

/*---- The shard tables ----*/

static size_t slots_bytes(uint32_t n)
{
    return (size_t)n * sizeof(mem_entry_t);
}

/*
 * Zeroed slots. A table of a page or more is its own mmap of whole pages, so
 * that a grown table's old copy goes back to the kernel at once. Below a page
 * it comes from malloc. (The threshold was 64 KiB: the 256 shards' tables under
 * it, growing by a quarter, left the workers' malloc arenas at ~10 MiB each,
 * and once the tables moved to mmap that memory stayed resident as free
 * chunks, pinned by a few small live allocations above them: 2-9 bytes per
 * order of a 1M-order sale: python3 bench/bench_mem.py --arenas.)
 */
/* Read on growth only (rare): sysconf, not a constant, for 16/64 KiB-page kernels. */
static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static bool slots_mapped(uint32_t n)
{
    return slots_bytes(n) >= page_size();
}

/* A table's slot count for at least n entries: a mapped table fills its last
 * page (the page is resident anyway; the slots lower the load for free). */
static uint32_t slots_round(uint32_t n)
{
    if (!slots_mapped(n))
        return n;
    size_t page = page_size();
    size_t pages = (slots_bytes(n) + page - 1) / page;
    return (uint32_t)(pages * page / sizeof(mem_entry_t));
}

static mem_entry_t *slots_alloc(uint32_t n)
{
    if (!slots_mapped(n))
        return cm_xcalloc(n, sizeof(mem_entry_t));
    void *p = mmap(NULL, slots_bytes(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort(); /* cm_xmalloc's policy: inventory.max_held_orders bounds memory, not NULL checks */
    return p;
}

static void slots_free(mem_entry_t *p, uint32_t n)
{
    if (!p)
        return;
    if (!slots_mapped(n))
        free(p);
    else
        munmap(p, slots_bytes(n));
}

/* Home slot: the hash's top 32 bits scaled to nslots (Lemire's fastrange;
 * the shard came from the low bits). */
static uint32_t home_of(uint64_t h, uint32_t n)
{
    return (uint32_t)(((h >> 32) * (uint64_t)n) >> 32);
}

/* How far slot i lies from the home of the entry in it. */
static uint32_t dist_of(uint64_t h, uint32_t i, uint32_t n)
{
    uint32_t home = home_of(h, n);
    return i >= home ? i - home : i + n - home;
}

static uint32_t next_slot(uint32_t i, uint32_t n)
{
    return i + 1 == n ? 0 : i + 1;
}

/* Places e in a table known to have room (Robin Hood: the entry farther from
 * its home keeps the slot). */
static void rh_place(mem_entry_t *slots, uint32_t n, mem_entry_t e)
{
    uint32_t i = home_of(e.user, n), d = 0;
    for (;;) {
        mem_entry_t *s = &slots[i];
        if (!s->user) {
            *s = e;
            return;
        }
        uint32_t sd = dist_of(s->user, i, n);
        if (sd < d) {
            mem_entry_t t = *s;
            *s = e;
            e = t;
            d = sd;
        }
        i = next_slot(i, n);
        d++;
    }
}

/* Shard lock held. Room for one more entry. */
static void shard_reserve_slot(mem_backend_t *mb, mem_shard_t *sh)
{
    if (sh->slots && (uint64_t)(sh->used + 1) * MEM_LOAD_DEN <= (uint64_t)sh->nslots * MEM_LOAD_NUM)
        return;
    uint32_t n = slots_round(sh->slots ? sh->nslots + sh->nslots / MEM_GROW_DIV + 1 : MEM_SLOTS_MIN);
    mem_entry_t *ns = slots_alloc(n);
    for (uint32_t i = 0; sh->slots && i < sh->nslots; i++)
        if (sh->slots[i].user)
            rh_place(ns, n, sh->slots[i]);
    slots_free(sh->slots, sh->nslots);
    atomic_fetch_add(&mb->table_bytes, slots_bytes(n) - (sh->slots ? slots_bytes(sh->nslots) : 0));
    /* atomic stores for mem_prefetch's unlocked look: the table, then its size */
    __atomic_store_n(&sh->slots, ns, __ATOMIC_RELAXED);
    __atomic_store_n(&sh->nslots, n, __ATOMIC_RELEASE);
}

/* Shard lock held. */
static void shard_add(mem_backend_t *mb, mem_shard_t *sh, uint64_t user, const order_key_t *k,
                      uint32_t qty, const char *idem)
{
    shard_reserve_slot(mb, sh);
    mem_entry_t e = {.user = user, .order = k->id, .idem = idem_fp(idem), .qty = qty};
    if (!k->id) {
        e.order = (uint64_t)(uintptr_t)cm_xstrdup(k->text);
        e.qty |= MEM_FOREIGN;
    }
    rh_place(sh->slots, sh->nslots, e);
    sh->used++;
}

/* Shard lock held. Removes the entry at slot i (backward shift). */
static void shard_del(mem_shard_t *sh, uint32_t i)
{
    entry_free(&sh->slots[i]);
    uint32_t n = sh->nslots;
    for (;;) {
        uint32_t j = next_slot(i, n);
        mem_entry_t *e = &sh->slots[j];
        if (!e->user || dist_of(e->user, j, n) == 0)
            break;
        sh->slots[i] = *e;
        i = j;
    }
    sh->slots[i] = (mem_entry_t){0};
    sh->used--;
}

/* What a shard holds for one user. */
typedef struct user_view {
    uint32_t units;     /* sum of the user's orders' qty */
    int64_t idem_at;    /* slot of the order with the idempotency key, else -1 */
    int64_t order_at;   /* slot of the order looked for, else -1 */
} user_view_t;

/* Shard lock held. Visits the user's entries: from the home slot until an
 * empty slot or an entry nearer its own home than the probe is. */
static user_view_t user_scan(const mem_shard_t *sh, uint64_t user, uint32_t idem,
                             const order_key_t *k)
{
    user_view_t v = {0, -1, -1};
    if (!sh->slots)
        return v;
    uint32_t n = sh->nslots, i = home_of(user, n);
    for (uint32_t d = 0;; d++, i = next_slot(i, n)) {
        const mem_entry_t *e = &sh->slots[i];
        if (!e->user || dist_of(e->user, i, n) < d)
            return v;
        if (e->user != user)
            continue;
        v.units += entry_qty(e);
        if (idem && e->idem == idem && v.idem_at < 0)
            v.idem_at = i;
        if (k && v.order_at < 0 && entry_is(e, k))
            v.order_at = i;
    }
}

static mem_sale_t *mem_sale_new(inv_keyset_budget_t *key_budget)
{
    mem_sale_t *ms = aligned_alloc(64, sizeof(mem_sale_t));
    if (!ms) {
        /* cm_xmalloc's policy: admission control, not NULL checks, bounds memory */
        abort();
    }
    memset(ms, 0, sizeof(*ms));
    for (int i = 0; i < MEM_SHARDS; i++)
        pthread_mutex_init(&ms->shards[i].lock, NULL);
    inv_keyset_init(&ms->keys, key_budget);
    return ms;
}

/* Frees the held orders of a deleted sale now, not at close: a long-lived
 * gateway that deletes its ended sales gets their memory back. A worker that
 * still holds the view may add an order afterwards; mem_sale_free takes it. */
static uint64_t sale_clear(mem_backend_t *mb, mem_sale_t *ms)
{
    uint64_t cleared = 0;
    for (int i = 0; i < MEM_SHARDS; i++) {
        mem_shard_t *sh = &ms->shards[i];
        pthread_mutex_lock(&sh->lock);
        cleared += sh->used;
        for (uint32_t j = 0; sh->slots && j < sh->nslots; j++)
            entry_free(&sh->slots[j]);
        if (sh->slots) {
            atomic_fetch_sub(&mb->table_bytes, slots_bytes(sh->nslots));
            atomic_fetch_sub(&mb->held, sh->used);
        }
        slots_free(sh->slots, sh->nslots);
        __atomic_store_n(&sh->slots, NULL, __ATOMIC_RELAXED); /* see shard_reserve_slot */
        __atomic_store_n(&sh->nslots, 0, __ATOMIC_RELEASE);
        sh->used = 0;
        pthread_mutex_unlock(&sh->lock);
    }
    inv_keyset_clear(&ms->keys);
    return cleared;
}

static void mem_sale_free(mem_backend_t *mb, mem_sale_t *ms)
{
    if (!ms)
        return;
    sale_clear(mb, ms);
    for (int i = 0; i < MEM_SHARDS; i++)
        pthread_mutex_destroy(&ms->shards[i].lock);
    inv_keyset_deinit(&ms->keys);
    free(ms);
}

static mem_shard_t *shard_of(mem_sale_t *ms, uint64_t h)
{
    return &ms->shards[h & (MEM_SHARDS - 1)];
}

/*
 * Makes the sold-out flag agree with stock_left. Every path that brings
 * stock_left to 0 or moves it up calls this after its change; each store is
 * followed by a re-check, so once the changes stop the flag is right. In
 * between it may briefly say "not sold out" at 0 (the CAS still refuses, and
 * the refusing call sets it), but it never stays "sold out" while units are
 * left, which would turn buyers away from stock.
 */
static void sold_out_sync(inv_sale_t *sale)
{
    for (;;) {
        bool so = atomic_load(&sale->stock_left) <= 0;
        CM_YIELD(CM_YIELD_SOLD_OUT_SYNC); /* a restock or a release may land here */
        atomic_store(&sale->sold_out, so);
        if (CM_PLANT(INV_SOLD_OUT_STALE) || (atomic_load(&sale->stock_left) <= 0) == so)
            return;
    }
}

/* Takes qty units unless fewer are left. Returns true and *left_after, or
 * false and *left_after = the units seen. */
static bool stock_take(inv_sale_t *sale, uint32_t qty, int64_t *left_after)
{
    int64_t cur = atomic_load(&sale->stock_left);
    do {
        if (cur + CM_PLANT(INV_CAS_ONE_MORE) < (int64_t)qty) {
            *left_after = cur;
            return false;
        }
    } while (!atomic_compare_exchange_weak(&sale->stock_left, &cur, cur - (int64_t)qty));
    *left_after = cur - (int64_t)qty;
    return true;
}

/*---- Persistence of sale definitions ----*/

static json_t *def_json(const inv_sale_info_t *d)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "sale_id", d->sale_id, "stock_total",
                     (json_int_t)d->stock_total, "per_user_limit", (json_int_t)d->per_user_limit,
                     "starts_at_ms", (json_int_t)d->starts_at_ms, "ends_at_ms",
                     (json_int_t)d->ends_at_ms, "version", (json_int_t)d->version);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Caller holds admin_lock (or is mem_load). */
static bool is_deleted(const mem_backend_t *mb, const char *sale_id)
{
    for (uint32_t i = 0; i < mb->ndeleted; i++)
        if (strcmp(mb->deleted[i], sale_id) == 0)
            return true;
    return false;
}

static void deleted_add(mem_backend_t *mb, const char *sale_id)
{
    if (is_deleted(mb, sale_id))
        return;
    if (mb->ndeleted == mb->deleted_cap) {
        mb->deleted_cap = mb->deleted_cap ? mb->deleted_cap * 2 : 8;
        mb->deleted = cm_xrealloc(mb->deleted, mb->deleted_cap * sizeof(*mb->deleted));
    }
    snprintf(mb->deleted[mb->ndeleted++], sizeof(mb->deleted[0]), "%s", sale_id);
}

/*
 * Writes every defined sale to <data_dir>/sales.json, with `pending` (a sale
 * about to be created or changed) in place of its current definition, and the
 * ids of the deleted sales. Caller holds admin_lock. Atomic: readers see the
 * old or the new file.
 */
static int mem_persist(inv_t *inv, const inv_sale_info_t *pending, char *errbuf, size_t errlen)
{
    if (!inv->data_dir)
        return 0;
    const mem_backend_t *mb = inv->backend;
    json_t *arr = json_array();
    bool pending_done = false;
    pthread_rwlock_rdlock(&inv->sales_lock);
    for (uint32_t i = 0; i < inv->sales_cap; i++) {
        inv_sale_t *s = inv->sales[i];
        if (!s)
            continue;
        if (pending && strcmp(s->sale_id, pending->sale_id) == 0) {
            json_array_append_new(arr, def_json(pending));
            pending_done = true;
        } else if (sale_state(s)) {
            inv_sale_info_t d;
            inv_sale_snapshot(s, &d);
            json_array_append_new(arr, def_json(&d));
        }
    }
    pthread_rwlock_unlock(&inv->sales_lock);
    if (pending && !pending_done)
        json_array_append_new(arr, def_json(pending));
    json_t *root = json_pack("{s:i, s:o}", "format", MEM_FILE_FORMAT, "sales", arr);
    if (mb->ndeleted) { /* absent when none: the file stays as it was (older readers) */
        json_t *del = json_array();
        for (uint32_t i = 0; i < mb->ndeleted; i++)
            json_array_append_new(del, json_string(mb->deleted[i]));
        json_object_set_new(root, "deleted", del);
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text) {
        cm_errbuf_set(errbuf, errlen, "sales.json: cannot encode");
        return CM_ENOMEM;
    }

    size_t dl = strlen(inv->data_dir) + sizeof("/" MEM_FILE ".tmp");
    char *path = cm_xmalloc(dl), *tmp = cm_xmalloc(dl);
    snprintf(path, dl, "%s/%s", inv->data_dir, MEM_FILE);
    snprintf(tmp, dl, "%s/%s.tmp", inv->data_dir, MEM_FILE);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, text, strlen(text)) < 0 || write_all(fd, "\n", 1) < 0 ||
        fsync(fd) < 0) {
        cm_errbuf_set(errbuf, errlen, "%s: %s", tmp, strerror(errno));
        rc = CM_EIO;
    }
    if (fd >= 0 && close(fd) < 0 && rc == 0) {
        cm_errbuf_set(errbuf, errlen, "%s: close: %s", tmp, strerror(errno));
        rc = CM_EIO;
    }
    if (rc == 0 && rename(tmp, path) < 0) {
        cm_errbuf_set(errbuf, errlen, "rename %s: %s", path, strerror(errno));
        rc = CM_EIO;
    }
    if (rc == 0) {
        /* The rename itself is durable only once the directory is synced. */
        int dfd = open(inv->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0) {
            cm_errbuf_set(errbuf, errlen, "%s: fsync: %s", inv->data_dir, strerror(errno));
            rc = CM_EIO;
        }
        if (dfd >= 0)
            close(dfd);
    } else {
        unlink(tmp);
    }
    if (rc < 0)
        cm_log_error("inv", "cannot persist sale definitions", "dir=%s err=\"%s\"",
                     inv->data_dir, errbuf ? errbuf : "");
    free(text);
    free(path);
    free(tmp);
    return rc;
}

static void publish_new(mem_backend_t *mb, inv_sale_t *s, const inv_sale_info_t *d)
{
    inv_sale_info_t info = *d;
    info.stock_left = d->stock_total;
    info.accepted_units = 0;
    info.accepted_orders = 0;
    inv__sale_publish(s, &info);
    mem_sale_t *ms = mem_sale_new(&mb->key_budget);
    __atomic_store_n(&s->backend, ms, __ATOMIC_RELEASE);
}

static int mem_load(inv_t *inv, char *errbuf, size_t errlen)
{
    size_t dl = strlen(inv->data_dir) + sizeof("/" MEM_FILE);
    char *path = cm_xmalloc(dl);
    snprintf(path, dl, "%s/%s", inv->data_dir, MEM_FILE);
    struct stat st;
    if (stat(path, &st) < 0 && errno == ENOENT) {
        free(path);
        return 0; /* a fresh data dir */
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    int rc = 0;
    if (!root) {
        cm_errbuf_set(errbuf, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        rc = CM_ECORRUPT;
        goto out;
    }
    json_int_t format = 0;
    json_t *arr = NULL;
    if (json_unpack_ex(root, &jerr, 0, "{s:I, s:o}", "format", &format, "sales", &arr) < 0 ||
        format != MEM_FILE_FORMAT || !json_is_array(arr)) {
        cm_errbuf_set(errbuf, errlen, "%s: want {\"format\":%d,\"sales\":[...]}", path,
                MEM_FILE_FORMAT);
        rc = CM_ECORRUPT;
        goto out;
    }
    size_t i;
    json_t *e;
    json_t *del = json_object_get(root, "deleted");
    if (del && !json_is_array(del)) {
        cm_errbuf_set(errbuf, errlen, "%s: want \"deleted\":[sale ids]", path);
        rc = CM_ECORRUPT;
        goto out;
    }
    json_array_foreach(del, i, e)
    {
        const char *id = json_string_value(e);
        if (!id || !inv_id_valid(id, strlen(id), INV_SALE_ID_MAX)) {
            cm_errbuf_set(errbuf, errlen, "%s: deleted[%zu]: not a sale id", path, i);
            rc = CM_ECORRUPT;
            goto out;
        }
        deleted_add(inv->backend, id);
    }
    json_array_foreach(arr, i, e)
    {
        const char *id = NULL;
        json_int_t stock, limit, starts, ends, version;
        if (json_unpack_ex(e, &jerr, 0, "{s:s, s:I, s:I, s:I, s:I, s:I}", "sale_id", &id,
                           "stock_total", &stock, "per_user_limit", &limit, "starts_at_ms",
                           &starts, "ends_at_ms", &ends, "version", &version) < 0) {
            cm_errbuf_set(errbuf, errlen, "%s: sales[%zu]: %s", path, i, jerr.text);
            rc = CM_ECORRUPT;
            goto out;
        }
        if (!inv_id_valid(id, strlen(id), INV_SALE_ID_MAX) || stock < 0 || limit < 1 ||
            limit > UINT32_MAX || starts < 0 || ends < 0 || version < 0) {
            cm_errbuf_set(errbuf, errlen, "%s: sales[%zu]: value out of range", path, i);
            rc = CM_ECORRUPT;
            goto out;
        }
        inv_sale_t *s = inv__sale_get_or_create(inv, id);
        if (!s) {
            cm_errbuf_set(errbuf, errlen, "%s: more than max_sales=%u sales", path, inv->max_sales);
            rc = CM_EINVAL;
            goto out;
        }
        if (sale_state(s)) {
            cm_errbuf_set(errbuf, errlen, "%s: sale %s defined twice", path, id);
            rc = CM_ECORRUPT;
            goto out;
        }
        inv_sale_info_t d = {0};
        snprintf(d.sale_id, sizeof(d.sale_id), "%s", id);
        d.stock_total = stock;
        d.per_user_limit = (uint32_t)limit;
        d.starts_at_ms = starts;
        d.ends_at_ms = ends;
        d.version = (uint64_t)version;
        publish_new(inv->backend, s, &d);
    }
    cm_log_info("inv", "sale definitions loaded", "path=%s sales=%zu", path, json_array_size(arr));
out:
    json_decref(root);
    free(path);
    return rc;
}

/*---- The vtable ----*/

static void mem_close(inv_t *inv)
{
    mem_backend_t *mb = inv->backend;
    for (uint32_t i = 0; i < inv->sales_cap; i++) {
        inv_sale_t *s = inv->sales[i];
        if (s) {
            mem_sale_free(mb, s->backend);
            s->backend = NULL;
        }
    }
    for (inv_sale_t *s = inv->dead; s; s = s->dead_next) {
        mem_sale_free(mb, s->backend);
        s->backend = NULL;
    }
    if (mb) {
        pthread_mutex_destroy(&mb->admin_lock);
        free(mb->deleted);
        free(mb);
        inv->backend = NULL;
    }
}

static int mem_open(inv_t *inv, const char *url, char *errbuf, size_t errlen)
{
    (void)url;
    mem_backend_t *mb = cm_xcalloc(1, sizeof(*mb));
    pthread_mutex_init(&mb->admin_lock, NULL);
    mb->max_held = inv->max_held_orders ? inv->max_held_orders : INV_MEM_MAX_HELD_DEFAULT;
    inv_keyset_budget_init(&mb->key_budget, mb->max_held);
    inv->backend = mb;
    if (inv->data_dir) {
        if (mkdir(inv->data_dir, 0755) < 0 && errno != EEXIST) {
            cm_errbuf_set(errbuf, errlen, "data_dir %s: %s", inv->data_dir, strerror(errno));
            mem_close(inv);
            return CM_EIO;
        }
        int rc = mem_load(inv, errbuf, errlen);
        if (rc < 0) {
            mem_close(inv);
            return rc;
        }
    }
    return 0;
}

/* Counts one more held order unless inventory.max_held_orders is reached. */
static bool held_take(mem_backend_t *mb)
{
    if (atomic_fetch_add_explicit(&mb->held, 1, memory_order_relaxed) < mb->max_held)
        return true;
    atomic_fetch_sub_explicit(&mb->held, 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&mb->refused_full, 1, memory_order_relaxed) == 0)
        cm_log_warn("inv", "inventory.max_held_orders reached: new orders get 503 until some "
                    "are released", "max_held_orders=%llu", (unsigned long long)mb->max_held);
    return false;
}

static int mem_reserve(inv_worker_t *w, inv_reserve_req_t *req)
{
    inv_sale_t *sale = req->sale;
    mem_sale_t *ms = sale_state(sale);
    if (!ms)
        return INV_UNKNOWN_SALE;
    if (req->qty & MEM_FOREIGN) /* 2^31 units: no limit allows it; the bit is the table's */
        return CM_EINVAL;
    /* Sold out and no key to look up: answer from the flag, no lock. (With a
     * key, a retry of a request that was accepted must get its order back.) */
    if (req->idem_key[0] == '\0' && atomic_load_explicit(&sale->sold_out, memory_order_acquire)) {
        req->stock_left = 0;
        return INV_SOLD_OUT;
    }

    mem_backend_t *mb = w->inv->backend;
    uint64_t h = user_hash_memo(req->user_id);
    uint32_t fp = idem_fp(req->idem_key);
    mem_shard_t *sh = shard_of(ms, h);
    int outcome;
    int64_t left;
    pthread_mutex_lock(&sh->lock);
    user_view_t v = user_scan(sh, h, fp, NULL);
    uint32_t units = v.units;
    if (v.idem_at >= 0 && !CM_PLANT(INV_IDEM_RESERVES)) {
        const mem_entry_t *e = &sh->slots[v.idem_at];
        entry_order_text(e, req->order_id);
        req->qty = entry_qty(e);
        req->user_units = units;
        pthread_mutex_unlock(&sh->lock);
        int64_t left_now = atomic_load(&sale->stock_left);
        req->stock_left = left_now < 0 ? 0 : left_now;
        return INV_DUPLICATE;
    }
    uint64_t limit = atomic_load(&sale->per_user_limit) + (uint64_t)CM_PLANT(INV_LIMIT_ONE_MORE);
    if ((uint64_t)units + req->qty > limit) {
        outcome = INV_LIMIT_REACHED;
        left = atomic_load(&sale->stock_left);
    } else if (!held_take(mb)) {
        /* Full: sold out still answers sold out; else 503, nothing taken. */
        left = atomic_load(&sale->stock_left);
        outcome = left < (int64_t)req->qty ? INV_SOLD_OUT : CM_EFULL;
    } else {
        uint32_t raw = keys_add(ms, req->raw_key_fp, req->idem_key); /* before the take */
        if (!stock_take(sale, req->qty, &left)) {
            inv_keyset_del(&ms->keys, raw);
            atomic_fetch_sub_explicit(&mb->held, 1, memory_order_relaxed);
            outcome = INV_SOLD_OUT;
        } else {
            order_key_t k = order_key(req->order_id);
            shard_add(mb, sh, h, &k, req->qty, req->idem_key);
            units += req->qty;
            atomic_fetch_add(&sale->accepted_units, req->qty);
            atomic_fetch_add(&sale->accepted_orders, 1);
            outcome = INV_RESERVED;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if ((outcome == INV_SOLD_OUT || outcome == INV_RESERVED) && left <= 0)
        sold_out_sync(sale);
    /* below 0 only while replayed orders wait for their releases (mem_replay) */
    req->stock_left = left < 0 ? 0 : left;
    req->user_units = units;
    return outcome;
}

/* mem_reserve answers a keyed buy on a sold-out sale INV_DUPLICATE only if
 * one of its held orders carries the key's fingerprint (for some user). */
static bool mem_key_may_hold(inv_t *inv, const inv_sale_t *sale, uint32_t raw_key_fp)
{
    (void)inv;
    mem_sale_t *ms = sale_state(sale);
    return !ms || inv_keyset_has(&ms->keys, raw_key_fp);
}

/*
 * The cache line of the user's home slot, fetched ahead of mem_reserve while
 * the gateway does other work (the rate limits): with a new buyer per order
 * the first look at the shard's table missed the cache every time (user_scan
 * and rh_place, ~5% of an accepted order's CPU: python3 bench/profile.py
 * build acc perf). No lock: the table and its size are read with atomic loads
 * (stored so by the shard's writers); a table swapped meanwhile makes the
 * hint useless, never wrong (a prefetch reads nothing and never faults).
 */
static void mem_prefetch(inv_worker_t *w, inv_sale_t *sale, const char *user_id)
{
    (void)w;
    mem_sale_t *ms = sale_state(sale);
    if (!ms)
        return;
    uint64_t h = user_hash(user_id);
    size_t len = strlen(user_id);
    if (len < sizeof(prefetched_user.id)) {
        memcpy(prefetched_user.id, user_id, len + 1);
        prefetched_user.hash = h;
    }
    const mem_shard_t *sh = shard_of(ms, h);
    uint32_t n = __atomic_load_n(&sh->nslots, __ATOMIC_ACQUIRE);
    const mem_entry_t *slots = __atomic_load_n(&sh->slots, __ATOMIC_RELAXED);
    if (slots && n)
        __builtin_prefetch(&slots[home_of(h, n)], 1);
}

static int info_exact(inv_t *inv, inv_sale_t *s, inv_sale_info_t *out)
{
    (void)inv;
    /* Caller holds admin_lock, so stock_total cannot move; the units held are
     * total - left at the instant stock_left is read. */
    inv_sale_snapshot(s, out);
    int64_t left = atomic_load(&s->stock_left); /* below 0: see mem_replay */
    out->stock_left = left < 0 ? 0 : left;
    out->accepted_units = out->stock_total - left;
    return 0;
}

static int mem_sale_put(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out,
                        char *errbuf, size_t errlen)
{
    mem_backend_t *mb = inv->backend;
    int rc = 0;
    pthread_mutex_lock(&mb->admin_lock);
    inv_sale_t *s = inv_sale_find(inv, def->sale_id);
    if (!s || !sale_state(s)) {
        /* A new sale: write it down first, then show it. */
        if (inv->data_dir && is_deleted(mb, def->sale_id)) {
            cm_errbuf_set(
                errbuf, errlen,
                "sale %s was deleted with orders held: they stay in the spool, which gives "
                "them to a sale of that id at every start; use a new id",
                def->sale_id);
            rc = CM_ECONFLICT;
            goto out;
        }
        if (!s) {
            pthread_rwlock_rdlock(&inv->sales_lock);
            bool full = inv->nsales >= inv->max_sales;
            pthread_rwlock_unlock(&inv->sales_lock);
            if (full) {
                cm_errbuf_set(errbuf, errlen, "too many sales (max_sales=%u)", inv->max_sales);
                rc = CM_EINVAL;
                goto out;
            }
        }
        inv_sale_info_t d = {0};
        snprintf(d.sale_id, sizeof(d.sale_id), "%s", def->sale_id);
        d.stock_total = def->stock;
        d.per_user_limit = def->per_user_limit;
        d.starts_at_ms = def->starts_at_ms;
        d.ends_at_ms = def->ends_at_ms;
        d.version = 1;
        rc = mem_persist(inv, &d, errbuf, errlen);
        if (rc < 0)
            goto out;
        s = inv__sale_get_or_create(inv, def->sale_id);
        if (!s) { /* cannot happen: creators hold admin_lock and we checked */
            cm_errbuf_set(errbuf, errlen, "too many sales (max_sales=%u)", inv->max_sales);
            mem_persist(inv, NULL, NULL, 0);
            rc = CM_EINVAL;
            goto out;
        }
        publish_new(inv->backend, s, &d);
        sold_out_sync(s);
        goto done;
    }

    /* An update. A decrease is taken from stock_left first (CAS, so a racing
     * reservation cannot slip below), and given back if the file cannot be
     * written; an increase is written down first, then made visible. */
    int64_t total = atomic_load(&s->stock_total);
    int64_t delta = def->stock - total;
    inv_sale_info_t d;
    inv_sale_snapshot(s, &d);
    d.stock_total = def->stock;
    d.per_user_limit = def->per_user_limit;
    d.starts_at_ms = def->starts_at_ms;
    d.ends_at_ms = def->ends_at_ms;
    d.version++;
    if (delta < 0) {
        int64_t cur = atomic_load(&s->stock_left);
        do {
            if (cur + delta < 0 && !CM_PLANT(INV_REDUCE_BELOW_HELD)) {
                cm_errbuf_set(errbuf, errlen,
                        "stock=%lld is below the %lld units already accepted",
                        (long long)def->stock, (long long)(total - cur));
                rc = CM_EINVAL;
                goto out;
            }
        } while (!atomic_compare_exchange_weak(&s->stock_left, &cur, cur + delta));
        rc = mem_persist(inv, &d, errbuf, errlen);
        if (rc < 0) {
            atomic_fetch_sub(&s->stock_left, delta);
            sold_out_sync(s);
            goto out;
        }
    } else {
        rc = mem_persist(inv, &d, errbuf, errlen);
        if (rc < 0)
            goto out;
        atomic_fetch_add(&s->stock_left, delta);
    }
    atomic_store(&s->stock_total, def->stock);
    atomic_store(&s->per_user_limit, def->per_user_limit);
    atomic_store(&s->starts_at_ms, def->starts_at_ms);
    atomic_store(&s->ends_at_ms, def->ends_at_ms);
    atomic_fetch_add(&s->version, 1);
    sold_out_sync(s);
done:
    if (out)
        info_exact(inv, s, out);
out:
    pthread_mutex_unlock(&mb->admin_lock);
    return rc;
}

static uint64_t restock_key_hash(const char *key)
{
    uint64_t h = cm_hash_str(key); /* in memory only (not across a restart) */
    return h ? h : 1;
}

static int mem_restock(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                       inv_sale_info_t *out, char *errbuf, size_t errlen)
{
    mem_backend_t *mb = inv->backend;
    int rc = 0;
    pthread_mutex_lock(&mb->admin_lock);
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms) {
        cm_errbuf_set(errbuf, errlen, "no sale %s", sale_id);
        rc = CM_ENOTFOUND;
        goto out;
    }
    uint64_t kh = key ? restock_key_hash(key) : 0;
    if (kh) {
        uint32_t n = ms->nrestock_keys < INV_RESTOCK_KEYS_MEM ? ms->nrestock_keys
                                                              : INV_RESTOCK_KEYS_MEM;
        for (uint32_t i = 0; i < n; i++) {
            if (ms->restock_keys[i] == kh) {
                rc = INV_RESTOCK_REPLAYED;
                goto done;
            }
        }
    }
    int64_t total = atomic_load(&s->stock_total);
    if (add > INT64_MAX - total) {
        cm_errbuf_set(errbuf, errlen, "add=%lld would overflow the stock (%lld)", (long long)add,
                (long long)total);
        rc = CM_EINVAL;
        goto out;
    }
    inv_sale_info_t d;
    inv_sale_snapshot(s, &d);
    d.stock_total = total + add;
    d.version++;
    rc = mem_persist(inv, &d, errbuf, errlen);
    if (rc < 0)
        goto out;
    atomic_fetch_add(&s->stock_left, add);
    atomic_store(&s->stock_total, total + add);
    atomic_fetch_add(&s->version, 1);
    sold_out_sync(s);
    if (kh)
        ms->restock_keys[ms->nrestock_keys++ % INV_RESTOCK_KEYS_MEM] = kh;
done:
    if (out)
        info_exact(inv, s, out);
out:
    pthread_mutex_unlock(&mb->admin_lock);
    return rc;
}

static int mem_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out)
{
    mem_backend_t *mb = inv->backend;
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    if (!s || !sale_state(s))
        return CM_ENOTFOUND;
    pthread_mutex_lock(&mb->admin_lock);
    info_exact(inv, s, out);
    pthread_mutex_unlock(&mb->admin_lock);
    return 0;
}

static int mem_order_user(inv_t *inv, const char *sale_id, const char *order_id, char *user_out);

/* Shard lock held. Gives back the order at slot i of a sale's shard. */
static uint32_t release_at(mem_backend_t *mb, inv_sale_t *s, mem_shard_t *sh, uint32_t i)
{
    /* The recorded qty is the truth: giving back any other number would
     * create or destroy stock. */
    uint32_t held = entry_qty(&sh->slots[i]);
    shard_del(sh, i);
    atomic_fetch_sub_explicit(&mb->held, 1, memory_order_relaxed);
    atomic_fetch_add(&s->stock_left, held);
    atomic_fetch_sub(&s->accepted_units, held);
    atomic_fetch_sub(&s->accepted_orders, 1);
    return held;
}

/* Whoever holds order k: a walk over the whole sale (the table keeps no
 * order index; an operator's cancel of an order whose user is not known). */
static int release_any(mem_backend_t *mb, inv_sale_t *s, mem_sale_t *ms, const order_key_t *k,
                       uint32_t *held)
{
    for (unsigned i = 0; i < MEM_SHARDS; i++) {
        mem_shard_t *sh = &ms->shards[i];
        pthread_mutex_lock(&sh->lock);
        for (uint32_t j = 0; sh->slots && j < sh->nslots; j++) {
            if (sh->slots[j].user && entry_is(&sh->slots[j], k)) {
                *held = release_at(mb, s, sh, j);
                pthread_mutex_unlock(&sh->lock);
                return 0;
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
    return CM_ENOTFOUND;
}

/* giveback: one gateway's own orders only, never claimed by another: a plain release. */
static int mem_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                       const char *order_id, bool giveback)
{
    (void)giveback;
    mem_backend_t *mb = inv->backend;
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    order_key_t k = order_key(order_id);
    uint32_t held = 0;
    if (!*user_id) { /* whoever holds it (a cancel from the status table, which keeps no users) */
        if (release_any(mb, s, ms, &k, &held) != 0)
            return CM_ENOTFOUND;
    } else {
        uint64_t h = user_hash(user_id);
        mem_shard_t *sh = shard_of(ms, h);
        pthread_mutex_lock(&sh->lock);
        user_view_t v = user_scan(sh, h, 0, &k);
        if (v.order_at < 0) {
            pthread_mutex_unlock(&sh->lock);
            if (CM_PLANT(INV_RELEASE_TWICE))
                atomic_fetch_add(&s->stock_left, (int64_t)qty);
            return CM_ENOTFOUND;
        }
        held = release_at(mb, s, sh, (uint32_t)v.order_at);
        pthread_mutex_unlock(&sh->lock);
    }
    sold_out_sync(s);
    if (qty != held)
        cm_log_warn("inv", "release qty differs from the order", "sale=%s order=%s qty=%u held=%u",
                    sale_id, order_id, qty, held);
    return 0;
}

static int mem_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                      const char *order_id, const char *idem_key, uint32_t raw_key_fp)
{
    mem_backend_t *mb = inv->backend;
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    if (qty & MEM_FOREIGN)
        return CM_EINVAL;
    uint64_t h = user_hash(user_id);
    order_key_t k = order_key(order_id);
    mem_shard_t *sh = shard_of(ms, h);
    pthread_mutex_lock(&sh->lock);
    if (user_scan(sh, h, 0, &k).order_at >= 0) {
        pthread_mutex_unlock(&sh->lock);
        return 0; /* replayed before */
    }
    /* The order was accepted: the per-user limit (which an admin may have
     * lowered since), inventory.max_held_orders (lowered since) and the stock
     * do not apply. The spool replays orders and releases in the order they
     * happened, against the stock the sale has now: 10 sold, 5 cancelled and
     * the stock lowered to 5 holds 10 units before the 5 releases come. An
     * order left out would free its units for a second buyer (an oversell),
     * so stock_left may dip below 0 until the releases (buys see it sold out;
     * reads show 0). */
    int64_t before = atomic_fetch_sub(&s->stock_left, (int64_t)qty);
    int64_t left = before - (int64_t)qty;
    if (atomic_fetch_add_explicit(&mb->held, 1, memory_order_relaxed) >= mb->max_held)
        atomic_fetch_add_explicit(&mb->over_cap_replayed, 1, memory_order_relaxed);
    const char *key = CM_PLANT(INV_REPLAY_NO_KEY) ? "" : idem_key;
    keys_add(ms, key[0] ? raw_key_fp : 0, key);
    shard_add(mb, sh, h, &k, qty, key);
    atomic_fetch_add(&s->accepted_units, qty);
    atomic_fetch_add(&s->accepted_orders, 1);
    pthread_mutex_unlock(&sh->lock);
    if (left < 0 && before >= 0)
        cm_log_warn("inv",
                    "replayed orders hold more than the stock; the releases that follow "
                    "them in the spool give units back",
                    "sale=%s order=%s qty=%u left=%lld", sale_id, order_id, qty, (long long)left);
    if (left <= 0)
        sold_out_sync(s);
    return 0;
}

static int mem_user_units(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out)
{
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    uint64_t h = user_hash(user_id);
    mem_shard_t *sh = shard_of(ms, h);
    pthread_mutex_lock(&sh->lock);
    *out = user_scan(sh, h, 0, NULL).units;
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

/* The table keeps a keyed hash of each user id, not the id (24 bytes per
 * order): it cannot name the holder. The admin's cancel then releases by
 * order id alone (inv_release with user ""). */
static int mem_order_user(inv_t *inv, const char *sale_id, const char *order_id, char *user_out)
{
    (void)inv;
    (void)sale_id;
    (void)order_id;
    (void)user_out;
    return CM_ENOTFOUND;
}

static int mem_sale_delete(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf,
                           size_t errlen)
{
    mem_backend_t *mb = inv->backend;
    pthread_mutex_lock(&mb->admin_lock);
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    int rc = CM_ENOTFOUND;
    if (s && sale_state(s)) {
        inv_sale_info_t info;
        inv_sale_snapshot(s, &info);
        rc = inv__sale_deletable(&info, now_ms, errbuf, errlen);
        if (rc == 0) {
            /* out of the map, then written down without it; its state is
             * freed at close (a worker may still hold the view). A sale that
             * held orders keeps its id from being defined again (see
             * mem_backend_t.deleted); one that held none leaves nothing for
             * the replay to give back (a released order's release event
             * follows it in the spool). */
            inv__sale_remove(inv, sale_id);
            uint64_t held = sale_clear(mb, sale_state(s));
            if (held || atomic_load(&s->accepted_orders) > 0)
                deleted_add(mb, sale_id);
            rc = mem_persist(inv, NULL, errbuf, errlen);
        }
    }
    pthread_mutex_unlock(&mb->admin_lock);
    return rc;
}

int inv_mem_stats(inv_t *inv, inv_mem_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!inv || inv->ops != &inv__mem_ops || !inv->backend)
        return CM_ENOTFOUND;
    mem_backend_t *mb = inv->backend;
    out->held_orders = atomic_load_explicit(&mb->held, memory_order_relaxed);
    out->max_held_orders = mb->max_held;
    out->table_bytes = atomic_load_explicit(&mb->table_bytes, memory_order_relaxed);
    out->key_fingerprints = atomic_load_explicit(&mb->key_budget.used, memory_order_relaxed);
    out->refused_full = atomic_load_explicit(&mb->refused_full, memory_order_relaxed);
    out->over_cap_replayed = atomic_load_explicit(&mb->over_cap_replayed, memory_order_relaxed);
    return 0;
}

const inv_ops_t inv__mem_ops = {
    .name = "memory",
    .caps = INV_CAP_REBUILT_FROM_SPOOL,
    .open = mem_open,
    .close = mem_close,
    .worker_open = NULL, /* nothing per loop */
    .worker_close = NULL,
    .reserve = mem_reserve,
    .prefetch = mem_prefetch,
    .sale_put = mem_sale_put,
    .restock = mem_restock,
    .sale_get = mem_sale_get,
    .release = mem_release,
    .replay = mem_replay,
    .key_may_hold = mem_key_may_hold,
    .user_units = mem_user_units,
    .order_user = mem_order_user,
    .sale_delete = mem_sale_delete,
};
