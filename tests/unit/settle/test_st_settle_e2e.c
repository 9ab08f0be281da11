/*
 * flashgate-settle's loop end to end, in process: librdkafka's mock cluster,
 * orders produced to it (some duplicated, one garbage message), st_settle
 * running in a thread into SQLite, then the database and the outcomes topic
 * audited. Also: cancellations, the user's SQL failing an order, max-rate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/cm_time.h"
#include "settle/st_settle.h"
#include "tests/support/ts_kafka.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXORD 4096

typedef struct fx {
    ts_kafka_t k;
    char dir[64];
    char db[128];
} fx_t;

/* What the outcomes topic said about order i ("E%06d"). */
typedef struct seen {
    int n[MAXORD];      /* outcomes for the order */
    int status[MAXORD]; /* last status */
    char reason[MAXORD][64];
    long other; /* outcomes for ids outside E000000.. */
} seen_t;

static const char *const topics[] = {ST_DEFAULT_TOPIC, ST_DEFAULT_OUTCOMES_TOPIC, NULL};

static void msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/st_e2e.XXXXXX");
    if (!mkdtemp(f->dir) || ts_kafka_start(&f->k, topics, 4) != 0)
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/orders.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    ts_kafka_stop(&f->k);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static long db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = (long)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static char *order_json(int i, const char *user)
{
    char *s = malloc(256);
    char u[32];
    snprintf(u, sizeof(u), "user-%d", i);
    snprintf(s, 256,
             "{\"order_id\":\"E%06d\",\"sale_id\":\"sale-%d\",\"user_id\":\"%s\",\"qty\":1,"
             "\"accepted_at\":%lld,\"node\":1}",
             i, i % 8, user ? user : u, (long long)(1700000000000LL + i));
    return s;
}

static char *cancel_json(int i, const char *reason)
{
    char *s = malloc(256);
    snprintf(s, 256,
             "{\"type\":\"cancel\",\"order_id\":\"E%06d\",\"sale_id\":\"sale-%d\","
             "\"user_id\":\"user-%d\",\"qty\":1,\"reason\":\"%s\"}",
             i, i % 8, i, reason);
    return s;
}

static char *sale_key(int i)
{
    char *s = malloc(16);
    snprintf(s, 16, "sale-%d", i % 8);
    return s;
}

static void produce(fx_t *f, char **keys, char **vals, size_t n)
{
    assert_int_equal(ts_kafka_produce(f->k.bootstrap, ST_DEFAULT_TOPIC, (const char *const *)keys,
                                      (const char *const *)vals, n),
                     0);
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
}

static void on_outcome(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    seen_t *s = arg;
    json_t *o = json_loadb(val, vlen, 0, NULL);
    assert_non_null(o);
    const char *id = json_string_value(json_object_get(o, "order_id"));
    const char *sale = json_string_value(json_object_get(o, "sale_id"));
    assert_non_null(id);
    assert_non_null(sale);
    assert_true(klen == strlen(sale) && memcmp(key, sale, klen) == 0); /* key = sale id */
    assert_true(json_is_integer(json_object_get(o, "at")));
    assert_true(json_is_integer(json_object_get(o, "qty")));
    json_t *sj = json_object_get(o, "status");
    int st = oq_status_parse(json_string_value(sj), json_string_length(sj));
    assert_true(st >= 0);
    int i;
    if (sscanf(id, "E%d", &i) == 1 && i >= 0 && i < MAXORD) {
        s->n[i]++;
        s->status[i] = st;
        const char *r = json_string_value(json_object_get(o, "reason"));
        snprintf(s->reason[i], sizeof(s->reason[i]), "%s", r ? r : "");
    } else {
        s->other++;
    }
    json_decref(o);
}

typedef struct runner {
    st_settle_t *st;
    pthread_t th;
    int ret;
} runner_t;

static void *run_thread(void *arg)
{
    runner_t *r = arg;
    r->ret = st_settle_run(r->st);
    return NULL;
}

