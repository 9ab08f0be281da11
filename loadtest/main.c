/*
 * flashgate-load: open-loop flash-sale rehearsal with an invariant audit and a
 * report. See loadtest/README.md.
 *
 * Exit status: 0 run done and audit PASS, 1 audit FAIL, 2 bad command line or
 * scenario, 3 the run could not start (sale not created, target unusable),
 * 4 the report could not be written.
 */
#include "common/cm_alloc.h"
#include "common/cm_time.h"
#include "loadtest/lt_audit.h"
#include "loadtest/lt_report.h"
#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef LT_SOURCE_DIR
#define LT_SOURCE_DIR "."
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flashgate-load --scenario FILE [--target URL,...] [--admin URL]\n"
            "         [--admin-token TOKEN|@FILE] [--kafka-brokers LIST|FILE] [--db URL|PATH]\n"
            "         [--out DIR] [--duration S] [--seed N] [--sale ID] [--no-create]\n"
            "         [--no-audit] [--quiet] [--connections N] [--connection-mode queue|open]\n"
            "         [--connections-max N] [--give-up-ms MS]\n"
            "Flags override the scenario file. Exit: 0 PASS, 1 audit FAIL, 2 usage/scenario,\n"
            "3 run could not start, 4 report not written.\n");
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

/* A flag's unsigned value within [min, max]; false (with a message) otherwise. */
static bool flag_u32(const char *name, const char *v, unsigned long min, unsigned long max,
                     uint32_t *out)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || v[0] == '-' || n < min || n > max) {
        fprintf(stderr, "flashgate-load: %s: must be an integer between %lu and %lu\n", name, min,
                max);
        return false;
    }
    *out = (uint32_t)n;
    return true;
}

static void replace(char **dst, const char *v)
{
    free(*dst);
    *dst = cm_xstrdup(v);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scenario", required_argument, NULL, 's'}, {"target", required_argument, NULL, 't'},
        {"admin", required_argument, NULL, 'a'},    {"admin-token", required_argument, NULL, 'k'},
        {"kafka-brokers", required_argument, NULL, 'b'}, {"db", required_argument, NULL, 'd'},
        {"out", required_argument, NULL, 'o'},      {"duration", required_argument, NULL, 'D'},
        {"seed", required_argument, NULL, 'S'},     {"sale", required_argument, NULL, 'i'},
        {"no-create", no_argument, NULL, 'n'},      {"no-audit", no_argument, NULL, 'N'},
        {"quiet", no_argument, NULL, 'q'},          {"help", no_argument, NULL, 'h'},
        {"connections", required_argument, NULL, 'C'},
        {"connection-mode", required_argument, NULL, 'M'},
        {"connections-max", required_argument, NULL, 'X'},
        {"give-up-ms", required_argument, NULL, 'G'},
        {NULL, 0, NULL, 0}};
    const char *scenario = NULL, *target = NULL, *admin = NULL, *token = NULL, *brokers = NULL,
               *db = NULL, *out = NULL, *duration = NULL, *seed = NULL, *sale = NULL,
               *conns = NULL, *mode = NULL, *conns_max = NULL, *give_up = NULL;
    bool no_create = false, no_audit = false, quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "s:t:a:k:b:d:o:D:S:i:nNqhC:M:X:G:", opts, NULL)) != -1) {
        switch (c) {
        case 's': scenario = optarg; break;
        case 't': target = optarg; break;
        case 'a': admin = optarg; break;
        case 'k': token = optarg; break;
        case 'b': brokers = optarg; break;
        case 'd': db = optarg; break;
        case 'o': out = optarg; break;
        case 'D': duration = optarg; break;
        case 'S': seed = optarg; break;
        case 'i': sale = optarg; break;
        case 'n': no_create = true; break;
        case 'N': no_audit = true; break;
        case 'q': quiet = true; break;
        case 'C': conns = optarg; break;
        case 'M': mode = optarg; break;
        case 'X': conns_max = optarg; break;
        case 'G': give_up = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!scenario || optind != argc) {
        usage(stderr);
        return 2;
    }
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
    if (no_create)
        sc.sale_create = false;
    if (duration) {
        char *end;
        double d = strtod(duration, &end);
        if (*end || d < 0.1 || d > 3600) {
            fprintf(stderr, "flashgate-load: --duration: must be seconds between 0.1 and 3600\n");
            lt_scenario_free(&sc);
            return 2;
        }
        sc.duration_s = d;
    }
    if (seed) {
        char *end;
        unsigned long long s = strtoull(seed, &end, 10);
        if (*end || !*seed) {
            fprintf(stderr, "flashgate-load: --seed: must be an unsigned integer\n");
            lt_scenario_free(&sc);
            return 2;
        }
        sc.seed = s;
    }
    if ((conns && !flag_u32("--connections", conns, 1, LT_MAX_CONNECTIONS, &sc.connections)) ||
        (conns_max &&
         !flag_u32("--connections-max", conns_max, 1, LT_MAX_CONNECTIONS, &sc.connections_max)) ||
        (give_up && !flag_u32("--give-up-ms", give_up, 0, 600000, &sc.give_up_ms))) {
        lt_scenario_free(&sc);
        return 2;
    }
    if (mode && lt_conn_mode_parse(mode, &sc.connection_mode) < 0) {
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
