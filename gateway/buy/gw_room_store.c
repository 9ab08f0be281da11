/*
 * Fair start: one gateway's waiting-room log, <data_dir>/fair/<sale>.room
 * (see gw_fair.h, "Durability of one gateway's room", for what it keeps and
 * gw_room.c for what each line means). This file does the file: lines
 * appended with one write(2) each, a torn tail cut back, fdatasync at the seal
 * and at most every GW_WR_SYNC_MS for the others (by the lottery thread's
 * tick, never with the log's lock held across it: the worker loops append
 * meanwhile), and through its end on demand (gw_fair__room_store_flush: fsync
 * durability's group commit, for the token claims of the orders it answers),
 * read back line by line.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
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
    st->fd = -1;
    st->len = 0;
    st->synced_len = 0;
    st->gen = 0;
    st->dirty = false;
    st->synced_ms = 0;
    st->err_ms = 0;
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

/* fsync of the log's directory: a new log, or its removal, survives a power cut. */
static void store_dir_sync(gw_fair_sale_t *fs)
{
    int dfd = open(fs->f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        store_trouble(fs, "directory fsync");
    if (dfd >= 0)
        close(dfd);
}

/* fdatasync of the log: st->mu held on entry and on return, but not across
 * the call, so that the worker loops' appends and claims go on meanwhile (a
 * dup of the fd keeps the file open should a drop close it). On success the
 * log is durable through the length it had at the call (synced_len), unless
 * the file was dropped or reopened meanwhile. 0 or CM_EIO. */
static int store_sync(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    int fd = fcntl(st->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        store_trouble(fs, "dup");
        return CM_EIO;
    }
    off_t upto = st->len;
    unsigned gen = st->gen;
    st->dirty = false; /* an append during the sync sets it again */
    pthread_mutex_unlock(&st->mu);
    int rc = fdatasync(fd), e = errno;
    close(fd);
    pthread_mutex_lock(&st->mu);
    if (rc != 0) {
        st->dirty = true;
        errno = e;
        store_trouble(fs, "fdatasync");
        return CM_EIO;
    }
    st->synced_ms = (int64_t)cm_mono_ms();
    if (st->gen == gen && upto > st->synced_len)
        st->synced_len = upto;
    return 0;
}

int gw_fair__log_cut_torn(int fd, off_t *len)
{
    char buf[512];
    off_t end = *len;
    while (end > 0) {
        size_t n = end < (off_t)sizeof(buf) ? (size_t)end : sizeof(buf);
        ssize_t r = pread(fd, buf, n, end - (off_t)n);
        if (r != (ssize_t)n)
            return CM_EIO;
        if (end == *len && buf[n - 1] == '\n')
            return 0;
        for (size_t i = n; i > 0; i--)
            if (buf[i - 1] == '\n') {
                off_t cut = end - (off_t)n + (off_t)i;
                if (ftruncate(fd, cut) != 0)
                    return CM_EIO;
                *len = cut;
                return 0;
            }
        end -= (off_t)n;
    }
    if (*len > 0 && ftruncate(fd, 0) != 0) /* not even the first line is whole */
        return CM_EIO;
    *len = 0;
    return 0;
}

/* The room log's torn tail (gw_fair__log_cut_torn). st->mu held, fd open. */
static int store_cut_torn(gw_fair_sale_t *fs)
{
    return gw_fair__log_cut_torn(fs->wr_store.fd, &fs->wr_store.len);
}

/* One whole line at the end of the file (st->mu held, fd open). 0 or CM_EIO. */
static int store_write(gw_fair_sale_t *fs, const char *line, size_t len)
{
    gw_room_store_t *st = &fs->wr_store;
    ssize_t w = write(st->fd, line, len);
    if (w != (ssize_t)len) {
        /* a short write (a full disk) left part of a line: the next one would
         * be glued to it and both lost at the load. Cut it off; if that fails
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
    return 0;
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
    if (st->len > 0 && store_cut_torn(fs) != 0) {
        store_trouble(fs, "cut a torn line");
        close(st->fd);
        st->fd = -1;
        return CM_EIO;
    }
    if (st->len > 0)
        return 0;
    /* the keys first, synced: every place and replay id after them derives from them */
    char line[128];
    int n = snprintf(line, sizeof(line), "K %016llx %016llx %016llx %016llx\n",
                     (unsigned long long)fs->wr_key.k0, (unsigned long long)fs->wr_key.k1,
                     (unsigned long long)fs->wr_seed.k0, (unsigned long long)fs->wr_seed.k1);
    if (store_write(fs, line, (size_t)n) != 0 || fdatasync(st->fd) != 0) {
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
    line[n++] = '\n';
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

int gw_fair__room_store_flush(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = 0;
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
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_add_explicit(rc == 0 ? &st->claim_syncs : &st->claim_sync_failures, 1,
                              memory_order_relaxed);
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
    char path[700];
    store_path(fs, path, sizeof(path));
    int rc = unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
    if (rc == 0) /* a sale made again under this id must not find this room */
        store_dir_sync(fs);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

size_t gw_fair__room_store_read(gw_fair_sale_t *fs, void (*apply)(gw_fair_sale_t *, char *))
{
    char path[700];
    store_path(fs, path, sizeof(path));
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    char *line = NULL;
    size_t cap = 0, lines = 0, bad = 0;
    off_t good = 0; /* the end of the last whole line */
    ssize_t n;
    while ((n = getline(&line, &cap, fp)) > 0) {
        /* a line without its newline is a write cut short (never answered):
         * it is cut off the file, or the next line appended would be glued
         * to it */
        if (line[n - 1] != '\n') {
            bad++;
            if (truncate(path, good) != 0)
                cm_log_error("fair", "cannot cut a torn line off the waiting-room log",
                             "sale=%s err=%s", fs->sale_id, strerror(errno));
            break;
        }
        good += (off_t)n;
        /* not one of ours (a zero-filled block after a power cut, an overlong
         * line): skipped whole, by its real length */
        bool unreadable = n > GW_WR_LINE_MAX || memchr(line, '\0', (size_t)n) != NULL;
        line[n - 1] = '\0';
        if (lines == 0 && (unreadable || line[0] != 'K')) { /* no keys: nothing after them can be read */
            bad++;
            break;
        }
        if (unreadable) {
            bad++;
            continue;
        }
        apply(fs, line);
        lines++;
    }
    free(line);
    fclose(fp);
    if (bad)
        cm_log_warn("fair", "waiting-room log has torn or unreadable lines; skipped",
                    "sale=%s lines=%zu", fs->sale_id, bad);
    if (lines == 0) /* nothing usable (a torn key line): start a new log with new keys */
        (void)unlink(path);
    return lines;
}
