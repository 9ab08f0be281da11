/*
 * PostgreSQL settlement sink (libpq, synchronous, prepared statements).
 *
 * Without --sql, the orders of a batch go in one statement per run of orders
 * (settle_many): the first copy of each order id in the run (copies are
 * dropped here), their fields as six text-format arrays, unnest()ed into one
 * INSERT ... SELECT ... WHERE (the id in orders) IS NULL RETURNING order_id,
 * then one SELECT for the ids that were not inserted (copies). That
 * is 2-3 round trips and one executor run for a batch of 500 instead of
 * 500-1000 of each: the per-order round trip capped the sink at 6-16k
 * orders/s on loopback (BENCH_ONLY=settle sh bench/bench.sh). The test is a scalar
 * subquery, not NOT EXISTS: the planner turned that into a hash anti join
 * reading the whole table once per batch whenever the batch looked big beside
 * the table's statistics (a new table); the subquery probes the primary key
 * once per order whatever the statistics say.
 *
 * Not ON CONFLICT DO NOTHING: its speculative insertion (a lock, a second
 * index probe and a confirm WAL record per row) cost ~1 us of the server's
 * ~10 us per order (BENCH_ONLY=settle-stmt sh bench/bench.sh). The primary key
 * still decides everything: an id committed before the statement's snapshot
 * is skipped by that probe; one that another transaction inserts
 * meanwhile (two workers on the same order during a rebalance) fails the
 * statement with a unique violation (23505), the batch is rolled back and
 * retried, and that retry (only) uses ON CONFLICT DO NOTHING, which waits
 * for the other transaction and skips its rows. Exactly once either way.
 *
 * A batch is one BEGIN ... COMMIT. The user's statement (--sql) runs inside a
 * SAVEPOINT per order with $1 order_id text, $2 sale_id text, $3 user_id text,
 * $4 qty integer, $5 accepted_at bigint. SQLSTATE classes 22 (data exception),
 * 23 (integrity constraint), 27/09 (triggered actions), 44 (check option) and
 * P0 (PL/pgSQL RAISE) reject that one order (FAILED, with the server's message
 * as reason); anything else (connection lost, serialization failure, ...)
 * fails the batch, which the caller rolls back and retries (an error that a
 * retry meets again is "final", st_sink_t.err_final: a batch that keeps
 * failing with one is probed for a poison order, st_batch_write). A lost connection
 * is re-established by rollback() (or begin()), and begin() prepares the
 * statements again whenever the session may lack some: after a reconnect,
 * after a round of them that failed part way, after a "does not exist".
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"
#include "settle/st_sink.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Type OIDs from pg_type.h (stable across releases). */
#define OID_INT4 23
#define OID_INT8 20
#define OID_TEXT 25
#define OID_INT4_ARRAY 1007
#define OID_INT8_ARRAY 1016
#define OID_TEXT_ARRAY 1009

/* A growable text buffer (array literals); kept between batches. */
typedef struct pg_buf {
    char *p;
    size_t len, cap;
} pg_buf_t;

/* The array parameters of a run: order_id, sale_id, user_id, qty, accepted_at, node. */
#define PG_MANY_COLS 6

typedef struct st_pg {
    st_sink_t base;
    PGconn *conn;
    char *conninfo;
    char *user_sql;
    pg_buf_t cols[PG_MANY_COLS];
    pg_buf_t ids;         /* the ids to look up after the insert */
    size_t *pending;      /* their positions in the run */
    bool *claimed;        /* per returned id: its first copy in the run took it */
    const char **ins_ids; /* the ids the insert returned, sorted */
    size_t pend_cap, ins_cap;
    struct pg_pos *sorted; /* the run by order id, to find first copies (pend_cap entries) */
    bool *first;           /* per order of the run: the first copy of its id (pend_cap) */
    bool on_conflict_next; /* a unique violation failed the last batch: retry with ON CONFLICT */
    bool prepared;         /* the session holds every statement: false after a (re)connect */
} st_pg_t;

/* An order of the run and its position, sorted by id then position. */
typedef struct pg_pos {
    const char *id;
    size_t i;
} pg_pos_t;

