/*
 * flashgate-spool: inspect the order spool of a gateway's data directory, or
 * relay what it holds unsent.
 *
 *   flashgate-spool dump  [--data-dir DIR] [--from-start]
 *   flashgate-spool stats [--data-dir DIR]
 *   flashgate-spool relay --data-dir DIR --kafka-brokers HOST:PORT,... [--timeout 5m]
 *
 * dump and stats open the spool read-only (no lock, no recovery cut), so they
 * are safe next to a live gateway; they see the records complete when they
 * started. relay opens it as the gateway does (its lock: refused while a
 * gateway holds the directory), sends every unreleased record to Kafka with
 * the gateway's relay (oq_relay: idempotent producer, acks=all, keyed by order
 * id), moves the release point over what Kafka acknowledged and exits: the
 * volume a scaled-down StatefulSet left behind (docs/runbook.md, "Volumes left
 * after a scale-down"). Released segments stay on disk, as a gateway on the
 * memory inventory keeps them. Consumers dedupe by order id, so a record sent
 * again after a crash of this command is harmless.
 * Exit status: 0 ok (relay: nothing left unreleased), 1 the spool cannot be
 * read (missing, corrupt, locked) or the relay failed or timed out, 2 usage.
 */
#include "common/cm_config.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "queue/oq_relay.h"
#include "queue/oq_spool.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The options, on the one config engine (flags, FLASHGATE_* env, --config, --help). */
typedef struct spool_conf {
    char data_dir[1024];
    bool from_start;
    char kafka_brokers[1024];
    char kafka_topic[256];
    char kafka_properties[4096];
    uint64_t timeout_ms;
} spool_conf_t;

#define OFF(f) offsetof(spool_conf_t, f)

static const cm_opt_t spool_opts[] = {
    {.key = "spool.data_dir",
     .type = CM_OPT_STR,
     .offset = OFF(data_dir),
     .size = sizeof(((spool_conf_t *)0)->data_dir),
     .def = "./data",
     .alias = "data-dir",
     .metavar = "DIR",
     .help = "the gateway's data directory; the spool is DIR/spool (read-only)"},
    {.key = "spool.from_start",
     .type = CM_OPT_BOOL,
     .offset = OFF(from_start),
     .def = "false",
     .alias = "from-start",
     .help = "dump: every record still on disk, released ones included"},
    /* The gateway's own keys and variables (FLASHGATE_KAFKA_BROKERS...), so a
     * relay Job takes the gateways' environment unchanged. */
    {.key = "kafka.brokers",
     .type = CM_OPT_STR,
     .offset = OFF(kafka_brokers),
     .size = sizeof(((spool_conf_t *)0)->kafka_brokers),
     .def = "",
     .alias = "kafka-brokers",
     .metavar = "HOST:PORT,...",
     .help = "relay: the Kafka bootstrap servers (not the embedded broker)"},
    {.key = "kafka.topic",
     .type = CM_OPT_STR,
     .offset = OFF(kafka_topic),
     .size = sizeof(((spool_conf_t *)0)->kafka_topic),
     .def = OQ_TOPIC_ORDERS,
     .alias = "kafka-topic",
     .metavar = "TOPIC",
     .help = "relay: the orders topic"},
    {.key = "kafka.properties",
     .type = CM_OPT_KV,
     .offset = OFF(kafka_properties),
     .size = sizeof(((spool_conf_t *)0)->kafka_properties),
     .def = "",
     .alias = "kafka-property",
     .metavar = "KEY=VALUE",
     .help = "relay: librdkafka properties passed through (TLS, SASL), as the gateway's"},
    {.key = "spool.relay_timeout",
     .type = CM_OPT_MS,
     .offset = OFF(timeout_ms),
     .def = "5m",
     .min = 1000,
     .max = 86400000,
     .alias = "timeout",
     .metavar = "DURATION",
     .help = "relay: give up (exit 1, what was acknowledged stays released) after this"},
    {.key = NULL},
};

