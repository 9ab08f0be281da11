/*
 * flashgate: the flash-sale admission gateway.
 * config -> wire modules -> signals -> run -> orderly shutdown.
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_drain.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"

#include "common/cm_time.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <time.h>
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
    gw_workers_counters(s->srv, &c);
    uint64_t req = c.requests - s->last.requests;
    if (req) {
#define D(x) (unsigned long long)(c.replies[GW_R_##x] - s->last.replies[GW_R_##x])
        uint64_t rl = 0;
        for (int i = 0; i < GW_SCOPE_COUNT; i++)
            rl += c.rate_limited[i] - s->last.rate_limited[i];
        cm_log_info("gw", "summary",
                    "requests=%llu accepted=%llu sold_out=%llu limit_per_user=%llu "
                    "rate_limited=%llu not_started=%llu ended=%llu bad_request=%llu "
                    "unavailable=%llu overloaded=%llu not_ready=%llu",
                    (unsigned long long)req, D(ACCEPTED), D(SOLD_OUT), D(LIMIT_PER_USER),
                    (unsigned long long)rl, D(NOT_STARTED), D(SALE_ENDED), D(BAD_REQUEST),
                    D(UNAVAILABLE), D(OVERLOADED), D(NOT_READY));
#undef D
    }
    s->last = c;
    gw_overload_log_summary(s->srv);
}

/*---- graceful operations: SIGTERM drains, SIGHUP reloads (docs/runbook.md) ----*/

typedef struct ops {
    gw_server_t *srv;
    gw_config_t *cfg;
    int argc;
    char **argv;
    uv_timer_t grace;
    bool leaving;
} ops_t;

static void on_grace_over(uv_timer_t *t)
{
    cm_log_info("gw", "drain grace over: stop accepting, finish in-flight, flush", NULL);
    uv_stop(t->loop);
}

/*
 * SIGTERM/SIGINT: /readyz turns 503 at once (load balancers and orchestrators
 * stop sending), every other route serves on for server.drain_grace, then the
 * listener closes, in-flight requests finish and the relay flushes, bounded by
 * server.drain_timeout (a watchdog in main). A second signal skips the grace.
 */
static void on_stop_signal(uv_signal_t *h, int signum)
{
    ops_t *o = h->data;
    uint64_t grace_ms = gw_drain_grace_ms(o->cfg->drain_grace_ms, o->leaving);
    if (o->leaving) {
        cm_log_info("gw", "second stop signal: skipping the drain grace", "signal=%s",
                    strsignal(signum));
        uv_stop(h->loop);
        return;
    }
    o->leaving = true;
    /* /readyz turns 503 before systemd (or anyone watching) hears STOPPING=1:
     * whoever reacts to it must already see the gateway leaving. */
    gw_server_leave(o->srv);
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    cm_log_info("gw", "signal received, draining", "signal=%s grace_ms=%llu timeout_ms=%llu",
                strsignal(signum), (unsigned long long)o->cfg->drain_grace_ms,
                (unsigned long long)o->cfg->drain_timeout_ms);
    if (grace_ms)
        uv_timer_start(&o->grace, on_grace_over, grace_ms, 0);
    else
        uv_stop(h->loop);
}

static void on_reload_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    ops_t *o = h->data;
    if (o->leaving)
        return;
    sd_notify(0, "RELOADING=1");
    unsigned applied, restart;
    gw_server_reload(o->srv, o->argc, o->argv, &applied, &restart);
    sd_notifyf(0, "READY=1\nSTATUS=serving; last reload: %u applied, %u need a restart", applied,
               restart);
}

/*
 * systemd's watchdog (WatchdogSec= in deploy/systemd/flashgate.service):
 * WATCHDOG=1 only while every worker loop turns (gw_liveness_watch), so a
 * stuck loop stops the pings and systemd restarts the gateway WatchdogSec
 * after the last one. A timer on this thread's loop rather than a thread of
 * its own: if this loop is held (a reload), the pings stop too, which is
 * right. Pinged four times per WATCHDOG_USEC, and at least each second so
 * that the stuck/recovered log lines are timely.
 */
typedef struct sd_watch {
    uv_timer_t timer;
    gw_server_t *srv;
    gw_liveness_watch_t st;
    bool sd;
} sd_watch_t;

static void on_sd_watch(uv_timer_t *t)
{
    sd_watch_t *wd = t->data;
    if (gw_liveness_watch(wd->srv, &wd->st) && wd->sd)
        sd_notify(0, "WATCHDOG=1");
}

