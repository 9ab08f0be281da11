/*
 * flashgate-settle's option table (st_config.h). Every key is also an
 * environment variable and a flag (common/cm_config.h); --help, --check-config,
 * deploy/flashgate-settle.conf.example (generated: FLASHGATE_REGEN_SAMPLE=1
 * build/tests/unit.st_config) and docs/settlement.md's table come from or
 * follow this table.
 */
#include "settle/st_config.h"

#include "common/cm_addr.h"
#include "common/cm_log.h"
#include "settle/st_settle.h"

#include <stddef.h>
#include <string.h>

#define OFF(f) offsetof(st_config_t, f)
#define SZ(f) sizeof(((st_config_t *)0)->f)

/* settle.metrics_listen: empty (off) or an IP literal and a port, as metrics_start binds it. */
static const char *v_metrics_listen(const void *v)
{
    char host[64], why[160];
    int port;
    if (!*(const char *)v ||
        cm_hostport_parse(v, CM_HOSTPORT_NUMERIC, host, sizeof(host), &port, why, sizeof(why)) == 0)
        return NULL;
    return "must be IP:PORT (IPv6 as [::1]:9100), port 1..65535, or empty";
}

const cm_opt_t st_config_opts[] = {
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
     .alias = "kafka-properties",
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
     .def = "20ms", /* ST_DEFAULT_BATCH_WAIT_MS */
     .min = 1,
     .max = 60000,
     .alias = "batch-wait",
     .metavar = "DURATION",
     .help = "longest wait to fill a batch"},
    {.key = "settle.stop_grace",
     .type = CM_OPT_MS,
     .offset = OFF(stop_grace_ms),
     .def = "5s", /* ST_DEFAULT_STOP_GRACE_MS */
     .min = 0,
     .max = ST_STOP_GRACE_MAX_MS,
     .alias = "stop-grace",
     .metavar = "DURATION",
     .help = "on SIGTERM/SIGINT, how long the batch in progress may take to deliver its outcomes "
             "and commit its offsets before it is given up, uncommitted (read again at the next "
             "start, changing nothing); 0 = give it up at once"},
    {.key = "settle.sql",
     .type = CM_OPT_STR,
     .offset = OFF(sql),
     .size = SZ(sql),
     .def = "",
     .alias = "sql",
     .metavar = "SQL",
     .help = "your statement run per order in the batch (SQLite :order_id :sale_id :user_id :qty "
             ":accepted_at; PostgreSQL $1..$5 in that order); an error fails that order"},
    {.key = "settle.metrics_listen",
     .type = CM_OPT_STR,
     .offset = OFF(metrics_listen),
     .size = SZ(metrics_listen),
     .def = "",
     .alias = "metrics-listen",
     .metavar = "HOST:PORT",
     .help = "serve GET /metrics (Prometheus text format), /healthz and /readyz (Kafka and the "
             "database up) on this address, no token; empty = off",
     .validate = v_metrics_listen},
    {.key = "log.level",
     .type = CM_OPT_ENUM,
     .offset = OFF(log_level),
     .def = "info",
     .choices = cm_log_level_names,
     .alias = "log-level",
     .help = "log threshold"},
    {.key = NULL},
};

#undef OFF
#undef SZ

int st_config_load(st_config_t *cfg, cm_conf_t *conf, int argc, char **argv, char *errbuf,
                   size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    return cm_conf_load(conf, st_config_opts, cfg, "flashgate-settle", "FLASHGATE_", argc, argv,
                        errbuf, errlen);
}
