/*
 * The gateway's rate limits (see gw_limit.h).
 *
 * Layout
 * - Per-user and per-IP buckets: one table of GW_LIMIT_SHARDS shards. A shard
 *   is a mutex plus an open-addressing array of 24-byte slots {hash, bucket}.
 *   The slot's hash is SipHash-2-4 of (scope byte, key) under a random key;
 *   bit 0 is overwritten with the scope (0 user, 1 IP) so that eviction knows
 *   which policy a slot follows, and 0 marks an empty slot. The top 8 bits pick
 *   the shard, bits 1..32 the home slot (multiply-shift, no power-of-two
 *   rounding, so no memory is wasted). A key lives within GW_LIMIT_WINDOW slots
 *   of its home.
 * - Memory: each shard holds ceil(max_keys / 256) keys in 4/3 as many slots
 *   (75% load), all allocated up front in one mapping on huge pages and made
 *   resident at start (cm_map_huge, cm_prefault: 32 MiB for the default
 *   1,000,000 keys). Slots are never freed, only reused, so the table never allocates
 *   after gw_limits_new: the hot path does no allocation.
 * - Insertion of an unknown key: an empty slot in the window while the shard
 *   is under its key cap; otherwise a slot whose bucket has refilled
 *   completely (it carries no information, so reclaiming it is lossless:
 *   evicted_idle); otherwise the least recently used slot in the window
 *   (evicted_busy; that key fails open: it starts again with a full bucket).
 *   A window with no occupied slot at all (probability ~0.25^16 at full load)
 *   takes an empty slot even at the cap; memory stays fixed regardless.
 * - Sales: GW_LIMIT_SALE_SLOTS slots, each with its own mutex, found by a
 *   lock-free scan of their hashes; claiming or replacing a slot takes the
 *   map mutex (rare: first request of a sale, or after it went idle).
 * - Global: one bucket, one mutex.
 * - Policies: each scope's effective policy is packed in one _Atomic uint64_t
 *   (rate 40 bits: 1e12 < 2^40; burst 24 bits: 1e7 < 2^24), so a reader never
 *   sees a torn rate/burst pair and takes no lock.
 *
 * Locks: pthread mutexes of the adaptive kind (PTHREAD_MUTEX_ADAPTIVE_NP),
 * rather than spinlocks. The critical sections are tens of nanoseconds, and an
 * uncontended futex mutex costs the same single atomic as a spinlock; the
 * adaptive kind also spins briefly under contention. But gateway workers may
 * outnumber cores (2 cores here), and a spinning waiter whose lock holder was
 * preempted burns its whole time slice, whereas a mutex sleeps. TSan also
 * understands mutexes natively. gw_limits_admit takes one lock per consulted
 * scope, never two at once, so there is no lock order to get wrong; the sale
 * map's slow path nests map -> slot, and nothing nests the other way.
 */
#include "gateway/base/gw_limit.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_LIMIT_SHARDS 256
#define GW_LIMIT_WINDOW 16
#define GW_LIMIT_SALE_SLOTS 256
#define GW_LIMIT_MEMO_MAX 64 /* user ids up to this length are memoised (INV_USER_ID_MAX) */

/* hash 0 = empty. Bit 0: 0 = user, 1 = IP. */
typedef struct slot {
    uint64_t hash;
    cm_bucket_t b;
} slot_t;

_Static_assert(sizeof(slot_t) == 24, "a tracked key is 24 bytes in its slot");
_Static_assert(GW_LIMIT_BYTES_PER_KEY * 3 == sizeof(slot_t) * 4,
               "GW_LIMIT_BYTES_PER_KEY is one slot at 75% load");

typedef struct shard {
    _Alignas(64) pthread_mutex_t mu; /* own cache line: no false sharing between shards */
    slot_t *slots;
    uint32_t nslots, window;
    uint64_t max_keys;
    uint64_t keys, evicted_idle, evicted_busy; /* guarded by mu */
} shard_t;

typedef struct sale_slot {
    _Alignas(64) pthread_mutex_t mu;
    _Atomic uint64_t hash; /* 0 = empty; changed only with map mutex and mu held */
    cm_bucket_t b;         /* guarded by mu */
} sale_slot_t;

struct gw_limits {
    cm_hash_key_t key;
    uint64_t serial; /* of this limiter, from 1: the thread's user memo checks it */
    _Atomic uint64_t pol[GW_SCOPE_COUNT]; /* effective policies, packed */

    pthread_mutex_t cfg_mu; /* serialises writers of base/share/pol */
    cm_rate_policy_t base[GW_SCOPE_COUNT];
    uint32_t share;

    shard_t *shards;
    slot_t *slot_mem;
    uint64_t nslots_total, capacity;
    size_t slot_bytes, bytes;

    pthread_mutex_t sale_map_mu;
    uint64_t sale_evicted_idle, sale_evicted_busy; /* guarded by sale_map_mu */
    sale_slot_t sales[GW_LIMIT_SALE_SLOTS];

    _Alignas(64) pthread_mutex_t global_mu;
    cm_bucket_t global;

