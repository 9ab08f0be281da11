/*
 * The proxied routes' pure parts: which route a path goes to (the longest
 * matching prefix, by whole segments, whatever the list order), the path as
 * sent that the parser keeps beside the decoded one, and the upstream URL
 * built from it (byte for byte; what libcurl would refuse or rewrite written
 * %XX). tests/integration/76-proxy-path.py checks the same through a real
 * gateway and a raw upstream.
 */
#include "common/cm_err.h"
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

/*---- gw_px_match ----*/

static size_t routes_of(const char *json, gw_proxy_route_t *out)
{
    char err[300] = "";
    size_t n = 0;
    if (gw_proxy_routes_parse(json, out, &n, err, sizeof(err)) != 0)
        fail_msg("routes refused: %s", err);
    return n;
}

#define R(prefix) "{\"prefix\":\"" prefix "\",\"upstream\":\"http://127.0.0.1:9\"}"

static void test_longest_prefix_wins_in_any_order(void **state)
{
    (void)state;
    static gw_proxy_route_t rt[GW_PROXY_ROUTES_MAX];
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
    static gw_proxy_route_t rt[GW_PROXY_ROUTES_MAX];
    char err[300] = "";
    size_t n = 0;
    assert_int_equal(gw_proxy_routes_parse("[" R("/x/") "," R("/y/") "," R("/x/") "]", rt, &n, err,
                                     sizeof(err)),
                     CM_EINVAL);
    if (!strstr(err, "route 2: prefix /x/ is route 0's already"))
        fail_msg("the error names neither route: %s", err);
    /* the same path with and without its trailing '/' are two prefixes */
    assert_int_equal(routes_of("[" R("/x") "," R("/x/") "]", rt), 2);
}

/* A route may not take or sit under a path the gateway answers itself, by
 * whole segments as routes match; a prefix that only shares letters is allowed. */
static void test_own_paths_are_reserved_by_segment(void **state)
{
    (void)state;
    static gw_proxy_route_t rt[GW_PROXY_ROUTES_MAX];
    const char *refused[] = {"/", "/v1", "/v1/", "/v1/sales", "/v1/sales/", "/v1/sales/x/y",
                             "/v1/orders", "/v1/orders/x", "/healthz", "/healthz/x", "/readyz",
                             "/admin", "/admin/", "/admin/v1/stats"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char json[256], err[300] = "";
        size_t n = 0;
        snprintf(json, sizeof(json), "[{\"prefix\":\"%s\",\"upstream\":\"http://127.0.0.1:9\"}]",
                 refused[i]);
        if (gw_proxy_routes_parse(json, rt, &n, err, sizeof(err)) != CM_EINVAL)
            fail_msg("prefix %s was taken", refused[i]);
        if (!strstr(err, "overlaps a route flashgate answers itself"))
            fail_msg("prefix %s: %s", refused[i], err);
    }
    /* letters in common, no segment: "/a" was refused as "/admin/" once */
    assert_int_equal(routes_of("[" R("/a") "," R("/adm") "," R("/v1/s") "," R("/v1/salesx/") ","
                               R("/healthzz") "," R("/readyz2") "," R("/v2/sales/") "]", rt),
                     7);
    assert_int_equal(gw_px_match(rt, 7, "/admin/v1/stats"), -1);
    assert_int_equal(gw_px_match(rt, 7, "/a/b"), 0);
}

/* A latency target is a whole number of ms up to the route's timeout (past it
 * the call is dropped before the target is reached); a bad one names itself
 * and leaves no route behind. */
