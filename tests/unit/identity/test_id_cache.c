/*
 * The verified-token cache (hit, expiry at exp, key rotation, bounded, hit
 * cost), the JWK set parser's refusals, the data dir's key file rules and
 * the config validation.
 */
#include "identity/id.h"

#include "common/cm_err.h"

#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define NOW 1800000000LL

static char dir[64];
static id_signer_t *es;
static id_verifier_t *v;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/fg-idc-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char err[200];
    es = id_signer_generate("ES256", NULL, err, sizeof(err));
    assert_non_null(es);
    id_jwks_t *ks = id_signer_jwks(es);
    assert_non_null(ks);
    id_config_t c;
    id_config_defaults(&c);
    v = id_verifier_new(&c, ks, err, sizeof(err));
    id_jwks_unref(ks);
    assert_non_null(v);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    id_verifier_free(v);
    id_signer_free(es);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int mint(const char *user, int64_t exp, char *out, size_t outlen)
{
    id_claims_t cl = {.user = user, .iat = NOW, .exp = exp};
    char err[200];
    int n = id_signer_mint(es, &cl, out, outlen, err, sizeof(err));
    assert_true(n > 0);
    return n;
}

static void test_claimed_user(void **state)
{
    (void)state;
    /* The user a token claims, for a refusal before its signature check: from
     * the payload unverified (a forged token claims whom it likes), from the
     * cache once verified; nothing from what is not a token. */
    id_cache_t *c = id_cache_new(64);
    char t[2048], u[ID_USER_MAX + 1];
    bool verified = true;
    int n = mint("carol", NOW + 100, t, sizeof(t));
    assert_true(id_claimed_user(v, c, t, (size_t)n, NOW, u, &verified));
    assert_string_equal(u, "carol");
    assert_false(verified);
    id_result_t r;
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_true(id_claimed_user(v, c, t, (size_t)n, NOW + 1, u, &verified));
    assert_string_equal(u, "carol");
    assert_true(verified);
    id_cache_stats_t st;
    id_cache_stats(c, &st);
    assert_int_equal(st.hits, 0); /* a look, not a use */
    /* a forged signature: the claim is read, verification refuses it */
    t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
    assert_true(id_claimed_user(v, c, t, (size_t)n, NOW, u, &verified));
    assert_false(verified);
    assert_int_not_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    /* no user readable */
    const char *bad[] = {"", "abc", "a.b", "..", "a.!!!.c", "eyJhIjoxfQ.eyJzdWIiOjF9.x",
                         "eyJhIjoxfQ.eyJzdWIiOiJhIGIifQ.x" /* {"sub":"a b"} */,
                         "eyJhIjoxfQ.eyJzdWIiOiJhIiwic3ViIjoiYiJ9.x" /* duplicate sub */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(id_claimed_user(v, c, bad[i], strlen(bad[i]), NOW, u, &verified));
    id_cache_free(c);
}

static void test_hit_and_expiry(void **state)
{
    (void)state;
    id_cache_t *c = id_cache_new(64);
    char t[2048];
    int n = mint("alice", NOW + 100, t, sizeof(t));
    id_result_t r;
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_false(r.cached);
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW + 1, &r), ID_OK);
    assert_true(r.cached);
    assert_string_equal(r.user, "alice");
    assert_int_equal(r.exp, NOW + 100);
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW + 99, &r), ID_OK);
    assert_true(r.cached);
    /* at exp the entry is gone: re-verified (inside the leeway: ok, not cached) */
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW + 100, &r), ID_OK);
    assert_false(r.cached);
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW + 101, &r), ID_OK);
    assert_false(r.cached);
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW + 130, &r), ID_EXPIRED);
    /* a token differing in one byte never hits */
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    char sig = t[n - 2];
    t[n - 2] = sig == 'A' ? 'B' : 'A';
    int rc = id_verify_cached(v, c, t, (size_t)n, NOW, &r);
    assert_true(rc == ID_BAD_SIGNATURE || rc == ID_MALFORMED);
    /* a refused token is not cached */
    rc = id_verify_cached(v, c, t, (size_t)n, NOW, &r);
    assert_true(rc == ID_BAD_SIGNATURE || rc == ID_MALFORMED);
    id_cache_stats_t st;
    /* a token that shares a cached one's length and last bytes (the memo's slot,
     * id_cache.c) but not its claims: the whole token is compared, so no hit */
    t[n - 2] = sig; /* the cached token again */
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_true(r.cached);
    char *dot = strchr(t, '.');
    char pl = dot[3];
    dot[3] = pl == 'A' ? 'B' : 'A'; /* the payload's first bytes */
    rc = id_verify_cached(v, c, t, (size_t)n, NOW, &r);
    assert_true(rc == ID_BAD_SIGNATURE || rc == ID_MALFORMED);
    dot[3] = pl;
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_true(r.cached);
    id_cache_stats(c, &st);
    assert_int_equal(st.hits, 4);
    id_cache_free(c);
}

