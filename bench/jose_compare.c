/*
 * Why identity/ calls OpenSSL's EVP directly rather than a JOSE library: the
 * three Debian 12 candidates side by side with identity's verifier, on the
 * same keys and tokens. Not built by CMake (the libraries are not
 * dependencies); to reproduce:
 *
 *   apt-get install libcjose-dev libjose-dev libjwt-dev
 *   cmake --build build --target flashgate_identity flashgate_common
 *   cc -O2 -I. bench/jose_compare.c -o /tmp/jose_compare build/libflashgate_identity.a \
 *      build/libflashgate_common.a $(pkg-config --cflags --libs cjose jose libjwt) \
 *      -ljansson -lcrypto -lcurl -lpthread -lm
 *   /tmp/jose_compare 2>/dev/null       # correctness table + CPU us per verification
 *   valgrind /tmp/jose_compare allocs L # heap allocations of 1,000 verifications by L
 *                                       # (L = ours, cjose, jose, jwt; base = none:
 *                                       # the setup's, to subtract)
 *
 * Rows: a good RS256 / ES256 / EdDSA token; "alg":"none"; an HS256 token
 * whose MAC key is the RSA public key (the JWK text for the JWK libraries,
 * the PEM text for libjwt, which takes PEM): "accepted" there is the
 * algorithm-confusion hole. The libraries check the signature only: exp,
 * iss, aud, kid selection and the allow-list would still be ours.
 */
#include "identity/id.h"

#include <cjose/cjose.h>
#include <jose/jose.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct keyset {
    const char *alg;
    EVP_PKEY *pk;
    id_signer_t *s;
    char *jwks;      /* {"keys":[jwk]} */
    char *jwk;       /* the one JWK */
    char pem[4096];  /* public key PEM */
    char tok[2048];  /* a good token */
    cjose_jwk_t *cj; /* imported once, as a real integration would */
    json_t *jj;
} keyset_t;

static id_signer_t *signer_of(EVP_PKEY *pk)
{
    char path[] = "/tmp/fg-jose-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    char err[300];
    id_signer_t *s = id_signer_open(path, err, sizeof(err));
    unlink(path);
    return s;
}

static void ks_init(keyset_t *k, const char *alg)
{
    k->alg = alg;
    k->pk = strcmp(alg, "RS256") == 0   ? EVP_RSA_gen(2048)
            : strcmp(alg, "ES256") == 0 ? EVP_EC_gen("P-256")
                                        : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    k->s = signer_of(k->pk);
    k->jwks = id_signer_jwks_json(k->s);
    json_t *o = json_loads(k->jwks, 0, NULL);
    k->jwk = json_dumps(json_array_get(json_object_get(o, "keys"), 0), JSON_COMPACT);
    json_decref(o);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k->pk);
    int n = BIO_read(b, k->pem, sizeof(k->pem) - 1);
    k->pem[n > 0 ? n : 0] = '\0';
    BIO_free(b);
    int64_t now = (int64_t)time(NULL);
    id_claims_t cl = {.user = "alice", .iat = now, .exp = now + 3600};
    char err[200];
    id_signer_mint(k->s, &cl, k->tok, sizeof(k->tok), err, sizeof(err));
    cjose_err e;
    k->cj = cjose_jwk_import(k->jwk, strlen(k->jwk), &e);
    k->jj = json_loads(k->jwk, 0, NULL);
}

/* header.payload.signature with header h, the claims of `like`, and sig (may be "") */
static void forge(char *out, size_t outlen, const char *h, const char *like, const char *key,
                  size_t keylen, bool hmac)
{
    char hb[512];
    id_b64url_encode(h, strlen(h), hb);
    const char *p = strchr(like, '.') + 1;
    size_t pl = (size_t)(strchr(p, '.') - p);
    int n = snprintf(out, outlen, "%s.%.*s.", hb, (int)pl, p);
    if (hmac) {
        unsigned char mac[32];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)out, (size_t)n - 1, mac, &ml);
        id_b64url_encode(mac, ml, out + n);
    }
}

/*---- each library's "verify this compact token with this key" ----*/

static bool v_cjose(const keyset_t *k, const char *tok)
{
    cjose_err e;
    cjose_jws_t *jws = k->cj ? cjose_jws_import(tok, strlen(tok), &e) : NULL;
    bool ok = jws && cjose_jws_verify(jws, k->cj, &e);
    cjose_jws_release(jws);
    return ok;
}

