/*
 * Non-core routes (proxy.routes): requests whose path starts with a route's
 * prefix (the longest that matches: gw_px_match) are reverse-proxied to its
 * upstream, their path and query as the client sent them (gw_px_url),
 * without blocking the worker.
 *
 * libcurl's multi interface runs on each worker's own libuv loop, as in
 * curl's docs/examples/multi-uv.c: CURLMOPT_SOCKETFUNCTION starts and stops
 * a uv_poll per socket curl wants watched, CURLMOPT_TIMERFUNCTION arms one
 * uv_timer, and both call curl_multi_socket_action. The request is held
 * (its connection reads nothing) while the upstream works and answered on
 * the same loop (gw_req_finish), like a Redis call. Keep-alive: the multi handle keeps its
 * connection cache for the worker's life, at most proxy.max_connections per
 * upstream host (CURLMOPT_MAX_HOST_CONNECTIONS; more wait inside curl).
 *
 * Overload: each route's upstream is a dependency with an adaptive limit and
 * a breaker (gw_overload.c); the degradation level decides from the route's
 * criticality whether it is served, answered with its fallback, or refused
 * (at level 3 from the request head, before the body is read). A degraded or
 * shed answer carries X-Flashgate-Degraded: 1. A fallback is counted as
 * degraded by its cause (answer_fallback), never as the 503 it stands in for.
 *
 * Headers: hop-by-hop ones (RFC 9110 7.6.1: Connection and the fields it
 * names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) are
 * dropped both ways; Host becomes the upstream's (curl sets it), the
 * original goes to X-Forwarded-Host (a trusted proxy's own X-Forwarded-Host
 * instead, forwarded_host); X-Forwarded-For gets the peer appended to a
 * trusted proxy's list, and is the peer alone from anyone else (append_xff);
 * X-Real-IP is the client address the gateway decided on; the other fields
 * that name the client, its scheme or the path to serve are the gateway's,
 * dropped from the request (gateway_field), X-Forwarded-Proto/Port/Ssl kept
 * only from a trusted proxy (scheme_fields).
 * The upstream's answer fields are checked before they are passed on
 * (on_header); trailer fields are dropped. Bodies both ways are capped at proxy.max_body: a request
 * body past it is a 413 and the connection closes, its rest unread. A GET or HEAD whose head
 * announces a body is a 400 the same way (gw_px_head).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* The upstream's answer header block we keep, at most (nginx's proxy_buffer_size
 * is 4-8 KiB; a JWT Set-Cookie or a long Content-Security-Policy fits): past
 * it the exchange fails with a 502, as nginx's "upstream sent too big header". */
#define PX_HDR_BYTES_MAX (16u * 1024u)
#define PX_HDRS_MAX 128u

/* One upstream socket curl opened (px_open_socket), for the check before
 * each request (px_prereq): where it goes, and its local port once known. */
typedef struct px_conn {
    curl_socket_t fd;
    int rport, lport; /* lport 0: not looked up yet */
    char rip[INET6_ADDRSTRLEN];
} px_conn_t;

typedef struct gw_px_worker {
    gw_worker_t *w;
    CURLM *multi;
    uv_timer_t timer;
    bool stopped;
    px_conn_t *conns; /* every upstream socket curl holds open, kept or in use */
    size_t nconns, cap_conns;
} gw_px_worker_t;

/* One watched socket. */
typedef struct px_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    gw_px_worker_t *px;
} px_sock_t;

typedef enum { PX_NONE = 0, PX_SERVE, PX_SHED } px_action_t;
typedef struct gw_px_req gw_px_req_t;

struct gw_px_req {
    gw_req_t *r;
    const gw_proxy_route_t *route;
    unsigned idx;
    px_action_t action;
    /* the level that decided PX_SHED: the answer's reason and counter name it,
     * not the level in force once the body has come (it may have moved since) */
    gw_level_t shed_level;
    bool head_only;
    bool has_body; /* the head announced one (Content-Length above 0 or Transfer-Encoding) */
    CURL *easy;
    struct curl_slist *hdrs;
    char *req_body;
    size_t req_len, req_cap;
    char *resp_body;
    size_t resp_len, resp_cap;
    bool resp_too_large;
    const char *resp_bad;     /* why the upstream's answer was refused (502), or NULL */
    char *(*resp_hdrs)[2];    /* name and value, one allocation each header (name first) */
    unsigned nresp_hdrs, cap_resp_hdrs;
    size_t resp_hdr_bytes;    /* their total, at most PX_HDR_BYTES_MAX */
    bool head_done;           /* the empty line after the head came: later fields are trailers */
    bool in_head;             /* a status line came, the empty line after its head not yet */
    bool interim;             /* the last status line was a 1xx's: another head follows */
    /* the answer to send: an upstream's (resp_hdrs, resp_body) or the fallback */
    bool answered, fallback;
    bool in_multi; /* the transfer runs (added to the worker's multi handle) */
    bool stale_conn; /* px_prereq refused the kept connection curl picked */
    bool retried;    /* and the request went again on a fresh one */
    bool sent;       /* px_prereq let the request go out on a connection */
    bool idempotent; /* RFC 9110 9.2.2: not a POST or PATCH (may be sent twice) */
    char *raw_path;  /* the path as sent if it had a %XX escape (gw_px_url), else NULL */
    unsigned status;
    gw_reply_t reply;
};

/*---- the curl <-> libuv glue ----*/

static void check_done(gw_px_worker_t *px);

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_sock(uv_poll_t *p, int status, int events)
{
    px_sock_t *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    gw_px_worker_t *px = s->px;
    curl_multi_socket_action(px->multi, s->fd, flags, &running);
    check_done(px);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
    (void)easy;
    gw_px_worker_t *px = userp;
    px_sock_t *s = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, sock_closed);
            curl_multi_assign(px->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = cm_xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->px = px;
        if (uv_poll_init_socket(&px->w->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(px->multi, fd, s);
    }
    int ev = (action & CURL_POLL_IN ? UV_READABLE : 0) | (action & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, on_sock);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    gw_px_worker_t *px = t->data;
    int running;
    curl_multi_socket_action(px->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(px);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    gw_px_worker_t *px = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&px->timer);
    else /* 0: on the next loop iteration (never call curl from inside curl) */
        uv_timer_start(&px->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/*
 * Kept connections and what an upstream sends after its answer's end.
 *
 * libcurl 7.88 looks at a cached connection for a close or stray bytes at
 * most once a second (prune_dead_connections), so bytes an upstream sent past
 * its answer's end (a body to a HEAD, a 204 or 304 with one, a Content-Length
 * shorter than what it wrote) sat in the kernel until the connection's next
 * request, another client's, read them as its answer: the upstream's forged
 * or stale response went to the wrong client, and every answer after it on
 * that connection was one late. nginx closes a kept upstream connection that
 * becomes readable while idle (ngx_http_upstream_keepalive_close_handler).
 * Here, just before a request goes out on a connection (CURLOPT_PREREQFUNCTION,
 * on a kept one and a new one alike), a peek at its socket: anything to read
 * there (bytes, or the upstream's close) means the connection cannot frame
 * an answer to this request, so the transfer stops, curl closes that
 * connection (a premature end) and the request goes once more on a fresh one
 * (px_complete). curl names the connection by its addresses only: the socket
 * is found among the ones it opened (px_open_socket, px_close_socket).
 */
static curl_socket_t px_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
    gw_px_worker_t *px = userp;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd == CURL_SOCKET_BAD)
        return fd;
    if (px->nconns == px->cap_conns) {
        px->cap_conns = px->cap_conns ? px->cap_conns * 2 : 16;
        px->conns = cm_xrealloc(px->conns, px->cap_conns * sizeof(*px->conns));
    }
    px_conn_t *c = &px->conns[px->nconns++];
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    if (a->family == AF_INET) {
        const struct sockaddr_in *in = (const void *)&a->addr;
        c->rport = ntohs(in->sin_port);
        inet_ntop(AF_INET, &in->sin_addr, c->rip, sizeof(c->rip));
    } else if (a->family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)&a->addr;
        c->rport = ntohs(in6->sin6_port);
        inet_ntop(AF_INET6, &in6->sin6_addr, c->rip, sizeof(c->rip));
    }
    return fd;
}

