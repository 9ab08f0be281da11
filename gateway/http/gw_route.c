/*
 * Routing of the public listener: path and method -> route and path id, or
 * the 4xx answer. Pure (no socket, no connection), so the fuzz target drives
 * it directly.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <stdio.h>
#include <string.h>

static bool take_id(const char *s, size_t len, char *out)
{
    if (!inv_id_valid(s, len, INV_SALE_ID_MAX))
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}


gw_verb_t gw_verb_of(const char *method)
{
    return strcmp(method, "GET") == 0    ? GW_VERB_GET
           : strcmp(method, "HEAD") == 0 ? GW_VERB_HEAD
           : strcmp(method, "POST") == 0 ? GW_VERB_POST
                                         : GW_VERB_OTHER;
}

/* What OPTIONS * answers: the methods of the gateway's own routes. */
#define SERVER_METHODS "GET, HEAD, POST"

/* The path is (at least) n bytes long and starts with lit. */
#define STARTS(path, n, lit) ((n) >= sizeof(lit) - 1 && memcmp(path, lit, sizeof(lit) - 1) == 0)
/* The n-byte path is lit. */
#define IS(path, n, lit) ((n) == sizeof(lit) - 1 && memcmp(path, lit, sizeof(lit) - 1) == 0)

/* Matches the paths of GW_PUBLIC_ROUTES (by hand, for speed: the path's
 * length once, then compares of known length, which GCC inlines; strncmp,
 * strchr and strcmp calls were ~85 of a buy's ~165 routing instructions,
 * `python3 bench/profile.py build sold calls`) and takes the allowed methods from the table. */
bool gw_route(gw_req_t *r, const char *url)
{
    bool get = r->verb == GW_VERB_GET || r->verb == GW_VERB_HEAD;
    bool post = r->verb == GW_VERB_POST;
    const char *allow = NULL;
    size_t n = strlen(url);
    if (STARTS(url, n, "/v1/sales/")) {
        const char *id = url + 10;
        const char *slash = memchr(id, '/', n - 10);
        size_t idlen = slash ? (size_t)(slash - id) : n - 10, tail = n - 10 - idlen;
        if (slash && IS(slash, tail, "/orders")) {
            if (!take_id(id, idlen, r->id))
                goto bad_sale;
            r->route = GW_ROUTE_BUY;
            if (!post)
                allow = gw_route_methods(r->route);
        } else if (slash && IS(slash, tail, "/queue")) {
            if (!take_id(id, idlen, r->id))
                goto bad_sale;
            r->route = GW_ROUTE_QUEUE;
            if (!get)
                allow = gw_route_methods(r->route);
        } else if (slash && IS(slash, tail, "/registrations")) {
            if (!take_id(id, idlen, r->id))
                goto bad_sale;
            r->route = GW_ROUTE_REGISTER;
            if (!post)
                allow = gw_route_methods(r->route);
        } else if (!slash) {
            if (!take_id(id, idlen, r->id))
                goto bad_sale;
            r->route = GW_ROUTE_SALE;
            if (!get)
                allow = gw_route_methods(r->route);
        } else {
            goto not_found;
        }
    } else if (STARTS(url, n, "/v1/orders/") && !memchr(url + 11, '/', n - 11)) {
        if (!take_id(url + 11, n - 11, r->id))
            goto not_found;
        r->route = GW_ROUTE_ORDER;
        if (!get)
            allow = gw_route_methods(r->route);
    } else if (IS(url, n, "/healthz")) {
        r->route = GW_ROUTE_HEALTH;
        if (!get)
            allow = gw_route_methods(r->route);
    } else if (IS(url, n, "/readyz")) {
        r->route = GW_ROUTE_READY;
        if (!get)
            allow = gw_route_methods(r->route);
    } else if (IS(url, n, "*")) {
        /* The asterisk form asks about the server as a whole, and only OPTIONS
         * may use it (RFC 9112 3.2.4, RFC 9110 9.3.7): the methods of the
         * gateway's own routes (a proxied prefix's are its upstream's). Last,
         * so the buy path's routing pays nothing for it. */
        r->route = GW_ROUTE_NONE;
        if (strcmp(r->method, "OPTIONS") == 0) {
            gw_resp_init(&r->resp, GW_R_OK);
            r->resp.body_len = (size_t)snprintf(r->resp.body, sizeof(r->resp.body),
                                                "{\"allow\":\"" SERVER_METHODS "\"}");
            gw_resp_header(&r->resp, "Allow", "%s", SERVER_METHODS);
        } else {
            gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                          "the request target * is only for OPTIONS");
        }
        r->state = GW_ST_DONE;
        return true;
    } else {
        goto not_found;
    }
    if (allow) {
        gw_resp_error(&r->resp, GW_R_METHOD, NULL, "method %s is not allowed here; use %s", r->method,
                      allow);
        gw_resp_header(&r->resp, "Allow", "%s", allow);
        r->state = GW_ST_DONE;
    }
    return true;
bad_sale:
    gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                  "sale_id in the path must be 1..64 characters of A-Z a-z 0-9 . _ -");
    r->state = GW_ST_DONE;
    return true;
not_found:
    r->route = GW_ROUTE_NONE;
    return false;
}

void gw_route_not_found(gw_req_t *r, const char *url)
{
    gw_resp_error(&r->resp, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
    r->route = GW_ROUTE_NONE;
    r->state = GW_ST_DONE;
}

