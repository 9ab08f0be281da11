/*
 * SQLite settlement sink against a real database file in a temp dir.
 */
#include "st_sink_cases.h"

#include "common/cm_err.h"
#include "settle/st_settle.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct sq_ctx {
    char dir[64];
    char path[128];
} sq_ctx_t;

static int sq_open(ts_sink_fixture_t *f, const char *sql, st_sink_t **out)
{
    sq_ctx_t *c = f->ctx;
    char err[512] = "";
    st_sink_opts_t opts = {.sql = sql};
    int ret = st_sqlite_open(out, c->path, &opts, err, sizeof(err));
    if (ret)
        print_error("open: %s\n", err);
    return ret;
}

static long sq_query_int(ts_sink_fixture_t *f, const char *sql)
{
    sq_ctx_t *c = f->ctx;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void sq_exec(ts_sink_fixture_t *f, const char *sql)
{
    sq_ctx_t *c = f->ctx;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("exec %s: %s", sql, msg);
    sqlite3_close(db);
}

static int setup(void **state)
{
    sq_ctx_t *c = calloc(1, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "/tmp/st_sqlite.XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(c->path, sizeof(c->path), "%s/orders.db", c->dir);
    ts_sink_fixture_t *f = calloc(1, sizeof(*f));
    f->open = sq_open;
    f->query_int = sq_query_int;
    f->exec = sq_exec;
    f->ledger_setup = "CREATE TABLE ledger (order_id TEXT, user_id TEXT"
                      " CHECK (user_id NOT LIKE 'bad%'), qty INTEGER)";
    f->user_sql = "INSERT INTO ledger (order_id, user_id, qty) VALUES (:order_id, :user_id, :qty)";
    f->ctx = c;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    ts_sink_fixture_t *f = *state;
    sq_ctx_t *c = f->ctx;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
    if (system(cmd) != 0)
        return -1;
    free(c);
    free(f);
    return 0;
}

static void test_idempotent(void **state)
{
    case_idempotent(*state);
}
static void test_rollback(void **state)
{
    case_rollback(*state);
}
static void test_user_sql(void **state)
{
    case_user_sql(*state);
}
static void test_cancel(void **state)
{
    case_cancel(*state);
}
static void test_cancel_failed(void **state)
{
    case_cancel_failed(*state);
}
static void test_settle_many(void **state)
{
    case_settle_many(*state);
}
static void test_resent_after_cancel(void **state)
{
    case_resent_after_cancel(*state, false);
}
static void test_resent_after_cancel_user_sql(void **state)
{
    case_resent_after_cancel(*state, true);
}

/* A database error (lock held by another writer past busy_timeout) fails the batch, not the order.
 */
static void test_busy_is_batch_error(void **state)
{
    ts_sink_fixture_t *f = *state;
    sq_ctx_t *c = f->ctx;
    st_sink_t *s;
    char err[256];
    st_sink_opts_t opts = {.busy_timeout_ms = 100};
    assert_int_equal(st_sqlite_open(&s, c->path, &opts, err, sizeof(err)), 0);
    sqlite3 *other;
    assert_int_equal(sqlite3_open(c->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int ret = st_sink_begin(s);
    assert_true(ret < 0);
    printf("# begin under a foreign lock: %s (%s)\n", cm_errname(ret), s->errmsg);
    assert_int_equal(st_sink_rollback(s), 0);
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    oq_order_t o;
    st_outcome_t oc;
    mk_order(&o, "BUSY-1", "u1");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 1);
    st_sink_close(s);
}

/* One batch as write_batch() runs it, retried until it commits (at most `tries`
 * attempts); returns the attempts it took, or -1. */
static int settle_until_committed(st_sink_t *s, const oq_order_t *o, st_outcome_t *oc, size_t n,
                                  int tries)
{
    for (int attempt = 1; attempt <= tries; attempt++) {
        int ret = st_sink_begin(s);
        for (size_t i = 0; ret == 0 && i < n; i++)
            ret = st_sink_settle(s, &o[i], &oc[i]);
        if (ret == 0)
            ret = st_sink_commit(s);
        if (ret == 0)
            return attempt;
        printf("# attempt %d: %s (%s)\n", attempt, cm_errname(ret), s->errmsg);
        assert_int_equal(ret, CM_EAGAIN); /* the retry goes further: no backoff needed */
        assert_int_equal(st_sink_rollback(s), 0);
    }
    return -1;
}

/*
 * The user's statement rejects an order with RAISE(ROLLBACK) or INSERT OR
 * ROLLBACK: SQLite rolls the whole batch transaction back, not just the
 * order's savepoint. That order still fails alone: the batch fails once per
 * such order and its retry stores the order as failed, with the message,
 * without running the statement for it again; the other orders settle.
 */
static void test_user_sql_rolls_back_the_batch(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, "CREATE TABLE ledger (order_id TEXT, user_id TEXT UNIQUE, qty INTEGER);"
               "CREATE TRIGGER blocked BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'bad%'"
               " BEGIN SELECT RAISE(ROLLBACK, 'user is blocked'); END;");
    st_sink_t *s;
    assert_int_equal(f->open(f, "INSERT INTO ledger VALUES (:order_id, :user_id, :qty)", &s), 0);
    oq_order_t o[5];
    st_outcome_t oc[5];
    mk_order(&o[0], "RR-1", "good1");
    mk_order(&o[1], "RR-2", "bad1");
    mk_order(&o[2], "RR-3", "good2");
    mk_order(&o[3], "RR-4", "bad2");
    mk_order(&o[4], "RR-5", "good3");
    assert_int_equal(settle_until_committed(s, o, oc, 5, 5), 3); /* two orders rolled it back */
    for (int i = 0; i < 5; i++) {
        assert_true(oc[i].changed);
        if (i % 2) {
            assert_int_equal(oc[i].status, OQ_STATUS_FAILED);
            assert_string_equal(oc[i].reason, "user is blocked");
        } else {
            assert_int_equal(oc[i].status, OQ_STATUS_SETTLED);
        }
    }
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 3);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 5);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                     " AND reason = 'user is blocked'"),
                     2);
    /* a copy later: the stored failure, the statement not run */
    assert_int_equal(settle_until_committed(s, &o[1], &oc[1], 1, 1), 1);
    assert_false(oc[1].changed);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_string_equal(oc[1].reason, "user is blocked");
    st_sink_close(s);

    /* INSERT OR ROLLBACK: a second order of a user meets the UNIQUE user_id */
    assert_int_equal(
        f->open(f, "INSERT OR ROLLBACK INTO ledger VALUES (:order_id, :user_id, :qty)", &s), 0);
    mk_order(&o[0], "OR-1", "good4");
    mk_order(&o[1], "OR-2", "good4");
    mk_order(&o[2], "OR-3", "good5");
    assert_int_equal(settle_until_committed(s, o, oc, 3, 3), 2);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_non_null(strstr(oc[1].reason, "UNIQUE"));
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 5);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 8);
    st_sink_close(s);
}

