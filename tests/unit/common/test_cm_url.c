/* cm_redis_url_parse: the one parser of redis:// addresses. */
#include "common/cm_err.h"
#include "common/cm_url.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_full(void **state)
{
    (void)state;
    cm_redis_url_t u;
    char err[200] = "";
    assert_int_equal(cm_redis_url_parse("redis://bob:s3cr:et@10.0.0.5:6380/3?pool=4&timeout_ms=9", &u,
                                        err, sizeof(err)),
                     0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.pass, "s3cr:et");
    assert_string_equal(u.host, "10.0.0.5");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.query, "pool=4&timeout_ms=9");
}

static void test_defaults_and_v6(void **state)
{
    (void)state;
    setenv("FLASHGATE_REDIS_PASSWORD", "ignored", 1); /* no side channel: never read */
    cm_redis_url_t u;
    char err[200] = "";
    assert_int_equal(cm_redis_url_parse("redis://localhost", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.pass, "");
    assert_string_equal(u.query, "");
    assert_int_equal(cm_redis_url_parse("redis://[::1]:7000/1", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 1);
    assert_int_equal(cm_redis_url_parse("redis://:pw@h", &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "pw");
    assert_int_equal(cm_redis_url_parse("redis://h", &u, err, sizeof(err)), 0);
    assert_string_equal(u.pass, "");
    assert_int_equal(cm_redis_url_default_password(&u, "fromconfig"), 0);
    assert_string_equal(u.pass, "fromconfig");
    assert_int_equal(cm_redis_url_parse("redis://:url@h", &u, err, sizeof(err)), 0);
    assert_int_equal(cm_redis_url_default_password(&u, "fromconfig"), 0);
    assert_string_equal(u.pass, "url"); /* the URL wins */
    unsetenv("FLASHGATE_REDIS_PASSWORD");
}

static void test_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "rediss://h",      "http://h",       "redis://",       "redis://h:0",
        "redis://h:70000", "redis://h:x",    "redis://h/db",   "redis://[::1",
        "redis://pw@h",    "redis://h/70000", "redis://h:1:2",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cm_redis_url_t u;
        char err[200] = "";
        if (cm_redis_url_parse(bad[i], &u, err, sizeof(err)) != CM_EINVAL)
            fail_msg("accepted %s", bad[i]);
        if (strncmp(err, "redis url: ", 11) != 0)
            fail_msg("no reason for %s: '%s'", bad[i], err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults_and_v6),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
