/* Token bucket exactness, policy changes, refunds and the timing fields. */
#include "common/cm_rate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define SEC 1000000000ull

static bool take(cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t now, cm_rate_result_t *r)
{
    cm_rate_result_t tmp;
    cm_bucket_take(b, p, now, 1, r ? r : &tmp);
    return (r ? r : &tmp)->allowed;
}

/*
 * Drains the bucket at every tick from t0 to t0 + span (inclusive) and returns
 * the number admitted. `step` is the tick; with jitter the ticks are uneven.
 */
static uint64_t drain_over(const cm_rate_policy_t *p, uint64_t t0, uint64_t span, uint64_t step,
                           bool jitter)
{
    cm_bucket_t b = {0};
    uint64_t n = 0, t = t0, x = 88172645463325252ull;
    for (;;) {
        while (take(&b, p, t, NULL))
            n++;
        if (t == t0 + span)
            break;
        uint64_t d = step;
        if (jitter) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            d = 1 + x % (2 * step);
        }
        t = t + d > t0 + span ? t0 + span : t + d;
    }
    return n;
}

static void test_exact_high_rates(void **state)
{
    (void)state;
    cm_rate_policy_t p100k = {.rate_milli = 100000ull * 1000, .burst = 50};
    cm_rate_policy_t p1m = {.rate_milli = 1000000ull * 1000, .burst = 1000};
    assert_int_equal(drain_over(&p100k, 0, SEC, 1000, false), 100000 + 50);
    assert_int_equal(drain_over(&p100k, 7 * SEC + 3, SEC, 777, true), 100000 + 50);
    assert_int_equal(drain_over(&p1m, 0, SEC, 1000, false), 1000000 + 1000);
    assert_int_equal(drain_over(&p1m, 123456789, SEC, 500, true), 1000000 + 1000);
    /* 1e9 req/s, the documented maximum, over a millisecond. */
    cm_rate_policy_t pmax = {.rate_milli = CM_RATE_MILLI_MAX, .burst = 1};
    assert_int_equal(drain_over(&pmax, SEC, SEC / 1000, 1, false), 1000000 + 1);
}

static void test_exact_low_rates(void **state)
{
    (void)state;
    cm_rate_policy_t p3 = {.rate_milli = 3000, .burst = 5};
    assert_int_equal(drain_over(&p3, SEC, 1000 * SEC, SEC / 1000, false), 3000 + 5);
    assert_int_equal(drain_over(&p3, SEC, 1000 * SEC, SEC / 1000, true), 3000 + 5);
    cm_rate_policy_t phalf = {.rate_milli = 500, .burst = 2};
    assert_int_equal(drain_over(&phalf, 0, 1000 * SEC, SEC / 100, false), 500 + 2);
    assert_int_equal(drain_over(&phalf, 0, 1000 * SEC - 1, SEC / 100, false), 499 + 2);
    /* 0.001 req/s: one request per 1000 s. */
    cm_rate_policy_t pmilli = {.rate_milli = 1, .burst = 1};
    assert_int_equal(drain_over(&pmilli, 0, 10000 * SEC, SEC, false), 10 + 1);
}

static void test_timing_fields(void **state)
{
    (void)state;
    cm_rate_policy_t p = {.rate_milli = 2000, .burst = 2}; /* 2/s */
    cm_bucket_t b = {0};
    cm_rate_result_t r;
    uint64_t t = 5 * SEC;
    assert_true(take(&b, &p, t, &r));
    assert_int_equal(r.remaining, 1);
    assert_int_equal(r.reset_ns, SEC / 2);
    assert_true(take(&b, &p, t, &r));
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ns, SEC);
    assert_false(take(&b, &p, t, &r));
    assert_int_equal(r.retry_after_ns, SEC / 2);
    assert_int_equal(r.reset_ns, SEC);
    assert_false(take(&b, &p, t + SEC / 2 - 1, &r));
    assert_int_equal(r.retry_after_ns, 1);
    assert_true(take(&b, &p, t + SEC / 2, &r));
    /* A cost beyond the burst can never be met. */
    cm_bucket_t b2 = {0};
    cm_bucket_take(&b2, &p, t, 3, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, UINT64_MAX);
    assert_int_equal(r.remaining, 2);
}

