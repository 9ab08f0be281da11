/*
 * st_order_parse's fast path against the codec's decoder: whatever the fast
 * path accepts, oq_order_decode accepts with the same fields (the decoder
 * stays the judge), and it does take the encoder's own output. Differential,
 * over generated records and every one-byte mutation of them.
 */
#include "common/cm_id.h"
#include "queue/oq_order.h"
#include "settle/st_settle.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

static void rnd_id(char *dst, size_t max)
{
    static const char cs[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    size_t n = rnd(4) == 0 ? max : 1 + rnd((uint32_t)max);
    for (size_t i = 0; i < n; i++)
        dst[i] = cs[rnd(sizeof(cs) - 1)];
    dst[n] = '\0';
}

static void rnd_order(oq_order_t *o)
{
    memset(o, 0, sizeof(*o));
    o->type = OQ_MSG_ORDER;
    rnd_id(o->order_id, INV_ORDER_ID_MAX);
    rnd_id(o->sale_id, INV_SALE_ID_MAX);
    rnd_id(o->user_id, INV_USER_ID_MAX);
    static const uint32_t qtys[] = {1, 2, 9, 10, 999, OQ_QTY_MAX};
    o->qty = qtys[rnd(6)];
    static const int64_t ats[] = {1, 9, 10, 1763830000123LL, OQ_TIME_MAX_MS};
    o->accepted_at_ms = ats[rnd(5)];
    o->node_id = rnd(3) == 0 ? OQ_NODE_UNKNOWN : rnd(CM_ID_NODE_MAX + 1);
    if (rnd(3) == 0) {
        /* printable, no space; '"' and '\\' come out escaped: the slow path's */
        size_t n = 1 + rnd(INV_IDEM_KEY_MAX);
        for (size_t i = 0; i < n; i++)
            o->idem_key[i] = (char)('!' + rnd('~' - '!' + 1));
        o->idem_key[n] = '\0';
    }
}

static void assert_same(const oq_order_t *a, const oq_order_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->order_id, b->order_id);
    assert_string_equal(a->sale_id, b->sale_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->idem_key, b->idem_key);
    assert_string_equal(a->reason, b->reason);
    assert_int_equal(a->qty, b->qty);
    assert_int_equal(a->node_id, b->node_id);
    assert_int_equal(a->accepted_at_ms, b->accepted_at_ms);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->at_ms, b->at_ms);
}

/* The fast path agrees with the decoder on buf: accepted only with the same record. */
static int agree(const char *buf, size_t len)
{
    oq_order_t f, d;
    char why[160];
    if (st_order_parse_fast(buf, len, &f) != 0)
        return 0;
    if (oq_order_decode_json(buf, len, &d, why, sizeof(why)) != 0)
        fail_msg("fast path took what the decoder refuses (%s): %.*s", why, (int)len, buf);
    assert_same(&f, &d);
    return 1;
}

static void test_encoder_output(void **state)
{
    (void)state;
    int fast = 0, escaped = 0;
    for (int i = 0; i < 2000; i++) {
        oq_order_t o, got;
        char buf[OQ_ORDER_JSON_MAX];
        rnd_order(&o);
        int n = oq_order_encode(&o, buf, sizeof(buf));
        assert_true(n > 0);
        bool esc = strpbrk(o.idem_key, "\"\\") != NULL;
        if (esc) {
            escaped++;
            assert_int_equal(st_order_parse_fast(buf, (size_t)n, &got), -1);
        } else {
            assert_int_equal(st_order_parse_fast(buf, (size_t)n, &got), 0);
            assert_same(&got, &o);
            fast += agree(buf, (size_t)n);
        }
        /* st_order_parse gives the record either way */
        char why[160];
        assert_int_equal(st_order_parse(buf, (size_t)n, &got, why, sizeof(why)), 0);
        assert_same(&got, &o);
    }
    printf("# %d records by the fast path, %d with escapes by the decoder\n", fast, escaped);
    assert_true(fast > 1000 && escaped > 0);
}

static void test_mutations(void **state)
{
    (void)state;
    static const char subst[] = {'"', '\\', '0', '1', '9', 'a', ',', '}', '{', ':', ' ',
                                 '-', '.', 'e', '\0', (char)0x80, (char)0xff, '\n'};
    long tried = 0, taken = 0;
    for (int i = 0; i < 60; i++) {
        oq_order_t o;
        char buf[OQ_ORDER_JSON_MAX], m[OQ_ORDER_JSON_MAX + 1];
        rnd_order(&o);
        int n = oq_order_encode(&o, buf, sizeof(buf));
        assert_true(n > 0);
        for (int at = 0; at <= n; at++) {
            for (size_t k = 0; k < sizeof(subst) && at < n; k++) { /* replace */
                memcpy(m, buf, (size_t)n);
                m[at] = subst[k];
                taken += agree(m, (size_t)n);
                tried++;
            }
            if (at < n) { /* delete */
                memcpy(m, buf, (size_t)at);
                memcpy(m + at, buf + at + 1, (size_t)(n - at - 1));
                taken += agree(m, (size_t)n - 1);
                tried++;
            }
            for (size_t k = 0; k < sizeof(subst); k++) { /* insert */
                memcpy(m, buf, (size_t)at);
                m[at] = subst[k];
                memcpy(m + at + 1, buf + at, (size_t)(n - at));
                taken += agree(m, (size_t)n + 1);
                tried++;
            }
            taken += agree(buf, (size_t)at); /* truncated */
            tried++;
        }
    }
    printf("# %ld mutations, %ld taken by the fast path (each as the decoder reads it)\n",
           tried, taken);
    assert_true(taken > 0);
}

/* The edges the decoder refuses, one by one: the fast path must not take them. */
static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":01,\"accepted_at\":5}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":0,\"accepted_at\":5}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1001,\"accepted_at\":5}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":0}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5,"
        "\"node\":1024}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5,"
        "\"idem_key\":\"\"}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5,"
        "\"reason\":\"x\"}",
        "{\"order_id\":\"A B\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5}",
        "{\"order_id\":\"\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5}x",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5.0}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"accepted_at\":1234567890123456789}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        oq_order_t o;
        char why[160];
        assert_int_equal(st_order_parse_fast(bad[i], strlen(bad[i]), &o), -1);
        assert_int_not_equal(oq_order_decode_json(bad[i], strlen(bad[i]), &o, why, sizeof(why)), 0);
    }
    oq_order_t o;
    assert_int_equal(st_order_parse_fast(NULL, 0, &o), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_output),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
