/*
 * flashgate-load: open-loop flash-sale rehearsal with an invariant audit and a
 * report. See loadtest/README.md.
 *
 * Exit status: 0 run done and audit PASS, 1 audit FAIL, 2 bad command line or
 * scenario, 3 the run could not start (sale not created, target unusable),
 * 4 the report could not be written.
 */
#include "common/cm_alloc.h"
#include "common/cm_config.h"
#include "common/cm_time.h"
#include "loadtest/lt_audit.h"
#include "loadtest/lt_report.h"
#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <jansson.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef LT_SOURCE_DIR
#define LT_SOURCE_DIR "."
#endif

static const char usage_text[] =
    "usage: flashgate-load --scenario FILE [flags]\n"
    "Runs a sale-peak scenario against gateways and audits the result. Flags (and\n"
    "FLASHGATE_LOAD_* variables) override the scenario file. Exit: 0 PASS, 1 audit\n"
    "FAIL, 2 usage/scenario, 3 run could not start, 4 report not written.\n";

/* The options, on the one config engine. A flag left at its default leaves
 * the scenario's value alone (cm_conf_source tells which were given). */
typedef struct load_conf {
    char scenario[1024], target[4096], admin[1024], admin_token[1024], kafka_brokers[1024];
    char db[1024], out[1024], sale[sizeof(((lt_scenario_t *)0)->sale_id)], identity_key[1024];
    uint64_t duration_milli, seed, connections, connections_max, give_up_ms, loops;
    int connection_mode;
    bool no_create, no_audit, quiet;
} load_conf_t;

#define OFF(f) offsetof(load_conf_t, f)
#define SZ(f) sizeof(((load_conf_t *)0)->f)
#define STR_OPT(k, f, mv, h)                                                                       \
    {.key = k, .type = CM_OPT_STR, .offset = OFF(f), .size = SZ(f), .def = "", .metavar = mv,      \
     .help = h}
#define BOOL_OPT(k, f, h) {.key = k, .type = CM_OPT_BOOL, .offset = OFF(f), .def = "false", .help = h}

static const char *const conn_modes[] = {"queue", "open", NULL};

static const cm_opt_t load_opts[] = {
    STR_OPT("scenario", scenario, "FILE", "the scenario file (required)"),
    STR_OPT("target", target, "URL,...", "gateways to send the crowd to"),
    STR_OPT("admin", admin, "URL", "admin API for sale creation and the stock audit"),
    {.key = "admin_token", .type = CM_OPT_STR, .offset = OFF(admin_token),
     .size = SZ(admin_token), .def = "", .flags = CM_OPT_SECRET, .metavar = "TOKEN|@FILE",
     .help = "admin bearer token, or @FILE to read it from a file"},
    STR_OPT("kafka_brokers", kafka_brokers, "LIST|FILE", "brokers for the topic audit"),
    STR_OPT("db", db, "URL|PATH", "orders database for the settlement audit"),
    STR_OPT("out", out, "DIR", "report directory (default loadtest/results/<time>)"),
    STR_OPT("sale", sale, "ID", "sale id"),
    STR_OPT("identity_key", identity_key, "FILE",
            "mint a bearer token per account with this key (e.g. data/identity.key); "
            "\"\" = no tokens, whatever the scenario names"),
    {.key = "duration", .type = CM_OPT_MILLI, .offset = OFF(duration_milli), .def = "0",
     .min = 0, .max = 3600000, .metavar = "S", .help = "seconds of load (0.1..3600)"},
    {.key = "seed", .type = CM_OPT_UINT, .offset = OFF(seed), .def = "0", .metavar = "N",
     .help = "random seed"},
    {.key = "connections", .type = CM_OPT_UINT, .offset = OFF(connections), .def = "0",
     .max = LT_MAX_CONNECTIONS, .metavar = "N", .help = "connections (queue mode)"},
    {.key = "connection_mode", .type = CM_OPT_ENUM, .offset = OFF(connection_mode),
     .def = "queue", .choices = conn_modes, .help = "queue (a pool) or open (a crowd)"},
    {.key = "connections_max", .type = CM_OPT_UINT, .offset = OFF(connections_max), .def = "0",
     .max = LT_MAX_CONNECTIONS, .metavar = "N", .help = "most connections open at once"},
    {.key = "give_up_ms", .type = CM_OPT_UINT, .offset = OFF(give_up_ms), .def = "0",
     .max = 600000, .metavar = "MS", .help = "a person gives up after this"},
    {.key = "loops", .type = CM_OPT_UINT, .offset = OFF(loops), .def = "0", .max = LT_MAX_LOOPS,
     .metavar = "N", .help = "event loops (threads) to deal the crowd over"},
    BOOL_OPT("no_create", no_create, "do not create the sale"),
    BOOL_OPT("no_audit", no_audit, "skip the audit"),
    BOOL_OPT("quiet", quiet, "no progress lines"),
    {.key = NULL},
};

