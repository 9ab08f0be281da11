/*
 * Registration and the leftovers in simulation (docs/simulation.md,
 * "Registration and the leftovers"): one gateway's sale with a registration
 * window, its start-window lottery and the waitlist of its losers: the real
 * registration store (gw_reg.c over gw_reg_local.c), entries, draw and
 * leftovers' walk (gw_lottery.c, gw_waitlist.c: the lottery thread's turns,
 * gw_fair_tick) over the real spool, inventory and accept sequence; the
 * journals (through sim_journal_fs.h) and the spool on a simulated disk
 * (sim_disk.h) with kills, deaths in the middle of a write, power losses and
 * failed fdatasyncs, driven from a seed and checked by an oracle after every
 * step.
 */
#ifndef SIM_FAIR_H
#define SIM_FAIR_H

#include "sim/sim_world.h"

#include <stdbool.h>
#include <stddef.h>

/* Runs one seed of the fairness world to the end (or the first broken promise). */
void sim_fair_run(const sim_opts_t *opts, sim_result_t *out);

#endif
