/*
 * Fairness: a sale's start-window lottery, its leftovers and its waiting room, as
 * the rest of the gateway calls them (registration: gw_reg.h). The rules, their
 * reasons and each record's durability: docs/design.md "Fair start"; the answers:
 * docs/api.md. The draw runs on the lottery's own thread (it may block on the
 * inventory).
 */
#ifndef GW_FAIR_H
#define GW_FAIR_H

#include "common/cm_hash.h"
#include "gateway/buy/gw_accept.h"
#include "inventory/inv.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_server;
typedef struct gw_fair gw_fair_t;
typedef struct gw_fair_sale gw_fair_sale_t;

#define GW_FAIR_WINDOW_MAX_MS 600000   /* 10 minutes */
#define GW_FAIR_EARLY_MAX_MS 3600000   /* an hour */

/* Where a buy falls against a sale's lottery (gw_fair_phase). */
typedef enum {
    GW_FAIR_TOO_EARLY = 0, /* before starts_at - early: 425 */
    GW_FAIR_ENTER = 1,     /* in the entry window: an entry */
    GW_FAIR_DRAWING = 2,   /* window closed, draw not finished: 503 */
    GW_FAIR_OPEN = 3,      /* draw done: first-come */
} gw_fair_phase_t;

/*
 * The draw order: perm[0..n) becomes a uniformly random permutation of the indexes
 * of `keys` (distinct keyed hashes of the entrants' ids), determined by the keys'
 * sorted order and the seed alone (xoshiro256** seeded by splitmix64, Fisher-Yates
 * with unbiased bounded draws). Pure.
 */
void gw_fair_order(const uint64_t *keys, size_t n, uint64_t seed, uint32_t *perm);

/*
 * Opens the lottery: loads <data_dir>/fair.json and every sale's entry log. After
 * the spool replay, before the workers start. accept turns winners and promotions
 * into orders: fairness calls the sale path through it alone. 0 or a negative
 * cm_err_t with a reason.
 */
int gw_fair_open(struct gw_server *srv, gw_acceptor_t accept, char *errbuf, size_t errlen);
int gw_fair_start_thread(struct gw_server *srv, char *errbuf, size_t errlen);
/* Stops the thread (it spools and reserves: before the workers stop). */
void gw_fair_stop_thread(struct gw_server *srv);
/* Stops the thread if still running and frees everything: after the workers and the admin
 * API stopped (the buy path and the admin read the lotteries). Single-threaded shutdown. */
void gw_fair_close(struct gw_server *srv);

/* The lottery of a sale, or NULL when it has none. Thread-safe, lock-free when no sale has one. */
gw_fair_sale_t *gw_fair_find(gw_fair_t *f, const char *sale_id);
/* The phase of a sale's lottery now. Thread-safe. */
gw_fair_phase_t gw_fair_phase(gw_fair_sale_t *fs, int64_t starts_at_ms, int64_t now_ms);
/* When the window closes (ms since the epoch). Thread-safe. */
int64_t gw_fair_closes_at(gw_fair_sale_t *fs, int64_t starts_at_ms);
/* The sale's state machine (gw_sale_core.h): its configuration (relaxed
 * atomics) and phase, for the routes to read. Thread-safe. */
const struct gw_sale_core *gw_fair_machine(const gw_fair_sale_t *fs);
/* The sale's start and end, read from its inventory record into the machine (the
 * lottery thread's tick; a route that decides by them first, as a fleet's room may
 * reach this gateway before its tick read the sale's new terms). Thread-safe. */
void gw_fair_terms(gw_fair_sale_t *fs, const inv_sale_t *sale);

/* An entry's state; it moves only forward: entered -> won | lost | waitlisted (not
 * drawn for want of stock: next in line for units freed later), waitlisted -> won | lost. */
#define GW_ENTRY_STATES(XX)                                                                    \
    XX(ENTERED, "entered") XX(WON, "won") XX(LOST, "lost") XX(WAITLISTED, "waitlisted")
typedef enum {
#define XX(n, s) GW_ENTRY_##n,
    GW_ENTRY_STATES(XX)
#undef XX
        GW_ENTRY_STATE_COUNT
} gw_entry_state_t;
/* "entered", "won", "lost", "waitlisted". */
const char *gw_entry_state_name(gw_entry_state_t s);

/* An entry as the buy path adds it and GET /v1/orders/{id} reads it. */
typedef struct gw_fair_ticket {
    char order_id[INV_ORDER_ID_MAX + 1];
    char sale_id[INV_SALE_ID_MAX + 1];
    char user_id[INV_USER_ID_MAX + 1]; /* the account */
    char person[INV_USER_ID_MAX + 1];  /* its person; "" = the account */
    uint32_t qty;
    int64_t entered_at_ms;
    gw_entry_state_t state;
    uint32_t position;  /* 1-based draw position once drawn */
    uint32_t entrants;  /* entrants of the draw once drawn */
    uint32_t waitlist_place; /* waitlisted: 1 + the waitlisted entries ahead in draw order */
    int64_t draw_at_ms; /* when the window closes */
    uint32_t key_fp;    /* in: inv_idem_key_fp of the raw Idempotency-Key, 0 = none */
} gw_fair_ticket_t;

