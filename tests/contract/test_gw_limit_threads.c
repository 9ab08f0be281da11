/*
 * gw_limit under concurrency (runs under TSan in CI): 8 threads on one bucket
 * with a frozen clock admit exactly `burst` in total; refunds stay exact when
 * the global bucket refuses; many distinct users churn a table at its cap
 * while policies change, and the stats add up.
 */
#include "gateway/base/gw_limit.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#define NTHREADS 8
#define SEC 1000000000ull
#define T0 (1000 * SEC)

typedef struct worker {
    gw_limits_t *l;
    int id;
    int iters;
    int mode;
    uint64_t admitted;
    uint64_t refused_by[GW_SCOPE_COUNT];
} worker_t;

enum { SAME_USER, SAME_GLOBAL, SAME_SALE, DISTINCT_USERS, SALE_CHURN, SALE_HOT, RULE_FLIP };

#define CHURN_SALES 600 /* through GW_LIMIT_SALE_SLOTS (256) slots */
#define HOT_SALES 200   /* fit in the slots */
static _Atomic uint64_t per_sale[CHURN_SALES]; /* admitted, by sale index */

static _Atomic uint64_t fake_clock;
static _Atomic int stop_setter;
static _Atomic int setter_violations; /* cmocka asserts must stay on the main thread */

static _Atomic int readers_started, readers_done;
static _Atomic int go = 1; /* 0: the readers wait for the rule setter to begin */
/* 1: a reader done with its admits stays online, passing quiescent points,
 * until the rule setter has seen a set freed (bounded: 10 s), so that the
 * check below does not hang on the scheduler: on a loaded 2-core machine one
 * of 8 readers can be off the CPU for all of the others' admits, and nothing
 * can be freed while it holds an old set. */
static _Atomic int hold_until_reclaimed;
static _Atomic uint64_t swaps, reclaimed_while_read;

static void *run(void *arg)
{
    worker_t *w = arg;
    char user[48], sale[32];
    gw_limit_verdict_t v;
    atomic_fetch_add(&readers_started, 1);
    while (!atomic_load(&go))
        sched_yield();
    for (int i = 0; i < w->iters; i++) {
        uint64_t now = T0;
        int idx = -1;
        const char *u = "alice", *s = NULL;
        switch (w->mode) {
        case SAME_USER:
            break;
        case SAME_GLOBAL:
            snprintf(user, sizeof user, "t%d", w->id);
            u = user;
            break;
        case SAME_SALE:
            s = "sale-1";
            break;
        case RULE_FLIP: /* sale-1, and the sale whose rule comes and goes */
            s = i % 2 ? "other" : "sale-1";
            break;
        case DISTINCT_USERS:
            snprintf(user, sizeof user, "t%d-u%d", w->id, i);
            u = user;
            now = atomic_fetch_add(&fake_clock, 20000); /* 20 µs a request */
            break;
        case SALE_CHURN:
            idx = (i * 7 + w->id) % CHURN_SALES;
            snprintf(sale, sizeof sale, "sale-%d", idx);
            s = sale;
            now = atomic_fetch_add(&fake_clock, 1000);
            break;
        case SALE_HOT:
            idx = (i * 7 + w->id) % HOT_SALES;
            snprintf(sale, sizeof sale, "hot-%d", idx);
            s = sale;
            now = atomic_fetch_add(&fake_clock, 1000);
            break;
        }
        gw_limits_admit(w->l, u, strlen(u), "127.0.0.1", 9, s, s ? strlen(s) : 0, now, &v);
        /* between two admits: a quiescent point, as a worker's loop iteration
         * ends (ignored by a limiter that declared no readers) */
        gw_limits_quiescent(w->l, (unsigned)w->id);
        if (v.allowed) {
            w->admitted++;
            if (idx >= 0)
                atomic_fetch_add(&per_sale[idx], 1);
        } else {
            w->refused_by[v.scope]++;
        }
    }
    if (atomic_load(&hold_until_reclaimed)) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            gw_limits_quiescent(w->l, (unsigned)w->id);
            sched_yield();
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while (!atomic_load(&reclaimed_while_read) && t.tv_sec - t0.tv_sec < 10);
    }
    gw_limits_reader_offline(w->l, (unsigned)w->id); /* as a worker that stops */
    atomic_fetch_add(&readers_done, 1);
    return NULL;
}

