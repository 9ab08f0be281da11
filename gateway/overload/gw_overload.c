/*
 * Overload control wired into the server (the pure parts are in
 * gw_overload_core.c). Per worker loop: one adaptive limit per dependency
 * (Redis, the spool's fsync, each upstream), a breaker per upstream, the
 * queuing-delay window and DAGOR's user-priority cut, and a timer every
 * GW_OL_TICK_MS that measures the loop's lag, closes the windows, moves the
 * process-wide degradation level (one lock, taken with trylock by whichever
 * worker's window closes) and pauses or resumes accepting connections.
 *
 * Signals, and where they are measured:
 *  - loop lag: the tick timer's lateness (how long a new event waits before
 *    the loop looks at it);
 *  - request queuing delay: when a request's head is in (gw_http_head), the
 *    time since its loop iteration started plus the last lag;
 *  - dependency RTT: the dependency's own time when its client measures one
 *    (Redis: from the write to the kernel's receive stamp of the reply), else from
 *    gw_ol_acquire to gw_ol_release.
 *
 * Backpressure (the "door"): when a worker's accept queue (the kernel's
 * queue of connections it has not accepted yet, TCP_INFO's tcpi_unacked on the
 * listening socket) holds more than overload.queue_target's worth of its
 * measured request rate, the worker stops listening: shutdown() on the
 * listening socket (kept bound), so the kernel answers new SYNs with a RST
 * (connection refused) at no cost to this process, and a load balancer tries
 * another node at once. The connections queued at that moment are reset too
 * (they would have waited past the target). When the worker has finished what
 * it accepted, or after a hold (gw_overload.h, gw_door_tick), listen() again
 * reopens the door. Not a paused accept or a smaller backlog: a long kernel
 * queue makes every admitted request wait seconds under a CPU cap, and a full
 * backlog drops SYNs silently, so clients retry after 1 s and are served
 * seconds late. docs/design.md "Overload control" has the cost model.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/overload/gw_overload_t.h"
#include "inventory/inv.h"
#include "inventory/inv_fleet.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define GW_OL_TICK_MS 10
/* An idle worker ticks every GW_OL_IDLE_TICK_MS, once it has had no request
 * for GW_OL_IDLE_AFTER ticks with nothing in progress, its door open and the
 * level 0: 100 wakeups a second of an idle gateway were most of its idle
 * CPU (~3 ms/s), which a CPU quota pays from its budget. The first
 * connection or read on the loop (gw_ol_iteration) puts it back to
 * GW_OL_TICK_MS before its request is served, so no signal waits for it. */
#define GW_OL_IDLE_TICK_MS 100
#define GW_OL_IDLE_AFTER 100
/* The door's constants and decisions are in gw_overload_core.c (gw_door_t),
 * tested with an injected clock; this file does its sockets. */

/*
 * What the kernel says about a worker thread's window: its CPU time and its
 * run-queue wait (/proc/thread-self/schedstat), and its cgroup's throttled
 * time (cpu.stat), for gw_busy_own_pct. Loop thread only; fds opened lazily on
 * the thread they describe; -1 = not open, -2 = not available.
 */
typedef struct gw_ol_cgstat {
    uint64_t periods, throttled, throttled_ns; /* quota periods, those that ran out, time */
} gw_ol_cgstat_t;

typedef struct gw_ol_sched {
    int self_fd, cg_fd;
    uint64_t cg_look_us;     /* when the cgroup path was last resolved */
    uint64_t cpu_ns, delay_ns; /* at the window start */
    gw_ol_cgstat_t cg;       /* at the window start */
    bool quota_hit;          /* the quota ran out in the last window */
    bool saturated;          /* ... in at least half of its periods */
} gw_ol_sched_t;

typedef struct gw_ol_worker {
    gw_worker_t *w;
    unsigned ndeps;
    gw_alimit_t dep[GW_OL_DEPS_MAX];
    gw_breaker_t br[GW_OL_DEPS_MAX]; /* upstreams only */
    /* the request that holds br[dep]'s half-open probe (compared, never read) */
    const gw_req_t *probe[GW_OL_DEPS_MAX];
    gw_qdelay_t q;
    uv_timer_t tick;
    bool tick_started;
    bool tick_slow;         /* ticking every GW_OL_IDLE_TICK_MS */
    bool traffic;           /* a connection or read since the last tick */
    unsigned idle_ticks;    /* ticks in a row with no traffic, nothing in progress */
    uint64_t tick_due_us;
    uint64_t lag_us;        /* the last measured loop lag */
    uint64_t iter_start_us; /* current loop iteration */
    uint64_t win_idle_ns, win_start_ns; /* w->edge.idle_ns at the window start */
    gw_ol_sched_t sched;    /* our load or the machine's (gw_busy_own_pct) */
    uint64_t rnd;
    /* the door (top of this file) */
    bool door_ok;           /* the port was given explicitly: listen() again keeps it */
    gw_door_t door;         /* its decisions; door.shut: the door is shut */
    uint64_t door_check_ms; /* uv_now of the last accept-queue look */
    uint64_t listen_err_ms; /* uv_now of the last failed reopen's log line */
    uint32_t live;          /* requests begun and not finished */
    _Atomic bool pub_paused;
    _Atomic uint64_t shed[GW_CRIT_COUNT];
    _Atomic uint64_t degraded[GW_DEG_COUNT]; /* fallbacks by cause (gw_ol_count_degraded) */
    _Atomic uint64_t shed_users, accept_pauses, accept_reset, accept_trimmed, shed_late;
    _Atomic uint64_t accept_conns;
    /* too-late checks answered by the loop's bound, and by the kernel's figure */
    _Atomic uint64_t late_looks_loop, late_looks_kernel, shed_late_upstream;
    gw_rs_base_t rs_base; /* X-Request-Start's baseline (gw_rs_base_learn); loop thread */
    uint64_t uprio_minute;   /* the minute uprio_key is for (UINT64_MAX: none yet) */
    cm_hash_key_t uprio_key; /* gw_ol_prio_key of it */
    /* each dependency's answered calls by round trip (GW_OL_RTT_BOUNDS_US, the last
     * +Inf) and their sum: flashgate_dependency_latency_seconds. Written by the
     * loop thread only (a load and a store), summed by gw_overload_snapshot. */
    _Atomic uint64_t rtt_buckets[GW_OL_DEPS_MAX][GW_OL_RTT_NBOUNDS + 1];
    _Atomic uint64_t rtt_sum_us[GW_OL_DEPS_MAX];
} gw_ol_worker_t;

typedef struct gw_overload {
    pthread_mutex_t mu; /* guards sm, reason, since, last_eval */
    gw_level_sm_t sm;
    _Atomic int level;
    _Atomic int pinned; /* -1 = automatic */
    char reason[160];
    int64_t since_wall_ms;
    uint64_t last_eval_us;
    bool adaptive, accept_pause, shed_buys, redis_dep, spool_dep;
    unsigned retry_min, retry_max;
    uint64_t target_us, interval_us;
    uint32_t limit_min, limit_init, up_limit_init, limit_max;
    uint32_t br_failures;
    uint64_t br_cooldown_ms;
    size_t nroutes;
    gw_proxy_route_t routes[GW_PROXY_ROUTES_MAX];
    /* Each route's latency target in force (ms, 0 none): the configured one until
     * an operator sets another (gw_ol_route_target); each worker's tick hands it
     * to its own limit, which only its loop thread may touch. */
    _Atomic uint32_t route_target_ms[GW_PROXY_ROUTES_MAX];
    /* for the periodic summary */
    uint64_t last_shed[GW_CRIT_COUNT], last_users, last_rejected[GW_OL_DEPS_MAX], last_pauses;
    uint64_t last_degraded[GW_DEG_COUNT];
    uint64_t last_level_changes;
    uint64_t last_redis_opens;
    uint8_t *uprio_secret; /* GW_UPRIO_SECRET_LEN bytes in a secret page (prio_secret_load) */
    _Atomic int debug_cut; /* PUT /admin/v1/debug/overload: the user cut of every worker, -1 none */
} gw_overload_t;

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000u;
}

/*---- start / stop ----*/

/* overload.priority_key_file into secret; an error names the option. */
static int key_file_read(const gw_config_t *cfg, uint8_t *secret, char *errbuf, size_t errlen)
{
    char why[600] = "";
    int rc = gw_key_file_read(cfg->ol_priority_key_file, secret,
                              "can tell which buyers overload shedding admits", why, sizeof(why));
    if (rc == CM_ENOTFOUND)
        snprintf(why, sizeof(why), "%s does not exist", cfg->ol_priority_key_file);
    if (rc != 0)
        snprintf(errbuf, errlen, "overload.priority_key_file: %s", why);
    return rc;
}

