/*
 * The simulated disk (sim_disk.h).
 */
#include "sim/sim_disk.h"

#include "common/cm_alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_MAXINO 1024
#define SD_MAXENT 512
#define SD_MAXFD 64
#define SD_FD_BASE 1000 /* simulated descriptors never look like real ones */
#define SD_DIRINO (-2)

typedef struct sd_inode {
    bool used;
    unsigned char *data; /* the page cache's view */
    size_t len, cap;
    unsigned char *dur; /* what the last fsync made durable */
    size_t dlen;
    /* A failed fsync: the kernel dropped the error with the dirty pages of
     * [lost_from, lost_to), which never reach the disk, whatever a later
     * fsync says (as Linux does since 4.13). */
    size_t lost_from, lost_to;
    /* Those pages, clean in the page cache, evicted once the disk's op count
     * reaches ev_at (0: none due): from then on [ev_from, ev_to) reads back
     * what the disk holds there (evict_due). */
    size_t ev_from, ev_to;
    uint64_t ev_at;
    /* Of the dropped pages, those an eviction replaced since they were dropped
     * (sim_disk_dropped_evicted): they read the disk's bytes now. */
    size_t gone_from, gone_to;
    bool journal; /* opened through the journal's table (sim_disk_journal_file) */
} sd_inode_t;

typedef struct sd_ent {
    char name[48];
    int ino;
} sd_ent_t;

typedef struct sd_fd {
    bool used;
    int ino; /* SD_DIRINO: the directory */
    uint32_t gen;
    bool append;
    uint64_t pos;
} sd_fd_t;

struct sim_disk {
    cm_rand_t *rng;
    sd_inode_t ino[SD_MAXINO];
    sd_ent_t ents[SD_MAXENT], dents[SD_MAXENT]; /* names now, names durable */
    int nents, ndents;
    sd_fd_t fds[SD_MAXFD];
    uint32_t gen;
    bool dead;
    bool dying;         /* the operation that killed it runs: a write then lands a prefix */
    uint64_t ops_left;  /* 0: no death planned */
    uint64_t pwrite_at; /* sd_pwrite's offset for sd_write, UINT64_MAX: none */
    double p_fsync_fail;
    uint64_t capacity;
    /* The evictions' own draws, seeded from rng's state without advancing it:
     * a seed whose evictions change nothing it reads walks its old path. */
    cm_rand_t erng;
    sim_evict_t evict; /* which files' dropped pages are evicted */
    sim_disk_stats_t st;
};

static sim_disk_t *cur;

sim_disk_t *sim_disk_new(cm_rand_t *rng)
{
    sim_disk_t *d = cm_xcalloc(1, sizeof(*d));
    d->rng = rng;
    d->pwrite_at = UINT64_MAX;
    cm_rand_seed(&d->erng, cm_rand_mix64(rng->s[0] ^ 0x65766963745f7067ull) ^ rng->s[3]);
    return d;
}

void sim_disk_free(sim_disk_t *d)
{
    if (d == NULL)
        return;
    for (int i = 0; i < SD_MAXINO; i++) {
        free(d->ino[i].data);
        free(d->ino[i].dur);
    }
    if (cur == d)
        cur = NULL;
    free(d);
}

void sim_disk_use(sim_disk_t *d)
{
    cur = d;
}

void sim_disk_set_faults(sim_disk_t *d, double p_fsync_fail, uint64_t capacity)
{
    d->p_fsync_fail = p_fsync_fail;
    d->capacity = capacity;
}

void sim_disk_set_evict(sim_disk_t *d, sim_evict_t which)
{
    d->evict = which;
}

void sim_disk_journal_file(int fd)
{
    int i = fd - SD_FD_BASE;
    if (i >= 0 && i < SD_MAXFD && cur->fds[i].used && cur->fds[i].gen == cur->gen &&
        cur->fds[i].ino >= 0)
        cur->ino[cur->fds[i].ino].journal = true;
}

