/* The audit against a real Kafka protocol peer (librdkafka's mock cluster, in
 * process) and a real SQLite orders table: PASS when every 202 is there once,
 * FAIL on a missing id, an id never answered 202, an empty topic, a missing
 * row, or a user over the limit. Duplicates in the topic are tolerated and counted. */
#include "loadtest/lt_audit.h"
#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define SALE "s-audit"
#define N_ORDERS 20

typedef struct fixture {
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
    char dir[64];
    char db[128];
} fixture_t;

static void produce(fixture_t *f, const char *topic, const char *key, const char *value)
{
    char eb[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", f->bootstrap, eb, sizeof(eb));
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, eb, sizeof(eb));
    assert_non_null(p);
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(p, 10000), 0);
    rd_kafka_destroy(p);
}

static void order_json(char *buf, size_t len, int i, const char *sale, const char *user)
{
    snprintf(buf, len,
             "{\"order_id\":\"O%04d\",\"sale_id\":\"%s\",\"user_id\":\"%s\",\"qty\":1,"
             "\"accepted_at\":1795341600000,\"node\":1}",
             i, sale, user);
}

static void db_exec(fixture_t *f, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("sql: %s", err);
    sqlite3_close(db);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char eb[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "2", eb, sizeof(eb));
    f->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, eb, sizeof(eb));
    f->mc = rd_kafka_mock_cluster_new(f->mock_rk, 1);
    snprintf(f->bootstrap, sizeof(f->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(f->mc));
    rd_kafka_mock_topic_create(f->mc, "flashgate.orders", 3, 1);
    rd_kafka_mock_topic_create(f->mc, "empty.topic", 2, 1);
    snprintf(f->dir, sizeof(f->dir), "/tmp/lt-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/orders.db", f->dir);

    /* the topic: our 20 orders, one duplicated (an at-least-once retry), a
     * cancel command, another sale's orders, and a stray non-JSON message */
    char v[512], user[32];
    db_exec(f, "CREATE TABLE orders(order_id TEXT PRIMARY KEY, sale_id TEXT, user_id TEXT, qty "
               "INTEGER, accepted_at TEXT, node INTEGER, status TEXT, reason TEXT, settled_at "
               "TEXT, updated_at TEXT)");
    for (int i = 1; i <= N_ORDERS; i++) {
        snprintf(user, sizeof(user), "u7-%d", i);
        order_json(v, sizeof(v), i, SALE, user);
        produce(f, "flashgate.orders", SALE, v);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO orders(order_id, sale_id, user_id, qty, status) VALUES "
                 "('O%04d', '%s', '%s', 1, 'settled')",
                 i, SALE, user);
        db_exec(f, sql);
    }
    order_json(v, sizeof(v), 5, SALE, "u7-5");
    produce(f, "flashgate.orders", SALE, v);
    produce(f, "flashgate.orders", SALE,
            "{\"type\":\"cancel\",\"order_id\":\"O0003\",\"sale_id\":\"" SALE
            "\",\"user_id\":\"u7-3\"}");
    order_json(v, sizeof(v), 900, "other-sale", "u7-900");
    produce(f, "flashgate.orders", "other-sale", v);
    produce(f, "flashgate.orders", "x", "not json");
    db_exec(f, "INSERT INTO orders(order_id, sale_id, user_id, qty) VALUES "
               "('O0900', 'other-sale', 'u7-900', 1)");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->mock_rk);
    unlink(f->db);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* A scenario pointing at the fixture and results holding 202s for ids [from, to]. */
static void make(fixture_t *f, lt_scenario_t *sc, lt_results_t *res, int from, int to)
{
    char eb[256];
    const char *j = "{\"seed\":7,\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"id\":\"" SALE
                    "\",\"create\":false},\"behaviour\":{\"settle_wait_s\":0.3},"
                    "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}";
    assert_int_equal(lt_scenario_parse(sc, j, eb, sizeof(eb)), 0);
    sc->kafka_brokers = strdup(f->bootstrap);
    sc->db_url = strdup(f->db);
    memset(res, 0, sizeof(*res));
    res->orders = calloc((size_t)(to - from + 1), sizeof(lt_order_t));
    for (int i = from; i <= to; i++) {
        lt_order_t *o = &res->orders[res->n_orders++];
        snprintf(o->id, sizeof(o->id), "O%04d", i);
        o->user = (uint64_t)i;
        o->qty = 1;
    }
}

