/*
 * PostgreSQL settlement sink against a real server started by the test (one
 * server for the file, a fresh database per case). Skips (77) when the
 * PostgreSQL server binaries are not installed.
 */
#include "st_sink_cases.h"

#include "common/cm_err.h"
#include "common/cm_log.h"
#include "settle/st_settle.h"
#include "tests/support/ts_kafka.h"
#include "tests/support/ts_pg.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static ts_pg_t g_pg;
static int g_dbseq;

typedef struct pg_ctx {
    char url[256];
    char db[32]; /* the case's own database, dropped by teardown */
} pg_ctx_t;

static PGconn *conn_to(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", url, PQerrorMessage(c));
    return c;
}

static int pgf_open(ts_sink_fixture_t *f, const char *sql, st_sink_t **out)
{
    pg_ctx_t *c = f->ctx;
    char err[512] = "";
    st_sink_opts_t opts = {.sql = sql};
    int ret = st_pg_open(out, c->url, &opts, err, sizeof(err));
    if (ret)
        print_error("open: %s\n", err);
    return ret;
}

static long pgf_query_int(ts_sink_fixture_t *f, const char *sql)
{
    pg_ctx_t *c = f->ctx;
    PGconn *conn = conn_to(c->url);
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("query %s: %s", sql, PQerrorMessage(conn));
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(conn);
    return v;
}

static void pgf_exec(ts_sink_fixture_t *f, const char *sql)
{
    pg_ctx_t *c = f->ctx;
    PGconn *conn = conn_to(c->url);
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("exec %s: %s", sql, PQerrorMessage(conn));
    PQclear(r);
    PQfinish(conn);
}

static int group_setup(void **state)
{
    (void)state;
    return ts_pg_start(&g_pg);
}

static int group_teardown(void **state)
{
    (void)state;
    ts_pg_stop(&g_pg);
    return 0;
}

/* The user's function of the fixture's ledger (users "bad*" are refused). */
#define SETTLE_ORDER_FN                                                                            \
    "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"              \
    " LANGUAGE plpgsql AS $$ BEGIN"                                                                \
    "  IF p_user LIKE 'bad%' THEN RAISE EXCEPTION 'user % is blocked', p_user; END IF;"            \
    "  INSERT INTO ledger VALUES (p_order, p_user, p_qty);"                                        \
    " END $$"

static int setup(void **state)
{
    pg_ctx_t *c = calloc(1, sizeof(*c));
    char db[32], q[96];
    snprintf(db, sizeof(db), "t%d", ++g_dbseq);
    /* FILE_COPY: PostgreSQL 15's default copies the template through the WAL,
     * and 34 cases left hundreds of MB for the group's rm -rf (the server runs
     * with -F, so the copy's checkpoint costs no fsync). */
    snprintf(q, sizeof(q), "CREATE DATABASE %s STRATEGY FILE_COPY", db);
    PGconn *conn = conn_to(g_pg.url);
    PGresult *r = PQexec(conn, q);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(conn);
    if (!ok)
        return -1;
    snprintf(c->url, sizeof(c->url), "postgresql://postgres@127.0.0.1:%d/%s", g_pg.port, db);
    snprintf(c->db, sizeof(c->db), "%s", db);
    ts_sink_fixture_t *f = calloc(1, sizeof(*f));
    f->open = pgf_open;
    f->query_int = pgf_query_int;
    f->exec = pgf_exec;
    f->ledger_setup = "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);" SETTLE_ORDER_FN;
    f->user_sql = "SELECT settle_order($1, $3, $4)";
    f->ctx = c;
    *state = f;
    return 0;
}

/* Drops database `db` (its sessions too) through the server's own database. */
static void drop_db(const char *db)
{
    char q[96];
    snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    PGconn *conn = conn_to(g_pg.url);
    PQclear(PQexec(conn, q));
    PQfinish(conn);
}

static int teardown(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    const char *at = strrchr(c->url, '/'); /* a case may have moved to a database of its own */
    if (at && strcmp(at + 1, c->db) != 0)
        drop_db(at + 1);
    drop_db(c->db);
    free(f->ctx);
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

/* Kills every other session of the database (the sink's). */
static void drop_sessions(const char *url)
{
    PGconn *admin = conn_to(url);
    PGresult *r = PQexec(admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(atoi(PQgetvalue(r, 0, 0)), 1);
    PQclear(r);
    PQfinish(admin);
}

/* The server drops our connection mid-batch: a batch error, then rollback reconnects. */
static void test_connection_loss(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    st_sink_t *s;
    assert_int_equal(pgf_open(f, NULL, &s), 0);
    oq_order_t o1, o2;
    st_outcome_t oc;
    mk_order(&o1, "CL-1", "u1");
    mk_order(&o2, "CL-2", "u2");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle(s, &o1, &oc), 0);
    drop_sessions(c->url);
    int ret = st_sink_settle(s, &o2, &oc);
    if (ret == 0)
        ret = st_sink_commit(s);
    assert_true(ret < 0);
    printf("# after the server dropped us: %s (%s)\n", cm_errname(ret), s->errmsg);
    assert_int_equal(st_sink_rollback(s), 0); /* reconnects */
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 0);
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle(s, &o1, &oc), 0);
    assert_true(oc.changed);
    assert_int_equal(st_sink_settle(s, &o2, &oc), 0);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 2);
    /* The same through settle_many: the connection dies between two batches. */
    oq_order_t o3;
    mk_order(&o3, "CL-3", "u3");
    const oq_order_t *op[1] = {&o3};
    st_outcome_t *ocp[1] = {&oc};
    assert_int_equal(st_sink_begin(s), 0);
    drop_sessions(c->url);
    assert_true(st_sink_settle_many(s, op, ocp, 1) < 0);
    printf("# settle_many after the server dropped us: %s\n", s->errmsg);
    assert_int_equal(st_sink_rollback(s), 0); /* reconnects */
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle_many(s, op, ocp, 1), 0);
    assert_true(oc.changed);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 3);
    st_sink_close(s);
}

/* One batch of one order, as write_batch() runs it. */
static int settle_batch(st_sink_t *s, const char *id)
{
    oq_order_t o;
    st_outcome_t oc;
    mk_order(&o, id, "u1");
    const oq_order_t *op[1] = {&o};
    st_outcome_t *ocp[1] = {&oc};
    int ret = st_sink_begin(s);
    if (ret == 0)
        ret = st_sink_settle_many(s, op, ocp, 1);
    if (ret == 0)
        ret = st_sink_commit(s);
    if (ret != 0) {
        printf("# batch %s: %s (%s)\n", id, cm_errname(ret), s->errmsg);
        st_sink_rollback(s);
    }
    return ret;
}

/*
 * The connection drops and the reconnect cannot prepare the statements (the
 * table locked by an ALTER TABLE past lock_timeout; the user's function being
 * replaced): the batch fails, and the next one prepares them again, however
 * many of them the failed round left in the session.
 */
