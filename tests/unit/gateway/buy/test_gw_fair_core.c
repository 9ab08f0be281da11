/* gw_fair_core (the start-window lottery's decisions, no I/O): an entry's
 * answers (one per person, the window, a failed record), the seed (frozen
 * entrants, a failed fdatasync drawing again), the draw in the seed's order
 * while the stock lasts, the leftovers' order, the end made durable before
 * the draw is done, and a restart that resumes a cut draw with the same
 * winners, without a second accept of a winner the log or the spool knows. */
#include "common/cm_err.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"

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

#define OPENS 1000
#define CLOSES 2000
#define N 40
#define SEED 0x5eedf00dull

/* The shell's side of a sale: the entries, the draw order's buffer, the log. */
typedef struct sale {
    gw_fair_core_t c;
    uint32_t perm[N];
    uint64_t key[N];
    uint8_t state[N];
    unsigned qty[N];
    unsigned accepts[N]; /* how many times each entry was accepted */
    size_t n;
    int64_t stock;
    bool waitlist; /* the end record's mark */
    bool logged_won[N];
    bool sold_out_logged; /* the "O" record written */
    int sold_out_rc;      /* its fdatasync's result */
} sale_t;

static gw_fair_out_t step(gw_fair_core_t *c, gw_fair_ev_t ev, int64_t now)
{
    (void)now; /* the time a shell steps at: the core reads none (the machine's windows) */
    gw_fair_out_t out;
    gw_fair_core_step(c, &ev, &out);
    return out;
}

static void sale_init(sale_t *s, int64_t stock)
{
    memset(s, 0, sizeof(*s));
    s->c.perm = s->perm;
    gw_fair_core_init(&s->c);
    s->stock = stock;
}

/* An entry of person p (key p's hash stand-in), answered ENTERED. */
static void enter(sale_t *s, uint64_t key, unsigned qty)
{
    gw_fair_out_t o = step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTER}, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_NONE);
    assert_int_equal(o.actions, GW_FAIR_DO_APPEND_ENTRY);
    o = step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRY_LOGGED, .rc = 0}, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_ENTERED);
    assert_int_equal(o.actions, GW_FAIR_DO_ADD_ENTRY);
    s->key[s->n] = key;
    s->qty[s->n++] = qty;
}

static void order(sale_t *s)
{
    gw_fair_core_order(&s->c, s->key);
}

/* The window closes: the seed drawn and made durable, the order computed. */
static void seed(sale_t *s)
{
    gw_fair_out_t o =
        step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .entrants = s->n, .rnd = SEED}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_SEED);
    o = step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
    order(s);
}

/* Up to max entrants of the draw (SIZE_MAX: to its end), accepting against
 * the stock. Returns false if the draw wants its end logged. */
static bool draw(sale_t *s, size_t max, bool sale_over)
{
    for (size_t k = 0; k < max; k++) {
        gw_fair_out_t o =
            step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .sale_over = sale_over}, CLOSES);
        if (o.actions == GW_FAIR_DO_LOG_OUTCOMES) {
            s->waitlist = o.waitlist;
            return false;
        }
        assert_int_equal(o.actions, GW_FAIR_DO_DRAW);
        size_t i = o.entry;
        o = step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = s->state[i]}, CLOSES);
        if (o.actions & GW_FAIR_DO_ACCEPT) {
            assert_int_equal(o.entry, i);
            s->accepts[i]++;
            gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ACCEPTED};
            if (s->stock >= (int64_t)s->qty[i]) {
                s->stock -= s->qty[i];
                ev.acc = GW_FAIR_ACC_WON;
            } else {
                ev.acc = GW_FAIR_ACC_SOLD_OUT;
            }
            ev.sold_out = s->stock == 0;
            o = step(&s->c, ev, CLOSES);
        }
        if (o.actions & GW_FAIR_DO_SET_STATE) {
            assert_int_equal(o.entry, i);
            s->state[i] = o.state;
        }
        if (o.actions & GW_FAIR_DO_LOG_SOLD_OUT) {
            s->sold_out_logged = true;
            step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SOLD_OUT_LOGGED, .rc = s->sold_out_rc},
                 CLOSES);
        }
    }
    return true;
}

