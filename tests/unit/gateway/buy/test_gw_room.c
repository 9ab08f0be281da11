/*
 * gw_room: the waiting room's pre-queue and admission tokens. The pre-queue's
 * order is uniform whatever the arrival order (chi-square over seeded runs,
 * as the draw's test does for gw_fair_order), a person holds one place
 * however often they join, before and after the start, a later arrival
 * queues behind the pre-queue, the published seed reproduces the ranks, an
 * admitted place keeps one token, and a token's replay id is claimed by
 * exactly one of many concurrent buys. The HTTP side runs in
 * tests/integration/101-prequeue.py.
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_journal.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* chi-square critical value at p = 0.001, 49 degrees of freedom */
#define CHI2_49_P001 85.35

/* The pre-queue's ranks over many seeds: each of 8 persons (joined in the
 * order 0..7: person 0 is the scalper who came first) is equally likely at
 * every rank, and the first-comer's mean rank is the middle one. Fixed seeds:
 * the numbers are the same on every run. */
static void test_prequeue_uniform(void **st)
{
    (void)st;
    enum { N = 8, RUNS = 16000 };
    static unsigned at[N][N];
    memset(at, 0, sizeof(at));
    double first_sum = 0;
    uint64_t sm = 52;
    for (unsigned run = 0; run < RUNS; run++) {
        cm_hash_key_t seed = {cm_rand_splitmix64(&sm), cm_rand_splitmix64(&sm)};
        uint64_t keys[N], sorted[N];
        for (unsigned i = 0; i < N; i++) {
            char person[16];
            int len = snprintf(person, sizeof(person), "p%u", i);
            keys[i] = sorted[i] = gw_wr_prequeue_key(&seed, person, (size_t)len);
        }
        gw_wr_prequeue_sort(sorted, N);
        for (unsigned i = 0; i < N; i++) {
            uint64_t rank = gw_wr_prequeue_rank(sorted, N, keys[i]);
            assert_true(rank >= 1 && rank <= N);
            at[i][rank - 1]++;
            if (i == 0)
                first_sum += (double)rank;
        }
    }
    double e = (double)RUNS / N, chi2 = 0;
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = 0; j < N; j++)
            chi2 += (at[i][j] - e) * (at[i][j] - e) / e;
    double first_mean = first_sum / RUNS;
    printf("# pre-queue ranks of 8: chi2 = %.2f (49 dof, critical %.2f); the first-comer's "
           "mean rank %.3f (middle 4.5)\n",
           chi2, CHI2_49_P001, first_mean);
    assert_true(chi2 < CHI2_49_P001);
    /* rank sd sqrt(63/12) = 2.29 over 16000 runs: sd of the mean 0.018 */
    assert_true(first_mean > 4.4 && first_mean < 4.6);
}

static void test_prequeue_rank_edges(void **st)
{
    (void)st;
    uint64_t k[] = {40, 10, 30, 20};
    gw_wr_prequeue_sort(k, 4);
    assert_int_equal(k[0], 10);
    assert_int_equal(k[3], 40);
    assert_int_equal(gw_wr_prequeue_rank(k, 4, 10), 1);
    assert_int_equal(gw_wr_prequeue_rank(k, 4, 40), 4);
    assert_int_equal(gw_wr_prequeue_rank(k, 4, 25), 0);
    assert_int_equal(gw_wr_prequeue_rank(k, 4, 50), 0);
    assert_int_equal(gw_wr_prequeue_rank(k, 0, 10), 0);
    cm_hash_key_t zero = {0, 0};
    assert_true(gw_wr_prequeue_key(&zero, "x", 1) != 0);
}

typedef struct room {
    char dir[64];
    gw_config_t *cfg;
    gw_server_t *srv;
    gw_fair_sale_t *fs;
} room_t;

static void room_open(room_t *m)
{
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-room-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    m->cfg = calloc(1, sizeof(*m->cfg));
    m->srv = calloc(1, sizeof(*m->srv));
    snprintf(m->cfg->data_dir, sizeof(m->cfg->data_dir), "%s", m->dir);
    snprintf(m->cfg->inventory, sizeof(m->cfg->inventory), "memory");
    m->srv->cfg = m->cfg;
    char why[256] = "";
    assert_int_equal(gw_fair_open(m->srv, gw_acceptor(m->srv), why, sizeof(why)), 0);
    assert_int_equal(gw_fair_configure(m->srv, "s1", 0, 0, 10, why, sizeof(why)), 0);
    m->fs = gw_fair_room(m->srv->fair, "s1");
    assert_non_null(m->fs);
}

