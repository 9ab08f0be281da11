/*
 * The fleet path's driver and oracle (see sim_fleet.h).
 *
 * A sale on one simulated Redis; NGW gateways (each an inv_t opened on
 * redis:// through the simulated transport, a loop-less worker, the sync
 * thread's work run as a step) take buys from NUSERS users, with and without
 * Idempotency-Keys, retried by the clients after a 503; cancels (inv_release),
 * keyed restocks, gateway crashes (the gateway's in-doubt give-backs are lost
 * with it), and the Redis faults of sim_redis.h. A reserve whose answer was
 * lost is given back later by its gateway (inv_giveback), as the worker
 * loop's doubt list does. Each buy is decided by the real buy core
 * (gateway/buy/gw_buy_core.h, as gw_buy.c's shell runs it): the qty against
 * the limit, the reserve's answer, a keyed retry's order (claimed with
 * inv_claim when another incarnation minted it, 503 in progress when this
 * one did and has not answered it, replayed when this one answered it 202);
 * the fleet's gateways have no spool, so their record's write always succeeds.
 *
 * The oracle (after every step):
 * - the units of the orders answered 202 and not cancelled (nor their release
 *   sent with its answer lost: it may have run) <= the stock as
 *   the acknowledged admin calls left it (plus restocks whose answer was
 *   lost: they may have run) plus the units of 202s a failover lost;
 * - each user's units of such orders <= the limit plus that user's units of
 *   202s a failover lost;
 * - docs/fleet.md's bound on failover: with wait_replicas off, a failover may
 *   lose 202s (counted above: the oversell is at most their units); with
 *   wait_replicas on, none: a 202 missing from the promoted replica fails;
 *   a restart with persistence (appendfsync always) loses none either;
 * - compensation once: a release answered 0 twice for one order, or a
 *   give-back answered 0 for an order answered 202, fails;
 * - Redis's own books (checked every 64 steps and at the end): the stock's
 *   total minus left is the units of its orders hash, each user's units are
 *   the sum of their orders', and (with no failover or restart in the run)
 *   every 202 not cancelled is there and no cancelled one is.
 * A restart without persistence empties Redis: the operator puts the sale
 * back with the stock not yet sold, and the checks start again from there.
 */
#include "sim/sim_fleet.h"

#include "sim/sim_redis.h"
#include "sim/sim_util.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/buy/gw_buy_core.h"
#include "inventory/inv.h"
#include "inventory/inv_redis.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NGW 3
#define NUSERS 10
#define MAX_ORDERS 4096
#define SALE "s1"

enum { O_NONE, O_ACKED, O_CANCELLED, O_LOST };

typedef struct order {
    char id[16];
    int user;
    uint32_t qty;
    char key[16]; /* "" = none */
    int state;
    int epoch;
    bool cancel_sent; /* a release whose answer was lost */
    bool doubt;       /* its reserve's answer was lost: its gateway gives it back */
    int doubt_gw;
    bool retry;       /* keyed, answered 503: the client retries with its key */
    uint64_t ack_failovers; /* failovers before its 202 */
    int gw, gen;            /* the gateway incarnation whose buy minted its id */
    int ack_gw, ack_gen;    /* the one that answered it 202 (its status table knows it) */
} order_t;

typedef struct gw {
    inv_t *inv;
    inv_worker_t *w;
    bool up;
    int gen;        /* its incarnation (a start after a crash is a new one) */
    uv_loop_t loop; /* async: the worker's loop, never run but to close its handles */
} gw_t;

typedef struct world {
    cm_rand_t rng;
    sim_redis_t *rs;
    gw_t gw[NGW];
    order_t *o;
    int no;
    int epoch;
    int64_t stock;         /* as the acknowledged admin calls left it (this epoch) */
    int64_t restock_pending; /* units of restocks whose answer was lost */
    int restock_n;
    int restock_key_pending; /* -1: none */
    int64_t restock_add;
    uint32_t limit;
    int64_t lost_units;
    int64_t lost_user[NUSERS];
    bool lossy; /* a failover or restart since the start */
    bool wait_replicas;
    bool async;     /* the gateways' workers are loops (the buy path), stepped */
    int inflight;   /* async calls not answered yet (fbuy_t) */
    bool sale_lost; /* emptied: the operator puts it back */
    uint64_t step;
    sim_log_t log;
} world_t;