static void test_latency_target(void **state)
{
    (void)state;
    static gw_proxy_route_t rt[GW_PROXY_ROUTES_MAX];
    assert_int_equal(routes_of("[" R("/x/") "]", rt), 1);
    assert_int_equal(rt[0].latency_target_ms, 0); /* none unless set */
    assert_int_equal(routes_of("[{\"prefix\":\"/x/\",\"upstream\":\"http://127.0.0.1:9\","
                               "\"timeout_ms\":300,\"latency_target_ms\":300}]",
                               rt),
                     1);
    assert_int_equal(rt[0].latency_target_ms, 300);
    assert_int_equal(routes_of("[{\"prefix\":\"/x/\",\"upstream\":\"http://127.0.0.1:9\","
                               "\"latency_target_ms\":20}]",
                               rt),
                     1);
    assert_int_equal(rt[0].latency_target_ms, 20);
    const char *bad[] = {"0", "-5", "1001", "20.5", "\"20\"", "null", "true"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[256], err[300] = "";
        size_t n = 9;
        snprintf(json, sizeof(json),
                 "[{\"prefix\":\"/x/\",\"upstream\":\"http://127.0.0.1:9\","
                 "\"latency_target_ms\":%s}]",
                 bad[i]);
        if (gw_proxy_routes_parse(json, rt, &n, err, sizeof(err)) != CM_EINVAL)
            fail_msg("latency_target_ms %s was taken", bad[i]);
        if (!strstr(err, "latency_target_ms must be an integer from 1 to the route's timeout_ms "
                         "(1000)"))
            fail_msg("latency_target_ms %s: %s", bad[i], err);
        assert_int_equal(n, 0);
    }
}

/* Every field a route takes (as the parser's own refusal of an unknown one
 * lists them) is in proxy.routes' help, which --help, the sample config
 * and README's table of options show: latency_target_ms was not. */
static void test_route_fields_in_help(void **state)
{
    (void)state;
    static gw_proxy_route_t rt[GW_PROXY_ROUTES_MAX];
    char err[300] = "";
    size_t n = 0;
    assert_int_equal(gw_proxy_routes_parse("[{\"prefix\":\"/x/\",\"nope\":1}]", rt, &n, err,
                                     sizeof(err)),
                     CM_EINVAL);
    const char *lp = strchr(err, '('), *rp = lp ? strchr(lp, ')') : NULL;
    assert_non_null(rp);
    const cm_opt_t *o = cm_conf_find(gw_config_opts, "proxy.routes");
    assert_non_null(o);
    unsigned fields = 0;
    for (const char *p = lp + 1; p < rp;) {
        size_t len = strcspn(p, ",)");
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "\"%.*s\"", (int)len, p);
        if (!strstr(o->help, quoted))
            fail_msg("proxy.routes help lacks %s", quoted);
        fields++;
        p += len;
        p += strspn(p, ", ");
    }
    assert_true(fields >= 6);
}

#undef R

/*---- the path as sent, beside the decoded one ----*/

typedef struct seen {
    char buf[GW_H1_READ_BUF];
    gw_h1_head_t h;
    int heads;
    char url[512], raw[512];
    bool has_raw;
} seen_t;

static bool on_head(gw_h1_head_t *h)
{
    seen_t *s = h->owner;
    s->heads++;
    snprintf(s->url, sizeof(s->url), "%s", h->url);
    s->has_raw = h->raw_path != NULL;
    snprintf(s->raw, sizeof(s->raw), "%s", h->raw_path ? h->raw_path : "");
    return false;
}

/* Parses one request head; returns how it stopped (HPE_PAUSED: at its end or refused). */
static llhttp_errno_t parse(seen_t *s, const char *req)
{
    memset(s, 0, sizeof(*s));
    gw_h1_head_init(&s->h, s->buf, s);
    s->h.on_head = on_head;
    size_t n = strlen(req);
    memcpy(s->buf, req, n);
    llhttp_errno_t e;
    gw_h1_head_execute(&s->h, 0, n, &e);
    /* freed once the head was handled: nothing else owns it */
    assert_null(s->h.raw_path);
    return e;
}