int gw_ol_priority_key_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    if (!cfg->ol_priority_key_file[0])
        return 0;
    uint8_t secret[GW_UPRIO_SECRET_LEN];
    int rc = key_file_read(cfg, secret, errbuf, errlen);
    explicit_bzero(secret, sizeof(secret));
    return rc;
}

/* The user-priority secret (gw_ol_prio_key): overload.priority_key_file;
 * else with a Redis inventory the fleet's (ours offered with SET NX, so the
 * first gateway's stays and every gateway ranks a user alike); else drawn
 * for this process, a single node having no one to agree with. */
static int prio_secret_load(gw_server_t *srv, gw_overload_t *ol, char *errbuf, size_t errlen)
{
    const gw_config_t *cfg = srv->cfg;
    ol->uprio_secret = gw_secret_alloc(GW_UPRIO_SECRET_LEN);
    if (!ol->uprio_secret) {
        snprintf(errbuf, errlen, "cannot map a page for the user-priority key");
        return CM_ENOMEM;
    }
    const char *from = "process";
    int rc = 0;
    if (cfg->ol_priority_key_file[0]) {
        if ((rc = key_file_read(cfg, ol->uprio_secret, errbuf, errlen)) != 0)
            return rc;
        from = "file";
    } else if (RAND_bytes(ol->uprio_secret, GW_UPRIO_SECRET_LEN) != 1) {
        snprintf(errbuf, errlen, "overload: no random bytes for the user-priority key");
        return CM_EIO;
    } else if (cm_redis_url_is(cfg->inventory)) {
        bool changed = false;
        if ((rc = gw_key_fleet(cfg, INV_FLEET_KEY_UPRIO, ol->uprio_secret, &changed, errbuf,
                               errlen)) != 0)
            return rc;
        from = "fleet";
    }
    cm_log_info("overload", "user-priority key loaded", "from=%s", from);
    return 0;
}

int gw_overload_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    const gw_config_t *cfg = srv->cfg;
    gw_overload_t *ol = cm_xcalloc(1, sizeof(*ol));
    atomic_init(&ol->debug_cut, -1);
    pthread_mutex_init(&ol->mu, NULL);
    gw_level_sm_init(&ol->sm, cfg->ol_exit_hold_ms, cm_mono_ms());
    atomic_init(&ol->level, 0);
    atomic_init(&ol->pinned, cfg->ol_level == 0 ? -1 : cfg->ol_level - 1);
    if (cfg->ol_level != 0) {
        atomic_store(&ol->level, cfg->ol_level - 1);
        snprintf(ol->reason, sizeof(ol->reason), "pinned by configuration");
    } else {
        snprintf(ol->reason, sizeof(ol->reason), "start");
    }
    ol->since_wall_ms = cm_wall_ms();
    ol->adaptive = cfg->ol_adaptive;
    ol->accept_pause = cfg->ol_accept_pause;
    ol->shed_buys = cfg->ol_shed_buys;
    ol->redis_dep = (inv_caps(srv->stores.inv) & INV_CAP_SHARED) != 0; /* a remote store */
    ol->spool_dep = cfg->durability == GW_DURABILITY_FSYNC;
    ol->retry_min = (unsigned)cfg->ol_retry_min_s;
    ol->retry_max = (unsigned)cfg->ol_retry_max_s;
    ol->target_us = cfg->ol_queue_target_ms * 1000u;
    ol->interval_us = cfg->ol_queue_interval_ms * 1000u;
    ol->limit_min = (uint32_t)cfg->ol_limit_min;
    ol->limit_init = (uint32_t)cfg->ol_limit_initial;
    ol->up_limit_init = (uint32_t)cfg->ol_up_limit_initial;
    ol->limit_max = (uint32_t)cfg->ol_limit_max;
    ol->br_failures = (uint32_t)cfg->proxy_breaker_failures;
    ol->br_cooldown_ms = cfg->proxy_breaker_cooldown_ms;
    /* the upstreams come from gw_px_start (gw_ol_register_upstreams) */
    srv->ol = ol;
    return prio_secret_load(srv, ol, errbuf, errlen);
}

void gw_overload_stop(gw_server_t *srv)
{
    if (!srv->ol)
        return;
    for (unsigned i = 0; srv->pool.workers && i < srv->pool.nworkers; i++)
        CM_FREE(srv->pool.workers[i].ol);
    pthread_mutex_destroy(&srv->ol->mu);
    gw_secret_free(srv->ol->uprio_secret, GW_UPRIO_SECRET_LEN);
    CM_FREE(srv->ol);
}

static void on_tick(uv_timer_t *t);

/* Hands each route's latency target in force (gw_ol_route_target) to this
 * worker's own limit of it: at start, and at every tick. Loop thread of o. */
static void sync_targets(gw_ol_worker_t *o, gw_overload_t *ol)
{
    for (unsigned i = GW_DEP_UPSTREAM; i < o->ndeps; i++) {
        uint64_t target = 1000ull * atomic_load_explicit(&ol->route_target_ms[i - GW_DEP_UPSTREAM],
                                                         memory_order_relaxed);
        if (target != o->dep[i].rtt_target_us)
            gw_alimit_set_target(&o->dep[i], target);
    }
}

void gw_ol_worker_start(gw_worker_t *w)
{
    gw_overload_t *ol = w->srv->ol;
    gw_ol_worker_t *o = cm_xcalloc(1, sizeof(*o));
    o->w = w;
    uint64_t now = now_us();
    o->ndeps = GW_DEP_UPSTREAM + (unsigned)ol->nroutes;
    for (unsigned i = 0; i < o->ndeps; i++) {
        /* Buyers come in a burst the moment a sale opens, to a store that serves
         * hundreds in flight: their limit starts high. An upstream's capacity is
         * unknown and its routes are not the buy path: its limit starts as a
         * small window slow start grows (gw_alimit_init()). */
        gw_alimit_init(&o->dep[i], i >= GW_DEP_UPSTREAM ? ol->up_limit_init : ol->limit_init,
                       ol->limit_min, ol->limit_max, now);
        /* A dependency that answers within a quarter of the gateway's own queue
         * target costs a buyer nothing worth a refusal (gw_overload.h). */
        gw_alimit_set_floor(&o->dep[i], ol->target_us / 4);
        gw_breaker_init(&o->br[i], ol->br_failures, ol->br_cooldown_ms);
    }
    sync_targets(o, ol);
    gw_qdelay_init(&o->q, ol->target_us, ol->interval_us, now);
    o->rnd = now ^ ((uint64_t)w->index << 32);
    o->uprio_minute = UINT64_MAX;
    /* A socket bound to port 0 gets a new port from listen() after a shutdown. */
    char host[128];
    unsigned port = 0;
    o->door_ok = gw_config_split_hostport(w->srv->cfg->listen, host, sizeof(host), &port) == 0 &&
                 port != 0;
    gw_door_init(&o->door, ol->target_us, now);
    /* Time spent waiting in epoll (w->edge.idle_ns, gw_h1_run), to tell our own
     * load from a starved CPU. */
    o->win_start_ns = uv_hrtime();
    o->win_idle_ns = w->edge.idle_ns;
    o->sched.self_fd = o->sched.cg_fd = -1;
    uv_timer_init(&w->loop, &o->tick);
    o->tick.data = o;
    o->tick_due_us = now + GW_OL_TICK_MS * 1000u;
    uv_timer_start(&o->tick, on_tick, GW_OL_TICK_MS, GW_OL_TICK_MS);
    o->tick_started = true;
    w->ol = o;
}

static void set_paused(gw_ol_worker_t *o, bool pause);
static bool door_allowed(gw_ol_worker_t *o);
static void sched_close(gw_ol_sched_t *sc);

static void tick_closed(uv_handle_t *h)
{
    (void)h; /* the state lives until gw_overload_stop: stats may still read it */
}

void gw_ol_worker_stop(gw_worker_t *w)
{
    gw_ol_worker_t *o = w->ol;
    if (!o || !o->tick_started)
        return;
    /* Marked open, not listening again: the stop closes the listening socket,
     * and connections queued in between would be reset rather than sent by
     * the kernel to a worker still listening. */
    if (o->door.shut) {
        gw_door_set_shut(&o->door, false, now_us());
        atomic_store_explicit(&o->pub_paused, false, memory_order_relaxed);
    }
    o->tick_started = false;
    sched_close(&o->sched);
    uv_timer_stop(&o->tick);
    uv_close((uv_handle_t *)&o->tick, tick_closed);
}

/* A tick counts as idle only on time: gw_overload.h says why. */
bool gw_door_idle_tick(bool nothing_in_progress, uint64_t lag_us)
{
    return nothing_in_progress && lag_us < GW_DOOR_LATE_TICK_US;
}

/*---- signals ----*/

