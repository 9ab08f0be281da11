/*
 * JWK sets: parsed once per load or refresh into OpenSSL public keys, then
 * immutable and shared by reference count.
 */
#include "identity/id_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void key_clear(id_key_t *k)
{
    for (int i = 0; i < ID_CTX_POOL; i++) {
        EVP_PKEY_CTX_free(k->pool[i].ctx);
        k->pool[i].ctx = NULL;
    }
    EVP_PKEY_free(k->pk);
    k->pk = NULL;
}

id_jwks_t *id_jwks_ref(id_jwks_t *ks)
{
    if (ks)
        atomic_fetch_add(&ks->refs, 1);
    return ks;
}

void id_jwks_unref(id_jwks_t *ks)
{
    if (!ks || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_clear(&ks->keys[i]);
    free(ks);
}

size_t id_jwks_count(const id_jwks_t *ks)
{
    return ks ? ks->n : 0;
}

size_t id_jwks_refused(const id_jwks_t *ks)
{
    return ks ? ks->refused : 0;
}

bool id_jwks_equal(const id_jwks_t *a, const id_jwks_t *b)
{
    if (!a || !b)
        return a == b;
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->keys[i].fp, b->keys[i].fp, sizeof(a->keys[i].fp)) != 0)
            return false;
    return true;
}

/* Decodes member `name` of `k` (base64url) into buf; returns the length or -1. */
static long b64_member(json_t *k, const char *name, unsigned char *buf, size_t buflen)
{
    json_t *v = json_object_get(k, name);
    if (!json_is_string(v))
        return -1;
    return id_b64url_decode(json_string_value(v), json_string_length(v), buf, buflen);
}

/* parse_key's answers: a key taken, skipped (not ours), refused on its own
 * (weak or forged: counted, the rest of the set stands), or an error that
 * refuses the set (malformed JSON of a known key type). */
enum { KEY_ERR = -1, KEY_SKIP = 0, KEY_OK = 1, KEY_WEAK = 2 };

/* EVP_PKEY_public_check on pk: the RSA modulus odd and composite-looking, the
 * exponent in range; the EC point on its curve and not infinity. */
static bool public_check(EVP_PKEY *pk)
{
    EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    bool ok = chk && EVP_PKEY_public_check(chk) > 0;
    EVP_PKEY_CTX_free(chk);
    return ok;
}

/*
 * An RSA JWK. The modulus counts by BN_num_bits (a 2041-bit n padded into 256
 * bytes is 2041 bits), 2048..8192. The exponent is odd and 2^16 < e < 2^256,
 * FIPS 186-5 A.1.1's rule: e = 1 makes every signature verify (s^1 = m),
 * an even e (2, Rabin) is not an RSA permutation, and a small odd e invites
 * the low-exponent forgeries of a lax PKCS#1 parser; every issuer we know of
 * publishes 65537 ("AQAB"). Sets *rc to KEY_OK, KEY_WEAK or KEY_ERR.
 */
static EVP_PKEY *rsa_key(json_t *k, EVP_MD_CTX *fp, int *rc, char *err, size_t errlen)
{
    unsigned char n[1024], e[16];
    long nl = b64_member(k, "n", n, sizeof(n)), el = b64_member(k, "e", e, sizeof(e));
    *rc = KEY_ERR;
    if (nl < 0 || el < 1) {
        snprintf(err, errlen, "RSA key without valid base64url n and e");
        return NULL;
    }
    size_t skip = 0;
    while (skip < (size_t)nl && n[skip] == 0)
        skip++;
    EVP_DigestUpdate(fp, n + skip, (size_t)nl - skip);
    EVP_DigestUpdate(fp, e, (size_t)el);
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    int bits = bn ? BN_num_bits(bn) : 0, ebits = be ? BN_num_bits(be) : 0;
    if (!bn || !be) {
        snprintf(err, errlen, "out of memory");
    } else if (bits < 2048 || bits > 8192) {
        *rc = KEY_WEAK;
        snprintf(err, errlen, "RSA key of %d bits (2048..8192 accepted)", bits);
    } else if (!BN_is_odd(be) || ebits <= 16 || ebits > 256) {
        *rc = KEY_WEAK;
        snprintf(err, errlen, "RSA exponent of %d bits%s (odd, 2^16 < e < 2^256 accepted)",
                 ebits, BN_is_odd(be) ? "" : ", even");
    } else if ((bld = OSSL_PARAM_BLD_new()) && (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) &&
               OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
               OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
               (params = OSSL_PARAM_BLD_to_param(bld)) && EVP_PKEY_fromdata_init(ctx) > 0 &&
               EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) > 0) {
        if (public_check(pk)) {
            *rc = KEY_OK;
        } else {
            *rc = KEY_WEAK;
            snprintf(err, errlen, "RSA key EVP_PKEY_public_check refuses");
            EVP_PKEY_free(pk);
            pk = NULL;
        }
    } else {
        snprintf(err, errlen, "RSA key OpenSSL does not accept");
        pk = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pk;
}

