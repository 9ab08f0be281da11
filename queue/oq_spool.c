/*
 * The durable order spool (see oq_spool.h).
 *
 * On disk: <dir>/spool-<16 hex>.log segments, <dir>/released (the release
 * point as text "<seg hex> <off>\n", replaced atomically by rename), and
 * <dir>/lock (flock: one writer per directory).
 *
 * A record is a 12-byte header and a payload:
 *
 *   0..3   payload length, little endian (at most REC_MAX_PAYLOAD)
 *   4..7   CRC-32C over bytes 0..3, 8..11 and the payload, little endian
 *   8      type (OQ_REC_ORDER, OQ_REC_EVENT)
 *   9..11  zero (reserved)
 *
 * The CRC covers the length too, so a flipped length byte is caught rather
 * than sending the reader into the middle of the next record.
 *
 * The ORDER payload is the order's JSON (oq_order_encode), not a compact
 * binary: it is the exact Kafka value, so the relay sends the payload as it
 * is and `flashgate-spool dump` prints it as it is; it is ~200 bytes, and the
 * encoder writes it into a stack buffer without allocating. A binary form
 * would save ~80 bytes per order and a format to keep in step with the JSON.
 *
 * Concurrency: one mutex (mu) covers the space check, the segment roll and
 * the write(2), so an append is exactly one syscall under an uncontended
 * mutex (~20 ns against ~1-2 us for the write; the kernel serialises
 * O_APPEND writes to one inode on its own lock anyway, so nothing is lost).
 * oq_spool_sync_to() is a leader/follower group commit on its own mutex and
 * condition variable: the first caller fdatasyncs on behalf of everyone who
 * appended before it started; the others wait and share the result when it
 * covers their position, and lead the next round when it does not. A caller
 * waits for its own records only (the position its append returned): a round
 * that made them durable answers it 0 even if a later round failed, because
 * those records are relayed, settled and replayed whatever it is told.
 * A roll never fsyncs on the append path: the sync leader also fdatasyncs
 * any segment rolled since the last sync (fdatasync works per inode, so it
 * reopens the old segment by name), and the preparer thread (prep_main)
 * creates the next segment ahead and fsyncs the directory for its name, so
 * the roll itself swaps in that spare under mu. An empty segment at the end is
 * such a spare and is dropped on open.
 * fsync durability: readers see only records before synced_pos, which the sync
 * leader moves after a successful fdatasync; a failed one cuts the records
 * past it off the spool (cut_unsynced_locked) and the spool refuses appends.
 */
#include "queue/oq_spool.h"

#include "common/cm_alloc.h"
#include "common/cm_crc32c.h"
#include "common/cm_plant.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "queue/oq_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>


#define REC_HDR 12u
#define REC_MAX_PAYLOAD (1u << 20)
#define SEG_DEFAULT_BYTES (64u << 20)
#define STACK_BUF 32768u /* ~120 orders: a loop iteration's batch (gw_buy.c) */
/* A sync round that could not open a file waits this long before the next (doubling). */
#define SYNC_FD_WAIT_MIN_MS 1u
#define SYNC_FD_WAIT_MAX_MS 100u
/* The open's recoveries when a segment changes under one (oq_spool_open). */
#define OPEN_RECOVER_TRIES 4
/* The new file a segment is written again into before it is renamed over it. */
#define SEG_TMP "spool.tmp"
/* Durability write: the preparer fdatasyncs the current segment once this many
 * bytes (or half a segment, if less) were appended since its last fdatasync,
 * so that the copy kept of them (seg_copy_t) stays small; appends past
 * COPY_MAX_BYTES of copies wait for it (CM_EBUSY) rather than go uncovered.
 * 4 MiB: `build/flashgate-bench-spool 5` (write durability, one thread, 8 MiB
 * segments), the tree before and after, alternated: ~890k appends/s before,
 * ~885k with the copy and no such fdatasync (the memcpy), ~864k with one every
 * 4 MiB, ~843k every 1 MiB (and a p99.9 of 9-10 us against 6.4). */
#define COPY_SYNC_BYTES (4u << 20)
#define COPY_MAX_BYTES (64u << 20)

/*---- CRC-32C (common/cm_crc32c.h) ----*/

void oq__crc32c_force_table(void)
{
    cm__crc32c_force_table();
}

uint32_t oq__crc32c(uint32_t crc, const void *buf, size_t len)
{
    return cm_crc32c(crc, buf, len);
}

/*---- records ----*/

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t rec_crc(const unsigned char *hdr, const unsigned char *payload, uint32_t len)
{
    uint32_t c = oq__crc32c(0, hdr, 4);
    c = oq__crc32c(c, hdr + 8, 4);
    return oq__crc32c(c, payload, len);
}

/* Writes the header in front of a payload already at rec + REC_HDR. */
static void rec_frame(unsigned char *rec, oq_rec_type_t type, uint32_t len)
{
    put_le32(rec, len);
    rec[8] = (unsigned char)type;
    rec[9] = rec[10] = rec[11] = 0;
    put_le32(rec + 4, rec_crc(rec, rec + REC_HDR, len));
}

typedef enum { REC_OK, REC_TORN, REC_BAD_LEN, REC_BAD_CRC, REC_BAD_TYPE } rec_status_t;

static const char *rec_status_str(rec_status_t st)
{
    switch (st) {
    case REC_TORN:
        return "truncated record";
    case REC_BAD_LEN:
        return "bad record length";
    case REC_BAD_CRC:
        return "CRC-32C mismatch";
    case REC_BAD_TYPE:
        return "unknown record type";
    default:
        return "ok";
    }
}

/* Checks the record at p (avail bytes left in the segment). */
static rec_status_t rec_check(const unsigned char *p, uint64_t avail, uint32_t *len)
{
    if (avail < REC_HDR)
        return REC_TORN;
    uint32_t n = get_le32(p);
    if (n == 0 || n > REC_MAX_PAYLOAD)
        return REC_BAD_LEN;
    if (avail - REC_HDR < n)
        return REC_TORN;
    if (rec_crc(p, p + REC_HDR, n) != get_le32(p + 4))
        return REC_BAD_CRC;
    if ((p[8] != OQ_REC_ORDER && p[8] != OQ_REC_EVENT) || p[9] || p[10] || p[11])
        return REC_BAD_TYPE;
    *len = n;
    return REC_OK;
}

/*---- the spool ----*/

typedef struct seg_info {
    uint64_t seg;
    uint64_t size; /* bytes of complete records */
} seg_info_t;

/*
 * Durability write: the bytes this process appended to a segment since the
 * last fdatasync that covered them, as it wrote them. Until one covers them
 * they are in the page cache only, and a failed fdatasync (or writeback)
 * marks those pages clean unwritten and lets the kernel evict them: a read
 * then returns the disk's old bytes, so no read-back can write them again
 * (docs/simulation.md, "Evicted pages"). The segment is written again from
 * this copy instead (rewrite_from_copy). One memcpy per append under mu.
 */
typedef struct seg_copy {
    uint64_t seg;
    uint64_t base;      /* the segment's bytes before it are durable */
    unsigned char *buf; /* its bytes [base, base + len) */
    size_t len, cap;
    bool lost; /* an fdatasync of them failed: write them again, never
                  trust a plain fdatasync of the segment */
} seg_copy_t;

struct oq_spool {
    const oq_fs_ops_t *fs; /* the file operations (oq_fs.h) */
    bool stepped;          /* no preparer thread: the owner calls oq_spool_step() */
    char dir[PATH_MAX];
    int dirfd;
    int lockfd;
    oq_durability_t durability;
    uint64_t segment_bytes;
    uint64_t max_bytes; /* 0 = no cap */
    bool read_only;

    pthread_mutex_t mu; /* everything below up to the sync block */
    int fd;             /* current (last) segment, O_APPEND; -1 read-only */
    seg_info_t *segs;   /* ascending; the last one is current */
    size_t nsegs, capsegs;
    oq_pos_t released;
    uint64_t unreleased_bytes;
    uint64_t records;
    bool broken;                     /* a failed write or fsync: refuse appends */
    /* fsync durability: records before synced_pos are on disk; readers (the
     * relay) see nothing past it, so no order reaches Kafka before its fsync */
    oq_pos_t synced_pos;
    /* the spare: the next segment, created and its name made durable by the
     * preparer thread, so that a roll on the append path is a swap of fds */
    int spare_fd; /* -1: none ready */
    uint64_t spare_seg;
    uint64_t prep_busy_seg; /* the segment the preparer is creating now, 0: none */
    pthread_cond_t spare_cv; /* signalled when the preparer finishes one */
    bool prep_stop;
    pthread_cond_t prep_cv;
    pthread_t prep_thread;
    bool prep_started;
    /* durability write: the preparer fdatasyncs each rolled segment, off the
     * append path, as Kafka flushes a log segment after its roll. Nothing
     * waits for it; it keeps a power loss from tearing the middle of the
     * spool (recovery cuts a segment that ends inside a record wherever it
     * lies, but refuses other damage in a segment that is not the last). */
    uint64_t flush_below;   /* segments below it are to be flushed */
    uint64_t flushed_below; /* the preparer has flushed those below it */
    uint64_t flush_redo;    /* its fdatasync failed: the next try rewrites it (0: none) */
    bool keep_copy;         /* durability write, writable: copies are kept */
    seg_copy_t *copies;     /* ascending by segment (seg_copy_t) */
    size_t ncopies, capcopies;
    uint64_t copy_bytes; /* the sum of their len */
    uint64_t copy_sync;  /* the preparer fdatasyncs the current segment past this */
    _Atomic uint64_t copy_syncs, copy_rewrites;
    _Atomic uint64_t seg_flushes;
    _Atomic uint64_t rolls, rolls_inline;
    atomic_bool fail_next_sync; /* test seam (oq__spool_fail_next_sync) */
    size_t fault_short; /* test seam (oq__spool_short_next_write), under mu */
    bool fault_trunc;

    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool syncing;
    bool sync_failed; /* sticky: one fdatasync failed (sync_mu) */
    oq_pos_t sync_done; /* records before it are durable: this process's rounds and its open */
    uint64_t sync_floor; /* segments below it are durable */
    _Atomic uint64_t syncs, fsyncs, sync_fd_waits;
    uint64_t cut_failures; /* mu */

    pthread_mutex_t rel_mu; /* serialises releases */
};

static void *prep_main(void *arg);

static void seg_name(char *buf, size_t len, uint64_t seg)
{
    snprintf(buf, len, "spool-%016" PRIx64 ".log", seg);
}

static void errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static int mkdir_p(const oq_fs_ops_t *fs, const char *path)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (fs->mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (fs->mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static uint64_t compute_unreleased(const oq_spool_t *sp)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < sp->nsegs; i++) {
        const seg_info_t *s = &sp->segs[i];
        if (s->seg > sp->released.seg)
            sum += s->size;
        else if (s->seg == sp->released.seg && s->size > sp->released.off)
            sum += s->size - sp->released.off;
    }
    return sum;
}

/* A segment is wholly released when it lies before the release point's
 * segment, or is that segment, complete (not current) and read to its end. */
static bool seg_released(const seg_info_t *s, bool is_last, oq_pos_t rel)
{
    return s->seg < rel.seg || (s->seg == rel.seg && !is_last && rel.off >= s->size);
}

static void segs_push(oq_spool_t *sp, uint64_t seg, uint64_t size)
{
    if (sp->nsegs == sp->capsegs) {
        sp->capsegs = sp->capsegs ? sp->capsegs * 2 : 16;
        sp->segs = cm_xrealloc(sp->segs, sp->capsegs * sizeof(seg_info_t));
    }
    sp->segs[sp->nsegs].seg = seg;
    sp->segs[sp->nsegs].size = size;
    sp->nsegs++;
}

