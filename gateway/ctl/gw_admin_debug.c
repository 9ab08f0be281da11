/*
 * Fault injection (the embedded broker, the wall clock, a stuck worker loop), only on a gateway
 * started with --enable-debug-routes.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/http/gw_http.h"
#include "queue/oq_order.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- debug ----*/

static void h_broker(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"down", "rtt_ms", NULL};
    if (j && !gw_admin_only_keys(j, keys, p)) { /* unknown fields: 400 naming them, as every route */
        json_decref(j);
        return;
    }
    json_t *d = j ? json_object_get(j, "down") : NULL;
    json_t *rtt = j ? json_object_get(j, "rtt_ms") : NULL;
    if (j && rtt && d) {
        /* one or the other: with both, rtt_ms was dropped and the answer said nothing */
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"down\": true|false} or {\"rtt_ms\": 0..60000}, not both");
    } else if (j && rtt) {
        /* A slow broker: every request answered rtt_ms late. */
        json_int_t ms = json_is_integer(rtt) ? json_integer_value(rtt) : -1;
        int rc = ms < 0 || ms > 60000 ? CM_EINVAL : gw_kafka_broker_set_rtt(a->srv, (int)ms);
        if (rc == CM_EINVAL) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "rtt_ms must be an integer of 0..60000");
        } else if (rc == CM_ENOTFOUND) {
            gw_resp_error(p, GW_R_CONFLICT, NULL, "no embedded broker in this process");
        } else if (rc) {
            gw_resp_error(p, GW_R_INTERNAL, NULL, "%s", cm_strerror(rc));
        } else {
            char buf[64];
            snprintf(buf, sizeof(buf), "{\"broker\":\"up\",\"rtt_ms\":%lld}", (long long)ms);
            gw_admin_resp_json(p, GW_R_OK, buf);
            gw_admin_audit(a, "debug.broker", "embedded", NULL,
                            json_pack("{s:I}", "rtt_ms", (json_int_t)ms));
        }
    } else if (j && !json_is_boolean(d)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"down\": true|false} or {\"rtt_ms\": 0..60000}");
    } else if (j) {
        int rc = gw_kafka_broker_set_down(a->srv, json_is_true(d));
        if (rc == CM_ENOTFOUND) {
            gw_resp_error(p, GW_R_CONFLICT, NULL, "no embedded broker in this process");
        } else if (rc) {
            gw_resp_error(p, GW_R_INTERNAL, NULL, "%s", cm_strerror(rc));
        } else {
            gw_admin_resp_json(p, GW_R_OK, json_is_true(d) ? "{\"broker\":\"down\"}" : "{\"broker\":\"up\"}");
            gw_admin_audit(a, "debug.broker", "embedded", NULL,
                            json_pack("{s:b}", "down", json_is_true(d)));
        }
    }
    json_decref(j);
}

/* Fault injection: steps this process's wall clock (tests; see cm_time.h). */
static void h_clock(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"wall_offset_ms", NULL};
    if (j && !gw_admin_only_keys(j, keys, p)) { /* unknown fields: 400 naming them, as every route */
        json_decref(j);
        return;
    }
    json_t *d = j ? json_object_get(j, "wall_offset_ms") : NULL;
    /* A century either way: far enough for any test, and cm_wall_ms cannot overflow. */
    const json_int_t lim = 100ll * 366 * 24 * 3600 * 1000;
    if (j && (!json_is_integer(d) || json_integer_value(d) > lim || json_integer_value(d) < -lim)) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"wall_offset_ms\": <integer within +-100 years>}");
    } else if (j) {
        cm_time_set_wall_offset((int64_t)json_integer_value(d));
        char buf[96];
        snprintf(buf, sizeof(buf), "{\"wall_offset_ms\":%lld}",
                 (long long)cm_time_wall_offset());
        gw_admin_resp_json(p, GW_R_OK, buf);
        gw_admin_audit(a, "debug.clock", "wall", NULL,
                        json_pack("{s:I}", "wall_offset_ms", (json_int_t)cm_time_wall_offset()));
    }
    json_decref(j);
}

/* PUT /admin/v1/debug/overload {"user_cut": -1..128}: pins the buy path's user cut (gw_ol.h). */
/* PUT /admin/v1/debug/stall {"worker": N, "ms": M}: worker N's loop sleeps M
 * ms (1..600000), as a handler stuck in a blocking call (gw_liveness.c). */
static void h_debug_stall(gw_admin_call_t *a)
{
    gw_resp_t *p = a->p;
    json_t *j = gw_admin_parse_object(a, p);
    static const char *const keys[] = {"worker", "ms", NULL};
    if (!j || !gw_admin_only_keys(j, keys, p)) {
        json_decref(j);
        return;
    }
    json_t *wk = json_object_get(j, "worker"), *ms = json_object_get(j, "ms");
    int rc = CM_EINVAL;
    if (json_is_integer(wk) && json_is_integer(ms) && json_integer_value(wk) >= 0 &&
        json_integer_value(wk) <= UINT32_MAX && json_integer_value(ms) >= 1 &&
        json_integer_value(ms) <= 600000)
        rc = gw_worker_debug_stall(a->srv, (unsigned)json_integer_value(wk),
                                   (uint64_t)json_integer_value(ms));
    if (rc == CM_EAGAIN) {
        gw_resp_error(p, GW_R_CONFLICT, NULL, "the workers are not serving");
    } else if (rc) {
        gw_resp_error(p, GW_R_BAD_REQUEST, NULL,
                      "body must be {\"worker\": 0..%u, \"ms\": 1..600000}",
                      a->srv->pool.nworkers ? a->srv->pool.nworkers - 1 : 0);
    } else {
        char buf[80];
        snprintf(buf, sizeof(buf), "{\"worker\":%u,\"ms\":%lld}",
                 (unsigned)json_integer_value(wk), (long long)json_integer_value(ms));
        gw_admin_resp_json(p, GW_R_OK, buf);
        gw_admin_audit(a, "debug.stall", "worker", NULL, json_deep_copy(j));
    }
    json_decref(j);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/broker", WRITE, h_broker),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/clock", WRITE, h_clock),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/stall", WRITE, h_debug_stall),
};

const gw_admin_route_t *gw_admin_debug_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
