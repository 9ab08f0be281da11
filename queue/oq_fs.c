/*
 * The real file operations behind the spool's seam (oq_fs.h).
 */
#include "queue/oq_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

static int px_open_dir(const char *path)
{
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int px_openat(int dirfd, const char *name, int flags, mode_t mode)
{
    return openat(dirfd, name, flags, mode);
}

static int px_list(const char *path, void (*fn)(const char *name, void *ctx), void *ctx)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        fn(de->d_name, ctx);
    closedir(d);
    return 0;
}

static const unsigned char *px_map(int fd, size_t len)
{
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    return m == MAP_FAILED ? NULL : m;
}

static void px_unmap(const unsigned char *p, size_t len)
{
    munmap((void *)p, len);
}

static const oq_fs_ops_t posix_ops = {
    .mkdir = mkdir,
    .open_dir = px_open_dir,
    .openat = px_openat,
    .close = close,
    .dup = dup,
    .read = read,
    .pread = pread,
    .write = write,
    .pwrite = pwrite,
    .fsync = fsync,
    .fdatasync = fdatasync,
    .ftruncate = ftruncate,
    .fstat = fstat,
    .fstatat = fstatat,
    .renameat = renameat,
    .unlinkat = unlinkat,
    .flock = flock,
    .list = px_list,
    .map = px_map,
    .unmap = px_unmap,
};

const oq_fs_ops_t *oq_fs_posix(void)
{
    return &posix_ops;
}
