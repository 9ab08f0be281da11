/*
 * The pure parts of overload control (gw_overload.h): adaptive limits,
 * breaker, queuing delay and user priority, degradation levels, jitter.
 * No I/O and no clock of their own: the caller passes the time, so the unit
 * tests drive them with a fake one.
 */
#include "common/cm_hash.h"
#include "common/cm_rand.h"
#include "gateway/overload/gw_overload.h"

#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

/*---- criticality ----*/

static const char *const crit_names[GW_CRIT_COUNT] = {"critical", "degradable", "sheddable"};

const char *gw_crit_name(gw_crit_t c)
{
    return (unsigned)c < GW_CRIT_COUNT ? crit_names[c] : "?";
}

int gw_crit_parse(const char *s)
{
    for (int i = 0; i < GW_CRIT_COUNT; i++)
        if (strcmp(s, crit_names[i]) == 0)
            return i;
    return -1;
}

static const char *const degrade_names[GW_DEG_COUNT] = {
#define XX(n, s) [GW_DEG_##n] = s,
    GW_DEGRADE_CAUSES(XX)
#undef XX
};

const char *gw_degrade_cause_name(gw_degrade_cause_t c)
{
    return (unsigned)c < GW_DEG_COUNT ? degrade_names[c] : "?";
}

/*---- Gradient2 ----*/

#define G2_TOLERANCE 1.5
#define G2_SMOOTHING 0.2
#define G2_QUEUE_SIZE 4.0 /* at least; sqrt(limit) above 16 (gw_overload.h) */
#define G2_LONG_WINDOW 600.0 /* samples (windows) in the long average */
#define G2_WARMUP 10u
#define DROP_BACKOFF 0.5

/*
 * The RTT a window may show before it counts as a queue: Gradient2's
 * tolerance times the long average, or the floor if that is higher, but
 * never more than the target when one is set.
 *
 * The target exists because the long average cannot tell a dependency that
 * became slower from one that is queueing: under a crowd that keeps it
 * saturated, each window's RTT is within the tolerance of an average made of
 * such windows, so the limit, the RTT and the average climb together (the
 * page rows of `python3 bench/overload.py --cases mixed --loads 10`, and
 * `--page-target-ms 0` for none). A drain probe of the no-load RTT (Envoy's
 * adaptive concurrency, BBR's ProbeRTT) reads a healthy upstream with two
 * speeds of answer as a queue (docs/design.md, Known limits), so the
 * operator's figure is taken instead, as Sentinel's maximum RT per resource:
 * past it, the gradient is taken against the target, and the limit settles
 * where the RTT is about the target plus the queue allowance. The floor is
 * set by the gateway for all dependencies; a target below it is the
 * operator's word and wins.
 */
static double ref_rtt(const gw_alimit_t *l)
{
    double ref = G2_TOLERANCE * l->long_rtt_us;
    if (ref < (double)l->rtt_floor_us)
        ref = (double)l->rtt_floor_us;
    if (l->rtt_target_us && ref > (double)l->rtt_target_us)
        ref = (double)l->rtt_target_us;
    return ref;
}

static void publish(gw_alimit_t *l)
{
    atomic_store_explicit(&l->pub_limit, gw_alimit_get(l), memory_order_relaxed);
    atomic_store_explicit(&l->pub_inflight, l->inflight, memory_order_relaxed);
}

void gw_alimit_init(gw_alimit_t *l, uint32_t initial, uint32_t min, uint32_t max,
                    uint64_t now_us)
{
    memset(l, 0, sizeof(*l));
    if (min < 1)
        min = 1;
    if (max < min)
        max = min;
    if (initial < min)
        initial = min;
    if (initial > max)
        initial = max;
    /* The initial limit is a starting window, not a guess at the capacity:
     * slow start takes it up within a few round trips of a healthy dependency
     * (RFC 5681 section 3.1: ssthresh starts arbitrarily high). A high start
     * would send that many calls at once to a dependency busy from the first
     * request, and Gradient2's long average would keep their queue as its
     * baseline (`python3 bench/overload.py --quick --cases mixed`). */
    l->limit = initial;
    l->ssthresh = max;
    l->init_limit = initial;
    l->ss_base_us = UINT64_MAX;
    l->min_limit = min;
    l->max_limit = max;
    /* Long enough to average out a dependency's own jitter (a Redis under a CFS
     * quota answers within 0.1 ms or after up to a 10 ms throttle period: 5 ms
     * windows read that noise as rising latency and held the limit at half of
     * what Redis could take), short enough for a step response within ~150 ms. */
    l->min_window_us = 50000;
    l->max_window_us = 250000;
    l->win_start_us = now_us;
    publish(l);
}

void gw_alimit_set_floor(gw_alimit_t *l, uint64_t rtt_floor_us)
{
    l->rtt_floor_us = rtt_floor_us;
}

void gw_alimit_set_target(gw_alimit_t *l, uint64_t rtt_target_us)
{
    l->rtt_target_us = rtt_target_us;
}

uint32_t gw_alimit_get(const gw_alimit_t *l)
{
    uint32_t v = (uint32_t)l->limit;
    return v < l->min_limit ? l->min_limit : v;
}

