/*
 * flashgate's option table and cross-key rules.
 *
 * Defaults, with the reasons:
 * - limits.user_rps 1, burst 5: a person presses "buy" a few times in a burst,
 *   not tens of times a second; scripts are held to one attempt per second.
 * - limits.ip_rps 20, burst 40: many people share one address behind NAT
 *   (offices, mobile carriers), so the per-IP limit is looser than per-user.
 * - limits.subnet_rps 200, burst 400 (the client's /24; for IPv6 its /48, the
 *   per-IP bucket being its /64): ten addresses' worth of the per-IP limit. A
 *   household behind one NAT is one address (an IPv6 household one /48 or /56)
 *   and meets its per-IP bucket first; a scalper who rents addresses by the
 *   thousand in a few subnets, or an IPv6 /48 with 65,536 /64s, is held to 400 at
 *   once and 200/s per subnet.
 * - sales.default_fair_window_ms 1000: a sale created with a start and no word
 *   on fairness gets a one-second start-window lottery, so pressing 2 ms after
 *   the start buys nothing over pressing within the second; first-come is an
 *   explicit "fair_window_ms": 0.
 * - sales.default_fair_early_ms 1000: that default window takes entries from a
 *   second before starts_at, so a buyer whose clock is a little behind (or who
 *   pressed a moment early) is in the draw rather than told 425.
 * - limits.sale_rps and limits.global_rps 0 (off): the overload controller
 *   protects capacity; these are for operators who know their backend's rate.
 *   Their bursts default to 1000 and 10000 so that turning a rate on is one
 *   setting.
 */
#include "gateway/base/gw_config.h"

#include "common/cm_addr.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_rate.h"
#include "common/cm_url.h"
#include "inventory/inv.h"
#include "queue/oq_order.h"

void *gw_secret_alloc(size_t len); /* gw_token.c */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a number macro as a default string: one default per fact */
#define STR_(x) #x
#define XSTR(x) STR_(x)

/*---- Host:port and friends ----*/

int gw_config_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
    char why[160];
    int p = 0;
    if (!s || !host || hostlen == 0 ||
        cm_hostport_parse(s, CM_HOSTPORT_PORT_ZERO, host, hostlen, &p, why, sizeof(why)) != 0)
        return CM_EINVAL;
    if (port)
        *port = (unsigned)p;
    return 0;
}

static const char *check_hostport(const char *s, bool port0_ok)
{
    char host[256], why[160];
    int port = 0;
    if (cm_hostport_parse(s, CM_HOSTPORT_PORT_ZERO, host, sizeof(host), &port, why,
                          sizeof(why)) != 0)
        return "must be HOST:PORT with an IP address or host name (IPv6 as [::1]:8080), "
               "port 0..65535";
    if (!port0_ok && port == 0)
        return "port must be 1..65535";
    return NULL;
}

static const char *v_listen(const void *v)
{
    return check_hostport(v, true);
}

static const char *v_admin_token(const void *v)
{
    for (const char *p = v; *p; p++)
        if (!isgraph((unsigned char)*p))
            return "must be printable ASCII without spaces (it is sent as a bearer token)";
    return NULL;
}

/* debug.wall_offset_ms: a signed decimal count of ms, within a year either way. */
static const char *v_wall_offset(const void *v)
{
    const char *s = v;
    if (!*s)
        return NULL;
    char *end = NULL;
    errno = 0;
    long long ms = strtoll(s, &end, 10);
    if (errno || end == s || *end || ms < -31536000000LL || ms > 31536000000LL)
        return "must be a whole number of ms, -31536000000..31536000000 (a year), or empty";
    return NULL;
}

/* server.liveness_timeout: an idle loop turns every 500 ms at most (the
 * connection guard's sweep, gateway/edge/gw_conn.c), so a bound under 1 s
 * would call an idle loop stuck. */
static const char *v_liveness(const void *v)
{
    uint64_t ms = *(const uint64_t *)v;
    return ms == 0 || ms >= 1000 ? NULL : "must be 0 (off) or at least 1s";
}

static const char *v_nonempty(const void *v)
{
    return *(const char *)v ? NULL : "must not be empty";
}

/* "memory", "redis://[user:pass@]host[:port][/db]" or "redis-cluster://[user:pass@]host[:port],...":
 * one parser for every redis URL (cm_redis_url_parse, which reads hosts with cm_hostport_parse). */
static const char *v_inventory(const void *v)
{
    const char *s = v;
    static const char rule[] = "must be \"memory\", redis://[user:password@]HOST[:PORT][/DB] or "
                               "redis-cluster://[user:password@]HOST[:PORT][,HOST[:PORT]...]";
    cm_redis_url_t u;
    char why[256];
    if (strcmp(s, "memory") == 0)
        return NULL;
    bool cluster = strncmp(s, "redis-cluster://", 16) == 0;
    if (!cluster && (strncmp(s, "redis://", 8) != 0 || strchr(s, '?')))
        return rule;
    return cm_redis_url_parse(s, &u, why, sizeof(why)) == 0 ? NULL : rule;
}

/* "embedded" or host:port[,host:port...]. */
static const char *v_brokers(const void *v)
{
    const char *s = v;
    static const char rule[] = "must be \"embedded\", \"none\" or HOST:PORT[,HOST:PORT...]";
    if (strcmp(s, "embedded") == 0 || strcmp(s, "none") == 0)
        return NULL;
    if (!*s)
        return rule;
    for (const char *p = s;;) {
        size_t n = strcspn(p, ",");
        char item[256];
        if (n >= sizeof(item))
            return rule;
        memcpy(item, p, n);
        item[n] = '\0';
        if (check_hostport(item, false))
            return rule;
        if (!p[n])
            break;
        p += n + 1;
    }
    return NULL;
}

/* Kafka's own rule for topic names. */
static const char *v_topic(const void *v)
{
    const char *s = v;
    size_t n = strlen(s);
    if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return "must be a Kafka topic name: 1..249 of [A-Za-z0-9._-]";
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return "must be a Kafka topic name: 1..249 of [A-Za-z0-9._-]";
    return NULL;
}

/* Comma list of IPv4/IPv6 addresses or CIDRs; spaces around items allowed. */
static const char *v_cidrs(const void *v)
{
    static const char rule[] =
        "must be a comma list of IP addresses or CIDRs (10.0.0.0/8, ::1, fd00::/8)";
    const char *s = v;
    while (*s) {
        size_t n = strcspn(s, ",");
        char item[128];
        const char *b = s, *e = s + n;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (e == b || (size_t)(e - b) >= sizeof(item))
            return rule;
        memcpy(item, b, (size_t)(e - b));
        item[e - b] = '\0';
        char *slash = strchr(item, '/');
        long maxbits;
        unsigned char addr[16];
        if (slash)
            *slash = '\0';
        if (inet_pton(AF_INET, item, addr) == 1)
            maxbits = 32;
        else if (inet_pton(AF_INET6, item, addr) == 1)
            maxbits = 128;
        else
            return rule;
        if (slash) {
            const char *d = slash + 1;
            if (!*d || strlen(d) > 3)
                return rule;
            for (const char *p = d; *p; p++)
                if (!isdigit((unsigned char)*p))
                    return rule;
            if (atol(d) > maxbits)
                return rule;
        }
        s += n;
        if (*s == ',') {
            s++;
            if (!*s)
                return rule; /* trailing comma */
        }
    }
    return NULL;
}

/*---- proxy.routes ----*/

static const char *const crit_names[] = {"critical", "degradable", "sheddable", NULL};

bool gw_route_prefix_matches(const char *path, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (pl == 0 || strncmp(path, prefix, pl) != 0)
        return false;
    return prefix[pl - 1] == '/' || path[pl] == '\0' || path[pl] == '/';
}

