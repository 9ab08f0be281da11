/*
 * The audit after a rehearsal, against the real systems: the admin API's
 * stock figures, the Kafka topic read from the beginning to its end offsets,
 * and the settlement database. Each check ends PASS, FAIL or SKIP (no source
 * configured); any FAIL makes flashgate-load exit non-zero.
 */
#ifndef LT_AUDIT_H
#define LT_AUDIT_H

#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* WARN: a check that is reported but not enforced by this scenario found what
 * it looks for (fairness without a fair window): printed, never fails the audit. */
typedef enum {
    LT_CHECK_SKIP = -1,
    LT_CHECK_FAIL = 0,
    LT_CHECK_PASS = 1,
    LT_CHECK_WARN = 2
} lt_check_result_t;

/* "PASS", "FAIL", "WARN" or "SKIP": the word the text, JSON and HTML reports print. */
const char *lt_check_result_name(lt_check_result_t r);

typedef struct lt_check {
    const char *name; /* static: "stock", "no_oversell", "kafka", "db", "per_user_limit" */
    lt_check_result_t result;
    char detail[1024];
} lt_check_t;

#define LT_AUDIT_MAX_CHECKS 8

typedef struct lt_audit {
    lt_check_t checks[LT_AUDIT_MAX_CHECKS];
    size_t n_checks;
    bool failed;
    /* figures */
    uint64_t accepted_orders, accepted_units; /* from our 202 answers */
    int64_t stock_total, stock_left, admin_accepted_units, admin_accepted_orders;
    uint64_t topic_messages, topic_orders, topic_duplicates, topic_cancels, topic_missing,
        topic_extra, topic_invalid; /* invalid: records the order codec rejects */
    int64_t db_rows, db_missing, db_extra, db_duplicates;
    uint64_t users_over_limit;
    const char *limit_source; /* "db", "kafka" or "client" */
} lt_audit_t;

/*
 * Runs every check whose source is configured in sc (admin_url,
 * kafka_brokers, db_url). Waits up to sc->settle_wait_s for the database to
 * hold all accepted orders. Blocking; single-threaded.
 */
void lt_audit_run(const lt_scenario_t *sc, const lt_results_t *res, lt_audit_t *out);
/* Prints "PASS stock: ..." lines to f. */
void lt_audit_print(const lt_audit_t *a, void *file);

/*
 * The fairness line's tolerance: the smallest x with P(X > x) < tail for X ~
 * Hypergeometric(N population, n successes, min(K, N) draws), summed exactly
 * from the probability mass. The audit uses tail = LT_FAIR_TAIL. Pure.
 */
#define LT_FAIR_TAIL 2.87e-7 /* P(Z > 5) for a standard normal: one-sided 5 sigma */
double lt_audit_hyper_limit(double N, double n, double K, double tail);

/*
 * Kafka bootstrap list from a flag value: a file holding it (as
 * <data-dir>/kafka.bootstrap does) or the list itself. Returns a new string.
 */
char *lt_audit_brokers(const char *value);

#endif
