/*
 * One gateway's waiting room, gw_fair__room_local_ops: its core (gw_room_core.c
 * decides, under wr_mu) and its log, the journal <data_dir>/fair/<sale>.room
 * (docs/design.md "One gateway's room across a restart"; each line's meaning:
 * gw_room_core.c's replay). The journal does the file's path (appends, group
 * commit, compaction); this file says what goes in it. Every file call goes
 * through cm_journal_fs, so the simulator runs this store on its simulated
 * disk (sim/sim_room.c).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_time.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A dirty log is fdatasync'd by the lottery thread's first tick this long or more after
 * its last sync. */
#define GW_WR_SYNC_MS 100
/* The longest line the load reads as one of the log's own (with its newline). */
#define GW_WR_LINE_MAX 511

void gw_fair__room_store_init(gw_room_store_t *st)
{
    *st = (gw_room_store_t){.open = false}; /* every count and length 0 */
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
}

void gw_fair__room_store_deinit(gw_room_store_t *st)
{
    if (st->open)
        (void)cm_journal_close(&st->j); /* its lines synced */
    st->open = false;
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
}

static void store_path(const gw_fair_sale_t *fs, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.room", fs->f->dir, fs->sale_id);
}

/* Logs a failed write at most once in 5 s. st->mu held. */
static void store_trouble(gw_fair_sale_t *fs, const char *what)
{
    int64_t now = (int64_t)cm_mono_ms();
    if (fs->wr_store.err_ms && now - fs->wr_store.err_ms < 5000)
        return;
    fs->wr_store.err_ms = now;
    cm_log_error("fair", "waiting-room log", "sale=%s what=%s err=%s", fs->sale_id, what,
                 strerror(errno));
}

/* The "K" line of the room's keys: its length. */
static int key_line(char *out, size_t cap, cm_hash_key_t key, cm_hash_key_t seed)
{
    return snprintf(out, cap, "K %016llx %016llx %016llx %016llx", (unsigned long long)key.k0,
                    (unsigned long long)key.k1, (unsigned long long)seed.k0,
                    (unsigned long long)seed.k1);
}

/* Opens the log for appends (again after a short write whose cut-off failed, once
 * no sync uses it); a new (empty) one starts with the room's keys, synced: every
 * place and replay id derives from them. A line log the load could not convert is
 * left for the next start's, and no line goes after it. st->mu held. 0 or CM_EIO. */
static int store_open(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    if (st->open && cm_journal_broken(&st->j)) {
        if (st->users)
            return CM_EIO;
        cm_journal_discard(&st->j);
        st->open = false;
    }
    if (st->open)
        return 0;
    char path[700], why[256];
    store_path(fs, path, sizeof(path));
    /* a reopen finds what a failed fdatasync of the journal before may have dropped */
    int rc = cm_journal_open(&st->j, path, CM_JOURNAL_DEFER_SYNC | CM_JOURNAL_REWRITE_FOUND, NULL,
                             NULL, why, sizeof(why));
    if (rc != 0) {
        errno = rc == CM_ECORRUPT ? EINVAL : EIO;
        store_trouble(fs, why);
        return CM_EIO;
    }
    st->open = true;
    st->opens++;
    off_t len;
    cm_journal_lens(&st->j, &len, NULL, NULL);
    if (len > CM_JOURNAL_MAGIC_LEN)
        return 0;
    char line[128];
    int n = key_line(line, sizeof(line), fs->wr_core.key, fs->wr_seed);
    off_t end;
    if (cm_journal_put(&st->j, line, (size_t)n, &end) != 0 || cm_journal_sync_to(&st->j, end) != 0) {
        store_trouble(fs, "keys");
        (void)cm_journal_fs()->unlink(path);
        cm_journal_discard(&st->j);
        st->open = false;
        return CM_EIO;
    }
    return 0;
}

/* Appends one line (n bytes, no newline) with one write(2); a new log starts with
 * a "K" line of the room's keys (wr_core.key, wr_seed: wr_mu held, or keys that no longer
 * change). 0, CM_EIO or CM_EINVAL. Thread-safe. */