/*
 * Paths the gateway answers itself, by whole segments as routes match: a
 * route may neither take them (its prefix at or above one: "/", "/v1",
 * "/admin") nor sit under one (it would never be reached, or take what the
 * gateway answers 404: "/v1/sales/x/y"). "/a", "/v1/s" or "/healthzz" take
 * none of them and are allowed (a string compare refused "/a" as "/admin/").
 */
static bool reserved_prefix(const char *p)
{
    static const char *const own[] = {"/v1/sales", "/v1/orders", "/healthz", "/readyz",
                                      "/admin"};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (gw_route_prefix_matches(own[i], p) || gw_route_prefix_matches(p, own[i]))
            return true;
    return false;
}

static bool route_fail(char *errbuf, size_t errlen, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool route_fail(char *errbuf, size_t errlen, size_t i, const char *fmt, ...)
{
    int n = snprintf(errbuf, errlen, "route %zu: ", i);
    if (n < 0 || (size_t)n >= errlen)
        return false;
    va_list ap;
    va_start(ap, fmt);
    /* va_start is just above; clang-tidy 14's analyzer loses it on some paths
     * through this file's callers (a false positive, as in gw_metrics.c's put) */
    vsnprintf(errbuf + n, errlen - (size_t)n, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    return false;
}

static bool route_one(json_t *o, size_t i, gw_proxy_route_t *r, char *errbuf, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (!json_is_object(o))
        return route_fail(errbuf, errlen, i, "%s", "must be an object");
    static const char *const keys[] = {"prefix",      "upstream", "timeout_ms",
                                       "latency_target_ms", "criticality", "fallback",
                                       NULL};
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool known = false;
        for (const char *const *a = keys; *a; a++)
            known |= strcmp(*a, k) == 0;
        if (!known)
            return route_fail(errbuf, errlen, i,
                              "unknown field %.64s (prefix, upstream, timeout_ms, "
                              "latency_target_ms, criticality, fallback)",
                              k);
    }
    const char *prefix = json_string_value(json_object_get(o, "prefix"));
    if (!prefix || prefix[0] != '/' || strlen(prefix) >= sizeof(r->prefix) || strchr(prefix, '?'))
        return route_fail(errbuf, errlen, i, "%s",
                          "prefix must be a path starting with / (at most 127 characters)");
    if (reserved_prefix(prefix))
        return route_fail(errbuf, errlen, i,
                          "prefix %.127s overlaps a route flashgate answers itself "
                          "(/v1/sales/, /v1/orders/, /healthz, /readyz, /admin/)",
                          prefix);
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
    const char *up = json_string_value(json_object_get(o, "upstream"));
    if (!up || strlen(up) >= sizeof(r->upstream) ||
        (strncmp(up, "http://", 7) != 0 && strncmp(up, "https://", 8) != 0) ||
        strchr(up, '?') || strchr(up, ' ') || up[strlen(up) - 1] == '/' ||
        strlen(up) <= (up[4] == 's' ? 8u : 7u))
        return route_fail(errbuf, errlen, i, "%s",
                          "upstream must be http://HOST[:PORT][/BASE] or https://..., without a "
                          "trailing / or query (the request path and query are appended)");
    snprintf(r->upstream, sizeof(r->upstream), "%s", up);
    r->timeout_ms = 1000;
    json_t *t = json_object_get(o, "timeout_ms");
    if (t) {
        if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 60000)
            return route_fail(errbuf, errlen, i, "%s",
                              "timeout_ms must be an integer from 1 to 60000");
        r->timeout_ms = (uint32_t)json_integer_value(t);
    }
    /* A target past the timeout would never be reached: the call is dropped first. */
    json_t *lt = json_object_get(o, "latency_target_ms");
    if (lt) {
        if (!json_is_integer(lt) || json_integer_value(lt) < 1 ||
            json_integer_value(lt) > (json_int_t)r->timeout_ms)
            return route_fail(errbuf, errlen, i,
                              "latency_target_ms must be an integer from 1 to the route's "
                              "timeout_ms (%u)",
                              (unsigned)r->timeout_ms);
        r->latency_target_ms = (uint32_t)json_integer_value(lt);
    }
    r->crit = 2; /* sheddable: the least important unless told */
    json_t *c = json_object_get(o, "criticality");
    if (c) {
        int found = -1;
        for (int x = 0; crit_names[x] && json_is_string(c); x++)
            if (strcmp(json_string_value(c), crit_names[x]) == 0)
                found = x;
        if (found < 0)
            return route_fail(errbuf, errlen, i, "%s",
                              "criticality must be critical, degradable or sheddable");
        r->crit = found;
    }
    json_t *fb = json_object_get(o, "fallback");
    if (fb) {
        static const char rule[] =
            "fallback must be {\"status\":200..599,\"content_type\":\"...\",\"body\":\"...\"} "
            "(not 204 or 304; body at most 1023 bytes)";
        if (!json_is_object(fb))
            return route_fail(errbuf, errlen, i, "%s", rule);
        json_object_foreach(fb, k, v) {
            if (strcmp(k, "status") != 0 && strcmp(k, "content_type") != 0 &&
                strcmp(k, "body") != 0)
                return route_fail(errbuf, errlen, i, "%s", rule);
        }
        json_t *st = json_object_get(fb, "status");
        json_t *ct = json_object_get(fb, "content_type");
        json_t *body = json_object_get(fb, "body");
        if (!json_is_integer(st) || json_integer_value(st) < 200 || json_integer_value(st) > 599 ||
            (ct && (!json_is_string(ct) || json_string_length(ct) >= sizeof(r->fb_type) ||
                    strpbrk(json_string_value(ct), "\r\n"))) ||
            (body && (!json_is_string(body) || json_string_length(body) >= sizeof(r->fb_body))))
            return route_fail(errbuf, errlen, i, "%s", rule);
        /* A fallback is an answer with a body (gw_px_render sends its
         * Content-Type, Content-Length and body); a 204 or 304 ends at its
         * head (RFC 9112 6.3), so the body would be read as the keep-alive
         * connection's next answer. Refused here rather than rendered
         * without its body: the operator's body would vanish unseen, and a
         * 304 answers a conditional request the route never checks. */
        json_int_t status = json_integer_value(st);
        if (status == 204 || status == 304)
            return route_fail(errbuf, errlen, i,
                              "fallback.status %d cannot be used: a 204 or 304 answer carries no "
                              "body (use 200, with an empty body if need be)",
                              (int)status);
        r->has_fallback = true;
        r->fb_status = (unsigned)json_integer_value(st);
        snprintf(r->fb_type, sizeof(r->fb_type), "%s",
                 ct ? json_string_value(ct) : "application/json");
        if (body) {
            r->fb_len = json_string_length(body);
            memcpy(r->fb_body, json_string_value(body), r->fb_len);
        }
    }
    return true;
}

int gw_proxy_routes_parse(const char *text, gw_proxy_route_t *out, size_t *n, char *errbuf,
                    size_t errlen)
{
    *n = 0;
    if (!text || !*text)
        return 0;
    json_error_t e;
    json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!a || !json_is_array(a)) {
        snprintf(errbuf, errlen,
                 "must be a JSON list of routes [{\"prefix\":...,\"upstream\":...}]%s%s",
                 a ? "" : ": ", a ? "" : e.text);
        json_decref(a);
        return CM_EINVAL;
    }
    if (json_array_size(a) > GW_PROXY_ROUTES_MAX) {
        snprintf(errbuf, errlen, "at most %d routes", GW_PROXY_ROUTES_MAX);
        json_decref(a);
        return CM_EINVAL;
    }
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        if (!route_one(o, i, &out[i], errbuf, errlen)) {
            json_decref(a);
            return CM_EINVAL;
        }
        /* The longest matching prefix picks a request's route (gw_px_match):
         * the same prefix twice would leave the choice to list order. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out[j].prefix, out[i].prefix) == 0) {
                snprintf(errbuf, errlen,
                         "route %zu: prefix %.127s is route %zu's already (each prefix once: "
                         "a request goes to the route with the longest matching prefix)",
                         i, out[i].prefix, j);
                json_decref(a);
                return CM_EINVAL;
            }
        }
    }
    *n = json_array_size(a);
    json_decref(a);
    return 0;
}

static const char *v_routes(const void *v)
{
    /* The rule text must be static: keep the last one per thread. */
    static _Thread_local char rule[300];
    static _Thread_local gw_proxy_route_t tmp[GW_PROXY_ROUTES_MAX];
    size_t n;
    return gw_proxy_routes_parse(v, tmp, &n, rule, sizeof(rule)) ? rule : NULL;
}

