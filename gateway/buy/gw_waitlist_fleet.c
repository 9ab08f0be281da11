/*
 * Leftovers by lot in a fleet: the draw's losers wait, in draw order, for the
 * units freed after it on any gateway (a cancelled or failed order, a
 * restock), and one gateway at a time promotes them (see gw_fair.h and
 * gw_fair_redis.h for the keys).
 *
 * Why this shape: a promotion spans Redis (the reservation) and one gateway's
 * spool (the order), which no single step can write together. So each
 * promotion is recorded in Redis before its reserve (:wp, "person order
 * owner") under a lock (:wlock), and its outcome goes to :won with the
 * waitlist's generation in one script that checks the lock. The owner is the
 * gateway's data directory (its id in <data_dir>/fair/owner.id), not its node
 * id, because only that spool can say whether the order was written: a
 * gateway killed between the reserve and the outcome takes the lock back at
 * its restart (the pending owner's right), finds the order in its spool and
 * records it, or reserves and spools it now. The inventory marks each order id
 * it reserves (inv_reserve_once), so an entry is never reserved twice whoever
 * retries. Another gateway adopts a pending promotion only after
 * FLEET_WL_GRACE_MS without its owner; it then spools the order itself, and
 * if the owner's spool had it too, settlement drops the second copy by its
 * order id (the fleet draw's resume does the same).
 *
 * Every gateway follows the waitlist's generation (polled every
 * FLEET_WL_POLL_MS while losers wait) and re-reads the draw when it moves, so
 * a loser reads "waitlisted" with its place, then "won", on every gateway,
 * and first-come buys are refused (410, "waitlist":true) everywhere until
 * nobody waits. At ends_at the end is recorded once no promotion is pending
 * (one begun before it is finished first), after which no promotion begins;
 * each gateway then reads the draw again and loses its waitlisted.
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

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLEET_WL_LOCK_MS 3000   /* the promoter's lock, renewed while it promotes */
#define FLEET_WL_POLL_MS 100    /* how often a gateway reads the waitlist's state */
#define FLEET_WL_GRACE_MS 10000 /* a pending promotion's owner has this long to come back */
#define FLEET_WL_RETRY_MS 500   /* no new try after a failure before this */
#define FLEET_WL_RENEW_EVERY 64 /* promotions between renewals of the lock in one walk */

/*
 * This data directory's owner id: 32 hex digits made once and kept in
 * <data_dir>/fair/owner.id (written to a temporary file, synced, renamed).
 * NULL when it cannot be read or written (then this gateway promotes nobody).
 */
static const char *owner_id(gw_fair_t *f)
{
    if (f->owner[0])
        return f->owner;
    char path[700], tmp[710], buf[40] = "";
    snprintf(path, sizeof(path), "%s/owner.id", f->dir);
    FILE *fp = fopen(path, "r");
    if (fp) {
        bool ok = fscanf(fp, "%39s", buf) == 1 && strlen(buf) == 32 &&
                  strspn(buf, "0123456789abcdef") == 32;
        fclose(fp);
        if (ok) {
            memcpy(f->owner, buf, sizeof(buf));
            return f->owner;
        }
    }
    cm_hash_key_t k;
    if (cm_hash_seed_random(&k) != 0)
        return NULL;
    snprintf(buf, sizeof(buf), "%016llx%016llx", (unsigned long long)k.k0,
             (unsigned long long)k.k1);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write(fd, buf, 32) == 32 && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        cm_log_error("fair", "cannot write the waitlist owner id; this gateway promotes nobody",
                     "path=%s", path);
        return NULL;
    }
    memcpy(f->owner, buf, sizeof(buf));
    return f->owner;
}

/* A waitlisted entry's new state, here (fs->mu taken). */
static void settle_local(gw_fair_sale_t *fs, entry_t *e, bool won)
{
    pthread_mutex_lock(&fs->mu);
    gw_fair__wl_remove(fs, e);
    if (won) {
        e->state = GW_ENTRY_WON;
        fs->won_orders++;
        fs->won_units += e->qty;
        fs->promoted++;
    } else {
        e->state = GW_ENTRY_LOST;
        fs->lost++;
    }
    pthread_mutex_unlock(&fs->mu);
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
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    int rc = c ? gw_fair_redis_wl_finish(c, fs->sale_id, owner, person, result,
                                         (long long)fs->sale.wl.head, &gen, why, sizeof(why))
               : CM_EBACKEND;
    if (!gw_fair__fleet_ok(f, rc < 0 ? rc : 0, why) || rc == 0)
        return false;
    if (gen == fs->wl_gen + 1 || (!result[0] && gen == fs->wl_gen))
        fs->wl_gen = gen; /* our own change alone: nothing to read back */
    return true;
}