static void run_all(gw_limits_t *l, int mode, int iters, worker_t *w)
{
    pthread_t th[NTHREADS];
    atomic_store(&readers_started, 0);
    atomic_store(&readers_done, 0);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker_t){.l = l, .id = i, .iters = iters, .mode = mode};
        assert_int_equal(pthread_create(&th[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
}

static uint64_t total(const worker_t *w)
{
    uint64_t n = 0;
    for (int i = 0; i < NTHREADS; i++)
        n += w[i].admitted;
    return n;
}

static void test_same_user_exact_burst(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_USER, (cm_rate_policy_t){1000, 500});
    worker_t w[NTHREADS];
    run_all(l, SAME_USER, 2000, w);
    assert_int_equal(total(w), 500);
    gw_limits_free(l);
}

static void test_same_global_exact_burst_with_refunds(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    /* Each thread is its own user (200 each, 1600 in all); global allows 777. */
    gw_limits_set(l, GW_SCOPE_USER, (cm_rate_policy_t){1000, 200});
    gw_limits_set(l, GW_SCOPE_IP, (cm_rate_policy_t){1000, 100000});
    gw_limits_set(l, GW_SCOPE_GLOBAL, (cm_rate_policy_t){1000, 777});
    worker_t w[NTHREADS];
    run_all(l, SAME_GLOBAL, 1000, w);
    assert_int_equal(total(w), 777);
    for (int i = 0; i < NTHREADS; i++)
        assert_true(w[i].admitted <= 200);
    /* Refusals consumed nothing: lifting the global limit, each user and the
     * shared IP hold exactly their burst minus what was admitted. */
    gw_limits_set(l, GW_SCOPE_GLOBAL, (cm_rate_policy_t){0, 0});
    uint64_t more = 0;
    for (int i = 0; i < NTHREADS; i++) {
        char u[16];
        snprintf(u, sizeof u, "t%d", i);
        gw_limit_verdict_t v;
        for (;;) {
            gw_limits_admit(l, u, strlen(u), "127.0.0.1", 9, NULL, 0, T0, &v);
            if (!v.allowed)
                break;
            more++;
        }
        assert_int_equal(v.scope, GW_SCOPE_USER);
    }
    assert_int_equal(more, NTHREADS * 200 - 777);
    gw_limits_free(l);
}

static void test_same_sale_exact_burst(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_SALE, (cm_rate_policy_t){1000, 300});
    worker_t w[NTHREADS];
    run_all(l, SAME_SALE, 1000, w);
    assert_int_equal(total(w), 300);
    gw_limits_free(l);
}

/*
 * A per-sale rule under contention while the rule set is replaced again and
 * again (the same s1 rule, another sale's dry-run rule added and removed):
 * the rule's bucket is exact (its burst, no more) and its refusals are
 * counted exactly, none lost to a reader still holding an old rule set. The
 * readers are declared and pass a quiescent point after each admit, so the
 * replaced sets are freed while they read (TSan, ASan: none is freed under a
 * reader), and the sets allocated stay far below the number of swaps.
 */
#define RULE_ITERS 20000

static void *rule_setter(void *arg)
{
    gw_limits_t *l = arg;
    gw_rule_t r[2];
    memset(r, 0, sizeof(r));
    snprintf(r[0].sale_id, sizeof(r[0].sale_id), "sale-1");
    r[0].sale = (cm_rate_policy_t){1000, 300};
    snprintf(r[1].sale_id, sizeof(r[1].sale_id), "other");
    r[1].user = (cm_rate_policy_t){1000, 1};
    r[1].dry_run = true;
    /* while the readers read (bounded: they stop after their iterations) */
    while (atomic_load(&readers_started) < NTHREADS)
        sched_yield();
    atomic_store(&go, 1);
    for (uint32_t i = 0; atomic_load(&readers_done) < NTHREADS; i++) {
        gw_limits_set_rules(l, r, 1 + i % 2);
        atomic_fetch_add(&swaps, 1);
        if (i % 16 == 15) {
            gw_limits_stats_t st;
            gw_limits_stats(l, &st);
            if (st.rule_sets < i / 2 && atomic_load(&readers_done) == 0)
                atomic_store(&reclaimed_while_read, 1); /* freed while readers read */
        }
    }
    return NULL;
}