static void test_reprepare_after_reconnect(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    char url[300];
    snprintf(url, sizeof(url), "%s?options=-c%%20lock_timeout%%3D300", c->url);
    st_sink_t *s;
    char err[512] = "";
    assert_int_equal(st_pg_open(&s, url, NULL, err, sizeof(err)), 0);
    assert_int_equal(settle_batch(s, "RP-1"), 0);
    /* 1. no statement prepared: the first one waits on the lock */
    drop_sessions(c->url);
    PGconn *locker = conn_to(c->url);
    PQclear(PQexec(locker, "BEGIN"));
    PGresult *r = PQexec(locker, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_true(settle_batch(s, "RP-2") < 0); /* lost connection; rollback's prepare times out */
    assert_non_null(strstr(s->errmsg, "lock timeout"));
    PQclear(PQexec(locker, "COMMIT"));
    PQfinish(locker);
    assert_int_equal(settle_batch(s, "RP-2"), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 2);
    st_sink_close(s);

    /* 2. every statement but the user's prepared: its function is gone for a moment */
    f->exec(f, f->ledger_setup);
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    assert_int_equal(settle_batch(s, "RP-3"), 0);
    drop_sessions(c->url);
    f->exec(f, "DROP FUNCTION settle_order(text, text, int)");
    assert_true(settle_batch(s, "RP-4") < 0);
    assert_non_null(strstr(s->errmsg, "settle_order"));
    f->exec(f, SETTLE_ORDER_FN);
    assert_int_equal(settle_batch(s, "RP-4"), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 4);
    st_sink_close(s);
}

/*
 * Another writer holds one of the run's ids in an open transaction (two
 * workers on one order during a rebalance) and commits once our insert waits
 * on it: the fast insert (no ON CONFLICT) fails with a unique violation and
 * the batch rolls back; the retry uses ON CONFLICT, so a second writer in
 * flight then is waited for and skipped instead of failing it again. Every id
 * is recorded once, and the copies report the recorded row.
 */
typedef struct race_writer {
    const char *url, *order_id;
    PGconn *conn;
    pthread_t thread;
} race_writer_t;

/* Waits (at most ~10 s) until a session of the database waits on a lock. */
static bool await_lock_waiter(const char *url)
{
    PGconn *watch = conn_to(url);
    bool waiting = false;
    for (int i = 0; i < 1000 && !waiting; i++) {
        PGresult *r = PQexec(watch, "SELECT count(*) FROM pg_stat_activity WHERE"
                                    " datname = current_database() AND wait_event_type = 'Lock'");
        waiting = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
        PQclear(r);
        if (!waiting)
            nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000L}, NULL);
    }
    PQfinish(watch);
    return waiting;
}

static void *race_commit_when_waited(void *arg)
{
    race_writer_t *w = arg;
    await_lock_waiter(w->url);
    PQclear(PQexec(w->conn, "COMMIT"));
    return NULL;
}

static void race_writer_start(race_writer_t *w, const char *url, const char *order_id)
{
    w->url = url;
    w->order_id = order_id;
    w->conn = conn_to(url);
    char q[512];
    snprintf(q, sizeof(q),
             "BEGIN; INSERT INTO orders (order_id, sale_id, user_id, qty, accepted_at, node,"
             " status, reason, settled_at, updated_at)"
             " VALUES ('%s', 's1', 'other', 1, 1, 3, 'settled', NULL, 1, 1)",
             order_id);
    PGresult *r = PQexec(w->conn, q);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_int_equal(pthread_create(&w->thread, NULL, race_commit_when_waited, w), 0);
}

static void race_writer_join(race_writer_t *w)
{
    pthread_join(w->thread, NULL);
    PQfinish(w->conn);
}

static void test_unique_race(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    st_sink_t *s;
    assert_int_equal(pgf_open(f, NULL, &s), 0);
    oq_order_t o[3];
    st_outcome_t oc[3];
    const oq_order_t *op[3] = {&o[0], &o[1], &o[2]};
    st_outcome_t *ocp[3] = {&oc[0], &oc[1], &oc[2]};
    mk_order(&o[0], "R-1", "u1");
    mk_order(&o[1], "R-2", "u2");
    mk_order(&o[2], "R-1", "u1"); /* a copy in the same run */
    race_writer_t w;
    race_writer_start(&w, c->url, "R-2");
    assert_int_equal(st_sink_begin(s), 0);
    int ret = st_sink_settle_many(s, op, ocp, 3);
    race_writer_join(&w);
    assert_true(ret < 0);
    printf("# the other writer's id: %s\n", s->errmsg);
    assert_int_equal(st_sink_rollback(s), 0);
    /* The retry meets a second writer in flight, on R-1 now: waited for, skipped. */
    race_writer_start(&w, c->url, "R-1");
    assert_int_equal(st_sink_begin(s), 0);
    ret = st_sink_settle_many(s, op, ocp, 3);
    race_writer_join(&w);
    assert_int_equal(ret, 0);
    assert_int_equal(st_sink_commit(s), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(oc[i].status, OQ_STATUS_SETTLED);
        assert_false(oc[i].changed);
    }
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE user_id = 'other'"), 2);
    /* Back on the fast insert: a new order and a copy of a recorded one. */
    mk_order(&o[0], "R-3", "u3");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle_many(s, op, ocp, 2), 0);
    assert_int_equal(st_sink_commit(s), 0);
    assert_true(oc[0].changed);
    assert_false(oc[1].changed);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 3);
    st_sink_close(s);
}

/*
 * With --sql, two workers settle one order at once (a rebalance hands its
 * partition over while the old owner still has the batch open): both look it
 * up before either commits, so both run the user's statement. The second one's
 * insert waits for the first and then finds the row: that is a conflict, not a
 * settled order. Its batch is rolled back (its user SQL with it) and the retry
 * reports the recorded row, unchanged: the user's statement ran once, and
 * both workers publish the outcome that is stored.
 */
typedef struct user_sql_worker {
    st_sink_t *s;
    oq_order_t o;
    st_outcome_t oc;
    int ret;
    pthread_t thread;
} user_sql_worker_t;

static void *user_sql_settle(void *arg)
{
    user_sql_worker_t *w = arg;
    w->ret = st_sink_begin(w->s);
    if (w->ret == 0)
        w->ret = st_sink_settle(w->s, &w->o, &w->oc); /* waits in the insert for worker A */
    return NULL;
}

/* Worker A has settled o in its open batch (oca); worker B settles it meanwhile, A
 * commits while B's insert waits, and B goes on as write_batch() does. */