/*---- durability write: the copy of what no fdatasync covered yet (seg_copy_t) ----*/

/* mu held. The copy of segment seg, NULL if none. */
static seg_copy_t *copy_find(oq_spool_t *sp, uint64_t seg)
{
    for (size_t i = 0; i < sp->ncopies; i++)
        if (sp->copies[i].seg == seg)
            return &sp->copies[i];
    return NULL;
}

/* mu held. Adds the len bytes just written at offset off of segment seg (the
 * current one). */
static void copy_add_locked(oq_spool_t *sp, uint64_t seg, uint64_t off, const unsigned char *buf,
                            size_t len)
{
    seg_copy_t *c = sp->ncopies ? &sp->copies[sp->ncopies - 1] : NULL;
    if (c == NULL || c->seg != seg) {
        if (sp->copies == NULL || sp->ncopies == sp->capcopies) {
            sp->capcopies = sp->capcopies ? sp->capcopies * 2 : 4;
            sp->copies = cm_xrealloc(sp->copies, sp->capcopies * sizeof(seg_copy_t));
        }
        c = &sp->copies[sp->ncopies++];
        *c = (seg_copy_t){.seg = seg, .base = off};
    }
    if (c->base + c->len != off) { /* cannot be: appends are contiguous */
        cm_log_error("oq", "spool: the copy of a segment lost its place; starting it again",
                     "seg=%" PRIu64 " at=%" PRIu64 " off=%" PRIu64, seg, c->base + c->len, off);
        sp->copy_bytes -= c->len;
        c->base = off;
        c->len = 0;
    }
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len)
            cap *= 2;
        c->buf = cm_xrealloc(c->buf, cap);
        c->cap = cap;
    }
    memcpy(c->buf + c->len, buf, len);
    c->len += len;
    sp->copy_bytes += len;
    /* wakes the preparer once, as the copy passes the mark */
    if (!sp->stepped && c->len >= sp->copy_sync && c->len - len < sp->copy_sync)
        pthread_cond_signal(&sp->prep_cv);
}

/* mu held. Segment seg's bytes before upto are durable: they leave its copy
 * (all of it for UINT64_MAX: a rolled segment's, freed). */
static void copy_drop_locked(oq_spool_t *sp, uint64_t seg, uint64_t upto)
{
    for (size_t i = 0; i < sp->ncopies; i++) {
        seg_copy_t *c = &sp->copies[i];
        if (c->seg != seg)
            continue;
        if (upto <= c->base)
            return;
        uint64_t k = upto - c->base;
        if (k < c->len) {
            memmove(c->buf, c->buf + k, (size_t)(c->len - k));
            c->len -= (size_t)k;
            c->base = upto;
            sp->copy_bytes -= k;
            return;
        }
        sp->copy_bytes -= c->len;
        if (upto != UINT64_MAX) { /* the current segment's: its buffer is used again */
            c->base += c->len;
            c->len = 0;
            c->lost = false;
            return;
        }
        free(c->buf);
        memmove(c, c + 1, (sp->ncopies - i - 1) * sizeof(*c));
        sp->ncopies--;
        return;
    }
}

static int cmp_seg(const void *a, const void *b)
{
    const seg_info_t *x = a, *y = b;
    return x->seg < y->seg ? -1 : x->seg > y->seg;
}

static int read_released(oq_spool_t *sp, char *errbuf, size_t errlen)
{
    int fd = sp->fs->openat(sp->dirfd, "released", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        errf(errbuf, errlen, "spool: cannot open %s/released: %s", sp->dir, strerror(errno));
        return CM_EIO;
    }
    char buf[128];
    ssize_t n = sp->fs->read(fd, buf, sizeof(buf) - 1);
    sp->fs->close(fd);
    if (n < 0) {
        errf(errbuf, errlen, "spool: cannot read %s/released: %s", sp->dir, strerror(errno));
        return CM_EIO;
    }
    buf[n] = '\0';
    char *end;
    errno = 0;
    uint64_t seg = strtoull(buf, &end, 16);
    bool ok = errno == 0 && end != buf && *end == ' ';
    char *p = end + 1;
    uint64_t off = ok ? strtoull(p, &end, 10) : 0;
    ok = ok && errno == 0 && end != p && *end == '\n';
    if (!ok) {
        errf(errbuf, errlen, "spool: %s/released is malformed (want \"<seg hex> <offset>\\n\")",
             sp->dir);
        return CM_ECORRUPT;
    }
    sp->released.seg = seg;
    sp->released.off = off;
    return 0;
}

static int write_released(oq_spool_t *sp, oq_pos_t pos)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%016" PRIx64 " %" PRIu64 "\n", pos.seg, pos.off);
    int fd = sp->fs->openat(sp->dirfd, "released.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                            0644);
    if (fd < 0)
        return CM_EIO;
    bool ok = sp->fs->write(fd, buf, (size_t)n) == n &&
              (CM_PLANT(SPOOL_RELEASED_NO_FSYNC) || sp->fs->fsync(fd) == 0);
    ok = sp->fs->close(fd) == 0 && ok;
    if (!ok || sp->fs->renameat(sp->dirfd, "released.tmp", sp->dirfd, "released") != 0 ||
        sp->fs->fsync(sp->dirfd) != 0) {
        cm_log_error("oq", "spool: cannot persist the release point", "dir=%s errno=%d",
                     sp->dir, errno);
        return CM_EIO;
    }
    return 0;
}

/*
 * Maps a segment for reading. *map is NULL for an empty one; seg_unmap()
 * gives it back. A read-only spool (flashgate-spool next to a live gateway)
 * reads the file into memory instead: the gateway may cut records off the end
 * meanwhile (a failed fsync's cut_unsynced_locked), and touching a mapped page
 * that then lies past the end of the file raises SIGBUS. A read that comes
 * back short ends the segment there. The writer's own readers never map past
 * what the writer keeps.
 */
static int seg_map(oq_spool_t *sp, uint64_t seg, uint64_t *size, const unsigned char **map)
{
    char name[64];
    seg_name(name, sizeof(name), seg);
    int fd = sp->fs->openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? CM_ENOTFOUND : CM_EIO;
    struct stat st;
    if (sp->fs->fstat(fd, &st) != 0) {
        sp->fs->close(fd);
        return CM_EIO;
    }
    if (*size == UINT64_MAX || *size > (uint64_t)st.st_size)
        *size = (uint64_t)st.st_size;
    *map = NULL;
    if (*size > 0 && sp->read_only) {
        unsigned char *buf = cm_xmalloc((size_t)*size);
        uint64_t got = 0;
        while (got < *size) {
            ssize_t r = sp->fs->pread(fd, buf + got, (size_t)(*size - got), (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                free(buf);
                sp->fs->close(fd);
                return CM_EIO;
            }
            if (r == 0)
                break;
            got += (uint64_t)r;
        }
        *size = got;
        *map = buf;
    } else if (*size > 0) {
        const unsigned char *m = sp->fs->map(fd, (size_t)*size);
        if (m == NULL) {
            sp->fs->close(fd);
            return CM_EIO;
        }
        *map = m;
    }
    sp->fs->close(fd);
    return 0;
}

static void seg_unmap(const oq_spool_t *sp, const unsigned char *map, uint64_t size)
{
    if (map == NULL)
        return;
    if (sp->read_only)
        free((void *)map);
    else
        sp->fs->unmap(map, (size_t)size);
}

/* Verifies the records of one segment from `start`; *good is where the
 * valid records end, *nrec how many there are. Returns the first bad status. */
static rec_status_t seg_verify(const unsigned char *map, uint64_t size, uint64_t start,
                               uint64_t *good, uint64_t *nrec)
{
    uint64_t off = start;
    *nrec = 0;
    rec_status_t st = REC_OK;
    while (off < size) {
        uint32_t len;
        st = rec_check(map + off, size - off, &len);
        if (st != REC_OK)
            break;
        off += REC_HDR + len;
        (*nrec)++;
    }
    *good = off;
    return st;
}

/* true when map[from, size) is all zero bytes. */
static bool zero_tail(const unsigned char *map, uint64_t from, uint64_t size)
{
    for (uint64_t i = from; i < size; i++)
        if (map[i] != 0)
            return false;
    return true;
}

static int seg_create(oq_spool_t *sp, uint64_t seg)
{
    char name[64];
    seg_name(name, sizeof(name), seg);
    int fd =
        sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        cm_log_error("oq", "spool: cannot create segment", "dir=%s seg=%s errno=%d", sp->dir,
                     name, errno);
        return CM_EIO;
    }
    /* make the new name durable, or a power loss could lose the whole file */
    if (sp->fs->fsync(sp->dirfd) != 0) {
        sp->fs->close(fd);
        /* else the next try meets it (O_EXCL) and fails for good: no spare
         * again, and every roll after fails its append */
        sp->fs->unlinkat(sp->dirfd, name, 0);
        return CM_EIO;
    }
    return fd;
}

static void list_one(const char *n, void *ctx)
{
    oq_spool_t *sp = ctx;
    if (strlen(n) != 26 || strncmp(n, "spool-", 6) != 0 || strcmp(n + 22, ".log") != 0 ||
        strspn(n + 6, "0123456789abcdef") != 16)
        return;
    segs_push(sp, strtoull(n + 6, NULL, 16), UINT64_MAX);
}

