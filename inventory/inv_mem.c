/*
 * The memory backend: one node, all state in this process.
 *
 * The stock of a sale is the view's own `_Atomic int64_t stock_left`, taken
 * with a compare-and-swap that never lets it go below zero. Each sale keeps
 * its buyers in a table split into MEM_SHARDS shards by a hash of the user id,
 * one mutex per shard (memcached lock striping). The atomic step runs under
 * the buyer's shard lock, in this order:
 *
 *   1. idempotency key seen for this user   -> INV_DUPLICATE (original order)
 *   2. user units + qty > per_user_limit     -> INV_LIMIT_REACHED
 *   3. CAS stock_left -= qty fails            -> INV_SOLD_OUT (flag set at 0)
 *   4. record the order in the user's record -> INV_RESERVED
 *
 * Two requests of one user serialise on the shard lock, so the limit holds;
 * different users meet only at the CAS, so stock holds. A user record exists
 * only while the user holds units (release frees it), so memory is bounded by
 * the stock, not by the crowd.
 *
 * Sale definitions (not orders) are written to <data_dir>/sales.json on every
 * admin change (write tmp, fsync, rename, fsync dir) and read at open; the
 * gateway replays the accepted orders from its spool through inv_replay.
 */
#include "inventory/inv_backend.h"
#include "common/cm_hash.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEM_SHARDS 64       /* power of two; 8 workers rarely meet on one shard */
#define MEM_BUCKETS_INIT 16 /* per shard; doubles when users > buckets */
#define MEM_FILE "sales.json"
#define MEM_FILE_FORMAT 1

typedef struct mem_order {
    char order_id[INV_ORDER_ID_MAX + 1];
    uint32_t qty;
    char *idem_key; /* NULL = none */
} mem_order_t;

typedef struct mem_user {
    struct mem_user *next;
    uint64_t hash;
    uint32_t units;
    uint32_t norders, cap;
    mem_order_t *orders; /* a user holds few orders: per_user_limit bounds them */
    char user_id[INV_USER_ID_MAX + 1];
} mem_user_t;

typedef struct mem_shard {
    _Alignas(64) pthread_mutex_t lock; /* one cache line per shard: no false sharing */
    mem_user_t **buckets;
    uint32_t nbuckets, nusers;
} mem_shard_t;

typedef struct mem_sale {
    mem_shard_t shards[MEM_SHARDS];
    /* Keys of the last keyed restocks (admin_lock): a retried restock adds nothing. */
    uint64_t restock_keys[INV_RESTOCK_KEYS_MEM];
    uint32_t nrestock_keys;
} mem_sale_t;

typedef struct mem_backend {
    /* Serialises admin changes (put, restock) with each other and with the
     * file they write; the buy path never takes it. */
    pthread_mutex_t admin_lock;
} mem_backend_t;


