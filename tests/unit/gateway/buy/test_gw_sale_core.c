/* gw_sale_core (a sale's fairness as one state machine, no I/O): the phase
 * sequence of each kind of sale (plain, registration with a lottery, a
 * waiting room with its pre-queue, a lottery whose losers wait for
 * leftovers), the answers an event gets outside its phase (those the routes
 * and the cores give), and a restart whose records read back lead to the
 * same phase and the same answers. */
#include "common/cm_err.h"
#include "gateway/buy/gw_sale_core.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* clang-format off: cmocka needs the headers above first */
#include <cmocka.h>
/* clang-format on */

#define N 8
#define SEED 0x5eedf00dull

static const cm_hash_key_t KEY = {0x1111, 0x2222}, RSEED = {0x3333, 0x4444};

/* The shells' side of one sale: the cores they keep, the lottery's entries,
 * the records each store would hold. */
typedef struct sale {
    gw_sale_core_t s;
    gw_fair_core_t fair;
    gw_room_core_t room;
    gw_reg_core_t reg;
    uint32_t perm[N];
    uint64_t key[N];
    uint8_t state[N];
    size_t n;
    int64_t stock;
    char fairlog[32][64]; /* the lottery's records, as a restart reads them back */
    size_t nfair;
    char roomlog[32][96];
    size_t nroom;
} sale_t;

static gw_sale_out_t step(sale_t *x, gw_sale_ev_t ev, int64_t now)
{
    gw_sale_out_t out;
    gw_sale_step(&x->s, &ev, now, &out);
    return out;
}

static void sale_init(sale_t *x, gw_sale_cfg_t cfg, int64_t stock)
{
    memset(x, 0, sizeof(*x));
    x->fair.perm = x->perm;
    gw_fair_core_init(&x->fair);
    gw_room_core_init(&x->room);
    gw_room_core_reset(&x->room, &KEY, &RSEED);
    snprintf(x->roomlog[x->nroom++], 96, "K %016llx %016llx %016llx %016llx", 0x1111ull, 0x2222ull,
             0x3333ull, 0x4444ull);
    gw_reg_core_init(&x->reg);
    gw_sale_core_init(&x->s, &x->fair, &x->room, &x->reg);
    x->stock = stock;
    gw_sale_out_t o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_CONFIGURE, .cfg = cfg}, 0);
    assert_false(o.refused);
}

static void sale_deinit(sale_t *x)
{
    gw_room_core_deinit(&x->room);
}

static gw_sale_phase_t phase(const sale_t *x, int64_t now)
{
    return gw_sale_phase(&x->s, now);
}

/*---- the shells' parts, as the live ones perform them ----*/

/* A registration of a person the set does not hold: its answer. */
static int reg(sale_t *x, bool found, int64_t now)
{
    gw_sale_out_t o = step(
        x,
        (gw_sale_ev_t){.kind = GW_SALE_EV_REG, .reg = {.kind = GW_REG_EV_REGISTER, .found = found}},
        now);
    if (o.reg.actions & GW_REG_DO_APPEND)
        o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_REG, .reg = {.kind = GW_REG_EV_APPENDED}},
                 now);
    assert_true(o.reg.answered);
    return o.reg.answer;
}

/* An entry of a new person with key k: its answer (the entry added and logged when ENTERED). */
static gw_fair_answer_t enter(sale_t *x, uint64_t k, int64_t now)
{
    gw_sale_out_t o = step(x,
                           (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR,
                                          .fair = {.kind = GW_FAIR_EV_ENTER, .entrants = x->n}},
                           now);
    if (o.fair.actions & GW_FAIR_DO_APPEND_ENTRY) {
        assert_false(o.refused);
        o = step(x,
                 (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTRY_LOGGED}},
                 now);
        assert_int_equal(o.fair.actions, GW_FAIR_DO_ADD_ENTRY);
        snprintf(x->fairlog[x->nfair++], 64, "E %llu", (unsigned long long)k);
        x->key[x->n++] = k;
    }
    return o.fair.answer;
}

