/*
 * The verified-token cache: one per worker thread, no locks. 4-way
 * set-associative, placed by SipHash under a per-cache random key (of the
 * token's last 64 bytes and its length: the signature's end, which only the
 * issuer can choose for a token that verifies), matched on the whole token.
 * Only tokens that verified are inserted, so a client can neither make its
 * token hit another's entry (exact compare) nor crowd a bucket beyond its 4
 * ways (the key hides the placement, and each entry cost a real signature).
 * In front, a memo placed by the token's last bytes without the key remembers
 * the entry each slot last answered: a retry or poll finds its entry without
 * the keyed hash (~400 instructions a lookup: python3 bench/profile.py BIN
 * jwt-retry calls), checked on the entry as the keyed lookup checks it.
 */
#include "identity/id_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_hash.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define WAYS 4
#define CACHE_TOKEN_MAX 2048

typedef struct centry {
    uint64_t h; /* 0 = empty */
    int64_t exp;
    uint64_t gen;
    uint32_t len;
    uint32_t cap;
    char *tok;
    id_result_t r; /* the verified result, returned as is (cached = true) */
} centry_t;

/* The memo's slots (a power of two): 8 KiB of pointers per cache. */
#define MEMO_SLOTS 1024

struct id_cache {
    cm_hash_key_t key;
    /* The front of the lookup, placed by the token's last 8 bytes without a
     * key: per slot the entry of the last token answered through it, or NULL.
     * A pointer only: everything a hit needs is checked on the entry itself
     * (memo_hit), so a slot two tokens share costs a miss (the keyed lookup),
     * never the other's result. */
    centry_t *memo[MEMO_SLOTS];
    size_t nbuckets; /* power of two */
    centry_t *e;     /* nbuckets * WAYS */
    id_cache_stats_t st;
};

id_cache_t *id_cache_new(size_t entries)
{
    size_t n = 16;
    while (n < entries && n < ((size_t)1 << 30))
        n <<= 1;
    id_cache_t *c = cm_xcalloc(1, sizeof(*c));
    if (cm_hash_seed_random(&c->key) < 0) {
        /* getrandom failing leaves a fixed key: placement becomes guessable, matching stays exact */
        c->key.k0 = (uint64_t)(uintptr_t)c;
        c->key.k1 = (uint64_t)(uintptr_t)&c;
    }
    c->nbuckets = n / WAYS;
    c->e = cm_xcalloc(n, sizeof(centry_t));
    c->st.entries = n;
    return c;
}

void id_cache_free(id_cache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nbuckets * WAYS; i++)
        free(c->e[i].tok);
    free(c->e);
    free(c);
}

void id_cache_stats(const id_cache_t *c, id_cache_stats_t *out)
{
    *out = c->st;
}

static uint64_t place(const id_cache_t *c, const char *tok, size_t len)
{
    size_t tail = len < 64 ? len : 64;
    uint64_t h = cm_hash_sip24(&c->key, tok + len - tail, tail) ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull);
    return h ? h : 1;
}

/* The entry of tok in bucket b (placed by h), or NULL. */
static centry_t *find(centry_t *b, uint64_t h, const char *tok, size_t len)
{
    for (int w = 0; w < WAYS; w++) {
        centry_t *e = &b[w];
        if (e->h == h && e->len == len && memcmp(e->tok, tok, len) == 0)
            return e;
    }
    return NULL;
}

/* The user claim of a token's payload, unverified: the part between the dots
 * decoded and parsed as verification parses it (duplicates refused, the id
 * alphabet). */
static bool payload_user(const id_verifier_t *v, const char *tok, size_t len, char *user)
{
    const char *end = tok + len;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || d2 == d1 + 1)
        return false;
    unsigned char pl[ID_TOKEN_LIMIT / 4 * 3];
    long n = id_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pl, sizeof(pl));
    if (n <= 0)
        return false;
    json_error_t jerr;
    json_t *c = json_loadb((const char *)pl, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    json_t *u = json_is_object(c) ? json_object_get(c, v->cfg.user_claim) : NULL;
    bool ok = json_is_string(u) &&
              id_user_valid(json_string_value(u), json_string_length(u), ID_USER_MAX);
    if (ok)
        memcpy(user, json_string_value(u), json_string_length(u) + 1);
    json_decref(c);
    return ok;
}