bool gw_alimit_acquire(gw_alimit_t *l)
{
    if (l->inflight >= gw_alimit_get(l)) {
        l->win_full = true;
        atomic_fetch_add_explicit(&l->pub_rejected, 1, memory_order_relaxed);
        return false;
    }
    l->inflight++;
    if (l->inflight >= gw_alimit_get(l))
        l->win_full = true;
    if (l->inflight > l->win_max_inflight)
        l->win_max_inflight = l->inflight;
    atomic_store_explicit(&l->pub_inflight, l->inflight, memory_order_relaxed);
    return true;
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Whether a limit was validated (see validate()) recently enough to trust. */
static bool valid_fresh(const gw_alimit_t *l, uint64_t now_us)
{
    return l->valid > 0 && now_us >= l->valid_us && now_us - l->valid_us < GW_ALIMIT_NVP_US;
}

/*
 * An app-limited window (fewer than half the slots used) validated no more
 * than it used: the limit falls half way to twice the most it had in flight
 * (at least GW_ALIMIT_RESTART), as TCP's congestion window validation lets
 * cwnd decay while the application sends less than it (RFC 2861 section 3,
 * RFC 7661). What it was is kept as ssthresh, so slow start climbs back to
 * it within a few RTTs once the crowd uses it again and the dependency still
 * answers within ref_rtt().
 *
 * And a limit the dependency was seen to take (l->valid: a window that used
 * at least half of it at an RTT within ref_rtt(), without drops) in the last
 * GW_ALIMIT_NVP_US is where slow start goes back to after a lull, whatever
 * drops of another burst did to ssthresh (Redis stalled past its timeout
 * halves both), and a slow round below it does not end slow start: RFC 7661
 * trusts a validated cwnd through its non-validated phase, so a burst after a
 * lull is served at the limit it had. The initial limit is not validated: the
 * step from half load still meets twice what it used.
 */
static double validate(gw_alimit_t *l, double limit, uint64_t now_us)
{
    /* Callers answered without the dependency (its breaker open, an answer
     * known locally) are a crowd, not an idle client: the limit must not decay
     * through an open breaker. */
    if (l->win_ignored > l->win_n)
        return limit;
    double used = 2.0 * l->win_max_inflight, rest = GW_ALIMIT_RESTART;
    if (rest > l->init_limit)
        rest = l->init_limit; /* a limit set up below the restart value stays there */
    if (used < rest)
        used = rest;
    if (valid_fresh(l, now_us) && l->ssthresh < l->valid)
        l->ssthresh = l->valid;
    if (limit <= used)
        return limit;
    if (l->ssthresh < limit)
        l->ssthresh = limit;
    l->ss_left = 0; /* the crowd that comes back starts a new round (slow_start()) */
    return (limit + used) / 2;
}

/* Ends the current window: moves the limit from what it saw. */
static void close_window(gw_alimit_t *l, uint64_t now_us)
{
    double limit = l->limit;
    if (l->win_drops > 0) {
        limit *= DROP_BACKOFF;
        l->ssthresh = limit; /* no slow start past the loss (TCP halves ssthresh too) */
    } else if (l->win_n > 0) {
        double short_rtt = (double)l->win_sum_us / l->win_n;
        if (short_rtt < 1)
            short_rtt = 1;
        atomic_store_explicit(&l->pub_rtt_us, (uint64_t)short_rtt, memory_order_relaxed);
        /* The long average: plain mean during warm-up, then exponential. */
        l->long_n++;
        if (l->long_n <= G2_WARMUP) {
            l->long_rtt_us += (short_rtt - l->long_rtt_us) / l->long_n;
        } else {
            double f = 2.0 / (G2_LONG_WINDOW + 1.0);
            l->long_rtt_us = l->long_rtt_us * (1 - f) + short_rtt * f;
        }
        if (l->long_rtt_us / short_rtt > 2.0)
            l->long_rtt_us *= 0.95; /* recovering: let the baseline follow down */
        /* App-limited: the dependency was not what held us back. */
        if (l->win_max_inflight >= limit / 2) {
            /* Used, and answered within what we tolerate: validated (validate()). */
            if (short_rtt <= ref_rtt(l) && (limit >= l->valid || !valid_fresh(l, now_us))) {
                l->valid = limit;
                l->valid_us = now_us;
            }
            /* An RTT within the floor is no queue worth shedding for, whatever the baseline. */
            double gradient = clampd(ref_rtt(l) / short_rtt, 0.5, 1.0);
            double queue = sqrt(limit);
            if (queue < G2_QUEUE_SIZE)
                queue = G2_QUEUE_SIZE;
            /* Past a target, no queue allowance: each worker's limit would add
             * its own, and the calls of N workers queue behind each other's
             * (8 workers settled at 26 ms for a target of 10 with it). */
            if (l->rtt_target_us && short_rtt > (double)l->rtt_target_us)
                queue = 0;
            double next = limit * gradient + queue;
            limit = limit * (1 - G2_SMOOTHING) + next * G2_SMOOTHING;
        } else {
            limit = validate(l, limit, now_us);
        }
    }
    l->limit = clampd(limit, l->min_limit, l->max_limit);
    l->win_start_us = now_us;
    l->win_sum_us = 0;
    l->win_n = 0;
    l->win_drops = 0;
    l->win_ignored = 0;
    l->win_max_inflight = l->inflight;
    l->win_full = false;
    publish(l);
}

static void maybe_close(gw_alimit_t *l, uint64_t now_us)
{
    uint64_t age = now_us - l->win_start_us;
    if (now_us < l->win_start_us)
        age = 0;
    if ((l->win_n + l->win_drops >= GW_ALIMIT_WIN_SAMPLES && age >= l->min_window_us) ||
        (age >= l->max_window_us && (l->win_n || l->win_drops)))
        close_window(l, now_us);
    else if (age >= l->max_window_us) {
        /* An empty window: no RTT learned, but nothing used either. */
        if (l->win_max_inflight < l->limit / 2) {
            l->limit = clampd(validate(l, l->limit, now_us), l->min_limit, l->max_limit);
            publish(l);
        }
        l->win_start_us = now_us;
        l->win_max_inflight = l->inflight;
        l->win_full = false;
        l->win_ignored = 0;
    }
}

/*
 * Below ssthresh, a limit the crowd fills grows by one slot per answer that
 * came within ref_rtt(): it doubles per round trip, as TCP's slow start does
 * per ACK (RFC 5681 section 3.1), so a limit validated down at low load is
 * back within a few round trips of a healthy dependency. It ends when the
 * dependency shows a queue, as HyStart++ leaves slow start on a rise in delay
 * rather than on loss (RFC 9406: per round, the minimum RTT of its first
 * GW_ALIMIT_SS_SAMPLES answers): here when that minimum passes ref_rtt(), and
 * then ssthresh = limit and Gradient2 moves it from there. A loss would come
 * a whole timeout later; a single slow answer (a busy machine) is not a queue.
 * And it never takes the limit past twice what the dependency answered in
 * the last 2 * ref_rtt() (Little's law: a queue it drains within that time
 * at the rate just seen, allowed to double): a Redis under a CPU quota
 * answers at full speed until its quota runs out, and slow start must not
 * mistake that burst for capacity.
 */
static uint32_t done_recent(const gw_alimit_t *l, uint64_t span_us)
{
    uint64_t bins = span_us / 1000 + 1;
    if (bins > GW_ALIMIT_DONE_BINS)
        bins = GW_ALIMIT_DONE_BINS;
    uint32_t n = 0;
    for (uint64_t i = 0; i < bins; i++)
        n += l->done_bin[(l->done_ms - i) % GW_ALIMIT_DONE_BINS];
    return n;
}

static void count_done(gw_alimit_t *l, uint64_t now_us)
{
    uint64_t ms = now_us / 1000;
    if (ms != l->done_ms) {
        uint64_t gap = ms > l->done_ms ? ms - l->done_ms : GW_ALIMIT_DONE_BINS;
        for (uint64_t i = 1; i <= gap && i <= GW_ALIMIT_DONE_BINS; i++)
            l->done_bin[(l->done_ms + i) % GW_ALIMIT_DONE_BINS] = 0;
        l->done_ms = ms;
    }
    l->done_bin[ms % GW_ALIMIT_DONE_BINS]++;
}

/*
 * The RTT slow start tolerates: ref_rtt(), and before the first window gave a
 * long average, also the lowest RTT seen so far plus HyStart++'s delay
 * threshold (RFC 9406 section 4.2: clamp(min / 8, 4 ms, 16 ms)). Without it a
 * dependency slower than the floor (an upstream answering in a flat 300 ms)
 * would end slow start on its first round, at the initial limit, and
 * Gradient2 would take tens of seconds to grow it to the hundred or so the
 * dependency takes (test_limit_slow_start_slow_dependency).
 */
static double ss_ref(const gw_alimit_t *l)
{
    double ref = ref_rtt(l);
    if (l->long_n == 0 && l->ss_base_us != UINT64_MAX) {
        double eta = clampd((double)l->ss_base_us / 8, 4000, 16000);
        if ((double)l->ss_base_us + eta > ref)
            ref = (double)l->ss_base_us + eta;
    }
    /* Nor past the target: slow start would otherwise climb to a queue the
     * first window then has to cut back. */
    if (l->rtt_target_us && ref > (double)l->rtt_target_us)
        ref = (double)l->rtt_target_us;
    return ref;
}

/*
 * Twice what the dependency answers in `span_us` at the rate of the last
 * GW_ALIMIT_DONE_BINS ms (or of span_us, if shorter): a dependency slower than
 * the bins answers a limit's worth once per RTT, so counting only the bins
 * would hold its limit at a fraction of what it takes.
 */
static double rate_cap(const gw_alimit_t *l, uint64_t span_us)
{
    uint64_t bins = span_us / 1000 + 1; /* done_recent()'s count of whole bins */
    double scale = bins > GW_ALIMIT_DONE_BINS ? (double)bins / GW_ALIMIT_DONE_BINS : 1.0;
    return 2.0 * done_recent(l, span_us) * scale;
}

static void slow_start(gw_alimit_t *l, uint64_t now_us, uint64_t rtt_us)
{
    if (rtt_us < l->ss_base_us && l->long_n == 0)
        l->ss_base_us = rtt_us;
    double ref = ss_ref(l);
    if (!l->win_full || l->limit >= l->ssthresh || ref <= 0)
        return;
    if (l->ss_left == 0) { /* a new round: about one limit's worth of answers */
        l->ss_left = gw_alimit_get(l);
        l->ss_n = 0;
        l->ss_min_us = UINT64_MAX;
    }
    l->ss_left--;
    if (l->ss_n < GW_ALIMIT_SS_SAMPLES) {
        if (rtt_us < l->ss_min_us)
            l->ss_min_us = rtt_us;
        /* Below a limit validated recently, a slow round is not a queue of
         * ours: the dependency took that many at a healthy RTT (validate()). */
        if (++l->ss_n == GW_ALIMIT_SS_SAMPLES && (double)l->ss_min_us > ref &&
            !(valid_fresh(l, now_us) && l->limit < l->valid)) {
            l->ssthresh = l->limit;
            l->ss_left = 0;
            return;
        }
    }
    /* Nor while this window's answers are past the target so far: a server
     * whose answers are spread has some within it while their mean is well
     * past it, and a slot for each came back faster than the window's cut
     * took them (19 ms for a target of 11 at a 64-slot server answering in
     * step, test_review_target_spread_answers). The window's mean is what
     * close_window() cuts on. */
    if (l->rtt_target_us && (double)l->win_sum_us > (double)l->rtt_target_us * l->win_n)
        return;
    /* Nor past twice what is in flight: a limit reached once in a window
     * (win_full) is not one the crowd still fills, and slow start no longer
     * stops at the initial limit; Linux grows a congestion window in slow
     * start only below twice the packets out (tcp_is_cwnd_limited()). */
    if ((double)rtt_us > ref || l->limit + 1 > rate_cap(l, (uint64_t)(2 * ref)) ||
        l->limit + 1 > 2.0 * l->win_max_inflight)
        return;
    l->limit += 1;
    if (l->limit > l->ssthresh)
        l->limit = l->ssthresh;
    if (l->limit > l->max_limit)
        l->limit = l->max_limit;
    atomic_store_explicit(&l->pub_limit, gw_alimit_get(l), memory_order_relaxed);
}

void gw_alimit_release(gw_alimit_t *l, uint64_t now_us, uint64_t rtt_us, gw_al_outcome_t o)
{
    if (l->inflight > 0)
        l->inflight--;
    if (o == GW_AL_OK) {
        l->win_sum_us += rtt_us;
        l->win_n++;
        count_done(l, now_us);
        slow_start(l, now_us, rtt_us);
    } else if (o == GW_AL_IGNORE) {
        l->win_ignored++;
    } else if (o == GW_AL_DROP) {
        l->win_drops++;
        atomic_fetch_add_explicit(&l->pub_drops, 1, memory_order_relaxed);
    }
    atomic_store_explicit(&l->pub_inflight, l->inflight, memory_order_relaxed);
    maybe_close(l, now_us);
}

void gw_alimit_tick(gw_alimit_t *l, uint64_t now_us)
{
    maybe_close(l, now_us);
}

/*---- breaker ----*/

static const char *const br_names[] = {"closed", "open", "half_open"};

const char *gw_breaker_state_name(gw_br_state_t s)
{
    return (unsigned)s < 3 ? br_names[s] : "?";
}

static void br_set(gw_breaker_t *b, gw_br_state_t s)
{
    b->state = s;
    atomic_store_explicit(&b->pub_state, (int)s, memory_order_relaxed);
}

void gw_breaker_init(gw_breaker_t *b, uint32_t failures, uint64_t cooldown_ms)
{
    memset(b, 0, sizeof(*b));
    b->failures = failures ? failures : 1;
    b->cooldown_ms = cooldown_ms;
    br_set(b, GW_BR_CLOSED);
}

bool gw_breaker_allow(gw_breaker_t *b, uint64_t now_ms)
{
    switch (b->state) {
    case GW_BR_CLOSED:
        return true;
    case GW_BR_OPEN:
        if (now_ms < b->until_ms)
            return false;
        br_set(b, GW_BR_HALF_OPEN);
        b->probing = true;
        return true;
    case GW_BR_HALF_OPEN:
    default:
        if (b->probing)
            return false;
        b->probing = true;
        return true;
    }
}

void gw_breaker_success(gw_breaker_t *b)
{
    b->fails = 0;
    b->probing = false;
    if (b->state != GW_BR_CLOSED)
        br_set(b, GW_BR_CLOSED);
}

void gw_breaker_failure(gw_breaker_t *b, uint64_t now_ms)
{
    b->fails++;
    if (b->state == GW_BR_OPEN)
        return; /* stragglers sent before it opened do not extend the cool-down */
    if (b->state == GW_BR_HALF_OPEN || b->fails >= b->failures) {
        b->probing = false;
        b->until_ms = now_ms + b->cooldown_ms;
        br_set(b, GW_BR_OPEN);
        atomic_fetch_add_explicit(&b->pub_opens, 1, memory_order_relaxed);
    }
}

/*---- queuing delay and user priority ----*/

void gw_qdelay_init(gw_qdelay_t *q, uint64_t target_us, uint64_t interval_us, uint64_t now_us)
{
    memset(q, 0, sizeof(*q));
    q->target_us = target_us ? target_us : 1;
    q->interval_us = interval_us ? interval_us : 1;
    q->win_start_us = now_us;
    q->u_cut = GW_UPRIO_LEVELS;
    atomic_store_explicit(&q->pub_u_cut, q->u_cut, memory_order_relaxed);
}

void gw_qdelay_sample(gw_qdelay_t *q, uint64_t delay_us, bool request)
{
    q->win_sum_us += delay_us;
    q->win_n++;
    q->win_reqs += request ? 1u : 0u;
}

bool gw_qdelay_tick(gw_qdelay_t *q, uint64_t now_us, bool shed_users, unsigned busy_pct)
{
    if (now_us < q->win_start_us + q->interval_us)
        return false;
    q->avg_us = q->win_n ? (double)q->win_sum_us / q->win_n : 0;
    bool busy = q->win_reqs >= GW_QDELAY_MIN_REQUESTS && busy_pct >= GW_QDELAY_MIN_BUSY_PCT;
    q->busy_pct = busy_pct;
    atomic_store_explicit(&q->pub_busy_pct, busy_pct, memory_order_relaxed);
    q->over = busy && q->avg_us > (double)q->target_us;
    if (q->over && shed_users) {
        uint32_t step = q->u_cut / 8;
        q->u_cut -= step ? step : 1;
        if (q->u_cut < 1)
            q->u_cut = 1; /* never all: keep a consistent few going */
    } else if (q->u_cut < GW_UPRIO_LEVELS) {
        /* Also over target when the level does not let the cut move down:
         * level 1 holds with its queue over target (pressure 1 to 2), and a
         * cut that level 2 left and only a calm window could raise kept
         * refusing buyers there for as long as level 1 lasted. */
        q->u_cut += 2;
        if (q->u_cut > GW_UPRIO_LEVELS)
            q->u_cut = GW_UPRIO_LEVELS;
    }
    q->win_start_us = now_us;
    q->win_sum_us = 0;
    q->win_n = 0;
    q->win_reqs = 0;
    atomic_store_explicit(&q->pub_avg_us, (uint64_t)q->avg_us, memory_order_relaxed);
    atomic_store_explicit(&q->pub_pressure_us, busy ? (uint64_t)q->avg_us : 0,
                          memory_order_relaxed);
    atomic_store_explicit(&q->pub_u_cut, q->u_cut, memory_order_relaxed);
    return true;
}

bool gw_qdelay_admit_user(const gw_qdelay_t *q, unsigned prio)
{
    return prio < q->u_cut;
}

void gw_ol_prio_key(const uint8_t *secret, uint64_t minute, cm_hash_key_t *out)
{
    /* HMAC-SHA256(secret, "flashgate uprio " || minute, 8 bytes little-endian):
     * a PRF of the minute under the fleet's secret. Its first 16 bytes key the
     * minute's SipHash. */
    static const uint8_t label[16] = {'f', 'l', 'a', 's', 'h', 'g', 'a', 't',
                                      'e', ' ', 'u', 'p', 'r', 'i', 'o', ' '};
    uint8_t msg[sizeof(label) + 8], md[EVP_MAX_MD_SIZE];
    memcpy(msg, label, sizeof(label)); /* "flashgate uprio ", no NUL */
    for (int i = 0; i < 8; i++)
        msg[sizeof(label) + i] = (uint8_t)(minute >> (8 * i));
    unsigned mdlen = 0;
    HMAC(EVP_sha256(), secret, GW_UPRIO_SECRET_LEN, msg, sizeof(msg), md, &mdlen);
    uint64_t k0 = 0, k1 = 0;
    for (int i = 0; i < 8; i++) {
        k0 |= (uint64_t)md[i] << (8 * i);
        k1 |= (uint64_t)md[8 + i] << (8 * i);
    }
    out->k0 = k0;
    out->k1 = k1;
    OPENSSL_cleanse(md, sizeof(md));
}

unsigned gw_ol_user_prio(const cm_hash_key_t *minute_key, const char *user, size_t len)
{
    return (unsigned)(cm_hash_sip24(minute_key, user, len) % GW_UPRIO_LEVELS);
}

unsigned gw_ol_retry_after(uint64_t rnd, unsigned min_s, unsigned max_s)
{
    if (min_s < 1)
        min_s = 1;
    if (max_s < min_s)
        max_s = min_s;
    /* one splitmix64 step: a counter or a clock is a fine input too */
    rnd = cm_rand_splitmix64(&rnd);
    return min_s + (unsigned)(rnd % (uint64_t)(max_s - min_s + 1));
}

/*---- levels ----*/

static const char *const level_names[GW_LEVEL_COUNT] = {"normal", "degrade", "shed", "protect"};

const char *gw_level_name(gw_level_t l)
{
    return (unsigned)l < GW_LEVEL_COUNT ? level_names[l] : "?";
}

void gw_level_sm_init(gw_level_sm_t *sm, uint64_t hold_ms, uint64_t now_ms)
{
    memset(sm, 0, sizeof(*sm));
    static const double enter[GW_LEVEL_COUNT] = {0, 1.0, 2.0, 4.0};
    static const double exitv[GW_LEVEL_COUNT] = {0, 0.5, 1.0, 2.0};
    memcpy(sm->enter, enter, sizeof(enter));
    memcpy(sm->exit, exitv, sizeof(exitv));
    sm->hold_ms = hold_ms;
    sm->since_ms = now_ms;
}

gw_level_t gw_level_sm_update(gw_level_sm_t *sm, uint64_t now_ms, double pressure)
{
    /* A sample older than the last one is stale (a clock read before another
     * thread's update): now_ms - below_since_ms would wrap and leave a level
     * at once, without its hold, or it would climb twice in one window. */
    if (now_ms < sm->last_ms)
        return sm->level;
    sm->last_ms = now_ms;
    gw_level_t l = sm->level;
    if (l < GW_LEVEL_PROTECT && pressure >= sm->enter[l + 1]) {
        sm->level = l + 1;
        sm->since_ms = now_ms;
        sm->below_since_ms = 0;
        sm->changes++;
        return sm->level;
    }
    if (l == GW_LEVEL_NORMAL)
        return l;
    if (pressure >= sm->exit[l]) {
        sm->below_since_ms = 0;
        return l;
    }
    if (!sm->below_since_ms) {
        sm->below_since_ms = now_ms ? now_ms : 1;
        return l;
    }
    if (now_ms - sm->below_since_ms >= sm->hold_ms) {
        sm->level = l - 1;
        sm->since_ms = now_ms;
        sm->below_since_ms = 0;
        sm->changes++;
    }
    return sm->level;
}

gw_ol_action_t gw_ol_route_action(gw_level_t level, gw_crit_t c, bool has_fallback)
{
    if (c == GW_CRIT_CRITICAL || level == GW_LEVEL_NORMAL)
        return GW_OL_SERVE;
    if (level == GW_LEVEL_DEGRADE && c == GW_CRIT_DEGRADABLE && !has_fallback)
        return GW_OL_SERVE; /* nothing to degrade to: still served */
    return GW_OL_FALLBACK;
}

/*---- The door's decisions ----*/

void gw_door_init(gw_door_t *d, uint64_t target_us, uint64_t now_us)
{
    memset(d, 0, sizeof(*d));
    d->target_us = target_us;
    d->win_start_us = now_us;
    d->reqs_per_conn = GW_DOOR_RPC_MAX; /* no connection seen yet: nothing says flood */
}

void gw_door_request(gw_door_t *d)
{
    d->win_reqs++;
    d->begun_tick++;
}

void gw_door_conn(gw_door_t *d)
{
    d->win_conns++;
    if (d->look)
        d->look_conns++;
}

uint32_t gw_door_budget(const gw_door_t *d, uint32_t floor)
{
    double fit = d->rate * (double)d->target_us / 1e6;
    return fit > floor ? (uint32_t)fit : floor;
}

uint32_t gw_door_keep(const gw_door_t *d)
{
    double rate = d->shut && d->shut_rate > d->rate ? d->shut_rate : d->rate;
    if (d->rate_peak > rate)
        rate = d->rate_peak;
    double fit = rate * (double)d->target_us / 1e6;
    return fit > GW_DOOR_MIN_CONNS ? (uint32_t)fit : GW_DOOR_MIN_CONNS;
}

bool gw_door_should_shut(const gw_door_t *d, unsigned busy_pct, uint32_t queued)
{
    if (d->shut)
        return false;
    /* A queue behind a loop that waits in epoll: other processes have the CPU.
     * Not asked again just after the door reopened on a crowd (capped): the
     * window it reads was spent shut, and waiting for a busy one lets a queue of
     * new connections in, all reset at the next shut (~4.5 us each; bench/README.md,
     * Findings, "Overload control"). */
    if (d->machine || (busy_pct < GW_DOOR_BUSY_PCT && !(d->crowd_recent && d->capped)))
        return false;
    /* A connection flood, not a crowd: the connection guard's job. */
    if (d->reqs_per_conn < GW_DOOR_MIN_REQS_PER_CONN)
        return false;
    if (gw_door_look_seen(d))
        return true;
    return queued > gw_door_budget(d, GW_DOOR_MIN_QUEUE);
}

bool gw_door_look_seen(const gw_door_t *d)
{
    if (!d->look || d->shut || !d->capped || !d->saturated || d->machine ||
        d->reqs_per_conn < GW_DOOR_MIN_REQS_PER_CONN)
        return false;
    /* A refill has what it came for; a look at the crowd, a budget's proof. */
    if (d->look_want)
        return d->look_conns >= d->look_want;
    return d->look_conns > gw_door_budget(d, GW_DOOR_MIN_QUEUE);
}

bool gw_door_should_shut_quota(const gw_door_t *d, uint32_t queued)
{
    if (d->shut || d->machine || d->reqs_per_conn < GW_DOOR_MIN_REQS_PER_CONN)
        return false;
    return queued > GW_DOOR_QUOTA_QUEUE * gw_door_budget(d, GW_DOOR_MIN_QUEUE);
}

void gw_door_late(gw_door_t *d)
{
    d->win_late++;
}

bool gw_door_should_shut_late(const gw_door_t *d)
{
    return !d->shut && !d->machine && d->reqs_per_conn >= GW_DOOR_MIN_REQS_PER_CONN &&
           d->win_late >= GW_DOOR_LATE_SHUT;
}

void gw_door_machine(gw_door_t *d, bool machine)
{
    d->machine = machine;
}

void gw_door_saturated(gw_door_t *d, bool saturated)
{
    d->saturated = saturated;
}

void gw_door_quota(gw_door_t *d, bool ran_out, uint64_t now_us)
{
    if (ran_out)
        d->quota_us = now_us ? now_us : 1;
    d->capped = d->quota_us && now_us - d->quota_us < GW_DOOR_CAPPED_US;
}

void gw_door_set_shut(gw_door_t *d, bool shut, uint64_t now_us)
{
    if (shut && !d->shut) {
        d->shut_us = now_us;
        d->idle_ticks = 0;
        /* Shut again within GW_DOOR_RECENT_US of a reopen: the windows since
         * were the shut's and the reopen's (few requests, the rate's average
         * low), the crowd is the one it shut on; its rate still sizes what the
         * door keeps (gw_door_keep). */
        double prev = d->crowd_recent ? d->shut_rate : 0;
        d->shut_rate = d->rate > prev ? d->rate : prev;
    }
    if (!shut && d->shut) {
        if (!d->look_next) /* a full reopen: the crowd's pool may be another */
            d->refill_us = d->pool_cap = 0;
        d->opened_us = now_us;
        d->crowd_recent = true;
        d->look = d->look_next;
        d->look_conns = 0;
        d->win_late = 0; /* those of the shut say nothing of the reopened door */
    }
    if (shut) {
        d->look = false;
        d->look_want = 0;
    }
    d->look_next = false;
    d->shut = shut;
}

void gw_door_pool(gw_door_t *d, uint64_t pool)
{
    d->pool = pool;
    d->pool_set = true;
}

bool gw_door_tick(gw_door_t *d, uint64_t now_us, bool idle)
{
    if (now_us - d->win_start_us >= GW_DOOR_WINDOW_US) {
        double span = (double)(now_us - d->win_start_us);
        double r = (double)d->win_reqs * 1e6 / span;
        d->rate = d->rate > 0 ? 0.5 * d->rate + 0.5 * r : r;
        d->rate_peak = r > GW_DOOR_PEAK_DECAY * d->rate_peak ? r : GW_DOOR_PEAK_DECAY * d->rate_peak;
        /* No new connection: keep-alive traffic only, a crowd by definition.
         * A flood is believed at once, a crowd again only over a few windows. */
        double rpc = d->win_conns ? (double)d->win_reqs / (double)d->win_conns : GW_DOOR_RPC_MAX;
        if (rpc > GW_DOOR_RPC_MAX)
            rpc = GW_DOOR_RPC_MAX;
        d->reqs_per_conn = rpc < d->reqs_per_conn ? rpc : 0.5 * d->reqs_per_conn + 0.5 * rpc;
        d->win_start_us = now_us;
        d->win_reqs = d->win_conns = d->win_late = 0;
    }
    bool began = d->begun_tick > 0;
    d->begun_tick = 0;
    if (!d->shut) {
        if (d->crowd_recent && now_us - d->opened_us >= GW_DOOR_RECENT_US) {
            d->crowd_recent = d->look = false;
            d->look_want = 0;
        }
        return false;
    }
    /* Counted in ticks, not in time: a process throttled by a CPU quota sees
     * 20 ms gaps in which nothing began because it did not run. */
    d->idle_ticks = !began && idle ? d->idle_ticks + 1 : 0;
    if (d->idle_ticks >= GW_DOOR_IDLE_TICKS)
        return true;
    d->look_want = 0;
    uint32_t keep = gw_door_keep(d);
    /* A refill only where its look can end (gw_door_look_seen): without a
     * quota the worker's own shut decides, and a short pool that left it idle
     * reopens by the idle ticks anyway. */
    if (d->pool_cap && d->pool > d->pool_cap)
        d->pool_cap = 0; /* the crowd keeps more now */
    uint64_t full = d->pool_cap && d->pool_cap < keep ? d->pool_cap : keep;
    if (d->pool_set && d->capped && d->saturated &&
        GW_DOOR_REFILL_DEN * d->pool < GW_DOOR_REFILL_NUM * full) {
        /* The last refill, just now, left the pool where it found it (less
         * than half of what it let in stayed, and none lost since): the
         * crowd closed the rest, and this pool is all it keeps. */
        if (d->refill_us && now_us - d->refill_us < GW_DOOR_REFILL_MEMORY_US &&
            d->pool >= d->refill_pool && d->pool < d->refill_pool + d->refill_want / 2) {
            d->pool_cap = d->pool;
        } else {
            d->look_want = (uint32_t)(full - d->pool); /* the pool ran low: gw_door_pool */
            d->refill_us = now_us;
            d->refill_pool = d->pool;
            d->refill_want = d->look_want;
            return d->look_next = true;
        }
    }
    /* Saturated by the kept connections: the hold is extended while they still
     * bring the crowd (not dwindled to a few). */
    uint64_t held = now_us - d->shut_us;
    if (d->saturated && 2.0 * d->rate >= d->shut_rate)
        return d->look_next = held >= GW_DOOR_HOLD_MAX_US;
    return held >= GW_DOOR_HOLD_US;
}

bool gw_late_look(uint64_t lag_us, uint64_t qdelay_avg_us, bool door_shut, unsigned busy_pct,
                  uint64_t target_us)
{
    if (door_shut)
        return true;
    if (busy_pct < GW_QDELAY_MIN_BUSY_PCT)
        return false; /* late, if at all, because others have the CPU */
    return lag_us * 100u >= target_us * GW_LATE_LOOK_LAG_PCT || 2u * qdelay_avg_us > target_us;
}

bool gw_late_shed(uint64_t waited_us, uint64_t target_us)
{
    return target_us > 0 && (double)waited_us >= GW_LATE_TARGETS * (double)target_us;
}

bool gw_request_start_us(const char *v, uint64_t *out_us)
{
    if (!v)
        return false;
    while (*v == ' ' || *v == '\t')
        v++;
    if (v[0] == 't' && v[1] == '=')
        v += 2;
    uint64_t whole = 0, frac = 0, scale = 1;
    int digits = 0, fdigits = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        if (++digits > 19)
            return false;
        whole = whole * 10u + (uint64_t)(*v - '0');
    }
    if (digits == 0)
        return false;
    bool has_frac = *v == '.';
    if (has_frac) {
        for (v++; *v >= '0' && *v <= '9'; v++) {
            if (fdigits < 6) { /* microseconds at most */
                frac = frac * 10u + (uint64_t)(*v - '0');
                scale *= 10u;
                fdigits++;
            }
        }
        if (fdigits == 0)
            return false;
    }
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v != '\0')
        return false;
    uint64_t us;
    if (has_frac) { /* seconds */
        if (whole > (UINT64_MAX - 999999u) / 1000000u)
            return false;
        us = whole * 1000000u + frac * (1000000u / scale);
    } else if (whole >= 1000000000000000000ull) { /* nanoseconds */
        us = whole / 1000u;
    } else if (whole >= 1000000000000000ull) { /* microseconds */
        us = whole;
    } else if (whole >= 1000000000000ull) { /* milliseconds */
        us = whole * 1000u;
    } else { /* seconds */
        us = whole * 1000000u;
    }
    *out_us = us;
    return true;
}

