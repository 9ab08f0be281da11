/*
 * A test's journal table (common/cm_journal.h) over the real calls that
 * records each unlink and each directory fsync, in order: whether a removal
 * was made durable (its directory fsync'd after it). Header-only: each test
 * program that includes it has its own copy. Single-threaded.
 */
#ifndef TS_JREC_H
#define TS_JREC_H

#include "common/cm_journal.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The journal's table over the real calls, recording each unlink and each directory fsync
 * (its path), in order. */
static const cm_journal_fs_t *rec_real;
static cm_journal_fs_t rec_table;
static char rec_ev[64][200];
static int rec_n, rec_dfd = -1;
static char rec_dir[160];

static void rec_add(const char *what, const char *path)
{
    if (rec_n < 64)
        snprintf(rec_ev[rec_n++], sizeof(rec_ev[0]), "%s %s", what, path);
}

static int rec_open(const char *path, int flags, mode_t mode)
{
    int fd = rec_real->open(path, flags, mode);
    if (fd >= 0 && (flags & O_DIRECTORY)) {
        rec_dfd = fd;
        snprintf(rec_dir, sizeof(rec_dir), "%s", path);
    }
    return fd;
}

static int rec_fsync(int fd)
{
    int r = rec_real->fsync(fd);
    if (r == 0 && fd == rec_dfd)
        rec_add("sync", rec_dir);
    return r;
}

static int rec_unlink(const char *path)
{
    int r = rec_real->unlink(path);
    if (r == 0)
        rec_add("unlink", path);
    return r;
}

/* Whether path was unlinked and its directory fsync'd after. */
static bool ts_jrec_removed_durably(const char *path)
{
    char want[200], dir[200];
    snprintf(want, sizeof(want), "unlink %s", path);
    snprintf(dir, sizeof(dir), "sync %.*s", (int)(strrchr(path, '/') - path), path);
    for (int i = 0; i < rec_n; i++)
        if (strcmp(rec_ev[i], want) == 0)
            for (int k = i + 1; k < rec_n; k++)
                if (strcmp(rec_ev[k], dir) == 0)
                    return true;
    return false;
}

/* The recording table in force from now on (cm_journal_set_fs(NULL) puts the real one back). */
static void ts_jrec_start(void)
{
    cm_journal_set_fs(NULL);
    rec_real = cm_journal_fs();
    rec_table = *rec_real;
    rec_table.open = rec_open;
    rec_table.fsync = rec_fsync;
    rec_table.unlink = rec_unlink;
    rec_n = 0;
    rec_dfd = -1;
    cm_journal_set_fs(&rec_table);
}

#endif
