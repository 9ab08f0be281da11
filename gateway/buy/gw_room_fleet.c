/*
 * The waiting room of a fleet: one room per sale in Redis, shared by every
 * gateway (gw_fair__room_redis_ops; the keys and scripts in gw_fair_redis.c).
 * What is shared and why: docs/design.md "The room of a fleet" and docs/fleet.md
 * "Waiting room". What comes here is answered 503 when Redis cannot be asked,
 * never from a local guess: a place given or a token claimed without Redis
 * could be given or spent twice.
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

/* The seed's 16 key bytes as cm_hash_key_t reads them: k0, k1, each little-endian. */
void gw_fair__seed_hex(const cm_hash_key_t *seed, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)__builtin_bswap64(seed->k0),
             (unsigned long long)__builtin_bswap64(seed->k1));
}

bool gw_fair__seed_parse(const char *hex, cm_hash_key_t *seed)
{
    unsigned long long k0, k1;
    if (strlen(hex) != 32 || strspn(hex, "0123456789abcdef") != 32 ||
        sscanf(hex, "%16llx%16llx", &k0, &k1) != 2)
        return false;
    *seed = (cm_hash_key_t){__builtin_bswap64(k0), __builtin_bswap64(k1)};
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
 * The seed this gateway may offer as the room's (into hex; returned): any seed but a
 * published one, given as "-<seed>" (docs/fleet.md "Waiting room", "Clock skew"). A
 * seed is published once this copy saw the seal, or once the start may have passed on
 * some gateway's clock while Redis' room held it (wr_seed_fleet). Offered to a room
 * Redis lost, an old seed would give its places the old replay ids: an old token
 * would admit again.
 */
static cm_hash_key_t seed_offer(gw_fair_sale_t *fs, int64_t now_ms, char hex[34])
{
    int64_t starts = atomic_load_explicit(&fs->sale.cfg.starts_at_ms, memory_order_relaxed);
    bool started = !starts || now_ms + GW_WR_SKEW_MS >= starts;
    pthread_mutex_lock(&fs->wr_mu);
    cm_hash_key_t seed = fs->wr_seed;
    bool held = seed.k0 == fs->wr_seed_fleet.k0 && seed.k1 == fs->wr_seed_fleet.k1;
    bool offer =
        !fs->wr_core.sealed_ms && !(started && held && !CM_PLANT(ROOM_FLEET_SEED_REOFFERED));
    pthread_mutex_unlock(&fs->wr_mu);
    hex[0] = '-';
    gw_fair__seed_hex(&seed, hex + 1);
    if (offer)
        memmove(hex, hex + 1, 33);
    return seed;
}

/* Redis' room holds k: this gateway's seed for it (adopt), or confirmed as the fleet's
 * if it is still this gateway's (not re-keyed since it was offered). */
static void seed_held(gw_fair_sale_t *fs, cm_hash_key_t k, bool adopt)
{
    pthread_mutex_lock(&fs->wr_mu);
    if (adopt || (fs->wr_seed.k0 == k.k0 && fs->wr_seed.k1 == k.k1))
        fs->wr_seed = fs->wr_seed_fleet = k;
    pthread_mutex_unlock(&fs->wr_mu);
}

/* A join (gw_fair_room_join's contract, CM_EBACKEND when Redis cannot answer):
 * a connection of the worker loops' pool. */
static int fleet_join(gw_fair_sale_t *fs, const gw_room_join_ev_t *ev, gw_wr_join_t *out)
{
    gw_fair_t *f = fs->f;
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->loop_pool, why, sizeof(why));
    int rc = CM_EBACKEND;
    cm_hash_key_t seed = {0, 0};
    int64_t starts = atomic_load_explicit(&fs->sale.cfg.starts_at_ms, memory_order_relaxed);
    memset(out, 0, sizeof(*out));
    /* twice at most: a seed that is not the fleet's is replaced by the one Redis holds */
    for (int attempt = 0; c && attempt < 2; attempt++) {
        char hex[34], theirs[GW_FAIR_REDIS_ROOM_SEED_HEX + 1];
        char member[GW_FAIR_REDIS_ROOM_KEY_HEX + INV_USER_ID_MAX + 2];
        seed = seed_offer(fs, ev->now_ms, hex);
        snprintf(member, sizeof(member), "%016llx%.*s",
                 (unsigned long long)gw_wr_prequeue_key(&seed, ev->person, ev->len), (int)ev->len,
                 ev->person);
        rc = gw_fair_redis_room_join(
            c, fs->sale_id, hex, member, ev->person, starts && ev->now_ms < starts, ev->take,
            ev->now_ms, GW_WR_TOKEN_TTL_S, GW_WR_PREQUEUE_MAX, out, theirs, why, sizeof(why));
        if (rc != CM_ECONFLICT)
            break;
        cm_hash_key_t k;
        bool parsed = gw_fair__seed_parse(theirs, &k);
        if (parsed)
            seed_held(fs, k, true);
        if (attempt == 1 || !parsed) { /* the seed changed under us twice: a deletion racing */
            snprintf(why, sizeof(why), "the room's seed changed while joining");
            rc = CM_EBACKEND;
        }
    }
    gw_fair__pool_put(&f->loop_pool, c);
    if (rc != 0 && rc != CM_EBUSY) {
        gw_fair__room_fleet_trouble("join", fs->sale_id, why);
        memset(out, 0, sizeof(*out));
        return CM_EBACKEND;
    }
    seed_held(fs, seed, false); /* the room's seed is the one offered */
    if (out->exp_s) /* the fleet's seed keys the replay ids: every gateway gives the same */
        out->jti = gw_fair__place_jti(&seed, out->pos);
    return rc;
}

