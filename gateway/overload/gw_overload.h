/*
 * Overload control (docs/design.md "Overload control"). Pure parts (no I/O,
 * clock as argument, unit-tested) in gw_overload_core.c; per-worker state,
 * admin level, stats and snapshot in gw_overload.c. Figures behind the rules:
 * bench/README.md, Findings, "Overload control".
 */
#ifndef GW_OVERLOAD_H
#define GW_OVERLOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cm_hash.h"

/*---- Criticality of a route (shed the lowest first) ----*/

typedef enum {
    GW_CRIT_CRITICAL = 0,   /* buy, order status, sale info, health */
    GW_CRIT_DEGRADABLE = 1, /* has a useful fallback or cache */
    GW_CRIT_SHEDDABLE = 2,  /* nice to have */
    GW_CRIT_COUNT
} gw_crit_t;

/* "critical", "degradable", "sheddable". */
const char *gw_crit_name(gw_crit_t c);
/* Parses a name; returns -1 if unknown. Thread-safe. */
int gw_crit_parse(const char *s);

/*
 * Why a proxied route answered its fallback (the "degraded" counters): the 503
 * reason it stands in for, or the upstream's own failure (else a 502 or 504).
 * A fallback is never counted as a 503.
 */
#define GW_DEGRADE_CAUSES(XX)                                                                      \
    XX(UPSTREAM_LIMIT, "upstream_limit")                                                           \
    XX(UPSTREAM_BREAKER, "upstream_breaker")                                                       \
    XX(UPSTREAM_ERROR, "upstream_error")                                                           \
    XX(UPSTREAM_TIMEOUT, "upstream_timeout")                                                       \
    XX(LEVEL_1, "level_1")                                                                         \
    XX(LEVEL_2, "level_2")                                                                         \
    XX(LEVEL_3, "level_3")

typedef enum {
#define XX(n, s) GW_DEG_##n,
    GW_DEGRADE_CAUSES(XX)
#undef XX
        GW_DEG_COUNT
} gw_degrade_cause_t;

/* "upstream_limit", ..., "level_3". */
const char *gw_degrade_cause_name(gw_degrade_cause_t c);

/*---- Adaptive concurrency limit (Gradient2) ----*/

/*
 * After Netflix concurrency-limits' Gradient2Limit (Apache 2.0; read, not
 * copied): long-term average RTT (~600 samples) against the last window's:
 *   gradient = clamp(max(tolerance * long, floor) / short, 0.5, 1.0)
 *   limit   += 0.2 * (limit * gradient + max(4, sqrt(limit)) - limit)
 * Our rules on top:
 *  - App-limited window (< limit/2 in flight): decay half way to twice the
 *    most in flight (>= GW_ALIMIT_RESTART), old limit kept as ssthresh; an
 *    unused limit is unproven (RFC 2861, RFC 7661).
 *  - Slow start back to ssthresh (RFC 5681), one per answer within the
 *    tolerated RTT, at most twice in flight and twice two RTTs' answers; a
 *    round of slow first answers ends it (HyStart++), not below a limit
 *    validated within GW_ALIMIT_NVP_US: a burst after a lull is served.
 *  - The initial limit is validated with ssthresh at max (TCP's initial
 *    window), small for an upstream (overload.upstream_limit_initial): a high
 *    start makes a queue that the long average learns as its baseline.
 *  - Long average over twice the short one: it decays 5% a window.
 *  - Floor: a pipelined Redis answers a batch of N in N service times at any
 *    load, which is no queue (bench/README.md, Findings, "Redis").
 *  - Windows close after GW_ALIMIT_WIN_SAMPLES samples and 50 ms, or 250 ms,
 *    to follow a step in load; drops in a window halve the limit (AIMD).
 * One writer: the owning worker loop (no lock); `pub_*` atomics are for stats.
 */
#define GW_ALIMIT_WIN_SAMPLES 32
/* An unused limit decays towards twice its use, not below this. */
#define GW_ALIMIT_RESTART 32
/* Answers counted per ms for slow start's rate check. */
#define GW_ALIMIT_DONE_BINS 32
/* Slow start ends on a round whose first this many answers were all slower than the tolerated RTT. */
#define GW_ALIMIT_SS_SAMPLES 8
/* A validated limit is trusted this long (RFC 7661's non-validated phase). */
#define GW_ALIMIT_NVP_US (300ull * 1000 * 1000)