/* A limiter of NTHREADS readers whose sale-1 rule allows 300 buys, bought by
 * the readers (mode) while rule_setter swaps its rule sets. */
static gw_limits_t *race_rules(int mode, worker_t *w)
{
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    assert_int_equal(gw_limits_set_readers(l, NTHREADS), 0);
    gw_rule_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.sale_id, sizeof(r.sale_id), "sale-1");
    r.sale = (cm_rate_policy_t){1000, 300};
    assert_int_equal(gw_limits_set_rules(l, &r, 1), 0);
    atomic_store(&swaps, 0);
    atomic_store(&reclaimed_while_read, 0);
    atomic_store(&readers_started, 0);
    atomic_store(&readers_done, 0);
    atomic_store(&go, 0);
    atomic_store(&hold_until_reclaimed, 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, rule_setter, l), 0);
    run_all(l, mode, RULE_ITERS, w);
    pthread_join(th, NULL);
    atomic_store(&hold_until_reclaimed, 0);
    return l;
}

/* The readers went offline as they ended: only the set in force is left, and
 * sets were freed while all of them were reading. Frees l. */
static void assert_reclaimed(gw_limits_t *l)
{
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    printf("# swaps=%llu rule_sets=%llu reclaimed_while_read=%d\n",
           (unsigned long long)atomic_load(&swaps), (unsigned long long)st.rule_sets,
           (int)atomic_load(&reclaimed_while_read));
    assert_int_equal(st.rule_sets, 1);
    assert_int_equal(atomic_load(&reclaimed_while_read), 1);
    gw_limits_free(l);
}

static void test_sale_rule_exact_while_rules_change(void **state)
{
    (void)state;
    worker_t w[NTHREADS];
    gw_limits_t *l = race_rules(SAME_SALE, w);
    assert_int_equal(total(w), 300);
    gw_rule_t out[GW_LIMIT_RULES_MAX];
    size_t n = gw_limits_get_rules(l, out, GW_LIMIT_RULES_MAX);
    assert_true(n >= 1);
    assert_string_equal(out[0].sale_id, "sale-1");
    assert_int_equal(out[0].rejected[1], (uint64_t)NTHREADS * RULE_ITERS - 300);
    assert_reclaimed(l);
}

/*
 * The same, with the readers also buying the sale whose dry-run rule each
 * other swap removes and the next adds again (new counters each time): a
 * reader still holding a set with the removed rule counts into its counters,
 * which are freed with that set after the grace period, never while read
 * (ASan, TSan), and never shared with the rule added next; sale-1's rule
 * still counts exactly.
 */
static void test_removed_rule_counters_while_read(void **state)
{
    (void)state;
    worker_t w[NTHREADS];
    gw_limits_t *l = race_rules(RULE_FLIP, w);
    gw_rule_t out[GW_LIMIT_RULES_MAX];
    size_t n = gw_limits_get_rules(l, out, GW_LIMIT_RULES_MAX);
    assert_true(n >= 1);
    assert_string_equal(out[0].sale_id, "sale-1");
    assert_int_equal(out[0].rejected[1], (uint64_t)NTHREADS * RULE_ITERS / 2 - 300);
    /* "other" is dry run: it refused nothing */
    uint64_t admitted_other = total(w) - 300;
    assert_int_equal(admitted_other, (uint64_t)NTHREADS * RULE_ITERS / 2);
    if (n == 2)
        assert_true(out[1].dry_run_rejected[0] <= admitted_other);
    assert_reclaimed(l);
}