bool id_claimed_user(id_verifier_t *v, id_cache_t *c, const char *tok, size_t len, int64_t now_s,
                     char *user, bool *verified)
{
    *verified = false;
    if (len == 0 || len > v->cfg.max_token_bytes)
        return false;
    if (len <= CACHE_TOKEN_MAX) {
        uint64_t h = place(c, tok, len);
        centry_t *e = find(&c->e[(h & (c->nbuckets - 1)) * WAYS], h, tok, len);
        if (e && now_s < e->exp && e->gen == id_verifier_keys_gen(v)) {
            memcpy(user, e->r.user, sizeof(e->r.user));
            *verified = true;
            return true;
        }
    }
    return payload_user(v, tok, len, user);
}

/* The memo's slot of a token: its last 8 bytes (the signature's), mixed. */
static centry_t **memo_slot(id_cache_t *c, const char *tok, size_t len)
{
    uint64_t x = 0;
    size_t n = len < 8 ? len : 8;
    memcpy(&x, tok + len - n, n);
    x = (x ^ len) * 0x9e3779b97f4a7c15ull;
    return &c->memo[x >> 54]; /* 64 - log2(MEMO_SLOTS) */
}

/* e holds this very token (the whole token compared), unexpired, verified
 * under the current keys: what a hit of the keyed lookup checks. */
static bool memo_hit(const centry_t *e, const char *tok, size_t len, int64_t now_s, uint64_t gen)
{
    return e && e->h && e->len == len && now_s < e->exp && e->gen == gen &&
           memcmp(e->tok, tok, len) == 0;
}

int id_verify_cached(id_verifier_t *v, id_cache_t *c, const char *tok, size_t len, int64_t now_s,
                     id_result_t *out)
{
    /* a stale fetched set verifies nothing: cached verdicts of its keys neither
     * (one relaxed load while no refresh has failed: no call on the hit path) */
    if (len == 0 || len > CACHE_TOKEN_MAX ||
        (atomic_load_explicit(&v->fail_since_s, memory_order_relaxed) &&
         id_verifier_stale(v, now_s)))
        return id_verify(v, tok, len, now_s, out);
    uint64_t gen = id_verifier_keys_gen(v);
    centry_t **memo = memo_slot(c, tok, len);
    if (memo_hit(*memo, tok, len, now_s, gen)) {
        c->st.hits++;
        *out = (*memo)->r;
        out->cached = true;
        return ID_OK;
    }
    uint64_t h = place(c, tok, len);
    centry_t *b = &c->e[(h & (c->nbuckets - 1)) * WAYS];
    centry_t *e = find(b, h, tok, len);
    if (e) {
        if (now_s < e->exp && e->gen == gen) {
            c->st.hits++;
            *memo = e;
            *out = e->r;
            out->cached = true;
            return ID_OK;
        }
        e->h = 0; /* expired, or verified under keys since replaced */
        c->st.used--;
    }
    c->st.misses++;
    int rc = id_verify(v, tok, len, now_s, out);
    if (rc != ID_OK || out->exp <= now_s)
        return rc; /* inside the leeway after exp: never cached */
    centry_t *slot = NULL;
    for (int w = 0; w < WAYS && !slot; w++)
        if (b[w].h == 0 || b[w].exp <= now_s)
            slot = &b[w];
    if (!slot) {
        slot = &b[0];
        for (int w = 1; w < WAYS; w++)
            if (b[w].exp < slot->exp)
                slot = &b[w];
        c->st.evictions++;
    } else if (slot->h == 0) {
        c->st.used++;
    }
    if (slot->cap < len) {
        slot->tok = cm_xrealloc(slot->tok, len);
        slot->cap = (uint32_t)len;
    }
    memcpy(slot->tok, tok, len);
    slot->len = (uint32_t)len;
    slot->h = h;
    slot->exp = out->exp;
    slot->gen = gen;
    slot->r = *out;
    c->st.inserts++;
    *memo = slot;
    return rc;
}