static void gw_down(world_t *wd, int g)
{
    gw_t *G = &wd->gw[g];
    if (!G->up)
        return;
    G->up = false;
    /* a crash: the calls in flight hear "unavailable" (their callbacks run
     * here), the worker's doubts are dropped (no orphan callback), and what
     * the server had read of its connections may still run */
    inv_worker_close(G->w);
    if (wd->async)
        uv_run(&G->loop, UV_RUN_NOWAIT); /* the worker's handles close */
    inv_close(G->inv);
    G->w = NULL;
    G->inv = NULL;
    G->up = false;
    /* its doubts die with it: their units stay held (never an oversell) */
    for (int i = 0; i < wd->no; i++)
        if (wd->o[i].doubt && wd->o[i].doubt_gw == g)
            wd->o[i].doubt = false;
}

static void gw_up(world_t *wd, int g)
{
    gw_t *G = &wd->gw[g];
    if (G->up)
        return;
    char url[160], err[256];
    snprintf(url, sizeof(url),
             "redis://127.0.0.1:6379/?timeout_ms=40&admin_timeout_ms=2000"
             "&breaker_failures=%d&breaker_cooldown_ms=20&wait_replicas=%d&batch=4",
             wd->async ? 5 : 1000, wd->wait_replicas ? 1 : 0);
    if (inv_open(&G->inv, url, NULL, 16, err, sizeof(err)) != 0) {
        sim_trace(&wd->log, "gw%d open failed: %s", g, err);
        G->inv = NULL;
        return;
    }
    if (inv_worker_open(G->inv, wd->async ? &G->loop : NULL, &G->w) != 0) {
        inv_close(G->inv);
        G->inv = NULL;
        return;
    }
    G->up = true;
    G->gen++;
    sim_trace(&wd->log, "gw%d up", g);
}

static int any_up(world_t *wd)
{
    int start = (int)sim_below(&wd->rng, NGW);
    for (int k = 0; k < NGW; k++) {
        int g = (start + k) % NGW;
        if (wd->gw[g].up)
            return g;
    }
    return -1;
}

static order_t *order_new(world_t *wd, int user, uint32_t qty, bool keyed)
{
    if (wd->no == MAX_ORDERS)
        return NULL;
    order_t *o = &wd->o[wd->no];
    memset(o, 0, sizeof(*o));
    snprintf(o->id, sizeof(o->id), "o%d", wd->no);
    if (keyed)
        snprintf(o->key, sizeof(o->key), "k%d", wd->no);
    o->user = user;
    o->qty = qty;
    o->epoch = wd->epoch;
    wd->no++;
    return o;
}

static order_t *order_by_id(world_t *wd, const char *id)
{
    if (id[0] != 'o')
        return NULL;
    int i = atoi(id + 1);
    return i >= 0 && i < wd->no ? &wd->o[i] : NULL;
}

static void ack(world_t *wd, order_t *o, int g)
{
    if (o->state == O_ACKED)
        return;
    if (o->state != O_NONE) {
        sim_fail(&wd->log, "order %s answered 202 in state %d", o->id, o->state);
        return;
    }
    o->state = O_ACKED;
    o->ack_gw = g;
    o->ack_gen = wd->gw[g].gen;
    o->ack_failovers = sim_redis_stats(wd->rs)->failovers;
    wd->log.res->accepted++;
}

/*
 * The buy through the real core (gateway/buy/gw_buy_core.h), as gw_buy.c's
 * shell runs it: the sale's terms, the qty against the limit, the reserve,
 * a keyed retry's order (minted by this incarnation? known durable here?),
 * its claim, then the spool write, which the fleet's gateways, without a
 * spool, always get done (durability write: 202 at once).
 */
typedef struct fbuy {
    gw_buy_core_t core;
    gw_buy_out_t out;
    inv_reserve_req_t req;
    world_t *wd;
    int g;
    int order;      /* wd->o index of the buy */
    int orig;       /* a keyed retry's order (wd->o index), -1: none */
    bool reserving; /* the answer awaited is the reserve's (else the claim's) */
} fbuy_t;

