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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
         "(403 forbidden), a body user_id other than the verified buyer (403 identity_mismatch).");
    put(b, "flashgate_identity_refused_total{reason=\"untrusted_header\"} %llu\n",
        (unsigned long long)st.untrusted_header);
    put(b, "flashgate_identity_refused_total{reason=\"identity_mismatch\"} %llu\n",
        (unsigned long long)st.mismatches);
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

char *gw_metrics_text(gw_server_t *srv, size_t *len)
{
    buf_t b = {.s = cm_xmalloc(16384), .len = 0, .cap = 16384};
    static gw_counters_t c; /* ~20 KiB: kept off the admin thread's stack, under mu */
    static cm_topk_t users, ips;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    gw_workers_counters(srv, &c);

    head(&b, "flashgate_up", "gauge", "1 while the gateway serves.");
    put(&b, "flashgate_up 1\n");
    head(&b, "flashgate_build_info", "gauge",
         "1, labelled with the version and commit (git describe) this binary was built from.");
    put(&b, "flashgate_build_info{version=\"%s\",commit=\"%s\"} 1\n", FLASHGATE_VERSION,
        cm_build_commit);
    process_metrics(&b);
    head(&b, "flashgate_uptime_seconds", "gauge", "Seconds since start.");
    put(&b, "flashgate_uptime_seconds %.3f\n", (double)(cm_wall_ms() - srv->started_ms) / 1e3);
    head(&b, "flashgate_workers", "gauge", "Worker event loops.");
    put(&b, "flashgate_workers %u\n", srv->nworkers);

    head(&b, "flashgate_requests_total", "counter",
         "Requests received on the public listener, by route (other = unrouted).");
    for (int r = 0; r < GW_ROUTE_COUNT; r++)
        put(&b, "flashgate_requests_total{route=\"%s\"} %llu\n", gw_route_name((gw_route_t)r),
            (unsigned long long)c.route_requests[r]);
    head(&b, "flashgate_responses_total", "counter",
         "Answers on the public listener by route, HTTP status and error code.");
    for (int r = 0; r < GW_ROUTE_COUNT; r++)
        for (int k = 0; k < GW_R_COUNT; k++) {
            if (!c.route_replies[r][k])
                continue;
            int kind = gw_px_kind((gw_reply_t)k);
            if (kind < 0) {
                responses_line(&b, (gw_route_t)r, gw_reply_status((gw_reply_t)k), (gw_reply_t)k,
                               c.route_replies[r][k]);
                continue;
            }
            /* an upstream's answer or a fallback: by the status sent (only the
             * proxy route answers them, so px_status is all this route's) */
            for (int s = 0; s < GW_PX_STATUS_SPAN; s++)
                if (c.px_status[kind][s])
                    responses_line(&b, (gw_route_t)r, GW_PX_STATUS_MIN + s, (gw_reply_t)k,
                                   c.px_status[kind][s]);
        }
    head(&b, "flashgate_accepted_units_total", "counter", "Units accepted (answered 202).");
    put(&b, "flashgate_accepted_units_total %llu\n", (unsigned long long)c.accepted_units);

    head(&b, "flashgate_rate_limited_total", "counter",
         "Requests refused with 429, by the limit scope that refused (global limits and rules).");
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        put(&b, "flashgate_rate_limited_total{scope=\"%s\"} %llu\n",
            gw_scope_name((gw_scope_t)s), (unsigned long long)c.rate_limited[s]);
    head(&b, "flashgate_overload_rejected_total", "counter",
         "Requests refused with 503 overloaded, by the reason in the body.");
    for (int k = 0; k < GW_OLR_COUNT; k++)
        put(&b, "flashgate_overload_rejected_total{reason=\"%s\"} %llu\n", gw_ol_reason_name((gw_ol_reason_t)k),
            (unsigned long long)c.overload_reasons[k]);
    overload_metrics(&b, srv);
    identity_metrics(&b, srv);

    uint64_t nid_lost = 0, nid_refused = 0;
    int nid_held = 1;
    gw_fleet_node_counters(srv, &nid_lost, &nid_refused, &nid_held);
    head(&b, "flashgate_fleet_node_id_lost_total", "counter",
         "Times this gateway found its node id gone from Redis or held by another gateway.");
    put(&b, "flashgate_fleet_node_id_lost_total %llu\n", (unsigned long long)nid_lost);
    head(&b, "flashgate_fleet_node_id_refused_total", "counter",
         "Buys answered 503 because no unique order id could be made (node id lost, or its "
         "lease not renewed).");
    put(&b, "flashgate_fleet_node_id_refused_total %llu\n", (unsigned long long)nid_refused);
    head(&b, "flashgate_fleet_node_id_held", "gauge",
         "1 while this gateway holds a node id (or has a fixed one), 0 after a loss until it "
         "claims one.");
    put(&b, "flashgate_fleet_node_id_held %d\n", nid_held);

    gw_rule_t rules[GW_LIMIT_RULES_MAX];
    size_t nr = gw_limits_get_rules(srv->limits, rules, GW_LIMIT_RULES_MAX);
    head(&b, "flashgate_rule_rejected_total", "counter",
         "Requests a per-sale rule refused (mode enforce) or would have refused (mode dry_run).");
    for (size_t i = 0; i < nr; i++) {
        char l[160];
        lv(rules[i].sale_id, l, sizeof(l));
        for (int part = 0; part < 2; part++) {
            put(&b, "flashgate_rule_rejected_total{sale=\"%s\",scope=\"%s\",mode=\"enforce\"} %llu\n",
                l, part ? "sale" : "user", (unsigned long long)rules[i].rejected[part]);
            put(&b, "flashgate_rule_rejected_total{sale=\"%s\",scope=\"%s\",mode=\"dry_run\"} %llu\n",
                l, part ? "sale" : "user", (unsigned long long)rules[i].dry_run_rejected[part]);
        }
    }
    head(&b, "flashgate_rule_dry_run", "gauge", "1 for a per-sale rule in dry-run mode, else 0.");
    for (size_t i = 0; i < nr; i++) {
        char l[160];
        put(&b, "flashgate_rule_dry_run{sale=\"%s\"} %d\n", lv(rules[i].sale_id, l, sizeof(l)),
            rules[i].dry_run ? 1 : 0);
    }

    head(&b, "flashgate_limit_rate", "gauge",
         "Configured global rate limit by scope, requests per second (0 = off).");
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        put(&b, "flashgate_limit_rate{scope=\"%s\"} %.3f\n", gw_scope_name((gw_scope_t)s),
            (double)gw_limits_get(srv->limits, (gw_scope_t)s).rate_milli / 1e3);
    head(&b, "flashgate_limit_burst", "gauge", "Configured global burst by scope.");
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        put(&b, "flashgate_limit_burst{scope=\"%s\"} %llu\n", gw_scope_name((gw_scope_t)s),
            (unsigned long long)gw_limits_get(srv->limits, (gw_scope_t)s).burst);

    static const struct {
        const char *name, *type, *help;
    } sale_m[4] = {
        {"flashgate_sale_accepted_units_total", "counter", "Units accepted per sale."},
        {"flashgate_sale_accepted_orders_total", "counter", "Orders accepted per sale."},
        {"flashgate_sale_stock_left", "gauge", "Units left per sale."},
        {"flashgate_sale_stock_units", "gauge", "Units made available per sale (with restocks)."},
    };
    for (int k = 0; k < 4; k++) {
        head(&b, sale_m[k].name, sale_m[k].type, sale_m[k].help);
        sale_ctx_t sc = {.b = &b, .which = k};
        inv_sale_foreach(srv->inv, sale_line, &sc);
    }

    static const uint64_t bounds[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;
    head(&b, "flashgate_request_duration_seconds", "histogram",
         "Time from a request's head to its answer being queued, by route (summed over workers).");
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        const char *rn = gw_route_name((gw_route_t)r);
        uint64_t cum = 0;
        for (int i = 0; i < GW_LAT_NBOUNDS; i++) {
            cum += c.lat_buckets[r][i];
            put(&b, "flashgate_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", rn,
                (double)bounds[i] / 1e6, (unsigned long long)cum);
        }
        cum += c.lat_buckets[r][GW_LAT_NBOUNDS];
        put(&b, "flashgate_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", rn,
            (unsigned long long)cum);
        put(&b, "flashgate_request_duration_seconds_sum{route=\"%s\"} %.6f\n", rn,
            (double)c.lat_sum_us[r] / 1e6);
        put(&b, "flashgate_request_duration_seconds_count{route=\"%s\"} %llu\n", rn,
            (unsigned long long)cum);
    }

    oq_spool_stats_t ss;
    oq_spool_stats(srv->spool, &ss);
    head(&b, "flashgate_spool_unreleased_bytes", "gauge",
         "Bytes in the spool not yet released (acknowledged by Kafka).");
    put(&b, "flashgate_spool_unreleased_bytes %llu\n", (unsigned long long)ss.unreleased_bytes);
    head(&b, "flashgate_spool_segments", "gauge", "Spool segment files.");
    put(&b, "flashgate_spool_segments %llu\n", (unsigned long long)ss.segments);
    head(&b, "flashgate_spool_appended_records_total", "counter", "Records appended to the spool.");
    put(&b, "flashgate_spool_appended_records_total %llu\n",
        (unsigned long long)ss.appended_records);
    head(&b, "flashgate_spool_fsyncs_total", "counter", "fdatasync rounds of the spool.");
    put(&b, "flashgate_spool_fsyncs_total %llu\n", (unsigned long long)ss.fsyncs);
    head(&b, "flashgate_spool_sync_fd_waits_total", "counter",
         "Spool fdatasync rounds put off for want of a file descriptor (EMFILE, ENFILE).");
    put(&b, "flashgate_spool_sync_fd_waits_total %llu\n", (unsigned long long)ss.sync_fd_waits);
    if (srv->relay) {
        oq_relay_stats_t rs;
        oq_relay_stats(srv->relay, &rs);
        head(&b, "flashgate_relay_unreleased_records", "gauge",
             "Spool depth: records tracked by the relay and not yet released.");
        put(&b, "flashgate_relay_unreleased_records %llu\n",
            (unsigned long long)rs.spool_unreleased_records);
        head(&b, "flashgate_relay_inflight", "gauge", "Records produced to Kafka, not yet acknowledged.");
        put(&b, "flashgate_relay_inflight %llu\n", (unsigned long long)rs.inflight);
        head(&b, "flashgate_relay_oldest_unacked_age_seconds", "gauge",
             "Relay lag: age of the oldest record Kafka has not acknowledged.");
        put(&b, "flashgate_relay_oldest_unacked_age_seconds %.3f\n",
            (double)rs.oldest_unacked_age_ms / 1e3);
        head(&b, "flashgate_relay_awaiting_outcome", "gauge",
             "Delivered records waiting for settlement's outcome (embedded broker).");
        put(&b, "flashgate_relay_awaiting_outcome %llu\n", (unsigned long long)rs.awaiting_outcome);
        static const uint64_t ack_bounds[OQ_ACK_NBOUNDS] = OQ_ACK_BOUNDS_MS;
        head(&b, "flashgate_kafka_ack_duration_seconds", "histogram",
             "Kafka latency: produce to successful delivery report (acks=all), ms resolution.");
        uint64_t cum = 0;
        for (int i = 0; i < OQ_ACK_NBOUNDS; i++) {
            cum += rs.ack_buckets[i];
            put(&b, "flashgate_kafka_ack_duration_seconds_bucket{le=\"%g\"} %llu\n",
                (double)ack_bounds[i] / 1e3, (unsigned long long)cum);
        }
        cum += rs.ack_buckets[OQ_ACK_NBOUNDS];
        put(&b, "flashgate_kafka_ack_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
            (unsigned long long)cum);
        put(&b, "flashgate_kafka_ack_duration_seconds_sum %.3f\n", (double)rs.ack_sum_ms / 1e3);
        put(&b, "flashgate_kafka_ack_duration_seconds_count %llu\n", (unsigned long long)cum);
        head(&b, "flashgate_relay_produced_total", "counter", "Records produced to Kafka.");
        put(&b, "flashgate_relay_produced_total %llu\n", (unsigned long long)rs.produced);
        head(&b, "flashgate_relay_delivered_total", "counter", "Successful delivery reports.");
        put(&b, "flashgate_relay_delivered_total %llu\n", (unsigned long long)rs.delivered);
        head(&b, "flashgate_relay_errors_total", "counter", "Failed deliveries and produce errors.");
        put(&b, "flashgate_relay_errors_total %llu\n", (unsigned long long)rs.errors);
        head(&b, "flashgate_relay_resent_total", "counter", "Records produced again after an error.");
        put(&b, "flashgate_relay_resent_total %llu\n", (unsigned long long)rs.resent);
        head(&b, "flashgate_relay_retention_resent_total", "counter",
             "Records produced again because the broker dropped them before settle read them.");
        put(&b, "flashgate_relay_retention_resent_total %llu\n",
            (unsigned long long)rs.retention_resent);
    }

    gw_limits_stats_t ls;
    gw_limits_stats(srv->limits, &ls);
    head(&b, "flashgate_limiter_keys", "gauge", "Users and client addresses tracked by the limiter.");
    put(&b, "flashgate_limiter_keys %llu\n", (unsigned long long)ls.keys);
    head(&b, "flashgate_limiter_capacity", "gauge", "Most keys the limiter tracks.");
    put(&b, "flashgate_limiter_capacity %llu\n", (unsigned long long)ls.capacity);
    head(&b, "flashgate_limiter_evicted_total", "counter",
         "Limiter keys evicted: idle (lossless) or busy (that key fails open).");
    put(&b, "flashgate_limiter_evicted_total{kind=\"idle\"} %llu\n",
        (unsigned long long)ls.evicted_idle);
    put(&b, "flashgate_limiter_evicted_total{kind=\"busy\"} %llu\n",
        (unsigned long long)ls.evicted_busy);

    /* The heavy hitters themselves (user ids, addresses) are not label values:
     * they churn, and each would be a series of its own. The admin API's stats
     * and the dashboard list them. */
    gw_hitters_merge(srv, &users, &ips);
    head(&b, "flashgate_heavy_hitter_counted_total", "counter",
         "Rejections fed to the heavy-hitter summaries.");
    put(&b, "flashgate_heavy_hitter_counted_total %llu\n", (unsigned long long)users.total);

    head(&b, "flashgate_orders_known", "gauge", "Orders this gateway can answer status for.");
    gw_orders_stats_t os;
    gw_orders_stats(srv->orders, &os);
    put(&b, "flashgate_orders_known %llu\n", (unsigned long long)os.known);
    head(&b, "flashgate_orders_evicted_total", "counter",
         "Orders evicted from the status table (orders.max_known).");
    put(&b, "flashgate_orders_evicted_total %llu\n", (unsigned long long)os.evicted);
    head(&b, "flashgate_config_version", "gauge", "Version of the last audited admin change.");
    put(&b, "flashgate_config_version %llu\n", (unsigned long long)gw_audit_version(srv));
    head(&b, "flashgate_access_log_lines_total", "counter", "Sampled access log lines written.");
    put(&b, "flashgate_access_log_lines_total %llu\n", (unsigned long long)c.access_logged);
    head(&b, "flashgate_proxy_client_aborts_total", "counter",
         "Upstream transfers ended because their client's connection closed.");
    put(&b, "flashgate_proxy_client_aborts_total %llu\n",
        (unsigned long long)c.proxy_client_aborts);
    head(&b, "flashgate_proxy_stale_connections_total", "counter",
         "Kept upstream connections refused before a request: bytes or a close were waiting.");
    put(&b, "flashgate_proxy_stale_connections_total %llu\n",
        (unsigned long long)c.proxy_stale_conns);
    head(&b, "flashgate_admin_responses_total", "counter", "Answers of the admin API by code.");
    for (int k = 0; k < GW_R_COUNT; k++) {
        uint64_t n = atomic_load_explicit(&srv->admin_ctr.replies[k], memory_order_relaxed);
        if (n)
            put(&b, "flashgate_admin_responses_total{status=\"%d\",code=\"%s\"} %llu\n",
                gw_reply_status((gw_reply_t)k), gw_reply_code((gw_reply_t)k),
                (unsigned long long)n);
    }
    pthread_mutex_unlock(&mu);
    *len = b.len;
    return b.s;
}
