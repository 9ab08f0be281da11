/* cm_smap against a plain array model: puts, gets and deletes in random order agree. */
#include "common/cm_smap.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NKEYS 4096
#define NOPS 200000

static uint64_t rng_state = 0x51f15e;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void key_of(unsigned k, char *buf)
{
    snprintf(buf, 32, "order-%u", k);
}

/* Every model key is found with its value, every absent key is not, len agrees. */
static void check_all(const cm_smap_t *m, const int64_t *model)
{
    char key[32];
    size_t n = 0;
    for (unsigned k = 0; k < NKEYS; k++) {
        key_of(k, key);
        cm_smap_entry_t *e = cm_smap_get(m, key);
        if (model[k] < 0) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_string_equal(e->key, key);
            assert_int_equal(e->val.u, (uint64_t)model[k]);
            n++;
        }
    }
    assert_int_equal(cm_smap_len(m), n);
    size_t seen = 0;
    cm_smap_entry_t *e;
    for (size_t i = 0; (e = cm_smap_next(m, &i));)
        seen++;
    assert_int_equal(seen, n);
}

static void test_random_ops_match_model(void **state)
{
    (void)state;
    static int64_t model[NKEYS];
    for (unsigned k = 0; k < NKEYS; k++)
        model[k] = -1;
    cm_smap_t m;
    cm_smap_init(&m, 0);
    char key[32];
    for (unsigned op = 0; op < NOPS; op++) {
        unsigned k = (unsigned)(rnd() % NKEYS);
        key_of(k, key);
        switch (rnd() % 3) {
        case 0: {
            bool created;
            cm_smap_entry_t *e = cm_smap_put(&m, key, &created);
            assert_int_equal(created, model[k] < 0);
            if (created)
                assert_int_equal(e->val.u, 0);
            e->val.u = op;
            model[k] = op;
            break;
        }
        case 1: {
            cm_smap_val_t v = {0};
            bool had = cm_smap_del(&m, key, &v);
            assert_int_equal(had, model[k] >= 0);
            if (had)
                assert_int_equal(v.u, (uint64_t)model[k]);
            model[k] = -1;
            break;
        }
        default: {
            cm_smap_entry_t *e = cm_smap_get(&m, key);
            if (model[k] < 0)
                assert_null(e);
            else
                assert_int_equal(e->val.u, (uint64_t)model[k]);
        }
        }
        if (op % 20000 == 0)
            check_all(&m, model);
    }
    check_all(&m, model);
    /* Load factor stays at or below 1/2. */
    assert_true(m.len * 2 <= m.cap);
    cm_smap_free(&m, NULL);
    assert_int_equal(m.cap, 0);
    assert_null(cm_smap_get(&m, "order-1"));
    assert_false(cm_smap_del(&m, "order-1", NULL));
}

static int frees;
static void free_val(cm_smap_val_t v)
{
    free(v.p);
    frees++;
}

static void test_pointer_values_freed(void **state)
{
    (void)state;
    cm_smap_t m;
    cm_smap_init(&m, 100);
    size_t cap0 = m.cap;
    assert_true(cap0 >= 200);
    char key[32];
    for (unsigned k = 0; k < 100; k++) {
        key_of(k, key);
        cm_smap_put(&m, key, NULL)->val.p = malloc(8);
    }
    assert_int_equal(m.cap, cap0); /* the hint held: no growth */
    frees = 0;
    cm_smap_free(&m, free_val);
    assert_int_equal(frees, 100);
}

/* Empty keys and long keys are keys like any other. */
static void test_odd_keys(void **state)
{
    (void)state;
    cm_smap_t m;
    cm_smap_init(&m, 0);
    char big[4096];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cm_smap_put(&m, "", NULL)->val.u = 1;
    cm_smap_put(&m, big, NULL)->val.u = 2;
    assert_int_equal(cm_smap_get(&m, "")->val.u, 1);
    assert_int_equal(cm_smap_get(&m, big)->val.u, 2);
    big[100] = '\0';
    assert_null(cm_smap_get(&m, big));
    cm_smap_free(&m, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_ops_match_model),
        cmocka_unit_test(test_pointer_values_freed),
        cmocka_unit_test(test_odd_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
