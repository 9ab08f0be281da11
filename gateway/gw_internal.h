/*
 * Shared by the gateway sources only.
 *
 * Threading (docs/design.md "Threading model, and why": the design that won):
 * each worker is one event loop (gw_h1_run: its own epoll, libuv inside) in
 * its own thread with its own listening socket on the shared port
 * (SO_REUSEPORT) and its own HTTP/1.1 connections (gw_h1.c: llhttp, sockets
 * edge-triggered, recv(2) and send(2)). Workers share
 * only atomics and striped locks (limiter, stock, order table, spool
 * O_APPEND). Answers that need no wait are given inline, in the parser's pass
 * that completes the body: every rejection, and an accept whose spool record
 * is a plain write(2) (durability "write"). Real waits (fsync group commit in
 * durability "fsync", Redis, an upstream) hold the request (its connection
 * goes on reading into its buffer, unparsed) until their callback answers it
 * on the same loop.
 * Measured against nginx "return 200" in bench/bench.sh.
 */
#ifndef GW_INTERNAL_H
#define GW_INTERNAL_H

#include "common/cm_id.h"
#include "common/cm_topk.h"
#include "gateway/base/gw_config.h"
#include "gateway/base/gw_limit.h"
#include "gateway/overload/gw_overload.h"
#include "inventory/inv.h"
#include "queue/oq_spool.h"

#include <llhttp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_server gw_server_t;
typedef struct gw_worker gw_worker_t;
typedef struct gw_req gw_req_t;
typedef struct gw_orders gw_orders_t;
typedef struct gw_conn gw_conn_t;
typedef struct gw_conn_guard gw_conn_guard_t;
typedef struct gw_ip_table gw_ip_table_t;
typedef struct gw_releaser gw_releaser_t;
struct oq_relay;
struct gw_overload;
struct gw_ol_worker;
struct gw_px_worker;
struct gw_px_req;

/*---- Replies: the ONE table of outcomes -> HTTP status, stable code, Retry-After ----*/

/* name, HTTP status, stable code, default Retry-After in seconds (0 = none;
 * gw_resp_retry_after overrides it with a computed or jittered value). */
#define GW_REPLY_MAP(XX)                                                                           \
    XX(OK, 200, "ok", 0)                                                                           \
    XX(CREATED, 201, "created", 0)                                                                 \
    XX(ACCEPTED, 202, "queued", 0)                                                                 \
    XX(ENTERED, 202, "entered", 0)                                                                 \
    XX(BAD_REQUEST, 400, "bad_request", 0)                                                         \
    XX(UNAUTHORIZED, 401, "unauthorized", 0)                                                       \
    XX(FORBIDDEN, 403, "forbidden", 0)                                                             \
    XX(ADMISSION_REQUIRED, 403, "admission_required", 0)                                           \
    XX(NOT_FOUND, 404, "not_found", 0)                                                             \
    XX(UNKNOWN_SALE, 404, "unknown_sale", 0)                                                       \
    XX(UNKNOWN_ORDER, 404, "unknown_order", 0)                                                     \
    XX(UNKNOWN_RULE, 404, "unknown_rule", 0)                                                       \
    XX(METHOD, 405, "method_not_allowed", 0)                                                       \
    XX(LIMIT_PER_USER, 409, "limit_per_user", 0)                                                   \
    XX(CONFLICT, 409, "conflict", 0)                                                               \
    XX(SOLD_OUT, 410, "sold_out", 0)                                                               \
    XX(SALE_ENDED, 410, "sale_ended", 0)                                                           \
    XX(TOO_LARGE, 413, "payload_too_large", 0)                                                     \
    XX(URI_TOO_LONG, 414, "uri_too_long", 0)                                                       \
    XX(HEAD_TOO_LARGE, 431, "headers_too_large", 0)                                                \
    XX(HTTP_VERSION, 505, "http_version_not_supported", 0)                                         \
    XX(MEDIA_TYPE, 415, "unsupported_media_type", 0)                                               \
    XX(NOT_STARTED, 425, "sale_not_started", 0)                                                    \
    XX(RATE_LIMITED, 429, "rate_limited", 1)                                                       \
    XX(INTERNAL, 500, "internal", 0)                                                               \
    XX(NOT_IMPLEMENTED, 501, "not_implemented", 0)                                                 \
    XX(UNAVAILABLE, 503, "unavailable", 1)                                                         \
    XX(OVERLOADED, 503, "overloaded", 1)                                                           \
    XX(BAD_GATEWAY, 502, "bad_gateway", 0)                                                         \
    XX(GATEWAY_TIMEOUT, 504, "gateway_timeout", 0)                                                 \
    XX(PROXIED, 200, "proxied", 0)   /* an upstream's answer passed through, its own status */    \
    XX(FALLBACK, 200, "fallback", 0) /* a proxied route's configured fallback, its own status */

/*
 * The statuses a proxied answer can be sent with (GW_R_PROXIED: px_complete
 * fails any other upstream status; GW_R_FALLBACK: gw_config refuses any other
 * fallback.status). Their 200 above is only a default: the counters key them
 * by the status sent (gw_counters_t.px_status), which the table cannot know.
 */
#define GW_PX_STATUS_MIN 200
#define GW_PX_STATUS_MAX 599
#define GW_PX_STATUS_SPAN (GW_PX_STATUS_MAX - GW_PX_STATUS_MIN + 1)
#define GW_PX_KINDS 2 /* GW_R_PROXIED, GW_R_FALLBACK: gw_px_kind */

typedef enum {
#define XX(n, s, c, ra) GW_R_##n,
    GW_REPLY_MAP(XX)
#undef XX
        GW_R_COUNT
} gw_reply_t;

int gw_reply_status(gw_reply_t r);
const char *gw_reply_code(gw_reply_t r);
/* The table's default Retry-After of r in seconds (0 = none). */
unsigned gw_reply_retry_after(gw_reply_t r);
/* The gw_counters_t.px_status row of a proxied answer (0 an upstream's, 1 a
 * fallback), or -1: any other reply is sent with its table status. */
static inline int gw_px_kind(gw_reply_t r)
{
    return r == GW_R_PROXIED ? 0 : r == GW_R_FALLBACK ? 1 : -1;
}

/*
 * The public routes. GW_PUBLIC_ROUTES is the route table the router
 * (gw_http.c) answers: route, methods, path pattern ({name} = one path
 * segment). tests/integration/19-openapi.py reads it to check docs/openapi.yaml.
 */
#define GW_PUBLIC_ROUTES(XX)                                                                       \
    XX(BUY, "buy", "POST", "/v1/sales/{sale_id}/orders")                                           \
    XX(ORDER, "order", "GET, HEAD", "/v1/orders/{order_id}")                                       \
    XX(SALE, "sale", "GET, HEAD", "/v1/sales/{sale_id}")                                           \
    XX(QUEUE, "queue", "GET, HEAD", "/v1/sales/{sale_id}/queue")                                   \
    XX(HEALTH, "healthz", "GET, HEAD", "/healthz")                                                 \
    XX(READY, "readyz", "GET, HEAD", "/readyz")