void gw_ol_iteration(gw_worker_t *w)
{
    gw_ol_worker_t *o = w->ol;
    if (!o)
        return;
    o->iter_start_us = now_us();
    o->traffic = true;
    if (o->tick_slow && o->tick_started) {
        o->tick_slow = false;
        o->idle_ticks = 0;
        o->tick_due_us = o->iter_start_us + GW_OL_TICK_MS * 1000u;
        uv_timer_start(&o->tick, on_tick, GW_OL_TICK_MS, GW_OL_TICK_MS);
    }
}

/* Slows the tick of a worker that has been idle for GW_OL_IDLE_AFTER ticks. */
static void tick_idle_check(gw_ol_worker_t *o, gw_level_t level, uint64_t now)
{
    gw_worker_t *w = o->w;
    bool idle = !o->traffic && o->live == 0 && w->suspended == 0 && !o->door.shut &&
                level == GW_LEVEL_NORMAL;
    o->traffic = false;
    o->idle_ticks = idle ? o->idle_ticks + 1 : 0;
    if (o->tick_slow || o->idle_ticks < GW_OL_IDLE_AFTER)
        return;
    o->tick_slow = true;
    o->tick_due_us = now + GW_OL_IDLE_TICK_MS * 1000u;
    uv_timer_start(&o->tick, on_tick, GW_OL_IDLE_TICK_MS, GW_OL_IDLE_TICK_MS);
}

/*
 * The worker's connections that close after their answer: those whose answer
 * is out and those trimmed whose answer is not yet (gw_h1_leaving). The trim
 * is counted when it is decided: a burst of buys read in one loop iteration
 * is answered at its end (the spool write), and counted only at the answer
 * every head of the burst saw the same count and was trimmed.
 */
static uint64_t leaving(const gw_worker_t *w)
{
    return gw_h1_leaving(w);
}

/*
 * While the door is shut, a keep-alive connection still brings a request as
 * soon as its last answer left, so the connections already open are a queue
 * of their own behind a shut door. Past the budget, this request's
 * connection closes after its answer: it answers with Connection: close and
 * closes (RFC 9112 9.6), so the client learns it from the answer, not from a
 * reset under a request already sent.
 */
static void door_trim(gw_ol_worker_t *o, gw_req_t *r)
{
    gw_worker_t *w = o->w;
    if (!r->conn || r->close_after ||
        !gw_door_trims(gw_h1_open_count(w), leaving(w), gw_door_keep(&o->door)))
        return;
    gw_h1_trim(r);
    atomic_fetch_add_explicit(&o->accept_trimmed, 1, memory_order_relaxed);
}

void gw_ol_conn_started(gw_worker_t *w)
{
    if (!w->ol)
        return;
    gw_door_conn(&w->ol->door);
    atomic_fetch_add_explicit(&w->ol->accept_conns, 1, memory_order_relaxed);
    /* A look that has seen the crowd shuts at once, not at the iteration's end. */
    if (gw_door_look_seen(&w->ol->door) && door_allowed(w->ol))
        set_paused(w->ol, true);
}

void gw_ol_request_head(gw_req_t *r)
{
    gw_ol_worker_t *o = r->w->ol;
    if (!o)
        return;
    uint64_t now = now_us();
    uint64_t in_iter = now > o->iter_start_us ? now - o->iter_start_us : 0;
    gw_qdelay_sample(&o->q, in_iter + o->lag_us, true);
    o->live++;
    r->ol_live = true;
    gw_door_request(&o->door);
    if (o->door.shut)
        door_trim(o, r);
}

gw_level_t gw_ol_level(gw_server_t *srv)
{
    return srv->ol ? (gw_level_t)atomic_load_explicit(&srv->ol->level, memory_order_relaxed)
                   : GW_LEVEL_NORMAL;
}

void gw_ol_pin(gw_server_t *srv, int level)
{
    gw_overload_t *ol = srv->ol;
    pthread_mutex_lock(&ol->mu);
    int was = atomic_load(&ol->level);
    atomic_store(&ol->pinned, level);
    if (level >= 0) {
        atomic_store(&ol->level, level);
        snprintf(ol->reason, sizeof(ol->reason), "pinned by operator");
        ol->since_wall_ms = cm_wall_ms();
    } else {
        /* Automatic again: start from the current level, leave it by the rules. */
        ol->sm.level = (gw_level_t)was;
        ol->sm.below_since_ms = 0;
        snprintf(ol->reason, sizeof(ol->reason), "automatic (was pinned)");
        ol->since_wall_ms = cm_wall_ms();
    }
    pthread_mutex_unlock(&ol->mu);
    cm_log_info("overload", "degrade level set by operator", "level=%s from=%d",
                level < 0 ? "auto" : gw_level_name((gw_level_t)level), was);
}

/*
 * Moves the process-wide level from the workers' last windows. Under ol->mu.
 * The clock is read here, under the lock: a worker's tick reads it long
 * before (file reads, a descheduling in between), and another worker may have
 * evaluated at a later time meanwhile. With that older time the unsigned
 * interval test wrapped and evaluated again, moving last_eval_us back: two
 * levels up in one window, or the exit hold skipped (gw_level_sm_update).
 * A time before the last one (it cannot be, read here) is refused all the same.
 */
static void evaluate(gw_server_t *srv)
{
    gw_overload_t *ol = srv->ol;
    uint64_t now = now_us();
    if (now < ol->last_eval_us || now - ol->last_eval_us < ol->interval_us)
        return;
    ol->last_eval_us = now;
    if (atomic_load(&ol->pinned) >= 0)
        return;
    uint64_t worst = 0;
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_ol_worker_t *o = srv->pool.workers[i].ol;
        if (!o)
            continue;
        uint64_t v = atomic_load_explicit(&o->q.pub_pressure_us, memory_order_relaxed);
        if (v > worst)
            worst = v;
    }
    double pressure = (double)worst / (double)ol->target_us;
    int was = atomic_load(&ol->level);
    gw_level_t l = gw_level_sm_update(&ol->sm, now / 1000u, pressure);
    if ((int)l != was) {
        atomic_store(&ol->level, (int)l);
        ol->since_wall_ms = cm_wall_ms();
        if ((int)l > was)
            snprintf(ol->reason, sizeof(ol->reason),
                     "queue_delay avg=%.1fms target=%.1fms (%.2fx)", (double)worst / 1000.0,
                     (double)ol->target_us / 1000.0, pressure);
        else
            snprintf(ol->reason, sizeof(ol->reason),
                     "recovered: queue_delay avg=%.1fms below exit for %llums",
                     (double)worst / 1000.0, (unsigned long long)ol->sm.hold_ms);
    }
}

/* Connections waiting in the kernel for a worker's accept(); 0 if unknown. */
static uint32_t listen_queue(gw_worker_t *w)
{
    return gw_h1_listen_queue(w);
}

/*
 * Shuts or reopens the door (see the top of this file). Shut: the worker
 * stops polling its listening socket (gw_h1_accepting) and the socket stops
 * listening (shutdown: the kernel resets the queue); open: listen() again and
 * poll it. Loop thread.
 */
static void set_paused(gw_ol_worker_t *o, bool pause)
{
    gw_worker_t *w = o->w;
    if (o->door.shut == pause || !gw_h1_listening(w))
        return;
    if (pause) {
        uint32_t queued = 0;
        if (gw_h1_door(w, true, &queued) != 0)
            return;
        atomic_fetch_add_explicit(&o->accept_pauses, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&o->accept_reset, queued, memory_order_relaxed);
    } else if (gw_h1_door(w, false, NULL) != 0) {
        /* Still shut: the next tick tries again (a line a second at most). */
        uint64_t ms = uv_now(&w->loop);
        if (!o->listen_err_ms || ms - o->listen_err_ms >= 1000) {
            o->listen_err_ms = ms;
            cm_log_error("overload", "cannot reopen the listening socket", "worker=%u errno=%d",
                         w->index, errno);
        }
        return;
    }
    gw_door_set_shut(&o->door, pause, now_us());
    atomic_store_explicit(&o->pub_paused, pause, memory_order_relaxed);
}

/* Whether the edge's backpressure (the door, the too-late check) is on:
 * configured and automatic (an operator's pin to 0..2 turns it off; 3
 * "protect" keeps it). */
static bool edge_allowed(const gw_ol_worker_t *o)
{
    gw_overload_t *ol = o->w->srv->ol;
    int pinned = atomic_load_explicit(&ol->pinned, memory_order_relaxed);
    return ol->accept_pause && (pinned < 0 || pinned == GW_LEVEL_PROTECT);
}

/* Whether the door may shut now: the edge's backpressure is on and listen()
 * keeps the port. */
static bool door_allowed(gw_ol_worker_t *o)
{
    return o->door_ok && edge_allowed(o);
}

static bool quota_ran_out(gw_ol_sched_t *sc);