typedef enum { FP_WON, FP_LOST, FP_NO_STOCK, FP_FAILED } fpromo_t;

/*
 * The promotion of waitlisted entry e, begun (:wp is e's and owner's): the
 * inventory's step (once per order id), the spool, the outcome. With
 * scan_spool (this data directory began it in an earlier life, or before a
 * failure) the spool is asked first whether the order is there. *left: the
 * stock left after it, when known. Lottery thread.
 */
static fpromo_t promote(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, entry_t *e,
                        const char *owner, bool scan_spool, int64_t *left)
{
    gw_accept_t a = {.fresh = false};
    int found = 0;
    if (strcmp(fs->wl_giveback, e->order_id) == 0) {
        /* given back after a spool refusal; its "lost" could not be written then */
        if (!finish(f, fs, owner, e->person, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED))
            return FP_FAILED;
        fs->wl_giveback[0] = '\0';
        settle_local(fs, e, false);
        return FP_LOST;
    }
    if (scan_spool && (found = gw_accept_find(&f->accept, e->order_id, &a)) < 0)
        return FP_FAILED;
    if (!found) {
        inv_reserve_req_t rq;
        gw_fair__entry_reserve_req(e, sale, &rq);
        /* a key, so that a retry finds the order held (INV_DUPLICATE), not a second one */
        if (!rq.idem_key[0])
            snprintf(rq.idem_key, sizeof(rq.idem_key), "fair-%s", e->order_id);
        gw_accept_req_t ar = {.inv = f->inv, .rq = &rq, .sale_id = fs->sale_id,
                              .user = e->user_id, .accepted_at_ms = cm_wall_ms(),
                              .why = "waitlist promotion not accepted: spool refused"};
        int rc = gw_accept_take(&f->accept, &ar, &a);
        if (rc < 0)
            return FP_FAILED; /* still pending: tried again */
        if (rc == GW_ACCEPT_SOLD_OUT) { /* the stock seen was gone: it keeps its place */
            *left = rq.stock_left > 0 ? rq.stock_left : 0; /* Redis', not the stale view's */
            return finish(f, fs, owner, e->person, "") ? FP_NO_STOCK : FP_FAILED;
        }
        if (rc == GW_ACCEPT_BEFORE) {
            /* reserved by an earlier try and released since (cancelled, failed): it was
             * promoted, as the fleet draw takes such a winner */
            if (!finish(f, fs, owner, e->person, e->order_id))
                return FP_FAILED;
            settle_local(fs, e, true);
            return FP_WON;
        }
        if (rc != GW_ACCEPT_SPOOLED && rc != GW_ACCEPT_SPOOL_REFUSED) {
            /* for cause: the per-user limit, another key */
            if (!finish(f, fs, owner, e->person, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED))
                return FP_FAILED;
            settle_local(fs, e, false);
            return FP_LOST;
        }
        if (rq.stock_left >= 0)
            *left = rq.stock_left;
        else
            *left -= e->qty;
        if (rc == GW_ACCEPT_SPOOL_REFUSED) {
            snprintf(fs->wl_giveback, sizeof(fs->wl_giveback), "%s", e->order_id);
            if (!finish(f, fs, owner, e->person, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED))
                return FP_FAILED;
            fs->wl_giveback[0] = '\0';
            settle_local(fs, e, false);
            return FP_LOST;
        }
        /* its own record only: another thread's later failed fdatasync is not its to answer */
        gw_accept_commit(&f->accept, &a, 1);
        if (!a.durable)
            return FP_FAILED; /* pending: the next try asks the spool */
    }
    if (!finish(f, fs, owner, e->person, a.o.order_id))
        return FP_FAILED; /* pending and ours: the next try finds it in the spool */
    gw_accept_publish(&f->accept, &a, 1);
    settle_local(fs, e, true);
    cm_log_info("fair", "fleet waitlist promotion", "sale=%s order=%s position=%u%s", fs->sale_id,
                e->order_id, e->pos, a.fresh ? "" : " found=spool");
    return FP_WON;
}

