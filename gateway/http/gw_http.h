/*
 * gateway/http: the workers (gw_http.c) and the router (gw_route.c): what
 * the transport's upcalls arrive at, dispatched to buy and proxy.
 *
 * Threading (docs/design.md "Threading model, and why"): each worker is one
 * event loop (gw_h1_run: its own epoll, libuv inside) in its own thread with
 * its own listening socket on the shared port (SO_REUSEPORT) and its own
 * HTTP/1.1 connections. Workers share only atomics and striped locks
 * (limiter, stock, order table, spool O_APPEND). Answers that need no wait
 * are given inline, in the parser's pass that completes the body: every
 * rejection, and an accept whose spool record is a plain write(2)
 * (durability "write"). Real waits (fsync group commit in durability
 * "fsync", Redis, an upstream) hold the request until their callback answers
 * it on the same loop.
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include "gateway/base/gw_types.h"

/*
 * Routes a request from its path and r->verb (gw_route.c; r->method names it
 * in a 405): sets r->route and
 * r->id, or fills r->resp with the 4xx answer and sets r->state GW_ST_DONE.
 * Returns false when no built-in route has the path: r->route stays
 * GW_ROUTE_NONE and nothing is built yet (a proxied route may take it; else
 * gw_route_not_found answers 404, so a proxied request formats no 404 first).
 * Touches nothing but r. Thread-safe.
 */
bool gw_route(gw_req_t *r, const char *url);
/* The verb of a method name (case-sensitive, as methods are). */
gw_verb_t gw_verb_of(const char *method);
/* Fills r->resp with 404 not_found for url and sets GW_ST_DONE. Thread-safe. */
void gw_route_not_found(gw_req_t *r, const char *url);

/* Workers (gw_http.c). */
int gw_workers_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_workers_stop(gw_server_t *srv);
/*
 * Fault injection (PUT /admin/v1/debug/stall, debug routes only): worker
 * `index`'s loop sleeps `ms` at its next wake, as a handler stuck in a
 * blocking call would hold it. CM_EINVAL for an index past the workers,
 * CM_EAGAIN while the workers are not running. Thread-safe; does not wait.
 */
int gw_worker_debug_stall(gw_server_t *srv, unsigned index, uint64_t ms);
/* Sums the workers' counters into out: each worker bumps its own (relaxed
 * atomics, no shared line on the hot path) and a reader adds them up. All
 * zero before the workers start (the admin listener starts first).
 * Thread-safe. */
void gw_workers_counters(gw_server_t *srv, gw_counters_t *out);
/* The connection guards and the per-address table, which GET /admin/v1/stats
 * reads (gw_conn_stats): freed after the admin listener stopped, not with the
 * workers (gw_server_stop). */
void gw_workers_free_guards(gw_server_t *srv);

/*
 * The one answer of GET /healthz (ready false: 200 "alive") and /readyz (200
 * "ready" with the inventory's backend, or 503 not_ready "starting up" /
 * "draining": the expected answer of a probe, counted apart from the 503
 * unavailable errors), for the public listener and the admin listener alike.
 * Thread-safe.
 */
void gw_http_health(gw_server_t *srv, bool ready, gw_resp_t *out);

/*
 * A request body's framing, judged from r->hdr before a byte of it is read
 * (RFC 9112 6.1, 6.3): true with the refusal in r->resp for a
 * Transfer-Encoding other than one "chunked" (501), one beside a
 * Content-Length or two different Content-Lengths (400: request smuggling).
 * Touches nothing but r->resp. Thread-safe.
 */
bool gw_http_framing_refused(gw_req_t *r);

#endif
