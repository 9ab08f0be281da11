/*
 * The start-up replay and compensation cores (gateway/buy/gw_replay.h) on a
 * memory inventory, a real spool in a temp dir and the real order table
 * (gw_orders, through a gw_book_t): no server, no thread.
 */
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_replay.h"
#include "queue/oq_spool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static cm_id_gen_t g_ids;

static bool bk_get(void *ud, const char *id, oq_order_t *out)
{
    return gw_orders_get(ud, id, out);
}

static void bk_put(void *ud, const oq_order_t *o)
{
    gw_orders_put(ud, o);
}

static void bk_set(void *ud, const char *id, const oq_order_t *o, oq_status_t st, const char *why)
{
    gw_orders_set_status(ud, id, o, st, why);
}

typedef struct fx {
    char dir[64];
    inv_t *inv;
    oq_spool_t *sp;
    gw_orders_t *orders;
    gw_book_t book;
    int restored, released, retries;
} fx_t;

static void fx_open(fx_t *f, bool reopen)
{
    char why[256] = "", spdir[128];
    if (!reopen) {
        memset(f, 0, sizeof(*f));
        snprintf(f->dir, sizeof(f->dir), "/tmp/fg-replay-unit-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
    }
    assert_int_equal(inv_open(&f->inv, "memory", NULL, 16, why, sizeof(why)), 0);
    inv_sale_def_t def = {.stock = 10, .per_user_limit = 4};
    snprintf(def.sale_id, sizeof(def.sale_id), "s1");
    assert_int_equal(inv_sale_put(f->inv, &def, NULL, why, sizeof(why)), 0);
    snprintf(spdir, sizeof(spdir), "%s/spool", f->dir);
    /* small segments: the records lie across several */
    oq_spool_opts_t so = {.dir = spdir, .durability = OQ_DURABILITY_WRITE, .segment_bytes = 600};
    assert_int_equal(oq_spool_open(&f->sp, &so, why, sizeof(why)), 0);
    f->orders = gw_orders_new(1000);
    f->book = (gw_book_t){.get = bk_get, .put = bk_put, .set_status = bk_set, .ud = f->orders};
}

static void fx_close(fx_t *f, bool rm)
{
    gw_orders_free(f->orders);
    oq_spool_close(f->sp);
    inv_close(f->inv);
    if (rm) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
    }
}

static int64_t left(fx_t *f)
{
    inv_sale_info_t si;
    assert_int_equal(inv_sale_get(f->inv, "s1", &si), 0);
    return si.stock_left;
}

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

static void on_order(void *ud, const oq_order_t *o)
{
    (void)o;
    ((fx_t *)ud)->restored++;
}

static void on_release(void *ud, const oq_order_t *o, int rc, int final_status, const char *why)
{
    (void)final_status;
    (void)why;
    fx_t *f = ud;
    f->released++;
    if (!gw_release_ok(o, rc))
        f->retries++;
}

static long replay(fx_t *f, gw_replay_ctx_t *c)
{
    *c = (gw_replay_ctx_t){.inv = f->inv,
                           .book = &f->book,
                           .node_id = 1,
                           .released = oq_spool_released(f->sp),
                           .on_order = on_order,
                           .on_release = on_release,
                           .ud = f};
    return oq_spool_scan(f->sp, (oq_pos_t){0, 0}, gw_replay_one, c);
}

/* Eight orders across segments and a release of one: a restart holds seven,
 * the released one final, every order in the table. */
static void test_replay_restores(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, false);
    oq_order_t o[8];
    for (int i = 0; i < 8; i++) {
        make_order(&o[i], i);
        assert_int_equal(oq_spool_append(f.sp, &o[i], 1), 0);
    }
    oq_order_t ev;
    gw_release_event_fill(&ev, &o[3], OQ_STATUS_FAILED, "declined", false, cm_wall_ms());
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(&ev, buf, sizeof(buf));
    assert_true(n > 0);
    oq_pos_t end;
    assert_int_equal(oq_spool_append_event_end(f.sp, buf, (size_t)n, &end), 0);
    assert_int_equal(oq_spool_sync(f.sp), 0);
    fx_close(&f, false);

    fx_open(&f, true);
    gw_replay_ctx_t c;
    assert_true(replay(&f, &c) >= 9);
    assert_int_equal(c.orders, 8);
    assert_int_equal(c.events, 1);
    assert_int_equal(f.restored, 8);
    assert_int_equal(f.released, 1);
    assert_int_equal(f.retries, 0);
    assert_int_equal(left(&f), 10 - 7);
    oq_order_t cur;
    for (int i = 0; i < 8; i++) {
        assert_true(gw_orders_get(f.orders, o[i].order_id, &cur));
        assert_int_equal(cur.status, i == 3 ? OQ_STATUS_FAILED : OQ_STATUS_QUEUED);
    }
    assert_true(c.max_id > 0);
    fx_close(&f, true);
}

/* An outcome and its redelivery: settled moves a queued order once; a failed
 * one gives the units back once and is final after; a settled outcome read
 * again never gives back nor moves a final order. */
static void test_outcomes_compensate_once(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, false);
    oq_order_t a, b, cur, ord;
    make_order(&a, 1);
    make_order(&b, 2);
    assert_int_equal(inv_replay(f.inv, "s1", a.user_id, 1, a.order_id, NULL), 0);
    assert_int_equal(inv_replay(f.inv, "s1", b.user_id, 1, b.order_id, NULL), 0);
    gw_orders_put(f.orders, &a);
    gw_orders_put(f.orders, &b);
    assert_int_equal(left(&f), 8);

    oq_order_t oc = a;
    oc.status = OQ_STATUS_SETTLED;
    for (int k = 0; k < 2; k++) {
        assert_false(gw_outcome_take(&f.book, &oc, &ord));
        assert_true(gw_orders_get(f.orders, a.order_id, &cur));
        assert_int_equal(cur.status, OQ_STATUS_SETTLED);
        assert_int_equal(left(&f), 8);
    }

    oc = b;
    oc.status = OQ_STATUS_FAILED;
    assert_true(gw_outcome_take(&f.book, &oc, &ord));
    assert_int_equal(gw_comp_check(&f.book, b.order_id, &ord, false, &ord), 0);
    assert_int_equal(gw_comp_release(f.inv, &f.book, &ord, OQ_STATUS_FAILED, NULL), 0);
    assert_int_equal(left(&f), 9);
    /* redelivered: final already, nothing to do; and released before if asked */
    assert_true(gw_outcome_take(&f.book, &oc, &ord));
    assert_int_equal(gw_comp_check(&f.book, b.order_id, &ord, false, &ord), 1);
    assert_int_equal(gw_comp_release(f.inv, &f.book, &ord, OQ_STATUS_FAILED, NULL), 1);
    assert_int_equal(left(&f), 9);
    /* a settled outcome of the failed order does not move it back */
    oc.status = OQ_STATUS_SETTLED;
    assert_false(gw_outcome_take(&f.book, &oc, &ord));
    assert_true(gw_orders_get(f.orders, b.order_id, &cur));
    assert_int_equal(cur.status, OQ_STATUS_FAILED);
    /* being given back by the releaser: not twice */
    oq_order_t a2 = a;
    assert_int_equal(gw_comp_check(&f.book, a.order_id, &a2, true, &ord), 1);
    assert_int_equal(left(&f), 9);
    fx_close(&f, true);
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    cm_id_gen_init(&g_ids, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_restores),
        cmocka_unit_test(test_outcomes_compensate_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