static int px_close_socket(void *userp, curl_socket_t fd)
{
    gw_px_worker_t *px = userp;
    for (size_t i = 0; i < px->nconns; i++) {
        if (px->conns[i].fd == fd) {
            px->conns[i] = px->conns[--px->nconns];
            break;
        }
    }
    return close(fd);
}

static int local_port(curl_socket_t fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)&ss)->sin6_port);
    return 0;
}

static int px_prereq(void *userp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port_no)
{
    gw_px_req_t *p = userp;
    gw_px_worker_t *px = p->r->w->px;
    (void)local_ip;
    if (p->sent && !p->idempotent) {
        /*
         * libcurl 7.88 sends a request again on a new connection when the
         * kept one it went on closed before any byte of the answer
         * (Curl_retry_request), whatever the method. The upstream may have
         * read it and acted on it before its connection died (a crash, a
         * restart): a POST or PATCH done twice under a 200. nginx's
         * proxy_next_upstream passes only idempotent requests on again; so
         * here, the others end as a failed exchange. (Our own second try,
         * stale_conn, comes before the request was sent.)
         */
        p->resp_bad = "closed the connection without an answer (a POST or PATCH is not sent twice)";
        return CURL_PREREQFUNC_ABORT;
    }
    for (size_t i = 0; px && i < px->nconns; i++) {
        px_conn_t *c = &px->conns[i];
        if (c->rport != primary_port || strcmp(c->rip, primary_ip) != 0)
            continue;
        if (!c->lport)
            c->lport = local_port(c->fd);
        if (c->lport != local_port_no)
            continue;
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n >= 0) { /* bytes nobody asked for, or the upstream's close */
            p->stale_conn = true;
            return CURL_PREREQFUNC_ABORT;
        }
        break;
    }
    p->sent = true;
    return CURL_PREREQFUNC_OK;
}

int gw_px_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_proxy_route_t *routes = cm_xcalloc(GW_PROXY_ROUTES_MAX, sizeof(*routes));
    size_t n = 0;
    char why[300] = "";
    if (gw_proxy_routes_parse(srv->cfg->proxy_routes, routes, &n, why, sizeof(why)) != 0) {
        snprintf(errbuf, errlen, "proxy.routes: %s", why);
        free(routes);
        return CM_EINVAL;
    }
    if (n && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(errbuf, errlen, "proxy.routes: libcurl failed to initialise");
        free(routes);
        return CM_EIO;
    }
    /* each route's upstream is a dependency of overload control (GW_DEP_UPSTREAM + i) */
    gw_ol_register_upstreams(srv, routes, n);
    free(routes);
    return 0;
}

void gw_px_stop(gw_server_t *srv)
{
    size_t n = 0;
    (void)gw_ol_upstreams(srv, &n);
    if (n)
        curl_global_cleanup();
}

