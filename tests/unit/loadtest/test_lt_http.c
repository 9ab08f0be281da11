/* The strict HTTP/1.1 response parser: whole, byte by byte, and what it refuses. */
#include "common/cm_err.h"
#include "loadtest/lt_http.h"
#include "loadtest/lt_run.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const char ok202[] = "HTTP/1.1 202 Accepted\r\n"
                            "Content-Type: application/json\r\n"
                            "Location: /v1/orders/0ABC\r\n"
                            "Content-Length: 27\r\n"
                            "\r\n"
                            "{\"order_id\":\"0ABC\",\"qty\":1}";

static void test_whole_response(void **state)
{
    (void)state;
    lt_http_parser_t p;
    lt_http_parser_init(&p, false);
    size_t used;
    assert_int_equal(lt_http_parser_feed(&p, ok202, strlen(ok202), &used), LT_HTTP_DONE);
    assert_int_equal(used, strlen(ok202));
    assert_int_equal(p.resp.status, 202);
    assert_int_equal(p.resp.content_length, 27);
    assert_int_equal(p.resp.body_len, 27);
    assert_string_equal(p.resp.body, "{\"order_id\":\"0ABC\",\"qty\":1}");
    assert_int_equal(p.resp.retry_after_s, -1);
    assert_false(p.resp.conn_close);
    lt_http_parser_free(&p);
}

static void test_byte_by_byte_and_reuse(void **state)
{
    (void)state;
    lt_http_parser_t p;
    lt_http_parser_init(&p, false);
    for (int round = 0; round < 3; round++) {
        size_t n = strlen(ok202), used;
        int rc = LT_HTTP_NEED_MORE;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(rc, LT_HTTP_NEED_MORE);
            rc = lt_http_parser_feed(&p, ok202 + i, 1, &used);
            assert_int_equal(used, 1);
        }
        assert_int_equal(rc, LT_HTTP_DONE);
        assert_int_equal(p.resp.status, 202);
        assert_string_equal(p.resp.body, "{\"order_id\":\"0ABC\",\"qty\":1}");
        lt_http_parser_reset(&p, false);
        assert_int_equal(p.resp.status, 0);
    }
    lt_http_parser_free(&p);
}

static void test_retry_after_and_close(void **state)
{
    (void)state;
    const char r[] = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
                     "RateLimit-Policy: 10;w=1\r\nconnection: Close\r\ncontent-length:  0 \r\n\r\n";
    lt_http_parser_t p;
    lt_http_parser_init(&p, false);
    size_t used;
    assert_int_equal(lt_http_parser_feed(&p, r, strlen(r), &used), LT_HTTP_DONE);
    assert_int_equal(p.resp.status, 429);
    assert_int_equal(p.resp.retry_after_s, 2);
    assert_true(p.resp.conn_close);
    assert_int_equal(p.resp.body_len, 0);
    /* an HTTP-date Retry-After is not delta-seconds: treated as absent */
    lt_http_parser_reset(&p, false);
    const char d[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\n"
                     "Content-Length: 2\r\n\r\n{}";
    assert_int_equal(lt_http_parser_feed(&p, d, strlen(d), &used), LT_HTTP_DONE);
    assert_int_equal(p.resp.retry_after_s, -1);
    assert_false(p.resp.degraded);
    /* a fallback answer says so; a reset forgets it */
    lt_http_parser_reset(&p, false);
    const char g[] = "HTTP/1.1 200 OK\r\nx-flashgate-degraded: 1\r\nContent-Length: 2\r\n\r\n{}";
    assert_int_equal(lt_http_parser_feed(&p, g, strlen(g), &used), LT_HTTP_DONE);
    assert_true(p.resp.degraded);
    lt_http_parser_reset(&p, false);
    assert_false(p.resp.degraded);
    const char g0[] = "HTTP/1.1 200 OK\r\nX-Flashgate-Degraded: 0\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(lt_http_parser_feed(&p, g0, strlen(g0), &used), LT_HTTP_DONE);
    assert_false(p.resp.degraded);
    /* 204 and HEAD have no body */
    lt_http_parser_reset(&p, true);
    const char h[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    assert_int_equal(lt_http_parser_feed(&p, h, strlen(h), &used), LT_HTTP_DONE);
    lt_http_parser_free(&p);
}

static void test_leaves_extra_bytes(void **state)
{
    (void)state;
    char two[512];
    snprintf(two, sizeof(two), "%s%s", ok202, ok202);
    lt_http_parser_t p;
    lt_http_parser_init(&p, false);
    size_t used;
    assert_int_equal(lt_http_parser_feed(&p, two, strlen(two), &used), LT_HTTP_DONE);
    assert_int_equal(used, strlen(ok202));
    lt_http_parser_free(&p);
}

static const char *const refused[] = {
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\n\r\n",                               /* no Content-Length */
    "HTTP/1.1 200 OK\nContent-Length: 0\n\n",                /* bare LF */
    "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",            /* not HTTP/1.x */
    "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",          /* bad code */
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n folded\r\n\r\n",
    "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nno-colon\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
};

static void test_refuses_what_the_gateway_never_sends(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        lt_http_parser_t p;
        lt_http_parser_init(&p, false);
        size_t used;
        int rc = lt_http_parser_feed(&p, refused[i], strlen(refused[i]), &used);
        if (rc != CM_EINVAL)
            fail_msg("case %zu accepted (rc %d)", i, rc);
        assert_non_null(p.error);
        lt_http_parser_free(&p);
    }
}

static void test_url_and_answer_types(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(lt_http_parse_url("http://127.0.0.1:8080", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(lt_http_parse_url("http://localhost/x", host, sizeof(host), &port), 0);
    assert_int_equal(port, 80);
    assert_int_equal(lt_http_parse_url("http://h:0", host, sizeof(host), &port), CM_EINVAL);
    assert_int_equal(lt_http_parse_url("https://h:1", host, sizeof(host), &port), CM_EINVAL);
    assert_int_equal(lt_ans_of_status(202), LT_ANS_A202);
    assert_int_equal(lt_ans_of_status(413), LT_ANS_A4XX);
    assert_int_equal(lt_ans_of_status(502), LT_ANS_A5XX);
    assert_int_equal(lt_ans_of_status(0), LT_ANS_ERROR);
    assert_string_equal(lt_ans_name(LT_ANS_TIMEOUT), "timeout");
    /* page views: a fallback 200 is not a served page */
    assert_int_equal(lt_page_of_status(200, false), LT_PAGE_OK);
    assert_int_equal(lt_page_of_status(200, true), LT_PAGE_DEGRADED);
    assert_int_equal(lt_page_of_status(503, true), LT_PAGE_P503);
    assert_int_equal(lt_page_of_status(404, false), LT_PAGE_P4XX);
    assert_int_equal(lt_page_of_status(502, false), LT_PAGE_P5XX);
    assert_int_equal(lt_page_of_status(0, false), LT_PAGE_ERROR);
    assert_string_equal(lt_page_name(LT_PAGE_DEGRADED), "degraded");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_response),
        cmocka_unit_test(test_byte_by_byte_and_reuse),
        cmocka_unit_test(test_retry_after_and_close),
        cmocka_unit_test(test_leaves_extra_bytes),
        cmocka_unit_test(test_refuses_what_the_gateway_never_sends),
        cmocka_unit_test(test_url_and_answer_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
