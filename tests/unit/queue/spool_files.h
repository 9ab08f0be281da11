/*
 * What the spool's unit tests do to its segment files behind its back: name a
 * segment's file, and zero a range of it in place, as a power loss leaves the
 * pages a failed fdatasync dropped (the file keeps its size, the bytes read
 * back as zeros). Static functions in a header: each test file is an
 * executable of its own. Include it after <cmocka.h> (it asserts).
 */
#ifndef FLASHGATE_TESTS_SPOOL_FILES_H
#define FLASHGATE_TESTS_SPOOL_FILES_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/* Writes the path of segment seg of the spool in dir (queue/oq_spool.c names
 * it spool-<seg in 16 hex digits>.log) to buf of len bytes; returns buf. */
static inline char *spool_seg_path(const char *dir, uint64_t seg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/spool-%016llx.log", dir, (unsigned long long)seg);
    return buf;
}

/* Overwrites bytes [off, end) of segment seg of the spool in dir with zeros,
 * the file's size unchanged when end is at most its size. The spool must be
 * closed. Fails the test when the file cannot be opened or written whole. */
static inline void spool_zero_range(const char *dir, uint64_t seg, uint64_t off, uint64_t end)
{
    static const unsigned char zeros[4096];
    char path[512];
    int fd = open(spool_seg_path(dir, seg, path, sizeof(path)), O_RDWR);
    assert_true(fd >= 0);
    assert_true(off <= end);
    while (off < end) {
        size_t n = end - off < sizeof(zeros) ? (size_t)(end - off) : sizeof(zeros);
        assert_int_equal(pwrite(fd, zeros, n, (off_t)off), (ssize_t)n);
        off += n;
    }
    close(fd);
}

#endif