void gw_px_worker_start(gw_worker_t *w)
{
    gw_px_worker_t *px = cm_xcalloc(1, sizeof(*px));
    px->w = w;
    px->multi = curl_multi_init();
    curl_multi_setopt(px->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(px->multi, CURLMOPT_SOCKETDATA, px);
    curl_multi_setopt(px->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(px->multi, CURLMOPT_TIMERDATA, px);
    long maxc = (long)w->srv->cfg->proxy_max_conns;
    curl_multi_setopt(px->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc);
    curl_multi_setopt(px->multi, CURLMOPT_MAXCONNECTS, maxc * GW_PROXY_ROUTES_MAX);
    uv_timer_init(&w->loop, &px->timer);
    px->timer.data = px;
    w->px = px;
}

static void px_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void gw_px_worker_stop(gw_worker_t *w)
{
    gw_px_worker_t *px = w->px;
    if (!px || px->stopped)
        return;
    px->stopped = true;
    /* No transfer is left (the worker waits for its held requests): the
     * cleanup closes the cached connections, whose sockets come back through
     * socket_cb as CURL_POLL_REMOVE. */
    curl_multi_cleanup(px->multi);
    px->multi = NULL;
    free(px->conns); /* px_close_socket has run for each of them */
    px->conns = NULL;
    px->nconns = px->cap_conns = 0;
    uv_timer_stop(&px->timer);
    w->px = NULL;
    uv_close((uv_handle_t *)&px->timer, px_timer_closed);
}

/*---- requests ----*/

static gw_px_req_t *px_of(gw_req_t *r)
{
    if (!r->px) {
        r->px = cm_xcalloc(1, sizeof(*r->px));
        r->px->r = r;
    }
    return r->px;
}

static void resp_hdrs_clear(gw_px_req_t *p)
{
    for (unsigned i = 0; i < p->nresp_hdrs; i++)
        free(p->resp_hdrs[i][0]); /* the value shares the name's allocation */
    p->nresp_hdrs = 0;
    p->resp_hdr_bytes = 0;
}

void gw_px_req_free(gw_req_t *r)
{
    gw_px_req_t *p = r->px;
    if (!p)
        return;
    if (p->easy) {
        /* Only after the transfer ended (gw_req_finish runs after completion). */
        curl_easy_cleanup(p->easy);
    }
    curl_slist_free_all(p->hdrs);
    free(p->raw_path);
    free(p->req_body);
    free(p->resp_body);
    resp_hdrs_clear(p);
    free(p->resp_hdrs);
    free(p);
    r->px = NULL;
}

/*
 * A route's prefix matches whole path segments: "/v1/recs/" every path under
 * it, "/v1/recs" that path and the ones under it, never "/v1/recsadmin" or
 * "/v1/recs-internal" (a string prefix sent those to the upstream, which may
 * serve more than the part the operator meant to expose).
 */
/*
 * The longest matching prefix wins, whatever the routes' order (nginx's
 * prefix locations): with /v1/page/ and /v1/page/item/ both listed,
 * /v1/page/item/7 is the second's however they are listed (the first in list
 * order took it when /v1/page/ came first). No tie: two prefixes that match
 * one path with the same length are the same string, which gw_proxy_routes_parse
 * refuses. Every route is looked at, a strlen and a compare each: at most
 * GW_PROXY_ROUTES_MAX (32), and only for a request no core route took (gw_route
 * runs first: a buy never gets here), so a trie or a sorted table would buy
 * nothing measurable.
 */
int gw_px_match(const gw_proxy_route_t *routes, size_t n, const char *url)
{
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(routes[i].prefix);
        if (pl > best_len && gw_route_prefix_matches(url, routes[i].prefix)) {
            best = (int)i;
            best_len = pl;
        }
    }
    return best;
}

bool gw_px_route(gw_req_t *r, const char *url)
{
    const gw_server_t *srv = r->w->srv;
    size_t n = 0;
    const gw_proxy_route_t *routes = gw_ol_upstreams(srv, &n);
    int i = gw_px_match(routes, n, url);
    if (i < 0)
        return false;
    r->route = GW_ROUTE_PROXY;
    r->state = GW_ST_BODY;
    r->px_route = (unsigned)i;
    gw_px_req_t *p = px_of(r);
    p->route = &routes[i];
    p->idx = (unsigned)i;
    /* the path as sent, when it is not url (a %XX in it): what the upstream gets */
    p->raw_path = gw_req_take_raw_path(r);
    return true;
}

/*
 * The route's fallback (marked degraded when rendered), counted as degraded
 * by its cause and as shed for the route's criticality. Never as a 503: the
 * client gets none, whether a level, its upstream's limit or breaker, or a
 * failure decided it (a limit or breaker refusal had been counted as the 503
 * it replaced, a level's had not).
 */
static void answer_fallback(gw_req_t *r, gw_degrade_cause_t cause)
{
    gw_px_req_t *p = r->px;
    const gw_proxy_route_t *rt = p->route;
    gw_ol_count_shed(r->w, (gw_crit_t)rt->crit);
    gw_ol_count_degraded(r->w, cause);
    p->answered = p->fallback = true;
    p->status = rt->fb_status;
    p->reply = GW_R_FALLBACK;
}

/* "level_N" as a literal (gw_ol_overloaded keys its prepared answers on it). */
static gw_ol_reason_t level_reason(gw_level_t level)
{
    /* a route is shed only at level 1 and above */
    return level == GW_LEVEL_NORMAL ? GW_OLR_OTHER
           : (unsigned)level < GW_LEVEL_COUNT ? (gw_ol_reason_t)(GW_OLR_LEVEL_1 + (level - 1))
                                              : GW_OLR_LEVEL_3;
}

/* Shed by the level: the fallback, else 503 overloaded level_N, both marked degraded. */
static void answer_shed(gw_req_t *r, gw_level_t level)
{
    gw_px_req_t *p = r->px;
    if (p->route->has_fallback) {
        /* level 0 serves every route (gw_ol_route_action): never a cause here */
        answer_fallback(r, level <= GW_LEVEL_DEGRADE ? GW_DEG_LEVEL_1
                           : level == GW_LEVEL_SHED  ? GW_DEG_LEVEL_2
                                                     : GW_DEG_LEVEL_3);
        return;
    }
    gw_ol_count_shed(r->w, (gw_crit_t)p->route->crit);
    gw_ol_overloaded(r, level_reason(level),
                     "this part of the page is switched off under load; try again shortly", true);
}

/* Refused by its upstream's limit or breaker: the fallback, else the 503 of the refusal. */
static void answer_refused(gw_req_t *r, gw_ol_take_t why)
{
    gw_px_req_t *p = r->px;
    if (p->route->has_fallback) {
        answer_fallback(r, why == GW_OL_BREAKER ? GW_DEG_UPSTREAM_BREAKER : GW_DEG_UPSTREAM_LIMIT);
        return;
    }
    gw_ol_count_shed(r->w, (gw_crit_t)p->route->crit);
    gw_ol_refuse(r, GW_DEP_UPSTREAM + p->idx, why);
}

/*
 * A failed upstream exchange: the fallback, else 502 / 504. Those are not
 * degraded answers: no X-Flashgate-Degraded (promised for a fallback or a
 * shed answer only), nor counted as shed or degraded. The upstream failed,
 * the gateway decided nothing: the status says so, as an upstream's own 5xx
 * passed through does; they count as 502_bad_gateway / 504_gateway_timeout
 * and as the upstream's drops.
 */
static void answer_failed(gw_req_t *r, bool timeout, const char *what)
{
    gw_px_req_t *p = r->px;
    if (p->route->has_fallback) {
        answer_fallback(r, timeout ? GW_DEG_UPSTREAM_TIMEOUT : GW_DEG_UPSTREAM_ERROR);
        return;
    }
    gw_resp_error(&r->resp, timeout ? GW_R_GATEWAY_TIMEOUT : GW_R_BAD_GATEWAY, NULL,
                  "the upstream of %s %s", p->route->prefix, what);
}

/* RFC 3986 reg-name letters, an IPv6 literal's, a port's: what a Host or
 * X-Forwarded-Host must read as to be passed on. */
static bool reads_as_host(const char *v)
{
    return *v &&
           strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:[]") ==
               strlen(v);
}

bool gw_px_head(gw_req_t *r, const char *method)
{
    gw_px_req_t *p = r->px;
    gw_server_t *srv = r->w->srv;
    gw_level_t level = gw_ol_level(srv);
    p->head_only = strcmp(method, "HEAD") == 0;
    const char *cl = gw_req_header(r, "Content-Length");
    const char *te = gw_req_header(r, "Transfer-Encoding");
    bool has_body = (cl && strtoull(cl, NULL, 10) > 0) || te;
    p->has_body = has_body;
    /* OPTIONS too: a browser's CORS preflight for the others, which only the
     * upstream can answer (its Access-Control-Allow-* fields). */
    static const char *const methods[] = {"GET",   "HEAD",   "POST",   "PUT",
                                          "PATCH", "DELETE", "OPTIONS"};
    bool known = false;
    for (size_t i = 0; i < CM_ARRAY_LEN(methods); i++)
        known |= strcmp(method, methods[i]) == 0;
    if (!known) {
        gw_resp_error(&r->resp, GW_R_METHOD, NULL, "method %s is not proxied", method);
        gw_resp_header(&r->resp, "Allow", "%s", gw_route_methods(GW_ROUTE_PROXY));
        r->state = GW_ST_DONE;
        return has_body; /* with a body: answer now, never read it */
    }
    /*
     * The Host goes to the upstream as X-Forwarded-Host, from which it builds
     * absolute links, redirects and password-reset mails: one that does not
     * read as a host (a path, a query, markup, blanks) is refused, as is an
     * HTTP/1.1 request without one (RFC 9112 3.2: a server MUST answer 400),
     * as nginx does, from the head, with the body unread.
     */
    const char *host = gw_req_header(r, "Host");
    const char *target_host = gw_req_authority(r); /* the host asked for, if named there */
    if ((!host && !gw_req_http10(r)) || (host && !reads_as_host(host)) ||
        (target_host && !reads_as_host(target_host))) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "%s",
                      !host && !gw_req_http10(r) ? "an HTTP/1.1 request needs a Host header"
                      : target_host && !reads_as_host(target_host)
                          ? "the request target's host must be a host name or address with an "
                            "optional port"
                          : "the Host header must be a host name or address with an optional port");
        r->state = GW_ST_DONE;
        return true;
    }
    if (has_body && (p->head_only || strcmp(method, "GET") == 0)) {
        /*
         * Refused, neither forwarded nor dropped. Dropped (libcurl sends a GET
         * or a NOBODY HEAD without one), the client got a 2xx for a body no
         * one read. Forwarded, it has no defined meaning (RFC 9110 9.3.1) and
         * servers disagree on whether they read it: one that does not takes
         * it for the next request on the kept connection, which curl's cache
         * shares with other clients' requests (RFC 9110 9.3.1 names the
         * smuggling risk; CloudFront refuses such a GET with a 403). From the
         * head, the body unread: the connection closes, so none of its bytes
         * is read as a request here either.
         */
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "a %s request to a proxied route cannot carry a body (Content-Length "
                      "above 0 or Transfer-Encoding)",
                      method);
        r->state = GW_ST_DONE;
        return true;
    }
    if (cl && strtoull(cl, NULL, 10) > srv->cfg->proxy_max_body) {
        gw_req_too_large(r, srv->cfg->proxy_max_body);
        return true;
    }
    if (gw_ol_route_action(level, (gw_crit_t)p->route->crit, p->route->has_fallback) ==
        GW_OL_FALLBACK) {
        p->action = PX_SHED;
        p->shed_level = level;
        if (level == GW_LEVEL_PROTECT && has_body) {
            /* Protect: refuse from the head; answering now closes the connection,
             * which is what a shed client with a body should get. */
            answer_shed(r, level);
            r->state = GW_ST_DONE;
            return true;
        }
        return false;
    }
    p->action = PX_SERVE;
    return false;
}

