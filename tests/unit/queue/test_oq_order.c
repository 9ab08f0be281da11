/* The order record's one codec: exact form, round trips of every record type
 * with worst-case fields, jansson agrees with the hand-written encoder, each
 * malformed field rejected with a reason that names it, buffer limits, the
 * status name table; spool position order. */
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "queue/oq_order.h"
#include "queue/oq_spool.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
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
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->order_id, b->order_id);
    assert_string_equal(a->sale_id, b->sale_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->person, b->person);
    assert_string_equal(a->idem_key, b->idem_key);
    assert_int_equal(a->key_fp, b->key_fp);
    assert_int_equal(a->qty, b->qty);
    assert_int_equal(a->accepted_at_ms, b->accepted_at_ms);
    assert_int_equal(a->node_id, b->node_id);
    assert_string_equal(a->reason, b->reason);
    assert_int_equal(a->giveback, b->giveback);
    if (a->type == OQ_MSG_OUTCOME || a->type == OQ_MSG_RELEASE) {
        assert_int_equal(a->status, b->status);
        assert_int_equal(a->at_ms, b->at_ms);
    }
}

static int roundtrip(const oq_order_t *o, oq_order_t *back)
{
    char buf[OQ_ORDER_JSON_MAX], why[160] = "";
    int n = oq_order_encode(o, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    int rc = oq_order_decode(buf, (size_t)n, back, why, sizeof(why));
    if (rc != 0)
        fail_msg("decode of %s: %s", buf, why);
    return n;
}

static void test_exact_form(void **state)
{
    (void)state;
    oq_order_t o = sample();
    char buf[512];
    int n = oq_order_encode(&o, buf, sizeof(buf));
    const char *want = "{\"order_id\":\"0C7PXW3K2M001\",\"sale_id\":\"sale-1\",\"user_id\":"
                       "\"user.42\",\"qty\":2,\"accepted_at\":1732269600123,\"node\":7}";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
    strcpy(o.idem_key, "k-1");
    n = oq_order_encode(&o, buf, sizeof(buf));
    assert_non_null(strstr(buf, ",\"idem_key\":\"k-1\"}"));
    assert_int_equal(n, strlen(buf));
    o.key_fp = OQ_KEY_FP_MAX; /* the raw key's stamped fingerprint follows the key */
    n = oq_order_encode(&o, buf, sizeof(buf));
    assert_non_null(strstr(buf, ",\"idem_key\":\"k-1\",\"key_fp\":4503599627370495}"));
    oq_order_t fp_back;
    roundtrip(&o, &fp_back);
    assert_order_equal(&o, &fp_back);
    o.idem_key[0] = '\0'; /* a fingerprint of no key: never written */
    n = oq_order_encode(&o, buf, sizeof(buf));
    assert_true(n > 0);
    assert_null(strstr(buf, "key_fp"));
    o.key_fp = 0;

    oq_order_t c = sample();
    c.type = OQ_MSG_CANCEL;
    c.accepted_at_ms = 0;
    c.node_id = OQ_NODE_UNKNOWN;
    strcpy(c.reason, "fraud");
    oq_order_encode(&c, buf, sizeof(buf));
    assert_string_equal(buf, "{\"type\":\"cancel\",\"order_id\":\"0C7PXW3K2M001\",\"sale_id\":"
                             "\"sale-1\",\"user_id\":\"user.42\",\"qty\":2,\"reason\":\"fraud\"}");
    c.type = OQ_MSG_OUTCOME;
    c.status = OQ_STATUS_SETTLED;
    c.at_ms = 5;
    c.reason[0] = '\0';
    oq_order_encode(&c, buf, sizeof(buf));
    assert_string_equal(buf, "{\"type\":\"outcome\",\"order_id\":\"0C7PXW3K2M001\",\"sale_id\":"
                             "\"sale-1\",\"user_id\":\"user.42\",\"qty\":2,\"status\":"
                             "\"settled\",\"at\":5}");
    /* a give-back release (gw_release_unaccepted) says so; only a release can */
    c.type = OQ_MSG_RELEASE;
    c.status = OQ_STATUS_FAILED;
    c.giveback = true;
    strcpy(c.reason, "not accepted: spool full");
    n = oq_order_encode(&c, buf, sizeof(buf));
    assert_string_equal(buf, "{\"type\":\"release\",\"order_id\":\"0C7PXW3K2M001\",\"sale_id\":"
                             "\"sale-1\",\"user_id\":\"user.42\",\"qty\":2,\"status\":"
                             "\"failed\",\"at\":5,\"giveback\":true,\"reason\":"
                             "\"not accepted: spool full\"}");
    oq_order_t back;
    assert_int_equal(oq_order_decode_fast(buf, (size_t)n, &back), 0);
    assert_order_equal(&c, &back);
    c.type = OQ_MSG_OUTCOME;
    assert_int_equal(oq_order_encode(&c, buf, sizeof(buf)), CM_EINVAL);
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    /* the widest legal fields: every printable byte in the idempotency key,
     * control characters, quotes, backslashes and UTF-8 in the reason */
    oq_order_t o = sample();
    size_t k = 0;
    for (int c = 0x21; c < 0x7f && k < INV_IDEM_KEY_MAX; c++)
        o.idem_key[k++] = (char)c;
    o.idem_key[k] = '\0';
    memset(o.order_id, 'Z', INV_ORDER_ID_MAX);
    o.order_id[INV_ORDER_ID_MAX] = '\0';
    memset(o.sale_id, '-', INV_SALE_ID_MAX);
    o.sale_id[INV_SALE_ID_MAX] = '\0';
    memset(o.user_id, '_', INV_USER_ID_MAX);
    o.user_id[INV_USER_ID_MAX] = '\0';
    o.qty = OQ_QTY_MAX;
    o.node_id = CM_ID_NODE_MAX;
    o.accepted_at_ms = OQ_TIME_MAX_MS;
    oq_order_t back;
    int n = roundtrip(&o, &back);
    assert_order_equal(&o, &back);

    /* jansson reads the same values out of the encoder's bytes */
    char buf[OQ_ORDER_JSON_MAX];
    oq_order_encode(&o, buf, sizeof(buf));
    json_error_t err;
    json_t *j = json_loadb(buf, (size_t)n, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "idem_key")), o.idem_key);
    assert_int_equal(json_integer_value(json_object_get(j, "accepted_at")), o.accepted_at_ms);
    assert_int_equal(json_object_size(j), 7);
    json_decref(j);

    oq_status_t st[] = {OQ_STATUS_SETTLED, OQ_STATUS_FAILED, OQ_STATUS_CANCELLED};
    for (int t = OQ_MSG_CANCEL; t <= OQ_MSG_RELEASE; t++) {
        for (size_t s = 0; s < 3; s++) {
            oq_order_t m = o;
            m.type = (oq_msg_type_t)t;
            m.idem_key[0] = '\0';
            m.accepted_at_ms = s == 0 ? 0 : 1732269600123LL;
            m.node_id = s == 1 ? OQ_NODE_UNKNOWN : 3;
            m.qty = (uint32_t)s; /* 0 is legal outside an order */
            m.status = st[s];
            if (t == OQ_MSG_RELEASE && st[s] == OQ_STATUS_SETTLED)
                m.status = OQ_STATUS_FAILED;
            m.at_ms = 1732269600999LL;
            /* every byte 0x01..0x7f, then UTF-8 of 2, 3 and 4 bytes */
            size_t r = 0;
            for (int c = 1; c < 0x80; c++)
                m.reason[r++] = (char)c;
            strcpy(m.reason + r, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
            int len = roundtrip(&m, &back);
            assert_true(len < OQ_ORDER_JSON_MAX);
            assert_order_equal(&m, &back);
            /* and the largest reason: every byte escaped as \u00XX */
            memset(m.reason, 0x01, OQ_REASON_MAX);
            m.reason[OQ_REASON_MAX] = '\0';
            roundtrip(&m, &back);
            assert_order_equal(&m, &back);
        }
    }
}