/* The draw's end: its records written (rc), then done if they are durable. */
static bool end(sale_t *s, int rc)
{
    gw_fair_out_t o = step(&s->c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW_LOGGED, .rc = rc}, CLOSES);
    for (size_t i = 0; i < s->n; i++)
        if (s->state[i] == GW_ENTRY_WON)
            s->logged_won[i] = true;
    return o.actions == GW_FAIR_DO_PUBLISH;
}

static void keys_init(sale_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        enter(s, 0x9e3779b97f4a7c15ull * (i + 1), 1 + (unsigned)(i % 3 == 0));
}

static void test_enter(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 10);
    /* the window is the sale machine's (test_gw_sale_core.c, test_out_of_phase) */
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ENTER};
    /* one entry per person: its own back, or another account's 409 */
    ev.found = GW_FAIR_FOUND_SAME;
    gw_fair_out_t o = step(&s.c, ev, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_ALREADY);
    assert_int_equal(o.actions, 0);
    ev.found = GW_FAIR_FOUND_OTHER;
    assert_int_equal(step(&s.c, ev, OPENS).answer, GW_FAIR_A_OTHER_ACCOUNT);
    /* a new one is answered once its record is written */
    ev.found = GW_FAIR_FOUND_NONE;
    o = step(&s.c, ev, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_NONE);
    assert_int_equal(o.actions, GW_FAIR_DO_APPEND_ENTRY);
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRY_LOGGED, .rc = CM_EIO}, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_LOG_FAILED);
    assert_int_equal(o.actions, 0);
    /* a reply nobody asked for does nothing */
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRY_LOGGED, .rc = 0}, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_NONE);
    assert_int_equal(o.actions, 0);
    enter(&s, 7, 1);
    /* after the seed no entry, whatever the clock says */
    seed(&s);
    assert_int_equal(step(&s.c, ev, OPENS).answer, GW_FAIR_A_CLOSED);
    assert_string_equal(gw_fair_answer_name(GW_FAIR_A_ALREADY), "already_entered");
}

static void test_seed(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 10);
    keys_init(&s, 3);
    gw_fair_ev_t tick = {.kind = GW_FAIR_EV_TICK, .entrants = s.n, .rnd = 1};
    assert_int_equal(step(&s.c, tick, CLOSES).actions, GW_FAIR_DO_SEED);
    assert_true(s.c.closed);
    assert_int_equal(s.c.ndraw, 3);
    /* a failed fdatasync decides nothing: entries again, a new seed later */
    gw_fair_out_t o =
        step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = CM_EIO}, CLOSES);
    assert_int_equal(o.actions, 0);
    assert_false(s.c.closed);
    assert_false(s.c.seeded);
    enter(&s, 99, 1);
    tick.entrants = s.n;
    tick.rnd = 2;
    assert_int_equal(step(&s.c, tick, CLOSES + 5).actions, GW_FAIR_DO_SEED);
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
    assert_true(s.c.seeded);
    assert_int_equal(s.c.seed, 2);
    assert_int_equal(s.c.ndraw, 4); /* frozen: the entrants at the seed */
}

/* Winners are the seed's order's, each accepted once, within the stock; the
 * draw is done only once its end is durable. */
static void test_draw(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 9);
    keys_init(&s, N);
    seed(&s);
    uint32_t want[N];
    gw_fair_order(s.key, N, SEED, want);
    assert_memory_equal(s.perm, want, sizeof(want));
    assert_false(draw(&s, SIZE_MAX, true));
    int64_t left = 9, won = 0;
    bool gone = false;
    for (size_t p = 0; p < N; p++) {
        size_t i = want[p];
        bool wins = !gone && left >= (int64_t)s.qty[i];
        if (wins) {
            left -= s.qty[i];
            won += s.qty[i];
        }
        gone = gone || left == 0;
        assert_int_equal(s.state[i], wins ? GW_ENTRY_WON : GW_ENTRY_LOST);
        assert_true(s.accepts[i] <= 1);
        if (gone && !wins) /* once the stock is gone the rest are not tried */
            assert_int_equal(s.accepts[i], 0);
    }
    assert_true(won <= 9);
    assert_false(s.waitlist); /* the sale is over: losers lose */
    /* a failed end: not done, the next tick writes it again */
    assert_false(end(&s, CM_EIO));
    assert_false(s.c.lot_done);
    assert_false(draw(&s, 1, true));
    assert_true(end(&s, 0));
    assert_true(s.c.lot_done);
    assert_int_equal(step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK}, CLOSES).actions, 0);
}

