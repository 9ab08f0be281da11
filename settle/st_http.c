/*
 * flashgate-settle's probes and metrics (st_http.h). The exposition is written
 * by hand, as the gateway's is (gateway/ctl/gw_metrics.c): a few dozen lines of
 * counters need no client library.
 */
#include "settle/st_http.h"

#include "common/cm_time.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BODY_CAP 8192

bool st_http_ready(const st_settle_stats_t *s, const char **why)
{
    const char *w = NULL;
    if (!atomic_load_explicit(&s->broker_up, memory_order_relaxed))
        w = "kafka";
    else if (!atomic_load_explicit(&s->sink_up, memory_order_relaxed))
        w = "database";
    if (why)
        *why = w;
    return w == NULL;
}

double st_http_process_start_time(void)
{
    double now = (double)cm_wall_ms() / 1e3;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f || hz <= 0) {
        if (f)
            fclose(f);
        return now;
    }
    char line[1024];
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* Field 22 (starttime, ticks after boot) counts from the field after the
     * command name, which may hold spaces and ')': start after the last ')'. */
    char *p = strrchr(line, ')');
    unsigned long long ticks = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                            "%*d %*d %llu", &ticks) != 1)
        return now;
    unsigned long long btime = 0;
    f = fopen("/proc/stat", "r");
    if (!f)
        return now;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    return btime ? (double)btime + (double)ticks / (double)hz : now;
}

typedef struct out {
    char *b;
    size_t n, cap;
    bool full;
} out_t;

/* Appends one formatted piece; once a piece does not fit, nothing more is
 * added and the text is cut back to its last whole line. */
