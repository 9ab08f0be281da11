/*
 * The crowd's connection behaviour against a real (small, slow) HTTP server
 * on 127.0.0.1 in a thread of this test: queue mode never opens more than
 * `connections`; open mode opens new ones up to `connections_max` and keeps
 * at most `connections` idle; a person gives up at give_up_ms (a timeout, the
 * connection closed); page views go to noncore.path; a sale with registration
 * has each registering account register once, tried again after a 429.
 */
#include "loadtest/lt_run.h"
#include "loadtest/lt_scenario.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* One thread per connection: read a request, wait delay_ms, answer (202 to a POST, 200 to a GET). */
typedef struct server {
    int lfd;
    int port;
    int delay_ms;
    pthread_t acceptor;
    atomic_int live;      /* connection threads running */
    atomic_int inflight, max_inflight; /* requests read and not yet answered */
    atomic_int gets_page; /* GET of the page path */
    atomic_int posts;
    atomic_int stamped;      /* requests with X-Request-Start: t=... */
    atomic_int stamp_bad;    /* ... whose stamp is not a time of the last 10 s */
    atomic_int stamp_wait_max_ms; /* the longest a stamped request came after its stamp */
    atomic_int puts;         /* the admin's PUT of the sale */
    atomic_int regs, reg_429; /* POST .../registrations; those answered 429 (every other one) */
    atomic_int reg_of[256];  /* per account u1-<n>: registrations answered 201 */
    atomic_int reg_body;     /* registrations that carried a body */
} server_t;

typedef struct sconn {
    server_t *s;
    int fd;
} sconn_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void *conn_main(void *arg)
{
    sconn_t *sc = arg;
    server_t *s = sc->s;
    int fd = sc->fd;
    free(sc);
    char buf[8192];
    size_t len = 0;
    for (;;) {
        char *end = len ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (len == sizeof(buf))
                break;
            ssize_t n = read(fd, buf + len, sizeof(buf) - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            continue;
        }
        size_t head = (size_t)(end - buf) + 4, body = 0;
        char *cl = strcasestr(buf, "Content-Length:");
        if (cl && cl < end)
            body = strtoul(cl + 15, NULL, 10);
        while (len < head + body) {
            ssize_t n = read(fd, buf + len, sizeof(buf) - len);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        char *st = strcasestr(buf, "\r\nX-Request-Start: t=");
        if (st && st < end) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
            double at = strtod(st + 21, NULL), wait_ms = (now - at) * 1000.0;
            atomic_fetch_add(&s->stamped, 1);
            if (wait_ms < -50.0 || wait_ms > 10000.0)
                atomic_fetch_add(&s->stamp_bad, 1);
            int w = (int)wait_ms, prev = atomic_load(&s->stamp_wait_max_ms);
            while (w > prev && !atomic_compare_exchange_weak(&s->stamp_wait_max_ms, &prev, w)) {
            }
        }
        bool post = strncmp(buf, "POST ", 5) == 0;
        const char *line_end = memchr(buf, '\r', head);
        bool reg = post && line_end && memmem(buf, (size_t)(line_end - buf), "/registrations?", 15);
        bool reg_429 = false;
        if (reg) {
            reg_429 = atomic_fetch_add(&s->regs, 1) % 2 == 0;
            if (body)
                atomic_fetch_add(&s->reg_body, 1);
            if (reg_429) {
                atomic_fetch_add(&s->reg_429, 1);
            } else {
                char *u = strstr(buf, "user_id=u1-");
                unsigned long n = u ? strtoul(u + 11, NULL, 10) : 1000;
                if (n < 256)
                    atomic_fetch_add(&s->reg_of[n], 1);
            }
        } else if (post)
            atomic_fetch_add(&s->posts, 1);
        else if (strncmp(buf, "PUT ", 4) == 0)
            atomic_fetch_add(&s->puts, 1);
        else if (strncmp(buf, "GET /v1/page/x ", 15) == 0)
            atomic_fetch_add(&s->gets_page, 1);
        /* requests in flight, not connections: a connection the client closed may keep its
         * thread a moment after the client opened the next one */
        int now = atomic_fetch_add(&s->inflight, 1) + 1;
        int prev = atomic_load(&s->max_inflight);
        while (now > prev && !atomic_compare_exchange_weak(&s->max_inflight, &prev, now)) {
        }
        sleep_ms(s->delay_ms);
        atomic_fetch_sub(&s->inflight, 1);
        static const char ok202[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 2\r\n\r\n{}";
        static const char ok200[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npage";
        static const char r201[] = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        static const char r429[] = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\n"
                                   "Content-Length: 2\r\n\r\n{}";
        const char *a = reg ? (reg_429 ? r429 : r201) : post ? ok202 : ok200;
        if (send(fd, a, strlen(a), MSG_NOSIGNAL) < 0) /* the client may have given up */
            break;
        memmove(buf, buf + head + body, len - head - body);
        len -= head + body;
    }
out:
    close(fd);
    atomic_fetch_sub(&s->live, 1);
    return NULL;
}

static void *accept_main(void *arg)
{
    server_t *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            return NULL; /* the listener was shut down */
        atomic_fetch_add(&s->live, 1);
        sconn_t *c = malloc(sizeof(*c));
        assert_non_null(c);
        c->s = s;
        c->fd = fd;
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, conn_main, c), 0);
        pthread_detach(t);
    }
}

