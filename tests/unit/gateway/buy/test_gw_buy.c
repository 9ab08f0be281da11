/*
 * gw_buy_handle without a socket: a request context driven through the buy
 * path on a worker whose parts are real (memory inventory, a spool in a temp
 * dir, the order table, the limits) but which runs no loop. What each
 * request is answered before it would be written to the spool: unknown sale,
 * not started, ended, body and qty bounds, the per-user limit (the sale's
 * terms, then the inventory's count), sold out, and a keyed retry (in
 * progress while its original waits for the spool, replayed once durable).
 * A reserved order is held in the worker's spool batch (w->buy->spool_wait):
 * its write and 202 are the loop's (integration.37-spool-burst).
 */
#include "gateway/buy/gw_buy.h"

#include "common/cm_alloc.h"
#include "common/cm_id.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_limit.h"
#include "inventory/inv.h"
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

typedef struct rig {
    char dir[64];
    gw_config_t cfg;
    gw_server_t srv;
    gw_worker_t w;
    gw_worker_buy_t wbuy; /* w.buy */
    gw_req_t *held[8];
    unsigned nheld;
} rig_t;

static int rig_setup(void **state)
{
    rig_t *g = calloc(1, sizeof(*g));
    assert_non_null(g);
    snprintf(g->dir, sizeof(g->dir), "/tmp/fg-buy-unit-XXXXXX");
    assert_non_null(mkdtemp(g->dir));
    snprintf(g->cfg.data_dir, sizeof(g->cfg.data_dir), "%s", g->dir);
    gw_server_t *srv = &g->srv;
    srv->cfg = &g->cfg;
    srv->node.id = 1;
    srv->node.since_ms = cm_wall_ms() - 1;
    srv->pool.max_held = 100;
    char why[256] = "", spdir[128];
    assert_int_equal(inv_open(&srv->stores.inv, "memory", NULL, 64, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", g->dir);
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_FSYNC};
    assert_int_equal(oq_spool_open(&srv->stores.spool, &so, why, sizeof(why)), 0);
    srv->stores.orders = gw_orders_new(1000);
    srv->stores.limits = gw_limits_new(1000); /* every rate 0: off */
    assert_non_null(srv->stores.limits);
    cm_id_gen_init(&srv->node.ids, 1);
    gw_worker_t *w = &g->w;
    w->srv = srv;
    w->buy = &g->wbuy;
    assert_int_equal(inv_worker_open(srv->stores.inv, NULL, &w->inv), 0);
    w->buy->spool_wait_tail = &w->buy->spool_wait;
    w->buy->sync_wait_tail = &w->buy->sync_wait;
    pthread_mutex_init(&w->hh_mu, NULL);
    cm_topk_init(&w->hh_users);
    cm_topk_init(&w->hh_ips);
    w->now_ns = cm_mono_ns();
    *state = g;
    return 0;
}

static int rig_teardown(void **state)
{
    rig_t *g = *state;
    for (unsigned i = 0; i < g->nheld; i++)
        free(g->held[i]);
    gw_buy_prep_free(&g->w);
    pthread_mutex_destroy(&g->w.hh_mu);
    inv_worker_close(g->w.inv);
    gw_limits_free(g->srv.stores.limits);
    gw_orders_free(g->srv.stores.orders);
    oq_spool_close(g->srv.stores.spool);
    inv_close(g->srv.stores.inv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g->dir);
    assert_int_equal(system(cmd), 0);
    free(g);
    return 0;
}

/* Sale `id` of `stock` units, `per_user` each, from start to end (ms from now). */
static void sale(rig_t *g, const char *id, int64_t stock, uint32_t per_user, int64_t start,
                 int64_t end)
{
    int64_t now = cm_wall_ms();
    inv_sale_def_t def = {.stock = stock,
                          .per_user_limit = per_user,
                          .starts_at_ms = now + start,
                          .ends_at_ms = now + end};
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", id);
    inv_sale_info_t info;
    char why[256] = "";
    assert_int_equal(inv_sale_put(g->srv.stores.inv, &def, &info, why, sizeof(why)), 0);
}

/* POST /v1/sales/{id}/orders with body (and an Idempotency-Key if key): the
 * reply it is answered with, or GW_R_ACCEPTED with *held when it waits for the
 * spool batch (the request is then kept until teardown). */
static gw_reply_t buy(rig_t *g, const char *id, const char *body, const char *key, bool *held,
                      gw_req_t **out)
{
    gw_req_t *r = calloc(1, sizeof(gw_req_with_buy_t)); /* the buy path's part after it */
    assert_non_null(r);
    r->w = &g->w;
    r->method = "POST";
    r->verb = GW_VERB_POST;
    gw_resp_init(&r->resp, GW_R_OK);
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->body = r->body_inline;
    r->body_len = strlen(body);
    memcpy(r->body_inline, body, r->body_len + 1);
    r->hdr.idem_key = key;
    bool h = gw_buy_handle(r);
    gw_reply_t rep = r->cached ? r->cached_reply : r->resp.reply;
    if (held)
        *held = h;
    if (out)
        *out = r;
    if (h) {
        assert_true(g->nheld < 8);
        g->held[g->nheld++] = r;
        return GW_R_ACCEPTED;
    }
    if (!out)
        free(r);
    return rep;
}

/* The prepared answer p holds s (head or body). */
static bool prep_has(const gw_prep_t *p, const char *s)
{
    return p && memmem(p->buf, p->len, s, strlen(s)) != NULL;
}

static void test_refusals_before_the_reserve(void **state)
{
    rig_t *g = *state;
    sale(g, "live", 10, 2, -1000, 3600000);
    sale(g, "later", 10, 2, 60000, 3600000);
    sale(g, "over", 10, 2, -7200000, -3600000);
    bool held = true;
    assert_int_equal(buy(g, "nope", "{\"user_id\":\"u1\"}", NULL, &held, NULL), GW_R_UNKNOWN_SALE);
    assert_false(held);
    gw_req_t *r = NULL;
    assert_int_equal(buy(g, "later", "{\"user_id\":\"u1\"}", NULL, NULL, &r), GW_R_NOT_STARTED);
    assert_true(prep_has(r->cached, "\"retry_after\":60")); /* 60 s, rounded up */
    free(r);
    assert_int_equal(buy(g, "over", "{\"user_id\":\"u1\"}", NULL, NULL, NULL), GW_R_SALE_ENDED);
    /* the body: its fields and qty's bounds */
    assert_int_equal(buy(g, "live", "{\"qty\":1}", NULL, NULL, NULL), GW_R_BAD_REQUEST);
    assert_int_equal(buy(g, "live", "{\"user_id\":\"u1\",\"qty\":0}", NULL, NULL, NULL),
                     GW_R_BAD_REQUEST);
    assert_int_equal(buy(g, "live", "{\"user_id\":\"u1\",\"qty\":-1}", NULL, NULL, NULL),
                     GW_R_BAD_REQUEST);
    assert_int_equal(buy(g, "live", "{\"user_id\":\"u1\",\"qty\":\"1\"}", NULL, NULL, NULL),
                     GW_R_BAD_REQUEST);
    assert_int_equal(buy(g, "live", "not json", NULL, NULL, NULL), GW_R_BAD_REQUEST);
    /* more than the sale lets one user buy, before the inventory is asked */
    assert_int_equal(buy(g, "live", "{\"user_id\":\"u1\",\"qty\":3}", NULL, NULL, NULL),
                     GW_R_LIMIT_PER_USER);
    /* a malformed key */
    assert_int_equal(buy(g, "live", "{\"user_id\":\"u1\"}", "bad key", NULL, NULL),
                     GW_R_BAD_REQUEST);
    /* nothing was reserved or held */
    assert_null(g->w.buy->spool_wait);
    assert_int_equal(g->w.suspended, 0);
}

static void test_reserve_then_limits(void **state)
{
    rig_t *g = *state;
    sale(g, "s1", 3, 2, -1000, 3600000);
    bool held = false;
    gw_req_t *r = NULL;
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\",\"qty\":2}", NULL, &held, &r),
                     GW_R_ACCEPTED);
    assert_true(held);
    /* held in this iteration's spool batch, its order filled in */
    assert_ptr_equal(g->w.buy->spool_wait, r);
    assert_int_equal(g->w.suspended, 1);
    assert_true(g->w.buy->spool_wait_bytes > 0);
    assert_string_equal(gw_req_buy(r)->order.sale_id, "s1");
    assert_string_equal(gw_req_buy(r)->order.user_id, "u1");
    assert_int_equal(gw_req_buy(r)->order.qty, 2);
    assert_true(gw_req_buy(r)->order.order_id[0] != '\0');
    /* the inventory's per-user count: u1 holds 2 of 2 */
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\"}", NULL, NULL, NULL), GW_R_LIMIT_PER_USER);
    /* the last unit, then sold out: from the inventory, then the prepared answer */
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u2\",\"qty\":2}", NULL, NULL, NULL),
                     GW_R_SOLD_OUT);
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u2\"}", NULL, &held, NULL), GW_R_ACCEPTED);
    assert_true(held);
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u3\"}", NULL, NULL, NULL), GW_R_SOLD_OUT);
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u4\"}", NULL, NULL, NULL), GW_R_SOLD_OUT);
    assert_int_equal(g->w.suspended, 2);
}

