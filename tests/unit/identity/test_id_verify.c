/*
 * The hostile token table: each token gets its named outcome and nothing
 * crashes; a good token for each allowed algorithm verifies. Keys are
 * generated per run (id_signer_generate); the set is a JWK file in a temp dir.
 */
#include "identity/id.h"
#include "identity/id_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#define NOW 1800000000LL

static char dir[64];
static id_signer_t *rs, *es, *ed, *ps, *es384, *stranger, *es_b;
static id_verifier_t *v;  /* default allow-list, jwks_file of all keys but stranger */
static char rs_pem[4096]; /* the RSA public key as PEM text (the confusion "secret") */

static void write_file(const char *path, const char *s, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
    close(fd);
}

/* {"keys":[...]} of the given signers' public keys */
static char *set_of(id_signer_t **ss, size_t n)
{
    json_t *keys = json_array();
    for (size_t i = 0; i < n; i++) {
        char *j = id_signer_jwks_json(ss[i]);
        json_t *o = json_loads(j, 0, NULL);
        json_array_extend(keys, json_object_get(o, "keys"));
        json_decref(o);
        free(j);
    }
    json_t *root = json_pack("{s:o}", "keys", keys);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static id_verifier_t *verifier(const char *algs, const char *secret_file, const char *person)
{
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.jwks_file, sizeof(c.jwks_file), "%s/jwks.json", dir);
    if (algs)
        snprintf(c.algorithms, sizeof(c.algorithms), "%s", algs);
    if (secret_file)
        snprintf(c.hmac_secret_file, sizeof(c.hmac_secret_file), "%s", secret_file);
    if (person)
        snprintf(c.person_claim, sizeof(c.person_claim), "%s", person);
    char err[300] = "";
    id_verifier_t *vv = id_verifier_new(&c, NULL, err, sizeof(err));
    if (!vv)
        fprintf(stderr, "verifier: %s\n", err);
    assert_non_null(vv);
    return vv;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/fg-idv-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char err[200];
    rs = id_signer_generate("RS256", NULL, err, sizeof(err));
    es = id_signer_generate("ES256", NULL, err, sizeof(err));
    ed = id_signer_generate("EdDSA", NULL, err, sizeof(err));
    ps = id_signer_generate("PS256", NULL, err, sizeof(err));
    es384 = id_signer_generate("ES384", NULL, err, sizeof(err));
    stranger = id_signer_generate("ES256", NULL, err, sizeof(err));
    es_b = id_signer_generate("ES256", "second-es", err, sizeof(err));
    assert_true(rs && es && ed && ps && es384 && stranger && es_b);
    id_signer_t *all[] = {rs, es, ed, ps, es384};
    char *set = set_of(all, 5);
    char path[128];
    snprintf(path, sizeof(path), "%s/jwks.json", dir);
    write_file(path, set, strlen(set), 0644);
    free(set);
    v = verifier(NULL, NULL, NULL);
    /* the RSA public key as PEM: what a confused verifier would use as an HMAC secret */
    char *j = id_signer_jwks_json(rs);
    snprintf(rs_pem, sizeof(rs_pem), "%s", j);
    free(j);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    id_verifier_free(v);
    id_signer_t *all[] = {rs, es, ed, ps, es384, stranger, es_b};
    for (size_t i = 0; i < 7; i++)
        id_signer_free(all[i]);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static char tok[70000];

/* Signs header/payload with s; returns tok. */
static const char *mk(const id_signer_t *s, const char *header, const char *payload)
{
    int n = id_signer_sign_raw(s, header, strlen(header), payload, strlen(payload), tok,
                               sizeof(tok));
    assert_true(n > 0);
    return tok;
}

/* A header naming s's alg and kid, plus `more` members. */
static const char *hdr(const id_signer_t *s, const char *more)
{
    static char h[4096];
    snprintf(h, sizeof(h), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"%s}", id_signer_alg(s),
             id_signer_kid(s), more ? more : "");
    return h;
}

static const char *claims(const char *more)
{
    static char p[12000];
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"alice\",\"exp\":%lld%s}",
             NOW + 600, more ? more : "");
    return p;
}

static int check(id_verifier_t *vv, const char *t)
{
    id_result_t r;
    memset(&r, 0, sizeof(r));
    return id_verify(vv, t, strlen(t), NOW, &r);
}

static void expect(const char *what, id_verifier_t *vv, const char *t, int want)
{
    int got = check(vv, t);
    if (got != want)
        fprintf(stderr, "%s: got %s, want %s\n", what, id_outcome_name(got), id_outcome_name(want));
    assert_int_equal(got, want);
}