static void server_start(server_t *s, int delay_ms)
{
    memset(s, 0, sizeof(*s));
    s->delay_ms = delay_ms;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 1024), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->acceptor, NULL, accept_main, s), 0);
}

static void server_stop(server_t *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->lfd);
    /* the client closed every connection; give their threads time to see it */
    for (int i = 0; i < 500 && atomic_load(&s->live) > 0; i++)
        sleep_ms(10);
    assert_int_equal(atomic_load(&s->live), 0);
}

/* A scenario of n arrivals at rate/s against the server, no sale, no retries, no polls. */
static void scenario(lt_scenario_t *sc, const server_t *s, const char *extra, double rate,
                     double secs)
{
    char json[2048], eb[256] = "";
    snprintf(json, sizeof(json),
             "{\"targets\":[\"http://127.0.0.1:%d\"],\"sale\":{\"create\":false,"
             "\"start_offset_s\":0},\"duration_s\":%g,\"drain_s\":10,"
             "\"crowd\":{\"users\":100000},\"behaviour\":{\"max_retries\":0,\"poll_max\":0},"
             "\"request_timeout_ms\":20000%s,"
             "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":%g,\"rate\":%g}]}",
             s->port, secs, extra, secs, rate);
    if (lt_scenario_parse(sc, json, eb, sizeof(eb)) != 0)
        fail_msg("%s: %s", json, eb);
}

static uint64_t answered(const lt_results_t *res)
{
    uint64_t n = 0;
    for (int a = 0; a < LT_ANS_N; a++)
        n += res->answers[a];
    return n;
}

/* Queue mode: the pool never grows past `connections`, whatever waits. */
static void test_queue_mode_keeps_its_pool(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 20);
    lt_scenario_t sc;
    /* 400/s for 0.25 s against 20 ms answers wants ~8 connections; 3 are allowed */
    scenario(&sc, &s, ",\"connections\":3", 400, 0.25);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.answers[LT_ANS_A202], res.arrivals);
    assert_true(res.arrivals > 40);
    assert_true(res.max_open <= 3);
    assert_true(atomic_load(&s.max_inflight) <= 3);
    assert_int_equal(res.idle_closed, 0);
    assert_int_equal(res.gave_up, 0);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/*
 * request_start: every request says when it was due (X-Request-Start, as a
 * balancer that queued it), so the stamps of those that waited in the pool's
 * queue are older than their send. Without it, no request carries one.
 */
