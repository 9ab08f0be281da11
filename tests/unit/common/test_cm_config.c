/*
 * The configuration engine against a small table of its own (every type),
 * with the env prefix CMTEST_ so that the real FLASHGATE_* environment of a
 * CI run cannot leak in.
 */
#include "common/cm_config.h"
#include "common/cm_err.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/unit/conf_fixture.h"

typedef struct tcfg {
    char name[16];
    char listen[64];
    char token[32];
    uint64_t count;
    uint64_t rate;
    uint64_t size;
    uint64_t wait_ms;
    bool debug;
    int mode;
    char props[256];
} tcfg_t;

static const char *const modes[] = {"fast", "safe", NULL};

static const char *no_x(const void *v)
{
    return strchr(v, 'x') ? "must not contain an x" : NULL;
}

static const cm_opt_t topts[] = {
    {"app.name", CM_OPT_STR, offsetof(tcfg_t, name), 16, "demo", 0, 0, NULL, 0, NULL, NULL,
     "a name", no_x},
    {"app.listen", CM_OPT_STR, offsetof(tcfg_t, listen), 64, "0.0.0.0:1", 0, 0, NULL, 0,
     "listen", "HOST:PORT", "listener", NULL},
    {"app.token", CM_OPT_STR, offsetof(tcfg_t, token), 32, "", 0, 0, NULL, CM_OPT_SECRET,
     "token", "TOKEN", "a secret", NULL},
    {"app.count", CM_OPT_UINT, offsetof(tcfg_t, count), 0, "10", 1, 100, NULL, 0, NULL, NULL,
     "a count", NULL},
    {"lim.rate", CM_OPT_MILLI, offsetof(tcfg_t, rate), 0, "1.5", 0, 1000000, NULL,
     CM_OPT_RUNTIME, NULL, NULL, "a rate", NULL},
    {"buf.size", CM_OPT_SIZE, offsetof(tcfg_t, size), 0, "4k", 256, 1u << 20, NULL, 0, NULL,
     NULL, "a size", NULL},
    {"net.wait", CM_OPT_MS, offsetof(tcfg_t, wait_ms), 0, "2s", 0, 0, NULL, 0, NULL, NULL,
     "a wait", NULL},
    {"app.debug", CM_OPT_BOOL, offsetof(tcfg_t, debug), 0, "false", 0, 0, NULL, 0, NULL, NULL,
     "a bool", NULL},
    {"app.mode", CM_OPT_ENUM, offsetof(tcfg_t, mode), 0, "fast", 0, 0, modes, 0, NULL, NULL,
     "an enum", NULL},
    {"app.props", CM_OPT_KV, offsetof(tcfg_t, props), 256, "", 0, 0, NULL, 0, NULL, NULL,
     "pass-through", NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL, 0, NULL, NULL, NULL, NULL},
};

static const char *const env_names[] = {
    "CMTEST_CONFIG",   "CMTEST_APP_NAME",  "CMTEST_APP_LISTEN", "CMTEST_LISTEN",
    "CMTEST_APP_TOKEN", "CMTEST_TOKEN",    "CMTEST_APP_COUNT",  "CMTEST_LIM_RATE",
    "CMTEST_BUF_SIZE", "CMTEST_NET_WAIT",  "CMTEST_APP_DEBUG",  "CMTEST_APP_MODE",
    "CMTEST_APP_PROPS",
};

typedef struct fx {
    tcfg_t cfg;
    cm_conf_t conf;
    char err[4096];
    char path[64];
} fx_t;

static int setup(void **state)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    fx_t *f = calloc(1, sizeof(*f));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    cm_conf_free(&f->conf);
    if (f->path[0])
        unlink(f->path);
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    free(f);
    return 0;
}

static void write_file(fx_t *f, const char *text)
{
    conf_write_file(f->path, "cmtest", text);
}