void sim_disk_die_after(sim_disk_t *d, uint64_t ops)
{
    d->ops_left = ops;
}

void sim_disk_kill(sim_disk_t *d)
{
    d->dead = true;
    d->dying = false;
    d->ops_left = 0;
}

bool sim_disk_dead(const sim_disk_t *d)
{
    return d->dead;
}

void sim_disk_stats(const sim_disk_t *d, sim_disk_stats_t *out)
{
    *out = d->st;
}

/* Counts an operation; false when the process is (now) dead. */
static bool op(void)
{
    sim_disk_t *d = cur;
    d->st.ops++;
    d->dying = false;
    if (d->dead)
        return false;
    if (d->ops_left && --d->ops_left == 0) {
        d->dead = d->dying = true;
        return false;
    }
    return true;
}

static sd_fd_t *fd_get(int fd)
{
    int i = fd - SD_FD_BASE;
    if (i < 0 || i >= SD_MAXFD || !cur->fds[i].used || cur->fds[i].gen != cur->gen)
        return NULL;
    return &cur->fds[i];
}

static int fd_new(int ino, bool append)
{
    for (int i = 0; i < SD_MAXFD; i++) {
        sd_fd_t *f = &cur->fds[i];
        if (!f->used || f->gen != cur->gen) { /* a dead process's descriptor is free */
            *f = (sd_fd_t){.used = true, .ino = ino, .gen = cur->gen, .append = append};
            return SD_FD_BASE + i;
        }
    }
    errno = EMFILE;
    return -1;
}

static int ent_find(const sd_ent_t *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0)
            return i;
    return -1;
}

/* Frees inodes that no name (now or durable) and no live descriptor holds. */
static void ino_gc(int ino)
{
    sim_disk_t *d = cur;
    for (int i = 0; i < d->nents; i++)
        if (d->ents[i].ino == ino)
            return;
    for (int i = 0; i < d->ndents; i++)
        if (d->dents[i].ino == ino)
            return;
    for (int i = 0; i < SD_MAXFD; i++)
        if (d->fds[i].used && d->fds[i].gen == d->gen && d->fds[i].ino == ino)
            return;
    sd_inode_t *n = &d->ino[ino];
    free(n->data);
    free(n->dur);
    *n = (sd_inode_t){0};
}

static uint64_t used_bytes(void)
{
    uint64_t s = 0;
    for (int i = 0; i < SD_MAXINO; i++)
        if (cur->ino[i].used)
            s += cur->ino[i].len;
    return s;
}

static void ino_resize(sd_inode_t *n, size_t len)
{
    if (len > n->cap) {
        size_t c = n->cap ? n->cap : 256;
        while (c < len)
            c *= 2;
        n->data = cm_xrealloc(n->data, c);
        n->cap = c;
    }
    if (len > n->len)
        memset(n->data + n->len, 0, len - n->len);
    if (len < n->lost_to) /* a cut takes dropped pages with it: new ones are written anew */
        n->lost_to = len;
    if (n->lost_to <= n->lost_from)
        n->lost_from = n->lost_to = 0;
    n->len = len;
    if (len < n->ev_to) /* the cut pages go with the file's tail */
        n->ev_to = len;
    if (len < n->gone_to)
        n->gone_to = len;
    if (n->ev_to <= n->ev_from)
        n->ev_at = 0;
}

/* An eviction of n's pages that came due: the page cache then reads what the
 * disk holds, the synced bytes or, past them, the zeros a power loss would
 * show (sd_fsync's model of the dropped pages). Called before any operation
 * reads or writes n's data. */