/*---- identity.* ----*/

/* An HTTP field or cookie name: 1..127 token characters (RFC 9110 5.6.2), or empty. */
static const char *v_token_name(const void *v)
{
    const char *s = v;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return "must be empty or a header/cookie name (letters, digits, !#$%&'*+-.^_`|~)";
    return NULL;
}

void gw_identity_config(const gw_config_t *cfg, id_config_t *out)
{
    *out = cfg->identity;
    out->leeway_s = (uint32_t)cfg->id_leeway_s;
    out->jwks_refresh_s = (uint32_t)(cfg->id_jwks_refresh_ms / 1000);
    out->jwks_min_refetch_s = (uint32_t)(cfg->id_jwks_min_refetch_ms / 1000);
    out->jwks_timeout_ms = (uint32_t)cfg->id_jwks_timeout_ms;
    out->max_token_bytes = (uint32_t)cfg->id_max_token_bytes;
    out->jwks_max_stale_s = (uint32_t)(cfg->id_jwks_max_stale_ms / 1000);
    out->max_lifetime_s = (uint32_t)cfg->id_max_lifetime_s;
}

/*---- The table ----*/

static const char *const log_formats[] = {"logfmt", "json", NULL};
static const char *const durabilities[] = {"write", "fsync", NULL};
static const char *const ol_levels[] = {"auto", "0", "1", "2", "3", NULL};
static const char *const id_modes[] = {"none", "jwt", "header", NULL};

#define OFF(f) offsetof(gw_config_t, f)
#define SZ(f) sizeof(((gw_config_t *)0)->f)
#define RT CM_OPT_RUNTIME
#define IDS(k, f, d, meta, what, check)                                                            \
    {"identity." k, CM_OPT_STR, OFF(identity.f), SZ(identity.f), d, 0, 0, NULL, 0, NULL, meta,     \
     what, check}
#define RPS(k, f, d, what)                                                                         \
    {k, CM_OPT_MILLI, OFF(f), 0, d, 0, CM_RATE_MILLI_MAX, NULL, RT, NULL, "RPS",                   \
     what " rate limit in requests/s (0.001 steps), 0 = off", NULL}
#define BURST(k, f, d, what)                                                                       \
    {k, CM_OPT_UINT, OFF(f), 0, d, 0, CM_RATE_BURST_MAX, NULL, RT, NULL, "N",                      \
     what " burst: requests allowed at once; needs >= 1 when the rate is on", NULL}

