/*
 * Fault injection (the embedded broker, the wall clock), only on a gateway
 * started with --enable-debug-routes, and an operator's cancel of an order.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "queue/oq_order.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- debug and orders ----*/

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
static void h_order_cancel(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    gw_resp_t *p = a->p;
    const char *id = a->arg;
    if (strlen(id) > INV_ORDER_ID_MAX) {
        gw_resp_error(p, GW_R_NOT_FOUND, NULL, "no such resource: %s", a->url);
        return;
    }
    char reason[128] = "cancelled by operator";
    if (a->body_len || a->body_too_large) { /* too large: 413 (a body, though none kept) */
        json_t *j = gw_admin_parse_object(a, p);
        if (!j)
            return;
        static const char *const keys[] = {"reason", NULL};
        if (!gw_admin_only_keys(j, keys, p)) {
            json_decref(j);
            return;
        }
        json_t *r = json_object_get(j, "reason");
        if (r && !json_is_string(r)) {
            gw_resp_error(p, GW_R_BAD_REQUEST, NULL, "reason must be a string");
            json_decref(j);
            return;
        }
        /* Cut before a character, never inside one: a cut UTF-8 sequence
         * made the cancel event invalid (a 503 for a long reason). */
        if (r)
            oq_reason_copy(reason, sizeof(reason), json_string_value(r));
        json_decref(j);
    }
    oq_order_t ord;
    if (!gw_orders_get(srv->orders, id, &ord)) {
        gw_resp_error(p, GW_R_UNKNOWN_ORDER, NULL, "no order %s", id);
        return;
    }
    if (!oq_status_releases(ord.status)) {
        /* the status table keeps no user ids. Ask the inventory: it knows
         * the person whose mark the order holds (inv.h), not the account;
         * if it cannot answer now, "" releases by order id. */
        char who[INV_USER_ID_MAX + 1];
        ord.user_id[0] = '\0';
        oq_order_person_set(
            &ord, inv_order_user(srv->inv, ord.sale_id, ord.order_id, who) == 0 ? who : NULL);
    }
    int rc = gw_order_cancel(srv, &ord, reason);
    if (rc < 0) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "cancel failed: %s", cm_strerror(rc));
        return;
    }
    const char *before = oq_status_name(ord.status);
    gw_orders_get(srv->orders, id, &ord);
    gw_resp_init(p, rc == 0 ? GW_R_ACCEPTED : GW_R_OK);
    p->body_len = (size_t)snprintf(p->body, sizeof(p->body),
                                   "{\"order_id\":\"%s\",\"status\":\"%s\",\"cancel\":\"%s\"}", id,
                                   oq_status_name(ord.status),
                                   rc == 0 ? "requested" : "already_final");
    if (rc == 0)
        gw_admin_audit(a, "order.cancel", id, json_pack("{s:s}", "status", before),
                        json_pack("{s:s,s:s}", "cancel", "requested", "reason", reason));
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/broker", WRITE, h_broker),
    GW_ADMIN_ROUTE("PUT", "/admin/v1/debug/clock", WRITE, h_clock),
    GW_ADMIN_ROUTE("POST", "/admin/v1/orders/{order_id}/cancel", WRITE, h_order_cancel),
};

const gw_admin_route_t *gw_admin_debug_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
