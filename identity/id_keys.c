/*
 * Signing keys: the data dir's embedded default key pair, and minting.
 *
 * The embedded key is ES256 (P-256). `openssl speed -seconds 1 rsa2048
 * ecdsap256 ed25519` on this project's machine (AMD EPYC, OpenSSL 3.0.19):
 *             sign/s   verify/s
 *   RSA-2048    1,008    36,440
 *   P-256      30,714    12,343
 *   Ed25519    19,718     7,213
 * The load tester mints one token per simulated account: 100,000 accounts
 * take ~3.3 s with P-256, ~5 s with Ed25519 and ~100 s with RSA-2048. The
 * gateway verifies each account's token once (then the cache answers): 100,000
 * first verifications cost ~8 s of CPU with P-256 against ~2.7 s with RSA, so
 * P-256 costs the least CPU of the rehearsal as a whole (mint + verify) and
 * keeps minting within seconds. A shop's own login service usually signs RS256,
 * which the gateway verifies fastest. bench/identity.py reprints these.
 */
#include "identity/id_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct id_signer {
    EVP_PKEY *pk;
    int kt;
    int alg; /* index in id__algs */
    char kid[ID_KID_MAX + 1];
};

static int default_alg(int kt)
{
    switch (kt) {
    case ID_KT_RSA:
        return id__alg_find("RS256", 5);
    case ID_KT_EC256:
        return id__alg_find("ES256", 5);
    case ID_KT_EC384:
        return id__alg_find("ES384", 5);
    default:
        return id__alg_find("EdDSA", 5);
    }
}

/* The RFC 7638 thumbprint of the public key, base64url: a stable, sane kid. */
static bool thumbprint(EVP_PKEY *pk, int kt, char *out)
{
    char *j = id__jwk_json(pk, kt, NULL, NULL);
    if (!j)
        return false;
    json_t *o = json_loads(j, 0, NULL);
    free(j);
    if (!o)
        return false;
    /* only the required members, sorted, no whitespace */
    json_object_del(o, "use");
    char *canon = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!canon)
        return false;
    unsigned char d[32];
    unsigned int dl = 0;
    bool ok = EVP_Digest(canon, strlen(canon), d, &dl, EVP_sha256(), NULL) > 0;
    free(canon);
    if (ok)
        id_b64url_encode(d, dl, out);
    return ok;
}

static id_signer_t *signer_of(EVP_PKEY *pk, const char *kid, char *err, size_t errlen)
{
    int kt = id__pkey_kt(pk);
    if (kt < 0) {
        snprintf(err, errlen, "key type not usable for signing (RSA >= 2048, P-256, P-384, Ed25519)");
        EVP_PKEY_free(pk);
        return NULL;
    }
    id_signer_t *s = cm_xcalloc(1, sizeof(*s));
    s->pk = pk;
    s->kt = kt;
    s->alg = default_alg(kt);
    if (kid)
        snprintf(s->kid, sizeof(s->kid), "%s", kid);
    else if (!thumbprint(pk, kt, s->kid)) {
        snprintf(err, errlen, "cannot compute the key's thumbprint");
        id_signer_free(s);
        return NULL;
    }
    return s;
}

void id_signer_free(id_signer_t *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->pk);
    free(s);
}

const char *id_signer_alg(const id_signer_t *s)
{
    return id__algs[s->alg].name;
}

const char *id_signer_kid(const id_signer_t *s)
{
    return s->kid;
}

id_jwks_t *id_signer_jwks(const id_signer_t *s)
{
    return id__jwks_from_pkey(s->pk, s->kt, s->kid, id__algs[s->alg].name);
}

char *id_signer_jwks_json(const id_signer_t *s)
{
    char *k = id__jwk_json(s->pk, s->kt, s->kid, id__algs[s->alg].name);
    if (!k)
        return NULL;
    size_t n = strlen(k) + 16;
    char *out = cm_xmalloc(n);
    snprintf(out, n, "{\"keys\":[%s]}", k);
    free(k);
    return out;
}

