/*
 * identity: who is buying. Verifies the shop's login token (a compact JWS
 * "JWT") locally, against a JWK set from a file, a URL refreshed in the
 * background, or the key pair flashgate generates in its data dir; mints
 * tokens from that key for curl and the load tester.
 *
 * Pieces (docs/identity.md says how a shop wires them):
 *  - id_config_t: the identity.* settings, validated with errors in a caller buffer.
 *  - id_jwks_t: an immutable, refcounted JWK set (public keys only).
 *  - id_verifier_t: token bytes -> an id_outcome_t and the verified user/person.
 *    Holds the key sets; readers take the current snapshot, a refresh
 *    publishes a new one.
 *  - id_cache_t: a per-worker cache of verified tokens (no locks).
 *  - id_fetcher_t: the JWKS URL's fetcher, on its own thread (libcurl).
 *  - id_signer_t: a private key that mints tokens (the data dir's key).
 *
 * The JOSE implementation is OpenSSL 3's EVP calls with jansson for the JSON,
 * with the algorithm allow-list and the key type per algorithm checked here:
 * identity/id_verify.c says why no JOSE library.
 */
#ifndef ID_H
#define ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A verified user or person id: 1..64 of [A-Za-z0-9._-], the rule the gateway
 * applies to a body user_id (inv_id_valid, INV_USER_ID_MAX). */
#define ID_USER_MAX 64
#define ID_STR_MAX 256        /* issuer, audience list, claim names */
#define ID_PATH_MAX 512       /* files and the JWKS URL */
/* The largest identity.max_token_bytes: the public listener's whole request head
 * is at most 8 KiB (GW_H1_READ_BUF, else 431), so a token must leave room for the
 * request line, Host and the other fields; 7680 leaves them 512 bytes. */
#define ID_TOKEN_LIMIT 7680
#define ID_TYP_MAX 31         /* identity.typ: 1..31 printable characters */
#define ID_JWKS_MAX_BYTES (1024 * 1024) /* a JWK set file or answer beyond this is refused */
#define ID_JWKS_MAX_KEYS 64
#define ID_KID_MAX 128        /* kid: 1..128 of [A-Za-z0-9._~+=:-] (no '/', quotes, spaces) */
#define ID_AUDIENCES_MAX 8
#define ID_CLAIM_NAME_MAX 63  /* a configured claim name: 1..63 printable, no quote or backslash */
#define ID_ELIG_MAX 16        /* names in identity.eligibility_claims */
#define ID_ELIG_LIST_MAX (ID_ELIG_MAX * (ID_CLAIM_NAME_MAX + 1) + 1)

/*---- outcomes: one enum, one name table ----*/

/*
 * What a verification decided. The gateway answers ID_OK by going on with
 * the verified user; ID_NO_KEYS and ID_STALE_KEYS by 503 (it cannot verify: no
 * key set yet, or one whose refresh has failed longer than jwks_max_stale);
 * every other outcome by 401 with the outcome's name as the error code's
 * reason. ID_MISSING is the gateway's (no token in the request).
 */
