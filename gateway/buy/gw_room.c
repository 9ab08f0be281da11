/*
 * Fair start: the waiting room (see gw_fair.h for the rules).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_room_core.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/overload/gw_ol.h"
#include "inventory/inv_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*---- the waiting room ----*/

gw_fair_sale_t *gw_fair_room(gw_fair_t *f, const char *sale_id)
{
    if (!f || !atomic_load_explicit(&f->n, memory_order_acquire))
        return NULL;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    return fs && atomic_load_explicit(&fs->wr_rate, memory_order_relaxed) > 0 ? fs : NULL;
}

int64_t gw_fair_room_rate(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    return fs ? atomic_load(&fs->wr_rate) : 0;
}

void gw_fair_room_view(gw_fair_sale_t *fs, gw_fair_room_view_t *out)
{
    out->admitted_through =
        atomic_load_explicit(&fs->wr_core.front_milli, memory_order_relaxed) / 1000;
    out->queued = atomic_load_explicit(&fs->wr_core.next, memory_order_relaxed);
    out->rate_per_s = (double)atomic_load_explicit(&fs->wr_eff_milli, memory_order_relaxed) / 1000;
    pthread_mutex_lock(&fs->wr_mu);
    out->prequeued = fs->wr_core.npre;
    out->sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
    pthread_mutex_unlock(&fs->wr_mu);
}

/* A record of the room's core as a line of the log (gw_room_store.c): 0 or
 * CM_EIO (logged by the store). wr_mu held. */
static int rec_line(gw_fair_sale_t *fs, const gw_room_rec_t *rec)
{
    char line[32 + INV_USER_ID_MAX];
    int n = gw_room_rec_format(rec, line, sizeof(line));
    if (n < 0 || (size_t)n >= sizeof(line))
        return CM_EIO;
    return gw_fair__room_store_line(fs, false, "%s", line);
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
            gw_room_core_written(&fs->wr_core, &s, rec_line(fs, &s) == 0);
        rc = rec_line(fs, &out->rec[i]);
        gw_room_core_written(&fs->wr_core, &out->rec[i], rc == 0);
    }
    return rc;
}

/* The start: the core seals the pre-queue; its "S" line, whose fdatasync
 * the caller runs after releasing wr_mu (seal_sync) while wr_seal_syncing
 * holds back everything that acts on the seal. A failed line is logged by
 * the store: a restart then seals again with the same joins and seed, so the
 * same ranks; it is written again before the next place's line. An empty
 * pre-queue's line needs no sync of its own, so a room without a pre-queue
 * never answers 503 for its seal. wr_mu held. */
static void prequeue_seal(gw_fair_sale_t *fs, int64_t now_ms, int64_t starts_at_ms)
{
    gw_room_out_t out;
    gw_room_core_seal(&fs->wr_core, now_ms, starts_at_ms, &out);
    (void)recs_write(fs, &out);
    fs->wr_seal_syncing = out.sync && !fs->wr_core.seal_unlogged;
    if (fs->wr_core.npre)
        cm_log_info("fair", "waiting room pre-queue sealed", "sale=%s persons=%zu", fs->sale_id,
                    fs->wr_core.npre);
}

/*
 * The seal's fdatasync, by the thread that sealed, without wr_mu: the joins
 * before the seal and its "S" line are durable before any rank or place is
 * answered from it or its seed published (until then wr_seal_syncing makes
 * the other joins answer CM_EAGAIN instead of waiting: no worker loop waits
 * for this disk), and the worker loops' other work on the room goes on. A
 * failed sync is treated as a failed "S" line (gw_room_core_seal_synced).
 * wr_mu not held.
 */
static void seal_sync(gw_fair_sale_t *fs)
{
    int rc = gw_fair__room_store_durable(fs);
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    gw_room_core_seal_synced(&fs->wr_core, rc == 0);
    pthread_mutex_unlock(&fs->wr_mu);
}

