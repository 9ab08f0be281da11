/*
 * flashgate-settle's consumer loop, as a library so that tests can drive it.
 *
 * One consumer-group member reads the orders topic (enable.auto.commit=false,
 * isolation.level=read_committed) and, batch by batch:
 *   1. takes one token per order from a token bucket (--max-rate: the peak
 *      shaving; the database sees at most that many orders per second);
 *   2. writes the batch in one database transaction through an st_sink
 *      (idempotent by order id);
 *   3. publishes one outcome per message to the outcomes topic (idempotent
 *      producer, acks=all) and waits for every delivery;
 *   4. only then commits the batch's offsets, synchronously.
 * A crash anywhere loses nothing (offsets trail the database) and duplicates
 * nothing in the database (the order id is its primary key); outcomes are at
 * least once, and the gateways ignore repeats.
 *
 * Brokers "@FILE" (or "embedded", meaning @<data-dir>/kafka.bootstrap) are
 * read from the file, and the file is read again when every broker is down:
 * the embedded broker listens on a new port at each start. A missing or empty
 * file is waited for (the worker may start before the gateway).
 */
#ifndef ST_SETTLE_H
#define ST_SETTLE_H

#include "settle/st_sink.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_DEFAULT_TOPIC OQ_TOPIC_ORDERS
#define ST_DEFAULT_OUTCOMES_TOPIC OQ_TOPIC_OUTCOMES
#define ST_DEFAULT_GROUP "flashgate-settle"
/*
 * 20 ms (was 100): at the bench's 8-12k orders/s a batch still holds 150-250
 * orders (one transaction, one offset commit for all of them), while an order
 * waits at most 20 ms for its batch to close instead of up to 100 (bench:
 * accept-to-settled p50 92 -> 41 ms after fetch.wait.max.ms:
 * BENCH_ONLY=settle-e2e sh bench/bench.sh).
 * A backlog fills batches to --batch at once, so throughput does not change.
 */
#define ST_DEFAULT_BATCH_WAIT_MS 20

/*
 * How long a stop waits for the batch in progress to deliver its outcomes and
 * commit its offsets (settle.stop_grace; the two waits share the one
 * deadline, counted from the first of them to see the stop). Past it the batch
 * is given up, its offsets uncommitted: read again at the next start, it finds
 * its rows and changes nothing, and its outcomes are published then. A batch
 * whose database write is failing is given up at the stop whatever the grace
 * (it retries with backoff; the retry after the restart is the same).
 * A supervisor's stop timeout (systemd TimeoutStopSec, Kubernetes
 * terminationGracePeriodSeconds) must exceed it plus the exit's own waits:
 * the outcomes producer's last flush (2 s) and leaving the group.
 */
#define ST_DEFAULT_STOP_GRACE_MS 5000
#define ST_STOP_GRACE_MAX_MS 600000 /* 10 min: beyond, a supervisor's timeout is the bound */
/* st_settle_opts_t.stop_grace_ms for no grace (0 there means the default). */
#define ST_STOP_GRACE_NONE UINT32_MAX

/* A batch failing for this long, whatever the error (a statement timeout at
 * every try), counts as stalled (stats.stalled) and is logged as an error
 * once; it is retried, never failed (docs/settlement.md, "Poison orders"). */
#define ST_STALL_AFTER_MS 30000

typedef struct st_settle_opts {
    const char *brokers;        /* "host:port,...", "@FILE" or "embedded" */
    const char *topic;          /* NULL = ST_DEFAULT_TOPIC */
    const char *outcomes_topic; /* NULL = ST_DEFAULT_OUTCOMES_TOPIC */
    const char *group;          /* NULL = ST_DEFAULT_GROUP */
    const char *data_dir;       /* NULL = "data" */
    const char *db;             /* see st_sink_open; NULL = <data_dir>/orders.db */
    const char *sql;            /* the user's per-order statement, or NULL */
    uint64_t max_rate_milli;    /* orders/s in thousandths; 0 = no limit */
    uint32_t batch;             /* max orders per transaction; 0 = 500 */
    uint32_t batch_wait_ms;     /* max wait to fill a batch; 0 = ST_DEFAULT_BATCH_WAIT_MS */
    /* librdkafka properties "key=value" for both clients, or "consumer.key=value" /
       "producer.key=value" for one of them. */
    const char *const *kafka_props;
    size_t n_kafka_props;
    /* Called once, on the loop's thread, when the loop first sees a stop and
       starts draining (the batch in progress, the offsets, leaving the group):
       where flashgate-settle tells systemd STOPPING=1, which a signal handler
       cannot do safely. NULL = nothing. */
    void (*on_draining)(void *arg);
    void *on_draining_arg;
    /* A batch failing for longer than this (transient errors too: a database
       that times out at every try) sets stats.stalled; 0 = ST_STALL_AFTER_MS. */
    uint32_t stall_after_ms;
    /* How long a stop waits for the batch in progress (ST_DEFAULT_STOP_GRACE_MS
       above); 0 = ST_DEFAULT_STOP_GRACE_MS, ST_STOP_GRACE_NONE = not at all. */
    uint32_t stop_grace_ms;
} st_settle_opts_t;

