/*
 * The closed list of calls from the transport (gateway/edge) up into the
 * layers above it: these functions are declared here and defined above the
 * edge (http, overload, proxy), bound at link time: a direct call, no table of
 * pointers on the request path. tests/unit/gateway_interfaces.sh reads this
 * list: an edge object may leave no other function of an upper folder
 * undefined.
 */
#ifndef GW_UPCALL_H
#define GW_UPCALL_H

#include "gateway/base/gw_types.h"

/* The end of each loop iteration (gw_http.c). */
void gw_http_check(gw_worker_t *w);
/* gw_http.c's side of a request, called by gw_h1.c. Loop thread. */
gw_req_t *gw_http_req_new(gw_worker_t *w, gw_h1_t *c);
void gw_http_req_free(gw_req_t *r);
/* The connection of a request still waiting (Redis, the spool) closed: its
 * method, path and header strings pointed into the connection's buffer,
 * which goes back to the free list for another connection to write. Sets
 * them and r->conn to NULL, so that a later reader crashes instead of reading
 * another connection's bytes (nothing reads them after the handler: the buy
 * copied what it needs into the buy path's part of r). */
void gw_http_req_orphan(gw_req_t *r);
void gw_http_head(gw_req_t *r);  /* routes; may answer (GW_ST_DONE) before the body */
void gw_http_body(gw_req_t *r, const char *data, size_t n);
void gw_http_complete(gw_req_t *r); /* answers now (GW_ST_DONE) or waits (GW_ST_WAIT) */
/* Counts r's answer: reply, sent with `status` (the table's, but for a
 * proxied answer: see gw_counters_t.px_status). */
void gw_http_account(gw_req_t *r, gw_reply_t reply, int status);
/* The first read or accept of a loop iteration: the clock, the Date, the overload stamps. */
void gw_http_iteration(gw_worker_t *w);

/* A connection was accepted (gw_conn_open): tells a crowd from a connection flood. Loop thread. */
void gw_ol_conn_started(gw_worker_t *w);
/* Renders a proxied request's own answer (an upstream's, a fallback) into its
 * connection's output: true with *reply and the *status sent (the upstream's
 * or the fallback's, not the reply table's); false: send r->resp / r->cached. */
bool gw_px_render(gw_req_t *r, gw_reply_t *reply, int *status);

#endif
