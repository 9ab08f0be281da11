/*
 * cm_hostport_parse: the one host:port parser. Each case is a form one of the
 * callers must accept or refuse: the gateway's listeners and brokers
 * (CM_HOSTPORT_PORT_ZERO), redis:// seeds (CM_HOSTPORT_PORT_OPTIONAL), the
 * settle worker's metrics listener (CM_HOSTPORT_NUMERIC) and Redis Cluster's
 * MOVED/ASK targets (CM_HOSTPORT_BARE_V6 | CM_HOSTPORT_EMPTY_HOST).
 */
#include "common/cm_addr.h"
#include "common/cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define LISTEN CM_HOSTPORT_PORT_ZERO
#define SEED CM_HOSTPORT_PORT_OPTIONAL
#define METRICS CM_HOSTPORT_NUMERIC
#define REDIRECT (CM_HOSTPORT_BARE_V6 | CM_HOSTPORT_EMPTY_HOST)

typedef struct {
    const char *s;
    unsigned flags;
    const char *host;
    int port; /* -1: the caller's default is kept */
} ok_case_t;

typedef struct {
    const char *s;
    unsigned flags;
    const char *why; /* a substring of the error text */
} bad_case_t;

static void test_accepted(void **state)
{
    (void)state;
    static const ok_case_t ok[] = {
        {"0.0.0.0:8080", LISTEN, "0.0.0.0", 8080},
        {"[::1]:9", LISTEN, "::1", 9},
        {"[::]:8080", LISTEN, "::", 8080},
        {"h:0", LISTEN, "h", 0},
        {"h:65535", LISTEN, "h", 65535},
        {"h:08080", LISTEN, "h", 8080},
        {"kafka-1.example.com:9092", 0, "kafka-1.example.com", 9092},
        {"a.b.:1", 0, "a.b.", 1},
        {"10.0.0.5:6380", SEED, "10.0.0.5", 6380},
        {"localhost", SEED, "localhost", -1},
        {"[::1]:7000", SEED, "::1", 7000},
        {"[::1]", SEED, "::1", -1},
        {"127.0.0.1:9100", METRICS, "127.0.0.1", 9100},
        {"[::1]:9100", METRICS, "::1", 9100},
        {"127.0.0.1:6381", REDIRECT, "127.0.0.1", 6381},
        {"[::1]:7000", REDIRECT, "::1", 7000},
        {"fe80::1:7001", REDIRECT, "fe80::1", 7001},
        {":7005", REDIRECT, "", 7005},
        {"node-3:7000", REDIRECT, "node-3", 7000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char host[256] = "x", err[200] = "";
        int port = -1;
        if (cm_hostport_parse(ok[i].s, ok[i].flags, host, sizeof(host), &port, err, sizeof(err)) != 0)
            fail_msg("'%s' (flags %u) refused: %s", ok[i].s, ok[i].flags, err);
        if (strcmp(host, ok[i].host) != 0 || port != ok[i].port)
            fail_msg("'%s': host '%s' port %d, want '%s' %d", ok[i].s, host, port, ok[i].host,
                     ok[i].port);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const bad_case_t bad[] = {
        /* the port */
        {"h:65536", LISTEN, "bad port"},
        {"h:", LISTEN, "bad port"},
        {"h:8a", LISTEN, "bad port"},
        {"h:-1", LISTEN, "bad port"},
        {"h:+80", SEED, "bad port"},
        {"h: 80", SEED, "bad port"},
        {"h:000080", LISTEN, "bad port"},
        {"h:0", 0, "want 1..65535"},
        {"h:0", SEED, "want 1..65535"},
        {"h:70000", SEED, "bad port"},
        {"h:x", SEED, "bad port"},
        {"h:1:2", SEED, "brackets"},
        {"1.2.3.4:0", REDIRECT, "bad port"},
        {"1.2.3.4:70000", REDIRECT, "bad port"},
        {"1.2.3.4:5x", REDIRECT, "bad port"},
        {"1.2.3.4:5 x", REDIRECT, "bad port"},
        {"127.0.0.1:", METRICS, "bad port"},
        {"127.0.0.1:0", METRICS, "want 1..65535"},
        /* a port is required unless optional */
        {"h", LISTEN, "no port"},
        {"1.2.3.4", REDIRECT, "no port"},
        {"127.0.0.1", METRICS, "no port"},
        {"[::1]", 0, "no port"},
        /* brackets */
        {"[::1]80", LISTEN, "after ']'"},
        {"[::1]junk", SEED, "after ']'"},
        {"[::1", LISTEN, "unclosed"},
        {"[::1", SEED, "unclosed"},
        {"[]:80", LISTEN, "not an IPv6"},
        {"[10.0.0.1]:80", LISTEN, "not an IPv6"},
        {"[x]:7000", REDIRECT, "not an IPv6"},
        {"[]:7000", REDIRECT, "not an IPv6"},
        /* bare IPv6 only where Redis writes it so */
        {"::1:80", LISTEN, "brackets"},
        {"::1:9100", METRICS, "brackets"},
        {"::1", SEED, "brackets"},
        {"fe80::zz:1", REDIRECT, "not an IP"},
        /* the host */
        {":80", LISTEN, "no host"},
        {"", LISTEN, "no"},
        {"", SEED, "no host"},
        {":9100", METRICS, "no host"},
        {"a_b:1", SEED, "not an IP address or host name"},
        {"a b:1", SEED, "not an IP address or host name"},
        {"999.1.1.1:1", LISTEN, "not an IP address or host name"},
        {"1.2.3:1", LISTEN, "not an IP address or host name"},
        {".a:1", LISTEN, "not an IP address or host name"},
        {"-a:1", LISTEN, "not an IP address or host name"},
        {"a..b:1", LISTEN, "not an IP address or host name"},
        {"localhost:9100", METRICS, "no names"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char host[256], err[200] = "";
        int port = 0;
        if (cm_hostport_parse(bad[i].s, bad[i].flags, host, sizeof(host), &port, err, sizeof(err)) !=
            CM_EINVAL)
            fail_msg("'%s' (flags %u) accepted", bad[i].s, bad[i].flags);
        if (!strstr(err, bad[i].why))
            fail_msg("'%s': error '%s' does not say '%s'", bad[i].s, err, bad[i].why);
    }
}

static void test_lengths(void **state)
{
    (void)state;
    char tiny[4], err[200] = "";
    int port = 0;
    assert_int_equal(cm_hostport_parse("abcd:1", 0, tiny, sizeof(tiny), &port, err, sizeof(err)),
                     CM_EINVAL);
    assert_non_null(strstr(err, "too long"));
    assert_int_equal(cm_hostport_parse("abc:1", 0, tiny, sizeof(tiny), &port, err, sizeof(err)), 0);
    assert_string_equal(tiny, "abc");
    assert_int_equal(port, 1);
    assert_int_equal(cm_hostport_parse("abc:2", 0, tiny, sizeof(tiny), NULL, err, sizeof(err)), 0);

    char name[300], host[256];
    memset(name, 'a', 254);
    strcpy(name + 254, ":1");
    assert_int_equal(cm_hostport_parse(name, 0, host, sizeof(host), &port, err, sizeof(err)),
                     CM_EINVAL); /* a DNS name is at most 253 bytes */
    name[253] = '\0';
    assert_true(cm_host_is_valid(name, false));
    memset(name, 'a', 299);
    name[299] = '\0';
    assert_int_equal(cm_hostport_parse(name, SEED, host, sizeof(host), &port, err, sizeof(err)),
                     CM_EINVAL);
}

static void test_host_is_valid(void **state)
{
    (void)state;
    assert_true(cm_host_is_valid("::1", true));
    assert_false(cm_host_is_valid("127.0.0.1", true));
    assert_true(cm_host_is_valid("127.0.0.1", false));
    assert_true(cm_host_is_valid("redis", false));
    assert_false(cm_host_is_valid("", false));
    assert_false(cm_host_is_valid("1234", false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_host_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