static void room_close(room_t *m)
{
    gw_fair_close(m->srv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    (void)system(cmd);
    free(m->srv);
    free(m->cfg);
}

static gw_wr_join_t join(room_t *m, const char *person, bool take, int64_t now_ms,
                         uint64_t admitted)
{
    gw_wr_join_t j;
    atomic_store(&m->fs->sale.cfg.starts_at_ms, 1000000); /* the sale's start, as its PUT sets */
    assert_int_equal(gw_fair_room_join(m->fs, person, strlen(person), take, now_ms, admitted, &j),
                     0);
    return j;
}

/* The seed the admin draw view publishes, as a key. */
static bool published_seed(room_t *m, cm_hash_key_t *out)
{
    json_t *o = gw_fair_draw_json(m->srv->fair, "s1");
    assert_non_null(o);
    json_t *room = json_object_get(o, "room");
    assert_non_null(room);
    const char *hex = json_string_value(json_object_get(room, "seed"));
    bool ok = hex && strlen(hex) == 32;
    if (ok) {
        unsigned char b[16];
        for (int i = 0; i < 16; i++) {
            unsigned v;
            assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
            b[i] = (unsigned char)v;
        }
        out->k0 = out->k1 = 0;
        for (int i = 7; i >= 0; i--) {
            out->k0 = out->k0 << 8 | b[i];
            out->k1 = out->k1 << 8 | b[8 + i];
        }
    }
    json_decref(o);
    return ok;
}

/* One place per person: a person who joins the pre-queue again is counted
 * once; at the start each holds their rank, reproduced from the published
 * seed; a later arrival queues behind; joining again gives the same place,
 * and an admitted place the same token. */
static void test_one_place_per_person(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    enum { P = 50 };
    char names[P][16];
    for (int i = 0; i < P; i++) {
        snprintf(names[i], sizeof(names[i]), "person%d", i);
        gw_wr_join_t j = join(&m, names[i], true, 1000, 0);
        assert_true(j.prequeue);
        assert_int_equal(j.pos, 0);
        j = join(&m, names[i], true, 2000, 0); /* again: no second entry */
        assert_true(j.prequeue);
    }
    gw_fair_room_view_t v;
    gw_fair_room_view(m.fs, &v);
    assert_int_equal(v.prequeued, P);
    assert_false(v.sealed);
    cm_hash_key_t seed;
    assert_false(published_seed(&m, &seed)); /* secret before the start */

    /* the start: the first join seals */
    gw_wr_join_t late = join(&m, "latecomer", true, 1000000, 0);
    assert_false(late.prequeue);
    assert_int_equal(late.pos, P + 1);
    assert_true(published_seed(&m, &seed));
    uint64_t keys[P], seen[P + 1] = {0};
    for (int i = 0; i < P; i++)
        keys[i] = gw_wr_prequeue_key(&seed, names[i], strlen(names[i]));
    gw_wr_prequeue_sort(keys, P);
    for (int i = 0; i < P; i++) {
        gw_wr_join_t j = join(&m, names[i], true, 1000001, 0);
        assert_true(j.pos >= 1 && j.pos <= P);
        assert_int_equal(seen[j.pos], 0);
        seen[j.pos] = 1;
        uint64_t k = gw_wr_prequeue_key(&seed, names[i], strlen(names[i]));
        assert_int_equal(j.pos, gw_wr_prequeue_rank(keys, P, k)); /* the auditor's rank */
        assert_int_equal(join(&m, names[i], false, 1000002, 0).pos, j.pos);
    }
    assert_int_equal(join(&m, "latecomer", true, 1000003, 0).pos, P + 1);
    assert_int_equal(join(&m, "later", true, 1000003, 0).pos, P + 2);

    /* admitted through everyone: one token per place, the same when asked again */
    gw_wr_join_t a = join(&m, names[0], true, 1001000, P + 2);
    assert_int_equal(a.exp_s, 1001 + GW_WR_TOKEN_TTL_S);
    assert_true(a.jti != 0);
    gw_wr_join_t b = join(&m, names[0], true, 1050000, P + 2);
    assert_int_equal(b.exp_s, a.exp_s);
    assert_int_equal(b.jti, a.jti);
    gw_wr_join_t c = join(&m, "later", true, 1001000, P + 2);
    assert_true(c.jti != 0 && c.jti != a.jti);
    /* the token expired unused: the next join takes a new place at the back */
    int64_t after = (a.exp_s + 1) * 1000;
    gw_wr_join_t d = join(&m, names[0], true, after, P + 2);
    assert_int_equal(d.pos, P + 3);
    assert_int_equal(d.exp_s, 0);
    assert_int_equal(join(&m, names[0], true, after, P + 2).pos, P + 3);
    room_close(&m);
}

/* The admin's export of the pre-queue: refused before the seal (the ranks do
 * not exist yet), then every person with the rank an auditor recomputes from
 * the published seed, in pages that neither repeat nor skip. */
static void test_prequeue_export(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    enum { P = 37 };
    char names[P][16];
    for (int i = 0; i < P; i++) {
        snprintf(names[i], sizeof(names[i]), "p-%d", i * 7919);
        join(&m, names[i], true, 1000, 0);
        join(&m, names[i], true, 1001, 0);
    }
    int rc = 0;
    char why[200] = "";
    assert_null(gw_fair_room_persons_json(m.srv->fair, "s1", 0, 10, &rc, why, sizeof(why)));
    assert_int_equal(rc, CM_ECONFLICT);
    assert_null(gw_fair_room_persons_json(m.srv->fair, "nope", 0, 10, &rc, why, sizeof(why)));
    assert_int_equal(rc, CM_ENOTFOUND);
    join(&m, "late", true, 1000000, 0); /* the start seals */
    cm_hash_key_t seed;
    assert_true(published_seed(&m, &seed));
    uint64_t keys[P];
    for (int i = 0; i < P; i++)
        keys[i] = gw_wr_prequeue_key(&seed, names[i], strlen(names[i]));
    gw_wr_prequeue_sort(keys, P);
    bool seen[P + 1] = {false};
    uint64_t cursor = 0;
    for (int page = 0;; page++) {
        json_t *o = gw_fair_room_persons_json(m.srv->fair, "s1", cursor, 10, &rc, why, sizeof(why));
        assert_non_null(o);
        assert_int_equal(json_integer_value(json_object_get(o, "count")), P);
        cm_hash_key_t listed;
        assert_true(gw_fair__seed_parse(json_string_value(json_object_get(o, "seed")), &listed));
        assert_true(listed.k0 == seed.k0 && listed.k1 == seed.k1);
        json_t *arr = json_object_get(o, "persons"), *it;
        size_t i;
        json_array_foreach(arr, i, it)
        {
            const char *p = json_string_value(json_object_get(it, "person"));
            uint64_t rank = (uint64_t)json_integer_value(json_object_get(it, "rank"));
            assert_int_equal(rank, cursor + i + 1);
            assert_int_equal(rank, gw_wr_prequeue_rank(keys, P, gw_wr_prequeue_key(&seed, p,
                                                                                strlen(p))));
            assert_false(seen[rank]);
            seen[rank] = true;
        }
        cursor += json_array_size(arr);
        json_t *nc = json_object_get(o, "next_cursor");
        bool last = json_is_null(nc);
        json_decref(o);
        if (last)
            break;
        assert_true(page < 4);
    }
    assert_int_equal(cursor, P);
    room_close(&m);
}

/* The fleet's seed travels as 32 hex digits: the bytes the audit publishes. */
static void test_seed_hex_round_trip(void **st)
{
    (void)st;
    cm_hash_key_t k = {0x0123456789abcdefull, 0xfedcba9876543210ull}, back;
    char hex[33];
    gw_fair__seed_hex(&k, hex);
    assert_string_equal(hex, "efcdab89674523011032547698badcfe");
    assert_true(gw_fair__seed_parse(hex, &back));
    assert_true(back.k0 == k.k0 && back.k1 == k.k1);
    assert_false(gw_fair__seed_parse("efcdab8967452301", &back));
    assert_false(gw_fair__seed_parse("efcdab89674523011032547698badcfX", &back));
    /* a place's replay id depends on the key and the place only: every gateway
     * with the fleet's seed gives a place the same one */
    assert_int_equal(gw_fair__place_jti(&k, 7), gw_fair__place_jti(&back, 7));
    assert_true(gw_fair__place_jti(&k, 7) != gw_fair__place_jti(&k, 8));
}

/* A join before the start answers no place even to a look, and a room of a
 * sale that started before anyone came has no pre-queue. */
static void test_no_prequeue_after_start(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    assert_true(join(&m, "x", false, 999999, 0).prequeue);
    gw_wr_join_t j = join(&m, "x", true, 1000000, 0);
    assert_false(j.prequeue);
    assert_int_equal(j.pos, 1);
    gw_fair_room_view_t v;
    gw_fair_room_view(m.fs, &v);
    assert_int_equal(v.prequeued, 0);
    assert_true(v.sealed);
    room_close(&m);
}

enum { SPENDERS = 8, JTIS = 4000 };

typedef struct spender {
    gw_wr_spent_t *s;
    _Atomic unsigned *claims;
    bool give_back;
} spender_t;

/* Every thread tries to spend the same tokens in the same order: a buy that
 * claims one settles it as accepted (or gives it back, give_back). */
static void *spend_run(void *arg)
{
    spender_t *sp = arg;
    for (uint64_t j = 1; j <= JTIS; j++) {
        int rc = gw_wr_spent_claim(sp->s, j * 0x9e3779b97f4a7c15ull, 2000, 0, 1000);
        if (rc == GW_WR_CLAIMED) {
            atomic_fetch_add(&sp->claims[j - 1], 1);
            gw_wr_spent_settle(sp->s, j * 0x9e3779b97f4a7c15ull, !sp->give_back);
        } else {
            assert_int_equal(rc, GW_WR_SPENT);
        }
    }
    return NULL;
}

/* Concurrent buys with one token: exactly one spends it. */
static void test_spent_once_concurrent(void **st)
{
    (void)st;
    gw_wr_spent_t s;
    gw_wr_spent_init(&s);
    static _Atomic unsigned claims[JTIS];
    for (int i = 0; i < JTIS; i++)
        atomic_store(&claims[i], 0);
    pthread_t th[SPENDERS];
    spender_t sp = {.s = &s, .claims = claims};
    for (int i = 0; i < SPENDERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, spend_run, &sp), 0);
    for (int i = 0; i < SPENDERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < JTIS; i++)
        assert_int_equal(atomic_load(&claims[i]), 1);
    gw_wr_spent_deinit(&s);
}

