/*
 * A simulated Redis (docs/simulation.md, "The fleet path"): one server in the
 * simulator's thread that the real Redis inventory backend reaches through the
 * blocking client's transport seam (inv_cluster_transport_t). It runs the
 * backend's real Lua scripts in an embedded Lua 5.1, as Redis does, over an
 * in-memory keyspace, and injects the faults of the fleet path: latency past
 * the client's timeout (the command runs K steps later, or at once with its
 * reply late, or never), lost replies, a server down, a restart with and
 * without persistence, and a failover to a replica that has a prefix of the
 * writes. Deterministic from the seed it is given; one thread.
 */
#ifndef SIM_REDIS_H
#define SIM_REDIS_H

#include "common/cm_rand.h"
#include "inventory/inv_cluster.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sim_redis sim_redis_t;

typedef struct sim_redis_faults {
    double p_timeout; /* a call the client gives up on (then: ran, runs later, or never) */
    double p_lost;    /* a call that ran and whose reply is lost with the connection */
    bool down;        /* refuses every connection and call (nothing runs) */
    bool replica_lags; /* the replica stops taking writes (WAIT answers 0) */
    /* The caller is killed at its die_after-th call from now (blocking transport): that call
     * runs and its reply is lost, then `dead`: every connect and call is refused, as to a
     * process gone, until the driver clears it. */
    uint32_t die_after;
    bool dead;
} sim_redis_faults_t;

/* A new server with an empty keyspace; rng is the world's (borrowed). */
sim_redis_t *sim_redis_new(cm_rand_t *rng);
void sim_redis_free(sim_redis_t *r);

/* The transport to install with inv_cluster_transport_set (stepped; owned by r).
 * With async, its async side too (inv_cluster_async_t): the worker loops of a
 * backend opened then talk to r, driven by sim_redis_async_step and
 * inv_redis_worker_step. */
const inv_cluster_transport_t *sim_redis_transport(sim_redis_t *r, bool async);

/* The server's turn for the worker loops' connections: connects complete or
 * fail, some commands of each connection run, replies are handed over (the
 * callbacks run here), connections break (faults, down, restart). */
void sim_redis_async_step(sim_redis_t *r);

/* The faults in force (changed by the driver between steps). */
sim_redis_faults_t *sim_redis_faults(sim_redis_t *r);

/* The caller's wall clock runs ms ahead of the server's (a gateway's skew, set by the driver
 * around that gateway's calls): the server's clock (expiries, TIME, the log's replay) is
 * cm_wall_ms() - ms. */
void sim_redis_skew(sim_redis_t *r, int64_t ms);

/* Runs the commands whose time has come (late commands of timed-out calls). */
void sim_redis_step(sim_redis_t *r, uint64_t step);

/* The replica takes every write so far (replication caught up). */
void sim_redis_replicate(sim_redis_t *r);
/* The replica takes the next write, if it lags. */
void sim_redis_replicate_one(sim_redis_t *r);

/*
 * A crash and restart: every connection breaks, late commands are dropped and
 * the script cache is empty; with `persist` (appendonly, appendfsync always)
 * the keyspace is every write that ran, else it is empty.
 */
void sim_redis_restart(sim_redis_t *r, bool persist);
/* A failover after a master crash: the replica's writes are all there is. */
void sim_redis_failover(sim_redis_t *r);
/* A failover to a replica that missed the last k writes the master acknowledged
 * (asynchronous replication, no WAIT): every connection breaks, the keyspace is
 * the writes before them. Returns the writes lost (fewer when fewer ran). */
size_t sim_redis_failover_lose(sim_redis_t *r, size_t k);
/* Calls and connects are refused, as to a process gone, while gone(ctx) is true
 * (the caller died in its disk's write: sim_disk_die_after); NULL: never. */
void sim_redis_dies_with(sim_redis_t *r, bool (*gone)(void *ctx), void *ctx);

/* Reads for the oracle (no fault, no log): a hash field's value, or NULL. */
const char *sim_redis_hget(sim_redis_t *r, const char *key, const char *field);
/* A string's value, or NULL. */
const char *sim_redis_get(sim_redis_t *r, const char *key);
/* Calls fn for every field of a hash. */
void sim_redis_hforeach(sim_redis_t *r, const char *key,
                        void (*fn)(const char *field, const char *val, void *ctx), void *ctx);

/* Counters for the report. */
typedef struct sim_redis_stats {
    uint64_t calls, timeouts, lost, late_ran, restarts, failovers, scripts;
} sim_redis_stats_t;
const sim_redis_stats_t *sim_redis_stats(const sim_redis_t *r);

#endif