static void test_request_start_stamps(void **state)
{
    (void)state;
    for (int on = 0; on < 2; on++) {
        server_t s;
        server_start(&s, 20);
        lt_scenario_t sc;
        scenario(&sc, &s, on ? ",\"connections\":3,\"request_start\":true" : ",\"connections\":3",
                 400, 0.25);
        assert_int_equal(sc.request_start, on);
        lt_results_t res;
        char eb[256];
        assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
        server_stop(&s);
        assert_int_equal(res.answers[LT_ANS_A202], res.arrivals);
        assert_int_equal((uint64_t)atomic_load(&s.stamped), on ? res.arrivals : 0);
        assert_int_equal(atomic_load(&s.stamp_bad), 0);
        /* ~100 arrivals against 3 connections of 20 ms: the last ones wait a few
         * hundred ms in the pool's queue, and their stamps say so */
        if (on)
            assert_true(atomic_load(&s.stamp_wait_max_ms) >= 100);
        /* From the send, the pool's queue is left out: each answer took the
         * server's 20 ms at least, and no more than from its scheduled time.
         * The k-th request sent cannot go before floor(k/3) x 20 ms while it was
         * due at k x 2.5 ms: over ~100 of them the waits left out add up to
         * ~20 s, far past the 5 s asked here. */
        assert_int_equal(res.buy_sent.count, res.buy_all.count);
        assert_true(res.buy_sent.min_us >= 20000);
        assert_true(res.buy_sent.max_us <= res.buy_all.max_us);
        assert_true(res.buy_all.sum_us - res.buy_sent.sum_us >= 5e6);
        lt_results_free(&res);
        lt_scenario_free(&sc);
    }
}

/* Open mode: new connections on demand up to the cap; at most `connections` stay idle. */
static void test_open_mode_opens_up_to_the_cap(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 60);
    lt_scenario_t sc;
    /* 400/s against 60 ms answers wants ~24 connections at once: capped at 12 */
    scenario(&sc, &s, ",\"connections\":2,\"connection_mode\":\"open\",\"connections_max\":12",
             400, 0.25);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.answers[LT_ANS_A202], res.arrivals);
    assert_int_equal(res.max_open, 12); /* it grew to the cap, and not past it */
    assert_true(atomic_load(&s.max_inflight) <= 12);
    assert_true(atomic_load(&s.max_inflight) > 2);
    /* when the crowd thinned out, connections beyond the 2 idle ones were closed */
    assert_true(res.idle_closed >= 10);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/* A person gives up at give_up_ms: counted as a timeout, its connection closed. */
static void test_give_up_closes_the_connection(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 700);
    lt_scenario_t sc;
    scenario(&sc, &s,
             ",\"connections\":4,\"connection_mode\":\"open\",\"connections_max\":64,"
             "\"give_up_ms\":100",
             40, 0.3);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    assert_true(res.arrivals > 3);
    /* every request given up before the server answered (it would have been a 202 at
     * 700 ms), and not before its deadline */
    assert_int_equal(res.answers[LT_ANS_TIMEOUT], res.arrivals);
    assert_int_equal(res.gave_up, res.arrivals);
    assert_int_equal(answered(&res), res.arrivals);
    assert_true(res.hist[LT_ANS_TIMEOUT].min_us >= 100000);
    /* every abandoned request took its connection with it: none was reused */
    assert_int_equal(res.connects, res.arrivals);
    server_stop(&s);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/* In queue mode too: a request still waiting for the pool is abandoned at its deadline. */
static void test_give_up_while_queued(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 700);
    lt_scenario_t sc;
    scenario(&sc, &s, ",\"connections\":1,\"give_up_ms\":100", 40, 0.3);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.answers[LT_ANS_TIMEOUT], res.arrivals);
    assert_int_equal(res.gave_up, res.arrivals);
    assert_true(res.hist[LT_ANS_TIMEOUT].min_us >= 100000);
    assert_true(res.max_open <= 1);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/* Page views: a share of the crowd GETs noncore.path, counted apart from buys. */
static void test_page_views(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 0);
    lt_scenario_t sc;
    scenario(&sc, &s, ",\"noncore\":{\"share\":0.7,\"path\":\"/v1/page/x\"}", 800, 0.25);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.page_sent + res.sent_buy, res.arrivals);
    assert_int_equal(res.page_answers[LT_PAGE_OK], res.page_sent);
    assert_int_equal((uint64_t)atomic_load(&s.gets_page), res.page_sent);
    assert_int_equal((uint64_t)atomic_load(&s.posts), res.sent_buy);
    assert_int_equal(res.answers[LT_ANS_A202], res.sent_buy);
    /* about 70% (200 arrivals: 0.7 +- 0.15 holds far beyond 4 sigma) */
    double share = (double)res.page_sent / (double)res.arrivals;
    assert_true(share > 0.55 && share < 0.85);
    assert_int_equal(res.page_hist[LT_PAGE_OK].count, res.page_sent);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/*
 * Many requests back to back on one keep-alive connection to a server that
 * answers at once: an answer is often read before libuv has run the write
 * callback of its request, and the next request must not reuse that write.
 */