void gw_px_body(gw_req_t *r, const char *data, size_t n)
{
    gw_px_req_t *p = r->px;
    if (!p)
        return;
    uint64_t max = r->w->srv->cfg->proxy_max_body;
    if (p->req_len + n > max) {
        /* as the core routes do: reading on let a client keep the worker
         * parsing for as long as it kept sending */
        gw_req_too_large(r, max);
        return;
    }
    if (p->action != PX_SERVE) {
        p->req_len += n; /* a shed request's body: counted toward the limit, not kept */
        return;
    }
    if (p->req_len + n > p->req_cap) {
        size_t cap = p->req_cap ? p->req_cap : 4096;
        while (cap < p->req_len + n)
            cap *= 2;
        p->req_body = cm_xrealloc(p->req_body, cap);
        p->req_cap = cap;
    }
    memcpy(p->req_body + p->req_len, data, n);
    p->req_len += n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    gw_px_req_t *p = userp;
    size_t n = size * nmemb;
    uint64_t max = p->r->w->srv->cfg->proxy_max_body;
    if (p->resp_len + n > max) {
        p->resp_too_large = true;
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
    }
    if (p->resp_len + n > p->resp_cap) {
        size_t cap = p->resp_cap ? p->resp_cap : 4096;
        while (cap < p->resp_len + n)
            cap *= 2;
        p->resp_body = cm_xrealloc(p->resp_body, cap);
        p->resp_cap = cap;
    }
    memcpy(p->resp_body + p->resp_len, data, n);
    p->resp_len += n;
    return n;
}

/* Hop-by-hop (RFC 9110 7.6.1) and the ones we set ourselves. */
static bool hop_by_hop(const char *name)
{
    static const char *const drop[] = {"Connection", "Keep-Alive",        "TE",
                                       "Trailer",    "Transfer-Encoding", "Upgrade"};
    if (strncasecmp(name, "Proxy-", 6) == 0)
        return true;
    for (size_t i = 0; i < CM_ARRAY_LEN(drop); i++)
        if (strcasecmp(name, drop[i]) == 0)
            return true;
    return false;
}

/* True if `name` is listed in a Connection header value (also hop-by-hop). */
static bool named_by_connection(const char *conn, const char *name)
{
    if (!conn)
        return false;
    size_t nl = strlen(name);
    for (const char *s = conn; *s;) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        size_t n = strcspn(s, ", \t");
        if (n == nl && strncasecmp(s, name, n) == 0)
            return true;
        s += n;
    }
    return false;
}

/* RFC 9110 5.6.2: the characters of a token (a field name). */
static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Ends the exchange (curl: CURLE_WRITE_ERROR): answered 502, or the fallback. */
static size_t resp_refuse(gw_px_req_t *p, const char *why)
{
    p->resp_bad = why;
    return 0;
}

/*
 * One line of the upstream's answer head. Kept only if it is a field a client
 * can be given as it is: a token name and a value without control characters
 * (HTAB aside). A bare CR inside a value would end the line for some clients
 * (a header the upstream injects), and an obs-fold continuation (RFC 9112 5.2)
 * is refused as a proxy may: both end the exchange with a 502, as does a
 * header block past PX_HDR_BYTES_MAX, rather than a line dropped unseen.
 */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    gw_px_req_t *p = userp;
    size_t n = size * nmemb;
    /* libcurl passes a chunked body's trailer fields here too, after the
     * body: RFC 9110 6.5.1 forbids merging them into the header section (an
     * upstream's trailer could set a cookie or a CSP its head never did), and
     * the client's answer has a Content-Length, not chunks to carry them.
     * Looked at before a status line: libcurl 7.88 passes a trailer line
     * "HTTP/1.1: x" on as a field, which was taken for a new answer's status
     * line, so the trailer fields after it became the client's whole head
     * (a Set-Cookie in, the upstream's own fields out). Only a 1xx's head is
     * followed by another. */
    if (p->head_done && !p->interim)
        return n;
    if (!p->in_head && n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (the final one after a 1xx): start over. Inside a
         * head such a line is a field, whose name is no token (below). */
        const char *sp = memchr(data, ' ', n);
        resp_hdrs_clear(p);
        p->head_done = false;
        p->in_head = true;
        p->interim = sp && (size_t)(sp - data) + 1 < n && sp[1] == '1';
        return n;
    }
    if (p->head_done)
        return n; /* a 1xx's head ended: nothing but a status line comes next */
    size_t ln = n;
    while (ln && (data[ln - 1] == '\n' || data[ln - 1] == '\r'))
        ln--;
    if (ln == 0) {
        p->head_done = true; /* the empty line that ends the head */
        p->in_head = false;
        return n;
    }
    const char *colon = memchr(data, ':', ln);
    size_t nl = colon ? (size_t)(colon - data) : 0;
    if (nl == 0)
        return resp_refuse(p, "sent an invalid header");
    for (size_t i = 0; i < nl; i++)
        if (!tchar((unsigned char)data[i]))
            return resp_refuse(p, "sent an invalid header");
    const char *v = colon + 1;
    size_t vl = ln - nl - 1;
    while (vl && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return resp_refuse(p, "sent an invalid header");
    }
    if (p->nresp_hdrs == PX_HDRS_MAX || p->resp_hdr_bytes + nl + vl + 2 > PX_HDR_BYTES_MAX)
        return resp_refuse(p, "sent too big a header block");
    if (nl == 14 && strncasecmp(data, "Content-Length", 14) == 0 && !p->head_only) {
        /* A body announced past proxy.max_body is refused at its head (the
         * answer is buffered whole, so it could never pass): reading it up to
         * the cap held the request and its upstream slot for as long as the
         * upstream took to send that much, the route's whole timeout for one
         * that announces gigabytes and trickles them. A HEAD's length is the
         * GET's: nothing comes. */
        char num[24];
        if (vl < sizeof(num)) {
            memcpy(num, v, vl);
            num[vl] = '\0';
            char *end;
            unsigned long long len = strtoull(num, &end, 10);
            if (vl && *end == '\0' && num[0] >= '0' && num[0] <= '9' &&
                len > p->r->w->srv->cfg->proxy_max_body) {
                p->resp_too_large = true;
                return 0;
            }
        }
    }
    if (nl == 14 && strncasecmp(data, "Content-Length", 14) == 0) {
        /* Two that differ: which one frames the body depends on who reads it
         * (libcurl takes the last), as nginx's "upstream sent duplicate
         * header line" refuses (RFC 9112 6.3). */
        for (unsigned i = 0; i < p->nresp_hdrs; i++)
            if (strcasecmp(p->resp_hdrs[i][0], "Content-Length") == 0 &&
                (strlen(p->resp_hdrs[i][1]) != vl || memcmp(p->resp_hdrs[i][1], v, vl) != 0))
                return resp_refuse(p, "sent two different Content-Lengths");
    }
    if (p->nresp_hdrs == p->cap_resp_hdrs) {
        p->cap_resp_hdrs = p->cap_resp_hdrs ? p->cap_resp_hdrs * 2 : 16;
        p->resp_hdrs = cm_xrealloc(p->resp_hdrs, p->cap_resp_hdrs * sizeof(*p->resp_hdrs));
    }
    char *b = cm_xmalloc(nl + vl + 2);
    memcpy(b, data, nl);
    b[nl] = '\0';
    memcpy(b + nl + 1, v, vl);
    b[nl + 1 + vl] = '\0';
    p->resp_hdrs[p->nresp_hdrs][0] = b;
    p->resp_hdrs[p->nresp_hdrs][1] = b + nl + 1;
    p->nresp_hdrs++;
    p->resp_hdr_bytes += nl + vl + 2;
    return n;
}

