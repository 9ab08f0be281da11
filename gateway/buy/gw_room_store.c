/*
 * Fair start: one gateway's waiting room, gw_fair__room_local_ops: its core
 * (gw_room_core.c decides, under wr_mu) and its log, <data_dir>/fair/<sale>.room
 * (see gw_fair.h, "Durability of one gateway's room", for what it keeps and
 * gw_room_core.c's replay for what each line means). The file is a journal
 * (common/cm_journal.h): each line is one checksummed frame, a bad frame is
 * skipped (a torn tail cut off), and a room log of the line format before
 * the journal is converted at the load. This file does the file: lines
 * appended with one write(2) each, a torn tail cut back, fdatasync at the seal
 * and at most every GW_WR_SYNC_MS for the others (by the lottery thread's
 * tick, never with the log's lock held across it: the worker loops append
 * meanwhile), and through its end on demand (local_sync: fsync
 * durability's group commit, for the token claims of the orders it answers),
 * read back line by line, and compacted by the lottery thread once it is
 * more than twice as long as the state it records (room_compact).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_time.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A dirty log is fdatasync'd by the lottery thread's first tick this long or more after
 * its last sync. */
#define GW_WR_SYNC_MS 100
/* The longest line the load reads as one of the log's own (with its newline). */
#define GW_WR_LINE_MAX 511

void gw_fair__room_store_init(gw_room_store_t *st)
{
    *st = (gw_room_store_t){.fd = -1, .cfd = -1}; /* every count and length 0 */
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->sync_cv, NULL);
}

void gw_fair__room_store_deinit(gw_room_store_t *st)
{
    if (st->fd >= 0) {
        if (st->dirty)
            (void)fdatasync(st->fd);
        close(st->fd);
    }
    st->fd = -1;
    pthread_cond_destroy(&st->sync_cv);
    pthread_mutex_destroy(&st->mu);
}

static void store_path(const gw_fair_sale_t *fs, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.room", fs->f->dir, fs->sale_id);
}

/* Logs a failed write at most once in 5 s. st->mu held. */
static void store_trouble(gw_fair_sale_t *fs, const char *what)
{
    int64_t now = (int64_t)cm_mono_ms();
    if (fs->wr_store.err_ms && now - fs->wr_store.err_ms < 5000)
        return;
    fs->wr_store.err_ms = now;
    cm_log_error("fair", "waiting-room log", "sale=%s what=%s err=%s", fs->sale_id, what,
                 strerror(errno));
}

/* fsync of the log's directory: a new log, its removal or a compaction's rename
 * survives a power cut. 0 or CM_EIO (errno set). */
static int dir_fsync(const gw_fair_sale_t *fs)
{
    char path[700];
    store_path(fs, path, sizeof(path));
    return cm_journal_dir_sync(path);
}

/* dir_fsync, a failure logged. */
static int store_dir_sync(gw_fair_sale_t *fs)
{
    int rc = dir_fsync(fs);
    if (rc != 0)
        store_trouble(fs, "directory fsync");
    return rc;
}

/* fdatasync of the log: st->mu held on entry and on return, but not across
 * the call, so that the worker loops' appends and claims go on meanwhile (a
 * dup of the fd keeps the file open should a drop close it). On success the
 * log is durable through the length it had at the call (synced_len), unless
 * the file was dropped or reopened meanwhile. While a compaction runs, its new
 * file is synced too: a line this sync makes durable must stay durable once
 * that file replaces the log; after the rename, the directory is too, until
 * an fsync of it succeeded. 0 or CM_EIO. */
static int store_sync(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    int fd = fcntl(st->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        store_trouble(fs, "dup");
        return CM_EIO;
    }
    int cfd = -1;
    if (st->cfd >= 0 && !st->cfailed && (cfd = fcntl(st->cfd, F_DUPFD_CLOEXEC, 0)) < 0)
        st->cfailed = true; /* the compaction is given up: nothing of this sync is in it */
    off_t upto = st->len, cupto = st->clen;
    unsigned gen = st->gen;
    bool dir = st->dir_unsynced;
    st->dirty = false; /* an append during the sync sets it again */
    st->sync_inflight++;
    if (upto > st->sync_inflight_upto)
        st->sync_inflight_upto = upto;
    pthread_mutex_unlock(&st->mu);
    int rc = fdatasync(fd), e = errno;
    close(fd);
    int crc = cfd >= 0 ? fdatasync(cfd) : 0;
    if (cfd >= 0)
        close(cfd);
    if (rc == 0 && dir) {
        rc = dir_fsync(fs);
        e = errno;
    }
    pthread_mutex_lock(&st->mu);
    if (--st->sync_inflight == 0)
        st->sync_inflight_upto = 0;
    pthread_cond_broadcast(&st->sync_cv);
    if (cfd >= 0 && st->gen == gen) {
        if (crc != 0)
            st->cfailed = true;
        else if (cupto > st->csynced)
            st->csynced = cupto;
    } else if (cfd >= 0 && crc != 0) {
        rc = -1; /* the compaction's file became the log: its lines are not known durable */
        e = EIO;
    }
    if (rc != 0) {
        st->dirty = true;
        errno = e;
        store_trouble(fs, "fdatasync");
        return CM_EIO;
    }
    st->synced_ms = (int64_t)cm_mono_ms();
    if (st->gen == gen && upto > st->synced_len)
        st->synced_len = upto;
    if (st->gen == gen && dir)
        st->dir_unsynced = false;
    return 0;
}

