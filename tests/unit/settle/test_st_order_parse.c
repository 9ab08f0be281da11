/*
 * flashgate-settle's reader of the orders topic (st_order_parse): it takes
 * orders and cancels exactly as the order codec reads them (oq_order_decode:
 * the encoder's form by its fast half, anything else by jansson; their
 * agreement is unit.oq_order_fast's and fuzz_order's), refuses the other
 * record types and malformed values with the problem named.
 */
#include "common/cm_id.h"
#include "queue/oq_order.h"
#include "settle/st_settle.h"
#include "tests/support/ts_order.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void rnd_order(oq_order_t *o)
{
    memset(o, 0, sizeof(*o));
    o->type = OQ_MSG_ORDER;
    ts_rnd_id(o->order_id, INV_ORDER_ID_MAX);
    ts_rnd_id(o->sale_id, INV_SALE_ID_MAX);
    ts_rnd_id(o->user_id, INV_USER_ID_MAX);
    static const uint32_t qtys[] = {1, 2, 9, 10, 999, OQ_QTY_MAX};
    o->qty = qtys[ts_rnd(6)];
    static const int64_t ats[] = {1, 9, 10, 1763830000123LL, OQ_TIME_MAX_MS};
    o->accepted_at_ms = ats[ts_rnd(5)];
    o->node_id = ts_rnd(3) == 0 ? OQ_NODE_UNKNOWN : ts_rnd(CM_ID_NODE_MAX + 1);
    if (ts_rnd(3) == 0) {
        /* printable, no space; '"' and '\\' come out escaped: the slow path's */
        size_t n = 1 + ts_rnd(INV_IDEM_KEY_MAX);
        for (size_t i = 0; i < n; i++)
            o->idem_key[i] = (char)('!' + ts_rnd('~' - '!' + 1));
        o->idem_key[n] = '\0';
    }
}

/* The encoder's own orders, with and without escaped idem keys (the two halves of the codec). */
static void test_encoder_output(void **state)
{
    (void)state;
    int escaped = 0;
    for (int i = 0; i < 2000; i++) {
        oq_order_t o, got;
        char buf[OQ_ORDER_JSON_MAX], why[160];
        rnd_order(&o);
        int n = oq_order_encode(&o, buf, sizeof(buf));
        assert_true(n > 0);
        escaped += strpbrk(o.idem_key, "\"\\") != NULL;
        assert_int_equal(st_order_parse(buf, (size_t)n, &got, why, sizeof(why)), 0);
        ts_order_assert_same(&got, &o);
    }
    assert_true(escaped > 0);
}

/* Cancels belong to the topic; outcomes and releases do not. */
static void test_types(void **state)
{
    (void)state;
    for (int t = OQ_MSG_ORDER; t <= OQ_MSG_RELEASE; t++) {
        oq_order_t o, got;
        char buf[OQ_ORDER_JSON_MAX], why[160] = "";
        rnd_order(&o);
        o.type = (oq_msg_type_t)t;
        if (t == OQ_MSG_OUTCOME || t == OQ_MSG_RELEASE) {
            o.status = OQ_STATUS_FAILED; /* a release is failed or cancelled */
            o.at_ms = 5;
        }
        assert_int_equal(oq_order_check(&o, why, sizeof(why)), 0);
        int n = oq_order_encode(&o, buf, sizeof(buf));
        assert_true(n > 0);
        int rc = st_order_parse(buf, (size_t)n, &got, why, sizeof(why));
        if (t == OQ_MSG_ORDER || t == OQ_MSG_CANCEL) {
            assert_int_equal(rc, 0);
            ts_order_assert_same(&got, &o);
        } else {
            assert_int_not_equal(rc, 0);
            assert_non_null(strstr(why, "not for the orders topic"));
        }
    }
}

/* Malformed values are refused with the field named, whatever half reads them. */
static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *json, *field;
    } bad[] = {
        {"{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":0,\"accepted_at\":5}", "qty"},
        {"{\"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5,"
         "\"node\":1024}",
         "node"},
        {"{\"order_id\":\"A B\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":5}",
         "order_id"},
        {"{ \"order_id\":\"A\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1}", "accepted_at"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        oq_order_t o;
        char why[160] = "";
        assert_int_not_equal(st_order_parse(bad[i].json, strlen(bad[i].json), &o, why, sizeof(why)),
                             0);
        if (!strstr(why, bad[i].field))
            fail_msg("%s: '%s' does not name %s", bad[i].json, why, bad[i].field);
    }
    oq_order_t o;
    char why[160] = "";
    assert_int_not_equal(st_order_parse("", 0, &o, why, sizeof(why)), 0);
    assert_true(why[0] != '\0');
}

int main(void)
{
    ts_rnd_seed(0x9E3779B97F4A7C15ull);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_output),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
