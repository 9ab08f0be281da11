/*
 * The relay: spool -> Kafka (idempotent producer) and Kafka -> gateway
 * callbacks. See oq_relay.h for the contract.
 *
 * Threads. "oq-relay" owns the producer and the tracking window: it waits in
 * poll(2) on a non-blocking pipe that three things write to: oq_relay_notify
 * (after spool appends), librdkafka (rd_kafka_queue_io_event_enable on the
 * producer's main queue, so a delivery report wakes it at once) and the
 * consumer thread (an outcome may make records releasable). Without a wake-up
 * it re-scans the spool every idle_poll_ms (default 5 ms), which bounds the
 * relay delay of an append nobody notified; an empty scan costs a few
 * microseconds (measured in test_oq_relay, "idle scan"), i.e. < 0.1% of a
 * core at 200 scans/s. A releaser thread persists the release point
 * (oq_spool_release fsyncs) off the relay thread. "oq-relay-c" owns the consumer, blocks in
 * rd_kafka_consumer_poll (100 ms) and calls the gateway's callbacks.
 * Each thread's loop calls its turn (relay_turn, releaser_turn,
 * consumer_turn); a stepped relay (opts.broker) starts no thread and its
 * owner runs the turns from one thread (oq_relay_step).
 *
 * The broker is a table (oq_broker.h): kafka_ops below on librdkafka (its
 * conf, the topic layout check, the embedded mock cluster and the fatal
 * error's recreation of the producer stay here), or the owner's.
 *
 * The tracking window is a ring of the records read from the spool and not yet
 * released, in spool order, each with its state (in flight, delivered,
 * failed). Delivery reports carry the record's sequence number (msg_opaque);
 * the record is found by binary search (sequence numbers increase along the
 * ring). The release point moves over the longest done prefix only.
 *
 * Errors. A failed delivery (message.timeout.ms expired, a permanent broker
 * error) rewinds: the ring is cut at the first failed record and the spool is
 * read again from there after a one-second back-off (records delivered after
 * it are sent twice; consumers dedupe by order id). An idempotent producer's
 * fatal error (rd_kafka_fatal_error) recreates the producer and rewinds to the
 * first record not delivered.
 *
 * Release on settle (embedded broker): the consumer thread records every
 * outcome's order id in a bounded set (two generations, each up to
 * settle_cap ids; the older generation is dropped when the newer one fills)
 * with how many outcomes came for it; a delivered ORDER record is done when
 * an outcome of its id is there that no released record used (a duplicate of
 * an order has its own: settle publishes one per copy); a cancel EVENT when a
 * "cancelled" or "failed" outcome for its order is there, or 30 s after
 * delivery. A released record uses one outcome; ids with none left are
 * removed from the set, except those with a cancelled/failed outcome (see
 * settle_get). A third thread (wm_main)
 * reads the orders partitions' low watermarks; a waiting record the broker
 * dropped before settle read it is produced again (retain_check).
 */
#include "queue/oq_relay.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"
#include "common/cm_smap.h"
#include "common/cm_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TOPIC OQ_TOPIC_ORDERS
#define DEFAULT_OUTCOMES OQ_TOPIC_OUTCOMES
#define CANCEL_SETTLE_GRACE_MS 30000
#define REWIND_BACKOFF_MS 1000
#define META_PERIOD_MS 3000
/* Low watermarks of the orders topic: how often they are read, for how many partitions. */
#define WM_PERIOD_MS 1000
#define WM_MAX_PARTS 1024
/* A record that fell out of the log again after a resend waits 1, 2, 4 ... 64 s. */
#define RETAIN_RESEND_MIN_MS 1000
#define RETAIN_RESEND_MAX_SHIFT 6

enum { E_INFLIGHT = 0, E_DELIVERED = 1, E_FAILED = 2 };
enum { K_ORDER = 0, K_CANCEL = 1, K_SKIP = 2, K_RELEASE = 3 };

typedef struct entry {
    uint64_t seq;
    oq_pos_t pos, next;
    uint64_t sent_ms, delivered_ms;
    int64_t offset; /* where the broker put it (delivered), else -1 */
    int32_t partition;
    uint8_t state, kind;
    uint8_t retain_resends; /* times produced again because it fell out of the log */
    bool resend;            /* marked by retain_check for retain_cb */
    char order_id[INV_ORDER_ID_MAX + 1];
} entry_t;

/*---- Settled order ids with outcome bits (cm_smap values) ----*/

#define OUT_ANY 0x1u
#define OUT_CANCELLED 0x2u /* "cancelled" or "failed" */
/* The bits above the flags count the outcomes seen and not yet used by a
 * released record: settle publishes one for every copy of an order it reads
 * (a duplicate included), and each released copy uses one (settle_get). */
#define OUT_ONE 0x4u
#define OUT_FLAGS (OUT_ANY | OUT_CANCELLED)

/*---- The relay ----*/

struct oq_relay {
    oq_relay_opts_t o;
    char *topic, *outcomes_topic, *brokers, *properties, *client_id, *data_dir;
    bool embedded_mode, settle_mode;
    oq_embedded_t *emb;
    oq_spool_t *spool;
    /* the broker: librdkafka (kafka_ops, ctx the relay) or the owner's table (stepped) */
    const oq_broker_ops_t *bops;
    void *bctx;
    bool stepped; /* no threads: the owner runs the turns (oq_relay_step) */
    bool dropped; /* oq_relay_drop: freed as a kill -9 leaves it */
    uint32_t rewind_backoff_ms;

    int wake_rd, wake_wr;
    pthread_t thr, cthr;
    bool thr_started, cthr_started;
    atomic_bool stop;

    /* producer side: relay thread only (and close after join) */
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    atomic_bool fatal;
    oq_pos_t scan_pos;
    uint64_t next_seq;
    uint64_t scan_not_before_ms;
    bool rewind;
    char buf[OQ_ORDER_JSON_MAX];

    /* the ring; guarded by mu (the relay thread writes, stats read) */
    pthread_mutex_t mu;
    entry_t *ring;
    size_t cap, head, count;
    size_t max_inflight;

    /* settled ids: consumer thread inserts, relay thread reads/removes */
    pthread_mutex_t smu;
    cm_smap_t sets[2]; /* [0] current, [1] previous generation */
    size_t settle_cap;

    /* releaser thread: the latest point to persist and how many records it covers */
    pthread_t relthr;
    bool relthr_started;
    pthread_mutex_t rmu;
    pthread_cond_t rcond;
    oq_pos_t rel_upto;
    uint64_t rel_pending;
    bool rel_stop;

    /* consumer: consumer thread only */
    rd_kafka_t *ck;
    int known_parts[2];      /* partitions of each topic assigned */
    uint64_t next_meta_ms;   /* next metadata refresh */
    atomic_int orders_parts; /* partitions of the orders topic the consumer knows */

    /*
     * Retention (release on settle): the watermark thread reads each orders
     * partition's low watermark (log start) while records wait for their
     * outcome; the relay thread produces again the waiting records whose
     * offset fell below it (the broker dropped them before settle read them).
     */
    pthread_t wmthr;
    bool wmthr_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcond;
    atomic_int_fast64_t lowmark[WM_MAX_PARTS]; /* -1 = not known */
    atomic_uint_fast64_t wm_gen;               /* bumped when a low watermark rises */
    uint64_t wm_seen;                          /* relay thread: the last gen acted on */
    bool retain_deferred;                      /* relay thread: records left for a later check */
    uint64_t retain_next_ms; /* relay thread: earliest next check without a new gen */