static EVP_PKEY *ec_key(json_t *k, int kt, EVP_MD_CTX *fp, char *err, size_t errlen)
{
    size_t cl = kt == ID_KT_EC256 ? 32 : 48;
    unsigned char pt[1 + 2 * 48];
    long xl = b64_member(k, "x", pt + 1, 48), yl = b64_member(k, "y", pt + 1 + cl, 48);
    if (xl != (long)cl || yl != (long)cl) {
        snprintf(err, errlen, "EC key without %zu-byte base64url x and y", cl);
        return NULL;
    }
    pt[0] = 0x04;
    EVP_DigestUpdate(fp, pt, 1 + 2 * cl);
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 kt == ID_KT_EC256 ? "P-256" : "P-384", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * cl);
    params[2] = OSSL_PARAM_construct_end();
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        snprintf(err, errlen, "EC point not on the curve");
        pk = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    if (pk && !public_check(pk)) {
        /* fromdata decodes the point; check it is on the curve and not infinity */
        snprintf(err, errlen, "EC point not on the curve");
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    return pk;
}

/* The encodings of Ed25519's points of small order (orders 1, 2, 4, 8: the
 * identity among them), with the sign bit (bit 255) ignored, which also
 * covers the non-canonical y = p, p + 1, p - 1: libsodium's blocklist
 * (ge25519_has_small_order). With such a public key A, [k]A vanishes for every
 * (or every 8th) message, and R = identity, S = 0 verifies: anyone forges. */