/* A buy that fails gives its token back; at most one buy holds it at a time. */
static void test_spent_given_back(void **st)
{
    (void)st;
    gw_wr_spent_t s;
    gw_wr_spent_init(&s);
    assert_int_equal(gw_wr_spent_claim(&s, 7, 2000, 0, 1000), GW_WR_CLAIMED);
    assert_int_equal(gw_wr_spent_claim(&s, 7, 2000, 0, 1000), GW_WR_SPENT); /* in progress */
    gw_wr_spent_settle(&s, 7, false);
    assert_int_equal(gw_wr_spent_claim(&s, 7, 2000, 0, 1000), GW_WR_CLAIMED);
    gw_wr_spent_settle(&s, 7, true);
    assert_int_equal(gw_wr_spent_claim(&s, 7, 2000, 0, 1500), GW_WR_SPENT);
    /* the Idempotency-Key's retry of the buy that spent it goes on */
    assert_int_equal(gw_wr_spent_claim(&s, 8, 2000, 55, 1000), GW_WR_CLAIMED);
    gw_wr_spent_settle(&s, 8, true);
    assert_int_equal(gw_wr_spent_claim(&s, 8, 2000, 55, 1000), GW_WR_REPLAY);
    assert_int_equal(gw_wr_spent_claim(&s, 8, 2000, 56, 1000), GW_WR_SPENT);
    /* a bucket full of live tokens refuses; once they expire it takes more */
    uint64_t nb = GW_WR_SPENT_SLOTS / GW_WR_SPENT_WAYS;
    for (uint64_t i = 1; i <= GW_WR_SPENT_WAYS; i++)
        assert_int_equal(gw_wr_spent_claim(&s, 3 + i * nb, 2000, 0, 1000), GW_WR_CLAIMED);
    assert_int_equal(gw_wr_spent_claim(&s, 3 + 99 * nb, 2000, 0, 1000), CM_EBUSY);
    assert_int_equal(gw_wr_spent_claim(&s, 3 + 99 * nb, 3000, 0, 2001), GW_WR_CLAIMED);
    gw_wr_spent_clear(&s);
    assert_int_equal(gw_wr_spent_claim(&s, 7, 2000, 0, 1000), GW_WR_CLAIMED);
    gw_wr_spent_deinit(&s);
}

