/*
 * The start-window lottery's decisions (gw_fair_core.h): the rules of one
 * sale's lottery from its first entry to its last winner, in one file, with
 * no I/O. The shell around it is gw_lottery.c (gw_fair_enter,
 * gw_fair__log_load, gw_fair__cut_winners, gw_fair__run_draw); the simulator
 * runs both (sim/sim_world.c).
 *
 * The rules:
 *   - one entry per person: a person's second entry gets the first back (the
 *     same account) or a 409 (another account's); an entry is answered only
 *     once its record is written
 *   - at most max_entries entries per sale (each is held in memory): a new
 *     person past it is refused (409 lottery_full), a person's own entry
 *     still comes back
 *   - no entry after the window closes: the draw takes the entrants there
 *     are when its seed is drawn, and no more (the frozen entrants)
 *   - the seed is durable before any winner is drawn with it: a seed lost
 *     to a power loss would draw other winners after these got orders; a
 *     failed fdatasync of it draws again (a new seed, no winner yet)
 *   - the order is gw_fair_order of the seed and the frozen entrants' keys
 *     alone, so a restart, or another gateway, computes the same winners
 *   - in that order each entrant is accepted while the stock lasts; once it
 *     is gone the rest are not tried: they lose, or (the sale still on)
 *     wait in draw order for units freed later (the leftovers)
 *   - an unreachable inventory stops the draw where it is; the next tick
 *     resumes it at the same position
 *   - the draw is done once its winners' records and its end's are
 *     durable, not before: a draw taken as done without them is resumed by
 *     a restart, and could give an order to an entrant told it lost
 *   - a restart resumes a draw cut by a crash with the seed it logged, over
 *     the entrants logged before it; its winners are those whose records
 *     say so, or whose orders the spool holds (they were accepted)
 *   - the stock running out is a record of its own, durable before any
 *     entrant after it is decided: a restart that resumes a cut draw knows
 *     the rest were not tried, and never lets one told it lost win with
 *     units that came back meanwhile (those are the leftovers')
 *   - an entrant's outcome is answered only once the record covering it is
 *     durable: the draw decides many entrants between two fdatasyncs (the
 *     "O" record's, the end's), and one a power loss lost would be decided
 *     again by the resumed draw, perhaps otherwise (a loser for cause may
 *     win when what refused it is gone); so the positions decided since the
 *     last durable record read as still being drawn, and no entrant costs
 *     an fdatasync of its own
 *   - a restart that read a hole (records lost) between the seed's record
 *     and the end's takes the draw as decided but not done: its winners
 *     are those whose records say so or whose orders the spool holds, and
 *     their records and the end's are written again first
 *   - whether the losers wait for leftovers is decided once (at the draw's
 *     first step, or by the first end record read): a retried end record
 *     never flips it
 */
#include "gateway/buy/gw_fair_core.h"

#include "common/cm_plant.h"

enum {
    STAGE_ENTRY = 0,     /* taking entries */
    STAGE_ENTRY_LOGGING, /* an entry's record is being written */
    STAGE_SEEDING,       /* the seed's record is being made durable */
    STAGE_RESYNC,        /* the log read back is being made durable */
    STAGE_DRAWING,       /* the frozen entrants, in draw order */
    STAGE_ACCEPTING,     /* an entrant's accept */
    STAGE_SOLD_OUT,      /* the sold-out record is being made durable */
    STAGE_ENDING,        /* the outcomes' records are being made durable */
    STAGE_DONE,
};

static const char *const answer_names[GW_FAIR_A_COUNT] = {
#define XX(n, s) [GW_FAIR_A_##n] = s,
    GW_FAIR_ANSWERS(XX)
#undef XX
};

const char *gw_fair_answer_name(gw_fair_answer_t a)
{
    return (unsigned)a < GW_FAIR_A_COUNT ? answer_names[a] : "?";
}

