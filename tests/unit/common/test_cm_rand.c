/* The project's one PRNG: reference values, reproducibility and unbiased bounded draws. */
#include "common/cm_rand.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* splitmix64 from 0: the first outputs of Vigna's reference splitmix64.c. */
static void test_splitmix_reference(void **state)
{
    (void)state;
    uint64_t x = 0;
    assert_int_equal(cm_rand_splitmix64(&x), 0xe220a8397b1dcdafull);
    assert_int_equal(cm_rand_splitmix64(&x), 0x6e789e6aa1b965f4ull);
    assert_int_equal(cm_rand_splitmix64(&x), 0x06c45d188009454full);
}

/* xoshiro256** from state {1, 2, 3, 4}: the reference implementation's first outputs. */
static void test_xoshiro_reference(void **state)
{
    (void)state;
    cm_rand_t r = {{1, 2, 3, 4}};
    assert_int_equal(cm_rand_next(&r), 11520ull);
    assert_int_equal(cm_rand_next(&r), 0ull);
    assert_int_equal(cm_rand_next(&r), 1509978240ull);
    assert_int_equal(cm_rand_next(&r), 1215971899390074240ull);
}

static void test_same_seed_same_sequence(void **state)
{
    (void)state;
    cm_rand_t a, b, c;
    cm_rand_seed(&a, 42);
    cm_rand_seed(&b, 42);
    cm_rand_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = cm_rand_next(&a);
        assert_int_equal(x, cm_rand_next(&b));
        differ += x != cm_rand_next(&c);
    }
    assert_true(differ > 990);
}

/* Chi-square of 60,000 draws below 6: 5 degrees of freedom, 20.5 is p = 0.001. */
static void test_below_uniform(void **state)
{
    (void)state;
    cm_rand_t r;
    cm_rand_seed(&r, 7);
    unsigned n[6] = {0};
    for (int i = 0; i < 60000; i++) {
        uint64_t v = cm_rand_below(&r, 6);
        assert_true(v < 6);
        n[v]++;
    }
    double chi = 0;
    for (int i = 0; i < 6; i++)
        chi += (n[i] - 10000.0) * (n[i] - 10000.0) / 10000.0;
    assert_true(chi < 20.5);
    assert_int_equal(cm_rand_below(&r, 1), 0);
}

static void test_unit_range(void **state)
{
    (void)state;
    cm_rand_t r;
    cm_rand_seed(&r, 0);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = cm_rand_unit(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(sum / 100000 > 0.49 && sum / 100000 < 0.51);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitmix_reference),
        cmocka_unit_test(test_xoshiro_reference),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_below_uniform),
        cmocka_unit_test(test_unit_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
