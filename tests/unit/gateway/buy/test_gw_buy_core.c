/* gw_buy_core (the buy decision, no I/O): each event's answers and actions, a
 * buy from its head to its 202 in both durabilities, the keyed-retry rules
 * (replayed 202, claim and spool again, in progress), the give-back of a
 * failed write (never of a replayed order), a failed fdatasync, the
 * admission token kept by a 202 only, and events out of order. */
#include "common/cm_err.h"
#include "gateway/buy/gw_buy_core.h"
#include "inventory/inv.h"

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

#define NOW 1000000

static gw_buy_out_t step(gw_buy_core_t *c, gw_buy_ev_t ev)
{
    gw_buy_out_t out;
    gw_buy_core_step(c, &ev, NOW, &out);
    return out;
}

/* A buy taken up to its reserve action (no lottery, no room). */
static void to_reserve(gw_buy_core_t *c, bool fsync)
{
    gw_buy_core_init(c, fsync);
    gw_buy_out_t o = step(c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .fair = GW_BUY_FAIR_OPEN});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
    o = step(c, (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = 1, .per_user_limit = 2});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
    o = step(
        c, (gw_buy_ev_t){.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_OPEN});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
    assert_int_equal(o.actions, GW_BUY_DO_RESERVE);
}

static void test_head(void **state)
{
    (void)state;
    gw_buy_core_t c;
    gw_buy_core_init(&c, false);
    gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .sold_out = true});
    assert_int_equal(o.answer, GW_BUY_A_SOLD_OUT);
    assert_int_equal(o.actions, 0);
    gw_buy_core_init(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .sold_out = true, .waitlist_open = true});
    assert_int_equal(o.answer, GW_BUY_A_WAITLIST);
    /* the window: 425 before, 410 ended at and after its end */
    gw_buy_core_init(&c, false);
    o = step(&c, (gw_buy_ev_t){
                     .kind = GW_BUY_EV_HEAD, .starts_at_ms = NOW + 1, .fair = GW_BUY_FAIR_OPEN});
    assert_int_equal(o.answer, GW_BUY_A_NOT_STARTED);
    gw_buy_core_init(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .starts_at_ms = NOW, .ends_at_ms = NOW});
    assert_int_equal(o.answer, GW_BUY_A_ENDED);
    gw_buy_core_init(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .starts_at_ms = NOW, .ends_at_ms = NOW + 1});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
    /* a lottery's early entry window is not "not started" */
    gw_buy_core_init(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD,
                               .starts_at_ms = NOW + 5000,
                               .fair = GW_BUY_FAIR_ENTER});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
}

static void test_buyer_and_limits(void **state)
{
    (void)state;
    gw_buy_core_t c;
    gw_buy_core_init(&c, false);
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .fair = GW_BUY_FAIR_OPEN});
    gw_buy_out_t o =
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = 3, .per_user_limit = 2});
    assert_int_equal(o.answer, GW_BUY_A_QTY_OVER_LIMIT);
    /* a refused rate comes before the lottery's and the waitlist's answers */
    const struct {
        gw_buy_ev_t ev;
        gw_buy_answer_t a;
        unsigned actions;
    } cases[] = {
        {{.kind = GW_BUY_EV_LIMITS, .fair = GW_BUY_FAIR_ENTER}, GW_BUY_A_RATE_LIMITED, 0},
        {{.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_ENTER},
         GW_BUY_A_NONE,
         GW_BUY_DO_ENTER},
        {{.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_DRAWING},
         GW_BUY_A_DRAW_RUNNING,
         0},
        {{.kind = GW_BUY_EV_LIMITS,
          .rate_allowed = true,
          .fair = GW_BUY_FAIR_OPEN,
          .waitlist_open = true},
         GW_BUY_A_WAITLIST,
         0},
        {{.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_OPEN, .room = true},
         GW_BUY_A_NONE,
         GW_BUY_DO_ADMIT},
        {{.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_OPEN},
         GW_BUY_A_NONE,
         GW_BUY_DO_RESERVE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_buy_core_init(&c, false);
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .fair = GW_BUY_FAIR_OPEN});
        o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = 2, .per_user_limit = 2});
        assert_int_equal(o.answer, GW_BUY_A_NONE);
        o = step(&c, cases[i].ev);
        assert_int_equal(o.answer, cases[i].a);
        assert_int_equal(o.actions, cases[i].actions);
    }
}

