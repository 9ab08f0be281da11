/*
 * The counting fingerprint set behind the sold-out shortcut for keyed buys
 * (inventory/inv_keyset.h): no false negative ever (a counted fingerprint is
 * found until as many deletes), exact on its own fingerprints, bounded by its
 * max (then saturated: every key may be held), and emptied by a clear.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/inv_keyset.h"

/* A small xorshift so the run is the same every time. */
static uint32_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}

#define DOMAIN 3000u

/* Random adds and deletes against a model of counts: after every step each
 * fingerprint is present exactly when the model counts it. The domain is
 * small and the fingerprints share low bits, so shards fill, tables grow,
 * and deletions shift runs that wrap around the table's end. */
static void test_model(void **state)
{
    (void)state;
    static uint32_t model[DOMAIN];
    memset(model, 0, sizeof(model));
    inv_keyset_budget_t b;
    inv_keyset_budget_init(&b, DOMAIN);
    inv_keyset_t ks;
    inv_keyset_init(&ks, &b);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int step = 0; step < 200000; step++) {
        uint32_t k = rnd(&seed) % DOMAIN;
        uint32_t fp = (k + 1) * 0x10001u; /* never 0; collide in the low bits */
        if (rnd(&seed) % 3 != 0) {
            inv_keyset_add(&ks, fp);
            model[k]++;
        } else if (model[k]) {
            inv_keyset_del(&ks, fp);
            model[k]--;
        }
        if (step % 997 == 0 || step > 199000) {
            size_t distinct = 0;
            for (uint32_t j = 0; j < DOMAIN; j++) {
                bool has = inv_keyset_has(&ks, (j + 1) * 0x10001u);
                if (model[j]) {
                    assert_true(has); /* no false negative */
                    distinct++;
                } else {
                    assert_false(has); /* exact on its own fingerprints */
                }
            }
            assert_int_equal(inv_keyset_size(&ks), distinct);
        }
    }
    assert_false(inv_keyset_saturated(&ks));
    assert_false(inv_keyset_has(&ks, 0)); /* no key */
    inv_keyset_deinit(&ks);
}

/* max distinct fingerprints, then saturated: true for every key, the tables
 * stop growing; a clear ends it. Counts of existing fingerprints still go up
 * when full. */
static void test_bounded(void **state)
{
    (void)state;
    inv_keyset_budget_t b;
    inv_keyset_budget_init(&b, 100);
    inv_keyset_t ks;
    inv_keyset_init(&ks, &b);
    for (uint32_t i = 1; i <= 100; i++)
        inv_keyset_add(&ks, i * 2654435761u);
    assert_int_equal(inv_keyset_size(&ks), 100);
    assert_false(inv_keyset_saturated(&ks));
    assert_false(inv_keyset_has(&ks, 12345));
    size_t bytes = inv_keyset_bytes(&ks);
    assert_true(bytes <= 16 * INV_KEYSET_SHARDS * sizeof(inv_keyset_entry_t) * 2);
    inv_keyset_add(&ks, 1 * 2654435761u); /* a count, not a new fingerprint */
    assert_false(inv_keyset_saturated(&ks));
    for (uint32_t i = 101; i <= 1000; i++)
        inv_keyset_add(&ks, i * 2654435761u);
    assert_true(inv_keyset_saturated(&ks));
    assert_int_equal(inv_keyset_size(&ks), 100);
    assert_int_equal(inv_keyset_bytes(&ks), bytes); /* nothing grew */
    assert_true(inv_keyset_has(&ks, 12345));
    assert_true(inv_keyset_has(&ks, 500 * 2654435761u)); /* counted as "may hold" */
    inv_keyset_clear(&ks);
    assert_false(inv_keyset_saturated(&ks));
    assert_int_equal(inv_keyset_size(&ks), 0);
    assert_int_equal(inv_keyset_bytes(&ks), 0);
    assert_false(inv_keyset_has(&ks, 1 * 2654435761u));
    inv_keyset_add(&ks, 7);
    assert_true(inv_keyset_has(&ks, 7));
    inv_keyset_deinit(&ks);
}

/* The budget is the process's, not a set's: two sets of a budget of 100
 * hold 100 fingerprints together, the one that would pass it saturates, and
 * what a delete or a clear frees goes back to the budget. */
static void test_shared_budget(void **state)
{
    (void)state;
    inv_keyset_budget_t b;
    inv_keyset_budget_init(&b, 100);
    inv_keyset_t x, y;
    inv_keyset_init(&x, &b);
    inv_keyset_init(&y, &b);
    for (uint32_t i = 1; i <= 60; i++)
        inv_keyset_add(&x, i * 2654435761u);
    for (uint32_t i = 61; i <= 120; i++)
        inv_keyset_add(&y, i * 2654435761u);
    assert_false(inv_keyset_saturated(&x));
    assert_true(inv_keyset_saturated(&y));
    assert_int_equal(inv_keyset_size(&x) + inv_keyset_size(&y), 100);
    assert_int_equal(atomic_load(&b.used), 100);
    inv_keyset_del(&x, 1 * 2654435761u); /* one back */
    assert_int_equal(atomic_load(&b.used), 99);
    inv_keyset_add(&x, 500 * 2654435761u);
    assert_true(inv_keyset_has(&x, 500 * 2654435761u));
    inv_keyset_add(&x, 501 * 2654435761u); /* the budget is spent again */
    assert_true(inv_keyset_saturated(&x));
    inv_keyset_clear(&y);
    assert_int_equal(atomic_load(&b.used), 60);
    inv_keyset_clear(&x);
    assert_int_equal(atomic_load(&b.used), 0);
    inv_keyset_add(&y, 7);
    assert_false(inv_keyset_saturated(&y));
    inv_keyset_deinit(&x);
    inv_keyset_deinit(&y);
    assert_int_equal(atomic_load(&b.used), 0);
}

/* A saturated count is never decremented: more deletes than adds can only
 * leave a false positive. Deleting what was never added changes nothing. */
static void test_saturated_count(void **state)
{
    (void)state;
    inv_keyset_budget_t b;
    inv_keyset_budget_init(&b, 10);
    inv_keyset_t ks;
    inv_keyset_init(&ks, &b);
    inv_keyset_add(&ks, 42);
    bool found = false;
    inv_keyset_shard_t *sh = &ks.shards[42 & (INV_KEYSET_SHARDS - 1)];
    for (uint32_t i = 0; i < sh->nslots; i++)
        if (sh->slots[i].fp == 42) {
            sh->slots[i].count = UINT32_MAX;
            found = true;
        }
    assert_true(found);
    inv_keyset_add(&ks, 42);
    for (int i = 0; i < 5; i++)
        inv_keyset_del(&ks, 42);
    assert_true(inv_keyset_has(&ks, 42));
    inv_keyset_del(&ks, 43);
    inv_keyset_del(&ks, 0);
    assert_int_equal(inv_keyset_size(&ks), 1);
    inv_keyset_deinit(&ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_shared_budget),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_saturated_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
