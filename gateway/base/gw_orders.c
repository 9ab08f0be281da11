/*
 * The orders this gateway knows of, for GET /v1/orders/{id}: its own accepts,
 * the spool replayed at start, and (with Kafka) every order and outcome seen
 * in the topics, so any gateway of a fleet answers for any order.
 *
 * Memory budget, per known order: one 16-byte slot (the 64-bit order id, the
 * sale's index, qty, status, a reason code) in an open-addressing table that
 * is at most 3/4 full (Robin Hood probing, below), plus the 8-byte id in its
 * shard's arrival ring (the eviction order): 16 * 4/3 + 8 = 29.3 bytes,
 * allocated (and paged in) once at start for orders.max_known orders
 * (1,000,000 by default: 28 MiB). Nothing else is
 * kept per order: accepted_at and the node are read from the id itself, the
 * user id is not kept at all (the status answer does not show it), sale ids
 * are interned (one copy per sale), and reasons are interned too: the first
 * 254 distinct texts; an order failed or cancelled with a later new text
 * keeps its status and loses the text ("reason_kept": false in stats).
 *
 * Eviction: when a shard is full, its oldest arrival goes first if it is
 * final (settled, failed, cancelled). A queued order met at the head of the
 * ring goes to the back (it waits for its outcome); after 64 such moves in a
 * row the head goes anyway, and is counted as evicted while queued (a sign
 * that orders.max_known is too small for the orders in flight); after that the
 * shard evicts its head without second chances until one of its orders turns
 * final (a table full of queued orders would else probe 64 per new order). A status
 * query for an evicted order answers 404 unknown_order saying that it
 * expired (the id is older than the newest evicted one of its shard).
 *
 * Concurrency: 64 shards, one mutex each; the interned sale ids behind a
 * read-write lock (written once per new sale), the reasons behind a mutex
 * (taken only for failed or cancelled orders).
 */
#include "common/cm_alloc.h"
#include "common/cm_hash.h"
#include "common/cm_id.h"
#include "common/cm_rand.h"
#include "gateway/base/gw_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64
#define SECOND_CHANCES 64
#define REASONS_MAX 254     /* codes 1..254: interned texts */
#define REASON_NOT_KEPT 255 /* a text past the first 254 distinct ones */
#define SALES_MAX (1u << 20)

typedef struct slot {
    uint64_t id;   /* 0 = empty (cm_id never hands out 0) */
    uint32_t sale; /* index into the interned sale ids */
    uint16_t qty;
    uint8_t status;
    uint8_t reason; /* 0 = none, 1..254 interned, 255 not kept */
} slot_t;
_Static_assert(sizeof(slot_t) == 16, "a known order costs 16 bytes in the table");

typedef struct shard {
    pthread_mutex_t lock;
    slot_t *slots;
    size_t nslots;
    uint64_t *ring; /* arrival order; ring[head..head+count) */
    size_t cap, head, count;
    uint64_t evicted_max_id;
    uint64_t evicted, evicted_queued;
    /* The last eviction met SECOND_CHANCES queued orders in a row: until an order
     * of this shard turns final, none gets another chance (each would cost a
     * probe, a cache miss: with nothing settling, 64 per new order, which
     * doubled an accepted order's CPU once the table was full; bench/README.md). */
    bool all_queued;
} shard_t;

struct gw_orders {
    shard_t shards[SHARDS];
    uint64_t gen; /* serial number of this table, from 1 */
    uint64_t max_known;
    size_t bytes;
    void *mem; /* every shard's slots then every ring: one mapping (cm_xmap_huge) */
    size_t mem_len;
    /* interned sale ids: names[i], found through idx (open addressing of i + 1) */
    pthread_rwlock_t sales_lock;
    char (*names)[INV_SALE_ID_MAX + 1];
    uint32_t nnames, names_cap;
    uint32_t *idx;
    size_t nidx;
    /* interned reasons */
    pthread_mutex_t reasons_lock;
    char *reasons[REASONS_MAX + 1];
    uint32_t nreasons;
    _Atomic uint64_t reasons_lost, unindexed, expired_queries;
};

/* splitmix64's finaliser: ids are ours (time, node, sequence), so a fixed
 * mixer spreads them; no client can choose one */
