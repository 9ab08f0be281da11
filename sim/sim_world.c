/*
 * The simulated sale (sim_world.h, docs/simulation.md).
 *
 * Real code: the memory inventory (inventory/inv.h) with its yield points
 * (common/cm_yield.h: sim_yield runs a restock there), or on some gateways
 * (--redis, seeds 28 mod 32) the Redis inventory (inventory/inv_redis_*.c, its
 * Lua scripts run by sim_redis.c, a loop-less worker, the sync thread's work
 * stepped) with lost and late replies, outages and restarts of Redis, the
 * relay deleting the segments it released, and the releaser's queue
 * (gw_release.c: a failed release retried, the relay's release_pending); the
 * spool and its
 * recovery (queue/oq_spool.h) on sim_disk, the order codec, settlement's
 * batch writer and settle step (st_batch_write, st_sink_settle) on sim_sink,
 * settle's consumer loop as its stepped core (settle/st_loop.h: a batch's
 * write, outcomes with the real st_outcome_format, offsets, a crash possible
 * between any two), the start-up replay, the outcomes' decision and
 * compensation (gateway/buy/gw_replay.h: gw_replay_one, gw_outcome_take,
 * gw_comp_check, gw_comp_release) on the gateway's status table here (a
 * gw_book_t), the start-window lottery, the product's own: configured by
 * the admin's gw_fair_configure (the slot, its secret, its log, fair.json
 * saved), opened at each start by gw_fair_open (fair.json read back, the
 * slot, gw_fair__log_load, gw_fair__cut_winners), entered by gw_fair_enter
 * and drawn by gw_fair__run_draw over gw_fair__draw_local, paused by the
 * world between steps (lot_configure, lot_open, lot_buy and lottery_step
 * call them; one term set by hand: no waitlist), its entry log a journal on
 * the gateway's sim_disk
 * beside its spool through the journal's file table (sim_journal_fs.h:
 * kills, deaths in a write, power losses, failed fdatasyncs, a full disk),
 * its winners accepted by buy's accept sequence (gw_acceptor: gw_accept.c's
 * take, commit, publish and find over the process's inventory and spool, a
 * refused winner's give-back through the real releaser, stepped), the oracle
 * watching each call, the buy's decision
 * (gw_buy_core.h: the sale's window, the reserve's and the spool's results,
 * the keyed retries; do_buy is its shell here, as buy_handle is in gw_buy.c).
 * The admin's sale edits (do_sale_edit, do_restock: a simulated operator)
 * through the admin API's core (gateway/buy/gw_sale_edit.h: gw_sale_edit)
 * and the real inv_restock.
 * The relay is the real one (oq_relay.c), stepped (oq_relay_step: its
 * producer, releaser and consumer turns run from the driver), on the
 * simulated broker below through its broker table (queue/oq_broker.h):
 * per-partition order, a random partition's oldest message moved at a
 * time, duplicates on a retried produce, refused produces, down and back,
 * a failed delivery past message.timeout.ms.
 * Processes end by kill -9, power loss, death inside a call, or a graceful
 * stop (gw_stop, gw_drain, settle_stop: SIGTERM, the stop's HTTP rules of
 * gateway/base/gw_drain.h — /readyz 503, the drain grace in simulated time,
 * a request after it on a kept-alive connection refused and closed — then
 * the shutdown's calls in the real order, the relay's flush waiting in
 * simulated time).
 */
#include "sim/sim_world.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "common/cm_yield.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "gateway/base/gw_drain.h"
#include "gateway/buy/gw_accept.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_buy_core.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_replay.h"
#include "gateway/buy/gw_sale_core.h"
#include "gateway/buy/gw_sale_edit.h"
#include "inventory/inv.h"
#include "inventory/inv_redis.h"
#include "queue/oq_broker.h"
#include "queue/oq_order.h"
#include "queue/oq_relay.h"
#include "queue/oq_spool.h"
#include "settle/st_loop.h"
#include "settle/st_settle.h"
#include "settle/st_sink.h"
#include "sim/sim_disk.h"
#include "sim/sim_journal_fs.h"
#include "sim/sim_redis.h"
#include "sim/sim_room.h"
#include "sim/sim_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NG_MAX 3
#define NU_MAX 48
#define NPART 3
#define ORD_MAX 8192
#define MSG_TIMEOUT_MS 40 /* the relay's message.timeout.ms, simulated */
#define REWIND_BACKOFF_MS 20 /* the relay's back-off after a failed delivery (product: 1000) */
#define HEAL_STEPS_MAX 60000

enum { ST_NONE = 0, ST_QUEUED, ST_SETTLED, ST_FAILED, ST_CANCELLED };
enum { O_FREE = 0, O_APPENDED, O_ACKED, O_REFUSED };

/* What the oracle knows of one order id. */
typedef struct ord {
    uint8_t gw, user, qty, state;
    uint8_t limit_at; /* the per-user limit in force when it was reserved */
    uint32_t rseq;    /* when it was reserved (the world's count of reservations) */
    bool exempt;      /* durability write and a power loss since its 202, or its record
                         evicted with the copy's process gone (copies_gone): may be lost */
    bool cut_unsure;  /* answered 503 "not confirmed" by a spool whose cut failed: may come back */
    bool gb_durable;  /* Redis: its give-back's event is durable in the spool (replayed if need be) */
    bool in_topic;
    uint32_t key; /* the client's idempotency key number, 0 = none */
    uint8_t db;   /* the committed status in the database (ST_*) */
    uint32_t gen; /* the incarnation of its gateway that reserved it by a buy (gw_t.gen) */
    oq_pos_t rec_end; /* where its buy's spool record ends ({0,0}: none written) */
    uint32_t rec_gen; /* the incarnation of its gateway that wrote that record */
} ord_t;

/* A delivery report waiting for the relay's poll. */
typedef struct rep {
    uint64_t token;
    bool ok;
    int32_t partition;
    int64_t offset;
} rep_t;

/* The start-window lottery on one gateway's sale: the product's own
 * (gw_fair_configure once, gw_fair_open at each start; gw_lottery.c:
 * gw_fair_enter, gw_fair__run_draw over gw_fair__draw_local), its entry
 * log <sale>.log a journal (common/cm_journal.h) on the gateway's disk
 * beside its spool through the journal's file table (sim_journal_fs.h);
 * its accept sequence buy's (gw_acceptor), watched (obs_take and the
 * others). */
typedef struct lottery {
    bool on;
    int64_t closes_ms;    /* the entry window closes (the sale's start + fair.json's window) */
    cm_hash_key_t secret; /* the oracle's copy of fair.json's */
    /* process memory: the server's parts the fairness module reads, the
     * module (NULL: down) and the sale's slot */
    gw_config_t cfg;
    gw_server_t srv;
    gw_fair_t *f;
    gw_fair_sale_t *fs;
    /* one step of the draw's thread: the entrants it may still draw (then
     * it pauses: sim_draw_step), the entrants' outcomes before it, those it
     * tried to accept */
    uint32_t budget;
    uint8_t pre[NU_MAX];
    bool tried[NU_MAX];
    /* the oracle */
    bool o_seeded, o_done;
    uint64_t o_seed, o_units_back;
    uint8_t o_order[NU_MAX]; /* the users in draw order, as first drawn */
    size_t o_ndraw;
    int64_t o_stock;
    uint32_t o_limit;
    uint32_t o_entry[NU_MAX]; /* the entry id each user was answered "entered" with */
    uint8_t o_won[NU_MAX];    /* GW_ENTRY_WON or _LOST: what each entrant was told once drawn */
    bool o_told_lost[NU_MAX]; /* decided lost once the stock ran out (a status poll says so) */
    uint8_t o_told[NU_MAX];   /* fsync durability: the outcome a status poll answered (WON or
                                 LOST; 0: none yet; UINT8_MAX: its commit failed), which no
                                 power loss may change */
    bool o_held_lost[NU_MAX]; /* its winner's commit failed: lost, its units stay held */
    bool o_power;             /* a power loss before the seed: entries may be lost, by design */
    bool o_inexact;           /* a winner's commit failed (it lost, its units stay held), the spool
                                 refused one (it lost for cause), or a power loss under write
                                 durability cut the draw: its counts are not exact */
} lottery_t;

/* One buy in flight (do_buy): the real core's state and what the client sent. */
typedef struct buy {
    gw_buy_core_t core;
    uint32_t n; /* the order this buy is about (its own, or its key's) */
    uint32_t u, key, qty;
    bool own;      /* n is this request's own new order */
    bool answered; /* the client heard an answer (a later one goes nowhere) */
    int64_t held_before; /* the sale's accepted units before its reserve */
} buy_t;

/* A release the inventory failed (Redis down, a timeout): the releaser's
 * (gw_release.c) to retry until the inventory says done. */
typedef struct rel {
    oq_order_t o;
    int final_status; /* oq_status_t to set once done, or -1 */
} rel_t;

typedef struct waiter {
    buy_t buy;
    oq_pos_t end; /* where its record ends: its sync waits for it (gw_buy.c sync_after) */
} waiter_t;

typedef struct gw {
    struct world *wd;
    int idx;
    bool up;
    bool redis;     /* the Redis inventory on the world's simulated Redis (else memory) */
    /* a graceful stop under way (gw_drain.h): SIGTERM seen (leaving) until
     * grace_end_ms, then gw_server_stop (draining); keepalive: the connections
     * still open from before, each with one more request to come */
    bool leaving, draining;
    uint64_t grace_end_ms;
    uint8_t keepalive;
    bool sale_made; /* Redis: the operator created its sale there */
    rel_t *rel;     /* the releaser's queue (process memory) */
    size_t nrel, caprel;
    sim_disk_t *disk;
    uint64_t disk_cap; /* its capacity (0: no full disk) */
    oq_spool_t *sp;
    inv_t *inv;
    inv_worker_t *w;
    inv_sale_t *sale;
    char sale_id[16];
    int64_t stock_total;        /* sales.json: survives a crash */
    uint32_t limit, max_limit;  /* the per-user limit now (sales.json), the highest it was */
    int64_t starts_ms, ends_ms; /* the sale's window now (sales.json; 0: open, no end) */
    bool power_lost_write;      /* durability write lost a tail (a power loss, or records
                                   evicted with their copy's process: copies_gone): the end
                                   count may differ */
    /* the relay (process memory): the real one, stepped; the delivery
     * reports its producer has not polled; its consumer's place in the
     * outcomes topic (read from the beginning at every start) */
    oq_relay_t *relay;
    bool on_settle; /* release on settle (else on delivery, an external cluster's mode) */
    rep_t *reps;
    size_t nreps, capreps;
    uint32_t gen;
    size_t out_cur;
    /* the gateway's status table (process memory), the cores' order table
     * (gw_book_t): bounded, so some orders are not in it after a start */
    uint8_t status[ORD_MAX];
    gw_book_t book;
    bool replaying;
    uint64_t units_back; /* units released or given back on this sale, ever (the oracle's) */
    lottery_t lot;
    /* buys appended and waiting for the group commit (durability fsync) */
    waiter_t wait[64];
    size_t nwait;
} gw_t;

typedef struct bmsg {
    oq_order_t o;
} bmsg_t;

typedef struct infl {
    int gw;
    uint32_t gen;
    uint64_t seq;
    uint64_t t_sent;
    oq_order_t o;
} infl_t;

typedef struct plog {
    bmsg_t *m;
    size_t n, cap;
    infl_t *q; /* in flight to this partition, in order */
    size_t qn, qcap;
} plog_t;

typedef struct outc {
    uint32_t ord;
    char *json; /* the message, as settle formats it (st_outcome_format) */
} outc_t;

/* The database: committed rows and the open transaction's. */
typedef struct sim_sink {
    st_sink_t base;
    struct world *wd;
    uint32_t pend_ord[512];
    uint8_t pend_st[512];
    size_t npend;
    bool in_tx;
} sim_sink_t;

typedef struct pendkey {
    bool active;
    uint32_t key;
    uint8_t gw, qty;
} pendkey_t;

typedef struct world {
    cm_rand_t rng;
    sim_log_t log;
    uint64_t step, now_ms;
    int ng, nu;
    uint32_t limit;
    bool fsync_mode;
    bool no_stops; /* sim_opts_t.no_stops */
    double p_crash, p_power, p_fsync_fail, p_broker_flip, p_dup, p_lost_reply, p_produce_err;
    bool faults;
    gw_t gw[NG_MAX];
    plog_t part[NPART];
    bool broker_up;
    outc_t *outs;
    size_t nouts, capouts;
    /* settle */
    bool st_up;
    uint64_t committed[NPART], stpos[NPART];
    st_batch_writer_t bw;
    sim_sink_t sink;
    double p_db_fail;
    /* oracle */
    ord_t ords[ORD_MAX];
    uint32_t nords;
    uint32_t keygen;
    pendkey_t pend[NU_MAX];
    sim_redis_t *rs;      /* the Redis of the Redis gateways (NULL: none) */
    gw_t *in_reserve;     /* the gateway whose inv_reserve runs (its yield points may act) */
    uint64_t yield_edits; /* stock edits run at a yield point */
    uint32_t rseq;        /* reservations so far */
    cm_rand_t keys;       /* the product's random keys (the draw's seeds, cm_hash_seed_set_fake) */
} world_t;

static void lot_configure(world_t *wd, gw_t *g);
static void lot_check_log(world_t *wd, gw_t *g);
static bool lot_open(world_t *wd, gw_t *g);
static void lot_close(gw_t *g);
static bool lot_drawn(const gw_t *g);
static bool lot_buy(world_t *wd, gw_t *g, uint32_t u, uint32_t qty, uint32_t key);
static void giveback(world_t *wd, gw_t *g, uint32_t n);
static void lot_check_done(world_t *wd, gw_t *g);

/*---- helpers ----*/

static uint32_t ord_of(const char *id)
{
    return id[0] == 'o' ? (uint32_t)strtoul(id + 1, NULL, 10) : 0;
}

static int part_of(uint32_t ord)
{
    return (int)(cm_rand_mix64(ord) % NPART);
}

static void fill_order(world_t *wd, uint32_t n, oq_order_t *o)
{
    const ord_t *r = &wd->ords[n];
    memset(o, 0, sizeof(*o));
    o->type = OQ_MSG_ORDER;
    snprintf(o->order_id, sizeof(o->order_id), "o%u", n);
    snprintf(o->sale_id, sizeof(o->sale_id), "%s", wd->gw[r->gw].sale_id);
    snprintf(o->user_id, sizeof(o->user_id), "u%u", r->user);
    if (r->key)
        snprintf(o->idem_key, sizeof(o->idem_key), "k%u", r->key);
    o->qty = r->qty;
    o->node_id = r->gw;
    o->accepted_at_ms = 1700000000000LL + (int64_t)wd->now_ms;
}

/*---- the database (a settlement sink) ----*/

static uint8_t sink_status(sim_sink_t *s, uint32_t n)
{
    for (size_t i = s->npend; i-- > 0;)
        if (s->pend_ord[i] == n)
            return s->pend_st[i];
    return n < ORD_MAX ? s->wd->ords[n].db : ST_NONE;
}

static oq_status_t to_oq(uint8_t st)
{
    return st == ST_SETTLED     ? OQ_STATUS_SETTLED
           : st == ST_FAILED    ? OQ_STATUS_FAILED
           : st == ST_CANCELLED ? OQ_STATUS_CANCELLED
                                : OQ_STATUS_QUEUED;
}

static int sink_put(sim_sink_t *s, uint32_t n, uint8_t st)
{
    if (s->npend == CM_ARRAY_LEN(s->pend_ord))
        return CM_EBACKEND;
    s->pend_ord[s->npend] = n;
    s->pend_st[s->npend++] = st;
    return 0;
}

static int sk_begin(st_sink_t *b)
{
    sim_sink_t *s = (sim_sink_t *)b;
    if (sim_chance(&s->wd->rng, s->wd->p_db_fail))
        return CM_EIO;
    s->npend = 0;
    s->in_tx = true;
    return 0;
}

static int sk_lookup(st_sink_t *b, const char *id, st_outcome_t *out)
{
    uint8_t st = sink_status((sim_sink_t *)b, ord_of(id));
    if (st == ST_NONE)
        return 0;
    out->status = to_oq(st);
    out->changed = false;
    return 1;
}

static int sk_run_user(st_sink_t *b, const oq_order_t *o, char *reason, size_t rlen)
{
    (void)b;
    /* the sale's rule rejects one order in 12, the same one at every try */
    if (cm_rand_mix64(ord_of(o->order_id) * 7919u) % 12 == 0) {
        snprintf(reason, rlen, "rejected by the sale's rule");
        return 1;
    }
    return 0;
}

static int sk_insert(st_sink_t *b, const oq_order_t *o, oq_status_t st, const char *reason)
{
    (void)reason;
    sim_sink_t *s = (sim_sink_t *)b;
    uint32_t n = ord_of(o->order_id);
    if (sink_status(s, n) != ST_NONE)
        return 0;
    int rc = sink_put(s, n,
                      st == OQ_STATUS_FAILED      ? ST_FAILED
                      : st == OQ_STATUS_CANCELLED ? ST_CANCELLED
                                                  : ST_SETTLED);
    return rc < 0 ? rc : 1;
}

static int sk_cancel(st_sink_t *b, const oq_order_t *c, st_outcome_t *out)
{
    sim_sink_t *s = (sim_sink_t *)b;
    uint32_t n = ord_of(c->order_id);
    uint8_t st = sink_status(s, n);
    memset(out, 0, sizeof(*out));
    if (st == ST_SETTLED || st == ST_NONE) {
        int rc = sink_put(s, n, ST_CANCELLED);
        if (rc < 0)
            return rc;
        out->status = OQ_STATUS_CANCELLED;
        out->changed = true;
        return 0;
    }
    out->status = to_oq(st);
    return 0;
}

