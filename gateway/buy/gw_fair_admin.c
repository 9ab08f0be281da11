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

/* o as the call's answer (a new reference, stolen). */
static void reply_json(gw_admin_call_t *a, json_t *o)
{
    gw_admin_set_big(a, json_dumps(o, JSON_COMPACT));
    json_decref(o);
}

/* A page's sale, ?cursor=C (default 0) and ?limit=N (1..max, default 100); false when
 * answered (400 or 404). */
static bool page_args(gw_admin_call_t *a, int max, uint64_t *cursor, uint64_t *limit)
{
    *cursor = 0;
    *limit = 100;
    if (!gw_admin_sale_arg(a) || !gw_admin_query_u64(a, "cursor", UINT64_MAX / 2, cursor) ||
        !gw_admin_query_u64(a, "limit", (uint64_t)max, limit))
        return false;
    if (*limit == 0)
        gw_resp_error(a->p, GW_R_BAD_REQUEST, NULL, "limit must be an integer from 1 to %d", max);
    return *limit != 0;
}

/* GET /admin/v1/sales/{id}/draw: the start-window draw, auditable (gw_fair.h). */
static void h_sale_draw(gw_admin_call_t *a)
{
    if (!gw_admin_sale_arg(a))
        return;
    json_t *o = gw_fair_draw_json(a->srv->fair, a->arg);
    if (o)
        reply_json(a, o);
    else
        gw_resp_error(a->p, GW_R_UNKNOWN_SALE, NULL, "sale %s has no start-window lottery", a->arg);
}

/* GET /admin/v1/sales/{id}/registrations?cursor=C&limit=N: the registered persons (gw_reg.h). */
static void h_sale_registrations(gw_admin_call_t *a)
{
    uint64_t cursor, limit;
    if (!page_args(a, GW_REG_PAGE_MAX, &cursor, &limit))
        return;
    int rc = 0;
    char why[256] = "";
    json_t *o = gw_reg_export_json(a->srv, a->arg, cursor, limit, &rc, why, sizeof(why));
    if (o)
        reply_json(a, o);
    else
        gw_resp_error(a->p, rc == CM_ENOTFOUND ? GW_R_UNKNOWN_SALE : GW_R_UNAVAILABLE, NULL, "%s",
                      why);
}

/* GET /admin/v1/sales/{id}/room/persons?cursor=C&limit=N: the sealed pre-queue by rank
 * (gw_fair.h). */
static void h_sale_room_persons(gw_admin_call_t *a)
{
    uint64_t cursor, limit;
    if (!page_args(a, GW_WR_PAGE_MAX, &cursor, &limit))
        return;
    int rc = 0;
    char why[256] = "";
    json_t *o =
        gw_fair_room_persons_json(a->srv->fair, a->arg, cursor, limit, &rc, why, sizeof(why));
    if (o)
        reply_json(a, o);
    else
        gw_resp_error(a->p,
                      rc == CM_ENOTFOUND   ? GW_R_UNKNOWN_SALE
                      : rc == CM_ECONFLICT ? GW_R_CONFLICT
                                           : GW_R_UNAVAILABLE,
                      rc == CM_ECONFLICT ? "\"reason\":\"not_sealed\"" : NULL, "%s", why);
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
