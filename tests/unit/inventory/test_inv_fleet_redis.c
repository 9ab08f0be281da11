/*
 * The fleet's scripts (inventory/inv_fleet_redis.c: heartbeat, node id claim,
 * config publish, figures, leave) against a real redis-server (started here on
 * 127.0.0.1 at a free port, stopped by PID): each goes by its SHA1 (EVALSHA),
 * with its text (EVAL) only when the server answers NOSCRIPT, as after a
 * SCRIPT FLUSH or a restart. Prints the bytes Redis read per heartbeat and per
 * claim on stderr. Fails when no redis-server exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cm_err.h"
#include "common/cm_url.h"
#include "inventory/inv_fleet.h"
#include "tests/support/ts_redis.h"

static ts_redis_t srv;

#define CMD(buf, ...) assert_int_equal(ts_redis_cmd(&srv, buf, sizeof(buf), __VA_ARGS__), 0)

static inv_fleet_conn_t *conn(void)
{
    char url[128], why[256] = "";
    cm_redis_url_t addr;
    assert_int_equal(
        cm_redis_url_parse(ts_redis_url(&srv, url, sizeof(url), NULL), &addr, why, sizeof(why)), 0);
    inv_fleet_conn_t *c = inv_fleet_connect(&addr, 3000, why, sizeof(why));
    assert_non_null(c);
    return c;
}

static double info_num(const char *section, const char *line, const char *name)
{
    return ts_redis_info_num(&srv, section, line, name);
}

static void figure(void *ctx, const char *member, const char *json)
{
    (void)member, (void)json;
    (*(int *)ctx)++;
}

/* Each of the fleet's five scripts once. */
static void each_script(inv_fleet_conn_t *c)
{
    char why[256] = "", key[64];
    uint32_t members = 0;
    uint64_t version = 0;
    long long node = 0;
    int64_t floor = 0;
    assert_int_equal(inv_fleet_heartbeat(c, "m1", "{flashgate:fleet}:nodeid:7", 7, 1000, 5000, 5000,
                                         &members, &version, &node, &floor, why, sizeof(why)),
                     0);
    assert_int_equal(members, 1);
    assert_true(node > 0);
    int rc =
        inv_fleet_nodeid_claim(c, 9, "m1", 5000, 1000, &floor, key, sizeof(key), why, sizeof(why));
    assert_true(rc == 0 || rc == 1);
    rc = inv_fleet_config_publish(c, "{}", version, "m1", "1", &version, why, sizeof(why));
    assert_true(rc == 0 || rc == 1);
    int n = 0;
    assert_int_equal(inv_fleet_figures(c, "m1", "{\"rps\":1}", figure, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 1);
    inv_fleet_leave(c, "m1", "{flashgate:fleet}:nodeid:7", 7, 1000, 900);
    assert_false(inv_fleet_broken(c));
}

/* The bytes Redis read per call over n heartbeats, then n claims. */
static void bytes_per_call(inv_fleet_conn_t *c, int n)
{
    char why[256] = "", key[64];
    uint32_t members = 0;
    uint64_t version = 0;
    long long node = 0;
    int64_t floor = 0;
    for (int round = 0; round < 2; round++) {
        double in0 = info_num("stats", NULL, "total_net_input_bytes");
        for (int i = 0; i < n; i++) {
            if (round == 0)
                assert_int_equal(inv_fleet_heartbeat(c, "m1", "{flashgate:fleet}:nodeid:7", 7,
                                                     1000 + i, 5000, 5000, &members, &version,
                                                     &node, &floor, why, sizeof(why)),
                                 0);
            else
                assert_true(inv_fleet_nodeid_claim(c, 8, "m1", 5000, 1000 + i, &floor, key,
                                                   sizeof(key), why, sizeof(why)) >= 0);
        }
        double in = info_num("stats", NULL, "total_net_input_bytes") - in0;
        fprintf(stderr, "fleet script: %.0f bytes read by Redis per %s (%d calls)\n", in / n,
                round == 0 ? "heartbeat" : "node id claim", n);
    }
}

/*
 * Three rounds of the five scripts with a SCRIPT FLUSH after the first: every
 * call is one EVALSHA, and a script's text goes only on its first call to a
 * fresh server and its first after the flush (5 + 5 EVALs).
 */
static void test_scripts_by_sha(void **state)
{
    (void)state;
    char buf[64];
    inv_fleet_conn_t *c = conn();
    CMD(buf, "SCRIPT FLUSH");
    CMD(buf, "CONFIG RESETSTAT");
    each_script(c);
    CMD(buf, "SCRIPT FLUSH");
    each_script(c);
    each_script(c);
    double sha_calls = info_num("commandstats", "cmdstat_evalsha", "calls");
    double eval_calls = info_num("commandstats", "cmdstat_eval", "calls");
    bytes_per_call(c, 500);
    inv_fleet_close(c);
    fprintf(stderr, "fleet scripts: %.0f EVALSHA, %.0f EVAL over 15 calls\n", sha_calls,
            eval_calls);
    assert_true(sha_calls == 15);
    assert_true(eval_calls == 10);
}

int main(void)
{
    if (ts_redis_start(&srv, false) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripts_by_sha),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ts_redis_free(&srv);
    return rc;
}