#define ID_OUTCOME_MAP(XX)                                                                         \
    XX(OK, "ok", "verified")                                                                       \
    XX(MISSING, "missing", "no bearer token")                                                      \
    XX(MALFORMED, "malformed", "not a compact JWS of three base64url parts without padding")       \
    XX(TOO_LARGE, "too_large", "token longer than identity.max_token_bytes")                       \
    XX(BAD_HEADER, "bad_header", "header not a JSON object, duplicate members or crit")            \
    XX(BAD_ALG, "bad_alg", "algorithm not in identity.algorithms or not for this key")             \
    XX(BAD_KID, "bad_kid", "kid is not 1..128 of A-Z a-z 0-9 . _ ~ + = : -")                       \
    XX(UNKNOWN_KID, "unknown_kid", "no key with this kid")                                         \
    XX(NO_KEYS, "no_keys", "no key set loaded yet")                                                \
    XX(STALE_KEYS, "stale_keys", "the key set's refresh has failed longer than identity.jwks_max_stale") \
    XX(BAD_TYP, "bad_typ", "header typ is not identity.typ")                                       \
    XX(TOO_LONG_LIVED, "too_long_lived", "exp - iat (or exp - now) beyond identity.max_lifetime_s") \
    XX(BAD_SIGNATURE, "bad_signature", "signature does not verify")                               \
    XX(EXPIRED, "expired", "exp has passed")                                                       \
    XX(NOT_YET_VALID, "not_yet_valid", "nbf is in the future")                                     \
    XX(WRONG_ISSUER, "wrong_issuer", "iss is not identity.issuer")                                 \
    XX(WRONG_AUDIENCE, "wrong_audience", "aud names none of identity.audience")                    \
    XX(BAD_CLAIM, "bad_claim", "claims not a JSON object, duplicate claims, or exp/nbf/iat/person malformed") \
    XX(BAD_SUBJECT, "bad_subject", "user claim missing or not 1..64 of A-Z a-z 0-9 . _ -")

typedef enum id_outcome {
#define XX(n, name, text) ID_##n,
    ID_OUTCOME_MAP(XX)
#undef XX
        ID__OUTCOME_COUNT
} id_outcome_t;

/* "ok", "bad_signature", ...: the stable name (metrics label, error reason). Thread-safe. */
const char *id_outcome_name(int outcome);
/* A sentence for the error message. Thread-safe. */
const char *id_outcome_text(int outcome);

/*---- configuration ----*/

/*
 * The identity.* settings (docs/identity.md lists the config keys that map onto
 * these fields). Strings are NUL-terminated; lists are comma-separated.
 */
typedef struct id_config {
    char issuer[ID_STR_MAX];          /* iss must equal this; default "flashgate" */
    char audience[ID_STR_MAX];        /* aud must name one of these (<= 8); default "flashgate" */
    char algorithms[ID_STR_MAX];      /* allow-list; default "RS256,ES256,EdDSA" */
    char hmac_secret_file[ID_PATH_MAX]; /* HS256's secret (>= 32 bytes); required for HS256 */
    uint32_t leeway_s;                /* clock skew allowed on exp/nbf; default 30, <= 600 */
    char user_claim[64];              /* default "sub" */
    char person_claim[64];            /* "" = the person is the user */
    char jwks_file[ID_PATH_MAX];      /* a JWK set on disk ("" = none) */
    char jwks_url[ID_PATH_MAX];       /* http(s) JWK set, fetched off the loops ("" = none) */
    char jwks_cache_file[ID_PATH_MAX]; /* last good answer of jwks_url, for restarts ("" = none) */
    uint32_t jwks_refresh_s;          /* background refresh period; default 300, 1..86400 */
    uint32_t jwks_min_refetch_s;      /* at most one unknown-kid refetch per this; default 30, 1..3600 */
    uint32_t jwks_timeout_ms;         /* one fetch's bound; default 5000, 100..60000 */
    uint32_t max_token_bytes;         /* longer tokens: ID_TOO_LARGE; default and max ID_TOKEN_LIMIT, >= 256 */
    bool jwks_allow_http;             /* a plain http:// jwks_url off loopback; default false */
    /* A fetched set whose refresh has failed for longer than this stops verifying
     * (ID_STALE_KEYS) until a fetch succeeds; 0 = never; default 0, <= 30 days. */
    uint32_t jwks_max_stale_s;
    /* exp - iat (exp - now without iat) above this: ID_TOO_LONG_LIVED; 0 = no bound. */
    uint32_t max_lifetime_s;
    char typ[ID_TYP_MAX + 1];         /* the header typ required ("" = any), case-insensitive */
    /* Boolean claims read into id_result_t.eligible (comma-separated, <= ID_ELIG_MAX
     * distinct names; "" = none): bit i is set when the i-th name is present and JSON true. */
    char eligibility_claims[ID_ELIG_LIST_MAX];
    char account_created_claim[ID_CLAIM_NAME_MAX + 1]; /* "" = none; seconds since the epoch */
} id_config_t;

