/* The order spool: CRC-32C, append/scan, torn-tail recovery, corruption in an
 * older segment, space cap, release, rolling (a swap of a spare segment made
 * ahead), group commit, kill -9 safety, fsync durability (readers see only
 * synced records; a failed fsync cuts the rest), a batch near the cap or cut
 * short keeping exactly the records it reports, a sync out of file descriptors
 * (waits, never a disk failure). The throughput figures are
 * in bench/bench_spool.c (make bench). */
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "queue/oq_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/unit/queue/spool_files.h"

static char g_self[4096];

typedef struct {
    char dir[256];
} fixture_t;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/fg-spool-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    strcat(f->dir, "/spool"); /* open creates it */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char *slash = strrchr(f->dir, '/');
    *slash = '\0';
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static oq_spool_t *open_spool(const char *dir, uint64_t seg_bytes, uint64_t max_bytes)
{
    oq_spool_opts_t o = {.dir = dir, .segment_bytes = seg_bytes, .max_bytes = max_bytes};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    int rc = oq_spool_open(&sp, &o, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "open: %s (%s)\n", cm_strerror(rc), err);
    assert_int_equal(rc, 0);
    return sp;
}

static void make_order(oq_order_t *o, uint64_t i)
{
    memset(o, 0, sizeof(*o));
    cm_id_format(i * 7919 + 1, o->order_id);
    snprintf(o->sale_id, sizeof(o->sale_id), "sale-%u", (unsigned)(i % 3));
    snprintf(o->user_id, sizeof(o->user_id), "user-%llu", (unsigned long long)i);
    if (i % 2)
        snprintf(o->idem_key, sizeof(o->idem_key), "idem-%llu", (unsigned long long)i);
    o->qty = (uint32_t)(i % 5) + 1;
    o->accepted_at_ms = 1732269600000LL + (int64_t)i;
    o->node_id = 3;
}

typedef struct {
    oq_rec_t recs[4096];
    oq_order_t orders[4096];
    char events[4096][64];
    size_t n;
    size_t stop_after;
} collect_t;

static int collect_cb(const oq_rec_t *rec, void *ctx)
{
    collect_t *c = ctx;
    if (c->n < 4096) {
        c->recs[c->n] = *rec;
        if (rec->order) {
            c->orders[c->n] = *rec->order;
            c->recs[c->n].order = &c->orders[c->n];
        } else {
            snprintf(c->events[c->n], sizeof(c->events[0]), "%.*s", (int)rec->event_len,
                     rec->event);
            c->recs[c->n].event = c->events[c->n];
        }
    }
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static collect_t *scan_all(oq_spool_t *sp, oq_pos_t from, long *count)
{
    collect_t *c = calloc(1, sizeof(*c));
    *count = oq_spool_scan(sp, from, collect_cb, c);
    return c;
}

static void check_orders(const collect_t *c, size_t first, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        oq_order_t want;
        make_order(&want, first + k);
        assert_int_equal(c->recs[k].type, OQ_REC_ORDER);
        assert_string_equal(c->recs[k].order->order_id, want.order_id);
        assert_string_equal(c->recs[k].order->user_id, want.user_id);
        assert_string_equal(c->recs[k].order->idem_key, want.idem_key);
        assert_int_equal(c->recs[k].order->qty, want.qty);
        assert_int_equal(c->recs[k].order->accepted_at_ms, want.accepted_at_ms);
        if (k > 0)
            assert_int_equal(oq_pos_cmp(c->recs[k - 1].next, c->recs[k].pos) <= 0, 1);
    }
}

static long count_from_released(oq_spool_t *sp);

static void append_n(oq_spool_t *sp, size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        oq_order_t o;
        make_order(&o, i);
        assert_int_equal(oq_spool_append(sp, &o, 1), 0);
    }
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/*---- CRC-32C ----*/

/* Bit-at-a-time reference, independent of the code under test. */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

/* Returns the number of failed checks (so the forced-software child can report). */
static int crc_checks(void)
{
    int bad = 0;
    unsigned char buf[300];
    /* RFC 3720 (iSCSI) B.4 vectors and the classic check value */
    bad += oq__crc32c(0, "123456789", 9) != 0xE3069283u;
    memset(buf, 0, 32);
    bad += oq__crc32c(0, buf, 32) != 0x8A9136AAu;
    memset(buf, 0xff, 32);
    bad += oq__crc32c(0, buf, 32) != 0x62A8AB43u;
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    bad += oq__crc32c(0, buf, 32) != 0x46DD794Eu;
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    bad += oq__crc32c(0, buf, 32) != 0x113FDB5Cu;
    bad += oq__crc32c(0, "", 0) != 0;
    /* every length and alignment against the reference; chaining */
    srand(7);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)rand();
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof(buf); n += 7) {
            uint32_t want = crc_ref(buf + off, n);
            bad += oq__crc32c(0, buf + off, n) != want;
            size_t h = n / 3;
            bad += oq__crc32c(oq__crc32c(0, buf + off, h), buf + off + h, n - h) != want;
        }
    return bad;
}

static void test_crc32c_vectors(void **state)
{
    (void)state;
    assert_int_equal(crc_checks(), 0);
    /* the table fallback too: a child process with the hardware path switched off */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(g_self, g_self, "--crc-soft", (char *)NULL);
        _exit(99);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/*---- basics ----*/

static void test_append_scan_round_trip(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 50);
    const char *ev = "{\"event\":\"cancel\",\"order_id\":\"X\"}";
    assert_int_equal(oq_spool_append_event(sp, ev, strlen(ev)), 0);
    oq_order_t batch[20];
    for (int i = 0; i < 20; i++)
        make_order(&batch[i], 50 + (size_t)i);
    assert_int_equal(oq_spool_append(sp, batch, 20), 0);
    assert_int_equal(oq_spool_append_event(sp, "", 0), CM_EINVAL);

    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 71);
    check_orders(c, 0, 50);
    assert_int_equal(c->recs[50].type, OQ_REC_EVENT);
    assert_string_equal(c->recs[50].event, ev);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(c->recs[51 + i].type, OQ_REC_ORDER);
        assert_string_equal(c->recs[51 + i].order->order_id, batch[i].order_id);
    }
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.appended_records, 71);
    assert_int_equal(st.segments, 1);
    assert_int_equal(oq_pos_cmp(st.end, c->recs[70].next), 0);
    assert_int_equal(st.unreleased_bytes, st.end.off);
    /* scan from the middle, and stop early */
    collect_t *c2 = calloc(1, sizeof(*c2));
    c2->stop_after = 3;
    assert_int_equal(oq_spool_scan(sp, c->recs[10].pos, collect_cb, c2), 3);
    assert_string_equal(c2->recs[0].order->order_id, c->recs[10].order->order_id);
    free(c2);
    free(c);
    assert_int_equal(oq_spool_sync(sp), 0);
    oq_spool_close(sp);

    /* a second writer on the same directory is refused */
    sp = open_spool(f->dir, 0, 0);
    oq_spool_opts_t o = {.dir = f->dir};
    oq_spool_t *sp2 = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp2, &o, err, sizeof(err)), CM_EBUSY);
    assert_null(sp2);
    /* a reader is not */
    o.read_only = true;
    assert_int_equal(oq_spool_open(&sp2, &o, err, sizeof(err)), 0);
    c = scan_all(sp2, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 71);
    free(c);
    assert_int_equal(oq_spool_append(sp2, batch, 1), CM_EINVAL);
    oq_spool_close(sp2);
    oq_spool_close(sp);
}

/* The gateway's batch: orders that do not lie in one array, in the pointers'
 * order, with one write; more than the stack buffer holds takes the heap. */
static void test_append_batch_pointers(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    enum { N = 300 }; /* ~70 KiB of records, past the 32 KiB stack buffer */
    oq_order_t *orders = calloc(N, sizeof(*orders));
    const oq_order_t *ptrs[N];
    for (size_t i = 0; i < N; i++) {
        make_order(&orders[i], i);
        ptrs[i] = &orders[N - 1 - i]; /* the records follow ptrs, not the array */
    }
    size_t kept = 99;
    assert_int_equal(oq_spool_append_batch(sp, ptrs, 0, &kept, NULL), 0);
    assert_int_equal(kept, 0);
    assert_int_equal(oq_spool_append_batch(sp, ptrs, N, &kept, NULL), 0);
    assert_int_equal(kept, N);
    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, N);
    for (size_t i = 0; i < N; i++)
        assert_string_equal(c->recs[i].order->order_id, orders[N - 1 - i].order_id);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.appended_records, N);
    /* one bad order refuses the whole batch, nothing written */
    orders[5].qty = 0;
    assert_int_equal(oq_spool_append_batch(sp, ptrs, N, &kept, NULL), CM_EINVAL);
    assert_int_equal(kept, 0);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.appended_records, N);
    free(c);
    free(orders);
    oq_spool_close(sp);
}

/* Near the cap a batch is not refused whole: the orders that fit are written
 * (and accepted by the caller), only the rest are refused (review s9 #1). */
static void test_batch_near_cap_keeps_what_fits(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 4096);
    enum { N = 40 }; /* ~10 KiB of records against a 4 KiB cap */
    oq_order_t orders[N];
    const oq_order_t *ptrs[N];
    for (size_t i = 0; i < N; i++) {
        make_order(&orders[i], i);
        ptrs[i] = &orders[i];
    }
    size_t kept = 0;
    assert_int_equal(oq_spool_append_batch(sp, ptrs, N, &kept, NULL), CM_EBUSY);
    assert_true(kept > 5 && kept < N);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.unreleased_bytes <= 4096);
    assert_int_equal(st.appended_records, kept);
    /* the next one did not fit: the cap is filled to the record */
    size_t more = 99;
    assert_int_equal(oq_spool_append_batch(sp, ptrs + kept, 1, &more, NULL), CM_EBUSY);
    assert_int_equal(more, 0);
    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, (long)kept);
    check_orders(c, 0, kept);
    free(c);
    oq_spool_close(sp);
}

/* A batch write cut short (a full disk): the whole records that reached the
 * file are kept and reported, the torn tail is cut; if the cut fails too, the
 * spool refuses appends and the next open drops the torn tail. Either way what
 * a restart replays is exactly the orders reported kept (review s9 #9: with the
 * batch refused whole, a failed cut left complete records of orders answered
 * 503, replayed as accepted). */
