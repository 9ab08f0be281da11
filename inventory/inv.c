/*
 * The inventory core: keeps the local sale
 * map (one inv_sale_t per sale, at a fixed address until inv_close) and
 * validates arguments once, here, so that every backend sees clean input and
 * answers the same way.
 */
#include "inventory/inv_backend.h"
#include "common/cm_hash.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_url.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Idempotency-key fingerprints ----*/

/*
 * The key of inv_idem_key_fp: set once from a secret that outlives the
 * process (inv_idem_fp_key_set) before any worker runs, else drawn at random
 * on first use (cm_hash_str's). fp_tag names the secret in a stamped
 * fingerprint, so one written under another secret reads as unknown.
 */
static cm_hash_key_t fp_key;
static uint64_t fp_tag; /* 0: no secret set, nothing is stamped */

#define FP_TAG_BITS 20 /* a stamp is 52 bits: an exact JSON number anywhere */

void inv_idem_fp_key_set(const uint8_t secret[16])
{
    memcpy(&fp_key.k0, secret, 8);
    memcpy(&fp_key.k1, secret + 8, 8);
    static const char label[] = "flashgate idem-key fingerprint tag";
    uint64_t t = cm_hash_sip24(&fp_key, label, sizeof(label) - 1) & ((1u << FP_TAG_BITS) - 1);
    fp_tag = t ? t : 1;
}

uint32_t inv_idem_key_fp(const char *key)
{
    if (!key || !key[0])
        return 0;
    uint64_t h = fp_tag ? cm_hash_sip24(&fp_key, key, strlen(key)) : cm_hash_str(key);
    uint32_t f = (uint32_t)(h >> 32);
    return f ? f : 1;
}

uint64_t inv_idem_fp_stamp(uint32_t fp)
{
    return fp && fp_tag ? fp_tag << 32 | fp : 0;
}

uint32_t inv_idem_fp_unstamp(uint64_t stamp)
{
    if (!fp_tag || stamp >> 32 != fp_tag)
        return 0;
    return (uint32_t)stamp;
}

/*---- Helpers ----*/


/* The sale map is sized at 2x, so clustering stays low. */
static uint64_t id_hash(const char *s)
{
    return cm_hash_str(s);
}

static bool sale_id_ok(const char *s)
{
    return s && inv_id_valid(s, strnlen(s, INV_SALE_ID_MAX + 1), INV_SALE_ID_MAX);
}

static bool user_id_ok(const char *s)
{
    return s && inv_id_valid(s, strnlen(s, INV_USER_ID_MAX + 1), INV_USER_ID_MAX);
}

/* "" is allowed (no key); otherwise 1..128 printable ASCII without spaces. */
static bool idem_key_ok(const char *s)
{
    size_t n = strnlen(s, INV_IDEM_KEY_MAX + 1);
    return n == 0 || inv_idem_key_valid(s, n);
}

bool inv_idem_key_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > INV_IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static bool order_id_ok(const char *s)
{
    size_t n = strnlen(s, INV_ORDER_ID_MAX + 1);
    if (n == 0 || n > INV_ORDER_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* The characters of sale and user ids: [A-Za-z0-9._-]. A table: each buy checks
 * its ids several times on the way down (python3 bench/profile.py build acc calls). */
#define R5(c) [c] = true, [(c) + 1] = true, [(c) + 2] = true, [(c) + 3] = true, [(c) + 4] = true
static const bool id_char[256] = {
    R5('0'), R5('5'),                                               /* 0-9 */
    R5('A'), R5('F'), R5('K'), R5('P'), R5('U'), ['Z'] = true,      /* A-Z */
    R5('a'), R5('f'), R5('k'), R5('p'), R5('u'), ['z'] = true,      /* a-z */
    ['.'] = true, ['_'] = true, ['-'] = true,
};
#undef R5

bool inv_id_valid(const char *s, size_t len, size_t max)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!id_char[(unsigned char)s[i]])
            return false;
    return true;
}

/*---- Close (inv_open.c opens) ----*/