static void second_worker_races(ts_sink_fixture_t *f, st_sink_t *a, st_sink_t *b,
                                const oq_order_t *o, const st_outcome_t *oca, st_outcome_t *ocb)
{
    pg_ctx_t *c = f->ctx;
    user_sql_worker_t w = {.s = b, .o = *o};
    assert_int_equal(pthread_create(&w.thread, NULL, user_sql_settle, &w), 0);
    assert_true(await_lock_waiter(c->url));
    assert_int_equal(st_sink_commit(a), 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.ret, CM_ECONFLICT);
    printf("# the second worker: %s (%s)\n", cm_errname(w.ret), b->errmsg);
    /* what write_batch() does: roll back, begin again */
    assert_int_equal(st_sink_rollback(b), 0);
    assert_int_equal(st_sink_begin(b), 0);
    assert_int_equal(st_sink_settle(b, o, ocb), 0);
    assert_int_equal(st_sink_commit(b), 0);
    assert_false(ocb->changed);
    assert_int_equal(ocb->status, oca->status);
    assert_string_equal(ocb->reason, oca->reason);
}

static void test_user_sql_two_workers(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"
               "CREATE TABLE blocked (user_id TEXT);"
               "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"
               " LANGUAGE plpgsql AS $$ BEGIN"
               "  IF EXISTS (SELECT 1 FROM blocked WHERE user_id = p_user) THEN"
               "   RAISE EXCEPTION 'user % is blocked', p_user; END IF;"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty);"
               " END $$");
    st_sink_t *a, *b;
    assert_int_equal(pgf_open(f, f->user_sql, &a), 0);
    assert_int_equal(pgf_open(f, f->user_sql, &b), 0);
    oq_order_t o;
    st_outcome_t oca, ocb;
    /* both would settle it: the ledger is charged once */
    mk_order(&o, "TW-1", "u1");
    assert_int_equal(st_sink_begin(a), 0);
    assert_int_equal(st_sink_settle(a, &o, &oca), 0); /* row and ledger in, not committed */
    assert_true(oca.changed);
    assert_int_equal(oca.status, OQ_STATUS_SETTLED);
    second_worker_races(f, a, b, &o, &oca, &ocb);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger WHERE order_id = 'TW-1'"), 1);
    /* A's statement rejects it, then the user is unblocked and B's would accept it:
     * B publishes the stored failed too, and charges nothing */
    mk_order(&o, "TW-2", "u2");
    f->exec(f, "INSERT INTO blocked VALUES ('u2')");
    assert_int_equal(st_sink_begin(a), 0);
    assert_int_equal(st_sink_settle(a, &o, &oca), 0);
    assert_int_equal(oca.status, OQ_STATUS_FAILED);
    f->exec(f, "DELETE FROM blocked");
    second_worker_races(f, a, b, &o, &oca, &ocb);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger WHERE order_id = 'TW-2'"), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 2);
    assert_int_equal(count_status(f, "failed"), 1);
    st_sink_close(a);
    st_sink_close(b);
}

/*
 * The user's function rejects an order with a message longer than a reason
 * holds (255 bytes), a two-byte character across the cut. The reason is cut
 * before that character: half of it is not UTF-8, which a UTF8 database
 * refuses in the failed row (22021, the batch retried forever) and a
 * SQL_ASCII one stores, for st_outcome_format to abort on at every restart.
 */
static void test_user_sql_long_utf8_reason(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"
               " LANGUAGE plpgsql AS $$ BEGIN"
               "  RAISE EXCEPTION '%', 'xx' || repeat(U&'\\00E9', 200);"
               " END $$");
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    mk_order(&o, "LONG-1", "u1");
    for (int copy = 0; copy < 2; copy++) { /* the decision, then the stored row */
        assert_int_equal(st_sink_begin(s), 0);
        int ret = st_sink_settle(s, &o, &oc);
        if (ret)
            fail_msg("settle: %s (%s)", cm_errname(ret), s->errmsg);
        assert_int_equal(st_sink_commit(s), 0);
        assert_int_equal(oc.status, OQ_STATUS_FAILED);
        assert_int_equal(oc.changed, copy == 0);
        assert_int_equal(strlen(oc.reason), 2 + 2 * 126); /* whole characters only */
        assert_memory_equal(oc.reason, "xx\xc3\xa9", 4);
        oq_order_t out = o;
        out.type = OQ_MSG_OUTCOME;
        out.status = oc.status;
        snprintf(out.reason, sizeof(out.reason), "%s", oc.reason);
        assert_int_equal(oq_order_check(&out, NULL, 0), 0);
        free(st_outcome_format(&o, &oc, 1700000000000));
    }
    st_sink_close(s);
}

/*
 * Poison isolation (st_batch_write). The user's function raises, for one
 * order only, a SQLSTATE outside the per-order classes (2F005, as a plpgsql
 * function whose branch ends without RETURN): that error fails the batch,
 * not the order, and before poison isolation the batch was rolled back and
 * retried forever, stalling every partition of the worker.
 */
#define POISON_FN(cond)                                                                            \
    "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"                                 \
    "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"              \
    " LANGUAGE plpgsql AS $$ BEGIN"                                                                \
    "  IF " cond " THEN RAISE EXCEPTION 'order % cannot be booked', p_order"                      \
    "   USING ERRCODE = '2F005'; END IF;"                                                          \
    "  INSERT INTO ledger VALUES (p_order, p_user, p_qty);"                                        \
    " END $$"

static void test_poison_order_isolated(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, POISON_FN("p_order = 'POISON-2'"));
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[4];
    st_outcome_t oc[4];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "POISON-2", "u2");
    mk_order(&o[2], "ORD-3", "u3");
    mk_cancel(&o[3], "ORD-3", "user asked");
    const oq_order_t *msgs[4] = {&o[0], &o[1], &o[2], &o[3]};
    st_outcome_t *outs[4] = {&oc[0], &oc[1], &oc[2], &oc[3]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    int tries = write_tries(&w, s, msgs, outs, 4, &systemic, &poisoned);
    if (tries == 0)
        fail_msg("the batch never settled in %d tries: %s", POISON_MAX_TRIES, s->errmsg);
    assert_int_equal(tries, ST_POISON_AFTER + 1); /* probed after the K-th failure */
    assert_false(systemic);
    assert_int_equal(poisoned, 1);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_true(oc[0].changed);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_true(oc[1].changed);
    assert_string_equal(oc[1].reason, "order POISON-2 cannot be booked");
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[3].status, OQ_STATUS_CANCELLED);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'POISON-2'"
                                     " AND status = 'failed'"
                                     " AND reason = 'order POISON-2 cannot be booked'"),
                     1);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 2);
    /* A copy later reports the stored decision and runs nothing. */
    assert_int_equal(write_tries(&w, s, msgs + 1, outs + 1, 1, &systemic, &poisoned), 1);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_false(oc[1].changed);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/* Two copies of a poison order in one batch (a resend): listed, counted and
 * logged once; the first copy is failed, the second reports that row. */