/*
 * COLLATE "C" on the ids (byte order, as SQLite's BINARY): they are ASCII
 * tokens, and the primary key's comparisons then are memcmp, not strcoll
 * (~0.8 us of the server's CPU per order: BENCH_ONLY=settle-stmt sh bench/bench.sh). The
 * per-sale index is on sale_id alone: (sale_id, user_id) put every new row at
 * a random place in the index and cost 2.5 us per order; a sale's rows under
 * one key go in at its end. Tables created by an older version keep their
 * definitions (IF NOT EXISTS) and work the same, at the old cost.
 */
static const char pg_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS orders ("
    " order_id TEXT COLLATE \"C\" PRIMARY KEY,"
    " sale_id TEXT COLLATE \"C\" NOT NULL,"
    " user_id TEXT COLLATE \"C\" NOT NULL,"
    " qty INTEGER NOT NULL,"
    " accepted_at BIGINT NOT NULL,"
    " node INT,"
    " status TEXT NOT NULL CHECK (status IN ('settled','failed','cancelled')),"
    " reason TEXT,"
    " settled_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS orders_sale ON orders(sale_id);";

static bool is_order_error(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return false;
    static const char *const classes[] = {"22", "23", "27", "09", "44", "P0"};
    for (size_t i = 0; i < CM_ARRAY_LEN(classes); i++)
        if (strncmp(sqlstate, classes[i], 2) == 0)
            return true;
    return false;
}

/*
 * Errors that a retry may not meet again (st_sink_t.err_final is false for
 * them): connection exceptions (08), transaction rollbacks: deadlock,
 * serialization failure (40), resources (53), operator intervention (57:
 * statement timeout 57014, admin/crash shutdown 57P01-03), lock not available
 * (55P03), a prepared statement gone (26000, prepared again), a unique
 * violation of settle_many (23505 from another worker's batch in flight: the
 * retry uses ON CONFLICT; at COMMIT a 23505 is final, fail_deferred), system
 * errors (58) and internal errors (XX).
 * Anything else (42xxx from the user's dynamic SQL, 2F005, 54001, 22P05 of a
 * cancel's reason) comes back the same way at each try: it is final, and a
 * batch that keeps failing with it is probed for a poison order.
 */
static bool is_transient_error(const char *state)
{
    if (!state || strlen(state) != 5)
        return true;
    static const char *const classes[] = {"08", "40", "53", "57", "58", "XX"};
    for (size_t i = 0; i < CM_ARRAY_LEN(classes); i++)
        if (strncmp(state, classes[i], 2) == 0)
            return true;
    return strcmp(state, "55P03") == 0 || strcmp(state, "26000") == 0 ||
           strcmp(state, "23505") == 0;
}

/* Records the error of `res` (or of the connection) and returns the cm_err_t for it. */
static int fail(st_pg_t *s, PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "26000") == 0) /* a prepared statement is gone: prepare again */
        s->prepared = false;
    s->base.err_final = PQstatus(s->conn) == CONNECTION_OK && !is_transient_error(state);
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    oq_reason_copy(s->base.err_reason, sizeof(s->base.err_reason), primary ? primary : "");
    snprintf(s->base.errmsg, sizeof(s->base.errmsg), "postgresql %s: %s", what,
             msg && *msg ? msg : PQerrorMessage(s->conn));
    size_t n = strlen(s->base.errmsg);
    while (n > 0 && s->base.errmsg[n - 1] == '\n')
        s->base.errmsg[--n] = 0;
    PQclear(res);
    return PQstatus(s->conn) == CONNECTION_OK ? CM_EIO : CM_EBACKEND;
}