/* The core's answer: what the client hears, what the oracle learns. */
static void fbuy_answer(world_t *wd, fbuy_t *b)
{
    order_t *o = &wd->o[b->order];
    order_t *orig = b->orig >= 0 ? &wd->o[b->orig] : NULL;
    if (!o) /* (never: clang-analyzer follows order_new's NULL for a full table here) */
        return;
    if (b->out.actions & GW_BUY_DO_SPOOL) /* the record written */
        gw_buy_core_step(&b->core, &(gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = 0}, 0,
                         &b->out);
    gw_buy_answer_t a = b->out.answer;
    sim_trace(&wd->log, "gw%d buy %s -> %s%s%s", b->g, o->id, gw_buy_answer_name(a),
              orig ? " of " : "", orig ? orig->id : "");
    switch (a) {
    case GW_BUY_A_ACCEPTED:
        ack(wd, o, b->g);
        return;
    case GW_BUY_A_REPLAYED:
        /* a lost release or a failover brought a cancelled one back: no new 202 */
        if (orig && orig->state == O_NONE)
            ack(wd, orig, b->g);
        return;
    case GW_BUY_A_INV_FAILED:
        if (b->reserving && !wd->async) { /* it may have run: its gateway gives it back */
            o->doubt = true;
            o->doubt_gw = b->g;
        }
        o->retry = o->key[0] != '\0'; /* (async: the worker's doubt list gives it back) */
        return;
    case GW_BUY_A_IN_PROGRESS:
    case GW_BUY_A_KEY_GIVEN_BACK:
        o->retry = o->key[0] != '\0'; /* told to try again */
        return;
    default: /* 409, 410, 404: final */
        return;
    }
}

/* The reserve's answer (RESERVED); true if a claim is now in flight (async). */
static bool fbuy_reserved(world_t *wd, fbuy_t *b, int rc)
{
    gw_buy_ev_t ev = {.kind = GW_BUY_EV_RESERVED, .rc = rc};
    if (rc == INV_DUPLICATE) {
        order_t *o = &wd->o[b->order];
        order_t *orig = order_by_id(wd, b->req.order_id);
        if (!orig || strcmp(orig->key, o->key) != 0 || orig->user != o->user) {
            sim_fail(&wd->log, "a duplicate of %s found order %s, not one of its key", o->id,
                     b->req.order_id);
            return false;
        }
        gw_t *G = &wd->gw[b->g];
        b->orig = (int)(orig - wd->o);
        /* gw_buy.c duplicate_facts: minted by this incarnation (the id's node
         * and time); known durable here (the status table: this incarnation
         * answered it 202) */
        ev.ours = orig->gw == b->g && orig->gen == G->gen;
        ev.seen = orig->state == O_ACKED && orig->ack_gw == b->g && orig->ack_gen == G->gen
                      ? GW_BUY_SEEN_FOUND
                      : GW_BUY_SEEN_UNKNOWN;
        ev.claimed = b->req.claimed;
    }
    gw_buy_core_step(&b->core, &ev, cm_wall_ms(), &b->out);
    if (!(b->out.actions & GW_BUY_DO_CLAIM)) {
        fbuy_answer(wd, b);
        return false;
    }
    b->reserving = false;
    if (!wd->gw[b->g].up) { /* the gateway is gone: the client hears nothing */
        wd->o[b->order].retry = wd->o[b->order].key[0] != '\0';
        return false;
    }
    int c = inv_claim(wd->gw[b->g].w, &b->req);
    sim_trace(&wd->log, "gw%d claim %s -> %d", b->g, b->req.order_id, c);
    if (c == INV_PENDING)
        return true;
    gw_buy_core_step(&b->core, &(gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = c}, cm_wall_ms(),
                     &b->out);
    fbuy_answer(wd, b);
    return false;
}

/* An asynchronous call's answer: from the server's turn
 * (sim_redis_async_step), a worker's timer, or its close. */
