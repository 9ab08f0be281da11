/*
 * flashgate-settle's consumer loop. See st_settle.h for the protocol; the
 * order of the steps in process_batch() is what gives "exactly once in the
 * database": database commit, then outcomes delivered, then offsets committed.
 */
#include "settle/st_settle.h"
#include "settle/st_loop.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_id.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_rate.h"
#include "common/cm_time.h"
#include "queue/oq_relay.h"

#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MOD "settle"
#define COMMIT_WAIT_MS 5000 /* longest wait for an offset commit (a failed one is harmless) */

typedef struct st_msg {
    rd_kafka_message_t *m;
    bool valid;
    oq_order_t order;
    st_outcome_t outcome;
} st_msg_t;

struct st_settle {
    st_settle_opts_t opts;
    char topic[256], outcomes_topic[256], group[256];
    char brokers_file[1024]; /* "" when brokers were given literally */
    char brokers[1024];      /* the list in use */
    rd_kafka_t *consumer, *producer;
    st_sink_t *sink;
    st_msg_t *batch;
    size_t nbatch, cap;
    size_t max_batch; /* --batch */
    /* one run of orders between cancels, for st_sink_settle_many (cap entries) */
    const oq_order_t **msg_orders;
    st_outcome_t **msg_outs;
    st_batch_writer_t writer;
    cm_bucket_t bucket;
    cm_rate_policy_t policy;
    _Atomic bool stop;
    _Atomic bool brokers_down;
    bool reconnect;            /* new clients: the brokers file changed, or no producer */
    uint64_t stop_grace_ms;    /* opts.stop_grace_ms resolved: 0 = none */
    uint64_t stop_deadline_ms; /* 0 until a stop is seen */
    bool drain_told;           /* opts.on_draining was called */
    uint64_t last_file_check_ms;
    uint64_t next_probe_ms; /* probe_brokers: the next metadata request while down */
    /* delivery reports of the outcomes in flight (called on this thread) */
    size_t dr_pending, dr_failed;
    st_settle_stats_t stats;
};

/*---- Small helpers ----*/

const char *st_log_value(char *buf, size_t cap, const char *s)
{
    buf[cm_log_quote(buf, 0, cap, s ? s : "")] = '\0';
    return buf;
}

/* The brokers seen reachable or not: the loop's own flag and the readiness stat. */
static void brokers_seen(st_settle_t *st, bool up)
{
    atomic_store(&st->brokers_down, !up);
    atomic_store_explicit(&st->stats.broker_up, up ? 1 : 0, memory_order_relaxed);
}

static const st_poison_t *poison_find(const st_sink_t *s, const oq_order_t *o)
{
    bool cancel = o->type == OQ_MSG_CANCEL;
    for (size_t i = 0; i < s->npoison; i++)
        if (s->poison[i].cancel == cancel && strcmp(s->poison[i].order_id, o->order_id) == 0)
            return &s->poison[i];
    return NULL;
}

int st_sink_settle(st_sink_t *s, const oq_order_t *o, st_outcome_t *out)
{
    memset(out, 0, sizeof(*out));
    int ret;
    const st_poison_t *poison = poison_find(s, o);
    if (s->has_user_sql || poison) {
        /* Look first: the user's statement must not run for a copy. */
        if (!CM_PLANT(SETTLE_COPY_RERUN) && (ret = s->ops->lookup(s, o->order_id, out)) != 0)
            return ret < 0 ? ret : 0;
        if (poison) { /* failed alone, deterministically: not run again */
            oq_reason_copy(out->reason, sizeof(out->reason), poison->reason);
            ret = 1;
        } else if ((ret = s->ops->run_user(s, o, out->reason, sizeof(out->reason))) < 0)
            return ret;
        out->status = ret == 1 ? OQ_STATUS_FAILED : OQ_STATUS_SETTLED;
        if ((ret = s->ops->insert(s, o, out->status, out->reason)) < 0)
            return ret;
        if (ret == 0) {
            /* Not there at the lookup, there now: another worker settled it
             * meanwhile (a rebalance; PostgreSQL's insert waited for its
             * commit). Our run of the user's statement must not be kept, nor
             * our decision published: the caller rolls the batch back, and the
             * retry's lookup finds that worker's row. */
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "order %s was settled by another worker meanwhile", o->order_id);
            return CM_ECONFLICT;
        }
        out->changed = true;
        return 0;
    }
    if ((ret = s->ops->insert(s, o, OQ_STATUS_SETTLED, NULL)) < 0)
        return ret;
    if (ret == 1) {
        out->status = OQ_STATUS_SETTLED;
        out->changed = true;
        return 0;
    }
    ret = s->ops->lookup(s, o->order_id, out);
    if (ret == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "order %s vanished", o->order_id);
        return CM_EBACKEND;
    }
    return ret < 0 ? ret : 0;
}

int st_sink_settle_many(st_sink_t *s, const oq_order_t *const *orders, st_outcome_t *const *outs,
                        size_t n)
{
    if (n == 0)
        return 0;
    if (s->ops->settle_many && !s->has_user_sql && s->npoison == 0)
        return s->ops->settle_many(s, orders, outs, n);
    for (size_t i = 0; i < n; i++) {
        int ret = st_sink_settle(s, orders[i], outs[i]);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int mkdir_p(const char *dir)
{
    char buf[1024];
    if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
        return CM_EINVAL;
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) == -1 && errno != EEXIST)
                return CM_EIO;
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) == -1 && errno != EEXIST)
        return CM_EIO;
    return 0;
}