typedef enum {
    GW_ROUTE_NONE = 0, /* not routed: 404 and friends */
#define XX(n, name, m, p) GW_ROUTE_##n,
    GW_PUBLIC_ROUTES(XX)
#undef XX
        GW_ROUTE_PROXY, /* a prefix of proxy.routes (gw_proxy.c) */
    GW_ROUTE_COUNT
} gw_route_t;

/* The Allow header (methods) and metric label of a route. */
const char *gw_route_methods(gw_route_t r);
const char *gw_route_name(gw_route_t r);

/*
 * Latency histogram buckets (upper bounds, microseconds) for the public
 * routes: a sub-millisecond gateway needs resolution from 50 us up; the last
 * bucket (+Inf) is implicit.
 */
#define GW_LAT_BOUNDS_US                                                                           \
    {50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000}
#define GW_LAT_NBOUNDS 13

/* Why overload control answered 503 (the body's "reason"), for the metrics. */
#define GW_OL_REASONS(XX)                                                                          \
    XX(REDIS_LIMIT, "redis_limit")                                                                 \
    XX(SPOOL_LIMIT, "spool_limit")                                                                 \
    XX(UPSTREAM_LIMIT, "upstream_limit")                                                           \
    XX(UPSTREAM_BREAKER, "upstream_breaker")                                                       \
    XX(QUEUE_DELAY, "queue_delay")                                                                 \
    XX(LEVEL_1, "level_1")                                                                         \
    XX(LEVEL_2, "level_2")                                                                         \
    XX(LEVEL_3, "level_3")                                                                         \
    XX(INFLIGHT_LIMIT, "inflight_limit")                                                           \
    XX(QUEUE_TIME, "queue_time")                                                                   \
    XX(OTHER, "other")

typedef enum {
#define XX(n, s) GW_OLR_##n,
    GW_OL_REASONS(XX)
#undef XX
        GW_OLR_COUNT
} gw_ol_reason_t;

/*
 * Counters, one set per worker (no sharing on the hot path: only the worker
 * writes them, relaxed), summed at read (stats, /metrics, the log summary).
 */
typedef struct gw_counters {
    _Atomic uint64_t replies[GW_R_COUNT];
    _Atomic uint64_t rate_limited[GW_SCOPE_COUNT];
    _Atomic uint64_t requests;
    _Atomic uint64_t accepted_units;
    _Atomic uint64_t route_requests[GW_ROUTE_COUNT];
    _Atomic uint64_t route_replies[GW_ROUTE_COUNT][GW_R_COUNT];
    _Atomic uint64_t lat_buckets[GW_ROUTE_COUNT][GW_LAT_NBOUNDS + 1]; /* not cumulative */
    _Atomic uint64_t lat_sum_us[GW_ROUTE_COUNT];
    _Atomic uint64_t access_logged;
    _Atomic uint64_t overload_reasons[GW_OLR_COUNT];
    _Atomic uint64_t proxy_client_aborts; /* transfers ended because their client left */
    /* requests sent again on a fresh connection: the kept one had bytes or a close waiting */
    _Atomic uint64_t proxy_stale_conns;
    /* GW_R_PROXIED [0] and GW_R_FALLBACK [1] answers by the status sent (index
     * status - GW_PX_STATUS_MIN; gw_px_kind): the reply table's 200 is not
     * theirs. Only GW_ROUTE_PROXY answers them, so no per-route copy. Last:
     * 6.4 KB that every buy's counters (above) need not be spread across. */
    _Atomic uint64_t px_status[GW_PX_KINDS][GW_PX_STATUS_SPAN];
} gw_counters_t;

/* A response under construction: status, JSON body, a few headers. */
typedef struct gw_resp {
    gw_reply_t reply;
    int status;
    char body[1024];
    size_t body_len;
    char headers[6][2][160]; /* name, value */
    unsigned nheaders;
} gw_resp_t;

/* Starts a response for `reply`: status from the table, empty body, and the
 * table's default Retry-After header when it has one. */