    /* counters */
    atomic_uint_fast64_t produced, delivered, errors, resent, retention_resent, released_records,
        orders_seen, outcomes_seen, invalid, inflight;
    atomic_uint_fast64_t ack_buckets[OQ_ACK_NBOUNDS + 1], ack_sum_ms;
};

static void wake(oq_relay_t *r)
{
    if (r->wake_wr < 0) /* stepped: the owner runs the turns */
        return;
    char c = 1;
    ssize_t w = write(r->wake_wr, &c, 1); /* EAGAIN: a wake-up is already pending */
    (void)w;
}

/*---- settle set ----*/

static void settle_add(oq_relay_t *r, const char *id, unsigned bits)
{
    if (!*id || strlen(id) > INV_ORDER_ID_MAX)
        return;
    pthread_mutex_lock(&r->smu);
    cm_smap_entry_t *e = cm_smap_get(&r->sets[1], id);
    if (!e) {
        if (!cm_smap_get(&r->sets[0], id) && cm_smap_len(&r->sets[0]) >= r->settle_cap) {
            /* drop the older generation */
            cm_smap_free(&r->sets[1], NULL);
            r->sets[1] = r->sets[0];
            cm_smap_init(&r->sets[0], 0);
        }
        e = cm_smap_put(&r->sets[0], id, NULL);
    }
    if (CM_PLANT(RELAY_HELD_TWICE))
        e->val.u = (e->val.u & OUT_FLAGS) | bits | OUT_ONE;
    else
        e->val.u = (e->val.u | bits) + OUT_ONE;
    pthread_mutex_unlock(&r->smu);
}

/*
 * Returns the outcome bits of id (0 = none): OUT_ANY while an outcome is left
 * that no released record used, OUT_CANCELLED once a final outcome came. With
 * remove (a record of id is released), uses one outcome and forgets the id
 * when none is left, unless a final outcome (cancelled/failed) is recorded: a
 * cancel record later in the ring (a second cancel of the order, or a cancel
 * queued behind its order) needs that bit, or it would hold the release point
 * for the 30 s grace. Such ids leave with their generation.
 *
 * Counted, not a bit: an order can be in the spool twice (a keyed retry,
 * after a restart, of an order the status table evicted while its first
 * record was unreleased: gw_buy.c spools it again). Settle writes it once
 * and publishes an outcome for each copy; when both came before the first
 * copy was released, one bit for both was forgotten with the first, and the
 * second copy waited for an outcome that had come already, holding the
 * release point until the broker's retention dropped it and retain_check
 * sent it again (test_duplicate_order_released). Outcomes left over (a
 * record settle read twice after a resend) leave with their generation; a
 * later copy of that order is then done at its delivery, which is right:
 * the order is in the database.
 */
static unsigned settle_get(oq_relay_t *r, const char *id, bool remove)
{
    unsigned bits = 0;
    pthread_mutex_lock(&r->smu);
    for (int g = 0; g < 2; g++) {
        cm_smap_entry_t *e = cm_smap_get(&r->sets[g], id);
        if (!e)
            continue;
        uint64_t v = e->val.u, left = v / OUT_ONE;
        unsigned flags = (unsigned)(v & OUT_FLAGS);
        if (left || (flags & OUT_CANCELLED))
            bits |= flags;
        else
            bits |= flags & ~OUT_ANY;
        if (!remove)
            continue;
        if (left)
            e->val.u = v - OUT_ONE;
        if (left <= 1 && !(flags & OUT_CANCELLED))
            cm_smap_del(&r->sets[g], id, NULL);
    }
    pthread_mutex_unlock(&r->smu);
    return bits;
}

/*---- the ring (relay thread; mu held for changes) ----*/

static entry_t *ring_at(oq_relay_t *r, size_t i)
{
    return &r->ring[(r->head + i) & (r->cap - 1)];
}

static entry_t *ring_push(oq_relay_t *r)
{
    if (r->count == r->cap) {
        size_t ncap = r->cap * 2;
        entry_t *n = cm_xmalloc(ncap * sizeof(*n));
        for (size_t i = 0; i < r->count; i++)
            n[i] = *ring_at(r, i);
        free(r->ring);
        r->ring = n;
        r->cap = ncap;
        r->head = 0;
    }
    entry_t *e = ring_at(r, r->count);
    r->count++;
    return e;
}

static entry_t *ring_find(oq_relay_t *r, uint64_t seq)
{
    size_t lo = 0, hi = r->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        entry_t *e = ring_at(r, mid);
        if (e->seq == seq)
            return e;
        if (e->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*---- producer ----*/

/* A delivery report (the broker table's poll, relay thread): the record's state. */
static void on_report(void *arg, const oq_broker_report_t *rep)
{
    oq_relay_t *r = arg;
    pthread_mutex_lock(&r->mu);
    entry_t *e = ring_find(r, rep->token);
    if (e && e->state == E_INFLIGHT) {
        atomic_fetch_sub_explicit(&r->inflight, 1, memory_order_relaxed);
        if (!rep->err || CM_PLANT(RELAY_DROP_ON_ERROR)) {
            e->state = E_DELIVERED;
            e->delivered_ms = cm_mono_ms();
            e->partition = rep->partition;
            e->offset = rep->offset;
            atomic_fetch_add_explicit(&r->delivered, 1, memory_order_relaxed);
            static const uint64_t bounds[OQ_ACK_NBOUNDS] = OQ_ACK_BOUNDS_MS;
            uint64_t ms = e->delivered_ms - e->sent_ms;
            unsigned b = 0;
            while (b < OQ_ACK_NBOUNDS && ms > bounds[b])
                b++;
            atomic_fetch_add_explicit(&r->ack_buckets[b], 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&r->ack_sum_ms, ms, memory_order_relaxed);
        } else {
            e->state = E_FAILED;
            r->rewind = true;
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            cm_log_warn("oq", "delivery failed, will resend", "order=%s err=\"%s\"", e->order_id,
                        rep->err);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* librdkafka's delivery report (rd_kafka_poll on the relay thread). */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    oq_broker_report_t rep = {.token = (uint64_t)(uintptr_t)m->_private,
                              .err = m->err ? rd_kafka_err2str(m->err) : NULL,
                              .partition = m->partition,
                              .offset = m->offset};
    on_report(opaque, &rep);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    oq_relay_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        cm_log_error("oq", "kafka producer fatal error, recreating", "reason=\"%s\"", why);
        atomic_store(&r->fatal, true);
        wake(r);
        return;
    }
    /* Transport errors repeat every reconnect attempt while a broker is down. */
    cm_log_debug("oq", "kafka error", "err=\"%s\" reason=\"%s\"",
                 rd_kafka_err2str((rd_kafka_resp_err_t)err), reason);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    cm_log_level_t lv = level <= 3 ? CM_LOG_WARN : level <= 6 ? CM_LOG_INFO : CM_LOG_DEBUG;
    CM_LOG(lv, "rdkafka", buf, "fac=%s", fac);
}

int oq_relay_apply_properties(void *vconf, const char *props, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = vconf;
    if (!props)
        return 0;
    const char *p = props;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[1024];
        if (len >= sizeof(line)) {
            snprintf(errbuf, errlen, "kafka.properties: line too long (%zu bytes)", len);
            return CM_EINVAL;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (eol ? 1 : 0);

        char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r')
            s++;
        char *end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(errbuf, errlen, "kafka.properties: \"%s\": expected key=value", s);
            return CM_EINVAL;
        }
        char *k = s, *v = eq + 1;
        char *kend = eq;
        while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        *kend = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        char kerr[512];
        if (rd_kafka_conf_set(conf, k, v, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka.properties: %s: %s", k, kerr);
            return CM_EINVAL;
        }
    }
    return 0;
}

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, char *errbuf, size_t errlen)
{
    char kerr[512];
    if (rd_kafka_conf_set(c, k, v, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "kafka: %s=%s: %s", k, v, kerr);
        return CM_EINVAL;
    }
    return 0;
}

static int make_producer(oq_relay_t *r, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    int rc = 0;
    /*
     * linger.ms=5: linger 0 costs ~6x the CPU per message and has a worse p99
     * (docs/design.md, "Other measured facts"). reconnect.backoff.max.ms=1000:
     * after an outage the producer is back within a second instead of
     * librdkafka's 10 s ceiling.
     * enable.idempotence, acks and linger.ms go after kafka.properties, so
     * that no line there configures them away (docs/kafka.md), as
     * flashgate-settle's producer does: a record leaves the spool on its
     * delivery report, which with acks=0 or 1 (idempotence off) does not mean
     * the cluster has it (test_acks_not_configurable_away).
     */
    if ((rc = conf_set(c, "bootstrap.servers", r->brokers, errbuf, errlen)) ||
        (rc = conf_set(c, "client.id", r->client_id, errbuf, errlen)) ||
        (rc = conf_set(c, "reconnect.backoff.max.ms", "1000", errbuf, errlen)) ||
        (rc = oq_relay_apply_properties(c, r->properties, errbuf, errlen)) ||
        (rc = conf_set(c, "enable.idempotence", "true", errbuf, errlen)) ||
        (rc = conf_set(c, "acks", "all", errbuf, errlen)) ||
        (rc = conf_set(c, "linger.ms", "5", errbuf, errlen))) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_opaque(c, r);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_conf_set_error_cb(c, error_cb);
    rd_kafka_conf_set_log_cb(c, log_cb);
    char kerr[512];
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, kerr, sizeof(kerr));
    if (!r->rk) {
        snprintf(errbuf, errlen, "kafka producer: %s", kerr);
        rd_kafka_conf_destroy(c);
        return CM_EBACKEND;
    }
    r->mainq = rd_kafka_queue_get_main(r->rk);
    rd_kafka_queue_io_event_enable(r->mainq, r->wake_wr, "1", 1);
    return 0;
}