static void test_good_each_alg(void **state)
{
    (void)state;
    id_result_t r;
    id_signer_t *good[] = {rs, es, ed};
    for (int i = 0; i < 3; i++) {
        mk(good[i], hdr(good[i], NULL), claims(NULL));
        assert_int_equal(id_verify(v, tok, strlen(tok), NOW, &r), ID_OK);
        assert_string_equal(r.user, "alice");
        assert_string_equal(r.person, "alice");
        assert_int_equal(r.exp, NOW + 600);
    }
    /* PS256 and ES384 are known but not in the default list */
    expect("ps256 default", v, mk(ps, hdr(ps, NULL), claims(NULL)), ID_BAD_ALG);
    expect("es384 default", v, mk(es384, hdr(es384, NULL), claims(NULL)), ID_BAD_ALG);
    id_verifier_t *wide = verifier("RS256,PS256,ES256,ES384,EdDSA", NULL, NULL);
    expect("ps256", wide, mk(ps, hdr(ps, NULL), claims(NULL)), ID_OK);
    expect("es384", wide, mk(es384, hdr(es384, NULL), claims(NULL)), ID_OK);
    /* an ES256-only list refuses RS256 even with a valid signature */
    id_verifier_t *narrow = verifier("ES256", NULL, NULL);
    expect("rs256 narrow", narrow, mk(rs, hdr(rs, NULL), claims(NULL)), ID_BAD_ALG);
    id_verifier_free(wide);
    id_verifier_free(narrow);
}

static void test_hs256(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/hmac.secret", dir);
    const char *secret = "0123456789abcdef0123456789abcdef-shop-secret";
    write_file(path, secret, strlen(secret), 0600);
    id_verifier_t *hv = verifier("ES256,HS256", path, NULL);
    const char *h = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const char *p = claims(NULL);
    char hp[4096];
    size_t n = id_b64url_encode(h, strlen(h), hp);
    hp[n++] = '.';
    n += id_b64url_encode(p, strlen(p), hp + n);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)hp, n, mac, &ml);
    hp[n++] = '.';
    id_b64url_encode(mac, ml, hp + n);
    expect("hs256 good", hv, hp, ID_OK);
    expect("hs256 default list", v, hp, ID_BAD_ALG);
    hp[n + 3] = hp[n + 3] == 'A' ? 'B' : 'A';
    expect("hs256 tampered", hv, hp, ID_BAD_SIGNATURE);
    id_verifier_free(hv);
}

/* HS256 "signed" with the RSA public key as the HMAC secret, naming the RSA kid. */
static void test_alg_confusion(void **state)
{
    (void)state;
    char h[512];
    snprintf(h, sizeof(h), "{\"alg\":\"HS256\",\"kid\":\"%s\"}", id_signer_kid(rs));
    const char *p = claims(NULL);
    char t[8192];
    size_t n = id_b64url_encode(h, strlen(h), t);
    t[n++] = '.';
    n += id_b64url_encode(p, strlen(p), t + n);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), rs_pem, (int)strlen(rs_pem), (unsigned char *)t, n, mac, &ml);
    t[n++] = '.';
    id_b64url_encode(mac, ml, t + n);
    expect("confusion default", v, t, ID_BAD_ALG);
    /* even with HS256 allowed, the RSA key is never an HMAC secret */
    char path[128];
    snprintf(path, sizeof(path), "%s/hmac2.secret", dir);
    write_file(path, "another-secret-of-at-least-32-bytes!!", 37, 0600);
    id_verifier_t *hv = verifier("RS256,HS256", path, NULL);
    expect("confusion hs allowed", hv, t, ID_BAD_SIGNATURE);
    id_verifier_free(hv);
    /* an RS256 header naming the EC key: the key type must fit the alg */
    char h2[512];
    snprintf(h2, sizeof(h2), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", id_signer_kid(es));
    expect("rs256 with ec kid", v, mk(rs, h2, claims(NULL)), ID_BAD_ALG);
    snprintf(h2, sizeof(h2), "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", id_signer_kid(es));
    expect("eddsa with ec kid", v, mk(ed, h2, claims(NULL)), ID_BAD_ALG);
}

