/*
 * Fair start: the waiting room (see gw_fair.h for the rules).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

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
    out->admitted_through = atomic_load_explicit(&fs->wr_front_milli, memory_order_relaxed) / 1000;
    out->queued = atomic_load_explicit(&fs->wr_next, memory_order_relaxed);
    out->rate_per_s = (double)atomic_load_explicit(&fs->wr_eff_milli, memory_order_relaxed) / 1000;
    pthread_mutex_lock(&fs->wr_mu);
    out->prequeued = fs->wr_npre;
    out->sealed = atomic_load(&fs->wr_sealed) && !fs->wr_seal_syncing;
    pthread_mutex_unlock(&fs->wr_mu);
}

/* The slot of tag in a bucket (gw_wr_place_find), or NULL without take. */
static gw_wr_place_t *place_slot(gw_wr_place_t *bucket, uint64_t tag, bool take,
                                 _Atomic uint64_t *next)
{
    gw_wr_place_t *oldest = bucket;
    for (size_t i = 0; i < GW_WR_WAYS; i++) {
        if (bucket[i].tag == tag)
            return bucket + i;
        if (bucket[i].pos < oldest->pos)
            oldest = bucket + i; /* an empty slot has position 0: taken first */
    }
    if (!take)
        return NULL;
    oldest->tag = tag;
    oldest->pos = atomic_fetch_add_explicit(next, 1, memory_order_relaxed) + 1;
    oldest->exp_s = 0;
    return oldest;
}

uint64_t gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take, _Atomic uint64_t *next)
{
    gw_wr_place_t *p = place_slot(bucket, tag, take, next);
    return p ? p->pos : 0;
}

/*---- the pre-queue ----*/

uint64_t gw_wr_prequeue_key(const cm_hash_key_t *seed, const char *person, size_t len)
{
    uint64_t k = cm_hash_sip24(seed, person, len);
    return k ? k : 1;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void gw_wr_prequeue_sort(uint64_t *keys, size_t n)
{
    if (n > 1)
        qsort(keys, n, sizeof(*keys), u64_cmp);
}

uint64_t gw_wr_prequeue_rank(const uint64_t *sorted, size_t n, uint64_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && sorted[lo] == key ? lo + 1 : 0;
}

/* Keeps a new pre-queue person's name for the export (the wr_npre-th). wr_mu held. */
static void name_add(gw_fair_sale_t *fs, const char *person, size_t len)
{
    if (fs->wr_names_len + len + 1 > fs->wr_names_cap) {
        size_t cap = fs->wr_names_cap ? fs->wr_names_cap * 2 : 4096;
        while (cap < fs->wr_names_len + len + 1)
            cap *= 2;
        fs->wr_names = cm_xrealloc(fs->wr_names, cap);
        fs->wr_names_cap = cap;
    }
    /* wr_npre persons so far: the array grows in powers of two from 1024 */
    size_t n = fs->wr_npre;
    if (n == 0 || (n >= 1024 && (n & (n - 1)) == 0))
        fs->wr_name_at = cm_xrealloc(fs->wr_name_at, (n < 1024 ? 1024 : n * 2) * sizeof(uint32_t));
    fs->wr_name_at[n] = (uint32_t)fs->wr_names_len;
    memcpy(fs->wr_names + fs->wr_names_len, person, len);
    fs->wr_names[fs->wr_names_len + len] = '\0';
    fs->wr_names_len += len + 1;
}

typedef struct keyed_name {
    uint64_t key;
    uint32_t at;
} keyed_name_t;

static int keyed_cmp(const void *a, const void *b)
{
    uint64_t x = ((const keyed_name_t *)a)->key, y = ((const keyed_name_t *)b)->key;
    return (x > y) - (x < y);
}

/* At the seal: the names in rank order (the keys' order). wr_mu held. */
static void names_rank(gw_fair_sale_t *fs, size_t n)
{
    if (n < 2)
        return;
    keyed_name_t *v = cm_xmalloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        const char *p = fs->wr_names + fs->wr_name_at[i];
        v[i] = (keyed_name_t){gw_wr_prequeue_key(&fs->wr_seed, p, strlen(p)), fs->wr_name_at[i]};
    }
    qsort(v, n, sizeof(*v), keyed_cmp);
    for (size_t i = 0; i < n; i++)
        fs->wr_name_at[i] = v[i].at;
    free(v);
}

