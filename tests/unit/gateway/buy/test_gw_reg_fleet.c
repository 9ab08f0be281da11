/*
 * gw_reg on a fleet's store (gw_reg_fleet.c) against a real redis-server
 * (started here on 127.0.0.1 at a free port, stopped by PID): the admin's
 * registration window against the lottery thread's poll of the shared
 * configuration (conf_sync_one, here through gw_fair__fleet_conf_refresh,
 * the same read and apply). A sale's PUT writes the lottery's value without
 * the window (gw_fair_configure), then publishes the window (gw_reg_configure);
 * a poll that read the value between the two and applies it while the window
 * is being published must neither make the fleet publish no window (every
 * gateway would answer the sale's registrations 404) nor leave the old one
 * on the gateway that took the PUT.
 */
#include "gateway/buy/gw_reg.h"

#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"
#include "queue/oq_spool.h"
#include "tests/support/ts_jrec.h"
#include "tests/support/ts_redis.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static ts_redis_t rs;

#define SALE "fr"
#define CONF "{flashgate:fair}:conf" /* the lottery values (gw_fair_redis.c) */

/* One gateway of the fleet: memory inventory, a spool, the order table, and
 * the lottery's table over a data dir with its store on the Redis above. */
typedef struct gw {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
} gw_t;

static void gw_start(gw_t *g)
{
    char why[256] = "", spdir[128];
    memset(g, 0, sizeof(*g));
    snprintf(g->dir, sizeof(g->dir), "/tmp/fg-regfleet-unit-XXXXXX");
    assert_non_null(mkdtemp(g->dir));
    snprintf(g->cfg.data_dir, sizeof(g->cfg.data_dir), "%s", g->dir);
    ts_redis_url(&rs, g->cfg.inventory, sizeof(g->cfg.inventory), NULL); /* the fleet's store */
    g->cfg.max_registrations = 1000;
    g->srv.cfg = &g->cfg;
    g->srv.node.id = 1;
    assert_int_equal(inv_open(&g->srv.stores.inv, "memory", NULL, 16, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", g->dir);
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_WRITE};
    assert_int_equal(oq_spool_open(&g->srv.stores.spool, &so, why, sizeof(why)), 0);
    g->srv.stores.orders = gw_orders_new(1000);
    assert_int_equal(gw_fair_open(&g->srv, gw_acceptor(&g->srv), why, sizeof(why)), 0);
}

static void gw_stop(gw_t *g)
{
    gw_fair_close(&g->srv);
    gw_orders_free(g->srv.stores.orders);
    oq_spool_close(g->srv.stores.spool);
    inv_close(g->srv.stores.inv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g->dir);
    assert_int_equal(system(cmd), 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 5 s) until another thread holds mu. */
static void wait_held(pthread_mutex_t *mu)
{
    for (int i = 0; i < 5000; i++) {
        if (pthread_mutex_trylock(mu) != 0)
            return;
        pthread_mutex_unlock(mu);
        sleep_ms(1);
    }
    fail_msg("the other thread never took the lock");
}

/* The lottery thread's poll of the sale (a read of Redis, then conf_sync_one). */
static void *poll_thread(void *arg)
{
    gw_t *g = arg;
    char why[256] = "";
    assert_int_equal(gw_fair__fleet_conf_refresh(g->srv.fair, SALE, why, sizeof(why)), 0);
    return NULL;
}

typedef struct put {
    gw_t *g;
    int64_t opens_ms, closes_ms;
    int rc;
} put_t;

/* The admin's PUT, its registration part. */
static void *reg_thread(void *arg)
{
    put_t *p = arg;
    char why[256] = "";
    p->rc = gw_reg_configure(&p->g->srv, SALE, p->opens_ms, p->closes_ms, why, sizeof(why));
    return NULL;
}

/*
 * The interleaving is held in place by fs->mu, which the poll's apply takes
 * (conf_sync_one) and the registration's publish does not: the poll reads the
 * value without the window, holds tick_mu and f->mu and waits for fs->mu; the
 * PUT's registration then runs as far as it can; fs->mu is let go, the poll
 * applies what it read, and the PUT finishes. Redis must hold the window the
 * PUT asked for, and so must the gateway that took it (no later poll here).
 */
static void test_poll_between_lottery_and_window(void **state)
{
    (void)state;
    gw_t g;
    gw_start(&g);
    char why[256] = "", val[256] = "";
    int64_t now = cm_wall_ms();
    put_t p = {.g = &g, .opens_ms = now - 1000, .closes_ms = now + 4000};
    /* the PUT's lottery part: the value in Redis, without a window */
    assert_int_equal(gw_fair_configure(&g.srv, SALE, 1000, 0, 0, why, sizeof(why)), 0);
    gw_fair_t *f = g.srv.fair;
    gw_fair_sale_t *fs = gw_fair__slot_find(f, SALE);
    assert_non_null(fs);

    pthread_mutex_lock(&fs->mu);
    pthread_t poll, put;
    assert_int_equal(pthread_create(&poll, NULL, poll_thread, &g), 0);
    wait_held(&f->mu); /* the poll read Redis and waits for fs->mu */
    assert_int_equal(pthread_create(&put, NULL, reg_thread, &p), 0);
    for (int i = 0; i < 200 && atomic_load(&fs->sale.cfg.reg_opens_ms) != p.opens_ms; i++)
        sleep_ms(1); /* as far as the PUT goes while the poll holds its locks */
    pthread_mutex_unlock(&fs->mu);
    assert_int_equal(pthread_join(poll, NULL), 0);
    assert_int_equal(pthread_join(put, NULL), 0);
    assert_int_equal(p.rc, 0);

    char want[64];
    snprintf(want, sizeof(want), " r=%lld:%lld", (long long)p.opens_ms, (long long)p.closes_ms);
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "HGET %s %s", CONF, SALE), 0);
    assert_non_null(strstr(val, want)); /* what every gateway's poll reads */
    int64_t o = 0, c = 0;
    gw_reg_conf_get(&g.srv, SALE, &o, &c);
    assert_int_equal(o, p.opens_ms); /* the gateway that took the PUT */
    assert_int_equal(c, p.closes_ms);
    /* and the next poll keeps it */
    assert_int_equal(gw_fair__fleet_conf_refresh(f, SALE, why, sizeof(why)), 0);
    gw_reg_conf_get(&g.srv, SALE, &o, &c);
    assert_int_equal(o, p.opens_ms);
    gw_stop(&g);
}