/* Fills *c with the defaults above. */
void id_config_defaults(id_config_t *c);

/*
 * Checks every field and the cross-field rules (a known algorithm list;
 * HS256 only with hmac_secret_file; an http(s) jwks_url; issuer and audience
 * non-empty). Does not touch files. Returns 0, or CM_EINVAL with a sentence
 * naming the field in err (e.g. "identity.algorithms: unknown algorithm
 * \"none\" (known: RS256 RS384 RS512 PS256 ES256 ES384 EdDSA HS256)").
 * Thread-safe.
 */
int id_config_validate(const id_config_t *c, char *err, size_t errlen);

/*
 * The bit of claim name[0..len) in c->eligibility_claims (0..ID_ELIG_MAX-1,
 * the name's position in the list), or -1 when the list does not name it or
 * is invalid. Parses the list on each call (admin-time use). Thread-safe.
 */
int id_config_claim_bit(const id_config_t *c, const char *name, size_t len);
/* The i-th name of c->eligibility_claims into out (ID_CLAIM_NAME_MAX + 1 bytes); false past
 * the end. Thread-safe. */
bool id_config_claim_name(const id_config_t *c, int i, char *out);

/*---- JWK sets ----*/

typedef struct id_jwks id_jwks_t;

/*
 * Parses a JWK set ({"keys":[...]}, at most ID_JWKS_MAX_BYTES and
 * ID_JWKS_MAX_KEYS). Takes RSA (2048..8192 bits by BN_num_bits, odd e >= 65537),
 * EC P-256/P-384 and OKP Ed25519 signature keys; skips keys with "use" other
 * than "sig" and unknown key types; refuses one key on its own (skipped,
 * logged, counted in id_jwks_refused) when it could forge or is too weak:
 * an RSA modulus under 2048 bits, an exponent that is even or under 65537,
 * an Ed25519 point of small order (the identity among them), or a key
 * EVP_PKEY_public_check refuses; refuses the set (NULL, a sentence in err) when it is not JSON, has
 * duplicate members, a key with private members ("d", "p", ...), a kid outside
 * the kid alphabet, two keys with one kid, a malformed key of a known type, or
 * no usable key. Returns a new reference. Thread-safe.
 */
id_jwks_t *id_jwks_parse(const char *buf, size_t len, char *err, size_t errlen);
/* id_jwks_parse of a file (regular, <= ID_JWKS_MAX_BYTES). Thread-safe. */
id_jwks_t *id_jwks_load(const char *path, char *err, size_t errlen);
/* Returns a new reference to ks. Thread-safe. */
id_jwks_t *id_jwks_ref(id_jwks_t *ks);
/* Drops a reference; the last one frees the set. NULL is ignored. Thread-safe. */
void id_jwks_unref(id_jwks_t *ks);
/* Number of usable keys. Thread-safe (the set is immutable). */
size_t id_jwks_count(const id_jwks_t *ks);
/* Keys of the set's text refused one by one (weak or forged: see id_jwks_parse). Thread-safe. */
size_t id_jwks_refused(const id_jwks_t *ks);
/* True when both sets hold the same keys (kid, type, alg, key bytes). Thread-safe. */
bool id_jwks_equal(const id_jwks_t *a, const id_jwks_t *b);

/*---- verification ----*/

typedef struct id_verifier id_verifier_t;

/* A verified token's facts. */
typedef struct id_result {
    char user[ID_USER_MAX + 1];   /* the user claim */
    char person[ID_USER_MAX + 1]; /* the person claim, or the user when not configured or absent */
    int64_t exp;                  /* seconds since the epoch */
    /* Bit i: the i-th claim of identity.eligibility_claims is present and JSON
     * true. Any other value (false, "true", 1, null) leaves the bit clear and
     * is not an error for the token. */
    uint32_t eligible;
    /* identity.account_created_claim: seconds since the epoch, 0 = unknown
     * (not configured, absent, not a JSON integer, or <= 0; never an error). */
    int64_t created_at;
    bool cached;                  /* answered from an id_cache_t */
} id_result_t;