/* Performs a lottery output, and every output its replies bring, to the end. */
static void fair_run(sale_t *x, gw_fair_out_t fo, int64_t now)
{
    for (;;) {
        gw_fair_ev_t ev = {0};
        bool reply = true; /* the output asks for a store's reply */
        if (fo.actions & GW_FAIR_DO_SET_STATE)
            x->state[fo.entry] = fo.state;
        if (fo.actions & GW_FAIR_DO_SEED) {
            snprintf(x->fairlog[x->nfair++], 64, "D %llu %zu", (unsigned long long)x->fair.seed,
                     x->fair.ndraw);
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE};
        } else if (fo.actions & GW_FAIR_DO_ACCEPT) {
            bool won = x->stock > 0;
            x->stock -= won;
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_ACCEPTED,
                                .acc = won ? GW_FAIR_ACC_WON : GW_FAIR_ACC_SOLD_OUT,
                                .sold_out = x->stock == 0};
        } else if (fo.actions & GW_FAIR_DO_DRAW) {
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = x->state[fo.entry]};
        } else if (fo.actions & GW_FAIR_DO_LOG_SOLD_OUT) {
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_SOLD_OUT_LOGGED};
        } else if (fo.actions & GW_FAIR_DO_LOG_OUTCOMES) {
            for (size_t i = 0; i < x->n; i++)
                if (x->state[i] == GW_ENTRY_WON)
                    snprintf(x->fairlog[x->nfair++], 64, "W %zu", i);
            snprintf(x->fairlog[x->nfair++], 64, "F%s", fo.waitlist ? " w" : "");
            ev = (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW_LOGGED};
        } else {
            reply = false;
        }
        if (fo.actions & GW_FAIR_DO_ORDER)
            gw_fair_core_order(&x->fair, x->key);
        if (fo.actions & GW_FAIR_DO_LEFTOVERS)
            for (size_t i = 0; i < x->fair.ndraw; i++)
                if (x->state[i] == GW_ENTRY_ENTERED)
                    x->state[i] = (uint8_t)gw_fair_core_loser(&x->fair, false);
        if (!reply) {
            /* nothing to answer: the next tick moves the draw on */
            if (fo.actions & GW_FAIR_DO_PUBLISH)
                return;
            fo = step(x,
                      (gw_sale_ev_t){
                          .kind = GW_SALE_EV_FAIR,
                          .fair = {.kind = GW_FAIR_EV_TICK, .entrants = x->n, .rnd = SEED}},
                      now)
                     .fair;
            if (!fo.actions)
                return;
            continue;
        }
        fo = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = ev}, now).fair;
    }
}

/* The lottery thread's tick at now (the machine says the draw is due),
 * then the draw's steps until it is done. */
static void draw(sale_t *x, int64_t now)
{
    gw_sale_out_t o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, now);
    assert_true(o.actions & GW_SALE_DO_DRAW);
    o = step(x,
             (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR,
                            .fair = {.kind = GW_FAIR_EV_TICK, .entrants = x->n, .rnd = SEED}},
             now);
    assert_true(o.fair.actions & GW_FAIR_DO_SEED);
    fair_run(x, o.fair, now);
    /* drawn: the lottery's parts are due no more, the leftovers are if anyone waits */
    bool waits = false;
    for (size_t i = 0; i < x->n; i++)
        waits = waits || x->state[i] == GW_ENTRY_WAITLISTED;
    o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = waits}}, now);
    assert_false(o.actions & (GW_SALE_DO_ENTRIES | GW_SALE_DO_DRAW));
    assert_int_equal((o.actions & GW_SALE_DO_WL) != 0, waits && now < x->s.cfg.ends_at_ms);
}

static size_t count(const sale_t *x, gw_entry_state_t st)
{
    size_t k = 0;
    for (size_t i = 0; i < x->n; i++)
        k += x->state[i] == st;
    return k;
}

static bool anyone_waits(const sale_t *x)
{
    return count(x, GW_ENTRY_WAITLISTED) > 0;
}

