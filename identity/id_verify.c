/*
 * Token verification: a compact JWS checked with OpenSSL 3's EVP calls, its
 * JSON read with jansson (JSON_REJECT_DUPLICATES), every rule of RFC 8725
 * ("JWT best current practices") that applies to a bearer token enforced
 * here rather than left to a library.
 *
 * Why no JOSE library. The Debian 12 candidates against this file, same keys
 * and tokens (bench/jose_compare.c; its header has the build and run
 * commands; AMD EPYC, 2 cores, OpenSSL 3.0.19, CPU time):
 *
 *                                  ours     libcjose 0.6.2  libjose 11  libjwt 1.10.2
 *   RS256 / ES256 good token       ok       ok              ok          ok
 *   EdDSA good token               ok       unsupported     unsupported unsupported
 *   alg none                       refused  refused         refused     refused
 *   HS256, MAC key = RSA pub PEM   refused  refused         refused     ACCEPTED
 *   RS256 us per verification      28.4     36.3            70.2        491.7
 *   ES256 us per verification      80.7     78.6            163.7       572.6
 *   heap allocations per RS256     52       41              136         3,044
 *
 *  - None of them verifies EdDSA (Ed25519), one of the three default algorithms.
 *  - libjwt reads no JWK set (a PEM key per call, parsed every time: the cost
 *    above) and takes the algorithm from the token: an HS256 token whose HMAC
 *    key is the RSA public key's PEM verifies (algorithm confusion).
 *  - libcjose checks the key type per algorithm and costs about what this file
 *    does for the signature alone, but has no key set or kid lookup and checks
 *    no claim; libjose (latchset) costs twice as much.
 *  - Whatever wraps it, the allow-list, the key type per algorithm, kid rules,
 *    crit and the claims must be ours (our column includes them); what is left
 *    for a library is the signature call itself: one EVP_PKEY_verify here,
 *    on a context kept per key (id_internal.h, ID_CTX_POOL).
 * Per verification this file adds base64url, two small jansson trees and the
 * checks to OpenSSL's signature check: bench/identity.py prints both.
 */
#include "identity/id_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Digests fetched once: an EVP_sha256() passed to DigestVerifyInit is fetched
 * from the provider on every call. */
static EVP_MD *md_sha256, *md_sha384, *md_sha512;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_init(void)
{
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    md_sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
}

static const EVP_MD *md_get(const char *name)
{
    if (!name)
        return NULL;
    if (strcmp(name, "SHA256") == 0)
        return md_sha256;
    if (strcmp(name, "SHA384") == 0)
        return md_sha384;
    return md_sha512;
}

static int read_secret(const char *path, unsigned char **out, size_t *outlen, char *err,
                       size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "identity.hmac_secret_file %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char buf[4097];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 0 || n > 4096) {
        snprintf(err, errlen, "identity.hmac_secret_file %s: unreadable or over 4096 bytes", path);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n < 32) {
        snprintf(err, errlen,
                 "identity.hmac_secret_file %s: %zd bytes, HS256 needs a secret of at least 32",
                 path, n);
        return -1;
    }
    *out = cm_xmalloc((size_t)n);
    memcpy(*out, buf, (size_t)n);
    *outlen = (size_t)n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