/*
 * Builds a verifier from a validated config: reads hmac_secret_file and
 * jwks_file, and, when jwks_url is set, the last good keys from
 * jwks_cache_file if it holds a valid set. `default_keys` (borrowed, may be
 * NULL; the data dir's public key, id_signer_jwks) is used only when neither
 * jwks_file nor jwks_url is set. Verification with jwks_url and no keys yet
 * answers ID_NO_KEYS until the fetcher publishes some. Returns a new verifier,
 * or NULL with a sentence in err (unreadable or invalid file, a secret shorter
 * than 32 bytes, jwt mode with no key source at all). Single-threaded init.
 */
id_verifier_t *id_verifier_new(const id_config_t *c, id_jwks_t *default_keys, char *err,
                               size_t errlen);
/* Frees the verifier. Stop its fetcher first (id_fetcher_stop). Single-threaded. */
void id_verifier_free(id_verifier_t *v);

/*
 * Verifies `len` bytes of a compact JWS at `tok` at wall time `now_s`
 * (seconds since the epoch). Strict: three base64url parts without padding
 * and nothing else; header and claims JSON objects without duplicate members;
 * `crit` refused; `jku`, `x5u`, `x5c` and `jwk` ignored (never fetched, never
 * trusted); alg in identity.algorithms and matching the key's type (RSxxx and PS256 an
 * RSA key, ES256 P-256, ES384 P-384, EdDSA Ed25519, HS256 only the secret
 * file); the key by kid, or without a kid the only key of that type; then exp
 * (required) and nbf with the leeway, iss, aud, the user claim (the id
 * alphabet) and the person claim; identity.typ against the header's typ and
 * identity.max_lifetime_s against exp - iat (exp - now_s without iat) when
 * set; a key of the fetched set past jwks_max_stale: ID_STALE_KEYS. Fills
 * *out on ID_OK only. An unknown kid of valid form asks the fetcher for a
 * refetch (granted at most once per jwks_min_refetch_s); a token without a
 * kid that matches no single key is ID_UNKNOWN_KID with no refetch. Returns an id_outcome_t. Thread-safe; no blocking
 * beyond one signature check (~30-140 us, bench/identity.py).
 */
int id_verify(id_verifier_t *v, const char *tok, size_t len, int64_t now_s, id_result_t *out);

/*
 * Publishes a new URL key set (takes a new reference of ks; the previous set
 * is released when its last reader lets go). Returns true when the keys
 * differ from the current ones, which bumps the key generation so cached
 * verdicts are re-checked. Thread-safe (the fetcher calls it).
 */
bool id_verifier_set_keys(id_verifier_t *v, id_jwks_t *ks);
/*
 * A refresh of jwks_url failed at wall time now_s: the first failure since the
 * last good refresh starts the staleness clock (id_verifier_set_keys stops it).
 * Thread-safe (the fetcher calls it).
 */
void id_verifier_refresh_failed(id_verifier_t *v, int64_t now_s);
/* True when the fetched set has been failing to refresh for longer than
 * identity.jwks_max_stale at now_s (never with jwks_max_stale 0): its keys then
 * verify nothing (ID_STALE_KEYS). One relaxed load when fresh. Thread-safe. */
bool id_verifier_stale(id_verifier_t *v, int64_t now_s);
/* Changes whenever a published key set differs from the one before. Thread-safe. */
uint64_t id_verifier_keys_gen(const id_verifier_t *v);
/* Usable keys now (static + fetched). Thread-safe. */
size_t id_verifier_key_count(id_verifier_t *v);

/*---- the verified-token cache (one per worker thread) ----*/

typedef struct id_cache id_cache_t;

/*
 * A cache of `entries` verified tokens (rounded up to a power of two, >= 16),
 * tokens up to 2 KiB each: memory is bounded by entries * (2 KiB + 200 B)
 * and is allocated as tokens arrive, plus an 8 KiB memo (id_cache.c).
 * Entries are placed by a keyed hash (cm_hash, a per-cache random key) of the
 * token's last 64 bytes and its length, and matched on the whole token, so no client can make a token hit another's
 * entry. Returns a new cache.
 * Not thread-safe: one per worker, used on its thread only.
 */
