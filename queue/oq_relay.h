/*
 * The relay: durable spool -> Kafka, and Kafka -> the gateway's view of orders.
 *
 * One relay per process, with one thread of its own. It tails the spool from
 * its release point (oq_spool_scan), produces every record with librdkafka's
 * idempotent producer (enable.idempotence=true, acks=all, linger.ms=5) to
 * kafka.topic, keyed by order id, and moves the spool's release point over the
 * contiguous prefix of records that are done (deliveries complete out of
 * order across partitions). Records not released when the process stops are
 * sent again at the next start; consumers dedupe by order id.
 *
 * "Done" depends on the broker:
 *   - external broker (a real Kafka cluster, replicated, acks=all): a record
 *     is done when its delivery report says it was written.
 *   - embedded broker (librdkafka's mock cluster, memory only, drops the
 *     oldest data past ~5 MiB per partition, ignores acks) with
 *     embedded_release_on_settle: a record is done only when flashgate-settle
 *     has published an outcome for its order (settled, failed or cancelled)
 *     to kafka.outcomes_topic, i.e. when the order is in the database. So the
 *     spool, not the mock, is the copy that survives a crash of the gateway.
 *     A cancel EVENT is done on a "cancelled" or "failed" outcome for its
 *     order, or 30 s after its delivery if settle published none (logged).
 *     A delivered record still waiting whose offset falls below its
 *     partition's low watermark (the broker dropped it before settle read
 *     it) is produced again (docs/kafka.md; stats.retention_resent).
 *
 * It never blocks the gateway: when the broker is down or slow, records stay
 * in the spool, which refuses appends past spool.max_bytes (CM_EBUSY, the
 * gateway answers 503).
 *
 * The same thread consumes kafka.topic and kafka.outcomes_topic (all
 * partitions, from the beginning, by assignment: no group commits; metadata is
 * re-read every few seconds for new partitions) and calls the gateway's
 * callbacks, so that every gateway of a fleet knows every order and its
 * status. fetch.wait.max.ms is 100, so an outcome reaches the gateway well
 * within one second of its publication.
 */
#ifndef OQ_RELAY_H
#define OQ_RELAY_H

#include "queue/oq_broker.h"
#include "queue/oq_embedded.h"
#include "queue/oq_spool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct oq_relay oq_relay_t;

/* Called for every order record seen in kafka.topic (duplicates included). */
typedef void (*oq_relay_order_cb)(const oq_order_t *o, void *ud);
/*
 * Called for every outcome seen in kafka.outcomes_topic (type OQ_MSG_OUTCOME,
 * checked by the codec). Valid during the call.
 */
typedef void (*oq_relay_outcome_cb)(const oq_order_t *outcome, void *ud);

typedef struct oq_relay_opts {
    const char *brokers;        /* "embedded" (NULL/"" too) or "host:port,..." */
    const char *topic;          /* NULL = OQ_TOPIC_ORDERS */
    const char *outcomes_topic; /* NULL = OQ_TOPIC_OUTCOMES */
    const char *properties;     /* "k=v" lines passed to rd_kafka_conf_set, or NULL */
    const char *data_dir;       /* for kafka.bootstrap in embedded mode */
    uint32_t node_id;
    const char *client_id;      /* NULL = "flashgate-<node>" */
    oq_spool_t *spool;          /* borrowed; must outlive the relay */
    bool embedded_release_on_settle; /* embedded mode: release on outcome, not on ack */
    /*
     * true: released segments are deleted (oq_spool_release). false: only the
     * release point moves and the segments stay on disk (e.g. for the memory
     * inventory's rebuild): oq_spool_release_keep.
     */
    bool release_deletes;
    bool consume;               /* run the consumer (callbacks, release on settle) */
    oq_relay_order_cb on_order;
    oq_relay_outcome_cb on_outcome;
    /*
     * A "release" EVENT in the spool (units the gateway gives back) is not
     * relayed; the release point stays before it while this returns true for
     * its order id, so a restart replays a release that has not happened yet.
     * NULL = done at once. Called on the relay thread; must not block.
     */
    bool (*release_pending)(const char *order_id, void *ud);
    void *cb_ud;
    uint32_t idle_poll_ms;      /* spool re-scan period without a notify; 0 = 5 */
    uint32_t max_inflight;      /* tracked unreleased records; 0 = 100000 */
    int embedded_partitions;    /* 0 = 4 */
    /*
     * NULL: librdkafka on `brokers` (every product binary). Else the broker
     * table (oq_broker.h) and its ctx, and the relay is stepped: no thread,
     * no producer or consumer of its own, brokers and properties unused,
     * release on settle when embedded_release_on_settle; its owner runs
     * each thread's turns with oq_relay_step (the simulator).
     */
    const oq_broker_ops_t *broker;
    void *broker_ctx;
    uint32_t rewind_backoff_ms; /* wait after a failed delivery or produce; 0 = 1000 */
} oq_relay_opts_t;

#define OQ_ACK_BOUNDS_MS {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}
#define OQ_ACK_NBOUNDS 12