static const char *const entry_state_names[GW_ENTRY_STATE_COUNT] = {
#define XX(n, s) [GW_ENTRY_##n] = s,
    GW_ENTRY_STATES(XX)
#undef XX
};

const char *gw_entry_state_name(gw_entry_state_t s)
{
    return (unsigned)s < GW_ENTRY_STATE_COUNT ? entry_state_names[s] : "entered";
}

void gw_fair_core_init(gw_fair_core_t *c)
{
    uint32_t *perm = c->perm; /* the shell's buffer stays the shell's */
    *c = (gw_fair_core_t){.perm = perm};
}

void gw_fair_core_order(gw_fair_core_t *c, const uint64_t *keys)
{
    gw_fair_order(keys, c->ndraw, c->seed, c->perm);
}

gw_entry_state_t gw_fair_core_loser(const gw_fair_core_t *c, bool lost_for_cause)
{
    return c->draw_wl == 2 && !lost_for_cause ? GW_ENTRY_WAITLISTED : GW_ENTRY_LOST;
}

bool gw_fair_core_answered(const gw_fair_core_t *c, uint32_t pos)
{
    /* planted: an outcome is answered at its decision, before the record
     * covering it is durable (the "X" written without waiting for a sync) */
    if (CM_PLANT(FAIR_OUTCOME_UNSYNCED))
        return true;
    return pos == 0 || c->lot_done || pos - 1 < c->told || pos - 1 >= c->next;
}

bool gw_fair_core_takes_spooled(const gw_fair_core_t *c)
{
    /* planted: a draw cut by a crash forgets the winners the spool holds,
     * and gives their units a second time when it resumes */
    return c->seeded && !c->lot_done && !CM_PLANT(FAIR_CUT_FORGETS);
}

static void answer(gw_fair_out_t *out, gw_fair_answer_t a)
{
    out->answer = a;
}

static void set_state(gw_fair_out_t *out, size_t entry, gw_entry_state_t st)
{
    out->actions |= GW_FAIR_DO_SET_STATE;
    out->entry = entry;
    out->state = (uint8_t)st;
}

/* The sale's entries are at their cap (the shell's memory bound). */
static bool entries_full(const gw_fair_ev_t *ev)
{
    return ev->max_entries && ev->entrants >= ev->max_entries;
}

static void on_enter(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    /* the window is the sale machine's (gw_sale_core.c): an entry outside it
     * never gets here; the draw's own progress still closes the entries */
    if (c->closed || c->lot_stage != STAGE_ENTRY) {
        answer(out, GW_FAIR_A_CLOSED);
        return;
    }
    /* planted: a person's second entry by the same account is taken as a
     * new one (two chances in the draw) */
    if (ev->found == GW_FAIR_FOUND_SAME && !CM_PLANT(FAIR_TWO_ENTRIES)) {
        answer(out, GW_FAIR_A_ALREADY);
        return;
    }
    if (ev->found == GW_FAIR_FOUND_OTHER) {
        answer(out, GW_FAIR_A_OTHER_ACCOUNT);
        return;
    }
    if (entries_full(ev)) {
        answer(out, GW_FAIR_A_FULL);
        return;
    }
    c->lot_stage = STAGE_ENTRY_LOGGING;
    out->actions = GW_FAIR_DO_APPEND_ENTRY;
}

static void on_tick(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage == STAGE_ENTRY) {
        if (c->closed)
            return;
        /* the window closed (the sale machine ticks a lottery only after it):
         * the entrants there are now are the draw's */
        c->closed = true;
        c->seed = ev->rnd;
        c->ndraw = ev->entrants;
        c->next = 0;
        c->lot_stage = STAGE_SEEDING;
        out->actions = GW_FAIR_DO_SEED;
        return;
    }
    if (c->lot_stage != STAGE_DRAWING)
        return;
    if (c->seed_unsynced) {
        c->lot_stage = STAGE_RESYNC;
        out->actions = GW_FAIR_DO_MAKE_DURABLE;
        return;
    }
    if (!c->draw_wl) /* once: a resumed or retried draw keeps it */
        c->draw_wl = ev->sale_over ? 1 : 2;
    out->waitlist = c->draw_wl == 2;
    if (c->next < c->ndraw) {
        out->actions = GW_FAIR_DO_DRAW;
        /* planted: the entrants taken in arrival order, the draw order computed and not used */
        out->entry = CM_PLANT(FAIR_ARRIVAL_ORDER) ? c->next : c->perm[c->next];
        return;
    }
    c->lot_stage = STAGE_ENDING;
    out->actions = GW_FAIR_DO_LOG_OUTCOMES;
}