static void test_keyed_retry(void **state)
{
    rig_t *g = *state;
    sale(g, "s1", 1, 1, -1000, 3600000);
    gw_req_t *first = NULL;
    bool held = false;
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\"}", "k-1", &held, &first), GW_R_ACCEPTED);
    assert_true(held);
    /* the original waits for the spool: the retry is asked to come back */
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\"}", "k-1", NULL, NULL), GW_R_UNAVAILABLE);
    /* durable (what the spool write does: the order table knows it): replayed,
     * with the original's id, though the sale has sold out since */
    assert_true(gw_orders_put(g->srv.stores.orders, &gw_req_buy(first)->order));
    gw_req_t *r = NULL;
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\"}", "k-1", &held, &r), GW_R_ACCEPTED);
    assert_false(held);
    assert_non_null(strstr(r->resp.body, gw_req_buy(first)->order.order_id));
    free(r);
    /* another key on the sold-out sale holds no order (the sale's key set):
     * the sold-out answer, before anything keyed by the user */
    assert_int_equal(buy(g, "s1", "{\"user_id\":\"u1\"}", "k-2", NULL, NULL), GW_R_SOLD_OUT);
    assert_int_equal(g->w.suspended, 1);
}

/* A crowd before the start gets one prepared 425 per sale and second: the
 * same bytes within a second, the next Retry-After once the second turns. */
