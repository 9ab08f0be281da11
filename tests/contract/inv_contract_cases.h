/*
 * Backend-independent contract cases for inventory/inv.h.
 *
 * Include this file from a test program, define
 *
 *     const char *inv_contract_url = "memory";   (or "redis://127.0.0.1:PORT")
 *
 * and run inv_contract_tests with cmocka_run_group_tests. Every case opens a
 * fresh inv_t (setup) on inv_contract_url with no data_dir, and uses sale and
 * user ids made unique by the pid and a counter, so the cases can share one
 * long-lived server (Redis) without seeing each other's state.
 *
 * Reservations go through ct_reserve, which accepts both answering styles:
 * an immediate outcome (then req->done must not be called) or INV_PENDING
 * followed by req->done on the worker's loop, which ct_reserve runs.
 */
#ifndef INV_CONTRACT_CASES_H
#define INV_CONTRACT_CASES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/cm_err.h"
#include "common/cm_time.h"
#include "inventory/inv.h"

extern const char *inv_contract_url;

typedef struct ct_fx {
    uv_loop_t loop;
    inv_t *inv;
    inv_worker_t *w;
} ct_fx_t;

static unsigned ct_counter;

/* "<prefix>-<pid>-<n>": unique per process and call. */
static void ct_uid(char *buf, size_t len, const char *prefix)
{
    snprintf(buf, len, "%s-%ld-%u", prefix, (long)getpid(), ++ct_counter);
}

static int ct_setup(void **state)
{
    ct_fx_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    char err[256] = "";
    int rc = inv_open(&fx->inv, inv_contract_url, NULL, 64, err, sizeof(err));
    if (rc != 0)
        fail_msg("inv_open(%s): %s: %s", inv_contract_url, cm_strerror(rc), err);
    assert_int_equal(inv_worker_open(fx->inv, &fx->loop, &fx->w), 0);
    *state = fx;
    return 0;
}

