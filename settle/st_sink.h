/*
 * The settlement step: where flashgate-settle writes an order (a vtable, as
 * hiredis adapters/ are; a new database is a new file, with no #ifdef in the
 * consumer loop).
 *
 * Every backend keeps the same ledger, the `orders` table, whose primary key
 * is the order id: it is what makes settlement idempotent (a second copy of an
 * order changes nothing and reports the status already recorded) and what
 * makes a cancellation happen once.
 *
 *   CREATE TABLE orders (
 *       order_id    TEXT PRIMARY KEY,  -- PostgreSQL: COLLATE "C" for the ids
 *       sale_id     TEXT NOT NULL,
 *       user_id     TEXT NOT NULL,
 *       qty         INTEGER NOT NULL,
 *       accepted_at BIGINT NOT NULL,   -- ms since the epoch (0: the cancel came first)
 *       node        INT,               -- gateway node id (NULL: the cancel came first)
 *       status      TEXT NOT NULL,     -- 'settled' | 'failed' | 'cancelled'
 *       reason      TEXT,              -- why failed / cancelled, else NULL
 *       settled_at  BIGINT NOT NULL,   -- ms, when the row was first written
 *       updated_at  BIGINT NOT NULL);  -- ms, last status change
 *   CREATE INDEX orders_sale ON orders(sale_id);
 *
 * A batch is one transaction: begin, then settle()/cancel() per message, then
 * commit() (or rollback() on any error). An order that the user's own SQL
 * (--sql) rejects with a constraint or raised error is FAILED, with the
 * database's message as reason, and the batch goes on (a savepoint per order);
 * any other error (connection lost, disk full, lock timeout) is returned as a
 * negative cm_err_t: the caller rolls the batch back and retries it later
 * (st_batch_write: one order failing the batch at every try is isolated).
 * CM_EAGAIN: the user's SQL rejected an order by rolling back the whole
 * transaction (SQLite's RAISE(ROLLBACK)); the sink remembers the order and the
 * retry, which may come at once, stores it as FAILED without running it.
 *
 * A sink is used by one thread at a time. See docs/settlement.md.
 */
#ifndef ST_SINK_H
#define ST_SINK_H

#include "queue/oq_order.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


/* What one settle()/cancel() decided. */
/* Orders and cancel commands are oq_order_t records (queue/oq_order.h): type
 * OQ_MSG_ORDER or OQ_MSG_CANCEL. Statuses are oq_status_t and are stored by
 * their names (oq_status_name). */
typedef struct st_outcome {
    oq_status_t status;             /* the order's status after the call */
    bool changed;                   /* false: the row already had this status (a duplicate) */
    char reason[OQ_REASON_MAX + 1]; /* "" = none */
} st_outcome_t;

typedef struct st_sink st_sink_t;

typedef struct st_sink_ops {
    const char *name; /* "sqlite", "postgresql" */
    /* Starts a batch transaction. 0 or a negative cm_err_t. */
    int (*begin)(st_sink_t *s);
    /*
     * The primitives of the settlement step; st_sink_settle() decides with
     * them, the same way for every database.
     * lookup: 1 and the recorded status in *out if order_id is recorded, 0 if
     * not, or a negative cm_err_t.
     * run_user: runs the user's --sql for o in a savepoint: 0 ran, 1 the
     * database rejected the order (reason filled), or a negative cm_err_t.
     * Only called when the sink has_user_sql.
     * insert: records o with status/reason unless its id is there: 1
     * inserted, 0 already there, or a negative cm_err_t.
     */
    int (*lookup)(st_sink_t *s, const char *order_id, st_outcome_t *out);
    int (*run_user)(st_sink_t *s, const oq_order_t *o, char *reason, size_t rlen);
    int (*insert)(st_sink_t *s, const oq_order_t *o, oq_status_t status, const char *reason);
    /*
     * Cancels one order inside the batch: settled -> cancelled (once). A
     * failed or cancelled order keeps its status (out->changed false). An
     * unknown order is recorded as cancelled so that a late copy of it is
     * never settled. 0 or a negative cm_err_t.
     */
    int (*cancel)(st_sink_t *s, const oq_order_t *c, st_outcome_t *out);
    /*
     * Optional (NULL: st_sink_settle_many() calls st_sink_settle() per order).
     * Settles n orders (no cancel among them) inside the batch with exactly
     * the outcomes that n st_sink_settle() calls in the same order would give
     * (a second copy of an id, in the batch or recorded before, changes
     * nothing and reports the recorded status), in a few round trips instead
     * of n. Never called when has_user_sql: the user's statement runs per
     * order, in its own savepoint. 0 or a negative cm_err_t.
     */
    int (*settle_many)(st_sink_t *s, const oq_order_t *const *orders, st_outcome_t *const *outs,
                       size_t n);
    /* Commits the batch. 0 or a negative cm_err_t (then nothing of it is kept). */
    int (*commit)(st_sink_t *s);
    /*
     * Optional (NULL: the database defers no check to COMMIT). Runs now,
     * inside the batch, the checks that COMMIT would run (PostgreSQL: the
     * DEFERRABLE INITIALLY DEFERRED constraints and constraint triggers of
     * the schema or the user's statement), so that the poison probe, whose
     * transactions are rolled back, meets the errors a COMMIT would raise.
     * 0 or a negative cm_err_t, classified as commit() classifies it.
     */
    int (*check)(st_sink_t *s);
    /* Rolls the batch back; safe to call when no batch is open. Reconnects if
       the connection was lost. 0 or a negative cm_err_t. */
    int (*rollback)(st_sink_t *s);
    /* Closes and frees the sink (rolling back an open batch). */
    void (*close)(st_sink_t *s);
} st_sink_ops_t;

