/*
 * The journal (common/cm_journal.h) on a real temp dir: the framing, a torn
 * tail cut off, a bad checksum or a zero-filled block mid-file skipped up to
 * the next whole frame, an empty file
 * and a torn magic line, the crash points of a compaction (a ".tmp" left
 * before the rename, the new file after it), the batch's one write, the
 * upgrade of a line log, and the group commit and the compaction with
 * threads appending, syncing and compacting at once (run under TSan too).
 */
#include "common/cm_journal.h"

#include "common/cm_err.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

typedef struct seen {
    char recs[64][80];
    size_t n;
} seen_t;

static void collect(void *arg, char *rec, size_t len)
{
    seen_t *s = arg;
    assert_int_equal(strlen(rec), len); /* the test's records hold no NUL */
    assert_true(s->n < 64 && len < sizeof(s->recs[0]));
    memcpy(s->recs[s->n++], rec, len + 1);
}

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture_t;

static int setup(void **st)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/cm_journal.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/s1.room", f->dir);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture_t *f = *st;
    cm_journal_set_fs(NULL); /* a test that failed with its own table in force */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static off_t file_len(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

static void put_file(const char *path, const char *bytes, size_t n)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static size_t get_file(const char *path, char *out, size_t cap)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(out, 1, cap - 1, fp);
    out[n] = '\0';
    fclose(fp);
    return n;
}

/* Opens path, reading its records into s. */
static int open_seen(cm_journal_t *j, const char *path, unsigned flags, seen_t *s)
{
    memset(s, 0, sizeof(*s));
    char why[256] = "";
    return cm_journal_open(j, path, flags, collect, s, why, sizeof(why));
}

/* Writes records "r0".."r<n-1>" to a new journal at path, synced, closed. */
static void write_records(const char *path, int n)
{
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, path, 0, &s), 0);
    assert_int_equal(s.n, 0);
    for (int i = 0; i < n; i++) {
        char rec[16];
        int k = snprintf(rec, sizeof(rec), "r%d", i);
        assert_int_equal(cm_journal_append(&j, rec, (size_t)k), 0);
    }
    assert_int_equal(cm_journal_close(&j), 0);
}

/* The frame's exact bytes: the record stays readable text, the checksum covers it. */
static void test_frame_bytes(void **st)
{
    (void)st;
    char out[64];
    size_t n = cm_journal_frame(out, sizeof(out), "J alice", 7);
    assert_int_equal(n, 7 + CM_JOURNAL_FRAME_OVERHEAD);
    assert_memory_equal(out, "00000007 ", 9);
    assert_memory_equal(out + 18, "J alice\n", 8);
    char other[64];
    assert_int_equal(cm_journal_frame(other, sizeof(other), "J alicf", 7), n);
    assert_memory_not_equal(out + 9, other + 9, 8); /* one byte changes the checksum */
    assert_int_equal(cm_journal_frame(out, 10, "J alice", 7), 0); /* does not fit */
    assert_int_equal(cm_journal_frame(out, sizeof(out), "", 0), CM_JOURNAL_FRAME_OVERHEAD);
}

/* A new file gets the magic line; a batch of appends is one write; the records
 * read back in order after a close and a reopen. */
static void test_append_and_read_back(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(file_len(f->path), CM_JOURNAL_MAGIC_LEN);
    assert_int_equal(cm_journal_append(&j, "K 1", 3), 0);
    assert_int_equal(cm_journal_append(&j, "J bob", 5), 0);
    assert_int_equal(file_len(f->path), CM_JOURNAL_MAGIC_LEN); /* buffered */
    assert_int_equal(cm_journal_write(&j), 0);
    off_t want = CM_JOURNAL_MAGIC_LEN + 8 + 2 * CM_JOURNAL_FRAME_OVERHEAD;
    assert_int_equal(file_len(f->path), want);
    assert_int_equal(j.len, want);
    assert_true(j.synced_len < j.len);
    assert_int_equal(cm_journal_sync(&j), 0);
    assert_int_equal(j.synced_len, want);
    assert_int_equal(cm_journal_close(&j), 0);

    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.recs[0], "K 1");
    assert_string_equal(s.recs[1], "J bob");
    assert_int_equal(j.len, want);
    assert_int_equal(j.synced_len, 0); /* what a crash left may be in the page cache only */
    assert_int_equal(cm_journal_close(&j), 0);
}

/* An empty file, and one whose magic line is torn (a crash at its creation):
 * an empty journal, given its magic line. */
static void test_empty_and_torn_magic(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    put_file(f->path, "", 0);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(file_len(f->path), CM_JOURNAL_MAGIC_LEN);
    assert_int_equal(cm_journal_close(&j), 0);
    put_file(f->path, CM_JOURNAL_MAGIC, 7);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 0);
    char text[128];
    assert_int_equal(get_file(f->path, text, sizeof(text)), CM_JOURNAL_MAGIC_LEN);
    assert_string_equal(text, CM_JOURNAL_MAGIC);
    assert_int_equal(cm_journal_append(&j, "x", 1), 0);
    assert_int_equal(cm_journal_close(&j), 0);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(cm_journal_close(&j), 0);
}

