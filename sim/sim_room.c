/*
 * The waiting room's world (sim_room.h): one gateway's room, the real
 * local room store (gateway/buy/gw_room_store.c, gw_fair__room_local_ops)
 * over the real core (gw_room_core.h) and the sale's machine
 * (gw_sale_core.h), its log the real journal (common/cm_journal.h: the
 * group commit, the recovery) on a simulated disk (sim_disk.h, through
 * sim_journal_fs.h). Persons join before and after the start (the store's
 * join: its seal and the seal's fdatasync before any rank), the lottery
 * thread ticks (the store's tick: its periodic fdatasync, the seal, the
 * front), admitted persons buy with their tokens (the store's claim, its
 * line before the reserve; its sync before the 202 in durability fsync; its
 * give-back), and the process crashes (kill -9: the page cache stays) or,
 * in durability fsync, loses power (only what was synced stays, with a torn
 * tail); a new process loads the log (gw_fair__room_load).
 *
 * The oracle:
 *   - a place is never given to two persons;
 *   - a place whose records were durable is still the person's after a
 *     restart (and a pre-queue join's, its rank);
 *   - an admission token admits at most one order, across restarts;
 *   - the pre-queue's ranks are the order of the persons' keyed hashes.
 * A record is durable when the store's write of it returned whole, an
 * fdatasync the store ran on the log succeeded after it with no failed one
 * in between (a failed fdatasync drops the dirty pages, as Linux does:
 * sim_disk.h), and the log's name was fsync'd in its directory. A crash
 * keeps every record written, but those whose dropped pages were evicted
 * before a rewrite succeeded (after_eviction). The world
 * sees the store's calls through a table around the journal's (obs_fs): what
 * the store did, not what it meant to do.
 */
#include "sim/sim_room.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_room_core.h"
#include "gateway/buy/gw_sale_core.h"
#include "sim/sim_disk.h"
#include "sim/sim_journal_fs.h"
#include "sim/sim_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NP_MAX 40    /* persons */
#define POS_MAX 4096 /* places the oracle follows (a run gives far fewer) */
#define ORD_MAX 512  /* tokens that made orders */
#define T0_MS 1700000000000LL
#define ROOM_DIR "room"
#define ROOM_SALE "s"
#define ROOM_FILE ROOM_SALE ".room" /* the store's path: <dir>/<sale>.room */
#define NEVER UINT64_MAX            /* a need no sync can meet: its record was not written */
#define PROMISED 0                  /* a need the store answered as durable (its sync's 0) */

typedef struct rperson {
    char id[12];
    size_t len;
    uint64_t key;      /* the pre-queue key (the room's seed) */
    uint64_t fp;       /* its buys' Idempotency-Key fingerprint (0: none) */
    bool pre;          /* in the pre-queue (its J line written) */
    uint64_t pre_need; /* the log's length that makes its J line durable */
    bool pre_gone;     /* its rank's token expired unused: at the back since */
    uint64_t pos;      /* the place last answered, 0 none */
    uint64_t pos_need; /* ... durable once the log is durable through this */
    int64_t exp_s;     /* its admission token's expiry, 0 none */
    uint64_t jti;
} rperson_t;

typedef struct rworld {
    cm_rand_t rng;
    sim_log_t log;
    bool fsync_mode;
    sim_disk_t *disk;
    gw_fair_t *f;       /* the fairness module: only its directory (the store's path) */
    gw_fair_sale_t *fs; /* the sale's slot, its room's part as gw_fair__sale_new makes it */
    /* the log as the store's calls left it (obs_fs) */
    uint64_t base, gone_below;   /* the log file's offset 0, records of removed files (obs_fs) */
    uint64_t len;                /* its end */
    uint64_t dur;                /* durable through (a successful fdatasync) */
    uint64_t lost_from, lost_to; /* dropped by a failed fdatasync (lost_to 0: none) */
    uint64_t ev_mark;            /* the disk's evictions when that range opened */
    bool rewrite_tried;          /* a rewrite's file opened in this call (obs_open) */
    bool rewrite_skipped;        /* a tick with that range open tried no rewrite */
    bool name_durable;           /* its name fsync'd in the directory */
    bool op_failed;              /* a write of it failed, or it was removed, in this call */
    uint64_t s_end;              /* durable through this, the seal is (0: not sealed) */
    /* dur, lost_from, lost_to, name_durable at the last power loss: after_power
     * judges by them, not by the load's rewrite (obs_rename), which took its
     * copy of the page cache as synced */
    uint64_t loss[4];
    cm_hash_key_t key, seed;
    int64_t now_ms, starts_ms;
    double rate;
    int np;
    rperson_t p[NP_MAX];
    uint8_t owner[POS_MAX]; /* person + 1 holding each place, 0 none */
    uint64_t owner_need[POS_MAX];
    struct {
        uint64_t jti;
        uint64_t need; /* its claim's line durable through (its "T") */
        int orders;
    } ord[ORD_MAX];
    int nord;
    uint64_t step;
    uint64_t max_next; /* the most places a process of this world gave */
    uint64_t answered; /* the last join's place (0: none), NEVER when not answered one */
} rworld_t;

