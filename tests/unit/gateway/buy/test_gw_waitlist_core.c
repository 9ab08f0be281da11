/* gw_waitlist_core (the leftovers' decisions, no I/O): losers promoted in
 * draw order, one per freed unit; an entry too large keeps its place; a
 * promotion short of stock or failed ends the walk; one refused for cause
 * lets the walk go on; no walk over an unchanged stock; the first
 * waiter's position only grows (the sale's end is the sale's machine's:
 * test_gw_sale_core.c). */
#include "gateway/buy/gw_waitlist_core.h"

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

/* The shell's side: each draw position's entry, waitlisted or not, and its qty. */
typedef struct wl {
    gw_wl_core_t c;
    bool waits[N];
    uint32_t qty[N];
    gw_wl_result_t result[N]; /* what a promotion of each position gives */
    size_t promoted[N];       /* positions promoted, in order */
    size_t npromoted;
    int64_t left;
} wl_t;

static gw_wl_out_t step(gw_wl_core_t *c, gw_wl_ev_t ev)
{
    gw_wl_out_t out;
    gw_wl_core_step(c, &ev, &out);
    return out;
}

/* One walk with the stock left; returns its PASS_END. */
static gw_wl_out_t walk(wl_t *w)
{
    gw_wl_out_t o = step(&w->c, (gw_wl_ev_t){.kind = GW_WL_EV_WALK, .left = w->left, .ndraw = N});
    while (o.actions & (GW_WL_DO_LOOK | GW_WL_DO_PROMOTE)) {
        assert_true(o.pos < N);
        if (o.actions & GW_WL_DO_LOOK) {
            o = step(&w->c, (gw_wl_ev_t){.kind = GW_WL_EV_ENTRY,
                                         .waitlisted = w->waits[o.pos],
                                         .qty = w->qty[o.pos]});
            continue;
        }
        assert_true(w->waits[o.pos]);
        gw_wl_result_t r = w->result[o.pos];
        if (r == GW_WL_WON || r == GW_WL_LOST) {
            w->waits[o.pos] = false;
            if (r == GW_WL_WON) {
                w->left -= w->qty[o.pos];
                w->promoted[w->npromoted++] = o.pos;
            }
        }
        o = step(&w->c, (gw_wl_ev_t){.kind = GW_WL_EV_PROMOTED, .result = r, .left = w->left});
    }
    assert_int_equal(o.actions, GW_WL_DO_PASS_END);
    return o;
}

static void wl_init(wl_t *w, size_t first_loser)
{
    memset(w, 0, sizeof(*w));
    gw_wl_core_init(&w->c, 0);
    for (size_t i = first_loser; i < N; i++) {
        w->waits[i] = true;
        w->qty[i] = 1;
    }
}

static void test_draw_order(void **state)
{
    (void)state;
    wl_t w;
    wl_init(&w, 3); /* positions 0..2 won */
    w.left = 2;     /* two units freed: the first two losers, in draw order */
    gw_wl_out_t o = walk(&w);
    assert_true(o.admitted);
    assert_false(o.failed);
    assert_int_equal(w.npromoted, 2);
    assert_int_equal(w.promoted[0], 3);
    assert_int_equal(w.promoted[1], 4);
    assert_int_equal(w.c.head, 5);
    w.left = 1;
    walk(&w);
    assert_int_equal(w.npromoted, 3);
    assert_int_equal(w.promoted[2], 5);
}

static void test_too_large_keeps_place(void **state)
{
    (void)state;
    wl_t w;
    wl_init(&w, 2);
    w.qty[2] = 3;
    w.left = 1;
    walk(&w);
    assert_int_equal(w.npromoted, 1);
    assert_int_equal(w.promoted[0], 3);
    assert_int_equal(w.c.head, 2); /* position 2 still waits */
    assert_true(w.waits[2]);
}

static void test_stop_and_go_on(void **state)
{
    (void)state;
    wl_t w;
    wl_init(&w, 0);
    w.result[0] = GW_WL_LOST; /* for cause: the walk goes on */
    w.result[1] = GW_WL_FAILED;
    w.left = 3;
    gw_wl_out_t o = walk(&w);
    assert_true(o.failed);
    assert_false(o.admitted);
    assert_int_equal(w.npromoted, 0);
    assert_true(w.waits[1]); /* keeps its place */
    assert_int_equal(w.c.head, 1);
    w.result[1] = GW_WL_NO_STOCK;
    o = walk(&w);
    assert_false(o.failed);
    assert_int_equal(w.npromoted, 0);
    w.result[1] = GW_WL_WON;
    walk(&w);
    assert_int_equal(w.promoted[0], 1);
}

static void test_tick(void **state)
{
    (void)state;
    gw_wl_core_t c;
    gw_wl_core_init(&c, 0);
    gw_wl_ev_t t = {.kind = GW_WL_EV_TICK, .left = 0};
    assert_int_equal(step(&c, t).actions, 0); /* no stock */
    t = (gw_wl_ev_t){.kind = GW_WL_EV_TICK, .left = 2, .acc = 5, .version = 7};
    assert_int_equal(step(&c, t).actions, GW_WL_DO_WALK);
    /* a walk that admits nobody (its one waiter wants 3): the core remembers that stock */
    gw_wl_ev_t w = {.kind = GW_WL_EV_WALK, .left = 2, .ndraw = 1};
    assert_int_equal(step(&c, w).actions, GW_WL_DO_LOOK);
    gw_wl_out_t o = step(&c, (gw_wl_ev_t){.kind = GW_WL_EV_ENTRY, .waitlisted = true, .qty = 3});
    assert_int_equal(o.actions, GW_WL_DO_PASS_END);
    assert_false(o.admitted);
    assert_int_equal(step(&c, t).actions, 0); /* the same stock: no walk */
    t.pending = true; /* a fleet's promotion to finish */
    assert_int_equal(step(&c, t).actions, GW_WL_DO_WALK);
    t.pending = false;
    t.version = 8; /* a release or a restock moved it */
    assert_int_equal(step(&c, t).actions, GW_WL_DO_WALK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draw_order),
        cmocka_unit_test(test_too_large_keeps_place),
        cmocka_unit_test(test_stop_and_go_on),
        cmocka_unit_test(test_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
