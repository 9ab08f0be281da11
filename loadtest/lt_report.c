/*
 * Report writing (see lt_report.h). The plots are drawn by gnuplot from the
 * data files with loadtest/report/plots.gp, so a person can re-plot them; the
 * HTML is filled from loadtest/report/report.html.in.
 */
#include "loadtest/lt_report.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#ifndef LT_REPORT_DIR
#define LT_REPORT_DIR "loadtest/report"
#endif
#ifndef FLASHGATE_VERSION
#define FLASHGATE_VERSION "dev"
#endif

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return CM_EIO;
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return CM_EIO;
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8192, n = 0, r;
    char *buf = cm_xmalloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2)
            buf = cm_xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static char *base64(const unsigned char *in, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = cm_xmalloc((len + 2) / 3 * 4 + 1), *o = out;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        *o++ = tbl[(v >> 18) & 63];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? tbl[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static json_t *hist_json(const cm_hist_t *h)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)h->count,
                     "p50_ms", cm_hist_percentile(h, 50) / 1000.0, "p90_ms",
                     cm_hist_percentile(h, 90) / 1000.0, "p99_ms",
                     cm_hist_percentile(h, 99) / 1000.0, "p999_ms",
                     cm_hist_percentile(h, 99.9) / 1000.0, "max_ms", h->max_us / 1000.0,
                     "mean_ms", cm_hist_mean(h) / 1000.0, "min_ms",
                     h->count ? h->min_us / 1000.0 : 0.0);
}

static char *cmd_first_line(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    char buf[256] = "";
    if (p) {
        if (!fgets(buf, sizeof(buf), p))
            buf[0] = '\0';
        pclose(p);
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return cm_xstrdup(buf[0] ? buf : "unknown");
}

static json_t *env_json(void)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    struct utsname un;
    uname(&un);
    char kernel[600];
    snprintf(kernel, sizeof(kernel), "%s %s %s", un.sysname, un.release, un.machine);
    char *gp = cmd_first_line("gnuplot --version 2>/dev/null");
    char *cpu = cmd_first_line("grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2-");
    json_t *j = json_pack(
        "{s:s, s:I, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:i, s:s}}", "host", host, "cores",
        (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", kernel, "cpu", cpu, "versions",
        "flashgate_load", FLASHGATE_VERSION, "libuv", uv_version_string(), "jansson",
        JANSSON_VERSION, "librdkafka", rd_kafka_version_str(), "sqlite", sqlite3_libversion(),
        "libpq", PQlibVersion(), "gnuplot", gp);
    free(gp);
    free(cpu);
    return j;
}

static json_t *scenario_json(const lt_scenario_t *sc, const char *path)
{
    json_t *targets = json_array();
    for (size_t i = 0; i < sc->n_targets; i++)
        json_array_append_new(targets, json_string(sc->targets[i]));
    json_t *segs = json_array();
    for (size_t i = 0; i < sc->n_segments; i++)
        json_array_append_new(segs, json_pack("{s:s, s:f, s:f, s:f}", "kind",
                                              lt_seg_kind_name(sc->segments[i].kind),
                                              "duration_s", sc->segments[i].duration_s, "rate",
                                              sc->segments[i].rate, "rate_end",
                                              sc->segments[i].rate_end));
    json_t *j = json_pack(
        "{s:s?, s:s, s:I, s:f, s:f, s:o, s:s?, s:s?, s:s?, s:s, s:i, s:i,"
        " s:{s:s, s:I, s:i, s:f, s:f},"
        " s:{s:I, s:I, s:f, s:f, s:I, s:i},"
        " s:{s:i, s:i, s:i, s:i, s:i, s:i}, s:o}",
        "file", path, "name", sc->name, "seed", (json_int_t)sc->seed, "duration_s",
        sc->duration_s, "drain_s", sc->drain_s, "targets", targets, "admin", sc->admin_url,
        "kafka_brokers", sc->kafka_brokers, "db", sc->db_url, "topic", sc->topic, "connections",
        (int)sc->connections, "request_timeout_ms", (int)sc->request_timeout_ms, "sale", "id",
        sc->sale_id, "stock", (json_int_t)sc->sale_stock, "per_user_limit",
        (int)sc->per_user_limit, "start_offset_s", sc->start_offset_s, "duration_s",
        sc->sale_duration_s, "crowd", "users", (json_int_t)sc->users, "addresses",
        (json_int_t)sc->addresses, "bot_fraction", sc->bot_fraction, "aggressive_fraction",
        sc->aggressive_fraction, "bot_addresses", (json_int_t)sc->bot_addresses, "qty",
        (int)sc->qty, "behaviour", "max_retries", (int)sc->max_retries, "retry_default_ms",
        (int)sc->retry_default_ms, "bot_retry_ms", (int)sc->bot_retry_ms, "bot_max_retries",
        (int)sc->bot_max_retries, "poll_interval_ms", (int)sc->poll_interval_ms, "poll_max",
        (int)sc->poll_max, "arrivals", segs);
    json_t *crowd = json_object_get(j, "crowd");
    if (crowd && sc->operators)
        json_object_update_new(
            crowd, json_pack("{s:I, s:i, s:i, s:i}", "operators", (json_int_t)sc->operators,
                             "accounts_per_operator", (int)sc->accounts_per_operator,
                             "persons_per_operator", (int)sc->persons_per_operator,
                             "operator_addresses", (int)sc->operator_addresses));
    json_object_set_new(j, "connection_mode",
                        json_string(lt_conn_mode_name(sc->connection_mode)));
    json_object_set_new(j, "connections_max", json_integer(sc->connections_max));
    json_object_set_new(j, "give_up_ms", json_integer(sc->give_up_ms));
    json_object_set_new(j, "warm_connections", json_integer(sc->warm_connections));
    json_object_set_new(j, "loops", json_integer(sc->loops));
    json_object_set_new(j, "noncore", json_pack("{s:f, s:s}", "share", sc->noncore_share, "path",
                                                sc->noncore_path));
    return j;
}

static json_t *audit_json(const lt_audit_t *a)
{
    if (!a)
        return json_null();
    json_t *checks = json_array();
    for (size_t i = 0; i < a->n_checks; i++) {
        const lt_check_t *c = &a->checks[i];
        json_array_append_new(checks, json_pack("{s:s, s:s, s:s}", "name", c->name, "result",
                                                lt_check_result_name(c->result), "detail", c->detail));
    }
    return json_pack("{s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                     " s:I, s:I, s:s?}}",
                     "result", a->failed ? "FAIL" : "PASS", "checks", checks, "figures",
                     "accepted_orders", (json_int_t)a->accepted_orders, "accepted_units",
                     (json_int_t)a->accepted_units, "stock_total", (json_int_t)a->stock_total,
                     "stock_left", (json_int_t)a->stock_left, "admin_accepted_units",
                     (json_int_t)a->admin_accepted_units, "topic_messages",
                     (json_int_t)a->topic_messages, "topic_orders", (json_int_t)a->topic_orders,
                     "topic_duplicates", (json_int_t)a->topic_duplicates, "topic_missing",
                     (json_int_t)a->topic_missing, "topic_extra", (json_int_t)a->topic_extra,
                     "db_rows", (json_int_t)a->db_rows, "db_missing", (json_int_t)a->db_missing,
                     "db_extra", (json_int_t)a->db_extra, "users_over_limit",
                     (json_int_t)a->users_over_limit, "limit_source", a->limit_source);
}