/* The give-back under concurrency: each thread gives back what it claimed, so
 * every thread claims every token once, one after the other. */
static void test_spent_give_back_concurrent(void **st)
{
    (void)st;
    gw_wr_spent_t s;
    gw_wr_spent_init(&s);
    static _Atomic unsigned claims[JTIS];
    for (int i = 0; i < JTIS; i++)
        atomic_store(&claims[i], 0);
    pthread_t th[2];
    spender_t sp = {.s = &s, .claims = claims, .give_back = true};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, spend_run, &sp), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    unsigned total = 0;
    for (int i = 0; i < JTIS; i++)
        total += atomic_load(&claims[i]);
    /* a thread may find the other's claim in progress (SPENT), never a lost one */
    assert_true(total >= JTIS);
    for (uint64_t j = 1; j <= JTIS; j++)
        assert_int_equal(gw_wr_spent_claim(&s, j * 0x9e3779b97f4a7c15ull, 2000, 0, 1000),
                         GW_WR_CLAIMED);
    gw_wr_spent_deinit(&s);
}

static gw_wr_join_t joinat(room_t *m, const char *person, bool take, int64_t now_ms,
                           int64_t starts_ms, uint64_t admitted)
{
    gw_wr_join_t j;
    assert_int_equal((atomic_store(&m->fs->sale.cfg.starts_at_ms, starts_ms), /* the sale's start */
                      gw_fair_room_join(m->fs, person, strlen(person), take, now_ms, admitted, &j)),
                     0);
    return j;
}

/* Closes the lottery and opens it again on the same data dir: a restart. */
static void room_restart(room_t *m)
{
    gw_fair_close(m->srv);
    char why[256] = "";
    assert_int_equal(gw_fair_open(m->srv, gw_acceptor(m->srv), why, sizeof(why)), 0);
    m->fs = gw_fair_room(m->srv->fair, "s1");
    assert_non_null(m->fs);
}

/* One gateway's room across restarts (gw_room_store.c): a restart before the
 * start keeps the pre-queue (its joins and its seed); one after it keeps the
 * ranks, the later places, each admitted place's token (expiry and replay id)
 * and the spent tokens, claims given back excepted; a torn last line is cut
 * off and the lines after it read back. */
