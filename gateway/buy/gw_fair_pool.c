/*
 * The fleet's pooled blocking connections to the inventory's Redis, in two
 * pools (gw_fair_internal.h "gw_fair_pool.c" has the contract):
 *
 * - the worker loops' (registration, its entry check, the lottery entry's
 *   person mark and an entry's lookup by id, the room's join, the admission
 *   token's claim and give-back): inventory.redis_timeout for the
 *   connect and for each command, the budget of the buy path's reserve. A
 *   blocking call holds its whole loop (every connection on it, /healthz
 *   included), so a stalled Redis (SIGSTOP, an overloaded host, dropped
 *   packets) must not cost the loop one full wait per call: with the other
 *   pool's 2 s, four registrations in a row and a /healthz behind them wait
 *   8 s, and a load balancer marks the gateway dead at the sale's peak
 *   (tests/integration/111-fleet-stall.py holds the bound). After
 *   GW_FAIR_FAIL_FAST_AFTER timeouts or transport failures in a row (one:
 *   every such wait held a whole loop) the pool fails fast: for
 *   GW_FAIR_FAIL_FAST_MS every call fails at once without touching Redis (the
 *   routes answer 503 with Retry-After 1); the first call after the window
 *   asks Redis again (one caller: the others still fail fast meanwhile) and
 *   any call that Redis answers closes the window. A stall therefore costs a
 *   worker loop one timeout, then one a second, not one per call
 *   (tests/integration/118-fleet-sleep-loop.py).
 * - the rest (the lottery thread's room tick, the admin's exports and counts):
 *   2 s, no window; they run on their own threads.
 *
 * The worker pool keeps one idle connection per worker and a couple more:
 * each worker holds at most one at a time, so a burst on every worker at once
 * finds its connections pooled instead of connecting and closing one per call.
 */
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "inventory/inv_fleet.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* Log lines of the fail-fast window: at most one per this many ms each kind. */
#define FAIL_FAST_LOG_MS 5000

void gw_fair__pool_init(gw_fair_pool_t *p, const cm_redis_url_t *addr, size_t cap,
                        uint32_t timeout_ms, bool fail_fast)
{
    /* the window closed and every count 0 */
    *p = (gw_fair_pool_t){
        .addr = addr, .cap = cap ? cap : 1, .timeout_ms = timeout_ms, .fail_fast = fail_fast};
    p->idle = cm_xcalloc(p->cap, sizeof(*p->idle));
    pthread_mutex_init(&p->mu, NULL);
}

void gw_fair__pool_deinit(gw_fair_pool_t *p)
{
    if (!p->idle)
        return;
    for (size_t i = 0; i < p->nidle; i++)
        inv_fleet_close(p->idle[i]);
    free(p->idle);
    p->idle = NULL;
    p->nidle = 0;
    pthread_mutex_destroy(&p->mu);
}

