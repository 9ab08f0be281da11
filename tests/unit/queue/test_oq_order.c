/* Order <-> JSON: round trips, jansson agrees with the hand-written encoder,
 * escaping, bad input, buffer limits; position order. */
#include "common/cm_err.h"
#include "queue/oq_spool.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static oq_order_t sample(void)
{
    oq_order_t o;
    memset(&o, 0, sizeof(o));
    strcpy(o.order_id, "0C7PXW3K2M001");
    strcpy(o.sale_id, "sale-1");
    strcpy(o.user_id, "user.42");
    o.qty = 2;
    o.accepted_at_ms = 1732269600123LL;
    o.node_id = 7;
    return o;
}

static void assert_order_equal(const oq_order_t *a, const oq_order_t *b)
{
    assert_string_equal(a->order_id, b->order_id);
    assert_string_equal(a->sale_id, b->sale_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->idem_key, b->idem_key);
    assert_int_equal(a->qty, b->qty);
    assert_int_equal(a->accepted_at_ms, b->accepted_at_ms);
    assert_int_equal(a->node_id, b->node_id);
}

static void test_exact_form(void **state)
{
    (void)state;
    oq_order_t o = sample();
    char buf[512];
    int n = oq_order_to_json(&o, buf, sizeof(buf));
    const char *want = "{\"order_id\":\"0C7PXW3K2M001\",\"sale_id\":\"sale-1\",\"user_id\":"
                       "\"user.42\",\"qty\":2,\"accepted_at\":1732269600123,\"node\":7}";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
    strcpy(o.idem_key, "k-1");
    n = oq_order_to_json(&o, buf, sizeof(buf));
    assert_non_null(strstr(buf, ",\"idem_key\":\"k-1\"}"));
    assert_int_equal(n, strlen(buf));
}

static void test_round_trip_and_jansson_agrees(void **state)
{
    (void)state;
    oq_order_t o = sample();
    /* every printable byte and a few control bytes in the idempotency key */
    size_t k = 0;
    for (int c = 0x20; c < 0x7f && k < INV_IDEM_KEY_MAX - 4; c++)
        o.idem_key[k++] = (char)c;
    o.idem_key[k++] = '\n';
    o.idem_key[k++] = '\t';
    o.idem_key[k++] = 0x01;
    o.idem_key[k] = '\0';
    char buf[2048];
    int n = oq_order_to_json(&o, buf, sizeof(buf));
    assert_true(n > 0);
    json_error_t err;
    json_t *j = json_loadb(buf, (size_t)n, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "idem_key")), o.idem_key);
    assert_int_equal(json_integer_value(json_object_get(j, "accepted_at")), o.accepted_at_ms);
    assert_int_equal(json_object_size(j), 7);
    json_decref(j);
    oq_order_t back;
    assert_int_equal(oq_order_from_json(buf, (size_t)n, &back), 0);
    assert_order_equal(&o, &back);
    /* maximum-length fields fit in ORDER_JSON_MAX-sized buffers */
    memset(o.order_id, '"', INV_ORDER_ID_MAX);
    o.order_id[INV_ORDER_ID_MAX] = 0;
    memset(o.sale_id, 0x02, INV_SALE_ID_MAX);
    o.sale_id[INV_SALE_ID_MAX] = 0;
    memset(o.user_id, '\\', INV_USER_ID_MAX);
    o.user_id[INV_USER_ID_MAX] = 0;
    memset(o.idem_key, 0x1f, INV_IDEM_KEY_MAX);
    o.idem_key[INV_IDEM_KEY_MAX] = 0;
    o.qty = UINT32_MAX;
    o.accepted_at_ms = -1;
    n = oq_order_to_json(&o, buf, sizeof(buf));
    assert_true(n > 0 && n < 2048);
    assert_int_equal(oq_order_from_json(buf, (size_t)n, &back), 0);
    assert_order_equal(&o, &back);
}

static void test_small_buffer(void **state)
{
    (void)state;
    oq_order_t o = sample();
    char buf[512];
    int n = oq_order_to_json(&o, buf, sizeof(buf));
    assert_true(n > 0);
    char small[512];
    assert_int_equal(oq_order_to_json(&o, small, (size_t)n), CM_EINVAL); /* no room for NUL */
    assert_int_equal(oq_order_to_json(&o, small, (size_t)n + 1), n);
    assert_int_equal(oq_order_to_json(&o, small, 0), CM_EINVAL);
}

static void test_from_json_rejects(void **state)
{
    (void)state;
    oq_order_t o;
    const char *bad[] = {
        "",
        "[]",
        "{",
        "{\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":1}", /* no id */
        "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":0,\"accepted_at\":1}",
        "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":\"1\",\"accepted_at\":1}",
        "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1}",
        "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":\"no\"}",
        "{\"order_id\":\"x\",\"sale_id\":\"\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":1}",
        "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":1,"
        "\"node\":-1}",
        "{\"order_id\":\"0123456789012345678901234567890123\",\"sale_id\":\"s\",\"user_id\":\"u\","
        "\"qty\":1,\"accepted_at\":1}", /* id too long */
        "{\"order_id\":\"x\",\"order_id\":\"y\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
        "\"accepted_at\":1}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(oq_order_from_json(bad[i], strlen(bad[i]), &o), CM_EINVAL);
    const char *ok = "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":3,"
                     "\"accepted_at\":\"2024-11-22T10:00:00.123Z\"}";
    assert_int_equal(oq_order_from_json(ok, strlen(ok), &o), 0);
    assert_int_equal(o.accepted_at_ms, 1732269600123LL);
    assert_int_equal(o.qty, 3);
    assert_int_equal(o.node_id, 0);
    assert_string_equal(o.idem_key, "");
}

static void test_pos_cmp(void **state)
{
    (void)state;
    oq_pos_t a = {1, 100}, b = {1, 200}, c = {2, 0};
    assert_int_equal(oq_pos_cmp(a, b), -1);
    assert_int_equal(oq_pos_cmp(b, a), 1);
    assert_int_equal(oq_pos_cmp(b, c), -1);
    assert_int_equal(oq_pos_cmp(c, b), 1);
    assert_int_equal(oq_pos_cmp(c, c), 0);
    oq_pos_t big = {UINT64_MAX, 0};
    assert_int_equal(oq_pos_cmp(big, c), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_form),
        cmocka_unit_test(test_round_trip_and_jansson_agrees),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_from_json_rejects),
        cmocka_unit_test(test_pos_cmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