/* A torn tail (every cut inside the last frame): cut back to the frame before
 * it, and the next append reads back after it. */
static void test_torn_tail(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 3);
    off_t whole = file_len(f->path), last = CM_JOURNAL_FRAME_OVERHEAD + 2;
    char full[256];
    assert_int_equal(get_file(f->path, full, sizeof(full)), (size_t)whole);
    for (off_t cut = whole - last + 1; cut < whole; cut++) {
        put_file(f->path, full, (size_t)cut);
        cm_journal_t j;
        seen_t s;
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_int_equal(s.n, 2);
        assert_int_equal(file_len(f->path), whole - last);
        assert_int_equal(cm_journal_append(&j, "r9", 2), 0);
        assert_int_equal(cm_journal_close(&j), 0);
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.recs[2], "r9");
        assert_int_equal(cm_journal_close(&j), 0);
    }
}

/* A bad checksum mid-file (one flipped byte in the second of five records),
 * a zero-filled block there, and a block of zeros that ends inside the third
 * frame: skipped up to the next whole frame, the frames after it read, the
 * file kept whole; an append after it reads back. */
static void test_bad_frame_mid_file(void **st)
{
    fixture_t *f = *st;
    for (int how = 0; how < 3; how++) {
        (void)unlink(f->path);
        write_records(f->path, 5);
        char full[512];
        size_t n = get_file(f->path, full, sizeof(full));
        size_t fl = CM_JOURNAL_FRAME_OVERHEAD + 2, second = CM_JOURNAL_MAGIC_LEN + fl;
        if (how == 0)
            full[second + 18] ^= 0x01; /* "r1" -> "s1" */
        else if (how == 1)
            memset(full + second, 0, fl);
        else
            memset(full + second, 0, fl + 5); /* into the third frame: it goes too */
        put_file(f->path, full, n);
        cm_journal_t j;
        seen_t s;
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_int_equal(s.n, how == 2 ? 3 : 4);
        assert_string_equal(s.recs[0], "r0");
        assert_string_equal(s.recs[1], how == 2 ? "r3" : "r2");
        assert_string_equal(s.recs[s.n - 1], "r4");
        assert_int_equal(file_len(f->path), (off_t)n);
        assert_int_equal(cm_journal_append(&j, "r5", 2), 0);
        assert_int_equal(cm_journal_close(&j), 0);
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_string_equal(s.recs[s.n - 1], "r5");
        assert_int_equal(cm_journal_close(&j), 0);
        int fd = open(f->path, O_RDONLY);
        cm_journal_scan_t sc;
        assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
        close(fd);
        assert_int_equal(sc.holes, 1);
        assert_int_equal(sc.first_hole, (off_t)second);
        assert_int_equal(sc.hole_bytes, (off_t)(how == 2 ? 2 * fl : fl));
    }
}

/* Garbage after the last whole frame with no whole frame after it (a torn
 * batch: zeros, then part of a frame): the torn tail, cut off. */
static void test_torn_tail_after_garbage(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 2);
    off_t whole = file_len(f->path);
    FILE *fp = fopen(f->path, "a");
    assert_non_null(fp);
    static const char zeros[100];
    assert_int_equal(fwrite(zeros, 1, sizeof(zeros), fp), sizeof(zeros));
    fputs("00000002 1234abcd r", fp);
    fclose(fp);
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(file_len(f->path), whole);
    assert_int_equal(cm_journal_close(&j), 0);
}

/* A length field over CM_JOURNAL_RECORD_MAX, or past the file's end, is a bad frame. */
static void test_bad_length(void **st)
{
    fixture_t *f = *st;
    char buf[256];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s%s", CM_JOURNAL_MAGIC,
                                "7fffffff 00000000 x\n");
    put_file(f->path, buf, n);
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(file_len(f->path), CM_JOURNAL_MAGIC_LEN);
    assert_int_equal(cm_journal_close(&j), 0);
}

/* A file in no framing, opened without the upgrade: refused, left as it was. */
static void test_not_a_journal(void **st)
{
    fixture_t *f = *st;
    put_file(f->path, "K 1\nJ a\n", 8);
    cm_journal_t j;
    seen_t s;
    char why[256] = "";
    assert_int_equal(cm_journal_open(&j, f->path, 0, collect, &s, why, sizeof(why)),
                     CM_ECORRUPT);
    assert_non_null(strstr(why, "not a journal"));
    assert_int_equal(file_len(f->path), 8);
}

/* The upgrade: a line log becomes a journal of its whole lines, its torn last
 * line dropped; a second open reads the journal as it is. */