static int sk_commit(st_sink_t *b)
{
    sim_sink_t *s = (sim_sink_t *)b;
    world_t *wd = s->wd;
    s->in_tx = false;
    if (sim_chance(&wd->rng, wd->p_db_fail)) {
        s->npend = 0;
        return CM_EIO;
    }
    for (size_t i = 0; i < s->npend; i++) {
        uint32_t n = s->pend_ord[i];
        uint8_t from = n < ORD_MAX ? wd->ords[n].db : ST_NONE, to = s->pend_st[i];
        if (n >= ORD_MAX || n >= wd->nords || wd->ords[n].state == O_FREE) {
            sim_fail(&wd->log, "database: order o%u was never appended by any gateway (invented)",
                     n);
            continue;
        }
        if (!(from == ST_NONE || (from == ST_SETTLED && to == ST_CANCELLED)))
            sim_fail(&wd->log,
                     "database: order o%u status moved %d -> %d (must only move forward, once)", n,
                     from, to);
        wd->ords[n].db = to;
    }
    s->npend = 0;
    return 0;
}

static int sk_rollback(st_sink_t *b)
{
    sim_sink_t *s = (sim_sink_t *)b;
    s->npend = 0;
    s->in_tx = false;
    return 0;
}

static void sk_close(st_sink_t *b)
{
    (void)b;
}

static const st_sink_ops_t sink_ops = {
    .name = "sim",
    .begin = sk_begin,
    .lookup = sk_lookup,
    .run_user = sk_run_user,
    .insert = sk_insert,
    .cancel = sk_cancel,
    .commit = sk_commit,
    .rollback = sk_rollback,
    .close = sk_close,
};

/*---- the broker ----*/

/* The broker table's produce (oq_broker.h): one gateway's relay. */
static int broker_produce(void *ctx, const char *key, const void *val, size_t vlen, uint64_t token,
                          const char **why)
{
    gw_t *g = ctx;
    world_t *wd = g->wd;
    oq_order_t o;
    char err[160];
    if (oq_order_decode(val, vlen, &o, err, sizeof(err)) != 0) {
        sim_fail(&wd->log, "gw%d: the relay produced a message the codec rejects: %s", g->idx, err);
        *why = "invalid message";
        return CM_EINVAL;
    }
    if (strcmp(key, o.order_id) != 0) {
        sim_fail(&wd->log, "gw%d: the relay keyed %s by \"%s\", not its order id", g->idx,
                 o.order_id, key);
        *why = "wrong key";
        return CM_EINVAL;
    }
    if (wd->faults && sim_chance(&wd->rng, wd->p_produce_err)) { /* a non-retriable produce error */
        sim_trace(&wd->log, "gw%d: produce of %s refused", g->idx, o.order_id);
        *why = "refused (simulated)";
        return CM_EBACKEND;
    }
    plog_t *p = &wd->part[part_of(ord_of(key))];
    if (p->qn == p->qcap) {
        p->qcap = p->qcap ? p->qcap * 2 : 64;
        p->q = cm_xrealloc(p->q, p->qcap * sizeof(infl_t));
    }
    p->q[p->qn++] =
        (infl_t){.gw = g->idx, .gen = g->gen, .seq = token, .t_sent = wd->now_ms, .o = o};
    return 0;
}

static void broker_step(world_t *wd);

/*
 * The broker table's poll: the reports that reached this process, in order.
 * Waiting (timeout_ms > 0: the relay's flush at a graceful close) lets
 * simulated time pass, a millisecond at a time, the broker moving messages,
 * until a report comes or the time is up; nothing else runs meanwhile.
 */
static void broker_poll(void *ctx, int timeout_ms, oq_broker_report_fn fn, void *arg)
{
    gw_t *g = ctx;
    world_t *wd = g->wd;
    for (int t = 0; t < timeout_ms && g->nreps == 0; t++) {
        wd->now_ms++;
        cm_time_advance_fake(1000000);
        broker_step(wd);
    }
    for (size_t i = 0; i < g->nreps; i++) {
        oq_broker_report_t r = {.token = g->reps[i].token,
                                .err = g->reps[i].ok ? NULL : "Local: Message timed out",
                                .partition = g->reps[i].partition,
                                .offset = g->reps[i].offset};
        fn(arg, &r);
    }
    g->nreps = 0;
}

/*
 * The broker table's consume: the next outcome of one of this gateway's
 * orders. The relay reads no orders back here, and the other gateways'
 * outcomes are passed over: they would only sit in its settled-id set, and
 * each costs a decode (a gateway reads the topic again at every start).
 */
static int broker_consume(void *ctx, int timeout_ms, oq_broker_msg_fn fn, void *arg)
{
    gw_t *g = ctx;
    world_t *wd = g->wd;
    (void)timeout_ms;
    while (g->out_cur < wd->nouts && (wd->outs[g->out_cur].ord >= wd->nords ||
                                      wd->ords[wd->outs[g->out_cur].ord].gw != g->idx))
        g->out_cur++;
    if (!wd->broker_up || g->out_cur >= wd->nouts)
        return 0;
    const char *json = wd->outs[g->out_cur++].json;
    oq_broker_msg_t m = {.topic = OQ_BROKER_OUTCOMES, .payload = json, .len = strlen(json)};
    fn(arg, &m);
    return 1;
}

static const oq_broker_ops_t sim_broker_ops = {
    .produce = broker_produce,
    .poll = broker_poll,
    .consume = broker_consume,
};

/* A delivery report for gateway gi's producer, if the process that sent it still runs. */
static void relay_report(world_t *wd, int gi, uint32_t gen, uint64_t seq, bool ok, int part,
                         int64_t off)
{
    gw_t *g = &wd->gw[gi];
    if (!g->up || g->gen != gen || !g->relay)
        return; /* the producer that sent it is gone */
    if (g->nreps == g->capreps) {
        g->capreps = g->capreps ? g->capreps * 2 : 64;
        g->reps = cm_xrealloc(g->reps, g->capreps * sizeof(rep_t));
    }
    g->reps[g->nreps++] =
        (rep_t){.token = seq, .ok = ok, .partition = ok ? part : -1, .offset = ok ? off : -1};
}

static void plog_append(plog_t *p, const oq_order_t *o)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->m = cm_xrealloc(p->m, p->cap * sizeof(bmsg_t));
    }
    p->m[p->n++].o = *o;
}

/* Moves the oldest message in flight of a random partition. */
static void broker_step(world_t *wd)
{
    plog_t *p = &wd->part[sim_below(&wd->rng, NPART)];
    if (p->qn == 0)
        return;
    infl_t m = p->q[0];
    if (!wd->broker_up) {
        if (wd->now_ms - m.t_sent <= MSG_TIMEOUT_MS)
            return;
        memmove(p->q, p->q + 1, (p->qn - 1) * sizeof(infl_t));
        p->qn--;
        sim_trace(&wd->log, "broker: delivery of %s failed (timed out, broker down)", m.o.order_id);
        relay_report(wd, m.gw, m.gen, m.seq, false, -1, -1);
        return;
    }
    memmove(p->q, p->q + 1, (p->qn - 1) * sizeof(infl_t));
    p->qn--;
    int64_t off = (int64_t)p->n;
    plog_append(p, &m.o);
    uint32_t n = ord_of(m.o.order_id);
    if (m.o.type == OQ_MSG_ORDER && n < ORD_MAX)
        wd->ords[n].in_topic = true;
    if (sim_chance(&wd->rng, wd->p_dup)) { /* the ack was lost and the producer retried */
        plog_append(p, &m.o);
        sim_trace(&wd->log, "broker: %s written twice (a retried produce)", m.o.order_id);
    }
    relay_report(wd, m.gw, m.gen, m.seq, true, (int)(p - wd->part), off);
}

/* Settle publishes the outcome of message o (st_settle.c publish_outcomes). */
static void outcome_publish(world_t *wd, const oq_order_t *o, const st_outcome_t *oc)
{
    if (oc->status != OQ_STATUS_SETTLED && !oq_status_releases(oc->status))
        return; /* no outcome message for it */
    if (wd->nouts == wd->capouts) {
        wd->capouts = wd->capouts ? wd->capouts * 2 : 256;
        wd->outs = cm_xrealloc(wd->outs, wd->capouts * sizeof(outc_t));
    }
    wd->outs[wd->nouts++] = (outc_t){.ord = ord_of(o->order_id),
                                     .json = st_outcome_format(o, oc, cm_wall_ms())};
}

/*---- settlement ----*/

static void settle_crash(world_t *wd, const char *where)
{
    wd->st_up = false;
    wd->log.res->crashes++;
    sim_trace(&wd->log, "settle: crash %s", where);
}

/*
 * One turn of settle's loop: a batch run through the real stepped core
 * (settle/st_loop.h, as st_settle.c process_batch runs it), each of its
 * actions done here on the simulated database and broker: the write
 * (st_batch_write), the outcomes (st_outcome_format), the offsets
 * (st_batch_offsets). A crash may come before any action but the first.
 * Stopping (a stop seen in the batch): past settle.stop_grace the outcomes or
 * the commit give up (the batch uncommitted), and a failed write gives up at
 * once; a failed write otherwise is tried again in the next turn.
 */
static void settle_turn(world_t *wd, bool stopping)
{
    if (!wd->st_up) {
        if (sim_chance(&wd->rng, 0.2)) {
            wd->st_up = true;
            memcpy(wd->stpos, wd->committed, sizeof(wd->stpos));
            sim_trace(&wd->log, "settle: start, from the committed offsets");
        }
        return;
    }
    if (!wd->broker_up)
        return;
    oq_order_t batch[24];
    const oq_order_t *msgs[24];
    st_outcome_t outv[24];
    st_outcome_t *outs[24];
    int32_t mpart[24], cpart[24];
    int64_t moff[24], cnext[24];
    size_t n = 0;
    size_t want = 1 + sim_below(&wd->rng, 24);
    for (int p = 0; p < NPART; p++) {
        uint64_t at = wd->stpos[p];
        while (n < want && at < wd->part[p].n) {
            mpart[n] = p;
            moff[n] = (int64_t)at;
            batch[n] = wd->part[p].m[at++].o;
            msgs[n] = &batch[n];
            outs[n] = &outv[n];
            n++;
        }
    }
    if (n == 0)
        return;
    st_batch_step_t b;
    st_batch_act_t act = st_batch_begin(&b);
    bool first = true;
    for (;;) {
        if (act == ST_BATCH_GIVE_UP)
            return;
        if (act == ST_BATCH_DONE)
            break;
        if (!first && wd->faults && sim_chance(&wd->rng, wd->p_crash * 4)) {
            settle_crash(wd, act == ST_BATCH_PUBLISH  ? "before the outcomes"
                             : act == ST_BATCH_COMMIT ? "before the offsets"
                                                      : "before the write");
            return;
        }
        first = false;
        int rc = 0;
        bool give_up = false;
        if (act == ST_BATCH_WRITE) {
            st_batch_note_t note;
            rc = st_batch_write(&wd->bw, &wd->sink.base, msgs, outs, n, &note);
            if (rc == 0)
                st_batch_writer_done(&wd->bw, &wd->sink.base);
            sim_trace(&wd->log, "settle: batch of %zu %s%s", n, rc == 0 ? "written" : "failed",
                      rc == 0    ? ""
                      : stopping ? ", given up at the stop"
                                 : ", retried");
            if (rc != 0 && !stopping) /* retried in a later turn, as after a backoff */
                return;
            give_up = rc != 0;
        } else if (act == ST_BATCH_PUBLISH) {
            if (stopping && sim_chance(&wd->rng, 0.25)) {
                sim_trace(&wd->log,
                          "settle: stop grace over before the outcomes: the batch given up");
                rc = CM_EAGAIN;
                give_up = true;
            } else {
                for (size_t i = 0; i < n; i++)
                    outcome_publish(wd, &batch[i], &outv[i]);
            }
        } else { /* ST_BATCH_COMMIT */
            if (stopping && sim_chance(&wd->rng, 0.25)) {
                sim_trace(&wd->log, "settle: stop grace over before the offsets: not committed");
                return; /* the process exits: its position goes with it */
            }
            size_t np = st_batch_offsets(mpart, moff, n, cpart, cnext);
            for (size_t j = 0; j < np; j++)
                wd->committed[cpart[j]] = (uint64_t)cnext[j];
        }
        act = st_batch_step(&b, rc, give_up);
    }
    for (size_t i = 0; i < n; i++)
        if (wd->stpos[mpart[i]] < (uint64_t)moff[i] + 1)
            wd->stpos[mpart[i]] = (uint64_t)moff[i] + 1;
}

static void settle_step(world_t *wd)
{
    settle_turn(wd, false);
}

/*
 * SIGTERM to the settle worker (st_settle_stop): seen between two batches,
 * or inside one, which finishes or is given up (settle_turn); then it exits
 * (st_settle_free: the consumer leaves the group, the database closes). The
 * batch runs through the real core (settle_turn); librdkafka's threads and
 * st_settle_run's polling around it are not run.
 */
static void settle_stop(world_t *wd)
{
    wd->log.res->stops++;
    sim_trace(&wd->log, "settle: SIGTERM");
    if (sim_chance(&wd->rng, 0.5))
        settle_turn(wd, true);
    wd->st_up = false;
    sim_trace(&wd->log, "settle: stopped");
}

/*---- a gateway process ----*/

static void gw_gone(gw_t *g);

/*
 * Durability write, the process dies (not a power loss): an order answered
 * 202 whose record lies in pages a failed fdatasync dropped, that no write
 * covered since and that the kernel evicts, is lost with the process. Its
 * only copy was the spool's in memory (oq_spool.c seg_copy_t), which writes it
 * again after the failure; a process that died before that write succeeded
 * takes the copy with it, and a read of those pages returns the disk's zeros
 * (docs/simulation.md, "Evicted pages"). Exactly those orders may be lost,
 * and the units they held with them, as at a power loss.
 */
static void copies_gone(world_t *wd, gw_t *g)
{
    for (uint32_t i = 1; i < wd->nords; i++) {
        ord_t *r = &wd->ords[i];
        if (r->gw != g->idx || r->state != O_ACKED || r->exempt || r->rec_end.off == 0 ||
            r->rec_gen != g->gen) /* only the process that wrote it holds its copy */
            continue;
        char name[64];
        snprintf(name, sizeof(name), "spool-%016" PRIx64 ".log", r->rec_end.seg);
        if (sim_disk_dropped_evicted(g->disk, name, r->rec_end.off - 1)) {
            r->exempt = true;
            g->power_lost_write = true; /* its units: as a power loss's (the end count) */
            /* and a draw cut by it resumes without that winner's record, or
             * over the units a buy's lost record gave back: its counts are
             * not the seed's, as after a power loss (gw_crash; flashgate-sim
             * --seed 17990 --open-defects) */
            if (g->lot.o_seeded && !g->lot.o_done)
                g->lot.o_inexact = true;
            sim_trace(&wd->log,
                      "gw%d: o%u's record was in pages a failed fdatasync dropped and "
                      "the kernel evicts; the copy to write it again died with the process",
                      g->idx, i);
        }
    }
}

static void gw_crash(world_t *wd, gw_t *g, bool power, const char *why)
{
    if (!g->up && !power)
        return;
    sim_disk_use(g->disk);
    if (power) {
        sim_disk_power_loss(g->disk);
        wd->log.res->power_losses++;
        if (!wd->fsync_mode) { /* durability write: a 202 may be lost, by design */
            for (uint32_t i = 1; i < wd->nords; i++)
                if (wd->ords[i].gw == g->idx && wd->ords[i].state == O_ACKED)
                    wd->ords[i].exempt = true;
            g->power_lost_write = true;
        }
    } else {
        if (!wd->fsync_mode)
            copies_gone(wd, g);
        sim_disk_crash(g->disk);
    }
    wd->log.res->crashes++;
    sim_trace(&wd->log, "gw%d: %s (%s)", g->idx, power ? "power loss" : "crash", why);
    lottery_t *L = &g->lot;
    if (power && !L->o_seeded)
        L->o_power = true;
    /* write durability promises nothing across a power loss: the spool may
     * lose winners the entry log's "O" (written, not synced) outlives, and
     * their units then go undrawn; the draw's count checks are exempt */
    if (power && !wd->fsync_mode && L->o_seeded && !L->o_done)
        L->o_inexact = true;
    gw_gone(g);
}

/* What a process leaves when it is gone: its memory, its threads. */
static void gw_gone(gw_t *g)
{
    oq_relay_drop(g->relay); /* stepped: freed, nothing flushed or released */
    g->relay = NULL;
    g->nreps = 0;
    if (g->sp)
        oq_spool_close(g->sp); /* after a crash its descriptors are dead: nothing reaches the disk */
    g->sp = NULL;
    if (g->w)
        inv_worker_close(g->w);
    g->w = NULL;
    if (g->inv)
        inv_close(g->inv);
    g->inv = NULL;
    g->sale = NULL;
    g->up = false;
    g->nwait = 0; /* their clients never hear: they retry their keys */
    g->nrel = 0;  /* the releaser's queue: what the spool holds is replayed at the next start */
    g->leaving = g->draining = false;
    g->keepalive = 0;
    g->gen++;
    lot_close(g);
}

/* After a call into g's process: if its disk says it died meanwhile, it did. */
static bool gw_died(world_t *wd, gw_t *g)
{
    if (!sim_disk_dead(g->disk))
        return false;
    gw_crash(wd, g, false, "died in the middle of a call");
    return true;
}

