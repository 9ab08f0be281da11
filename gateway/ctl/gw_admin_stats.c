/*
 * What the dashboard reads and serves: the counters (/admin/v1/stats,
 * /metrics), their history and the fleet's view (gw_ring.h), and the
 * dashboard's own static files (embedded; they hold no data, so no token).
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/ctl/gw_limit_json.h"
#include "gateway/ctl/gw_ring.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- stats, config, metrics ----*/

/* The top `max` by guaranteed rejections (count - error: space-saving's lower
 * bound), rows at or below 1 left out: a user who sent one request and took
 * over a slot reads "5 rejections, error 4", which says nothing. */
static json_t *hitters_arr(const cm_topk_t *t, bool ip, size_t max)
{
    cm_topk_entry_t top[CM_TOPK_SLOTS];
    size_t n = cm_topk_sorted(t, top, CM_TOPK_SLOTS);
    /* by lower bound, count breaking ties (n is at most 64: an insertion sort) */
    for (size_t i = 1; i < n; i++) {
        cm_topk_entry_t e = top[i];
        size_t j = i;
        for (; j > 0; j--) {
            uint64_t lj = top[j - 1].count - top[j - 1].error, le = e.count - e.error;
            if (lj > le || (lj == le && top[j - 1].count >= e.count))
                break;
            top[j] = top[j - 1];
        }
        top[j] = e;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n && json_array_size(arr) < max; i++) {
        uint64_t lower = top[i].count - top[i].error;
        if (lower <= 1)
            continue;
        char key[80];
        if (ip)
            gw_client_key_format((const uint8_t *)top[i].key, top[i].len, key, sizeof(key));
        else
            snprintf(key, sizeof(key), "%.*s", (int)top[i].len, top[i].key);
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I}", "key", key, "count",
                                             (json_int_t)top[i].count, "error",
                                             (json_int_t)top[i].error, "lower_bound",
                                             (json_int_t)lower));
    }
    return arr;
}