int gw_fair_room_join(gw_fair_sale_t *fs, const char *person, size_t len, bool take, int64_t now_ms,
                      int64_t starts_at_ms, uint64_t admitted_through, gw_wr_join_t *out)
{
    if (fs->f && fs->f->fleet)
        return gw_fair__room_fleet_join(fs, person, len, take, now_ms, starts_at_ms, out);
    gw_room_join_ev_t ev = {.person = person,
                            .len = len,
                            .take = take,
                            .now_ms = now_ms,
                            .starts_at_ms = starts_at_ms,
                            .admitted_through = admitted_through};
    gw_room_out_t recs;
    pthread_mutex_lock(&fs->wr_mu);
    /* another thread's seal, in its fdatasync: nothing is answered from it yet */
    int rc = fs->wr_seal_syncing ? CM_EAGAIN : gw_room_core_join(&fs->wr_core, &ev, out, &recs);
    if (rc == GW_ROOM_SEAL) {
        prequeue_seal(fs, now_ms, starts_at_ms);
        if (fs->wr_seal_syncing) { /* this join sealed: it syncs, then goes on */
            pthread_mutex_unlock(&fs->wr_mu);
            seal_sync(fs);
            pthread_mutex_lock(&fs->wr_mu);
        }
        /* another thread's seal in its fdatasync meanwhile, or a reset */
        rc = fs->wr_seal_syncing || !atomic_load(&fs->wr_core.sealed)
                 ? CM_EAGAIN
                 : gw_room_core_join(&fs->wr_core, &ev, out, &recs);
    }
    if (rc == GW_ROOM_ANSWERED) {
        /* a failed line is logged by the store: the place is kept in memory only */
        (void)recs_write(fs, &recs);
    } else if (rc == GW_ROOM_PREQUEUE) {
        /* a new person's line before they are added: not written, not added */
        rc = recs_write(fs, &recs) == 0 ? 0 : CM_EIO;
    } else if (rc == CM_EAGAIN) {
        memset(out, 0, sizeof(*out));
    }
    pthread_mutex_unlock(&fs->wr_mu);
    return rc;
}

void *gw_fair__room_json(gw_fair_sale_t *fs)
{
    json_t *o = json_object();
    pthread_mutex_lock(&fs->wr_mu);
    bool sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
    json_object_set_new(o, "waiting_room_rate", json_integer(atomic_load(&fs->wr_rate)));
    json_object_set_new(o, "prequeue_size", json_integer((json_int_t)fs->wr_core.npre));
    json_object_set_new(o, "sealed", json_boolean(sealed));
    json_object_set_new(o, "hash", json_string("siphash-2-4"));
    if (sealed) {
        char hex[33];
        gw_fair__seed_hex(&fs->wr_seed, hex);
        json_object_set_new(o, "seed", json_string(hex));
        char t[40];
        cm_time_format_rfc3339(fs->wr_core.sealed_ms, t, sizeof(t));
        json_object_set_new(o, "sealed_at", json_string(t));
        if (fs->wr_core.starts_ms) {
            cm_time_format_rfc3339(fs->wr_core.starts_ms, t, sizeof(t));
            json_object_set_new(o, "starts_at", json_string(t));
        }
    }
    pthread_mutex_unlock(&fs->wr_mu);
    json_object_set_new(o, "admitted_through",
                        json_integer((json_int_t)(atomic_load(&fs->wr_core.front_milli) / 1000)));
    json_object_set_new(o, "queued", json_integer((json_int_t)atomic_load(&fs->wr_core.next)));
    if (!fs->f || !fs->f->fleet) { /* one gateway's log (a fleet's room is Redis') */
        off_t len, synced;
        gw_fair__room_store_len(fs, &len, &synced);
        json_object_set_new(o, "log_bytes", json_integer((json_int_t)len));
        json_object_set_new(o, "log_synced_bytes", json_integer((json_int_t)synced));
        json_object_set_new(o, "log_compactions",
                            json_integer((json_int_t)atomic_load(&fs->wr_store.compactions)));
        json_object_set_new(o, "claim_syncs",
                            json_integer((json_int_t)atomic_load(&fs->wr_store.claim_syncs)));
        json_object_set_new(
            o, "claim_sync_failures",
            json_integer((json_int_t)atomic_load(&fs->wr_store.claim_sync_failures)));
    }
    return o;
}