/*
 * Each PUT writes its own part of the sale's configuration and keeps the other
 * as Redis holds it: a lottery PUT on a gateway that has not polled another's
 * registration window yet keeps that window, and a registration's PUT keeps
 * the lottery's terms.
 */
static void test_each_part_kept(void **state)
{
    (void)state;
    gw_t a, b;
    gw_start(&a);
    gw_start(&b);
    b.srv.node.id = 2;
    char why[256] = "", val[256] = "", want[64];
    int64_t now = cm_wall_ms(), o = now - 1000, c = now + 4000;
    assert_int_equal(gw_fair_configure(&a.srv, SALE, 1000, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(gw_reg_configure(&a.srv, SALE, o, c, why, sizeof(why)), 0);
    /* b has not polled: its own copy has no window, its lottery PUT must keep a's */
    assert_int_equal(gw_fair_configure(&b.srv, SALE, 2000, 0, 0, why, sizeof(why)), 0);
    snprintf(want, sizeof(want), " r=%lld:%lld", (long long)o, (long long)c);
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "HGET %s %s", CONF, SALE), 0);
    assert_non_null(strstr(val, want));
    assert_true(strncmp(val, "2000 0 ", 7) == 0);
    /* a registration's PUT that removes the window keeps the lottery's terms */
    assert_int_equal(gw_reg_configure(&a.srv, SALE, 0, 0, why, sizeof(why)), 0);
    assert_int_equal(ts_redis_cmd(&rs, val, sizeof(val), "HGET %s %s", CONF, SALE), 0);
    assert_null(strstr(val, " r="));
    assert_true(strncmp(val, "2000 0 ", 7) == 0);
    gw_stop(&b);
    gw_stop(&a);
}

/*
 * A gateway drops a deleted sale's lottery (the admin's DELETE here; a poll of the tombstone
 * alike): its entry log is unlinked with its directory fsync'd, as the fleet's registrations
 * are Redis' and no removal of a .reg fsyncs that directory after it. fair.json, saved in
 * another directory, says the lottery is gone: a power cut that brought the log's name back
 * would load the deleted lottery's entries, and push them into the sale created again (the
 * simulator's fleet world, seed 123 --fairfleet, docs/simulation.md).
 */
static void test_delete_removes_log_durably(void **state)
{
    (void)state;
    gw_t g;
    gw_start(&g);
    char why[256] = "", log[128];
    assert_int_equal(gw_fair_configure(&g.srv, SALE, 1000, 0, 0, why, sizeof(why)), 0);
    snprintf(log, sizeof(log), "%s/fair/%s.log", g.dir, SALE);
    assert_int_equal(access(log, F_OK), 0);
    ts_jrec_start();
    int rc = gw_fair_sale_deleted(&g.srv, SALE, false, why, sizeof(why));
    cm_journal_set_fs(NULL);
    assert_int_equal(rc, 0);
    assert_true(ts_jrec_removed_durably(log));
    gw_stop(&g);
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
        cmocka_unit_test(test_poll_between_lottery_and_window),
        cmocka_unit_test(test_each_part_kept),
        cmocka_unit_test(test_delete_removes_log_durably),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
