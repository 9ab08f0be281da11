/*
 * The buy decision (gw_buy_core.h): the rules of a buy from its sale's
 * window to its 202, in one file, with no I/O. The shell around it is
 * gw_buy.c's buy_handle; the simulator runs it too (sim/sim_world.c do_buy).
 *
 * The rules:
 *   - cheapest refusal first: sold out and the window need only the head;
 *     the per-user limit's qty check before the rate limits (a 409 costs no
 *     rate token), the rate limits before anything keyed by the sale's state
 *   - an order is in the spool before its 202: the answer waits for the
 *     write (and with durability fsync for its fdatasync)
 *   - a failed write gives the units back, unless the record is a keyed
 *     retry's replay: that order belongs to its first request
 *   - a failed fdatasync answers 503 "not confirmed" and leaves the units
 *     held (the spool cut the record; at worst undersell until a restart)
 *   - a keyed retry of an order this gateway knows durable gets a replayed
 *     202; one the status table forgot or never saw (another gateway's, or
 *     an earlier incarnation's) is claimed, then spooled again, before its
 *     replayed 202: a second copy of a spooled order is harmless (settlement
 *     is idempotent by order id), an order no spool holds is a lost 202
 *   - this incarnation's own order unknown here and unclaimed: its first
 *     request is still in flight (reserve done, write not): 503, retry
 *   - a 202, replayed or not, keeps the admission token the buy claimed
 *     (gw_buy_answer_keeps_admission); every other answer gives it back
 */
#include "gateway/buy/gw_buy_core.h"

#include "common/cm_err.h"
#include "common/cm_plant.h"
#include "inventory/inv.h"

#define STAGE_DONE 0xff

static const char *const answer_names[GW_BUY_A_COUNT] = {
#define XX(n, s) [GW_BUY_A_##n] = s,
    GW_BUY_ANSWERS(XX)
#undef XX
};

const char *gw_buy_answer_name(gw_buy_answer_t a)
{
    return (unsigned)a < GW_BUY_A_COUNT ? answer_names[a] : "?";
}

void gw_buy_core_init(gw_buy_core_t *c, bool fsync)
{
    c->stage = GW_BUY_EV_HEAD;
    c->fsync = fsync;
    c->replayed = false;
    c->answer = GW_BUY_A_NONE;
}

static void answer(gw_buy_out_t *out, gw_buy_answer_t a, int rc)
{
    out->answer = a;
    out->rc = rc;
}

/* The record goes to the spool (a new order, or a keyed retry's replay). */
static void spool(gw_buy_core_t *c, gw_buy_out_t *out, bool replayed)
{
    c->replayed = replayed;
    c->stage = GW_BUY_EV_SPOOLED;
    out->actions |= GW_BUY_DO_SPOOL;
    /* planted: the 202 goes out as the write is asked for, not once it returned */
    if (CM_PLANT(BUY_ACK_BEFORE_SPOOL))
        out->answer = replayed ? GW_BUY_A_REPLAYED : GW_BUY_A_ACCEPTED;
}

static void on_head(gw_buy_core_t *c, const gw_buy_ev_t *ev, int64_t now_ms, gw_buy_out_t *out)
{
    if (ev->sold_out) {
        answer(out, ev->waitlist_open ? GW_BUY_A_WAITLIST : GW_BUY_A_SOLD_OUT, 0);
        return;
    }
    /* a lottery takes entries before starts_at (its early window) */
    if (ev->starts_at_ms && now_ms < ev->starts_at_ms && ev->fair != GW_BUY_FAIR_ENTER) {
        answer(out, GW_BUY_A_NOT_STARTED, 0);
        return;
    }
    if (ev->ends_at_ms && now_ms >= ev->ends_at_ms) {
        answer(out, GW_BUY_A_ENDED, 0);
        return;
    }
    c->stage = GW_BUY_EV_BUYER;
}

static void on_limits(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    if (!ev->rate_allowed) {
        answer(out, GW_BUY_A_RATE_LIMITED, 0);
        return;
    }
    if (ev->fair == GW_BUY_FAIR_ENTER) {
        out->actions = GW_BUY_DO_ENTER;
        return;
    }
    if (ev->fair == GW_BUY_FAIR_DRAWING) {
        answer(out, GW_BUY_A_DRAW_RUNNING, 0);
        return;
    }
    if (ev->waitlist_open) {
        answer(out, GW_BUY_A_WAITLIST, 0);
        return;
    }
    c->stage = ev->room ? GW_BUY_EV_ADMITTED : GW_BUY_EV_RESERVED;
    out->actions = ev->room ? GW_BUY_DO_ADMIT : GW_BUY_DO_RESERVE;
}

static void on_admitted(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    if (ev->rc == GW_BUY_ADM_SPENT) {
        answer(out, GW_BUY_A_ADMISSION_SPENT, 0);
    } else if (ev->rc == CM_EBUSY) {
        answer(out, GW_BUY_A_ADMISSION_BUSY, 0);
    } else if (ev->rc < 0) { /* a fleet's spent tokens are Redis': unknown, never a second order */
        answer(out, GW_BUY_A_ADMISSION_UNKNOWN, ev->rc);
    } else { /* claimed, or held by this key's own buy (a retry goes on to its order) */
        c->stage = GW_BUY_EV_RESERVED;
        out->actions = GW_BUY_DO_RESERVE;
    }
}