/* Loads with argv given as a NULL-terminated list after the program name. */
static int load(fx_t *f, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, f);
    int argc = conf_argv(argv, 32, "prog", ap);
    va_end(ap);
    cm_conf_free(&f->conf);
    return cm_conf_load(&f->conf, topts, &f->cfg, "prog", "CMTEST_", argc, argv, f->err,
                        sizeof(f->err));
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
    assert_int_equal(load(f, NULL), 0);
    assert_string_equal(f->err, "");
    assert_string_equal(f->cfg.name, "demo");
    assert_int_equal(f->cfg.count, 10);
    assert_int_equal(f->cfg.rate, 1500);
    assert_int_equal(f->cfg.size, 4096);
    assert_int_equal(f->cfg.wait_ms, 2000);
    assert_false(f->cfg.debug);
    assert_int_equal(f->cfg.mode, 0);
    assert_string_equal(f->cfg.props, "");
    assert_int_equal(cm_conf_source(&f->conf, "app.count"), CM_SRC_DEFAULT);
    assert_int_equal(cm_conf_source(&f->conf, "no.such"), CM_ENOTFOUND);
    assert_int_equal(f->conf.nargs, 0);
}

static void test_precedence(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app\": {\"count\": 20, \"mode\": \"safe\", \"name\": \"file\"},"
                  " \"lim.rate\": 2, \"buf.size\": \"8k\"}");
    setenv("CMTEST_APP_COUNT", "30", 1);
    setenv("CMTEST_LIM_RATE", "3", 1);
    setenv("CMTEST_APP_NAME", "env", 1);
    assert_int_equal(load(f, "--config", f->path, "--app-count", "40", "--app-name=flag", NULL),
                     0);
    /* default only */
    assert_int_equal(f->cfg.wait_ms, 2000);
    assert_int_equal(cm_conf_source(&f->conf, "net.wait"), CM_SRC_DEFAULT);
    /* default < file */
    assert_int_equal(f->cfg.mode, 1);
    assert_int_equal(f->cfg.size, 8192);
    assert_int_equal(cm_conf_source(&f->conf, "buf.size"), CM_SRC_FILE);
    /* file < env */
    assert_int_equal(f->cfg.rate, 3000);
    assert_int_equal(cm_conf_source(&f->conf, "lim.rate"), CM_SRC_ENV);
    /* env < flag, both flag forms */
    assert_int_equal(f->cfg.count, 40);
    assert_int_equal(cm_conf_source(&f->conf, "app.count"), CM_SRC_FLAG);
    assert_string_equal(f->cfg.name, "flag");
    assert_string_equal(f->conf.config_file, f->path);

    char where[256];
    cm_conf_describe_source(&f->conf, cm_conf_find(topts, "lim.rate"), where, sizeof(where));
    assert_string_equal(where, "env CMTEST_LIM_RATE");
    cm_conf_describe_source(&f->conf, cm_conf_find(topts, "app.count"), where, sizeof(where));
    assert_string_equal(where, "flag --app-count");
    cm_conf_describe_source(&f->conf, cm_conf_find(topts, "buf.size"), where, sizeof(where));
    assert_true(strncmp(where, "file /tmp/cmtest-", 17) == 0);

    /* A later flag beats an earlier one. */
    assert_int_equal(load(f, "--app-count", "5", "--set", "app.count=6", NULL), 0);
    assert_int_equal(f->cfg.count, 6);
}

static void test_config_from_env(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app.count\": 77}");
    setenv("CMTEST_CONFIG", f->path, 1);
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(f->cfg.count, 77);
    /* --config beats the variable */
    assert_int_equal(load(f, "--config=/nonexistent/x.json", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "/nonexistent/x.json: cannot open"));
}

static void test_nested_and_flat(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app\": {\"count\": 21}, \"lim.rate\": 2.5, \"net\": {\"wait\": \"1m\"}}");
    assert_int_equal(load(f, "-c", f->path, NULL), 0);
    assert_int_equal(f->cfg.count, 21);
    assert_int_equal(f->cfg.rate, 2500);
    assert_int_equal(f->cfg.wait_ms, 60000);
    unlink(f->path);

    /* the same key written both ways is an error, not a silent pick */
    write_file(f, "{\"app\": {\"count\": 21}, \"app.count\": 22}");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "app.count"));
    assert_non_null(strstr(f->err, "set twice"));
    unlink(f->path);

    /* an object where a scalar belongs, and a scalar for a section */
    write_file(f, "{\"app\": {\"count\": {\"x\": 1}}, \"net\": 5}");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "app.count={\"x\":1}"));
    assert_non_null(strstr(f->err, "must not be an object"));
    assert_non_null(strstr(f->err, "config: net (file "));
    assert_int_equal(lines(f->err), 2);
}

