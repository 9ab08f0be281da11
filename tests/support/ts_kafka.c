/*
 * Mock Kafka cluster and helpers for tests. See ts_kafka.h.
 */
#include "tests/support/ts_kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ts_kafka_start(ts_kafka_t *k, const char *const *topics, int partitions)
{
    memset(k, 0, sizeof(*k));
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "ts_kafka: %s\n", err);
        return -1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        fprintf(stderr, "ts_kafka: mock cluster failed\n");
        rd_kafka_destroy(rk);
        return -1;
    }
    for (int i = 0; topics && topics[i]; i++)
        if (rd_kafka_mock_topic_create(mc, topics[i], partitions, 1)) {
            fprintf(stderr, "ts_kafka: cannot create topic %s\n", topics[i]);
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return -1;
        }
    k->rk = rk;
    k->mc = mc;
    snprintf(k->bootstrap, sizeof(k->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    return 0;
}

void ts_kafka_stop(ts_kafka_t *k)
{
    if (k->mc)
        rd_kafka_mock_cluster_destroy(k->mc);
    if (k->rk)
        rd_kafka_destroy(k->rk);
    k->mc = k->rk = NULL;
}

static void count_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    long *failed = opaque;
    if (m->err)
        (*failed)++;
}

int ts_kafka_produce(const char *bootstrap, const char *topic, const char *const *keys,
                     const char *const *vals, size_t n)
{
    char err[256];
    long failed = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err));
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!p) {
        fprintf(stderr, "ts_kafka: %s\n", err);
        return -1;
    }
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                                      RD_KAFKA_V_KEY(keys && keys[i] ? keys[i] : NULL,
                                                     keys && keys[i] ? strlen(keys[i]) : 0),
                                      RD_KAFKA_V_VALUE((void *)vals[i], strlen(vals[i])),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        if (e) {
            fprintf(stderr, "ts_kafka: produce: %s\n", rd_kafka_err2str(e));
            ret = -1;
        }
    }
    if (rd_kafka_flush(p, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR || failed) {
        fprintf(stderr, "ts_kafka: %ld deliveries failed or timed out\n", failed);
        ret = -1;
    }
    rd_kafka_destroy(p);
    return ret;
}

long ts_kafka_read_all(const char *bootstrap, const char *topic, ts_kafka_msg_cb cb, void *arg)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "ts-kafka-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!c)
        return -1;
    long count = -1;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    if (rd_kafka_metadata(c, 0, rkt, &md, 10000) || md->topic_cnt != 1 ||
        md->topics[0].partition_cnt <= 0)
        goto out;
    int np = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(np);
    int64_t *high = calloc((size_t)np, sizeof(*high));
    int remaining = 0;
    for (int i = 0; i < np; i++) {
        int32_t part = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(c, topic, part, &lo, &hi, 10000))
            goto out2;
        high[part < np ? part : 0] = hi;
        rd_kafka_topic_partition_list_add(list, topic, part)->offset = lo;
        if (hi > lo)
            remaining++;
    }
    if (rd_kafka_assign(c, list))
        goto out2;
    count = 0;
    int idle = 0;
    while (remaining > 0 && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        if (!m->err) {
            count++;
            cb(m->key, m->key_len, m->payload, m->len, arg);
            if (m->partition < np && m->offset + 1 == high[m->partition])
                remaining--;
        }
        rd_kafka_message_destroy(m);
    }
    if (remaining > 0)
        count = -1;
out2:
    free(high);
    rd_kafka_topic_partition_list_destroy(list);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return count;
}
