/*
 * Settle's consumer loop, stepped (settle/st_loop.h): a batch's actions in
 * their order (write, outcomes, offsets), its retries and give-ups, and the
 * offsets it commits. The core alone: no database, no broker.
 */
#include "common/cm_err.h"
#include "settle/st_loop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_order(void **state)
{
    (void)state;
    st_batch_step_t b;
    assert_int_equal(st_batch_begin(&b), ST_BATCH_WRITE);
    assert_int_equal(st_batch_step(&b, 0, false), ST_BATCH_PUBLISH);
    assert_true(b.written);
    assert_int_equal(st_batch_step(&b, 0, false), ST_BATCH_COMMIT);
    assert_true(b.published);
    assert_int_equal(st_batch_step(&b, 0, false), ST_BATCH_DONE);
    assert_int_equal(st_batch_step(&b, 0, false), ST_BATCH_DONE);
}

/* A failed write is tried again, or given up (a stop); never published. */
static void test_write_fails(void **state)
{
    (void)state;
    st_batch_step_t b;
    st_batch_begin(&b);
    assert_int_equal(st_batch_step(&b, CM_EIO, false), ST_BATCH_WRITE);
    assert_int_equal(st_batch_step(&b, CM_EIO, true), ST_BATCH_GIVE_UP);
    assert_false(b.written);
}

/* Outcomes not delivered: retried, or given up uncommitted; never committed
 * without them. A failed commit ends the batch (read again, harmless). */
static void test_publish_and_commit_fail(void **state)
{
    (void)state;
    st_batch_step_t b;
    st_batch_begin(&b);
    st_batch_step(&b, 0, false);
    assert_int_equal(st_batch_step(&b, CM_EAGAIN, false), ST_BATCH_PUBLISH);
    assert_int_equal(st_batch_step(&b, CM_EAGAIN, true), ST_BATCH_GIVE_UP);
    st_batch_begin(&b);
    st_batch_step(&b, 0, false);
    st_batch_step(&b, 0, false);
    assert_int_equal(st_batch_step(&b, CM_EBACKEND, false), ST_BATCH_DONE);
}

static void test_offsets(void **state)
{
    (void)state;
    int32_t part[] = {2, 0, 2, 0, 1, 2};
    int64_t off[] = {7, 3, 9, 4, 0, 8};
    int32_t op[6];
    int64_t on[6];
    assert_int_equal(st_batch_offsets(part, off, 6, op, on), 3);
    assert_int_equal(op[0], 2);
    assert_int_equal(on[0], 10);
    assert_int_equal(op[1], 0);
    assert_int_equal(on[1], 5);
    assert_int_equal(op[2], 1);
    assert_int_equal(on[2], 1);
    assert_int_equal(st_batch_offsets(part, off, 0, op, on), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_write_fails),
        cmocka_unit_test(test_publish_and_commit_fail),
        cmocka_unit_test(test_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
