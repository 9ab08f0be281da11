/*
 * The Redis backend's URL, open and close, and its admin operations (blocking,
 * on one connection under admin_mu), with its table of ops (inv__redis_ops).
 */
#include "inventory/inv_redis_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- URL ----*/

static int parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return CM_EINVAL;
    *out = (uint32_t)x;
    return 0;
}

static int parse_url(rb_t *rb, const char *url, char *errbuf, size_t errlen)
{
    cm_redis_url_t u;
    char why[200];
    if (cm_redis_url_parse(url, &u, why, sizeof(why)) != 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: %s", why);
        return CM_EINVAL;
    }
    rb->addr = u;
    char *query = u.query[0] ? u.query : NULL;

    rb->pool = INV_REDIS_POOL_DEFAULT;
    rb->batch = INV_REDIS_BATCH_DEFAULT;
    rb->timeout_ms = INV_REDIS_TIMEOUT_MS_DEFAULT;
    rb->admin_timeout_ms = 2000;
    rb->br_failures = 5;
    rb->br_cooldown_ms = 250;
    static const struct {
        const char *name;
        size_t off;
        uint32_t min, max;
    } params[] = {
        {"pool", offsetof(rb_t, pool), 1, 64},
        {"batch", offsetof(rb_t, batch), 1, INV_REDIS_BATCH_MAX},
        {"timeout_ms", offsetof(rb_t, timeout_ms), 1, 60000},
        {"admin_timeout_ms", offsetof(rb_t, admin_timeout_ms), 1, 60000},
        {"breaker_failures", offsetof(rb_t, br_failures), 1, 1000},
        {"breaker_cooldown_ms", offsetof(rb_t, br_cooldown_ms), 1, 60000},
        {"wait_replicas", offsetof(rb_t, wait_replicas), 0, 16},
    };
    char *save = NULL;
    for (char *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            cm_errbuf_set(errbuf, errlen, "inventory: redis url: '%s' wants key=value", kv);
            return CM_EINVAL;
        }
        *eq = '\0';
        size_t i;
        for (i = 0; i < sizeof(params) / sizeof(params[0]); i++)
            if (strcmp(kv, params[i].name) == 0)
                break;
        if (i == sizeof(params) / sizeof(params[0])) {
            cm_errbuf_set(errbuf, errlen,
                    "inventory: redis url: unknown parameter '%s' (pool, batch, timeout_ms, "
                    "admin_timeout_ms, breaker_failures, breaker_cooldown_ms, wait_replicas)",
                    kv);
            return CM_EINVAL;
        }
        uint32_t *dst = (uint32_t *)((char *)rb + params[i].off);
        if (parse_u32(eq + 1, params[i].min, params[i].max, dst) < 0) {
            cm_errbuf_set(errbuf, errlen, "inventory: redis url: %s=%s must be between %u and %u",
                          kv, eq + 1, params[i].min, params[i].max);
            return CM_EINVAL;
        }
    }
    /* the configuration's values win over the URL's */
    if (rb->inv->redis_pool)
        rb->pool = rb->inv->redis_pool;
    if (rb->inv->redis_timeout_ms)
        rb->timeout_ms = rb->inv->redis_timeout_ms;
    if (rb->inv->redis_batch)
        rb->batch = rb->inv->redis_batch;
    if (cm_redis_url_default_password(&rb->addr, rb->inv->redis_password) != 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: redis password too long");
        return CM_EINVAL;
    }
    return 0;
}

/*---- Open / close ----*/

static void rb_free(rb_t *rb)
{
    inv_cluster_sync_free(rb->admin);
    inv_cluster_sync_free(rb->query);
    inv_cluster_close(rb->cl);
    pthread_mutex_destroy(&rb->admin_mu);
    free(rb);
}

static int redis_open(inv_t *inv, const char *url, char *errbuf, size_t errlen)
{
    rb_t *rb = cm_xcalloc(1, sizeof(*rb));
    rb->inv = inv;
    rb->tr = inv_cluster_transport();
    pthread_mutex_init(&rb->admin_mu, NULL);
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++) {
        atomic_init(&rb->br[i].state, BR_CLOSED);
        atomic_init(&rb->br[i].fails, 0);
        atomic_init(&rb->br[i].until_ms, 0);
    }
    atomic_init(&rb->br_opens, 0);
    int rc = parse_url(rb, url, errbuf, errlen);
    if (rc < 0) {
        rb_free(rb);
        return rc;
    }
    rb->cl = inv_cluster_open(&rb->addr, rb->admin_timeout_ms, errbuf, errlen);
    if (!rb->cl) {
        rb_free(rb);
        return CM_EBACKEND;
    }
    rb->admin = inv_cluster_sync_new(rb->cl, rb->admin_timeout_ms);
