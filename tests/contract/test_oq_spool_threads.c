/* The spool under concurrency (run under TSan in CI): appenders rolling
 * segments at once, a scanner reading while they write, group-commit syncs,
 * and a releaser deleting segments under the readers. */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "queue/oq_spool.h"

#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

enum { APPENDERS = 4, PER_APPENDER = 1500 };

typedef struct {
    oq_spool_t *sp;
    _Atomic int appenders_left;
    _Atomic long errors;
    _Atomic long scans;
    _Atomic long releases;
    bool do_release;
} shared_t;

typedef struct {
    shared_t *sh;
    int id;
} worker_t;

static void *appender(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < PER_APPENDER; i++) {
        int rc;
        /* Halfway, wait for the scanner's first pass: on a loaded machine the
         * appenders could otherwise finish before it was ever scheduled, and
         * nothing would have run concurrently. */
        while (i == PER_APPENDER / 2 && atomic_load(&w->sh->scans) == 0)
            sched_yield();
        if (i % 10 == 9) {
            char ev[64];
            int n = snprintf(ev, sizeof(ev), "{\"t\":%d,\"i\":%d}", w->id, i);
            rc = oq_spool_append_event(w->sh->sp, ev, (size_t)n);
        } else {
            oq_order_t o[2];
            memset(o, 0, sizeof(o));
            size_t k = (i % 7 == 0) ? 2 : 1; /* some batches */
            for (size_t j = 0; j < k; j++) {
                snprintf(o[j].order_id, sizeof(o[j].order_id), "T%d-%06d-%zu", w->id, i, j);
                snprintf(o[j].sale_id, sizeof(o[j].sale_id), "s%d", w->id);
                snprintf(o[j].user_id, sizeof(o[j].user_id), "u%d", i);
                o[j].qty = 1;
                o[j].accepted_at_ms = 1795341600000LL + i;
            }
            rc = oq_spool_append(w->sh->sp, o, k);
        }
        if (rc == 0 && i % 100 == 0)
            rc = oq_spool_sync(w->sh->sp);
        if (rc != 0)
            atomic_fetch_add(&w->sh->errors, 1);
    }
    atomic_fetch_sub(&w->sh->appenders_left, 1);
    return NULL;
}

typedef struct {
    long n;
    int last_i[APPENDERS];
    bool bad;
    oq_pos_t last_next;
    uint64_t bytes;
} check_t;

/* Each appender's records appear in its own order; every record is whole. */
static int check_cb(const oq_rec_t *rec, void *ctx)
{
    check_t *c = ctx;
    int t, i;
    if (rec->type == OQ_REC_ORDER) {
        if (sscanf(rec->order->order_id, "T%d-%d", &t, &i) != 2)
            c->bad = true;
    } else if (sscanf(rec->event, "{\"t\":%d,\"i\":%d}", &t, &i) != 2) {
        c->bad = true;
    }
    if (!c->bad && (t < 0 || t >= APPENDERS || i < c->last_i[t]))
        c->bad = true;
    else if (!c->bad)
        c->last_i[t] = i;
    if (oq_pos_cmp(rec->pos, c->last_next) < 0)
        c->bad = true;
    c->last_next = rec->next;
    c->bytes += rec->next.off - rec->pos.off;
    c->n++;
    return 0;
}

static void *scanner(void *arg)
{
    shared_t *sh = arg;
    do {
        check_t c;
        memset(&c, 0, sizeof(c));
        for (int t = 0; t < APPENDERS; t++)
            c.last_i[t] = -1;
        oq_pos_t from = oq_spool_released(sh->sp);
        long n = oq_spool_scan(sh->sp, from, check_cb, &c);
        if (n < 0 || c.bad || n != c.n)
            atomic_fetch_add(&sh->errors, 1);
        if (sh->do_release && n > 0 && oq_spool_release(sh->sp, c.last_next) == 0)
            atomic_fetch_add(&sh->releases, 1);
        atomic_fetch_add(&sh->scans, 1);
        usleep(500);
    } while (atomic_load(&sh->appenders_left) > 0);
    return NULL;
}

static void run(const char *dir, bool do_release)
{
    oq_spool_opts_t o = {.dir = dir, .segment_bytes = 16 * 1024};
    oq_spool_t *sp;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    shared_t sh = {.sp = sp, .do_release = do_release};
    atomic_init(&sh.appenders_left, APPENDERS);
    pthread_t th[APPENDERS], sc;
    worker_t w[APPENDERS];
    pthread_create(&sc, NULL, scanner, &sh);
    for (int t = 0; t < APPENDERS; t++) {
        w[t] = (worker_t){&sh, t};
        pthread_create(&th[t], NULL, appender, &w[t]);
    }
    for (int t = 0; t < APPENDERS; t++)
        pthread_join(th[t], NULL);
    pthread_join(sc, NULL);
    assert_int_equal(atomic_load(&sh.errors), 0);
    assert_true(atomic_load(&sh.scans) > 0);

    /* records per appender: 1350 single orders + 1 extra for every 7th + 150 events */
    long per = 0;
    for (int i = 0; i < PER_APPENDER; i++)
        per += i % 10 == 9 ? 1 : (i % 7 == 0 ? 2 : 1);
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    if (!do_release)
        assert_int_equal(st.appended_records, per * APPENDERS);
    check_t c;
    memset(&c, 0, sizeof(c));
    for (int t = 0; t < APPENDERS; t++)
        c.last_i[t] = -1;
    long n = oq_spool_scan(sp, oq_spool_released(sp), check_cb, &c);
    assert_false(c.bad);
    if (!do_release) {
        assert_int_equal(n, per * APPENDERS);
        for (int t = 0; t < APPENDERS; t++)
            assert_int_equal(c.last_i[t], PER_APPENDER - 1);
        assert_true(st.segments > 5);
    } else {
        /* what is left unreleased is exactly what the scan from the release point read */
        oq_spool_stats(sp, &st);
        assert_int_equal(st.unreleased_bytes, c.bytes);
        assert_true(atomic_load(&sh.releases) > 0);
        printf("# %ld scans, %ld releases under %d appenders; %ld records left unreleased\n",
               atomic_load(&sh.scans), atomic_load(&sh.releases), APPENDERS, n);
    }
    oq_spool_close(sp);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void with_dir(void (*fn)(const char *dir, bool), bool arg)
{
    char base[64] = "/tmp/fg-spool-thr-XXXXXX", dir[128];
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/spool", base);
    fn(dir, arg);
    nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_concurrent_append_scan_roll(void **state)
{
    (void)state;
    with_dir(run, false);
}

static void test_concurrent_append_scan_release(void **state)
{
    (void)state;
    with_dir(run, true);
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_append_scan_roll),
        cmocka_unit_test(test_concurrent_append_scan_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
