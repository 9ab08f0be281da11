/* The reply table owns status, code and the Retry-After policy: every 503 and
 * 429 carries Retry-After from the table, an override replaces it (never a
 * second header), and the one sold-out answer. */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The rendered head: status line and reason, Date, Content-Type, the
 * response's headers, no-store unless it has a Cache-Control, Content-Length. */
static void test_render(void **state)
{
    (void)state;
    gw_resp_t r;
    gw_resp_sold_out(&r, "s1");
    char date[GW_DATE_LEN + 1];
    gw_http_date(784111777, date);
    char out[GW_RESP_HEAD_MAX];
    size_t off = 0;
    size_t n = gw_resp_render(&r, date, out, sizeof(out), &off);
    out[n] = '\0';
    char want[512];
    snprintf(want, sizeof(want),
             "HTTP/1.1 410 Gone\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
             "Content-Type: application/json\r\nCache-Control: no-store\r\n"
             "Content-Length: %zu\r\n",
             r.body_len);
    assert_string_equal(out, want);
    assert_memory_equal(out + off, date, GW_DATE_LEN);
    gw_resp_init(&r, GW_R_OK);
    gw_resp_header(&r, "Cache-Control", "public, max-age=%d", 1);
    n = gw_resp_render(&r, date, out, sizeof(out), NULL);
    out[n] = '\0';
    assert_non_null(strstr(out, "Cache-Control: public, max-age=1\r\n"));
    assert_null(strstr(out, "no-store"));
    assert_non_null(strstr(out, "Content-Length: 0\r\n"));
    /* the largest response fits the documented room */
    gw_resp_init(&r, GW_R_RATE_LIMITED);
    char big[200];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    while (r.nheaders < 6)
        gw_resp_header(&r, "X-Long-Name-Of-A-Header-That-Is-Long", "%s", big);
    r.status = 999;
    n = gw_resp_render(&r, date, out, sizeof(out), NULL);
    assert_true(n < GW_RESP_HEAD_MAX);
}

/* A prepared answer takes the worker's Date when its second passed, in place. */
static void test_prep_redate(void **state)
{
    (void)state;
    gw_worker_t *w = calloc(1, sizeof(*w));
    w->date_s = 784111777;
    gw_http_date(w->date_s, w->date);
    gw_resp_t r;
    gw_resp_sold_out(&r, "s1");
    gw_prep_t *p = gw_prep_new(&r, w);
    assert_int_equal(p->len, p->head_len + 2 + r.body_len);
    assert_memory_equal(p->buf + p->head_len, "\r\n", 2);
    assert_memory_equal(p->buf + p->head_len + 2, r.body, r.body_len);
    w->date_s += 61;
    gw_http_date(w->date_s, w->date);
    gw_prep_redate(p, w);
    assert_memory_equal(p->buf + p->date_off, "Sun, 06 Nov 1994 08:50:38 GMT", GW_DATE_LEN);
    assert_int_equal(p->date_s, w->date_s);
    gw_prep_free(p);
    free(w);
}

/* %XX decoding (bad escapes and %00 stay as they are) and the query's arguments. */
static void test_unescape_and_query(void **state)
{
    (void)state;
    char s[] = "/v1/a%20b%2Fc%zz%4";
    gw_h1_unescape(s);
    assert_string_equal(s, "/v1/a b/c%zz%4");
    char q[] = "user_id=u%2D1&ticket&&x=&token=a%3Db=c";
    gw_arg_t args[4];
    unsigned n = gw_h1_parse_query(q, args, 4);
    assert_int_equal(n, 4);
    assert_string_equal(args[0].name, "user_id");
    assert_string_equal(args[0].value, "u-1");
    assert_string_equal(args[1].name, "ticket");
    assert_null(args[1].value);
    assert_string_equal(args[2].name, "x");
    assert_string_equal(args[2].value, "");
    assert_string_equal(args[3].name, "token");
    assert_string_equal(args[3].value, "a=b=c");
    /* %00 is not decoded: a NUL would end the value there and drop the rest unseen */
    char q3[] = "token=abc%00junk&user_id=u1%00x";
    assert_int_equal(gw_h1_parse_query(q3, args, 4), 2);
    assert_string_equal(args[0].value, "abc%00junk");
    assert_string_equal(args[1].value, "u1%00x");
    char q2[] = "a=1&b=2&c=3";
    assert_int_equal(gw_h1_parse_query(q2, args, 2), 2); /* past max: ignored */
    assert_string_equal(gw_reply_reason(431), "Request Header Fields Too Large");
    assert_string_equal(gw_reply_reason(418), "Client Error");
}

/* A trusted proxy on a dual-stack socket writes an IPv4 client into
 * X-Forwarded-For as ::ffff:a.b.c.d. That client is the IPv4 address, as it
 * is when it is the socket's peer: its own 4-byte limiter key, not the /64 of
 * the mapped form, whose first 8 bytes are zero for every IPv4 client (one
 * per-IP bucket for all of them). A mapped hop is a trusted proxy if its IPv4
 * address is one. */
static void test_client_key_v4_mapped_xff(void **state)
{
    (void)state;
    gw_proxies_t px;
    char err[128];
    assert_int_equal(gw_proxies_parse(&px, "10.0.0.0/8", err, sizeof(err)), 0);
    struct sockaddr_in peer = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.0.0.1", &peer.sin_addr);
    const struct sockaddr *sa = (const struct sockaddr *)&peer;
    uint8_t a[16], b[16];
    assert_int_equal(gw_client_key(&px, sa, "::ffff:203.0.113.5", a), 4);
    assert_memory_equal(a, ((const uint8_t[]){203, 0, 113, 5}), 4);
    assert_int_equal(gw_client_key(&px, sa, "::ffff:198.51.100.7", b), 4);
    assert_memory_not_equal(a, b, 4);
    /* the mapped form of a trusted proxy is walked past */
    assert_int_equal(gw_client_key(&px, sa, "203.0.113.5, ::ffff:10.0.0.2", b), 4);
    assert_memory_equal(b, a, 4);
    /* X-Real-IP gets the IPv4 address too */
    assert_int_equal(gw_client_addr(&px, sa, "::ffff:203.0.113.5", b), AF_INET);
    assert_memory_equal(b, a, 4);
    /* a real IPv6 client keeps its /64 */
    assert_int_equal(gw_client_key(&px, sa, "2001:db8:1:2::5", b), 8);
    gw_proxies_free(&px);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_from_table),
        cmocka_unit_test(test_retry_after_override_replaces),
        cmocka_unit_test(test_created_and_sold_out),
        cmocka_unit_test(test_ipv4_parse),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_prep_redate),
        cmocka_unit_test(test_unescape_and_query),
        cmocka_unit_test(test_client_key_v4_mapped_xff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