static void test_rotation_invalidates(void **state)
{
    (void)state;
    char err[200];
    id_config_t cfg;
    id_config_defaults(&cfg);
    snprintf(cfg.jwks_url, sizeof(cfg.jwks_url), "http://127.0.0.1:9/jwks.json");
    id_verifier_t *uv = id_verifier_new(&cfg, NULL, err, sizeof(err));
    assert_non_null(uv);
    id_cache_t *c = id_cache_new(64);
    char t[2048];
    int n = mint("bob", NOW + 100, t, sizeof(t));
    id_result_t r;
    assert_int_equal(id_verify_cached(uv, c, t, (size_t)n, NOW, &r), ID_NO_KEYS);
    id_jwks_t *ks = id_signer_jwks(es);
    assert_true(id_verifier_set_keys(uv, ks));
    assert_false(id_verifier_set_keys(uv, ks)); /* same keys: no new generation */
    assert_int_equal(id_verify_cached(uv, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_int_equal(id_verify_cached(uv, c, t, (size_t)n, NOW, &r), ID_OK);
    assert_true(r.cached);
    /* the key is removed: the cached verdict goes with it */
    id_signer_t *other = id_signer_generate("ES256", NULL, err, sizeof(err));
    id_jwks_t *ks2 = id_signer_jwks(other);
    assert_true(id_verifier_set_keys(uv, ks2));
    assert_int_equal(id_verify_cached(uv, c, t, (size_t)n, NOW, &r), ID_UNKNOWN_KID);
    id_jwks_unref(ks);
    id_jwks_unref(ks2);
    id_signer_free(other);
    id_cache_free(c);
    id_verifier_free(uv);
}

static void test_bounded(void **state)
{
    (void)state;
    id_cache_t *c = id_cache_new(16);
    char t[2048];
    for (int i = 0; i < 200; i++) {
        char u[16];
        snprintf(u, sizeof(u), "u%d", i);
        int n = mint(u, NOW + 100 + i, t, sizeof(t));
        id_result_t r;
        assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    }
    id_cache_stats_t st;
    id_cache_stats(c, &st);
    assert_int_equal(st.entries, 16);
    assert_true(st.used <= 16);
    assert_int_equal(st.inserts, 200);
    assert_true(st.evictions >= 200 - 16);
    id_cache_free(c);
}

/* This thread's CPU time (the machine may be shared: wall time counts the neighbours). */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A hit must add at most ~1 us (sanitizers: 20 us); a typical ES256 token (~300 bytes). */
static void test_hit_cost(void **state)
{
    (void)state;
    id_cache_t *c = id_cache_new(4096);
    char t[2048];
    int n = mint("carol-1234567890", NOW + 3600, t, sizeof(t));
    id_result_t r;
    assert_int_equal(id_verify_cached(v, c, t, (size_t)n, NOW, &r), ID_OK);
    const int rounds = 200000;
    uint64_t t0 = cpu_ns();
    for (int i = 0; i < rounds; i++)
        id_verify_cached(v, c, t, (size_t)n, NOW, &r);
    uint64_t ns = (cpu_ns() - t0) / rounds;
    assert_true(r.cached);
    fprintf(stderr, "cache hit: %llu ns for a %d-byte token\n", (unsigned long long)ns, n);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    assert_true(ns < 20000);
#else
    assert_true(ns < 1000);
#endif
    id_cache_free(c);
}

typedef struct worker {
    id_verifier_t *v;
    const char *good, *bad;
    int ok, refused;
} worker_t;

static void *verify_many(void *arg)
{
    worker_t *w = arg;
    id_result_t r;
    for (int i = 0; i < 300; i++) {
        w->ok += id_verify(w->v, w->good, strlen(w->good), NOW, &r) == ID_OK;
        w->refused += id_verify(w->v, w->bad, strlen(w->bad), NOW, &r) == ID_BAD_SIGNATURE;
    }
    return NULL;
}

/* One verifier, several threads: the per-key context pool hands each thread its own. */
static void test_threads(void **state)
{
    (void)state;
    char err[200];
    id_signer_t *rs = id_signer_generate("RS256", NULL, err, sizeof(err));
    id_jwks_t *ks = id_signer_jwks(rs);
    id_config_t c;
    id_config_defaults(&c);
    id_verifier_t *tv = id_verifier_new(&c, ks, err, sizeof(err));
    id_jwks_unref(ks);
    char good[2048], bad[2048];
    id_claims_t cl = {.user = "t", .iat = NOW, .exp = NOW + 60};
    int n = id_signer_mint(rs, &cl, good, sizeof(good), err, sizeof(err));
    assert_true(n > 0);
    memcpy(bad, good, (size_t)n + 1);
    bad[n - 5] = bad[n - 5] == 'A' ? 'B' : 'A';
    enum { N = 12 };
    pthread_t th[N];
    worker_t w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker_t){.v = tv, .good = good, .bad = bad};
        pthread_create(&th[i], NULL, verify_many, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 300);
        assert_int_equal(w[i].refused, 300);
    }
    id_verifier_free(tv);
    id_signer_free(rs);
}