static void test_not_started_prepared(void **state)
{
    rig_t *g = *state;
    int64_t t0 = cm_wall_ms();
    sale(g, "later", 10, 2, 5000, 3600000);
    sale(g, "other", 10, 2, 60000, 3600000);
    gw_req_t *a = NULL, *b = NULL, *c = NULL, *o = NULL;
    assert_int_equal(buy(g, "later", "{\"user_id\":\"u1\"}", NULL, NULL, &a), GW_R_NOT_STARTED);
    assert_int_equal(buy(g, "later", "{\"user_id\":\"u2\"}", NULL, NULL, &b), GW_R_NOT_STARTED);
    assert_int_equal(buy(g, "other", "{\"user_id\":\"u1\"}", NULL, NULL, &o), GW_R_NOT_STARTED);
    assert_true(cm_wall_ms() - t0 < 900); /* the two asked within the first second */
    assert_non_null(a->cached);
    assert_ptr_equal(a->cached, b->cached);
    assert_true(prep_has(a->cached, "Retry-After: 5\r\n"));
    assert_true(prep_has(a->cached, "\"retry_after\":5}"));
    assert_true(prep_has(a->cached, "sale later has not started"));
    /* each sale its own, naming it */
    assert_ptr_not_equal(o->cached, a->cached);
    assert_true(prep_has(o->cached, "Retry-After: 60\r\n"));
    assert_true(prep_has(o->cached, "sale other has not started"));
    /* a second later: 4 s to the start, made again in the sale's slot */
    usleep(1100000);
    assert_int_equal(buy(g, "later", "{\"user_id\":\"u3\"}", NULL, NULL, &c), GW_R_NOT_STARTED);
    assert_true(prep_has(c->cached, "Retry-After: 4\r\n"));
    assert_true(prep_has(c->cached, "\"retry_after\":4}"));
    assert_int_equal(g->w.buy->nnot_started, 2);
    free(a);
    free(b);
    free(c);
    free(o);
    /* more sales than slots: each still answered with its own, the cache bounded */
    char id[16];
    for (unsigned i = 0; i < CM_ARRAY_LEN(g->w.buy->not_started_cache) + 3; i++) {
        snprintf(id, sizeof(id), "s%u", i);
        sale(g, id, 10, 2, 60000, 3600000);
        assert_int_equal(buy(g, id, "{\"user_id\":\"u1\"}", NULL, NULL, &a), GW_R_NOT_STARTED);
        char want[64];
        snprintf(want, sizeof(want), "sale %s has not started", id);
        assert_true(prep_has(a->cached, want));
        free(a);
    }
    assert_int_equal(g->w.buy->nnot_started, CM_ARRAY_LEN(g->w.buy->not_started_cache));
}

/* The in-place body reading with identity on (user_id optional): what jansson's
 * reading gives, user_id "" when left out; with it required, such a body goes to jansson. */
static void test_body_fast_user_optional(void **state)
{
    (void)state;
    static const char *bodies[] = {"{\"qty\":2}", " {\"qty\" : 1 }", "{\"user_id\":\"a-1\"}",
                                   "{\"qty\":3,\"user_id\":\"b\"}", "{\"qty\":0}", "{}",
                                   "{\"qty\":1,\"qty\":2}"};
    static const bool fast_opt[] = {true, true, true, true, false, false, false};
    static const bool fast_req[] = {false, false, true, true, false, false, false};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (int opt = 0; opt < 2; opt++) {
            char user[INV_USER_ID_MAX + 1] = "x";
            uint32_t qty = 0;
            bool fast = gw_buy_body_fast(bodies[i], strlen(bodies[i]), opt, user, &qty);
            assert_int_equal(fast, opt ? fast_opt[i] : fast_req[i]);
            if (!fast)
                continue;
            gw_req_with_buy_t rb;
            memset(&rb, 0, sizeof(rb));
            gw_req_t *r = &rb.r;
            r->body = (char *)bodies[i];
            r->body_len = strlen(bodies[i]);
            assert_true(gw_buy_parse_body_json(r, opt));
            assert_string_equal(user, gw_req_buy(r)->res.user_id);
            assert_int_equal(qty, gw_req_buy(r)->res.qty);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals_before_the_reserve, rig_setup,
                                        rig_teardown),
        cmocka_unit_test_setup_teardown(test_reserve_then_limits, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_keyed_retry, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(test_not_started_prepared, rig_setup, rig_teardown),
        cmocka_unit_test(test_body_fast_user_optional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