static json_t *latency_obj(const gw_counters_t *c)
{
    static const uint64_t bounds[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;
    json_t *o = json_object();
    json_t *b = json_array();
    for (int i = 0; i < GW_LAT_NBOUNDS; i++)
        json_array_append_new(b, json_integer((json_int_t)bounds[i]));
    json_object_set_new(o, "bounds_us", b);
    for (int r = 0; r < GW_ROUTE_COUNT; r++) {
        json_t *counts = json_array();
        uint64_t total = 0;
        for (int i = 0; i <= GW_LAT_NBOUNDS; i++) {
            uint64_t n = atomic_load(&c->lat_buckets[r][i]);
            total += n;
            json_array_append_new(counts, json_integer((json_int_t)n));
        }
        json_object_set_new(o, gw_route_name((gw_route_t)r),
                            json_pack("{s:o,s:I,s:I}", "counts", counts, "count",
                                      (json_int_t)total, "sum_us",
                                      (json_int_t)atomic_load(&c->lat_sum_us[r])));
    }
    return o;
}

static char *stats_json(gw_server_t *srv)
{
    gw_counters_t c;
    gw_workers_counters(srv, &c);
    json_t *replies = json_object();
    for (int i = 0; i < GW_R_COUNT; i++) {
        uint64_t n = atomic_load(&c.replies[i]);
        if (!n)
            continue;
        char key[48];
        int kind = gw_px_kind((gw_reply_t)i);
        if (kind < 0) {
            snprintf(key, sizeof(key), "%d_%s", gw_reply_status((gw_reply_t)i),
                     gw_reply_code((gw_reply_t)i));
            json_object_set_new(replies, key, json_integer((json_int_t)n));
            continue;
        }
        /* proxied: by the status sent ("404_proxied", "503_fallback") */
        for (int s = 0; s < GW_PX_STATUS_SPAN; s++) {
            uint64_t m = atomic_load(&c.px_status[kind][s]);
            if (m) {
                snprintf(key, sizeof(key), "%d_%s", GW_PX_STATUS_MIN + s,
                         gw_reply_code((gw_reply_t)i));
                json_object_set_new(replies, key, json_integer((json_int_t)m));
            }
        }
    }
    json_t *rl = json_object();
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        json_object_set_new(rl, gw_scope_name((gw_scope_t)s),
                            json_integer((json_int_t)atomic_load(&c.rate_limited[s])));
    oq_spool_stats_t ss;
    oq_spool_stats(srv->stores.spool, &ss);
    gw_limits_stats_t ls;
    gw_limits_stats(srv->stores.limits, &ls);
    gw_orders_stats_t os;
    gw_orders_stats(srv->stores.orders, &os);
    static cm_topk_t users, ips; /* ~12 KiB: off the small admin thread stack; under stats_mu */
    static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&stats_mu);
    gw_hitters_merge(srv, &users, &ips);
    json_t *hh = json_pack("{s:o,s:o,s:I}", "users", hitters_arr(&users, false, 10), "ips",
                           hitters_arr(&ips, true, 10), "counted", (json_int_t)users.total);
    pthread_mutex_unlock(&stats_mu);
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:o,s:o,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,s:I},s:I,s:s,s:I}",
        "uptime_ms", (json_int_t)(cm_wall_ms() - srv->life.started_ms), "requests",
        (json_int_t)atomic_load(&c.requests), "accepted_units",
        (json_int_t)atomic_load(&c.accepted_units), "replies", replies, "rate_limited", rl,
        "spool", "unreleased_bytes", (json_int_t)ss.unreleased_bytes, "appended_records",
        (json_int_t)ss.appended_records, "segments", (json_int_t)ss.segments, "limiter", "keys",
        (json_int_t)ls.keys, "capacity", (json_int_t)ls.capacity, "bytes", (json_int_t)ls.bytes,
        "evicted_idle", (json_int_t)ls.evicted_idle, "evicted_busy", (json_int_t)ls.evicted_busy,
        "rule_sets", (json_int_t)ls.rule_sets, "orders_known", (json_int_t)os.known, "inventory",
        inv_backend_name(srv->stores.inv), "workers", (json_int_t)srv->pool.nworkers);
    json_t *spj = json_object_get(o, "spool");
    if (spj) { /* a roll that had to wait for its segment stalled the appending loop */
        json_object_set_new(spj, "rolls", json_integer((json_int_t)ss.rolls));
        json_object_set_new(spj, "rolls_inline", json_integer((json_int_t)ss.rolls_inline));
        json_object_set_new(spj, "segment_flushes",
                            json_integer((json_int_t)ss.segment_flushes));
        /* out of file descriptors at a sync: put off and tried again, not a disk failure */
        json_object_set_new(spj, "sync_fd_waits", json_integer((json_int_t)ss.sync_fd_waits));
    }
    uint64_t rp, rd, rr;
    gw_releaser_stats(srv, &rp, &rd, &rr);
    json_object_set_new(o, "releases",
                        json_pack("{s:I,s:I,s:I}", "pending", (json_int_t)rp, "done",
                                  (json_int_t)rd, "retries", (json_int_t)rr));
    json_object_set_new(
        o, "orders",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "known", (json_int_t)os.known,
                  "max_known", (json_int_t)os.max_known, "evicted", (json_int_t)os.evicted,
                  "evicted_queued", (json_int_t)os.evicted_queued, "expired_queries",
                  (json_int_t)os.expired_queries, "reasons_lost", (json_int_t)os.reasons_lost,
                  "unindexed", (json_int_t)os.unindexed, "table_bytes",
                  (json_int_t)os.table_bytes, "bytes_per_order",
                  (json_int_t)(os.table_bytes / (os.capacity ? os.capacity : 1))));
    inv_mem_stats_t ims;
    if (inv_mem_stats(srv->stores.inv, &ims) == 0) /* the memory backend's held-order tables */
        json_object_set_new(
            o, "inventory_memory",
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "held_orders", (json_int_t)ims.held_orders,
                      "max_held_orders", (json_int_t)ims.max_held_orders, "table_bytes",
                      (json_int_t)ims.table_bytes, "bytes_per_order",
                      (json_int_t)(ims.held_orders ? ims.table_bytes / ims.held_orders : 0),
                      "refused_full", (json_int_t)ims.refused_full, "over_cap_replayed",
                      (json_int_t)ims.over_cap_replayed, "key_fingerprints",
                      (json_int_t)ims.key_fingerprints));
    json_object_set_new(o, "heavy_hitters", hh);
    json_object_set_new(o, "rules", gw_rules_json(srv->stores.limits, true));
    json_object_set_new(o, "latency", latency_obj(&c));
    json_object_set_new(o, "config_version", json_integer((json_int_t)gw_audit_version(srv)));
    json_object_set_new(o, "access_logged", json_integer((json_int_t)c.access_logged));
    json_object_set_new(o, "proxy_client_aborts", json_integer((json_int_t)c.proxy_client_aborts));
    json_object_set_new(o, "proxy_stale_conns", json_integer((json_int_t)c.proxy_stale_conns));
    json_object_set_new(o, "sales", gw_sales_json(srv));
    gw_kafka_stats(srv, o);
    gw_fleet_stats(srv, o);
    gw_overload_stats(srv, o);
    gw_conn_stats(srv, o);
    gw_fair_stats(srv->fair, o);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(o);
    return s;
}