    /* Per-sale rules: an immutable snapshot swapped atomically. A replaced one
     * is retired with the grace period it waits for and freed once every
     * reader has passed a quiescent point since (see "Grace periods" below). */
    struct rules_snap *_Atomic rules;
    struct rules_snap *retired; /* newest first; guarded by cfg_mu */
    uint64_t rule_sets;         /* allocated: in force + retired; guarded by cfg_mu */
    /* Grace periods: the swap count (written under cfg_mu), and per reader the
     * count it saw at its last quiescent point (UINT64_MAX: offline). */
    _Alignas(64) _Atomic uint64_t epoch;
    struct reader_slot *readers; /* NULL: readers undeclared, retired sets kept */
    unsigned nreaders;
};

/* A rule's counters live outside the snapshots, one per rule's sale, shared
 * by every snapshot in which that sale has a rule, so a reader still holding
 * an old snapshot counts into the same place as the new one: counts are exact
 * across rule changes. A rule that a change removes leaves its counters to
 * the retired snapshot, which frees them with itself after its grace period:
 * a reader still holding that snapshot counts into them, never into the
 * counters of a rule that came in since (each new rule gets new ones). */
typedef struct rule_ctr {
    _Atomic uint64_t rejected[2], dry_run_rejected[2];
} rule_ctr_t;

typedef struct rule_ent {
    gw_rule_t r;
    rule_ctr_t *ctr;
    bool ctr_last; /* retired snapshot: the next one dropped this rule; ctr is freed with it */
} rule_ent_t;

typedef struct rules_snap {
    struct rules_snap *next_retired;
    uint64_t grace; /* retired: freed once every reader has seen epoch >= grace */
    size_t n;
    rule_ent_t e[];
} rules_snap_t;

/* One reader's announcement, on a cache line of its own: the writer reads it,
 * only its reader writes it, and only when the epoch moved. */
struct reader_slot {
    _Alignas(64) _Atomic uint64_t seen;
};

/*---- policies ----*/

static cm_rate_policy_t pol_normalize(cm_rate_policy_t p)
{
    if (p.rate_milli == 0)
        return (cm_rate_policy_t){0, 0};
    if (p.rate_milli > CM_RATE_MILLI_MAX)
        p.rate_milli = CM_RATE_MILLI_MAX;
    if (p.burst == 0)
        p.burst = 1;
    if (p.burst > CM_RATE_BURST_MAX)
        p.burst = CM_RATE_BURST_MAX;
    return p;
}

static uint64_t pol_pack(cm_rate_policy_t p)
{
    return p.rate_milli << 24 | p.burst;
}

static cm_rate_policy_t pol_unpack(uint64_t v)
{
    return (cm_rate_policy_t){.rate_milli = v >> 24, .burst = v & 0xffffff};
}

static cm_rate_policy_t pol_load(gw_limits_t *l, gw_scope_t s)
{
    return pol_unpack(atomic_load(&l->pol[s]));
}

static uint64_t div_ceil(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

/* Recomputes the effective policies. Caller holds cfg_mu. */
static void pol_publish(gw_limits_t *l)
{
    for (int s = 0; s < GW_SCOPE_COUNT; s++) {
        cm_rate_policy_t p = pol_normalize(l->base[s]);
        if ((s == GW_SCOPE_SALE || s == GW_SCOPE_GLOBAL) && p.rate_milli > 0 && l->share > 1) {
            /* Rounded up: a share never turns a limit off, and burst stays >= 1. */
            p.rate_milli = div_ceil(p.rate_milli, l->share);
            p.burst = div_ceil(p.burst, l->share);
        }
        atomic_store(&l->pol[s], pol_pack(p));
    }
}

void gw_limits_set(gw_limits_t *l, gw_scope_t scope, cm_rate_policy_t p)
{
    if ((unsigned)scope >= GW_SCOPE_COUNT)
        return;
    pthread_mutex_lock(&l->cfg_mu);
    /* A scope that is off keeps the burst it was given (sale_burst's 1000 by
     * default), as gw_limits_get returns it: it was stored as 0, so GET
     * /admin/v1/limits showed 0 and PATCH {"sale_rps":5} alone was refused
     * for want of a burst, where turning a rate on is meant to be one field.
     * The effective policy (pol_publish) is still {0, 0}. */
    if (p.rate_milli == 0)
        l->base[scope] = (cm_rate_policy_t){
            0, p.burst < CM_RATE_BURST_MAX ? p.burst : CM_RATE_BURST_MAX};
    else
        l->base[scope] = pol_normalize(p);
    pol_publish(l);
    pthread_mutex_unlock(&l->cfg_mu);
}

cm_rate_policy_t gw_limits_get(gw_limits_t *l, gw_scope_t scope)
{
    cm_rate_policy_t p = {0, 0};
    if ((unsigned)scope >= GW_SCOPE_COUNT)
        return p;
    pthread_mutex_lock(&l->cfg_mu);
    p = l->base[scope];
    pthread_mutex_unlock(&l->cfg_mu);
    return p;
}

void gw_limits_set_share(gw_limits_t *l, uint32_t n)
{
    pthread_mutex_lock(&l->cfg_mu);
    l->share = n ? n : 1;
    pol_publish(l);
    pthread_mutex_unlock(&l->cfg_mu);
}

/*---- lifecycle ----*/

/* Frees a retired snapshot and the counters of the rules its successor dropped. */
static void snap_free(rules_snap_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].ctr_last)
            free(s->e[i].ctr);
    free(s);
}

