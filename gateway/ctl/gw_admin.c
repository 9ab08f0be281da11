/*
 * The admin API on its own listener (default 127.0.0.1:9090). Every route but
 * the dashboard's static page needs "Authorization: Bearer <token>",
 * compared in constant time against the named tokens (role read or write; see
 * gw_admin_token.c). A read token on a write route gets 403 and changes nothing.
 *
 * Admin traffic is small and its operations may block (a Redis round trip),
 * so this daemon uses MHD's thread-per-connection mode, away from the worker
 * loops; it never stalls the buy path. Changes are serialised by admin_lock,
 * validated completely before anything is applied (atomic), and each one is
 * versioned and appended to the audit log (gw_audit.h) before the answer.
 *
 * The routes are their owners' (gw_admin_route.h): each folder exports a table
 * of the routes it answers, and this file assembles them into the one route ×
 * method × role table the dispatcher answers from; it keeps the listener, the
 * tokens, the audit hook and the probes (/healthz, /readyz).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair_routes.h"
#include "gateway/ctl/gw_admin_internal.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct admin_req {
    char *body;
    size_t len;
    bool too_large;
} admin_req_t;

static pthread_mutex_t admin_lock = PTHREAD_MUTEX_INITIALIZER;

/*---- libmicrohttpd: the admin listener's (the public one is gw_h1.c's) ----*/

/* MHD's per-connection pool: request line, headers and buffers (more gets MHD's 431). */
#define ADMIN_CONN_MEMORY (8 * 1024)

static struct MHD_Response *resp_build(const gw_resp_t *r)
{
    struct MHD_Response *mr =
        MHD_create_response_from_buffer(r->body_len, (void *)r->body, MHD_RESPMEM_MUST_COPY);
    if (!mr)
        return NULL;
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    bool cache_control = false;
    for (unsigned i = 0; i < r->nheaders; i++) {
        MHD_add_response_header(mr, r->headers[i][0], r->headers[i][1]);
        cache_control |= strcasecmp(r->headers[i][0], "Cache-Control") == 0;
    }
    if (!cache_control)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return mr;
}

/* Queues r on the connection; counts it. Returns the MHD result. */
static enum MHD_Result gw_resp_send(struct MHD_Connection *c, gw_counters_t *ctr,
                                    const gw_resp_t *r)
{
    struct MHD_Response *mr = resp_build(r);
    if (!mr)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (ctr)
        atomic_fetch_add_explicit(&ctr->replies[r->reply], 1, memory_order_relaxed);
    return ret;
}

static struct MHD_Daemon *mhd_start(const struct sockaddr *sa, unsigned flags,
                                    MHD_AccessHandlerCallback cb, void *cls, unsigned max_conn,
                                    unsigned timeout_s, MHD_RequestCompletedCallback done,
                                    struct MHD_OptionItem *extra)
{
    if (sa->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Without MHD_OPTION_LISTENING_ADDRESS_REUSE, libmicrohttpd sets SO_REUSEADDR
     * alone on the listening socket: a restart binds over its predecessor's
     * connections in TIME_WAIT, while a second live process on the port is
     * still refused (Linux lets two listeners share a port only when both set
     * SO_REUSEPORT, which the option's 1 would add; its 0 means "disallow" and
     * leaves SO_REUSEADDR out: the restart then fails for a minute). */
    return MHD_start_daemon(flags, 0, NULL, NULL, cb, cls, MHD_OPTION_SOCK_ADDR, sa,
                            MHD_OPTION_ARRAY, extra,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
                            timeout_s, MHD_OPTION_NOTIFY_COMPLETED, done, cls,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)GW_LISTEN_BACKLOG,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_CONN_MEMORY,
                            MHD_OPTION_END);
}

/*---- auth failure backoff ----*/

/*
 * Wrong tokens are counted per client address (IPv6 /128, IPv4 /32) in a
 * window of AUTH_WINDOW_MS: the AUTH_FAILS_MAX-th blocks the address for
 * AUTH_BLOCK_MS, doubled at each block in a row up to AUTH_BLOCK_MAX_MS; a
 * blocked address gets 429 with Retry-After on every route that needs a
 * token, the right token too (else the answer would tell a right guess). A
 * request without an Authorization header is not a guess and is not counted.
 * The table is fixed (AUTH_SLOTS): a new address takes the slot seen longest
 * ago. A success clears the address.
 */