typedef struct gw_alimit {
    double limit;
    double ssthresh;    /* slow start climbs back to this (see validate(), slow_start()) */
    double valid;       /* a limit a window used half of at a healthy RTT (0: none) ... */
    uint64_t valid_us;  /* ... and when: trusted for GW_ALIMIT_NVP_US (validate()) */
    uint32_t min_limit, max_limit, init_limit;
    uint32_t inflight;
    double long_rtt_us;
    uint32_t long_n;
    uint64_t win_start_us;
    uint64_t win_sum_us;
    uint32_t win_n, win_drops, win_max_inflight;
    bool win_full;      /* the limit was reached (or refused) in this window */
    uint32_t win_ignored; /* released without a call (GW_AL_IGNORE): a crowd all the same */
    uint32_t ss_left, ss_n; /* slow start: answers left in this round, seen of its first ones */
    uint64_t ss_min_us;     /* slow start: the minimum RTT of the round's first answers */
    uint64_t ss_base_us;    /* the lowest RTT before the first window closed (ss_ref()) */
    uint64_t done_ms;       /* answers per ms over the last GW_ALIMIT_DONE_BINS ms */
    uint32_t done_bin[GW_ALIMIT_DONE_BINS];
    uint64_t min_window_us, max_window_us;
    uint64_t rtt_floor_us;
    uint64_t rtt_target_us; /* gw_alimit_set_target(); 0 = none */
    _Atomic uint32_t pub_limit, pub_inflight;
    _Atomic uint64_t pub_rejected, pub_drops, pub_rtt_us;
} gw_alimit_t;

typedef enum { GW_AL_OK = 0, GW_AL_DROP = 1, GW_AL_IGNORE = 2 } gw_al_outcome_t;

/* Sets up a limit starting at `initial` within [min, max]. Not thread-safe. */
void gw_alimit_init(gw_alimit_t *l, uint32_t initial, uint32_t min, uint32_t max,
                    uint64_t now_us);
/* An RTT below which the limit never shrinks (0: none, pure Gradient2). Owner thread only. */
void gw_alimit_set_floor(gw_alimit_t *l, uint64_t rtt_floor_us);
/* An RTT above which the dependency is queueing (a route's latency_target_ms;
 * 0: none): a saturated dependency drags the long average, and its queue, up
 * with it. Owner thread only. */
void gw_alimit_set_target(gw_alimit_t *l, uint64_t rtt_target_us);
/* Takes a slot if fewer than the limit are in flight; false (a rejection is
 * counted) when full: answer 503 without calling. Owner thread only. */
bool gw_alimit_acquire(gw_alimit_t *l);
/* Gives a slot back: GW_AL_OK records rtt_us, GW_AL_DROP counts a timeout or
 * error, GW_AL_IGNORE neither (no call reached the dependency). May close the
 * window and move the limit. Owner thread only. */
void gw_alimit_release(gw_alimit_t *l, uint64_t now_us, uint64_t rtt_us, gw_al_outcome_t o);
/* Closes a window that timed out without new samples. Owner thread only. */
void gw_alimit_tick(gw_alimit_t *l, uint64_t now_us);
/* The current limit (floor, >= min). Owner thread only (others: pub_limit). */
uint32_t gw_alimit_get(const gw_alimit_t *l);

/*---- Circuit breaker for hard failures ----*/

/*
 * Closed -> open after `failures` consecutive hard failures; open -> half-open
 * after `cooldown_ms`, letting exactly one probe through, whose success closes
 * and failure reopens it. Owner thread only, except the pub_* atomics.
 * Transitions are counted, never logged here.
 */
typedef enum { GW_BR_CLOSED = 0, GW_BR_OPEN = 1, GW_BR_HALF_OPEN = 2 } gw_br_state_t;

typedef struct gw_breaker {
    gw_br_state_t state;
    uint32_t fails, failures;
    uint64_t cooldown_ms, until_ms;
    bool probing;
    _Atomic int pub_state;
    _Atomic uint64_t pub_opens;
} gw_breaker_t;

