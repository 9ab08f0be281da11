/*
 * The lottery's generation in a fleet (gw_fair_internal.h, lot_gen) against a
 * real redis-server (started here on 127.0.0.1 at a free port, stopped by
 * PID): two gateways, A and B (a third, C, for a put-back), on one Redis, B
 * stopped and started again on its data directory. A gateway that was down
 * across a sale's deletion and its creation again never reads the tombstone;
 * the new lottery's other generation tells it its copy is of another lottery,
 * which it drops instead of re-keying its entries into the new one. The
 * lottery put back after Redis lost it keeps its generation, so a gateway's
 * entries stay, re-keyed to the new secret, whichever gateway takes the
 * operator's PUT (one that never held it takes the generation the others
 * offered at their polls). Until a gateway's first poll of the fleet's
 * configuration answers, a copy it loaded sends nothing of its lottery to
 * Redis (no marks, push, draw or waitlist's walk).
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "queue/oq_spool.h"
#include "tests/support/ts_redis.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

static ts_redis_t rs;

#define SALE "fg"
#define CONF "{flashgate:fair}:conf" /* the lottery values (gw_fair_redis.c) */
#define WINDOW_MS 600000

/* One gateway of the fleet: memory inventory, a spool, the order table, and
 * the lottery's table over a data dir with its store on the Redis above. */
typedef struct gw {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
} gw_t;

/* Starts g on its data directory (made here when fresh), node id node, with the sale in its
 * inventory (stock units) and its window open; fleet false: a gateway of its own (the lottery's
 * store its data directory, gw_fair_store.c), as before it joined the fleet. */
