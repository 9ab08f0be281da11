/*
 * Fair start: one gateway's waiting-room log, <data_dir>/fair/<sale>.room
 * (see gw_fair.h, "Durability of one gateway's room", for what it keeps and
 * gw_room.c for what each line means). This file does the file: lines
 * appended with one write(2) each, a torn tail cut back, fdatasync at the seal
 * and at most every GW_WR_SYNC_MS for the others (by the lottery thread's
 * tick), read back line by line.
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
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void gw_fair__room_store_init(gw_room_store_t *st)
{
    pthread_mutex_init(&st->mu, NULL);
    st->fd = -1;
    st->len = 0;
    st->dirty = false;
    st->synced_ms = 0;
    st->err_ms = 0;
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
    int64_t now = cm_wall_ms();
    if (now - fs->wr_store.err_ms < 5000)
        return;
    fs->wr_store.err_ms = now;
    cm_log_error("fair", "waiting-room log", "sale=%s what=%s err=%s", fs->sale_id, what,
                 strerror(errno));
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
    st->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    struct stat sb;
    if (st->fd < 0 || fstat(st->fd, &sb) != 0) {
        store_trouble(fs, "open");
        if (st->fd >= 0)
            close(st->fd);
        st->fd = -1;
        return CM_EIO;
    }
    st->len = sb.st_size;
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
    if (rc == 0 && sync) {
        if (fdatasync(st->fd) != 0) {
            store_trouble(fs, "fdatasync");
            rc = CM_EIO;
        } else {
            st->dirty = false;
            st->synced_ms = cm_wall_ms();
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void gw_fair__room_store_sync(gw_fair_sale_t *fs, int64_t now_ms)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    if (st->fd >= 0 && st->dirty && now_ms - st->synced_ms >= GW_WR_SYNC_MS) {
        if (fdatasync(st->fd) != 0) {
            store_trouble(fs, "fdatasync");
        } else {
            st->dirty = false;
            st->synced_ms = now_ms;
        }
    }
    pthread_mutex_unlock(&st->mu);
}

int gw_fair__room_store_drop(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    if (st->fd >= 0)
        close(st->fd);
    st->fd = -1;
    st->len = 0;
    st->dirty = false;
    char path[700];
    store_path(fs, path, sizeof(path));
    int rc = unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
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
    char line[512];
    size_t lines = 0, bad = 0;
    off_t good = 0; /* the end of the last whole line */
    while (fgets(line, sizeof(line), fp)) {
        size_t n = strlen(line);
        /* a line without its newline is a write cut short (never answered):
         * the last one is cut off the file, or the next line appended would
         * be glued to it */
        if (!n || line[n - 1] != '\n') {
            bad++;
            if (!feof(fp)) { /* an overlong line (not one of ours): skipped whole */
                int c;
                while ((c = fgetc(fp)) != EOF && c != '\n')
                    n++;
                if (c == '\n') {
                    good += (off_t)n + 1;
                    continue;
                }
            }
            if (truncate(path, good) != 0)
                cm_log_error("fair", "cannot cut a torn line off the waiting-room log",
                             "sale=%s err=%s", fs->sale_id, strerror(errno));
            break;
        }
        good += (off_t)n;
        line[n - 1] = '\0';
        if (lines == 0 && line[0] != 'K') { /* no keys: nothing after them can be read */
            bad++;
            break;
        }
        apply(fs, line);
        lines++;
    }
    fclose(fp);
    if (bad)
        cm_log_warn("fair", "waiting-room log has torn or unreadable lines; skipped",
                    "sale=%s lines=%zu", fs->sale_id, bad);
    if (lines == 0) /* nothing usable (a torn key line): start a new log with new keys */
        (void)unlink(path);
    return lines;
}