/* A room's join of person at now: the decision; the records written. */
static int join(sale_t *x, const char *person, int64_t now, gw_wr_join_t *a)
{
    gw_room_join_ev_t j = {.person = person, .len = strlen(person), .take = true};
    gw_sale_out_t o = step(
        x, (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_JOIN, .join = j}},
        now);
    if (o.room.rc == GW_ROOM_SEAL) {
        o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_SEAL}},
                 now);
        for (size_t i = 0; i < o.room.recs.nrec; i++)
            gw_room_rec_format(&o.room.recs.rec[i], x->roomlog[x->nroom++], 96);
        o = step(
            x,
            (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_JOIN, .join = j}},
            now);
    }
    for (size_t i = 0; i < o.room.recs.nrec; i++) {
        gw_room_rec_format(&o.room.recs.rec[i], x->roomlog[x->nroom++], 96);
        step(x,
             (gw_sale_ev_t){
                 .kind = GW_SALE_EV_ROOM,
                 .room = {.kind = GW_ROOM_EV_WRITTEN, .rec = &o.room.recs.rec[i], .ok = true}},
             now);
    }
    *a = o.room.answer;
    return o.room.rc;
}

/*---- the phase sequences ----*/

static void test_plain_sale(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, (gw_sale_cfg_t){.starts_at_ms = 1000, .ends_at_ms = 5000}, 10);
    assert_int_equal(phase(&x, 999), GW_SALE_PH_BEFORE);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 999)), GW_FAIR_TOO_EARLY);
    assert_int_equal(phase(&x, 1000), GW_SALE_PH_OPEN);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 4999)), GW_FAIR_OPEN);
    assert_int_equal(phase(&x, 5000), GW_SALE_PH_ENDED);
    /* a sale without fairness takes no entry, registration or join */
    assert_int_equal(enter(&x, 1, 1000), GW_FAIR_A_CLOSED);
    assert_int_equal(reg(&x, false, 1000), GW_REG_GONE);
    gw_wr_join_t a;
    assert_int_equal(join(&x, "p", 1000, &a), CM_ENOTFOUND);
    sale_deinit(&x);
    /* a sale with no start is open from the first moment */
    sale_init(&x, (gw_sale_cfg_t){0}, 1);
    assert_int_equal(phase(&x, 0), GW_SALE_PH_OPEN);
    sale_deinit(&x);
}

static const gw_sale_cfg_t REG_LOTTERY = {.reg_opens_ms = 100,
                                          .reg_closes_ms = 200,
                                          .reg_cap = 2,
                                          .starts_at_ms = 1000,
                                          .fair_early_ms = 100,
                                          .fair_window_ms = 500,
                                          .ends_at_ms = 100000};

static void test_registration_lottery(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, REG_LOTTERY, 1);
    assert_int_equal(phase(&x, 99), GW_SALE_PH_BEFORE);
    assert_int_equal(reg(&x, false, 99), GW_REG_SHUT); /* 403: not open yet */
    assert_int_equal(phase(&x, 100), GW_SALE_PH_REGISTRATION);
    assert_int_equal(reg(&x, false, 100), GW_REG_ADDED);
    assert_int_equal(reg(&x, true, 150), GW_REG_ALREADY);
    assert_int_equal(reg(&x, false, 199), GW_REG_ADDED);
    assert_int_equal(reg(&x, false, 199), GW_REG_FULL); /* the cap, 409 */
    assert_int_equal(reg(&x, false, 200), GW_REG_SHUT); /* 403: closed */
    /* between the registration and the entry window: a buy is 425 */
    assert_int_equal(phase(&x, 200), GW_SALE_PH_BEFORE);
    assert_int_equal(enter(&x, 1, 899), GW_FAIR_A_NOT_OPEN);
    assert_int_equal(phase(&x, 900), GW_SALE_PH_ENTRY);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 900)), GW_FAIR_ENTER);
    assert_int_equal(enter(&x, 11, 900), GW_FAIR_A_ENTERED);
    assert_int_equal(enter(&x, 22, 1499), GW_FAIR_A_ENTERED);
    assert_int_equal(enter(&x, 33, 1500), GW_FAIR_A_CLOSED); /* 503: the draw runs */
    assert_int_equal(phase(&x, 1500), GW_SALE_PH_DRAW);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 1500)), GW_FAIR_DRAWING);
    assert_int_equal(reg(&x, false, 1500), GW_REG_SHUT);
    /* a tick before the close: the entries' part only, no draw */
    gw_sale_out_t o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 150);
    assert_int_equal(o.actions, GW_SALE_DO_ENTRIES);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 1499);
    assert_int_equal(o.actions, GW_SALE_DO_ENTRIES);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 1500);
    assert_int_equal(o.actions, GW_SALE_DO_ENTRIES | GW_SALE_DO_DRAW);
    /* nor the draw thread's own lottery tick (the live shell's): the window is the machine's */
    o = step(&x,
             (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR,
                            .fair = {.kind = GW_FAIR_EV_TICK, .entrants = x.n, .rnd = SEED}},
             1499);
    assert_int_equal(o.fair.actions, 0);
    draw(&x, 1500);
    assert_int_equal(count(&x, GW_ENTRY_WON), 1);
    assert_int_equal(count(&x, GW_ENTRY_WAITLISTED), 0); /* no waitlist configured: lost */
    assert_int_equal(count(&x, GW_ENTRY_LOST), 1);
    assert_int_equal(phase(&x, 1500), GW_SALE_PH_OPEN);
    assert_int_equal(phase(&x, 100000), GW_SALE_PH_ENDED);
    sale_deinit(&x);
}

