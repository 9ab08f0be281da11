/*
 * flashgate's option table: defaults, the flags and env names operators rely
 * on, value rules, cross-key rules and the committed sample config.
 */
#include "common/cm_err.h"
#include "common/cm_rate.h"
#include "gateway/base/gw_config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/unit/conf_fixture.h"

typedef struct fx {
    gw_config_t cfg;
    cm_conf_t conf;
    char err[8192];
    char path[64];
    conf_env_t env; /* every FLASHGATE_* variable the table reads: saved, cleared, restored */
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    conf_env_save_table(&f->env, gw_config_opts);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    cm_conf_free(&f->conf);
    if (f->path[0])
        unlink(f->path);
    conf_env_restore(&f->env);
    free(f);
    return 0;
}

static int load(fx_t *f, ...)
{
    char *argv[40];
    va_list ap;
    va_start(ap, f);
    int argc = conf_argv(argv, 40, "flashgate", ap);
    va_end(ap);
    cm_conf_free(&f->conf);
    return gw_config_load(&f->cfg, &f->conf, argc, argv, f->err, sizeof(f->err));
}

static void write_file(fx_t *f, const char *text)
{
    conf_write_file(f->path, "gwtest", text);
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_defaults(void **state)
{
    fx_t *f = *state;
    if (load(f, NULL) != 0)
        fail_msg("%s", f->err);
    gw_config_t *c = &f->cfg;
    assert_string_equal(c->listen, "0.0.0.0:8080");
    assert_string_equal(c->admin_listen, "127.0.0.1:9090");
    assert_string_equal(c->admin_token, "");
    assert_int_equal(c->threads, 0);
    assert_int_equal(c->node_id, 1024);
    assert_int_equal(c->body_limit, 4096);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->connection_timeout_ms, 30000);
    assert_string_equal(c->trusted_proxies, "");
    assert_int_equal(c->max_sales, 1024);
    assert_int_equal(c->summary_interval_ms, 10000);
    assert_string_equal(c->data_dir, "./data");
    assert_int_equal(c->log_level, 2); /* info = CM_LOG_INFO */
    assert_int_equal(c->log_format, 0);
    assert_string_equal(c->inventory, "memory");
    assert_int_equal(c->redis_timeout_ms, 40);
    assert_int_equal(c->redis_pool, 1);
    assert_int_equal(c->redis_batch, 64);
    assert_int_equal(c->durability, GW_DURABILITY_WRITE);
    assert_int_equal(c->spool_max_bytes, 1ull << 30);
    assert_int_equal(c->spool_segment_bytes, 64ull << 20);
    assert_string_equal(c->kafka_brokers, "embedded");
    assert_string_equal(c->kafka_topic, "flashgate.orders");
    assert_string_equal(c->kafka_outcomes_topic, "flashgate.outcomes");
    assert_string_equal(c->kafka_properties, "");
    assert_int_equal(c->global_rps, 0);
    assert_int_equal(c->sale_rps, 0);
    assert_int_equal(c->user_rps, 1000);
    assert_int_equal(c->user_burst, 5);
    assert_int_equal(c->ip_rps, 20000);
    assert_int_equal(c->ip_burst, 40);
    assert_true(c->global_burst >= 1 && c->sale_burst >= 1);
    assert_int_equal(c->limiter_max_keys, 1000000);
    assert_string_equal(f->err, "");
}