static void mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(mu, &a);
    pthread_mutexattr_destroy(&a);
}

static void *aligned_zalloc(size_t size)
{
    size = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size);
    if (p)
        memset(p, 0, size);
    return p;
}

gw_limits_t *gw_limits_new(uint64_t max_keys)
{
    uint64_t per_shard = div_ceil(max_keys ? max_keys : 1, GW_LIMIT_SHARDS);
    uint64_t nslots = div_ceil(per_shard * 4, 3); /* 75% load */
    if (nslots > UINT32_MAX)
        return NULL;

    gw_limits_t *l = aligned_zalloc(sizeof *l);
    if (!l)
        return NULL;
    l->shards = aligned_zalloc(sizeof(shard_t) * GW_LIMIT_SHARDS);
    l->nslots_total = nslots * GW_LIMIT_SHARDS;
    /* Every buy probes a random slot: huge pages, or each probe is a TLB miss,
     * and resident from the start, or each new key's first touch is a page
     * fault on the buy path; together they would be most of an accepted order's
     * user time under a CPU quota (`make bench-overload`, the cpu case). Lazy pages
     * would cost RAM only for the slots in use, but a sale's crowd of
     * new users touches every page within its first seconds anyway. */
    l->slot_mem = cm_map_huge(l->nslots_total * sizeof(slot_t), &l->slot_bytes);
    if (l->slot_mem)
        cm_prefault(l->slot_mem, l->slot_bytes);
    static _Atomic uint64_t serials;
    l->serial = atomic_fetch_add(&serials, 1) + 1;
    if (!l->shards || !l->slot_mem || cm_hash_seed_random(&l->key) != 0) {
        cm_unmap(l->slot_mem, l->slot_bytes);
        free(l->shards);
        free(l);
        return NULL;
    }
    l->capacity = per_shard * GW_LIMIT_SHARDS;
    l->bytes = sizeof *l + sizeof(shard_t) * GW_LIMIT_SHARDS + l->nslots_total * sizeof(slot_t);
    for (int i = 0; i < GW_LIMIT_SHARDS; i++) {
        shard_t *sh = &l->shards[i];
        mutex_init(&sh->mu);
        sh->slots = l->slot_mem + (uint64_t)i * nslots;
        sh->nslots = (uint32_t)nslots;
        sh->window = nslots < GW_LIMIT_WINDOW ? (uint32_t)nslots : GW_LIMIT_WINDOW;
        sh->max_keys = per_shard;
    }
    for (int i = 0; i < GW_LIMIT_SALE_SLOTS; i++) {
        mutex_init(&l->sales[i].mu);
        atomic_init(&l->sales[i].hash, 0);
    }
    mutex_init(&l->sale_map_mu);
    mutex_init(&l->global_mu);
    mutex_init(&l->cfg_mu);
    l->share = 1;
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        atomic_init(&l->pol[s], 0);
    atomic_init(&l->epoch, 0);
    return l;
}

void gw_limits_free(gw_limits_t *l)
{
    if (!l)
        return;
    for (int i = 0; i < GW_LIMIT_SHARDS; i++)
        pthread_mutex_destroy(&l->shards[i].mu);
    for (int i = 0; i < GW_LIMIT_SALE_SLOTS; i++)
        pthread_mutex_destroy(&l->sales[i].mu);
    pthread_mutex_destroy(&l->sale_map_mu);
    pthread_mutex_destroy(&l->global_mu);
    pthread_mutex_destroy(&l->cfg_mu);
    cm_unmap(l->slot_mem, l->slot_bytes);
    free(l->shards);
    free(l->readers);
    rules_snap_t *cur = atomic_load(&l->rules);
    for (size_t i = 0; cur && i < cur->n; i++)
        free(cur->e[i].ctr);
    free(cur);
    while (l->retired) {
        rules_snap_t *n = l->retired->next_retired;
        snap_free(l->retired);
        l->retired = n;
    }
    free(l);
}

/*---- per-sale rules: grace periods ----*/

/*
 * Quiescent-state-based reclamation (as userspace RCU's QSBR flavour, with
 * counters instead of its grace-period thread). The readers are the threads
 * that call gw_limits_admit while the rules may change: the gateway's
 * workers. gw_limits_admit holds a rule set only within the call, so a
 * reader between two calls holds none: that is its quiescent point, which a
 * worker announces once per loop iteration (gw_limits_quiescent), a loop
 * that turns at least every 100 ms when idle (its overload tick).
 *
 * The writer (under cfg_mu) publishes the new set, then bumps the epoch to E
 * with a release store, and retires the old set with grace = E. A reader's
 * quiescent point loads the epoch (acquire) and stores it in its slot
 * (release). When the writer loads a slot (acquire) and finds >= E:
 *  - every access that reader made to the old set came before its store, so
 *    it happens before the writer's free;
 *  - and its later calls cannot load the old pointer: its acquire load of an
 *    epoch >= E synchronised with a release store that came after the new
 *    pointer's store.
 * So the set can be freed, and with it the counters of the rules that the
 * change removed (only the old set and older ones point to them). A reader that never reaches a quiescent point
 * only delays the frees (memory, never safety). The cost to a reader: one
 * load of the epoch and one of its own slot per loop iteration, a store only
 * when the epoch moved; gw_limits_admit itself is unchanged (one acquire load
 * of the set), with no lock and no atomic read-modify-write.
 */

