/*
 * The order-status table under concurrency (runs under TSan in CI): four
 * threads put, settle, fail with reasons and look up orders of several sales
 * while the table evicts at its cap; the stats add up, every thread's newest
 * orders are there with their status, and nothing is ever above the cap.
 */
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

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define NTHREADS 4
#define PER_THREAD 4000

static pthread_barrier_t last_round; /* the last 10 of every thread are the newest of all */

typedef struct worker {
    gw_orders_t *t;
    cm_id_gen_t gen;
    int id;
    char last[10][INV_ORDER_ID_MAX + 1];
    int found_mismatch;
} worker_t;

static void *run(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        if (i == PER_THREAD - 10)
            pthread_barrier_wait(&last_round);
        oq_order_t o;
        memset(&o, 0, sizeof(o));
        cm_id_format(cm_id_next(&w->gen, cm_wall_ms()), o.order_id);
        snprintf(o.sale_id, sizeof(o.sale_id), "sale-%d", (w->id + i) % 7);
        snprintf(o.user_id, sizeof(o.user_id), "u%d-%d", w->id, i);
        o.qty = 1;
        gw_orders_put(w->t, &o);
        if (i % 5 == 0)
            gw_orders_set_status(w->t, o.order_id, NULL, OQ_STATUS_FAILED,
                                 i % 10 == 0 ? "blocked" : "card declined");
        else
            gw_orders_set_status(w->t, o.order_id, NULL, OQ_STATUS_SETTLED, NULL);
        oq_order_t got;
        if (gw_orders_get(w->t, o.order_id, &got) && strcmp(got.sale_id, o.sale_id) != 0)
            w->found_mismatch++;
        if (i >= PER_THREAD - 10)
            memcpy(w->last[i - (PER_THREAD - 10)], o.order_id, sizeof(w->last[0]));
    }
    return NULL;
}

static void test_concurrent_put_evict_lookup(void **state)
{
    (void)state;
    gw_orders_t *t = gw_orders_new(4096);
    pthread_barrier_init(&last_round, NULL, NTHREADS);
    worker_t w[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].t = t;
        w[i].id = i;
        cm_id_gen_init(&w[i].gen, (uint32_t)(10 + i)); /* a node each: ids never collide */
        assert_int_equal(pthread_create(&th[i], NULL, run, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    gw_orders_stats_t st;
    gw_orders_stats(t, &st);
    assert_true(st.known <= st.capacity);
    assert_int_equal(st.known + st.evicted, NTHREADS * PER_THREAD);
    assert_int_equal(st.evicted_queued, 0);
    assert_int_equal(st.reasons_lost, 0);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(w[i].found_mismatch, 0);
        for (int k = 0; k < 10; k++) {
            oq_order_t got;
            assert_true(gw_orders_get(t, w[i].last[k], &got));
            assert_int_not_equal(got.status, OQ_STATUS_QUEUED);
        }
    }
    gw_orders_free(t);
    pthread_barrier_destroy(&last_round);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_put_evict_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