static void gw_start_on(gw_t *g, bool fresh, unsigned node, int64_t stock, bool fleet)
{
    char why[256] = "", spdir[128];
    if (fresh) {
        memset(g, 0, sizeof(*g));
        snprintf(g->dir, sizeof(g->dir), "/tmp/fg-fairgen-unit-XXXXXX");
        assert_non_null(mkdtemp(g->dir));
    }
    memset(&g->cfg, 0, sizeof(g->cfg));
    memset(&g->srv, 0, sizeof(g->srv));
    snprintf(g->cfg.data_dir, sizeof(g->cfg.data_dir), "%s", g->dir);
    if (fleet)
        ts_redis_url(&rs, g->cfg.inventory, sizeof(g->cfg.inventory), NULL); /* the fleet's store */
    else
        snprintf(g->cfg.inventory, sizeof(g->cfg.inventory), "memory");
    g->cfg.max_lottery_entries = 1000;
    g->srv.cfg = &g->cfg;
    g->srv.node.id = node;
    assert_int_equal(inv_open(&g->srv.stores.inv, "memory", NULL, 16, why, sizeof(why)), 0);
    int64_t now = cm_wall_ms();
    inv_sale_def_t def = {.stock = stock,
                          .per_user_limit = 1,
                          .starts_at_ms = now - 1000,
                          .ends_at_ms = now + 3600000};
    snprintf(def.sale_id, sizeof(def.sale_id), SALE);
    inv_sale_info_t info;
    assert_int_equal(inv_sale_put(g->srv.stores.inv, &def, &info, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", g->dir);
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_WRITE};
    assert_int_equal(oq_spool_open(&g->srv.stores.spool, &so, why, sizeof(why)), 0);
    g->srv.stores.orders = gw_orders_new(1000);
    assert_int_equal(gw_fair_open(&g->srv, gw_acceptor(&g->srv), why, sizeof(why)), 0);
    /* the lottery thread's inventory handle (gw_fair_start_thread's), for the draw and the
     * waitlist's promotions; gw_fair_close closes it */
    assert_int_equal(inv_worker_open(g->srv.stores.inv, NULL, &g->srv.fair->inv), 0);
}

static void gw_start(gw_t *g, bool fresh, unsigned node)
{
    gw_start_on(g, fresh, node, 10, true);
}

/* Stops g as its process would stop: its data directory stays. */
static void gw_halt(gw_t *g)
{
    gw_fair_close(&g->srv);
    gw_orders_free(g->srv.stores.orders);
    oq_spool_close(g->srv.stores.spool);
    inv_close(g->srv.stores.inv);
}

static void gw_stop(gw_t *g)
{
    gw_halt(g);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g->dir);
    assert_int_equal(system(cmd), 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The lottery thread's poll of the sale's configuration (conf_sync_one). */
static void poll_conf(gw_t *g)
{
    char why[256] = "";
    assert_int_equal(gw_fair__fleet_conf_refresh(g->srv.fair, SALE, why, sizeof(why)), 0);
}

static gw_fair_sale_t *slot(gw_t *g)
{
    gw_fair_sale_t *fs = gw_fair__slot_find(g->srv.fair, SALE);
    assert_non_null(fs);
    return fs;
}

static size_t entries(gw_t *g)
{
    gw_fair_sale_t *fs = slot(g);
    pthread_mutex_lock(&fs->mu);
    size_t n = fs->n;
    pthread_mutex_unlock(&fs->mu);
    return n;
}

/* An entry of user (its own person) on g, into its open window: gw_fair_enter's answer. */
static int try_enter(gw_t *g, const char *order_id, const char *user)
{
    gw_fair_ticket_t t;
    memset(&t, 0, sizeof(t));
    snprintf(t.order_id, sizeof(t.order_id), "%s", order_id);
    snprintf(t.sale_id, sizeof(t.sale_id), SALE);
    snprintf(t.user_id, sizeof(t.user_id), "%s", user);
    t.qty = 1;
    t.entered_at_ms = cm_wall_ms();
    t.draw_at_ms = t.entered_at_ms + WINDOW_MS;
    return gw_fair_enter(slot(g), &t, NULL);
}

static void enter(gw_t *g, const char *order_id, const char *user)
{
    assert_int_equal(try_enter(g, order_id, user), 0);
}

/* The fleet's value of the sale: its secret and generation (0: none). */
static void fleet_conf(cm_hash_key_t *k, uint64_t *gen)
{
    char val[256] = "";
    long long w, e, r;
    unsigned long long k0, k1, g = 0;
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "HGET %s %s", CONF, SALE), 0);
    assert_true(sscanf(val, "%lld %lld %llx %llx %lld %llx", &w, &e, &k0, &k1, &r, &g) == 6);
    *k = (cm_hash_key_t){k0, k1};
    *gen = g;
}

static void configure(gw_t *g)
{
    char why[256] = "";
    assert_int_equal(gw_fair_configure(&g->srv, SALE, WINDOW_MS, 0, 0, why, sizeof(why)), 0);
}

/* Redis refuses HGETALL while on: the lottery thread's poll of the fleet's configuration
 * (gw_fair_redis_lottery_conf_all) fails, as with Redis away at the gateway's start, while
 * the other calls of its tick go through, as once Redis is back before the next poll. */
static void conf_poll_refused(bool on)
{
    char val[64];
    assert_int_equal(
        ts_redis_cmd(&rs, val, sizeof(val), "ACL SETUSER default %s", on ? "-hgetall" : "+hgetall"),
        0);
    assert_string_equal(val, "OK");
}

/* An empty Redis that answers every call (a test that failed may have left it refusing). */
static void fresh_redis(void)
{
    char val[64];
    conf_poll_refused(false);
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "FLUSHALL"), 0);
}

/* A fresh Redis and two fresh gateways, A and B (nodes 1 and 2): the lottery configured
 * through A, and B's poll has read it. */
static void fleet_of_two(gw_t *a, gw_t *b)
{
    fresh_redis();
    gw_start(a, true, 1);
    gw_start(b, true, 2);
    configure(a);
    poll_conf(b);
}