static void ct_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int ct_teardown(void **state)
{
    ct_fx_t *fx = *state;
    inv_worker_close(fx->w);
    inv_close(fx->inv);
    uv_walk(&fx->loop, ct_walk_close, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

typedef struct ct_wait {
    int outcome;
    int calls;
} ct_wait_t;

static void ct_done(inv_reserve_req_t *req, int outcome)
{
    ct_wait_t *wt = req->data;
    wt->outcome = outcome;
    wt->calls++;
}

static void ct_tick(uv_timer_t *t)
{
    (void)t; /* only wakes uv_run(UV_RUN_ONCE) so the deadline is checked */
}

static int ct_reserve(ct_fx_t *fx, inv_reserve_req_t *req)
{
    ct_wait_t wt = {0, 0};
    req->done = ct_done;
    req->data = &wt;
    int rc = inv_reserve(fx->w, req);
    if (rc != INV_PENDING) {
        assert_int_equal(wt.calls, 0); /* immediate answers never call done */
        return rc;
    }
    uv_timer_t tick;
    uv_timer_init(&fx->loop, &tick);
    uv_timer_start(&tick, ct_tick, 10, 10);
    uint64_t deadline = cm_mono_ms() + 10000;
    while (wt.calls == 0 && cm_mono_ms() < deadline)
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_int_equal(wt.calls, 1);
    assert_int_not_equal(wt.outcome, INV_PENDING);
    return wt.outcome;
}

/* Reserves qty for user with an optional key; order_id is the id to record. */
static int ct_buy(ct_fx_t *fx, const char *sale_id, const char *user, uint32_t qty,
                  const char *key, const char *order_id, inv_reserve_req_t *req_out)
{
    inv_reserve_req_t req;
    memset(&req, 0, sizeof(req));
    req.sale = inv_sale_find(fx->inv, sale_id);
    snprintf(req.user_id, sizeof(req.user_id), "%s", user);
    req.qty = qty;
    snprintf(req.idem_key, sizeof(req.idem_key), "%s", key ? key : "");
    snprintf(req.order_id, sizeof(req.order_id), "%s", order_id);
    int rc = ct_reserve(fx, &req);
    if (req_out)
        *req_out = req;
    return rc;
}

static void ct_put(ct_fx_t *fx, const char *sale_id, int64_t stock, uint32_t limit,
                   inv_sale_info_t *out)
{
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", sale_id);
    def.stock = stock;
    def.per_user_limit = limit;
    char err[256] = "";
    int rc = inv_sale_put(fx->inv, &def, out, err, sizeof(err));
    if (rc != 0)
        fail_msg("inv_sale_put(%s): %s: %s", sale_id, cm_strerror(rc), err);
}

static void ct_expect_counts(ct_fx_t *fx, const char *sale_id, int64_t total, int64_t left,
                             int64_t units, int64_t orders)
{
    inv_sale_info_t info;
    assert_int_equal(inv_sale_get(fx->inv, sale_id, &info), 0);
    assert_string_equal(info.sale_id, sale_id);
    assert_int_equal(info.stock_total, total);
    assert_int_equal(info.stock_left, left);
    assert_int_equal(info.accepted_units, units);
    assert_int_equal(info.accepted_orders, orders);
}

static uint32_t ct_units(ct_fx_t *fx, const char *sale_id, const char *user)
{
    uint32_t n = 12345;
    assert_int_equal(inv_user_units(fx->inv, sale_id, user, &n), 0);
    return n;
}

/*---- Cases ----*/

/* Stock 1, two buyers: exactly one gets it; the flag flips at zero. */
static void ct_last_unit(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u1[32], u2[32], o1[32], o2[32];
    ct_uid(sale, sizeof(sale), "last");
    ct_uid(u1, sizeof(u1), "u");
    ct_uid(u2, sizeof(u2), "u");
    ct_uid(o1, sizeof(o1), "o");
    ct_uid(o2, sizeof(o2), "o");
    ct_put(fx, sale, 1, 1, NULL);
    inv_sale_t *s = inv_sale_find(fx->inv, sale);
    assert_non_null(s);
    assert_false(inv_sale_sold_out(s));

    inv_reserve_req_t r;
    assert_int_equal(ct_buy(fx, sale, u1, 1, NULL, o1, &r), INV_RESERVED);
    assert_int_equal(r.stock_left, 0);
    assert_int_equal(r.user_units, 1);
    assert_string_equal(r.order_id, o1);
    assert_int_equal(ct_buy(fx, sale, u2, 1, NULL, o2, &r), INV_SOLD_OUT);
    assert_true(inv_sale_sold_out(s));
    ct_expect_counts(fx, sale, 1, 0, 1, 1);
    assert_int_equal(ct_units(fx, sale, u1), 1);
    assert_int_equal(ct_units(fx, sale, u2), 0);

    inv_sale_info_t snap;
    inv_sale_snapshot(s, &snap);
    assert_int_equal(snap.stock_left, 0);
    assert_int_equal(snap.stock_total, 1);
}

/* Limit 2: 1 + 1 accepted, the third refused; 3 at once refused. */
static void ct_user_limit(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], v[32], o[32];
    ct_uid(sale, sizeof(sale), "limit");
    ct_uid(u, sizeof(u), "u");
    ct_uid(v, sizeof(v), "v");
    ct_put(fx, sale, 10, 2, NULL);

    inv_reserve_req_t r;
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, o, &r), INV_RESERVED);
    assert_int_equal(r.user_units, 1);
    assert_int_equal(r.stock_left, 9);
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, o, &r), INV_RESERVED);
    assert_int_equal(r.user_units, 2);
    assert_int_equal(r.stock_left, 8);
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, o, &r), INV_LIMIT_REACHED);
    assert_int_equal(r.user_units, 2);
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, v, 3, NULL, o, &r), INV_LIMIT_REACHED);
    assert_int_equal(r.user_units, 0);

    ct_expect_counts(fx, sale, 10, 8, 2, 2);
    assert_int_equal(ct_units(fx, sale, u), 2);
    assert_int_equal(ct_units(fx, sale, v), 0);
    assert_false(inv_sale_sold_out(inv_sale_find(fx->inv, sale)));
}