typedef struct query_ctx {
    char *buf;
    size_t len, cap;
} query_ctx_t;

/* n bytes of s, NUL-terminated after them. */
static void q_append_n(query_ctx_t *q, const char *s, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        size_t cap = q->cap ? q->cap : 256;
        while (cap < q->len + n + 1)
            cap *= 2;
        q->buf = cm_xrealloc(q->buf, cap);
        q->cap = cap;
    }
    memcpy(q->buf + q->len, s, n);
    q->len += n;
    q->buf[q->len] = '\0';
}

static void q_append(query_ctx_t *q, const char *s)
{
    q_append_n(q, s, strlen(s));
}

/*
 * Appends one Connection field's value to the list of them (RFC 9110 7.6.1:
 * the list may be split over several fields, and every one of them names
 * hop-by-hop fields; reading only the first or the last let the others' pass).
 */
static void conn_join(query_ctx_t *q, const char *value)
{
    if (q->len)
        q_append(q, ", ");
    q_append(q, value);
}

typedef struct hdr_ctx {
    gw_px_req_t *p;
    const char *conn_hdr; /* every Connection field of the request, joined */
    bool sent_ctype, sent_accept; /* forwarded: libcurl adds none of its own */
} hdr_ctx_t;

/*
 * The fields that say who the client is, how it reached the gateway and what
 * it asked for are the gateway's to set, never the client's: upstream
 * frameworks build redirects and absolute links, decide "this is https"
 * (secure cookies, HSTS, OAuth redirect URIs) and check addresses on them,
 * and cannot tell a field the gateway set from one a client sent along.
 *
 * Dropped from every request, a trusted proxy's too:
 * - the client address under any name: X-Real-IP (set to the address the
 *   gateway decided on, real_ip_text), X-Client-IP, True-Client-IP,
 *   CF-Connecting-IP, X-Cluster-Client-IP (Rack's request.ip and many
 *   log/geo/rate-limit middlewares read one of them first). The gateway
 *   decides the client from X-Forwarded-For alone (server.trusted_proxies);
 *   another name would be a second answer it did not check.
 * - Forwarded (RFC 7239), not rewritten: nginx and Envoy pass it through
 *   untouched, so an upstream that reads it (Spring's ForwardedHeaderFilter
 *   and Keycloak prefer it to X-Forwarded-*) took the client's own "for=",
 *   "host=" and "proto=". One built from X-Forwarded-For would carry that
 *   list's unchecked entries again (RFC 7239 quoting for IPv6 and tokens that
 *   are not addresses); without one an upstream reads X-Forwarded-*.
 * - X-Original-URL, X-Rewrite-URL: IIS URL Rewrite and Symfony serve the path
 *   they name instead of the request line's. The gateway routed, limited and
 *   shed by the path it forwards; an override would reach behind that (a
 *   proxied /v1/recs/ call asking its upstream for /admin).
 * - X-Forwarded-Prefix, X-Forwarded-Server: the gateway forwards the path as
 *   routed and strips no prefix, so a prefix for Spring's or Rack's links, or
 *   a server name, describes a rewrite the gateway did not make. A deployment
 *   that mounts an upstream under a prefix configures it there.
 * - X-Forwarded-For, X-Forwarded-Host: rebuilt (append_xff; forwarded_host),
 *   a client's own kept only from a trusted proxy.
 * The scheme fields, X-Forwarded-Proto, X-Forwarded-Port and X-Forwarded-Ssl
 * (Spring, Rack's ssl?, Django's SECURE_PROXY_SSL_HEADER), are set by
 * scheme_fields: the gateway's listener is plain HTTP, so from a peer not in
 * server.trusted_proxies the scheme is "http" and no port or ssl is claimed.
 * A trusted proxy in front is where TLS ended: only it knows the scheme and
 * port the client used, so its values are kept as its X-Forwarded-For is
 * believed (it must set them, not pass a client's through, as it must append
 * to X-Forwarded-For).
 *
 * Names compare with '_' as '-': Rack, PHP and Django (CGI's HTTP_* variables)
 * read X_Forwarded_Proto as X-Forwarded-Proto (nginx drops names with an
 * underscore by default for that reason).
 */
static bool gateway_field(const char *key)
{
    static const char *const owned[] = {
        "X-Forwarded-For",     "X-Forwarded-Host",   "X-Forwarded-Proto",  "X-Forwarded-Port",
        "X-Forwarded-Ssl",     "X-Forwarded-Prefix", "X-Forwarded-Server", "Forwarded",
        "X-Real-IP",           "X-Client-IP",        "True-Client-IP",     "CF-Connecting-IP",
        "X-Cluster-Client-IP", "X-Original-URL",     "X-Rewrite-URL"};
    for (size_t i = 0; i < CM_ARRAY_LEN(owned); i++) {
        const char *a = key, *b = owned[i];
        while (*a && *b) {
            char ca = *a == '_' ? '-' : *a;
            if (tolower((unsigned char)ca) != tolower((unsigned char)*b))
                break;
            a++;
            b++;
        }
        if (!*a && !*b)
            return true;
    }
    return false;
}

static void add_req_header(hdr_ctx_t *h, const char *key, const char *value)
{
    if (!key || hop_by_hop(key) || named_by_connection(h->conn_hdr, key) ||
        strcasecmp(key, "Host") == 0 || strcasecmp(key, "Content-Length") == 0 ||
        strcasecmp(key, "Expect") == 0 || gateway_field(key))
        return;
    char line[8300];
    if (!value || !value[strspn(value, " \t")])
        /* curl reads "Name:" (nothing but blanks after it) as "remove this
         * field": X-Empty was lost and an empty Accept only removed curl's
         * own. "Name;" is its syntax for the field sent with an empty value. */
        snprintf(line, sizeof(line), "%s;", key);
    else
        snprintf(line, sizeof(line), "%s: %s", key, value);
    h->p->hdrs = curl_slist_append(h->p->hdrs, line);
    h->sent_ctype |= strcasecmp(key, "Content-Type") == 0;
    h->sent_accept |= strcasecmp(key, "Accept") == 0;
}