int st_sink_open(st_sink_t **out, const char *db, const char *data_dir, const st_sink_opts_t *opts,
                 char *err, size_t errlen)
{
    if (db && (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0))
        return st_pg_open(out, db, opts, err, errlen);
    char path[1024];
    if (!db || !*db) {
        const char *dir = data_dir && *data_dir ? data_dir : "data";
        if (mkdir_p(dir) != 0) {
            snprintf(err, errlen, "cannot create data dir %s: %s", dir, strerror(errno));
            return CM_EIO;
        }
        snprintf(path, sizeof(path), "%s/orders.db", dir);
    } else if (strncmp(db, "sqlite:", 7) == 0) {
        snprintf(path, sizeof(path), "%s", db + 7);
    } else if (strncmp(db, "file:", 5) == 0) {
        snprintf(path, sizeof(path), "%s", db + 5);
    } else if (strstr(db, "://")) {
        snprintf(err, errlen, "unsupported database URL %s (postgresql://, sqlite:PATH)", db);
        return CM_EINVAL;
    } else {
        snprintf(path, sizeof(path), "%s", db);
    }
    return st_sqlite_open(out, path, opts, err, errlen);
}

/*---- Message formats ----*/

/*
 * The orders topic carries orders and cancels. oq_order_decode reads the
 * encoder's exact form without jansson (that was ~40% of the worker's CPU per
 * order: bench/README.md "Settlement") and anything else with it.
 */
int st_order_parse(const char *json, size_t len, oq_order_t *o, char *err, size_t errlen)
{
    int rc = oq_order_decode(json, len, o, err, errlen);
    if (rc == 0 && o->type != OQ_MSG_ORDER && o->type != OQ_MSG_CANCEL) {
        cm_errbuf_set(err, errlen, "type: %s is not for the orders topic",
                      oq_msg_type_name(o->type));
        return CM_EINVAL;
    }
    return rc;
}

char *st_outcome_format(const oq_order_t *o, const st_outcome_t *oc, int64_t at_ms)
{
    oq_order_t m = *o;
    m.type = OQ_MSG_OUTCOME;
    m.status = oc->status;
    m.at_ms = at_ms;
    m.accepted_at_ms = 0;
    m.node_id = OQ_NODE_UNKNOWN;
    m.idem_key[0] = '\0';
    snprintf(m.reason, sizeof(m.reason), "%s", oc->reason);
    char buf[OQ_ORDER_JSON_MAX];
    if (oq_order_encode(&m, buf, sizeof(buf)) < 0)
        abort(); /* cannot be: OQ_ORDER_JSON_MAX holds any record */
    return cm_xstrdup(buf);
}

/*---- Kafka clients ----*/

static int read_brokers_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return CM_ENOTFOUND;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = 0;
    while (n > 0 && strchr(" \t\r\n", out[n - 1]))
        out[--n] = 0;
    return n ? 0 : CM_ENOTFOUND;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    st_settle_t *st = opaque;
    (void)rk;
    char val[1024]; /* a broker's words: escaped (cut, if ever, at the line's end) */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        brokers_seen(st, false);
        cm_log_warn(MOD, "all kafka brokers down", "reason=%s",
                    st_log_value(val, sizeof(val), reason));
    } else if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE) {
        /* librdkafka logs these itself and retries. */
        cm_log_debug(MOD, "kafka error", "err=%s reason=%s", rd_kafka_err2name(err),
                     st_log_value(val, sizeof(val), reason));
    } else {
        cm_log_warn(MOD, "kafka error", "err=%s reason=%s", rd_kafka_err2name(err),
                    st_log_value(val, sizeof(val), reason));
    }
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    st_settle_t *st = opaque;
    (void)rk;
    if (st->dr_pending > 0)
        st->dr_pending--;
    if (m->err) {
        st->dr_failed++;
        cm_log_warn(MOD, "outcome not delivered", "err=%s", rd_kafka_err2name(m->err));
    } else {
        atomic_fetch_add_explicit(&st->stats.outcomes, 1, memory_order_relaxed);
    }
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen)
{
    char e[256];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka property %s=%s: %s", k, v, e);
        return CM_EINVAL;
    }
    return 0;
}