static void test_raw_path_kept_only_with_an_escape(void **state)
{
    (void)state;
    seen_t *s = malloc(sizeof(*s));
    assert_non_null(s);
    struct {
        const char *target, *url, *raw; /* raw NULL: none kept (the url is as sent) */
    } cases[] = {
        {"/v1/page/a%3Bb%2Cc%40d%20e", "/v1/page/a;b,c@d e", "/v1/page/a%3Bb%2Cc%40d%20e"},
        {"/v1/page/caf%C3%a9?q=%3B", "/v1/page/caf\xc3\xa9", "/v1/page/caf%C3%a9"},
        {"/v1/page/a+b;c", "/v1/page/a+b;c", NULL},
        {"/v1/page/%zz%", "/v1/page/%zz%", "/v1/page/%zz%"},
        /* absolute-form: the path after the authority, as sent */
        {"http://shop.example/v1/page/x%3By?z", "/v1/page/x;y", "/v1/page/x%3By"},
        {"HTTPS://h:8443/v1/page/%41#frag", "/v1/page/A", "/v1/page/%41"},
        {"/v1/page/plain", "/v1/page/plain", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[600];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", cases[i].target);
        assert_int_equal(parse(s, req), HPE_PAUSED);
        assert_int_equal(s->heads, 1);
        assert_string_equal(s->url, cases[i].url);
        if (!cases[i].raw) {
            if (s->has_raw)
                fail_msg("%s: a raw path kept (%s) for a path without an escape",
                         cases[i].target, s->raw);
        } else {
            assert_true(s->has_raw);
            assert_string_equal(s->raw, cases[i].raw);
        }
    }
    /* refused paths (an encoded slash, a dot segment, decoded or not): no
     * head handled, and nothing kept (parse checks it was freed) */
    const char *refused[] = {"/v1/page/a%2Fb", "/v1/page/%2e%2e/admin", "/v1/page/.%2E/x",
                             "/v1/page/a%5C..", "/v1/page/a%00", "/v1/page/%2e%2e%3bx/y"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char req[600];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", refused[i]);
        assert_int_equal(parse(s, req), HPE_PAUSED);
        assert_true(s->h.bad_path);
        if (s->heads)
            fail_msg("%s was handled", refused[i]);
    }
    free(s);
}

/*---- the upstream URL ----*/

static void url_is(const char *path, const char *query, const char *want)
{
    char *u = gw_px_url("http://10.0.0.5:8081/base", path, query);
    if (strcmp(u, want) != 0)
        fail_msg("%s ? %s: %s, want %s", path, query ? query : "(none)", u, want);
    free(u);
}

static void test_url_as_sent(void **state)
{
    (void)state;
    /* every byte the parser lets through stays as it is */
    url_is("/v1/page/a%3Bb%2Cc%40d%20e%C3%A9+;x", NULL,
           "http://10.0.0.5:8081/base/v1/page/a%3Bb%2Cc%40d%20e%C3%A9+;x");
    url_is("/v1/page/\"<>\\^`{|}[]'!$&()*,:=@~%zz%", "q=red+shoes&&x=%3B;y&=\"{}|^`?/",
           "http://10.0.0.5:8081/base/v1/page/\"<>\\^`{|}[]'!$&()*,:=@~%zz%"
           "?q=red+shoes&&x=%3B;y&=\"{}|^`?/");
    url_is("/v1/page/x", "", "http://10.0.0.5:8081/base/v1/page/x?");
    url_is("/v1/page/x", NULL, "http://10.0.0.5:8081/base/v1/page/x");
    /* what libcurl would refuse (a space, a control byte: a failed exchange)
     * or rewrite (8-bit bytes), and '#' / '?' that would end the path: %XX */
    url_is("/v1/page/a b\tc\x7f\xc3\xa9#?", "a b\x01#",
           "http://10.0.0.5:8081/base/v1/page/a%20b%09c%7F%C3%A9%23%3F?a%20b%01%23");
    /* a long path, past any chunk the copy may use */
    char path[3000], want[3100];
    memset(path, 'p', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    snprintf(want, sizeof(want), "http://10.0.0.5:8081/base%s", path);
    url_is(path, NULL, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_prefix_wins_in_any_order),
        cmocka_unit_test(test_a_prefix_is_listed_once),
        cmocka_unit_test(test_own_paths_are_reserved_by_segment),
        cmocka_unit_test(test_latency_target),
        cmocka_unit_test(test_route_fields_in_help),
        cmocka_unit_test(test_raw_path_kept_only_with_an_escape),
        cmocka_unit_test(test_url_as_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
