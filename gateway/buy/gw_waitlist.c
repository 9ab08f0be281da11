/*
 * Leftovers by lot: the losers of a sale's draw wait, in draw order, for the
 * units freed after it (cancelled or failed orders, a restock), and the
 * lottery's thread admits them as the draw admits a winner (see gw_fair.h).
 * The draw's order is uniformly random, so going on down it is a second
 * random draw among the losers; a first-come buyer would instead win by being
 * fastest at the moment a unit comes back. Who is next, and when a walk
 * stops, is gw_waitlist_core.c's; this file performs the promotions.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_waitlist_core.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A walk that failed (the inventory, the log, the spool) is tried again after this. */
#define WL_RETRY_MS 1000

bool gw_fair_waitlist_open(gw_fair_sale_t *fs)
{
    return fs && atomic_load_explicit(&fs->sale.leftovers, memory_order_relaxed);
}

void gw_fair__wl_told(gw_fair_sale_t *fs)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale,
                 &(gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = fs->waitlisted > 0}},
                 cm_wall_ms(), &so);
}

/*---- the places: a Fenwick tree over draw positions ----*/

void gw_fair__wl_init(gw_fair_sale_t *fs)
{
    free(fs->wl_bit);
    fs->wl_bit = cm_xcalloc(fs->ndraw + 1, sizeof(uint32_t));
    fs->waitlisted = 0;
    gw_wl_core_init(&fs->sale.wl, 0);
}

static void bit_add(gw_fair_sale_t *fs, uint32_t pos, int d)
{
    for (size_t i = pos; i && i <= fs->ndraw; i += i & (~i + 1))
        fs->wl_bit[i] += (uint32_t)d;
}

void gw_fair__wl_add(gw_fair_sale_t *fs, entry_t *e)
{
    e->state = GW_ENTRY_WAITLISTED;
    fs->waitlisted++;
    bit_add(fs, e->pos, 1);
}

void gw_fair__wl_remove(gw_fair_sale_t *fs, entry_t *e)
{
    if (e->state != GW_ENTRY_WAITLISTED)
        return;
    fs->waitlisted--;
    bit_add(fs, e->pos, -1);
}

uint32_t gw_fair__wl_place(const gw_fair_sale_t *fs, const entry_t *e)
{
    uint32_t n = 0;
    for (size_t i = e->pos; i && fs->wl_bit; i -= i & (~i + 1))
        n += fs->wl_bit[i];
    return n;
}

/*---- the log ----*/

static void log_id(gw_fair_sale_t *fs, char tag, const entry_t *e, bool sync, int *rc)
{
    char line[INV_ORDER_ID_MAX + 8];
    int len = snprintf(line, sizeof(line), "%c %s\n", tag, e->order_id);
    int r = gw_fair__log_line(fs, line, (size_t)len, sync);
    if (rc)
        *rc = r;
}

void gw_fair__wl_log_lost(gw_fair_sale_t *fs, const entry_t *e)
{
    log_id(fs, 'X', e, false, NULL);
}

/* An entry leaves the waitlist lost, for cause (fs->mu held). It is answered
 * lost from here on, so under fsync durability its "X" is durable first: lost
 * to a power loss, the restart would waitlist it again and a later promotion
 * could make it win. One fdatasync per refused promotion, as its "P" has. */
static void lose(gw_fair_sale_t *fs, entry_t *e)
{
    gw_fair__wl_remove(fs, e);
    e->state = GW_ENTRY_LOST;
    fs->lost++;
    int rc;
    log_id(fs, 'X', e, fs->f->srv->cfg->durability == GW_DURABILITY_FSYNC, &rc);
    if (rc)
        cm_log_error("fair",
                     "cannot record a waitlisted entry lost; a restart may waitlist it again",
                     "sale=%s order=%s", fs->sale_id, e->order_id);
}

/* The sale ended: every waitlisted entry is lost ("L", then first-come is moot). */
static void wl_end(gw_fair_sale_t *fs, int64_t now)
{
    pthread_mutex_lock(&fs->mu);
    char line[48];
    int len = snprintf(line, sizeof(line), "L %lld\n", (long long)now);
    if (gw_fair__log_line(fs, line, (size_t)len, true) != 0)
        cm_log_error("fair", "cannot record the waitlist's end; a restart ends it again",
                     "sale=%s", fs->sale_id);
    fs->wl_ended = true;
    for (size_t i = 0; i < fs->ndraw; i++) {
        entry_t *e = &fs->v[i];
        if (e->state == GW_ENTRY_WAITLISTED) {
            gw_fair__wl_remove(fs, e);
            e->state = GW_ENTRY_LOST;
            fs->lost++;
        }
    }
    gw_fair__wl_told(fs);
    pthread_mutex_unlock(&fs->mu);
    cm_log_info("fair", "sale ended: its waitlist is lost", "sale=%s", fs->sale_id);
}

/*---- promotion ----*/

typedef enum { PROMO_WON, PROMO_LOST, PROMO_NO_STOCK, PROMO_FAILED } promo_t;

/*
 * Admits one waitlisted entry as the draw admits a winner: "P" (fdatasync'd:
 * a restart that finds it without its "W" asks the spool), the atomic step
 * with the entry's id, user and Idempotency-Key, the spool append and commit,
 * the status table, then "W". Lottery thread.
 */