static void start_settle(runner_t *r, fx_t *f, st_settle_opts_t *o)
{
    char err[512] = "";
    o->brokers = f->k.bootstrap;
    o->data_dir = f->dir;
    int ret = st_settle_new(&r->st, o, err, sizeof(err));
    if (ret)
        fail_msg("st_settle_new: %s", err);
    assert_int_equal(pthread_create(&r->th, NULL, run_thread, r), 0);
}

static void stop_settle(runner_t *r)
{
    st_settle_stop(r->st);
    pthread_join(r->th, NULL);
    assert_int_equal(r->ret, 0);
    st_settle_free(r->st);
}

/* Waits until the loop has committed `n` messages (or 30 s). */
static void wait_messages(runner_t *r, uint64_t n)
{
    const st_settle_stats_t *s = st_settle_stats(r->st);
    for (int i = 0; i < 3000 && atomic_load(&s->messages) < n; i++)
        msleep(10);
    assert_int_equal(atomic_load(&s->messages), n);
}

static void test_settle_2000_with_duplicates(void **state)
{
    fx_t *f = *state;
    enum { N = 2000, DUP = 300 };
    char *keys[N + DUP + 1], *vals[N + DUP + 1];
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        keys[n] = sale_key(i);
        vals[n++] = order_json(i, NULL);
    }
    for (int i = 0; i < DUP; i++) { /* copies, as a relay retry would make */
        keys[n] = sale_key(i * 7 % N);
        vals[n++] = order_json(i * 7 % N, NULL);
    }
    keys[n] = sale_key(0);
    vals[n++] = strdup("{not json");
    produce(f, keys, vals, n);

    runner_t r;
    st_settle_opts_t o = {.batch = 500};
    uint64_t t0 = cm_mono_ns();
    start_settle(&r, f, &o);
    const st_settle_stats_t *s = st_settle_stats(r.st);
    for (int i = 0; i < 3000 && atomic_load(&s->messages) == 0; i++)
        msleep(2);
    uint64_t t1 = cm_mono_ns(), first = atomic_load(&s->messages);
    wait_messages(&r, n);
    uint64_t t2 = cm_mono_ns();
    printf("# e2e: %zu messages into SQLite (batch 500): %.2f s incl. group join; after the first "
           "batch %llu more in %.3f s = %.0f msg/s (DB commit + outcomes delivered + offsets "
           "committed); batches=%llu\n",
           n, (double)(t2 - t0) / 1e9, (unsigned long long)(n - first), (double)(t2 - t1) / 1e9,
           (double)(n - first) / ((double)(t2 - t1) / 1e9),
           (unsigned long long)atomic_load(&s->batches));
    assert_int_equal(atomic_load(&s->settled), N);
    assert_int_equal(atomic_load(&s->duplicates), DUP);
    assert_int_equal(atomic_load(&s->invalid), 1);
    stop_settle(&r);

    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), N);
    assert_int_equal(db_int(f->db, "SELECT count(DISTINCT order_id) FROM orders"), N);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status = 'settled'"), N);
    seen_t *seen = calloc(1, sizeof(*seen));
    long got = ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen);
    assert_int_equal(got, N + DUP);
    for (int i = 0; i < N; i++) {
        assert_true(seen->n[i] >= 1);
        assert_int_equal(seen->status[i], OQ_STATUS_SETTLED);
    }
    assert_int_equal(seen->other, 0);
    free(seen);
}