static void h_stats(gw_admin_call_t *a)
{
    gw_admin_set_big(a, stats_json(a->srv));
}

static void h_metrics(gw_admin_call_t *a)
{
    size_t len;
    a->big = gw_metrics_text(a->srv, &len);
    a->big_type = "text/plain; version=0.0.4; charset=utf-8";
}

/*---- the dashboard's history and fleet view (gw_ring.h) ----*/

static void h_history(gw_admin_call_t *a)
{
    uint64_t since = 0;
    if (!gw_admin_query_u64(a, "since", (uint64_t)INT64_MAX, &since))
        return;
    gw_admin_set_big(a, gw_ring_history_json(a->srv, (int64_t)since));
}

static void h_fleet(gw_admin_call_t *a)
{
    gw_admin_set_big(a, gw_ring_fleet_json(a->srv));
}

/*---- the dashboard (static, embedded; holds no data, so no token) ----*/

static void h_dashboard(gw_admin_call_t *a)
{
    for (size_t i = 0; i < gw_nassets; i++)
        if (strcmp(gw_assets[i].name, "index.html") == 0)
            a->asset = &gw_assets[i];
    if (!a->asset)
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "dashboard not built in");
}

static void h_asset(gw_admin_call_t *a)
{
    for (size_t i = 0; i < gw_nassets; i++)
        if (strcmp(gw_assets[i].name, a->arg) == 0)
            a->asset = &gw_assets[i];
    if (!a->asset)
        gw_resp_error(a->p, GW_R_NOT_FOUND, NULL, "no such resource: %s", a->url);
}

static const gw_admin_route_t routes[] = {
    GW_ADMIN_ROUTE("GET", "/admin/", NONE, h_dashboard),
    GW_ADMIN_ROUTE("GET", "/admin/assets/{file}", NONE, h_asset),
    GW_ADMIN_ROUTE("GET", "/metrics", READ, h_metrics),
    GW_ADMIN_ROUTE("GET", "/admin/v1/stats", READ, h_stats),
    GW_ADMIN_ROUTE("GET", "/admin/v1/history", READ, h_history),
    GW_ADMIN_ROUTE("GET", "/admin/v1/fleet", READ, h_fleet),
};

const gw_admin_route_t *gw_admin_stats_routes(size_t *n)
{
    *n = CM_ARRAY_LEN(routes);
    return routes;
}