static int store_line(gw_fair_sale_t *fs, const char *line, size_t n)
{
    if (n > GW_WR_LINE_MAX)
        return CM_EINVAL;
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    int rc = store_open(fs);
    if (rc == 0 && (rc = cm_journal_put(&st->j, line, n, NULL)) != 0)
        store_trouble(fs, "write");
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Whether the log awaits its rewrite: the store's reasons (rewrite), or the
 * journal's (cm_journal_dropped: a failed fdatasync since the last one may
 * have dropped lines a later one does not write), so no sync of it counts
 * until a compaction wrote the room's state again. st->mu held. */
static bool store_dropped(gw_room_store_t *st)
{
    return st->rewrite || (st->open && cm_journal_dropped(&st->j));
}

/* fdatasync of the log through its end now, unless one covered it already (the
 * journal's group commit); with tick, only GW_WR_SYNC_MS or more after the last.
 * No lock held across it. 0 or CM_EIO. Thread-safe (off the loops). */
static int store_durable(gw_fair_sale_t *fs, bool tick)
{
    gw_room_store_t *st = &fs->wr_store;
    int64_t now = (int64_t)cm_mono_ms();
    pthread_mutex_lock(&st->mu);
    off_t end = 0;
    if (st->open)
        cm_journal_lens(&st->j, &end, NULL, NULL);
    if (!st->open || cm_journal_durable(&st->j, end) ||
        (tick && now - st->synced_ms < GW_WR_SYNC_MS)) {
        int rc = !tick && store_dropped(st) ? CM_EIO : 0;
        pthread_mutex_unlock(&st->mu);
        return rc;
    }
    st->users++; /* a drop waits: the journal stays open */
    pthread_mutex_unlock(&st->mu);
    int rc = cm_journal_sync_to(&st->j, end);
    pthread_mutex_lock(&st->mu);
    if (rc == 0 && store_dropped(st))
        rc = CM_EIO; /* synced, but what an earlier failure dropped is not on disk */
    if (rc == 0)
        st->synced_ms = (int64_t)cm_mono_ms();
    else
        store_trouble(fs, "fdatasync");
    if (--st->users == 0)
        pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* store_durable for the token claims of the orders a group commit answers: counts
 * claim_syncs, and claim_sync_failures on a failure (logged, rate limited). */
static int local_sync(gw_fair_sale_t *fs)
{
    int rc = CM_PLANT(ROOM_CLAIM_UNSYNCED) ? 0 : store_durable(fs, false);
    atomic_fetch_add_explicit(rc == 0 ? &fs->wr_store.claim_syncs
                                      : &fs->wr_store.claim_sync_failures,
                              1, memory_order_relaxed);
    return rc;
}

void gw_fair__room_store_len(gw_fair_sale_t *fs, off_t *len, off_t *synced_len)
{
    gw_room_store_t *st = &fs->wr_store;
    off_t l = 0, synced = 0, delta = 0;
    pthread_mutex_lock(&st->mu);
    if (st->open)
        cm_journal_lens(&st->j, &l, &synced, &delta);
    pthread_mutex_unlock(&st->mu);
    *len = l - delta; /* the file's own */
    *synced_len = synced > delta ? synced - delta : 0;
}

static int local_drop(gw_fair_sale_t *fs)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    while (st->users) /* a sync or a compaction uses the journal until it returns */
        pthread_cond_wait(&st->cv, &st->mu);
    char path[700];
    store_path(fs, path, sizeof(path));
    if (st->open) /* no fdatasync of a file being removed */
        cm_journal_discard(&st->j);
    st->open = false;
    st->base_len = 0;
    const cm_journal_fs_t *jfs = cm_journal_fs();
    int rc = jfs->unlink(path) == 0 || errno == ENOENT ? 0 : CM_EIO;
    char tmp[710];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    (void)jfs->unlink(tmp); /* what a compaction cut by a crash left */
    if (rc == 0 && cm_journal_dir_sync(path) != 0) /* a sale made again under this id must not find this room */
        store_trouble(fs, "directory fsync");
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Calls apply with every line of the log (cm_journal_lines_open: a log in the line
 * format before the journal converted first, holes skipped, a torn tail cut off; the
 * first is the "K" line), removes a log without a readable key line. Returns the
 * lines applied. Single-threaded (open). */
static size_t store_read(gw_fair_sale_t *fs, void (*apply)(gw_fair_sale_t *, char *))
{
    char path[700];
    store_path(fs, path, sizeof(path));
    /* the conversion is atomic: a crash leaves the line log, converted at the next start */
    size_t converted = 0;
    int up = cm_journal_upgrade_lines(path, &converted);
    if (up > 0)
        cm_log_info("fair", "waiting-room log converted to the journal framing",
                    "sale=%s lines=%zu", fs->sale_id, converted);
    FILE *fp = up < 0 ? NULL : cm_journal_lines_open(path); /* a failed upgrade: left as it is */
    if (!fp)
        return 0;
    char *line = NULL;
    size_t cap = 0, lines = 0, bad = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, fp)) > 0) {
        size_t n = (size_t)got;
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        /* not one of ours (a line log's zero-filled block after a power cut, an
         * overlong line, kept whole by its conversion): skipped */
        bool unreadable = n >= GW_WR_LINE_MAX || strlen(line) != n;
        if (lines == 0 && (unreadable || line[0] != 'K')) {
            bad++;
            break; /* no keys: nothing after them can be read */
        }
        if (unreadable) {
            bad++;
            continue;
        }
        apply(fs, line);
        lines++;
    }
    free(line);
    fclose(fp);
    if (bad)
        cm_log_warn("fair", "waiting-room log has unreadable lines; skipped", "sale=%s lines=%zu",
                    fs->sale_id, bad);
    if (lines == 0) /* nothing usable (no key line): a new log with new keys */
        (void)cm_journal_fs()->unlink(path);
    return lines;
}

