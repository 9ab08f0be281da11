/*
 * The 429 of a rate limiter's refusal, as the buy path and the fairness
 * routes (gw_fair_routes.c) answer it: one file of its own, so that those
 * routes reach the sale path's answer without calling into gw_buy.c (the
 * checker's FILE_CYCLES, tests/unit/gateway_interfaces.sh).
 */
#include "gateway/buy/gw_rate_reply.h"

#include "gateway/base/gw_base.h"

#include <stdatomic.h>
#include <stdio.h>

void gw_buy_rate_limited(gw_req_t *r, const gw_limit_verdict_t *v)
{
    gw_worker_t *w = r->w;
    atomic_fetch_add_explicit(&w->ctr.rate_limited[v->scope], 1, memory_order_relaxed);
    uint64_t retry = gw_retry_after_s(v->retry_after_ns);
    uint64_t window =
        v->policy.rate_milli
            ? (v->policy.burst * 1000ull + v->policy.rate_milli - 1) / v->policy.rate_milli
            : 1;
    if (!window)
        window = 1;
    /*
     * A crowd refused by one scope gets the same answer over and over (same
     * policy, retry and remaining): keep the last one per scope prepared, as
     * for sold out, so a refusal costs no response building.
     */
    gw_rl_cache_t *c = &w->rl_cache[v->scope];
    if (c->resp && c->retry == retry && c->burst == v->policy.burst && c->window == window &&
        c->remaining == v->remaining) {
        r->cached = c->resp;
        r->cached_reply = GW_R_RATE_LIMITED;
        return;
    }
    const char *scope = gw_scope_name(v->scope);
    char extra[96];
    snprintf(extra, sizeof(extra), "\"scope\":\"%s\",\"retry_after\":%llu", scope,
             (unsigned long long)retry);
    gw_resp_error(&r->resp, GW_R_RATE_LIMITED, extra,
                  "too many requests (%s limit); retry after %llu s", scope,
                  (unsigned long long)retry);
    gw_resp_retry_after(&r->resp, retry);
    gw_resp_header(&r->resp, "RateLimit-Policy", "\"%s\";q=%llu;w=%llu", scope,
                   (unsigned long long)v->policy.burst, (unsigned long long)window);
    gw_resp_header(&r->resp, "RateLimit", "\"%s\";r=%llu;t=%llu", scope,
                   (unsigned long long)v->remaining, (unsigned long long)retry);
    gw_prep_t *mr = gw_prep_new(&r->resp, w); /* its Date follows w's (gw_prep_redate) */
    gw_prep_free(c->resp);
    c->resp = mr;
    c->retry = retry;
    c->burst = v->policy.burst;
    c->window = window;
    c->remaining = v->remaining;
    r->cached = mr;
    r->cached_reply = GW_R_RATE_LIMITED;
}
