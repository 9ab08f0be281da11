/*
 * flashgate-settle's probes and metrics (settle/st_http.c): readiness from the
 * worker's counters, the exposition's names and its cut at a whole line, the
 * process start time, and the handler behind a real libmicrohttpd listener on
 * 127.0.0.1 (paths, methods, 503 with the missing part named).
 */
#include "settle/st_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static void test_ready(void **state)
{
    (void)state;
    st_settle_stats_t s;
    memset(&s, 0, sizeof(s));
    const char *why = NULL;
    assert_false(st_http_ready(&s, &why));
    assert_string_equal(why, "kafka");
    atomic_store(&s.broker_up, 1);
    assert_false(st_http_ready(&s, &why));
    assert_string_equal(why, "database");
    atomic_store(&s.sink_up, 1);
    assert_true(st_http_ready(&s, &why));
    assert_null(why);
    atomic_store(&s.broker_up, 0);
    assert_false(st_http_ready(&s, NULL));
}

static void test_metrics_text(void **state)
{
    (void)state;
    st_settle_stats_t s;
    memset(&s, 0, sizeof(s));
    atomic_store(&s.settled, 42);
    atomic_store(&s.batches, 3);
    atomic_store(&s.batch_lat[0], 2);
    atomic_store(&s.batch_lat[ST_BATCH_NBOUNDS], 1);
    atomic_store(&s.lag, 7);
    atomic_store(&s.broker_up, 1);
    atomic_store(&s.sink_up, 1);
    atomic_store(&s.last_commit_ms, 1700000000123);
    char b[8192];
    size_t n = st_http_metrics_text(&s, 1699999999.5, b, sizeof(b));
    assert_int_equal(n, strlen(b));
    assert_non_null(strstr(b, "\nflashgate_settle_settled_total 42\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_batch_duration_seconds_bucket{le=\"0.001\"} 2\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_batch_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_consumer_lag 7\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_kafka_up 1\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_db_up 1\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_ready 1\n"));
    assert_non_null(strstr(b, "\nflashgate_settle_last_commit_timestamp_seconds 1700000000.123\n"));
    assert_non_null(strstr(b, "\nprocess_start_time_seconds 1699999999.500\n"));
    assert_int_equal(b[n - 1], '\n');

    /* too small: cut at the last whole line, never mid-line */
    char small[300];
    size_t m = st_http_metrics_text(&s, 0, small, sizeof(small));
    assert_true(m > 0 && m < sizeof(small));
    assert_int_equal(m, strlen(small));
    assert_int_equal(small[m - 1], '\n');
    assert_memory_equal(small, b, m);
    assert_int_equal(st_http_metrics_text(&s, 0, small, 0), 0);
}

static void test_start_time(void **state)
{
    (void)state;
    double t = st_http_process_start_time();
    double now = (double)time(NULL);
    /* this test process started a moment ago: within the last 10 minutes */
    assert_true(t <= now + 1);
    assert_true(t > now - 600);
}

/*---- the handler behind a real listener ----*/

typedef struct answer {
    int status;
    char text[8192];
} answer_t;

static void http(int port, const char *req, answer_t *a)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(a->text) - 1 && (r = read(fd, a->text + n, sizeof(a->text) - 1 - n)) > 0)
        n += (size_t)r;
    a->text[n] = '\0';
    close(fd);
    a->status = 0;
    sscanf(a->text, "HTTP/1.1 %d", &a->status);
}

static void test_listener(void **state)
{
    (void)state;
    st_settle_stats_t s;
    memset(&s, 0, sizeof(s));
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL, st_http_answer, &s,
        MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&(struct sockaddr_in){.sin_family = AF_INET,
                                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
        MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    int port = info->port;
    answer_t a;
    const char *close_hdr = " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char req[256];

    snprintf(req, sizeof(req), "GET /healthz%s", close_hdr);
    http(port, req, &a);
    assert_int_equal(a.status, 200);

    snprintf(req, sizeof(req), "GET /readyz%s", close_hdr);
    http(port, req, &a);
    assert_int_equal(a.status, 503);
    assert_non_null(strstr(a.text, "\"component\":\"kafka\""));
    atomic_store(&s.broker_up, 1);
    http(port, req, &a);
    assert_int_equal(a.status, 503);
    assert_non_null(strstr(a.text, "\"component\":\"database\""));
    atomic_store(&s.sink_up, 1);
    http(port, req, &a);
    assert_int_equal(a.status, 200);

    snprintf(req, sizeof(req), "GET /metrics%s", close_hdr);
    http(port, req, &a);
    assert_int_equal(a.status, 200);
    assert_non_null(strstr(a.text, "text/plain; version=0.0.4"));
    assert_non_null(strstr(a.text, "\nflashgate_settle_ready 1\n"));
    assert_non_null(strstr(a.text, "\nprocess_start_time_seconds "));

    snprintf(req, sizeof(req), "GET /nope%s", close_hdr);
    http(port, req, &a);
    assert_int_equal(a.status, 404);
    assert_non_null(strstr(a.text, "\"error\":\"not_found\""));

    snprintf(req, sizeof(req), "POST /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               "Content-Length: 3\r\n\r\nabc");
    http(port, req, &a);
    assert_int_equal(a.status, 405);
    assert_non_null(strstr(a.text, "Allow: GET"));
    MHD_stop_daemon(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_start_time),
        cmocka_unit_test(test_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