static void test_comments(void **state)
{
    fx_t *f = *state;
    write_file(f, "// leading comment\n"
                  "# hash comment\n"
                  "{\n"
                  "   // indented comment with \"quotes\" and { braces\n"
                  "  \"app.name\": \"a#b//c\",\n"
                  "\t# tab-indented\n"
                  "  \"app.count\": 3\n"
                  "}\n"
                  "// trailing\n");
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_string_equal(f->cfg.name, "a#b//c");
    assert_int_equal(f->cfg.count, 3);
    unlink(f->path);

    /* a comment after a value on the same line is not supported: a parse error with a line */
    write_file(f, "{\n\"app.count\": 3 // no\n}\n");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "line 2"));
}

static void set_ok(fx_t *f, const char *key, const char *val)
{
    int rc = cm_conf_set(&f->conf, key, val, CM_SRC_FLAG, f->err, sizeof(f->err));
    if (rc != 0)
        fail_msg("%s=%s: %s", key, val, f->err);
}

static void set_bad(fx_t *f, const char *key, const char *val, const char *rule)
{
    int rc = cm_conf_set(&f->conf, key, val, CM_SRC_FLAG, f->err, sizeof(f->err));
    if (rc != CM_EINVAL)
        fail_msg("%s=%s accepted", key, val);
    if (!strstr(f->err, rule))
        fail_msg("%s=%s: '%s' lacks '%s'", key, val, f->err, rule);
}

static void test_milli(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    static const struct {
        const char *in;
        uint64_t want;
    } ok[] = {{"2.5", 2500}, {"0.001", 1}, {"0", 0},         {"1.5000", 1500},
              {".5", 500},   {"7.", 7000}, {" 3 ", 3000},    {"1000", 1000000},
              {"0.010", 10}, {"12.34", 12340}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        set_ok(f, "lim.rate", ok[i].in);
        assert_int_equal(f->cfg.rate, ok[i].want);
    }
    set_ok(f, "lim.rate", "2");
    set_bad(f, "lim.rate", "1.0005", "at most 3 decimal places");
    set_bad(f, "lim.rate", "-1", "must be a number >= 0");
    set_bad(f, "lim.rate", "abc", "must be a number >= 0");
    set_bad(f, "lim.rate", "", "must be a number >= 0");
    set_bad(f, "lim.rate", ".", "must be a number >= 0");
    set_bad(f, "lim.rate", "1e3", "must be a number >= 0");
    set_bad(f, "lim.rate", "1000.001", "must be between 0 and 1000");
    set_bad(f, "lim.rate", "99999999999999999999", "must be a number >= 0");
    assert_int_equal(f->cfg.rate, 2000); /* unchanged by every failure */

    char buf[64];
    set_ok(f, "lim.rate", "0.05");
    cm_conf_format(&f->conf, cm_conf_find(topts, "lim.rate"), buf, sizeof(buf));
    assert_string_equal(buf, "0.05");
    set_ok(f, "lim.rate", "12.345");
    cm_conf_format(&f->conf, cm_conf_find(topts, "lim.rate"), buf, sizeof(buf));
    assert_string_equal(buf, "12.345");
}

static void test_size_and_ms(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    static const struct {
        const char *in;
        uint64_t want;
    } sizes[] = {{"4096", 4096}, {"4k", 4096},   {"4K", 4096},         {"512k", 512u << 10},
                 {"1m", 1u << 20}, {"2kb", 2048}, {"1KiB", 1024},      {"300", 300},
                 {"512B", 512}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        set_ok(f, "buf.size", sizes[i].in);
        assert_int_equal(f->cfg.size, sizes[i].want);
    }
    set_bad(f, "buf.size", "4x", "must be a size");
    set_bad(f, "buf.size", "-4k", "must be a size");
    set_bad(f, "buf.size", "k", "must be a size");
    set_bad(f, "buf.size", "99999999999999t", "must be a size");
    set_bad(f, "buf.size", "2m", "must be between 256 and 1m");
    set_bad(f, "buf.size", "255", "must be between 256 and 1m");
    set_bad(f, "buf.size", "1g", "must be between 256 and 1m");

    static const struct {
        const char *in;
        uint64_t want;
    } ms[] = {{"250", 250}, {"250ms", 250}, {"2s", 2000}, {"1m", 60000}, {"1h", 3600000},
              {"0", 0},     {"90s", 90000}};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        set_ok(f, "net.wait", ms[i].in);
        assert_int_equal(f->cfg.wait_ms, ms[i].want);
    }
    set_bad(f, "net.wait", "1.5s", "must be a duration");
    set_bad(f, "net.wait", "2d", "must be a duration");
    set_bad(f, "net.wait", "s", "must be a duration");

    char buf[64];
    set_ok(f, "net.wait", "1500");
    cm_conf_format(&f->conf, cm_conf_find(topts, "net.wait"), buf, sizeof(buf));
    assert_string_equal(buf, "1500ms");
    set_ok(f, "net.wait", "120s");
    cm_conf_format(&f->conf, cm_conf_find(topts, "net.wait"), buf, sizeof(buf));
    assert_string_equal(buf, "2m");
    set_ok(f, "buf.size", "1024k");
    cm_conf_format(&f->conf, cm_conf_find(topts, "buf.size"), buf, sizeof(buf));
    assert_string_equal(buf, "1m");
    set_ok(f, "buf.size", "1000");
    cm_conf_format(&f->conf, cm_conf_find(topts, "buf.size"), buf, sizeof(buf));
    assert_string_equal(buf, "1000");
}

