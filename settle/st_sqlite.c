/*
 * SQLite settlement sink: the zero-setup default (<data-dir>/orders.db).
 *
 * WAL mode, synchronous=FULL (Kafka offsets are committed right after the
 * database commit, so a commit that a power loss could undo would lose an
 * order), busy_timeout for the rare second writer. A batch is one
 * BEGIN IMMEDIATE ... COMMIT; the user's statement runs inside a savepoint per
 * order so that one rejected order does not undo the others. A rejection that
 * rolls back the whole transaction instead (RAISE(ROLLBACK), INSERT OR
 * ROLLBACK) fails the batch with CM_EAGAIN and the order is remembered: the
 * retry stores it as failed without running the statement for it again.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"
#include "settle/st_sink.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sq_rejected {
    char order_id[INV_ORDER_ID_MAX + 1];
    char reason[OQ_REASON_MAX + 1];
} sq_rejected_t;

typedef struct st_sqlite {
    st_sink_t base;
    sqlite3 *db;
    sqlite3_stmt *sel;    /* status, reason of one order */
    sqlite3_stmt *ins;    /* insert one row, ignoring a conflict */
    sqlite3_stmt *cancel; /* settled -> cancelled */
    sqlite3_stmt *user;   /* the user's statement, or NULL */
    bool in_tx;
    /* orders whose user statement rolled the whole transaction back, with its
     * message: failed without running it again (forgotten at a commit) */
    sq_rejected_t *rejected;
    size_t nrejected, caprejected;
} st_sqlite_t;

/* The per-sale index on sale_id alone, as in PostgreSQL (st_pg.c: a sale's new
 * rows go in at the end of its key instead of at random user_id places). */
static const char schema_sql[] =
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
    "CREATE INDEX IF NOT EXISTS orders_sale ON orders(sale_id);";

static int map_rc(int rc);

/*
 * A final error (st_sink_t.err_final) is one that the next try meets again:
 * the user's statement or a trigger refusing (SQLITE_ERROR, CONSTRAINT,
 * MISMATCH, TOOBIG, RANGE, reaching here outside run_user's savepoint, e.g.
 * from a trigger on orders, or SQLITE_AUTH, SCHEMA...), not a busy or locked
 * database, I/O, a full disk, memory, corruption or an interrupt.
 */
static void note_err(st_sqlite_t *s, int rc, const char *msg)
{
    s->base.err_final = map_rc(rc) == CM_EBACKEND && (rc & 0xff) != SQLITE_INTERRUPT &&
                        (rc & 0xff) != SQLITE_ABORT;
    oq_reason_copy(s->base.err_reason, sizeof(s->base.err_reason), msg ? msg : "");
}

static void set_err(st_sqlite_t *s, const char *what)
{
    snprintf(s->base.errmsg, sizeof(s->base.errmsg), "sqlite %s: %s", what, sqlite3_errmsg(s->db));
    note_err(s, sqlite3_extended_errcode(s->db), sqlite3_errmsg(s->db));
}

/* Errors that reject one order (the user's constraint or RAISE) rather than the batch. */
static bool is_order_error(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_ERROR:
        return true;
    default:
        return false;
    }
}

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return CM_ETIMEOUT;
    case SQLITE_NOMEM:
        return CM_ENOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return CM_ECORRUPT;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
        return CM_EIO;
    default:
        return CM_EBACKEND;
    }
}

static int exec(st_sqlite_t *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(s->base.errmsg, sizeof(s->base.errmsg), "sqlite %s: %s", sql,
                 msg ? msg : sqlite3_errstr(rc));
        note_err(s, rc, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return map_rc(rc);
    }
    return 0;
}