static void short_batch_write(const char *dir, bool cut_fails)
{
    oq_spool_t *sp = open_spool(dir, 0, 0);
    append_n(sp, 0, 3);
    enum { N = 20 };
    oq_order_t orders[N];
    const oq_order_t *ptrs[N];
    for (size_t i = 0; i < N; i++) {
        make_order(&orders[i], 3 + i);
        ptrs[i] = &orders[i];
    }
    oq__spool_short_next_write(sp, 2000, cut_fails); /* ~14 of 20 records, the 15th torn */
    size_t kept = 0;
    assert_int_equal(oq_spool_append_batch(sp, ptrs, N, &kept, NULL), CM_EIO);
    assert_true(kept > 2 && kept < N);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.appended_records, 3 + kept);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, (long)(3 + kept));
    check_orders(c, 0, 3 + kept);
    free(c);
    size_t more = 0;
    if (cut_fails) { /* the torn tail is still there: nothing may follow it */
        assert_int_equal(oq_spool_append_batch(sp, ptrs + kept, 2, &more, NULL), CM_EIO);
        assert_int_equal(more, 0);
    } else {
        assert_int_equal(oq_spool_append_batch(sp, ptrs + kept, 2, &more, NULL), 0);
        assert_int_equal(more, 2);
    }
    oq_spool_close(sp);
    sp = open_spool(dir, 0, 0); /* the restart: what it replays */
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, (long)(3 + kept + more));
    check_orders(c, 0, 3 + kept + more);
    free(c);
    oq_spool_close(sp);
}

static void test_short_batch_write_kept_records(void **state)
{
    fixture_t *f = *state;
    short_batch_write(f->dir, false);
}

static void test_short_batch_write_cut_fails(void **state)
{
    fixture_t *f = *state;
    short_batch_write(f->dir, true);
}

/*---- recovery ----*/

static void test_torn_tail_garbage(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 30);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);

    char path[512];
    spool_seg_path(f->dir, st.end.seg, path, sizeof(path));
    assert_int_equal(file_size(path), (off_t)st.end.off);
    int fd = open(path, O_WRONLY | O_APPEND);
    const char garbage[] = "\x40\x00\x00\x00garbage that is not a record";
    assert_int_equal(write(fd, garbage, sizeof(garbage)), sizeof(garbage));
    close(fd);

    sp = open_spool(f->dir, 0, 0);
    assert_int_equal(file_size(path), (off_t)st.end.off); /* the tail was cut */
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 30);
    check_orders(c, 0, 30);
    free(c);
    append_n(sp, 30, 5); /* appends go on after the cut */
    oq_spool_close(sp);
    sp = open_spool(f->dir, 0, 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 35);
    check_orders(c, 0, 35);
    free(c);
    oq_spool_close(sp);
}

static void test_torn_tail_mid_record_and_bitflip(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 20);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    oq_pos_t last = c->recs[19].pos, end = c->recs[19].next;
    free(c);
    oq_spool_close(sp);

    char path[512];
    spool_seg_path(f->dir, end.seg, path, sizeof(path));
    /* a write torn in the middle of the last record */
    assert_int_equal(truncate(path, (off_t)end.off - 9), 0);
    sp = open_spool(f->dir, 0, 0);
    assert_int_equal(file_size(path), (off_t)last.off);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 19);
    check_orders(c, 0, 19);
    oq_pos_t rec17 = c->recs[17].pos;
    free(c);
    oq_spool_close(sp);

    /* one flipped payload byte in record 17: records 17.. are cut */
    int fd = open(path, O_RDWR);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, (off_t)rec17.off + 20), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)rec17.off + 20), 1);
    close(fd);
    sp = open_spool(f->dir, 0, 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 17);
    free(c);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.appended_records, 17);
    assert_int_equal(st.end.off, rec17.off);
    oq_spool_close(sp);
}

static void test_corrupt_older_segment_is_an_error(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 2000, 0); /* ~10 records per segment */
    append_n(sp, 0, 60);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.segments >= 4);
    oq_spool_close(sp);

    char path[512];
    spool_seg_path(f->dir, 2, path, sizeof(path));
    off_t size = file_size(path);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b = 0;
    assert_int_equal(pread(fd, &b, 1, 300), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, 300), 1);
    close(fd);

    oq_spool_opts_t o = {.dir = f->dir};
    oq_spool_t *sp2 = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp2, &o, err, sizeof(err)), CM_ECORRUPT);
    assert_null(sp2);
    assert_non_null(strstr(err, "spool-0000000000000002.log"));
    assert_non_null(strstr(err, "not the last segment"));
    assert_int_equal(file_size(path), size); /* nothing was cut */
}

/*
 * A power loss after a failed fdatasync of a rolled segment (the process died
 * before it cut the unconfirmed records) can keep the file's size while its
 * last pages never reached the disk: they read back as zeros. That segment's
 * tail is a tear, not corruption: the open cuts it and keeps the records of
 * the segments after it (flashgate-sim --seed 7417 --fsync-only).
 */
static void test_zeroed_tail_of_older_segment_is_a_tear(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 2000, 0); /* ~10 records per segment */
    append_n(sp, 0, 40);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 40);
    /* the last two records of segment 2 come back as zeros, the size kept */
    size_t first2 = 0, end2 = 0;
    while (c->recs[first2].pos.seg < 2)
        first2++;
    for (end2 = first2; c->recs[end2].pos.seg == 2; end2++)
        ;
    assert_true(end2 - first2 >= 4);
    oq_pos_t cut = c->recs[end2 - 2].pos;
    size_t after = (size_t)n - end2; /* records in the later segments */
    assert_true(after > 0);
    free(c);
    oq_spool_close(sp);

    char path[512];
    spool_seg_path(f->dir, 2, path, sizeof(path));
    off_t size = file_size(path);
    spool_zero_range(f->dir, 2, cut.off, (uint64_t)size);

    sp = open_spool(f->dir, 2000, 0);
    assert_int_equal(file_size(path), (off_t)cut.off); /* the zeros were cut */
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 40 - 2);
    check_orders(c, 0, end2 - 2);
    for (size_t k = 0; k < after; k++) {
        oq_order_t want;
        make_order(&want, end2 + k);
        assert_string_equal(c->recs[end2 - 2 + k].order->order_id, want.order_id);
    }
    free(c);
    oq_spool_close(sp);
}

/*---- a failed fdatasync in durability write: the pages written again ----*/

/* The real file calls, with fdatasync failing `fs_fail_syncs` times and every
 * pwrite counted (its offset kept): after a failed fdatasync the kernel may
 * drop the dirty pages, and a later fdatasync "succeeds" without them, so the
 * spool must write those bytes again (pwrite) before it trusts one. */
static oq_fs_ops_t fs_faulty;
static int fs_fail_syncs, fs_syncs;
static int fs_pwrites;
static off_t fs_first_pwrite_off;

static int faulty_fdatasync(int fd)
{
    fs_syncs++;
    if (fs_fail_syncs > 0) {
        fs_fail_syncs--;
        errno = EIO;
        return -1;
    }
    return oq_fs_posix()->fdatasync(fd);
}

static ssize_t faulty_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (fs_pwrites++ == 0)
        fs_first_pwrite_off = off;
    return oq_fs_posix()->pwrite(fd, buf, n, off);
}

static oq_spool_t *open_faulty(const char *dir, uint64_t seg_bytes, bool stepped)
{
    fs_faulty = *oq_fs_posix();
    fs_faulty.fdatasync = faulty_fdatasync;
    fs_faulty.pwrite = faulty_pwrite;
    fs_fail_syncs = fs_syncs = fs_pwrites = 0;
    fs_first_pwrite_off = -1;
    oq_spool_opts_t o = {.dir = dir, .segment_bytes = seg_bytes, .fs = &fs_faulty,
                         .stepped = stepped};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    int rc = oq_spool_open(&sp, &o, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "open: %s (%s)\n", cm_strerror(rc), err);
    assert_int_equal(rc, 0);
    return sp;
}

/*
 * The preparer's flush of a rolled segment fails, and so does the rewrite
 * that follows. Its next try must write the segment again too: a plain
 * fdatasync there reports success on the pages the kernel dropped, and a
 * power loss then leaves zeros in the middle of the spool
 * (flashgate-sim --seed 1304 found it).
 */
static void test_write_flush_retry_rewrites(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_faulty(f->dir, 2000, true);
    append_n(sp, 0, 20); /* one roll: segment 1 is to be flushed */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.segments, 2);
    fs_fail_syncs = 2; /* the flush, then the rewrite's fdatasync */
    fs_pwrites = fs_syncs = 0;
    for (int i = 0; i < 10 && oq_spool_step(sp); i++)
        ;
    assert_int_equal(fs_syncs, 2);
    assert_int_equal(fs_pwrites > 0, 1);
    int first_round = fs_pwrites;
    for (int i = 0; i < 10 && oq_spool_step(sp); i++) /* the next try, a second later */
        ;
    assert_int_equal(fs_syncs, 3);
    assert_true(fs_pwrites > first_round); /* written again before the fdatasync */
    oq_spool_stats(sp, &st);
    assert_int_equal(st.segment_flushes, 1);
    oq_spool_close(sp);
}

/*
 * An earlier process's fdatasync failed (at its recovery's cut, or in its
 * preparer) and it died before writing the pages again. In durability write
 * nothing else would write them, so the open writes the segments that are not
 * wholly released again, from the start of the release point's segment (the
 * memory inventory's replay reads below the point), and fdatasyncs them
 * (flashgate-sim --seed 1710 found it).
 */
static void test_write_reopen_rewrites_from_segment_start(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 10);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 10);
    assert_int_equal(oq_spool_release(sp, c->recs[5].pos), 0);
    oq_pos_t end = c->recs[9].next;
    free(c);
    oq_spool_close(sp);

    sp = open_faulty(f->dir, 0, true);
    assert_int_equal(fs_first_pwrite_off, 0);
    assert_true(fs_syncs >= 1);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 10);
    check_orders(c, 0, 10);
    free(c);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(oq_pos_cmp(st.end, end), 0);
    oq_spool_close(sp);
    /* a failed fdatasync there refuses the open, as in durability fsync */
    fs_faulty.fdatasync = faulty_fdatasync;
    oq_spool_opts_t o = {.dir = f->dir, .fs = &fs_faulty, .stepped = true};
    fs_fail_syncs = 1;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), CM_EIO);
    assert_non_null(strstr(err, "cannot fdatasync"));
}