/*
 * Adds the entry of account t->user_id of person t->person (t->order_id a fresh
 * order id, t->qty, idem_key "" or the Idempotency-Key) and its log line. Returns 0
 * (entered; *t completed), 1 (the account has an entry: *t is it), GW_FAIR_OTHER_ACCOUNT
 * (another account of the person has it: *t unchanged, never its id), GW_FAIR_FULL
 * (sales.max_lottery_entries), CM_EBUSY (the window closed meanwhile) or CM_EIO (not
 * entered). Thread-safe (worker loops); one write(2).
 */
#define GW_FAIR_OTHER_ACCOUNT 2
#define GW_FAIR_FULL 3
int gw_fair_enter(gw_fair_sale_t *fs, gw_fair_ticket_t *t, const char *idem_key);

/* Whether first-come is held back for the waitlist now (docs/design.md "Leftovers by
 * lot": first-come buys are refused 410 sold_out). Thread-safe, lock-free. */
bool gw_fair_waitlist_open(gw_fair_sale_t *fs);

/*
 * An entry by its id, for GET /v1/orders/{id} when the orders table does not know it.
 * Returns 1 (*out is the entry), 0 (none) or, in a fleet, CM_EBACKEND (not held here
 * and Redis cannot say). Thread-safe; a fleet's blocks on the worker loops' pool.
 */
int gw_fair_lookup(gw_fair_t *f, const char *order_id, gw_fair_ticket_t *out);

/* Admin: sets (creates) a sale's lottery window and early acceptance, 0/0 removes it
 * (when nobody entered yet), and its waiting-room rate (per second, 0 = none),
 * persisted before it returns. 0 or CM_EINVAL with a reason. Admin thread. */
int gw_fair_configure(struct gw_server *srv, const char *sale_id, int64_t window_ms,
                      int64_t early_ms, int64_t wr_rate, char *errbuf, size_t errlen);
/*
 * Whether gw_fair_configure would refuse these settings (CM_EINVAL with the reason;
 * 0 if not), changing nothing, so that a refused PUT leaves the sale as it was. In a
 * fleet a window change asks Redis whether any gateway holds entries (CM_EBACKEND
 * when it cannot tell). Once drawn, a change of the window or early acceptance, or a
 * starts_at_ms that would put the window's close in the future, is CM_ECONFLICT (one
 * draw per sale). Admin thread.
 */
int gw_fair_configure_check(struct gw_server *srv, const char *sale_id, int64_t starts_at_ms,
                            int64_t window_ms, int64_t early_ms, int64_t wr_rate, char *errbuf,
                            size_t errlen);
/*
 * Admin: the sale was deleted (sale_gone false: just now; true: it was gone already,
 * and what it left behind is what the DELETE is for). Its lottery and waiting room go
 * (docs/design.md, "Deleting a sale"). Returns 0, CM_ENOTFOUND (sale_gone, and no
 * lottery either), CM_EBACKEND (Redis; the tombstone may be missing: call again) or
 * CM_EIO, with a reason. Admin thread.
 */
int gw_fair_sale_deleted(struct gw_server *srv, const char *sale_id, bool sale_gone,
                         char *errbuf, size_t errlen);
/* The current window and early acceptance of a sale (0, 0 without a lottery). Thread-safe. */
void gw_fair_conf_get(gw_fair_t *f, const char *sale_id, int64_t *window_ms, int64_t *early_ms);

/* GET /admin/v1/sales/{id}/draw: the configuration, the seed, the entrants in draw
 * order with their outcomes (a json_t *, new reference), or NULL without a lottery. */
void *gw_fair_draw_json(gw_fair_t *f, const char *sale_id);

/*
 * Waiting room (optional per sale, independent of the lottery): docs/design.md
 * "The waiting room, per person" and what follows it. One gateway's room:
 * gw_room_store.c; a fleet's is Redis' (gw_room_fleet.c), its calls
 * CM_EBACKEND when Redis cannot answer.
 */
#define GW_WR_RATE_MAX 1000000
#define GW_WR_TOKEN_TTL_S 120
/* Persons a pre-queue holds; a join before the start beyond it is 503. */
#define GW_WR_PREQUEUE_MAX (1u << 21)

/* The sale's waiting room, or NULL when it has none. Thread-safe. */
gw_fair_sale_t *gw_fair_room(gw_fair_t *f, const char *sale_id);
/* The waiting-room rate of a sale (0 without one). Thread-safe. */
int64_t gw_fair_room_rate(gw_fair_t *f, const char *sale_id);