void inv_close(inv_t *inv)
{
    if (!inv)
        return;
    if (inv->ops && inv->ops->close)
        inv->ops->close(inv);
    for (uint32_t i = 0; i < inv->sales_cap; i++)
        free(inv->sales[i]);
    while (inv->dead) {
        inv_sale_t *n = inv->dead->dead_next;
        free(inv->dead);
        inv->dead = n;
    }
    free(inv->sales);
    pthread_rwlock_destroy(&inv->sales_lock);
    free(inv->data_dir);
    free(inv);
}

const char *inv_backend_name(const inv_t *inv)
{
    return inv->ops->name;
}

unsigned inv_caps(const inv_t *inv)
{
    return inv->ops->caps;
}

int inv_worker_open(inv_t *inv, struct uv_loop_s *loop, inv_worker_t **out)
{
    if (!inv || !out)
        return CM_EINVAL;
    inv_worker_t *w = cm_xcalloc(1, sizeof(*w));
    w->inv = inv;
    w->loop = loop;
    if (inv->ops->worker_open) {
        int rc = inv->ops->worker_open(inv, loop, w);
        if (rc < 0) {
            free(w);
            *out = NULL;
            return rc;
        }
    }
    *out = w;
    return 0;
}

size_t inv_worker_inflight(inv_worker_t *w)
{
    return w && w->inv->ops->worker_inflight ? w->inv->ops->worker_inflight(w) : 0;
}

void inv_worker_close_orphans(inv_worker_t *w, inv_orphan_fn fn, void *ctx)
{
    if (!w)
        return;
    w->orphan = fn;
    w->orphan_ctx = ctx;
    inv_worker_close(w);
}

void inv_worker_close(inv_worker_t *w)
{
    if (!w)
        return;
    if (w->inv->ops->worker_close)
        w->inv->ops->worker_close(w);
    free(w);
}

/*---- The local sale map ----*/

/* Caller holds sales_lock (read or write). Returns the slot holding sale_id or
 * the empty slot where it would go (the map never fills: cap = 2 * max). */
static uint32_t map_slot(const inv_t *inv, const char *sale_id)
{
    uint32_t mask_free = inv->sales_cap;
    uint32_t i = (uint32_t)(id_hash(sale_id) % inv->sales_cap);
    for (;;) {
        const inv_sale_t *s = inv->sales[i];
        if (!s || strcmp(s->sale_id, sale_id) == 0)
            return i;
        if (++i == mask_free)
            i = 0;
    }
}

inv_sale_t *inv_sale_find(inv_t *inv, const char *sale_id)
{
    if (!inv || !sale_id_ok(sale_id))
        return NULL;
    pthread_rwlock_rdlock(&inv->sales_lock);
    inv_sale_t *s = inv->sales[map_slot(inv, sale_id)];
    pthread_rwlock_unlock(&inv->sales_lock);
    return s;
}

inv_sale_t *inv_sale_find_memo(inv_t *inv, inv_sale_memo_t *m, const char *sale_id)
{
    /* Read before the lookup: a removal after it makes the memo stale next time. */
    uint64_t removals = atomic_load_explicit(&inv->removals, memory_order_acquire);
    if (m->sale && sale_id && m->removals == removals && strcmp(m->id, sale_id) == 0)
        return m->sale;
    uint64_t additions = atomic_load_explicit(&inv->additions, memory_order_acquire);
    if (sale_id && m->miss_id[0] && m->additions == additions && strcmp(m->miss_id, sale_id) == 0)
        return NULL;
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    if (s) {
        m->sale = s;
        m->removals = removals;
        memcpy(m->id, s->sale_id, sizeof(m->id));
    } else if (sale_id && strlen(sale_id) < sizeof(m->miss_id)) {
        m->additions = additions; /* read before the lookup: an addition since shows */
        memcpy(m->miss_id, sale_id, strlen(sale_id) + 1);
    }
    return s;
}