/*---- compaction ----*/

/* Whether the log is due a compaction (GW_WR_COMPACT_MIN_BYTES); if so and mark,
 * marks its end now as the one the room's state is about to be copied at: the
 * caller then holds wr_mu and the spent table's lock, so that no line changes that
 * state meanwhile. Lottery thread. */
static bool store_compact_due(gw_fair_sale_t *fs, bool mark)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    off_t len = 0, delta = 0;
    if (st->rewrite && !st->open)
        (void)store_open(fs); /* a failure: due again at the next tick */
    if (st->open)
        cm_journal_lens(&st->j, &len, NULL, &delta);
    /* a failed fdatasync's dropped lines: written again at once, before the kernel
     * evicts them (then only this process's memory holds them) */
    bool dropped = CM_PLANT(ROOM_REWRITE_WAITS) ? st->rewrite : store_dropped(st);
    bool due =
        st->open &&
        (dropped || (len - delta > GW_WR_COMPACT_MIN_BYTES && len - delta > 2 * st->base_len));
    if (due && mark) {
        st->cmark = len;
        st->cmark_file = len - delta;
        st->copens = st->opens;
    }
    pthread_mutex_unlock(&st->mu);
    return due;
}

/* Replaces the log by img (the room's state at store_compact_due, its "K" line
 * first) and the lines appended since (cm_journal_compact_from). 0 or CM_EIO
 * (logged; the log stays as it was, not compacted again before it doubled once
 * more). Lottery thread, no lock held. */