void gw_breaker_init(gw_breaker_t *b, uint32_t failures, uint64_t cooldown_ms);
/* True if a call may go out now (in half-open: the one probe). */
bool gw_breaker_allow(gw_breaker_t *b, uint64_t now_ms);
void gw_breaker_success(gw_breaker_t *b);
void gw_breaker_failure(gw_breaker_t *b, uint64_t now_ms);
const char *gw_breaker_state_name(gw_br_state_t s);

/*---- Queuing delay of a worker loop, DAGOR admission for buys ----*/

/*
 * Per window the average queuing delay (loop lag, a request's wait in its
 * iteration) is compared with the target. Buys pass when their user priority
 * (DAGOR; fixed per user for a minute, so no one is cut off half way) is below
 * u_cut, which shrinks by 1/8 a window over target (with `shed_users`) and
 * grows by 2 otherwise, also over target below level 2. A window is over
 * target only with GW_QDELAY_MIN_REQUESTS requests and the loop busy
 * GW_QDELAY_MIN_BUSY_PCT: else the delay is others' CPU, not our crowd.
 */
#define GW_QDELAY_MIN_REQUESTS 20
#define GW_QDELAY_MIN_BUSY_PCT 50
#define GW_UPRIO_LEVELS 128

typedef struct gw_qdelay {
    uint64_t target_us, interval_us;
    uint64_t win_start_us, win_sum_us;
    uint32_t win_n, win_reqs;
    double avg_us;          /* of the last closed window */
    bool over;              /* last window above target, with enough requests, loop busy */
    unsigned busy_pct;      /* of the last closed window */
    uint32_t u_cut;         /* admit buys with priority < u_cut (GW_UPRIO_LEVELS = all) */
    _Atomic uint64_t pub_avg_us;
    _Atomic uint64_t pub_pressure_us; /* avg_us when the window had enough requests, else 0 */
    _Atomic uint32_t pub_u_cut;
    _Atomic uint32_t pub_busy_pct;
} gw_qdelay_t;

void gw_qdelay_init(gw_qdelay_t *q, uint64_t target_us, uint64_t interval_us, uint64_t now_us);
/* One queuing-delay sample; `request`: of a request (counts toward the minimum). */
void gw_qdelay_sample(gw_qdelay_t *q, uint64_t delay_us, bool request);
/* Closes the window if interval_us passed and moves u_cut (see above);
 * `busy_pct`: the loop's working share (0..100). Returns true when a window
 * closed. Owner thread only. */
bool gw_qdelay_tick(gw_qdelay_t *q, uint64_t now_us, bool shed_users, unsigned busy_pct);
/* True if a buy of user priority `prio` may go on. Owner thread only. */
bool gw_qdelay_admit_user(const gw_qdelay_t *q, unsigned prio);

/*---- The door: connection-level backpressure (sockets in gw_overload.c) ----*/

/*
 * The door's decisions (pure, for an injected clock). Shut (stop listening)
 * when the accept queue exceeds one queue target of the request rate (>=
 * GW_DOOR_MIN_QUEUE), the loop is busy >= GW_DOOR_BUSY_PCT and connections
 * bring >= GW_DOOR_MIN_REQS_PER_CONN requests (a crowd; shutting on a flood
 * would refuse buyers with the attacker). Reopen after GW_DOOR_IDLE_TICKS idle
 * ticks, GW_DOOR_HOLD_US (GW_DOOR_HOLD_MAX_US while saturated), or to refill
 * (gw_door_pool). docs/design.md "Connection-level backpressure: the door".
 */
#define GW_DOOR_MIN_QUEUE 64
#define GW_DOOR_BUSY_PCT 80
/* Kept connections while shut, at least: under a CPU quota they are the
 * worker's whole supply of work, and few make each quota period find few. */
#define GW_DOOR_MIN_CONNS GW_DOOR_MIN_QUEUE
#define GW_DOOR_IDLE_TICKS 2
#define GW_DOOR_HOLD_US 250000u
#define GW_DOOR_RECENT_US (2u * GW_DOOR_HOLD_US) /* after a reopen: the crowd is believed */
#define GW_DOOR_WINDOW_US 100000u /* the rate and the requests per connection */
#define GW_DOOR_MIN_REQS_PER_CONN 0.5
#define GW_DOOR_RPC_MAX 4.0 /* requests per connection are counted up to this */
/* Longest hold while kept connections saturate the worker (a look would only
 * let in a queue to reset). */
