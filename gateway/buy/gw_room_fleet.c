/*
 * The waiting room of a fleet: one room per sale in Redis, shared by every
 * gateway (gw_fair_redis.h has the keys, gw_fair_redis.c the scripts).
 *
 * What is shared and why: the pre-queue (a ZSET of SipHash(seed, person)
 * keys, the seed one per room, so the rank is the same whichever gateway a
 * person joined through), the later arrivals' places (one counter), each
 * place's token expiry, the seal, the admission front and the spent tokens'
 * replay ids. The front is one number in Redis that every gateway's lottery
 * thread raises by its own share of the rate (the configured rate scaled by
 * its overload state, divided by the members), capped a second of admissions
 * ahead of the places given; every join compares its place with that number
 * in the same script, so all gateways admit the same places. A front derived
 * from a shared start time and the rate would need no writes but would admit
 * at the configured rate whatever each gateway's overload controller says,
 * and would bank an idle room's admissions into a burst.
 *
 * The cheap answers (the sale unknown, not started, sold out, the cached
 * queue page) never come here; what does is answered 503 when Redis cannot
 * be asked, never from a local guess: a place given or a token claimed
 * without Redis could be given or spent twice.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_time.h"
#include "inventory/inv_fleet.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* A fleet room's tick talks to Redis at most this often (lottery thread). */
#define GW_WR_FLEET_TICK_MS 100
/* After a failed give-back of a claim, the next try waits this long (lottery thread). */
#define FAIR_UNCLAIM_RETRY_MS 250

void gw_fair__seed_hex(const cm_hash_key_t *seed, char out[33])
{
    /* the seed's 16 key bytes as cm_hash_key_t reads them: k0, k1 little-endian */
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        unsigned b = (unsigned)((i < 8 ? seed->k0 : seed->k1) >> (8 * (i % 8))) & 0xffu;
        out[2 * i] = digits[b >> 4];
        out[2 * i + 1] = digits[b & 0xf];
    }
    out[32] = '\0';
}