/* One room's step, at most every GW_WR_FLEET_TICK_MS: seals at the start, adds this
 * gateway's share (eff_per_s, admissions per second) to the shared front, never past
 * the fleet's second of admissions beyond the places given, and copies the fleet's
 * state into the room's local fields (the view and the audit). Lottery thread. */
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
    (void)seed_offer(fs, now, hex);
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
    cm_hash_key_t k;
    bool seeded = gw_fair__seed_parse(st.seed, &k);
    pthread_mutex_lock(&fs->wr_mu);
    if (seeded)
        fs->wr_seed = fs->wr_seed_fleet = k;
    fs->wr_core.npre = st.npre;
    if (st.sealed_ms && !fs->wr_core.sealed_ms)
        cm_log_info("fair", "waiting room pre-queue sealed (fleet)", "sale=%s persons=%llu",
                    fs->sale_id, (unsigned long long)st.npre);
    fs->wr_core.sealed_ms = st.sealed_ms;
    fs->wr_core.starts_ms = st.sealed_ms ? starts_at_ms : 0;
    atomic_store(&fs->wr_core.sealed, st.sealed_ms != 0);
    atomic_store(&fs->wr_core.next, st.next);
    atomic_store(&fs->wr_core.front_milli, st.front_milli);
    pthread_mutex_unlock(&fs->wr_mu);
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
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&f->pool, why, sizeof(why));
    gw_fair_redis_room_state_t st = {.seed = ""};
    /* the room's state, read only; none without a seed: nobody joined yet */
    int rc = c ? gw_fair_redis_room_tick(c, fs->sale_id, "-", false, 0, 0, 0, &st, why, sizeof(why))
               : CM_EBACKEND;
    if (rc == 0 || rc == CM_ENOTFOUND) {
        *total = st.npre;
        *sealed = st.sealed_ms != 0;
        snprintf(seed_hex, 33, "%s", st.seed);
        persons_ctx_t x = {arr, start};
        rc = *sealed && start < st.npre && limit > 0
                 ? gw_fair_redis_room_range(c, fs->sale_id, (long long)start,
                                            (long long)(start + limit - 1), person_member, &x, why,
                                            sizeof(why))
                 : 0;
    }
    gw_fair__pool_put(&f->pool, c);
    if (rc)
        cm_errbuf_set(errbuf, errlen, "redis: %s", why);
    return rc ? CM_EBACKEND : 0;
}

