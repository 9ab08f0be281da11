/*
 * The buyer's identity on the sale routes: gw_identity.h.
 *
 * Per process: one id_verifier_t (its keys read by every worker), one
 * id_fetcher_t when identity.jwks_url is set. Per worker: an id_cache_t and
 * the counters, written only by that worker's loop (relaxed atomics so
 * /metrics can read them).
 */
#include "gateway/buy/gw_identity.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "gateway/edge/gw_edge.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A token of identity.max_token_bytes fits in the public listener's head with
 * room for the request line, Host and the other fields (else 431 first). */
_Static_assert(ID_TOKEN_LIMIT + 512 <= GW_H1_READ_BUF, "identity.max_token_bytes beyond the head");

/* Verified tokens cached per worker: 4096 x ~2.2 KiB at most = 9 MiB per worker. */
#define ID_CACHE_ENTRIES 4096
#define OWNER_STRIPES 64

typedef struct id_worker {
    _Alignas(64) id_cache_t *cache;
    _Atomic uint64_t verif[ID__OUTCOME_COUNT];
    _Atomic uint64_t hits, untrusted, mismatches, dups, csrf;
} id_worker_t;

/* One more on a counter only its worker writes: a plain load and store, no locked
 * instruction (the scrape reads it with a relaxed load). */
static inline void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

typedef struct owner_slot {
    uint64_t order; /* cm_id number, 0 = empty */
    uint64_t user;  /* keyed hash of the user */
} owner_slot_t;

struct gw_identity {
    int mode;
    id_config_t ic;
    char header[128], cookie[128];
    uint32_t retry_s; /* Retry-After of the 503 no_keys */
    id_verifier_t *verifier;
    id_fetcher_t *fetcher;
    id_worker_t *workers;
    unsigned nworkers;
    /* order -> buyer (gw_identity_order_put) */
    owner_slot_t *owners;
    size_t owners_mask;
    cm_hash_key_t owner_key;
    pthread_mutex_t owner_mu[OWNER_STRIPES];
};

static const char *mode_name(int m)
{
    return m == GW_ID_JWT ? "jwt" : m == GW_ID_HEADER ? "header" : "none";
}

/* server.listen on a loopback address (127.0.0.0/8, ::1, localhost). */
static bool listen_loopback(const char *listen)
{
    char host[256];
    unsigned port;
    if (gw_config_split_hostport(listen, host, sizeof(host), &port) != 0)
        return false;
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1)
        return strcmp(host, "::1") == 0;
    return strcmp(host, "localhost") == 0;
}

int gw_identity_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    const gw_config_t *cfg = srv->cfg;
    struct gw_identity *id = cm_xcalloc(1, sizeof(*id));
    srv->identity = id;
    id->mode = cfg->id_mode;
    gw_identity_config(cfg, &id->ic);
    snprintf(id->header, sizeof(id->header), "%s", cfg->id_header);
    snprintf(id->cookie, sizeof(id->cookie), "%s", cfg->id_cookie);
    id->retry_s = id->ic.jwks_min_refetch_s;
    id->nworkers = srv->pool.nworkers;
    id->workers = cm_xcalloc(srv->pool.nworkers, sizeof(*id->workers));
    for (unsigned i = 0; i < OWNER_STRIPES; i++)
        pthread_mutex_init(&id->owner_mu[i], NULL);
    if (id->mode == GW_ID_NONE) {
        if (!listen_loopback(cfg->listen))
            cm_log_warn("identity",
                        "identity.mode=none: buyers are whoever the body's user_id says; "
                        "use jwt or header on a listener others can reach",
                        "listen=%s", cfg->listen);
        return 0;
    }
    char why[400] = "";
    if (id->mode == GW_ID_JWT) {
        id_jwks_t *def = NULL;
        if (!id->ic.jwks_file[0] && !id->ic.jwks_url[0]) {
            id_signer_t *signer = id_keys_ensure(cfg->data_dir, true, why, sizeof(why));
            if (!signer) {
                snprintf(errbuf, errlen, "identity: %s", why);
                return CM_EIO;
            }
            def = id_signer_jwks(signer);
            /* the gateway only verifies: its public half is all it keeps (the
             * load tester and flashgate-token mint from the file themselves) */
            id_signer_free(signer);
        }
        id->verifier = id_verifier_new(&id->ic, def, why, sizeof(why));
        id_jwks_unref(def);
        if (!id->verifier) {
            snprintf(errbuf, errlen, "identity: %s", why);
            return CM_EINVAL;
        }
        if (id->ic.jwks_url[0]) {
            id->fetcher = id_fetcher_start(id->verifier, &id->ic, why, sizeof(why));
            if (!id->fetcher) {
                snprintf(errbuf, errlen, "identity.jwks_url %s: %s", id->ic.jwks_url, why);
                return CM_EBACKEND;
            }
        }
        for (unsigned i = 0; i < id->nworkers; i++) {
            id->workers[i].cache = id_cache_new(ID_CACHE_ENTRIES);
            if (!id->workers[i].cache) {
                snprintf(errbuf, errlen, "identity: cannot allocate the token caches");
                return CM_ENOMEM;
            }
        }
    }
    size_t n = 1024;
    while (n < cfg->orders_max_known && n < (1u << 30))
        n <<= 1;
    id->owners = cm_xcalloc(n, sizeof(*id->owners));
    id->owners_mask = n - 1;
    if (cm_hash_seed_random(&id->owner_key) != 0) {
        snprintf(errbuf, errlen, "identity: no random bytes for the order table's key");
        return CM_EIO;
    }
    cm_log_info("identity", "buyer identity on", "mode=%s keys=%zu jwks_url=%s header=%s",
                mode_name(id->mode),
                id->verifier ? id_verifier_key_count(id->verifier) : (size_t)0,
                id->ic.jwks_url[0] ? id->ic.jwks_url : "-", id->header[0] ? id->header : "-");
    return 0;
}

