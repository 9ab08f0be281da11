/*
 * Token buckets in exact integer arithmetic (see cm_rate.h).
 *
 * Units: tokens in pico-requests, rates in milli-requests per second. One
 * nanosecond at 1 milli-req/s is 1e-3 * 1e-9 = 1e-12 requests = 1 pico-request,
 * so a refill is elapsed_ns * rate_milli pico-requests, an exact integer
 * product: nothing is rounded and nothing drifts, at 0.001 req/s or at 1e9
 * req/s alike. Refilling is therefore lossless whatever the call pattern, and
 * last_ns can always be moved to now.
 *
 * "Used" marker: last_ns == 0 means a new bucket (cm_rate.h), but a fake clock
 * may legitimately pass now_ns == 0. So a used bucket stores now_ns with bit 63
 * set (CM_BUCKET_USED); monotonic nanoseconds reach bit 63 after 292 years.
 */
#include "common/cm_rate.h"

#define CM_BUCKET_USED (1ull << 63)
#define CM_BUCKET_TIME_MASK (~CM_BUCKET_USED)

static uint64_t pol_rate(const cm_rate_policy_t *p)
{
    return p->rate_milli > CM_RATE_MILLI_MAX ? CM_RATE_MILLI_MAX : p->rate_milli;
}

/* Capacity in pico-requests; a burst of 0 with a rate counts as 1. */
static uint64_t pol_cap(const cm_rate_policy_t *p)
{
    uint64_t burst = p->burst;
    if (burst == 0)
        burst = 1;
    if (burst > CM_RATE_BURST_MAX)
        burst = CM_RATE_BURST_MAX;
    return burst * CM_RATE_PICO;
}

static uint64_t div_ceil(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

/*
 * Tokens the bucket holds at now_ns (clamped to cap), without changing it.
 * rate must be > 0.
 */
static uint64_t tokens_at(const cm_bucket_t *b, uint64_t rate, uint64_t cap, uint64_t now_ns)
{
    if (b->last_ns == 0 || b->tokens_pico >= cap)
        return cap;
    uint64_t last = b->last_ns & CM_BUCKET_TIME_MASK;
    uint64_t now = now_ns & CM_BUCKET_TIME_MASK;
    uint64_t elapsed = now > last ? now - last : 0;
    uint64_t need = cap - b->tokens_pico;
    /* elapsed * rate > need, tested without overflowing the product. */
    if (elapsed > need / rate)
        return cap;
    return b->tokens_pico + elapsed * rate; /* <= need + tokens = cap: no overflow */
}

static void refill(cm_bucket_t *b, uint64_t rate, uint64_t cap, uint64_t now_ns)
{
    uint64_t now = now_ns & CM_BUCKET_TIME_MASK;
    uint64_t last = b->last_ns & CM_BUCKET_TIME_MASK;
    b->tokens_pico = tokens_at(b, rate, cap, now_ns);
    if (b->last_ns == 0 || now > last)
        b->last_ns = now | CM_BUCKET_USED;
}

void cm_bucket_take(cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t now_ns, uint64_t cost,
                    cm_rate_result_t *res)
{
    uint64_t rate = pol_rate(p);
    if (rate == 0) {
        res->allowed = true;
        res->remaining = UINT64_MAX;
        res->retry_after_ns = 0;
        res->reset_ns = 0;
        return;
    }
    uint64_t cap = pol_cap(p);
    refill(b, rate, cap, now_ns);

    /* A cost beyond the capacity can never be met: refuse, "retry never". */
    uint64_t cost_pico = cost > cap / CM_RATE_PICO ? UINT64_MAX : cost * CM_RATE_PICO;
    if (cost_pico != UINT64_MAX && b->tokens_pico >= cost_pico) {
        b->tokens_pico -= cost_pico;
        res->allowed = true;
        res->retry_after_ns = 0;
    } else {
        res->allowed = false;
        res->retry_after_ns =
            cost_pico == UINT64_MAX ? UINT64_MAX : div_ceil(cost_pico - b->tokens_pico, rate);
    }
    res->remaining = b->tokens_pico / CM_RATE_PICO;
    res->reset_ns = div_ceil(cap - b->tokens_pico, rate);
}

void cm_bucket_refund(cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t cost)
{
    if (pol_rate(p) == 0 || b->last_ns == 0)
        return; /* off, or new (full) */
    uint64_t cap = pol_cap(p);
    uint64_t room = b->tokens_pico >= cap ? 0 : cap - b->tokens_pico;
    uint64_t add = cost > cap / CM_RATE_PICO ? cap : cost * CM_RATE_PICO;
    b->tokens_pico = add >= room ? cap : b->tokens_pico + add;
}

bool cm_bucket_is_idle(const cm_bucket_t *b, const cm_rate_policy_t *p, uint64_t now_ns)
{
    uint64_t rate = pol_rate(p);
    if (rate == 0 || b->last_ns == 0)
        return true;
    uint64_t cap = pol_cap(p);
    return tokens_at(b, rate, cap, now_ns) >= cap;
}