/* Whole frames at the end of the file (st->mu held, fd open). 0 or CM_EIO. */
static int store_write_frames(gw_fair_sale_t *fs, const char *line, size_t len)
{
    gw_room_store_t *st = &fs->wr_store;
    ssize_t w = write(st->fd, line, len);
    if (w != (ssize_t)len) {
        /* a short write (a full disk) left part of a frame: the next one would
         * follow it and both be cut at the load. Cut it off; if that fails
         * too, no more lines (the next append opens the file again). */
        store_trouble(fs, "write");
        if (w > 0 && ftruncate(st->fd, st->len) != 0) {
            close(st->fd);
            st->fd = -1;
        }
        return CM_EIO;
    }
    st->len += (off_t)len;
    st->dirty = true;
    if (st->cfd >= 0 && !st->cfailed) { /* a compaction's file gets every frame too */
        if (write(st->cfd, line, len) == (ssize_t)len)
            st->clen += (off_t)len;
        else
            st->cfailed = true; /* the compaction is given up; the log has the line */
    }
    return 0;
}

/* One line (len bytes, no newline) as one frame at the end of the file (st->mu
 * held, fd open). 0 or CM_EIO. */
static int store_write(gw_fair_sale_t *fs, const char *line, size_t len)
{
    char frame[GW_WR_LINE_MAX + CM_JOURNAL_FRAME_OVERHEAD];
    size_t n = cm_journal_frame(frame, sizeof(frame), line, len);
    return n ? store_write_frames(fs, frame, n) : CM_EINVAL;
}

/* The "K" line of the room's keys: its length. */
static int key_line(char *out, size_t cap, cm_hash_key_t key, cm_hash_key_t seed)
{
    return snprintf(out, cap, "K %016llx %016llx %016llx %016llx", (unsigned long long)key.k0,
                    (unsigned long long)key.k1, (unsigned long long)seed.k0,
                    (unsigned long long)seed.k1);
}

/* Opens the log for appends; a new (empty) one starts with the room's keys. st->mu held. */
static int store_open(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    if (st->fd >= 0)
        return 0;
    char path[700];
    store_path(fs, path, sizeof(path));
    st->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    struct stat sb;
    if (st->fd < 0 || fstat(st->fd, &sb) != 0) {
        store_trouble(fs, "open");
        if (st->fd >= 0)
            close(st->fd);
        st->fd = -1;
        return CM_EIO;
    }
    st->gen++;
    st->len = sb.st_size;
    st->synced_len = 0; /* what a crash left may be in the page cache only */
    /* a torn or bad tail is cut (the load cut it already, unless a write since
     * failed and its cut-off too); a line log the load could not convert is
     * left for the next start's, and no line goes after it */
    int rc = st->len > 0 ? cm_journal_recover(st->fd, path, NULL, NULL, &st->len) : 0;
    if (rc != 0) {
        if (rc == CM_ECORRUPT)
            errno = EINVAL;
        store_trouble(fs, rc == CM_ECORRUPT ? "a line log not converted" : "cut a torn frame");
        close(st->fd);
        st->fd = -1;
        return CM_EIO;
    }
    if (st->len > 0)
        return 0;
    /* the magic line and the keys first, synced: every place and replay id after
     * them derives from them */
    char line[128], head[CM_JOURNAL_MAGIC_LEN + sizeof(line) + CM_JOURNAL_FRAME_OVERHEAD];
    int n = key_line(line, sizeof(line), fs->wr_core.key, fs->wr_seed);
    memcpy(head, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN);
    size_t hn = CM_JOURNAL_MAGIC_LEN + cm_journal_frame(head + CM_JOURNAL_MAGIC_LEN,
                                                        sizeof(head) - CM_JOURNAL_MAGIC_LEN, line,
                                                        (size_t)n);
    if (ftruncate(st->fd, 0) != 0 || store_write_frames(fs, head, hn) != 0 ||
        fdatasync(st->fd) != 0) {
        store_trouble(fs, "keys");
        close(st->fd);
        st->fd = -1;
        (void)unlink(path);
        return CM_EIO;
    }
    st->dirty = false;
    st->synced_len = st->len;
    store_dir_sync(fs);
    return 0;
}

/* Appends one line (n bytes, no newline) with one write(2); a new log starts with
 * a "K" line of the room's keys (wr_core.key, wr_seed: wr_mu held, or keys that no longer
 * change). 0, CM_EIO or CM_EINVAL. Thread-safe. */
