#include "tests/support/ts_order.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

void ts_rnd_seed(uint64_t seed)
{
    g_rng = seed ? seed : 0x9E3779B97F4A7C15ull; /* xorshift never leaves 0 */
}

uint32_t ts_rnd(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

void ts_rnd_id(char *dst, size_t max)
{
    static const char cs[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    size_t n = ts_rnd(4) == 0 ? max : 1 + ts_rnd((uint32_t)max);
    for (size_t i = 0; i < n; i++)
        dst[i] = cs[ts_rnd(sizeof(cs) - 1)];
    dst[n] = '\0';
}

void ts_order_assert_same(const oq_order_t *a, const oq_order_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->order_id, b->order_id);
    assert_string_equal(a->sale_id, b->sale_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->person, b->person);
    assert_string_equal(a->idem_key, b->idem_key);
    assert_int_equal(a->key_fp, b->key_fp);
    assert_string_equal(a->reason, b->reason);
    assert_int_equal(a->qty, b->qty);
    assert_int_equal(a->node_id, b->node_id);
    assert_int_equal(a->accepted_at_ms, b->accepted_at_ms);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->at_ms, b->at_ms);
}