/*---- the Redis inventory (the real backend on sim_redis) ----*/

#define REDIS_URL                                                                                  \
    "redis://127.0.0.1:6379/?timeout_ms=40&admin_timeout_ms=2000&breaker_failures=1000"           \
    "&breaker_cooldown_ms=20&wait_replicas=0&batch=4"

/* The oracle's read of a Redis sale's books (no call, no fault): false if absent. */
static bool redis_books(world_t *wd, const gw_t *g, int64_t *held, int64_t *total)
{
    char k[64];
    snprintf(k, sizeof(k), "{sale:%s}:meta", g->sale_id);
    const char *t = sim_redis_hget(wd->rs, k, "total"), *l = sim_redis_hget(wd->rs, k, "left");
    if (!t || !l)
        return false;
    *total = atoll(t);
    *held = *total - atoll(l);
    return true;
}

static bool redis_holds(world_t *wd, const gw_t *g, uint32_t n)
{
    char k[64], f[16];
    snprintf(k, sizeof(k), "{sale:%s}:orders", g->sale_id);
    snprintf(f, sizeof(f), "o%u", n);
    return sim_redis_hget(wd->rs, k, f) != NULL;
}

/* The admin's calls on Redis: the operator's generous timeout (admin_timeout_ms),
 * so no reply is lost or late; a Redis down refuses them (nothing runs). */
static sim_redis_faults_t redis_admin_begin(world_t *wd)
{
    sim_redis_faults_t *f = sim_redis_faults(wd->rs), was = *f;
    f->p_timeout = f->p_lost = 0;
    return was;
}

static void redis_admin_end(world_t *wd, sim_redis_faults_t was)
{
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    f->p_timeout = was.p_timeout;
    f->p_lost = was.p_lost;
}

/* The releaser's queue (gw_release.c gw_releaser_push, gw_releaser_pending). */
static bool rel_find(const gw_t *g, const char *order_id, bool givebacks)
{
    for (size_t i = 0; i < g->nrel; i++)
        if (strcmp(g->rel[i].o.order_id, order_id) == 0 && (givebacks || !g->rel[i].o.giveback))
            return true;
    return false;
}

static void rel_push(gw_t *g, const oq_order_t *o, int final_status)
{
    if (g->nrel == g->caprel) {
        g->caprel = g->caprel ? g->caprel * 2 : 16;
        g->rel = cm_xrealloc(g->rel, g->caprel * sizeof(rel_t));
    }
    g->rel[g->nrel].o = *o;
    g->rel[g->nrel].o.type = OQ_MSG_ORDER;
    g->rel[g->nrel++].final_status = final_status;
}

/* The relay's release_pending (gw_kafka.c's): a release event stays unreleased
 * in the spool while the releaser has its order, give-backs included. */
static bool sim_release_pending(const char *order_id, void *ud)
{
    return rel_find(ud, order_id, true);
}

/* The releaser thread's turn: each queued release tried once (gw_units_release),
 * the order marked final once its units are back; a failure stays queued. */
static void releaser_step(world_t *wd, gw_t *g)
{
    size_t k = 0;
    for (size_t i = 0; i < g->nrel; i++) {
        rel_t *it = &g->rel[i];
        int rc = gw_units_release(g->inv, &it->o);
        if (!gw_release_ok(&it->o, rc)) {
            g->rel[k++] = *it;
            continue;
        }
        if (rc == 0)
            g->units_back += it->o.qty;
        if (it->final_status >= 0)
            g->book.set_status(g->book.ud, it->o.order_id, &it->o,
                               (oq_status_t)it->final_status, NULL);
        sim_trace(&wd->log, "gw%d: releaser: %s %s", g->idx, it->o.order_id,
                  rc == 0 ? "units back" : "released before");
    }
    g->nrel = k;
}

/* Opens g's Redis inventory (inv_open on redis://, a loop-less worker); the
 * operator creates the sale at the first start. false: it stays down. */
static bool redis_open(world_t *wd, gw_t *g, char *err, size_t errlen)
{
    if (inv_open(&g->inv, REDIS_URL, NULL, 8, err, errlen) != 0) {
        g->inv = NULL;
        return false;
    }
    if (!g->sale_made) {
        inv_sale_def_t def = {.stock = g->stock_total,
                              .per_user_limit = g->limit,
                              .starts_at_ms = g->starts_ms,
                              .ends_at_ms = g->ends_ms};
        snprintf(def.sale_id, sizeof(def.sale_id), "%s", g->sale_id);
        sim_redis_faults_t was = redis_admin_begin(wd);
        g->sale_made = inv_sale_put(g->inv, &def, NULL, err, errlen) == 0;
        redis_admin_end(wd, was);
    }
    (void)inv_redis_sync_step(g->inv); /* the sync thread's first read of the sales */
    g->sale = inv_sale_find(g->inv, g->sale_id);
    if (!g->sale_made || inv_worker_open(g->inv, NULL, &g->w) != 0) {
        inv_close(g->inv);
        g->inv = NULL;
        g->sale = NULL;
        snprintf(err, errlen, "redis: the sale is not there");
        return false;
    }
    return true;
}

typedef struct replay_ctx {
    world_t *wd;
    gw_t *g;
    gw_replay_ctx_t rp; /* the real replay's (gateway/buy/gw_replay.c) */
    uint8_t seen[ORD_MAX];
} replay_ctx_t;

static void set_status(gw_t *g, uint32_t n, uint8_t st)
{
    /* the status table only moves forward (gw_orders) */
    uint8_t cur = g->status[n];
    if (cur == ST_NONE || cur == ST_QUEUED || (cur == ST_SETTLED && st != ST_QUEUED))
        g->status[n] = st;
}

/*---- the order table the cores see (gw_book_t over the status table) ----*/

static uint8_t from_oq(oq_status_t st)
{
    return st == OQ_STATUS_SETTLED     ? ST_SETTLED
           : st == OQ_STATUS_FAILED    ? ST_FAILED
           : st == OQ_STATUS_CANCELLED ? ST_CANCELLED
                                       : ST_QUEUED;
}

static bool book_get(void *ud, const char *order_id, oq_order_t *out)
{
    gw_t *g = ud;
    uint32_t n = ord_of(order_id);
    if (n == 0 || n >= ORD_MAX || g->status[n] == ST_NONE)
        return false;
    /* what gw_orders keeps: the id and the status (no user id) */
    memset(out, 0, sizeof(*out));
    snprintf(out->order_id, sizeof(out->order_id), "%s", order_id);
    out->status = to_oq(g->status[n]);
    return true;
}

static void book_put(void *ud, const oq_order_t *o)
{
    gw_t *g = ud;
    uint32_t n = ord_of(o->order_id);
    /* bounded: a start's replay leaves some orders out of the table */
    if (n > 0 && n < ORD_MAX && g->status[n] == ST_NONE &&
        (!g->replaying || sim_below(&g->wd->rng, 4) != 0))
        g->status[n] = ST_QUEUED;
}

static void book_set_status(void *ud, const char *order_id, const oq_order_t *o, oq_status_t st,
                            const char *reason)
{
    (void)reason;
    gw_t *g = ud;
    uint32_t n = ord_of(order_id);
    if (n == 0 || n >= ORD_MAX || (g->status[n] == ST_NONE && !o))
        return;
    if (g->replaying && sim_below(&g->wd->rng, 4) == 0) /* bounded, as above */
        return;
    set_status(g, n, from_oq(st));
}

/* The replay's actions: an order restored (the oracle's count), a release
 * done (the units back). */
static void replay_order(void *ud, const oq_order_t *o)
{
    replay_ctx_t *c = ud;
    uint32_t n = ord_of(o->order_id);
    if (n < ORD_MAX)
        c->seen[n] = 1;
}

static void replay_release(void *ud, const oq_order_t *o, int rc, int final_status,
                           const char *reason)
{
    (void)reason;
    replay_ctx_t *c = ud;
    if (rc == 0)
        c->g->units_back += o->qty;
    else if (!gw_release_ok(o, rc)) /* e.g. Redis down at start: the releaser retries */
        rel_push(c->g, o, final_status);
}

/* The oracle's look at each record, then the real replay (gw_replay_one). */
static int replay_cb(const oq_rec_t *rec, void *arg)
{
    replay_ctx_t *c = arg;
    world_t *wd = c->wd;
    gw_t *g = c->g;
    if (rec->type == OQ_REC_ORDER) {
        const oq_order_t *o = rec->order;
        uint32_t n = ord_of(o->order_id);
        if (n == 0 || n >= wd->nords || wd->ords[n].gw != g->idx || wd->ords[n].state == O_FREE) {
            sim_fail(&wd->log, "gw%d: spool recovery invented order %s", g->idx, o->order_id);
            return 1;
        }
    } else {
        oq_order_t o;
        char why[160];
        if (oq_order_decode(rec->event, rec->event_len, &o, why, sizeof(why)) != 0) {
            sim_fail(&wd->log, "gw%d: spool event unreadable: %s", g->idx, why);
            return 1;
        }
    }
    return gw_replay_one(rec, &c->rp);
}

static void sim_on_outcome(const oq_order_t *oc, void *ud);

static void gw_start(world_t *wd, gw_t *g)
{
    char err[256];
    lot_check_log(wd, g);
    sim_disk_use(g->disk);
    if (wd->faults && sim_chance(&wd->rng, 0.15)) /* it will die in the middle of its recovery */
        sim_disk_die_after(g->disk, 1 + sim_below(&wd->rng, 40));
    memset(g->status, 0, sizeof(g->status));
    g->out_cur = 0;
    if (g->redis) {
        if (!redis_open(wd, g, err, sizeof(err))) {
            sim_trace(&wd->log, "gw%d: cannot start: %s (stays down)", g->idx, err);
            return;
        }
    } else if (inv_open(&g->inv, "memory", NULL, 8, err, sizeof(err)) != 0) {
        sim_fail(&wd->log, "gw%d: inv_open: %s", g->idx, err);
        return;
    }
    inv_sale_def_t def = {.stock = g->stock_total,
                          .per_user_limit = g->limit,
                          .starts_at_ms = g->starts_ms,
                          .ends_at_ms = g->ends_ms};
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", g->sale_id);
    if (!g->redis && (inv_sale_put(g->inv, &def, NULL, err, sizeof(err)) != 0 ||
                      inv_worker_open(g->inv, NULL, &g->w) != 0)) {
        sim_fail(&wd->log, "gw%d: sale: %s", g->idx, err);
        return;
    }
    g->sale = inv_sale_find(g->inv, g->sale_id);
    oq_spool_opts_t so = {.dir = "/sim/spool",
                          .durability = wd->fsync_mode ? OQ_DURABILITY_FSYNC : OQ_DURABILITY_WRITE,
                          .segment_bytes = 1500 + sim_below(&wd->rng, 3000),
                          .fs = sim_disk_ops(),
                          .stepped = true};
    int rc = oq_spool_open(&g->sp, &so, err, sizeof(err));
    g->up = true; /* a process: gw_crash cleans it up */
    if (gw_died(wd, g))
        return;
    if (rc != 0) {
        if (rc == CM_EIO && wd->faults) { /* a failed fsync in recovery: tried again later */
            sim_trace(&wd->log, "gw%d: spool open failed (%s), stays down", g->idx, err);
            gw_crash(wd, g, false, "could not open its spool");
            return;
        }
        sim_fail(&wd->log, "gw%d: cannot restart: spool: %s", g->idx, err);
        gw_crash(wd, g, false, "could not open its spool");
        return;
    }
    replay_ctx_t *c = cm_xcalloc(1, sizeof(*c));
    c->wd = wd;
    c->g = g;
    c->rp = (gw_replay_ctx_t){.inv = g->inv,
                              .book = &g->book,
                              .node_id = (uint32_t)g->idx,
                              .settled_before_release = g->on_settle,
                              .released = oq_spool_released(g->sp),
                              .on_order = replay_order,
                              .on_release = replay_release,
                              .ud = c};
    if (g->redis && wd->faults &&
        sim_chance(&wd->rng, 0.25)) { /* Redis goes down as the replay starts */
        sim_redis_faults(wd->rs)->down = true;
        sim_trace(&wd->log, "redis: down (gw%d replays its spool)", g->idx);
    }
    g->replaying = true;
    long nrec = oq_spool_scan(g->sp, (oq_pos_t){0, 0}, replay_cb, c);
    g->replaying = false;
    if (gw_died(wd, g)) {
        free(c);
        return;
    }
    if (nrec < 0 && !wd->log.failed)
        sim_fail(&wd->log, "gw%d: replay of the spool failed: %s", g->idx, cm_errname((int)nrec));
    /* recovery never drops a record whose 202 went out (with Redis, the
     * relay deletes the segments it released: only records done may go, in
     * the topic, and on settle settled too; oq_spool.c release_impl deletes
     * them even when the point's write failed) */
    for (uint32_t i = 1; i < wd->nords && !wd->log.failed; i++) {
        const ord_t *r = &wd->ords[i];
        if (r->gw == g->idx && r->state == O_ACKED && !r->exempt && !c->seen[i] &&
            !(g->redis && r->in_topic && (!g->on_settle || r->db != ST_NONE)))
            sim_fail(&wd->log, "gw%d: spool recovery dropped order o%u, answered 202", g->idx, i);
    }
    free(c);
    /* the lottery opens after the replay (gw_server.c); a cut draw's winners: the spool's */
    bool lot_ok = lot_open(wd, g);
    if (gw_died(wd, g))
        return;
    if (!lot_ok) {
        sim_trace(&wd->log, "gw%d: cannot open its lottery's log, stays down", g->idx);
        gw_crash(wd, g, false, "could not open its lottery's log");
        return;
    }
    if (g->lot.fs && g->lot.fs->seeded && !lot_drawn(g))
        sim_trace(&wd->log, "gw%d: lottery: a draw cut by a crash resumes (seed %016" PRIx64 ")",
                  g->idx, g->lot.fs->seed);
    else if (lot_drawn(g) && !g->lot.o_done && !wd->log.failed) /* its "F" reached the log */
        lot_check_done(wd, g);
    oq_relay_opts_t ro = {.spool = g->sp,
                          .node_id = (uint32_t)g->idx,
                          .embedded_release_on_settle = g->on_settle,
                          /* gw_kafka.c: an inventory not rebuilt from the spool (Redis)
                           * has the released segments deleted */
                          .release_deletes = g->redis,
                          .consume = true,
                          .on_outcome = sim_on_outcome,
                          .release_pending = g->redis ? sim_release_pending : NULL,
                          .cb_ud = g,
                          .max_inflight = 64,
                          .broker = &sim_broker_ops,
                          .broker_ctx = g,
                          .rewind_backoff_ms = REWIND_BACKOFF_MS};
    if (oq_relay_open(&g->relay, &ro, err, sizeof(err)) != 0) {
        sim_fail(&wd->log, "gw%d: relay: %s", g->idx, err);
        return;
    }
    oq_pos_t rp = oq_spool_released(g->sp);
    sim_trace(&wd->log, "gw%d: started, replayed %ld records, release point %" PRIu64 ":%" PRIu64,
              g->idx, nrec, rp.seg, rp.off);
}

/* An EVENT record of o (release or cancel) into the spool, committed. */
static int spool_event(gw_t *g, const oq_order_t *ev)
{
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(ev, buf, sizeof(buf));
    if (n < 0)
        return n;
    oq_pos_t end;
    int rc = oq_spool_append_event_end(g->sp, buf, (size_t)n, &end);
    if (rc == 0) /* its own record only (oq_relay_cancel, gw_compensate) */
        rc = oq_spool_commit_to(g->sp, end);
    while (!sim_disk_dead(g->disk) && oq_spool_step(g->sp)) /* the preparer, at once */
        ;
    return rc;
}

static void check_inv(world_t *wd, gw_t *g, const char *user)
{
    if (g->redis) { /* Redis's own books, read directly: held <= stock, the user's mark */
        int64_t held, total;
        if (redis_books(wd, g, &held, &total) && (held > g->stock_total || total != g->stock_total))
            sim_fail(&wd->log,
                     "gw%d: Redis holds %" PRId64 " units of a stock of %" PRId64
                     " (oversell; the stock as edited is %" PRId64 ")",
                     g->idx, held, total, g->stock_total);
        char k[64];
        snprintf(k, sizeof(k), "{sale:%s}:users", g->sale_id);
        const char *v = user ? sim_redis_hget(wd->rs, k, user) : NULL;
        if (v && atoll(v) > g->limit)
            sim_fail(&wd->log,
                     "gw%d: user %s holds %s units in Redis after a new reservation, the limit "
                     "is %u",
                     g->idx, user, v, g->limit);
        return;
    }
    inv_sale_info_t si;
    if (inv_sale_get(g->inv, g->sale_id, &si) == 0 &&
        (si.accepted_units > g->stock_total || si.stock_total != g->stock_total))
        sim_fail(&wd->log,
                 "gw%d: %" PRId64 " units accepted of a stock of %" PRId64
                 " (oversell; the stock as edited is %" PRId64 ")",
                 g->idx, si.accepted_units, si.stock_total, g->stock_total);
    uint32_t units = 0;
    if (user && inv_user_units(g->inv, g->sale_id, user, &units) == 0 && units > g->limit)
        sim_fail(&wd->log, "gw%d: user %s holds %u units after a new reservation, the limit is %u",
                 g->idx, user, units, g->limit);
}

static void key_pending(world_t *wd, uint32_t u, uint32_t key, int gi, uint32_t qty)
{
    if (key)
        wd->pend[u] =
            (pendkey_t){.active = true, .key = key, .gw = (uint8_t)gi, .qty = (uint8_t)qty};
}

