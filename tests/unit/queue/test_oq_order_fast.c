/*
 * oq_order_decode's fast half (oq_order_decode_fast, the encoder's exact form
 * without jansson) against its jansson half (oq_order_decode_json, the
 * judge): whatever the fast half accepts, the judge accepts with the same
 * fields, and the fast half does take the encoder's own output of every
 * record type. Differential, over generated records of the four types and
 * every one-byte mutation of some of them.
 */
#include "common/cm_id.h"
#include "queue/oq_order.h"
#include "tests/support/ts_order.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* printable ASCII with '"' and '\\' now and then (the encoder escapes those:
 * the judge's records), or a byte above 0x7f, up to max */
static void rnd_text(char *dst, size_t max, bool allow_empty)
{
    size_t n = (allow_empty && ts_rnd(4) == 0) ? 0 : 1 + ts_rnd((uint32_t)max);
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)(ts_rnd(40) == 0 ? '\\' : ' ' + ts_rnd('~' - ' ' + 1));
    if (n && ts_rnd(10) == 0)
        dst[ts_rnd((uint32_t)n)] = '\n';
    dst[n] = '\0';
}

/* A record of any type that oq_order_check accepts (the encoder writes only those). */
static void rnd_record(oq_order_t *o)
{
    static const int64_t ats[] = {1, 9, 10, 1763830000123LL, OQ_TIME_MAX_MS};
    for (;;) {
        memset(o, 0, sizeof(*o));
        o->type = (oq_msg_type_t)ts_rnd(4);
        ts_rnd_id(o->order_id, INV_ORDER_ID_MAX);
        ts_rnd_id(o->sale_id, INV_SALE_ID_MAX);
        if (o->type == OQ_MSG_ORDER || ts_rnd(4) != 0)
            ts_rnd_id(o->user_id, INV_USER_ID_MAX);
        static const uint32_t qtys[] = {1, 2, 9, 10, 999, OQ_QTY_MAX};
        o->qty = (o->type != OQ_MSG_ORDER && ts_rnd(5) == 0) ? 0 : qtys[ts_rnd(6)];
        if (o->type == OQ_MSG_ORDER || ts_rnd(2) == 0)
            o->accepted_at_ms = ats[ts_rnd(5)];
        o->node_id = ts_rnd(3) == 0 ? OQ_NODE_UNKNOWN : ts_rnd(CM_ID_NODE_MAX + 1);
        if (ts_rnd(3) == 0)
            ts_rnd_id(o->person, INV_USER_ID_MAX); /* the same as user_id: refused below */
        if (ts_rnd(3) == 0)
            rnd_text(o->idem_key, INV_IDEM_KEY_MAX, false);
        if (o->type == OQ_MSG_ORDER && o->idem_key[0] && ts_rnd(2) == 0)
            o->key_fp = ts_rnd(3) == 0 ? (uint64_t)OQ_KEY_FP_MAX
                                       : ((uint64_t)ts_rnd(1u << 20) << 32 | ts_rnd(UINT32_MAX));
        if (o->type == OQ_MSG_OUTCOME || o->type == OQ_MSG_RELEASE) {
            o->status = (oq_status_t)ts_rnd(OQ_STATUS_COUNT);
            o->at_ms = ts_rnd(5) == 0 ? 0 : ats[ts_rnd(5)];
        }
        if (o->type != OQ_MSG_ORDER && ts_rnd(2) == 0)
            rnd_text(o->reason, ts_rnd(3) == 0 ? OQ_REASON_MAX : 40, true);
        if (oq_order_check(o, NULL, 0) == 0)
            return;
    }
}

/* The fast half agrees with the judge on buf: accepted only with the same record. */
static int agree(const char *buf, size_t len)
{
    oq_order_t f, d;
    char why[160];
    if (oq_order_decode_fast(buf, len, &f) != 0)
        return 0;
    if (oq_order_decode_json(buf, len, &d, why, sizeof(why)) != 0)
        fail_msg("fast half took what the judge refuses (%s): %.*s", why, (int)len, buf);
    ts_order_assert_same(&f, &d);
    return 1;
}

static bool needs_escape(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return true;
    return false;
}