static int store_line(gw_fair_sale_t *fs, const char *line, size_t n)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_open(fs);
    if (rc == 0)
        rc = store_write(fs, line, n);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* fdatasync if lines were written GW_WR_SYNC_MS or more (monotonic) since the
 * last; the log's lock is not held across the fdatasync. Lottery thread. */
static void store_tick_sync(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    if (st->fd >= 0 && st->dirty && (int64_t)cm_mono_ms() - st->synced_ms >= GW_WR_SYNC_MS)
        (void)store_sync(fs);
    pthread_mutex_unlock(&st->mu);
}

/* fdatasync through the log's length now, unless one covered it (st->mu held). */
static int store_flush(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    int rc = 0;
    /* Group commit: a sync in flight that started past this call's lines (another
     * worker's batch, the lottery thread's tick) is waited for, not doubled; if it
     * failed, this call syncs itself. */
    off_t want = st->len;
    unsigned gen = st->gen;
    while (st->sync_inflight && st->sync_inflight_upto >= want && st->gen == gen &&
           st->synced_len < want)
        pthread_cond_wait(&st->sync_cv, &st->mu);
    if (st->gen == gen && st->synced_len >= want)
        return 0;
    /* synced_len, not dirty: a sync of the lottery thread in flight has
     * cleared dirty before its fdatasync returned */
    if (st->synced_len < st->len) {
        if (st->fd >= 0) {
            rc = store_sync(fs); /* logs its own failure */
        } else { /* closed after a write whose cut-off failed: the lines it held unsynced are
                  * out of reach */
            errno = EBADF;
            store_trouble(fs, "fdatasync (the log was closed)");
            rc = CM_EIO;
        }
    }
    return rc;
}

/* fdatasync of the log through its length now (every line whose write(2) returned
 * before the call), unless an fdatasync covered it already or one running covers it
 * (waited for: a group commit across the worker loops); no GW_WR_SYNC_MS interval.
 * The log's lock is not held across the fdatasync. 0 or CM_EIO. Thread-safe
 * (blocks on the disk: off the loops). */
static int store_durable(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_flush(fs);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* store_durable for the token claims of the orders a group commit answers: counts
 * claim_syncs, and claim_sync_failures on a failure (logged, rate limited). */
static int local_sync(gw_fair_sale_t *fs)
{
    int rc = store_durable(fs);
    atomic_fetch_add_explicit(rc == 0 ? &fs->wr_store.claim_syncs
                                      : &fs->wr_store.claim_sync_failures,
                              1, memory_order_relaxed);
    return rc;
}

void gw_fair__room_store_len(gw_fair_sale_t *fs, off_t *len, off_t *synced_len)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    *len = st->len;
    *synced_len = st->synced_len;
    pthread_mutex_unlock(&st->mu);
}

static int local_drop(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    if (st->fd >= 0)
        close(st->fd);
    st->fd = -1;
    st->gen++;
    st->len = 0;
    st->synced_len = 0;
    st->dirty = false;
    st->dir_unsynced = false;
    st->base_len = 0;
    st->cfd = -1; /* a compaction's file is its own to close: it finds the log dropped */
    char path[700];
    store_path(fs, path, sizeof(path));
    int rc = unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
    char tmp[710];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    (void)unlink(tmp); /* what a compaction cut by a crash left */
    if (rc == 0)       /* a sale made again under this id must not find this room */
        store_dir_sync(fs);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* What the load's records go through (room_record). */
typedef struct room_read {
    gw_fair_sale_t *fs;
    void (*apply)(gw_fair_sale_t *, char *);
    size_t lines, bad;
    bool stop; /* no keys: nothing after them can be read */
} room_read_t;

static void room_record(void *arg, char *rec, size_t len)
{
    room_read_t *rd = arg;
    if (rd->stop)
        return;
    /* not one of ours (a line log's zero-filled block after a power cut, an
     * overlong line, kept whole by its conversion): skipped */
    bool unreadable = len >= GW_WR_LINE_MAX || memchr(rec, '\0', len) != NULL;
    if (rd->lines == 0 && (unreadable || rec[0] != 'K')) {
        rd->bad++;
        rd->stop = true;
        return;
    }
    if (unreadable) {
        rd->bad++;
        return;
    }
    rd->apply(rd->fs, rec);
    rd->lines++;
}

/* Calls apply with every line of the log (a journal's record, NUL-terminated; the
 * first is the "K" line), holes skipped and a torn tail cut off the file
 * (cm_journal_recover), removes a log without a readable key line. A log in the
 * line format before the journal is converted to it first (atomically; if that
 * fails, nothing is read and the file is left for the next start's load).
 * Returns the lines applied. Single-threaded (open). */
static size_t store_read(gw_fair_sale_t *fs, void (*apply)(gw_fair_sale_t *, char *))
{
    char path[700];
    store_path(fs, path, sizeof(path));
    /* the upgrade: a room log of the line format is rewritten as a journal first
     * (atomically: a crash leaves the line log, converted at the next start) */
    size_t converted = 0;
    int up = cm_journal_upgrade_lines(path, &converted);
    if (up > 0)
        cm_log_info("fair", "waiting-room log converted to the journal framing",
                    "sale=%s lines=%zu", fs->sale_id, converted);
    else if (up < 0) /* left as it is; store_open appends nothing to it */
        return 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 0;
    room_read_t rd = {.fs = fs, .apply = apply};
    off_t len = 0;
    int rc = cm_journal_recover(fd, path, room_record, &rd, &len); /* logs a cut */
    close(fd);
    if (rc != 0)
        cm_log_error("fair", "cannot read the waiting-room log", "sale=%s err=%s", fs->sale_id,
                     cm_strerror(rc));
    if (rd.bad)
        cm_log_warn("fair", "waiting-room log has unreadable lines; skipped", "sale=%s lines=%zu",
                    fs->sale_id, rd.bad);
    if (rc == 0 && rd.lines == 0) /* nothing usable (no key line): a new log with new keys */
        (void)unlink(path);
    return rd.lines;
}

/*---- compaction ----*/

/* Whether the log is due a compaction (GW_WR_COMPACT_MIN_BYTES); if so and mark,
 * marks its length now as the one the room's state is about to be copied at: the
 * caller then holds wr_mu and the spent table's lock, so that no line changes that
 * state meanwhile. Lottery thread. */
static bool store_compact_due(gw_fair_sale_t *fs, bool mark)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    bool due = st->fd >= 0 && st->cfd < 0 && st->len > GW_WR_COMPACT_MIN_BYTES &&
               st->len > 2 * st->base_len;
    if (due && mark) {
        st->cmark = st->len;
        st->cgen = st->gen;
    }
    pthread_mutex_unlock(&st->mu);
    return due;
}