static void person_rank_add(json_t *arr, const char *person, uint64_t rank)
{
    json_array_append_new(arr, json_pack("{s:s,s:I}", "person", person, "rank", (json_int_t)rank));
}

void *gw_fair_room_persons_json(gw_fair_t *f, const char *sale_id, uint64_t cursor,
                                uint64_t limit, int *rc, char *errbuf, size_t errlen)
{
    gw_fair_sale_t *fs = gw_fair_room(f, sale_id);
    if (!fs) {
        *rc = CM_ENOTFOUND;
        cm_errbuf_set(errbuf, errlen, "sale %s has no waiting room", sale_id);
        return NULL;
    }
    json_t *arr = json_array();
    uint64_t total = 0;
    bool sealed = false;
    char hex[33] = "";
    if (f->fleet) {
        *rc = gw_fair__room_fleet_persons(f, sale_id, cursor, limit, arr, &total, &sealed, hex,
                                          errbuf, errlen);
        if (*rc) {
            json_decref(arr);
            return NULL;
        }
    } else {
        pthread_mutex_lock(&fs->wr_mu);
        sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
        total = fs->wr_core.npre;
        for (uint64_t i = cursor; sealed && i < total && i - cursor < limit; i++)
            person_rank_add(arr, fs->wr_core.names + fs->wr_core.name_at[i], i + 1);
        gw_fair__seed_hex(&fs->wr_seed, hex);
        pthread_mutex_unlock(&fs->wr_mu);
    }
    if (!sealed) {
        json_decref(arr);
        *rc = CM_ECONFLICT;
        cm_errbuf_set(errbuf, errlen,
                      "the pre-queue of sale %s is ranked at the start: %llu persons so far",
                      sale_id, (unsigned long long)total);
        return NULL;
    }
    *rc = 0;
    uint64_t end = cursor + json_array_size(arr);
    json_t *o = json_pack("{s:s,s:I,s:s,s:s,s:o}", "sale_id", sale_id, "count", (json_int_t)total,
                          "seed", hex, "hash", "siphash-2-4", "persons", arr);
    if (end < total) {
        char nc[24];
        snprintf(nc, sizeof(nc), "%llu", (unsigned long long)end);
        json_object_set_new(o, "next_cursor", json_string(nc));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    return o;
}

void gw_fair__room_reset(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    gw_fair__room_keys(fs);
    /* a new log with the new keys from the next line on */
    if (gw_fair__room_store_drop(fs) != 0)
        cm_log_error("fair", "cannot remove the waiting-room log of a deleted sale",
                     "sale=%s err=%s", fs->sale_id, strerror(errno));
    atomic_store(&fs->wr_eff_milli, 0);
    fs->wr_last_ms = 0;
    fs->wr_fleet_ms = 0;
    pthread_mutex_unlock(&fs->wr_mu);
    gw_wr_spent_clear(&fs->wr_spent);
}

void gw_fair__room_keys(gw_fair_sale_t *fs)
{
    /* never fails on Linux; a fixed key still works (the seed is then not secret) */
    if (cm_hash_seed_random(&fs->wr_key) != 0)
        fs->wr_key = (cm_hash_key_t){0x9e3779b97f4a7c15ull, (uint64_t)(uintptr_t)fs};
    if (cm_hash_seed_random(&fs->wr_seed) != 0)
        fs->wr_seed = (cm_hash_key_t){0xbf58476d1ce4e5b9ull, (uint64_t)(uintptr_t)fs};
    /* the room's state goes with the old keys */
    gw_room_core_reset(&fs->wr_core, &fs->wr_key, &fs->wr_seed);
}

/*---- one gateway's room across a restart (the log: gw_room_store.c) ----*/

/* One line of the log (gw_room_core_replay), in the order written. */
static void room_apply(gw_fair_sale_t *fs, char *line)
{
    pthread_mutex_lock(&fs->wr_spent.mu);
    gw_room_core_replay(&fs->wr_core, &fs->wr_spent.slots, line, cm_wall_ms() / 1000);
    pthread_mutex_unlock(&fs->wr_spent.mu);
    if (line[0] == 'K') { /* the store writes the keys of a new log from these */
        fs->wr_key = fs->wr_core.key;
        fs->wr_seed = fs->wr_core.seed;
    }
}

void gw_fair__room_load(gw_fair_sale_t *fs)
{
    size_t lines = gw_fair__room_store_read(fs, room_apply);
    gw_room_core_loaded(&fs->wr_core);
    if (lines)
        cm_log_info("fair", "waiting room loaded",
                    "sale=%s prequeue=%zu sealed=%d places=%llu admitted_through=%llu", fs->sale_id,
                    fs->wr_core.npre, (int)atomic_load(&fs->wr_core.sealed),
                    (unsigned long long)atomic_load(&fs->wr_core.next),
                    (unsigned long long)(atomic_load(&fs->wr_core.front_milli) / 1000));
}

/*---- spent admission tokens ----*/

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

/* Keeps a fleet claim to give back later; false if the list is full. */
static bool unclaim_later(gw_fair_t *f, const char *sale_id, uint64_t jti, uint64_t fp,
                          uint64_t nonce, int64_t exp_s)
{
    pthread_mutex_lock(&f->unclaim_mu);
    bool ok = f->nunclaim < FAIR_UNCLAIM_MAX;
    if (ok) {
        gw_fair_unclaim_t *u = &f->unclaim[f->nunclaim++];
        snprintf(u->sale, sizeof(u->sale), "%s", sale_id);
        u->jti = jti;
        u->fp = fp;
        u->nonce = nonce;
        u->exp_s = exp_s;
    }
    pthread_mutex_unlock(&f->unclaim_mu);
    return ok;
}

/* The give-back's void mark lives as long as the token, a second past its last valid second. */
static int64_t unclaim_ttl_ms(int64_t exp_s, int64_t now_s)
{
    return (exp_s - now_s + 1) * 1000;
}

void gw_fair__room_unclaims_tick(gw_fair_t *f, int64_t now_ms)
{
    if (now_ms < f->unclaim_next_ms)
        return;
    int64_t now_s = now_ms / 1000;
    for (;;) {
        gw_fair_unclaim_t u;
        pthread_mutex_lock(&f->unclaim_mu);
        bool any = f->nunclaim > 0;
        if (any)
            u = f->unclaim[--f->nunclaim];
        pthread_mutex_unlock(&f->unclaim_mu);
        if (!any)
            return;
        if (u.exp_s < now_s)
            continue; /* the token expired: its claim, if it ran, expires within a second */
        char why[256] = "";
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
        int rc = c ? gw_fair_redis_room_unclaim(c, u.sale, u.jti, u.fp, u.nonce,
                                                unclaim_ttl_ms(u.exp_s, now_s), why, sizeof(why))
                   : CM_EBACKEND;
        gw_fair__pool_put(&f->pool, c);
        if (rc >= 0)
            continue;
        gw_fair__room_fleet_trouble("give an admission token back (retried)", u.sale, why);
        /* workers may have filled the list meanwhile: then the token stays
         * spent until it expires, as when the list was full at the claim */
        (void)unclaim_later(f, u.sale, u.jti, u.fp, u.nonce, u.exp_s);
        f->unclaim_next_ms = now_ms + FAIR_UNCLAIM_RETRY_MS;
        return;
    }
}

int gw_fair_admission_claim(gw_fair_t *f, const char *sale_id, uint64_t jti, int64_t exp_s,
                            uint64_t fp, int64_t now_s, uint64_t *nonce)
{
    *nonce = 0;
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (fs && f->fleet) {
        char why[256] = "";
        uint64_t n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
        if (n == 0) /* 0 says "holds nothing" to the caller */
            n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
        /* kept as long as the token lives, a second past its last valid second */
        int rc = c ? gw_fair_redis_room_claim(c, sale_id, jti, fp, n, unclaim_ttl_ms(exp_s, now_s),
                                              why, sizeof(why))
                   : CM_EBACKEND;
        gw_fair__pool_put(&f->loop_pool, c);
        /*
         * Sent, no answer (a timeout, a lost connection): Redis may run the
         * claim still, and the token would read spent with no order. Given
         * back by the lottery thread (not on this worker's loop), which
         * voids it if it has not run yet. With an Idempotency-Key too: a
         * retry of the key that goes on past this claim (GW_WR_REPLAY)
         * holds the token with its own nonce, so this give-back leaves it
         * held under that retry's order.
         */
        if (rc < 0 && c && !unclaim_later(f, sale_id, jti, fp, n, exp_s))
            gw_fair__room_fleet_trouble("give an admission token back", sale_id,
                                        "too many give-backs pending");
        if (rc == 0 || rc == 2) /* claimed, or held with the key's first buy: settled alike */
            *nonce = n;
        return rc == 0 ? GW_WR_CLAIMED : rc == 1 ? GW_WR_SPENT : rc == 2 ? GW_WR_REPLAY : rc;
    }
    if (!fs)
        return GW_WR_CLAIMED;
    int rc = gw_wr_spent_claim(&fs->wr_spent, jti, exp_s, fp, now_s);
    /* on disk before the reserve: a restart reads the token spent (a claim a
     * crash cut before its answer included: never a second order) */
    if (rc == GW_WR_CLAIMED &&
        gw_fair__room_store_line(fs, false, "T %016llx %lld %016llx", (unsigned long long)jti,
                                 (long long)exp_s, (unsigned long long)fp) != 0) {
        gw_wr_spent_settle(&fs->wr_spent, jti, false);
        return CM_EIO;
    }
    return rc;
}

int gw_fair_admission_sync(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (!fs || f->fleet) /* a fleet's claims are Redis' */
        return 0;
    return gw_fair__room_store_flush(fs);
}

void gw_fair_admission_settle(gw_fair_t *f, const char *sale_id, uint64_t jti, uint64_t fp,
                              uint64_t nonce, bool accepted)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (fs && f->fleet) {
        if (accepted)
            return; /* the claim stays until the token expires */
        char why[256] = "";
        int64_t now_s = cm_wall_ms() / 1000, exp_s = now_s + GW_WR_TOKEN_TTL_S;
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
        /* this claim's value only: another buy's claim of the token stays */
        int rc = c ? gw_fair_redis_room_unclaim(c, sale_id, jti, fp, nonce,
                                                unclaim_ttl_ms(exp_s, now_s), why, sizeof(why))
                   : CM_EBACKEND;
        gw_fair__pool_put(&f->loop_pool, c);
        /* Not given back: retried by the lottery thread (a retry with the key
         * that rests on the token holds it with a nonce of its own) */
        if (rc < 0 && !unclaim_later(f, sale_id, jti, fp, nonce, exp_s))
            gw_fair__room_fleet_trouble("give an admission token back", sale_id, why);
        return;
    }
    if (!fs)
        return;
    /* The give-back's line before the give-back: a later claim of the token
     * (possible only after it) is then after it in the log too. Not written:
     * the token stays spent until it expires, as on disk. Both under the spent
     * table's lock: a compaction copies the table and marks the log's length
     * under it, so it never finds the line written and the token still spent. */
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (!accepted &&
        gw_fair__room_store_line(fs, false, "U %016llx", (unsigned long long)jti) != 0)
        accepted = true;
    gw_room_spent_settle(fs->wr_spent.slots, jti, accepted);
    pthread_mutex_unlock(&fs->wr_spent.mu);
}