#ifdef FLASHGATE_PLANTS
    inv__redis_plant_scripts();
#endif
    /* On a cluster the scripts land on one master here; the others load them
     * on their first NOSCRIPT (every caller falls back to EVAL). */
    for (int i = 0; i < SC_N; i++) {
        int err = 0;
        redisReply *r = inv_cluster_sync_cmd(rb->admin, NULL, &err, "SCRIPT LOAD %s",
                                             inv__redis_script_text[i]);
        if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
            cm_errbuf_set(errbuf, errlen, "redis: SCRIPT LOAD: %s",
                    r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                      : inv_cluster_sync_errstr(rb->admin));
            if (r)
                freeReplyObject(r);
            rb_free(rb);
            return CM_EBACKEND;
        }
        memcpy(rb->sha[i], r->str, 40);
        freeReplyObject(r);
    }
    /* The local views of every sale the fleet knows, before the first request. */
    int merr = 0;
    redisReply *m = inv_cluster_sync_cmd(rb->admin, INV_REDIS_INDEX, &merr, "SMEMBERS %s",
                                         INV_REDIS_INDEX);
    if (m && m->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < m->elements; i++) {
            const redisReply *e = m->element[i];
            if (e->type != REDIS_REPLY_STRING || !inv_id_valid(e->str, e->len, INV_SALE_ID_MAX))
                continue;
            inv_sale_info_t info;
            if (inv__redis_admin_state(rb, e->str, &info) == 0)
                inv__redis_publish_local(rb, &info);
        }
    }
    if (m)
        freeReplyObject(m);
    inv->backend = rb;
    rc = inv__redis_sync_start(rb);
    if (rc < 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: cannot start the redis sync thread");
        inv->backend = NULL;
        rb_free(rb);
        return rc;
    }
    cm_log_info("inv", "redis inventory open",
                "host=%s port=%d db=%d cluster=%s pool=%u timeout_ms=%u breaker_failures=%u "
                "breaker_cooldown_ms=%u wait_replicas=%u",
                rb->addr.host, rb->addr.port, rb->addr.db, rb->addr.cluster ? "yes" : "no",
                rb->pool, rb->timeout_ms, rb->br_failures, rb->br_cooldown_ms, rb->wait_replicas);
    return 0;
}

static void redis_close(inv_t *inv)
{
    rb_t *rb = inv->backend;
    if (!rb)
        return;
    inv__redis_sync_stop(rb);
    rb_free(rb);
    inv->backend = NULL;
}

/*---- Admin operations (blocking, admin_mu) ----*/

static int redis_sale_put(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out,
                          char *errbuf, size_t errlen)
{
    rb_t *rb = inv->backend;
    if (!inv__sale_get_or_create(inv, def->sale_id)) {
        cm_errbuf_set(errbuf, errlen, "too many sales (max_sales=%u)", inv->max_sales);
        return CM_EINVAL;
    }
    char stock[24], limit[12], starts[24], ends[24];
    snprintf(stock, sizeof(stock), "%lld", (long long)def->stock);
    snprintf(limit, sizeof(limit), "%u", def->per_user_limit);
    snprintf(starts, sizeof(starts), "%lld", (long long)def->starts_at_ms);
    snprintf(ends, sizeof(ends), "%lld", (long long)def->ends_at_ms);
    const char *args[5] = {def->sale_id, stock, limit, starts, ends};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    /* The index lies outside the sale's slot, so it is not in the script. It is
     * written first: a gateway that subscribes after the script's PUBLISH then
     * still finds the sale when it re-reads the index (a listed sale without
     * meta is skipped). */
    redisReply *a = inv__redis_admin_cmd(rb, INV_REDIS_INDEX, &err, "SADD %s %s", INV_REDIS_INDEX,
                                         def->sale_id);
    if (!a) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    freeReplyObject(a);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_PUT, def->sale_id, 3, 5, args, &err);
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    inv_sale_info_t info;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        cm_errbuf_set(errbuf, errlen, "stock=%lld is below the %lld units already accepted",
                (long long)def->stock, (long long)r->element[1]->integer);
        rc = CM_EINVAL;
    } else {
        rc = inv__redis_parse_state(r, def->sale_id, &info);
        if (rc < 0)
            cm_errbuf_set(errbuf, errlen, "redis: bad reply to sale put");
    }
    freeReplyObject(r);
    if (rc < 0)
        goto out;
    inv__redis_publish_local(rb, &info);
    if (out)
        *out = info;
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out);

