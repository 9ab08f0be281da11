/*
 * cm_time: RFC 3339 parsing and formatting (sale windows come in as RFC 3339
 * text), and the fake clock seam the rest of the tests depend on.
 */
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void parse_ok(const char *s, int64_t want)
{
    int64_t got = 12345;
    int rc = cm_time_parse_rfc3339(s, &got);
    if (rc != 0)
        fail_msg("'%s' refused (%d)", s, rc);
    if (got != want)
        fail_msg("'%s' -> %lld, want %lld", s, (long long)got, (long long)want);
}

static void test_parse_valid(void **state)
{
    (void)state;
    const int64_t t = 1795341600000; /* 2026-11-22T10:00:00Z */
    parse_ok("2026-11-22T10:00:00Z", t);
    parse_ok("2026-11-22t10:00:00z", t);
    parse_ok("2026-11-22 10:00:00Z", t);
    parse_ok("2026-11-22T18:00:00+08:00", t);
    parse_ok("2026-11-22T04:30:00-05:30", t);
    parse_ok("2026-11-22T10:00:00+00:00", t);
    parse_ok("2026-11-22T10:00:00.123Z", t + 123);
    parse_ok("2026-11-22T10:00:00.1Z", t + 100);
    parse_ok("2026-11-22T10:00:00.12Z", t + 120);
    parse_ok("2026-11-22T10:00:00.123999Z", t + 123); /* truncated, not rounded */
    parse_ok("1970-01-01T00:00:00Z", 0);
    parse_ok("1969-12-31T23:59:59.999Z", -1);
    parse_ok("2000-01-01T00:00:00Z", 946684800000);
    parse_ok("2024-02-29T23:59:59.999Z", 1709251199999); /* leap year */
    parse_ok("2000-02-29T00:00:00Z", 951782400000);      /* divisible by 400 */
    parse_ok("2016-12-31T23:59:60Z", 1483228799000);     /* leap second clamps to :59 */
}

static void test_parse_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2026-11-22",
        "2026-11-22T10:00Z",
        "2026-11-22T10:00:00",        /* no zone */
        "2026-11-22T10:00:00Zjunk",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-11-31T00:00:00Z",
        "2026-11-00T00:00:00Z",
        "2023-02-29T00:00:00Z",       /* not a leap year */
        "1900-02-29T00:00:00Z",       /* divisible by 100 */
        "2026-11-22T24:00:00Z",
        "2026-11-22T10:60:00Z",
        "2026-11-22T10:00:61Z",
        "2026-11-22T10:00:00.Z",
        "2026-11-22T10:00:00+24:00",
        "2026-11-22T10:00:00+08",
        "2026-11-22T10:00:00+0800",
        "26-11-22T10:00:00Z",
        "2026/11/22T10:00:00Z",
        "2026-11-22X10:00:00Z",
        " 2026-11-22T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t out = 777;
        if (cm_time_parse_rfc3339(bad[i], &out) != CM_EINVAL)
            fail_msg("'%s' accepted as %lld", bad[i], (long long)out);
        assert_int_equal(out, 777); /* untouched on error */
    }
    int64_t out;
    assert_int_equal(cm_time_parse_rfc3339(NULL, &out), CM_EINVAL);
}

static void test_format(void **state)
{
    (void)state;
    char buf[40];
    assert_int_equal(cm_time_format_rfc3339(0, buf, sizeof(buf)), 24);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    cm_time_format_rfc3339(1795341600123, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-22T10:00:00.123Z");
    cm_time_format_rfc3339(-1, buf, sizeof(buf));
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    cm_time_format_rfc3339(1709251199999, buf, sizeof(buf));
    assert_string_equal(buf, "2024-02-29T23:59:59.999Z");
    /* a short buffer is truncated, NUL-terminated */
    char small[8];
    cm_time_format_rfc3339(0, small, sizeof(small));
    assert_string_equal(small, "1970-01");
}

static void test_round_trip(void **state)
{
    (void)state;
    /* a spread of instants, including far past/future and odd milliseconds */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = (int64_t)(x % 8000000000000ull) - 1000000000000; /* 1938 .. 2223 */
        char buf[40];
        cm_time_format_rfc3339(ms, buf, sizeof(buf));
        int64_t back = 0;
        if (cm_time_parse_rfc3339(buf, &back) != 0 || back != ms)
            fail_msg("%lld -> %s -> %lld", (long long)ms, buf, (long long)back);
    }
}

static void test_fake_clock(void **state)
{
    (void)state;
    uint64_t a = cm_mono_ns();
    uint64_t b = cm_mono_ns();
    assert_true(b >= a);
    assert_true(cm_wall_ms() > 1700000000000); /* after 2023 */

    cm_time_set_fake(true, 5000000000ull, 1795341600000);
    assert_int_equal(cm_mono_ns(), 5000000000ull);
    assert_int_equal(cm_mono_us(), 5000000ull);
    assert_int_equal(cm_mono_ms(), 5000);
    assert_int_equal(cm_wall_ms(), 1795341600000);
    cm_time_advance_fake(1500000000ull);
    assert_int_equal(cm_mono_ns(), 6500000000ull);
    assert_int_equal(cm_wall_ms(), 1795341601500);
    cm_time_set_fake(false, 0, 0);
    assert_true(cm_mono_ns() >= b);
    assert_true(cm_wall_ms() > 1700000000000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),  cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_format),       cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_fake_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