/*
 * B takes an entry of the first lottery and goes down with its window open;
 * the lottery closes and is drawn without it, the sale is deleted through A
 * and created again: B never reads the tombstone. At its start its copy
 * (not closed there) meets the new lottery's secret: before the generation it
 * was re-keyed into the new lottery, the old entry with it.
 */
static void test_down_across_delete_and_create(void **state)
{
    (void)state;
    gw_t a, b;
    fleet_of_two(&a, &b);
    cm_hash_key_t k1;
    uint64_t g1;
    fleet_conf(&k1, &g1);
    assert_int_not_equal(g1, 0);
    assert_true(slot(&b)->lot_gen == g1);
    enter(&b, "o1", "u1");
    gw_halt(&b);

    char why[256] = "";
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, false, why, sizeof(why)), 0);
    configure(&a); /* the sale created again: a new secret and generation */
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    assert_true(g2 != 0 && g2 != g1);
    assert_true(k2.k0 != k1.k0 || k2.k1 != k1.k1);

    gw_start(&b, false, 2);
    assert_int_equal(entries(&b), 1); /* its log kept the old lottery's entry */
    /* no entry into that copy before the fleet's configuration was read: it may be dropped */
    assert_int_equal(try_enter(&b, "o2", "u2"), CM_EBACKEND);
    gw_fair_tick(&b.srv);             /* the lottery thread's turn: its poll */
    assert_int_equal(entries(&b), 0); /* another lottery: dropped, not re-keyed */
    assert_true(slot(&b)->lot_gen == g2);
    assert_true(slot(&b)->secret.k0 == k2.k0 && slot(&b)->secret.k1 == k2.k1);
    assert_int_equal(atomic_load(&slot(&b)->sale.cfg.fair_window_ms), WINDOW_MS);
    enter(&b, "o3", "u3"); /* the new lottery's entries go on */
    assert_int_equal(entries(&b), 1);
    /* and it stays so across a restart: fair.json holds the new generation */
    gw_halt(&b);
    gw_start(&b, false, 2);
    assert_int_equal(entries(&b), 1);
    assert_true(slot(&b)->lot_gen == g2);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * The same gateway down across the deletion, and the sale created again through it, before
 * its first poll: the PUT reads the fleet's configuration first (the tombstone), so the old
 * copy goes before the new lottery is set up, instead of taking the new secret and generation
 * with its entries.
 */
static void test_created_again_through_it(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b;
    fleet_of_two(&a, &b);
    enter(&b, "o1", "u1");
    gw_halt(&b);
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, false, why, sizeof(why)), 0);
    gw_start(&b, false, 2);
    assert_int_equal(entries(&b), 1);
    int64_t starts = atomic_load(&slot(&b)->sale.cfg.starts_at_ms);
    assert_int_equal(
        gw_fair_configure_check(&b.srv, SALE, starts, WINDOW_MS, 0, 0, why, sizeof(why)), 0);
    configure(&b);
    assert_int_equal(entries(&b), 0);
    cm_hash_key_t k;
    uint64_t g;
    fleet_conf(&k, &g);
    assert_true(slot(&b)->lot_gen == g);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * Redis lost everything (FLUSHALL) while both gateways held entries of an
 * open lottery; the operator puts the sale back through one of them: the
 * fleet gets a new secret and the old generation, and each gateway keeps
 * its entries, re-keyed (the rule of a lottery put back, docs/fleet.md).
 */
static void put_back_through(bool through_b)
{
    char val[64];
    gw_t a, b;
    fleet_of_two(&a, &b);
    cm_hash_key_t k1;
    uint64_t g1;
    fleet_conf(&k1, &g1);
    enter(&a, "o1", "u1");
    enter(&b, "o2", "u2");
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "FLUSHALL"), 0);
    configure(through_b ? &b : &a);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    assert_true(g2 == g1); /* the lottery the gateways hold */
    poll_conf(&a);
    poll_conf(&b);
    assert_int_equal(entries(&a), 1);
    assert_int_equal(entries(&b), 1);
    assert_true(slot(&a)->secret.k0 == k2.k0 && slot(&b)->secret.k0 == k2.k0);
    assert_true(slot(&a)->lot_gen == g1 && slot(&b)->lot_gen == g1);
    gw_stop(&b);
    gw_stop(&a);
}