/* An unreachable inventory stops the draw at its entrant; the next tick
 * resumes there. */
static void test_accept_failed(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 100);
    keys_init(&s, 3);
    seed(&s);
    gw_fair_ev_t tick = {.kind = GW_FAIR_EV_TICK};
    gw_fair_out_t o = step(&s.c, tick, CLOSES);
    size_t first = o.entry;
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = GW_ENTRY_ENTERED}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_ACCEPT);
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ACCEPTED, .acc = GW_FAIR_ACC_FAILED}, CLOSES);
    assert_int_equal(o.actions, 0);
    assert_int_equal(s.c.next, 0);
    o = step(&s.c, tick, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_DRAW);
    assert_int_equal(o.entry, first);
    /* refused or denied: lost, never waitlisted */
    step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = GW_ENTRY_ENTERED}, CLOSES);
    o = step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ACCEPTED, .acc = GW_FAIR_ACC_REFUSED}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_SET_STATE);
    assert_int_equal(o.state, GW_ENTRY_LOST);
}

/* The sale still on: the losers wait for leftovers, in draw order (their
 * draw positions), and a sold-out accept waits too. */
static void test_leftovers(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 5);
    keys_init(&s, 12);
    seed(&s);
    assert_false(draw(&s, SIZE_MAX, false));
    assert_true(s.waitlist);
    size_t waiting = 0;
    for (size_t p = 0; p < s.n; p++) {
        uint8_t st = s.state[s.perm[p]];
        assert_true(st == GW_ENTRY_WON || st == GW_ENTRY_WAITLISTED);
        waiting += st == GW_ENTRY_WAITLISTED;
    }
    assert_true(waiting > 0);
    assert_int_equal(gw_fair_core_loser(&s.c, false), GW_ENTRY_WAITLISTED);
    assert_int_equal(gw_fair_core_loser(&s.c, true), GW_ENTRY_LOST); /* its "X": lost for cause */
    assert_true(end(&s, 0));
}

/* A restart's records: entries (a person's second ignored), the seed, the
 * winners logged; the end read makes the rest losers and, durable, done. */
static void test_load_finished(void **state)
{
    (void)state;
    gw_fair_core_t c;
    uint32_t perm[4];
    c.perm = perm;
    gw_fair_core_init(&c);
    gw_fair_out_t o;
    gw_fair_ev_t rec = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY};
    o = step(&c, rec, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ADD_ENTRY);
    rec.found = GW_FAIR_FOUND_SAME;
    assert_int_equal(step(&c, rec, 0).actions, 0);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_WON, .within = true},
             0);
    assert_int_equal(o.actions, 0); /* before a seed a "W" is nobody's */
    step(&c,
         (gw_fair_ev_t){
             .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = 42, .entrants = 3},
         0);
    assert_true(c.seeded && c.closed);
    assert_int_equal(c.ndraw, 3);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_WON, .within = false},
             0);
    assert_int_equal(o.actions, 0);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_WON, .within = true},
             0);
    assert_int_equal(o.actions, GW_FAIR_DO_SET_STATE);
    assert_int_equal(o.state, GW_ENTRY_WON);
    /* the first end record decides the waitlist; a retried one does not flip it */
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_END, .waitlist = true},
         0);
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_END}, 0);
    assert_int_equal(c.draw_wl, 2);
    assert_true(gw_fair_core_takes_spooled(&c)); /* not done yet */
    /* the log not durable again: decided, not done */
    gw_fair_core_t c2 = c;
    o = step(&c2, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = CM_EIO}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS);
    assert_false(c2.lot_done);
    o = step(&c2, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_LOG_OUTCOMES);
    assert_true(o.waitlist);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS | GW_FAIR_DO_PUBLISH);
    assert_true(c.lot_done);
    assert_int_equal(c.next, 3);
    assert_false(gw_fair_core_takes_spooled(&c));
}