/* Asking for more than is left changes nothing and does not mark the sale sold out. */
static void ct_qty_over_stock(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], o[32];
    ct_uid(sale, sizeof(sale), "over");
    ct_uid(u, sizeof(u), "u");
    ct_put(fx, sale, 3, 10, NULL);

    inv_reserve_req_t r;
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 4, NULL, o, &r), INV_SOLD_OUT);
    ct_expect_counts(fx, sale, 3, 3, 0, 0);
    assert_int_equal(ct_units(fx, sale, u), 0);
    assert_false(inv_sale_sold_out(inv_sale_find(fx->inv, sale)));

    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 3, NULL, o, &r), INV_RESERVED);
    assert_int_equal(r.stock_left, 0);
    assert_int_equal(r.user_units, 3);
    ct_expect_counts(fx, sale, 3, 0, 3, 1);
    assert_true(inv_sale_sold_out(inv_sale_find(fx->inv, sale)));
}

/* A key is per user: a retry gets the original order back, another user is independent. */
static void ct_idempotency(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], v[32], oa[32], ob[32], oc[32], od[32];
    ct_uid(sale, sizeof(sale), "idem");
    ct_uid(u, sizeof(u), "u");
    ct_uid(v, sizeof(v), "v");
    ct_uid(oa, sizeof(oa), "o");
    ct_uid(ob, sizeof(ob), "o");
    ct_uid(oc, sizeof(oc), "o");
    ct_uid(od, sizeof(od), "o");
    ct_put(fx, sale, 10, 5, NULL);

    inv_reserve_req_t r;
    assert_int_equal(ct_buy(fx, sale, u, 2, "key-1", oa, &r), INV_RESERVED);
    assert_int_equal(r.stock_left, 8);

    assert_int_equal(ct_buy(fx, sale, u, 1, "key-1", ob, &r), INV_DUPLICATE);
    assert_string_equal(r.order_id, oa);
    assert_int_equal(r.qty, 2);
    assert_int_equal(r.user_units, 2);
    ct_expect_counts(fx, sale, 10, 8, 2, 1);

    assert_int_equal(ct_buy(fx, sale, v, 1, "key-1", oc, &r), INV_RESERVED);
    assert_string_equal(r.order_id, oc);
    assert_int_equal(r.user_units, 1);

    assert_int_equal(ct_buy(fx, sale, u, 1, "key-2", od, &r), INV_RESERVED);
    assert_int_equal(r.user_units, 3);
    ct_expect_counts(fx, sale, 10, 6, 4, 3);
    assert_int_equal(ct_units(fx, sale, u), 3);
    assert_int_equal(ct_units(fx, sale, v), 1);
}

/*
 * A keyed buy at stock 0. An Idempotency-Key skips the local sold-out flag (a
 * retry of an accepted request must get its order back), so a keyed buy of a
 * new order meets the stock check itself: the one answer the flag cannot hide.
 * It must be sold out and change nothing; the keyed retry of the accepted
 * order still gets it back.
 */
static void ct_keyed_at_zero(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u1[32], u2[32], o1[32], o2[32], o3[32];
    ct_uid(sale, sizeof(sale), "kzero");
    ct_uid(u1, sizeof(u1), "u");
    ct_uid(u2, sizeof(u2), "u");
    ct_uid(o1, sizeof(o1), "o");
    ct_uid(o2, sizeof(o2), "o");
    ct_uid(o3, sizeof(o3), "o");
    ct_put(fx, sale, 1, 1, NULL);
    inv_sale_t *s = inv_sale_find(fx->inv, sale);

    inv_reserve_req_t r;
    assert_int_equal(ct_buy(fx, sale, u1, 1, "key-a", o1, &r), INV_RESERVED);
    assert_int_equal(r.stock_left, 0);
    assert_true(inv_sale_sold_out(s));
    assert_int_equal(ct_buy(fx, sale, u2, 1, "key-b", o2, &r), INV_SOLD_OUT);
    assert_int_equal(r.stock_left, 0);
    assert_int_equal(r.user_units, 0);
    ct_expect_counts(fx, sale, 1, 0, 1, 1);
    assert_int_equal(ct_units(fx, sale, u2), 0);
    /* the same, twice: a refused keyed buy records nothing for its key */
    assert_int_equal(ct_buy(fx, sale, u2, 1, "key-b", o3, &r), INV_SOLD_OUT);
    ct_expect_counts(fx, sale, 1, 0, 1, 1);
    assert_int_equal(ct_buy(fx, sale, u1, 1, "key-a", o3, &r), INV_DUPLICATE);
    assert_string_equal(r.order_id, o1);
    ct_expect_counts(fx, sale, 1, 0, 1, 1);

    /* A sale defined with no stock at all. */
    char empty[32], o4[32];
    ct_uid(empty, sizeof(empty), "kempty");
    ct_uid(o4, sizeof(o4), "o");
    ct_put(fx, empty, 0, 1, NULL);
    assert_int_equal(ct_buy(fx, empty, u2, 1, "key-c", o4, &r), INV_SOLD_OUT);
    ct_expect_counts(fx, empty, 0, 0, 0, 0);
    assert_int_equal(ct_units(fx, empty, u2), 0);
}

