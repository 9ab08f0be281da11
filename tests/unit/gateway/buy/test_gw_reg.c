/*
 * gw_reg: registration's pure parts: the window's edges (its first and last
 * millisecond), the settings the admin API refuses (one time without the
 * other, a close after the lottery window opens, registration without a
 * lottery), and the export's pages (complete, none past the end, never more
 * than the limit). Registrations, entries, restarts and the fleet run
 * against the real binary in tests/integration/100-registration.py.
 */
#include "gateway/buy/gw_reg.h"

#include "common/cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#define OPENS 1000000
#define CLOSES 2000000

static void test_phase_edges(void **state)
{
    (void)state;
    assert_int_equal(gw_reg_phase_at(0, 0, OPENS), GW_REG_NONE);
    assert_int_equal(gw_reg_phase_at(OPENS, CLOSES, OPENS - 1), GW_REG_BEFORE);
    assert_int_equal(gw_reg_phase_at(OPENS, CLOSES, OPENS), GW_REG_OPEN);
    assert_int_equal(gw_reg_phase_at(OPENS, CLOSES, CLOSES - 1), GW_REG_OPEN);
    assert_int_equal(gw_reg_phase_at(OPENS, CLOSES, CLOSES), GW_REG_CLOSED);
    assert_int_equal(gw_reg_phase_at(OPENS, CLOSES, CLOSES + 86400000), GW_REG_CLOSED);
}

static void test_window_check(void **state)
{
    (void)state;
    char why[256];
    /* none, and a window that closes exactly when the lottery opens */
    assert_int_equal(gw_reg_window_check(0, 0, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES, 1000, CLOSES, why, sizeof(why)), 0);
    /* one without the other */
    why[0] = '\0';
    assert_int_equal(gw_reg_window_check(OPENS, 0, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "both"));
    assert_int_equal(gw_reg_window_check(0, CLOSES, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    /* closes no later than opens */
    assert_int_equal(gw_reg_window_check(OPENS, OPENS, 1000, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(gw_reg_window_check(CLOSES, OPENS, 1000, CLOSES, why, sizeof(why)),
                     CM_EINVAL);
    /* a millisecond into the lottery window */
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES + 1, 1000, CLOSES, why, sizeof(why)),
                     CM_EINVAL);
    assert_non_null(strstr(why, "lottery window"));
    /* no lottery */
    assert_int_equal(gw_reg_window_check(OPENS, CLOSES, 0, CLOSES, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "fair_window_ms"));
}

static void test_pages_complete(void **state)
{
    (void)state;
    uint64_t s, e;
    gw_reg_page(0, 0, 10, &s, &e);
    assert_true(s == 0 && e == 0);
    gw_reg_page(5, 7, 10, &s, &e); /* past the end: empty, not negative */
    assert_true(s == 5 && e == 5);
    gw_reg_page(5, 3, UINT64_MAX, &s, &e); /* no overflow */
    assert_true(s == 3 && e == 5);
    for (uint64_t total = 0; total < 40; total++)
        for (uint64_t limit = 1; limit <= 9; limit++) {
            uint64_t cursor = 0, seen = 0, pages = 0;
            for (;;) {
                gw_reg_page(total, cursor, limit, &s, &e);
                assert_int_equal(s, cursor);
                assert_true(e - s <= limit);
                seen += e - s;
                pages++;
                if (e >= total)
                    break;
                cursor = e;
            }
            assert_int_equal(seen, total);
            assert_int_equal(pages, total ? (total + limit - 1) / limit : 1);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_edges),
        cmocka_unit_test(test_window_check),
        cmocka_unit_test(test_pages_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