static const char usage_text[] =
    "usage: flashgate-spool dump  [--data-dir DIR] [--from-start]\n"
    "       flashgate-spool stats [--data-dir DIR]\n"
    "       flashgate-spool relay --data-dir DIR --kafka-brokers HOST:PORT,... [--timeout 5m]\n"
    "Reads the order spool in DIR/spool (dump, stats: read-only).\n"
    "  dump   one JSON line per record not yet released: an ORDER is the order's\n"
    "         JSON (the Kafka value) plus \"pos\":\"seg:off\"; an EVENT is\n"
    "         {\"event\":<json>,\"pos\":\"seg:off\"}\n"
    "  stats  unreleased bytes, records and segments as one JSON object\n"
    "  relay  sends every unreleased record to Kafka, releases what Kafka\n"
    "         acknowledged and exits; refused while a gateway holds DIR\n"
    "Exit status: 0 ok (relay: nothing left unreleased), 1 spool missing, corrupt\n"
    "or locked, or the relay failed or timed out, 2 usage error.\n";

static int dump_cb(const oq_rec_t *rec, void *ctx)
{
    (void)ctx;
    if (rec->type == OQ_REC_ORDER) {
        char buf[OQ_ORDER_JSON_MAX];
        int n = oq_order_encode(rec->order, buf, sizeof(buf));
        if (n < 2)
            return 1;
        buf[n - 1] = '\0'; /* drop the closing brace */
        printf("%s,\"pos\":\"%" PRIu64 ":%" PRIu64 "\"}\n", buf, rec->pos.seg, rec->pos.off);
    } else {
        printf("{\"event\":%.*s,\"pos\":\"%" PRIu64 ":%" PRIu64 "\"}\n", (int)rec->event_len,
               rec->event, rec->pos.seg, rec->pos.off);
    }
    return 0;
}