#define GW_DOOR_HOLD_MAX_US 2000000u
/* A CPU quota that ran out: the queue is ours once it holds this many budgets. */
#define GW_DOOR_QUOTA_QUEUE 4u

typedef struct gw_door {
    uint64_t target_us;      /* the queue target: a deeper queue waits longer */
    double rate;             /* requests begun per second, smoothed */
    double reqs_per_conn;    /* requests begun per connection accepted, smoothed */
    uint64_t win_start_us, win_reqs, win_conns;
    uint32_t begun_tick;     /* requests begun since the last tick */
    uint32_t idle_ticks;     /* ticks in a row, shut, with nothing to do */
    uint64_t shut_us;        /* when it was shut */
    uint64_t opened_us;      /* when it last reopened */
    bool crowd_recent;       /* reopened less than GW_DOOR_RECENT_US ago: no busy check if capped */
    bool capped;             /* its CPU quota ran out less than GW_DOOR_CAPPED_US ago */
    uint64_t quota_us;       /* when a window last saw its CPU quota run out (0: never) */
    bool machine;            /* the last window's loop mostly waited for a CPU others hold */
    bool saturated;          /* the last window used all the CPU it had (gw_door_saturated) */
    double shut_rate;        /* the request rate when it was shut */
    double rate_peak;        /* the highest window's rate, decaying by GW_DOOR_PEAK_DECAY a window */
    bool look_next;          /* the tick reopens after the longest hold or for a refill: a look */
    bool look;               /* reopened to look, the crowd still believed (gw_door_should_shut) */
    uint32_t look_conns;     /* connections accepted since that reopen */
    uint32_t look_want;      /* a refill look: the connections the pool lacked (0: a look at the crowd) */
    uint32_t win_late;       /* late sheds that closed their connection, this window (gw_door_late) */
    bool pool_set;           /* gw_door_pool was told the worker's pool */
    uint64_t pool;           /* its open connections less those leaving, at the last tick */
    uint64_t refill_us;      /* when the last refill was decided (0: none since a full reopen) */
    uint64_t refill_pool;    /* the pool then */
    uint32_t refill_want;    /* and what it lacked */
    uint64_t pool_cap;       /* the most the crowd keeps open (0: not seen; gw_door_tick) */
    bool shut;
} gw_door_t;

void gw_door_init(gw_door_t *d, uint64_t target_us, uint64_t now_us);
/* A request began / a connection was accepted. Owner thread only. */
void gw_door_request(gw_door_t *d);
void gw_door_conn(gw_door_t *d);
/* What the worker serves in one queue target, at least `floor` (the door's size). */
uint32_t gw_door_budget(const gw_door_t *d, uint32_t floor);
/* Connections a shut door keeps (door_trim closes the rest): one queue target
 * at the highest of the rate now, at its shut(s) within GW_DOOR_RECENT_US of a
 * reopen, and the recent peak (halved in ~0.7 s); >= GW_DOOR_MIN_CONNS. Not the
 * rate now alone: a shut's resets dip it, and a trim that followed would starve
 * a capped worker (nothing reconnects while shut). */
uint32_t gw_door_keep(const gw_door_t *d);
/* Whether a request on a shut door's worker closes its connection after its
 * answer: `open` less `leaving` (closing, or trimmed awaiting the answer) over
 * `keep`. Not `open` alone: a closing connection counts until a later loop
 * iteration, and a whole burst would be trimmed. Pure. */
bool gw_door_trims(uint64_t open, uint64_t leaving, uint32_t keep);
#define GW_DOOR_PEAK_DECAY 0.9
/* Whether an open door should shut, `queued` waiting to be accepted. Also,
 * whatever the queue, when a look (reopen after the longest hold) let in over a
 * budget of connections while the worker stays saturated and capped: they
 * queue in the keep-alive pool, which the accept queue does not count. */
bool gw_door_should_shut(const gw_door_t *d, unsigned busy_pct, uint32_t queued);
/* The look part alone, asked at each accept (gw_ol_conn_started): a capped
 * worker's loop iteration can span several quota periods, too long to wait
 * for its edge. Pure. */