/* A hole read between the seed's record and the end's (the winners' "W"
 * records lost): the end decides, but the draw is not done though the log
 * is durable again: its winners come from the spool, no outcome is answered,
 * and the next tick writes the records again. A hole before the seed, or
 * after the end, changes nothing. */
static void test_load_hole_before_end(void **state)
{
    (void)state;
    gw_fair_core_t c;
    uint32_t perm[4];
    c.perm = perm;
    gw_fair_core_init(&c);
    gw_fair_ev_t rec = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY};
    gw_fair_ev_t hole = {.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_HOLE};
    for (int i = 0; i < 3; i++)
        step(&c, rec, 0);
    step(&c, hole, 0); /* entries lost: the seed's record decides the entrants */
    step(&c,
         (gw_fair_ev_t){
             .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = 42, .entrants = 3},
         0);
    gw_fair_core_t done = c;
    step(&c, hole, 0);
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_END, .waitlist = true},
         0);
    step(&c, hole, 0);
    assert_int_equal(c.draw_wl, 2);
    gw_fair_out_t o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS);
    assert_false(c.lot_done);
    assert_true(gw_fair_core_takes_spooled(&c));
    for (uint32_t pos = 1; pos <= 3; pos++)
        assert_false(gw_fair_core_answered(&c, pos));
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_LOG_OUTCOMES);
    assert_true(o.waitlist);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW_LOGGED, .rc = 0}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_PUBLISH);
    assert_true(c.lot_done);
    assert_true(gw_fair_core_answered(&c, 1));
    /* the end before any hole after the seed: done at the load */
    step(&done, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_END}, 0);
    step(&done, hole, 0);
    o = step(&done, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS | GW_FAIR_DO_PUBLISH);
    assert_true(done.lot_done);
}

/* A draw cut by a crash: the restart reads the entries, the seed and the
 * winners logged (or found in the spool), and the resumed draw gives the
 * same winners as one never cut, no winner accepted twice. */
static void test_resume_same_winners(void **state)
{
    (void)state;
    for (size_t cut = 0; cut <= N; cut += 3) {
        sale_t a, b;
        sale_init(&a, 17);
        keys_init(&a, N);
        seed(&a);
        assert_false(draw(&a, SIZE_MAX, true));
        assert_true(end(&a, 0));

        sale_init(&b, 17);
        keys_init(&b, N);
        seed(&b);
        draw(&b, cut, true);
        /* the restart: the shell's entries and stock survive (the log and
         * the spool); its states only as records say: the first half of the
         * winners by "W" records, the rest from the spool */
        sale_t r;
        sale_init(&r, b.stock);
        r.n = b.n;
        memcpy(r.key, b.key, sizeof(r.key));
        memcpy(r.qty, b.qty, sizeof(r.qty));
        memcpy(r.accepts, b.accepts, sizeof(r.accepts));
        for (size_t i = 0; i < r.n; i++)
            step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY}, 0);
        step(&r.c,
             (gw_fair_ev_t){
                 .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = SEED, .entrants = N},
             0);
        size_t nw = 0;
        for (size_t i = 0; i < r.n; i++) {
            if (b.state[i] != GW_ENTRY_WON || nw++ % 2)
                continue;
            gw_fair_out_t o = step(
                &r.c,
                (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_WON, .within = true},
                0);
            assert_int_equal(o.actions, GW_FAIR_DO_SET_STATE);
            r.state[i] = o.state;
        }
        gw_fair_out_t o = step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0);
        assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
        order(&r);
        assert_true(gw_fair_core_takes_spooled(&r.c));
        for (size_t i = 0; i < r.n; i++)
            if (b.state[i] == GW_ENTRY_WON)
                r.state[i] = GW_ENTRY_WON; /* the spool's orders */
        assert_false(draw(&r, SIZE_MAX, true));
        assert_true(end(&r, 0));
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(r.state[i] == GW_ENTRY_WON, a.state[i] == GW_ENTRY_WON);
            if (b.state[i] == GW_ENTRY_WON) /* accepted before the cut: never again */
                assert_int_equal(r.accepts[i], 1);
        }
    }
}