bool gw_upstream_waited(const char *v, uint64_t now_us, uint64_t *waited_us)
{
    uint64_t start;
    if (!gw_request_start_us(v, &start) || start > now_us + 60u * 1000000u)
        return false;
    *waited_us = start >= now_us ? 0 : now_us - start;
    return true;
}

bool gw_late_upstream_look(bool door_shut, unsigned busy_pct)
{
    return door_shut || busy_pct >= GW_QDELAY_MIN_BUSY_PCT;
}

void gw_rs_base_learn(gw_rs_base_t *b, uint64_t waited_us)
{
    if (!b->known || waited_us < b->us) {
        b->us = waited_us;
        b->known = true;
        return;
    }
    b->us += (waited_us - b->us) / GW_RS_BASE_RISE; /* a clock that drifts the other way */
}

bool gw_rs_late(const gw_rs_base_t *b, uint64_t waited_us, uint64_t target_us)
{
    return b->known && waited_us > b->us && gw_late_shed(waited_us - b->us, target_us);
}

uint64_t gw_rs_before_us(uint64_t stamp_us, uint64_t kernel_us)
{
    return stamp_us > kernel_us ? stamp_us - kernel_us : 0;
}

bool gw_late_shed_kept(uint64_t waited_us, uint64_t target_us)
{
    return target_us > 0 && (double)waited_us >= GW_LATE_KEPT_TARGETS * (double)target_us;
}

