/*
 * HTTP workers: one libuv loop per thread, each with its own listening socket
 * on the shared port (SO_REUSEPORT) and its own connections (gw_h1.c). See
 * gw_http.h for why this design.
 *
 * Request lifecycle (gw_h1.c calls these as the parser goes):
 *   gw_http_head: the head is in: allocate the context, route, check headers;
 *     may answer at once (too large, too late, refused proxy), body unread.
 *   gw_http_body: copy at most body_limit bytes, drop the rest.
 *   gw_http_complete: do the work; answer now (GW_ST_DONE) or wait
 *     (GW_ST_WAIT) until gw_req_finish.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_drain.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair_routes.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FREE_LIST_MAX 256
/* A stopping worker waits this long at most for the replies of its inventory calls. */
#define GW_STOP_INV_WAIT_MS 2000

/*---- request contexts ----*/

gw_req_t *gw_http_req_new(gw_worker_t *w, gw_h1_t *c)
{
    gw_req_t *r = w->free_reqs;
    if (r) {
        w->free_reqs = r->next;
        w->nfree--;
    } else {
        r = cm_xmalloc(sizeof(gw_req_with_buy_t)); /* r, then the buy path's part */
    }
    /* Only the header part needs clearing; buffers are written before read. */
    memset(r, 0, offsetof(gw_req_t, body_inline));
    r->w = w;
    r->conn = c;
    r->body = r->body_inline;
    r->body_cap = sizeof(r->body_inline);
    return r;
}

void gw_http_req_orphan(gw_req_t *r)
{
    gw_h1_trim_done(r); /* its connection closed: h1_open no longer counts it */
    r->conn = NULL;
    r->method = NULL;
    r->url = NULL;
    memset(&r->hdr, 0, sizeof(r->hdr));
    /* Nobody waits for a proxied answer: its transfer would hold an upstream
     * slot and connection until the route's timeout (nginx's
     * proxy_ignore_client_abort off). A buy is not ended: its reserve and
     * spool write go on, whoever hears the answer. Frees r. */
    gw_px_abort(r);
}

void gw_http_req_free(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    gw_h1_trim_done(r);
    gw_ol_release_all(r);
    gw_px_req_free(r);
    if (r->body != r->body_inline)
        free(r->body);
    if (w->nfree < FREE_LIST_MAX) {
        r->next = w->free_reqs;
        w->free_reqs = r;
        w->nfree++;
    } else {
        free(r);
    }
}

static bool json_media_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    /* as clients spell it first (a third of strncasecmp's instructions) */
    return (strncmp(ct, "application/json", n) == 0 ||
            strncasecmp(ct, "application/json", n) == 0) &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * Content-Length's value: a plain loop, not strtoull's locale and base
 * handling (~130 instructions a buy). llhttp refuses a Content-Length
 * that is not all digits (400), two of them and one beside
 * Transfer-Encoding: chunked; anything but digits reads as too large (413)
 * here all the same.
 */
static uint64_t content_length(const char *s)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return UINT64_MAX;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return p == s || *p != '\0' ? UINT64_MAX : v;
}

/*
 * A request body's framing, judged before a byte of it is read (RFC 9112
 * 6.1, 6.3), on every route (a GET's body is read and dropped, but it frames
 * the next request all the same). Two different
 * Content-Lengths, or one beside a Transfer-Encoding, are the
 * request-smuggling frames (llhttp refuses both first; kept here so the
 * rule does not depend on the parser's version). A Transfer-Encoding other
 * than exactly "chunked" (llhttp takes "gzip, chunked" as chunked):
 * nothing we can decode, 501. Refused with the reason; the connection closes
 * after the answer (its next bytes cannot be trusted).
 */
bool gw_http_framing_refused(gw_req_t *r)
{
    const char *te = r->hdr.transfer_encoding;
    if (te && (r->hdr.te_count > 1 || strcasecmp(te, "chunked") != 0)) {
        gw_resp_error(&r->resp, GW_R_NOT_IMPLEMENTED, NULL,
                      "Transfer-Encoding '%.64s%s' is not supported: send chunked or a Content-Length",
                      te, r->hdr.te_count > 1 ? ", ..." : "");
        return true;
    }
    if (te && r->hdr.content_length) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "Content-Length and Transfer-Encoding together: send one of them");
        return true;
    }
    if (r->hdr.cl_conflict) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "two Content-Length headers with different values");
        return true;
    }
    return false;
}

