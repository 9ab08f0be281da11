/*
 * The fairness admin routes: a sale's start-window draw, its registrations
 * and its waiting room's sealed persons.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_routes.h"
#include "gateway/buy/gw_reg.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GET /admin/v1/sales/{id}/draw: the start-window draw, auditable (gw_fair.h). */
static void h_sale_draw(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    json_t *o = gw_fair_draw_json(a->srv->fair, a->arg);
    if (!o) {
        gw_resp_error(a->p, GW_R_UNKNOWN_SALE, NULL, "sale %s has no start-window lottery",
                      a->arg);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/* GET /admin/v1/sales/{id}/registrations?cursor=C&limit=N: the registered persons (gw_reg.h). */
static void h_sale_registrations(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    uint64_t cursor = 0, limit = 100;
    if (!gw_admin_query_u64(a, "cursor", UINT64_MAX / 2, &cursor) ||
        !gw_admin_query_u64(a, "limit", GW_REG_PAGE_MAX, &limit))
        return;
    if (limit == 0) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "limit must be an integer from 1 to %d",
                      GW_REG_PAGE_MAX);
        return;
    }
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_reg_export_json(a->srv, a->arg, cursor, limit, &rc, why, sizeof(why));
    if (!o) {
        if (rc == CM_ENOTFOUND)
            gw_resp_error(a->p, GW_R_UNKNOWN_SALE, NULL, "%s", why);
        else
            gw_resp_error(a->p, GW_R_UNAVAILABLE, NULL, "%s", why);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/* GET /admin/v1/sales/{id}/room/persons?cursor=C&limit=N: the sealed pre-queue by rank
 * (gw_fair.h). */
static void h_sale_room_persons(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    uint64_t cursor = 0, limit = 100;
    if (!gw_admin_query_u64(a, "cursor", UINT64_MAX / 2, &cursor) ||
        !gw_admin_query_u64(a, "limit", GW_WR_PAGE_MAX, &limit))
        return;
    if (limit == 0) {
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "limit must be an integer from 1 to %d",
                      GW_WR_PAGE_MAX);
        return;
    }
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_fair_room_persons_json(a->srv->fair, a->arg, cursor, limit, &rc, why,
                                          sizeof(why));
    if (!o) {
        gw_resp_error(a->p,
                      rc == CM_ENOTFOUND   ? GW_R_UNKNOWN_SALE
                      : rc == CM_ECONFLICT ? GW_R_CONFLICT
                                           : GW_R_UNAVAILABLE,
                      rc == CM_ECONFLICT ? "\"reason\":\"not_sealed\"" : NULL, "%s", why);
        return;
    }
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/draw", READ, h_sale_draw),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/registrations", READ, h_sale_registrations),
    GW_ADMIN_ROUTE("GET", "/admin/v1/sales/{sale_id}/room/persons", READ, h_sale_room_persons),
};

const gw_admin_route_t *gw_fair_admin_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
