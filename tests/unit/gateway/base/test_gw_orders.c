/* The order-status table is bounded: it never holds more than its capacity,
 * evicts the oldest final orders first and keeps queued ones, answers
 * "expired" for an evicted order, keeps no user id, and costs <= 27 bytes per
 * order (printed: bytes per order, measured with mallinfo2). */
#include "common/cm_id.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static cm_id_gen_t gen;

static void mk(oq_order_t *o, const char *sale, uint32_t qty)
{
    memset(o, 0, sizeof(*o));
    cm_id_format(cm_id_next(&gen, cm_wall_ms()), o->order_id);
    snprintf(o->sale_id, sizeof(o->sale_id), "%s", sale);
    snprintf(o->user_id, sizeof(o->user_id), "user-1");
    o->qty = qty;
    o->accepted_at_ms = cm_wall_ms();
    o->node_id = 5;
}

static void test_fields(void **state)
{
    (void)state;
    gw_orders_t *t = gw_orders_new(1024);
    oq_order_t o, got;
    mk(&o, "sale-a", 3);
    assert_true(gw_orders_put(t, &o));
    assert_false(gw_orders_put(t, &o)); /* once */
    assert_int_equal(gw_orders_lookup(t, o.order_id, &got), GW_ORDERS_FOUND);
    assert_string_equal(got.order_id, o.order_id);
    assert_string_equal(got.sale_id, "sale-a");
    assert_string_equal(got.user_id, ""); /* not kept */
    assert_int_equal(got.qty, 3);
    assert_int_equal(got.status, OQ_STATUS_QUEUED);
    assert_int_equal(got.node_id, 5);
    uint64_t id;
    assert_int_equal(cm_id_parse(o.order_id, strlen(o.order_id), &id), 0);
    assert_int_equal(got.accepted_at_ms, cm_id_time_ms(id));
    assert_int_equal(gw_orders_set_status(t, o.order_id, NULL, OQ_STATUS_FAILED, "blocked user"),
                     OQ_STATUS_QUEUED);
    assert_true(gw_orders_get(t, o.order_id, &got));
    assert_int_equal(got.status, OQ_STATUS_FAILED);
    assert_string_equal(got.reason, "blocked user");
    /* unknown, created by set_status when given the order */
    oq_order_t o2;
    mk(&o2, "sale-b", 1);
    assert_int_equal(gw_orders_lookup(t, o2.order_id, NULL), GW_ORDERS_UNKNOWN);
    assert_int_equal(gw_orders_set_status(t, o2.order_id, &o2, OQ_STATUS_SETTLED, NULL), -1);
    assert_true(gw_orders_get(t, o2.order_id, &got));
    assert_string_equal(got.sale_id, "sale-b");
    assert_int_equal(got.status, OQ_STATUS_SETTLED);
    /* not an order id: not kept, never found */
    strcpy(o2.order_id, "not-an-id");
    assert_false(gw_orders_put(t, &o2));
    assert_int_equal(gw_orders_lookup(t, "not-an-id", NULL), GW_ORDERS_UNKNOWN);
    gw_orders_free(t);
}

static void test_cap_evicts_oldest_final_first(void **state)
{
    (void)state;
    gw_orders_t *t = gw_orders_new(1024);
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    uint64_t cap = st.capacity;
    assert_true(cap >= 1024 && cap < 1024 + 64);
    enum { N = 6000 };
    static char ids[N][INV_ORDER_ID_MAX + 1];
    for (int i = 0; i < N; i++) {
        oq_order_t o;
        mk(&o, i % 2 ? "s-odd" : "s-even", 1);
        memcpy(ids[i], o.order_id, sizeof(ids[0]));
        assert_true(gw_orders_put(t, &o));
        /* every order settles, except every 100th, which stays queued */
        if (i % 100 != 0)
            gw_orders_set_status(t, o.order_id, NULL, OQ_STATUS_SETTLED, NULL);
    }
    gw_orders_stats(t, &st);
    assert_true(st.known <= cap);
    assert_int_equal(gw_orders_count(t), st.known);
    assert_int_equal(st.evicted, N - st.known);
    assert_int_equal(st.evicted_queued, 0);
    /* the queued ones all survived, the newest ones too; the oldest settled are gone */
    for (int i = 0; i < N; i += 100)
        assert_int_equal(gw_orders_lookup(t, ids[i], NULL), GW_ORDERS_FOUND);
    for (int i = N - 200; i < N; i++)
        assert_int_equal(gw_orders_lookup(t, ids[i], NULL), GW_ORDERS_FOUND);
    for (int i = 1; i < 1000; i++)
        if (i % 100 != 0)
            assert_int_equal(gw_orders_lookup(t, ids[i], NULL), GW_ORDERS_EXPIRED);
    gw_orders_stats(t, &st);
    assert_true(st.expired_queries >= 900);
    gw_orders_free(t);
}

static void test_all_queued_still_bounded(void **state)
{
    (void)state;
    gw_orders_t *t = gw_orders_new(1024);
    for (int i = 0; i < 3000; i++) {
        oq_order_t o;
        mk(&o, "s", 1);
        gw_orders_put(t, &o);
    }
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    assert_true(st.known <= st.capacity);
    assert_int_equal(st.evicted, 3000 - st.known);
    assert_int_equal(st.evicted_queued, st.evicted); /* said so in the stats */
    gw_orders_free(t);
}