static void test_small_buffer(void **state)
{
    (void)state;
    oq_order_t o = sample();
    char buf[512];
    int n = oq_order_encode(&o, buf, sizeof(buf));
    assert_true(n > 0);
    char small[512];
    assert_int_equal(oq_order_encode(&o, small, (size_t)n), CM_EINVAL); /* no room for NUL */
    assert_int_equal(oq_order_encode(&o, small, (size_t)n + 1), n);
    assert_int_equal(oq_order_encode(&o, small, 0), CM_EINVAL);
}

/* Each malformed field is rejected, and the reason names the field. */
static void test_decode_rejects(void **state)
{
    (void)state;
#define ORD(rest) "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\"" rest "}"
#define OK_REST ",\"qty\":1,\"accepted_at\":1"
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"", "not JSON"},
        {"{", "not JSON"},
        {"[]", "not a JSON object"},
        {"null", "not JSON"},
        {"{\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,\"accepted_at\":1}", "order_id: missing"},
        {ORD(OK_REST ",\"order_id\":\"y\""), "not JSON"}, /* duplicate member */
        {"{\"order_id\":\"\",\"sale_id\":\"s\",\"user_id\":\"u\"" OK_REST "}", "order_id:"},
        {"{\"order_id\":\"a b\",\"sale_id\":\"s\",\"user_id\":\"u\"" OK_REST "}", "order_id:"},
        {"{\"order_id\":\"0123456789012345678901234567890123\",\"sale_id\":\"s\",\"user_id\":"
         "\"u\"" OK_REST "}",
         "order_id:"},
        {"{\"order_id\":7,\"sale_id\":\"s\",\"user_id\":\"u\"" OK_REST "}", "order_id:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"\",\"user_id\":\"u\"" OK_REST "}", "sale_id:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s/1\",\"user_id\":\"u\"" OK_REST "}", "sale_id:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\\u0000v\"" OK_REST "}", "not JSON"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"\\u00e9\"" OK_REST "}", "user_id:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s\"" OK_REST "}", "user_id: missing"},
        {ORD(OK_REST ",\"idem_key\":\"\""), "idem_key:"},
        {ORD(OK_REST ",\"idem_key\":\"a b\""), "idem_key:"},
        {ORD(OK_REST ",\"idem_key\":1"), "idem_key:"},
        {ORD(OK_REST ",\"key_fp\":5"), "key_fp: only"}, /* without an idem_key */
        {ORD(OK_REST ",\"idem_key\":\"k\",\"key_fp\":0"), "key_fp:"},
        {ORD(OK_REST ",\"idem_key\":\"k\",\"key_fp\":4503599627370496"), "key_fp:"},
        {ORD(OK_REST ",\"idem_key\":\"k\",\"key_fp\":\"5\""), "key_fp:"},
        {"{\"type\":\"cancel\",\"order_id\":\"x\",\"sale_id\":\"s\",\"idem_key\":\"k\","
         "\"key_fp\":5,\"reason\":\"r\"}",
         "key_fp: only"},
        {ORD(",\"accepted_at\":1"), "qty: missing"},
        {ORD(OK_REST ",\"giveback\":true"), "giveback: only a release"},
        {"{\"type\":\"release\",\"order_id\":\"x\",\"sale_id\":\"s\",\"status\":\"failed\","
         "\"giveback\":false}",
         "giveback: must be true"},
        {ORD(",\"qty\":0,\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":1001,\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":4294967297,\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":-1,\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":\"1\",\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":1.5,\"accepted_at\":1"), "qty:"},
        {ORD(",\"qty\":1"), "accepted_at: missing"},
        {ORD(",\"qty\":1,\"accepted_at\":0"), "accepted_at:"},
        {ORD(",\"qty\":1,\"accepted_at\":-5"), "accepted_at:"},
        {ORD(",\"qty\":1,\"accepted_at\":\"2024-11-22T10:00:00.123Z\""), "accepted_at:"},
        {ORD(",\"qty\":1,\"accepted_at\":253402300800000"), "accepted_at:"},
        {ORD(OK_REST ",\"node\":-1"), "node:"},
        {ORD(OK_REST ",\"node\":1024"), "node:"},
        {ORD(OK_REST ",\"node\":\"7\""), "node:"},
        {ORD(OK_REST ",\"type\":\"refund\""), "type:"},
        {ORD(OK_REST ",\"type\":1"), "type:"},
        {ORD(OK_REST ",\"reason\":5"), "reason:"},
        {ORD(OK_REST ",\"reason\":\"x\""), "reason:"}, /* an order has none (fuzz_order) */
        {"{\"type\":\"outcome\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1}",
         "status: missing"},
        {"{\"type\":\"outcome\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
         "\"status\":\"queued\"}",
         "status:"},
        {"{\"type\":\"outcome\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
         "\"status\":\"done\"}",
         "status:"},
        {"{\"type\":\"release\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
         "\"status\":\"settled\"}",
         "status:"},
        {"{\"type\":\"outcome\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
         "\"status\":\"settled\",\"at\":-1}",
         "at:"},
        {"{\"type\":\"cancel\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1001}",
         "qty:"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        oq_order_t o;
        char why[160] = "";
        int rc = oq_order_decode(bad[i].json, strlen(bad[i].json), &o, why, sizeof(why));
        if (rc != CM_EINVAL || strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("case %zu %s: rc=%d why=\"%s\", want \"%s\"", i, bad[i].json, rc, why,
                     bad[i].why);
    }
    /* a reason longer than OQ_REASON_MAX */
    char big[600];
    int n = snprintf(big, sizeof(big), "{\"type\":\"cancel\",\"order_id\":\"x\",\"sale_id\":\"s\","
                                       "\"user_id\":\"u\",\"reason\":\"");
    memset(big + n, 'r', OQ_REASON_MAX + 1);
    strcpy(big + n + OQ_REASON_MAX + 1, "\"}");
    oq_order_t o;
    char why[160];
    assert_int_equal(oq_order_decode(big, strlen(big), &o, why, sizeof(why)), CM_EINVAL);
    assert_memory_equal(why, "reason:", 7);
    /* the decoder reads len bytes only: a prefix of a valid record is invalid */
    const char *ok = ORD(OK_REST);
    assert_int_equal(oq_order_decode(ok, strlen(ok) - 1, &o, NULL, 0), CM_EINVAL);
    assert_int_equal(oq_order_decode(NULL, 0, &o, why, sizeof(why)), CM_EINVAL);
    /* the smallest valid records; unknown members are ignored */
    assert_int_equal(oq_order_decode(ok, strlen(ok), &o, why, sizeof(why)), 0);
    assert_int_equal(o.type, OQ_MSG_ORDER);
    assert_int_equal(o.node_id, OQ_NODE_UNKNOWN);
    assert_string_equal(o.idem_key, "");
    const char *typed = ORD(OK_REST ",\"type\":\"order\",\"future\":[1,2]");
    assert_int_equal(oq_order_decode(typed, strlen(typed), &o, why, sizeof(why)), 0);
    const char *cancel = "{\"type\":\"cancel\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\"}";
    assert_int_equal(oq_order_decode(cancel, strlen(cancel), &o, why, sizeof(why)), 0);
    assert_int_equal(o.type, OQ_MSG_CANCEL);
    assert_int_equal(o.qty, 0);
#undef ORD
#undef OK_REST
}

