/* The reply table owns status, code and the Retry-After policy: every 503 and
 * 429 carries Retry-After from the table, an override replaces it (never a
 * second header), and the one sold-out answer. */
#include "gateway/gw_internal.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static int count_header(const gw_resp_t *r, const char *name, const char **value)
{
    int n = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i][0], name) == 0) {
            n++;
            *value = r->headers[i][1];
        }
    }
    return n;
}

static void test_retry_after_from_table(void **state)
{
    (void)state;
    for (int i = 0; i < GW_R_COUNT; i++) {
        gw_resp_t r;
        gw_resp_error(&r, (gw_reply_t)i, NULL, "x");
        const char *v = NULL;
        int n = count_header(&r, "Retry-After", &v);
        int st = gw_reply_status((gw_reply_t)i);
        if (st == 503 || st == 429) {
            assert_int_equal(n, 1);
            assert_string_equal(v, "1");
        } else {
            assert_int_equal(n, (int)(gw_reply_retry_after((gw_reply_t)i) != 0));
        }
    }
}

static void test_retry_after_override_replaces(void **state)
{
    (void)state;
    gw_resp_t r;
    gw_resp_error(&r, GW_R_RATE_LIMITED, NULL, "slow down");
    gw_resp_retry_after(&r, 7);
    gw_resp_retry_after(&r, 9);
    const char *v = NULL;
    assert_int_equal(count_header(&r, "Retry-After", &v), 1);
    assert_string_equal(v, "9");
    gw_resp_init(&r, GW_R_NOT_STARTED);
    assert_int_equal(count_header(&r, "Retry-After", &v), 0);
    gw_resp_retry_after(&r, 30);
    assert_int_equal(count_header(&r, "Retry-After", &v), 1);
    assert_string_equal(v, "30");
}

static void test_created_and_sold_out(void **state)
{
    (void)state;
    gw_resp_t r;
    gw_resp_init(&r, GW_R_CREATED);
    assert_int_equal(r.status, 201);
    gw_resp_sold_out(&r, "s1");
    assert_int_equal(r.status, 410);
    assert_string_equal(r.body, "{\"error\":\"sold_out\",\"message\":\"sale s1 is sold out\"}");
}

/* The hand-read dotted quad takes only what inet_pton takes, with the same bytes. */
static void test_ipv4_parse(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "1.2.3.4", "0.0.0.0", "255.255.255.255", "10.0.12.250", "192.168.1.7",
        "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "00.1.2.3", "1..2.3",
        "1.2.3.4 ", " 1.2.3.4", "1.2.3.", ".1.2.3", "1.2.3.1000", "1.2.3.-1", "",
        "::1", "1.2.3.4a", "999.1.1.1", "1.2.3.255", "1.2.300.4"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t a[4] = {0}, b[4] = {0};
        bool fast = gw_ipv4_parse(cases[i], a);
        bool libc = inet_pton(AF_INET, cases[i], b) == 1;
        assert_int_equal(fast, libc);
        if (fast)
            assert_memory_equal(a, b, 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_from_table),
        cmocka_unit_test(test_retry_after_override_replaces),
        cmocka_unit_test(test_created_and_sold_out),
        cmocka_unit_test(test_ipv4_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
