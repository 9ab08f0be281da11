/*
 * cm_log: logfmt quoting, and whole lines as they arrive on a pipe (one
 * write(2) per line, so concurrent writers never interleave).
 */
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int pfd[2];

static int setup(void **state)
{
    (void)state;
    if (pipe(pfd) != 0)
        return -1;
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    cm_log_set_fd(pfd[1]);
    cm_log_set_level(CM_LOG_DEBUG);
    cm_log_set_format("logfmt");
    cm_time_set_fake(true, 1, 1795341600123); /* 2026-11-22T10:00:00.123Z */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cm_log_set_fd(2);
    cm_log_set_level(CM_LOG_INFO);
    cm_log_set_format("logfmt");
    cm_time_set_fake(false, 0, 0);
    close(pfd[0]);
    close(pfd[1]);
    return 0;
}

/* Reads whatever is in the pipe now (non-blocking). */
static size_t drain(char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(pfd[0], buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static const char *quote(const char *s)
{
    static char buf[256];
    size_t n = cm_log_quote(buf, 0, sizeof(buf), s);
    buf[n] = '\0';
    return buf;
}

static void test_quote(void **state)
{
    (void)state;
    assert_string_equal(quote("abc"), "abc");
    assert_string_equal(quote("a-b_c.d/e:f"), "a-b_c.d/e:f");
    assert_string_equal(quote(""), "\"\"");
    assert_string_equal(quote("a b"), "\"a b\"");
    assert_string_equal(quote("a=b"), "\"a=b\"");
    assert_string_equal(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    assert_string_equal(quote("a\nb"), "\"a\\nb\"");
    assert_string_equal(quote("tab\there"), "\"tab?here\"");
    assert_string_equal(quote("back\\slash q\""), "\"back\\\\slash q\\\"\"");
    assert_string_equal(quote("utf8-\xe7\xa7\x92\xe6\x9d\x80"), "utf8-\xe7\xa7\x92\xe6\x9d\x80");

    /* appends after existing text */
    char buf[32] = "k=";
    size_t n = cm_log_quote(buf, 2, sizeof(buf), "v w");
    buf[n] = '\0';
    assert_string_equal(buf, "k=\"v w\"");

    /* never writes past cap - 1, whatever the input */
    char small[10];
    memset(small, 'Z', sizeof(small));
    n = cm_log_quote(small, 0, 8, "a very long value with spaces");
    assert_true(n <= 7);
    assert_int_equal(small[8], 'Z');
    assert_int_equal(small[9], 'Z');
}

static void test_line_on_pipe(void **state)
{
    (void)state;
    cm_log_info("inv", "redis timeout", "sale=%s elapsed_ms=%d", "s1", 52);
    char buf[8192];
    drain(buf, sizeof(buf));
    assert_string_equal(buf, "ts=2026-11-22T10:00:00.123Z level=info mod=inv "
                             "msg=\"redis timeout\" sale=s1 elapsed_ms=52\n");

    cm_log_warn("gw", "overload", NULL);
    drain(buf, sizeof(buf));
    assert_string_equal(buf, "ts=2026-11-22T10:00:00.123Z level=warn mod=gw msg=overload\n");
}

static void test_level_filter(void **state)
{
    (void)state;
    char buf[8192];
    cm_log_set_level(CM_LOG_WARN);
    cm_log_debug("x", "dropped", NULL);
    cm_log_info("x", "dropped", "n=%d", 1);
    assert_int_equal(drain(buf, sizeof(buf)), 0);
    cm_log_error("x", "kept", NULL);
    drain(buf, sizeof(buf));
    assert_non_null(strstr(buf, "level=error mod=x msg=kept\n"));

    assert_int_equal(cm_log_level_parse("debug"), CM_LOG_DEBUG);
    assert_int_equal(cm_log_level_parse("error"), CM_LOG_ERROR);
    assert_int_equal(cm_log_level_parse("loud"), -1);
    assert_string_equal(cm_log_level_name(CM_LOG_WARN), "warn");
    assert_string_equal(cm_log_level_name((cm_log_level_t)9), "?");
}

static void test_json_format(void **state)
{
    (void)state;
    assert_int_equal(cm_log_set_format("yaml"), CM_EINVAL);
    assert_int_equal(cm_log_set_format("json"), 0);
    cm_log_info("gw", "bad \"request\"\n", "code=%s", "bad_request");
    char buf[8192];
    size_t n = drain(buf, sizeof(buf));
    assert_true(n > 0 && buf[n - 1] == '\n');
    json_error_t err;
    json_t *j = json_loads(buf, 0, &err);
    if (!j)
        fail_msg("not JSON: %s (%s)", buf, err.text);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "mod")), "gw");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad \"request\"\n");
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-11-22T10:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "fields")), "code=bad_request");
    json_decref(j);
}

static void test_long_line_is_one_line(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cm_log_info("t", big, "f=%s", big);
    char buf[16384];
    size_t n = drain(buf, sizeof(buf));
    assert_true(n > 100 && n <= 4096);
    assert_int_equal(buf[n - 1], '\n');
    assert_null(memchr(buf, '\n', n - 1));
}

#define THREADS 4
#define PER_THREAD 300

static void *writer(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < PER_THREAD; i++)
        cm_log_info("thr", "concurrent line", "writer=%ld seq=%d pad=%s", id, i,
                    "................................................................");
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    (void)state;
    /* the reader drains while writers run: the pipe holds far less than all lines */
    fcntl(pfd[0], F_SETFL, 0);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)i), 0);
    size_t cap = 1 << 20, n = 0;
    char *all = malloc(cap);
    int seen[THREADS] = {0};
    int total = 0;
    while (total < THREADS * PER_THREAD) {
        ssize_t r = read(pfd[0], all + n, cap - 1 - n);
        assert_true(r > 0);
        n += (size_t)r;
        total = 0;
        for (size_t i = 0; i < n; i++)
            total += all[i] == '\n';
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    all[n] = '\0';
    int lines = 0;
    for (char *line = all, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        long w;
        int seq;
        if (sscanf(line, "ts=%*s level=info mod=thr msg=\"concurrent line\" writer=%ld seq=%d", &w,
                   &seq) != 2 ||
            w < 0 || w >= THREADS || seq != seen[w])
            fail_msg("garbled or out-of-order line: %s", line);
        if (!strstr(line, "pad=................................................................"))
            fail_msg("truncated line: %s", line);
        seen[w]++;
        lines++;
    }
    assert_int_equal(lines, THREADS * PER_THREAD);
    free(all);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test_setup_teardown(test_line_on_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line_is_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_do_not_interleave, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
