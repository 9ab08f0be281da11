/*
 * Fuzz target: the spool reader (open with recovery, then scan). A segment
 * gets k good ORDER records written by the real encoder, then the input
 * damages it: byte 0 picks k (0..4) and the mode, bytes 1-2 an offset, the
 * rest are the bytes written there:
 *   mode 0: appended after the good records (a torn or garbage tail);
 *   mode 1: written over the segment at the offset (a corrupt record);
 *   mode 2: the segment cut at the offset, then the bytes appended.
 * Promises: open succeeds (the damage is in the last segment: a torn tail
 * is cut off and reported) and every good record wholly before the damage is
 * read back intact; with the damage in an earlier segment (bit 7 of byte 0)
 * open refuses with CM_ECORRUPT and says where, unless the bytes happen to
 * leave the records intact.
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "queue/oq_spool.h"
#include "tests/fuzz/fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[128];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cm_log_set_level(CM_LOG_ERROR);
    /* tmpfs when there is one: the spool fsyncs on open. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/fg-fuzz-spool-%d", base, (int)getpid());
    return 0;
}

static void wipe(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

typedef struct seen {
    oq_order_t orders[64];
    oq_pos_t next[64];
    size_t n;
} seen_t;

static int collect(const oq_rec_t *rec, void *ctx)
{
    seen_t *s = ctx;
    if (s->n < 64 && rec->type == OQ_REC_ORDER) {
        s->orders[s->n] = *rec->order;
        s->next[s->n] = rec->next;
        s->n++;
    }
    return 0;
}

static void make_order(oq_order_t *o, unsigned i)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->order_id, sizeof(o->order_id), "0000000000%06u", i);
    snprintf(o->sale_id, sizeof(o->sale_id), "sale-%u", i % 3);
    snprintf(o->user_id, sizeof(o->user_id), "user-%u", i);
    o->qty = 1 + i % 4;
    o->accepted_at_ms = 1700000000000 + i;
    o->node_id = 7;
}

static char *last_segment(char *out, size_t len, bool first)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char best[300] = "";
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "spool-", 6) != 0)
            continue;
        int c = strcmp(e->d_name, best);
        if (!best[0] || (first ? c < 0 : c > 0))
            snprintf(best, sizeof(best), "%s", e->d_name);
    }
    if (d)
        closedir(d);
    FZ_CHECK(best[0]);
    snprintf(out, len, "%s/%s", dir, best);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > 4096)
        return 0;
    unsigned k = data[0] % 5, mode = (data[0] >> 3) % 3;
    bool earlier = (data[0] & 0x80) != 0;
    size_t at = (size_t)data[1] | (size_t)data[2] << 8;
    const uint8_t *junk = data + 3;
    size_t njunk = size - 3;

    wipe();
    oq_spool_opts_t opts = {.dir = dir, .durability = OQ_DURABILITY_WRITE,
                            .segment_bytes = 1 << 20, .max_bytes = 0};
    char err[512];
    oq_spool_t *sp;
    FZ_CHECK(oq_spool_open(&sp, &opts, err, sizeof(err)) == 0);
    for (unsigned i = 0; i < k; i++) {
        oq_order_t o;
        make_order(&o, i);
        FZ_CHECK(oq_spool_append(sp, &o, 1) == 0);
    }
    seen_t *before = calloc(1, sizeof(*before));
    FZ_CHECK(oq_spool_scan(sp, (oq_pos_t){0, 0}, collect, before) == (long)k);
    oq_spool_close(sp);

    char seg[512];
    last_segment(seg, sizeof(seg), false);
    struct stat st;
    FZ_CHECK(stat(seg, &st) == 0);
    size_t end = (size_t)st.st_size;
    size_t damage = end; /* first damaged byte */
    int fd = open(seg, O_WRONLY);
    FZ_CHECK(fd >= 0);
    if (mode == 0 || end == 0) {
        FZ_CHECK(pwrite(fd, junk, njunk, (off_t)end) == (ssize_t)njunk);
    } else if (mode == 1) {
        damage = at % end;
        FZ_CHECK(pwrite(fd, junk, njunk, (off_t)damage) == (ssize_t)njunk);
    } else {
        damage = at % end;
        FZ_CHECK(ftruncate(fd, (off_t)damage) == 0);
        FZ_CHECK(pwrite(fd, junk, njunk, (off_t)damage) == (ssize_t)njunk);
    }
    close(fd);
    size_t intact = 0; /* good records wholly before the damage */
    while (intact < k && before->next[intact].off <= damage)
        intact++;
    if (njunk == 0 && mode == 1)
        intact = k; /* nothing was written */
    if (earlier) {
        /* A later segment makes the damaged one "not the last". */
        char later[600];
        const char *base = strrchr(seg, '/') + 1 + 6;
        snprintf(later, sizeof(later), "%s/spool-%016llx.log", dir,
                 strtoull(base, NULL, 16) + 1);
        int lfd = open(later, O_WRONLY | O_CREAT | O_EXCL, 0644);
        FZ_CHECK(lfd >= 0);
        close(lfd);
    }

    err[0] = '\0';
    int rc = oq_spool_open(&sp, &opts, err, sizeof(err));
    if (earlier && rc != 0) {
        FZ_CHECK(rc == CM_ECORRUPT);
        FZ_CHECK(strstr(err, "corrupt at offset") != NULL);
    } else {
        if (rc != 0)
            fprintf(stderr, "open: %s\n", err);
        FZ_CHECK(rc == 0);
        seen_t *after = calloc(1, sizeof(*after));
        long n = oq_spool_scan(sp, (oq_pos_t){0, 0}, collect, after);
        FZ_CHECK(n >= 0 && (size_t)n >= intact);
        for (size_t i = 0; i < intact; i++)
            FZ_CHECK(memcmp(&after->orders[i], &before->orders[i], sizeof(oq_order_t)) == 0);
        /* The cut tail is gone: appending and reading back works. */
        oq_order_t o;
        make_order(&o, 99);
        FZ_CHECK(oq_spool_append(sp, &o, 1) == 0);
        free(after);
        oq_spool_close(sp);
    }
    free(before);
    return 0;
}