static void on_seed_durable(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage == STAGE_RESYNC) {
        if (ev->rc == 0) { /* the whole log durable: what was decided before is answered */
            c->seed_unsynced = false;
            c->told = c->next;
        }
        c->lot_stage = STAGE_DRAWING;
        return;
    }
    if (c->lot_stage != STAGE_SEEDING)
        return;
    /* planted: a seed whose fdatasync failed is drawn with (a power loss
     * may lose it after its winners got orders) */
    if (ev->rc != 0 && !CM_PLANT(FAIR_SEED_UNSYNCED_DRAWS)) {
        /* nothing decided: the window's entrants, drawn again at a tick */
        c->closed = false;
        c->lot_stage = STAGE_ENTRY;
        return;
    }
    c->seeded = true;
    c->lot_stage = STAGE_DRAWING;
    out->actions = GW_FAIR_DO_ORDER;
}

static void on_draw(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage != STAGE_DRAWING || c->next >= c->ndraw || c->seed_unsynced)
        return;
    size_t i = CM_PLANT(FAIR_ARRIVAL_ORDER) ? c->next : c->perm[c->next];
    if (ev->state != GW_ENTRY_ENTERED) { /* decided already: its record, or the spool */
        if (c->told == c->next)
            c->told++;
        c->next++;
        return;
    }
    if (!c->exhausted) {
        c->lot_stage = STAGE_ACCEPTING;
        out->actions = GW_FAIR_DO_ACCEPT;
        out->entry = i;
        return;
    }
    set_state(out, i, gw_fair_core_loser(c, false));
    if (c->told == c->next) /* the stock's end is durable already: it decides this one */
        c->told++;
    c->next++;
}

/*---- the stock running out: its record (a restart resumes a cut draw knowing it) ----*/

/* The stock is gone: the entrants after this one are not tried, and none is
 * decided before the record saying so is durable. */
static void sold_out(gw_fair_core_t *c, gw_fair_out_t *out)
{
    c->exhausted = true;
    c->lot_stage = STAGE_SOLD_OUT;
    out->actions |= GW_FAIR_DO_LOG_SOLD_OUT;
}

static void on_sold_out_logged(gw_fair_core_t *c, const gw_fair_ev_t *ev)
{
    if (c->lot_stage != STAGE_SOLD_OUT)
        return;
    c->lot_stage = STAGE_DRAWING;
    /* not durable: the next tick makes the log durable before the next entrant */
    if (ev->rc != 0)
        c->seed_unsynced = true;
    else /* the winners before it committed, the "X" records before it synced with it */
        c->told = c->next;
}

/* Its record read back: the resumed draw tries nobody (planted: it is ignored,
 * and a loser may win units that came back after the crash). */
static void on_sold_out_record(gw_fair_core_t *c)
{
    if (c->seeded && !CM_PLANT(FAIR_SOLD_OUT_FORGOTTEN))
        c->exhausted = true;
}