static int store_compact(gw_fair_sale_t *fs, const cm_journal_buf_t *img)
{
    gw_room_store_t *st = &fs->wr_store;
    pthread_mutex_lock(&st->mu);
    bool same = st->open && st->opens == st->copens; /* not dropped or reopened since the mark */
    if (same)
        st->users++;
    pthread_mutex_unlock(&st->mu);
    int rc = same ? cm_journal_compact_from(&st->j, img, st->cmark) : CM_EIO;
    pthread_mutex_lock(&st->mu);
    if (same && --st->users == 0)
        pthread_cond_broadcast(&st->cv);
    if (rc == 0) {
        st->base_len = (off_t)(CM_JOURNAL_MAGIC_LEN + img->len);
        st->rewrite = false; /* the journal's own: unless a sync failed since */
        atomic_fetch_add_explicit(&st->compactions, 1, memory_order_relaxed);
    } else if (st->opens == st->copens) {
        st->base_len = st->cmark_file; /* not again before the log doubled once more */
        store_trouble(fs, "compaction");
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/*---- spent admission tokens (one gateway's: a fleet's are Redis') ----*/

void gw_wr_spent_init(gw_wr_spent_t *s)
{
    pthread_mutex_init(&s->mu, NULL);
    s->slots = NULL;
}

void gw_wr_spent_deinit(gw_wr_spent_t *s)
{
    free(s->slots);
    s->slots = NULL;
    pthread_mutex_destroy(&s->mu);
}

void gw_wr_spent_clear(gw_wr_spent_t *s)
{
    pthread_mutex_lock(&s->mu);
    free(s->slots);
    s->slots = NULL;
    pthread_mutex_unlock(&s->mu);
}

int gw_wr_spent_claim(gw_wr_spent_t *s, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s)
{
    pthread_mutex_lock(&s->mu);
    int rc = gw_room_spent_claim(&s->slots, jti, exp_s, fp, now_s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void gw_wr_spent_settle(gw_wr_spent_t *s, uint64_t jti, bool accepted)
{
    pthread_mutex_lock(&s->mu);
    gw_room_spent_settle(s->slots, jti, accepted);
    pthread_mutex_unlock(&s->mu);
}

/*---- the room's store on one gateway: its core (gw_room_core.c) and this log ----*/

/* A record of the room's core as a line of the log: 0 or CM_EIO (logged by the
 * store). wr_mu held. */
static int rec_line(gw_fair_sale_t *fs, const gw_room_rec_t *rec)
{
    char line[32 + INV_USER_ID_MAX];
    int n = gw_room_rec_format(rec, line, sizeof(line));
    if (n < 0 || (size_t)n >= sizeof(line))
        return CM_EIO;
    return store_line(fs, line, (size_t)n);
}
/* Writes the core's records in order, the seal's again first where it
 * failed (gw_room_core_relog), and tells the core each result. Returns the
 * last record's result. wr_mu held. */
static int recs_write(gw_fair_sale_t *fs, const gw_room_out_t *out)
{
    int rc = 0;
    for (size_t i = 0; i < out->nrec; i++) {
        gw_room_rec_t s;
        if (gw_room_core_relog(&fs->wr_core, &out->rec[i], &s))
            gw_room_core_step(
                &fs->wr_core,
                &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = &s, .ok = rec_line(fs, &s) == 0},
                NULL, NULL);
        rc = rec_line(fs, &out->rec[i]);
        gw_room_core_step(
            &fs->wr_core,
            &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN, .rec = &out->rec[i], .ok = rc == 0}, NULL,
            NULL);
    }
    return rc;
}

/*
 * The seal's fdatasync, by the thread that sealed, without wr_mu: the joins and
 * the "S" line are durable before any rank or place is answered from the seal or
 * its seed published (meanwhile the other joins answer CM_EAGAIN: no worker loop
 * waits for this disk). A failed sync counts as a failed "S" line.
 */
static void seal_sync(gw_fair_sale_t *fs)
{
    int rc = store_durable(fs, false);
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    gw_room_core_step(&fs->wr_core, &(gw_room_ev_t){.kind = GW_ROOM_EV_SEAL_SYNCED, .ok = rc == 0},
                      NULL, NULL);
}

/* The start: the core seals the pre-queue, and its "S" line's fdatasync runs
 * with wr_mu released (seal_sync) while wr_seal_syncing holds back everything
 * that acts on the seal. A failed line is written again before the next place's
 * (a restart seals the same ranks from the same joins and seed). wr_mu held
 * (released across the fdatasync). */
static void prequeue_seal(gw_fair_sale_t *fs, int64_t now_ms)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale,
                 &(gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_SEAL}},
                 now_ms, &so);
    (void)recs_write(fs, &so.room.recs);
    fs->wr_seal_syncing = so.room.recs.sync && !fs->wr_core.seal_unlogged;
    if (fs->wr_core.seal_unlogged) { /* the joins unsynced under it: the rewrite syncs them */
        pthread_mutex_lock(&fs->wr_store.mu);
        fs->wr_store.rewrite = true;
        pthread_mutex_unlock(&fs->wr_store.mu);
    }
    if (fs->wr_core.npre)
        cm_log_info("fair", "waiting room pre-queue sealed", "sale=%s persons=%zu", fs->sale_id,
                    fs->wr_core.npre);
    if (fs->wr_seal_syncing) {
        pthread_mutex_unlock(&fs->wr_mu);
        seal_sync(fs);
    }
}

