/*
 * Memory backend specifics: sale definitions survive close/open through
 * <data_dir>/sales.json (written atomically), a broken file is refused at
 * open, a failed write changes nothing, and inv_replay rebuilds the orders
 * idempotently.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cm_err.h"
#include "inventory/inv.h"

typedef struct fx {
    char dir[64];
    char file[96];
    char tmp[96];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/inv_mem_test.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->file, sizeof(fx->file), "%s/sales.json", fx->dir);
    snprintf(fx->tmp, sizeof(fx->tmp), "%s/sales.json.tmp", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    unlink(fx->file);
    unlink(fx->tmp);
    rmdir(fx->tmp); /* when a test put a directory there */
    assert_int_equal(rmdir(fx->dir), 0);
    free(fx);
    return 0;
}

static inv_t *open_dir(const fx_t *fx, uint32_t max_sales)
{
    inv_t *inv = NULL;
    char err[256] = "";
    int rc = inv_open(&inv, "memory", fx->dir, max_sales, err, sizeof(err));
    if (rc != 0)
        fail_msg("inv_open: %s: %s", cm_strerror(rc), err);
    assert_string_equal(inv_backend_name(inv), "memory");
    return inv;
}

static int put(inv_t *inv, const char *id, int64_t stock, uint32_t limit, int64_t starts,
               int64_t ends)
{
    inv_sale_def_t d;
    memset(&d, 0, sizeof(d));
    snprintf(d.sale_id, sizeof(d.sale_id), "%s", id);
    d.stock = stock;
    d.per_user_limit = limit;
    d.starts_at_ms = starts;
    d.ends_at_ms = ends;
    char err[256];
    return inv_sale_put(inv, &d, NULL, err, sizeof(err));
}

static int buy(inv_t *inv, const char *sale, const char *user, uint32_t qty, const char *key,
               const char *order_id, inv_reserve_req_t *out)
{
    inv_worker_t *w = NULL;
    assert_int_equal(inv_worker_open(inv, NULL, &w), 0);
    inv_reserve_req_t req;
    memset(&req, 0, sizeof(req));
    req.sale = inv_sale_find(inv, sale);
    snprintf(req.user_id, sizeof(req.user_id), "%s", user);
    req.qty = qty;
    snprintf(req.idem_key, sizeof(req.idem_key), "%s", key ? key : "");
    snprintf(req.order_id, sizeof(req.order_id), "%s", order_id);
    int rc = inv_reserve(w, &req);
    inv_worker_close(w);
    if (out)
        *out = req;
    return rc;
}

static void count_sale(inv_sale_t *s, void *ctx)
{
    (void)s;
    (*(int *)ctx)++;
}

static void test_definitions_survive_restart(void **state)
{
    fx_t *fx = *state;
    inv_t *inv = open_dir(fx, 16);
    assert_int_equal(put(inv, "sale-a", 10, 2, 1900000000000LL, 1900000360000LL), 0);
    assert_int_equal(put(inv, "sale-b", 5, 1, 0, 0), 0);
    char err[128];
    assert_int_equal(inv_restock(inv, "sale-a", 5, NULL, err, sizeof(err)), 0);
    assert_int_equal(put(inv, "sale-b", 7, 3, 0, 1900000000000LL), 0);
    /* Orders are not persisted by the inventory. */
    assert_int_equal(buy(inv, "sale-a", "alice", 2, NULL, "o1", NULL), INV_RESERVED);
    inv_close(inv);

    struct stat st;
    assert_int_equal(stat(fx->file, &st), 0);
    assert_int_not_equal(stat(fx->tmp, &st), 0); /* renamed away, nothing left behind */

    inv = open_dir(fx, 16);
    int n = 0;
    inv_sale_foreach(inv, count_sale, &n);
    assert_int_equal(n, 2);
    inv_sale_info_t a, b;
    assert_int_equal(inv_sale_get(inv, "sale-a", &a), 0);
    assert_int_equal(a.stock_total, 15);
    assert_int_equal(a.stock_left, 15);
    assert_int_equal(a.accepted_units, 0);
    assert_int_equal(a.per_user_limit, 2);
    assert_int_equal(a.starts_at_ms, 1900000000000LL);
    assert_int_equal(a.ends_at_ms, 1900000360000LL);
    assert_int_equal(a.version, 2);
    assert_int_equal(inv_sale_get(inv, "sale-b", &b), 0);
    assert_int_equal(b.stock_total, 7);
    assert_int_equal(b.per_user_limit, 3);
    assert_int_equal(b.starts_at_ms, 0);
    assert_int_equal(b.ends_at_ms, 1900000000000LL);
    assert_int_equal(b.version, 2);
    assert_false(inv_sale_sold_out(inv_sale_find(inv, "sale-a")));

    /* Changes after a restart keep counting versions from where they were. */
    assert_int_equal(put(inv, "sale-b", 8, 3, 0, 0), 0);
    inv_close(inv);
    inv = open_dir(fx, 16);
    assert_int_equal(inv_sale_get(inv, "sale-b", &b), 0);
    assert_int_equal(b.version, 3);
    assert_int_equal(b.stock_total, 8);
    inv_close(inv);
}