/* Durability write: the released segments kept for the memory inventory's
 * replay are written again at the open too (each segment at least one pwrite):
 * a failed fdatasync may have dropped their pages, and a replay that met them
 * as zeros after a power loss would count fewer units sold. */
static void test_write_reopen_rewrites_kept_segments(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 1500, 0);
    append_n(sp, 0, 60);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 60);
    oq_pos_t mid = c->recs[39].next;
    free(c);
    assert_true(mid.seg > 2);
    assert_int_equal(oq_spool_release_keep(sp, mid), 0);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);

    sp = open_faulty(f->dir, 1500, true);
    assert_true(fs_pwrites >= (int)st.segments);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 60);
    check_orders(c, 0, 60);
    free(c);
    oq_spool_close(sp);
}

/*
 * Durability write: a power loss after a failed fdatasync zeroes records
 * below the release point while the file keeps its size. The relay is past
 * them, but the memory inventory's replay reads from {0,0}: recovery checks
 * below the point too and cuts there, so the replay never meets the zeros
 * (flashgate-sim --seed 10731 found it).
 */
static void test_write_zeroed_below_release_point(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 10);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 10);
    oq_pos_t hole = c->recs[2].pos, hole_end = c->recs[4].pos;
    assert_int_equal(oq_spool_release(sp, c->recs[6].pos), 0);
    free(c);
    oq_spool_close(sp);

    spool_zero_range(f->dir, hole.seg, hole.off, hole_end.off);

    sp = open_spool(f->dir, 0, 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 2); /* cut at the zeros: what followed them is lost */
    check_orders(c, 0, 2);
    free(c);
    append_n(sp, 100, 1); /* and new orders reach the relay */
    assert_int_equal(count_from_released(sp), 1);
    oq_spool_close(sp);
}

/* Durability fsync: damage below the release point never cuts the records
 * above it, which were each confirmed to a client after their fdatasync. */
static void test_fsync_damage_below_point_keeps_confirmed(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 10);
    assert_int_equal(oq_spool_sync(sp), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 10);
    oq_pos_t hole = c->recs[2].pos, hole_end = c->recs[4].pos;
    assert_int_equal(oq_spool_release(sp, c->recs[6].pos), 0);
    free(c);
    oq_spool_close(sp);

    spool_zero_range(f->dir, hole.seg, hole.off, hole_end.off);

    sp = NULL;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 4); /* the four unreleased orders, all kept */
    check_orders(c, 6, 4);
    free(c);
    oq_spool_close(sp);
}

/*---- a power loss in write durability: the release point past the data ----*/

/*
 * In durability `write` no segment is ever fsynced, but the release point is
 * (write_released). A power loss can therefore keep a release point that lies
 * past the data that came back: the tail of the released segment is lost, or
 * the whole file is empty. Those records had been relayed, so losing them is
 * fine; the orders accepted after the restart are not: every one of them must
 * reach the relay, which reads from the release point on and then from where
 * its last scan ended, and a restart before their release replays them.
 */
static void relay_sees_orders_after_reopen(const char *dir, uint64_t seg_bytes)
{
    oq_spool_t *sp = open_spool(dir, seg_bytes, 0);
    oq_spool_stats_t st;
    append_n(sp, 1000, 3);
    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n); /* the relay's first scan */
    assert_int_equal(n, 3);
    check_orders(c, 1000, 3);
    oq_pos_t next = c->recs[2].next;
    free(c);
    append_n(sp, 1003, 4); /* then it reads on from where that scan stopped */
    c = scan_all(sp, next, &n);
    assert_int_equal(n, 4);
    check_orders(c, 1003, 4);
    free(c);
    oq_spool_stats(sp, &st);
    assert_true(oq_pos_cmp(st.released, st.end) < 0);
    oq_spool_close(sp);

    /* a restart before the relay released them sends all seven again */
    sp = open_spool(dir, seg_bytes, 0);
    c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 7);
    check_orders(c, 1000, 7);
    oq_pos_t end = c->recs[6].next;
    free(c);
    assert_int_equal(oq_spool_release(sp, end), 0);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.unreleased_bytes, 0);
    assert_int_equal(st.segments, 1); /* the short segment went with the release */
    oq_spool_close(sp);
    sp = open_spool(dir, seg_bytes, 0);
    assert_int_equal(count_from_released(sp), 0);
    oq_spool_close(sp);
}

static void test_power_loss_below_release_point(void **state)
{
    fixture_t *f = *state;
    char path[512];
    /* 1. the released segment comes back empty (ext4 after a crash) */
    oq_spool_t *sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 4);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(oq_spool_release(sp, st.end), 0);
    oq_spool_close(sp);
    assert_int_equal(truncate(spool_seg_path(f->dir, st.end.seg, path, sizeof(path)), 0), 0);
    relay_sees_orders_after_reopen(f->dir, 0);

    /* 2. it comes back cut in the middle of a record below the release point: nothing
     * may be written after those torn bytes, nor read from the middle of them */
    sp = open_spool(f->dir, 0, 0);
    append_n(sp, 0, 6);
    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 6);
    oq_pos_t end = c->recs[5].next, cut = c->recs[4].pos; /* 9 bytes into record 4 */
    free(c);
    assert_int_equal(oq_spool_release(sp, end), 0);
    oq_spool_close(sp);
    assert_int_equal(
        truncate(spool_seg_path(f->dir, cut.seg, path, sizeof(path)), (off_t)cut.off + 9), 0);
    relay_sees_orders_after_reopen(f->dir, 0);

    /* 3. older segments kept (oq_spool_release_keep) and the released one empty: it
     * looks like a spare made ahead of a roll and is dropped at open, so the release
     * point's segment is past the last one on disk */
    sp = open_spool(f->dir, 1500, 0);
    append_n(sp, 0, 30);
    oq_spool_stats(sp, &st);
    assert_true(st.segments >= 3);
    assert_int_equal(oq_spool_release_keep(sp, st.end), 0);
    oq_spool_close(sp);
    assert_int_equal(truncate(spool_seg_path(f->dir, st.end.seg, path, sizeof(path)), 0), 0);
    relay_sees_orders_after_reopen(f->dir, 1500);
}

/*---- space cap, release, rolling ----*/

static void test_space_cap(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 0, 4096);
    size_t ok = 0;
    int rc = 0;
    oq_order_t o;
    while (ok < 1000) {
        make_order(&o, ok);
        if ((rc = oq_spool_append(sp, &o, 1)) != 0)
            break;
        ok++;
    }
    assert_int_equal(rc, CM_EBUSY);
    assert_true(ok > 5 && ok < 40);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.unreleased_bytes <= 4096);
    char path[512];
    spool_seg_path(f->dir, st.end.seg, path, sizeof(path));
    off_t before = file_size(path);
    assert_int_equal(oq_spool_append(sp, &o, 1), CM_EBUSY); /* writes nothing */
    assert_int_equal(oq_spool_append_event(sp, "{}", 2), 0); /* a small one still fits */
    assert_int_equal(file_size(path), before + 14);
    oq_spool_stats(sp, &st);
    /* releasing makes room again */
    assert_int_equal(oq_spool_release(sp, st.end), 0);
    oq_spool_stats_t st2;
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.unreleased_bytes, 0);
    assert_int_equal(oq_spool_append(sp, &o, 1), 0);
    oq_spool_close(sp);
}

static void test_release_and_rolling(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 1500, 0);
    append_n(sp, 0, 100);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.segments >= 10);
    uint64_t total = st.unreleased_bytes;
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 100);
    check_orders(c, 0, 100);
    /* every segment stays within segment_bytes */
    for (uint64_t s = 1; s <= st.end.seg; s++) {
        char p[512];
        assert_true(file_size(spool_seg_path(f->dir, s, p, sizeof(p))) <= 1500);
    }
    oq_pos_t mid = c->recs[49].next;
    uint64_t mid_bytes = 0;
    for (int i = 0; i < 50; i++)
        mid_bytes += c->recs[i].next.off - c->recs[i].pos.off;
    assert_int_equal(oq_spool_release(sp, mid), 0);
    assert_int_equal(oq_pos_cmp(oq_spool_released(sp), mid), 0);
    oq_spool_stats_t st2;
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.unreleased_bytes, total - mid_bytes);
    assert_true(st2.segments < st.segments);
    /* wholly released segments are gone, the others stay */
    char p[512];
    for (uint64_t s = 1; s < mid.seg; s++)
        assert_int_equal(file_size(spool_seg_path(f->dir, s, p, sizeof(p))), -1);
    assert_true(file_size(spool_seg_path(f->dir, mid.seg, p, sizeof(p))) > 0);
    /* the release point is persisted as text */
    snprintf(p, sizeof(p), "%s/released", f->dir);
    FILE *rf = fopen(p, "r");
    assert_non_null(rf);
    unsigned long long rs, ro;
    assert_int_equal(fscanf(rf, "%llx %llu", &rs, &ro), 2);
    fclose(rf);
    assert_int_equal(rs, mid.seg);
    assert_int_equal(ro, mid.off);
    /* never backwards; never past the end */
    assert_int_equal(oq_spool_release(sp, c->recs[10].next), 0);
    assert_int_equal(oq_pos_cmp(oq_spool_released(sp), mid), 0);
    assert_int_equal(oq_spool_release(sp, (oq_pos_t){st.end.seg + 5, 0}), CM_EINVAL);
    /* scanning from the release point gives the rest */
    collect_t *c2 = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 50);
    check_orders(c2, 50, 50);
    free(c2);
    /* scanning from {0,0} skips deleted segments */
    c2 = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_true(n >= 50 && n < 100);
    free(c2);
    oq_spool_close(sp);

    /* reopen: the release point holds, appends continue in order */
    sp = open_spool(f->dir, 1500, 0);
    assert_int_equal(oq_pos_cmp(oq_spool_released(sp), mid), 0);
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.unreleased_bytes, total - mid_bytes);
    assert_int_equal(st2.appended_records, 50);
    append_n(sp, 100, 10);
    c2 = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 60);
    check_orders(c2, 50, 60);
    /* release everything: only the current segment is left */
    oq_spool_stats(sp, &st2);
    assert_int_equal(oq_spool_release(sp, st2.end), 0);
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.unreleased_bytes, 0);
    assert_int_equal(st2.segments, 1);
    free(c2);
    free(c);
    oq_spool_close(sp);
    sp = open_spool(f->dir, 1500, 0);
    c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 0);
    free(c);
    oq_spool_close(sp);
}

