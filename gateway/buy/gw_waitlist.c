/*
 * Leftovers by lot (docs/design.md "Leftovers by lot"): who is next and where
 * a walk stops is gw_waitlist_core.c's; this file runs the one walk and the
 * one promotion of both stores, and what a store records around them is its
 * gw_wl_ops_t: one gateway's entry log below, a fleet's Redis in
 * gw_waitlist_fleet.c.
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

void gw_fair__wl_end_here(gw_fair_sale_t *fs)
{
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
}

/*---- the promotion, both stores' ----*/

/* Its outcome: recorded by the store, then known here (a win published between:
 * the order is durable and recorded). FAILED while the store cannot record it. */
static gw_wl_result_t outcome(gw_fair_t *f, gw_fair_sale_t *fs, entry_t *e, bool won,
                              const char *order_id, gw_accept_t *publish)
{
    if (!f->lot->wl->record(f, fs, e, won ? GW_WL_REC_WON : GW_WL_REC_LOST, order_id))
        return GW_WL_FAILED;
    if (strcmp(fs->wl_giveback, e->order_id) == 0)
        fs->wl_giveback[0] = '\0';
    if (publish)
        gw_accept_publish(&f->accept, publish, 1);
    pthread_mutex_lock(&fs->mu);
    gw_fair__wl_remove(fs, e);
    if (won) {
        e->state = GW_ENTRY_WON;
        e->promo_cut = false;
        fs->won_orders++;
        fs->won_units += e->qty;
        fs->promoted++;
    } else {
        e->state = GW_ENTRY_LOST;
        fs->lost++;
    }
    pthread_mutex_unlock(&fs->mu);
    return won ? GW_WL_WON : GW_WL_LOST;
}

gw_wl_result_t gw_fair__wl_promote(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, entry_t *e,
                                   bool scan_spool, int64_t *left)
{
    const gw_wl_ops_t *st = f->lot->wl;
    if (strcmp(fs->wl_giveback, e->order_id) == 0) /* given back; its "lost" unrecorded then */
        return outcome(f, fs, e, false, NULL, NULL);
    gw_accept_t a = {.fresh = false};
    int found = scan_spool ? gw_accept_find(&f->accept, e->order_id, &a) : 0;
    if (found < 0)
        return GW_WL_FAILED;
    if (!found) {
        inv_reserve_req_t rq;
        gw_fair__entry_reserve_req(e, sale, &rq);
        if (st->keyed && !rq.idem_key[0]) /* a retry finds the order held, not a second one */
            snprintf(rq.idem_key, sizeof(rq.idem_key), "fair-%s", e->order_id);
        gw_accept_req_t ar = {.inv = f->inv,
                              .rq = &rq,
                              .sale_id = fs->sale_id,
                              .user = e->user_id,
                              .accepted_at_ms = cm_wall_ms(),
                              .why = "waitlist promotion not accepted: spool refused"};
        int rc = gw_accept_take(&f->accept, &ar, &a);
        if (rc < 0)
            return GW_WL_FAILED;
        if (rc == GW_ACCEPT_SOLD_OUT) { /* the stock seen was gone: it keeps its place */
            *left = rq.stock_left > 0 ? rq.stock_left : 0; /* the inventory's, not the view's */
            return st->record(f, fs, e, GW_WL_REC_NONE, "") ? GW_WL_NO_STOCK : GW_WL_FAILED;
        }
        if (rc == GW_ACCEPT_BEFORE && st->keyed) /* its own earlier try, released since */
            return outcome(f, fs, e, true, e->order_id, NULL);
        if (rc != GW_ACCEPT_SPOOLED && rc != GW_ACCEPT_SPOOL_REFUSED) /* for cause */
            return outcome(f, fs, e, false, NULL, NULL);
        *left = rq.stock_left >= 0 ? rq.stock_left : *left - e->qty;
        if (rc == GW_ACCEPT_SPOOL_REFUSED) {
            if (!st->keyed)
                return GW_WL_FAILED; /* still waitlisted: tried again after retry_ms */
            snprintf(fs->wl_giveback, sizeof(fs->wl_giveback), "%s", e->order_id);
            return outcome(f, fs, e, false, NULL, NULL);
        }
        /* its own record only: another thread's later failed fdatasync is not its to answer */
        gw_accept_commit(&f->accept, &a, 1);
        if (!a.durable) {
            /* the record was cut, the units stay held (undersell, never oversell) */
            cm_log_error("fair", "spool fsync failed: a waitlist promotion is not accepted",
                         "sale=%s order=%s", fs->sale_id, e->order_id);
            if (!st->keyed) /* lost, not "won" with an order that reads queued for ever */
                (void)outcome(f, fs, e, false, NULL, NULL);
            return GW_WL_FAILED; /* keyed: pending, the next try asks the spool */
        }
    }
    gw_wl_result_t r = outcome(f, fs, e, true, a.o.order_id, &a);
    if (r == GW_WL_WON)
        cm_log_info("fair", "waitlist promotion", "sale=%s order=%s position=%u store=%s%s",
                    fs->sale_id, e->order_id, e->pos, st->name, a.fresh ? "" : " found=spool");
    return r;
}