static void fbuy_done(inv_reserve_req_t *req, int outcome)
{
    fbuy_t *b = (fbuy_t *)(void *)((char *)req - offsetof(fbuy_t, req));
    world_t *wd = b->wd;
    sim_trace(&wd->log, "gw%d %s %s answered %d", b->g, b->reserving ? "buy" : "claim",
              wd->o[b->order].id, outcome);
    if (b->reserving) {
        if (fbuy_reserved(wd, b, outcome))
            return; /* its claim is in flight */
    } else {
        gw_buy_core_step(&b->core, &(gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = outcome},
                         cm_wall_ms(), &b->out);
        fbuy_answer(wd, b);
    }
    wd->inflight--;
    free(b);
}

/* A buy (or a client's keyed retry of `retry_of`) through gateway g. */
static void buy(world_t *wd, int g, order_t *retry_of)
{
    gw_t *G = &wd->gw[g];
    inv_sale_t *s = inv_sale_find(G->inv, SALE);
    if (!s)
        return;
    int user = retry_of ? retry_of->user : (int)sim_below(&wd->rng, NUSERS);
    uint32_t qty = retry_of ? retry_of->qty : 1 + sim_below(&wd->rng, 2);
    order_t *o = order_new(wd, user, qty, false);
    if (!o)
        return;
    o->gw = g;
    o->gen = G->gen;
    if (retry_of)
        memcpy(o->key, retry_of->key, sizeof(o->key));
    else if (sim_chance(&wd->rng, 0.7))
        snprintf(o->key, sizeof(o->key), "k%d", (int)(o - wd->o));
    if (retry_of)
        retry_of->retry = false;
    fbuy_t *b = cm_xcalloc(1, sizeof(*b));
    b->wd = wd;
    b->g = g;
    b->order = (int)(o - wd->o);
    b->orig = -1;
    b->reserving = true;
    gw_buy_core_init(&b->core, false);
    /* the head, the buyer, the limits (gw_buy.c: the sale's local view) */
    inv_sale_terms_t terms;
    inv_sale_terms(s, &terms);
    int64_t now = cm_wall_ms();
    gw_buy_core_step(&b->core,
                     &(gw_buy_ev_t){.kind = GW_BUY_EV_HEAD,
                                    .fair = GW_BUY_FAIR_OPEN,
                                    .starts_at_ms = terms.starts_at_ms,
                                    .ends_at_ms = terms.ends_at_ms},
                     now, &b->out);
    if (b->out.answer == GW_BUY_A_NONE)
        gw_buy_core_step(&b->core,
                         &(gw_buy_ev_t){.kind = GW_BUY_EV_BUYER,
                                        .qty = qty,
                                        .per_user_limit = terms.per_user_limit},
                         now, &b->out);
    if (b->out.answer == GW_BUY_A_NONE)
        gw_buy_core_step(&b->core,
                         &(gw_buy_ev_t){.kind = GW_BUY_EV_LIMITS,
                                        .rate_allowed = true,
                                        .fair = GW_BUY_FAIR_OPEN},
                         now, &b->out);
    if (!(b->out.actions & GW_BUY_DO_RESERVE)) {
        fbuy_answer(wd, b);
        free(b);
        return;
    }
    inv_reserve_req_t *req = &b->req;
    req->sale = s;
    snprintf(req->user_id, sizeof(req->user_id), "u%d", user);
    req->qty = qty;
    snprintf(req->idem_key, sizeof(req->idem_key), "%s", o->key);
    snprintf(req->order_id, sizeof(req->order_id), "%s", o->id);
    if (wd->async) {
        req->done = fbuy_done;
        wd->inflight++;
        int rc = inv_reserve(G->w, req);
        sim_trace(&wd->log, "gw%d buy %s u%d qty=%u key=%s -> %d", g, o->id, user, qty, o->key, rc);
        if (rc != INV_PENDING)
            fbuy_done(req, rc);
        return;
    }
    int rc = inv_reserve(G->w, req);
    sim_trace(&wd->log, "gw%d buy %s u%d qty=%u key=%s -> %d", g, o->id, user, qty, o->key, rc);
    (void)fbuy_reserved(wd, b, rc);
    free(b);
}

