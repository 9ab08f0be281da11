/*
 * HTTP workers: one libuv loop per thread, each driving its own
 * libmicrohttpd daemon in external-polling (epoll) mode on the shared port
 * (SO_REUSEPORT). See gw_internal.h for why this design.
 *
 * Request lifecycle (MHD calls the access handler several times):
 *   1st call, *req_cls == NULL: allocate the context, route, check headers.
 *   body calls: copy at most body_limit bytes, drop the rest.
 *   last call (upload_data_size == 0): do the work; queue the answer now
 *   (inline) or suspend; after a resume MHD calls again and we queue it.
 * The answer is never queued on the first call when a body follows: 0.9.75
 * would then close the connection (measured; docs/design.md).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/gw_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define FREE_LIST_MAX 256
/*
 * MHD's per-connection memory pool holds the request head and the read and
 * write buffers. 0.9.75 clears the whole pool on every request of a
 * keep-alive connection and the unused half of its read buffer once the head
 * is read: its default of 32 KiB made memset 4.6% of a sold-out answer's CPU,
 * and 16 KiB still cleared 24 KiB per request, half of the L1 data cache
 * (8 KiB: 4.5 -> 4.2 us per sold-out answer, bench/README.md). 8 KiB holds
 * ~7 KiB of request line and headers (more gets MHD's 431, docs/api.md),
 * like nginx's 8k large_client_header_buffers; bodies stream into our own buffer.
 */
#define GW_CONN_MEMORY (8 * 1024)

/*---- request contexts ----*/

static gw_req_t *req_alloc(gw_worker_t *w)
{
    gw_req_t *r = w->free_reqs;
    if (r) {
        w->free_reqs = r->next;
        w->nfree--;
    } else {
        r = cm_xmalloc(sizeof(*r));
    }
    /* Only the header part needs clearing; buffers are written before read. */
    memset(r, 0, offsetof(gw_req_t, body_inline));
    r->w = w;
    r->body = r->body_inline;
    r->body_cap = sizeof(r->body_inline);
    return r;
}

static void req_free(gw_req_t *r)
{
    gw_worker_t *w = r->w;
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

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    gw_worker_t *w = cls;
    w->answers++;
    gw_req_t *r = *req_cls;
    /* the next head's deadline starts now (r->cn is this connection's guard entry) */
    gw_conn_idle(r ? r->cn : gw_conn_of(c));
    if (!r)
        return;
    *req_cls = NULL;
    if (r->state == GW_ST_WAIT) {
        /* The connection died while suspended: the waiter still holds r. */
        r->conn = NULL;
        return;
    }
    req_free(r);
}

static bool json_media_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * One pass over the request headers for the buy route. Each
 * MHD_lookup_connection_value walks MHD's header list with a caseless compare
 * per entry (~200 instructions a lookup here, 3-4 per buy: ~5% of a sold-out
 * answer, bench/README.md third pass); one walk with our own test, length
 * first, finds them all.
 */
static bool hdr_is(const char *key, size_t len, const char *name, size_t nlen)
{
    return len == nlen && strncasecmp(key, name, nlen) == 0;
}

#define HDR_IS(key, len, lit) hdr_is(key, len, lit, sizeof(lit) - 1)

