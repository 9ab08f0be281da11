/*
 * inventory/inv_fleet_redis.c through the transport seam (inv_cluster.h
 * inv_cluster_transport_t), the way the simulator's Redis serves it: the
 * fleet's connection opens without a raw hiredis context, and a pipeline
 * queues its commands and sends them at the read, one call each, in order.
 * The transport here is a fake that answers by the command's name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "common/cm_err.h"
#include "common/cm_url.h"
#include "inventory/inv_cluster.h"
#include "inventory/inv_fleet.h"

typedef struct fake {
    char names[16][16]; /* the commands' names, in the order called */
    size_t n;
    bool fail_second; /* the second call after PING breaks the connection */
} fake_t;

static int opened;

static void *fake_open(void *arg, const char *host, int port, char *errbuf, size_t errlen)
{
    (void)arg, (void)host, (void)port, (void)errbuf, (void)errlen;
    opened++;
    return &opened;
}

static void fake_close(void *arg, void *conn)
{
    (void)arg, (void)conn;
}

static uint64_t fake_now(void *arg)
{
    (void)arg;
    return 1;
}

/* The first argument of a RESP multibulk: "*N\r\n$L\r\nNAME\r\n...". */
static void first_arg(const char *cmd, char *out, size_t cap)
{
    const char *p = strchr(cmd, '$');
    p = p ? strchr(p, '\n') : NULL;
    size_t n = p ? strcspn(p + 1, "\r") : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p ? p + 1 : "", n);
    out[n] = '\0';
}

static int fake_call(void *arg, void *conn, const char *cmd, size_t len, redisReply **out)
{
    (void)conn, (void)len;
    fake_t *f = arg;
    char name[16];
    first_arg(cmd, name, sizeof(name));
    if (f->n < 16)
        memcpy(f->names[f->n++], name, sizeof(name));
    if (f->fail_second && f->n == 3)
        return CM_EBACKEND;
    redisReply *r = calloc(1, sizeof(*r));
    if (strcmp(name, "PING") == 0) {
        r->type = REDIS_REPLY_STATUS;
        r->str = strdup("PONG");
        r->len = 4;
    } else {
        r->type = REDIS_REPLY_INTEGER;
        r->integer = 1;
    }
    *out = r;
    return 0;
}

static inv_cluster_transport_t tr = {
    .open = fake_open, .call = fake_call, .close = fake_close, .now_ms = fake_now, .stepped = true};

static inv_fleet_conn_t *connect_fake(fake_t *f)
{
    memset(f, 0, sizeof(*f));
    tr.arg = f;
    inv_cluster_transport_set(&tr);
    cm_redis_url_t addr;
    char why[256] = "";
    assert_int_equal(cm_redis_url_parse("redis://127.0.0.1:6379", &addr, why, sizeof(why)), 0);
    inv_fleet_conn_t *c = inv_fleet_connect(&addr, 1000, why, sizeof(why));
    if (!c)
        fail_msg("inv_fleet_connect through a transport: %s", why);
    return c;
}

static void test_connect_and_pipeline(void **state)
{
    (void)state;
    fake_t f;
    inv_fleet_conn_t *c = connect_fake(&f);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.names[0], "PING");
    assert_int_equal(inv_fleet_pipe_append(c, "{k}:e", "HSETNX %s %s %s", "{k}:e", "u", "v"), 0);
    assert_int_equal(inv_fleet_pipe_append(c, "{k}:e", "SADD %s %u", "{k}:pushed", 3u), 0);
    assert_int_equal(f.n, 1); /* queued, nothing sent yet */
    size_t errors = 9;
    assert_int_equal(inv_fleet_pipe_read(c, &errors), 0);
    assert_int_equal(errors, 0);
    assert_int_equal(f.n, 3);
    assert_string_equal(f.names[1], "HSETNX");
    assert_string_equal(f.names[2], "SADD");
    assert_false(inv_fleet_broken(c));
    inv_fleet_close(c);
    inv_cluster_transport_set(NULL);
}

/* A transport failure in the middle: the read fails, the connection is broken, and
 * the commands after it are not sent. */
static void test_pipeline_failure(void **state)
{
    (void)state;
    fake_t f;
    inv_fleet_conn_t *c = connect_fake(&f);
    f.fail_second = true;
    for (int i = 0; i < 3; i++)
        assert_int_equal(inv_fleet_pipe_append(c, "{k}:e", "HSETNX %s %d v", "{k}:e", i), 0);
    size_t errors = 0;
    assert_int_equal(inv_fleet_pipe_read(c, &errors), CM_EBACKEND);
    assert_true(inv_fleet_broken(c));
    assert_int_equal(f.n, 3); /* PING, the first, the failed second; not the third */
    inv_fleet_close(c);
    inv_cluster_transport_set(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_and_pipeline),
        cmocka_unit_test(test_pipeline_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