static uint64_t peak_rate(const lt_results_t *res, bool good_only)
{
    uint64_t peak = 0;
    for (size_t s = 0; s < res->n_secs; s++) {
        uint64_t n = 0;
        for (int a = 0; a < LT_ANS_N; a++) {
            if (a == LT_ANS_POLL)
                continue;
            if (good_only && a != LT_ANS_A202 && a != LT_ANS_A409 && a != LT_ANS_A410)
                continue;
            n += res->secs[s].counts[a];
        }
        if (n > peak)
            peak = n;
    }
    return peak;
}

/* Page views (non-core): answers by type, latency of 200 (served) and 503 (shed), per second. */
static json_t *pages_json(const lt_results_t *res)
{
    json_t *answers = json_object(), *lat = json_object(), *secs = json_array();
    for (int a = 0; a < LT_PAGE_N; a++) {
        json_object_set_new(answers, lt_page_name((lt_page_t)a),
                            json_integer((json_int_t)res->page_answers[a]));
        if (res->page_hist[a].count)
            json_object_set_new(lat, lt_page_name((lt_page_t)a), hist_json(&res->page_hist[a]));
    }
    for (size_t s = 0; s < res->n_secs; s++) {
        json_t *c = json_object();
        for (int a = 0; a < LT_PAGE_N; a++)
            if (res->secs[s].page[a])
                json_object_set_new(c, lt_page_name((lt_page_t)a),
                                    json_integer((json_int_t)res->secs[s].page[a]));
        json_array_append_new(secs, c);
    }
    return json_pack("{s:I, s:o, s:o, s:o}", "sent", (json_int_t)res->page_sent, "answers",
                     answers, "latency", lat, "per_second", secs);
}