void gw_http_health(gw_server_t *srv, bool ready, gw_resp_t *out)
{
    if (!ready) {
        gw_resp_init(out, GW_R_OK);
        out->body_len = (size_t)snprintf(out->body, sizeof(out->body), "{\"status\":\"alive\"}");
        return;
    }
    gw_drain_phase_t ph = gw_drain_phase(atomic_load(&srv->life.leaving), atomic_load(&srv->life.draining));
    bool leaving = ph != GW_DRAIN_SERVING;
    const char *stale = gw_identity_stale(srv);
    if (gw_drain_ready(atomic_load(&srv->life.ready), ph, stale != NULL)) {
        gw_resp_init(out, GW_R_OK);
        out->body_len = (size_t)snprintf(out->body, sizeof(out->body),
                                         "{\"status\":\"ready\",\"inventory\":\"%s\"}",
                                         inv_backend_name(srv->stores.inv));
    } else {
        gw_resp_error(out, GW_R_NOT_READY, NULL, "%s",
                      leaving ? "draining: shutting down" : stale ? stale : "starting up");
    }
}

static void simple_handle(gw_req_t *r)
{
    gw_server_t *srv = r->w->srv;
    switch (r->route) {
    case GW_ROUTE_HEALTH:
    case GW_ROUTE_READY:
        gw_http_health(srv, r->route == GW_ROUTE_READY, &r->resp);
        break;
    case GW_ROUTE_ORDER:
        gw_order_handle(r);
        break;
    case GW_ROUTE_SALE:
        gw_sale_handle(r);
        break;
    case GW_ROUTE_QUEUE:
        gw_room_handle(r);
        break;
    default:
        gw_resp_error(&r->resp, GW_R_INTERNAL, NULL, "unrouted request");
        break;
    }
}