static void test_no_data_dir_persists_nothing(void **state)
{
    fx_t *fx = *state;
    inv_t *inv = NULL;
    char err[128];
    assert_int_equal(inv_open(&inv, "memory", NULL, 4, err, sizeof(err)), 0);
    assert_int_equal(put(inv, "s", 1, 1, 0, 0), 0);
    inv_close(inv);
    struct stat st;
    assert_int_not_equal(stat(fx->file, &st), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_broken_file_refused(void **state)
{
    fx_t *fx = *state;
    static const char *bad[] = {
        "{not json",
        "{\"format\": 2, \"sales\": []}",
        "{\"format\": 1, \"sales\": [{\"sale_id\": \"x\"}]}",
        "{\"format\": 1, \"sales\": [{\"sale_id\": \"x y\", \"stock_total\": 1, "
        "\"per_user_limit\": 1, \"starts_at_ms\": 0, \"ends_at_ms\": 0, \"version\": 1}]}",
        "{\"format\": 1, \"sales\": [{\"sale_id\": \"x\", \"stock_total\": -1, "
        "\"per_user_limit\": 1, \"starts_at_ms\": 0, \"ends_at_ms\": 0, \"version\": 1}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(fx->file, bad[i]);
        inv_t *inv = (inv_t *)1;
        char err[256] = "";
        assert_int_equal(inv_open(&inv, "memory", fx->dir, 4, err, sizeof(err)), CM_ECORRUPT);
        assert_null(inv);
        assert_non_null(strstr(err, "sales.json"));
    }
    /* A good one loads. */
    write_file(fx->file, "{\"format\": 1, \"sales\": [{\"sale_id\": \"x\", \"stock_total\": 3, "
                         "\"per_user_limit\": 1, \"starts_at_ms\": 0, \"ends_at_ms\": 0, "
                         "\"version\": 4}]}");
    inv_t *inv = open_dir(fx, 4);
    inv_sale_info_t x;
    assert_int_equal(inv_sale_get(inv, "x", &x), 0);
    assert_int_equal(x.stock_total, 3);
    assert_int_equal(x.version, 4);
    inv_close(inv);
}

static void test_failed_write_changes_nothing(void **state)
{
    fx_t *fx = *state;
    inv_t *inv = open_dir(fx, 4);
    assert_int_equal(put(inv, "s", 10, 1, 0, 0), 0);
    assert_int_equal(buy(inv, "s", "u1", 1, NULL, "o1", NULL), INV_RESERVED);
    /* A directory where the temporary file goes makes every write fail. */
    assert_int_equal(mkdir(fx->tmp, 0700), 0);

    char err[256] = "";
    assert_int_equal(put(inv, "t", 1, 1, 0, 0), CM_EIO);
    assert_null(inv_sale_find(inv, "t"));
    assert_int_equal(put(inv, "s", 4, 1, 0, 0), CM_EIO);  /* decrease: reverted */
    assert_int_equal(put(inv, "s", 20, 1, 0, 0), CM_EIO); /* increase: never applied */
    assert_int_equal(inv_restock(inv, "s", 5, NULL, err, sizeof(err)), CM_EIO);
    assert_true(err[0] != '\0');
    inv_sale_info_t s;
    assert_int_equal(inv_sale_get(inv, "s", &s), 0);
    assert_int_equal(s.stock_total, 10);
    assert_int_equal(s.stock_left, 9);
    assert_int_equal(s.version, 1);

    assert_int_equal(rmdir(fx->tmp), 0);
    assert_int_equal(put(inv, "s", 4, 1, 0, 0), 0);
    assert_int_equal(inv_sale_get(inv, "s", &s), 0);
    assert_int_equal(s.stock_left, 3);
    inv_close(inv);
}

static void test_max_sales(void **state)
{
    fx_t *fx = *state;
    inv_t *inv = open_dir(fx, 2);
    assert_int_equal(put(inv, "a", 1, 1, 0, 0), 0);
    assert_int_equal(put(inv, "b", 1, 1, 0, 0), 0);
    assert_int_equal(put(inv, "c", 1, 1, 0, 0), CM_EINVAL);
    assert_int_equal(put(inv, "a", 2, 1, 0, 0), 0); /* updates still work */
    inv_close(inv);
    inv = open_dir(fx, 2);
    assert_null(inv_sale_find(inv, "c"));
    inv_close(inv);
}

static void test_replay(void **state)
{
    fx_t *fx = *state;
    inv_t *inv = open_dir(fx, 4);
    assert_int_equal(put(inv, "s", 5, 2, 0, 0), 0);
    inv_close(inv);

    inv = open_dir(fx, 4);
    assert_int_equal(inv_replay(inv, "s", "alice", 1, "o1", "k1"), 0);
    /* The limit was lowered after bob's order was taken: replay still records it. */
    assert_int_equal(inv_replay(inv, "s", "bob", 3, "o2", NULL), 0);
    inv_sale_info_t s;
    assert_int_equal(inv_sale_get(inv, "s", &s), 0);
    assert_int_equal(s.stock_left, 1);
    assert_int_equal(s.accepted_units, 4);
    assert_int_equal(s.accepted_orders, 2);

    /* Replaying the same order id again is a no-op. */
    assert_int_equal(inv_replay(inv, "s", "alice", 1, "o1", "k1"), 0);
    assert_int_equal(inv_replay(inv, "s", "bob", 3, "o2", NULL), 0);
    assert_int_equal(inv_sale_get(inv, "s", &s), 0);
    assert_int_equal(s.stock_left, 1);
    assert_int_equal(s.accepted_orders, 2);

    /* More than the stock cannot be replayed; an unknown sale is not found. */
    assert_int_equal(inv_replay(inv, "s", "carol", 2, "o3", NULL), CM_ECONFLICT);
    assert_int_equal(inv_replay(inv, "nope", "carol", 1, "o4", NULL), CM_ENOTFOUND);
    assert_int_equal(inv_replay(inv, "s", "carol", 0, "o5", NULL), CM_EINVAL);

    /* A retry of a replayed order is recognised by its key. */
    inv_reserve_req_t r;
    assert_int_equal(buy(inv, "s", "alice", 1, "k1", "o9", &r), INV_DUPLICATE);
    assert_string_equal(r.order_id, "o1");
    assert_int_equal(r.qty, 1);
    /* The limit holds for new orders: bob holds 3 of 2. */
    assert_int_equal(buy(inv, "s", "bob", 1, NULL, "o10", NULL), INV_LIMIT_REACHED);
    uint32_t units = 0;
    assert_int_equal(inv_user_units(inv, "s", "bob", &units), 0);
    assert_int_equal(units, 3);

    /* Replay taking the last unit sets the flag; releasing a replayed order works. */
    assert_int_equal(inv_replay(inv, "s", "dave", 1, "o6", NULL), 0);
    assert_true(inv_sale_sold_out(inv_sale_find(inv, "s")));
    char who[INV_USER_ID_MAX + 1];
    assert_int_equal(inv_order_user(inv, "s", "o2", who), 0);
    assert_string_equal(who, "bob");
    assert_int_equal(inv_order_user(inv, "s", "o404", who), CM_ENOTFOUND);
    /* "" releases whoever holds the order (a cancel from the status table) */
    assert_int_equal(inv_release(inv, "s", "", 3, "o2"), 0);
    assert_int_equal(inv_release(inv, "s", "", 3, "o2"), CM_ENOTFOUND);
    assert_int_equal(inv_sale_get(inv, "s", &s), 0);
    assert_int_equal(s.stock_left, 3);
    assert_int_equal(s.accepted_units, 2);
    assert_false(inv_sale_sold_out(inv_sale_find(inv, "s")));
    inv_close(inv);
}

static void test_open_rejects(void **state)
{
    (void)state;
    inv_t *inv = NULL;
    char err[256] = "";
    assert_int_equal(inv_open(&inv, "bogus://x", NULL, 4, err, sizeof(err)), CM_EINVAL);
    assert_true(err[0] != '\0');
    assert_null(inv);
    assert_int_equal(inv_open(&inv, "memory", NULL, 0, err, sizeof(err)), CM_EINVAL);
    assert_int_equal(inv_open(&inv, "memory", "/proc/nonexistent/dir", 4, err, sizeof(err)),
                     CM_EIO);
    assert_null(inv);
}

static void test_id_valid(void **state)
{
    (void)state;
    assert_true(inv_id_valid("a", 1, 64));
    assert_true(inv_id_valid("A-z_0.9", 7, 64));
    assert_false(inv_id_valid("", 0, 64));
    assert_false(inv_id_valid("a b", 3, 64));
    assert_false(inv_id_valid("a/b", 3, 64));
    assert_false(inv_id_valid("abc", 3, 2));
    char nul[3] = {'a', '\0', 'b'};
    assert_false(inv_id_valid(nul, 3, 64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_definitions_survive_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_data_dir_persists_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_sales, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
        cmocka_unit_test(test_open_rejects),
        cmocka_unit_test(test_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