static const lt_check_t *find(const lt_audit_t *a, const char *name)
{
    for (size_t i = 0; i < a->n_checks; i++)
        if (strcmp(a->checks[i].name, name) == 0)
            return &a->checks[i];
    fail_msg("no check %s", name);
    return NULL;
}

static void test_all_present_passes(void **state)
{
    fixture_t *f = *state;
    lt_scenario_t sc;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    make(f, &sc, res, 1, N_ORDERS);
    lt_audit_run(&sc, res, a);
    lt_audit_print(a, stdout);
    assert_false(a->failed);
    assert_int_equal(find(a, "kafka")->result, LT_CHECK_PASS);
    assert_int_equal(find(a, "db")->result, LT_CHECK_PASS);
    assert_int_equal(find(a, "per_user_limit")->result, LT_CHECK_PASS);
    assert_int_equal(find(a, "stock")->result, LT_CHECK_SKIP);
    assert_int_equal(a->topic_orders, N_ORDERS);
    assert_int_equal(a->topic_duplicates, 1);
    assert_int_equal(a->topic_cancels, 1);
    assert_int_equal(a->topic_invalid, 1); /* the stray non-JSON message */
    assert_non_null(strstr(find(a, "kafka")->detail, "duplicates tolerated: 1 (consumer dedupes)"));
    assert_int_equal(a->db_rows, N_ORDERS);
    assert_string_equal(a->limit_source, "db");
    lt_results_free(res);
    lt_scenario_free(&sc);
    free(res);
    free(a);
}

static void test_missing_202_fails(void **state)
{
    fixture_t *f = *state;
    lt_scenario_t sc;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    make(f, &sc, res, 1, N_ORDERS + 1); /* O0021 was answered 202 but never reached anything */
    lt_audit_run(&sc, res, a);
    lt_audit_print(a, stdout);
    assert_true(a->failed);
    assert_int_equal(find(a, "kafka")->result, LT_CHECK_FAIL);
    assert_int_equal(a->topic_missing, 1);
    assert_non_null(strstr(find(a, "kafka")->detail, "O0021"));
    assert_int_equal(find(a, "db")->result, LT_CHECK_FAIL);
    assert_int_equal(a->db_missing, 1);
    lt_results_free(res);
    lt_scenario_free(&sc);
    free(res);
    free(a);
}

static void test_unanswered_order_in_topic_fails(void **state)
{
    fixture_t *f = *state;
    lt_scenario_t sc;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    make(f, &sc, res, 2, N_ORDERS); /* O0001 is in the topic and the db, never answered 202 */
    lt_audit_run(&sc, res, a);
    assert_true(a->failed);
    assert_int_equal(find(a, "kafka")->result, LT_CHECK_FAIL);
    assert_int_equal(a->topic_extra, 1);
    assert_int_equal(find(a, "db")->result, LT_CHECK_FAIL);
    assert_int_equal(a->db_extra, 1);
    lt_results_free(res);
    lt_scenario_free(&sc);
    free(res);
    free(a);
}

static void test_empty_topic_and_missing_db_fail(void **state)
{
    fixture_t *f = *state;
    lt_scenario_t sc;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    make(f, &sc, res, 1, N_ORDERS);
    free(sc.topic);
    sc.topic = strdup("empty.topic");
    free(sc.db_url);
    sc.db_url = strdup("/nonexistent/orders.db");
    lt_audit_run(&sc, res, a);
    lt_audit_print(a, stdout);
    assert_true(a->failed);
    assert_int_equal(find(a, "kafka")->result, LT_CHECK_FAIL);
    assert_int_equal(a->topic_missing, N_ORDERS);
    assert_int_equal(find(a, "db")->result, LT_CHECK_FAIL);
    lt_results_free(res);
    lt_scenario_free(&sc);
    free(res);
    free(a);
}

static void test_user_over_limit_fails(void **state)
{
    fixture_t *f = *state;
    db_exec(f, "UPDATE orders SET user_id = 'u7-1' WHERE order_id = 'O0002'");
    lt_scenario_t sc;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    make(f, &sc, res, 1, N_ORDERS);
    lt_audit_run(&sc, res, a);
    assert_true(a->failed);
    assert_int_equal(find(a, "per_user_limit")->result, LT_CHECK_FAIL);
    assert_int_equal(a->users_over_limit, 1);
    assert_int_equal(find(a, "kafka")->result, LT_CHECK_PASS);
    db_exec(f, "UPDATE orders SET user_id = 'u7-2' WHERE order_id = 'O0002'");
    lt_results_free(res);
    lt_scenario_free(&sc);
    free(res);
    free(a);
}