static void test_back_to_back_on_one_connection(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 0);
    lt_scenario_t sc;
    scenario(&sc, &s, ",\"connections\":1", 4000, 0.5);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.answers[LT_ANS_A202], res.arrivals);
    assert_int_equal((uint64_t)atomic_load(&s.posts), res.arrivals);
    assert_int_equal(res.connects, 1);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/*
 * warm_connections: the pool is open before the first arrival (a CDN edge's is
 * when the sale opens), so a crowd that never needs more opens nothing during
 * the run; the run's connects count only what the run itself opened.
 */
static void test_warm_pool_before_the_first_arrival(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 0);
    lt_scenario_t sc;
    scenario(&sc, &s,
             ",\"connections\":8,\"connection_mode\":\"open\",\"connections_max\":64,"
             "\"warm_connections\":8",
             80, 0.25);
    lt_results_t res;
    char eb[256];
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_true(res.arrivals > 3);
    assert_int_equal(res.answers[LT_ANS_A202], res.arrivals);
    assert_int_equal(res.warm_open, 8);
    assert_int_equal(res.connects, 0);
    assert_int_equal(res.max_open, 8);
    lt_results_free(&res);
    lt_scenario_free(&sc);

    /* the same crowd cold: its first request opens a connection */
    server_start(&s, 0);
    scenario(&sc, &s, ",\"connections\":8,\"connection_mode\":\"open\",\"connections_max\":64",
             80, 0.25);
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(res.warm_open, 0);
    assert_true(res.connects >= 1);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

/*
 * loops: the crowd dealt over three loops (threads) gives the run one loop
 * gives: the same arrivals, every one answered once, merged counts that agree
 * with each other, and each loop on connections of its own.
 */
static void test_loops_deal_the_crowd(void **state)
{
    (void)state;
    const char *page = ",\"noncore\":{\"share\":0.3,\"path\":\"/v1/page/x\"}";
    char extra[256];
    server_t s;
    lt_scenario_t sc;
    lt_results_t one, three;
    char eb[256];
    server_start(&s, 0);
    snprintf(extra, sizeof(extra), ",\"connections\":3%s", page);
    scenario(&sc, &s, extra, 1200, 0.5);
    assert_int_equal(lt_run(&sc, true, &one, eb, sizeof(eb)), 0);
    server_stop(&s);
    lt_scenario_free(&sc);

    server_start(&s, 0);
    snprintf(extra, sizeof(extra), ",\"connections\":3,\"loops\":3%s", page);
    scenario(&sc, &s, extra, 1200, 0.5);
    assert_int_equal(sc.loops, 3);
    assert_int_equal(lt_run(&sc, true, &three, eb, sizeof(eb)), 0);
    server_stop(&s);

    assert_true(three.arrivals > 400);
    assert_int_equal(three.arrivals, one.arrivals); /* one schedule, dealt */
    assert_int_equal(three.sent_buy, one.sent_buy); /* the same users buy */
    assert_int_equal(three.page_sent + three.sent_buy, three.arrivals);
    assert_int_equal(three.answers[LT_ANS_A202], three.sent_buy);
    assert_int_equal(three.page_answers[LT_PAGE_OK], three.page_sent);
    assert_int_equal((uint64_t)atomic_load(&s.posts), three.sent_buy);
    assert_int_equal((uint64_t)atomic_load(&s.gets_page), three.page_sent);
    assert_int_equal(three.buy_all.count, three.sent_buy);
    assert_int_equal(three.send_lag.count, three.arrivals);
    uint64_t fine = 0, secs = 0;
    for (size_t i = 0; i < three.n_fine; i++)
        fine += three.fine[i].n;
    for (size_t i = 0; i < three.n_secs; i++)
        secs += three.secs[i].counts[LT_ANS_A202];
    assert_int_equal(fine, three.sent_buy);
    assert_int_equal(secs, three.sent_buy);
    /* one connection per loop: each loop opened its own, none more */
    assert_int_equal(three.connects, 3);
    assert_true(three.max_open <= 3);
    /* the crowd classes, counted by each loop over its own users */
    uint64_t tried = 0;
    for (int c = 0; c < LT_CLASS_N; c++) {
        assert_int_equal(three.class_users[c], one.class_users[c]);
        tried += three.class_tried[c];
    }
    assert_int_equal(tried, three.sent_buy);
    lt_results_free(&one);
    lt_results_free(&three);
    lt_scenario_free(&sc);
}