static void test_poison_copy_listed_once(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, POISON_FN("p_order = 'POISON-2'"));
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[3];
    st_outcome_t oc[3];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "POISON-2", "u2");
    o[2] = o[1];
    const oq_order_t *msgs[3] = {&o[0], &o[1], &o[2]};
    st_outcome_t *outs[3] = {&oc[0], &oc[1], &oc[2]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    assert_int_equal(write_tries(&w, s, msgs, outs, 3, &systemic, &poisoned), ST_POISON_AFTER + 1);
    assert_int_equal(poisoned, 1);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_true(oc[1].changed);
    assert_int_equal(oc[2].status, OQ_STATUS_FAILED);
    assert_false(oc[2].changed);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/* The statement fails for every order (systemic): nothing is failed, the
 * batch stays unsettled (retried), and it settles once the function is fixed. */
static void test_poison_systemic_not_failed(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, POISON_FN("true"));
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[3];
    st_outcome_t oc[3];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "ORD-2", "u2");
    mk_order(&o[2], "ORD-3", "u3");
    const oq_order_t *msgs[3] = {&o[0], &o[1], &o[2]};
    st_outcome_t *outs[3] = {&oc[0], &oc[1], &oc[2]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    assert_int_equal(write_tries(&w, s, msgs, outs, 3, &systemic, &poisoned), 0);
    assert_true(systemic);
    assert_int_equal(poisoned, 0);
    /* a lone order after nothing settled: systemic too */
    assert_int_equal(write_tries(&w, s, msgs, outs, 1, &systemic, &poisoned), 0);
    assert_true(systemic);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 0);
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty); END $$");
    assert_int_equal(write_tries(&w, s, msgs, outs, 3, &systemic, &poisoned), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(oc[i].status, OQ_STATUS_SETTLED);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/* Fails until note.systemic (the probe found no evidence against any order);
 * returns the tries, 0 if it never stalled within POISON_MAX_TRIES. */
static int write_until_stall(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                             st_outcome_t *const *outs, size_t n)
{
    for (int t = 1; t <= POISON_MAX_TRIES; t++) {
        st_batch_note_t note;
        assert_int_not_equal(st_batch_write(w, s, msgs, outs, n, &note), 0);
        assert_int_equal(note.poisoned, 0);
        if (note.systemic)
            return t;
    }
    return 0;
}

/*
 * A lone poison order, even right after a batch that settled, is no evidence
 * by itself (the statement could have broken for everyone a moment ago): the
 * batch stalls. Once the stalled batch holds another order (the loop adds the
 * messages that arrived meanwhile), the very next failure probes it again, the
 * other order passes alone, and the poison is isolated.
 */
static void test_poison_lone_order(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, POISON_FN("p_order LIKE 'POISON%'"));
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[3];
    st_outcome_t oc[3];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "POISON-2", "u2");
    mk_order(&o[2], "ORD-3", "u3");
    const oq_order_t *m0[1] = {&o[0]}, *m12[2] = {&o[1], &o[2]};
    st_outcome_t *out0[1] = {&oc[0]}, *out12[2] = {&oc[1], &oc[2]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    assert_int_equal(write_tries(&w, s, m0, out0, 1, &systemic, &poisoned), 1);
    assert_int_equal(write_until_stall(&w, s, m12, out12, 1), ST_POISON_AFTER);
    assert_int_equal(count_status(f, "failed"), 0);
    st_batch_note_t note;
    assert_int_not_equal(st_batch_write(&w, s, m12, out12, 2, &note), 0);
    assert_true(note.probed); /* at once: the batch grew */
    assert_int_equal(note.poisoned, 1);
    assert_int_equal(st_batch_write(&w, s, m12, out12, 2, &note), 0);
    st_batch_writer_done(&w, s);
    assert_int_equal(oc[1].status, OQ_STATUS_FAILED);
    assert_string_equal(oc[1].reason, "order POISON-2 cannot be booked");
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/*
 * The statement breaks for every order just after a batch settled (a function
 * replaced by a broken one, a table dropped): no order may be failed for it.
 * Before, a lone order right after a settled batch was judged poison; so was
 * an order next to a copy of an order already recorded (the copy "passed"
 * without running the statement), or next to a cancel (which does not run it).
 */
static void test_poison_needs_evidence(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, f->ledger_setup);
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[4];
    st_outcome_t oc[4];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "ORD-2", "u2");
    mk_cancel(&o[2], "ORD-9", "user asked");
    mk_order(&o[3], "ORD-3", "u3");
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    const oq_order_t *m0[1] = {&o[0]};
    st_outcome_t *out0[1] = {&oc[0]};
    assert_int_equal(write_tries(&w, s, m0, out0, 1, &systemic, &poisoned), 1);
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  RAISE EXCEPTION 'ledger is gone' USING ERRCODE = '2F005'; END $$");
    const oq_order_t *lone[1] = {&o[1]}, *with_copy[2] = {&o[0], &o[1]},
                     *with_cancel[2] = {&o[1], &o[2]};
    st_outcome_t *out1[1] = {&oc[1]}, *outs2[2] = {&oc[0], &oc[1]}, *outs3[2] = {&oc[1], &oc[2]};
    assert_int_equal(write_tries(&w, s, lone, out1, 1, &systemic, &poisoned), 0);
    assert_true(systemic);
    assert_int_equal(poisoned, 0);
    assert_int_equal(write_tries(&w, s, with_copy, outs2, 2, &systemic, &poisoned), 0);
    assert_true(systemic);
    assert_int_equal(poisoned, 0);
    assert_int_equal(write_tries(&w, s, with_cancel, outs3, 2, &systemic, &poisoned), 0);
    assert_true(systemic);
    assert_int_equal(poisoned, 0);
    assert_int_equal(count_status(f, "failed"), 0);
    /* fixed: everything settles */
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty); END $$");
    const oq_order_t *all[3] = {&o[1], &o[2], &o[3]};
    st_outcome_t *outs_all[3] = {&oc[1], &oc[2], &oc[3]};
    assert_int_equal(write_tries(&w, s, all, outs_all, 3, &systemic, &poisoned), 1);
    assert_int_equal(count_status(f, "settled"), 3);
    assert_int_equal(count_status(f, "failed"), 0);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/*
 * Errors raised only at COMMIT (a DEFERRABLE INITIALLY DEFERRED constraint or
 * constraint trigger that the user's statement meets): the batch fails at its
 * COMMIT, and the probe, whose transactions are rolled back, never met them:
 * the batch was retried forever. Each case: POISON-2 is refused at COMMIT
 * only, ORD-1 and ORD-3 are fine.
 */
static void commit_poison_case(ts_sink_fixture_t *f, const char *schema, const char *reason_has,
                               long ledger_before)
{
    f->exec(f, schema);
    st_sink_t *s;
    assert_int_equal(pgf_open(f, "INSERT INTO ledger VALUES ($1, $3, $4)", &s), 0);
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
    if (!strstr(oc[1].reason, reason_has))
        fail_msg("reason \"%s\" lacks \"%s\"", oc[1].reason, reason_has);
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    assert_int_equal(count_status(f, "settled"), 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), ledger_before + 2);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