inv_sale_t *inv__sale_get_or_create(inv_t *inv, const char *sale_id)
{
    if (!sale_id_ok(sale_id))
        return NULL;
    inv_sale_t *s = inv_sale_find(inv, sale_id);
    if (s)
        return s;
    pthread_rwlock_wrlock(&inv->sales_lock);
    uint32_t i = map_slot(inv, sale_id);
    s = inv->sales[i];
    if (!s && inv->nsales < inv->max_sales) {
        s = cm_xcalloc(1, sizeof(*s));
        snprintf(s->sale_id, sizeof(s->sale_id), "%s", sale_id);
        /* Nothing to sell until a backend publishes the definition. */
        atomic_init(&s->sold_out, true);
        atomic_init(&s->stock_total, 0);
        atomic_init(&s->stock_left, 0);
        atomic_init(&s->accepted_units, 0);
        atomic_init(&s->accepted_orders, 0);
        atomic_init(&s->per_user_limit, 0);
        atomic_init(&s->starts_at_ms, 0);
        atomic_init(&s->ends_at_ms, 0);
        atomic_init(&s->version, 0);
        atomic_init(&s->seq, 0);
        inv->sales[i] = s;
        inv->nsales++;
        atomic_fetch_add_explicit(&inv->additions, 1, memory_order_release);
    }
    pthread_rwlock_unlock(&inv->sales_lock);
    return s;
}

void inv__sale_remove(inv_t *inv, const char *sale_id)
{
    pthread_rwlock_wrlock(&inv->sales_lock);
    uint32_t i = map_slot(inv, sale_id);
    inv_sale_t *s = inv->sales[i];
    if (s) {
        inv->sales[i] = NULL;
        inv->nsales--;
        /* linear probing: re-seat the rest of the cluster (no tombstones) */
        for (uint32_t j = (i + 1) % inv->sales_cap; inv->sales[j]; j = (j + 1) % inv->sales_cap) {
            inv_sale_t *t = inv->sales[j];
            inv->sales[j] = NULL;
            inv->sales[map_slot(inv, t->sale_id)] = t;
        }
        atomic_store(&s->sold_out, true);
        atomic_fetch_add_explicit(&inv->removals, 1, memory_order_release);
        s->dead_next = inv->dead;
        inv->dead = s;
    }
    pthread_rwlock_unlock(&inv->sales_lock);
}

int inv__sale_deletable(const inv_sale_info_t *info, int64_t now_ms, char *errbuf, size_t errlen)
{
    if (info->ends_at_ms == 0) {
        cm_errbuf_set(errbuf, errlen, "sale %s has no end (ends_at): set one that has passed, "
                      "then delete it", info->sale_id);
        return CM_ECONFLICT;
    }
    if (now_ms < info->ends_at_ms) {
        cm_errbuf_set(errbuf, errlen, "sale %s is %s until its end; only an ended sale can be "
                      "deleted", info->sale_id,
                      info->starts_at_ms && now_ms < info->starts_at_ms ? "upcoming" : "live");
        return CM_ECONFLICT;
    }
    return 0;
}

int inv_sale_delete(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf, size_t errlen)
{
    if (!inv || !sale_id_ok(sale_id)) {
        cm_errbuf_set(errbuf, errlen, "sale_id must be 1..%d of [A-Za-z0-9._-]", INV_SALE_ID_MAX);
        return CM_EINVAL;
    }
    return inv->ops->sale_delete(inv, sale_id, now_ms, errbuf, errlen);
}

void inv_sale_foreach(inv_t *inv, void (*fn)(inv_sale_t *sale, void *ctx), void *ctx)
{
    if (!inv || !fn)
        return;
    /* Copy the pointers and call fn without the lock, so fn may call back into
     * the inventory (find, put) without deadlocking. A deleted sale's view
     * stays allocated until inv_close, so the pointers stay valid. */
    pthread_rwlock_rdlock(&inv->sales_lock);
    uint32_t n = 0;
    inv_sale_t **list = cm_xmalloc((inv->nsales ? inv->nsales : 1) * sizeof(*list));
    for (uint32_t i = 0; i < inv->sales_cap && n < inv->nsales; i++)
        if (inv->sales[i])
            list[n++] = inv->sales[i];
    pthread_rwlock_unlock(&inv->sales_lock);
    for (uint32_t i = 0; i < n; i++)
        fn(list[i], ctx);
    free(list);
}

/*
 * A seqlock (Boehm, "Can seqlocks get along with programming language memory
 * models?", 2012, without fences, which TSan does not model): the publisher
 * makes seq odd, stores the fields with release (none moves above the odd
 * seq), and makes seq even again with release; a reader loads seq with
 * acquire, the fields with acquire (the second load of seq stays below them),
 * and seq again: the same even value both times = no publish overlapped its
 * loads. On x86 these are plain moves. Reservations change stock_left and the
 * counters outside it: those may be one step apart, which the snapshot's
 * "may lag" allows.
 */
