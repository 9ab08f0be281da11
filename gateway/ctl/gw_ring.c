/*
 * The dashboard's ring of one-second samples: see gw_ring.h.
 *
 * One thread sleeps GW_RING_PERIOD_MS on a condition variable (the stop wakes
 * it), then reads the summed counters, the overload snapshot, the spool and
 * relay figures and the sales, keeps the differences since the last sample
 * (answers, buy latency histogram, identity verifications) and the current
 * values (the rest), and writes one sample over the oldest. Readers (the admin
 * thread) take `mu` while they turn the ring into JSON; the sampler holds it
 * only to write one sample, so a slow reader delays a sample, never a request.
 */
#include "gateway/ctl/gw_ring.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_overload.h"
#include "identity/id.h"
#include "queue/oq_relay.h"
#include "queue/oq_spool.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Answer classes, by status; fixed, so the page gives each one fixed colour. */
#define CLASSES(XX)                                                                                \
    XX(ACCEPTED, "202") /* an order accepted */                                                    \
    XX(OK, "2xx")       /* other 2xx and 3xx: status polls, health, proxied */                     \
    XX(SOLD_OUT, "410") /* sold out or the sale ended */                                           \
    XX(LIMITED, "429")  /* rate limited */                                                         \
    XX(REJECTED, "4xx") /* other 4xx: bad input, purchase limit, auth */                           \
    XX(ERROR, "5xx")    /* errors, 503 busy/overloaded included */

enum {
#define XX(n, s) CLS_##n,
    CLASSES(XX)
#undef XX
        CLS_COUNT
};
static const char *const cls_names[CLS_COUNT] = {
#define XX(n, s) s,
    CLASSES(XX)
#undef XX
};

typedef struct gw_ring_sample {
    int64_t t_ms;   /* wall clock at the sample */
    uint32_t dt_ms; /* since the sample before (the rates' denominator) */
    uint32_t answers[CLS_COUNT];
    uint32_t buys;                /* buy answers measured in the interval */
    float buy_p50_ms, buy_p99_ms; /* -1: no buy in the interval */
    int8_t level;                 /* degrade level 0..3 */
    uint8_t pinned, ready;
    uint32_t limit[GW_RING_DEPS], inflight[GW_RING_DEPS];
    uint64_t spool_bytes; /* unreleased spool bytes */
    uint32_t relay_inflight, relay_lag_ms, awaiting_outcome;
    int64_t stock_left[GW_RING_SALES], accepted_units[GW_RING_SALES]; /* INT64_MIN: none */
    uint32_t identity[ID__OUTCOME_COUNT];
} gw_ring_sample_t;

/* A column's name (a sale id or a dependency); "" when free. */
typedef struct col {
    char name[INV_SALE_ID_MAX + 1];
    uint64_t seen; /* the sample counter when it was last seen */
} col_t;

typedef struct gw_ring {
    gw_server_t *srv;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    bool stopping;
    gw_ring_sample_t *s; /* GW_RING_SLOTS */
    uint64_t n;          /* samples written (the newest is s[(n - 1) % SLOTS]) */
    col_t sales[GW_RING_SALES], deps[GW_RING_DEPS];
    /* the sampler's previous cumulative counters (its thread only) */
    bool have_prev;
    uint64_t prev_cls[CLS_COUNT];
    uint64_t prev_lat[GW_LAT_NBOUNDS + 1];
    uint64_t prev_id[ID__OUTCOME_COUNT];
    int64_t prev_ms;
    uint64_t requests, accepted_units; /* totals at the newest sample (under mu) */
    uint64_t read_requests, read_accepted; /* as read_figures read them (sampler thread) */
    gw_ol_snapshot_t ol;               /* the sampler's (~4 KiB: off its stack) */
} gw_ring_t;

/*---- the quantile ----*/

double gw_ring_quantile(const uint64_t *counts, const uint64_t *bounds, size_t n, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= n; i++)
        total += counts[i];
    if (!total)
        return -1;
    double rank = q * (double)total, below = 0;
    for (size_t i = 0; i < n; i++) {
        if (counts[i] && below + (double)counts[i] >= rank) {
            double lo = i ? (double)bounds[i - 1] : 0, hi = (double)bounds[i];
            return lo + (hi - lo) * (rank - below) / (double)counts[i];
        }
        below += (double)counts[i];
    }
    return (double)bounds[n - 1]; /* in the open bucket above the last bound */
}