/*---- what the store does to its log: the journal's table, watched ----*/

/*
 * Offsets are the world's own, across files: a record's is base + its
 * offset in the file it was written to. A compaction's file (written to
 * "<log>.tmp", renamed over the log) continues them (its records are the
 * old file's state); a log the store removed leaves its records below
 * gone_below, never durable.
 */
static rworld_t *obs_w; /* the world whose store runs (one at a time) */
#define OBS_FDS 16
static int obs_fd[OBS_FDS], obs_tmp[OBS_FDS]; /* the log's descriptors and its rewrite's, 0 free */
static uint64_t obs_tmp_synced;               /* the rewrite's length its last fdatasync covered */

static const char *name_of(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static bool is_log(const char *path)
{
    return strcmp(name_of(path), ROOM_FILE) == 0;
}

static bool is_tmp(const char *path)
{
    return strcmp(name_of(path), ROOM_FILE ".tmp") == 0;
}

static bool fd_in(const int *set, int fd)
{
    for (int i = 0; i < OBS_FDS; i++)
        if (set[i] == fd)
            return true;
    return false;
}

static void fd_set_to(int *set, int fd, bool on)
{
    for (int i = 0; i < OBS_FDS; i++)
        if (on ? set[i] == 0 : set[i] == fd) {
            set[i] = on ? fd : 0;
            return;
        }
}

static uint64_t fd_size(int fd)
{
    struct stat st;
    int e = errno;
    uint64_t n = sim_journal_fs()->fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    errno = e;
    return n;
}

static int obs_open(const char *path, int flags, mode_t mode)
{
    const cm_journal_fs_t *b = sim_journal_fs();
    bool log = !(flags & O_DIRECTORY) && is_log(path), had = true;
    if (log && (flags & O_CREAT)) {
        int e = errno, fd0 = b->open(path, O_RDONLY, 0);
        had = fd0 >= 0;
        if (had)
            b->close(fd0);
        errno = e;
    }
    int fd = b->open(path, flags, mode);
    if (fd >= 0 && log) {
        fd_set_to(obs_fd, fd, true);
        if (!had) { /* a new log: its name is durable once the directory is fsync'd */
            rworld_t *w = obs_w;
            w->name_durable = false;
            w->base = w->len;
            w->dur = w->len;
        }
    } else if (fd >= 0 && !(flags & O_DIRECTORY) && is_tmp(path)) {
        fd_set_to(obs_tmp, fd, true);
        obs_w->rewrite_tried = true;
        obs_tmp_synced = 0;
    }
    return fd;
}

static int obs_close(int fd)
{
    fd_set_to(obs_fd, fd, false);
    fd_set_to(obs_tmp, fd, false);
    return sim_journal_fs()->close(fd);
}

static int obs_dup(int fd)
{
    int nfd = sim_journal_fs()->dup(fd);
    if (nfd >= 0 && fd_in(obs_fd, fd))
        fd_set_to(obs_fd, nfd, true);
    return nfd;
}

static ssize_t obs_pread(int fd, void *buf, size_t n, off_t off)
{
    return sim_journal_fs()->pread(fd, buf, n, off);
}

static ssize_t obs_write(int fd, const void *buf, size_t n)
{
    ssize_t r = sim_journal_fs()->write(fd, buf, n);
    if (fd_in(obs_fd, fd)) {
        if (r != (ssize_t)n)
            obs_w->op_failed = true;
        obs_w->len = obs_w->base + fd_size(fd);
    }
    return r;
}

static int obs_ftruncate(int fd, off_t len)
{
    int r = sim_journal_fs()->ftruncate(fd, len);
    if (r == 0 && fd_in(obs_fd, fd)) {
        rworld_t *w = obs_w;
        w->len = w->base + (uint64_t)len;
        if (w->dur > w->len)
            w->dur = w->len;
    }
    return r;
}

static int obs_fstat(int fd, struct stat *st)
{
    return sim_journal_fs()->fstat(fd, st);
}

static int obs_fdatasync(int fd)
{
    int r = sim_journal_fs()->fdatasync(fd);
    rworld_t *w = obs_w;
    if (fd_in(obs_tmp, fd)) {
        if (r == 0)
            obs_tmp_synced = fd_size(fd);
        else
            sim_trace(&w->log, "the rewrite's fdatasync failed");
        return r;
    }
    if (!fd_in(obs_fd, fd))
        return r;
    if (r == 0) {
        w->dur = w->base + fd_size(fd);
        return 0;
    }
    int e = errno;
    if (w->lost_to == 0) {
        sim_disk_stats_t ds;
        sim_disk_stats(w->disk, &ds);
        w->lost_from = w->dur;
        w->ev_mark = ds.evictions;
    }
    w->lost_to = w->base + fd_size(fd);
    sim_trace(&w->log, "fdatasync failed: [%" PRIu64 ", %" PRIu64 ") not durable", w->lost_from,
              w->lost_to);
    errno = e;
    return r;
}

static int obs_fsync(int fd)
{
    int r = sim_journal_fs()->fsync(fd);
    if (r == 0) /* the directory's: the log's name is durable (the disk has one directory) */
        obs_w->name_durable = true;
    return r;
}

static int obs_rename(const char *from, const char *to)
{
    int r = sim_journal_fs()->rename(from, to);
    if (r == 0 && is_tmp(from) && is_log(to)) {
        /* a compaction's file over the log: it holds every record so far
         * (the state, then the frames after it), synced through what its
         * fdatasync covered; its name is durable at the directory's fsync */
        rworld_t *w = obs_w;
        uint64_t size = 0;
        memset(obs_fd, 0, sizeof(obs_fd));
        for (int i = 0; i < OBS_FDS; i++)
            if (obs_tmp[i]) {
                size = fd_size(obs_tmp[i]);
                fd_set_to(obs_fd, obs_tmp[i], true);
                obs_tmp[i] = 0;
            }
        w->base = w->len - size;
        w->dur = w->base + obs_tmp_synced;
        w->lost_from = w->lost_to = 0;
        w->rewrite_skipped = false;
        w->name_durable = false;
        sim_trace(&w->log, "the log rewritten: %" PRIu64 " bytes", size);
    }
    return r;
}

static int obs_unlink(const char *path)
{
    int r = sim_journal_fs()->unlink(path);
    if (r == 0 && is_log(path)) {
        rworld_t *w = obs_w;
        w->gone_below = w->base = w->dur = ++w->len; /* the next file's records are after */
        w->lost_from = w->lost_to = 0;
        w->rewrite_skipped = false;
        w->name_durable = false;
        w->op_failed = true;
    }
    return r;
}

static int obs_mkdir(const char *path, mode_t mode)
{
    return sim_journal_fs()->mkdir(path, mode);
}

static const cm_journal_fs_t obs_fs = {
    .open = obs_open,
    .close = obs_close,
    .dup = obs_dup,
    .pread = obs_pread,
    .write = obs_write,
    .ftruncate = obs_ftruncate,
    .fstat = obs_fstat,
    .fdatasync = obs_fdatasync,
    .fsync = obs_fsync,
    .rename = obs_rename,
    .unlink = obs_unlink,
    .mkdir = obs_mkdir,
};

/* Bytes [0, end) durable: synced, not in what a failed fdatasync dropped, the
 * name synced; or what the store answered only after its sync said so (PROMISED). */
static bool durable(const rworld_t *w, uint64_t end)
{
    return end == PROMISED || (w->name_durable && end > w->gone_below && end <= w->dur &&
                               (w->lost_to == 0 || w->lost_from >= end));
}

/*
 * The room's tables, a place table of 1.5 MiB and a spent table of 8 MiB,
 * are allocated once per process and handed to each room: a new table of
 * each at every restart, cleared by calloc, was most of the world's time.
 * Only the buckets this world can have used are cleared (those of its
 * persons' tags and of its places' replay ids), which leaves the tables as
 * new ones.
 */
static gw_wr_place_t *places_buf;
static gw_wr_spent_slot_t *spent_buf;

static void tables_clear(rworld_t *w)
{
    for (int i = 0; i < w->np; i++) {
        uint64_t tag = cm_hash_sip24(&w->key, w->p[i].id, w->p[i].len) | 1;
        size_t b = (size_t)(tag >> 32) & (GW_ROOM_PLACES - GW_WR_WAYS);
        memset(places_buf + b, 0, GW_WR_WAYS * sizeof(*places_buf));
    }
    for (uint64_t pos = 1; pos <= w->max_next; pos++) {
        uint64_t jti = gw_fair__place_jti(&w->key, pos);
        size_t b = (size_t)(jti % (GW_WR_SPENT_SLOTS / GW_WR_SPENT_WAYS)) * GW_WR_SPENT_WAYS;
        memset(spent_buf + b, 0, GW_WR_SPENT_WAYS * sizeof(*spent_buf));
    }
}

/* The simulated clock, the store's too (its sync pacing, the replay's expiries). */
static void clock_set(const rworld_t *w)
{
    cm_time_set_fake(true, 1000000000ull + (uint64_t)(w->now_ms - T0_MS) * 1000000ull, w->now_ms);
}

/* The room's process is gone: its store's journal dropped without a sync (its
 * descriptors died with it), the core without its tables, which are cleared. */
static void core_gone(rworld_t *w)
{
    gw_fair_sale_t *fs = w->fs;
    uint64_t next = atomic_load(&fs->wr_core.next);
    w->max_next = next > w->max_next ? next : w->max_next;
    if (fs->wr_store.open)
        cm_journal_discard(&fs->wr_store.j);
    fs->wr_store.open = false;
    gw_fair__room_store_deinit(&fs->wr_store);
    fs->wr_core.places = NULL;
    gw_room_core_deinit(&fs->wr_core);
    fs->wr_spent.slots = NULL;
    gw_wr_spent_deinit(&fs->wr_spent);
    pthread_mutex_destroy(&fs->mu);
    pthread_mutex_destroy(&fs->wr_mu);
    pthread_mutex_destroy(&fs->reg_mu);
    tables_clear(w);
    memset(obs_fd, 0, sizeof(obs_fd));
    memset(obs_tmp, 0, sizeof(obs_tmp));
}

/* The sale's machine over the room's core, configured with the sale's start
 * and the room's rate (its own: the ticks bring the rate in force). */
static void sale_configure(rworld_t *w)
{
    gw_sale_core_init(&w->fs->sale, NULL, &w->fs->wr_core, NULL);
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_CONFIGURE,
                       .cfg = {.starts_at_ms = w->starts_ms, .room_rate = 1 + (int64_t)w->rate}};
    gw_sale_out_t out;
    gw_sale_step(&w->fs->sale, &ev, w->now_ms, &out);
}