/* An order (or cancel) that failed alone, deterministically, batch after
 * batch: see st_batch_write(). */
typedef struct st_poison {
    char order_id[INV_ORDER_ID_MAX + 1];
    bool cancel;                    /* the cancel command, not the order */
    char reason[OQ_REASON_MAX + 1]; /* the database's message */
} st_poison_t;

/* Backends embed this as their first member. */
struct st_sink {
    const st_sink_ops_t *ops;
    bool has_user_sql; /* --sql given: run_user before insert */
    char errmsg[256];  /* last error, for logs */
    /* Set by the backend with each error it returns: true when the database
     * refused the statement for a reason that a retry does not change (not a
     * lost connection, deadlock, serialization failure, lock or statement
     * timeout, resource shortage, shutdown or internal error); err_reason
     * then holds its message, cut between UTF-8 characters. */
    bool err_final;
    char err_reason[OQ_REASON_MAX + 1];
    /* The batch's poison list (owned by the st_batch_writer_t): an order
     * listed here is recorded FAILED with its reason instead of running the
     * user's statement; a listed cancel is applied with the plain reason
     * "cancelled". NULL/0 = none. */
    const st_poison_t *poison;
    size_t npoison;
};

typedef struct st_sink_opts {
    const char *sql;          /* user's per-order statement ("" or NULL = none) */
    uint32_t busy_timeout_ms; /* SQLite lock wait; 0 = 5000 */
} st_sink_opts_t;

/*
 * Opens a SQLite sink on file `path` (created if missing; WAL mode,
 * synchronous=FULL, busy_timeout), creating the schema if missing. The user's
 * SQL may use the named parameters :order_id :sale_id :user_id :qty
 * :accepted_at. Returns 0 and *out, or a negative cm_err_t with a reason in err.
 * Single-threaded init; the sink is then used by one thread at a time.
 */
int st_sqlite_open(st_sink_t **out, const char *path, const st_sink_opts_t *opts, char *err,
                   size_t errlen);

/*
 * Opens a PostgreSQL sink (libpq conninfo or postgresql:// URL), creating the
 * schema if missing. The user's SQL takes $1 order_id text, $2 sale_id text,
 * $3 user_id text, $4 qty integer, $5 accepted_at bigint. Same contract as
 * st_sqlite_open. Blocks for the connection (libpq connect_timeout).
 */
int st_pg_open(st_sink_t **out, const char *conninfo, const st_sink_opts_t *opts, char *err,
               size_t errlen);

/*
 * Opens the sink named by `db`: "postgresql://..." / "postgres://..." for
 * PostgreSQL; "sqlite:PATH", "file:PATH" or a plain path for SQLite; "" or
 * NULL for SQLite at <data_dir>/orders.db.
 */
int st_sink_open(st_sink_t **out, const char *db, const char *data_dir, const st_sink_opts_t *opts,
                 char *err, size_t errlen);

