/*
 * The one blocking Redis connection routine of the project, shared by the
 * Redis inventory backend (admin and loop-less callers) and the fleet thread
 * (gateway/gw_fleet.c), so both connect, authenticate and select a database
 * the same way.
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

struct inv;
/*
 * The Redis backend's circuit breaker: returns its state (0 closed, 1 open,
 * 2 half-open) and how often it opened since start in *opens, or -1 when
 * `inv` is not the Redis backend. Thread-safe (atomics).
 */
int inv_redis_breaker(struct inv *inv, uint64_t *opens);

#endif