static int recover(oq_spool_t *sp, char *errbuf, size_t errlen)
{
    if (sp->fs->list(sp->dir, list_one, sp) != 0) {
        errf(errbuf, errlen, "spool: cannot list %s: %s", sp->dir, strerror(errno));
        return CM_EIO;
    }
    if (sp->nsegs > 1)
        qsort(sp->segs, sp->nsegs, sizeof(seg_info_t), cmp_seg);
    if (CM_PLANT(SPOOL_SKIP_LAST_SEG) && sp->nsegs > 1)
        sp->nsegs--;
    if (!sp->read_only) {
        sp->fs->unlinkat(sp->dirfd, "released.tmp", 0);
        sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
    }
    /* Empty segments at the end are spares made ahead of a roll (or a roll cut
     * short): no record is in them. Dropping them keeps "a segment that is not
     * the last one and is damaged other than by a cut-short end is not a torn
     * write" true. */
    while (sp->nsegs > 1) {
        char name[64];
        struct stat st;
        seg_name(name, sizeof(name), sp->segs[sp->nsegs - 1].seg);
        if (sp->fs->fstatat(sp->dirfd, name, &st, 0) != 0 || st.st_size != 0)
            break;
        if (!sp->read_only)
            sp->fs->unlinkat(sp->dirfd, name, 0);
        sp->nsegs--;
    }

    size_t keep = 0;
    for (size_t i = 0; i < sp->nsegs; i++) {
        seg_info_t *s = &sp->segs[i];
        bool last = i + 1 == sp->nsegs;
        char name[64];
        seg_name(name, sizeof(name), s->seg);
        struct stat sst;
        if (sp->fs->fstatat(sp->dirfd, name, &sst, 0) != 0) {
            errf(errbuf, errlen, "spool: cannot read %s/%s: %s", sp->dir, name, strerror(errno));
            return CM_EIO;
        }
        s->size = (uint64_t)sst.st_size;
        /* Wholly released: a crash cut the deletion short, or the relay keeps
         * them (oq_spool_release_keep) for the memory inventory's replay, a
         * scan from {0,0}. Nothing will be sent from them, but that scan
         * reads them: verified too, and a bad tail cut whatever it is (in
         * durability write a power loss may tear one whose background
         * fdatasync had not run yet), so the replay never meets it. */
        bool done = seg_released(s, last, sp->released);
        const unsigned char *map;
        int rc = seg_map(sp, s->seg, &s->size, &map);
        if (rc != 0) {
            errf(errbuf, errlen, "spool: cannot read %s/%s: %s", sp->dir, name, cm_strerror(rc));
            return rc;
        }
        uint64_t start = s->seg == sp->released.seg && !done ? sp->released.off : 0;
        /* The point past the data (a power loss took the tail, see below): the
         * records before it were relayed, but the tail may end in a torn one,
         * which a scan from {0,0} (the memory inventory's replay) would meet
         * as corrupt. Verified from the start, so the tear is cut. */
        if (start > s->size)
            start = 0;
        uint64_t good = start, nrec = 0;
        rec_status_t st = REC_OK;
        /* Durability write: the records below the point too. The memory
         * inventory's replay reads them, and a power loss can zero them (pages
         * a failed fdatasync dropped) while the file keeps its size; damage
         * there is cut like damage past the point (records counted: none), and
         * the unreleased records after it go with it: this mode promises
         * nothing across a power loss, and a count with a hole in it would
         * oversell. Durability fsync never cuts below the point: every record
         * above it was confirmed to a client after its fdatasync, so damage
         * below it (bit rot, a spool once run in write) must not take them;
         * the replay then meets the damage and the start is refused. */
        if (start > 0 && sp->durability == OQ_DURABILITY_WRITE &&
            (st = seg_verify(map, start, 0, &good, &nrec)) == REC_OK)
            good = start;
        nrec = 0;
        if (st == REC_OK && start < s->size)
            st = seg_verify(map, s->size, start, &good, &nrec);
        else if (st == REC_OK)
            good = s->size;
        /* Zeros from the bad record to the end of the file are a tear too: a
         * power loss after a failed fdatasync (or before a write-back) can keep
         * the file's new size while the pages past the last good write never
         * reached the disk, and they read back as zeros (ext4 commits i_size
         * although the data write failed: data_err=ignore). Nothing past the
         * last successful fdatasync was confirmed to a client, and bit rot
         * does not zero a file's whole tail. */
        bool torn = st == REC_TORN || (st != REC_OK && zero_tail(map, good, s->size));
        seg_unmap(sp, map, s->size);
        if (st != REC_OK) {
            /* A segment that ends inside a record (REC_TORN) was torn by a power
             * loss, wherever it lies: a roll starts the next segment before the
             * sync leader's fdatasync covers this one's tail (durability fsync:
             * one round syncs both, so nothing past the tear was confirmed to a
             * client; durability write promises nothing across a power loss).
             * Cut like a last segment's tail, and so is a zeroed tail (above).
             * Anything else in the middle of the spool is not a tear: refused. */
            if (!last && !done && !torn) {
                errf(errbuf, errlen,
                     "spool: %s/%s is corrupt at offset %" PRIu64 " (%s) and is not the last "
                     "segment, so this is not a torn write; refusing to open (inspect it with "
                     "`flashgate-spool dump`, then move it aside)",
                     sp->dir, name, good, rec_status_str(st));
                return CM_ECORRUPT;
            }
            cm_log_warn("oq", "spool: cutting off a torn or corrupt tail", "seg=%s off=%" PRIu64
                        " cut_bytes=%" PRIu64 " reason=\"%s\" records_kept=%" PRIu64 "%s",
                        name, good, s->size - good, rec_status_str(st), nrec,
                        sp->read_only ? " read_only=1" : "");
            /* The cut of a segment the open writes again (resync_open) is that
             * write: it copies the records before `good` to a new file. A cut
             * here, ftruncate and fdatasync in place, dropped the segment's
             * dirty pages when the fdatasync failed, records before the tear
             * with them (durability write: answered 202, in no other copy). */
            bool rewritten = sp->durability == OQ_DURABILITY_WRITE || !done;
            if (!sp->read_only && !rewritten && !CM_PLANT(SPOOL_TEAR_KEPT)) {
                int fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC, 0);
                if (fd < 0 || sp->fs->ftruncate(fd, (off_t)good) != 0 ||
                    sp->fs->fdatasync(fd) != 0) {
                    errf(errbuf, errlen, "spool: cannot truncate %s/%s: %s", sp->dir, name,
                         strerror(errno));
                    if (fd >= 0)
                        sp->fs->close(fd);
                    return CM_EIO;
                }
                sp->fs->close(fd);
            }
            s->size = good;
        }
        if (!done)
            sp->records += nrec;
        sp->segs[keep++] = *s;
    }
    sp->nsegs = keep;

    /* The release point past the end of the data. Durability `write` never
     * fsyncs a segment but write_released() fsyncs the point, so a power loss
     * can keep the point and lose the segment's tail (or all of it, and an
     * empty segment at the end is dropped above as a spare). Those records
     * were relayed already. Appending below the point would put new orders
     * where every reader takes them as released, never to be relayed, and once
     * the file grew past the point a read would start inside a record. So the
     * appends go to a fresh segment after the point's: readers skip the short
     * one (the point is at or past its end) and read the new one from 0. */
    oq_pos_t end = sp->released;
    if (sp->nsegs > 0)
        end = (oq_pos_t){sp->segs[sp->nsegs - 1].seg, sp->segs[sp->nsegs - 1].size};
    bool past = oq_pos_cmp(sp->released, end) > 0 && !CM_PLANT(SPOOL_PAST_POINT);
    if (past)
        cm_log_warn("oq", "spool: the release point is past the end of the data (a power loss)",
                    "dir=%s released=%" PRIu64 ":%" PRIu64 " end=%" PRIu64 ":%" PRIu64 "%s",
                    sp->dir, sp->released.seg, sp->released.off, end.seg, end.off,
                    sp->read_only ? " read_only=1" : " next_segment=1");

    if (!sp->read_only) {
        if (sp->nsegs == 0 || past) {
            /* past: the last segment is the point's or an older one */
            uint64_t seg = sp->released.seg + 1;
            int fd = seg_create(sp, seg);
            if (fd < 0) {
                errf(errbuf, errlen, "spool: cannot create a segment in %s", sp->dir);
                return fd;
            }
            sp->fd = fd;
            segs_push(sp, seg, 0);
        } else {
            char name[64];
            seg_name(name, sizeof(name), sp->segs[sp->nsegs - 1].seg);
            sp->fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_APPEND | O_CLOEXEC, 0);
            if (sp->fd < 0) {
                errf(errbuf, errlen, "spool: cannot open %s/%s: %s", sp->dir, name,
                     strerror(errno));
                return CM_EIO;
            }
            /* The names found may not be durable: an earlier process can die
             * between creating a segment and the directory fsync that keeps it
             * (seg_create), or that fsync failed. Appends to such a file would
             * be lost whole by a power loss, fdatasync or not. */
            if (sp->fs->fsync(sp->dirfd) != 0) {
                errf(errbuf, errlen, "spool: cannot fsync %s: %s", sp->dir, strerror(errno));
                return CM_EIO;
            }
        }
    }
    sp->unreleased_bytes = compute_unreleased(sp);
    return 0;
}

/*
 * What a failed open (or dup) on the way to an fdatasync means: the process or
 * the system is out of file descriptors (EMFILE, ENFILE), CM_EAGAIN: no
 * fdatasync ran, so no error was consumed and nothing is known lost; the
 * pages stay dirty and a later round syncs them. Anything else, CM_EIO.
 */
static int open_error(int e)
{
    return e == EMFILE || e == ENFILE ? CM_EAGAIN : CM_EIO;
}

/* fdatasync of one closed segment, by name. A missing one was released.
 * 0, CM_EAGAIN (no descriptor to open it with: open_error) or CM_EIO. */
static int sync_segment(oq_spool_t *sp, uint64_t seg)
{
    char name[64];
    seg_name(name, sizeof(name), seg);
    int fd = sp->fs->openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? 0 : open_error(errno);
    int rc = sp->fs->fdatasync(fd) == 0 ? 0 : CM_EIO;
    sp->fs->close(fd);
    return rc;
}

/* Writes the unreleased records of segment s (from `from`, as read now) again
 * and makes them durable: pages a failed fdatasync dropped are clean in the
 * page cache, so a plain fdatasync "succeeds" without them. 0 or CM_EIO.
 *
 * They go to a new file (SEG_TMP: written, fdatasynced, checked, renamed over
 * the segment, the directory fsynced), never into the segment itself: a
 * failed fdatasync drops the pages of the file it was called on, and the
 * segment's pages are then the only copy of records whose clients heard 202
 * (durability write: the process that appended them died before any
 * fdatasync covered them). Written in place, a failure dropped them, and once
 * evicted the next open read the disk's old bytes there and cut them off
 * (flashgate-sim --open-defects, "spool recovery dropped order"). Through a
 * new file, a failure drops the new file's pages only: the segment keeps its
 * dirty pages, and the next try (or the next open) reads them again.
 *
 * What it reads is checked as recovery checked it (every frame's CRC, as
 * cm_journal.c's copy_range checks what it copies): dropped pages evicted
 * since recovery read them read back as the disk's old bytes or zeros, and
 * writing those again would make the hole durable under records recovery
 * counted. Only the records before the first bad frame are written;
 * *changed says the segment no longer reads as recovery read it. The new
 * file is read back and checked the same way before the rename (pages
 * evicted while they were copied). */
static int copy_in_place(oq_spool_t *sp, const seg_copy_t *cp);

