/* Arrival schedule: reproducibility, rate profile, ticker timing with a fake
 * clock, and a real 1-second run whose send times are compared to the schedule. */
#include "common/cm_hist.h"
#include "common/cm_time.h"
#include "loadtest/lt_sched.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

static const lt_segment_t profile[] = {
    {LT_SEG_RAMP, 2.0, 100, 1000},
    {LT_SEG_SPIKE, 1.0, 5000, 5000},
    {LT_SEG_PAUSE, 0.5, 0, 0},
    {LT_SEG_DECAY, 2.0, 1000, 0},
};

static size_t count_in(const uint64_t *t, size_t n, double from_s, double to_s)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] >= (uint64_t)(from_s * 1e9) && t[i] < (uint64_t)(to_s * 1e9))
            c++;
    return c;
}

static void assert_near_poisson(size_t got, double want)
{
    /* 5 sigma of a Poisson count */
    double tol = 5 * sqrt(want) + 1;
    if (fabs((double)got - want) > tol)
        fail_msg("got %zu arrivals, expected %.0f +- %.0f", got, want, tol);
}

static void test_reproducible_and_sorted(void **state)
{
    (void)state;
    size_t n1, n2, n3;
    uint64_t *a = lt_sched_arrivals(profile, 4, 100, UINT64_MAX, 42, &n1);
    uint64_t *b = lt_sched_arrivals(profile, 4, 100, UINT64_MAX, 42, &n2);
    uint64_t *c = lt_sched_arrivals(profile, 4, 100, UINT64_MAX, 43, &n3);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1 * sizeof(*a));
    assert_true(n1 != n3 || memcmp(a, c, n1 * sizeof(*a)) != 0);
    for (size_t i = 1; i < n1; i++)
        assert_true(a[i - 1] <= a[i]);
    free(a);
    free(b);
    free(c);
}

static void test_profile_shape(void **state)
{
    (void)state;
    size_t n;
    uint64_t *t = lt_sched_arrivals(profile, 4, 100, UINT64_MAX, 7, &n);
    assert_near_poisson(n, lt_sched_expected(profile, 4, 100)); /* 1100+5000+1000 */
    assert_near_poisson(count_in(t, n, 0, 1), 1 * (100 + 550) / 2.0);
    assert_near_poisson(count_in(t, n, 1, 2), 1 * (550 + 1000) / 2.0);
    assert_near_poisson(count_in(t, n, 2, 3), 5000);
    assert_int_equal(count_in(t, n, 3.0, 3.5), 0); /* the pause */
    assert_near_poisson(count_in(t, n, 3.5, 4.5), (1000 + 500) / 2.0);
    assert_near_poisson(count_in(t, n, 4.5, 5.5), 500 / 2.0);
    free(t);
}

static void test_caps(void **state)
{
    (void)state;
    size_t n;
    uint64_t *t = lt_sched_arrivals(profile, 4, 2.5, UINT64_MAX, 7, &n);
    assert_true(t[n - 1] < 2500000000ull);
    assert_near_poisson(n, lt_sched_expected(profile, 4, 2.5));
    free(t);
    t = lt_sched_arrivals(profile, 4, 100, 300, 7, &n);
    assert_int_equal(n, 300);
    free(t);
}

static void test_heap_order(void **state)
{
    (void)state;
    lt_heap_t h = {0};
    for (uint64_t i = 0; i < 5000; i++)
        lt_heap_push(&h, (i * 7919) % 5003, i);
    lt_event_t ev, prev = {0, 0};
    size_t n = 0;
    while (lt_heap_pop(&h, &ev)) {
        assert_true(ev.at_ns >= prev.at_ns);
        assert_int_equal((ev.payload * 7919) % 5003, ev.at_ns);
        prev = ev;
        n++;
    }
    assert_int_equal(n, 5000);
    lt_heap_free(&h);
}

typedef struct fired {
    uint64_t sched[20000], now[20000];
    bool arrival[20000];
    size_t n;
    lt_ticker_t *t;
    bool add_followups;
} fired_t;

static void on_fire(void *ctx, uint64_t sched_ns, uint64_t now_ns, bool is_arrival,
                    uint64_t payload)
{
    fired_t *f = ctx;
    (void)payload;
    if (f->n < 20000) {
        f->sched[f->n] = sched_ns;
        f->now[f->n] = now_ns;
        f->arrival[f->n] = is_arrival;
        f->n++;
    }
    if (f->add_followups && is_arrival)
        lt_ticker_add(f->t, sched_ns + 2500000, payload); /* a retry 2.5 ms later */
}