#define AUTH_SLOTS 256
#define AUTH_FAILS_MAX 64
#define AUTH_WINDOW_MS 60000
#define AUTH_BLOCK_MS 5000
#define AUTH_BLOCK_MAX_MS 300000

typedef struct auth_slot {
    uint8_t addr[16];
    bool used;
    uint32_t fails, blocks;
    int64_t win_start_ms, blocked_until_ms, seen_ms;
} auth_slot_t;

static struct {
    pthread_mutex_t mu;
    auth_slot_t slot[AUTH_SLOTS];
} auth_fails = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d); false: none. */
static bool client_addr16(struct MHD_Connection *c, uint8_t out[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    return false;
}

/* The slot of addr; create: take a free one or the one seen longest ago. auth_fails.mu held. */
static auth_slot_t *auth_slot(const uint8_t addr[16], bool create)
{
    auth_slot_t *oldest = NULL;
    for (size_t i = 0; i < AUTH_SLOTS; i++) {
        auth_slot_t *e = &auth_fails.slot[i];
        if (e->used && memcmp(e->addr, addr, 16) == 0)
            return e;
        if (!oldest || !e->used || (oldest->used && e->seen_ms < oldest->seen_ms))
            oldest = e;
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    memcpy(oldest->addr, addr, 16);
    oldest->used = true;
    return oldest;
}

/* Milliseconds addr stays blocked from now (0: not blocked). */
static int64_t auth_blocked_ms(const uint8_t addr[16])
{
    int64_t now = (int64_t)cm_mono_ms(), left = 0;
    pthread_mutex_lock(&auth_fails.mu);
    auth_slot_t *e = auth_slot(addr, false);
    if (e && e->blocked_until_ms > now)
        left = e->blocked_until_ms - now;
    pthread_mutex_unlock(&auth_fails.mu);
    return left;
}

/* Counts a wrong token from addr (ok: a right one, which clears it). */
static void auth_note(const uint8_t addr[16], bool ok)
{
    int64_t now = (int64_t)cm_mono_ms();
    pthread_mutex_lock(&auth_fails.mu);
    auth_slot_t *e = auth_slot(addr, !ok);
    if (e && ok) {
        e->used = false;
    } else if (e) {
        e->seen_ms = now;
        if (now - e->win_start_ms >= AUTH_WINDOW_MS) {
            e->win_start_ms = now;
            e->fails = 0;
        }
        if (++e->fails >= AUTH_FAILS_MAX) {
            int64_t block = AUTH_BLOCK_MS;
            for (uint32_t i = 0; i < e->blocks && block < AUTH_BLOCK_MAX_MS; i++)
                block *= 2;
            if (block > AUTH_BLOCK_MAX_MS)
                block = AUTH_BLOCK_MAX_MS;
            e->blocks++;
            e->blocked_until_ms = now + block;
            e->fails = 0;
            e->win_start_ms = now;
        }
    }
    pthread_mutex_unlock(&auth_fails.mu);
}

/*---- tokens ----*/

static bool token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Constant time in the length of the configured token b. */
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* The token the request presents, or NULL (every token is compared: no early exit). */
static const gw_admin_token_t *authenticate(gw_server_t *srv, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    const gw_admin_token_t *found = NULL;
    for (size_t i = 0; i < srv->admin->ntokens; i++)
        if (token_equal(h, n, srv->admin->tokens[i].token, srv->admin->tokens[i].len) && !found)
            found = &srv->admin->tokens[i];
    /* The header value lies in MHD's connection memory, which goes back to the
     * heap unwiped when the connection ends: a core dump would show the token
     * of every admin request made. Nothing reads the header after this. */
    explicit_bzero((char *)(uintptr_t)h, n);
    return found;
}

/*---- helpers ----*/

static void h_whoami(gw_admin_call_t *a)
{
    gw_resp_init(a->p, GW_R_OK);
    const gw_admin_token_t *t = NULL;
    for (size_t i = 0; i < a->srv->admin->ntokens; i++)
        if (strcmp(a->srv->admin->tokens[i].name, a->who) == 0)
            t = &a->srv->admin->tokens[i];
    a->p->body_len = (size_t)snprintf(a->p->body, sizeof(a->p->body),
                                      "{\"name\":\"%s\",\"role\":\"%s\"}", a->who,
                                      t && t->role == GW_ROLE_WRITE ? "write" : "read");
}

/*---- health on the admin listener (no token) ----*/

/*
 * The same answers as GET /healthz and /readyz on the public port, from the
 * admin listener's own thread: under a crowd the public port's workers may
 * shut their door (overload.accept_pause) or queue, and a load balancer's
 * probe must not read that as a dead process (docs/ops/runbook.md: probe here).
 */
static void h_healthz(gw_admin_call_t *a)
{
    gw_liveness_health(a->srv, a->p);
}

static void h_readyz(gw_admin_call_t *a)
{
    gw_http_health(a->srv, true, a->p);
}

/*---- the route table and the dispatcher ----*/

/* The routes of the listener itself: the dashboard's probes and the token's
 * own name. Every other route is its owner's (the tables below). */
static const gw_admin_route_t core_routes[] = {
    GW_ADMIN_ROUTE("GET", "/healthz", NONE, h_healthz),
    GW_ADMIN_ROUTE("GET", "/readyz", NONE, h_readyz),
    GW_ADMIN_ROUTE("GET", "/admin/v1/whoami", READ, h_whoami),
};

static const gw_admin_route_t *core_admin_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(core_routes);
    return core_routes;
}

/* The owners' tables, assembled into the one table the dispatcher answers
 * from. Two routes of one path keep their owner's order (a 405's Allow). */
static const gw_admin_route_t *(*const owners[])(size_t *n) = {
    core_admin_routes,      gw_admin_stats_routes, gw_sale_admin_routes,
    gw_fair_admin_routes,   gw_order_admin_routes, gw_admin_config_routes,
    gw_ol_admin_routes,     gw_admin_debug_routes,
};

#define ADMIN_ROUTES_MAX 64
static gw_admin_route_t admin_routes[ADMIN_ROUTES_MAX];
static size_t admin_nroutes;
static pthread_once_t admin_routes_once = PTHREAD_ONCE_INIT;

static void admin_routes_assemble(void)
{
    for (size_t o = 0; o < CM_ARRAY_LEN(owners); o++) {
        size_t n;
        const gw_admin_route_t *r = owners[o](&n);
        for (size_t i = 0; i < n; i++) {
            if (admin_nroutes == ADMIN_ROUTES_MAX)
                abort(); /* a programmer's error: raise ADMIN_ROUTES_MAX */
            admin_routes[admin_nroutes++] = r[i];
        }
    }
}

size_t gw__admin_routes(const gw_admin_route_t **routes)
{
    pthread_once(&admin_routes_once, admin_routes_assemble);
    *routes = admin_routes;
    return admin_nroutes;
}

/* Matches url against a pattern; copies the {param} segment (if any) to arg. */
static bool path_match(const char *pat, const char *url, char *arg, size_t cap)
{
    while (*pat && *url) {
        if (*pat == '{') {
            const char *pe = strchr(pat, '}');
            size_t n = strcspn(url, "/");
            if (!pe || n == 0 || n >= cap)
                return false; /* empty, or far too long for any id */
            memcpy(arg, url, n);
            arg[n] = '\0';
            pat = pe + 1;
            url += n;
            continue;
        }
        if (*pat != *url)
            return false;
        pat++;
        url++;
    }
    return *pat == '\0' && *url == '\0';
}

void gw__admin_match(const char *method, const char *url, bool debug_routes,
                     gw_admin_match_t *m)
{
    memset(m, 0, sizeof(*m));
    m->route = -1;
    bool open_path = false;
    pthread_once(&admin_routes_once, admin_routes_assemble);
    for (size_t i = 0; i < admin_nroutes; i++) {
        char arg[sizeof(m->arg)];
        /* fault injection only on a gateway started with it (--enable-debug-routes) */
        if (!debug_routes && strncmp(admin_routes[i].path, "/admin/v1/debug/", 16) == 0)
            continue;
        if (!path_match(admin_routes[i].path, url, arg, sizeof(arg)))
            continue;
        m->any = true;
        open_path |= admin_routes[i].role == GW_ROLE_NONE;
        size_t n = strlen(m->allow);
        snprintf(m->allow + n, sizeof(m->allow) - n, "%s%s", n ? ", " : "",
                 admin_routes[i].method);
        if (m->route < 0 && strcmp(method, admin_routes[i].method) == 0) {
            m->route = (int)i;
            m->role = admin_routes[i].role;
            memcpy(m->arg, arg, sizeof(arg));
        }
    }
    m->needs_token = !(m->route >= 0 ? m->role == GW_ROLE_NONE : open_path);
}

gw_reply_t gw__admin_verdict(const gw_admin_match_t *m, gw_role_t token_role)
{
    if (m->needs_token && token_role == GW_ROLE_NONE)
        return GW_R_UNAUTHORIZED;
    if (!m->any)
        return GW_R_NOT_FOUND;
    if (m->route < 0)
        return GW_R_METHOD;
    if (m->role == GW_ROLE_WRITE && token_role != GW_ROLE_WRITE)
        return GW_R_FORBIDDEN;
    return GW_R_OK;
}

static enum MHD_Result send_call(gw_admin_call_t *a)
{
    gw_server_t *srv = a->srv;
    /* a body of our own (set_big) or an asset: 200, or 201 for a creation,
     * counted under its own code */
    bool ok = a->p->reply == GW_R_OK || a->p->reply == GW_R_CREATED;
    if (a->big_type && !a->big && ok) {
        /* json_dumps (or the metrics buffer) failed to allocate: a 500 from
         * the reply table rather than an empty 200 */
        gw_resp_error(a->p, GW_R_INTERNAL, NULL, "cannot build the response (out of memory)");
    }
    if (a->asset || a->big) {
        struct MHD_Response *mr =
            a->asset ? MHD_create_response_from_buffer(a->asset->len, (void *)a->asset->data,
                                                       MHD_RESPMEM_PERSISTENT)
                     : MHD_create_response_from_buffer(strlen(a->big), a->big,
                                                       MHD_RESPMEM_MUST_FREE);
        if (!mr) {
            free(a->big);
            return MHD_NO;
        }
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                                a->asset ? a->asset->type : a->big_type);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (a->asset)
            MHD_add_response_header(mr, "Content-Security-Policy",
                                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
        gw_reply_t k = a->p->reply == GW_R_CREATED ? GW_R_CREATED : GW_R_OK;
        enum MHD_Result ret = MHD_queue_response(a->conn, (unsigned)gw_reply_status(k), mr);
        MHD_destroy_response(mr);
        atomic_fetch_add_explicit(&srv->admin->ctr.replies[k], 1, memory_order_relaxed);
        return ret;
    }
    return gw_resp_send(a->conn, &srv->admin->ctr, a->p);
}

/* The call's hooks (gw_admin_route.h): the connection's header or query
 * argument, and the audit log. */
static const char *conn_lookup(void *conn, bool query, const char *name)
{
    return MHD_lookup_connection_value(conn, query ? MHD_GET_ARGUMENT_KIND : MHD_HEADER_KIND,
                                       name);
}

static uint64_t audit_hook(gw_server_t *srv, const char *who, const char *what,
                           const char *target, void *old_json, void *new_json)
{
    return gw_audit_record(srv, who, what, target, old_json, new_json);
}

static enum MHD_Result admin_cb(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *data_size, void **req_cls)
{
    (void)version;
    gw_server_t *srv = cls;
    admin_req_t *ar = *req_cls;
    if (!ar) {
        *req_cls = cm_xcalloc(1, sizeof(*ar));
        return MHD_YES;
    }
    if (*data_size) {
        if (ar->len + *data_size > GW_ADMIN_BODY_MAX) {
            ar->too_large = true;
        } else if (!ar->too_large) {
            ar->body = cm_xrealloc(ar->body, ar->len + *data_size + 1);
            memcpy(ar->body + ar->len, data, *data_size);
            ar->len += *data_size;
            ar->body[ar->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }
    gw_resp_t resp;
    gw_resp_init(&resp, GW_R_OK);
    gw_admin_call_t a = {.srv = srv,
                         .method = method,
                         .url = url,
                         .body = ar->body,
                         .body_len = ar->len,
                         .body_too_large = ar->too_large,
                         .p = &resp,
                         .conn = c,
                         .lookup = conn_lookup,
                         .audit = audit_hook};

    if (gw__admin_tls.ca && !gw__admin_tls_client_verified(c)) {
        gw_resp_error(&resp, GW_R_FORBIDDEN, NULL,
                      "this admin listener needs a client certificate signed by "
                      "server.admin_tls_client_ca");
        return gw_resp_send(c, &srv->admin->ctr, &resp);
    }
    /* Which routes have this path, and which of them this method. */
    gw_admin_match_t m;
    gw__admin_match(method, url, srv->cfg->admin_debug_routes, &m);
    const gw_admin_route_t *hit = m.route >= 0 ? &admin_routes[m.route] : NULL;
    const char *allow = m.allow;
    memcpy(a.arg, m.arg, sizeof(a.arg));
    const gw_admin_token_t *tok = NULL;
    if (m.needs_token) {
        uint8_t addr[16];
        bool have_addr = client_addr16(c, addr);
        int64_t blocked = have_addr ? auth_blocked_ms(addr) : 0;
        if (blocked) {
            gw_resp_error(&resp, GW_R_RATE_LIMITED, NULL,
                          "too many wrong admin tokens from this address: try again later");
            gw_resp_retry_after(&resp, (unsigned long long)((blocked + 999) / 1000));
            return gw_resp_send(c, &srv->admin->ctr, &resp);
        }
        tok = authenticate(srv, c);
        if (have_addr &&
            (tok || MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
            auth_note(addr, tok != NULL);
        if (!tok) {
            gw_resp_error(&resp, GW_R_UNAUTHORIZED, NULL,
                          "missing or wrong bearer token (Authorization: Bearer <token>)");
            gw_resp_header(&resp, "WWW-Authenticate", "Bearer realm=\"flashgate-admin\"");
            return gw_resp_send(c, &srv->admin->ctr, &resp);
        }
        a.who = tok->name;
    }
    switch (gw__admin_verdict(&m, tok ? tok->role : GW_ROLE_NONE)) {
    case GW_R_NOT_FOUND:
        gw_resp_error(&resp, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
        return gw_resp_send(c, &srv->admin->ctr, &resp);
    case GW_R_METHOD:
        gw_resp_error(&resp, GW_R_METHOD, NULL, "method %s is not allowed here; use %s", method,
                      allow);
        gw_resp_header(&resp, "Allow", "%s", allow);
        return gw_resp_send(c, &srv->admin->ctr, &resp);
    case GW_R_FORBIDDEN:
        gw_resp_error(&resp, GW_R_FORBIDDEN, NULL,
                      "token %s has the read role; %s %s needs a write token", tok->name, method,
                      url);
        return gw_resp_send(c, &srv->admin->ctr, &resp);
    default:
        break;
    }
    if (!hit) { /* GW_R_OK has a route (gw__admin_verdict: METHOD otherwise) */
        gw_resp_error(&resp, GW_R_NOT_FOUND, NULL, "no such resource: %s", url);
        return gw_resp_send(c, &srv->admin->ctr, &resp);
    }
    /* Changes are serialised: validate, apply, audit as one step. */
    bool lock = hit->role == GW_ROLE_WRITE;
    if (lock)
        pthread_mutex_lock(&admin_lock);
    hit->fn(&a);
    if (lock)
        pthread_mutex_unlock(&admin_lock);
    return send_call(&a);
}

static void admin_done(void *cls, struct MHD_Connection *c, void **req_cls,
                       enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    admin_req_t *ar = *req_cls;
    if (ar) {
        free(ar->body);
        free(ar);
        *req_cls = NULL;
    }
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* An address plain HTTP may listen on with a warning: private (RFC 1918,
 * RFC 6598 shared, RFC 4193 unique local, link-local) or the wildcard (a
 * container's: its interfaces are the pod's or the bridge's). */
static bool is_private_or_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return a == 0 || (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) ||
               (a >> 16) == (192u << 8 | 168) || (a >> 22) == (100u << 2 | 1) ||
               (a >> 16) == (169u << 8 | 254);
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_UNSPECIFIED(a) || (a->s6_addr[0] & 0xfe) == 0xfc ||
               IN6_IS_ADDR_LINKLOCAL(a);
    }
    return false;
}

/*
 * server.admin_cgroup. Under a CPU quota every thread of the process shares
 * it, and a gateway that uses all of it makes its own admin listener wait
 * whole quota periods for a turn (docs/runbook.md, "CPU quotas"). A thread
 * inherits its creator's cgroup, and libmicrohttpd starts the listener's thread
 * from the thread that calls MHD_start_daemon (the per-connection threads come
 * from the listener's): so a short-lived thread joins the cgroup first, by its
 * own id, and starts the daemon. No other thread of the process moves.
 */
typedef struct admin_boot {
    const char *cgroup;
    const struct sockaddr *sa;
    gw_server_t *srv;
    struct MHD_Daemon *daemon;
    int err;        /* MHD_start_daemon's errno (thread-local: carried back) */
    int rc;         /* joining the cgroup failed: CM_E* and what[] */
    char what[768];
} admin_boot_t;

static int join_cgroup(const char *dir, char *what, size_t len)
{
    /* cgroup v1 moves one thread through `tasks`; v2 through `cgroup.threads`
     * of a threaded group. */
    static const char *const files[] = {"tasks", "cgroup.threads"};
    char path[600], tid[24];
    int n = snprintf(tid, sizeof(tid), "%ld\n", (long)syscall(SYS_gettid));
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
            continue;
        ssize_t w = fd < 0 ? -1 : write(fd, tid, (size_t)n);
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (w == n)
            return 0;
        snprintf(what, len, "server.admin_cgroup: cannot move the admin listener's thread into %s: %s",
                 path, strerror(e));
        return CM_EIO;
    }
    snprintf(what, len,
             "server.admin_cgroup: %s has neither tasks (cgroup v1) nor cgroup.threads (v2)", dir);
    return CM_EINVAL;
}

static struct MHD_Daemon *admin_daemon(gw_server_t *srv, const struct sockaddr *sa)
{
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, gw__admin_tls.cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, gw__admin_tls.key},
        {gw__admin_tls.ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, gw__admin_tls.ca},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem *extra = gw__admin_tls.cert ? tls : tls + 3;
    return mhd_start(sa,
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                         (gw__admin_tls.cert ? MHD_USE_TLS : 0),
                     admin_cb, srv, 64, 30, admin_done, extra);
}

static void *admin_boot(void *arg)
{
    admin_boot_t *b = arg;
    b->rc = join_cgroup(b->cgroup, b->what, sizeof(b->what));
    if (b->rc == 0) {
        errno = 0;
        b->daemon = admin_daemon(b->srv, b->sa);
        b->err = errno;
    }
    return NULL;
}

/* The admin daemon, its threads in server.admin_cgroup when one is set. */
static int admin_listen(gw_server_t *srv, const struct sockaddr *sa, char *errbuf, size_t errlen)
{
    const char *cg = srv->cfg->admin_cgroup;
    if (!cg[0]) {
        srv->admin->daemon = admin_daemon(srv, sa);
        return srv->admin->daemon ? 0 : (errno ? errno : EADDRINUSE);
    }
    admin_boot_t b = {.cgroup = cg, .sa = sa, .srv = srv};
    pthread_t t;
    int e = pthread_create(&t, NULL, admin_boot, &b);
    if (e)
        return e;
    pthread_join(t, NULL);
    if (b.rc) {
        snprintf(errbuf, errlen, "%s", b.what);
        return -1;
    }
    srv->admin->daemon = b.daemon;
    return srv->admin->daemon ? 0 : (b.err ? b.err : EADDRINUSE);
}

/* The tokens, the listener's address and its TLS files, as a start needs
 * them; ss is the address. dry (--check-config): an absent
 * <data-dir>/admin.token is not generated, nothing is logged. */
static int admin_prepare(gw_server_t *srv, bool dry, struct sockaddr_storage *ss, char *errbuf,
                         size_t errlen)
{
    /* The token main sealed away from argv and the environment, else the
     * token file, else (an embedded server that never sealed) the config's own,
     * else <data-dir>/admin.token, generated at first start. */
    size_t sealed_len;
    const char *sealed = gw_config_admin_token(&sealed_len);
    bool chosen = true;
    int rc = 0;
    if (sealed)
        gw__admin_token_add(srv, "admin", GW_ROLE_WRITE, sealed, sealed_len);
    else if (srv->cfg->admin_token_file[0])
        rc = gw__admin_token_file_load(srv, dry, errbuf, errlen);
    else if (srv->cfg->admin_token[0]) {
        /* gw_config_check refuses it at load; a struct filled another way too */
        size_t n = strlen(srv->cfg->admin_token);
        if (n < GW_ADMIN_TOKEN_MIN) {
            snprintf(errbuf, errlen, "server.admin_token must be at least %d characters",
                     GW_ADMIN_TOKEN_MIN);
            return CM_EINVAL;
        }
        gw__admin_token_add(srv, "admin", GW_ROLE_WRITE, srv->cfg->admin_token, n);
    } else {
        chosen = false;
        rc = dry ? 0 : gw__admin_token_make(srv, errbuf, errlen);
    }
    if (rc)
        return rc;
    rc = gw__admin_tokens_load(srv, dry, errbuf, errlen);
    if (rc)
        return rc;
    rc = gw_addr_parse_listen(srv->cfg->admin_listen, ss, errbuf, errlen);
    if (rc)
        return rc;
    /* A generated token is fine on loopback (whoever reads the data dir is the
     * operator); anywhere else an operator must have chosen the tokens. */
    size_t generated = chosen ? 0 : 1;
    const struct sockaddr *sa = (const struct sockaddr *)ss;
    if (!is_loopback(sa) && srv->admin->ntokens <= generated) {
        snprintf(errbuf, errlen,
                 "admin listener %s is not on loopback: set server.admin_token_file "
                 "(--admin-token-file), server.admin_token or server.admin_tokens_file first",
                 srv->cfg->admin_listen);
        return CM_EINVAL;
    }
    if ((rc = gw__admin_tls_load(srv->cfg, errbuf, errlen)))
        return rc;
    /* Bearer tokens in clear text: never on a public address; on a private
     * one (or every address, a container's wildcard), said loudly. */
    if (!is_loopback(sa) && !gw__admin_tls.cert) {
        if (!is_private_or_any(sa)) {
            snprintf(errbuf, errlen,
                     "admin listener %s is a public address and speaks plain HTTP: set "
                     "server.admin_tls_cert and server.admin_tls_key (or listen on loopback or "
                     "a private address)",
                     srv->cfg->admin_listen);
            gw__admin_tls_free();
            return CM_EINVAL;
        }
        if (!dry)
            cm_log_warn("admin",
                        "ADMIN API IN PLAIN HTTP OFF LOOPBACK: bearer tokens cross the network in "
                        "clear text; set server.admin_tls_cert and server.admin_tls_key",
                        "admin_listen=%s", srv->cfg->admin_listen);
    }
    return 0;
}

int gw_admin_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    gw_server_t *srv = cm_xcalloc(1, sizeof(*srv));
    struct gw_server_admin admin = {0};
    srv->cfg = (gw_config_t *)cfg;
    srv->admin = &admin;
    struct sockaddr_storage ss;
    int rc = admin_prepare(srv, true, &ss, errbuf, errlen);
    gw__admin_tls_free();
    gw_secret_free(srv->admin->tokens, srv->admin->ntokens * sizeof(*srv->admin->tokens));
    free(srv);
    return rc;
}

int gw_admin_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    pthread_once(&admin_routes_once, admin_routes_assemble);
    struct sockaddr_storage ss;
    int rc = admin_prepare(srv, false, &ss, errbuf, errlen);
    if (rc)
        return rc;
    if ((rc = gw_audit_open(srv, errbuf, errlen)))
        return rc;
    if (gw__admin_tls.cert)
        cm_log_info("admin", "admin listener serves HTTPS", "cert=%s client_ca=%s",
                    srv->cfg->admin_tls_cert,
                    srv->cfg->admin_tls_client_ca[0] ? srv->cfg->admin_tls_client_ca : "none");
    int e = admin_listen(srv, (struct sockaddr *)&ss, errbuf, errlen);
    if (e < 0)
        return CM_EINVAL; /* errbuf says why: the cgroup */
    if (e) {
        snprintf(errbuf, errlen, "cannot listen on %s (admin): %s", srv->cfg->admin_listen,
                 strerror(e));
        return CM_EIO;
    }
    return 0;
}

void gw_admin_stop(gw_server_t *srv)
{
    if (srv->admin->daemon) {
        MHD_stop_daemon(srv->admin->daemon);
        srv->admin->daemon = NULL;
    }
    gw_audit_close(srv);
    gw__admin_tls_free();
    gw_secret_free(srv->admin->tokens, srv->admin->ntokens * sizeof(*srv->admin->tokens));
    srv->admin->tokens = NULL;
    srv->admin->ntokens = 0;
}
