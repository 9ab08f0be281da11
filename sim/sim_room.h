/*
 * The waiting room's world (docs/simulation.md): one gateway's room, the
 * real local store (gateway/buy/gw_room_store.c) over the real core
 * (gw_room_core.h), its log the real journal on a simulated disk,
 * joins before and after the start, ticks, admissions, buys with the tokens,
 * crashes and power losses, checked by an oracle after every step
 * (sim_room.c). Run by sim_run after the sale's world, from the same seed.
 */
#ifndef SIM_ROOM_H
#define SIM_ROOM_H

#include "sim/sim_world.h"

/* Runs the room's world of opts->seed; on a broken promise sets out->ok
 * false and out->why. Adds its steps, crashes and faults to out. */
void sim_room_run(const sim_opts_t *opts, sim_result_t *out);

#endif