static void test_fake_clock_schedule(void **state)
{
    (void)state;
    /* 10,000 sends over 1 s, driven by a fake clock in 1 ms steps: every send
     * fires at the first tick at or after its time, never early, in order. */
    const lt_segment_t seg[] = {{LT_SEG_PLATEAU, 1.0, 10000, 10000}};
    size_t n;
    uint64_t *arr = lt_sched_arrivals(seg, 1, 1.0, UINT64_MAX, 99, &n);
    fired_t *f = calloc(1, sizeof(*f));
    lt_ticker_t t;
    lt_ticker_init(&t, NULL, arr, n, on_fire, f);
    f->t = &t;
    f->add_followups = true;
    cm_time_set_fake(true, 1000000000ull, 0);
    t.t0_ns = cm_mono_ns();
    for (int ms = 0; ms <= 1010; ms++) {
        lt_ticker_run_due(&t, lt_ticker_now(&t));
        cm_time_advance_fake(1000000);
    }
    cm_time_set_fake(false, 0, 0);
    assert_true(lt_ticker_idle(&t));
    assert_int_equal(f->n, 2 * n); /* every arrival and every follow-up */
    size_t k = 0;
    for (size_t i = 0; i < f->n; i++) {
        assert_true(f->now[i] >= f->sched[i]);
        assert_true(f->now[i] - f->sched[i] < 1000000); /* within one tick */
        if (i)
            assert_true(f->sched[i] >= f->sched[i - 1]);
        if (f->arrival[i])
            assert_int_equal(f->sched[i], arr[k++]);
    }
    assert_int_equal(k, n);
    lt_heap_free(&t.heap);
    free(arr);
    free(f);
}

/* lt_ticker_deal: three loops' tickers over one schedule fire each arrival exactly once,
 * loop k the arrivals k, k+3, k+6, ..., each with its own index as payload. */
typedef struct dealt {
    uint64_t payload[4000];
    size_t n;
} dealt_t;

static void on_dealt(void *ctx, uint64_t sched_ns, uint64_t now_ns, bool is_arrival,
                     uint64_t payload)
{
    dealt_t *d = ctx;
    (void)sched_ns;
    (void)now_ns;
    assert_true(is_arrival);
    if (d->n < 4000)
        d->payload[d->n++] = payload;
}

static void test_deal_over_loops(void **state)
{
    (void)state;
    const lt_segment_t seg[] = {{LT_SEG_PLATEAU, 1.0, 1000, 1000}};
    size_t n;
    uint64_t *arr = lt_sched_arrivals(seg, 1, 1.0, UINT64_MAX, 7, &n);
    assert_true(n > 900 && n < 1100);
    dealt_t *d = calloc(3, sizeof(*d));
    lt_ticker_t t[3];
    for (size_t k = 0; k < 3; k++) {
        lt_ticker_init(&t[k], NULL, arr, n, on_dealt, &d[k]);
        lt_ticker_deal(&t[k], k, 3);
        lt_ticker_run_due(&t[k], 2000000000ull);
        assert_true(lt_ticker_idle(&t[k]));
    }
    assert_int_equal(d[0].n + d[1].n + d[2].n, n);
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(d[k].n, (n - k + 2) / 3);
        for (size_t i = 0; i < d[k].n; i++)
            assert_int_equal(d[k].payload[i], k + 3 * i);
    }
    free(d);
    free(arr);
}

/* One real run of n sends over 1 s on a libuv loop; returns the p99 lag in us. */
static uint64_t real_run(uint64_t seed)
{
    const lt_segment_t seg[] = {{LT_SEG_PLATEAU, 1.0, 5000, 5000}};
    size_t n;
    uint64_t *arr = lt_sched_arrivals(seg, 1, 1.0, UINT64_MAX, seed, &n);
    fired_t *f = calloc(1, sizeof(*f));
    uv_loop_t loop;
    uv_loop_init(&loop);
    lt_ticker_t t;
    lt_ticker_init(&t, &loop, arr, n, on_fire, f);
    f->t = &t;
    lt_ticker_start(&t);
    while (!lt_ticker_idle(&t) && lt_ticker_now(&t) < 3000000000ull)
        uv_run(&loop, UV_RUN_ONCE);
    lt_ticker_close(&t);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(f->n, n);
    cm_hist_t *h = malloc(sizeof(*h));
    cm_hist_init(h);
    for (size_t i = 0; i < f->n; i++) {
        assert_true(f->now[i] >= f->sched[i]);
        cm_hist_record(h, (f->now[i] - f->sched[i]) / 1000);
    }
    uint64_t p99 = cm_hist_percentile(h, 99);
    printf("# real 1 s run: %zu sends, lag behind schedule p50 %.3f ms p99 %.3f ms max %.3f ms\n",
           n, cm_hist_percentile(h, 50) / 1000.0, p99 / 1000.0, h->max_us / 1000.0);
    free(h);
    free(arr);
    free(f);
    return p99;
}

static void test_real_one_second_run(void **state)
{
    (void)state;
    /*
     * Every send fires, in order, never before its time (asserted in real_run).
     * How late is a figure, printed above, not an assertion: the machine is
     * shared, and timing belongs in benchmarks. The bound here only catches a
     * ticker that is broken (a send held for a whole tick of the run or more).
     */
    uint64_t p99 = real_run(5);
    assert_true(p99 < 500000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reproducible_and_sorted),
        cmocka_unit_test(test_profile_shape),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_heap_order),
        cmocka_unit_test(test_fake_clock_schedule),
        cmocka_unit_test(test_deal_over_loops),
        cmocka_unit_test(test_real_one_second_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
