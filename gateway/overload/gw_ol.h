/*
 * gateway/overload: overload control wired to the workers (gw_overload.c):
 * levels, the per-dependency concurrency limits, the queue-delay check, the
 * door on the listening socket, the prepared 503s. The pure policy it runs
 * is gw_overload.h (gw_overload_core.c). Uses gateway/base and gateway/edge.
 */
#ifndef GW_OL_H
#define GW_OL_H

#include "gateway/base/gw_types.h"
#include "gateway/overload/gw_overload.h"

/* Counts a 503 of overload control by its reason. Loop thread of w. */
void gw_count_overload(gw_worker_t *w, gw_ol_reason_t reason);
/*---- Overload control (gw_overload.c) ----*/

/* Dependency indexes of the per-worker limits; upstream i is GW_DEP_UPSTREAM + i. */
enum { GW_DEP_REDIS = 0, GW_DEP_SPOOL = 1, GW_DEP_UPSTREAM = 2 };

/* overload.priority_key_file, when set, read as the start reads it (a regular
 * file, mode 0600, 64 hex digits), for --check-config. Returns 0 or a negative
 * CM_E* (errbuf names the option and why). Thread-safe. */
int gw_ol_priority_key_check(const gw_config_t *cfg, char *errbuf, size_t errlen);
/* Parses the overload config and loads the user-priority secret
 * (gw_ol_prio_key: overload.priority_key_file, else the fleet's in Redis,
 * else drawn here). Returns 0 or a negative CM_E* with the reason in errbuf.
 * Single-threaded init, before the workers. */
int gw_overload_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_overload_stop(gw_server_t *srv);
/* Per-worker state and its timer on w->loop. Before the loop runs / loop thread at stop. */
void gw_ol_worker_start(gw_worker_t *w);
void gw_ol_worker_stop(gw_worker_t *w);
/* Start of a loop iteration's I/O (stamps the time requests are read). Loop thread. */
void gw_ol_iteration(gw_worker_t *w);
/* At the start and end of a loop iteration's I/O: whether the worker's door should shut (gw_overload.c). Loop thread. */
void gw_ol_door_look(gw_worker_t *w);
/* A request head was read: records its queuing delay. Loop thread. */
void gw_ol_request_head(gw_req_t *r);
/*
 * After routing: true when the request already waited too long in the kernel
 * to be served in time (gw_late_verdict): r holds a prepared 503 queue_time,
 * state GW_ST_DONE, to be answered now with its body unread (the connection
 * closes), or, on a connection a shut door keeps, its small body read and
 * dropped (the connection stays). Loop thread.
 */
bool gw_ol_too_late(gw_req_t *r);
/*
 * DAGOR user priority on the buy path. The cut is CPU work saved only when it
 * comes before the work: a refused buy is answered before its body is parsed
 * (gw_ol_buy_precheck) and, with identity on, before its token's signature is
 * checked (the buy path asks gw_ol_buy_admit_user with the user the token
 * claims). Verification runs on the worker's loop, so its CPU is in what the
 * cut is driven by: the loop's busy share and the queuing delay of the
 * requests read after it in the same iteration.
 *
 * gw_ol_buy_shedding: whether buys are being cut now (then the user decides).
 * gw_ol_buy_admit_user: whether `user` passes the cut; false: r answered 503
 * queue_delay and counted in shed_users. Asked only while shedding.
 * gw_ol_buy_admit: the same for the buy's user (NUL-terminated: the body's
 * user_id once parsed and the buyer verified), asking gw_ol_buy_shedding
 * first. Loop thread.
 */
bool gw_ol_buy_shedding(gw_req_t *r);
bool gw_ol_buy_admit_user(gw_req_t *r, const char *user, size_t len);
bool gw_ol_buy_admit(gw_req_t *r, const char *user);
/*
 * PUT /admin/v1/debug/overload (--enable-debug-routes): pins every worker's
 * user cut to `cut` (0..GW_UPRIO_LEVELS: buys with priority < cut pass; all
 * buys are then cut by user whatever the level), or -1 to give it back to
 * DAGOR. For tests that need shedding without an overload. Thread-safe.
 */
void gw_ol_debug_user_cut(gw_server_t *srv, int cut);
int gw_ol_debug_user_cut_get(gw_server_t *srv);
/*
 * Before the buy body is parsed: while buys are being shed by user priority,
 * finds "user_id":"..." in the raw body with a plain scan (no JSON parse) and
 * refuses the user now when the cut would refuse it after the parse. Only
 * ever refuses earlier: a body the scan cannot read goes on to the full parse
 * and gw_ol_buy_admit. false: answered 503. Loop thread.
 */
