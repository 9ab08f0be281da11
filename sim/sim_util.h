/*
 * What every world of the simulator does the same way: its draws from the
 * seed's generator, its trace and its verdict (sim_log_t), and a simulated
 * Redis as the routed clients' transport. One copy here, so two worlds cannot
 * differ in how a seed's draws are taken or a failure is told.
 */
#ifndef SIM_UTIL_H
#define SIM_UTIL_H

#include "common/cm_rand.h"
#include "sim/sim_redis.h"
#include "sim/sim_world.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* An event of probability p: one draw, none when p <= 0 (a fault turned off
 * leaves the seed's later draws as they were). */
bool sim_chance(cm_rand_t *rng, double p);
/* A number in [0, n): one draw (more when it lands in the biased tail); 0 and
 * no draw when n is 0. */
uint32_t sim_below(cm_rand_t *rng, uint32_t n);

/*
 * A world's trace and verdict. Each trace line starts "[<name><clock>] "; a
 * failure's why is "<name><clock>: <message>", and only the first failure is
 * told (the ones after it follow from it).
 */
typedef struct sim_log {
    FILE *trace;           /* --trace: a line per event, or NULL */
    sim_result_t *res;     /* the run's verdict: ok, why */
    const char *name;      /* before the clock: "fleet step ", "fair t=" */
    const uint64_t *clock; /* the world's step, read at each line */
    bool failed;           /* a failure was told */
} sim_log_t;

void sim_trace(const sim_log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first call sets log->res->ok false and its why, and traces "FAIL <message>". */
void sim_fail(sim_log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A simulated Redis drawing from rng, made the routed clients' transport
 * (inv_cluster_transport_set): every redis:// connection opened until
 * sim_transport_free reaches it. async: for worker loops (sim_redis_transport). */
sim_redis_t *sim_transport_new(cm_rand_t *rng, bool async);
/* The transport unset and rs freed. */
void sim_transport_free(sim_redis_t *rs);

#endif