static void sd_watch_start(sd_watch_t *wd, gw_server_t *srv, uv_loop_t *loop)
{
    uint64_t usec = 0;
    wd->srv = srv;
    wd->sd = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
    uint64_t every_ms = 1000;
    if (wd->sd && usec / 4000 < every_ms)
        every_ms = usec / 4000 ? usec / 4000 : 1;
    uv_timer_init(loop, &wd->timer);
    wd->timer.data = wd;
    if (wd->sd || srv->cfg->liveness_timeout_ms)
        uv_timer_start(&wd->timer, on_sd_watch, 0, every_ms);
    if (wd->sd)
        cm_log_info("gw", "systemd watchdog on", "ping_every_ms=%llu liveness_timeout_ms=%llu",
                    (unsigned long long)every_ms,
                    (unsigned long long)srv->cfg->liveness_timeout_ms);
}

/* Bounds the graceful stop: past server.drain_timeout the process exits with
 * status 1, as a kill would; the spool holds every accepted order. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    uint64_t timeout_ms;
} watchdog = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

static void *watchdog_main(void *arg)
{
    (void)arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(watchdog.timeout_ms / 1000);
    until.tv_nsec += (long)(watchdog.timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&watchdog.mu);
    int rc = 0;
    while (!watchdog.done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&watchdog.cv, &watchdog.mu, &until);
    bool done = watchdog.done;
    pthread_mutex_unlock(&watchdog.mu);
    if (!done) {
        cm_log_error("gw", "drain timed out: exiting now; the spool keeps every accepted order",
                     "timeout_ms=%llu", (unsigned long long)watchdog.timeout_ms);
        _exit(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    json_object_seed(0);
    static gw_config_t cfg;
    cm_conf_t conf;
    char err[16384];
    int rc = gw_config_load(&cfg, &conf, argc, argv, err, sizeof(err));
    if (cm_conf_answer_info(&conf, "flashgate", usage)) {
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
        /* what a start checks before it binds: a configuration that passes
         * here fails to start only on its ports (or what changes meanwhile) */
        rc = gw_server_check(&cfg, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "flashgate: %s\nflashgate: the configuration cannot start\n", err);
            cm_conf_free(&conf);
            return 2;
        }
        cm_conf_print_effective(&conf, 1);
        printf("configuration ok\n");
        cm_conf_free(&conf);
        return 0;
    }
    /* Before any thread starts: the admin token leaves argv, the environment
     * and cfg for a locked, undumpable page (gw_config.h). */
    gw_config_seal_secrets(&cfg, &conf, argc, argv);
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

    uv_loop_t *loop = &srv.life.main_loop;
    uv_loop_init(loop);
    static ops_t ops;
    ops = (ops_t){.srv = &srv, .cfg = &cfg, .argc = argc, .argv = argv};
    uv_timer_init(loop, &ops.grace);
    uv_signal_t sigint, sigterm, sighup;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sighup);
    sigint.data = sigterm.data = sighup.data = &ops;
    uv_signal_start(&sigint, on_stop_signal, SIGINT);
    uv_signal_start(&sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&sighup, on_reload_signal, SIGHUP);
    /* Type=notify under systemd (deploy/systemd/flashgate.service); a no-op
     * without NOTIFY_SOCKET. */
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s\nMAINPID=%lu", cfg.listen,
               (unsigned long)getpid());
    static sd_watch_t sdw;
    sd_watch_start(&sdw, &srv, loop);
    summary_t sum = {.srv = &srv};
    uv_timer_t timer;
    uv_timer_init(loop, &timer);
    timer.data = &sum;
    if (cfg.summary_interval_ms)
        uv_timer_start(&timer, on_summary, cfg.summary_interval_ms, cfg.summary_interval_ms);
    uv_run(loop, UV_RUN_DEFAULT);

    if (!ops.leaving)
        sd_notify(0, "STOPPING=1");
    /* the last ping (if every loop turns): this loop has stopped, so the drain
     * gets one whole WatchdogSec, and server.drain_timeout bounds it below */
    on_sd_watch(&sdw.timer);
    watchdog.timeout_ms = cfg.drain_timeout_ms;
    pthread_t wd;
    bool wd_started = pthread_create(&wd, NULL, watchdog_main, NULL) == 0;
    uint64_t t0 = cm_mono_us();
    gw_server_leave(&srv);
    atomic_store(&srv.life.draining, true);
    on_summary(&timer);
    gw_server_stop(&srv);
    pthread_mutex_lock(&watchdog.mu);
    watchdog.done = true;
    pthread_cond_signal(&watchdog.cv);
    pthread_mutex_unlock(&watchdog.mu);
    if (wd_started)
        pthread_join(wd, NULL);
    cm_log_info("gw", "drained", "elapsed_ms=%llu", (unsigned long long)((cm_mono_us() - t0) / 1000));
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sighup, NULL);
    uv_close((uv_handle_t *)&ops.grace, NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_close((uv_handle_t *)&sdw.timer, NULL); /* stopped with the loop */
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    cm_log_info("gw", "stopped", NULL);
    cm_conf_free(&conf);
    return 0;
}
