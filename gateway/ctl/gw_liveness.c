/*
 * Liveness: whether every public worker's event loop still turns.
 *
 * Each worker stamps w->beat_ms once a loop turn (gw_h1_run, gateway/edge),
 * a relaxed store of the time the loop read anyway. An idle loop turns too:
 * the connection guard's sweep timer wakes it every 50..500 ms. A loop whose
 * stamp is older than server.liveness_timeout is stuck in one turn: a handler
 * in a blocking call, a livelock in a callback. Its connections wait unserved
 * while the admin listener, on threads of its own, would go on saying alive.
 * So /healthz on the admin listener fails with the worker and its age, and
 * systemd's watchdog is pinged only while the same check passes (main.c), so
 * a stuck gateway is restarted by whichever supervisor watches it.
 */
#include "gateway/ctl/gw_ctl.h"

#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/http/gw_http.h"

#include <stdatomic.h>
#include <stdio.h>
#include <uv.h>

bool gw_liveness_check(gw_server_t *srv, gw_liveness_t *out)
{
    *out = (gw_liveness_t){.timeout_ms = srv->cfg->liveness_timeout_ms};
    /* srv->life.ready is stored after the workers start and cleared before they
     * stop, so srv->pool.workers is theirs while it holds; starting and draining
     * have deadlines of their own (TimeoutStartSec, server.drain_timeout). */
    if (!out->timeout_ms || !atomic_load(&srv->life.ready))
        return true;
    /* the clock of uv_now, which the stamps are (CLOCK_MONOTONIC) */
    uint64_t now_ms = uv_hrtime() / 1000000u;
    bool ok = true;
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        uint64_t beat = atomic_load_explicit(&srv->pool.workers[i].beat_ms, memory_order_relaxed);
        if (!beat) /* not running (stopped, or not yet started) */
            continue;
        uint64_t age = now_ms > beat ? now_ms - beat : 0;
        if (age >= out->timeout_ms && (ok || age > out->age_ms)) {
            ok = false;
            out->worker = i;
            out->age_ms = age;
        }
    }
    return ok;
}

void gw_liveness_health(gw_server_t *srv, gw_resp_t *out)
{
    gw_liveness_t lv;
    if (gw_liveness_check(srv, &lv)) {
        gw_http_health(srv, false, out);
        return;
    }
    gw_resp_init(out, GW_R_NOT_READY);
    out->body_len = (size_t)snprintf(
        out->body, sizeof(out->body),
        "{\"status\":\"stuck\",\"code\":\"loop_stuck\",\"message\":\"worker %u's event loop has "
        "not turned for %llu ms (server.liveness_timeout %llu ms)\",\"worker\":%u,"
        "\"age_ms\":%llu,\"timeout_ms\":%llu}",
        lv.worker, (unsigned long long)lv.age_ms, (unsigned long long)lv.timeout_ms, lv.worker,
        (unsigned long long)lv.age_ms, (unsigned long long)lv.timeout_ms);
}

bool gw_liveness_watch(gw_server_t *srv, gw_liveness_watch_t *st)
{
    gw_liveness_t lv;
    bool ok = gw_liveness_check(srv, &lv);
    if (!ok && !st->stuck)
        cm_log_error("gw", "worker event loop stuck: /healthz fails, no watchdog ping",
                     "worker=%u age_ms=%llu timeout_ms=%llu", lv.worker,
                     (unsigned long long)lv.age_ms, (unsigned long long)lv.timeout_ms);
    else if (ok && st->stuck)
        cm_log_warn("gw", "worker event loops turn again", "worker=%u", st->worker);
    st->stuck = !ok;
    if (!ok)
        st->worker = lv.worker;
    return ok;
}