/*
 * Settles one order inside the batch: inserts it (after the user's SQL, if
 * any, which decides settled or failed) unless its id is already recorded, in
 * which case nothing changes (the user's SQL does not run for a copy) and
 * `out` reports the recorded status. 0 or a negative cm_err_t (the batch must
 * then be rolled back); CM_ECONFLICT: with user SQL, another writer recorded
 * the id between the lookup and the insert, and the retry reports its row.
 */
int st_sink_settle(st_sink_t *s, const oq_order_t *o, st_outcome_t *out);

/*
 * Settles n orders inside the batch, outs[i] for orders[i]: the same outcomes
 * as st_sink_settle() on each in turn, through the sink's settle_many when it
 * has one and no user SQL is set. Cancels must not be among them (a cancel
 * between two orders orders their effects: the caller splits the batch at
 * it). 0 or a negative cm_err_t (the batch must then be rolled back).
 */
int st_sink_settle_many(st_sink_t *s, const oq_order_t *const *orders, st_outcome_t *const *outs,
                        size_t n);

/*
 * Poison isolation (docs/settlement.md, "Poison orders"). A batch that fails
 * ST_POISON_AFTER times in a row with a final error (err_final; at a statement
 * or at COMMIT) is probed: each message alone in its own transaction, with
 * the checks COMMIT would run (ops->check), rolled back. An order that fails
 * alone with a final error is poison only when there is evidence that the
 * statement works: another order of the same probe passed alone and was newly
 * written (a copy of a recorded order, a cancel or an order already listed do
 * not count: they run no statement). A cancel that fails alone is listed when
 * any other message was newly written (it then goes in with the plain reason:
 * nothing is lost). The listed messages are recorded FAILED at the next try
 * with the database's message, while the others settle. Without evidence (a
 * lone order, every order failing: the statement is broken for all, or every
 * message passing alone while the batch fails) nothing is failed: the batch
 * stalls (note.systemic) and is retried; it is probed again every
 * ST_POISON_REPROBE final failures, and at once when it has grown (the loop
 * adds the messages that arrived meanwhile, which bring the evidence).
 */
#define ST_POISON_AFTER 3
#define ST_POISON_REPROBE 12 /* final failures between probes of a stalled batch */

/* One message's result in a probe. */
typedef struct st_probe_res {
    signed char state; /* 0 not tried / already listed, 1 newly written, 2 passed unchanged, -1 failed */
    char reason[OQ_REASON_MAX + 1];
} st_probe_res_t;

typedef struct st_batch_writer {
    st_poison_t *poison;
    size_t npoison, cappoison;
    unsigned final_streak; /* consecutive final failures of the batch in progress */
    size_t probed_n;       /* messages in the batch at its last probe (0: none yet) */
    /* scratch: the valid messages' run of orders (grown to n) */
    const oq_order_t **run_orders;
    st_outcome_t **run_outs;
    st_probe_res_t *probe_res;
    size_t cap;
} st_batch_writer_t;

/* What one st_batch_write() try did besides its return value. */
typedef struct st_batch_note {
    bool final;       /* the failure was final (err_final) */
    bool probed;      /* the batch was probed after this failure */
    size_t poisoned;  /* poison messages the probe found (retry at once) */
    bool systemic;    /* the probe found no message to blame: a stall */
} st_batch_note_t;

/*
 * One try of a batch of n messages (orders and cancels, in their order) in
 * one transaction: 0 committed (outs filled), or a negative cm_err_t after a
 * rollback (note says whether it was final and what a probe found; the caller
 * retries, with back-off unless note->poisoned). Call again with the same
 * batch until 0, then st_batch_writer_done().
 */
int st_batch_write(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                   st_outcome_t *const *outs, size_t n, st_batch_note_t *note);
/* The batch committed (or was abandoned): forget its poison list and streak. */
void st_batch_writer_done(st_batch_writer_t *w, st_sink_t *s);
void st_batch_writer_free(st_batch_writer_t *w);

static inline int st_sink_begin(st_sink_t *s)
{
    return s->ops->begin(s);
}
static inline int st_sink_cancel(st_sink_t *s, const oq_order_t *c, st_outcome_t *out)
{
    return s->ops->cancel(s, c, out);
}
static inline int st_sink_commit(st_sink_t *s)
{
    return s->ops->commit(s);
}
static inline int st_sink_rollback(st_sink_t *s)
{
    return s->ops->rollback(s);
}
static inline void st_sink_close(st_sink_t *s)
{
    if (s)
        s->ops->close(s);
}

#endif