/*
 * The upstream's URL: the route's upstream, then the path and the query as
 * the client sent them (the path after the origin-form reduction of an
 * absolute-form target, the query without its fragment), byte for byte, as
 * nginx's proxy_pass without a URI part forwards them. The path was decoded
 * and encoded again to RFC 3986 pchar: %3B reached the upstream as ';' (a
 * path parameter to Tomcat or Spring), %2C as ',', %40 as '@', and an
 * upstream that signs or caches URLs saw another one than the client's.
 * Routing and the gateway's checks read the decoded path (gw_h1.c refuses
 * what would decode or normalise into another route: dot segments, %2F, %5C,
 * %00), and the upstream decodes what it gets once, to that same path.
 *
 * What libcurl does with these bytes: llhttp, built strict (CMakeLists.txt),
 * lets only visible ASCII (0x21..0x7e) through in a request target, and
 * libcurl 7.88 sends every one of them in CURLOPT_URL's path and query as
 * given, the ones RFC 3986 does not allow there too (" < > \ ^ ` { | } [ ]
 * and a '%' not followed by two hex digits; checked against a raw upstream).
 * It refuses a space or a control byte (CURLE_URL_MALFORMAT: the client's
 * byte would be a failed upstream exchange, counted toward the route's
 * breaker) and writes a byte of 0x80 or more as %xx: neither can come from
 * the parser, and both are written %XX here, the value the upstream decodes
 * all the same, so that a parser built otherwise (its lenient mode takes
 * tabs and 8-bit bytes) could not turn one client's request into a breaker
 * failure. '#' would end the URL for curl and '?' would start its query:
 * head_strings cut the path at both, written %XX as well if they ever came.
 * CURLOPT_PATH_AS_IS (gw_px_handle) keeps libcurl from resolving dot
 * segments: the gateway refused every path that has one, and the upstream
 * gets the path it was routed by, not one libcurl rewrote.
 */
static void append_as_sent(query_ctx_t *q, const char *s, const char *also)
{
    static const char hex[] = "0123456789ABCDEF";
    while (*s) {
        size_t run = 0;
        while (s[run] > 0x20 && s[run] < 0x7f && !strchr(also, s[run]))
            run++; /* the whole of nearly every path and query: one copy */
        if (run) {
            q_append_n(q, s, run);
            s += run;
            continue;
        }
        unsigned char b = (unsigned char)*s++;
        char esc[4] = {'%', hex[b >> 4], hex[b & 15], '\0'};
        q_append(q, esc);
    }
}

char *gw_px_url(const char *upstream, const char *path, const char *query)
{
    query_ctx_t q = {0};
    q_append(&q, upstream);
    append_as_sent(&q, path, "?#");
    if (query) { /* "": the client's '?' alone, passed on as well */
        q_append(&q, "?");
        append_as_sent(&q, query, "#");
    }
    return q.buf;
}

/*
 * X-Forwarded-For to the upstream. From a server.trusted_proxies peer: the
 * request's list (gw_req_xff: every such field, in order) then the peer, as
 * nginx's $proxy_add_x_forwarded_for. Nothing is cut: the request head is at
 * most the read buffer (8 KiB), and the right-most entries are the ones an
 * upstream trusts (the hops nearest to it): the first field alone, cut at
 * 1,000 bytes from the right, lost exactly those. From any other peer, the
 * peer alone (xff NULL), as nginx at the edge (X-Forwarded-For $remote_addr)
 * and Traefik from an untrusted source: a client's own list is addresses it
 * made up, and an upstream reading the left-most entry (Express with
 * "trust proxy", many a log, geo or rate-limit middleware) took the first of
 * them for the client, as the gateway itself does not (X-Real-IP).
 */
static void append_xff(gw_px_req_t *p, const char *xff, const char *peer)
{
    query_ctx_t b = {0};
    q_append(&b, "X-Forwarded-For: ");
    if (xff && *xff) {
        q_append(&b, xff);
        q_append(&b, ", ");
    }
    q_append(&b, peer);
    p->hdrs = curl_slist_append(p->hdrs, b.buf);
    free(b.buf);
}

/*
 * The peer as X-Forwarded-For names it: normalised as gw_client_addr does (no
 * proxy trusted, so the peer itself), an IPv4 client on a dual-stack listener
 * as 1.2.3.4, not ::ffff:1.2.3.4. Its entry then agrees with the X-Real-IP of
 * the same request and reads as nginx's $remote_addr; an upstream matching it
 * against an IPv4 allow-list or trusted-proxy CIDR would miss the mapped form.
 */
static void peer_text(gw_req_t *r, char *out, size_t cap)
{
    static const gw_proxies_t none = {0};
    uint8_t addr[16];
    int fam = gw_client_addr(&none, gw_req_peer(r), NULL, addr);
    out[0] = '\0';
    if (fam)
        inet_ntop(fam, addr, out, (socklen_t)cap);
}

/*
 * The client address as the per-IP limiter decides it (gw_client_addr): the
 * peer, or behind a server.trusted_proxies peer the right-most untrusted
 * X-Forwarded-For entry; whole (an IPv6 address not cut to the limiter's /64),
 * as nginx's realip module sets $remote_addr for its X-Real-IP. Empty if unknown.
 */
static void real_ip_text(gw_req_t *r, char *out, size_t cap)
{
    uint8_t addr[16];
    int fam = gw_client_addr(&r->w->srv->conns.proxies, gw_req_peer(r), gw_req_xff(r), addr);
    out[0] = '\0';
    if (fam)
        inet_ntop(fam, addr, out, (socklen_t)cap);
}

/*
 * The right-most element of the request's last `name` field (trimmed) into
 * out; false if there is none, it is empty or longer than cap - 1. A trusted
 * proxy that appends to a client's list puts its own value last, one that
 * sets the field sends only its own: either way the value of the hop the
 * gateway trusts (an upstream reading the first would take the client's).
 */