/* A seed read back and not durable: no entrant is drawn before the log is. */
static void test_seed_unsynced(void **state)
{
    (void)state;
    gw_fair_core_t c;
    uint32_t perm[1];
    c.perm = perm;
    gw_fair_core_init(&c);
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY}, 0);
    step(&c,
         (gw_fair_ev_t){
             .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = 5, .entrants = 1},
         0);
    gw_fair_out_t o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = CM_EIO}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
    perm[0] = 0;
    gw_fair_ev_t tick = {.kind = GW_FAIR_EV_TICK};
    assert_int_equal(step(&c, tick, CLOSES).actions, GW_FAIR_DO_MAKE_DURABLE);
    o = step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_DRAW, .state = GW_ENTRY_ENTERED}, CLOSES);
    assert_int_equal(o.actions, 0); /* not while the seed may still be lost */
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = CM_EIO}, CLOSES);
    assert_true(c.seed_unsynced);
    assert_int_equal(step(&c, tick, CLOSES).actions, GW_FAIR_DO_MAKE_DURABLE);
    step(&c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0}, CLOSES);
    assert_false(c.seed_unsynced);
    o = step(&c, tick, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_DRAW);
    assert_int_equal(o.entry, 0);
}

/* A fleet's draw through the same core: the store's seed (another drawer's
 * wins over the one offered) and its frozen entrants, the same order and
 * winners as one gateway's draw of them, the store's done mark the end; a
 * gateway that did not draw learns the draw (DRAW_KNOWN) with the same
 * leftovers rule. */
static void test_fleet_draw(void **state)
{
    (void)state;
    sale_t one;
    sale_init(&one, 7);
    keys_init(&one, N);
    seed(&one);
    assert_false(draw(&one, SIZE_MAX, true));
    assert_true(end(&one, 0));

    sale_t fl;
    sale_init(&fl, 7);
    for (size_t i = 0; i < N; i++) { /* the store's entrants: no entry step here */
        fl.key[i] = one.key[i];
        fl.qty[i] = one.qty[i];
    }
    fl.n = N;
    gw_fair_out_t o = step(&fl.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_ENTRIES_TAKEN}, CLOSES);
    assert_int_equal(o.actions, 0);
    gw_fair_core_init(&fl.c); /* the drawer's own core */
    o = step(&fl.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .rnd = 12345}, CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_SEED);
    /* the store kept another drawer's seed: that one decides */
    o = step(&fl.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_TAKEN, .rc = CM_EBACKEND}, CLOSES);
    assert_int_equal(o.actions, 0);
    assert_false(fl.c.seeded);
    step(&fl.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_TICK, .rnd = 9}, CLOSES);
    o = step(&fl.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_TAKEN, .seed = SEED, .entrants = N},
             CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
    assert_int_equal(fl.c.seed, SEED);
    order(&fl);
    assert_memory_equal(fl.perm, one.perm, sizeof(fl.perm));
    assert_false(draw(&fl, SIZE_MAX, true));
    assert_true(end(&fl, 0));
    for (size_t i = 0; i < N; i++)
        assert_int_equal(fl.state[i], one.state[i]);

    gw_fair_core_t k;
    uint32_t perm[N];
    k.perm = perm;
    gw_fair_core_init(&k);
    o = step(&k,
             (gw_fair_ev_t){
                 .kind = GW_FAIR_EV_DRAW_KNOWN, .seed = SEED, .entrants = N, .waitlist = true},
             CLOSES);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER | GW_FAIR_DO_LEFTOVERS | GW_FAIR_DO_PUBLISH);
    assert_true(k.lot_done && k.seeded);
    assert_int_equal(gw_fair_core_loser(&k, false), GW_ENTRY_WAITLISTED);
    assert_int_equal(gw_fair_core_loser(&k, true), GW_ENTRY_LOST);
}