/* Adds key to the pre-queue's set (linear probing, grown at half full), and
 * a new person's name, with its "J" line first if log.
 * Returns 0 (added or there already), CM_EBUSY (full) or CM_EIO (the line
 * was not written: not added). wr_mu held. */
static int prequeue_add(gw_fair_sale_t *fs, uint64_t key, const char *person, size_t len,
                        bool log)
{
    if (fs->wr_pre_cap) {
        size_t mask = fs->wr_pre_cap - 1;
        for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
            if (fs->wr_pre[i] == key)
                return 0;
            if (!fs->wr_pre[i])
                break;
        }
    }
    if (fs->wr_npre >= GW_WR_PREQUEUE_MAX)
        return CM_EBUSY;
    if (log && gw_fair__room_store_line(fs, false, "J %.*s", (int)len, person) != 0)
        return CM_EIO;
    if ((fs->wr_npre + 1) * 2 > fs->wr_pre_cap) {
        size_t cap = fs->wr_pre_cap ? fs->wr_pre_cap * 2 : 1024;
        uint64_t *t = cm_xcalloc(cap, sizeof(*t));
        for (size_t j = 0; j < fs->wr_pre_cap; j++) {
            uint64_t k = fs->wr_pre[j];
            if (!k)
                continue;
            size_t i = (size_t)k & (cap - 1);
            while (t[i])
                i = (i + 1) & (cap - 1);
            t[i] = k;
        }
        free(fs->wr_pre);
        fs->wr_pre = t;
        fs->wr_pre_cap = cap;
    }
    size_t mask = fs->wr_pre_cap - 1;
    size_t i = (size_t)key & mask;
    while (fs->wr_pre[i])
        i = (i + 1) & mask;
    fs->wr_pre[i] = key;
    name_add(fs, person, len);
    fs->wr_npre++;
    return 0;
}

/* The start: the set becomes the sorted ranks, the places after them go to
 * later arrivals, and the seed may be published; its "S" line if log, whose
 * fdatasync the caller runs after releasing wr_mu (seal_sync) while
 * wr_seal_syncing holds back everything that acts on the seal. wr_mu held. */
static void prequeue_seal(gw_fair_sale_t *fs, int64_t now_ms, int64_t starts_at_ms, bool log)
{
    size_t n = 0;
    for (size_t j = 0; j < fs->wr_pre_cap; j++)
        if (fs->wr_pre[j])
            fs->wr_pre[n++] = fs->wr_pre[j];
    gw_wr_prequeue_sort(fs->wr_pre, n);
    names_rank(fs, n);
    fs->wr_pre_exp = n ? cm_xcalloc(n, sizeof(*fs->wr_pre_exp)) : NULL;
    fs->wr_npre = n;
    fs->wr_sealed_ms = now_ms;
    fs->wr_starts_ms = starts_at_ms;
    /* the first later arrival takes the place after the pre-queue */
    atomic_fetch_add(&fs->wr_next, (uint64_t)n);
    atomic_store(&fs->wr_sealed, true);
    /* a failed line is logged by the store: a restart then seals again with
     * the same joins and seed, so the same ranks; it is written again before
     * the next place's line (seal_relog) */
    fs->wr_seal_unlogged = log && gw_fair__room_store_line(fs, false, "S %lld %lld",
                                                           (long long)now_ms,
                                                           (long long)starts_at_ms) != 0;
    /* an empty pre-queue ranks nobody: its line needs no sync of its own
     * (the next sync covers it before any P line after it), so a room
     * without a pre-queue never answers 503 for its seal */
    fs->wr_seal_syncing = log && !fs->wr_seal_unlogged && n > 0;
    if (n)
        cm_log_info("fair", "waiting room pre-queue sealed", "sale=%s persons=%zu", fs->sale_id, n);
}

/* Before a P or A line: the seal's line again if it failed. A restart reads
 * P and A lines only in a sealed room, so without it every place given after
 * the seal would be skipped and given again to later arrivals (with the same
 * replay ids). Not synced here (wr_mu held): it precedes those lines in the
 * file, and the lottery thread's sync covers them together. wr_mu held. */
static void seal_relog(gw_fair_sale_t *fs)
{
    if (fs->wr_seal_unlogged &&
        gw_fair__room_store_line(fs, false, "S %lld %lld", (long long)fs->wr_sealed_ms,
                                 (long long)fs->wr_starts_ms) == 0)
        fs->wr_seal_unlogged = false;
}