/*---- compaction of one gateway's room log ----*/

static int place_pos_cmp(const void *a, const void *b)
{
    uint64_t x = ((const gw_wr_place_t *)a)->pos, y = ((const gw_wr_place_t *)b)->pos;
    return (x > y) - (x < y);
}

/*
 * Rewrites one gateway's room log as the lines of its state (room_apply reads
 * them back to the same room) once gw_fair__room_store_compact_due says it is
 * due: "K"; a "J" per pre-queue person; "S" if sealed; a "P" per place the
 * table holds, by position (a bucket takes them back into as many slots: the
 * slot a place sits in decides nothing, its position does); an "A" per
 * admitted rank or place; "F"; a "T" per token spent or claimed and not
 * expired (a claim in flight reads spent after a restart, as it would from
 * the whole log). The state is copied under wr_mu and the spent table's lock,
 * with the log's length it stands for, and written out without them.
 * Lottery thread.
 */
static void room_compact(gw_fair_sale_t *fs)
{
    /* every tick: the room's locks only when it is due */
    if (!gw_fair__room_store_compact_due(fs, false))
        return;
    int64_t now_s = cm_wall_ms() / 1000;
    pthread_mutex_lock(&fs->wr_mu);
    pthread_mutex_lock(&fs->wr_spent.mu);
    if (fs->wr_seal_syncing || !gw_fair__room_store_compact_due(fs, true)) {
        pthread_mutex_unlock(&fs->wr_spent.mu);
        pthread_mutex_unlock(&fs->wr_mu);
        return;
    }
    cm_hash_key_t key = fs->wr_key, seed = fs->wr_seed;
    bool sealed = atomic_load(&fs->wr_core.sealed);
    int64_t sealed_ms = fs->wr_core.sealed_ms, starts_ms = fs->wr_core.starts_ms;
    uint64_t front = atomic_load(&fs->wr_core.front_milli);
    size_t npre = fs->wr_core.npre, nplaces = 0, nspent = 0;
    char *names = npre ? cm_xmalloc(fs->wr_core.names_len) : NULL;
    uint32_t *name_at = npre ? cm_xmalloc(npre * sizeof(*name_at)) : NULL;
    int64_t *pre_exp = sealed && npre ? cm_xmalloc(npre * sizeof(*pre_exp)) : NULL;
    if (npre) {
        memcpy(names, fs->wr_core.names, fs->wr_core.names_len);
        memcpy(name_at, fs->wr_core.name_at, npre * sizeof(*name_at));
    }
    if (pre_exp)
        memcpy(pre_exp, fs->wr_core.pre_exp, npre * sizeof(*pre_exp));
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

    if (nplaces > 1)
        qsort(places, nplaces, sizeof(*places), place_pos_cmp);
    char *img = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&img, &n);
    if (m) {
        fprintf(m, "K %016llx %016llx %016llx %016llx\n", (unsigned long long)key.k0,
                (unsigned long long)key.k1, (unsigned long long)seed.k0,
                (unsigned long long)seed.k1);
        for (size_t i = 0; i < npre; i++)
            fprintf(m, "J %s\n", names + name_at[i]);
        if (sealed)
            fprintf(m, "S %lld %lld\n", (long long)sealed_ms, (long long)starts_ms);
        for (size_t i = 0; i < nplaces; i++)
            fprintf(m, "P %016llx %llu\n", (unsigned long long)places[i].tag,
                    (unsigned long long)places[i].pos);
        for (size_t i = 0; pre_exp && i < npre; i++)
            if (pre_exp[i])
                fprintf(m, "A %016llx %llu %lld\n", 0ull, (unsigned long long)(i + 1),
                        (long long)pre_exp[i]);
        for (size_t i = 0; i < nplaces; i++)
            if (places[i].exp_s)
                fprintf(m, "A %016llx %llu %lld\n", (unsigned long long)places[i].tag,
                        (unsigned long long)places[i].pos, (long long)places[i].exp_s);
        if (front)
            fprintf(m, "F %llu\n", (unsigned long long)front);
        for (size_t i = 0; i < nspent; i++)
            fprintf(m, "T %016llx %lld %016llx\n", (unsigned long long)spent[i].jti,
                    (long long)spent[i].exp_s, (unsigned long long)spent[i].fp);
    }
    bool ok = m && fclose(m) == 0;
    free(names);
    free(name_at);
    free(pre_exp);
    free(places);
    free(spent);
    if (!ok) /* the log stays as it is; a later tick tries again */
        cm_log_error("fair", "cannot compact the waiting-room log", "sale=%s err=%s",
                     fs->sale_id, strerror(errno));
    else if (gw_fair__room_store_compact(fs, img, n) == 0)
        cm_log_info("fair", "waiting-room log compacted",
                    "sale=%s bytes=%zu places=%zu tokens=%zu", fs->sale_id, n, nplaces, nspent);
    free(img);
}