/*
 * A release whose point could not be written (a full disk) deletes the
 * segments wholly before it first (oq_spool_release); a crash before the point
 * is written leaves on disk a point older than segments that are gone. The
 * next open must take that: no error, the missing segments skipped, every
 * record of the segments left read again from their start (the records not
 * released among them), and appends and releases go on.
 */
static void test_point_older_than_deleted_segments(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 1500, 0);
    append_n(sp, 0, 100);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 100);
    oq_pos_t p1 = c->recs[9].next, p2 = c->recs[69].next;
    assert_true(p2.seg > p1.seg + 1);
    assert_int_equal(oq_spool_release(sp, p1), 0);
    oq_spool_close(sp);
    /* the segments wholly before p2 deleted, the point on disk still p1 */
    char path[512];
    for (uint64_t s = p1.seg; s < p2.seg; s++)
        assert_int_equal(unlink(spool_seg_path(f->dir, s, path, sizeof(path))), 0);
    size_t first = 0; /* the first record left: the first one of segment p2.seg */
    while (c->recs[first].pos.seg < p2.seg)
        first++;

    sp = open_spool(f->dir, 1500, 0);
    assert_int_equal(oq_pos_cmp(oq_spool_released(sp), p1), 0);
    collect_t *c2 = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, (long)(100 - first));
    check_orders(c2, first, 100 - first);
    free(c2);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    uint64_t left = 0;
    for (size_t i = first; i < 100; i++)
        left += c->recs[i].next.off - c->recs[i].pos.off;
    assert_int_equal(st.unreleased_bytes, left);
    append_n(sp, 100, 5);
    c2 = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, (long)(105 - first));
    check_orders(c2, first, 105 - first);
    free(c2);
    oq_spool_stats(sp, &st);
    assert_int_equal(oq_spool_release(sp, st.end), 0);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.unreleased_bytes, 0);
    assert_int_equal(st.segments, 1);
    free(c);
    oq_spool_close(sp);
}

static void test_release_keep(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 1500, 0);
    append_n(sp, 0, 60);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 60);
    oq_spool_stats_t st, st2;
    oq_spool_stats(sp, &st);
    oq_pos_t mid = c->recs[39].next;
    assert_true(mid.seg > 2);
    assert_int_equal(oq_spool_release_keep(sp, mid), 0);
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.segments, st.segments); /* nothing deleted */
    assert_true(st2.unreleased_bytes < st.unreleased_bytes);
    free(c);
    oq_spool_close(sp);

    sp = open_spool(f->dir, 1500, 0);
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.segments, st.segments); /* nor on open */
    assert_int_equal(oq_pos_cmp(st2.released, mid), 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 60); /* the history is still readable */
    check_orders(c, 0, 60);
    free(c);
    c = scan_all(sp, oq_spool_released(sp), &n);
    assert_int_equal(n, 20);
    check_orders(c, 40, 20);
    /* a plain release deletes what the kept release left */
    assert_int_equal(oq_spool_release(sp, c->recs[0].next), 0);
    oq_spool_stats(sp, &st2);
    assert_true(st2.segments < st.segments);
    char p[512];
    assert_int_equal(file_size(spool_seg_path(f->dir, 1, p, sizeof(p))), -1);
    free(c);
    oq_spool_close(sp);
}

/*---- group commit ----*/

typedef struct {
    oq_spool_t *sp;
    int base;
    int n;
    int failures;
} sync_arg_t;

static void *sync_worker(void *arg)
{
    sync_arg_t *a = arg;
    for (int i = 0; i < a->n; i++) {
        oq_order_t o;
        make_order(&o, (size_t)(a->base + i));
        if (oq_spool_append(a->sp, &o, 1) != 0 || oq_spool_sync(a->sp) != 0)
            a->failures++;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 4000, 0); /* rolls while syncing */
    enum { T = 4, N = 50 };
    pthread_t th[T];
    sync_arg_t a[T];
    uint64_t t0 = cm_mono_us();
    for (int t = 0; t < T; t++) {
        a[t] = (sync_arg_t){sp, t * 1000, N, 0};
        pthread_create(&th[t], NULL, sync_worker, &a[t]);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(a[t].failures, 0);
    }
    uint64_t us = cm_mono_us() - t0;
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.syncs, T * N);
    assert_true(st.fsyncs >= 1 && st.fsyncs <= st.syncs);
    printf("# group commit: %d threads x %d append+sync: %llu syncs, %llu fdatasync rounds, "
           "%.0f durable appends/s\n",
           T, N, (unsigned long long)st.syncs, (unsigned long long)st.fsyncs,
           (double)(T * N) * 1e6 / (double)(us ? us : 1));
    /* nothing to do: no fdatasync at all */
    uint64_t before = st.fsyncs;
    assert_int_equal(oq_spool_sync(sp), 0);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.fsyncs, before);
    oq_spool_close(sp);
}

/*---- kill -9: answered => durable ----*/

typedef struct {
    const char *ids; /* "ID\n" lines */
    size_t nids, found;
} match_t;

static int match_cb(const oq_rec_t *rec, void *ctx)
{
    match_t *m = ctx;
    if (rec->order && m->found < m->nids &&
        memcmp(rec->order->order_id, m->ids + m->found * (CM_ID_TEXT_LEN + 1), CM_ID_TEXT_LEN) ==
            0)
        m->found++;
    return 0;
}

static void test_kill9_answered_orders_survive(void **state)
{
    fixture_t *f = *state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        oq_spool_opts_t o = {.dir = f->dir, .segment_bytes = 64 * 1024};
        oq_spool_t *sp;
        if (oq_spool_open(&sp, &o, NULL, 0) != 0)
            _exit(3);
        cm_id_gen_t g;
        cm_id_gen_init(&g, 9);
        for (;;) { /* until SIGKILL */
            oq_order_t ord;
            make_order(&ord, 0);
            cm_id_format(cm_id_next(&g, cm_wall_ms()), ord.order_id);
            if (oq_spool_append(sp, &ord, 1) != 0)
                _exit(4);
            /* "answer 202": only now does the parent learn of the id */
            char line[CM_ID_TEXT_LEN + 1];
            memcpy(line, ord.order_id, CM_ID_TEXT_LEN);
            line[CM_ID_TEXT_LEN] = '\n';
            if (write(pfd[1], line, sizeof(line)) != (ssize_t)sizeof(line))
                _exit(5);
        }
    }
    close(pfd[1]);
    /* read while the child runs (a full pipe would stall it), kill it ~20 ms
     * after its first answer (a sanitizer's fork can take longer to start) */
    size_t cap = 1 << 20, len = 0;
    char *ids = malloc(cap);
    uint64_t t0 = cm_mono_ms(), first = 0;
    int flags = fcntl(pfd[0], F_GETFL);
    fcntl(pfd[0], F_SETFL, flags | O_NONBLOCK);
    bool killed = false;
    for (;;) {
        uint64_t now = cm_mono_ms();
        if (first == 0 && len > 0)
            first = now;
        if (!killed && ((first && now - first >= 20) || now - t0 >= 10000)) {
            kill(pid, SIGKILL);
            killed = true;
        }
        if (len == cap) {
            cap *= 2;
            ids = realloc(ids, cap);
        }
        ssize_t r = read(pfd[0], ids + len, cap - len);
        if (r > 0)
            len += (size_t)r;
        else if (r == 0)
            break;
        else if (errno == EAGAIN)
            usleep(200);
    }
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    size_t nids = len / (CM_ID_TEXT_LEN + 1); /* a torn last line was not an answer */
    assert_true(nids > 10);

    oq_spool_t *sp = open_spool(f->dir, 64 * 1024, 0);
    match_t m = {ids, nids, 0};
    long n = oq_spool_scan(sp, (oq_pos_t){0, 0}, match_cb, &m);
    assert_true(n >= (long)nids);
    /* ids come from one thread in order, so the spool holds them in the same order */
    assert_int_equal(m.found, nids);
    printf("# kill -9 after ~20 ms: %zu orders answered, %ld in the spool, all answered found\n",
           nids, n);
    free(ids);
    oq_spool_close(sp);
}

/*---- the flashgate-spool tool (next to the test binary's directory) ----*/

static int run_tool(const char *args, char *out, size_t cap, size_t *nlines)
{
    char tool[4200], cmd[8192];
    snprintf(tool, sizeof(tool), "%s", g_self);
    char *slash = strrchr(tool, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    slash = strrchr(tool, '/');
    snprintf(slash ? slash : tool, sizeof(tool) - (size_t)(slash ? slash - tool : 0),
             "%sflashgate-spool", slash ? "/" : "");
    if (access(tool, X_OK) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "%s %s 2>/dev/null", tool, args);
    FILE *p = popen(cmd, "r");
    size_t len = 0;
    *nlines = 0;
    char line[4096];
    while (fgets(line, sizeof(line), p)) {
        (*nlines)++;
        size_t l = strlen(line);
        if (len + l < cap) {
            memcpy(out + len, line, l);
            len += l;
        }
    }
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_tool_dump_and_stats(void **state)
{
    fixture_t *f = *state;
    char out[65536], args[1024], data_dir[256];
    size_t nl;
    snprintf(data_dir, sizeof(data_dir), "%s", f->dir);
    *strrchr(data_dir, '/') = '\0'; /* the tool adds /spool */
    snprintf(args, sizeof(args), "stats --data-dir %s", data_dir);
    int rc = run_tool(args, out, sizeof(out), &nl);
    if (rc == -1)
        skip(); /* the tool is not built next to this test */
    assert_int_equal(rc, 1); /* no spool yet */

    oq_spool_t *sp = open_spool(f->dir, 1200, 0);
    append_n(sp, 0, 20);
    assert_int_equal(oq_spool_append_event(sp, "{\"type\":\"cancel\"}", 17), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(oq_spool_release(sp, c->recs[7].next), 0);
    /* the gateway keeps the spool open while the tool reads it */
    snprintf(args, sizeof(args), "dump --data-dir %s", data_dir);
    assert_int_equal(run_tool(args, out, sizeof(out), &nl), 0);
    assert_int_equal(nl, 13);
    char want[256];
    snprintf(want, sizeof(want), "\"order_id\":\"%s\"", c->recs[8].order->order_id);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "\"pos\":\"%llu:%llu\"}", (unsigned long long)c->recs[8].pos.seg,
             (unsigned long long)c->recs[8].pos.off);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "{\"event\":{\"type\":\"cancel\"},\"pos\":"));
    snprintf(args, sizeof(args), "dump --from-start --data-dir %s", data_dir);
    assert_int_equal(run_tool(args, out, sizeof(out), &nl), 0);
    assert_true(nl > 13 && nl <= 21); /* wholly released segments are gone */
    snprintf(args, sizeof(args), "stats --data-dir %s", data_dir);
    assert_int_equal(run_tool(args, out, sizeof(out), &nl), 0);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    snprintf(want, sizeof(want), "\"unreleased_bytes\":%llu,",
             (unsigned long long)st.unreleased_bytes);
    assert_non_null(strstr(out, want));
    free(c);
    oq_spool_close(sp);

    /* usage errors */
    assert_int_equal(run_tool("", out, sizeof(out), &nl), 2);
    assert_int_equal(run_tool("frobnicate", out, sizeof(out), &nl), 2);
    assert_int_equal(run_tool("stats --bogus", out, sizeof(out), &nl), 2);
    assert_int_equal(run_tool("--help", out, sizeof(out), &nl), 0);
    /* corrupt first segment (not the last): exit 1 */
    char path[512];
    spool_seg_path(f->dir, st.end.seg - 1, path, sizeof(path));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff\xff", 3, 4), 3);
    close(fd);
    snprintf(args, sizeof(args), "dump --data-dir %s", data_dir);
    assert_int_equal(run_tool(args, out, sizeof(out), &nl), 1);
}