static void test_put_back_keeps_entries(void **state)
{
    (void)state;
    put_back_through(false);
    put_back_through(true);
}

/* The generation offered for the sale's put-back (:gen), 0 for none. */
static uint64_t offered_gen(void)
{
    char val[64] = "";
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "GET {flashgate:fair:%s}:gen", SALE), 0);
    return val[0] ? strtoull(val, NULL, 16) : 0;
}

/* g's lottery thread's next poll of the fleet's configuration, FLEET_CONF_POLL_MS after its
 * last. */
static void tick_poll(gw_t *g)
{
    sleep_ms(FLEET_CONF_POLL_MS);
    gw_fair_tick(&g->srv);
}

/* A and B took an entry each, their polls found the lottery, and Redis lost everything
 * (FLUSHALL): *g1, the lottery's generation. */
static void both_entered_then_flushed(gw_t *a, gw_t *b, uint64_t *g1)
{
    char val[64];
    fleet_of_two(a, b);
    cm_hash_key_t k1;
    fleet_conf(&k1, g1);
    enter(a, "o1", "u1");
    enter(b, "o2", "u2");
    gw_fair_tick(&a->srv);
    gw_fair_tick(&b->srv);
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "FLUSHALL"), 0);
}

/*
 * The put-back through C, a gateway that never held the lottery (a gateway added after Redis
 * lost it, a data directory lost): A's and B's polls found the configuration gone and
 * offered the generation their polls had found, and C's PUT takes it, so A and B keep their
 * entries (re-keyed to the new secret) as with a put-back through either of them.
 */
