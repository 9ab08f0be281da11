/*
 * The simulated sale (docs/simulation.md): gateways (the real memory or
 * Redis inventory, the real spool on a simulated disk and the real relay,
 * stepped, the real buy, replay and compensation cores), a broker, and
 * settlement (the real batch writer on a simulated sink), driven from a seed
 * and checked by an oracle after every step. One thread; nothing is shared
 * between two runs but the active plant.
 */
#ifndef SIM_WORLD_H
#define SIM_WORLD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sim_opts {
    uint64_t seed;
    uint64_t steps;  /* driver steps with faults before the heal phase */
    FILE *trace;     /* a readable line per step, or NULL */
    bool fsync_only; /* every gateway in durability fsync (else a third in write) */
    bool no_stops;   /* no graceful stops: every kill is a crash, and the seed's draws
                      * are those of a simulator without stops (regression seeds) */
    int redis;         /* the inventory: 1 Redis (sim_redis.h) on every gateway, -1 memory on
                        * every one, 0 the seed's draw (seeds 28 mod 32: Redis per gateway) */
} sim_opts_t;

typedef struct sim_result {
    bool ok;
    char why[512];    /* the oracle's first complaint */
    uint64_t steps;   /* steps run, heal phase included */
    uint64_t crashes; /* simulated process crashes (kill -9, death mid-call) */
    uint64_t power_losses;
    uint64_t stops;       /* graceful stops (SIGTERM) of gateways and settle workers */
    uint64_t fsync_fails; /* failed fsyncs the disks injected */
    uint64_t evictions;   /* their dropped pages the disks evicted (sim_disk.h) */
    uint64_t torn_writes; /* writes a death cut at a random byte */
    uint64_t accepted;    /* orders answered 202 */
} sim_result_t;

/* Runs one seed to the end (or the first broken promise). */
void sim_run(const sim_opts_t *opts, sim_result_t *out);

#endif