/* The fine timeline as parallel arrays (compact), trailing empty bins dropped. */
static json_t *fine_json(const lt_results_t *res)
{
    size_t n = res->n_fine;
    while (n && res->fine[n - 1].n == 0)
        n--;
    json_t *a_n = json_array(), *a_good = json_array(), *a_shed = json_array(),
           *a_slow = json_array(), *a_max = json_array(), *a_err = json_array(),
           *a_ref = json_array(), *a_to = json_array(), *a_lag = json_array();
    for (size_t i = 0; i < n; i++) {
        const lt_fine_t *f = &res->fine[i];
        json_array_append_new(a_n, json_integer(f->n));
        json_array_append_new(a_good, json_integer(f->good));
        json_array_append_new(a_shed, json_integer(f->shed));
        json_array_append_new(a_slow, json_integer(f->slow));
        json_array_append_new(a_max, json_integer(f->max_ms));
        json_array_append_new(a_err, json_integer(f->error));
        json_array_append_new(a_ref, json_integer(f->refused));
        json_array_append_new(a_to, json_integer(f->timeout));
        json_array_append_new(a_lag, json_integer(f->lag_max_ms));
    }
    return json_pack("{s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "bin_ms",
                     LT_FINE_BIN_MS, "slow_ms", LT_FINE_SLOW_MS, "n", a_n, "good", a_good, "shed",
                     a_shed, "slow", a_slow, "max_ms", a_max, "error", a_err, "refused", a_ref,
                     "timeout", a_to, "lag_max_ms", a_lag);
}

static json_t *figures_json(const lt_scenario_t *sc, const lt_results_t *res)
{
    json_t *answers = json_object(), *lat = json_object();
    for (int a = 0; a < LT_ANS_N; a++) {
        json_object_set_new(answers, lt_ans_name((lt_ans_t)a), json_integer((json_int_t)res->answers[a]));
        if (res->hist[a].count)
            json_object_set_new(lat, lt_ans_name((lt_ans_t)a), hist_json(&res->hist[a]));
    }
    json_object_set_new(lat, "all_buy", hist_json(&res->buy_all));
    json_object_set_new(lat, "all_buy_from_send", hist_json(&res->buy_sent));
    json_t *timeline = json_array();
    for (size_t s = 0; s < res->n_secs; s++) {
        const lt_second_t *sec = &res->secs[s];
        json_t *c = json_object();
        for (int a = 0; a < LT_ANS_N; a++)
            if (sec->counts[a])
                json_object_set_new(c, lt_ans_name((lt_ans_t)a), json_integer((json_int_t)sec->counts[a]));
        json_array_append_new(
            timeline, json_pack("{s:I, s:I, s:o, s:f, s:f, s:f, s:f}", "t", (json_int_t)s, "sent",
                                (json_int_t)sec->sent, "answers", c, "p50_ms",
                                cm_hist_percentile(&sec->buy, 50) / 1000.0, "p90_ms",
                                cm_hist_percentile(&sec->buy, 90) / 1000.0, "p99_ms",
                                cm_hist_percentile(&sec->buy, 99) / 1000.0, "max_ms",
                                sec->buy.max_us / 1000.0));
    }
    uint64_t units = 0;
    for (size_t i = 0; i < res->n_orders; i++)
        units += res->orders[i].qty;
    json_t *fig = json_pack(
        "{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o,"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:{s:I, s:I}, s:I, s:I, s:I, s:o}",
        "elapsed_s", res->elapsed_s, "sale_start_s", res->sale_start_s, "arrivals",
        (json_int_t)res->arrivals, "requests_buy", (json_int_t)res->sent_buy, "requests_poll",
        (json_int_t)res->sent_poll, "peak_answers_per_s", (json_int_t)peak_rate(res, false),
        "peak_goodput_per_s", (json_int_t)peak_rate(res, true), "answers", answers,
        "latency", lat, "send_lag", hist_json(&res->send_lag), "orders", "accepted",
        (json_int_t)res->n_orders, "units", (json_int_t)units, "won_by_bots",
        (json_int_t)res->orders_bots, "duplicate_202",
        (json_int_t)res->dup_202, "second_202_same_user", (json_int_t)res->second_202,
        "settled", (json_int_t)res->polls_settled, "failed", (json_int_t)res->polls_failed,
        "cancelled", (json_int_t)res->polls_cancelled, "not_final_after_polls",
        (json_int_t)res->polls_unfinished, "users", "bots", (json_int_t)res->users_bots,
        "aggressive", (json_int_t)res->users_aggressive, "unfinished_at_stop",
        (json_int_t)res->unfinished, "connects", (json_int_t)res->connects, "connect_errors",
        (json_int_t)res->connect_errors, "timeline", timeline);
    json_object_set_new(fig, "connections",
                        json_pack("{s:I, s:I, s:i, s:I, s:i}", "connects",
                                  (json_int_t)res->connects, "errors",
                                  (json_int_t)res->connect_errors, "max_open", (int)res->max_open,
                                  "idle_closed", (json_int_t)res->idle_closed, "warm_open",
                                  (int)res->warm_open));
    json_object_set_new(fig, "gave_up", json_integer((json_int_t)res->gave_up));
    json_object_set_new(lat, "admitted", hist_json(&res->buy_good)); /* borrowed: fig holds lat */
    json_object_set_new(fig, "pages", pages_json(res));
    json_object_set_new(fig, "fine_timeline", fine_json(res));
    /* the start-window lottery and who won, per crowd class (the fairness audit) */
    json_t *classes = json_object();
    for (int c = 0; c < LT_CLASS_N; c++)
        json_object_set_new(
            classes, lt_class_name(c),
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "users",
                      (json_int_t)res->class_users[c], "pressed_buy",
                      (json_int_t)res->class_tried[c], "entrants",
                      (json_int_t)res->class_entrants[c], "won_orders",
                      (json_int_t)res->class_won_orders[c], "won_units",
                      (json_int_t)res->class_won_units[c], "persons",
                      (json_int_t)res->class_persons[c], "persons_pressed_buy",
                      (json_int_t)res->class_person_tried[c], "entrant_persons",
                      (json_int_t)res->class_person_entrants[c], "winning_persons",
                      (json_int_t)res->class_person_winners[c], "max_units_per_person",
                      (json_int_t)res->class_max_person_units[c], "registered",
                      (json_int_t)res->class_registered[c], "registered_persons",
                      (json_int_t)res->class_person_registered[c], "not_registered",
                      (json_int_t)res->class_not_registered[c]));
    json_t *ops = json_array();
    for (size_t i = 0; i < res->n_top_operators; i++) {
        const lt_operator_stat_t *o = &res->top_operators[i];
        json_array_append_new(
            ops, json_pack("{s:I, s:i, s:i, s:i, s:i, s:i, s:f}", "operator", (json_int_t)o->id,
                           "accounts", (int)o->accounts, "persons", (int)o->persons, "entrants",
                           (int)o->entrants, "won_orders", (int)o->won_orders, "won_units",
                           (int)o->won_units, "units_per_person",
                           (double)o->won_units / (o->persons ? o->persons : 1)));
    }
    json_object_set_new(fig, "fair",
                        json_pack("{s:I, s:I, s:I, s:I, s:o, s:o}", "entries",
                                  (json_int_t)res->n_entries, "duplicate_entries",
                                  (json_int_t)res->dup_entries, "won", (json_int_t)res->entries_won,
                                  "lost", (json_int_t)res->entries_lost, "classes", classes,
                                  "top_operators", ops));
    if (sc->reg)
        json_object_set_new(
            fig, "registration",
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "sent", (json_int_t)res->reg_sent,
                      "new", (json_int_t)res->reg_new, "again", (json_int_t)res->reg_again,
                      "refused", (json_int_t)res->reg_refused, "gave_up",
                      (json_int_t)res->reg_failed, "unregistered_entrants",
                      (json_int_t)res->unregistered_entrants, "registered_refused",
                      (json_int_t)res->registered_refused));
    return fig;
}