static void evict_due(sd_inode_t *n)
{
    if (n->ev_at == 0 || cur->st.ops < n->ev_at)
        return;
    n->ev_at = 0;
    size_t to = n->ev_to < n->len ? n->ev_to : n->len;
    for (size_t i = n->ev_from; i < to; i++)
        n->data[i] = i < n->dlen ? n->dur[i] : 0;
    if (n->gone_to <= n->gone_from || n->ev_from < n->gone_from)
        n->gone_from = n->ev_from;
    if (to > n->gone_to)
        n->gone_to = to;
    cur->st.evictions++;
}

/* A failed fsync left n's pages in [lost_from, lost_to) clean and unwritten:
 * the kernel may evict them (one failure in two) after the disk's next 1-16 or
 * 1-256 operations (even chances), or, when an eviction is pending, evicts
 * those pages with the others. Of the files sim_disk_set_evict chose. */
static void evict_plan(sd_inode_t *n)
{
    sim_disk_t *d = cur;
    if (n->lost_to <= n->lost_from || d->evict == SIM_EVICT_NONE ||
        (d->evict == SIM_EVICT_JOURNALS && !n->journal))
        return;
    if (n->ev_at) {
        if (n->lost_from < n->ev_from)
            n->ev_from = n->lost_from;
        if (n->lost_to > n->ev_to)
            n->ev_to = n->lost_to;
        return;
    }
    if (cm_rand_below(&d->erng, 2) != 0)
        return;
    n->ev_from = n->lost_from;
    n->ev_to = n->lost_to;
    n->ev_at = d->st.ops + 1 + cm_rand_below(&d->erng, cm_rand_below(&d->erng, 2) ? 16 : 256);
}

/* A write of [at, end) dirties its pages again: none of them is evicted. */
static void evict_written(sd_inode_t *n, uint64_t at, uint64_t end)
{
    if (n->ev_at == 0 || end <= n->ev_from || at >= n->ev_to)
        return;
    if (at <= n->ev_from)
        n->ev_from = (size_t)end;
    else if (end >= n->ev_to)
        n->ev_to = (size_t)at;
    else /* the middle: the pages on either side stay in the cache (less eviction, never more) */
        n->ev_at = 0;
    if (n->ev_to <= n->ev_from)
        n->ev_at = 0;
}

/*---- the operations ----*/

static int sd_mkdir(const char *path, mode_t mode)
{
    (void)path;
    (void)mode;
    if (!op())
        return errno = EIO, -1;
    return errno = EEXIST, -1;
}

static int sd_open_dir(const char *path)
{
    (void)path;
    if (!op())
        return errno = EIO, -1;
    return fd_new(SD_DIRINO, false);
}

static int sd_openat(int dirfd, const char *name, int flags, mode_t mode)
{
    (void)mode;
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *df = fd_get(dirfd);
    if (df == NULL || df->ino != SD_DIRINO)
        return errno = EBADF, -1;
    sim_disk_t *d = cur;
    int e = ent_find(d->ents, d->nents, name);
    if (e >= 0 && (flags & O_CREAT) && (flags & O_EXCL))
        return errno = EEXIST, -1;
    int ino;
    if (e < 0) {
        if (!(flags & O_CREAT))
            return errno = ENOENT, -1;
        if (d->nents == SD_MAXENT)
            return errno = ENOSPC, -1;
        for (ino = 0; ino < SD_MAXINO && d->ino[ino].used; ino++)
            ;
        if (ino == SD_MAXINO)
            return errno = ENOSPC, -1;
        d->ino[ino] = (sd_inode_t){.used = true};
        snprintf(d->ents[d->nents].name, sizeof(d->ents[0].name), "%s", name);
        d->ents[d->nents++].ino = ino;
    } else {
        ino = d->ents[e].ino;
    }
    if (flags & O_TRUNC)
        ino_resize(&d->ino[ino], 0);
    int fd = fd_new(ino, (flags & O_APPEND) != 0);
    if (fd < 0 && e < 0) {
        d->nents--;
        ino_gc(ino);
    }
    return fd;
}

