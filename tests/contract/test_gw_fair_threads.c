/*
 * The lottery's entries under a re-keyed secret (runs under TSan in CI): two
 * threads enter users while a third re-keys the sale, as the lottery thread
 * does when the fleet's configuration comes back with another secret. Every
 * user is entered once: entering again finds the entry (a key computed with
 * the old secret would not be found, and the user would enter twice), a
 * waiting-room place taken meanwhile is still the user's, and TSan sees no
 * unlocked read of the secret.
 */
#include "common/cm_err.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define NENTER 2
#define PER_THREAD 3000
#define JOINERS 200 /* of each thread's users also take a waiting-room place */

typedef struct enterer {
    gw_fair_sale_t *fs;
    int id;
    int entered, failed;
    uint64_t place[JOINERS];
} enterer_t;

static atomic_bool done;

static void ticket(gw_fair_ticket_t *t, int thread, int i, int round)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->order_id, sizeof(t->order_id), "o%d-%d-%d", round, thread, i);
    snprintf(t->user_id, sizeof(t->user_id), "u%d-%d", thread, i);
    t->qty = 1;
    t->entered_at_ms = 1;
}

/* The place a user takes (take) or holds, in a room of a sale without a start.
 * A join while another thread's seal is in its fdatasync takes nothing and
 * asks again (CM_EAGAIN), as a client told 503 does. */
static uint64_t room_place(gw_fair_sale_t *fs, const char *user, bool take)
{
    gw_wr_join_t j;
    int rc;
    while ((rc = gw_fair_room_join(fs, user, strlen(user), take, 1, 0, &j)) == CM_EAGAIN)
        sched_yield();
    assert_int_equal(rc, 0);
    return j.pos;
}

static void *enter_run(void *arg)
{
    enterer_t *e = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        gw_fair_ticket_t t;
        ticket(&t, e->id, i, 0);
        int rc = gw_fair_enter(e->fs, &t, NULL);
        if (rc == 0)
            e->entered++;
        else
            e->failed++;
        if (i < JOINERS)
            e->place[i] = room_place(e->fs, t.user_id, true);
    }
    return NULL;
}

typedef struct rekeyer {
    gw_fair_t *f;
    int rounds;
} rekeyer_t;

static void *rekey_run(void *arg)
{
    rekeyer_t *r = arg;
    for (uint64_t k = 1; !atomic_load(&done); k++, r->rounds++)
        gw_fair_set_secret(r->f, "s1", k, ~k);
    return NULL;
}

static void test_enter_while_rekeyed(void **st)
{
    (void)st;
    char dir[] = "/tmp/fg-fair-threads-XXXXXX";
    assert_non_null(mkdtemp(dir));
    gw_config_t *cfg = calloc(1, sizeof(*cfg));
    gw_server_t *srv = calloc(1, sizeof(*srv));
    snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", dir);
    snprintf(cfg->inventory, sizeof(cfg->inventory), "memory");
    srv->cfg = cfg;
    char why[256] = "";
    assert_int_equal(gw_fair_open(srv, gw_acceptor(srv), why, sizeof(why)), 0);
    /* a lottery and a waiting room: the sale's machine takes joins only for a room */
    assert_int_equal(gw_fair_configure(srv, "s1", 60000, 0, 1000, why, sizeof(why)), 0);
    gw_fair_sale_t *fs = gw_fair_find(srv->fair, "s1");
    assert_non_null(fs);

    atomic_store(&done, false);
    pthread_t th[NENTER], rt;
    enterer_t e[NENTER];
    rekeyer_t r = {.f = srv->fair};
    assert_int_equal(pthread_create(&rt, NULL, rekey_run, &r), 0);
    for (int i = 0; i < NENTER; i++) {
        e[i] = (enterer_t){.fs = fs, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, enter_run, &e[i]), 0);
    }
    for (int i = 0; i < NENTER; i++)
        pthread_join(th[i], NULL);
    atomic_store(&done, true);
    pthread_join(rt, NULL);
    printf("re-keyed %d times while entering\n", r.rounds);

    int twice = 0;
    for (int i = 0; i < NENTER; i++) {
        assert_int_equal(e[i].failed, 0);
        assert_int_equal(e[i].entered, PER_THREAD);
        for (int j = 0; j < PER_THREAD; j++) {
            gw_fair_ticket_t t;
            ticket(&t, i, j, 1);
            if (gw_fair_enter(fs, &t, NULL) != 1)
                twice++;
            if (j < JOINERS)
                assert_int_equal(room_place(fs, t.user_id, false), e[i].place[j]);
        }
    }
    assert_int_equal(twice, 0);

    gw_fair_close(srv);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)system(cmd);
    free(srv);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enter_while_rekeyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