static void test_alg_none(void **state)
{
    (void)state;
    const char *variants[] = {"none", "None", "NONE", "nOnE", ""};
    for (size_t i = 0; i < 5; i++) {
        char h[128], t[4096];
        snprintf(h, sizeof(h), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", variants[i]);
        const char *p = claims(NULL);
        size_t n = id_b64url_encode(h, strlen(h), t);
        t[n++] = '.';
        n += id_b64url_encode(p, strlen(p), t + n);
        t[n++] = '.';
        t[n] = '\0';
        expect("none empty sig", v, t, ID_BAD_ALG);
        /* with a signature copied from a real token */
        const char *real = mk(es, hdr(es, NULL), claims(NULL));
        snprintf(t + n, sizeof(t) - n, "%s", strrchr(real, '.') + 1);
        expect("none real sig", v, t, ID_BAD_ALG);
    }
    expect("alg missing", v, mk(es, "{\"typ\":\"JWT\"}", claims(NULL)), ID_BAD_ALG);
    expect("alg number", v, mk(es, "{\"alg\":256}", claims(NULL)), ID_BAD_ALG);
    /* an empty signature under an allowed alg */
    mk(es, hdr(es, NULL), claims(NULL));
    *(strrchr(tok, '.') + 1) = '\0';
    expect("empty sig", v, tok, ID_BAD_SIGNATURE);
}

static void test_kid(void **state)
{
    (void)state;
    expect("unknown kid", v, mk(es, "{\"alg\":\"ES256\",\"kid\":\"no-such-key\"}", claims(NULL)),
           ID_UNKNOWN_KID);
    const char *bad[] = {"../../etc/passwd", "/etc/shadow", "k' OR '1'='1", "a;DROP TABLE keys",
                         "a b", "k\\\\x", "k\\\"", "k%2F", "", "k\\u0001"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char h[256];
        snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", bad[i]);
        expect(bad[i], v, mk(es, h, claims(NULL)), ID_BAD_KID);
    }
    char longkid[400];
    memset(longkid, 'a', 200);
    longkid[200] = '\0';
    char h[512];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", longkid);
    expect("long kid", v, mk(es, h, claims(NULL)), ID_BAD_KID);
    expect("kid number", v, mk(es, "{\"alg\":\"ES256\",\"kid\":7}", claims(NULL)), ID_BAD_KID);
    expect("kid with NUL", v, mk(es, "{\"alg\":\"ES256\",\"kid\":\"a\\u0000b\"}", claims(NULL)),
           ID_BAD_HEADER);
    /* no kid: fine with exactly one key of the type; ambiguous with two */
    expect("no kid one key", v, mk(es, "{\"alg\":\"ES256\"}", claims(NULL)), ID_OK);
    id_signer_t *two[] = {es, es_b};
    char *set = set_of(two, 2);
    char path[128];
    snprintf(path, sizeof(path), "%s/jwks.json", dir);
    char save[128];
    snprintf(save, sizeof(save), "%s/jwks.saved", dir);
    rename(path, save);
    write_file(path, set, strlen(set), 0644);
    free(set);
    id_verifier_t *vv = verifier("ES256", NULL, NULL);
    rename(save, path);
    expect("no kid two keys", vv, mk(es, "{\"alg\":\"ES256\"}", claims(NULL)), ID_UNKNOWN_KID);
    expect("second kid", vv, mk(es_b, hdr(es_b, NULL), claims(NULL)), ID_OK);
    /* one key's kid, another key's signature */
    char h2[256];
    snprintf(h2, sizeof(h2), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", id_signer_kid(es));
    expect("kid of other key", vv, mk(es_b, h2, claims(NULL)), ID_BAD_SIGNATURE);
    id_verifier_free(vv);
}

/* jku, x5u, x5c and an embedded jwk are ignored: never fetched, never trusted. */
static void test_header_keys_ignored(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 8), 0);
    getsockname(ls, (struct sockaddr *)&a, &al);
    char *sj = id_signer_jwks_json(stranger);
    json_t *so = json_loads(sj, 0, NULL);
    char *jwk = json_dumps(json_array_get(json_object_get(so, "keys"), 0), JSON_COMPACT);
    char more[2048], h[2600];
    snprintf(more, sizeof(more),
             ",\"jku\":\"http://127.0.0.1:%d/jwks.json\",\"x5u\":\"http://127.0.0.1:%d/c.pem\","
             "\"x5c\":[\"MIIB\"],\"jwk\":%s",
             ntohs(a.sin_port), ntohs(a.sin_port), jwk);
    /* the stranger's token carrying its own key: its kid is not ours */
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"%s}", id_signer_kid(stranger), more);
    expect("stranger with jwk/jku", v, mk(stranger, h, claims(NULL)), ID_UNKNOWN_KID);
    /* no kid: the stranger's signature checked against our one ES256 key */
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\"%s}", more);
    expect("stranger no kid", v, mk(stranger, h, claims(NULL)), ID_BAD_SIGNATURE);
    /* our own token with those headers: they change nothing */
    expect("ours with jku", v, mk(es, hdr(es, more), claims(NULL)), ID_OK);
    /* nothing connected to the jku/x5u address */
    assert_int_equal(accept(ls, NULL, NULL), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(ls);
    free(jwk);
    json_decref(so);
    free(sj);
}

static void test_header_rules(void **state)
{
    (void)state;
    expect("crit", v, mk(es, hdr(es, ",\"crit\":[\"exp\"]"), claims(NULL)), ID_BAD_HEADER);
    expect("crit empty", v, mk(es, hdr(es, ",\"crit\":[]"), claims(NULL)), ID_BAD_HEADER);
    expect("dup header alg", v, mk(es, hdr(es, ",\"alg\":\"none\""), claims(NULL)), ID_BAD_HEADER);
    expect("header array", v, mk(es, "[\"ES256\"]", claims(NULL)), ID_BAD_HEADER);
    expect("header not json", v, mk(es, "{alg:ES256}", claims(NULL)), ID_BAD_HEADER);
}