static int exec_cmd(st_pg_t *s, const char *sql)
{
    PGresult *res = PQexec(s->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail(s, res, sql);
    PQclear(res);
    return 0;
}

static int prepare_one(st_pg_t *s, const char *name, const char *sql, int n, const Oid *types)
{
    PGresult *res = PQprepare(s->conn, name, sql, n, types);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail(s, res, name);
    PQclear(res);
    return 0;
}

/*
 * Prepared statements belong to the session: done at connect, and at the next
 * begin whenever the session may lack some (a reconnect, or an earlier round
 * that failed part way: a lock timeout behind an ALTER TABLE, the user's
 * function being replaced). That round may have left some of them, so this
 * one starts from none.
 */
static int prepare_all(st_pg_t *s)
{
    static const Oid ins_types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_INT8,
                                    OID_INT4, OID_TEXT, OID_TEXT, OID_INT8};
    static const Oid user_types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_INT8};
    static const Oid cancel_types[] = {OID_TEXT, OID_INT8, OID_TEXT};
    s->prepared = false;
    int ret;
    /*
     * Not a prepared statement, but a setting the session must hold before its
     * first batch, so here, where every new session passes. The worker commits
     * a batch's Kafka offsets as soon as its COMMIT returns, so COMMIT must
     * mean flushed (as synchronous=FULL in SQLite); synchronous_commit = off (a
     * database, role or server default, a common tuning) returned before the
     * WAL flush, and a server crash then lost batches whose offsets were
     * committed. Only "off" is raised, to "on": "local" flushes too, and
     * remote_write / remote_apply ask for more.
     */
    if ((ret = exec_cmd(s, "SELECT set_config('synchronous_commit', 'on', false)"
                           " WHERE current_setting('synchronous_commit') = 'off'")))
        return ret;
    if ((ret = exec_cmd(s, "DEALLOCATE ALL")) ||
        (ret = prepare_one(s, "st_sel", "SELECT status, reason FROM orders WHERE order_id = $1", 1,
                           user_types)) ||
        (ret = prepare_one(s, "st_ins",
                           "INSERT INTO orders (order_id, sale_id, user_id, qty, accepted_at, node,"
                           " status, reason, settled_at, updated_at)"
                           " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
                           " ON CONFLICT (order_id) DO NOTHING",
                           9, ins_types)) ||
        (ret = prepare_one(s, "st_cancel",
                           "UPDATE orders SET status = 'cancelled', reason = $1, updated_at = $2"
                           " WHERE order_id = $3 AND status = 'settled'",
                           3, cancel_types)))
        return ret;
    /* settle_many: the run's first copies, each id once (see the top). */
    static const Oid many_types[] = {OID_TEXT_ARRAY, OID_TEXT_ARRAY, OID_TEXT_ARRAY,
                                     OID_INT4_ARRAY, OID_INT8_ARRAY, OID_INT4_ARRAY, OID_INT8};
    static const Oid ids_types[] = {OID_TEXT_ARRAY};
    if ((ret = prepare_one(s, "st_ins_new",
                           "INSERT INTO orders (order_id, sale_id, user_id, qty, accepted_at, node,"
                           " status, reason, settled_at, updated_at)"
                           " SELECT o, sa, u, q, a, n, 'settled', NULL, $7, $7"
                           " FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[],"
                           " $5::int8[], $6::int4[]) AS b(o, sa, u, q, a, n)"
                           " WHERE (SELECT 1 FROM orders x WHERE x.order_id = b.o) IS NULL"
                           " RETURNING order_id",
                           7, many_types)) ||
        (ret = prepare_one(s, "st_ins_many",
                           "INSERT INTO orders (order_id, sale_id, user_id, qty, accepted_at, node,"
                           " status, reason, settled_at, updated_at)"
                           " SELECT o, sa, u, q, a, n, 'settled', NULL, $7, $7"
                           " FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[],"
                           " $5::int8[], $6::int4[]) WITH ORDINALITY AS b(o, sa, u, q, a, n, i)"
                           " ORDER BY i"
                           " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                           7, many_types)) ||
        (ret = prepare_one(s, "st_sel_many",
                           "SELECT b.i, o.status, o.reason"
                           " FROM unnest($1::text[]) WITH ORDINALITY AS b(id, i)"
                           " JOIN orders o ON o.order_id = b.id",
                           1, ids_types)))
        return ret;
    if (s->user_sql && (ret = prepare_one(s, "st_user", s->user_sql, 5, user_types)))
        return ret;
    s->prepared = true;
    return 0;
}

static int connect_db(st_pg_t *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->prepared = false;
    s->conn = PQconnectdb(s->conninfo);
    if (!s->conn)
        return CM_ENOMEM;
    if (PQstatus(s->conn) != CONNECTION_OK)
        return fail(s, NULL, "connect");
    PGresult *res = PQexec(s->conn, "SET client_min_messages = warning");
    PQclear(res);
    return 0;
}

/* Reconnects a lost connection and prepares the statements if the session
 * lacks them. 0 or a negative cm_err_t. */
static int ready(st_pg_t *s)
{
    if (PQstatus(s->conn) != CONNECTION_OK) {
        s->prepared = false;
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK)
            return fail(s, NULL, "reconnect");
        PQclear(PQexec(s->conn, "SET client_min_messages = warning"));
    }
    return s->prepared ? 0 : prepare_all(s);
}

