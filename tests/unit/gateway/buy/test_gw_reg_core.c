/* gw_reg_core (registration's decisions, no I/O): one registration per
 * person, the cap, an answer only once the line is written, a deleted
 * window, a fleet store's answer, fsync durability's answer after the
 * fdatasync, and the log's records read back at a start (a malformed record
 * skipped, a person read twice counted once). */
#include "common/cm_err.h"
#include "gateway/buy/gw_reg_core.h"

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

static gw_reg_out_t step(gw_reg_core_t *c, gw_reg_ev_t ev)
{
    gw_reg_out_t out;
    gw_reg_core_step(c, &ev, &out);
    return out;
}

static gw_reg_ev_t reg(bool found, uint64_t cap)
{
    return (gw_reg_ev_t){.kind = GW_REG_EV_REGISTER, .found = found, .cap = cap};
}

static void test_one_per_person(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    gw_reg_out_t o = step(&c, reg(false, 10));
    assert_false(o.answered); /* not before its line is written */
    assert_int_equal(o.actions, GW_REG_DO_APPEND);
    o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED, .rc = 0});
    assert_true(o.answered);
    assert_int_equal(o.answer, GW_REG_ADDED);
    assert_int_equal(o.actions, GW_REG_DO_ADD);
    assert_int_equal(c.n, 1);
    o = step(&c, reg(true, 10)); /* the same person, any account */
    assert_true(o.answered);
    assert_int_equal(o.answer, GW_REG_ALREADY);
    assert_int_equal(o.actions, 0);
    assert_int_equal(c.n, 1);
}

static void test_cap(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(step(&c, reg(false, 3)).actions, GW_REG_DO_APPEND);
        assert_int_equal(step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED}).answer, GW_REG_ADDED);
    }
    gw_reg_out_t o = step(&c, reg(false, 3));
    assert_true(o.answered);
    assert_int_equal(o.answer, GW_REG_FULL);
    assert_int_equal(o.actions, 0);
    /* a registered person is still answered as such at the cap */
    assert_int_equal(step(&c, reg(true, 3)).answer, GW_REG_ALREADY);
}

static void test_failed_line(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    step(&c, reg(false, 10));
    /* a second registration while the first one's line is written: nothing */
    assert_false(step(&c, reg(false, 10)).answered);
    gw_reg_out_t o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED, .rc = CM_EIO});
    assert_true(o.answered);
    assert_int_equal(o.answer, CM_EIO);
    assert_int_equal(o.actions, 0); /* not in the set: a retry registers it */
    assert_int_equal(c.n, 0);
    assert_int_equal(step(&c, reg(false, 10)).actions, GW_REG_DO_APPEND);
}

static void test_store_decides(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    gw_reg_ev_t ev = reg(false, 10);
    ev.store_decides = true;
    assert_int_equal(step(&c, ev).actions, GW_REG_DO_STORE);
    gw_reg_out_t o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_STORED, .stored = GW_REG_FULL});
    assert_int_equal(o.answer, GW_REG_FULL);
    step(&c, ev);
    o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_STORED, .stored = CM_EBACKEND});
    assert_int_equal(o.answer, CM_EBACKEND);
}

static gw_reg_out_t line(gw_reg_core_t *c, const char *s, bool found)
{
    return step(c, (gw_reg_ev_t){
                       .kind = GW_REG_EV_LINE, .line = s, .len = strlen(s), .found = found});
}

/* fsync durability: ADDED only after the SYNCED that covers the record; the
 * person is in the set at the write (no second record); a person found while
 * the log is not all covered waits for a sync too; a failed sync answers its error. */
static void test_fsync_answers_after_sync(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    gw_reg_ev_t ev = reg(false, 10);
    ev.sync = true;
    assert_int_equal(step(&c, ev).actions, GW_REG_DO_APPEND);
    gw_reg_out_t o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_APPENDED, .rc = 0});
    assert_false(o.answered); /* not before the fdatasync */
    assert_int_equal(o.actions, GW_REG_DO_ADD | GW_REG_DO_SYNC);
    assert_int_equal(o.held, GW_REG_ADDED);
    assert_int_equal(c.n, 1);
    o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_SYNCED, .rc = 0, .held = o.held});
    assert_true(o.answered);
    assert_int_equal(o.answer, GW_REG_ADDED);
    o = step(&c, (gw_reg_ev_t){.kind = GW_REG_EV_SYNCED, .rc = CM_EIO, .held = GW_REG_ADDED});
    assert_int_equal(o.answer, CM_EIO);
    ev = reg(true, 10);
    ev.sync = true; /* found, the log not all covered */
    o = step(&c, ev);
    assert_false(o.answered);
    assert_int_equal(o.actions, GW_REG_DO_SYNC);
    assert_int_equal(o.held, GW_REG_ALREADY);
    ev.covered = true;
    o = step(&c, ev);
    assert_int_equal(o.answer, GW_REG_ALREADY);
    assert_int_equal(o.actions, 0);
}

static void test_replay(void **state)
{
    (void)state;
    gw_reg_core_t c;
    gw_reg_core_init(&c);
    gw_reg_out_t o = line(&c, "P-1", false);
    assert_int_equal(o.actions, GW_REG_DO_ADD);
    assert_false(o.bad);
    o = line(&c, "P-1", true); /* twice: once */
    assert_int_equal(o.actions, 0);
    assert_false(o.bad);
    o = line(&c, "no spaces", false);
    assert_true(o.bad);
    assert_int_equal(o.actions, 0);
    o = line(&c, "", false);
    assert_true(o.bad);
    assert_int_equal(c.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_per_person), cmocka_unit_test(test_cap),
        cmocka_unit_test(test_failed_line),    cmocka_unit_test(test_store_decides),
        cmocka_unit_test(test_replay),         cmocka_unit_test(test_fsync_answers_after_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