id_verifier_t *id_verifier_new(const id_config_t *c, id_jwks_t *default_keys, char *err,
                               size_t errlen)
{
    pthread_once(&md_once, md_init);
    if (id_config_validate(c, err, errlen) < 0)
        return NULL;
    id_verifier_t *v = cm_xcalloc(1, sizeof(*v));
    v->cfg = *c;
    pthread_mutex_init(&v->mu, NULL);
    atomic_init(&v->gen, 1);
    atomic_init(&v->next_refetch_ms, 0);
    atomic_init(&v->fail_since_s, 0);
    id__algs_parse(c->algorithms, &v->allowed, err, errlen);
    id__audiences(c->audience, v->aud, &v->n_aud, err, errlen);
    id__elig_names(c->eligibility_claims, v->elig, &v->n_elig, err, errlen);
    if (c->hmac_secret_file[0] &&
        read_secret(c->hmac_secret_file, &v->hmac, &v->hmac_len, err, errlen) < 0)
        goto fail;
    if (c->jwks_file[0]) {
        char why[300];
        if (!(v->fixed = id_jwks_load(c->jwks_file, why, sizeof(why)))) {
            snprintf(err, errlen, "identity.jwks_file: %s", why);
            goto fail;
        }
    } else if (!c->jwks_url[0] && default_keys) {
        v->fixed = id_jwks_ref(default_keys);
    }
    if (c->jwks_url[0] && c->jwks_cache_file[0] && access(c->jwks_cache_file, F_OK) == 0) {
        char why[300];
        v->fetched = id_jwks_load(c->jwks_cache_file, why, sizeof(why));
        if (!v->fetched)
            cm_log_warn("id", "identity.jwks_cache_file ignored", "why=\"%s\"", why);
    }
    if (!v->fixed && !c->jwks_url[0] && !v->hmac) {
        snprintf(err, errlen,
                 "identity: no key source (set identity.jwks_file, identity.jwks_url or "
                 "identity.hmac_secret_file, or use the data dir's key)");
        goto fail;
    }
    return v;
fail:
    id_verifier_free(v);
    return NULL;
}

void id_verifier_free(id_verifier_t *v)
{
    if (!v)
        return;
    id_jwks_unref(v->fixed);
    id_jwks_unref(v->fetched);
    if (v->hmac) {
        OPENSSL_cleanse(v->hmac, v->hmac_len);
        free(v->hmac);
    }
    pthread_mutex_destroy(&v->mu);
    free(v);
}

static id_jwks_t *fetched_get(id_verifier_t *v)
{
    pthread_mutex_lock(&v->mu);
    id_jwks_t *ks = id_jwks_ref(v->fetched);
    pthread_mutex_unlock(&v->mu);
    return ks;
}

bool id_verifier_set_keys(id_verifier_t *v, id_jwks_t *ks)
{
    id_jwks_ref(ks);
    pthread_mutex_lock(&v->mu);
    id_jwks_t *old = v->fetched;
    bool changed = !id_jwks_equal(old, ks);
    v->fetched = ks;
    atomic_store(&v->fail_since_s, 0);
    if (changed)
        atomic_fetch_add(&v->gen, 1);
    pthread_mutex_unlock(&v->mu);
    id_jwks_unref(old);
    return changed;
}

void id_verifier_refresh_failed(id_verifier_t *v, int64_t now_s)
{
    int_fast64_t zero = 0;
    atomic_compare_exchange_strong(&v->fail_since_s, &zero, now_s > 0 ? now_s : 1);
}

bool id_verifier_stale(id_verifier_t *v, int64_t now_s)
{
    int_fast64_t since = atomic_load_explicit(&v->fail_since_s, memory_order_relaxed);
    return since && v->cfg.jwks_max_stale_s && now_s - since > (int64_t)v->cfg.jwks_max_stale_s;
}

uint64_t id_verifier_keys_gen(const id_verifier_t *v)
{
    return atomic_load_explicit(&((id_verifier_t *)v)->gen, memory_order_acquire);
}

size_t id_verifier_key_count(id_verifier_t *v)
{
    id_jwks_t *f = fetched_get(v);
    size_t n = id_jwks_count(v->fixed) + id_jwks_count(f);
    id_jwks_unref(f);
    return n;
}

