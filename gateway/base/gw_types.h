/*
 * The gateway's shared types, and no functions: the worker, the server and a
 * request, the reply, route and overload-reason tables their counters are
 * sized by, and a response. Every folder of gateway/ may include it; each
 * folder's functions are in its own header (docs/design.md "The gateway's
 * folders").
 */
#ifndef GW_TYPES_H
#define GW_TYPES_H

#include "common/cm_id.h"
#include "common/cm_topk.h"
#include "gateway/base/gw_config.h"
#include "gateway/base/gw_limit.h"
#include "inventory/inv.h"
#include "queue/oq_spool.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

typedef struct gw_server gw_server_t;
typedef struct gw_worker gw_worker_t;
typedef struct gw_req gw_req_t;
typedef struct gw_orders gw_orders_t;
typedef struct gw_conn gw_conn_t;
typedef struct gw_conn_guard gw_conn_guard_t;
typedef struct gw_ip_table gw_ip_table_t;
typedef struct gw_releaser gw_releaser_t;
typedef struct gw_h1 gw_h1_t;
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
    XX(IDENTITY_MISMATCH, 403, "identity_mismatch", 0)                                             \
    XX(REGISTRATION_CLOSED, 403, "registration_closed", 0)                                         \
    XX(NOT_REGISTERED, 403, "not_registered", 0)                                                   \
    XX(NOT_ELIGIBLE, 403, "not_eligible", 0)                                                       \
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
    XX(NOT_READY, 503, "not_ready", 1) /* /readyz starting or draining: not an error */            \
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
    XX(REGISTER, "register", "POST", "/v1/sales/{sale_id}/registrations")                          \
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

/* An HTTP Date value's length, "Sun, 06 Nov 1994 08:49:37 GMT" (gw_http_date). */
#define GW_DATE_LEN 29

/* A response under construction: status, JSON body, a few headers. */
typedef struct gw_resp {
    gw_reply_t reply;
    int status;
    char body[1024];
    size_t body_len;
    char headers[6][2][160]; /* name, value */
    unsigned nheaders;
} gw_resp_t;

/* A prepared answer: bytes rendered once, the Date brought to the second on use. */
typedef struct gw_prep {
    char *buf;       /* head (no blank line), then "\r\n" and the body */
    size_t len;      /* all of buf */
    size_t head_len; /* the head's bytes */
    size_t date_off; /* the Date value in the head */
    time_t date_s;   /* the second the Date says */
} gw_prep_t;
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

/* The transport's part of a worker (gateway/edge/: gw_h1.c, gw_conn.c): the
 * listener, the epoll set, the connection lists and buffers. */
typedef struct gw_worker_edge {
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
    char *xff_join; /* gw_req_xff's buffer (GW_H1_READ_BUF), allocated on first use */
    gw_conn_guard_t *guard; /* gw_conn.c: caps and deadlines of this worker's connections */
} gw_worker_edge_t;

/* The buy path's part of a worker (gateway/buy/gw_buy.c). */
typedef struct gw_worker_buy {
    inv_sale_memo_t sale_memo; /* the buy path's last sale (inv_sale_find_memo) */
    bool notify_relay; /* appends happened this iteration */
    /* The spool batch: reserved orders held until the end of the loop
     * iteration writes their records with one write(2) */
    gw_req_t *spool_wait, **spool_wait_tail;
    uint64_t spool_wait_bytes; /* their records' bound (oq_spool_order_bound): the room they hold */
    /* fsync group commit: requests whose record is written and waits for a sync */
    gw_req_t *sync_wait, **sync_wait_tail;
    oq_pos_t sync_wait_end; /* where their last record ends */
    bool sync_running;
    uv_work_t sync_work;
    /* the batch's admission claims: the rooms' fdatasync, run beside sync_work's */
    uv_work_t claim_work;
    unsigned sync_pending; /* works of the batch not yet finished (sync_after) */
    gw_req_t *sync_batch;
    oq_pos_t sync_upto; /* the batch's end: its sync waits for these records only */
    int sync_result;
    /* Prepared 410 sold_out answers, one per sale: 99% of a sale's crowd gets one. */
    struct {
        const inv_sale_t *sale;
        gw_prep_t *resp;
    } sold_out_cache[32];
    unsigned nsold_out;
    /* Prepared 425 sale_not_started answers, one per sale, each for the
     * Retry-After it says (whole seconds to the start): rebuilt when that
     * second changes; a sale past the 32 takes the slot not_started_next. */
    struct {
        const inv_sale_t *sale;
        uint64_t retry;
        gw_prep_t *resp;
    } not_started_cache[32];
    unsigned nnot_started, not_started_next;
    /* Prepared 404 unknown_sale answers, one per sale id asked for (a crowd
     * polling a sale not created yet asks for one id); past the 8 the slot
     * unknown_next is made again. */
    struct {
        char id[INV_SALE_ID_MAX + 1];
        gw_prep_t *resp;
    } unknown_cache[8];
    unsigned nunknown, unknown_next;
} gw_worker_buy_t;

/* The overload control's part of a worker (gateway/overload/gw_overload.c):
 * prepared 503 overloaded answers, one per (reason, message, degraded,
 * Retry-After), so a shed crowd costs no response building. Not behind
 * w->ol: the buy path's in-flight cap answers 503 where w->ol is NULL too. */
typedef struct gw_worker_ol_cache {
    struct {
        gw_ol_reason_t reason;
        const char *msg;
        unsigned retry;
        bool degraded;
        gw_prep_t *resp;
    } entry[GW_OL_CACHE];
    unsigned n;
} gw_worker_ol_cache_t;