/*
 * The user's statement rejects an order with a message longer than a reason
 * holds (255 bytes), a two-byte character across the cut. The reason is cut
 * before that character: half of it is not UTF-8, the outcome could not be
 * encoded (st_outcome_format aborted) and, stored, it did so again from the
 * database after every restart of the worker.
 */
static void test_user_sql_long_utf8_reason(void **state)
{
    ts_sink_fixture_t *f = *state;
    char msg[512] = "xx", sql[1024];
    for (int i = 0; i < 200; i++)
        strcat(msg, "\xc3\xa9"); /* U+00E9 */
    snprintf(sql, sizeof(sql),
             "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INTEGER);"
             "CREATE TRIGGER blocked BEFORE INSERT ON ledger"
             " BEGIN SELECT RAISE(ABORT, '%s'); END;",
             msg);
    f->exec(f, sql);
    st_sink_t *s;
    assert_int_equal(f->open(f, "INSERT INTO ledger VALUES (:order_id, :user_id, :qty)", &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    mk_order(&o, "LONG-1", "u1");
    for (int copy = 0; copy < 2; copy++) { /* the decision, then the stored row */
        assert_int_equal(st_sink_begin(s), 0);
        assert_int_equal(st_sink_settle(s, &o, &oc), 0);
        assert_int_equal(st_sink_commit(s), 0);
        assert_int_equal(oc.status, OQ_STATUS_FAILED);
        assert_int_equal(oc.changed, copy == 0);
        assert_int_equal(strlen(oc.reason), 2 + 2 * 126); /* whole characters only */
        assert_memory_equal(oc.reason, msg, strlen(oc.reason));
        oq_order_t out = o;
        out.type = OQ_MSG_OUTCOME;
        out.status = oc.status;
        snprintf(out.reason, sizeof(out.reason), "%s", oc.reason);
        assert_int_equal(oq_order_check(&out, NULL, 0), 0);
        free(st_outcome_format(&o, &oc, 1700000000000));
    }
    st_sink_close(s);
}

static void test_bad_user_sql_rejected_at_open(void **state)
{
    ts_sink_fixture_t *f = *state;
    sq_ctx_t *c = f->ctx;
    st_sink_t *s = NULL;
    char err[256] = "";
    st_sink_opts_t opts = {.sql = "INSERT INTO nowhere VALUES (:order_id)"};
    assert_int_equal(st_sqlite_open(&s, c->path, &opts, err, sizeof(err)), CM_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "nowhere"));
    opts.sql = "SELECT 1; SELECT 2";
    assert_int_equal(st_sqlite_open(&s, c->path, &opts, err, sizeof(err)), CM_EINVAL);
}

static void test_sink_open_dispatch(void **state)
{
    ts_sink_fixture_t *f = *state;
    sq_ctx_t *c = f->ctx;
    st_sink_t *s = NULL;
    char err[256] = "";
    char dd[160];
    snprintf(dd, sizeof(dd), "%s/data/sub", c->dir);
    assert_int_equal(st_sink_open(&s, NULL, dd, NULL, err, sizeof(err)), 0);
    assert_string_equal(s->ops->name, "sqlite");
    st_sink_close(s);
    char p[200];
    snprintf(p, sizeof(p), "%s/orders.db", dd);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(st_sink_open(&s, "mysql://x", dd, NULL, err, sizeof(err)), CM_EINVAL);
}

static void test_bench_batch500(void **state)
{
    case_bench(*state, "sqlite", 20000, 500);
}

/*
 * Poison isolation on SQLite: a trigger on the orders table (the operator's)
 * refuses one order's settled row. The refusal comes from the insert, outside
 * any savepoint, so it failed the whole batch at every try; isolated, that
 * order is recorded as failed with the trigger's message (its failed row
 * passes the trigger) and the others settle.
 */
static void test_poison_order_isolated(void **state)
{
    ts_sink_fixture_t *f = *state;
    st_sink_t *s;
    assert_int_equal(sq_open(f, NULL, &s), 0);
    f->exec(f, "CREATE TRIGGER no_poison BEFORE INSERT ON orders"
               " WHEN NEW.order_id = 'POISON-2' AND NEW.status = 'settled'"
               " BEGIN SELECT RAISE(ABORT, 'order cannot be booked'); END");
    oq_order_t o[3];
    st_outcome_t oc[3];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "POISON-2", "u2");
    mk_order(&o[2], "ORD-3", "u3");
    const oq_order_t *msgs[3] = {&o[0], &o[1], &o[2]};
    st_outcome_t *outs[3] = {&oc[0], &oc[1], &oc[2]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    int tries = write_tries(&w, s, msgs, outs, 3, &systemic, &poisoned);
    if (tries == 0)
        fail_msg("the batch never settled in %d tries: %s", POISON_MAX_TRIES, s->errmsg);
    assert_int_equal(tries, ST_POISON_AFTER + 1);
    assert_int_equal(poisoned, 1);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_string_equal(oc[1].reason, "order cannot be booked");
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    assert_int_equal(count_status(f, "settled"), 2);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_after_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_after_cancel_user_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_is_batch_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql_rolls_back_the_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql_long_utf8_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_user_sql_rejected_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sink_open_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_order_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bench_batch500, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