/* An unknown kid asks for a refetch; one ask per jwks_min_refetch_s is granted. */
static void ask_refetch(id_verifier_t *v)
{
    if (!v->cfg.jwks_url[0])
        return;
    int64_t now = (int64_t)cm_mono_ms();
    int_fast64_t next = atomic_load(&v->next_refetch_ms);
    if (now < next ||
        !atomic_compare_exchange_strong(&v->next_refetch_ms, &next,
                                        now + (int64_t)v->cfg.jwks_min_refetch_s * 1000)) {
        atomic_fetch_add_explicit(&v->refetch_denied, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&v->refetch_granted, 1, memory_order_relaxed);
    /* under mu: the fetcher sets and clears wake under it (at most one call per period) */
    pthread_mutex_lock(&v->mu);
    if (v->wake)
        v->wake(v->wake_arg);
    pthread_mutex_unlock(&v->mu);
}

/* With a kid: the key of that kid in ks. Without: the last key of the alg's type, counted in *candidates. */
static const id_key_t *key_find(const id_jwks_t *ks, const id_alg_t *a, const char *kid,
                                size_t kidlen, int *candidates)
{
    if (!ks)
        return NULL;
    const id_key_t *hit = NULL;
    for (size_t i = 0; i < ks->n; i++) {
        const id_key_t *k = &ks->keys[i];
        if (kid) {
            if (strlen(k->kid) == kidlen && memcmp(k->kid, kid, kidlen) == 0)
                return k;
        } else if (k->kt == a->kt) {
            hit = k;
            (*candidates)++;
        }
    }
    return hit;
}

/* One DER INTEGER of the unsigned big-endian x[0..n) at p: the shortest form (leading
 * zero bytes dropped, one kept for zero, a 0x00 prefixed when the high bit is set),
 * as i2d of a BIGNUM writes it. Returns the bytes written (at most n + 3). */
static size_t der_uint(const unsigned char *x, size_t n, unsigned char *p)
{
    while (n > 1 && x[0] == 0) {
        x++;
        n--;
    }
    size_t pad = x[0] & 0x80 ? 1 : 0;
    p[0] = 0x02;
    p[1] = (unsigned char)(n + pad);
    p[2] = 0;
    memcpy(p + 2 + pad, x, n);
    return 2 + pad + n;
}

/* SEQUENCE { r, s } (id_internal.h): cl <= 48 keeps every length in DER's one-byte
 * short form; no ECDSA_SIG, BIGNUMs or their allocations (test_id_verify.c compares
 * it with i2d_ECDSA_SIG). */
size_t id__ecdsa_sig_der(const unsigned char *rs, size_t cl, unsigned char *der)
{
    size_t n = der_uint(rs, cl, der + 2);
    n += der_uint(rs + cl, cl, der + 2 + n);
    der[0] = 0x30;
    der[1] = (unsigned char)n;
    return n + 2;
}

static bool verify_sig(const id_key_t *k, const id_alg_t *a, const unsigned char *sig,
                       size_t siglen, const char *msg, size_t msglen)
{
    unsigned char der[160];
    const unsigned char *s = sig;
    size_t sl = siglen;
    if (k->kt == ID_KT_EC256 || k->kt == ID_KT_EC384) {
        /* JWS carries r || s (RFC 7518 3.4); OpenSSL wants a DER ECDSA-Sig-Value */
        size_t cl = k->kt == ID_KT_EC256 ? 32 : 48;
        if (siglen != 2 * cl)
            return false;
        s = der;
        sl = id__ecdsa_sig_der(sig, cl, der);
    } else if (k->kt == ID_KT_ED25519 && siglen != 64) {
        return false;
    }
    if (k->kt == ID_KT_ED25519) {
        /* EdDSA signs the message itself (no prehash): one-shot DigestVerify */
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k->pk) > 0 &&
                  EVP_DigestVerify(ctx, s, sl, (const unsigned char *)msg, msglen) == 1;
        EVP_MD_CTX_free(ctx);
        return ok;
    }
    unsigned char dg[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    if (EVP_Digest(msg, msglen, dg, &dl, md_get(a->md), NULL) <= 0)
        return false;
    int ai = (int)(a - id__algs);
    id_ctx_slot_t *slot = NULL;
    for (int i = 0; i < ID_CTX_POOL && !slot; i++)
        if (!atomic_exchange_explicit(&((id_key_t *)k)->pool[i].busy, true, memory_order_acquire))
            slot = &((id_key_t *)k)->pool[i];
    EVP_PKEY_CTX *ctx = slot && slot->alg == ai ? slot->ctx : NULL;
    if (!ctx) {
        if (slot) {
            EVP_PKEY_CTX_free(slot->ctx);
            slot->ctx = NULL;
            slot->alg = -1;
        }
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL);
        if (!ctx || EVP_PKEY_verify_init(ctx) <= 0 ||
            EVP_PKEY_CTX_set_signature_md(ctx, md_get(a->md)) <= 0 ||
            (a->pss && (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
                        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) <= 0))) {
            EVP_PKEY_CTX_free(ctx);
            if (slot)
                atomic_store_explicit(&slot->busy, false, memory_order_release);
            return false;
        }
        if (slot) {
            slot->ctx = ctx;
            slot->alg = ai;
        }
    }
    bool ok = EVP_PKEY_verify(ctx, s, sl, dg, dl) == 1;
    if (slot)
        atomic_store_explicit(&slot->busy, false, memory_order_release);
    else
        EVP_PKEY_CTX_free(ctx);
    return ok;
}

