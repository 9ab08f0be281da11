/*
 * Group commit when the leader's fdatasync fails (run under TSan in CI).
 *
 * oq_spool_sync is a leader/follower commit: followers wait while the leader
 * fdatasyncs for everyone appended so far. When that fdatasync fails, the
 * spool cuts every unsynced record, the followers' included: each follower's
 * client must hear the error, never a success for a record that is gone. This
 * test holds the leader inside a failing fdatasync (the link wraps fdatasync,
 * tests/CMakeLists.txt) until every follower is asleep waiting for it, then
 * asserts each follower's own return code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "queue/oq_spool.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FOLLOWERS 4

/*---- fdatasync, held and failed on demand ----*/

int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);

static atomic_int g_arm;    /* 1: the next fdatasync waits for g_go, then fails (EIO) */
static atomic_int g_inside; /* that call is waiting */
static atomic_int g_go;

int __wrap_fdatasync(int fd)
{
    int one = 1;
    if (atomic_compare_exchange_strong(&g_arm, &one, 0)) {
        atomic_store(&g_inside, 1);
        uint64_t deadline = cm_mono_ms() + 20000;
        while (!atomic_load(&g_go) && cm_mono_ms() < deadline)
            usleep(1000);
        errno = EIO;
        return -1;
    }
    return __real_fdatasync(fd);
}

/*---- helpers ----*/

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void make_order(oq_order_t *o, uint64_t i)
{
    memset(o, 0, sizeof(*o));
    cm_id_format(i * 7919 + 1, o->order_id);
    snprintf(o->sale_id, sizeof(o->sale_id), "sale-1");
    snprintf(o->user_id, sizeof(o->user_id), "user-%llu", (unsigned long long)i);
    o->qty = 1;
    o->accepted_at_ms = 1732269600000LL + (int64_t)i;
    o->node_id = 3;
}

typedef struct syncer {
    oq_spool_t *sp;
    uint64_t i;
    atomic_int tid;      /* set once its record is appended */
    atomic_int appended; /* 1 appended, -1 append failed */
    int rc;              /* oq_spool_sync's answer */
} syncer_t;

static void *syncer_main(void *arg)
{
    syncer_t *s = arg;
    oq_order_t o;
    make_order(&o, s->i);
    if (oq_spool_append(s->sp, &o, 1) != 0) {
        atomic_store(&s->appended, -1);
        return NULL;
    }
    atomic_store(&s->tid, (int)syscall(SYS_gettid));
    atomic_store(&s->appended, 1);
    s->rc = oq_spool_sync(s->sp);
    return NULL;
}

/* The thread's scheduler state from /proc ('S': asleep), or '?'. */
static char thread_state(int tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return '?';
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after "pid (comm)" */
    return p && p[1] == ' ' ? p[2] : '?';
}

static long count_cb_n;
static int count_cb(const oq_rec_t *rec, void *ctx)
{
    (void)rec;
    (void)ctx;
    count_cb_n++;
    return 0;
}

/*---- the case ----*/

static void test_followers_hear_failed_fdatasync(void **state)
{
    (void)state;
    char base[64] = "/tmp/fg-spool-group-XXXXXX", dir[128];
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof(dir), "%s/spool", base);
    oq_spool_opts_t o = {.dir = dir, .durability = OQ_DURABILITY_FSYNC,
                         .segment_bytes = 1u << 20}; /* no roll: one fdatasync per round */
    oq_spool_t *sp = NULL;
    char err[256];
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);

    /* One record confirmed before the failure: it stays. */
    oq_order_t first;
    make_order(&first, 1);
    assert_int_equal(oq_spool_append(sp, &first, 1), 0);
    assert_int_equal(oq_spool_sync(sp), 0);

    /* The leader: its fdatasync waits (armed) and will fail. */
    atomic_store(&g_arm, 1);
    syncer_t leader = {.sp = sp, .i = 2};
    pthread_t lt;
    assert_int_equal(pthread_create(&lt, NULL, syncer_main, &leader), 0);
    uint64_t deadline = cm_mono_ms() + 10000;
    while (!atomic_load(&g_inside) && cm_mono_ms() < deadline)
        usleep(1000);
    assert_int_equal(atomic_load(&g_inside), 1);

    /* The followers: appended after the leader took its round, so they wait on it. */
    syncer_t fl[FOLLOWERS];
    pthread_t ft[FOLLOWERS];
    for (int k = 0; k < FOLLOWERS; k++) {
        fl[k] = (syncer_t){.sp = sp, .i = 10 + (uint64_t)k};
        assert_int_equal(pthread_create(&ft[k], NULL, syncer_main, &fl[k]), 0);
    }
    /* Each is asleep in oq_spool_sync (nothing else holds a lock it needs:
     * the leader fdatasyncs with none held), so it waits for the leader. */
    deadline = cm_mono_ms() + 10000;
    int asleep = 0;
    while (asleep < FOLLOWERS && cm_mono_ms() < deadline) {
        asleep = 0;
        for (int k = 0; k < FOLLOWERS; k++)
            if (atomic_load(&fl[k].appended) == 1 && thread_state(atomic_load(&fl[k].tid)) == 'S')
                asleep++;
        usleep(2000);
    }
    assert_int_equal(asleep, FOLLOWERS);
    usleep(20 * 1000);

    atomic_store(&g_go, 1);
    pthread_join(lt, NULL);
    for (int k = 0; k < FOLLOWERS; k++)
        pthread_join(ft[k], NULL);

    assert_int_equal(leader.rc, CM_EIO);
    for (int k = 0; k < FOLLOWERS; k++) {
        if (fl[k].rc != CM_EIO)
            fail_msg("follower %d: oq_spool_sync returned %d (%s), its record was cut", k,
                     fl[k].rc, cm_errname(fl[k].rc));
    }
    oq_spool_stats_t st;
    oq_spool_stats(sp, &st);
    assert_int_equal(st.syncs, 1); /* only the confirmed round returned success */
    oq_spool_close(sp);

    /* After a restart only the confirmed record is there. */
    assert_int_equal(oq_spool_open(&sp, &o, err, sizeof(err)), 0);
    count_cb_n = 0;
    assert_int_equal(oq_spool_scan(sp, (oq_pos_t){0, 0}, count_cb, NULL), 1);
    assert_int_equal(count_cb_n, 1);
    oq_spool_close(sp);
    nftw(base, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_followers_hear_failed_fdatasync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