static const unsigned char ed_small_order[][32] = {
    {0x00},
    {0x01},
    {0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
     0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},
    {0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
     0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
};

static bool ed_small(const unsigned char x[32])
{
    for (size_t j = 0; j < sizeof(ed_small_order) / sizeof(ed_small_order[0]); j++) {
        unsigned char c = (unsigned char)((x[31] & 0x7f) ^ ed_small_order[j][31]);
        for (size_t i = 0; i < 31; i++)
            c |= (unsigned char)(x[i] ^ ed_small_order[j][i]);
        if (!c)
            return true;
    }
    return false;
}

static EVP_PKEY *okp_key(json_t *k, EVP_MD_CTX *fp, int *rc, char *err, size_t errlen)
{
    unsigned char x[33];
    *rc = KEY_ERR;
    if (b64_member(k, "x", x, sizeof(x)) != 32) {
        snprintf(err, errlen, "Ed25519 key without a 32-byte base64url x");
        return NULL;
    }
    EVP_DigestUpdate(fp, x, 32);
    if (ed_small(x)) {
        *rc = KEY_WEAK;
        snprintf(err, errlen, "Ed25519 key is a point of small order (it verifies forgeries)");
        return NULL;
    }
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
    if (!pk) {
        snprintf(err, errlen, "Ed25519 key OpenSSL does not accept");
    } else if (!public_check(pk)) {
        *rc = KEY_WEAK;
        snprintf(err, errlen, "Ed25519 key EVP_PKEY_public_check refuses");
        EVP_PKEY_free(pk);
        pk = NULL;
    } else {
        *rc = KEY_OK;
    }
    return pk;
}

static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

/* One JWK. Returns KEY_OK (filled *out), KEY_SKIP (not a signature key we use),
 * KEY_WEAK (refused on its own, err says why) or KEY_ERR (err). */
static int parse_key(json_t *k, id_key_t *out, char *err, size_t errlen)
{
    if (!json_is_object(k)) {
        snprintf(err, errlen, "a key is not a JSON object");
        return -1;
    }
    for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
        if (json_object_get(k, private_members[i])) {
            snprintf(err, errlen, "a key has the private member \"%s\": publish public keys only",
                     private_members[i]);
            return -1;
        }
    json_t *kid = json_object_get(k, "kid"), *use = json_object_get(k, "use");
    json_t *alg = json_object_get(k, "alg"), *kty = json_object_get(k, "kty");
    if (kid && (!json_is_string(kid) ||
                !id_kid_valid(json_string_value(kid), json_string_length(kid)))) {
        snprintf(err, errlen, "a kid is not 1..%d of A-Z a-z 0-9 . _ ~ + = : -", ID_KID_MAX);
        return -1;
    }
    if (!json_is_string(kty)) {
        snprintf(err, errlen, "a key has no kty");
        return -1;
    }
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return 0; /* an encryption key: not ours */
    const char *ty = json_string_value(kty);
    const char *crv = json_string_value(json_object_get(k, "crv"));
    int kt;
    if (strcmp(ty, "RSA") == 0)
        kt = ID_KT_RSA;
    else if (strcmp(ty, "EC") == 0 && crv && strcmp(crv, "P-256") == 0)
        kt = ID_KT_EC256;
    else if (strcmp(ty, "EC") == 0 && crv && strcmp(crv, "P-384") == 0)
        kt = ID_KT_EC384;
    else if (strcmp(ty, "OKP") == 0 && crv && strcmp(crv, "Ed25519") == 0)
        kt = ID_KT_ED25519;
    else
        return 0; /* oct, EC P-521, X25519, ...: never used to verify */
    memset(out, 0, sizeof(*out));
    out->kt = kt;
    for (int i = 0; i < ID_CTX_POOL; i++) {
        atomic_init(&out->pool[i].busy, false);
        out->pool[i].alg = -1;
    }
    if (alg) {
        int a = json_is_string(alg) ? id__alg_find(json_string_value(alg), json_string_length(alg))
                                    : -1;
        if (a < 0 || id__algs[a].kt != kt) {
            snprintf(err, errlen, "a key's alg does not fit its kty");
            return -1;
        }
        snprintf(out->alg, sizeof(out->alg), "%s", id__algs[a].name);
    }
    if (kid)
        snprintf(out->kid, sizeof(out->kid), "%s", json_string_value(kid));
    EVP_MD_CTX *fp = EVP_MD_CTX_new();
    if (!fp || EVP_DigestInit_ex(fp, EVP_sha256(), NULL) <= 0) {
        EVP_MD_CTX_free(fp);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    EVP_DigestUpdate(fp, out->kid, strlen(out->kid) + 1);
    EVP_DigestUpdate(fp, out->alg, strlen(out->alg) + 1);
    EVP_DigestUpdate(fp, &kt, sizeof(kt));
    int rc = KEY_ERR;
    if (kt == ID_KT_RSA) {
        out->pk = rsa_key(k, fp, &rc, err, errlen);
    } else if (kt == ID_KT_ED25519) {
        out->pk = okp_key(k, fp, &rc, err, errlen);
    } else {
        out->pk = ec_key(k, kt, fp, err, errlen);
        rc = out->pk ? KEY_OK : KEY_ERR;
    }
    unsigned int fl = 0;
    EVP_DigestFinal_ex(fp, out->fp, &fl);
    EVP_MD_CTX_free(fp);
    return rc;
}

id_jwks_t *id_jwks_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    char why[160] = "";
    if (len > ID_JWKS_MAX_BYTES) {
        snprintf(err, errlen, "JWK set of %zu bytes (at most %d)", len, ID_JWKS_MAX_BYTES);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "JWK set is not JSON: %s at line %d column %d", jerr.text, jerr.line,
                 jerr.column);
        return NULL;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "JWK set has no \"keys\" array");
        json_decref(root);
        return NULL;
    }
    size_t n = json_array_size(keys);
    if (n > ID_JWKS_MAX_KEYS) {
        snprintf(err, errlen, "JWK set of %zu keys (at most %d)", n, ID_JWKS_MAX_KEYS);
        json_decref(root);
        return NULL;
    }
    id_jwks_t *ks = cm_xcalloc(1, sizeof(*ks) + n * sizeof(id_key_t));
    atomic_init(&ks->refs, 1);
    for (size_t i = 0; i < n; i++) {
        int rc = parse_key(json_array_get(keys, i), &ks->keys[ks->n], why, sizeof(why));
        if (rc == KEY_ERR) {
            snprintf(err, errlen, "JWK set key %zu: %s", i, why);
            goto fail;
        }
        if (rc == KEY_WEAK) {
            /* one weak or forging key never takes the others down with it */
            cm_log_warn("id", "JWK refused", "key=%zu kid=\"%s\" why=\"%s\"", i,
                        ks->keys[ks->n].kid, why);
            key_clear(&ks->keys[ks->n]);
            ks->refused++;
            continue;
        }
        if (rc == KEY_SKIP)
            continue;
        for (size_t j = 0; j < ks->n; j++)
            if (ks->keys[ks->n].kid[0] && strcmp(ks->keys[j].kid, ks->keys[ks->n].kid) == 0) {
                snprintf(err, errlen, "JWK set has two keys with kid \"%s\"", ks->keys[j].kid);
                ks->n++;
                goto fail;
            }
        ks->n++;
    }
    if (!ks->n) {
        snprintf(err, errlen,
                 "JWK set has no usable signature key (RSA, EC P-256/P-384, Ed25519)%s",
                 ks->refused ? "; weak keys refused" : "");
        goto fail;
    }
    json_decref(root);
    return ks;