/* true if the flag/env/file gave `key` (not its default). */
static bool given(const cm_conf_t *conf, const char *key)
{
    return cm_conf_source(conf, key) > CM_SRC_DEFAULT;
}

static char *token_value(const char *v)
{
    if (v[0] != '@')
        return cm_xstrdup(v);
    FILE *f = fopen(v + 1, "r");
    char buf[512] = "";
    if (f) {
        if (!fgets(buf, sizeof(buf), f))
            buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return cm_xstrdup(buf);
}

static void replace(char **dst, const char *v)
{
    free(*dst);
    *dst = cm_xstrdup(v);
}

int main(int argc, char **argv)
{
    load_conf_t lc;
    memset(&lc, 0, sizeof(lc));
    cm_conf_t conf;
    char cerr[4096];
    if (cm_conf_load(&conf, load_opts, &lc, "flashgate-load", "FLASHGATE_LOAD_", argc, argv, cerr,
                     sizeof(cerr)) != 0) {
        fprintf(stderr, "%s%s", cerr, usage_text);
        cm_conf_free(&conf);
        return 2;
    }
    if (cm_conf_answer_info(&conf, "flashgate-load", usage_text) || conf.want_check) {
        if (conf.want_check)
            cm_conf_print_effective(&conf, 1);
        cm_conf_free(&conf);
        return 0;
    }
    cerr[0] = '\0';
    if (cm_conf_check_args(&conf, 0, cerr, sizeof(cerr)) != 0 || !lc.scenario[0]) {
        fprintf(stderr, "%sflashgate-load: %s\n%s", cerr,
                conf.nargs > 0 ? "unexpected argument" : "--scenario is required", usage_text);
        cm_conf_free(&conf);
        return 2;
    }
    const char *scenario = lc.scenario;
    const char *target = given(&conf, "target") ? lc.target : NULL;
    const char *admin = given(&conf, "admin") ? lc.admin : NULL;
    const char *token = given(&conf, "admin_token") ? lc.admin_token : NULL;
    const char *brokers = given(&conf, "kafka_brokers") ? lc.kafka_brokers : NULL;
    const char *db = given(&conf, "db") ? lc.db : NULL;
    const char *out = given(&conf, "out") && lc.out[0] ? lc.out : NULL;
    const char *sale = given(&conf, "sale") ? lc.sale : NULL;
    const char *identity_key = given(&conf, "identity_key") ? lc.identity_key : NULL;
    bool no_create = lc.no_create, no_audit = lc.no_audit, quiet = lc.quiet;
    bool has_duration = given(&conf, "duration"), has_seed = given(&conf, "seed");
    bool has_conns = given(&conf, "connections"), has_mode = given(&conf, "connection_mode");
    bool has_conns_max = given(&conf, "connections_max"), has_give_up = given(&conf, "give_up_ms");
    bool has_loops = given(&conf, "loops");
    cm_conf_free(&conf);
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0);
    lt_scenario_t sc;
    char eb[1024];
    if (lt_scenario_load(&sc, scenario, eb, sizeof(eb)) < 0) {
        fprintf(stderr, "flashgate-load: %s: %s\n", scenario, eb);
        lt_scenario_free(&sc);
        return 2;
    }
    if (target)
        lt_scenario_set_targets(&sc, target);
    if (admin)
        replace(&sc.admin_url, admin);
    if (token) {
        free(sc.admin_token);
        sc.admin_token = token_value(token);
    }
    if (brokers)
        replace(&sc.kafka_brokers, brokers);
    if (db)
        replace(&sc.db_url, db);
    if (sale)
        snprintf(sc.sale_id, sizeof(sc.sale_id), "%s", sale);
    if (identity_key && *identity_key) {
        replace(&sc.identity_key, identity_key);
    } else if (identity_key) {
        free(sc.identity_key);
        sc.identity_key = NULL;
    }
    if (no_create)
        sc.sale_create = false;
    if (has_duration) {
        if (lc.duration_milli < 100) {
            fprintf(stderr, "flashgate-load: --duration: must be seconds between 0.1 and 3600\n");
            lt_scenario_free(&sc);
            return 2;
        }
        sc.duration_s = (double)lc.duration_milli / 1000.0;
    }
    if (has_seed)
        sc.seed = lc.seed;
    if ((has_conns && lc.connections == 0) || (has_conns_max && lc.connections_max == 0)) {
        fprintf(stderr, "flashgate-load: --connections and --connections-max must be >= 1\n");
        lt_scenario_free(&sc);
        return 2;
    }
    if (has_conns)
        sc.connections = (uint32_t)lc.connections;
    if (has_conns_max)
        sc.connections_max = (uint32_t)lc.connections_max;
    if (has_give_up)
        sc.give_up_ms = (uint32_t)lc.give_up_ms;
    if (has_loops) {
        if (lc.loops == 0) {
            fprintf(stderr, "flashgate-load: --loops: must be between 1 and %d\n", LT_MAX_LOOPS);
            lt_scenario_free(&sc);
            return 2;
        }
        sc.loops = (uint32_t)lc.loops;
    }
    if (has_mode && lt_conn_mode_parse(conn_modes[lc.connection_mode], &sc.connection_mode) < 0) {
        fprintf(stderr, "flashgate-load: --connection-mode: must be queue or open\n");
        lt_scenario_free(&sc);
        return 2;
    }
    if (lt_scenario_validate(&sc, eb, sizeof(eb)) < 0) {
        fprintf(stderr, "flashgate-load: %s: %s\n", scenario, eb);
        lt_scenario_free(&sc);
        return 2;
    }

    char outdir[4096];
    if (out) {
        snprintf(outdir, sizeof(outdir), "%s", out);
    } else {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char ts[32];
        strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
        const char *src = getenv("FLASHGATE_SRC");
        snprintf(outdir, sizeof(outdir), "%s/loadtest/results/%s", src ? src : LT_SOURCE_DIR, ts);
    }

    lt_results_t *res = cm_xcalloc(1, sizeof(*res));
    int rc = lt_run(&sc, quiet, res, eb, sizeof(eb));
    if (rc < 0) {
        fprintf(stderr, "flashgate-load: cannot run: %s\n", eb);
        lt_results_free(res);
        free(res);
        lt_scenario_free(&sc);
        return 3;
    }
    lt_audit_t *audit = NULL;
    if (!no_audit) {
        audit = cm_xcalloc(1, sizeof(*audit));
        lt_audit_run(&sc, res, audit);
    }
    printf("flashgate-load: %s: %llu buy requests, %llu polls in %.1f s; 202 %llu, 409 %llu, "
           "410 %llu, 429 %llu, 503 %llu; buy p50 %.2f ms p99 %.2f ms p99.9 %.2f ms max %.2f ms\n",
           sc.name, (unsigned long long)res->sent_buy, (unsigned long long)res->sent_poll,
           res->elapsed_s, (unsigned long long)res->answers[LT_ANS_A202],
           (unsigned long long)res->answers[LT_ANS_A409],
           (unsigned long long)res->answers[LT_ANS_A410],
           (unsigned long long)res->answers[LT_ANS_A429],
           (unsigned long long)res->answers[LT_ANS_A503],
           cm_hist_percentile(&res->buy_all, 50) / 1000.0,
           cm_hist_percentile(&res->buy_all, 99) / 1000.0,
           cm_hist_percentile(&res->buy_all, 99.9) / 1000.0, res->buy_all.max_us / 1000.0);
    if (sc.noncore_share > 0)
        printf("flashgate-load: pages %llu sent; 200 %llu, degraded %llu, 503 %llu, 4xx %llu, "
               "5xx %llu, error %llu, timeout %llu; 200 p99 %.2f ms\n",
               (unsigned long long)res->page_sent,
               (unsigned long long)res->page_answers[LT_PAGE_OK],
               (unsigned long long)res->page_answers[LT_PAGE_DEGRADED],
               (unsigned long long)res->page_answers[LT_PAGE_P503],
               (unsigned long long)res->page_answers[LT_PAGE_P4XX],
               (unsigned long long)res->page_answers[LT_PAGE_P5XX],
               (unsigned long long)res->page_answers[LT_PAGE_ERROR],
               (unsigned long long)res->page_answers[LT_PAGE_TIMEOUT],
               cm_hist_percentile(&res->page_hist[LT_PAGE_OK], 99) / 1000.0);
    if (sc.connection_mode == LT_CONN_OPEN || sc.give_up_ms)
        printf("flashgate-load: connections %s: %llu opened, at most %u at once, %llu errors; "
               "%llu requests given up after %u ms\n",
               lt_conn_mode_name(sc.connection_mode), (unsigned long long)res->connects,
               res->max_open, (unsigned long long)res->connect_errors,
               (unsigned long long)res->gave_up, sc.give_up_ms);
    if (cm_hist_percentile(&res->send_lag, 99) > 10000)
        printf("warning: the load generator fell behind its schedule (send lag p99 %.1f ms): "
               "latencies include that delay; give it a core of its own or lower the rates\n",
               cm_hist_percentile(&res->send_lag, 99) / 1000.0);
    if (audit)
        lt_audit_print(audit, stdout);
    const char *src = getenv("FLASHGATE_SRC");
    int exit_code = audit && audit->failed ? 1 : 0;
    if (lt_report_write(outdir, src ? src : LT_SOURCE_DIR, &sc, scenario, res, audit, eb,
                        sizeof(eb)) < 0) {
        fprintf(stderr, "flashgate-load: report: %s\n", eb);
        if (!exit_code)
            exit_code = 4;
    } else {
        printf("report: %s/report.html\n", outdir);
    }
    fflush(stdout);
    free(audit);
    lt_results_free(res);
    free(res);
    lt_scenario_free(&sc);
    return exit_code;
}
