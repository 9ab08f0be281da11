/*
 * flashgate-settle's option table (settle/st_config.c), parsed as the binary
 * parses it: the defaults, settle.stop_grace from every source, its range
 * and its refusals (each naming the key, the value, where it came from and
 * the rule, with the default kept), and the committed sample config
 * deploy/flashgate-settle.conf.example.
 */
#include "common/cm_err.h"
#include "settle/st_config.h"
#include "settle/st_settle.h"

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
    st_config_t cfg;
    cm_conf_t conf;
    char err[8192];
    char path[64];
    conf_env_t env; /* every FLASHGATE_* variable the table reads: saved, cleared, restored */
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    conf_env_save_table(&f->env, st_config_opts);
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
    int argc = conf_argv(argv, 40, "flashgate-settle", ap);
    va_end(ap);
    cm_conf_free(&f->conf);
    f->err[0] = '\0';
    return st_config_load(&f->cfg, &f->conf, argc, argv, f->err, sizeof(f->err));
}

static void write_file(fx_t *f, const char *text)
{
    conf_write_file(f->path, "sttest", text);
}


static void test_defaults(void **state)
{
    fx_t *f = *state;
    if (load(f, NULL) != 0)
        fail_msg("%s", f->err);
    st_config_t *c = &f->cfg;
    assert_string_equal(c->kafka_brokers, "embedded");
    assert_string_equal(c->kafka_topic, ST_DEFAULT_TOPIC);
    assert_string_equal(c->outcomes_topic, ST_DEFAULT_OUTCOMES_TOPIC);
    assert_string_equal(c->group, ST_DEFAULT_GROUP);
    assert_string_equal(c->data_dir, "./data");
    assert_int_equal(c->batch, 500);
    assert_int_equal(c->batch_wait_ms, ST_DEFAULT_BATCH_WAIT_MS);
    assert_int_equal(c->stop_grace_ms, ST_DEFAULT_STOP_GRACE_MS);
    assert_int_equal(c->max_rate_milli, 0);
    assert_int_equal(cm_conf_source(&f->conf, "settle.stop_grace"), CM_SRC_DEFAULT);
    assert_string_equal(f->err, "");
}

/* The key, its flag, its alias, --set, both env names and the file; later sources win. */
static void test_stop_grace_sources(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *flag, *value;
        uint64_t ms;
    } flags[] = {
        {"--stop-grace", "250ms", 250},
        {"--settle-stop-grace", "2s", 2000},
        {"--stop-grace", "1500", 1500},  /* a bare number is milliseconds */
        {"--stop-grace", "0", 0},        /* no grace: the batch is given up at once */
        {"--stop-grace", "10m", 600000}, /* the upper bound is accepted */
        {"--stop-grace", "600000ms", 600000},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (load(f, flags[i].flag, flags[i].value, NULL) != 0)
            fail_msg("%s %s: %s", flags[i].flag, flags[i].value, f->err);
        assert_int_equal(f->cfg.stop_grace_ms, flags[i].ms);
        assert_int_equal(cm_conf_source(&f->conf, "settle.stop_grace"), CM_SRC_FLAG);
    }
    assert_int_equal(load(f, "--set", "settle.stop_grace=3s", NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 3000);

    write_file(f, "{\"settle\": {\"stop_grace\": \"45s\"}}\n");
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 45000);
    assert_int_equal(cm_conf_source(&f->conf, "settle.stop_grace"), CM_SRC_FILE);
    write_file(f, "{\"settle.stop_grace\": 700}\n"); /* flat key, a JSON number: ms */
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 700);

    /* env over file, flag over env */
    setenv("FLASHGATE_SETTLE_STOP_GRACE", "1m", 1);
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 60000);
    assert_int_equal(cm_conf_source(&f->conf, "settle.stop_grace"), CM_SRC_ENV);
    assert_int_equal(load(f, "--config", f->path, "--stop-grace", "100ms", NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 100);
    unsetenv("FLASHGATE_SETTLE_STOP_GRACE");
    setenv("FLASHGATE_STOP_GRACE", "20s", 1); /* the alias's variable */
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(f->cfg.stop_grace_ms, 20000);
    unsetenv("FLASHGATE_STOP_GRACE");
}

