/*
 * flashgate-settle: consumes accepted orders from Kafka and settles them into
 * the order database at the pace the database can take, exactly once, and
 * publishes each order's outcome. See settle/st_settle.h and docs/settlement.md.
 */
#include "common/cm_addr.h"
#include "common/cm_config.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "settle/st_config.h"
#include "settle/st_http.h"
#include "settle/st_settle.h"

#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdatomic.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static st_settle_t *g_settle;

/*---- GET /metrics, /healthz, /readyz (settle/st_http.c) ----*/

static enum MHD_Result metrics_cb(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **req_cls)
{
    return st_http_answer((void *)st_settle_stats(cls), c, url, method, version, data, data_size,
                          req_cls);
}

/* Starts the metrics listener on "IP:PORT" / "[v6]:PORT". NULL with a log line on failure. */
static struct MHD_Daemon *metrics_start(const char *hostport, st_settle_t *st)
{
    char host[64], why[200], port_s[8];
    int port = 0;
    if (cm_hostport_parse(hostport, CM_HOSTPORT_NUMERIC, host, sizeof(host), &port, why,
                          sizeof(why)) != 0) {
        cm_log_error("settle", "metrics_listen must be IP:PORT (IPv6 as [::1]:9100)",
                     "value=%s why=%s", hostport, why);
        return NULL;
    }
    snprintf(port_s, sizeof(port_s), "%d", port);
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, port_s, &hints, &ai) != 0 || !ai) {
        cm_log_error("settle", "cannot resolve metrics_listen", "value=%s", hostport);
        return NULL;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, metrics_cb, st, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d)
        cm_log_error("settle", "cannot listen for metrics", "addr=%s", hostport);
    return d;
}

/* st_settle_opts_t.on_draining: the loop saw the stop. systemd then knows the
 * worker is finishing its batch and leaving the group, not hung (the gateway
 * says the same when it starts its drain). */
static void on_draining(void *arg)
{
    (void)arg;
    sd_notify(0, "STOPPING=1\nSTATUS=draining: finishing the batch, committing offsets");
}

static void on_signal(int sig)
{
    (void)sig;
    if (g_settle)
        st_settle_stop(g_settle);
}

/* SIGHUP: the gateway reloads on it, settlement reads its settings once, at
 * start. Left to its default action, a HUP meant as a reload (an operator, a
 * log rotation) ended settlement, and systemd counts a SIGHUP death as a clean
 * exit, so Restart=on-failure did not bring it back. It is said, and ignored. */
static void on_hangup(int sig)
{
    (void)sig;
    static const char msg[] = "flashgate-settle: SIGHUP ignored: settings are read at start; "
                              "restart to apply a change\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1); /* async-signal-safe */
    (void)n;
}

int main(int argc, char **argv)
{
    st_config_t c;
    cm_conf_t conf;
    char err[4096];
    int ret = st_config_load(&c, &conf, argc, argv, err, sizeof(err));
    if (ret != 0) {
        fputs(err, stderr);
        return 2;
    }
    if (cm_conf_answer_info(&conf, "flashgate-settle",
                            "usage: flashgate-settle [--config FILE] [flags]\n"
                            "Settles accepted orders from Kafka into the order database.\n")) {
        cm_conf_free(&conf);
        return 0;
    }
    if (conf.want_check) {
        cm_conf_print_effective(&conf, 1);
        cm_conf_free(&conf);
        return 0;
    }
    if (cm_conf_check_args(&conf, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "%sflashgate-settle: see --help\n", err);
        cm_conf_free(&conf);
        return 2;
    }
    cm_log_set_level((cm_log_level_t)c.log_level);
    json_object_seed(0);

    /* kafka.properties holds "k=v" lines. */
    const char *props[128];
    size_t nprops = 0;
    for (char *p = c.kafka_properties, *nl; *p && nprops < 128; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) {
            props[nprops++] = p;
            break;
        }
        *nl = 0;
        if (*p)
            props[nprops++] = p;
    }
    st_settle_opts_t so = {
        .brokers = c.kafka_brokers,
        .topic = c.kafka_topic,
        .outcomes_topic = c.outcomes_topic,
        .group = c.group,
        .data_dir = c.data_dir,
        .db = c.db,
        .sql = c.sql,
        .max_rate_milli = c.max_rate_milli,
        .batch = (uint32_t)c.batch,
        .batch_wait_ms = (uint32_t)c.batch_wait_ms,
        /* 0 in the opts is the default (zeroed opts in tests and tools) */
        .stop_grace_ms = c.stop_grace_ms ? (uint32_t)c.stop_grace_ms : ST_STOP_GRACE_NONE,
        .kafka_props = props,
        .n_kafka_props = nprops,
        .on_draining = on_draining,
    };
    st_settle_t *st;
    ret = st_settle_new(&st, &so, err, sizeof(err));
    if (ret != 0) {
        char detail[2 * sizeof(err) + 3]; /* the database's words: escaped */
        cm_log_error("settle", "cannot start", "err=%s detail=%s", cm_errname(ret),
                     st_log_value(detail, sizeof(detail), err));
        cm_conf_free(&conf);
        return 1;
    }
    g_settle = st;
    struct MHD_Daemon *metrics = NULL;
    if (c.metrics_listen[0] && !(metrics = metrics_start(c.metrics_listen, st))) {
        g_settle = NULL;
        st_settle_free(st);
        cm_conf_free(&conf);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hangup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cm_log_info("settle", "started",
                "brokers=%s topic=%s db=%s max_rate_milli=%llu batch=%llu stop_grace_ms=%llu",
                c.kafka_brokers, c.kafka_topic, *c.db ? "(url)" : "sqlite",
                (unsigned long long)c.max_rate_milli, (unsigned long long)c.batch,
                (unsigned long long)c.stop_grace_ms);
    /* Type=notify under systemd (deploy/systemd/flashgate-settle.service): the
     * consumer and the database are open. A no-op without NOTIFY_SOCKET. */
    sd_notify(0, "READY=1");
    ret = st_settle_run(st);
    const st_settle_stats_t *s = st_settle_stats(st);
    cm_log_info("settle", "stopped",
                "messages=%llu settled=%llu failed=%llu cancelled=%llu duplicates=%llu "
                "invalid=%llu db_errors=%llu",
                (unsigned long long)s->messages, (unsigned long long)s->settled,
                (unsigned long long)s->failed, (unsigned long long)s->cancelled,
                (unsigned long long)s->duplicates, (unsigned long long)s->invalid,
                (unsigned long long)s->db_errors);
    g_settle = NULL;
    if (metrics)
        MHD_stop_daemon(metrics);
    st_settle_free(st);
    cm_conf_free(&conf);
    return ret == 0 ? 0 : 1;
}