/* The relay command: DIR's unreleased records to Kafka, then exit. */
static int relay_spool(const spool_conf_t *c, const char *dir)
{
    char err[2048] = "";
    oq_spool_opts_t so = {.dir = dir};
    oq_spool_t *sp = NULL;
    int rc = oq_spool_open(&sp, &so, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "flashgate-spool: %s\n", err[0] ? err : cm_strerror(rc));
        return 1;
    }
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    uint64_t before = st.unreleased_bytes;
    oq_relay_opts_t ro = {.brokers = c->kafka_brokers,
                          .topic = c->kafka_topic,
                          .properties = c->kafka_properties,
                          .data_dir = c->data_dir,
                          .client_id = "flashgate-spool-relay",
                          .spool = sp,
                          .release_deletes = false};
    oq_relay_t *r = NULL;
    if (before > 0 && (rc = oq_relay_open(&r, &ro, err, sizeof(err))) != 0) {
        fprintf(stderr, "flashgate-spool: relay: %s\n", err[0] ? err : cm_strerror(rc));
        oq_spool_close(sp);
        return 1;
    }
    uint64_t deadline = cm_mono_us() + c->timeout_ms * 1000;
    while (r != NULL && st.unreleased_bytes > 0 && cm_mono_us() < deadline) {
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        oq_spool_stats(sp, &st);
    }
    oq_relay_stats_t rs = {0};
    if (r != NULL)
        oq_relay_stats(r, &rs);
    oq_relay_close(r, 5000); /* releases what was delivered meanwhile */
    oq_spool_stats(sp, &st);
    printf("{\"relayed_bytes\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"unreleased_bytes\":%" PRIu64 ",\"released\":\"%" PRIu64 ":%" PRIu64 "\"}\n",
           before - st.unreleased_bytes, rs.delivered, rs.errors, st.unreleased_bytes,
           st.released.seg, st.released.off);
    oq_spool_close(sp);
    if (st.unreleased_bytes > 0) {
        fprintf(stderr,
                "flashgate-spool: relay: %" PRIu64 " bytes still unreleased after %" PRIu64
                " ms (brokers %s unreachable or refusing?)\n",
                st.unreleased_bytes, c->timeout_ms, c->kafka_brokers);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    spool_conf_t c;
    memset(&c, 0, sizeof(c));
    cm_conf_t conf;
    char err[2048];
    int ret = cm_conf_load(&conf, spool_opts, &c, "flashgate-spool", "FLASHGATE_", argc, argv,
                           err, sizeof(err));
    if (ret != 0) {
        fprintf(stderr, "%s", err);
        fputs(usage_text, stderr);
        cm_conf_free(&conf);
        return 2;
    }
    if (cm_conf_answer_info(&conf, "flashgate-spool", usage_text) || conf.want_check) {
        if (conf.want_check)
            cm_conf_print_effective(&conf, 1);
        cm_conf_free(&conf);
        return 0;
    }
    const char *cmd = conf.nargs == 1 ? conf.args[0] : NULL;
    int usage_rc = 0;
    err[0] = '\0';
    if (cm_conf_check_args(&conf, 1, err, sizeof(err)) != 0) {
        fputs(err, stderr);
        usage_rc = 2;
    } else if (cmd == NULL || (strcmp(cmd, "dump") != 0 && strcmp(cmd, "stats") != 0 &&
                               strcmp(cmd, "relay") != 0)) {
        fprintf(stderr, "flashgate-spool: %s\n", cmd ? "unknown command" : "no command given");
        usage_rc = 2;
    } else if (c.from_start && strcmp(cmd, "dump") != 0) {
        fprintf(stderr, "flashgate-spool: --from-start only goes with dump\n");
        usage_rc = 2;
    } else if (strcmp(cmd, "relay") == 0 &&
               (c.kafka_brokers[0] == '\0' || strcmp(c.kafka_brokers, "embedded") == 0 ||
                strcmp(c.kafka_brokers, "none") == 0)) {
        fprintf(stderr,
                "flashgate-spool: relay needs --kafka-brokers HOST:PORT,... (a real Kafka)\n");
        usage_rc = 2;
    } else if (c.data_dir[0] == '\0') {
        fprintf(stderr, "flashgate-spool: --data-dir is empty\n");
        usage_rc = 2;
    }
    if (usage_rc) {
        fputs(usage_text, stderr);
        cm_conf_free(&conf);
        return usage_rc;
    }
    bool from_start = c.from_start;
    bool is_dump = cmd != NULL && strcmp(cmd, "dump") == 0; /* cmd is set past the usage checks */
    bool is_relay = cmd != NULL && strcmp(cmd, "relay") == 0;
    cm_conf_free(&conf);

    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/spool", c.data_dir);
    if (is_relay) {
        int st = relay_spool(&c, dir);
        if (fflush(stdout) != 0 || ferror(stdout))
            st = 1;
        return st;
    }
    oq_spool_opts_t opts = {.dir = dir, .read_only = true};
    oq_spool_t *sp = NULL;
    err[0] = '\0';
    int rc = oq_spool_open(&sp, &opts, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "flashgate-spool: %s\n", err[0] ? err : cm_strerror(rc));
        return 1;
    }
    int status = 0;
    if (is_dump) {
        oq_pos_t from = from_start ? (oq_pos_t){0, 0} : oq_spool_released(sp);
        long n = oq_spool_scan(sp, from, dump_cb, NULL);
        if (n < 0) {
            fprintf(stderr, "flashgate-spool: reading %s: %s\n", dir, cm_strerror((int)n));
            status = 1;
        }
    } else {
        oq_spool_stats_t st;
        oq_spool_stats(sp, &st);
        printf("{\"unreleased_bytes\":%" PRIu64 ",\"unreleased_records\":%" PRIu64
               ",\"segments\":%" PRIu64 ",\"released\":\"%" PRIu64 ":%" PRIu64
               "\",\"end\":\"%" PRIu64 ":%" PRIu64 "\"}\n",
               st.unreleased_bytes, st.appended_records, st.segments, st.released.seg,
               st.released.off, st.end.seg, st.end.off);
    }
    oq_spool_close(sp);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "flashgate-spool: cannot write the output\n");
        status = 1;
    }
    return status;
}