/*
 * Advances the admission front of every waiting room: the configured rate,
 * scaled by the overload controller (level 1 halves it, 2 quarters it, 3
 * stops admissions; times the share of users it admits), capped by what the
 * Redis limit lets through (limit / RTT), divided among the fleet's gateways.
 * The front never runs more than a second of admissions ahead of the queue,
 * so an idle room does not bank a burst. Lottery thread.
 */
void gw_fair__rooms_tick(gw_fair_t *f, int64_t now)
{
    size_t n = atomic_load_explicit(&f->n, memory_order_acquire);
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = atomic_load(&f->sales[i]->wr_rate) > 0;
    if (!any)
        return;
    gw_ol_snapshot_t *snap = cm_xcalloc(1, sizeof(*snap));
    gw_overload_snapshot(f->srv, snap);
    double factor = snap->level <= 0 ? 1.0 : snap->level == 1 ? 0.5 : snap->level == 2 ? 0.25 : 0;
    if (snap->buy_admit_pct < 100)
        factor *= snap->buy_admit_pct / 100.0;
    double cap = -1;
    for (unsigned d = 0; d < snap->ndeps; d++)
        if (snap->deps[d].active && strcmp(snap->deps[d].name, "redis") == 0 &&
            snap->deps[d].rtt_us > 0)
            cap = snap->deps[d].limit * 1e6 / (double)snap->deps[d].rtt_us;
    free(snap);
    uint32_t members = gw_fleet_members(f->srv);
    for (size_t i = 0; i < n; i++) {
        gw_fair_sale_t *fs = f->sales[i];
        int64_t rate = atomic_load(&fs->wr_rate);
        int64_t dt = fs->wr_last_ms ? now - fs->wr_last_ms : 0;
        fs->wr_last_ms = now;
        if (rate <= 0)
            continue;
        inv_sale_t *s = inv_sale_find(f->srv->stores.inv, fs->sale_id);
        inv_sale_info_t info = {0};
        if (s)
            inv_sale_snapshot(s, &info);
        double eff = (double)rate * factor / members;
        if (cap >= 0 && eff > cap)
            eff = cap;
        atomic_store(&fs->wr_eff_milli, (uint64_t)(eff * 1000));
        if (f->fleet) { /* the room is Redis': this gateway adds its share */
            /* the shared front moves at the fleet's rate: the queue page's eta divides by it */
            atomic_store(&fs->wr_eff_milli, (uint64_t)(eff * members * 1000));
            bool started = s && !(info.starts_at_ms && now < info.starts_at_ms);
            gw_fair__room_fleet_tick(f, fs, now, started, eff, eff * members, info.starts_at_ms);
            continue;
        }
        gw_fair__room_store_sync(fs); /* the pre-queue's joins too */
        room_compact(fs);
        if (!s || (info.starts_at_ms && now < info.starts_at_ms) || dt <= 0)
            continue; /* admissions start with the sale */
        if (!atomic_load(&fs->wr_core.sealed)) {
            pthread_mutex_lock(&fs->wr_mu);
            bool sealer = !atomic_load(&fs->wr_core.sealed);
            if (sealer)
                prequeue_seal(fs, now, info.starts_at_ms);
            sealer = sealer && fs->wr_seal_syncing;
            pthread_mutex_unlock(&fs->wr_mu);
            if (sealer)
                seal_sync(fs);
        }
        gw_room_out_t recs;
        pthread_mutex_lock(&fs->wr_mu);
        gw_room_core_tick(&fs->wr_core, eff, dt, &recs);
        (void)recs_write(fs, &recs);
        pthread_mutex_unlock(&fs->wr_mu);
    }
}