/* A new process's sale slot (gw_fair__sale_new's room part) on the local
 * store, with the cleared tables and the world's keys (a log's K line
 * replaces them at the load). */
static void core_new(rworld_t *w)
{
    if (!places_buf) {
        places_buf = cm_xcalloc(GW_ROOM_PLACES, sizeof(*places_buf));
        spent_buf = cm_xcalloc(GW_WR_SPENT_SLOTS, sizeof(*spent_buf));
    }
    gw_fair_sale_t *fs = w->fs;
    memset(fs, 0, sizeof(*fs));
    fs->f = w->f;
    snprintf(fs->sale_id, sizeof(fs->sale_id), "%s", ROOM_SALE);
    pthread_mutex_init(&fs->mu, NULL);
    pthread_mutex_init(&fs->wr_mu, NULL);
    pthread_mutex_init(&fs->reg_mu, NULL);
    gw_wr_spent_init(&fs->wr_spent);
    fs->wr_spent.slots = spent_buf;
    gw_fair__room_store_init(&fs->wr_store);
    fs->wr_ops = &gw_fair__room_local_ops;
    gw_room_core_init(&fs->wr_core);
    fs->wr_core.places = places_buf;
    fs->wr_core.key = w->key;
    fs->wr_core.seed = fs->wr_seed = w->seed;
    sale_configure(w);
}