/*---- throughput (printed, not asserted) ----*/

/*---- the roll is a swap; fsync durability shows readers only synced records ----*/

static bool wait_file(const char *path, struct stat *st)
{
    for (int i = 0; i < 5000; i++) { /* up to 5 s on a loaded machine */
        if (stat(path, st) == 0)
            return true;
        usleep(1000);
    }
    return false;
}

static void test_roll_swaps_in_a_spare(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 4096, 0);
    for (int roll = 0; roll < 4; roll++) {
        oq_spool_stats_t st;
        oq_spool_stats(sp, &st);
        for (int w = 0; w < 5000 && !st.spare_ready; w++) { /* up to 5 s on a loaded machine */
            usleep(1000);
            oq_spool_stats(sp, &st);
        }
        assert_true(st.spare_ready);
        /* the next segment exists, created off the append path, before it is needed */
        char p[512];
        struct stat spare, now;
        assert_true(wait_file(spool_seg_path(f->dir, st.end.seg + 1, p, sizeof(p)), &spare));
        assert_int_equal(spare.st_size, 0);
        uint64_t seg = st.end.seg;
        size_t i = 0;
        while (st.end.seg == seg) { /* append until the roll */
            append_n(sp, (size_t)roll * 1000 + i++, 1);
            oq_spool_stats(sp, &st);
        }
        /* the roll took that very file: same inode, nothing created inline */
        assert_int_equal(stat(spool_seg_path(f->dir, st.end.seg, p, sizeof(p)), &now), 0);
        assert_int_equal(now.st_ino, spare.st_ino);
        assert_int_equal(st.rolls, (uint64_t)roll + 1);
        assert_int_equal(st.rolls_inline, 0);
    }
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);
    /* close leaves no spare behind, and a spare left by a crash is dropped on open */
    char p[512];
    assert_int_equal(file_size(spool_seg_path(f->dir, st.end.seg + 1, p, sizeof(p))), -1);
    int fd = open(spool_seg_path(f->dir, st.end.seg + 1, p, sizeof(p)), O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    close(fd);
    sp = open_spool(f->dir, 4096, 0);
    oq_spool_stats_t st2;
    oq_spool_stats(sp, &st2);
    assert_int_equal(st2.end.seg, st.end.seg);
    assert_int_equal(st2.end.off, st.end.off);
    oq_spool_close(sp);
}

static long count_from_released(oq_spool_t *sp)
{
    long n;
    collect_t *c = scan_all(sp, oq_spool_released(sp), &n);
    free(c);
    return n;
}

static void test_fsync_readers_see_only_synced(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 3);
    /* appended, not yet fsynced: its client has no answer yet, the relay must not send it */
    assert_int_equal(count_from_released(sp), 0);
    assert_int_equal(oq_spool_sync(sp), 0);
    assert_int_equal(count_from_released(sp), 3);
    /* across a roll too */
    append_n(sp, 3, 40);
    assert_int_equal(count_from_released(sp), 3);
    assert_int_equal(oq_spool_sync(sp), 0);
    assert_int_equal(count_from_released(sp), 43);

    /* a failed fdatasync: its clients hear "not confirmed", so those orders are cut off the
     * spool, never sent, not after a restart either, and the spool refuses appends */
    append_n(sp, 43, 30);
    oq__spool_fail_next_sync(sp);
    assert_int_equal(oq_spool_sync(sp), CM_EIO);
    assert_int_equal(count_from_released(sp), 43);
    oq_order_t x;
    make_order(&x, 99);
    assert_int_equal(oq_spool_append(sp, &x, 1), CM_EIO);
    assert_int_equal(oq_spool_sync(sp), CM_EIO); /* sticky: no later sync "succeeds" */
    oq_spool_close(sp);
    sp = NULL;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 43);
    check_orders(c, 0, 43);
    free(c);
    oq_spool_close(sp);
}

/*
 * A sync answers for the caller's own records. A record that a
 * round made durable is relayed, settled and replayed at a restart whatever
 * its client hears, so a later failed fdatasync (another thread's records)
 * must not answer it CM_EIO: the buy path would say 503 and give its units
 * back while the order stands.
 */
static oq_pos_t append_one(oq_spool_t *sp, uint64_t i)
{
    oq_order_t o;
    make_order(&o, i);
    const oq_order_t *p = &o;
    size_t kept = 0;
    oq_pos_t end = {0, 0};
    assert_int_equal(oq_spool_append_batch(sp, &p, 1, &kept, &end), 0);
    assert_int_equal(kept, 1);
    assert_true(end.off > 0);
    return end;
}

static void test_sync_to_own_records(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    oq_pos_t a = append_one(sp, 1);
    assert_int_equal(oq_spool_sync_to(sp, a), 0);
    oq_pos_t b = append_one(sp, 2);
    assert_true(oq_pos_cmp(b, a) > 0);
    oq__spool_fail_next_sync(sp);
    assert_int_equal(oq_spool_sync_to(sp, b), CM_EIO);
    /* a was durable before the failure: 0, now and whenever asked */
    assert_int_equal(oq_spool_sync_to(sp, a), 0);
    assert_int_equal(oq_spool_sync_to(sp, b), CM_EIO); /* sticky */
    assert_int_equal(oq_spool_sync(sp), CM_EIO); /* "everything appended": not all durable */
    oq_spool_close(sp);
    /* the restart agrees with the answers: a is there, b was cut */
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 1);
    check_orders(c, 1, 1);
    free(c);
    oq_spool_close(sp);
}

/* The spool's fdatasyncs, counted. */
static atomic_int counted_syncs;
static oq_fs_ops_t fs_counted;

static int counted_fdatasync(int fd)
{
    atomic_fetch_add(&counted_syncs, 1);
    return oq_fs_posix()->fdatasync(fd);
}

/*
 * oq_spool_commit_to, the wait of writers that hold their records' end (the
 * lottery, waitlist promotions, releases, cancels): an event's append returns
 * its end; in fsync durability the commit answers for those records only (an
 * event made durable before another record's failed fdatasync is committed,
 * one after it is not); in write durability it answers 0 with no fdatasync.
 */
static void test_commit_to_own_records(void **state)
{
    fixture_t *f = *state;
    fs_counted = *oq_fs_posix();
    fs_counted.fdatasync = counted_fdatasync;
    oq_spool_opts_t o = {
        .dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096, .fs = &fs_counted};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    oq_pos_t e1;
    assert_int_equal(oq_spool_append_event_end(sp, "{\"n\":1}", 7, &e1), 0);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(oq_pos_cmp(e1, st.end), 0);
    assert_int_equal(oq_spool_commit_to(sp, e1), 0);
    oq_pos_t b = append_one(sp, 2); /* another thread's order */
    oq_pos_t e2;
    assert_int_equal(oq_spool_append_event_end(sp, "{\"n\":2}", 7, &e2), 0);
    assert_true(oq_pos_cmp(e2, b) > 0);
    oq__spool_fail_next_sync(sp);
    assert_int_equal(oq_spool_sync_to(sp, b), CM_EIO);    /* the other thread's round fails */
    assert_int_equal(oq_spool_commit_to(sp, e1), 0);      /* durable before it */
    assert_int_equal(oq_spool_commit_to(sp, e2), CM_EIO); /* cut with b */
    assert_int_equal(oq_spool_append_event_end(sp, "{}", 2, &e2), CM_EIO); /* refused */
    assert_int_equal(e2.seg, 0);
    assert_int_equal(e2.off, 0);
    oq_spool_close(sp);

    /* durability write: no fdatasync on the commit's path */
    o.durability = OQ_DURABILITY_WRITE;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    int before = atomic_load(&counted_syncs);
    assert_int_equal(oq_spool_append_event_end(sp, "{\"n\":3}", 7, &e1), 0);
    assert_true(e1.off > 0);
    assert_int_equal(oq_spool_commit_to(sp, e1), 0);
    assert_int_equal(atomic_load(&counted_syncs), before);
    oq_spool_close(sp);
}

/* fdatasync held on demand: the first call after `gate_arm` waits for
 * gate_go and succeeds; every call after that fails (EIO). */
static oq_fs_ops_t fs_gated;
static atomic_int gate_arm, gate_inside, gate_go, gate_fail;

static int gated_fdatasync(int fd)
{
    int one = 1;
    if (atomic_compare_exchange_strong(&gate_arm, &one, 0)) {
        atomic_store(&gate_inside, 1);
        uint64_t deadline = cm_mono_ms() + 20000;
        while (!atomic_load(&gate_go) && cm_mono_ms() < deadline)
            usleep(1000);
        atomic_store(&gate_fail, 1);
        return oq_fs_posix()->fdatasync(fd);
    }
    if (atomic_load(&gate_fail)) {
        errno = EIO;
        return -1;
    }
    return oq_fs_posix()->fdatasync(fd);
}

typedef struct {
    oq_spool_t *sp;
    oq_pos_t upto;
    int rc;
    atomic_bool done;
} syncto_arg_t;

static void *syncto_main(void *arg)
{
    syncto_arg_t *a = arg;
    a->rc = oq_spool_sync_to(a->sp, a->upto);
    atomic_store(&a->done, true);
    return NULL;
}

