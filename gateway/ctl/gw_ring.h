/*
 * The dashboard's memory: a fixed ring of the last GW_RING_SLOTS one-second
 * samples of this gateway (answers by status class, error ratio, buy p50/p99,
 * stock left per sale, degrade level and concurrency limits, spool and relay
 * backlog, readiness, identity verifications), so a page opened after a sale
 * still shows the sale. A thread of its own takes a sample every
 * GW_RING_PERIOD_MS from the counters the workers already keep (summed on
 * read, as /metrics does): nothing is added to the request path. Each sample
 * also becomes this gateway's figures for the fleet view (gw_fleet.h).
 *
 * Memory is fixed at start: GW_RING_SLOTS samples of sizeof(gw_ring_sample_t)
 * (336 bytes each on x86-64: about 300 KiB); up to GW_RING_SALES sales and
 * GW_RING_DEPS dependencies are tracked (a new one takes the column of the one
 * seen longest ago, whose history is then dropped).
 */
#ifndef GW_RING_H
#define GW_RING_H

#include "gateway/base/gw_types.h"

#include <stddef.h>
#include <stdint.h>

#define GW_RING_SLOTS 900 /* 15 minutes of 1 s samples */
#define GW_RING_PERIOD_MS 1000
#define GW_RING_SALES 8
#define GW_RING_DEPS 8

/*
 * Starts the sampler (srv->ring). Called by gw_server_start once the workers,
 * the relay and the fleet run. Returns 0 or CM_ENOMEM (thread) with errbuf set.
 * Single-threaded init.
 */
int gw_ring_start(gw_server_t *srv, char *errbuf, size_t errlen);
/* Stops the sampler and frees the ring (NULL ring is fine). Call after the admin
 * listener stopped (it reads the ring) and before the fleet stops. */
void gw_ring_stop(gw_server_t *srv);

/*
 * GET /admin/v1/history: the samples taken after since_ms (wall ms; 0 = all)
 * as column arrays, ready for a chart (see docs/api.md). Returns a new string
 * (the caller frees) or NULL when out of memory. Thread-safe.
 */
char *gw_ring_history_json(gw_server_t *srv, int64_t since_ms);

/*
 * GET /admin/v1/fleet: every live gateway's current figures, this one's from
 * its ring and the others' as the fleet thread last read them from Redis (a
 * single-member list without a Redis inventory). Returns a new string or NULL
 * when out of memory. Thread-safe.
 */
char *gw_ring_fleet_json(gw_server_t *srv);

/*
 * The q-quantile (0 < q <= 1) of a histogram of n+1 non-cumulative buckets
 * with upper bounds bounds[0..n-1] (the last bucket is above bounds[n-1]),
 * interpolated linearly inside the bucket it falls in (the first bucket's
 * lower edge is 0), as Prometheus's histogram_quantile does; a quantile in the
 * last bucket is bounds[n-1]. Returns -1 for an empty histogram. Thread-safe.
 */
double gw_ring_quantile(const uint64_t *counts, const uint64_t *bounds, size_t n, double q);

#endif