/*
 * A worker held by a CPU quota: its loop's busy share reads low (a throttled
 * period is often spent in the return from epoll_wait), so the busy check
 * would let the queue grow for a window or two first, and resetting that
 * queue at the shut spends quota periods in which no thread of the process
 * runs, the admin listener's included. When the quota ran out in this or the
 * last window, the door shuts from GW_DOOR_QUOTA_QUEUE budgets. At most one
 * look a millisecond; the cgroup's cpu.stat is read only past that queue.
 */
static bool quota_shut(gw_ol_worker_t *o, uint64_t ms)
{
    if (o->sched.cg_fd < 0 || !gw_door_should_shut_quota(&o->door, UINT32_MAX))
        return false;
    o->door_check_ms = ms;
    if (!gw_door_should_shut_quota(&o->door, listen_queue(o->w)) || !quota_ran_out(&o->sched))
        return false;
    set_paused(o, true);
    return o->door.shut;
}

void gw_ol_door_look(gw_worker_t *w)
{
    gw_ol_worker_t *o = w->ol;
    if (!o || !o->tick_started)
        return; /* stopping: gw_ol_worker_stop marked the door open */
    if (o->door.shut)
        return; /* the tick reopens it */
    uint64_t ms = uv_now(&w->loop);
    if (ms == o->door_check_ms || !door_allowed(o))
        return; /* at most one look a millisecond */
    /* The cheap checks first (busy loop, a crowd): no getsockopt when they fail. */
    if (!gw_door_should_shut(&o->door, o->q.busy_pct, UINT32_MAX)) {
        (void)quota_shut(o, ms);
        return;
    }
    o->door_check_ms = ms;
    if (!gw_h1_listening(w))
        return;
    if (gw_door_should_shut(&o->door, o->q.busy_pct, listen_queue(w)))
        set_paused(o, true);
}

/*---- our load or the machine's ----*/

#define GW_OL_CG_LOOK_US 1000000u /* the cgroup is looked up again every second */