static void test_poison_at_commit_deferred_fk(void **state)
{
    commit_poison_case(*state,
                       "CREATE TABLE users (user_id TEXT PRIMARY KEY);"
                       "INSERT INTO users VALUES ('u1'), ('u3');"
                       "CREATE TABLE ledger (order_id TEXT, user_id TEXT REFERENCES users"
                       " DEFERRABLE INITIALLY DEFERRED, qty INT)",
                       "foreign key", 0);
}

/* 23505 at COMMIT is a deferred unique constraint, not the batched insert
 * racing another worker (that one is immediate): final, not transient. */
static void test_poison_at_commit_deferred_unique(void **state)
{
    commit_poison_case(*state,
                       "CREATE TABLE ledger (order_id TEXT, user_id TEXT UNIQUE"
                       " DEFERRABLE INITIALLY DEFERRED, qty INT);"
                       "INSERT INTO ledger VALUES ('OLD-1', 'u2', 1)",
                       "duplicate key", 1);
}

static void test_poison_at_commit_deferred_trigger(void **state)
{
    commit_poison_case(*state,
                       "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"
                       "CREATE FUNCTION ledger_check() RETURNS trigger LANGUAGE plpgsql AS $$"
                       " BEGIN IF NEW.order_id = 'POISON-2' THEN"
                       "  RAISE EXCEPTION 'order % refused at commit', NEW.order_id"
                       "  USING ERRCODE = '2F005'; END IF; RETURN NULL; END $$;"
                       "CREATE CONSTRAINT TRIGGER ledger_check AFTER INSERT ON ledger"
                       " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check()",
                       "refused at commit", 0);
}

/* A COMMIT that fails transiently (serialization failure 40001, deadlock
 * 40P01, raised here by a deferred trigger a few times) is retried, never
 * counted towards poison, and the order settles once it passes. */
static void test_commit_transient_not_poisoned(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"
               "CREATE SEQUENCE flaky;"
               "CREATE FUNCTION ledger_check() RETURNS trigger LANGUAGE plpgsql AS $$"
               " DECLARE n bigint; BEGIN"
               "  IF NEW.order_id = 'ORD-2' THEN n := nextval('flaky');"
               "   IF n <= 8 THEN RAISE EXCEPTION 'transient %', n"
               "    USING ERRCODE = CASE WHEN n % 2 = 0 THEN '40001' ELSE '40P01' END;"
               "  END IF; END IF; RETURN NULL; END $$;"
               "CREATE CONSTRAINT TRIGGER ledger_check AFTER INSERT ON ledger"
               " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check()");
    st_sink_t *s;
    assert_int_equal(pgf_open(f, "INSERT INTO ledger VALUES ($1, $3, $4)", &s), 0);
    oq_order_t o[2];
    st_outcome_t oc[2];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "ORD-2", "u2");
    const oq_order_t *msgs[2] = {&o[0], &o[1]};
    st_outcome_t *outs[2] = {&oc[0], &oc[1]};
    st_batch_writer_t w = {0};
    int fails = 0, ret;
    st_batch_note_t note;
    while ((ret = st_batch_write(&w, s, msgs, outs, 2, &note)) != 0 && fails < 20) {
        fails++;
        assert_false(note.final);
        assert_false(note.probed);
        assert_int_equal(note.poisoned, 0);
    }
    assert_int_equal(ret, 0);
    assert_int_equal(fails, 8);
    st_batch_writer_done(&w, s);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[1].status, OQ_STATUS_SETTLED);
    assert_int_equal(count_status(f, "settled"), 2);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/*
 * The database's message goes into log fields: a message with quotes, a
 * newline and '=' (the user's RAISE, a constraint name) must not forge
 * fields or lines. Before, the poison line embedded it raw inside "...".
 */
