/*
 * Settlement-sink cases shared by test_st_sqlite.c and test_st_pg.c: the same
 * contract (idempotency, batch rollback, the user's SQL failing some orders,
 * cancellation) run against each real database. Included by exactly those two
 * files; each provides a ts_sink_fixture_t.
 */
#ifndef ST_SINK_CASES_H
#define ST_SINK_CASES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/cm_time.h"
#include "settle/st_sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ts_sink_fixture {
    /* Opens a sink on a fresh, empty database with the user's SQL (NULL = none). */
    int (*open)(struct ts_sink_fixture *f, const char *sql, st_sink_t **out);
    /* Runs a query returning one integer (first column of the first row). */
    long (*query_int)(struct ts_sink_fixture *f, const char *sql);
    /* Runs a statement on a separate connection; asserts success. */
    void (*exec)(struct ts_sink_fixture *f, const char *sql);
    /* Creates table ledger(order_id, user_id, qty) and makes users "bad*" fail. */
    const char *ledger_setup;
    /* The user statement that writes one ledger row per order. */
    const char *user_sql;
    void *ctx;
} ts_sink_fixture_t;

static void mk_order(oq_order_t *o, const char *id, const char *user)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->order_id, sizeof(o->order_id), "%s", id);
    snprintf(o->sale_id, sizeof(o->sale_id), "s1");
    snprintf(o->user_id, sizeof(o->user_id), "%s", user);
    o->qty = 1;
    o->accepted_at_ms = 1700000000000 + (int64_t)strlen(id);
    o->node_id = 3;
}

static void mk_cancel(oq_order_t *o, const char *id, const char *reason)
{
    mk_order(o, id, "u-cancel");
    o->type = OQ_MSG_CANCEL;
    o->accepted_at_ms = 0;
    snprintf(o->reason, sizeof(o->reason), "%s", reason);
}

/* Poison isolation (st_batch_write): the batch tried as the settle loop does. */
#define POISON_MAX_TRIES 10

/* Tries the batch up to POISON_MAX_TRIES times; returns the try that
 * committed (1-based) or 0. *systemic: a probe found every message failing. */
static int write_tries(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                       st_outcome_t *const *outs, size_t n, bool *systemic, size_t *poisoned)
{
    *systemic = false;
    *poisoned = 0;
    for (int t = 1; t <= POISON_MAX_TRIES; t++) {
        st_batch_note_t note;
        int ret = st_batch_write(w, s, msgs, outs, n, &note);
        *systemic |= note.systemic;
        *poisoned += note.poisoned;
        if (ret == 0) {
            st_batch_writer_done(w, s);
            return t;
        }
        assert_true(note.final); /* 2F005 is not transient */
    }
    st_batch_writer_done(w, s);
    return 0;
}

static long count_status(ts_sink_fixture_t *f, const char *status)
{
    char q[128];
    snprintf(q, sizeof(q), "SELECT count(*) FROM orders WHERE status = '%s'", status);
    return f->query_int(f, q);
}

static void case_idempotent(ts_sink_fixture_t *f)
{
    st_sink_t *s;
    assert_int_equal(f->open(f, NULL, &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    mk_order(&o, "ORD-A", "u1");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_SETTLED);
    assert_true(oc.changed);
    /* A copy in the same batch changes nothing. */
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_SETTLED);
    assert_false(oc.changed);
    assert_int_equal(st_sink_commit(s), 0);
    /* And a copy in a later batch (a redelivery after a crash). */
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_false(oc.changed);
    assert_int_equal(oc.status, OQ_STATUS_SETTLED);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 1);
    assert_int_equal(f->query_int(f, "SELECT qty FROM orders WHERE order_id = 'ORD-A'"), 1);
    assert_int_equal(f->query_int(f, "SELECT node FROM orders WHERE order_id = 'ORD-A'"), 3);
    st_sink_close(s);
}

static void case_rollback(ts_sink_fixture_t *f)
{
    st_sink_t *s;
    assert_int_equal(f->open(f, NULL, &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    char id[32];
    assert_int_equal(st_sink_begin(s), 0);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "RB-%d", i);
        mk_order(&o, id, "u1");
        assert_int_equal(st_sink_settle(s, &o, &oc), 0);
        assert_true(oc.changed);
    }
    assert_int_equal(st_sink_rollback(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 0);
    /* The retried batch settles them all, as new. */
    assert_int_equal(st_sink_begin(s), 0);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "RB-%d", i);
        mk_order(&o, id, "u1");
        assert_int_equal(st_sink_settle(s, &o, &oc), 0);
        assert_true(oc.changed);
    }
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 10);
    /* Rollback with no batch open is harmless. */
    assert_int_equal(st_sink_rollback(s), 0);
    st_sink_close(s);
}