static bool read_small(int fd, char *buf, size_t len)
{
    ssize_t n = pread(fd, buf, len - 1, 0);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* The cpu.stat of this process's CPU cgroup (v1 "cpu" controller or v2), -2 if none. */
static int open_cg_stat(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return -2;
    char line[512], path[640];
    int fd = -2;
    while (fd < 0 && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrl = c1 + 1, *cg = c2 + 1;
        if (*ctrl == '\0') { /* v2 */
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.stat", cg);
        } else if (strcmp(ctrl, "cpu") == 0 || strstr(ctrl, "cpu,") == ctrl ||
                   strstr(ctrl, ",cpu,") || (strlen(ctrl) > 4 &&
                                             strcmp(ctrl + strlen(ctrl) - 4, ",cpu") == 0)) {
            snprintf(path, sizeof(path), "/sys/fs/cgroup/cpu%s/cpu.stat", cg);
        } else {
            continue;
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            fd = -2;
    }
    fclose(f);
    return fd;
}

static uint64_t cg_field(const char *buf, const char *key)
{
    const char *p = strstr(buf, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

/* The cgroup's quota periods, those throttled, and the throttled time in ns
 * (v1 throttled_time, v2 throttled_usec); zeros if unknown. */
static gw_ol_cgstat_t cg_stat(int fd)
{
    gw_ol_cgstat_t st = {0, 0, 0};
    char buf[1024];
    if (fd < 0 || !read_small(fd, buf, sizeof(buf)))
        return st;
    st.periods = cg_field(buf, "nr_periods ");
    st.throttled = cg_field(buf, "nr_throttled ");
    st.throttled_ns = strstr(buf, "throttled_time ") ? cg_field(buf, "throttled_time ")
                                                      : cg_field(buf, "throttled_usec ") * 1000u;
    return st;
}

/* The thread's CPU time and run-queue wait in ns; false if unknown. */
static bool self_sched(gw_ol_sched_t *sc, uint64_t *cpu, uint64_t *delay)
{
    if (sc->self_fd == -1) {
        sc->self_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
        if (sc->self_fd < 0)
            sc->self_fd = -2;
    }
    char buf[128];
    if (sc->self_fd < 0 || !read_small(sc->self_fd, buf, sizeof(buf)))
        return false;
    unsigned long long c = 0, d = 0;
    if (sscanf(buf, "%llu %llu", &c, &d) != 2)
        return false;
    *cpu = c;
    *delay = d;
    return true;
}

/* The loop's busy share of the window just closed, without its wait behind
 * other processes (gw_busy_own_pct); starts the next window. */
static unsigned own_busy(gw_ol_sched_t *sc, unsigned busy, uint64_t span_ns, uint64_t now)
{
    /* The window's figures from the cgroup it began in, then (every second)
     * the cgroup looked up again as the next window's base: a process may be
     * moved into one after it started (the benchmark does). Taking the base
     * from the new look instead lost the window's throttles once a second, and
     * a quota-bound worker looked starved by others (a "machine" window, its
     * door kept open while 2,000 connections queued). */
    gw_ol_cgstat_t cg = cg_stat(sc->cg_fd);
    uint64_t periods = cg.periods >= sc->cg.periods ? cg.periods - sc->cg.periods : 0;
    uint64_t throttled = cg.throttled >= sc->cg.throttled ? cg.throttled - sc->cg.throttled : 0;
    uint64_t thr_ns = cg.throttled_ns >= sc->cg.throttled_ns ? cg.throttled_ns - sc->cg.throttled_ns
                                                             : 0;
    sc->quota_hit = throttled > 0;
    sc->saturated = periods > 0 && 2 * throttled >= periods;
    sc->cg = cg;
    if (now - sc->cg_look_us >= GW_OL_CG_LOOK_US || sc->cg_fd == -1) {
        if (sc->cg_fd >= 0)
            close(sc->cg_fd);
        sc->cg_fd = open_cg_stat();
        sc->cg_look_us = now;
        sc->cg = cg_stat(sc->cg_fd);
    }
    uint64_t cpu, delay;
    if (!self_sched(sc, &cpu, &delay))
        return busy;
    unsigned own = busy;
    if (sc->cpu_ns || sc->delay_ns)
        own = gw_busy_own_pct(busy, span_ns, cpu - sc->cpu_ns, delay - sc->delay_ns, thr_ns);
    sc->cpu_ns = cpu;
    sc->delay_ns = delay;
    return own;
}

/* Whether the CPU quota ran out in the last window or since it closed. */
static bool quota_ran_out(gw_ol_sched_t *sc)
{
    if (sc->quota_hit)
        return true;
    gw_ol_cgstat_t cg = cg_stat(sc->cg_fd);
    return cg.throttled > sc->cg.throttled;
}

static void sched_close(gw_ol_sched_t *sc)
{
    if (sc->self_fd >= 0)
        close(sc->self_fd);
    if (sc->cg_fd >= 0)
        close(sc->cg_fd);
    sc->self_fd = sc->cg_fd = -2;
}

static void on_tick(uv_timer_t *t)
{
    gw_ol_worker_t *o = t->data;
    gw_worker_t *w = o->w;
    gw_server_t *srv = w->srv;
    gw_overload_t *ol = srv->ol;
    uint64_t now = now_us();
    o->lag_us = now > o->tick_due_us ? now - o->tick_due_us : 0;
    o->tick_due_us = now + (o->tick_slow ? GW_OL_IDLE_TICK_MS : GW_OL_TICK_MS) * 1000u;
    gw_qdelay_sample(&o->q, o->lag_us, false);
    /* Reopen when the worker has nothing to do or to look whether the crowd is
     * still there. While shut, the keep-alive connections already open (a load
     * balancer's pool, a CDN edge's) still bring requests: only new
     * connections are refused. */
    gw_door_pool(&o->door, gw_h1_open_count(w) > leaving(w) ? gw_h1_open_count(w) - leaving(w) : 0);
    if (gw_door_tick(&o->door, now, gw_door_idle_tick(o->live <= w->suspended, o->lag_us)) ||
        (o->door.shut && !door_allowed(o)))
        set_paused(o, false);
    sync_targets(o, ol);
    for (unsigned i = 0; i < o->ndeps; i++)
        gw_alimit_tick(&o->dep[i], now);
    gw_level_t level = gw_ol_level(srv);
    tick_idle_check(o, level, now);
    /* DAGOR's user cut moves down only once the non-critical work is already
     * shed (level >= 2), and not when an operator pinned the level to 0 or 1;
     * below that it grows back (gw_qdelay_tick). */
    if (now < o->q.win_start_us + o->q.interval_us)
        return;
    uint64_t hr = uv_hrtime(), idle = w->edge.idle_ns;
    uint64_t span = hr - o->win_start_ns, idled = idle - o->win_idle_ns;
    unsigned busy = span ? (unsigned)(100 - (idled >= span ? 100 : idled * 100 / span)) : 0;
    o->win_start_ns = hr;
    o->win_idle_ns = idle;
    unsigned own = own_busy(&o->sched, busy, span, now);
    /* A quota that ran out says the wait was ours, whatever the run-queue
     * figures say (a throttle is counted when it ends: a period that straddles
     * the window's edge made a quota-bound worker look starved by others). */
    if (o->sched.quota_hit)
        own = busy;
    gw_door_machine(&o->door, gw_busy_machine(busy, own));
    /* Only a quota says "saturated": an uncapped loop busy >= 80% may as well be
     * a loaded machine's (the dependency-bound case), and holding its door
     * shut for seconds would cost it the crowd it can serve. */
    gw_door_saturated(&o->door, o->sched.saturated);
    gw_door_quota(&o->door, o->sched.quota_hit, now);
    busy = own;
    if (!gw_qdelay_tick(&o->q, now, ol->shed_buys && level >= GW_LEVEL_SHED, busy))
        return;
    if (pthread_mutex_trylock(&ol->mu) == 0) {
        evaluate(srv);
        pthread_mutex_unlock(&ol->mu);
    }
}

/* How long the bytes of r's request have waited in the kernel (ms resolution);
 * false if the kernel does not say. */
static bool request_waited(gw_req_t *r, uint64_t *us)
{
    int fd = gw_req_fd(r);
    if (fd < 0)
        return false;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof(ti.tcpi_last_data_recv))
        return false;
    *us = (uint64_t)ti.tcpi_last_data_recv * 1000u;
    return true;
}

/* A connection within what the worker keeps is its supply of work: kept when
 * its request is shed, and while the door is shut shed later (gw_overload.h). */
static gw_conn_place_t conn_place(const gw_ol_worker_t *o, const gw_req_t *r)
{
    if (r->close_after)
        return GW_CONN_EXTRA; /* trimmed by the shut door (door_trim), or closing anyway */
    if (o->door.shut)
        return GW_CONN_KEPT_SHUT;
    return gw_door_trims(gw_h1_open_count(r->w), leaving(r->w), gw_door_keep(&o->door))
               ? GW_CONN_EXTRA
               : GW_CONN_KEPT_OPEN;
}

/* With the door open a kept connection stays after a late shed only for a
 * worker whose CPU quota runs out, the same test as the late-shed shut's (a
 * closed one would come back to the door those sheds shut). An uncapped
 * worker's late sheds never shut its door, and keeping its connections gains
 * nothing (`python3 bench/overload.py --cases mixed --loads 10`). Asked only of
 * a shed: it may read cpu.stat. */
static bool keeps_open(gw_ol_worker_t *o)
{
    return o->door.capped || (o->sched.cg_fd >= 0 && quota_ran_out(&o->sched));
}

/* The wait in a trusted balancer's queue, from X-Request-Start (gw_overload.h). */
static bool upstream_waited(gw_req_t *r, uint64_t *waited_us)
{
    const gw_server_t *srv = r->w->srv;
    if (!r->hdr.req_start || srv->conns.proxies.n == 0 ||
        !gw_proxies_match(&srv->conns.proxies, gw_req_peer(r)))
        return false;
    return gw_upstream_waited(r->hdr.req_start, (uint64_t)cm_wall_ms() * 1000u, waited_us);
}

/* Whether a stamp that waited `up` is late for the balancer's queue alone.
 * What the request waited in this host (the kernel's: in the socket, or in
 * the accept queue behind a shut door) is not the balancer's; a request
 * stamped in time that sat there goes to the gateway's own late check, as an
 * unstamped one. The loop's bound on that wait first (gw_h1_read_after_ns):
 * if the stamp is late even with all of it taken off, it is late, and a
 * balancer's kept connection costs no system call; else the kernel's figure. */
/* The loop's bound on how long the request's bytes waited unread here
 * (gw_h1_read_after_ns), without a system call; false if not known. */
static bool loop_waited(gw_req_t *r, uint64_t *us)
{
    uint64_t after = gw_h1_read_after_ns(r->conn), now = after ? cm_mono_ns() : 0;
    if (now <= after)
        return false;
    *us = (now - after) / 1000u;
    return true;
}

static bool stamp_late(gw_ol_worker_t *o, gw_req_t *r, uint64_t up)
{
    if (!gw_rs_late(&o->rs_base, up, o->q.target_us))
        return false;
    uint64_t bound;
    if (loop_waited(r, &bound) &&
        gw_rs_late(&o->rs_base, gw_rs_before_us(up, bound), o->q.target_us))
        return true;
    uint64_t own;
    return !request_waited(r, &own) ||
           gw_rs_late(&o->rs_base, gw_rs_before_us(up, own), o->q.target_us);
}

bool gw_ol_too_late(gw_req_t *r)
{
    gw_ol_worker_t *o = r->w->ol;
    if (!o)
        return false;
    /* A worker whose CPU quota ran out lately counts as busy: its loop's busy
     * share reads low under a quota (gw_door_t.capped), and at a sale's start
     * the late sheds are the first sign of the queue its pool hides
     * (gw_door_should_shut_late). */
    unsigned busy = o->door.capped ? 100u : o->q.busy_pct;
    if (!r->conn || !edge_allowed(o))
        return false;
    uint64_t up;
    if (r->hdr.req_start && upstream_waited(r, &up)) {
        if (!gw_late_upstream_look(o->door.shut, busy)) {
            gw_rs_base_learn(&o->rs_base, up); /* not busy: the balancer queues nothing */
        } else if (stamp_late(o, r, up)) {
            /* The balancer's queue, not this connection's: it stays (its
             * small body is read and dropped), and no door counts it. */
            atomic_fetch_add_explicit(&o->shed_late, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&o->shed_late_upstream, 1, memory_order_relaxed);
            gw_ol_overloaded(r, GW_OLR_QUEUE_TIME,
                             "this request waited too long before it reached the gateway "
                             "(X-Request-Start); try again shortly",
                             false);
            r->state = GW_ST_DONE;
            return true;
        }
    }
    if (!gw_late_look(o->lag_us, (uint64_t)o->q.avg_us, o->door.shut, busy, o->q.target_us))
        return false;
    gw_conn_place_t place = conn_place(o, r);
    /* The loop's bound on the wait first: when even it is within the
     * threshold, the kernel would say "serve" too (gw_h1_read_after_ns). */
    uint64_t bound;
    if (loop_waited(r, &bound) && gw_late_verdict(bound, o->q.target_us, place) == GW_LATE_SERVE) {
        atomic_fetch_add_explicit(&o->late_looks_loop, 1, memory_order_relaxed);
        return false;
    }
    uint64_t waited;
    if (!request_waited(r, &waited))
        return false;
    atomic_fetch_add_explicit(&o->late_looks_kernel, 1, memory_order_relaxed);
    gw_late_verdict_t v = gw_late_verdict(waited, o->q.target_us, place);
    if (v == GW_LATE_SERVE)
        return false;
    if (place == GW_CONN_KEPT_OPEN && !keeps_open(o))
        v = GW_LATE_SHED_CLOSE;
    atomic_fetch_add_explicit(&o->shed_late, 1, memory_order_relaxed);
    /* Late sheds beyond the connections kept are a queue the accept queue does
     * not show (gw_overload.h); within them the queue is at most the budget's,
     * and a shut would only refuse the health checks and anyone who comes. */
    if (v == GW_LATE_SHED_CLOSE) {
        gw_door_late(&o->door);
        if (gw_door_should_shut_late(&o->door) && o->sched.cg_fd >= 0 && door_allowed(o) &&
            quota_ran_out(&o->sched))
            set_paused(o, true);
    }
    gw_ol_overloaded(r, GW_OLR_QUEUE_TIME,
                     "this request waited too long in the gateway's queue; try again shortly",
                     false);
    /* Else the connection closes after the answer: it brought a request that
     * had waited, the next one would wait as long. Kept, its body (if small:
     * gw_h1.c's conn_on_head) is read and dropped and it stays open. */
    if (v == GW_LATE_SHED_CLOSE)
        r->close_after = true;
    r->state = GW_ST_DONE;
    return true;
}

/*---- admission ----*/

unsigned gw_ol_retry(gw_worker_t *w)
{
    gw_overload_t *ol = w->srv->ol;
    uint64_t r = w->ol ? w->ol->rnd++ : 0;
    return gw_ol_retry_after(r ^ uv_hrtime(), ol->retry_min, ol->retry_max);
}

static void build_overloaded(gw_worker_t *w, gw_resp_t *p, gw_ol_reason_t reason, const char *msg,
                             unsigned retry, bool degraded)
{
    char extra[96];
    snprintf(extra, sizeof(extra), "\"reason\":\"%s\",\"retry_after\":%u",
             gw_ol_reason_name(reason), retry);
    gw_resp_error(p, GW_R_OVERLOADED, extra, "%s", msg);
    gw_resp_retry_after(p, retry); /* replaces the table default */
    if (degraded)
        gw_resp_header(p, "X-Flashgate-Degraded", "1");
    (void)w;
}

void gw_ol_overloaded(gw_req_t *r, gw_ol_reason_t reason, const char *msg, bool degraded)
{
    gw_worker_t *w = r->w;
    unsigned retry = gw_ol_retry(w);
    gw_count_overload(w, reason);
    /*
     * A shed crowd gets the same few answers over and over: keep them prepared
     * (as sold out and 429 are), so a refusal costs no formatting, no
     * allocation and no header building. Messages are literals: pointer compares.
     */
    gw_worker_ol_cache_t *oc = w->ol_cache;
    if (!oc)
        oc = w->ol_cache = cm_xcalloc(1, sizeof(*oc));
    for (unsigned i = 0; i < oc->n; i++) {
        if (oc->entry[i].reason == reason && oc->entry[i].msg == msg &&
            oc->entry[i].retry == retry && oc->entry[i].degraded == degraded) {
            r->cached = oc->entry[i].resp;
            r->cached_reply = GW_R_OVERLOADED;
            return;
        }
    }
    build_overloaded(w, &r->resp, reason, msg, retry, degraded);
    if (oc->n == GW_OL_CACHE)
        return; /* answered from r->resp */
    gw_prep_t *mr = gw_prep_new(&r->resp, w);
    oc->entry[oc->n].reason = reason;
    oc->entry[oc->n].msg = msg;
    oc->entry[oc->n].retry = retry;
    oc->entry[oc->n].degraded = degraded;
    oc->entry[oc->n].resp = mr;
    oc->n++;
    r->cached = mr;
    r->cached_reply = GW_R_OVERLOADED;
}

void gw_ol_cache_free(gw_worker_t *w)
{
    gw_worker_ol_cache_t *oc = w->ol_cache;
    if (!oc)
        return;
    for (unsigned i = 0; i < oc->n; i++)
        gw_prep_free(oc->entry[i].resp);
    CM_FREE(w->ol_cache);
}

void gw_ol_count_shed(gw_worker_t *w, gw_crit_t c)
{
    if (w->ol && (unsigned)c < GW_CRIT_COUNT)
        atomic_fetch_add_explicit(&w->ol->shed[c], 1, memory_order_relaxed);
}

void gw_ol_count_degraded(gw_worker_t *w, gw_degrade_cause_t c)
{
    if (w->ol && (unsigned)c < GW_DEG_COUNT)
        atomic_fetch_add_explicit(&w->ol->degraded[c], 1, memory_order_relaxed);
}

/* The user cut in force for r's worker: an operator's debug pin, else its DAGOR cut. */
static uint32_t user_cut(const gw_req_t *r)
{
    int d = atomic_load_explicit(&r->w->srv->ol->debug_cut, memory_order_relaxed);
    return d >= 0 ? (uint32_t)d : r->w->ol->q.u_cut;
}

bool gw_ol_buy_shedding(gw_req_t *r)
{
    gw_ol_worker_t *o = r->w->ol;
    if (!o)
        return false;
    if (atomic_load_explicit(&r->w->srv->ol->debug_cut, memory_order_relaxed) >= 0)
        return user_cut(r) < GW_UPRIO_LEVELS;
    if (o->q.u_cut >= GW_UPRIO_LEVELS)
        return false;
    return !(atomic_load_explicit(&r->w->srv->ol->pinned, memory_order_relaxed) >= 0 &&
             gw_ol_level(r->w->srv) < GW_LEVEL_SHED);
}

bool gw_ol_buy_admit_user(gw_req_t *r, const char *user, size_t len)
{
    gw_ol_worker_t *o = r->w->ol;
    uint64_t minute = (uint64_t)cm_wall_ms() / 60000u;
    if (minute != o->uprio_minute) {
        gw_ol_prio_key(r->w->srv->ol->uprio_secret, minute, &o->uprio_key);
        o->uprio_minute = minute;
    }
    if (gw_ol_user_prio(&o->uprio_key, user, len) < user_cut(r))
        return true;
    atomic_fetch_add_explicit(&o->shed_users, 1, memory_order_relaxed);
    gw_ol_overloaded(r, GW_OLR_QUEUE_DELAY,
                     "the gateway is overloaded; this user's turn comes again shortly", false);
    return false;
}

bool gw_ol_buy_admit(gw_req_t *r, const char *user)
{
    if (!gw_ol_buy_shedding(r))
        return true;
    return gw_ol_buy_admit_user(r, user, strlen(user));
}

void gw_ol_debug_user_cut(gw_server_t *srv, int cut)
{
    atomic_store_explicit(&srv->ol->debug_cut, cut < 0 ? -1 : cut > GW_UPRIO_LEVELS ? GW_UPRIO_LEVELS : cut,
                          memory_order_relaxed);
}

int gw_ol_debug_user_cut_get(gw_server_t *srv)
{
    return atomic_load_explicit(&srv->ol->debug_cut, memory_order_relaxed);
}

bool gw_ol_buy_precheck(gw_req_t *r)
{
    if (!gw_ol_buy_shedding(r))
        return true;
    const char *b = r->body, *end = r->body + r->body_len;
    const char *k = memmem(b, r->body_len, "\"user_id\"", 9);
    if (!k)
        return true;
    const char *p = k + 9;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p >= end || *p++ != ':')
        return true;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p >= end || *p++ != '"')
        return true;
    const char *u = p;
    while (p < end && *p != '"' && *p != '\\' && p - u <= INV_USER_ID_MAX)
        p++;
    if (p >= end || *p != '"' || !inv_id_valid(u, (size_t)(p - u), INV_USER_ID_MAX))
        return true; /* escapes, too long, odd characters: the parse decides */
    return gw_ol_buy_admit_user(r, u, (size_t)(p - u));
}

static gw_ol_reason_t dep_reason(unsigned dep)
{
    return dep == GW_DEP_REDIS   ? GW_OLR_REDIS_LIMIT
           : dep == GW_DEP_SPOOL ? GW_OLR_SPOOL_LIMIT
                                 : GW_OLR_UPSTREAM_LIMIT;
}

static unsigned t0_slot(unsigned dep)
{
    return dep < GW_DEP_UPSTREAM ? dep : 2;
}

gw_ol_take_t gw_ol_try_acquire(gw_req_t *r, unsigned dep)
{
    gw_ol_worker_t *o = r->w->ol;
    gw_overload_t *ol = r->w->srv->ol;
    if (!o || dep >= o->ndeps || (r->ol_held & (1ull << dep)))
        return GW_OL_TAKEN;
    if ((dep == GW_DEP_REDIS && !ol->redis_dep) || (dep == GW_DEP_SPOOL && !ol->spool_dep))
        return GW_OL_TAKEN;
    if (dep >= GW_DEP_UPSTREAM) {
        bool probing = o->br[dep].probing;
        if (!gw_breaker_allow(&o->br[dep], cm_mono_ms()))
            return GW_OL_BREAKER;
        if (!probing && o->br[dep].probing)
            o->probe[dep] = r; /* this request is the half-open breaker's probe */
    }
    if (ol->adaptive) {
        if (!gw_alimit_acquire(&o->dep[dep])) {
            if (dep >= GW_DEP_UPSTREAM && o->probe[dep] == r) {
                o->br[dep].probing = false; /* the probe never went out */
                o->probe[dep] = NULL;
            }
            return GW_OL_LIMIT;
        }
    }
    r->ol_held |= 1ull << dep;
    r->ol_t0_us[t0_slot(dep)] = now_us();
    return GW_OL_TAKEN;
}

void gw_ol_refuse(gw_req_t *r, unsigned dep, gw_ol_take_t why)
{
    if (why == GW_OL_BREAKER)
        gw_ol_overloaded(r, GW_OLR_UPSTREAM_BREAKER,
                         "the upstream of this route is failing; try again shortly", true);
    else
        gw_ol_overloaded(r, dep_reason(dep),
                         dep == GW_DEP_REDIS
                             ? "the inventory is at its concurrency limit; try again shortly"
                             : "a dependency is at its concurrency limit; try again shortly",
                         dep >= GW_DEP_UPSTREAM);
}

bool gw_ol_acquire(gw_req_t *r, unsigned dep)
{
    gw_ol_take_t why = gw_ol_try_acquire(r, dep);
    if (why == GW_OL_TAKEN)
        return true;
    gw_ol_refuse(r, dep, why);
    return false;
}

void gw_ol_release(gw_req_t *r, unsigned dep, gw_al_outcome_t out)
{
    gw_ol_release_rtt(r, dep, out, GW_OL_RTT_MEASURE);
}

/* Counts an answered call's round trip in its dependency's histogram. Loop thread. */
static void rtt_count(gw_ol_worker_t *o, unsigned dep, uint64_t rtt_us)
{
    static const uint64_t bounds[GW_OL_RTT_NBOUNDS] = GW_OL_RTT_BOUNDS_US;
    unsigned b = 0;
    while (b < GW_OL_RTT_NBOUNDS && rtt_us > bounds[b])
        b++;
    _Atomic uint64_t *c = &o->rtt_buckets[dep][b];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    c = &o->rtt_sum_us[dep];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + rtt_us,
                          memory_order_relaxed);
}

