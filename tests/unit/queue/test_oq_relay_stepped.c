/*
 * The relay stepped (oq_relay_opts_t.broker, oq_relay_step) on a fake
 * broker table (queue/oq_broker.h) and a real spool, on the fake clock: a
 * failed delivery report is never released and is produced again after the
 * back-off; a refused produce backs off; release on settle waits for each
 * order's outcome; a graceful close releases what was delivered, a drop
 * nothing. No thread and no librdkafka: runs under TSan too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "queue/oq_broker.h"
#include "queue/oq_relay.h"
#include "queue/oq_spool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXM 64
#define BACKOFF_MS 50

/* The fake broker: what was produced, the reports to hand out, the outcomes to read. */
typedef struct fake {
    uint64_t token[MAXM];
    char key[MAXM][64];
    int n;
    int refuse; /* produces to refuse before accepting again */
    oq_broker_report_t rep[MAXM];
    int nrep;
    char out[MAXM][1024];
    int nout, outcur;
} fake_t;

typedef struct fx {
    char dir[256];
    oq_spool_t *sp;
    fake_t fk;
    oq_relay_t *r;
    char ids[8][INV_ORDER_ID_MAX + 1];
} fx_t;

static int fk_produce(void *ctx, const char *key, const void *val, size_t vlen, uint64_t token,
                      const char **why)
{
    fake_t *f = ctx;
    (void)val;
    (void)vlen;
    if (f->refuse > 0) {
        f->refuse--;
        *why = "refused (test)";
        return CM_EBACKEND;
    }
    assert_true(f->n < MAXM);
    f->token[f->n] = token;
    snprintf(f->key[f->n], sizeof(f->key[0]), "%s", key);
    f->n++;
    return 0;
}

static void fk_poll(void *ctx, int timeout_ms, oq_broker_report_fn fn, void *arg)
{
    fake_t *f = ctx;
    (void)timeout_ms;
    for (int i = 0; i < f->nrep; i++)
        fn(arg, &f->rep[i]);
    f->nrep = 0;
}

static int fk_consume(void *ctx, int timeout_ms, oq_broker_msg_fn fn, void *arg)
{
    fake_t *f = ctx;
    (void)timeout_ms;
    if (f->outcur >= f->nout)
        return 0;
    const char *j = f->out[f->outcur++];
    oq_broker_msg_t m = {.topic = OQ_BROKER_OUTCOMES, .payload = j, .len = strlen(j)};
    fn(arg, &m);
    return 1;
}

static const oq_broker_ops_t fk_ops = {
    .produce = fk_produce, .poll = fk_poll, .consume = fk_consume};

/* The report of the i-th produced message. */
static void report(fx_t *f, int i, bool ok)
{
    f->fk.rep[f->fk.nrep++] = (oq_broker_report_t){.token = f->fk.token[i],
                                                   .err = ok ? NULL : "Local: Message timed out",
                                                   .partition = ok ? 0 : -1,
                                                   .offset = ok ? i : -1};
}

static void outcome(fx_t *f, int order)
{
    oq_order_t o = {.type = OQ_MSG_OUTCOME,
                    .status = OQ_STATUS_SETTLED,
                    .qty = 1,
                    .node_id = OQ_NODE_UNKNOWN,
                    .at_ms = cm_wall_ms()};
    snprintf(o.order_id, sizeof(o.order_id), "%s", f->ids[order]);
    snprintf(o.sale_id, sizeof(o.sale_id), "sale");
    snprintf(o.user_id, sizeof(o.user_id), "user-%d", order);
    assert_true(oq_order_encode(&o, f->fk.out[f->fk.nout++], sizeof(f->fk.out[0])) > 0);
}

static uint64_t unreleased(fx_t *f)
{
    oq_spool_stats_t ss;
    oq_spool_stats(f->sp, &ss);
    return ss.unreleased_bytes;
}

/* A producer turn and a releaser turn. */
static void turn(fx_t *f)
{
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_PRODUCER), 0);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_RELEASER), 0);
}