static void *setter(void *arg)
{
    gw_limits_t *l = arg;
    for (uint32_t i = 0; !atomic_load(&stop_setter); i++) {
        gw_limits_set(l, GW_SCOPE_USER, (cm_rate_policy_t){1000, 2 + i % 2});
        gw_limits_set_share(l, 1 + i % 3);
        gw_limits_stats_t st;
        gw_limits_stats(l, &st);
        if (st.keys > st.capacity)
            atomic_fetch_add(&setter_violations, 1);
    }
    return NULL;
}

static void test_distinct_users_at_cap(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(2048);
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_USER, (cm_rate_policy_t){1000, 2}); /* 1/s: idle after 1 s */
    atomic_store(&fake_clock, T0);
    atomic_store(&stop_setter, 0);
    pthread_t st_th;
    assert_int_equal(pthread_create(&st_th, NULL, setter, l), 0);
    worker_t w[NTHREADS];
    const int iters = 20000;
    run_all(l, DISTINCT_USERS, iters, w);
    atomic_store(&stop_setter, 1);
    pthread_join(st_th, NULL);
    assert_int_equal(atomic_load(&setter_violations), 0);

    /* Every user is new, so every request finds a full bucket. */
    assert_int_equal(total(w), (uint64_t)NTHREADS * iters);
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    printf("# keys=%llu capacity=%llu evicted_idle=%llu evicted_busy=%llu\n",
           (unsigned long long)st.keys, (unsigned long long)st.capacity,
           (unsigned long long)st.evicted_idle, (unsigned long long)st.evicted_busy);
    assert_true(st.keys <= st.capacity);
    assert_int_equal(st.keys + st.evicted_idle + st.evicted_busy, (uint64_t)NTHREADS * iters);
    assert_true(st.evicted_idle > 0);
    assert_true(st.evicted_busy > 0);
    gw_limits_free(l);
}

/*
 * The sale map: fixed memory (256 slots). A sale that loses its slot fails
 * open (it comes back with a full bucket, never refused for want of a slot),
 * and a sale that holds a slot is limited exactly, its bucket never shared.
 * The refill rate is ~0 (1 token per 1000 s over a few ms of fake time), so
 * the bucket alone decides: burst 5.
 */
static void test_sale_map_churn(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_SALE, (cm_rate_policy_t){1, 5});
    atomic_store(&fake_clock, T0);
    for (int i = 0; i < CHURN_SALES; i++)
        atomic_store(&per_sale[i], 0);
    worker_t w[NTHREADS];
    run_all(l, SALE_CHURN, 5000, w); /* 600 sale ids through 256 slots */
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(w[i].refused_by[GW_SCOPE_USER] + w[i].refused_by[GW_SCOPE_IP] +
                             w[i].refused_by[GW_SCOPE_GLOBAL],
                         0);
    /* every sale was admitted at its first request at least: a claimed slot starts full */
    for (int i = 0; i < CHURN_SALES; i++)
        assert_true(atomic_load(&per_sale[i]) >= 1);
    /* and churn happened: some sale came back (fail open) after losing its slot */
    uint64_t over = 0;
    for (int i = 0; i < CHURN_SALES; i++)
        over += atomic_load(&per_sale[i]) > 5;
    assert_true(over > 0);

    /* 200 hot sales now, hammered by 8 threads: they fit in the slots, take them
     * from the churned sales (least recently used first), and each admits exactly
     * its burst: no token leaks to another sale, none is lost. */
    for (int i = 0; i < CHURN_SALES; i++)
        atomic_store(&per_sale[i], 0);
    run_all(l, SALE_HOT, 2000, w);
    for (int i = 0; i < HOT_SALES; i++)
        assert_int_equal(atomic_load(&per_sale[i]), 5);
    assert_int_equal(total(w), (uint64_t)HOT_SALES * 5);
    gw_limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_user_exact_burst),
        cmocka_unit_test(test_same_global_exact_burst_with_refunds),
        cmocka_unit_test(test_same_sale_exact_burst),
        cmocka_unit_test(test_sale_rule_exact_while_rules_change),
        cmocka_unit_test(test_removed_rule_counters_while_read),
        cmocka_unit_test(test_distinct_users_at_cap),
        cmocka_unit_test(test_sale_map_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
