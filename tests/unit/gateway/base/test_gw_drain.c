/* The graceful stop's HTTP rules (gateway/base/gw_drain.h): /readyz is 503
 * from the stop signal on, a request is served through the drain grace and
 * refused, its connection closed, after it; a second signal skips the grace. */
#include "gateway/base/gw_drain.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_phase(void **state)
{
    (void)state;
    assert_int_equal(gw_drain_phase(false, false), GW_DRAIN_SERVING);
    assert_int_equal(gw_drain_phase(true, false), GW_DRAIN_LEAVING);
    assert_int_equal(gw_drain_phase(true, true), GW_DRAIN_DRAINING);
    /* gw_server_stop without a signal (a start that failed, a test) drains too */
    assert_int_equal(gw_drain_phase(false, true), GW_DRAIN_DRAINING);
}

static void test_ready_503_from_the_signal_on(void **state)
{
    (void)state;
    assert_true(gw_drain_ready(true, GW_DRAIN_SERVING, false));
    assert_false(gw_drain_ready(false, GW_DRAIN_SERVING, false)); /* starting up */
    assert_false(gw_drain_ready(true, GW_DRAIN_SERVING, true));   /* stale keys */
    assert_false(gw_drain_ready(true, GW_DRAIN_LEAVING, false));  /* the grace */
    assert_false(gw_drain_ready(true, GW_DRAIN_DRAINING, false));
}

static void test_served_through_the_grace_refused_after(void **state)
{
    (void)state;
    assert_false(gw_drain_refuses(GW_DRAIN_SERVING));
    assert_false(gw_drain_refuses(GW_DRAIN_LEAVING));
    assert_true(gw_drain_refuses(GW_DRAIN_DRAINING));
}

static void test_second_signal_skips_the_grace(void **state)
{
    (void)state;
    assert_int_equal(gw_drain_grace_ms(5000, false), 5000);
    assert_int_equal(gw_drain_grace_ms(0, false), 0);
    assert_int_equal(gw_drain_grace_ms(5000, true), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase),
        cmocka_unit_test(test_ready_503_from_the_signal_on),
        cmocka_unit_test(test_served_through_the_grace_refused_after),
        cmocka_unit_test(test_second_signal_skips_the_grace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