static void test_brokers_from_file(void **state)
{
    fixture_t *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/kafka.bootstrap", f->dir);
    FILE *fp = fopen(path, "w");
    fprintf(fp, "%s\n", f->bootstrap);
    fclose(fp);
    char *b = lt_audit_brokers(path);
    assert_string_equal(b, f->bootstrap);
    free(b);
    unlink(path);
    b = lt_audit_brokers("127.0.0.1:9092");
    assert_string_equal(b, "127.0.0.1:9092");
    free(b);
}

/* Fairness: a class over its share of entrants + 5 hypergeometric sigma fails,
 * only enforced with a fair window; the base is entrants when there are any. */
static void test_fairness(void **state)
{
    (void)state;
    lt_scenario_t sc;
    memset(&sc, 0, sizeof(sc)); /* no admin, broker or database: only fairness runs */
    snprintf(sc.sale_id, sizeof(sc.sale_id), "%s", SALE);
    sc.per_user_limit = 1;
    lt_results_t *res = calloc(1, sizeof(*res));
    lt_audit_t *a = calloc(1, sizeof(*a));
    /* 6000 people, 4000 bots entered; 500 won, split as a fair draw would:
     * bots' mean 200, sigma = sqrt(500 * .4 * .6 * 9500 / 9999) = 10.7 */
    res->n_entries = 10000;
    res->class_person_entrants[LT_CLASS_PERSON] = 6000;
    res->class_person_entrants[LT_CLASS_AGGRESSIVE] = 4000;
    res->class_won_orders[LT_CLASS_PERSON] = 290;
    res->class_won_orders[LT_CLASS_AGGRESSIVE] = 210;
    sc.fair_window_ms = 2000;
    res->fair_window_ms = 2000; /* the sale as the gateway answered */
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_PASS);
    assert_false(a->failed);
    /* bots at mean + 4 sigma (a fair draw does that once in 30,000): still a pass */
    res->class_won_orders[LT_CLASS_PERSON] = 257;
    res->class_won_orders[LT_CLASS_AGGRESSIVE] = 243;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_PASS);
    assert_non_null(strstr(find(a, "fairness")->detail, "max 254"));
    /* bots at mean + 6 sigma: over */
    res->class_won_orders[LT_CLASS_PERSON] = 235;
    res->class_won_orders[LT_CLASS_AGGRESSIVE] = 265;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_FAIL);
    assert_true(a->failed);
    assert_non_null(strstr(find(a, "fairness")->detail, "OVER"));
    /* first-come without a window: reported, not enforced; base = who pressed buy */
    sc.fair_window_ms = 0;
    res->fair_window_ms = 0; /* the sale as the gateway answered */
    res->n_entries = 0;
    res->class_person_tried[LT_CLASS_PERSON] = 6000;
    res->class_person_tried[LT_CLASS_AGGRESSIVE] = 4000;
    res->class_won_orders[LT_CLASS_PERSON] = 7;
    res->class_won_orders[LT_CLASS_AGGRESSIVE] = 493;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_WARN);
    assert_false(a->failed);
    assert_non_null(strstr(find(a, "fairness")->detail, "not enforced"));
    assert_string_equal(lt_check_result_name(find(a, "fairness")->result), "WARN");
    free(res);
    free(a);
}

/*
 * The tolerance against exact values: the smallest x with P(X > x) < tail,
 * X ~ Hypergeometric(N, n, K), from Python's exact rationals:
 *   python3 -c 'from math import comb; from fractions import Fraction as F
 *   def q(N,n,K,t):
 *     c=F(0)
 *     for x in range(max(0,K-N+n),min(n,K)+1):
 *       c+=F(comb(n,x)*comb(N-n,K-x),comb(N,K))
 *       if 1-c<t: return x
 *   print(q(1100,200,300,F(287,10**9)))'
 */
static void test_hyper_limit(void **state)
{
    (void)state;
    /* by hand: 5 of 10 drawn, 5 marked: P(X = 5) = 1/252, P(X >= 4) = 26/252 */
    assert_int_equal((int)lt_audit_hyper_limit(10, 5, 5, 0.01), 4);
    assert_int_equal((int)lt_audit_hyper_limit(10, 5, 5, 0.001), 5);
    /* the audit's 5 sigma */
    assert_int_equal((int)lt_audit_hyper_limit(10000, 4000, 500, LT_FAIR_TAIL), 254);
    assert_int_equal((int)lt_audit_hyper_limit(1100, 200, 300, LT_FAIR_TAIL), 84);
    assert_int_equal((int)lt_audit_hyper_limit(3300, 600, 500, LT_FAIR_TAIL), 132);
    assert_int_equal((int)lt_audit_hyper_limit(50, 1, 10, LT_FAIR_TAIL), 1);
    assert_int_equal((int)lt_audit_hyper_limit(2000, 1000, 1000, 0.05), 518);
    /* more units than persons: a person-fair draw gives each at most one */
    assert_int_equal((int)lt_audit_hyper_limit(100, 30, 200, LT_FAIR_TAIL), 30);
}

