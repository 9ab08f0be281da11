/*
 * The start-window lottery's decisions without I/O (docs/design.md, "The
 * lottery core"): one core per sale, stepped by events, each answered with
 * what to say and what to do.
 *
 *   ENTRY      the window takes entries, one per person
 *   SEEDING    the window closed: the entrants are frozen, the seed's
 *              record is being made durable (no winner before it is)
 *   DRAWING    the frozen entrants in the seed's order (gw_fair_order),
 *              each accepted while the stock lasts; the rest lose, or wait
 *              in draw order for units freed later (the leftovers)
 *   ENDING     the winners' records and the end's, being made durable
 *   DONE       first-come (or the leftovers' waitlist) opens
 *
 * A restart feeds the records read back (RECORD) and the end of the read
 * (LOADED): a draw cut by a crash resumes with the same seed over the same
 * frozen entrants, its winners known from their records or the spool's.
 *
 * Each step fills a gw_fair_out_t: an answer for an entry (GW_FAIR_A_NONE:
 * none) and actions (GW_FAIR_DO_*) for the shell to perform, whose results
 * come back as the next event. No syscall, lock, clock read or allocation:
 * the shell (gw_lottery.c) and the simulator (sim/sim_world.c) run this same
 * code, and tests/unit/gateway/buy/test_gw_fair_core.c drives it alone.
 *
 * The shell keeps the entries (ids, accounts, persons, states); the core is
 * told an entry's facts in its event and names entries by their index (the
 * order the entries were added in).
 */
#ifndef GW_FAIR_CORE_H
#define GW_FAIR_CORE_H