static void test_uint_enum_bool_str(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    set_ok(f, "app.count", "100");
    set_bad(f, "app.count", "101", "must be between 1 and 100");
    set_bad(f, "app.count", "0", "must be between 1 and 100");
    set_bad(f, "app.count", "-1", "must be a whole number >= 0");
    set_bad(f, "app.count", "1.5", "must be a whole number >= 0");
    set_bad(f, "app.count", "12abc", "must be a whole number >= 0");
    assert_int_equal(f->cfg.count, 100);

    set_ok(f, "app.mode", "safe");
    assert_int_equal(f->cfg.mode, 1);
    set_bad(f, "app.mode", "slow", "must be one of: fast, safe");
    assert_int_equal(f->cfg.mode, 1);

    for (int i = 0; i < 2; i++) {
        const char *yes[] = {"true", "on"}, *no[] = {"false", "0"};
        set_ok(f, "app.debug", yes[i]);
        assert_true(f->cfg.debug);
        set_ok(f, "app.debug", no[i]);
        assert_false(f->cfg.debug);
    }
    set_bad(f, "app.debug", "maybe", "must be true or false");

    set_ok(f, "app.name", "fifteen-chars15");
    set_bad(f, "app.name", "sixteen-chars-16", "must be shorter than 16 bytes");
    set_bad(f, "app.name", "box", "must not contain an x"); /* the option's validator */
    set_bad(f, "app.name", "a\tb", "control characters");
    assert_string_equal(f->cfg.name, "fifteen-chars15");
}

static void test_bool_flag(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, "--app-debug", "pos1", NULL), 0);
    assert_true(f->cfg.debug);
    assert_int_equal(f->conf.nargs, 1); /* a bare bool flag takes no value */
    assert_string_equal(f->conf.args[0], "pos1");
    assert_int_equal(load(f, "--app-debug=false", NULL), 0);
    assert_false(f->cfg.debug);
    /* A boolean word after a bare BOOL flag is its value, not a stray argument
     * ("--overload-adaptive false" once left the flag at its default). */
    assert_int_equal(load(f, "--app-debug", "true", "--app-debug", "false", NULL), 0);
    assert_false(f->cfg.debug);
    assert_int_equal(f->conf.nargs, 0);
    assert_int_equal(load(f, "--app-debug", "OFF", "x", NULL), 0);
    assert_false(f->cfg.debug);
    assert_int_equal(f->conf.nargs, 1);
    assert_int_equal(load(f, "--app-debug", "yes", NULL), 0);
    assert_true(f->cfg.debug);
    setenv("CMTEST_APP_DEBUG", "yes", 1);
    assert_int_equal(load(f, NULL), 0);
    assert_true(f->cfg.debug);
}

