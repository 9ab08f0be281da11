/*
 * GET /metrics: the Prometheus text exposition format (version 0.0.4),
 * written by hand. Debian 12 packages no C Prometheus client (libprom and
 * prometheus-client-c are not in the archive), and the format is a few lines
 * of printf; `promtool check metrics` checks it in tests/integration/18-metrics.py.
 *
 * Cost to the buy path: nothing but the per-worker counters it already keeps
 * (gw_counters_t, written only by their worker without locked instructions);
 * a scrape sums them on the admin thread. Heavy hitters: each worker's
 * space-saving summaries are merged here under the worker's hh_mu.
 */
#include "common/cm_alloc.h"
#include "common/cm_build.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/overload/gw_overload.h"
#include "gateway/proxy/gw_proxy.h"
#include "queue/oq_relay.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

/*---- heavy hitters ----*/

/*---- the text ----*/

typedef struct buf {
    char *s;
    size_t len, cap;
} buf_t;

__attribute__((format(printf, 2, 3))) static void put(buf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* va_start is just above on every pass; clang-tidy 14's analyzer loses it
         * once gw_metrics_text has enough calls of put (a false positive) */
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0);
        b->s = cm_xrealloc(b->s, b->cap);
    }
}

static void head(buf_t *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One flashgate_responses_total line: n answers of `reply` sent with `status`. */
static void responses_line(buf_t *b, gw_route_t route, int status, gw_reply_t reply, uint64_t n)
{
    put(b, "flashgate_responses_total{route=\"%s\",status=\"%d\",code=\"%s\"} %llu\n",
        gw_route_name(route), status, gw_reply_code(reply), (unsigned long long)n);
}

/* A label value: \ " and newline escaped. */
static const char *lv(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[n++] = '\\';
            out[n++] = *s;
        } else if (*s == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return out;
}

typedef struct sale_ctx {
    buf_t *b;
    int which;
} sale_ctx_t;

static void sale_line(inv_sale_t *sale, void *ctx)
{
    sale_ctx_t *c = ctx;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    char l[160];
    lv(info.sale_id, l, sizeof(l));
    long long v = c->which == 0   ? info.accepted_units
                  : c->which == 1 ? info.accepted_orders
                  : c->which == 2 ? (info.stock_left < 0 ? 0 : info.stock_left)
                                  : info.stock_total;
    put(c->b, "%s{sale=\"%s\"} %lld\n",
        c->which == 0   ? "flashgate_sale_accepted_units_total"
        : c->which == 1 ? "flashgate_sale_accepted_orders_total"
        : c->which == 2 ? "flashgate_sale_stock_left"
                        : "flashgate_sale_stock_units",
        l, v);
}

/* The overload controller's state (gw_overload_snapshot): level, limits, in flight. */
/* Buyer identity (gw_identity.h): verifications by outcome, cache hits, the keys. */
static void identity_metrics(buf_t *b, gw_server_t *srv)
{
    gw_identity_stats_t st;
    gw_identity_stats(srv, &st);
    head(b, "flashgate_identity_verifications_total", "counter",
         "Buyer identities checked on the sale routes, by outcome (identity.mode jwt or header; "
         "docs/identity.md lists the outcomes).");
    for (int o = 0; o < ID__OUTCOME_COUNT; o++)
        put(b, "flashgate_identity_verifications_total{result=\"%s\"} %llu\n",
            id_outcome_name(o), (unsigned long long)st.verifications[o]);
    head(b, "flashgate_identity_cache_hits_total", "counter",
         "Verified tokens answered from a worker's cache (no signature check).");
    put(b, "flashgate_identity_cache_hits_total %llu\n", (unsigned long long)st.cache_hits);
    head(b, "flashgate_identity_refused_total", "counter",
         "Identity refusals that are no token outcome: identity.header from an untrusted peer "
         "(403 forbidden), a body user_id other than the verified buyer (403 identity_mismatch), "
         "two identity headers or Authorization fields (400 duplicate_identity), a cookie's token "
         "without the CSRF proof (403 csrf).");
    put(b, "flashgate_identity_refused_total{reason=\"untrusted_header\"} %llu\n",
        (unsigned long long)st.untrusted_header);
    put(b, "flashgate_identity_refused_total{reason=\"identity_mismatch\"} %llu\n",
        (unsigned long long)st.mismatches);
    put(b, "flashgate_identity_refused_total{reason=\"duplicate_identity\"} %llu\n",
        (unsigned long long)st.duplicates);
    put(b, "flashgate_identity_refused_total{reason=\"csrf\"} %llu\n", (unsigned long long)st.csrf);
    head(b, "flashgate_identity_jwks_keys_refused", "gauge",
         "Keys of the JWK sets in use refused one by one at load (weak RSA, small-order Ed25519, "
         "EVP_PKEY_public_check): the rest of the set is used.");
    put(b, "flashgate_identity_jwks_keys_refused %llu\n", (unsigned long long)st.keys_refused);
    head(b, "flashgate_identity_jwks_stale", "gauge",
         "1 while identity.jwks_url's refresh has failed longer than identity.jwks_max_stale (its "
         "keys verify nothing: 503 stale_keys), else 0.");
    put(b, "flashgate_identity_jwks_stale %d\n", st.stale ? 1 : 0);
    head(b, "flashgate_identity_jwks_keys", "gauge",
         "Usable verification keys (jwt mode: identity.jwks_file, jwks_url or the data dir's key).");
    put(b, "flashgate_identity_jwks_keys %zu\n", st.keys);
    head(b, "flashgate_identity_jwks_refreshes_total", "counter",
         "Completed fetches of identity.jwks_url, by result.");
    put(b, "flashgate_identity_jwks_refreshes_total{result=\"ok\"} %llu\n",
        (unsigned long long)st.refresh_ok);
    put(b, "flashgate_identity_jwks_refreshes_total{result=\"failed\"} %llu\n",
        (unsigned long long)st.refresh_failed);
}

static void overload_metrics(buf_t *b, gw_server_t *srv)
{
    static gw_ol_snapshot_t s; /* large; under the caller's mutex */
    memset(&s, 0, sizeof(s));
    gw_overload_snapshot(srv, &s);
    head(b, "flashgate_degrade_level", "gauge",
         "Degradation level in force: 0 normal, 1 degrade, 2 shed, 3 protect.");
    put(b, "flashgate_degrade_level %d\n", s.level);
    head(b, "flashgate_degrade_pinned", "gauge", "1 when an operator pinned the level.");
    put(b, "flashgate_degrade_pinned %d\n", s.pinned ? 1 : 0);
    head(b, "flashgate_degrade_level_changes_total", "counter", "Level changes since start.");
    put(b, "flashgate_degrade_level_changes_total %llu\n", (unsigned long long)s.level_changes);
    head(b, "flashgate_queue_delay_seconds", "gauge",
         "Average time a request waited before being served, last window (max over workers).");
    put(b, "flashgate_queue_delay_seconds %.6f\n", (double)s.queue_delay_us / 1e6);
    head(b, "flashgate_queue_delay_target_seconds", "gauge", "overload.queue_target.");
    put(b, "flashgate_queue_delay_target_seconds %.6f\n", (double)s.queue_target_us / 1e6);
    head(b, "flashgate_buy_admit_ratio", "gauge",
         "Share of user priorities admitted to the buy path (1 = everyone).");
    put(b, "flashgate_buy_admit_ratio %.2f\n", (double)s.buy_admit_pct / 100.0);
    head(b, "flashgate_overload_shed_total", "counter",
         "Proxied requests answered 503 overloaded or their fallback (level, upstream limit or "
         "breaker, upstream failure), by criticality.");
    for (int c = 0; c < GW_CRIT_COUNT; c++)
        put(b, "flashgate_overload_shed_total{criticality=\"%s\"} %llu\n",
            gw_crit_name((gw_crit_t)c), (unsigned long long)s.shed[c]);
    /* next to flashgate_overload_rejected_total, which never counts these: a
     * fallback stands in for the 503 of the same reason, it is not one */
    head(b, "flashgate_overload_degraded_total", "counter",
         "Proxied requests answered with their route's fallback, by cause (a 503 reason, or the "
         "upstream's error or timeout).");
    for (int c = 0; c < GW_DEG_COUNT; c++)
        put(b, "flashgate_overload_degraded_total{reason=\"%s\"} %llu\n",
            gw_degrade_cause_name((gw_degrade_cause_t)c), (unsigned long long)s.degraded[c]);
    head(b, "flashgate_accept_paused_workers", "gauge",
         "Workers not accepting new connections right now (level 3).");
    put(b, "flashgate_accept_paused_workers %u\n", s.accept_paused);
    static const struct {
        const char *name, *type, *help;
    } dm[] = {
        {"flashgate_dependency_concurrency_limit", "gauge",
         "Adaptive concurrency limit of a dependency, summed over workers."},
        {"flashgate_dependency_inflight", "gauge", "Calls in flight to a dependency."},
        {"flashgate_dependency_rejected_total", "counter",
         "Requests refused because the dependency's limit was full (a 503, or a route's "
         "fallback)."},
        {"flashgate_dependency_drops_total", "counter", "Timeouts and errors of a dependency."},
        {"flashgate_dependency_breaker_state", "gauge",
         "Breaker of a dependency: 0 closed, 1 open, 2 half-open."},
        {"flashgate_dependency_breaker_opens_total", "counter", "Times the breaker opened."},
        {"flashgate_dependency_latency_target_seconds", "gauge",
         "A proxied route's latency_target_ms: an upstream RTT past it is a queue."},
    };
    /* dm's index of each series whose value is not a plain count */
    enum { DM_BREAKER = 4, DM_OPENS = 5, DM_TARGET = 6 };
    for (size_t m = 0; m < CM_ARRAY_LEN(dm); m++) {
        head(b, dm[m].name, dm[m].type, dm[m].help);
        for (unsigned i = 0; i < s.ndeps && i < GW_OL_DEPS_MAX; i++) {
            const gw_ol_dep_snap_t *d = &s.deps[i];
            if (!d->active || ((m == DM_BREAKER || m == DM_OPENS) && d->breaker < 0) ||
                (m == DM_TARGET && !d->rtt_target_us))
                continue;
            char l[160];
            lv(d->name, l, sizeof(l));
            if (m == DM_TARGET)
                put(b, "%s{dependency=\"%s\"} %.6f\n", dm[m].name, l,
                    (double)d->rtt_target_us / 1e6);
            else
                put(b, "%s{dependency=\"%s\"} %llu\n", dm[m].name, l,
                    (unsigned long long)(m == 0            ? d->limit
                                         : m == 1          ? d->inflight
                                         : m == 2          ? d->rejected
                                         : m == 3          ? d->drops
                                         : m == DM_BREAKER ? (uint64_t)d->breaker
                                                           : d->breaker_opens));
        }
    }
    static const uint64_t rtt_bounds[GW_OL_RTT_NBOUNDS] = GW_OL_RTT_BOUNDS_US;
    head(b, "flashgate_dependency_latency_seconds", "histogram",
         "Round trip of a dependency's answered calls (Redis, spool fsync, upstreams), summed "
         "over workers; timeouts and errors are in flashgate_dependency_drops_total.");
    for (unsigned i = 0; i < s.ndeps && i < GW_OL_DEPS_MAX; i++) {
        const gw_ol_dep_snap_t *d = &s.deps[i];
        if (!d->active)
            continue;
        char l[160];
        lv(d->name, l, sizeof(l));
        uint64_t cum = 0;
        for (int k = 0; k < GW_OL_RTT_NBOUNDS; k++) {
            cum += d->rtt_buckets[k];
            put(b,
                "flashgate_dependency_latency_seconds_bucket{dependency=\"%s\",le=\"%g\"} %llu\n",
                l, (double)rtt_bounds[k] / 1e6, (unsigned long long)cum);
        }
        cum += d->rtt_buckets[GW_OL_RTT_NBOUNDS];
        put(b, "flashgate_dependency_latency_seconds_bucket{dependency=\"%s\",le=\"+Inf\"} %llu\n",
            l, (unsigned long long)cum);
        put(b, "flashgate_dependency_latency_seconds_sum{dependency=\"%s\"} %.6f\n", l,
            (double)d->rtt_sum_us / 1e6);
        put(b, "flashgate_dependency_latency_seconds_count{dependency=\"%s\"} %llu\n", l,
            (unsigned long long)cum);
    }
}

/*
 * The standard process_* series (as the Prometheus client libraries export
 * them), from /proc/self/stat, /proc/stat, /proc/self/fd and getrlimit. A
 * source that cannot be read leaves its series out.
 */
static void process_metrics(buf_t *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char st[1024] = "";
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;
    if (f)
        fclose(f);
    st[n] = '\0';
    /* the fields after the command's closing parenthesis, from field 3 (state) */
    const char *p = strrchr(st, ')');
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    bool have = p && tick > 0 &&
                sscanf(p + 1,
                       " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                       "%*d %*d %llu %llu %lld",
                       &utime, &stime, &start, &vsize, &rss) == 5;
    if (have) {
        head(b, "process_cpu_seconds_total", "counter",
             "Total user and system CPU time spent in seconds.");
        put(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tick);
        head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        put(b, "process_virtual_memory_bytes %llu\n", vsize);
        head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        put(b, "process_resident_memory_bytes %lld\n", rss * (long long)page);
        /* starttime is in ticks since boot: btime (/proc/stat) is the boot's Unix time */
        unsigned long long btime = 0;
        char line[256];
        FILE *ps = fopen("/proc/stat", "re");
        while (ps && fgets(line, sizeof(line), ps))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        if (ps)
            fclose(ps);
        if (btime) {
            head(b, "process_start_time_seconds", "gauge",
                 "Start time of the process since unix epoch in seconds.");
            put(b, "process_start_time_seconds %.2f\n",
                (double)btime + (double)start / (double)tick);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = -1; /* the directory's own descriptor */
        while (readdir(d))
            fds++;
        closedir(d);
        fds -= 2; /* "." and ".." */
        head(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        put(b, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        head(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        put(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

/*---- the exposition: one row per metric family ----*/

/* One scrape's figures, read once before the rows run (under gw_metrics_text's
 * lock). A plain row reads one uint64_t (U64) or double (SECS) of it. */
typedef struct scrape {
    buf_t *b;
    gw_server_t *srv;
    const gw_counters_t *c;
    uint64_t one, workers, accepted_units, access_logged, proxy_client_aborts, proxy_stale_conns;
    uint64_t nid_lost, nid_refused, nid_held, hh_counted, config_version;
    double uptime_s, relay_age_s;
    gw_rule_t *rules;
    size_t nr;
    oq_spool_stats_t ss;
    bool has_relay;
    oq_relay_stats_t rs;
    gw_limits_stats_t ls;
    gw_orders_stats_t os;
    uint64_t spool_max_bytes;
} scrape_t;

typedef enum { MV_U64, MV_SECS, MV_FN } mv_kind_t;

/* A metric family: its head (name, type, help; name NULL: fn writes the heads
 * of a group of families itself) and its samples: one uint64_t or double of
 * the scrape at off, or fn's lines. relay: only with a relay. */
typedef struct metric {
    const char *name, *type, *help;
    mv_kind_t kind;
    size_t off;
    void (*fn)(scrape_t *s, const struct metric *m);
    int arg;
    bool relay;
} metric_t;

/* A plain row's field, checked to be of the type its kind reads. */
#define U64(f)                                                                                     \
    .kind = MV_U64,                                                                                \
    .off = offsetof(scrape_t, f) +                                                                 \
           0 * sizeof(char[_Generic(((scrape_t *)0)->f, uint64_t: 1, default: -1)])
#define SECS(f)                                                                                    \
    .kind = MV_SECS,                                                                               \
    .off = offsetof(scrape_t, f) + 0 * sizeof(char[_Generic(((scrape_t *)0)->f, double: 1, default: -1)])
#define FN(f) .kind = MV_FN, .fn = (f)

static void m_build_info(scrape_t *s, const metric_t *m)
{
    (void)m;
    put(s->b, "flashgate_build_info{version=\"%s\",commit=\"%s\"} 1\n", FLASHGATE_VERSION,
        cm_build_commit);
}

static void m_process(scrape_t *s, const metric_t *m)
{
    (void)m;
    process_metrics(s->b);
}

static void m_overload(scrape_t *s, const metric_t *m)
{
    (void)m;
    overload_metrics(s->b, s->srv);
}

static void m_identity(scrape_t *s, const metric_t *m)
{
    (void)m;
    identity_metrics(s->b, s->srv);
}

/* The room left under the spool (alert FlashgateSpoolDiskNearlyFull): absent
 * when the data dir's filesystem cannot be asked. */
static void m_spool_fs_avail(scrape_t *s, const metric_t *m)
{
    (void)m;
    struct statvfs vfs;
    if (statvfs(s->srv->cfg->data_dir, &vfs) != 0)
        return;
    head(s->b, "flashgate_spool_filesystem_avail_bytes", "gauge",
         "Bytes an unprivileged writer may still use on the data dir's filesystem.");
    put(s->b, "flashgate_spool_filesystem_avail_bytes %llu\n",
        (unsigned long long)vfs.f_bavail * (unsigned long long)vfs.f_frsize);
}

static void m_requests(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int r = 0; r < GW_ROUTE_COUNT; r++)
        put(s->b, "flashgate_requests_total{route=\"%s\"} %llu\n", gw_route_name((gw_route_t)r),
            (unsigned long long)s->c->route_requests[r]);
}

static void m_responses(scrape_t *s, const metric_t *m)
{
    (void)m;
    const gw_counters_t *c = s->c;
    for (int r = 0; r < GW_ROUTE_COUNT; r++)
        for (int k = 0; k < GW_R_COUNT; k++) {
            if (!c->route_replies[r][k])
                continue;
            int kind = gw_px_kind((gw_reply_t)k);
            if (kind < 0) {
                responses_line(s->b, (gw_route_t)r, gw_reply_status((gw_reply_t)k),
                               (gw_reply_t)k, c->route_replies[r][k]);
                continue;
            }
            /* an upstream's answer or a fallback: by the status sent (only the
             * proxy route answers them, so px_status is all this route's) */
            for (int st = 0; st < GW_PX_STATUS_SPAN; st++)
                if (c->px_status[kind][st])
                    responses_line(s->b, (gw_route_t)r, GW_PX_STATUS_MIN + st, (gw_reply_t)k,
                                   c->px_status[kind][st]);
        }
}

static void m_rate_limited(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int sc = 0; sc < GW_SCOPE_COUNT; sc++)
        put(s->b, "flashgate_rate_limited_total{scope=\"%s\"} %llu\n",
            gw_scope_name((gw_scope_t)sc), (unsigned long long)s->c->rate_limited[sc]);
}

static void m_overload_rejected(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int k = 0; k < GW_OLR_COUNT; k++)
        put(s->b, "flashgate_overload_rejected_total{reason=\"%s\"} %llu\n",
            gw_ol_reason_name((gw_ol_reason_t)k), (unsigned long long)s->c->overload_reasons[k]);
}

static void m_rule_rejected(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (size_t i = 0; i < s->nr; i++) {
        char l[160];
        lv(s->rules[i].sale_id, l, sizeof(l));
        for (int part = 0; part < 2; part++) {
            put(s->b,
                "flashgate_rule_rejected_total{sale=\"%s\",scope=\"%s\",mode=\"enforce\"} %llu\n",
                l, part ? "sale" : "user", (unsigned long long)s->rules[i].rejected[part]);
            put(s->b,
                "flashgate_rule_rejected_total{sale=\"%s\",scope=\"%s\",mode=\"dry_run\"} %llu\n",
                l, part ? "sale" : "user", (unsigned long long)s->rules[i].dry_run_rejected[part]);
        }
    }
}

static void m_rule_dry_run(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (size_t i = 0; i < s->nr; i++) {
        char l[160];
        put(s->b, "flashgate_rule_dry_run{sale=\"%s\"} %d\n", lv(s->rules[i].sale_id, l, sizeof(l)),
            s->rules[i].dry_run ? 1 : 0);
    }
}

static void m_limit_rate(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int sc = 0; sc < GW_SCOPE_COUNT; sc++)
        put(s->b, "flashgate_limit_rate{scope=\"%s\"} %.3f\n", gw_scope_name((gw_scope_t)sc),
            (double)gw_limits_get(s->srv->stores.limits, (gw_scope_t)sc).rate_milli / 1e3);
}

static void m_limit_burst(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int sc = 0; sc < GW_SCOPE_COUNT; sc++)
        put(s->b, "flashgate_limit_burst{scope=\"%s\"} %llu\n", gw_scope_name((gw_scope_t)sc),
            (unsigned long long)gw_limits_get(s->srv->stores.limits, (gw_scope_t)sc).burst);
}

/* m->arg: which figure of each sale (sale_line). */
static void m_sale(scrape_t *s, const metric_t *m)
{
    sale_ctx_t sc = {.b = s->b, .which = m->arg};
    inv_sale_foreach(s->srv->stores.inv, sale_line, &sc);
}

static void m_duration(scrape_t *s, const metric_t *m)
{
    (void)m;
    static const uint64_t bounds[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        const char *rn = gw_route_name((gw_route_t)r);
        uint64_t cum = 0;
        for (int i = 0; i < GW_LAT_NBOUNDS; i++) {
            cum += s->c->lat_buckets[r][i];
            put(s->b, "flashgate_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                rn, (double)bounds[i] / 1e6, (unsigned long long)cum);
        }
        cum += s->c->lat_buckets[r][GW_LAT_NBOUNDS];
        put(s->b, "flashgate_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", rn,
            (unsigned long long)cum);
        put(s->b, "flashgate_request_duration_seconds_sum{route=\"%s\"} %.6f\n", rn,
            (double)s->c->lat_sum_us[r] / 1e6);
        put(s->b, "flashgate_request_duration_seconds_count{route=\"%s\"} %llu\n", rn,
            (unsigned long long)cum);
    }
}

static void m_kafka_ack(scrape_t *s, const metric_t *m)
{
    (void)m;
    static const uint64_t ack_bounds[OQ_ACK_NBOUNDS] = OQ_ACK_BOUNDS_MS;
    uint64_t cum = 0;
    for (int i = 0; i < OQ_ACK_NBOUNDS; i++) {
        cum += s->rs.ack_buckets[i];
        put(s->b, "flashgate_kafka_ack_duration_seconds_bucket{le=\"%g\"} %llu\n",
            (double)ack_bounds[i] / 1e3, (unsigned long long)cum);
    }
    cum += s->rs.ack_buckets[OQ_ACK_NBOUNDS];
    put(s->b, "flashgate_kafka_ack_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)cum);
    put(s->b, "flashgate_kafka_ack_duration_seconds_sum %.3f\n", (double)s->rs.ack_sum_ms / 1e3);
    put(s->b, "flashgate_kafka_ack_duration_seconds_count %llu\n", (unsigned long long)cum);
}

static void m_limiter_evicted(scrape_t *s, const metric_t *m)
{
    (void)m;
    put(s->b, "flashgate_limiter_evicted_total{kind=\"idle\"} %llu\n",
        (unsigned long long)s->ls.evicted_idle);
    put(s->b, "flashgate_limiter_evicted_total{kind=\"busy\"} %llu\n",
        (unsigned long long)s->ls.evicted_busy);
}

static void m_admin_responses(scrape_t *s, const metric_t *m)
{
    (void)m;
    for (int k = 0; k < GW_R_COUNT; k++) {
        uint64_t n = atomic_load_explicit(&s->srv->admin->ctr.replies[k], memory_order_relaxed);
        if (n)
            put(s->b, "flashgate_admin_responses_total{status=\"%d\",code=\"%s\"} %llu\n",
                gw_reply_status((gw_reply_t)k), gw_reply_code((gw_reply_t)k),
                (unsigned long long)n);
    }
}

/* /metrics in this order: an added metric is one row here (and, when its
 * figure is new, one field of scrape_t read in gw_metrics_text). */
static const metric_t metrics[] = {
    {"flashgate_up", "gauge", "1 while the gateway serves.", U64(one)},
    {"flashgate_build_info", "gauge",
     "1, labelled with the version and commit (git describe) this binary was built from.",
     FN(m_build_info)},
    {NULL, NULL, NULL, FN(m_process)},
    {"flashgate_uptime_seconds", "gauge", "Seconds since start.", SECS(uptime_s)},
    {"flashgate_workers", "gauge", "Worker event loops.", U64(workers)},
    {"flashgate_requests_total", "counter",
     "Requests received on the public listener, by route (other = unrouted).", FN(m_requests)},
    {"flashgate_responses_total", "counter",
     "Answers on the public listener by route, HTTP status and error code.", FN(m_responses)},
    {"flashgate_accepted_units_total", "counter", "Units accepted (answered 202).",
     U64(accepted_units)},
    {"flashgate_rate_limited_total", "counter",
     "Requests refused with 429, by the limit scope that refused (global limits and rules).",
     FN(m_rate_limited)},
    {"flashgate_overload_rejected_total", "counter",
     "Requests refused with 503 overloaded, by the reason in the body.", FN(m_overload_rejected)},
    {NULL, NULL, NULL, FN(m_overload)},
    {NULL, NULL, NULL, FN(m_identity)},
    {"flashgate_fleet_node_id_lost_total", "counter",
     "Times this gateway found its node id gone from Redis or held by another gateway.",
     U64(nid_lost)},
    {"flashgate_fleet_node_id_refused_total", "counter",
     "Buys answered 503 because no unique order id could be made (node id lost, or its "
     "lease not renewed).",
     U64(nid_refused)},
    {"flashgate_fleet_node_id_held", "gauge",
     "1 while this gateway holds a node id (or has a fixed one), 0 after a loss until it "
     "claims one.",
     U64(nid_held)},
    {"flashgate_rule_rejected_total", "counter",
     "Requests a per-sale rule refused (mode enforce) or would have refused (mode dry_run).",
     FN(m_rule_rejected)},
    {"flashgate_rule_dry_run", "gauge", "1 for a per-sale rule in dry-run mode, else 0.",
     FN(m_rule_dry_run)},
    {"flashgate_limit_rate", "gauge",
     "Configured global rate limit by scope, requests per second (0 = off).", FN(m_limit_rate)},
    {"flashgate_limit_burst", "gauge", "Configured global burst by scope.", FN(m_limit_burst)},
    {"flashgate_sale_accepted_units_total", "counter", "Units accepted per sale.", FN(m_sale),
     .arg = 0},
    {"flashgate_sale_accepted_orders_total", "counter", "Orders accepted per sale.", FN(m_sale),
     .arg = 1},
    {"flashgate_sale_stock_left", "gauge", "Units left per sale.", FN(m_sale), .arg = 2},
    {"flashgate_sale_stock_units", "gauge", "Units made available per sale (with restocks).",
     FN(m_sale), .arg = 3},
    {"flashgate_request_duration_seconds", "histogram",
     "Time from a request's head to its answer being queued, by route (summed over workers).",
     FN(m_duration)},
    {"flashgate_spool_unreleased_bytes", "gauge",
     "Bytes in the spool not yet released (acknowledged by Kafka).", U64(ss.unreleased_bytes)},
    {"flashgate_spool_segments", "gauge", "Spool segment files.", U64(ss.segments)},
    {"flashgate_spool_appended_records_total", "counter", "Records appended to the spool.",
     U64(ss.appended_records)},
    {"flashgate_spool_fsyncs_total", "counter", "fdatasync rounds of the spool.", U64(ss.fsyncs)},
    {"flashgate_spool_sync_fd_waits_total", "counter",
     "Spool fdatasync rounds put off for want of a file descriptor (EMFILE, ENFILE).",
     U64(ss.sync_fd_waits)},
    {"flashgate_spool_max_bytes", "gauge",
     "spool.max_bytes: unreleased bytes past which buys are answered 503.", U64(spool_max_bytes)},
    {NULL, NULL, NULL, FN(m_spool_fs_avail)},
    {"flashgate_relay_unreleased_records", "gauge",
     "Spool depth: records tracked by the relay and not yet released.",
     U64(rs.spool_unreleased_records), .relay = true},
    {"flashgate_relay_inflight", "gauge", "Records produced to Kafka, not yet acknowledged.",
     U64(rs.inflight), .relay = true},
    {"flashgate_relay_oldest_unacked_age_seconds", "gauge",
     "Relay lag: age of the oldest record Kafka has not acknowledged.", SECS(relay_age_s),
     .relay = true},
    {"flashgate_relay_awaiting_outcome", "gauge",
     "Delivered records waiting for settlement's outcome (embedded broker).",
     U64(rs.awaiting_outcome), .relay = true},
    {"flashgate_kafka_ack_duration_seconds", "histogram",
     "Kafka latency: produce to successful delivery report (acks=all), ms resolution.",
     FN(m_kafka_ack), .relay = true},
    {"flashgate_relay_produced_total", "counter", "Records produced to Kafka.", U64(rs.produced),
     .relay = true},
    {"flashgate_relay_delivered_total", "counter", "Successful delivery reports.",
     U64(rs.delivered), .relay = true},
    {"flashgate_relay_errors_total", "counter", "Failed deliveries and produce errors.",
     U64(rs.errors), .relay = true},
    {"flashgate_relay_resent_total", "counter", "Records produced again after an error.",
     U64(rs.resent), .relay = true},
    {"flashgate_relay_retention_resent_total", "counter",
     "Records produced again because the broker dropped them before settle read them.",
     U64(rs.retention_resent), .relay = true},
    {"flashgate_limiter_keys", "gauge", "Users and client addresses tracked by the limiter.",
     U64(ls.keys)},
    {"flashgate_limiter_capacity", "gauge", "Most keys the limiter tracks.", U64(ls.capacity)},
    {"flashgate_limiter_evicted_total", "counter",
     "Limiter keys evicted: idle (lossless) or busy (that key fails open).",
     FN(m_limiter_evicted)},
    /* The heavy hitters themselves (user ids, addresses) are not label values:
     * they churn, and each would be a series of its own. The admin API's stats
     * and the dashboard list them. */
    {"flashgate_heavy_hitter_counted_total", "counter",
     "Rejections fed to the heavy-hitter summaries.", U64(hh_counted)},
    {"flashgate_orders_known", "gauge", "Orders this gateway can answer status for.",
     U64(os.known)},
    {"flashgate_orders_evicted_total", "counter",
     "Orders evicted from the status table (orders.max_known).", U64(os.evicted)},
    {"flashgate_config_version", "gauge", "Version of the last audited admin change.",
     U64(config_version)},
    {"flashgate_access_log_lines_total", "counter", "Sampled access log lines written.",
     U64(access_logged)},
    {"flashgate_proxy_client_aborts_total", "counter",
     "Upstream transfers ended because their client's connection closed.",
     U64(proxy_client_aborts)},
    {"flashgate_proxy_stale_connections_total", "counter",
     "Kept upstream connections refused before a request: bytes or a close were waiting.",
     U64(proxy_stale_conns)},
    {"flashgate_admin_responses_total", "counter", "Answers of the admin API by code.",
     FN(m_admin_responses)},
};

char *gw_metrics_text(gw_server_t *srv, size_t *len)
{
    buf_t b = {.s = cm_xmalloc(16384), .len = 0, .cap = 16384};
    static gw_counters_t c; /* ~20 KiB: kept off the admin thread's stack, under mu */
    static cm_topk_t users, ips;
    static gw_rule_t rules[GW_LIMIT_RULES_MAX];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    gw_workers_counters(srv, &c);

    scrape_t s = {.b = &b, .srv = srv, .c = &c, .one = 1, .workers = srv->pool.nworkers,
                  .rules = rules};
    s.uptime_s = (double)(cm_wall_ms() - srv->life.started_ms) / 1e3;
    s.accepted_units = c.accepted_units;
    s.access_logged = c.access_logged;
    s.proxy_client_aborts = c.proxy_client_aborts;
    s.proxy_stale_conns = c.proxy_stale_conns;
    int nid_held = 1;
    gw_fleet_node_counters(srv, &s.nid_lost, &s.nid_refused, &nid_held);
    s.nid_held = (uint64_t)nid_held;
    s.nr = gw_limits_get_rules(srv->stores.limits, rules, GW_LIMIT_RULES_MAX);
    oq_spool_stats(srv->stores.spool, &s.ss);
    s.spool_max_bytes = srv->cfg->spool_max_bytes;
    if ((s.has_relay = srv->stores.relay != NULL)) {
        oq_relay_stats(srv->stores.relay, &s.rs);
        s.relay_age_s = (double)s.rs.oldest_unacked_age_ms / 1e3;
    }
    gw_limits_stats(srv->stores.limits, &s.ls);
    gw_hitters_merge(srv, &users, &ips);
    s.hh_counted = users.total;
    gw_orders_stats(srv->stores.orders, &s.os);
    s.config_version = gw_audit_version(srv);

    for (size_t i = 0; i < CM_ARRAY_LEN(metrics); i++) {
        const metric_t *m = &metrics[i];
        if (m->relay && !s.has_relay)
            continue;
        if (m->name)
            head(&b, m->name, m->type, m->help);
        const char *f = (const char *)&s + m->off;
        switch (m->kind) {
        case MV_U64:
            put(&b, "%s %llu\n", m->name, (unsigned long long)*(const uint64_t *)(const void *)f);
            break;
        case MV_SECS:
            put(&b, "%s %.3f\n", m->name, *(const double *)(const void *)f);
            break;
        case MV_FN:
            m->fn(&s, m);
            break;
        }
    }
    pthread_mutex_unlock(&mu);
    *len = b.len;
    return b.s;
}
