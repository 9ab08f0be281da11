/*
 * The embedded Kafka broker: librdkafka's mock cluster running inside the
 * process (kafka.brokers = "embedded", the default), so that one machine needs
 * no setup. It speaks the real Kafka protocol on 127.0.0.1; flashgate-settle,
 * kcat or any Kafka client can use it through the address written to
 * <data-dir>/kafka.bootstrap.
 *
 * Honest limits (measured, docs/design.md): the mock keeps messages in memory only,
 * drops the oldest once a partition holds ~5 MiB or 100,000 message sets,
 * ignores acks and dedupes retried batches only for transactional producers.
 * It is never the only copy of an accepted order: the spool keeps each one
 * until it is settled (see oq_relay.h).
 *
 * librdkafka 2.0.2 has no way to choose the mock's port (rd_kafka_mock_cluster_new
 * binds 127.0.0.1:0), so the address changes with every start; kafka.bootstrap
 * is rewritten atomically each time, and clients (flashgate-settle) re-read it
 * when they cannot connect.
 */
#ifndef OQ_EMBEDDED_H
#define OQ_EMBEDDED_H

#include <stdbool.h>
#include <stddef.h>

typedef struct oq_embedded oq_embedded_t;

typedef struct oq_embedded_opts {
    const char *data_dir;       /* kafka.bootstrap goes here; NULL = not written */
    const char *const *topics;  /* NULL-terminated topic names to create */
    int partitions;             /* per topic; 0 = 4 */
} oq_embedded_opts_t;

/*
 * Starts the mock cluster (1 broker) on its own rd_kafka_t, creates the
 * topics, writes <data_dir>/kafka.bootstrap (temp file + rename) and logs the
 * address with the in-memory warning. Returns 0, or CM_EBACKEND / CM_EIO with
 * a reason in errbuf. Single-threaded init; the caller owns *out and frees it
 * with oq_embedded_stop.
 */
int oq_embedded_start(oq_embedded_t **out, const oq_embedded_opts_t *opts, char *errbuf,
                      size_t errlen);

/* "127.0.0.1:PORT"; valid until oq_embedded_stop. Thread-safe. */
const char *oq_embedded_bootstrap(const oq_embedded_t *e);

/*
 * Fault injection for tests and the admin fault API: down = true disconnects
 * the broker and refuses new connections (rd_kafka_mock_broker_set_down), false
 * lets clients back in. Returns 0 or CM_EBACKEND. Thread-safe.
 */
int oq_embedded_set_down(oq_embedded_t *e, bool down);
/* Fault injection: the broker answers every request rtt_ms late (0 = normal);
 * rd_kafka_mock_broker_set_rtt. Returns 0 or CM_EBACKEND. Thread-safe. */
int oq_embedded_set_rtt(oq_embedded_t *e, int rtt_ms);

/* Destroys the cluster (all its messages are lost). NULL is fine. */
void oq_embedded_stop(oq_embedded_t *e);

#endif