/* After a call into the store: the seal's durable end, once its record is written. */
static void seal_seen(rworld_t *w)
{
    const gw_room_core_t *c = &w->fs->wr_core;
    if (!atomic_load(&c->sealed))
        w->s_end = 0;
    else if (c->seal_unlogged)
        w->s_end = NEVER;
    else if (w->s_end == 0 || w->s_end == NEVER)
        w->s_end = w->op_failed ? NEVER : w->len;
}

static bool in_prequeue(const rworld_t *w, const char *id)
{
    const gw_room_core_t *c = &w->fs->wr_core;
    for (size_t i = 0; i < c->npre; i++)
        if (strcmp(c->names + c->name_at[i], id) == 0)
            return true;
    return false;
}

/*---- the oracle ----*/

/* The rank the pre-queue's keys give p (1-based). */
static uint64_t rank_of(const rworld_t *w, const rperson_t *p)
{
    uint64_t below = 0;
    for (int i = 0; i < w->np; i++)
        below += w->p[i].pre && w->p[i].key < p->key;
    return below + 1;
}

static void place_answered(rworld_t *w, int who, const gw_wr_join_t *a, uint64_t need)
{
    rperson_t *p = &w->p[who];
    if (a->pos == 0)
        return;
    /* a pre-queue person holds their key's rank until its token expired
     * unused (then a place at the back) */
    if (p->pre && !p->pre_gone && atomic_load(&w->fs->wr_core.sealed)) {
        uint64_t r = rank_of(w, p);
        if (a->pos != r) {
            if (p->pos == r && p->exp_s && p->exp_s < w->now_ms / 1000) {
                p->pre_gone = true;
            } else {
                sim_fail(&w->log,
                         "%s of the pre-queue was answered place %" PRIu64
                         ", its key's rank is %" PRIu64,
                         p->id, a->pos, r);
                return;
            }
        }
    }
    if (a->pos < POS_MAX) {
        if (w->owner[a->pos] && w->owner[a->pos] != who + 1) {
            sim_fail(&w->log, "place %" PRIu64 " given to %s and to %s", a->pos,
                     w->p[w->owner[a->pos] - 1].id, p->id);
            return;
        }
        if (!w->owner[a->pos] || need < w->owner_need[a->pos])
            w->owner_need[a->pos] = need;
        w->owner[a->pos] = (uint8_t)(who + 1);
    }
    if (a->pos != p->pos) {
        p->pos = a->pos;
        p->pos_need = need;
        p->exp_s = 0;
        p->jti = 0;
    }
    if (a->jti) {
        p->exp_s = a->exp_s;
        p->jti = a->jti;
    }
}

