/*
 * Giving units back (gw_server.c, gw_release.c) on a gateway's parts: memory
 * inventory, a spool in fsync durability, the order table and the releaser
 * thread (no workers, no relay).
 *
 * A give-back (the release of an order the spool refused, of a reserve whose
 * outcome a stopping worker cannot know, of a lottery winner the spool
 * refused) is a "release" EVENT in the spool, then the releaser's try. In
 * fsync durability the event was never fdatasynced by itself: it rode on the
 * next order's group commit, and with none coming (the spool full, the sale
 * over, a stop) a power loss could lose it, and with it the units if the
 * releaser had not given them back yet (Redis down). Each is on disk now
 * before the releaser gives its units back.
 *
 * A release of an outcome that names the account alone (no person member:
 * written by a settlement from before persons) of an order held under its
 * person finds nothing under the account; it is found by its order id, in
 * the releaser and in the start's replay (both through gw_units_release).
 */
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "queue/oq_spool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

typedef struct mini {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
} mini_t;

static void mini_open(mini_t *m, gw_durability_t durability)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-release-unit-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cfg.data_dir, sizeof(m->cfg.data_dir), "%s", m->dir);
    snprintf(m->cfg.inventory, sizeof(m->cfg.inventory), "memory");
    m->cfg.durability = durability;
    m->srv.cfg = &m->cfg;
    m->srv.node.id = 1;
    char why[256] = "", spdir[128];
    assert_int_equal(inv_open(&m->srv.stores.inv, "memory", NULL, 16, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", m->dir);
    oq_spool_opts_t so = {.dir = spdir,
                          .durability = durability == GW_DURABILITY_FSYNC ? OQ_DURABILITY_FSYNC
                                                                          : OQ_DURABILITY_WRITE};
    assert_int_equal(oq_spool_open(&m->srv.stores.spool, &so, why, sizeof(why)), 0);
    m->srv.stores.orders = gw_orders_new(1000);
    assert_int_equal(gw_releaser_start(&m->srv, why, sizeof(why)), 0);
}

static void mini_close(mini_t *m)
{
    gw_releaser_stop(&m->srv);
    gw_orders_free(m->srv.stores.orders);
    oq_spool_close(m->srv.stores.spool);
    inv_close(m->srv.stores.inv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    assert_int_equal(system(cmd), 0);
}

static cm_id_gen_t g_ids;

static void make_order(oq_order_t *o, int i)
{
    memset(o, 0, sizeof(*o));
    o->type = OQ_MSG_ORDER;
    cm_id_format(cm_id_next(&g_ids, cm_wall_ms()), o->order_id);
    snprintf(o->sale_id, sizeof(o->sale_id), "s1");
    snprintf(o->user_id, sizeof(o->user_id), "u%d", i);
    o->qty = 1;
    o->node_id = 1;
    o->accepted_at_ms = cm_wall_ms();
}

/* Waits (bounded) until the releaser has finished n releases. */
static void wait_done(gw_server_t *srv, uint64_t n)
{
    uint64_t p = 0, d = 0, r = 0;
    for (int i = 0; i < 10000; i++) {
        gw_releaser_stats(srv, &p, &d, &r);
        if (d >= n)
            break;
        usleep(1000);
    }
    assert_int_equal(d, n);
}

static void test_giveback_fsynced(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m, GW_DURABILITY_FSYNC);
    oq_spool_stats_t st;
    /* an order, then a give-back, as a worker's spool batch leaves them */
    oq_order_t o, gb;
    make_order(&o, 1);
    assert_int_equal(oq_spool_append(m.srv.stores.spool, &o, 1), 0);
    assert_int_equal(oq_spool_sync(m.srv.stores.spool), 0);
    make_order(&gb, 2);
    gw_release_unaccepted(&m.srv, &gb, "not accepted: spool full");
    wait_done(&m.srv, 1);
    /* its units are back: the event that says so is on disk */
    oq_spool_stats(m.srv.stores.spool, &st);
    assert_int_equal(st.appended_records, 2);
    assert_int_equal(oq_pos_cmp(st.synced, st.end), 0);

    /* many at once share fdatasyncs (the spool's group commit), never one each
     * on the caller's thread: the worker loops that call this never wait */
    uint64_t before = st.fsyncs;
    for (int i = 0; i < 50; i++) {
        make_order(&gb, 10 + i);
        gw_release_unaccepted(&m.srv, &gb, "not accepted: spool full");
    }
    wait_done(&m.srv, 51);
    oq_spool_stats(m.srv.stores.spool, &st);
    assert_int_equal(oq_pos_cmp(st.synced, st.end), 0);
    fprintf(stderr, "50 give-backs: %llu fdatasyncs\n", (unsigned long long)(st.fsyncs - before));
    assert_true(st.fsyncs - before >= 1);
    assert_true(st.fsyncs - before <= 50);
    mini_close(&m);
}

/* Durability write: nothing changes, no fdatasync (the releaser syncs only in fsync). */
static void test_giveback_write_no_fsync(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m, GW_DURABILITY_WRITE);
    oq_order_t gb;
    make_order(&gb, 2);
    gw_release_unaccepted(&m.srv, &gb, "not accepted: spool full");
    wait_done(&m.srv, 1);
    oq_spool_stats_t st;
    oq_spool_stats(m.srv.stores.spool, &st);
    assert_int_equal(st.appended_records, 1);
    assert_int_equal(st.fsyncs, 0);
    mini_close(&m);
}