static bool aud_ok(const id_verifier_t *v, json_t *aud)
{
    if (json_is_string(aud)) {
        for (size_t i = 0; i < v->n_aud; i++)
            if (strcmp(json_string_value(aud), v->aud[i]) == 0)
                return true;
        return false;
    }
    if (!json_is_array(aud))
        return false;
    size_t i;
    json_t *e;
    json_array_foreach(aud, i, e)
    {
        if (json_is_string(e) && aud_ok(v, e))
            return true;
    }
    return false;
}

static bool id_copy(json_t *s, char *out)
{
    if (!json_is_string(s) || !id_user_valid(json_string_value(s), json_string_length(s),
                                             ID_USER_MAX))
        return false;
    memcpy(out, json_string_value(s), json_string_length(s) + 1);
    return true;
}

static int check_claims(id_verifier_t *v, const unsigned char *pl, size_t plen, int64_t now_s,
                        id_result_t *out)
{
    json_error_t jerr;
    json_t *c = json_loadb((const char *)pl, plen, JSON_REJECT_DUPLICATES, &jerr);
    if (!c)
        return ID_BAD_CLAIM;
    int rc = ID_BAD_CLAIM;
    if (!json_is_object(c))
        goto out;
    int64_t leeway = v->cfg.leeway_s;
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    json_t *iat = json_object_get(c, "iat");
    if (!json_is_integer(exp) || (nbf && !json_is_integer(nbf)) || (iat && !json_is_number(iat)))
        goto out;
    int64_t e = json_integer_value(exp);
    if (now_s - leeway >= e) {
        rc = ID_EXPIRED;
        goto out;
    }
    if (v->cfg.max_lifetime_s) {
        /* exp - iat, or exp - now without a usable iat; both as doubles so that
         * exp = 2^63 - 1 minus a negative iat cannot overflow */
        double from = json_is_integer(iat) ? (double)json_integer_value(iat)
                      : json_is_real(iat)  ? json_real_value(iat)
                                           : (double)now_s;
        if ((double)e - from > (double)v->cfg.max_lifetime_s + (double)leeway) {
            rc = ID_TOO_LONG_LIVED;
            goto out;
        }
    }
    if (nbf && now_s + leeway < json_integer_value(nbf)) {
        rc = ID_NOT_YET_VALID;
        goto out;
    }
    json_t *iss = json_object_get(c, "iss");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), v->cfg.issuer) != 0 ||
        json_string_length(iss) != strlen(v->cfg.issuer)) {
        rc = ID_WRONG_ISSUER;
        goto out;
    }
    if (!aud_ok(v, json_object_get(c, "aud"))) {
        rc = ID_WRONG_AUDIENCE;
        goto out;
    }
    if (!id_copy(json_object_get(c, v->cfg.user_claim), out->user)) {
        rc = ID_BAD_SUBJECT;
        goto out;
    }
    json_t *person = v->cfg.person_claim[0] ? json_object_get(c, v->cfg.person_claim) : NULL;
    if (person) {
        if (!id_copy(person, out->person))
            goto out;
    } else {
        memcpy(out->person, out->user, sizeof(out->person));
    }
    out->exp = e;
    /* Eligibility facts are read, never required: a malformed value is "not
     * true" / "unknown", so a sale that needs it refuses and others are unaffected. */
    out->eligible = 0;
    for (size_t i = 0; i < v->n_elig; i++)
        if (json_is_true(json_object_get(c, v->elig[i])))
            out->eligible |= 1u << i;
    json_t *created =
        v->cfg.account_created_claim[0] ? json_object_get(c, v->cfg.account_created_claim) : NULL;
    out->created_at = json_is_integer(created) && json_integer_value(created) > 0
                          ? (int64_t)json_integer_value(created)
                          : 0;
    out->cached = false;
    rc = ID_OK;