id_cache_t *id_cache_new(size_t entries);
void id_cache_free(id_cache_t *c);

/*
 * id_verify with the cache in front: a token verified before under the
 * current key generation, and whose exp is still ahead of now_s, is answered
 * ID_OK from the cache (out->cached = true) without a signature check;
 * otherwise id_verify, and an ID_OK result is cached until exp. Returns an
 * id_outcome_t. Loop-thread only (the cache's thread); `v` is shared.
 */
int id_verify_cached(id_verifier_t *v, id_cache_t *c, const char *tok, size_t len, int64_t now_s,
                     id_result_t *out);

/*
 * The user a token claims, for a decision that may only refuse earlier what
 * verification would decide later (the overload control's user priority),
 * never to let anything through: from the cache when the token verified
 * before (*verified = true), else from its payload without any check of the
 * signature or the other claims (the user claim, parsed as id_verify parses
 * it; *verified = false). Returns true with `user` (ID_USER_MAX + 1 bytes)
 * filled, false when no user can be read. Costs a cache lookup, or a
 * base64url decode and a JSON parse of the payload (a few us), never a
 * signature. Loop-thread only (the cache's thread); `v` is shared.
 */
bool id_claimed_user(id_verifier_t *v, id_cache_t *c, const char *tok, size_t len, int64_t now_s,
                     char *user, bool *verified);

typedef struct id_cache_stats {
    uint64_t hits, misses, inserts, evictions;
    size_t entries, used;
} id_cache_stats_t;
/* Counters of this cache. Loop-thread only (read them on the cache's thread). */
void id_cache_stats(const id_cache_t *c, id_cache_stats_t *out);

/*---- the JWKS fetcher ----*/

typedef struct id_fetcher id_fetcher_t;

/*
 * Starts the thread that fetches c->jwks_url into v: once now (bounded by
 * jwks_timeout_ms), then every jwks_refresh_s, and when a verification met an
 * unknown kid (at most once per jwks_min_refetch_s). A failed fetch retries
 * after jwks_min_refetch_s. Answers over ID_JWKS_MAX_BYTES, not 200, or not a
 * valid set are refused; the last good keys stay in use (never fail open).
 * A good answer is written to c->jwks_cache_file (atomically, 0644) when set.
 *
 * Start rule: if the first fetch fails and v holds no keys (no jwks_cache_file
 * set from an earlier good fetch), returns NULL with the fetch's error in err,
 * and the gateway refuses to start; with keys from the cache file it starts on
 * them and keeps retrying. Returns the fetcher. Single-threaded init.
 */
id_fetcher_t *id_fetcher_start(id_verifier_t *v, const id_config_t *c, char *err, size_t errlen);
/* Stops and joins the thread (an ongoing fetch ends within ~100 ms), frees. NULL ok. */
void id_fetcher_stop(id_fetcher_t *f);

typedef struct id_fetch_stats {
    uint64_t ok, failed;      /* completed fetches */
    uint64_t refetch_granted; /* unknown-kid refetches granted */
    uint64_t refetch_denied;  /* unknown-kid asks inside jwks_min_refetch_s */
    size_t keys;              /* usable keys now */
    uint64_t keys_refused;    /* weak keys skipped in the sets now in use (id_jwks_refused) */
    bool stale;               /* id_verifier_stale now */
    int64_t last_ok_ms;       /* wall time of the last good fetch, 0 = never */
    char last_error[160];     /* the last failure's sentence, "" if none */
} id_fetch_stats_t;
/* The fetcher's counters (refetch counts live in the verifier: f may be NULL). Thread-safe. */
void id_fetch_stats(id_fetcher_t *f, id_verifier_t *v, id_fetch_stats_t *out);

/*---- signing keys and minting ----*/

typedef struct id_signer id_signer_t;

