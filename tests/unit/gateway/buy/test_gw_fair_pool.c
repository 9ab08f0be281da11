/*
 * gw_fair_pool: the worker loops' pool of fleet connections against a peer
 * that accepts TCP and never answers (a listening socket nobody reads: what a
 * SIGSTOPped or hung redis-server looks like to a client). A call waits out
 * the pool's timeout once, then the pool fails fast: every get fails at once
 * for GW_FAIR_FAIL_FAST_MS (the fake monotonic clock moves it); past it one
 * caller probes while the others still fail fast; a failed probe keeps the
 * same window (counted once); an answered call closes it. The pool without
 * fail_fast never refuses. The routes and a real redis-server stopped with
 * SIGSTOP: tests/integration/111-fleet-stall.py.
 */
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
#include "common/cm_time.h"
#include "common/cm_url.h"
#include "inventory/inv_fleet.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define TIMEOUT_MS 200

typedef struct peer {
    int lfd;
    cm_redis_url_t addr;
} peer_t;

/* A listening socket on 127.0.0.1 that the test accepts from only when it says so. */
static void peer_open(peer_t *p)
{
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p->lfd, 16), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &len), 0);
    char url[64], why[256] = "";
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(cm_redis_url_parse(url, &p->addr, why, sizeof(why)), 0);
}

static uint64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One registration check through the pool; *ms: its real duration. */
static int pooled_call(gw_fair_pool_t *pool, uint64_t *ms)
{
    char why[256] = "";
    bool has = false;
    uint64_t t0 = real_ms();
    inv_fleet_conn_t *c = gw_fair__pool_get(pool, why, sizeof(why));
    int rc = c ? gw_fair_redis_reg_has(c, "s1", "p1", &has, why, sizeof(why)) : CM_EBACKEND;
    gw_fair__pool_put(pool, c);
    *ms = real_ms() - t0;
    return rc;
}

static json_int_t pool_stat(const gw_fair_pool_t *pool, const char *name)
{
    json_t *o = json_object();
    gw_fair__pool_stats(pool, o);
    json_int_t v = json_integer_value(json_object_get(json_object_get(o, "worker_redis"), name));
    json_decref(o);
    return v;
}

static void test_stalled_peer_fails_fast(void **state)
{
    (void)state;
    peer_t peer;
    peer_open(&peer);
    cm_time_set_fake(true, 1000000000ull, 1700000000000);
    gw_fair_pool_t pool;
    gw_fair__pool_init(&pool, &peer.addr, 4, TIMEOUT_MS, true);

    /* the first GW_FAIR_FAIL_FAST_AFTER calls wait out the timeout (the connect
     * itself succeeds); the last of them opens the window */
    uint64_t ms;
    for (unsigned i = 1; i <= GW_FAIR_FAIL_FAST_AFTER; i++) {
        assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
        assert_true(ms >= TIMEOUT_MS - 5 && ms < 1000);
        assert_int_equal(pool_stat(&pool, "failed"), i);
        assert_int_equal(pool_stat(&pool, "windows"), i == GW_FAIR_FAIL_FAST_AFTER);
    }

    /* inside the window: at once, nothing sent, counted */
    char why[256] = "";
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
        assert_true(ms < TIMEOUT_MS / 2);
    }
    assert_null(gw_fair__pool_get(&pool, why, sizeof(why)));
    assert_non_null(strstr(why, "not asked again"));
    assert_int_equal(pool_stat(&pool, "refused_fast"), 4);
    assert_int_equal(pool_stat(&pool, "failed"), GW_FAIR_FAIL_FAST_AFTER);
    cm_time_advance_fake((GW_FAIR_FAIL_FAST_MS - 1) * 1000000ull);
    assert_null(gw_fair__pool_get(&pool, why, sizeof(why)));

    /* past it: one probe; the others still fail at once while it runs */
    cm_time_advance_fake(1000000ull);
    inv_fleet_conn_t *probe = gw_fair__pool_get(&pool, why, sizeof(why));
    assert_non_null(probe);
    assert_null(gw_fair__pool_get(&pool, why, sizeof(why)));
    bool has = false;
    assert_int_equal(gw_fair_redis_reg_has(probe, "s1", "p1", &has, why, sizeof(why)), CM_EBACKEND);
    gw_fair__pool_put(&pool, probe);
    assert_int_equal(pool_stat(&pool, "windows"), 1); /* the same outage */
    assert_int_equal(pool_stat(&pool, "failed"), GW_FAIR_FAIL_FAST_AFTER + 1);
    assert_null(gw_fair__pool_get(&pool, why, sizeof(why)));

    /* the peer answers: the probe's call succeeds and closes the window */
    cm_time_advance_fake(GW_FAIR_FAIL_FAST_MS * 1000000ull);
    probe = gw_fair__pool_get(&pool, why, sizeof(why));
    assert_non_null(probe);
    /* the probe's connection is the newest in the backlog; drop the failed
     * calls' before it */
    int dead[GW_FAIR_FAIL_FAST_AFTER + 1];
    for (unsigned i = 0; i < GW_FAIR_FAIL_FAST_AFTER + 1; i++) {
        dead[i] = accept(peer.lfd, NULL, NULL);
        assert_true(dead[i] >= 0);
    }
    int live = accept(peer.lfd, NULL, NULL);
    assert_true(live >= 0);
    assert_int_equal(write(live, "$1\r\n1\r\n", 7), 7);
    assert_int_equal(gw_fair_redis_reg_has(probe, "s1", "p1", &has, why, sizeof(why)), 0);
    assert_true(has);
    gw_fair__pool_put(&pool, probe);
    json_t *o = json_object();
    gw_fair__pool_stats(&pool, o);
    assert_true(json_is_false(json_object_get(json_object_get(o, "worker_redis"), "failing_fast")));
    json_decref(o);
    /* and the connection answered went back to the pool, for the next call (a
     * PING first if it sat idle: either reads a reply that is not an error) */
    assert_int_equal(write(live, "+PONG\r\n:0\r\n", 11), 11);
    assert_int_equal(pooled_call(&pool, &ms), 0);
    assert_int_equal(pool_stat(&pool, "windows"), 1);

    gw_fair__pool_deinit(&pool);
    for (unsigned i = 0; i < GW_FAIR_FAIL_FAST_AFTER + 1; i++)
        close(dead[i]);
    close(live);
    close(peer.lfd);
    cm_time_set_fake(false, 0, 0);
}