static void destroy_producer(oq_relay_t *r)
{
    if (r->mainq) {
        rd_kafka_queue_io_event_enable(r->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(r->mainq);
        r->mainq = NULL;
    }
    if (r->rk) {
        rd_kafka_destroy(r->rk);
        r->rk = NULL;
    }
}

/* Cuts the ring at index i: those records will be read from the spool again. */
static void ring_truncate(oq_relay_t *r, size_t i)
{
    if (i >= r->count)
        return;
    r->scan_pos = ring_at(r, i)->pos;
    uint64_t dropped = 0, dropped_inflight = 0;
    for (size_t j = i; j < r->count; j++) {
        dropped++;
        if (ring_at(r, j)->state == E_INFLIGHT)
            dropped_inflight++;
    }
    r->count = i;
    atomic_fetch_sub_explicit(&r->inflight, dropped_inflight, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->resent, dropped, memory_order_relaxed);
}

/* Reads the spool event; fills kind/order id; returns the message key (order id) in key. */
static void parse_event(const char *ev, size_t len, entry_t *e, char *key, size_t keylen)
{
    oq_order_t c;
    if (oq_order_decode(ev, len, &c, NULL, 0) != 0) {
        e->kind = K_SKIP; /* unreadable: nothing to relay */
    } else if (c.type == OQ_MSG_CANCEL) {
        e->kind = K_CANCEL;
        snprintf(e->order_id, sizeof(e->order_id), "%s", c.order_id);
        snprintf(key, keylen, "%s", c.order_id); /* its order's partition: after the order */
    } else if (c.type == OQ_MSG_RELEASE) {
        /* the gateway's own record of units to give back: not relayed, but
         * kept in the spool until the gateway says the release is done */
        e->kind = K_RELEASE;
        snprintf(e->order_id, sizeof(e->order_id), "%s", c.order_id);
    } else {
        e->kind = K_SKIP; /* not ours to relay */
    }
}

/*
 * What record rec is (e->kind, e->order_id) and the message to produce for it:
 * key (the order id) and *val / *vlen (NULL for a kind that is not relayed).
 * An order is encoded into r->buf.
 */
static void rec_message(oq_relay_t *r, const oq_rec_t *rec, entry_t *e, char *key, size_t keylen,
                        const char **pval, size_t *pvlen)
{
    const char *val = NULL;
    size_t vlen = 0;
    key[0] = '\0';
    if (rec->type == OQ_REC_ORDER && rec->order) {
        int n = oq_order_encode(rec->order, r->buf, sizeof(r->buf));
        if (n < 0) {
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            e->kind = K_SKIP;
        } else {
            e->kind = K_ORDER;
            val = r->buf;
            vlen = (size_t)n;
            /*
             * Key = order id: the orders of one sale (a flash sale is one hot
             * sale) spread over every partition, so settle workers in one
             * consumer group share them; an order and its cancel (same key)
             * stay in one partition, in order. (Key = sale id put a whole sale
             * on one partition: one settle worker, whatever the group size.)
             */
            snprintf(key, keylen, "%s", rec->order->order_id);
            snprintf(e->order_id, sizeof(e->order_id), "%s", rec->order->order_id);
        }
    } else if (rec->type == OQ_REC_EVENT && rec->event) {
        parse_event(rec->event, rec->event_len, e, key, keylen);
        val = rec->event;
        vlen = rec->event_len;
    } else {
        e->kind = K_SKIP;
    }
    *pval = val;
    *pvlen = vlen;
}

/* The broker table's produce for librdkafka (oq_broker.h). */
static int kafka_produce(void *ctx, const char *key, const void *val, size_t vlen, uint64_t token,
                         const char **why)
{
    oq_relay_t *r = ctx;
    rd_kafka_resp_err_t err =
        rd_kafka_producev(r->rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE((void *)val, vlen),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE((void *)(uintptr_t)token), RD_KAFKA_V_END);
    if (!err)
        return 0;
    *why = rd_kafka_err2str(err);
    return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? CM_EBUSY : CM_EBACKEND;
}

/* The broker table's poll for librdkafka: delivery reports reach on_report through dr_cb. */
static void kafka_poll(void *ctx, int timeout_ms, oq_broker_report_fn fn, void *arg)
{
    (void)fn;
    (void)arg;
    oq_relay_t *r = ctx;
    rd_kafka_poll(r->rk, timeout_ms);
}

/* One message to the broker; 0, CM_EBUSY (queue full) or another error with *why. */
static int produce_msg(oq_relay_t *r, const char *key, const char *val, size_t vlen, uint64_t seq,
                       const char **why)
{
    return r->bops->produce(r->bctx, key, val, vlen, seq, why);
}

static int scan_cb(const oq_rec_t *rec, void *ctx)
{
    oq_relay_t *r = ctx;
    if (r->count >= r->max_inflight || atomic_load_explicit(&r->stop, memory_order_relaxed))
        return 1;
    entry_t e = {.seq = r->next_seq, .pos = rec->pos, .next = rec->next, .offset = -1};
    char key[INV_SALE_ID_MAX + 1];
    const char *val;
    size_t vlen;
    rec_message(r, rec, &e, key, sizeof(key), &val, &vlen);

    uint64_t now = cm_mono_ms();
    if (e.kind == K_SKIP || e.kind == K_RELEASE) {
        e.state = E_DELIVERED;
        e.delivered_ms = now;
    } else {
        const char *why = "";
        int err = produce_msg(r, key, val, vlen, e.seq, &why);
        if (err == CM_EBUSY)
            return 1; /* retried at the next wake-up */
        if (err) {
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            cm_log_warn("oq", "produce failed, will retry", "err=\"%s\"", why);
            r->scan_not_before_ms = now + r->rewind_backoff_ms;
            return 1;
        }
        e.state = E_INFLIGHT;
        e.sent_ms = now;
        atomic_fetch_add_explicit(&r->inflight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->produced, 1, memory_order_relaxed);
    }
    pthread_mutex_lock(&r->mu);
    *ring_push(r) = e;
    r->scan_pos = rec->next; /* under mu: oq_relay_stats reads it */
    pthread_mutex_unlock(&r->mu);
    r->next_seq++;
    return 0;
}

static bool entry_done(oq_relay_t *r, const entry_t *e, uint64_t now)
{
    if (e->state != E_DELIVERED)
        return false;
    if (e->kind == K_RELEASE)
        return !r->o.release_pending || !r->o.release_pending(e->order_id, r->o.cb_ud);
    if (!r->settle_mode || e->kind == K_SKIP)
        return true;
    unsigned bits = settle_get(r, e->order_id, false);
    if (e->kind == K_ORDER)
        return bits & OUT_ANY;
    if (bits & OUT_CANCELLED)
        return true;
    if (now - e->delivered_ms >= CANCEL_SETTLE_GRACE_MS) {
        cm_log_warn("oq", "cancel released without a cancelled outcome", "order=%s",
                    e->order_id);
        return true;
    }
    return false;
}

/* Persists a release point (two fsyncs in the spool): on the releaser thread only. */
static int do_release(oq_relay_t *r, oq_pos_t upto)
{
    return r->o.release_deletes ? oq_spool_release(r->spool, upto)
                                : oq_spool_release_keep(r->spool, upto);
}

/*
 * The releaser thread. oq_spool_release persists the release point with two
 * fsyncs (~30 ms on this machine's disk); done on the relay thread it held up
 * delivery reports and produce() for that long (append -> released went from
 * ~6 ms to ~40 ms). A stale release point only means more records resent
 * after a crash, so the relay hands the latest point over and goes on.
 */
/*
 * One turn of the releaser: persists the point handed over, if any. rmu is
 * held on entry and on return (dropped around the fsyncs). Returns 0 (done,
 * or nothing pending) or the spool's error; the records then stay pending
 * and the next point covers them.
 */
static int releaser_turn(oq_relay_t *r)
{
    if (!r->rel_pending)
        return 0;
    oq_pos_t upto = r->rel_upto;
    uint64_t n = r->rel_pending;
    r->rel_pending = 0;
    pthread_mutex_unlock(&r->rmu);
    int rc = do_release(r, upto);
    pthread_mutex_lock(&r->rmu);
    if (rc == 0) {
        atomic_fetch_add_explicit(&r->released_records, n, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
    cm_log_error("oq", "spool release failed", "err=%s", cm_errname(rc));
    r->rel_pending += n; /* the next point covers these records too */
    if (oq_pos_cmp(upto, r->rel_upto) > 0)
        r->rel_upto = upto;
    return rc;
}

static void *releaser_main(void *arg)
{
    oq_relay_t *r = arg;
    pthread_mutex_lock(&r->rmu);
    for (;;) {
        while (!r->rel_pending && !r->rel_stop)
            pthread_cond_wait(&r->rcond, &r->rmu);
        if (!r->rel_pending)
            break; /* stopping and nothing left */
        if (releaser_turn(r) == 0)
            continue;
        if (r->rel_stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&r->rcond, &r->rmu, &ts);
    }
    pthread_mutex_unlock(&r->rmu);
    return NULL;
}

static void release_prefix(oq_relay_t *r)
{
    uint64_t now = cm_mono_ms();
    oq_pos_t upto = {0, 0};
    uint64_t n = 0;
    pthread_mutex_lock(&r->mu);
    while (r->count > 0) {
        entry_t *e = ring_at(r, 0);
        if (!entry_done(r, e, now))
            break;
        if (r->settle_mode && e->kind != K_SKIP && e->kind != K_RELEASE)
            settle_get(r, e->order_id, true);
        upto = e->next;
        r->head = (r->head + 1) & (r->cap - 1);
        r->count--;
        n++;
    }
    pthread_mutex_unlock(&r->mu);
    if (!n)
        return;
    pthread_mutex_lock(&r->rmu);
    r->rel_upto = upto;
    r->rel_pending += n;
    pthread_cond_signal(&r->rcond);
    pthread_mutex_unlock(&r->rmu);
}

/* A fatal producer error or a failed delivery: rewinds. False when the
 * producer is gone (stopping while it could not be recreated). */
static bool handle_errors(oq_relay_t *r)
{
    if (atomic_exchange(&r->fatal, false)) {
        char eb[512];
        /* Purge and drop the old producer; everything not delivered is resent. */
        rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(r->rk, 0);
        destroy_producer(r);
        pthread_mutex_lock(&r->mu);
        size_t i = 0;
        while (i < r->count && ring_at(r, i)->state == E_DELIVERED)
            i++;
        ring_truncate(r, i);
        r->rewind = false;
        pthread_mutex_unlock(&r->mu);
        while (make_producer(r, eb, sizeof(eb)) != 0) {
            cm_log_error("oq", "cannot recreate kafka producer", "reason=\"%s\"", eb);
            if (atomic_load(&r->stop))
                return false;
            usleep(1000 * 1000);
        }
        r->scan_not_before_ms = cm_mono_ms() + r->rewind_backoff_ms;
    }
    pthread_mutex_lock(&r->mu);
    if (r->rewind) {
        r->rewind = false;
        size_t i = 0;
        while (i < r->count && ring_at(r, i)->state != E_FAILED)
            i++;
        ring_truncate(r, i);
        r->scan_not_before_ms = cm_mono_ms() + r->rewind_backoff_ms;
    }
    pthread_mutex_unlock(&r->mu);
    return true;
}

/*
 * A real cluster (not the embedded broker): says once, at start, what in the
 * orders topic's layout puts accepted orders or settlement throughput at risk
 * (docs/kafka.md): fewer than 3 replicas (one broker lost loses acknowledged
 * orders, whatever acks=all says), an in-sync replica set smaller than the
 * replicas, one partition (settle workers cannot share it). Warnings only: the
 * spool keeps every order either way. Bounded by 3 s; relay thread.
 */
static void check_topic_layout(oq_relay_t *r)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(r->rk, r->topic, NULL);
    rd_kafka_resp_err_t err = t ? rd_kafka_metadata(r->rk, 0, t, &md, 3000)
                                : RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (err || !md || md->topic_cnt != 1 || md->topics[0].err) {
        cm_log_warn("relay", "cannot check the orders topic's layout", "topic=%s err=\"%s\"",
                    r->topic,
                    rd_kafka_err2str(err ? err : md && md->topic_cnt ? md->topics[0].err
                                                                     : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    } else {
        const rd_kafka_metadata_topic_t *mt = &md->topics[0];
        int min_replicas = 1 << 30, min_isr = 1 << 30;
        for (int i = 0; i < mt->partition_cnt; i++) {
            if (mt->partitions[i].replica_cnt < min_replicas)
                min_replicas = mt->partitions[i].replica_cnt;
            if (mt->partitions[i].isr_cnt < min_isr)
                min_isr = mt->partitions[i].isr_cnt;
        }
        if (mt->partition_cnt < 1)
            min_replicas = min_isr = 0;
        cm_log_info("relay", "orders topic layout", "topic=%s partitions=%d replicas=%d isr=%d",
                    r->topic, mt->partition_cnt, min_replicas, min_isr);
        if (min_replicas < 3)
            cm_log_warn("relay",
                        "orders topic has fewer than 3 replicas: losing a broker can lose "
                        "acknowledged orders (docs/kafka.md)",
                        "topic=%s replicas=%d", r->topic, min_replicas);
        if (min_isr < min_replicas)
            cm_log_warn("relay", "orders topic has partitions with replicas out of sync",
                        "topic=%s replicas=%d isr=%d", r->topic, min_replicas, min_isr);
        if (mt->partition_cnt < 2)
            cm_log_warn("relay",
                        "orders topic has one partition: only one settle worker can consume it",
                        "topic=%s partitions=%d", r->topic, mt->partition_cnt);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    if (t)
        rd_kafka_topic_destroy(t);
}

void oq_kafka_learn_topic(void *rk, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    if (!t)
        return;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 0, t, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR && md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
}

/*---- retention: records the broker dropped before settle read them ----*/

typedef struct retain_ctx {
    oq_relay_t *r;
    size_t i, last; /* ring cursor and the last marked index */
    uint64_t now, sent;
} retain_ctx_t;

/* oq_spool_scan callback: produces again the marked ring entries, in spool order. */
static int retain_cb(const oq_rec_t *rec, void *ctx)
{
    retain_ctx_t *c = ctx;
    oq_relay_t *r = c->r;
    while (c->i <= c->last && oq_pos_cmp(ring_at(r, c->i)->pos, rec->pos) < 0)
        c->i++;
    if (c->i > c->last)
        return 1;
    entry_t *e = ring_at(r, c->i);
    if (oq_pos_cmp(e->pos, rec->pos) != 0 || !e->resend)
        return 0;
    entry_t cur = {.offset = -1};
    char key[INV_SALE_ID_MAX + 1];
    const char *val;
    size_t vlen;
    rec_message(r, rec, &cur, key, sizeof(key), &val, &vlen);
    if (!val || cur.kind != e->kind || strcmp(cur.order_id, e->order_id) != 0) {
        e->resend = false; /* not the record it was read as: leave it alone */
        return 0;
    }
    const char *why = "";
    int err = produce_msg(r, key, val, vlen, e->seq, &why);
    if (err) {
        /* queue full or a produce error: the next check finds it again */
        if (err != CM_EBUSY) {
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            cm_log_warn("oq", "produce failed, will retry", "err=\"%s\"", why);
        }
        return 1;
    }
    /* on_report (this thread) finds it by its sequence number and records its new offset */
    pthread_mutex_lock(&r->mu);
    e->resend = false;
    e->state = E_INFLIGHT;
    e->sent_ms = c->now;
    e->offset = -1;
    if (e->retain_resends < UINT8_MAX)
        e->retain_resends++;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add_explicit(&r->inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->produced, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->retention_resent, 1, memory_order_relaxed);
    c->sent++;
    return 0;
}

/*
 * Release on settle: a record delivered but still waiting for its outcome
 * whose offset is below its partition's low watermark is gone from the broker
 * (the embedded broker's 5 MiB a partition, a real cluster's retention.ms or
 * retention.bytes) before settle read it. Nothing else would ever send it
 * again: it would wait unsettled in the spool, holding the release point,
 * until a restart. Produce it again (settle dedupes by order id). Relay
 * thread, when the watermark thread saw a low watermark rise, or
 * WM_PERIOD_MS after a check that left records for later: one pass over the
 * ring and one spool read from the first record to produce to the last.
 * A record that falls out again (settle still stopped, the log still full)
 * waits 1, 2, 4 ... 64 s after its last delivery, so a long stop does not
 * keep the whole ring going round the broker.
 */
static void retain_check(oq_relay_t *r)
{
    uint64_t gen = atomic_load(&r->wm_gen), now = cm_mono_ms();
    if (gen == r->wm_seen && !(r->retain_deferred && now >= r->retain_next_ms))
        return;
    r->wm_seen = gen;
    r->retain_deferred = false;
    r->retain_next_ms = now + WM_PERIOD_MS;
    size_t first = SIZE_MAX, last = 0, n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->count; i++) {
        entry_t *e = ring_at(r, i);
        e->resend = false;
        if (e->state != E_DELIVERED || (e->kind != K_ORDER && e->kind != K_CANCEL) ||
            e->offset < 0 || e->partition < 0 || e->partition >= WM_MAX_PARTS ||
            e->offset >= atomic_load_explicit(&r->lowmark[e->partition], memory_order_relaxed))
            continue;
        unsigned bits = settle_get(r, e->order_id, false);
        if (e->kind == K_ORDER ? (bits & OUT_ANY) : (bits & OUT_CANCELLED))
            continue; /* settle read it in time */
        unsigned shift = e->retain_resends < RETAIN_RESEND_MAX_SHIFT ? e->retain_resends
                                                                     : RETAIN_RESEND_MAX_SHIFT;
        if (now - e->delivered_ms < ((uint64_t)RETAIN_RESEND_MIN_MS << shift)) {
            r->retain_deferred = true;
            continue;
        }
        e->resend = true;
        if (first == SIZE_MAX)
            first = i;
        last = i;
        n++;
    }
    oq_pos_t from = n ? ring_at(r, first)->pos : (oq_pos_t){0, 0};
    pthread_mutex_unlock(&r->mu);
    if (!n)
        return;
    /* The ring does not change meanwhile: only this thread pushes, releases and
     * runs on_report (the broker table's poll). */
    retain_ctx_t c = {.r = r, .i = first, .last = last, .now = now};
    long rc = oq_spool_scan(r->spool, from, retain_cb, &c);
    if (rc < 0) {
        atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
        cm_log_error("oq", "spool scan failed", "err=%s", cm_errname((int)rc));
    }
    if (c.sent < n)
        r->retain_deferred = true;
    cm_log_warn("oq",
                "the broker dropped orders before settle read them; producing them again "
                "(settle behind the broker's retention)",
                "records=%" PRIu64 " of=%zu", c.sent, n);
}

/*
 * The watermark thread: while records are unreleased, reads the low watermark
 * (ListOffsets, earliest) of every partition of the orders topic every
 * WM_PERIOD_MS, on the consumer's handle (thread-safe), and wakes the relay
 * when one rose. Its own thread: on a real cluster a query is a round trip per
 * partition, which neither the relay (produce, delivery reports) nor the
 * consumer (outcomes) should wait for.
 */
static void *wm_main(void *arg)
{
    oq_relay_t *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->wmu);
        if (!atomic_load(&r->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)(WM_PERIOD_MS % 1000) * 1000000L;
            ts.tv_sec += WM_PERIOD_MS / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&r->wcond, &r->wmu, &ts);
        }
        pthread_mutex_unlock(&r->wmu);
        if (atomic_load(&r->stop))
            break;
        pthread_mutex_lock(&r->mu);
        bool waiting = r->count > 0;
        pthread_mutex_unlock(&r->mu);
        if (!waiting)
            continue;
        int parts = atomic_load(&r->orders_parts);
        if (parts > WM_MAX_PARTS)
            parts = WM_MAX_PARTS;
        bool rose = false;
        for (int p = 0; p < parts && !atomic_load(&r->stop); p++) {
            int64_t lo = -1, hi = -1;
            rd_kafka_resp_err_t err =
                rd_kafka_query_watermark_offsets(r->ck, r->topic, p, &lo, &hi, 1000);
            if (err) {
                cm_log_debug("oq", "low watermark query failed", "partition=%d err=\"%s\"", p,
                             rd_kafka_err2str(err));
                continue;
            }
            if (lo > atomic_load(&r->lowmark[p])) {
                atomic_store(&r->lowmark[p], lo);
                rose = true;
            }
        }
        if (rose) {
            atomic_fetch_add(&r->wm_gen, 1);
            wake(r);
        }
    }
    return NULL;
}

/*
 * One turn of the relay thread: delivery reports, errors (rewind), the spool
 * read on from scan_pos and produced, the done prefix handed to the
 * releaser, the retention check. False when the producer is gone.
 */
static bool relay_turn(oq_relay_t *r)
{
    r->bops->poll(r->bctx, 0, on_report, r); /* delivery reports -> on_report */
    if (!handle_errors(r))
        return false;
    if (cm_mono_ms() >= r->scan_not_before_ms && r->count < r->max_inflight) {
        long n = oq_spool_scan(r->spool, r->scan_pos, scan_cb, r);
        if (n < 0) {
            atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
            cm_log_error("oq", "spool scan failed", "err=%s", cm_errname((int)n));
            r->scan_not_before_ms = cm_mono_ms() + r->rewind_backoff_ms;
        }
    }
    release_prefix(r);
    if (r->settle_mode)
        retain_check(r);
    return true;
}

static void *relay_main(void *arg)
{
    oq_relay_t *r = arg;
    int idle = (int)r->o.idle_poll_ms;
    if (!r->embedded_mode && r->rk)
        check_topic_layout(r);
    else if (r->rk) /* the embedded broker: a real cluster's is learnt just above */
        oq_kafka_learn_topic(r->rk, r->topic, 1000);
    while (!atomic_load(&r->stop)) {
        struct pollfd pfd = {.fd = r->wake_rd, .events = POLLIN};
        poll(&pfd, 1, idle);
        char drain[256];
        while (read(r->wake_rd, drain, sizeof(drain)) > 0) {
        }
        if (!relay_turn(r))
            break;
    }
    return NULL;
}

/*---- consumer ----*/

static void handle_outcome(oq_relay_t *r, const oq_broker_msg_t *m)
{
    oq_order_t oc;
    char why[160];
    int rc = oq_order_decode(m->payload, m->len, &oc, why, sizeof(why));
    if (rc == 0 && oc.type != OQ_MSG_OUTCOME) {
        rc = CM_EINVAL;
        snprintf(why, sizeof(why), "type: not an outcome");
    }
    if (rc != 0) {
        atomic_fetch_add_explicit(&r->invalid, 1, memory_order_relaxed);
        cm_log_debug("oq", "bad outcome message", "err=\"%s\"", why);
        return;
    }
    atomic_fetch_add_explicit(&r->outcomes_seen, 1, memory_order_relaxed);
    /* The gateway first: a failed order's compensation appends its release event
     * to the spool, and only then may the order's record be released (else a
     * crash in between would replay the order as held, with the outcome gone). */
    if (r->o.on_outcome)
        r->o.on_outcome(&oc, r->o.cb_ud);
    if (r->settle_mode) {
        unsigned bits = OUT_ANY;
        if (oq_status_releases(oc.status))
            bits |= OUT_CANCELLED;
        settle_add(r, oc.order_id, bits);
        wake(r);
    }
}

static void handle_order(oq_relay_t *r, const oq_broker_msg_t *m)
{
    /* Cancel commands share the topic: only order records are orders. */
    oq_order_t o;
    if (oq_order_decode(m->payload, m->len, &o, NULL, 0) != 0) {
        atomic_fetch_add_explicit(&r->invalid, 1, memory_order_relaxed);
        return;
    }
    if (o.type != OQ_MSG_ORDER)
        return;
    atomic_fetch_add_explicit(&r->orders_seen, 1, memory_order_relaxed);
    if (r->o.on_order)
        r->o.on_order(&o, r->o.cb_ud);
}

/* (Re)assigns every partition of both topics; keeps positions of known ones. */
static void refresh_assignment(oq_relay_t *r, int *known_parts)
{
    const char *topics[2] = {r->topic, r->outcomes_topic};
    int cnt[2] = {0, 0};
    for (int t = 0; t < 2; t++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(r->ck, topics[t], NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(r->ck, 0, rkt, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
                cnt[t] = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        rd_kafka_topic_destroy(rkt);
    }
    if ((cnt[0] <= known_parts[0] && cnt[1] <= known_parts[1]) || (cnt[0] == 0 && cnt[1] == 0))
        return;
    rd_kafka_topic_partition_list_t *cur = NULL;
    if (rd_kafka_assignment(r->ck, &cur) == RD_KAFKA_RESP_ERR_NO_ERROR && cur)
        rd_kafka_position(r->ck, cur);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(cnt[0] + cnt[1]);
    for (int t = 0; t < 2; t++) {
        int n = cnt[t] > known_parts[t] ? cnt[t] : known_parts[t];
        for (int p = 0; p < n; p++) {
            rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(l, topics[t], p);
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_topic_partition_t *c =
                cur ? rd_kafka_topic_partition_list_find(cur, topics[t], p) : NULL;
            if (c && c->offset >= 0)
                tp->offset = c->offset;
        }
        if (cnt[t] > known_parts[t])
            known_parts[t] = cnt[t];
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(r->ck, l);
    if (err)
        cm_log_warn("oq", "consumer assign failed", "err=\"%s\"", rd_kafka_err2str(err));
    else
        cm_log_info("oq", "consumer assigned", "orders_partitions=%d outcomes_partitions=%d",
                    known_parts[0], known_parts[1]);
    rd_kafka_topic_partition_list_destroy(l);
    if (cur)
        rd_kafka_topic_partition_list_destroy(cur);
}

/*
 * The broker table's consume for librdkafka: the assignment refreshed when
 * due (new partitions), then one message of either topic.
 */
static int kafka_consume(void *ctx, int timeout_ms, oq_broker_msg_fn fn, void *arg)
{
    oq_relay_t *r = ctx;
    uint64_t now = cm_mono_ms();
    if (now >= r->next_meta_ms) {
        refresh_assignment(r, r->known_parts);
        atomic_store(&r->orders_parts, r->known_parts[0]);
        r->next_meta_ms =
            now + (r->known_parts[0] && r->known_parts[1] ? META_PERIOD_MS : 500);
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->ck, timeout_ms);
    if (!m)
        return 0;
    if (!m->err && m->rkt) {
        const char *tn = rd_kafka_topic_name(m->rkt);
        oq_broker_msg_t bm = {.payload = m->payload, .len = m->len};
        if (strcmp(tn, r->outcomes_topic) == 0) {
            bm.topic = OQ_BROKER_OUTCOMES;
            fn(arg, &bm);
        } else if (strcmp(tn, r->topic) == 0) {
            bm.topic = OQ_BROKER_ORDERS;
            fn(arg, &bm);
        }
    }
    rd_kafka_message_destroy(m);
    return 1;
}

static void consumer_msg(void *arg, const oq_broker_msg_t *m)
{
    oq_relay_t *r = arg;
    if (m->topic == OQ_BROKER_OUTCOMES)
        handle_outcome(r, m);
    else
        handle_order(r, m);
}

/* One turn of the consumer thread: at most one message to the callbacks. 1 if one was read. */
static int consumer_turn(oq_relay_t *r, int timeout_ms)
{
    return r->bops->consume(r->bctx, timeout_ms, consumer_msg, r);
}

static void *consumer_main(void *arg)
{
    oq_relay_t *r = arg;
    while (!atomic_load(&r->stop))
        consumer_turn(r, 100);
    return NULL;
}

static int make_consumer(oq_relay_t *r, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char cid[256], gid[256];
    snprintf(cid, sizeof(cid), "%s-c", r->client_id);
    /* A group id is needed for rd_kafka_consumer_poll; nothing is committed or joined. */
    snprintf(gid, sizeof(gid), "flashgate-relay-%" PRIu32 "-%ld", r->o.node_id, (long)getpid());
    int rc;
    if ((rc = conf_set(c, "bootstrap.servers", r->brokers, errbuf, errlen)) ||
        (rc = conf_set(c, "client.id", cid, errbuf, errlen)) ||
        (rc = conf_set(c, "group.id", gid, errbuf, errlen)) ||
        (rc = conf_set(c, "enable.auto.commit", "false", errbuf, errlen)) ||
        (rc = conf_set(c, "enable.auto.offset.store", "false", errbuf, errlen)) ||
        (rc = conf_set(c, "auto.offset.reset", "earliest", errbuf, errlen)) ||
        (rc = conf_set(c, "fetch.wait.max.ms", "100", errbuf, errlen)) ||
        (rc = conf_set(c, "reconnect.backoff.max.ms", "1000", errbuf, errlen)) ||
        (rc = conf_set(c, "topic.metadata.refresh.interval.ms", "3000", errbuf, errlen)) ||
        (rc = oq_relay_apply_properties(c, r->properties, errbuf, errlen))) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_log_cb(c, log_cb);
    char kerr[512];
    r->ck = rd_kafka_new(RD_KAFKA_CONSUMER, c, kerr, sizeof(kerr));
    if (!r->ck) {
        snprintf(errbuf, errlen, "kafka consumer: %s", kerr);
        rd_kafka_conf_destroy(c);
        return CM_EBACKEND;
    }
    rd_kafka_poll_set_consumer(r->ck);
    return 0;
}

/*---- public ----*/

static char *dup_or(const char *s, const char *def)
{
    return cm_xstrdup(s && *s ? s : def);
}

/* librdkafka, the table every product binary uses (ctx: the relay). */
static const oq_broker_ops_t kafka_ops = {
    .produce = kafka_produce,
    .poll = kafka_poll,
    .consume = kafka_consume,
};

int oq_relay_open(oq_relay_t **out, const oq_relay_opts_t *opts, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->spool) {
        snprintf(errbuf, errlen, "relay: no spool");
        return CM_EINVAL;
    }
    oq_relay_t *r = cm_xcalloc(1, sizeof(*r));
    r->o = *opts;
    r->spool = opts->spool;
    r->topic = dup_or(opts->topic, DEFAULT_TOPIC);
    r->outcomes_topic = dup_or(opts->outcomes_topic, DEFAULT_OUTCOMES);
    r->properties = opts->properties ? cm_xstrdup(opts->properties) : NULL;
    r->data_dir = dup_or(opts->data_dir, "");
    char cid[64];
    snprintf(cid, sizeof(cid), "flashgate-%" PRIu32, opts->node_id);
    r->client_id = dup_or(opts->client_id, cid);
    if (!r->o.idle_poll_ms)
        r->o.idle_poll_ms = 5;
    r->rewind_backoff_ms = opts->rewind_backoff_ms ? opts->rewind_backoff_ms : REWIND_BACKOFF_MS;
    r->bops = &kafka_ops;
    r->bctx = r;
    r->max_inflight = opts->max_inflight ? opts->max_inflight : 100000;
    r->settle_cap = r->max_inflight * 2 > 200000 ? r->max_inflight * 2 : 200000;
    r->cap = 1024; /* grows (ring_push); a small max_inflight starts small (the simulator's 64) */
    while (r->cap > 16 && r->cap / 2 >= r->max_inflight)
        r->cap /= 2;
    r->ring = cm_xmalloc(r->cap * sizeof(*r->ring));
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->smu, NULL);
    pthread_mutex_init(&r->rmu, NULL);
    pthread_cond_init(&r->rcond, NULL);
    pthread_mutex_init(&r->wmu, NULL);
    pthread_cond_init(&r->wcond, NULL);
    for (int p = 0; p < WM_MAX_PARTS; p++)
        atomic_init(&r->lowmark[p], -1);
    cm_smap_init(&r->sets[0], 0); /* grows with the settled ids actually seen */
    cm_smap_init(&r->sets[1], 0);
    r->wake_rd = r->wake_wr = -1;
    int rc;

    if (opts->broker) { /* stepped, on the owner's broker: no thread, no client of its own */
        if (opts->embedded_release_on_settle && !opts->consume) {
            snprintf(errbuf, errlen, "relay: release on settle needs the consumer (consume=true)");
            rc = CM_EINVAL;
            goto fail;
        }
        r->bops = opts->broker;
        r->bctx = opts->broker_ctx;
        r->stepped = true;
        r->settle_mode = opts->embedded_release_on_settle;
        r->brokers = cm_xstrdup("stepped");
        r->scan_pos = oq_spool_released(r->spool);
        r->next_seq = 1;
        *out = r;
        return 0;
    }

    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errbuf, errlen, "relay: pipe: %s", strerror(errno));
        rc = CM_EIO;
        goto fail;
    }
    r->wake_rd = fds[0];
    r->wake_wr = fds[1];

    r->embedded_mode = !opts->brokers || !*opts->brokers || strcmp(opts->brokers, "embedded") == 0;
    if (r->embedded_mode) {
        const char *topics[] = {r->topic, r->outcomes_topic, NULL};
        oq_embedded_opts_t eo = {.data_dir = *r->data_dir ? r->data_dir : NULL,
                                 .topics = topics,
                                 .partitions = opts->embedded_partitions};
        if ((rc = oq_embedded_start(&r->emb, &eo, errbuf, errlen)) != 0)
            goto fail;
        r->brokers = cm_xstrdup(oq_embedded_bootstrap(r->emb));
        r->settle_mode = opts->embedded_release_on_settle;
    } else {
        r->brokers = cm_xstrdup(opts->brokers);
    }
    if (r->settle_mode && !opts->consume) {
        snprintf(errbuf, errlen, "relay: release on settle needs the consumer (consume=true)");
        rc = CM_EINVAL;
        goto fail;
    }
    if ((rc = make_producer(r, errbuf, errlen)) != 0)
        goto fail;
    if (opts->consume && (rc = make_consumer(r, errbuf, errlen)) != 0)
        goto fail;

    r->scan_pos = oq_spool_released(r->spool);
    r->next_seq = 1;
    if (pthread_create(&r->relthr, NULL, releaser_main, r) != 0) {
        snprintf(errbuf, errlen, "relay: pthread_create failed");
        rc = CM_EIO;
        goto fail;
    }
    r->relthr_started = true;
    if (pthread_create(&r->thr, NULL, relay_main, r) != 0) {
        snprintf(errbuf, errlen, "relay: pthread_create failed");
        rc = CM_EIO;
        goto fail;
    }
    r->thr_started = true;
    if (r->ck) {
        if (pthread_create(&r->cthr, NULL, consumer_main, r) != 0) {
            snprintf(errbuf, errlen, "relay: pthread_create failed");
            rc = CM_EIO;
            goto fail;
        }
        r->cthr_started = true;
    }
    if (r->settle_mode) {
        if (pthread_create(&r->wmthr, NULL, wm_main, r) != 0) {
            snprintf(errbuf, errlen, "relay: pthread_create failed");
            rc = CM_EIO;
            goto fail;
        }
        r->wmthr_started = true;
    }
    cm_log_info("oq", "relay started", "brokers=%s topic=%s outcomes=%s release=%s",
                r->brokers, r->topic, r->outcomes_topic,
                r->settle_mode ? "on_settle" : "on_delivery");
    *out = r;
    return 0;
fail:
    oq_relay_close(r, 0);
    return rc;
}

