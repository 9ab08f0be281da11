/*
 * The relay's broker, as a table: the seam through which the simulator
 * (sim/) runs the real relay (oq_relay.c) against a simulated broker that
 * delays, fails, duplicates and reorders deliveries within Kafka's rules
 * (one partition's messages in order), goes down and comes back. Every
 * product binary uses librdkafka (oq_relay_opts_t.broker NULL): the relay's
 * own table, whose conf, topic layout check, embedded mock cluster and
 * fatal-error recovery stay in oq_relay.c.
 *
 * The relay calls produce and poll from its relay thread and consume from
 * its consumer thread; a table opened stepped (oq_relay_opts_t.broker) has
 * them called from the one thread that calls oq_relay_step. The relay
 * commits no offsets (it reads every partition from the beginning).
 */
#ifndef OQ_BROKER_H
#define OQ_BROKER_H

#include <stddef.h>
#include <stdint.h>

/* Which topic a consumed message came from. */
typedef enum { OQ_BROKER_ORDERS = 0, OQ_BROKER_OUTCOMES = 1 } oq_broker_topic_t;

/* A delivery report of one produced message. */
typedef struct oq_broker_report {
    uint64_t token;    /* the token produce was given */
    const char *err;   /* NULL: written; else why not (for the log; static storage) */
    int32_t partition; /* where it was written, else -1 */
    int64_t offset;    /* where it was written, else -1 */
} oq_broker_report_t;

/* A consumed message; payload valid during the call it is passed to. */
typedef struct oq_broker_msg {
    oq_broker_topic_t topic;
    const void *payload;
    size_t len;
} oq_broker_msg_t;

typedef void (*oq_broker_report_fn)(void *arg, const oq_broker_report_t *rep);
typedef void (*oq_broker_msg_fn)(void *arg, const oq_broker_msg_t *m);

typedef struct oq_broker_ops {
    /*
     * Queues val for the orders topic with key (an order id: one key, one
     * partition, in order). Copies key and val. token comes back in the
     * message's delivery report, exactly once for an accepted message (a
     * retry inside the producer may write it twice, one report). Returns 0,
     * CM_EBUSY (the local queue is full: try again later) or another
     * negative CM_E* with *why set (static storage).
     */
    int (*produce)(void *ctx, const char *key, const void *val, size_t vlen, uint64_t token,
                   const char **why);
    /* Calls fn(arg, report) for each delivery report ready, waiting at most
     * timeout_ms for the first (0: none). */
    void (*poll)(void *ctx, int timeout_ms, oq_broker_report_fn fn, void *arg);
    /* Calls fn(arg, message) for at most one message of the orders or the
     * outcomes topic, waiting at most timeout_ms. Returns 1 (one read, maybe
     * of neither topic or an error, then fn not called) or 0 (none). */
    int (*consume)(void *ctx, int timeout_ms, oq_broker_msg_fn fn, void *arg);
} oq_broker_ops_t;

#endif