static void test_log_escapes_db_message(void **state)
{
    ts_sink_fixture_t *f = *state;
    f->exec(f, "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"
               "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"
               " LANGUAGE plpgsql AS $$ BEGIN"
               "  IF p_order = 'POISON-2' THEN RAISE EXCEPTION USING ERRCODE = '2F005',"
               "   MESSAGE = E'bad \" order=x\\nts=forged level=error msg=\"forged\"'; END IF;"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty);"
               " END $$");
    char path[] = "/tmp/st_pg_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    cm_log_set_fd(fd);
    st_sink_t *s;
    assert_int_equal(pgf_open(f, f->user_sql, &s), 0);
    oq_order_t o[2];
    st_outcome_t oc[2];
    mk_order(&o[0], "ORD-1", "u1");
    mk_order(&o[1], "POISON-2", "u2");
    const oq_order_t *msgs[2] = {&o[0], &o[1]};
    st_outcome_t *outs[2] = {&oc[0], &oc[1]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    assert_int_equal(write_tries(&w, s, msgs, outs, 2, &systemic, &poisoned), ST_POISON_AFTER + 1);
    assert_int_equal(poisoned, 1);
    cm_log_set_fd(2);
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = 0;
    if (!strstr(buf, "poison message"))
        fail_msg("no poison line in: %s", buf);
    /* every line is one of ours: none starts with the forged fields */
    for (char *line = buf; *line; line = strchr(line, '\n') + 1) {
        if (strncmp(line, "ts=forged", 9) == 0)
            fail_msg("forged log line: %s", buf);
        if (!strchr(line, '\n'))
            break;
    }
    assert_non_null(strstr(buf, "reason=\"bad \\\" order=x\\nts=forged level=error msg=\\\"forged\\\"\""));
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/* A cancel whose reason the database cannot encode (22P05: a UTF-8 session on
 * a LATIN1 database) has no savepoint: isolated, it goes in with the plain
 * reason while the batch's orders settle. */
static void test_poison_cancel_reason(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    char q[160];
    snprintf(q, sizeof(q), "CREATE DATABASE l%d ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
                           " TEMPLATE template0", g_dbseq);
    f->exec(f, q);
    snprintf(q, sizeof(q), "ALTER DATABASE l%d SET client_encoding = 'UTF8'", g_dbseq);
    f->exec(f, q);
    char *at = strrchr(c->url, '/');
    snprintf(at + 1, sizeof(c->url) - (size_t)(at + 1 - c->url), "l%d", g_dbseq);
    st_sink_t *s;
    assert_int_equal(pgf_open(f, NULL, &s), 0);
    oq_order_t o[3];
    st_outcome_t oc[3];
    mk_order(&o[0], "ORD-1", "u1");
    mk_cancel(&o[1], "ORD-1", "remboursement \xe2\x82\xac"); /* the euro sign: not in LATIN1 */
    mk_order(&o[2], "ORD-3", "u3");
    const oq_order_t *msgs[3] = {&o[0], &o[1], &o[2]};
    st_outcome_t *outs[3] = {&oc[0], &oc[1], &oc[2]};
    st_batch_writer_t w = {0};
    bool systemic;
    size_t poisoned;
    int tries = write_tries(&w, s, msgs, outs, 3, &systemic, &poisoned);
    if (tries == 0)
        fail_msg("the batch never settled: %s", s->errmsg);
    assert_int_equal(tries, ST_POISON_AFTER + 1);
    assert_int_equal(poisoned, 1);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_int_equal(oc[1].status, OQ_STATUS_CANCELLED);
    assert_true(oc[1].changed);
    assert_string_equal(oc[1].reason, "cancelled");
    assert_int_equal(oc[2].status, OQ_STATUS_SETTLED);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'cancelled'"), 1);
    st_batch_writer_free(&w);
    st_sink_close(s);
}

/*
 * The database (or the server, or the role) says synchronous_commit = off, a
 * common tuning: COMMIT then returns before the WAL is flushed, and a server
 * crash in the next few hundred ms loses the batch, whose Kafka offsets the
 * worker has committed right after that COMMIT: lost orders. The sink's
 * session turns it back on (what synchronous=FULL is to SQLite), and only
 * when it is off: remote_write or remote_apply stay as configured.
 */
static void test_synchronous_commit_forced_on(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    char q[320];
    const char *db = strrchr(c->url, '/') + 1;
    f->exec(f, "CREATE TABLE seen (setting TEXT)");
    const char *sql = "INSERT INTO seen SELECT current_setting('synchronous_commit')"
                      " WHERE $1::text IS NOT NULL";
    const char *configured[] = {"off", "remote_apply"}, *want[] = {"on", "remote_apply"};
    for (int k = 0; k < 2; k++) {
        snprintf(q, sizeof(q), "ALTER DATABASE %s SET synchronous_commit = %s", db, configured[k]);
        f->exec(f, q);
        st_sink_t *s;
        assert_int_equal(pgf_open(f, sql, &s), 0);
        oq_order_t o;
        st_outcome_t oc;
        char id[16];
        snprintf(id, sizeof(id), "SC-%d", k);
        mk_order(&o, id, "u1");
        assert_int_equal(st_sink_begin(s), 0);
        assert_int_equal(st_sink_settle(s, &o, &oc), 0);
        assert_int_equal(st_sink_commit(s), 0);
        st_sink_close(s);
        snprintf(q, sizeof(q), "SELECT count(*) FROM seen WHERE setting = '%s'", want[k]);
        assert_int_equal(f->query_int(f, q), 1);
    }
}

static void test_sink_open_dispatch(void **state)
{
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    st_sink_t *s = NULL;
    char err[256];
    assert_int_equal(st_sink_open(&s, c->url, "/nonexistent", NULL, err, sizeof(err)), 0);
    assert_string_equal(s->ops->name, "postgresql");
    st_sink_close(s);
    /* A bad user statement is refused at open, with the server's words. */
    st_sink_opts_t opts = {.sql = "SELECT no_such_function($1)"};
    assert_true(st_pg_open(&s, c->url, &opts, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "no_such_function"));
}

static void *run_settle(void *arg)
{
    return (void *)(intptr_t)st_settle_run(arg);
}

/* The whole loop into PostgreSQL: orders from the mock broker, some refused by the
   user's function; every order lands once and the failed ones carry the reason. */
static void test_settle_loop_into_pg(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip(); /* librdkafka's thrd_create threads crash TSan (see test_st_settle_e2e.c) */
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    f->exec(f, f->ledger_setup);
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 3), 0);
    enum { N = 300 };
    char *keys[N + 30], *vals[N + 30];
    for (int i = 0; i < N + 30; i++) {
        int id = i < N ? i : i - N; /* 30 copies */
        keys[i] = malloc(16);
        snprintf(keys[i], 16, "s%d", id % 4);
        vals[i] = malloc(200);
        snprintf(vals[i], 200,
                 "{\"order_id\":\"P%05d\",\"sale_id\":\"s%d\",\"user_id\":\"%s%d\",\"qty\":2,"
                 "\"accepted_at\":5,\"node\":1}",
                 id, id % 4, id % 10 == 0 ? "bad" : "good", id);
    }
    assert_int_equal(ts_kafka_produce(k.bootstrap, ST_DEFAULT_TOPIC, (const char *const *)keys,
                                      (const char *const *)vals, N + 30),
                     0);
    for (int i = 0; i < N + 30; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    st_settle_opts_t o = {.brokers = k.bootstrap, .db = c->url, .sql = f->user_sql, .batch = 64};
    st_settle_t *st;
    char err[512] = "";
    if (st_settle_new(&st, &o, err, sizeof(err)) != 0)
        fail_msg("st_settle_new: %s", err);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_settle, st), 0);
    const st_settle_stats_t *s = st_settle_stats(st);
    for (int i = 0; i < 3000 && atomic_load(&s->messages) < N + 30; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    st_settle_stop(st);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
    assert_int_equal(atomic_load(&s->messages), N + 30);
    assert_int_equal(atomic_load(&s->failed), N / 10);
    assert_int_equal(atomic_load(&s->duplicates), 30);
    st_settle_free(st);
    ts_kafka_stop(&k);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), N);
    assert_int_equal(count_status(f, "failed"), N / 10);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                     " AND reason LIKE 'user bad% is blocked'"),
                     N / 10);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), N - N / 10);
    assert_int_equal(f->query_int(f, "SELECT sum(qty) FROM orders"), 2 * N);
}

/* Produces orders P<first>..P<first+n-1> (users good<i>) to the orders topic. */
static void produce_range(const char *bootstrap, int first, int n)
{
    char **keys = calloc((size_t)n, sizeof(*keys)), **vals = calloc((size_t)n, sizeof(*vals));
    for (int i = 0; i < n; i++) {
        keys[i] = malloc(16);
        snprintf(keys[i], 16, "s%d", i % 4);
        vals[i] = malloc(200);
        snprintf(vals[i], 200,
                 "{\"order_id\":\"P%05d\",\"sale_id\":\"s%d\",\"user_id\":\"good%d\",\"qty\":1,"
                 "\"accepted_at\":5,\"node\":1}",
                 first + i, (first + i) % 4, first + i);
    }
    assert_int_equal(ts_kafka_produce(bootstrap, ST_DEFAULT_TOPIC, (const char *const *)keys,
                                      (const char *const *)vals, (size_t)n),
                     0);
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    free(keys);
    free(vals);
}

static void produce_orders(const char *bootstrap, int n)
{
    produce_range(bootstrap, 0, n);
}

/* The loop with a poison order (its --sql raises 2F005 for P00007 only): every
 * other order settles, P00007 is failed with the message, and the stats count
 * it. Before poison isolation no batch holding P00007 ever committed. */