/* The client hears out's answer (the first one only: a shell answers once). */
static void buy_heard(world_t *wd, gw_t *g, buy_t *b, const gw_buy_out_t *out)
{
    if (out->answer == GW_BUY_A_NONE || b->answered)
        return;
    b->answered = true;
    ord_t *r = &wd->ords[b->n];
    const char *what = gw_buy_answer_name(out->answer);
    switch (out->answer) {
    case GW_BUY_A_ACCEPTED:
    case GW_BUY_A_REPLAYED:
        r->state = O_ACKED;
        r->exempt = false;
        sim_trace(&wd->log, "gw%d: buy u%u k%u qty %u -> 202 o%u%s", g->idx, b->u, b->key, r->qty,
                  b->n, out->answer == GW_BUY_A_REPLAYED ? " (replayed)" : "");
        if (b->key &&
            sim_chance(&wd->rng, wd->p_lost_reply)) /* the answer was lost: the client retries */
            key_pending(wd, b->u, b->key, g->idx, r->qty);
        else if (b->key && wd->pend[b->u].key == b->key)
            wd->pend[b->u].active = false;
        return;
    case GW_BUY_A_SPOOL_REFUSED:
    case GW_BUY_A_NOT_CONFIRMED:
        if (b->own) { /* not a key's replay: that order is its first request's */
            if (r->state == O_ACKED)
                sim_fail(&wd->log,
                         "gw%d: o%u was answered 202 to a keyed retry, then 503 to its own buy",
                         g->idx, b->n);
            r->state = O_REFUSED;
            if (out->answer == GW_BUY_A_NOT_CONFIRMED) {
                oq_spool_stats_t ss;
                oq_spool_stats(g->sp, &ss);
                r->cut_unsure = ss.cut_failures > 0;
            }
        }
        sim_trace(&wd->log, "gw%d: buy u%u k%u qty %u -> 503 %s (%s)", g->idx, b->u, b->key, b->qty,
                  what, cm_errname(out->rc));
        key_pending(wd, b->u, b->key, g->idx, b->qty);
        return;
    case GW_BUY_A_NOT_STARTED:
    case GW_BUY_A_IN_PROGRESS:
    case GW_BUY_A_KEY_GIVEN_BACK:
    case GW_BUY_A_INV_FAILED:
        sim_trace(&wd->log, "gw%d: buy u%u k%u qty %u -> %s", g->idx, b->u, b->key, b->qty, what);
        key_pending(wd, b->u, b->key, g->idx, b->qty); /* told to retry */
        return;
    default: /* final refusals: 410, 409, 404 */
        sim_trace(&wd->log, "gw%d: buy u%u k%u qty %u -> %s", g->idx, b->u, b->key, b->qty, what);
        if (b->key && wd->pend[b->u].key == b->key)
            wd->pend[b->u].active = false;
        return;
    }
}

/* The actions that need no further event (gw_buy.c buy_do); the client hears the answer. */
static void buy_act(world_t *wd, gw_t *g, buy_t *b, const gw_buy_out_t *out)
{
    if (out->actions & GW_BUY_DO_GIVE_BACK) {
        giveback(wd, g, b->n); /* gw_release_unaccepted */
        if (gw_died(wd, g))
            return;
    }
    if (out->actions & GW_BUY_DO_KNOWN)
        set_status(g, b->n, ST_QUEUED);
    buy_heard(wd, g, b, out);
}

/* The record's write (gw_buy.c spool_later, spool_flush) and its SPOOLED
 * event: answered, or waiting for the group commit. */
static void buy_spool(world_t *wd, gw_t *g, buy_t *b, gw_buy_out_t *out)
{
    oq_order_t o;
    fill_order(wd, b->n, &o);
    /* Redis: a keyed retry claimed a reserve in doubt, or one answered 503 whose
     * give-back has not run yet: spooled again, it is the key's order */
    if (g->redis && (wd->ords[b->n].state == O_FREE || wd->ords[b->n].state == O_REFUSED))
        wd->ords[b->n].state = O_APPENDED;
    const oq_order_t *one = &o;
    size_t kept;
    oq_pos_t end;
    int rc = oq_spool_append_batch(g->sp, &one, 1, &kept, &end);
    if (kept == 1) {
        wd->ords[b->n].rec_end = end;
        wd->ords[b->n].rec_gen = g->gen;
    }
    /* the preparer thread is woken by a roll and flushes the rolled segment at once */
    while (!sim_disk_dead(g->disk) && oq_spool_step(g->sp))
        ;
    if (gw_died(wd, g)) {
        key_pending(wd, b->u, b->key, g->idx, b->qty);
        return;
    }
    gw_buy_core_step(&b->core, &(gw_buy_ev_t){.kind = GW_BUY_EV_SPOOLED, .rc = rc}, 0, out);
    buy_act(wd, g, b, out);
    inv_sale_info_t si; /* (Redis: its give-back may wait in the releaser's queue) */
    if (g->up && b->own && out->answer == GW_BUY_A_SPOOL_REFUSED && !g->redis &&
        inv_sale_get(g->inv, g->sale_id, &si) == 0 && si.accepted_units != b->held_before)
        sim_fail(&wd->log,
                 "gw%d: o%u's spool write failed (503) and its %u units were not given back",
                 g->idx, b->n, b->qty);
    if (!g->up || !(out->actions & GW_BUY_DO_SYNC))
        return;
    g->wait[g->nwait++] = (waiter_t){.buy = *b, .end = end};
    if (!b->answered)
        key_pending(wd, b->u, b->key, g->idx, b->qty); /* until then the client knows nothing */
    sim_trace(&wd->log, "gw%d: buy u%u k%u qty %u: o%u appended, waits for the fdatasync", g->idx,
              b->u, b->key, b->qty, b->n);
}

/* The group commit (durability fsync, gw_buy.c sync_work and sync_after): one
 * oq_spool_sync_to up to the last waiting buy's record; if it fails, each buy
 * is answered by its own record's end (an earlier round, such as an event's
 * commit, may have made it durable), through the core's SYNCED. */
static void sync_step(world_t *wd, gw_t *g)
{
    if (!g->up || g->nwait == 0)
        return;
    sim_disk_use(g->disk);
    oq_pos_t upto = {0, 0};
    for (size_t i = 0; i < g->nwait; i++)
        if (oq_pos_cmp(g->wait[i].end, upto) > 0)
            upto = g->wait[i].end;
    int rc = oq_spool_sync_to(g->sp, upto);
    if (gw_died(wd, g))
        return;
    sim_trace(&wd->log, "gw%d: fdatasync for %zu buys: %s", g->idx, g->nwait,
              rc == 0 ? "ok" : cm_errname(rc));
    for (size_t i = 0; i < g->nwait && g->up; i++) {
        waiter_t *wt = &g->wait[i];
        int brc = rc == 0 ? 0 : oq_spool_sync_to(g->sp, wt->end);
        gw_buy_out_t out;
        gw_buy_core_step(&wt->buy.core, &(gw_buy_ev_t){.kind = GW_BUY_EV_SYNCED, .rc = brc}, 0,
                         &out);
        buy_act(wd, g, &wt->buy, &out);
    }
    g->nwait = 0;
}

/* A Redis reserve or claim whose answer was lost (a timeout, the connection
 * gone): it may have run. The worker's doubt list gives it back (inv_giveback:
 * a claimed order stays held); until that succeeds the releaser holds it, and
 * a crash loses it with the process (its units stay held: docs/fleet.md). */
static void doubt_giveback(world_t *wd, gw_t *g, const inv_reserve_req_t *req)
{
    oq_order_t gb;
    memset(&gb, 0, sizeof(gb));
    gb.type = OQ_MSG_ORDER;
    gb.giveback = true;
    snprintf(gb.order_id, sizeof(gb.order_id), "%s", req->order_id);
    snprintf(gb.sale_id, sizeof(gb.sale_id), "%s", g->sale_id);
    snprintf(gb.user_id, sizeof(gb.user_id), "%s", req->user_id);
    gb.qty = req->qty;
    int rc = gw_units_release(g->inv, &gb);
    sim_trace(&wd->log, "gw%d: %s in doubt given back: %s", g->idx, gb.order_id, cm_errname(rc));
    if (!gw_release_ok(&gb, rc))
        rel_push(g, &gb, -1);
}

/* A buy (gw_buy.c's shell, on the simulated world): the real core
 * (gw_buy_core.h) decides; this gives it the facts (the sale's window, the
 * inventory's reserve and claim, the spool's write and fdatasync) and
 * performs what it asks. No rate limits, identity or room here. */
static void do_buy(world_t *wd)
{
    uint32_t u = sim_below(&wd->rng, (uint32_t)wd->nu);
    pendkey_t *pk = &wd->pend[u];
    bool retry = pk->active && sim_below(&wd->rng, 4) != 0;
    uint32_t key = 0, qty;
    int gi;
    if (retry) {
        key = pk->key;
        qty = pk->qty;
        gi = pk->gw; /* a retry goes to the gateway its key belongs to (sales are per gateway) */
    } else {
        gi = (int)sim_below(&wd->rng, (uint32_t)wd->ng);
        qty = 1 + (sim_below(&wd->rng, 4) == 0);
        if (sim_below(&wd->rng, 10) < 7)
            key = ++wd->keygen;
    }
    gw_t *g = &wd->gw[gi];
    if (!g->up || !g->sale) { /* (Redis: a sale not read yet answers 404/503) */
        key_pending(wd, u, key, gi, qty);
        return; /* connection refused: the client tries again later */
    }
    if (wd->nords + 1 >= ORD_MAX || g->nwait == CM_ARRAY_LEN(g->wait))
        return;
    if (lot_buy(wd, g, u, qty, key))
        return;
    buy_t b = {.u = u, .key = key, .qty = qty};
    gw_buy_core_init(&b.core, wd->fsync_mode);
    gw_buy_out_t out;
    /* the sale's window as the buy path reads it (gw_buy.c head_facts) */
    inv_sale_terms_t terms;
    inv_sale_terms(g->sale, &terms);
    int64_t wall = cm_wall_ms();
    gw_buy_ev_t ev = {.kind = GW_BUY_EV_HEAD,
                      .fair = GW_BUY_FAIR_OPEN,
                      .starts_at_ms = terms.starts_at_ms,
                      .ends_at_ms = terms.ends_at_ms};
    gw_buy_core_step(&b.core, &ev, wall, &out);
    if (out.answer == GW_BUY_A_NONE) {
        ev = (gw_buy_ev_t){.kind = GW_BUY_EV_BUYER, .qty = qty, .per_user_limit = terms.per_user_limit};
        gw_buy_core_step(&b.core, &ev, wall, &out);
    }
    if (out.answer == GW_BUY_A_NONE) {
        ev = (gw_buy_ev_t){.kind = GW_BUY_EV_LIMITS, .rate_allowed = true, .fair = GW_BUY_FAIR_OPEN};
        gw_buy_core_step(&b.core, &ev, wall, &out);
    }
    if (!(out.actions & GW_BUY_DO_RESERVE)) {
        b.n = 0; /* no order: the oracle's slot 0 is never one */
        buy_heard(wd, g, &b, &out);
        return;
    }
    uint32_t n = wd->nords++;
    b.n = n;
    wd->ords[n] = (ord_t){.gw = (uint8_t)gi,
                          .user = (uint8_t)u,
                          .qty = (uint8_t)qty,
                          .key = key,
                          .limit_at = (uint8_t)g->limit,
                          .gen = g->gen};
    inv_reserve_req_t req = {.sale = g->sale, .qty = qty};
    snprintf(req.user_id, sizeof(req.user_id), "u%u", u);
    if (key)
        snprintf(req.idem_key, sizeof(req.idem_key), "k%u", key);
    snprintf(req.order_id, sizeof(req.order_id), "o%u", n);
    sim_disk_use(g->disk);
    inv_sale_info_t before;
    memset(&before, 0, sizeof(before));
    int64_t total = 0;
    if (g->redis) /* the oracle's read, not a call that may fail or draw a fault */
        before.stock_left = redis_books(wd, g, &before.accepted_units, &total)
                                ? total - before.accepted_units
                                : 0;
    else if (inv_sale_get(g->inv, g->sale_id, &before) != 0)
        before.stock_left = before.accepted_units = 0;
    b.held_before = before.accepted_units;
    uint64_t edits = wd->yield_edits;
    wd->in_reserve = g;
    int rc = inv_reserve(g->w, &req);
    wd->in_reserve = NULL;
    bool doubt = rc < 0; /* Redis: it may have run */
    if (doubt && g->redis) { /* when (and so under which limit), nobody knows: never checked
                              * itself, and sorted after the others (final_checks) */
        wd->ords[n].rseq = UINT32_MAX;
        wd->ords[n].limit_at = UINT8_MAX;
    }
    /* (Redis: a 410 may come from the sale's local sold-out view, which the
     * subscriber the simulator does not run would refresh) */
    if (rc == INV_SOLD_OUT && !g->redis && wd->yield_edits == edits &&
        before.stock_left >= (int64_t)qty) {
        sim_fail(&wd->log,
                 "gw%d: a buy of %u answered 410 sold out while %" PRId64 " units were left", gi,
                 qty, before.stock_left);
        return;
    }
    ev = (gw_buy_ev_t){.kind = GW_BUY_EV_RESERVED, .rc = rc};
    if (rc == INV_RESERVED) {
        /* a new reservation leaves stock and limit kept (a replay may hold more
         * for a while, by design, until the outcomes read again give units back) */
        check_inv(wd, g, req.user_id);
        if ((g->starts_ms && wall < g->starts_ms) || (g->ends_ms && wall >= g->ends_ms))
            sim_fail(&wd->log, "gw%d: o%u reserved outside the sale's window", gi, n);
        wd->ords[n].rseq = ++wd->rseq;
        wd->ords[n].state = O_APPENDED;
        b.own = true;
    } else {
        wd->ords[n].state = O_FREE; /* this id was never used */
    }
    if (rc == INV_DUPLICATE) {
        uint32_t acked = ord_of(req.order_id);
        if (acked == 0 || acked >= wd->nords) {
            sim_fail(&wd->log, "gw%d: a keyed retry found an unknown order %s", gi, req.order_id);
            return;
        }
        b.n = acked;
        /* ours: reserved by this incarnation (gw_buy.c duplicate_facts reads
         * it from the id's node and time); the status table is bounded */
        ev.ours = wd->ords[acked].gen == g->gen;
        ev.seen = g->status[acked] == ST_NONE ? GW_BUY_SEEN_UNKNOWN : GW_BUY_SEEN_FOUND;
        ev.claimed = req.claimed;
    }
    gw_buy_core_step(&b.core, &ev, wall, &out);
    if (out.actions & GW_BUY_DO_CLAIM) {
        rc = inv_claim(g->w, &req);
        gw_buy_core_step(&b.core, &(gw_buy_ev_t){.kind = GW_BUY_EV_CLAIMED, .rc = rc}, wall, &out);
    }
    buy_heard(wd, g, &b, &out); /* the plant buy_ack_before_spool answers here */
    if (g->redis && doubt)
        doubt_giveback(wd, g, &req);
    if (out.actions & GW_BUY_DO_SPOOL)
        buy_spool(wd, g, &b, &out);
}

/* A client cancels one of its orders (oq_relay_cancel: a cancel EVENT, committed). */
static void do_cancel(world_t *wd)
{
    if (wd->nords < 2)
        return;
    uint32_t n = 1 + sim_below(&wd->rng, wd->nords - 1);
    ord_t *r = &wd->ords[n];
    gw_t *g = &wd->gw[r->gw];
    if (r->state != O_ACKED || !g->up)
        return;
    oq_order_t c;
    fill_order(wd, n, &c);
    c.type = OQ_MSG_CANCEL;
    c.accepted_at_ms = 0;
    c.idem_key[0] = '\0';
    snprintf(c.reason, sizeof(c.reason), "by the buyer");
    sim_disk_use(g->disk);
    int rc = spool_event(g, &c);
    if (gw_died(wd, g))
        return;
    sim_trace(&wd->log, "gw%d: cancel o%u -> %s", r->gw, n, rc == 0 ? "202" : cm_errname(rc));
}

/*---- the lottery: the product's (gw_lottery.c) in the fairness module's state,
 * its accept sequence buy's (gw_accept.c), watched ----*/

/* An entry's user and entry id ("uN", "oN": the simulator's ids). */
static uint32_t ent_user(const entry_t *e)
{
    return (uint32_t)strtoul(e->user_id + 1, NULL, 10);
}

static uint32_t ent_ord(const entry_t *e)
{
    return ord_of(e->order_id);
}

/* The draw published (its "F" durable): buys are first-come again. */
static bool lot_drawn(const gw_t *g)
{
    return g->lot.fs && atomic_load(&g->lot.fs->drawn);
}

/* The oracle's sort key of a user: siphash(secret, user id), as fair.json's secret gives it. */
static uint64_t lot_hash(const lottery_t *L, uint32_t user)
{
    char id[16];
    int len = snprintf(id, sizeof(id), "u%u", user);
    return cm_hash_sip24(&L->secret, id, (size_t)len);
}

/* The draw's entrant with entry id ord (NULL: not among the frozen entrants). */
static entry_t *lot_id(lottery_t *L, uint32_t ord)
{
    char id[16];
    snprintf(id, sizeof(id), "o%u", ord);
    entry_t *e = gw_fair__find_id(L->fs, id);
    return e && e < L->fs->v + L->fs->ndraw ? e : NULL;
}