static bool v_jose(const keyset_t *k, const char *tok)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2)
        return false;
    json_t *jws = json_pack("{s:s%,s:s%,s:s}", "protected", tok, (size_t)(d1 - tok), "payload",
                            d1 + 1, (size_t)(d2 - d1 - 1), "signature", d2 + 1);
    bool ok = jws && k->jj && jose_jws_ver(NULL, jws, NULL, k->jj, false);
    json_decref(jws);
    return ok;
}

static bool v_jwt(const keyset_t *k, const char *tok)
{
    jwt_t *j = NULL;
    int rc = jwt_decode(&j, tok, (const unsigned char *)k->pem, (int)strlen(k->pem));
    jwt_free(j);
    return rc == 0;
}

static id_verifier_t *ours_v[3];

static bool v_ours_i(int i, const char *tok)
{
    id_result_t r;
    return id_verify(ours_v[i], tok, strlen(tok), (int64_t)time(NULL), &r) == ID_OK;
}

static const char *names[] = {"ours", "cjose", "jose", "jwt"};

static bool verify(int lib, int ki, const keyset_t *k, const char *tok)
{
    switch (lib) {
    case 0:
        return v_ours_i(ki, tok);
    case 1:
        return v_cjose(k, tok);
    case 2:
        return v_jose(k, tok);
    default:
        return v_jwt(k, tok);
    }
}

static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    keyset_t ks[3];
    const char *algs[] = {"RS256", "ES256", "EdDSA"};
    for (int i = 0; i < 3; i++) {
        ks_init(&ks[i], algs[i]);
        id_jwks_t *set = id_signer_jwks(ks[i].s);
        id_config_t c;
        id_config_defaults(&c);
        char err[300];
        ours_v[i] = id_verifier_new(&c, set, err, sizeof(err));
        id_jwks_unref(set);
    }
    if (argc > 2 && strcmp(argv[1], "allocs") == 0) {
        int lib = 0;
        for (int l = 0; l < 4; l++)
            if (strcmp(argv[2], names[l]) == 0)
                lib = l;
        int n = strcmp(argv[2], "base") == 0 ? 0 : 1000;
        for (int i = 0; i < n; i++)
            verify(lib, 0, &ks[0], ks[0].tok);
        return 0;
    }
    char none[2048], conf_jwk[2048], conf_pem[2048];
    char h[256];
    forge(none, sizeof(none), "{\"alg\":\"none\",\"typ\":\"JWT\"}", ks[0].tok, NULL, 0, false);
    snprintf(h, sizeof(h), "{\"alg\":\"HS256\",\"kid\":\"%s\"}", id_signer_kid(ks[0].s));
    forge(conf_jwk, sizeof(conf_jwk), h, ks[0].tok, ks[0].jwk, strlen(ks[0].jwk), true);
    forge(conf_pem, sizeof(conf_pem), h, ks[0].tok, ks[0].pem, strlen(ks[0].pem), true);
    printf("%-30s %10s %10s %10s %10s\n", "token (must: ok / refused)", "ours", "cjose", "jose",
           "libjwt");
    struct {
        const char *what;
        int ki;
        const char *tok;
    } rows[] = {
        {"RS256 good (ok)", 0, ks[0].tok},
        {"ES256 good (ok)", 1, ks[1].tok},
        {"EdDSA good (ok)", 2, ks[2].tok},
        {"alg none (refused)", 0, none},
        {"HS256 MAC=RSA JWK (refused)", 0, conf_jwk},
        {"HS256 MAC=RSA PEM (refused)", 0, conf_pem},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        printf("%-30s", rows[r].what);
        for (int l = 0; l < 4; l++)
            printf(" %10s", verify(l, rows[r].ki, &ks[rows[r].ki], rows[r].tok) ? "accepted"
                                                                              : "refused");
        printf("\n");
    }
    printf("\nCPU us per verification (keys imported once; libjwt's API parses the PEM key on "
           "every call; ours also checks exp/iss/aud/sub, the others only the signature)\n");
    printf("%-8s %10s %10s %10s %10s\n", "alg", "ours", "cjose", "jose", "libjwt");
    for (int i = 0; i < 2; i++) {
        printf("%-8s", algs[i]);
        for (int l = 0; l < 4; l++) {
            if (!verify(l, i, &ks[i], ks[i].tok)) {
                printf(" %10s", "n/a");
                continue;
            }
            int n = i == 0 ? 2000 : 500;
            double best = 1e18;
            for (int round = 0; round < 5; round++) {
                double t0 = cpu_us();
                for (int k = 0; k < n; k++)
                    verify(l, i, &ks[i], ks[i].tok);
                double per = (cpu_us() - t0) / n;
                if (per < best)
                    best = per;
            }
            printf(" %10.1f", best);
        }
        printf("\n");
    }
    return 0;
}
