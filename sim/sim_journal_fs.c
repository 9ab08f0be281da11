/*
 * The journal's file calls on the simulated disk (sim_journal_fs.h): each
 * path call opens the disk's directory, acts on the name in it, and closes
 * the directory again.
 */
#include "sim/sim_journal_fs.h"

#include "sim/sim_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

/* The name of path's file in the disk's one directory. */
static const char *base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int dir_open(void)
{
    return sim_disk_ops()->open_dir(".");
}

static void dir_close(int dfd)
{
    int e = errno;
    sim_disk_ops()->close(dfd);
    errno = e;
}

static int sj_open(const char *path, int flags, mode_t mode)
{
    if (flags & O_DIRECTORY)
        return sim_disk_ops()->open_dir(path);
    int dfd = dir_open();
    if (dfd < 0)
        return -1;
    int fd = sim_disk_ops()->openat(dfd, base(path), flags, mode);
    if (fd >= 0) /* a failed fdatasync's pages may be evicted from it */
        sim_disk_journal_file(fd);
    dir_close(dfd);
    return fd;
}

static int sj_close(int fd)
{
    return sim_disk_ops()->close(fd);
}

static int sj_dup(int fd)
{
    return sim_disk_ops()->dup(fd);
}

static ssize_t sj_pread(int fd, void *buf, size_t n, off_t off)
{
    return sim_disk_ops()->pread(fd, buf, n, off);
}

static ssize_t sj_write(int fd, const void *buf, size_t n)
{
    return sim_disk_ops()->write(fd, buf, n);
}

static int sj_ftruncate(int fd, off_t len)
{
    return sim_disk_ops()->ftruncate(fd, len);
}

static int sj_fstat(int fd, struct stat *st)
{
    return sim_disk_ops()->fstat(fd, st);
}

static int sj_fdatasync(int fd)
{
    return sim_disk_ops()->fdatasync(fd);
}

static int sj_fsync(int fd)
{
    return sim_disk_ops()->fsync(fd);
}

static int sj_rename(const char *from, const char *to)
{
    int dfd = dir_open();
    if (dfd < 0)
        return -1;
    int rc = sim_disk_ops()->renameat(dfd, base(from), dfd, base(to));
    dir_close(dfd);
    return rc;
}

static int sj_unlink(const char *path)
{
    int dfd = dir_open();
    if (dfd < 0)
        return -1;
    int rc = sim_disk_ops()->unlinkat(dfd, base(path), 0);
    dir_close(dfd);
    return rc;
}

/* The disk's one directory is there already (EEXIST). */
static int sj_mkdir(const char *path, mode_t mode)
{
    return sim_disk_ops()->mkdir(path, mode);
}

static const cm_journal_fs_t sj_fs = {
    .open = sj_open,
    .close = sj_close,
    .dup = sj_dup,
    .pread = sj_pread,
    .write = sj_write,
    .ftruncate = sj_ftruncate,
    .fstat = sj_fstat,
    .fdatasync = sj_fdatasync,
    .fsync = sj_fsync,
    .rename = sj_rename,
    .unlink = sj_unlink,
    .mkdir = sj_mkdir,
};

const cm_journal_fs_t *sim_journal_fs(void)
{
    return &sj_fs;
}