static int resync_segment(oq_spool_t *sp, const seg_info_t *s, uint64_t from, bool *changed)
{
    uint64_t size = s->size;
    const unsigned char *map = NULL;
    char name[64];
    seg_name(name, sizeof(name), s->seg);
    *changed = false;
    if (size == 0) { /* no record in it a failure could drop; recovery's cut (a torn one) */
        int fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC, 0);
        int rc =
            fd >= 0 && sp->fs->ftruncate(fd, 0) == 0 && sp->fs->fdatasync(fd) == 0 ? 0 : CM_EIO;
        if (fd >= 0)
            sp->fs->close(fd);
        return rc;
    }
    bool tear_kept = CM_PLANT(SPOOL_TEAR_KEPT); /* the copy keeps the torn tail recovery cut */
    if (tear_kept)
        size = UINT64_MAX;
    if (seg_map(sp, s->seg, &size, &map) != 0)
        return CM_EIO;
    uint64_t good = size;
    if (map != NULL && !tear_kept) {
        uint64_t nrec;
        rec_status_t st = seg_verify(map, size, from, &good, &nrec);
        if (st != REC_OK || size != s->size) {
            cm_log_error("oq",
                         "spool: a segment reads back other than recovery read it "
                         "(pages a failed fdatasync dropped were evicted); not writing the "
                         "damage again",
                         "seg=%s off=%" PRIu64 " size=%" PRIu64 " reason=\"%s\"", name, good,
                         s->size, rec_status_str(st));
            *changed = true;
        }
    }
    sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
    int fd = sp->fs->openat(sp->dirfd, SEG_TMP, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int rc = fd < 0 ? CM_EIO : 0;
    int werr = fd < 0 ? errno : 0; /* what the new file met */
    unsigned char *buf = map && rc == 0 ? cm_xmalloc(STACK_BUF) : NULL;
    for (uint64_t off = 0; buf && rc == 0 && off < good;) {
        size_t k = good - off < STACK_BUF ? (size_t)(good - off) : STACK_BUF;
        memcpy(buf, map + off, k);
        ssize_t w = sp->fs->pwrite(fd, buf, k, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = CM_EIO;
            werr = w < 0 ? errno : ENOSPC;
        } else {
            off += (uint64_t)w;
        }
    }
    free(buf);
    if (rc == 0 && sp->fs->fdatasync(fd) != 0) {
        rc = CM_EIO;
        werr = errno;
    }
    if (fd >= 0 && sp->fs->close(fd) != 0)
        rc = CM_EIO;
    if (rc != 0 && map != NULL && !tear_kept && !*changed && good == size &&
        (werr == ENOSPC || werr == EDQUOT)) {
        /* A full disk: the new file has no room. The segment's own range
         * needs none (an overwrite allocates nothing): the bytes just read
         * and checked go over it, from memory (copy_in_place; written once
         * more if its fdatasync fails, dirty again). Without it a full disk
         * kept the gateway from starting until room was made. */
        sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
        seg_copy_t cp = {.seg = s->seg, .base = 0, .len = (size_t)good};
        cp.buf = cm_xmalloc(cp.len);
        memcpy(cp.buf, map, cp.len);
        seg_unmap(sp, map, size);
        /* recovery's cut of a torn tail, which the new file was to make
         * (copy_in_place's fdatasync makes the length durable with it) */
        int tfd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC, 0);
        rc = tfd >= 0 && sp->fs->ftruncate(tfd, (off_t)good) == 0 ? 0 : CM_EIO;
        if (tfd >= 0)
            sp->fs->close(tfd);
        if (rc == 0)
            rc = copy_in_place(sp, &cp);
        free(cp.buf);
        return rc;
    }
    seg_unmap(sp, map, size);
    bool moved = false;                         /* the segment changed while it was copied */
    if (rc == 0 && good > from && !tear_kept) { /* what the new file holds: on disk now */
        uint64_t tsize = good, tgood, nrec;
        const unsigned char *tmap = NULL;
        int tfd = sp->fs->openat(sp->dirfd, SEG_TMP, O_RDONLY | O_CLOEXEC, 0);
        struct stat tst;
        if (tfd < 0 || sp->fs->fstat(tfd, &tst) != 0 || (uint64_t)tst.st_size != good ||
            (tmap = sp->fs->map(tfd, (size_t)tsize)) == NULL)
            rc = CM_EIO;
        if (tfd >= 0)
            sp->fs->close(tfd);
        if (tmap != NULL && seg_verify(tmap, tsize, from, &tgood, &nrec) != REC_OK) {
            cm_log_error("oq",
                         "spool: a segment changed while it was copied (pages a failed "
                         "fdatasync dropped were evicted); not writing the damage again",
                         "seg=%s off=%" PRIu64, name, tgood);
            *changed = true;
            moved = true; /* not an error: the caller reads the segment again */
        }
        if (tmap != NULL)
            sp->fs->unmap(tmap, (size_t)tsize);
    }
    if (rc == 0 && !moved &&
        (sp->fs->renameat(sp->dirfd, SEG_TMP, sp->dirfd, name) != 0 ||
         sp->fs->fsync(sp->dirfd) != 0))
        rc = CM_EIO;
    if (rc != 0 || moved)
        sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
    return rc;
}

/*
 * The open's write-again of what recovery kept. What an earlier process left
 * may include records it appended but never fsynced (it died between the write
 * and the sync: their clients got no 202). fsync durability shows readers only
 * what is on disk, so those segments are fdatasynced here, before synced_pos
 * is put at their end: otherwise the relay could send such a record on from
 * the page cache, and a power loss then leave a spool that disagrees with
 * Kafka. A segment already on disk costs a no-op fdatasync; a failed one
 * refuses the open, as a failed sync on the append path refuses appends. Their
 * bytes are written again first (resync_segment): an earlier process whose
 * fdatasync failed and which died before it cut the records off leaves pages
 * that the kernel marked clean without writing them, and an fdatasync from a
 * new descriptor reports success on them. Durability write does the same from
 * the start of the release point's segment, and for the released segments kept
 * for the replay: no fdatasync there is sure (one that failed at an earlier
 * recovery's cut, or in a preparer that died before its rewrite, leaves
 * dropped pages that nothing would write again), and the memory inventory's
 * replay reads the records below the point too. Without it a power loss leaves
 * zeros in the middle of the spool.
 *
 * *changed: a segment read back other than recovery read it (resync_segment),
 * and the open recovers again. 0 or CM_EIO.
 */
static int resync_open(oq_spool_t *sp, bool *changed, char *errbuf, size_t errlen)
{
    sp->sync_floor = sp->nsegs ? sp->segs[0].seg : 0; /* the first sync covers them */
    if (sp->nsegs && !sp->read_only) {
        for (size_t i = 0; i < sp->nsegs; i++) {
            /* Wholly released segments are here only because the memory
             * inventory's replay reads them (oq_spool_release_keep): in
             * durability fsync they were on disk before their release; in
             * durability write nothing says so, and a replay that met their
             * dropped pages as zeros after a power loss would count fewer
             * units sold. */
            if (sp->durability == OQ_DURABILITY_FSYNC &&
                seg_released(&sp->segs[i], i + 1 == sp->nsegs, sp->released))
                continue;
            oq_pos_t rel = sp->released;
            uint64_t from =
                sp->segs[i].seg == rel.seg && sp->durability == OQ_DURABILITY_FSYNC ? rel.off : 0;
            int rc = resync_segment(sp, &sp->segs[i], from, changed);
            if (rc != 0) {
                char name[64];
                seg_name(name, sizeof(name), sp->segs[i].seg);
                errf(errbuf, errlen,
                     "spool: cannot fdatasync %s/%s, left by an earlier process: %s", sp->dir, name,
                     strerror(errno));
                return rc;
            }
            if (*changed)
                return 0;
        }
        /* the last one was renamed over: appends go to the new file */
        const seg_info_t *last = &sp->segs[sp->nsegs - 1];
        if (last->size > 0 && sp->fd >= 0) {
            char name[64];
            seg_name(name, sizeof(name), last->seg);
            sp->fs->close(sp->fd);
            sp->fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_APPEND | O_CLOEXEC, 0);
            if (sp->fd < 0) {
                errf(errbuf, errlen, "spool: cannot open %s/%s: %s", sp->dir, name,
                     strerror(errno));
                return CM_EIO;
            }
        }
        if (sp->durability == OQ_DURABILITY_FSYNC) /* a round of the sync path's */
            atomic_fetch_add_explicit(&sp->fsyncs, 1, memory_order_relaxed);
        sp->sync_floor = sp->segs[sp->nsegs - 1].seg;
    }
    return 0;
}

int oq_spool_open(oq_spool_t **out, const oq_spool_opts_t *opts, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' ||
        strlen(opts->dir) >= PATH_MAX - 64) {
        errf(errbuf, errlen, "spool: no directory given");
        return CM_EINVAL;
    }
    oq_spool_t *sp = cm_xcalloc(1, sizeof(*sp));
    sp->fs = opts->fs ? opts->fs : oq_fs_posix();
    sp->stepped = opts->stepped;
    snprintf(sp->dir, sizeof(sp->dir), "%s", opts->dir);
    sp->durability = opts->durability;
    sp->segment_bytes = opts->segment_bytes ? opts->segment_bytes : SEG_DEFAULT_BYTES;
    sp->max_bytes = opts->max_bytes;
    sp->read_only = opts->read_only;
    sp->keep_copy = !sp->read_only && sp->durability == OQ_DURABILITY_WRITE;
    sp->copy_sync =
        sp->segment_bytes / 2 < COPY_SYNC_BYTES ? sp->segment_bytes / 2 : COPY_SYNC_BYTES;
    if (sp->copy_sync == 0)
        sp->copy_sync = 1;
    sp->fd = -1;
    sp->lockfd = -1;
    sp->dirfd = -1;
    sp->spare_fd = -1;
    pthread_cond_init(&sp->prep_cv, NULL);
    pthread_cond_init(&sp->spare_cv, NULL);
    pthread_mutex_init(&sp->mu, NULL);
    pthread_mutex_init(&sp->sync_mu, NULL);
    pthread_cond_init(&sp->sync_cv, NULL);
    pthread_mutex_init(&sp->rel_mu, NULL);

    int rc;
    if (!sp->read_only && mkdir_p(sp->fs, sp->dir) != 0) {
        errf(errbuf, errlen, "spool: cannot create %s: %s", sp->dir, strerror(errno));
        rc = CM_EIO;
        goto fail;
    }
    sp->dirfd = sp->fs->open_dir(sp->dir);
    if (sp->dirfd < 0) {
        errf(errbuf, errlen, "spool: cannot open %s: %s", sp->dir, strerror(errno));
        rc = errno == ENOENT ? CM_ENOTFOUND : CM_EIO;
        goto fail;
    }
    if (!sp->read_only) {
        sp->lockfd = sp->fs->openat(sp->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (sp->lockfd < 0 || sp->fs->flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
            errf(errbuf, errlen, "spool: %s is in use by another process (lock: %s)", sp->dir,
                 strerror(errno));
            rc = CM_EBUSY;
            goto fail;
        }
    }
    /* Recovery, then the write-again (resync_open): a segment that no longer
     * reads as recovery read it (dropped pages evicted in between) is
     * recovered again, from what it reads now. An eviction comes once per
     * failed fdatasync, so a few tries settle it. */
    for (int tries = 0;; tries++) {
        if ((rc = read_released(sp, errbuf, errlen)) != 0)
            goto fail;
        if ((rc = recover(sp, errbuf, errlen)) != 0)
            goto fail;
        bool changed = false;
        if ((rc = resync_open(sp, &changed, errbuf, errlen)) != 0)
            goto fail;
        if (!changed)
            break;
        if (tries == OPEN_RECOVER_TRIES - 1) {
            errf(errbuf, errlen, "spool: %s keeps changing under its recovery; refusing to open",
                 sp->dir);
            rc = CM_EIO;
            goto fail;
        }
        if (sp->fd >= 0)
            sp->fs->close(sp->fd);
        sp->fd = -1;
        sp->nsegs = 0;
        sp->records = 0;
    }
    if (sp->nsegs)
        sp->synced_pos = (oq_pos_t){sp->segs[sp->nsegs - 1].seg, sp->segs[sp->nsegs - 1].size};
    sp->sync_done = sp->synced_pos; /* what the open found is the open's (resynced above) */
    if (sp->nsegs && sp->durability == OQ_DURABILITY_WRITE) { /* what an earlier process rolled */
        sp->flushed_below = sp->segs[0].seg;
        sp->flush_below = sp->segs[sp->nsegs - 1].seg;
    }
    if (!sp->read_only && !sp->stepped) {
        int e = pthread_create(&sp->prep_thread, NULL, prep_main, sp);
        if (e != 0) {
            errf(errbuf, errlen, "spool: cannot start the segment thread: %s", strerror(e));
            rc = CM_EIO;
            goto fail;
        }
        sp->prep_started = true;
    }
    *out = sp;
    return 0;
fail:
    oq_spool_close(sp);
    return rc;
}