id_signer_t *id_signer_generate(const char *alg, const char *kid, char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    int want;
    if (strcmp(alg, "RS256") == 0 || strcmp(alg, "PS256") == 0) {
        pk = EVP_RSA_gen(2048);
        want = id__alg_find(alg, strlen(alg));
    } else if (strcmp(alg, "ES256") == 0) {
        pk = EVP_EC_gen("P-256");
        want = id__alg_find(alg, 5);
    } else if (strcmp(alg, "ES384") == 0) {
        pk = EVP_EC_gen("P-384");
        want = id__alg_find(alg, 5);
    } else if (strcmp(alg, "EdDSA") == 0) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        want = id__alg_find(alg, 5);
    } else {
        snprintf(err, errlen, "cannot generate a key for alg \"%s\"", alg);
        return NULL;
    }
    if (!pk) {
        snprintf(err, errlen, "key generation failed");
        return NULL;
    }
    id_signer_t *s = signer_of(pk, kid, err, errlen);
    if (s)
        s->alg = want;
    return s;
}

/* Reads a private key file that only its owner can read; refuses symlinks. */
static EVP_PKEY *read_private(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP)
            snprintf(err, errlen, "%s: is a symlink (a private key must be a regular file)", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: mode %03o lets group or others read or write the private key "
                 "(chmod 600 it)", path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return NULL;
    }
    if (st.st_uid != geteuid()) {
        /* another user's key file: whoever owns it can change it under us */
        snprintf(err, errlen, "%s: owned by uid %u, not by the running uid %u (chown it)", path,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return NULL;
    }
    if (st.st_size > 65536) {
        snprintf(err, errlen, "%s: %lld bytes is not a private key", path, (long long)st.st_size);
        close(fd);
        return NULL;
    }
    char buf[65536];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(buf) && (r = read(fd, buf + got, sizeof(buf) - got)) > 0)
        got += (size_t)r;
    close(fd);
    BIO *b = BIO_new_mem_buf(buf, (int)got);
    EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(buf, got);
    if (!pk)
        snprintf(err, errlen, "%s: not a PEM private key", path);
    return pk;
}

id_signer_t *id_signer_open(const char *path, char *err, size_t errlen)
{
    EVP_PKEY *pk = read_private(path, err, errlen);
    return pk ? signer_of(pk, NULL, err, errlen) : NULL;
}

/* Writes a new P-256 key to path with O_EXCL, mode 0600. 0, CM_EEXISTS (someone else made it) or CM_EIO. */
static int generate_file(const char *path, char *err, size_t errlen)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    if (!pk) {
        snprintf(err, errlen, "key generation failed");
        return CM_EIO;
    }
    char tmp[ID_PATH_MAX + 64];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "data dir path too long");
        EVP_PKEY_free(pk);
        return CM_EIO;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        EVP_PKEY_free(pk);
        return CM_EIO;
    }
    FILE *f = fdopen(fd, "w");
    bool ok = f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1;
    ok = f && fflush(f) == 0 && fsync(fd) == 0 && ok;
    if (f)
        fclose(f);
    else
        close(fd);
    EVP_PKEY_free(pk);
    if (!ok) {
        snprintf(err, errlen, "%s: write failed", tmp);
        unlink(tmp);
        return CM_EIO;
    }
    /* link(2) fails on an existing name: two first starts keep one key */
    if (link(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST)
            return CM_EEXISTS;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return CM_EIO;
    }
    unlink(tmp);
    return 0;
}

id_signer_t *id_keys_ensure(const char *data_dir, bool create, char *err, size_t errlen)
{
    char path[ID_PATH_MAX + 32];
    if (snprintf(path, sizeof(path), "%s/%s", data_dir, ID_KEY_FILE) >= (int)sizeof(path)) {
        snprintf(err, errlen, "data dir path too long");
        return NULL;
    }
    struct stat st;
    /* a data dir others may write lets them replace identity.key (a rename
     * needs only the directory's write permission) and mint any buyer */
    if (stat(data_dir, &st) == 0 && (st.st_mode & 022)) {
        snprintf(err, errlen,
                 "%s: mode %03o lets group or others write the data dir, and so replace %s "
                 "(chmod go-w it)",
                 data_dir, (unsigned)(st.st_mode & 0777), ID_KEY_FILE);
        return NULL;
    }
    if (lstat(path, &st) < 0) {
        if (errno != ENOENT || !create) {
            snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
                     errno == ENOENT ? " (start flashgate once, or pass --init)" : "");
            return NULL;
        }
        int rc = generate_file(path, err, errlen);
        if (rc < 0 && rc != CM_EEXISTS)
            return NULL;
    }
    return id_signer_open(path, err, errlen);
}