static void case_user_sql(ts_sink_fixture_t *f)
{
    f->exec(f, f->ledger_setup);
    st_sink_t *s;
    assert_int_equal(f->open(f, f->user_sql, &s), 0);
    const char *users[] = {"good1", "bad1", "good2", "bad2", "good3"};
    oq_order_t o;
    st_outcome_t oc;
    char id[32];
    assert_int_equal(st_sink_begin(s), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "US-%d", i);
        mk_order(&o, id, users[i]);
        assert_int_equal(st_sink_settle(s, &o, &oc), 0);
        assert_true(oc.changed);
        if (users[i][0] == 'b') {
            assert_int_equal(oc.status, OQ_STATUS_FAILED);
            assert_true(strlen(oc.reason) > 0);
            printf("# failed %s: reason \"%s\"\n", users[i], oc.reason);
        } else {
            assert_int_equal(oc.status, OQ_STATUS_SETTLED);
            assert_string_equal(oc.reason, "");
        }
    }
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 3);
    assert_int_equal(count_status(f, "settled"), 3);
    assert_int_equal(count_status(f, "failed"), 2);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                     " AND reason IS NOT NULL AND reason <> ''"),
                     2);
    /* A copy of a failed order stays failed with the same reason, and the user's
       statement does not run again. */
    assert_int_equal(st_sink_begin(s), 0);
    mk_order(&o, "US-1", "bad1");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_false(oc.changed);
    assert_int_equal(oc.status, OQ_STATUS_FAILED);
    assert_true(strlen(oc.reason) > 0);
    mk_order(&o, "US-0", "good1");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_false(oc.changed);
    assert_int_equal(oc.status, OQ_STATUS_SETTLED);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 3);
    st_sink_close(s);
}

static void case_cancel(ts_sink_fixture_t *f)
{
    st_sink_t *s;
    assert_int_equal(f->open(f, NULL, &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    assert_int_equal(st_sink_begin(s), 0);
    mk_order(&o, "C-1", "u1");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(st_sink_commit(s), 0);

    assert_int_equal(st_sink_begin(s), 0);
    mk_cancel(&o, "C-1", "user asked");
    assert_int_equal(st_sink_cancel(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_CANCELLED);
    assert_true(oc.changed);
    assert_string_equal(oc.reason, "user asked");
    /* Second cancel: nothing changes, same final status reported. */
    assert_int_equal(st_sink_cancel(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_CANCELLED);
    assert_false(oc.changed);
    /* A late copy of the order does not resurrect it. */
    mk_order(&o, "C-1", "u1");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_CANCELLED);
    assert_false(oc.changed);
    /* Cancel before the order: recorded, and the order is never settled. */
    mk_cancel(&o, "C-2", "");
    assert_int_equal(st_sink_cancel(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_CANCELLED);
    assert_true(oc.changed);
    mk_order(&o, "C-2", "u2");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_CANCELLED);
    assert_false(oc.changed);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(count_status(f, "cancelled"), 2);
    assert_int_equal(count_status(f, "settled"), 0);
    assert_int_equal(f->query_int(f, "SELECT accepted_at FROM orders WHERE order_id = 'C-2'"), 0);
    st_sink_close(s);
}

static void case_cancel_failed(ts_sink_fixture_t *f)
{
    f->exec(f, f->ledger_setup);
    st_sink_t *s;
    assert_int_equal(f->open(f, f->user_sql, &s), 0);
    oq_order_t o;
    st_outcome_t oc;
    assert_int_equal(st_sink_begin(s), 0);
    mk_order(&o, "CF-1", "bad9");
    assert_int_equal(st_sink_settle(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_FAILED);
    mk_cancel(&o, "CF-1", "too late");
    assert_int_equal(st_sink_cancel(s, &o, &oc), 0);
    assert_int_equal(oc.status, OQ_STATUS_FAILED); /* a failed order stays failed */
    assert_false(oc.changed);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(count_status(f, "failed"), 1);
    st_sink_close(s);
}

/* st_sink_settle_many outcomes against the one-by-one contract: a copy inside
   the run, a run re-delivered after its commit, a run rolled back and retried,
   an order cancelled before its run, and ids and users that need quoting. */
static void case_settle_many(ts_sink_fixture_t *f)
{
    st_sink_t *s;
    assert_int_equal(f->open(f, NULL, &s), 0);
    enum { N = 6 };
    static const char *const ids[N] = {"M-A", "M-B", "M-A", "M-\"q\\", "M-B", "M-{x, y}"};
    static const char *const users[N] = {"u1", "u2", "u1", "q\"uo\\te", "u2", "NULL"};
    static const bool fresh[N] = {true, true, false, true, false, true};
    oq_order_t o[N + 1];
    st_outcome_t oc[N + 1];
    const oq_order_t *op[N + 1];
    st_outcome_t *ocp[N + 1];
    for (int i = 0; i < N + 1; i++) {
        if (i < N)
            mk_order(&o[i], ids[i], users[i]);
        op[i] = &o[i];
        ocp[i] = &oc[i];
    }
    o[5].node_id = OQ_NODE_UNKNOWN;
    /* Rolled back: nothing stays, and the retry settles every first copy as new. */
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(st_sink_begin(s), 0);
        assert_int_equal(st_sink_settle_many(s, op, ocp, N), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(oc[i].status, OQ_STATUS_SETTLED);
            assert_int_equal(oc[i].changed, fresh[i]);
            assert_string_equal(oc[i].reason, "");
        }
        if (pass == 0) {
            assert_int_equal(st_sink_rollback(s), 0);
            assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 0);
        }
    }
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 4);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'M-\"q\\'"
                                     " AND user_id = 'q\"uo\\te'"),
                     1);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'M-{x, y}'"
                                     " AND user_id = 'NULL' AND node IS NULL"),
                     1);
    assert_int_equal(f->query_int(f, "SELECT node FROM orders WHERE order_id = 'M-A'"), 3);
    assert_int_equal(f->query_int(f, "SELECT sum(accepted_at) - 4 * 1700000000000 FROM orders"),
                     3 + 3 + 5 + 8);
    /* Cancelled before its order arrives: the run reports it, does not settle it. */
    oq_order_t c;
    mk_cancel(&c, "M-C", "gone");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_cancel(s, &c, &oc[0]), 0);
    assert_int_equal(st_sink_commit(s), 0);
    /* The whole run again (a re-delivery after a crash before the offsets),
       plus the cancelled order and one new order: only the new one changes. */
    mk_order(&o[N], "M-C", "u3");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle_many(s, op, ocp, N + 1), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(oc[i].status, OQ_STATUS_SETTLED);
        assert_false(oc[i].changed);
    }
    assert_int_equal(oc[N].status, OQ_STATUS_CANCELLED);
    assert_false(oc[N].changed);
    assert_string_equal(oc[N].reason, "gone");
    mk_order(&o[0], "M-D", "u4");
    assert_int_equal(st_sink_settle_many(s, op, ocp, 1), 0);
    assert_true(oc[0].changed);
    assert_int_equal(st_sink_settle_many(s, op, ocp, 0), 0);
    assert_int_equal(st_sink_commit(s), 0);
    assert_int_equal(count_status(f, "settled"), 5);
    assert_int_equal(count_status(f, "cancelled"), 1);
    st_sink_close(s);
}

