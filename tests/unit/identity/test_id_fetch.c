/*
 * The JWKS fetcher against a real HTTP server (python3 -m http.server on
 * 127.0.0.1 at a free port, serving a temp dir, started and stopped by PID):
 * rotation, endpoint down at start and mid-run, garbage and 10 MiB answers,
 * a flood of unknown kids, the cache file across a restart. The server's
 * request log counts the fetches.
 */
#include "identity/id.h"

#include "common/cm_time.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static char dir[64], www[96], logpath[128];
static int port;
static pid_t server = -1;
static id_signer_t *ka, *kb;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    bind(s, (struct sockaddr *)&a, sizeof(a));
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    return ntohs(a.sin_port);
}

static bool reachable(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(s);
    return ok;
}

static void server_stop(void);

static void server_start(void)
{
    server_stop(); /* a test that failed midway left its server running */
    server = fork();
    assert_true(server >= 0);
    if (server == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        char p[16];
        snprintf(p, sizeof(p), "%d", port);
        execlp("python3", "python3", "-m", "http.server", p, "--bind", "127.0.0.1", "--directory",
               www, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !reachable(); i++)
        usleep(25000);
    assert_true(reachable());
}

static void server_stop(void)
{
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        server = -1;
    }
}

/* GETs of /jwks.json the server has logged. */
static int fetches(void)
{
    FILE *f = fopen(logpath, "r");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "\"GET /jwks.json"))
            n++;
    fclose(f);
    return n;
}

static void serve(const char *body, size_t n)
{
    char tmp[160], path[160];
    snprintf(tmp, sizeof(tmp), "%s/.jwks.tmp", www);
    snprintf(path, sizeof(path), "%s/jwks.json", www);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(body, 1, n, f), n);
    fclose(f);
    rename(tmp, path);
}

static void serve_keys(id_signer_t **ss, size_t n)
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
    serve(s, strlen(s));
    free(s);
    json_decref(root);
}

static void config(id_config_t *c, uint32_t refresh_s, uint32_t min_refetch_s)
{
    id_config_defaults(c);
    snprintf(c->jwks_url, sizeof(c->jwks_url), "http://127.0.0.1:%d/jwks.json", port);
    snprintf(c->jwks_cache_file, sizeof(c->jwks_cache_file), "%s/jwks.cache.json", dir);
    c->jwks_refresh_s = refresh_s;
    c->jwks_min_refetch_s = min_refetch_s;
    c->jwks_timeout_ms = 2000;
}

static int verify_now(id_verifier_t *v, id_signer_t *s, const char *kid_override)
{
    char t[2048], err[200];
    int64_t now = cm_wall_ms() / 1000;
    id_claims_t cl = {.user = "alice", .iat = now, .exp = now + 600};
    int n;
    if (kid_override) {
        char h[256], p[256];
        snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid_override);
        snprintf(p, sizeof(p), "{\"iss\":\"flashgate\",\"aud\":\"flashgate\",\"sub\":\"a\",\"exp\":%lld}",
                 (long long)now + 600);
        n = id_signer_sign_raw(s, h, strlen(h), p, strlen(p), t, sizeof(t));
    } else {
        n = id_signer_mint(s, &cl, t, sizeof(t), err, sizeof(err));
    }
    assert_true(n > 0);
    id_result_t r;
    return id_verify(v, t, (size_t)n, now, &r);
}

