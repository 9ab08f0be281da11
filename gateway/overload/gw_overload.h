/*
 * Overload control: what the gateway does when the crowd is larger than the
 * machines (docs/design.md "Overload control").
 *
 * Pure parts (no I/O, the clock is an argument, unit-tested):
 *  - gw_alimit: an adaptive concurrency limit per dependency (Redis, each
 *    upstream, the spool's fsync), Netflix concurrency-limits' Gradient2;
 *  - gw_breaker: a circuit breaker with half-open probing for hard failures;
 *  - gw_qdelay: the gateway's own queuing delay per worker loop and DAGOR's
 *    user-priority admission for the buy path;
 *  - gw_level_sm: degradation levels 0..3 with hysteresis;
 *  - jittered Retry-After and the user priority hash.
 * Server parts (gw_overload.c bottom half): the per-worker state, the admin
 * API's degrade level, the stats JSON and a plain snapshot for metrics.
 */
#ifndef GW_OVERLOAD_H
#define GW_OVERLOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * Why a proxied route answered its fallback instead of its upstream's answer
 * (the "degraded" counters). A fallback is never counted as the 503 it stands
 * in for: the names are those of the 503 reasons the route would have got
 * without a fallback (upstream_limit, upstream_breaker, level_N), plus the
 * upstream's own failures (otherwise a 502 or 504).
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
 * Gradient2, after Netflix concurrency-limits' Gradient2Limit (Apache 2.0;
 * read, not copied): a long-term average RTT (exponential, ~600 samples) is
 * compared with the short-term RTT of the last window;
 *   gradient = clamp(max(tolerance * long, floor) / short, 0.5, 1.0)
 *   new      = limit * gradient + queue_size   (queue_size = max(4, sqrt(limit)))
 *   limit    = limit * (1 - smoothing) + new * smoothing   (smoothing 0.2)
 * so a flat latency lets the limit grow by about queue_size * smoothing per
 * window and a rising one shrinks it by up to half the smoothing share. When
 * the window saw fewer than limit/2 in flight the dependency was not the
 * bottleneck (app-limited): Gradient2 leaves the limit there; ours lets it
 * decay half way to twice the most in flight (not below GW_ALIMIT_RESTART),
 * as TCP validates an unused congestion window (RFC 2861, RFC 7661), and
 * remembers the old value as ssthresh: when the crowd fills it again and the
 * dependency answers within max(tolerance * long, floor), it grows by one per
 * such answer (slow start, RFC 5681), up to ssthresh, to twice what is in
 * flight and to twice what the dependency answers in two such RTTs; a round whose first answers
 * were all slower ends it (HyStart++, RFC 9406), but not below a limit a
 * window validated (used half of at a healthy RTT, no drops) in the last
 * GW_ALIMIT_NVP_US, which a lull also restores ssthresh to (RFC 7661's
 * non-validated phase: the c256 burst after a lull). The initial limit is
 * such a window too, with ssthresh at the maximum, as TCP's initial window:
 * an upstream's starts at 16 (overload.upstream_limit_initial), because a
 * high start to an upstream busy from the first request made a queue
 * Gradient2's long average then kept as its baseline (`make bench-overload`,
 * the upstream case); Redis's at 256, for the buyers' first burst. Measured: a limit left at its
 * initial 256 at half load sent 256 reserves at once when the crowd came to a
 * Redis held to 10% of a core, a queue past the 50 ms timeout, and the step
 * to 5x took 30-260 ms to converge (`make bench-overload`, the redis case). When the long average is
 * more than twice the short one (latency recovered) it decays by 5% a window.
 * Our additions: the target (gw_alimit_set_target, below; 0 = none) and
 * the floor (gw_alimit_set_floor; 0 = none), an RTT below
 * which the limit never shrinks: a pipelined Redis answers a batch of N in N
 * times its service time, so its RTT rises with the batch at any load, and
 * the long average, learnt from small batches (or dragged down by the
 * recovery decay in windows of single calls, 16-40 µs), read a batch of 50 at
 * 0.5 ms as a queue 2-3 times over and held the limit at 15-20 with Redis
 * 30% busy (bench/README.md, Redis, finding 4). Queue size sqrt(limit) above
 * 16 (Netflix's GradientLimit default, an option of Gradient2Limit): a limit
 * that fell in a burst climbs back in seconds, not tens of seconds; it still
 * settles where RTT = max(tolerance * long, floor) once the dependency is
 * the bottleneck. A window closes after GW_ALIMIT_WIN_SAMPLES samples and
 * 50 ms, or after 250 ms (Netflix's windows are 1 s; ours must follow a step
 * in load within a few hundred ms); a window with drops (timeouts, errors) multiplies the limit by
 * 0.5, as AIMD does on loss, because a dependency that did not answer at all
 * gives no RTT to take a gradient of.
 *
 * One writer: a worker loop owns each instance (no lock). `pub_*` fields are
 * atomics that other threads may read for stats.
 */
#define GW_ALIMIT_WIN_SAMPLES 32
/* An unused limit decays towards twice its use, not below this (gw_overload_core.c validate()). */
#define GW_ALIMIT_RESTART 32
/* Answers counted per ms for slow start's rate check (gw_overload_core.c slow_start()). */
#define GW_ALIMIT_DONE_BINS 32
/* Slow start ends on a round whose first this many answers were all slower than the tolerated RTT. */
#define GW_ALIMIT_SS_SAMPLES 8
/* A validated limit is trusted for this long after the window that validated it
 * (RFC 7661's non-validated phase, 5 minutes there too; gw_overload_core.c validate()). */
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
/*
 * An RTT above which the dependency is queueing whatever the long average
 * has learnt (0: none). An operator who knows what a healthy answer takes
 * sets it (a route's latency_target_ms): Gradient2's long average follows a
 * dependency that stays saturated up, and the queue with it, which the
 * target stops (gw_overload_core.c ref_rtt()). Owner thread only.
 */
void gw_alimit_set_target(gw_alimit_t *l, uint64_t rtt_target_us);
/*
 * Takes a slot if fewer than the limit are in flight. Returns false (and
 * counts a rejection) when full: answer 503 without calling the dependency.
 * Owner thread only.
 */
bool gw_alimit_acquire(gw_alimit_t *l);
/*
 * Gives a slot back. GW_AL_OK records rtt_us as a sample, GW_AL_DROP counts
 * a drop (timeout, error), GW_AL_IGNORE neither (the call never reached the
 * dependency). May close the window and move the limit. Owner thread only.
 */
void gw_alimit_release(gw_alimit_t *l, uint64_t now_us, uint64_t rtt_us, gw_al_outcome_t o);
/* Closes a window that timed out without new samples. Owner thread only. */
void gw_alimit_tick(gw_alimit_t *l, uint64_t now_us);
/* The current limit (floor, >= min). Owner thread only (others: pub_limit). */
uint32_t gw_alimit_get(const gw_alimit_t *l);

/*---- Circuit breaker for hard failures ----*/

/*
 * Closed -> open after `failures` consecutive hard failures (connection
 * refused, timeouts in a row); open -> half-open after `cooldown_ms`, when
 * exactly one probe is let through; the probe's success closes it, its
 * failure opens it again for another cool-down. Owner thread only, except
 * the pub_* atomics. Transitions are counted, never logged here.
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
 * The gateway's own queue: per window (interval_us) the average of the
 * queuing-delay samples (event-loop lag, and how long a request waited in the
 * loop iteration that read it) is compared with the target (WeChat's DAGOR
 * sheds when the average queuing time passes 20 ms). Buys are admitted by
 * DAGOR's user priority: a request whose user priority (0..127, a hash of the
 * user id and the current minute) is below `u_cut` passes. While overloaded
 * (and `shed_users` allowed by the level) u_cut shrinks by 1/8 a window; in
 * any other window it grows by 2 (DAGOR: fast decrease, slow increase), also
 * over target below level 2, so a cut left by level 2 fades out at level 1
 * instead of staying while level 1's queue is over target. The same users
 * keep getting through for the whole minute, so a person already admitted
 * once is not refused half way through.
 *
 * A window counts as over target only when the loop itself was busy: with
 * fewer than GW_QDELAY_MIN_REQUESTS requests, or with the loop busy (not
 * waiting in epoll) less than GW_QDELAY_MIN_BUSY_PCT of the window, the delay
 * comes from other processes taking the CPU, and shedding our own crowd would
 * not help (measured: a load generator on the same two cores made an
 * uncapped gateway look overloaded and shed for nothing).
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
/*
 * Closes the window if interval_us passed: computes the average, and moves
 * u_cut down when over target and `shed_users`, else up (to GW_UPRIO_LEVELS).
 * `busy_pct` is the share of the window the loop spent working (0..100).
 * Returns true when a window closed. Owner thread only.
 */
bool gw_qdelay_tick(gw_qdelay_t *q, uint64_t now_us, bool shed_users, unsigned busy_pct);
/* True if a buy of user priority `prio` may go on. Owner thread only. */
bool gw_qdelay_admit_user(const gw_qdelay_t *q, unsigned prio);

/*---- The door: connection-level backpressure (sockets in gw_overload.c) ----*/

/*
 * The door's decisions, kept apart from its sockets so that they can be tested
 * with an injected clock. A worker shuts its door (stops listening) when its
 * accept queue holds more than one queue target's worth of its request rate
 * (at least GW_DOOR_MIN_QUEUE), its loop is busy (>= GW_DOOR_BUSY_PCT; for a
 * worker held by a CPU quota, not asked within GW_DOOR_RECENT_US of a reopen:
 * the crowd is still believed, gw_door_quota) and the
 * connections it accepts bring requests (a crowd, not a connection flood:
 * >= GW_DOOR_MIN_REQS_PER_CONN requests begun per connection accepted). A shut
 * door reopens after GW_DOOR_IDLE_TICKS ticks in a row with nothing to do, or
 * after GW_DOOR_HOLD_US (up to GW_DOOR_HOLD_MAX_US while a capped worker's kept
 * connections saturate it), or at once for a refill look (gw_door_pool).
 * docs/design.md "Connection-level backpressure" has the measurements behind
 * each constant (e.g. the flood test: a slow-loris address
 * made a long accept queue and a busy loop too, and a shut door refused the
 * buyers with the attacker, 146-290 of ~500 answered).
 */
#define GW_DOOR_MIN_QUEUE 64
#define GW_DOOR_BUSY_PCT 80
/* Keep-alive connections kept while shut, at least: as many as the accept queue
 * the door lets wait (GW_DOOR_MIN_QUEUE). Under a CPU quota the kept connections
 * are the worker's whole supply of work, and few of them make each burst of its
 * quota find few requests (`make bench-overload`, the cpu case). */
#define GW_DOOR_MIN_CONNS GW_DOOR_MIN_QUEUE
#define GW_DOOR_IDLE_TICKS 2
#define GW_DOOR_HOLD_US 250000u
#define GW_DOOR_RECENT_US (2u * GW_DOOR_HOLD_US) /* after a reopen: the crowd is believed */
#define GW_DOOR_WINDOW_US 100000u /* the rate and the requests per connection */
#define GW_DOOR_MIN_REQS_PER_CONN 0.5
#define GW_DOOR_RPC_MAX 4.0 /* requests per connection are counted up to this */
/* While the connections it already has keep the worker saturated, the hold is
 * extended up to this (a look would only let in a queue to reset). */
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
/*
 * The keep-alive connections a shut door keeps (door_trim closes the others):
 * one queue target at the highest of the rate now, the rate it shut at (the
 * highest of its shuts' while each came within GW_DOOR_RECENT_US of a reopen) and the
 * recent peak window's (halved in ~0.7 s), at least GW_DOOR_MIN_CONNS. Not the
 * rate now alone: a shut's resets and the quota debt around them leave windows
 * in which few requests begin, the rate's average halves with each, and the
 * trim followed it down to the floor; with the door shut no connection comes
 * back, so a CPU-capped worker served the rest of the crowd through 8-28
 * connections, few requests per wakeup, at 15-22 us of CPU an answer where
 * 40-63 connections took 10.8-14 (`make bench-overload`).
 */
uint32_t gw_door_keep(const gw_door_t *d);
/*
 * Whether a request that begins on a shut door's worker closes its connection
 * after its answer (the trim): when the connections that stay, `open` less the
 * `leaving` ones (closing after their answer, or trimmed with the answer still
 * to come), are more than `keep`. Not `open` alone: a connection closes after
 * its write, in a later loop iteration, so every request of one iteration's
 * burst saw the same count and each was trimmed (measured: 99 connections to 1
 * in one 100 ms bin after a shut); the same for a trim counted only at its
 * answer, as a held buy's is at the iteration's end. Pure.
 */
bool gw_door_trims(uint64_t open, uint64_t leaving, uint32_t keep);
#define GW_DOOR_PEAK_DECAY 0.9
/*
 * Whether an open door should shut now, `queued` connections waiting to be
 * accepted. Also, whatever the queue: the door reopened after the longest
 * hold (GW_DOOR_HOLD_MAX_US, its kept connections still saturating a capped
 * worker) only to look whether the crowd is still there, and since then more
 * than a budget of new connections came while the worker stays saturated and
 * capped. A look is not a queue: the worker accepts each new connection at
 * once, so the accept queue stays short while the connections it accepts grow
 * its keep-alive pool, a queue the kernel does not count (each one more request
 * in flight behind the same CPU). Measured (cpu case, 2x, 5% of a core): after
 * the look at 2.2 s the accept queue never reached its budget; 100 ms later the
 * crowd's requests waited past 2.5 targets (209 late 503s in a 100 ms bin),
 * the door shut 250 ms after the look on 144 queued connections to reset, and
 * the 400 ms around the look answered ~100 of 1,100 in time, where the bins
 * around them answered ~215 of ~265 each (`make bench-overload`).
 */
bool gw_door_should_shut(const gw_door_t *d, unsigned busy_pct, uint32_t queued);
/*
 * That part alone, asked at each accept (gw_ol_conn_started): a capped worker's
 * loop iteration can span several quota periods (~100 ready connections at
 * ~20 us each is 2 ms of CPU, two periods' quota at 5% of a core), and the door
 * looked only at iteration edges saw 137 queued and 38 accepted at its first
 * chance. Pure.
 */
bool gw_door_look_seen(const gw_door_t *d);
void gw_door_set_shut(gw_door_t *d, bool shut, uint64_t now_us);
/*
 * Per queue window: whether the loop's time went mostly to waiting for a CPU
 * that other processes hold (gw_busy_own_pct took it out). Such a window never
 * shuts the door, not even just after a reopen on a crowd: the queue is the
 * machine's. Owner thread only.
 */
void gw_door_machine(gw_door_t *d, bool machine);
/*
 * Per queue window: whether the worker used all the CPU it had: its CPU quota
 * ran out in at least half of the window's quota periods (an uncapped loop's
 * busy share does not say it: a loaded machine's wait looks the same). A door
 * shut on a crowd stays shut past GW_DOOR_HOLD_US (up to GW_DOOR_HOLD_MAX_US)
 * while the keep-alive connections it kept saturate the worker and still bring
 * at least half the request rate it had when it shut: reopening to look would
 * only queue new connections it cannot serve, reset at the next shut
 * (measured, CPU-bound case: 150-1,000 resets a look at 2x-10x, ~4.5 us each
 * on loopback, and the quota's stall after them delayed the admin listener's
 * probes). Owner thread only.
 */
void gw_door_saturated(gw_door_t *d, bool saturated);
/*
 * Per queue window: whether the worker's CPU quota ran out in it. Just after a
 * reopen on a crowd, the busy check is skipped (the window it reads was spent
 * shut) only for a worker whose quota ran out within GW_DOOR_CAPPED_US (the
 * longest hold and the re-shut's span after it: a worker capped when its door
 * shut is still believed when it reopens): under a quota the loop's busy share
 * reads low and the crowd is believed. An
 * uncapped worker's busy share is what it is, shut or not: it served its kept
 * connections in that window. Measured (mixed case, uncapped, 10x, load ~3):
 * a door reopened after its hold shut again 10-60 ms later on loops 18-23%
 * busy, five times in a row, and stayed shut for 1.5 s of a 3 s run (8,842
 * connections refused or reset). Owner thread only.
 */
#define GW_DOOR_CAPPED_US (GW_DOOR_HOLD_MAX_US + GW_DOOR_RECENT_US)
void gw_door_quota(gw_door_t *d, bool ran_out, uint64_t now_us);
/*
 * Whether an open door should shut now for a worker whose CPU quota ran out
 * in this or the last window (its loop's busy share, measured from epoll,
 * reads low under a quota: a throttled period is often spent inside
 * epoll_wait's return). The queue must hold GW_DOOR_QUOTA_QUEUE budgets: one
 * quota period's arrivals wait in the queue even at capacity. Pure.
 */
bool gw_door_should_shut_quota(const gw_door_t *d, uint32_t queued);
/*
 * A late shed closed its connection (gw_ol_too_late: beyond the connections
 * kept, or within them for a worker whose quota did not run out); and whether
 * an open door should shut on what the window's late sheds say, for a worker
 * whose CPU quota ran out (the caller
 * asks cpu.stat): GW_DOOR_LATE_SHUT of them are a queue, whatever its place.
 * The accept queue is not the only one: a worker accepts the connections its
 * loop sees at once, and those it accepted queue their requests in their
 * socket buffers, out of the accept queue's count. Measured (cpu case, 2x, 5%
 * of a core): at the sale's start the pool grew from 64 to ~180 connections
 * while the accept queue stayed under the quota rule's four budgets for
 * 250-300 ms; 55-64 late 503s a 100 ms bin came first, then the shut reset
 * 355-518 queued connections, and the first 300 ms answered ~200 of ~790 in
 * time (`make bench-overload`). Never for a flood or a "machine"
 * window. Owner thread only / pure.
 */
#define GW_DOOR_LATE_SHUT 8u
void gw_door_late(gw_door_t *d);
bool gw_door_should_shut_late(const gw_door_t *d);
/*
 * Before each tick: the worker's open connections less those already closing
 * after their answer. A shut door of a worker held by its CPU quota and
 * saturated (the case below) whose pool fell below GW_DOOR_REFILL_NUM /
 * GW_DOOR_REFILL_DEN of what it keeps (gw_door_keep) reopens at the next tick
 * for a refill look, which shuts again (gw_door_look_seen) as soon as it has
 * accepted what the pool lacked (look_want), not a budget of them: its trim
 * and the clients' own pools both close the connections past what each keeps
 * (a CDN edge or nginx keeps so many idle and closes the rest; so does
 * flashgate-load), and the two together left a capped worker 13-19 connections
 * of the 64 it keeps, each quota period finding few requests: 150-165 answers
 * a 100 ms bin for the rest of the run where 62 connections served 215 (cpu
 * case, 2x; `make bench-overload`). At half, the pool settled just
 * above it: 34 connections, one request each per 20 ms quota period, ~250
 * answers a bin where the quota serves ~420 (`make bench-overload`).
 * A refill the crowd undoes is not tried again: when a refill is due within
 * GW_DOOR_REFILL_MEMORY_US of the last one and the pool is no smaller than it
 * was then but kept less than half of what that refill lacked, the crowd
 * closed what the refill let in (its own pool is full:
 * flashgate-load keeps 64 idle, nginx `keepalive N` as many), and that pool
 * is the crowd's cap (pool_cap): the rule then asks for 3/4 of the cap, not
 * of what the door keeps, until the pool grows past the cap or the door
 * reopens in full. Measured without the pool cap (cpu case at 2x, each door
 * event logged): the door kept 91 (4,573/s x 20 ms) where the crowd holds 64,
 * so the rule reopened it every 40 ms, 108 times in a 5 s run, to accept ~27
 * connections the crowd then closed and to reset the ~30 queued behind them at
 * each shut (2,400-2,800 resets a run); 2x goodput 4,354 / 3,170 / 4,309/s
 * against 4,548 / 4,787 / 4,637/s with the cap (3 interleaved pairs, 4 shuts
 * a run). Owner thread only.
 */
#define GW_DOOR_REFILL_NUM 3u
#define GW_DOOR_REFILL_DEN 4u
#define GW_DOOR_REFILL_MEMORY_US 100000u
void gw_door_pool(gw_door_t *d, uint64_t pool);
/*
 * Every tick: closes the rate window when due and, while shut, returns true
 * when the door should reopen. `idle`: no request is in progress but those
 * waiting on a dependency. Owner thread only.
 */
bool gw_door_tick(gw_door_t *d, uint64_t now_us, bool idle);
/*
 * Whether a tick may count as idle for gw_door_tick: nothing in progress (but
 * what waits on a dependency) and the tick fired on time, less than
 * GW_DOOR_LATE_TICK_US after it was due. A late tick means the loop did not run
 * (its CPU quota spent, or the CPU held by others): that nothing began in that
 * gap says nothing about the crowd. Measured (CPU-bound case, 2x): a door shut
 * on a crowd reopened after 10-80 ms on two such ticks while its kept
 * connections still saturated it, and shut again 10-100 ms later on 70-180 new
 * connections to reset. In gw_overload.c; pure.
 */
#define GW_DOOR_LATE_TICK_US 5000u
bool gw_door_idle_tick(bool nothing_in_progress, uint64_t lag_us);

/*
 * Too late to serve: the kernel knows how long a request's bytes have waited
 * in its socket (TCP_INFO's tcpi_last_data_recv: ms since the last segment
 * arrived, jiffy resolution), which covers the accept queue and the socket
 * buffer, the waits the gateway cannot see. A request that has already
 * waited GW_LATE_TARGETS queue targets (50 ms at the default 20 ms) is
 * answered a prepared 503 `queue_time` before its body is read, and its
 * connection closes: served, it would arrive past the 100 ms a person can be
 * kept waiting (CoDel's and DAGOR's queue-time shedding, at the edge). The
 * getsockopt is spent only while the worker shows a queue of its own: its door
 * shut, or its loop busy on its own account (gw_busy_own_pct >=
 * GW_QDELAY_MIN_BUSY_PCT) and late by GW_LATE_LOOK_LAG_PCT of the target or its
 * last window's queuing delay past half the target. A request late because
 * other processes held the CPU is served: refusing it would cost about as much
 * and save nothing (the loop has time once it runs).
 */
#define GW_LATE_TARGETS 2.5
#define GW_LATE_LOOK_LAG_PCT 25

/* Whether to ask the kernel how long this request waited. Pure. */
bool gw_late_look(uint64_t lag_us, uint64_t qdelay_avg_us, bool door_shut, unsigned busy_pct,
                  uint64_t target_us);
/* Whether a request that waited `waited_us` before the gateway saw it is too late. Pure. */
bool gw_late_shed(uint64_t waited_us, uint64_t target_us);
/*
 * The same for a request on a connection a shut door keeps (kept = not trimmed:
 * the worker's open connections within gw_door_keep). Those connections are the
 * worker's whole supply of work while shut, and the queue they make is at most
 * one target's worth, so such a request is shed only from GW_LATE_KEPT_TARGETS:
 * served before that, it still answers within the 100 ms (its wait plus at most
 * the target). Shed at 2.5 targets, each kept connection that waited through the
 * shut's backlog closed (its body is unread), and the worker could run out of
 * connections, idle, reopen, let a new queue in to reset at the next shut, and
 * do it again every 100-300 ms (measured: 16 shuts and 2,586 resets in a 3 s
 * run at 2x; `make bench-overload`).
 */
#define GW_LATE_KEPT_TARGETS 4.0
bool gw_late_shed_kept(uint64_t waited_us, uint64_t target_us);

/*
 * The wait before the gateway: a load balancer with a fixed pool of
 * connections (nginx `max_conns` with a queue, HAProxy `maxconn`) holds the
 * crowd in its own queue, where neither the kernel nor the loop can see it.
 * It can say when it took the request: `X-Request-Start`, as nginx's
 * `proxy_set_header X-Request-Start "t=${msec}"` writes it (Heroku's router
 * and New Relic read the same field). Believed only from a trusted proxy
 * (server.trusted_proxies). A request that waited GW_LATE_TARGETS queue
 * targets since then, while the worker is busy on its own account
 * (gw_late_upstream_look), is answered 503 `queue_time` before its body is
 * read, and its connection stays: it is the balancer's pool, and the wait
 * was the balancer's queue, not the connection's (counted in
 * shed_late_upstream). What the request then waited in this host's kernel
 * (its bytes unread in the socket, or its connection in the accept queue
 * while the door was shut) is the gateway's own queue, not the balancer's: it
 * is taken off the stamp's wait (gw_rs_before_us: the loop's bound on it
 * first, the kernel's TCP_INFO figure only when that bound decides nothing),
 * and the gateway's own late check judges it. Served, it would answer past
 * the 100 ms; shed, it costs a 503's CPU instead of an accept's, and the
 * queue behind it drains.
 *
 * gw_request_start_us reads the field's value: "t=" (optional) then seconds
 * with a fraction ("1732269600.123", nginx's ${msec}) or an integer of
 * seconds, milliseconds, microseconds or nanoseconds since the epoch, told
 * apart by size (as New Relic does). Returns false for anything else. Pure.
 */
bool gw_request_start_us(const char *v, uint64_t *out_us);
/* How long before now_us the request was taken, from the field's value; false
 * if it is unreadable or more than a minute in the future (a clock that far
 * off is not to be believed; a start up to that is taken as 0). Pure. */
bool gw_upstream_waited(const char *v, uint64_t now_us, uint64_t *waited_us);
/* Whether a busy worker asks: busy on its own account (gw_busy_own_pct >=
 * GW_QDELAY_MIN_BUSY_PCT) or its door shut. A balancer's queue exists when the
 * gateway is what is slow; an idle one serves whatever the stamp says. Pure. */
bool gw_late_upstream_look(bool door_shut, unsigned busy_pct);
/*
 * The stamp is the balancer's clock, the wait is read on the gateway's: a
 * skew between the two would read as a wait (50 ms of it would shed every
 * stamped request of a busy worker). So each worker learns its baseline, the
 * least wait it has seen on a stamp while it was not busy (when a pool's
 * balancer queues nothing: skew plus the network), rising by 1/GW_RS_BASE_RISE
 * of a larger wait so that it follows a clock's drift, and a stamp counts only
 * for what it waited past that baseline. No baseline yet (stamps seen only
 * while busy): nothing is shed for a stamp. Pure.
 */
#define GW_RS_BASE_RISE 1024u
typedef struct gw_rs_base {
    uint64_t us;
    bool known;
} gw_rs_base_t;
void gw_rs_base_learn(gw_rs_base_t *b, uint64_t waited_us);
/* Whether a stamp that says `waited_us` is late past the baseline. */
bool gw_rs_late(const gw_rs_base_t *b, uint64_t waited_us, uint64_t target_us);
/* The part of a stamp's wait `stamp_us` spent before the request reached this
 * host, given what it has waited in the kernel since (`kernel_us`, read
 * from TCP_INFO only when the stamp alone says late). Pure. */
uint64_t gw_rs_before_us(uint64_t stamp_us, uint64_t kernel_us);
/*
 * Where a late request's connection stands: beyond the connections the worker
 * keeps (gw_door_keep; trimmed while shut), within them with the door open, or
 * within them with the door shut.
 */
typedef enum { GW_CONN_EXTRA, GW_CONN_KEPT_OPEN, GW_CONN_KEPT_SHUT } gw_conn_place_t;
/*
 * What the too-late check does with a request that waited `waited_us`: serve
 * it; shed it (503 queue_time) and close its connection (its body unread); or
 * shed it and keep the connection (its small body is read and dropped and it
 * brings the next request).
 * - Beyond the connections kept: shed from 2.5 targets and closed; it belonged
 *   to a queue, and the next request on it would wait as long.
 * - Kept, door shut: shed only from GW_LATE_KEPT_TARGETS, and kept. A kept
 *   connection closed with its late request left the worker with fewer
 *   connections than its quota can serve in a burst (2-36 of a budget of 64
 *   kept, 17-38 us of CPU an answer against 11-13 at 64), and one served
 *   whatever its wait admitted the first shut's backlog late (10x admitted p99
 *   98-159 ms: `make bench-overload`).
 * - Kept, door open: shed from 2.5 targets, and kept (the caller keeps it
 *   only for a worker whose CPU quota runs out: an uncapped worker's late
 *   sheds never shut its door, so it closes them as beyond). Within the
 *   budget the queue those connections make is at most a target's worth, so the wait was
 *   a burst's (a sale's first quota periods), not a queue the next request
 *   would meet; and such connections are often a load balancer's fixed pool,
 *   which reconnects at once: closed, each one came back to a door the late
 *   sheds had shut, and its slot failed every request it took while the door
 *   stayed shut (measured behind a 64-connection pool at 2x of a 5% quota:
 *   8 late sheds at the start, then 8,753 refused reconnects and half the
 *   202s of the same crowd without protection; `make bench-overload`).
 * Pure.
 */
typedef enum { GW_LATE_SERVE, GW_LATE_SHED_CLOSE, GW_LATE_SHED_KEEP } gw_late_verdict_t;
gw_late_verdict_t gw_late_verdict(uint64_t waited_us, uint64_t target_us, gw_conn_place_t place);

/*
 * Our own load or the machine's: a loop that is not waiting in epoll is busy
 * either working, throttled by its own CPU quota, or runnable and waiting for
 * a CPU that other processes hold. The last is the machine's load, and
 * shedding our own crowd would not help it (measured: at load 17 the door shut
 * 7 times in the uncapped dependency-bound case at 2x). Per window, from the
 * thread's schedstat (its CPU time and its run-queue wait, which on Linux
 * includes the time its cgroup was throttled) and the cgroup's throttled time:
 * machine wait = run-queue wait - throttled. When the machine wait exceeds the
 * time the thread ran or was throttled, the loop's busy share is counted
 * without it. Measured on this kernel (6.18): a spinning thread held to 5% of
 * a core ran 47 ms, was throttled 772 ms and waited 954 ms in 1 s (machine
 * wait 182 ms: ours); uncapped beside other work it ran 767 ms and waited
 * 230 ms (ours too). Pure; all figures in ns over a window of `span_ns`.
 */
unsigned gw_busy_own_pct(unsigned busy_pct, uint64_t span_ns, uint64_t cpu_ns,
                         uint64_t run_delay_ns, uint64_t throttled_ns);
/*
 * Whether a window's loop mostly waited for a CPU others hold (gw_door_machine):
 * gw_busy_own_pct took that wait out of a loop busy at least
 * GW_BUSY_MACHINE_PCT of the window. An idle loop is not starved: before, 1%
 * busy with 0% its own counted, and kept a door reopened on a crowd open while
 * 1,500 connections queued (measured, CPU-bound case at 10x). Pure.
 */
#define GW_BUSY_MACHINE_PCT 10
bool gw_busy_machine(unsigned busy_pct, unsigned own_pct);

/* DAGOR user priority: 0..127 from the user id and the minute (now_ms / 60000). Thread-safe. */
unsigned gw_ol_user_prio(const char *user, size_t len, uint64_t minute);

/*
 * A Retry-After in whole seconds, uniform in [min_s, max_s] from `rnd`
 * (any 64-bit random or hashed value), so a refused crowd does not come back
 * in one wave. Thread-safe.
 */
unsigned gw_ol_retry_after(uint64_t rnd, unsigned min_s, unsigned max_s);

/*---- Degradation levels with hysteresis ----*/

typedef enum { GW_LEVEL_NORMAL = 0, GW_LEVEL_DEGRADE = 1, GW_LEVEL_SHED = 2, GW_LEVEL_PROTECT = 3 } gw_level_t;
#define GW_LEVEL_COUNT 4

/*
 * Automatic level from a pressure figure (queuing delay / target, >= 0):
 * level L (1..3) is entered when the pressure of a window reaches enter[L]
 * (one level per window at most, so a spike climbs step by step), and left
 * (one level down) only after the pressure stayed below exit[L] for hold_ms
 * (exit[L] < enter[L]: no flapping around one threshold). Pure; one writer.
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
 * What a route of criticality `c` gets at `level` (the one table of the
 * levels, docs/api.md "Degradation levels"):
 *   level 0: everything served;
 *   level 1: sheddable -> fallback (or 503), degradable -> fallback if it has one;
 *   level 2 and 3: only critical routes served; the rest fallback or 503
 *   (level 3 decides from the request head, before the body is read).
 */
typedef enum { GW_OL_SERVE = 0, GW_OL_FALLBACK = 1 } gw_ol_action_t;
gw_ol_action_t gw_ol_route_action(gw_level_t level, gw_crit_t c, bool has_fallback);
const char *gw_level_name(gw_level_t l);

/*---- Snapshot for stats and metrics ----*/

#define GW_OL_DEPS_MAX 34

typedef struct gw_ol_dep_snap {
    char name[64];      /* "redis", "spool_fsync", "upstream:/v1/recs/" */
    bool active;        /* false: not a dependency in this configuration (memory
                           inventory, spool durability write); figures stay 0 */
    uint32_t limit;     /* summed over workers */
    uint32_t inflight;  /* summed over workers */
    uint64_t rejected;  /* requests the full limit refused (a 503, or a route's fallback) */
    uint64_t drops;     /* timeouts and errors seen */
    uint64_t rtt_us;    /* the last window's average, max over workers */
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
    /* proxied requests answered 503 overloaded or their fallback (level, limit,
     * breaker, or the upstream's failure), per criticality */
    uint64_t shed[GW_CRIT_COUNT];
    uint64_t degraded[GW_DEG_COUNT]; /* fallbacks answered, by cause (never counted as 503s) */
    uint64_t shed_users;       /* buys refused by user priority */
    uint64_t shed_late;        /* requests that waited too long before we saw them (queue_time) */
    /* too-late checks answered from the loop's bound on the wait (no system
     * call), and from the kernel's TCP_INFO */
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
 * Fills `out` with the overload state of a running server (level, reason,
 * each dependency's limit and in-flight count summed over the workers,
 * shed counts). Thread-safe (reads atomics and takes the level lock briefly);
 * for /admin/v1/stats and the Prometheus exporter.
 */
void gw_overload_snapshot(struct gw_server *srv, gw_ol_snapshot_t *out);

#endif