gw_late_verdict_t gw_late_verdict(uint64_t waited_us, uint64_t target_us, gw_conn_place_t place)
{
    if (place == GW_CONN_KEPT_SHUT)
        return gw_late_shed_kept(waited_us, target_us) ? GW_LATE_SHED_KEEP : GW_LATE_SERVE;
    if (!gw_late_shed(waited_us, target_us))
        return GW_LATE_SERVE;
    return place == GW_CONN_KEPT_OPEN ? GW_LATE_SHED_KEEP : GW_LATE_SHED_CLOSE;
}

bool gw_door_trims(uint64_t open, uint64_t leaving, uint32_t keep)
{
    return open > leaving && open - leaving > keep;
}

unsigned gw_busy_own_pct(unsigned busy_pct, uint64_t span_ns, uint64_t cpu_ns,
                         uint64_t run_delay_ns, uint64_t throttled_ns)
{
    uint64_t machine = run_delay_ns > throttled_ns ? run_delay_ns - throttled_ns : 0;
    if (!span_ns || machine <= cpu_ns + throttled_ns)
        return busy_pct; /* mostly our own work or our own quota */
    uint64_t m_pct = machine >= span_ns ? 100 : machine * 100 / span_ns;
    return busy_pct > m_pct ? busy_pct - (unsigned)m_pct : 0;
}

bool gw_busy_machine(unsigned busy_pct, unsigned own_pct)
{
    return busy_pct >= GW_BUSY_MACHINE_PCT && own_pct < busy_pct;
}