static uint64_t mix(uint64_t x)
{
    return cm_rand_mix64(x);
}

static shard_t *shard_of(gw_orders_t *t, uint64_t id, uint64_t *h)
{
    *h = mix(id);
    return &t->shards[*h >> 58]; /* top 6 bits: SHARDS = 64 */
}

/* Home slot: the hash's low 32 bits scaled to nslots (Lemire's fastrange, no
 * division; the shard came from the top 6 bits). */
static size_t home(const shard_t *s, uint64_t h)
{
    return (size_t)(((h & 0xffffffffu) * (uint64_t)s->nslots) >> 32);
}

static size_t next_slot(const shard_t *s, size_t i)
{
    return i + 1 == s->nslots ? 0 : i + 1;
}

/* How far slot i lies from the home of the order in it. */
static size_t dist(const shard_t *s, size_t i, uint64_t id)
{
    size_t k = home(s, mix(id));
    return i >= k ? i - k : i + s->nslots - k;
}

gw_orders_t *gw_orders_new(uint64_t max_known)
{
    static _Atomic uint64_t tables;
    gw_orders_t *t = cm_xcalloc(1, sizeof(*t));
    t->gen = atomic_fetch_add(&tables, 1) + 1;
    if (max_known < SHARDS)
        max_known = SHARDS;
    t->max_known = max_known;
    size_t cap = (size_t)((max_known + SHARDS - 1) / SHARDS);
    size_t nslots = cap + cap / 3 + 1;
    /* Huge pages: a lookup or an insert probes a random slot of ~21 MiB (the
     * default 1,000,000 orders), a TLB miss at 4 KiB pages (cm_alloc.h). */
    t->mem = cm_xmap_huge(SHARDS * (nslots * sizeof(slot_t) + cap * sizeof(uint64_t)),
                          &t->mem_len);
    cm_prefault(t->mem, t->mem_len); /* resident from the start (cm_alloc.h) */
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &t->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->cap = cap;
        /* At most 3/4 full: an insert shifts the run up to the next empty slot,
         * (1 + 1/(1-load)^2)/2 slots on average: ~8 at 3/4, ~32 at 7/8, where
         * a full table (the eviction steady state) spent ~0.3 us more per
         * order in insert (`python3 bench/profile.py build acc sys`) for 3 bytes less. */
        s->nslots = nslots;
        s->slots = (slot_t *)t->mem + (size_t)i * nslots;
        s->ring = (uint64_t *)((slot_t *)t->mem + SHARDS * nslots) + (size_t)i * cap;
        t->bytes += s->nslots * sizeof(slot_t) + cap * sizeof(uint64_t);
    }
    pthread_rwlock_init(&t->sales_lock, NULL);
    t->nidx = 64;
    t->idx = cm_xcalloc(t->nidx, sizeof(uint32_t));
    pthread_mutex_init(&t->reasons_lock, NULL);
    return t;
}

void gw_orders_free(gw_orders_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&t->shards[i].lock);
    }
    cm_unmap(t->mem, t->mem_len);
    free(t->names);
    free(t->idx);
    for (uint32_t i = 1; i <= t->nreasons; i++)
        free(t->reasons[i]);
    pthread_rwlock_destroy(&t->sales_lock);
    pthread_mutex_destroy(&t->reasons_lock);
    free(t);
}

/*---- interning ----*/

/* Index slot of sale id s in t->idx: where it is, or the empty slot where it goes. */
static size_t name_slot(const gw_orders_t *t, const char *s, size_t len)
{
    size_t i = (size_t)(cm_hash_mem(s, len) & (t->nidx - 1));
    while (t->idx[i] && strcmp(t->names[t->idx[i] - 1], s) != 0)
        i = (i + 1) & (t->nidx - 1);
    return i;
}

/* The last sale each thread interned: a worker puts run after run of one
 * sale's orders, and an index never changes once handed out (names are never
 * removed), so the lock and the hash are skipped while the sale is the same. */
static _Thread_local struct {
    uint64_t gen; /* the table's serial number: a freed table's address may come back */
    uint32_t idx;
    char name[INV_SALE_ID_MAX + 1];
} last_sale;