void gw_identity_stop(gw_server_t *srv)
{
    struct gw_identity *id = srv->identity;
    if (!id)
        return;
    id_fetcher_stop(id->fetcher);
    for (unsigned i = 0; i < id->nworkers; i++)
        id_cache_free(id->workers[i].cache);
    id_verifier_free(id->verifier);
    for (unsigned i = 0; i < OWNER_STRIPES; i++)
        pthread_mutex_destroy(&id->owner_mu[i]);
    free(id->owners);
    free(id->workers);
    free(id);
    srv->identity = NULL;
}

bool gw_identity_on(const gw_server_t *srv)
{
    return srv->identity && srv->identity->mode != GW_ID_NONE;
}

/*---- where the token is ----*/

/* The token of "Authorization: Bearer <token>" (scheme case-insensitive), or
 * of the identity.cookie (*from_cookie set), or NULL. */
static const char *find_token(const gw_req_t *r, const struct gw_identity *id, size_t *len,
                              bool *from_cookie)
{
    const char *a = r->conn ? r->hdr.authorization : NULL; /* gw_req_header's, found by the head's walk */
    *from_cookie = false;
    if (a) {
        while (*a == ' ' || *a == '\t')
            a++;
        if (strncasecmp(a, "Bearer", 6) != 0 || (a[6] != ' ' && a[6] != '\t'))
            return NULL;
        a += 6;
        while (*a == ' ' || *a == '\t')
            a++;
        size_t n = strlen(a);
        while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
            n--;
        *len = n;
        return n ? a : NULL;
    }
    if (!id->cookie[0])
        return NULL;
    const char *c = gw_req_header(r, "Cookie");
    size_t nl = strlen(id->cookie);
    while (c && *c) {
        while (*c == ' ' || *c == ';')
            c++;
        size_t n = strcspn(c, ";");
        if (n > nl && c[nl] == '=' && memcmp(c, id->cookie, nl) == 0) {
            *len = n - nl - 1;
            while (*len && c[nl + *len] == ' ')
                (*len)--;
            *from_cookie = *len > 0;
            return *len ? c + nl + 1 : NULL;
        }
        c += n;
    }
    return NULL;
}

typedef enum { WHO_OK, WHO_FAIL, WHO_UNTRUSTED, WHO_DUP, WHO_CSRF } who_t;

/* Two identity headers, or two Authorization fields: which one a proxy wrote
 * cannot be told (an appending proxy leaves the client's first), so neither
 * is read. Header mode reads identity.header, jwt mode Authorization (the
 * head's walk counted it: no second walk). */
static bool dup_identity(const gw_req_t *r, const struct gw_identity *id, const char **h)
{
    if (id->mode == GW_ID_HEADER) {
        bool dup;
        *h = gw_req_header_once(r, id->header, &dup);
        return dup;
    }
    return r->hdr.auth_count > 1;
}