static const gw_sale_cfg_t ROOM = {.starts_at_ms = 1000, .room_rate = 10, .ends_at_ms = 100000};

static void test_room_prequeue(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, ROOM, 5);
    assert_int_equal(phase(&x, 0), GW_SALE_PH_PREQUEUE);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 0)), GW_FAIR_TOO_EARLY);
    gw_wr_join_t a;
    const char *who[] = {"ann", "bob", "cy"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(join(&x, who[i], 500, &a), GW_ROOM_PREQUEUE);
        assert_true(a.prequeue);
    }
    assert_int_equal(x.room.npre, 3);
    assert_false(atomic_load(&x.room.sealed));
    /* a tick before the start keeps the room's store only; the first at it admits: seal */
    gw_sale_out_t o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 999);
    assert_int_equal(o.actions, GW_SALE_DO_ROOM);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 1000);
    assert_int_equal(o.actions, GW_SALE_DO_ROOM | GW_SALE_DO_ADMIT);
    assert_int_equal(o.phase, GW_SALE_PH_ADMISSION);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_SEAL}}, 1000);
    assert_int_equal(o.room.recs.rec[0].kind, GW_ROOM_REC_S);
    assert_true(o.room.recs.sync); /* the ranks are durable before any is answered */
    gw_room_rec_format(&o.room.recs.rec[0], x.roomlog[x.nroom++], 96);
    /* each pre-queued person holds a rank in 1..3; a later arrival is after them */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(join(&x, who[i], 1000, &a), GW_ROOM_ANSWERED);
        assert_true(a.pos >= 1 && a.pos <= 3);
    }
    assert_int_equal(join(&x, "dee", 1000, &a), GW_ROOM_ANSWERED);
    assert_int_equal(a.pos, 4);
    /* the front moves at the rate: a tick of a second admits through 10 */
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 2000);
    assert_true(o.actions & GW_SALE_DO_ADMIT);
    o = step(&x,
             (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM,
                            .room = {.kind = GW_ROOM_EV_TICK, .eff_per_s = 10, .dt_ms = 1000}},
             2000);
    assert_int_equal(o.room.recs.rec[0].kind, GW_ROOM_REC_F);
    assert_int_equal(phase(&x, 99999), GW_SALE_PH_ADMISSION);
    assert_int_equal(phase(&x, 100000), GW_SALE_PH_ENDED);
    /* from the end the room admits nothing: its store's upkeep only */
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 100000);
    assert_int_equal(o.actions, GW_SALE_DO_ROOM);
    /* the room takes no entry */
    assert_int_equal(enter(&x, 1, 1000), GW_FAIR_A_CLOSED);
    sale_deinit(&x);
}