void gw_ol_release_rtt(gw_req_t *r, unsigned dep, gw_al_outcome_t out, uint64_t rtt_us)
{
    gw_ol_worker_t *o = r->w->ol;
    if (!o || !(r->ol_held & (1ull << dep)))
        return;
    r->ol_held &= ~(1ull << dep);
    uint64_t now = now_us();
    uint64_t t0 = r->ol_t0_us[t0_slot(dep)];
    if (rtt_us == GW_OL_RTT_MEASURE)
        rtt_us = now > t0 ? now - t0 : 0;
    if (out == GW_AL_OK)
        rtt_count(o, dep, rtt_us);
    if (r->w->srv->ol->adaptive)
        gw_alimit_release(&o->dep[dep], now, rtt_us, out);
    if (dep >= GW_DEP_UPSTREAM) {
        bool was_probe = o->probe[dep] == r;
        if (was_probe)
            o->probe[dep] = NULL;
        if (out == GW_AL_OK)
            gw_breaker_success(&o->br[dep]);
        else if (out == GW_AL_DROP)
            gw_breaker_failure(&o->br[dep], cm_mono_ms());
        else if (was_probe)
            /* The probe ended without an answer (its client left, a local
             * refusal): the next request probes instead. Only the probe's
             * own: a straggler sent before the breaker opened, released so,
             * freed the place while the probe was still out, and a second
             * probe went to the failing upstream. */
            o->br[dep].probing = false;
    }
}

