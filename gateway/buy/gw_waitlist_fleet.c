/*
 * Leftovers by lot in a fleet: the store in Redis (gw_fair__wl_redis) of the
 * walk and the promotion gw_waitlist.c runs for both stores; what each step
 * records there, and why each promotion is pending in Redis before its reserve
 * under a lock owned by a data directory: docs/fleet.md "The waitlist" (the
 * keys: gw_fair_redis.h).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_waitlist_core.h"

#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "inventory/inv_fleet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLEET_WL_LOCK_MS 3000   /* the promoter's lock, renewed while it promotes */
#define FLEET_WL_POLL_MS 100    /* how often a gateway reads the waitlist's state */
#define FLEET_WL_GRACE_MS 10000 /* a pending promotion's owner has this long to come back */
#define FLEET_WL_RETRY_MS 500   /* no new try after a failure before this */
#define FLEET_WL_RENEW_EVERY 64 /* promotions between renewals of the lock in one walk */

/*
 * This data directory's owner id: 32 hex digits made once and kept in
 * <data_dir>/fair/owner.id (cm_journal_replace_file: a crash leaves none or all).
 * NULL when it cannot be read or written (then this gateway promotes nobody).
 */
static const char *owner_id(gw_fair_t *f)
{
    if (f->owner[0])
        return f->owner;
    char path[700], buf[40] = "", *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/owner.id", f->dir);
    if (cm_journal_read_file(path, &text, &len) == 0) { /* the journal's disk */
        bool ok = sscanf(text, "%39s", buf) == 1 && strlen(buf) == 32 &&
                  strspn(buf, "0123456789abcdef") == 32;
        free(text);
        if (ok) {
            memcpy(f->owner, buf, sizeof(buf));
            return f->owner;
        }
    }
    cm_hash_key_t k;
    if (cm_hash_seed_random(&k) != 0)
        return NULL;
    snprintf(buf, sizeof(buf), "%016llx%016llx\n", (unsigned long long)k.k0,
             (unsigned long long)k.k1);
    if (cm_journal_replace_file(path, buf, 33, 0644) != 0) {
        cm_log_error("fair", "cannot write the waitlist owner id; this gateway promotes nobody",
                     "path=%s", path);
        return NULL;
    }
    buf[32] = '\0';
    memcpy(f->owner, buf, sizeof(buf));
    return f->owner;
}

/* fn on the lottery thread's fleet connection: its answer, or CM_EBACKEND (none, or a
 * failure, logged by gw_fair__fleet_ok). why: the caller's char array. */
#define WL_CALL(f, why, fn, ...)                                                                   \
    wl_answer((f),                                                                                 \
              gw_fair__fleet_conn(f) ? fn((f)->rc, __VA_ARGS__, (why), sizeof(why)) : CM_EBACKEND, \
              (why))

static int wl_answer(gw_fair_t *f, int rc, const char *why)
{
    return gw_fair__fleet_ok(f, rc < 0 ? rc : 0, why) ? rc : CM_EBACKEND;
}

/* The promoter's lock (:wlock), taken or renewed: true when this gateway holds it. */
static bool take_lock(gw_fair_t *f, gw_fair_sale_t *fs, const char *owner)
{
    char why[256] = "";
    bool mine = false;
    int rc = WL_CALL(f, why, gw_fair_redis_wl_lock, fs->sale_id, owner, FLEET_WL_LOCK_MS, &mine);
    return rc >= 0 && mine;
}

/*
 * Records the pending promotion's outcome for person (an order id, "-" lost,
 * "" none). True when written: this gateway held the lock.
 */
static bool finish(gw_fair_t *f, gw_fair_sale_t *fs, const char *owner, const char *person,
                   const char *result)
{
    char why[256] = "";
    long long gen = 0;
    if (WL_CALL(f, why, gw_fair_redis_wl_finish, fs->sale_id, owner, person, result,
                (long long)fs->sale.wl.head, &gen) != 1)
        return false;
    if (gen == fs->wl_gen + 1 || (!result[0] && gen == fs->wl_gen))
        fs->wl_gen = gen; /* our own change alone: nothing to read back */
    return true;
}

/* Reads the waitlist's state and re-reads the draw when it moved. False on a Redis problem. */
static bool wl_sync(gw_fair_t *f, gw_fair_sale_t *fs, gw_fair_redis_wl_state_t *ws)
{
    char why[256] = "";
    if (WL_CALL(f, why, gw_fair_redis_wl_state, fs->sale_id, ws) < 0)
        return false;
    if (CM_PLANT(WL_FLEET_GEN_IGNORED)) /* planted: the promotions of others go unread */
        fs->wl_gen = ws->gen;
    if (ws->gen != fs->wl_gen)
        gw_fair__fleet_fetch(f, fs);
    return ws->gen == fs->wl_gen;
}

/*
 * The pending promotion, by the lock's holder: its own (this data directory's
 * earlier life or an earlier failure: the spool is asked), or another's that
 * waited FLEET_WL_GRACE_MS, adopted. Returns false when promotions must wait.
 */