static void cancel(world_t *wd, int g, order_t *o)
{
    char user[16];
    snprintf(user, sizeof(user), "u%d", o->user);
    int rc = inv_release(wd->gw[g].inv, SALE, user, o->qty, o->id);
    sim_trace(&wd->log, "gw%d cancel %s -> %d", g, o->id, rc);
    if (rc == 0) {
        if (o->state == O_CANCELLED)
            sim_fail(&wd->log, "order %s compensated twice", o->id);
        o->state = O_CANCELLED;
        o->cancel_sent = false;
    } else if (rc == CM_ENOTFOUND) {
        if (o->cancel_sent || wd->lossy) {
            o->state = O_CANCELLED;
            o->cancel_sent = false;
        } else {
            sim_fail(&wd->log, "order %s answered 202 is unknown to Redis at its cancel", o->id);
        }
    } else {
        o->cancel_sent = true;
    }
}

static void giveback(world_t *wd, order_t *o)
{
    gw_t *G = &wd->gw[o->doubt_gw];
    if (!G->up)
        return;
    char user[16];
    snprintf(user, sizeof(user), "u%d", o->user);
    int rc = inv_giveback(G->inv, SALE, user, o->qty, o->id);
    sim_trace(&wd->log, "gw%d giveback %s -> %d", o->doubt_gw, o->id, rc);
    if (rc == 0 && o->state == O_ACKED) {
        /* its claim mark (not its reserve) lost in a failover without wait_replicas:
         * the oversell docs/fleet.md allows, counted as a lost 202 */
        if (!wd->wait_replicas && sim_redis_stats(wd->rs)->failovers > o->ack_failovers) {
            o->state = O_LOST;
            wd->lost_units += o->qty;
            wd->lost_user[o->user] += o->qty;
        } else {
            sim_fail(&wd->log, "order %s answered 202 was given back", o->id);
        }
    }
    if (rc == 0 || rc == CM_ENOTFOUND || rc == CM_ECONFLICT)
        o->doubt = false;
}

static void restock(world_t *wd, int g)
{
    if (wd->restock_key_pending < 0) {
        wd->restock_key_pending = wd->restock_n++;
        wd->restock_add = 1 + sim_below(&wd->rng, 3);
        wd->restock_pending = wd->restock_add;
    }
    char key[16], err[128];
    snprintf(key, sizeof(key), "r%d", wd->restock_key_pending);
    inv_sale_info_t info;
    int rc = inv_restock_keyed(wd->gw[g].inv, SALE, wd->restock_add, key, &info, err,
                               sizeof(err));
    sim_trace(&wd->log, "gw%d restock %s +%" PRId64 " -> %d", g, key, wd->restock_add, rc);
    if (rc == 0 || rc == INV_RESTOCK_REPLAYED) {
        wd->stock += wd->restock_add;
        wd->restock_pending = 0;
        wd->restock_key_pending = -1;
    }
}

/* The operator's (re)creation of the sale: true once Redis has it. */
static bool put_sale(world_t *wd, int g, int64_t stock)
{
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), SALE);
    def.stock = stock;
    def.per_user_limit = wd->limit;
    def.starts_at_ms = 0;
    def.ends_at_ms = 0;
    char err[128];
    inv_sale_info_t info;
    int rc = inv_sale_put(wd->gw[g].inv, &def, &info, err, sizeof(err));
    sim_trace(&wd->log, "gw%d put sale stock=%" PRId64 " -> %d %s", g, stock, rc, rc ? err : "");
    return rc == 0;
}

static int64_t live_units(world_t *wd, int user)
{
    int64_t n = 0;
    for (int i = 0; i < wd->no; i++) {
        const order_t *o = &wd->o[i];
        /* a release whose answer was lost may have run: its units may be sold again */
        if (o->epoch == wd->epoch && (o->state == O_ACKED || o->state == O_LOST) &&
            !o->cancel_sent && (user < 0 || o->user == user))
            n += o->qty;
    }
    return n;
}

/*
 * A 202 not cancelled that Redis no longer holds: given back (by a driver's
 * inv_giveback or a worker loop's doubt list), or released twice. Allowed
 * only as docs/fleet.md's failover loss (wait_replicas off: its claim mark
 * lost, so a give-back released it), then counted as lost.
 */