static int redis_restock(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                         inv_sale_info_t *out, char *errbuf, size_t errlen)
{
    rb_t *rb = inv->backend;
    char addbuf[24];
    snprintf(addbuf, sizeof(addbuf), "%lld", (long long)add);
    const char *args[3] = {sale_id, addbuf, key ? key : ""};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_RESTOCK, sale_id, 4, 3, args, &err);
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    inv_sale_info_t info;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == CM_EEXISTS) {
        rc = INV_RESTOCK_REPLAYED; /* this key was used before: nothing added */
    } else if (r->type == REDIS_REPLY_INTEGER) {
        rc = r->integer == CM_ENOTFOUND ? CM_ENOTFOUND : CM_EINVAL;
        if (rc == CM_ENOTFOUND)
            cm_errbuf_set(errbuf, errlen, "no sale %s", sale_id);
        else
            cm_errbuf_set(errbuf, errlen, "add=%lld would overflow the stock", (long long)add);
    } else {
        rc = inv__redis_parse_state(r, sale_id, &info);
        if (rc < 0)
            cm_errbuf_set(errbuf, errlen, "redis: bad reply to restock");
    }
    freeReplyObject(r);
    if (rc == 0) {
        inv__redis_publish_local(rb, &info);
        if (out)
            *out = info;
    }
out:
    pthread_mutex_unlock(&rb->admin_mu);
    if (rc == INV_RESTOCK_REPLAYED && out) {
        int grc = redis_sale_get(inv, sale_id, out);
        if (grc < 0)
            rc = grc;
    }
    return rc;
}

static int redis_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out)
{
    rb_t *rb = inv->backend;
    pthread_mutex_lock(&rb->admin_mu);
    int rc = inv__redis_admin_state(rb, sale_id, out);
    pthread_mutex_unlock(&rb->admin_mu);
    if (rc == 0) {
        inv_sale_t *s = inv_sale_find(inv, sale_id);
        if (s)
            inv__sale_publish(s, out);
    }
    return rc;
}

static int redis_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                         const char *order_id, bool giveback)
{
    (void)qty; /* the recorded qty is the truth */
    rb_t *rb = inv->backend;
    const char *args[4] = {order_id, user_id, sale_id, giveback ? "1" : "0"};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_RELEASE, sale_id, 4, 4, args, &err);
    if (!r) {
        rc = err;
        goto out;
    }
    rc = r->type != REDIS_REPLY_INTEGER ? CM_EBACKEND
         : r->integer == CM_ECONFLICT   ? CM_ECONFLICT
         : r->integer < 0               ? CM_ENOTFOUND
                                        : 0;
    freeReplyObject(r);
    inv_sale_info_t info;
    inv_sale_t *s;
    if (rc == 0 && (s = inv_sale_find(inv, sale_id)) &&
        inv__redis_admin_state(rb, sale_id, &info) == 0)
        inv__sale_publish(s, &info);
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                        const char *order_id, const char *idem_key, uint32_t raw_key_fp)
{
    (void)inv, (void)sale_id, (void)user_id, (void)qty, (void)order_id, (void)idem_key;
    (void)raw_key_fp;
    return 0; /* Redis is the truth */
}