/* The log's bytes [from, to) at the end of tfd (st->mu held). 0 or -1. */
static int copy_tail(int fd, int tfd, off_t from, off_t to)
{
    char buf[16384];
    while (from < to) {
        size_t n = to - from < (off_t)sizeof(buf) ? (size_t)(to - from) : sizeof(buf);
        ssize_t r = pread(fd, buf, n, from);
        if (r <= 0 || cm_journal_write_all(tfd, buf, (size_t)r) != 0)
            return -1;
        from += r;
    }
    return 0;
}

/*
 * Replaces the log by img (the magic line and the frames of the room's state at
 * store_compact_due, its "K" line first) followed by the lines appended since:
 * written beside it (<sale>.room.tmp) with one write(2), fdatasync'd, renamed over
 * it, and the directory fsync'd. 0 or CM_EIO (logged; the log stays as it was).
 * Lottery thread, no lock held; blocks on the disk.
 *
 * The new file is built beside the log while the loops go on appending:
 * the state (image), then the log's lines since the state was copied
 * (cmark..len, under mu), then every line appended as it is appended
 * (store_write) and synced with the log (store_sync). It replaces the log
 * only once an fdatasync covers in it every line a sync already reported
 * durable in the log; so the rename under mu is the only step the loops wait
 * for, and no fdatasync runs under mu.
 */