/*---- events: the store's calls, as the gateway's threads make them ----*/

/* A join or a look (gw_fair_room_join: the store's join, its seal and the
 * seal's fdatasync included). */
static void join(rworld_t *w, int who, bool take)
{
    rperson_t *p = &w->p[who];
    gw_fair_sale_t *fs = w->fs;
    uint64_t len0 = w->len;
    gw_wr_join_t a;
    w->op_failed = false;
    int rc = gw_fair_room_join(fs, p->id, p->len, take, w->now_ms,
                               atomic_load(&fs->wr_core.front_milli) / 1000, &a);
    seal_seen(w);
    w->answered = rc == 0 && !a.prequeue ? a.pos : NEVER;
    if (rc == 0 && a.prequeue) {
        if (in_prequeue(w, p->id) && !p->pre) { /* added once its line was written */
            p->pre = true;
            p->pre_need = w->op_failed ? NEVER : w->len;
        }
        sim_trace(&w->log, "%s %s the pre-queue", p->id, take ? "joins" : "looks at");
        return;
    }
    if (rc != 0) {
        sim_trace(&w->log, "%s: join rc %d", p->id, rc);
        return;
    }
    /* durable once the log is through its place's line and the seal's (a
     * rank: the seal's, whose prefix holds every join); a place read back
     * from a torn tail: once everything so far is */
    bool wrote = w->len != len0;
    uint64_t need = w->op_failed                ? NEVER
                    : wrote                     ? w->len
                    : p->pos && a.pos == p->pos ? p->pos_need
                    : a.pos <= fs->wr_core.npre ? w->s_end
                                                : w->len;
    if (need < w->s_end)
        need = w->s_end;
    /* a rank is answered once the store's seal sync reported the joins and
     * the seal durable: it is held to that, whatever the disk did before */
    if (atomic_load(&fs->wr_core.sealed) && p->pre && !p->pre_gone && a.pos == rank_of(w, p))
        need = p->pre_need = PROMISED;
    sim_trace(&w->log, "%s %s: place %" PRIu64 "%s", p->id, take ? "joins" : "looks", a.pos,
              a.jti ? " (admitted)" : "");
    place_answered(w, who, &a, need);
}

/* The lottery thread's tick of the sale: the machine's actions, then the
 * store's tick (its periodic fdatasync, the seal at the start, the front
 * moved at the rate), as gw_fair__rooms_tick calls it. */
