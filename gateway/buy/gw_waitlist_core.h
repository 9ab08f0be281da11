/*
 * The leftovers' decisions without I/O (docs/design.md "Leftovers by lot"):
 * when a walk runs, who is next and where the walk stops. The shell
 * (gw_waitlist.c) and the simulator (sim/sim_fair.c) perform the promotions
 * and feed their results back.
 *
 *   TICK      the lottery's thread: the sale's stock as the shell saw it
 *             (the sale's end is the sale's machine's: gw_sale_core.c
 *             answers DO_END); no walk over the stock a walk admitted
 *             nobody from, which the core remembers
 *   WALK      the walk begins (after a fleet's lock): the stock left now
 *   ENTRY     the entry at out.pos (a draw position): waitlisted or not, qty
 *   PROMOTED  the promotion of out.pos: its result, the stock left after it
 *
 * No syscall, lock, clock read or allocation; draw positions only (the
 * shell maps a position to its entry through the draw order).
 */
#ifndef GW_WAITLIST_CORE_H
#define GW_WAITLIST_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Actions, a bit set. */
enum {
    GW_WL_DO_END = 1u << 0,  /* the sale ended (gw_sale_core.c): every waitlisted entry is lost */
    GW_WL_DO_WALK = 1u << 1, /* a walk is due: (take the fleet's lock, then) WALK */
    GW_WL_DO_LOOK = 1u << 2, /* tell the entry at draw position out.pos: ENTRY */
    GW_WL_DO_PROMOTE = 1u << 3,  /* promote the entry at out.pos: PROMOTED */
    GW_WL_DO_PASS_END = 1u << 4, /* the walk is over: out.admitted, out.failed */
};

typedef enum {
    GW_WL_EV_TICK = 0, /* left, acc, version, pending */
    GW_WL_EV_WALK,     /* left, ndraw */
    GW_WL_EV_ENTRY,    /* waitlisted, qty */
    GW_WL_EV_PROMOTED, /* result, left */
} gw_wl_ev_kind_t;

/* A promotion's result. */
typedef enum {
    GW_WL_WON = 0,  /* accepted: an order */
    GW_WL_LOST,     /* refused for cause (the per-user limit, a key): lost */
    GW_WL_NO_STOCK, /* the stock seen was gone: it keeps its place */
    GW_WL_FAILED,   /* the inventory, the log, the spool or the fleet's lock: tried again later */
} gw_wl_result_t;

typedef struct gw_wl_ev {
    gw_wl_ev_kind_t kind;
    int64_t left;          /* TICK, WALK, PROMOTED: the sale's stock left */
    int64_t acc;           /* TICK: the units it accepted */
    uint64_t version;      /* TICK: its version (a restock, a release moves it) */
    bool pending;          /* TICK: a fleet's promotion begun and not finished */
    size_t ndraw;          /* WALK: the draw's entrants */
    bool waitlisted;       /* ENTRY */
    uint32_t qty;          /* ENTRY */
    gw_wl_result_t result; /* PROMOTED */
} gw_wl_ev_t;

typedef struct gw_wl_out {
    unsigned actions; /* GW_WL_DO_* */
    size_t pos;       /* LOOK, PROMOTE: the draw position */
    bool admitted;    /* PASS_END: someone was promoted */
    bool failed;      /* PASS_END: a promotion failed: no new walk for a while */
} gw_wl_out_t;

typedef struct gw_wl_core {
    size_t head;   /* the draw position before which no entry waits (it only grows) */
    size_t at;     /* the walk's position */
    size_t ndraw;  /* the walk's end */
    int64_t left;  /* the walk's stock */
    uint8_t stage; /* internal */
    bool met;      /* the walk met a waitlisted entry that fits */
    bool admitted; /* the walk promoted someone */
    /* the stock of the TICK that began the walk, and the one a walk admitted nobody from */
    struct gw_wl_stock {
        int64_t left, acc;
        uint64_t version;
    } saw, seen;
} gw_wl_core_t;

/* A waitlist whose first waiter is at draw position head or later. */
void gw_wl_core_init(gw_wl_core_t *c, size_t head);
/* One event. An event the core does not expect now does nothing. */
void gw_wl_core_step(gw_wl_core_t *c, const gw_wl_ev_t *ev, gw_wl_out_t *out);

#endif