/*---- the walk, both stores' ----*/

/* One leftovers event through the sale's machine (its one waitlist core, fs->sale.wl). */
static gw_wl_out_t wl_step(gw_fair_sale_t *fs, gw_wl_ev_t ev, int64_t now)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_WL, .wl = ev}, now, &so);
    return so.wl;
}

/* The walk's end: a failed one waits retry_ms; the leftovers close once nobody waits. */
static void pass_end(gw_fair_sale_t *fs, int64_t retry_at_ms, const char *what)
{
    if (retry_at_ms)
        fs->wl_retry_ms = retry_at_ms;
    pthread_mutex_lock(&fs->mu);
    if (fs->waitlisted == 0) {
        gw_fair__wl_told(fs);
        cm_log_info("fair", "waitlist done: first-come from now",
                    "sale=%s waitlist=%s promoted=%llu", fs->sale_id, what,
                    (unsigned long long)fs->promoted);
    }
    pthread_mutex_unlock(&fs->mu);
}

void gw_fair__wl_tick(gw_fair_t *f, gw_fair_sale_t *fs)
{
    const gw_wl_ops_t *st = f->lot->wl;
    int64_t now = cm_wall_ms();
    inv_sale_t *sale = inv_sale_find(f->srv->stores.inv, fs->sale_id);
    if (!sale)
        return;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    /* the end first, whatever the stock: every gateway loses its waiters at once */
    gw_wl_out_t out =
        wl_step(fs, (gw_wl_ev_t){.kind = GW_WL_EV_TICK, .left = 1, .pending = true}, now);
    if (out.actions & GW_WL_DO_END) {
        if (now >= fs->wl_retry_ms)
            st->end(f, fs, sale, now);
        return;
    }
    bool pending = false;
    if (now < fs->wl_retry_ms || (st->poll && !st->poll(f, fs, now, &pending)))
        return;
    /* Lottery thread: the only writer of a drawn lottery's states and of the
     * waitlist's core, so they are read here without fs->mu. */
    int64_t left = info.stock_left;
    out = wl_step(fs,
                  (gw_wl_ev_t){.kind = GW_WL_EV_TICK,
                               .left = left,
                               .acc = info.accepted_units,
                               .version = info.version,
                               .pending = pending},
                  now);
    if (!(out.actions & GW_WL_DO_WALK) || (st->lock && !st->lock(f, fs, sale, now, &left)))
        return;
    out = wl_step(fs, (gw_wl_ev_t){.kind = GW_WL_EV_WALK, .left = left, .ndraw = fs->ndraw}, now);
    size_t nth = 0;
    while (out.actions & (GW_WL_DO_LOOK | GW_WL_DO_PROMOTE)) {
        entry_t *e = &fs->v[fs->perm[out.pos]];
        gw_wl_ev_t ev = {
            .kind = GW_WL_EV_ENTRY, .waitlisted = e->state == GW_ENTRY_WAITLISTED, .qty = e->qty};
        if (out.actions & GW_WL_DO_PROMOTE) {
            gw_wl_result_t r = st->begin(f, fs, e, ++nth)
                                   ? gw_fair__wl_promote(f, fs, sale, e, false, &left)
                                   : GW_WL_FAILED;
            ev = (gw_wl_ev_t){.kind = GW_WL_EV_PROMOTED, .result = r, .left = left};
        }
        out = wl_step(fs, ev, now);
    }
    /* the stock the walk last heard from the inventory (its PROMOTED's left) is what it
     * saw: a view that lagged (units shown that another gateway had taken) is not taken
     * as seen, or the unit freed next, which shows the same view again, would look
     * unchanged and never be walked for (gw_waitlist_core.c remembers it) */
    pass_end(fs, out.failed ? now + st->retry_ms : 0, st->name);
}