static const uint64_t lat_bounds_us[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;

static void inc(_Atomic uint64_t *c, uint64_t n)
{
    /* Only this worker writes its counters: a relaxed load and store need no
     * locked instruction; readers sum them (a torn read cannot happen on a
     * 64-bit atomic). */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* The access log's sampling: splitmix64 over the worker's own counter. */
static uint64_t next_rand(gw_worker_t *w)
{
    return cm_rand_splitmix64(&w->rng);
}

/* Counts an answer per route and status, its latency, and samples the access log. */
void gw_http_account(gw_req_t *r, gw_reply_t reply, int status)
{
    gw_worker_t *w = r->w;
    const char *method = r->method, *url = r->url;
    gw_counters_t *c = &w->ctr;
    uint64_t us = (cm_mono_ns() - r->t0_ns) / 1000;
    unsigned b = 0;
    while (b < GW_LAT_NBOUNDS && us > lat_bounds_us[b])
        b++;
    inc(&c->replies[reply], 1);
    inc(&c->route_replies[r->route][reply], 1);
    /* an upstream's answer or a fallback: by the status it went out with (a
     * 404 passed through, a 503 fallback), not the table's 200. Both are in
     * 200..599 (GW_PX_STATUS_MIN); the bound only guards the index. */
    int kind = gw_px_kind(reply);
    if (kind >= 0 && status >= GW_PX_STATUS_MIN && status <= GW_PX_STATUS_MAX)
        inc(&c->px_status[kind][status - GW_PX_STATUS_MIN], 1);
    inc(&c->lat_buckets[r->route][b], 1);
    inc(&c->lat_sum_us[r->route], us);
    uint64_t ppm = w->srv->pool.access_sample_ppm;
    if (ppm && next_rand(w) % 1000000 < ppm) {
        inc(&c->access_logged, 1);
        char path[160];
        /* cm_log_quote appends and does not terminate: without the NUL, %s
         * read on into whatever the stack held (a path logged with junk
         * after it, or past the array) */
        path[cm_log_quote(path, 0, sizeof(path), url)] = '\0';
        cm_log_info("access", "request",
                    "method=%s path=%s route=%s status=%d code=%s latency_us=%llu worker=%u",
                    method, path, gw_route_name(r->route), status, gw_reply_code(reply),
                    (unsigned long long)us, w->index);
    }
}

void gw_http_head(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    r->t0_ns = w->now_ns; /* the iteration's start: waiting behind its earlier requests counts */
    r->cn = gw_h1_guard(r->conn); /* its phases: gw_h1.c's (the body's: guard_body) */
    inc(&w->ctr.requests, 1);
    gw_ol_request_head(r);
    if (!gw_route(r, r->url) && !(w->px && gw_px_route(r, r->url)))
        gw_route_not_found(r, r->url); /* else a proxy.routes prefix: GW_ROUTE_PROXY */
    inc(&w->ctr.route_requests[r->route], 1);
    if (gw_ol_too_late(r))
        return; /* waited past its time: answered, body unread */
    if (r->state == GW_ST_BODY) {
        /* Every routed request, not only those that read a body: a GET's body
         * is read and dropped, but it frames the connection's next request as
         * much as a buy's does. Only the buy route reads r->hdr afterwards. */
        if (gw_http_framing_refused(r)) {
            r->state = GW_ST_DONE; /* answered, body unread: the connection closes */
            r->close_after = true;
            return;
        }
    }
    if (r->route == GW_ROUTE_PROXY && gw_px_head(r, r->method)) {
        r->close_after = true; /* refused from the head: body unread */
        return;
    }
    if (r->state == GW_ST_BODY && r->route != GW_ROUTE_PROXY) {
        /* Every route that reads a body or drops it (a GET's): no reading
         * past the limit, whatever the route (the proxy has proxy.max_body). */
        const char *cl = r->hdr.content_length;
        if (cl && content_length(cl) > w->srv->pool.body_limit) {
            /* refused before reading: the body stays unread */
            gw_req_too_large(r, w->srv->pool.body_limit);
            return;
        }
        if (r->route == GW_ROUTE_BUY && !json_media_type(r->hdr.content_type))
            r->bad_media = true;
    }
}

void gw_http_body(gw_req_t *r, const char *data, size_t n)
{
    gw_worker_t *w = r->w;
    if (r->state != GW_ST_BODY)
        return;
    if (r->route == GW_ROUTE_PROXY) {
        gw_px_body(r, data, n);
        return;
    }
    if (r->body_len + n > w->srv->pool.body_limit) {
        /* A chunked body (or one the head did not announce) passed the
         * limit: 413 now and close with the rest unread, as nginx's
         * client_max_body_size does; reading on to the end let one client
         * keep the worker parsing for as long as it kept sending. */
        gw_req_too_large(r, w->srv->pool.body_limit);
        return;
    }
    if (r->route != GW_ROUTE_BUY || r->bad_media) {
        r->body_len += n; /* counted toward the limit, not kept */
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = w->srv->pool.body_limit + 1;
        char *b = cm_xmalloc(cap);
        memcpy(b, r->body, r->body_len);
        if (r->body != r->body_inline)
            free(r->body);
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
}

void gw_http_complete(gw_req_t *r)
{
    if (r->state != GW_ST_BODY)
        return;
    if (r->route == GW_ROUTE_BUY) {
        if (r->bad_media) {
            gw_resp_error(&r->resp, GW_R_MEDIA_TYPE, NULL,
                          "Content-Type must be application/json");
        } else {
            r->body[r->body_len] = '\0';
            if (gw_buy_handle(r))
                return; /* waiting for Redis or an fsync: gw_req_finish answers */
        }
    } else if (r->route == GW_ROUTE_PROXY) {
        if (gw_px_handle(r, r->url, r->method))
            return; /* the upstream works: gw_req_finish answers */
    } else if (r->route == GW_ROUTE_REGISTER) {
        if (gw_reg_handle(r))
            return; /* its log's fdatasync: gw_req_finish answers */
    } else {
        simple_handle(r);
    }
    r->state = GW_ST_DONE;
}

/*---- the loop ----*/

/*
 * The Date of every answer, formatted once a second (a gmtime_r per answer,
 * with its time-zone lock, was ~3% of a sold-out answer's CPU under
 * libmicrohttpd, perf); prepared answers copy it in on use.
 */
static void date_tick(gw_worker_t *w)
{
    time_t now = time(NULL);
    if (now == w->date_s)
        return;
    w->date_s = now;
    gw_http_date(now, w->date);
}

void gw_http_iteration(gw_worker_t *w)
{
    if (w->in_iter)
        return;
    w->in_iter = true;
    date_tick(w);
    gw_ol_iteration(w);
    /* The door first: after a quota's throttled period the accept queue holds
     * its arrivals. */
    gw_ol_door_look(w);
    w->now_ns = cm_mono_ns();
}

/* After every loop iteration's I/O callbacks (gw_h1_run): the spool write of
 * the orders just reserved and the fsync batch, the door's second look, the
 * relay's nudge. */
void gw_http_check(gw_worker_t *w)
{
    /* First, so that a read started below counts from the next iteration. */
    w->iter_no++;
    w->stamp_prev_ns = w->stamp_last_ns;
    w->stamp_last_ns = w->now_ns;
    /* The answers first: a shut resets the accept queue in one shutdown() the
     * CPU quota cannot cut (~4.5 us a connection), and the debt it leaves can
     * hold the thread for 100-200 ms; the 202s of the iteration that shut
     * waited through it (`make bench-overload`, the cpu case). */
    gw_buy_loop_tick(w);
    /* the Redis reserves queued in this iteration go out now, before the loop
     * sleeps (libuv's prepare phase did it when uv_run was the loop) */
    inv_flush(w->inv);
    if (w->in_iter) {
        w->in_iter = false;
        gw_ol_door_look(w);
    }
    if (w->buy->notify_relay) {
        w->buy->notify_relay = false;
        gw_buy_relay_notify(w->srv);
    }
    /* between requests: this worker holds no per-sale rule set (gw_limit.h) */
    gw_limits_quiescent(w->srv->stores.limits, w->index);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void stop_try(gw_worker_t *w);

static void on_stop_timer(uv_timer_t *t)
{
    stop_try(t->data);
}

/*
 * A reserve whose outcome the closing worker cannot know (inv_orphan_fn): Redis
 * may hold its units for an order nobody has. Given back like an order the
 * spool refused: a give-back event in the spool (the next start replays it if
 * the releaser cannot send it before the process ends), then the releaser.
 */
static void on_orphan(void *ctx, const char *sale_id, const char *user_id, uint32_t qty,
                      const char *order_id)
{
    gw_worker_t *w = ctx;
    oq_order_t o;
    memset(&o, 0, sizeof(o));
    o.type = OQ_MSG_ORDER;
    snprintf(o.sale_id, sizeof(o.sale_id), "%s", sale_id);
    snprintf(o.user_id, sizeof(o.user_id), "%s", user_id);
    snprintf(o.order_id, sizeof(o.order_id), "%s", order_id);
    o.qty = qty;
    uint64_t idv;
    if (cm_id_parse(order_id, strlen(order_id), &idv) == 0)
        o.node_id = cm_id_node(idv);
    gw_release_unaccepted(w->srv, &o, "reserve outcome unknown at shutdown");
}

/* Stops the loop once no request waits and the inventory's calls are
 * answered (for at most GW_STOP_INV_WAIT_MS); re-checks every few ms until then. */
static void stop_try(gw_worker_t *w)
{
    gw_ol_worker_stop(w);
    gw_h1_stop_accepting(w);
    if (w->suspended > 0) {
        uv_timer_start(&w->stop_timer, on_stop_timer, 5, 0);
        return;
    }
    /* Replies still due (a reserve that timed out, a give-back under way):
     * closing now would lose them, and their units with them. */
    if (w->inv && inv_worker_inflight(w->inv) > 0) {
        uint64_t now = cm_mono_ms();
        if (!w->stop_inv_until_ms)
            w->stop_inv_until_ms = now + GW_STOP_INV_WAIT_MS;
        if (now < w->stop_inv_until_ms) {
            uv_timer_start(&w->stop_timer, on_stop_timer, 5, 0);
            return;
        }
    }
    gw_h1_stop(w);
    if (w->inv) {
        inv_worker_close_orphans(w->inv, on_orphan, w);
        w->inv = NULL;
    }
    gw_px_worker_stop(w);
    uv_close((uv_handle_t *)&w->stop_timer, close_cb);
    uv_close((uv_handle_t *)&w->wake, close_cb);
    gw_conn_guard_close(w);
}

static void on_wake(uv_async_t *a)
{
    gw_worker_t *w = a->data;
    uint64_t stall_ms = atomic_exchange(&w->debug_stall_ms, 0);
    if (stall_ms) {
        cm_log_warn("gw", "debug: worker loop stalled on request", "worker=%u ms=%llu", w->index,
                    (unsigned long long)stall_ms);
        struct timespec ts = {(time_t)(stall_ms / 1000), (long)(stall_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (atomic_load(&w->stopping))
        stop_try(w);
}

int gw_worker_debug_stall(gw_server_t *srv, unsigned index, uint64_t ms)
{
    /* srv->life.ready is stored after the workers start and cleared before they stop */
    if (!atomic_load(&srv->life.ready))
        return CM_EAGAIN;
    if (index >= srv->pool.nworkers)
        return CM_EINVAL;
    gw_worker_t *w = &srv->pool.workers[index];
    atomic_store(&w->debug_stall_ms, ms);
    uv_async_send(&w->wake);
    return 0;
}

/* What a worker holds once its loop has run to its end: its rule-set reader,
 * loop, buy part, prepared answers, free requests and transport state. */
static void worker_free(gw_server_t *srv, gw_worker_t *w)
{
    gw_limits_reader_offline(srv->stores.limits, w->index); /* reads no rule set any more */
    uv_loop_close(&w->loop);
    gw_buy_prep_free(w);
    CM_FREE(w->buy);
    for (unsigned k = 0; k < GW_SCOPE_COUNT; k++) {
        gw_prep_free(w->rl_cache[k].resp);
        w->rl_cache[k].resp = NULL;
    }
    gw_ol_cache_free(w);
    free(w->edge.xff_join);
    w->edge.xff_join = NULL;
    while (w->free_reqs) {
        gw_req_t *r = w->free_reqs;
        w->free_reqs = r->next;
        free(r);
    }
    gw_h1_worker_free(w);
}

static void *worker_main(void *arg)
{
    gw_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "fg-worker-%u", w->index);
    pthread_setname_np(pthread_self(), name);
    gw_h1_run(w);
    return NULL;
}

/*---- the public port: this gateway's workers', and only theirs ----*/

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static const char *sa_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    }
    return out;
}

/*
 * The workers share the port with SO_REUSEPORT, which lets any process of
 * the same user join them and take a share of the connections (a second
 * gateway started on the same --listen sold its own stock to them). Before
 * the workers bind, a probe socket without SO_REUSEPORT binds the address:
 * it fails while anyone listens there. Kept bound (not listening) until the
 * workers listen, it also picks the one port of a --listen HOST:0 for all of
 * them (*ss gets it).
 */
static int port_probe(gw_server_t *srv, struct sockaddr_storage *ss, int *probe, char *errbuf,
                      size_t errlen)
{
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = sa_len(ss);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)ss, sl) != 0 ||
        getsockname(fd, (struct sockaddr *)ss, &sl) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (e == EADDRINUSE)
            snprintf(errbuf, errlen,
                     "cannot listen on %s: another process listens there (a second gateway?); "
                     "only this gateway's own workers share its port: stop the other one or "
                     "choose another --listen",
                     srv->cfg->listen);
        else
            snprintf(errbuf, errlen, "cannot listen on %s: %s", srv->cfg->listen, strerror(e));
        return CM_EIO;
    }
    *probe = fd;
    return 0;
}

static bool addr_overlaps(const struct sockaddr_storage *ss, const uint8_t *a, size_t n)
{
    static const uint8_t any[16];
    const uint8_t *ours = ss->ss_family == AF_INET6
                              ? ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr
                              : (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
    return memcmp(ours, a, n) == 0 || memcmp(ours, any, n) == 0 || memcmp(a, any, n) == 0;
}

/*
 * After the workers listen: a listening socket on the port (and an
 * overlapping address) that is none of theirs is another process in the
 * group, one whose probe ran before ours listened (two started at once).
 * /proc/net/tcp{,6} lists the sockets of the network namespace with their
 * inodes. True: someone else is there (*inode says which socket).
 */
static bool port_shared(const gw_server_t *srv, const struct sockaddr_storage *ss,
                        unsigned long *inode)
{
    bool v6 = ss->ss_family == AF_INET6;
    unsigned port = ntohs(v6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                             : ((const struct sockaddr_in *)ss)->sin_port);
    FILE *f = fopen(v6 ? "/proc/net/tcp6" : "/proc/net/tcp", "re");
    if (!f)
        return false; /* no /proc: the probe alone */
    char line[512];
    bool shared = false;
    while (!shared && fgets(line, sizeof(line), f)) {
        char addr[40];
        unsigned lport, st;
        unsigned long ino;
        if (sscanf(line, " %*u: %39[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*u %*u %lu", addr, &lport,
                   &st, &ino) != 4 ||
            st != 0x0A /* TCP_LISTEN */ || lport != port)
            continue;
        /* the address as the kernel prints it: 32-bit words of the raw bytes */
        uint8_t a[16];
        size_t n = v6 ? 16 : 4;
        if (strlen(addr) != 2 * n)
            continue;
        for (size_t w = 0; w < n / 4; w++) {
            char word[9];
            memcpy(word, addr + 8 * w, 8);
            word[8] = '\0';
            uint32_t v = (uint32_t)strtoul(word, NULL, 16);
            memcpy(a + 4 * w, &v, 4);
        }
        if (!addr_overlaps(ss, a, n))
            continue;
        bool ours = false;
        for (unsigned i = 0; i < srv->pool.nworkers && !ours; i++) {
            struct stat sb;
            ours = srv->pool.workers[i].edge.lfd >= 0 &&
                   fstat(srv->pool.workers[i].edge.lfd, &sb) == 0 && sb.st_ino == ino;
        }
        if (!ours) {
            shared = true;
            *inode = ino;
        }
    }
    fclose(f);
    return shared;
}

/* <data-dir>/listen.addr: the bound address ("127.0.0.1:41311\n"), for
 * whoever started a --listen HOST:0. */
static void listen_addr_write(const gw_server_t *srv, const char *bound)
{
    char path[600], tmp[610];
    snprintf(path, sizeof(path), "%s/listen.addr", srv->cfg->data_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    bool ok = f && fprintf(f, "%s\n", bound) > 0;
    ok = (f && fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        cm_log_warn("gw", "cannot write listen.addr", "path=%s err=\"%s\"", path, strerror(errno));
        unlink(tmp);
    }
}

int gw_workers_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    int rc = gw_addr_parse_listen(srv->cfg->listen, &ss, errbuf, errlen);
    if (rc)
        return rc;
    int probe = -1;
    if ((rc = port_probe(srv, &ss, &probe, errbuf, errlen)))
        return rc;
    srv->pool.workers = cm_xcalloc(srv->pool.nworkers, sizeof(gw_worker_t));
    srv->conns.iptable = gw_ip_table_new();
    gw_conn_limit(srv);
    for (unsigned i = 0; i < srv->pool.nworkers; i++)
        srv->pool.workers[i].edge.lfd = srv->pool.workers[i].edge.efd = -1;
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_worker_t *w = &srv->pool.workers[i];
        w->srv = srv;
        w->index = i;
        w->buy = cm_xcalloc(1, sizeof(*w->buy));
        w->buy->spool_wait_tail = &w->buy->spool_wait;
        w->buy->sync_wait_tail = &w->buy->sync_wait;
        pthread_mutex_init(&w->hh_mu, NULL);
        w->rng = cm_mono_ns() ^ ((uint64_t)(i + 1) << 32);
        uv_loop_init(&w->loop);
        gw_conn_guard_init(w);
        /* Connection caps and deadlines (gw_conn.c), on our own accept (gw_h1.c). */
        if (gw_h1_listen(w, (struct sockaddr *)&ss, errbuf, errlen) != 0) {
            gw_conn_guard_close(w);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            gw_conn_guard_free(w);
            uv_loop_close(&w->loop);
            CM_FREE(w->buy);
            srv->pool.nworkers = i;
            gw_workers_stop(srv);
            close(probe);
            return CM_EIO;
        }
        date_tick(w);
        uv_timer_init(&w->loop, &w->stop_timer);
        w->stop_timer.data = w;
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        gw_ol_worker_start(w);
        size_t nroutes = 0;
        (void)gw_ol_upstreams(srv, &nroutes);
        if (nroutes)
            gw_px_worker_start(w);
        rc = inv_worker_open(srv->stores.inv, &w->loop, &w->inv);
        if (rc) {
            snprintf(errbuf, errlen, "inventory worker: %s", cm_strerror(rc));
            srv->pool.nworkers = i + 1;
            gw_workers_stop(srv);
            close(probe);
            return rc;
        }
    }
    close(probe);
    char bound[INET6_ADDRSTRLEN + 10];
    sa_text(&ss, bound, sizeof(bound));
    unsigned long other = 0;
    if (port_shared(srv, &ss, &other)) {
        snprintf(errbuf, errlen,
                 "cannot listen on %s: another process listens on %s too (socket inode %lu; a "
                 "second gateway started at the same time?); only this gateway's own workers "
                 "share its port",
                 srv->cfg->listen, bound, other);
        gw_workers_stop(srv);
        return CM_EIO;
    }
    listen_addr_write(srv, bound);
    cm_log_info("gw", "listening", "listen=%s workers=%u", bound, srv->pool.nworkers);
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        int e =
            pthread_create(&srv->pool.workers[i].thread, NULL, worker_main, &srv->pool.workers[i]);
        if (e == 0)
            continue;
        /* Fail the start rather than serve with fewer workers than asked (their share
         * of the SO_REUSEPORT traffic would wait unserved): run the loops that never
         * started to a stop here, then stop and join the ones that did. */
        snprintf(errbuf, errlen, "cannot start worker thread %u: %s", i, strerror(e));
        for (unsigned k = i; k < srv->pool.nworkers; k++) {
            gw_worker_t *w = &srv->pool.workers[k];
            atomic_store(&w->stopping, true);
            stop_try(w);
            gw_h1_run(w);
            gw_conn_guard_free(w);
            worker_free(srv, w);
        }
        srv->pool.nworkers = i;
        srv->pool.running = true;
        gw_workers_stop(srv);
        return CM_EIO;
    }
    srv->pool.running = true;
    return 0;
}

