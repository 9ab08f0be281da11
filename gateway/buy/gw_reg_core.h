/*
 * Registration's decisions without I/O (gw_reg.h for the feature): one core
 * per sale, stepped by events, each answered with an outcome and actions for
 * the shell, whose results come back as the next event. No syscall, lock,
 * clock read or allocation: the shell (gw_reg.c) and the simulator
 * (sim/sim_fair.c) run this same code. The shell keeps the set of persons;
 * the core keeps its count and the rules.
 */
#ifndef GW_REG_CORE_H
#define GW_REG_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A registration's outcomes: non-negative, never equal to a cm_err_t. */
typedef enum {
    GW_REG_ALREADY = 0, /* registered already: 200 with the same body */
    GW_REG_ADDED = 1,   /* new: 201 */
    GW_REG_FULL = 2,    /* cap persons registered: 409 */
    GW_REG_GONE = 3,    /* no registration any more (deleted, or its window removed, since
                         * the caller looked; gw_sale_core): 404 */
    GW_REG_SHUT = 4,    /* outside the registration window (gw_sale_core): 403
                         * registration_closed */
} gw_reg_outcome_t;

/* Actions, a bit set, performed in this order. */
enum {
    GW_REG_DO_APPEND = 1u << 0, /* append the person's line (one write(2)): APPENDED */
    GW_REG_DO_STORE = 1u << 1,  /* the store adds the person if absent and under the cap: STORED */
    GW_REG_DO_ADD = 1u << 2,    /* the person joins the shell's set */
    /* fdatasync the log through its length now (off the worker loop, a group
     * commit), then SYNCED with the outcome it holds (out.held) */
    GW_REG_DO_SYNC = 1u << 3,
};

typedef enum {
    GW_REG_EV_REGISTER = 0, /* a person asks (inside the window) */
    GW_REG_EV_APPENDED,     /* its record was written (rc): one gateway's log */
    GW_REG_EV_SYNCED,       /* the fdatasync covering it returned (rc, held) */
    GW_REG_EV_STORED,       /* a fleet's store checked and added in one script */
    GW_REG_EV_LINE,         /* a restart: one whole record of the log read back */
} gw_reg_ev_kind_t;

typedef struct gw_reg_ev {
    gw_reg_ev_kind_t kind;
    bool found;         /* REGISTER, LINE: the set holds the person already */
    uint64_t cap;       /* REGISTER: sales.max_registrations */
    bool store_decides; /* REGISTER: found and the cap are the store's to check (a fleet) */
    bool sync;          /* REGISTER: fsync durability (one gateway's log) */
    /* REGISTER: an fdatasync covered the whole log (a person found may be one
     * whose own sync is still running when not) */
    bool covered;
    int rc;             /* APPENDED, SYNCED: 0 or a negative cm_err_t */
    int held;           /* SYNCED: the outcome the sync was for (out.held of DO_SYNC) */
    int stored;         /* STORED: a gw_reg_outcome_t or a negative cm_err_t */
    const char *line;   /* LINE: the record's bytes */
    size_t len;         /* LINE */
} gw_reg_ev_t;

typedef struct gw_reg_out {
    bool answered;    /* the registration has its answer */
    int answer;       /* answered: a gw_reg_outcome_t or a negative cm_err_t */
    unsigned actions; /* GW_REG_DO_* */
    int held;         /* DO_SYNC: the outcome answered once the sync returns (SYNCED) */
    bool bad;         /* LINE: not a person (malformed): skipped */
} gw_reg_out_t;

typedef struct gw_reg_core {
    size_t n;       /* persons registered */
    bool appending; /* a person's line is being written: its answer awaited */
    bool sync;      /* the one being written: its answer waits for the fdatasync */
} gw_reg_core_t;

/* An empty registration. */
void gw_reg_core_init(gw_reg_core_t *c);
/* One event. An event the core does not expect now does nothing. */
void gw_reg_core_step(gw_reg_core_t *c, const gw_reg_ev_t *ev, gw_reg_out_t *out);

#endif
