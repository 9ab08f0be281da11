/*
 * Token buckets in exact integer arithmetic. Pure functions: time is passed in.
 *
 * A policy is a rate in thousandths of a request per second (rate_milli; 1000
 * = 1 req/s; 0 = limit off) and a burst (bucket capacity, whole requests).
 * A bucket holds tokens in pico-requests (1e-12 of a request), so refilling
 * is elapsed_ns * rate_milli with no rounding at any rate: 1 ns at 1 milli-req/s
 * is exactly one pico-request. Capacity burst * 1e12 fits 64 bits for bursts up
 * to CM_RATE_BURST_MAX; rates up to CM_RATE_MILLI_MAX (1e9 req/s).
 *
 * Changing a policy at run time keeps the tokens a bucket holds (clamped to
 * the new capacity): counters are not reset.
 */
#ifndef CM_RATE_H
#define CM_RATE_H

#include <stdbool.h>
#include <stdint.h>

#define CM_RATE_PICO 1000000000000ull      /* pico-requests per request */
#define CM_RATE_BURST_MAX 10000000ull      /* 1e7 requests */
#define CM_RATE_MILLI_MAX 1000000000000ull /* 1e9 req/s */

typedef struct cm_rate_policy {
    uint64_t rate_milli; /* 0 = off */
    uint64_t burst;      /* >= 1 when rate_milli > 0 */
} cm_rate_policy_t;

/* 16 bytes. A zeroed bucket is "new": it starts full at its first use. */
typedef struct cm_bucket {
    uint64_t tokens_pico;
    uint64_t last_ns; /* 0 = never used */
} cm_bucket_t;

typedef struct cm_rate_result {
    bool allowed;
    uint64_t remaining;      /* whole requests left after this one */
    uint64_t retry_after_ns; /* when !allowed: time until `cost` tokens are there */
    uint64_t reset_ns;       /* time until the bucket is full again */
} cm_rate_result_t;

/*
 * Takes `cost` requests' worth of tokens if the bucket has them. A policy
 * with rate_milli 0 always allows. now_ns must be monotonic; a value earlier
 * than last_ns counts as no time passed. Not thread-safe: the caller guards
 * the bucket.
 */
void cm_bucket_take(cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t now_ns, uint64_t cost,
                    cm_rate_result_t *res);
/* Gives back `cost` tokens (a later check refused the request), up to capacity. */
void cm_bucket_refund(cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t cost);
/* true if the bucket would be full at now_ns: it carries no information and may be evicted. */
bool cm_bucket_is_idle(const cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t now_ns);

#endif