/*
 * rd_kafka_flush for a stepped relay: polls the owner's broker table until
 * nothing is in flight or timeout_ms has passed. A poll that reports nothing
 * waited out the time it was given (oq_broker.h), so it ends the flush.
 */
static void flush_stepped(oq_relay_t *r, int timeout_ms)
{
    uint64_t until = cm_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        uint64_t now = cm_mono_ms(), was = atomic_load(&r->inflight);
        if (was == 0)
            return;
        r->bops->poll(r->bctx, now < until ? (int)(until - now) : 0, on_report, r);
        if (atomic_load(&r->inflight) == was || cm_mono_ms() >= until)
            return;
    }
}

void oq_relay_drop(oq_relay_t *r)
{
    if (!r)
        return;
    r->dropped = true;
    oq_relay_close(r, 0);
}

void oq_relay_close(oq_relay_t *r, int timeout_ms)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    if (r->wake_wr >= 0)
        wake(r);
    if (r->thr_started)
        pthread_join(r->thr, NULL);
    if (r->cthr_started)
        pthread_join(r->cthr, NULL);
    if (r->wmthr_started) {
        pthread_mutex_lock(&r->wmu);
        pthread_cond_signal(&r->wcond);
        pthread_mutex_unlock(&r->wmu);
        pthread_join(r->wmthr, NULL);
    }
    /* Delivered by the deadline: handed to the releaser, which persists it
     * below. In flight past it: resent by the next start. */
    if (r->rk) {
        rd_kafka_flush(r->rk, timeout_ms); /* runs dr_cb on this thread */
        if (!CM_PLANT(RELAY_CLOSE_NO_RELEASE))
            release_prefix(r);
        destroy_producer(r);
    } else if (r->stepped && !r->dropped) {
        flush_stepped(r, timeout_ms);
        if (!CM_PLANT(RELAY_CLOSE_NO_RELEASE))
            release_prefix(r);
        pthread_mutex_lock(&r->rmu); /* the releaser thread's last turn */
        (void)releaser_turn(r);
        pthread_mutex_unlock(&r->rmu);
    }
    if (r->relthr_started) { /* persists what is pending, then exits */
        pthread_mutex_lock(&r->rmu);
        r->rel_stop = true;
        pthread_cond_signal(&r->rcond);
        pthread_mutex_unlock(&r->rmu);
        pthread_join(r->relthr, NULL);
    }
    if (r->ck) {
        rd_kafka_consumer_close(r->ck);
        rd_kafka_destroy(r->ck);
    }
    oq_embedded_stop(r->emb);
    if (r->wake_rd >= 0)
        close(r->wake_rd);
    if (r->wake_wr >= 0)
        close(r->wake_wr);
    cm_smap_free(&r->sets[0], NULL);
    cm_smap_free(&r->sets[1], NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->smu);
    pthread_mutex_destroy(&r->rmu);
    pthread_cond_destroy(&r->rcond);
    pthread_mutex_destroy(&r->wmu);
    pthread_cond_destroy(&r->wcond);
    free(r->ring);
    free(r->topic);
    free(r->outcomes_topic);
    free(r->properties);
    free(r->data_dir);
    free(r->client_id);
    free(r->brokers);
    free(r);
}