/* Properties "consumer.K=V" / "producer.K=V" go to one client only; plain "K=V" to both. */
static rd_kafka_conf_t *base_conf(st_settle_t *st, bool consumer, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_conf_set_error_cb(conf, on_error);
    if (conf_set(conf, "bootstrap.servers", st->brokers, err, errlen))
        goto fail;
    /*
     * fetch.wait.max.ms=10 (librdkafka: 500), before the user's properties so
     * that they can change it. A real broker answers a waiting fetch as soon as
     * a message arrives, so this only bounds the idle fetch loop (100 small
     * requests/s per broker while nothing comes). The embedded (mock) broker
     * holds an empty fetch for the whole wait even when orders arrive
     * meanwhile: a caught-up worker left each new order waiting up to 500 ms
     * (bench: accept-to-settled p50 413 ms -> 92 ms with this alone).
     */
    if (consumer && conf_set(conf, "fetch.wait.max.ms", "10", err, errlen))
        goto fail;
    for (size_t i = 0; i < st->opts.n_kafka_props; i++) {
        const char *kv = st->opts.kafka_props[i];
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv) {
            snprintf(err, errlen, "kafka property \"%s\": expected key=value", kv);
            goto fail;
        }
        const char *mine = consumer ? "consumer." : "producer.";
        const char *other = consumer ? "producer." : "consumer.";
        if (strncmp(kv, other, 9) == 0)
            continue;
        if (strncmp(kv, mine, 9) == 0)
            kv += 9;
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        if (conf_set(conf, key, eq + 1, err, errlen))
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static void clients_destroy(st_settle_t *st, bool leave_group)
{
    atomic_store_explicit(&st->stats.broker_up, 0, memory_order_relaxed);
    if (st->consumer) {
        if (leave_group)
            rd_kafka_consumer_close(st->consumer);
        rd_kafka_destroy_flags(st->consumer,
                               leave_group ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        st->consumer = NULL;
    }
    if (st->producer) {
        rd_kafka_flush(st->producer, leave_group ? 2000 : 0);
        rd_kafka_destroy(st->producer);
        st->producer = NULL;
    }
}

/* The outcomes producer, on st->brokers. */
static int producer_create(st_settle_t *st, char *err, size_t errlen)
{
    char e[512];
    rd_kafka_conf_t *pc = base_conf(st, false, err, errlen);
    if (!pc)
        return CM_EINVAL;
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    if (conf_set(pc, "enable.idempotence", "true", err, errlen) ||
        conf_set(pc, "acks", "all", err, errlen) || conf_set(pc, "linger.ms", "5", err, errlen)) {
        rd_kafka_conf_destroy(pc);
        return CM_EINVAL;
    }
    st->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, e, sizeof(e));
    if (!st->producer) {
        rd_kafka_conf_destroy(pc);
        snprintf(err, errlen, "kafka producer: %s", e);
        return CM_EBACKEND;
    }
    /* its first batch's outcomes would wait ~0.85 s for librdkafka's topic
     * scan, and the offsets commit and every batch behind them with it */
    oq_kafka_learn_topic(st->producer, st->outcomes_topic, 1000);
    return 0;
}

static int clients_create(st_settle_t *st, char *err, size_t errlen)
{
    char e[512];
    if (*st->brokers_file) {
        int r = read_brokers_file(st->brokers_file, st->brokers, sizeof(st->brokers));
        if (r) {
            snprintf(err, errlen, "cannot read brokers from %s", st->brokers_file);
            return r;
        }
    }
    int r = producer_create(st, err, errlen);
    if (r)
        return r;
    rd_kafka_conf_t *cc = base_conf(st, true, err, errlen);
    if (!cc)
        return CM_EINVAL;
    if (conf_set(cc, "group.id", st->group, err, errlen) ||
        conf_set(cc, "enable.auto.commit", "false", err, errlen) ||
        conf_set(cc, "enable.auto.offset.store", "false", err, errlen) ||
        conf_set(cc, "auto.offset.reset", "earliest", err, errlen) ||
        conf_set(cc, "isolation.level", "read_committed", err, errlen) ||
        conf_set(cc, "enable.partition.eof", "false", err, errlen)) {
        rd_kafka_conf_destroy(cc);
        return CM_EINVAL;
    }
    st->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, e, sizeof(e));
    if (!st->consumer) {
        rd_kafka_conf_destroy(cc);
        snprintf(err, errlen, "kafka consumer: %s", e);
        return CM_EBACKEND;
    }
    rd_kafka_poll_set_consumer(st->consumer);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, st->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(st->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr) {
        snprintf(err, errlen, "subscribe %s: %s", st->topic, rd_kafka_err2str(kerr));
        return CM_EBACKEND;
    }
    brokers_seen(st, true);
    st->reconnect = false;
    cm_log_info(MOD, "kafka clients up", "brokers=%s topic=%s group=%s", st->brokers, st->topic,
                st->group);
    return 0;
}

/*
 * True when the brokers file names other brokers than the ones in use (checked
 * once a second). Not gated on ALL_BROKERS_DOWN: that error is served only by
 * rd_kafka_consumer_poll, so a worker waiting elsewhere (an offset commit to a
 * vanished coordinator) never sees it.
 */
static bool brokers_moved(st_settle_t *st)
{
    if (st->reconnect)
        return true;
    if (!*st->brokers_file)
        return false;
    uint64_t now = cm_mono_ms();
    if (now - st->last_file_check_ms < 1000)
        return false;
    st->last_file_check_ms = now;
    char now_brokers[sizeof(st->brokers)];
    if (read_brokers_file(st->brokers_file, now_brokers, sizeof(now_brokers)) != 0)
        return false;
    st->reconnect = strcmp(now_brokers, st->brokers) != 0;
    return st->reconnect;
}

/*---- The loop ----*/

/* Tells the owner, once, that the stop was seen and the drain begins. */
static void tell_draining(st_settle_t *st)
{
    if (st->drain_told || !atomic_load(&st->stop))
        return;
    st->drain_told = true;
    if (st->opts.on_draining)
        st->opts.on_draining(st->opts.on_draining_arg);
}

static bool stopping_too_long(st_settle_t *st)
{
    if (!atomic_load(&st->stop))
        return false;
    tell_draining(st);
    uint64_t now = cm_mono_ms();
    if (!st->stop_deadline_ms)
        st->stop_deadline_ms = now + st->stop_grace_ms;
    return now >= st->stop_deadline_ms;
}

static void batch_release(st_settle_t *st)
{
    for (size_t i = 0; i < st->nbatch; i++)
        rd_kafka_message_destroy(st->batch[i].m);
    st->nbatch = 0;
}

/*---- Writing a batch, and poison isolation (st_sink.h) ----*/

/* Cancels one order; a cancel on the poison list goes in with the plain
 * reason (its own could not be stored: 22P05 in a non-UTF8 database). */
static int cancel_one(st_sink_t *s, const oq_order_t *c, st_outcome_t *out)
{
    if (!poison_find(s, c))
        return st_sink_cancel(s, c, out);
    oq_order_t plain = *c;
    plain.reason[0] = '\0';
    return st_sink_cancel(s, &plain, out);
}

/*
 * Writes msgs[from..] up to the next cancel: the orders of that run in one
 * st_sink_settle_many() (a few round trips for the run, not one per order),
 * then the cancel alone. A run stops at a cancel because the cancel's effect
 * depends on which copies of its order came before it. Returns the index
 * after what it wrote; *ret is 0 or a negative cm_err_t.
 */
static size_t write_run(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                        st_outcome_t *const *outs, size_t n, size_t from, int *ret)
{
    size_t k = 0, i = from;
    for (; i < n && msgs[i]->type != OQ_MSG_CANCEL; i++) {
        w->run_orders[k] = msgs[i];
        w->run_outs[k++] = outs[i];
    }
    *ret = st_sink_settle_many(s, w->run_orders, w->run_outs, k);
    if (*ret == 0 && i < n) {
        *ret = cancel_one(s, msgs[i], outs[i]);
        i++;
    }
    return i;
}

/* One transaction over msgs[0..n): 0 committed, or a negative cm_err_t
 * (not rolled back yet). */
