/*
 * The fleet path in simulation (docs/simulation.md, "The fleet path"): several
 * gateways, each the real Redis inventory backend (inventory/inv_redis_*.c,
 * loop-less workers: the blocking path), sharing one simulated Redis
 * (sim_redis.h), driven from a seed and checked by an oracle after every step.
 */
#ifndef SIM_FLEET_H
#define SIM_FLEET_H

#include "sim/sim_world.h"

/* Runs one seed of the fleet path to the end (or the first broken promise). */
void sim_fleet_run(const sim_opts_t *opts, sim_result_t *out);

#endif