static int store_compact(gw_fair_sale_t *fs, const cm_journal_buf_t *img)
{
    gw_room_store_t *st = &fs->wr_store;
    char path[700], tmp[710];
    store_path(fs, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    size_t n = img->len;
    int tfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    bool ok = tfd >= 0 && cm_journal_write_all(tfd, img->p, n) == 0;
    pthread_mutex_lock(&st->mu);
    ok =
        ok && st->fd >= 0 && st->gen == st->cgen && copy_tail(st->fd, tfd, st->cmark, st->len) == 0;
    if (ok) {
        st->cfd = tfd;
        st->clen = (off_t)n + (st->len - st->cmark);
        st->csynced = 0;
        st->cfailed = false;
    }
    off_t upto = st->clen;
    pthread_mutex_unlock(&st->mu);
    int rc = ok ? fdatasync(tfd) : -1;
    pthread_mutex_lock(&st->mu);
    if (ok && rc == 0 && upto > st->csynced)
        st->csynced = upto;
    /* every line a sync reported durable: the state stands for those before cmark */
    off_t need = (off_t)n + (st->synced_len > st->cmark ? st->synced_len - st->cmark : 0);
    ok = ok && rc == 0 && !st->cfailed && st->gen == st->cgen && st->fd >= 0 &&
         st->csynced >= need && rename(tmp, path) == 0;
    if (ok) {
        close(st->fd);
        st->fd = tfd;
        st->len = st->clen;
        st->synced_len = st->csynced;
        st->dirty = st->len > st->synced_len;
        st->gen++; /* a sync in flight on the old file does not count for this one */
        st->sync_inflight_upto = 0; /* nor does a flush of this one wait for it */
        st->dir_unsynced = true;
        st->base_len = (off_t)n;
        atomic_fetch_add_explicit(&st->compactions, 1, memory_order_relaxed);
    }
    if (st->cfd == tfd)
        st->cfd = -1;
    if (!ok && st->gen == st->cgen) /* not again before the log doubled once more */
        st->base_len = st->cmark;
    unsigned gen = st->gen;
    pthread_mutex_unlock(&st->mu);
    if (!ok) {
        if (tfd >= 0) {
            close(tfd);
            (void)unlink(tmp);
        }
        pthread_mutex_lock(&st->mu);
        store_trouble(fs, "compaction");
        pthread_mutex_unlock(&st->mu);
        return CM_EIO;
    }
    if (store_dir_sync(fs) == 0) {
        pthread_mutex_lock(&st->mu);
        if (st->gen == gen)
            st->dir_unsynced = false;
        pthread_mutex_unlock(&st->mu);
    }
    return 0;
}

/*---- spent admission tokens (one gateway's: a fleet's are Redis') ----*/

void gw_wr_spent_init(gw_wr_spent_t *s)
{
    pthread_mutex_init(&s->mu, NULL);
    s->slots = NULL;
}

void gw_wr_spent_deinit(gw_wr_spent_t *s)
{
    free(s->slots);
    s->slots = NULL;
    pthread_mutex_destroy(&s->mu);
}

void gw_wr_spent_clear(gw_wr_spent_t *s)
{
    pthread_mutex_lock(&s->mu);
    free(s->slots);
    s->slots = NULL;
    pthread_mutex_unlock(&s->mu);
}

int gw_wr_spent_claim(gw_wr_spent_t *s, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s)
{
    pthread_mutex_lock(&s->mu);
    int rc = gw_room_spent_claim(&s->slots, jti, exp_s, fp, now_s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void gw_wr_spent_settle(gw_wr_spent_t *s, uint64_t jti, bool accepted)
{
    pthread_mutex_lock(&s->mu);
    gw_room_spent_settle(s->slots, jti, accepted);
    pthread_mutex_unlock(&s->mu);
}

/*---- the room's store on one gateway: its core (gw_room_core.c) and this log ----*/

/* A record of the room's core as a line of the log: 0 or CM_EIO (logged by the
 * store). wr_mu held. */
static int rec_line(gw_fair_sale_t *fs, const gw_room_rec_t *rec)
{
    char line[32 + INV_USER_ID_MAX];
    int n = gw_room_rec_format(rec, line, sizeof(line));
    if (n < 0 || (size_t)n >= sizeof(line))
        return CM_EIO;
    return store_line(fs, line, (size_t)n);
}
/* Writes the core's records in order, the seal's again first where it
 * failed (gw_room_core_relog), and tells the core each result. Returns the
 * last record's result. wr_mu held. */
static int recs_write(gw_fair_sale_t *fs, const gw_room_out_t *out)
{
    int rc = 0;
    for (size_t i = 0; i < out->nrec; i++) {
        gw_room_rec_t s;
        if (gw_room_core_relog(&fs->wr_core, &out->rec[i], &s))
            gw_room_core_step(
                &fs->wr_core,
                &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = &s, .ok = rec_line(fs, &s) == 0},
                NULL, NULL);
        rc = rec_line(fs, &out->rec[i]);
        gw_room_core_step(
            &fs->wr_core,
            &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = &out->rec[i], .ok = rc == 0}, NULL,
            NULL);
    }
    return rc;
}

/* The start: the core seals the pre-queue; its "S" line, whose fdatasync
 * the caller runs after releasing wr_mu (seal_sync) while wr_seal_syncing
 * holds back everything that acts on the seal. A failed line is logged by
 * the store: a restart then seals again with the same joins and seed, so the
 * same ranks; it is written again before the next place's line. An empty
 * pre-queue's line needs no sync of its own, so a room without a pre-queue
 * never answers 503 for its seal. wr_mu held. */
static void prequeue_seal(gw_fair_sale_t *fs, int64_t now_ms)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale,
                 &(gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_SEAL}},
                 now_ms, &so);
    (void)recs_write(fs, &so.room.recs);
    fs->wr_seal_syncing = so.room.recs.sync && !fs->wr_core.seal_unlogged;
    if (fs->wr_core.npre)
        cm_log_info("fair", "waiting room pre-queue sealed", "sale=%s persons=%zu", fs->sale_id,
                    fs->wr_core.npre);
}

/*
 * The seal's fdatasync, by the thread that sealed, without wr_mu: the joins
 * before the seal and its "S" line are durable before any rank or place is
 * answered from it or its seed published (until then wr_seal_syncing makes
 * the other joins answer CM_EAGAIN instead of waiting: no worker loop waits
 * for this disk), and the worker loops' other work on the room goes on. A
 * failed sync is treated as a failed "S" line (the core's SEAL_SYNCED).
 * wr_mu not held.
 */