/* Returns 1 (found), 0 (not found) or a negative cm_err_t. */
static int lookup(st_pg_t *s, const char *order_id, st_outcome_t *out)
{
    const char *vals[1] = {order_id};
    PGresult *res = PQexecPrepared(s->conn, "st_sel", 1, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail(s, res, "select");
    int ret = 0;
    if (PQntuples(res) > 0) {
        const char *sv = PQgetvalue(res, 0, 0);
        int status = oq_status_parse(sv, strlen(sv));
        out->status = status < 0 ? OQ_STATUS_FAILED : (oq_status_t)status;
        out->changed = false;
        /* a reason stored by hand or by an older version must still encode */
        oq_reason_copy(out->reason, sizeof(out->reason),
                       PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
        ret = 1;
    }
    PQclear(res);
    return ret;
}

/* Returns 1 (inserted), 0 (already there) or a negative cm_err_t. */
static int insert(st_pg_t *s, const oq_order_t *o, oq_status_t status, const char *reason)
{
    char qty[16], at[24], node[16], now[24];
    snprintf(qty, sizeof(qty), "%" PRIu32, o->qty);
    snprintf(at, sizeof(at), "%" PRId64, o->type == OQ_MSG_CANCEL ? (int64_t)0 : o->accepted_at_ms);
    snprintf(node, sizeof(node), "%" PRIu32, o->node_id);
    snprintf(now, sizeof(now), "%" PRId64, cm_wall_ms());
    const char *vals[9] = {o->order_id,
                           o->sale_id,
                           o->user_id,
                           qty,
                           at,
                           (o->node_id != OQ_NODE_UNKNOWN && o->type != OQ_MSG_CANCEL) ? node : NULL,
                           oq_status_name(status),
                           (reason && *reason) ? reason : NULL,
                           now};
    PGresult *res = PQexecPrepared(s->conn, "st_ins", 9, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail(s, res, "insert");
    int ret = atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    return ret;
}

/* 0 (ran), 1 (rejected the order: reason filled) or a negative cm_err_t. */
static int run_user(st_pg_t *s, const oq_order_t *o, char *reason, size_t rlen)
{
    int ret = exec_cmd(s, "SAVEPOINT st_order");
    if (ret)
        return ret;
    char qty[16], at[24];
    snprintf(qty, sizeof(qty), "%" PRIu32, o->qty);
    snprintf(at, sizeof(at), "%" PRId64, o->accepted_at_ms);
    const char *vals[5] = {o->order_id, o->sale_id, o->user_id, qty, at};
    PGresult *res = PQexecPrepared(s->conn, "st_user", 5, vals, NULL, NULL, 0);
    ExecStatusType rs = PQresultStatus(res);
    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK) {
        PQclear(res);
        return exec_cmd(s, "RELEASE SAVEPOINT st_order");
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQstatus(s->conn) != CONNECTION_OK || !is_order_error(state))
        return fail(s, res, "user sql");
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    /* cut on a character: a byte-wise cut of a long message is not UTF-8,
     * which the insert of the failed row refuses (22021) batch after batch */
    oq_reason_copy(reason, rlen, msg ? msg : "rejected");
    PQclear(res);
    if ((ret = exec_cmd(s, "ROLLBACK TO SAVEPOINT st_order")) ||
        (ret = exec_cmd(s, "RELEASE SAVEPOINT st_order")))
        return ret;
    return 1;
}

/*---- settle_many: a run of orders in one INSERT and at most one SELECT ----*/

static void buf_put(pg_buf_t *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = cm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_start(pg_buf_t *b)
{
    b->len = 0;
    buf_put(b, "{", 1);
}

static void buf_end(pg_buf_t *b)
{
    if (b->len > 1)
        b->len--; /* the last element's comma */
    buf_put(b, "}", 1);
}

/* One element of a text-format array literal: quoted, with " and \ escaped
 * (any other byte goes as is inside the quotes); NULL for v == NULL. */
static void buf_elem(pg_buf_t *b, const char *v)
{
    if (!v) {
        buf_put(b, "NULL,", 5);
        return;
    }
    buf_put(b, "\"", 1);
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, "\"\\");
        buf_put(b, p, n);
        p += n;
        if (*p) {
            buf_put(b, "\\", 1);
            buf_put(b, p++, 1);
        }
    }
    buf_put(b, "\",", 2);
}

static void buf_num(pg_buf_t *b, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRId64 ",", v);
    buf_put(b, num, (size_t)n);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void grow_scratch(st_pg_t *s, size_t n)
{
    if (n > s->pend_cap) {
        s->pend_cap = n;
        s->pending = cm_xrealloc(s->pending, n * sizeof(*s->pending));
        s->sorted = cm_xrealloc(s->sorted, n * sizeof(*s->sorted));
        s->first = cm_xrealloc(s->first, n * sizeof(*s->first));
    }
    if (n > s->ins_cap) {
        s->ins_cap = n;
        s->ins_ids = cm_xrealloc(s->ins_ids, n * sizeof(*s->ins_ids));
        s->claimed = cm_xrealloc(s->claimed, n * sizeof(*s->claimed));
    }
}

/* The recorded status of each copy in s->pending[0..np) (one SELECT). */
static int lookup_many(st_pg_t *s, const oq_order_t *const *orders, st_outcome_t *const *outs,
                       size_t np)
{
    buf_start(&s->ids);
    for (size_t k = 0; k < np; k++)
        buf_elem(&s->ids, orders[s->pending[k]]->order_id);
    buf_end(&s->ids);
    const char *vals[1] = {s->ids.p};
    PGresult *res = PQexecPrepared(s->conn, "st_sel_many", 1, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail(s, res, "select many");
    size_t found = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        long k = atol(PQgetvalue(res, r, 0)) - 1; /* ordinality counts from 1 */
        if (k < 0 || (size_t)k >= np)
            continue;
        st_outcome_t *out = outs[s->pending[k]];
        const char *sv = PQgetvalue(res, r, 1);
        int status = oq_status_parse(sv, strlen(sv));
        out->status = status < 0 ? OQ_STATUS_FAILED : (oq_status_t)status;
        out->changed = false;
        oq_reason_copy(out->reason, sizeof(out->reason),
                       PQgetisnull(res, r, 2) ? "" : PQgetvalue(res, r, 2));
        found++;
    }
    PQclear(res);
    if (found != np) { /* cannot be inside our transaction: a conflict means a row */
        snprintf(s->base.errmsg, sizeof(s->base.errmsg), "%zu of %zu orders vanished", np - found,
                 np);
        s->base.err_final = false;
        return CM_EBACKEND;
    }
    return 0;
}

static int cmp_pos(const void *a, const void *b)
{
    const pg_pos_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* s->first[i]: orders[i] is the first copy of its id in the run. */
static void mark_first_copies(st_pg_t *s, const oq_order_t *const *orders, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s->sorted[i] = (pg_pos_t){orders[i]->order_id, i};
    qsort(s->sorted, n, sizeof(*s->sorted), cmp_pos);
    for (size_t k = 0; k < n; k++)
        s->first[s->sorted[k].i] = k == 0 || strcmp(s->sorted[k].id, s->sorted[k - 1].id) != 0;
}

static int pg_settle_many(st_sink_t *sink, const oq_order_t *const *orders,
                          st_outcome_t *const *outs, size_t n)
{
    st_pg_t *s = (st_pg_t *)sink;
    grow_scratch(s, n);
    mark_first_copies(s, orders, n);
    for (int c = 0; c < PG_MANY_COLS; c++)
        buf_start(&s->cols[c]);
    for (size_t i = 0; i < n; i++) {
        const oq_order_t *o = orders[i];
        memset(outs[i], 0, sizeof(*outs[i]));
        if (!s->first[i])
            continue;
        buf_elem(&s->cols[0], o->order_id);
        buf_elem(&s->cols[1], o->sale_id);
        buf_elem(&s->cols[2], o->user_id);
        buf_num(&s->cols[3], o->qty);
        buf_num(&s->cols[4], o->accepted_at_ms);
        if (o->node_id == OQ_NODE_UNKNOWN)
            buf_elem(&s->cols[5], NULL);
        else
            buf_num(&s->cols[5], o->node_id);
    }
    for (int c = 0; c < PG_MANY_COLS; c++)
        buf_end(&s->cols[c]);
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, cm_wall_ms());
    const char *vals[PG_MANY_COLS + 1];
    for (int c = 0; c < PG_MANY_COLS; c++)
        vals[c] = s->cols[c].p;
    vals[PG_MANY_COLS] = now;
    const char *stmt = s->on_conflict_next ? "st_ins_many" : "st_ins_new";
    PGresult *res = PQexecPrepared(s->conn, stmt, PG_MANY_COLS + 1, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "23505") == 0)
            s->on_conflict_next = true; /* another writer had one of the ids in flight */
        return fail(s, res, "insert many");
    }
    s->on_conflict_next = false;
    /* Each returned id was inserted by the first copy of it in the run; every
     * other copy, and every id not returned, reports the recorded row. */
    size_t nins = (size_t)PQntuples(res), np = 0;
    grow_scratch(s, nins);
    for (size_t r = 0; r < nins; r++)
        s->ins_ids[r] = PQgetvalue(res, (int)r, 0);
    qsort(s->ins_ids, nins, sizeof(*s->ins_ids), cmp_str);
    memset(s->claimed, 0, nins * sizeof(*s->claimed));
    for (size_t i = 0; i < n; i++) {
        const char *id = orders[i]->order_id;
        const char **hit =
            nins ? bsearch(&id, s->ins_ids, nins, sizeof(*s->ins_ids), cmp_str) : NULL;
        if (hit && !s->claimed[hit - s->ins_ids]) {
            s->claimed[hit - s->ins_ids] = true;
            outs[i]->status = OQ_STATUS_SETTLED;
            outs[i]->changed = true;
        } else {
            s->pending[np++] = i;
        }
    }
    PQclear(res);
    return np ? lookup_many(s, orders, outs, np) : 0;
}

