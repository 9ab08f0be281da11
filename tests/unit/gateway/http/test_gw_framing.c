/* The framing check of every request's body (gw_http_framing_refused), driven
 * with the head's fields as the parser leaves them: no socket, no server. */
#include "gateway/http/gw_http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static gw_req_t req;

static gw_req_t *fresh(void)
{
    memset(&req, 0, sizeof(req));
    return &req;
}

static void test_plain_bodies_pass(void **st)
{
    (void)st;
    gw_req_t *r = fresh();
    assert_false(gw_http_framing_refused(r)); /* no body */
    r->hdr.content_length = "12";
    assert_false(gw_http_framing_refused(r));
    r = fresh();
    r->hdr.transfer_encoding = "chunked";
    r->hdr.te_count = 1;
    assert_false(gw_http_framing_refused(r));
    r->hdr.transfer_encoding = "Chunked"; /* a coding's name is caseless */
    assert_false(gw_http_framing_refused(r));
}

static void test_cl_and_te_refused(void **st)
{
    (void)st;
    gw_req_t *r = fresh();
    r->hdr.content_length = "3";
    r->hdr.transfer_encoding = "chunked";
    r->hdr.te_count = 1;
    assert_true(gw_http_framing_refused(r));
    assert_int_equal(r->resp.status, 400);
    assert_non_null(strstr(r->resp.body, "Content-Length and Transfer-Encoding together"));
}

static void test_two_lengths_refused(void **st)
{
    (void)st;
    gw_req_t *r = fresh();
    r->hdr.content_length = "3";
    r->hdr.cl_conflict = true;
    assert_true(gw_http_framing_refused(r));
    assert_int_equal(r->resp.status, 400);
    assert_non_null(strstr(r->resp.body, "two Content-Length"));
}

static void test_other_codings_not_implemented(void **st)
{
    (void)st;
    gw_req_t *r = fresh();
    r->hdr.transfer_encoding = "gzip, chunked"; /* llhttp reads it as chunked */
    r->hdr.te_count = 1;
    assert_true(gw_http_framing_refused(r));
    assert_int_equal(r->resp.status, 501);
    assert_non_null(strstr(r->resp.body, "gzip, chunked"));
    r = fresh();
    r->hdr.transfer_encoding = "chunked";
    r->hdr.te_count = 2; /* a second field: which one frames? */
    assert_true(gw_http_framing_refused(r));
    assert_int_equal(r->resp.status, 501);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_bodies_pass),
        cmocka_unit_test(test_cl_and_te_refused),
        cmocka_unit_test(test_two_lengths_refused),
        cmocka_unit_test(test_other_codings_not_implemented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