bool gw_door_look_seen(const gw_door_t *d);
void gw_door_set_shut(gw_door_t *d, bool shut, uint64_t now_us);
/* Per queue window: whether the loop mostly waited for a CPU others hold
 * (gw_busy_machine). Such a window never shuts the door, not even after a
 * reopen on a crowd: the queue is the machine's. Owner thread only. */
void gw_door_machine(gw_door_t *d, bool machine);
/*
 * Per queue window: whether the quota ran out in half its periods (busy share
 * cannot tell this from a loaded machine). A door shut on a crowd holds past
 * GW_DOOR_HOLD_US (to GW_DOOR_HOLD_MAX_US) while kept connections saturate the worker at half its shut
 * rate: a look would only queue connections to reset. Owner thread only.
 */
void gw_door_saturated(gw_door_t *d, bool saturated);
/*
 * Per queue window: whether the worker's CPU quota ran out in it. Just after a
 * reopen on a crowd the busy check is skipped, but only for a worker capped
 * within GW_DOOR_CAPPED_US: under a quota the busy share reads low and the
 * crowd is believed; an uncapped worker's busy share is true. Owner thread only.
 */
#define GW_DOOR_CAPPED_US (GW_DOOR_HOLD_MAX_US + GW_DOOR_RECENT_US)
void gw_door_quota(gw_door_t *d, bool ran_out, uint64_t now_us);
/* Whether an open door should shut now for a worker whose quota ran out in
 * this or the last window (its busy share reads low: a throttled period is
 * often spent in epoll_wait's return). Needs GW_DOOR_QUOTA_QUEUE budgets
 * queued: one period's arrivals wait even at capacity. Pure. */
bool gw_door_should_shut_quota(const gw_door_t *d, uint32_t queued);
/*
 * gw_door_late: a late shed closed its connection (gw_ol_too_late).
 * gw_door_should_shut_late: for a worker whose quota ran out (the caller reads
 * cpu.stat), GW_DOOR_LATE_SHUT of them in a window are a queue, though one the
 * accept queue does not count (accepted connections queue in their sockets).
 * Never for a flood or a machine window. Owner thread only / pure.
 */
#define GW_DOOR_LATE_SHUT 8u
void gw_door_late(gw_door_t *d);
bool gw_door_should_shut_late(const gw_door_t *d);
/*
 * Before each tick: open connections less those closing. A shut, capped,
 * saturated door whose pool fell below GW_DOOR_REFILL_NUM/GW_DOOR_REFILL_DEN of
 * gw_door_keep reopens to refill what it lacked (look_want): trims and the
 * clients' idle pools close connections and starve the quota. A refill the
 * crowd undoes (due within GW_DOOR_REFILL_MEMORY_US, pool no smaller, under
 * half of the last refill kept) marks its cap (pool_cap): 3/4 of the cap is
 * asked until the pool passes it or the door reopens in full, lest the door
 * reopen every few tens of ms to reset a queue
 * (`python3 bench/overload.py --quick --cases cpu`). Owner thread only.
 */
#define GW_DOOR_REFILL_NUM 3u
#define GW_DOOR_REFILL_DEN 4u
#define GW_DOOR_REFILL_MEMORY_US 100000u
void gw_door_pool(gw_door_t *d, uint64_t pool);
/* Every tick: closes the rate window when due; while shut, true when the door
 * should reopen. `idle`: nothing in progress but dependency waits. Owner thread only. */
bool gw_door_tick(gw_door_t *d, uint64_t now_us, bool idle);
/* Whether a tick counts as idle: nothing in progress (but dependency waits) and
 * the tick less than GW_DOOR_LATE_TICK_US late. A late tick means the loop did
 * not run, so nothing beginning says nothing about the crowd. In gw_overload.c; pure. */
#define GW_DOOR_LATE_TICK_US 5000u
bool gw_door_idle_tick(bool nothing_in_progress, uint64_t lag_us);

/*
 * Too late to serve: TCP_INFO's tcpi_last_data_recv (ms) covers the accept
 * queue and socket buffer. A request that waited GW_LATE_TARGETS queue targets
 * gets a prepared 503 `queue_time` before its body is read: it would answer past
 * the 100 ms a person waits (CoDel, DAGOR). Asked only when the worker has a
 * queue of its own: door shut, or own-busy >= GW_QDELAY_MIN_BUSY_PCT and
 * lagging GW_LATE_LOOK_LAG_PCT of the target or queuing past half of it; a
 * request late through others' CPU is served, as refusing saves nothing.
 */