/* Per person: scalpers with 20 accounts and 2 persons each win by account; the
 * line judges them against their share of persons and names the top operators. */
static void test_fairness_per_person(void **state)
{
    (void)state;
    lt_scenario_t sc;
    memset(&sc, 0, sizeof(sc));
    snprintf(sc.sale_id, sizeof(sc.sale_id), "%s", SALE);
    sc.per_user_limit = 1;
    sc.fair_window_ms = 1000;
    lt_results_t *res = calloc(1, sizeof(*res));
    res->fair_window_ms = 1000; /* the sale as the gateway answered */
    lt_audit_t *a = calloc(1, sizeof(*a));
    /* 900 people and 100 operators (2,000 accounts, 200 persons) entered; 300 units */
    res->n_entries = 2900;
    res->class_entrants[LT_CLASS_PERSON] = 900;
    res->class_entrants[LT_CLASS_SCALPER] = 2000;
    res->class_persons[LT_CLASS_PERSON] = res->class_person_entrants[LT_CLASS_PERSON] = 900;
    res->class_persons[LT_CLASS_SCALPER] = res->class_person_entrants[LT_CLASS_SCALPER] = 200;
    /* as a draw per account goes: scalpers win ~69% (max per person share 84) */
    res->class_won_orders[LT_CLASS_PERSON] = 93;
    res->class_won_orders[LT_CLASS_SCALPER] = 207;
    res->class_max_person_units[LT_CLASS_PERSON] = 1;
    res->n_top_operators = 2;
    res->top_operators[0] = (lt_operator_stat_t){.id = 17, .accounts = 20, .persons = 2,
                                                 .entrants = 20, .won_orders = 7, .won_units = 7};
    res->top_operators[1] = (lt_operator_stat_t){.id = 3, .accounts = 20, .persons = 2,
                                                 .entrants = 20, .won_orders = 6, .won_units = 6};
    lt_audit_run(&sc, res, a);
    const lt_check_t *f = find(a, "fairness");
    fprintf(stderr, "%s\n", f->detail);
    assert_int_equal(f->result, LT_CHECK_FAIL);
    assert_non_null(strstr(f->detail, "entrant persons (1100)"));
    assert_non_null(strstr(f->detail, "scalpers won 207 of 300 (69.0%), persons 18.2%, max 84 OVER"));
    assert_non_null(strstr(f->detail, "top operator 17 7 units / 2 persons (3.5 per person)"));
    assert_non_null(strstr(f->detail, "operator 3 6 units"));
    assert_null(strstr(f->detail, "bots won")); /* classes absent from the crowd are left out */
    /* as a draw per person goes: within the tolerance */
    res->class_won_orders[LT_CLASS_PERSON] = 240;
    res->class_won_orders[LT_CLASS_SCALPER] = 60;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_PASS);
    /* at the tolerance exactly: a pass; one over: a fail */
    res->class_won_orders[LT_CLASS_PERSON] = 216;
    res->class_won_orders[LT_CLASS_SCALPER] = 84;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_PASS);
    res->class_won_orders[LT_CLASS_PERSON] = 215;
    res->class_won_orders[LT_CLASS_SCALPER] = 85;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_FAIL);
    free(res);
    free(a);
}

/* Registration: the line counts registrations and not_registered refusals per
 * class; it fails on an entry of a person that cannot have registered, or a
 * refusal of an account answered registered; fairness is judged over the
 * registered entrant persons. Without registration in the scenario: SKIP. */