void oq_spool_close(oq_spool_t *sp)
{
    if (sp == NULL)
        return;
    if (sp->prep_started) {
        pthread_mutex_lock(&sp->mu);
        sp->prep_stop = true;
        pthread_cond_signal(&sp->prep_cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->prep_thread, NULL);
    }
    /* Durability write: a copy whose fdatasync failed and that no write-again
     * made durable yet (every try failed) is the only sure copy of orders
     * answered 202: the kernel may evict the pages it dropped. Before the
     * process ends with it, it goes back over its own range of the segment
     * (copy_in_place: the pages dirty again, the kernel's), so that a stop
     * loses no more than a power loss would (unit.oq_spool
     * test_close_writes_back_a_lost_copy). */
    for (size_t i = 0; i < sp->ncopies; i++)
        if (sp->copies[i].lost && sp->copies[i].len > 0 && copy_in_place(sp, &sp->copies[i]) != 0) {
            char name[64];
            seg_name(name, sizeof(name), sp->copies[i].seg);
            cm_log_error("oq",
                         "spool: closing with records a failed fdatasync dropped, not written "
                         "again; the kernel may lose them",
                         "seg=%s off=%" PRIu64 " bytes=%zu errno=%d", name, sp->copies[i].base,
                         sp->copies[i].len, errno);
        }
    if (sp->spare_fd >= 0) { /* unused: leave no empty file behind */
        char name[64];
        seg_name(name, sizeof(name), sp->spare_seg);
        sp->fs->close(sp->spare_fd);
        sp->fs->unlinkat(sp->dirfd, name, 0);
    }
    if (sp->fd >= 0)
        sp->fs->close(sp->fd);
    if (sp->lockfd >= 0)
        sp->fs->close(sp->lockfd);
    if (sp->dirfd >= 0)
        sp->fs->close(sp->dirfd);
    pthread_mutex_destroy(&sp->mu);
    pthread_mutex_destroy(&sp->sync_mu);
    pthread_cond_destroy(&sp->sync_cv);
    pthread_mutex_destroy(&sp->rel_mu);
    pthread_cond_destroy(&sp->prep_cv);
    pthread_cond_destroy(&sp->spare_cv);
    for (size_t i = 0; i < sp->ncopies; i++)
        free(sp->copies[i].buf);
    free(sp->copies);
    free(sp->segs);
    free(sp);
}

/*
 * The preparer thread: keeps one spare segment ready (created, its name made
 * durable with fsync of the directory), so that a roll on the append path,
 * under mu and on a worker loop, is a swap of file descriptors: a roll that
 * created the file and fsynced the directory there, every 64 MiB, would stall
 * every worker behind mu for the length of a directory fsync.
 */
/* resync_segment of closed segment `seg` (0 if it is gone: released). Called
 * without mu. */
static int rewrite_segment(oq_spool_t *sp, uint64_t seg)
{
    seg_info_t si = {0};
    bool found = false;
    /* no release deletes it meanwhile: the rename would bring it back */
    pthread_mutex_lock(&sp->rel_mu);
    pthread_mutex_lock(&sp->mu);
    for (size_t i = 0; i < sp->nsegs && !found; i++)
        if (sp->segs[i].seg == seg) {
            si = sp->segs[i];
            found = true;
        }
    pthread_mutex_unlock(&sp->mu);
    /* Changed (its dropped pages evicted): the kernel lost those records and
     * no write brings them back; the records before them are written, and
     * the next open's recovery cuts at the hole. Trying again would read the
     * same hole every second. */
    bool changed;
    int rc = found ? resync_segment(sp, &si, 0, &changed) : 0;
    pthread_mutex_unlock(&sp->rel_mu);
    return rc;
}

