/*
 * flashgate-spool: inspect the order spool of a gateway's data directory.
 *
 *   flashgate-spool dump  [--data-dir DIR] [--from-start]
 *   flashgate-spool stats [--data-dir DIR]
 *
 * Opens the spool read-only (no lock, no recovery cut), so it is safe to run
 * next to a live gateway; it then sees the records complete when it started.
 * Exit status: 0 ok, 1 the spool cannot be read (missing, corrupt), 2 usage.
 */
#include "common/cm_config.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "queue/oq_spool.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The options, on the one config engine (flags, FLASHGATE_* env, --config, --help). */
typedef struct spool_conf {
    char data_dir[1024];
    bool from_start;
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
    {.key = NULL},
};

static const char usage_text[] =
    "usage: flashgate-spool dump  [--data-dir DIR] [--from-start]\n"
    "       flashgate-spool stats [--data-dir DIR]\n"
    "Reads the order spool in DIR/spool, read-only.\n"
    "  dump   one JSON line per record not yet released: an ORDER is the order's\n"
    "         JSON (the Kafka value) plus \"pos\":\"seg:off\"; an EVENT is\n"
    "         {\"event\":<json>,\"pos\":\"seg:off\"}\n"
    "  stats  unreleased bytes, records and segments as one JSON object\n"
    "Exit status: 0 ok, 1 spool missing or corrupt, 2 usage error.\n";

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
    } else if (cmd == NULL || (strcmp(cmd, "dump") != 0 && strcmp(cmd, "stats") != 0)) {
        fprintf(stderr, "flashgate-spool: %s\n", cmd ? "unknown command" : "no command given");
        usage_rc = 2;
    } else if (c.from_start && strcmp(cmd, "dump") != 0) {
        fprintf(stderr, "flashgate-spool: --from-start only goes with dump\n");
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
    cm_conf_free(&conf);

    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/spool", c.data_dir);
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