static int pg_begin(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    int ret = ready(s);
    return ret ? ret : exec_cmd(s, "BEGIN");
}

/* The vtable's primitives: the step itself is st_sink_settle(). */
static int pg_lookup(st_sink_t *sink, const char *order_id, st_outcome_t *out)
{
    return lookup((st_pg_t *)sink, order_id, out);
}

static int pg_run_user(st_sink_t *sink, const oq_order_t *o, char *reason, size_t rlen)
{
    return run_user((st_pg_t *)sink, o, reason, rlen);
}

static int pg_insert(st_sink_t *sink, const oq_order_t *o, oq_status_t status,
                     const char *reason)
{
    return insert((st_pg_t *)sink, o, status, reason);
}

static int pg_cancel(st_sink_t *sink, const oq_order_t *c, st_outcome_t *out)
{
    st_pg_t *s = (st_pg_t *)sink;
    memset(out, 0, sizeof(*out));
    const char *reason = *c->reason ? c->reason : "cancelled";
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, cm_wall_ms());
    const char *vals[3] = {reason, now, c->order_id};
    PGresult *res = PQexecPrepared(s->conn, "st_cancel", 3, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail(s, res, "cancel");
    int changed = atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    if (!changed) {
        int ret = insert(s, c, OQ_STATUS_CANCELLED, reason);
        if (ret < 0)
            return ret;
        changed = ret == 1;
        if (!changed) {
            ret = lookup(s, c->order_id, out);
            return ret < 0 ? ret : 0;
        }
    }
    out->status = OQ_STATUS_CANCELLED;
    out->changed = true;
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    return 0;
}

