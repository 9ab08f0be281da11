/*
 * The sale view's seqlock (review s11 finding 8): two publishers (the admin
 * PUT and the Redis sync thread) and readers on the buy path. Every publish
 * here writes one consistent set of fields derived from k; a snapshot or a
 * terms read must never mix two sets, and the last state after both
 * publishers stop must be one set. Runs under TSan in CI (label concurrency).
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
#include <unistd.h>

#include "common/cm_time.h"
#include "inventory/inv_backend.h"

#define RUN_MS 400

static inv_sale_t *sale;
static atomic_bool stop;
static atomic_ullong mixed;

static void info_of(uint64_t k, inv_sale_info_t *in)
{
    memset(in, 0, sizeof(*in));
    in->stock_total = (int64_t)k * 7;
    in->stock_left = (int64_t)k * 3;
    in->accepted_units = (int64_t)k * 4;
    in->accepted_orders = (int64_t)k * 2;
    in->per_user_limit = (uint32_t)k;
    in->starts_at_ms = (int64_t)k * 10;
    in->ends_at_ms = (int64_t)k * 10 + 5;
    in->version = k;
}

static bool info_ok(const inv_sale_info_t *o)
{
    uint64_t k = o->version;
    inv_sale_info_t want;
    info_of(k, &want);
    return o->stock_total == want.stock_total && o->stock_left == want.stock_left &&
           o->accepted_units == want.accepted_units &&
           o->accepted_orders == want.accepted_orders &&
           o->per_user_limit == want.per_user_limit && o->starts_at_ms == want.starts_at_ms &&
           o->ends_at_ms == want.ends_at_ms;
}

static void *publisher(void *arg)
{
    /* one publisher counts odd k, the other even: their sets differ in every field */
    uint64_t k = (uintptr_t)arg;
    inv_sale_info_t in;
    while (!atomic_load(&stop)) {
        info_of(k, &in);
        inv__sale_publish(sale, &in);
        k += 2;
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    inv_sale_info_t o;
    inv_sale_terms_t t;
    while (!atomic_load(&stop)) {
        inv_sale_snapshot(sale, &o);
        if (!info_ok(&o))
            atomic_fetch_add(&mixed, 1);
        inv_sale_terms(sale, &t);
        if (t.starts_at_ms != (int64_t)t.per_user_limit * 10 ||
            t.ends_at_ms != t.starts_at_ms + 5)
            atomic_fetch_add(&mixed, 1);
    }
    return NULL;
}

static void test_no_mixed_views(void **state)
{
    (void)state;
    sale = calloc(1, sizeof(*sale));
    assert_non_null(sale);
    snprintf(sale->sale_id, sizeof(sale->sale_id), "s1");
    inv_sale_info_t in;
    info_of(1, &in);
    inv__sale_publish(sale, &in);
    pthread_t p[2], r[2];
    for (uintptr_t i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&p[i], NULL, publisher, (void *)(i + 2)), 0);
        assert_int_equal(pthread_create(&r[i], NULL, reader, NULL), 0);
    }
    uint64_t end = cm_mono_ms() + RUN_MS;
    while (cm_mono_ms() < end)
        usleep(10000);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(p[i], NULL);
        pthread_join(r[i], NULL);
    }
    inv_sale_info_t o;
    inv_sale_snapshot(sale, &o);
    if (!info_ok(&o))
        atomic_fetch_add(&mixed, 1);
    printf("mixed views: %llu\n", (unsigned long long)atomic_load(&mixed));
    assert_int_equal(atomic_load(&mixed), 0);
    free(sale);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_mixed_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
