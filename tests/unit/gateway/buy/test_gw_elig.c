/*
 * gw_elig's fleet rules: the longest rule (ID_ELIG_MAX claims of
 * ID_CLAIM_NAME_MAX characters, a ten-year account age) survives a poll
 * (begin/apply/end) and the next; a rule this gateway cannot read keeps the
 * one it has (never unpublished, which would open the sale); a rule gone from
 * the fleet is unpublished. A claim name with ',' (the separator of the
 * fleet's text) is refused at configuration, naming the problem.
 */
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_elig_backend.h"
#include "gateway/buy/gw_fair_internal.h"
#include "gateway/buy/gw_fair_redis.h"

#include "common/cm_err.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "identity/id.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct mini {
    gw_config_t cfg;
    gw_server_t srv;
    gw_fair_t fair; /* only its store choice: one gateway's (gw_elig_open takes it) */
    char dir[64];
} mini_t;

/* The i-th claim name: ID_CLAIM_NAME_MAX characters. */
static void long_name(int i, char *out)
{
    memset(out, 'a' + i, ID_CLAIM_NAME_MAX);
    out[ID_CLAIM_NAME_MAX] = '\0';
}

static void mini_start(mini_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-elig-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cfg.data_dir, sizeof(m->cfg.data_dir), "%s", m->dir);
    snprintf(m->cfg.inventory, sizeof(m->cfg.inventory), "memory");
    m->cfg.id_mode = GW_ID_JWT;
    size_t n = 0;
    for (int i = 0; i < ID_ELIG_MAX; i++) {
        char nm[ID_CLAIM_NAME_MAX + 1];
        long_name(i, nm);
        n += (size_t)snprintf(m->cfg.identity.eligibility_claims + n,
                              sizeof(m->cfg.identity.eligibility_claims) - n, "%s%s", i ? "," : "",
                              nm);
    }
    snprintf(m->cfg.identity.account_created_claim, sizeof(m->cfg.identity.account_created_claim),
             "created");
    m->srv.cfg = &m->cfg;
    m->fair.lot = &gw_fair__lot_local;
    m->srv.fair = &m->fair;
    char why[256] = "";
    assert_int_equal(gw_elig_open(&m->srv, why, sizeof(why)), 0);
}

static void mini_stop(mini_t *m)
{
    gw_elig_close(&m->srv);
    char path[128];
    snprintf(path, sizeof(path), "%s/eligibility.json", m->dir);
    (void)unlink(path);
    (void)rmdir(m->dir);
}

static void poll_one(mini_t *m, const char *field, const char *value)
{
    gw_elig_fleet_begin(&m->srv);
    if (field)
        gw_elig_fleet_apply(&m->srv, field, value);
    gw_elig_fleet_end(&m->srv, true);
}

static void test_longest_rule_survives_polls(void **st)
{
    (void)st;
    mini_t m;
    mini_start(&m);
    char value[2048];
    size_t n = (size_t)snprintf(value, sizeof(value), "3650 ");
    for (int i = 0; i < ID_ELIG_MAX; i++) {
        char nm[ID_CLAIM_NAME_MAX + 1];
        long_name(i, nm);
        n += (size_t)snprintf(value + n, sizeof(value) - n, "%s%s", i ? "," : "", nm);
    }
    for (int round = 0; round < 2; round++) {
        poll_one(&m, GW_FAIR_REDIS_ELIG_PREFIX "s1", value);
        gw_elig_rule_t r;
        assert_true(gw_elig_get(&m.srv, "s1", &r));
        assert_int_equal(r.min_age_days, 3650);
        assert_int_equal(r.n_claims, ID_ELIG_MAX);
        for (int i = 0; i < ID_ELIG_MAX; i++) {
            char nm[ID_CLAIM_NAME_MAX + 1];
            long_name(i, nm);
            assert_string_equal(r.claims[i], nm);
        }
    }
    /* unreadable: too long, a bad name, too many names, a bad number: kept as it is */
    char too_long[2200];
    memset(too_long, 'x', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    memcpy(too_long, "3 ", 2);
    char too_many[2100];
    snprintf(too_many, sizeof(too_many), "%s,q", value);
    const char *bad[] = {too_long, "3 a\"b", too_many, "x y", "99999 a", ""};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        poll_one(&m, GW_FAIR_REDIS_ELIG_PREFIX "s1", bad[b]);
        gw_elig_rule_t r;
        assert_true(gw_elig_get(&m.srv, "s1", &r));
        assert_int_equal(r.n_claims, ID_ELIG_MAX);
        assert_int_equal(r.min_age_days, 3650);
    }
    /* gone from the fleet: gone here */
    poll_one(&m, NULL, NULL);
    gw_elig_rule_t r;
    assert_false(gw_elig_get(&m.srv, "s1", &r));
    mini_stop(&m);
}

static void test_comma_in_claim_refused(void **st)
{
    (void)st;
    mini_t m;
    mini_start(&m);
    json_t *rc = json_pack("{s:b}", "a,b", 1);
    gw_elig_rule_t r;
    char err[256] = "";
    assert_int_equal(gw_elig_parse(&m.srv, "s2", rc, 0, &r, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "\"a,b\" has a ','"));
    json_decref(rc);
    /* a listed name is taken */
    char nm[ID_CLAIM_NAME_MAX + 1];
    long_name(2, nm);
    rc = json_pack("{s:b}", nm, 1);
    assert_int_equal(gw_elig_parse(&m.srv, "s2", rc, 0, &r, err, sizeof(err)), 0);
    assert_int_equal(r.n_claims, 1);
    assert_int_equal(r.bits[0], 2);
    json_decref(rc);
    mini_stop(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_longest_rule_survives_polls),
        cmocka_unit_test(test_comma_in_claim_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