/*---- sampling ----*/

static int cls_of(int status, gw_reply_t r)
{
    if (r == GW_R_ACCEPTED)
        return CLS_ACCEPTED;
    if (status >= 500)
        return CLS_ERROR;
    if (status == 410)
        return CLS_SOLD_OUT;
    if (status == 429)
        return CLS_LIMITED;
    if (status >= 400)
        return CLS_REJECTED;
    return CLS_OK;
}

/* The column of `name` in cols (taking the one seen longest ago when it is new,
 * with its history cleared by `clear`); -1 when name does not fit. Under mu. */
static int col_of(gw_ring_t *g, col_t *cols, size_t ncols, const char *name,
                  void (*clear)(gw_ring_t *g, int c))
{
    if (strlen(name) >= sizeof(cols[0].name))
        return -1;
    int oldest = 0;
    for (size_t i = 0; i < ncols; i++) {
        if (strcmp(cols[i].name, name) == 0) {
            cols[i].seen = g->n + 1;
            return (int)i;
        }
        if (cols[i].seen < cols[oldest].seen)
            oldest = (int)i;
    }
    if (cols[oldest].name[0])
        clear(g, oldest);
    snprintf(cols[oldest].name, sizeof(cols[oldest].name), "%s", name);
    cols[oldest].seen = g->n + 1;
    return oldest;
}

static void clear_sale(gw_ring_t *g, int c)
{
    for (size_t i = 0; i < GW_RING_SLOTS; i++)
        g->s[i].stock_left[c] = g->s[i].accepted_units[c] = INT64_MIN;
}

static void clear_dep(gw_ring_t *g, int c)
{
    for (size_t i = 0; i < GW_RING_SLOTS; i++)
        g->s[i].limit[c] = g->s[i].inflight[c] = UINT32_MAX;
}

typedef struct {
    gw_ring_t *g;
    gw_ring_sample_t *x;
} sale_ctx_t;

static void sale_one(inv_sale_t *sale, void *ctx)
{
    sale_ctx_t *sc = ctx;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    int c = col_of(sc->g, sc->g->sales, GW_RING_SALES, info.sale_id, clear_sale);
    if (c >= 0) {
        sc->x->stock_left[c] = info.stock_left;
        sc->x->accepted_units[c] = info.accepted_units;
    }
}

static uint32_t u32(uint64_t v)
{
    return v > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)v;
}

