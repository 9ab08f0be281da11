/*
 * identity/ private: the key and key-set layout and the verifier's state,
 * shared by the files of this folder only (never include it from outside).
 */
#ifndef ID_INTERNAL_H
#define ID_INTERNAL_H

#include "identity/id.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>

/* Key types; an algorithm names exactly one (the key-type check of id_verify). */
enum { ID_KT_RSA, ID_KT_EC256, ID_KT_EC384, ID_KT_ED25519, ID_KT_HMAC };

/* The algorithms we know; the allow-list is a bit mask over this table. */
typedef struct id_alg {
    const char *name;
    int kt;
    const char *md; /* digest name; NULL for EdDSA */
    bool pss;
} id_alg_t;
extern const id_alg_t id__algs[];
extern const size_t id__n_algs;
/* Index in id__algs of name[0..len), or -1. */
int id__alg_find(const char *name, size_t len);
/* Parses a comma-separated allow-list into a mask; returns -1 (err filled) on an unknown name. */
int id__algs_parse(const char *list, unsigned *mask, char *err, size_t errlen);

/* Splits a comma-separated audience list (<= ID_AUDIENCES_MAX); -1 with err on none or too many. */
int id__audiences(const char *list, char out[][ID_STR_MAX], size_t *n, char *err, size_t errlen);
/* identity.eligibility_claims into out[0..*n): 0, or -1 with a sentence in err (a bad
 * name, a duplicate, more than ID_ELIG_MAX). */
int id__elig_names(const char *list, char out[][ID_CLAIM_NAME_MAX + 1], size_t *n, char *err,
                   size_t errlen);

/* Verification contexts kept per key (RSA and EC): creating an EVP_PKEY_CTX and
 * initialising it costs ~7 us of a ~25 us RSA-2048 verification (OpenSSL 3.0,
 * bench/identity.py), so each key keeps a few, taken and returned with an atomic flag. */
#define ID_CTX_POOL 8

typedef struct id_ctx_slot {
    atomic_bool busy;
    int alg;          /* index in id__algs the context is initialised for, -1 = none */
    EVP_PKEY_CTX *ctx; /* touched only by the thread holding busy */
} id_ctx_slot_t;

typedef struct id_key {
    char kid[ID_KID_MAX + 1]; /* "" = no kid */
    char alg[8];              /* the key's "alg" member, "" = any alg of its type */
    int kt;
    EVP_PKEY *pk;
    unsigned char fp[32];     /* SHA-256 over kid, alg, type and public bytes (equality) */
    id_ctx_slot_t pool[ID_CTX_POOL]; /* the only mutable part of a published key */
} id_key_t;

struct id_jwks {
    atomic_int refs;
    size_t refused; /* keys of the text refused one by one (id_jwks_parse) */
    size_t n;
    id_key_t keys[];
};

/* Builds a one-key set from a public key (takes a new reference to pk). */
id_jwks_t *id__jwks_from_pkey(EVP_PKEY *pk, int kt, const char *kid, const char *alg);
/* The JWK JSON members of a public key ({"kty":...}), malloc'ed; NULL on failure. */
char *id__jwk_json(EVP_PKEY *pk, int kt, const char *kid, const char *alg);
/* The key type of pk (ID_KT_*), or -1 for key types we do not sign or verify with. */
int id__pkey_kt(EVP_PKEY *pk);
/* The DER ECDSA-Sig-Value of a JWS ECDSA signature r || s (2 * cl bytes, cl <= 48)
 * into der (at least 2 * cl + 8 bytes), byte for byte what ECDSA_SIG_set0 and
 * i2d_ECDSA_SIG write; returns its length. Thread-safe. */
size_t id__ecdsa_sig_der(const unsigned char *rs, size_t cl, unsigned char *der);

struct id_verifier {
    id_config_t cfg;
    unsigned allowed; /* bit i = id__algs[i] allowed */
    char aud[ID_AUDIENCES_MAX][ID_STR_MAX];
    size_t n_aud;
    char elig[ID_ELIG_MAX][ID_CLAIM_NAME_MAX + 1]; /* identity.eligibility_claims, parsed */
    size_t n_elig;
    unsigned char *hmac;
    size_t hmac_len;
    id_jwks_t *fixed; /* jwks_file or the default keys; immutable */
    pthread_mutex_t mu; /* guards `fetched` (taken only to swap or to take a reference) */
    id_jwks_t *fetched;
    atomic_uint_fast64_t gen;
    /* unknown-kid refetches: one granted per jwks_min_refetch_s */
    atomic_int_fast64_t next_refetch_ms;
    atomic_uint_fast64_t refetch_granted, refetch_denied;
    /* Wall seconds of the first failed refresh since the last good one, 0 = none:
     * the fetched set is stale from fail_since_s + jwks_max_stale_s on. */
    atomic_int_fast64_t fail_since_s;
    void (*wake)(void *arg); /* the fetcher's, set while it runs (under mu) */
    void *wake_arg;
};

#endif