out:
    json_decref(c);
    return rc;
}

/* A token's JOSE header checked as id_verify checks it: ID_OK with *ai (the alg's index
 * in id__algs) and the kid (kidlen 0: none), or ID_BAD_HEADER / ID_BAD_ALG / ID_BAD_KID.
 * typ (ID_TYP_MAX + 1 bytes): the header's typ when a string of at most ID_TYP_MAX, else
 * "" (checked against identity.typ by the caller). The alg's allow-list is not applied here. */
static int header_parse(const unsigned char *hdr, size_t hl, int *ai, char *kid, size_t *kidlen,
                        char *typ)
{
    json_error_t jerr;
    json_t *h = json_loadb((const char *)hdr, hl, JSON_REJECT_DUPLICATES, &jerr);
    if (!h || !json_is_object(h) || json_object_get(h, "crit")) {
        json_decref(h);
        return ID_BAD_HEADER;
    }
    /* jku, x5u, x5c and jwk are never read: keys come only from our sets */
    json_t *ja = json_object_get(h, "alg"), *jk = json_object_get(h, "kid");
    json_t *jt = json_object_get(h, "typ");
    typ[0] = '\0';
    if (json_is_string(jt) && json_string_length(jt) <= ID_TYP_MAX &&
        strlen(json_string_value(jt)) == json_string_length(jt))
        memcpy(typ, json_string_value(jt), json_string_length(jt) + 1);
    *ai = json_is_string(ja) ? id__alg_find(json_string_value(ja), json_string_length(ja)) : -1;
    *kidlen = 0;
    int rc = ID_OK;
    if (*ai < 0)
        rc = ID_BAD_ALG;
    else if (jk && (!json_is_string(jk) ||
                    !id_kid_valid(json_string_value(jk), json_string_length(jk))))
        rc = ID_BAD_KID;
    else if (jk) {
        *kidlen = json_string_length(jk);
        memcpy(kid, json_string_value(jk), *kidlen + 1);
    }
    json_decref(h);
    return rc;
}

/* The last good header segment this thread parsed, and what header_parse found in it:
 * an issuer's tokens share one header ({"alg":..,"kid":..,"typ":"JWT"}), so most
 * verifications skip its base64url and its JSON tree. Matched on the segment's exact
 * bytes; only an ID_OK parse is kept. */
#define HDR_MEMO_MAX 256
static _Thread_local struct {
    size_t len; /* 0 = empty */
    char seg[HDR_MEMO_MAX];
    int ai;
    size_t kidlen;
    char kid[ID_KID_MAX + 1];
    char typ[ID_TYP_MAX + 1];
} hdr_memo;

/* The header's typ against identity.typ: case-insensitive (RFC 7515 4.1.9), and
 * "application/" may be left out either side ("at+jwt" = "application/at+jwt"). */
static bool typ_ok(const char *want, const char *got)
{
    if (!want[0])
        return true;
    if (strncasecmp(want, "application/", 12) == 0)
        want += 12;
    if (strncasecmp(got, "application/", 12) == 0)
        got += 12;
    return strcasecmp(want, got) == 0;
}