/* Frees the retired sets whose grace period is over. Caller holds cfg_mu. */
static void rules_reclaim(gw_limits_t *l)
{
    if (!l->readers || !l->retired)
        return;
    uint64_t min_seen = UINT64_MAX;
    for (unsigned i = 0; i < l->nreaders; i++) {
        uint64_t e = atomic_load_explicit(&l->readers[i].seen, memory_order_acquire);
        if (e < min_seen)
            min_seen = e;
    }
    /* newest first: the sets after the first one whose grace is over are older */
    rules_snap_t **pp = &l->retired;
    while (*pp && (*pp)->grace > min_seen)
        pp = &(*pp)->next_retired;
    rules_snap_t *s = *pp;
    *pp = NULL;
    while (s) {
        rules_snap_t *n = s->next_retired;
        snap_free(s);
        l->rule_sets--;
        s = n;
    }
}

int gw_limits_set_readers(gw_limits_t *l, unsigned n)
{
    if (l->readers || n == 0)
        return CM_EINVAL;
    struct reader_slot *r = aligned_zalloc(sizeof(*r) * n);
    if (!r)
        return CM_ENOMEM;
    for (unsigned i = 0; i < n; i++)
        atomic_init(&r[i].seen, 0); /* no point passed yet: holds back every free */
    pthread_mutex_lock(&l->cfg_mu);
    l->readers = r;
    l->nreaders = n;
    pthread_mutex_unlock(&l->cfg_mu);
    return 0;
}

void gw_limits_quiescent(gw_limits_t *l, unsigned reader)
{
    if (reader >= l->nreaders)
        return;
    _Atomic uint64_t *seen = &l->readers[reader].seen;
    uint64_t e = atomic_load_explicit(&l->epoch, memory_order_acquire);
    if (atomic_load_explicit(seen, memory_order_relaxed) != e)
        atomic_store_explicit(seen, e, memory_order_release);
}

void gw_limits_reader_offline(gw_limits_t *l, unsigned reader)
{
    if (reader >= l->nreaders)
        return;
    atomic_store_explicit(&l->readers[reader].seen, UINT64_MAX, memory_order_release);
    pthread_mutex_lock(&l->cfg_mu);
    rules_reclaim(l);
    pthread_mutex_unlock(&l->cfg_mu);
}

/*---- per-sale rules ----*/

static bool snap_has_ctr(const rules_snap_t *s, const rule_ctr_t *c)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].ctr == c)
            return true;
    return false;
}

int gw_limits_set_rules(gw_limits_t *l, const gw_rule_t *rules, size_t n)
{
    if (n > GW_LIMIT_RULES_MAX)
        return CM_EINVAL;
    rules_snap_t *s = calloc(1, sizeof(*s) + n * sizeof(rule_ent_t));
    if (!s)
        return CM_ENOMEM;
    s->n = n;
    pthread_mutex_lock(&l->cfg_mu);
    rules_snap_t *old = atomic_load(&l->rules);
    /* A sale's rule keeps its counters; a new rule gets new ones, zeroed. */
    for (size_t i = 0; i < n; i++) {
        s->e[i].r = rules[i];
        s->e[i].r.user = pol_normalize(rules[i].user);
        s->e[i].r.sale = pol_normalize(rules[i].sale);
        for (size_t j = 0; old && j < old->n && !s->e[i].ctr; j++)
            if (strcmp(old->e[j].r.sale_id, rules[i].sale_id) == 0)
                s->e[i].ctr = old->e[j].ctr;
        if (!s->e[i].ctr && !(s->e[i].ctr = calloc(1, sizeof(rule_ctr_t)))) {
            for (size_t k = 0; k < i; k++)
                if (!old || !snap_has_ctr(old, s->e[k].ctr))
                    free(s->e[k].ctr);
            pthread_mutex_unlock(&l->cfg_mu);
            free(s);
            return CM_ENOMEM;
        }
    }
    /* A removed rule's counters go with the old set (freed after its grace). */
    for (size_t j = 0; old && j < old->n; j++)
        old->e[j].ctr_last = !snap_has_ctr(s, old->e[j].ctr);
    l->rule_sets++;
    atomic_store_explicit(&l->rules, s, memory_order_release);
    if (old) {
        /* after the new set's store: a reader that sees this epoch sees the new set */
        uint64_t e = atomic_load_explicit(&l->epoch, memory_order_relaxed) + 1;
        atomic_store_explicit(&l->epoch, e, memory_order_release);
        old->grace = e;
        old->next_retired = l->retired;
        l->retired = old;
    }
    rules_reclaim(l);
    pthread_mutex_unlock(&l->cfg_mu);
    return 0;
}

