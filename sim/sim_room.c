/*
 * The waiting room's world (sim_room.h): one gateway's room, the real core
 * (gateway/buy/gw_room_core.h) stepped through the sale's machine
 * (gw_sale_core.h), its log on a simulated disk (sim_disk.h),
 * and a shell that does what gw_room_store.c does around the core: a record a
 * journal frame (common/cm_journal.h), one write(2) each, read back through
 * the journal's recovery; the seal's fdatasync before any rank is answered;
 * the lottery thread's periodic fdatasync; a token's claim line before its
 * reserve and, in durability fsync, synced before its 202; a give-back's
 * line. Persons join before and after the start, the front ticks, admitted
 * persons buy with their tokens, and the process crashes (kill -9: the page
 * cache stays) or, in durability fsync, loses power (only what was synced
 * stays, with a torn tail), then reads the log back.
 *
 * The oracle:
 *   - a place is never given to two persons;
 *   - a place whose records were durable is still the person's after a
 *     restart (and a pre-queue join's, its rank);
 *   - an admission token admits at most one order, across restarts;
 *   - the pre-queue's ranks are the order of the persons' keyed hashes.
 * A record is durable when a successful fdatasync followed its write with no
 * failed one in between (a failed fdatasync drops the dirty pages, as Linux
 * does: sim_disk.h).
 */
#include "sim/sim_room.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_room_core.h"
#include "gateway/buy/gw_sale_core.h"
#include "sim/sim_disk.h"
#include "sim/sim_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NP_MAX 40    /* persons */
#define POS_MAX 4096 /* places the oracle follows (a run gives far fewer) */
#define ORD_MAX 512  /* tokens that made orders */
#define T0_MS 1700000000000LL

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
    int dfd, fd;
    uint64_t len;                /* the log's length as written */
    uint64_t dur;                /* durable through (a successful fdatasync) */
    uint64_t lost_from, lost_to; /* dropped by a failed fdatasync (lost_to 0: none) */
    uint64_t s_end;              /* the end of the last seal line written */
    gw_room_core_t core;
    gw_sale_core_t sale; /* the sale's machine over the core (gw_sale_step) */
    gw_wr_spent_slot_t *spent;
    cm_hash_key_t key, seed;
    int64_t now_ms, starts_ms, last_tick_ms;
    double rate;
    int np;
    rperson_t p[NP_MAX];
    uint8_t owner[POS_MAX]; /* person + 1 holding each place, 0 none */
    uint64_t owner_need[POS_MAX];
    struct {
        uint64_t jti;
        int orders;
    } ord[ORD_MAX];
    int nord;
    uint64_t step;
    uint64_t max_next; /* the most places a process of this world gave */
} rworld_t;

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

/* The room's process is gone: the core without its tables, which are cleared. */
static void core_gone(rworld_t *w)
{
    uint64_t next = atomic_load(&w->core.next);
    w->max_next = next > w->max_next ? next : w->max_next;
    w->core.places = NULL;
    gw_room_core_deinit(&w->core);
    w->spent = NULL;
    tables_clear(w);
}

/* The sale's machine over the room's core, configured with the sale's start
 * and the room's rate (its own: the ticks bring the rate in force). */
static void sale_configure(rworld_t *w)
{
    gw_sale_core_init(&w->sale, NULL, &w->core, NULL);
    gw_sale_ev_t ev = {.kind = GW_SALE_EV_CONFIGURE,
                       .cfg = {.starts_at_ms = w->starts_ms, .room_rate = 1 + (int64_t)w->rate}};
    gw_sale_out_t out;
    gw_sale_step(&w->sale, &ev, w->now_ms, &out);
}

/* One event of the room through the sale's machine: its decision, *a and *out
 * filled (each may be NULL). */
static int room_step(rworld_t *w, gw_room_ev_t ev, gw_wr_join_t *a, gw_room_out_t *out)
{
    gw_sale_out_t so;
    gw_sale_step(&w->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = ev}, w->now_ms, &so);
    if (a)
        *a = so.room.answer;
    if (out)
        *out = so.room.recs;
    return so.room.rc;
}

