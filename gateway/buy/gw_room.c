/*
 * The waiting room (docs/design.md "The waiting room, per person"): the part every
 * room shares (the view, the audit, the keys, the rate each tick gives it); what a
 * room's store decides goes through fs->wr_ops: one gateway's (gw_room_store.c) or
 * the fleet's (gw_room_fleet.c).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_room_core.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/overload/gw_ol.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- the waiting room ----*/

gw_fair_sale_t *gw_fair_room(gw_fair_t *f, const char *sale_id)
{
    if (!f || !atomic_load_explicit(&f->n, memory_order_acquire))
        return NULL;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, sale_id);
    return fs && atomic_load_explicit(&fs->sale.cfg.room_rate, memory_order_relaxed) > 0 ? fs
                                                                                         : NULL;
}

int64_t gw_fair_room_rate(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    return fs ? atomic_load(&fs->sale.cfg.room_rate) : 0;
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

int gw_fair_room_join(gw_fair_sale_t *fs, const char *person, size_t len, bool take, int64_t now_ms,
                      uint64_t admitted_through, gw_wr_join_t *out)
{
    gw_room_join_ev_t ev = {.person = person,
                            .len = len,
                            .take = take,
                            .now_ms = now_ms,
                            .admitted_through = admitted_through};
    return fs->wr_ops->join(fs, &ev, out);
}

void *gw_fair__room_json(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->wr_mu);
    bool sealed = atomic_load(&fs->wr_core.sealed) && !fs->wr_seal_syncing;
    json_t *o = json_pack("{s:I,s:I,s:b,s:s}", "waiting_room_rate",
                          (json_int_t)atomic_load(&fs->sale.cfg.room_rate), "prequeue_size",
                          (json_int_t)fs->wr_core.npre, "sealed", sealed, "hash", "siphash-2-4");
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
    json_object_update_new(o, json_pack("{s:I,s:I}", "admitted_through",
                                        (json_int_t)(atomic_load(&fs->wr_core.front_milli) / 1000),
                                        "queued", (json_int_t)atomic_load(&fs->wr_core.next)));
    if (fs->wr_ops->audit)
        fs->wr_ops->audit(fs, o);
    return o;
}

void *gw_fair_room_persons_json(gw_fair_t *f, const char *sale_id, uint64_t cursor, uint64_t limit,
                                int *rc, char *errbuf, size_t errlen)
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
    *rc = fs->wr_ops->persons(fs, cursor, limit, arr, &total, &sealed, hex, errbuf, errlen);
    if (*rc) {
        json_decref(arr);
        return NULL;
    }
    if (!sealed) {
        json_decref(arr);
        *rc = CM_ECONFLICT;
        cm_errbuf_set(errbuf, errlen,
                      "the pre-queue of sale %s is ranked at the start: %llu persons so far",
                      sale_id, (unsigned long long)total);
        return NULL;
    }
    uint64_t end = cursor + json_array_size(arr);
    json_t *o = json_pack("{s:s,s:I,s:s,s:s,s:o}", "sale_id", sale_id, "count", (json_int_t)total,
                          "seed", hex, "hash", "siphash-2-4", "persons", arr);
    json_object_set_new(o, "next_cursor",
                        end < total ? json_sprintf("%llu", (unsigned long long)end) : json_null());
    return o;
}

void gw_fair__room_reset(gw_fair_sale_t *fs)
{
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seal_syncing = false;
    gw_fair__room_keys(fs);
    /* a new log with the new keys from the next line on */
    if (fs->wr_ops->drop && fs->wr_ops->drop(fs) != 0)
        cm_log_error("fair", "cannot remove the waiting-room log of a deleted sale",
                     "sale=%s err=%s", fs->sale_id, strerror(errno));
    atomic_store(&fs->wr_eff_milli, 0);
    fs->wr_last_ms = 0;
    pthread_mutex_unlock(&fs->wr_mu);
    gw_wr_spent_clear(&fs->wr_spent);
}

void gw_fair__room_keys(gw_fair_sale_t *fs)
{
    /* never fails on Linux; a fixed key still works (the seed is then not secret) */
    cm_hash_key_t key;
    if (cm_hash_seed_random(&key) != 0)
        key = (cm_hash_key_t){0x9e3779b97f4a7c15ull, (uint64_t)(uintptr_t)fs};
    if (cm_hash_seed_random(&fs->wr_seed) != 0)
        fs->wr_seed = (cm_hash_key_t){0xbf58476d1ce4e5b9ull, (uint64_t)(uintptr_t)fs};
    /* the room's state goes with the old keys */
    gw_room_core_reset(&fs->wr_core, &key, &fs->wr_seed);
}

int gw_fair_admission_claim(gw_fair_t *f, const char *sale_id, uint64_t jti, int64_t exp_s,
                            uint64_t fp, int64_t now_s, uint64_t *nonce)
{
    *nonce = 0;
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    return fs ? fs->wr_ops->claim(fs, jti, exp_s, fp, now_s, nonce) : GW_WR_CLAIMED;
}

int gw_fair_admission_sync(gw_fair_t *f, const char *sale_id)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    return fs && fs->wr_ops->sync ? fs->wr_ops->sync(fs) : 0;
}

void gw_fair_admission_settle(gw_fair_t *f, const char *sale_id, uint64_t jti, uint64_t fp,
                              uint64_t nonce, bool accepted)
{
    gw_fair_sale_t *fs = f ? gw_fair__slot_find(f, sale_id) : NULL;
    if (fs)
        fs->wr_ops->settle(fs, jti, fp, nonce, accepted);
}

/*
 * Advances the admission front of every waiting room: the configured rate, scaled
 * by the overload controller, capped by what the Redis limit lets through (limit /
 * RTT), divided among the fleet's gateways. due[i]: the machine's tick of sale i
 * (GW_SALE_DO_ROOM: a room; GW_SALE_DO_ADMIT: it started). Lottery thread.
 */
void gw_fair__rooms_tick(gw_fair_t *f, int64_t now, size_t n, const unsigned *due)
{
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = (due[i] & GW_SALE_DO_ROOM) != 0;
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
        int64_t dt = fs->wr_last_ms ? now - fs->wr_last_ms : 0;
        fs->wr_last_ms = now;
        if (!(due[i] & GW_SALE_DO_ROOM))
            continue;
        double eff = (double)atomic_load(&fs->sale.cfg.room_rate) * factor / members;
        if (cap >= 0 && eff > cap)
            eff = cap;
        fs->wr_ops->tick(fs, now, dt, (due[i] & GW_SALE_DO_ADMIT) != 0,
                         atomic_load(&fs->sale.cfg.starts_at_ms), eff, members);
    }
}