/* The whole file name holds on the disk as the page cache holds it
 * (malloc'd; *n its length), or NULL if there is none or it cannot be read. */
static char *disk_read(const char *name, size_t *n)
{
    const oq_fs_ops_t *fs = sim_disk_ops();
    int dfd = fs->open_dir("fair");
    if (dfd < 0)
        return NULL;
    int fd = fs->openat(dfd, name, O_RDONLY, 0);
    fs->close(dfd);
    struct stat st;
    if (fd < 0 || fs->fstat(fd, &st) != 0) {
        if (fd >= 0)
            fs->close(fd);
        return NULL;
    }
    char *buf = cm_xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t r;
    while (got < (size_t)st.st_size &&
           (r = fs->pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got)) > 0)
        got += (size_t)r;
    fs->close(fd);
    *n = got;
    return buf;
}

/* The oracle's read of the entry log before a start, as the page cache
 * holds it: a journal (gw_lottery.c's records framed), never a line log. */
static void lot_check_log(world_t *wd, gw_t *g)
{
    char name[32];
    size_t n = 0;
    snprintf(name, sizeof(name), "%s.log", g->sale_id);
    sim_disk_use(g->disk);
    char *buf = g->lot.on ? disk_read(name, &n) : NULL;
    if (!buf)
        return;
    cm_journal_scan_t sc;
    cm_journal_scan_mem(buf, n, NULL, NULL, &sc);
    free(buf);
    if (sc.is_legacy)
        sim_fail(&wd->log, "gw%d: lottery: the entry log is not a journal (%zu bytes)", g->idx, n);
    if (sc.holes)
        sim_trace(&wd->log, "gw%d: lottery: %zu holes (%lld bytes) in the entry log skipped",
                  g->idx, sc.holes, (long long)sc.hole_bytes);
    if ((size_t)sc.end < n)
        sim_trace(&wd->log, "gw%d: lottery: a torn tail of %zu bytes to cut off the entry log",
                  g->idx, n - (size_t)sc.end);
}

/* The oracle at every step of a draw: the same seed and order as when first
 * drawn (first: at its first accept, before any winner took units). */
/* Entries may be lost, by design: a power loss before the seed, or the entry
 * log's pages a failed fdatasync dropped, evicted (sim_disk.h). */
static bool lot_entries_lossy(gw_t *g)
{
    sim_disk_stats_t ds;
    sim_disk_stats(g->disk, &ds);
    return g->lot.o_power || ds.evictions > 0;
}

static void lot_check_order(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    gw_fair_sale_t *fs = L->fs;
    if (!fs || !fs->seeded || fs->seed_unsynced || !fs->perm || fs->ndraw > NU_MAX)
        return;
    uint8_t order[NU_MAX];
    size_t n = fs->ndraw;
    for (size_t i = 0; i < n; i++)
        order[i] = (uint8_t)ent_user(&fs->v[fs->perm[i]]);
    if (!L->o_seeded) {
        /* the order is the seed's: gw_fair_order over the entrants' keys, computed here
         * from their user ids (not the product's perm), so a draw that took its entrants
         * in another order (arrival order) fails here even when every step agrees */
        uint64_t keys[NU_MAX] = {0};
        uint32_t want[NU_MAX];
        for (size_t i = 0; i < n; i++)
            keys[i] = lot_hash(L, ent_user(&fs->v[i]));
        gw_fair_order(keys, n, fs->seed, want);
        for (size_t i = 0; i < n; i++)
            if (order[i] != ent_user(&fs->v[want[i]]))
                sim_fail(&wd->log,
                         "gw%d: lottery: u%u drawn at position %zu; seed %016" PRIx64
                         " and the entrants' keys put u%u there",
                         g->idx, order[i], i + 1, fs->seed, ent_user(&fs->v[want[i]]));
        /* one entry per user; every entry answered is in the draw (no power loss) */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (ent_user(&fs->v[i]) == ent_user(&fs->v[j]))
                    sim_fail(&wd->log, "gw%d: lottery: u%u has two entries in the draw", g->idx,
                             ent_user(&fs->v[i]));
        for (int u = 0; u < wd->nu && !lot_entries_lossy(g); u++)
            if (L->o_entry[u] && !lot_id(L, L->o_entry[u]))
                sim_fail(&wd->log,
                         "gw%d: lottery: u%d was answered entered (e%u) and is not in the draw",
                         g->idx, u, L->o_entry[u]);
        inv_sale_info_t si;
        inv_sale_get(g->inv, g->sale_id, &si);
        L->o_seeded = true;
        L->o_seed = fs->seed;
        L->o_ndraw = n;
        memcpy(L->o_order, order, n);
        L->o_stock = si.stock_left;
        L->o_limit = g->limit;
        L->o_units_back = g->units_back;
        return;
    }
    if (fs->seed != L->o_seed || n != L->o_ndraw || memcmp(order, L->o_order, n) != 0)
        sim_fail(&wd->log,
                 "gw%d: lottery: the draw resumed with seed %016" PRIx64 " and %zu entrants, "
                 "first drawn with seed %016" PRIx64 " and %zu: another order",
                 g->idx, fs->seed, n, L->o_seed, L->o_ndraw);
}

/* The oracle after each step of the draw's thread, under fsync durability:
 * what a status poll answers of each drawn entrant (the real ticket's rule,
 * gw_fair_core_answered), and an outcome once answered is kept across
 * crashes and power losses (a LOST one never wins: obs_take checks it). */
static void lot_check_told(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    gw_fair_sale_t *fs = L->fs;
    if (!wd->fsync_mode || !g->up || !L->on || !fs || !fs->seeded || !fs->perm)
        return;
    for (size_t i = 0; i < fs->ndraw && !wd->log.failed; i++) {
        const entry_t *e = &fs->v[fs->perm[i]];
        uint32_t u = ent_user(e);
        if (L->o_held_lost[u]) /* its commit failed: the record may come back (undersell) */
            L->o_told[u] = UINT8_MAX;
        if (L->o_told[u] == UINT8_MAX || (e->state != GW_ENTRY_WON && e->state != GW_ENTRY_LOST))
            continue;
        if (!gw_fair_core_answered(&fs->core, (uint32_t)(i + 1)))
            continue;
        if (!L->o_told[u]) {
            L->o_told[u] = e->state;
            L->o_told_lost[u] |= e->state == GW_ENTRY_LOST;
        } else if (L->o_told[u] != e->state) {
            sim_fail(&wd->log, "gw%d: lottery: u%u was answered %s, now %s", g->idx, u,
                     gw_entry_state_name((gw_entry_state_t)L->o_told[u]),
                     gw_entry_state_name((gw_entry_state_t)e->state));
        }
    }
}

/* The oracle once a draw is done: winners within the stock, each entrant
 * reserved once if it won and never if it lost, and (no units came back
 * meanwhile) the winners those the seed's order gives. */
static void lot_check_done(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    gw_fair_sale_t *fs = L->fs;
    if (L->o_done)
        return;
    L->o_done = true;
    bool exact = g->units_back == L->o_units_back && !L->o_inexact;
    int64_t units = 0, left = L->o_stock;
    bool exhausted = false;
    for (size_t i = 0; i < fs->ndraw && !wd->log.failed; i++) {
        const entry_t *e = &fs->v[fs->perm[i]];
        uint32_t u = ent_user(e);
        if (e->state == GW_ENTRY_WON)
            units += e->qty;
        L->o_won[u] = e->state;
        exact = exact && !L->o_held_lost[u];
        uint32_t held = 0;
        inv_user_units(g->inv, g->sale_id, e->user_id, &held);
        /* never more than its entry; exactly it or nothing unless units came back */
        uint32_t want = e->state == GW_ENTRY_WON ? e->qty : 0;
        if (held > e->qty || (exact && held != want))
            sim_fail(&wd->log,
                     "gw%d: lottery: entrant %s %s with %u units, holds %u after the draw", g->idx,
                     e->user_id, e->state == GW_ENTRY_WON ? "won" : "lost", e->qty, held);
        bool wins = !exhausted && e->qty <= L->o_limit && left >= e->qty;
        if (wins)
            left -= e->qty;
        if (left <= 0)
            exhausted = true;
        if (exact && wins != (e->state == GW_ENTRY_WON))
            sim_fail(&wd->log,
                     "gw%d: lottery: %s at draw position %zu %s; its seed's order and a stock of "
                     "%" PRId64 " say it %s",
                     g->idx, e->user_id, i + 1, e->state == GW_ENTRY_WON ? "won" : "lost",
                     L->o_stock, wins ? "wins" : "loses");
    }
    int64_t back = (int64_t)(g->units_back - L->o_units_back);
    if (units > L->o_stock + back)
        sim_fail(&wd->log,
                 "gw%d: lottery: winners hold %" PRId64 " units of a stock of %" PRId64 " (%" PRId64
                 " units came back during the draw)",
                 g->idx, units, L->o_stock, back);
    sim_trace(&wd->log,
              "gw%d: lottery: draw done, %zu entrants, %" PRId64 " units won of %" PRId64 "%s",
              g->idx, fs->ndraw, units, L->o_stock, exact ? "" : " (units came back meanwhile)");
}

/* Gives back the units of an order whose record could not be written
 * (gw_release_unaccepted). The caller checks whether the process died in it
 * (gw_died). */
static void giveback(world_t *wd, gw_t *g, uint32_t n)
{
    oq_order_t gb;
    fill_order(wd, n, &gb);
    gb.type = OQ_MSG_RELEASE;
    gb.giveback = true;
    gb.status = OQ_STATUS_FAILED;
    gb.accepted_at_ms = 0;
    gb.idem_key[0] = '\0';
    int ev = spool_event(g, &gb);
    if (sim_disk_dead(g->disk))
        return;
    wd->ords[n].gb_durable |= ev == 0 && wd->fsync_mode;
    int rc = inv_giveback(g->inv, gb.sale_id, gb.user_id, gb.qty, gb.order_id);
    if (rc == 0)
        g->units_back += gb.qty;
    else if (!gw_release_ok(&gb, rc)) /* Redis: gw_release_unaccepted queues it to the releaser */
        rel_push(g, &gb, -1);
}

/*
 * The accept sequence the product's draw runs for each winner is buy's own
 * (gw_acceptor over the process's inventory, spool and stepped releaser:
 * gw_accept.c's take, commit, publish and find), each call watched by the
 * oracle before and after it. The process dead (its disk), nothing runs:
 * the caller's gw_died after the draw cleans it up.
 */
static int obs_take(void *ctx, const gw_accept_req_t *req, gw_accept_t *a)
{
    gw_t *g = ctx;
    world_t *wd = g->wd;
    lottery_t *L = &g->lot;
    if (sim_disk_dead(g->disk))
        return CM_EIO;
    lot_check_order(wd, g);
    uint32_t n = ord_of(req->rq->order_id), u = (uint32_t)strtoul(req->user + 1, NULL, 10);
    if (u < NU_MAX)
        L->tried[u] = true;
    gw_acceptor_t real = gw_acceptor(&L->srv);
    int rc = gw_accept_take(&real, req, a);
    if (rc != GW_ACCEPT_SPOOLED && rc != GW_ACCEPT_SPOOL_REFUSED)
        return rc; /* not reserved: nothing changed */
    check_inv(wd, g, req->rq->user_id);
    ord_t *r = &wd->ords[n];
    r->state = O_APPENDED; /* a death in the append: its record may be in the spool */
    /* Its record's place, as a buy's (buy_spool), for copies_gone: without
     * it a winner's record lost with its process's copy read as a defect
     * (flashgate-sim --seed 13808 --open-defects: the process died in the
     * write-again of the segment, whose dropped pages were evicted). */
    if (rc == GW_ACCEPT_SPOOLED) {
        r->rec_end = a->end;
        r->rec_gen = g->gen;
    }
    r->limit_at = (uint8_t)g->limit;
    r->rseq = ++wd->rseq;
    if ((L->o_done && L->o_won[u] != GW_ENTRY_WON) || L->o_told_lost[u])
        sim_fail(&wd->log, "gw%d: lottery: u%u was told it lost the draw, and now it won", g->idx,
                 u);
    if (rc == GW_ACCEPT_SPOOL_REFUSED) {
        /* lost for cause, its units queued to the releaser (gw_release_unaccepted),
         * back for the entrants after it: the draw's counts are not the seed's */
        L->o_inexact = true;
        if (!sim_disk_dead(g->disk))
            r->state = O_REFUSED;
    }
    return rc;
}

/* The winners' records made durable, then the oracle's note of each one cut
 * (lost, its units held: undersell). */
static void obs_commit(void *ctx, gw_accept_t *a, size_t n)
{
    gw_t *g = ctx;
    world_t *wd = g->wd;
    lottery_t *L = &g->lot;
    gw_acceptor_t real = gw_acceptor(&L->srv);
    gw_accept_commit(&real, a, n);
    if (sim_disk_dead(g->disk)) /* died in it: what it decided dies with it */
        return;
    for (size_t i = 0; i < n; i++) {
        if (a[i].durable)
            continue;
        uint32_t o = ord_of(a[i].o.order_id), u = wd->ords[o].user;
        L->o_inexact = true;
        L->o_held_lost[u] = true;
        wd->ords[o].state = O_REFUSED;
        sim_trace(&wd->log, "gw%d: lottery: o%u's fdatasync failed: lost", g->idx, o);
    }
}

/* A winner's order known: in the status table, and to the oracle a 202
 * (GET /v1/orders/{id} answers as for one). */
static void lot_known(world_t *wd, gw_t *g, uint32_t n)
{
    ord_t *r = &wd->ords[n];
    if (r->state != O_ACKED) {
        r->state = O_ACKED;
        r->exempt = false;
    }
    set_status(g, n, ST_QUEUED);
}

/* The real publish (the product's status table indexes no "oN" id: the
 * world's, g->status, takes each order after it). */
static void obs_publish(void *ctx, const gw_accept_t *a, size_t n)
{
    gw_t *g = ctx;
    if (sim_disk_dead(g->disk))
        return;
    gw_acceptor_t real = gw_acceptor(&g->lot.srv);
    gw_accept_publish(&real, a, n);
    for (size_t i = 0; i < n; i++)
        lot_known(g->wd, g, ord_of(a[i].o.order_id));
}

static int obs_find(void *ctx, const char *order_id, gw_accept_t *a)
{
    gw_t *g = ctx;
    gw_acceptor_t real = gw_acceptor(&g->lot.srv);
    return gw_accept_find(&real, order_id, a);
}

static const gw_accept_ops_t obs_accept_ops = {
    .take = obs_take,
    .commit = obs_commit,
    .publish = obs_publish,
    .find = obs_find,
};

/* The lottery's releaser's turn (gw_releaser_step: a refused winner's
 * give-back, its event committed first), the units it gave back counted
 * for the oracle. The caller checks whether the process died in it. */
static void lot_release_step(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    uint64_t pending = 0, done, retries;
    if (L->f)
        gw_releaser_stats(&L->srv, &pending, &done, &retries);
    if (!pending || sim_disk_dead(g->disk))
        return;
    inv_sale_info_t before, after;
    if (inv_sale_get(g->inv, g->sale_id, &before) != 0)
        return;
    gw_releaser_step(&L->srv);
    if (inv_sale_get(g->inv, g->sale_id, &after) == 0 &&
        after.accepted_units < before.accepted_units) {
        g->units_back += (uint64_t)(before.accepted_units - after.accepted_units);
        sim_trace(&wd->log, "gw%d: lottery: releaser: %" PRId64 " units back", g->idx,
                  before.accepted_units - after.accepted_units);
    }
}

/* One gateway's store (gw_fair__lot_local) with its draw's steps
 * (gw_fair__draw_local) but one: the draw's thread pauses after a few
 * entrants (a TICK past the step's budget draws nobody, and the draw
 * resumes at the next step as a tick resumes it), so that a crash cuts a
 * draw anywhere. */
static gw_fair_lot_ops_t sim_lot_ops;
static gw_fair_draw_ops_t sim_draw_ops;

static void sim_draw_step(gw_fair_draw_t *d, const gw_fair_ev_t *ev, gw_fair_out_t *out)
{
    gw_t *g = d->f->accept.ctx;
    gw_fair__draw_local.step(d, ev, out);
    if (ev->kind != GW_FAIR_EV_TICK || !(out->actions & GW_FAIR_DO_DRAW))
        return;
    if (g->lot.budget == 0)
        out->actions &= ~(unsigned)GW_FAIR_DO_DRAW;
    else
        g->lot.budget--;
}

/* The server's parts the fairness module reads (gw_server.c's order: after
 * the spool's replay): its configuration (durability, the entries' cap,
 * the memory inventory, the data directory: one directory on sim_disk),
 * its node, stores and a stepped releaser. */
static void lot_srv_init(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    memset(&L->cfg, 0, sizeof(L->cfg));
    memset(&L->srv, 0, sizeof(L->srv));
    L->cfg.durability = wd->fsync_mode ? GW_DURABILITY_FSYNC : GW_DURABILITY_WRITE;
    L->cfg.max_lottery_entries = NU_MAX;
    snprintf(L->cfg.inventory, sizeof(L->cfg.inventory), "memory");
    snprintf(L->cfg.data_dir, sizeof(L->cfg.data_dir), "data");
    L->srv.cfg = &L->cfg;
    atomic_store(&L->srv.node.id, (uint32_t)g->idx); /* the orders' node_id */
    L->srv.stores.inv = g->inv;
    L->srv.stores.spool = g->sp;
}

/* The fairness module of g's process without its thread (gw_fair_close, the
 * releaser and the status table; f->inv is the world's worker, g->w, which
 * goes with the process). */