/* pwrite of len bytes of src at off, whole. 0 or CM_EIO. */
static int pwrite_all(oq_spool_t *sp, int fd, const unsigned char *src, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = sp->fs->pwrite(fd, src, (size_t)len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CM_EIO;
        src += w;
        len -= (uint64_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/*
 * Writes copy cp over its own range of its segment and fdatasyncs the
 * segment; when that fdatasync fails, writes it there once more, without
 * one. In place is safe with a copy, unlike resync_segment's write-again:
 * the bytes come from memory, not from the segment's pages, so a failed
 * fdatasync drops only pages that were dropped already, and the write after
 * it leaves them dirty again: the kernel's from then on, they outlive the
 * process (a stop, a kill -9; not a power loss) even when no fdatasync
 * covers them, and the next open writes the segment again (resync_open).
 * And the range needs no room on the disk (those bytes were written once,
 * only their writeback failed: an overwrite allocates nothing). 0 or
 * CM_EIO (the copy is still the only sure one).
 */
static int copy_in_place(oq_spool_t *sp, const seg_copy_t *cp)
{
    char name[64];
    seg_name(name, sizeof(name), cp->seg);
    int fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? 0 : CM_EIO; /* released meanwhile */
    int rc = pwrite_all(sp, fd, cp->buf, cp->len, cp->base);
    if (rc == 0 && sp->fs->fdatasync(fd) != 0) {
        rc = CM_EIO;
        (void)pwrite_all(sp, fd, cp->buf, cp->len, cp->base); /* dirty again */
    }
    if (sp->fs->close(fd) != 0)
        rc = CM_EIO;
    return rc;
}

/*
 * Durability write: writes rolled segment cp->seg again after a failed
 * fdatasync, from what it was before the copy (durable: an fdatasync covered
 * it, so it reads back as written) and the copy of the rest, into a new file
 * renamed over it (resync_segment's way: a failure drops none of the
 * segment's pages). On a full disk, where that file has no room, the copy
 * goes over its own range of the segment instead (copy_in_place): without
 * that a full disk refused every write-again until the process ended with
 * the only copy (flashgate-sim --seed 6199 --open-defects: a graceful stop,
 * the pages evicted, the next start cut an order answered 202). Never from
 * a read-back of the rest: the kernel may have evicted those pages. 0 (also
 * when the segment was released meanwhile) or CM_EIO. Called without mu.
 */
static int rewrite_from_copy(oq_spool_t *sp, const seg_copy_t *cp)
{
    seg_info_t si = {0};
    bool found = false;
    pthread_mutex_lock(&sp->rel_mu); /* no release deletes it meanwhile */
    pthread_mutex_lock(&sp->mu);
    for (size_t i = 0; i < sp->nsegs && !found; i++)
        if (sp->segs[i].seg == cp->seg) {
            si = sp->segs[i];
            found = true;
        }
    pthread_mutex_unlock(&sp->mu);
    char name[64];
    seg_name(name, sizeof(name), cp->seg);
    int rc = 0;
    if (found && si.size != cp->base + cp->len) { /* cannot be: every append was copied */
        cm_log_error("oq", "spool: the copy of a segment does not cover its end",
                     "seg=%s "
                     "size=%" PRIu64 " copied=%" PRIu64 "+%zu",
                     name, si.size, cp->base, cp->len);
        rc = CM_EIO;
    }
    if (!found || rc != 0) {
        pthread_mutex_unlock(&sp->rel_mu);
        return rc;
    }
    const unsigned char *map = NULL;
    uint64_t size = cp->base, good = 0, nrec;
    if (size > 0 && (seg_map(sp, cp->seg, &size, &map) != 0 || size != cp->base ||
                     seg_verify(map, size, 0, &good, &nrec) != REC_OK))
        rc = CM_EIO;
    sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
    int fd = rc == 0
                 ? sp->fs->openat(sp->dirfd, SEG_TMP, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)
                 : -1;
    bool full = false; /* the new file met a full disk */
    if (fd < 0 && rc == 0)
        full = errno == ENOSPC || errno == EDQUOT;
    if (fd < 0)
        rc = CM_EIO;
    if (rc == 0 && map != NULL && (rc = pwrite_all(sp, fd, map, size, 0)) != 0)
        full = errno == ENOSPC || errno == EDQUOT;
    seg_unmap(sp, map, size);
    if (rc == 0 && (rc = pwrite_all(sp, fd, cp->buf, cp->len, cp->base)) != 0)
        full = errno == ENOSPC || errno == EDQUOT;
    if (rc == 0 && sp->fs->fdatasync(fd) != 0)
        rc = CM_EIO;
    if (fd >= 0 && sp->fs->close(fd) != 0)
        rc = CM_EIO;
    if (rc == 0 && (sp->fs->renameat(sp->dirfd, SEG_TMP, sp->dirfd, name) != 0 ||
                    sp->fs->fsync(sp->dirfd) != 0))
        rc = CM_EIO;
    if (rc != 0)
        sp->fs->unlinkat(sp->dirfd, SEG_TMP, 0);
    if (rc != 0 && full)
        rc = copy_in_place(sp, cp);
    if (rc == 0)
        atomic_fetch_add_explicit(&sp->copy_rewrites, 1, memory_order_relaxed);
    pthread_mutex_unlock(&sp->rel_mu);
    return rc;
}

/* What one round of the preparer did, and how long it waits before the next. */
typedef enum {
    PREP_AGAIN = 0,   /* did something: look again at once */
    PREP_IDLE,        /* nothing to do: wait for a signal of prep_cv */
    PREP_FD_WAIT,     /* out of descriptors: wait SYNC_FD_WAIT_MAX_MS (or a signal) */
    PREP_CREATE_WAIT, /* no spare could be created, or a rolled segment not flushed: 1 s */
} prep_next_t;

static int roll_locked(oq_spool_t *sp);

/*
 * Durability write, mu held (released around the fdatasync): once the copy of
 * the current segment passes copy_sync bytes, fdatasyncs the segment and lets
 * go of the copy's bytes it covered; that keeps the copy near copy_sync bytes
 * (4 MiB, or half a segment) plus what is appended during one fdatasync. A
 * failed one rolls to the next segment, so that the flush of rolled segments
 * writes this one again from its copy (rewrite_from_copy) while appends go on.
 */
static prep_next_t sync_current_locked(oq_spool_t *sp)
{
    seg_info_t *cur = &sp->segs[sp->nsegs - 1];
    seg_copy_t *c = copy_find(sp, cur->seg);
    if (c == NULL || (!c->lost && c->len < sp->copy_sync))
        return PREP_IDLE;
    if (!c->lost) {
        uint64_t seg = cur->seg, upto = cur->size;
        int fd = sp->fs->dup(sp->fd);
        int e = errno;
        pthread_mutex_unlock(&sp->mu);
        int rc = fd < 0 ? open_error(e) : sp->fs->fdatasync(fd) == 0 ? 0 : CM_EIO;
        if (fd >= 0)
            sp->fs->close(fd);
        pthread_mutex_lock(&sp->mu);
        if (rc == CM_EAGAIN) {
            atomic_fetch_add_explicit(&sp->sync_fd_waits, 1, memory_order_relaxed);
            return PREP_FD_WAIT;
        }
        if (rc == 0) {
            atomic_fetch_add_explicit(&sp->copy_syncs, 1, memory_order_relaxed);
            copy_drop_locked(sp, seg, upto);
            return PREP_AGAIN;
        }
        char name[64];
        seg_name(name, sizeof(name), seg);
        cm_log_error("oq",
                     "spool: fdatasync of the current segment failed; rolling, to write "
                     "it again from memory",
                     "seg=%s errno=%d", name, errno);
        if ((c = copy_find(sp, seg)) != NULL)
            c->lost = true;
        if (sp->segs[sp->nsegs - 1].seg != seg)
            return PREP_AGAIN; /* an append rolled meanwhile */
    }
    /* a failed roll leaves the copy lost: tried again a second later */
    return roll_locked(sp) == 0 ? PREP_AGAIN : PREP_CREATE_WAIT;
}

/* One round of the preparer, with mu held (released around the file work). */
static prep_next_t prep_once(oq_spool_t *sp)
{
    if (sp->spare_fd >= 0 || sp->broken || sp->nsegs == 0) {
        if (sp->flushed_below < sp->flush_below) { /* the spare first: appends wait for it */
            uint64_t from = sp->flushed_below, to = sp->flush_below, redo = sp->flush_redo;
            pthread_mutex_unlock(&sp->mu);
            uint64_t g = from, flushed = 0;
            int rc = 0;
            for (; g < to; g++) {
                /* this process's appends to it that no fdatasync covered yet */
                seg_copy_t cp = {0};
                pthread_mutex_lock(&sp->mu);
                seg_copy_t *c = copy_find(sp, g);
                bool have = c != NULL;
                if (have)
                    cp = *c; /* its buffer stays: only this thread frees a rolled one's */
                pthread_mutex_unlock(&sp->mu);
                bool again = g == redo || cp.lost;
                /* A segment whose fdatasync failed is written again at every
                 * try, never given a plain fdatasync: that one would "succeed"
                 * on the pages the kernel dropped. */
                if (!again && (rc = sync_segment(sp, g)) == CM_EAGAIN)
                    break; /* no descriptor to open it with: this one again, later */
                if (again || rc != 0) {
                    /* The kernel may have dropped the pages it failed to write
                     * (a later fdatasync would "succeed" without them, and a
                     * power loss then tear the middle of the spool): written
                     * again and synced, now or at the next round. */
                    char name[64];
                    seg_name(name, sizeof(name), g);
                    cm_log_error("oq", "spool: fdatasync of a rolled segment failed; writing it "
                                 "again", "seg=%s errno=%d", name, errno);
                    if (have) { /* from the copy: the pages may be evicted */
                        pthread_mutex_lock(&sp->mu);
                        if ((c = copy_find(sp, g)) != NULL)
                            c->lost = true;
                        pthread_mutex_unlock(&sp->mu);
                        rc = rewrite_from_copy(sp, &cp);
                    } else {
                        rc = rewrite_segment(sp, g);
                    }
                    if (rc != 0) {
                        redo = g;
                        break;
                    }
                }
                if (have) {
                    pthread_mutex_lock(&sp->mu);
                    copy_drop_locked(sp, g, UINT64_MAX);
                    pthread_mutex_unlock(&sp->mu);
                }
                flushed++;
            }
            atomic_fetch_add_explicit(&sp->seg_flushes, flushed, memory_order_relaxed);
            pthread_mutex_lock(&sp->mu);
            sp->flush_redo = rc != 0 && rc != CM_EAGAIN ? redo : 0;
            if (g > sp->flushed_below)
                sp->flushed_below = g;
            if (rc == CM_EAGAIN) { /* out of descriptors: not a disk failure, wait */
                atomic_fetch_add_explicit(&sp->sync_fd_waits, 1, memory_order_relaxed);
                return PREP_FD_WAIT;
            }
            if (rc != 0)
                return PREP_CREATE_WAIT; /* the same segment again in a second */
            return PREP_AGAIN;
        }
        if (sp->keep_copy && !sp->broken && sp->nsegs > 0)
            return sync_current_locked(sp);
        return PREP_IDLE;
    }
    uint64_t seg = sp->segs[sp->nsegs - 1].seg + 1;
    sp->prep_busy_seg = seg;
    pthread_mutex_unlock(&sp->mu);
    int fd = seg_create(sp, seg);
    pthread_mutex_lock(&sp->mu);
    sp->prep_busy_seg = 0;
    pthread_cond_broadcast(&sp->spare_cv);
    if (fd >= 0 && sp->spare_fd < 0 && !sp->prep_stop &&
        sp->segs[sp->nsegs - 1].seg + 1 == seg) {
        sp->spare_fd = fd;
        sp->spare_seg = seg;
    } else if (fd >= 0) { /* a roll went ahead without us: not needed */
        char name[64];
        seg_name(name, sizeof(name), seg);
        sp->fs->close(fd);
        sp->fs->unlinkat(sp->dirfd, name, 0);
    } else { /* could not create it (disk full?): try again soon */
        return PREP_CREATE_WAIT;
    }
    return PREP_AGAIN;
}

static void prep_wait(oq_spool_t *sp, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000u;
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&sp->prep_cv, &sp->mu, &ts);
}

static void *prep_main(void *arg)
{
    oq_spool_t *sp = arg;
    pthread_setname_np(pthread_self(), "fg-spool-prep");
    pthread_mutex_lock(&sp->mu);
    while (!sp->prep_stop) {
        switch (prep_once(sp)) {
        case PREP_AGAIN:
            break;
        case PREP_IDLE:
            pthread_cond_wait(&sp->prep_cv, &sp->mu);
            break;
        case PREP_FD_WAIT:
            prep_wait(sp, SYNC_FD_WAIT_MAX_MS);
            break;
        case PREP_CREATE_WAIT:
            prep_wait(sp, 1000);
            break;
        }
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

bool oq_spool_step(oq_spool_t *sp)
{
    if (!sp->stepped || sp->read_only)
        return false;
    pthread_mutex_lock(&sp->mu);
    bool did = prep_once(sp) == PREP_AGAIN;
    pthread_mutex_unlock(&sp->mu);
    return did;
}

/* Called with mu held. Starts the next segment: the spare when it is ready
 * (the usual case: a swap), else creates it here (counted in rolls_inline).
 * The old one is fsynced later by the sync leader, never here. */
static int roll_locked(oq_spool_t *sp)
{
    uint64_t seg = sp->segs[sp->nsegs - 1].seg + 1;
    int fd;
    bool ready = sp->spare_fd >= 0 && sp->spare_seg == seg;
    if (!ready) /* appends outran the preparer: this roll waits for a create */
        atomic_fetch_add_explicit(&sp->rolls_inline, 1, memory_order_relaxed);
    /* it is making this one now: wait for it rather than race it */
    while (sp->spare_fd < 0 && sp->prep_busy_seg == seg)
        pthread_cond_wait(&sp->spare_cv, &sp->mu);
    if (sp->segs[sp->nsegs - 1].seg >= seg)
        return 0; /* another appender rolled while we waited: the caller looks again */
    if (sp->spare_fd >= 0 && sp->spare_seg == seg) {
        fd = sp->spare_fd;
        sp->spare_fd = -1;
    } else {
        fd = seg_create(sp, seg);
        if (fd < 0)
            return fd;
    }
    sp->fs->close(sp->fd);
    sp->fd = fd;
    segs_push(sp, seg, 0);
    if (sp->durability == OQ_DURABILITY_WRITE)
        sp->flush_below = seg;
    atomic_fetch_add_explicit(&sp->rolls, 1, memory_order_relaxed);
    pthread_cond_signal(&sp->prep_cv);
    return 0;
}

/* The cap for a record: orders stop at max_bytes; events (releases and
 * cancels, a few hundred bytes each, rare) may use a headroom of an eighth
 * more, so that the record that gives units back still fits when orders filled
 * the spool. */
static uint64_t cap_for(const oq_spool_t *sp, bool event)
{
    return event ? sp->max_bytes + sp->max_bytes / 8 : sp->max_bytes;
}

/* The bytes of buf's leading whole records that lie in its first limit bytes;
 * their count in *nrec. */
static size_t whole_prefix(const unsigned char *buf, size_t limit, uint64_t *nrec)
{
    size_t off = 0;
    uint64_t k = 0;
    while (limit - off >= REC_HDR) {
        size_t rl = REC_HDR + (size_t)get_le32(buf + off);
        if (rl > limit - off)
            break;
        off += rl;
        k++;
    }
    *nrec = k;
    return off;
}

/* How much of buf (len bytes, *nrec records) goes under the cap: all of it, or
 * with `prefix` the leading whole records that fit (*nrec their count), else 0. */
static size_t fit_locked(const oq_spool_t *sp, const unsigned char *buf, size_t len,
                         uint64_t *nrec, bool event, bool prefix)
{
    uint64_t cap = cap_for(sp, event);
    if (!sp->max_bytes || sp->unreleased_bytes + len <= cap)
        return len;
    if (!prefix || sp->unreleased_bytes >= cap)
        return 0;
    return whole_prefix(buf, (size_t)(cap - sp->unreleased_bytes), nrec);
}

/*
 * Appends len bytes of framed records (nrec of them) with one write(2).
 * With `kept` (a batch whose records each answer a client), *kept is set to
 * how many leading records are in the spool whatever the result: on CM_EBUSY
 * those that fit under the cap were written, on a short write the whole
 * records that reached the file are kept and only the torn tail is cut; if
 * that cut fails, the tail stays (a restart's recovery drops it: it is torn)
 * and the spool refuses appends. Without `kept` it is all or nothing (a
 * short write is cut back whole; a record that survives a failed cut is torn
 * only if nrec is 1). *end is set to where the last record written ends ({0,0}
 * when none was): the position oq_spool_sync_to must reach for them.
 */
static int write_records(oq_spool_t *sp, const unsigned char *buf, size_t len, uint64_t nrec,
                         bool event, uint64_t *kept, oq_pos_t *end)
{
    if (kept)
        *kept = 0;
    *end = (oq_pos_t){0, 0};
    if (sp->read_only)
        return CM_EINVAL;
    pthread_mutex_lock(&sp->mu);
    int rc = 0;
    if (sp->broken) {
        rc = CM_EIO;
        goto out;
    }
    size_t want = fit_locked(sp, buf, len, &nrec, event, kept != NULL);
    /* the copies past their cap: the preparer's fdatasync is behind (events, a
     * few hundred bytes, go on: a release must fit) */
    if (want == 0 || (!event && sp->keep_copy && sp->copy_bytes + want > COPY_MAX_BYTES)) {
        rc = CM_EBUSY;
        goto out;
    }
    seg_info_t *cur = &sp->segs[sp->nsegs - 1];
    bool rolled = false;
    while (cur->size > 0 && cur->size + want > sp->segment_bytes) {
        /* roll_locked may wait (mu released) for the spare; look again after it */
        if ((rc = roll_locked(sp)) != 0)
            goto out;
        if (sp->broken) {
            rc = CM_EIO;
            goto out;
        }
        cur = &sp->segs[sp->nsegs - 1];
        rolled = true;
    }
    if (rolled && (want = fit_locked(sp, buf, want, &nrec, event, kept != NULL)) == 0) {
        rc = CM_EBUSY; /* others appended while the roll waited */
        goto out;
    }
    ssize_t w;
    size_t wlen = want;
    if (sp->fault_short && sp->fault_short < want) /* test seam: a short write */
        wlen = sp->fault_short;
    do
        w = sp->fs->write(sp->fd, buf, wlen);
    while (w < 0 && errno == EINTR);
    if (wlen < want)
        sp->fault_short = 0;
    if (w != (ssize_t)want) {
        int e = w < 0 ? errno : ENOSPC;
        /* Keep the whole records that reached the file (their clients are
         * answered 202: they are as durable as any), cut the torn tail so the
         * next record starts on a boundary. */
        uint64_t k = 0;
        size_t keep = w > 0 && kept ? whole_prefix(buf, (size_t)w, &k) : 0;
        bool cut_fails = sp->fault_trunc;
        sp->fault_trunc = false;
        if (w > 0 && (size_t)w > keep &&
            (cut_fails || sp->fs->ftruncate(sp->fd, (off_t)(cur->size + keep)) != 0))
            sp->broken = true; /* the torn tail stays until a restart cuts it */
        cm_log_error("oq", "spool: append failed", "dir=%s errno=%d written=%zd of=%zu kept=%zu",
                     sp->dir, e, w, want, keep);
        if (sp->keep_copy && keep)
            copy_add_locked(sp, cur->seg, cur->size, buf, keep);
        cur->size += keep;
        sp->unreleased_bytes += keep;
        sp->records += k;
        if (keep)
            *end = (oq_pos_t){cur->seg, cur->size};
        if (kept)
            *kept = k;
        rc = CM_EIO;
        goto out;
    }
    if (sp->keep_copy)
        copy_add_locked(sp, cur->seg, cur->size, buf, want);
    cur->size += want;
    sp->unreleased_bytes += want;
    sp->records += nrec;
    *end = (oq_pos_t){cur->seg, cur->size};
    if (kept)
        *kept = nrec;
    if (want < len)
        rc = CM_EBUSY; /* the records past the cap were not written */
out:
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/* Encodes orders[i] (or *ptrs[i]) as ORDER records and appends them with one
 * write(2) (write_records says what `kept` means). */
static int append_orders(oq_spool_t *sp, const oq_order_t *orders, const oq_order_t *const *ptrs,
                         size_t n, size_t *kept, oq_pos_t *end)
{
    if (kept)
        *kept = 0;
    *end = (oq_pos_t){0, 0};
    if (n == 0)
        return 0;
    unsigned char stack[STACK_BUF];
    unsigned char *buf = stack;
    size_t cap = sizeof(stack), len = 0;
    for (size_t i = 0; i < n; i++) {
        const oq_order_t *o = ptrs ? ptrs[i] : &orders[i];
        for (;;) {
            int jl = -1;
            if (cap - len > REC_HDR)
                jl = oq_order_encode(o, (char *)buf + len + REC_HDR, cap - len - REC_HDR);
            if (jl > 0) {
                rec_frame(buf + len, OQ_REC_ORDER, (uint32_t)jl);
                len += REC_HDR + (size_t)jl;
                break;
            }
            if (cap - len >= REC_HDR + OQ_ORDER_JSON_MAX) { /* cannot be: the order is bad */
                if (buf != stack)
                    free(buf);
                return CM_EINVAL;
            }
            /* a large batch: the rare path that allocates */
            size_t ncap = cap * 2;
            unsigned char *nb = cm_xmalloc(ncap);
            memcpy(nb, buf, len);
            if (buf != stack)
                free(buf);
            buf = nb;
            cap = ncap;
        }
    }
    uint64_t k = 0;
    int rc = write_records(sp, buf, len, n, false, kept ? &k : NULL, end);
    if (kept)
        *kept = (size_t)k;
    if (buf != stack)
        free(buf);
    return rc;
}

int oq_spool_append(oq_spool_t *sp, const oq_order_t *orders, size_t n)
{
    oq_pos_t end;
    return append_orders(sp, orders, NULL, n, NULL, &end);
}

int oq_spool_append_batch(oq_spool_t *sp, const oq_order_t *const *orders, size_t n,
                          size_t *kept, oq_pos_t *end)
{
    oq_pos_t e;
    return append_orders(sp, NULL, orders, n, kept, end ? end : &e);
}

/* An upper bound of the ORDER record oq_order_encode writes for o: ids and
 * numbers as they are, the idempotency key with every byte escaped. */
static size_t order_rec_bound(const oq_order_t *o)
{
    return REC_HDR + 160 + strnlen(o->order_id, sizeof(o->order_id)) +
           strnlen(o->sale_id, sizeof(o->sale_id)) + strnlen(o->user_id, sizeof(o->user_id)) +
           (o->person[0] ? 12 + strnlen(o->person, sizeof(o->person)) : 0) +
           6 * strnlen(o->idem_key, sizeof(o->idem_key));
}

size_t oq_spool_order_bound(const oq_order_t *o)
{
    return order_rec_bound(o);
}

int oq_spool_room(oq_spool_t *sp, const oq_order_t *o, uint64_t pending)
{
    if (sp->read_only)
        return CM_EINVAL;
    uint64_t need = order_rec_bound(o) + pending;
    pthread_mutex_lock(&sp->mu);
    int rc = sp->broken ? CM_EIO
             : (sp->max_bytes && sp->unreleased_bytes + need > sp->max_bytes) ||
                     (sp->keep_copy && sp->copy_bytes + need > COPY_MAX_BYTES)
                 ? CM_EBUSY
                 : 0;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int oq_spool_append_event(oq_spool_t *sp, const char *json, size_t len)
{
    oq_pos_t end;
    return oq_spool_append_event_end(sp, json, len, &end);
}

int oq_spool_append_event_end(oq_spool_t *sp, const char *json, size_t len, oq_pos_t *end)
{
    *end = (oq_pos_t){0, 0};
    if (json == NULL || len == 0 || len > REC_MAX_PAYLOAD)
        return CM_EINVAL;
    unsigned char stack[STACK_BUF];
    unsigned char *buf = len + REC_HDR <= sizeof(stack) ? stack : cm_xmalloc(len + REC_HDR);
    memcpy(buf + REC_HDR, json, len);
    rec_frame(buf, OQ_REC_EVENT, (uint32_t)len);
    int rc = write_records(sp, buf, len + REC_HDR, 1, true, NULL, end);
    if (rc != 0)
        *end = (oq_pos_t){0, 0};
    if (buf != stack)
        free(buf);
    return rc;
}

/*
 * Called with mu held after a failed fdatasync (fsync durability): removes
 * every record past synced_pos (segments after it are deleted, its own is
 * truncated), so neither the relay now nor a replay after a restart sees an
 * order whose client was told it is not confirmed. A failure to cut is logged:
 * those records may then come back at the next start.
 */
static void cut_unsynced_locked(oq_spool_t *sp)
{
    if (sp->durability != OQ_DURABILITY_FSYNC)
        return;
    oq_pos_t to = sp->synced_pos;
    bool removed = false, failed = false;
    while (sp->nsegs > 1 && sp->segs[sp->nsegs - 1].seg > to.seg) {
        char name[64];
        seg_name(name, sizeof(name), sp->segs[sp->nsegs - 1].seg);
        if (sp->fs->unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT) {
            cm_log_error("oq", "spool: cannot remove an unsynced segment", "seg=%s errno=%d",
                         name, errno);
            failed = true;
        }
        removed = true;
        sp->nsegs--;
    }
    /* The cut is made durable itself (the removals by the directory's fsync,
     * the truncation by the segment's fdatasync): a power loss would
     * otherwise undo it, and a replay bring back an order whose client heard
     * "not confirmed". */
    if (removed && sp->fs->fsync(sp->dirfd) != 0) {
        cm_log_error("oq", "spool: cannot sync the removal of unsynced segments", "errno=%d",
                     errno);
        failed = true;
    }
    /* The last segment keeps what is at or before synced_pos: all of it when
     * it is before synced_pos, up to synced_pos in its own segment, nothing
     * when it comes after (the segment of synced_pos was released and deleted
     * by the relay, and the loop above, which keeps one segment, left this
     * unsynced one). */
    seg_info_t *last = &sp->segs[sp->nsegs - 1];
    uint64_t keep = last->seg == to.seg ? to.off : last->seg > to.seg ? 0 : last->size;
    if (last->size > keep) {
        char name[64];
        seg_name(name, sizeof(name), last->seg);
        int fd = sp->fs->openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0 || sp->fs->ftruncate(fd, (off_t)keep) != 0) {
            cm_log_error("oq", "spool: cannot cut unsynced records", "seg=%s errno=%d", name,
                         errno);
            failed = true;
        } else {
            last->size = keep;
            if (sp->fs->fdatasync(fd) != 0) {
                cm_log_error("oq", "spool: cannot sync the cut of unsynced records",
                             "seg=%s errno=%d", name, errno);
                failed = true;
            }
        }
        if (fd >= 0)
            sp->fs->close(fd);
    }
    if (failed)
        sp->cut_failures++;
    sp->unreleased_bytes = compute_unreleased(sp);
}

int oq_spool_commit_to(oq_spool_t *sp, oq_pos_t upto)
{
    return sp->durability == OQ_DURABILITY_FSYNC ? oq_spool_sync_to(sp, upto) : 0;
}

void oq__spool_fail_next_sync(oq_spool_t *sp)
{
    atomic_store(&sp->fail_next_sync, true);
}

void oq__spool_short_next_write(oq_spool_t *sp, size_t bytes, bool cut_fails)
{
    pthread_mutex_lock(&sp->mu);
    sp->fault_short = bytes;
    sp->fault_trunc = cut_fails;
    pthread_mutex_unlock(&sp->mu);
}

int oq_spool_sync(oq_spool_t *sp)
{
    if (sp->read_only)
        return 0;
    /* The end is read before the failure flag: a failed round sets the flag
     * before its cut moves the end back, so a record the cut removed is never
     * answered 0 through a test against the shortened end. */
    pthread_mutex_lock(&sp->mu);
    oq_pos_t end = {sp->segs[sp->nsegs - 1].seg, sp->segs[sp->nsegs - 1].size};
    pthread_mutex_unlock(&sp->mu);
    pthread_mutex_lock(&sp->sync_mu);
    bool failed = sp->sync_failed;
    pthread_mutex_unlock(&sp->sync_mu);
    return failed ? CM_EIO : oq_spool_sync_to(sp, end);
}

int oq_spool_sync_to(oq_spool_t *sp, oq_pos_t upto)
{
    if (sp->read_only)
        return 0;
    pthread_mutex_lock(&sp->sync_mu);
    while (oq_pos_cmp(sp->sync_done, upto) < 0) {
        if (sp->sync_failed) {
            /* Sticky: after one failed fdatasync a later one may "succeed" on
             * pages the kernel already dropped. Nobody is told data is safe
             * unless a round before the failure covered it (the loop's test). */
            pthread_mutex_unlock(&sp->sync_mu);
            return CM_EIO;
        }
        if (sp->syncing) { /* a follower: the leader's fsync may cover us */
            pthread_cond_wait(&sp->sync_cv, &sp->sync_mu);
            continue;
        }
        sp->syncing = true; /* the leader: sync for everyone appended so far */
        uint64_t floor = sp->sync_floor;
        pthread_mutex_unlock(&sp->sync_mu);

        uint64_t cur;
        oq_pos_t cover;
        int rc;
        unsigned wait_ms = SYNC_FD_WAIT_MIN_MS;
        for (;;) {
            pthread_mutex_lock(&sp->mu);
            cur = sp->segs[sp->nsegs - 1].seg;
            cover = (oq_pos_t){cur, sp->segs[sp->nsegs - 1].size};
            int fd = sp->fs->dup(sp->fd); /* a roll may close sp->fd while we sync */
            int dup_errno = errno;
            pthread_mutex_unlock(&sp->mu);

            rc = fd < 0 ? open_error(dup_errno) : 0;
            for (uint64_t s = floor; rc == 0 && s < cur; s++)
                rc = sync_segment(sp, s);
            int why = fd < 0 ? dup_errno : errno; /* for the log of a CM_EAGAIN */
            if (rc == 0 && sp->fs->fdatasync(fd) != 0 && !CM_PLANT(SPOOL_SYNC_IGNORED))
                rc = CM_EIO;
            if (rc == 0 && atomic_exchange(&sp->fail_next_sync, false))
                rc = CM_EIO;
            if (fd >= 0)
                sp->fs->close(fd);
            if (rc != CM_EAGAIN)
                break;
            /*
             * Out of file descriptors (a flood of connections): no fdatasync
             * ran, nothing is known lost. Taken as a failed fsync, it cut the
             * unsynced records (if that cut could even open the file),
             * refused every append until a restart and shed every buy as if
             * the disk had died (test_fsync_out_of_fds_waits). The leader
             * keeps the lead and tries again, 1 ms doubling to 100 ms apart,
             * for as long as it lasts: its waiters' clients are not answered
             * meanwhile (they hold the descriptors whose release ends it).
             */
            uint64_t n = atomic_fetch_add_explicit(&sp->sync_fd_waits, 1, memory_order_relaxed);
            if (n % 100 == 0)
                cm_log_warn("oq", "spool: no file descriptor to fdatasync with; trying again",
                            "dir=%s errno=%d waits=%" PRIu64, sp->dir, why, n + 1);
            usleep(wait_ms * 1000u);
            wait_ms = wait_ms * 2 > SYNC_FD_WAIT_MAX_MS ? SYNC_FD_WAIT_MAX_MS : wait_ms * 2;
        }
        atomic_fetch_add_explicit(&sp->fsyncs, 1, memory_order_relaxed);

        if (rc == 0) { /* readers may now see these records */
            pthread_mutex_lock(&sp->mu);
            if (oq_pos_cmp(cover, sp->synced_pos) > 0)
                sp->synced_pos = cover;
            pthread_mutex_unlock(&sp->mu);
        }
        pthread_mutex_lock(&sp->sync_mu);
        sp->syncing = false;
        if (rc != 0)
            sp->sync_failed = true;
        if (rc == 0) {
            if (oq_pos_cmp(cover, sp->sync_done) > 0)
                sp->sync_done = cover;
            sp->sync_floor = cur;
        }
        if (rc != 0) {
            /* After a failed fsync the kernel may have dropped the dirty pages:
             * stop accepting rather than answer 202 for what may be lost, and
             * cut off everything not known to be on disk before any waiter
             * learns the result: its clients hear "not confirmed", so no
             * reader may ever send those records on, not even after a
             * restart. Done under sync_mu, so no later sync can "succeed". */
            pthread_mutex_lock(&sp->mu);
            sp->broken = true;
            cut_unsynced_locked(sp);
            pthread_mutex_unlock(&sp->mu);
        }
        pthread_cond_broadcast(&sp->sync_cv);
        if (rc != 0) {
            pthread_mutex_unlock(&sp->sync_mu);
            cm_log_error("oq", "spool: fdatasync failed; unsynced records cut, appends now refused",
                         "dir=%s errno=%d", sp->dir, errno);
            return CM_EIO;
        }
    }
    pthread_mutex_unlock(&sp->sync_mu);
    atomic_fetch_add_explicit(&sp->syncs, 1, memory_order_relaxed);
    return 0;
}

/*---- reading ----*/

long oq_spool_scan(oq_spool_t *sp, oq_pos_t from, int (*fn)(const oq_rec_t *rec, void *ctx),
                   void *ctx)
{
    pthread_mutex_lock(&sp->mu);
    size_t nsegs = sp->nsegs;
    seg_info_t *segs = cm_xmalloc((nsegs ? nsegs : 1) * sizeof(seg_info_t));
    memcpy(segs, sp->segs, nsegs * sizeof(seg_info_t));
    if (sp->durability == OQ_DURABILITY_FSYNC && !sp->read_only &&
        !CM_PLANT(SPOOL_SCAN_UNSYNCED)) {
        /* only what an fdatasync confirmed: its clients were answered 202 */
        oq_pos_t lim = sp->synced_pos;
        while (nsegs > 0 && segs[nsegs - 1].seg > lim.seg)
            nsegs--;
        if (nsegs > 0 && segs[nsegs - 1].seg == lim.seg && segs[nsegs - 1].size > lim.off)
            segs[nsegs - 1].size = lim.off;
    }
    pthread_mutex_unlock(&sp->mu);

    long count = 0;
    char *evbuf = NULL;
    size_t evcap = 0;
    for (size_t i = 0; i < nsegs; i++) {
        uint64_t size = segs[i].size;
        if (segs[i].seg < from.seg)
            continue;
        uint64_t off = segs[i].seg == from.seg ? from.off : 0;
        if (off >= size)
            continue;
        const unsigned char *map;
        int rc = seg_map(sp, segs[i].seg, &size, &map);
        if (rc == CM_ENOTFOUND) /* released and deleted meanwhile */
            continue;
        if (rc != 0) {
            count = rc;
            goto out;
        }
        bool stop = false;
        while (off < size && !stop) {
            uint32_t len;
            rec_status_t st = rec_check(map + off, size - off, &len);
            if (st != REC_OK) {
                cm_log_error("oq", "spool: corrupt record while reading",
                             "dir=%s seg=%" PRIu64 " off=%" PRIu64 " reason=\"%s\"", sp->dir,
                             segs[i].seg, off, rec_status_str(st));
                count = CM_ECORRUPT;
                break;
            }
            oq_rec_t rec = {.type = (oq_rec_type_t)map[off + 8],
                            .pos = {segs[i].seg, off},
                            .next = {segs[i].seg, off + REC_HDR + len}};
            const char *payload = (const char *)map + off + REC_HDR;
            oq_order_t order;
            if (rec.type == OQ_REC_ORDER) {
                char why[160];
                int drc = oq_order_decode(payload, len, &order, why, sizeof(why));
                if (drc == 0 && order.type != OQ_MSG_ORDER) {
                    drc = CM_EINVAL;
                    snprintf(why, sizeof(why), "type: not an order");
                }
                if (drc != 0) {
                    cm_log_error("oq", "spool: ORDER record holds no valid order",
                                 "dir=%s seg=%" PRIu64 " off=%" PRIu64 " reason=\"%s\"", sp->dir,
                                 segs[i].seg, off, why);
                    count = CM_ECORRUPT;
                    break;
                }
                rec.order = &order;
            } else {
                if (len + 1 > evcap) {
                    evcap = len + 1;
                    evbuf = cm_xrealloc(evbuf, evcap);
                }
                /* evcap starts at 0, so evbuf was allocated above */
                memcpy(evbuf, payload, len); // NOLINT(clang-analyzer-core.NonNullParamChecker)
                evbuf[len] = '\0';
                rec.event = evbuf;
                rec.event_len = len;
            }
            count++;
            stop = fn(&rec, ctx) != 0;
            off = rec.next.off;
        }
        seg_unmap(sp, map, size);
        if (stop || count < 0)
            break;
    }
out:
    free(evbuf);
    free(segs);
    return count;
}

/*---- release and stats ----*/

oq_pos_t oq_spool_released(oq_spool_t *sp)
{
    pthread_mutex_lock(&sp->mu);
    oq_pos_t p = sp->released;
    pthread_mutex_unlock(&sp->mu);
    return p;
}

/* rel_mu held. Drops the segments wholly before upto (never the current one;
 * at most 64 a call) from the list and deletes their files. Returns how many. */
static size_t delete_released(oq_spool_t *sp, oq_pos_t upto)
{
    uint64_t dead[64];
    size_t ndead = 0;
    pthread_mutex_lock(&sp->mu);
    size_t keep = 0;
    for (size_t i = 0; i < sp->nsegs; i++) {
        bool is_last = i + 1 == sp->nsegs;
        if (!is_last && ndead < CM_ARRAY_LEN(dead) && seg_released(&sp->segs[i], false, upto))
            dead[ndead++] = sp->segs[i].seg;
        else
            sp->segs[keep++] = sp->segs[i];
    }
    sp->nsegs = keep;
    sp->unreleased_bytes = compute_unreleased(sp);
    pthread_mutex_unlock(&sp->mu);

    for (size_t i = 0; i < ndead; i++) {
        char name[64];
        seg_name(name, sizeof(name), dead[i]);
        if (sp->fs->unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT)
            cm_log_warn("oq", "spool: cannot delete a released segment", "seg=%s errno=%d", name,
                        errno);
    }
    return ndead;
}

static int release_impl(oq_spool_t *sp, oq_pos_t upto, bool delete_segments)
{
    if (sp->read_only)
        return CM_EINVAL;
    pthread_mutex_lock(&sp->rel_mu);
    pthread_mutex_lock(&sp->mu);
    oq_pos_t cur = sp->released;
    const seg_info_t *last = &sp->segs[sp->nsegs - 1];
    oq_pos_t end = {last->seg, last->size};
    pthread_mutex_unlock(&sp->mu);
    int rc = 0;
    if (oq_pos_cmp(upto, cur) <= 0) /* never backwards */
        goto out;
    if (oq_pos_cmp(upto, end) > 0) {
        rc = CM_EINVAL;
        goto out;
    }
    /*
     * A full disk: the point's file needs a block, and the released segments
     * were deleted only after it was written, so a spool that had filled its
     * disk could never write it again: every release failed, nothing was
     * freed, and every buy got 503 until someone freed space by hand
     * (integration.17-disk-full, C). The segments wholly before upto hold only
     * records that are done (delivered, or settled), so deleting them before
     * the point is persisted loses nothing: after a crash the older point on
     * disk makes recovery and the relay skip the missing segments and send
     * the rest again (duplicates, which consumers drop by order id). So a
     * failed write frees them and tries once more.
     */
    if ((rc = write_released(sp, upto)) != 0 &&
        (!delete_segments || delete_released(sp, upto) == 0 ||
         (rc = write_released(sp, upto)) != 0))
        goto out;

    pthread_mutex_lock(&sp->mu);
    sp->released = upto;
    sp->unreleased_bytes = compute_unreleased(sp);
    pthread_mutex_unlock(&sp->mu);
    if (delete_segments)
        delete_released(sp, upto);
out:
    pthread_mutex_unlock(&sp->rel_mu);
    return rc;
}

int oq_spool_release(oq_spool_t *sp, oq_pos_t upto)
{
    return release_impl(sp, upto, true);
}

int oq_spool_release_keep(oq_spool_t *sp, oq_pos_t upto)
{
    return release_impl(sp, upto, false);
}

void oq_spool_stats(oq_spool_t *sp, oq_spool_stats_t *out)
{
    pthread_mutex_lock(&sp->mu);
    out->unreleased_bytes = sp->unreleased_bytes;
    out->appended_records = sp->records;
    out->segments = sp->nsegs;
    if (sp->nsegs) {
        out->end.seg = sp->segs[sp->nsegs - 1].seg;
        out->end.off = sp->segs[sp->nsegs - 1].size;
    } else {
        out->end = sp->released;
    }
    out->released = sp->released;
    out->synced = sp->durability == OQ_DURABILITY_FSYNC ? sp->synced_pos : out->end;
    out->rolls = atomic_load_explicit(&sp->rolls, memory_order_relaxed);
    out->rolls_inline = atomic_load_explicit(&sp->rolls_inline, memory_order_relaxed);
    out->segment_flushes = atomic_load_explicit(&sp->seg_flushes, memory_order_relaxed);
    out->spare_ready = sp->spare_fd >= 0;
    out->cut_failures = sp->cut_failures;
    out->copy_bytes = sp->copy_bytes;
    pthread_mutex_unlock(&sp->mu);
    out->copy_syncs = atomic_load_explicit(&sp->copy_syncs, memory_order_relaxed);
    out->copy_rewrites = atomic_load_explicit(&sp->copy_rewrites, memory_order_relaxed);
    out->syncs = atomic_load_explicit(&sp->syncs, memory_order_relaxed);
    out->fsyncs = atomic_load_explicit(&sp->fsyncs, memory_order_relaxed);
    out->sync_fd_waits = atomic_load_explicit(&sp->sync_fd_waits, memory_order_relaxed);
}

int oq_pos_cmp(oq_pos_t a, oq_pos_t b)
{
    if (a.seg != b.seg)
        return a.seg < b.seg ? -1 : 1;
    if (a.off != b.off)
        return a.off < b.off ? -1 : 1;
    return 0;
}