static int redis_user_units(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out)
{
    rb_t *rb = inv->backend;
    char meta[KEY_MAX], users[KEY_MAX];
    inv__redis_sale_key(meta, sale_id, "meta");
    inv__redis_sale_key(users, sale_id, "users");
    int err = 0, rc = 0;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *e = inv__redis_admin_cmd(rb, meta, &err, "EXISTS %s", meta);
    if (!e) {
        rc = err;
        goto out;
    }
    bool exists = e->type == REDIS_REPLY_INTEGER && e->integer == 1;
    freeReplyObject(e);
    if (!exists) {
        rc = CM_ENOTFOUND;
        goto out;
    }
    redisReply *r = inv__redis_admin_cmd(rb, users, &err, "HGET %s %s", users, user_id);
    if (!r) {
        rc = err;
        goto out;
    }
    int64_t v = 0;
    if (r->type != REDIS_REPLY_NIL && !inv__redis_reply_i64(r, &v))
        rc = CM_EBACKEND;
    *out = v > 0 ? (uint32_t)v : 0;
    freeReplyObject(r);
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_order_user(inv_t *inv, const char *sale_id, const char *order_id,
                            char *user_out)
{
    rb_t *rb = inv->backend;
    char orders[KEY_MAX];
    inv__redis_sale_key(orders, sale_id, "orders");
    int err = 0, rc = CM_ENOTFOUND;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_admin_cmd(rb, orders, &err, "HGET %s %s", orders, order_id);
    if (!r) {
        rc = err;
    } else {
        /* the record is "user qty idem" (see the reserve script) */
        if (r->type == REDIS_REPLY_STRING) {
            size_t n = strcspn(r->str, " ");
            if (inv_id_valid(r->str, n, INV_USER_ID_MAX)) {
                memcpy(user_out, r->str, n);
                user_out[n] = '\0';
                rc = 0;
            } else {
                rc = CM_EBACKEND;
            }
        } else if (r->type != REDIS_REPLY_NIL) {
            rc = CM_EBACKEND;
        }
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_sale_delete(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf,
                             size_t errlen)
{
    rb_t *rb = inv->backend;
    pthread_mutex_lock(&rb->admin_mu);
    inv_sale_info_t info;
    int rc = inv__redis_admin_state(rb, sale_id, &info);
    if (rc == 0)
        rc = inv__sale_deletable(&info, now_ms, errbuf, errlen);
    if (rc == 0) {
        /* all four keys of the sale (one slot), then the index, then the news */
        char k[4][KEY_MAX];
        inv__redis_sale_key(k[0], sale_id, "meta");
        inv__redis_sale_key(k[1], sale_id, "users");
        inv__redis_sale_key(k[2], sale_id, "orders");
        inv__redis_sale_key(k[3], sale_id, "idem");
        int err = 0;
        redisReply *r =
            inv__redis_admin_cmd(rb, k[0], &err, "DEL %s %s %s %s", k[0], k[1], k[2], k[3]);
        if (!r) {
            rc = err;
        } else {
            freeReplyObject(r);
            if ((r = inv__redis_admin_cmd(rb, INV_REDIS_INDEX, &err, "SREM %s %s", INV_REDIS_INDEX,
                                          sale_id)))
                freeReplyObject(r);
            if ((r = inv__redis_admin_cmd(rb, NULL, &err, "PUBLISH %s %s", INV_REDIS_CHANNEL,
                                          sale_id)))
                freeReplyObject(r);
            inv__sale_remove(inv, sale_id);
        }
    }
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

const inv_ops_t inv__redis_ops = {
    .name = "redis",
    .caps = INV_CAP_SHARED,
    .open = redis_open,
    .close = redis_close,
    .worker_open = inv__redis_worker_open,
    .worker_close = inv__redis_worker_close,
    .worker_inflight = inv__redis_worker_inflight,
    .flush = inv__redis_flush,
    .reserve = inv__redis_reserve,
    .reserve_once = inv__redis_reserve_once,
    .sale_put = redis_sale_put,
    .restock = redis_restock,
    .sale_get = redis_sale_get,
    .release = redis_release,
    .replay = redis_replay,
    .claim = inv__redis_claim,
    /* No key_may_hold: the order of a keyed retry may have been taken by
     * another gateway of the fleet, so no local set can rule a key out, and
     * asking Redis (a set per sale, SISMEMBER) costs a round trip and the
     * shared Redis's CPU, which every gateway's buys queue behind, to save
     * one ES256 check (~77 us of this gateway's CPU: `openssl speed
     * ecdsap256`). A keyed buy on a sold-out sale is verified and then
     * answered by the reserve script: docs/identity.md. */
    .user_units = redis_user_units,
    .order_user = redis_order_user,
    .sale_delete = redis_sale_delete,
};

int inv_redis_breaker(struct inv *inv, uint64_t *opens)
{
    if (!inv || inv->ops != &inv__redis_ops)
        return -1;
    rb_t *rb = inv->backend;
    *opens = atomic_load_explicit(&rb->br_opens, memory_order_relaxed);
    /* the most open of the masters' breakers: open, else half-open, else closed */
    int worst = BR_CLOSED;
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++) {
        int st = atomic_load_explicit(&rb->br[i].state, memory_order_relaxed);
        if (st == BR_OPEN)
            return BR_OPEN;
        if (st == BR_HALF_OPEN)
            worst = BR_HALF_OPEN;
    }
    return worst;
}