/* Whether the seal is not known durable: its record or its sync failed, or
 * the log awaits its rewrite (store_dropped): no rank or place is answered
 * from it until the lottery thread's rewrite (room_compact) made it durable.
 * wr_mu held. */
static bool seal_undurable(gw_fair_sale_t *fs)
{
    if (fs->wr_core.seal_unlogged)
        return true;
    pthread_mutex_lock(&fs->wr_store.mu);
    bool dropped = store_dropped(&fs->wr_store);
    pthread_mutex_unlock(&fs->wr_store.mu);
    return dropped;
}

/* The join stepped through the sale's machine (its start and the time
 * decide the pre-queue, the seal), unless another thread's seal is in its
 * fdatasync: nothing is answered from it yet. wr_mu held. */
static int join_step(gw_fair_sale_t *fs, const gw_room_join_ev_t *join, gw_sale_out_t *so)
{
    if (fs->wr_seal_syncing || (atomic_load(&fs->wr_core.sealed) && seal_undurable(fs)))
        return CM_EAGAIN;
    gw_sale_step(
        &fs->sale,
        &(gw_sale_ev_t){.kind = GW_SALE_EV_ROOM, .room = {.kind = GW_ROOM_EV_JOIN, .join = *join}},
        join->now_ms, so);
    return so->room.rc;
}

static int local_join(gw_fair_sale_t *fs, const gw_room_join_ev_t *join, gw_wr_join_t *out)
{
    gw_sale_out_t so;
    pthread_mutex_lock(&fs->wr_mu);
    int rc = join_step(fs, join, &so);
    if (rc == GW_ROOM_SEAL) {
        prequeue_seal(fs, join->now_ms); /* this join seals: it syncs, then goes on */
        /* another thread's seal in its fdatasync meanwhile, or a reset */
        rc = atomic_load(&fs->wr_core.sealed) ? join_step(fs, join, &so) : CM_EAGAIN;
    }
    if (rc == GW_ROOM_ANSWERED) {
        /* a failed line is logged by the store: the place is kept in memory only */
        (void)recs_write(fs, &so.room.recs);
    } else if (rc == GW_ROOM_PREQUEUE) {
        /* a new person's line before they are added: not written, not added */
        rc = recs_write(fs, &so.room.recs) == 0 ? 0 : CM_EIO;
    }
    if (rc == CM_EAGAIN)
        memset(out, 0, sizeof(*out));
    else
        *out = so.room.answer;
    pthread_mutex_unlock(&fs->wr_mu);
    return rc;
}
/* One line of the log (the core's REPLAY), in the order written. */
static void room_apply(gw_fair_sale_t *fs, char *line)
{
    pthread_mutex_lock(&fs->wr_spent.mu);
    gw_room_core_step(&fs->wr_core,
                      &(gw_room_ev_t){.kind = GW_ROOM_EV_REPLAY,
                                      .line = line,
                                      .spent = &fs->wr_spent.slots,
                                      .now_s = cm_wall_ms() / 1000},
                      NULL, NULL);
    pthread_mutex_unlock(&fs->wr_spent.mu);
    if (line[0] == 'K') /* the store writes a new log's seed from this */
        fs->wr_seed = fs->wr_core.seed;
}