typedef struct gw_fair_room_view {
    uint64_t admitted_through; /* positions up to this one are admitted */
    uint64_t queued;           /* positions given so far (the sealed pre-queue's included) */
    uint64_t prequeued;        /* persons in the pre-queue */
    bool sealed;               /* the pre-queue was sealed: the sale started */
    double rate_per_s;         /* the admission rate in force now (this gateway's; a fleet's
                                * room: this gateway's times the members, the shared front's) */
} gw_fair_room_view_t;
void gw_fair_room_view(gw_fair_sale_t *fs, gw_fair_room_view_t *out);

/* What a join (or a look) found: gw_fair_room_join. */
typedef struct gw_wr_join {
    bool prequeue; /* before the start: in the pre-queue (a join) or not (a look), no place */
    uint64_t pos;  /* the 1-based place, 0 = none */
    int64_t exp_s; /* admitted: the admission token's expiry (s since the epoch), else 0 */
    uint64_t jti;  /* admitted: the token's replay id */
} gw_wr_join_t;

/*
 * The place `person` holds in the room at now_ms (the start is the machine's,
 * gw_fair_machine), joining (take) or only looking: before the start the
 * pre-queue (out->prequeue), from it a rank or a place at the back; out->exp_s
 * and out->jti once the place is at or before admitted_through. Returns 0,
 * CM_EBUSY (the pre-queue full), CM_EIO (one gateway: the join's line was not
 * written; not in the pre-queue), CM_EAGAIN (one gateway: another thread's
 * seal is in its fdatasync; nothing taken, ask again) or, in a fleet,
 * CM_EBACKEND (nothing is known to be taken). Thread-safe; the call that
 * seals waits for the seal's fdatasync (once per room); a fleet's blocks on
 * Redis as gw_fair_admission_claim does.
 */
int gw_fair_room_join(gw_fair_sale_t *fs, const char *person, size_t len, bool take, int64_t now_ms,
                      uint64_t admitted_through, gw_wr_join_t *out);

/* A buy's claim of its admission token (gw_fair_admission_claim): this buy holds it and
 * must settle it, spent (or held by a buy in progress), or the retry of the buy with the
 * same non-zero Idempotency-Key fingerprint that spent or holds it (let through unclaimed,
 * so it gets its order back). */
enum { GW_WR_CLAIMED = 0, GW_WR_SPENT = 1, GW_WR_REPLAY = 2 };

/*
 * The buy path's side of the spent tokens of a sale's room (none: GW_WR_CLAIMED, nothing
 * held); fp is the buy's Idempotency-Key fingerprint (0: none). The claim may also return
 * CM_EIO (one gateway: its line was not written, not claimed) or CM_EBACKEND (a fleet:
 * it may still run in Redis; the lottery thread gives it back). In a fleet each claim
 * has a nonce of its own (*nonce, for the settle; 0 if not held), GW_WR_REPLAY holds the
 * token too and is settled alike, and the settle gives back only this claim's hold.
 * Thread-safe; a fleet's blocks on Redis, at most inventory.redis_timeout per step (the
 * worker loops' pool, gw_fair_pool.c).
 */
int gw_fair_admission_claim(gw_fair_t *f, const char *sale_id, uint64_t jti, int64_t exp_s,
                            uint64_t fp, int64_t now_s, uint64_t *nonce);
void gw_fair_admission_settle(gw_fair_t *f, const char *sale_id, uint64_t jti, uint64_t fp,
                              uint64_t nonce, bool accepted);
/* One gateway, spool.durability fsync: the sale's claims so far (every claim returned
 * before the call) made durable before the 202s of the orders they admit. 0 (also: no
 * room, a fleet) or CM_EIO (logged, counted in claim_sync_failures). Blocks on the disk:
 * off the loops. Thread-safe. */
int gw_fair_admission_sync(gw_fair_t *f, const char *sale_id);

/*
 * GET /admin/v1/sales/{id}/room/persons: the sealed pre-queue's persons in rank order,
 * at most limit from cursor (a rank - 1), with the seed (docs/api.md). A json_t * (new
 * reference), or NULL with *rc CM_ENOTFOUND (no room), CM_ECONFLICT (not sealed yet)
 * or CM_EBACKEND, and the reason in errbuf. Thread-safe; in a fleet blocks on Redis.
 */
#define GW_WR_PAGE_MAX 1000
void *gw_fair_room_persons_json(gw_fair_t *f, const char *sale_id, uint64_t cursor,
                                uint64_t limit, int *rc, char *errbuf, size_t errlen);

/* Adds {"fair": {...}} counters to the stats (json_t *). Thread-safe. */
void gw_fair_stats(gw_fair_t *f, void *json_obj);

/* Runs the draws that are due now (the thread calls it every 20 ms; tests call it). */
void gw_fair_tick(struct gw_server *srv);

/*
 * Test seam: what the lottery thread does when the fleet's configuration
 * comes back with another secret for the sale (its entries are re-keyed).
 */
void gw_fair_set_secret(gw_fair_t *f, const char *sale_id, uint64_t k0, uint64_t k1);

#endif