static void test_cancel_and_failed(void **state)
{
    fx_t *f = *state;
    char *keys[16], *vals[16];
    size_t n = 0;
    /* order 1 settles, then is cancelled twice (second: same final status again) */
    keys[n] = sale_key(1), vals[n++] = order_json(1, NULL);
    keys[n] = sale_key(1), vals[n++] = cancel_json(1, "user asked");
    keys[n] = sale_key(1), vals[n++] = cancel_json(1, "user asked again");
    /* order 2: the cancel overtook it (or it never came) */
    keys[n] = sale_key(2), vals[n++] = cancel_json(2, "timeout");
    keys[n] = sale_key(2), vals[n++] = order_json(2, NULL);
    /* order 3: refused by the user's SQL */
    keys[n] = sale_key(3), vals[n++] = order_json(3, "blocked-3");
    /* order 4: plain */
    keys[n] = sale_key(4), vals[n++] = order_json(4, NULL);
    produce(f, keys, vals, n);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE ledger (user_id TEXT CHECK (user_id NOT LIKE "
                                  "'blocked%'), qty INT)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    runner_t r;
    st_settle_opts_t o = {
        .batch = 3, .batch_wait_ms = 20, .sql = "INSERT INTO ledger VALUES (:user_id, :qty)"};
    start_settle(&r, f, &o);
    wait_messages(&r, n);
    stop_settle(&r);

    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), 4);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status='cancelled'"), 2);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE order_id='E000003'"
                                   " AND status='failed' AND reason LIKE '%CHECK%'"),
                     1);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM ledger"), 2);
    seen_t *seen = calloc(1, sizeof(*seen));
    assert_int_equal(ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen),
                     n);
    assert_int_equal(seen->n[1], 3); /* settled, cancelled, cancelled */
    assert_int_equal(seen->status[1], OQ_STATUS_CANCELLED);
    assert_string_equal(seen->reason[1], "user asked"); /* the first cancel's reason stays */
    assert_int_equal(seen->n[2], 2);
    assert_int_equal(seen->status[2], OQ_STATUS_CANCELLED);
    assert_int_equal(seen->status[3], OQ_STATUS_FAILED);
    assert_non_null(strstr(seen->reason[3], "CHECK constraint failed"));
    assert_int_equal(seen->status[4], OQ_STATUS_SETTLED);
    free(seen);
}

/*
 * The user's statement rejects orders with RAISE(ROLLBACK), which rolls the
 * whole batch transaction back in SQLite. Each such order fails alone: its
 * batch is retried at once, and the retry stores it as failed without running
 * the statement for it again (one rollback per rejected order). Before, the
 * batch was retried with the same rollback forever and nothing behind it
 * settled. All on one partition, so the rejections meet in one batch or few
 * (12 retries of one batch with the backoff's doubling waits would take over
 * the 30 s wait_messages allows; at once they take milliseconds).
 */
static void test_user_sql_raise_rollback(void **state)
{
    fx_t *f = *state;
    enum { N = 40 };
    char *keys[N], *vals[N];
    int nbad = 0;
    for (int i = 0; i < N; i++) {
        char u[32];
        bool bad = i % 10 == 3 || i % 10 == 7 || i % 10 == 8;
        snprintf(u, sizeof(u), "%s-%d", bad ? "blocked" : "user", i);
        nbad += bad;
        keys[i] = sale_key(1);
        vals[i] = order_json(i, u);
    }
    produce(f, keys, vals, N);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE ledger (user_id TEXT, qty INT);"
                                  "CREATE TRIGGER blocked BEFORE INSERT ON ledger"
                                  " WHEN NEW.user_id LIKE 'blocked%'"
                                  " BEGIN SELECT RAISE(ROLLBACK, 'user is blocked'); END;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    runner_t r;
    st_settle_opts_t o = {.batch = 500, .sql = "INSERT INTO ledger VALUES (:user_id, :qty)"};
    uint64_t t0 = cm_mono_ns();
    start_settle(&r, f, &o);
    wait_messages(&r, N);
    const st_settle_stats_t *s = st_settle_stats(r.st);
    printf("# %d orders, %d rolled back by the user's statement: %.2f s incl. group join, "
           "batches=%llu rollbacks=%llu\n",
           N, nbad, (double)(cm_mono_ns() - t0) / 1e9, (unsigned long long)atomic_load(&s->batches),
           (unsigned long long)atomic_load(&s->db_errors));
    assert_int_equal(atomic_load(&s->failed), nbad);
    assert_int_equal(atomic_load(&s->settled), N - nbad);
    assert_int_equal(atomic_load(&s->db_errors), nbad); /* once per rejected order */
    stop_settle(&r);

    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), N);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status = 'failed'"
                                   " AND reason = 'user is blocked'"),
                     nbad);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM ledger"), N - nbad);
    seen_t *seen = calloc(1, sizeof(*seen));
    assert_int_equal(ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen),
                     N);
    for (int i = 0; i < N; i++) {
        bool bad = i % 10 == 3 || i % 10 == 7 || i % 10 == 8;
        assert_int_equal(seen->n[i], 1);
        assert_int_equal(seen->status[i], bad ? OQ_STATUS_FAILED : OQ_STATUS_SETTLED);
        if (bad)
            assert_string_equal(seen->reason[i], "user is blocked");
    }
    free(seen);
}