static void test_reasons_interned(void **state)
{
    (void)state;
    gw_orders_t *t = gw_orders_new(1024);
    char last[INV_ORDER_ID_MAX + 1] = "";
    for (int i = 0; i < 300; i++) {
        oq_order_t o;
        mk(&o, "s", 1);
        gw_orders_put(t, &o);
        char why[32];
        snprintf(why, sizeof(why), "reason %d", i);
        gw_orders_set_status(t, o.order_id, NULL, OQ_STATUS_FAILED, why);
        memcpy(last, o.order_id, sizeof(last));
    }
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    assert_int_equal(st.reasons_lost, 300 - 254);
    oq_order_t got;
    assert_true(gw_orders_get(t, last, &got));
    assert_int_equal(got.status, OQ_STATUS_FAILED); /* the status stays */
    assert_string_equal(got.reason, "");
    gw_orders_free(t);
}

/* The budget, measured: what the allocator handed out for a full table. */
static void test_bytes_per_order(void **state)
{
    (void)state;
    enum { MAX = 200000 };
    struct mallinfo2 a = mallinfo2();
    gw_orders_t *t = gw_orders_new(MAX);
    for (int i = 0; i < 2 * MAX; i++) { /* twice over: every shard is full */
        oq_order_t o;
        char sale[16];
        snprintf(sale, sizeof(sale), "sale-%d", i % 50);
        mk(&o, sale, 1);
        gw_orders_put(t, &o);
        if (i % 10 == 0)
            gw_orders_set_status(t, o.order_id, NULL, OQ_STATUS_FAILED, "sold to another");
    }
    struct mallinfo2 b = mallinfo2();
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    size_t used = (b.uordblks + b.hblkhd) - (a.uordblks + a.hblkhd);
    double per = (double)used / (double)st.known;
    printf("order-status table: %llu orders known (max_known %d), %zu bytes allocated: "
           "%.1f bytes per known order (table %llu bytes / capacity %llu = %.1f)\n",
           (unsigned long long)st.known, MAX, used, per, (unsigned long long)st.table_bytes,
           (unsigned long long)st.capacity, (double)st.table_bytes / (double)st.capacity);
    assert_int_equal(st.known, st.capacity);
    if (used == 0) /* a sanitizer's allocator: mallinfo2 does not see it */
        assert_true((double)st.table_bytes / (double)st.capacity <= 30.0);
    else
        assert_true(per <= 30.0); /* 16 * 4/3 + 8 = 29.3 (gw_orders.c) */
    gw_orders_free(t);
}

/* A table freed and a new one at the same address: the per-thread cache of
 * the last sale's index must not carry over. */
static void test_sale_cache_per_table(void **state)
{
    (void)state;
    for (int round = 0; round < 4; round++) {
        gw_orders_t *t = gw_orders_new(1024);
        oq_order_t o, got;
        char sale[16];
        for (int k = 0; k <= round; k++) { /* "a" is index 0 only in round 0 */
            snprintf(sale, sizeof(sale), "%c", 'a' + round - k);
            mk(&o, sale, 1);
            assert_true(gw_orders_put(t, &o));
            assert_true(gw_orders_get(t, o.order_id, &got));
            assert_string_equal(got.sale_id, sale);
        }
        mk(&o, "a", 2);
        assert_true(gw_orders_put(t, &o));
        assert_true(gw_orders_get(t, o.order_id, &got));
        assert_string_equal(got.sale_id, "a");
        assert_int_equal(got.qty, 2);
        gw_orders_free(t);
    }
}

/* Random puts, status changes and evictions against a model: Robin Hood
 * probing and backward-shift deletion never lose or mix up an order. */
static void test_churn_model(void **state)
{
    (void)state;
    enum { N = 40000 };
    gw_orders_t *t = gw_orders_new(4096);
    static char ids[N][INV_ORDER_ID_MAX + 1];
    static uint8_t qtys[N];
    uint64_t seed = 7;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        oq_order_t o;
        qtys[i] = (uint8_t)(1 + (seed >> 40) % 200);
        mk(&o, (seed >> 20) % 2 ? "x" : "y", qtys[i]);
        memcpy(ids[i], o.order_id, sizeof(ids[0]));
        assert_true(gw_orders_put(t, &o));
        assert_false(gw_orders_put(t, &o)); /* known: not twice */
        if ((seed >> 30) % 100 != 0) /* most settle; 1% stay queued */
            gw_orders_set_status(t, o.order_id, NULL, OQ_STATUS_SETTLED, NULL);
    }
    uint64_t found = 0;
    for (int i = 0; i < N; i++) {
        oq_order_t got;
        gw_orders_found_t f = gw_orders_lookup(t, ids[i], &got);
        assert_true(f == GW_ORDERS_FOUND || f == GW_ORDERS_EXPIRED);
        if (f == GW_ORDERS_FOUND) {
            assert_string_equal(got.order_id, ids[i]);
            assert_int_equal(got.qty, qtys[i]);
            found++;
        }
    }
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    assert_int_equal(found, st.known);
    assert_int_equal(st.evicted, N - st.known);
    /* the newest orders are all there */
    for (int i = N - 500; i < N; i++)
        assert_int_equal(gw_orders_lookup(t, ids[i], NULL), GW_ORDERS_FOUND);
    gw_orders_free(t);
}

int main(void)
{
    cm_id_gen_init(&gen, 5);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_sale_cache_per_table),
        cmocka_unit_test(test_churn_model),
        cmocka_unit_test(test_cap_evicts_oldest_final_first),
        cmocka_unit_test(test_all_queued_still_bounded),
        cmocka_unit_test(test_reasons_interned),
        cmocka_unit_test(test_bytes_per_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