#include "gateway/buy/gw_fair.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The sale's lottery state. Its members are listed once, here, so that
 * gw_fair_internal.h can name them in its per-sale struct as well (the
 * files that only read them: the waitlist, the fleet's draw). */
#define GW_FAIR_CORE_FIELDS                                                                        \
    uint64_t seed;      /* the draw's seed (seeded) */                                             \
    uint32_t *perm;     /* the draw order: ndraw entry indexes (the shell's buffer) */             \
    size_t ndraw;       /* the entrants frozen by the seed: entries 0..ndraw-1 */                  \
    size_t next;        /* the next draw position to decide */                                     \
    size_t told;        /* the draw positions before it have their outcomes durable: answered */   \
    bool closed;        /* the entries are taken: no more */                                       \
    bool seeded;        /* the seed's record is written */                                         \
    bool seed_unsynced; /* the seed (or sold-out) record read back or written and not durable      \
                           yet: no entrant is drawn before it is */                                \
    bool exhausted;     /* the stock ran out in the draw: the rest are not tried */                \
    uint8_t draw_wl;    /* the losers: 0 undecided, 1 lost, 2 waitlisted (decided once) */         \
    uint8_t lot_stage;  /* the reply awaited (internal) */                                         \
    bool lot_finished;  /* a restart read the end's record */                                      \
    bool lot_holed;     /* a restart read a hole after the seed's record, before the end's: */     \
                        /* records of the draw lost there (its winners' "W" may be) */             \
    _Atomic bool lot_done; /* the draw done, its end durable (any thread's phase reads it) */

typedef struct gw_fair_core {
    GW_FAIR_CORE_FIELDS
} gw_fair_core_t;

/* What an entrant is told (the shell words each; gw_fair_answer_name). */
#define GW_FAIR_ANSWERS(XX)                                                                        \
    XX(NONE, "none")                   /* nothing yet: perform the actions */                      \
    XX(ENTERED, "entered")             /* 202: a new entry */                                      \
    XX(ALREADY, "already_entered")     /* 202: the person's own entry back */                      \
    XX(OTHER_ACCOUNT, "other_account") /* 409: another account of the person entered */            \
    XX(NOT_OPEN, "not_open")           /* 425: before the window */                                \
    XX(CLOSED, "closed")               /* 503: the window closed, the draw runs */                 \
    XX(LOG_FAILED, "log_failed")       /* 503: the entry's record was not written */               \
    XX(FULL, "lottery_full")           /* 409: the sale holds max_entries entries */

typedef enum {
#define XX(n, s) GW_FAIR_A_##n,
    GW_FAIR_ANSWERS(XX)
#undef XX
        GW_FAIR_A_COUNT
} gw_fair_answer_t;

/* Actions, a bit set: the shell performs them in this order. */
enum {
    GW_FAIR_DO_APPEND_ENTRY = 1u << 0,  /* append the entry's record: ENTRY_LOGGED */
    GW_FAIR_DO_ADD_ENTRY = 1u << 1,     /* the entry joins the sale's entries (index: the count) */
    GW_FAIR_DO_SEED = 1u << 2,          /* append the seed's record, fdatasync: SEED_DURABLE
                                           (a fleet: freeze the entrants, offer the seed,
                                           read both back: SEED_TAKEN) */
    GW_FAIR_DO_MAKE_DURABLE = 1u << 3,  /* write the log again and fdatasync it: SEED_DURABLE */
    GW_FAIR_DO_ORDER = 1u << 4,         /* compute the draw order (gw_fair_core_order) */
    GW_FAIR_DO_DRAW = 1u << 5,          /* entry out.entry is next: its state, DRAW */
    GW_FAIR_DO_ACCEPT = 1u << 6,        /* accept entry out.entry (buy's accept): ACCEPTED */
    GW_FAIR_DO_SET_STATE = 1u << 7,     /* entry out.entry's outcome is out.state */
    GW_FAIR_DO_LEFTOVERS = 1u << 8,     /* every frozen entrant not won: gw_fair_core_loser */
    GW_FAIR_DO_LOG_OUTCOMES = 1u << 9,  /* the winners' records, the end's (out.waitlist),
                                           fdatasync: DRAW_LOGGED (a fleet: the store's done
                                           mark; each winner was put at its accept) */
    GW_FAIR_DO_PUBLISH = 1u << 10,      /* the draw is done: first-come or the waitlist opens */
    GW_FAIR_DO_LOG_SOLD_OUT = 1u << 11, /* the winners so far made durable, then the sold-out
                                           record, as durable as they are: SOLD_OUT_LOGGED */
};

typedef enum {
    GW_FAIR_EV_ENTER = 0,       /* an entry inside the window (the sale machine's to check):
                                   found, now, entrants, max_entries */
    GW_FAIR_EV_ENTRY_LOGGED,    /* the entry's record: rc */
    GW_FAIR_EV_TICK,            /* the draw's thread, after the window (the sale machine's to
                                   check): now, entrants, rnd, sale_over */
    GW_FAIR_EV_SEED_DURABLE,    /* the seed's record (or the log written again): rc */
    GW_FAIR_EV_DRAW,            /* the entry DO_DRAW named: state */
    GW_FAIR_EV_ACCEPTED,        /* the accept of DO_ACCEPT's entry: acc, sold_out */
    GW_FAIR_EV_DRAW_LOGGED,     /* the outcomes' and the end's records: rc */
    GW_FAIR_EV_RECORD,          /* a restart: one record read back (rec, found, within, entrants) */
    GW_FAIR_EV_LOADED,          /* a restart: the records read; rc: the log made durable again */
    GW_FAIR_EV_SOLD_OUT_LOGGED, /* the sold-out record: rc */
    /* a fleet's draw, its store Redis (gw_fair_fleet.c): */
    GW_FAIR_EV_ENTRIES_TAKEN, /* the window closed here: this gateway's entries go to the store */
    GW_FAIR_EV_SEED_TAKEN,    /* DO_SEED's answer: the entrants frozen and the seed kept in the
                                 store (entrants, seed: the first drawer's), or rc */
    GW_FAIR_EV_DRAW_KNOWN,    /* the store's draw is done: seed, entrants, waitlist (its mode) */
} gw_fair_ev_kind_t;

/* Whether the entrant's person has an entry already, and by which account. */
typedef enum { GW_FAIR_FOUND_NONE = 0, GW_FAIR_FOUND_SAME, GW_FAIR_FOUND_OTHER } gw_fair_found_t;

/* An accept's result (buy's accept sequence: reserve, spool, ...). */
typedef enum {
    GW_FAIR_ACC_WON = 0,  /* reserved and its record written */
    GW_FAIR_ACC_REFUSED,  /* reserved, the record refused: the units went back */
    GW_FAIR_ACC_SOLD_OUT, /* not enough stock left */
    GW_FAIR_ACC_DENIED,   /* refused for cause (the per-user limit, a key): lost */
    GW_FAIR_ACC_FAILED,   /* the inventory is unreachable: the draw resumes at the next tick */
} gw_fair_acc_t;

/* The entry log's records (the letters of <sale>.log; gw_lottery.c). */
typedef enum {
    GW_FAIR_REC_ENTRY = 'E',    /* an entry */
    GW_FAIR_REC_SEED = 'D',     /* the draw's seed: the entrants before it are frozen */
    GW_FAIR_REC_WON = 'W',      /* a winner whose order is durable */
    GW_FAIR_REC_END = 'F',      /* the draw done (waitlist: its losers wait for leftovers) */
    GW_FAIR_REC_SOLD_OUT = 'O', /* the stock ran out in the draw: the rest are not tried */
    GW_FAIR_REC_HOLE = '?',     /* no record: the load skipped a hole (bytes lost) here
                                   (cm_journal_lines_open_holes) */
} gw_fair_rec_kind_t;

/* One event's facts; each kind reads only its own members. */
typedef struct gw_fair_ev {
    gw_fair_ev_kind_t kind;
    gw_fair_found_t found;             /* ENTER; RECORD ENTRY: the person's entry */
    int rc;                            /* ENTRY_LOGGED, SEED_DURABLE, DRAW_LOGGED, LOADED */
    size_t entrants;                   /* ENTER, TICK, RECORD SEED: the entries so far */
    size_t max_entries;                /* ENTER: the cap on entries (0: none) */
    uint64_t rnd;                      /* TICK: a fresh random value (the seed if one is drawn) */
    bool sale_over;                    /* TICK: the sale ended: losers are lost, not waitlisted */
    uint8_t state;                     /* DRAW: the entry's gw_entry_state_t */
    gw_fair_acc_t acc;                 /* ACCEPTED */
    bool sold_out;                     /* ACCEPTED: the stock is gone now */
    /* RECORD */
    gw_fair_rec_kind_t rec;
    uint64_t seed; /* SEED; SEED_TAKEN, DRAW_KNOWN */
    bool within;   /* WON: the record names one of the frozen entrants */
    bool waitlist; /* END: its "w" mark; DRAW_KNOWN: the store's mode */
} gw_fair_ev_t;

/* One step's result. */
typedef struct gw_fair_out {
    gw_fair_answer_t answer; /* GW_FAIR_A_NONE: none */
    unsigned actions;        /* GW_FAIR_DO_* */
    size_t entry;            /* DRAW, ACCEPT, SET_STATE: the entry's index */
    uint8_t state;           /* SET_STATE: the entry's outcome (gw_entry_state_t) */
    bool waitlist;           /* LOG_OUTCOMES, PUBLISH: the losers wait for leftovers */
} gw_fair_out_t;

/* A new lottery, taking entries. */
void gw_fair_core_init(gw_fair_core_t *c);
/* One event (no clock: the windows are the sale machine's, gw_sale_core.h).
 * An event the core does not expect now does nothing (no answer, no action):
 * a shell's defect, never an entrant's. */
void gw_fair_core_step(gw_fair_core_t *c, const gw_fair_ev_t *ev, gw_fair_out_t *out);

/* The draw order of the frozen entrants: perm[0..ndraw) from c->seed and
 * keys[0..ndraw) (each entrant's keyed hash of its person), into the buffer
 * c->perm the shell gave (c->ndraw entries). */
void gw_fair_core_order(gw_fair_core_t *c, const uint64_t *keys);
/* What a frozen entrant that did not win becomes once the draw is decided
 * (DO_LEFTOVERS): waitlisted for leftovers in draw order, or lost (the sale
 * ended, the draw was not waitlisted, or lost_for_cause: its "X" record). */
gw_entry_state_t gw_fair_core_loser(const gw_fair_core_t *c, bool lost_for_cause);
/* Whether an entrant's outcome may be answered (a ticket, GET /v1/orders):
 * pos is its 1-based draw position (0: not in the draw). An outcome decided
 * by this process's draw is answered only once the record covering it is
 * durable: its "X" (lost for cause) and its order (won) with the next "O" or
 * the end's "F", so that no power loss lets a resumed draw decide otherwise
 * after the answer. Until then it reads as still being drawn. */
bool gw_fair_core_answered(const gw_fair_core_t *c, uint32_t pos);
/* Whether an order found in the spool at a restart is a winner of this
 * draw (it was accepted before the crash cut the draw): only while a draw
 * is seeded and not done. */
bool gw_fair_core_takes_spooled(const gw_fair_core_t *c);
/* The phase at a time is gw_sale_phase_at (gw_sale_core.h): the sale's machine's. */
const char *gw_fair_answer_name(gw_fair_answer_t a);

#endif
