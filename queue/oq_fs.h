/*
 * The spool's file operations, as a table: the seam through which the
 * simulator (sim/) gives the real spool (oq_spool.c) a simulated disk that
 * tears writes, loses what was not synced at a crash, fails fsync and fills
 * up. Every entry has the POSIX call's signature and contract (a negative
 * return or NULL with errno set); oq_fs_posix() is the table of the real
 * calls, the one every product binary uses (oq_spool_opts_t.fs NULL).
 *
 * File descriptors are whatever the table hands out: the spool passes them
 * back only to the same table. Directory descriptors come from open_dir.
 */
#ifndef OQ_FS_H
#define OQ_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct oq_fs_ops {
    int (*mkdir)(const char *path, mode_t mode);
    int (*open_dir)(const char *path); /* open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) */
    int (*openat)(int dirfd, const char *name, int flags, mode_t mode);
    int (*close)(int fd);
    int (*dup)(int fd);
    ssize_t (*read)(int fd, void *buf, size_t n);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*ftruncate)(int fd, off_t len);
    int (*fstat)(int fd, struct stat *st);
    int (*fstatat)(int dirfd, const char *name, struct stat *st, int flags);
    int (*renameat)(int olddirfd, const char *oldname, int newdirfd, const char *newname);
    int (*unlinkat)(int dirfd, const char *name, int flags);
    int (*flock)(int fd, int op);
    /* Calls fn(name, ctx) for each entry of directory `path`; 0 or -1 (errno). */
    int (*list)(const char *path, void (*fn)(const char *name, void *ctx), void *ctx);
    /* A read-only view of the first len bytes of fd (mmap MAP_SHARED), or
     * NULL; unmap gives it back. */
    const unsigned char *(*map)(int fd, size_t len);
    void (*unmap)(const unsigned char *p, size_t len);
} oq_fs_ops_t;

/* The real calls. Thread-safe (a static table). */
const oq_fs_ops_t *oq_fs_posix(void);

#endif
