/*
 * The fairness routes: the public ones (gw_fair_routes.c: the waiting room's
 * queue, registration) and the admin ones (gw_fair_admin.c: the draw, the
 * registrations, the room's sealed persons). They parse, check the buyer as
 * the buy does (limits, identity, eligibility) and answer; what they decide
 * on is the lottery's and the room's (gw_fair.h) and registration's
 * (gw_reg.h). The buy's own lottery entry and admission check stay in the
 * buy (gw_buy.c).
 */
#ifndef GW_FAIR_ROUTES_H
#define GW_FAIR_ROUTES_H

#include "gateway/base/gw_types.h"

#include <stdbool.h>
#include <stddef.h>

/* GET|HEAD /v1/sales/{id}/queue: the waiting room's page, a place, a ticket's
 * refresh and the admission token (docs/api.md "Waiting room"). Fills
 * r->resp. Loop thread of r->w. */
void gw_room_handle(gw_req_t *r);

/* POST /v1/sales/{id}/registrations (docs/api.md "Registration"). Fills
 * r->resp and returns false, or returns true: held until its log is durable
 * (spool.durability fsync), then answered with gw_req_finish. Loop thread of r->w. */
bool gw_reg_handle(gw_req_t *r);

/* The fairness admin routes (gw_fair_admin.c): a table of *n routes the
 * admin listener assembles at start. */
struct gw_admin_route;
const struct gw_admin_route *gw_fair_admin_routes(size_t *n);

#endif