/* A state-changing request whose buyer a cookie names must prove it is no
 * cross-site form or link: a browser sends neither an application/json
 * Content-Type nor an X-Requested-With field cross-site without a CORS
 * preflight, which the gateway never grants. HEAD changes nothing. */
static bool csrf_ok(const gw_req_t *r)
{
    if (r->verb == GW_VERB_HEAD)
        return true;
    const char *ct = r->hdr.content_type;
    if (ct && strncasecmp(ct, "application/json", 16) == 0 &&
        (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ' || ct[16] == '\t'))
        return true;
    return gw_req_header(r, "X-Requested-With") != NULL;
}

/* The request's verified user: WHO_OK with user and gw_req_buy(r)->person filled; WHO_FAIL with
 * *outcome (an id_outcome_t); WHO_UNTRUSTED: identity.header from a peer not
 * in server.trusted_proxies; WHO_DUP: the identity field twice (dup_identity);
 * WHO_CSRF (only when `csrf`): a cookie's token without csrf_ok. Counts the outcome
 * (ID_MISSING only when count_missing, ID_OK and its cache hit only when count_ok). */
static who_t who(gw_req_t *r, char *user, int *outcome, bool count_missing, bool count_ok,
                 bool csrf)
{
    gw_server_t *srv = r->w->srv;
    struct gw_identity *id = srv->identity;
    id_worker_t *iw = &id->workers[r->w->index];
    int oc;
    gw_req_buy(r)->eligible = 0;
    gw_req_buy(r)->created_at = 0;
    const char *h = NULL;
    if (dup_identity(r, id, &h)) {
        bump(&iw->dups);
        return WHO_DUP;
    }
    if (id->mode == GW_ID_HEADER) {
        if (h && !gw_proxies_match(&srv->conns.proxies, gw_req_peer(r))) {
            bump(&iw->untrusted);
            return WHO_UNTRUSTED;
        }
        size_t n = h ? strlen(h) : 0;
        if (!h)
            oc = ID_MISSING;
        else if (!id_user_valid(h, n, ID_USER_MAX))
            oc = ID_BAD_SUBJECT;
        else {
            memcpy(user, h, n + 1);
            memcpy(gw_req_buy(r)->person, h, n + 1);
            oc = ID_OK;
        }
    } else {
        size_t len = 0;
        bool cookie;
        const char *tok = find_token(r, id, &len, &cookie);
        if (tok && cookie && csrf && !csrf_ok(r)) {
            bump(&iw->csrf);
            return WHO_CSRF;
        }
        id_result_t res;
        res.eligible = 0; /* filled on ID_OK only: set for the analyzers */
        res.created_at = 0;
        if (!tok)
            oc = ID_MISSING;
        else
            oc = id_verify_cached(id->verifier, iw->cache, tok, len, cm_wall_ms() / 1000, &res);
        if (oc == ID_OK) {
            memcpy(user, res.user, strlen(res.user) + 1);
            memcpy(gw_req_buy(r)->person, res.person, strlen(res.person) + 1);
            gw_req_buy(r)->eligible = res.eligible;
            gw_req_buy(r)->created_at = res.created_at;
            if (res.cached && count_ok)
                bump(&iw->hits);
        }
    }
    if (oc >= 0 && oc < ID__OUTCOME_COUNT && (oc != ID_MISSING || count_missing) &&
        (oc != ID_OK || count_ok))
        bump(&iw->verif[oc]);
    *outcome = oc;
    return oc == ID_OK ? WHO_OK : WHO_FAIL;
}

/* An Idempotency-Key scoped by its user: "id-" and the hex SHA-256 of user
 * "\n" key. The same on every gateway and across restarts (the key dedups in
 * the shared inventory), and never the key another user sent. */
static void scope_idem_key(char *key, const char *user)
{
    unsigned char md[32];
    unsigned mdlen = 0;
    char buf[INV_USER_ID_MAX + 2 + INV_IDEM_KEY_MAX + 1];
    int n = snprintf(buf, sizeof(buf), "%s\n%s", user, key);
    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    char *p = key;
    memcpy(p, "id-", 3);
    p += 3;
    for (unsigned i = 0; i < mdlen; i++) {
        *p++ = hex[md[i] >> 4];
        *p++ = hex[md[i] & 15];
    }
    *p = '\0';
}

/* The answer to a request whose buyer is not known (w != WHO_OK). */
static void refuse(gw_req_t *r, who_t w, int oc)
{
    struct gw_identity *id = r->w->srv->identity;
    switch (w) {
    case WHO_UNTRUSTED:
        gw_resp_error(&r->resp, GW_R_FORBIDDEN, NULL,
                      "%s is accepted only from a trusted proxy (server.trusted_proxies)",
                      id->header);
        return;
    case WHO_DUP:
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, "\"reason\":\"duplicate_identity\"",
                      "%s appears more than once: the proxy must replace it, not append",
                      id->mode == GW_ID_HEADER ? id->header : "Authorization");
        return;
    case WHO_CSRF:
        gw_resp_error(&r->resp, GW_R_FORBIDDEN, "\"reason\":\"csrf\"",
                      "a buyer named by the %s cookie needs Content-Type: application/json or an "
                      "X-Requested-With header on this route",
                      id->cookie);
        return;
    case WHO_FAIL:
    case WHO_OK:
        break;
    }
    if (oc == ID_NO_KEYS || oc == ID_STALE_KEYS) {
        gw_resp_error(&r->resp, GW_R_UNAVAILABLE,
                      oc == ID_NO_KEYS ? "\"reason\":\"no_keys\"" : "\"reason\":\"stale_keys\"",
                      oc == ID_NO_KEYS
                          ? "buyer tokens cannot be verified yet: no key set loaded; retry"
                          : "buyer tokens cannot be verified: the key set's refresh has failed "
                            "longer than identity.jwks_max_stale; retry");
        gw_resp_retry_after(&r->resp, id->retry_s);
        return;
    }
    char extra[64];
    snprintf(extra, sizeof(extra), "\"reason\":\"%s\"", id_outcome_name(oc));
    gw_resp_error(&r->resp, GW_R_UNAUTHORIZED, extra, "%s%s", id_outcome_text(oc),
                  id->mode == GW_ID_JWT
                      ? ": send the buyer's login token as Authorization: Bearer <JWT>"
                      : "");
    if (id->mode == GW_ID_JWT)
        gw_resp_header_set(&r->resp, "WWW-Authenticate",
                           oc == ID_MISSING ? "Bearer realm=\"flashgate\""
                                            : "Bearer realm=\"flashgate\", "
                                              "error=\"invalid_token\"");
}

bool gw_identity_check(gw_req_t *r, const char *claimed, char *user)
{
    struct gw_identity *id = r->w->srv->identity;
    int oc = ID_MISSING;
    who_t w = who(r, user, &oc, true, true, true);
    if (w != WHO_OK) {
        refuse(r, w, oc);
        return false;
    }
    if (claimed && claimed[0] && strcmp(claimed, user) != 0) {
        bump(&id->workers[r->w->index].mismatches);
        gw_resp_error(&r->resp, GW_R_IDENTITY_MISMATCH, NULL,
                      "user_id is not the verified buyer (omit it, or send the "
                      "token's own user)");
        return false;
    }
    return true;
}

bool gw_identity_buy(gw_req_t *r)
{
    char user[ID_USER_MAX + 1];
    if (!gw_identity_check(r, gw_req_buy(r)->res.user_id, user))
        return false;
    memcpy(gw_req_buy(r)->res.user_id, user, strlen(user) + 1);
    if (gw_req_buy(r)->res.idem_key[0])
        scope_idem_key(gw_req_buy(r)->res.idem_key, user);
    return true;
}

bool gw_identity_claimed(gw_req_t *r, char *user)
{
    struct gw_identity *id = r->w->srv->identity;
    if (!gw_identity_on(r->w->srv))
        return false;
    const char *h = NULL;
    if (dup_identity(r, id, &h)) {
        refuse(r, WHO_DUP, ID_MISSING);
        return false;
    }
    if (id->mode == GW_ID_HEADER) {
        if (h && !gw_proxies_match(&r->w->srv->conns.proxies, gw_req_peer(r))) {
            refuse(r, WHO_UNTRUSTED, ID_MISSING);
            return false;
        }
        if (!h || !id_user_valid(h, strlen(h), ID_USER_MAX)) {
            refuse(r, WHO_FAIL, h ? ID_BAD_SUBJECT : ID_MISSING);
            return false;
        }
        memcpy(user, h, strlen(h) + 1);
        return true;
    }
    size_t len = 0;
    bool verified, cookie;
    const char *tok = find_token(r, id, &len, &cookie);
    if (tok && id_claimed_user(id->verifier, id->workers[r->w->index].cache, tok, len,
                               cm_wall_ms() / 1000, user, &verified))
        return true;
    /* no readable claim: verification could only refuse it, so it is refused
     * now, before any signature work */
    refuse(r, WHO_FAIL, tok ? ID_BAD_SUBJECT : ID_MISSING);
    return false;
}

bool gw_identity_user(gw_req_t *r, char *user)
{
    if (!gw_identity_on(r->w->srv))
        return false;
    int oc;
    return who(r, user, &oc, false, true, false) == WHO_OK;
}

bool gw_identity_valid(gw_req_t *r)
{
    char user[ID_USER_MAX + 1];
    int oc;
    return who(r, user, &oc, false, false, false) == WHO_OK;
}

/*---- order -> buyer ----*/

static owner_slot_t *owner_slot(struct gw_identity *id, const char *order_id, uint64_t *num,
                                pthread_mutex_t **mu)
{
    if (!id || !id->owners || cm_id_parse(order_id, strlen(order_id), num) != 0 || !*num)
        return NULL;
    uint64_t h = cm_hash_sip24(&id->owner_key, num, sizeof(*num));
    *mu = &id->owner_mu[h % OWNER_STRIPES];
    return &id->owners[h & id->owners_mask];
}

void gw_identity_order_put(gw_server_t *srv, const char *order_id, const char *user)
{
    struct gw_identity *id = srv->identity;
    uint64_t num;
    pthread_mutex_t *mu;
    owner_slot_t *s = owner_slot(id, order_id, &num, &mu);
    if (!s)
        return;
    uint64_t uh = cm_hash_sip24(&id->owner_key, user, strlen(user));
    pthread_mutex_lock(mu);
    s->order = num;
    s->user = uh;
    pthread_mutex_unlock(mu);
}

bool gw_identity_order_owner(gw_server_t *srv, const char *order_id, const char *user)
{
    struct gw_identity *id = srv->identity;
    uint64_t num;
    pthread_mutex_t *mu;
    owner_slot_t *s = owner_slot(id, order_id, &num, &mu);
    if (!s)
        return false;
    uint64_t uh = cm_hash_sip24(&id->owner_key, user, strlen(user));
    pthread_mutex_lock(mu);
    bool ok = s->order == num && s->user == uh;
    pthread_mutex_unlock(mu);
    return ok;
}

const char *gw_identity_stale(gw_server_t *srv)
{
    struct gw_identity *id = srv->identity;
    if (!id || !id->verifier || !id_verifier_stale(id->verifier, cm_wall_ms() / 1000))
        return NULL;
    return "identity: the JWKS refresh has failed longer than identity.jwks_max_stale; buyer "
           "tokens are refused (503 stale_keys)";
}

void gw_identity_stats(gw_server_t *srv, gw_identity_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    struct gw_identity *id = srv->identity;
    if (!id)
        return;
    out->mode = id->mode;
    for (unsigned i = 0; i < id->nworkers; i++) {
        id_worker_t *w = &id->workers[i];
        for (int o = 0; o < ID__OUTCOME_COUNT; o++)
            out->verifications[o] += atomic_load_explicit(&w->verif[o], memory_order_relaxed);
        out->cache_hits += atomic_load_explicit(&w->hits, memory_order_relaxed);
        out->untrusted_header += atomic_load_explicit(&w->untrusted, memory_order_relaxed);
        out->mismatches += atomic_load_explicit(&w->mismatches, memory_order_relaxed);
        out->duplicates += atomic_load_explicit(&w->dups, memory_order_relaxed);
        out->csrf += atomic_load_explicit(&w->csrf, memory_order_relaxed);
    }
    if (id->verifier) {
        id_fetch_stats_t fs;
        id_fetch_stats(id->fetcher, id->verifier, &fs);
        out->keys = id_verifier_key_count(id->verifier);
        out->refresh_ok = fs.ok;
        out->refresh_failed = fs.failed;
        out->keys_refused = fs.keys_refused;
        out->stale = fs.stale;
    }
}