#define GW_LATE_TARGETS 2.5
#define GW_LATE_LOOK_LAG_PCT 25

/* Whether to ask the kernel how long this request waited. Pure. */
bool gw_late_look(uint64_t lag_us, uint64_t qdelay_avg_us, bool door_shut, unsigned busy_pct,
                  uint64_t target_us);
/* Whether a request that waited `waited_us` before the gateway saw it is too late. Pure. */
bool gw_late_shed(uint64_t waited_us, uint64_t target_us);
/* The same on a connection a shut door keeps (within gw_door_keep): shed only
 * from GW_LATE_KEPT_TARGETS, as their queue is at most a target so such a
 * request still answers within 100 ms, and closing them would starve the
 * worker into reopening on a new queue. Pure. */
#define GW_LATE_KEPT_TARGETS 4.0
bool gw_late_shed_kept(uint64_t waited_us, uint64_t target_us);

/*
 * A balancer with a fixed pool (nginx `max_conns`, HAProxy `maxconn`) queues
 * out of our sight but can stamp `X-Request-Start` (nginx "t=${msec}"),
 * believed only from server.trusted_proxies. A stamp past GW_LATE_TARGETS while
 * the worker is busy (gw_late_upstream_look) gets 503 `queue_time`, connection
 * kept (the balancer's pool; shed_late_upstream). The kernel wait since is our
 * own queue, judged by our late check (gw_rs_before_us).
 * gw_request_start_us: optional "t=", then seconds with a fraction or integer
 * s/ms/us/ns since the epoch told apart by size; false otherwise. Pure.
 */
bool gw_request_start_us(const char *v, uint64_t *out_us);
/* How long before now_us the request was taken; false if unreadable or more
 * than a minute in the future (a start up to that counts as 0). Pure. */
bool gw_upstream_waited(const char *v, uint64_t now_us, uint64_t *waited_us);
/* Whether a busy worker asks: own busy share >= GW_QDELAY_MIN_BUSY_PCT or door
 * shut. A balancer queues only when the gateway is slow. Pure. */
bool gw_late_upstream_look(bool door_shut, unsigned busy_pct);
/*
 * Clock skew between balancer and gateway reads as wait, so each worker learns
 * a baseline: the least wait seen on a stamp while not busy, rising by
 * 1/GW_RS_BASE_RISE of a larger one to follow drift. A stamp counts only past
 * it; with no baseline yet nothing is shed for a stamp. Pure.
 */
#define GW_RS_BASE_RISE 1024u
typedef struct gw_rs_base {
    uint64_t us;
    bool known;
} gw_rs_base_t;
void gw_rs_base_learn(gw_rs_base_t *b, uint64_t waited_us);
/* Whether a stamp that says `waited_us` is late past the baseline. */
bool gw_rs_late(const gw_rs_base_t *b, uint64_t waited_us, uint64_t target_us);
/* The part of a stamp's wait `stamp_us` before the request reached this host,
 * given its kernel wait since (`kernel_us`, read from TCP_INFO only when the
 * stamp alone says late). Pure. */
uint64_t gw_rs_before_us(uint64_t stamp_us, uint64_t kernel_us);
/* Where a late request's connection stands: beyond what the worker keeps
 * (gw_door_keep), kept with the door open, or kept with it shut. */
typedef enum { GW_CONN_EXTRA, GW_CONN_KEPT_OPEN, GW_CONN_KEPT_SHUT } gw_conn_place_t;
/*
 * The too-late verdict: serve; shed (503 queue_time) and close, body unread;
 * or shed and keep, small body read and dropped. Beyond kept: from
 * GW_LATE_TARGETS, closed (the next request would wait as long). Kept, shut:
 * from GW_LATE_KEPT_TARGETS, kept (the quota needs them). Kept, open: from
 * GW_LATE_TARGETS, kept only for a worker whose quota runs out, as the wait
 * was a burst's and a balancer's pool would reconnect to a shut door (`pool`
 * row of `python3 bench/overload.py --cases cpu`). Pure.
 */