static void test_restart_keeps_room(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    enum { P = 30 };
    /* real times: a restart drops the claims of tokens already expired by the clock */
    int64_t t0 = cm_wall_ms(), S = t0 + 60000;
    int64_t now_s = S / 1000;
    char names[P][16];
    for (int i = 0; i < P / 2; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        assert_true(joinat(&m, names[i], true, t0, S, 0).prequeue);
    }
    room_restart(&m); /* before the start: the joins so far are kept */
    for (int i = P / 2; i < P; i++) {
        snprintf(names[i], sizeof(names[i]), "p%d", i);
        assert_true(joinat(&m, names[i], true, t0, S, 0).prequeue);
    }
    assert_true(joinat(&m, names[0], true, t0, S, 0).prequeue); /* again: counted once */
    gw_fair_room_view_t v;
    gw_fair_room_view(m.fs, &v);
    assert_int_equal(v.prequeued, P);
    /* the start, later arrivals, the first places admitted */
    assert_int_equal(joinat(&m, "late0", true, S + 0, S, 0).pos, P + 1);
    assert_int_equal(joinat(&m, "late1", true, S + 0, S, 0).pos, P + 2);
    uint64_t pos[P];
    gw_wr_join_t tok[P];
    for (int i = 0; i < P; i++) {
        pos[i] = joinat(&m, names[i], true, S + 1, S, 0).pos;
        tok[i] = joinat(&m, names[i], true, S + 2, S, 3); /* the first 3 places admitted */
    }
    gw_wr_join_t late_tok = joinat(&m, "late1", true, S + 2, S, P + 2);
    assert_true(late_tok.jti != 0);
    cm_hash_key_t seed;
    assert_true(published_seed(&m, &seed));
    /* tokens: one spent, one claimed and given back, one claimed by a buy a crash cut */
    int spent = -1, back = -1, cut = -1;
    for (int i = 0; i < P; i++) {
        if (!tok[i].jti)
            continue;
        if (spent < 0)
            spent = i;
        else if (back < 0)
            back = i;
        else
            cut = i;
    }
    assert_true(spent >= 0 && back >= 0 && cut >= 0);
    gw_fair_t *f = m.srv->fair;
    uint64_t nonce = 0;
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[spent].jti, tok[spent].exp_s, 7, now_s,
                                             &nonce),
                     GW_WR_CLAIMED);
    gw_fair_admission_settle(f, "s1", tok[spent].jti, 7, nonce, true);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[back].jti, tok[back].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_CLAIMED);
    gw_fair_admission_settle(f, "s1", tok[back].jti, 0, nonce, false);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[cut].jti, tok[cut].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_CLAIMED);

    room_restart(&m);
    /* a torn last line: cut off at the next load, the line after it read back */
    char path[200];
    snprintf(path, sizeof(path), "%s/fair/s1.room", m.dir);
    gw_fair_close(m.srv);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("P 0000", fp);
    fclose(fp);
    char why[256] = "";
    assert_int_equal(gw_fair_open(m.srv, gw_acceptor(m.srv), why, sizeof(why)), 0);
    m.fs = gw_fair_room(m.srv->fair, "s1");
    f = m.srv->fair;
    assert_int_equal(joinat(&m, "late2", true, S + 3, S, 0).pos, P + 3);
    room_restart(&m);
    f = m.srv->fair;
    /* a run of zeros (a block a power cut left) before the last frame: skipped
     * up to the next whole frame (common/cm_journal.h), the last one read back */
    assert_int_equal(joinat(&m, "late3", true, S + 3, S, 0).pos, P + 4);
    gw_fair_close(m.srv);
    fp = fopen(path, "r+");
    assert_non_null(fp);
    static char text[1 << 16];
    size_t tlen = fread(text, 1, sizeof(text), fp);
    assert_true(tlen > 2 && tlen < sizeof(text) && text[tlen - 1] == '\n');
    size_t last = tlen - 1;
    while (last > 0 && text[last - 1] != '\n')
        last--;
    assert_int_equal(fseek(fp, (long)last, SEEK_SET), 0);
    assert_int_equal(fwrite("\0\0\0\0\0\0\n", 1, 7, fp), 7);
    assert_int_equal(fwrite(text + last, 1, tlen - last, fp), tlen - last);
    fclose(fp);
    assert_int_equal(gw_fair_open(m.srv, gw_acceptor(m.srv), why, sizeof(why)), 0);
    m.fs = gw_fair_room(m.srv->fair, "s1");
    room_restart(&m);
    f = m.srv->fair;

    cm_hash_key_t seed2;
    assert_true(published_seed(&m, &seed2));
    assert_int_equal(seed2.k0, seed.k0);
    assert_int_equal(seed2.k1, seed.k1);
    gw_fair_room_view(m.fs, &v);
    assert_int_equal(v.prequeued, P);
    assert_true(v.sealed);
    assert_int_equal(v.queued, P + 4);
    for (int i = 0; i < P; i++) {
        gw_wr_join_t j = joinat(&m, names[i], false, S + 4, S, 3);
        assert_int_equal(j.pos, pos[i]);
        assert_int_equal(j.exp_s, tok[i].exp_s);
        assert_int_equal(j.jti, tok[i].jti);
    }
    gw_wr_join_t j = joinat(&m, "late1", false, S + 4, S, P + 2);
    assert_int_equal(j.pos, P + 2);
    assert_int_equal(j.exp_s, late_tok.exp_s);
    assert_int_equal(j.jti, late_tok.jti);
    assert_int_equal(joinat(&m, "late2", false, S + 4, S, 0).pos, P + 3);
    assert_int_equal(joinat(&m, "late3", false, S + 4, S, 0).pos, P + 4);
    assert_int_equal(joinat(&m, "late4", true, S + 4, S, 0).pos, P + 5);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[spent].jti, tok[spent].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_SPENT);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[spent].jti, tok[spent].exp_s, 7, now_s,
                                             &nonce),
                     GW_WR_REPLAY);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[cut].jti, tok[cut].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_SPENT);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[back].jti, tok[back].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_CLAIMED);
    room_close(&m);
}