static void test_time(void **state)
{
    (void)state;
    char more[128];
    snprintf(more, sizeof(more), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW - 31);
    expect("expired", v, mk(es, hdr(es, NULL), more), ID_EXPIRED);
    snprintf(more, sizeof(more), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW - 30);
    expect("expired at leeway edge", v, mk(es, hdr(es, NULL), more), ID_EXPIRED);
    snprintf(more, sizeof(more), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW - 29);
    expect("inside leeway", v, mk(es, hdr(es, NULL), more), ID_OK);
    snprintf(more, sizeof(more), ",\"nbf\":%lld", NOW + 31);
    expect("not yet valid", v, mk(es, hdr(es, NULL), claims(more)), ID_NOT_YET_VALID);
    snprintf(more, sizeof(more), ",\"nbf\":%lld", NOW + 30);
    expect("nbf inside leeway", v, mk(es, hdr(es, NULL), claims(more)), ID_OK);
    expect("nbf string", v, mk(es, hdr(es, NULL), claims(",\"nbf\":\"now\"")), ID_BAD_CLAIM);
    expect("iat string", v, mk(es, hdr(es, NULL), claims(",\"iat\":\"now\"")), ID_BAD_CLAIM);
    expect("no exp", v,
           mk(es, hdr(es, NULL), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\"}"),
           ID_BAD_CLAIM);
    expect("exp string", v,
           mk(es, hdr(es, NULL),
              "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":\"1900000000\"}"),
           ID_BAD_CLAIM);
    expect("exp real", v,
           mk(es, hdr(es, NULL),
              "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":1.9e9}"),
           ID_BAD_CLAIM);
    expect("exp huge", v,
           mk(es, hdr(es, NULL),
              "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":9223372036854775807}"),
           ID_OK);
    expect("exp very negative", v,
           mk(es, hdr(es, NULL),
              "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":-9223372036854775807}"),
           ID_EXPIRED);
}

static void test_iss_aud(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof(p), "{\"iss\":\"evil\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("wrong issuer", v, mk(es, hdr(es, NULL), p), ID_WRONG_ISSUER);
    snprintf(p, sizeof(p), "{\"iss\":\"flashgatex\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("issuer prefix", v, mk(es, hdr(es, NULL), p), ID_WRONG_ISSUER);
    snprintf(p, sizeof(p), "{\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("no issuer", v, mk(es, hdr(es, NULL), p), ID_WRONG_ISSUER);
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":\"other-shop\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("token for another audience", v, mk(es, hdr(es, NULL), p), ID_WRONG_AUDIENCE);
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":[\"x\",\"flashgate\"],\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("aud array", v, mk(es, hdr(es, NULL), p), ID_OK);
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":[\"x\",7],\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("aud array without", v, mk(es, hdr(es, NULL), p), ID_WRONG_AUDIENCE);
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
    expect("no aud", v, mk(es, hdr(es, NULL), p), ID_WRONG_AUDIENCE);
}

static void test_subject(void **state)
{
    (void)state;
    const char *bad[] = {"\"alice bob\"", "\"a/b\"", "\"\"", "42", "\"ali\\u00e7e\"",
                         "\"a\\u0000b\"", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
                         "\"victim-42\\n\"", "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char p[512];
        snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":%s,\"exp\":%lld}",
                 bad[i], NOW + 60);
        int want = strstr(bad[i], "\\u0000") ? ID_BAD_CLAIM : ID_BAD_SUBJECT;
        expect(bad[i], v, mk(es, hdr(es, NULL), p), want);
    }
    char p[512];
    snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"exp\":%lld}", NOW + 60);
    expect("no sub", v, mk(es, hdr(es, NULL), p), ID_BAD_SUBJECT);
    snprintf(p, sizeof(p),
             "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"%s\",\"exp\":%lld}",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NOW + 60);
    expect("64-char sub", v, mk(es, hdr(es, NULL), p), ID_OK);
    expect("dup claims", v, mk(es, hdr(es, NULL), claims(",\"sub\":\"victim-42\"")), ID_BAD_CLAIM);
    expect("dup exp", v, mk(es, hdr(es, NULL), claims(",\"exp\":1")), ID_BAD_CLAIM);
    expect("claims array", v, mk(es, hdr(es, NULL), "[1]"), ID_BAD_CLAIM);
    expect("claims garbage", v, mk(es, hdr(es, NULL), "\xff\xfe"), ID_BAD_CLAIM);
}