/*
 * The seal's fdatasync, by the thread that sealed, without wr_mu: the joins
 * before the seal and its "S" line are durable before any rank or place is
 * answered from it or its seed published (until then wr_seal_syncing makes
 * the other joins answer CM_EAGAIN instead of waiting: no worker loop waits
 * for this disk), and the worker loops' other work on the room goes on. A
 * failed sync is treated as a failed "S" line was before: the room stays
 * sealed (a restart seals it again from the same joins and seed) and the line
 * is written again before the next place's. wr_mu not held.
 */
static void seal_sync(gw_fair_sale_t *fs)
{
    int rc = gw_fair__room_store_durable(fs);
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    if (rc != 0)
        fs->wr_seal_unlogged = true;
    pthread_mutex_unlock(&fs->wr_mu);
}

uint64_t gw_fair__place_jti(const cm_hash_key_t *key, uint64_t pos)
{
    uint64_t j = cm_hash_sip24(key, &pos, sizeof(pos));
    return j ? j : 1;
}

/* The replay id of a place: one per place of this room, opaque outside. */
static uint64_t place_jti(const gw_fair_sale_t *fs, uint64_t pos)
{
    return gw_fair__place_jti(&fs->wr_key, pos);
}

int gw_fair_room_join(gw_fair_sale_t *fs, const char *person, size_t len, bool take, int64_t now_ms,
                      int64_t starts_at_ms, uint64_t admitted_through, gw_wr_join_t *out)
{
    if (fs->f && fs->f->fleet)
        return gw_fair__room_fleet_join(fs, person, len, take, now_ms, starts_at_ms, out);
    memset(out, 0, sizeof(*out));
    int64_t now_s = now_ms / 1000;
    int rc = 0;
    pthread_mutex_lock(&fs->wr_mu);
    if (!atomic_load(&fs->wr_sealed)) {
        if (starts_at_ms && now_ms < starts_at_ms) {
            out->prequeue = true;
            if (take)
                rc = prequeue_add(fs, gw_wr_prequeue_key(&fs->wr_seed, person, len), person,
                                  len, true);
            pthread_mutex_unlock(&fs->wr_mu);
            return rc;
        }
        prequeue_seal(fs, now_ms, starts_at_ms, true);
        if (fs->wr_seal_syncing) { /* this join sealed: it syncs, then goes on */
            pthread_mutex_unlock(&fs->wr_mu);
            seal_sync(fs);
            pthread_mutex_lock(&fs->wr_mu);
        }
    }
    /* another thread's seal, in its fdatasync (or a reset meanwhile) */
    if (fs->wr_seal_syncing || !atomic_load(&fs->wr_sealed)) {
        pthread_mutex_unlock(&fs->wr_mu);
        return CM_EAGAIN;
    }
    int64_t *exp = NULL;
    uint64_t tag = 0, next0 = atomic_load_explicit(&fs->wr_next, memory_order_relaxed);
    uint64_t rank = fs->wr_npre ? gw_wr_prequeue_rank(fs->wr_pre, fs->wr_npre,
                                                      gw_wr_prequeue_key(&fs->wr_seed, person, len))
                                : 0;
    /* a pre-queue place whose token expired unused is given up: the person
     * joins at the back like a place of the table */
    if (rank && (!fs->wr_pre_exp[rank - 1] || fs->wr_pre_exp[rank - 1] >= now_s)) {
        out->pos = rank;
        exp = &fs->wr_pre_exp[rank - 1];
    } else {
        tag = cm_hash_sip24(&fs->wr_key, person, len) | 1;
        size_t b = (size_t)(tag >> 32) & (WR_PLACES - GW_WR_WAYS);
        if (!fs->wr_places && take)
            fs->wr_places = cm_xcalloc(WR_PLACES, sizeof(*fs->wr_places));
        gw_wr_place_t *p =
            fs->wr_places ? place_slot(fs->wr_places + b, tag, take, &fs->wr_next) : NULL;
        if (p && p->exp_s && p->exp_s < now_s && take) {
            p->pos = atomic_fetch_add_explicit(&fs->wr_next, 1, memory_order_relaxed) + 1;
            p->exp_s = 0;
        }
        if (p) {
            out->pos = p->pos;
            exp = &p->exp_s;
            /* a new place (here or at the back again): a failed line is logged
             * by the store, and the place is then kept in memory only */
            if (p->pos > next0) {
                seal_relog(fs);
                (void)gw_fair__room_store_line(fs, false, "P %016llx %llu",
                                               (unsigned long long)tag,
                                               (unsigned long long)p->pos);
            }
        }
    }
    if (exp && out->pos <= admitted_through && (!*exp || *exp >= now_s)) {
        if (!*exp) {
            *exp = now_s + GW_WR_TOKEN_TTL_S;
            /* the expiry and so the token stay the same across a restart */
            seal_relog(fs);
            (void)gw_fair__room_store_line(fs, false, "A %016llx %llu %lld",
                                           (unsigned long long)tag,
                                           (unsigned long long)out->pos, (long long)*exp);
        }
        out->exp_s = *exp;
        out->jti = place_jti(fs, out->pos);
    }
    pthread_mutex_unlock(&fs->wr_mu);
    return 0;
}