const cm_opt_t gw_config_opts[] = {
    {"server.listen", CM_OPT_STR, OFF(listen), SZ(listen), "0.0.0.0:8080", 0, 0, NULL, 0,
     "listen", "HOST:PORT", "public HTTP listener (IPv6 as [::]:8080; port 0 = any free port, one for every worker, "
     "written to <data-dir>/listen.addr); the start refuses a port another process listens on",
     v_listen},
    {"server.admin_listen", CM_OPT_STR, OFF(admin_listen), SZ(admin_listen), "127.0.0.1:9090", 0,
     0, NULL, 0, "admin-listen", "HOST:PORT",
     "admin API listener (a thread per connection, at most 64 connections, 30 s idle timeout: "
     "the server.* connection limits and deadlines are the public listener's); keep it on "
     "loopback or a private network",
     v_listen},
    {"server.admin_token", CM_OPT_STR, OFF(admin_token), SZ(admin_token), "", 0, 0, NULL,
     CM_OPT_SECRET, "admin-token", "TOKEN",
     "bearer token the admin API requires, " XSTR(GW_ADMIN_TOKEN_MIN) "..255 printable "
     "characters (better server.admin_token_file: a flag shows in ps); empty = generate one into "
     "<data-dir>/admin.token (mode 0600)",
     v_admin_token},
    {"server.admin_tokens_file", CM_OPT_STR, OFF(admin_tokens_file), SZ(admin_tokens_file), "",
     0, 0, NULL, 0, "admin-tokens-file", "FILE",
     "named admin tokens, one name:role:token per line (role read|write, token "
     XSTR(GW_ADMIN_TOKEN_MIN) "..256 printable characters), mode 0600; "
     "empty = <data-dir>/admin.tokens if it exists",
     NULL},
    {"server.admin_token_file", CM_OPT_STR, OFF(admin_token_file), SZ(admin_token_file), "", 0,
     0, NULL, 0, "admin-token-file", "FILE",
     "file holding the admin bearer token (" XSTR(GW_ADMIN_TOKEN_MIN) "..255 printable "
     "characters, one line; no access "
     "for others, e.g. mode 0400 or 0440), read once at start: keeps the token out of argv and "
     "the environment; instead of server.admin_token",
     NULL},
    {"server.admin_cgroup", CM_OPT_STR, OFF(admin_cgroup), SZ(admin_cgroup), "", 0, 0, NULL, 0,
     "admin-cgroup", "DIR",
     "a CPU cgroup directory for the admin listener's threads (cgroup v1 cpu, or a v2 threaded "
     "group): under a CPU quota every thread shares it, and a gateway that uses all of it "
     "delays its own health checks by whole quota periods (docs/runbook.md, CPU quotas); "
     "empty = the process's own cgroup",
     NULL},
    {"server.admin_tls_cert", CM_OPT_STR, OFF(admin_tls_cert), SZ(admin_tls_cert), "", 0, 0,
     NULL, 0, "admin-tls-cert", "FILE",
     "PEM certificate (chain) the admin listener serves HTTPS with, read at start; empty = plain "
     "HTTP, which a non-loopback admin_listen allows only on a private address (RFC 1918, "
     "RFC 4193), with a warning",
     NULL},
    {"server.admin_tls_key", CM_OPT_STR, OFF(admin_tls_key), SZ(admin_tls_key), "", 0, 0, NULL, 0,
     "admin-tls-key", "FILE",
     "PEM private key of server.admin_tls_cert (no access for others, e.g. mode 0400 or 0440)",
     NULL},
    {"server.admin_tls_client_ca", CM_OPT_STR, OFF(admin_tls_client_ca),
     SZ(admin_tls_client_ca), "", 0, 0, NULL, 0, "admin-tls-client-ca", "FILE",
     "PEM CA certificates: with server.admin_tls_cert, the admin listener asks each client for a "
     "certificate and refuses a connection without one that chains to them; empty = none asked",
     NULL},
    {"server.admin_debug_routes", CM_OPT_BOOL, OFF(admin_debug_routes), 0, "false", 0, 0, NULL,
     0, "enable-debug-routes", NULL,
     "serve the fault-injection routes (PUT /admin/v1/debug/clock, /admin/v1/debug/broker, "
     "/admin/v1/debug/overload, /admin/v1/debug/stall: tests and rehearsals only) and allow "
     "the debug.* test seams; off, the routes answer 404 and a debug.* key refuses the start",
     NULL},
    {"server.liveness_timeout", CM_OPT_MS, OFF(liveness_timeout_ms), 0, "10s", 0, 3600000, NULL,
     0, NULL, "DURATION",
     "GET /healthz (admin listener) answers 503 naming the worker whose event loop has not "
     "turned for this long (a handler stuck in a blocking call), and systemd's watchdog "
     "(WatchdogSec, sd_notify WATCHDOG=1) is pinged only while no loop is; an idle loop turns "
     "every 0.5 s; 0 = off (always alive)",
     v_liveness},
    {"server.threads", CM_OPT_UINT, OFF(threads), 0, "0", 0, 64, NULL, 0, "threads", "N",
     "worker threads (one event loop each), 0 = one per CPU", NULL},
    {"server.node_id", CM_OPT_UINT, OFF(node_id), 0, "1024", 0, 1024, NULL, 0, "node-id", "N",
     "node id in order ids, unique per gateway in the fleet: 0..1023; 1024 = derive one", NULL},
    {"server.body_limit", CM_OPT_SIZE, OFF(body_limit), 0, "4k", 256, 1u << 20, NULL, 0, NULL,
     "SIZE", "largest request body the public listener accepts; larger gets 413 (admin API: 64k)",
     NULL},
    {"server.max_connections", CM_OPT_UINT, OFF(max_connections), 0, "10000", 1, 1000000, NULL,
     0, NULL, "N",
     "public listener: open connections per worker; past it a new one evicts the oldest without "
     "a request in progress", NULL},
    {"server.connection_timeout", CM_OPT_MS, OFF(connection_timeout_ms), 0, "30s", 1000, 3600000,
     NULL, 0, NULL, "DURATION",
     "public listener: idle keep-alive connections are closed after this; so is a connection "
     "whose answer stays unsent this long and then this long again without the client reading "
     "a byte (connections.slow_reads)",
     NULL},
    {"server.drain_grace", CM_OPT_MS, OFF(drain_grace_ms), 0, "0s", 0, 600000, NULL, 0, NULL,
     "DURATION",
     "after SIGTERM, /readyz answers 503 this long while every other route serves on, so load balancers stop sending first",
     NULL},
    {"server.drain_timeout", CM_OPT_MS, OFF(drain_timeout_ms), 0, "10s", 1000, 600000, NULL, 0,
     NULL, "DURATION",
     "then in-flight requests finish and the relay flushes within this, else the process exits anyway (the spool keeps every order)",
     NULL},
    {"server.max_connections_per_ip", CM_OPT_UINT, OFF(max_connections_per_ip), 0, "1024", 0,
     1000000, NULL, 0, NULL, "N",
     "public listener: open connections per client address (IPv6: per /64) over all workers; "
     "0 = no cap", NULL},
    {"server.proxy_max_connections", CM_OPT_UINT, OFF(proxy_max_connections), 0, "0", 0, 1000000,
     NULL, 0, NULL, "N",
     "open connections per trusted proxy address (server.trusted_proxies); 0 = no cap", NULL},
    {"server.head_timeout", CM_OPT_MS, OFF(head_timeout_ms), 0, "10s", 100, 3600000, NULL, 0,
     NULL, "DURATION",
     "public listener: the whole request head must arrive within this (bytes do not reset it); "
     "after an answer on a keep-alive connection, within the larger of this and "
     "connection_timeout",
     NULL},
    {"server.body_min_rate", CM_OPT_SIZE, OFF(body_min_rate), 0, "1k", 0, 1u << 30, NULL, 0,
     NULL, "SIZE",
     "public listener: a request body must arrive at this many bytes/s on average after a 2 s "
     "grace; 0 = off (then a body that brings no byte for connection_timeout is closed)",
     NULL},
    {"server.trusted_proxies", CM_OPT_STR, OFF(trusted_proxies), SZ(trusted_proxies), "", 0, 0,
     NULL, 0, NULL, "CIDR,...",
     "proxies whose X-Forwarded-For is believed for the client IP; empty = none", v_cidrs},
    {"server.max_sales", CM_OPT_UINT, OFF(max_sales), 0, "1024", 1, 1000000, NULL, 0, NULL, "N",
     "most sales defined at once", NULL},
    {"sales.default_fair_window_ms", CM_OPT_UINT, OFF(default_fair_window_ms), 0, "1000", 0,
     600000, NULL, 0, NULL, "MS",
     "start-window lottery of a sale created with starts_at and without fair_window_ms (entries "
     "from sales.default_fair_early_ms before the start to this many ms after it, drawn at "
     "random; not with waiting_room_rate); "
     "0 = such a sale is first-come",
     NULL},
    {"sales.max_registrations", CM_OPT_UINT, OFF(max_registrations), 0, "1000000", 1, 100000000,
     NULL, 0, NULL, "N",
     "most persons one sale's registration takes (a registration past it gets 409 "
     "registration_full)",
     NULL},
    {"sales.max_lottery_entries", CM_OPT_UINT, OFF(max_lottery_entries), 0, "1000000", 1,
     100000000, NULL, 0, NULL, "N",
     "most entries one sale's start-window lottery holds on this gateway (~350 bytes each in "
     "memory: 1000000 is ~370 MB); a new person's entry past it gets 409 lottery_full",
     NULL},
    {"sales.default_fair_early_ms", CM_OPT_UINT, OFF(default_fair_early_ms), 0, "1000", 0,
     3600000, NULL, 0, NULL, "MS",
     "early acceptance of that default lottery: entries from this many ms before starts_at, so "
     "a buyer whose clock runs a little behind is not left out (a sale's fair_early_ms wins)",
     NULL},
    {"server.data_dir", CM_OPT_STR, OFF(data_dir), SZ(data_dir), "./data", 0, 0, NULL, 0,
     "data-dir", "DIR", "directory for the order spool and local state", v_nonempty},
    {"log.level", CM_OPT_ENUM, OFF(log_level), 0, "info", 0, 0, cm_log_level_names, 0, NULL, NULL,
     "log threshold", NULL},
    {"log.format", CM_OPT_ENUM, OFF(log_format), 0, "logfmt", 0, 0, log_formats, 0, NULL, NULL,
     "log line format", NULL},
    {"log.access_sample", CM_OPT_MILLI, OFF(access_sample_milli), 0, "0", 0, 1000, NULL, 0,
     "access-log-sample", "FRACTION",
     "fraction of public requests written to the log as access lines (0.001 steps), 0 = off",
     NULL},
    {"log.summary_interval", CM_OPT_MS, OFF(summary_interval_ms), 0, "10s", 0, 3600000, NULL, 0,
     NULL, "DURATION", "how often counts of rejections are logged, 0 = never", NULL},
    {"inventory.backend", CM_OPT_STR, OFF(inventory), SZ(inventory), "memory", 0, 0, NULL, 0,
     "inventory", "memory|redis://HOST:PORT[/DB]|redis-cluster://HOST:PORT,...",
     "where stock lives: in this process, or Redis shared by the fleet (one server, or a Redis "
     "Cluster named by a seed list)",
     v_inventory},
    {"inventory.max_held_orders", CM_OPT_UINT, OFF(inv_max_held_orders), 0,
     XSTR(INV_MEM_MAX_HELD_DEFAULT), 16,
     4000000000, NULL, 0, NULL, "N",
     "memory backend: most orders held at once over all sales (~24-34 bytes each); past it a "
     "buy gets 503 until orders are released",
     NULL},
    {"inventory.redis_timeout", CM_OPT_MS, OFF(redis_timeout_ms), 0,
     XSTR(INV_REDIS_TIMEOUT_MS_DEFAULT) "ms", 1, 60000, NULL, 0, NULL, "DURATION",
     "a Redis call slower than this fails (the buy path fails closed; in a fleet so do a "
     "worker's registration, waiting-room and admission-token calls)",
     NULL},
    {"inventory.redis_pool", CM_OPT_UINT, OFF(redis_pool), 0, XSTR(INV_REDIS_POOL_DEFAULT), 1,
     64, NULL, 0, NULL, "N", "Redis connections per worker", NULL},
    {"inventory.redis_batch", CM_OPT_UINT, OFF(redis_batch), 0, XSTR(INV_REDIS_BATCH_DEFAULT), 1,
     INV_REDIS_BATCH_MAX, NULL, 0, NULL, "N",
     "a loop iteration's reserves of one sale go to Redis as one script call of at most this "
     "many (1: a call each; docs/fleet.md)",
     NULL},
    {"inventory.redis_password", CM_OPT_STR, OFF(redis_password), SZ(redis_password), "", 0, 0,
     NULL, CM_OPT_SECRET, NULL, "PASSWORD",
     "Redis password when the URL has none (inventory, fleet and keys; env "
     "FLASHGATE_INVENTORY_REDIS_PASSWORD keeps it out of the command line)",
     NULL},
    {"spool.durability", CM_OPT_ENUM, OFF(durability), 0, "write", 0, 0, durabilities, 0,
     "durability", NULL,
     "write: an order survives a crash of the process; fsync: also of the machine (slower)",
     NULL},
    {"spool.max_bytes", CM_OPT_SIZE, OFF(spool_max_bytes), 0, "1g", 1u << 20, 1ull << 40, NULL,
     0, NULL, "SIZE", "spool size past which the buy path answers 503", NULL},
    {"spool.segment_bytes", CM_OPT_SIZE, OFF(spool_segment_bytes), 0, "64m", 64u << 10, 1u << 30,
     NULL, 0, NULL, "SIZE", "spool segment file size", NULL},
    {"kafka.brokers", CM_OPT_STR, OFF(kafka_brokers), SZ(kafka_brokers), "embedded", 0, 0, NULL,
     0, "kafka-brokers", "embedded|none|HOST:PORT,...",
     "Kafka bootstrap servers; embedded = an in-process broker (one machine, tests); none = no Kafka, the spool is the queue", v_brokers},
    {"kafka.topic", CM_OPT_STR, OFF(kafka_topic), SZ(kafka_topic), OQ_TOPIC_ORDERS, 0, 0,
     NULL, 0, "kafka-topic", "TOPIC", "topic accepted orders go to (key = order id)", v_topic},
    {"kafka.outcomes_topic", CM_OPT_STR, OFF(kafka_outcomes_topic), SZ(kafka_outcomes_topic),
     OQ_TOPIC_OUTCOMES, 0, 0, NULL, 0, NULL, "TOPIC",
     "topic settlement results come back on", v_topic},
    {"kafka.properties", CM_OPT_KV, OFF(kafka_properties), SZ(kafka_properties), "", 0, 0, NULL,
     0, NULL, "KEY=VALUE",
     "librdkafka properties passed through (repeatable flag; env takes k=v,k=v)", NULL},
    RPS("limits.global_rps", global_rps, "0", "whole-gateway"),
    BURST("limits.global_burst", global_burst, "10000", "whole-gateway"),
    RPS("limits.sale_rps", sale_rps, "0", "per-sale"),
    BURST("limits.sale_burst", sale_burst, "1000", "per-sale"),
    RPS("limits.user_rps", user_rps, "1", "per-user"),
    BURST("limits.user_burst", user_burst, "5", "per-user"),
    RPS("limits.ip_rps", ip_rps, "20", "per-client-IP"),
    BURST("limits.ip_burst", ip_burst, "40", "per-client-IP"),
    RPS("limits.subnet_rps", subnet_rps, "200", "per-client-subnet (/24, IPv6 /48)"),
    BURST("limits.subnet_burst", subnet_burst, "400", "per-client-subnet (/24, IPv6 /48)"),
    {"limits.max_keys", CM_OPT_UINT, OFF(limiter_max_keys), 0, "1000000", 1000, 100000000, NULL,
     0, NULL, "N",
     "most users + IPs tracked by the limiters (32 bytes each, paged in at start); idle ones are "
     "evicted first",
     NULL},
    {"orders.max_known", CM_OPT_UINT, OFF(orders_max_known), 0, "1000000", 1024, 1000000000,
     NULL, 0, NULL, "N",
     "most orders whose status this gateway keeps (~29 bytes each, resident from the start); the "
     "oldest settled ones are evicted first",
     NULL},
    {"overload.level", CM_OPT_ENUM, OFF(ol_level), 0, "auto", 0, 0, ol_levels, 0, NULL, NULL,
     "degradation level at start: auto (from the queuing delay) or pinned 0..3 (see PUT "
     "/admin/v1/degrade)",
     NULL},
    {"overload.adaptive", CM_OPT_BOOL, OFF(ol_adaptive), 0, "true", 0, 0, NULL, 0, NULL, NULL,
     "adaptive concurrency limit per dependency (Redis, spool fsync, upstreams); false = off",
     NULL},
    {"overload.accept_pause", CM_OPT_BOOL, OFF(ol_accept_pause), 0, "true", 0, 0, NULL, 0, NULL,
     NULL, "when a worker's accept queue holds more than a queue target of its request rate, "
     "stop listening (the kernel refuses new connections at once) until it catches up, and "
     "answer 503 queue_time to a request whose bytes arrived 2.5 queue targets before its head "
     "was read (4 on a connection the shut door keeps); "
     "off while the level is pinned to 0, 1 or 2",
     NULL},
    {"overload.shed_buys", CM_OPT_BOOL, OFF(ol_shed_buys), 0, "false", 0, 0, NULL, 0, NULL, NULL,
     "at level 2+ past the queuing target, refuse buys outside the admitted user priorities "
     "(DAGOR); off: under a CPU cap a 503 costs more than half an accept (kernel connection "
     "work), so refusing buys lowers goodput (docs/design.md, Overload)",
     NULL},
    {"overload.queue_target", CM_OPT_MS, OFF(ol_queue_target_ms), 0, "20ms", 1, 10000, NULL, 0,
     NULL, "DURATION", "average queuing delay of a worker past which it sheds (DAGOR: 20 ms); a "
     "quarter of it is the dependency RTT below which an adaptive limit never shrinks",
     NULL},
    {"overload.queue_interval", CM_OPT_MS, OFF(ol_queue_interval_ms), 0, "50ms", 10, 10000, NULL,
     0, NULL, "DURATION", "window over which the queuing delay is averaged", NULL},
    {"overload.exit_hold", CM_OPT_MS, OFF(ol_exit_hold_ms), 0, "2s", 0, 600000, NULL, 0, NULL,
     "DURATION", "a level is left only after the delay stayed below its exit threshold this long",
     NULL},
    {"overload.limit_min", CM_OPT_UINT, OFF(ol_limit_min), 0, "4", 1, 100000, NULL, 0, NULL, "N",
     "lowest concurrency limit per dependency per worker", NULL},
    {"overload.limit_initial", CM_OPT_UINT, OFF(ol_limit_initial), 0, "256", 1, 1000000, NULL, 0,
     NULL, "N",
     "starting concurrency limit of the inventory (Redis) and the spool per worker (high: the "
     "first burst of a sale is buyers, and a pipelined Redis serves hundreds in flight); slow "
     "start grows it further while the dependency answers within the tolerated RTT",
     NULL},
    {"overload.upstream_limit_initial", CM_OPT_UINT, OFF(ol_up_limit_initial), 0, "16", 1,
     1000000, NULL, 0, NULL, "N",
     "starting concurrency limit of each proxied upstream per worker: a window slow start "
     "doubles each round trip until the upstream shows a queue (low: an upstream busy from "
     "the first request must not teach the limit its queue)",
     NULL},
    {"overload.limit_max", CM_OPT_UINT, OFF(ol_limit_max), 0, "1000", 1, 1000000, NULL, 0, NULL,
     "N", "highest concurrency limit per dependency per worker", NULL},
    {"overload.retry_after_min", CM_OPT_UINT, OFF(ol_retry_min_s), 0, "1", 1, 3600, NULL, 0, NULL,
     "SECONDS", "a 503 overloaded says Retry-After from min to max seconds, at random", NULL},
    {"overload.retry_after_max", CM_OPT_UINT, OFF(ol_retry_max_s), 0, "3", 1, 3600, NULL, 0, NULL,
     "SECONDS", "upper end of the jittered Retry-After", NULL},
    {"overload.priority_key_file", CM_OPT_STR, OFF(ol_priority_key_file),
     SZ(ol_priority_key_file), "", 0, 0, NULL, 0, NULL, "FILE",
     "secret (64 hex digits, mode 0600) keying the user priority that overload.shed_buys cuts "
     "by, rotated each minute; empty = the fleet's, kept in Redis, or with a memory inventory "
     "one drawn at start",
     NULL},
    {"proxy.routes", CM_OPT_STR, OFF(proxy_routes), SZ(proxy_routes), "", 0, 0, NULL, 0, NULL,
     "JSON",
     "non-core routes proxied to upstreams: [{\"prefix\":\"/v1/recs/\",\"upstream\":\"http://"
     "HOST:PORT\",\"timeout_ms\":1000,\"latency_target_ms\":20,\"criticality\":\"critical|"
     "degradable|sheddable\",\"fallback\":{\"status\":200,\"content_type\":\"...\","
     "\"body\":\"...\"}}] (latency_target_ms optional: an upstream answer slower is a queue)",
     v_routes},
    {"proxy.max_connections", CM_OPT_UINT, OFF(proxy_max_conns), 0, "32", 1, 10000, NULL, 0,
     NULL, "N", "open connections per upstream per worker (kept alive)", NULL},
    {"proxy.max_body", CM_OPT_SIZE, OFF(proxy_max_body), 0, "1m", 1024, 64u << 20, NULL, 0, NULL,
     "SIZE", "largest request or response body passed through a proxied route", NULL},
    {"proxy.breaker_failures", CM_OPT_UINT, OFF(proxy_breaker_failures), 0, "5", 1, 1000, NULL,
     0, NULL, "N", "consecutive upstream failures (refused, timeouts) that open its breaker",
     NULL},
    {"proxy.breaker_cooldown", CM_OPT_MS, OFF(proxy_breaker_cooldown_ms), 0, "1s", 10, 600000,
     NULL, 0, NULL, "DURATION", "an open upstream breaker lets one probe through after this",
     NULL},
    {"identity.mode", CM_OPT_ENUM, OFF(id_mode), 0, "jwt", 0, 0, id_modes, 0, NULL, NULL,
     "who the buyer is: jwt = a bearer token verified here (keys: jwks_file and/or jwks_url; "
     "with neither, the public half of the data dir's identity.key, generated at first start); "
     "header = identity.header from server.trusted_proxies; none = the body's user_id, "
     "unverified (closed networks and rehearsals; a warning at start when server.listen is not "
     "on loopback; docs/identity.md)",
     NULL},
    IDS("jwks_file", jwks_file, "", "FILE", "a JWK set on disk the tokens are verified with", NULL),
    IDS("jwks_url", jwks_url, "", "URL",
        "an https JWK set, fetched off the workers at start and refreshed in the background "
        "(plain http:// only to loopback, or with identity.jwks_allow_http)",
        NULL),
    {"identity.jwks_allow_http", CM_OPT_BOOL, OFF(identity.jwks_allow_http), 0, "false", 0, 0,
     NULL, 0, NULL, NULL,
     "allow a plain http:// identity.jwks_url off loopback (anyone on the path can then publish "
     "keys: only on a network you trust end to end)",
     NULL},
    {"identity.jwks_max_stale", CM_OPT_MS, OFF(id_jwks_max_stale_ms), 0, "0", 0, 2592000000u,
     NULL, 0, NULL, "DURATION",
     "when identity.jwks_url's refresh has failed for longer than this, its keys verify nothing "
     "(503 stale_keys) and /readyz says so, until a fetch succeeds (a revoked key is not trusted "
     "for ever); 0 = the last good keys stay in use (whole seconds)",
     NULL},
    {"identity.jwks_refresh", CM_OPT_MS, OFF(id_jwks_refresh_ms), 0, "300s", 1000, 86400000,
     NULL, 0, NULL, "DURATION", "how often identity.jwks_url is fetched again (whole seconds)",
     NULL},
    {"identity.jwks_min_refetch", CM_OPT_MS, OFF(id_jwks_min_refetch_ms), 0, "30s", 1000,
     3600000, NULL, 0, NULL, "DURATION",
     "a token with an unknown kid refetches identity.jwks_url at most once per this; also the "
     "retry period after a failed fetch (whole seconds)",
     NULL},
    {"identity.jwks_timeout", CM_OPT_MS, OFF(id_jwks_timeout_ms), 0, "5s", 100, 60000, NULL, 0,
     NULL, "DURATION", "bound on one fetch of identity.jwks_url", NULL},
    IDS("jwks_cache_file", jwks_cache_file, "", "FILE",
        "the last good answer of identity.jwks_url, written after each change: a restart while "
        "the URL is down starts on it",
        NULL),
    IDS("algorithms", algorithms, "RS256,ES256,EdDSA", "ALG,...",
        "signature algorithms accepted: RS256 RS384 RS512 PS256 ES256 ES384 EdDSA HS256 "
        "(HS256 only with identity.hmac_secret_file)",
        NULL),
    IDS("hmac_secret_file", hmac_secret_file, "", "FILE",
        "HS256's shared secret (at least 32 bytes)", NULL),
    IDS("issuer", issuer, "flashgate", "ISS", "a token's iss must equal this", NULL),
    IDS("audience", audience, "flashgate", "AUD,...",
        "a token's aud must name one of these (comma-separated, up to 8)", NULL),
    {"identity.leeway_s", CM_OPT_UINT, OFF(id_leeway_s), 0, "30", 0, 600, NULL, 0, NULL,
     "SECONDS", "clock skew allowed on a token's exp and nbf", NULL},
    {"identity.max_token_bytes", CM_OPT_SIZE, OFF(id_max_token_bytes), 0, "7680", 256,
     ID_TOKEN_LIMIT, NULL, 0, NULL, "SIZE",
     "longer tokens are refused (401 too_large); at most 7680, as the whole request head is at "
     "most 8 KiB (431)",
     NULL},
    {"identity.max_lifetime_s", CM_OPT_UINT, OFF(id_max_lifetime_s), 0, "0", 0, 31536000, NULL, 0,
     NULL, "SECONDS",
     "a token whose exp - iat (exp - now without iat) exceeds this is refused (401 "
     "too_long_lived); 0 = no bound",
     NULL},
    IDS("typ", typ, "", "TYP",
        "the JOSE header typ a token must carry (e.g. at+jwt; case-insensitive, \"application/\" "
        "optional); empty = any",
        NULL),
    IDS("user_claim", user_claim, "sub", "CLAIM",
        "the claim that names the user (1..64 of A-Z a-z 0-9 . _ -)", NULL),
    IDS("person_claim", person_claim, "", "CLAIM",
        "the claim that names the person behind the account; empty = the user", NULL),
    IDS("eligibility_claims", eligibility_claims, "", "CLAIM,...",
        "up to 16 boolean claims a sale's require_claims may name: a claim present and JSON "
        "true counts, any other value does not (docs/identity.md, Eligibility)",
        NULL),
    IDS("account_created_claim", account_created_claim, "", "CLAIM",
        "the claim holding the account's creation time (seconds since the epoch) that a sale's "
        "min_account_age_days reads; absent or not an integer = age unknown; empty = none",
        NULL),
    {"identity.header", CM_OPT_STR, OFF(id_header), SZ(id_header), "", 0, 0, NULL, 0, NULL,
     "NAME",
     "header mode: the header a trusted proxy (server.trusted_proxies) names the user in; from "
     "any other peer a request carrying it is refused with 403",
     v_token_name},
    {"identity.cookie", CM_OPT_STR, OFF(id_cookie), SZ(id_cookie), "", 0, 0, NULL, 0, NULL,
     "NAME",
     "jwt mode: a cookie that may carry the token when there is no Authorization header; "
     "state-changing requests it names the buyer of need Content-Type: application/json or "
     "X-Requested-With (403 csrf)",
     v_token_name},
    {"identity.own_key_on_redis", CM_OPT_BOOL, OFF(id_own_key_on_redis), 0, "false", 0, 0,
     NULL, 0, NULL, NULL,
     "allow identity.mode=jwt with neither jwks_file nor jwks_url on a Redis inventory: each "
     "data dir has a key of its own, so in a fleet every gateway would refuse the tokens the "
     "others' keys signed; the start refuses that unless this is true (one gateway on Redis)",
     NULL},
    {"debug.wall_offset_ms", CM_OPT_STR, OFF(debug_wall_offset_ms), SZ(debug_wall_offset_ms), "",
     0, 0, NULL, 0, NULL, "MS",
     "test seam, only with server.admin_debug_routes: this process's wall clock reads this many "
     "ms off the system's from the start (negative = stepped back; PUT /admin/v1/debug/clock "
     "changes it later); empty = 0",
     v_wall_offset},
    {"debug.fleet_tick", CM_OPT_MS, OFF(debug_fleet_tick_ms), 0, "0", 0, 86400000, NULL, 0, NULL,
     "DURATION",
     "test seam, only with server.admin_debug_routes: the fleet thread's period (heartbeat, "
     "config and sale reloads) instead of its own 1 s; 0 = its own",
     NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, 0, NULL, NULL, NULL, NULL},
};