int id_verify(id_verifier_t *v, const char *tok, size_t len, int64_t now_s, id_result_t *out)
{
    if (len == 0)
        return ID_MISSING;
    if (len > v->cfg.max_token_bytes)
        return ID_TOO_LARGE;
    const char *end = tok + len;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)) || d1 == tok || d2 == d1 + 1)
        return ID_MALFORMED;
    /* the largest token is 16 KiB: its parts decode into these */
    unsigned char hdr[ID_TOKEN_LIMIT / 4 * 3], pl[ID_TOKEN_LIMIT / 4 * 3], sig[1024];
    size_t seglen = (size_t)(d1 - tok);
    bool memo = seglen == hdr_memo.len && memcmp(tok, hdr_memo.seg, seglen) == 0;
    long hl = memo ? 1 : id_b64url_decode(tok, seglen, hdr, sizeof(hdr));
    long pll = id_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pl, sizeof(pl));
    long sl = id_b64url_decode(d2 + 1, (size_t)(end - d2 - 1), sig, sizeof(sig));
    if (hl <= 0 || pll <= 0 || sl < 0)
        return ID_MALFORMED;

    int ai;
    char kid[ID_KID_MAX + 1], typbuf[ID_TYP_MAX + 1];
    const char *typ = typbuf;
    size_t kidlen;
    if (memo) {
        ai = hdr_memo.ai;
        kidlen = hdr_memo.kidlen;
        memcpy(kid, hdr_memo.kid, kidlen + 1);
        typ = hdr_memo.typ;
    } else {
        int hrc = header_parse(hdr, (size_t)hl, &ai, kid, &kidlen, typbuf);
        /* an unknown alg is refused before a bad kid; a known but disallowed one too */
        if (hrc == ID_BAD_KID && !(v->allowed & (1u << ai)))
            hrc = ID_BAD_ALG;
        if (hrc != ID_OK)
            return hrc;
        if (seglen <= HDR_MEMO_MAX) {
            memcpy(hdr_memo.seg, tok, seglen);
            hdr_memo.len = seglen;
            hdr_memo.ai = ai;
            hdr_memo.kidlen = kidlen;
            memcpy(hdr_memo.kid, kid, kidlen + 1);
            memcpy(hdr_memo.typ, typbuf, strlen(typbuf) + 1);
        }
    }
    if (!(v->allowed & (1u << ai)))
        return ID_BAD_ALG;
    if (!typ_ok(v->cfg.typ, typ))
        return ID_BAD_TYP;
    const id_alg_t *a = &id__algs[ai];
    bool jk = kidlen > 0;
    if (sl == 0)
        return ID_BAD_SIGNATURE;

    const char *msg = tok;
    size_t msglen = (size_t)(d2 - tok);
    if (a->kt == ID_KT_HMAC) {
        /* HS256 uses the secret file only, never a key of a set (whatever the kid) */
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (!v->hmac || !HMAC(md_sha256, v->hmac, (int)v->hmac_len, (const unsigned char *)msg,
                              msglen, mac, &ml) ||
            (size_t)sl != ml || CRYPTO_memcmp(mac, sig, ml) != 0)
            return ID_BAD_SIGNATURE;
    } else {
        id_jwks_t *f = fetched_get(v);
        int cand = 0;
        const char *kp = jk ? kid : NULL;
        const id_key_t *k;
        if (kp) {
            k = key_find(v->fixed, a, kp, kidlen, &cand);
            if (!k)
                k = key_find(f, a, kp, kidlen, &cand);
        } else {
            /* no kid: only when the sets hold exactly one key of the alg's type */
            const id_key_t *k1 = key_find(v->fixed, a, NULL, 0, &cand);
            const id_key_t *k2 = key_find(f, a, NULL, 0, &cand);
            k = cand == 1 ? (k1 ? k1 : k2) : NULL;
        }
        int rc = ID_OK;
        if (!v->fixed && !f)
            rc = ID_NO_KEYS;
        else if (k && f && k >= f->keys && k < f->keys + f->n && id_verifier_stale(v, now_s))
            rc = ID_STALE_KEYS;
        else if (!k)
            rc = ID_UNKNOWN_KID;
        else if (k->kt != a->kt || (k->alg[0] && strcmp(k->alg, a->name) != 0))
            rc = ID_BAD_ALG;
        else if (!verify_sig(k, a, sig, (size_t)sl, msg, msglen))
            rc = ID_BAD_SIGNATURE;
        id_jwks_unref(f);
        if (rc == ID_UNKNOWN_KID && kp)
            ask_refetch(v);
        if (rc != ID_OK)
            return rc;
    }
    return check_claims(v, pl, (size_t)pll, now_s, out);
}
