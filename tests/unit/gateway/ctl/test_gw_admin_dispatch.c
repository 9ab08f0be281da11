/* The admin API's dispatch without a socket: route, method and the presented
 * token's role against the answer given before any route runs
 * (gw__admin_match, gw__admin_verdict: the decisions admin_cb takes). */
#include "gateway/base/gw_base.h"
#include "gateway/ctl/gw_ctl.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

typedef struct {
    const char *method, *url;
    bool debug;       /* started with --enable-debug-routes */
    gw_role_t token;  /* the presented token's role, GW_ROLE_NONE: none or wrong */
    int status;       /* the answer before the route (200: the route runs) */
} row_t;

static const row_t rows[] = {
    /* open routes: no token needed */
    {"GET", "/healthz", false, GW_ROLE_NONE, 200},
    {"GET", "/readyz", false, GW_ROLE_NONE, 200},
    {"GET", "/admin/", false, GW_ROLE_NONE, 200},
    {"GET", "/admin/assets/app.js", false, GW_ROLE_NONE, 200},
    /* another method on an open path: 405 without a token */
    {"POST", "/healthz", false, GW_ROLE_NONE, 405},
    /* read routes */
    {"GET", "/metrics", false, GW_ROLE_NONE, 401},
    {"GET", "/metrics", false, GW_ROLE_READ, 200},
    {"GET", "/admin/v1/sales/s1", false, GW_ROLE_NONE, 401},
    {"GET", "/admin/v1/sales/s1", false, GW_ROLE_READ, 200},
    {"GET", "/admin/v1/sales/s1", false, GW_ROLE_WRITE, 200},
    /* write routes: a read token is refused with 403, none with 401 */
    {"PUT", "/admin/v1/sales/s1", false, GW_ROLE_NONE, 401},
    {"PUT", "/admin/v1/sales/s1", false, GW_ROLE_READ, 403},
    {"PUT", "/admin/v1/sales/s1", false, GW_ROLE_WRITE, 200},
    {"PATCH", "/admin/v1/limits", false, GW_ROLE_READ, 403},
    {"PATCH", "/admin/v1/limits", false, GW_ROLE_WRITE, 200},
    {"POST", "/admin/v1/orders/o1/cancel", false, GW_ROLE_WRITE, 200},
    /* a known path with another method: 405 once authenticated, 401 before */
    {"POST", "/admin/v1/limits", false, GW_ROLE_NONE, 401},
    {"POST", "/admin/v1/limits", false, GW_ROLE_READ, 405},
    {"DELETE", "/admin/v1/sales", false, GW_ROLE_WRITE, 405},
    /* unknown paths: 401 without a token (nothing told about the tree), then 404 */
    {"GET", "/admin/v1/nope", false, GW_ROLE_NONE, 401},
    {"GET", "/admin/v1/nope", false, GW_ROLE_READ, 404},
    {"GET", "/admin/v1/sales/", false, GW_ROLE_READ, 404}, /* an empty {sale_id} */
    {"GET", "/admin/v1/sales/s1/extra", false, GW_ROLE_READ, 404},
    /* the debug routes exist only with --enable-debug-routes */
    {"PUT", "/admin/v1/debug/clock", false, GW_ROLE_WRITE, 404},
    {"PUT", "/admin/v1/debug/clock", true, GW_ROLE_WRITE, 200},
    {"PUT", "/admin/v1/debug/clock", true, GW_ROLE_READ, 403},
};

static void test_decision_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const row_t *t = &rows[i];
        gw_admin_match_t m;
        gw__admin_match(t->method, t->url, t->debug, &m);
        int got = gw_reply_status(gw__admin_verdict(&m, t->token));
        if (got != t->status)
            fail_msg("%s %s (debug %d, role %d): %d, want %d", t->method, t->url, t->debug,
                     (int)t->token, got, t->status);
    }
}

static void test_match_details(void **state)
{
    (void)state;
    gw_admin_match_t m;
    /* the path's parameter, and the route's role */
    gw__admin_match("POST", "/admin/v1/sales/flash-1/restock", false, &m);
    assert_true(m.route >= 0);
    assert_int_equal(m.role, GW_ROLE_WRITE);
    assert_string_equal(m.arg, "flash-1");
    assert_true(m.needs_token);
    /* every method of the path, for the Allow header of a 405 */
    gw__admin_match("POST", "/admin/v1/sales/s1", false, &m);
    assert_int_equal(m.route, -1);
    assert_true(m.any);
    assert_string_equal(m.allow, "GET, PUT, DELETE");
    /* an open path: no token even for its other methods */
    gw__admin_match("DELETE", "/readyz", false, &m);
    assert_false(m.needs_token);
    assert_string_equal(m.allow, "GET");
    /* a parameter too long for any id does not match */
    char url[400] = "/admin/v1/sales/";
    memset(url + strlen(url), 'a', 200);
    gw__admin_match("GET", url, false, &m);
    assert_false(m.any);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_table),
        cmocka_unit_test(test_match_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