bool gw_ol_buy_precheck(gw_req_t *r);
/* Takes a slot of dependency `dep` for r; false: r->resp is a 503 (nothing was sent to it). */
bool gw_ol_acquire(gw_req_t *r, unsigned dep);
typedef enum { GW_OL_TAKEN = 0, GW_OL_LIMIT, GW_OL_BREAKER } gw_ol_take_t;
/*
 * The same without answering a refusal: which one it was (the limit is full,
 * the upstream's breaker is open). Nothing is counted but the limit's own
 * refusals: a caller with another answer than the 503 (a proxied route's
 * fallback) counts that answer; else gw_ol_refuse. Loop thread.
 */
gw_ol_take_t gw_ol_try_acquire(gw_req_t *r, unsigned dep);
/* Answers and counts gw_ol_try_acquire's refusal `why` of `dep` as its 503. Loop thread. */
void gw_ol_refuse(gw_req_t *r, unsigned dep, gw_ol_take_t why);
/* Gives r's slot of `dep` back (no-op if not held); the RTT is measured from the acquire. */
void gw_ol_release(gw_req_t *r, unsigned dep, gw_al_outcome_t o);
/*
 * The same with the dependency's own time as the sample, when the client
 * measured one (the Redis backend's inv_reserve_req_t.rtt_us: its write to
 * its reply's arrival, without this loop's queueing); GW_OL_RTT_MEASURE: from
 * the acquire, as gw_ol_release. Loop thread.
 */
#define GW_OL_RTT_MEASURE UINT64_MAX
void gw_ol_release_rtt(gw_req_t *r, unsigned dep, gw_al_outcome_t o, uint64_t rtt_us);
/* Gives back whatever r still holds, without samples (request freed). Loop thread. */
void gw_ol_release_all(gw_req_t *r);
/*
 * Answers r with 503 overloaded: the refusing limit or level and a jittered
 * Retry-After, from the worker's prepared answers (r->cached) when it can,
 * else built into r->resp: `reason` names it (gw_ol_reason_name) and counts it;
 * `msg` must be a string literal (the
 * cache keys on its address); `degraded` adds X-Flashgate-Degraded: 1.
 * Loop thread of r->w.
 */
void gw_ol_overloaded(gw_req_t *r, gw_ol_reason_t reason, const char *msg, bool degraded);
/* Frees the worker's prepared 503 answers. Loop stopped. */
void gw_ol_cache_free(gw_worker_t *w);
/* A jittered Retry-After in seconds. Loop thread of w. */
unsigned gw_ol_retry(gw_worker_t *w);
/* The level in force. Thread-safe. */
gw_level_t gw_ol_level(gw_server_t *srv);
/* Pins a level (0..3) or returns to automatic (-1). Thread-safe. */
void gw_ol_pin(gw_server_t *srv, int level);
/* Adds the "overload" object to the stats (json_t *). Thread-safe. */
void gw_overload_stats(gw_server_t *srv, void *json_obj);
/* One summary log line of shedding since the last call (none if nothing happened). */
void gw_overload_log_summary(gw_server_t *srv);
/* Counts a request shed or degraded for criticality c. Thread-safe. */
void gw_ol_count_shed(gw_worker_t *w, gw_crit_t c);
/* Counts a fallback answered for `cause` (never a 503: gw_ol_overloaded
 * counts those). Thread-safe. */
void gw_ol_count_degraded(gw_worker_t *w, gw_degrade_cause_t cause);
/* Takes the proxied routes (copied): upstream i is dependency GW_DEP_UPSTREAM + i,
 * with its latency target. After gw_overload_start, before the workers start. */
void gw_ol_register_upstreams(gw_server_t *srv, const gw_proxy_route_t *routes, size_t n);
/* The 503 reason's name ("redis_limit", ...). Thread-safe. */
const char *gw_ol_reason_name(gw_ol_reason_t k);
/* The registered proxy.routes (borrowed, valid while the server runs). Thread-safe. */
const gw_proxy_route_t *gw_ol_upstreams(const gw_server_t *srv, size_t *n);
/*
 * Sets the latency target of route i of gw_ol_upstreams (ms, 0 none, at most its
 * timeout_ms: the caller checks; gw_alimit_set_target): each worker's limit
 * takes it at its next tick (10 ms, 100 ms when idle). Returns the one it
 * replaced. Until a restart: the configured one comes back then. Thread-safe.
 */
uint32_t gw_ol_upstream_set_target(gw_server_t *srv, size_t i, uint32_t target_ms);
/* The latency target in force of route i (ms, 0 none). Thread-safe. */
uint32_t gw_ol_upstream_target_ms(const gw_server_t *srv, size_t i);

/* The overload control's admin routes (gw_overload_admin.c): a table of *n
 * routes the admin listener assembles at start. */
struct gw_admin_route;
const struct gw_admin_route *gw_ol_admin_routes(size_t *n);

#endif
