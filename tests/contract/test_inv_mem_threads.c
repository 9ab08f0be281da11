/*
 * The memory backend under contention (run under TSan in CI): 8 threads,
 * 10,000 distinct users, 1,000 units. Every thread walks every user in its own
 * random order, so the same user is tried by several threads at once (the
 * per-user limit races) and all users race for the stock. The audit afterwards
 * counts outcomes, the backend's per-user units and the sale's counters
 * against each other. A second race: keyed qty-1 buyers for the last unit of
 * a sale (a key skips the sold-out flag, so the stock step alone decides).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cm_err.h"
#include "common/cm_time.h"
#include "inventory/inv.h"

#define NTHREADS 8
#define NUSERS 10000
#define STOCK 1000

typedef struct run {
    inv_t *inv;
    char sale_id[INV_SALE_ID_MAX + 1];
    uint32_t limit;
    int rounds;          /* passes over all users per thread */
    bool random_qty;     /* qty 1..limit, else 1 */
    bool churn;          /* one thread also releases and restocks */
    pthread_barrier_t go;
    _Atomic uint32_t units[NUSERS]; /* units accepted per user, from the outcomes */
    _Atomic int64_t accepted_units, accepted_orders, released_units, released_orders;
    _Atomic int64_t restocked;
    _Atomic int64_t attempts;
    _Atomic int bad; /* outcomes that must not happen */
} run_t;

