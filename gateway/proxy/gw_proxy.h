/*
 * gateway/proxy: proxied routes (proxy.routes, gw_proxy.c: libcurl's multi
 * interface on the worker's loop). Each route's upstream is registered with
 * overload control at start. Uses gateway/base, edge and overload; never
 * gateway/buy.
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include "gateway/base/gw_types.h"
#include "gateway/overload/gw_ol.h"

/*---- Proxied routes (gw_proxy.c) ----*/

/*
 * Parses proxy.routes, starts libcurl when there is a route, and registers
 * each route's upstream with overload control (gw_ol_register_upstreams).
 * After gw_overload_start, before the workers. Returns 0, or CM_EINVAL /
 * CM_EIO with the reason in errbuf. Single-threaded init.
 */
int gw_px_start(gw_server_t *srv, char *errbuf, size_t errlen);
/* libcurl's cleanup when gw_px_start started it; before gw_overload_stop. */
void gw_px_stop(gw_server_t *srv);
/* The worker's curl multi handle on its loop / its cleanup once nothing is in flight. */
void gw_px_worker_start(gw_worker_t *w);
void gw_px_worker_stop(gw_worker_t *w);
/* Matches url against the routes' prefixes: true = r is GW_ROUTE_PROXY (and
 * takes the path as sent, gw_req_take_raw_path). Loop thread. */
bool gw_px_route(gw_req_t *r, const char *url);
/* The index of the route whose prefix matches the decoded path url by whole
 * segments, the longest one if several do; -1 if none. Pure. */
int gw_px_match(const gw_proxy_route_t *routes, size_t n, const char *url);
/* upstream, the path and the query (NULL: none, "": a '?' alone) as sent, in one
 * allocated string for CURLOPT_URL (bytes libcurl would refuse or rewrite
 * written %XX: none from the strict parser). Pure. */
char *gw_px_url(const char *upstream, const char *path, const char *query);
/*
 * The head of a proxied request: method, size and the degradation level.
 * true = answer now, before reading the body (r->state is GW_ST_DONE).
 */
bool gw_px_head(gw_req_t *r, const char *method);
/* A body chunk (kept up to proxy.max_body). */
void gw_px_body(gw_req_t *r, const char *data, size_t n);
/* The complete request: a fallback or refusal (false), or held for the upstream (true). */
bool gw_px_handle(gw_req_t *r, const char *url, const char *method);
/* r's connection closed (reset, error, the gateway's own close) while its
 * upstream transfer runs: the transfer ends now and r is finished (freed: r
 * is orphaned). false if r has no transfer running. Loop thread. */
bool gw_px_abort(gw_req_t *r);
/* Frees the proxy state of r (after its transfer ended). */
void gw_px_req_free(gw_req_t *r);

#endif