/* The encoder's input must pass the same checks; bounds are one set. */
static void test_check_matches_decoder(void **state)
{
    (void)state;
    oq_order_t o = sample();
    char why[160];
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), 0);
    o.qty = OQ_QTY_MAX + 1;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    assert_memory_equal(why, "qty:", 4);
    o = sample();
    o.qty = 0;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    o.type = OQ_MSG_CANCEL;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), 0);
    o = sample();
    strcpy(o.reason, "\xff");
    o.type = OQ_MSG_CANCEL;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    assert_memory_equal(why, "reason:", 7);
    /* a user id is required of an order only ("" = whoever holds it) */
    o = sample();
    o.user_id[0] = '\0';
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    assert_memory_equal(why, "user_id:", 8);
    o.type = OQ_MSG_CANCEL;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), 0);
    oq_order_t back;
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(&o, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(oq_order_decode(buf, (size_t)n, &back, why, sizeof(why)), 0);
    assert_string_equal(back.user_id, "");
    const char *nouser = "{\"order_id\":\"x\",\"sale_id\":\"s\",\"qty\":1,\"accepted_at\":1}";
    assert_int_equal(oq_order_decode(nouser, strlen(nouser), &back, why, sizeof(why)), CM_EINVAL);
    assert_string_equal(why, "user_id: missing");
    o = sample();
    o.node_id = 5000;
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    assert_memory_equal(why, "node:", 5);
}