/* The terms of a sale that ended (with no start: started at once) and a room's
 * rate: what a fleet's gateway holds for a moment when a sale, deleted, is
 * created again under its id with a room and the room's rate reaches it before
 * the new terms (integration.103-room-fleet). Its tick must not seal the new
 * room: only the terms' start may, and only before their end. */
static void test_room_ended_terms(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, (gw_sale_cfg_t){.room_rate = 100, .ends_at_ms = 5000}, 5);
    gw_sale_out_t o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 4999);
    assert_int_equal(o.actions, GW_SALE_DO_ROOM | GW_SALE_DO_ADMIT);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 6200);
    assert_int_equal(o.actions, GW_SALE_DO_ROOM);
    assert_int_equal(o.phase, GW_SALE_PH_ENDED);
    sale_deinit(&x);
}

/* A sale with a room and a lottery (docs/design.md, "Room and lottery";
 * integration.101-prequeue): before the entry window the room pre-queues its
 * joins; the window takes entries without a token while the room seals at
 * the start; after the draw the room governs the first-come buys. */
static void test_room_lottery(void **state)
{
    (void)state;
    gw_sale_cfg_t cfg = ROOM;
    cfg.fair_window_ms = 500;
    cfg.fair_early_ms = 100;
    sale_t x;
    sale_init(&x, cfg, 5);
    assert_int_equal(phase(&x, 0), GW_SALE_PH_PREQUEUE);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 0)), GW_FAIR_TOO_EARLY);
    gw_wr_join_t a;
    assert_int_equal(join(&x, "ann", 500, &a), GW_ROOM_PREQUEUE);
    assert_int_equal(enter(&x, 1, 500), GW_FAIR_A_NOT_OPEN);
    /* the window: entries taken, joins still pre-queued until the start */
    assert_int_equal(phase(&x, 900), GW_SALE_PH_ENTRY);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 900)), GW_FAIR_ENTER);
    assert_int_equal(enter(&x, 1, 900), GW_FAIR_A_ENTERED);
    assert_int_equal(join(&x, "bob", 950, &a), GW_ROOM_PREQUEUE);
    gw_sale_out_t o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 999);
    assert_int_equal(o.actions, GW_SALE_DO_ENTRIES | GW_SALE_DO_ROOM);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 1000);
    assert_int_equal(o.actions, GW_SALE_DO_ENTRIES | GW_SALE_DO_ROOM | GW_SALE_DO_ADMIT);
    assert_int_equal(o.phase, GW_SALE_PH_ENTRY);
    assert_int_equal(phase(&x, 1500), GW_SALE_PH_DRAW);
    /* drawn: the room admits the first-come buys (a buy needs its token), after
     * the leftovers if the draw's losers wait */
    assert_int_equal(gw_sale_phase_at(&cfg, true, false, 2000), GW_SALE_PH_ADMISSION);
    assert_int_equal(gw_sale_buy_phase(GW_SALE_PH_ADMISSION), GW_FAIR_OPEN);
    assert_int_equal(gw_sale_phase_at(&cfg, true, true, 2000), GW_SALE_PH_LEFTOVERS);
    assert_int_equal(gw_sale_phase_at(&cfg, true, false, 100000), GW_SALE_PH_ENDED);
    sale_deinit(&x);
}

static const gw_sale_cfg_t LOTTERY_WL = {.starts_at_ms = 1000,
                                         .fair_early_ms = 100,
                                         .fair_window_ms = 500,
                                         .ends_at_ms = 100000,
                                         .waitlist = true};