/*
 * max_rate 200/s is a token bucket of burst 20 (a tenth of a second). On the
 * fake clock it is exact and does not depend on how loaded the machine is:
 * frozen, exactly 20 orders settle and then none; every 100 ms of clock lets
 * exactly 20 more through, never one more.
 */
static void test_max_rate(void **state)
{
    fx_t *f = *state;
    enum { N = 300, STEP = 20 };
    char *keys[N], *vals[N];
    for (int i = 0; i < N; i++) {
        keys[i] = sale_key(i);
        vals[i] = order_json(i, NULL);
    }
    produce(f, keys, vals, N);
    cm_time_set_fake(true, 1000 * 1000000000ull, 1700000000000);
    runner_t r;
    /* batch 1: every order is its own batch, so no batch deadline (clock) is involved */
    st_settle_opts_t o = {.batch = 1, .max_rate_milli = 200000}; /* 200 orders/s */
    start_settle(&r, f, &o);
    const st_settle_stats_t *s = st_settle_stats(r.st);
    wait_messages(&r, STEP); /* the group join takes real seconds: wait_messages allows 30 */
    msleep(400);             /* the clock stands still: not one more */
    assert_int_equal(atomic_load(&s->messages), STEP);
    for (uint64_t done = STEP; done < N; done += STEP) {
        cm_time_advance_fake(100 * 1000000ull);
        wait_messages(&r, done + STEP); /* exactly 20 more: asserts equality */
        if (done == STEP) {
            msleep(300);
            assert_int_equal(atomic_load(&s->messages), done + STEP);
        }
    }
    printf("# max-rate 200/s on the fake clock: 20 at once, then exactly 20 per 100 ms\n");
    cm_time_set_fake(false, 0, 0);
    stop_settle(&r);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), N);
}

/*
 * The broker answers one of the worker's outcome batches with
 * OUT_OF_ORDER_SEQUENCE_NUMBER: librdkafka makes that a fatal error of the
 * idempotent producer, and every produce after it fails. The worker makes a
 * new producer and goes on; it retried the same outcomes forever before,
 * its offsets never committed again.
 */