static void test_put_back_through_a_gateway_without_a_copy(void **state)
{
    (void)state;
    gw_t a, b, c;
    uint64_t g1;
    both_entered_then_flushed(&a, &b, &g1);
    assert_int_equal(offered_gen(), 0);
    tick_poll(&a);
    tick_poll(&b);
    assert_true(offered_gen() == g1);
    assert_int_equal(entries(&a), 1); /* nothing dropped while the configuration is gone */
    assert_int_equal(entries(&b), 1);
    gw_start(&c, true, 3);
    assert_null(gw_fair__slot_find(c.srv.fair, SALE));
    configure(&c);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    assert_true(g2 == g1);
    assert_true(slot(&c)->lot_gen == g1);
    tick_poll(&a);
    tick_poll(&b);
    assert_int_equal(entries(&a), 1);
    assert_int_equal(entries(&b), 1);
    assert_true(slot(&a)->secret.k0 == k2.k0 && slot(&b)->secret.k1 == k2.k1);
    assert_true(slot(&a)->lot_gen == g1 && slot(&b)->lot_gen == g1);
    gw_stop(&c);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * What the offer cannot do: a put-back through C before any gateway's poll read the
 * configuration gone (within FLEET_CONF_POLL_MS of Redis answering again) makes a new
 * generation, and A's and B's entries are dropped at their polls (docs/fleet.md).
 */
static void test_put_back_before_the_offer(void **state)
{
    (void)state;
    gw_t a, b, c;
    uint64_t g1;
    both_entered_then_flushed(&a, &b, &g1);
    gw_start(&c, true, 3);
    configure(&c);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    assert_true(g2 != g1);
    tick_poll(&a);
    tick_poll(&b);
    assert_int_equal(entries(&a), 0);
    assert_int_equal(entries(&b), 0);
    assert_int_equal(offered_gen(), 0); /* the configuration stands: no offer */
    gw_stop(&c);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * A copy that no poll since its gateway's start found in the configuration offers nothing:
 * B, down across the loss, may hold a lottery deleted while it was down (its tombstone lost
 * with the rest). A, up across it, offers. A DELETE of the sale (gone from the inventory with
 * the rest) then writes the tombstone: every gateway drops its copy, the offer goes, and the
 * sale created again has a new lottery.
 */
static void test_offer_only_of_a_copy_seen(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b, c;
    uint64_t g1;
    both_entered_then_flushed(&a, &b, &g1);
    gw_halt(&b);
    gw_start(&b, false, 2);
    tick_poll(&b);
    assert_true(atomic_load(&b.srv.fair->conf_read));
    assert_int_equal(entries(&b), 1); /* kept: nothing in the fleet says otherwise */
    assert_int_equal(offered_gen(), 0);
    tick_poll(&a);
    assert_true(offered_gen() == g1);
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, true, why, sizeof(why)), 0);
    assert_int_equal(offered_gen(), 0);
    tick_poll(&b);
    assert_int_equal(entries(&a), 0);
    assert_int_equal(entries(&b), 0);
    gw_start(&c, true, 3);
    configure(&c);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    assert_true(g2 != g1);
    gw_stop(&c);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * B held the first lottery's configuration but no entry when it went down; the sale is
 * deleted and created again through A. At B's start its copy (no entry, not closed) is
 * not held back, so an entry into the new sale's window is answered before the first poll
 * (it goes into the old generation's copy), and that poll drops the copy it now has an
 * entry in: an entry answered 0 must not be lost.
 */
static void test_empty_copy_entry_before_first_poll(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b;
    fleet_of_two(&a, &b);
    assert_int_equal(entries(&b), 0);
    gw_halt(&b);
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, false, why, sizeof(why)), 0);
    configure(&a);
    gw_start(&b, false, 2);
    int rc = try_enter(&b, "o2", "u2"); /* before the lottery thread's first poll */
    gw_fair_tick(&b.srv);               /* its poll */
    if (rc == 0)
        assert_int_equal(entries(&b), 1); /* answered entered: still in the lottery */
    else
        assert_int_equal(rc, CM_EBACKEND); /* or held back until the poll, as a loaded copy */
    gw_stop(&b);
    gw_stop(&a);
}

/* g's fair.json held as it is while a directory stands at its name, so that a save fails
 * (its rename), and put back. */
static void conf_block(gw_t *g, bool on)
{
    char path[128], keep[140], inner[140];
    snprintf(path, sizeof(path), "%s/fair.json", g->dir);
    snprintf(keep, sizeof(keep), "%s.keep", path);
    snprintf(inner, sizeof(inner), "%s/x", path);
    if (on) {
        assert_int_equal(rename(path, keep), 0);
        assert_int_equal(mkdir(path, 0700), 0);
        assert_int_equal(mkdir(inner, 0700), 0);
    } else {
        assert_int_equal(rmdir(inner), 0);
        assert_int_equal(rmdir(path), 0);
        assert_int_equal(rename(keep, path), 0);
    }
}

/*
 * B's poll meets the sale created again (another generation) while fair.json cannot be
 * saved: its copy drops the old lottery and takes the new generation in memory only. An
 * entry into it now would be written to the log under a fair.json that names the old
 * generation: a crash, and the first poll after the start drops it as the old lottery's.
 * So it is refused (503) until a save holds, and taken after.
 */
static void test_entry_waits_for_the_saved_generation(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b;
    fleet_of_two(&a, &b);
    enter(&b, "o1", "u1");
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, false, why, sizeof(why)), 0);
    configure(&a);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    conf_block(&b, true);
    poll_conf(&b);
    assert_int_equal(entries(&b), 0);
    assert_true(slot(&b)->lot_gen == g2);
    int rc = try_enter(&b, "o2", "u2");
    gw_halt(&b); /* a crash: fair.json as the failed saves left it */
    conf_block(&b, false);
    gw_start(&b, false, 2);
    gw_fair_tick(&b.srv);
    if (rc == 0)
        assert_int_equal(entries(&b), 1); /* answered entered: still in the lottery */
    else
        assert_int_equal(rc, CM_EBACKEND);
    enter(&b, "o3", "u3"); /* the generation saved: entries go on */
    gw_stop(&b);
    gw_stop(&a);
}