/* Sale s1: 5 units, 1 per person; order `o` (account u1) held under person P-1. */
static void held_by_person(mini_t *m, oq_order_t *o)
{
    char why[256] = "";
    int64_t now = cm_wall_ms();
    inv_sale_def_t def = {
        .stock = 5, .per_user_limit = 1, .starts_at_ms = now - 1000, .ends_at_ms = now + 3600000};
    snprintf(def.sale_id, sizeof(def.sale_id), "s1");
    inv_sale_info_t info;
    assert_int_equal(inv_sale_put(m->srv.stores.inv, &def, &info, why, sizeof(why)), 0);
    make_order(o, 1);
    assert_int_equal(inv_replay_keyed(m->srv.stores.inv, "s1", "P-1", 1, o->order_id, NULL, 0), 0);
    assert_int_equal(inv_sale_get(m->srv.stores.inv, "s1", &info), 0);
    assert_int_equal(info.stock_left, 4);
}

static int64_t stock_left(mini_t *m)
{
    inv_sale_info_t info;
    assert_int_equal(inv_sale_get(m->srv.stores.inv, "s1", &info), 0);
    return info.stock_left;
}

/* The releaser: a failed outcome naming account u1 alone gives P-1's unit back. */
static void test_release_account_only_releaser(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m, GW_DURABILITY_WRITE);
    oq_order_t o;
    held_by_person(&m, &o);
    oq_order_t out = o; /* the outcome: the account, no person member */
    out.person[0] = '\0';
    gw_releaser_push(&m.srv, &out, OQ_STATUS_FAILED, "payment declined", NULL);
    wait_done(&m.srv, 1);
    assert_int_equal(stock_left(&m), 5);
    /* once: the same release again finds nothing to give back */
    gw_releaser_push(&m.srv, &out, OQ_STATUS_FAILED, "payment declined", NULL);
    wait_done(&m.srv, 2);
    assert_int_equal(stock_left(&m), 5);
    mini_close(&m);
}

/* The replay's call (gw_server.c replay_one): the same, once; a release that
 * names the person finds it under the person. */
static void test_release_account_only_replay(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m, GW_DURABILITY_WRITE);
    oq_order_t o;
    held_by_person(&m, &o);
    oq_order_t out = o;
    out.person[0] = '\0';
    assert_int_equal(gw_units_release(m.srv.stores.inv, &out), 0);
    assert_int_equal(stock_left(&m), 5);
    assert_int_equal(gw_units_release(m.srv.stores.inv, &out), CM_ENOTFOUND);
    assert_int_equal(stock_left(&m), 5);
    /* with the person member: released under the person */
    oq_order_t o2;
    make_order(&o2, 2);
    assert_int_equal(inv_replay_keyed(m.srv.stores.inv, "s1", "P-2", 1, o2.order_id, NULL, 0), 0);
    oq_order_person_set(&o2, "P-2");
    assert_int_equal(stock_left(&m), 4);
    assert_int_equal(gw_units_release(m.srv.stores.inv, &o2), 0);
    assert_int_equal(stock_left(&m), 5);
    mini_close(&m);
}

/* The releaser without its thread (the simulator's): a push waits for a step, and a step
 * tries each release once; a stop drops what is still queued (the spool replays it). */
static void test_releaser_stepped(void **state)
{
    (void)state;
    mini_t m;
    mini_open(&m, GW_DURABILITY_WRITE);
    gw_releaser_stop(&m.srv); /* the thread's, for the stepped one */
    gw_releaser_open_stepped(&m.srv);
    oq_order_t o;
    held_by_person(&m, &o);
    gw_releaser_push(&m.srv, &o, OQ_STATUS_FAILED, "payment declined", NULL);
    uint64_t p = 0, d = 0, r = 0;
    gw_releaser_stats(&m.srv, &p, &d, &r);
    assert_int_equal(p, 1);
    assert_int_equal(d, 0);
    assert_int_equal(stock_left(&m), 4);
    gw_releaser_step(&m.srv);
    gw_releaser_stats(&m.srv, &p, &d, &r);
    assert_int_equal(p, 0);
    assert_int_equal(d, 1);
    assert_int_equal(stock_left(&m), 5);
    gw_releaser_step(&m.srv); /* nothing queued: nothing done */
    gw_releaser_stats(&m.srv, &p, &d, &r);
    assert_int_equal(d, 1);
    gw_releaser_push(&m.srv, &o, OQ_STATUS_FAILED, "payment declined", NULL);
    mini_close(&m); /* stopped with one queued: dropped, no thread to join */
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    cm_id_gen_init(&g_ids, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_giveback_fsynced),
        cmocka_unit_test(test_giveback_write_no_fsync),
        cmocka_unit_test(test_release_account_only_releaser),
        cmocka_unit_test(test_release_account_only_replay),
        cmocka_unit_test(test_releaser_stepped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