static void test_outcome_producer_fatal_error(void **state)
{
    fx_t *f = *state;
    enum { N = 10 };
    char *keys[N], *vals[N];
    keys[0] = sale_key(0);
    vals[0] = order_json(0, NULL);
    produce(f, keys, vals, 1);
    runner_t r;
    st_settle_opts_t o = {.batch = 100};
    start_settle(&r, f, &o);
    wait_messages(&r, 1); /* its producer has a producer id and sequence numbers */

    /* Hold the next batch in the database until the error is queued, so that
     * the error meets the worker's outcomes, not the orders produced here. */
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(f->db, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 1; i < N; i++) {
        keys[i - 1] = sale_key(i);
        vals[i - 1] = order_json(i, NULL);
    }
    produce(f, keys, vals, N - 1);
    rd_kafka_mock_push_request_errors(f->k.mc, 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_int_equal(sqlite3_exec(lock, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);

    wait_messages(&r, N);
    stop_settle(&r);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status = 'settled'"), N);
    seen_t *seen = calloc(1, sizeof(*seen));
    assert_true(ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen) >=
                N);
    for (int i = 0; i < N; i++)
        assert_true(seen->n[i] >= 1);
    free(seen);
}

/*
 * A stop while the outcomes producer's queue is full. The broker refuses
 * every Produce (NOT_ENOUGH_REPLICAS, retried until message.timeout.ms) and
 * the producer's queue holds one message, so the batch's second outcome gets
 * QUEUE_FULL. The wait for room observed no stop: SIGTERM was held until the
 * first outcome timed out (message.timeout.ms, 300 s by default, here 15 s),
 * past systemd's TimeoutStopSec. Now it gives up like the other waits of a
 * stop, after the stop's grace (opts.stop_grace_ms, settle.stop_grace; 0.5 s
 * here, 5 s by default), offsets not committed: a restart reads the batch
 * again, finds it in the database and publishes its outcomes. The loop waits
 * out the whole grace first: the outcomes could still have gone through.
 */
static void test_stop_with_full_produce_queue(void **state)
{
    fx_t *f = *state;
    enum { N = 2, GRACE_MS = 500 };
    char *keys[N], *vals[N];
    for (int i = 0; i < N; i++) {
        keys[i] = sale_key(1); /* one partition: one batch */
        vals[i] = order_json(i, NULL);
    }
    produce(f, keys, vals, N);
    /* from now on every Produce fails (retriably): the outcomes never leave */
    rd_kafka_resp_err_t errs[1000];
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        errs[i] = RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
    rd_kafka_mock_push_request_errors_array(f->k.mc, 0 /* Produce */,
                                            sizeof(errs) / sizeof(errs[0]), errs);
    runner_t r;
    /* session.timeout.ms: the mock broker keeps a member that left for its
       session (45 s by default) before the restart below can join */
    static const char *const props[] = {"producer.queue.buffering.max.messages=1",
                                        "producer.message.timeout.ms=15000",
                                        "consumer.session.timeout.ms=6000"};
    /* one batch of both: closed when full, long before its wait */
    st_settle_opts_t o = {.batch = N,
                          .batch_wait_ms = 5000,
                          .kafka_props = props,
                          .n_kafka_props = 3,
                          .stop_grace_ms = GRACE_MS};
    start_settle(&r, f, &o);
    const st_settle_stats_t *s = st_settle_stats(r.st);
    /* the batch is in the database: its outcomes are being published */
    for (int i = 0; i < 3000 && atomic_load(&s->settled) < N; i++)
        msleep(10);
    assert_int_equal(atomic_load(&s->settled), N);
    /* wherever the loop is now, its publishing meets the full queue before it can end */
    uint64_t t0 = cm_mono_ms();
    st_settle_stop(r.st);
    pthread_join(r.th, NULL);
    uint64_t t1 = cm_mono_ms();
    assert_int_equal(r.ret, 0);
    assert_int_equal(atomic_load(&s->messages), 0); /* nothing committed */
    st_settle_free(r.st);
    uint64_t t2 = cm_mono_ms();
    printf("# stop with a full produce queue, grace %d ms: run() returned in %llu ms, free in "
           "%llu ms\n",
           GRACE_MS, (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    /* Not before the grace: its deadline is set when the loop first sees the
     * stop, after t0, and it returns only past it (one monotonic clock). */
    assert_true(t1 - t0 >= GRACE_MS);
    /* And well before the default grace: the setting is what ended the wait
     * (4.5 s of room for a loaded machine). It was message.timeout.ms and more. */
    assert_true(t1 - t0 < ST_DEFAULT_STOP_GRACE_MS);
    assert_true(t2 - t1 < 5000); /* the producer's last flush: 2 s */
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status = 'settled'"), N);

    /* The broker takes outcomes again: a restart publishes what was held back. */
    rd_kafka_mock_clear_request_errors(f->k.mc, 0 /* Produce */);
    st_settle_opts_t o2 = {.batch = 10};
    start_settle(&r, f, &o2);
    wait_messages(&r, N);
    s = st_settle_stats(r.st);
    assert_int_equal(atomic_load(&s->duplicates), N); /* already in the database */
    stop_settle(&r);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), N);
    seen_t *seen = calloc(1, sizeof(*seen));
    assert_true(ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen) >=
                N);
    for (int i = 0; i < N; i++) {
        assert_true(seen->n[i] >= 1);
        assert_int_equal(seen->status[i], OQ_STATUS_SETTLED);
    }
    free(seen);
}