/*
 * The gateway's relay sends an order to Kafka again (relay.retention_resent:
 * the broker dropped it below its low watermark before its outcome came back)
 * after settlement already cancelled it: a settled order cancelled since, and
 * an order whose cancel came first (recorded as a cancelled row). Each late
 * copy, in a later batch, in a run of orders (st_sink_settle_many: one INSERT
 * in PostgreSQL) and one by one, reports the recorded `cancelled` with the
 * first cancel's reason as a duplicate (changed false: counted once, and its
 * outcome is a repeat, which the gateway ignores: its units went back once),
 * rewrites nothing (updated_at stays, on the fake clock), and with --sql the
 * user's statement does not run for it.
 */
static void case_resent_after_cancel(ts_sink_fixture_t *f, bool with_sql)
{
    if (with_sql)
        f->exec(f, f->ledger_setup);
    cm_time_set_fake(true, 1000 * 1000000000ull, 1700000000000);
    st_sink_t *s;
    assert_int_equal(f->open(f, with_sql ? f->user_sql : NULL, &s), 0);
    enum { N = 5 };
    oq_order_t o[N], c;
    st_outcome_t oc[N];
    const oq_order_t *op[N];
    st_outcome_t *ocp[N];
    for (int i = 0; i < N; i++) {
        op[i] = &o[i];
        ocp[i] = &oc[i];
    }
    /* batch 1: R-1 settles */
    mk_order(&o[0], "R-1", "u1");
    assert_int_equal(st_sink_begin(s), 0);
    assert_int_equal(st_sink_settle_many(s, op, ocp, 1), 0);
    assert_int_equal(oc[0].status, OQ_STATUS_SETTLED);
    assert_true(oc[0].changed);
    assert_int_equal(st_sink_commit(s), 0);
    /* batch 2: R-1 cancelled; the cancel of R-2 comes before R-2 */
    cm_time_advance_fake(1000 * 1000000ull);
    assert_int_equal(st_sink_begin(s), 0);
    mk_cancel(&c, "R-1", "user asked");
    assert_int_equal(st_sink_cancel(s, &c, &oc[0]), 0);
    assert_int_equal(oc[0].status, OQ_STATUS_CANCELLED);
    assert_true(oc[0].changed);
    mk_cancel(&c, "R-2", "timeout");
    c.node_id = OQ_NODE_UNKNOWN; /* as decoded: a cancel names no node */
    assert_int_equal(st_sink_cancel(s, &c, &oc[0]), 0);
    assert_int_equal(oc[0].status, OQ_STATUS_CANCELLED);
    assert_true(oc[0].changed);
    assert_int_equal(st_sink_commit(s), 0);
    const long cancelled_at = f->query_int(f, "SELECT max(updated_at) FROM orders");
    assert_int_equal(cancelled_at, 1700000001000);
    /* batches 3 and 4: the resends, twice each, beside a new order R-3; first as
       one run, then one by one */
    static const char *const ids[N] = {"R-1", "R-2", "R-3", "R-1", "R-2"};
    static const char *const users[N] = {"u1", "u2", "u3", "u1", "u2"};
    static const oq_status_t want[N] = {OQ_STATUS_CANCELLED, OQ_STATUS_CANCELLED, OQ_STATUS_SETTLED,
                                        OQ_STATUS_CANCELLED, OQ_STATUS_CANCELLED};
    static const char *const reasons[N] = {"user asked", "timeout", "", "user asked", "timeout"};
    for (int pass = 0; pass < 2; pass++) {
        cm_time_advance_fake(1000 * 1000000ull);
        for (int i = 0; i < N; i++)
            mk_order(&o[i], ids[i], users[i]);
        assert_int_equal(st_sink_begin(s), 0);
        if (pass == 0) {
            assert_int_equal(st_sink_settle_many(s, op, ocp, N), 0);
        } else {
            for (int i = 0; i < N; i++)
                assert_int_equal(st_sink_settle(s, &o[i], &oc[i]), 0);
        }
        assert_int_equal(st_sink_commit(s), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(oc[i].status, want[i]);
            assert_int_equal(oc[i].changed, pass == 0 && i == 2); /* only R-3, once */
            assert_string_equal(oc[i].reason, reasons[i]);
        }
    }
    cm_time_set_fake(false, 0, 0);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), 3);
    assert_int_equal(count_status(f, "cancelled"), 2);
    assert_int_equal(count_status(f, "settled"), 1);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'R-1'"
                                     " AND reason = 'user asked' AND accepted_at > 0 AND node = 3"),
                     1);
    /* R-2 keeps the cancel's row: never settled, so never accepted here */
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id = 'R-2'"
                                     " AND reason = 'timeout' AND accepted_at = 0"
                                     " AND node IS NULL AND user_id = 'u-cancel'"),
                     1);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders WHERE order_id <> 'R-3'"
                                     " AND updated_at <> 1700000001000"),
                     0);
    if (with_sql) {
        assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger WHERE order_id = 'R-1'"), 1);
        assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger WHERE order_id = 'R-2'"), 0);
        assert_int_equal(f->query_int(f, "SELECT count(*) FROM ledger"), 2);
    }
    st_sink_close(s);
}

