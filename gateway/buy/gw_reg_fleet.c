/*
 * A fleet's registration store (gw_reg_backend.h): a ZSET per sale in Redis
 * (gw_fair_redis.c's registration calls, the one file that knows its key),
 * checked and added in one script, so its answer is the registration's;
 * Redis' own persistence is its durability, nothing is synced here. The
 * worker loops' calls go through their pool (gw_fair_pool.c: one round
 * trip, fail-fast), the admin's through the other threads' pool.
 */
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_reg.h"
#include "gateway/buy/gw_reg_backend.h"

#include "common/cm_err.h"
#include "common/cm_time.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* A Redis failure's reason as the shell passes it on: "redis: <why>". CM_EBACKEND. */
static int redis_err(char *why, size_t whylen)
{
    char r[256];
    snprintf(r, sizeof(r), "%s", why);
    snprintf(why, whylen, "redis: %s", r);
    return CM_EBACKEND;
}

/* One registration event through the sale's machine, under reg_mu (held only
 * for the step: the round trip runs without it). */
static gw_reg_out_t reg_step(gw_fair_sale_t *fs, const gw_reg_ev_t *ev)
{
    gw_sale_out_t so;
    pthread_mutex_lock(&fs->reg_mu);
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_REG, .reg = *ev}, cm_wall_ms(), &so);
    pthread_mutex_unlock(&fs->reg_mu);
    return so.reg;
}

static int fleet_add(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *sync, char *why,
                     size_t whylen)
{
    /* The machine first: a delete seen here since the route's check records nothing.
     * One racing the script may let it run after the delete's DEL: the set it makes
     * again is cleared before a lottery is set again under the id (the tombstone's
     * clear, gw_fair_fleet.c), the only way it is read again. */
    gw_reg_out_t out =
        reg_step(fs, &(gw_reg_ev_t){.kind = GW_REG_EV_REGISTER, .store_decides = true});
    *sync = false;
    if (!(out.actions & GW_REG_DO_STORE))
        return out.answer;
    uint64_t cap = atomic_load_explicit(&fs->sale.cfg.reg_cap, memory_order_relaxed);
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, whylen);
    int added = 0;
    int rc = c ? gw_fair_redis_reg_add(c, fs->sale_id, person, (long long)cap, &added, why, whylen)
               : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    out = reg_step(fs, &(gw_reg_ev_t){.kind = GW_REG_EV_STORED,
                                      .stored = rc < 0       ? rc
                                                : added == 1 ? GW_REG_ADDED
                                                : added == 0 ? GW_REG_ALREADY
                                                             : GW_REG_FULL});
    return out.answer;
}

static int fleet_has(gw_fair_t *f, gw_fair_sale_t *fs, const char *person, bool *has, char *why,
                     size_t whylen)
{
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, whylen);
    int rc = c ? gw_fair_redis_reg_has(c, fs->sale_id, person, has, why, whylen) : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    return rc ? redis_err(why, whylen) : 0;
}

static int fleet_page(gw_fair_t *f, gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit,
                      uint64_t *total, uint64_t *end, void (*fn)(void *, const char *), void *arg,
                      char *why, size_t whylen)
{
    long long n = 0;
    uint64_t start;
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, whylen);
    int rc = c ? gw_fair_redis_reg_count(c, fs->sale_id, &n, why, whylen) : CM_EBACKEND;
    *total = n > 0 ? (uint64_t)n : 0;
    gw_reg_page(*total, cursor, limit, &start, end);
    if (rc == 0 && *end > start)
        rc = gw_fair_redis_reg_range(c, fs->sale_id, (long long)start, (long long)*end - 1, fn, arg,
                                     why, whylen);
    gw_fair__pool_put(&f->pool, c);
    return rc ? redis_err(why, whylen) : 0;
}

/* The configuration's registration part; its lottery part stays as Redis holds it. */
static int fleet_publish(gw_fair_t *f, gw_fair_sale_t *fs, const char *token, char *why,
                         size_t whylen)
{
    inv_fleet_conn_t *c = inv_fleet_connect(&f->addr, 2000, why, whylen);
    int rc = c ? gw_fair_redis_conf_part(c, fs->sale_id, true, token, why, whylen) : CM_EBACKEND;
    inv_fleet_close(c);
    return rc ? redis_err(why, whylen) : 0;
}

const gw_reg_ops_t gw_reg__fleet_ops = {
    .add = fleet_add,
    .has = fleet_has,
    .page = fleet_page,
    .publish = fleet_publish,
};