/*
 * The gateway's relay sends an order again (relay.retention_resent: the broker
 * dropped it below its low watermark before its outcome came back) after
 * settlement cancelled it: E000001 settled and cancelled, E000002 cancelled
 * before it ever came. Their late copies, in later batches, change nothing in
 * the database, count as duplicates (not as cancellations: the gateway's
 * release is once), re-publish `cancelled` with the first reason, and are
 * acknowledged: a restart in the same group reads only what came after them.
 */
static void test_resent_after_cancel(void **state)
{
    fx_t *f = *state;
    char *keys[4], *vals[4];
    keys[0] = sale_key(1), vals[0] = order_json(1, NULL);
    keys[1] = sale_key(1), vals[1] = cancel_json(1, "user asked");
    keys[2] = sale_key(1), vals[2] = cancel_json(2, "timeout");
    produce(f, keys, vals, 3);
    runner_t r;
    static const char *const props[] = {"consumer.session.timeout.ms=6000"}; /* the restart */
    st_settle_opts_t o = {.batch = 10, .kafka_props = props, .n_kafka_props = 1};
    start_settle(&r, f, &o);
    wait_messages(&r, 3);
    /* the relay's resends, later (one partition: they are read after the cancels) */
    keys[0] = sale_key(1), vals[0] = order_json(1, NULL);
    keys[1] = sale_key(1), vals[1] = order_json(2, NULL);
    keys[2] = sale_key(1), vals[2] = order_json(1, NULL);
    produce(f, keys, vals, 3);
    wait_messages(&r, 6);
    const st_settle_stats_t *s = st_settle_stats(r.st);
    assert_int_equal(atomic_load(&s->settled), 1);
    assert_int_equal(atomic_load(&s->cancelled), 2);
    assert_int_equal(atomic_load(&s->duplicates), 3);
    assert_int_equal(atomic_load(&s->db_errors), 0);
    stop_settle(&r);

    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders"), 2);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE status = 'cancelled'"), 2);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE order_id = 'E000001'"
                                   " AND reason = 'user asked' AND accepted_at > 0"),
                     1);
    assert_int_equal(db_int(f->db, "SELECT count(*) FROM orders WHERE order_id = 'E000002'"
                                   " AND reason = 'timeout' AND accepted_at = 0"),
                     1);
    seen_t *seen = calloc(1, sizeof(*seen));
    assert_int_equal(ts_kafka_read_all(f->k.bootstrap, ST_DEFAULT_OUTCOMES_TOPIC, on_outcome, seen),
                     6);
    assert_int_equal(seen->n[1], 4); /* settled, cancelled, then cancelled twice again */
    assert_int_equal(seen->status[1], OQ_STATUS_CANCELLED);
    assert_string_equal(seen->reason[1], "user asked");
    assert_int_equal(seen->n[2], 2); /* cancelled, cancelled again */
    assert_int_equal(seen->status[2], OQ_STATUS_CANCELLED);
    assert_string_equal(seen->reason[2], "timeout");
    free(seen);

    /* Acknowledged: the same group restarted reads only the order behind them. */
    keys[0] = sale_key(1), vals[0] = order_json(3, NULL);
    produce(f, keys, vals, 1);
    st_settle_opts_t o2 = {.batch = 10};
    start_settle(&r, f, &o2);
    wait_messages(&r, 1);
    s = st_settle_stats(r.st);
    assert_int_equal(atomic_load(&s->settled), 1);
    assert_int_equal(atomic_load(&s->duplicates), 0);
    stop_settle(&r);
}

int main(int argc, char **argv)
{
#if defined(__SANITIZE_THREAD__)
    /* librdkafka's threads come from C11 thrd_create, which TSan (GCC 12) does not
       intercept: its allocator crashes in them. ASan/UBSan and plain runs cover this,
       and the "race" label runs it under Helgrind (tests/CMakeLists.txt). */
    fprintf(stderr, "skipped under TSan: librdkafka threads come from thrd_create\n");
    return 77;
#endif
    if (argc > 2 && strcmp(argv[1], "--only") == 0) /* the race checks run one test */
        cmocka_set_test_filter(argv[2]);
    json_object_seed(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settle_2000_with_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_sql_raise_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_producer_fatal_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_full_produce_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_after_cancel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