static void test_upgrade_lines(void **st)
{
    fixture_t *f = *st;
    put_file(f->path, "K 1 2\nJ alice\n\nS 5 6\nP 00", 26);
    size_t recs = 0;
    assert_int_equal(cm_journal_upgrade_lines(f->path, &recs), 1);
    assert_int_equal(recs, 4);
    char text[256];
    get_file(f->path, text, sizeof(text));
    assert_memory_equal(text, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN);
    assert_non_null(strstr(text, " J alice\n"));
    assert_null(strstr(text, "P 00"));
    assert_int_equal(cm_journal_upgrade_lines(f->path, &recs), 0); /* a journal already */
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_UPGRADE_LINES, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.recs[0], "K 1 2");
    assert_string_equal(s.recs[1], "J alice");
    assert_string_equal(s.recs[2], "");
    assert_string_equal(s.recs[3], "S 5 6");
    assert_int_equal(cm_journal_close(&j), 0);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
    assert_int_equal(file_len(tmp), -1);
    /* a conversion a crash cut before its rename: the line log is whole beside
     * its ".tmp", and the next one converts it */
    put_file(f->path, "K 9\nJ bob\n", 10);
    put_file(tmp, CM_JOURNAL_MAGIC "0000", CM_JOURNAL_MAGIC_LEN + 4);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_UPGRADE_LINES, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.recs[1], "J bob");
    assert_int_equal(file_len(tmp), -1);
    assert_int_equal(cm_journal_close(&j), 0);
    /* no file: nothing to do */
    (void)unlink(f->path);
    assert_int_equal(cm_journal_upgrade_lines(f->path, &recs), 0);
}

/* Compaction and its crash points: a ".tmp" left before the rename (whole or
 * torn) leaves the old file whole and is removed at the open; after the
 * rename the new file is read; appends after a compaction go to the new file. */
static void test_compaction_crash_points(void **st)
{
    fixture_t *f = *st;
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
    write_records(f->path, 4);
    off_t old_len = file_len(f->path);

    /* crash before the rename: a whole new image, and a torn one */
    cm_journal_buf_t img = {0};
    assert_int_equal(cm_journal_buf_add(&img, "state", 5), 0);
    for (int torn = 0; torn < 2; torn++) {
        char content[256];
        memcpy(content, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN);
        memcpy(content + CM_JOURNAL_MAGIC_LEN, img.p, img.len);
        put_file(tmp, content, CM_JOURNAL_MAGIC_LEN + img.len - (torn ? 3 : 0));
        cm_journal_t j;
        seen_t s;
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_int_equal(s.n, 4);
        assert_string_equal(s.recs[3], "r3");
        assert_int_equal(file_len(f->path), old_len);
        assert_int_equal(file_len(tmp), -1);
        assert_int_equal(cm_journal_close(&j), 0);
    }

    /* the compaction itself: the buffered appends are covered by the image */
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(cm_journal_append(&j, "r4", 2), 0);
    assert_int_equal(cm_journal_compact(&j, &img), 0);
    assert_int_equal(j.len, (off_t)(CM_JOURNAL_MAGIC_LEN + img.len));
    assert_int_equal(j.synced_len, j.len);
    assert_int_equal(file_len(tmp), -1);
    assert_int_equal(cm_journal_append(&j, "after", 5), 0);
    assert_int_equal(cm_journal_close(&j), 0);
    /* after the rename: the new file */
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.recs[0], "state");
    assert_string_equal(s.recs[1], "after");
    assert_int_equal(cm_journal_close(&j), 0);
    cm_journal_buf_free(&img);
}

/* A record over CM_JOURNAL_RECORD_MAX is refused; a long one (over the read
 * window) reads back whole. */
static void test_record_sizes(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    size_t big = 200 * 1024;
    char *p = malloc(CM_JOURNAL_RECORD_MAX + 1);
    memset(p, 'x', CM_JOURNAL_RECORD_MAX + 1);
    assert_int_equal(cm_journal_append(&j, p, CM_JOURNAL_RECORD_MAX + 1), CM_EINVAL);
    assert_int_equal(cm_journal_append(&j, p, big), 0);
    assert_int_equal(cm_journal_append(&j, "tail", 4), 0);
    assert_int_equal(cm_journal_close(&j), 0);
    free(p);
    int fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    cm_journal_scan_t sc;
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_int_equal(sc.records, 2);
    assert_int_equal(sc.end, sc.size);
    assert_false(sc.is_legacy);
}

/* A writer's own descriptor: an empty file gets the magic line (not synced), a
 * torn tail is cut, a line log is refused and left as it is. */