/*---- minting ----*/

/* base64url(header) "." base64url(payload) "." base64url(sig) into out. */
int id_signer_sign_raw(const id_signer_t *s, const char *header, size_t hlen, const char *payload,
                       size_t plen, char *out, size_t outlen)
{
    size_t sigmax = s->kt == ID_KT_EC256   ? 64
                    : s->kt == ID_KT_EC384 ? 96
                    : s->kt == ID_KT_ED25519 ? 64
                                             : (size_t)EVP_PKEY_get_size(s->pk);
    size_t need = (hlen + 2) / 3 * 4 + (plen + 2) / 3 * 4 + 2 + (sigmax + 2) / 3 * 4 + 1;
    if (outlen < need || sigmax > 1024)
        return CM_EFULL;
    size_t n = id_b64url_encode(header, hlen, out);
    out[n++] = '.';
    n += id_b64url_encode(payload, plen, out + n);
    const id_alg_t *a = &id__algs[s->alg];
    unsigned char sig[1024], raw[96];
    size_t sl = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = a->md ? EVP_get_digestbyname(a->md) : NULL;
    bool ok = ctx && EVP_DigestSignInit(ctx, &pctx, md, NULL, s->pk) > 0;
    if (ok && a->pss)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
    ok = ok && EVP_DigestSign(ctx, sig, &sl, (const unsigned char *)out, n) > 0;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return CM_EIO;
    const unsigned char *sp = sig;
    if (s->kt == ID_KT_EC256 || s->kt == ID_KT_EC384) {
        size_t cl = s->kt == ID_KT_EC256 ? 32 : 48;
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
        if (!es)
            return CM_EIO;
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)cl);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + cl, (int)cl);
        ECDSA_SIG_free(es);
        sp = raw;
        sl = 2 * cl;
    }
    out[n++] = '.';
    n += id_b64url_encode(sp, sl, out + n);
    return (int)n;
}

int id_signer_mint(const id_signer_t *s, const id_claims_t *cl, char *out, size_t outlen,
                   char *err, size_t errlen)
{
    if (!cl->user || !id_user_valid(cl->user, strlen(cl->user), ID_USER_MAX)) {
        snprintf(err, errlen, "user must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return CM_EINVAL;
    }
    if (cl->person && !id_user_valid(cl->person, strlen(cl->person), ID_USER_MAX)) {
        snprintf(err, errlen, "person must be 1..64 characters of A-Z a-z 0-9 . _ -");
        return CM_EINVAL;
    }
    json_t *p;
    if (cl->extra_json) {
        json_error_t jerr;
        p = json_loads(cl->extra_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(p)) {
            snprintf(err, errlen, "extra claims are not a JSON object: %s", jerr.text);
            json_decref(p);
            return CM_EINVAL;
        }
    } else {
        p = json_object();
    }
    json_object_set_new(p, "iss", json_string(cl->issuer ? cl->issuer : "flashgate"));
    json_object_set_new(p, "aud", json_string(cl->audience ? cl->audience : "flashgate"));
    json_object_set_new(p, cl->user_claim ? cl->user_claim : "sub", json_string(cl->user));
    if (cl->person)
        json_object_set_new(p, cl->person_claim ? cl->person_claim : "person",
                            json_string(cl->person));
    json_object_set_new(p, "iat", json_integer(cl->iat));
    json_object_set_new(p, "exp", json_integer(cl->exp));
    char *ps = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    char h[ID_KID_MAX + 64];
    int hl = snprintf(h, sizeof(h), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
                      id__algs[s->alg].name, s->kid);
    int n = ps ? id_signer_sign_raw(s, h, (size_t)hl, ps, strlen(ps), out, outlen) : CM_ENOMEM;
    free(ps);
    if (n == CM_EFULL)
        snprintf(err, errlen, "token longer than the output buffer (%zu bytes)", outlen);
    else if (n < 0)
        snprintf(err, errlen, "signing failed");
    return n;
}
