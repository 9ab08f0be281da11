/*
 * The buy decision without I/O (docs/design.md, "The buy path"): one core per
 * buy, stepped by events, each answered with what to say and what to do.
 *
 *   HEAD      the sale's local view and the time: sold out, 425, 410 ended
 *   BUYER     the parsed request and verified buyer: qty against the limit
 *   LIMITS    the rate limits' verdict and the sale's fairness state
 *   ADMITTED  the admission token's claim (a sale with a waiting room)
 *   RESERVED  the inventory's answer (a keyed retry: which order, known here?)
 *   CLAIMED   the claim of a keyed retry's order another incarnation reserved
 *   SPOOLED   the spool write of the order's record
 *   SYNCED    the group commit's fdatasync (durability fsync)
 *
 * Each step fills a gw_buy_out_t: an answer (GW_BUY_A_NONE: none yet) and
 * actions (GW_BUY_DO_*) for the shell to perform, whose results come back as
 * the next event. No syscall, lock, clock read or allocation: the shell
 * (gw_buy.c) and the simulator (sim/sim_world.c) run this same code, and the
 * unit test (tests/unit/gateway/buy/test_gw_buy_core.c) drives it alone.
 */
#ifndef GW_BUY_CORE_H
#define GW_BUY_CORE_H

#include <stdbool.h>
#include <stdint.h>

/* The admission claim's results (gw_fair.h GW_WR_*: gw_buy.c checks they agree). */
enum { GW_BUY_ADM_CLAIMED = 0, GW_BUY_ADM_SPENT = 1, GW_BUY_ADM_REPLAY = 2 };

/* What the buyer is told (the shell words each; gw_buy_answer_name). */
#define GW_BUY_ANSWERS(XX)                                                                         \
    XX(NONE, "none")                       /* nothing yet: perform the actions */                  \
    XX(ACCEPTED, "accepted")               /* 202 */                                               \
    XX(REPLAYED, "replayed")               /* 202 Idempotent-Replayed: a keyed retry's order */    \
    XX(SOLD_OUT, "sold_out")               /* 410 */                                               \
    XX(WAITLIST, "waitlist")               /* 410: units freed go to a draw's waitlist */          \
    XX(NOT_STARTED, "not_started")         /* 425 */                                               \
    XX(ENDED, "ended")                     /* 410 sale_ended */                                    \
    XX(QTY_OVER_LIMIT, "qty_over")         /* 409: qty alone exceeds the per-user limit */         \
    XX(LIMIT_PER_USER, "limit")            /* 409: the inventory's per-user mark */                \
    XX(RATE_LIMITED, "rate_limited")       /* 429 */                                               \
    XX(DRAW_RUNNING, "draw_running")       /* 503: the start-window draw runs */                   \
    XX(ADMISSION_SPENT, "admission_spent") /* 403 */                                               \
    XX(ADMISSION_BUSY, "admission_busy")   /* 503: the spent table is full */                      \
    XX(ADMISSION_UNKNOWN, "admission_unknown") /* 503: the spent tokens cannot be read */          \
    XX(UNKNOWN_SALE, "unknown_sale")           /* 404 */                                           \
    XX(IN_PROGRESS, "in_progress")             /* 503: the key's first request is not done */      \
    XX(KEY_GIVEN_BACK, "key_given_back")       /* 503: the key's order went back */                \
    XX(INV_FAILED, "inv_failed")               /* 503: the inventory failed (rc) */                \
    XX(SPOOL_REFUSED, "spool_refused")         /* 503: full or failed spool write (rc) */          \
    XX(NOT_CONFIRMED, "not_confirmed")         /* 503: the record's fdatasync failed */

typedef enum {
#define XX(n, s) GW_BUY_A_##n,
    GW_BUY_ANSWERS(XX)
#undef XX
        GW_BUY_A_COUNT
} gw_buy_answer_t;

/* Actions, a bit set: the shell performs them in this order. */
enum {
    GW_BUY_DO_ENTER = 1u << 0,     /* a lottery entry instead of an order (its own answer) */
    GW_BUY_DO_ADMIT = 1u << 1,     /* claim the admission token, then ADMITTED */
    GW_BUY_DO_RESERVE = 1u << 2,   /* an order id, the spool's room, the reserve: RESERVED */
    GW_BUY_DO_CLAIM = 1u << 3,     /* claim the key's order (inv_claim): CLAIMED */
    GW_BUY_DO_GIVE_BACK = 1u << 4, /* give the reserved units back (a release event) */
    GW_BUY_DO_SPOOL = 1u << 5,     /* append the order's record: SPOOLED */
    GW_BUY_DO_COUNT = 1u << 6,     /* count the order's units as accepted */
    GW_BUY_DO_SYNC = 1u << 7,      /* wait for the group commit: SYNCED */
    GW_BUY_DO_KNOWN = 1u << 8,     /* the status table learns the order (durable now) */
};