typedef struct worker_arg {
    run_t *run;
    int idx;
} worker_arg_t;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void shuffle(uint32_t *a, uint32_t n, uint64_t *rng)
{
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(xorshift(rng) % (i + 1));
        uint32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* The churn thread remembers orders it may give back. */
typedef struct held {
    char order_id[INV_ORDER_ID_MAX + 1];
    uint32_t user, qty;
} held_t;

static void *worker(void *p)
{
    worker_arg_t *wa = p;
    run_t *r = wa->run;
    inv_worker_t *w = NULL;
    if (inv_worker_open(r->inv, NULL, &w) != 0) {
        atomic_fetch_add(&r->bad, 1);
        return NULL;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(wa->idx + 1);
    uint32_t *order = malloc(NUSERS * sizeof(*order));
    for (uint32_t i = 0; i < NUSERS; i++)
        order[i] = i;
    held_t *held = calloc(64, sizeof(*held));
    int nheld = 0;
    bool churner = r->churn && wa->idx == 0;
    inv_sale_t *sale = inv_sale_find(r->inv, r->sale_id);
    pthread_barrier_wait(&r->go);

    uint64_t seq = 0;
    for (int round = 0; round < r->rounds; round++) {
        shuffle(order, NUSERS, &rng);
        for (uint32_t k = 0; k < NUSERS; k++) {
            uint32_t u = order[k];
            inv_reserve_req_t req;
            memset(&req, 0, sizeof(req));
            req.sale = sale;
            snprintf(req.user_id, sizeof(req.user_id), "user%05u", u);
            req.qty = r->random_qty ? 1 + (uint32_t)(xorshift(&rng) % r->limit) : 1;
            snprintf(req.order_id, sizeof(req.order_id), "t%d-%llu", wa->idx,
                     (unsigned long long)seq++);
            uint32_t qty = req.qty;
            int rc = inv_reserve(w, &req);
            atomic_fetch_add_explicit(&r->attempts, 1, memory_order_relaxed);
            switch (rc) {
            case INV_RESERVED: {
                uint32_t now = atomic_fetch_add(&r->units[u], qty) + qty;
                if (now > r->limit || req.user_units > r->limit || req.stock_left < 0)
                    atomic_fetch_add(&r->bad, 1);
                atomic_fetch_add(&r->accepted_units, qty);
                atomic_fetch_add(&r->accepted_orders, 1);
                if (churner && nheld < 64 && (xorshift(&rng) & 3) == 0) {
                    snprintf(held[nheld].order_id, sizeof(held[nheld].order_id), "%s",
                             req.order_id);
                    held[nheld].user = u;
                    held[nheld].qty = qty;
                    nheld++;
                }
                break;
            }
            case INV_SOLD_OUT:
            case INV_LIMIT_REACHED:
                break;
            default: /* DUPLICATE without keys, PENDING, UNKNOWN_SALE, errors */
                atomic_fetch_add(&r->bad, 1);
                break;
            }
            /* Churn: give back an order now and then, and restock twice. */
            if (churner && nheld > 0 && (k % 97) == 0) {
                held_t *h = &held[--nheld];
                char uid[INV_USER_ID_MAX + 1];
                snprintf(uid, sizeof(uid), "user%05u", h->user);
                /* Take the unit off our books before it can be sold again. */
                atomic_fetch_sub(&r->units[h->user], h->qty);
                if (inv_release(r->inv, r->sale_id, uid, h->qty, h->order_id) != 0 ||
                    inv_release(r->inv, r->sale_id, uid, h->qty, h->order_id) != CM_ENOTFOUND)
                    atomic_fetch_add(&r->bad, 1);
                atomic_fetch_add(&r->released_units, h->qty);
                atomic_fetch_add(&r->released_orders, 1);
            }
            if (churner && (k == NUSERS / 3 || k == NUSERS / 2) && round == 0) {
                char err[128];
                if (inv_restock(r->inv, r->sale_id, 50, NULL, err, sizeof(err)) != 0)
                    atomic_fetch_add(&r->bad, 1);
                atomic_fetch_add(&r->restocked, 50);
            }
        }
    }
    free(held);
    free(order);
    inv_worker_close(w);
    return NULL;
}

static void run_contention(uint32_t limit, int rounds, bool random_qty, bool churn)
{
    run_t *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    char err[256] = "";
    assert_int_equal(inv_open(&r->inv, "memory", NULL, 8, err, sizeof(err)), 0);
    snprintf(r->sale_id, sizeof(r->sale_id), "threads-l%u-%s", limit, churn ? "churn" : "plain");
    r->limit = limit;
    r->rounds = rounds;
    r->random_qty = random_qty;
    r->churn = churn;
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", r->sale_id);
    def.stock = STOCK;
    def.per_user_limit = limit;
    assert_int_equal(inv_sale_put(r->inv, &def, NULL, err, sizeof(err)), 0);
    pthread_barrier_init(&r->go, NULL, NTHREADS);

    uint64_t t0 = cm_mono_us();
    pthread_t th[NTHREADS];
    worker_arg_t args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (worker_arg_t){r, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t us = cm_mono_us() - t0;

    assert_int_equal(atomic_load(&r->bad), 0);

    /* Drain: units given back late by the churn thread may still be on the
     * shelf once the others have finished; sell them single-threaded. Without
     * churn there must be nothing left to sell. */
    inv_worker_t *w = NULL;
    assert_int_equal(inv_worker_open(r->inv, NULL, &w), 0);
    int64_t drained = 0;
    for (uint32_t u = 0; u < NUSERS; u++) {
        inv_reserve_req_t req;
        memset(&req, 0, sizeof(req));
        req.sale = inv_sale_find(r->inv, r->sale_id);
        snprintf(req.user_id, sizeof(req.user_id), "user%05u", u);
        req.qty = 1;
        snprintf(req.order_id, sizeof(req.order_id), "drain-%u", u);
        int rc = inv_reserve(w, &req);
        if (rc == INV_RESERVED) {
            atomic_fetch_add(&r->units[u], 1);
            atomic_fetch_add(&r->accepted_units, 1);
            atomic_fetch_add(&r->accepted_orders, 1);
            drained++;
        } else {
            assert_true(rc == INV_SOLD_OUT || rc == INV_LIMIT_REACHED);
        }
    }
    inv_worker_close(w);
    if (!churn)
        assert_int_equal(drained, 0);
    int64_t total = STOCK + atomic_load(&r->restocked);
    int64_t held_units = atomic_load(&r->accepted_units) - atomic_load(&r->released_units);
    int64_t held_orders = atomic_load(&r->accepted_orders) - atomic_load(&r->released_orders);
    /* Demand far exceeds stock, so every unit is sold: not one more, not one less. */
    assert_int_equal(held_units, total);

    int64_t sum = 0;
    for (uint32_t u = 0; u < NUSERS; u++) {
        char uid[INV_USER_ID_MAX + 1];
        snprintf(uid, sizeof(uid), "user%05u", u);
        uint32_t n = 0;
        assert_int_equal(inv_user_units(r->inv, r->sale_id, uid, &n), 0);
        assert_true(n <= limit);
        assert_int_equal(n, atomic_load(&r->units[u]));
        sum += n;
    }
    assert_int_equal(sum, total);

    inv_sale_info_t info;
    assert_int_equal(inv_sale_get(r->inv, r->sale_id, &info), 0);
    assert_int_equal(info.stock_total, total);
    assert_int_equal(info.stock_left, 0);
    assert_int_equal(info.accepted_units, total);
    assert_int_equal(info.accepted_orders, held_orders);
    inv_sale_t *sale = inv_sale_find(r->inv, r->sale_id);
    assert_true(inv_sale_sold_out(sale));
    inv_sale_snapshot(sale, &info);
    assert_int_equal(info.stock_left, 0);
    assert_int_equal(info.accepted_units, total);

    printf("# limit=%u qty=%s churn=%d: %lld attempts, %lld units in %lld orders, "
           "%lld released, %lld drained, %.0f ms (%.2f us/attempt)\n",
           limit, random_qty ? "1..limit" : "1", churn, (long long)atomic_load(&r->attempts),
           (long long)atomic_load(&r->accepted_units), (long long)atomic_load(&r->accepted_orders),
           (long long)atomic_load(&r->released_units), (long long)drained, us / 1000.0,
           (double)us / (double)atomic_load(&r->attempts));
    pthread_barrier_destroy(&r->go);
    inv_close(r->inv);
    free(r);
}

static void test_limit1(void **state)
{
    (void)state;
    run_contention(1, 1, false, false);
}

static void test_limit3_random_qty(void **state)
{
    (void)state;
    run_contention(3, 3, true, false);
}

static void test_release_restock_churn(void **state)
{
    (void)state;
    run_contention(2, 2, true, true);
}

/*---- keyed buyers race for the last unit ----*/

#define LAST_SALES 300

typedef struct last_run {
    inv_t *inv;
    pthread_barrier_t round;
    _Atomic int reserved[LAST_SALES];
    _Atomic int bad;
} last_run_t;

typedef struct last_arg {
    last_run_t *run;
    int idx;
} last_arg_t;

static void *last_worker(void *p)
{
    last_arg_t *la = p;
    last_run_t *r = la->run;
    inv_worker_t *w = NULL;
    if (inv_worker_open(r->inv, NULL, &w) != 0)
        atomic_fetch_add(&r->bad, 1);
    for (int s = 0; s < LAST_SALES; s++) {
        pthread_barrier_wait(&r->round); /* every thread at the same sale at once */
        if (!w)
            continue;
        inv_reserve_req_t req;
        memset(&req, 0, sizeof(req));
        char sale_id[INV_SALE_ID_MAX + 1];
        snprintf(sale_id, sizeof(sale_id), "last-%d", s);
        req.sale = inv_sale_find(r->inv, sale_id);
        snprintf(req.user_id, sizeof(req.user_id), "buyer%d", la->idx);
        snprintf(req.idem_key, sizeof(req.idem_key), "key-%d-%d", la->idx, s);
        snprintf(req.order_id, sizeof(req.order_id), "l%d-%d", la->idx, s);
        req.qty = 1;
        int rc = inv_reserve(w, &req);
        if (rc == INV_RESERVED) {
            atomic_fetch_add(&r->reserved[s], 1);
            if (req.stock_left != 0 || req.user_units != 1)
                atomic_fetch_add(&r->bad, 1);
        } else if (rc != INV_SOLD_OUT) {
            atomic_fetch_add(&r->bad, 1);
        }
    }
    inv_worker_close(w);
    return NULL;
}

/*
 * 8 keyed buyers (qty 1, distinct users) at once for the last unit of each of
 * 300 sales (stock 2, one unit sold before). Exactly one gets it; the sale
 * ends at 0 left, 2 units held. The sold-out flag cannot turn a keyed buyer
 * away, so an off-by-one in the stock step shows as a second winner.
 */
static void test_keyed_last_unit_race(void **state)
{
    (void)state;
    last_run_t *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    char err[256] = "";
    assert_int_equal(inv_open(&r->inv, "memory", NULL, LAST_SALES + 1, err, sizeof(err)), 0);
    inv_worker_t *w = NULL;
    assert_int_equal(inv_worker_open(r->inv, NULL, &w), 0);
    for (int s = 0; s < LAST_SALES; s++) {
        inv_sale_def_t def;
        memset(&def, 0, sizeof(def));
        snprintf(def.sale_id, sizeof(def.sale_id), "last-%d", s);
        def.stock = 2;
        def.per_user_limit = 1;
        assert_int_equal(inv_sale_put(r->inv, &def, NULL, err, sizeof(err)), 0);
        inv_reserve_req_t req;
        memset(&req, 0, sizeof(req));
        req.sale = inv_sale_find(r->inv, def.sale_id);
        snprintf(req.user_id, sizeof(req.user_id), "first");
        snprintf(req.order_id, sizeof(req.order_id), "first-%d", s);
        req.qty = 1;
        assert_int_equal(inv_reserve(w, &req), INV_RESERVED);
        assert_int_equal(req.stock_left, 1);
    }
    inv_worker_close(w);
    pthread_barrier_init(&r->round, NULL, NTHREADS);
    pthread_t th[NTHREADS];
    last_arg_t args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (last_arg_t){r, i};
        assert_int_equal(pthread_create(&th[i], NULL, last_worker, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r->bad), 0);
    for (int s = 0; s < LAST_SALES; s++) {
        char sale_id[INV_SALE_ID_MAX + 1];
        snprintf(sale_id, sizeof(sale_id), "last-%d", s);
        assert_int_equal(atomic_load(&r->reserved[s]), 1);
        inv_sale_info_t info;
        assert_int_equal(inv_sale_get(r->inv, sale_id, &info), 0);
        assert_int_equal(info.stock_left, 0);
        assert_int_equal(info.accepted_units, 2);
        assert_int_equal(info.accepted_orders, 2);
        assert_true(inv_sale_sold_out(inv_sale_find(r->inv, sale_id)));
    }
    pthread_barrier_destroy(&r->round);
    inv_close(r->inv);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit1),
        cmocka_unit_test(test_limit3_random_qty),
        cmocka_unit_test(test_release_restock_churn),
        cmocka_unit_test(test_keyed_last_unit_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
