/*
 * gw_accept: the accept sequence of the orders no buy request made (a lottery
 * winner, a waitlist promotion), on a gateway's parts: a memory inventory, a
 * spool in fsync durability and the status table. What each outcome of the
 * inventory becomes, that an order is known only once published, that a
 * commit whose fdatasync fails leaves the record not durable (and the spool
 * refusing the next one), and that an order found in the spool is made known
 * without being counted again.
 */
#include "gateway/buy/gw_accept.h"

#include "common/cm_id.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "queue/oq_spool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <unistd.h>

typedef struct acc {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
    gw_acceptor_t x;
    inv_worker_t *w;
    inv_sale_t *sale;
    char sale_id[INV_SALE_ID_MAX + 1];
    char ids[8][INV_ORDER_ID_MAX + 1]; /* order ids the status table keeps (cm_id's) */
} acc_t;

#define ID(m, i) ((m)->ids[i])

/* Sale "s1": 2 units, 1 per person. */
static void acc_open(acc_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-accept-unit-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cfg.data_dir, sizeof(m->cfg.data_dir), "%s", m->dir);
    m->srv.cfg = &m->cfg;
    m->srv.node.id = 1;
    char why[256] = "", spdir[128];
    assert_int_equal(inv_open(&m->srv.stores.inv, "memory", NULL, 16, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", m->dir);
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_FSYNC};
    assert_int_equal(oq_spool_open(&m->srv.stores.spool, &so, why, sizeof(why)), 0);
    m->srv.stores.orders = gw_orders_new(1000);
    assert_int_equal(inv_worker_open(m->srv.stores.inv, NULL, &m->w), 0);
    int64_t now = cm_wall_ms();
    inv_sale_def_t def = {
        .stock = 2, .per_user_limit = 1, .starts_at_ms = now - 10000, .ends_at_ms = now + 3600000};
    snprintf(def.sale_id, sizeof(def.sale_id), "s1");
    inv_sale_info_t info;
    assert_int_equal(inv_sale_put(m->srv.stores.inv, &def, &info, why, sizeof(why)), 0);
    m->sale = inv_sale_find(m->srv.stores.inv, "s1");
    assert_non_null(m->sale);
    snprintf(m->sale_id, sizeof(m->sale_id), "s1");
    m->x = gw_acceptor(&m->srv);
    cm_id_gen_t g;
    cm_id_gen_init(&g, 1);
    for (int i = 0; i < 8; i++)
        cm_id_format(cm_id_next(&g, now), m->ids[i]);
}