static pthread_mutex_t publish_mu = PTHREAD_MUTEX_INITIALIZER; /* one publisher at a time */

#define REL memory_order_release
#define ACQ memory_order_acquire

void inv__sale_publish(inv_sale_t *sale, const inv_sale_info_t *info)
{
    pthread_mutex_lock(&publish_mu);
    uint32_t q = atomic_load_explicit(&sale->seq, memory_order_relaxed);
    atomic_store_explicit(&sale->seq, q + 1, memory_order_relaxed);
    atomic_store_explicit(&sale->stock_total, info->stock_total, REL);
    atomic_store_explicit(&sale->stock_left, info->stock_left < 0 ? 0 : info->stock_left, REL);
    atomic_store_explicit(&sale->accepted_units, info->accepted_units, REL);
    atomic_store_explicit(&sale->accepted_orders, info->accepted_orders, REL);
    atomic_store_explicit(&sale->per_user_limit, info->per_user_limit, REL);
    atomic_store_explicit(&sale->starts_at_ms, info->starts_at_ms, REL);
    atomic_store_explicit(&sale->ends_at_ms, info->ends_at_ms, REL);
    atomic_store_explicit(&sale->version, info->version, REL);
    atomic_store_explicit(&sale->seq, q + 2, REL);
    /* after the fields: a buy that sees the flag clear reads the new terms */
    atomic_store(&sale->sold_out, info->stock_left <= 0);
    pthread_mutex_unlock(&publish_mu);
}

/* The seqlock's read side: begin returns the even sequence to check against
 * (waiting out a publish in progress), retry says whether to read again. */
static uint32_t read_begin(inv_sale_t *s)
{
    uint32_t q;
    while ((q = atomic_load_explicit(&s->seq, ACQ)) & 1)
        sched_yield(); /* a publisher is writing: a few stores, rare */
    return q;
}

static bool read_retry(inv_sale_t *s, uint32_t q)
{
    return atomic_load_explicit(&s->seq, memory_order_relaxed) != q;
}

void inv_sale_snapshot(const inv_sale_t *sale, inv_sale_info_t *out)
{
    /* Consistent against publishes (the seqlock above); reservations do not
     * take it: stock_left and accepted_units may be one step apart under
     * load, which the header's "may lag" allows. */
    inv_sale_t *s = (inv_sale_t *)sale; /* atomics are read-only here */
    memset(out, 0, sizeof(*out));
    /* a copy, not snprintf: every buy takes a snapshot (~550 instructions saved) */
    memcpy(out->sale_id, s->sale_id, strnlen(s->sale_id, sizeof(out->sale_id) - 1));
    uint32_t q;
    do {
        q = read_begin(s);
        out->stock_total = atomic_load_explicit(&s->stock_total, ACQ);
        out->stock_left = atomic_load_explicit(&s->stock_left, ACQ);
        out->accepted_units = atomic_load_explicit(&s->accepted_units, ACQ);
        out->accepted_orders = atomic_load_explicit(&s->accepted_orders, ACQ);
        out->per_user_limit = atomic_load_explicit(&s->per_user_limit, ACQ);
        out->starts_at_ms = atomic_load_explicit(&s->starts_at_ms, ACQ);
        out->ends_at_ms = atomic_load_explicit(&s->ends_at_ms, ACQ);
        out->version = atomic_load_explicit(&s->version, ACQ);
    } while (read_retry(s, q));
    if (out->stock_left < 0)
        out->stock_left = 0;
}

static inline void terms_read(inv_sale_t *s, inv_sale_terms_t *out)
{
    out->per_user_limit = atomic_load_explicit(&s->per_user_limit, ACQ);
    out->starts_at_ms = atomic_load_explicit(&s->starts_at_ms, ACQ);
    out->ends_at_ms = atomic_load_explicit(&s->ends_at_ms, ACQ);
}

__attribute__((noinline, cold)) static void terms_retry(inv_sale_t *s, inv_sale_terms_t *out)
{
    uint32_t q;
    do {
        q = read_begin(s);
        terms_read(s, out);
    } while (read_retry(s, q));
}