fail:
    json_decref(root);
    id_jwks_unref(ks);
    return NULL;
}

id_jwks_t *id_jwks_load(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size > ID_JWKS_MAX_BYTES) {
        snprintf(err, errlen, "%s: %lld bytes (a JWK set is at most %d)", path,
                 (long long)st.st_size, ID_JWKS_MAX_BYTES);
        close(fd);
        return NULL;
    }
    char *buf = cm_xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    char why[200];
    id_jwks_t *ks = id_jwks_parse(buf, got, why, sizeof(why));
    if (!ks)
        snprintf(err, errlen, "%s: %s", path, why);
    free(buf);
    return ks;
}

/*---- exporting a public key as a JWK ----*/

int id__pkey_kt(EVP_PKEY *pk)
{
    if (EVP_PKEY_is_a(pk, "RSA"))
        return EVP_PKEY_get_bits(pk) >= 2048 ? ID_KT_RSA : -1;
    if (EVP_PKEY_is_a(pk, "ED25519"))
        return ID_KT_ED25519;
    if (EVP_PKEY_is_a(pk, "EC")) {
        char g[32];
        size_t gl;
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof(g), &gl))
            return -1;
        if (strcmp(g, "prime256v1") == 0 || strcmp(g, "P-256") == 0)
            return ID_KT_EC256;
        if (strcmp(g, "secp384r1") == 0 || strcmp(g, "P-384") == 0)
            return ID_KT_EC384;
    }
    return -1;
}

static bool bn_b64(EVP_PKEY *pk, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    if (!EVP_PKEY_get_bn_param(pk, param, &bn))
        return false;
    int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    if (n <= 0)
        return false;
    id_b64url_encode(buf, (size_t)n, out);
    return true;
}

char *id__jwk_json(EVP_PKEY *pk, int kt, const char *kid, const char *alg)
{
    char a[1400], b[100];
    json_t *j = json_object();
    if (kt == ID_KT_RSA) {
        if (!bn_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0, a) || !bn_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0, b))
            goto fail;
        json_object_set_new(j, "kty", json_string("RSA"));
        json_object_set_new(j, "n", json_string(a));
        json_object_set_new(j, "e", json_string(b));
    } else if (kt == ID_KT_EC256 || kt == ID_KT_EC384) {
        size_t cl = kt == ID_KT_EC256 ? 32 : 48;
        if (!bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, cl, a) ||
            !bn_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, cl, b))
            goto fail;
        json_object_set_new(j, "kty", json_string("EC"));
        json_object_set_new(j, "crv", json_string(kt == ID_KT_EC256 ? "P-256" : "P-384"));
        json_object_set_new(j, "x", json_string(a));
        json_object_set_new(j, "y", json_string(b));
    } else if (kt == ID_KT_ED25519) {
        unsigned char raw[32];
        size_t rl = sizeof(raw);
        if (!EVP_PKEY_get_raw_public_key(pk, raw, &rl) || rl != 32)
            goto fail;
        id_b64url_encode(raw, 32, a);
        json_object_set_new(j, "kty", json_string("OKP"));
        json_object_set_new(j, "crv", json_string("Ed25519"));
        json_object_set_new(j, "x", json_string(a));
    } else {
        goto fail;
    }
    json_object_set_new(j, "use", json_string("sig"));
    if (alg)
        json_object_set_new(j, "alg", json_string(alg));
    if (kid)
        json_object_set_new(j, "kid", json_string(kid));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
fail:
    json_decref(j);
    return NULL;
}

id_jwks_t *id__jwks_from_pkey(EVP_PKEY *pk, int kt, const char *kid, const char *alg)
{
    char *k = id__jwk_json(pk, kt, kid, alg);
    if (!k)
        return NULL;
    size_t n = strlen(k) + 16;
    char *set = cm_xmalloc(n);
    snprintf(set, n, "{\"keys\":[%s]}", k);
    char err[200];
    id_jwks_t *ks = id_jwks_parse(set, strlen(set), err, sizeof(err));
    free(set);
    free(k);
    return ks;
}