static void test_required_flags(void **state)
{
    fx_t *f = *state;
    int rc = load(f, "--listen", "127.0.0.1:18080", "--admin-listen=[::1]:19090",
                  "--admin-token", "tok-0123456789abcdef", "--inventory", "redis://127.0.0.1:6379/0",
                  "--data-dir=/var/lib/fg", "--threads", "4", "--durability", "fsync",
                  "--node-id", "1023", "--kafka-brokers", "k1:9092,k2:9092", "--kafka-topic=t.o",
                  "--set", "limits.user_rps=2.5", "--set=log.level=debug",
                  "--set", "identity.own_key_on_redis=true", NULL);
    if (rc != 0)
        fail_msg("%s", f->err);
    gw_config_t *c = &f->cfg;
    assert_string_equal(c->listen, "127.0.0.1:18080");
    assert_string_equal(c->admin_listen, "[::1]:19090");
    assert_string_equal(c->admin_token, "tok-0123456789abcdef");
    assert_string_equal(c->inventory, "redis://127.0.0.1:6379/0");
    assert_string_equal(c->data_dir, "/var/lib/fg");
    assert_int_equal(c->threads, 4);
    assert_int_equal(c->durability, GW_DURABILITY_FSYNC);
    assert_int_equal(c->node_id, 1023);
    assert_string_equal(c->kafka_brokers, "k1:9092,k2:9092");
    assert_string_equal(c->kafka_topic, "t.o");
    assert_int_equal(c->user_rps, 2500);
    assert_int_equal(c->log_level, 3);

    assert_int_equal(load(f, "--check-config", "--help", "--version", NULL), 0);
    assert_true(f->conf.want_check && f->conf.want_help && f->conf.want_version);
}

static void test_env_aliases(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *key, *env;
    } want[] = {
        {"server.listen", "FLASHGATE_LISTEN"},
        {"server.admin_listen", "FLASHGATE_ADMIN_LISTEN"},
        {"server.admin_token", "FLASHGATE_ADMIN_TOKEN"},
        {"server.data_dir", "FLASHGATE_DATA_DIR"},
        {"server.threads", "FLASHGATE_THREADS"},
        {"server.node_id", "FLASHGATE_NODE_ID"},
        {"inventory.backend", "FLASHGATE_INVENTORY"},
        {"spool.durability", "FLASHGATE_DURABILITY"},
        {"kafka.brokers", "FLASHGATE_KAFKA_BROKERS"},
        {"kafka.topic", "FLASHGATE_KAFKA_TOPIC"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const cm_opt_t *o = cm_conf_find(gw_config_opts, want[i].key);
        assert_non_null(o);
        char name[128];
        cm_conf_env_name(o, "FLASHGATE_", o->alias != NULL, name, sizeof(name));
        assert_string_equal(name, want[i].env);
    }
    setenv("FLASHGATE_ADMIN_TOKEN", "from-env-0123456789", 1);
    setenv("FLASHGATE_LISTEN", "127.0.0.1:1234", 1);
    setenv("FLASHGATE_DATA_DIR", "/tmp/d", 1);
    setenv("FLASHGATE_LIMITS_USER_BURST", "9", 1);
    if (load(f, NULL) != 0)
        fail_msg("%s", f->err);
    assert_string_equal(f->cfg.admin_token, "from-env-0123456789");
    assert_string_equal(f->cfg.listen, "127.0.0.1:1234");
    assert_string_equal(f->cfg.data_dir, "/tmp/d");
    assert_int_equal(f->cfg.user_burst, 9);
    char where[128];
    cm_conf_describe_source(&f->conf, cm_conf_find(gw_config_opts, "server.admin_token"), where,
                            sizeof(where));
    assert_string_equal(where, "env FLASHGATE_ADMIN_TOKEN");
}

/* No two options share a flag or an env name, and none hides a built-in flag. */
static void test_names_unique(void **state)
{
    (void)state;
    char names[400][300];
    int n = 0;
    const char *builtin[] = {"config", "set", "help", "version", "check-config"};
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        snprintf(names[n++], 300, "--%s", builtin[i]);
    snprintf(names[n++], 300, "FLASHGATE_CONFIG");
    for (const cm_opt_t *o = gw_config_opts; o->key; o++) {
        assert_non_null(o->help);
        /* an alias equal to the option's own name (kafka-brokers) is one name */
        char fl[2][120], ev[2][128];
        for (int a = 0; a < 2; a++) {
            if (cm_conf_flag_name(o, a, fl[a], sizeof(fl[a])) &&
                (a == 0 || strcmp(fl[0], fl[1]) != 0))
                snprintf(names[n++], 300, "--%s", fl[a]);
            if (cm_conf_env_name(o, "FLASHGATE_", a, ev[a], sizeof(ev[a])) &&
                (a == 0 || strcmp(ev[0], ev[1]) != 0))
                snprintf(names[n++], 300, "%s", ev[a]);
        }
        assert_true(n < 390);
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) == 0)
                fail_msg("name %s used twice", names[i]);
}