/*
 * The accepted units against the stock: the stock is the audit's (read from
 * the gateway) when it has one, else the scenario's; sold_out_s is when the
 * accepted units reached it, on the run's clock (-1: they never did, or the
 * stock is unknown).
 */
typedef struct sellout {
    int64_t stock;     /* 0: unknown */
    uint64_t units;    /* accepted, all orders */
    double sold_out_s; /* -1: not sold out */
} sellout_t;

static int cmp_order_at(const void *a, const void *b)
{
    double x = ((const lt_order_t *)a)->at_s, y = ((const lt_order_t *)b)->at_s;
    return x < y ? -1 : x > y ? 1 : 0;
}

static sellout_t sellout_of(const lt_scenario_t *sc, const lt_results_t *res, const lt_audit_t *a)
{
    sellout_t so = {.stock = a && a->stock_total > 0 ? a->stock_total : sc->sale_stock,
                    .sold_out_s = -1};
    if (so.stock < 0)
        so.stock = 0;
    lt_order_t *by_time = NULL;
    if (res->n_orders) {
        by_time = cm_xmalloc(res->n_orders * sizeof(*by_time));
        memcpy(by_time, res->orders, res->n_orders * sizeof(*by_time));
        qsort(by_time, res->n_orders, sizeof(*by_time), cmp_order_at);
    }
    for (size_t i = 0; i < res->n_orders; i++) {
        so.units += by_time[i].qty;
        if (so.stock > 0 && so.sold_out_s < 0 && so.units >= (uint64_t)so.stock)
            so.sold_out_s = by_time[i].at_s;
    }
    free(by_time);
    return so;
}

/* The plots' x range: every chart shows the whole run, seconds 0..this. */
static size_t plot_secs(const lt_results_t *res)
{
    size_t n = res->n_secs;
    for (size_t i = 0; i < res->n_orders; i++)
        if (res->orders[i].at_s >= 0 && (size_t)res->orders[i].at_s + 1 > n)
            n = (size_t)res->orders[i].at_s + 1;
    return n ? n : 1;
}

/* The stock line's resolution: one point per this many ms that accepted units. */
#define STOCK_BIN_MS 10