static int write_tx(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                    st_outcome_t *const *outs, size_t n)
{
    s->err_final = false;
    int ret = st_sink_begin(s);
    for (size_t i = 0; ret == 0 && i < n;)
        i = write_run(w, s, msgs, outs, n, i, &ret);
    if (ret == 0)
        ret = st_sink_commit(s);
    return ret;
}

static bool is_final(const st_sink_t *s, int ret)
{
    /* CM_EAGAIN: the retry goes further (SQLite's RAISE(ROLLBACK));
     * CM_ECONFLICT: another worker's row, which the retry reports. */
    return ret != CM_EAGAIN && ret != CM_ECONFLICT && s->err_final;
}

static void poison_add(st_batch_writer_t *w, const oq_order_t *o, const char *reason)
{
    if (w->npoison == w->cappoison) {
        w->cappoison = w->cappoison ? w->cappoison * 2 : 4;
        w->poison = cm_xrealloc(w->poison, w->cappoison * sizeof(*w->poison));
    }
    st_poison_t *p = &w->poison[w->npoison++];
    memset(p, 0, sizeof(*p));
    snprintf(p->order_id, sizeof(p->order_id), "%s", o->order_id);
    p->cancel = o->type == OQ_MSG_CANCEL;
    oq_reason_copy(p->reason, sizeof(p->reason), *reason ? reason : "rejected by the database");
}

/*
 * Each message alone in its own transaction, with the checks COMMIT would run,
 * rolled back: which ones fail by themselves, deterministically, while the
 * statement demonstrably works for another order? A transient error stops the
 * probe (no conclusion). Lists the poison messages and returns how many; sets
 * note->systemic when it finds none to blame (a stall).
 */
static size_t probe(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                    size_t n, st_batch_note_t *note)
{
    size_t first_new = w->npoison;
    note->probed = true;
    w->probed_n = n;
    for (size_t i = 0; i < n; i++) {
        st_probe_res_t *r = &w->probe_res[i];
        r->state = 0;
        r->reason[0] = '\0';
        if (poison_find(s, msgs[i])) /* already listed: goes in as failed, proves nothing */
            continue;
        st_outcome_t one;
        st_outcome_t *one_out = &one;
        memset(&one, 0, sizeof(one));
        s->err_final = false;
        int ret = st_sink_begin(s);
        if (ret == 0)
            ret = msgs[i]->type == OQ_MSG_CANCEL ? cancel_one(s, msgs[i], one_out)
                                                 : st_sink_settle_many(s, &msgs[i], &one_out, 1);
        if (ret == 0 && s->ops->check)
            ret = s->ops->check(s); /* what only COMMIT would raise (deferred constraints) */
        bool final = ret != 0 && is_final(s, ret);
        snprintf(r->reason, sizeof(r->reason), "%s", s->err_reason);
        st_sink_rollback(s);
        if (ret == 0) {
            /* newly written: the statement (or the insert) ran for it and passed */
            r->state = one.changed ? 1 : 2;
        } else if (final) {
            r->state = -1;
        } else { /* transient: no conclusion from this probe */
            return 0;
        }
    }
    /* The evidence: another order newly written (for an order), another
     * message newly written (for a cancel: listed, it only loses its reason). */
    for (size_t i = 0; i < n; i++) {
        if (w->probe_res[i].state != -1)
            continue;
        bool cancel = msgs[i]->type == OQ_MSG_CANCEL, evidence = false;
        for (size_t j = 0; j < n && !evidence; j++)
            evidence = j != i && w->probe_res[j].state == 1 &&
                       (cancel || msgs[j]->type == OQ_MSG_ORDER);
        bool listed = false; /* a copy of it failed too: listed once */
        for (size_t k = first_new; k < w->npoison && !listed; k++)
            listed = w->poison[k].cancel == cancel &&
                     strcmp(w->poison[k].order_id, msgs[i]->order_id) == 0;
        if (evidence && !listed) {
            poison_add(w, msgs[i], w->probe_res[i].reason);
            s->poison = w->poison; /* may have moved; s->npoison still first_new */
        }
    }
    if (w->npoison == first_new) {
        /* Every failing message fails without evidence against it (the
         * statement is broken for all, or the order is alone), or none fails
         * alone while the batch does: nothing is failed, a stall. */
        note->systemic = true;
        return 0;
    }
    for (size_t k = first_new; k < w->npoison; k++) {
        char reason[2 * OQ_REASON_MAX + 3];
        cm_log_error(MOD, "poison message: it alone fails its batch, recording it as failed",
                     "order_id=%s cancel=%d reason=%s", w->poison[k].order_id,
                     (int)w->poison[k].cancel,
                     st_log_value(reason, sizeof(reason), w->poison[k].reason));
    }
    s->poison = w->poison;
    s->npoison = w->npoison;
    return w->npoison - first_new;
}

int st_batch_write(st_batch_writer_t *w, st_sink_t *s, const oq_order_t *const *msgs,
                   st_outcome_t *const *outs, size_t n, st_batch_note_t *note)
{
    memset(note, 0, sizeof(*note));
    if (n > w->cap) {
        w->cap = n;
        w->run_orders = cm_xrealloc(w->run_orders, n * sizeof(*w->run_orders));
        w->run_outs = cm_xrealloc(w->run_outs, n * sizeof(*w->run_outs));
        w->probe_res = cm_xrealloc(w->probe_res, n * sizeof(*w->probe_res));
    }
    s->poison = w->poison;
    s->npoison = w->npoison;
    int ret = write_tx(w, s, msgs, outs, n);
    if (ret == 0)
        return 0;
    note->final = is_final(s, ret);
    st_sink_rollback(s);
    w->final_streak = note->final ? w->final_streak + 1 : 0;
    /* Probe at the K-th final failure in a row, then every REPROBE more, and
     * at once when the batch has grown since its last probe (new evidence). */
    bool grown = w->probed_n > 0 && n > w->probed_n;
    if (w->final_streak >= ST_POISON_AFTER &&
        (grown || (w->final_streak - ST_POISON_AFTER) % ST_POISON_REPROBE == 0)) {
        char errmsg[sizeof(s->errmsg)];
        memcpy(errmsg, s->errmsg, sizeof(errmsg)); /* the batch's error, for the caller's log */
        note->poisoned = probe(w, s, msgs, n, note);
        memcpy(s->errmsg, errmsg, sizeof(errmsg));
        if (note->poisoned)
            w->final_streak = 0;
    }
    return ret;
}