static void test_attach(void **st)
{
    fixture_t *f = *st;
    int fd = open(f->path, O_RDWR | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    off_t len = -1;
    assert_int_equal(cm_journal_attach(fd, f->path, &len), 0);
    assert_int_equal(len, CM_JOURNAL_MAGIC_LEN);
    char frame[64];
    size_t n = cm_journal_frame(frame, sizeof(frame), "alice", 5);
    assert_int_equal(write(fd, frame, n), (ssize_t)n);
    assert_int_equal(write(fd, frame, 7), 7); /* torn */
    close(fd);
    fd = open(f->path, O_RDWR | O_APPEND);
    assert_int_equal(cm_journal_attach(fd, f->path, &len), 0);
    assert_int_equal(len, (off_t)(CM_JOURNAL_MAGIC_LEN + n));
    assert_int_equal(file_len(f->path), len);
    close(fd);
    put_file(f->path, "alice\nbob\n", 10);
    fd = open(f->path, O_RDWR | O_APPEND);
    assert_int_equal(cm_journal_attach(fd, f->path, &len), CM_ECORRUPT);
    close(fd);
    assert_int_equal(file_len(f->path), 10);
}

/* A load that parses lines: a line log converted, then its records read back
 * as lines; a journal's hole skipped and torn tail cut; no file: NULL. */
static void test_lines_open(void **st)
{
    fixture_t *f = *st;
    assert_null(cm_journal_lines_open(f->path));
    put_file(f->path, "E a 1\nD 5\nW a", 14);
    FILE *fp = cm_journal_lines_open(f->path);
    assert_non_null(fp);
    char text[128];
    size_t n = fread(text, 1, sizeof(text) - 1, fp);
    text[n] = '\0';
    fclose(fp);
    assert_string_equal(text, "E a 1\nD 5\n");
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0); /* a journal now */
    assert_int_equal(s.n, 2);
    assert_int_equal(cm_journal_close(&j), 0);
}

/* A load that must know where records were lost (cm_journal_lines_open_holes):
 * a frame zero-filled between whole ones reads as the hole's line there, once
 * for the run; the torn tail (no whole frame after it) is cut, not marked. */
static void test_lines_open_holes(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 5);
    char full[512];
    size_t n = get_file(f->path, full, sizeof(full));
    size_t fl = CM_JOURNAL_FRAME_OVERHEAD + 2;
    memset(full + CM_JOURNAL_MAGIC_LEN + fl, 0, 2 * fl); /* r1 and r2 */
    memset(full + n - 3, 0, 3);                          /* r4's end: torn */
    put_file(f->path, full, n);
    FILE *fp = cm_journal_lines_open_holes(f->path, "?");
    assert_non_null(fp);
    char text[64];
    size_t k = fread(text, 1, sizeof(text) - 1, fp);
    text[k] = '\0';
    fclose(fp);
    assert_string_equal(text, "r0\n?\nr3\n");
    fp = cm_journal_lines_open(f->path); /* no mark asked: the records only */
    assert_non_null(fp);
    k = fread(text, 1, sizeof(text) - 1, fp);
    text[k] = '\0';
    fclose(fp);
    assert_string_equal(text, "r0\nr3\n");
}

/* The magic line and the first frame zero-filled (written together, their
 * fdatasync failed, a later one of the frames after them succeeded, a power
 * cut): the frames after the hole are read, from the file and from memory
 * alike, and the lines' open does not take the file for a line log, nor one
 * whose only bytes after its NULs are a torn frame. A line log that starts
 * with NULs stays a line log. */
static void test_zeroed_magic(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 3);
    char full[512];
    size_t n = get_file(f->path, full, sizeof(full));
    size_t fl = CM_JOURNAL_FRAME_OVERHEAD + 2;
    memset(full, 0, CM_JOURNAL_MAGIC_LEN + fl);
    put_file(f->path, full, n);
    int fd = open(f->path, O_RDONLY);
    cm_journal_scan_t sc, mc;
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_false(sc.is_legacy);
    assert_int_equal(sc.records, 2);
    assert_int_equal(sc.end, (off_t)n);
    assert_int_equal(sc.first_hole, 0);
    seen_t s = {0};
    assert_int_equal(cm_journal_scan_mem(full, n, collect, &s, &mc), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.recs[0], "r1");
    assert_int_equal(mc.end, sc.end);
    assert_int_equal(mc.hole_bytes, sc.hole_bytes);
    FILE *fp = cm_journal_lines_open(f->path);
    assert_non_null(fp);
    char text[64];
    size_t k = fread(text, 1, sizeof(text) - 1, fp);
    text[k] = '\0';
    fclose(fp);
    assert_string_equal(text, "r1\nr2\n");
    put_file(f->path, "\0\0E a 1\nD 5\n", 12);
    fd = open(f->path, O_RDONLY);
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_true(sc.is_legacy);
    /* NULs, then a frame cut short (the frames before it evicted, its write
     * torn): the torn tail of an empty journal, not a line log. */
    put_file(f->path,
             "\0\0\0\0"
             "00000023 071c3b28 D e3e9",
             28);
    fd = open(f->path, O_RDONLY);
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_false(sc.is_legacy);
    assert_int_equal(sc.end, 0);
    put_file(f->path,
             "\0\0\0\0"
             "0000",
             8);
    fd = open(f->path, O_RDONLY);
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_false(sc.is_legacy);
    put_file(f->path, "\0\0\0\0", 4); /* NULs only: an empty journal */
    fd = open(f->path, O_RDONLY);
    assert_int_equal(cm_journal_scan(fd, NULL, NULL, &sc), 0);
    close(fd);
    assert_false(sc.is_legacy);
    assert_int_equal(sc.end, 0);
}

