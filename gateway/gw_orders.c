/*
 * The orders this gateway knows of, for GET /v1/orders/{id}: its own accepts,
 * the spool replayed at start, and (with Kafka) every order and outcome seen
 * in the topics, so any gateway of a fleet answers for any order.
 *
 * Bounded by the stock of the sales: one entry per accepted order, about
 * 100 bytes (the three ids packed after a 48-byte header; a reason only for
 * failed or cancelled orders; idempotency keys live in the inventory).
 * Striped locks: 64 shards, each a chained hash table that doubles as it fills.
 */
#include "common/cm_alloc.h"
#include "gateway/gw_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t accepted_at_ms;
    char *reason; /* NULL unless failed/cancelled with a reason */
    uint32_t qty;
    uint32_t node_id;
    uint8_t status;
    uint8_t user_off, sale_off; /* offsets into ids */
    char ids[];                 /* order_id NUL user_id NUL sale_id NUL */
} entry_t;

typedef struct shard {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t nbuckets, count;
} shard_t;

struct gw_orders {
    shard_t shards[SHARDS];
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are ours, not attacker-chosen keys */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

gw_orders_t *gw_orders_new(void)
{
    gw_orders_t *t = cm_xcalloc(1, sizeof(*t));
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&t->shards[i].lock, NULL);
        t->shards[i].nbuckets = 64;
        t->shards[i].buckets = cm_xcalloc(64, sizeof(entry_t *));
    }
    return t;
}

void gw_orders_free(gw_orders_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &t->shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            entry_t *e = s->buckets[b];
            while (e) {
                entry_t *n = e->next;
                free(e->reason);
                free(e);
                e = n;
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(t);
}

static void grow(shard_t *s)
{
    size_t nb = s->nbuckets * 2;
    entry_t **b = cm_xcalloc(nb, sizeof(entry_t *));
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry_t *e = s->buckets[i];
        while (e) {
            entry_t *n = e->next;
            size_t j = (e->hash >> 6) & (nb - 1);
            e->next = b[j];
            b[j] = e;
            e = n;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = nb;
}

static entry_t *find(shard_t *s, uint64_t h, const char *id)
{
    for (entry_t *e = s->buckets[(h >> 6) & (s->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->ids, id) == 0)
            return e;
    return NULL;
}

static entry_t *insert(shard_t *s, uint64_t h, const oq_order_t *o)
{
    if (s->count >= s->nbuckets)
        grow(s);
    size_t lo = strlen(o->order_id) + 1, lu = strlen(o->user_id) + 1, ls = strlen(o->sale_id) + 1;
    entry_t *e = cm_xmalloc(sizeof(*e) + lo + lu + ls);
    e->hash = h;
    e->accepted_at_ms = o->accepted_at_ms;
    e->reason = NULL;
    e->qty = o->qty;
    e->node_id = o->node_id;
    e->status = OQ_STATUS_QUEUED;
    e->user_off = (uint8_t)lo;
    e->sale_off = (uint8_t)(lo + lu);
    memcpy(e->ids, o->order_id, lo);
    memcpy(e->ids + lo, o->user_id, lu);
    memcpy(e->ids + lo + lu, o->sale_id, ls);
    size_t j = (h >> 6) & (s->nbuckets - 1);
    e->next = s->buckets[j];
    s->buckets[j] = e;
    s->count++;
    return e;
}

static void expand(const entry_t *e, oq_order_t *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->order_id, sizeof(out->order_id), "%s", e->ids);
    snprintf(out->user_id, sizeof(out->user_id), "%s", e->ids + e->user_off);
    snprintf(out->sale_id, sizeof(out->sale_id), "%s", e->ids + e->sale_off);
    out->qty = e->qty;
    out->accepted_at_ms = e->accepted_at_ms;
    out->node_id = e->node_id;
    out->status = (oq_status_t)e->status;
    snprintf(out->reason, sizeof(out->reason), "%s", e->reason ? e->reason : "");
}

bool gw_orders_put(gw_orders_t *t, const oq_order_t *o)
{
    uint64_t h = hash_id(o->order_id);
    shard_t *s = &t->shards[h % SHARDS];
    pthread_mutex_lock(&s->lock);
    bool inserted = false;
    if (!find(s, h, o->order_id)) {
        insert(s, h, o);
        inserted = true;
    }
    pthread_mutex_unlock(&s->lock);
    return inserted;
}

bool gw_orders_get(gw_orders_t *t, const char *order_id, oq_order_t *out)
{
    uint64_t h = hash_id(order_id);
    shard_t *s = &t->shards[h % SHARDS];
    pthread_mutex_lock(&s->lock);
    entry_t *e = find(s, h, order_id);
    if (e)
        expand(e, out);
    pthread_mutex_unlock(&s->lock);
    return e != NULL;
}

int gw_orders_set_status(gw_orders_t *t, const char *order_id, const oq_order_t *o,
                         oq_status_t st, const char *reason)
{
    uint64_t h = hash_id(order_id);
    shard_t *s = &t->shards[h % SHARDS];
    pthread_mutex_lock(&s->lock);
    entry_t *e = find(s, h, order_id);
    int prev = e ? (int)e->status : -1;
    if (!e && o)
        e = insert(s, h, o);
    if (e) {
        e->status = (uint8_t)st;
        CM_FREE(e->reason);
        if (reason && reason[0])
            e->reason = cm_xstrndup(reason, OQ_REASON_MAX);
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