static void test_registration(void **state)
{
    (void)state;
    lt_scenario_t sc;
    memset(&sc, 0, sizeof(sc));
    snprintf(sc.sale_id, sizeof(sc.sale_id), "%s", SALE);
    sc.per_user_limit = 1;
    sc.fair_window_ms = 1000;
    lt_results_t *res = calloc(1, sizeof(*res));
    res->fair_window_ms = 1000; /* the sale as the gateway answered */
    lt_audit_t *a = calloc(1, sizeof(*a));
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "registration")->result, LT_CHECK_SKIP);
    sc.reg = true;
    /* 900 people (810 registered; 90 refused 403 not_registered), 100 operators with
     * 2,000 accounts and 200 persons, all registered: 2 new and 18 again each */
    res->n_entries = 1010;
    res->reg_sent = 2810;
    res->reg_new = 1010;
    res->reg_again = 1800;
    res->class_users[LT_CLASS_PERSON] = res->class_persons[LT_CLASS_PERSON] = 900;
    res->class_users[LT_CLASS_SCALPER] = 2000;
    res->class_persons[LT_CLASS_SCALPER] = 200;
    res->class_registered[LT_CLASS_PERSON] = res->class_person_registered[LT_CLASS_PERSON] = 810;
    res->class_registered[LT_CLASS_SCALPER] = 2000;
    res->class_person_registered[LT_CLASS_SCALPER] = 200;
    res->class_not_registered[LT_CLASS_PERSON] = 90;
    /* every registered person entered: a person-fair draw of 300 */
    res->class_person_entrants[LT_CLASS_PERSON] = res->class_person_reg_entrants[LT_CLASS_PERSON] = 810;
    res->class_person_entrants[LT_CLASS_SCALPER] = res->class_person_reg_entrants[LT_CLASS_SCALPER] = 200;
    res->class_won_orders[LT_CLASS_PERSON] = 240;
    res->class_won_orders[LT_CLASS_SCALPER] = 60;
    lt_audit_run(&sc, res, a);
    const lt_check_t *c = find(a, "registration");
    fprintf(stderr, "%s\n%s\n", c->detail, find(a, "fairness")->detail);
    assert_int_equal(c->result, LT_CHECK_PASS);
    assert_non_null(strstr(c->detail, "2810 sent: 1010 new, 1800 registered already"));
    assert_non_null(strstr(c->detail, "people registered 810 of 900 persons, 90 not_registered"));
    assert_non_null(strstr(c->detail, "scalpers registered 200 of 200 persons, 0 not_registered"));
    assert_null(strstr(c->detail, "bots")); /* classes absent from the crowd are left out */
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_PASS);
    assert_non_null(strstr(find(a, "fairness")->detail, "registered entrant persons (1010)"));
    assert_false(a->failed);
    /* the base is the registered entrants: 50 people entered unregistered (the
     * gateway's fault) and are not counted among the persons the draw was over */
    res->class_person_entrants[LT_CLASS_PERSON] = 860;
    res->unregistered_entrants = 50;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "registration")->result, LT_CHECK_FAIL);
    assert_non_null(strstr(find(a, "registration")->detail, "unregistered entrant persons 50"));
    assert_non_null(strstr(find(a, "fairness")->detail, "registered entrant persons (1010)"));
    assert_true(a->failed);
    /* an account answered registered, then refused not_registered */
    res->class_person_entrants[LT_CLASS_PERSON] = 810;
    res->unregistered_entrants = 0;
    res->registered_refused = 1;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "registration")->result, LT_CHECK_FAIL);
    assert_non_null(strstr(find(a, "registration")->detail, "registered accounts refused 1"));
    /* by account (identity off): scalpers over their share of registered persons */
    res->registered_refused = 0;
    res->class_won_orders[LT_CLASS_PERSON] = 87;
    res->class_won_orders[LT_CLASS_SCALPER] = 213;
    lt_audit_run(&sc, res, a);
    assert_int_equal(find(a, "registration")->result, LT_CHECK_PASS);
    assert_int_equal(find(a, "fairness")->result, LT_CHECK_FAIL);
    assert_non_null(strstr(find(a, "fairness")->detail, "scalpers won 213 of 300"));
    free(res);
    free(a);
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    /* librdkafka's threads come from thrd_create, which TSan does not see
     * (as in test_oq_relay.c); this test has no threads of its own. */
    fprintf(stderr, "skipped under TSan: librdkafka threads come from thrd_create\n");
    return 77;
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_present_passes),
        cmocka_unit_test(test_hyper_limit),
        cmocka_unit_test(test_fairness_per_person),
        cmocka_unit_test(test_missing_202_fails),
        cmocka_unit_test(test_unanswered_order_in_topic_fails),
        cmocka_unit_test(test_empty_topic_and_missing_db_fail),
        cmocka_unit_test(test_user_over_limit_fails),
        cmocka_unit_test(test_brokers_from_file),
        cmocka_unit_test(test_fairness),
        cmocka_unit_test(test_registration),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