/*---- Cross-key rules ----*/

/* The admin token sealed by gw_config_seal_secrets (below). */
static struct {
    bool sealed;
    int src;      /* cm_src_t of the token at the first load */
    char *token;  /* secret page, NUL-terminated; NULL = none configured */
    size_t len;
} admin_secret;

/* server.admin_token's length rule, or NULL. Once sealed, a flag's value is
 * the "*" wipe_argv left in argv and the environment's is gone: the token
 * they carried was checked at the first load and is the one in use. */
static const char *admin_token_rule(const gw_config_t *cfg, const cm_conf_t *conf)
{
    size_t n = strlen(cfg->admin_token);
    if (n == 0 || n >= GW_ADMIN_TOKEN_MIN)
        return NULL;
    int src = cm_conf_source(conf, "server.admin_token");
    if (admin_secret.sealed && (src == CM_SRC_FLAG || src == CM_SRC_ENV))
        return NULL;
    return "must be at least " XSTR(GW_ADMIN_TOKEN_MIN) " characters (a short bearer token can "
           "be guessed), or empty to generate one into <data-dir>/admin.token";
}

static bool same_listener(const char *a, const char *b)
{
    char ha[256], hb[256];
    unsigned pa, pb;
    if (gw_config_split_hostport(a, ha, sizeof(ha), &pa) ||
        gw_config_split_hostport(b, hb, sizeof(hb), &pb))
        return false;
    if (pa == 0 || pb == 0 || pa != pb)
        return false; /* port 0 picks a free port: never the same */
    /* A wildcard address overlaps every other address on the same port. */
    static const char *const any[] = {"0.0.0.0", "::", "*"};
    for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++)
        if (strcmp(ha, any[i]) == 0 || strcmp(hb, any[i]) == 0)
            return true;
    return strcmp(ha, hb) == 0;
}