static void check_held(world_t *wd, order_t *o)
{
    if (wd->sale_lost || sim_redis_hget(wd->rs, "{sale:" SALE "}:orders", o->id))
        return;
    if (!wd->wait_replicas && sim_redis_stats(wd->rs)->failovers > o->ack_failovers) {
        o->state = O_LOST;
        wd->lost_units += o->qty;
        wd->lost_user[o->user] += o->qty;
        sim_trace(&wd->log, "failover lost %s's claim; given back (%u units)", o->id, o->qty);
        return;
    }
    sim_fail(&wd->log, "order %s answered 202 is no longer held (given back or released)", o->id);
}

static void check_bounds(world_t *wd)
{
    int64_t user[NUSERS] = {0};
    int64_t held = 0;
    for (int i = 0; i < wd->no; i++) { /* live_units, all users in one pass */
        order_t *o = &wd->o[i];
        if (o->epoch == wd->epoch && o->state == O_ACKED && !o->cancel_sent)
            check_held(wd, o);
        if (o->epoch == wd->epoch && (o->state == O_ACKED || o->state == O_LOST) &&
            !o->cancel_sent) {
            held += o->qty;
            user[o->user] += o->qty;
        }
    }
    if (held > wd->stock + wd->restock_pending + wd->lost_units)
        sim_fail(&wd->log,
                 "oversold: %" PRId64 " units answered 202 of a stock of %" PRId64 " (+%" PRId64
                 " in doubt, +%" PRId64 " lost in failovers)",
                 held, wd->stock, wd->restock_pending, wd->lost_units);
    for (int u = 0; u < NUSERS; u++) {
        int64_t h = user[u];
        if (h > (int64_t)wd->limit + wd->lost_user[u])
            sim_fail(&wd->log,
                     "user u%d holds %" PRId64 " units answered 202, limit %u (+%" PRId64
                     " lost in failovers)",
                     u, h, wd->limit, wd->lost_user[u]);
    }
}

/* After a failover or a restart with persistence: which 202s did Redis lose? */
static void find_lost(world_t *wd, const char *what, bool may_lose)
{
    for (int i = 0; i < wd->no; i++) {
        order_t *o = &wd->o[i];
        if (o->epoch != wd->epoch || o->state != O_ACKED || o->cancel_sent)
            continue;
        if (sim_redis_hget(wd->rs, "{sale:" SALE "}:orders", o->id))
            continue;
        if (!may_lose) {
            sim_fail(&wd->log, "order %s answered 202 is gone after a %s%s", o->id, what,
                     wd->wait_replicas ? " with wait_replicas on" : "");
            return;
        }
        o->state = O_LOST;
        wd->lost_units += o->qty;
        wd->lost_user[o->user] += o->qty;
        sim_trace(&wd->log, "%s lost %s (%u units)", what, o->id, o->qty);
    }
}

typedef struct books {
    int64_t units;
    int64_t user[NUSERS];
    world_t *wd;
} books_t;

static void books_order(const char *field, const char *val, void *ctx)
{
    books_t *b = ctx;
    int u = -1;
    unsigned q = 0;
    if (sscanf(val, "u%d %u", &u, &q) != 2 || u < 0 || u >= NUSERS) {
        sim_fail(&b->wd->log, "orders hash: %s -> '%s' is not an order", field, val);
        return;
    }
    b->units += q;
    b->user[u] += q;
}

static void check_books(world_t *wd, bool final)
{
    const char *tot = sim_redis_hget(wd->rs, "{sale:" SALE "}:meta", "total");
    const char *left = sim_redis_hget(wd->rs, "{sale:" SALE "}:meta", "left");
    if (!tot || !left)
        return;
    books_t b = {.wd = wd};
    sim_redis_hforeach(wd->rs, "{sale:" SALE "}:orders", books_order, &b);
    if (atoll(tot) - atoll(left) != b.units)
        sim_fail(&wd->log, "Redis's books: total %s - left %s != %" PRId64 " units in its orders",
                 tot, left, b.units);
    for (int u = 0; u < NUSERS; u++) {
        char f[8];
        snprintf(f, sizeof(f), "u%d", u);
        const char *h = sim_redis_hget(wd->rs, "{sale:" SALE "}:users", f);
        if ((h ? atoll(h) : 0) != b.user[u])
            sim_fail(&wd->log, "Redis's books: user %s holds %s, its orders %" PRId64, f,
                     h ? h : "0", b.user[u]);
    }
    if (!final || wd->lossy)
        return;
    for (int i = 0; i < wd->no; i++) {
        const order_t *o = &wd->o[i];
        bool there = sim_redis_hget(wd->rs, "{sale:" SALE "}:orders", o->id) != NULL;
        if (o->state == O_ACKED && !o->cancel_sent && !there)
            sim_fail(&wd->log, "order %s answered 202 is not held at the end", o->id);
        if (o->state == O_CANCELLED && there)
            sim_fail(&wd->log, "order %s cancelled is still held at the end", o->id);
    }
}