static bool last_element(gw_req_t *r, const char *name, char *out, size_t cap)
{
    unsigned nh;
    const gw_hdr_t *hs = gw_req_headers(r, &nh);
    const char *v = NULL;
    for (unsigned i = 0; i < nh; i++)
        if (hs[i].name && strcasecmp(hs[i].name, name) == 0)
            v = hs[i].value ? hs[i].value : "";
    if (!v)
        return false;
    const char *comma = strrchr(v, ',');
    const char *s = comma ? comma + 1 : v;
    s += strspn(s, " \t");
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/*
 * The host the client asked for, for X-Forwarded-Host. From a peer not in
 * server.trusted_proxies, its Host, or its absolute-form target's host (a
 * client's own X-Forwarded-Host is
 * dropped: Django and Rails build absolute links and password-reset mails
 * from it). Behind a trusted proxy, its right-most X-Forwarded-Host if it
 * is one: a CDN that rewrites Host to the origin's name says there which
 * name the person typed, and only that hop knows. It must read as a host
 * (RFC 3986 reg-name letters, an IPv6 literal, an optional port), else the
 * Host as from a client.
 */
static const char *forwarded_host(gw_req_t *r, char *buf, size_t cap)
{
    if (gw_proxies_match(&r->w->srv->conns.proxies, gw_req_peer(r)) &&
        last_element(r, "X-Forwarded-Host", buf, cap) && reads_as_host(buf))
        return buf;
    /* An absolute-form target names the host asked for, and its Host field
     * is ignored (RFC 9112 3.2.2; gw_px_head checked it reads as a host): a
     * cache in front keyed by the target stored a page built, links and all,
     * for whatever name the Host field said. */
    const char *target_host = gw_req_authority(r);
    return target_host ? target_host : gw_req_header(r, "Host");
}

/*
 * X-Forwarded-Proto, -Port and -Ssl (see gateway_field). From a peer not in
 * server.trusted_proxies: "http", the gateway's own listener, and no port or
 * ssl (a client's "https" made Spring and Rack build https links and secure
 * cookies for a plain connection, or believe it was encrypted). From a
 * trusted proxy, the scheme it says, which the gateway cannot see: its
 * right-most value of each, only if it is one the field can hold (http or
 * https; a port 1..65535; on or off), else "http" and nothing, as from a
 * client. One value each: frameworks disagree on which element of a list
 * they read.
 */
static void scheme_fields(gw_req_t *r, gw_px_req_t *p)
{
    const char *proto = "http";
    char v[16], line[64];
    if (gw_proxies_match(&r->w->srv->conns.proxies, gw_req_peer(r))) {
        if (last_element(r, "X-Forwarded-Proto", v, sizeof(v)) && strcasecmp(v, "https") == 0)
            proto = "https";
        unsigned long port = 0;
        if (last_element(r, "X-Forwarded-Port", v, 6) && strspn(v, "0123456789") == strlen(v))
            port = strtoul(v, NULL, 10); /* at most 5 digits */
        if (port >= 1 && port <= 65535) {
            snprintf(line, sizeof(line), "X-Forwarded-Port: %lu", port);
            p->hdrs = curl_slist_append(p->hdrs, line);
        }
        if (last_element(r, "X-Forwarded-Ssl", v, sizeof(v)) &&
            (strcasecmp(v, "on") == 0 || strcasecmp(v, "off") == 0)) {
            snprintf(line, sizeof(line), "X-Forwarded-Ssl: %s",
                     strcasecmp(v, "on") == 0 ? "on" : "off");
            p->hdrs = curl_slist_append(p->hdrs, line);
        }
    }
    snprintf(line, sizeof(line), "X-Forwarded-Proto: %s", proto);
    p->hdrs = curl_slist_append(p->hdrs, line);
}

bool gw_px_handle(gw_req_t *r, const char *url, const char *method)
{
    gw_px_req_t *p = r->px;
    gw_worker_t *w = r->w;
    gw_px_worker_t *px = w->px;
    if (p->action == PX_SHED) {
        answer_shed(r, p->shed_level);
        return false;
    }
    if (!px || px->stopped || atomic_load_explicit(&w->srv->life.draining, memory_order_relaxed)) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE, NULL, "gateway is shutting down");
        return false;
    }
    gw_ol_take_t why = gw_ol_try_acquire(r, GW_DEP_UPSTREAM + p->idx);
    if (why != GW_OL_TAKEN) {
        answer_refused(r, why);
        return false;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        gw_ol_release(r, GW_DEP_UPSTREAM + p->idx, GW_AL_IGNORE);
        gw_resp_error(&r->resp, GW_R_INTERNAL, NULL, "cannot start the upstream request");
        return false;
    }
    p->easy = e;
    p->idempotent = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
    /* The path as sent (p->raw_path, or url when it had no %XX: the same
     * bytes), and the query as sent: decoded and encoded again, "q=red+shoes"
     * became "q=red%2Bshoes" (a literal plus), empty pairs were lost and
     * arguments past the 32nd dropped. */
    char *full = gw_px_url(p->route->upstream, p->raw_path ? p->raw_path : url, gw_req_query(r));
    curl_easy_setopt(e, CURLOPT_URL, full); /* libcurl keeps its own copy */
    free(full);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, p);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)p->route->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)p->route->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No proxy: unset, libcurl takes one from the environment (http_proxy,
     * HTTPS_PROXY, ALL_PROXY), common on hosts with an egress proxy. Every
     * upstream exchange, 127.0.0.1's included, would go through it: the
     * clients' cookies, Authorization and X-Forwarded-For to a third party,
     * and the per-host connection cap and timeouts applied to the proxy. An
     * empty string turns that off whatever the environment says. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, p);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, px_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, px);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, px_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, px);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, px_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, p);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "OPTIONS") == 0 && !p->has_body) {
        /* As sent: without a body or a Content-Length (POSTFIELDS would add
         * "Content-Length: 0"). One that announces a body carries it as the
         * methods below do. */
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, p->req_body ? p->req_body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->req_len);
    }
    unsigned nh;
    const gw_hdr_t *hs = gw_req_headers(r, &nh);
    query_ctx_t conn = {0};
    for (unsigned i = 0; i < nh; i++)
        if (hs[i].name && strcasecmp(hs[i].name, "Connection") == 0)
            conn_join(&conn, hs[i].value ? hs[i].value : "");
    hdr_ctx_t h = {.p = p, .conn_hdr = conn.buf};
    for (unsigned i = 0; i < nh; i++)
        add_req_header(&h, hs[i].name, hs[i].value);
    free(conn.buf);
    char peer[INET6_ADDRSTRLEN] = "";
    peer_text(r, peer, sizeof(peer));
    append_xff(p,
               gw_proxies_match(&r->w->srv->conns.proxies, gw_req_peer(r)) ? gw_req_xff(r) : NULL,
               peer);
    char line[1200];
    char real_ip[INET6_ADDRSTRLEN];
    real_ip_text(r, real_ip, sizeof(real_ip));
    if (*real_ip) {
        snprintf(line, sizeof(line), "X-Real-IP: %s", real_ip);
        p->hdrs = curl_slist_append(p->hdrs, line);
    }
    char fwd_host[256];
    const char *host = forwarded_host(r, fwd_host, sizeof(fwd_host));
    if (host) {
        snprintf(line, sizeof(line), "X-Forwarded-Host: %.1000s", host);
        p->hdrs = curl_slist_append(p->hdrs, line);
    }
    scheme_fields(r, p);
    p->hdrs = curl_slist_append(p->hdrs, "Expect:"); /* no 100-continue round trip */
    /* A body that goes without a Content-Type (the client sent none, or its
     * Connection named it) goes on without one: libcurl would label a
     * POSTFIELDS body application/x-www-form-urlencoded. Nor an Accept the
     * client did not send: libcurl's own (any type) told the upstream the
     * client takes whatever it sends (nginx adds none). */
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && !h.sent_ctype)
        p->hdrs = curl_slist_append(p->hdrs, "Content-Type:");
    if (!h.sent_accept)
        p->hdrs = curl_slist_append(p->hdrs, "Accept:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->hdrs);
    /* Held before handing over (a completion may come before we return). */
    r->state = GW_ST_WAIT;
    w->suspended++;
    p->in_multi = true;
    if (curl_multi_add_handle(px->multi, e) != CURLM_OK) {
        p->in_multi = false;
        gw_ol_release(r, GW_DEP_UPSTREAM + p->idx, GW_AL_IGNORE);
        gw_resp_error(&r->resp, GW_R_INTERNAL, NULL, "cannot start the upstream request");
        gw_req_finish(r);
    }
    return true;
}