/* Reads the figures that need no lock of ours into x (the sampler's thread). */
static void read_figures(gw_ring_t *g, gw_ring_sample_t *x, gw_ol_snapshot_t *ol)
{
    gw_server_t *srv = g->srv;
    static const uint64_t bounds[GW_LAT_NBOUNDS] = GW_LAT_BOUNDS_US;
    gw_counters_t c;
    gw_workers_counters(srv, &c);
    uint64_t cls[CLS_COUNT] = {0};
    for (int i = 0; i < GW_R_COUNT; i++) {
        int kind = gw_px_kind((gw_reply_t)i);
        if (kind < 0) {
            cls[cls_of(gw_reply_status((gw_reply_t)i), (gw_reply_t)i)] +=
                atomic_load_explicit(&c.replies[i], memory_order_relaxed);
            continue;
        }
        for (int s = 0; s < GW_PX_STATUS_SPAN; s++)
            cls[cls_of(GW_PX_STATUS_MIN + s, (gw_reply_t)i)] +=
                atomic_load_explicit(&c.px_status[kind][s], memory_order_relaxed);
    }
    uint64_t lat[GW_LAT_NBOUNDS + 1], dlat[GW_LAT_NBOUNDS + 1];
    for (int i = 0; i <= GW_LAT_NBOUNDS; i++)
        lat[i] = atomic_load_explicit(&c.lat_buckets[GW_ROUTE_BUY][i], memory_order_relaxed);
    gw_identity_stats_t ids;
    gw_identity_stats(srv, &ids);
    int64_t now = cm_wall_ms();

    x->t_ms = now;
    x->dt_ms = g->have_prev && now > g->prev_ms ? (uint32_t)(now - g->prev_ms) : GW_RING_PERIOD_MS;
    uint64_t buys = 0;
    for (int i = 0; i <= GW_LAT_NBOUNDS; i++) {
        dlat[i] = g->have_prev && lat[i] >= g->prev_lat[i] ? lat[i] - g->prev_lat[i] : 0;
        buys += dlat[i];
    }
    for (int k = 0; k < CLS_COUNT; k++)
        x->answers[k] = g->have_prev && cls[k] >= g->prev_cls[k] ? u32(cls[k] - g->prev_cls[k]) : 0;
    for (int k = 0; k < ID__OUTCOME_COUNT; k++)
        x->identity[k] = g->have_prev && ids.verifications[k] >= g->prev_id[k]
                             ? u32(ids.verifications[k] - g->prev_id[k])
                             : 0;
    x->buys = u32(buys);
    double p50 = gw_ring_quantile(dlat, bounds, GW_LAT_NBOUNDS, 0.50);
    double p99 = gw_ring_quantile(dlat, bounds, GW_LAT_NBOUNDS, 0.99);
    x->buy_p50_ms = p50 < 0 ? -1.0f : (float)(p50 / 1000.0);
    x->buy_p99_ms = p99 < 0 ? -1.0f : (float)(p99 / 1000.0);
    memcpy(g->prev_cls, cls, sizeof(cls));
    memcpy(g->prev_lat, lat, sizeof(lat));
    memcpy(g->prev_id, ids.verifications, sizeof(g->prev_id));
    g->prev_ms = now;
    g->have_prev = true;
    g->read_requests = atomic_load(&c.requests);
    g->read_accepted = atomic_load(&c.accepted_units);

    gw_overload_snapshot(srv, ol);
    x->level = (int8_t)ol->level;
    x->pinned = ol->pinned;
    x->ready = atomic_load(&srv->life.ready) && !atomic_load(&srv->life.draining) &&
               !atomic_load(&srv->life.leaving);
    if (srv->stores.spool) {
        oq_spool_stats_t ss;
        oq_spool_stats(srv->stores.spool, &ss);
        x->spool_bytes = ss.unreleased_bytes;
    }
    if (srv->stores.relay) {
        oq_relay_stats_t rs;
        oq_relay_stats(srv->stores.relay, &rs);
        x->relay_inflight = u32(rs.inflight);
        x->relay_lag_ms = u32(rs.oldest_unacked_age_ms);
        x->awaiting_outcome = u32(rs.awaiting_outcome);
    }
}

static char *gw_ring_figures_text(gw_ring_t *g);

static void sample(gw_ring_t *g)
{
    gw_ring_sample_t x;
    memset(&x, 0, sizeof(x));
    for (int c = 0; c < GW_RING_SALES; c++)
        x.stock_left[c] = x.accepted_units[c] = INT64_MIN;
    for (int c = 0; c < GW_RING_DEPS; c++)
        x.limit[c] = x.inflight[c] = UINT32_MAX;
    gw_ol_snapshot_t *ol = &g->ol;
    read_figures(g, &x, ol);

    pthread_mutex_lock(&g->mu);
    /* the sales (under mu: a new one may take a column and clear its history) */
    sale_ctx_t sc = {g, &x};
    inv_sale_foreach(g->srv->stores.inv, sale_one, &sc);
    for (unsigned d = 0; d < ol->ndeps && d < GW_OL_DEPS_MAX; d++) {
        if (!ol->deps[d].active)
            continue;
        int c = col_of(g, g->deps, GW_RING_DEPS, ol->deps[d].name, clear_dep);
        if (c >= 0) {
            x.limit[c] = ol->deps[d].limit;
            x.inflight[c] = ol->deps[d].inflight;
        }
    }
    g->s[g->n % GW_RING_SLOTS] = x;
    g->n++;
    g->requests = g->read_requests; /* the fleet view reads them under mu */
    g->accepted_units = g->read_accepted;
    pthread_mutex_unlock(&g->mu);

    if (g->srv->node.fleet) {
        char *fig = gw_ring_figures_text(g);
        if (fig)
            gw_fleet_figures_set(g->srv, fig);
        free(fig);
    }
}

/*---- JSON ----*/

static const gw_ring_sample_t *at(const gw_ring_t *g, uint64_t i)
{
    return &g->s[i % GW_RING_SLOTS];
}