/* Looks the order up. Returns 1 (found, out filled), 0 (not found) or a negative cm_err_t. */
static int lookup(st_sqlite_t *s, const char *order_id, st_outcome_t *out)
{
    sqlite3_stmt *st = s->sel;
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        const char *sv = (const char *)sqlite3_column_text(st, 0);
        int status = sv ? oq_status_parse(sv, strlen(sv)) : -1;
        const unsigned char *reason = sqlite3_column_text(st, 1);
        out->status = status < 0 ? OQ_STATUS_FAILED : (oq_status_t)status;
        out->changed = false;
        /* a reason stored by hand or by an older version must still encode */
        oq_reason_copy(out->reason, sizeof(out->reason), (const char *)reason);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        set_err(s, "select");
        ret = map_rc(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

/* Inserts a row. Returns 1 (inserted), 0 (already there) or a negative cm_err_t. */
static int insert(st_sqlite_t *s, const oq_order_t *o, oq_status_t status, const char *reason)
{
    sqlite3_stmt *st = s->ins;
    int64_t now = cm_wall_ms();
    sqlite3_bind_text(st, 1, o->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, o->sale_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, o->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, o->qty);
    sqlite3_bind_int64(st, 5, o->type == OQ_MSG_CANCEL ? 0 : o->accepted_at_ms);
    if (o->node_id != OQ_NODE_UNKNOWN && o->type != OQ_MSG_CANCEL)
        sqlite3_bind_int64(st, 6, o->node_id);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_text(st, 7, oq_status_name(status), -1, SQLITE_STATIC);
    if (reason && *reason)
        sqlite3_bind_text(st, 8, reason, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 8);
    sqlite3_bind_int64(st, 9, now);
    sqlite3_bind_int64(st, 10, now);
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE ? (sqlite3_changes(s->db) > 0) : map_rc(rc);
    if (rc != SQLITE_DONE)
        set_err(s, "insert");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

static void bind_named(sqlite3_stmt *st, const oq_order_t *o)
{
    int i;
    if ((i = sqlite3_bind_parameter_index(st, ":order_id")) > 0)
        sqlite3_bind_text(st, i, o->order_id, -1, SQLITE_STATIC);
    if ((i = sqlite3_bind_parameter_index(st, ":sale_id")) > 0)
        sqlite3_bind_text(st, i, o->sale_id, -1, SQLITE_STATIC);
    if ((i = sqlite3_bind_parameter_index(st, ":user_id")) > 0)
        sqlite3_bind_text(st, i, o->user_id, -1, SQLITE_STATIC);
    if ((i = sqlite3_bind_parameter_index(st, ":qty")) > 0)
        sqlite3_bind_int64(st, i, o->qty);
    if ((i = sqlite3_bind_parameter_index(st, ":accepted_at")) > 0)
        sqlite3_bind_int64(st, i, o->accepted_at_ms);
}

static const sq_rejected_t *find_rejected(const st_sqlite_t *s, const char *order_id)
{
    for (size_t i = 0; i < s->nrejected; i++)
        if (strcmp(s->rejected[i].order_id, order_id) == 0)
            return &s->rejected[i];
    return NULL;
}

static void remember_rejected(st_sqlite_t *s, const char *order_id, const char *reason)
{
    if (find_rejected(s, order_id))
        return;
    if (s->nrejected == s->caprejected) {
        s->caprejected = s->caprejected ? s->caprejected * 2 : 8;
        s->rejected = cm_xrealloc(s->rejected, s->caprejected * sizeof(*s->rejected));
    }
    sq_rejected_t *r = &s->rejected[s->nrejected++];
    snprintf(r->order_id, sizeof(r->order_id), "%s", order_id);
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

/*
 * Runs the user's statement for one order inside a savepoint. Returns 0 (ran),
 * 1 (rejected the order: reason filled) or a negative cm_err_t.
 */
static int run_user(st_sqlite_t *s, const oq_order_t *o, char *reason, size_t rlen)
{
    const sq_rejected_t *rej = find_rejected(s, o->order_id);
    if (rej) { /* rejected by an earlier try of this batch: not run again */
        snprintf(reason, rlen, "%s", rej->reason);
        return 1;
    }
    int ret = exec(s, "SAVEPOINT st_order");
    if (ret)
        return ret;
    bind_named(s->user, o);
    int rc;
    while ((rc = sqlite3_step(s->user)) == SQLITE_ROW)
        ;
    if (rc == SQLITE_DONE) {
        ret = 0;
    } else if (is_order_error(rc)) {
        /* cut on a character: a byte-wise cut of a long message is not UTF-8,
         * and the outcome carrying it could not be encoded */
        oq_reason_copy(reason, rlen, sqlite3_errmsg(s->db));
        ret = 1;
    } else {
        set_err(s, "user sql");
        ret = map_rc(rc);
    }
    sqlite3_reset(s->user);
    sqlite3_clear_bindings(s->user);
    if (ret == 1 && sqlite3_get_autocommit(s->db)) {
        /* RAISE(ROLLBACK) or OR ROLLBACK: SQLite rolled back the whole
         * transaction, the batch's other orders with it, so there is no
         * savepoint to go back to. The order still fails alone: remembered
         * here, the batch's retry stores it as failed. */
        remember_rejected(s, o->order_id, reason);
        s->in_tx = false;
        snprintf(s->base.errmsg, sizeof(s->base.errmsg),
                 "sqlite user sql rolled the batch back: order %s rejected (%s); the retry "
                 "stores it as failed",
                 o->order_id, reason);
        return CM_EAGAIN;
    }
    if (ret < 0)
        return ret;
    if (ret == 1) {
        int r = exec(s, "ROLLBACK TO st_order");
        if (r)
            return r;
    }
    int r = exec(s, "RELEASE st_order");
    return r ? r : ret;
}

static int sq_begin(st_sink_t *sink)
{
    st_sqlite_t *s = (st_sqlite_t *)sink;
    int ret = exec(s, "BEGIN IMMEDIATE");
    if (ret == 0)
        s->in_tx = true;
    return ret;
}

/* The vtable's primitives: the step itself is st_sink_settle(). */
static int sq_lookup(st_sink_t *sink, const char *order_id, st_outcome_t *out)
{
    return lookup((st_sqlite_t *)sink, order_id, out);
}

static int sq_run_user(st_sink_t *sink, const oq_order_t *o, char *reason, size_t rlen)
{
    return run_user((st_sqlite_t *)sink, o, reason, rlen);
}

static int sq_insert(st_sink_t *sink, const oq_order_t *o, oq_status_t status,
                     const char *reason)
{
    return insert((st_sqlite_t *)sink, o, status, reason);
}

static int sq_cancel(st_sink_t *sink, const oq_order_t *c, st_outcome_t *out)
{
    st_sqlite_t *s = (st_sqlite_t *)sink;
    memset(out, 0, sizeof(*out));
    const char *reason = *c->reason ? c->reason : "cancelled";
    sqlite3_stmt *st = s->cancel;
    sqlite3_bind_text(st, 1, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cm_wall_ms());
    sqlite3_bind_text(st, 3, c->order_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int changes = sqlite3_changes(s->db);
    if (rc != SQLITE_DONE)
        set_err(s, "cancel");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return map_rc(rc);
    if (changes > 0) {
        out->status = OQ_STATUS_CANCELLED;
        out->changed = true;
        snprintf(out->reason, sizeof(out->reason), "%s", reason);
        return 0;
    }
    /* Not settled: unknown (record the cancel first), or already final. */
    int ret = insert(s, c, OQ_STATUS_CANCELLED, reason);
    if (ret < 0)
        return ret;
    if (ret == 1) {
        out->status = OQ_STATUS_CANCELLED;
        out->changed = true;
        snprintf(out->reason, sizeof(out->reason), "%s", reason);
        return 0;
    }
    ret = lookup(s, c->order_id, out);
    return ret < 0 ? ret : 0;
}

static int sq_commit(st_sink_t *sink)
{
    st_sqlite_t *s = (st_sqlite_t *)sink;
    int ret = exec(s, "COMMIT");
    if (ret) {
        /* A failed COMMIT may leave the transaction open: end it. */
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    } else {
        s->nrejected = 0; /* their failures are recorded now */
    }
    s->in_tx = false;
    return ret;
}

static int sq_rollback(st_sink_t *sink)
{
    st_sqlite_t *s = (st_sqlite_t *)sink;
    s->in_tx = false;
    if (sqlite3_get_autocommit(s->db))
        return 0;
    return exec(s, "ROLLBACK");
}

static void sq_close(st_sink_t *sink)
{
    st_sqlite_t *s = (st_sqlite_t *)sink;
    if (!s)
        return;
    if (s->db && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(s->sel);
    sqlite3_finalize(s->ins);
    sqlite3_finalize(s->cancel);
    sqlite3_finalize(s->user);
    sqlite3_close(s->db);
    free(s->rejected);
    free(s);
}

static const st_sink_ops_t sqlite_ops = {
    .name = "sqlite",
    .begin = sq_begin,
    .lookup = sq_lookup,
    .run_user = sq_run_user,
    .insert = sq_insert,
    .cancel = sq_cancel,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .close = sq_close,
};

static int prepare(st_sqlite_t *s, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, &tail);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(s->db));
        return CM_EINVAL;
    }
    if (*st == NULL) {
        snprintf(err, errlen, "sqlite: empty statement \"%s\"", sql);
        return CM_EINVAL;
    }
    while (tail && *tail && strchr(" \t\r\n;", *tail))
        tail++;
    if (tail && *tail) {
        snprintf(err, errlen, "sqlite: only one statement is allowed, extra text: \"%s\"", tail);
        return CM_EINVAL;
    }
    return 0;
}

int st_sqlite_open(st_sink_t **out, const char *path, const st_sink_opts_t *opts, char *err,
                   size_t errlen)
{
    *out = NULL;
    st_sqlite_t *s = cm_xcalloc(1, sizeof(*s));
    s->base.ops = &sqlite_ops;
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sq_close(&s->base);
        return CM_EIO;
    }
    uint32_t busy = opts && opts->busy_timeout_ms ? opts->busy_timeout_ms : 5000;
    sqlite3_busy_timeout(s->db, (int)busy);
    int ret;
    if ((ret = exec(s, "PRAGMA journal_mode=WAL")) || (ret = exec(s, "PRAGMA synchronous=FULL")) ||
        (ret = exec(s, schema_sql))) {
        snprintf(err, errlen, "%s (%s)", s->base.errmsg, path);
        sq_close(&s->base);
        return ret;
    }
    if ((ret = prepare(s, "SELECT status, reason FROM orders WHERE order_id = ?1", &s->sel, err,
                       errlen)) ||
        (ret = prepare(s,
                       "INSERT INTO orders (order_id, sale_id, user_id, qty, accepted_at, node,"
                       " status, reason, settled_at, updated_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                       " ON CONFLICT (order_id) DO NOTHING",
                       &s->ins, err, errlen)) ||
        (ret = prepare(s,
                       "UPDATE orders SET status = 'cancelled', reason = ?1, updated_at = ?2"
                       " WHERE order_id = ?3 AND status = 'settled'",
                       &s->cancel, err, errlen))) {
        sq_close(&s->base);
        return ret;
    }
    if (opts && opts->sql && *opts->sql && (ret = prepare(s, opts->sql, &s->user, err, errlen))) {
        sq_close(&s->base);
        return ret;
    }
    s->base.has_user_sql = s->user != NULL;
    *out = &s->base;
    return 0;
}
