/*
 * The fleet's waiting room (gateway/buy/gw_room_fleet.c, gw_fair__room_redis_ops)
 * against a real redis-server (started here on 127.0.0.1 at a free port, stopped
 * by PID), each gateway a gw_fair_t with its own pools and its own copy of the
 * room: which seed a gateway offers to a room Redis no longer holds
 * (docs/fleet.md "Waiting room").
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
#include "common/cm_url.h"
#include "tests/support/ts_redis.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static ts_redis_t srv;

#define SALE "rf"
#define WR "{flashgate:fair:" SALE "}:wr"
#define STARTS_MS 10000

/* One gateway: its fairness state (the two pools only) and its slot of the room. */
typedef struct gw {
    gw_fair_t *f;
    gw_fair_sale_t *fs;
} gw_t;

static void gw_new(gw_t *g, uint64_t k0)
{
    char url[128], why[256] = "";
    g->f = calloc(1, sizeof(*g->f));
    g->fs = calloc(1, sizeof(*g->fs));
    assert_non_null(g->f);
    assert_non_null(g->fs);
    assert_int_equal(cm_redis_url_parse(ts_redis_url(&srv, url, sizeof(url), NULL), &g->f->addr,
                                        why, sizeof(why)),
                     0);
    gw_fair__pool_init(&g->f->loop_pool, &g->f->addr, 2, 2000, false);
    gw_fair__pool_init(&g->f->pool, &g->f->addr, 2, 2000, false);
    snprintf(g->fs->sale_id, sizeof(g->fs->sale_id), SALE);
    g->fs->f = g->f;
    pthread_mutex_init(&g->fs->wr_mu, NULL);
    g->fs->wr_seed = (cm_hash_key_t){k0, ~k0}; /* this gateway's own, drawn at its start */
    atomic_store(&g->fs->sale.cfg.starts_at_ms, STARTS_MS); /* the sale's start, as its PUT sets */
}

/* Each test's room starts empty. */
static int flush(void **st)
{
    (void)st;
    char buf[64];
    return ts_redis_cmd(&srv, buf, sizeof(buf), "FLUSHALL");
}

static void gw_free(gw_t *g)
{
    gw_fair__pool_deinit(&g->f->loop_pool);
    gw_fair__pool_deinit(&g->f->pool);
    pthread_mutex_destroy(&g->fs->wr_mu);
    free(g->fs);
    free(g->f);
}

static int join(gw_t *g, const char *person, int64_t now_ms, gw_wr_join_t *out)
{
    gw_room_join_ev_t ev = {
        .person = person, .len = strlen(person), .take = true, .now_ms = now_ms};
    return gw_fair__room_redis_ops.join(g->fs, &ev, out);
}

/* The lottery thread's step at now_ms: 10 admissions a second, one member. */
static void tick(gw_t *g, int64_t now_ms)
{
    gw_fair__room_redis_ops.tick(g->fs, now_ms, 100, now_ms >= STARTS_MS, STARTS_MS, 10.0, 1);
}

static void seed_hex(const gw_t *g, char hex[33])
{
    gw_fair__seed_hex(&g->fs->wr_seed, hex);
}

/*
 * Redis lost the room after its seal (a restart without persistence). A, whose
 * own seed Redis took before the start, and B, which adopted it before the
 * start, saw no reply after the seal that C's tick made; C saw it. None of the
 * three may make the room again with that seed: its places would take the old
 * replay ids, and a token of the old room would admit to the new one. A gateway
 * with another seed makes the room again, and A then joins it.
 */