static json_t *num_or_null(double v)
{
    return v < 0 ? json_null() : json_real(round(v * 1000.0) / 1000.0);
}

static double rate(uint32_t count, uint32_t dt_ms)
{
    return round((double)count * 100000.0 / (dt_ms ? dt_ms : 1)) / 100.0;
}

/* The newest sample's figures, answers and error ratio over the last 5 s. Under mu. */
static json_t *figures_obj(gw_ring_t *g)
{
    gw_server_t *srv = g->srv;
    const char *member = gw_fleet_member(srv);
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "member", member ? member : srv->cfg->listen,
                          "listen", srv->cfg->listen, "admin_listen", srv->cfg->admin_listen,
                          "node_id", (json_int_t)srv->node.id);
    if (!g->n) {
        json_object_set_new(o, "t_ms", json_integer((json_int_t)cm_wall_ms()));
        json_object_set_new(o, "ready", json_boolean(atomic_load(&srv->life.ready)));
        return o;
    }
    const gw_ring_sample_t *x = at(g, g->n - 1);
    uint64_t k = g->n < 5 ? g->n : 5, dt = 0, sum[CLS_COUNT] = {0}, all = 0;
    for (uint64_t i = g->n - k; i < g->n; i++) {
        dt += at(g, i)->dt_ms;
        for (int c = 0; c < CLS_COUNT; c++)
            sum[c] += at(g, i)->answers[c];
    }
    json_t *ans = json_object();
    for (int c = 0; c < CLS_COUNT; c++) {
        all += sum[c];
        json_object_set_new(ans, cls_names[c],
                            json_real(round((double)sum[c] * 100000.0 / (dt ? dt : 1)) / 100.0));
    }
    json_object_set_new(o, "t_ms", json_integer((json_int_t)x->t_ms));
    json_object_set_new(o, "answers_per_s", ans);
    json_object_set_new(
        o, "error_ratio",
        json_real(all ? round((double)sum[CLS_ERROR] * 10000.0 / (double)all) / 10000.0 : 0.0));
    json_object_set_new(o, "buy_p50_ms", num_or_null(x->buy_p50_ms));
    json_object_set_new(o, "buy_p99_ms", num_or_null(x->buy_p99_ms));
    json_object_set_new(o, "level", json_integer(x->level));
    json_object_set_new(o, "pinned", json_boolean(x->pinned));
    json_object_set_new(o, "ready", json_boolean(x->ready));
    json_object_set_new(o, "spool_bytes", json_integer((json_int_t)x->spool_bytes));
    json_object_set_new(o, "relay_inflight", json_integer(x->relay_inflight));
    json_object_set_new(o, "relay_lag_ms", json_integer(x->relay_lag_ms));
    json_object_set_new(o, "awaiting_outcome", json_integer(x->awaiting_outcome));
    json_object_set_new(o, "requests", json_integer((json_int_t)g->requests));
    json_object_set_new(o, "accepted_units", json_integer((json_int_t)g->accepted_units));
    json_t *sales = json_object();
    for (int c = 0; c < GW_RING_SALES; c++)
        if (g->sales[c].name[0] && x->stock_left[c] != INT64_MIN)
            json_object_set_new(sales, g->sales[c].name,
                                json_pack("{s:I,s:I}", "stock_left", (json_int_t)x->stock_left[c],
                                          "accepted_units", (json_int_t)x->accepted_units[c]));
    json_object_set_new(o, "sales", sales);
    json_t *lim = json_object();
    for (int c = 0; c < GW_RING_DEPS; c++)
        if (g->deps[c].name[0] && x->limit[c] != UINT32_MAX)
            json_object_set_new(lim, g->deps[c].name,
                                json_pack("{s:I,s:I}", "limit", (json_int_t)x->limit[c], "inflight",
                                          (json_int_t)x->inflight[c]));
    json_object_set_new(o, "limits", lim);
    return o;
}

static char *gw_ring_figures_text(gw_ring_t *g)
{
    pthread_mutex_lock(&g->mu);
    json_t *o = figures_obj(g);
    pthread_mutex_unlock(&g->mu);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}

static void arr_u32(json_t *a, uint32_t v)
{
    json_array_append_new(a, v == UINT32_MAX ? json_null() : json_integer((json_int_t)v));
}

static void arr_i64(json_t *a, int64_t v)
{
    json_array_append_new(a, v == INT64_MIN ? json_null() : json_integer((json_int_t)v));
}