static void test_off_and_idle(void **state)
{
    (void)state;
    cm_rate_policy_t off = {0, 0};
    cm_bucket_t b = {0};
    cm_rate_result_t r;
    for (int i = 0; i < 1000; i++)
        assert_true(take(&b, &off, 1, &r));
    assert_int_equal(r.remaining, UINT64_MAX);
    assert_true(cm_bucket_is_idle(&b, &off, 1));

    cm_rate_policy_t p = {.rate_milli = 1000, .burst = 3};
    cm_bucket_t c = {0};
    assert_true(cm_bucket_is_idle(&c, &p, 0));
    assert_true(take(&c, &p, 0, &r)); /* now_ns 0 is a valid time */
    assert_false(cm_bucket_is_idle(&c, &p, 0));
    assert_false(cm_bucket_is_idle(&c, &p, SEC - 1));
    assert_true(cm_bucket_is_idle(&c, &p, SEC));
    /* A used bucket at time 0 is not "new": it does not refill to full. */
    assert_true(take(&c, &p, 0, &r));
    assert_true(take(&c, &p, 0, &r));
    assert_false(take(&c, &p, 0, &r));
}

static void test_policy_change_keeps_tokens(void **state)
{
    (void)state;
    cm_rate_policy_t p = {.rate_milli = 1, .burst = 10}; /* refill negligible */
    cm_bucket_t b = {0};
    cm_rate_result_t r;
    for (int i = 0; i < 3; i++)
        assert_true(take(&b, &p, SEC, &r));
    assert_int_equal(r.remaining, 7);
    cm_rate_policy_t bigger = {.rate_milli = 1, .burst = 20};
    assert_true(take(&b, &bigger, SEC, &r));
    assert_int_equal(r.remaining, 6); /* kept, not refilled to 20 */
    cm_rate_policy_t smaller = {.rate_milli = 1, .burst = 4};
    assert_true(take(&b, &smaller, SEC, &r));
    assert_int_equal(r.remaining, 3); /* clamped to 4, minus one */
    assert_int_equal(r.reset_ns, 1000ull * SEC);
}

static void test_refund(void **state)
{
    (void)state;
    cm_rate_policy_t p = {.rate_milli = 1, .burst = 2};
    cm_bucket_t b = {0};
    cm_rate_result_t r;
    assert_true(take(&b, &p, SEC, &r));
    assert_true(take(&b, &p, SEC, &r));
    assert_false(take(&b, &p, SEC, &r));
    cm_bucket_refund(&b, &p, 1);
    assert_true(take(&b, &p, SEC, &r));
    assert_int_equal(r.remaining, 0);
    cm_bucket_refund(&b, &p, 5); /* clamps at capacity */
    assert_true(take(&b, &p, SEC, &r));
    assert_int_equal(r.remaining, 1);
    cm_bucket_t fresh = {0};
    cm_bucket_refund(&fresh, &p, 1); /* new bucket stays new */
    assert_int_equal(fresh.last_ns, 0);
}

static void test_no_overflow_extremes(void **state)
{
    (void)state;
    cm_rate_policy_t p = {.rate_milli = CM_RATE_MILLI_MAX, .burst = CM_RATE_BURST_MAX};
    cm_bucket_t b = {0};
    cm_rate_result_t r;
    assert_true(take(&b, &p, 1, &r));
    assert_int_equal(r.remaining, CM_RATE_BURST_MAX - 1);
    assert_true(take(&b, &p, (1ull << 62), &r)); /* huge elapsed: full again, no wrap */
    assert_int_equal(r.remaining, CM_RATE_BURST_MAX - 1);
    /* Time going backwards counts as no time passed. */
    cm_rate_policy_t q = {.rate_milli = 1000, .burst = 1};
    cm_bucket_t c = {0};
    assert_true(take(&c, &q, 10 * SEC, &r));
    assert_false(take(&c, &q, 5 * SEC, &r));
    assert_false(take(&c, &q, 11 * SEC - 1, &r));
    assert_true(take(&c, &q, 11 * SEC, &r));
    /* Slowest rate, largest burst: reset in 1e19 ns still fits. */
    cm_rate_policy_t slow = {.rate_milli = 1, .burst = CM_RATE_BURST_MAX};
    cm_bucket_t d = {0};
    cm_bucket_take(&d, &slow, 1, CM_RATE_BURST_MAX, &r);
    assert_true(r.allowed);
    assert_int_equal(r.reset_ns, CM_RATE_BURST_MAX * CM_RATE_PICO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_high_rates),  cmocka_unit_test(test_exact_low_rates),
        cmocka_unit_test(test_timing_fields),     cmocka_unit_test(test_off_and_idle),
        cmocka_unit_test(test_policy_change_keeps_tokens), cmocka_unit_test(test_refund),
        cmocka_unit_test(test_no_overflow_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
