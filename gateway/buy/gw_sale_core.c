/*
 * A sale's fairness as one state machine (gw_sale_core.h): the phase of a
 * sale, decided in one function, and the one step that answers an event
 * outside its phase and hands every other to the core that decides it.
 *
 * The rules of the phases:
 *   - ended at ends_at, whatever else: nothing is taken after it, the draw
 *     still running then makes its losers lose, the waitlisted lose
 *   - registration from registration_opens_at to registration_closes_at; a
 *     registration outside it is 403 registration_closed, one of a sale
 *     without registration 404
 *   - a lottery takes entries from starts_at - fair_early_ms to starts_at +
 *     fair_window_ms: an entry before is 425 not_open, after is 503 closed
 *     (the draw runs), and buys wait until the draw is done
 *   - the draw done with its losers waiting: leftovers until nobody waits;
 *     first-come waits behind them; the sale's end ends them (every waiter
 *     loses, nobody is promoted after it)
 *   - a waiting room pre-queues its joins before starts_at and seals at the
 *     first tick or join from starts_at, then admits at its rate (a tick
 *     before the start only keeps its store); with a
 *     lottery too, the phase before the entry window is the pre-queue, the
 *     window takes entries without a token (the room seals inside it), and
 *     the room governs the first-come buys after the draw and its leftovers
 *     (docs/design.md, "Room and lottery")
 *   - a sale with none of these is first-come from starts_at
 * A core's replies and restart records (the store's answers) are never
 * refused: a phase passes while a store operation is in flight, and its
 * reply still decides.
 */
#include "gateway/buy/gw_sale_core.h"

#include "common/cm_err.h"
#include "common/cm_plant.h"

#include <stdatomic.h>
#include <string.h>

static const char *const phase_names[GW_SALE_PHASE_COUNT] = {
#define XX(n, s) [GW_SALE_PH_##n] = s,
    GW_SALE_PHASES(XX)
#undef XX
};

const char *gw_sale_phase_name(gw_sale_phase_t p)
{
    return (unsigned)p < GW_SALE_PHASE_COUNT ? phase_names[p] : "?";
}