static void room_compact(gw_fair_sale_t *fs);

void gw_fair__room_load(gw_fair_sale_t *fs)
{
    size_t lines = store_read(fs, room_apply);
    gw_room_core_step(&fs->wr_core, &(gw_room_ev_t){.kind = GW_ROOM_EV_LOADED}, NULL, NULL);
    /* a failed fdatasync of the process before (its error is not this one's to
     * see) may have dropped lines the page cache still shows: rewritten now */
    if (!lines)
        return;
    fs->wr_store.rewrite = true;
    room_compact(fs);
    cm_log_info("fair", "waiting room loaded",
                "sale=%s prequeue=%zu sealed=%d places=%llu admitted_through=%llu", fs->sale_id,
                fs->wr_core.npre, (int)atomic_load(&fs->wr_core.sealed),
                (unsigned long long)atomic_load(&fs->wr_core.next),
                (unsigned long long)(atomic_load(&fs->wr_core.front_milli) / 1000));
}

/* The sealed pre-queue's ranks start+1.. of at most limit persons (arr: json_t *). 0. */
static int local_persons(gw_fair_sale_t *fs, uint64_t cursor, uint64_t limit, void *arr,
                         uint64_t *total, bool *sealed, char hex[33], char *errbuf, size_t errlen)
{
    (void)errbuf, (void)errlen;
    pthread_mutex_lock(&fs->wr_mu);
    *sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
    *total = fs->wr_core.npre;
    for (uint64_t i = cursor; *sealed && i < *total && i - cursor < limit; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I}", "person",
                                             fs->wr_core.names + fs->wr_core.name_at[i], "rank",
                                             (json_int_t)(i + 1)));
    gw_fair__seed_hex(&fs->wr_seed, hex);
    pthread_mutex_unlock(&fs->wr_mu);
    return 0;
}

static int local_claim(gw_fair_sale_t *fs, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s,
                       uint64_t *nonce)
{
    (void)nonce; /* the spent table holds one claim per token */
    int rc = gw_wr_spent_claim(&fs->wr_spent, jti, exp_s, fp, now_s);
    /* on disk before the reserve: a restart reads the token spent (a claim a
     * crash cut before its answer included: never a second order) */
    if (rc == GW_WR_CLAIMED &&
        rec_line(fs, &(gw_room_rec_t){.kind = GW_ROOM_REC_T, .a = jti, .b = fp, .c = exp_s}) != 0) {
        gw_wr_spent_settle(&fs->wr_spent, jti, false);
        return CM_EIO;
    }
    return rc;
}

static void local_settle(gw_fair_sale_t *fs, uint64_t jti, uint64_t fp, uint64_t nonce,
                         bool accepted)
{
    (void)fp;
    (void)nonce;
    /* The give-back's line before the give-back: a later claim of the token
     * (possible only after it) is then after it in the log too. Not written:
     * the token stays spent until it expires, as on disk. Both under the spent
     * table's lock: a compaction copies the table and marks the log's length
     * under it, so it never finds the line written and the token still spent. */
    char line[24];
    int n = accepted ? 0 : snprintf(line, sizeof(line), "U %016llx", (unsigned long long)jti);
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (!accepted && store_line(fs, line, (size_t)n) != 0)
        accepted = true;
    gw_room_spent_settle(fs->wr_spent.slots, jti, accepted);
    pthread_mutex_unlock(&fs->wr_spent.mu);
}

/* One record as a line of a compaction's image, framed (a line is far below the
 * record limit; a J line too long for the log was never written to it). */