static void test_admission(void **state)
{
    (void)state;
    const struct {
        int rc;
        gw_buy_answer_t a;
    } cases[] = {
        {GW_BUY_ADM_CLAIMED, GW_BUY_A_NONE},          {GW_BUY_ADM_REPLAY, GW_BUY_A_NONE},
        {GW_BUY_ADM_SPENT, GW_BUY_A_ADMISSION_SPENT}, {CM_EBUSY, GW_BUY_A_ADMISSION_BUSY},
        {CM_EIO, GW_BUY_A_ADMISSION_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_buy_core_t c;
        gw_buy_core_init(&c, false);
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_HEAD, .fair = GW_BUY_FAIR_OPEN});
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = 1, .per_user_limit = 1});
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_LIMITS,
                               .rate_allowed = true,
                               .fair = GW_BUY_FAIR_OPEN,
                               .room = true});
        gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_ADMITTED, .rc = cases[i].rc});
        assert_int_equal(o.answer, cases[i].a);
        assert_int_equal(o.actions, cases[i].a == GW_BUY_A_NONE ? GW_BUY_DO_RESERVE : 0u);
        assert_false(gw_buy_answer_keeps_admission(o.answer));
    }
}

/* write durability: reserved, spooled, 202 at the write's return */
static void test_accepted_write(void **state)
{
    (void)state;
    gw_buy_core_t c;
    to_reserve(&c, false);
    gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_RESERVED});
    assert_int_equal(o.answer, GW_BUY_A_NONE); /* no 202 before the write returned */
    assert_int_equal(o.actions, GW_BUY_DO_SPOOL);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
    assert_int_equal(o.answer, GW_BUY_A_ACCEPTED);
    assert_int_equal(o.actions, GW_BUY_DO_COUNT | GW_BUY_DO_KNOWN);
    assert_true(gw_buy_answer_keeps_admission(o.answer));
}

/* fsync durability: the 202 waits for the group commit */
static void test_accepted_fsync(void **state)
{
    (void)state;
    gw_buy_core_t c;
    to_reserve(&c, true);
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_RESERVED});
    gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
    assert_int_equal(o.answer, GW_BUY_A_NONE);
    assert_int_equal(o.actions, GW_BUY_DO_COUNT | GW_BUY_DO_SYNC);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SYNCED, .rc = 0});
    assert_int_equal(o.answer, GW_BUY_A_ACCEPTED);
    assert_int_equal(o.actions, GW_BUY_DO_KNOWN);
    /* a failed fdatasync: 503 not confirmed, units held (no give-back), not known */
    to_reserve(&c, true);
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_RESERVED});
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SYNCED, .rc = CM_EIO});
    assert_int_equal(o.answer, GW_BUY_A_NOT_CONFIRMED);
    assert_int_equal(o.rc, CM_EIO);
    assert_int_equal(o.actions, 0);
    assert_false(gw_buy_answer_keeps_admission(o.answer));
}

static void test_failed_write_gives_back(void **state)
{
    (void)state;
    int fails[] = {CM_EIO, CM_EBUSY};
    for (size_t i = 0; i < 2; i++) {
        gw_buy_core_t c;
        to_reserve(&c, i == 1);
        step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_RESERVED});
        gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = fails[i]});
        assert_int_equal(o.answer, GW_BUY_A_SPOOL_REFUSED);
        assert_int_equal(o.rc, fails[i]);
        assert_int_equal(o.actions, GW_BUY_DO_GIVE_BACK);
    }
}

static void test_inventory_refusals(void **state)
{
    (void)state;
    const struct {
        int rc;
        gw_buy_answer_t a;
    } cases[] = {
        {INV_SOLD_OUT, GW_BUY_A_SOLD_OUT},
        {INV_LIMIT_REACHED, GW_BUY_A_LIMIT_PER_USER},
        {INV_UNKNOWN_SALE, GW_BUY_A_UNKNOWN_SALE},
        {CM_ETIMEOUT, GW_BUY_A_INV_FAILED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_buy_core_t c;
        to_reserve(&c, false);
        gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = cases[i].rc});
        assert_int_equal(o.answer, cases[i].a);
        assert_int_equal(o.actions, 0);
    }
}