/* Every buy reads these: the snapshot's memset, id copy and counters were
 * ~85 of its ~110 instructions (callgrind: python3 bench/profile.py build sold calls).
 * One try in line
 * (plain loads on x86), the seqlock's waits and retries out of line. */
void inv_sale_terms(const inv_sale_t *sale, inv_sale_terms_t *out)
{
    inv_sale_t *s = (inv_sale_t *)sale; /* atomics are read-only here */
    uint32_t q = atomic_load_explicit(&s->seq, ACQ);
    terms_read(s, out);
    if ((q & 1) || read_retry(s, q))
        terms_retry(s, out); /* a publish overlapped the loads: rare */
}

bool inv_sale_sold_out(const inv_sale_t *sale)
{
    inv_sale_t *s = (inv_sale_t *)sale;
    return atomic_load_explicit(&s->sold_out, memory_order_acquire);
}

bool inv_sale_key_may_hold(inv_t *inv, const inv_sale_t *sale, uint32_t raw_key_fp)
{
    if (!inv->ops->key_may_hold)
        return true;
    return inv->ops->key_may_hold(inv, sale, raw_key_fp);
}

/*---- Thin wrappers: validate once, then call the backend ----*/

/* Resets what a reserve answers and checks the request; 0 or its error. */
static int reserve_check(const inv_worker_t *w, inv_reserve_req_t *req)
{
    if (!w || !req)
        return CM_EINVAL;
    req->stock_left = -1;
    req->user_units = 0;
    req->claimed = false;
    req->rtt_us = INV_RTT_NONE;
    if (!req->sale)
        return INV_UNKNOWN_SALE;
    if (req->qty == 0 || !user_id_ok(req->user_id) || !idem_key_ok(req->idem_key) ||
        !order_id_ok(req->order_id))
        return CM_EINVAL;
    return 0;
}

int inv_reserve(inv_worker_t *w, inv_reserve_req_t *req)
{
    int rc = reserve_check(w, req);
    return rc ? rc : w->inv->ops->reserve(w, req);
}

int inv_reserve_once(inv_worker_t *w, inv_reserve_req_t *req)
{
    if (!w || !req)
        return CM_EINVAL;
    if (!w->inv->ops->reserve_once)
        return inv_reserve(w, req);
    int rc = reserve_check(w, req);
    if (rc == 0 && !req->idem_key[0])
        rc = CM_EINVAL;
    return rc ? rc : w->inv->ops->reserve_once(w, req);
}

void inv_flush(inv_worker_t *w)
{
    if (w && w->inv->ops->flush)
        w->inv->ops->flush(w);
}

void inv_prefetch(inv_worker_t *w, inv_sale_t *sale, const char *user_id)
{
    if (w && sale && w->inv->ops->prefetch)
        w->inv->ops->prefetch(w, sale, user_id);
}

static int check_def(const inv_sale_def_t *def, char *errbuf, size_t errlen)
{
    if (!sale_id_ok(def->sale_id)) {
        cm_errbuf_set(errbuf, errlen, "sale_id must be 1..%d of [A-Za-z0-9._-]", INV_SALE_ID_MAX);
        return CM_EINVAL;
    }
    if (def->stock < 0) {
        cm_errbuf_set(errbuf, errlen, "stock=%lld must be >= 0", (long long)def->stock);
        return CM_EINVAL;
    }
    if (def->per_user_limit < 1) {
        cm_errbuf_set(errbuf, errlen, "per_user_limit must be >= 1");
        return CM_EINVAL;
    }
    if (def->starts_at_ms < 0 || def->ends_at_ms < 0) {
        cm_errbuf_set(errbuf, errlen, "starts_at/ends_at must not be before 1970");
        return CM_EINVAL;
    }
    if (def->starts_at_ms && def->ends_at_ms && def->ends_at_ms <= def->starts_at_ms) {
        cm_errbuf_set(errbuf, errlen, "ends_at must be after starts_at");
        return CM_EINVAL;
    }
    return 0;
}

int inv_sale_put(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out, char *errbuf,
                 size_t errlen)
{
    cm_errbuf_set(errbuf, errlen, "%s", "");
    if (!inv || !def) {
        cm_errbuf_set(errbuf, errlen, "no sale definition");
        return CM_EINVAL;
    }
    int rc = check_def(def, errbuf, errlen);
    if (rc < 0)
        return rc;
    return inv->ops->sale_put(inv, def, out, errbuf, errlen);
}