void gw_sale_core_init(gw_sale_core_t *c, gw_fair_core_t *fair, gw_room_core_t *room,
                       gw_reg_core_t *reg)
{
    memset(c, 0, sizeof(*c)); /* the configuration's atomics: zero is their initial value */
    c->fair = fair;
    c->room = room;
    c->reg = reg;
    gw_wl_core_init(&c->wl, 0);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void gw_sale_cfg_get(const gw_sale_core_t *c, gw_sale_cfg_t *o)
{
    const gw_sale_conf_t *g = &c->cfg;
    *o = (gw_sale_cfg_t){.starts_at_ms = LD(g->starts_at_ms),
                         .ends_at_ms = LD(g->ends_at_ms),
                         .reg_opens_ms = LD(g->reg_opens_ms),
                         .reg_closes_ms = LD(g->reg_closes_ms),
                         .reg_cap = LD(g->reg_cap),
                         .fair_window_ms = LD(g->fair_window_ms),
                         .fair_early_ms = LD(g->fair_early_ms),
                         .max_entries = LD(g->max_entries),
                         .room_rate = LD(g->room_rate),
                         .waitlist = LD(g->waitlist)};
}

static void cfg_set(gw_sale_conf_t *g, const gw_sale_cfg_t *v)
{
    ST(g->starts_at_ms, v->starts_at_ms);
    ST(g->ends_at_ms, v->ends_at_ms);
    ST(g->reg_opens_ms, v->reg_opens_ms);
    ST(g->reg_closes_ms, v->reg_closes_ms);
    ST(g->reg_cap, v->reg_cap);
    ST(g->fair_window_ms, v->fair_window_ms);
    ST(g->fair_early_ms, v->fair_early_ms);
    ST(g->max_entries, v->max_entries);
    ST(g->room_rate, v->room_rate);
    ST(g->waitlist, v->waitlist);
}

static bool has_lottery(const gw_sale_core_t *c)
{
    return c->fair && LD(c->cfg.fair_window_ms) > 0;
}

static bool has_room(const gw_sale_core_t *c)
{
    return c->room && LD(c->cfg.room_rate) > 0;
}

static bool has_registration(const gw_sale_core_t *c)
{
    return c->reg && LD(c->cfg.reg_opens_ms) > 0 && LD(c->cfg.fair_window_ms) > 0;
}

gw_sale_phase_t gw_sale_phase(const gw_sale_core_t *c, int64_t now_ms)
{
    gw_sale_cfg_t g;
    gw_sale_cfg_get(c, &g);
    return gw_sale_phase_at(&g, c->fair && c->fair->lot_done, LD(c->leftovers), now_ms);
}

gw_sale_phase_t gw_sale_phase_at(const gw_sale_cfg_t *g, bool drawn, bool leftovers, int64_t now_ms)
{
    if (g->ends_at_ms && now_ms >= g->ends_at_ms)
        return GW_SALE_PH_ENDED;
    if (g->reg_opens_ms > 0 && now_ms < g->reg_closes_ms)
        return now_ms < g->reg_opens_ms ? GW_SALE_PH_BEFORE : GW_SALE_PH_REGISTRATION;
    if (g->fair_window_ms > 0) {
        if (now_ms < g->starts_at_ms - g->fair_early_ms) /* a room pre-queues its joins */
            return g->room_rate > 0 ? GW_SALE_PH_PREQUEUE : GW_SALE_PH_BEFORE;
        if (now_ms < g->starts_at_ms + g->fair_window_ms)
            return GW_SALE_PH_ENTRY;
        if (!drawn)
            return GW_SALE_PH_DRAW;
        if (leftovers)
            return GW_SALE_PH_LEFTOVERS;
        return g->room_rate > 0 ? GW_SALE_PH_ADMISSION : GW_SALE_PH_OPEN;
    }
    if (g->room_rate > 0)
        return g->starts_at_ms && now_ms < g->starts_at_ms ? GW_SALE_PH_PREQUEUE
                                                           : GW_SALE_PH_ADMISSION;
    return g->starts_at_ms && now_ms < g->starts_at_ms ? GW_SALE_PH_BEFORE : GW_SALE_PH_OPEN;
}

gw_fair_phase_t gw_sale_buy_phase(gw_sale_phase_t p)
{
    switch (p) {
    case GW_SALE_PH_BEFORE:
    case GW_SALE_PH_REGISTRATION:
    case GW_SALE_PH_PREQUEUE:
        return GW_FAIR_TOO_EARLY;
    case GW_SALE_PH_ENTRY:
        return GW_FAIR_ENTER;
    case GW_SALE_PH_DRAW:
        return GW_FAIR_DRAWING;
    default:
        return GW_FAIR_OPEN;
    }
}

/* The draw's losers lose rather than wait: the sale ended, or it has no waitlist. */
static bool sale_over(const gw_sale_core_t *c, int64_t now_ms)
{
    int64_t ends = LD(c->cfg.ends_at_ms);
    return !LD(c->cfg.waitlist) || (ends && now_ms >= ends);
}

/*---- each core's events ----*/

static void on_reg(gw_sale_core_t *c, const gw_reg_ev_t *in, gw_sale_out_t *out)
{
    gw_reg_ev_t ev = *in;
    if (ev.kind == GW_REG_EV_REGISTER) {
        if (!has_registration(c) || out->phase != GW_SALE_PH_REGISTRATION) {
            out->refused = true;
            out->reg.answered = true;
            out->reg.answer = has_registration(c) ? GW_REG_SHUT : GW_REG_GONE;
            return;
        }
        ev.cap = LD(c->cfg.reg_cap);
    }
    if (!c->reg) {
        out->refused = true;
        return;
    }
    gw_reg_core_step(c->reg, &ev, &out->reg);
}

/* The room seals at the sale's start (with a lottery too: inside its entry
 * window), not at a phase's: its pre-queue ranks the joins before it. */
static bool room_started(const gw_sale_core_t *c, int64_t now_ms)
{
    int64_t starts = LD(c->cfg.starts_at_ms);
    return !(starts && now_ms < starts);
}

static void on_room(gw_sale_core_t *c, const gw_room_ev_t *in, int64_t now_ms, gw_sale_out_t *out)
{
    if (!has_room(c)) {
        out->refused = true;
        out->room.rc = CM_ENOTFOUND;
        return;
    }
    gw_room_ev_t ev = *in;
    if (ev.kind == GW_ROOM_EV_JOIN) {
        if (!atomic_load(&c->room->sealed) && room_started(c, now_ms)) {
            out->room.rc = GW_ROOM_SEAL; /* nothing done: SEAL, then JOIN again */
            return;
        }
        ev.join.now_ms = now_ms;
    } else if (ev.kind == GW_ROOM_EV_SEAL) {
        ev.now_ms = now_ms;
        ev.starts_ms = LD(c->cfg.starts_at_ms);
    }
    out->room.rc = gw_room_core_step(c->room, &ev, &out->room.answer, &out->room.recs);
}

/* A published draw with its losers waiting opens the leftovers. */
static void fair_published(gw_sale_core_t *c, const gw_fair_out_t *fo)
{
    if ((fo->actions & GW_FAIR_DO_PUBLISH) && fo->waitlist)
        ST(c->leftovers, true);
}

static void on_fair(gw_sale_core_t *c, const gw_fair_ev_t *in, int64_t now_ms, gw_sale_out_t *out)
{
    gw_fair_ev_t ev = *in;
    if (ev.kind == GW_FAIR_EV_ENTER) {
        if (!has_lottery(c) || out->phase != GW_SALE_PH_ENTRY) {
            out->refused = true;
            out->fair.answer = has_lottery(c) && out->phase < GW_SALE_PH_ENTRY ? GW_FAIR_A_NOT_OPEN
                                                                               : GW_FAIR_A_CLOSED;
            return;
        }
        ev.max_entries = LD(c->cfg.max_entries);
    } else if (ev.kind == GW_FAIR_EV_TICK) {
        if (out->phase <= GW_SALE_PH_ENTRY)
            return; /* the window still open (or not yet): nothing to draw */
        ev.sale_over = sale_over(c, now_ms);
    }
    if (!c->fair) {
        out->refused = true;
        return;
    }
    gw_fair_core_step(c->fair, &ev, &out->fair);
    fair_published(c, &out->fair);
}

/* The leftovers' tick: the sale's end ends them (every waiter loses,
 * nobody is promoted after it), else the core says whether a walk is due. */
static void on_wl(gw_sale_core_t *c, const gw_wl_ev_t *ev, int64_t now_ms, gw_sale_out_t *out)
{
    int64_t ends = LD(c->cfg.ends_at_ms);
    /* planted: the sale's end leaves the losers waiting */
    if (ev->kind == GW_WL_EV_TICK && ends && now_ms >= ends && !CM_PLANT(WL_END_KEEPS)) {
        out->wl.actions = GW_WL_DO_END;
        return;
    }
    gw_wl_core_step(&c->wl, ev, &out->wl);
}

/* The lottery thread's tick: the parts of the sale that time made due. */
static void on_tick(gw_sale_core_t *c, const gw_sale_tick_t *t, int64_t now_ms, gw_sale_out_t *out)
{
    if (has_lottery(c) && !c->fair->lot_done) {
        out->actions |= GW_SALE_DO_ENTRIES;
        /* closed at starts + window, whatever else (the end too: its losers lose) */
        if (now_ms >= LD(c->cfg.starts_at_ms) + LD(c->cfg.fair_window_ms))
            out->actions |= GW_SALE_DO_DRAW;
    }
    if (!t->waiting)
        ST(c->leftovers, false); /* nobody waits: first-come opens */
    if (LD(c->leftovers))
        out->actions |= GW_SALE_DO_WL;
    out->phase = gw_sale_phase(c, now_ms);
    /* A room admits (and seals) between its start and its end. After the end
     * nothing is admitted, and a sale's ended terms must not seal a room: a
     * fleet's gateway whose copy of a deleted sale (ended: only those can be
     * deleted) still stands when the new room's rate arrives would seal the
     * room of the sale created again under the id, before its start. */
    if (has_room(c))
        out->actions |=
            GW_SALE_DO_ROOM |
            (room_started(c, now_ms) && out->phase != GW_SALE_PH_ENDED ? GW_SALE_DO_ADMIT : 0);
}

/* The events decided by the phase: a tick, a registration, an entry, the
 * lottery's tick. A store's reply or a restart record is never refused, and
 * its step reads no phase (the live shells step one per request). */
static bool by_phase(const gw_sale_ev_t *ev)
{
    return ev->kind == GW_SALE_EV_TICK ||
           (ev->kind == GW_SALE_EV_REG && ev->reg.kind == GW_REG_EV_REGISTER) ||
           (ev->kind == GW_SALE_EV_FAIR &&
            (ev->fair.kind == GW_FAIR_EV_ENTER || ev->fair.kind == GW_FAIR_EV_TICK));
}

void gw_sale_step(gw_sale_core_t *c, const gw_sale_ev_t *ev, int64_t now_ms, gw_sale_out_t *out)
{
    memset(out, 0, sizeof(*out));
    if (by_phase(ev))
        out->phase = gw_sale_phase(c, now_ms);
    switch (ev->kind) {
    case GW_SALE_EV_CONFIGURE:
        cfg_set(&c->cfg, &ev->cfg);
        out->phase = gw_sale_phase(c, now_ms);
        break;
    case GW_SALE_EV_TICK:
        on_tick(c, &ev->tick, now_ms, out);
        break;
    case GW_SALE_EV_REG:
        on_reg(c, &ev->reg, out);
        break;
    case GW_SALE_EV_ROOM:
        on_room(c, &ev->room, now_ms, out);
        break;
    case GW_SALE_EV_FAIR:
        on_fair(c, &ev->fair, now_ms, out);
        break;
    case GW_SALE_EV_WL:
        on_wl(c, &ev->wl, now_ms, out);
        break;
    }
}