static void test_precedence(void **state)
{
    fx_t *f = *state;
    write_file(f, "// flashgate test\n"
                  "{\n"
                  "  \"server\": {\"threads\": 2, \"max_sales\": 10, \"body_limit\": \"8k\"},\n"
                  "  # flat keys too\n"
                  "  \"limits.user_rps\": 0.5, \"limits.ip_burst\": 100,\n"
                  "  \"kafka\": {\"properties\": {\"linger.ms\": 5}}\n"
                  "}\n");
    setenv("FLASHGATE_CONFIG", f->path, 1);
    setenv("FLASHGATE_SERVER_MAX_SALES", "20", 1);
    setenv("FLASHGATE_THREADS", "3", 1);
    setenv("FLASHGATE_LIMITS_USER_RPS", "0.75", 1);
    if (load(f, "--threads=5", "--kafka-properties", "acks=all", NULL) != 0)
        fail_msg("%s", f->err);
    assert_int_equal(f->cfg.body_limit, 8192); /* file */
    assert_int_equal(f->cfg.ip_burst, 100);     /* file */
    assert_int_equal(f->cfg.max_sales, 20);     /* env over file */
    assert_int_equal(f->cfg.user_rps, 750);     /* env over file */
    assert_int_equal(f->cfg.threads, 5);        /* flag over env over file */
    assert_string_equal(f->cfg.kafka_properties, "acks=all\n"); /* flag replaces file */
    assert_int_equal(f->cfg.ip_rps, 20000);     /* default */
    /* fair by default: a per-subnet bucket, and a new sale's one-second lottery */
    assert_int_equal(f->cfg.subnet_rps, 200000);
    assert_int_equal(f->cfg.subnet_burst, 400);
    assert_int_equal(f->cfg.default_fair_window_ms, 1000);
    assert_int_equal(f->cfg.default_fair_early_ms, 1000);
    assert_int_equal(cm_conf_source(&f->conf, "server.body_limit"), CM_SRC_FILE);
    assert_int_equal(cm_conf_source(&f->conf, "server.max_sales"), CM_SRC_ENV);
    assert_int_equal(cm_conf_source(&f->conf, "server.threads"), CM_SRC_FLAG);
    assert_int_equal(cm_conf_source(&f->conf, "limits.ip_rps"), CM_SRC_DEFAULT);
}

static void bad(fx_t *f, const char *key, const char *val, const char *rule)
{
    char set[600];
    snprintf(set, sizeof(set), "%s=%s", key, val);
    if (load(f, "--set", set, NULL) != CM_EINVAL)
        fail_msg("%s accepted", set);
    if (!strstr(f->err, rule))
        fail_msg("%s: '%s' lacks '%s'", set, f->err, rule);
    char head[700];
    snprintf(head, sizeof(head), "config: %s=", key);
    assert_non_null(strstr(f->err, head));
}

static void good(fx_t *f, const char *key, const char *val)
{
    char set[600];
    snprintf(set, sizeof(set), "%s=%s", key, val);
    if (load(f, "--set", set, NULL) != 0)
        fail_msg("%s refused: %s", set, f->err);
}

/* A Redis inventory (a fleet) verifying buyers with the data dir's own key is
 * refused, naming the way out; the debug.* seams need the debug routes. */