static int64_t sale_index_slow(gw_orders_t *t, const char *sale_id);

/* The sale's index, interned on first sight. -1 past SALES_MAX. */
static int64_t sale_index(gw_orders_t *t, const char *sale_id)
{
    if (last_sale.gen == t->gen && strcmp(last_sale.name, sale_id) == 0)
        return last_sale.idx;
    int64_t v = sale_index_slow(t, sale_id);
    if (v >= 0 && strlen(sale_id) < sizeof(last_sale.name)) {
        last_sale.gen = t->gen;
        last_sale.idx = (uint32_t)v;
        strcpy(last_sale.name, sale_id);
    }
    return v;
}

static int64_t sale_index_slow(gw_orders_t *t, const char *sale_id)
{
    size_t len = strlen(sale_id);
    pthread_rwlock_rdlock(&t->sales_lock);
    uint32_t v = t->idx[name_slot(t, sale_id, len)];
    pthread_rwlock_unlock(&t->sales_lock);
    if (v)
        return v - 1;
    pthread_rwlock_wrlock(&t->sales_lock);
    size_t i = name_slot(t, sale_id, len);
    if (!t->idx[i]) {
        if (t->nnames >= SALES_MAX) {
            pthread_rwlock_unlock(&t->sales_lock);
            return -1;
        }
        if (t->nnames == t->names_cap) {
            t->names_cap = t->names_cap ? t->names_cap * 2 : 16;
            t->names = cm_xrealloc(t->names, t->names_cap * sizeof(*t->names));
        }
        snprintf(t->names[t->nnames], sizeof(t->names[0]), "%s", sale_id);
        t->idx[i] = ++t->nnames;
        if (t->nnames * 2 > t->nidx) { /* keep the index at most half full */
            free(t->idx);
            t->nidx *= 2;
            t->idx = cm_xcalloc(t->nidx, sizeof(uint32_t));
            for (uint32_t k = 0; k < t->nnames; k++)
                t->idx[name_slot(t, t->names[k], strlen(t->names[k]))] = k + 1;
        }
        i = name_slot(t, sale_id, len);
    }
    v = t->idx[i];
    pthread_rwlock_unlock(&t->sales_lock);
    return v - 1;
}

static uint8_t reason_code(gw_orders_t *t, const char *reason)
{
    if (!reason || !reason[0])
        return 0;
    pthread_mutex_lock(&t->reasons_lock);
    uint8_t code = REASON_NOT_KEPT;
    for (uint32_t i = 1; i <= t->nreasons; i++) {
        if (strcmp(t->reasons[i], reason) == 0) {
            code = (uint8_t)i;
            break;
        }
    }
    if (code == REASON_NOT_KEPT && t->nreasons < REASONS_MAX) {
        t->reasons[++t->nreasons] = cm_xstrndup(reason, OQ_REASON_MAX);
        code = (uint8_t)t->nreasons;
    }
    pthread_mutex_unlock(&t->reasons_lock);
    if (code == REASON_NOT_KEPT)
        atomic_fetch_add_explicit(&t->reasons_lost, 1, memory_order_relaxed);
    return code;
}

/*---- the table ----*/

/*
 * Robin Hood linear probing (Celis 1986): an order never sits farther from its
 * home than the one before it would allow, so a lookup stops at the first slot
 * nearer its own home than the probe is, and a miss (every put) reads a slot
 * or two even 3/4 full. Deletion shifts the run after the hole back.
 */
static slot_t *find(shard_t *s, uint64_t h, uint64_t id)
{
    size_t i = home(s, h);
    for (size_t d = 0;; d++, i = next_slot(s, i)) {
        uint64_t cur = s->slots[i].id;
        if (cur == id)
            return &s->slots[i];
        if (cur == 0 || dist(s, i, cur) < d)
            return NULL;
    }
}

/* Deletes slot i, shifting the entries after it back (no tombstones). */
static void slot_delete(shard_t *s, size_t i)
{
    for (;;) {
        size_t j = next_slot(s, i);
        if (s->slots[j].id == 0 || dist(s, j, s->slots[j].id) == 0)
            break;
        s->slots[i] = s->slots[j];
        i = j;
    }
    s->slots[i].id = 0;
}

