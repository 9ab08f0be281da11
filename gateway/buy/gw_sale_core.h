/*
 * A sale's fairness as one state machine without I/O: its configuration, its
 * phase and the four cores that decide inside a phase (gw_reg_core.h,
 * gw_room_core.h, gw_fair_core.h, gw_waitlist_core.h), stepped by one event
 * type, answered in one output. The phases, what each takes and the records
 * each asks for: docs/design.md, "A sale's fairness in one screen".
 *
 * An event outside its phase is answered here (out.refused) and
 * reaches no core; one inside it reaches its core with the window filled in:
 * a shell sends what it saw, never a window. A step of one kind touches only
 * that kind's core, so each shell steps under its own core's lock (fs->mu,
 * wr_mu, reg_mu; the leftovers on the lottery thread), and the TICK, which
 * steps no core, needs none: it names the parts due (GW_SALE_DO_*) from the
 * configuration (relaxed atomics) and the progress the cores publish. A core
 * pointer NULL: the sale has none, its events are refused.
 */
#ifndef GW_SALE_CORE_H
#define GW_SALE_CORE_H

#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_core.h"
#include "gateway/buy/gw_reg_core.h"
#include "gateway/buy/gw_room_core.h"
#include "gateway/buy/gw_waitlist_core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_SALE_PHASES(XX)                                                                         \
    XX(BEFORE, "before")                                                                           \
    XX(REGISTRATION, "registration")                                                               \
    XX(PREQUEUE, "prequeue")                                                                       \
    XX(ENTRY, "entry")                                                                             \
    XX(DRAW, "draw")                                                                               \
    XX(ADMISSION, "admission")                                                                     \
    XX(LEFTOVERS, "leftovers")                                                                     \
    XX(OPEN, "open")                                                                               \
    XX(ENDED, "ended")

typedef enum {
#define XX(n, s) GW_SALE_PH_##n,
    GW_SALE_PHASES(XX)
#undef XX
        GW_SALE_PHASE_COUNT
} gw_sale_phase_t;

/* A sale's fairness configuration (times in ms since the epoch, 0: none). */
typedef struct gw_sale_cfg {
    int64_t starts_at_ms, ends_at_ms;
    int64_t reg_opens_ms, reg_closes_ms; /* both 0: no registration */
    uint64_t reg_cap;                    /* sales.max_registrations */
    int64_t fair_window_ms;              /* 0: no lottery */
    int64_t fair_early_ms;
    size_t max_entries; /* the lottery's cap on entries (0: none) */
    int64_t room_rate;  /* admissions per second; 0: no waiting room */
    bool waitlist;      /* the draw's losers wait for leftovers (else they lose) */
} gw_sale_cfg_t;

/* The configuration as the machine holds it: relaxed atomics, read without a
 * lock; gw_sale_cfg_get's snapshot reads them one by one (a racing edit may
 * show in part). */
typedef struct gw_sale_conf {
    _Atomic int64_t starts_at_ms, ends_at_ms;
    _Atomic int64_t reg_opens_ms, reg_closes_ms;
    _Atomic uint64_t reg_cap;
    _Atomic int64_t fair_window_ms;
    _Atomic int64_t fair_early_ms;
    _Atomic size_t max_entries;
    _Atomic int64_t room_rate;
    _Atomic bool waitlist;
} gw_sale_conf_t;

typedef enum {
    GW_SALE_EV_CONFIGURE = 0, /* cfg: the sale's terms (new or edited) */
    GW_SALE_EV_TICK,          /* the lottery thread's tick: the parts due (GW_SALE_DO_*) */
    GW_SALE_EV_REG,           /* reg: a registration event (gw_reg_ev_t) */
    GW_SALE_EV_ROOM,          /* room: a room event (gw_room_ev_t) */
    GW_SALE_EV_FAIR,          /* fair: a lottery event (gw_fair_ev_t) */
    GW_SALE_EV_WL,            /* wl: a leftovers event (gw_wl_ev_t) */
} gw_sale_ev_kind_t;

/* What a tick tells (the shell's facts, never a window). */
typedef struct gw_sale_tick {
    bool waiting; /* anyone waitlisted still waits (or a fleet's promotion is pending) */
} gw_sale_tick_t;