typedef enum {
    GW_BUY_EV_HEAD = 0,
    GW_BUY_EV_BUYER,
    GW_BUY_EV_LIMITS,
    GW_BUY_EV_ADMITTED,
    GW_BUY_EV_RESERVED,
    GW_BUY_EV_CLAIMED,
    GW_BUY_EV_SPOOLED,
    GW_BUY_EV_SYNCED,
} gw_buy_ev_kind_t;

/* The sale's lottery phase as the buy sees it (gw_fair_phase_t's values). */
typedef enum {
    GW_BUY_FAIR_TOO_EARLY = 0, /* before the entry window */
    GW_BUY_FAIR_ENTER,         /* the entry window: an entry, not an order */
    GW_BUY_FAIR_DRAWING,       /* window closed, draw not done */
    GW_BUY_FAIR_OPEN,          /* drawn, or no lottery: first-come */
} gw_buy_fair_t;

/* What the status table says of a keyed retry's order (gw_orders_found_t). */
typedef enum {
    GW_BUY_SEEN_UNKNOWN = 0, /* never seen here */
    GW_BUY_SEEN_FOUND,       /* durable here */
    GW_BUY_SEEN_EXPIRED,     /* evicted (it was durable when put there) */
} gw_buy_seen_t;

/* One event's facts; each kind reads only its own members. */
typedef struct gw_buy_ev {
    gw_buy_ev_kind_t kind;
    /* HEAD: sold_out is the local flag, false when the request's key may be
     * a retry of a held order; waitlist_open is read only when sold out or
     * at LIMITS. */
    bool sold_out, waitlist_open;
    gw_buy_fair_t fair;
    int64_t starts_at_ms, ends_at_ms; /* 0: none */
    /* BUYER */
    uint32_t qty, per_user_limit;
    /* LIMITS */
    bool rate_allowed, room; /* room: a waiting room governs this buy */
    /* ADMITTED: the claim's result (GW_WR_CLAIMED 0, SPENT 1, REPLAY 2, or a
     * negative CM_E*: CM_EBUSY the table is full) */
    /* RESERVED: an INV_* outcome; CLAIMED: INV_RESERVED, CM_ENOTFOUND or an
     * error; SPOOLED, SYNCED: 0 or a CM_E* */
    int rc;
    /* RESERVED with INV_DUPLICATE: the key's order */
    bool ours;    /* minted by this incarnation (not another's or a taken-over node's) */
    bool claimed; /* a gateway claimed it (inv_reserve_req_t.claimed) */
    gw_buy_seen_t seen;
} gw_buy_ev_t;

/* One step's result. */
typedef struct gw_buy_out {
    gw_buy_answer_t answer; /* GW_BUY_A_NONE: not answered yet */
    unsigned actions;       /* GW_BUY_DO_* */
    int rc;                 /* the failure an answer reports (INV_FAILED, SPOOL_REFUSED, ...) */
} gw_buy_out_t;

/* A buy's state: held by the shell between events (all bytes: it packs). */
typedef struct gw_buy_core {
    uint8_t stage; /* the event expected next (internal) */
    bool fsync;    /* durability fsync: a 202 waits for the group commit */
    bool replayed; /* the record spooled is a keyed retry's order */
    uint8_t answer; /* the last answer given (gw_buy_answer_t; GW_BUY_A_NONE: none) */
} gw_buy_core_t;

/* Whether an answer keeps the admission token the buy claimed: a 202, a
 * replayed one too (the order of its key stands, and nothing else holds the
 * token for it); anything else gives it back. */
static inline bool gw_buy_answer_keeps_admission(gw_buy_answer_t a)
{
    return a == GW_BUY_A_ACCEPTED || a == GW_BUY_A_REPLAYED;
}

/* A new buy; fsync: the spool's durability is fsync. */
void gw_buy_core_init(gw_buy_core_t *c, bool fsync);
/* One event at now_ms. An event out of order answers 503 INV_FAILED with
 * CM_EINVAL (a shell's defect, never a buyer's). */
void gw_buy_core_step(gw_buy_core_t *c, const gw_buy_ev_t *ev, int64_t now_ms, gw_buy_out_t *out);
const char *gw_buy_answer_name(gw_buy_answer_t a);

#endif