void oq_relay_notify(oq_relay_t *r)
{
    wake(r);
}

int oq_relay_step(oq_relay_t *r, oq_relay_thread_t which)
{
    if (!r->stepped)
        return CM_EINVAL;
    switch (which) {
    case OQ_RELAY_PRODUCER:
        relay_turn(r);
        return 0;
    case OQ_RELAY_RELEASER: {
        pthread_mutex_lock(&r->rmu);
        int rc = releaser_turn(r);
        pthread_mutex_unlock(&r->rmu);
        return rc;
    }
    case OQ_RELAY_CONSUMER:
        return consumer_turn(r, 0);
    }
    return CM_EINVAL;
}

int oq_relay_cancel(oq_relay_t *r, const oq_order_t *o, const char *reason)
{
    oq_order_t c = *o;
    c.type = OQ_MSG_CANCEL;
    c.accepted_at_ms = 0;
    c.idem_key[0] = '\0';
    c.at_ms = 0;
    snprintf(c.reason, sizeof(c.reason), "%s", reason ? reason : "");
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(&c, buf, sizeof(buf));
    if (n < 0 || oq_order_check(&c, NULL, 0) != 0)
        return CM_EINVAL;
    oq_pos_t end;
    int rc = oq_spool_append_event_end(r->spool, buf, (size_t)n, &end);
    if (rc == 0) /* in fsync durability the relay sees it only once it is on disk */
        rc = oq_spool_commit_to(r->spool, end);
    if (rc == 0)
        wake(r);
    return rc;
}