/*
 * The group commit across a failure. Leader L's round covers record a and is
 * held inside its fdatasync; b1 and b2 are appended after L read its cover.
 * Follower A (own range: a) and followers B1, B2 (own ranges b1, b2) all wait
 * for L. L's round succeeds; the next round (led by B1 or B2, which it covers)
 * fails. A's range was durable before that failure: 0. B1's and B2's were
 * not: CM_EIO, the leader's and the follower's alike (their records were cut).
 * Before the fix a sync's range was everything appended before the call, so A
 * (called after b1 and b2) waited for the failed round and got CM_EIO.
 */
static void test_group_commit_follower_own_range(void **state)
{
    fixture_t *f = *state;
    fs_gated = *oq_fs_posix();
    fs_gated.fdatasync = gated_fdatasync;
    atomic_store(&gate_arm, 0);
    atomic_store(&gate_inside, 0);
    atomic_store(&gate_go, 0);
    atomic_store(&gate_fail, 0);
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC,
                         .segment_bytes = 1u << 20, /* no roll: one fdatasync per round */
                         .fs = &fs_gated};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);

    oq_pos_t a = append_one(sp, 1);
    atomic_store(&gate_arm, 1);
    syncto_arg_t lead = {.sp = sp, .upto = a};
    pthread_t lt;
    assert_int_equal(pthread_create(&lt, NULL, syncto_main, &lead), 0);
    uint64_t deadline = cm_mono_ms() + 10000;
    while (!atomic_load(&gate_inside) && cm_mono_ms() < deadline)
        usleep(1000);
    assert_int_equal(atomic_load(&gate_inside), 1);

    /* appended after L read its cover (it is inside the fdatasync) */
    oq_pos_t b1 = append_one(sp, 2), b2 = append_one(sp, 3);
    syncto_arg_t fa = {.sp = sp, .upto = a}, fb1 = {.sp = sp, .upto = b1},
                 fb2 = {.sp = sp, .upto = b2};
    syncto_arg_t *fl[] = {&fa, &fb1, &fb2};
    pthread_t ft[3];
    for (int k = 0; k < 3; k++)
        assert_int_equal(pthread_create(&ft[k], NULL, syncto_main, fl[k]), 0);
    /* each waits for the held round: none of them may return while it is held */
    usleep(100 * 1000);
    for (int k = 0; k < 3; k++)
        assert_false(atomic_load(&fl[k]->done));

    atomic_store(&gate_go, 1);
    pthread_join(lt, NULL);
    for (int k = 0; k < 3; k++)
        pthread_join(ft[k], NULL);

    assert_int_equal(lead.rc, 0);
    if (fa.rc != 0)
        fail_msg("follower A (durable before the failure): %s, want 0", cm_errname(fa.rc));
    if (fb1.rc != CM_EIO || fb2.rc != CM_EIO)
        fail_msg("followers B1, B2 (not durable): %s, %s, want CM_EIO", cm_errname(fb1.rc),
                 cm_errname(fb2.rc));
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.syncs, 2); /* L and A */
    oq_spool_close(sp);

    /* the restart keeps exactly the record answered 0 */
    o.fs = NULL;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 1);
    check_orders(c, 1, 1);
    free(c);
    oq_spool_close(sp);
}

/*
 * Out of file descriptors while syncing (EMFILE): the sync leader dup()s the
 * current segment's fd and opens each rolled segment by name, and a failed
 * open was taken as a failed fdatasync: the spool cut the unsynced records,
 * refused every append after it (the gateway shed buys as if the disk had
 * died) and stayed so until a restart. Nothing was fdatasynced, so nothing is
 * known lost: the sync waits and tries again once a descriptor is free,
 * counted apart (sync_fd_waits), and the spool goes on.
 */
typedef struct {
    oq_spool_t *sp;
    int rc;
    atomic_bool done;
} fdwait_arg_t;

static void *fdwait_sync(void *arg)
{
    fdwait_arg_t *a = arg;
    a->rc = oq_spool_sync(a->sp);
    atomic_store(&a->done, true);
    return NULL;
}

/* The lowest free descriptor: a limit there leaves none (the kernel hands out
 * the lowest free one). */
static rlim_t lowest_free_fd(void)
{
    int fd = dup(0);
    assert_true(fd >= 0);
    close(fd);
    return (rlim_t)fd;
}

static void test_fsync_out_of_fds_waits(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 3);
    assert_int_equal(oq_spool_sync(sp), 0);
    append_n(sp, 3, 40); /* rolls: the sync reopens the rolled segments by name */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.rolls >= 1);

    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* the preparer may be between a create and its swap: let it settle first */
    for (int i = 0; i < 2000 && !st.spare_ready; i++) {
        usleep(1000);
        oq_spool_stats(sp, &st);
    }
    low = old;
    low.rlim_cur = lowest_free_fd(); /* no descriptor left */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int probe = dup(0), perr = errno;
    if (probe >= 0) { /* another thread freed one meanwhile: restore before failing */
        close(probe);
        setrlimit(RLIMIT_NOFILE, &old);
        fail_msg("a descriptor was still free at the lowered limit");
    }
    if (perr != EMFILE)
        setrlimit(RLIMIT_NOFILE, &old);
    assert_int_equal(perr, EMFILE);

    fdwait_arg_t a = {.sp = sp};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fdwait_sync, &a), 0);
    /* until the sync met the shortage (or, before the fix, failed on it) */
    for (int i = 0; i < 10000 && !atomic_load(&a.done); i++) {
        oq_spool_stats(sp, &st);
        if (st.sync_fd_waits > 0)
            break;
        usleep(1000);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    oq_spool_stats(sp, &st);
    assert_true(st.sync_fd_waits >= 1);
    assert_int_equal(oq_pos_cmp(st.synced, st.end), 0);
    assert_int_equal(count_from_released(sp), 43); /* nothing cut, all readable */
    append_n(sp, 43, 2);                            /* appends still taken */
    assert_int_equal(oq_spool_sync(sp), 0);
    assert_int_equal(count_from_released(sp), 45);
    oq_spool_close(sp);
}

/*
 * The same in durability write: the preparer fdatasyncs each rolled segment by
 * name; out of descriptors, it counted the segment flushed and logged a disk
 * failure. It now tries that segment again once a descriptor is free.
 */
static void test_write_flush_out_of_fds_waits(void **state)
{
    fixture_t *f = *state;
    oq_spool_t *sp = open_spool(f->dir, 4096, 0);
    append_n(sp, 0, 3);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    for (int i = 0; i < 5000 && !st.spare_ready; i++) {
        usleep(1000);
        oq_spool_stats(sp, &st);
    }
    assert_true(st.spare_ready);
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = lowest_free_fd();
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* one roll, a swap to the spare: the old segment's descriptor goes to the
     * preparer's next spare, and none is left to flush the old segment with */
    for (size_t i = 3; i < 200 && st.rolls == 0; i++) {
        append_n(sp, i, 1);
        oq_spool_stats(sp, &st);
    }
    for (int i = 0; i < 10000 && st.sync_fd_waits == 0; i++) {
        usleep(1000);
        oq_spool_stats(sp, &st);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(st.rolls, 1);
    assert_true(st.sync_fd_waits >= 1);
    for (int i = 0; i < 10000 && st.segment_flushes < st.rolls; i++) {
        usleep(1000);
        oq_spool_stats(sp, &st);
    }
    assert_int_equal(st.segment_flushes, st.rolls);
    oq_spool_close(sp);
}

/*
 * Durability write never fsyncs on the append path, but each rolled segment is
 * fdatasynced by the preparer thread soon after its roll, so a power loss can
 * tear only the tail, never a segment in the middle (that refuses the open).
 */
static void test_write_rolled_segments_are_flushed(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_WRITE, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 80); /* ~12 KiB: two rolls or more */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.rolls >= 2);
    for (int i = 0; i < 500; i++) { /* the preparer's, not the append path's: wait for it */
        oq_spool_stats(sp, &st);
        if (st.segment_flushes >= st.rolls)
            break;
        usleep(10 * 1000);
    }
    assert_int_equal(st.segment_flushes, st.rolls);
    assert_int_equal(st.fsyncs, 0); /* nobody waited for one */
    oq_spool_close(sp);
}

/*
 * A gateway that died between an append and its fdatasync left records whose
 * clients never got a 202, in the page cache only. The next open in fsync
 * durability fdatasyncs what it found before readers may see it: the relay
 * must never send on what a power loss could still take from the spool.
 */
static void test_fsync_reopen_syncs_what_was_left(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 3);
    assert_int_equal(oq_spool_sync(sp), 0);
    append_n(sp, 3, 40); /* across a roll, never synced: the process dies here */
    assert_int_equal(count_from_released(sp), 3);
    oq_spool_close(sp);

    sp = NULL;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(st.fsyncs >= 1); /* before any oq_spool_sync: the open's own */
    assert_int_equal(count_from_released(sp), 43);
    oq_spool_close(sp);

    /* durability `write` promises no fsync on the append path: no sync round
     * (its open's rewrite is test_write_reopen_rewrites_from_segment_start) */
    o.durability = OQ_DURABILITY_WRITE;
    sp = NULL;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.fsyncs, 0);
    assert_int_equal(count_from_released(sp), 43);
    oq_spool_close(sp);
}

/*
 * Pages a failed fdatasync dropped are evicted between the open's recovery
 * and its write-again (resync_segment): the write-again reads zeros where
 * recovery read records. Copying them made the hole durable under records
 * recovery had counted, and the replay from {0,0} then refused the whole
 * spool (CM_ECORRUPT: a gateway that cannot start after a disk write error;
 * `flashgate-sim --seed 708 --open-defects` found it). The open must check
 * what it reads back and recover again from it: the records before the hole
 * are kept, the ones in it (never made durable: no 202 in durability fsync)
 * are gone, and the spool takes new orders.
 */
static oq_fs_ops_t fs_evicting;
static int evict_maps;
static char evict_dir[512];
static uint64_t evict_seg, evict_from, evict_to;

static const unsigned char *evicting_map(int fd, size_t len)
{
    if (++evict_maps == 2) /* the write-again's read: the disk's zeros now */
        spool_zero_range(evict_dir, evict_seg, evict_from, evict_to);
    return oq_fs_posix()->map(fd, len);
}