void *gw_fair__room_json(gw_fair_sale_t *fs)
{
    json_t *o = json_object();
    pthread_mutex_lock(&fs->wr_mu);
    bool sealed = atomic_load(&fs->wr_sealed) && !fs->wr_seal_syncing;
    json_object_set_new(o, "waiting_room_rate", json_integer(atomic_load(&fs->wr_rate)));
    json_object_set_new(o, "prequeue_size", json_integer((json_int_t)fs->wr_npre));
    json_object_set_new(o, "sealed", json_boolean(sealed));
    json_object_set_new(o, "hash", json_string("siphash-2-4"));
    if (sealed) {
        char hex[33];
        gw_fair__seed_hex(&fs->wr_seed, hex);
        json_object_set_new(o, "seed", json_string(hex));
        char t[40];
        cm_time_format_rfc3339(fs->wr_sealed_ms, t, sizeof(t));
        json_object_set_new(o, "sealed_at", json_string(t));
        if (fs->wr_starts_ms) {
            cm_time_format_rfc3339(fs->wr_starts_ms, t, sizeof(t));
            json_object_set_new(o, "starts_at", json_string(t));
        }
    }
    pthread_mutex_unlock(&fs->wr_mu);
    json_object_set_new(o, "admitted_through",
                        json_integer((json_int_t)(atomic_load(&fs->wr_front_milli) / 1000)));
    json_object_set_new(o, "queued", json_integer((json_int_t)atomic_load(&fs->wr_next)));
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
        sealed = atomic_load(&fs->wr_sealed) && !fs->wr_seal_syncing;
        total = fs->wr_npre;
        for (uint64_t i = cursor; sealed && i < total && i - cursor < limit; i++)
            person_rank_add(arr, fs->wr_names + fs->wr_name_at[i], i + 1);
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
    if (fs->wr_places)
        memset(fs->wr_places, 0, WR_PLACES * sizeof(*fs->wr_places));
    free(fs->wr_pre);
    free(fs->wr_pre_exp);
    fs->wr_pre = NULL;
    fs->wr_pre_exp = NULL;
    free(fs->wr_names);
    free(fs->wr_name_at);
    fs->wr_names = NULL;
    fs->wr_name_at = NULL;
    fs->wr_names_len = fs->wr_names_cap = 0;
    fs->wr_npre = fs->wr_pre_cap = 0;
    fs->wr_sealed_ms = fs->wr_starts_ms = 0;
    fs->wr_seal_unlogged = false;
    fs->wr_seal_syncing = false;
    atomic_store(&fs->wr_sealed, false);
    gw_fair__room_keys(fs);
    /* a new log with the new keys from the next line on */
    if (gw_fair__room_store_drop(fs) != 0)
        cm_log_error("fair", "cannot remove the waiting-room log of a deleted sale",
                     "sale=%s err=%s", fs->sale_id, strerror(errno));
    fs->wr_front_logged = 0;
    atomic_store(&fs->wr_next, 0);
    atomic_store(&fs->wr_front_milli, 0);
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
}

/*---- one gateway's room across a restart (the log: gw_room_store.c) ----*/

/* Replay: the slot of the place table that tag's place at pos took (as
 * place_slot took it: the same slot, as the log is read in order). */
static gw_wr_place_t *place_put(gw_fair_sale_t *fs, uint64_t tag, uint64_t pos)
{
    if (!fs->wr_places)
        fs->wr_places = cm_xcalloc(WR_PLACES, sizeof(*fs->wr_places));
    gw_wr_place_t *bucket = fs->wr_places + ((size_t)(tag >> 32) & (WR_PLACES - GW_WR_WAYS));
    gw_wr_place_t *p = bucket;
    for (size_t i = 0; i < GW_WR_WAYS; i++) {
        if (bucket[i].tag == tag) {
            p = bucket + i;
            break;
        }
        if (bucket[i].pos < p->pos)
            p = bucket + i;
    }
    *p = (gw_wr_place_t){.tag = tag, .pos = pos, .exp_s = 0};
    return p;
}