void gw_workers_counters(gw_server_t *srv, gw_counters_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!srv->pool.workers)
        return; /* the admin listener starts before the workers */
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_counters_t *c = &srv->pool.workers[i].ctr;
        for (int r = 0; r < GW_R_COUNT; r++)
            out->replies[r] += atomic_load_explicit(&c->replies[r], memory_order_relaxed);
        for (int k = 0; k < GW_PX_KINDS; k++)
            for (int s = 0; s < GW_PX_STATUS_SPAN; s++)
                out->px_status[k][s] +=
                    atomic_load_explicit(&c->px_status[k][s], memory_order_relaxed);
        for (int s = 0; s < GW_SCOPE_COUNT; s++)
            out->rate_limited[s] +=
                atomic_load_explicit(&c->rate_limited[s], memory_order_relaxed);
        out->requests += atomic_load_explicit(&c->requests, memory_order_relaxed);
        out->accepted_units += atomic_load_explicit(&c->accepted_units, memory_order_relaxed);
        out->access_logged += atomic_load_explicit(&c->access_logged, memory_order_relaxed);
        out->proxy_client_aborts +=
            atomic_load_explicit(&c->proxy_client_aborts, memory_order_relaxed);
        out->proxy_stale_conns += atomic_load_explicit(&c->proxy_stale_conns, memory_order_relaxed);
        for (int k = 0; k < GW_OLR_COUNT; k++)
            out->overload_reasons[k] +=
                atomic_load_explicit(&c->overload_reasons[k], memory_order_relaxed);
        for (int r = 0; r < GW_ROUTE_COUNT; r++) {
            out->route_requests[r] +=
                atomic_load_explicit(&c->route_requests[r], memory_order_relaxed);
            out->lat_sum_us[r] += atomic_load_explicit(&c->lat_sum_us[r], memory_order_relaxed);
            for (int k = 0; k < GW_R_COUNT; k++)
                out->route_replies[r][k] +=
                    atomic_load_explicit(&c->route_replies[r][k], memory_order_relaxed);
            for (int k = 0; k <= GW_LAT_NBOUNDS; k++)
                out->lat_buckets[r][k] +=
                    atomic_load_explicit(&c->lat_buckets[r][k], memory_order_relaxed);
        }
    }
}

void gw_workers_stop(gw_server_t *srv)
{
    if (!srv->pool.workers)
        return;
    if (srv->pool.stopped)
        return;
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_worker_t *w = &srv->pool.workers[i];
        atomic_store(&w->stopping, true);
        if (srv->pool.running) {
            uv_async_send(&w->wake);
        } else {
            stop_try(w);
            gw_h1_run(w);
        }
    }
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_worker_t *w = &srv->pool.workers[i];
        if (srv->pool.running)
            pthread_join(w->thread, NULL);
        worker_free(srv, w);
    }
    srv->pool.running = false;
    srv->pool.stopped = true;
}

void gw_workers_free_guards(gw_server_t *srv)
{
    for (unsigned i = 0; srv->pool.workers && i < srv->pool.nworkers; i++)
        gw_conn_guard_free(&srv->pool.workers[i]);
    gw_ip_table_free(srv->conns.iptable);
    srv->conns.iptable = NULL;
}
