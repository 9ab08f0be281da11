/*
 * Registration and the leftovers in simulation (docs/simulation.md,
 * "Registration and the leftovers"): one gateway's sale with a registration
 * window, its start-window lottery and the waitlist of its losers, the real
 * decision cores (gw_reg_core.h, gw_fair_core.h, gw_waitlist_core.h) with
 * their shells here, the logs on a simulated disk (sim_disk.h) with kills,
 * deaths in the middle of a write, power losses and failed fdatasyncs,
 * driven from a seed and checked by an oracle after every step.
 */
#ifndef SIM_FAIR_H
#define SIM_FAIR_H

#include "sim/sim_world.h"

/* Runs one seed of the fairness world to the end (or the first broken promise). */
void sim_fair_run(const sim_opts_t *opts, sim_result_t *out);

#endif