/*
 * One line of the log, in the order written:
 *   K <key k0> <key k1> <seed k0> <seed k1>  the place key and the pre-queue seed (first)
 *   J <person>                a pre-queue join, before its answer
 *   S <sealed ms> <starts ms> the seal (fdatasync'd)
 *   P <tag> <pos>             a place given after the seal (tag: gw_wr_place_find's)
 *   A <tag> <pos> <exp s>     a place admitted: its token's expiry (tag 0: a pre-queue rank)
 *   F <front milli>           the admission front
 *   T <jti> <exp s> <fp>      an admission token claimed by a buy, before its reserve
 *   U <jti>                   the claim given back (the buy was not a new order's 202)
 * Hex fields are 16 digits. An unknown or malformed line is skipped.
 */
static void room_apply(gw_fair_sale_t *fs, char *line)
{
    unsigned long long a = 0, b = 0, c = 0, d = 0;
    long long e = 0;
    int64_t now_s = cm_wall_ms() / 1000;
    bool sealed = atomic_load(&fs->wr_sealed);
    switch (line[0]) {
    case 'K':
        if (sscanf(line, "K %16llx %16llx %16llx %16llx", &a, &b, &c, &d) == 4) {
            fs->wr_key = (cm_hash_key_t){a, b};
            fs->wr_seed = (cm_hash_key_t){c, d};
        }
        break;
    case 'J': {
        const char *p = line + 2;
        size_t len = strlen(p);
        if (!sealed && line[1] == ' ' && inv_id_valid(p, len, INV_USER_ID_MAX))
            (void)prequeue_add(fs, gw_wr_prequeue_key(&fs->wr_seed, p, len), p, len, false);
        break;
    }
    case 'S':
        if (!sealed && sscanf(line, "S %lld %llu", &e, &a) == 2)
            prequeue_seal(fs, e, (int64_t)a, false);
        break;
    case 'P':
        if (sealed && sscanf(line, "P %16llx %llu", &a, &b) == 2 && (a & 1) && b > fs->wr_npre) {
            place_put(fs, a, b);
            if (b > atomic_load(&fs->wr_next))
                atomic_store(&fs->wr_next, b);
        }
        break;
    case 'A':
        if (!sealed || sscanf(line, "A %16llx %llu %lld", &a, &b, &e) != 3 || b == 0)
            break;
        if (a == 0 && b <= fs->wr_npre) {
            fs->wr_pre_exp[b - 1] = e;
        } else if (a && fs->wr_places) {
            gw_wr_place_t *bk = fs->wr_places + ((size_t)(a >> 32) & (WR_PLACES - GW_WR_WAYS));
            for (size_t i = 0; i < GW_WR_WAYS; i++)
                if (bk[i].tag == a && bk[i].pos == b)
                    bk[i].exp_s = e;
        }
        if (b * 1000 > atomic_load(&fs->wr_front_milli)) /* it was admitted */
            atomic_store(&fs->wr_front_milli, b * 1000);
        break;
    case 'F':
        if (sscanf(line, "F %llu", &a) == 1 && a > atomic_load(&fs->wr_front_milli))
            atomic_store(&fs->wr_front_milli, a);
        break;
    case 'T':
        if (sscanf(line, "T %16llx %lld %16llx", &a, &e, &b) == 3 && a && e >= now_s &&
            gw_wr_spent_claim(&fs->wr_spent, a, e, b, now_s) == GW_WR_CLAIMED)
            gw_wr_spent_settle(&fs->wr_spent, a, true);
        break;
    case 'U':
        if (sscanf(line, "U %16llx", &a) == 1 && a)
            gw_wr_spent_settle(&fs->wr_spent, a, false);
        break;
    default:
        break;
    }
}