static order_t *pick(world_t *wd, bool (*want)(const order_t *o))
{
    if (wd->no == 0)
        return NULL;
    int start = (int)sim_below(&wd->rng, (uint32_t)wd->no);
    for (int k = 0; k < wd->no; k++) {
        order_t *o = &wd->o[(start + k) % wd->no];
        if (want(o))
            return o;
    }
    return NULL;
}

static bool want_retry(const order_t *o)
{
    return o->retry;
}

static bool want_doubt(const order_t *o)
{
    return o->doubt;
}

static bool want_cancel(const order_t *o)
{
    return o->state == O_ACKED || o->cancel_sent;
}

static bool want_cancel_sent(const order_t *o)
{
    return o->cancel_sent && o->state == O_ACKED;
}

static void redis_faults(world_t *wd)
{
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    if (sim_chance(&wd->rng, 0.5))
        sim_redis_replicate_one(wd->rs);
    if (sim_chance(&wd->rng, 0.1))
        sim_redis_replicate(wd->rs);
    if (sim_chance(&wd->rng, 0.02))
        f->replica_lags = !f->replica_lags;
    if (sim_chance(&wd->rng, f->down ? 0.2 : 0.005)) {
        f->down = !f->down;
        sim_trace(&wd->log, "redis %s", f->down ? "down" : "up");
    }
    if (sim_chance(&wd->rng, 0.003)) {
        sim_trace(&wd->log, "redis failover");
        sim_redis_failover(wd->rs);
        wd->lossy = true;
        find_lost(wd, "failover", !wd->wait_replicas);
    } else if (sim_chance(&wd->rng, 0.002)) {
        sim_trace(&wd->log, "redis restart with persistence");
        sim_redis_restart(wd->rs, true);
        wd->lossy = true;
        find_lost(wd, "restart with persistence", false);
    } else if (sim_chance(&wd->rng, 0.0007)) {
        sim_trace(&wd->log, "redis restart without persistence");
        sim_redis_restart(wd->rs, false);
        wd->lossy = true;
        /* the operator puts back the stock not sold (from the database) */
        wd->stock -= live_units(wd, -1);
        wd->epoch++;
        wd->lost_units = 0;
        memset(wd->lost_user, 0, sizeof(wd->lost_user));
        wd->sale_lost = true;
        wd->restock_pending = 0; /* its key went with the keyspace */
        wd->restock_key_pending = -1;
    }
}

static void step(world_t *wd, bool heal)
{
    wd->step++;
    wd->log.res->steps++;
    cm_time_advance_fake((1 + sim_below(&wd->rng, 3)) * 1000000ull);
    sim_redis_step(wd->rs, wd->step);
    if (!heal)
        redis_faults(wd);
    if (wd->async) {
        /* the loops' timers, then the server's turn: replies reach their callbacks */
        for (int k = 0; k < NGW; k++)
            if (wd->gw[k].up)
                inv_redis_worker_step(wd->gw[k].w);
        sim_redis_async_step(wd->rs);
    }
    int g = any_up(wd);
    if (g < 0 || sim_chance(&wd->rng, 0.02)) {
        int k = (int)sim_below(&wd->rng, NGW);
        if (wd->gw[k].up && !heal && sim_chance(&wd->rng, 0.6)) {
            sim_trace(&wd->log, "gw%d crash", k);
            wd->log.res->crashes++;
            gw_down(wd, k);
        } else {
            gw_up(wd, k);
        }
        return;
    }
    if (wd->sale_lost) {
        if (put_sale(wd, g, wd->stock))
            wd->sale_lost = false;
        return;
    }
    uint32_t a = sim_below(&wd->rng, 100);
    order_t *o;
    if (a < 45) {
        /* async: a few buys in one loop iteration, for one batch */
        for (uint32_t n = wd->async ? 1 + sim_below(&wd->rng, 3) : 1; n && !heal && wd->log.res->ok;
             n--)
            buy(wd, g, NULL);
    } else if (a < 60) {
        if ((o = pick(wd, want_retry)))
            buy(wd, g, o);
    } else if (a < 70) {
        if (!heal && (o = pick(wd, want_cancel)))
            cancel(wd, g, o);
        else if (heal && (o = pick(wd, want_cancel_sent)))
            cancel(wd, g, o);
    } else if (a < 80) {
        if ((o = pick(wd, want_doubt)))
            giveback(wd, o);
    } else if (a < 85) {
        if (!heal || wd->restock_key_pending >= 0)
            restock(wd, g);
    } else if (a < 92) {
        inv_redis_sync_step(wd->gw[g].inv);
    }
    if (wd->async) /* the prepare phase: what this iteration queued goes out */
        for (int k = 0; k < NGW; k++)
            if (wd->gw[k].up)
                inv_flush(wd->gw[k].w);
    check_bounds(wd);
    if ((wd->step & 63) == 0)
        check_books(wd, false);
}