/* At most max_entries entries: a new person past the cap is refused
 * (nothing to append), a person's own entry still comes back. */
static void test_entries_capped(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 10);
    keys_init(&s, 3);
    gw_fair_ev_t ev = {.kind = GW_FAIR_EV_ENTER, .entrants = 3, .max_entries = 3};
    gw_fair_out_t o = step(&s.c, ev, OPENS);
    assert_int_equal(o.answer, GW_FAIR_A_FULL);
    assert_int_equal(o.actions, 0);
    assert_string_equal(gw_fair_answer_name(o.answer), "lottery_full");
    ev.found = GW_FAIR_FOUND_SAME;
    assert_int_equal(step(&s.c, ev, OPENS).answer, GW_FAIR_A_ALREADY);
    ev.found = GW_FAIR_FOUND_NONE;
    ev.max_entries = 4;
    o = step(&s.c, ev, OPENS);
    assert_int_equal(o.actions, GW_FAIR_DO_APPEND_ENTRY);
}

/* A draw cut by a crash after its stock ran out, resumed with units that
 * came back meanwhile (a winner's record that never became durable): the
 * "O" record read back tells the core the rest were not tried, so no
 * entrant decided lost before the crash wins in the resumed draw. */
static void test_resume_after_sold_out(void **state)
{
    (void)state;
    sale_t b;
    sale_init(&b, 5);
    keys_init(&b, N);
    seed(&b);
    size_t drawn = 0;
    while (!b.sold_out_logged && drawn < N)
        draw(&b, 1, true), drawn++;
    assert_true(b.sold_out_logged);
    draw(&b, 6, true); /* a few decided lost after it, then the crash */
    bool told_lost[N];
    size_t nlost = 0;
    for (size_t i = 0; i < N; i++) {
        told_lost[i] = b.state[i] == GW_ENTRY_LOST;
        nlost += told_lost[i];
    }
    assert_true(nlost > 0);
    sale_t r;
    sale_init(&r, 4); /* units came back after the crash */
    r.n = b.n;
    memcpy(r.key, b.key, sizeof(r.key));
    memcpy(r.qty, b.qty, sizeof(r.qty));
    for (size_t i = 0; i < r.n; i++)
        step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY}, 0);
    step(&r.c,
         (gw_fair_ev_t){
             .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = SEED, .entrants = N},
         0);
    step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SOLD_OUT}, 0);
    gw_fair_out_t o = step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0);
    assert_int_equal(o.actions, GW_FAIR_DO_ORDER);
    order(&r);
    for (size_t i = 0; i < r.n; i++)
        if (b.state[i] == GW_ENTRY_WON)
            r.state[i] = GW_ENTRY_WON; /* the spool's orders */
    assert_false(draw(&r, SIZE_MAX, true));
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(r.accepts[i], 0); /* nobody tried after the stock ran out */
        if (told_lost[i])
            assert_int_not_equal(r.state[i], GW_ENTRY_WON);
    }
    assert_int_equal(r.stock, 4);
}

/* The sold-out record not durable: no entrant after it is decided before the
 * log is made durable. */
static void test_sold_out_unsynced(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 1);
    keys_init(&s, 4);
    seed(&s);
    s.sold_out_rc = CM_EIO;
    while (!s.sold_out_logged)
        draw(&s, 1, true);
    assert_true(s.c.seed_unsynced);
    gw_fair_ev_t tick = {.kind = GW_FAIR_EV_TICK, .sale_over = true};
    assert_int_equal(step(&s.c, tick, CLOSES).actions, GW_FAIR_DO_MAKE_DURABLE);
    step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0}, CLOSES);
    assert_false(s.c.seed_unsynced);
    assert_false(draw(&s, SIZE_MAX, true));
    assert_true(end(&s, 0));
}