/*---- one gateway's store: the entry log's P, W, X and L records ----*/

static int log_id(gw_fair_sale_t *fs, char tag, const entry_t *e, bool sync)
{
    char line[INV_ORDER_ID_MAX + 8];
    int len = snprintf(line, sizeof(line), "%c %s\n", tag, e->order_id);
    return gw_fair__log_line(fs, line, (size_t)len, sync);
}

void gw_fair__wl_log_lost(gw_fair_sale_t *fs, const entry_t *e)
{
    (void)log_id(fs, 'X', e, false);
}

/* "P" before the reserve, fdatasync'd: a restart that finds it without its "W" asks
 * the spool. */
static bool local_begin(gw_fair_t *f, gw_fair_sale_t *fs, const entry_t *e, size_t nth)
{
    (void)f;
    (void)nth;
    pthread_mutex_lock(&fs->mu);
    int rc = log_id(fs, 'P', e, true);
    pthread_mutex_unlock(&fs->mu);
    if (rc)
        cm_log_error("fair", "cannot record a waitlist promotion", "sale=%s", fs->sale_id);
    return rc == 0;
}

/* "W" after the order's commit, or "X" for an entry lost: answered lost from
 * here on, so under fsync durability its "X" is durable first (lost to a power
 * loss, the restart would waitlist it again and a later promotion could make it
 * win; one fdatasync per refused promotion, as its "P" has). Neither one's
 * failure holds the outcome back: a "W" not written is written with the draw's
 * winners (e->wlogged), an "X" not written is logged. */
static bool local_record(gw_fair_t *f, gw_fair_sale_t *fs, entry_t *e, gw_wl_rec_t rec,
                         const char *order_id)
{
    (void)order_id;
    if (rec == GW_WL_REC_NONE)
        return true;
    bool won = rec == GW_WL_REC_WON;
    pthread_mutex_lock(&fs->mu);
    int rc = log_id(fs, won ? 'W' : 'X', e, !won && f->srv->cfg->durability == GW_DURABILITY_FSYNC);
    if (won)
        e->wlogged = rc == 0;
    pthread_mutex_unlock(&fs->mu);
    if (rc && !won)
        cm_log_error("fair",
                     "cannot record a waitlisted entry lost; a restart may waitlist it again",
                     "sale=%s order=%s", fs->sale_id, e->order_id);
    return true;
}

/* The sale ended: every waitlisted entry is lost ("L", then first-come is moot). */
static void local_end(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, int64_t now)
{
    (void)f;
    (void)sale;
    pthread_mutex_lock(&fs->mu);
    char line[48];
    int len = snprintf(line, sizeof(line), "L %lld\n", (long long)now);
    if (gw_fair__log_line(fs, line, (size_t)len, true) != 0)
        cm_log_error("fair", "cannot record the waitlist's end; a restart ends it again", "sale=%s",
                     fs->sale_id);
    gw_fair__wl_end_here(fs);
    pthread_mutex_unlock(&fs->mu);
    cm_log_info("fair", "sale ended: its waitlist is lost", "sale=%s", fs->sale_id);
}

const gw_wl_ops_t gw_fair__wl_local = {
    .begin = local_begin,
    .record = local_record,
    .end = local_end,
    .keyed = false,
    .retry_ms = 1000, /* a walk that failed (the inventory, the log, the spool) */
    .name = "one",
};