static void tick(rworld_t *w)
{
    gw_fair_sale_t *fs = w->fs;
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, w->now_ms, &so);
    int64_t dt = fs->wr_last_ms ? w->now_ms - fs->wr_last_ms : 0;
    fs->wr_last_ms = w->now_ms;
    if (!(so.actions & GW_SALE_DO_ROOM))
        return;
    w->op_failed = false;
    bool owed = w->lost_to != 0; /* what a failed fdatasync dropped: the tick rewrites it */
    w->rewrite_tried = false;
    fs->wr_ops->tick(fs, w->now_ms, dt, (so.actions & GW_SALE_DO_ADMIT) != 0, w->starts_ms, w->rate,
                     1);
    seal_seen(w);
    if (owed && !w->rewrite_tried && w->lost_to != 0 && !w->rewrite_skipped) {
        sim_trace(&w->log, "the tick tried no rewrite of the dropped lines");
        w->rewrite_skipped = true;
    }
}

/* The orders jti's token made, its claim's line durable through need (the
 * last order's: a claim forgotten by an eviction counts again from 0). */
static int *orders_of(rworld_t *w, uint64_t jti, uint64_t need)
{
    for (int i = 0; i < w->nord; i++)
        if (w->ord[i].jti == jti) {
            w->ord[i].need = need;
            return &w->ord[i].orders;
        }
    if (w->nord == ORD_MAX)
        return NULL;
    w->ord[w->nord].jti = jti;
    w->ord[w->nord].need = need;
    w->ord[w->nord].orders = 0;
    return &w->ord[w->nord++].orders;
}

/* A buy with an admitted person's token: the store's claim (its line before
 * the reserve), the reserve, in durability fsync the store's sync before the
 * 202, and its settle (a give-back's line). */
static void buy(rworld_t *w, int who)
{
    rperson_t *p = &w->p[who];
    gw_fair_sale_t *fs = w->fs;
    int64_t now_s = w->now_ms / 1000;
    if (!p->jti || p->exp_s < now_s)
        return;
    uint64_t nonce = 0;
    w->op_failed = false;
    int rc = fs->wr_ops->claim(fs, p->jti, p->exp_s, p->fp, now_s, &nonce);
    if (rc != GW_WR_CLAIMED) {
        sim_trace(&w->log, "%s buys: token %s", p->id,
                  rc == GW_WR_SPENT    ? "spent"
                  : rc == GW_WR_REPLAY ? "replayed (its order back)"
                  : rc == CM_EIO       ? "claim not written"
                                       : "busy");
        return;
    }
    uint64_t need = w->op_failed ? NEVER : w->len;
    /* the reserve: sold out sometimes */
    bool ok = sim_below(&w->rng, 5) != 0 && (!w->fsync_mode || fs->wr_ops->sync(fs) == 0);
    fs->wr_ops->settle(fs, p->jti, p->fp, nonce, ok);
    if (!ok) {
        sim_trace(&w->log, "%s buys: no order, token given back", p->id);
        return;
    }
    int *n = orders_of(w, p->jti, w->fsync_mode ? PROMISED : need);
    sim_trace(&w->log, "%s buys: order with place %" PRIu64 "'s token", p->id, p->pos);
    if (n && ++*n > 1)
        sim_fail(&w->log, "the token of place %" PRIu64 " (%s) admitted %d orders", p->pos, p->id,
                 *n);
}