/*
 * Registration: the sale is PUT with its window, every account of a
 * registering person (about half of them here) registers once, over both
 * loops, and one answered 429 tries again until it is registered; the
 * accounts of the others never register. Every other registration the server
 * gets is answered 429 (Retry-After: 0).
 */
static void test_registration(void **state)
{
    (void)state;
    server_t s;
    server_start(&s, 0);
    lt_scenario_t sc;
    char json[2048], eb[256] = "";
    snprintf(json, sizeof(json),
             "{\"targets\":[\"http://127.0.0.1:%d\"],\"admin\":\"http://127.0.0.1:%d\","
             "\"sale\":{\"start_offset_s\":1,\"fair_window_ms\":1000,\"fair_early_ms\":200,"
             "\"registration\":{\"opens_s\":0,\"closes_s\":0.8,\"share\":{\"people\":0.5}}},"
             "\"duration_s\":1.2,\"drain_s\":5,\"connections\":4,\"loops\":2,"
             "\"crowd\":{\"users\":200},\"behaviour\":{\"max_retries\":0,\"poll_max\":0},"
             "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":1.2,\"rate\":150}]}",
             s.port, s.port);
    if (lt_scenario_parse(&sc, json, eb, sizeof(eb)) != 0)
        fail_msg("%s: %s", json, eb);
    lt_results_t res;
    assert_int_equal(lt_run(&sc, true, &res, eb, sizeof(eb)), 0);
    server_stop(&s);
    assert_int_equal(atomic_load(&s.puts), 1);
    uint64_t registered = 0;
    for (int i = 0; i < 200; i++) {
        assert_true(atomic_load(&s.reg_of[i]) <= 1); /* once each */
        registered += (uint64_t)atomic_load(&s.reg_of[i]);
    }
    fprintf(stderr, "%llu of 200 registered, %d tries answered 429\n",
            (unsigned long long)registered, atomic_load(&s.reg_429));
    assert_true(registered > 60 && registered < 140); /* a share of 0.5 */
    assert_int_equal(res.reg_new, registered);
    assert_int_equal(res.reg_failed + res.reg_refused + res.reg_again, 0);
    assert_true(atomic_load(&s.reg_429) > 0);
    assert_int_equal(res.reg_sent, registered + (uint64_t)atomic_load(&s.reg_429));
    assert_int_equal((uint64_t)atomic_load(&s.regs), res.reg_sent);
    assert_int_equal(atomic_load(&s.reg_body), 0);
    assert_int_equal(res.class_registered[LT_CLASS_PERSON], registered);
    assert_int_equal(res.class_person_registered[LT_CLASS_PERSON], registered);
    /* buys are counted apart from registrations */
    assert_int_equal((uint64_t)atomic_load(&s.posts), res.sent_buy);
    lt_results_free(&res);
    lt_scenario_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_mode_keeps_its_pool),
        cmocka_unit_test(test_request_start_stamps),
        cmocka_unit_test(test_open_mode_opens_up_to_the_cap),
        cmocka_unit_test(test_give_up_closes_the_connection),
        cmocka_unit_test(test_give_up_while_queued),
        cmocka_unit_test(test_page_views),
        cmocka_unit_test(test_back_to_back_on_one_connection),
        cmocka_unit_test(test_warm_pool_before_the_first_arrival),
        cmocka_unit_test(test_loops_deal_the_crowd),
        cmocka_unit_test(test_registration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
