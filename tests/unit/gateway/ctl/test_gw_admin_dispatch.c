/* The admin API's dispatch without a socket: route, method and the presented
 * token's role against the answer given before any route runs
 * (gw__admin_match, gw__admin_verdict: the decisions admin_cb takes). */
#include "gateway/base/gw_base.h"
#include "gateway/ctl/gw_ctl.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
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

/* Every admin route with the role it needs: the table the owners' tables
 * assemble into (gw__admin_routes), in no particular order. */
typedef struct {
    const char *method, *path;
    gw_role_t role;
} want_route_t;

static const want_route_t want_routes[] = {
    {"GET", "/admin/", GW_ROLE_NONE},
    {"GET", "/healthz", GW_ROLE_NONE},
    {"GET", "/readyz", GW_ROLE_NONE},
    {"GET", "/admin/assets/{file}", GW_ROLE_NONE},
    {"GET", "/metrics", GW_ROLE_READ},
    {"GET", "/admin/v1/whoami", GW_ROLE_READ},
    {"GET", "/admin/v1/sales", GW_ROLE_READ},
    {"GET", "/admin/v1/sales/{sale_id}", GW_ROLE_READ},
    {"PUT", "/admin/v1/sales/{sale_id}", GW_ROLE_WRITE},
    {"DELETE", "/admin/v1/sales/{sale_id}", GW_ROLE_WRITE},
    {"POST", "/admin/v1/sales/{sale_id}/restock", GW_ROLE_WRITE},
    {"GET", "/admin/v1/sales/{sale_id}/draw", GW_ROLE_READ},
    {"GET", "/admin/v1/sales/{sale_id}/registrations", GW_ROLE_READ},
    {"GET", "/admin/v1/sales/{sale_id}/room/persons", GW_ROLE_READ},
    {"GET", "/admin/v1/limits", GW_ROLE_READ},
    {"PATCH", "/admin/v1/limits", GW_ROLE_WRITE},
    {"GET", "/admin/v1/rules", GW_ROLE_READ},
    {"PUT", "/admin/v1/rules/{sale_id}", GW_ROLE_WRITE},
    {"DELETE", "/admin/v1/rules/{sale_id}", GW_ROLE_WRITE},
    {"GET", "/admin/v1/stats", GW_ROLE_READ},
    {"GET", "/admin/v1/history", GW_ROLE_READ},
    {"GET", "/admin/v1/fleet", GW_ROLE_READ},
    {"GET", "/admin/v1/degrade", GW_ROLE_READ},
    {"PUT", "/admin/v1/degrade", GW_ROLE_WRITE},
    {"GET", "/admin/v1/routes", GW_ROLE_READ},
    {"PATCH", "/admin/v1/routes", GW_ROLE_WRITE},
    {"GET", "/admin/v1/config", GW_ROLE_READ},
    {"POST", "/admin/v1/config/rollback", GW_ROLE_WRITE},
    {"GET", "/admin/v1/audit", GW_ROLE_READ},
    {"PUT", "/admin/v1/debug/broker", GW_ROLE_WRITE},
    {"PUT", "/admin/v1/debug/clock", GW_ROLE_WRITE},
    {"PUT", "/admin/v1/debug/overload", GW_ROLE_WRITE},
    {"PUT", "/admin/v1/debug/stall", GW_ROLE_WRITE},
    {"POST", "/admin/v1/orders/{order_id}/cancel", GW_ROLE_WRITE},
};

static const char *const methods[] = {"GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"};

/* The path of a route with each {parameter} segment filled in. */
static void fill(const char *path, char *url, size_t cap)
{
    size_t n = 0;
    for (const char *p = path; *p && n + 3 < cap;) {
        if (*p == '{') {
            memcpy(url + n, "x1", 2);
            n += 2;
            p = strchr(p, '}') + 1;
        } else {
            url[n++] = *p++;
        }
    }
    url[n] = '\0';
}

static bool is_debug(const char *path)
{
    return strncmp(path, "/admin/v1/debug/", 16) == 0;
}

/* The assembled table holds exactly the routes above, each (method, path) once. */
static void test_route_table(void **state)
{
    (void)state;
    const gw_admin_route_t *r;
    size_t n = gw__admin_routes(&r);
    assert_int_equal(n, sizeof(want_routes) / sizeof(want_routes[0]));
    for (size_t i = 0; i < n; i++) {
        assert_non_null(r[i].fn);
        size_t found = 0;
        for (size_t j = 0; j < n; j++)
            if (strcmp(r[i].method, want_routes[j].method) == 0 &&
                strcmp(r[i].path, want_routes[j].path) == 0) {
                found++;
                if (r[i].role != want_routes[j].role)
                    fail_msg("%s %s: role %d, want %d", r[i].method, r[i].path, (int)r[i].role,
                             (int)want_routes[j].role);
            }
        if (found != 1)
            fail_msg("%s %s: %zu routes of the wanted table", r[i].method, r[i].path, found);
    }
}

/* Every route's path × every method × every token role × debug routes on and
 * off: the answer before the route runs, and the Allow of a 405. */
static void test_every_route_method_role(void **state)
{
    (void)state;
    const size_t nw = sizeof(want_routes) / sizeof(want_routes[0]);
    for (size_t i = 0; i < nw; i++) {
        char url[200];
        fill(want_routes[i].path, url, sizeof(url));
        for (int debug = 0; debug < 2; debug++) {
            bool visible = debug || !is_debug(want_routes[i].path);
            char allow[96] = "";
            bool open_path = false;
            for (size_t j = 0; j < nw && visible; j++)
                if (strcmp(want_routes[j].path, want_routes[i].path) == 0) {
                    size_t k = strlen(allow);
                    snprintf(allow + k, sizeof(allow) - k, "%s%s", k ? ", " : "",
                             want_routes[j].method);
                    open_path |= want_routes[j].role == GW_ROLE_NONE;
                }
            for (size_t mi = 0; mi < sizeof(methods) / sizeof(methods[0]); mi++) {
                const want_route_t *hit = NULL;
                for (size_t j = 0; j < nw && visible; j++)
                    if (strcmp(want_routes[j].path, want_routes[i].path) == 0 &&
                        strcmp(want_routes[j].method, methods[mi]) == 0)
                        hit = &want_routes[j];
                for (gw_role_t tok = GW_ROLE_NONE; tok <= GW_ROLE_WRITE; tok++) {
                    int want;
                    bool needs = hit ? hit->role != GW_ROLE_NONE : !visible || !open_path;
                    if (needs && tok == GW_ROLE_NONE)
                        want = 401;
                    else if (!visible)
                        want = 404;
                    else if (!hit)
                        want = 405;
                    else if (hit->role == GW_ROLE_WRITE && tok != GW_ROLE_WRITE)
                        want = 403;
                    else
                        want = 200;
                    gw_admin_match_t m;
                    gw__admin_match(methods[mi], url, debug, &m);
                    int got = gw_reply_status(gw__admin_verdict(&m, tok));
                    if (got != want)
                        fail_msg("%s %s (debug %d, role %d): %d, want %d", methods[mi], url,
                                 debug, (int)tok, got, want);
                    if (visible)
                        assert_string_equal(m.allow, allow);
                    if (hit && strchr(want_routes[i].path, '{'))
                        assert_string_equal(m.arg, "x1");
                }
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_table),
        cmocka_unit_test(test_match_details),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_every_route_method_role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