static int sd_close(int fd)
{
    sd_fd_t *f = fd_get(fd);
    if (f == NULL)
        return errno = EBADF, -1;
    f->used = false;
    if (f->ino >= 0)
        ino_gc(f->ino);
    return 0;
}

static int sd_dup(int fd)
{
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL)
        return errno = EBADF, -1;
    sd_fd_t copy = *f;
    int nfd = fd_new(copy.ino, copy.append);
    sd_fd_t *nf = fd_get(nfd);
    if (nf)
        nf->pos = copy.pos;
    return nfd;
}

static ssize_t sd_pread(int fd, void *buf, size_t n, off_t off)
{
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL || f->ino < 0)
        return errno = EBADF, -1;
    sd_inode_t *in = &cur->ino[f->ino];
    evict_due(in);
    if ((size_t)off >= in->len)
        return 0;
    size_t k = in->len - (size_t)off < n ? in->len - (size_t)off : n;
    memcpy(buf, in->data + off, k);
    return (ssize_t)k;
}

static ssize_t sd_read(int fd, void *buf, size_t n)
{
    sd_fd_t *f = fd_get(fd);
    if (f == NULL)
        return errno = EBADF, -1;
    ssize_t r = sd_pread(fd, buf, n, (off_t)f->pos);
    if (r > 0)
        f->pos += (uint64_t)r;
    return r;
}

static ssize_t sd_write(int fd, const void *buf, size_t n)
{
    sim_disk_t *d = cur;
    sd_fd_t *f = fd_get(fd);
    bool alive = op();
    if (f == NULL || f->ino < 0)
        return errno = EBADF, -1;
    sd_inode_t *in = &d->ino[f->ino];
    evict_due(in);
    size_t want = n;
    if (!alive) {
        if (!d->dying || n == 0) /* only the write it died in: none runs after it */
            return errno = EIO, -1;
        /* killed in the middle of this write: a random prefix reached the file */
        want = (size_t)cm_rand_below(d->rng, n + 1);
        d->st.torn_writes++;
    }
    uint64_t at = f->append ? in->len : d->pwrite_at != UINT64_MAX ? d->pwrite_at : f->pos;
    if (d->capacity) { /* only what grows the file takes room: an overwrite allocates nothing */
        uint64_t used = used_bytes();
        uint64_t room = used >= d->capacity ? 0 : d->capacity - used;
        uint64_t inside = at < in->len ? in->len - at : 0;
        if (want > inside && want - inside > room) {
            want = (size_t)(inside + room);
            d->st.full_writes++;
            if (want == 0)
                return errno = ENOSPC, -1;
        }
    }
    if (at + want > in->len)
        ino_resize(in, (size_t)(at + want));
    if (want) {
        memcpy(in->data + at, buf, want);
        evict_written(in, at, at + want);
    }
    if (in->lost_to > in->lost_from && at <= in->lost_from && at + want >= in->lost_to)
        in->lost_from = in->lost_to = in->gone_from = in->gone_to =
            0; /* written again: dirty
                    pages, no longer dropped */
    if (d->pwrite_at == UINT64_MAX)
        f->pos = at + want;
    if (!alive)
        return errno = EIO, -1;
    return (ssize_t)want; /* short on a full disk: the caller sees ENOSPC next */
}

static ssize_t sd_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    cur->pwrite_at = (uint64_t)off;
    ssize_t r = sd_write(fd, buf, n);
    cur->pwrite_at = UINT64_MAX;
    return r;
}