int inv_restock(inv_t *inv, const char *sale_id, int64_t add, inv_sale_info_t *out,
                char *errbuf, size_t errlen)
{
    return inv_restock_keyed(inv, sale_id, add, NULL, out, errbuf, errlen);
}

int inv_restock_keyed(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                      inv_sale_info_t *out, char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen, "%s", "");
    if (!inv || !sale_id_ok(sale_id)) {
        cm_errbuf_set(errbuf, errlen, "sale_id must be 1..%d of [A-Za-z0-9._-]", INV_SALE_ID_MAX);
        return CM_EINVAL;
    }
    if (add < 1) {
        cm_errbuf_set(errbuf, errlen, "add=%lld must be >= 1", (long long)add);
        return CM_EINVAL;
    }
    if (key && !key[0])
        key = NULL;
    if (key) {
        size_t n = strlen(key);
        bool ok = n >= 1 && n <= INV_IDEM_KEY_MAX;
        for (size_t i = 0; ok && i < n; i++)
            ok = (unsigned char)key[i] > 0x20 && (unsigned char)key[i] < 0x7f;
        if (!ok) {
            cm_errbuf_set(errbuf, errlen, "restock key must be 1..%d visible ASCII characters",
                    INV_IDEM_KEY_MAX);
            return CM_EINVAL;
        }
    }
    return inv->ops->restock(inv, sale_id, add, key, out, errbuf, errlen);
}

int inv_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out)
{
    if (!inv || !out || !sale_id_ok(sale_id))
        return CM_EINVAL;
    return inv->ops->sale_get(inv, sale_id, out);
}

static int release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                   const char *order_id, bool giveback)
{
    if (!inv || !sale_id_ok(sale_id) || !user_id || (*user_id && !user_id_ok(user_id)) ||
        !order_id || !order_id_ok(order_id))
        return CM_EINVAL;
    return inv->ops->release(inv, sale_id, user_id, qty, order_id, giveback);
}

int inv_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                const char *order_id)
{
    return release(inv, sale_id, user_id, qty, order_id, false);
}

int inv_giveback(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                 const char *order_id)
{
    return release(inv, sale_id, user_id, qty, order_id, true);
}

int inv_claim(inv_worker_t *w, inv_reserve_req_t *req)
{
    if (!w || !req)
        return CM_EINVAL;
    req->rtt_us = INV_RTT_NONE;
    if (!req->sale)
        return CM_ENOTFOUND;
    if (!user_id_ok(req->user_id) || !order_id_ok(req->order_id))
        return CM_EINVAL;
    if (!w->inv->ops->claim)
        return INV_RESERVED;
    return w->inv->ops->claim(w, req);
}

int inv_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
               const char *order_id, const char *idem_key)
{
    return inv_replay_keyed(inv, sale_id, user_id, qty, order_id, idem_key, 0);
}

int inv_replay_keyed(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                     const char *order_id, const char *idem_key, uint64_t key_stamp)
{
    if (!inv || !sale_id_ok(sale_id) || !user_id_ok(user_id) || qty == 0 || !order_id ||
        !order_id_ok(order_id) || (idem_key && !idem_key_ok(idem_key)))
        return CM_EINVAL;
    if (!inv->ops->replay)
        return 0; /* the backend keeps its own state */
    uint32_t raw_fp = idem_key && idem_key[0] ? inv_idem_fp_unstamp(key_stamp) : 0;
    return inv->ops->replay(inv, sale_id, user_id, qty, order_id, idem_key ? idem_key : "",
                            raw_fp);
}

int inv_order_user(inv_t *inv, const char *sale_id, const char *order_id, char *user_out)
{
    if (!inv || !user_out || !sale_id_ok(sale_id) || !order_id || !order_id_ok(order_id))
        return CM_EINVAL;
    user_out[0] = '\0';
    return inv->ops->order_user(inv, sale_id, order_id, user_out);
}

int inv_user_units(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out)
{
    if (!inv || !out || !sale_id_ok(sale_id) || !user_id_ok(user_id))
        return CM_EINVAL;
    *out = 0;
    return inv->ops->user_units(inv, sale_id, user_id, out);
}