static void acc_close(acc_t *m)
{
    inv_worker_close(m->w);
    gw_orders_free(m->srv.stores.orders);
    oq_spool_close(m->srv.stores.spool);
    inv_close(m->srv.stores.inv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    assert_int_equal(system(cmd), 0);
}

/* take of person's order_id (1 unit, account "acct-<person>"); *rq keeps the step's answer. */
static int take(acc_t *m, const char *person, const char *order_id, inv_reserve_req_t *rq,
                gw_accept_t *a)
{
    memset(rq, 0, sizeof(*rq));
    rq->sale = m->sale;
    snprintf(rq->user_id, sizeof(rq->user_id), "%s", person);
    snprintf(rq->order_id, sizeof(rq->order_id), "%s", order_id);
    rq->qty = 1;
    char user[INV_USER_ID_MAX + 1];
    snprintf(user, sizeof(user), "acct-%s", person);
    gw_accept_req_t req = {.inv = m->w,
                           .rq = rq,
                           .sale_id = m->sale_id,
                           .user = user,
                           .accepted_at_ms = 1234,
                           .why = "unit test: spool refused"};
    return gw_accept_take(&m->x, &req, a);
}

/* A winner: spooled, durable once committed, known once published; the spool finds it. */
static void test_accept_then_known(void **st)
{
    (void)st;
    acc_t *m = calloc(1, sizeof(*m));
    acc_open(m);
    inv_reserve_req_t rq;
    gw_accept_t a;
    assert_int_equal(take(m, "p1", ID(m, 1), &rq, &a), GW_ACCEPT_SPOOLED);
    assert_true(a.fresh);
    assert_int_equal(rq.stock_left, 1);
    assert_string_equal(a.o.order_id, ID(m, 1));
    assert_string_equal(a.o.user_id, "acct-p1");
    assert_string_equal(oq_order_person(&a.o), "p1");
    assert_int_equal(a.o.accepted_at_ms, 1234);
    assert_false(gw_orders_get(m->srv.stores.orders, ID(m, 1), NULL)); /* not before it is durable */
    gw_accept_commit(&m->x, &a, 1);
    assert_true(a.durable);
    gw_accept_publish(&m->x, &a, 1);
    oq_order_t o;
    assert_true(gw_orders_get(m->srv.stores.orders, ID(m, 1), &o));
    assert_int_equal(o.qty, 1);
    gw_accept_t f;
    assert_int_equal(gw_accept_find(&m->x, ID(m, 1), &f), 1);
    assert_false(f.fresh);
    assert_string_equal(f.o.order_id, ID(m, 1));
    assert_int_equal(gw_accept_find(&m->x, ID(m, 2), &f), 0);
    acc_close(m);
    free(m);
}

/* What the inventory answered becomes an outcome; only the reserved are spooled. */
static void test_outcomes(void **st)
{
    (void)st;
    acc_t *m = calloc(1, sizeof(*m));
    acc_open(m);
    inv_reserve_req_t rq;
    gw_accept_t a[2], x;
    assert_int_equal(take(m, "p1", ID(m, 1), &rq, &a[0]), GW_ACCEPT_SPOOLED);
    assert_int_equal(take(m, "p1", ID(m, 2), &rq, &x),
                     GW_ACCEPT_REFUSED); /* the per-person limit */
    assert_int_equal(take(m, "p2", ID(m, 3), &rq, &a[1]), GW_ACCEPT_SPOOLED);
    assert_int_equal(rq.stock_left, 0);
    assert_int_equal(take(m, "p3", ID(m, 4), &rq, &x), GW_ACCEPT_SOLD_OUT);
    m->sale = NULL;
    assert_int_equal(take(m, "p4", ID(m, 5), &rq, &x), GW_ACCEPT_UNKNOWN_SALE);
    gw_accept_commit(&m->x, a, 2); /* a batch: one wait for the last */
    assert_true(a[0].durable && a[1].durable);
    gw_accept_publish(&m->x, a, 2);
    assert_true(gw_orders_get(m->srv.stores.orders, ID(m, 1), NULL));
    assert_true(gw_orders_get(m->srv.stores.orders, ID(m, 3), NULL));
    assert_false(gw_orders_get(m->srv.stores.orders, ID(m, 2), NULL));
    assert_int_equal(gw_accept_find(&m->x, ID(m, 2), &x), 0);
    assert_int_equal(gw_accept_find(&m->x, ID(m, 4), &x), 0);
    acc_close(m);
    free(m);
}

/* A failed fdatasync: the record is not durable (the spool cut it), and the
 * spool refuses the next one, whose units go back. */
static void test_commit_fails(void **st)
{
    (void)st;
    acc_t *m = calloc(1, sizeof(*m));
    acc_open(m);
    char why[256] = "";
    assert_int_equal(gw_releaser_start(&m->srv, why, sizeof(why)), 0); /* the refused one's */
    inv_reserve_req_t rq;
    gw_accept_t a, b;
    assert_int_equal(take(m, "p1", ID(m, 1), &rq, &a), GW_ACCEPT_SPOOLED);
    oq__spool_fail_next_sync(m->srv.stores.spool);
    gw_accept_commit(&m->x, &a, 1);
    assert_false(a.durable);
    assert_int_equal(take(m, "p2", ID(m, 2), &rq, &b), GW_ACCEPT_SPOOL_REFUSED);
    /* its unit went back: p2 (1 per person) is reserved again, and refused by the spool again */
    for (int i = 0; i < 200 && gw_releaser_pending(&m->srv, ID(m, 2), true); i++)
        usleep(10000);
    assert_false(gw_releaser_pending(&m->srv, ID(m, 2), true));
    assert_int_equal(take(m, "p2", ID(m, 3), &rq, &b), GW_ACCEPT_SPOOL_REFUSED);
    for (int i = 0; i < 200 && gw_releaser_pending(&m->srv, ID(m, 3), true); i++)
        usleep(10000);
    gw_releaser_stop(&m->srv);
    acc_close(m);
    free(m);
}

/* An order found in the spool that the status table lacks is made known by publish. */
static void test_publish_found(void **st)
{
    (void)st;
    acc_t *m = calloc(1, sizeof(*m));
    acc_open(m);
    inv_reserve_req_t rq;
    gw_accept_t a, f;
    assert_int_equal(take(m, "p1", ID(m, 1), &rq, &a), GW_ACCEPT_SPOOLED);
    gw_accept_commit(&m->x, &a, 1);
    assert_true(a.durable);
    assert_int_equal(gw_accept_find(&m->x, ID(m, 1), &f), 1);
    assert_false(gw_orders_get(m->srv.stores.orders, ID(m, 1), NULL));
    gw_accept_publish(&m->x, &f, 1);
    assert_true(gw_orders_get(m->srv.stores.orders, ID(m, 1), NULL));
    acc_close(m);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_then_known),
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_commit_fails),
        cmocka_unit_test(test_publish_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