void gw_resp_init(gw_resp_t *r, gw_reply_t reply);
/* Sets (or replaces) the Retry-After header: `seconds` from now. */
void gw_resp_retry_after(gw_resp_t *r, unsigned long long seconds);
/* The one sold-out answer (410 sold_out) for sale_id. */
void gw_resp_sold_out(gw_resp_t *r, const char *sale_id);
void gw_resp_header(gw_resp_t *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with a ready value (no formatting): the buy path's 202. */
void gw_resp_header_set(gw_resp_t *r, const char *name, const char *value);
/* Sets the body to {"error":code,"message":msg...} with extra pre-escaped JSON members. */
void gw_resp_error(gw_resp_t *r, gw_reply_t reply, const char *extra_json, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An HTTP Date value, "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate). */
#define GW_DATE_LEN 29
void gw_http_date(time_t t, char out[GW_DATE_LEN + 1]);
/* Writes v in decimal at p (at most 20 bytes, no NUL); returns the end. Any thread. */
char *gw_put_u64(char *p, uint64_t v);
/* Room gw_resp_render needs for any gw_resp_t's head (status line and headers). */
#define GW_RESP_HEAD_MAX 2560
/*
 * Renders r's status line and headers (Date, Content-Type, r's headers,
 * Cache-Control: no-store unless r has one, Content-Length), without the
 * blank line, into out (at least GW_RESP_HEAD_MAX bytes). Returns the length;
 * *date_off (if not NULL) gets the Date value's offset. No printf.
 */
size_t gw_resp_render(const gw_resp_t *r, const char *date, char *out, size_t cap,
                      size_t *date_off);
/* A prepared answer: bytes rendered once, the Date brought to the second on use. */
typedef struct gw_prep {
    char *buf;       /* head (no blank line), then "\r\n" and the body */
    size_t len;      /* all of buf */
    size_t head_len; /* the head's bytes */
    size_t date_off; /* the Date value in the head */
    time_t date_s;   /* the second the Date says */
} gw_prep_t;
/* A prepared copy of r dated w's second; NULL on failure. Loop thread of w. */
gw_prep_t *gw_prep_new(const gw_resp_t *r, const gw_worker_t *w);
/* Writes w's Date into p if its second has passed. Loop thread of w. */
void gw_prep_redate(gw_prep_t *p, const gw_worker_t *w);
void gw_prep_free(gw_prep_t *p);
/* Appends s JSON-escaped (without quotes) to buf at *len. */
void gw_json_escape(char *buf, size_t cap, size_t *len, const char *s);

/*---- Trusted proxies and client addresses ----*/

typedef struct gw_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
} gw_cidr_t;

typedef struct gw_proxies {
    gw_cidr_t *v;
    size_t n;
} gw_proxies_t;

/* Parses "10.0.0.0/8, ::1, 192.168.1.7". Returns 0 or CM_EINVAL with the bad item in errbuf. */
int gw_proxies_parse(gw_proxies_t *p, const char *list, char *errbuf, size_t errlen);
void gw_proxies_free(gw_proxies_t *p);
bool gw_proxies_match(const gw_proxies_t *p, const struct sockaddr *sa);
/*
 * The usual dotted quad, read by hand: true with the 4 bytes only for a string
 * inet_pton(AF_INET) takes with the same value (four parts of 1-3 digits, each
 * <= 255, no leading zero); anything else is false and goes to inet_pton, which
 * stays the judge (fuzz_headers checks the two agree). glibc's inet_pton was
 * ~250 instructions for each X-Forwarded-For hop of a buy. Thread-safe.
 */
bool gw_ipv4_parse(const char *s, uint8_t out[4]);
/*
 * The client address of a request: the peer, or, when the peer is a trusted
 * proxy, the right-most address in X-Forwarded-For that is not a trusted
 * proxy. Writes a limiter key (4 bytes for IPv4, the /64 prefix for IPv6) to
 * key (>= 16 bytes) and returns its length, 0 if unknown.
 */
size_t gw_client_key(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                     uint8_t *key);
/*
 * The same client address, whole (an IPv6 one not cut to its /64): its family
 * (AF_INET, AF_INET6; 0 if unknown) and its 4 or 16 bytes in addr. The proxy
 * passes it on as X-Real-IP.
 */
int gw_client_addr(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                   uint8_t addr[16]);

/*---- Orders known to this gateway (GET /v1/orders/{id}) ----*/

/* Bounded: see gateway/base/gw_orders.c for the memory budget and the eviction. */
typedef enum {
    GW_ORDERS_UNKNOWN = 0, /* never seen here */
    GW_ORDERS_FOUND = 1,
    GW_ORDERS_EXPIRED = 2, /* evicted to stay within orders.max_known */
} gw_orders_found_t;

typedef struct gw_orders_stats {
    uint64_t known, max_known, capacity;
    uint64_t evicted, evicted_queued; /* evicted in all; of them still queued */
    uint64_t expired_queries;         /* lookups of an evicted order */
    uint64_t reasons_lost;            /* reasons past the 254 distinct texts kept */
    uint64_t unindexed;               /* ids that are not order ids (not kept) */
    uint64_t sales;                   /* distinct sale ids interned */
    uint64_t table_bytes;             /* allocated at start for max_known orders */
} gw_orders_stats_t;

/* Allocates the table for max_known orders (all memory up front). Single-threaded init. */
gw_orders_t *gw_orders_new(uint64_t max_known);
void gw_orders_free(gw_orders_t *t);
/* Inserts if absent (status queued), evicting the oldest final order when
 * full. Returns true if inserted. Thread-safe. */
bool gw_orders_put(gw_orders_t *t, const oq_order_t *o);
/* A hint: the put of order id (its cm_id value) comes soon. Thread-safe. */
void gw_orders_prefetch(gw_orders_t *t, uint64_t id);
/*
 * Copies the order out (status and reason; accepted_at and node from the id;
 * no user id: it is not kept). out may be NULL. Thread-safe.
 */
gw_orders_found_t gw_orders_lookup(gw_orders_t *t, const char *order_id, oq_order_t *out);
/* gw_orders_lookup() == GW_ORDERS_FOUND. Thread-safe. */
bool gw_orders_get(gw_orders_t *t, const char *order_id, oq_order_t *out);
/*
 * Moves an order to a final status; returns the previous status, or -1 if the
 * order is unknown (it is then created from `o` when o is not NULL).
 * Thread-safe.
 */
int gw_orders_set_status(gw_orders_t *t, const char *order_id, const oq_order_t *o,
                         oq_status_t st, const char *reason);
uint64_t gw_orders_count(gw_orders_t *t);
void gw_orders_stats(gw_orders_t *t, gw_orders_stats_t *out);

/*---- Workers and the server ----*/

/* Prepared 503 answers per worker: reasons x messages x Retry-After values
 * (3 by default); a wider Retry-After range builds the rest per request. */
#define GW_OL_CACHE 64
/* listen() backlog of a worker's socket (gw_h1.c; gw_overload.c reopens with it) and of
 * the admin listener (gw_admin.c). */
#define GW_LISTEN_BACKLOG 4096

/* A prepared 429 and what it says; reused while a scope keeps refusing alike. */
typedef struct gw_rl_cache {
    gw_prep_t *resp;
    uint64_t retry, burst, window, remaining;
} gw_rl_cache_t;

struct gw_worker {
    char *xff_join; /* gw_req_xff's buffer (GW_H1_READ_BUF), allocated on first use */
    gw_server_t *srv;
    unsigned index;
    pthread_t thread;
    uv_loop_t loop;   /* timers, Redis, upstreams, the thread pool: run by gw_h1_run */
    int efd;          /* the worker's own epoll: public sockets, lfd, libuv's (gw_h1.c) */
    uint64_t idle_ns; /* time the loop slept in epoll_wait (uv_hrtime's clock) */
    int lfd;          /* the listening socket, -1 once closed */
    bool lpolled;     /* lfd is in efd */
    bool accepting;   /* lfd polled (the overload door shuts it) */
    /* accept4 failed in a way a retry does not mend (out of descriptors or
     * kernel memory, gw_h1.c accept_pause): lfd unpolled until accept_timer
     * polls again (the level-triggered readiness would spin the loop); the
     * warning once a second with how many accepts failed meanwhile */
    bool fd_starved;
    uv_timer_t accept_timer;
    uint64_t fd_starved_n, fd_starved_logged_ns;
    struct gw_h1 *h1_conns; /* open connections (gw_h1.c) */
    struct gw_h1 *h1_posted; /* to read without an edge (gw_h1.c) */
    struct gw_h1 *h1_dead;   /* closed, freed at the iteration's end (gw_h1.c) */
    uint64_t h1_open;
    uint64_t h1_leaving; /* of those, closing once their output is out (close_after) */
    uint64_t h1_door_trims; /* requests the door trimmed whose answer is not out yet */
    struct gw_h1_buf *h1_free; /* buffers for reuse (gw_h1.c), at most 256 */
    uv_timer_t h1_sweep;       /* idle connections give their buffer back (gw_h1.c) */
    unsigned h1_freed;         /* buffers freed past the free list since the last trim */
    uv_work_t h1_trim;         /* malloc_trim off the loop (gw_h1.c) */
    bool h1_trimming;          /* h1_trim is queued or running */
    unsigned h1_nfree;
    uv_async_t wake; /* stop */
    uv_timer_t stop_timer;
    uint64_t stop_inv_until_ms; /* stopping: wait for the inventory's calls until (mono ms) */
    bool in_iter;      /* the iteration's first read or accept was stamped */
    bool notify_relay; /* appends happened this iteration */
    /* cm_mono_ns() read once per loop iteration, at its first read or accept:
     * the time every request of that iteration is stamped with (arrival,
     * connection deadlines, rate limits). A clock read is ~20 ns and an
     * answer took 5 of ours (bench/README.md). */
    uint64_t now_ns;
    /* Loop iterations ended (on_check counts them) and now_ns as it was at the
     * end of the one before last: a time before this iteration's poll began,
     * so bytes read now on a connection reading since then arrived after it
     * (gw_h1_read_after_ns: the too-late check without a getsockopt). */
    uint64_t iter_no;
    uint64_t stamp_last_ns, stamp_prev_ns;
    inv_sale_memo_t sale_memo; /* the buy path's last sale (inv_sale_find_memo) */
    inv_worker_t *inv;
    gw_counters_t ctr;
    gw_req_t *free_reqs; /* per-worker free list of request contexts */
    unsigned nfree;
    /* The spool batch (gw_buy.c): reserved orders held until the end of the
     * loop iteration writes their records with one write(2) */
    gw_req_t *spool_wait, **spool_wait_tail;
    uint64_t spool_wait_bytes; /* their records' bound (oq_spool_order_bound): the room they hold */
    /* fsync group commit: requests whose record is written and waits for a sync */
    gw_req_t *sync_wait, **sync_wait_tail;
    bool sync_running;
    uv_work_t sync_work;
    gw_req_t *sync_batch;
    int sync_result;
    /* Requests held (waiting for the spool write, Redis, an fsync, an upstream)
     * until gw_req_finish. (Named in libmicrohttpd's days; gw_overload.c reads it.) */
    uint32_t suspended;
    atomic_bool stopping;
    /* Prepared 410 sold_out answers, one per sale: 99% of a sale's crowd gets one. */
    struct {
        const inv_sale_t *sale;
        gw_prep_t *resp;
    } sold_out_cache[32];
    unsigned nsold_out;
    gw_rl_cache_t rl_cache[GW_SCOPE_COUNT]; /* the last 429 per scope, prepared */
    /* This second's Date header (gw_http_date), set at the start of each loop
     * iteration's I/O; the prepared answers take it on use (gw_prep_redate). */
    char date[GW_DATE_LEN + 1];
    time_t date_s;
    /* Prepared 503 overloaded answers, one per (reason, message, degraded,
     * Retry-After): a shed crowd costs no response building (gw_overload.c). */
    struct {
        const char *reason, *msg;
        unsigned retry;
        bool degraded;
        gw_prep_t *resp;
    } ol_cache[GW_OL_CACHE];
    unsigned nol_cache;
    /* Heavy hitters among rejected requests (users, client addresses). Written
     * by this worker under hh_mu (uncontended but for a reader), merged on read. */
    pthread_mutex_t hh_mu;
    cm_topk_t hh_users, hh_ips;
    uint64_t rng; /* access-log sampling */
    struct gw_ol_worker *ol; /* overload control (gw_overload.c) */
    struct gw_px_worker *px; /* proxied routes (gw_proxy.c); NULL without routes */
    gw_conn_guard_t *guard; /* gw_conn.c: caps and deadlines of this worker's connections */
};

struct gw_server {
    gw_config_t *cfg;
    /* Guards cfg's runtime-changeable fields (limits) written by the admin API and
     * the fleet thread. Lock order: fleet's own locks, then this one. */
    pthread_mutex_t cfg_mu;
    cm_conf_t *conf;
    inv_t *inv;
    oq_spool_t *spool;
    struct oq_relay *relay;
    struct gw_fleet *fleet; /* gw_fleet.c; NULL without a Redis inventory */
    gw_releaser_t *releaser; /* gw_release.c: units given back off the loops */
    gw_limits_t *limits;
    gw_orders_t *orders;
    gw_proxies_t proxies;
    gw_ip_table_t *iptable; /* gw_conn.c: open connections per client address */
    uint64_t max_conns;     /* gw_conn.c: per-worker cap in force (fits RLIMIT_NOFILE) */
    struct gw_status_key *status_key; /* gw_token.c: key + HMAC pads, a secret page (no core dump) */
    cm_id_gen_t ids;
    _Atomic uint32_t node_id; /* the order ids' node (the fleet may claim another at run time) */
    /* This process's ids of node_id carry a millisecond past this: started_ms - 1, or
     * the floor the fleet took node_id over at (ids at or below it are another
     * gateway's, or an earlier holder's). Stored before node_id. */
    _Atomic int64_t node_since_ms;
    gw_worker_t *workers;
    unsigned nworkers;
    bool workers_running;
    bool workers_stopped; /* gw_workers_stop ran: a failed start stops them once, not twice */
    struct MHD_Daemon *admin;
    struct gw_admin_token *tokens; /* named admin tokens (gw_admin.c) */
    size_t ntokens;
    char admin_token_path[600];
    struct gw_audit *audit; /* versioned changes and the audit log (gw_audit.c) */
    uint64_t access_sample_ppm; /* sampled access log: lines per million requests */
    uint64_t body_limit;
    uint32_t max_held; /* held requests per worker: past it, buys are shed with 503 */
    atomic_bool ready;
    atomic_bool draining;
    atomic_bool leaving;    /* SIGTERM seen: /readyz 503 through server.drain_grace, the rest serves on */
    gw_config_t *loaded;    /* the configuration as last read from its sources (SIGHUP diffs it) */
    int64_t started_ms;
    gw_counters_t admin_ctr;
    uv_loop_t main_loop;
    struct gw_overload *ol; /* levels, limits config, routes (gw_overload.c) */
    struct gw_fair *fair;   /* start-window lotteries (gw_fair.c) */
};

/*
 * Per-request context: allocated when its head is in (gw_h1.c), freed once its
 * answer is rendered or its connection closed, recycled through a per-worker
 * free list. Fields before body_inline are zeroed on reuse; the rest is
 * written before it is read.
 */
typedef enum { GW_ST_BODY = 0, GW_ST_WAIT, GW_ST_DONE } gw_req_state_t;
/* The request header fields the gateway reads on every request (the buy
 * route's, every route's framing ones), found in the one walk over the
 * head's fields when it is in (gw_h1.c: head_strings); NULL = absent, else the
 * first of that name, but for xff: the last X-Forwarded-For field (read
 * through gw_req_xff, which joins them all when there are several).
 * Strings in the connection's buffer, valid until the answer. cl_conflict: a
 * second Content-Length with another value; te_count: Transfer-Encoding
 * headers seen; xff_count: X-Forwarded-For fields seen. */
typedef struct gw_known_hdrs {
    const char *content_length, *content_type, *idem_key, *xff, *admission;
    const char *transfer_encoding;
    const char *req_start; /* the last X-Request-Start (gw_ol_too_late) */
    bool cl_conflict;
    unsigned te_count, xff_count;
} gw_known_hdrs_t;
/* The methods the built-in routes take, from the parser's method number (no
 * string compares per request); any other is GW_VERB_OTHER (r->method names it). */
typedef enum { GW_VERB_OTHER = 0, GW_VERB_GET, GW_VERB_HEAD, GW_VERB_POST } gw_verb_t;

struct gw_req {
    gw_worker_t *w;
    struct gw_h1 *conn; /* NULL once the connection closed (a waiter keeps r) */
    const char *method, *url; /* the decoded path, without its query */
    gw_verb_t verb;   /* r->method as the router asks it */
    bool head_only;   /* HEAD: the answer's head only */
    bool close_after; /* the connection closes after this answer */
    bool ol_live;     /* counted in the worker's requests in progress (gw_ol_request_head) */
    bool trimmed;     /* close_after from the shut door's trim, the answer not out yet
                       * (counted in w->h1_door_trims until it is: gw_ol_trim_done) */
    gw_req_t *next; /* free list / wait lists */
    gw_route_t route;
    gw_req_state_t state;
    gw_conn_t *cn; /* the connection's guard entry (gw_conn.c), NULL if untracked */
    bool bad_media;
    bool replayed; /* a buy in the spool batch answers Idempotent-Replayed (gw_buy.c) */
    gw_prep_t *cached; /* a prepared answer (sold out, rate limited), sent instead */
    gw_reply_t cached_reply;
    uint64_t t0_ns; /* first handler call (latency histogram) */
    uint64_t ol_held;     /* dependency slots held (bit = gw_ol dependency index) */
    uint64_t ol_t0_us[3]; /* when the redis / spool / upstream slot was taken */
    struct gw_px_req *px; /* a proxied request in flight (gw_proxy.c) */
    unsigned px_route;    /* index into the routes, for GW_ROUTE_PROXY */
    gw_known_hdrs_t hdr; /* the head's known fields (gw_h1.c copies them in) */
    char id[INV_SALE_ID_MAX + 1]; /* sale or order id from the path (checked) */
    size_t body_len, body_cap;
    char *body;
    char body_inline[512];
    inv_reserve_req_t res;
    oq_order_t order;
    gw_resp_t resp;
};

/*
 * Starts the server: opens inventory, spool (replaying it), limiter, workers
 * and the admin listener. Returns 0, or a negative cm_err_t with the reason in
 * errbuf. Single-threaded init.
 */
int gw_server_start(gw_server_t *srv, gw_config_t *cfg, cm_conf_t *conf, char *errbuf,
                    size_t errlen);
/* Stops accepting, drains, and frees everything. */
void gw_server_stop(gw_server_t *srv);

/*
 * The first step of a graceful stop: /readyz answers 503 "draining" from now
 * on, so load balancers and orchestrators take this gateway out, while every
 * other route keeps serving until gw_server_stop. Thread-safe.
 */
void gw_server_leave(gw_server_t *srv);

/*
 * SIGHUP: reads the configuration again from the same sources (argv, the
 * environment, the --config file) and applies the keys whose value changed
 * since it was last read and that can change at run time (CM_OPT_RUNTIME keys
 * and log.level); keys that cannot are logged as needing a restart and keep
 * their value. A configuration that does not validate changes nothing.
 * Returns 0 with the counts in *applied and *restart, or CM_EINVAL (errors
 * logged). Main thread only (the one that calls gw_server_start/stop).
 */
int gw_server_reload(gw_server_t *srv, int argc, char **argv, unsigned *applied,
                     unsigned *restart);
/* Sums the workers' counters into out. Thread-safe. */
void gw_server_counters(gw_server_t *srv, gw_counters_t *out);

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

/*---- Connection guard (gw_conn.c): per-address and total caps, head deadline, body rate ----*/

/* A body gets this long before its average rate is held to server.body_min_rate. */
#define GW_CONN_BODY_GRACE_MS 2000

/* The table of open connections per client address, shared by the workers. Thread-safe. */
gw_ip_table_t *gw_ip_table_new(void);
void gw_ip_table_free(gw_ip_table_t *t);
/* Starts the worker's sweep timer on w->loop. Single-threaded init, before the loop runs. */
void gw_conn_guard_init(gw_worker_t *w);
/* Closes the sweep timer (the loop can then end). Loop thread only. */
void gw_conn_guard_close(gw_worker_t *w);
/* Frees the guard; after the worker's connections closed. */
void gw_conn_guard_free(gw_worker_t *w);
/* Decides the per-worker connection cap (server.max_connections, lowered to
 * fit RLIMIT_NOFILE) into srv->max_conns. Single-threaded init. */
void gw_conn_limit(gw_server_t *srv);
/*
 * An accepted socket from peer: the per-address cap and, at the total cap,
 * the eviction of an old connection. Returns the guard's entry (head phase),
 * or NULL: refused (close the socket). Loop thread.
 */
gw_conn_t *gw_conn_open(gw_worker_t *w, const struct sockaddr *peer);
/* The connection gw_h1_kill closes when the guard gives up on it. */
void gw_conn_set_owner(gw_conn_t *c, struct gw_h1 *owner);
/* The connection closed: forgets the entry (frees it). */
void gw_conn_release(gw_conn_t *c);
/* Hooks from the connection layer; all loop thread only, NULL-safe. */
void gw_conn_head_done(gw_conn_t *c); /* the head is in: body phase (rate held) */
void gw_conn_body(gw_conn_t *c, size_t n);
void gw_conn_busy(gw_conn_t *c);      /* the request is complete: being served */
void gw_conn_writing(gw_conn_t *c);   /* the answer is unsent: the client must read it */
void gw_conn_idle(gw_conn_t *c);      /* answered: keep-alive, waiting for the next head */
/* TCP_INFO's bytes_acked of a socket; UINT64_MAX if the kernel does not say (gw_tcp.c). */
uint64_t gw_tcp_bytes_acked(int fd);
/* Adds "connections": {open, evicted, head_timeouts, ...} to a stats object (json_t *). Thread-safe. */
void gw_conn_stats(gw_server_t *srv, void *json_obj);

/*---- Order status tokens (gw_token.c) ----*/

#define GW_TOKEN_BYTES 16 /* of the HMAC-SHA256 */
#define GW_TOKEN_LEN 22   /* base64url characters */

/*
 * Loads <data-dir>/status.key (or creates it, mode 0600; a file readable by
 * others is refused); with a Redis inventory, takes the fleet's key from
 * Redis (offering ours with SET NX). Returns 0 or a negative cm_err_t with
 * the reason in errbuf. Single-threaded init.
 */
int gw_status_key_load(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_status_key_free(gw_server_t *srv);
/* Writes the order's status token (GW_TOKEN_LEN chars + NUL) to out; returns its length
 * (0 without a key, or for an id longer than INV_ORDER_ID_MAX: no order has one).
 * Thread-safe. */
size_t gw_status_token(const gw_server_t *srv, const char *order_id, char *out);
/* The same MAC (GW_TOKEN_LEN chars + NUL) over any message (waiting-room tickets
 * and admission tokens). Thread-safe. */
size_t gw_token_mac(const gw_server_t *srv, const char *msg, char *out);
/* Constant-time check of a gw_token_mac of msg. */
bool gw_token_mac_ok(const gw_server_t *srv, const char *msg, const char *mac, size_t len);
/* Whether token is the order's status token (constant-time compare). Thread-safe. */
bool gw_status_token_ok(const gw_server_t *srv, const char *order_id, const char *token);
/* A page-rounded buffer kept out of core dumps (MADV_DONTDUMP), mlock'ed when
 * allowed; NULL on failure. gw_secret_free wipes (explicit_bzero) and unmaps it. */
void *gw_secret_alloc(size_t len);
void gw_secret_free(void *p, size_t len);

/* Workers (gw_http.c). */
int gw_workers_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_workers_stop(gw_server_t *srv);
/* The connection guards and the per-address table, which GET /admin/v1/stats
 * reads (gw_conn_stats): freed after the admin listener stopped, not with the
 * workers (gw_server_stop). */
void gw_workers_free_guards(gw_server_t *srv);
/* Answers a request that waited (Redis, fsync, an upstream): r->resp or
 * r->cached is ready. Loop thread of req->w only. */
void gw_req_finish(gw_req_t *req);

/*---- The public listener's HTTP/1.1 layer (gw_h1.c) ----*/

#define GW_H1_READ_BUF 8192  /* a connection's read buffer: the largest head (else 431) */
#define GW_H1_MAX_HEADERS 64 /* header fields per request (else 431) */
#define GW_H1_MAX_ARGS 32    /* query arguments kept per request (more are ignored) */
#define GW_H1_METHOD_MAX 31  /* a method token llhttp does not know (longer: 400) */
typedef struct gw_h1 gw_h1_t;
/* A header field of the head, NUL-terminated in the connection's buffer. */
typedef struct gw_hdr {
    const char *name, *value;
    size_t nlen, vlen;
} gw_hdr_t;
/* A query argument, %XX-decoded in place; value NULL: no '='. */
typedef struct gw_arg {
    const char *name, *value;
} gw_arg_t;
/*
 * The request parser's state and the head it read: llhttp over a
 * connection's buffer, header and URL spans recorded as they come (a span a
 * read cut in two continues in the buffer), NUL-terminated in place when the
 * head is in (the bytes after each span are consumed: ' ', ':', CR, LF), the
 * query split and the path %XX-decoded. on_head runs then (returning true
 * pauses the parser inside the message: the request ends there), on_body for
 * each body chunk; the parser pauses itself at each message's end (HPE_PAUSED).
 * gw_h1.c drives it per connection, tests/fuzz/fuzz_h1.c with reads cut
 * anywhere.
 */
typedef struct gw_h1_head {
    llhttp_t parser;
    char *buf; /* where the bytes are: spans are offsets into it */
    void *owner;
    bool (*on_head)(struct gw_h1_head *h);
    void (*on_body)(struct gw_h1_head *h, const char *at, size_t len);
    gw_hdr_t hdrs[GW_H1_MAX_HEADERS];
    unsigned nhdrs;
    bool in_value; /* the last span was a header value */
    bool too_many; /* more header fields than GW_H1_MAX_HEADERS: the parser pauses (431) */
    bool bad_name; /* an empty field name (": x", llhttp takes it): the parser pauses (400) */
    bool folded;   /* a value folded onto the next line (obs-fold): the parser pauses (400) */
    bool bare_lf;  /* the request line or the final empty line ends in a bare LF (400) */
    bool bad_path; /* a dot segment, an encoded slash or an encoded NUL in the path (400) */
    bool in_msg;   /* a message has begun (its first byte), until gw_h1_head_next */
    bool head_in;  /* the head is complete */
    bool msg_done; /* the message is complete (the parser paused after it) */
    size_t url_off, url_len;
    const char *url; /* the decoded path, once the head is in */
    /* the path as sent (after the origin-form reduction), kept only when it
     * has a '%' (url is then the decoded one, written over it), else NULL:
     * allocated by head_strings, valid while on_head runs, freed after it
     * unless a proxied route took it (gw_req_take_raw_path) */
    char *raw_path;
    /* an absolute-form target's authority (the host asked for), or NULL */
    const char *authority;
    char *query;     /* the query as sent (no '?', no fragment), or NULL; parsed in place
                      * into args on the first gw_req_arg(s): read it before that */
    bool args_parsed;
    gw_arg_t args[GW_H1_MAX_ARGS];
    unsigned nargs;
    size_t head_end; /* the buffer's bytes the head's strings need */
    /* found in head_strings' walk over the fields, with the buffer's strings */
    gw_known_hdrs_t known;
    const char *expect; /* the first Expect, or NULL */
    unsigned nhost;     /* Host fields (two: 400) */
} gw_h1_head_t;
void gw_h1_head_init(gw_h1_head_t *h, char *buf, void *owner);
/* Parses buf[off, off + n): the bytes consumed (less on a pause or an error), *err
 * llhttp's errno (HPE_OK, HPE_PAUSED, or the error). */
size_t gw_h1_head_execute(gw_h1_head_t *h, size_t off, size_t n, llhttp_errno_t *err);
/* The parser starts the current message again from buf[0] (gw_h1.c's other_method). */
void gw_h1_head_restart(gw_h1_head_t *h);
/* After a message: unpauses for the next one (whose bytes the caller moved to buf[0]). */
void gw_h1_head_next(gw_h1_head_t *h);
/* The first header field of that name (caseless), or NULL. */
const char *gw_h1_head_find(const gw_h1_head_t *h, const char *name);
/* Opens w's listening socket on sa (SO_REUSEPORT) on w's loop. -1 with errbuf. Init. */
int gw_h1_listen(gw_worker_t *w, const struct sockaddr *sa, char *errbuf, size_t errlen);
/* The worker's loop (gw_h1.c): until stopped and everything is closed. */
void gw_h1_run(gw_worker_t *w);
/* The end of each loop iteration (gw_http.c). */
void gw_http_check(gw_worker_t *w);
/* Starts or stops accepting (the overload door). Loop thread. */
void gw_h1_accepting(gw_worker_t *w, bool on);
/* Closes the listening socket (stop: no new connections). Loop thread. */
void gw_h1_stop_accepting(gw_worker_t *w);
/* Closes the listening socket and every connection. Loop thread. */
void gw_h1_stop(gw_worker_t *w);
/* Frees w's spare connection buffers (after its loop closed every connection). */
void gw_h1_worker_free(gw_worker_t *w);
/* Closes c now (the guard's deadlines and evictions). Loop thread. */
void gw_h1_kill(gw_h1_t *c);
int gw_h1_fd(gw_h1_t *c);
/* A time c's last read's bytes arrived after (0: not known; gw_h1.c). */
uint64_t gw_h1_read_after_ns(const gw_h1_t *c);
/* c's guard entry (gw_conn.c), NULL-safe. */
gw_conn_t *gw_h1_guard(gw_h1_t *c);
/* A waiting request's answer is ready: render it, go on with the connection. */
void gw_h1_finish(gw_req_t *r);
/* The reason phrase of a status code. */
const char *gw_h1_reason(unsigned status);
/* %XX-decodes s in place (other bytes, and %00, as they are); returns the new length. */
size_t gw_h1_unescape(char *s);
/* Splits a query string in place into at most max arguments; returns how many. */
unsigned gw_h1_parse_query(char *q, gw_arg_t *args, unsigned max);
/* An answer built piece by piece (the proxy's): status line and Date, headers,
 * then Content-Length (`announce`, none if < 0: a 204, or a HEAD whose length
 * is unknown), Connection and the body (none for HEAD). */
void gw_h1_status(gw_req_t *r, unsigned status);
void gw_h1_header(gw_req_t *r, const char *name, const char *value);
void gw_h1_body(gw_req_t *r, const char *body, size_t len, int64_t announce);
/* What a handler reads of its request; valid until the answer. */
const char *gw_req_header(const gw_req_t *r, const char *name); /* the first, or NULL */
const gw_hdr_t *gw_req_headers(const gw_req_t *r, unsigned *n);
bool gw_req_http10(const gw_req_t *r); /* an HTTP/1.0 request (no Host required) */
/* X-Forwarded-For as one list: r->hdr.xff when the request has at most one
 * such field, else all of them joined in order with ", " (a proxy that adds
 * its own field, as HAProxy's `option forwardfor` does, leaves the client's
 * before it: the first field alone is the client's to forge), in the
 * worker's xff_join, valid until the next call. Loop thread. */
const char *gw_req_xff(const gw_req_t *r);
const char *gw_req_arg(const gw_req_t *r, const char *name); /* "" for a bare name */
const gw_arg_t *gw_req_args(const gw_req_t *r, unsigned *n);
/* The query as the client sent it (no '?'), or NULL: none, or gw_req_arg(s) parsed it. */
const char *gw_req_query(const gw_req_t *r);
/* The path as the client sent it, when it differs from r->url (it had a %XX
 * escape), handed over to the caller (free it); else NULL: r->url is the path
 * as sent. Only while the head is handled (gw_http_head). Loop thread. */
char *gw_req_take_raw_path(gw_req_t *r);
/* An absolute-form target's authority (host[:port], as sent), or NULL: an
 * origin-form target, whose host is the Host field's. Loop thread. */
const char *gw_req_authority(const gw_req_t *r);
const struct sockaddr *gw_req_peer(const gw_req_t *r);
int gw_req_fd(const gw_req_t *r);
/* gw_http.c's side of a request, called by gw_h1.c. Loop thread. */
gw_req_t *gw_http_req_new(gw_worker_t *w, gw_h1_t *c);
void gw_http_req_free(gw_req_t *r);
/* The connection of a request still waiting (Redis, the spool) closed: its
 * method, path and header strings pointed into the connection's buffer,
 * which goes back to the free list for another connection to write. Sets
 * them and r->conn to NULL, so that a later reader crashes instead of reading
 * another connection's bytes (nothing reads them after the handler: the buy
 * copied what it needs into r->res and r->order). */
void gw_http_req_orphan(gw_req_t *r);
/* A body past `limit` (chunked, or not announced): 413 now, the connection
 * closing with the rest unread, as nginx's client_max_body_size. Loop thread. */
void gw_http_too_large(gw_req_t *r, uint64_t limit);
void gw_http_head(gw_req_t *r);  /* routes; may answer (GW_ST_DONE) before the body */
void gw_http_body(gw_req_t *r, const char *data, size_t n);
void gw_http_complete(gw_req_t *r); /* answers now (GW_ST_DONE) or waits (GW_ST_WAIT) */
/* Counts r's answer: reply, sent with `status` (the table's, but for a
 * proxied answer: see gw_counters_t.px_status). */
void gw_http_account(gw_req_t *r, gw_reply_t reply, int status);
/* The first read or accept of a loop iteration: the clock, the Date, the overload stamps. */
void gw_http_iteration(gw_worker_t *w);

/* The public routes (gw_buy.c). Fill req->resp, or hold req (return true if held). */
bool gw_buy_handle(gw_req_t *req);
/*
 * Validates the buy body r->body (NUL-terminated, r->body_len bytes): fills
 * r->res.user_id and r->res.qty and returns true, or returns false with the
 * 400 in r->resp. Pure (no socket or server state); thread-safe on r.
 */
bool gw_buy_parse_body(gw_req_t *r);
/* Its two halves (the fuzz target compares them): the in-place reading of the usual
 * body, true only when it is certain (user_id NUL-terminated, qty set), else false
 * with nothing decided; and jansson's, which takes any body and words the 400s. */
bool gw_buy_body_fast(const char *body, size_t len, char *user_id, uint32_t *qty);
bool gw_buy_parse_body_json(gw_req_t *r);
/* An Idempotency-Key: 1..INV_IDEM_KEY_MAX visible ASCII characters. Thread-safe. */
bool gw_idem_key_valid(const char *k, size_t len);
/* The worker's prepared sold-out answer for sale, or NULL. Loop thread only. */
gw_prep_t *gw_sold_out_response(gw_worker_t *w, const inv_sale_t *sale);
/* Once per loop iteration: starts the fsync of the waiting accepts (group commit). */
void gw_buy_loop_tick(gw_worker_t *w);
void gw_order_handle(gw_req_t *req);
void gw_sale_handle(gw_req_t *req);
/* GET /v1/sales/{id}/queue: the waiting room (gw_fair.h). Loop thread. */
void gw_queue_handle(gw_req_t *req);
/* Fills the sale JSON shown by GET /v1/sales/{id} (public) or the admin API (exact). */
size_t gw_sale_json(const inv_sale_info_t *s, bool admin, int64_t now_ms, char *buf, size_t len);
const char *gw_sale_state(const inv_sale_info_t *s, int64_t now_ms);

/* Admin tokens: a name (the audit's "who"), a role, the secret. */
typedef enum { GW_ROLE_NONE = 0, GW_ROLE_READ = 1, GW_ROLE_WRITE = 2 } gw_role_t;
typedef struct gw_admin_token {
    char name[33];
    gw_role_t role;
    char token[257];
    size_t len;
} gw_admin_token_t;

/* The dashboard's files, embedded at build time (generated gw_dashboard_assets.c). */
typedef struct gw_asset {
    const char *name; /* "index.html", "uPlot.iife.min.js", ... */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
} gw_asset_t;
extern const gw_asset_t gw_assets[];
extern const size_t gw_nassets;

/* Admin API (gw_admin.c). */
int gw_admin_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_admin_stop(gw_server_t *srv);

/* Parses a listen address "host:port" / "[v6]:port" into ss. */
int gw__parse_listen(const char *hostport, struct sockaddr_storage *ss, char *errbuf,
                     size_t errlen);
/* Adds relay/queue figures to the stats object (json_t *). */
void gw_server_stats_extra(gw_server_t *srv, void *json_obj);
/*
 * Operator cancel of a known order: returns 0 when the cancel was issued (it
 * completes through settlement, or at once without Kafka), 1 when the order
 * was already cancelled or failed (nothing changes), or a negative cm_err_t.
 */
int gw_server_cancel(gw_server_t *srv, const oq_order_t *ord, const char *reason);

/* The Kafka side (gw_queue.c): relay, outcomes, cancel commands. */
int gw__queue_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw__queue_stop(gw_server_t *srv);
int gw__cancel_hook(gw_server_t *srv, const oq_order_t *ord, const char *reason);
/* Fault injection: takes the embedded broker down or up. CM_ENOTFOUND without one. */
int gw__broker_set_down(gw_server_t *srv, bool down);
/* Fault injection: the embedded broker answers rtt_ms late (0 = normal). CM_ENOTFOUND without one. */
int gw__broker_set_rtt(gw_server_t *srv, int rtt_ms);
/* Wakes the relay after spool appends (once per loop iteration). Thread-safe. */
void gw__queue_notify(gw_server_t *srv);

/* Counts a rejected request's user and client key as heavy hitters. Loop thread of w. */
void gw_hitters_add(gw_worker_t *w, const char *user, const uint8_t *ipkey, size_t iplen);
/* Counts a 503 of overload control by its reason. Loop thread of w. */
void gw_count_overload(gw_worker_t *w, const char *reason);
/* Merges every worker's heavy hitters. Thread-safe. */
void gw_hitters_merge(gw_server_t *srv, cm_topk_t *users, cm_topk_t *ips);
/* Formats a client key of gw_client_key (4 bytes IPv4, 8 bytes an IPv6 /64). */
void gw_client_key_format(const uint8_t *key, size_t len, char *out, size_t cap);

/* The Prometheus exposition of /metrics (gw_metrics.c); malloc'd, caller frees. */
char *gw_metrics_text(gw_server_t *srv, size_t *len);

/*---- Overload control (gw_overload.c) ----*/

/* Dependency indexes of the per-worker limits; upstream i is GW_DEP_UPSTREAM + i. */
enum { GW_DEP_REDIS = 0, GW_DEP_SPOOL = 1, GW_DEP_UPSTREAM = 2 };

/* Parses the overload and proxy config. Single-threaded init, before the workers. */
int gw_overload_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_overload_stop(gw_server_t *srv);
/* Per-worker state and its timer on w->loop. Before the loop runs / loop thread at stop. */
void gw_ol_worker_start(gw_worker_t *w);
void gw_ol_worker_stop(gw_worker_t *w);
/* Start of a loop iteration's I/O (stamps the time requests are read). Loop thread. */
void gw_ol_iteration(gw_worker_t *w);
/* At the start and end of a loop iteration's I/O: whether the worker's door should shut (gw_overload.c). Loop thread. */
void gw_ol_door_look(gw_worker_t *w);
/* A connection was accepted (gw_conn_open): tells a crowd from a connection flood. Loop thread. */
void gw_ol_conn_started(gw_worker_t *w);
/* A request head was read: records its queuing delay. Loop thread. */
void gw_ol_request_head(gw_req_t *r);
/* r's trim (the shut door closes its connection after the answer) is no longer
 * pending: its answer is out (counted in h1_leaving now), or r is orphaned or
 * freed. No-op for an untrimmed r. Loop thread. */
void gw_ol_trim_done(gw_req_t *r);
/*
 * After routing: true when the request already waited too long in the kernel
 * to be served in time (gw_late_verdict): r holds a prepared 503 queue_time,
 * state GW_ST_DONE, to be answered now with its body unread (the connection
 * closes), or, on a connection a shut door keeps, its small body read and
 * dropped (the connection stays). Loop thread.
 */
bool gw_ol_too_late(gw_req_t *r);
/* After the buy body is parsed: DAGOR user priority. false: answered 503. Loop thread. */
bool gw_ol_buy_admit(gw_req_t *r);
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
 * else built into r->resp. `reason` and `msg` must be string literals (the
 * cache keys on their addresses); `degraded` adds X-Flashgate-Degraded: 1.
 * Loop thread of r->w.
 */
void gw_ol_overloaded(gw_req_t *r, const char *reason, const char *msg, bool degraded);
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
/* The parsed proxy.routes (borrowed, valid while the server runs). Thread-safe. */
const gw_route_def_t *gw_ol_routes(const gw_server_t *srv, size_t *n);
/*
 * Sets the latency target of route i of gw_ol_routes (ms, 0 none, at most its
 * timeout_ms: the caller checks; gw_alimit_set_target): each worker's limit
 * takes it at its next tick (10 ms, 100 ms when idle). Returns the one it
 * replaced. Until a restart: the configured one comes back then. Thread-safe.
 */
uint32_t gw_ol_route_set_target(gw_server_t *srv, size_t i, uint32_t target_ms);
/* The latency target in force of route i (ms, 0 none). Thread-safe. */
uint32_t gw_ol_route_target_ms(const gw_server_t *srv, size_t i);

/*---- Proxied routes (gw_proxy.c) ----*/

/* curl_global_init / cleanup: single-threaded init and exit. */
int gw_px_global_init(void);
void gw_px_global_cleanup(void);
/* The worker's curl multi handle on its loop / its cleanup once nothing is in flight. */
void gw_px_worker_start(gw_worker_t *w);
void gw_px_worker_stop(gw_worker_t *w);
/* Matches url against the routes' prefixes: true = r is GW_ROUTE_PROXY (and
 * takes the path as sent, gw_req_take_raw_path). Loop thread. */
bool gw_px_route(gw_req_t *r, const char *url);
/* The index of the route whose prefix matches the decoded path url by whole
 * segments, the longest one if several do; -1 if none. Pure. */
int gw_px_match(const gw_route_def_t *routes, size_t n, const char *url);
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
/* Renders a proxied request's own answer (an upstream's, a fallback) into its
 * connection's output: true with *reply and the *status sent (the upstream's
 * or the fallback's, not the reply table's); false: send r->resp / r->cached. */
bool gw_px_render(gw_req_t *r, gw_reply_t *reply, int *status);
/* r's connection closed (reset, error, the gateway's own close) while its
 * upstream transfer runs: the transfer ends now and r is finished (freed: r
 * is orphaned). false if r has no transfer running. Loop thread. */
bool gw_px_abort(gw_req_t *r);
/* Frees the proxy state of r (after its transfer ended). */
void gw_px_req_free(gw_req_t *r);

/* Applies limits from the config struct to the limiter. */
void gw_apply_limits(gw_server_t *srv);

/*
 * Compensation of a failed or cancelled order: records the release durably,
 * gives the units back (exactly once per order id), and only then marks the
 * order final; a release that fails is retried by the releaser, which marks it
 * final when done. Returns 0, 1 if the order was final already, or
 * CM_ENOTFOUND. May block (a Redis round trip): never on a worker loop.
 */
int gw_compensate(gw_server_t *srv, const char *order_id, const oq_order_t *o,
                  oq_status_t st, const char *reason);
/*
 * Gives back the units of an order that was reserved but never accepted (its
 * spool append failed): writes a "release" EVENT to the spool (replayed at
 * start; the relay keeps it until the release is done) and queues the release
 * to the releaser. Never blocks beyond one write(2). Thread-safe: worker loops.
 */
void gw_release_unaccepted(gw_server_t *srv, const oq_order_t *o, const char *why);

/*
 * The releaser (gw_release.c): one thread that calls inv_release for queued
 * orders until it returns 0 or CM_ENOTFOUND, backing off 50 ms .. 2 s, then
 * sets final_status (an oq_status_t, or -1 for none). With `commit` (a
 * release whose spool event the caller appended and could not wait for: a
 * worker loop's give-back), it first makes the spool's records durable
 * (oq_spool_commit: in fsync durability a group-commit fdatasync). start/stop:
 * single-threaded init and shutdown; push/pending/stats: thread-safe, never
 * block beyond a short mutex.
 */
int gw_releaser_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_releaser_stop(gw_server_t *srv);
void gw_releaser_push(gw_server_t *srv, const oq_order_t *o, int final_status,
                      const char *reason, bool commit);
/* true while a release for order_id is queued or running; a give-back
 * (oq_order_t.giveback) counts only if `givebacks`: one may end refused
 * (CM_ECONFLICT, a claimed order), so it does not stand for a cancel. */
bool gw_releaser_pending(gw_server_t *srv, const char *order_id, bool givebacks);
void gw_releaser_stats(gw_server_t *srv, uint64_t *pending, uint64_t *done, uint64_t *retries);

#endif