__attribute__((format(printf, 2, 3))) static void put(out_t *o, const char *fmt, ...)
{
    if (o->full || o->cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(o->b + o->n, o->cap - o->n, fmt, ap);
    va_end(ap);
    if (w >= 0 && (size_t)w < o->cap - o->n) {
        o->n += (size_t)w;
        return;
    }
    o->full = true;
    while (o->n > 0 && o->b[o->n - 1] != '\n')
        o->n--;
    o->b[o->n] = '\0';
}

#define LD(x) (unsigned long long)atomic_load_explicit(&s->x, memory_order_relaxed)

size_t st_http_metrics_text(const st_settle_stats_t *s, double start_time_s, char *b, size_t cap)
{
    out_t o = {.b = b, .cap = cap};
    if (cap > 0)
        b[0] = '\0';
    static const struct {
        const char *name, *help;
        size_t off;
    } ctrs[] = {
        {"flashgate_settle_messages_total", "Messages consumed and committed.",
         offsetof(st_settle_stats_t, messages)},
        {"flashgate_settle_settled_total", "Orders newly settled.", offsetof(st_settle_stats_t, settled)},
        {"flashgate_settle_failed_total", "Orders newly failed.", offsetof(st_settle_stats_t, failed)},
        {"flashgate_settle_cancelled_total", "Orders newly cancelled.",
         offsetof(st_settle_stats_t, cancelled)},
        {"flashgate_settle_duplicates_total", "Copies that changed nothing.",
         offsetof(st_settle_stats_t, duplicates)},
        {"flashgate_settle_invalid_total", "Unparseable messages skipped.",
         offsetof(st_settle_stats_t, invalid)},
        {"flashgate_settle_batches_total", "Committed batches.", offsetof(st_settle_stats_t, batches)},
        {"flashgate_settle_db_errors_total", "Batches rolled back and retried.",
         offsetof(st_settle_stats_t, db_errors)},
        {"flashgate_settle_outcomes_total", "Outcomes delivered.", offsetof(st_settle_stats_t, outcomes)},
        {"flashgate_settle_poisoned_total",
         "Orders or cancels that alone failed their batch again and again, recorded as failed.",
         offsetof(st_settle_stats_t, poisoned)},
    };
    for (size_t i = 0; i < sizeof(ctrs) / sizeof(ctrs[0]); i++) {
        const _Atomic uint64_t *c = (const _Atomic uint64_t *)((const char *)s + ctrs[i].off);
        put(&o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", ctrs[i].name, ctrs[i].help,
            ctrs[i].name, ctrs[i].name,
            (unsigned long long)atomic_load_explicit(c, memory_order_relaxed));
    }
    static const uint64_t bounds[ST_BATCH_NBOUNDS] = ST_BATCH_BOUNDS_MS;
    put(&o, "# HELP flashgate_settle_batch_duration_seconds Database write, outcomes and offset "
            "commit of one batch.\n# TYPE flashgate_settle_batch_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < ST_BATCH_NBOUNDS; i++) {
        cum += LD(batch_lat[i]);
        put(&o, "flashgate_settle_batch_duration_seconds_bucket{le=\"%g\"} %llu\n",
            (double)bounds[i] / 1e3, cum);
    }
    cum += LD(batch_lat[ST_BATCH_NBOUNDS]);
    put(&o, "flashgate_settle_batch_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    put(&o, "flashgate_settle_batch_duration_seconds_sum %.6f\n", (double)LD(batch_lat_sum_us) / 1e6);
    put(&o, "flashgate_settle_batch_duration_seconds_count %llu\n", cum);
    put(&o, "# HELP flashgate_settle_stalled 1 while the batch in progress is stalled: no order in "
            "it to blame (a broken database or --sql), or failing for 30 s (a database timing "
            "out): retried, nothing failed.\n"
            "# TYPE flashgate_settle_stalled gauge\nflashgate_settle_stalled %llu\n",
        LD(stalled));
    put(&o, "# HELP flashgate_settle_consumer_lag Messages behind the high watermark after the last "
            "batch.\n# TYPE flashgate_settle_consumer_lag gauge\nflashgate_settle_consumer_lag %lld\n",
        (long long)atomic_load_explicit(&s->lag, memory_order_relaxed));
    put(&o, "# HELP flashgate_settle_kafka_up 1 while the Kafka clients are up and the brokers "
            "reachable.\n# TYPE flashgate_settle_kafka_up gauge\nflashgate_settle_kafka_up %llu\n",
        LD(broker_up));
    put(&o, "# HELP flashgate_settle_db_up 0 while the last database write of a batch failed.\n"
            "# TYPE flashgate_settle_db_up gauge\nflashgate_settle_db_up %llu\n",
        LD(sink_up));
    put(&o, "# HELP flashgate_settle_ready 1 when GET /readyz answers 200 (Kafka and the database "
            "up).\n# TYPE flashgate_settle_ready gauge\nflashgate_settle_ready %d\n",
        st_http_ready(s, NULL) ? 1 : 0);
    int64_t last = atomic_load_explicit(&s->last_commit_ms, memory_order_relaxed);
    put(&o, "# HELP flashgate_settle_last_commit_timestamp_seconds When the last batch's offsets "
            "were committed (0: none since the start).\n"
            "# TYPE flashgate_settle_last_commit_timestamp_seconds gauge\n"
            "flashgate_settle_last_commit_timestamp_seconds %.3f\n",
        (double)last / 1e3);
    put(&o, "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
        start_time_s);
    return o.n;
}

#undef LD

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 405)
        MHD_add_response_header(r, "Allow", "GET");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result st_http_answer(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *data_size, void **req_cls)
{
    (void)version;
    (void)data;
    if (!*req_cls) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (*data_size) {
        *data_size = 0; /* a body is read and ignored; the answer comes after it */
        return MHD_YES;
    }
    const st_settle_stats_t *s = cls;
    const char *json = "application/json";
    char *body = malloc(BODY_CAP);
    if (!body)
        return MHD_NO;
    bool known = strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 ||
                 strcmp(url, "/readyz") == 0;
    if (!known) {
        int n = snprintf(body, BODY_CAP, "{\"error\":\"not_found\",\"message\":\"GET /metrics, "
                                         "/healthz or /readyz\"}");
        return reply(c, 404, json, body, (size_t)n);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        int n = snprintf(body, BODY_CAP, "{\"error\":\"method_not_allowed\",\"message\":\"use GET\"}");
        return reply(c, 405, json, body, (size_t)n);
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t n = st_http_metrics_text(s, st_http_process_start_time(), body, BODY_CAP);
        return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, n);
    }
    if (strcmp(url, "/healthz") == 0) {
        int n = snprintf(body, BODY_CAP, "{\"status\":\"ok\"}");
        return reply(c, 200, json, body, (size_t)n);
    }
    const char *why = NULL;
    if (st_http_ready(s, &why)) {
        int n = snprintf(body, BODY_CAP, "{\"status\":\"ready\"}");
        return reply(c, 200, json, body, (size_t)n);
    }
    int n = snprintf(body, BODY_CAP, "{\"error\":\"not_ready\",\"message\":\"%s is not reachable\","
                                     "\"component\":\"%s\"}", why, why);
    return reply(c, 503, json, body, (size_t)n);
}