void sim_fleet_run(const sim_opts_t *opts, sim_result_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ok = true;
    world_t *wd = cm_xcalloc(1, sizeof(*wd));
    wd->log =
        (sim_log_t){.trace = opts->trace, .res = out, .name = "fleet step ", .clock = &wd->step};
    cm_rand_seed(&wd->rng, opts->seed ^ 0x5eed4ed15ull);
    /* every other run of 8 seeds: the worker loops (the buy path), stepped */
    wd->async = (opts->seed >> 3) & 1;
    for (int g = 0; wd->async && g < NGW; g++)
        uv_loop_init(&wd->gw[g].loop);
    wd->rs = sim_transport_new(&wd->rng, wd->async);
    wd->o = cm_xcalloc(MAX_ORDERS, sizeof(*wd->o));
    wd->wait_replicas = sim_chance(&wd->rng, 0.5);
    wd->limit = 1 + sim_below(&wd->rng, 3);
    wd->stock = 5 + sim_below(&wd->rng, 25);
    wd->restock_key_pending = -1;
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    cm_time_set_fake(true, 1000000000ull, 1700000000000LL);
    for (int g = 0; g < NGW; g++)
        gw_up(wd, g);
    sim_trace(&wd->log, "fleet: stock=%" PRId64 " limit=%u wait_replicas=%d async=%d", wd->stock,
              wd->limit, wd->wait_replicas, wd->async);
    if (!put_sale(wd, 0, wd->stock)) {
        sim_fail(&wd->log, "the sale could not be created");
        goto out;
    }
    sim_redis_replicate(wd->rs);
    for (int g = 0; g < NGW; g++)
        inv_redis_sync_step(wd->gw[g].inv);
    f->p_timeout = 0.01 * sim_below(&wd->rng, 6);
    f->p_lost = 0.01 * sim_below(&wd->rng, 6);
    uint64_t n = opts->steps / 8 > 100 ? opts->steps / 8 : 100;
    for (uint64_t i = 0; i < n && out->ok; i++)
        step(wd, false);
    /* heal: every fault off, every gateway back, the clients' retries and the
     * gateways' give-backs run to the end */
    *f = (sim_redis_faults_t){0};
    sim_redis_replicate(wd->rs);
    for (int g = 0; g < NGW; g++)
        gw_up(wd, g);
    for (uint64_t i = 0; i < 400 && out->ok; i++)
        step(wd, true);
    check_books(wd, true);
out:
    for (int g = 0; g < NGW; g++)
        gw_down(wd, g);
    for (int g = 0; wd->async && g < NGW; g++)
        uv_loop_close(&wd->gw[g].loop);
    if (wd->inflight)
        sim_fail(&wd->log, "%d calls never answered", wd->inflight);
    cm_time_set_fake(false, 0, 0);
    out->crashes += sim_redis_stats(wd->rs)->restarts + sim_redis_stats(wd->rs)->failovers;
    sim_transport_free(wd->rs);
    free(wd->o);
    free(wd);
}