/* A whole-file rewrite (a JSON state file): exactly the bytes, the mode asked
 * for even over a stale world-readable ".tmp", no ".tmp" left; a directory that
 * is gone leaves CM_EIO. */
static void test_replace_file(void **st)
{
    fixture_t *f = *st;
    char tmp[160], got[64];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
    put_file(f->path, "old", 3);
    put_file(tmp, "stale", 5);
    assert_int_equal(chmod(tmp, 0644), 0);
    assert_int_equal(cm_journal_replace_file(f->path, "{\"k\":1}", 7, 0600), 0);
    assert_int_equal(get_file(f->path, got, sizeof(got)), 7);
    assert_string_equal(got, "{\"k\":1}");
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(access(tmp, F_OK), -1);
    char gone[160];
    snprintf(gone, sizeof(gone), "%s/no/such", f->dir);
    assert_int_equal(cm_journal_replace_file(gone, "x", 1, 0644), CM_EIO);
}

/*---- threads: the group commit and the compaction beside the appends ----*/

/* The fault seam as a disk: an fdatasync makes durable what the file held
 * when it started (its size then), no more; it takes a little while, so that
 * syncs overlap and writers wait for one another's. */
static _Atomic off_t durable_size;
static _Atomic unsigned datasyncs;

static int slow_datasync(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -1;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
    off_t was = atomic_load(&durable_size);
    while (sb.st_size > was && !atomic_compare_exchange_weak(&durable_size, &was, sb.st_size))
        ;
    atomic_fetch_add(&datasyncs, 1);
    return fdatasync(fd);
}

#define WRITERS 4
#define PER_WRITER 300

typedef struct put_rec {
    off_t end;
    char name[16];
} put_rec_t;

typedef struct writer {
    cm_journal_t *j;
    int id;
    bool check_size; /* no compaction: a logical end is the file's offset, its name synced */
    put_rec_t recs[PER_WRITER];
    int uncovered, failures;
} writer_t;

static void *writer_run(void *arg)
{
    writer_t *w = arg;
    for (int i = 0; i < PER_WRITER; i++) {
        put_rec_t *r = &w->recs[i];
        int n = snprintf(r->name, sizeof(r->name), "w%d-%d", w->id, i);
        if (cm_journal_put(w->j, r->name, (size_t)n, &r->end) != 0 ||
            cm_journal_sync_to(w->j, r->end) != 0) {
            w->failures++;
            continue;
        }
        /* durable through its end: an fdatasync that started after its write
         * covered it (and the journal says so, but for a compaction's rename
         * whose directory fsync is still to come) */
        if (w->check_size &&
            (atomic_load(&durable_size) < r->end || !cm_journal_durable(w->j, r->end)))
            w->uncovered++;
    }
    return NULL;
}

/* Writers append and each waits for its record's fdatasync: every sync that
 * returns 0 covered its record (one that started before the record was
 * written, or a length read after its fdatasync, would not), and the syncs
 * are shared (fewer fdatasyncs than records). */
static void test_group_commit(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    atomic_store(&durable_size, 0);
    atomic_store(&datasyncs, 0);
    cm_journal__datasync = slow_datasync;
    static writer_t w[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.j = &j, .id = i, .check_size = true};
        assert_int_equal(pthread_create(&th[i], NULL, writer_run, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) /* all of them before a check leaves the test */
        assert_int_equal(pthread_join(th[i], NULL), 0);
    cm_journal__datasync = fdatasync;
    for (int i = 0; i < WRITERS; i++) {
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(w[i].uncovered, 0);
    }
    assert_true(atomic_load(&datasyncs) < WRITERS * PER_WRITER);
    off_t len;
    cm_journal_lens(&j, &len, NULL, NULL);
    assert_int_equal(len, file_len(f->path));
    assert_int_equal(cm_journal_close(&j), 0);
}

static int failing_datasync(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

/* A failed fdatasync is CM_EIO to its caller and never counts; a later one
 * that succeeds does not write what it dropped, so the journal refuses every
 * end it did not cover before (running no fdatasync) until a rewrite, which
 * keeps the records and their offsets; an end covered before stays durable. */
static void test_sync_failure(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_DEFER_SYNC, &s), 0);
    off_t e0, end, end2;
    assert_int_equal(cm_journal_put(&j, "0", 1, &e0), 0);
    assert_int_equal(cm_journal_sync_to(&j, e0), 0);
    assert_int_equal(cm_journal_put(&j, "a", 1, &end), 0);
    assert_false(cm_journal_durable(&j, end));
    cm_journal__datasync = failing_datasync;
    assert_int_equal(cm_journal_sync_to(&j, end), CM_EIO);
    cm_journal__datasync = fdatasync;
    assert_true(cm_journal_dropped(&j));
    assert_false(cm_journal_durable(&j, end));
    assert_int_equal(cm_journal_put(&j, "b", 1, &end2), 0);
    assert_int_equal(cm_journal_sync_to(&j, end), CM_EIO);
    assert_int_equal(cm_journal_sync_to(&j, end2), CM_EIO);
    assert_false(cm_journal_durable(&j, end));
    assert_int_equal(cm_journal_sync_to(&j, e0), 0); /* durable before the failure */
    assert_int_equal(cm_journal_rewrite(&j), 0);
    assert_false(cm_journal_dropped(&j));
    assert_int_equal(cm_journal_sync_to(&j, end2), 0);
    assert_true(cm_journal_durable(&j, end2));
    off_t len;
    cm_journal_lens(&j, &len, NULL, NULL);
    assert_int_equal(len, end2);
    assert_int_equal(cm_journal_close(&j), 0);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.recs[2], "b");
    assert_int_equal(cm_journal_close(&j), 0);
}