static void test_published_seed_not_offered_after_loss(void **st)
{
    (void)st;
    char buf[128], old[33];
    gw_t a, b, c, d;
    gw_new(&a, 0x1111);
    gw_new(&b, 0x2222);
    gw_new(&c, 0x3333);
    gw_new(&d, 0x4444);
    gw_wr_join_t j;
    /* before the start: A's seed is the room's, B and C adopt it */
    assert_int_equal(join(&a, "p1", 1000, &j), 0);
    assert_true(j.prequeue);
    seed_hex(&a, old);
    assert_int_equal(join(&b, "p2", 1100, &j), 0);
    assert_true(j.prequeue);
    tick(&c, 1200);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "HGET %s seed", WR), 0);
    assert_string_equal(buf, old);
    /* C seals at the start and admits p1, whose token is keyed by the seed */
    tick(&c, STARTS_MS);
    assert_int_not_equal(c.fs->wr_core.sealed_ms, 0);
    assert_int_equal(b.fs->wr_core.sealed_ms, 0);
    assert_int_equal(a.fs->wr_core.sealed_ms, 0);
    tick(&c, STARTS_MS + 1000);
    assert_int_equal(join(&c, "p1", STARTS_MS + 1000, &j), 0);
    assert_int_equal(j.pos, 1);
    assert_int_not_equal(j.exp_s, 0);
    uint64_t old_jti = j.jti;

    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "FLUSHALL"), 0);
    /* the own seed, the adopted one and the one seen sealed: none is offered */
    assert_int_equal(join(&a, "p1", STARTS_MS + 2000, &j), CM_EBACKEND);
    assert_int_equal(join(&b, "p1", STARTS_MS + 2000, &j), CM_EBACKEND);
    tick(&b, STARTS_MS + 2000);
    tick(&c, STARTS_MS + 2000);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "EXISTS %s", WR), 0);
    assert_string_equal(buf, "0");

    /* D never held a room: its seed makes the room again, A takes it */
    char fresh[33];
    seed_hex(&d, fresh);
    tick(&d, STARTS_MS + 3000);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "HGET %s seed", WR), 0);
    assert_string_equal(buf, fresh);
    tick(&d, STARTS_MS + 4000);
    assert_int_equal(join(&a, "p1", STARTS_MS + 4000, &j), 0);
    assert_int_equal(j.pos, 1);
    assert_int_not_equal(j.exp_s, 0);
    assert_true(j.jti != old_jti);
    seed_hex(&a, buf);
    assert_string_equal(buf, fresh);

    gw_free(&a);
    gw_free(&b);
    gw_free(&c);
    gw_free(&d);
}

/*
 * The clocks differ: C, ahead, sealed the room by its clock and admitted p1; Redis
 * lost the room before A's clock, behind C's by less than the fleet's skew, reached
 * the start. A held the seed and saw no seal: it must not offer it either.
 */
static void test_published_seed_not_offered_behind_the_sealer(void **st)
{
    (void)st;
    char buf[128];
    gw_t a, c;
    gw_new(&a, 0x6666);
    gw_new(&c, 0x7777);
    gw_wr_join_t j;
    assert_int_equal(join(&a, "p2", 1000, &j), 0);
    assert_true(j.prequeue);
    tick(&c, STARTS_MS);
    assert_int_not_equal(c.fs->wr_core.sealed_ms, 0);
    tick(&c, STARTS_MS + 200);
    assert_int_equal(join(&c, "p1", STARTS_MS + 200, &j), 0);
    assert_int_not_equal(j.exp_s, 0);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "FLUSHALL"), 0);
    /* A's clock is 300 ms behind C's */
    assert_int_equal(join(&a, "p3", STARTS_MS - 100, &j), CM_EBACKEND);
    tick(&a, STARTS_MS - 100);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "EXISTS %s", WR), 0);
    assert_string_equal(buf, "0");
    gw_free(&a);
    gw_free(&c);
}

/* Before the start no token exists: a room lost then is made again with the seed it had. */
static void test_seed_offered_again_before_start(void **st)
{
    (void)st;
    char buf[128], own[33];
    gw_t a;
    gw_new(&a, 0x5555);
    gw_wr_join_t j;
    seed_hex(&a, own);
    assert_int_equal(join(&a, "p1", 1000, &j), 0);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "FLUSHALL"), 0);
    assert_int_equal(join(&a, "p1", 2000, &j), 0);
    assert_true(j.prequeue);
    assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), "HGET %s seed", WR), 0);
    assert_string_equal(buf, own);
    gw_free(&a);
}

int main(void)
{
    if (ts_redis_start(&srv, false) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_published_seed_not_offered_after_loss, flush),
        cmocka_unit_test_setup(test_seed_offered_again_before_start, flush),
        cmocka_unit_test_setup(test_published_seed_not_offered_behind_the_sealer, flush),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ts_redis_free(&srv);
    return rc;
}