void gw_fair__room_load(gw_fair_sale_t *fs)
{
    size_t lines = gw_fair__room_store_read(fs, room_apply);
    fs->wr_front_logged = atomic_load(&fs->wr_front_milli);
    if (lines)
        cm_log_info("fair", "waiting room loaded",
                    "sale=%s prequeue=%zu sealed=%d places=%llu admitted_through=%llu", fs->sale_id,
                    fs->wr_npre, (int)atomic_load(&fs->wr_sealed),
                    (unsigned long long)atomic_load(&fs->wr_next),
                    (unsigned long long)(atomic_load(&fs->wr_front_milli) / 1000));
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

static gw_wr_spent_slot_t *spent_bucket(gw_wr_spent_t *s, uint64_t jti)
{
    size_t nb = GW_WR_SPENT_SLOTS / GW_WR_SPENT_WAYS;
    return s->slots + (size_t)(jti % nb) * GW_WR_SPENT_WAYS;
}

int gw_wr_spent_claim(gw_wr_spent_t *s, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->slots)
        s->slots = cm_xcalloc(GW_WR_SPENT_SLOTS, sizeof(*s->slots));
    gw_wr_spent_slot_t *b = spent_bucket(s, jti), *free_slot = NULL;
    int rc = CM_EBUSY;
    for (size_t i = 0; i < GW_WR_SPENT_WAYS; i++) {
        gw_wr_spent_slot_t *e = b + i;
        if (e->jti == jti) {
            rc = fp && e->fp == fp ? GW_WR_REPLAY : GW_WR_SPENT;
            free_slot = NULL;
            break;
        }
        /* an expired token's id is free again: the token itself is refused as expired */
        if (!free_slot && (!e->jti || e->exp_s < now_s))
            free_slot = e;
    }
    if (free_slot) {
        *free_slot = (gw_wr_spent_slot_t){.jti = jti, .exp_s = exp_s, .fp = fp, .spent = false};
        rc = GW_WR_CLAIMED;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* gw_wr_spent_settle with s->mu held. */
static void spent_settle_locked(gw_wr_spent_t *s, uint64_t jti, bool accepted)
{
    gw_wr_spent_slot_t *b = s->slots ? spent_bucket(s, jti) : NULL;
    for (size_t i = 0; b && i < GW_WR_SPENT_WAYS; i++) {
        if (b[i].jti != jti)
            continue;
        if (accepted)
            b[i].spent = true;
        else
            b[i] = (gw_wr_spent_slot_t){0};
        break;
    }
}

void gw_wr_spent_settle(gw_wr_spent_t *s, uint64_t jti, bool accepted)
{
    pthread_mutex_lock(&s->mu);
    spent_settle_locked(s, jti, accepted);
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
    spent_settle_locked(&fs->wr_spent, jti, accepted);
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
    bool sealed = atomic_load(&fs->wr_sealed);
    int64_t sealed_ms = fs->wr_sealed_ms, starts_ms = fs->wr_starts_ms;
    uint64_t front = atomic_load(&fs->wr_front_milli);
    size_t npre = fs->wr_npre, nplaces = 0, nspent = 0;
    char *names = npre ? cm_xmalloc(fs->wr_names_len) : NULL;
    uint32_t *name_at = npre ? cm_xmalloc(npre * sizeof(*name_at)) : NULL;
    int64_t *pre_exp = sealed && npre ? cm_xmalloc(npre * sizeof(*pre_exp)) : NULL;
    if (npre) {
        memcpy(names, fs->wr_names, fs->wr_names_len);
        memcpy(name_at, fs->wr_name_at, npre * sizeof(*name_at));
    }
    if (pre_exp)
        memcpy(pre_exp, fs->wr_pre_exp, npre * sizeof(*pre_exp));
    gw_wr_place_t *places = NULL;
    if (fs->wr_places) {
        places = cm_xmalloc(WR_PLACES * sizeof(*places));
        for (size_t i = 0; i < WR_PLACES; i++)
            if (fs->wr_places[i].tag)
                places[nplaces++] = fs->wr_places[i];
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
        if (!atomic_load(&fs->wr_sealed)) {
            pthread_mutex_lock(&fs->wr_mu);
            bool sealer = !atomic_load(&fs->wr_sealed);
            if (sealer)
                prequeue_seal(fs, now, info.starts_at_ms, true);
            sealer = sealer && fs->wr_seal_syncing;
            pthread_mutex_unlock(&fs->wr_mu);
            if (sealer)
                seal_sync(fs);
        }
        uint64_t front = atomic_load(&fs->wr_front_milli) + (uint64_t)(eff * (double)dt);
        uint64_t ahead = (atomic_load(&fs->wr_next) + (uint64_t)eff) * 1000;
        front = front < ahead ? front : ahead;
        atomic_store(&fs->wr_front_milli, front);
        /* the front as the restart's floor: a line when it passed another
         * place, at most one a tick */
        if (front / 1000 > fs->wr_front_logged / 1000 &&
            gw_fair__room_store_line(fs, false, "F %llu", (unsigned long long)front) == 0)
            fs->wr_front_logged = front;
    }
}