static void test_kv(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app\": {\"props\": {\"linger.ms\": 5, \"acks\": \"all\", \"x\": true}}}");
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_string_equal(f->cfg.props, "linger.ms=5\nacks=all\nx=true\n");
    assert_int_equal(cm_conf_source(&f->conf, "app.props"), CM_SRC_FILE);

    /* env replaces the file's pairs; a piece without '=' continues the value before it */
    setenv("CMTEST_APP_PROPS", "bootstrap.servers=a:1,b:2, linger.ms = 7", 1);
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_string_equal(f->cfg.props, "bootstrap.servers=a:1,b:2\nlinger.ms=7\n");

    /* the first flag replaces env, later flags append */
    assert_int_equal(load(f, "--app-props", "a=1", "--app-props=b=2,3", NULL), 0);
    assert_string_equal(f->cfg.props, "a=1\nb=2,3\n");
    assert_int_equal(cm_conf_source(&f->conf, "app.props"), CM_SRC_FLAG);

    char buf[256];
    set_ok(f, "app.props", "sasl.password=hunter2,client.id=me");
    cm_conf_format(&f->conf, cm_conf_find(topts, "app.props"), buf, sizeof(buf));
    assert_string_equal(buf, "sasl.password=<set>,client.id=me");
    assert_null(strstr(buf, "hunter2"));

    set_bad(f, "app.props", "noequals", "key=value");
    set_bad(f, "app.props", "=v", "keys must be");
    set_bad(f, "app.props", "bad key=v", "keys must be");
    char big[400];
    memset(big, 'v', sizeof(big) - 1);
    big[0] = 'k';
    big[1] = '=';
    big[sizeof(big) - 1] = '\0';
    set_bad(f, "app.props", big, "shorter than 256");
    unlink(f->path);

    write_file(f, "{\"app.props\": {\"a\": {\"b\": 1}}}");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "values must be strings"));
}

static void test_alias_and_env_names(void **state)
{
    fx_t *f = *state;
    char buf[128];
    const cm_opt_t *o = cm_conf_find(topts, "app.listen");
    assert_int_equal(cm_conf_env_name(o, "CMTEST_", false, buf, sizeof(buf)),
                     strlen("CMTEST_APP_LISTEN"));
    assert_string_equal(buf, "CMTEST_APP_LISTEN");
    cm_conf_env_name(o, "CMTEST_", true, buf, sizeof(buf));
    assert_string_equal(buf, "CMTEST_LISTEN");
    cm_conf_flag_name(o, false, buf, sizeof(buf));
    assert_string_equal(buf, "app-listen");
    cm_conf_flag_name(o, true, buf, sizeof(buf));
    assert_string_equal(buf, "listen");
    assert_int_equal(cm_conf_env_name(cm_conf_find(topts, "app.count"), "CMTEST_", true, buf,
                                      sizeof(buf)),
                     0);

    /* flag alias and full flag */
    assert_int_equal(load(f, "--listen", "1.2.3.4:5", NULL), 0);
    assert_string_equal(f->cfg.listen, "1.2.3.4:5");
    assert_int_equal(load(f, "--app-listen=6.6.6.6:6", NULL), 0);
    assert_string_equal(f->cfg.listen, "6.6.6.6:6");

    /* alias env alone, then both: the key's own variable wins */
    setenv("CMTEST_LISTEN", "alias:1", 1);
    assert_int_equal(load(f, NULL), 0);
    assert_string_equal(f->cfg.listen, "alias:1");
    cm_conf_describe_source(&f->conf, o, buf, sizeof(buf));
    assert_string_equal(buf, "env CMTEST_LISTEN");
    setenv("CMTEST_APP_LISTEN", "own:2", 1);
    assert_int_equal(load(f, NULL), 0);
    assert_string_equal(f->cfg.listen, "own:2");
    /* and a flag beats both */
    assert_int_equal(load(f, "--listen=flag:3", NULL), 0);
    assert_string_equal(f->cfg.listen, "flag:3");
}

static void test_unknown_and_malformed_flags(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, "--app-cont", "5", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: --app-cont (flag): unknown flag"));
    assert_non_null(strstr(f->err, "did you mean --app-count?"));

    assert_int_equal(load(f, "-x", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "-x (flag): unknown flag"));

    assert_int_equal(load(f, "--app-count", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "--app-count (flag): needs a value"));

    assert_int_equal(load(f, "--set", "app.count", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "needs KEY=VALUE"));

    assert_int_equal(load(f, "--set", "app.cont=3", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "app.cont=3 (flag --set): unknown key"));

    /* a value that starts with '-' is still a value */
    assert_int_equal(load(f, "--app-count", "-1", NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "app.count=-1 (flag --app-count): must be a whole number"));
}