/* Release gives the units back exactly once and frees the user's slot. */
static void ct_release_once(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], oa[32], ob[32], ox[32];
    ct_uid(sale, sizeof(sale), "rel");
    ct_uid(u, sizeof(u), "u");
    ct_uid(oa, sizeof(oa), "o");
    ct_uid(ob, sizeof(ob), "o");
    ct_uid(ox, sizeof(ox), "o");
    ct_put(fx, sale, 1, 1, NULL);
    inv_sale_t *s = inv_sale_find(fx->inv, sale);

    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, oa, NULL), INV_RESERVED);
    assert_true(inv_sale_sold_out(s));
    assert_int_equal(inv_release(fx->inv, sale, u, 1, ox), CM_ENOTFOUND);
    ct_expect_counts(fx, sale, 1, 0, 1, 1);

    assert_int_equal(inv_release(fx->inv, sale, u, 1, oa), 0);
    ct_expect_counts(fx, sale, 1, 1, 0, 0);
    assert_false(inv_sale_sold_out(s));
    assert_int_equal(ct_units(fx, sale, u), 0);

    assert_int_equal(inv_release(fx->inv, sale, u, 1, oa), CM_ENOTFOUND);
    ct_expect_counts(fx, sale, 1, 1, 0, 0);

    inv_reserve_req_t r;
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, ob, &r), INV_RESERVED);
    assert_int_equal(r.user_units, 1);
    ct_expect_counts(fx, sale, 1, 0, 1, 1);
}

/* Restock adds units, bumps the version, clears the flag; bad amounts are refused. */
static void ct_restock(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], v[32], o[32];
    ct_uid(sale, sizeof(sale), "restock");
    ct_uid(u, sizeof(u), "u");
    ct_uid(v, sizeof(v), "v");
    inv_sale_info_t info;
    ct_put(fx, sale, 1, 1, &info);
    uint64_t v0 = info.version;
    inv_sale_t *s = inv_sale_find(fx->inv, sale);

    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, o, NULL), INV_RESERVED);
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, v, 1, NULL, o, NULL), INV_SOLD_OUT);
    assert_true(inv_sale_sold_out(s));

    char err[256] = "";
    assert_int_equal(inv_restock(fx->inv, sale, 2, &info, err, sizeof(err)), 0);
    assert_int_equal(info.stock_total, 3);
    assert_int_equal(info.stock_left, 2);
    assert_int_equal(info.accepted_units, 1);
    assert_int_equal(info.version, v0 + 1);
    assert_false(inv_sale_sold_out(s));

    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, v, 1, NULL, o, NULL), INV_RESERVED);
    ct_expect_counts(fx, sale, 3, 1, 2, 2);

    err[0] = '\0';
    assert_int_equal(inv_restock(fx->inv, sale, 0, NULL, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    assert_int_equal(inv_restock(fx->inv, sale, -5, NULL, err, sizeof(err)), CM_EINVAL);
    err[0] = '\0';
    assert_int_equal(inv_restock(fx->inv, sale, INT64_MAX, NULL, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    ct_expect_counts(fx, sale, 3, 1, 2, 2);
    assert_int_equal(inv_sale_get(fx->inv, sale, &info), 0);
    assert_int_equal(info.version, v0 + 1);

    char nosale[32];
    ct_uid(nosale, sizeof(nosale), "nosale");
    assert_int_equal(inv_restock(fx->inv, nosale, 1, NULL, err, sizeof(err)), CM_ENOTFOUND);
}

/* A keyed restock adds once: a retry with the same key adds nothing. */
static void ct_restock_keyed(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], key[40], key2[40];
    ct_uid(sale, sizeof(sale), "rkey");
    ct_uid(key, sizeof(key), "restock-key");
    ct_uid(key2, sizeof(key2), "restock-key2");
    inv_sale_info_t info;
    ct_put(fx, sale, 5, 1, &info);
    char err[256] = "";
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 3, key, &info, err, sizeof(err)), 0);
    assert_int_equal(info.stock_total, 8);
    memset(&info, 0, sizeof(info));
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 3, key, &info, err, sizeof(err)),
                     INV_RESTOCK_REPLAYED);
    assert_int_equal(info.stock_total, 8); /* the current state, nothing added */
    assert_int_equal(info.stock_left, 8);
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 2, key2, &info, err, sizeof(err)), 0);
    assert_int_equal(info.stock_total, 10);
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 1, NULL, &info, err, sizeof(err)), 0);
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 1, "", &info, err, sizeof(err)), 0);
    ct_expect_counts(fx, sale, 12, 12, 0, 0);
    assert_int_equal(inv_restock_keyed(fx->inv, sale, 1, "has space", NULL, err, sizeof(err)),
                     CM_EINVAL);
    /* a key is per sale */
    char other[32];
    ct_uid(other, sizeof(other), "rkey2");
    ct_put(fx, other, 1, 1, NULL);
    assert_int_equal(inv_restock_keyed(fx->inv, other, 4, key, &info, err, sizeof(err)), 0);
    ct_expect_counts(fx, other, 5, 5, 0, 0);
}