typedef struct oq_relay_stats {
    uint64_t spool_unreleased_records; /* tracked records not yet released (<= max_inflight) */
    oq_pos_t scanned_to;          /* the spool is read (produced or passed over) up to here */
    uint64_t spool_unreleased_bytes;
    uint64_t inflight;            /* produced, no delivery report yet */
    uint64_t oldest_unacked_age_ms;
    uint64_t awaiting_outcome;    /* delivered, waiting for settle (embedded mode) */
    uint64_t produced;            /* produce() calls that were accepted */
    uint64_t delivered;           /* successful delivery reports */
    uint64_t errors;              /* failed deliveries, produce errors, spool errors */
    uint64_t resent;              /* records produced again after an error */
    uint64_t retention_resent;    /* produced again: the broker dropped them (below the
                                     partition's log start) before settle read them */
    uint64_t released_records;
    uint64_t orders_seen;         /* consumer: order messages */
    uint64_t outcomes_seen;       /* consumer: outcome messages */
    uint64_t invalid;             /* consumer: messages the order codec rejected, skipped */
    bool embedded;
    /* Kafka acknowledgement latency (produce -> successful delivery report),
     * a histogram over OQ_ACK_BOUNDS_MS (last bucket: above), ms resolution. */
    uint64_t ack_buckets[OQ_ACK_NBOUNDS + 1];
    uint64_t ack_sum_ms;
} oq_relay_stats_t;

/*
 * Creates the producer (and the embedded broker when brokers is "embedded"),
 * applies `properties`, and starts the relay thread. Returns 0 or CM_EINVAL
 * (bad property: errbuf holds "kafka.properties: KEY: librdkafka's message"),
 * CM_EBACKEND or CM_EIO with a reason in errbuf. Single-threaded init.
 * With opts.broker: no producer, broker or thread; the owner runs the turns
 * (oq_relay_step).
 */
int oq_relay_open(oq_relay_t **out, const oq_relay_opts_t *opts, char *errbuf, size_t errlen);

/*
 * Stops the thread (no record is read from the spool after this), waits up
 * to timeout_ms for outstanding deliveries (rd_kafka_flush) and releases
 * what was delivered (on settle: what settle's outcomes already named),
 * persisting the point, then frees everything. Unreleased records stay in
 * the spool for the next start. NULL is fine. A stepped relay (opts.broker)
 * does the same in the caller's thread, its wait being the broker table's
 * poll. Not concurrently with any other call on r.
 */
void oq_relay_close(oq_relay_t *r, int timeout_ms);

/*
 * Frees a stepped relay as a kill -9 of its process leaves it: nothing is
 * flushed, released or persisted (the simulator's crash). NULL is fine. Not
 * concurrently with any other call on r.
 */
void oq_relay_drop(oq_relay_t *r);

/*
 * Wakes the relay after spool appends (one byte into a pipe; cheap, may be
 * batched per loop iteration). Without it, appends are found within
 * idle_poll_ms. Thread-safe, never blocks.
 */
void oq_relay_notify(oq_relay_t *r);

/*
 * Appends a cancel record of order `o` (oq_order.h, type cancel) to the
 * spool (durable first) and wakes the relay, which produces it to kafka.topic
 * with the order id as key (after its order, in the same partition). In fsync
 * durability it also waits for the fdatasync (the relay sees only synced
 * records). Returns 0, CM_EINVAL (o fails the codec's checks), CM_EBUSY (spool
 * full) or CM_EIO. May block: not on a worker loop. Thread-safe.
 */
int oq_relay_cancel(oq_relay_t *r, const oq_order_t *o, const char *reason);

/* The relay's threads, whose turns a stepped relay's owner runs. */
typedef enum {
    OQ_RELAY_PRODUCER = 0, /* delivery reports, spool scan and produce, the done prefix handed
                              to the releaser */
    OQ_RELAY_RELEASER = 1, /* persists the release point handed over (oq_spool_release*) */
    OQ_RELAY_CONSUMER = 2, /* one message of the orders or outcomes topic to the callbacks */
} oq_relay_thread_t;

/*
 * Runs one turn of thread `which`'s loop on the caller's thread, for a relay
 * opened with opts.broker (CM_EINVAL for any other). Returns 0, 1 (consumer:
 * a message was read) or the releaser's spool error (the point stays
 * pending for the next turn). The callbacks run inside it. Not thread-safe:
 * one thread runs every turn.
 */
int oq_relay_step(oq_relay_t *r, oq_relay_thread_t which);

/* Fills *out. Thread-safe (relaxed counters). */
void oq_relay_stats(oq_relay_t *r, oq_relay_stats_t *out);

/* The embedded broker, or NULL with an external one. Valid until close. */
oq_embedded_t *oq_relay_embedded(oq_relay_t *r);

/* The bootstrap servers in use. Valid until close. */
const char *oq_relay_bootstrap(oq_relay_t *r);

/*
 * Applies "k=v" lines (blank lines and lines starting with '#' skipped, spaces
 * around k and v trimmed) with rd_kafka_conf_set. conf is an rd_kafka_conf_t*.
 * Returns 0, or CM_EINVAL with "KEY: message" of the first failure in errbuf.
 */
int oq_relay_apply_properties(void *conf, const char *properties, char *errbuf, size_t errlen);

/*
 * Makes the client rk (an rd_kafka_t *) learn topic's partitions now, waiting
 * at most timeout_ms; best effort. librdkafka (2.0) asks for a topic it has not
 * seen only at its once-a-second topic scan after the first produce to it, so
 * a producer's first message after a start waited ~1 s (the relay's first
 * order: 984 ms; flashgate-settle's first batch of outcomes: ~850 ms, and the
 * batches behind it). Call it once the producer exists.
 */
void oq_kafka_learn_topic(void *rk, const char *topic, int timeout_ms);

#endif
