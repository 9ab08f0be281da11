/*
 * The admin's sale edits as a core (gateway/buy/gw_sale_edit.h) on a memory
 * inventory: the window's rules, and an edit refused leaves the sale as it was.
 */
#include "common/cm_err.h"
#include "gateway/buy/gw_sale_edit.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static void test_window_rules(void **state)
{
    (void)state;
    char why[128];
    inv_sale_def_t d = {.stock = 5, .per_user_limit = 1, .starts_at_ms = 1000, .ends_at_ms = 1000};
    assert_int_equal(gw_sale_window_check(&d, 0, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "ends_at"));
    d.ends_at_ms = 1001;
    assert_int_equal(gw_sale_window_check(&d, 0, why, sizeof(why)), 0);
    d.starts_at_ms = 0; /* no start: any end */
    assert_int_equal(gw_sale_window_check(&d, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_sale_window_check(&d, 500, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "fair_window_ms"));
}

static void test_edit_refused_keeps_sale(void **state)
{
    (void)state;
    inv_t *inv;
    char why[256] = "";
    assert_int_equal(inv_open(&inv, "memory", NULL, 4, why, sizeof(why)), 0);
    inv_sale_def_t d = {.stock = 5, .per_user_limit = 2};
    snprintf(d.sale_id, sizeof(d.sale_id), "s1");
    inv_sale_info_t info;
    assert_int_equal(gw_sale_edit(inv, &d, &info, why, sizeof(why)), 0);
    assert_int_equal(inv_replay(inv, "s1", "u1", 2, "o1", NULL), 0);
    /* a window the wrong way round: refused, nothing changed */
    inv_sale_def_t bad = d;
    bad.stock = 9;
    bad.starts_at_ms = 2000;
    bad.ends_at_ms = 1000;
    assert_int_equal(gw_sale_edit(inv, &bad, &info, why, sizeof(why)), CM_EINVAL);
    /* a stock below the units held: the inventory's refusal */
    bad = d;
    bad.stock = 1;
    assert_true(gw_sale_edit(inv, &bad, &info, why, sizeof(why)) < 0);
    assert_int_equal(inv_sale_get(inv, "s1", &info), 0);
    assert_int_equal(info.stock_total, 5);
    assert_int_equal(info.stock_left, 3);
    inv_close(inv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_rules),
        cmocka_unit_test(test_edit_refused_keeps_sale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
