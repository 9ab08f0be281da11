/*
 * Fuzz target: the buyer token verifier (identity/id.h: id_verify and the
 * per-worker cache in front of it), against a fixed public key set (an ES256
 * and an EdDSA key whose private halves are not kept: the seed corpus holds
 * tokens they signed, corpus/token/). Promises: never crashes, whatever the
 * bytes; the outcome is one of the named ones; ID_OK only with a user and a
 * person of the id alphabet and an exp not past the leeway; the cache gives
 * the same verdict as the verifier, twice in a row; a header segment that
 * decodes re-encodes to the same text (one encoding per byte string).
 */
#include "identity/id.h"
#include "tests/fuzz/fuzz.h"

#include <stdbool.h>
#include <string.h>

#define NOW 1800000000LL

static const char jwks[] =
    "{\"keys\":[{\"alg\":\"ES256\",\"crv\":\"P-256\",\"kid\":\"F9z8L5HXW-5AjaaNkY4IVTK8clN2Z1LRrl"
    "UR0BxlmuE\",\"kty\":\"EC\",\"use\":\"sig\",\"x\":\"YRjbXk5Ih3bwvXk--Mr318-AaWbKYMApU90Kv4POP"
    "FI\",\"y\":\"FDdB-Na7jMdQH0hdwl21ZQCIHusyGbT029E5-7Mjp0A\"},{\"alg\":\"EdDSA\",\"crv\":\"Ed2"
    "5519\",\"kid\":\"aXg_4Fa-ALoLtBkDWwRuQlYiuse2Xj-KxAYwNY_FDGQ\",\"kty\":\"OKP\",\"use\":\"sig"
    "\",\"x\":\"gE5fPEahEdoKsahyZVayv5KnB2waqxqs0lqXYzzOrP4\"}]}";

static id_verifier_t *v;
static id_cache_t *cache;

static void init(void)
{
    char err[300];
    id_jwks_t *ks = id_jwks_parse(jwks, strlen(jwks), err, sizeof(err));
    FZ_CHECK(ks);
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.person_claim, sizeof(c.person_claim), "person");
    v = id_verifier_new(&c, ks, err, sizeof(err));
    FZ_CHECK(v);
    id_jwks_unref(ks);
    cache = id_cache_new(64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!v)
        init();
    if (size > 20000)
        return 0;
    const char *t = (const char *)data;
    id_result_t r, rc1, rc2;
    int a = id_verify(v, t, size, NOW, &r);
    FZ_CHECK(a >= 0 && a < ID__OUTCOME_COUNT);
    if (a == ID_OK) {
        FZ_CHECK(id_user_valid(r.user, strlen(r.user), ID_USER_MAX));
        FZ_CHECK(id_user_valid(r.person, strlen(r.person), ID_USER_MAX));
        FZ_CHECK(r.exp > NOW - 600);
    }
    int b = id_verify_cached(v, cache, t, size, NOW, &rc1);
    int c = id_verify_cached(v, cache, t, size, NOW, &rc2);
    FZ_CHECK(a == b && b == c);
    if (a == ID_OK)
        FZ_CHECK(strcmp(r.user, rc2.user) == 0 && strcmp(r.person, rc2.person) == 0 &&
                 r.exp == rc2.exp);
    const char *dot = memchr(t, '.', size);
    size_t hl = dot ? (size_t)(dot - t) : size;
    if (hl < 4096) {
        unsigned char raw[4096];
        char back[6000];
        long n = id_b64url_decode(t, hl, raw, sizeof(raw));
        if (n >= 0) {
            size_t m = id_b64url_encode(raw, (size_t)n, back);
            FZ_CHECK(m == hl && memcmp(back, t, hl) == 0);
        }
    }
    return 0;
}