static void seal_sync(gw_fair_sale_t *fs)
{
    int rc = store_durable(fs);
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    gw_room_core_step(&fs->wr_core, &(gw_room_ev_t){.kind = GW_ROOM_EV_SEAL_SYNCED, .ok = rc == 0},
                      NULL, NULL);
    pthread_mutex_unlock(&fs->wr_mu);
}

/* A join (gw_fair_room_join's contract) decided by the core, its records written here. */
/* The join stepped through the sale's machine (its start and the time
 * decide the pre-queue, the seal), unless another thread's seal is in its
 * fdatasync: nothing is answered from it yet. wr_mu held. */
static int join_step(gw_fair_sale_t *fs, const gw_room_join_ev_t *join, gw_sale_out_t *so)
{
    if (fs->wr_seal_syncing)
        return CM_EAGAIN;
    gw_sale_step(
        &fs->sale,
        &(gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_JOIN, .join = *join}},
        join->now_ms, so);
    return so->room.rc;
}

static int local_join(gw_fair_sale_t *fs, const gw_room_join_ev_t *join, gw_wr_join_t *out)
{
    gw_sale_out_t so;
    pthread_mutex_lock(&fs->wr_mu);
    int rc = join_step(fs, join, &so);
    if (rc == GW_ROOM_SEAL) {
        prequeue_seal(fs, join->now_ms);
        if (fs->wr_seal_syncing) { /* this join sealed: it syncs, then goes on */
            pthread_mutex_unlock(&fs->wr_mu);
            seal_sync(fs);
            pthread_mutex_lock(&fs->wr_mu);
        }
        /* another thread's seal in its fdatasync meanwhile, or a reset */
        rc = atomic_load(&fs->wr_core.sealed) ? join_step(fs, join, &so) : CM_EAGAIN;
    }
    if (rc == GW_ROOM_ANSWERED) {
        /* a failed line is logged by the store: the place is kept in memory only */
        (void)recs_write(fs, &so.room.recs);
    } else if (rc == GW_ROOM_PREQUEUE) {
        /* a new person's line before they are added: not written, not added */
        rc = recs_write(fs, &so.room.recs) == 0 ? 0 : CM_EIO;
    }
    if (rc == CM_EAGAIN)
        memset(out, 0, sizeof(*out));
    else
        *out = so.room.answer;
    pthread_mutex_unlock(&fs->wr_mu);
    return rc;
}
/* One line of the log (the core's REPLAY), in the order written. */
static void room_apply(gw_fair_sale_t *fs, char *line)
{
    pthread_mutex_lock(&fs->wr_spent.mu);
    gw_room_core_step(&fs->wr_core,
                      &(gw_room_ev_t){.kind = GW_ROOM_EV_REPLAY,
                                      .line = line,
                                      .spent = &fs->wr_spent.slots,
                                      .now_s = cm_wall_ms() / 1000},
                      NULL, NULL);
    pthread_mutex_unlock(&fs->wr_spent.mu);
    if (line[0] == 'K') /* the store writes a new log's seed from this */
        fs->wr_seed = fs->wr_core.seed;
}

void gw_fair__room_load(gw_fair_sale_t *fs)
{
    size_t lines = store_read(fs, room_apply);
    gw_room_core_step(&fs->wr_core, &(gw_room_ev_t){.kind = GW_ROOM_EV_LOADED}, NULL, NULL);
    if (lines)
        cm_log_info("fair", "waiting room loaded",
                    "sale=%s prequeue=%zu sealed=%d places=%llu admitted_through=%llu", fs->sale_id,
                    fs->wr_core.npre, (int)atomic_load(&fs->wr_core.sealed),
                    (unsigned long long)atomic_load(&fs->wr_core.next),
                    (unsigned long long)(atomic_load(&fs->wr_core.front_milli) / 1000));
}

static void person_rank_add(json_t *arr, const char *person, uint64_t rank)
{
    json_array_append_new(arr, json_pack("{s:s,s:I}", "person", person, "rank", (json_int_t)rank));
}

/* The sealed pre-queue's ranks start+1.. of at most limit persons (arr: json_t *). 0. */
static int local_persons(gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit, void *arr,
                         uint64_t *total, bool *sealed, char hex[33], char *errbuf, size_t errlen)
{
    (void)errbuf;
    (void)errlen;
    pthread_mutex_lock(&fs->wr_mu);
    *sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
    *total = fs->wr_core.npre;
    for (uint64_t i = cursor; *sealed && i < *total && i - cursor < limit; i++)
        person_rank_add(arr, fs->wr_core.names + fs->wr_core.name_at[i], i + 1);
    gw_fair__seed_hex(&fs->wr_seed, hex);
    pthread_mutex_unlock(&fs->wr_mu);
    return 0;
}

