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
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "queue/oq_spool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: flashgate-spool dump  [--data-dir DIR] [--from-start]\n"
          "       flashgate-spool stats [--data-dir DIR]\n"
          "       flashgate-spool --help\n"
          "\n"
          "Reads the order spool in DIR/spool (DIR defaults to ./data), read-only.\n"
          "  dump        one JSON line per record not yet released: an ORDER is the order's\n"
          "              JSON (the Kafka value) plus \"pos\":\"seg:off\"; an EVENT is\n"
          "              {\"event\":<json>,\"pos\":\"seg:off\"}\n"
          "  --from-start  dump every record still on disk, released ones included\n"
          "  stats       unreleased bytes, records and segments as one JSON object\n"
          "Exit status: 0 ok, 1 spool missing or corrupt, 2 usage error.\n",
          out);
}

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
    const char *cmd = NULL, *data_dir = "./data";
    bool from_start = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--data-dir") == 0 && i + 1 < argc) {
            data_dir = argv[++i];
        } else if (strncmp(a, "--data-dir=", 11) == 0) {
            data_dir = a + 11;
        } else if (strcmp(a, "--from-start") == 0) {
            from_start = true;
        } else if (a[0] != '-' && cmd == NULL) {
            cmd = a;
        } else {
            fprintf(stderr, "flashgate-spool: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (cmd == NULL || (strcmp(cmd, "dump") != 0 && strcmp(cmd, "stats") != 0)) {
        fprintf(stderr, "flashgate-spool: %s\n", cmd ? "unknown command" : "no command given");
        usage(stderr);
        return 2;
    }
    if (from_start && strcmp(cmd, "dump") != 0) {
        fprintf(stderr, "flashgate-spool: --from-start only goes with dump\n");
        return 2;
    }
    if (data_dir[0] == '\0') {
        fprintf(stderr, "flashgate-spool: --data-dir is empty\n");
        return 2;
    }

    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/spool", data_dir);
    oq_spool_opts_t opts = {.dir = dir, .read_only = true};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    int rc = oq_spool_open(&sp, &opts, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "flashgate-spool: %s\n", err[0] ? err : cm_strerror(rc));
        return 1;
    }
    int status = 0;
    if (strcmp(cmd, "dump") == 0) {
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