void gw_ol_release_all(gw_req_t *r)
{
    gw_ol_worker_t *o = r->w->ol;
    /* Only a request it counted: one refused from its head (gw_h1.c) never was,
     * and the count would drift low, a worker reading bodies looking idle. */
    if (o && r->ol_live) {
        r->ol_live = false;
        o->live--;
    }
    while (r->ol_held) {
        unsigned dep = (unsigned)__builtin_ctzll(r->ol_held);
        gw_ol_release(r, dep, GW_AL_IGNORE);
    }
}

uint32_t gw_ol_upstream_set_target(gw_server_t *srv, size_t i, uint32_t target_ms)
{
    return atomic_exchange(&srv->ol->route_target_ms[i], target_ms);
}

uint32_t gw_ol_upstream_target_ms(const gw_server_t *srv, size_t i)
{
    return srv->ol && i < srv->ol->nroutes
               ? atomic_load_explicit(&srv->ol->route_target_ms[i], memory_order_relaxed)
               : 0;
}

const gw_proxy_route_t *gw_ol_upstreams(const gw_server_t *srv, size_t *n)
{
    *n = srv->ol ? srv->ol->nroutes : 0;
    return srv->ol ? srv->ol->routes : NULL;
}

/*---- stats, snapshot, summary ----*/

static void dep_name(const gw_overload_t *ol, unsigned dep, char *buf, size_t len)
{
    if (dep == GW_DEP_REDIS)
        snprintf(buf, len, "redis");
    else if (dep == GW_DEP_SPOOL)
        snprintf(buf, len, "spool_fsync");
    else
        snprintf(buf, len, "upstream:%.50s", ol->routes[dep - GW_DEP_UPSTREAM].prefix);
}

void gw_overload_snapshot(gw_server_t *srv, gw_ol_snapshot_t *out)
{
    memset(out, 0, sizeof(*out));
    gw_overload_t *ol = srv->ol;
    /* no controller (the simulator's gateways): level 0, every buy admitted, so the
     * waiting room's front moves at its rate */
    out->buy_admit_pct = 100;
    if (!ol)
        return;
    pthread_mutex_lock(&ol->mu);
    out->level = atomic_load(&ol->level);
    out->pinned = atomic_load(&ol->pinned) >= 0;
    snprintf(out->reason, sizeof(out->reason), "%s", ol->reason);
    out->level_since_ms = ol->since_wall_ms;
    out->level_changes = ol->sm.changes;
    pthread_mutex_unlock(&ol->mu);
    out->adaptive = ol->adaptive;
    out->queue_target_us = ol->target_us;
    out->buy_admit_pct = 100;
    unsigned ndeps = GW_DEP_UPSTREAM + (unsigned)ol->nroutes;
    out->ndeps = ndeps;
    for (unsigned d = 0; d < ndeps; d++) {
        dep_name(ol, d, out->deps[d].name, sizeof(out->deps[d].name));
        out->deps[d].breaker = d >= GW_DEP_UPSTREAM ? GW_BR_CLOSED : -1;
        out->deps[d].rtt_target_us =
            d >= GW_DEP_UPSTREAM
                ? 1000ull * atomic_load_explicit(&ol->route_target_ms[d - GW_DEP_UPSTREAM],
                                                 memory_order_relaxed)
                : 0;
        out->deps[d].active = d >= GW_DEP_UPSTREAM || (d == GW_DEP_REDIS && ol->redis_dep) ||
                              (d == GW_DEP_SPOOL && ol->spool_dep);
    }
    if (ol->redis_dep) {
        uint64_t opens = 0;
        int st = inv_redis_breaker(srv->stores.inv, &opens);
        out->deps[GW_DEP_REDIS].breaker = st;
        out->deps[GW_DEP_REDIS].breaker_opens = opens;
    }
    for (unsigned i = 0; i < srv->pool.nworkers && srv->pool.workers; i++) {
        gw_ol_worker_t *o = srv->pool.workers[i].ol;
        if (!o)
            continue;
        uint64_t qd = atomic_load_explicit(&o->q.pub_avg_us, memory_order_relaxed);
        if (qd > out->queue_delay_us)
            out->queue_delay_us = qd;
        uint32_t busy = atomic_load_explicit(&o->q.pub_busy_pct, memory_order_relaxed);
        if (busy > out->loop_busy_pct)
            out->loop_busy_pct = busy;
        uint32_t pct = atomic_load_explicit(&o->q.pub_u_cut, memory_order_relaxed) * 100u /
                       GW_UPRIO_LEVELS;
        if (pct < out->buy_admit_pct)
            out->buy_admit_pct = pct;
        for (int c = 0; c < GW_CRIT_COUNT; c++)
            out->shed[c] += atomic_load_explicit(&o->shed[c], memory_order_relaxed);
        for (int c = 0; c < GW_DEG_COUNT; c++)
            out->degraded[c] += atomic_load_explicit(&o->degraded[c], memory_order_relaxed);
        out->shed_users += atomic_load_explicit(&o->shed_users, memory_order_relaxed);
        out->accept_pauses += atomic_load_explicit(&o->accept_pauses, memory_order_relaxed);
        out->accept_reset += atomic_load_explicit(&o->accept_reset, memory_order_relaxed);
        out->accept_trimmed += atomic_load_explicit(&o->accept_trimmed, memory_order_relaxed);
        out->shed_late += atomic_load_explicit(&o->shed_late, memory_order_relaxed);
        out->accept_conns += atomic_load_explicit(&o->accept_conns, memory_order_relaxed);
        out->late_looks_loop += atomic_load_explicit(&o->late_looks_loop, memory_order_relaxed);
        out->late_looks_kernel += atomic_load_explicit(&o->late_looks_kernel, memory_order_relaxed);
        out->shed_late_upstream +=
            atomic_load_explicit(&o->shed_late_upstream, memory_order_relaxed);
        out->accept_paused += atomic_load_explicit(&o->pub_paused, memory_order_relaxed) ? 1 : 0;
        for (unsigned d = 0; d < ndeps; d++) {
            gw_ol_dep_snap_t *s = &out->deps[d];
            s->limit += atomic_load_explicit(&o->dep[d].pub_limit, memory_order_relaxed);
            s->inflight += atomic_load_explicit(&o->dep[d].pub_inflight, memory_order_relaxed);
            s->rejected += atomic_load_explicit(&o->dep[d].pub_rejected, memory_order_relaxed);
            s->drops += atomic_load_explicit(&o->dep[d].pub_drops, memory_order_relaxed);
            uint64_t rtt = atomic_load_explicit(&o->dep[d].pub_rtt_us, memory_order_relaxed);
            if (rtt > s->rtt_us)
                s->rtt_us = rtt;
            for (unsigned b = 0; b <= GW_OL_RTT_NBOUNDS; b++)
                s->rtt_buckets[b] +=
                    atomic_load_explicit(&o->rtt_buckets[d][b], memory_order_relaxed);
            s->rtt_sum_us += atomic_load_explicit(&o->rtt_sum_us[d], memory_order_relaxed);
            if (d >= GW_DEP_UPSTREAM) {
                int st = atomic_load_explicit(&o->br[d].pub_state, memory_order_relaxed);
                if (st == GW_BR_OPEN || (st == GW_BR_HALF_OPEN && s->breaker != GW_BR_OPEN))
                    s->breaker = st;
                s->breaker_opens += atomic_load_explicit(&o->br[d].pub_opens, memory_order_relaxed);
            }
        }
    }
}

