/*
 * The dashboard ring's quantile (gw_ring_quantile): interpolated inside the
 * bucket the rank falls in, not snapped to the bucket's upper bound, and equal
 * to Prometheus's histogram_quantile on the same buckets (its rule: lower edge
 * of the first bucket 0, a rank in the open last bucket gives the last bound).
 */
#include "gateway/ctl/gw_ring.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static const uint64_t bounds[] = {50, 100, 250, 500, 1000};
#define NB (sizeof(bounds) / sizeof(bounds[0]))

static void test_empty(void **state)
{
    (void)state;
    uint64_t c[NB + 1] = {0};
    assert_true(gw_ring_quantile(c, bounds, NB, 0.99) < 0);
}

static void test_interpolates_inside_the_bucket(void **state)
{
    (void)state;
    /* 100 answers, all in (100, 250]: p50 is half way, p99 near the top, neither 250 */
    uint64_t c[NB + 1] = {0, 0, 100, 0, 0, 0};
    assert_float_equal(gw_ring_quantile(c, bounds, NB, 0.50), 175.0, 1e-9);
    assert_float_equal(gw_ring_quantile(c, bounds, NB, 0.99), 248.5, 1e-9);
    /* 10 in the first bucket [0, 50], 90 in (50, 100]: p50 = 50 + 50 * (50 - 10) / 90 */
    uint64_t d[NB + 1] = {10, 90, 0, 0, 0, 0};
    assert_float_equal(gw_ring_quantile(d, bounds, NB, 0.50), 50.0 + 50.0 * 40.0 / 90.0, 1e-9);
    assert_float_equal(gw_ring_quantile(d, bounds, NB, 0.05), 25.0, 1e-9);
}

static void test_skips_empty_buckets_and_open_top(void **state)
{
    (void)state;
    /* the rank exactly at a bucket's end belongs to that bucket, not to the empty ones after */
    uint64_t c[NB + 1] = {0, 50, 0, 0, 50, 0};
    assert_float_equal(gw_ring_quantile(c, bounds, NB, 0.50), 100.0, 1e-9);
    assert_float_equal(gw_ring_quantile(c, bounds, NB, 0.75), 750.0, 1e-9);
    /* above the last bound: the last bound (nothing to interpolate towards) */
    uint64_t d[NB + 1] = {0, 0, 0, 0, 1, 99};
    assert_float_equal(gw_ring_quantile(d, bounds, NB, 0.99), 1000.0, 1e-9);
    assert_float_equal(gw_ring_quantile(d, bounds, NB, 0.01), 1000.0, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_interpolates_inside_the_bucket),
        cmocka_unit_test(test_skips_empty_buckets_and_open_top),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