/* The data dir's key file name: <data_dir>/identity.key (PEM, PKCS#8, mode 0600). */
#define ID_KEY_FILE "identity.key"

/*
 * The embedded default key: opens <data_dir>/identity.key, generating an
 * ES256 (P-256) key pair there first when it does not exist and `create`.
 * Refuses (NULL, a sentence in err) a data dir group or others may write, and
 * a key file that is a symlink, not a regular file, readable or writable by
 * group or others, owned by another uid than the running one, or not a
 * private key. ES256 because minting must be cheap (the load tester mints one token
 * per simulated account): see identity/id_keys.c for the measured choice.
 * Returns a new signer. Thread-safe (touches only the file system).
 */
id_signer_t *id_keys_ensure(const char *data_dir, bool create, char *err, size_t errlen);
/* Opens a private key file (the key file's checks of id_keys_ensure). Thread-safe. */
id_signer_t *id_signer_open(const char *path, char *err, size_t errlen);
/*
 * A new in-memory key for `alg` ("RS256", "ES256", "ES384", "EdDSA", "PS256";
 * tests and benches). `kid` NULL = the RFC 7638 thumbprint. Thread-safe.
 */
id_signer_t *id_signer_generate(const char *alg, const char *kid, char *err, size_t errlen);
void id_signer_free(id_signer_t *s);
/* The JWS alg ("ES256", ...) and kid (the key's RFC 7638 thumbprint). Borrowed, valid while s lives. */
const char *id_signer_alg(const id_signer_t *s);
const char *id_signer_kid(const id_signer_t *s);
/* The public half as a JWK set: a new reference. Thread-safe. */
id_jwks_t *id_signer_jwks(const id_signer_t *s);
/* The public half as JSON text ({"keys":[{...}]}): malloc'ed, the caller frees. Thread-safe. */
char *id_signer_jwks_json(const id_signer_t *s);

/* What a minted token says. NULL person/extra = absent. */
typedef struct id_claims {
    const char *user;          /* required; goes into user_claim */
    const char *user_claim;    /* NULL = "sub" */
    const char *person;        /* NULL = none */
    const char *person_claim;  /* NULL = "person" */
    const char *issuer;        /* NULL = "flashgate" */
    const char *audience;      /* NULL = "flashgate" */
    int64_t iat;               /* seconds since the epoch */
    int64_t exp;
    const char *extra_json;    /* NULL, or a JSON object whose members are added */
} id_claims_t;

/*
 * Mints a compact JWS for *cl into out (NUL-terminated). Returns its length,
 * or CM_EINVAL (bad claims, err says which) or CM_EFULL (out too small).
 * Thread-safe (each call has its own OpenSSL context); ~35 us for ES256
 * (bench/identity.py).
 */
int id_signer_mint(const id_signer_t *s, const id_claims_t *cl, char *out, size_t outlen,
                   char *err, size_t errlen);
/*
 * Signs arbitrary header and payload bytes (base64url-encoded here) with the
 * key, for tests that need hostile tokens. `header` is used as given (it
 * should name the key's alg). Returns the length or CM_EFULL. Thread-safe.
 */
int id_signer_sign_raw(const id_signer_t *s, const char *header, size_t hlen,
                       const char *payload, size_t plen, char *out, size_t outlen);

/*---- small helpers shared with the gateway ----*/

/* True when s[0..len) is 1..max of [A-Za-z0-9._-] (the user id rule). Thread-safe. */
bool id_user_valid(const char *s, size_t len, size_t max);
/* True when s[0..len) is a kid we look up: 1..ID_KID_MAX of [A-Za-z0-9._~+=:-]. Thread-safe. */
bool id_kid_valid(const char *s, size_t len);
/*
 * base64url without padding: encodes len bytes into out (needs 4*ceil(len/3)+1)
 * and returns the length; decodes returning the byte count or -1 on a
 * character outside the alphabet, '=' or an impossible length. Thread-safe.
 */
size_t id_b64url_encode(const void *in, size_t len, char *out);
long id_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outlen);

#endif