static void open_relay(fx_t *f, bool settle)
{
    oq_relay_opts_t ro = {.spool = f->sp,
                          .embedded_release_on_settle = settle,
                          .consume = true,
                          .broker = &fk_ops,
                          .broker_ctx = &f->fk,
                          .rewind_backoff_ms = BACKOFF_MS};
    char err[256];
    assert_int_equal(oq_relay_open(&f->r, &ro, err, sizeof(err)), 0);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/oq_relay_stepped_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    cm_time_set_fake(true, 1000000000ull, 1700000000000LL);
    oq_spool_opts_t so = {.dir = f->dir, .durability = OQ_DURABILITY_WRITE};
    char err[256];
    assert_int_equal(oq_spool_open(&f->sp, &so, err, sizeof(err)), 0);
    oq_order_t o[3];
    for (int i = 0; i < 3; i++) {
        memset(&o[i], 0, sizeof(o[i]));
        snprintf(o[i].order_id, sizeof(o[i].order_id), "order-%d", i);
        snprintf(o[i].sale_id, sizeof(o[i].sale_id), "sale");
        snprintf(o[i].user_id, sizeof(o[i].user_id), "user-%d", i);
        o[i].qty = 1;
        o[i].node_id = 1;
        o[i].accepted_at_ms = cm_wall_ms();
        snprintf(f->ids[i], sizeof(f->ids[i]), "%s", o[i].order_id);
    }
    assert_int_equal(oq_spool_append(f->sp, o, 3), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    oq_relay_close(f->r, 0);
    oq_spool_close(f->sp);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", f->dir);
    cm_time_set_fake(false, 0, 0);
    free(f);
    return 0;
}

/* Release on delivery: a failed report holds the point before its record
 * and sends it (and what came after it) again once the back-off is over. */
static void test_failed_report_not_released(void **state)
{
    fx_t *f = *state;
    open_relay(f, false);
    turn(f);
    assert_int_equal(f->fk.n, 3);
    assert_string_equal(f->fk.key[1], f->ids[1]); /* keyed by order id */
    report(f, 0, true);
    report(f, 1, false);
    report(f, 2, true);
    turn(f);
    oq_relay_stats_t st;
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.released_records, 1); /* the first only */
    assert_true(unreleased(f) > 0);
    turn(f); /* within the back-off: nothing produced again */
    assert_int_equal(f->fk.n, 3);
    cm_time_advance_fake((uint64_t)(BACKOFF_MS + 1) * 1000000u);
    turn(f);
    assert_int_equal(f->fk.n, 5); /* orders 1 and 2 again */
    assert_string_equal(f->fk.key[3], f->ids[1]);
    assert_string_equal(f->fk.key[4], f->ids[2]);
    report(f, 3, true);
    report(f, 4, true);
    turn(f);
    assert_int_equal(unreleased(f), 0);
}

/* A refused produce: nothing produced until the back-off is over. */
/* A graceful close flushes (one poll), releases what was delivered and
 * persists the point; a record still in flight stays for the next start. */
static void test_close_releases_delivered(void **state)
{
    fx_t *f = *state;
    open_relay(f, false);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_PRODUCER), 0);
    assert_int_equal(f->fk.n, 3);
    report(f, 0, true);
    report(f, 1, true); /* the flush's poll reads these; the third stays in flight */
    oq_relay_stats_t rs;
    oq_relay_stats(f->r, &rs);
    oq_pos_t read_to = rs.scanned_to;
    assert_true(oq_pos_cmp(read_to, oq_spool_released(f->sp)) > 0);
    oq_relay_close(f->r, 100);
    f->r = NULL;
    oq_pos_t rp = oq_spool_released(f->sp);
    assert_true(oq_pos_cmp(rp, (oq_pos_t){0, 0}) > 0);
    assert_true(oq_pos_cmp(rp, read_to) < 0);
    assert_true(unreleased(f) > 0);
    /* the point was persisted: a reopened spool starts from it */
    oq_spool_close(f->sp);
    oq_spool_opts_t so = {.dir = f->dir, .durability = OQ_DURABILITY_WRITE};
    char err[256];
    assert_int_equal(oq_spool_open(&f->sp, &so, err, sizeof(err)), 0);
    assert_int_equal(oq_pos_cmp(oq_spool_released(f->sp), rp), 0);
}

/* A dropped relay (a kill -9) releases nothing, delivered or not. */
static void test_drop_releases_nothing(void **state)
{
    fx_t *f = *state;
    open_relay(f, false);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_PRODUCER), 0);
    for (int i = 0; i < 3; i++)
        report(f, i, true);
    uint64_t before = unreleased(f);
    oq_relay_drop(f->r);
    f->r = NULL;
    assert_int_equal(unreleased(f), before);
    assert_int_equal(oq_pos_cmp(oq_spool_released(f->sp), (oq_pos_t){0, 0}), 0);
}

static void test_refused_produce_backs_off(void **state)
{
    fx_t *f = *state;
    open_relay(f, false);
    f->fk.refuse = 1;
    turn(f);
    assert_int_equal(f->fk.n, 0);
    turn(f);
    assert_int_equal(f->fk.n, 0);
    cm_time_advance_fake((uint64_t)(BACKOFF_MS + 1) * 1000000u);
    turn(f);
    assert_int_equal(f->fk.n, 3);
    oq_relay_stats_t st;
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.errors, 1);
}

/* Release on settle: delivered orders wait for their outcomes, in spool order. */
static void test_release_on_settle(void **state)
{
    fx_t *f = *state;
    open_relay(f, true);
    turn(f);
    for (int i = 0; i < 3; i++)
        report(f, i, true);
    turn(f);
    oq_relay_stats_t st;
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.awaiting_outcome, 3);
    assert_int_equal(st.released_records, 0);
    outcome(f, 1); /* not the first: the point cannot move */
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_CONSUMER), 1);
    turn(f);
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.released_records, 0);
    outcome(f, 0);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_CONSUMER), 1);
    turn(f);
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.released_records, 2);
    outcome(f, 2);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_CONSUMER), 1);
    assert_int_equal(oq_relay_step(f->r, OQ_RELAY_CONSUMER), 0);
    turn(f);
    assert_int_equal(unreleased(f), 0);
    oq_relay_stats(f->r, &st);
    assert_int_equal(st.outcomes_seen, 3);
}

int main(void)
{
    cm_log_set_level(CM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failed_report_not_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_produce_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_releases_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_releases_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_on_settle, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