typedef struct gw_sale_ev {
    gw_sale_ev_kind_t kind;
    union {
        gw_sale_cfg_t cfg;
        gw_sale_tick_t tick;
        gw_reg_ev_t reg;
        gw_room_ev_t room;
        gw_fair_ev_t fair;
        gw_wl_ev_t wl;
    };
} gw_sale_ev_t;

/* What a tick asks of the shell: the parts due, each stepped by its own
 * events under its own lock. */
enum {
    GW_SALE_DO_ENTRIES = 1u << 0, /* a lottery not drawn: the store's work on its entries */
    GW_SALE_DO_DRAW = 1u << 1,    /* its window closed: draw (FAIR TICKs), resume, or learn it */
    GW_SALE_DO_WL = 1u << 2,      /* the leftovers: WL TICK (which answers the sale's end) */
    GW_SALE_DO_ROOM = 1u << 3,    /* a waiting room: its rate and its store's upkeep */
    GW_SALE_DO_ADMIT = 1u << 4,   /* its sale started: seal the pre-queue (ROOM SEAL) and
                                   * move the front (ROOM TICK) */
};

/* An event's answer and the store operations it asks for: the members of
 * the event's kind are filled (a TICK: actions and phase). */
typedef struct gw_sale_out {
    gw_sale_phase_t phase; /* the phase the event was decided in (a store's reply,
                            * never refused, is decided in none: 0) */
    bool refused;          /* outside its phase: answered here, no core stepped */
    unsigned actions;      /* TICK: GW_SALE_DO_* */
    gw_reg_out_t reg;      /* REG (refused: answer GW_REG_GONE or GW_REG_SHUT) */
    struct {
        int rc;              /* gw_room_core_step's return (refused: CM_ENOTFOUND) */
        gw_wr_join_t answer; /* JOIN */
        gw_room_out_t recs;  /* the records to write */
    } room;
    gw_fair_out_t fair; /* FAIR (refused: answer NOT_OPEN or CLOSED) */
    gw_wl_out_t wl;     /* WL */
} gw_sale_out_t;

typedef struct gw_sale_core {
    gw_sale_conf_t cfg;   /* zero: a plain sale, always open */
    /* the draw published with its losers waiting, and no tick since found nobody
     * waiting: written by the lottery thread, read by any step's phase (relaxed) */
    _Atomic bool leftovers;
    gw_fair_core_t *fair; /* the lottery's (the shell's storage), NULL: none */
    gw_room_core_t *room;
    gw_reg_core_t *reg;
    gw_wl_core_t wl; /* the leftovers' (lottery thread) */
} gw_sale_core_t;

/* A sale with the cores the shell keeps (each may be NULL), initialised by
 * their owners; plain (open) until its CONFIGURE. */
void gw_sale_core_init(gw_sale_core_t *c, gw_fair_core_t *fair, gw_room_core_t *room,
                       gw_reg_core_t *reg);

/* A snapshot of c's configuration (relaxed loads). Any thread. */
void gw_sale_cfg_get(const gw_sale_core_t *c, gw_sale_cfg_t *out);

/* The phase at now_ms. Pure. */
gw_sale_phase_t gw_sale_phase(const gw_sale_core_t *c, int64_t now_ms);
/* The phase at now_ms of cfg, its draw done (drawn), its losers waiting
 * (leftovers): the one function of the windows (gw_sale_phase's and the
 * lock-free checks'). Pure. */
gw_sale_phase_t gw_sale_phase_at(const gw_sale_cfg_t *cfg, bool drawn, bool leftovers,
                                 int64_t now_ms);
/* The phase as the buy path sees it (gw_fair_phase_t). */
gw_fair_phase_t gw_sale_buy_phase(gw_sale_phase_t p);
const char *gw_sale_phase_name(gw_sale_phase_t p);

/* One event at now_ms; out filled (gw_sale_out_t). */
void gw_sale_step(gw_sale_core_t *c, const gw_sale_ev_t *ev, int64_t now_ms, gw_sale_out_t *out);

#endif