static int sd_fsync(int fd)
{
    sim_disk_t *d = cur;
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL)
        return errno = EBADF, -1;
    if (f->ino >= 0)
        evict_due(&d->ino[f->ino]);
    if (d->p_fsync_fail > 0 && cm_rand_unit(d->rng) < d->p_fsync_fail) {
        d->st.fsync_fails++;
        if (f->ino >= 0) {
            sd_inode_t *in = &d->ino[f->ino];
            if (in->lost_to == 0)
                in->lost_from = in->dlen;
            in->lost_to = in->len;
            evict_plan(in);
        }
        return errno = EIO, -1;
    }
    if (f->ino == SD_DIRINO) {
        memcpy(d->dents, d->ents, sizeof(d->ents));
        int old = d->ndents;
        d->ndents = d->nents;
        (void)old;
        for (int i = 0; i < SD_MAXINO; i++)
            if (d->ino[i].used)
                ino_gc(i);
        return 0;
    }
    sd_inode_t *in = &d->ino[f->ino];
    in->dur = cm_xrealloc(in->dur, in->len ? in->len : 1);
    if (in->len)
        memcpy(in->dur, in->data, in->len);
    in->dlen = in->len;
    if (in->lost_to > in->lost_from && in->lost_from < in->len) {
        size_t to = in->lost_to < in->len ? in->lost_to : in->len;
        memset(in->dur + in->lost_from, 0, to - in->lost_from);
    }
    in->lost_from = in->lost_to = in->gone_from = in->gone_to = 0;
    return 0;
}

static int sd_ftruncate(int fd, off_t len)
{
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL || f->ino < 0)
        return errno = EBADF, -1;
    evict_due(&cur->ino[f->ino]);
    ino_resize(&cur->ino[f->ino], (size_t)len);
    return 0;
}

static int sd_fstat(int fd, struct stat *st)
{
    if (!op())
        return errno = EIO, -1;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL)
        return errno = EBADF, -1;
    memset(st, 0, sizeof(*st));
    st->st_size = f->ino >= 0 ? (off_t)cur->ino[f->ino].len : 0;
    return 0;
}

static int sd_fstatat(int dirfd, const char *name, struct stat *st, int flags)
{
    (void)flags;
    if (!op())
        return errno = EIO, -1;
    if (fd_get(dirfd) == NULL)
        return errno = EBADF, -1;
    int e = ent_find(cur->ents, cur->nents, name);
    if (e < 0)
        return errno = ENOENT, -1;
    memset(st, 0, sizeof(*st));
    st->st_size = (off_t)cur->ino[cur->ents[e].ino].len;
    return 0;
}

static int sd_renameat(int od, const char *on, int nd, const char *nn)
{
    if (!op())
        return errno = EIO, -1;
    if (fd_get(od) == NULL || fd_get(nd) == NULL)
        return errno = EBADF, -1;
    sim_disk_t *d = cur;
    int e = ent_find(d->ents, d->nents, on);
    if (e < 0)
        return errno = ENOENT, -1;
    int ino = d->ents[e].ino;
    int t = ent_find(d->ents, d->nents, nn);
    if (t >= 0) {
        int old = d->ents[t].ino;
        d->ents[t].ino = ino;
        d->ents[e] = d->ents[--d->nents];
        ino_gc(old);
    } else {
        snprintf(d->ents[e].name, sizeof(d->ents[0].name), "%s", nn);
    }
    return 0;
}

static int sd_unlinkat(int dirfd, const char *name, int flags)
{
    (void)flags;
    if (!op())
        return errno = EIO, -1;
    if (fd_get(dirfd) == NULL)
        return errno = EBADF, -1;
    sim_disk_t *d = cur;
    int e = ent_find(d->ents, d->nents, name);
    if (e < 0)
        return errno = ENOENT, -1;
    int ino = d->ents[e].ino;
    d->ents[e] = d->ents[--d->nents];
    ino_gc(ino);
    return 0;
}

static int sd_flock(int fd, int opn)
{
    (void)opn;
    if (!op())
        return errno = EIO, -1;
    return fd_get(fd) ? 0 : (errno = EBADF, -1);
}

static int sd_list(const char *path, void (*fn)(const char *name, void *ctx), void *ctx)
{
    (void)path;
    if (!op())
        return errno = EIO, -1;
    sim_disk_t *d = cur;
    /* sorted names are not promised by readdir: hand them out in table order */
    for (int i = 0; i < d->nents; i++)
        fn(d->ents[i].name, ctx);
    return 0;
}