static int local_claim(gw_fair_sale_t *fs, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s,
                       uint64_t *nonce)
{
    (void)nonce; /* the spent table holds one claim per token */
    int rc = gw_wr_spent_claim(&fs->wr_spent, jti, exp_s, fp, now_s);
    /* on disk before the reserve: a restart reads the token spent (a claim a
     * crash cut before its answer included: never a second order) */
    if (rc == GW_WR_CLAIMED &&
        rec_line(fs, &(gw_room_rec_t){.kind = GW_ROOM_REC_T, .a = jti, .b = fp, .c = exp_s}) != 0) {
        gw_wr_spent_settle(&fs->wr_spent, jti, false);
        return CM_EIO;
    }
    return rc;
}

static void local_settle(gw_fair_sale_t *fs, uint64_t jti, uint64_t fp, uint64_t nonce,
                         bool accepted)
{
    (void)fp;
    (void)nonce;
    /* The give-back's line before the give-back: a later claim of the token
     * (possible only after it) is then after it in the log too. Not written:
     * the token stays spent until it expires, as on disk. Both under the spent
     * table's lock: a compaction copies the table and marks the log's length
     * under it, so it never finds the line written and the token still spent. */
    char line[24];
    int n = accepted ? 0 : snprintf(line, sizeof(line), "U %016llx", (unsigned long long)jti);
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (!accepted && store_line(fs, line, (size_t)n) != 0)
        accepted = true;
    gw_room_spent_settle(fs->wr_spent.slots, jti, accepted);
    pthread_mutex_unlock(&fs->wr_spent.mu);
}

/* One record as a line of a compaction's image, framed (a line is far below the
 * record limit; a J line too long for the log was never written to it). */
static void img_rec(cm_journal_buf_t *img, const gw_room_rec_t *rec)
{
    char l[32 + INV_USER_ID_MAX];
    int n = gw_room_rec_format(rec, l, sizeof(l));
    if (n > 0 && (size_t)n < sizeof(l))
        (void)cm_journal_buf_add(img, l, (size_t)n);
}

/*
 * Rewrites the log as the lines of its state (room_apply reads them back to
 * the same room) once store_compact_due says it is due: "K"; a "J" per
 * pre-queue person; "S" if sealed; a "P" per place the table holds, in the
 * table's order (a bucket takes its places back into as many slots in any
 * order: the slot a place sits in decides nothing, its position does, and the
 * replay keeps the highest as the next); an "A" per admitted rank or place;
 * "F"; a "T" per token spent or claimed and not expired (a claim in flight
 * reads spent after a restart, as it would from the whole log). The state is
 * copied under wr_mu and the spent table's lock, with the log's length it
 * stands for, then framed without them into one buffer (the lines formatted
 * by gw_room_rec_format, without printf: a line per live place and token), and
 * written with one write(2). Lottery thread.
 */
static void room_compact(gw_fair_sale_t *fs)
{
    /* every tick: the room's locks only when it is due */
    if (!store_compact_due(fs, false))
        return;
    int64_t now_s = cm_wall_ms() / 1000;
    pthread_mutex_lock(&fs->wr_mu);
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (fs->wr_seal_syncing || !store_compact_due(fs, true)) {
        pthread_mutex_unlock(&fs->wr_spent.mu);
        pthread_mutex_unlock(&fs->wr_mu);
        return;
    }
    cm_hash_key_t key = fs->wr_core.key, seed = fs->wr_seed;
    bool sealed = atomic_load(&fs->wr_core.sealed);
    int64_t sealed_ms = fs->wr_core.sealed_ms, starts_ms = fs->wr_core.starts_ms;
    uint64_t front = atomic_load(&fs->wr_core.front_milli);
    size_t npre = fs->wr_core.npre, names_len = fs->wr_core.names_len, nplaces = 0, nspent = 0;
    char *names = npre ? cm_xmalloc(names_len) : NULL;
    uint32_t *name_at = npre ? cm_xmalloc(npre * sizeof(*name_at)) : NULL;
    int64_t *pre_exp = sealed && npre ? cm_xmalloc(npre * sizeof(*pre_exp)) : NULL;
    if (npre) {
        memcpy(names, fs->wr_core.names, names_len);
        memcpy(name_at, fs->wr_core.name_at, npre * sizeof(*name_at));
    }
    if (pre_exp)
        memcpy(pre_exp, fs->wr_core.pre_exp, npre * sizeof(*pre_exp));
    gw_wr_place_t *places = NULL;
    if (fs->wr_core.places) {
        places = cm_xmalloc(GW_ROOM_PLACES * sizeof(*places));
        for (size_t i = 0; i < GW_ROOM_PLACES; i++)
            if (fs->wr_core.places[i].tag)
                places[nplaces++] = fs->wr_core.places[i];
    }
    gw_wr_spent_slot_t *spent = NULL;
    if (fs->wr_spent.slots) {
        spent = cm_xmalloc(GW_WR_SPENT_SLOTS * sizeof(*spent));
        for (size_t i = 0; i < GW_WR_SPENT_SLOTS; i++) {
            const gw_wr_spent_slot_t *e = &fs->wr_spent.slots[i];
            if (e->jti && e->exp_s >= now_s)
                spent[nspent++] = *e;
        }
    }
    pthread_mutex_unlock(&fs->wr_spent.mu);
    pthread_mutex_unlock(&fs->wr_mu);

    /* the magic line, then the frames: sized for them all at once (a line is at
     * most 64 bytes besides a person's name, and a frame adds its overhead) */
    size_t lines = 3 + npre * (sealed ? 2 : 1) + 2 * nplaces + nspent;
    cm_journal_buf_t img = {.cap = CM_JOURNAL_MAGIC_LEN + names_len +
                                   lines * (64 + CM_JOURNAL_FRAME_OVERHEAD)};
    img.p = cm_xmalloc(img.cap);
    memcpy(img.p, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN);
    img.len = CM_JOURNAL_MAGIC_LEN;
    char l[80];
    int kn = key_line(l, sizeof(l), key, seed);
    (void)cm_journal_buf_add(&img, l, (size_t)kn);
    for (size_t i = 0; i < npre; i++)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_J,
                                       .person = names + name_at[i],
                                       .len = strlen(names + name_at[i])});
    if (sealed)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_S,
                                       .a = (uint64_t)sealed_ms,
                                       .b = (uint64_t)starts_ms});
    for (size_t i = 0; i < nplaces; i++)
        img_rec(&img,
                &(gw_room_rec_t){.kind = GW_ROOM_REC_P, .a = places[i].tag, .b = places[i].pos});
    for (size_t i = 0; pre_exp && i < npre; i++)
        if (pre_exp[i])
            img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_A, .b = i + 1, .c = pre_exp[i]});
    for (size_t i = 0; i < nplaces; i++)
        if (places[i].exp_s)
            img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_A,
                                           .a = places[i].tag,
                                           .b = places[i].pos,
                                           .c = places[i].exp_s});
    if (front)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_F, .a = front});
    for (size_t i = 0; i < nspent; i++)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_T,
                                       .a = spent[i].jti,
                                       .b = spent[i].fp,
                                       .c = spent[i].exp_s});
    free(names);
    free(name_at);
    free(pre_exp);
    free(places);
    free(spent);
    if (store_compact(fs, &img) == 0)
        cm_log_info("fair", "waiting-room log compacted", "sale=%s bytes=%zu places=%zu tokens=%zu",
                    fs->sale_id, img.len, nplaces, nspent);
    cm_journal_buf_free(&img);
}

