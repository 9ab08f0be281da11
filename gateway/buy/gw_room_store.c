/*
 * Fair start: one gateway's waiting-room log, <data_dir>/fair/<sale>.room
 * (see gw_fair.h, "Durability of one gateway's room", for what it keeps and
 * gw_room.c for what each line means). The file is a journal
 * (common/cm_journal.h): each line is one checksummed frame, a bad frame is
 * skipped (a torn tail cut off), and a room log of the line format before
 * the journal is converted at the load. This file does the file: lines
 * appended with one write(2) each, a torn tail cut back, fdatasync at the seal
 * and at most every GW_WR_SYNC_MS for the others (by the lottery thread's
 * tick, never with the log's lock held across it: the worker loops append
 * meanwhile), and through its end on demand (gw_fair__room_store_flush: fsync
 * durability's group commit, for the token claims of the orders it answers),
 * read back line by line, and compacted by the lottery thread once it is
 * more than twice as long as the state it records (gw_fair__room_store_compact).
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void gw_fair__room_store_init(gw_room_store_t *st)
{
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->sync_cv, NULL);
    st->sync_inflight = 0;
    st->sync_inflight_upto = 0;
    st->fd = -1;
    st->len = 0;
    st->synced_len = 0;
    st->gen = 0;
    st->dirty = false;
    st->synced_ms = 0;
    st->err_ms = 0;
    st->cfd = -1;
    st->clen = st->csynced = st->cmark = 0;
    st->cgen = 0;
    st->cfailed = false;
    st->dir_unsynced = false;
    st->base_len = 0;
    atomic_init(&st->compactions, 0);
    atomic_init(&st->claim_syncs, 0);
    atomic_init(&st->claim_sync_failures, 0);
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
 * survives a power cut. 0 or CM_EIO (logged). */
static int store_dir_sync(gw_fair_sale_t *fs)
{
    int dfd = open(fs->f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : CM_EIO;
    if (rc != 0)
        store_trouble(fs, "directory fsync");
    if (dfd >= 0)
        close(dfd);
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
        int dfd = open(fs->f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : -1;
        e = errno;
        if (dfd >= 0)
            close(dfd);
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
    int n = snprintf(line, sizeof(line), "K %016llx %016llx %016llx %016llx",
                     (unsigned long long)fs->wr_key.k0, (unsigned long long)fs->wr_key.k1,
                     (unsigned long long)fs->wr_seed.k0, (unsigned long long)fs->wr_seed.k1);
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

int gw_fair__room_store_line(gw_fair_sale_t *fs, bool sync, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 1)
        return CM_EINVAL;
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_open(fs);
    if (rc == 0)
        rc = store_write(fs, line, (size_t)n);
    if (rc == 0 && sync)
        rc = store_sync(fs);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void gw_fair__room_store_sync(gw_fair_sale_t *fs)
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

int gw_fair__room_store_flush(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_flush(fs);
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_add_explicit(rc == 0 ? &st->claim_syncs : &st->claim_sync_failures, 1,
                              memory_order_relaxed);
    return rc;
}

int gw_fair__room_store_durable(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_flush(fs);
    pthread_mutex_unlock(&st->mu);
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

int gw_fair__room_store_drop(gw_fair_sale_t *fs)
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

size_t gw_fair__room_store_read(gw_fair_sale_t *fs, void (*apply)(gw_fair_sale_t *, char *))
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

bool gw_fair__room_store_compact_due(gw_fair_sale_t *fs, bool mark)
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
 * The new file is built beside the log while the loops go on appending:
 * the state (image), then the log's lines since the state was copied
 * (cmark..len, under mu), then every line appended as it is appended
 * (store_write) and synced with the log (store_sync). It replaces the log
 * only once an fdatasync covers in it every line a sync already reported
 * durable in the log; so the rename under mu is the only step the loops wait
 * for, and no fdatasync runs under mu.
 */
int gw_fair__room_store_compact(gw_fair_sale_t *fs, const char *image, size_t image_len)
{
    gw_room_store_t *st = &fs->wr_store;
    char path[700], tmp[710];
    store_path(fs, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* the image's lines as the journal's frames, after its magic line */
    cm_journal_buf_t frames = {0};
    for (const char *p = image, *end = image + image_len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        (void)cm_journal_buf_add(&frames, p, l); /* a line is far below the record limit */
        p += l + 1;
    }
    size_t n = CM_JOURNAL_MAGIC_LEN + frames.len;
    int tfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    bool ok = tfd >= 0 && cm_journal_write_all(tfd, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN) == 0 &&
              cm_journal_write_all(tfd, frames.p, frames.len) == 0;
    cm_journal_buf_free(&frames);
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