static void test_evicted_between_recovery_and_write_again(void **state)
{
    fixture_t *f = *state;
    for (int d = 0; d < 2; d++) {
        oq_durability_t dur = d ? OQ_DURABILITY_WRITE : OQ_DURABILITY_FSYNC;
        snprintf(evict_dir, sizeof(evict_dir), "%s/%d", f->dir, d);
        oq_spool_opts_t o = {.dir = evict_dir, .durability = dur};
        oq_spool_t *sp = NULL;
        char err[512] = "";
        assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
        append_n(sp, 0, 10);
        assert_int_equal(oq_spool_sync(sp), 0);
        append_n(sp, 10, 5); /* their fdatasync failed, and the process died */
        oq_spool_close(sp);
        assert_int_equal(oq_spool_open(&sp, &(oq_spool_opts_t){.dir = evict_dir, .read_only = true},
                                       err, sizeof(err)),
                         0);
        long n;
        collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
        assert_int_equal(n, 15);
        evict_seg = c->recs[10].pos.seg;
        evict_from = c->recs[10].pos.off;
        evict_to = c->recs[14].next.off;
        free(c);
        oq_spool_close(sp);

        fs_evicting = *oq_fs_posix();
        fs_evicting.map = evicting_map;
        evict_maps = 0;
        o = (oq_spool_opts_t){.dir = evict_dir, .durability = dur, .fs = &fs_evicting};
        sp = NULL;
        int rc = oq_spool_open(&sp, &o, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "open: %s (%s)\n", cm_strerror(rc), err);
        assert_int_equal(rc, 0);
        assert_true(evict_maps >= 2);
        c = scan_all(sp, (oq_pos_t){0, 0}, &n);
        assert_int_equal(n, 10); /* not CM_ECORRUPT: the hole was cut, what preceded it kept */
        check_orders(c, 0, 10);
        free(c);
        oq_spool_stats_t st;
        oq_spool_stats(sp, &st);
        assert_int_equal(oq_pos_cmp(st.end, (oq_pos_t){evict_seg, evict_from}), 0);
        append_n(sp, 10, 1); /* and it takes new orders after them */
        assert_int_equal(oq_spool_sync(sp), 0);
        c = scan_all(sp, (oq_pos_t){0, 0}, &n);
        assert_int_equal(n, 11);
        check_orders(c, 0, 11);
        free(c);
        oq_spool_close(sp);
    }
}

/*
 * Durability write: a process appended orders (answered 202) and died before
 * any fdatasync covered them; they are in the page cache only. The next
 * open's write-again fails its fdatasync, and the kernel drops the pages of
 * the file it was called on, then evicts them: a read there returns the
 * disk's zeros. Written again in place, those pages were the segment's, the
 * only copy of the orders, and the open after it cut them off
 * (`flashgate-sim --seed 5 --open-defects`, "spool recovery dropped order,
 * answered 202"). The write-again goes to a new file, renamed over the
 * segment once it is durable: a failure drops the new file's pages, and the
 * segment's stay as they were.
 */
static oq_fs_ops_t fs_dropping;
static int drop_syncs;
static char drop_dir[256];
static uint64_t drop_seg, drop_from, drop_to;

static int dropping_fdatasync(int fd)
{
    if (drop_syncs == 0)
        return oq_fs_posix()->fdatasync(fd);
    drop_syncs--;
    char path[512];
    struct stat a, b;
    if (fstat(fd, &a) == 0 &&
        stat(spool_seg_path(drop_dir, drop_seg, path, sizeof(path)), &b) == 0 &&
        a.st_ino == b.st_ino) /* the segment's own pages dropped, and evicted */
        spool_zero_range(drop_dir, drop_seg, drop_from, drop_to);
    errno = EIO;
    return -1;
}

static void test_write_failed_write_again_keeps_the_segment(void **state)
{
    fixture_t *f = *state;
    snprintf(drop_dir, sizeof(drop_dir), "%s", f->dir);
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_WRITE};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 10);
    assert_int_equal(oq_spool_sync(sp), 0);
    append_n(sp, 10, 5); /* answered 202, then the process died */
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 15);
    drop_seg = c->recs[10].pos.seg;
    drop_from = c->recs[10].pos.off;
    drop_to = c->recs[14].next.off;
    free(c);
    oq_spool_close(sp);

    fs_dropping = *oq_fs_posix();
    fs_dropping.fdatasync = dropping_fdatasync;
    drop_syncs = 1;
    o.fs = &fs_dropping;
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), CM_EIO);
    assert_non_null(strstr(err, "cannot fdatasync"));
    assert_int_equal(drop_syncs, 0);

    o.fs = NULL; /* the next start: every order still there */
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 15);
    check_orders(c, 0, 15);
    free(c);
    append_n(sp, 15, 1); /* appends go to the segment renamed into place */
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 16);
    check_orders(c, 0, 16);
    free(c);
    oq_spool_close(sp);
}

/*
 * Durability write, a live process: the preparer's fdatasync of a rolled
 * segment fails, and the kernel evicts the pages it dropped before the
 * rewrite reads them: the read-back returns the disk's zeros where orders
 * answered 202 were. The rewrite kept the records before the hole, the relay
 * stopped at it, and a restart cut the rest (`flashgate-sim --seed 1921
 * --open-defects`, "spool recovery dropped order"; with the process living on,
 * seed 1028, "answered 202 and never reached the database"). The spool keeps
 * the bytes no fdatasync covered yet and writes the segment again from them.
 * The same for the current segment, which the preparer fdatasyncs once its
 * copy passes half a segment (4 MiB at most): a failure there rolls, and the
 * segment is written again from memory.
 */
static void test_write_failed_flush_writes_again_from_memory(void **state)
{
    fixture_t *f = *state;
    snprintf(drop_dir, sizeof(drop_dir), "%s", f->dir);
    fs_dropping = *oq_fs_posix();
    fs_dropping.fdatasync = dropping_fdatasync;
    drop_syncs = 0;
    oq_spool_opts_t o = {.dir = f->dir, .segment_bytes = 2000, .fs = &fs_dropping, .stepped = true};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 20); /* a roll: segment 1 waits for the preparer's flush */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.segments, 2);
    assert_int_equal(st.copy_bytes, st.unreleased_bytes);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 20);
    drop_seg = c->recs[0].pos.seg;
    drop_from = 0;
    size_t k = 0;
    while (k < 20 && c->recs[k].pos.seg == drop_seg)
        k++;
    drop_to = c->recs[k - 1].next.off;
    free(c);
    drop_syncs = 1; /* the flush fails, its pages are evicted */
    for (int i = 0; i < 10 && oq_spool_step(sp); i++)
        ;
    assert_int_equal(drop_syncs, 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 20);
    check_orders(c, 0, 20);
    free(c);
    oq_spool_stats(sp, &st);
    assert_int_equal(st.copy_rewrites, 1);
    assert_int_equal(st.segment_flushes, 1);
    assert_true(st.copy_bytes < st.unreleased_bytes); /* segment 1's copy let go */

    /* the current segment: its copy passes half a segment, no roll yet */
    uint64_t seg = st.end.seg, i = 20;
    oq_spool_stats(sp, &st);
    while (st.copy_bytes < 1000) {
        append_n(sp, i++, 1);
        oq_spool_stats(sp, &st);
    }
    assert_int_equal(st.end.seg, seg);
    drop_seg = seg;
    drop_from = 0;
    drop_to = st.end.off;
    drop_syncs = 1;
    for (int r = 0; r < 10 && oq_spool_step(sp); r++)
        ;
    assert_int_equal(drop_syncs, 0);
    oq_spool_stats(sp, &st);
    assert_true(st.end.seg > seg); /* rolled, and written again from memory */
    assert_int_equal(st.copy_rewrites, 2);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, (long)i);
    check_orders(c, 0, (size_t)i);
    free(c);
    /* and a sync that succeeds lets the copy go */
    uint64_t before = st.copy_syncs;
    while (st.copy_bytes < 1000) {
        append_n(sp, i++, 1);
        oq_spool_stats(sp, &st);
    }
    for (int r = 0; r < 10 && oq_spool_step(sp); r++)
        ;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.copy_syncs, before + 1);
    assert_true(st.copy_bytes < 1000);
    oq_spool_close(sp);

    o.fs = NULL; /* a restart reads them all */
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, (long)i);
    check_orders(c, 0, (size_t)i);
    free(c);
    oq_spool_close(sp);
}

/*
 * Durability write, a full disk: a rolled segment's fdatasync fails and the
 * kernel evicts the pages it dropped; the write-again from memory needs a
 * new file as large as the segment (spool.tmp), and the disk has no room
 * for it. Every try failed, until the process ended with the only copy
 * (flashgate-sim --seed 6199 --open-defects: a graceful stop, and the next
 * start cut an order answered 202). The copy's own range of the segment
 * needs no room: it goes there.
 */
static oq_fs_ops_t fs_full;
static bool full_tmp_writes;  /* spool.tmp's writes meet a full disk */
static int full_tmp_syncs;    /* spool.tmp's fdatasyncs fail (EIO) */
static int full_tmp_attempts; /* writes to spool.tmp tried */

static bool is_tmp(int fd)
{
    char path[512];
    struct stat a, b;
    snprintf(path, sizeof(path), "%s/spool.tmp", drop_dir);
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino;
}

static ssize_t full_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (is_tmp(fd)) {
        full_tmp_attempts++;
        if (full_tmp_writes) {
            errno = ENOSPC;
            return -1;
        }
    }
    return oq_fs_posix()->pwrite(fd, buf, n, off);
}

static int full_fdatasync(int fd)
{
    if (full_tmp_syncs > 0 && is_tmp(fd)) {
        full_tmp_syncs--;
        errno = EIO;
        return -1;
    }
    return dropping_fdatasync(fd);
}

/* Appends 20 orders to a stepped spool of 2000-byte segments through
 * fs_full: segment 1 is rolled, its flush not run yet; drop_seg and its
 * range name segment 1's records. */
static oq_spool_t *full_spool(const char *dir, oq_spool_opts_t *o)
{
    snprintf(drop_dir, sizeof(drop_dir), "%s", dir);
    fs_full = *oq_fs_posix();
    fs_full.pwrite = full_pwrite;
    fs_full.fdatasync = full_fdatasync;
    full_tmp_writes = false;
    full_tmp_syncs = full_tmp_attempts = drop_syncs = 0;
    *o = (oq_spool_opts_t){.dir = dir, .segment_bytes = 2000, .fs = &fs_full, .stepped = true};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, o, err, sizeof(err)), 0);
    append_n(sp, 0, 20);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 20);
    drop_seg = c->recs[0].pos.seg;
    drop_from = 0;
    size_t k = 0;
    while (k < 20 && c->recs[k].pos.seg == drop_seg)
        k++;
    assert_true(k < 20); /* rolled */
    drop_to = c->recs[k - 1].next.off;
    free(c);
    return sp;
}