/* identity.*: id_config_validate's rules (its sentence names the key) and the
 * modes' own. Returns the number of broken rules, each reported. */
static int identity_rules(const gw_config_t *cfg, const cm_conf_t *view, char *errbuf,
                          size_t errlen)
{
    int bad = 0;
    id_config_t ic;
    gw_identity_config(cfg, &ic);
    char why[400];
    if (id_config_validate(&ic, why, sizeof(why)) != 0) {
        /* "identity.algorithms: unknown ..." -> key and rule */
        char key[64] = "identity.mode";
        const char *rule = why;
        const char *colon = strstr(why, ": ");
        size_t kl = strcspn(why, ":=");
        if (strncmp(why, "identity.", 9) == 0 && colon && kl < sizeof(key)) {
            snprintf(key, sizeof(key), "%.*s", (int)kl, why);
            rule = colon + 2;
            /* id_config_t's names for the durations are the config keys without _s */
            static const char *const renamed[][2] = {
                {"identity.jwks_refresh_s", "identity.jwks_refresh"},
                {"identity.jwks_min_refetch_s", "identity.jwks_min_refetch"},
                {"identity.jwks_timeout_ms", "identity.jwks_timeout"}};
            for (size_t i = 0; i < sizeof(renamed) / sizeof(renamed[0]); i++)
                if (strcmp(key, renamed[i][0]) == 0)
                    snprintf(key, sizeof(key), "%s", renamed[i][1]);
            if (!cm_conf_find(view->opts, key))
                snprintf(key, sizeof(key), "identity.mode");
        }
        cm_conf_report(view, key, rule, errbuf, errlen);
        bad++;
    }
    if (cfg->id_mode == GW_ID_HEADER && !cfg->id_header[0]) {
        cm_conf_report(view, "identity.header",
                       "must name the header the trusted proxy sets when identity.mode=header",
                       errbuf, errlen);
        bad++;
    }
    if (cfg->id_mode == GW_ID_HEADER && !cfg->trusted_proxies[0]) {
        cm_conf_report(view, "server.trusted_proxies",
                       "must list the proxies that set identity.header when identity.mode=header",
                       errbuf, errlen);
        bad++;
    }
    /* A fleet shares its stock through Redis, and each gateway's data dir has
     * a key of its own: with no shared JWK set a buyer's token verifies on
     * one gateway and is refused (401) on every other. That fleet starts,
     * passes its probes and refuses most buyers, so the start refuses it
     * instead, unless the operator says this is one gateway. */
    if (cfg->id_mode == GW_ID_JWT && !cfg->identity.jwks_url[0] && !cfg->identity.jwks_file[0] &&
        cm_redis_url_is(cfg->inventory) && !cfg->id_own_key_on_redis) {
        cm_conf_report(view, "identity.mode",
                       "jwt with neither identity.jwks_file nor identity.jwks_url on a Redis "
                       "inventory verifies with this gateway's own data-dir key, which no other "
                       "gateway of the fleet trusts: give every gateway one JWK set "
                       "(docs/identity.md), or set identity.own_key_on_redis=true for a single "
                       "gateway",
                       errbuf, errlen);
        bad++;
    }
    if (cfg->id_mode != GW_ID_JWT && (cfg->identity.jwks_url[0] || cfg->identity.jwks_file[0])) {
        cm_conf_report(view, "identity.mode",
                       "must be jwt when identity.jwks_url or identity.jwks_file is set (a key "
                       "set no mode reads is a mistake)",
                       errbuf, errlen);
        bad++;
    }
    return bad;
}