/* Reads the waitlist's state and re-reads the draw when it moved. False on a Redis problem. */
static bool wl_sync(gw_fair_t *f, gw_fair_sale_t *fs, gw_fair_redis_wl_state_t *ws)
{
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    if (!c ||
        !gw_fair__fleet_ok(f, gw_fair_redis_wl_state(c, fs->sale_id, ws, why, sizeof(why)), why))
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
    char why[256] = "", person[INV_USER_ID_MAX + 1], order[INV_ORDER_ID_MAX + 1], w[40];
    bool mine = strcmp(ws->owner, owner) == 0;
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    if (!mine) {
        int a =
            c ? gw_fair_redis_wl_adopt(c, fs->sale_id, owner, FLEET_WL_GRACE_MS, why, sizeof(why))
              : CM_EBACKEND;
        if (!gw_fair__fleet_ok(f, a < 0 ? a : 0, why) || a != 1)
            return false; /* its owner may still come back */
        cm_log_warn("fair", "fleet waitlist: a promotion whose gateway did not come back adopted",
                    "sale=%s owner=%s", fs->sale_id, ws->owner);
    }
    bool found = false;
    c = gw_fair__fleet_conn(f);
    int rc = c ? gw_fair_redis_wl_pending(c, fs->sale_id, &found, person, sizeof(person), order,
                                          sizeof(order), w, sizeof(w), why, sizeof(why))
               : CM_EBACKEND;
    if (!gw_fair__fleet_ok(f, rc, why))
        return false;
    if (!found)
        return true;
    entry_t *e = gw_fair__find_id(fs, order);
    if (!e || e->state != GW_ENTRY_WAITLISTED || strcmp(e->person, person) != 0)
        return finish(f, fs, owner, person, ""); /* no entry waits for it: nothing to do */
    fpromo_t p = promote(f, fs, sale, e, owner, mine, left);
    return p == FP_WON || p == FP_LOST;
}

/*
 * The sale ended. The end is one record in Redis, written only while no
 * promotion is pending: one begun before the end is finished first (by its
 * owner, or adopted after the grace), so whoever reads the end reads its
 * outcome too. Then this gateway reads the draw again (gw_fair__fleet_fetch:
 * the promotions recorded won, every loser still waiting lost). Until both are
 * done (Redis away, a promotion pending) its losers keep waiting: no gateway
 * answers lost a loser that a promotion may still make a winner.
 */
static void wl_end(gw_fair_t *f, gw_fair_sale_t *fs, inv_sale_t *sale, const char *owner,
                   int64_t now, int64_t left)
{
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    int rc = c ? gw_fair_redis_wl_end(c, fs->sale_id, why, sizeof(why)) : CM_EBACKEND;
    fs->wl_retry_ms = now + FLEET_WL_POLL_MS; /* what is not done is tried again then */
    if (!gw_fair__fleet_ok(f, rc < 0 ? rc : 0, why))
        return;
    if (CM_PLANT(WL_FLEET_END_UNREAD) && rc >= 0) {
        /* planted: the waitlisted lost by the last poll, the draw not read again */
        pthread_mutex_lock(&fs->mu);
        for (size_t i = 0; i < fs->ndraw; i++) {
            entry_t *e = &fs->v[fs->perm[i]];
            if (e->state == GW_ENTRY_WAITLISTED) {
                gw_fair__wl_remove(fs, e);
                e->state = GW_ENTRY_LOST;
                fs->lost++;
            }
        }
        fs->wl_ended = true;
        gw_fair__wl_told(fs);
        pthread_mutex_unlock(&fs->mu);
        return;
    }
    if (rc == 0) { /* the pending promotion, under the lock; the end at a later tick */
        bool mine = false;
        gw_fair_redis_wl_state_t ws;
        c = gw_fair__fleet_conn(f);
        if (c &&
            gw_fair__fleet_ok(f,
                              gw_fair_redis_wl_lock(c, fs->sale_id, owner, FLEET_WL_LOCK_MS, &mine,
                                                    why, sizeof(why)),
                              why) &&
            mine && wl_sync(f, fs, &ws) && ws.owner[0])
            (void)resolve_pending(f, fs, sale, owner, &ws, &left);
        return;
    }
    gw_fair__fleet_fetch(f, fs);
    if (fs->wl_ended)
        cm_log_info("fair", "sale ended: its fleet waitlist is lost", "sale=%s", fs->sale_id);
}

/* One leftovers event through the sale's machine (its one waitlist core, fs->sale.wl). */
static gw_wl_out_t wl_step(gw_fair_sale_t *fs, gw_wl_ev_t ev, int64_t now)
{
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_WL, .wl = ev}, now, &so);
    return so.wl;
}

