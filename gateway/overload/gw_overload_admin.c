/*
 * The overload control's admin routes: the degradation level (read, pin,
 * release), the proxied routes' latency targets, and the user-priority cut
 * of fault injection.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/overload/gw_ol.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void h_debug_overload(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"user_cut", NULL};
    if (!j || !gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    json_t *c = json_object_get(j, "user_cut");
    if (!json_is_integer(c) || json_integer_value(c) < -1 ||
        json_integer_value(c) > GW_UPRIO_LEVELS) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"user_cut\": -1 (DAGOR decides) or 0..%d (buys of a user "
                      "priority below it pass)}",
                      GW_UPRIO_LEVELS);
    } else {
        gw_ol_debug_user_cut(a->srv, (int)json_integer_value(c));
        char buf[48];
        snprintf(buf, sizeof(buf), "{\"user_cut\":%d}", gw_ol_debug_user_cut_get(a->srv));
        gw_admin_resp_json(p, GW_R_OK, buf);
        gw_admin_audit(a, "debug.overload", "user_cut", NULL,
                        json_pack("{s:i}", "user_cut", gw_ol_debug_user_cut_get(a->srv)));
    }
    json_decref(j);
}

/*---- degradation level ----*/

static void degrade_json(gw_server_t *srv, gw_resp_t *p)
{
    gw_ol_snapshot_t *s = cm_xmalloc(sizeof(*s));
    gw_overload_snapshot(srv, s);
    gw_resp_init(p, GW_R_OK);
    size_t n = (size_t)snprintf(p->body, sizeof(p->body),
                                "{\"level\":%d,\"level_name\":\"%s\",\"mode\":\"%s\","
                                "\"reason\":\"",
                                s->level, gw_level_name((gw_level_t)s->level),
                                s->pinned ? "pinned" : "auto");
    gw_json_escape(p->body, sizeof(p->body) - 8, &n, s->reason);
    n += (size_t)snprintf(p->body + n, sizeof(p->body) - n, "\"}");
    p->body_len = n;
    free(s);
}

static void h_degrade_get(gw_admin_call_t *a)
{
    degrade_json(a->srv, a->p);
}

/* PUT /admin/v1/degrade {"level":"auto"|0|1|2|3}: bad input changes nothing. */
static void h_degrade_put(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"level", NULL};
    if (!gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    json_t *v = json_object_get(j, "level");
    int level;
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        level = -1;
    } else if (json_is_integer(v) && json_integer_value(v) >= 0 &&
               json_integer_value(v) < GW_LEVEL_COUNT) {
        level = (int)json_integer_value(v);
    } else {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "level must be \"auto\" or an integer from 0 to 3");
        json_decref(j);
        return;
    }
    json_decref(j);
    int before = (int)gw_ol_level(a->srv);
    gw_ol_pin(a->srv, level);
    degrade_json(a->srv, p);
    gw_admin_audit(a, "degrade.set", "level", json_pack("{s:i}", "level", before),
                    level < 0 ? json_pack("{s:s}", "level", "auto")
                              : json_pack("{s:i}", "level", level));
}

/*---- proxied routes: their latency targets, live ----*/

static json_t *route_obj(gw_server_t *srv, size_t i)
{
    size_t n = 0;
    const gw_proxy_route_t *r = gw_ol_upstreams(srv, &n) + i;
    uint32_t t = gw_ol_upstream_target_ms(srv, i);
    return json_pack("{s:s,s:s,s:i,s:s,s:o,s:o}", "prefix", r->prefix, "upstream", r->upstream,
                     "timeout_ms", (int)r->timeout_ms, "criticality",
                     gw_crit_name((gw_crit_t)r->crit), "latency_target_ms",
                     t ? json_integer(t) : json_null(), "latency_target_ms_configured",
                     r->latency_target_ms ? json_integer(r->latency_target_ms) : json_null());
}

static void h_routes_get(gw_admin_call_t *a)
{
    size_t n = 0;
    gw_ol_upstreams(a->srv, &n);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, route_obj(a->srv, i));
    json_t *o = json_pack("{s:o}", "routes", list);
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/*
 * PATCH /admin/v1/routes {"prefix":"/v1/recs/","latency_target_ms":20|null}:
 * a route's latency target, in force at each worker's next tick, until a
 * restart (the configured one comes back). This gateway only, as the
 * degradation pin. Bad input changes nothing.
 */
static void h_routes_patch(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    if (!j)
        return;
    static const char *const keys[] = {"prefix", "latency_target_ms", NULL};
    if (!gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    const char *prefix = json_string_value(json_object_get(j, "prefix"));
    json_t *t = json_object_get(j, "latency_target_ms");
    size_t n = 0, at = 0;
    const gw_proxy_route_t *routes = gw_ol_upstreams(a->srv, &n);
    while (prefix && at < n && strcmp(routes[at].prefix, prefix) != 0)
        at++;
    if (!prefix) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "prefix must be the prefix of a proxied route");
    } else if (at == n) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no proxied route has the prefix %.128s", prefix);
    } else if (!t || !(json_is_null(t) || (json_is_integer(t) && json_integer_value(t) >= 1 &&
                                           json_integer_value(t) <= routes[at].timeout_ms))) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "latency_target_ms must be null (none) or an integer from 1 to the "
                      "route's timeout_ms (%u)",
                      (unsigned)routes[at].timeout_ms);
    } else {
        uint32_t want = json_is_null(t) ? 0 : (uint32_t)json_integer_value(t);
        uint32_t before = gw_ol_upstream_set_target(a->srv, at, want);
        json_t *o = route_obj(a->srv, at);
        gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
        json_decref(o);
        gw_admin_audit(a, "route.target", prefix,
                        json_pack("{s:o}", "latency_target_ms",
                                  before ? json_integer(before) : json_null()),
                        json_pack("{s:o}", "latency_target_ms",
                                  want ? json_integer(want) : json_null()));
        cm_log_info("admin", "route latency target changed", "prefix=%s before_ms=%u ms=%u",
                    prefix, (unsigned)before, (unsigned)want);
    }
    json_decref(j);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/v1/degrade", READ, h_degrade_get),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/degrade", WRITE, h_degrade_put),
    GW_ADMIN_ROUTE("GET", "/admin/v1/routes", READ, h_routes_get),
    GW_ADMIN_ROUTE("PATCH", "/admin/v1/routes", WRITE, h_routes_patch),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/overload", WRITE, h_debug_overload),
};

const gw_admin_route_t *gw_ol_admin_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