static uint64_t user_hash(const char *s)
{
    return cm_hash_str(s); /* keyed: a crowd chooses user ids */
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

static mem_sale_t *mem_sale_new(void)
{
    mem_sale_t *ms = aligned_alloc(64, sizeof(mem_sale_t));
    if (!ms) {
        /* cm_xmalloc's policy: admission control, not NULL checks, bounds memory */
        abort();
    }
    memset(ms, 0, sizeof(*ms));
    for (int i = 0; i < MEM_SHARDS; i++) {
        pthread_mutex_init(&ms->shards[i].lock, NULL);
        ms->shards[i].nbuckets = MEM_BUCKETS_INIT;
        ms->shards[i].buckets = cm_xcalloc(MEM_BUCKETS_INIT, sizeof(mem_user_t *));
    }
    return ms;
}

static void user_free(mem_user_t *u)
{
    for (uint32_t i = 0; i < u->norders; i++)
        free(u->orders[i].idem_key);
    free(u->orders);
    free(u);
}

static void mem_sale_free(mem_sale_t *ms)
{
    if (!ms)
        return;
    for (int i = 0; i < MEM_SHARDS; i++) {
        mem_shard_t *sh = &ms->shards[i];
        for (uint32_t b = 0; b < sh->nbuckets; b++) {
            mem_user_t *u = sh->buckets[b];
            while (u) {
                mem_user_t *next = u->next;
                user_free(u);
                u = next;
            }
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(ms);
}

static mem_shard_t *shard_of(mem_sale_t *ms, uint64_t h)
{
    return &ms->shards[h & (MEM_SHARDS - 1)];
}

/* Shard lock held. */
static mem_user_t *user_find(mem_shard_t *sh, uint64_t h, const char *user_id)
{
    for (mem_user_t *u = sh->buckets[(h >> 6) & (sh->nbuckets - 1)]; u; u = u->next)
        if (u->hash == h && strcmp(u->user_id, user_id) == 0)
            return u;
    return NULL;
}

/* Shard lock held. */
static mem_user_t *user_add(mem_shard_t *sh, uint64_t h, const char *user_id)
{
    if (sh->nusers >= sh->nbuckets) {
        uint32_t nb = sh->nbuckets * 2;
        mem_user_t **b = cm_xcalloc(nb, sizeof(*b));
        for (uint32_t i = 0; i < sh->nbuckets; i++) {
            mem_user_t *u = sh->buckets[i];
            while (u) {
                mem_user_t *next = u->next;
                uint32_t j = (uint32_t)((u->hash >> 6) & (nb - 1));
                u->next = b[j];
                b[j] = u;
                u = next;
            }
        }
        free(sh->buckets);
        sh->buckets = b;
        sh->nbuckets = nb;
    }
    mem_user_t *u = cm_xcalloc(1, sizeof(*u));
    u->hash = h;
    snprintf(u->user_id, sizeof(u->user_id), "%s", user_id);
    uint32_t j = (uint32_t)((h >> 6) & (sh->nbuckets - 1));
    u->next = sh->buckets[j];
    sh->buckets[j] = u;
    sh->nusers++;
    return u;
}

/* Shard lock held. */
static void user_remove(mem_shard_t *sh, mem_user_t *u)
{
    mem_user_t **pp = &sh->buckets[(u->hash >> 6) & (sh->nbuckets - 1)];
    while (*pp != u)
        pp = &(*pp)->next;
    *pp = u->next;
    sh->nusers--;
    user_free(u);
}

/* Shard lock held. */
static void user_add_order(mem_user_t *u, const char *order_id, uint32_t qty, const char *idem)
{
    if (u->norders == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 2;
        u->orders = cm_xrealloc(u->orders, u->cap * sizeof(*u->orders));
    }
    mem_order_t *o = &u->orders[u->norders++];
    snprintf(o->order_id, sizeof(o->order_id), "%s", order_id);
    o->qty = qty;
    o->idem_key = idem && *idem ? cm_xstrdup(idem) : NULL;
    u->units += qty;
}

static mem_order_t *user_order_by_id(mem_user_t *u, const char *order_id)
{
    for (uint32_t i = 0; i < u->norders; i++)
        if (strcmp(u->orders[i].order_id, order_id) == 0)
            return &u->orders[i];
    return NULL;
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
        atomic_store(&sale->sold_out, so);
        if ((atomic_load(&sale->stock_left) <= 0) == so)
            return;
    }
}

/* Takes qty units unless fewer are left. Returns true and *left_after, or
 * false and *left_after = the units seen. */
static bool stock_take(inv_sale_t *sale, uint32_t qty, int64_t *left_after)
{
    int64_t cur = atomic_load(&sale->stock_left);
    do {
        if (cur < (int64_t)qty) {
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

/*
 * Writes every defined sale to <data_dir>/sales.json, with `pending` (a sale
 * about to be created or changed) in place of its current definition.
 * Caller holds admin_lock. Atomic: readers see the old or the new file.
 */
static int mem_persist(inv_t *inv, const inv_sale_info_t *pending, char *errbuf, size_t errlen)
{
    if (!inv->data_dir)
        return 0;
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

static void publish_new(inv_sale_t *s, const inv_sale_info_t *d)
{
    inv_sale_info_t info = *d;
    info.stock_left = d->stock_total;
    info.accepted_units = 0;
    info.accepted_orders = 0;
    inv__sale_publish(s, &info);
    mem_sale_t *ms = mem_sale_new();
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
        publish_new(s, &d);
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
    for (uint32_t i = 0; i < inv->sales_cap; i++) {
        inv_sale_t *s = inv->sales[i];
        if (s) {
            mem_sale_free(s->backend);
            s->backend = NULL;
        }
    }
    for (inv_sale_t *s = inv->dead; s; s = s->dead_next) {
        mem_sale_free(s->backend);
        s->backend = NULL;
    }
    mem_backend_t *mb = inv->backend;
    if (mb) {
        pthread_mutex_destroy(&mb->admin_lock);
        free(mb);
        inv->backend = NULL;
    }
}

static int mem_open(inv_t *inv, const char *url, char *errbuf, size_t errlen)
{
    (void)url;
    mem_backend_t *mb = cm_xcalloc(1, sizeof(*mb));
    pthread_mutex_init(&mb->admin_lock, NULL);
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

static int mem_reserve(inv_worker_t *w, inv_reserve_req_t *req)
{
    (void)w;
    inv_sale_t *sale = req->sale;
    mem_sale_t *ms = sale_state(sale);
    if (!ms)
        return INV_UNKNOWN_SALE;
    /* Sold out and no key to look up: answer from the flag, no lock. (With a
     * key, a retry of a request that was accepted must get its order back.) */
    if (req->idem_key[0] == '\0' && atomic_load_explicit(&sale->sold_out, memory_order_acquire)) {
        req->stock_left = 0;
        return INV_SOLD_OUT;
    }

    uint64_t h = user_hash(req->user_id);
    mem_shard_t *sh = shard_of(ms, h);
    int outcome;
    int64_t left;
    pthread_mutex_lock(&sh->lock);
    mem_user_t *u = user_find(sh, h, req->user_id);
    uint32_t units = u ? u->units : 0;
    if (u && req->idem_key[0]) {
        for (uint32_t i = 0; i < u->norders; i++) {
            const mem_order_t *o = &u->orders[i];
            if (o->idem_key && strcmp(o->idem_key, req->idem_key) == 0) {
                snprintf(req->order_id, sizeof(req->order_id), "%s", o->order_id);
                req->qty = o->qty;
                req->user_units = units;
                pthread_mutex_unlock(&sh->lock);
                req->stock_left = atomic_load(&sale->stock_left);
                return INV_DUPLICATE;
            }
        }
    }
    if ((uint64_t)units + req->qty > atomic_load(&sale->per_user_limit)) {
        outcome = INV_LIMIT_REACHED;
        left = atomic_load(&sale->stock_left);
    } else if (!stock_take(sale, req->qty, &left)) {
        outcome = INV_SOLD_OUT;
    } else {
        if (!u)
            u = user_add(sh, h, req->user_id);
        user_add_order(u, req->order_id, req->qty, req->idem_key);
        units = u->units;
        atomic_fetch_add(&sale->accepted_units, req->qty);
        atomic_fetch_add(&sale->accepted_orders, 1);
        outcome = INV_RESERVED;
    }
    pthread_mutex_unlock(&sh->lock);
    if (outcome != INV_LIMIT_REACHED && left == 0)
        sold_out_sync(sale);
    req->stock_left = left;
    req->user_units = units;
    return outcome;
}

static int info_exact(inv_t *inv, inv_sale_t *s, inv_sale_info_t *out)
{
    (void)inv;
    /* Caller holds admin_lock, so stock_total cannot move; the units held are
     * total - left at the instant stock_left is read. */
    inv_sale_snapshot(s, out);
    out->stock_left = atomic_load(&s->stock_left);
    out->accepted_units = out->stock_total - out->stock_left;
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
        publish_new(s, &d);
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
            if (cur + delta < 0) {
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

static int mem_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                       const char *order_id)
{
    char holder[INV_USER_ID_MAX + 1];
    if (!*user_id) { /* whoever holds it (a cancel from the status table, which keeps no users) */
        int rc = mem_order_user(inv, sale_id, order_id, holder);
        if (rc != 0)
            return rc;
        user_id = holder;
    }
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    uint64_t h = user_hash(user_id);
    mem_shard_t *sh = shard_of(ms, h);
    pthread_mutex_lock(&sh->lock);
    mem_user_t *u = user_find(sh, h, user_id);
    mem_order_t *o = u ? user_order_by_id(u, order_id) : NULL;
    if (!o) {
        pthread_mutex_unlock(&sh->lock);
        return CM_ENOTFOUND;
    }
    /* The recorded qty is the truth: giving back any other number would
     * create or destroy stock. */
    uint32_t held = o->qty;
    free(o->idem_key);
    *o = u->orders[--u->norders];
    u->units -= held;
    if (u->norders == 0)
        user_remove(sh, u);
    atomic_fetch_add(&s->stock_left, held);
    atomic_fetch_sub(&s->accepted_units, held);
    atomic_fetch_sub(&s->accepted_orders, 1);
    pthread_mutex_unlock(&sh->lock);
    sold_out_sync(s);
    if (qty != held)
        cm_log_warn("inv", "release qty differs from the order", "sale=%s order=%s qty=%u held=%u",
                    sale_id, order_id, qty, held);
    return 0;
}

static int mem_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                      const char *order_id, const char *idem_key)
{
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    uint64_t h = user_hash(user_id);
    mem_shard_t *sh = shard_of(ms, h);
    int rc = 0;
    int64_t left = -1;
    pthread_mutex_lock(&sh->lock);
    mem_user_t *u = user_find(sh, h, user_id);
    if (u && user_order_by_id(u, order_id)) {
        pthread_mutex_unlock(&sh->lock);
        return 0; /* replayed before */
    }
    /* The order was accepted: the per-user limit (which an admin may have
     * lowered since) does not apply. The stock does: it was never below the
     * accepted units, so a shortfall means the spool and sales.json disagree. */
    if (!stock_take(s, qty, &left)) {
        rc = CM_ECONFLICT;
    } else {
        if (!u)
            u = user_add(sh, h, user_id);
        user_add_order(u, order_id, qty, idem_key);
        atomic_fetch_add(&s->accepted_units, qty);
        atomic_fetch_add(&s->accepted_orders, 1);
    }
    pthread_mutex_unlock(&sh->lock);
    if (rc < 0)
        cm_log_error("inv", "replayed order exceeds the stock", "sale=%s order=%s qty=%u left=%lld",
                     sale_id, order_id, qty, (long long)left);
    else if (left == 0)
        sold_out_sync(s);
    return rc;
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
    mem_user_t *u = user_find(sh, h, user_id);
    *out = u ? u->units : 0;
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

static int mem_order_user(inv_t *inv, const char *sale_id, const char *order_id, char *user_out)
{
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    mem_sale_t *ms = s ? sale_state(s) : NULL;
    if (!ms)
        return CM_ENOTFOUND;
    int rc = CM_ENOTFOUND;
    for (unsigned i = 0; i < MEM_SHARDS && rc != 0; i++) {
        mem_shard_t *sh = &ms->shards[i];
        pthread_mutex_lock(&sh->lock);
        for (uint32_t b = 0; b < sh->nbuckets && rc != 0; b++) {
            for (mem_user_t *u = sh->buckets[b]; u && rc != 0; u = u->next) {
                if (user_order_by_id(u, order_id)) {
                    snprintf(user_out, INV_USER_ID_MAX + 1, "%s", u->user_id);
                    rc = 0;
                }
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
    return rc;
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
             * freed at close (a worker may still hold the view) */
            inv__sale_remove(inv, sale_id);
            rc = mem_persist(inv, NULL, errbuf, errlen);
        }
    }
    pthread_mutex_unlock(&mb->admin_lock);
    return rc;
}

const inv_ops_t inv__mem_ops = {
    .name = "memory",
    .caps = INV_CAP_REBUILT_FROM_SPOOL,
    .open = mem_open,
    .close = mem_close,
    .worker_open = NULL, /* nothing per loop */
    .worker_close = NULL,
    .reserve = mem_reserve,
    .sale_put = mem_sale_put,
    .restock = mem_restock,
    .sale_get = mem_sale_get,
    .release = mem_release,
    .replay = mem_replay,
    .user_units = mem_user_units,
    .order_user = mem_order_user,
    .sale_delete = mem_sale_delete,
};
