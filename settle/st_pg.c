/*
 * PostgreSQL settlement sink (libpq, synchronous, prepared statements).
 *
 * A batch is one BEGIN ... COMMIT. The user's statement (--sql) runs inside a
 * SAVEPOINT per order with $1 order_id text, $2 sale_id text, $3 user_id text,
 * $4 qty integer, $5 accepted_at bigint. SQLSTATE classes 22 (data exception),
 * 23 (integrity constraint), 27/09 (triggered actions), 44 (check option) and
 * P0 (PL/pgSQL RAISE) reject that one order (FAILED, with the server's message
 * as reason); anything else (connection lost, serialization failure, ...)
 * fails the batch, which the caller rolls back and retries. A lost connection
 * is re-established by rollback().
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

typedef struct st_pg {
    st_sink_t base;
    PGconn *conn;
    char *conninfo;
    char *user_sql;
} st_pg_t;

static const char pg_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS orders ("
    " order_id TEXT PRIMARY KEY,"
    " sale_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " qty INTEGER NOT NULL,"
    " accepted_at BIGINT NOT NULL,"
    " node INT,"
    " status TEXT NOT NULL CHECK (status IN ('settled','failed','cancelled')),"
    " reason TEXT,"
    " settled_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS orders_sale ON orders(sale_id, user_id);";

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

/* Records the error of `res` (or of the connection) and returns the cm_err_t for it. */
static int fail(st_pg_t *s, PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
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

/* Prepared statements belong to the session: done at connect and after a reconnect. */
static int prepare_all(st_pg_t *s)
{
    static const Oid ins_types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_INT8,
                                    OID_INT4, OID_TEXT, OID_TEXT, OID_INT8};
    static const Oid user_types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_INT8};
    static const Oid cancel_types[] = {OID_TEXT, OID_INT8, OID_TEXT};
    int ret;
    if ((ret = prepare_one(s, "st_sel", "SELECT status, reason FROM orders WHERE order_id = $1", 1,
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
    if (s->user_sql && (ret = prepare_one(s, "st_user", s->user_sql, 5, user_types)))
        return ret;
    return 0;
}

static int connect_db(st_pg_t *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = PQconnectdb(s->conninfo);
    if (!s->conn)
        return CM_ENOMEM;
    if (PQstatus(s->conn) != CONNECTION_OK)
        return fail(s, NULL, "connect");
    PGresult *res = PQexec(s->conn, "SET client_min_messages = warning");
    PQclear(res);
    return 0;
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
        snprintf(out->reason, sizeof(out->reason), "%s",
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
    snprintf(reason, rlen, "%s", msg ? msg : "rejected");
    PQclear(res);
    if ((ret = exec_cmd(s, "ROLLBACK TO SAVEPOINT st_order")) ||
        (ret = exec_cmd(s, "RELEASE SAVEPOINT st_order")))
        return ret;
    return 1;
}

static int pg_begin(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    if (PQstatus(s->conn) != CONNECTION_OK) {
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK)
            return fail(s, NULL, "reconnect");
        int ret = prepare_all(s);
        if (ret)
            return ret;
    }
    return exec_cmd(s, "BEGIN");
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

static int pg_commit(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    PGresult *res = PQexec(s->conn, "COMMIT");
    /* COMMIT of an aborted transaction answers "ROLLBACK": nothing was kept. */
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        return fail(s, res, "commit");
    PQclear(res);
    return 0;
}

static int pg_rollback(st_sink_t *sink)
{
    st_pg_t *s = (st_pg_t *)sink;
    if (PQstatus(s->conn) != CONNECTION_OK) {
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK)
            return fail(s, NULL, "reconnect");
        return prepare_all(s);
    }
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
    free(s);
}

static const st_sink_ops_t pg_ops = {
    .name = "postgresql",
    .begin = pg_begin,
    .lookup = pg_lookup,
    .run_user = pg_run_user,
    .insert = pg_insert,
    .cancel = pg_cancel,
    .commit = pg_commit,
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