/* A keyed retry: the inventory found the key's order. */
static void on_duplicate(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    if (ev->ours && ev->seen == GW_BUY_SEEN_UNKNOWN && !ev->claimed) {
        /* planted: the retry is told 202 while its order's record may not
         * be durable (or may be refused and given back) */
        answer(out, CM_PLANT(BUY_RETRY_ACK_IN_FLIGHT) ? GW_BUY_A_REPLAYED : GW_BUY_A_IN_PROGRESS,
               0);
        return;
    }
    if (ev->seen != GW_BUY_SEEN_FOUND && (!ev->ours || ev->seen == GW_BUY_SEEN_UNKNOWN)) {
        /* (ours and claimed: a gateway took it over after this one's own
         * attempt failed; spooled here too) */
        c->stage = GW_BUY_EV_CLAIMED;
        out->actions = GW_BUY_DO_CLAIM;
        return;
    }
    answer(out, GW_BUY_A_REPLAYED, 0); /* durable here */
}

static void on_reserved(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    switch (ev->rc) {
    case INV_RESERVED:
        spool(c, out, false);
        return;
    case INV_DUPLICATE:
        on_duplicate(c, ev, out);
        return;
    case INV_SOLD_OUT:
        answer(out, GW_BUY_A_SOLD_OUT, 0);
        return;
    case INV_LIMIT_REACHED:
        answer(out, GW_BUY_A_LIMIT_PER_USER, 0);
        return;
    case INV_UNKNOWN_SALE:
        answer(out, GW_BUY_A_UNKNOWN_SALE, 0);
        return;
    default:
        answer(out, GW_BUY_A_INV_FAILED, ev->rc);
        return;
    }
}

static void on_claimed(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    if (ev->rc == INV_RESERVED)
        spool(c, out, true);
    else if (ev->rc == CM_ENOTFOUND)
        answer(out, GW_BUY_A_KEY_GIVEN_BACK, 0);
    else
        answer(out, GW_BUY_A_INV_FAILED, ev->rc);
}

static gw_buy_answer_t accepted(const gw_buy_core_t *c)
{
    return c->replayed ? GW_BUY_A_REPLAYED : GW_BUY_A_ACCEPTED;
}

static void on_spooled(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    if (ev->rc != 0) {
        /* Not durable, so not accepted: the units go back, but a replayed
         * order belongs to its first request. Planted: a failed write of a
         * new order keeps its units (undersell, and the inventory holds
         * units no order has). */
        if (!c->replayed && !CM_PLANT(BUY_FAILED_WRITE_KEEPS_UNITS))
            out->actions = GW_BUY_DO_GIVE_BACK;
        answer(out, GW_BUY_A_SPOOL_REFUSED, ev->rc);
        return;
    }
    if (!c->replayed)
        out->actions = GW_BUY_DO_COUNT;
    if (c->fsync) { /* group commit: the answer waits for the record's fdatasync */
        c->stage = GW_BUY_EV_SYNCED;
        out->actions |= GW_BUY_DO_SYNC;
        return;
    }
    out->actions |= GW_BUY_DO_KNOWN; /* known (and replayable by its key) once durable */
    answer(out, accepted(c), 0);
}

static void on_synced(gw_buy_core_t *c, const gw_buy_ev_t *ev, gw_buy_out_t *out)
{
    /* A failed fdatasync: the spool cut every record it did not confirm and
     * refuses appends; the reservation stays held (never oversell: if the
     * cut failed the record may come back at a restart). Planted: the
     * failure is not read, the buyer hears 202. */
    if (ev->rc != 0 && !CM_PLANT(BUY_SYNC_FAILURE_ACCEPTED)) {
        answer(out, GW_BUY_A_NOT_CONFIRMED, ev->rc);
        return;
    }
    out->actions = GW_BUY_DO_KNOWN;
    answer(out, accepted(c), 0);
}

void gw_buy_core_step(gw_buy_core_t *c, const gw_buy_ev_t *ev, int64_t now_ms, gw_buy_out_t *out)
{
    out->answer = GW_BUY_A_NONE;
    out->actions = 0;
    out->rc = 0;
    if (ev->kind != (gw_buy_ev_kind_t)c->stage) {
        answer(out, GW_BUY_A_INV_FAILED, CM_EINVAL);
        return;
    }
    switch (ev->kind) {
    case GW_BUY_EV_HEAD:
        on_head(c, ev, now_ms, out);
        break;
    case GW_BUY_EV_BUYER:
        if (ev->qty > ev->per_user_limit)
            answer(out, GW_BUY_A_QTY_OVER_LIMIT, 0);
        else
            c->stage = GW_BUY_EV_LIMITS;
        break;
    case GW_BUY_EV_LIMITS:
        on_limits(c, ev, out);
        break;
    case GW_BUY_EV_ADMITTED:
        on_admitted(c, ev, out);
        break;
    case GW_BUY_EV_RESERVED:
        on_reserved(c, ev, out);
        break;
    case GW_BUY_EV_CLAIMED:
        on_claimed(c, ev, out);
        break;
    case GW_BUY_EV_SPOOLED:
        on_spooled(c, ev, out);
        break;
    case GW_BUY_EV_SYNCED:
        on_synced(c, ev, out);
        break;
    }
    if (out->answer != GW_BUY_A_NONE)
        c->answer = (uint8_t)out->answer;
    if (out->answer != GW_BUY_A_NONE && !(out->actions & (GW_BUY_DO_SPOOL | GW_BUY_DO_SYNC)))
        c->stage = STAGE_DONE; /* answered: no event follows */
}