/* The seal's "S" line failed (here: the log's descriptor read-only for that
 * one write): it is written again before the next place's line, so a restart
 * reads the room sealed with the places given after the seal, and the next
 * arrival gets the next place, not one already given (with its replay id). */
static void test_seal_line_written_again(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    int64_t t0 = cm_wall_ms(), S = t0 + 60000;
    assert_true(joinat(&m, "p0", true, t0, S, 0).prequeue);
    assert_true(joinat(&m, "p1", true, t0, S, 0).prequeue);
    char path[200];
    snprintf(path, sizeof(path), "%s/fair/s1.room", m.dir);
    int fd = m.fs->wr_store.j.fd;
    assert_true(fd >= 0);
    int keep = dup(fd), ro = open(path, O_RDONLY);
    assert_true(keep >= 0 && ro >= 0);
    assert_int_equal(dup2(ro, fd), fd);
    gw_wr_join_t j; /* the seal: its line fails, no rank is answered from it */
    atomic_store(&m.fs->sale.cfg.starts_at_ms, S);
    assert_int_equal(gw_fair_room_join(m.fs, "p0", 2, true, S, 0, &j), CM_EAGAIN);
    assert_int_equal(dup2(keep, fd), fd);
    close(keep);
    close(ro);
    /* the lottery thread's tick rewrites the log from the room's state, the seal in it */
    m.fs->wr_ops->tick(m.fs, S + 1, 1, true, S, 0, 1);
    uint64_t p0 = joinat(&m, "p0", true, S + 1, S, 0).pos;
    assert_true(p0 == 1 || p0 == 2);
    assert_int_equal(joinat(&m, "late0", true, S + 1, S, 0).pos, 3);
    assert_int_equal(joinat(&m, "late1", true, S + 1, S, 0).pos, 4);
    room_restart(&m);
    gw_fair_room_view_t v;
    gw_fair_room_view(m.fs, &v);
    assert_true(v.sealed);
    assert_int_equal(joinat(&m, "p0", false, S + 2, S, 0).pos, p0);
    assert_int_equal(joinat(&m, "late0", false, S + 2, S, 0).pos, 3);
    assert_int_equal(joinat(&m, "late2", true, S + 2, S, 0).pos, 5);
    room_close(&m);
}

/* The room's "log_bytes" and "log_synced_bytes" as the admin draw view shows them. */
static void log_lens(room_t *m, json_int_t *len, json_int_t *synced, json_int_t *syncs)
{
    json_t *o = gw_fair_draw_json(m->srv->fair, "s1");
    assert_non_null(o);
    json_t *room = json_object_get(o, "room");
    assert_non_null(room);
    assert_true(json_is_integer(json_object_get(room, "log_bytes")));
    *len = json_integer_value(json_object_get(room, "log_bytes"));
    *synced = json_integer_value(json_object_get(room, "log_synced_bytes"));
    *syncs = json_integer_value(json_object_get(room, "claim_syncs"));
    assert_int_equal(json_integer_value(json_object_get(room, "claim_sync_failures")), 0);
    json_decref(o);
}

/* fsync durability's claim sync (gw_fair_admission_sync): a claim's line is
 * written, not synced (the log is dirty: no lottery thread here to sync it);
 * the sync makes the log durable through the claim's line, once: a second
 * call with nothing new makes none (the count of syncs made for orders still
 * counts it: the claims it was asked for are durable). A sale without a room
 * needs nothing. */