/* CM_JOURNAL_REWRITE_FOUND: the records a process before left are not
 * durable before a rewrite (that process's fdatasync may have failed); a
 * new file's are. */
static void test_rewrite_found(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_false(cm_journal_dropped(&j));
    assert_int_equal(cm_journal_close(&j), 0);
    write_records(f->path, 2);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(cm_journal_dropped(&j));
    off_t end;
    cm_journal_buf_t b = {0};
    assert_int_equal(cm_journal_buf_add(&b, "x", 1), 0);
    assert_int_equal(cm_journal_buf_add(&b, "y", 1), 0);
    assert_int_equal(cm_journal_put_frames(&j, &b, &end), 0); /* one write for both */
    cm_journal_buf_free(&b);
    assert_int_equal(cm_journal_sync_to(&j, end), CM_EIO);
    assert_int_equal(cm_journal_rewrite(&j), 0);
    assert_int_equal(cm_journal_sync_to(&j, end), 0);
    assert_int_equal(cm_journal_close(&j), 0);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.recs[3], "y");
    assert_int_equal(cm_journal_close(&j), 0);
}

/* A failed writeback's pages the kernel marked clean and then evicted: what
 * the journal reads back of [stale_from, stale_to) is the disk's stale bytes
 * instead (how: 0 zeros, 1 the record's last byte changed, 2 the newline gone). */
static off_t stale_from, stale_to;
static int stale_how;

static ssize_t stale_pread(int fd, void *buf, size_t n, off_t off)
{
    ssize_t r = pread(fd, buf, n, off);
    char *p = buf;
    for (ssize_t i = 0; i < r; i++) {
        off_t o = off + i;
        if (o < stale_from || o >= stale_to)
            continue;
        if (stale_how == 0)
            p[i] = '\0';
        else if (stale_how == 1 && o == stale_to - 2)
            p[i] ^= 0x01;
        else if (stale_how == 2 && o == stale_to - 1)
            p[i] = ' ';
    }
    return r;
}

static cm_journal_fs_t stale_fs;

static void read_stale(off_t from, off_t to, int how)
{
    stale_fs = *cm_journal_fs();
    stale_fs.pread = stale_pread;
    stale_from = from;
    stale_to = to;
    stale_how = how;
    cm_journal_set_fs(&stale_fs);
}

static void tmp_gone(const char *path)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
}

/* A rewrite after a failed fdatasync reads the frames back: if they read back
 * as the disk's stale bytes (a hole, a bad checksum, a frame cut short), it
 * refuses (the journal stays dropped, no end it held is durable) rather than
 * make them durable; one that reads them back whole succeeds. The same for the
 * tail a compaction copies behind its image. */
static void test_rewrite_checks_read_back(void **st)
{
    fixture_t *f = *st;
    for (int how = 0; how < 3; how++) {
        (void)unlink(f->path);
        cm_journal_t j;
        seen_t s;
        assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_DEFER_SYNC, &s), 0);
        off_t e0, ea, eb;
        assert_int_equal(cm_journal_put(&j, "0", 1, &e0), 0);
        assert_int_equal(cm_journal_sync_to(&j, e0), 0);
        assert_int_equal(cm_journal_put(&j, "a", 1, &ea), 0);
        assert_int_equal(cm_journal_put(&j, "b", 1, &eb), 0);
        cm_journal__datasync = failing_datasync;
        assert_int_equal(cm_journal_sync_to(&j, eb), CM_EIO);
        cm_journal__datasync = fdatasync;
        assert_true(cm_journal_dropped(&j));

        read_stale(e0, ea, how);
        assert_int_equal(cm_journal_rewrite(&j), CM_EIO);
        assert_true(cm_journal_dropped(&j));
        assert_int_equal(cm_journal_sync_to(&j, eb), CM_EIO);
        tmp_gone(f->path);
        cm_journal_buf_t img = {0};
        assert_int_equal(cm_journal_buf_add(&img, "img", 3), 0);
        read_stale(ea, eb, how); /* the last frame, copied behind the image */
        assert_int_equal(cm_journal_compact_from(&j, &img, ea), CM_EIO);
        assert_true(cm_journal_dropped(&j));
        tmp_gone(f->path);
        cm_journal_buf_free(&img);

        cm_journal_set_fs(NULL);
        assert_int_equal(cm_journal_rewrite(&j), 0);
        assert_false(cm_journal_dropped(&j));
        assert_int_equal(cm_journal_sync_to(&j, eb), 0);
        assert_int_equal(cm_journal_close(&j), 0);
        assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.recs[1], "a");
        assert_string_equal(s.recs[2], "b");
        assert_int_equal(cm_journal_close(&j), 0);
    }
}