/* Polls until verify_now gives `want` (bounded). */
static void await(id_verifier_t *v, id_signer_t *s, int want, int ms)
{
    int got = -1;
    for (int i = 0; i < ms / 50; i++) {
        if ((got = verify_now(v, s, NULL)) == want)
            return;
        usleep(50000);
    }
    fprintf(stderr, "await: got %s, want %s\n", id_outcome_name(got), id_outcome_name(want));
    fail();
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/fg-idf-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(www, sizeof(www), "%s/www", dir);
    snprintf(logpath, sizeof(logpath), "%s/http.log", dir);
    mkdir(www, 0755);
    port = free_port();
    char err[200];
    ka = id_signer_generate("ES256", "key-a", err, sizeof(err));
    kb = id_signer_generate("ES256", "key-b", err, sizeof(err));
    assert_true(ka && kb);
    if (system("python3 -c 'import http.server' 2>/dev/null") != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    server_stop();
    id_signer_free(ka);
    id_signer_free(kb);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* Down at start with no last good keys: refused with the reason. */
static void test_down_at_start(void **state)
{
    (void)state;
    id_config_t c;
    config(&c, 300, 1);
    char err[400];
    unlink(c.jwks_cache_file);
    id_verifier_t *v = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(v);
    assert_int_equal(verify_now(v, ka, NULL), ID_NO_KEYS);
    assert_null(id_fetcher_start(v, &c, err, sizeof(err)));
    assert_non_null(strstr(err, "jwks_url"));
    fprintf(stderr, "down at start: %s\n", err);
    id_verifier_free(v);
}

static void test_rotation_and_outage(void **state)
{
    (void)state;
    id_signer_t *a[] = {ka}, *ab[] = {ka, kb}, *b[] = {kb};
    serve_keys(a, 1);
    server_start();
    id_config_t c;
    config(&c, 1, 1);
    char err[400];
    id_verifier_t *v = id_verifier_new(&c, NULL, err, sizeof(err));
    id_fetcher_t *f = id_fetcher_start(v, &c, err, sizeof(err));
    assert_non_null(f);
    assert_int_equal(verify_now(v, ka, NULL), ID_OK);
    assert_int_equal(verify_now(v, kb, NULL), ID_UNKNOWN_KID);
    /* a new kid appears: used after one refetch (asked by the unknown kid or the refresh) */
    serve_keys(ab, 2);
    await(v, kb, ID_OK, 20000);
    assert_int_equal(verify_now(v, ka, NULL), ID_OK);
    /* key a is removed: it stops verifying after the refresh */
    serve_keys(b, 1);
    await(v, ka, ID_UNKNOWN_KID, 20000);
    assert_int_equal(verify_now(v, kb, NULL), ID_OK);
    /* the cache file holds the last good set */
    id_jwks_t *cached = id_jwks_load(c.jwks_cache_file, err, sizeof(err));
    assert_non_null(cached);
    assert_int_equal(id_jwks_count(cached), 1);
    id_jwks_unref(cached);
    /* garbage: refused, last good keys kept */
    id_fetch_stats_t st0, st;
    id_fetch_stats(f, v, &st0);
    serve("<html>oops</html>", 17);
    for (int i = 0; i < 400; i++) { /* 20 s: a loaded machine refreshes late */
        id_fetch_stats(f, v, &st);
        if (st.failed > st0.failed)
            break;
        usleep(50000);
    }
    assert_true(st.failed > st0.failed);
    fprintf(stderr, "garbage: %s\n", st.last_error);
    assert_int_equal(verify_now(v, kb, NULL), ID_OK);
    /* 10 MiB: refused, bounded, last good keys kept */
    size_t big = 10u << 20;
    char *body = malloc(big);
    memset(body, ' ', big);
    memcpy(body, "{\"keys\":[", 9);
    body[big - 2] = ']';
    body[big - 1] = '}';
    serve(body, big);
    free(body);
    id_fetch_stats(f, v, &st0);
    for (int i = 0; i < 400; i++) {
        id_fetch_stats(f, v, &st);
        if (st.failed > st0.failed)
            break;
        usleep(50000);
    }
    assert_true(st.failed > st0.failed);
    fprintf(stderr, "10 MiB: %s\n", st.last_error);
    assert_non_null(strstr(st.last_error, "over"));
    assert_int_equal(verify_now(v, kb, NULL), ID_OK);
    /* endpoint down mid-run: keeps verifying with the last good keys */
    serve_keys(b, 1);
    server_stop();
    id_fetch_stats(f, v, &st0);
    for (int i = 0; i < 400; i++) {
        id_fetch_stats(f, v, &st);
        if (st.failed > st0.failed + 1)
            break;
        usleep(50000);
    }
    assert_true(st.failed > st0.failed + 1);
    fprintf(stderr, "down: %s\n", st.last_error);
    assert_int_equal(verify_now(v, kb, NULL), ID_OK);
    assert_int_equal(st.keys, 1);
    assert_true(st.last_ok_ms > 0);
    id_fetcher_stop(f);
    id_verifier_free(v);

    /* restart with the endpoint down: starts from the cache file's keys */
    v = id_verifier_new(&c, NULL, err, sizeof(err));
    assert_non_null(v);
    f = id_fetcher_start(v, &c, err, sizeof(err));
    assert_non_null(f);
    assert_int_equal(verify_now(v, kb, NULL), ID_OK);
    assert_int_equal(verify_now(v, ka, NULL), ID_UNKNOWN_KID);
    id_fetcher_stop(f);
    id_verifier_free(v);
}

/* 5,000 tokens with unknown kids in under 2 s: at most one refetch. */
static void test_unknown_kid_flood(void **state)
{
    (void)state;
    id_signer_t *a[] = {ka};
    serve_keys(a, 1);
    server_start();
    id_config_t c;
    config(&c, 3600, 2);
    char err[400];
    id_verifier_t *v = id_verifier_new(&c, NULL, err, sizeof(err));
    id_fetcher_t *f = id_fetcher_start(v, &c, err, sizeof(err));
    assert_non_null(f);
    usleep(200000);
    int before = fetches();
    uint64_t t0 = cm_mono_ms();
    char kid[32];
    int n = 0;
    while (cm_mono_ms() - t0 < 1500 && n < 5000) {
        snprintf(kid, sizeof(kid), "flood-%d", n++);
        assert_int_equal(verify_now(v, ka, kid), ID_UNKNOWN_KID);
    }
    usleep(500000);
    int after = fetches();
    id_fetch_stats_t st;
    id_fetch_stats(f, v, &st);
    fprintf(stderr, "flood: %d unknown kids, fetches %d -> %d, granted %llu denied %llu\n", n,
            before, after, (unsigned long long)st.refetch_granted,
            (unsigned long long)st.refetch_denied);
    assert_true(n >= 200);
    assert_true(after - before <= 1);
    assert_true(st.refetch_granted <= 1);
    assert_int_equal(st.refetch_granted + st.refetch_denied, (uint64_t)n);
    id_fetcher_stop(f);
    id_verifier_free(v);
    server_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_down_at_start),
        cmocka_unit_test(test_rotation_and_outage),
        cmocka_unit_test(test_unknown_kid_flood),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
