/*
 * Fuzz target: the public router (gw_route) and its path parameters.
 * Input: "METHOD\nURL" (URL as gw_h1.c hands it over: the path
 * without its query, percent-decoded, any bytes but NUL).
 * Promises: a routed request carries a valid id for the routes that take one;
 * a refused one is a 4xx whose body is a JSON object {"error","message"}.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <string.h>

static void check_error_body(const gw_resp_t *resp)
{
    FZ_CHECK(resp->body_len < sizeof(resp->body));
    json_error_t e;
    json_t *j = json_loadb(resp->body, resp->body_len, 0, &e);
    if (!j)
        fprintf(stderr, "not JSON (%s): %.*s\n", e.text, (int)resp->body_len, resp->body);
    FZ_CHECK(j && json_is_object(j));
    FZ_CHECK(json_is_string(json_object_get(j, "error")));
    FZ_CHECK(json_is_string(json_object_get(j, "message")));
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char *nl = strchr(s, '\n');
    const char *method = "GET";
    const char *url = s;
    if (nl) {
        *nl = '\0';
        method = s;
        url = nl + 1;
    }
    gw_req_t *r = calloc(1, sizeof(*r));
    r->method = method;
    r->verb = gw_verb_of(method);
    if (!gw_route(r, url)) {
        /* no built-in route: nothing built yet, the caller tries proxied routes */
        FZ_CHECK(r->route == GW_ROUTE_NONE && r->state != GW_ST_DONE && r->resp.status == 0);
        gw_route_not_found(r, url);
        FZ_CHECK(r->resp.status == 404);
    }
    if (r->state == GW_ST_DONE) {
        FZ_CHECK(r->resp.status >= 400 && r->resp.status < 500);
        check_error_body(&r->resp);
    } else {
        FZ_CHECK(r->route != GW_ROUTE_NONE);
        if (r->route == GW_ROUTE_BUY || r->route == GW_ROUTE_SALE || r->route == GW_ROUTE_ORDER)
            FZ_CHECK(inv_id_valid(r->id, strlen(r->id), INV_SALE_ID_MAX));
    }
    free(r);
    free(s);
    return 0;
}