static void img_rec(cm_journal_buf_t *img, const gw_room_rec_t *rec)
{
    char l[32 + INV_USER_ID_MAX];
    int n = gw_room_rec_format(rec, l, sizeof(l));
    if (n > 0 && (size_t)n < sizeof(l))
        (void)cm_journal_buf_add(img, l, (size_t)n);
}

static void *copy_of(const void *p, size_t n)
{
    return n ? memcpy(cm_xmalloc(n), p, n) : NULL;
}

/*
 * Rewrites the log as the lines of its state (room_apply reads them back to
 * the same room) once store_compact_due says it is due. The places go in the
 * table's order: the slot a place sits in decides nothing, its position does,
 * and the replay keeps the highest as the next. A token claimed and in flight
 * goes as spent, as the whole log would read it. Copied under wr_mu and the
 * spent table's lock, framed without them. Lottery thread.
 */
static void room_compact(gw_fair_sale_t *fs)
{
    /* every tick: the room's locks only when it is due */
    if (!store_compact_due(fs, false))
        return;
    int64_t now_s = cm_wall_ms() / 1000;
    pthread_mutex_lock(&fs->wr_mu);
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (fs->wr_seal_syncing || !store_compact_due(fs, true)) {
        pthread_mutex_unlock(&fs->wr_spent.mu);
        pthread_mutex_unlock(&fs->wr_mu);
        return;
    }
    cm_hash_key_t key = fs->wr_core.key, seed = fs->wr_seed;
    bool sealed = atomic_load(&fs->wr_core.sealed);
    int64_t sealed_ms = fs->wr_core.sealed_ms, starts_ms = fs->wr_core.starts_ms;
    uint64_t front = atomic_load(&fs->wr_core.front_milli);
    size_t npre = fs->wr_core.npre, names_len = fs->wr_core.names_len, nplaces = 0, nspent = 0;
    char *names = copy_of(fs->wr_core.names, npre ? names_len : 0);
    uint32_t *name_at = copy_of(fs->wr_core.name_at, npre * sizeof(*name_at));
    int64_t *pre_exp = copy_of(fs->wr_core.pre_exp, sealed ? npre * sizeof(*pre_exp) : 0);
    gw_wr_place_t *places = NULL;
    if (fs->wr_core.places) {
        places = cm_xmalloc(GW_ROOM_PLACES * sizeof(*places));
        for (size_t i = 0; i < GW_ROOM_PLACES; i++)
            if (fs->wr_core.places[i].tag)
                places[nplaces++] = fs->wr_core.places[i];
    }
    gw_wr_spent_slot_t *spent = NULL;
    if (fs->wr_spent.slots) {
        spent = cm_xmalloc(GW_WR_SPENT_SLOTS * sizeof(*spent));
        for (size_t i = 0; i < GW_WR_SPENT_SLOTS; i++) {
            const gw_wr_spent_slot_t *e = &fs->wr_spent.slots[i];
            if (e->jti && e->exp_s >= now_s)
                spent[nspent++] = *e;
        }
    }
    pthread_mutex_unlock(&fs->wr_spent.mu);
    pthread_mutex_unlock(&fs->wr_mu);

    /* the frames, sized for them all at once (a line is at most 64 bytes
     * besides a person's name, and a frame adds its overhead) */
    size_t lines = 3 + npre * (sealed ? 2 : 1) + 2 * nplaces + nspent;
    cm_journal_buf_t img = {.cap = names_len + lines * (64 + CM_JOURNAL_FRAME_OVERHEAD)};
    img.p = cm_xmalloc(img.cap);
    char l[80];
    int kn = key_line(l, sizeof(l), key, seed);
    (void)cm_journal_buf_add(&img, l, (size_t)kn);
    for (size_t i = 0; i < npre; i++)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_J,
                                       .person = names + name_at[i],
                                       .len = strlen(names + name_at[i])});
    if (sealed)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_S,
                                       .a = (uint64_t)sealed_ms,
                                       .b = (uint64_t)starts_ms});
    for (size_t i = 0; i < nplaces; i++)
        img_rec(&img,
                &(gw_room_rec_t){.kind = GW_ROOM_REC_P, .a = places[i].tag, .b = places[i].pos});
    for (size_t i = 0; pre_exp && i < npre; i++)
        if (pre_exp[i])
            img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_A, .b = i + 1, .c = pre_exp[i]});
    for (size_t i = 0; i < nplaces; i++)
        if (places[i].exp_s)
            img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_A,
                                           .a = places[i].tag,
                                           .b = places[i].pos,
                                           .c = places[i].exp_s});
    if (front)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_F, .a = front});
    for (size_t i = 0; i < nspent; i++)
        img_rec(&img, &(gw_room_rec_t){.kind = GW_ROOM_REC_T,
                                       .a = spent[i].jti,
                                       .b = spent[i].fp,
                                       .c = spent[i].exp_s});
    free(names);
    free(name_at);
    free(pre_exp);
    free(places);
    free(spent);
    if (store_compact(fs, &img) == 0) {
        cm_log_info("fair", "waiting-room log compacted", "sale=%s bytes=%zu places=%zu tokens=%zu",
                    fs->sale_id, img.len, nplaces, nspent);
        /* its "S" is in the new file, synced (and its name once this sync is) */
        if (sealed && store_durable(fs, false) == 0) {
            pthread_mutex_lock(&fs->wr_mu);
            gw_room_core_step(&fs->wr_core,
                              &(gw_room_ev_t){.kind = GW_ROOM_EV_WRITTEN,
                                              .rec = &(gw_room_rec_t){.kind = GW_ROOM_REC_S},
                                              .ok = true},
                              NULL, NULL);
            pthread_mutex_unlock(&fs->wr_mu);
        }
    }
    cm_journal_buf_free(&img);
}