/*
 * stock.dat: units and orders accepted per second; stock_left.dat: the stock
 * left after each STOCK_BIN_MS bin that accepted units (a step line: the sale
 * that sells out in 30 ms shows it).
 */
static int write_stock(const char *dir, const lt_results_t *res, const sellout_t *so, char *eb,
                       size_t el)
{
    size_t n = plot_secs(res);
    uint64_t *units = cm_xcalloc(n, sizeof(*units)), *orders = cm_xcalloc(n, sizeof(*orders));
    for (size_t i = 0; i < res->n_orders; i++) {
        size_t s = res->orders[i].at_s > 0 ? (size_t)res->orders[i].at_s : 0;
        units[s < n ? s : n - 1] += res->orders[i].qty;
        orders[s < n ? s : n - 1]++;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/stock.dat", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "# second units_accepted orders_accepted\n");
        for (size_t s = 0; s < n; s++)
            fprintf(f, "%zu %llu %llu\n", s, (unsigned long long)units[s],
                    (unsigned long long)orders[s]);
        fclose(f);
        snprintf(path, sizeof(path), "%s/stock_left.dat", dir);
        f = fopen(path, "w");
    }
    free(units);
    free(orders);
    if (!f) {
        snprintf(eb, el, "%s: %s", path, strerror(errno));
        return CM_EIO;
    }
    lt_order_t *by_time = NULL;
    if (res->n_orders) {
        by_time = cm_xmalloc(res->n_orders * sizeof(*by_time));
        memcpy(by_time, res->orders, res->n_orders * sizeof(*by_time));
        qsort(by_time, res->n_orders, sizeof(*by_time), cmp_order_at);
    }
    fprintf(f, "# seconds_on_the_run_clock stock_left (stock %lld%s; a point per %d ms that "
               "accepted units)\n0 %lld\n",
            (long long)so->stock, so->stock ? "" : ": unknown", STOCK_BIN_MS, (long long)so->stock);
    int64_t left = so->stock;
    for (size_t i = 0; i < res->n_orders;) {
        uint64_t bin = (uint64_t)(by_time[i].at_s * 1000.0) / STOCK_BIN_MS;
        double t = by_time[i].at_s;
        while (i < res->n_orders && (uint64_t)(by_time[i].at_s * 1000.0) / STOCK_BIN_MS == bin) {
            left -= by_time[i].qty;
            t = by_time[i].at_s;
            i++;
        }
        fprintf(f, "%.3f %lld\n", t, (long long)(left > 0 ? left : 0));
    }
    fprintf(f, "%zu %lld\n", n, (long long)(left > 0 ? left : 0));
    fclose(f);
    free(by_time);
    return 0;
}

static int write_data(const char *dir, const lt_results_t *res, char *eb, size_t el)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/throughput.dat", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(eb, el, "%s: %s", path, strerror(errno));
        return CM_EIO;
    }
    fprintf(f, "# second sent 202 409 410 425 429 503 other4xx 5xx error+timeout poll\n");
    for (size_t s = 0; s < res->n_secs; s++) {
        const uint64_t *c = res->secs[s].counts;
        fprintf(f, "%zu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu\n", s,
                (unsigned long long)res->secs[s].sent, (unsigned long long)c[LT_ANS_A202],
                (unsigned long long)c[LT_ANS_A409], (unsigned long long)c[LT_ANS_A410],
                (unsigned long long)c[LT_ANS_A425], (unsigned long long)c[LT_ANS_A429],
                (unsigned long long)c[LT_ANS_A503],
                (unsigned long long)c[LT_ANS_A4XX] + (unsigned long long)c[LT_ANS_A404],
                (unsigned long long)c[LT_ANS_A5XX],
                (unsigned long long)c[LT_ANS_ERROR] + (unsigned long long)c[LT_ANS_TIMEOUT],
                (unsigned long long)c[LT_ANS_POLL]);
    }
    fclose(f);
    snprintf(path, sizeof(path), "%s/latency.dat", dir);
    f = fopen(path, "w");
    if (!f) {
        snprintf(eb, el, "%s: %s", path, strerror(errno));
        return CM_EIO;
    }
    fprintf(f, "# second p50_ms p90_ms p99_ms p999_ms max_ms count (buy answers)\n");
    for (size_t s = 0; s < res->n_secs; s++) {
        const cm_hist_t *h = &res->secs[s].buy;
        if (!h->count)
            continue;
        fprintf(f, "%zu %.3f %.3f %.3f %.3f %.3f %llu\n", s, cm_hist_percentile(h, 50) / 1000.0,
                cm_hist_percentile(h, 90) / 1000.0, cm_hist_percentile(h, 99) / 1000.0,
                cm_hist_percentile(h, 99.9) / 1000.0, h->max_us / 1000.0,
                (unsigned long long)h->count);
    }
    fclose(f);
    return 0;
}