char *gw_ring_history_json(gw_server_t *srv, int64_t since_ms)
{
    gw_ring_t *g = srv->ring;
    json_t *o = json_pack("{s:i,s:i}", "period_ms", GW_RING_PERIOD_MS, "capacity", GW_RING_SLOTS);
    json_t *classes = json_array(), *t = json_array(), *answers = json_object(),
           *err = json_array(), *p50 = json_array(), *p99 = json_array(), *buys = json_array(),
           *level = json_array(), *pinned = json_array(), *ready = json_array(),
           *limits = json_object(), *inflight = json_object(), *stock = json_object(),
           *acc = json_object(), *spool = json_array(), *rinf = json_array(), *rlag = json_array(),
           *await = json_array(), *ident = json_object();
    json_t *cls[CLS_COUNT], *lim[GW_RING_DEPS] = {0}, *inf[GW_RING_DEPS] = {0},
                            *sl[GW_RING_SALES] = {0}, *au[GW_RING_SALES] = {0},
                            *id[ID__OUTCOME_COUNT];
    for (int c = 0; c < CLS_COUNT; c++) {
        json_array_append_new(classes, json_string(cls_names[c]));
        json_object_set_new(answers, cls_names[c], cls[c] = json_array());
    }
    for (int k = 0; k < ID__OUTCOME_COUNT; k++)
        id[k] = json_array();
    uint32_t id_any[ID__OUTCOME_COUNT] = {0};
    if (g) {
        pthread_mutex_lock(&g->mu);
        for (int c = 0; c < GW_RING_DEPS; c++)
            if (g->deps[c].name[0]) {
                json_object_set_new(limits, g->deps[c].name, lim[c] = json_array());
                json_object_set_new(inflight, g->deps[c].name, inf[c] = json_array());
            }
        for (int c = 0; c < GW_RING_SALES; c++)
            if (g->sales[c].name[0]) {
                json_object_set_new(stock, g->sales[c].name, sl[c] = json_array());
                json_object_set_new(acc, g->sales[c].name, au[c] = json_array());
            }
        uint64_t first = g->n > GW_RING_SLOTS ? g->n - GW_RING_SLOTS : 0;
        for (uint64_t i = first; i < g->n; i++) {
            const gw_ring_sample_t *x = at(g, i);
            if (x->t_ms <= since_ms)
                continue;
            json_array_append_new(t, json_integer((json_int_t)x->t_ms));
            uint64_t all = 0;
            for (int c = 0; c < CLS_COUNT; c++) {
                all += x->answers[c];
                json_array_append_new(cls[c], json_real(rate(x->answers[c], x->dt_ms)));
            }
            json_array_append_new(
                err, json_real(all ? round((double)x->answers[CLS_ERROR] * 10000.0 / (double)all) /
                                         10000.0
                                   : 0.0));
            json_array_append_new(p50, num_or_null(x->buy_p50_ms));
            json_array_append_new(p99, num_or_null(x->buy_p99_ms));
            json_array_append_new(buys, json_real(rate(x->buys, x->dt_ms)));
            json_array_append_new(level, json_integer(x->level));
            json_array_append_new(pinned, json_boolean(x->pinned));
            json_array_append_new(ready, json_integer(x->ready));
            for (int c = 0; c < GW_RING_DEPS; c++)
                if (lim[c]) {
                    arr_u32(lim[c], x->limit[c]);
                    arr_u32(inf[c], x->inflight[c]);
                }
            for (int c = 0; c < GW_RING_SALES; c++)
                if (sl[c]) {
                    arr_i64(sl[c], x->stock_left[c]);
                    arr_i64(au[c], x->accepted_units[c]);
                }
            json_array_append_new(spool, json_integer((json_int_t)x->spool_bytes));
            json_array_append_new(rinf, json_integer(x->relay_inflight));
            json_array_append_new(rlag, json_integer(x->relay_lag_ms));
            json_array_append_new(await, json_integer(x->awaiting_outcome));
            for (int k = 0; k < ID__OUTCOME_COUNT; k++) {
                id_any[k] |= x->identity[k];
                json_array_append_new(id[k], json_real(rate(x->identity[k], x->dt_ms)));
            }
        }
        pthread_mutex_unlock(&g->mu);
    }
    /* only the outcomes that happened in the range: most are 0 on most gateways */
    for (int k = 0; k < ID__OUTCOME_COUNT; k++) {
        if (id_any[k])
            json_object_set_new(ident, id_outcome_name(k), id[k]);
        else
            json_decref(id[k]);
    }
    json_object_set_new(o, "classes", classes);
    json_object_set_new(o, "t_ms", t);
    json_object_set_new(o, "answers_per_s", answers);
    json_object_set_new(o, "error_ratio", err);
    json_object_set_new(o, "buy_p50_ms", p50);
    json_object_set_new(o, "buy_p99_ms", p99);
    json_object_set_new(o, "buys_per_s", buys);
    json_object_set_new(o, "level", level);
    json_object_set_new(o, "pinned", pinned);
    json_object_set_new(o, "ready", ready);
    json_object_set_new(o, "limits", limits);
    json_object_set_new(o, "inflight", inflight);
    json_object_set_new(o, "stock_left", stock);
    json_object_set_new(o, "accepted_units", acc);
    json_object_set_new(o, "spool_bytes", spool);
    json_object_set_new(o, "relay_inflight", rinf);
    json_object_set_new(o, "relay_lag_ms", rlag);
    json_object_set_new(o, "awaiting_outcome", await);
    json_object_set_new(o, "identity_per_s", ident);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}

