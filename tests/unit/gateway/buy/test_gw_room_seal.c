/*
 * gw_room: the seal of one gateway's pre-queue is made durable without the
 * room's lock. The disk is made slow at the seal's fdatasync (the program
 * links with --wrap=fdatasync): while it is in flight another thread's join
 * and look at the room must return at once, and must not act on the seal (no
 * place given from ranks whose joins are not yet durable, no seed published);
 * once it returned, the sealing join has its rank and the next arrival the
 * place after the pre-queue. And the room log's compaction while two threads
 * claim, give back and sync tokens (the group commit's flushes): the claims
 * kept read spent after a restart, those given back free. And two flushes of
 * the log at once (two worker loops' group commits) make one fdatasync. TSan runs it (label
 * concurrency), Helgrind too (race.room-seal).
 */
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_fair_internal.h"

#include "common/cm_err.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/ctl/gw_ctl.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

int __real_fdatasync(int fd);

static gw_fair_sale_t *room;
static int64_t starts_ms;
static atomic_bool slow_armed;

/* What the other thread saw while the seal's fdatasync was in flight. */
static pthread_mutex_t other_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t other_cv = PTHREAD_COND_INITIALIZER;
static bool other_done, other_in_time;
static int other_rc;
static gw_wr_join_t other_join;
static gw_fair_room_view_t other_view;
static pthread_t other;

static void *other_run(void *arg)
{
    (void)arg;
    gw_wr_join_t j;
    int rc = gw_fair_room_join(room, "late", 4, true, starts_ms + 1, 0, &j);
    gw_fair_room_view_t v;
    gw_fair_room_view(room, &v);
    pthread_mutex_lock(&other_mu);
    other_rc = rc;
    other_join = j;
    other_view = v;
    other_done = true;
    pthread_cond_signal(&other_cv);
    pthread_mutex_unlock(&other_mu);
    return NULL;
}

/* A held disk: the first fdatasync of the room's log once armed waits until
 * the test releases it; every fdatasync of it is counted. */
static atomic_int room_syncs;
static atomic_bool hold_armed;
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static bool held, released;

/* The slow disk: the first fdatasync of the room's log once armed waits (up to
 * 5 s) for another thread's join and look to return. */
int __wrap_fdatasync(int fd);
int __wrap_fdatasync(int fd)
{
    char link[64], path[512];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    path[n > 0 ? n : 0] = '\0';
    bool is_room = n > 5 && strcmp(path + n - 5, ".room") == 0;
    if (is_room)
        atomic_fetch_add(&room_syncs, 1);
    if (is_room && atomic_exchange(&hold_armed, false)) {
        pthread_mutex_lock(&hold_mu);
        held = true;
        pthread_cond_broadcast(&hold_cv);
        while (!released)
            pthread_cond_wait(&hold_cv, &hold_mu);
        pthread_mutex_unlock(&hold_mu);
    }
    if (is_room && atomic_exchange(&slow_armed, false)) {
        assert_int_equal(pthread_create(&other, NULL, other_run, NULL), 0);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&other_mu);
        while (!other_done)
            if (pthread_cond_timedwait(&other_cv, &other_mu, &until) == ETIMEDOUT)
                break;
        other_in_time = other_done;
        pthread_mutex_unlock(&other_mu);
    }
    return __real_fdatasync(fd);
}

static void test_seal_sync_outside_lock(void **st)
{
    (void)st;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/fg-seal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    gw_config_t *cfg = calloc(1, sizeof(*cfg));
    gw_server_t *srv = calloc(1, sizeof(*srv));
    snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", dir);
    snprintf(cfg->inventory, sizeof(cfg->inventory), "memory");
    srv->cfg = cfg;
    char why[256] = "";
    assert_int_equal(gw_fair_open(srv, gw_acceptor(srv), why, sizeof(why)), 0);
    assert_int_equal(gw_fair_configure(srv, "s1", 0, 0, 10, why, sizeof(why)), 0);
    room = gw_fair_room(srv->fair, "s1");
    assert_non_null(room);
    int64_t t0 = cm_wall_ms();
    starts_ms = t0 + 60000;
    atomic_store(&room->sale.cfg.starts_at_ms, starts_ms); /* the sale's start, as its PUT sets */
    gw_wr_join_t j;
    assert_int_equal(gw_fair_room_join(room, "p0", 2, true, t0, 0, &j), 0);
    assert_true(j.prequeue);
    assert_int_equal(gw_fair_room_join(room, "p1", 2, true, t0, 0, &j), 0);
    assert_true(j.prequeue);

    atomic_store(&slow_armed, true);
    /* the first join at the start seals, and syncs the seal */
    assert_int_equal(gw_fair_room_join(room, "p0", 2, true, starts_ms, 0, &j), 0);
    assert_false(atomic_load(&slow_armed)); /* the seal's fdatasync ran */
    assert_true(j.pos == 1 || j.pos == 2);
    assert_int_equal(pthread_join(other, NULL), 0);
    /* the other thread was not held for the fdatasync's duration ... */
    assert_true(other_in_time);
    /* ... and nothing it got rests on the seal before the seal was durable */
    assert_int_equal(other_rc, CM_EAGAIN);
    assert_int_equal(other_join.pos, 0);
    assert_false(other_view.sealed);
    /* once durable: the next arrival has the place after the pre-queue */
    assert_int_equal(gw_fair_room_join(room, "late", 4, true, starts_ms + 2, 0, &j), 0);
    assert_int_equal(j.pos, 3);
    gw_fair_room_view_t v;
    gw_fair_room_view(room, &v);
    assert_true(v.sealed);
    gw_fair_close(srv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)system(cmd);
    free(srv);
    free(cfg);
}