/*
 * Copies plots.gp into dir with this run's marks set at its top (so that
 * `gnuplot plots.gp` there redraws the same charts) and runs it.
 */
static bool run_gnuplot(const char *dir, const char *tmpl_dir, const lt_results_t *res,
                        const sellout_t *so)
{
    char src[4200], dst[4200];
    snprintf(src, sizeof(src), "%s/plots.gp", tmpl_dir);
    snprintf(dst, sizeof(dst), "%s/plots.gp", dir);
    size_t len;
    char *gp = read_file(src, &len);
    if (!gp)
        return false;
    FILE *f = fopen(dst, "w");
    if (!f) {
        free(gp);
        return false;
    }
    fprintf(f,
            "# This run's marks (flashgate-load): seconds on the run's clock; sold_out -1: the\n"
            "# stock was not sold out (or is unknown); the buy latency target in ms.\n"
            "sale_start = %.3f\nsold_out = %.3f\nxmax = %zu\nstock = %lld\n"
            "latency_target_ms = %d\n\n",
            res->sale_start_s, so->sold_out_s, plot_secs(res), (long long)so->stock,
            LT_FINE_SLOW_MS);
    fwrite(gp, 1, len, f);
    fclose(f);
    free(gp);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(127);
        execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return false;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Appends s to a growing buffer, HTML-escaped when esc. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, bool esc)
{
    for (; *s; s++) {
        const char *rep = NULL;
        if (esc)
            rep = *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;" : *s == '"' ? "&quot;" : NULL;
        size_t n = rep ? strlen(rep) : 1;
        if (b->len + n + 1 > b->cap) {
            b->cap = (b->cap + n + 1) * 2;
            b->p = cm_xrealloc(b->p, b->cap);
        }
        if (rep)
            memcpy(b->p + b->len, rep, n);
        else
            b->p[b->len] = *s;
        b->len += n;
        b->p[b->len] = '\0';
    }
}