int gw_config_check(const gw_config_t *cfg, const cm_conf_t *conf, char *errbuf, size_t errlen)
{
    cm_conf_t view = *conf;
    view.base = (void *)cfg;
    int bad = 0;
    static const struct {
        const char *rate_key, *burst_key;
        size_t rate_off, burst_off;
    } pairs[] = {
        {"limits.global_rps", "limits.global_burst", OFF(global_rps), OFF(global_burst)},
        {"limits.sale_rps", "limits.sale_burst", OFF(sale_rps), OFF(sale_burst)},
        {"limits.user_rps", "limits.user_burst", OFF(user_rps), OFF(user_burst)},
        {"limits.ip_rps", "limits.ip_burst", OFF(ip_rps), OFF(ip_burst)},
        {"limits.subnet_rps", "limits.subnet_burst", OFF(subnet_rps), OFF(subnet_burst)},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        uint64_t rate = *(const uint64_t *)((const char *)cfg + pairs[i].rate_off);
        uint64_t burst = *(const uint64_t *)((const char *)cfg + pairs[i].burst_off);
        if (rate > 0 && burst < 1) {
            char rule[160];
            snprintf(rule, sizeof(rule), "must be >= 1 when %s > 0", pairs[i].rate_key);
            cm_conf_report(&view, pairs[i].burst_key, rule, errbuf, errlen);
            bad++;
        }
    }
    if (same_listener(cfg->listen, cfg->admin_listen)) {
        cm_conf_report(&view, "server.admin_listen", "must differ from server.listen", errbuf,
                       errlen);
        bad++;
    }
    if (!cfg->admin_tls_cert[0] != !cfg->admin_tls_key[0]) {
        cm_conf_report(&view, cfg->admin_tls_cert[0] ? "server.admin_tls_key" : "server.admin_tls_cert",
                       "server.admin_tls_cert and server.admin_tls_key are set together", errbuf,
                       errlen);
        bad++;
    }
    if (cfg->admin_tls_client_ca[0] && !cfg->admin_tls_cert[0]) {
        cm_conf_report(&view, "server.admin_tls_client_ca", "needs server.admin_tls_cert", errbuf,
                       errlen);
        bad++;
    }
    if (cfg->spool_segment_bytes > cfg->spool_max_bytes) {
        cm_conf_report(&view, "spool.segment_bytes", "must be <= spool.max_bytes", errbuf, errlen);
        bad++;
    }
    if (cfg->ol_retry_min_s > cfg->ol_retry_max_s) {
        cm_conf_report(&view, "overload.retry_after_max", "must be >= overload.retry_after_min",
                       errbuf, errlen);
        bad++;
    }
    if (cfg->ol_limit_min > cfg->ol_limit_max) {
        cm_conf_report(&view, "overload.limit_max", "must be >= overload.limit_min", errbuf,
                       errlen);
        bad++;
    }
    const char *why = admin_token_rule(cfg, conf);
    if (why) {
        cm_conf_report(&view, "server.admin_token", why, errbuf, errlen);
        bad++;
    }
    if (cfg->admin_token[0] && cfg->admin_token_file[0]) {
        cm_conf_report(&view, "server.admin_token_file",
                       "set server.admin_token or server.admin_token_file, not both", errbuf,
                       errlen);
        bad++;
    }
    if (strcmp(cfg->kafka_topic, cfg->kafka_outcomes_topic) == 0) {
        cm_conf_report(&view, "kafka.outcomes_topic", "must differ from kafka.topic", errbuf,
                       errlen);
        bad++;
    }
    bad += identity_rules(cfg, &view, errbuf, errlen);
    /* The test seams bend the clock or the fleet's timing: a production
     * gateway must not start with them from a stray environment variable. */
    if (!cfg->admin_debug_routes) {
        static const char *const seams[] = {"debug.wall_offset_ms", "debug.fleet_tick"};
        for (size_t i = 0; i < sizeof(seams) / sizeof(seams[0]); i++)
            if (cm_conf_source(conf, seams[i]) != CM_SRC_DEFAULT &&
                (i == 0 ? cfg->debug_wall_offset_ms[0] != '\0' : cfg->debug_fleet_tick_ms != 0)) {
                cm_conf_report(&view, seams[i],
                               "is a test seam: needs server.admin_debug_routes=true "
                               "(--enable-debug-routes)",
                               errbuf, errlen);
                bad++;
            }
    }
    return bad ? CM_EINVAL : 0;
}