size_t gw_limits_get_rules(gw_limits_t *l, gw_rule_t *out, size_t max)
{
    pthread_mutex_lock(&l->cfg_mu);
    rules_snap_t *s = atomic_load(&l->rules);
    size_t n = 0;
    for (; s && n < s->n && n < max; n++) {
        out[n] = s->e[n].r;
        for (int k = 0; k < 2; k++) {
            out[n].rejected[k] =
                atomic_load_explicit(&s->e[n].ctr->rejected[k], memory_order_relaxed);
            out[n].dry_run_rejected[k] =
                atomic_load_explicit(&s->e[n].ctr->dry_run_rejected[k], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&l->cfg_mu);
    return n;
}

/*---- hashing ----*/

static uint64_t key_hash(const gw_limits_t *l, gw_scope_t scope, const char *k, size_t n)
{
    uint8_t tag = (uint8_t)scope; /* domain separation: user "1.2.3.4" != IP "1.2.3.4" */
    uint64_t h;
    uint8_t buf[1 + 128];
    if (n < sizeof(buf)) {
        /* tag and key in one buffer for the one-shot hash (the incremental
         * form's per-byte tail cost ~120 more instructions a call): the
         * same value as the incremental form's below */
        buf[0] = tag;
        memcpy(buf + 1, k, n);
        h = cm_hash_sip24(&l->key, buf, 1 + n);
    } else {
        cm_hash_sip_t st;
        cm_hash_sip_init(&st, &l->key);
        cm_hash_sip_update(&st, &tag, 1);
        cm_hash_sip_update(&st, k, n);
        h = cm_hash_sip_final(&st);
    }
    /* bit 0 picks the policy of the idle test on eviction: user, or IP (also the
     * subnet's: a subnet bucket may then be reclaimed early, failing open) */
    if (scope == GW_SCOPE_USER || scope == GW_SCOPE_IP || scope == GW_SCOPE_SUBNET)
        h = (h & ~1ull) | (scope != GW_SCOPE_USER);
    return h ? h : 2; /* 0 means empty; 2 keeps bit 0 = user */
}

/* A rule's bucket key: domain tag, sale id, NUL, then the user (user part only). */
static uint64_t rule_hash(const gw_limits_t *l, uint8_t tag, const char *sale, size_t sale_len,
                          const char *user, size_t user_len)
{
    cm_hash_sip_t st;
    cm_hash_sip_init(&st, &l->key);
    cm_hash_sip_update(&st, &tag, 1);
    cm_hash_sip_update(&st, sale, sale_len);
    uint8_t z = 0;
    cm_hash_sip_update(&st, &z, 1);
    if (user)
        cm_hash_sip_update(&st, user, user_len);
    uint64_t h = cm_hash_sip_final(&st) & ~1ull; /* bit 0 = 0: follows the user eviction rule */
    return h ? h : 2;
}

/*
 * The user scope's hash of the last user this thread prefetched: the buy path
 * hashes the buyer for gw_limits_prefetch_user and again, a few hundred
 * instructions later, in gw_limits_admit (a keyed SipHash, ~420 instructions).
 * Keyed by the limiter's serial (a freed limiter's address may come back with
 * another key) and the user id's bytes.
 */
static _Thread_local struct {
    uint64_t serial, hash;
    size_t len;
    char user[GW_LIMIT_MEMO_MAX];
} user_memo;

static uint64_t user_key_hash(const gw_limits_t *l, const char *user, size_t len)
{
    if (user_memo.serial == l->serial && user_memo.len == len && memcmp(user_memo.user, user, len) == 0)
        return user_memo.hash;
    return key_hash(l, GW_SCOPE_USER, user, len);
}

/*---- user / IP table ----*/

typedef struct taken {
    bool used;
    uint64_t hash;
    uint32_t idx; /* slot index in shard, or sale slot index */
} taken_t;

static void table_take(gw_limits_t *l, uint64_t h, const cm_rate_policy_t *p,
                       const cm_rate_policy_t *pu, const cm_rate_policy_t *pi, uint64_t now_ns,
                       cm_rate_result_t *res, taken_t *tk)
{
    shard_t *sh = &l->shards[h >> 56];
    uint32_t home = (uint32_t)(((uint64_t)(uint32_t)(h >> 1) * sh->nslots) >> 32);
    pthread_mutex_lock(&sh->mu);
    slot_t *hit = NULL, *empty = NULL, *idle = NULL, *lru = NULL;
    uint32_t j = home;
    for (uint32_t i = 0; i < sh->window; i++, j = j + 1 == sh->nslots ? 0 : j + 1) {
        slot_t *s = &sh->slots[j];
        if (s->hash == h) {
            hit = s;
            break;
        }
        if (s->hash == 0) {
            if (!empty)
                empty = s;
            continue;
        }
        if (!idle && cm_bucket_is_idle(&s->b, (s->hash & 1) ? pi : pu, now_ns))
            idle = s;
        if (!lru || s->b.last_ns < lru->b.last_ns)
            lru = s;
    }
    if (!hit) {
        if (empty && (sh->keys < sh->max_keys || !lru)) {
            hit = empty;
            sh->keys++;
        } else if (idle) {
            hit = idle;
            sh->evicted_idle++;
        } else {
            hit = lru; /* window >= 1: some slot was looked at, so lru is set */
            sh->evicted_busy++;
        }
        /* cppcheck-suppress nullPointer ; see above */
        hit->hash = h; // NOLINT(clang-analyzer-core.NullDereference): lru is set, see above
        /* cppcheck-suppress nullPointer ; see above */
        hit->b = (cm_bucket_t){0, 0};
    }
    cm_bucket_take(&hit->b, p, now_ns, 1, res);
    pthread_mutex_unlock(&sh->mu);
    tk->used = true;
    tk->hash = h;
    tk->idx = (uint32_t)(hit - sh->slots);
}

/*
 * The user bucket's window pulled into the cache ahead of gw_limits_admit,
 * while the caller does other work: with a new user per buy (a flash sale)
 * the window's lines were a cache miss every time, ~5.7% of an accepted
 * order's CPU (`python3 bench/profile.py build acc sys`). No lock: a shard's slots and
 * nslots never change after gw_limits_new, and a prefetch reads nothing.
 */
void gw_limits_prefetch_user(gw_limits_t *l, const char *user, size_t user_len)
{
    if (pol_load(l, GW_SCOPE_USER).rate_milli == 0 || user_len == 0)
        return;
    uint64_t h = key_hash(l, GW_SCOPE_USER, user, user_len);
    if (user_len <= sizeof(user_memo.user)) {
        user_memo.serial = l->serial;
        user_memo.hash = h;
        user_memo.len = user_len;
        memcpy(user_memo.user, user, user_len);
    }
    const shard_t *sh = &l->shards[h >> 56];
    uint32_t home = (uint32_t)(((uint64_t)(uint32_t)(h >> 1) * sh->nslots) >> 32);
    /* The window's cache lines, one prefetch each (a prefetch per two slots
     * and its wrap test cost ~80 instructions, ~1/3 of them on a 429); it
     * wraps at the shard's end as table_take does. */
    uint32_t last = home + sh->window - 1;
    uint32_t wrapped = last < sh->nslots ? 0 : last + 1 - sh->nslots;
    uintptr_t a = (uintptr_t)&sh->slots[home] & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)&sh->slots[last + 1 - wrapped];
    for (; a < end; a += 64)
        __builtin_prefetch((const void *)a, 1);
    end = (uintptr_t)&sh->slots[wrapped];
    for (a = (uintptr_t)sh->slots; a < end; a += 64)
        __builtin_prefetch((const void *)a, 1);
}

static void table_refund(gw_limits_t *l, const taken_t *tk, const cm_rate_policy_t *p)
{
    shard_t *sh = &l->shards[tk->hash >> 56];
    pthread_mutex_lock(&sh->mu);
    slot_t *s = &sh->slots[tk->idx];
    if (s->hash == tk->hash) /* else it was evicted meanwhile: the new owner starts full */
        cm_bucket_refund(&s->b, p, 1);
    pthread_mutex_unlock(&sh->mu);
}

/*---- sales ----*/

/* Returns the sale's slot, locked. */
static sale_slot_t *sale_lock(gw_limits_t *l, uint64_t h, const cm_rate_policy_t *p,
                              uint64_t now_ns)
{
    uint32_t home = (uint32_t)(h % GW_LIMIT_SALE_SLOTS);
    /* Fast path: no map lock. Slots never become empty again, so a key sits
     * before the first empty slot of its probe sequence. */
    for (uint32_t i = 0; i < GW_LIMIT_SALE_SLOTS; i++) {
        sale_slot_t *s = &l->sales[(home + i) % GW_LIMIT_SALE_SLOTS];
        uint64_t v = atomic_load_explicit(&s->hash, memory_order_acquire);
        if (v == h) {
            pthread_mutex_lock(&s->mu);
            if (atomic_load_explicit(&s->hash, memory_order_relaxed) == h)
                return s;
            pthread_mutex_unlock(&s->mu); /* replaced meanwhile */
            break;
        }
        if (v == 0)
            break;
    }
    /* Slow path: claim a slot under the map lock (map -> slot order). */
    pthread_mutex_lock(&l->sale_map_mu);
    sale_slot_t *empty = NULL, *idle = NULL, *lru = NULL;
    uint64_t lru_last = UINT64_MAX;
    for (uint32_t i = 0; i < GW_LIMIT_SALE_SLOTS; i++) {
        sale_slot_t *s = &l->sales[(home + i) % GW_LIMIT_SALE_SLOTS];
        uint64_t v = atomic_load_explicit(&s->hash, memory_order_relaxed);
        if (v == h) {
            pthread_mutex_lock(&s->mu);
            pthread_mutex_unlock(&l->sale_map_mu);
            return s;
        }
        if (v == 0) {
            empty = s;
            break;
        }
        pthread_mutex_lock(&s->mu);
        if (!idle && cm_bucket_is_idle(&s->b, p, now_ns))
            idle = s;
        if (s->b.last_ns < lru_last) {
            lru_last = s->b.last_ns;
            lru = s;
        }
        pthread_mutex_unlock(&s->mu);
    }
    sale_slot_t *victim = empty;
    if (!victim && idle) {
        victim = idle;
        l->sale_evicted_idle++;
    } else if (!victim) {
        victim = lru;
        l->sale_evicted_busy++;
    }
    pthread_mutex_lock(&victim->mu);
    victim->b = (cm_bucket_t){0, 0};
    atomic_store_explicit(&victim->hash, h, memory_order_release);
    pthread_mutex_unlock(&l->sale_map_mu);
    return victim;
}

static void sale_take(gw_limits_t *l, uint64_t h, const cm_rate_policy_t *p, uint64_t now_ns,
                      cm_rate_result_t *res, taken_t *tk)
{
    sale_slot_t *s = sale_lock(l, h, p, now_ns);
    cm_bucket_take(&s->b, p, now_ns, 1, res);
    pthread_mutex_unlock(&s->mu);
    tk->used = true;
    tk->hash = h;
    tk->idx = (uint32_t)(s - l->sales);
}

static void sale_refund(gw_limits_t *l, const taken_t *tk, const cm_rate_policy_t *p)
{
    sale_slot_t *s = &l->sales[tk->idx];
    pthread_mutex_lock(&s->mu);
    if (atomic_load_explicit(&s->hash, memory_order_relaxed) == tk->hash)
        cm_bucket_refund(&s->b, p, 1);
    pthread_mutex_unlock(&s->mu);
}

/*---- admission ----*/

/*
 * The steps in order. A rule's user bucket lives in the user/IP table
 * (XXX: its idle test on eviction uses the global user policy, so under table
 * pressure a rule bucket may be reclaimed early: that key fails open, as any
 * evicted busy key does); a rule's sale bucket lives among the sale slots.
 */
enum { ST_RULE_USER, ST_USER, ST_IP, ST_SUBNET, ST_RULE_SALE, ST_SALE, ST_GLOBAL, ST_N };

static const gw_scope_t step_scope[ST_N] = {GW_SCOPE_USER,   GW_SCOPE_USER, GW_SCOPE_IP,
                                            GW_SCOPE_SUBNET, GW_SCOPE_SALE, GW_SCOPE_SALE,
                                            GW_SCOPE_GLOBAL};

static rule_ent_t *rule_find(gw_limits_t *l, const char *sale, size_t sale_len)
{
    rules_snap_t *rs = atomic_load_explicit(&l->rules, memory_order_acquire);
    if (!rs || !sale)
        return NULL;
    for (size_t i = 0; i < rs->n; i++)
        if (strncmp(rs->e[i].r.sale_id, sale, sale_len) == 0 && rs->e[i].r.sale_id[sale_len] == 0)
            return &rs->e[i];
    return NULL;
}

/* gw_limits_admit with the sale's rule already looked up (inlined there; the
 * contract tests call it through gw_limits__admit_held). */
static inline __attribute__((always_inline)) void
admit_rule(gw_limits_t *l, rule_ent_t *rule, const char *user, size_t user_len, const char *ip,
           size_t ip_len, const char *sale, size_t sale_len, uint64_t now_ns,
           gw_limit_verdict_t *v, bool global)
{
    cm_rate_policy_t gpol[GW_SCOPE_COUNT];
    for (int s = 0; s < GW_SCOPE_COUNT; s++)
        gpol[s] = pol_load(l, (gw_scope_t)s);
    cm_rate_policy_t pol[ST_N] = {rule ? rule->r.user : (cm_rate_policy_t){0, 0},
                                  gpol[GW_SCOPE_USER],
                                  gpol[GW_SCOPE_IP],
                                  gpol[GW_SCOPE_SUBNET],
                                  rule ? rule->r.sale : (cm_rate_policy_t){0, 0},
                                  gpol[GW_SCOPE_SALE],
                                  gpol[GW_SCOPE_GLOBAL]};
    /* the subnet: a prefix of the IP key (IPv4 /24 of 4 bytes, IPv6 /48 of the /64's 8) */
    size_t subnet_len = ip_len == 4 ? 3 : ip_len == 8 ? 6 : ip_len;
    const char *keys[ST_N] = {user, user, ip, ip, sale, sale, NULL};
    size_t lens[ST_N] = {user_len, user_len, ip_len, subnet_len, sale_len, sale_len, global};
    taken_t tk[ST_N] = {{0}};

    v->allowed = true;
    v->by_rule = false;
    v->scope = GW_SCOPE_GLOBAL;
    v->policy = (cm_rate_policy_t){0, 0}; /* rate 0: no limit applied */
    v->remaining = UINT64_MAX;
    v->retry_after_ns = 0;
    v->reset_ns = 0;

    for (int s = 0; s < ST_N; s++) {
        if (pol[s].rate_milli == 0 || lens[s] == 0 || (s != ST_GLOBAL && !keys[s]))
            continue;
        cm_rate_result_t r;
        if (s == ST_GLOBAL) {
            pthread_mutex_lock(&l->global_mu);
            cm_bucket_take(&l->global, &pol[s], now_ns, 1, &r);
            pthread_mutex_unlock(&l->global_mu);
            tk[s].used = true;
        } else if (s == ST_SALE) {
            sale_take(l, key_hash(l, GW_SCOPE_SALE, keys[s], lens[s]), &pol[s], now_ns, &r,
                      &tk[s]);
        } else if (s == ST_RULE_SALE) {
            sale_take(l, rule_hash(l, 5, sale, sale_len, NULL, 0), &pol[s], now_ns, &r, &tk[s]);
        } else if (s == ST_RULE_USER) {
            table_take(l, rule_hash(l, 4, sale, sale_len, user, user_len), &pol[s],
                       &gpol[GW_SCOPE_USER], &gpol[GW_SCOPE_IP], now_ns, &r, &tk[s]);
        } else {
            uint64_t h = s == ST_USER ? user_key_hash(l, keys[s], lens[s])
                                      : key_hash(l, step_scope[s], keys[s], lens[s]);
            table_take(l, h, &pol[s], &gpol[GW_SCOPE_USER], &gpol[GW_SCOPE_IP], now_ns, &r,
                       &tk[s]);
        }
        bool is_rule = s == ST_RULE_USER || s == ST_RULE_SALE;
        int part = s == ST_RULE_USER ? 0 : 1;
        if (!r.allowed && is_rule && rule->r.dry_run) {
            /* Would refuse: count it, refuse nothing (a refusal took no token). */
            atomic_fetch_add_explicit(&rule->ctr->dry_run_rejected[part], 1, memory_order_relaxed);
            tk[s].used = false;
            continue;
        }
        if (!r.allowed) {
            if (is_rule)
                atomic_fetch_add_explicit(&rule->ctr->rejected[part], 1, memory_order_relaxed);
            /* Give back what the earlier steps took: a refusal costs nothing. */
            for (int e = 0; e < s; e++) {
                if (!tk[e].used)
                    continue;
                if (e == ST_SALE || e == ST_RULE_SALE)
                    sale_refund(l, &tk[e], &pol[e]);
                else
                    table_refund(l, &tk[e], &pol[e]);
            }
            v->allowed = false;
            v->by_rule = is_rule;
            v->scope = step_scope[s];
            v->policy = pol[s];
            v->remaining = r.remaining;
            v->retry_after_ns = r.retry_after_ns;
            v->reset_ns = r.reset_ns;
            return;
        }
        if (is_rule && rule->r.dry_run)
            continue; /* a dry-run rule never shapes the RateLimit headers */
        if (v->policy.rate_milli == 0 || r.remaining < v->remaining) {
            v->scope = step_scope[s];
            v->policy = pol[s];
            v->remaining = r.remaining;
            v->reset_ns = r.reset_ns;
        }
    }
}

void gw_limits_admit(gw_limits_t *l, const char *user, size_t user_len, const char *ip,
                     size_t ip_len, const char *sale, size_t sale_len, uint64_t now_ns,
                     gw_limit_verdict_t *v)
{
    admit_rule(l, rule_find(l, sale, sale_len), user, user_len, ip, ip_len, sale, sale_len,
               now_ns, v, true);
}

void gw_limits_admit_ip(gw_limits_t *l, const char *ip, size_t ip_len, uint64_t now_ns,
                        gw_limit_verdict_t *v)
{
    admit_rule(l, NULL, NULL, 0, ip, ip_len, NULL, 0, now_ns, v, false);
}

const void *gw_limits__rule_hold(gw_limits_t *l, const char *sale)
{
    return sale ? rule_find(l, sale, strlen(sale)) : NULL;
}

void gw_limits__admit_held(gw_limits_t *l, const void *held, const char *user, size_t user_len,
                           const char *sale, size_t sale_len, uint64_t now_ns,
                           gw_limit_verdict_t *v)
{
    admit_rule(l, (rule_ent_t *)held, user, user_len, NULL, 0, sale, sale_len, now_ns, v, true);
}

/*---- stats ----*/

void gw_limits_stats(gw_limits_t *l, gw_limits_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < GW_LIMIT_SHARDS; i++) {
        shard_t *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->keys += sh->keys;
        out->evicted_idle += sh->evicted_idle;
        out->evicted_busy += sh->evicted_busy;
        pthread_mutex_unlock(&sh->mu);
    }
    out->capacity = l->capacity;
    out->bytes = l->bytes;
    pthread_mutex_lock(&l->cfg_mu);
    rules_reclaim(l); /* what the readers have passed since the last change */
    out->rule_sets = l->rule_sets;
    pthread_mutex_unlock(&l->cfg_mu);
}

const char *gw_scope_name(gw_scope_t s)
{
    switch (s) {
    case GW_SCOPE_USER:
        return "user";
    case GW_SCOPE_IP:
        return "ip";
    case GW_SCOPE_SALE:
        return "sale";
    case GW_SCOPE_GLOBAL:
        return "global";
    case GW_SCOPE_SUBNET:
        return "subnet";
    default:
        return "unknown";
    }
}