typedef enum { GW_LATE_SERVE, GW_LATE_SHED_CLOSE, GW_LATE_SHED_KEEP } gw_late_verdict_t;
gw_late_verdict_t gw_late_verdict(uint64_t waited_us, uint64_t target_us, gw_conn_place_t place);

/*
 * Our load or the machine's: a loop out of epoll is working, throttled by its
 * quota, or waiting for a CPU others hold; shedding cannot help the last. From
 * the thread's schedstat and the cgroup's throttled time: machine wait =
 * run-queue wait - throttled; when it exceeds the time run or throttled, the
 * busy share is counted without it. Pure; ns over a window of `span_ns`.
 */
unsigned gw_busy_own_pct(unsigned busy_pct, uint64_t span_ns, uint64_t cpu_ns,
                         uint64_t run_delay_ns, uint64_t throttled_ns);
/* Whether a window's loop mostly waited for others' CPU: busy at least
 * GW_BUSY_MACHINE_PCT with that wait taken out. An idle loop is not starved. Pure. */
#define GW_BUSY_MACHINE_PCT 10
bool gw_busy_machine(unsigned busy_pct, unsigned own_pct);

/*
 * DAGOR user priority (0..GW_UPRIO_LEVELS-1; the cut admits those below it).
 * Keyed by a secret the fleet shares (gw_overload.c: overload.priority_key_file,
 * else one kept in Redis, else drawn per process), so every gateway ranks a
 * user alike, and rotated with the minute, so no class of users is always
 * admitted: the minute's key is the first 16 bytes of HMAC-SHA256(secret,
 * "flashgate uprio " minute) and a user's priority the SipHash-2-4 of its id
 * under that key. Without the secret nobody can tell which ids a cut admits
 * (a fixed public key let them be ground offline).
 *
 * gw_ol_prio_key: the key of `minute` (now_ms / 60000) from the
 * GW_UPRIO_SECRET_LEN-byte secret; ~1 us, computed once a minute per worker.
 * gw_ol_user_prio: the user's priority under it; ~20 ns. Thread-safe, pure.
 */
#define GW_UPRIO_SECRET_LEN 32
void gw_ol_prio_key(const uint8_t *secret, uint64_t minute, cm_hash_key_t *out);
unsigned gw_ol_user_prio(const cm_hash_key_t *minute_key, const char *user, size_t len);

/* A Retry-After in whole seconds, uniform in [min_s, max_s] from `rnd` (any
 * 64-bit random or hash), so a refused crowd does not return in one wave. Thread-safe. */
unsigned gw_ol_retry_after(uint64_t rnd, unsigned min_s, unsigned max_s);

/*---- Degradation levels with hysteresis ----*/

typedef enum { GW_LEVEL_NORMAL = 0, GW_LEVEL_DEGRADE = 1, GW_LEVEL_SHED = 2, GW_LEVEL_PROTECT = 3 } gw_level_t;
#define GW_LEVEL_COUNT 4

/*
 * Level from pressure (queuing delay / target): level L is entered when a
 * window reaches enter[L], one level per window; left one level down after
 * hold_ms below exit[L] < enter[L], so it does not flap. Pure; one writer.
 */
typedef struct gw_level_sm {
    gw_level_t level;
    double enter[GW_LEVEL_COUNT], exit[GW_LEVEL_COUNT];
    uint64_t hold_ms;
    uint64_t below_since_ms; /* 0 = not below exit[level] */
    uint64_t since_ms;       /* when the current level was entered */
    uint64_t last_ms;        /* the last sample's time (0: none): an older one is ignored */
    uint64_t changes;
} gw_level_sm_t;

/* Defaults: enter 1.0 / 2.0 / 4.0, exit 0.5 / 1.0 / 2.0. */
void gw_level_sm_init(gw_level_sm_t *sm, uint64_t hold_ms, uint64_t now_ms);
/* Feeds one window's pressure; returns the (possibly new) level. A now_ms
 * before the last sample's changes nothing. */
gw_level_t gw_level_sm_update(gw_level_sm_t *sm, uint64_t now_ms, double pressure);