static void test_encoder_output(void **state)
{
    (void)state;
    int fast[4] = {0}, escaped = 0;
    for (int i = 0; i < 4000; i++) {
        oq_order_t o, got;
        char buf[OQ_ORDER_JSON_MAX], why[160];
        rnd_record(&o);
        int n = oq_order_encode(&o, buf, sizeof(buf));
        assert_true(n > 0);
        if (needs_escape(o.idem_key) || needs_escape(o.reason)) {
            escaped++;
            assert_int_equal(oq_order_decode_fast(buf, (size_t)n, &got), -1);
        } else {
            assert_int_equal(oq_order_decode_fast(buf, (size_t)n, &got), 0);
            ts_order_assert_same(&got, &o);
            fast[o.type] += agree(buf, (size_t)n);
        }
        /* oq_order_decode gives the record either way */
        assert_int_equal(oq_order_decode(buf, (size_t)n, &got, why, sizeof(why)), 0);
        ts_order_assert_same(&got, &o);
    }
    printf("# fast half: %d orders, %d cancels, %d outcomes, %d releases; %d with escapes by "
           "the judge\n", fast[0], fast[1], fast[2], fast[3], escaped);
    for (int t = 0; t < 4; t++)
        assert_true(fast[t] > 200);
    assert_true(escaped > 100);
}

static void test_mutations(void **state)
{
    (void)state;
    static const char subst[] = {'"', '\\', '0', '1', '9', 'a', ',', '}', '{', ':', ' ',
                                 '-', '.', 'e', '\0', (char)0x80, (char)0xff, '\n'};
    long tried = 0, taken = 0;
    for (int i = 0; i < 40; i++) {
        oq_order_t o;
        char buf[OQ_ORDER_JSON_MAX], m[OQ_ORDER_JSON_MAX + 1];
        do
            rnd_record(&o);
        while (needs_escape(o.idem_key) || needs_escape(o.reason) || strlen(o.reason) > 40);
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
    printf("# %ld mutations, %ld taken by the fast half (each as the judge reads it)\n", tried,
           taken);
    assert_true(taken > 0);
}

/* Edges the judge refuses or that are outside the encoder's form: the fast half takes none. */
static void test_refused(void **state)
{
    (void)state;
    static const char *const outside[] = {
        /* refused by the judge too */
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"bogus\",\"at\":5}",
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1}",
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"settled\",\"at\":-1}",
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1001,"
        "\"status\":\"settled\",\"at\":5}",
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"settled\",\"at\":5,\"reason\":\"x\",\"reason\":\"y\"}",
        "{\"type\":\"nope\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1}",
        "{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5,"
        "\"reason\":\"x\"}",
        /* accepted by the judge, but not the encoder's form: the judge reads them */
        "{\"type\":\"order\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"accepted_at\":5}",
        "{\"type\":\"outcome\", \"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"settled\",\"at\":5}",
        "{\"type\":\"outcome\",\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"settled\",\"at\":5,\"extra\":1}",
        "{\"type\":\"outcome\",\"sale_id\":\"s\",\"order_id\":\"A\",\"user_id\":\"u\",\"qty\":1,"
        "\"status\":\"settled\",\"at\":5}",
    };
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
        oq_order_t o;
        assert_int_equal(oq_order_decode_fast(outside[i], strlen(outside[i]), &o), -1);
    }
    oq_order_t o;
    char why[160];
    assert_int_not_equal(oq_order_decode(outside[0], strlen(outside[0]), &o, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "status"));
    assert_int_equal(oq_order_decode(outside[8], strlen(outside[8]), &o, why, sizeof(why)), 0);
    assert_int_equal(o.type, OQ_MSG_OUTCOME);
    assert_int_equal(oq_order_decode_fast(NULL, 0, &o), -1);
}

/* Order records at the edges of what the judge takes: the fast half refuses
 * each one the judge refuses (zero or too large numbers, a leading zero, a
 * fraction, an empty idem key, a reason on an order, an id with a space). */
static void test_order_edges(void **state)
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
        assert_int_equal(oq_order_decode_fast(bad[i], strlen(bad[i]), &o), -1);
        assert_int_not_equal(oq_order_decode_json(bad[i], strlen(bad[i]), &o, why, sizeof(why)), 0);
    }
}

int main(void)
{
    ts_rnd_seed(0x2545F4914F6CDD1Dull);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_output),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_order_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
