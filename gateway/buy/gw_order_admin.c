/*
 * An operator's cancel of an order: POST /admin/v1/orders/{order_id}/cancel
 * (gw_order_cancel issues it).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "inventory/inv.h"
#include "queue/oq_order.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

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
    if (!gw_orders_get(srv->stores.orders, id, &ord)) {
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
            &ord,
            inv_order_user(srv->stores.inv, ord.sale_id, ord.order_id, who) == 0 ? who : NULL);
    }
    int rc = gw_order_cancel(srv, &ord, reason);
    if (rc < 0) {
        gw_resp_error(p, GW_R_UNAVAILABLE, NULL, "cancel failed: %s", cm_strerror(rc));
        return;
    }
    const char *before = oq_status_name(ord.status);
    gw_orders_get(srv->stores.orders, id, &ord);
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
    GW_ADMIN_ROUTE("POST", "/admin/v1/orders/{order_id}/cancel", WRITE, h_order_cancel),
};

const gw_admin_route_t *gw_order_admin_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