/* A new process's core, with the cleared tables. */
static void core_new(rworld_t *w)
{
    if (!places_buf) {
        places_buf = cm_xcalloc(GW_ROOM_PLACES, sizeof(*places_buf));
        spent_buf = cm_xcalloc(GW_WR_SPENT_SLOTS, sizeof(*spent_buf));
    }
    gw_room_core_init(&w->core);
    w->core.places = places_buf;
    w->spent = spent_buf;
    sale_configure(w);
}

/* Bytes [0, end) durable: synced, and not in what a failed fdatasync dropped. */
static bool durable(const rworld_t *w, uint64_t end)
{
    return end <= w->dur && (w->lost_to == 0 || w->lost_from >= end);
}

/*---- the shell: gw_room.c's part, on the simulated disk ----*/

/* One record, framed as gw_room_store.c frames it (cm_journal_frame): one write(2). */
static int log_line(rworld_t *w, const char *line)
{
    char buf[192];
    size_t n = cm_journal_frame(buf, sizeof(buf), line, strlen(line));
    if (n == 0)
        return CM_EIO;
    sim_disk_use(w->disk);
    ssize_t k = sim_disk_ops()->write(w->fd, buf, n);
    if (k > 0)
        w->len += (uint64_t)k;
    return k == (ssize_t)n ? 0 : CM_EIO;
}

static int log_rec(rworld_t *w, const gw_room_rec_t *rec)
{
    char line[128];
    gw_room_rec_format(rec, line, sizeof(line));
    int rc = log_line(w, line);
    if (rc == 0 && rec->kind == GW_ROOM_REC_S)
        w->s_end = w->len;
    return rc;
}

/* fdatasync of the log. */
static int log_sync(rworld_t *w)
{
    sim_disk_use(w->disk);
    if (sim_disk_ops()->fdatasync(w->fd) == 0) {
        w->dur = w->len;
        return 0;
    }
    if (w->lost_to == 0)
        w->lost_from = w->dur;
    w->lost_to = w->len;
    sim_trace(&w->log, "fdatasync failed: [%" PRIu64 ", %" PRIu64 ") not durable", w->lost_from,
              w->lost_to);
    return CM_EIO;
}

static void recs_write(rworld_t *w, const gw_room_out_t *out)
{
    for (size_t i = 0; i < out->nrec; i++) {
        gw_room_rec_t s;
        if (gw_room_core_relog(&w->core, &out->rec[i], &s))
            room_step(
                w, (gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = &s, .ok = log_rec(w, &s) == 0},
                NULL, NULL);
        room_step(w,
                  (gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN,
                                 .rec = &out->rec[i],
                                 .ok = log_rec(w, &out->rec[i]) == 0},
                  NULL, NULL);
    }
}

/* The seal's record written, and its fdatasync when anyone was ranked. */
static void seal_write(rworld_t *w, const gw_room_out_t *out)
{
    recs_write(w, out);
    if (out->sync && !w->core.seal_unlogged)
        room_step(w, (gw_room_ev_t){.kind = GW_ROOM_EV_SEAL_SYNCED, .ok = log_sync(w) == 0}, NULL,
                  NULL);
    sim_trace(&w->log, "sealed: %zu ranked", w->core.npre);
}