/* Syncs and compacts the log, seals the pre-queue at the sale's start, and moves
 * the admission front at eff_per_s. Lottery thread. */
static void local_tick(gw_fair_sale_t *fs, int64_t now, int64_t dt, bool started,
                       int64_t starts_at_ms, double eff_per_s, uint32_t members)
{
    (void)members; /* the room is this gateway's alone */
    (void)starts_at_ms; /* the machine's (fs->sale.cfg) decides the seal */
    atomic_store(&fs->wr_eff_milli, (uint64_t)(eff_per_s * 1000));
    store_tick_sync(fs); /* the pre-queue's joins too */
    room_compact(fs);
    if (!started || dt <= 0)
        return; /* admissions start with the sale */
    if (!atomic_load(&fs->wr_core.sealed)) {
        pthread_mutex_lock(&fs->wr_mu);
        bool sealer = !atomic_load(&fs->wr_core.sealed);
        if (sealer)
            prequeue_seal(fs, now);
        sealer = sealer && fs->wr_seal_syncing;
        pthread_mutex_unlock(&fs->wr_mu);
        if (sealer)
            seal_sync(fs);
    }
    gw_room_out_t recs;
    pthread_mutex_lock(&fs->wr_mu);
    gw_room_core_step(&fs->wr_core,
                      &(gw_room_ev_t){.kind = GW_ROOM_EV_TICK, .eff_per_s = eff_per_s, .dt_ms = dt},
                      NULL, &recs);
    (void)recs_write(fs, &recs);
    pthread_mutex_unlock(&fs->wr_mu);
}

/* The log's lengths and syncs in the room's audit record (o: json_t *). */
static void local_audit(gw_fair_sale_t *fs, void *o)
{
    gw_room_store_t *st = &fs->wr_store;
    off_t len, synced;
    gw_fair__room_store_len(fs, &len, &synced);
    json_object_set_new(o, "log_bytes", json_integer((json_int_t)len));
    json_object_set_new(o, "log_synced_bytes", json_integer((json_int_t)synced));
    json_object_set_new(o, "log_compactions",
                        json_integer((json_int_t)atomic_load(&st->compactions)));
    json_object_set_new(o, "claim_syncs", json_integer((json_int_t)atomic_load(&st->claim_syncs)));
    json_object_set_new(o, "claim_sync_failures",
                        json_integer((json_int_t)atomic_load(&st->claim_sync_failures)));
}

const gw_room_ops_t gw_fair__room_local_ops = {
    .join = local_join,
    .tick = local_tick,
    .persons = local_persons,
    .claim = local_claim,
    .sync = local_sync,
    .settle = local_settle,
    .audit = local_audit,
    .drop = local_drop,
};