static void lot_srv_close(gw_t *g)
{
    lottery_t *L = &g->lot;
    if (L->srv.fair)
        L->srv.fair->inv = NULL;
    gw_fair_close(&L->srv);
    if (L->srv.stores.releaser)
        gw_releaser_stop(&L->srv); /* its queue with it: the spool replays the give-backs */
    gw_orders_free(L->srv.stores.orders);
    L->srv.stores.orders = NULL;
    L->f = NULL;
    L->fs = NULL;
}

/*
 * The operator's PUT of the sale's lottery before the sale opens
 * (h_sale_put's gw_fair_configure on the gateway's first process): the
 * sale's slot, its secret, its entry log made and fair.json saved
 * (cm_journal_replace_file: fdatasync, rename, directory fsync), then the
 * process stops. The window closes at closes_ms: the sale starts at the
 * world's start and its window lasts until then, the entries taken from
 * the start. On the world's faulty disk: a PUT that failed is sent again, as
 * the admin API tells the operator (a retry saves what the failed one left
 * unsaved), 8 times, then once more with the disk's faults mended (a full
 * disk never takes it). The oracle reads the secret back from fair.json.
 */
static void lot_configure(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    char err[256] = "";
    sim_disk_use(g->disk);
    sim_disk_set_faults(g->disk, 0, 0); /* the process's start; its PUT on the faulty disk */
    lot_srv_init(wd, g);
    int rc = gw_fair_open(&L->srv, gw_acceptor(&L->srv), err, sizeof(err));
    sim_disk_set_faults(g->disk, wd->p_fsync_fail, g->disk_cap);
    for (int tries = 0; rc == 0; tries++) {
        if (tries == 8)
            sim_disk_set_faults(g->disk, 0, 0);
        rc = gw_fair_configure(&L->srv, g->sale_id, L->closes_ms - g->starts_ms, 0, 0, err,
                               sizeof(err));
        if (rc == 0 || tries == 8)
            break;
        rc = 0;
    }
    lot_srv_close(g);
    size_t n = 0;
    char *text = rc == 0 ? disk_read("fair.json", &n) : NULL;
    sim_disk_set_faults(g->disk, wd->p_fsync_fail, g->disk_cap);
    json_t *root = text ? json_loadb(text, n, 0, NULL) : NULL;
    json_t *sale = json_array_get(json_object_get(root, "sales"), 0);
    const char *k0 = json_string_value(json_object_get(sale, "k0")),
               *k1 = json_string_value(json_object_get(sale, "k1"));
    if (k0 && k1) {
        L->secret.k0 = strtoull(k0, NULL, 16);
        L->secret.k1 = strtoull(k1, NULL, 16);
    } else {
        sim_fail(&wd->log, "gw%d: lottery: configured (%s), fair.json holds no secret", g->idx,
                 rc == 0 ? "ok" : err);
    }
    json_decref(root);
    free(text);
}

/*
 * The fairness module of g's process, as gw_server.c opens it after the
 * spool's replay (gw_fair_open: fair.json read, the sale's slot with its
 * terms, the entry log read back, gw_fair__log_load: the journal's
 * recovery, each record through the core, a found seed made durable, and
 * opened for appends, the winners of a cut draw read from the spool,
 * gw_fair__cut_winners), buy's accept sequence watched (obs_take), then
 * the world's pausing draw (sim_draw_step) in the local store's place, and
 * one term by hand: no waitlist (gw_fair__sale_terms sets one for every
 * sale; the leftovers are sim_fair.c's, and this oracle's losers lose). No
 * status table of the product's use: the simulator's is g->status, and the
 * product indexes no "oN" id. False if the module cannot open (the gateway
 * does not start). The caller checks whether the process died in it
 * (gw_died).
 */
static bool lot_open(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    if (!L->on)
        return true;
    sim_disk_use(g->disk);
    lot_srv_init(wd, g);
    L->srv.stores.orders = gw_orders_new(0);
    gw_releaser_open_stepped(&L->srv);
    char err[256];
    int rc =
        gw_fair_open(&L->srv, (gw_acceptor_t){.ops = &obs_accept_ops, .ctx = g}, err, sizeof(err));
    gw_fair_t *f = L->f = L->srv.fair;
    if (sim_disk_dead(g->disk))
        return true;
    if (rc != 0) {
        sim_trace(&wd->log, "gw%d: lottery: %s", g->idx, err);
        return false;
    }
    f->inv = g->w; /* the lottery thread's inventory handle */
    sim_draw_ops = gw_fair__draw_local;
    sim_draw_ops.step = sim_draw_step;
    sim_lot_ops = gw_fair__lot_local;
    sim_lot_ops.draw = &sim_draw_ops;
    f->lot = &sim_lot_ops;
    L->fs = gw_fair__slot_find(f, g->sale_id);
    if (!L->fs) {
        sim_fail(&wd->log, "gw%d: lottery: fair.json lost the sale's lottery", g->idx);
        return true;
    }
    atomic_store(&L->fs->sale.cfg.waitlist, false);
    return true;
}

/* The process's fairness module goes with the process (dead after a crash:
 * the log's descriptor); the log and fair.json stay. */
static void lot_close(gw_t *g)
{
    if (g->lot.srv.fair || g->lot.srv.stores.releaser)
        lot_srv_close(g);
}

/*
 * A buy on a sale whose lottery has not drawn (gw_buy.c fair_enter): the
 * product's gw_fair_enter (the machine's answer, the entry's "E" record
 * written first), the entry id the order id it becomes if it wins. False:
 * first-come as usual.
 */
static bool lot_buy(world_t *wd, gw_t *g, uint32_t u, uint32_t qty, uint32_t key)
{
    lottery_t *L = &g->lot;
    if (!L->on || !L->fs || lot_drawn(g))
        return false;
    sim_disk_use(g->disk);
    uint32_t n = wd->nords;
    wd->ords[n] = (ord_t){.gw = (uint8_t)g->idx,
                          .user = (uint8_t)u,
                          .qty = (uint8_t)qty,
                          .key = key,
                          .limit_at = (uint8_t)g->limit};
    gw_fair_ticket_t t;
    memset(&t, 0, sizeof(t));
    snprintf(t.order_id, sizeof(t.order_id), "o%u", n);
    snprintf(t.sale_id, sizeof(t.sale_id), "%s", g->sale_id);
    snprintf(t.user_id, sizeof(t.user_id), "u%u", u);
    t.qty = qty;
    t.entered_at_ms = cm_wall_ms();
    char idem[16];
    snprintf(idem, sizeof(idem), "k%u", key);
    int rc = gw_fair_enter(L->fs, &t, key ? idem : NULL);
    if (rc == 0 || rc == CM_EIO || sim_disk_dead(g->disk))
        wd->nords++; /* its record may be in the log: an entry the draw may take */
    if (gw_died(wd, g))
        return true; /* its client hears nothing */
    uint32_t was = ord_of(t.order_id);
    if (rc == 1) {
        if (L->o_entry[u] && was != L->o_entry[u] && !lot_entries_lossy(g))
            sim_fail(&wd->log, "gw%d: lottery: u%u entered as e%u, now answered e%u (two entries)",
                     g->idx, u, L->o_entry[u], was);
        sim_trace(&wd->log, "gw%d: buy u%u -> 202 entered already (e%u)", g->idx, u, was);
    } else if (rc == 0) {
        if (!L->o_entry[u])
            L->o_entry[u] = n;
        sim_trace(&wd->log, "gw%d: buy u%u qty %u -> 202 entered e%u", g->idx, u, qty, n);
    } else {
        sim_trace(&wd->log, "gw%d: buy u%u -> %s", g->idx, u,
                  rc == CM_EIO ? "503 (the entry's record not written)" : cm_errname(rc));
    }
    return true;
}

/*
 * The draw's thread (gw_fair_tick's part for this sale): once the sale's
 * machine says it is due, the product's draw (gw_fair__run_draw over
 * gw_fair__draw_local: the seed logged and synced, the real order, each
 * entrant in that order accepted while the stock lasts, the stock's end
 * recorded, the outcomes' and the end's records), a few entrants a step
 * (sim_draw_step), then the oracle's checks.
 */
static void lottery_step(world_t *wd, gw_t *g)
{
    lottery_t *L = &g->lot;
    gw_fair_sale_t *fs = L->fs;
    if (!g->up || !L->on || !fs)
        return;
    gw_sale_out_t so;
    gw_sale_step(&fs->sale, &(gw_sale_ev_t){.kind = GW_SALE_EV_TICK}, cm_wall_ms(), &so);
    if (!(so.actions & GW_SALE_DO_DRAW))
        return;
    sim_disk_use(g->disk);
    bool was_seeded = fs->seeded && !fs->seed_unsynced, was_out = fs->exhausted;
    size_t from = fs->next;
    for (size_t i = 0; i < fs->n && i < NU_MAX; i++)
        L->pre[i] = fs->v[i].state;
    memset(L->tried, 0, sizeof(L->tried));
    L->budget = 1 + sim_below(&wd->rng, 6);
    gw_fair__run_draw(L->f, fs, L->closes_ms);
    /* then the releaser's turn and the spool's preparer's (a roll's spare, the
     * rolled segment's flush), as their threads run beside the draw's */
    lot_release_step(wd, g);
    while (!sim_disk_dead(g->disk) && oq_spool_step(g->sp))
        ;
    if (gw_died(wd, g))
        return; /* the process died: its draw with it */
    if (!fs->seeded || fs->seed_unsynced) {
        sim_trace(&wd->log, "gw%d: lottery: the log not durable (seed %s), tried again later",
                  g->idx, fs->seeded ? "drawn" : "not drawn");
        if (!fs->seeded)
            return;
    } else if (!was_seeded) {
        sim_trace(&wd->log, "gw%d: lottery: window closed, %zu entrants, seed %016" PRIx64, g->idx,
                  fs->ndraw, fs->seed);
    }
    lot_check_order(wd, g);
    for (size_t pos = from; pos < fs->next && pos < fs->ndraw && fs->ndraw <= NU_MAX; pos++) {
        const entry_t *e = &fs->v[fs->perm[pos]];
        uint32_t u = ent_user(e);
        if (L->pre[fs->perm[pos]] != GW_ENTRY_ENTERED || e->state == GW_ENTRY_ENTERED)
            continue;
        sim_trace(&wd->log, "gw%d: lottery: #%zu u%u qty %u -> %s%s", g->idx, pos + 1, u, e->qty,
                  gw_entry_state_name((gw_entry_state_t)e->state),
                  L->tried[u] ? "" : " (not tried)");
        /* not tried: the stock ran out before it (GET /v1/orders says lost now;
         * write durability: a power loss may lose what was said) */
        if (e->state == GW_ENTRY_LOST && !L->tried[u] && fs->exhausted && wd->fsync_mode)
            L->o_told_lost[u] = true;
    }
    if (fs->exhausted && !was_out)
        sim_trace(&wd->log, "gw%d: lottery: the stock ran out%s", g->idx,
                  fs->seed_unsynced ? " (its record's fdatasync failed)" : "");
    if (!lot_drawn(g)) {
        if (fs->next >= fs->ndraw && !wd->log.failed)
            sim_trace(&wd->log, "gw%d: lottery: the end of the draw not recorded, tried again",
                      g->idx);
        return;
    }
    for (size_t i = 0; i < fs->ndraw; i++) /* "won": answered as a 202 was */
        if (fs->v[i].state == GW_ENTRY_WON)
            lot_known(wd, g, ent_ord(&fs->v[i]));
    lot_check_done(wd, g);
}

/* An admin's PUT of g's sale: the new terms in force once it returns 0. */
static int sale_put(world_t *wd, gw_t *g, int64_t stock, uint32_t limit, int64_t starts,
                    int64_t ends, char *err, size_t errlen)
{
    inv_sale_def_t def = {
        .stock = stock, .per_user_limit = limit, .starts_at_ms = starts, .ends_at_ms = ends};
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", g->sale_id);
    int rc = gw_sale_edit(g->inv, &def, NULL, err, errlen); /* the admin API's core */
    if (rc == 0) {
        g->stock_total = stock;
        g->limit = limit;
        if (limit > g->max_limit)
            g->max_limit = limit;
        g->starts_ms = starts;
        g->ends_ms = ends;
    }
    (void)wd;
    return rc;
}

/*
 * An admin edits the sale between buys: the per-user limit raised or lowered
 * (a lowered one binds new buys only), the stock reduced (refused below the
 * units held), the start or the end moved (a sale that has not started, or
 * has ended, for a while).
 */
static void sale_edit_on(world_t *wd, gw_t *g)
{
    char err[200];
    int64_t wall = cm_wall_ms();
    uint32_t kind = sim_below(&wd->rng, 4);
    if (kind <= 1) {
        uint32_t lim = 1 + sim_below(&wd->rng, 4);
        if (sale_put(wd, g, g->stock_total, lim, g->starts_ms, g->ends_ms, err, sizeof(err)) == 0)
            sim_trace(&wd->log, "gw%d: per-user limit -> %u", g->idx, lim);
    } else if (kind == 2) {
        inv_sale_info_t before;
        if (inv_sale_get(g->inv, g->sale_id, &before) != 0)
            return;
        int64_t cut = 1 + sim_below(&wd->rng, 4),
                stock = g->stock_total > cut ? g->stock_total - cut : 0;
        int rc = sale_put(wd, g, stock, g->limit, g->starts_ms, g->ends_ms, err, sizeof(err));
        sim_trace(&wd->log, "gw%d: stock -> %" PRId64 " (%" PRId64 " held): %s", g->idx, stock,
                  before.accepted_units, rc == 0 ? "ok" : err);
        if (rc == 0)
            check_inv(wd, g, NULL);
        else if (before.accepted_units <= stock)
            sim_fail(&wd->log, "gw%d: stock %" PRId64 " refused with %" PRId64 " units held: %s",
                     g->idx, stock, before.accepted_units, err);
    } else {
        /* a start ahead (a pause before it), an end just ahead or passed, or both gone */
        int64_t starts = 0, ends = 0;
        uint32_t w = sim_below(&wd->rng, 4);
        if (w == 0)
            starts = wall + 1 + sim_below(&wd->rng, 200);
        else if (w == 1)
            ends = wall - (int64_t)sim_below(&wd->rng, 50) + (int64_t)sim_below(&wd->rng, 400);
        else if (w == 2) {
            starts = wall - 1000;
            ends = wall + 1 + sim_below(&wd->rng, 600);
        }
        if (ends && ends <= 1) /* 0 means no end */
            ends = 2;
        if (sale_put(wd, g, g->stock_total, g->limit, starts, ends, err, sizeof(err)) == 0)
            sim_trace(&wd->log, "gw%d: window -> starts %+" PRId64 " ms, ends %+" PRId64 " ms",
                      g->idx, starts ? starts - wall : 0, ends ? ends - wall : 0);
    }
}

static void do_sale_edit(world_t *wd)
{
    gw_t *g = &wd->gw[sim_below(&wd->rng, (uint32_t)wd->ng)];
    if (!g->up || (g->lot.on && !g->lot.o_done)) /* a draw's sale is not edited until drawn */
        return;
    if (!g->redis) {
        sale_edit_on(wd, g);
        return;
    }
    if (sim_redis_faults(wd->rs)->down)
        return; /* the operator's call is refused: nothing changes */
    sim_redis_faults_t was = redis_admin_begin(wd);
    sale_edit_on(wd, g);
    redis_admin_end(wd, was);
}

static void restock_on(world_t *wd, gw_t *g)
{
    int64_t add = 1 + sim_below(&wd->rng, 4);
    char err[200];
    if (inv_restock(g->inv, g->sale_id, add, NULL, err, sizeof(err)) == 0) {
        g->stock_total += add;
        sim_trace(&wd->log, "gw%d: restock +%" PRId64 " -> %" PRId64, g->idx, add, g->stock_total);
    }
}

static void do_restock(world_t *wd)
{
    gw_t *g = &wd->gw[sim_below(&wd->rng, (uint32_t)wd->ng)];
    if (!g->up || (g->lot.on && !g->lot.o_done))
        return;
    if (!g->redis) {
        restock_on(wd, g);
    } else if (!sim_redis_faults(wd->rs)->down) { /* the admin's call, as in do_sale_edit */
        sim_redis_faults_t was = redis_admin_begin(wd);
        restock_on(wd, g);
        redis_admin_end(wd, was);
    }
}

/* The world the yield hook acts on (one thread; set for the length of sim_run). */
static world_t *yield_world;

/*
 * A yield point of the real code (cm_yield.h): the admin thread's restock may
 * run between a reservation's read of the stock and its store of the sold-out
 * flag. Only inside a buy's inv_reserve (the buy path holds no admin lock
 * there; the admin calls themselves do), and not again inside itself.
 */
static void sim_yield(cm_yield_t at)
{
    world_t *wd = yield_world;
    if (!wd || at != CM_YIELD_SOLD_OUT_SYNC || !wd->in_reserve || !wd->faults)
        return;
    gw_t *g = wd->in_reserve;
    if (!sim_chance(&wd->rng, 0.15))
        return;
    wd->in_reserve = NULL;
    sim_trace(&wd->log, "gw%d: (yield in the sold-out flag's update)", g->idx);
    restock_on(wd, g);
    wd->yield_edits++;
    wd->in_reserve = g;
}

/*---- the relay (the real oq_relay.c, stepped) ----*/

/* The relay's producer turn (reports, scan and produce, the done prefix),
 * and its releaser's, which persists the point (not always at once: a crash
 * may come in between). */
