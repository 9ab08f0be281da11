/*
 * kill -9 of a settling process mid-run, then a restart: the database ends
 * with exactly the distinct orders (none lost, none twice) and the outcomes
 * topic has an outcome for every order.
 *
 * The settle processes are forked at the very start of main(), before this
 * process runs any librdkafka thread (forking a threaded process is unsafe);
 * each waits on a pipe for the broker address and then runs st_settle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "settle/st_settle.h"
#include "tests/support/ts_kafka.h"

#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 2000
#define DUP 300

typedef struct child {
    pid_t pid;
    int wfd; /* parent writes "BOOTSTRAP DIR RATE_MILLI BATCH\n" */
} child_t;

static child_t g_child[2];
static st_settle_t *g_st;

static void on_term(int sig)
{
    (void)sig;
    if (g_st)
        st_settle_stop(g_st);
}

static void child_main(int rfd)
{
    char buf[1024];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(buf) - 1 && (r = read(rfd, buf + n, sizeof(buf) - 1 - n)) > 0) {
        n += (size_t)r;
        if (memchr(buf, '\n', n))
            break;
    }
    buf[n] = 0;
    char bootstrap[256], dir[256];
    unsigned long long rate, batch;
    if (sscanf(buf, "%255s %255s %llu %llu", bootstrap, dir, &rate, &batch) != 4)
        _exit(0); /* not used */
    static const char *const props[] = {"consumer.session.timeout.ms=6000",
                                        "consumer.heartbeat.interval.ms=500"};
    st_settle_opts_t o = {.brokers = bootstrap,
                          .data_dir = dir,
                          .max_rate_milli = rate,
                          .batch = (uint32_t)batch,
                          .kafka_props = props,
                          .n_kafka_props = 2};
    char err[512];
    if (st_settle_new(&g_st, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(3);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    int ret = st_settle_run(g_st);
    st_settle_free(g_st);
    _exit(ret == 0 ? 0 : 4);
}

static void msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                v = (long)sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

typedef struct seen {
    int n[N];
    int bad_status;
    long other;
} seen_t;

static void on_outcome(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    (void)key;
    (void)klen;
    seen_t *s = arg;
    json_t *o = json_loadb(val, vlen, 0, NULL);
    const char *id = o ? json_string_value(json_object_get(o, "order_id")) : NULL;
    const char *st = o ? json_string_value(json_object_get(o, "status")) : NULL;
    int i;
    if (id && sscanf(id, "K%d", &i) == 1 && i >= 0 && i < N)
        s->n[i]++;
    else
        s->other++;
    if (!st || strcmp(st, "settled") != 0)
        s->bad_status++;
    json_decref(o);
}

static int covered(const char *bootstrap, seen_t *s)
{
    memset(s, 0, sizeof(*s));
    if (ts_kafka_read_all(bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, s) < 0)
        return 0;
    for (int i = 0; i < N; i++)
        if (s->n[i] == 0)
            return 0;
    return 1;
}

static void go(child_t *c, const char *bootstrap, const char *dir, unsigned long long rate_milli,
               unsigned batch)
{
    char line[700];
    int len = snprintf(line, sizeof(line), "%s %s %llu %u\n", bootstrap, dir, rate_milli, batch);
    assert_int_equal(write(c->wfd, line, (size_t)len), len);
    close(c->wfd);
    c->wfd = -1;
}

static void test_kill9_then_restart(void **state)
{
    (void)state;
    static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};
    char dir[64] = "/tmp/st_kill.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128];
    snprintf(db, sizeof(db), "%s/orders.db", dir);
    ts_kafka_t k;
    assert_int_equal(ts_kafka_start(&k, topics, 4), 0);

    static char *keys[N + DUP], *vals[N + DUP];
    size_t n = 0;
    for (int i = 0; i < N + DUP; i++, n++) {
        int id = i < N ? i : (i - N) * 13 % N;
        keys[n] = malloc(16);
        snprintf(keys[n], 16, "sale-%d", id % 6);
        vals[n] = malloc(256);
        snprintf(vals[n], 256,
                 "{\"order_id\":\"K%06d\",\"sale_id\":\"sale-%d\",\"user_id\":\"u%d\",\"qty\":1,"
                 "\"accepted_at\":%d,\"node\":2}",
                 id, id % 6, id, 1000 + id);
    }
    assert_int_equal(ts_kafka_produce(k.bootstrap, ST_DEFAULT_TOPIC, (const char *const *)keys,
                                      (const char *const *)vals, n),
                     0);
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }

    /* First worker: slowed to 2,500 orders/s in batches of 100, killed mid-run. */
    go(&g_child[0], k.bootstrap, dir, 2500000, 100);
    long at_kill = -1;
    for (int i = 0; i < 3000; i++) {
        long c = db_int(db, "SELECT count(*) FROM orders");
        if (c >= 500) {
            msleep(37); /* land somewhere inside a later batch */
            break;
        }
        msleep(5);
    }
    assert_int_equal(kill(g_child[0].pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(g_child[0].pid, &status, 0), g_child[0].pid);
    assert_true(WIFSIGNALED(status));
    at_kill = db_int(db, "SELECT count(*) FROM orders");
    printf("# killed -9 with %ld of %d orders in the database\n", at_kill, N);
    assert_true(at_kill >= 500);
    assert_true(at_kill < N);

    /* Second worker, same group and database, full speed. */
    go(&g_child[1], k.bootstrap, dir, 0, 500);
    seen_t *s = calloc(1, sizeof(*s));
    int ok = 0;
    for (int i = 0; i < 80 && !ok; i++) { /* 40 s */
        msleep(500);
        ok = db_int(db, "SELECT count(*) FROM orders") == N && covered(k.bootstrap, s);
    }
    assert_int_equal(kill(g_child[1].pid, SIGTERM), 0);
    assert_int_equal(waitpid(g_child[1].pid, &status, 0), g_child[1].pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(ok);

    assert_int_equal(db_int(db, "SELECT count(*) FROM orders"), N);
    assert_int_equal(db_int(db, "SELECT count(DISTINCT order_id) FROM orders"), N);
    assert_int_equal(db_int(db, "SELECT count(*) FROM orders WHERE status='settled'"), N);
    assert_int_equal(db_int(db, "SELECT min(order_id) = 'K000000' AND max(order_id) = 'K001999'"
                                " FROM orders"),
                     1);
    assert_int_equal(s->other, 0);
    assert_int_equal(s->bad_status, 0);
    long total = 0;
    for (int i = 0; i < N; i++)
        total += s->n[i];
    printf("# outcomes: %ld for %d orders (+%d copies, whose outcomes may still be on the"
           " way; repeats after the kill are expected)\n",
           total, N, DUP);
    free(s);
    ts_kafka_stop(&k);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    /* librdkafka's threads come from C11 thrd_create, which TSan (GCC 12) does not
       intercept: its allocator crashes in them. ASan/UBSan and plain runs cover this. */
    fprintf(stderr, "skipped under TSan: librdkafka threads come from thrd_create\n");
    return 77;
#endif
    for (int i = 0; i < 2; i++) {
        int p[2];
        if (pipe(p) != 0)
            return 1;
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            close(p[1]);
            if (i == 1)
                close(g_child[0].wfd);
            child_main(p[0]);
        }
        close(p[0]);
        g_child[i].pid = pid;
        g_child[i].wfd = p[1];
    }
    json_object_seed(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill9_then_restart),
    };
    int ret = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < 2; i++) { /* after a failure: do not leave children behind */
        if (g_child[i].wfd >= 0)
            close(g_child[i].wfd);
        kill(g_child[i].pid, SIGKILL);
        waitpid(g_child[i].pid, NULL, 0);
    }
    return ret;
}