void oq_relay_stats(oq_relay_t *r, oq_relay_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    oq_spool_stats_t ss;
    oq_spool_stats(r->spool, &ss);
    out->spool_unreleased_bytes = ss.unreleased_bytes;
    uint64_t now = cm_mono_ms();
    pthread_mutex_lock(&r->mu);
    out->spool_unreleased_records = r->count;
    out->scanned_to = r->scan_pos;
    bool oldest_found = false;
    for (size_t i = 0; i < r->count; i++) {
        entry_t *e = ring_at(r, i);
        if (e->state == E_INFLIGHT && !oldest_found) {
            out->oldest_unacked_age_ms = now - e->sent_ms;
            oldest_found = true;
        } else if (e->state == E_DELIVERED && e->kind != K_SKIP && r->settle_mode) {
            out->awaiting_outcome++;
        }
    }
    pthread_mutex_unlock(&r->mu);
#define LD(x) atomic_load_explicit(&r->x, memory_order_relaxed)
    out->inflight = LD(inflight);
    out->produced = LD(produced);
    out->delivered = LD(delivered);
    for (int i = 0; i <= OQ_ACK_NBOUNDS; i++)
        out->ack_buckets[i] = LD(ack_buckets[i]);
    out->ack_sum_ms = LD(ack_sum_ms);
    out->errors = LD(errors);
    out->resent = LD(resent);
    out->retention_resent = LD(retention_resent);
    out->released_records = LD(released_records);
    out->orders_seen = LD(orders_seen);
    out->outcomes_seen = LD(outcomes_seen);
    out->invalid = LD(invalid);
#undef LD
    out->embedded = r->embedded_mode;
}

oq_embedded_t *oq_relay_embedded(oq_relay_t *r)
{
    return r->emb;
}

const char *oq_relay_bootstrap(oq_relay_t *r)
{
    return r->brokers;
}