/* A leftovers walk at now with left units: promotes the waiters that fit. */
static void walk(sale_t *x, int64_t left, int64_t now)
{
    gw_sale_out_t o =
        step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = anyone_waits(x)}}, now);
    assert_true(o.actions & GW_SALE_DO_WL);
    o = step(x, (gw_sale_ev_t){.kind = GW_SALE_EV_WL, .wl = {.kind = GW_WL_EV_TICK, .left = left}},
             now);
    assert_true(o.wl.actions & GW_WL_DO_WALK);
    o = step(x,
             (gw_sale_ev_t){.kind = GW_SALE_EV_WL,
                            .wl = {.kind = GW_WL_EV_WALK, .left = left, .ndraw = x->fair.ndraw}},
             now);
    while (!(o.wl.actions & GW_WL_DO_PASS_END)) {
        size_t i = x->perm[o.wl.pos];
        if (o.wl.actions & GW_WL_DO_LOOK) {
            o = step(x,
                     (gw_sale_ev_t){.kind = GW_SALE_EV_WL,
                                    .wl = {.kind = GW_WL_EV_ENTRY,
                                           .waitlisted = x->state[i] == GW_ENTRY_WAITLISTED,
                                           .qty = 1}},
                     now);
        } else {
            assert_true(o.wl.actions & GW_WL_DO_PROMOTE);
            x->state[i] = GW_ENTRY_WON;
            o = step(x,
                     (gw_sale_ev_t){
                         .kind = GW_SALE_EV_WL,
                         .wl = {.kind = GW_WL_EV_PROMOTED, .result = GW_WL_WON, .left = --left}},
                     now);
        }
    }
}

static void test_lottery_waitlist(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, LOTTERY_WL, 1);
    assert_int_equal(phase(&x, 899), GW_SALE_PH_BEFORE);
    for (uint64_t k = 1; k <= 4; k++)
        assert_int_equal(enter(&x, k * 7919, 1000), GW_FAIR_A_ENTERED);
    draw(&x, 1500);
    assert_int_equal(count(&x, GW_ENTRY_WON), 1);
    assert_int_equal(count(&x, GW_ENTRY_WAITLISTED), 3);
    assert_int_equal(phase(&x, 1500), GW_SALE_PH_LEFTOVERS);
    assert_int_equal(gw_sale_buy_phase(phase(&x, 1500)), GW_FAIR_OPEN);
    /* a freed unit goes to the first waiter in draw order */
    walk(&x, 1, 2000);
    assert_int_equal(count(&x, GW_ENTRY_WON), 2);
    assert_int_equal(x.state[x.perm[1]], GW_ENTRY_WON);
    /* two more: nobody waits, first-come opens */
    walk(&x, 2, 3000);
    assert_int_equal(count(&x, GW_ENTRY_WAITLISTED), 0);
    gw_sale_out_t o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 3001);
    assert_int_equal(o.phase, GW_SALE_PH_OPEN);
    assert_false(o.actions & GW_SALE_DO_WL);
    sale_deinit(&x);

    /* the sale's end loses the waitlisted */
    sale_init(&x, LOTTERY_WL, 1);
    for (uint64_t k = 1; k <= 3; k++)
        enter(&x, k, 1000);
    draw(&x, 1500);
    assert_int_equal(phase(&x, 1500), GW_SALE_PH_LEFTOVERS);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = true}}, 99999);
    assert_true(o.actions & GW_SALE_DO_WL);
    /* the end is the machine's: the leftovers' tick ends them whatever the stock */
    gw_sale_ev_t wt = {.kind = GW_SALE_EV_WL, .wl = {.kind = GW_WL_EV_TICK, .left = 0}};
    o = step(&x, wt, 99999);
    assert_int_equal(o.wl.actions, 0);
    o = step(&x, wt, 100000);
    assert_int_equal(o.wl.actions, GW_WL_DO_END);
    wt.wl.left = 5;
    wt.wl.pending = true;
    o = step(&x, wt, 100001);
    assert_int_equal(o.wl.actions, GW_WL_DO_END);
    assert_int_equal(phase(&x, 100000), GW_SALE_PH_ENDED);
    /* the shell loses its waiters; the next tick finds nobody waiting */
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK, .tick = {.waiting = true}}, 100001);
    assert_true(o.actions & GW_SALE_DO_WL);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, 100001);
    assert_false(o.actions & GW_SALE_DO_WL);
    assert_false(x.s.leftovers);
    sale_deinit(&x);

    /* a draw that runs at the sale's end makes its losers lose */
    sale_init(&x, LOTTERY_WL, 1);
    for (uint64_t k = 1; k <= 3; k++)
        enter(&x, k, 1000);
    draw(&x, 100000);
    assert_int_equal(count(&x, GW_ENTRY_LOST), 2);
    assert_int_equal(phase(&x, 100000), GW_SALE_PH_ENDED);
    sale_deinit(&x);
}