static void reads_all_20(oq_spool_opts_t *o)
{
    oq_spool_t *sp = NULL;
    char err[512] = "";
    o->fs = NULL; /* a restart reads them all */
    assert_int_equal(oq_spool_open(&sp, o, err, sizeof(err)), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 20);
    check_orders(c, 0, 20);
    free(c);
    oq_spool_close(sp);
}

static void test_write_again_on_a_full_disk(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o;
    oq_spool_t *sp = full_spool(f->dir, &o);
    full_tmp_writes = true;
    drop_syncs = 1; /* the flush fails, its pages are evicted */
    for (int i = 0; i < 10 && oq_spool_step(sp); i++)
        ;
    assert_int_equal(drop_syncs, 0);
    assert_true(full_tmp_attempts > 0); /* the new file was tried first */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.copy_rewrites, 1);
    assert_int_equal(st.segment_flushes, 1);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 20);
    check_orders(c, 0, 20);
    free(c);
    oq_spool_close(sp);
    reads_all_20(&o);
}

/*
 * The same, every write-again failing (here the new file's fdatasync), and
 * the process stops: the close writes the copy back over its range of the
 * segment (its fdatasync fails too, and drops the pages again: written once
 * more, dirty, the kernel's), so that the next start reads every order.
 */
static void test_close_writes_back_a_lost_copy(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o;
    oq_spool_t *sp = full_spool(f->dir, &o);
    full_tmp_syncs = 1000;
    drop_syncs = 1000; /* every fdatasync of segment 1 fails, its pages evicted */
    for (int i = 0; i < 10 && oq_spool_step(sp); i++)
        ;
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.copy_rewrites, 0);
    assert_int_equal(st.segment_flushes, 0);
    int before = drop_syncs;
    oq_spool_close(sp);
    assert_int_equal(drop_syncs, before - 1); /* the close's fdatasync, failed */
    drop_syncs = 0;
    reads_all_20(&o);
}

/*
 * A start on a full disk: the open writes again what an earlier process left
 * (durability write: no fdatasync of it is sure), through spool.tmp, which
 * has no room. It refused to start until room was made; the bytes it read
 * and checked go over their own range of the segment instead, which needs
 * none, the torn tail cut, and every order reads back, and one appended
 * after them.
 */
static void test_open_on_a_full_disk(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o;
    oq_spool_t *sp = full_spool(f->dir, &o);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    oq_spool_close(sp);
    char path[512];
    spool_seg_path(f->dir, st.end.seg, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_APPEND); /* a torn tail, which the open cuts */
    const char garbage[] = "\x40\x00\x00\x00garbage that is not a record";
    assert_int_equal(write(fd, garbage, sizeof(garbage)), sizeof(garbage));
    close(fd);
    full_tmp_writes = true;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    assert_true(full_tmp_attempts > 0); /* the new file was tried first */
    assert_int_equal(file_size(path), (off_t)st.end.off);
    append_n(sp, 20, 1); /* after the cut, not after the torn tail */
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    assert_int_equal(n, 21);
    check_orders(c, 0, 21);
    free(c);
    oq_spool_close(sp);
}

/*
 * The preparer creates the spare segment and fsyncs the directory for its
 * name. When that fsync failed, the file stayed, and every later try met it
 * (O_EXCL) and failed: no spare again, and the rolled segments' flushes,
 * which wait for one, never ran (flashgate-sim --seed 197 --open-defects,
 * with the flush from memory: a segment whose fdatasync failed was never
 * written again). The failed try removes the file it made.
 */
static oq_fs_ops_t fs_dirfail;
static int dirfail_left;

static int dirfail_fsync(int fd)
{
    if (dirfail_left > 0) {
        dirfail_left--;
        errno = EIO;
        return -1;
    }
    return oq_fs_posix()->fsync(fd);
}

static void test_spare_after_failed_dir_fsync(void **state)
{
    fixture_t *f = *state;
    fs_dirfail = *oq_fs_posix();
    fs_dirfail.fsync = dirfail_fsync;
    dirfail_left = 0;
    oq_spool_opts_t o = {.dir = f->dir, .fs = &fs_dirfail, .stepped = true};
    oq_spool_t *sp = NULL;
    char err[512] = "";
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    dirfail_left = 1;
    assert_false(oq_spool_step(sp)); /* could not make the spare: a second later */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_false(st.spare_ready);
    assert_true(oq_spool_step(sp));
    oq_spool_stats(sp, &st);
    assert_true(st.spare_ready);
    oq_spool_close(sp);
}

/*
 * flashgate-spool reads a live gateway's spool. In fsync durability a reader
 * that opened read-only sees the records not synced yet, and a failed fsync
 * makes the gateway cut them (cut_unsynced_locked) while the reader is in the
 * middle of them: the reader must not die of SIGBUS on a page of its
 * mapping that now lies past the end of the file. The reader is a child
 * process, as the tool is; the parent, the gateway, cuts when told.
 */
typedef struct cut_ctx {
    int tell, wait; /* pipes to and from the parent */
    long seen;
} cut_ctx_t;

static int cut_while_reading(const oq_rec_t *rec, void *arg)
{
    (void)rec;
    cut_ctx_t *c = arg;
    char b = 0;
    if (++c->seen == 200 && /* pages in: the gateway's fsync fails now */
        (write(c->tell, &b, 1) != 1 || read(c->wait, &b, 1) != 1))
        _exit(3);
    return 0;
}

static void test_reader_survives_a_cut(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    append_n(sp, 0, 5);
    assert_int_equal(oq_spool_sync(sp), 0);
    append_n(sp, 5, 400); /* ~60 KiB, not synced */
    char path[512];
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_true(file_size(spool_seg_path(f->dir, st.end.seg, path, sizeof(path))) > 8 * 4096);
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGBUS, SIG_DFL); /* not cmocka's handler: die of it, for the parent to see */
        signal(SIGSEGV, SIG_DFL);
        oq_spool_opts_t ro = {.dir = f->dir, .read_only = true};
        oq_spool_t *reader = NULL;
        if (oq_spool_open(&reader, &ro, NULL, 0) != 0)
            _exit(4);
        cut_ctx_t c = {.tell = up[1], .wait = down[0]};
        long n = oq_spool_scan(reader, (oq_pos_t){0, 0}, cut_while_reading, &c);
        _exit(n >= 200 ? 0 : 5); /* what it read when it started, or an error */
    }
    close(up[1]);
    close(down[0]);
    char b;
    assert_int_equal(read(up[0], &b, 1), 1);
    oq__spool_fail_next_sync(sp);
    assert_int_equal(oq_spool_sync(sp), CM_EIO); /* cuts the unsynced records */
    assert_true(file_size(path) < 4096);
    assert_int_equal(write(down[1], &b, 1), 1);
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    close(up[0]);
    close(down[1]);
    if (WIFSIGNALED(wst))
        fail_msg("the reader died of signal %d (%s)", WTERMSIG(wst), strsignal(WTERMSIG(wst)));
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 0);
    oq_spool_close(sp);
}

/* The segment holding synced_pos released and deleted (the Redis inventory's
 * relay deletes what it released) before a failed fdatasync: the cut must still
 * remove the unsynced records of the segment after it, now the only one. */
static void test_cut_after_synced_segment_deleted(void **state)
{
    fixture_t *f = *state;
    oq_spool_opts_t o = {.dir = f->dir, .durability = OQ_DURABILITY_FSYNC, .segment_bytes = 4096};
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    oq_pos_t e = append_one(sp, 0), x;
    uint64_t seg0 = e.seg;
    for (uint64_t i = 1;; i++) {
        assert_int_equal(oq_spool_sync_to(sp, e), 0); /* synced_pos = {seg0, e.off} */
        x = append_one(sp, 1000 + i);
        if (x.seg != seg0)
            break; /* rolled: x alone in the new segment, unsynced */
        e = x;
    }
    assert_int_equal(x.seg, seg0 + 1);
    assert_int_equal(oq_spool_release(sp, e), 0); /* the relay: all of segment 0 done, deleted */
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    print_message("segments after release: %zu\n", (size_t)st.segments);
    oq__spool_fail_next_sync(sp);
    assert_int_equal(oq_spool_sync_to(sp, x), CM_EIO); /* order 1000 answered "not confirmed" */
    oq_spool_stats(sp, &st);
    print_message("cut_failures: %llu\n", (unsigned long long)st.cut_failures);
    oq_spool_close(sp);
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    long n;
    collect_t *c = scan_all(sp, (oq_pos_t){0, 0}, &n);
    print_message("records after restart: %ld (expected 0)\n", n);
    free(c);
    oq_spool_close(sp);
    assert_int_equal(n, 0);
}

int main(int argc, char **argv)
{
    snprintf(g_self, sizeof(g_self), "%s", argv[0]);
    if (argc > 1 && strcmp(argv[1], "--crc-soft") == 0) {
        oq__crc32c_force_table();
        return crc_checks() == 0 ? 0 : 1;
    }
    cm_log_set_level(CM_LOG_ERROR); /* the recovery warnings are expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test_setup_teardown(test_append_scan_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_batch_pointers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_mid_record_and_bitflip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_older_segment_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroed_tail_of_older_segment_is_a_tear, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_flush_retry_rewrites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_reopen_rewrites_kept_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_zeroed_below_release_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_damage_below_point_keeps_confirmed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_reopen_rewrites_from_segment_start, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_below_release_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_space_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_and_rolling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_keep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_point_older_than_deleted_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_answered_orders_survive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tool_dump_and_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_swaps_in_a_spare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_readers_see_only_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_to_own_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_to_own_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_follower_own_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_reopen_syncs_what_was_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evicted_between_recovery_and_write_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fsync_out_of_fds_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_flush_out_of_fds_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_rolled_segments_are_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failed_write_again_keeps_the_segment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_failed_flush_writes_again_from_memory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_write_again_on_a_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_writes_back_a_lost_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_on_a_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spare_after_failed_dir_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_survives_a_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_after_synced_segment_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_near_cap_keeps_what_fits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_batch_write_kept_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_batch_write_cut_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