static void test_jwks_refusals(void **state)
{
    (void)state;
    char err[300];
    char *good = id_signer_jwks_json(es);
    id_jwks_t *ks = id_jwks_parse(good, strlen(good), err, sizeof(err));
    assert_non_null(ks);
    assert_int_equal(id_jwks_count(ks), 1);
    id_jwks_unref(ks);
    json_t *root = json_loads(good, 0, NULL);
    json_t *key = json_array_get(json_object_get(root, "keys"), 0);
    struct {
        const char *what, *json;
    } bad[] = {
        {"garbage", "<html>502 Bad Gateway</html>"},
        {"empty", ""},
        {"no keys", "{\"k\":[]}"},
        {"empty set", "{\"keys\":[]}"},
        {"keys not array", "{\"keys\":{}}"},
        {"dup member", "{\"keys\":[],\"keys\":[]}"},
        {"only oct", "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"},
        {"only enc", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"enc\",\"x\":\"a\",\"y\":\"b\"}]}"},
        {"rsa small", "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}"},
        {"ec short", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}"},
        {"ec off curve", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\",\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}"},
        {"no kty", "{\"keys\":[{\"x\":\"a\"}]}"},
        {"not object", "{\"keys\":[7]}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ks = id_jwks_parse(bad[i].json, strlen(bad[i].json), err, sizeof(err));
        if (ks)
            fprintf(stderr, "%s: accepted\n", bad[i].what);
        assert_null(ks);
        assert_true(strlen(err) > 0);
    }
    /* a private member, a bad kid, two keys with one kid, an alg of another type */
    json_t *k2 = json_deep_copy(key);
    json_object_set_new(k2, "d", json_string("AAAA"));
    json_t *s = json_pack("{s:[O]}", "keys", k2);
    char *txt = json_dumps(s, 0);
    assert_null(id_jwks_parse(txt, strlen(txt), err, sizeof(err)));
    assert_non_null(strstr(err, "private"));
    free(txt);
    json_decref(s);
    json_object_del(k2, "d");
    json_object_set_new(k2, "kid", json_string("../../etc/passwd"));
    s = json_pack("{s:[O]}", "keys", k2);
    txt = json_dumps(s, 0);
    assert_null(id_jwks_parse(txt, strlen(txt), err, sizeof(err)));
    free(txt);
    json_decref(s);
    s = json_pack("{s:[O,O]}", "keys", key, key);
    txt = json_dumps(s, 0);
    assert_null(id_jwks_parse(txt, strlen(txt), err, sizeof(err)));
    assert_non_null(strstr(err, "two keys"));
    free(txt);
    json_decref(s);
    json_object_set_new(k2, "kid", json_string("k"));
    json_object_set_new(k2, "alg", json_string("RS256"));
    s = json_pack("{s:[O]}", "keys", k2);
    txt = json_dumps(s, 0);
    assert_null(id_jwks_parse(txt, strlen(txt), err, sizeof(err)));
    free(txt);
    json_decref(s);
    json_decref(k2);
    /* an encryption key and an unknown curve next to a good one are skipped */
    json_t *enc = json_deep_copy(key);
    json_object_set_new(enc, "use", json_string("enc"));
    json_object_set_new(enc, "kid", json_string("enc-1"));
    json_t *x = json_pack("{s:s,s:s,s:s}", "kty", "OKP", "crv", "X25519", "x", "AAAA");
    json_array_append_new(json_object_get(root, "keys"), x);
    s = json_pack("{s:[O,o,O]}", "keys", key, enc, x);
    txt = json_dumps(s, 0);
    ks = id_jwks_parse(txt, strlen(txt), err, sizeof(err));
    assert_non_null(ks);
    assert_int_equal(id_jwks_count(ks), 1);
    id_jwks_unref(ks);
    free(txt);
    json_decref(s);
    /* over 1 MiB */
    size_t big = ID_JWKS_MAX_BYTES + 10;
    char *b = malloc(big);
    memset(b, ' ', big);
    memcpy(b, good, strlen(good));
    assert_null(id_jwks_parse(b, big, err, sizeof(err)));
    free(b);
    json_decref(root);
    free(good);
}

static void test_key_file(void **state)
{
    (void)state;
    char err[300], path[160];
    char d[128];
    snprintf(d, sizeof(d), "%s/data", dir);
    mkdir(d, 0700);
    assert_null(id_keys_ensure(d, false, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file"));
    id_signer_t *s1 = id_keys_ensure(d, true, err, sizeof(err));
    assert_non_null(s1);
    assert_string_equal(id_signer_alg(s1), "ES256");
    snprintf(path, sizeof(path), "%s/%s", d, ID_KEY_FILE);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    id_signer_t *s2 = id_keys_ensure(d, true, err, sizeof(err));
    assert_non_null(s2);
    assert_string_equal(id_signer_kid(s1), id_signer_kid(s2)); /* the same key, not a new one */
    /* the public half verifies what the private half mints */
    id_jwks_t *ks = id_signer_jwks(s1);
    id_config_t c;
    id_config_defaults(&c);
    id_verifier_t *kv = id_verifier_new(&c, ks, err, sizeof(err));
    char t[2048];
    id_claims_t cl = {.user = "alice", .person = "p-1", .iat = NOW, .exp = NOW + 60};
    int n = id_signer_mint(s2, &cl, t, sizeof(t), err, sizeof(err));
    assert_true(n > 0);
    id_result_t r;
    assert_int_equal(id_verify(kv, t, (size_t)n, NOW, &r), ID_OK);
    char *pub = id_signer_jwks_json(s1);
    assert_null(strstr(pub, "\"d\""));
    free(pub);
    id_verifier_free(kv);
    id_jwks_unref(ks);
    id_signer_free(s1);
    id_signer_free(s2);
    /* group-readable, symlink, not a key */
    chmod(path, 0640);
    assert_null(id_keys_ensure(d, true, err, sizeof(err)));
    assert_non_null(strstr(err, "chmod 600"));
    chmod(path, 0600);
    /* another uid's key file: refused (whoever owns it can swap it) */
    if (geteuid() == 0) {
        assert_int_equal(chown(path, 65534, 65534), 0);
        assert_null(id_keys_ensure(d, true, err, sizeof(err)));
        assert_non_null(strstr(err, "not by the running uid"));
        assert_int_equal(chown(path, 0, 0), 0);
    }
    /* a data dir group or others may write: refused (they could rename a key in) */
    chmod(d, 0770);
    assert_null(id_keys_ensure(d, true, err, sizeof(err)));
    assert_non_null(strstr(err, "chmod go-w"));
    chmod(d, 0700);
    id_signer_t *s3 = id_keys_ensure(d, true, err, sizeof(err));
    assert_non_null(s3);
    id_signer_free(s3);
    char link[160];
    snprintf(link, sizeof(link), "%s/link.key", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_null(id_signer_open(link, err, sizeof(err)));
    assert_non_null(strstr(err, "symlink"));
    char junk[160];
    snprintf(junk, sizeof(junk), "%s/junk/", dir);
    mkdir(junk, 0700);
    strcat(junk, ID_KEY_FILE);
    int fd = open(junk, O_WRONLY | O_CREAT, 0600);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    assert_null(id_signer_open(junk, err, sizeof(err)));
    assert_non_null(strstr(err, "not a PEM private key"));
    /* bad mint input */
    cl.user = "a b";
    assert_int_equal(id_signer_mint(es, &cl, t, sizeof(t), err, sizeof(err)), CM_EINVAL);
    cl.user = "ok";
    assert_int_equal(id_signer_mint(es, &cl, t, 20, err, sizeof(err)), CM_EFULL);
}

static void test_config(void **state)
{
    (void)state;
    id_config_t c;
    char err[300];
    id_config_defaults(&c);
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    snprintf(c.algorithms, sizeof(c.algorithms), "RS256,none");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "\"none\""));
    snprintf(c.algorithms, sizeof(c.algorithms), "HS256");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "hmac_secret_file"));
    snprintf(c.hmac_secret_file, sizeof(c.hmac_secret_file), "/x");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    id_config_defaults(&c);
    snprintf(c.hmac_secret_file, sizeof(c.hmac_secret_file), "/x");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    id_config_defaults(&c);
    c.issuer[0] = '\0';
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    id_config_defaults(&c);
    snprintf(c.audience, sizeof(c.audience), " , ");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    snprintf(c.audience, sizeof(c.audience), "a,b,c,d,e,f,g,h,i");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    snprintf(c.audience, sizeof(c.audience), "shop-web, shop-app");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    snprintf(c.jwks_url, sizeof(c.jwks_url), "file:///etc/passwd");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "jwks_url"));
    /* plain http:// only to loopback, or opted in */
    const char *http_bad[] = {"http://keys.example.com/jwks", "http://10.0.0.1/jwks",
                              "http://localhost.evil.example/", "http://127.0.0.1@evil.example/",
                              "http://[::2]/"};
    for (size_t i = 0; i < sizeof(http_bad) / sizeof(http_bad[0]); i++) {
        snprintf(c.jwks_url, sizeof(c.jwks_url), "%s", http_bad[i]);
        assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
        assert_non_null(strstr(err, "jwks_allow_http"));
    }
    const char *http_ok[] = {"http://127.0.0.1:8080/jwks", "http://localhost/jwks",
                             "http://[::1]:9000/k", "https://keys.example.com/jwks"};
    for (size_t i = 0; i < sizeof(http_ok) / sizeof(http_ok[0]); i++) {
        snprintf(c.jwks_url, sizeof(c.jwks_url), "%s", http_ok[i]);
        assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    }
    snprintf(c.jwks_url, sizeof(c.jwks_url), "http://keys.example.com/jwks");
    c.jwks_allow_http = true;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    c.jwks_allow_http = false;
    c.jwks_url[0] = '\0';
    /* max_token_bytes fits the 8 KiB head */
    c.max_token_bytes = 8192;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    c.max_token_bytes = ID_TOKEN_LIMIT;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    snprintf(c.typ, sizeof(c.typ), "at jwt");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    c.typ[0] = '\0';
    id_config_defaults(&c);
    c.leeway_s = 601;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    id_config_defaults(&c);
    c.max_token_bytes = 65536;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    id_config_defaults(&c);
    c.jwks_min_refetch_s = 0;
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    id_config_defaults(&c);
    snprintf(c.user_claim, sizeof(c.user_claim), "a b");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    /* no key source at all */
    id_config_defaults(&c);
    assert_null(id_verifier_new(&c, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no key source"));
    snprintf(c.jwks_file, sizeof(c.jwks_file), "%s/missing.json", dir);
    assert_null(id_verifier_new(&c, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "jwks_file"));
    /* audiences: any of the list */
    id_config_defaults(&c);
    snprintf(c.audience, sizeof(c.audience), "shop-web,shop-app");
    id_jwks_t *ks = id_signer_jwks(es);
    id_verifier_t *av = id_verifier_new(&c, ks, err, sizeof(err));
    id_jwks_unref(ks);
    char t[2048];
    id_claims_t cl = {.user = "u", .audience = "shop-app", .iat = NOW, .exp = NOW + 60};
    int n = id_signer_mint(es, &cl, t, sizeof(t), err, sizeof(err));
    id_result_t r;
    assert_int_equal(id_verify(av, t, (size_t)n, NOW, &r), ID_OK);
    cl.audience = "flashgate";
    n = id_signer_mint(es, &cl, t, sizeof(t), err, sizeof(err));
    assert_int_equal(id_verify(av, t, (size_t)n, NOW, &r), ID_WRONG_AUDIENCE);
    id_verifier_free(av);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_expiry), cmocka_unit_test(test_claimed_user), cmocka_unit_test(test_rotation_invalidates),
        cmocka_unit_test(test_bounded),        cmocka_unit_test(test_hit_cost),
        cmocka_unit_test(test_jwks_refusals),  cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_config),         cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