bool gw_fair__seed_parse(const char *hex, cm_hash_key_t *seed)
{
    if (strlen(hex) != 32)
        return false;
    uint64_t k[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        char c = hex[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        int byte = i / 2;
        uint64_t v = (uint64_t)d << (i % 2 ? 0 : 4);
        k[byte / 8] |= v << (8 * (byte % 8));
    }
    seed->k0 = k[0];
    seed->k1 = k[1];
    return true;
}

void gw_fair__room_fleet_trouble(const char *what, const char *sale, const char *why)
{
    static _Atomic int64_t last_ms;
    int64_t now = cm_wall_ms(), prev = atomic_load_explicit(&last_ms, memory_order_relaxed);
    if (now - prev < 5000 || !atomic_compare_exchange_strong_explicit(
                                 &last_ms, &prev, now, memory_order_relaxed, memory_order_relaxed))
        return;
    cm_log_warn("fair", "waiting room: redis trouble", "what=\"%s\" sale=%s err=\"%s\"", what, sale,
                why);
}

/* The fleet's clocks agree within this (docs/fleet.md "Clock skew"): a gateway
 * ahead may have sealed the room this long before this one's clock reaches the
 * start. */
#define GW_WR_SKEW_MS 1000

/*
 * The seed this gateway may offer as the room's: any seed but a published one.
 * A seed is published once the room was sealed with it: this copy saw the
 * seal, or the start may have passed on some gateway's clock (`started`: by
 * this one's, less GW_WR_SKEW_MS) and Redis' room held the seed
 * (wr_seed_fleet), so another gateway may have sealed it and handed out
 * tokens keyed by it even if no reply here showed the seal. If Redis has
 * no seed any more the room was deleted or lost (a restart without
 * persistence), and this gateway has not read a tombstone that gives it a new
 * seed (gw_fair__room_reset): the old one would give the new room's places
 * the old replay ids, so an old token would admit again. wr_mu held.
 */
static void seed_offer(const gw_fair_sale_t *fs, const cm_hash_key_t *seed, bool started,
                       char hex[34])
{
    bool held = seed->k0 == fs->wr_seed_fleet.k0 && seed->k1 == fs->wr_seed_fleet.k1;
    hex[0] = '-';
    gw_fair__seed_hex(seed, hex + 1);
    if (!fs->wr_core.sealed_ms && !(started && held && !CM_PLANT(ROOM_FLEET_SEED_REOFFERED)))
        memmove(hex, hex + 1, 33);
}

/* Takes the fleet's seed (hex) as the room's. */
static void seed_adopt(gw_fair_sale_t *fs, const char *hex)
{
    cm_hash_key_t k;
    if (!gw_fair__seed_parse(hex, &k))
        return;
    pthread_mutex_lock(&fs->wr_mu);
    fs->wr_seed = k;
    fs->wr_seed_fleet = k;
    pthread_mutex_unlock(&fs->wr_mu);
}

/* A join (gw_fair_room_join's contract, CM_EBACKEND when Redis cannot answer):
 * a connection of the worker loops' pool. */
static int fleet_join(gw_fair_sale_t *fs, const gw_room_join_ev_t *ev, gw_wr_join_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *person = ev->person;
    size_t len = ev->len;
    gw_fair_t *f = fs->f;
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    int rc = c ? 0 : CM_EBACKEND;
    gw_fair_redis_room_join_t j = {0};
    cm_hash_key_t seed = {0, 0};
    bool before_start = ev->starts_at_ms && ev->now_ms < ev->starts_at_ms;
    /* twice at most: a seed that is not the fleet's is replaced by the one Redis holds */
    for (int attempt = 0; rc == 0 && attempt < 2; attempt++) {
        char hex[34], member[GW_FAIR_REDIS_ROOM_KEY_HEX + INV_USER_ID_MAX + 2];
        pthread_mutex_lock(&fs->wr_mu);
        seed = fs->wr_seed;
        seed_offer(fs, &seed, !ev->starts_at_ms || ev->now_ms + GW_WR_SKEW_MS >= ev->starts_at_ms,
                   hex);
        pthread_mutex_unlock(&fs->wr_mu);
        snprintf(member, sizeof(member), "%016llx%.*s",
                 (unsigned long long)gw_wr_prequeue_key(&seed, person, len), (int)len, person);
        rc = gw_fair_redis_room_join(c, fs->sale_id, hex, member, person, before_start, ev->take,
                                     ev->now_ms, GW_WR_TOKEN_TTL_S, GW_WR_PREQUEUE_MAX, &j, why,
                                     sizeof(why));
        if (rc == 0 && !j.seed[0]) { /* the room's seed is the one offered */
            pthread_mutex_lock(&fs->wr_mu);
            if (fs->wr_seed.k0 == seed.k0 && fs->wr_seed.k1 == seed.k1) /* not re-keyed since */
                fs->wr_seed_fleet = seed;
            pthread_mutex_unlock(&fs->wr_mu);
        }
        if (rc || !j.seed[0])
            break;
        seed_adopt(fs, j.seed);
        if (attempt == 1) { /* the seed changed under us twice: a deletion racing */
            snprintf(why, sizeof(why), "the room's seed changed while joining");
            rc = CM_EBACKEND;
        }
    }
    gw_fair__pool_put(&f->loop_pool, c);
    if (rc) {
        gw_fair__room_fleet_trouble("join", fs->sale_id, why);
        return CM_EBACKEND;
    }
    if (j.prequeue) {
        out->prequeue = true;
        return j.full ? CM_EBUSY : 0;
    }
    out->pos = j.pos;
    if (j.exp_s) {
        out->exp_s = j.exp_s;
        /* the fleet's seed keys the replay ids: every gateway gives a place the same one */
        out->jti = gw_fair__place_jti(&seed, j.pos);
    }
    return 0;
}

/* Copies the fleet's state into the room's local fields (the view and the audit). */
static void state_copy(gw_fair_sale_t *fs, const gw_fair_redis_room_state_t *st,
                       int64_t starts_at_ms)
{
    cm_hash_key_t k;
    bool seeded = gw_fair__seed_parse(st->seed, &k);
    pthread_mutex_lock(&fs->wr_mu);
    if (seeded)
        fs->wr_seed = fs->wr_seed_fleet = k;
    fs->wr_core.npre = st->npre;
    if (st->sealed_ms && !fs->wr_core.sealed_ms)
        cm_log_info("fair", "waiting room pre-queue sealed (fleet)", "sale=%s persons=%llu",
                    fs->sale_id, (unsigned long long)st->npre);
    fs->wr_core.sealed_ms = st->sealed_ms;
    fs->wr_core.starts_ms = st->sealed_ms ? starts_at_ms : 0;
    atomic_store(&fs->wr_core.sealed, st->sealed_ms != 0);
    atomic_store(&fs->wr_core.next, st->next);
    atomic_store(&fs->wr_core.front_milli, st->front_milli);
    pthread_mutex_unlock(&fs->wr_mu);
}

/* One room's step, at most every GW_WR_FLEET_TICK_MS: seals at the start, adds this
 * gateway's share (eff_per_s, admissions per second) to the shared front, never past
 * the fleet's second of admissions beyond the places given, and refreshes the local
 * copy. Lottery thread. */
static void fleet_tick(gw_fair_sale_t *fs, int64_t now, int64_t dt_tick, bool started,
                       int64_t starts_at_ms, double eff_per_s, uint32_t members)
{
    (void)dt_tick; /* the fleet's step has its own interval */
    gw_fair_t *f = fs->f;
    double fleet_per_s = eff_per_s * members;
    /* the shared front moves at the fleet's rate: the queue page's eta divides by it */
    atomic_store(&fs->wr_eff_milli, (uint64_t)(fleet_per_s * 1000));
    if (fs->wr_fleet_ms && now - fs->wr_fleet_ms < GW_WR_FLEET_TICK_MS)
        return;
    int64_t dt = fs->wr_fleet_ms ? now - fs->wr_fleet_ms : 0;
    fs->wr_fleet_ms = now;
    uint64_t add = started && dt > 0 ? (uint64_t)(eff_per_s * (double)dt) : 0;
    char why[256] = "", hex[34];
    pthread_mutex_lock(&fs->wr_mu);
    seed_offer(fs, &fs->wr_seed, started || now + GW_WR_SKEW_MS >= starts_at_ms, hex);
    pthread_mutex_unlock(&fs->wr_mu);
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
    gw_fair_redis_room_state_t st;
    int rc = c ? gw_fair_redis_room_tick(c, fs->sale_id, hex, started, now, add,
                                         (uint64_t)fleet_per_s, &st, why, sizeof(why))
               : CM_EBACKEND;
    gw_fair__pool_put(&f->pool, c);
    if (rc) {
        gw_fair__room_fleet_trouble("tick", fs->sale_id, why);
        return;
    }
    state_copy(fs, &st, starts_at_ms);
}

typedef struct persons_ctx {
    json_t *arr;
    uint64_t rank; /* the next member's */
} persons_ctx_t;

static void person_member(void *ctx, const char *member)
{
    persons_ctx_t *x = ctx;
    x->rank++;
    if (strlen(member) <= GW_FAIR_REDIS_ROOM_KEY_HEX)
        return;
    json_array_append_new(x->arr,
                          json_pack("{s:s,s:I}", "person", member + GW_FAIR_REDIS_ROOM_KEY_HEX,
                                    "rank", (json_int_t)x->rank));
}

static int fleet_persons(gw_fair_sale_t *fs, uint64_t start, uint64_t limit, void *arr,
                         uint64_t *total, bool *sealed, char seed_hex[33], char *errbuf,
                         size_t errlen)
{
    gw_fair_t *f = fs->f;
    const char *sale_id = fs->sale_id;
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
    gw_fair_redis_room_state_t st;
    int rc = c ? gw_fair_redis_room_state(c, sale_id, &st, why, sizeof(why)) : CM_EBACKEND;
    if (rc == 0) {
        *total = st.npre;
        *sealed = st.sealed_ms != 0;
        snprintf(seed_hex, 33, "%s", st.seed);
        persons_ctx_t x = {arr, start};
        if (*sealed && start < st.npre && limit > 0)
            rc = gw_fair_redis_room_range(c, sale_id, (long long)start,
                                          (long long)(start + limit - 1), person_member, &x, why,
                                          sizeof(why));
    }
    gw_fair__pool_put(&f->pool, c);
    if (rc)
        cm_errbuf_set(errbuf, errlen, "redis: %s", why);
    return rc ? CM_EBACKEND : 0;
}
/* Keeps a fleet claim to give back later; false if the list is full. */
static bool unclaim_later(gw_fair_t *f, const char *sale_id, uint64_t jti, uint64_t fp,
                          uint64_t nonce, int64_t exp_s)
{
    pthread_mutex_lock(&f->unclaim_mu);
    bool ok = f->nunclaim < FAIR_UNCLAIM_MAX;
    if (ok) {
        gw_fair_unclaim_t *u = &f->unclaim[f->nunclaim++];
        snprintf(u->sale, sizeof(u->sale), "%s", sale_id);
        u->jti = jti;
        u->fp = fp;
        u->nonce = nonce;
        u->exp_s = exp_s;
    }
    pthread_mutex_unlock(&f->unclaim_mu);
    return ok;
}

/* The give-back's void mark lives as long as the token, a second past its last valid second. */
static int64_t unclaim_ttl_ms(int64_t exp_s, int64_t now_s)
{
    return (exp_s - now_s + 1) * 1000;
}

void gw_fair__room_unclaims_tick(gw_fair_t *f, int64_t now_ms)
{
    if (now_ms < f->unclaim_next_ms)
        return;
    int64_t now_s = now_ms / 1000;
    for (;;) {
        gw_fair_unclaim_t u;
        pthread_mutex_lock(&f->unclaim_mu);
        bool any = f->nunclaim > 0;
        if (any)
            u = f->unclaim[--f->nunclaim];
        pthread_mutex_unlock(&f->unclaim_mu);
        if (!any)
            return;
        if (u.exp_s < now_s)
            continue; /* the token expired: its claim, if it ran, expires within a second */
        char why[256] = "";
        inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
        int rc = c ? gw_fair_redis_room_unclaim(c, u.sale, u.jti, u.fp, u.nonce,
                                                unclaim_ttl_ms(u.exp_s, now_s), why, sizeof(why))
                   : CM_EBACKEND;
        gw_fair__pool_put(&f->pool, c);
        if (rc >= 0)
            continue;
        gw_fair__room_fleet_trouble("give an admission token back (retried)", u.sale, why);
        /* workers may have filled the list meanwhile: then the token stays
         * spent until it expires, as when the list was full at the claim */
        (void)unclaim_later(f, u.sale, u.jti, u.fp, u.nonce, u.exp_s);
        f->unclaim_next_ms = now_ms + FAIR_UNCLAIM_RETRY_MS;
        return;
    }
}

/* A buy's claim of its admission token's replay id, in Redis (a connection of the
 * worker loops' pool). */
static int fleet_claim(gw_fair_sale_t *fs, uint64_t jti, int64_t exp_s, uint64_t fp, int64_t now_s,
                       uint64_t *nonce)
{
    gw_fair_t *f = fs->f;
    const char *sale_id = fs->sale_id;
    char why[256] = "";
    uint64_t n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
    if (n == 0) /* 0 says "holds nothing" to the caller */
        n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    /* kept as long as the token lives, a second past its last valid second */
    int rc = c ? gw_fair_redis_room_claim(c, sale_id, jti, fp, n, unclaim_ttl_ms(exp_s, now_s), why,
                                          sizeof(why))
               : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    /*
     * Sent, no answer (a timeout, a lost connection): Redis may run the
     * claim still, and the token would read spent with no order. Given
     * back by the lottery thread (not on this worker's loop), which
     * voids it if it has not run yet. With an Idempotency-Key too: a
     * retry of the key that goes on past this claim (GW_WR_REPLAY)
     * holds the token with its own nonce, so this give-back leaves it
     * held under that retry's order.
     */
    if (rc < 0 && c && !unclaim_later(f, sale_id, jti, fp, n, exp_s))
        gw_fair__room_fleet_trouble("give an admission token back", sale_id,
                                    "too many give-backs pending");
    if (rc == 0 || rc == 2) /* claimed, or held with the key's first buy: settled alike */
        *nonce = n;
    return rc == 0 ? GW_WR_CLAIMED : rc == 1 ? GW_WR_SPENT : rc == 2 ? GW_WR_REPLAY : rc;
}

static void fleet_settle(gw_fair_sale_t *fs, uint64_t jti, uint64_t fp, uint64_t nonce,
                         bool accepted)
{
    if (accepted)
        return; /* the claim stays until the token expires */
    gw_fair_t *f = fs->f;
    char why[256] = "";
    int64_t now_s = cm_wall_ms() / 1000, exp_s = now_s + GW_WR_TOKEN_TTL_S;
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    /* this claim's value only: another buy's claim of the token stays */
    int rc = c ? gw_fair_redis_room_unclaim(c, fs->sale_id, jti, fp, nonce,
                                            unclaim_ttl_ms(exp_s, now_s), why, sizeof(why))
               : CM_EBACKEND;
    gw_fair__pool_put(&f->loop_pool, c);
    /* Not given back: retried by the lottery thread (a retry with the key
     * that rests on the token holds it with a nonce of its own) */
    if (rc < 0 && !unclaim_later(f, fs->sale_id, jti, fp, nonce, exp_s))
        gw_fair__room_fleet_trouble("give an admission token back", fs->sale_id, why);
}

/* A deleted sale's room: its keys went with the sale's delete (gw_fair_redis_lottery_clear);
 * the next tick paces from scratch. */
static int fleet_drop(gw_fair_sale_t *fs)
{
    fs->wr_fleet_ms = 0;
    return 0;
}

const gw_room_ops_t gw_fair__room_redis_ops = {
    .join = fleet_join,
    .tick = fleet_tick,
    .persons = fleet_persons,
    .claim = fleet_claim,
    .settle = fleet_settle,
    .drop = fleet_drop,
    /* no .sync: a claim is durable once Redis answered it; no .audit: the room is
     * Redis', no log of this gateway's to account for */
};
