/*
 * The 429 of a rate limiter's refusal (gw_rate_reply.c), answered alike by
 * the buy (gw_buy.c) and the fairness routes (gw_fair_routes.c), so that
 * neither reaches into the other for it.
 */
#ifndef GW_RATE_REPLY_H
#define GW_RATE_REPLY_H

#include "gateway/base/gw_types.h"

#include <stdint.h>

/* A wait of ns nanoseconds as Retry-After: whole seconds rounded up, at least 1. Pure. */
static inline uint64_t gw_retry_after_s(uint64_t ns)
{
    uint64_t s = (ns + 999999999ull) / 1000000000ull;
    return s ? s : 1;
}

/* The 429 of a limiter's refusal v (as the buy answers it). Loop thread of r->w. */
struct gw_limit_verdict;
void gw_buy_rate_limited(gw_req_t *r, const struct gw_limit_verdict *v);

#endif
