/*
 * The proxied routes' pure parts: which route a path goes to (the longest
 * matching prefix, by whole segments, whatever the list order).
 */
#include "common/cm_err.h"
#include "gateway/gw_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/*---- gw_px_match ----*/

static size_t routes_of(const char *json, gw_route_def_t *out)
{
    char err[300] = "";
    size_t n = 0;
    if (gw_routes_parse(json, out, &n, err, sizeof(err)) != 0)
        fail_msg("routes refused: %s", err);
    return n;
}

#define R(prefix) "{\"prefix\":\"" prefix "\",\"upstream\":\"http://127.0.0.1:9\"}"

static void test_longest_prefix_wins_in_any_order(void **state)
{
    (void)state;
    static gw_route_def_t rt[GW_ROUTES_MAX];
    const char *orders[] = {"[" R("/v1/page/") "," R("/v1/page/item/") "," R("/v1/page/item") "]",
                            "[" R("/v1/page/item") "," R("/v1/page/item/") "," R("/v1/page/") "]",
                            "[" R("/v1/page/item/") "," R("/v1/page/") "," R("/v1/page/item") "]"};
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        size_t n = routes_of(orders[o], rt);
        assert_int_equal(n, 3);
        struct {
            const char *path, *want; /* the prefix of the route it goes to, NULL: none */
        } cases[] = {
            {"/v1/page/item/7", "/v1/page/item/"},
            {"/v1/page/item/", "/v1/page/item/"},
            {"/v1/page/item", "/v1/page/item"}, /* "/v1/page/item/" does not take it */
            {"/v1/page/items", "/v1/page/"},     /* segments: not "/v1/page/item" */
            {"/v1/page/7", "/v1/page/"},
            {"/v1/page/", "/v1/page/"},
            {"/v1/page", NULL}, /* "/v1/page/" takes only what is under it */
            {"/v1/pages/x", NULL},
            {"/other", NULL},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            int got = gw_px_match(rt, n, cases[i].path);
            const char *gp = got < 0 ? NULL : rt[got].prefix;
            if ((gp == NULL) != (cases[i].want == NULL) ||
                (gp && strcmp(gp, cases[i].want) != 0))
                fail_msg("order %zu: %s went to %s, want %s", o, cases[i].path,
                         gp ? gp : "(none)", cases[i].want ? cases[i].want : "(none)");
        }
    }
    assert_int_equal(gw_px_match(rt, 0, "/v1/page/x"), -1);
}

static void test_a_prefix_is_listed_once(void **state)
{
    (void)state;
    static gw_route_def_t rt[GW_ROUTES_MAX];
    char err[300] = "";
    size_t n = 0;
    assert_int_equal(gw_routes_parse("[" R("/x/") "," R("/y/") "," R("/x/") "]", rt, &n, err,
                                     sizeof(err)),
                     CM_EINVAL);
    if (!strstr(err, "route 2: prefix /x/ is route 0's already"))
        fail_msg("the error names neither route: %s", err);
    /* the same path with and without its trailing '/' are two prefixes */
    assert_int_equal(routes_of("[" R("/x") "," R("/x/") "]", rt), 2);
}

#undef R

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_prefix_wins_in_any_order),
        cmocka_unit_test(test_a_prefix_is_listed_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
