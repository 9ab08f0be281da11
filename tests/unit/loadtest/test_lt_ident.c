/*
 * flashgate-load's minted identities: one token per account, each verifying
 * as that account's user id under the gateway's rules; the scenario's
 * identity section; a bad key refused with a sentence.
 */
#include "common/cm_err.h"
#include "identity/id.h"
#include "loadtest/lt_ident.h"
#include "loadtest/lt_scenario.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static void test_mint_per_account(void **state)
{
    (void)state;
    char dir[] = "/tmp/fg-lti-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[300];
    id_signer_t *s = id_keys_ensure(dir, true, err, sizeof(err));
    assert_non_null(s);
    lt_scenario_t sc;
    char json[512];
    snprintf(json, sizeof(json),
             "{\"seed\":7,\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},\"crowd\":{\"users\":3000},\"identity\":{\"key\":\"%s/%s\","
             "\"audience\":\"shop\"},"
             "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}",
             dir, ID_KEY_FILE);
    int prc = lt_scenario_parse(&sc, json, err, sizeof(err));
    if (prc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(prc, 0);
    assert_non_null(sc.identity_key);
    assert_string_equal(sc.identity_audience, "shop");
    lt_tokens_t t;
    int mrc = lt_tokens_mint(&t, &sc, NULL, 2, err, sizeof(err));
    if (mrc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(mrc, 0);
    assert_int_equal(t.n, 3000);
    fprintf(stderr, "minted 3000 tokens in %.3f s\n", t.mint_s);
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.audience, sizeof(c.audience), "shop");
    id_jwks_t *ks = id_signer_jwks(s);
    id_verifier_t *v = id_verifier_new(&c, ks, err, sizeof(err));
    assert_non_null(v);
    int64_t now = (int64_t)time(NULL);
    for (uint64_t u = 0; u < 3000; u += 7) {
        const char *tok = lt_tokens_get(&t, u);
        id_result_t r;
        assert_int_equal(id_verify(v, tok, strlen(tok), now, &r), ID_OK);
        char uid[64];
        lt_user_id(7, u, uid, sizeof(uid));
        assert_string_equal(r.user, uid);
    }
    assert_string_equal(lt_tokens_get(&t, 2999) + 0, lt_tokens_get(&t, 2999));
    lt_tokens_free(&t);
    /* a key others may read is refused with the reason */
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, ID_KEY_FILE);
    chmod(path, 0644);
    assert_int_equal(lt_tokens_mint(&t, &sc, NULL, 2, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "chmod 600"));
    lt_scenario_free(&sc);
    /* unknown members of the section are named */
    assert_int_not_equal(lt_scenario_parse(&sc, "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},\"identity\":{\"keyfile\":\"x\"},\"arrivals\":[{\"kind\":\"plateau\","
                                           "\"duration_s\":2,\"rate\":10}]}", err,
                                           sizeof(err)), 0);
    assert_non_null(strstr(err, "identity"));
    lt_scenario_free(&sc);
    id_verifier_free(v);
    id_jwks_unref(ks);
    id_signer_free(s);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Who is who: people one account and one person each; each operator's accounts
 * split evenly over its persons, mixed among the crowd's by a seeded shuffle. */
static void test_crowd_persons(void **state)
{
    (void)state;
    lt_scenario_t sc;
    char err[300];
    const char *json = "{\"seed\":3,\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},"
                       "\"crowd\":{\"users\":900,\"operators\":100,\"accounts_per_operator\":20,"
                       "\"persons_per_operator\":2,\"operator_addresses\":10},"
                       "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}";
    assert_int_equal(lt_scenario_parse(&sc, json, err, sizeof(err)), 0);
    assert_int_equal(lt_scenario_accounts(&sc), 2900);
    assert_int_equal(lt_scenario_persons(&sc), 1100);
    uint32_t p[2900], again[2900];
    lt_crowd_persons(&sc, p);
    lt_crowd_persons(&sc, again);
    assert_memory_equal(p, again, sizeof(p)); /* seeded */
    uint32_t held[1100] = {0};
    uint32_t next_single = 0, op_in_first_half = 0;
    for (int u = 0; u < 2900; u++) {
        assert_true(p[u] < 1100);
        held[p[u]]++;
        if (p[u] < 900)
            assert_int_equal(p[u], next_single++); /* people in account order */
        else if (u < 1450)
            op_in_first_half++;
    }
    for (int k = 0; k < 900; k++)
        assert_int_equal(held[k], 1);
    for (int k = 900; k < 1100; k++)
        assert_int_equal(held[k], 10); /* 20 accounts over 2 persons */
    /* mixed, not all at the end: about half of the 2,000 in the first half */
    assert_in_range(op_in_first_half, 850, 1150);
    lt_scenario_free(&sc);
    /* errors name the field */
    const char *bad[][2] = {
        {"\"persons_per_operator\":3,\"accounts_per_operator\":2,\"operators\":1",
         "crowd.persons_per_operator: at most accounts_per_operator (2)"},
        {"\"operators\":-1", "crowd.operators: must be an integer between 0 and 1000000"},
        {"\"accounts_per_operator\":0", "crowd.accounts_per_operator: must be an integer between 1"},
        {"\"operators\":1000,\"operator_addresses\":2000",
         "crowd.operator_addresses: at most 1000000 proxy addresses in all"},
        {"\"operator\":3", "crowd.operator: unknown field"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char j[512];
        snprintf(j, sizeof(j),
                 "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},\"crowd\":{%s},"
                 "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}",
                 bad[i][0]);
        assert_int_equal(lt_scenario_parse(&sc, j, err, sizeof(err)), CM_EINVAL);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: got \"%s\"", bad[i][1], err);
        lt_scenario_free(&sc);
    }
    assert_int_equal(lt_scenario_parse(&sc, "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},"
                                           "\"identity\":{\"person_claim\":\"a b\"},\"arrivals\":[{\"kind\":"
                                           "\"plateau\",\"duration_s\":2,\"rate\":10}]}",
                                           err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "identity.person_claim"));
    lt_scenario_free(&sc);
}

/* Every account's token carries its person in the configured claim, and the
 * gateway's verifier reads it as the person (two accounts of one person: one id). */
static void test_mint_person_claim(void **state)
{
    (void)state;
    char dir[] = "/tmp/fg-ltp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[300];
    id_signer_t *s = id_keys_ensure(dir, true, err, sizeof(err));
    assert_non_null(s);
    lt_scenario_t sc;
    char json[640];
    snprintf(json, sizeof(json),
             "{\"seed\":5,\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},"
             "\"crowd\":{\"users\":30,\"operators\":2,\"accounts_per_operator\":6,"
             "\"persons_per_operator\":2},\"identity\":{\"key\":\"%s/%s\",\"person_claim\":\"phone_hash\"},"
             "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}",
             dir, ID_KEY_FILE);
    assert_int_equal(lt_scenario_parse(&sc, json, err, sizeof(err)), 0);
    uint32_t persons[42];
    lt_crowd_persons(&sc, persons);
    lt_tokens_t t;
    assert_int_equal(lt_tokens_mint(&t, &sc, persons, 1, err, sizeof(err)), 0);
    assert_int_equal(t.n, 42);
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.person_claim, sizeof(c.person_claim), "phone_hash");
    id_jwks_t *ks = id_signer_jwks(s);
    id_verifier_t *v = id_verifier_new(&c, ks, err, sizeof(err));
    assert_non_null(v);
    int64_t now = (int64_t)time(NULL);
    uint32_t per_person[34] = {0};
    for (uint64_t u = 0; u < 42; u++) {
        const char *tok = lt_tokens_get(&t, u);
        id_result_t r;
        assert_int_equal(id_verify(v, tok, strlen(tok), now, &r), ID_OK);
        char uid[64], pid[64];
        lt_user_id(5, u, uid, sizeof(uid));
        lt_person_id(5, persons[u], pid, sizeof(pid));
        assert_string_equal(r.user, uid);
        assert_string_equal(r.person, pid);
        per_person[persons[u]]++;
    }
    for (int k = 30; k < 34; k++)
        assert_int_equal(per_person[k], 3); /* 6 accounts over 2 persons, 2 operators */
    lt_tokens_free(&t);
    lt_scenario_free(&sc);
    id_verifier_free(v);
    id_jwks_unref(ks);
    id_signer_free(s);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mint_per_account),
                                       cmocka_unit_test(test_crowd_persons),
                                       cmocka_unit_test(test_mint_person_claim)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
