/*
 * Kafka for tests: librdkafka's mock cluster in this process (real protocol on
 * 127.0.0.1, random port), plus small synchronous produce / read-everything
 * helpers that any test can point at its bootstrap address.
 */
#ifndef TS_KAFKA_H
#define TS_KAFKA_H

#include <stddef.h>

typedef struct ts_kafka {
    void *rk;            /* rd_kafka_t owning the cluster */
    void *mc;            /* rd_kafka_mock_cluster_t */
    char bootstrap[256]; /* "127.0.0.1:PORT" */
} ts_kafka_t;

/*
 * Starts a one-broker mock cluster and creates each NULL-terminated topic with
 * `partitions` partitions. Returns 0 or -1 (message on stderr).
 */
int ts_kafka_start(ts_kafka_t *k, const char *const *topics, int partitions);
void ts_kafka_stop(ts_kafka_t *k);

/*
 * Produces n messages (keys[i] may be NULL) with an idempotent producer and
 * waits for every delivery (at most 30 s). Returns 0 or -1.
 */
int ts_kafka_produce(const char *bootstrap, const char *topic, const char *const *keys,
                     const char *const *vals, size_t n);

typedef void (*ts_kafka_msg_cb)(const char *key, size_t klen, const char *val, size_t vlen,
                                void *arg);

/*
 * Reads every message the topic holds now (all partitions, from the start up
 * to the high watermark), calling cb for each. Returns the count or -1.
 */
long ts_kafka_read_all(const char *bootstrap, const char *topic, ts_kafka_msg_cb cb, void *arg);

#endif