static void test_unknown_file_keys(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app\": {\"cont\": 1, \"count\": 2}, \"zzz\": {\"a\": 1}, \"top\": 1}");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: app.cont (file "));
    assert_non_null(strstr(f->err, "unknown key (did you mean app.count?)"));
    assert_non_null(strstr(f->err, "config: zzz (file "));
    assert_non_null(strstr(f->err, "config: top (file "));
    assert_int_equal(lines(f->err), 3);
    assert_int_equal(f->cfg.count, 2); /* the good key still applied */
    unlink(f->path);

    write_file(f, "[1, 2]");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "must hold one JSON object"));
    unlink(f->path);

    write_file(f, "{\"app.count\": 1,\n\n \"app.mode\": }");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "line 3"));
    unlink(f->path);

    write_file(f, "{\"app.count\": null, \"app.debug\": [1]}");
    assert_int_equal(load(f, "--config", f->path, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "app.count=null"));
    assert_non_null(strstr(f->err, "must not be null"));
    assert_non_null(strstr(f->err, "must not be a list"));
}

static void test_all_errors_at_once(void **state)
{
    fx_t *f = *state;
    write_file(f, "{\"app.count\": 500, \"bogus\": 1, \"lim.rate\": 1.0005}");
    setenv("CMTEST_BUF_SIZE", "12q", 1);
    setenv("CMTEST_TOKEN", "sekrit value", 1); /* fine: no validator; shown nowhere */
    setenv("CMTEST_APP_MODE", "slow", 1);
    assert_int_equal(load(f, "--config", f->path, "--net-wait", "forever", "--nope",
                          "--token=x", "--app-name", "xx", NULL),
                     CM_EINVAL);
    const char *want[] = {
        "config: app.count=500 (file ",
        "config: bogus (file ",
        "config: lim.rate=1.0005 (file ",
        "config: buf.size=12q (env CMTEST_BUF_SIZE): must be a size",
        "config: app.mode=slow (env CMTEST_APP_MODE): must be one of: fast, safe",
        "config: net.wait=forever (flag --net-wait): must be a duration",
        "config: --nope (flag): unknown flag",
        "config: app.name=xx (flag --app-name): must not contain an x",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(f->err, want[i]))
            fail_msg("missing '%s' in:\n%s", want[i], f->err);
    assert_int_equal(lines(f->err), (int)(sizeof(want) / sizeof(want[0])));
    /* in source order: file, env, flags */
    assert_true(strstr(f->err, "app.count=500") < strstr(f->err, "buf.size=12q"));
    assert_true(strstr(f->err, "buf.size=12q") < strstr(f->err, "net.wait=forever"));
    assert_string_equal(f->cfg.token, "x");
}

static void test_secret_never_shown(void **state)
{
    fx_t *f = *state;
    /* a secret that fails a rule is not echoed */
    char longtok[64];
    memset(longtok, 's', sizeof(longtok) - 1);
    longtok[sizeof(longtok) - 1] = '\0';
    assert_int_equal(load(f, "--token", longtok, NULL), CM_EINVAL);
    assert_non_null(strstr(f->err, "config: app.token=<set> (flag --token)"));
    assert_null(strstr(f->err, "ssss"));
}

static void test_builtin_flags_and_args(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, "--help", NULL), 0);
    assert_true(f->conf.want_help);
    assert_false(f->conf.want_version);
    assert_int_equal(load(f, "-V", "--check-config", "run", "-", "--", "--app-count", NULL), 0);
    assert_true(f->conf.want_version);
    assert_true(f->conf.want_check);
    assert_false(f->conf.want_help);
    assert_int_equal(f->conf.nargs, 3);
    assert_string_equal(f->conf.args[0], "run");
    assert_string_equal(f->conf.args[1], "-");
    assert_string_equal(f->conf.args[2], "--app-count");
    assert_int_equal(f->cfg.count, 10);
    /* A binary refuses what it does not take, naming each stray word; the
     * message goes after errors already in the buffer. */
    assert_int_equal(cm_conf_check_args(&f->conf, 3, f->err, sizeof(f->err)), 0);
    strcpy(f->err, "earlier\n");
    assert_int_equal(cm_conf_check_args(&f->conf, 1, f->err, sizeof(f->err)), CM_EINVAL);
    assert_non_null(strstr(f->err, "earlier\nconfig: \"-\" (argument): unexpected argument"));
    assert_non_null(strstr(f->err, "\"--app-count\" (argument)"));
    assert_null(strstr(f->err, "\"run\""));
    assert_int_equal(lines(f->err), 3);
    assert_int_equal(load(f, "--app-debug", "bogus", NULL), 0);
    assert_true(f->cfg.debug);
    assert_int_equal(cm_conf_check_args(&f->conf, 0, f->err, sizeof(f->err)), CM_EINVAL);
    assert_non_null(strstr(f->err, "\"bogus\" (argument): unexpected argument (prog takes no"));
    char tiny[8] = "";
    assert_int_equal(cm_conf_check_args(&f->conf, 0, tiny, sizeof(tiny)), CM_EINVAL);
    assert_true(strlen(tiny) < sizeof(tiny));
    /* want_* is set even when there are errors */
    assert_int_equal(load(f, "-h", "--app-count=0", NULL), CM_EINVAL);
    assert_true(f->conf.want_help);
}