static void ring_push(shard_t *s, uint64_t id)
{
    s->ring[(s->head + s->count) % s->cap] = id;
    s->count++;
}

static uint64_t ring_pop(shard_t *s)
{
    uint64_t id = s->ring[s->head];
    s->head = (s->head + 1) % s->cap;
    s->count--;
    return id;
}

/* Makes room for one order: evicts the oldest final one (see the top). */
static void evict_one(shard_t *s)
{
    int chances = s->all_queued ? 0 : SECOND_CHANCES;
    for (int moves = 0; s->count > 0; moves++) {
        uint64_t id = ring_pop(s);
        slot_t *e = find(s, mix(id), id);
        if (!e)
            continue; /* cannot be: ring and table hold the same ids */
        if (e->status == OQ_STATUS_QUEUED && moves < chances) {
            ring_push(s, id);
            continue;
        }
        s->all_queued = e->status == OQ_STATUS_QUEUED;
        if (e->status == OQ_STATUS_QUEUED)
            s->evicted_queued++;
        s->evicted++;
        if (id > s->evicted_max_id)
            s->evicted_max_id = id;
        slot_delete(s, (size_t)(e - s->slots));
        return;
    }
}

static slot_t *insert(shard_t *s, uint64_t h, uint64_t id, uint32_t sale, uint32_t qty)
{
    if (s->count >= s->cap)
        evict_one(s);
    slot_t e = {.id = id, .sale = sale, .qty = (uint16_t)qty, .status = OQ_STATUS_QUEUED};
    slot_t *mine = NULL; /* where the new order lands (it may be displaced on) */
    size_t i = home(s, h);
    for (size_t d = 0;; d++, i = next_slot(s, i)) {
        slot_t *x = &s->slots[i];
        if (x->id == 0) {
            *x = e;
            if (!mine)
                mine = x;
            break;
        }
        size_t xd = dist(s, i, x->id);
        if (xd < d) { /* the richer entry moves on */
            slot_t t = *x;
            *x = e;
            e = t;
            d = xd;
            if (!mine)
                mine = x;
        }
    }
    ring_push(s, id);
    return mine;
}

/* The numeric id of an order id, or 0 if it is not one of ours (cm_id). */
static uint64_t parse_id(gw_orders_t *t, const char *order_id)
{
    uint64_t id;
    if (cm_id_parse(order_id, strlen(order_id), &id) != 0 || id == 0) {
        atomic_fetch_add_explicit(&t->unindexed, 1, memory_order_relaxed);
        return 0;
    }
    return id;
}

static slot_t *insert_order(gw_orders_t *t, shard_t *s, uint64_t h, uint64_t id,
                            const oq_order_t *o)
{
    int64_t sale = sale_index(t, o->sale_id);
    if (sale < 0) {
        atomic_fetch_add_explicit(&t->unindexed, 1, memory_order_relaxed);
        return NULL;
    }
    return insert(s, h, id, (uint32_t)sale, o->qty);
}

/*
 * The slot where a new order's probe starts, pulled into the cache ahead of
 * its put: with a new order id per put every put missed the cache there
 * (the 28 MiB table of 1M orders), ~3.5% of an accepted order's CPU in perf.
 * No lock: a shard's slots and nslots never change after gw_orders_new, and a
 * prefetch reads nothing.
 */
void gw_orders_prefetch(gw_orders_t *t, uint64_t id)
{
    uint64_t h;
    const shard_t *s = shard_of(t, id, &h);
    /* Two lines: an insert's probe walks to the next empty slot, often into
     * the next line. (Not through a static helper: GCC found such a helper
     * free of side effects and dropped the call, prefetches and all.) */
    size_t i = home(s, h), j = i + 64 / sizeof(slot_t);
    __builtin_prefetch(&s->slots[i], 1);
    __builtin_prefetch(&s->slots[j < s->nslots ? j : j - s->nslots], 1);
}

bool gw_orders_put(gw_orders_t *t, const oq_order_t *o)
{
    uint64_t id = parse_id(t, o->order_id), h;
    if (!id)
        return false;
    shard_t *s = shard_of(t, id, &h);
    pthread_mutex_lock(&s->lock);
    bool inserted = !find(s, h, id) && insert_order(t, s, h, id, o) != NULL;
    pthread_mutex_unlock(&s->lock);
    return inserted;
}