static void seal(rworld_t *w)
{
    gw_room_out_t out;
    room_step(w, (gw_room_ev_t){.kind = GW_ROOM_EV_SEAL}, NULL, &out);
    seal_write(w, &out);
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
    if (p->pre && !p->pre_gone && atomic_load(&w->core.sealed)) {
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

/*---- events ----*/

static void join(rworld_t *w, int who, bool take)
{
    rperson_t *p = &w->p[who];
    gw_room_ev_t ev = {.kind = GW_ROOM_EV_JOIN,
                       .join = {.person = p->id,
                                .len = p->len,
                                .take = take,
                                .admitted_through = atomic_load(&w->core.front_milli) / 1000}};
    gw_wr_join_t a;
    gw_room_out_t out;
    int rc = room_step(w, ev, &a, &out);
    if (rc == GW_ROOM_SEAL) {
        seal(w);
        rc = room_step(w, ev, &a, &out);
    }
    if (rc == GW_ROOM_PREQUEUE) {
        if (out.nrec) {
            recs_write(w, &out);
            bool in = false; /* the core added the person once its line was written */
            for (size_t i = 0; i < w->core.npre && !in; i++)
                in = strcmp(w->core.names + w->core.name_at[i], p->id) == 0;
            if (in && !p->pre) {
                p->pre = true;
                p->pre_need = w->len;
            }
        }
        sim_trace(&w->log, "%s %s the pre-queue", p->id, take ? "joins" : "looks at");
        return;
    }
    if (rc != GW_ROOM_ANSWERED) {
        sim_trace(&w->log, "%s: join rc %d", p->id, rc);
        return;
    }
    bool new_place = false;
    for (size_t i = 0; i < out.nrec; i++)
        new_place = new_place || out.rec[i].kind == GW_ROOM_REC_P;
    recs_write(w, &out);
    /* durable once the log is through its place's line and the seal's (a
     * rank: the seal's, whose prefix holds every join); a place read back
     * from a torn tail: once everything so far is */
    uint64_t need = new_place                   ? w->len
                    : p->pos && a.pos == p->pos ? p->pos_need
                    : a.pos <= w->core.npre     ? w->s_end
                                                : w->len;
    if (need < w->s_end)
        need = w->s_end;
    sim_trace(&w->log, "%s %s: place %" PRIu64 "%s", p->id, take ? "joins" : "looks", a.pos,
              a.jti ? " (admitted)" : "");
    place_answered(w, who, &a, need);
}

/* The lottery thread's tick of the sale: the machine says whether the room
 * admits (the sale started); then the seal, then the front moved at the rate. */
static void tick(rworld_t *w)
{
    int64_t dt = w->last_tick_ms ? w->now_ms - w->last_tick_ms : 0;
    gw_sale_out_t so;
    gw_sale_step(&w->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, w->now_ms, &so);
    if (!(so.actions & GW_SALE_DO_ADMIT))
        return; /* nothing moves before the start */
    if (!atomic_load(&w->core.sealed))
        seal(w);
    w->last_tick_ms = w->now_ms;
    gw_room_out_t out;
    room_step(w, (gw_room_ev_t){.kind = GW_ROOM_EV_TICK, .eff_per_s = w->rate, .dt_ms = dt}, NULL,
              &out);
    recs_write(w, &out);
}

static int *orders_of(rworld_t *w, uint64_t jti)
{
    for (int i = 0; i < w->nord; i++)
        if (w->ord[i].jti == jti)
            return &w->ord[i].orders;
    if (w->nord == ORD_MAX)
        return NULL;
    w->ord[w->nord].jti = jti;
    w->ord[w->nord].orders = 0;
    return &w->ord[w->nord++].orders;
}

/* A buy with an admitted person's token (gw_fair_admission_claim, the
 * reserve, the group commit, gw_fair_admission_settle). */
static void buy(rworld_t *w, int who)
{
    rperson_t *p = &w->p[who];
    int64_t now_s = w->now_ms / 1000;
    if (!p->jti || p->exp_s < now_s)
        return;
    int rc = gw_room_spent_claim(&w->spent, p->jti, p->exp_s, p->fp, now_s);
    if (rc != GW_WR_CLAIMED) {
        sim_trace(&w->log, "%s buys: token %s", p->id,
                  rc == GW_WR_SPENT    ? "spent"
                  : rc == GW_WR_REPLAY ? "replayed (its order back)"
                                       : "busy");
        return;
    }
    char line[80];
    snprintf(line, sizeof(line), "T %016llx %lld %016llx", (unsigned long long)p->jti,
             (long long)p->exp_s, (unsigned long long)p->fp);
    if (log_line(w, line) != 0) {
        gw_room_spent_settle(w->spent, p->jti, false);
        return;
    }
    /* the reserve: sold out sometimes; in durability fsync the claim is
     * synced with the order before its 202 */
    bool ok = sim_below(&w->rng, 5) != 0 && (!w->fsync_mode || log_sync(w) == 0);
    if (!ok) {
        snprintf(line, sizeof(line), "U %016llx", (unsigned long long)p->jti);
        /* a give-back not written: spent until it expires, as on disk */
        gw_room_spent_settle(w->spent, p->jti, log_line(w, line) != 0);
        sim_trace(&w->log, "%s buys: no order, token given back", p->id);
        return;
    }
    gw_room_spent_settle(w->spent, p->jti, true);
    int *n = orders_of(w, p->jti);
    sim_trace(&w->log, "%s buys: order with place %" PRIu64 "'s token", p->id, p->pos);
    if (n && ++*n > 1)
        sim_fail(&w->log, "the token of place %" PRIu64 " (%s) admitted %d orders", p->pos, p->id,
                 *n);
}

/* A whole record read back (cm_journal_record_fn): the core replays it. */
static void room_record(void *arg, char *rec, size_t len)
{
    rworld_t *w = arg;
    (void)len;
    room_step(
        w,
        (gw_room_ev_t){
            .kind = GW_ROOM_EV_REPLAY, .line = rec, .spent = &w->spent, .now_s = w->now_ms / 1000},
        NULL, NULL);
}

/* The process is gone; a new one reads the log back. */
static void restart(rworld_t *w, bool power)
{
    sim_disk_use(w->disk);
    if (power) {
        sim_disk_power_loss(w->disk);
        w->log.res->power_losses++;
    } else {
        sim_disk_crash(w->disk);
        w->log.res->crashes++;
    }
    sim_trace(&w->log, "%s", power ? "power loss" : "crash");
    core_gone(w);
    core_new(w);
    const oq_fs_ops_t *fs = sim_disk_ops();
    w->dfd = fs->open_dir("room");
    w->fd = fs->openat(w->dfd, "s.room", O_RDWR | O_APPEND, 0);
    if (w->fd < 0) {
        sim_fail(&w->log, "the room's log is gone after a restart");
        return;
    }
    struct stat st;
    fs->fstat(w->fd, &st);
    size_t n = (size_t)st.st_size;
    char *buf = cm_xmalloc(n + 1);
    size_t got = 0;
    while (got < n) {
        ssize_t k = fs->pread(w->fd, buf + got, n - got, (off_t)got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    /* the product's recovery (cm_journal_scan): every whole frame in order,
     * a hole a failed fdatasync left skipped, a torn tail cut off the file */
    cm_journal_scan_t sc;
    cm_journal_scan_mem(buf, got, room_record, w, &sc);
    size_t at = (size_t)sc.end, lines = sc.records;
    if (sc.is_legacy)
        sim_fail(&w->log, "the room's log is not a journal after a restart");
    else if (at < got)
        fs->ftruncate(w->fd, (off_t)at);
    if (sc.holes)
        sim_trace(&w->log, "restart: %zu holes (%lld bytes) skipped", sc.holes,
                  (long long)sc.hole_bytes);
    free(buf);
    room_step(w, (gw_room_ev_t){.kind = GW_ROOM_EV_LOADED}, NULL, NULL);
    w->len = at;
    if (w->dur > w->len)
        w->dur = w->len;
    if (!atomic_load(&w->core.sealed))
        w->s_end = 0;
    w->last_tick_ms = 0;
    sim_trace(
        &w->log,
        "restart: %zu lines, %zu in the pre-queue, sealed %d, %" PRIu64 " places, front %" PRIu64,
        lines, w->core.npre, (int)atomic_load(&w->core.sealed),
        (uint64_t)atomic_load(&w->core.next), (uint64_t)atomic_load(&w->core.front_milli) / 1000);
}

/* After a power loss: what was durable is still there; the rest is forgotten
 * (or, a pre-queue join that survived on the torn tail, taken as the log says). */
static void after_power(rworld_t *w)
{
    for (int i = 0; i < w->np && !w->log.failed; i++) {
        rperson_t *p = &w->p[i];
        if (!p->pre)
            continue;
        bool in = false;
        for (size_t k = 0; k < w->core.npre && !in; k++)
            in = strcmp(w->core.names + w->core.name_at[k], p->id) == 0;
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
    w->lost_from = w->lost_to = 0;
}

/* Every place that was durable is still its person's (unless its token expired). */
static void check_places(rworld_t *w)
{
    if (!atomic_load(&w->core.sealed))
        return;
    for (int i = 0; i < w->np && !w->log.failed; i++) {
        rperson_t *p = &w->p[i];
        if (!p->pos || (p->exp_s && p->exp_s < w->now_ms / 1000))
            continue;
        uint64_t had = p->pos;
        join(w, i, false);
        if (!w->log.failed && p->pos != had)
            sim_fail(&w->log, "%s held place %" PRIu64 " before the restart, %" PRIu64 " after",
                     p->id, had, p->pos);
    }
}

void sim_room_run(const sim_opts_t *opts, sim_result_t *out)
{
    rworld_t *w = cm_xcalloc(1, sizeof(*w));
    w->log = (sim_log_t){.trace = opts->trace, .res = out, .name = "room step ", .clock = &w->step};
    cm_rand_seed(&w->rng, opts->seed ^ 0x726f6f6d5e5e5e5eull);
    w->fsync_mode = sim_below(&w->rng, 3) != 0 || opts->fsync_only;
    w->disk = sim_disk_new(&w->rng);
    sim_disk_use(w->disk);
    const oq_fs_ops_t *fs = sim_disk_ops();
    w->dfd = fs->open_dir("room");
    w->fd = fs->openat(w->dfd, "s.room", O_CREAT | O_RDWR | O_APPEND, 0644);
    fs->fsync(w->dfd);
    w->key = (cm_hash_key_t){cm_rand_next(&w->rng), cm_rand_next(&w->rng)};
    w->seed = (cm_hash_key_t){cm_rand_next(&w->rng), cm_rand_next(&w->rng)};
    core_new(w);
    w->core.key = w->key;
    w->core.seed = w->seed;
    char k[96];
    snprintf(k, sizeof(k), "K %016llx %016llx %016llx %016llx", (unsigned long long)w->key.k0,
             (unsigned long long)w->key.k1, (unsigned long long)w->seed.k0,
             (unsigned long long)w->seed.k1);
    fs->write(w->fd, CM_JOURNAL_MAGIC, CM_JOURNAL_MAGIC_LEN);
    w->len = CM_JOURNAL_MAGIC_LEN;
    log_line(w, k);
    log_sync(w);
    /* from here on, half the seeds fail one fdatasync in 20 (a failed one
     * drops its pages: a hole of zeros after a power loss, which the
     * journal's recovery skips to the synced frames after it) */
    bool fsync_fails = sim_below(&w->rng, 2) != 0;
    sim_disk_set_faults(w->disk, fsync_fails ? 0.05 : 0, 0);
    w->now_ms = T0_MS;
    w->starts_ms = T0_MS + 2000 + (int64_t)sim_below(&w->rng, 8000);
    w->rate = 0.5 + (double)sim_below(&w->rng, 8);
    sale_configure(w);
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
        uint64_t r = sim_below(&w->rng, 1000);
        int who = (int)sim_below(&w->rng, (uint32_t)w->np);
        if (r < 450) {
            join(w, who, sim_below(&w->rng, 8) != 0);
        } else if (r < 650) {
            tick(w);
        } else if (r < 830) {
            buy(w, who);
        } else if (r < 988) {
            (void)log_sync(w); /* the lottery thread's periodic sync */
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
    out->torn_writes += ds.torn_writes;
    if (w->log.failed)
        out->ok = false;
    core_gone(w);
    sim_disk_free(w->disk);
    free(w);
}