#define ST_BATCH_BOUNDS_MS {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}
#define ST_BATCH_NBOUNDS 13

typedef struct st_settle_stats {
    _Atomic uint64_t messages;   /* messages processed (committed batches) */
    _Atomic uint64_t settled;    /* orders newly settled */
    _Atomic uint64_t failed;     /* orders newly failed */
    _Atomic uint64_t cancelled;  /* orders newly cancelled */
    _Atomic uint64_t duplicates; /* copies that changed nothing */
    _Atomic uint64_t invalid;    /* unparseable messages, skipped */
    _Atomic uint64_t batches;    /* committed batches */
    _Atomic uint64_t db_errors;  /* batches rolled back and retried */
    _Atomic uint64_t outcomes;   /* outcomes delivered */
    _Atomic uint64_t poisoned;   /* messages failed alone by poison isolation (st_sink.h) */
    _Atomic uint64_t stalled;    /* 1 while the batch in progress is stalled (no order to blame,
                                    or failing for stall_after_ms), else 0 */
    /* Batch latency (database write + outcomes + offset commit), a histogram
     * over ST_BATCH_BOUNDS_MS (last bucket: above), and its sum in microseconds. */
    _Atomic uint64_t batch_lat[ST_BATCH_NBOUNDS + 1];
    _Atomic uint64_t batch_lat_sum_us;
    /* Consumer lag after the last batch: high watermark minus the next offset,
     * summed over the partitions of that batch (librdkafka's cached watermarks). */
    _Atomic int64_t lag;
    /* Readiness (flashgate-settle's GET /readyz, settle/st_http.h): 1 while the
     * Kafka clients are up and the brokers were last seen reachable (0 from an
     * all-brokers-down report until a message, a metadata answer or new clients
     * show them back); 1 unless the last database write of a batch failed. */
    _Atomic uint64_t broker_up;
    _Atomic uint64_t sink_up;
    /* Wall-clock time of the last committed batch, ms since the epoch; 0 = none yet. */
    _Atomic int64_t last_commit_ms;
} st_settle_stats_t;

typedef struct st_settle st_settle_t;

/*
 * Opens the database and the Kafka clients and subscribes. Returns 0 and *out,
 * or a negative cm_err_t with a reason in err. Single-threaded init.
 */
int st_settle_new(st_settle_t **out, const st_settle_opts_t *opts, char *err, size_t errlen);

/*
 * Runs the loop until st_settle_stop(). The batch in progress is finished
 * (or abandoned, uncommitted, if it cannot finish within opts.stop_grace_ms).
 * Returns 0, or a negative cm_err_t on a fatal error. Blocks; one thread.
 */
int st_settle_run(st_settle_t *st);

/* Asks the loop to stop. Thread-safe and async-signal-safe. */
void st_settle_stop(st_settle_t *st);

/*
 * `s` as one logfmt value in buf (cm_log_quote: bare, or quoted with '"', '\\'
 * and newlines escaped and control bytes replaced), NUL-terminated; returns
 * buf. For untrusted text in log fields (the database's error messages, Kafka's
 * reasons): embedded raw in "%s" they could close the quote and forge fields
 * or, with a newline, whole lines. cap >= 2 * strlen(s) + 3 never cuts.
 */
const char *st_log_value(char *buf, size_t cap, const char *s);

/* Counters, readable at any time from any thread. */
const st_settle_stats_t *st_settle_stats(const st_settle_t *st);

/* Closes the consumer (leaving the group) and the database. */
void st_settle_free(st_settle_t *st);

/*
 * Decodes one orders-topic message value into `o` with the order codec
 * (queue/oq_order.h): an order or a cancel command; any other record type is
 * rejected. Returns 0 or CM_EINVAL with the problem in err. Thread-safe.
 */
int st_order_parse(const char *json, size_t len, oq_order_t *o, char *err, size_t errlen);

/*
 * Encodes the outcome record (type outcome, oq_order.h) of order `o` into a
 * malloc'd string (caller frees). Thread-safe.
 */
char *st_outcome_format(const oq_order_t *o, const st_outcome_t *oc, int64_t at_ms);

#endif