/* The stock of a live sale can move, but never below the units accepted. */
static void ct_put_below_accepted(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], o[32];
    ct_uid(sale, sizeof(sale), "shrink");
    ct_uid(u, sizeof(u), "u");
    inv_sale_info_t info;
    ct_put(fx, sale, 5, 5, &info);
    uint64_t v0 = info.version;
    inv_sale_t *s = inv_sale_find(fx->inv, sale);
    ct_uid(o, sizeof(o), "o");
    assert_int_equal(ct_buy(fx, sale, u, 3, NULL, o, NULL), INV_RESERVED);

    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", sale);
    def.stock = 2;
    def.per_user_limit = 5;
    char err[256] = "";
    assert_int_equal(inv_sale_put(fx->inv, &def, NULL, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    ct_expect_counts(fx, sale, 5, 2, 3, 1);
    assert_int_equal(inv_sale_get(fx->inv, sale, &info), 0);
    assert_int_equal(info.version, v0);

    def.stock = 3;
    assert_int_equal(inv_sale_put(fx->inv, &def, &info, err, sizeof(err)), 0);
    assert_int_equal(info.stock_left, 0);
    assert_int_equal(info.version, v0 + 1);
    assert_true(inv_sale_sold_out(s));

    def.stock = 10;
    assert_int_equal(inv_sale_put(fx->inv, &def, &info, err, sizeof(err)), 0);
    assert_int_equal(info.stock_left, 7);
    assert_int_equal(info.version, v0 + 2);
    assert_false(inv_sale_sold_out(s));
    ct_expect_counts(fx, sale, 10, 7, 3, 1);
}

/* An unknown sale is an outcome; it comes before argument checks on qty. */
static void ct_unknown_sale(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32], u[32], o[32];
    ct_uid(sale, sizeof(sale), "unknown");
    ct_uid(u, sizeof(u), "u");
    ct_uid(o, sizeof(o), "o");
    assert_null(inv_sale_find(fx->inv, sale));
    assert_int_equal(ct_buy(fx, sale, u, 1, NULL, o, NULL), INV_UNKNOWN_SALE);
    assert_int_equal(ct_buy(fx, sale, u, 0, NULL, o, NULL), INV_UNKNOWN_SALE);
    inv_sale_info_t info;
    assert_int_equal(inv_sale_get(fx->inv, sale, &info), CM_ENOTFOUND);
    assert_int_equal(inv_release(fx->inv, sale, u, 1, o), CM_ENOTFOUND);

    /* Now a known sale: qty 0 and malformed ids are argument errors. */
    ct_put(fx, sale, 5, 1, NULL);
    assert_int_equal(ct_buy(fx, sale, u, 0, NULL, o, NULL), CM_EINVAL);
    assert_int_equal(ct_buy(fx, sale, "bad user", 1, NULL, o, NULL), CM_EINVAL);
    assert_int_equal(ct_buy(fx, sale, "", 1, NULL, o, NULL), CM_EINVAL);
    assert_int_equal(ct_buy(fx, sale, u, 1, "has space", o, NULL), CM_EINVAL);
    ct_expect_counts(fx, sale, 5, 5, 0, 0);
    assert_null(inv_sale_find(fx->inv, "no such/sale"));
}

