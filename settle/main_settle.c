/*
 * flashgate-settle: consumes accepted orders from Kafka and settles them into
 * the order database at the pace the database can take, exactly once, and
 * publishes each order's outcome. See settle/st_settle.h and docs/settlement.md.
 */
#include "common/cm_config.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "settle/st_settle.h"

#include <jansson.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct settle_conf {
    char kafka_brokers[1024];
    char kafka_topic[256];
    char outcomes_topic[256];
    char kafka_properties[4096];
    char group[256];
    char data_dir[1024];
    char db[1024];
    char sql[4096];
    uint64_t max_rate_milli;
    uint64_t batch;
    uint64_t batch_wait_ms;
    int log_level;
} settle_conf_t;

#define OFF(f) offsetof(settle_conf_t, f)
#define SZ(f) sizeof(((settle_conf_t *)0)->f)

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

static const cm_opt_t settle_opts[] = {
    {.key = "kafka.brokers",
     .type = CM_OPT_STR,
     .offset = OFF(kafka_brokers),
     .size = SZ(kafka_brokers),
     .def = "embedded",
     .alias = "kafka-brokers",
     .metavar = "embedded|HOST:PORT,...|@FILE",
     .help = "Kafka bootstrap servers; @FILE reads them from FILE (re-read when all brokers are "
             "down); embedded = @<data-dir>/kafka.bootstrap"},
    {.key = "kafka.topic",
     .type = CM_OPT_STR,
     .offset = OFF(kafka_topic),
     .size = SZ(kafka_topic),
     .def = ST_DEFAULT_TOPIC,
     .alias = "kafka-topic",
     .metavar = "TOPIC",
     .help = "topic the accepted orders (and cancellations) are read from"},
    {.key = "kafka.outcomes_topic",
     .type = CM_OPT_STR,
     .offset = OFF(outcomes_topic),
     .size = SZ(outcomes_topic),
     .def = ST_DEFAULT_OUTCOMES_TOPIC,
     .alias = "outcomes-topic",
     .metavar = "TOPIC",
     .help = "topic each order's outcome is published to"},
    {.key = "kafka.properties",
     .type = CM_OPT_KV,
     .offset = OFF(kafka_properties),
     .size = SZ(kafka_properties),
     .def = "",
     .alias = "kafka-property",
     .metavar = "KEY=VALUE",
     .help = "librdkafka property for both clients, or consumer.K=V / producer.K=V for one "
             "(repeatable)"},
    {.key = "settle.group",
     .type = CM_OPT_STR,
     .offset = OFF(group),
     .size = SZ(group),
     .def = ST_DEFAULT_GROUP,
     .alias = "group",
     .metavar = "GROUP",
     .help = "consumer group; workers in one group share the partitions"},
    {.key = "settle.data_dir",
     .type = CM_OPT_STR,
     .offset = OFF(data_dir),
     .size = SZ(data_dir),
     .def = "./data",
     .alias = "data-dir",
     .metavar = "DIR",
     .help = "where orders.db (default database) and kafka.bootstrap live"},
    {.key = "settle.db",
     .type = CM_OPT_STR,
     .offset = OFF(db),
     .size = SZ(db),
     .def = "",
     .flags = CM_OPT_SECRET,
     .alias = "db",
     .metavar = "postgresql://...|sqlite:PATH",
     .help = "order database; empty = SQLite <data-dir>/orders.db"},
    {.key = "settle.max_rate",
     .type = CM_OPT_MILLI,
     .offset = OFF(max_rate_milli),
     .def = "0",
     .max = 1000000000000ull,
     .alias = "max-rate",
     .metavar = "N",
     .help = "at most N orders/s reach the database (peak shaving); 0 = no limit"},
    {.key = "settle.batch",
     .type = CM_OPT_UINT,
     .offset = OFF(batch),
     .def = "500",
     .min = 1,
     .max = 100000,
     .alias = "batch",
     .metavar = "N",
     .help = "orders per database transaction, at most"},
    {.key = "settle.batch_wait",
     .type = CM_OPT_MS,
     .offset = OFF(batch_wait_ms),
     .def = "100ms",
     .min = 1,
     .max = 60000,
     .alias = "batch-wait",
     .metavar = "DURATION",
     .help = "longest wait to fill a batch"},
    {.key = "settle.sql",
     .type = CM_OPT_STR,
     .offset = OFF(sql),
     .size = SZ(sql),
     .def = "",
     .alias = "sql",
     .metavar = "SQL",
     .help = "your statement run per order in the batch (SQLite :order_id :sale_id :user_id :qty "
             ":accepted_at; PostgreSQL $1..$5 in that order); an error fails that order"},
    {.key = "log.level",
     .type = CM_OPT_ENUM,
     .offset = OFF(log_level),
     .def = "info",
     .choices = log_levels,
     .alias = "log-level",
     .help = "log threshold"},
    {.key = NULL},
};

static st_settle_t *g_settle;

static void on_signal(int sig)
{
    (void)sig;
    if (g_settle)
        st_settle_stop(g_settle);
}

int main(int argc, char **argv)
{
    settle_conf_t c;
    memset(&c, 0, sizeof(c));
    cm_conf_t conf;
    char err[4096];
    int ret = cm_conf_load(&conf, settle_opts, &c, "flashgate-settle", "FLASHGATE_", argc, argv,
                           err, sizeof(err));
    if (ret != 0) {
        fputs(err, stderr);
        return 2;
    }
    if (conf.want_help) {
        cm_conf_print_help(&conf,
                           "usage: flashgate-settle [--config FILE] [flags]\n"
                           "Settles accepted orders from Kafka into the order database.\n",
                           1);
        cm_conf_free(&conf);
        return 0;
    }
    if (conf.want_version) {
        printf("flashgate-settle %s\n", FLASHGATE_VERSION);
        cm_conf_free(&conf);
        return 0;
    }
    if (conf.want_check) {
        cm_conf_print_effective(&conf, 1);
        cm_conf_free(&conf);
        return 0;
    }
    if (conf.nargs > 0) {
        fprintf(stderr, "flashgate-settle: unexpected argument \"%s\" (see --help)\n",
                conf.args[0]);
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
        .kafka_props = props,
        .n_kafka_props = nprops,
    };
    st_settle_t *st;
    ret = st_settle_new(&st, &so, err, sizeof(err));
    if (ret != 0) {
        cm_log_error("settle", "cannot start", "err=%s detail=\"%s\"", cm_errname(ret), err);
        cm_conf_free(&conf);
        return 1;
    }
    g_settle = st;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cm_log_info("settle", "started", "brokers=%s topic=%s db=%s max_rate_milli=%llu batch=%llu",
                c.kafka_brokers, c.kafka_topic, *c.db ? "(url)" : "sqlite",
                (unsigned long long)c.max_rate_milli, (unsigned long long)c.batch);
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
    st_settle_free(st);
    cm_conf_free(&conf);
    return ret == 0 ? 0 : 1;
}