static enum MHD_Result buy_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)value_size;
    gw_req_t *r = cls;
    const char **slot = NULL;
    if (HDR_IS(key, key_size, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        slot = &r->hdr.content_length;
        if (*slot && strcmp(*slot, value) != 0)
            r->hdr.cl_conflict = true;
    } else if (HDR_IS(key, key_size, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        slot = &r->hdr.transfer_encoding;
        r->hdr.te_count++;
    } else if (HDR_IS(key, key_size, MHD_HTTP_HEADER_CONTENT_TYPE))
        slot = &r->hdr.content_type;
    else if (HDR_IS(key, key_size, "Idempotency-Key"))
        slot = &r->hdr.idem_key;
    else if (HDR_IS(key, key_size, "X-Forwarded-For"))
        slot = &r->hdr.xff;
    else if (HDR_IS(key, key_size, "X-Admission-Token"))
        slot = &r->hdr.admission;
    if (slot && !*slot)
        *slot = value;
    return MHD_YES;
}

/*
 * Content-Length's value: a plain loop, not strtoull's locale and base
 * handling (~130 instructions a buy). MHD 0.9.75 answers 400 (413 past 2^64)
 * before calling us when the first Content-Length is not all digits, except
 * beside a Transfer-Encoding (refused first, framing_refused) and in a second
 * Content-Length, where "-1" or "+99" reach us: anything but digits reads as
 * too large (413), as strtoull's saturation did before.
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
 * the next request all the same).
 * Two different Content-Lengths, or one beside a Transfer-Encoding, are the
 * request-smuggling frames: a proxy in front may have read the other length,
 * and the bytes we would take for the next request are part of this body (or
 * the reverse). MHD 0.9.75 takes the first Content-Length, or the chunked
 * coding, and goes on: a buy hidden that way was accepted
 * (tests/integration/14-http1.py). A Transfer-Encoding other than exactly
 * "chunked" MHD reads up to the close: nothing we can decode. Refused with
 * the reason; answering on the first call closes the connection, whose next
 * bytes cannot be trusted.
 */
static bool framing_refused(gw_req_t *r)
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

static void simple_handle(gw_req_t *r)
{
    gw_server_t *srv = r->w->srv;
    switch (r->route) {
    case GW_ROUTE_HEALTH:
        gw_resp_init(&r->resp, GW_R_OK);
        r->resp.body_len = (size_t)snprintf(r->resp.body, sizeof(r->resp.body),
                                            "{\"status\":\"alive\"}");
        break;
    case GW_ROUTE_READY: {
        /* braces: a declaration after a label is C23, and clang (make fuzz) refuses it in C11 */
        bool leaving = atomic_load(&srv->draining) || atomic_load(&srv->leaving);
        if (atomic_load(&srv->ready) && !leaving) {
            gw_resp_init(&r->resp, GW_R_OK);
            r->resp.body_len = (size_t)snprintf(r->resp.body, sizeof(r->resp.body),
                                                "{\"status\":\"ready\",\"inventory\":\"%s\"}",
                                                inv_backend_name(srv->inv));
        } else {
            gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "%s",
                          leaving ? "draining: shutting down"
                                                      : "starting up");
        }
        break;
    }
    case GW_ROUTE_ORDER:
        gw_order_handle(r);
        break;
    case GW_ROUTE_SALE:
        gw_sale_handle(r);
        break;
    case GW_ROUTE_QUEUE:
        gw_queue_handle(r);
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

/* xorshift64*: the access log's sampling. */
static uint64_t next_rand(gw_worker_t *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 2685821657736338717ull;
}

/* Counts an answer per route and status, its latency, and samples the access log. */
static void account(gw_worker_t *w, gw_req_t *r, gw_reply_t reply, const char *method,
                    const char *url)
{
    gw_counters_t *c = &w->ctr;
    uint64_t us = (cm_mono_ns() - r->t0_ns) / 1000;
    unsigned b = 0;
    while (b < GW_LAT_NBOUNDS && us > lat_bounds_us[b])
        b++;
    inc(&c->replies[reply], 1);
    inc(&c->route_replies[r->route][reply], 1);
    inc(&c->lat_buckets[r->route][b], 1);
    inc(&c->lat_sum_us[r->route], us);
    uint64_t ppm = w->srv->access_sample_ppm;
    if (ppm && next_rand(w) % 1000000 < ppm) {
        inc(&c->access_logged, 1);
        char path[160];
        cm_log_quote(path, 0, sizeof(path), url);
        cm_log_info("access", "request",
                    "method=%s path=%s route=%s status=%d code=%s latency_us=%llu worker=%u",
                    method, path, gw_route_name(r->route), gw_reply_status(reply),
                    gw_reply_code(reply), (unsigned long long)us, w->index);
    }
}

/* Queues the answer of a finished request: proxied, prepared or built. */
static enum MHD_Result answer(gw_worker_t *w, gw_req_t *r, struct MHD_Connection *conn,
                             const char *method, const char *url)
{
    unsigned pst;
    gw_reply_t prep;
    gw_conn_writing(r->cn);
    struct MHD_Response *pr = r->px ? gw_px_response(r, &pst, &prep) : NULL;
    if (pr) {
        account(w, r, prep, method, url);
        return MHD_queue_response(conn, pst, pr);
    }
    if (r->cached) {
        account(w, r, r->cached_reply, method, url);
        return MHD_queue_response(conn, (unsigned)gw_reply_status(r->cached_reply), r->cached);
    }
    account(w, r, r->resp.reply, method, url);
    return gw_resp_send_req(conn, &r->resp);
}

/* Answers r->resp before the body is read: MHD then closes the connection, as it should. */
static enum MHD_Result refuse_unread(gw_worker_t *w, gw_req_t *r, struct MHD_Connection *conn,
                                     const char *method, const char *url)
{
    r->state = GW_ST_DONE;
    account(w, r, r->resp.reply, method, url);
    gw_conn_writing(r->cn);
    return gw_resp_send_req(conn, &r->resp);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    (void)version;
    gw_worker_t *w = cls;
    gw_req_t *r = *req_cls;
    if (!r) {
        r = req_alloc(w);
        r->conn = conn;
        r->t0_ns = w->now_ns; /* the run's start: waiting behind the run's earlier requests counts */
        r->cn = gw_conn_of(conn);
        gw_conn_head_done(r->cn);
        *req_cls = r;
        inc(&w->ctr.requests, 1);
        gw_ol_request_head(r);
        if (!gw_route(r, url, method) && !(w->px && gw_px_route(r, url)))
            gw_route_not_found(r, url); /* else a proxy.routes prefix: GW_ROUTE_PROXY */
        inc(&w->ctr.route_requests[r->route], 1);
        if (gw_ol_too_late(r))
            return answer(w, r, conn, method, url); /* waited past its time: body unread */
        if (r->state == GW_ST_BODY) {
            /* Every routed request, not only those that read a body: a GET whose
             * body MHD reads and drops frames the connection's next request as
             * much as a buy does. Only the buy route reads r->hdr afterwards. */
            MHD_get_connection_values_n(conn, MHD_HEADER_KIND, buy_header, r);
            if (framing_refused(r))
                return refuse_unread(w, r, conn, method, url);
        }
        if (r->route == GW_ROUTE_PROXY && gw_px_head(r, method))
            return answer(w, r, conn, method, url); /* refused from the head: body unread */
        if (r->state == GW_ST_BODY && r->route == GW_ROUTE_BUY) {
            const char *cl = r->hdr.content_length;
            if (cl && content_length(cl) > w->srv->body_limit) {
                gw_resp_error(&r->resp, GW_R_TOO_LARGE, NULL, "body is larger than %llu bytes",
                              (unsigned long long)w->srv->body_limit);
                return refuse_unread(w, r, conn, method, url);
            }
            if (!json_media_type(r->hdr.content_type))
                r->bad_media = true;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        gw_conn_body(r->cn, *upload_data_size);
        if (r->state == GW_ST_BODY && r->route == GW_ROUTE_PROXY)
            gw_px_body(r, upload_data, *upload_data_size);
        if (r->state == GW_ST_BODY && r->route == GW_ROUTE_BUY && !r->too_large &&
            !r->bad_media) {
            size_t n = *upload_data_size;
            if (r->body_len + n > w->srv->body_limit) {
                r->too_large = true;
            } else {
                if (r->body_len + n + 1 > r->body_cap) {
                    size_t cap = w->srv->body_limit + 1;
                    char *b = cm_xmalloc(cap);
                    memcpy(b, r->body, r->body_len);
                    if (r->body != r->body_inline)
                        free(r->body);
                    r->body = b;
                    r->body_cap = cap;
                }
                memcpy(r->body + r->body_len, upload_data, n);
                r->body_len += n;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The request is complete. The connection guard moves it to "busy" only
     * when it waits (suspended); answered now, it goes from its body to
     * "writing" in answer() with no move in between. */
    if (r->state == GW_ST_BODY) {
        if (r->route == GW_ROUTE_BUY) {
            if (r->too_large) {
                gw_resp_error(&r->resp, GW_R_TOO_LARGE, NULL, "body is larger than %llu bytes",
                              (unsigned long long)w->srv->body_limit);
            } else if (r->bad_media) {
                gw_resp_error(&r->resp, GW_R_MEDIA_TYPE, NULL,
                              "Content-Type must be application/json");
            } else {
                r->body[r->body_len] = '\0';
                if (gw_buy_handle(r)) {
                    /* Suspended: waiting for Redis or an fsync; resumed by gw_req_finish. */
                    gw_conn_busy(r->cn);
                    return MHD_YES;
                }
            }
        } else if (r->route == GW_ROUTE_PROXY) {
            if (gw_px_handle(r, url, method)) {
                gw_conn_busy(r->cn);
                return MHD_YES; /* suspended: the upstream works; resumed by gw_req_finish */
            }
        } else {
            simple_handle(r);
        }
        r->state = GW_ST_DONE;
    }
    if (r->state == GW_ST_WAIT)
        return MHD_YES; /* spurious call while suspended */
    return answer(w, r, conn, method, url);
}

struct MHD_Response *gw_sold_out_response(gw_worker_t *w, const inv_sale_t *sale)
{
    for (unsigned i = 0; i < w->nsold_out; i++)
        if (w->sold_out_cache[i].sale == sale)
            return w->sold_out_cache[i].resp;
    if (w->nsold_out == CM_ARRAY_LEN(w->sold_out_cache))
        return NULL;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    gw_resp_t tmp;
    gw_resp_sold_out(&tmp, info.sale_id);
    struct MHD_Response *mr = gw_resp_prepare(&tmp); /* Content-Type, no-store */
    if (!mr)
        return NULL;
    gw_resp_redate(mr, NULL, w->date);
    w->sold_out_cache[w->nsold_out].sale = sale;
    w->sold_out_cache[w->nsold_out].resp = mr;
    w->nsold_out++;
    return mr;
}

/*---- the loop ----*/

static void on_timer(uv_timer_t *t);

/*
 * The Date of the prepared answers, formatted once a second: MHD formats one
 * per answer with gmtime_r, whose time-zone lock and conversion were ~3% of a
 * sold-out answer's CPU (perf). A response that carries a Date gets none from
 * MHD; answers built per request keep MHD's (adding ours would cost as much).
 */
static void date_tick(gw_worker_t *w)
{
    time_t now = time(NULL);
    if (now == w->date_s)
        return;
    char old[sizeof(w->date)];
    memcpy(old, w->date, sizeof(old));
    w->date_s = now;
    gw_http_date(now, w->date);
    for (unsigned i = 0; i < w->nsold_out; i++)
        gw_resp_redate(w->sold_out_cache[i].resp, old, w->date);
    for (unsigned k = 0; k < GW_SCOPE_COUNT; k++)
        if (w->rl_cache[k].resp)
            gw_resp_redate(w->rl_cache[k].resp, old, w->date);
}

/* One MHD run and what goes with each: the Date, the clock of the run, the
 * overload module's look at the run, fsync batches and the relay's nudge. */
static void run_mhd(gw_worker_t *w)
{
    w->need_run = false;
    date_tick(w);
    gw_ol_iteration(w);
    /* The door first: after a quota's throttled period the accept queue holds
     * its arrivals, and one MHD_run can take several periods to come back. */
    gw_ol_door_look(w);
    w->now_ns = cm_mono_ns();
    MHD_run(w->mhd);
    MHD_UNSIGNED_LONG_LONG to;
    int again = 0;
    while (MHD_get_timeout(w->mhd, &to) == MHD_YES && to == 0 && again++ < 8) {
        w->now_ns = cm_mono_ns();
        MHD_run(w->mhd);
    }
    gw_ol_door_look(w);
    /* Requests handled just now may wait for an fsync or the relay: start those
     * here, whichever phase of the loop called us (a timer's drive would else
     * wait for the check phase after the next, possibly blocking, poll). */
    gw_buy_loop_tick(w);
    if (w->notify_relay) {
        w->notify_relay = false;
        gw__queue_notify(w->srv);
    }
}

/*
 * Runs MHD while it has work, then re-arms the timer from MHD's own timeout.
 * Loop thread only.
 *
 * Each libuv iteration waits on MHD's epoll fd (the poll phase) and MHD_run
 * then waits again on the same set (epoll_wait with timeout 0): two waits and
 * the kernel's nested-epoll poll per iteration, ~4% of a sold-out answer
 * (bench/README.md, third pass). While runs keep answering requests, the next
 * run's own epoll_wait(0) is the only wait needed, so we run MHD again right
 * here, and go back to libuv (whose wait blocks, and whose idle time is the
 * overload module's measure of our load) when a run found nothing, when a
 * request waits on libuv's I/O (Redis, an upstream, an fsync), when a libuv
 * timer is due, and after GW_DRIVE_RUNS runs in any case (libuv's own I/O).
 */
#define GW_DRIVE_RUNS 32

static void drive(gw_worker_t *w)
{
    int t = uv_backend_timeout(&w->loop);
    uint64_t due = t < 0 ? UINT64_MAX : uv_now(&w->loop) + (uint64_t)t;
    for (unsigned runs = 1;; runs++) {
        uint64_t before = w->answers;
        run_mhd(w);
        /* A run that answered nothing: the crowd is thin (or only slow bytes
         * came), and another run now would most likely be an empty wait. */
        if (w->answers == before || runs >= GW_DRIVE_RUNS ||
            w->suspended > 0 || atomic_load_explicit(&w->stopping, memory_order_relaxed))
            break;
        uv_update_time(&w->loop);
        if (uv_now(&w->loop) >= due)
            break;
    }
    MHD_UNSIGNED_LONG_LONG to;
    if (MHD_get_timeout(w->mhd, &to) == MHD_YES)
        uv_timer_start(&w->timer, on_timer, to, 0);
    else
        uv_timer_stop(&w->timer);
}

static void on_timer(uv_timer_t *t)
{
    drive(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    drive(p->data);
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* only keeps the poll from blocking while a resume waits */
}

/* After every loop iteration's I/O callbacks: run MHD once for all resumed requests. */
static void on_check(uv_check_t *c)
{
    gw_worker_t *w = c->data;
    if (w->need_run)
        drive(w);
    uv_idle_stop(&w->idle);
}

void gw_req_finish(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    w->suspended--;
    if (!r->conn) {
        /* The client went away while we waited; MHD already forgot it. */
        req_free(r);
        return;
    }
    r->state = GW_ST_DONE;
    MHD_resume_connection(r->conn);
    w->need_run = true;
    /* The check phase runs MHD only after the next poll: when we are called
     * from a timer (a Redis call timing out), that poll would block until
     * unrelated I/O and the answer would wait. An active idle handle makes the
     * poll return at once (no syscall, no extra MHD run); on_check stops it. */
    if (!uv_is_active((uv_handle_t *)&w->idle))
        uv_idle_start(&w->idle, on_idle);
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

/* Stops the loop once no request waits; re-checks every few ms until then. */
static void stop_try(gw_worker_t *w)
{
    gw_ol_worker_stop(w); /* accepting again, so that MHD can quiesce */
    if (w->mhd && w->listen_fd < 0) {
        /* Stop accepting (loop thread: MHD is not thread-safe in external mode). */
        MHD_socket fd = MHD_quiesce_daemon(w->mhd);
        w->listen_fd = fd == MHD_INVALID_SOCKET ? -2 : fd;
    }
    if (w->suspended > 0) {
        drive(w);
        uv_timer_start(&w->stop_timer, on_stop_timer, 5, 0);
        return;
    }
    if (w->inv) {
        inv_worker_close(w->inv);
        w->inv = NULL;
    }
    gw_px_worker_stop(w);
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, close_cb);
    uv_close((uv_handle_t *)&w->timer, close_cb);
    uv_close((uv_handle_t *)&w->check, close_cb);
    uv_close((uv_handle_t *)&w->idle, close_cb);
    uv_close((uv_handle_t *)&w->stop_timer, close_cb);
    uv_close((uv_handle_t *)&w->wake, close_cb);
    gw_conn_guard_close(w);
}

static void on_wake(uv_async_t *a)
{
    gw_worker_t *w = a->data;
    if (atomic_load(&w->stopping))
        stop_try(w);
}

static void *worker_main(void *arg)
{
    gw_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "fg-worker-%u", w->index);
    pthread_setname_np(pthread_self(), name);
    drive(w); /* accept whatever arrived before the loop started */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

int gw__parse_listen(const char *hostport, struct sockaddr_storage *ss, char *errbuf,
                        size_t errlen)
{
    char host[128];
    unsigned port;
    if (gw_config_split_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(errbuf, errlen, "bad listen address '%s'", hostport);
        return CM_EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
    } else if (strcmp(host, "localhost") == 0) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        snprintf(errbuf, errlen, "listen host '%s' must be an IP address", host);
        return CM_EINVAL;
    }
    return 0;
}

/*
 * Starts one MHD daemon per worker on the shared port. MHD_USE_EPOLL without
 * MHD_USE_INTERNAL_POLLING_THREAD = external polling through MHD's epoll fd.
 */
struct MHD_Daemon *gw__mhd_start(const struct sockaddr *sa, unsigned flags, bool reuse,
                                 MHD_AccessHandlerCallback cb, void *cls, unsigned max_conn,
                                 unsigned timeout_s, MHD_RequestCompletedCallback done,
                                 MHD_AcceptPolicyCallback apc, const struct MHD_OptionItem *extra)
{
    static const struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    if (sa->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    return MHD_start_daemon(flags, 0, apc, cls, cb, cls, MHD_OPTION_SOCK_ADDR, sa,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)(reuse ? 1 : 0),
                            MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
                            timeout_s, MHD_OPTION_NOTIFY_COMPLETED, done, cls,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)GW_LISTEN_BACKLOG,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_CONN_MEMORY,
                            MHD_OPTION_ARRAY, extra ? extra : none, MHD_OPTION_END);
}

int gw_workers_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    struct sockaddr_storage ss;
    int rc = gw__parse_listen(srv->cfg->listen, &ss, errbuf, errlen);
    if (rc)
        return rc;
    srv->workers = cm_xcalloc(srv->nworkers, sizeof(gw_worker_t));
    /* MHD's idle timeout only where the connection guard does not cover every
     * phase (no minimum body rate: a stalled body); gw_conn.c says why. */
    unsigned timeout_s = srv->cfg->body_min_rate
                             ? 0
                             : (unsigned)((srv->cfg->connection_timeout_ms + 999) / 1000);
    srv->iptable = gw_ip_table_new();
    unsigned mhd_limit = gw_conn_mhd_limit(srv);
    for (unsigned i = 0; i < srv->nworkers; i++) {
        gw_worker_t *w = &srv->workers[i];
        w->srv = srv;
        w->index = i;
        w->listen_fd = -1;
        w->sync_wait_tail = &w->sync_wait;
        pthread_mutex_init(&w->hh_mu, NULL);
        w->rng = (cm_mono_ns() ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull)) | 1;
        uv_loop_init(&w->loop);
        gw_conn_guard_init(w);
        /* Connection caps and deadlines (gw_conn.c); MHD's own limit sits above ours. */
        struct MHD_OptionItem guard[] = {
            {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)gw_conn_notify, w},
            {MHD_OPTION_END, 0, NULL}};
        w->mhd = gw__mhd_start((struct sockaddr *)&ss, MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
                               true, access_cb, w, mhd_limit, timeout_s,
                               on_completed, gw_conn_accept, guard);
        if (!w->mhd) {
            snprintf(errbuf, errlen, "cannot listen on %s: %s", srv->cfg->listen,
                     strerror(errno ? errno : EADDRINUSE));
            gw_conn_guard_close(w);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            gw_conn_guard_free(w);
            srv->nworkers = i;
            gw_workers_stop(srv);
            return CM_EIO;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info || info->epoll_fd < 0) {
            snprintf(errbuf, errlen, "libmicrohttpd gave no epoll fd for %s", srv->cfg->listen);
            MHD_stop_daemon(w->mhd);
            w->mhd = NULL;
            uv_loop_close(&w->loop);
            srv->nworkers = i;
            gw_workers_stop(srv);
            return CM_EIO;
        }
        uv_poll_init(&w->loop, &w->poll, info->epoll_fd);
        w->poll.data = w;
        uv_poll_start(&w->poll, UV_READABLE, on_poll);
        uv_timer_init(&w->loop, &w->timer);
        w->timer.data = w;
        uv_timer_init(&w->loop, &w->stop_timer);
        w->stop_timer.data = w;
        uv_idle_init(&w->loop, &w->idle);
        uv_check_init(&w->loop, &w->check);
        w->check.data = w;
        uv_check_start(&w->check, on_check);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        gw_ol_worker_start(w);
        rc = inv_worker_open(srv->inv, &w->loop, &w->inv);
        if (rc) {
            snprintf(errbuf, errlen, "inventory worker: %s", cm_strerror(rc));
            srv->nworkers = i + 1;
            gw_workers_stop(srv);
            return rc;
        }
    }
    for (unsigned i = 0; i < srv->nworkers; i++) {
        int e = pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
        if (e == 0)
            continue;
        /* Fail the start rather than serve with fewer workers than asked (their share
         * of the SO_REUSEPORT traffic would wait unserved): run the loops that never
         * started to a stop here, then stop and join the ones that did. */
        snprintf(errbuf, errlen, "cannot start worker thread %u: %s", i, strerror(e));
        for (unsigned k = i; k < srv->nworkers; k++) {
            gw_worker_t *w = &srv->workers[k];
            atomic_store(&w->stopping, true);
            stop_try(w);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            MHD_stop_daemon(w->mhd);
            w->mhd = NULL;
            gw_conn_guard_free(w);
            if (w->listen_fd >= 0)
                close(w->listen_fd);
            w->listen_fd = -1;
            uv_loop_close(&w->loop);
        }
        srv->nworkers = i;
        srv->workers_running = true;
        gw_workers_stop(srv);
        return CM_EIO;
    }
    srv->workers_running = true;
    return 0;
}

void gw_workers_stop(gw_server_t *srv)
{
    if (!srv->workers)
        return;
    if (srv->workers_stopped)
        return;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        gw_worker_t *w = &srv->workers[i];
        atomic_store(&w->stopping, true);
        if (srv->workers_running) {
            uv_async_send(&w->wake);
        } else {
            stop_try(w);
            uv_run(&w->loop, UV_RUN_DEFAULT);
        }
    }
    for (unsigned i = 0; i < srv->nworkers; i++) {
        gw_worker_t *w = &srv->workers[i];
        if (srv->workers_running)
            pthread_join(w->thread, NULL);
        if (w->mhd)
            MHD_stop_daemon(w->mhd);
        gw_conn_guard_free(w);
        if (w->listen_fd >= 0)
            close(w->listen_fd);
        uv_loop_close(&w->loop);
        for (unsigned k = 0; k < w->nsold_out; k++)
            MHD_destroy_response(w->sold_out_cache[k].resp);
        w->nsold_out = 0;
        for (unsigned k = 0; k < GW_SCOPE_COUNT; k++) {
            if (w->rl_cache[k].resp)
                MHD_destroy_response(w->rl_cache[k].resp);
            w->rl_cache[k].resp = NULL;
        }
        gw_ol_cache_free(w);
        while (w->free_reqs) {
            gw_req_t *r = w->free_reqs;
            w->free_reqs = r->next;
            free(r);
        }
    }
    srv->workers_running = false;
    srv->workers_stopped = true;
    gw_ip_table_free(srv->iptable);
    srv->iptable = NULL;
}