/* The holes open skipped (a power cut's zero-filled block) are copied as they
 * are: a rewrite of such a journal succeeds and reads back the same records;
 * a frame around them that reads back stale still fails it (past them, or
 * more hole bytes among them than open skipped). */
static void test_rewrite_keeps_open_holes(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 5);
    char full[512];
    size_t n = get_file(f->path, full, sizeof(full));
    off_t fl = CM_JOURNAL_FRAME_OVERHEAD + 2, second = CM_JOURNAL_MAGIC_LEN + fl;
    memset(full + second, 0, (size_t)fl);
    put_file(f->path, full, n);
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 4);
    assert_true(cm_journal_dropped(&j));
    off_t ex;
    assert_int_equal(cm_journal_put(&j, "x", 1, &ex), 0);

    read_stale(ex - CM_JOURNAL_FRAME_OVERHEAD - 1, ex, 0); /* past the holes */
    assert_int_equal(cm_journal_rewrite(&j), CM_EIO);
    assert_true(cm_journal_dropped(&j));
    read_stale(second + 2 * fl, second + 3 * fl, 0); /* "r3": a second hole */
    assert_int_equal(cm_journal_rewrite(&j), CM_EIO);
    assert_true(cm_journal_dropped(&j));
    cm_journal_set_fs(NULL);

    assert_int_equal(cm_journal_rewrite(&j), 0);
    assert_false(cm_journal_dropped(&j));
    assert_int_equal(cm_journal_sync_to(&j, ex), 0);
    assert_int_equal(cm_journal_rewrite(&j), 0); /* the hole copied again */
    assert_int_equal(cm_journal_close(&j), 0);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.recs[1], "r2");
    assert_string_equal(s.recs[4], "x");
    assert_int_equal(cm_journal_close(&j), 0);
}

/* The lines a load reads (cm_journal_lines_open): how many. */
static int load_lines(const char *path)
{
    FILE *fp = cm_journal_lines_open(path);
    assert_non_null(fp);
    int n = 0;
    char line[128];
    while (fgets(line, sizeof(line), fp))
        n++;
    fclose(fp);
    return n;
}

/* A load, then the open whose rewrite makes the log durable
 * (CM_JOURNAL_REWRITE_FOUND): pages evicted between the two reads (a failed
 * fdatasync's, marked clean) read back as the disk's zeros in the second. Its
 * rewrite would copy that hole, durable, under a state that holds the records
 * the load read; the open refuses, again until a load reads the file again,
 * and then opens what that load read. An open after a load that read the same
 * file opens it. */
static void test_rewrite_found_reads_what_the_load_read(void **st)
{
    fixture_t *f = *st;
    write_records(f->path, 4);
    cm_journal_t j;
    seen_t s;
    assert_int_equal(load_lines(f->path), 4);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 4);
    cm_journal_discard(&j);

    assert_int_equal(load_lines(f->path), 4);
    char full[512];
    size_t n = get_file(f->path, full, sizeof(full));
    off_t fl = CM_JOURNAL_FRAME_OVERHEAD + 2, second = CM_JOURNAL_MAGIC_LEN + fl;
    memset(full + second, 0, (size_t)fl); /* "r1" evicted after the load */
    put_file(f->path, full, n);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), CM_EIO);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), CM_EIO);
    assert_int_equal(open_seen(&j, f->path, 0, &s), 0); /* no rewrite: no refusal */
    assert_int_equal(cm_journal_close(&j), 0);

    assert_int_equal(load_lines(f->path), 3);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 3);
    assert_true(cm_journal_dropped(&j));
    assert_int_equal(cm_journal_rewrite(&j), 0);
    assert_int_equal(cm_journal_close(&j), 0);
    /* a later open, after the file's own writes, is not compared with that load */
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 3);
    cm_journal_discard(&j);
    /* nor one after the loader wrote the file anew from its state (a start's
     * cm_journal_replace, gw_reg_local.c) */
    assert_int_equal(load_lines(f->path), 3);
    char fr[64];
    size_t frn = cm_journal_frame(fr, sizeof(fr), "z", 1);
    assert_int_equal(cm_journal_replace(f->path, fr, frn, NULL), 0);
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_REWRITE_FOUND, &s), 0);
    assert_int_equal(s.n, 1);
    cm_journal_discard(&j);
}