/* Builds the answer from a finished transfer and resumes the request. */
static void px_complete(gw_px_worker_t *px, gw_px_req_t *p, CURLcode rc)
{
    gw_req_t *r = p->r;
    unsigned dep = GW_DEP_UPSTREAM + p->idx;
    long status = 0;
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(px->multi, p->easy);
    p->in_multi = false;
    if (rc == CURLE_ABORTED_BY_CALLBACK && p->stale_conn && !p->retried) {
        /* px_prereq: the kept connection had bytes or a close waiting and
         * curl closed it; the request was not sent. Once more, on a new
         * connection (a second refusal there is the upstream talking first:
         * a failed exchange). */
        cm_log_debug("proxy", "stale upstream connection", "route=%s", p->route->prefix);
        atomic_fetch_add_explicit(&r->w->ctr.proxy_stale_conns, 1, memory_order_relaxed);
        p->stale_conn = false;
        p->retried = true;
        resp_hdrs_clear(p);
        p->head_done = p->in_head = p->interim = false;
        p->resp_len = 0;
        p->resp_bad = NULL;
        p->resp_too_large = false;
        curl_easy_setopt(p->easy, CURLOPT_FRESH_CONNECT, 1L);
        p->in_multi = true;
        if (curl_multi_add_handle(px->multi, p->easy) == CURLM_OK)
            return;
        p->in_multi = false;
    }
    bool server_error = rc == CURLE_OK && status >= 500 && status <= 599;
    /* libcurl ends with any status 100..999: a 101 it did not ask for is
     * "final" (its body read until the close), and 600-999 pass its parser.
     * A client reads no body after a 1xx, so the upstream's bytes would be
     * taken for the connection's next answer; none of them is an answer a
     * client can be given. */
    bool bad_status = rc == CURLE_OK && (status < 200 || status > 599);
    if (rc != CURLE_OK || server_error || bad_status) {
        cm_log_debug("proxy", "upstream failed", "route=%s curl=\"%s\" status=%ld",
                     p->route->prefix, curl_easy_strerror(rc), status);
        /*
         * An answer cut at proxy.max_body is the gateway's policy, not the
         * upstream failing: a drop would let a client open the route's
         * breaker for everyone (proxy.breaker_failures large objects in a
         * row) and halve its limit. Nor is it an OK: its time is that of
         * max_body bytes streamed, a measure of the body's size rather than
         * of the upstream's queue (as an RTT sample it would push Gradient2
         * down all the same), and a breaker success would reset the failure
         * count of an upstream failing everyone else's requests, or close
         * its half-open breaker. IGNORE gives the slot back and teaches
         * neither (the probe, if it was one, is free again). A 5xx or
         * invalid status is the upstream failing, whatever its size.
         */
        bool cut = p->resp_too_large && status >= 200 && status <= 499;
        gw_ol_release(r, dep, cut ? GW_AL_IGNORE : GW_AL_DROP);
        if (server_error && !p->route->has_fallback) {
            /* pass the upstream's own 5xx through (below) */
        } else {
            /* A connection that never came is "unreachable"; one that broke
             * off or sent what curl cannot read (a close mid-body, a bad
             * chunk size, no status line) says so, with curl's reason: all
             * were "unreachable", which sent an operator to the network. */
            char broke[160];
            snprintf(broke, sizeof(broke), "sent no complete answer (%s)", curl_easy_strerror(rc));
            bool unreachable = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                               rc == CURLE_SEND_ERROR;
            /* curl 7.88 reads a head without a status line as HTTP/0.9, which it refuses */
            bool no_http = rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_WEIRD_SERVER_REPLY;
            answer_failed(r, rc == CURLE_OPERATION_TIMEDOUT,
                          rc == CURLE_OPERATION_TIMEDOUT ? "timed out"
                          : p->resp_bad                 ? p->resp_bad
                          : p->resp_too_large           ? "answered more than proxy.max_body"
                          : bad_status                  ? "sent an invalid status"
                          : server_error                ? "failed"
                          : unreachable                 ? "is unreachable"
                          : no_http                     ? "sent no valid HTTP status line"
                                                        : broke);
            gw_req_finish(r);
            return;
        }
    } else {
        gw_ol_release(r, dep, GW_AL_OK);
    }
    p->answered = true;
    p->status = (unsigned)status;
    p->reply = GW_R_PROXIED;
    gw_req_finish(r);
}

bool gw_px_abort(gw_req_t *r)
{
    gw_px_req_t *p = r->px;
    if (!p || !p->in_multi || !r->w)
        return false;
    gw_px_worker_t *px = r->w->px;
    if (!px || !px->multi)
        return false;
    curl_multi_remove_handle(px->multi, p->easy); /* closes its upstream connection */
    p->in_multi = false;
    /* the upstream did nothing wrong: its limit learns nothing from it */
    gw_ol_release(r, GW_DEP_UPSTREAM + p->idx, GW_AL_IGNORE);
    atomic_fetch_add_explicit(&r->w->ctr.proxy_client_aborts, 1, memory_order_relaxed);
    gw_req_finish(r);
    return true;
}

static void check_done(gw_px_worker_t *px)
{
    CURLMsg *m;
    int left;
    while (px->multi && (m = curl_multi_info_read(px->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        gw_px_req_t *p = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&p);
        if (p)
            px_complete(px, p, m->data.result);
    }
}

/* The upstream's own Content-Length, or -1 if it sent none (or not a number). */
static int64_t upstream_length(const gw_px_req_t *p)
{
    for (unsigned i = 0; i < p->nresp_hdrs; i++) {
        if (strcasecmp(p->resp_hdrs[i][0], "Content-Length") != 0)
            continue;
        const char *v = p->resp_hdrs[i][1];
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        return *v >= '0' && *v <= '9' && *end == '\0' && n <= INT64_MAX ? (int64_t)n : -1;
    }
    return -1;
}

/*
 * The Content-Length of an upstream's answer passed on (RFC 9110 8.6): none
 * for a 204 (a 1xx never gets here: px_complete); the upstream's own for a
 * HEAD (the GET's length, which curl did not fetch) and a 304 (the
 * representation's); else the body's.
 */
static int64_t announced_length(const gw_px_req_t *p)
{
    if (p->status < 200 || p->status == 204)
        return -1;
    if (p->head_only || p->status == 304)
        return upstream_length(p);
    return (int64_t)p->resp_len;
}

bool gw_px_render(gw_req_t *r, gw_reply_t *reply, int *status)
{
    gw_px_req_t *p = r->px;
    if (!p || !p->answered)
        return false;
    *reply = p->reply;
    *status = (int)p->status;
    gw_h1_status(r, p->status);
    if (p->fallback) {
        const gw_proxy_route_t *rt = p->route;
        gw_h1_header(r, "Content-Type", rt->fb_type);
        gw_h1_header(r, "X-Flashgate-Degraded", "1");
        gw_h1_header(r, "Cache-Control", "no-store");
        gw_h1_body(r, rt->fb_body, rt->fb_len, (int64_t)rt->fb_len);
        return true;
    }
    query_ctx_t conn = {0};
    for (unsigned i = 0; i < p->nresp_hdrs; i++)
        if (strcasecmp(p->resp_hdrs[i][0], "Connection") == 0)
            conn_join(&conn, p->resp_hdrs[i][1]);
    for (unsigned i = 0; i < p->nresp_hdrs; i++) {
        const char *k = p->resp_hdrs[i][0];
        /* X-Flashgate-Degraded is the gateway's word on its own answers
         * (a fallback, a shed route): an upstream's would mark a real
         * answer degraded to clients and monitors that trust it */
        if (hop_by_hop(k) || named_by_connection(conn.buf, k) ||
            strcasecmp(k, "Content-Length") == 0 || strcasecmp(k, "Date") == 0 ||
            strcasecmp(k, "X-Flashgate-Degraded") == 0)
            continue;
        gw_h1_header(r, k, p->resp_hdrs[i][1]);
    }
    free(conn.buf);
    gw_h1_body(r, p->resp_body ? p->resp_body : "", p->resp_len, announced_length(p));
    return true;
}