static void test_settle_loop_poison(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    f->exec(f, POISON_FN("p_order = 'P00007'"));
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 3), 0);
    enum { N = 100 };
    produce_orders(k.bootstrap, N);
    st_settle_opts_t o = {.brokers = k.bootstrap, .db = c->url, .sql = f->user_sql, .batch = 32};
    st_settle_t *st;
    char err[512] = "";
    if (st_settle_new(&st, &o, err, sizeof(err)) != 0)
        fail_msg("st_settle_new: %s", err);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_settle, st), 0);
    const st_settle_stats_t *s = st_settle_stats(st);
    for (int i = 0; i < 3000 && atomic_load(&s->messages) < N; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    st_settle_stop(st);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
    assert_int_equal(atomic_load(&s->messages), N);
    assert_int_equal(atomic_load(&s->settled), N - 1);
    assert_int_equal(atomic_load(&s->failed), 1);
    assert_int_equal(atomic_load(&s->poisoned), 1);
    assert_int_equal(atomic_load(&s->stalled), 0);
    assert_true(atomic_load(&s->db_errors) >= ST_POISON_AFTER);
    st_settle_free(st);
    ts_kafka_stop(&k);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                     " AND order_id = 'P00007'"
                                     " AND reason = 'order P00007 cannot be booked'"),
                     1);
    assert_int_equal(count_status(f, "settled"), N - 1);
}

/* The loop with a statement that fails for every order: nothing is failed,
 * nothing committed, and the stall shows in the stats while it lasts. */
static void test_settle_loop_systemic_stall(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    f->exec(f, POISON_FN("true"));
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 1), 0);
    produce_orders(k.bootstrap, 5);
    st_settle_opts_t o = {.brokers = k.bootstrap, .db = c->url, .sql = f->user_sql, .batch = 32};
    st_settle_t *st;
    char err[512] = "";
    if (st_settle_new(&st, &o, err, sizeof(err)) != 0)
        fail_msg("st_settle_new: %s", err);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_settle, st), 0);
    const st_settle_stats_t *s = st_settle_stats(st);
    for (int i = 0; i < 1000 && atomic_load(&s->stalled) == 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&s->stalled), 1);
    st_settle_stop(st);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
    assert_int_equal(atomic_load(&s->messages), 0);
    assert_int_equal(atomic_load(&s->failed), 0);
    assert_int_equal(atomic_load(&s->poisoned), 0);
    assert_int_equal(atomic_load(&s->stalled), 0); /* the stall ended with the stop */
    st_settle_free(st);
    ts_kafka_stop(&k);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 0);
}


/* Polls until *v reaches want (at most ms); returns the last value. */
static uint64_t await_stat(_Atomic uint64_t *v, uint64_t want, int ms)
{
    for (int i = 0; i < ms / 10 && atomic_load(v) < want; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return atomic_load(v);
}

static st_settle_t *loop_start(const char *bootstrap, const char *url, const char *sql,
                               uint32_t stall_after_ms, pthread_t *th)
{
    st_settle_opts_t o = {.brokers = bootstrap, .db = url, .sql = sql, .batch = 32,
                          .stall_after_ms = stall_after_ms};
    st_settle_t *st;
    char err[512] = "";
    if (st_settle_new(&st, &o, err, sizeof(err)) != 0)
        fail_msg("st_settle_new: %s", err);
    assert_int_equal(pthread_create(th, NULL, run_settle, st), 0);
    return st;
}

static void loop_stop(st_settle_t *st, pthread_t th)
{
    st_settle_stop(st);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
}

/*
 * Through the loop: an order settles, then the user's function is replaced by
 * one that fails for every order, and a single order comes. It must stall
 * (flashgate_settle_stalled), not be failed: before, a lone order right after
 * a settled batch was judged poison and failed. Orders arriving meanwhile
 * join the stalled batch and fail too: still a stall. Fixed, all settle.
 */
static void test_settle_loop_broken_statement(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    f->exec(f, f->ledger_setup);
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 1), 0);
    pthread_t th;
    st_settle_t *st = loop_start(k.bootstrap, c->url, f->user_sql, 0, &th);
    st_settle_stats_t *s = (st_settle_stats_t *)st_settle_stats(st);
    produce_range(k.bootstrap, 0, 1);
    assert_int_equal(await_stat(&s->settled, 1, 30000), 1);
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  RAISE EXCEPTION 'ledger is gone' USING ERRCODE = '2F005'; END $$");
    produce_range(k.bootstrap, 1, 1);
    assert_int_equal(await_stat(&s->stalled, 1, 10000), 1);
    produce_range(k.bootstrap, 2, 2);
    /* the new orders join the stalled batch and its next probe: still a stall */
    uint64_t errs = atomic_load(&s->db_errors);
    await_stat(&s->db_errors, errs + ST_POISON_AFTER, 10000);
    assert_int_equal(atomic_load(&s->stalled), 1);
    assert_int_equal(atomic_load(&s->failed), 0);
    assert_int_equal(atomic_load(&s->poisoned), 0);
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty); END $$");
    assert_int_equal(await_stat(&s->messages, 4, 30000), 4);
    loop_stop(st, th);
    assert_int_equal(atomic_load(&s->settled), 4);
    assert_int_equal(atomic_load(&s->failed), 0);
    assert_int_equal(atomic_load(&s->stalled), 0);
    st_settle_free(st);
    ts_kafka_stop(&k);
    assert_int_equal(count_status(f, "settled"), 4);
}

/*
 * Through the loop: a lone poison order stalls (no evidence yet) until another
 * order arrives; that order joins the stalled batch, passes alone in the next
 * probe, and the poison is failed while both others settle.
 */
static void test_settle_loop_lone_poison(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    f->exec(f, POISON_FN("p_order = 'P00001'"));
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 1), 0);
    pthread_t th;
    st_settle_t *st = loop_start(k.bootstrap, c->url, f->user_sql, 0, &th);
    st_settle_stats_t *s = (st_settle_stats_t *)st_settle_stats(st);
    produce_range(k.bootstrap, 0, 1);
    assert_int_equal(await_stat(&s->settled, 1, 30000), 1);
    produce_range(k.bootstrap, 1, 1);
    assert_int_equal(await_stat(&s->stalled, 1, 10000), 1);
    assert_int_equal(atomic_load(&s->failed), 0);
    produce_range(k.bootstrap, 2, 1);
    assert_int_equal(await_stat(&s->messages, 3, 30000), 3);
    loop_stop(st, th);
    assert_int_equal(atomic_load(&s->settled), 2);
    assert_int_equal(atomic_load(&s->failed), 1);
    assert_int_equal(atomic_load(&s->poisoned), 1);
    assert_int_equal(atomic_load(&s->stalled), 0);
    st_settle_free(st);
    ts_kafka_stop(&k);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                     " AND order_id = 'P00001'"),
                     1);
}

/*
 * A database too slow for the batch (57014, statement timeout) is transient:
 * retried, never failing an order. But a batch that keeps timing out must be
 * visible: flashgate_settle_stalled goes to 1 once it has failed for longer
 * than the stall threshold, and back to 0 when it goes through. Before, the
 * gauge stayed 0 (only a probe's "every order fails" set it).
 */