typedef struct compactor {
    cm_journal_t *j;
    _Atomic int *writers_left;
    off_t mark; /* the last compaction's that succeeded (0: none) */
    int done, failed;
} compactor_t;

/* Compacts to a one-record image ("img <mark>") as often as it can while the writers run. */
static void *compactor_run(void *arg)
{
    compactor_t *c = arg;
    while (atomic_load(c->writers_left) > 0) {
        off_t mark;
        cm_journal_lens(c->j, &mark, NULL, NULL);
        char rec[32];
        int n = snprintf(rec, sizeof(rec), "img %lld", (long long)mark);
        cm_journal_buf_t img = {0};
        assert_int_equal(cm_journal_buf_add(&img, rec, (size_t)n), 0);
        if (cm_journal_compact_from(c->j, &img, mark) == 0) {
            c->mark = mark;
            c->done++;
        } else {
            c->failed++;
        }
        cm_journal_buf_free(&img);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct expect {
    const put_rec_t **v;
    size_t n, at;
    off_t mark;
    int wrong;
} expect_t;

static void expect_record(void *arg, char *rec, size_t len)
{
    expect_t *e = arg;
    char img[32];
    snprintf(img, sizeof(img), "img %lld", (long long)e->mark);
    const char *want = e->at == 0 ? img : e->at - 1 < e->n ? e->v[e->at - 1]->name : "";
    if (strlen(want) != len || memcmp(want, rec, len) != 0)
        e->wrong++;
    e->at++;
}

static int by_end(const void *a, const void *b)
{
    off_t x = (*(const put_rec_t *const *)a)->end, y = (*(const put_rec_t *const *)b)->end;
    return x < y ? -1 : x > y;
}

/* Compactions while writers append and sync: no sync fails or is left
 * uncovered, and the file read back is the last image followed by every
 * record appended after its mark, in the order written (their logical ends). */
static void test_compaction_beside_appends(void **st)
{
    fixture_t *f = *st;
    cm_journal_t j;
    seen_t s;
    assert_int_equal(open_seen(&j, f->path, CM_JOURNAL_DEFER_SYNC, &s), 0);
    cm_journal__datasync = slow_datasync;
    static writer_t w[WRITERS];
    pthread_t th[WRITERS], ct;
    _Atomic int left = WRITERS;
    compactor_t c = {.j = &j, .writers_left = &left};
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.j = &j, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_run, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&ct, NULL, compactor_run, &c), 0);
    for (int i = 0; i < WRITERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        atomic_fetch_sub(&left, 1);
    }
    assert_int_equal(pthread_join(ct, NULL), 0);
    cm_journal__datasync = fdatasync;
    for (int i = 0; i < WRITERS; i++) {
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(w[i].uncovered, 0);
    }
    assert_true(c.done > 0);
    assert_int_equal(c.failed, 0);
    off_t len, delta;
    cm_journal_lens(&j, &len, NULL, &delta);
    assert_int_equal(len - delta, file_len(f->path));
    assert_int_equal(cm_journal_close(&j), 0);

    expect_t e = {.v = calloc(WRITERS * PER_WRITER, sizeof(*e.v)), .mark = c.mark};
    for (int i = 0; i < WRITERS; i++)
        for (int k = 0; k < PER_WRITER; k++)
            if (w[i].recs[k].end > c.mark)
                e.v[e.n++] = &w[i].recs[k];
    qsort(e.v, e.n, sizeof(*e.v), by_end);
    char why[256];
    assert_int_equal(cm_journal_open(&j, f->path, 0, expect_record, &e, why, sizeof(why)), 0);
    assert_int_equal(e.wrong, 0);
    assert_int_equal(e.at, e.n + 1);
    assert_int_equal(cm_journal_close(&j), 0);
    free(e.v);
}

static int failing_fsync(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

/* A directory whose fsync fails: a state file's replace is CM_EIO (its new name may
 * not survive a power cut, and the old file is not what its writer saved), and a retry
 * writes it again; a journal's replace is not (its records are whole under either name). */
static void test_replace_file_needs_the_name_durable(void **st)
{
    fixture_t *f = *st;
    cm_journal_fs_t bad = *cm_journal_fs();
    bad.fsync = failing_fsync;
    cm_journal_set_fs(&bad);
    assert_int_equal(cm_journal_replace_file(f->path, "{}", 2, 0600), CM_EIO);
    int fd = -1;
    assert_int_equal(cm_journal_replace(f->path, "", 0, &fd), 0);
    assert_true(fd >= 0);
    close(fd);
    cm_journal_set_fs(NULL);
    assert_int_equal(cm_journal_replace_file(f->path, "{}", 2, 0600), 0);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(cm_journal_read_file(f->path, &buf, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "{}", 2);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_bytes),
        cmocka_unit_test_setup_teardown(test_append_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_torn_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_frame_mid_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_after_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_crash_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lines_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lines_open_holes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeroed_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_file_needs_the_name_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_checks_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_found_reads_what_the_load_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_keeps_open_holes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_beside_appends, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