/* Syncs and compacts the log, seals the pre-queue at the sale's start, and moves
 * the admission front at eff_per_s. Lottery thread. */
static void local_tick(gw_fair_sale_t *fs, int64_t now, int64_t dt, bool started,
                       int64_t starts_at_ms, double eff_per_s, uint32_t members)
{
    (void)members; /* the room is this gateway's alone */
    (void)starts_at_ms; /* the machine's (fs->sale.cfg) decides the seal */
    atomic_store(&fs->wr_eff_milli, (uint64_t)(eff_per_s * 1000));
    (void)store_durable(fs, true); /* the pre-queue's joins too */
    room_compact(fs);
    if (!started || dt <= 0)
        return; /* admissions start with the sale */
    gw_room_out_t recs;
    pthread_mutex_lock(&fs->wr_mu);
    if (!atomic_load(&fs->wr_core.sealed))
        prequeue_seal(fs, now);
    gw_room_core_step(&fs->wr_core,
                      &(gw_room_ev_t){.kind = GW_ROOM_EV_TICK, .eff_per_s = eff_per_s, .dt_ms = dt},
                      NULL, &recs);
    (void)recs_write(fs, &recs);
    pthread_mutex_unlock(&fs->wr_mu);
}

/* The log's lengths and syncs in the room's audit record (o: json_t *). */
static void local_audit(gw_fair_sale_t *fs, void *o)
{
    gw_room_store_t *st = &fs->wr_store;
    off_t len, synced;
    gw_fair__room_store_len(fs, &len, &synced);
    json_object_update_new(o, json_pack("{s:I,s:I,s:I,s:I,s:I}", "log_bytes", (json_int_t)len,
                                        "log_synced_bytes", (json_int_t)synced, "log_compactions",
                                        (json_int_t)atomic_load(&st->compactions), "claim_syncs",
                                        (json_int_t)atomic_load(&st->claim_syncs),
                                        "claim_sync_failures",
                                        (json_int_t)atomic_load(&st->claim_sync_failures)));
}

const gw_room_ops_t gw_fair__room_local_ops = {
    .join = local_join,
    .tick = local_tick,
    .persons = local_persons,
    .claim = local_claim,
    .sync = local_sync,
    .settle = local_settle,
    .audit = local_audit,
    .drop = local_drop,
};