/*---- a restart: the records read back lead to the same phase ----*/

/* The lottery's log fed back to a new sale core (gw_lottery.c's load). */
static void fair_replay(sale_t *y, const sale_t *x, int64_t now)
{
    for (size_t i = 0; i < x->nfair; i++) {
        const char *l = x->fairlog[i];
        gw_fair_ev_t ev = {.kind = GW_FAIR_EV_RECORD, .rec = (gw_fair_rec_kind_t)l[0]};
        unsigned long long a = 0;
        size_t b = 0;
        switch (l[0]) {
        case 'E':
            sscanf(l, "E %llu", &a);
            ev.found = GW_FAIR_FOUND_NONE;
            break;
        case 'D':
            sscanf(l, "D %llu %zu", &a, &b);
            ev.seed = a;
            ev.entrants = b;
            break;
        case 'W':
            sscanf(l, "W %zu", &b);
            ev.within = true;
            break;
        case 'F':
            ev.waitlist = l[1] == ' ';
            break;
        }
        gw_sale_out_t o = step(y, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = ev}, now);
        assert_false(o.refused);
        if (o.fair.actions & GW_FAIR_DO_ADD_ENTRY)
            y->key[y->n++] = a;
        if (o.fair.actions & GW_FAIR_DO_SET_STATE)
            y->state[b] = o.fair.state;
    }
    gw_sale_out_t o =
        step(y, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_LOADED}}, now);
    fair_run(y, o.fair, now);
}

static void test_restart_same_phase(void **state)
{
    (void)state;
    /* a lottery with a waitlist: drawn, its losers waiting */
    sale_t x, y;
    sale_init(&x, LOTTERY_WL, 2);
    for (uint64_t k = 1; k <= 5; k++)
        enter(&x, k * 104729, 1000);
    draw(&x, 1500);
    assert_int_equal(phase(&x, 50000), GW_SALE_PH_LEFTOVERS);
    sale_init(&y, LOTTERY_WL, 0);
    fair_replay(&y, &x, 50000);
    assert_int_equal(phase(&y, 50000), GW_SALE_PH_LEFTOVERS);
    assert_int_equal(y.fair.seed, x.fair.seed);
    assert_memory_equal(y.perm, x.perm, sizeof(uint32_t) * x.n);
    assert_memory_equal(y.state, x.state, x.n);
    sale_deinit(&x);
    sale_deinit(&y);

    /* a lottery cut before its draw: the same window, the draw again at its tick */
    sale_init(&x, REG_LOTTERY, 1);
    enter(&x, 5, 1000);
    enter(&x, 6, 1000);
    sale_init(&y, REG_LOTTERY, 1);
    fair_replay(&y, &x, 1200);
    assert_int_equal(phase(&y, 1400), GW_SALE_PH_ENTRY);
    assert_int_equal(phase(&y, 1500), GW_SALE_PH_DRAW);
    draw(&x, 1500); /* the draw the crash cut, and the restart's: the same winner */
    draw(&y, 1500);
    assert_memory_equal(y.state, x.state, x.n);
    assert_int_equal(phase(&y, 1500), GW_SALE_PH_OPEN);
    sale_deinit(&x);
    sale_deinit(&y);

    /* a room sealed with its pre-queue: the same ranks after its log is read back */
    sale_init(&x, ROOM, 5);
    gw_wr_join_t a, b;
    join(&x, "ann", 500, &a);
    join(&x, "bob", 500, &a);
    join(&x, "ann", 1000, &a); /* seals */
    join(&x, "cy", 1000, &b);
    sale_init(&y, ROOM, 5);
    for (size_t i = 0; i < x.nroom; i++)
        step(&y,
             (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM,
                            .room = {.kind = GW_ROOM_EV_REPLAY, .line = x.roomlog[i], .now_s = 1}},
             1000);
    step(&y, (gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_LOADED}}, 1000);
    assert_true(atomic_load(&y.room.sealed));
    assert_int_equal(phase(&y, 1000), GW_SALE_PH_ADMISSION);
    gw_wr_join_t a2, b2;
    assert_int_equal(join(&y, "ann", 1000, &a2), GW_ROOM_ANSWERED);
    assert_int_equal(join(&y, "cy", 1000, &b2), GW_ROOM_ANSWERED);
    assert_int_equal(a2.pos, a.pos);
    assert_int_equal(b2.pos, b.pos);
    sale_deinit(&x);
    sale_deinit(&y);

    /* registration: the persons read back are found, the cap holds */
    sale_init(&x, REG_LOTTERY, 1);
    const char *lines[] = {"ann", "bob"};
    for (size_t i = 0; i < 2; i++) {
        gw_sale_out_t o =
            step(&x,
                 (gw_sale_ev_t){.kind = GW_SALE_EV_REG,
                                .reg = {.kind = GW_REG_EV_LINE, .line = lines[i], .len = 3}},
                 150);
        assert_int_equal(o.reg.actions, GW_REG_DO_ADD);
    }
    assert_int_equal(phase(&x, 150), GW_SALE_PH_REGISTRATION);
    assert_int_equal(reg(&x, true, 150), GW_REG_ALREADY);
    assert_int_equal(reg(&x, false, 150), GW_REG_FULL);
    sale_deinit(&x);
}