/* An answer resets the count: failures in a row open the window, failures
 * with an answer between them do not. */
static void test_answer_resets_count(void **state)
{
    (void)state;
    peer_t peer;
    peer_open(&peer);
    gw_fair_pool_t pool;
    gw_fair__pool_init(&pool, &peer.addr, 4, TIMEOUT_MS, true);
    uint64_t ms;
    for (unsigned i = 0; i + 1 < GW_FAIR_FAIL_FAST_AFTER; i++)
        assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
    /* a call the peer answers (its connection is the newest in the backlog) */
    char why[256] = "";
    inv_fleet_conn_t *c = gw_fair__pool_get(&pool, why, sizeof(why));
    assert_non_null(c);
    int dead[GW_FAIR_FAIL_FAST_AFTER];
    for (unsigned i = 0; i + 1 < GW_FAIR_FAIL_FAST_AFTER; i++) {
        dead[i] = accept(peer.lfd, NULL, NULL);
        assert_true(dead[i] >= 0);
    }
    int live = accept(peer.lfd, NULL, NULL);
    assert_true(live >= 0);
    assert_int_equal(write(live, ":1\r\n", 4), 4);
    bool has = false;
    assert_int_equal(gw_fair_redis_reg_has(c, "s1", "p1", &has, why, sizeof(why)), 0);
    gw_fair__pool_put(&pool, c);
    /* as many failures again, minus one: no window; one more opens it */
    for (unsigned i = 0; i + 1 < GW_FAIR_FAIL_FAST_AFTER; i++)
        assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
    assert_int_equal(pool_stat(&pool, "windows"), 0);
    assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
    assert_int_equal(pool_stat(&pool, "windows"), 1);
    assert_int_equal(pool_stat(&pool, "failed"), 2 * GW_FAIR_FAIL_FAST_AFTER - 1);
    gw_fair__pool_deinit(&pool);
    for (unsigned i = 0; i + 1 < GW_FAIR_FAIL_FAST_AFTER; i++)
        close(dead[i]);
    close(live);
    close(peer.lfd);
}

/* The other threads' pool (fail_fast off) asks Redis every time. */
static void test_no_window_without_fail_fast(void **state)
{
    (void)state;
    peer_t peer;
    peer_open(&peer);
    gw_fair_pool_t pool;
    gw_fair__pool_init(&pool, &peer.addr, 2, TIMEOUT_MS, false);
    uint64_t ms;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pooled_call(&pool, &ms), CM_EBACKEND);
        assert_true(ms >= TIMEOUT_MS - 5);
    }
    assert_int_equal(pool_stat(&pool, "refused_fast"), 0);
    assert_int_equal(pool_stat(&pool, "windows"), 0);
    assert_int_equal(pool_stat(&pool, "failed"), 2);
    gw_fair__pool_deinit(&pool);
    close(peer.lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stalled_peer_fails_fast),
        cmocka_unit_test(test_answer_resets_count),
        cmocka_unit_test(test_no_window_without_fail_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