/*---- compaction under concurrent claims ----*/

enum { CLAIMERS = 2, CYCLES = 16000, KEEP_EVERY = 200, TOKENS = 200 };

typedef struct claimer {
    gw_fair_t *f;
    gw_wr_join_t *tok; /* this thread's TOKENS admitted places */
    int kept[CYCLES / KEEP_EVERY + 1], nkept;
    int failures;
} claimer_t;

static atomic_int claimers_left;

static void *claimer_run(void *arg)
{
    claimer_t *c = arg;
    int64_t now_s = cm_wall_ms() / 1000;
    int next_keep = 1;
    for (int k = 0; k < CYCLES; k++) {
        uint64_t nonce = 0;
        bool keep = k % KEEP_EVERY == 0 && next_keep < TOKENS;
        int t = keep ? next_keep++ : 0; /* token 0: claimed and given back over and over */
        if (gw_fair_admission_claim(c->f, "s1", c->tok[t].jti, c->tok[t].exp_s, 0, now_s,
                                    &nonce) != GW_WR_CLAIMED) {
            c->failures++;
            continue;
        }
        if (keep && gw_fair_admission_sync(c->f, "s1") != 0)
            c->failures++;
        gw_fair_admission_settle(c->f, "s1", c->tok[t].jti, 0, nonce, keep);
        if (keep)
            c->kept[c->nkept++] = t;
    }
    atomic_fetch_sub(&claimers_left, 1);
    return NULL;
}