static bool resolve_pending(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, const char *owner,
                            const gw_fair_redis_wl_state_t *ws, int64_t *left)
{
    char why[256] = "", person[INV_USER_ID_MAX + 1], order[INV_ORDER_ID_MAX + 1];
    bool mine = strcmp(ws->owner, owner) == 0;
    if (!mine) {
        if (WL_CALL(f, why, gw_fair_redis_wl_adopt, fs->sale_id, owner, FLEET_WL_GRACE_MS) != 1)
            return false; /* its owner may still come back */
        cm_log_warn("fair", "fleet waitlist: a promotion whose gateway did not come back adopted",
                    "sale=%s owner=%s", fs->sale_id, ws->owner);
    }
    bool found = false;
    if (WL_CALL(f, why, gw_fair_redis_wl_pending, fs->sale_id, &found, person, sizeof(person),
                order, sizeof(order)) < 0)
        return false;
    if (!found)
        return true;
    entry_t *e = gw_fair__find_id(fs, order);
    if (!e || e->state != GW_ENTRY_WAITLISTED || strcmp(e->person, person) != 0)
        return finish(f, fs, owner, person, ""); /* no entry waits for it: nothing to do */
    gw_wl_result_t r = gw_fair__wl_promote(f, fs, sale, e, mine, left);
    return r == GW_WL_WON || r == GW_WL_LOST;
}

/*---- the store's ops (gw_wl_ops_t) ----*/

/* Every FLEET_WL_POLL_MS: the waitlist's state, the draw read again when it moved. */
static bool fleet_poll(gw_fair_t *f, gw_fair_sale_t *fs, int64_t now, bool *pending)
{
    /* the owner id is made while losers wait, so that it exists before this gateway needs it */
    if (!owner_id(f) || now - fs->wl_polled_ms < FLEET_WL_POLL_MS)
        return false;
    fs->wl_polled_ms = now;
    gw_fair_redis_wl_state_t ws;
    if (!wl_sync(f, fs, &ws) || !gw_fair_waitlist_open(fs))
        return false;
    *pending = ws.owner[0] != '\0';
    return true;
}

/* The lock, what the last holder did read under it, its pending promotion finished. */
static bool fleet_lock(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, int64_t now,
                       int64_t *left)
{
    const char *owner = owner_id(f);
    gw_fair_redis_wl_state_t ws;
    if (!owner || !take_lock(f, fs, owner) || !wl_sync(f, fs, &ws) || !gw_fair_waitlist_open(fs))
        return false;
    if (ws.owner[0] && !resolve_pending(f, fs, sale, owner, &ws, left)) {
        fs->wl_retry_ms = now + FLEET_WL_RETRY_MS;
        return false;
    }
    return true; /* the walk goes from the first waiter the fetch under the lock read */
}

/* :wp, "person order owner", under the lock (renewed every FLEET_WL_RENEW_EVERY). */
static bool fleet_begin(gw_fair_t *f, gw_fair_sale_t *fs, const entry_t *e, size_t nth)
{
    char why[256] = "";
    const char *owner = owner_id(f);
    if (nth % FLEET_WL_RENEW_EVERY == 0 && !take_lock(f, fs, owner))
        return false;
    /* not 1: the lock or the fleet's state moved: read again at the next walk */
    return WL_CALL(f, why, gw_fair_redis_wl_begin, fs->sale_id, owner, e->person, e->order_id) == 1;
}

/* :won and the waitlist's generation, in the script that checks the lock. */
static bool fleet_record(gw_fair_t *f, gw_fair_sale_t *fs, entry_t *e, gw_wl_rec_t rec,
                         const char *order_id)
{
    const char *result = rec == GW_WL_REC_WON    ? order_id
                         : rec == GW_WL_REC_LOST ? GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED
                                                 : "";
    return finish(f, fs, owner_id(f), e->person, result);
}

/*
 * The sale ended: its record in Redis once no promotion is pending, then the draw
 * read again (gw_fair__fleet_fetch: the promotions recorded won, every loser still
 * waiting lost). Until both are done its losers keep waiting: no gateway answers
 * lost a loser that a promotion may still make a winner.
 */
static void fleet_end(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, int64_t now)
{
    char why[256] = "";
    const char *owner = owner_id(f);
    if (!owner)
        return;
    int rc = WL_CALL(f, why, gw_fair_redis_wl_end, fs->sale_id);
    fs->wl_retry_ms = now + FLEET_WL_POLL_MS; /* what is not done is tried again then */
    if (rc < 0)
        return;
    if (CM_PLANT(WL_FLEET_END_UNREAD)) {
        /* planted: the waitlisted lost by the last poll, the draw not read again */
        pthread_mutex_lock(&fs->mu);
        gw_fair__wl_end_here(fs);
        pthread_mutex_unlock(&fs->mu);
        return;
    }
    if (rc == 0) { /* the pending promotion, under the lock; the end at a later tick */
        gw_fair_redis_wl_state_t ws;
        int64_t left = 0;
        if (take_lock(f, fs, owner) && wl_sync(f, fs, &ws) && ws.owner[0])
            (void)resolve_pending(f, fs, sale, owner, &ws, &left);
        return;
    }
    gw_fair__fleet_fetch(f, fs);
    if (fs->wl_ended)
        cm_log_info("fair", "sale ended: its fleet waitlist is lost", "sale=%s", fs->sale_id);
}

const gw_wl_ops_t gw_fair__wl_redis = {
    .poll = fleet_poll,
    .lock = fleet_lock,
    .begin = fleet_begin,
    .record = fleet_record,
    .end = fleet_end,
    .keyed = true,
    .retry_ms = FLEET_WL_RETRY_MS,
    .name = "fleet",
};
