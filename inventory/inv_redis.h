/*
 * The one blocking Redis connection routine of the project, shared by the
 * Redis inventory backend (admin and loop-less callers) and the fleet thread
 * (gateway/base/gw_fleet.c), so both connect, authenticate and select a database
 * the same way; defined in inv_cluster.c, the lowest file that connects.
 * Private to inventory/: other modules use inv.h and inv_fleet.h.
 */
#ifndef INV_REDIS_H
#define INV_REDIS_H

#include "common/cm_url.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Connects to addr (from cm_redis_url_parse), sends AUTH (user and password,
 * or password) and SELECT when the address has them, and sets the command
 * timeout to timeout_ms. Returns the context (free it with redisFree), or
 * NULL with "redis: <what failed>" in errbuf. Blocks up to timeout_ms per step.
 * Thread-safe (a new context each call).
 */
redisContext *inv_redis_connect(const cm_redis_url_t *addr, uint32_t timeout_ms, char *errbuf,
                                size_t errlen);

/*
 * The sync thread's periodic work, run in the caller's thread: re-reads every
 * sale of the index into the local view. Only for a backend opened while a
 * stepped transport was set (inv_cluster_transport_set: no sync thread);
 * CM_EINVAL otherwise. The simulator's one thread only.
 */
struct inv;
int inv_redis_sync_step(struct inv *inv);

/*
 * A worker loop's timers, run in the caller's thread: the calls past their
 * timeout fail (CM_ETIMEOUT) and the connections whose reconnect back-off
 * has passed are opened again, by the transport's clock. Only for a worker
 * opened with a loop while a transport with an async side was set
 * (inv_cluster_async_t: the loop is then never run for it); CM_EINVAL
 * otherwise. Its prepare phase is inv_flush. The simulator's one thread only.
 */
struct inv_worker;
int inv_redis_worker_step(struct inv_worker *wk);

#endif
