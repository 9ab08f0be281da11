/* Space-saving heavy hitters against an exact count: the guarantees of cm_topk.h hold. */
#include "common/cm_topk.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define NKEYS 5000
#define NITEMS 200000

static uint64_t rng_state = 0x9876543;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A skewed stream: key i with weight ~ 1/(i+1) (Zipf, s = 1), plus three bots. */
static unsigned draw(void)
{
    static double cdf[NKEYS];
    static int ready;
    if (!ready) {
        double s = 0;
        for (int i = 0; i < NKEYS; i++)
            cdf[i] = (s += 1.0 / (i + 1));
        for (int i = 0; i < NKEYS; i++)
            cdf[i] /= s;
        ready = 1;
    }
    double u = (double)(rnd() >> 11) / 9007199254740992.0;
    unsigned lo = 0, hi = NKEYS - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void key_of(unsigned k, char *buf, size_t *len)
{
    *len = (size_t)snprintf(buf, 32, "user-%u", k);
}

static void check_guarantees(const cm_topk_t *t, const uint64_t *exact, uint64_t n)
{
    uint64_t bound = n / CM_TOPK_SLOTS;
    assert_int_equal(t->total, n);
    /* Every tracked key: true <= count <= true + error, error <= N/k. */
    static cm_topk_entry_t top[CM_TOPK_SLOTS];
    size_t ntop = cm_topk_sorted(t, top, CM_TOPK_SLOTS);
    for (size_t i = 0; i < ntop; i++) {
        const cm_topk_entry_t *e = &top[i];
        unsigned k;
        char tmp[CM_TOPK_KEY_MAX + 1];
        memcpy(tmp, e->key, e->len);
        tmp[e->len] = 0;
        assert_int_equal(sscanf(tmp, "user-%u", &k), 1);
        assert_true(e->count >= exact[k]);
        assert_true(e->count <= exact[k] + e->error);
        assert_true(e->error <= bound);
    }
    /* Every key above N/k is tracked. */
    for (unsigned k = 0; k < NKEYS; k++) {
        if (exact[k] <= bound)
            continue;
        char buf[32];
        size_t len;
        key_of(k, buf, &len);
        int found = 0;
        for (size_t i = 0; i < ntop; i++)
            if (top[i].len == len && memcmp(top[i].key, buf, len) == 0)
                found = 1;
        assert_true(found);
    }
}

static void test_against_exact(void **state)
{
    (void)state;
    static cm_topk_t t;
    static uint64_t exact[NKEYS];
    memset(exact, 0, sizeof(exact));
    cm_topk_init(&t);
    for (unsigned i = 0; i < NITEMS; i++) {
        unsigned k = draw();
        if (i % 10 < 3)
            k = 4000 + i % 10; /* three bots: 10% of the stream each, from the tail */
        exact[k]++;
        char buf[32];
        size_t len;
        key_of(k, buf, &len);
        cm_topk_add(&t, buf, len);
    }
    check_guarantees(&t, exact, NITEMS);
    /* The top three are the bots, in some order, with exact-ish counts. */
    cm_topk_entry_t top[CM_TOPK_SLOTS];
    size_t n = cm_topk_sorted(&t, top, CM_TOPK_SLOTS);
    assert_true(n == CM_TOPK_SLOTS);
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(top[i].key, "user-400", 8);
        assert_true(top[i].count >= NITEMS / 10);
        assert_true(top[i].count <= NITEMS / 10 + NITEMS / CM_TOPK_SLOTS);
    }
    for (size_t i = 1; i < n; i++)
        assert_true(top[i - 1].count >= top[i].count);
}

static void test_merge_keeps_guarantees(void **state)
{
    (void)state;
    static cm_topk_t a, b, m;
    static uint64_t exact[NKEYS];
    memset(exact, 0, sizeof(exact));
    cm_topk_init(&a);
    cm_topk_init(&b);
    for (unsigned i = 0; i < NITEMS; i++) {
        unsigned k = i % 7 == 0 ? 4242 : draw();
        exact[k]++;
        char buf[32];
        size_t len;
        key_of(k, buf, &len);
        cm_topk_add(i & 1 ? &a : &b, buf, len);
    }
    cm_topk_init(&m);
    cm_topk_merge(&m, &a);
    cm_topk_merge(&m, &b);
    /* Merged errors are bounded by the sum of both streams' bounds. */
    check_guarantees(&m, exact, NITEMS);
    cm_topk_entry_t top[1];
    assert_int_equal(cm_topk_sorted(&m, top, 1), 1);
    assert_memory_equal(top[0].key, "user-4242", 9);
}

static void test_small_and_long_keys(void **state)
{
    (void)state;
    cm_topk_t t;
    cm_topk_init(&t);
    cm_topk_entry_t out[4];
    assert_int_equal(cm_topk_sorted(&t, out, 4), 0);
    char longkey[200];
    memset(longkey, 'x', sizeof(longkey));
    cm_topk_add(&t, longkey, sizeof(longkey));
    cm_topk_add(&t, longkey, CM_TOPK_KEY_MAX + 5); /* same after the cut */
    cm_topk_add(&t, "a", 1);
    assert_int_equal(cm_topk_sorted(&t, out, 4), 2);
    assert_int_equal(out[0].count, 2);
    assert_int_equal(out[0].len, CM_TOPK_KEY_MAX);
    assert_int_equal(out[0].error, 0);
    assert_int_equal(out[1].count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_exact),
        cmocka_unit_test(test_merge_keeps_guarantees),
        cmocka_unit_test(test_small_and_long_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