static promo_t promote(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, entry_t *e,
                       int64_t *left)
{
    int rc;
    pthread_mutex_lock(&fs->mu);
    log_id(fs, 'P', e, true, &rc);
    pthread_mutex_unlock(&fs->mu);
    if (rc) {
        cm_log_error("fair", "cannot record a waitlist promotion", "sale=%s", fs->sale_id);
        return PROMO_FAILED;
    }
    inv_reserve_req_t rq;
    gw_fair__entry_reserve_req(e, sale, &rq);
    gw_accept_req_t ar = {.inv = f->inv, .rq = &rq, .sale_id = fs->sale_id, .user = e->user_id,
                          .accepted_at_ms = cm_wall_ms(),
                          .why = "waitlist promotion not accepted: spool refused"};
    gw_accept_t a;
    rc = gw_accept_take(&f->accept, &ar, &a);
    if (rc < 0)
        return PROMO_FAILED;
    if (rc == GW_ACCEPT_SOLD_OUT)
        return PROMO_NO_STOCK;
    if (rc != GW_ACCEPT_SPOOLED && rc != GW_ACCEPT_SPOOL_REFUSED) {
        pthread_mutex_lock(&fs->mu);
        lose(fs, e);
        pthread_mutex_unlock(&fs->mu);
        return PROMO_LOST;
    }
    *left = rq.stock_left >= 0 ? rq.stock_left : *left - e->qty;
    if (rc == GW_ACCEPT_SPOOL_REFUSED)
        return PROMO_FAILED; /* still waitlisted: tried again after WL_RETRY_MS */
    /* its own record only: one an earlier round made durable is settled, whatever
     * another thread's later fdatasync did */
    gw_accept_commit(&f->accept, &a, 1);
    if (!a.durable) {
        /* as the draw's failed commit: the record was cut, the units stay held
         * (undersell, never oversell), and the entry is lost, not "won" with an
         * order that reads queued for ever */
        cm_log_error("fair", "spool fsync failed: a waitlist promotion is not accepted",
                     "sale=%s order=%s", fs->sale_id, e->order_id);
        pthread_mutex_lock(&fs->mu);
        lose(fs, e);
        pthread_mutex_unlock(&fs->mu);
        return PROMO_FAILED;
    }
    gw_accept_publish(&f->accept, &a, 1);
    pthread_mutex_lock(&fs->mu);
    gw_fair__wl_remove(fs, e);
    e->state = GW_ENTRY_WON;
    e->promo_cut = false;
    fs->won_orders++;
    fs->won_units += e->qty;
    fs->promoted++;
    log_id(fs, 'W', e, false, &rc);
    e->wlogged = rc == 0;
    pthread_mutex_unlock(&fs->mu);
    return PROMO_WON;
}

static gw_wl_result_t promo_result(promo_t p)
{
    switch (p) {
    case PROMO_WON:
        return GW_WL_WON;
    case PROMO_LOST:
        return GW_WL_LOST;
    case PROMO_NO_STOCK:
        return GW_WL_NO_STOCK;
    default:
        return GW_WL_FAILED;
    }
}

/* One leftovers event through the sale's machine (its one waitlist core, fs->sale.wl). */
static gw_wl_out_t wl_step(gw_fair_sale_t *fs, gw_wl_ev_t ev, int64_t now)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_WL, .wl = ev}, now, &so);
    return so.wl;
}

void gw_fair__wl_tick(gw_fair_t *f, gw_fair_sale_t *fs)
{
    int64_t now = cm_wall_ms();
    if (now < fs->wl_retry_ms)
        return;
    inv_sale_t *sale = inv_sale_find(f->srv->stores.inv, fs->sale_id);
    if (!sale)
        return;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    int64_t left = info.stock_left;
    /* Lottery thread: the only writer of a drawn lottery's states and of the
     * waitlist's core, so they are read here without fs->mu. */
    gw_wl_out_t out = wl_step(fs,
                              (gw_wl_ev_t){.kind = GW_WL_EV_TICK,
                                           .left = left,
                                           .acc = info.accepted_units,
                                           .version = info.version},
                              now);
    if (out.actions & GW_WL_DO_END) {
        wl_end(fs, now);
        return;
    }
    if (!(out.actions & GW_WL_DO_WALK))
        return;
    out = wl_step(fs, (gw_wl_ev_t){.kind = GW_WL_EV_WALK, .left = left, .ndraw = fs->ndraw}, now);
    while (out.actions & (GW_WL_DO_LOOK | GW_WL_DO_PROMOTE)) {
        entry_t *e = &fs->v[fs->perm[out.pos]];
        gw_wl_ev_t ev;
        if (out.actions & GW_WL_DO_LOOK) {
            ev = (gw_wl_ev_t){.kind = GW_WL_EV_ENTRY,
                              .waitlisted = e->state == GW_ENTRY_WAITLISTED,
                              .qty = e->qty};
        } else {
            promo_t p = promote(f, fs, sale, e, &left);
            if (p == PROMO_WON)
                cm_log_info("fair", "waitlist promotion", "sale=%s order=%s position=%u",
                            fs->sale_id, e->order_id, e->pos);
            ev = (gw_wl_ev_t){.kind = GW_WL_EV_PROMOTED, .result = promo_result(p), .left = left};
        }
        out = wl_step(fs, ev, now);
    }
    gw_fair__wl_pass_end(fs, out.failed ? now + WL_RETRY_MS : 0, "one");
}

void gw_fair__wl_pass_end(gw_fair_sale_t *fs, int64_t retry_at_ms, const char *what)
{
    if (retry_at_ms)
        fs->wl_retry_ms = retry_at_ms;
    pthread_mutex_lock(&fs->mu);
    if (fs->waitlisted == 0) {
        gw_fair__wl_told(fs);
        cm_log_info("fair", "waitlist done: first-come from now", "sale=%s waitlist=%s promoted=%llu",
                    fs->sale_id, what, (unsigned long long)fs->promoted);
    }
    pthread_mutex_unlock(&fs->mu);
}