static void on_accepted(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage != STAGE_ACCEPTING)
        return;
    c->lot_stage = STAGE_DRAWING;
    if (ev->acc == GW_FAIR_ACC_FAILED)
        return; /* the same entrant again at the next tick */
    size_t i = CM_PLANT(FAIR_ARRIVAL_ORDER) ? c->next : c->perm[c->next];
    gw_entry_state_t st;
    switch (ev->acc) {
    case GW_FAIR_ACC_WON:
        st = GW_ENTRY_WON;
        break;
    case GW_FAIR_ACC_SOLD_OUT: /* short of stock: next in line for units freed later */
        st = gw_fair_core_loser(c, false);
        break;
    default: /* refused (the units went back) or denied: lost for cause */
        st = GW_ENTRY_LOST;
        break;
    }
    set_state(out, i, st);
    c->next++;
    if (ev->sold_out && !c->exhausted)
        sold_out(c, out);
}

static void on_draw_logged(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage != STAGE_ENDING)
        return;
    if (ev->rc != 0) { /* buys wait (503); the next tick writes the records again */
        c->lot_stage = STAGE_DRAWING;
        return;
    }
    c->lot_done = true;
    c->lot_stage = STAGE_DONE;
    out->actions = GW_FAIR_DO_PUBLISH;
    out->waitlist = c->draw_wl == 2;
}

static void on_record(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    switch (ev->rec) {
    case GW_FAIR_REC_ENTRY:
        if (ev->found == GW_FAIR_FOUND_NONE) /* the person's first entry is its entry */
            out->actions = GW_FAIR_DO_ADD_ENTRY;
        return;
    case GW_FAIR_REC_SEED:
        /* planted: the logged seed is not read, the draw is seeded again */
        if (CM_PLANT(FAIR_NEW_SEED))
            return;
        /* a later seed record is a retried draw's: it decides */
        c->seeded = c->closed = true;
        c->seed = ev->seed;
        c->ndraw = ev->entrants;
        c->exhausted = false;
        c->lot_holed = false;
        return;
    case GW_FAIR_REC_HOLE:
        /* records after the seed lost (pages a failed fdatasync dropped and
         * the kernel evicted, a block a power cut zero-filled): an end read
         * after it does not say which entrants won */
        if (c->seeded && !c->lot_finished)
            c->lot_holed = true;
        return;
    case GW_FAIR_REC_SOLD_OUT:
        on_sold_out_record(c);
        return;
    case GW_FAIR_REC_WON:
        if (c->seeded && ev->within) { /* the record's entry won */
            out->actions = GW_FAIR_DO_SET_STATE;
            out->state = GW_ENTRY_WON;
        }
        return;
    case GW_FAIR_REC_END:
        c->lot_finished = true;
        if (!c->draw_wl) /* the first end record decides; a later one is a retried write */
            c->draw_wl = ev->waitlist ? 2 : 1;
        return;
    }
}

static void on_loaded(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (!c->seeded) {
        c->lot_stage = STAGE_ENTRY;
        return;
    }
    out->actions = GW_FAIR_DO_ORDER;
    c->lot_stage = STAGE_DRAWING;
    if (!c->lot_finished) {
        /* the seed may read back only from the page cache (its fdatasync
         * failed, then a kill -9): no winner is drawn with it before the log
         * is made durable */
        c->seed_unsynced = ev->rc != 0;
        return;
    }
    /* decided; done once the end is durable, else the next tick writes the
     * records again. An end read after a hole is not enough: the hole may
     * have held winners' "W" records (a failed fdatasync's pages evicted, the
     * rewrite refused, the "F" of a retry left in the page cache after them),
     * and the log's rewrite at the load copies the hole as it is. Every
     * entrant was decided, so nobody is tried again; the winners are read
     * from the spool as a cut draw's are (gw_fair_core_takes_spooled), their
     * "W" records and the end written again before the draw is done, and no
     * outcome answered before (planted: the end taken as it reads, a winner
     * the hole held told it lost) */
    out->actions |= GW_FAIR_DO_LEFTOVERS;
    c->next = c->ndraw;
    out->waitlist = c->draw_wl == 2;
    if (ev->rc == 0 && (!c->lot_holed || CM_PLANT(FAIR_HOLE_TRUSTED))) {
        c->lot_done = true;
        c->lot_stage = STAGE_DONE;
        out->actions |= GW_FAIR_DO_PUBLISH;
    }
}