/* One worker thread. The fields every folder reads stay at the top; each
 * folder's own state is in its part (edge, buy, ol_cache, and the pointers
 * ol and px to state private to overload/ and proxy/). */
struct gw_worker {
    gw_server_t *srv;
    unsigned index;
    pthread_t thread;
    uv_loop_t loop;   /* timers, Redis, upstreams, the thread pool: run by gw_h1_run */
    uv_async_t wake; /* stop */
    uv_timer_t stop_timer;
    uint64_t stop_inv_until_ms; /* stopping: wait for the inventory's calls until (mono ms) */
    bool in_iter;      /* the iteration's first read or accept was stamped */
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
    /* Liveness: libuv's monotonic ms (uv_now) at the top of the loop's last
     * turn, 0 while the loop is not running. Stored once a turn, relaxed:
     * only this worker writes it; gateway/ctl/gw_liveness.c reads it. */
    _Atomic uint64_t beat_ms;
    /* PUT /admin/v1/debug/stall: ms to sleep on this loop at its next wake. */
    _Atomic uint64_t debug_stall_ms;
    inv_worker_t *inv;
    gw_counters_t ctr;
    gw_req_t *free_reqs; /* per-worker free list of request contexts */
    unsigned nfree;
    /* Requests held (waiting for the spool write, Redis, an fsync, an upstream)
     * until gw_req_finish; gw_overload.c reads it. */
    uint32_t suspended;
    atomic_bool stopping;
    gw_rl_cache_t rl_cache[GW_SCOPE_COUNT]; /* the last 429 per scope, prepared */
    /* This second's Date header (gw_http_date), set at the start of each loop
     * iteration's I/O; the prepared answers take it on use (gw_prep_redate). */
    char date[GW_DATE_LEN + 1];
    time_t date_s;
    /* Heavy hitters among rejected requests (users, client addresses). Written
     * by this worker under hh_mu (uncontended but for a reader), merged on read. */
    pthread_mutex_t hh_mu;
    cm_topk_t hh_users, hh_ips;
    uint64_t rng; /* access-log sampling */
    gw_worker_edge_t edge; /* gateway/edge/ */
    gw_worker_buy_t buy;   /* gateway/buy/ */
    gw_worker_ol_cache_t ol_cache; /* gateway/overload/ */
    struct gw_ol_worker *ol; /* overload control (gw_overload.c) */
    struct gw_px_worker *px; /* proxied routes (gw_proxy.c); NULL without routes */
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
    struct gw_ring *ring;   /* gw_ring.c: the dashboard's history; NULL until started */
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
    /* The admin listener (gateway/ctl): its daemon, tokens, audit log and answers. */
    struct gw_server_admin {
        struct MHD_Daemon *daemon;
        struct gw_admin_token *tokens; /* named admin tokens (gw_admin_token.c) */
        size_t ntokens;
        char token_path[600];
        struct gw_audit *audit; /* versioned changes and the audit log (gw_audit.c) */
        gw_counters_t ctr;      /* the admin API's answers by code (only replies[]) */
    } admin;
    uint64_t access_sample_ppm; /* sampled access log: lines per million requests */
    uint64_t body_limit;
    uint32_t max_held; /* held requests per worker: past it, buys are shed with 503 */
    atomic_bool ready;
    atomic_bool draining;
    atomic_bool leaving;    /* SIGTERM seen: /readyz 503 through server.drain_grace, the rest serves on */
    gw_config_t *loaded;    /* the configuration as last read from its sources (SIGHUP diffs it) */
    int64_t started_ms;
    uv_loop_t main_loop;
    struct gw_overload *ol; /* levels, limits config, routes (gw_overload.c) */
    struct gw_fair *fair;   /* start-window lotteries (gw_fair.c) */
    struct gw_identity *identity; /* the buyer's identity (gw_identity.c) */
    struct gw_elig *elig;         /* per-sale eligibility rules (gw_elig.c) */
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
    const char *authorization; /* the first Authorization (gw_identity.c, the buyer's token) */
    bool cl_conflict;
    unsigned te_count, xff_count;
    unsigned auth_count; /* Authorization fields seen (two: gw_identity.c refuses the request) */
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
                       * (counted in w->edge.h1_door_trims until it is: gw_ol_trim_done) */
    gw_req_t *next; /* free list / wait lists */
    gw_route_t route;
    gw_req_state_t state;
    gw_conn_t *cn; /* the connection's guard entry (gw_conn.c), NULL if untracked */
    bool bad_media;
    bool replayed; /* a buy in the spool batch answers Idempotent-Replayed (gw_buy.c) */
    /* the buy's core state between its events (gw_buy_core_t of
     * gateway/buy/gw_buy_core.h, which this layer does not include) */
    unsigned char buy_core[4];
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
    /* The person behind res.user_id: identity.person_claim of the verified
     * token, else the user itself (header and none modes, a token without
     * the claim). Set by the identity step (gw_identity_check and
     * gw_identity_buy) and, with identity off, by the buy path after the
     * body's parse; read only after one of them. */
    char person[INV_USER_ID_MAX + 1];
    uint64_t adm_jti; /* the admission token this buy holds claimed (gw_buy.c), 0 = none */
    uint64_t adm_fp, adm_nonce; /* that claim's key fingerprint and nonce (gw_fair.h) */
    /* The verified token's eligibility facts (id_result_t.eligible and
     * created_at; 0 in header mode and without a token), set with person by
     * the identity step; read only after it (gw_elig_check). */
    uint32_t eligible;
    int64_t created_at;
    oq_order_t order;
    oq_pos_t spool_end; /* where the spool write that holds order's record ends (gw_buy.c) */
    gw_resp_t resp;
};

#endif
