/*
 * Fair start: the waiting room (see gw_fair.h for the rules).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_rand.h"
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
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
}

uint64_t gw_wr_place_find(gw_wr_place_t *bucket, uint64_t tag, bool take, _Atomic uint64_t *next)
{
    gw_wr_place_t *oldest = bucket;
    for (size_t i = 0; i < GW_WR_WAYS; i++) {
        if (bucket[i].tag == tag)
            return bucket[i].pos;
        if (bucket[i].pos < oldest->pos)
            oldest = bucket + i; /* an empty slot has position 0: taken first */
    }
    if (!take)
        return 0;
    oldest->tag = tag;
    oldest->pos = atomic_fetch_add_explicit(next, 1, memory_order_relaxed) + 1;
    return oldest->pos;
}

uint64_t gw_fair_room_join(gw_fair_sale_t *fs, const char *user_id, size_t len, bool take)
{
    uint64_t tag = cm_hash_sip24(&fs->wr_key, user_id, len) | 1;
    size_t b = (size_t)(tag >> 32) & (WR_PLACES - GW_WR_WAYS);
    uint64_t pos = 0;
    pthread_mutex_lock(&fs->wr_mu);
    if (!fs->wr_places && take)
        fs->wr_places = cm_xcalloc(WR_PLACES, sizeof(*fs->wr_places));
    gw_wr_place_t *places = fs->wr_places;
    if (places)
        pos = gw_wr_place_find(places + b, tag, take, &fs->wr_next);
    pthread_mutex_unlock(&fs->wr_mu);
    return pos;
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
        inv_sale_t *s = inv_sale_find(f->srv->inv, fs->sale_id);
        inv_sale_info_t info = {0};
        if (s)
            inv_sale_snapshot(s, &info);
        double eff = (double)rate * factor / members;
        if (cap >= 0 && eff > cap)
            eff = cap;
        atomic_store(&fs->wr_eff_milli, (uint64_t)(eff * 1000));
        if (!s || (info.starts_at_ms && now < info.starts_at_ms) || dt <= 0)
            continue; /* admissions start with the sale */
        uint64_t front = atomic_load(&fs->wr_front_milli) + (uint64_t)(eff * (double)dt);
        uint64_t ahead = (atomic_load(&fs->wr_next) + (uint64_t)eff) * 1000;
        atomic_store(&fs->wr_front_milli, front < ahead ? front : ahead);
    }
}