/* What is put comes back from get and from the local view, times included. */
static void ct_put_get_round_trip(void **state)
{
    ct_fx_t *fx = *state;
    char sale[32];
    ct_uid(sale, sizeof(sale), "trip");
    inv_sale_def_t def;
    memset(&def, 0, sizeof(def));
    snprintf(def.sale_id, sizeof(def.sale_id), "%s", sale);
    def.stock = 42;
    def.per_user_limit = 3;
    def.starts_at_ms = 1900000000123LL;
    def.ends_at_ms = 1900003600456LL;
    char err[256] = "";
    inv_sale_info_t put_info, got, snap;
    assert_int_equal(inv_sale_put(fx->inv, &def, &put_info, err, sizeof(err)), 0);
    assert_int_equal(inv_sale_get(fx->inv, sale, &got), 0);
    inv_sale_t *s = inv_sale_find(fx->inv, sale);
    assert_non_null(s);
    inv_sale_snapshot(s, &snap);
    const inv_sale_info_t *all[] = {&put_info, &got, &snap};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(all[i]->sale_id, sale);
        assert_int_equal(all[i]->stock_total, 42);
        assert_int_equal(all[i]->stock_left, 42);
        assert_int_equal(all[i]->accepted_units, 0);
        assert_int_equal(all[i]->accepted_orders, 0);
        assert_int_equal(all[i]->per_user_limit, 3);
        assert_int_equal(all[i]->starts_at_ms, 1900000000123LL);
        assert_int_equal(all[i]->ends_at_ms, 1900003600456LL);
        assert_true(all[i]->version >= 1);
        assert_int_equal(all[i]->version, put_info.version);
    }

    /* An update changes what it says and bumps the version by one. */
    def.per_user_limit = 1;
    def.starts_at_ms = 0;
    def.ends_at_ms = 0;
    assert_int_equal(inv_sale_put(fx->inv, &def, NULL, err, sizeof(err)), 0);
    assert_int_equal(inv_sale_get(fx->inv, sale, &got), 0);
    assert_int_equal(got.per_user_limit, 1);
    assert_int_equal(got.starts_at_ms, 0);
    assert_int_equal(got.ends_at_ms, 0);
    assert_int_equal(got.version, put_info.version + 1);

    /* Broken definitions are refused with a reason and change nothing. */
    inv_sale_def_t bad = def;
    bad.per_user_limit = 0;
    err[0] = '\0';
    assert_int_equal(inv_sale_put(fx->inv, &bad, NULL, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    bad = def;
    bad.starts_at_ms = 1900000000000LL;
    bad.ends_at_ms = 1900000000000LL;
    err[0] = '\0';
    assert_int_equal(inv_sale_put(fx->inv, &bad, NULL, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    bad = def;
    bad.stock = -1;
    assert_int_equal(inv_sale_put(fx->inv, &bad, NULL, err, sizeof(err)), CM_EINVAL);
    bad = def;
    snprintf(bad.sale_id, sizeof(bad.sale_id), "bad id!");
    assert_int_equal(inv_sale_put(fx->inv, &bad, NULL, err, sizeof(err)), CM_EINVAL);
    assert_int_equal(inv_sale_get(fx->inv, sale, &got), 0);
    assert_int_equal(got.version, put_info.version + 1);
    assert_int_equal(got.per_user_limit, 1);
}

static const struct CMUnitTest inv_contract_tests[] = {
    cmocka_unit_test_setup_teardown(ct_last_unit, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_user_limit, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_qty_over_stock, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_idempotency, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_keyed_at_zero, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_release_once, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_restock, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_restock_keyed, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_put_below_accepted, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_unknown_sale, ct_setup, ct_teardown),
    cmocka_unit_test_setup_teardown(ct_put_get_round_trip, ct_setup, ct_teardown),
};

#endif
