/* A request still waiting when its connection closes (review s11 finding 9):
 * its head's strings pointed into the connection's buffer, which goes back to
 * the free list; orphaning it leaves no pointer into that buffer. */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_orphan_forgets_the_buffer(void **state)
{
    (void)state;
    char buf[256] = "POST\0/v1/sales/s1/orders\0" "12\0application/json\0k1\0" "10.0.0.1\0t\0chunked";
    gw_req_t *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->conn = (struct gw_h1 *)buf;
    r->method = buf;
    r->url = buf + 5;
    r->hdr.content_length = buf + 25;
    r->hdr.content_type = buf + 28;
    r->hdr.idem_key = buf + 45;
    r->hdr.xff = buf + 48;
    r->hdr.admission = buf + 57;
    r->hdr.transfer_encoding = buf + 59;
    r->hdr.te_count = 1;
    r->hdr.req_start = buf + 57;
    r->hdr.xff_count = 1;
    r->state = GW_ST_WAIT;
    snprintf(r->id, sizeof(r->id), "s1");
    gw_http_req_orphan(r);
    assert_null(r->conn);
    assert_null(r->method);
    assert_null(r->url);
    assert_null(r->hdr.content_length);
    assert_null(r->hdr.content_type);
    assert_null(r->hdr.idem_key);
    assert_null(r->hdr.xff);
    assert_null(r->hdr.req_start);
    assert_null(r->hdr.admission);
    assert_null(r->hdr.transfer_encoding);
    assert_int_equal(r->hdr.te_count, 0);
    /* what the waiting buy still needs is its own */
    assert_int_equal(r->state, GW_ST_WAIT);
    assert_string_equal(r->id, "s1");
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orphan_forgets_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