static void sb_fmt(sbuf_t *b, bool esc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void sb_fmt(sbuf_t *b, bool esc, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    sb_add(b, tmp, esc);
}

static char *png_uri(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    size_t len;
    char *png = read_file(path, &len);
    if (!png)
        return NULL;
    char *b64 = base64((unsigned char *)png, len);
    free(png);
    char *uri = cm_xmalloc(strlen(b64) + 32);
    sprintf(uri, "data:image/png;base64,%s", b64);
    free(b64);
    return uri;
}

static char *html_tables(const lt_scenario_t *sc, const lt_results_t *res, const lt_audit_t *a,
                         const char *which)
{
    sbuf_t b = {0};
    sb_add(&b, "", false);
    if (strcmp(which, "audit") == 0) {
        if (!a) {
            sb_add(&b, "<p>The audit was not run (--no-audit).</p>", false);
            return b.p;
        }
        sb_add(&b, "<table><tr><th>check</th><th>result</th><th>detail</th></tr>\n", false);
        for (size_t i = 0; i < a->n_checks; i++) {
            const lt_check_t *c = &a->checks[i];
            const char *r = lt_check_result_name(c->result);
            sb_fmt(&b, false, "<tr><td>%s</td><td class=\"%s\">%s</td><td>", c->name, r, r);
            sb_add(&b, c->detail, true);
            sb_add(&b, "</td></tr>\n", false);
        }
        sb_add(&b, "</table>", false);
    } else if (strcmp(which, "answers") == 0) {
        sb_add(&b, "<table><tr><th>answer</th><th>count</th><th>p50 ms</th><th>p90 ms</th>"
                   "<th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>\n", false);
        for (int i = 0; i <= LT_ANS_N; i++) {
            const cm_hist_t *h = i < LT_ANS_N ? &res->hist[i] : &res->buy_all;
            if (i < LT_ANS_N && !res->answers[i])
                continue;
            sb_fmt(&b, false,
                   "<tr><td>%s</td><td>%llu</td><td>%.2f</td><td>%.2f</td><td>%.2f</td>"
                   "<td>%.2f</td><td>%.2f</td></tr>\n",
                   i < LT_ANS_N ? lt_ans_name((lt_ans_t)i) : "<b>all buy answers</b>",
                   (unsigned long long)(i < LT_ANS_N ? res->answers[i] : h->count),
                   cm_hist_percentile(h, 50) / 1000.0, cm_hist_percentile(h, 90) / 1000.0,
                   cm_hist_percentile(h, 99) / 1000.0, cm_hist_percentile(h, 99.9) / 1000.0,
                   h->max_us / 1000.0);
        }
        sb_add(&b, "</table>", false);
    } else {
        uint64_t units = 0;
        for (size_t i = 0; i < res->n_orders; i++)
            units += res->orders[i].qty;
        sb_add(&b, "<table>\n", false);
        sb_fmt(&b, false, "<tr><td>scenario</td><td>%s (seed %llu)</td></tr>\n", sc->name,
               (unsigned long long)sc->seed);
        sb_fmt(&b, false, "<tr><td>sale</td><td>%s: %lld units, limit %u per user</td></tr>\n",
               sc->sale_id, (long long)sc->sale_stock, sc->per_user_limit);
        sb_fmt(&b, false,
               "<tr><td>crowd</td><td>%llu accounts (%llu bots, %llu aggressive; %llu scalper "
               "operators of %u accounts and %u persons each), %llu arrived</td></tr>\n",
               (unsigned long long)lt_scenario_accounts(sc), (unsigned long long)res->users_bots,
               (unsigned long long)res->users_aggressive, (unsigned long long)sc->operators,
               sc->accounts_per_operator, sc->persons_per_operator,
               (unsigned long long)res->arrivals);
        sb_fmt(&b, false, "<tr><td>requests</td><td>%llu buy, %llu status polls in %.1f s"
                          "</td></tr>\n",
               (unsigned long long)res->sent_buy, (unsigned long long)res->sent_poll,
               res->elapsed_s);
        sb_fmt(&b, false, "<tr><td>peak</td><td>%llu answers/s; goodput (final answers 202/409/410) %llu/s"
                          "</td></tr>\n",
               (unsigned long long)peak_rate(res, false), (unsigned long long)peak_rate(res, true));
        sb_fmt(&b, false,
               "<tr><td>orders</td><td>%zu accepted (%llu units, %llu to bots), %llu seen "
               "settled, %llu failed</td></tr>\n",
               res->n_orders, (unsigned long long)units, (unsigned long long)res->orders_bots,
               (unsigned long long)res->polls_settled, (unsigned long long)res->polls_failed);
        sb_fmt(&b, false, "<tr><td>buy latency</td><td>p50 %.2f ms, p99 %.2f ms, max %.2f ms"
                          "</td></tr>\n",
               cm_hist_percentile(&res->buy_all, 50) / 1000.0,
               cm_hist_percentile(&res->buy_all, 99) / 1000.0, res->buy_all.max_us / 1000.0);
        sb_fmt(&b, false, "<tr><td>send lag (scheduler)</td><td>p99 %.2f ms</td></tr>\n",
               cm_hist_percentile(&res->send_lag, 99) / 1000.0);
        sb_add(&b, "</table>", false);
    }
    return b.p;
}

/* The sentence over the stock panel: when the sale sold out, or what was left. */
static void sellout_text(const lt_results_t *res, const sellout_t *so, char *out, size_t len)
{
    if (so->sold_out_s >= 0)
        snprintf(out, len,
                 "Sold out at %.2f s into the run, %.2f s after the sale started: %llu units "
                 "accepted in %zu orders, 0 of %lld left.",
                 so->sold_out_s, so->sold_out_s - res->sale_start_s,
                 (unsigned long long)so->units, res->n_orders, (long long)so->stock);
    else if (so->stock > 0)
        snprintf(out, len, "Not sold out: %llu units accepted in %zu orders, %lld of %lld left.",
                 (unsigned long long)so->units, res->n_orders,
                 (long long)(so->stock > (int64_t)so->units ? so->stock - (int64_t)so->units : 0),
                 (long long)so->stock);
    else
        snprintf(out, len, "%llu units accepted in %zu orders; the stock is unknown.",
                 (unsigned long long)so->units, res->n_orders);
}

static int write_html(const char *dir, const char *tmpl_dir, const lt_scenario_t *sc,
                      const lt_results_t *res, const lt_audit_t *a, const sellout_t *so,
                      char *eb, size_t el)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/report.html.in", tmpl_dir);
    char *tmpl = read_file(path, NULL);
    if (!tmpl) {
        snprintf(eb, el, "%s: cannot read the HTML template", path);
        return CM_EIO;
    }
    char *png1 = png_uri(dir, "throughput.png"), *png2 = png_uri(dir, "latency.png");
    char *png3 = png_uri(dir, "stock.png");
    char sold[300];
    sellout_text(res, so, sold, sizeof(sold));
    char title[200];
    snprintf(title, sizeof(title), "flashgate rehearsal: %s", sc->name);
    const char *verdict = !a ? "NOT AUDITED" : a->failed ? "AUDIT FAIL" : "AUDIT PASS";
    const char *vclass = !a ? "SKIP" : a->failed ? "FAIL" : "PASS";
    char started[40];
    cm_time_format_rfc3339(res->wall_t0_ms, started, sizeof(started));
    char *t_summary = html_tables(sc, res, a, "summary");
    char *t_answers = html_tables(sc, res, a, "answers");
    char *t_audit = html_tables(sc, res, a, "audit");
    const char *missing = "data:,plot-missing";
    struct {
        const char *key, *val;
    } subst[] = {
        {"{{TITLE}}", title},       {"{{VERDICT}}", verdict},
        {"{{VERDICT_CLASS}}", vclass}, {"{{STARTED}}", started},
        {"{{SUMMARY}}", t_summary}, {"{{ANSWERS}}", t_answers},
        {"{{AUDIT}}", t_audit},     {"{{PNG_THROUGHPUT}}", png1 ? png1 : missing},
        {"{{PNG_LATENCY}}", png2 ? png2 : missing},
        {"{{PNG_STOCK}}", png3 ? png3 : missing},
        {"{{SELLOUT}}", sold},
    };
    sbuf_t out = {0};
    const char *p = tmpl;
    while (*p) {
        const char *m = strstr(p, "{{");
        if (!m) {
            sb_add(&out, p, false);
            break;
        }
        char chunk[4096];
        while (p < m) {
            size_t n = (size_t)(m - p) < sizeof(chunk) - 1 ? (size_t)(m - p) : sizeof(chunk) - 1;
            memcpy(chunk, p, n);
            chunk[n] = '\0';
            sb_add(&out, chunk, false);
            p += n;
        }
        bool done = false;
        for (size_t i = 0; i < CM_ARRAY_LEN(subst) && !done; i++) {
            size_t kl = strlen(subst[i].key);
            if (strncmp(p, subst[i].key, kl) == 0) {
                bool esc = strcmp(subst[i].key, "{{TITLE}}") == 0;
                sb_add(&out, subst[i].val, esc);
                p += kl;
                done = true;
            }
        }
        if (!done) {
            sb_add(&out, "{{", false);
            p += 2;
        }
    }
    snprintf(path, sizeof(path), "%s/report.html", dir);
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f || fwrite(out.p, 1, out.len, f) != out.len) {
        snprintf(eb, el, "%s: %s", path, strerror(errno));
        rc = CM_EIO;
    }
    if (f)
        fclose(f);
    free(out.p);
    free(tmpl);
    free(png1);
    free(png2);
    free(png3);
    free(t_summary);
    free(t_answers);
    free(t_audit);
    return rc;
}