void st_batch_writer_done(st_batch_writer_t *w, st_sink_t *s)
{
    w->npoison = 0;
    w->final_streak = 0;
    w->probed_n = 0;
    s->poison = NULL;
    s->npoison = 0;
}

void st_batch_writer_free(st_batch_writer_t *w)
{
    free(w->poison);
    free(w->run_orders);
    free(w->run_outs);
    free(w->probe_res);
    memset(w, 0, sizeof(*w));
}

/* Points msg_orders/msg_outs at the valid messages of the batch; returns how many. */
static size_t batch_collect(st_settle_t *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->nbatch; i++) {
        if (!st->batch[i].valid)
            continue;
        st->msg_orders[n] = &st->batch[i].order;
        st->msg_outs[n++] = &st->batch[i].outcome;
    }
    return n;
}

/* Decodes one message of the batch (an invalid one is counted, logged, skipped). */
static void batch_parse(st_settle_t *st, st_msg_t *bm)
{
    char err[200], val[2 * sizeof(err) + 3];
    bm->valid = bm->m->payload &&
                st_order_parse(bm->m->payload, bm->m->len, &bm->order, err, sizeof(err)) == 0;
    if (!bm->valid) {
        atomic_fetch_add_explicit(&st->stats.invalid, 1, memory_order_relaxed);
        cm_log_warn(MOD, "skipping invalid message", "partition=%d offset=%lld err=%s",
                    (int)bm->m->partition, (long long)bm->m->offset,
                    st_log_value(val, sizeof(val), bm->m->payload ? err : "empty"));
    }
}

static void batch_push(st_settle_t *st, rd_kafka_message_t *m)
{
    if (st->nbatch == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 64;
        st->batch = cm_xrealloc(st->batch, st->cap * sizeof(*st->batch));
        st->msg_orders = cm_xrealloc(st->msg_orders, st->cap * sizeof(*st->msg_orders));
        st->msg_outs = cm_xrealloc(st->msg_outs, st->cap * sizeof(*st->msg_outs));
    }
    memset(&st->batch[st->nbatch], 0, sizeof(st->batch[0]));
    st->batch[st->nbatch++].m = m;
}

/*
 * A batch stalled without an order to blame (a lone order that fails alone:
 * it, or the statement for everyone?) takes in the messages already fetched,
 * up to --batch (and --max-rate): the next probe then has other orders, whose
 * passing is the evidence that the first one is poison, or whose failing too
 * confirms the stall. They are committed with the batch, offsets in order.
 * Returns how many were added.
 */