static void test_person(void **state)
{
    (void)state;
    id_verifier_t *pv = verifier(NULL, NULL, "ph");
    id_result_t r;
    mk(es, hdr(es, NULL), claims(",\"ph\":\"h-7f3a\""));
    assert_int_equal(id_verify(pv, tok, strlen(tok), NOW, &r), ID_OK);
    assert_string_equal(r.user, "alice");
    assert_string_equal(r.person, "h-7f3a");
    mk(es, hdr(es, NULL), claims(NULL));
    assert_int_equal(id_verify(pv, tok, strlen(tok), NOW, &r), ID_OK);
    assert_string_equal(r.person, "alice");
    expect("bad person", pv, mk(es, hdr(es, NULL), claims(",\"ph\":\"a b\"")), ID_BAD_CLAIM);
    id_verifier_free(pv);
}

static void test_encoding(void **state)
{
    (void)state;
    const char *good = mk(es, hdr(es, NULL), claims(NULL));
    char t[70000];
    snprintf(t, sizeof(t), "%s", good);
    size_t n = strlen(t);
    char *d1 = strchr(t, '.');
    expect("good", v, t, ID_OK);
    snprintf(t, sizeof(t), "%s.", good);
    expect("trailing dot", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s..", good);
    expect("two trailing dots", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), ".%s", good);
    expect("leading dot", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s.abc", good);
    expect("four parts", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s=", good);
    expect("padding", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s==", good);
    expect("padding 2", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s ", good);
    expect("trailing space", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s", good);
    t[n - 1] = '+';
    expect("plus", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%s", good);
    d1 = strchr(t, '.');
    d1[2] = '/';
    expect("slash", v, t, ID_MALFORMED);
    snprintf(t, sizeof(t), "%.*s", (int)(strchr(good, '.') - good), good);
    expect("one part", v, t, ID_MALFORMED);
    expect("empty", v, "", ID_MISSING);
    expect("dots", v, "..", ID_MALFORMED);
    expect("bearer prefix", v, "Bearer x.y.z", ID_MALFORMED);
    /* a header of impossible length (5 chars = 1 mod 4) */
    snprintf(t, sizeof(t), "eyJhb.%s", strchr(good, '.') + 1);
    expect("length 1 mod 4", v, t, ID_MALFORMED);
    /* non-canonical base64url: last char with unused bits set */
    snprintf(t, sizeof(t), "%s", good);
    char *last = t + strlen(t) - 1; /* the ES256 signature: 86 chars, 2 unused bits */
    *last = *last == 'A' ? 'B' : (*last == 'B' ? 'C' : 'B');
    int oc = check(v, t);
    assert_true(oc == ID_MALFORMED || oc == ID_BAD_SIGNATURE);
    /* payload tampered: signature no longer matches */
    snprintf(t, sizeof(t), "%s", good);
    d1 = strchr(t, '.');
    d1[5] = d1[5] == 'A' ? 'B' : 'A';
    oc = check(v, t);
    assert_true(oc == ID_BAD_SIGNATURE || oc == ID_MALFORMED);
    /* 64 KiB */
    memset(t, 'A', 65536);
    t[100] = '.';
    t[200] = '.';
    t[65536] = '\0';
    expect("64 KiB", v, t, ID_TOO_LARGE);
    /* just over max_token_bytes (8192): too large; a big but valid claim set under it is fine */
    char big[9000];
    memset(big, 'x', 8000);
    big[8000] = '\0';
    char more[9100];
    snprintf(more, sizeof(more), ",\"pad\":\"%s\"", big);
    expect("over max", v, mk(es, hdr(es, NULL), claims(more)), ID_TOO_LARGE);
    more[4000] = '\0';
    strcat(more, "\"");
    expect("under max", v, mk(es, hdr(es, NULL), claims(more)), ID_OK);
    /* wrong signature lengths */
    snprintf(t, sizeof(t), "%s", good);
    t[strlen(t) - 4] = '\0';
    oc = check(v, t);
    assert_true(oc == ID_BAD_SIGNATURE || oc == ID_MALFORMED);
}

/* Random damage to good tokens: never a crash, never ID_OK for a changed token. */
static void test_mutations(void **state)
{
    (void)state;
    id_signer_t *ss[] = {rs, es, ed};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int s = 0; s < 3; s++) {
        char good[4096];
        snprintf(good, sizeof(good), "%s", mk(ss[s], hdr(ss[s], NULL), claims(NULL)));
        size_t n = strlen(good);
        for (int i = 0; i < 3000; i++) {
            char t[4096];
            memcpy(t, good, n + 1);
            int edits = 1 + (int)(x % 3);
            for (int e = 0; e < edits; e++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                size_t at = (size_t)(x % n);
                t[at] = "AZaz09-_.=+/ \0"[(x >> 32) % 14];
            }
            size_t tl = strlen(t);
            id_result_t r;
            int rc = id_verify(v, t, tl, NOW, &r);
            if (rc == ID_OK)
                assert_true(tl == n && memcmp(t, good, n) == 0);
            assert_true(rc >= 0 && rc < ID__OUTCOME_COUNT);
        }
    }
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(id_outcome_name(ID_OK), "ok");
    assert_string_equal(id_outcome_name(ID_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(id_outcome_name(ID_UNKNOWN_KID), "unknown_kid");
    assert_string_equal(id_outcome_name(-1), "unknown");
    assert_string_equal(id_outcome_name(ID__OUTCOME_COUNT), "unknown");
    for (int i = 0; i < ID__OUTCOME_COUNT; i++) {
        assert_true(strlen(id_outcome_name(i)) > 0);
        assert_true(strlen(id_outcome_text(i)) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(id_outcome_name(i), id_outcome_name(j));
    }
}

/* id__ecdsa_sig_der writes what OpenSSL's ECDSA_SIG + i2d_ECDSA_SIG write: leading
 * zero bytes, a high bit (the 0x00 pad), zero itself, and random values, both sizes. */
static void test_ecdsa_der(void **state)
{
    (void)state;
    for (size_t cl = 32; cl <= 48; cl += 16) {
        for (int i = 0; i < 400; i++) {
            unsigned char sg[96], mine[112], want[112], *p = want;
            assert_int_equal(RAND_bytes(sg, (int)(2 * cl)), 1);
            if (i % 8 == 0) { /* r = 0 */
                memset(sg, 0, cl);
            } else if (i % 8 == 1) { /* s: leading zero bytes, then a high bit */
                memset(sg, 0, cl + 3);
                sg[cl + 3] |= 0x80;
            } else if (i % 8 == 2) { /* both padded */
                sg[0] |= 0x80;
                sg[cl] |= 0x80;
            } else if (i % 8 == 3) {
                sg[0] = 0;
                sg[1] = 0x7f;
                sg[cl] = 0;
                sg[cl + 1] = 0x80;
            } else if (i % 8 == 4) { /* r = 1, s = 0 */
                memset(sg, 0, 2 * cl);
                sg[cl - 1] = 1;
            }
            ECDSA_SIG *es_sig = ECDSA_SIG_new();
            assert_non_null(es_sig);
            assert_int_equal(ECDSA_SIG_set0(es_sig, BN_bin2bn(sg, (int)cl, NULL),
                                            BN_bin2bn(sg + cl, (int)cl, NULL)), 1);
            int wl = i2d_ECDSA_SIG(es_sig, &p);
            ECDSA_SIG_free(es_sig);
            size_t ml = id__ecdsa_sig_der(sg, cl, mine);
            assert_int_equal(ml, (size_t)wl);
            assert_memory_equal(mine, want, ml);
        }
    }
}

/* The header memo (the last header parsed on this thread) keeps every check: the
 * allow-list is the verifier's, the signature and the claims are each token's. */
static void test_header_memo(void **state)
{
    (void)state;
    id_verifier_t *narrow = verifier("ES256", NULL, NULL);
    for (int round = 0; round < 2; round++) { /* the second round: every header memoized */
        expect("rs256 wide", v, mk(rs, hdr(rs, NULL), claims(NULL)), ID_OK);
        expect("rs256 narrow", narrow, tok, ID_BAD_ALG);
        expect("es256", narrow, mk(es, hdr(es, NULL), claims(NULL)), ID_OK);
        char *c = &tok[strlen(tok) - 10]; /* inside the signature, still base64url */
        *c = *c == 'A' ? 'B' : 'A';
        expect("es256 bad signature", narrow, tok, ID_BAD_SIGNATURE);
        expect("es256 expired", v, mk(es, hdr(es, NULL), "{\"iss\":\"flashgate\","
                                      "\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":1}"),
               ID_EXPIRED);
        expect("es256 stranger", v, mk(stranger, hdr(es, NULL), claims(NULL)), ID_BAD_SIGNATURE);
        expect("bad kid", v, mk(es, "{\"alg\":\"ES256\",\"kid\":\"a b\"}", claims(NULL)),
               ID_BAD_KID);
        expect("bad kid, alg not allowed", narrow,
               mk(rs, "{\"alg\":\"RS256\",\"kid\":\"a b\"}", claims(NULL)), ID_BAD_ALG);
    }
    id_verifier_free(narrow);
}


/* The RSA JWK of rs with its n or e replaced (base64url); a new string. */
static char *rsa_jwk_with(const char *kid, const char *n, const char *e)
{
    char *j = id_signer_jwks_json(rs);
    json_t *o = json_loads(j, 0, NULL);
    free(j);
    json_t *k = json_incref(json_array_get(json_object_get(o, "keys"), 0));
    json_decref(o);
    if (n)
        json_object_set_new(k, "n", json_string(n));
    if (e)
        json_object_set_new(k, "e", json_string(e));
    json_object_set_new(k, "kid", json_string(kid));
    char *s = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(k);
    return s;
}

/* Keys that verify forgeries or are too weak: each refused on its own, the
 * set's good key kept. */
static void test_weak_keys(void **state)
{
    (void)state;
    /* rs's modulus with its top 7 bits cleared: 2041 bits in 256 bytes */
    char *j = id_signer_jwks_json(rs);
    json_t *o = json_loads(j, 0, NULL);
    free(j);
    const char *n64 = json_string_value(json_object_get(json_array_get(json_object_get(o, "keys"), 0), "n"));
    unsigned char n[600];
    long nl = id_b64url_decode(n64, strlen(n64), n, sizeof(n));
    json_decref(o);
    assert_int_equal(nl, 256);
    n[0] = 0x01;
    char short_n[400];
    id_b64url_encode(n, 256, short_n);
    char *e1 = rsa_jwk_with("rsa-e1", NULL, "AQ");       /* e = 1: s^1 = m, anyone signs */
    char *e2 = rsa_jwk_with("rsa-e2", NULL, "Ag");       /* e = 2 */
    char *e3 = rsa_jwk_with("rsa-e3", NULL, "Aw");       /* e = 3: below 2^16 */
    char *b2041 = rsa_jwk_with("rsa-2041", short_n, NULL);
    char *good = id_signer_jwks_json(es);
    o = json_loads(good, 0, NULL);
    free(good);
    good = json_dumps(json_array_get(json_object_get(o, "keys"), 0), JSON_COMPACT);
    json_decref(o);
    /* Ed25519 public keys of small order: the identity (y = 1), 0 (order 4) and
     * the identity with its sign bit set */
    const char *ed_id = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const char *ed_zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const char *ed_id_neg = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA";
    char set[8192];
    snprintf(set, sizeof(set),
             "{\"keys\":[%s,%s,%s,%s,"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed-id\",\"x\":\"%s\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed-zero\",\"x\":\"%s\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed-neg\",\"x\":\"%s\"},%s]}",
             e1, e2, e3, b2041, ed_id, ed_zero, ed_id_neg, good);
    char err[300] = "";
    id_jwks_t *ks = id_jwks_parse(set, strlen(set), err, sizeof(err));
    if (!ks)
        fprintf(stderr, "weak set: %s\n", err);
    assert_non_null(ks);
    assert_int_equal(id_jwks_count(ks), 1); /* the ES256 key only */
    assert_int_equal(id_jwks_refused(ks), 7);
    id_jwks_unref(ks);
    /* each alone: no usable key, the set refused */
    const char *alone[] = {e1, e2, b2041};
    for (size_t i = 0; i < 3; i++) {
        snprintf(set, sizeof(set), "{\"keys\":[%s]}", alone[i]);
        assert_null(id_jwks_parse(set, strlen(set), err, sizeof(err)));
    }
    /* the forgery an identity-point key accepts: R = identity, S = 0, any message */
    snprintf(set, sizeof(set),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed-id\",\"x\":\"%s\"},%s]}",
             ed_id, good);
    char path[128];
    snprintf(path, sizeof(path), "%s/weak.json", dir);
    write_file(path, set, strlen(set), 0644);
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.jwks_file, sizeof(c.jwks_file), "%s", path);
    id_verifier_t *wv = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(wv);
    unsigned char rs0[64] = {1};
    char h64[200], p64[400], s64[100], forged[800];
    const char *h = "{\"alg\":\"EdDSA\",\"kid\":\"ed-id\"}";
    id_b64url_encode(h, strlen(h), h64);
    const char *pl = claims(NULL);
    id_b64url_encode(pl, strlen(pl), p64);
    id_b64url_encode(rs0, 64, s64);
    snprintf(forged, sizeof(forged), "%s.%s.%s", h64, p64, s64);
    expect("identity-point forgery", wv, forged, ID_UNKNOWN_KID);
    id_verifier_free(wv);
    free(e1);
    free(e2);
    free(e3);
    free(b2041);
    free(good);
}

/* identity.typ: the header's typ, case-insensitive, "application/" optional. */
static void test_typ(void **state)
{
    (void)state;
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.jwks_file, sizeof(c.jwks_file), "%s/jwks.json", dir);
    snprintf(c.typ, sizeof(c.typ), "at+jwt");
    char err[300];
    id_verifier_t *tv = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(tv);
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}", id_signer_kid(es));
    expect("typ at+jwt", tv, mk(es, h, claims(NULL)), ID_OK);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"application/AT+JWT\"}",
             id_signer_kid(es));
    expect("typ application/AT+JWT", tv, mk(es, h, claims(NULL)), ID_OK);
    expect("typ JWT", tv, mk(es, hdr(es, NULL), claims(NULL)), ID_BAD_TYP);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", id_signer_kid(es));
    expect("no typ", tv, mk(es, h, claims(NULL)), ID_BAD_TYP);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":[\"at+jwt\"]}", id_signer_kid(es));
    expect("typ array", tv, mk(es, h, claims(NULL)), ID_BAD_TYP);
    /* the memo of the last header does not carry one verifier's typ to another */
    expect("typ JWT, default verifier", v, mk(es, hdr(es, NULL), claims(NULL)), ID_OK);
    expect("typ JWT again", tv, mk(es, hdr(es, NULL), claims(NULL)), ID_BAD_TYP);
    id_verifier_free(tv);
}

/* identity.max_lifetime_s: exp - iat, or exp - now without iat. */
static void test_lifetime(void **state)
{
    (void)state;
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.jwks_file, sizeof(c.jwks_file), "%s/jwks.json", dir);
    c.max_lifetime_s = 3600;
    char err[300], p[300];
    id_verifier_t *lv = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(lv);
    const char *base = "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\"";
    snprintf(p, sizeof(p), "%s,\"exp\":%lld}", base, NOW + 600);
    expect("10 min", lv, mk(es, hdr(es, NULL), p), ID_OK);
    snprintf(p, sizeof(p), "%s,\"exp\":4611686018427387904}", base);
    expect("exp 2^62", lv, mk(es, hdr(es, NULL), p), ID_TOO_LONG_LIVED);
    expect("exp 2^62, no bound", v, mk(es, hdr(es, NULL), p), ID_OK);
    snprintf(p, sizeof(p), "%s,\"iat\":%lld,\"exp\":%lld}", base, NOW - 7200, NOW + 600);
    expect("iat 2 h ago", lv, mk(es, hdr(es, NULL), p), ID_TOO_LONG_LIVED);
    snprintf(p, sizeof(p), "%s,\"iat\":%lld,\"exp\":%lld}", base, NOW, NOW + 3600);
    expect("exactly the bound", lv, mk(es, hdr(es, NULL), p), ID_OK);
    snprintf(p, sizeof(p), "%s,\"iat\":-9223372036854775807,\"exp\":9223372036854775807}", base);
    expect("iat min, exp max", lv, mk(es, hdr(es, NULL), p), ID_TOO_LONG_LIVED);
    id_verifier_free(lv);
}

/* identity.jwks_max_stale: a fetched set failing to refresh past it verifies nothing. */
static void test_stale(void **state)
{
    (void)state;
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.jwks_url, sizeof(c.jwks_url), "http://127.0.0.1:1/jwks");
    c.jwks_max_stale_s = 60;
    char err[300];
    id_verifier_t *sv = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(sv);
    id_signer_t *one[] = {es};
    char *set = set_of(one, 1);
    id_jwks_t *ks = id_jwks_parse(set, strlen(set), err, sizeof(err));
    free(set);
    assert_non_null(ks);
    id_verifier_set_keys(sv, ks);
    const char *t = mk(es, hdr(es, NULL), claims(NULL));
    char good[2048];
    snprintf(good, sizeof(good), "%s", t);
    expect("fresh", sv, good, ID_OK);
    id_verifier_refresh_failed(sv, NOW);
    id_verifier_refresh_failed(sv, NOW + 50); /* the first failure starts the clock */
    expect("failing 30 s", sv, good, ID_OK);
    assert_false(id_verifier_stale(sv, NOW + 60));
    assert_true(id_verifier_stale(sv, NOW + 61));
    id_result_t r;
    assert_int_equal(id_verify(sv, good, strlen(good), NOW + 61, &r), ID_STALE_KEYS);
    /* the per-worker cache answers no stale verdict either */
    id_cache_t *cache = id_cache_new(16);
    assert_int_equal(id_verify_cached(sv, cache, good, strlen(good), NOW, &r), ID_OK);
    assert_int_equal(id_verify_cached(sv, cache, good, strlen(good), NOW + 61, &r), ID_STALE_KEYS);
    id_verifier_set_keys(sv, ks); /* a good fetch */
    assert_int_equal(id_verify(sv, good, strlen(good), NOW + 61, &r), ID_OK);
    assert_false(id_verifier_stale(sv, NOW + 1000));
    id_cache_free(cache);
    id_jwks_unref(ks);
    id_verifier_free(sv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_each_alg),   cmocka_unit_test(test_hs256),
        cmocka_unit_test(test_alg_confusion),   cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_kid),             cmocka_unit_test(test_header_keys_ignored),
        cmocka_unit_test(test_header_rules),    cmocka_unit_test(test_time),
        cmocka_unit_test(test_iss_aud),         cmocka_unit_test(test_subject),
        cmocka_unit_test(test_person),          cmocka_unit_test(test_encoding),
        cmocka_unit_test(test_mutations),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_ecdsa_der),       cmocka_unit_test(test_header_memo),
        cmocka_unit_test(test_weak_keys),       cmocka_unit_test(test_typ),
        cmocka_unit_test(test_lifetime),        cmocka_unit_test(test_stale),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