static void relay_step(world_t *wd, gw_t *g)
{
    if (!g->up)
        return;
    sim_disk_use(g->disk);
    if (g->redis) { /* the releaser's turn, and the sync thread's when the sale is unread */
        releaser_step(wd, g);
        if (!g->sale && inv_redis_sync_step(g->inv) == 0)
            g->sale = inv_sale_find(g->inv, g->sale_id);
    }
    lot_release_step(wd, g); /* a lottery's give-backs still queued */
    oq_spool_step(g->sp);
    if (gw_died(wd, g))
        return;
    oq_relay_step(g->relay, OQ_RELAY_PRODUCER);
    if (gw_died(wd, g) || sim_below(&wd->rng, 3) == 0)
        return;
    oq_pos_t was = oq_spool_released(g->sp);
    int rc = oq_relay_step(g->relay, OQ_RELAY_RELEASER);
    if (gw_died(wd, g))
        return;
    oq_pos_t now = oq_spool_released(g->sp);
    if (oq_pos_cmp(now, was) != 0)
        sim_trace(&wd->log, "gw%d: released to %" PRIu64 ":%" PRIu64, g->idx, now.seg, now.off);
    else if (rc != 0)
        sim_trace(&wd->log, "gw%d: release failed (%s)", g->idx, cm_errname(rc));
}

/* Messages of g's running process still in flight in the broker. */
static size_t inflight_of(const world_t *wd, const gw_t *g)
{
    size_t n = 0;
    for (int p = 0; p < NPART; p++)
        for (size_t i = 0; i < wd->part[p].qn; i++)
            n += wd->part[p].q[i].gw == g->idx && wd->part[p].q[i].gen == g->gen;
    return n;
}

/* oq_spool_scan's callback: the first record's place, then stop. */
static int first_rec(const oq_rec_t *rec, void *arg)
{
    *(oq_pos_t *)arg = rec->pos;
    return 1;
}

/* The load balancer's probe of a stopping gateway: the real rule (gw_drain.h). */
static void probe_ready(world_t *wd, gw_t *g)
{
    if (gw_drain_ready(true, gw_drain_phase(g->leaving, g->draining), false))
        sim_fail(&wd->log,
                 "gw%d: /readyz answered 200 while it stops (the load balancer keeps sending)",
                 g->idx);
}

static void gw_drain(world_t *wd, gw_t *g);

/*
 * SIGTERM (gateway/main.c on_stop_signal): the gateway leaves, /readyz answers
 * 503, and every other route serves on through the drain grace (0-29 ms of
 * simulated time here: buys keep coming on the connections kept alive); then
 * gw_drain. The grace and the answers are the real rules (gw_drain.h).
 */
static void gw_stop(world_t *wd, gw_t *g)
{
    if (!g->up || g->leaving)
        return;
    uint64_t grace_ms = gw_drain_grace_ms(sim_below(&wd->rng, 30), false);
    g->leaving = true;
    g->grace_end_ms = wd->now_ms + grace_ms;
    g->keepalive = (uint8_t)sim_below(&wd->rng, 4);
    wd->log.res->stops++;
    sim_trace(&wd->log,
              "gw%d: SIGTERM: leaves, the drain grace %" PRIu64 " ms, %u connections kept alive",
              g->idx, grace_ms, g->keepalive);
    probe_ready(wd, g);
    if (grace_ms == 0)
        gw_drain(wd, g);
}

/*
 * The grace is over: gw_server_stop, in its order (gateway/ctl/gw_server.c):
 * a request on a connection kept alive is answered 503 and the connection
 * closed (gw_drain_refuses, gw_buy.c buy_sale), the workers drain (the buys
 * waiting for the group commit are answered), the draw's thread stops (a cut
 * draw resumes at the next start, as after a crash), the releaser tries its
 * queue once more, the relay closes (oq_relay_close: its flush waits up to
 * drain_ms of simulated time for the deliveries in flight, then what was
 * delivered is released and the point persisted), the spool closes, then the
 * inventory. No request arrives after the grace but on those connections.
 * The checks: /readyz 503 throughout; no request after the grace served on a
 * connection left open (its client's next request would meet a closed
 * socket, unanswered); every buy waiting for the group commit answered before
 * the workers stop; on delivery (release on delivery), with the broker up and
 * nothing left in flight, the persisted point reaches what the relay had read
 * (unless an fsync of that release failed, or a release the releaser still
 * holds keeps its event: Redis down).
 */
static void gw_drain(world_t *wd, gw_t *g)
{
    if (!g->up)
        return;
    g->draining = true;
    probe_ready(wd, g);
    gw_drain_phase_t ph = gw_drain_phase(g->leaving, g->draining);
    for (; g->keepalive; g->keepalive--) {
        if (!gw_drain_refuses(ph)) {
            sim_fail(&wd->log,
                     "gw%d: a buy after the drain grace was served on a connection left open "
                     "(its client's next request meets a closed socket, unanswered)",
                     g->idx);
            return;
        }
        sim_trace(&wd->log, "gw%d: a buy on a kept-alive connection -> 503 shutting down, closed",
                  g->idx);
    }
    uint32_t drain_ms = sim_below(&wd->rng, 60);
    sim_disk_use(g->disk);
    sim_trace(&wd->log, "gw%d: drains (the relay's flush waits up to %u ms)", g->idx, drain_ms);
    sync_step(wd, g);
    if (!g->up)
        return;
    if (g->nwait)
        sim_fail(&wd->log, "gw%d: the workers stopped with %zu buys unanswered", g->idx, g->nwait);
    if (g->redis) /* gw_releaser_stop: what is queued is tried once more */
        releaser_step(wd, g);
    lot_release_step(wd, g);
    if (gw_died(wd, g))
        return;
    oq_relay_stats_t rs;
    oq_relay_stats(g->relay, &rs);
    bool failed_report = false;
    for (size_t i = 0; i < g->nreps; i++)
        failed_report |= !g->reps[i].ok;
    bool broker_up = wd->broker_up;
    sim_disk_stats_t d0, d1;
    sim_disk_stats(g->disk, &d0);
    oq_relay_close(g->relay, (int)drain_ms);
    g->relay = NULL;
    g->nreps = 0;
    if (gw_died(wd, g))
        return;
    sim_disk_stats(g->disk, &d1);
    size_t left = inflight_of(wd, g);
    oq_pos_t rp = oq_spool_released(g->sp);
    sim_trace(&wd->log,
              "gw%d: relay closed: released to %" PRIu64 ":%" PRIu64 ", read to %" PRIu64
              ":%" PRIu64 ", %zu left in flight",
              g->idx, rp.seg, rp.off, rs.scanned_to.seg, rs.scanned_to.off, left);
    if (!g->on_settle && broker_up && !failed_report && left == 0 && g->nrel == 0 &&
        d1.fsync_fails == d0.fsync_fails && d1.full_writes == d0.full_writes &&
        oq_pos_cmp(rp, rs.scanned_to) < 0) {
        /* a record between the two (not the same place named twice: the end
         * of one segment and the start of the next, or nothing released yet) */
        oq_pos_t first = rs.scanned_to;
        long n = oq_spool_scan(g->sp, rp, first_rec, &first);
        if (gw_died(wd, g))
            return;
        if (n >= 0 && oq_pos_cmp(first, rs.scanned_to) < 0)
            sim_fail(&wd->log,
                     "gw%d: a graceful stop left delivered records unreleased: released to %" PRIu64
                     ":%" PRIu64 " (a record at %" PRIu64 ":%" PRIu64 "), the relay had read and "
                     "delivered to %" PRIu64 ":%" PRIu64,
                     g->idx, rp.seg, rp.off, first.seg, first.off, rs.scanned_to.seg,
                     rs.scanned_to.off);
    }
    gw_gone(g); /* the spool's close, the inventory's */
    if (sim_disk_dead(g->disk)) {
        sim_trace(&wd->log, "gw%d: died while closing its spool", g->idx);
        /* The close writes every copy of dropped pages back over its range
         * (oq_spool_close; an overwrite, which a full disk allows): one it
         * could not, dying in it, is gone as at a crash. Only then: a stop
         * whose disk lived loses none. */
        if (!wd->fsync_mode)
            copies_gone(wd, g);
    }
    sim_disk_crash(g->disk); /* the process has exited: its descriptors go, the page cache stays */
    sim_trace(&wd->log, "gw%d: stopped", g->idx);
}

/* Compensation (gw_release.c gw_compensate's shell around the real core,
 * gw_replay.c): the check, the release event made durable, the release; one
 * that fails (Redis) goes to the releaser's queue (releaser_step). */
static void compensate(world_t *wd, gw_t *g, const oq_order_t *o, oq_status_t st)
{
    oq_order_t ord, ev;
    if (gw_comp_check(&g->book, o->order_id, o, rel_find(g, o->order_id, false), &ord) != 0)
        return;
    gw_release_event_fill(&ev, &ord, st, NULL, false, 0);
    int rc = spool_event(g, &ev);
    if (sim_disk_dead(g->disk))
        return; /* inside the relay's callback: the caller crashes the process after it */
    (void)rc;
    rc = gw_comp_release(g->inv, &g->book, &ord, st, NULL);
    if (rc == 0)
        g->units_back += ord.qty;
    else if (rc < 0) /* Redis: the releaser retries, and marks it final when done */
        rel_push(g, &ord, (int)st);
    sim_trace(&wd->log, "gw%d: %s %s, units back (%s)", g->idx, ord.order_id,
              st == OQ_STATUS_FAILED ? "failed" : "cancelled",
              rc == 0   ? "released"
              : rc == 1 ? "released before"
                        : cm_errname(rc));
}

/* The relay's on_outcome (gw_kafka.c's): the real core's outcome decision. */
static void sim_on_outcome(const oq_order_t *oc, void *ud)
{
    gw_t *g = ud;
    world_t *wd = g->wd;
    uint32_t n = ord_of(oc->order_id);
    if (sim_disk_dead(g->disk) || n == 0 || n >= wd->nords || wd->ords[n].gw != g->idx)
        return;
    oq_order_t o;
    if (gw_outcome_take(&g->book, oc, &o))
        compensate(wd, g, &o, oc->status);
}

/* The relay's consumer turns: the outcomes topic, from the beginning at every start. */
static void outcomes_step(world_t *wd, gw_t *g)
{
    if (!g->up || !wd->broker_up)
        return;
    sim_disk_use(g->disk);
    for (int k = 0; k < 32 && g->out_cur < wd->nouts; k++) {
        oq_relay_step(g->relay, OQ_RELAY_CONSUMER);
        if (gw_died(wd, g))
            return;
    }
}

/*---- the driver ----*/

static void heal(world_t *wd)
{
    wd->faults = false;
    wd->broker_up = true;
    if (wd->rs)
        *sim_redis_faults(wd->rs) = (sim_redis_faults_t){0};
    for (int i = 0; i < wd->ng; i++) {
        sim_disk_set_faults(wd->gw[i].disk, 0, 0);
        sim_disk_die_after(wd->gw[i].disk, 0);
    }
}

/* The simulated Redis's turn: late commands of calls that timed out run, and
 * its faults (sim_fleet.c's, but the failover and the restart without
 * persistence, which lose 202s by design): down and back, a restart with
 * appendfsync always (every write kept, connections and script cache gone). */
static void redis_turn(world_t *wd)
{
    sim_redis_step(wd->rs, wd->step);
    sim_redis_replicate(wd->rs);
    if (!wd->faults)
        return;
    sim_redis_faults_t *f = sim_redis_faults(wd->rs);
    if (sim_chance(&wd->rng, f->down ? 0.02 : 0.001)) {
        f->down = !f->down;
        sim_trace(&wd->log, "redis: %s", f->down ? "down" : "back");
    } else if (sim_chance(&wd->rng,
                          0.0002)) { /* (its rebuild replays every write: not more often) */
        sim_trace(&wd->log, "redis: restart (appendfsync always)");
        sim_redis_restart(wd->rs, true);
    }
}

/*---- the oracle of the Redis gateways (Redis's own books, read directly) ----*/

typedef struct rbooks {
    world_t *wd;
    const gw_t *g;
    int64_t units;
    int64_t user[NU_MAX];
} rbooks_t;

static void rbooks_order(const char *field, const char *val, void *ctx)
{
    rbooks_t *b = ctx;
    unsigned u = 0, q = 0;
    uint32_t n = ord_of(field);
    if (sscanf(val, "u%u %u", &u, &q) != 2 || u >= NU_MAX || n == 0 || n >= b->wd->nords ||
        b->wd->ords[n].gw != b->g->idx) {
        sim_fail(&b->wd->log, "gw%d: Redis holds %s -> '%s', no order of this sale", b->g->idx,
                 field, val);
        return;
    }
    b->units += q;
    b->user[u] += q;
}

static void rbooks_user(const char *field, const char *val, void *ctx)
{
    rbooks_t *b = ctx;
    unsigned u = 0;
    if (sscanf(field, "u%u", &u) != 1 || u >= NU_MAX || atoll(val) != b->user[u])
        sim_fail(&b->wd->log, "gw%d: Redis's books: user %s holds %s, its orders %" PRId64,
                 b->g->idx, field, val, u < NU_MAX ? b->user[u] : -1);
    else
        b->user[u] = -1; /* seen */
}

/*
 * Every 64 steps and at the end: total - left is the units of the orders hash
 * and each user's units the sum of theirs (a release given twice, or a reserve
 * half undone, shows here), held <= the stock as edited, and every 202 is held
 * unless the database cancelled or failed it (then compensation gives it back).
 */
static void redis_check(world_t *wd, gw_t *g)
{
    int64_t held, total;
    if (!redis_books(wd, g, &held, &total)) {
        sim_fail(&wd->log, "gw%d: Redis lost the sale", g->idx);
        return;
    }
    rbooks_t b = {.wd = wd, .g = g};
    char k[64];
    snprintf(k, sizeof(k), "{sale:%s}:orders", g->sale_id);
    sim_redis_hforeach(wd->rs, k, rbooks_order, &b);
    snprintf(k, sizeof(k), "{sale:%s}:users", g->sale_id);
    sim_redis_hforeach(wd->rs, k, rbooks_user, &b);
    for (int u = 0; u < NU_MAX && !wd->log.failed; u++)
        if (b.user[u] > 0)
            sim_fail(&wd->log, "gw%d: Redis's books: user u%d holds no units, its orders %" PRId64,
                     g->idx, u, b.user[u]);
    if (held != b.units)
        sim_fail(&wd->log,
                 "gw%d: Redis's books: total %" PRId64 " - left %" PRId64 " != %" PRId64
                 " units in its orders (units given back twice, or lost)",
                 g->idx, total, total - held, b.units);
    if (held > total || total != g->stock_total)
        sim_fail(&wd->log,
                 "gw%d: Redis holds %" PRId64 " units of a stock of %" PRId64
                 " (the stock as edited is %" PRId64 ")",
                 g->idx, held, total, g->stock_total);
    for (uint32_t i = 1; i < wd->nords && !wd->log.failed; i++) {
        const ord_t *r = &wd->ords[i];
        if (r->gw != g->idx || r->state != O_ACKED || r->exempt || r->db == ST_CANCELLED ||
            r->db == ST_FAILED)
            continue;
        if (!redis_holds(wd, g, i))
            sim_fail(&wd->log,
                     "gw%d: order o%u answered 202 is no longer held in Redis (given back)", g->idx,
                     i);
    }
}

/* At the end, after the heal and a restart of every gateway: what the database
 * cancelled or failed went back; a unit still held with no order in the
 * database is a reserve whose 202 never went out (a crash, a lost reply: its
 * units stay held, docs/fleet.md), never an answered one. */
static void redis_final(world_t *wd, gw_t *g)
{
    redis_check(wd, g);
    int64_t leaked = 0;
    for (uint32_t i = 1; i < wd->nords && !wd->log.failed; i++) {
        const ord_t *r = &wd->ords[i];
        if (r->gw != g->idx)
            continue;
        bool there = redis_holds(wd, g, i);
        if ((r->db == ST_CANCELLED || r->db == ST_FAILED) && there)
            sim_fail(&wd->log,
                     "gw%d: order o%u is %s in the database and Redis still holds its %u units",
                     g->idx, i, r->db == ST_CANCELLED ? "cancelled" : "failed", r->qty);
        else if (r->db == ST_SETTLED && !there && !g->power_lost_write)
            sim_fail(&wd->log, "gw%d: order o%u is settled and Redis no longer holds it", g->idx,
                     i);
        else if (there && r->db == ST_NONE && r->gb_durable && r->state != O_ACKED)
            sim_fail(&wd->log,
                     "gw%d: order o%u's give-back was recorded in the spool and Redis still "
                     "holds its %u units",
                     g->idx, i, r->qty);
        leaked += there && r->db == ST_NONE ? r->qty : 0;
    }
    sim_trace(&wd->log, "gw%d: Redis holds %" PRId64 " units of reserves never answered 202",
              g->idx, leaked);
}

/* Quiescent after the heal, before any restart: the releaser's queue is empty
 * and every outcome read, so what the database cancelled or failed went back
 * (a restart's replay and the outcomes read again would hide a compensation
 * given up on: the check comes before them). */
static void redis_compensated(world_t *wd, gw_t *g)
{
    for (uint32_t i = 1; i < wd->nords && !wd->log.failed; i++) {
        const ord_t *r = &wd->ords[i];
        if (r->gw == g->idx && (r->db == ST_CANCELLED || r->db == ST_FAILED) &&
            redis_holds(wd, g, i))
            sim_fail(&wd->log,
                     "gw%d: order o%u is %s in the database, every outcome was read, and Redis "
                     "still holds its %u units (a compensation given up on)",
                     g->idx, i, r->db == ST_CANCELLED ? "cancelled" : "failed", r->qty);
    }
}