/*
 * An error at COMMIT (or at the check that runs COMMIT's checks early) comes
 * from what was deferred to it: a DEFERRABLE INITIALLY DEFERRED constraint or
 * constraint trigger. It is classified as a statement's error, with one
 * difference: a unique violation (23505) there is a deferred unique
 * constraint, final, not the batched insert racing another worker (the
 * orders primary key is checked at the insert). Transient ones stay transient:
 * a lost connection, a serialization failure (40001), a deadlock (40P01).
 */
static int fail_deferred(st_pg_t *s, PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool unique = state && strcmp(state, "23505") == 0;
    int ret = fail(s, res, what);
    if (unique && PQstatus(s->conn) == CONNECTION_OK)
        s->base.err_final = true;
    return ret;
}

static int pg_commit(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    PGresult *res = PQexec(s->conn, "COMMIT");
    /* COMMIT of an aborted transaction answers "ROLLBACK": nothing was kept. */
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        return fail_deferred(s, res, "commit");
    PQclear(res);
    return 0;
}

/* The deferred checks now: what COMMIT would raise, raised here (for the
 * poison probe, whose transaction is rolled back instead of committed). */
static int pg_check(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    PGresult *res = PQexec(s->conn, "SET CONSTRAINTS ALL IMMEDIATE");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail_deferred(s, res, "deferred check");
    PQclear(res);
    return 0;
}