/* True at most once per FAIL_FAST_LOG_MS for the clock *last. */
static bool log_due(_Atomic uint64_t *last, uint64_t now)
{
    uint64_t prev = atomic_load_explicit(last, memory_order_relaxed);
    if (prev && now - prev < FAIL_FAST_LOG_MS)
        return false;
    return atomic_compare_exchange_strong_explicit(last, &prev, now, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* A call failed on the transport (a timeout, a lost or refused connection): opens
 * the window, or starts it again after a failed probe. */
static void pool_failed(gw_fair_pool_t *p, const char *why)
{
    atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
    if (!p->fail_fast)
        return;
    uint32_t n = atomic_fetch_add_explicit(&p->consecutive, 1, memory_order_relaxed) + 1;
    if (n < GW_FAIR_FAIL_FAST_AFTER && atomic_load(&p->down_until_ms) == 0)
        return; /* not yet an outage */
    uint64_t now = cm_mono_ms();
    uint64_t was = atomic_exchange(&p->down_until_ms, now + GW_FAIR_FAIL_FAST_MS);
    if (was)
        return; /* a probe failed: the same outage */
    atomic_fetch_add_explicit(&p->windows, 1, memory_order_relaxed);
    if (log_due(&p->opened_log_ms, now))
        cm_log_warn("fair", "redis failed a worker-loop call: such calls fail at once for a while",
                    "window_ms=%u timeout_ms=%u err=\"%s\" windows=%llu", GW_FAIR_FAIL_FAST_MS,
                    p->timeout_ms, why,
                    (unsigned long long)atomic_load_explicit(&p->windows, memory_order_relaxed));
}

/* Redis answered a call: closes the window if one is open. */
static void pool_answered(gw_fair_pool_t *p)
{
    if (!p->fail_fast)
        return;
    if (atomic_load_explicit(&p->consecutive, memory_order_relaxed))
        atomic_store_explicit(&p->consecutive, 0, memory_order_relaxed);
    if (atomic_load(&p->down_until_ms) == 0)
        return;
    if (atomic_exchange(&p->down_until_ms, 0) == 0)
        return;
    if (log_due(&p->closed_log_ms, cm_mono_ms()))
        cm_log_info("fair", "redis answers worker-loop calls again",
                    "refused_fast=%llu windows=%llu",
                    (unsigned long long)atomic_load_explicit(&p->refused, memory_order_relaxed),
                    (unsigned long long)atomic_load_explicit(&p->windows, memory_order_relaxed));
}

/*
 * Whether the call may go to Redis: not inside a window; past it, only the one
 * caller that moves the window's end on (the probe).
 */
static bool pool_admit(gw_fair_pool_t *p, char *errbuf, size_t errlen)
{
    if (!p->fail_fast)
        return true;
    uint64_t until = atomic_load(&p->down_until_ms);
    if (until == 0)
        return true;
    uint64_t now = cm_mono_ms();
    if (now >= until &&
        atomic_compare_exchange_strong(&p->down_until_ms, &until, now + GW_FAIR_FAIL_FAST_MS))
        return true;
    atomic_fetch_add_explicit(&p->refused, 1, memory_order_relaxed);
    cm_errbuf_set(errbuf, errlen,
                  "redis did not answer this gateway's last call within %u ms; not asked again "
                  "for up to %u ms",
                  p->timeout_ms, GW_FAIR_FAIL_FAST_MS);
    return false;
}

inv_fleet_conn_t *gw_fair__pool_get(gw_fair_pool_t *p, char *errbuf, size_t errlen)
{
    if (!pool_admit(p, errbuf, errlen))
        return NULL;
    pthread_mutex_lock(&p->mu);
    inv_fleet_conn_t *c = p->nidle ? p->idle[--p->nidle] : NULL;
    pthread_mutex_unlock(&p->mu);
    if (c)
        return c;
    c = inv_fleet_connect(p->addr, p->timeout_ms, errbuf, errlen);
    if (!c)
        pool_failed(p, errbuf);
    return c;
}

void gw_fair__pool_put(gw_fair_pool_t *p, inv_fleet_conn_t *c)
{
    if (!c)
        return;
    if (inv_fleet_broken(c)) {
        pool_failed(p, inv_fleet_errstr(c));
        inv_fleet_close(c);
        return;
    }
    pool_answered(p);
    pthread_mutex_lock(&p->mu);
    if (p->nidle < p->cap) {
        p->idle[p->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    inv_fleet_close(c);
}

void gw_fair__pool_stats(const gw_fair_pool_t *p, void *obj)
{
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:b}", "timeout_ms", (json_int_t)p->timeout_ms, "failed",
        (json_int_t)atomic_load_explicit(&p->failed, memory_order_relaxed), "refused_fast",
        (json_int_t)atomic_load_explicit(&p->refused, memory_order_relaxed), "windows",
        (json_int_t)atomic_load_explicit(&p->windows, memory_order_relaxed), "failing_fast",
        atomic_load(&p->down_until_ms) != 0);
    json_object_set_new(obj, "worker_redis", o);
}