/* How many keys of the sale's lottery (not its configuration) Redis holds. */
static long sale_keys(void)
{
    char val[64];
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "KEYS {flashgate:fair:%s}*", SALE), 0);
    return strtol(val, NULL, 10);
}

static int64_t stock_left(gw_t *g)
{
    inv_sale_info_t info;
    assert_int_equal(inv_sale_get(g->srv.stores.inv, SALE, &info), 0);
    return info.stock_left;
}

/* Three entrants into g's window of window_ms from the sale's start (the sale started 1 s
 * before g's start), then its lottery thread's ticks until the draw is known: one unit, so
 * two losers wait. */
static void drawn_with_two_waiting(gw_t *g, int64_t window_ms)
{
    enter(g, "o1", "u1");
    enter(g, "o2", "u2");
    enter(g, "o3", "u3");
    gw_fair_sale_t *fs = slot(g);
    int64_t closes = atomic_load(&fs->sale.cfg.starts_at_ms) + window_ms;
    while (cm_wall_ms() <= closes)
        sleep_ms(20);
    for (int i = 0; i < 400 && !(atomic_load(&fs->drawn) && gw_fair_waitlist_open(fs)); i++) {
        gw_fair_tick(&g->srv);
        sleep_ms(20);
    }
    assert_true(atomic_load(&fs->drawn));
    assert_true(gw_fair_waitlist_open(fs));
    pthread_mutex_lock(&fs->mu);
    assert_int_equal(fs->waitlisted, 2);
    pthread_mutex_unlock(&fs->mu);
    assert_int_equal(stock_left(g), 0);
}

/*
 * B restarted with a drawn copy of the sale's lottery that is not the fleet's, its losers
 * waiting, a unit free in the new sale's stock, and its poll of the fleet's configuration
 * not answered yet: ticks of its lottery thread a while (the waitlist's polls are 100 ms
 * apart) write nothing of the lottery to Redis and take nothing of the stock. Then the poll
 * answers, and the copy goes.
 */
static void stale_copy_ticks(gw_t *b, uint64_t fleet_gen)
{
    assert_true(gw_fair__stale(slot(b)));
    long keys = sale_keys();
    int64_t left = stock_left(b);
    assert_true(left > 0);
    conf_poll_refused(true);
    /* past the close of the copy's window too (its terms: 1 s before B's start, and its own
     * window), when a copy not held back pushes and draws */
    gw_fair_sale_t *fs = slot(b);
    int64_t until =
        atomic_load(&fs->sale.cfg.starts_at_ms) + atomic_load(&fs->sale.cfg.fair_window_ms) + 600;
    for (int i = 0; i < 6 || cm_wall_ms() < until; i++) {
        gw_fair_tick(&b->srv);
        sleep_ms(120);
    }
    assert_false(atomic_load(&b->srv.fair->conf_read)); /* the case: no poll answered */
    assert_int_equal(sale_keys(), keys);   /* no :wlock, :wp, :won, :wl, :e, :entered... */
    assert_int_equal(stock_left(b), left); /* no waiter of the old lottery promoted */
    conf_poll_refused(false);
    sleep_ms(FLEET_CONF_POLL_MS);
    gw_fair_tick(&b->srv); /* the next poll */
    assert_true(atomic_load(&b->srv.fair->conf_read));
    assert_int_equal(entries(b), 0); /* another lottery: dropped */
    assert_true(slot(b)->lot_gen == fleet_gen);
    assert_false(gw_fair_waitlist_open(slot(b)));
    assert_int_equal(sale_keys(), keys);
    assert_int_equal(stock_left(b), left);
}