static int pg_rollback(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    if (PQstatus(s->conn) != CONNECTION_OK)
        return ready(s);
    if (PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        return 0;
    return exec_cmd(s, "ROLLBACK");
}

static void pg_close(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    if (!s)
        return;
    if (s->conn)
        PQfinish(s->conn);
    free(s->conninfo);
    free(s->user_sql);
    for (int c = 0; c < PG_MANY_COLS; c++)
        free(s->cols[c].p);
    free(s->ids.p);
    free(s->pending);
    free(s->sorted);
    free(s->first);
    free(s->claimed);
    free(s->ins_ids);
    free(s);
}

static const st_sink_ops_t pg_ops = {
    .name = "postgresql",
    .begin = pg_begin,
    .lookup = pg_lookup,
    .run_user = pg_run_user,
    .insert = pg_insert,
    .cancel = pg_cancel,
    .settle_many = pg_settle_many,
    .commit = pg_commit,
    .check = pg_check,
    .rollback = pg_rollback,
    .close = pg_close,
};

int st_pg_open(st_sink_t **out, const char *conninfo, const st_sink_opts_t *opts, char *err,
               size_t errlen)
{
    *out = NULL;
    st_pg_t *s = cm_xcalloc(1, sizeof(*s));
    s->base.ops = &pg_ops;
    s->conninfo = cm_xstrdup(conninfo);
    if (opts && opts->sql && *opts->sql) {
        s->user_sql = cm_xstrdup(opts->sql);
        s->base.has_user_sql = true;
    }
    int ret = connect_db(s);
    /* Two workers starting at once may race on CREATE TABLE IF NOT EXISTS: try twice. */
    if (ret == 0 && (ret = exec_cmd(s, pg_schema_sql)) != 0 && PQstatus(s->conn) == CONNECTION_OK)
        ret = exec_cmd(s, pg_schema_sql);
    if (ret == 0)
        ret = prepare_all(s);
    if (ret != 0) {
        snprintf(err, errlen, "%s", s->base.errmsg);
        pg_close(&s->base);
        return ret;
    }
    *out = &s->base;
    return 0;
}
