/* Order ids: uniqueness across threads, monotonicity under clock steps,
 * sequence borrowing, text form. */
#include "common/cm_id.h"
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define T0 (CM_ID_EPOCH_MS + 86400000LL * 800) /* some day in 2026 */

enum { N_THREADS = 4, PER_THREAD = 250000 };

typedef struct {
    cm_id_gen_t *g;
    uint64_t *ids;
} worker_t;

static void *gen_worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < PER_THREAD; i++)
        w->ids[i] = cm_id_next(w->g, cm_wall_ms());
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_unique_1m_4_threads(void **state)
{
    (void)state;
    cm_id_gen_t g;
    cm_id_gen_init(&g, 7);
    uint64_t *all = malloc(sizeof(uint64_t) * N_THREADS * PER_THREAD);
    assert_non_null(all);
    pthread_t th[N_THREADS];
    worker_t w[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t].g = &g;
        w[t].ids = all + (size_t)t * PER_THREAD;
        assert_int_equal(pthread_create(&th[t], NULL, gen_worker, &w[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    /* each thread sees strictly increasing ids */
    for (int t = 0; t < N_THREADS; t++)
        for (int i = 1; i < PER_THREAD; i++)
            assert_true(w[t].ids[i] > w[t].ids[i - 1]);
    size_t n = (size_t)N_THREADS * PER_THREAD;
    qsort(all, n, sizeof(uint64_t), cmp_u64);
    for (size_t i = 1; i < n; i++)
        assert_true(all[i] != all[i - 1]);
    for (size_t i = 0; i < n; i += 997)
        assert_int_equal(cm_id_node(all[i]), 7);
    free(all);
}

static void test_monotonic_when_clock_steps_back(void **state)
{
    (void)state;
    cm_id_gen_t g;
    cm_id_gen_init(&g, 1);
    uint64_t a = cm_id_next(&g, T0);
    uint64_t b = cm_id_next(&g, T0 - 5000); /* clock stepped back 5 s */
    uint64_t c = cm_id_next(&g, T0 - 4000);
    uint64_t d = cm_id_next(&g, T0 + 1);
    assert_true(b > a);
    assert_true(c > b);
    assert_true(d > c);
    assert_int_equal(cm_id_time_ms(a), T0);
    assert_int_equal(cm_id_time_ms(b), T0); /* stays on the last ms */
    assert_int_equal(cm_id_time_ms(d), T0 + 1);
    /* before the epoch: clamped, still increasing */
    cm_id_gen_t g2;
    cm_id_gen_init(&g2, 2);
    uint64_t e = cm_id_next(&g2, 0);
    uint64_t f = cm_id_next(&g2, 0);
    assert_true(f > e);
}

static void test_borrow_past_4096_per_ms(void **state)
{
    (void)state;
    cm_id_gen_t g;
    cm_id_gen_init(&g, 1023);
    uint64_t prev = 0;
    for (int i = 0; i < 4096 * 3 + 5; i++) {
        uint64_t id = cm_id_next(&g, T0);
        assert_true(id > prev);
        assert_int_equal(cm_id_node(id), 1023);
        prev = id;
    }
    /* 3 full ms were borrowed: the last id is in T0+3 */
    assert_int_equal(cm_id_time_ms(prev), T0 + 3);
    /* the clock catching up does not go backwards either */
    uint64_t next = cm_id_next(&g, T0 + 1);
    assert_true(next > prev);
    uint64_t later = cm_id_next(&g, T0 + 10);
    assert_int_equal(cm_id_time_ms(later), T0 + 10);
    assert_int_equal(later & 0xFFF, 0);
}

static void test_format_parse_round_trip(void **state)
{
    (void)state;
    char buf[CM_ID_TEXT_LEN + 1];
    uint64_t vals[] = {0, 1, 31, 32, UINT64_MAX, UINT64_C(0x0123456789ABCDEF),
                       UINT64_C(1) << 63};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        cm_id_format(vals[i], buf);
        assert_int_equal(strlen(buf), CM_ID_TEXT_LEN);
        uint64_t back = 0;
        assert_int_equal(cm_id_parse(buf, strlen(buf), &back), 0);
        assert_true(back == vals[i]);
        for (size_t k = 0; k < CM_ID_TEXT_LEN; k++)
            assert_null(strchr("ILOU", buf[k]));
    }
    cm_id_format(0, buf);
    assert_string_equal(buf, "0000000000000");
    cm_id_format(UINT64_MAX, buf);
    assert_string_equal(buf, "FZZZZZZZZZZZZ");
    cm_id_format(32, buf);
    assert_string_equal(buf, "0000000000010");
    uint64_t v;
    assert_int_equal(cm_id_parse("fzzzzzzzzzzzz", 13, &v), 0); /* lower case accepted */
    assert_true(v == UINT64_MAX);
    assert_int_equal(cm_id_parse("GZZZZZZZZZZZZ", 13, &v), CM_EINVAL); /* > 64 bits */
    assert_int_equal(cm_id_parse("000000000000", 12, &v), CM_EINVAL);
    assert_int_equal(cm_id_parse("00000000000000", 14, &v), CM_EINVAL);
    assert_int_equal(cm_id_parse("000000000000U", 13, &v), CM_EINVAL);
    assert_int_equal(cm_id_parse("000000000000-", 13, &v), CM_EINVAL);
    assert_int_equal(cm_id_parse(NULL, 13, &v), CM_EINVAL);
}

static void test_text_order_is_numeric_order(void **state)
{
    (void)state;
    srand(12345);
    char a[CM_ID_TEXT_LEN + 1], b[CM_ID_TEXT_LEN + 1];
    for (int i = 0; i < 100000; i++) {
        uint64_t x = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
        uint64_t y = (i & 1) ? x + (uint64_t)(rand() % 1000) : ((uint64_t)rand() << 33) ^ (uint64_t)rand();
        cm_id_format(x, a);
        cm_id_format(y, b);
        int sc = strcmp(a, b);
        int nc = x < y ? -1 : x > y;
        assert_int_equal(sc < 0 ? -1 : sc > 0, nc);
    }
}

static void test_distinct_nodes_never_collide(void **state)
{
    (void)state;
    cm_id_gen_t g1, g2;
    cm_id_gen_init(&g1, 1);
    cm_id_gen_init(&g2, 2);
    /* same clock, same burst: the node bits keep them apart */
    for (int i = 0; i < 10000; i++) {
        uint64_t a = cm_id_next(&g1, T0 + i / 100);
        uint64_t b = cm_id_next(&g2, T0 + i / 100);
        assert_true(a != b);
        assert_int_equal(cm_id_node(a), 1);
        assert_int_equal(cm_id_node(b), 2);
        assert_int_equal(cm_id_time_ms(a), cm_id_time_ms(b));
    }
}

/* A lease bounds the ids: none past its end, none once revoked, the node of the lease. */
static void test_lease_bounds_ids(void **state)
{
    (void)state;
    cm_id_gen_t g;
    cm_id_gen_init(&g, 5);
    cm_id_gen_lease(&g, 6, T0 + 10);
    uint64_t a = cm_id_next(&g, T0);
    assert_int_equal(cm_id_node(a), 6);
    assert_int_equal(cm_id_gen_node(&g), 6);
    assert_int_equal(cm_id_next(&g, T0 + 11), 0); /* past the end: nothing handed out */
    assert_int_equal(cm_id_gen_last_ms(&g), T0);
    uint64_t b = cm_id_next(&g, T0 + 10);
    assert_true(b > a);
    /* 4096 more in the lease's last ms would borrow past its end: refused */
    int made = 0;
    for (int i = 0; i < 5000; i++)
        made += cm_id_next(&g, T0 + 10) != 0;
    assert_int_equal(made, 4095);
    cm_id_gen_revoke(&g);
    assert_int_equal(cm_id_next(&g, T0 + 5), 0);
    assert_int_equal(cm_id_gen_node(&g), 6);
    cm_id_gen_lease(&g, 7, T0 + 100);
    uint64_t c = cm_id_next(&g, T0 + 20);
    assert_int_equal(cm_id_node(c), 7);
    assert_int_equal(cm_id_time_ms(c), T0 + 20);
}

/* A node id taken over: the new holder starts after the floor the old one wrote, so
 * their ids never meet even when both make ids in the same milliseconds. */
static void test_after_floor_no_repeat(void **state)
{
    (void)state;
    cm_id_gen_t old, nu;
    cm_id_gen_init(&old, 9);
    cm_id_gen_init(&nu, 9);
    int64_t floor = T0 + 50;
    cm_id_gen_lease(&old, 9, floor);
    cm_id_gen_after_ms(&nu, floor);
    cm_id_gen_lease(&nu, 9, T0 + 1000);
    uint64_t first = cm_id_next(&nu, T0);
    assert_int_equal(cm_id_time_ms(first), floor + 1); /* borrowed past the floor */
    for (int64_t t = T0; t < T0 + 100; t++) {
        uint64_t a = cm_id_next(&old, t);
        uint64_t b = cm_id_next(&nu, t);
        assert_true(b != 0);
        assert_true(a == 0 || cm_id_time_ms(a) <= floor);
        assert_true(cm_id_time_ms(b) > floor);
        assert_true(a != b);
    }
    /* cm_id_gen_after never moves back */
    cm_id_gen_after(&nu, first);
    assert_true(cm_id_next(&nu, T0) > first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unique_1m_4_threads),
        cmocka_unit_test(test_monotonic_when_clock_steps_back),
        cmocka_unit_test(test_borrow_past_4096_per_ms),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_text_order_is_numeric_order),
        cmocka_unit_test(test_distinct_nodes_never_collide),
        cmocka_unit_test(test_lease_bounds_ids),
        cmocka_unit_test(test_after_floor_no_repeat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
