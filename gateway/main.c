/*
 * flashgate: the flash-sale admission gateway.
 * config -> wire modules -> signals -> run -> orderly shutdown.
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/gw_internal.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: flashgate [options]\n"
    "\n"
    "The flash-sale admission gateway: rate limits, atomic stock pre-decrement,\n"
    "one durable order per accepted request, relayed to Kafka for settlement.\n"
    "Public API on --listen, admin API on --admin-listen (bearer token).\n"
    "Configuration sources, later wins: defaults, --config FILE (JSON),\n"
    "environment (FLASHGATE_*), flags. --check-config validates and prints it.\n";

typedef struct summary {
    gw_server_t *srv;
    gw_counters_t last;
} summary_t;

static void on_summary(uv_timer_t *t)
{
    summary_t *s = t->data;
    gw_counters_t c;
    gw_server_counters(s->srv, &c);
    uint64_t req = c.requests - s->last.requests;
    if (req) {
#define D(x) (unsigned long long)(c.replies[GW_R_##x] - s->last.replies[GW_R_##x])
        uint64_t rl = 0;
        for (int i = 0; i < GW_SCOPE_COUNT; i++)
            rl += c.rate_limited[i] - s->last.rate_limited[i];
        cm_log_info("gw", "summary",
                    "requests=%llu accepted=%llu sold_out=%llu limit_per_user=%llu "
                    "rate_limited=%llu not_started=%llu ended=%llu bad_request=%llu "
                    "unavailable=%llu overloaded=%llu",
                    (unsigned long long)req, D(ACCEPTED), D(SOLD_OUT), D(LIMIT_PER_USER),
                    (unsigned long long)rl, D(NOT_STARTED), D(SALE_ENDED), D(BAD_REQUEST),
                    D(UNAVAILABLE), D(OVERLOADED));
#undef D
    }
    s->last = c;
}

static void on_signal(uv_signal_t *h, int signum)
{
    cm_log_info("gw", "signal received, shutting down", "signal=%s", strsignal(signum));
    uv_stop(h->loop);
}

int main(int argc, char **argv)
{
    json_object_seed(0);
    static gw_config_t cfg;
    cm_conf_t conf;
    char err[16384];
    int rc = gw_config_load(&cfg, &conf, argc, argv, err, sizeof(err));
    if (conf.want_help) {
        cm_conf_print_help(&conf, usage, 1);
        cm_conf_free(&conf);
        return 0;
    }
    if (conf.want_version) {
        printf("flashgate %s\n", FLASHGATE_VERSION);
        cm_conf_free(&conf);
        return 0;
    }
    if (rc != 0) {
        fputs(err, stderr);
        fprintf(stderr, "flashgate: invalid configuration (see --help)\n");
        cm_conf_free(&conf);
        return 2;
    }
    if (conf.want_check) {
        cm_conf_print_effective(&conf, 1);
        printf("configuration ok\n");
        cm_conf_free(&conf);
        return 0;
    }
    cm_log_set_level((cm_log_level_t)cfg.log_level);
    cm_log_set_format(cfg.log_format == 1 ? "json" : "logfmt");
    signal(SIGPIPE, SIG_IGN);

    static gw_server_t srv;
    rc = gw_server_start(&srv, &cfg, &conf, err, sizeof(err));
    if (rc != 0) {
        cm_log_error("gw", "cannot start", "err=%s reason=\"%s\"", cm_errname(rc), err);
        gw_server_stop(&srv);
        cm_conf_free(&conf);
        return 1;
    }

    uv_loop_t *loop = &srv.main_loop;
    uv_loop_init(loop);
    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    summary_t sum = {.srv = &srv};
    uv_timer_t timer;
    uv_timer_init(loop, &timer);
    timer.data = &sum;
    if (cfg.summary_interval_ms)
        uv_timer_start(&timer, on_summary, cfg.summary_interval_ms, cfg.summary_interval_ms);
    uv_run(loop, UV_RUN_DEFAULT);

    atomic_store(&srv.draining, true);
    on_summary(&timer);
    gw_server_stop(&srv);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    cm_log_info("gw", "stopped", NULL);
    cm_conf_free(&conf);
    return 0;
}