static void test_claim_sync(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    int64_t S = cm_wall_ms(), now_s = S / 1000;
    gw_wr_join_t t = joinat(&m, "buyer", true, S + 1, S, 1);
    assert_true(t.jti != 0);
    gw_fair_t *f = m.srv->fair;
    json_int_t len0, synced0, syncs0;
    log_lens(&m, &len0, &synced0, &syncs0);
    assert_true(len0 > 0); /* the keys, the seal, the place and its admission */
    assert_int_equal(syncs0, 0);
    uint64_t nonce = 0;
    assert_int_equal(gw_fair_admission_claim(f, "s1", t.jti, t.exp_s, 0, now_s, &nonce),
                     GW_WR_CLAIMED);
    char line[80]; /* the claim's line, framed (common/cm_journal.h) */
    int claim_len = snprintf(line, sizeof(line), "T %016llx %lld %016llx",
                             (unsigned long long)t.jti, (long long)t.exp_s, 0ull) +
                    CM_JOURNAL_FRAME_OVERHEAD;
    json_int_t len, synced, syncs;
    log_lens(&m, &len, &synced, &syncs);
    assert_int_equal(len, len0 + claim_len);
    assert_true(synced < len); /* written, not yet durable */

    assert_int_equal(gw_fair_admission_sync(f, "s1"), 0);
    log_lens(&m, &len, &synced, &syncs);
    assert_int_equal(len, len0 + claim_len);
    assert_int_equal(synced, len); /* through the claim's line */
    assert_int_equal(syncs, 1);
    int64_t at = m.fs->wr_store.synced_ms;
    assert_int_equal(gw_fair_admission_sync(f, "s1"), 0); /* nothing new: no fdatasync */
    assert_int_equal(m.fs->wr_store.synced_ms, at);
    assert_int_equal(gw_fair_admission_sync(f, "nosuch"), 0);
    gw_fair_admission_settle(f, "s1", t.jti, 0, nonce, true);

    /* a restart: the load rewrites what it found (a failed fdatasync of the
     * process before may have dropped pages it still read), synced; the
     * next line is not */
    room_restart(&m);
    f = m.srv->fair;
    assert_int_equal(joinat(&m, "later", true, S + 2, S, 0).pos, 2);
    log_lens(&m, &len, &synced, &syncs);
    assert_true(synced > 0 && synced < len);
    assert_int_equal(gw_fair_admission_sync(f, "s1"), 0);
    log_lens(&m, &len, &synced, &syncs);
    assert_int_equal(synced, len);
    room_close(&m);
}