static size_t batch_extend(st_settle_t *st)
{
    size_t added = 0;
    while (st->nbatch < st->max_batch && st->consumer) {
        if (st->policy.rate_milli) {
            cm_rate_result_t res;
            cm_bucket_take(&st->bucket, &st->policy, cm_mono_ns(), 1, &res);
            if (!res.allowed)
                break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(st->consumer, 0);
        if (!m || m->err) {
            if (st->policy.rate_milli)
                cm_bucket_refund(&st->bucket, &st->policy, 1);
            if (m)
                rd_kafka_message_destroy(m);
            break;
        }
        batch_push(st, m);
        batch_parse(st, &st->batch[st->nbatch - 1]);
        added++;
    }
    return added;
}

/*
 * Writes the batch in one transaction, retrying with backoff. 0, or CM_EAGAIN
 * when abandoned. A batch that keeps failing is logged once, then as a summary
 * every STALL_LOG_MS (a line per retry would flood the log during a stall).
 * It counts as stalled (stats.stalled, one error line) when a probe finds no
 * order to blame, or when it has failed for longer than stall_after_ms with
 * any error (a database that times out at every try: never a reason to fail
 * an order, but an operator must see it).
 */
#define STALL_LOG_MS 30000
static int write_batch(st_settle_t *st)
{
    uint64_t backoff = 50;
    size_t quick = 0, n = batch_collect(st);
    uint64_t fails = 0, fails_logged = 0, first_fail_ms = 0, next_log_ms = 0;
    uint64_t stall_after = st->opts.stall_after_ms ? st->opts.stall_after_ms : ST_STALL_AFTER_MS;
    bool stalled = false, unblamed = false;
    char detail[2 * sizeof(st->sink->errmsg) + 3];
    for (;;) {
        st_batch_note_t note;
        int ret = st_batch_write(&st->writer, st->sink, st->msg_orders, st->msg_outs, n, &note);
        atomic_store_explicit(&st->stats.sink_up, ret == 0 ? 1 : 0, memory_order_relaxed);
        if (ret == 0) {
            if (fails > 0)
                cm_log_info(MOD, "batch written after retries",
                            "retries=%llu seconds=%llu orders=%zu", (unsigned long long)fails,
                            (unsigned long long)((cm_mono_ms() - first_fail_ms) / 1000), n);
            if (stalled)
                atomic_fetch_sub_explicit(&st->stats.stalled, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&st->stats.poisoned, st->writer.npoison,
                                      memory_order_relaxed);
            st_batch_writer_done(&st->writer, st->sink);
            return 0;
        }
        atomic_fetch_add_explicit(&st->stats.db_errors, 1, memory_order_relaxed);
        uint64_t now = cm_mono_ms();
        if (fails++ == 0)
            first_fail_ms = now;
        st_log_value(detail, sizeof(detail), st->sink->errmsg);
        if (note.probed)
            unblamed = note.systemic;
        if (!stalled && (note.systemic || now - first_fail_ms >= stall_after)) {
            stalled = true;
            atomic_fetch_add_explicit(&st->stats.stalled, 1, memory_order_relaxed);
            if (note.systemic)
                cm_log_error(MOD, "batch stalled: no order in it fails alone while another "
                             "passes, none is failed; retrying until the database or --sql is "
                             "fixed",
                             "err=%s detail=%s orders=%zu", cm_errname(ret), detail, n);
            else
                cm_log_error(MOD, "batch stalled: it keeps failing, none of its orders is failed; "
                             "retrying until the database answers",
                             "err=%s detail=%s orders=%zu retries=%llu seconds=%llu final=%d",
                             cm_errname(ret), detail, n, (unsigned long long)fails,
                             (unsigned long long)((now - first_fail_ms) / 1000), (int)note.final);
        }
        if (now >= next_log_ms) {
            cm_log_warn(MOD, "batch rolled back, will retry",
                        "err=%s detail=%s orders=%zu retries=%llu since_last_log=%llu "
                        "seconds=%llu final=%d",
                        cm_errname(ret), detail, n, (unsigned long long)fails,
                        (unsigned long long)(fails - fails_logged),
                        (unsigned long long)((now - first_fail_ms) / 1000), (int)note.final);
            fails_logged = fails;
            next_log_ms = now + STALL_LOG_MS;
        }
        if (atomic_load(&st->stop) || brokers_moved(st)) {
            if (stalled)
                atomic_fetch_sub_explicit(&st->stats.stalled, 1, memory_order_relaxed);
            st_batch_writer_done(&st->writer, st->sink);
            return CM_EAGAIN;
        }
        if (note.poisoned)
            continue; /* the retry fails the poison and settles the rest */
        if (unblamed && batch_extend(st) > 0)
            n = batch_collect(st); /* the next failure probes the grown batch */
        /* CM_EAGAIN from the sink: the retry goes further (an order whose
         * user statement rolled the batch back is failed without it), so no
         * wait; one such retry per order at most, then the backoff again. */
        if (ret == CM_EAGAIN && quick++ < st->nbatch)
            continue;
        sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

/*
 * An idempotent producer's fatal error (a sequence desynchronization with the
 * broker, OUT_OF_ORDER_SEQUENCE_NUMBER) fails every later produce with
 * _FATAL: without a new producer the worker retried its batch's outcomes
 * forever and never committed an offset again. The consumer is kept (a new
 * one would wait out the old member's session in the group). 0, or CM_EAGAIN
 * when no producer could be made (the loop then makes new clients).
 */
static int producer_renew_if_fatal(st_settle_t *st)
{
    char why[512];
    if (!st->producer || !rd_kafka_fatal_error(st->producer, why, sizeof(why)))
        return 0;
    char val[2 * sizeof(why) + 3];
    cm_log_error(MOD, "kafka producer fatal error, recreating it", "reason=%s",
                 st_log_value(val, sizeof(val), why));
    rd_kafka_purge(st->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(st->producer);
    st->producer = NULL;
    char err[512];
    if (producer_create(st, err, sizeof(err)) != 0) {
        cm_log_error(MOD, "cannot recreate the kafka producer", "err=%s",
                     st_log_value(val, sizeof(val), err));
        st->reconnect = true;
        return CM_EAGAIN;
    }
    return 0;
}

/* Publishes one outcome per valid message and waits for all deliveries. 0 or CM_EAGAIN. */
static int publish_outcomes(st_settle_t *st)
{
    uint64_t backoff = 100;
    for (;;) {
        st->dr_pending = 0;
        st->dr_failed = 0;
        int64_t at = cm_wall_ms();
        for (size_t i = 0; i < st->nbatch; i++) {
            st_msg_t *bm = &st->batch[i];
            if (!bm->valid)
                continue;
            char *val = st_outcome_format(&bm->order, &bm->outcome, at);
            for (;;) {
                rd_kafka_resp_err_t e =
                    rd_kafka_producev(st->producer, RD_KAFKA_V_TOPIC(st->outcomes_topic),
                                      RD_KAFKA_V_KEY(bm->order.sale_id, strlen(bm->order.sale_id)),
                                      RD_KAFKA_V_VALUE(val, strlen(val)),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
                if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                    st->dr_pending++;
                    break;
                }
                if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                    cm_log_warn(MOD, "produce outcome", "err=%s", rd_kafka_err2name(e));
                    free(val);
                    st->dr_failed++;
                    break;
                }
                /* Room comes only with delivery reports, and a broker that
                 * takes nothing sends none before message.timeout.ms (300 s
                 * by default): give up on a stop or a broker move as the
                 * waits below do. The offsets stay uncommitted, so the batch
                 * is read again and its outcomes published again. */
                if (stopping_too_long(st) || brokers_moved(st)) {
                    free(val);
                    return CM_EAGAIN;
                }
                rd_kafka_poll(st->producer, 10);
            }
        }
        while (st->dr_pending > 0) {
            rd_kafka_flush(st->producer, 100);
            if (stopping_too_long(st) || brokers_moved(st))
                return CM_EAGAIN;
        }
        if (st->dr_failed == 0)
            return 0;
        if (stopping_too_long(st) || brokers_moved(st) || producer_renew_if_fatal(st) != 0)
            return CM_EAGAIN;
        sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

static int commit_offsets(st_settle_t *st)
{
    /* one topic: the batch's partitions and offsets, the core's choice of what to commit */
    int32_t *part = cm_xmalloc(st->nbatch * 2 * sizeof(int32_t));
    int64_t *off = cm_xmalloc(st->nbatch * 2 * sizeof(int64_t));
    for (size_t i = 0; i < st->nbatch; i++) {
        part[i] = st->batch[i].m->partition;
        off[i] = st->batch[i].m->offset;
    }
    size_t np = st_batch_offsets(part, off, st->nbatch, part + st->nbatch, off + st->nbatch);
    const char *topic = rd_kafka_topic_name(st->batch[0].m->rkt);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)np);
    for (size_t j = 0; j < np; j++)
        rd_kafka_topic_partition_list_add(list, topic, part[st->nbatch + j])->offset =
            off[st->nbatch + j];
    free(part);
    free(off);
    /* Not rd_kafka_commit(sync): when the broker dies (the embedded one on a
     * gateway kill -9) the request sits in the coordinator's queue for
     * socket.timeout.ms (60 s) and settlement stops that long. Wait at most
     * COMMIT_WAIT_MS, less when stopping or the brokers moved. */
    rd_kafka_queue_t *q = rd_kafka_queue_new(st->consumer);
    rd_kafka_resp_err_t e = rd_kafka_commit_queue(st->consumer, list, q, NULL, NULL);
    rd_kafka_topic_partition_list_destroy(list);
    uint64_t until = cm_mono_ms() + COMMIT_WAIT_MS;
    while (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
        if (ev) {
            e = rd_kafka_event_error(ev);
            rd_kafka_event_destroy(ev);
            break;
        }
        if (cm_mono_ms() >= until || stopping_too_long(st) || brokers_moved(st))
            e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    }
    rd_kafka_queue_destroy(q);
    if (e) {
        /* Harmless for correctness: the messages come again and change nothing. */
        cm_log_warn(MOD, "offset commit failed", "err=%s", rd_kafka_err2name(e));
        return CM_EBACKEND;
    }
    return 0;
}

/* Lag after a batch: for each partition in it, high watermark - (last offset + 1). */
static void update_lag(st_settle_t *st)
{
    int64_t lag = 0;
    for (size_t i = 0; i < st->nbatch; i++) {
        rd_kafka_message_t *m = st->batch[i].m;
        bool last_of_partition = true;
        for (size_t j = i + 1; j < st->nbatch && last_of_partition; j++)
            if (st->batch[j].m->partition == m->partition && st->batch[j].m->rkt == m->rkt)
                last_of_partition = false;
        if (!last_of_partition)
            continue;
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(st->consumer, rd_kafka_topic_name(m->rkt), m->partition,
                                           &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi > m->offset + 1)
            lag += hi - (m->offset + 1);
    }
    atomic_store_explicit(&st->stats.lag, lag, memory_order_relaxed);
}

static void record_batch_latency(st_settle_t *st, uint64_t us)
{
    static const uint64_t bounds_ms[ST_BATCH_NBOUNDS] = ST_BATCH_BOUNDS_MS;
    unsigned b = 0;
    while (b < ST_BATCH_NBOUNDS && us > bounds_ms[b] * 1000)
        b++;
    atomic_fetch_add_explicit(&st->stats.batch_lat[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->stats.batch_lat_sum_us, us, memory_order_relaxed);
}

static void count_outcomes(st_settle_t *st)
{
    for (size_t i = 0; i < st->nbatch; i++) {
        st_msg_t *bm = &st->batch[i];
        if (!bm->valid)
            continue;
        _Atomic uint64_t *c = !bm->outcome.changed               ? &st->stats.duplicates
                              : bm->outcome.status == OQ_STATUS_SETTLED ? &st->stats.settled
                              : bm->outcome.status == OQ_STATUS_FAILED  ? &st->stats.failed
                                                                 : &st->stats.cancelled;
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    }
}

/* One batch through the stepped core (st_loop.h): the I/O of each action here,
 * the order of the actions there. write_batch and publish_outcomes retry inside
 * and fail only when the batch is to be given up (a stop, the brokers moved). */
static void process_batch(st_settle_t *st)
{
    uint64_t t0 = cm_mono_us();
    for (size_t i = 0; i < st->nbatch; i++)
        batch_parse(st, &st->batch[i]);
    st_batch_step_t b;
    st_batch_act_t act = st_batch_begin(&b);
    for (;;) {
        int rc;
        switch (act) {
        case ST_BATCH_WRITE:
            rc = write_batch(st);
            if (rc == 0)
                count_outcomes(st);
            act = st_batch_step(&b, rc, rc != 0);
            break;
        case ST_BATCH_PUBLISH:
            rc = publish_outcomes(st);
            act = st_batch_step(&b, rc, rc != 0);
            break;
        case ST_BATCH_COMMIT:
            rc = commit_offsets(st);
            if (rc == 0)
                atomic_store_explicit(&st->stats.last_commit_ms, cm_wall_ms(),
                                      memory_order_relaxed);
            act = st_batch_step(&b, rc, false);
            break;
        case ST_BATCH_GIVE_UP:
            return;
        case ST_BATCH_DONE:
            record_batch_latency(st, cm_mono_us() - t0);
            update_lag(st);
            atomic_fetch_add_explicit(&st->stats.messages, st->nbatch, memory_order_relaxed);
            atomic_fetch_add_explicit(&st->stats.batches, 1, memory_order_relaxed);
            return;
        }
    }
}

/*
 * While the brokers are reported down, asks them for metadata at most once a
 * second (200 ms at most): librdkafka reports "all brokers down" but never
 * "back up", and a worker with nothing to read would otherwise stay unready
 * after the brokers return.
 */
#define PROBE_EVERY_MS 1000
#define PROBE_TIMEOUT_MS 200
static void probe_brokers(st_settle_t *st)
{
    if (!atomic_load(&st->brokers_down) || !st->consumer)
        return;
    uint64_t now = cm_mono_ms();
    if (now < st->next_probe_ms)
        return;
    st->next_probe_ms = now + PROBE_EVERY_MS;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(st->consumer, 0, NULL, &md, PROBE_TIMEOUT_MS) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        brokers_seen(st, true);
        cm_log_info(MOD, "kafka brokers reachable again", "brokers=%d", md->broker_cnt);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
}

int st_settle_run(st_settle_t *st)
{
    uint32_t max = (uint32_t)st->max_batch;
    /* A batch closes when full (max) or wait_ms after its first message: under
     * a backlog batches are full and the wait never runs; at a steady rate below
     * the worker's capacity the wait bounds what an order adds to its latency. */
    uint32_t wait_ms = st->opts.batch_wait_ms ? st->opts.batch_wait_ms : ST_DEFAULT_BATCH_WAIT_MS;
    while (!atomic_load(&st->stop)) {
        if (!st->consumer || brokers_moved(st)) {
            char err[512];
            if (st->consumer)
                cm_log_warn(MOD, "brokers moved, reconnecting", "file=%s", st->brokers_file);
            clients_destroy(st, false);
            int r = clients_create(st, err, sizeof(err));
            if (r == CM_ENOTFOUND) { /* the broker is not up yet */
                clients_destroy(st, false);
                sleep_ms(500);
                continue;
            }
            if (r != 0) {
                char val[2 * sizeof(err) + 3];
                cm_log_error(MOD, "kafka clients", "err=%s", st_log_value(val, sizeof(val), err));
                clients_destroy(st, false);
                return CM_EBACKEND;
            }
        }
        uint64_t deadline = 0;
        while (st->nbatch < max && !atomic_load(&st->stop)) {
            uint64_t now = cm_mono_ms();
            if (st->nbatch > 0 && now >= deadline)
                break;
            int timeout = st->nbatch > 0 ? (int)(deadline - now) : 100;
            if (st->policy.rate_milli) {
                cm_rate_result_t res;
                cm_bucket_take(&st->bucket, &st->policy, cm_mono_ns(), 1, &res);
                if (!res.allowed) {
                    uint64_t ms = res.retry_after_ns / 1000000 + 1;
                    if (ms > (uint64_t)timeout)
                        ms = (uint64_t)timeout;
                    sleep_ms(ms);
                    continue;
                }
            }
            rd_kafka_message_t *m = rd_kafka_consumer_poll(st->consumer, timeout);
            if (!m || m->err) {
                if (st->policy.rate_milli)
                    cm_bucket_refund(&st->bucket, &st->policy, 1);
                if (m) {
                    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                        cm_log_warn(MOD, "consume", "err=%s", rd_kafka_err2name(m->err));
                    rd_kafka_message_destroy(m);
                }
                if (st->nbatch == 0 && brokers_moved(st))
                    break;
                probe_brokers(st);
                continue;
            }
            if (atomic_load(&st->brokers_down))
                brokers_seen(st, true);
            batch_push(st, m);
            if (st->nbatch == 1)
                deadline = now + wait_ms;
        }
        tell_draining(st); /* before the last batch is written: that is the drain */
        if (st->nbatch > 0) {
            process_batch(st);
            batch_release(st);
        }
    }
    tell_draining(st);
    return 0;
}

/*---- Lifecycle ----*/

int st_settle_new(st_settle_t **out, const st_settle_opts_t *opts, char *err, size_t errlen)
{
    *out = NULL;
    if (!opts->brokers || !*opts->brokers) {
        snprintf(err, errlen, "no kafka brokers given");
        return CM_EINVAL;
    }
    st_settle_t *st = cm_xcalloc(1, sizeof(*st));
    st->opts = *opts;
    st->max_batch = opts->batch ? opts->batch : 500;
    st->stop_grace_ms = opts->stop_grace_ms == ST_STOP_GRACE_NONE ? 0
                        : opts->stop_grace_ms                     ? opts->stop_grace_ms
                                                                  : ST_DEFAULT_STOP_GRACE_MS;
    snprintf(st->topic, sizeof(st->topic), "%s", opts->topic ? opts->topic : ST_DEFAULT_TOPIC);
    snprintf(st->outcomes_topic, sizeof(st->outcomes_topic), "%s",
             opts->outcomes_topic ? opts->outcomes_topic : ST_DEFAULT_OUTCOMES_TOPIC);
    snprintf(st->group, sizeof(st->group), "%s", opts->group ? opts->group : ST_DEFAULT_GROUP);
    const char *dd = opts->data_dir && *opts->data_dir ? opts->data_dir : "data";
    if (strcmp(opts->brokers, "embedded") == 0)
        snprintf(st->brokers_file, sizeof(st->brokers_file), "%s/kafka.bootstrap", dd);
    else if (opts->brokers[0] == '@')
        snprintf(st->brokers_file, sizeof(st->brokers_file), "%s", opts->brokers + 1);
    else
        snprintf(st->brokers, sizeof(st->brokers), "%s", opts->brokers);
    if (opts->max_rate_milli) {
        st->policy.rate_milli = opts->max_rate_milli;
        /* A tenth of a second's worth: smooth, but whole batches at high rates. */
        uint64_t burst = opts->max_rate_milli / 10000;
        st->policy.burst = burst < 1 ? 1 : burst > CM_RATE_BURST_MAX ? CM_RATE_BURST_MAX : burst;
    }
    st_sink_opts_t so = {.sql = opts->sql};
    int ret = st_sink_open(&st->sink, opts->db, dd, &so, err, errlen);
    if (ret == 0) {
        atomic_store_explicit(&st->stats.sink_up, 1, memory_order_relaxed);
        ret = clients_create(st, err, errlen);
        if (ret == CM_ENOTFOUND) {
            /* Started before the broker (embedded: before the gateway): run() waits. */
            cm_log_warn(MOD, "waiting for the brokers file", "file=%s", st->brokers_file);
            clients_destroy(st, false);
            ret = 0;
        }
    }
    if (ret != 0) {
        st_settle_free(st);
        return ret;
    }
    *out = st;
    return 0;
}

void st_settle_stop(st_settle_t *st)
{
    atomic_store(&st->stop, true);
}

const st_settle_stats_t *st_settle_stats(const st_settle_t *st)
{
    return &st->stats;
}

void st_settle_free(st_settle_t *st)
{
    if (!st)
        return;
    batch_release(st);
    clients_destroy(st, true);
    st_sink_close(st->sink);
    free(st->batch);
    free(st->msg_orders);
    free(st->msg_outs);
    st_batch_writer_free(&st->writer);
    free(st);
}