gw_orders_found_t gw_orders_lookup(gw_orders_t *t, const char *order_id, oq_order_t *out)
{
    uint64_t id;
    if (cm_id_parse(order_id, strlen(order_id), &id) != 0 || id == 0)
        return GW_ORDERS_UNKNOWN;
    uint64_t h;
    shard_t *s = shard_of(t, id, &h);
    pthread_mutex_lock(&s->lock);
    slot_t *e = find(s, h, id);
    slot_t copy = e ? *e : (slot_t){0};
    bool expired = !e && id <= s->evicted_max_id;
    pthread_mutex_unlock(&s->lock);
    if (!e) {
        if (expired)
            atomic_fetch_add_explicit(&t->expired_queries, 1, memory_order_relaxed);
        return expired ? GW_ORDERS_EXPIRED : GW_ORDERS_UNKNOWN;
    }
    if (!out)
        return GW_ORDERS_FOUND;
    memset(out, 0, sizeof(*out));
    out->type = OQ_MSG_ORDER;
    cm_id_format(id, out->order_id);
    pthread_rwlock_rdlock(&t->sales_lock);
    snprintf(out->sale_id, sizeof(out->sale_id), "%s", t->names[copy.sale]);
    pthread_rwlock_unlock(&t->sales_lock);
    out->qty = copy.qty;
    out->accepted_at_ms = cm_id_time_ms(id);
    out->node_id = cm_id_node(id);
    out->status = (oq_status_t)copy.status;
    if (copy.reason && copy.reason != REASON_NOT_KEPT) {
        pthread_mutex_lock(&t->reasons_lock);
        snprintf(out->reason, sizeof(out->reason), "%s", t->reasons[copy.reason]);
        pthread_mutex_unlock(&t->reasons_lock);
    }
    return GW_ORDERS_FOUND;
}

bool gw_orders_get(gw_orders_t *t, const char *order_id, oq_order_t *out)
{
    return gw_orders_lookup(t, order_id, out) == GW_ORDERS_FOUND;
}

int gw_orders_set_status(gw_orders_t *t, const char *order_id, const oq_order_t *o,
                         oq_status_t st, const char *reason)
{
    uint64_t id = parse_id(t, order_id), h;
    if (!id)
        return -1;
    uint8_t code = oq_status_releases(st) ? reason_code(t, reason) : 0;
    shard_t *s = shard_of(t, id, &h);
    pthread_mutex_lock(&s->lock);
    slot_t *e = find(s, h, id);
    int prev = e ? (int)e->status : -1;
    if (!e && o)
        e = insert_order(t, s, h, id, o);
    if (e) {
        e->status = (uint8_t)st;
        e->reason = code;
        if (st != OQ_STATUS_QUEUED)
            s->all_queued = false; /* something to evict besides queued orders again */
    }
    pthread_mutex_unlock(&s->lock);
    return prev;
}

uint64_t gw_orders_count(gw_orders_t *t)
{
    uint64_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].lock);
        n += t->shards[i].count;
        pthread_mutex_unlock(&t->shards[i].lock);
    }
    return n;
}

void gw_orders_stats(gw_orders_t *t, gw_orders_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &t->shards[i];
        pthread_mutex_lock(&s->lock);
        out->known += s->count;
        out->evicted += s->evicted;
        out->evicted_queued += s->evicted_queued;
        pthread_mutex_unlock(&s->lock);
    }
    out->max_known = t->max_known;
    out->capacity = t->shards[0].cap * SHARDS;
    out->table_bytes = t->bytes;
    out->expired_queries = atomic_load_explicit(&t->expired_queries, memory_order_relaxed);
    out->reasons_lost = atomic_load_explicit(&t->reasons_lost, memory_order_relaxed);
    out->unindexed = atomic_load_explicit(&t->unindexed, memory_order_relaxed);
    pthread_rwlock_rdlock(&t->sales_lock);
    out->sales = t->nnames;
    pthread_rwlock_unlock(&t->sales_lock);
}