/*---- admission tokens' claims ----*/

/* Keeps a claim to give back later (the lottery thread's); false if the list is full. */
static bool unclaim_later(gw_fair_t *f, const gw_fair_unclaim_t *u)
{
    pthread_mutex_lock(&f->unclaim_mu);
    bool ok = f->nunclaim < FAIR_UNCLAIM_MAX;
    if (ok)
        f->unclaim[f->nunclaim++] = *u;
    pthread_mutex_unlock(&f->unclaim_mu);
    return ok;
}

/* u's claim (give_back false) or give-back in Redis through a connection of p, kept (or
 * its void mark) as long as the token lives, a second past its last valid second.
 * *sent: there was a connection (a failed call may still run). */
static int claim_call(gw_fair_pool_t *p, const gw_fair_unclaim_t *u, bool give_back, int64_t now_s,
                      bool *sent, char *why, size_t cap)
{
    inv_fleet_conn_t *c = gw_fair__pool_get(p, why, cap);
    *sent = c != NULL;
    int rc = c ? gw_fair_redis_room_claim(c, u->sale, u->jti, u->fp, u->nonce,
                                          (u->exp_s - now_s + 1) * 1000, give_back, why, cap)
               : CM_EBACKEND;
    gw_fair__pool_put(p, c);
    return rc;
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
        bool sent;
        if (claim_call(&f->pool, &u, true, now_s, &sent, why, sizeof(why)) >= 0)
            continue;
        gw_fair__room_fleet_trouble("give an admission token back (retried)", u.sale, why);
        /* workers may have filled the list meanwhile: then the token stays
         * spent until it expires, as when the list was full at the claim */
        (void)unclaim_later(f, &u);
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
    uint64_t n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
    if (n == 0) /* 0 says "holds nothing" to the caller */
        n = atomic_fetch_add_explicit(&f->claim_nonce, 1, memory_order_relaxed);
    gw_fair_unclaim_t u = {.jti = jti, .fp = fp, .nonce = n, .exp_s = exp_s};
    snprintf(u.sale, sizeof(u.sale), "%s", fs->sale_id);
    char why[256] = "";
    bool sent;
    int rc = claim_call(&f->loop_pool, &u, false, now_s, &sent, why, sizeof(why));
    /* Sent, no answer: Redis may run the claim still, and the token would read spent
     * with no order. Given back by the lottery thread, which voids it if it has not run
     * yet; a keyed retry past this claim (GW_WR_REPLAY) holds the token with its own
     * nonce, so this give-back leaves it held under that retry's order. */
    if (rc < 0 && sent && !unclaim_later(f, &u))
        gw_fair__room_fleet_trouble("give an admission token back", fs->sale_id,
                                    "too many give-backs pending");
    if (rc == GW_WR_CLAIMED || rc == GW_WR_REPLAY) /* held with the key's first buy: alike */
        *nonce = n;
    return rc; /* gw_fair_redis_room_claim answers GW_WR_* or an error */
}

static void fleet_settle(gw_fair_sale_t *fs, uint64_t jti, uint64_t fp, uint64_t nonce,
                         bool accepted)
{
    if (accepted)
        return; /* the claim stays until the token expires */
    int64_t now_s = cm_wall_ms() / 1000;
    gw_fair_unclaim_t u = {
        .jti = jti, .fp = fp, .nonce = nonce, .exp_s = now_s + GW_WR_TOKEN_TTL_S};
    snprintf(u.sale, sizeof(u.sale), "%s", fs->sale_id);
    char why[256] = "";
    bool sent;
    /* this claim's value only: another buy's claim of the token stays. Not given back:
     * retried by the lottery thread (a retry with the key that rests on the token holds
     * it with a nonce of its own) */
    if (claim_call(&fs->f->loop_pool, &u, true, now_s, &sent, why, sizeof(why)) < 0 &&
        !unclaim_later(fs->f, &u))
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