/* Each refusal is one line naming the key, the value, its source and the rule. */
static void test_stop_grace_invalid(void **state)
{
    fx_t *f = *state;
    static const struct {
        const char *value, *rule;
    } bad[] = {
        {"600001", "must be between 0 and 10m"}, /* one ms past 10 minutes */
        {"11m", "must be between 0 and 10m"},
        {"1h", "must be between 0 and 10m"},
        {"-1", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
        {"soon", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
        {"5 seconds", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
        {"2.5s", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
        {"", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
        {"99999999999999999999", "must be a duration like 250ms, 2s, 1m, 1h (a bare number is ms)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want), "config: settle.stop_grace=%s (flag --stop-grace): %s\n",
                 bad[i].value, bad[i].rule);
        assert_int_equal(load(f, "--stop-grace", bad[i].value, NULL), CM_EINVAL);
        if (strcmp(f->err, want) != 0)
            fail_msg("--stop-grace '%s': got \"%s\", want \"%s\"", bad[i].value, f->err, want);
        assert_int_equal(f->cfg.stop_grace_ms, ST_DEFAULT_STOP_GRACE_MS); /* nothing changed */
    }

    setenv("FLASHGATE_SETTLE_STOP_GRACE", "forever", 1);
    assert_int_equal(load(f, NULL), CM_EINVAL);
    assert_string_equal(f->err, "config: settle.stop_grace=forever (env "
                                "FLASHGATE_SETTLE_STOP_GRACE): must be a duration like 250ms, "
                                "2s, 1m, 1h (a bare number is ms)\n");
    unsetenv("FLASHGATE_SETTLE_STOP_GRACE");

    write_file(f, "{\"settle\": {\"stop_grace\": \"20m\"}}\n");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    char want[256];
    snprintf(want, sizeof(want),
             "config: settle.stop_grace=20m (file %s): must be between 0 and 10m\n", f->path);
    assert_string_equal(f->err, want);
    assert_int_equal(f->cfg.stop_grace_ms, ST_DEFAULT_STOP_GRACE_MS);

    /* every problem at once, the others unaffected */
    assert_int_equal(load(f, "--stop-grace", "lots", "--batch", "0", "--batch-wait", "30ms", NULL),
                     CM_EINVAL);
    assert_non_null(strstr(f->err, "config: settle.stop_grace=lots (flag --stop-grace): "));
    assert_non_null(strstr(f->err, "config: settle.batch=0 (flag --batch): "));
    assert_int_equal(f->cfg.batch_wait_ms, 30);
}

/* --help and --check-config say what it is, its default and its names. */
static void test_stop_grace_help(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    int fd = conf_tmpfd();
    cm_conf_print_help(&f->conf, "usage: flashgate-settle", fd);
    char *s = conf_read_all(fd);
    close(fd);
    const char *want[] = {"--stop-grace DURATION", "settle.stop_grace", "default 5s",
                          "FLASHGATE_SETTLE_STOP_GRACE", "0 = give it up at once"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(s, want[i]))
            fail_msg("--help lacks '%s':\n%s", want[i], s);
    /* a key whose alias makes the same variable names it once */
    if (!strstr(s, "env FLASHGATE_KAFKA_BROKERS]") || strstr(s, "FLASHGATE_KAFKA_BROKERS, "))
        fail_msg("--help names FLASHGATE_KAFKA_BROKERS other than once:\n%s", s);
    free(s);

    assert_int_equal(load(f, "--stop-grace", "0", NULL), 0);
    fd = conf_tmpfd();
    cm_conf_print_effective(&f->conf, fd);
    s = conf_read_all(fd);
    close(fd);
    if (!strstr(s, "settle.stop_grace = 0  # flag --stop-grace\n"))
        fail_msg("--check-config:\n%s", s);
    free(s);
}

/* deploy/flashgate-settle.conf.example is what the table generates, documents every key
 * and, loaded with --config, sets every key from the file to its default. */
static void test_sample_config(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    char *path = conf_check_sample(&f->conf, "flashgate-settle.conf.example", "unit.st_config");
    /*
     * Compared as bytes, as the gateway's test does: st_config_load zeroes the
     * struct before the defaults go in, a text value is written up to its NUL
     * (the rest of its buffer stays zero), and memcpy keeps the padding at the
     * end (after log_level) as it was. Equal values give equal bytes.
     */
    st_config_t defaults;
    memcpy(&defaults, &f->cfg, sizeof(defaults));
    if (load(f, "--config", path, NULL) != 0)
        fail_msg("%s: %s", path, f->err);
    conf_check_all_from_file(&f->conf, path);
    assert_memory_equal(&defaults, &f->cfg, sizeof(defaults));
    free(path);
}

/* settle.metrics_listen: an IP literal and a port, read by cm_hostport_parse at load, so
 * a bad address is refused with the others instead of at the listener's start. */
static void test_metrics_listen(void **state)
{
    fx_t *f = *state;
    static const char *const good[] = {"", "127.0.0.1:9100", "[::1]:9100", "0.0.0.0:1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (load(f, "--metrics-listen", good[i], NULL) != 0)
            fail_msg("--metrics-listen '%s': %s", good[i], f->err);
    static const char *const bad[] = {"localhost:9100", "::1:9100", "127.0.0.1", ":9100",
                                      "127.0.0.1:0", "127.0.0.1:70000", "[::1]9100"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "config: settle.metrics_listen=%s (flag --metrics-listen): must be IP:PORT "
                 "(IPv6 as [::1]:9100), port 1..65535, or empty\n",
                 bad[i]);
        assert_int_equal(load(f, "--metrics-listen", bad[i], NULL), CM_EINVAL);
        if (strcmp(f->err, want) != 0)
            fail_msg("--metrics-listen '%s': got \"%s\", want \"%s\"", bad[i], f->err, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_grace_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_grace_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_grace_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sample_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