char *gw_ring_fleet_json(gw_server_t *srv)
{
    gw_ring_t *g = srv->ring;
    json_t *mine;
    if (g) {
        pthread_mutex_lock(&g->mu);
        mine = figures_obj(g);
        pthread_mutex_unlock(&g->mu);
    } else {
        mine = json_pack("{s:s}", "listen", srv->cfg->listen);
    }
    const char *self = gw_fleet_member(srv);
    int64_t read_at = 0;
    char *view = gw_fleet_figures_get(srv, &read_at);
    json_t *members = view ? json_loads(view, 0, NULL) : NULL;
    free(view);
    if (!json_is_array(members)) {
        json_decref(members);
        members = json_array();
    }
    /* this gateway's own entry from its ring: fresher than what Redis holds */
    bool found = false;
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "member"));
        bool is_self = self && name && strcmp(name, self) == 0;
        json_object_set_new(m, "self", json_boolean(is_self));
        if (is_self) {
            json_object_set(m, "figures", mine);
            found = true;
        }
    }
    if (!found)
        json_array_append_new(members,
                              json_pack("{s:s,s:b,s:O}", "member", self ? self : srv->cfg->listen,
                                        "self", 1, "figures", mine));
    json_decref(mine);
    json_t *o =
        json_pack("{s:b,s:I,s:I,s:o}", "fleet", srv->node.fleet != NULL, "read_at_ms",
                  (json_int_t)read_at, "now_ms", (json_int_t)cm_wall_ms(), "members", members);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}

/*---- the thread ----*/

static void *ring_thread(void *arg)
{
    gw_ring_t *g = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        next.tv_sec += GW_RING_PERIOD_MS / 1000;
        next.tv_nsec += (long)(GW_RING_PERIOD_MS % 1000) * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        while (!g->stopping && pthread_cond_timedwait(&g->cv, &g->mu, &next) == 0)
            ;
        if (g->stopping)
            break;
        pthread_mutex_unlock(&g->mu);
        sample(g);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec + 2) /* fell far behind (stopped): no burst of samples */
            next = now;
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int gw_ring_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_ring_t *g = cm_xcalloc(1, sizeof(*g));
    g->srv = srv;
    g->s = cm_xcalloc(GW_RING_SLOTS, sizeof(*g->s));
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    gw_ring_sample_t base;
    read_figures(g, &base, &g->ol); /* the counters' baseline: each sample is a difference */
    if (pthread_create(&g->thread, NULL, ring_thread, g) != 0) {
        cm_errbuf_set(errbuf, errlen, "dashboard ring: cannot start its thread");
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g->s);
        free(g);
        return CM_ENOMEM;
    }
    g->started = true;
    srv->ring = g;
    return 0;
}

void gw_ring_stop(gw_server_t *srv)
{
    gw_ring_t *g = srv->ring;
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->started)
        pthread_join(g->thread, NULL);
    srv->ring = NULL;
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->s);
    free(g);
}
