/*
 * The start-up replay and compensation as cores: what a restart restores from
 * the spool, and what an outcome gives back. No socket, thread, lock or clock
 * inside: the inventory (inv.h) and the order table (through gw_book_t) are
 * their state; the shell performs what they hand back (a release retried by the
 * releaser, a buyer's identity noted, a release event made durable). The
 * gateway (gw_server.c, gw_release.c, gw_kafka.c) and the simulator
 * (sim/sim_world.c) both call them. Includes nothing of the gateway but this.
 */
#ifndef GW_REPLAY_H
#define GW_REPLAY_H

#include "inventory/inv.h"
#include "queue/oq_order.h"
#include "queue/oq_spool.h"

#include <stdbool.h>
#include <stdint.h>

/* The order table, as these cores use it (the gateway's: gw_orders_*). */
typedef struct gw_book {
    /* True and the order (its status in out->status) if known. */
    bool (*get)(void *ud, const char *order_id, oq_order_t *out);
    /* Restores o as queued, if absent. */
    void (*put)(void *ud, const oq_order_t *o);
    /* Moves an order to st (created from o when unknown and o is not NULL). */
    void (*set_status)(void *ud, const char *order_id, const oq_order_t *o, oq_status_t st,
                       const char *reason);
    void *ud;
} gw_book_t;

/* The start-up replay's state; the shell fills the inputs before the scan. */
typedef struct gw_replay_ctx {
    /* in */
    inv_t *inv;
    const gw_book_t *book;
    uint32_t node_id;
    bool settled_before_release; /* embedded broker: released = settled */
    oq_pos_t released;           /* the spool's release point */
    /* the shell's actions: an order restored (may be NULL); every release event
     * with the inventory's answer rc: when !gw_release_ok(o, rc) the shell tries
     * it again later (the releaser) and then sets final_status if >= 0 */
    void (*on_order)(void *ud, const oq_order_t *o);
    void (*on_release)(void *ud, const oq_order_t *o, int rc, int final_status,
                       const char *reason);
    void *ud;
    /* out */
    uint64_t orders, events, max_id;
    uint64_t last_seg; /* the segment of the last record read, plus 1 (0: none yet) */
} gw_replay_ctx_t;

/* oq_spool_scan's callback for the start-up replay (from {0,0}); arg is a
 * gw_replay_ctx_t. Always 0 (an unreadable event is logged and skipped). */
int gw_replay_one(const oq_rec_t *rec, void *arg);

/*
 * Gives back an order's units in the inventory (o->giveback: inv_giveback,
 * else inv_release) under its person's mark (oq_order_person). A release of an
 * outcome that names the account alone (no person member) that finds nothing
 * under the account is tried again by order id (user ""), since the order is
 * held under its person. Returns the inventory's result (0, CM_ENOTFOUND,
 * CM_ECONFLICT, ...). May block (one Redis round trip).
 */
int gw_units_release(inv_t *inv, const oq_order_t *o);
/* The release is done (nothing to retry): given back, given back before, or a
 * give-back refused because a keyed retry claimed the order. */
bool gw_release_ok(const oq_order_t *o, int rc);

/*
 * An outcome read from the outcomes topic (read again from the beginning at
 * every start): a settled one moves a queued or unknown order to settled and
 * returns false; a failed or cancelled one returns true with the order to
 * compensate in *o (gw_comp_check, then gw_comp_release).
 */
bool gw_outcome_take(const gw_book_t *book, const oq_order_t *oc, oq_order_t *o);

/* The "release" EVENT of order o (replayed at start; the relay keeps it in the
 * spool while its release is pending): o as a release to st, at at_ms. */
void gw_release_event_fill(oq_order_t *ev, const oq_order_t *o, oq_status_t st,
                           const char *reason, bool giveback, int64_t at_ms);

/*
 * Compensation, first half: whether order_id's units are to go back. o is the
 * order as the outcome or the cancel names it (NULL: the table's). Returns 0
 * with the order in *ord (to record durably as a release event, then
 * gw_comp_release), 1 when nothing is to be done (final already: its units
 * went back; or release_pending: the releaser has it), or CM_ENOTFOUND.
 */
int gw_comp_check(const gw_book_t *book, const char *order_id, const oq_order_t *o,
                  bool release_pending, oq_order_t *ord);
/*
 * Compensation, second half, after the release event is durable: gives the
 * units back and only then marks the order final (st), so a redelivered
 * outcome never finds a final order whose units are still out. Returns 0 (the
 * units went back now), 1 (they had gone back before: CM_ENOTFOUND), or the
 * inventory's failure (< 0): the shell queues the release to the releaser,
 * which marks it final when done.
 */
int gw_comp_release(inv_t *inv, const gw_book_t *book, const oq_order_t *ord, oq_status_t st,
                    const char *reason);

#endif