static void test_runtime_set(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(cm_conf_set(&f->conf, "lim.rate", "9", CM_SRC_RUNTIME, f->err,
                                 sizeof(f->err)),
                     0);
    assert_int_equal(f->cfg.rate, 9000);
    assert_int_equal(cm_conf_source(&f->conf, "lim.rate"), CM_SRC_RUNTIME);
    assert_int_equal(cm_conf_set(&f->conf, "lim.rate", "-2", CM_SRC_RUNTIME, f->err,
                                 sizeof(f->err)),
                     CM_EINVAL);
    assert_string_equal(f->err, "config: lim.rate=-2 (runtime): must be a number >= 0");
    assert_int_equal(f->cfg.rate, 9000);
    assert_int_equal(cm_conf_set(&f->conf, "app.count", "5", CM_SRC_RUNTIME, f->err,
                                 sizeof(f->err)),
                     CM_EINVAL);
    assert_non_null(strstr(f->err, "cannot be changed at run time"));
    assert_int_equal(f->cfg.count, 10);
    assert_int_equal(cm_conf_set(&f->conf, "nope", "5", CM_SRC_RUNTIME, f->err, sizeof(f->err)),
                     CM_ENOTFOUND);
    assert_non_null(strstr(f->err, "unknown key"));
}

static void test_format_round_trip(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, "--set", "app.props=a=1,b=2", "--app-debug", "--lim.rate", "0.25",
                          NULL),
                     CM_EINVAL); /* --lim.rate is not a flag: dots become dashes */
    assert_int_equal(load(f, "--set", "app.props=a=1,b=2", "--app-debug", "--lim-rate", "0.25",
                          "--app-mode", "safe", NULL),
                     0);
    tcfg_t before = f->cfg;
    for (const cm_opt_t *o = topts; o->key; o++) {
        if (o->flags & CM_OPT_SECRET)
            continue;
        char buf[512];
        cm_conf_format(&f->conf, o, buf, sizeof(buf));
        set_ok(f, o->key, buf);
    }
    assert_memory_equal(&before, &f->cfg, sizeof(before));
}


static void test_print_effective_and_help(void **state)
{
    fx_t *f = *state;
    setenv("CMTEST_TOKEN", "topsecret", 1);
    assert_int_equal(load(f, "--app-count=42", NULL), 0);
    int fd = conf_tmpfd();
    cm_conf_print_effective(&f->conf, fd);
    char *s = conf_read_all(fd);
    close(fd);
    assert_non_null(strstr(s, "app.count = 42  # flag --app-count\n"));
    assert_non_null(strstr(s, "app.token = <set>  # env CMTEST_TOKEN\n"));
    assert_non_null(strstr(s, "lim.rate = 1.5  # default\n"));
    assert_non_null(strstr(s, "app.props = \"\"  # default\n"));
    assert_null(strstr(s, "topsecret"));
    assert_int_equal(lines(s), (int)(sizeof(topts) / sizeof(topts[0]) - 1));
    free(s);

    fd = conf_tmpfd();
    cm_conf_print_help(&f->conf, "Usage: prog [OPTIONS]", fd);
    s = conf_read_all(fd);
    close(fd);
    assert_non_null(strstr(s, "Usage: prog [OPTIONS]\n"));
    assert_non_null(strstr(s, "--listen HOST:PORT"));
    assert_non_null(strstr(s, "default 0.0.0.0:1"));
    /* help wraps its lines under 100 columns: read a wrapped item as one line */
    char *flat = strdup(s);
    size_t k = 0;
    for (size_t j = 0; s[j]; j++) {
        if (s[j] == '\n' && s[j + 1] == ' ') {
            while (s[j + 1] == ' ')
                j++;
            flat[k++] = ' ';
        } else {
            flat[k++] = s[j];
        }
    }
    flat[k] = '\0';
    assert_non_null(strstr(flat, "env CMTEST_LISTEN, CMTEST_APP_LISTEN"));
    free(flat);
    for (const char *l = s; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        assert_true(len < 100);
        l += len + (e != NULL);
    }
    assert_non_null(strstr(s, "--app-mode fast|safe"));
    assert_non_null(strstr(s, "CMTEST_CONFIG"));
    assert_null(strstr(s, "topsecret"));
    /* one line per option */
    for (const cm_opt_t *o = topts; o->key; o++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "[%s;", o->key);
        assert_non_null(strstr(s, needle));
    }
    free(s);
}