int lt_report_write(const char *dir, const char *src_dir, const lt_scenario_t *sc,
                    const char *scenario_path, const lt_results_t *res, const lt_audit_t *audit,
                    char *eb, size_t el)
{
    if (mkdir_p(dir) < 0) {
        snprintf(eb, el, "%s: cannot create: %s", dir, strerror(errno));
        return CM_EIO;
    }
    char tmpl_dir[4096];
    if (src_dir)
        snprintf(tmpl_dir, sizeof(tmpl_dir), "%s/loadtest/report", src_dir);
    else
        snprintf(tmpl_dir, sizeof(tmpl_dir), "%s", LT_REPORT_DIR);
    sellout_t so = sellout_of(sc, res, audit);
    int rc = write_data(dir, res, eb, el);
    if (rc == 0)
        rc = write_stock(dir, res, &so, eb, el);
    if (rc < 0)
        return rc;
    bool plotted = run_gnuplot(dir, tmpl_dir, res, &so);
    json_t *fig = figures_json(sc, res);
    json_object_set_new(
        fig, "sell_out",
        json_pack("{s:I, s:I, s:o, s:o, s:i}", "stock", (json_int_t)so.stock, "units_accepted",
                  (json_int_t)so.units, "sold_out_s",
                  so.sold_out_s >= 0 ? json_real(so.sold_out_s) : json_null(),
                  "after_sale_start_s",
                  so.sold_out_s >= 0 ? json_real(so.sold_out_s - res->sale_start_s) : json_null(),
                  "latency_target_ms", LT_FINE_SLOW_MS));
    char started[40];
    cm_time_format_rfc3339(res->wall_t0_ms, started, sizeof(started));
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:{s:s, s:s, s:s?, s:s?, s:s?, s:s}}", "tool",
        "flashgate-load", "version", FLASHGATE_VERSION, "started_at", started, "scenario",
        scenario_json(sc, scenario_path), "environment", env_json(), "figures", fig, "audit",
        audit_json(audit), "files", "json", "report.json", "html", "report.html",
        "throughput_png", plotted ? "throughput.png" : NULL, "latency_png",
        plotted ? "latency.png" : NULL, "stock_png", plotted ? "stock.png" : NULL,
        "gnuplot_script", "plots.gp");
    char path[4200];
    snprintf(path, sizeof(path), "%s/report.json", dir);
    if (!root || json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
        snprintf(eb, el, "%s: cannot write", path);
        json_decref(root);
        return CM_EIO;
    }
    json_decref(root);
    rc = write_html(dir, tmpl_dir, sc, res, audit, &so, eb, el);
    if (rc == 0 && !plotted)
        fprintf(stderr, "flashgate-load: warning: gnuplot failed or is missing; no PNG plots\n");
    return rc;
}