/*---- a fleet's draw: the store (Redis) freezes the entrants and keeps the seed ----*/

/*
 * The fleet's rules are the same; only where they are kept differs. The
 * entries of every gateway meet in the store when the windows close
 * (ENTRIES_TAKEN: no more here); the drawer's DO_SEED freezes them there and
 * offers its seed, of which the first drawer's stays (SEED_TAKEN: a drawer
 * that resumes another's draw takes its seed and so its order); the draw
 * then runs as on one gateway, each winner recorded in the store at its
 * accept; its end is the store's done mark (LOG_OUTCOMES, DRAW_LOGGED). A
 * gateway that did not draw learns the draw from the store (DRAW_KNOWN).
 */
static void on_entries_taken(gw_fair_core_t *c)
{
    if (c->lot_stage == STAGE_ENTRY)
        c->closed = true;
}

static void on_seed_taken(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    if (c->lot_stage != STAGE_SEEDING)
        return;
    if (ev->rc != 0) { /* nothing decided here: the next tick asks again */
        c->closed = false;
        c->lot_stage = STAGE_ENTRY;
        return;
    }
    c->seed = ev->seed;
    c->ndraw = ev->entrants;
    c->next = 0;
    c->seeded = c->closed = true;
    c->lot_stage = STAGE_DRAWING;
    out->actions = GW_FAIR_DO_ORDER;
}

static void on_draw_known(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    c->seed = ev->seed;
    c->ndraw = c->next = ev->entrants;
    c->seeded = c->closed = true;
    c->draw_wl = ev->waitlist ? 2 : 1;
    c->lot_done = true;
    c->lot_stage = STAGE_DONE;
    out->actions = GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS | GW_FAIR_DO_PUBLISH;
    out->waitlist = ev->waitlist;
}

void gw_fair_core_step(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    *out = (gw_fair_out_t){.answer = GW_FAIR_A_NONE};
    switch (ev->kind) {
    case GW_FAIR_EV_ENTER:
        on_enter(c, ev, out);
        break;
    case GW_FAIR_EV_ENTRY_LOGGED:
        if (c->lot_stage != STAGE_ENTRY_LOGGING)
            break;
        c->lot_stage = STAGE_ENTRY;
        if (ev->rc != 0) {
            answer(out, GW_FAIR_A_LOG_FAILED);
            break;
        }
        answer(out, GW_FAIR_A_ENTERED);
        out->actions = GW_FAIR_DO_ADD_ENTRY;
        break;
    case GW_FAIR_EV_TICK:
        on_tick(c, ev, out);
        break;
    case GW_FAIR_EV_SEED_DURABLE:
        on_seed_durable(c, ev, out);
        break;
    case GW_FAIR_EV_DRAW:
        on_draw(c, ev, out);
        break;
    case GW_FAIR_EV_ACCEPTED:
        on_accepted(c, ev, out);
        break;
    case GW_FAIR_EV_DRAW_LOGGED:
        on_draw_logged(c, ev, out);
        break;
    case GW_FAIR_EV_RECORD:
        if (c->lot_stage == STAGE_ENTRY)
            on_record(c, ev, out);
        break;
    case GW_FAIR_EV_LOADED:
        if (c->lot_stage == STAGE_ENTRY)
            on_loaded(c, ev, out);
        break;
    case GW_FAIR_EV_SOLD_OUT_LOGGED:
        on_sold_out_logged(c, ev);
        break;
    case GW_FAIR_EV_ENTRIES_TAKEN:
        on_entries_taken(c);
        break;
    case GW_FAIR_EV_SEED_TAKEN:
        on_seed_taken(c, ev, out);
        break;
    case GW_FAIR_EV_DRAW_KNOWN:
        on_draw_known(c, ev, out);
        break;
    }
}