static void test_sample_loads(void **state)
{
    fx_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    tcfg_t defaults = f->cfg;
    int fd = conf_tmpfd();
    cm_conf_print_sample(&f->conf, fd);
    char *s = conf_read_all(fd);
    close(fd);
    for (const cm_opt_t *o = topts; o->key; o++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "// %s: %s\n", o->key, o->help);
        assert_non_null(strstr(s, needle));
    }
    /* The header's flat-key example is this table's, at a value it accepts. */
    const char *ex = strstr(s, "// Keys may also be written flat (");
    assert_non_null(ex);
    ex += strlen("// Keys may also be written flat (");
    const char *end = strstr(ex, ").\n");
    assert_non_null(end);
    char flat[256];
    snprintf(flat, sizeof(flat), "{%.*s}\n", (int)(end - ex), ex);
    assert_string_equal(flat, "{\"app.name\": \"demo\"}\n");
    write_file(f, s);
    free(s);
    memset(&f->cfg, 0, sizeof(f->cfg));
    assert_int_equal(load(f, "--config", f->path, NULL), 0);
    assert_memory_equal(&defaults, &f->cfg, sizeof(defaults));
    for (const cm_opt_t *o = topts; o->key; o++)
        assert_int_equal(cm_conf_source(&f->conf, o->key), CM_SRC_FILE);
    write_file(f, flat);
    if (load(f, "--config", f->path, NULL) != 0)
        fail_msg("the sample's flat example %s: %s", flat, f->err);
    assert_int_equal(cm_conf_source(&f->conf, "app.name"), CM_SRC_FILE);
}

static void test_errbuf_bounds(void **state)
{
    fx_t *f = *state;
    char small[80];
    memset(small, 'Z', sizeof(small));
    char *argv[] = {"prog", "--a1", "--a2", "--a3", "--a4", "--a5", "--a6", NULL};
    cm_conf_free(&f->conf);
    assert_int_equal(cm_conf_load(&f->conf, topts, &f->cfg, "prog", "CMTEST_", 7, argv, small,
                                  sizeof(small)),
                     CM_EINVAL);
    assert_true(memchr(small, '\0', sizeof(small)) != NULL);
    assert_non_null(strstr(small, "more errors not shown"));
    /* no errbuf at all is allowed */
    cm_conf_free(&f->conf);
    assert_int_equal(cm_conf_load(&f->conf, topts, &f->cfg, "prog", "CMTEST_", 2, argv, NULL, 0),
                     CM_EINVAL);
    /* cm_conf_report appends without overflowing */
    char rep[100] = "";
    cm_conf_report(&f->conf, "app.count", "must be odd", rep, sizeof(rep));
    assert_string_equal(rep, "config: app.count=10 (default): must be odd\n");
    cm_conf_report(&f->conf, "app.count", "must be odd", rep, sizeof(rep));
    assert_string_equal(rep, "config: app.count=10 (default): must be odd\n"
                             "config: (more errors not shown)\n");
    cm_conf_report(&f->conf, "app.count", "must be odd", rep, sizeof(rep));
    assert_true(strlen(rep) < sizeof(rep));
    cm_conf_free(&f->conf);
    cm_conf_free(&f->conf); /* twice is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_and_flat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_comments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_milli, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_and_ms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uint_enum_bool_str, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias_and_env_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_malformed_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_file_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_errors_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_never_shown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_builtin_flags_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_effective_and_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sample_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errbuf_bounds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