static void test_settle_loop_timeout_stall(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip();
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    char q[160];
    f->exec(f, "CREATE TABLE ledger (order_id TEXT, user_id TEXT, qty INT);"
               "CREATE FUNCTION settle_order(p_order text, p_user text, p_qty int) RETURNS void"
               " LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2);"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty); END $$");
    snprintf(q, sizeof(q), "ALTER DATABASE %s SET statement_timeout = '100ms'",
             strrchr(c->url, '/') + 1);
    f->exec(f, q);
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 1), 0);
    produce_range(k.bootstrap, 0, 3);
    pthread_t th;
    st_settle_t *st = loop_start(k.bootstrap, c->url, f->user_sql, 500, &th);
    st_settle_stats_t *s = (st_settle_stats_t *)st_settle_stats(st);
    assert_int_equal(await_stat(&s->stalled, 1, 30000), 1);
    assert_int_equal(atomic_load(&s->messages), 0);
    assert_int_equal(atomic_load(&s->failed), 0);
    assert_int_equal(atomic_load(&s->poisoned), 0);
    f->exec(f, "CREATE OR REPLACE FUNCTION settle_order(p_order text, p_user text, p_qty int)"
               " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO ledger VALUES (p_order, p_user, p_qty); END $$");
    assert_int_equal(await_stat(&s->messages, 3, 30000), 3);
    loop_stop(st, th);
    assert_int_equal(atomic_load(&s->settled), 3);
    assert_int_equal(atomic_load(&s->failed), 0);
    assert_int_equal(atomic_load(&s->stalled), 0);
    st_settle_free(st);
    ts_kafka_stop(&k);
}

/* Runs one settle loop (group `group`, no user SQL) until it has processed `want`
   messages; returns its counters. */
static st_settle_stats_t settle_until(const char *bootstrap, const char *url, const char *group,
                                      uint64_t want)
{
    st_settle_opts_t o = {.brokers = bootstrap, .db = url, .group = group, .batch = 100};
    st_settle_t *st;
    char err[512] = "";
    if (st_settle_new(&st, &o, err, sizeof(err)) != 0)
        fail_msg("st_settle_new: %s", err);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_settle, st), 0);
    const st_settle_stats_t *s = st_settle_stats(st);
    for (int i = 0; i < 3000 && atomic_load(&s->messages) < want; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    st_settle_stop(st);
    void *ret;
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, 0);
    st_settle_stats_t out;
    memset(&out, 0, sizeof(out));
    out.messages = atomic_load(&s->messages);
    out.settled = atomic_load(&s->settled);
    out.cancelled = atomic_load(&s->cancelled);
    out.duplicates = atomic_load(&s->duplicates);
    out.failed = atomic_load(&s->failed);
    st_settle_free(st);
    return out;
}

/* The batched path (no --sql: one INSERT per run of orders) through the whole loop:
   copies of an order inside the same batch, a cancel between two copies of its
   order, a cancel before its order, and then every message delivered again to a second consumer group (a
   re-delivery after a crash before the offset commit): each order is recorded
   once, the cancelled one stays cancelled, the second pass changes nothing. */
static void test_settle_loop_batched_copies(void **state)
{
#if defined(__SANITIZE_THREAD__)
    skip(); /* librdkafka's thrd_create threads crash TSan (see test_st_settle_e2e.c) */
#endif
    ts_sink_fixture_t *f = *state;
    pg_ctx_t *c = f->ctx;
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 1), 0); /* one partition: one order of messages */
    enum { N = 200, M = N + N / 4 + 4 };
    char *keys[M], *vals[M];
    int m = 0;
    for (int i = 0; i < N; i++) {
        int copies = i % 4 == 0 ? 2 : 1; /* a copy right behind: the same batch */
        for (int j = 0; j < copies; j++) {
            keys[m] = strdup("s1");
            vals[m] = malloc(200);
            snprintf(vals[m++], 200,
                     "{\"order_id\":\"Q%05d\",\"sale_id\":\"s1\",\"user_id\":\"u%d\","
                     "\"qty\":1,\"accepted_at\":5,\"node\":1}",
                     i, i);
        }
        if (i == 50) { /* Q00050 was just settled; cancel it, then a late copy of it */
            keys[m] = strdup("s1");
            vals[m++] = strdup("{\"type\":\"cancel\",\"order_id\":\"Q00050\",\"sale_id\":\"s1\","
                               "\"user_id\":\"u50\",\"qty\":1,\"reason\":\"user asked\"}");
            keys[m] = strdup("s1");
            vals[m++] = strdup("{\"order_id\":\"Q00050\",\"sale_id\":\"s1\",\"user_id\":\"u50\","
                               "\"qty\":1,\"accepted_at\":5,\"node\":1}");
            /* A cancel before its order, in the middle of a run: never settled. */
            keys[m] = strdup("s1");
            vals[m++] = strdup("{\"type\":\"cancel\",\"order_id\":\"Q09999\",\"sale_id\":\"s1\","
                               "\"user_id\":\"u9\",\"qty\":1,\"reason\":\"first\"}");
            keys[m] = strdup("s1");
            vals[m++] = strdup("{\"order_id\":\"Q09999\",\"sale_id\":\"s1\",\"user_id\":\"u9\","
                               "\"qty\":1,\"accepted_at\":5,\"node\":1}");
        }
    }
    assert_int_equal(m, M);
    assert_int_equal(ts_kafka_produce(k.bootstrap, ST_DEFAULT_TOPIC, (const char *const *)keys,
                                      (const char *const *)vals, M),
                     0);
    for (int i = 0; i < M; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    st_settle_stats_t a = settle_until(k.bootstrap, c->url, "g1", M);
    assert_int_equal(a.messages, M);
    assert_int_equal(a.settled, N);
    assert_int_equal(a.cancelled, 2);
    assert_int_equal(a.duplicates, M - N - 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), N + 1);
    assert_int_equal(count_status(f, "cancelled"), 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'Q00050'"
                                     " AND status = 'cancelled' AND reason = 'user asked'"),
                     1);
    /* Everything once more: nothing changes. */
    st_settle_stats_t b = settle_until(k.bootstrap, c->url, "g2", M);
    assert_int_equal(b.messages, M);
    assert_int_equal(b.settled + b.cancelled + b.failed, 0);
    assert_int_equal(b.duplicates, M);
    ts_kafka_stop(&k);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), N + 1);
    assert_int_equal(count_status(f, "settled"), N - 1);
}

static void test_bench_batch500(void **state)
{
    case_bench(*state, "postgresql", 20000, 500);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--only") == 0) /* one test (or a glob of them) */
        cmocka_set_test_filter(argv[2]);
    if (!ts_pg_available()) {
        fprintf(stderr, "FAIL: PostgreSQL server binaries not installed (deploy/install-deps.sh)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_after_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_after_cancel_user_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reprepare_after_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql_two_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql_long_utf8_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_order_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_copy_listed_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_systemic_not_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_lone_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_needs_evidence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_at_commit_deferred_fk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_at_commit_deferred_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_at_commit_deferred_trigger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_transient_not_poisoned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_escapes_db_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poison_cancel_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_synchronous_commit_forced_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sink_open_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bench_batch500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_into_pg, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_poison, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_systemic_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_broken_statement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_lone_poison, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_timeout_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_loop_batched_copies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
