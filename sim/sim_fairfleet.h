/*
 * A fleet's fairness in simulation (docs/simulation.md, "The fleet's
 * fairness"): a sale of three gateways on one simulated Redis (sim_redis.h),
 * each a real gw_fair_t on the Redis inventory, driven through the product's
 * own Redis store (gw_fair_lot_ops_t's and gw_reg_ops_t's Redis tables):
 * registration, lottery entries (one per person, persons with two accounts on
 * two gateways), the window's close, the pushes, one drawer under the lock,
 * every gateway reading the draw, the waitlist's promotions of the units that
 * cancelled orders free (gw_waitlist_fleet.c) up to the sale's end; with lost
 * replies, replies later than the pool's timeout, Redis down and back, a
 * restart of Redis with persistence or (one seed in eight) without, and a
 * gateway's restart.
 */
#ifndef SIM_FAIRFLEET_H
#define SIM_FAIRFLEET_H

#include "sim/sim_world.h"

/* Runs one seed of the fleet's fairness to the end (or the first broken promise). */
void sim_fairfleet_run(const sim_opts_t *opts, sim_result_t *out);

#endif
