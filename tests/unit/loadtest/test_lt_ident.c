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
    int mrc = lt_tokens_mint(&t, &sc, 2, err, sizeof(err));
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
    assert_int_equal(lt_tokens_mint(&t, &sc, 2, err, sizeof(err)), CM_EINVAL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mint_per_account)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