static void test_compaction_while_claiming(void **st)
{
    (void)st;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/fg-seal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    gw_config_t *cfg = calloc(1, sizeof(*cfg));
    gw_server_t *srv = calloc(1, sizeof(*srv));
    snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", dir);
    snprintf(cfg->inventory, sizeof(cfg->inventory), "memory");
    srv->cfg = cfg;
    char why[256] = "";
    assert_int_equal(gw_fair_open(srv, gw_acceptor(srv), why, sizeof(why)), 0);
    assert_int_equal(gw_fair_configure(srv, "s1", 0, 0, 10, why, sizeof(why)), 0);
    gw_fair_sale_t *fs = gw_fair_room(srv->fair, "s1");
    assert_non_null(fs);
    int64_t now_ms = cm_wall_ms();
    static gw_wr_join_t tok[CLAIMERS][TOKENS];
    static claimer_t cl[CLAIMERS];
    pthread_t th[CLAIMERS];
    for (int i = 0; i < CLAIMERS; i++)
        for (int t = 0; t < TOKENS; t++) {
            char name[32];
            snprintf(name, sizeof(name), "c%d-%d", i, t);
            assert_int_equal(
                gw_fair_room_join(fs, name, strlen(name), true, now_ms, 1u << 30, &tok[i][t]), 0);
            assert_true(tok[i][t].jti != 0);
        }
    atomic_store(&claimers_left, CLAIMERS);
    for (int i = 0; i < CLAIMERS; i++) {
        cl[i] = (claimer_t){.f = srv->fair, .tok = tok[i]};
        assert_int_equal(pthread_create(&th[i], NULL, claimer_run, &cl[i]), 0);
    }
    /* the lottery thread's part: sync and compact as the log grows */
    while (atomic_load(&claimers_left) > 0) {
        gw_fair_tick(srv);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < CLAIMERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    gw_fair_tick(srv);
    for (int i = 0; i < CLAIMERS; i++) {
        assert_int_equal(cl[i].failures, 0);
        assert_true(cl[i].nkept > 10);
    }
    assert_true(atomic_load(&fs->wr_store.compactions) >= 1);

    gw_fair_close(srv); /* a restart */
    assert_int_equal(gw_fair_open(srv, gw_acceptor(srv), why, sizeof(why)), 0);
    gw_fair_t *f = srv->fair;
    int64_t now_s = cm_wall_ms() / 1000;
    uint64_t nonce;
    for (int i = 0; i < CLAIMERS; i++) {
        for (int k = 0; k < cl[i].nkept; k++) {
            gw_wr_join_t *t = &tok[i][cl[i].kept[k]];
            assert_int_equal(gw_fair_admission_claim(f, "s1", t->jti, t->exp_s, 0, now_s, &nonce),
                             GW_WR_SPENT);
        }
        assert_int_equal(gw_fair_admission_claim(f, "s1", tok[i][0].jti, tok[i][0].exp_s, 0,
                                                 now_s, &nonce),
                         GW_WR_CLAIMED);
        assert_int_equal(gw_fair_admission_claim(f, "s1", tok[i][TOKENS - 1].jti,
                                                 tok[i][TOKENS - 1].exp_s, 0, now_s, &nonce),
                         GW_WR_CLAIMED); /* never claimed */
    }
    gw_fair_close(srv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)system(cmd);
    free(srv);
    free(cfg);
}

/*---- the room log's group commit ----*/

static gw_fair_t *flush_fair;
static int flush_rc[2];

static void *flush_run(void *arg)
{
    int *rc = arg;
    *rc = gw_fair_admission_sync(flush_fair, "s1");
    return NULL;
}

/* Two worker loops' group commits flush the room log at once: the second
 * finds the first's fdatasync running past its claim's line and waits for it
 * instead of making another (one fdatasync for both, the disk held meanwhile). */
static void test_flush_shares_sync(void **st)
{
    (void)st;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/fg-seal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    gw_config_t *cfg = calloc(1, sizeof(*cfg));
    gw_server_t *srv = calloc(1, sizeof(*srv));
    snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", dir);
    snprintf(cfg->inventory, sizeof(cfg->inventory), "memory");
    srv->cfg = cfg;
    char why[256] = "";
    assert_int_equal(gw_fair_open(srv, gw_acceptor(srv), why, sizeof(why)), 0);
    assert_int_equal(gw_fair_configure(srv, "s1", 0, 0, 10, why, sizeof(why)), 0);
    gw_fair_sale_t *fs = gw_fair_room(srv->fair, "s1");
    flush_fair = srv->fair;
    int64_t now_ms = cm_wall_ms();
    gw_wr_join_t a, b;
    assert_int_equal(gw_fair_room_join(fs, "a", 1, true, now_ms, 10, &a), 0);
    assert_int_equal(gw_fair_room_join(fs, "b", 1, true, now_ms, 10, &b), 0);
    uint64_t nonce;
    assert_int_equal(gw_fair_admission_claim(srv->fair, "s1", a.jti, a.exp_s, 0, now_ms / 1000,
                                             &nonce),
                     GW_WR_CLAIMED);
    assert_int_equal(gw_fair_admission_claim(srv->fair, "s1", b.jti, b.exp_s, 0, now_ms / 1000,
                                             &nonce),
                     GW_WR_CLAIMED);
    atomic_store(&room_syncs, 0);
    atomic_store(&hold_armed, true);
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, flush_run, &flush_rc[0]), 0);
    pthread_mutex_lock(&hold_mu);
    while (!held)
        pthread_cond_wait(&hold_cv, &hold_mu);
    pthread_mutex_unlock(&hold_mu);
    assert_int_equal(pthread_create(&t2, NULL, flush_run, &flush_rc[1]), 0);
    struct timespec ts = {0, 300000000};
    nanosleep(&ts, NULL);
    assert_int_equal(atomic_load(&room_syncs), 1); /* the second waits, makes none */
    pthread_mutex_lock(&hold_mu);
    released = true;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_mu);
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(pthread_join(t2, NULL), 0);
    assert_int_equal(flush_rc[0], 0);
    assert_int_equal(flush_rc[1], 0);
    assert_int_equal(atomic_load(&room_syncs), 1);
    off_t len, synced;
    gw_fair__room_store_len(fs, &len, &synced);
    assert_true(len > 0);
    assert_int_equal(synced, len);
    gw_fair_close(srv);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)system(cmd);
    free(srv);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_sync_outside_lock),
        cmocka_unit_test(test_compaction_while_claiming),
        cmocka_unit_test(test_flush_shares_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
