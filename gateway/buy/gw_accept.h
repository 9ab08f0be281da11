/*
 * The accept sequence (gw_accept.c): how a reservation that no buy request
 * made (a lottery winner, a waitlist promotion) becomes an order. The
 * inventory's step once per order id, the order's record appended to the
 * spool, its commit, then the status table, the order's owner, the accepted
 * units and the relay's wake-up: the sequence the buy path runs for a 202,
 * in one place.
 *
 * Fairness is given it as an acceptor (a table of functions over a
 * context) when it opens (gw_fair_open) and calls nothing else of the sale
 * path, so buy calls fairness and fairness never calls back. The memory and
 * Redis inventories differ inside the inventory's own calls only
 * (inv_reserve_once, inv_claim); a caller's store (the lottery's log, a
 * fleet's Redis keys) records what each outcome means for its entry.
 *
 * A draw takes its winners one by one (take), then commits them together
 * (one fdatasync for the batch under durability fsync), then makes the
 * durable ones known (publish). All of it blocks (a Redis round trip, an
 * fdatasync): the lottery thread only.
 */
#ifndef GW_ACCEPT_H
#define GW_ACCEPT_H

#include "gateway/base/gw_types.h"

/* What take did with a reservation (non-negative; a negative cm_err_t: the
 * inventory failed or its held order could not be claimed, nothing spooled). */
typedef enum {
    GW_ACCEPT_SPOOLED = 0,   /* reserved (or its key's held order, the same id, claimed) and
                                appended: a->o and a->end are set; commit next */
    GW_ACCEPT_SPOOL_REFUSED, /* reserved, but the spool refused the record: its units are
                                being given back (gw_release_unaccepted) */
    GW_ACCEPT_SOLD_OUT,      /* not enough stock left; nothing changed */
    GW_ACCEPT_UNKNOWN_SALE,  /* no such sale; nothing changed */
    GW_ACCEPT_REFUSED,       /* for cause: the per-user limit, another order's key */
    GW_ACCEPT_BEFORE,        /* reserved before and released since (INV_RESERVED_BEFORE) */
} gw_accept_outcome_t;

/* One reservation to accept. */
typedef struct gw_accept_req {
    inv_worker_t *inv;      /* the caller's handle (loop-less: its calls block) */
    inv_reserve_req_t *rq;  /* the step's request, order id set; its out members are filled */
    const char *sale_id;    /* an array of INV_SALE_ID_MAX + 1 bytes */
    const char *user;       /* the account: the order's user_id (rq->user_id is the person) */
    int64_t accepted_at_ms; /* the order's accepted_at_ms */
    const char *why;        /* logged when the spool refuses the record */
} gw_accept_req_t;

/* One order the sequence made or found. */
typedef struct gw_accept {
    oq_order_t o;
    oq_pos_t end; /* where its record ends in the spool */
    bool fresh;   /* spooled by take; false: found in the spool (find) */
    bool durable; /* commit: the record is durable */
} gw_accept_t;

typedef struct gw_accept_ops {
    /* The inventory's step (inv_reserve_once; a key's held order of the same id
     * is claimed, inv_claim) and the record's spool append. Returns a
     * gw_accept_outcome_t, or a negative cm_err_t. */
    int (*take)(void *ctx, const gw_accept_req_t *req, gw_accept_t *a);
    /* Waits until the records of a[0..n) are durable, in spool order, and sets
     * each one's durable: one wait for the last, then each by its own end after
     * a failure. A record not durable was cut: its order does not exist, its
     * units stay held (undersell, never oversell). */
    void (*commit)(void *ctx, gw_accept_t *a, size_t n);
    /* Makes the orders a[0..n) known: the status table and the owner (a found
     * one only if the table lacks it), the accepted units of the fresh ones,
     * and one wake-up of the relay if any is fresh. */
    void (*publish)(void *ctx, const gw_accept_t *a, size_t n);
    /* Looks for order_id's record in the spool: 1 (a->o set, a->fresh false),
     * 0 not there, or a negative cm_err_t. */
    int (*find)(void *ctx, const char *order_id, gw_accept_t *a);
} gw_accept_ops_t;

/* The accept sequence as fairness holds it. */
typedef struct gw_acceptor {
    const gw_accept_ops_t *ops;
    void *ctx;
} gw_acceptor_t;

/* srv's acceptor: its inventory's answers, spool, status table, owners,
 * counters and relay. Single-threaded init. */
gw_acceptor_t gw_acceptor(gw_server_t *srv);

static inline int gw_accept_take(const gw_acceptor_t *x, const gw_accept_req_t *req, gw_accept_t *a)
{
    return x->ops->take(x->ctx, req, a);
}
static inline void gw_accept_commit(const gw_acceptor_t *x, gw_accept_t *a, size_t n)
{
    x->ops->commit(x->ctx, a, n);
}
static inline void gw_accept_publish(const gw_acceptor_t *x, const gw_accept_t *a, size_t n)
{
    x->ops->publish(x->ctx, a, n);
}
static inline int gw_accept_find(const gw_acceptor_t *x, const char *order_id, gw_accept_t *a)
{
    return x->ops->find(x->ctx, order_id, a);
}

#endif