void gw_fair__fleet_wl_tick(gw_fair_t *f, gw_fair_sale_t *fs)
{
    /* made while losers wait, so that it exists before this gateway needs it */
    const char *owner = owner_id(f);
    if (!owner)
        return;
    int64_t now = cm_wall_ms();
    inv_sale_t *sale = inv_sale_find(f->srv->stores.inv, fs->sale_id);
    if (!sale)
        return;
    inv_sale_info_t info;
    inv_sale_snapshot(sale, &info);
    /* the end first: every gateway loses its waiters at once */
    gw_wl_out_t out =
        wl_step(fs, (gw_wl_ev_t){.kind = GW_WL_EV_TICK, .left = 1, .pending = true}, now);
    if (out.actions & GW_WL_DO_END) {
        if (now >= fs->wl_retry_ms)
            wl_end(f, fs, sale, owner, now, info.stock_left);
        return;
    }
    if (now < fs->wl_retry_ms || now - fs->wl_polled_ms < FLEET_WL_POLL_MS)
        return;
    fs->wl_polled_ms = now;
    gw_fair_redis_wl_state_t ws;
    if (!wl_sync(f, fs, &ws) || !gw_fair_waitlist_open(fs))
        return;
    int64_t left = info.stock_left;
    out = wl_step(fs,
                  (gw_wl_ev_t){.kind = GW_WL_EV_TICK,
                               .left = left,
                               .acc = info.accepted_units,
                               .version = info.version,
                               .pending = ws.owner[0] != '\0'},
                  now);
    if (!(out.actions & GW_WL_DO_WALK))
        return;
    char why[256] = "";
    bool mine = false;
    inv_fleet_conn_t *c = gw_fair__fleet_conn(f);
    if (!c ||
        !gw_fair__fleet_ok(
            f,
            gw_fair_redis_wl_lock(c, fs->sale_id, owner, FLEET_WL_LOCK_MS, &mine, why, sizeof(why)),
            why) ||
        !mine)
        return;
    /* under the lock: what the last holder did is read first */
    if (!wl_sync(f, fs, &ws) || !gw_fair_waitlist_open(fs))
        return;
    if (ws.owner[0] && !resolve_pending(f, fs, sale, owner, &ws, &left)) {
        fs->wl_retry_ms = now + FLEET_WL_RETRY_MS;
        return;
    }
    /* from the first waiter the fetch under the lock read (gw_fair__fleet_fetch) */
    out = wl_step(fs, (gw_wl_ev_t){.kind = GW_WL_EV_WALK, .left = left, .ndraw = fs->ndraw}, now);
    size_t walked = 0;
    while (out.actions & (GW_WL_DO_LOOK | GW_WL_DO_PROMOTE)) {
        entry_t *e = &fs->v[fs->perm[out.pos]];
        if (out.actions & GW_WL_DO_LOOK) {
            out = wl_step(fs,
                          (gw_wl_ev_t){.kind = GW_WL_EV_ENTRY,
                                       .waitlisted = e->state == GW_ENTRY_WAITLISTED,
                                       .qty = e->qty},
                          now);
            continue;
        }
        gw_wl_ev_t ev = {.kind = GW_WL_EV_PROMOTED, .result = GW_WL_FAILED};
        int b = 0;
        if (++walked % FLEET_WL_RENEW_EVERY == 0) {
            c = gw_fair__fleet_conn(f);
            if (!c ||
                !gw_fair__fleet_ok(
                    f,
                    gw_fair_redis_wl_lock(c, fs->sale_id, owner, FLEET_WL_LOCK_MS, &mine, why, sizeof(why)),
                    why) ||
                !mine)
                b = -1;
        }
        if (b == 0) {
            c = gw_fair__fleet_conn(f);
            b = c ? gw_fair_redis_wl_begin(c, fs->sale_id, owner, e->person, e->order_id, why, sizeof(why))
                  : CM_EBACKEND;
            if (!gw_fair__fleet_ok(f, b < 0 ? b : 0, why))
                b = -1;
        }
        /* b != 1: the lock or the fleet's state moved: read it again (FAILED) */
        if (b == 1) {
            fpromo_t p = promote(f, fs, sale, e, owner, false, &left);
            ev.result = p == FP_WON        ? GW_WL_WON
                        : p == FP_LOST     ? GW_WL_LOST
                        : p == FP_NO_STOCK ? GW_WL_NO_STOCK
                                           : GW_WL_FAILED;
            ev.left = left;
        }
        out = wl_step(fs, ev, now);
    }
    /* the stock the walk last heard from Redis (its PROMOTED's left) is what it saw: a
     * view that lagged (units shown that another gateway had taken) is not taken as
     * seen, or the unit freed next, which shows the same view again, would look
     * unchanged and never be walked for (gw_waitlist_core.c remembers it) */
    gw_fair__wl_pass_end(fs, out.failed ? now + FLEET_WL_RETRY_MS : 0, "fleet");
}