/*
 * What a route of criticality `c` gets at `level` (docs/api.md "Degradation
 * levels"): 0 all served; 1 sheddable -> fallback (or 503), degradable ->
 * fallback if it has one; 2 and 3 only critical served, the rest fallback or
 * 503 (3 decides from the head, before the body is read).
 */
typedef enum { GW_OL_SERVE = 0, GW_OL_FALLBACK = 1 } gw_ol_action_t;
gw_ol_action_t gw_ol_route_action(gw_level_t level, gw_crit_t c, bool has_fallback);
const char *gw_level_name(gw_level_t l);

/*---- Snapshot for stats and metrics ----*/

#define GW_OL_DEPS_MAX 34

/*
 * Bucket bounds (microseconds) of a dependency's round-trip histogram
 * (flashgate_dependency_latency_seconds): a loopback Redis answers in tens of
 * microseconds, an upstream may take seconds before its timeout; the last
 * bucket (+Inf) is implicit.
 */
#define GW_OL_RTT_BOUNDS_US                                                                        \
    {50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 2500000,  \
     5000000}
#define GW_OL_RTT_NBOUNDS 15

typedef struct gw_ol_dep_snap {
    char name[64];      /* "redis", "spool_fsync", "upstream:/v1/recs/" */
    bool active;        /* false: not a dependency in this configuration (memory
                           inventory, spool durability write); figures stay 0 */
    uint32_t limit;     /* summed over workers */
    uint32_t inflight;  /* summed over workers */
    uint64_t rejected;  /* requests the full limit refused (a 503, or a route's fallback) */
    uint64_t drops;     /* timeouts and errors seen */
    uint64_t rtt_us;    /* the last window's average, max over workers (adaptive only) */
    /* answered calls by round trip, summed over workers: bucket b counts those
     * within GW_OL_RTT_BOUNDS_US[b] and above the bound before it, the last
     * one those above every bound; and the sum of their round trips */
    uint64_t rtt_buckets[GW_OL_RTT_NBOUNDS + 1];
    uint64_t rtt_sum_us;
    uint64_t rtt_target_us; /* a route's latency_target_ms (0: none) */
    int breaker;        /* gw_br_state_t, -1 = none */
    uint64_t breaker_opens;
} gw_ol_dep_snap_t;

typedef struct gw_ol_snapshot {
    int level;                 /* gw_level_t in force */
    bool pinned;               /* set by an operator */
    bool adaptive;             /* overload.adaptive */
    char reason[160];          /* why the level was entered */
    int64_t level_since_ms;    /* wall clock */
    uint64_t level_changes;
    uint64_t queue_delay_us;   /* last window's average, max over workers */
    uint64_t queue_target_us;
    uint32_t loop_busy_pct;    /* last window, max over workers */
    uint32_t buy_admit_pct;    /* share of user priorities admitted (min over workers) */
    /* proxied requests answered 503 or their fallback, per criticality */
    uint64_t shed[GW_CRIT_COUNT];
    uint64_t degraded[GW_DEG_COUNT]; /* fallbacks answered, by cause (never counted as 503s) */
    uint64_t shed_users;       /* buys refused by user priority */
    uint64_t shed_late;        /* requests that waited too long before we saw them (queue_time) */
    /* too-late checks answered from the loop's bound (no system call) / TCP_INFO */
    uint64_t late_looks_loop, late_looks_kernel;
    uint64_t shed_late_upstream; /* of shed_late: waited in a balancer's queue (X-Request-Start) */
    uint64_t accept_pauses;    /* times a worker shut its door (stopped listening) */
    uint32_t accept_paused;    /* workers not listening right now */
    uint64_t accept_reset;     /* connections queued in the kernel when a door shut (reset) */
    uint64_t accept_trimmed;   /* keep-alive connections closed after their answer, door shut */
    uint64_t accept_conns;     /* connections the workers accepted */
    unsigned ndeps;
    gw_ol_dep_snap_t deps[GW_OL_DEPS_MAX];
} gw_ol_snapshot_t;

struct gw_server;
/*
 * Fills `out` with a running server's overload state (level, reason, each
 * dependency's limit and in-flight summed over workers, shed counts).
 * Thread-safe (atomics, the level lock briefly); for /admin/v1/stats and the
 * Prometheus exporter.
 */
void gw_overload_snapshot(struct gw_server *srv, gw_ol_snapshot_t *out);

#endif