/* Settles n orders in batches of `batch` and prints the rate (for the bench). */
static void case_bench(ts_sink_fixture_t *f, const char *label, int n, int batch)
{
    st_sink_t *s;
    assert_int_equal(f->open(f, NULL, &s), 0);
    oq_order_t *o = calloc((size_t)batch, sizeof(*o));
    st_outcome_t *oc = calloc((size_t)batch, sizeof(*oc));
    const oq_order_t **op = calloc((size_t)batch, sizeof(*op));
    st_outcome_t **ocp = calloc((size_t)batch, sizeof(*ocp));
    assert_non_null(o);
    assert_non_null(oc);
    assert_non_null(op);
    assert_non_null(ocp);
    char id[32], user[32];
    uint64_t t0 = cm_mono_ns();
    for (int i = 0; i < n; i += batch) {
        int k = 0;
        for (int j = i; j < i + batch && j < n; j++, k++) {
            snprintf(id, sizeof(id), "B%08d", j);
            snprintf(user, sizeof(user), "user%d", j);
            mk_order(&o[k], id, user);
            op[k] = &o[k];
            ocp[k] = &oc[k];
        }
        /* As the settle loop writes a batch with no cancel in it. */
        assert_int_equal(st_sink_begin(s), 0);
        assert_int_equal(st_sink_settle_many(s, op, ocp, (size_t)k), 0);
        assert_int_equal(st_sink_commit(s), 0);
    }
    free(o);
    free(oc);
    free(op);
    free(ocp);
    double secs = (double)(cm_mono_ns() - t0) / 1e9;
    printf("# bench: %s settle, batch %d: %d orders in %.3f s = %.0f orders/s\n", label, batch, n,
           secs, n / secs);
    assert_int_equal(f->query_int(f, "SELECT count(*) FROM orders"), n);
    st_sink_close(s);
}

#endif