static const unsigned char *sd_map(int fd, size_t len)
{
    if (!op())
        return errno = EIO, NULL;
    sd_fd_t *f = fd_get(fd);
    if (f == NULL || f->ino < 0)
        return errno = EBADF, NULL;
    sd_inode_t *in = &cur->ino[f->ino];
    evict_due(in);
    unsigned char *m = cm_xcalloc(1, len ? len : 1);
    if (in->len)
        memcpy(m, in->data, len < in->len ? len : in->len);
    return m;
}

static void sd_unmap(const unsigned char *p, size_t len)
{
    (void)len;
    free((void *)p);
}

static const oq_fs_ops_t sd_ops = {
    .mkdir = sd_mkdir,
    .open_dir = sd_open_dir,
    .openat = sd_openat,
    .close = sd_close,
    .dup = sd_dup,
    .read = sd_read,
    .pread = sd_pread,
    .write = sd_write,
    .pwrite = sd_pwrite,
    .fsync = sd_fsync,
    .fdatasync = sd_fsync,
    .ftruncate = sd_ftruncate,
    .fstat = sd_fstat,
    .fstatat = sd_fstatat,
    .renameat = sd_renameat,
    .unlinkat = sd_unlinkat,
    .flock = sd_flock,
    .list = sd_list,
    .map = sd_map,
    .unmap = sd_unmap,
};

const oq_fs_ops_t *sim_disk_ops(void)
{
    return &sd_ops;
}

/*---- crashes ----*/

void sim_disk_crash(sim_disk_t *d)
{
    d->gen++;
    d->dead = false;
    d->ops_left = 0;
    for (int i = 0; i < SD_MAXFD; i++)
        d->fds[i].used = false;
}

bool sim_disk_dropped_evicted(sim_disk_t *d, const char *name, uint64_t off)
{
    int e = ent_find(d->ents, d->nents, name);
    if (e < 0)
        return false;
    const sd_inode_t *n = &d->ino[d->ents[e].ino];
    if (off < n->lost_from || off >= n->lost_to)
        return false;
    return (n->ev_at && off >= n->ev_from && off < n->ev_to) ||
           (off >= n->gone_from && off < n->gone_to);
}

void sim_disk_power_loss(sim_disk_t *d)
{
    sim_disk_crash(d);
    d->st.power_losses++;
    memcpy(d->ents, d->dents, sizeof(d->ents));
    d->nents = d->ndents;
    for (int i = 0; i < SD_MAXINO; i++) {
        sd_inode_t *n = &d->ino[i];
        if (!n->used)
            continue;
        bool named = false;
        for (int k = 0; k < d->nents && !named; k++)
            named = d->ents[k].ino == i;
        if (!named) {
            free(n->data);
            free(n->dur);
            *n = (sd_inode_t){0};
            continue;
        }
        if (n->len >= n->dlen) { /* the synced part, and the tail torn at any byte */
            if (n->dlen)
                memcpy(n->data, n->dur, n->dlen);
            n->len = n->dlen + (size_t)cm_rand_below(d->rng, n->len - n->dlen + 1);
            size_t lf = n->lost_from > n->dlen ? n->lost_from : n->dlen;
            size_t lt = n->lost_to < n->len ? n->lost_to : n->len;
            if (lt > lf) /* pages a failed fsync dropped never reached the disk */
                memset(n->data + lf, 0, lt - lf);
        } else if (cm_rand_below(d->rng, 2) == 0) { /* cut since: the cut kept or lost */
            ino_resize(n, n->dlen);
            memcpy(n->data, n->dur, n->dlen);
        }
        n->lost_from = n->lost_to = n->gone_from = n->gone_to = 0;
        n->ev_at = 0; /* the page cache is gone: every read is the disk's now */
    }
}