static void test_fleet_key_and_seams(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, "--inventory", "redis://127.0.0.1:6379", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: identity.mode=jwt"));
    assert_non_null(strstr(f->err, "identity.own_key_on_redis=true"));
    if (load(f, "--inventory", "redis://127.0.0.1:6379", "--set", "identity.jwks_file=/k.json",
             NULL) != 0)
        fail_msg("a shared JWK set refused: %s", f->err);
    if (load(f, "--inventory", "redis://127.0.0.1:6379", "--set", "identity.mode=none", NULL))
        fail_msg("identity.mode=none refused: %s", f->err);
    assert_int_equal(load(f, "--set", "debug.fleet_tick=1h", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: debug.fleet_tick="));
    assert_non_null(strstr(f->err, "server.admin_debug_routes"));
    assert_int_equal(load(f, "--set", "debug.wall_offset_ms=-5", NULL), CM_EINVAL);
    if (load(f, "--enable-debug-routes", "--set", "debug.wall_offset_ms=-5", "--set",
             "debug.fleet_tick=1h", NULL) != 0)
        fail_msg("seams with the debug routes refused: %s", f->err);
    assert_string_equal(f->cfg.debug_wall_offset_ms, "-5");
    assert_int_equal(f->cfg.debug_fleet_tick_ms, 3600000);
    assert_int_equal(load(f, "--enable-debug-routes", "--set", "debug.wall_offset_ms=1e3", NULL),
                     CM_EINVAL);
    assert_int_equal(load(f, "--set", "server.liveness_timeout=999", NULL), CM_EINVAL);
    if (load(f, "--set", "server.liveness_timeout=0", NULL) != 0)
        fail_msg("liveness off refused: %s", f->err);
}

static void test_value_rules(void **state)
{
    fx_t *f = *state;
    /* listeners */
    good(f, "server.listen", "[::1]:8080");
    good(f, "server.listen", "[::]:8080");
    good(f, "server.listen", "localhost:80");
    good(f, "server.listen", "127.0.0.1:0");
    bad(f, "server.listen", "::1:8080", "HOST:PORT");
    bad(f, "server.listen", "8080", "HOST:PORT");
    bad(f, "server.listen", ":8080", "HOST:PORT");
    bad(f, "server.listen", "1.2.3.4:65536", "HOST:PORT");
    bad(f, "server.listen", "1.2.3.4:", "HOST:PORT");
    bad(f, "server.listen", "999.1.1.1:80", "HOST:PORT");
    bad(f, "server.listen", "[1.2.3.4]:80", "HOST:PORT");
    bad(f, "server.admin_listen", "nope", "HOST:PORT");
    /* inventory */
    good(f, "inventory.backend", "memory");
    static const char *const redis_urls[] = {
        "redis://127.0.0.1:6379", "redis://cache.internal/3", "redis://user:p%40ss@[::1]:6380/2",
        "redis-cluster://10.0.0.1:7000,10.0.0.2:7000,[::1]:7001",
        "redis-cluster://:pw@redis-0.internal"};
    for (size_t i = 0; i < sizeof(redis_urls) / sizeof(redis_urls[0]); i++) {
        char set[600];
        snprintf(set, sizeof(set), "inventory.backend=%s", redis_urls[i]);
        /* a single gateway on Redis (a fleet needs one JWK set: test_fleet_key) */
        if (load(f, "--set", set, "--set", "identity.own_key_on_redis=true", NULL) != 0)
            fail_msg("%s refused: %s", set, f->err);
    }
    bad(f, "inventory.backend", "redis-cluster://h:7000/2", "redis-cluster://");
    bad(f, "inventory.backend", "redis-cluster://h:7000,", "redis-cluster://");
    bad(f, "inventory.backend", "redis-cluster://h:0", "redis-cluster://");
    bad(f, "inventory.backend", "redis://a:1,b:2", "redis-cluster://");
    bad(f, "inventory.backend", "redis://", "must be \"memory\", redis://");
    bad(f, "inventory.backend", "mysql://x", "must be \"memory\", redis://");
    bad(f, "inventory.backend", "memory2", "must be \"memory\", redis://");
    bad(f, "inventory.backend", "redis://h:99999", "must be \"memory\", redis://");
    bad(f, "inventory.backend", "redis://h:6379/x", "must be \"memory\", redis://");
    /* numbers and enums */
    good(f, "server.threads", "64");
    bad(f, "server.threads", "65", "must be between 0 and 64");
    good(f, "server.node_id", "0");
    bad(f, "server.node_id", "1025", "must be between 0 and 1024");
    bad(f, "spool.durability", "sync", "must be one of: write, fsync");
    bad(f, "log.level", "trace", "must be one of: error, warn, info, debug");
    good(f, "log.format", "json");
    good(f, "server.body_limit", "1m");
    bad(f, "server.body_limit", "100", "must be between 256 and 1m");
    bad(f, "server.body_limit", "2m", "must be between 256 and 1m");
    bad(f, "server.connection_timeout", "10", "must be between 1s and 1h");
    /* rates: 1e9 req/s at most, bursts 1e7 */
    good(f, "limits.global_rps", "1000000000");
    bad(f, "limits.global_rps", "1000000000.001", "must be between 0 and 1000000000");
    bad(f, "limits.user_rps", "0.0001", "at most 3 decimal places");
    good(f, "limits.ip_burst", "10000000");
    bad(f, "limits.ip_burst", "10000001", "must be between 0 and 10000000");
    /* lists */
    good(f, "server.trusted_proxies", "10.0.0.0/8, 127.0.0.1,::1,fd00::/8,192.168.1.7/32");
    bad(f, "server.trusted_proxies", "10.0.0.0/33", "comma list of IP addresses");
    bad(f, "server.trusted_proxies", "fd00::/129", "comma list of IP addresses");
    bad(f, "server.trusted_proxies", "10.0.0.0/8,,1.1.1.1", "comma list of IP addresses");
    bad(f, "server.trusted_proxies", "10.0.0.0/8,", "comma list of IP addresses");
    bad(f, "server.trusted_proxies", "proxy.local", "comma list of IP addresses");
    bad(f, "server.trusted_proxies", "10.0.0.0/", "comma list of IP addresses");
    good(f, "kafka.brokers", "embedded");
    good(f, "kafka.brokers", "b1:9092,[::1]:9093");
    bad(f, "kafka.brokers", "b1", "HOST:PORT[,HOST:PORT...]");
    bad(f, "kafka.brokers", "b1:9092,", "HOST:PORT[,HOST:PORT...]");
    bad(f, "kafka.brokers", "b1:0", "HOST:PORT[,HOST:PORT...]");
    bad(f, "kafka.topic", "has space", "Kafka topic name");
    bad(f, "kafka.topic", "", "Kafka topic name");
    bad(f, "server.data_dir", "", "must not be empty");
    bad(f, "server.admin_token", "two words", "printable ASCII");
    assert_null(strstr(f->err, "two words")); /* the secret is not echoed */
    /* proxy.routes: a fallback's status carries its body; 204 and 304 cannot */
#define ROUTE_FB(st, body)                                                                         \
    "[{\"prefix\":\"/v1/recs/\",\"upstream\":\"http://127.0.0.1:9\",\"fallback\":{\"status\":" st \
    body "}}]"
    good(f, "proxy.routes", ROUTE_FB("200", ",\"body\":\"{}\""));
    good(f, "proxy.routes", ROUTE_FB("503", ""));
    bad(f, "proxy.routes", ROUTE_FB("204", ",\"body\":\"{}\""), "route 0: fallback.status 204");
    bad(f, "proxy.routes", ROUTE_FB("204", ""), "route 0: fallback.status 204");
    bad(f, "proxy.routes", ROUTE_FB("304", ""), "route 0: fallback.status 304");
    bad(f, "proxy.routes", ROUTE_FB("199", ""), "fallback must be {\"status\":200..599");
#undef ROUTE_FB
    /* a prefix once: the longest matching one picks the route, order does not */
#define ROUTE(prefix) "{\"prefix\":\"" prefix "\",\"upstream\":\"http://127.0.0.1:9\"}"
    good(f, "proxy.routes", "[" ROUTE("/v1/page/") "," ROUTE("/v1/page/item/") "]");
    bad(f, "proxy.routes", "[" ROUTE("/v1/page/") "," ROUTE("/v1/x/") "," ROUTE("/v1/page/") "]",
        "route 2: prefix /v1/page/ is route 0's already");
#undef ROUTE
}

static void test_the_documented_error_line(void **state)
{
    fx_t *f = *state;
    setenv("FLASHGATE_LIMITS_USER_RPS", "-1", 1);
    assert_int_equal(load(f, NULL), CM_EINVAL);
    assert_string_equal(
        f->err,
        "config: limits.user_rps=-1 (env FLASHGATE_LIMITS_USER_RPS): must be a number >= 0\n");
}

static void test_cross_key(void **state)
{
    fx_t *f = *state;
    /* a rate needs a burst */
    assert_int_equal(load(f, "--limits-user-burst", "0", "--set", "limits.ip_burst=0", NULL),
                     CM_EINVAL);
    assert_non_null(strstr(f->err, "config: limits.user_burst=0 (flag --limits-user-burst): "
                                   "must be >= 1 when limits.user_rps > 0\n"));
    assert_non_null(strstr(f->err, "config: limits.ip_burst=0 (flag --set): "
                                   "must be >= 1 when limits.ip_rps > 0\n"));
    assert_int_equal(lines(f->err), 2);
    /* ... but not when the rate is off */
    assert_int_equal(load(f, "--limits-user-burst", "0", "--limits-user-rps", "0", NULL), 0);

    /* listeners must differ, wildcards overlap, port 0 never collides */
    assert_int_equal(load(f, "--admin-listen", "0.0.0.0:8080", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: server.admin_listen=0.0.0.0:8080 (flag "
                                   "--admin-listen): must differ from server.listen"));
    assert_int_equal(load(f, "--listen", "127.0.0.1:9090", NULL), CM_EINVAL);
    assert_int_equal(load(f, "--listen", "[::]:9090", NULL), CM_EINVAL);
    assert_int_equal(load(f, "--listen", "127.0.0.2:9090", NULL), 0);
    assert_int_equal(load(f, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", NULL), 0);

    assert_int_equal(load(f, "--set", "spool.segment_bytes=1g", "--set", "spool.max_bytes=512m",
                          NULL),
                     CM_EINVAL);
    assert_non_null(strstr(f->err, "spool.segment_bytes=1g (flag --set): must be <= spool.max_bytes"));
    assert_int_equal(load(f, "--kafka-topic", "flashgate.outcomes", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "must differ from kafka.topic"));

    /* per-key and cross-key problems come out together */
    setenv("FLASHGATE_THREADS", "100", 1);
    assert_int_equal(load(f, "--limits-sale-rps", "10", "--limits-sale-burst", "0", "--bogus",
                          NULL),
                     CM_EINVAL);
    assert_non_null(strstr(f->err, "server.threads=100 (env FLASHGATE_THREADS)"));
    assert_non_null(strstr(f->err, "--bogus (flag): unknown flag"));
    assert_non_null(strstr(f->err, "limits.sale_burst=0 (flag --limits-sale-burst)"));
    assert_int_equal(lines(f->err), 3);
}

static void test_runtime_change(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    char err[512];
    /* admin API pattern: change a copy, check it, then commit */
    gw_config_t copy = f->cfg;
    cm_conf_t view = f->conf;
    view.base = &copy;
    assert_int_equal(cm_conf_set(&view, "limits.user_rps", "3", CM_SRC_RUNTIME, err, sizeof(err)),
                     0);
    assert_int_equal(cm_conf_set(&view, "limits.user_burst", "0", CM_SRC_RUNTIME, err,
                                 sizeof(err)),
                     0);
    err[0] = '\0';
    assert_int_equal(gw_config_check(&copy, &view, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "config: limits.user_burst=0 (runtime): must be >= 1"));
    assert_int_equal(f->cfg.user_rps, 1000); /* the live struct is untouched */
    assert_int_equal(cm_conf_set(&view, "limits.user_burst", "7", CM_SRC_RUNTIME, err,
                                 sizeof(err)),
                     0);
    err[0] = '\0';
    assert_int_equal(gw_config_check(&copy, &view, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(copy.user_burst, 7);

    assert_int_equal(cm_conf_set(&f->conf, "server.listen", "1.1.1.1:1", CM_SRC_RUNTIME, err,
                                 sizeof(err)),
                     CM_EINVAL);
    assert_non_null(strstr(err, "cannot be changed at run time"));
    for (const cm_opt_t *o = gw_config_opts; o->key; o++)
        if (strncmp(o->key, "limits.", 7) == 0 && strcmp(o->key, "limits.max_keys") != 0)
            assert_true(o->flags & CM_OPT_RUNTIME);
}

/* server.admin_token is empty (generated) or at least 16 characters, wherever it
 * comes from; the error names the key, its source and the rule, never the token. */
static void test_admin_token_length(void **state)
{
    fx_t *f = *state;
    bad(f, "server.admin_token", "x", "must be at least 16 characters");
    bad(f, "server.admin_token", "abcdefghijklmno", "must be at least 16 characters");
    good(f, "server.admin_token", "abcdefghijklmnop");
    assert_string_equal(f->cfg.admin_token, "abcdefghijklmnop");
    good(f, "server.admin_token", "");
    static const char *const from[][2] = {{"FLASHGATE_ADMIN_TOKEN", "env FLASHGATE_ADMIN_TOKEN"},
                                          {"FLASHGATE_SERVER_ADMIN_TOKEN",
                                           "env FLASHGATE_SERVER_ADMIN_TOKEN"}};
    for (size_t i = 0; i < 2; i++) {
        setenv(from[i][0], "shortTok9", 1);
        assert_int_equal(load(f, NULL), CM_EINVAL);
        char want[200];
        snprintf(want, sizeof(want), "config: server.admin_token=<set> (%s): must be at least 16",
                 from[i][1]);
        if (!strstr(f->err, want))
            fail_msg("'%s' lacks '%s'", f->err, want);
        assert_null(strstr(f->err, "shortTok9"));
        unsetenv(from[i][0]);
    }
    assert_int_equal(load(f, "--admin-token", "shortTok9", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: server.admin_token=<set> (flag --admin-token): "
                                   "must be at least 16 characters"));
    assert_null(strstr(f->err, "shortTok9"));
    assert_int_equal(lines(f->err), 1);
    write_file(f, "{\"server\": {\"admin_token\": \"shortTok9\"}}\n");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: server.admin_token=<set> (file "));
    assert_non_null(strstr(f->err, "must be at least 16 characters"));
    assert_null(strstr(f->err, "shortTok9"));
    /* --check-config goes through the same load */
    assert_int_equal(load(f, "--admin-token", "shortTok9", "--check-config", NULL), CM_EINVAL);
}

/*
 * After gw_config_seal_secrets a reload (gw_config_load again, same argv) reads
 * the "*" left in argv: that is the sealed token, not a short new one, and the
 * reload goes through. A short token in the config file is still refused.
 * Seals the process's token once: the last test of the group.
 */
static void test_admin_token_sealed_reload(void **state)
{
    fx_t *f = *state;
    char a0[] = "flashgate", a1[] = "--admin-token", a2[] = "sealed-token-0123456789";
    char *argv[] = {a0, a1, a2, NULL};
    cm_conf_free(&f->conf);
    assert_int_equal(gw_config_load(&f->cfg, &f->conf, 3, argv, f->err, sizeof(f->err)), 0);
    gw_config_seal_secrets(&f->cfg, &f->conf, 3, argv);
    assert_string_equal(argv[2], "*");
    assert_string_equal(f->cfg.admin_token, "<set>");
    size_t len = 0;
    assert_string_equal(gw_config_admin_token(&len), "sealed-token-0123456789");
    /* the reload */
    cm_conf_free(&f->conf);
    if (gw_config_load(&f->cfg, &f->conf, 3, argv, f->err, sizeof(f->err)) != 0)
        fail_msg("reload refused: %s", f->err);
    assert_string_equal(f->cfg.admin_token, "<set>");
    /* a config file's short token is refused on a reload too */
    write_file(f, "{\"server\": {\"admin_token\": \"shortTok9\"}}\n");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: server.admin_token=<set> (file "));
    assert_null(strstr(f->err, "shortTok9"));
    assert_string_equal(gw_config_admin_token(&len), "sealed-token-0123456789");
}


static void test_check_config_output(void **state)
{
    fx_t *f = *state;
    setenv("FLASHGATE_ADMIN_TOKEN", "very-secret-token", 1);
    assert_int_equal(load(f, "--kafka-properties", "sasl.password=pw123", "--threads", "2",
                          NULL),
                     0);
    int fd = conf_tmpfd();
    cm_conf_print_effective(&f->conf, fd);
    char *s = conf_read_all(fd);
    close(fd);
    assert_non_null(strstr(s, "server.admin_token = <set>  # env FLASHGATE_ADMIN_TOKEN\n"));
    assert_non_null(strstr(s, "server.threads = 2  # flag --threads\n"));
    assert_non_null(strstr(s, "server.listen = 0.0.0.0:8080  # default\n"));
    assert_non_null(strstr(s, "limits.user_rps = 1  # default\n"));
    assert_null(strstr(s, "very-secret-token"));
    assert_null(strstr(s, "pw123"));
    free(s);

    fd = conf_tmpfd();
    cm_conf_print_help(&f->conf, "Usage: flashgate [OPTIONS]", fd);
    s = conf_read_all(fd);
    close(fd);
    const char *want[] = {"--listen HOST:PORT", "--admin-listen HOST:PORT", "--admin-token TOKEN",
                          "--inventory memory|redis://", "--data-dir DIR", "--threads N",
                          "--durability write|fsync", "--node-id N", "--kafka-brokers embedded|",
                          "--kafka-topic TOPIC", "--check-config", "--set KEY=VALUE",
                          "env FLASHGATE_ADMIN_TOKEN", "default 0.0.0.0:8080"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(s, want[i]))
            fail_msg("help lacks '%s'", want[i]);
    assert_null(strstr(s, "very-secret-token"));
    free(s);
}

/* deploy/flashgate.conf.example is what the table generates, documents every key and,
 * loaded with --config, sets every key from the file to its default. */
static void test_sample_config(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    char *path = conf_check_sample(&f->conf, "flashgate.conf.example", "unit.gw_config");
    gw_config_t defaults;
    memcpy(&defaults, &f->cfg, sizeof(defaults)); /* padding too: compared as bytes below */
    if (load(f, "--config", path, NULL) != 0)
        fail_msg("%s: %s", path, f->err);
    conf_check_all_from_file(&f->conf, path);
    assert_memory_equal(&defaults, &f->cfg, sizeof(defaults));
    free(path);
}

static void test_split_hostport(void **state)
{
    (void)state;
    char host[64];
    unsigned port = 1;
    assert_int_equal(gw_config_split_hostport("0.0.0.0:8080", host, sizeof(host), &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 8080);
    assert_int_equal(gw_config_split_hostport("[::1]:9", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9);
    assert_int_equal(gw_config_split_hostport("h:0", host, sizeof(host), &port), 0);
    assert_int_equal(port, 0);
    assert_int_equal(gw_config_split_hostport("h:65535", host, sizeof(host), NULL), 0);
    const char *badv[] = {"h:65536", "h", "h:", ":80", "[::1]80", "[::1", "::1:80", "h:8a",
                          "h:-1", "h:000080", "[]:80", ""};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++)
        if (gw_config_split_hostport(badv[i], host, sizeof(host), &port) != CM_EINVAL)
            fail_msg("'%s' accepted", badv[i]);
    char tiny[4];
    assert_int_equal(gw_config_split_hostport("abcd:1", tiny, sizeof(tiny), &port), CM_EINVAL);
    assert_int_equal(gw_config_split_hostport("abc:1", tiny, sizeof(tiny), &port), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fleet_key_and_seams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_documented_error_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_config_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sample_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_hostport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_token_length, setup, teardown),
        /* last: seals the process's admin token */
        cmocka_unit_test_setup_teardown(test_admin_token_sealed_reload, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