/* The log's length on the disk now (0: no log). */
static uint64_t log_size(void)
{
    int fd = sim_journal_fs()->open(ROOM_DIR "/" ROOM_FILE, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    uint64_t n = fd_size(fd);
    sim_journal_fs()->close(fd);
    return n;
}

/* Records in (from, to], dropped by a failed fdatasync and evicted before any
 * rewrite made the room's state durable again, are gone though no power was
 * lost: what the page cache showed is no longer there for the load to read
 * (sim_disk.h), and the process that held them died. As after a power loss, the
 * places, the pre-queue joins and the token claims written there are forgotten
 * (the store answered them before the failed fdatasync, unsynced as its
 * durability allows: docs/design.md "Limits"). */
static void after_eviction(rworld_t *w, uint64_t from, uint64_t to)
{
#define EVICTED(need) ((need) != PROMISED && (need) != NEVER && (need) > from && (need) <= to)
    for (int i = 0; i < w->np; i++) {
        rperson_t *p = &w->p[i];
        if (p->pre && EVICTED(p->pre_need))
            p->pre = in_prequeue(w, p->id);
        if (p->pos && EVICTED(p->pos_need)) {
            sim_trace(&w->log, "%s's place %" PRIu64 " evicted", p->id, p->pos);
            p->pos = 0, p->exp_s = 0, p->jti = 0;
        }
    }
    for (int pos = 1; pos < POS_MAX; pos++)
        if (w->owner[pos] && EVICTED(w->owner_need[pos]))
            w->owner[pos] = 0;
    for (int i = 0; i < w->nord; i++)
        if (w->ord[i].orders && EVICTED(w->ord[i].need)) {
            sim_trace(&w->log, "the claim of a token with %d order(s) evicted", w->ord[i].orders);
            w->ord[i].orders = 0;
        }
#undef EVICTED
}

/* The process is gone; a new one loads the log (gw_fair__room_load). */
static void restart(rworld_t *w, bool power)
{
    sim_disk_use(w->disk);
    uint64_t lost_from = w->lost_from, lost_to = w->lost_to, ev_mark = w->ev_mark;
    if (power) {
        /* as the store's calls left the disk (after_power) */
        memcpy(w->loss, (uint64_t[4]){w->dur, w->lost_from, w->lost_to, w->name_durable},
               sizeof(w->loss));
        sim_disk_power_loss(w->disk);
        w->log.res->power_losses++;
    } else {
        sim_disk_crash(w->disk);
        w->log.res->crashes++;
    }
    sim_trace(&w->log, "%s", power ? "power loss" : "crash");
    core_gone(w);
    if (power) { /* what the disk kept is durable now, its name too */
        w->len = w->base + log_size();
        if (w->dur > w->len)
            w->dur = w->len;
        w->name_durable = true;
    }
    core_new(w);
    w->op_failed = false;
    gw_fair__room_load(w->fs);
    seal_seen(w);
    sim_disk_stats_t ds;
    sim_disk_stats(w->disk, &ds);
    /* evicted before the load read them, or while it did; a loss the lottery
     * thread's rewrite would have prevented is the store's (no excuse) */
    if (!power && lost_to && ds.evictions > ev_mark && !w->rewrite_skipped)
        after_eviction(w, lost_from, lost_to);
    const gw_room_core_t *c = &w->fs->wr_core;
    sim_trace(&w->log,
              "restart: the log to %" PRIu64 ", %zu in the pre-queue, sealed %d, %" PRIu64
              " places, front %" PRIu64,
              w->len, c->npre, (int)atomic_load(&c->sealed), (uint64_t)atomic_load(&c->next),
              (uint64_t)atomic_load(&c->front_milli) / 1000);
}

/* After a power loss: what was durable is still there; the rest is forgotten
 * (or, a pre-queue join that survived on the torn tail, taken as the log says). */
static void after_power(rworld_t *w)
{
    uint64_t dur = w->dur;
    bool named = w->name_durable;
    w->dur = w->loss[0], w->lost_from = w->loss[1], w->lost_to = w->loss[2];
    w->name_durable = w->loss[3];
    for (int i = 0; i < w->np && !w->log.failed; i++) {
        rperson_t *p = &w->p[i];
        if (!p->pre)
            continue;
        bool in = in_prequeue(w, p->id);
        if (!in && durable(w, p->pre_need))
            sim_fail(&w->log, "%s's pre-queue join was durable and is gone after a restart", p->id);
        p->pre = in;
    }
    for (int pos = 1; pos < POS_MAX; pos++)
        if (w->owner[pos] && !durable(w, w->owner_need[pos]))
            w->owner[pos] = 0;
    for (int i = 0; i < w->np; i++) {
        rperson_t *p = &w->p[i];
        if (p->pos && !durable(w, p->pos_need))
            p->pos = 0, p->exp_s = 0, p->jti = 0;
    }
    /* the dropped pages are gone: what is written from now on can be synced */
    w->dur = dur, w->name_durable = named;
    w->lost_from = w->lost_to = 0;
    w->rewrite_skipped = false;
}

/* Every place that was durable is still its person's (unless its token expired). */
static void check_places(rworld_t *w)
{
    if (!atomic_load(&w->fs->wr_core.sealed))
        return;
    for (int i = 0; i < w->np && !w->log.failed; i++) {
        rperson_t *p = &w->p[i];
        if (!p->pos || (p->exp_s && p->exp_s < w->now_ms / 1000))
            continue;
        uint64_t had = p->pos;
        join(w, i, false);
        if (!w->log.failed && (p->pos != had || w->answered == 0))
            sim_fail(&w->log, "%s held place %" PRIu64 " before the restart, %" PRIu64 " after",
                     p->id, had, w->answered == 0 ? 0 : p->pos);
    }
}

void sim_room_run(const sim_opts_t *opts, sim_result_t *out)
{
    rworld_t *w = cm_xcalloc(1, sizeof(*w));
    w->log = (sim_log_t){.trace = opts->trace, .res = out, .name = "room step ", .clock = &w->step};
    cm_rand_seed(&w->rng, opts->seed ^ 0x726f6f6d5e5e5e5eull);
    w->fsync_mode = sim_below(&w->rng, 3) != 0 || opts->fsync_only;
    w->disk = sim_disk_new(&w->rng);
    /* the room's log's pages a failed fdatasync dropped, evicted (after_eviction) */
    sim_disk_set_evict(w->disk, SIM_EVICT_JOURNALS);
    sim_disk_use(w->disk);
    obs_w = w;
    memset(obs_fd, 0, sizeof(obs_fd));
    memset(obs_tmp, 0, sizeof(obs_tmp));
    cm_journal_set_fs(&obs_fs);
    w->f = cm_xcalloc(1, sizeof(*w->f));
    snprintf(w->f->dir, sizeof(w->f->dir), "%s", ROOM_DIR);
    w->fs = cm_xcalloc(1, sizeof(*w->fs));
    w->key = (cm_hash_key_t){cm_rand_next(&w->rng), cm_rand_next(&w->rng)};
    w->seed = (cm_hash_key_t){cm_rand_next(&w->rng), cm_rand_next(&w->rng)};
    w->now_ms = T0_MS;
    clock_set(w);
    /* half the seeds fail one fdatasync in 20, the directory's too (a failed
     * one drops its pages: a hole of zeros after a power loss, which the
     * journal's recovery skips to the synced frames after it) */
    bool fsync_fails = sim_below(&w->rng, 2) != 0;
    sim_disk_set_faults(w->disk, fsync_fails ? 0.05 : 0, 0);
    w->starts_ms = T0_MS + 2000 + (int64_t)sim_below(&w->rng, 8000);
    w->rate = 0.5 + (double)sim_below(&w->rng, 8);
    core_new(w);
    w->np = 4 + (int)sim_below(&w->rng, NP_MAX - 4);
    for (int i = 0; i < w->np; i++) {
        rperson_t *p = &w->p[i];
        p->len = (size_t)snprintf(p->id, sizeof(p->id), "u%d", i);
        p->key = gw_wr_prequeue_key(&w->seed, p->id, p->len);
        p->fp = sim_below(&w->rng, 2) ? cm_rand_next(&w->rng) | 1 : 0;
    }
    uint64_t steps = 200 + sim_below(&w->rng, 300);
    sim_trace(&w->log, "room: %d persons, start at +%lld ms, %.1f/s, durability %s", w->np,
              (long long)(w->starts_ms - T0_MS), w->rate, w->fsync_mode ? "fsync" : "write");
    for (w->step = 0; w->step < steps && !w->log.failed; w->step++) {
        w->now_ms += (int64_t)sim_below(&w->rng, 300);
        clock_set(w);
        uint64_t r = sim_below(&w->rng, 1000);
        int who = (int)sim_below(&w->rng, (uint32_t)w->np);
        if (r < 450) {
            join(w, who, sim_below(&w->rng, 8) != 0);
        } else if (r < 650) {
            tick(w);
        } else if (r < 830) {
            buy(w, who);
        } else if (r < 988) {
            tick(w); /* the lottery thread's next tick: its periodic sync */
        } else if (r < 994) {
            restart(w, false);
            if (!w->log.failed)
                check_places(w);
        } else if (w->fsync_mode) {
            restart(w, true);
            if (!w->log.failed)
                after_power(w);
            if (!w->log.failed)
                check_places(w);
        }
    }
    out->steps += w->step;
    sim_disk_stats_t ds;
    sim_disk_stats(w->disk, &ds);
    out->fsync_fails += ds.fsync_fails;
    out->evictions += ds.evictions;
    out->torn_writes += ds.torn_writes;
    if (w->log.failed)
        out->ok = false;
    core_gone(w);
    cm_journal_set_fs(NULL);
    obs_w = NULL;
    sim_disk_free(w->disk);
    free(w->fs);
    free(w->f);
    free(w);
}