/* A keyed retry: which order, known here or not, ours or not. */
static void test_keyed_retry(void **state)
{
    (void)state;
    gw_buy_core_t c;
    /* durable here: a replayed 202, nothing spooled, and it keeps the admission token */
    to_reserve(&c, false);
    gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED,
                                            .rc = INV_DUPLICATE,
                                            .ours = true,
                                            .seen = GW_BUY_SEEN_FOUND});
    assert_int_equal(o.answer, GW_BUY_A_REPLAYED);
    assert_int_equal(o.actions, 0);
    assert_true(gw_buy_answer_keeps_admission(o.answer));
    assert_int_equal(c.answer, GW_BUY_A_REPLAYED); /* what the shell's settle reads */
    /* ours, evicted from the status table: durable when put there */
    to_reserve(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED,
                               .rc = INV_DUPLICATE,
                               .ours = true,
                               .seen = GW_BUY_SEEN_EXPIRED});
    assert_int_equal(o.answer, GW_BUY_A_REPLAYED);
    /* ours, never seen, unclaimed: its first request is in flight */
    to_reserve(&c, false);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_DUPLICATE, .ours = true});
    assert_int_equal(o.answer, GW_BUY_A_IN_PROGRESS);
    assert_false(gw_buy_answer_keeps_admission(o.answer));
    /* the status table forgot it (another incarnation's, another gateway's,
     * or ours and claimed): claimed, spooled again, then a replayed 202 */
    const gw_buy_ev_t forgot[] = {
        {.kind = GW_BUY_EV_RESERVED, .rc = INV_DUPLICATE},
        {.kind = GW_BUY_EV_RESERVED, .rc = INV_DUPLICATE, .seen = GW_BUY_SEEN_EXPIRED},
        {.kind = GW_BUY_EV_RESERVED, .rc = INV_DUPLICATE, .ours = true, .claimed = true},
    };
    for (size_t i = 0; i < 3; i++) {
        for (int fsync = 0; fsync < 2; fsync++) {
            to_reserve(&c, fsync);
            o = step(&c, forgot[i]);
            assert_int_equal(o.answer, GW_BUY_A_NONE);
            assert_int_equal(o.actions, GW_BUY_DO_CLAIM);
            o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = INV_RESERVED});
            assert_int_equal(o.answer, GW_BUY_A_NONE);
            assert_int_equal(o.actions, GW_BUY_DO_SPOOL);
            o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
            if (fsync) { /* not counted again: its units were counted by its first request */
                assert_int_equal(o.actions, GW_BUY_DO_SYNC);
                o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SYNCED, .rc = 0});
            }
            assert_int_equal(o.answer, GW_BUY_A_REPLAYED);
            assert_int_equal(o.actions, GW_BUY_DO_KNOWN);
        }
    }
    /* a replayed record whose write failed keeps its units: the order is its first request's */
    to_reserve(&c, false);
    step(&c, forgot[0]);
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = INV_RESERVED});
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = CM_EIO});
    assert_int_equal(o.answer, GW_BUY_A_SPOOL_REFUSED);
    assert_int_equal(o.actions, 0);
    /* the claim: given back already, or the inventory failed */
    to_reserve(&c, false);
    step(&c, forgot[0]);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = CM_ENOTFOUND});
    assert_int_equal(o.answer, GW_BUY_A_KEY_GIVEN_BACK);
    to_reserve(&c, false);
    step(&c, forgot[0]);
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = CM_ETIMEOUT});
    assert_int_equal(o.answer, GW_BUY_A_INV_FAILED);
    assert_int_equal(o.rc, CM_ETIMEOUT);
}

static void test_out_of_order(void **state)
{
    (void)state;
    gw_buy_core_t c;
    gw_buy_core_init(&c, false);
    gw_buy_out_t o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
    assert_int_equal(o.answer, GW_BUY_A_INV_FAILED);
    assert_int_equal(o.rc, CM_EINVAL);
    assert_int_equal(o.actions, 0);
    /* a refused buy takes no further event */
    to_reserve(&c, false);
    step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = INV_SOLD_OUT});
    o = step(&c, (gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0});
    assert_int_equal(o.answer, GW_BUY_A_INV_FAILED);
    assert_string_equal(gw_buy_answer_name(GW_BUY_A_REPLAYED), "replayed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_buyer_and_limits),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_accepted_write),
        cmocka_unit_test(test_accepted_fsync),
        cmocka_unit_test(test_failed_write_gives_back),
        cmocka_unit_test(test_inventory_refusals),
        cmocka_unit_test(test_keyed_retry),
        cmocka_unit_test(test_out_of_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
