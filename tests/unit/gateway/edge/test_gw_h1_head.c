/* The public listener's request parser (gw_h1_head_t) driven directly, as a
 * connection drives it, on the heads the framing rules are about: what it
 * hands the layer above (the known fields, the flags it pauses on) or the
 * error it stops with. No socket. */
#include "gateway/edge/gw_edge.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

typedef struct run {
    char buf[GW_H1_READ_BUF];
    gw_h1_head_t h;
    unsigned heads;
} run_t;

static run_t run;

static bool on_head(gw_h1_head_t *h)
{
    ((run_t *)h->owner)->heads++;
    return false;
}

static void on_body(gw_h1_head_t *h, const char *at, size_t len)
{
    (void)h;
    (void)at;
    (void)len;
}

/* Parses s in one read; returns llhttp's errno (HPE_PAUSED: a message ended). */
static llhttp_errno_t parse(const char *s)
{
    memset(&run, 0, sizeof(run));
    gw_h1_head_init(&run.h, run.buf, &run);
    run.h.on_head = on_head;
    run.h.on_body = on_body;
    size_t n = strlen(s);
    memcpy(run.buf, s, n);
    llhttp_errno_t err = HPE_OK;
    gw_h1_head_execute(&run.h, 0, n, &err);
    return err;
}

static void test_known_fields(void **st)
{
    (void)st;
    parse("POST /v1/sales/s1/orders?x=1 HTTP/1.1\r\nHost: a\r\n"
          "Content-Type: application/json\r\nContent-Length: 2\r\n"
          "Idempotency-Key: k1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n{}");
    assert_int_equal(run.heads, 1);
    assert_true(run.h.head_in);
    assert_string_equal(run.h.url, "/v1/sales/s1/orders");
    assert_string_equal(run.h.known.content_length, "2");
    assert_string_equal(run.h.known.content_type, "application/json");
    assert_string_equal(run.h.known.idem_key, "k1");
    assert_string_equal(run.h.known.xff, "10.0.0.1");
    assert_null(run.h.known.transfer_encoding);
    assert_false(run.h.known.cl_conflict);
    assert_int_equal(run.h.nhost, 1);
}

/* Content-Length beside Transfer-Encoding, and two different lengths: the
 * strict parser stops before the head reaches the layer above, whose own
 * check (gw_http_framing_refused) is the second line. */
static void test_smuggling_frames_stop(void **st)
{
    (void)st;
    llhttp_errno_t e = parse("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_int_not_equal(e, HPE_OK);
    assert_int_not_equal(e, HPE_PAUSED);
    assert_int_equal(run.heads, 0);
    e = parse("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc");
    assert_int_not_equal(e, HPE_OK);
    assert_int_not_equal(e, HPE_PAUSED);
    assert_int_equal(run.heads, 0);
}

/* The strict parser takes no second Content-Length, even an equal one. */
static void test_same_length_twice(void **st)
{
    (void)st;
    llhttp_errno_t e =
        parse("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
    assert_int_equal(e, HPE_UNEXPECTED_CONTENT_LENGTH);
    assert_int_equal(run.heads, 0);
}

static void test_flags_the_edge_pauses_on(void **st)
{
    (void)st;
    /* obs-fold: the parser pauses with the flag, the head never goes up (400) */
    assert_int_equal(parse("GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n"), HPE_PAUSED);
    assert_true(run.h.folded);
    assert_int_equal(run.heads, 0);
    parse("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_int_equal(run.h.nhost, 2);
    /* an empty field name, which llhttp takes: paused with the flag (400) */
    assert_int_equal(parse("GET /x HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n"), HPE_PAUSED);
    assert_true(run.h.bad_name);
    assert_int_equal(run.heads, 0);
    parse("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_true(run.h.bad_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_fields),
        cmocka_unit_test(test_smuggling_frames_stop),
        cmocka_unit_test(test_same_length_twice),
        cmocka_unit_test(test_flags_the_edge_pauses_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