/* The room log's length on disk. */
static off_t room_file_len(room_t *m)
{
    char path[200];
    snprintf(path, sizeof(path), "%s/fair/s1.room", m->dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

/* Every person's place and token as a look (take false) at now_ms shows them. */
static void looks(room_t *m, char (*names)[16], size_t n, int64_t now_ms, int64_t starts_ms,
                  gw_wr_join_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = joinat(m, names[i], false, now_ms, starts_ms, 1u << 30);
}

/* One gateway's room log is compacted by the lottery thread's tick once it is
 * past GW_WR_COMPACT_MIN_BYTES and twice the state it records: a room with
 * many joins, admissions, expiries and tokens claimed, spent and given back
 * keeps its file bounded however much it appends, and a restart reads the
 * compacted file back to the same room: the pre-queue's ranks and seed, the
 * places given after the seal, each admitted place's token (expiry and replay
 * id), the tokens spent (a replay of the same key included) and those given
 * back. */
static void test_log_compacted(void **st)
{
    (void)st;
    room_t m;
    room_open(&m);
    enum { PRE = 40, LATE = 3000, N = PRE + LATE, ADMITTED = 2000, EXPIRED = 300 };
    /* real times: a restart drops the claims of tokens already expired by the clock */
    int64_t t0 = cm_wall_ms(), S = t0 + 60000, later = S + 200000;
    static char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), i < PRE ? "pre%d" : "late%d", i);
        gw_wr_join_t j = joinat(&m, names[i], true, i < PRE ? t0 : S + 1, S, 0);
        assert_true(i < PRE ? j.prequeue : j.pos == (uint64_t)i + 1);
    }
    /* the first ADMITTED places admitted; then EXPIRED of them let their tokens
     * lapse and join again at the back, where they are admitted again */
    static gw_wr_join_t tok[N];
    for (int i = 0; i < N; i++)
        tok[i] = joinat(&m, names[i], true, S + 2, S, ADMITTED);
    for (int i = 0; i < EXPIRED; i++) {
        gw_wr_join_t j = joinat(&m, names[i * 5], true, later, S, 0);
        assert_true(j.pos > N);
        assert_true(joinat(&m, names[i * 5], true, later, S, 1u << 30).jti != 0);
    }
    /* tokens: spent (with and without a key), given back, and one claimed and
     * given back over and over: the appends that grow the log */
    gw_fair_t *f = m.srv->fair;
    int64_t now_s = cm_wall_ms() / 1000;
    uint64_t nonce = 0;
    int spent[200], back[200], nspent = 0, nback = 0;
    for (int i = 1; i < ADMITTED && (nspent < 200 || nback < 200); i += 3) {
        if (i % 5 == 0 || !tok[i].jti)
            continue; /* an expired one */
        uint64_t fp = nspent % 2 ? 9 : 0;
        assert_int_equal(gw_fair_admission_claim(f, "s1", tok[i].jti, tok[i].exp_s, fp, now_s,
                                                 &nonce),
                         GW_WR_CLAIMED);
        bool keep = nspent < 200 && (nback >= 200 || i % 2);
        gw_fair_admission_settle(f, "s1", tok[i].jti, fp, nonce, keep);
        if (keep)
            spent[nspent++] = i;
        else
            back[nback++] = i;
    }
    assert_int_equal(nspent, 200);
    assert_int_equal(nback, 200);
    int churn = 2;
    assert_true(tok[churn].jti != 0);
    off_t most = 0, wrote = 0;
    for (int round = 0; round < 40; round++) {
        off_t len0 = room_file_len(&m);
        for (int k = 0; k < 1500; k++) {
            assert_int_equal(gw_fair_admission_claim(f, "s1", tok[churn].jti, tok[churn].exp_s,
                                                     0, now_s, &nonce),
                             GW_WR_CLAIMED);
            gw_fair_admission_settle(f, "s1", tok[churn].jti, 0, nonce, false);
        }
        wrote += room_file_len(&m) - len0;
        gw_fair_tick(m.srv);
        off_t len = room_file_len(&m);
        most = len > most ? len : most;
    }
    /* the appends were several times the bound; the file never passed it by more
     * than a round's appends */
    assert_true(wrote > 3 * GW_WR_COMPACT_MIN_BYTES);
    assert_true(most < GW_WR_COMPACT_MIN_BYTES + 256 * 1024);
    json_t *o = gw_fair_draw_json(f, "s1");
    assert_true(json_integer_value(json_object_get(json_object_get(o, "room"),
                                                   "log_compactions")) >= 2);
    json_decref(o);

    /* the state before the restart: looks admit nothing new the second time */
    static gw_wr_join_t before[N], after[N];
    looks(&m, names, N, later + 1000, S, before);
    looks(&m, names, N, later + 1000, S, before);
    gw_fair_room_view_t v0, v1;
    gw_fair_room_view(m.fs, &v0);
    cm_hash_key_t seed0, seed1;
    assert_true(published_seed(&m, &seed0));
    gw_fair_tick(m.srv); /* compacts once more if due: the restart reads what it left */
    room_restart(&m);
    f = m.srv->fair;
    looks(&m, names, N, later + 1000, S, after);
    for (int i = 0; i < N; i++) {
        assert_int_equal(after[i].pos, before[i].pos);
        assert_int_equal(after[i].exp_s, before[i].exp_s);
        assert_int_equal(after[i].jti, before[i].jti);
    }
    gw_fair_room_view(m.fs, &v1);
    assert_int_equal(v1.prequeued, v0.prequeued);
    assert_int_equal(v1.queued, v0.queued);
    assert_true(v1.sealed);
    assert_true(published_seed(&m, &seed1));
    assert_int_equal(seed1.k0, seed0.k0);
    assert_int_equal(seed1.k1, seed0.k1);
    for (int k = 0; k < nspent; k++) {
        int i = spent[k];
        uint64_t fp = k % 2 ? 9 : 0;
        assert_int_equal(gw_fair_admission_claim(f, "s1", tok[i].jti, tok[i].exp_s, 0, now_s,
                                                 &nonce),
                         GW_WR_SPENT);
        if (fp)
            assert_int_equal(gw_fair_admission_claim(f, "s1", tok[i].jti, tok[i].exp_s, fp,
                                                     now_s, &nonce),
                             GW_WR_REPLAY);
    }
    for (int k = 0; k < nback; k++)
        assert_int_equal(gw_fair_admission_claim(f, "s1", tok[back[k]].jti, tok[back[k]].exp_s,
                                                 0, now_s, &nonce),
                         GW_WR_CLAIMED);
    assert_int_equal(gw_fair_admission_claim(f, "s1", tok[churn].jti, tok[churn].exp_s, 0, now_s,
                                             &nonce),
                     GW_WR_CLAIMED);
    /* a place given after the restart is the next one */
    assert_int_equal(joinat(&m, "newcomer", true, later + 2000, S, 0).pos, v0.queued + 1);
    room_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prequeue_uniform),
        cmocka_unit_test(test_prequeue_rank_edges),
        cmocka_unit_test(test_one_place_per_person),
        cmocka_unit_test(test_no_prequeue_after_start),
        cmocka_unit_test(test_prequeue_export),
        cmocka_unit_test(test_seed_hex_round_trip),
        cmocka_unit_test(test_spent_once_concurrent),
        cmocka_unit_test(test_spent_given_back),
        cmocka_unit_test(test_spent_give_back_concurrent),
        cmocka_unit_test(test_restart_keeps_room),
        cmocka_unit_test(test_seal_line_written_again),
        cmocka_unit_test(test_claim_sync),
        cmocka_unit_test(test_log_compacted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
