/*
 * Planted bugs: one-line defects in the product code that the simulator's
 * self-test (sim/, ctest sim.plants) must find, to prove its oracle bites.
 * They exist only in a build configured with -DFLASHGATE_PLANTS=ON (the
 * compile definition FLASHGATE_PLANTS); in every other build CM_PLANT(x) is
 * the constant 0, the planted branch is dead code, and no plant symbol is
 * linked (sim/plant_check.sh looks with nm).
 *
 * Use: `if (CM_PLANT(SPOOL_RELEASE_EARLY)) <the defect>; else <the code>;`
 * One plant is active at a time (cm_plant_set), chosen by the simulator.
 */
#ifndef CM_PLANT_H
#define CM_PLANT_H

#include <stdbool.h>

/* The planted defects. cm_plant_names[] names them (same order). */
typedef enum {
    CM_PLANT_NONE = 0,
    CM_PLANT_INV_CAS_ONE_MORE,      /* memory CAS takes a unit when stock is 0 (oversell) */
    CM_PLANT_INV_IDEM_RESERVES,     /* a keyed retry reserves again instead of INV_DUPLICATE */
    CM_PLANT_INV_RELEASE_TWICE,     /* inv_release gives units back for a released order */
    CM_PLANT_INV_REPLAY_NO_MARK,    /* replay takes the units but not the user's purchase */
    CM_PLANT_INV_RESTOCK_LOST,      /* a restock of a sold-out sale keeps the sold-out flag */
    CM_PLANT_SPOOL_RELEASE_EARLY,   /* the release point may pass the synced end */
    CM_PLANT_SPOOL_SKIP_LAST_SEG,   /* recovery forgets the last segment */
    CM_PLANT_SPOOL_PAST_POINT,      /* recovery appends below a release point past the data */
    CM_PLANT_SPOOL_SYNC_IGNORED,    /* a failed fdatasync is reported as success */
    CM_PLANT_SPOOL_TEAR_KEPT,       /* recovery keeps a torn tail's last bad record */
    CM_PLANT_SETTLE_NO_DEDUPE,      /* a second copy of an order is inserted again */
    CM_PLANT_SETTLE_CANCEL_SETTLED, /* a cancel of a failed order marks it cancelled */
    CM_PLANT_COUNT
} cm_plant_t;

#ifdef FLASHGATE_PLANTS
extern const char *const cm_plant_names[CM_PLANT_COUNT];
/* The active plant (CM_PLANT_NONE: none). Single-threaded setup only. */
void cm_plant_set(cm_plant_t p);
/* The plant of that name, or -1. */
int cm_plant_find(const char *name);
extern cm_plant_t cm_plant_active;
#define CM_PLANT(name) (cm_plant_active == CM_PLANT_##name)
#else
#define CM_PLANT(name) 0
#endif

#endif