static void test_status_names(void **state)
{
    (void)state;
    const char *names[] = {"queued", "settled", "failed", "cancelled"};
    for (int s = 0; s < OQ_STATUS_COUNT; s++) {
        assert_string_equal(oq_status_name((oq_status_t)s), names[s]);
        assert_int_equal(oq_status_parse(names[s], strlen(names[s])), s);
    }
    assert_int_equal(oq_status_parse("settle", 6), -1);
    assert_int_equal(oq_status_parse("settledx", 8), -1);
    assert_int_equal(oq_status_parse("settled", 6), -1);
    assert_int_equal(oq_status_parse(NULL, 0), -1);
    assert_string_equal(oq_status_name(OQ_STATUS_COUNT), "unknown");
    assert_true(oq_status_releases(OQ_STATUS_FAILED));
    assert_true(oq_status_releases(OQ_STATUS_CANCELLED));
    assert_false(oq_status_releases(OQ_STATUS_SETTLED));
    assert_false(oq_status_releases(OQ_STATUS_QUEUED));
}

/* Text from outside the codec made a reason: cut on a character, bad bytes '?'. */
static void test_reason_copy(void **state)
{
    (void)state;
    char src[1 + 200 * 3 + 1], dst[OQ_REASON_MAX + 1];
    strcpy(src, "x");
    for (int i = 0; i < 200; i++)
        strcat(src, "\xe2\x82\xac");                                     /* U+20AC, 3 bytes */
    assert_int_equal(oq_reason_copy(dst, sizeof(dst), src), 1 + 3 * 84); /* 85th: 1 byte short */
    oq_order_t o = sample();
    o.type = OQ_MSG_OUTCOME;
    o.status = OQ_STATUS_FAILED;
    strcpy(o.reason, dst);
    assert_int_equal(oq_order_check(&o, NULL, 0), 0);
    assert_int_equal(oq_reason_copy(dst, 4, "abcdef"), 3);
    assert_string_equal(dst, "abc");
    oq_reason_copy(dst, sizeof(dst),
                   "a\xff"
                   "b\xc3(\xed\xa0\x80z"); /* stray, cut, surrogate */
    assert_string_equal(dst, "a?b?(???z");
    oq_reason_copy(dst, sizeof(dst), NULL);
    assert_string_equal(dst, "");
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

/* The person member: written after user_id only when it is another id, read
 * back by both halves of the decoder, carried by every type, and
 * oq_order_person names whose mark the order holds either way. */
static void test_person(void **state)
{
    (void)state;
    oq_order_t o = sample(), back;
    char buf[OQ_ORDER_JSON_MAX], why[160] = "";
    oq_order_person_set(&o, "user.42"); /* the account's own person: not written */
    assert_string_equal(o.person, "");
    assert_true(oq_order_encode(&o, buf, sizeof(buf)) > 0);
    assert_null(strstr(buf, "person"));
    assert_string_equal(oq_order_person(&o), "user.42");

    oq_order_person_set(&o, "p-7");
    int n = oq_order_encode(&o, buf, sizeof(buf));
    assert_true(n > 0);
    assert_non_null(strstr(buf, "\"user_id\":\"user.42\",\"person\":\"p-7\",\"qty\":2"));
    assert_int_equal(oq_order_decode_fast(buf, (size_t)n, &back), 0);
    assert_order_equal(&o, &back);
    assert_int_equal(oq_order_decode_json(buf, (size_t)n, &back, why, sizeof(why)), 0);
    assert_order_equal(&o, &back);
    assert_string_equal(oq_order_person(&back), "p-7");
    for (int t = OQ_MSG_CANCEL; t <= OQ_MSG_RELEASE; t++) {
        oq_order_t e = o;
        e.type = (oq_msg_type_t)t;
        e.status = OQ_STATUS_FAILED;
        e.at_ms = 5;
        roundtrip(&e, &back);
        assert_string_equal(back.person, "p-7");
    }

    /* an older record without it: the person is the account */
    const char *old = "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"qty\":1,"
                      "\"accepted_at\":1}";
    assert_int_equal(oq_order_decode(old, strlen(old), &back, why, sizeof(why)), 0);
    assert_string_equal(back.person, "");
    assert_string_equal(oq_order_person(&back), "u");
    /* a writer that spells the account's own: read as absent */
    const char *same = "{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"person\":\"u\","
                       "\"qty\":1,\"accepted_at\":1}";
    assert_int_equal(oq_order_decode(same, strlen(same), &back, why, sizeof(why)), 0);
    assert_string_equal(back.person, "");
    /* unknown members around it are still ignored, in any order */
    const char *moved = "{\"person\":\"p\",\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\","
                        "\"qty\":1,\"accepted_at\":1,\"later\":3}";
    assert_int_equal(oq_order_decode(moved, strlen(moved), &back, why, sizeof(why)), 0);
    assert_string_equal(back.person, "p");

    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"person\":\"\",\"qty\":1,"
         "\"accepted_at\":1}",
         "person:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"person\":\"a b\",\"qty\":1,"
         "\"accepted_at\":1}",
         "person:"},
        {"{\"order_id\":\"x\",\"sale_id\":\"s\",\"user_id\":\"u\",\"person\":7,\"qty\":1,"
         "\"accepted_at\":1}",
         "person:"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(oq_order_decode(bad[i].json, strlen(bad[i].json), &back, why, sizeof(why)),
                         CM_EINVAL);
        if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("%s: %s", bad[i].json, why);
    }
    /* the check keeps the encoder from writing what it would not read back as is */
    strcpy(o.person, o.user_id);
    assert_int_equal(oq_order_check(&o, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(oq_order_encode(&o, buf, sizeof(buf)), CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_form),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_check_matches_decoder),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_reason_copy),
        cmocka_unit_test(test_pos_cmp),
        cmocka_unit_test(test_person),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