/*
 * B drew the first lottery (the fleet's drawer: one unit, three entrants of its own, two
 * waiting) and went down; the sale was deleted through A and created again. At B's start
 * its copy is held back until its first poll answers. Its entry log holds its entries only
 * (a fleet's draw is Redis'), so its leftovers are closed until the draw's tick learns the
 * draw again, and a stale copy runs neither: not held back, its marks and its push would
 * put the old entrants into the new lottery (fair_tick's masking of the entries and the
 * draw; its waitlist's walk is the next test's).
 */
static void test_stale_copy_of_a_drawn_lottery(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b;
    fresh_redis();
    gw_start(&a, true, 1);
    gw_start_on(&b, true, 2, 1, true);
    assert_int_equal(gw_fair_configure(&a.srv, SALE, 2000, 0, 0, why, sizeof(why)), 0);
    poll_conf(&b);
    drawn_with_two_waiting(&b, 2000);
    gw_halt(&b);
    assert_int_equal(gw_fair_sale_deleted(&a.srv, SALE, false, why, sizeof(why)), 0);
    configure(&a);
    cm_hash_key_t k2;
    uint64_t g2;
    fleet_conf(&k2, &g2);
    gw_start_on(&b, false, 2, 1, true);
    assert_int_equal(entries(&b), 3);
    stale_copy_ticks(&b, g2);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * The one start at which a stale copy's leftovers are open before the first poll: its entry
 * log holds a drawn lottery with losers waiting, as one gateway's log does (the draw's "D",
 * "W" and "F w" records). B ran the sale alone and joins the fleet, which runs a lottery of
 * the sale of its own (through A). Until B's first poll drops the copy, its waitlist's walk
 * must not run: it would take the fleet's lock and record one of its own losers as the new
 * lottery's winner (:wp, :won), its order reserved from the fleet's stock, and at the sale's
 * end record the fleet's waitlist ended (gw_waitlist_fleet.c). fair_tick masks the walk of a
 * stale copy (gw_fair__stale) with its push and draw.
 */
static void test_stale_copy_walks_no_waitlist(void **state)
{
    (void)state;
    char why[256] = "";
    gw_t a, b;
    fresh_redis();
    gw_start(&a, true, 1);
    configure(&a);
    cm_hash_key_t k;
    uint64_t g;
    fleet_conf(&k, &g);
    gw_start_on(&b, true, 2, 1, false);
    assert_int_equal(gw_fair_configure(&b.srv, SALE, 2000, 0, 0, why, sizeof(why)), 0);
    drawn_with_two_waiting(&b, 2000);
    gw_halt(&b);
    gw_start_on(&b, false, 2, 1, true); /* on the fleet's Redis: a fresh unit in its stock */
    assert_true(gw_fair_waitlist_open(slot(&b)));
    stale_copy_ticks(&b, g);
    gw_stop(&b);
    gw_stop(&a);
}

static int setup(void **state)
{
    (void)state;
    return ts_redis_start(&rs, false);
}

static int teardown(void **state)
{
    (void)state;
    ts_redis_free(&rs);
    return 0;
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_down_across_delete_and_create),
        cmocka_unit_test(test_created_again_through_it),
        cmocka_unit_test(test_put_back_keeps_entries),
        cmocka_unit_test(test_put_back_through_a_gateway_without_a_copy),
        cmocka_unit_test(test_put_back_before_the_offer),
        cmocka_unit_test(test_offer_only_of_a_copy_seen),
        cmocka_unit_test(test_empty_copy_entry_before_first_poll),
        cmocka_unit_test(test_entry_waits_for_the_saved_generation),
        cmocka_unit_test(test_stale_copy_of_a_drawn_lottery),
        cmocka_unit_test(test_stale_copy_walks_no_waitlist),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
