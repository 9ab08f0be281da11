/*
 * gw_identity: the order owner table, which lets a verified buyer read their
 * own order without its status token. It answers true only for the user put
 * last for that order id, never for another user, never for an id it was not
 * given; a slot reused by a later order forgets the earlier one (never hands
 * it to the later order's buyer); with identity off it keeps nothing. The
 * routes that fill and read it run in tests/integration/43-identity-bind.py.
 */
#include "gateway/buy/gw_identity.h"

#include "common/cm_id.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

typedef struct mini {
    gw_config_t cfg;
    gw_server_t srv;
} mini_t;

/* Header mode: no keys to load, the owner table as in jwt mode. */
static void mini_start(mini_t *m, int mode)
{
    memset(m, 0, sizeof(*m));
    m->cfg.id_mode = mode;
    m->cfg.orders_max_known = 1000;
    snprintf(m->cfg.listen, sizeof(m->cfg.listen), "127.0.0.1:0");
    snprintf(m->cfg.id_header, sizeof(m->cfg.id_header), "X-User");
    m->srv.cfg = &m->cfg;
    m->srv.pool.nworkers = 1;
    char why[256] = "";
    assert_int_equal(gw_identity_start(&m->srv, why, sizeof(why)), 0);
}

static void oid(uint64_t n, char *out)
{
    cm_id_format(n, out);
}

static void test_owner_only_its_buyer(void **st)
{
    (void)st;
    mini_t m;
    mini_start(&m, GW_ID_HEADER);
    char a[CM_ID_TEXT_LEN + 1], b[CM_ID_TEXT_LEN + 1];
    oid(1000001, a);
    oid(1000002, b);
    gw_identity_order_put(&m.srv, a, "alice");
    assert_true(gw_identity_order_owner(&m.srv, a, "alice"));
    assert_false(gw_identity_order_owner(&m.srv, a, "mallory"));
    assert_false(gw_identity_order_owner(&m.srv, a, "alic"));
    assert_false(gw_identity_order_owner(&m.srv, b, "alice")); /* never put */
    assert_false(gw_identity_order_owner(&m.srv, "not-an-id", "alice"));
    assert_false(gw_identity_order_owner(&m.srv, "", "alice"));
    /* the same order recorded again (a replay, the Kafka consumer): the same buyer */
    gw_identity_order_put(&m.srv, a, "alice");
    assert_true(gw_identity_order_owner(&m.srv, a, "alice"));
    gw_identity_stop(&m.srv);
}

/* More orders than slots: each answers for its own buyer or for nobody. */
static void test_owner_slots_reused(void **st)
{
    (void)st;
    mini_t m;
    mini_start(&m, GW_ID_HEADER);
    enum { N = 20000 };
    char id[CM_ID_TEXT_LEN + 1], user[16];
    for (uint64_t i = 1; i <= N; i++) {
        oid(i * 7919, id);
        snprintf(user, sizeof(user), "u%llu", (unsigned long long)(i % 13));
        gw_identity_order_put(&m.srv, id, user);
    }
    unsigned kept = 0;
    for (uint64_t i = 1; i <= N; i++) {
        oid(i * 7919, id);
        snprintf(user, sizeof(user), "u%llu", (unsigned long long)(i % 13));
        kept += gw_identity_order_owner(&m.srv, id, user);
        for (unsigned o = 1; o < 13; o++) {
            snprintf(user, sizeof(user), "u%llu", (unsigned long long)((i + o) % 13));
            assert_false(gw_identity_order_owner(&m.srv, id, user));
        }
    }
    assert_true(kept > 0 && kept < N); /* 1,024 slots: the later orders' buyers kept */
    oid((uint64_t)N * 7919, id);
    snprintf(user, sizeof(user), "u%d", N % 13);
    assert_true(gw_identity_order_owner(&m.srv, id, user)); /* the last put is kept */
    gw_identity_stop(&m.srv);
}

static void test_identity_off_keeps_nothing(void **st)
{
    (void)st;
    mini_t m;
    mini_start(&m, GW_ID_NONE);
    assert_false(gw_identity_on(&m.srv));
    char a[CM_ID_TEXT_LEN + 1];
    oid(1000001, a);
    gw_identity_order_put(&m.srv, a, "alice");
    assert_false(gw_identity_order_owner(&m.srv, a, "alice"));
    gw_identity_stop(&m.srv);
    /* before gw_identity_start and after gw_identity_stop: no table, no crash */
    gw_identity_order_put(&m.srv, a, "alice");
    assert_false(gw_identity_order_owner(&m.srv, a, "alice"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_only_its_buyer),
        cmocka_unit_test(test_owner_slots_reused),
        cmocka_unit_test(test_identity_off_keeps_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