/* Whether entry i's outcome is answered now (its 1-based draw position). */
static bool answered(const sale_t *s, size_t i)
{
    for (size_t p = 0; p < s->c.ndraw; p++)
        if (s->perm[p] == i)
            return gw_fair_core_answered(&s->c, (uint32_t)(p + 1));
    return gw_fair_core_answered(&s->c, 0);
}

/* An outcome is answered only once the record covering it is durable: the
 * entrants decided before the stock ran out read as undecided until the "O"
 * record's fdatasync, those after it at once (the "O" decides them), every
 * one once the end is durable; a restart answers what its records decided. */
static void test_answered_once_durable(void **state)
{
    (void)state;
    sale_t s;
    sale_init(&s, 5);
    keys_init(&s, N);
    seed(&s);
    size_t decided = 0;
    while (decided < N) {
        s.sold_out_rc = CM_EIO; /* the "O" record's fdatasync fails */
        draw(&s, 1, true);
        decided++;
        if (s.sold_out_logged)
            break;
        for (size_t p = 0; p < decided; p++)
            assert_false(answered(&s, s.perm[p]));
    }
    assert_true(s.sold_out_logged); /* its fdatasync failed: nothing answered yet */
    for (size_t p = 0; p < decided; p++)
        assert_false(answered(&s, s.perm[p]));
    gw_fair_ev_t tick = {.kind = GW_FAIR_EV_TICK, .sale_over = true};
    assert_int_equal(step(&s.c, tick, CLOSES).actions, GW_FAIR_DO_MAKE_DURABLE);
    step(&s.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_SEED_DURABLE, .rc = 0}, CLOSES);
    for (size_t p = 0; p < decided; p++)
        assert_true(answered(&s, s.perm[p]));
    draw(&s, 3, true); /* lost after the "O": answered at once */
    for (size_t p = decided; p < decided + 3; p++) {
        assert_int_equal(s.state[s.perm[p]], GW_ENTRY_LOST);
        assert_true(answered(&s, s.perm[p]));
    }
    assert_false(draw(&s, SIZE_MAX, true));
    assert_true(end(&s, 0));
    for (size_t i = 0; i < N; i++)
        assert_true(answered(&s, i));

    /* a cut draw: its first winner known from the spool answers at once,
     * the rest as the resumed draw makes them durable */
    sale_t r;
    sale_init(&r, 5);
    r.n = s.n;
    memcpy(r.key, s.key, sizeof(r.key));
    memcpy(r.qty, s.qty, sizeof(r.qty));
    for (size_t i = 0; i < r.n; i++)
        step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_ENTRY}, 0);
    step(&r.c,
         (gw_fair_ev_t){
             .kind = GW_FAIR_EV_RECORD, .rec = GW_FAIR_REC_SEED, .seed = SEED, .entrants = N},
         0);
    assert_int_equal(step(&r.c, (gw_fair_ev_t){.kind = GW_FAIR_EV_LOADED, .rc = 0}, 0).actions,
                     GW_FAIR_DO_ORDER);
    order(&r);
    r.state[r.perm[0]] = GW_ENTRY_WON; /* the spool's order */
    r.stock -= r.qty[r.perm[0]];
    assert_true(answered(&r, r.perm[0]));
    draw(&r, 2, true); /* the spool's winner skipped, the next one accepted */
    assert_true(answered(&r, r.perm[0]));
    assert_false(answered(&r, r.perm[1]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enter),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_draw),
        cmocka_unit_test(test_accept_failed),
        cmocka_unit_test(test_leftovers),
        cmocka_unit_test(test_load_finished),
        cmocka_unit_test(test_load_hole_before_end),
        cmocka_unit_test(test_resume_same_winners),
        cmocka_unit_test(test_seed_unsynced),
        cmocka_unit_test(test_fleet_draw),
        cmocka_unit_test(test_entries_capped),
        cmocka_unit_test(test_resume_after_sold_out),
        cmocka_unit_test(test_sold_out_unsynced),
        cmocka_unit_test(test_answered_once_durable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