void gw_overload_stats(gw_server_t *srv, void *json_obj)
{
    gw_ol_snapshot_t *s = cm_xmalloc(sizeof(*s));
    gw_overload_snapshot(srv, s);
    char since[40];
    cm_time_format_rfc3339(s->level_since_ms, since, sizeof(since));
    json_t *deps = json_object();
    for (unsigned d = 0; d < s->ndeps; d++) {
        const gw_ol_dep_snap_t *p = &s->deps[d];
        if (!p->active)
            continue;
        json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I}", "limit", (json_int_t)p->limit, "inflight",
                              (json_int_t)p->inflight, "rejected", (json_int_t)p->rejected,
                              "drops", (json_int_t)p->drops, "rtt_us", (json_int_t)p->rtt_us);
        if (p->breaker >= 0) {
            json_object_set_new(o, "breaker",
                                json_string(gw_breaker_state_name((gw_br_state_t)p->breaker)));
            json_object_set_new(o, "breaker_opens", json_integer((json_int_t)p->breaker_opens));
        }
        if (p->rtt_target_us)
            json_object_set_new(o, "rtt_target_us", json_integer((json_int_t)p->rtt_target_us));
        json_object_set_new(deps, p->name, o);
    }
    json_t *shed = json_object();
    for (int c = 0; c < GW_CRIT_COUNT; c++)
        json_object_set_new(shed, gw_crit_name((gw_crit_t)c), json_integer((json_int_t)s->shed[c]));
    json_t *o = json_pack(
        "{s:i,s:s,s:s,s:b,s:s,s:s,s:I,s:b,s:f,s:f,s:i,s:i,s:o,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:o}", "level",
        s->level,
        "level_name", gw_level_name((gw_level_t)s->level), "mode", s->pinned ? "pinned" : "auto",
        "pinned", s->pinned, "reason", s->reason, "since", since, "level_changes",
        (json_int_t)s->level_changes, "adaptive", s->adaptive, "queue_delay_ms",
        (double)s->queue_delay_us / 1000.0, "queue_target_ms", (double)s->queue_target_us / 1000.0,
        "loop_busy_pct", (int)s->loop_busy_pct, "buy_admit_pct", (int)s->buy_admit_pct, "shed", shed, "shed_users",
        (json_int_t)s->shed_users, "shed_late", (json_int_t)s->shed_late, "accept_pauses", (json_int_t)s->accept_pauses,
        "accept_paused_workers", (int)s->accept_paused, "accept_reset",
        (json_int_t)s->accept_reset, "accept_closed_keepalive", (json_int_t)s->accept_trimmed,
        "accept_conns", (json_int_t)s->accept_conns,
        "limits", deps);
    json_object_set_new(o, "late_checks",
                        json_pack("{s:I,s:I}", "loop", (json_int_t)s->late_looks_loop, "kernel",
                                  (json_int_t)s->late_looks_kernel));
    json_object_set_new(o, "shed_late_upstream", json_integer((json_int_t)s->shed_late_upstream));
    json_t *deg = json_object();
    for (int c = 0; c < GW_DEG_COUNT; c++)
        json_object_set_new(deg, gw_degrade_cause_name((gw_degrade_cause_t)c),
                            json_integer((json_int_t)s->degraded[c]));
    json_object_set_new(o, "degraded", deg);
    json_object_set_new(json_obj, "overload", o);
    free(s);
}

void gw_overload_log_summary(gw_server_t *srv)
{
    gw_overload_t *ol = srv->ol;
    if (!ol)
        return;
    gw_ol_snapshot_t *s = cm_xmalloc(sizeof(*s));
    gw_overload_snapshot(srv, s);
    uint64_t rej = 0, shed = 0;
    char deps[600] = "";
    size_t n = 0;
    for (unsigned d = 0; d < s->ndeps && d < GW_OL_DEPS_MAX; d++) {
        uint64_t dr = s->deps[d].rejected - ol->last_rejected[d];
        ol->last_rejected[d] = s->deps[d].rejected;
        rej += dr;
        if (dr && n < sizeof(deps) - 80)
            n += (size_t)snprintf(deps + n, sizeof(deps) - n, "%s%s=%llu/%u", n ? "," : "",
                                  s->deps[d].name, (unsigned long long)dr, s->deps[d].limit);
    }
    uint64_t sc[GW_CRIT_COUNT];
    for (int c = 0; c < GW_CRIT_COUNT; c++) {
        sc[c] = s->shed[c] - ol->last_shed[c];
        ol->last_shed[c] = s->shed[c];
        shed += sc[c];
    }
    /* the fallbacks by cause, only those that moved ("upstream_error=3,level_1=40"):
     * without them the line told a 503 from a fallback nowhere */
    char degs[320] = ""; /* all seven causes at 20 digits fit */
    size_t dn = 0;
    uint64_t deg = 0;
    for (int c = 0; c < GW_DEG_COUNT; c++) {
        uint64_t dc = s->degraded[c] - ol->last_degraded[c];
        ol->last_degraded[c] = s->degraded[c];
        deg += dc;
        if (dc && dn < sizeof(degs) - 40)
            dn += (size_t)snprintf(degs + dn, sizeof(degs) - dn, "%s%s=%llu", dn ? "," : "",
                                   gw_degrade_cause_name((gw_degrade_cause_t)c),
                                   (unsigned long long)dc);
    }
    uint64_t users = s->shed_users - ol->last_users;
    ol->last_users = s->shed_users;
    uint64_t pauses = s->accept_pauses - ol->last_pauses;
    ol->last_pauses = s->accept_pauses;
    uint64_t changes = s->level_changes - ol->last_level_changes;
    ol->last_level_changes = s->level_changes;
    uint64_t ropens = s->deps[GW_DEP_REDIS].breaker_opens - ol->last_redis_opens;
    ol->last_redis_opens = s->deps[GW_DEP_REDIS].breaker_opens;
    if (!rej && !shed && !deg && !users && !pauses && !changes && !ropens && s->level == 0) {
        free(s);
        return;
    }
    cm_log_info("overload", "summary",
                "level=%d mode=%s reason=\"%s\" level_changes=%llu queue_delay_ms=%.1f "
                "limit_rejected=%llu limits=\"%s\" shed_sheddable=%llu shed_degradable=%llu "
                "shed_critical=%llu degraded=%llu degraded_by=\"%s\" "
                "shed_users=%llu buy_admit_pct=%u accept_pauses=%llu redis_breaker=%s "
                "redis_breaker_opens=%llu",
                s->level, s->pinned ? "pinned" : "auto", s->reason, (unsigned long long)changes,
                (double)s->queue_delay_us / 1000.0, (unsigned long long)rej, deps,
                (unsigned long long)sc[GW_CRIT_SHEDDABLE],
                (unsigned long long)sc[GW_CRIT_DEGRADABLE],
                (unsigned long long)sc[GW_CRIT_CRITICAL], (unsigned long long)deg, degs,
                (unsigned long long)users, s->buy_admit_pct, (unsigned long long)pauses,
                s->deps[GW_DEP_REDIS].breaker >= 0
                    ? gw_breaker_state_name((gw_br_state_t)s->deps[GW_DEP_REDIS].breaker)
                    : "none",
                (unsigned long long)ropens);
    free(s);
}

static const char *const ol_reason_names[GW_OLR_COUNT] = {
#define XX(n, s) [GW_OLR_##n] = s,
    GW_OL_REASONS(XX)
#undef XX
};

void gw_count_overload(gw_worker_t *w, gw_ol_reason_t reason)
{
    _Atomic uint64_t *c =
        &w->ctr.overload_reasons[(unsigned)reason < GW_OLR_COUNT ? reason : GW_OLR_OTHER];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

const char *gw_ol_reason_name(gw_ol_reason_t k)
{
    return (unsigned)k < GW_OLR_COUNT ? ol_reason_names[k] : "other";
}

void gw_ol_register_upstreams(gw_server_t *srv, const gw_proxy_route_t *routes, size_t n)
{
    gw_overload_t *ol = srv->ol;
    if (n > GW_PROXY_ROUTES_MAX)
        n = GW_PROXY_ROUTES_MAX;
    memcpy(ol->routes, routes, n * sizeof(*routes));
    ol->nroutes = n;
    for (size_t i = 0; i < n; i++)
        atomic_init(&ol->route_target_ms[i], routes[i].latency_target_ms);
}