/*---- the admin token out of argv, the environment and the config struct ----*/

#define SEALED_MARK "<set>"     /* what cfg->admin_token holds once sealed */
#define SEALED_CHANGED "<new>"  /* a reload found another token in the config file */

/* Overwrites the argv strings that hold the token ("TOKEN", "--x=TOKEN",
 * "--set=server.admin_token=TOKEN"): the kernel shows this very memory as
 * /proc/PID/cmdline. One "*" is left where the token was, then NULs. */
static void wipe_argv(int argc, char **argv, const char *tok, size_t n)
{
    for (int i = 1; i < argc; i++) {
        size_t al = strlen(argv[i]);
        char *at = NULL;
        if (al == n && memcmp(argv[i], tok, n) == 0)
            at = argv[i];
        else if (al > n && argv[i][al - n - 1] == '=' && memcmp(argv[i] + al - n, tok, n) == 0)
            at = argv[i] + al - n;
        if (at) {
            explicit_bzero(at, n);
            at[0] = '*';
        }
    }
}

/* Wipes and removes the token's environment variables: /proc/PID/environ is
 * the process's initial environment block, which unsetenv alone leaves intact. */
static void wipe_env(const cm_conf_t *conf, const cm_opt_t *o)
{
    for (int alias = 0; alias <= 1; alias++) {
        char name[128];
        if (!cm_conf_env_name(o, conf->env_prefix, alias, name, sizeof(name)))
            continue;
        char *v = getenv(name);
        if (v) {
            explicit_bzero(v, strlen(v));
            unsetenv(name);
        }
    }
}

void gw_config_seal_secrets(gw_config_t *cfg, const cm_conf_t *conf, int argc, char **argv)
{
    const cm_opt_t *o = cm_conf_find(gw_config_opts, "server.admin_token");
    size_t n = strlen(cfg->admin_token);
    admin_secret.src = cm_conf_source(conf, "server.admin_token");
    if (n) {
        admin_secret.token = gw_secret_alloc(n + 1);
        if (!admin_secret.token)
            abort(); /* out of memory, as cm_xmalloc */
        memcpy(admin_secret.token, cfg->admin_token, n + 1);
        admin_secret.len = n;
        wipe_argv(argc, argv, admin_secret.token, n);
    }
    wipe_env(conf, o);
    explicit_bzero(cfg->admin_token, sizeof(cfg->admin_token));
    if (n)
        memcpy(cfg->admin_token, SEALED_MARK, sizeof(SEALED_MARK));
    admin_secret.sealed = true;
}

/* After a reload's parse: the marker of the first load, or of a change. */
static void reseal(gw_config_t *cfg, const cm_conf_t *conf)
{
    int src = cm_conf_source(conf, "server.admin_token");
    size_t n = strlen(cfg->admin_token);
    const char *mark = "";
    if (src == CM_SRC_FLAG || src == CM_SRC_ENV ||
        (src == CM_SRC_DEFAULT && admin_secret.src == CM_SRC_ENV))
        /* argv ("*" now) and the environment (unset now) are the first load's */
        mark = admin_secret.token ? SEALED_MARK : "";
    else if (n)
        mark = admin_secret.token && n == admin_secret.len &&
                       memcmp(cfg->admin_token, admin_secret.token, n) == 0
                   ? SEALED_MARK
                   : SEALED_CHANGED;
    explicit_bzero(cfg->admin_token, sizeof(cfg->admin_token));
    memcpy(cfg->admin_token, mark, strlen(mark) + 1);
}

void gw_config_mark_runtime(cm_conf_t *conf, const char *key)
{
    const cm_opt_t *o = conf ? cm_conf_find(conf->opts, key) : NULL;
    if (!o)
        return;
    size_t i = (size_t)(o - conf->opts);
    conf->src[i] = CM_SRC_RUNTIME;
    if (conf->src_detail)
        conf->src_detail[i][0] = '\0'; /* no flag or variable set it any more */
}

const char *gw_config_admin_token(size_t *len)
{
    if (len)
        *len = admin_secret.len;
    return admin_secret.token;
}

int gw_config_load(gw_config_t *cfg, cm_conf_t *conf, int argc, char **argv, char *errbuf,
                   size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = cm_conf_load(conf, gw_config_opts, cfg, "flashgate", "FLASHGATE_", argc, argv,
                          errbuf, errlen);
    /* Cross-key rules run even after per-key errors: a rejected value keeps the
     * previous one, so the rules still see a consistent struct, and every
     * problem is reported in one go. */
    if (gw_config_check(cfg, conf, errbuf, errlen) != 0)
        rc = CM_EINVAL;
    if (cm_conf_check_args(conf, 0, errbuf, errlen) != 0)
        rc = CM_EINVAL;
    if (admin_secret.sealed)
        reseal(cfg, conf);
    return rc;
}