/*---- answers outside the phase ----*/

static void test_out_of_phase(void **state)
{
    (void)state;
    sale_t x;
    sale_init(&x, REG_LOTTERY, 1);
    /* an entry before the window: 425; after: 503; neither reaches the core */
    gw_sale_out_t o =
        step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTER}}, 150);
    assert_true(o.refused);
    assert_int_equal(o.fair.answer, GW_FAIR_A_NOT_OPEN);
    assert_int_equal(o.fair.actions, 0);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTER}}, 2000);
    assert_true(o.refused);
    assert_int_equal(o.fair.answer, GW_FAIR_A_CLOSED);
    /* the entry window edges: starts - early opens, starts + window closes */
    assert_int_equal(enter(&x, 1, 900), GW_FAIR_A_ENTERED);
    o = step(&x, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTER}}, 1500);
    assert_int_equal(o.fair.answer, GW_FAIR_A_CLOSED);
    /* a registration outside its window: 403, and the core's count is untouched */
    assert_int_equal(reg(&x, false, 2000), GW_REG_SHUT);
    assert_int_equal(x.reg.n, 0);
    /* a sale with a lottery and no registration: 404 */
    sale_t y;
    gw_sale_cfg_t c = REG_LOTTERY;
    c.reg_opens_ms = c.reg_closes_ms = 0;
    sale_init(&y, c, 1);
    assert_int_equal(reg(&y, false, 150), GW_REG_GONE);
    /* a room event of a sale without a room: 404 */
    gw_wr_join_t a;
    assert_int_equal(join(&y, "ann", 1000, &a), CM_ENOTFOUND);
    /* a store's reply is decided whatever the phase: an entry logged after the close */
    sale_t z;
    sale_init(&z, REG_LOTTERY, 1);
    o = step(&z, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTER}}, 1499);
    assert_true(o.fair.actions & GW_FAIR_DO_APPEND_ENTRY);
    o = step(&z, (gw_sale_ev_t){.kind = GW_SALE_EV_FAIR, .fair = {.kind = GW_FAIR_EV_ENTRY_LOGGED}},
             1500);
    assert_false(o.refused);
    assert_int_equal(o.fair.answer, GW_FAIR_A_ENTERED);
    assert_int_equal(gw_sale_phase_name(GW_SALE_PH_LEFTOVERS)[0], 'l');
    sale_deinit(&x);
    sale_deinit(&y);
    sale_deinit(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_sale),         cmocka_unit_test(test_registration_lottery),
        cmocka_unit_test(test_room_prequeue),      cmocka_unit_test(test_room_lottery),
        cmocka_unit_test(test_room_ended_terms),   cmocka_unit_test(test_lottery_waitlist),
        cmocka_unit_test(test_restart_same_phase), cmocka_unit_test(test_out_of_phase),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
