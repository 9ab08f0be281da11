/*
 * The leftovers' decisions (gw_waitlist_core.h) with no I/O. The rules:
 *   - the losers wait in draw order
 *   - a walk goes down the order from the first waiter while stock is left;
 *     each promotion takes its entry's units: one freed unit, one promotion
 *   - an entry that wants more units than are left keeps its place, and the
 *     next one that fits goes
 *   - a promotion the inventory finds short of stock ends the walk (the
 *     stock seen was gone); a failed one ends it too, and the entry keeps
 *     its place; one refused for cause loses, and the walk goes on
 *   - no walk over the stock a walk admitted nobody from (every qty too
 *     large), unless a fleet's promotion waits to be finished
 *   - the first waiter's position only grows: an entry ahead of it never
 *     waits again
 */
#include "gateway/buy/gw_waitlist_core.h"

#include "common/cm_plant.h"

enum { STAGE_IDLE = 0, STAGE_LOOKING, STAGE_PROMOTING };

void gw_wl_core_init(gw_wl_core_t *c, size_t head)
{
    *c = (gw_wl_core_t){.head = head};
}

/* The walk's end: one that admitted nobody and did not fail remembers the
 * stock (the walk's last, planted: its TICK's, which a fleet's lagging view
 * may have shown units another gateway had taken). */
static void pass_end(gw_wl_core_t *c, bool failed, gw_wl_out_t *out)
{
    c->stage = STAGE_IDLE;
    out->actions = GW_WL_DO_PASS_END;
    out->admitted = c->admitted;
    out->failed = failed;
    if (!c->admitted && !failed) {
        c->seen = c->saw;
        if (!CM_PLANT(WL_FLEET_SEEN_STALE))
            c->seen.left = c->left;
    }
}

/* The next draw position to look at from c->at, or the walk's end. */
static void next(gw_wl_core_t *c, gw_wl_out_t *out)
{
    if (c->at < c->ndraw && c->left > 0) {
        c->stage = STAGE_LOOKING;
        out->actions = GW_WL_DO_LOOK;
        out->pos = c->at;
        return;
    }
    pass_end(c, false, out);
}

static void on_tick(gw_wl_core_t *c, const gw_wl_ev_t *ev, gw_wl_out_t *out)
{
    c->saw = (struct gw_wl_stock){ev->left, ev->acc, ev->version};
    bool unchanged =
        ev->left == c->seen.left && ev->acc == c->seen.acc && ev->version == c->seen.version;
    if (!ev->pending && (ev->left <= 0 || unchanged))
        return;
    out->actions = GW_WL_DO_WALK;
}

static void on_entry(gw_wl_core_t *c, const gw_wl_ev_t *ev, gw_wl_out_t *out)
{
    if (!ev->waitlisted) {
        if (c->at == c->head)
            c->head++;
        c->at++;
        next(c, out);
        return;
    }
    if ((int64_t)ev->qty > c->left) { /* keeps its place; the next one that fits goes */
        c->at++;
        next(c, out);
        return;
    }
    /* planted: the first waiter that fits is passed over, the next one promoted */
    if (CM_PLANT(WL_SKIPS_FIRST) && !c->met) {
        c->met = true;
        c->at++;
        next(c, out);
        return;
    }
    c->met = true;
    c->stage = STAGE_PROMOTING;
    out->actions = GW_WL_DO_PROMOTE;
    out->pos = c->at;
}

static void on_promoted(gw_wl_core_t *c, const gw_wl_ev_t *ev, gw_wl_out_t *out)
{
    c->left = ev->left;
    switch (ev->result) {
    case GW_WL_NO_STOCK: /* the stock seen was gone: the next tick looks again */
    case GW_WL_FAILED:
        pass_end(c, ev->result == GW_WL_FAILED, out);
        return;
    case GW_WL_WON:
        c->admitted = true;
        break;
    case GW_WL_LOST:
        break;
    }
    if (c->at == c->head) /* it waits no more */
        c->head++;
    c->at++;
    next(c, out);
}

void gw_wl_core_step(gw_wl_core_t *c, const gw_wl_ev_t *ev, gw_wl_out_t *out)
{
    *out = (gw_wl_out_t){0};
    switch (ev->kind) {
    case GW_WL_EV_TICK:
        if (c->stage == STAGE_IDLE)
            on_tick(c, ev, out);
        break;
    case GW_WL_EV_WALK:
        if (c->stage != STAGE_IDLE)
            break;
        c->at = c->head;
        c->ndraw = ev->ndraw;
        c->left = ev->left;
        c->met = c->admitted = false;
        next(c, out);
        break;
    case GW_WL_EV_ENTRY:
        if (c->stage == STAGE_LOOKING)
            on_entry(c, ev, out);
        break;
    case GW_WL_EV_PROMOTED:
        if (c->stage == STAGE_PROMOTING)
            on_promoted(c, ev, out);
        break;
    }
}
