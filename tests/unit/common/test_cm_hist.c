/* Log-linear histogram: percentiles against exact sorted data, merge, edges. */
#include "common/cm_hist.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint64_t rng_state = 0x1234567;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* exact percentile with the same rank rule as cm_hist: ceil(p% of n), 1-based */
static uint64_t exact(const uint64_t *sorted, size_t n, double p)
{
    double want = p / 100.0 * (double)n;
    size_t rank = (size_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    return sorted[rank - 1];
}

static void check_against_exact(uint64_t *v, size_t n)
{
    cm_hist_t *h = malloc(sizeof(*h));
    cm_hist_init(h);
    for (size_t i = 0; i < n; i++)
        cm_hist_record(h, v[i]);
    qsort(v, n, sizeof(*v), cmp_u64);
    static const double ps[] = {1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        uint64_t want = exact(v, n, ps[i]);
        uint64_t got = cm_hist_percentile(h, ps[i]);
        double err = fabs((double)got - (double)want) / (double)want;
        if (err > 0.01)
            fail_msg("p%g: got %llu want %llu (err %.4f)", ps[i], (unsigned long long)got,
                     (unsigned long long)want, err);
    }
    assert_int_equal(h->count, n);
    assert_int_equal(h->min_us, v[0]);
    assert_int_equal(h->max_us, v[n - 1]);
    free(h);
}

static void test_percentiles_log_uniform(void **state)
{
    (void)state;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof(*v));
    /* log-uniform from 1 us to 60 s: every octave of the range is exercised */
    for (size_t i = 0; i < N; i++) {
        double u = (double)(rnd() >> 11) * 0x1.0p-53;
        v[i] = (uint64_t)exp(u * log(60e6));
        if (v[i] < 1)
            v[i] = 1;
    }
    check_against_exact(v, N);
    free(v);
}

static void test_percentiles_latency_like(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint64_t *v = malloc(N * sizeof(*v));
    /* a fast mode around 800 us and a slow tail of 50-500 ms */
    for (size_t i = 0; i < N; i++) {
        uint64_t r = rnd();
        v[i] = (r % 100 < 97) ? 700 + (r >> 20) % 300 : 50000 + (r >> 20) % 450000;
    }
    check_against_exact(v, N);
    free(v);
}

static void test_small_values_exact(void **state)
{
    (void)state;
    cm_hist_t *h = malloc(sizeof(*h));
    cm_hist_init(h);
    for (uint64_t i = 1; i <= 100; i++)
        cm_hist_record(h, i);
    assert_int_equal(cm_hist_percentile(h, 50), 50);
    assert_int_equal(cm_hist_percentile(h, 99), 99);
    assert_int_equal(cm_hist_percentile(h, 100), 100);
    assert_int_equal(cm_hist_percentile(h, 0), 1);
    free(h);
}

static void test_bucket_width_bound(void **state)
{
    (void)state;
    /* every bucket is at most 1/128 of its lower bound wide, and buckets tile the range */
    uint64_t prev_hi = 0;
    for (uint32_t i = 1; i < CM_HIST_BUCKETS; i++) {
        uint64_t lo, hi;
        cm_hist_bucket_range(i, &lo, &hi);
        if (lo > CM_HIST_MAX_US)
            break; /* past 60 s values are clamped: these buckets stay empty */
        assert_int_equal(lo, prev_hi + 1);
        assert_true((double)(hi - lo + 1) <= (double)lo / 128.0 + 1.0);
        assert_int_equal(cm_hist_index(lo), i);
        assert_int_equal(cm_hist_index(hi), i);
        prev_hi = hi;
    }
    assert_true(prev_hi >= CM_HIST_MAX_US);
}

static void test_clamp_and_empty(void **state)
{
    (void)state;
    cm_hist_t *h = malloc(sizeof(*h));
    cm_hist_init(h);
    assert_int_equal(cm_hist_percentile(h, 99), 0);
    assert_true(cm_hist_mean(h) == 0.0);
    cm_hist_record(h, 3600ull * 1000000); /* an hour: clamped to 60 s */
    assert_int_equal(h->max_us, CM_HIST_MAX_US);
    assert_int_equal(cm_hist_percentile(h, 50), CM_HIST_MAX_US);
    free(h);
}

static void test_merge_equals_single(void **state)
{
    (void)state;
    cm_hist_t *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    cm_hist_init(a);
    cm_hist_init(b);
    cm_hist_init(all);
    for (int i = 0; i < 50000; i++) {
        uint64_t v = 1 + rnd() % 5000000;
        cm_hist_record(i % 3 ? a : b, v);
        cm_hist_record(all, v);
    }
    cm_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min_us, all->min_us);
    assert_int_equal(a->max_us, all->max_us);
    assert_memory_equal(a->buckets, all->buckets, sizeof(a->buckets));
    for (double p = 1; p < 100; p += 7.5)
        assert_int_equal(cm_hist_percentile(a, p), cm_hist_percentile(all, p));
    /* merging an empty histogram changes nothing */
    cm_hist_init(b);
    cm_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min_us, all->min_us);
    free(a);
    free(b);
    free(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentiles_log_uniform),
        cmocka_unit_test(test_percentiles_latency_like),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_bucket_width_bound),
        cmocka_unit_test(test_clamp_and_empty),
        cmocka_unit_test(test_merge_equals_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