static bool quiescent(world_t *wd)
{
    for (int i = 0; i < wd->ng; i++) {
        gw_t *g = &wd->gw[i];
        if (!g->up)
            return false;
        oq_spool_stats_t ss;
        oq_spool_stats(g->sp, &ss);
        if (ss.unreleased_bytes != 0 || g->out_cur < wd->nouts || g->nwait || g->nreps || g->nrel ||
            (g->lot.on && !lot_drawn(g)))
            return false;
        uint64_t pending = 0, done, retries;
        if (g->lot.f)
            gw_releaser_stats(&g->lot.srv, &pending, &done, &retries);
        if (pending)
            return false;
    }
    for (int p = 0; p < NPART; p++)
        if (wd->part[p].qn || wd->stpos[p] < wd->part[p].n || wd->committed[p] < wd->part[p].n)
            return false;
    return wd->st_up;
}

static void one_step(world_t *wd)
{
    wd->step++;
    wd->now_ms++;
    cm_time_advance_fake(1000000);
    for (int i = 0; i < wd->ng; i++) { /* the stops in their drain grace */
        gw_t *s = &wd->gw[i];
        if (s->up && s->leaving) {
            probe_ready(wd, s);
            if (wd->now_ms >= s->grace_end_ms)
                gw_drain(wd, s);
        }
    }
    if (wd->rs) {
        redis_turn(wd);
        for (int i = 0; (wd->step & 63) == 0 && i < wd->ng && !wd->log.failed; i++)
            if (wd->gw[i].redis && wd->gw[i].sale_made)
                redis_check(wd, &wd->gw[i]);
    }
    uint32_t r = sim_below(&wd->rng, 1000);
    gw_t *g = &wd->gw[sim_below(&wd->rng, (uint32_t)wd->ng)];
    if (wd->faults) {
        if (r < 3) {
            if (r == 2 && !wd->no_stops &&
                sim_chance(&wd->rng, 0.5)) /* a sixth: a deploy's SIGTERM */
                gw_stop(wd, g);
            else
                gw_crash(wd, g, false, "kill -9");
            return;
        }
        if (r < 4 && sim_chance(&wd->rng, wd->p_power * 1000)) {
            gw_crash(wd, g, true, "pulled the plug");
            return;
        }
        if (r < 6) {
            if (g->up)
                sim_disk_die_after(g->disk, 1 + sim_below(&wd->rng, 30));
            return;
        }
        if (r < 8) {
            if (wd->st_up && r == 7 && !wd->no_stops && sim_chance(&wd->rng, 0.5))
                settle_stop(wd);
            else if (wd->st_up)
                settle_crash(wd, "kill -9");
            return;
        }
        if (r < 10 && sim_chance(&wd->rng, wd->p_broker_flip * 500)) {
            wd->broker_up = !wd->broker_up;
            sim_trace(&wd->log, "broker: %s", wd->broker_up ? "back" : "down");
            return;
        }
    }
    if (r < 40) {
        if (!g->up && (wd->faults ? sim_chance(&wd->rng, 0.3) : true))
            gw_start(wd, g);
        else
            relay_step(wd, g);
    } else if (r < 400) {
        if (wd->faults)
            do_buy(wd);
        else
            relay_step(wd, g);
    } else if (r < 420) {
        if (wd->faults)
            do_cancel(wd);
    } else if (r < 430) {
        if (wd->faults)
            do_restock(wd);
    } else if (r < 440) {
        if (wd->faults)
            do_sale_edit(wd);
    } else if (r < 520) {
        sync_step(wd, g);
    } else if (r < 600) {
        if (r >= 560 && g->lot.on && g->up && !lot_drawn(g)) { /* the draw's thread, when due */
            lottery_step(wd, g);
            lot_check_told(wd, g);
        } else
            relay_step(wd, g);
    } else if (r < 800) {
        broker_step(wd);
    } else if (r < 900) {
        settle_step(wd);
    } else {
        outcomes_step(wd, g);
    }
}

static const ord_t *ords_by_rseq; /* rseq_cmp's table (one thread) */

static int rseq_cmp(const void *a, const void *b)
{
    uint32_t x = ords_by_rseq[*(const uint32_t *)a].rseq,
             y = ords_by_rseq[*(const uint32_t *)b].rseq;
    return x < y ? -1 : x > y;
}

static void final_checks(world_t *wd)
{
    /* every 202 in the database; no key with two orders held */
    uint32_t *key_held = cm_xcalloc(wd->keygen + 1, sizeof(uint32_t));
    for (uint32_t i = 1; i < wd->nords && !wd->log.failed; i++) {
        const ord_t *r = &wd->ords[i];
        if (r->state == O_ACKED && !r->exempt && r->db == ST_NONE)
            sim_fail(&wd->log, "order o%u was answered 202 and never reached the database", i);
        /* a 503 "not confirmed" is not an order: its record was cut off the
         * spool, durably unless the cut itself failed */
        if (r->state == O_REFUSED && !r->cut_unsure && r->db != ST_NONE)
            sim_fail(&wd->log,
                     "order o%u was answered 503 (not confirmed) and reached the database", i);
        if (r->key && r->db == ST_SETTLED && !wd->gw[r->gw].power_lost_write && key_held[r->key]++)
            sim_fail(&wd->log, "idempotency key k%u has two orders settled", r->key);
    }
    free(key_held);
    /* the inventory holds exactly the settled orders (after a restart's replay) */
    for (int gi = 0; gi < wd->ng && !wd->log.failed; gi++) {
        gw_crash(wd, &wd->gw[gi], false, "final restart");
        wd->log.res->crashes--;
        gw_start(wd, &wd->gw[gi]);
    }
    /* the restarted gateways read the outcomes again (a compensation whose
     * release event did not reach the disk runs again: once, in effect) */
    for (uint64_t h = 0; h < HEAL_STEPS_MAX && !wd->log.failed; h++) {
        one_step(wd);
        if ((h & 255) == 0 && quiescent(wd))
            break;
    }
    for (int gi = 0; gi < wd->ng && !wd->log.failed; gi++) {
        gw_t *g = &wd->gw[gi];
        if (!g->up)
            continue;
        if (g->lot.on && !g->lot.o_done)
            sim_fail(&wd->log, "gw%d: the lottery never finished its draw", gi);
        int64_t settled = 0;
        uint32_t per_user[NU_MAX] = {0};
        for (uint32_t i = 1; i < wd->nords; i++)
            if (wd->ords[i].gw == gi && wd->ords[i].db == ST_SETTLED) {
                settled += wd->ords[i].qty;
                per_user[wd->ords[i].user] += wd->ords[i].qty;
            }
        inv_sale_info_t si;
        memset(&si, 0, sizeof(si));
        if (!g->redis)
            inv_sale_get(g->inv, g->sale_id, &si);
        if (g->redis) { /* settled <= held <= stock there, and what went back */
            redis_final(wd, g);
            if (g->power_lost_write) /* as below */
                continue;
        } else if (si.accepted_units > si.stock_total)
            sim_fail(&wd->log, "gw%d: %" PRId64 " units held of a stock of %" PRId64, gi,
                     si.accepted_units, si.stock_total);
        else if (g->power_lost_write) /* durability write lost units at a power loss, by design */
            continue;
        else if (settled > si.stock_total)
            sim_fail(&wd->log,
                     "gw%d: %" PRId64 " units settled of a stock of %" PRId64 " (oversell)", gi,
                     settled, si.stock_total);
        else if (si.accepted_units != settled)
            sim_fail(&wd->log,
                     "gw%d: the inventory holds %" PRId64 " units, the database settled %" PRId64
                     " (a compensation lost or run twice)",
                     gi, si.accepted_units, settled);
        for (int u = 0; u < wd->nu && !wd->log.failed; u++)
            if (per_user[u] > g->max_limit)
                sim_fail(&wd->log, "gw%d: user u%d has %u units settled, the limit is %u", gi, u,
                         per_user[u], g->max_limit);
        /* each settled order: its user's settled units up to it within the
         * limit in force when it was reserved */
        uint32_t upto[NU_MAX] = {0};
        uint32_t *by = cm_xmalloc(wd->nords * sizeof(uint32_t)), nby = 0;
        for (uint32_t i = 1; i < wd->nords; i++)
            if (wd->ords[i].gw == gi && wd->ords[i].db == ST_SETTLED)
                by[nby++] = i;
        ords_by_rseq = wd->ords;
        qsort(by, nby, sizeof(uint32_t), rseq_cmp);
        for (uint32_t k = 0; k < nby && !wd->log.failed; k++) {
            uint32_t i = by[k];
            const ord_t *r = &wd->ords[i];
            upto[r->user] += r->qty;
            if (upto[r->user] > r->limit_at)
                sim_fail(&wd->log,
                         "gw%d: user u%u holds %u settled units with o%u, reserved under the "
                         "limit %u",
                         gi, r->user, upto[r->user], i, r->limit_at);
        }
        free(by);
    }
}

/* The product's random keys (cm_hash_seed_random) from the world's generator. */
static uint64_t seed_word(void *arg)
{
    return cm_rand_next(arg);
}

void sim_run(const sim_opts_t *opts, sim_result_t *out)
{
    memset(out, 0, sizeof(*out));
    world_t *wd = cm_xcalloc(1, sizeof(*wd));
    wd->log = (sim_log_t){.trace = opts->trace, .res = out, .name = "step ", .clock = &wd->step};
    cm_rand_seed(&wd->rng, opts->seed);
    yield_world = wd;
    cm_yield_set(sim_yield);
    cm_time_set_fake(true, 1000000000ull, 1700000000000LL);
    /* the lottery's entry log on each gateway's simulated disk (its journal's
     * file calls), its draw seeds from the seed */
    cm_journal_set_fs(sim_journal_fs());
    cm_rand_seed(&wd->keys, opts->seed ^ 0x107e5eed107e5eedull);
    cm_hash_seed_set_fake(seed_word, &wd->keys);
    int redis_mode = opts->redis ? opts->redis : opts->seed % 32 == 28 ? 1 : -1;
    wd->ng = 1 + (int)sim_below(&wd->rng, NG_MAX);
    wd->nu = 4 + (int)sim_below(&wd->rng, NU_MAX - 4);
    wd->limit = 1 + sim_below(&wd->rng, 3);
    wd->fsync_mode = sim_below(&wd->rng, 3) != 0 || opts->fsync_only;
    wd->no_stops = opts->no_stops;
    wd->p_fsync_fail = sim_below(&wd->rng, 2) ? 0.05 : 0;
    wd->p_power = wd->fsync_mode ? 0.3e-3 : 0.1e-3;
    wd->p_crash = 0.004;
    wd->p_broker_flip = 0.002;
    wd->p_dup = 0.05;
    wd->p_lost_reply = 0.1;
    wd->p_produce_err = 0.01;
    wd->p_db_fail = 0.03;
    wd->faults = true;
    wd->broker_up = true;
    wd->st_up = true;
    wd->nords = 1;
    wd->sink.base.ops = &sink_ops;
    wd->sink.base.has_user_sql = true;
    wd->sink.wd = wd;
    for (int i = 0; i < wd->ng; i++) {
        gw_t *g = &wd->gw[i];
        g->wd = wd;
        g->idx = i;
        g->book = (gw_book_t){
            .get = book_get, .put = book_put, .set_status = book_set_status, .ud = g};
        g->on_settle = sim_below(&wd->rng, 4) != 0;
        g->disk = sim_disk_new(&wd->rng);
        g->disk_cap = sim_below(&wd->rng, 4) == 0 ? 6000 + sim_below(&wd->rng, 20000) : 0;
        /* pages a failed fdatasync dropped, evicted (docs/simulation.md, "Evicted
         * pages"): the journals (the entry log, fair.json), every file for the open
         * findings */
        sim_disk_set_evict(g->disk, SIM_EVICT_ALL);
        sim_disk_set_faults(g->disk, wd->p_fsync_fail, g->disk_cap);
        snprintf(g->sale_id, sizeof(g->sale_id), "s%d", i);
        g->stock_total = 3 + sim_below(&wd->rng, 40);
        g->limit = g->max_limit = wd->limit;
        if (sim_below(&wd->rng, 3) == 0) { /* a start-window lottery on this sale */
            g->lot.on = true;
            /* the sale starts with its entry window (gw_sale_core.h), which closes then */
            g->starts_ms = cm_wall_ms();
            g->lot.closes_ms = g->starts_ms + 100 + sim_below(&wd->rng, 900);
        }
        /* the inventory: Redis on every gateway (--redis), or on three in four
         * in the seeds 28 mod 32 (their draws only: the others walk as before) */
        g->redis = redis_mode > 0 && (opts->redis > 0 || sim_below(&wd->rng, 4) != 0);
        if (g->redis) {
            g->lot.on = false; /* the lottery runs on the memory gateways */
            g->starts_ms = 0;
            if (!wd->rs) {
                wd->rs = sim_transport_new(&wd->rng, false);
            }
        }
    }
    sim_trace(&wd->log, "seed %" PRIu64 ": %d gateways, %d users, limit %u, durability %s",
              opts->seed, wd->ng, wd->nu, wd->limit, wd->fsync_mode ? "fsync" : "write");
    for (int i = 0; i < wd->ng; i++) {
        if (wd->gw[i].lot.on)
            lot_configure(wd, &wd->gw[i]);
        gw_start(wd, &wd->gw[i]);
    }
    if (wd->rs) { /* lost and late replies from now on (sim_redis.h) */
        sim_redis_faults_t *f = sim_redis_faults(wd->rs);
        f->p_timeout = 0.01 * sim_below(&wd->rng, 6);
        f->p_lost = 0.01 * sim_below(&wd->rng, 6);
        sim_trace(&wd->log, "redis: gateways%s%s%s, %.0f%% timeouts, %.0f%% lost replies",
                  wd->gw[0].redis ? " 0" : "", wd->ng > 1 && wd->gw[1].redis ? " 1" : "",
                  wd->ng > 2 && wd->gw[2].redis ? " 2" : "", f->p_timeout * 100, f->p_lost * 100);
    }
    for (uint64_t s = 0; s < opts->steps && !wd->log.failed; s++)
        one_step(wd);
    if (!wd->log.failed) {
        sim_trace(&wd->log, "heal: faults off, every process back");
        heal(wd);
        wd->st_up = true;
        memcpy(wd->stpos, wd->committed, sizeof(wd->stpos));
        uint64_t h = 0;
        for (; h < HEAL_STEPS_MAX && !wd->log.failed; h++) {
            one_step(wd);
            if ((h & 255) == 0 && quiescent(wd))
                break;
        }
        for (int i = 0; i < wd->ng && !wd->log.failed && quiescent(wd); i++)
            if (wd->gw[i].redis)
                redis_compensated(wd, &wd->gw[i]);
        if (!wd->log.failed && !quiescent(wd)) {
            const char *what = "settlement lags";
            char buf[200];
            for (int i = 0; i < wd->ng; i++) {
                gw_t *g = &wd->gw[i];
                oq_spool_stats_t ss;
                if (g->up) {
                    oq_spool_stats(g->sp, &ss);
                    if (ss.unreleased_bytes != 0) {
                        oq_relay_stats_t rs;
                        oq_relay_stats(g->relay, &rs);
                        snprintf(buf, sizeof(buf),
                                 "gw%d's release point is stuck before its end (release on %s: "
                                 "%" PRIu64 " records tracked, %" PRIu64 " in flight, %" PRIu64
                                 " awaiting an outcome)",
                                 i, g->on_settle ? "settle" : "delivery",
                                 rs.spool_unreleased_records, rs.inflight, rs.awaiting_outcome);
                        what = buf;
                    }
                }
            }
            sim_fail(&wd->log, "no quiescence %d steps after the heal: %s", HEAL_STEPS_MAX, what);
        }
    }
    if (!wd->log.failed)
        final_checks(wd);
    out->ok = !wd->log.failed;
    out->steps = wd->step;
    for (uint32_t i = 1; i < wd->nords; i++)
        out->accepted += wd->ords[i].state == O_ACKED;
    for (int i = 0; i < wd->ng; i++) {
        sim_disk_use(wd->gw[i].disk);
        lot_close(&wd->gw[i]);
    }
    cm_hash_seed_set_fake(NULL, NULL);
    cm_journal_set_fs(NULL);
    if (out->ok) /* the waiting room's world, the same seed (sim_room.h) */
        sim_room_run(opts, out);
    for (int i = 0; i < wd->ng; i++) {
        gw_t *g = &wd->gw[i];
        sim_disk_use(g->disk);
        oq_relay_drop(g->relay);
        if (g->sp)
            oq_spool_close(g->sp);
        if (g->w)
            inv_worker_close(g->w);
        if (g->inv)
            inv_close(g->inv);
        free(g->reps);
        free(g->rel);
        sim_disk_stats_t ds;
        sim_disk_stats(g->disk, &ds);
        out->fsync_fails += ds.fsync_fails;
        out->evictions += ds.evictions;
        out->torn_writes += ds.torn_writes;
        sim_disk_free(g->disk);
    }
    for (int p = 0; p < NPART; p++) {
        free(wd->part[p].m);
        free(wd->part[p].q);
    }
    for (size_t i = 0; i < wd->nouts; i++)
        free(wd->outs[i].json);
    free(wd->outs);
    st_batch_writer_free(&wd->bw);
    if (wd->rs)
        sim_transport_free(wd->rs);
    cm_yield_set(NULL);
    yield_world = NULL;
    cm_time_set_fake(false, 0, 0);
    free(wd);
}
