/*
 * Eligibility facts of a verified token: identity.eligibility_claims read as
 * booleans into id_result_t.eligible (present and JSON true only),
 * identity.account_created_claim into created_at (0 = unknown), malformed
 * values neither set a bit nor fail the token, the cached answer equals the
 * first, and the claim list's validation and lookup.
 */
#include "identity/id.h"

#include "common/cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#define NOW 1800000000LL

static id_signer_t *es;
static id_verifier_t *v;

static int setup(void **state)
{
    (void)state;
    char err[200];
    es = id_signer_generate("ES256", NULL, err, sizeof(err));
    assert_non_null(es);
    id_jwks_t *ks = id_signer_jwks(es);
    id_config_t c;
    id_config_defaults(&c);
    snprintf(c.eligibility_claims, sizeof(c.eligibility_claims),
             "phone_verified, email_verified,kyc");
    snprintf(c.account_created_claim, sizeof(c.account_created_claim), "created_at");
    v = id_verifier_new(&c, ks, err, sizeof(err));
    id_jwks_unref(ks);
    assert_non_null(v);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    id_verifier_free(v);
    id_signer_free(es);
    return 0;
}

/* Verifies a token of `extra` claims (a JSON object) through c (NULL: no cache). */
static int verify(const char *extra, id_cache_t *c, id_result_t *out)
{
    id_claims_t cl = {.user = "ann", .iat = NOW, .exp = NOW + 600, .extra_json = extra};
    char tok[2048], err[200];
    int n = id_signer_mint(es, &cl, tok, sizeof(tok), err, sizeof(err));
    assert_true(n > 0);
    memset(out, 0x5a, sizeof(*out)); /* nothing left over from before */
    return c ? id_verify_cached(v, c, tok, (size_t)n, NOW, out)
             : id_verify(v, tok, (size_t)n, NOW, out);
}

static void test_bits_and_created_at(void **state)
{
    (void)state;
    id_result_t r;
    assert_int_equal(verify("{\"phone_verified\":true,\"kyc\":true,\"created_at\":1700000000}",
                            NULL, &r),
                     ID_OK);
    assert_int_equal(r.eligible, (1u << 0) | (1u << 2));
    assert_int_equal(r.created_at, 1700000000);
    assert_int_equal(verify("{}", NULL, &r), ID_OK);
    assert_int_equal(r.eligible, 0);
    assert_int_equal(r.created_at, 0);
    /* a claim not in the list is not read */
    assert_int_equal(verify("{\"other\":true,\"email_verified\":true}", NULL, &r), ID_OK);
    assert_int_equal(r.eligible, 1u << 1);
}

static void test_malformed_not_an_error(void **state)
{
    (void)state;
    id_result_t r;
    /* not JSON true: no bit; not a positive integer: unknown; the token verifies */
    static const char *const bad[] = {
        "{\"phone_verified\":\"true\",\"email_verified\":1,\"kyc\":null,\"created_at\":\"1700000000\"}",
        "{\"phone_verified\":false,\"email_verified\":{},\"kyc\":[true],\"created_at\":1.7e9}",
        "{\"phone_verified\":0,\"created_at\":-5}",
        "{\"created_at\":0}",
        "{\"created_at\":true}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(verify(bad[i], NULL, &r), ID_OK);
        assert_int_equal(r.eligible, 0);
        assert_int_equal(r.created_at, 0);
        assert_string_equal(r.user, "ann");
    }
}

static void test_cached_equal(void **state)
{
    (void)state;
    id_cache_t *c = id_cache_new(64);
    id_result_t first, again;
    const char *x = "{\"email_verified\":true,\"kyc\":true,\"created_at\":1600000000}";
    id_claims_t cl = {.user = "bob", .iat = NOW, .exp = NOW + 600, .extra_json = x};
    char tok[2048], err[200];
    int n = id_signer_mint(es, &cl, tok, sizeof(tok), err, sizeof(err));
    assert_true(n > 0);
    assert_int_equal(id_verify_cached(v, c, tok, (size_t)n, NOW, &first), ID_OK);
    assert_false(first.cached);
    memset(&again, 0, sizeof(again));
    assert_int_equal(id_verify_cached(v, c, tok, (size_t)n, NOW + 1, &again), ID_OK);
    assert_true(again.cached);
    assert_int_equal(again.eligible, (1u << 1) | (1u << 2));
    assert_int_equal(again.eligible, first.eligible);
    assert_int_equal(again.created_at, first.created_at);
    assert_int_equal(again.created_at, 1600000000);
    assert_string_equal(again.user, first.user);
    assert_string_equal(again.person, first.person);
    assert_int_equal(again.exp, first.exp);
    /* another token in the same cache keeps its own facts */
    id_result_t other;
    assert_int_equal(verify("{\"phone_verified\":true}", c, &other), ID_OK);
    assert_int_equal(other.eligible, 1u << 0);
    assert_int_equal(other.created_at, 0);
    id_cache_free(c);
}

static void test_config_list(void **state)
{
    (void)state;
    id_config_t c;
    char err[300];
    id_config_defaults(&c);
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    assert_int_equal(id_config_claim_bit(&c, "x", 1), -1);
    snprintf(c.eligibility_claims, sizeof(c.eligibility_claims), "a, b ,c");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    assert_int_equal(id_config_claim_bit(&c, "b", 1), 1);
    assert_int_equal(id_config_claim_bit(&c, "c", 1), 2);
    assert_int_equal(id_config_claim_bit(&c, "ab", 2), -1);
    char name[ID_CLAIM_NAME_MAX + 1];
    assert_true(id_config_claim_name(&c, 0, name));
    assert_string_equal(name, "a");
    assert_false(id_config_claim_name(&c, 3, name));
    snprintf(c.eligibility_claims, sizeof(c.eligibility_claims), "a,b,a");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "identity.eligibility_claims"));
    assert_non_null(strstr(err, "twice"));
    snprintf(c.eligibility_claims, sizeof(c.eligibility_claims), "a,b\"c");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    /* 16 names are fine, 17 are not */
    size_t off = 0;
    for (int i = 0; i < ID_ELIG_MAX; i++)
        off += (size_t)snprintf(c.eligibility_claims + off, sizeof(c.eligibility_claims) - off,
                                "%sc%d", i ? "," : "", i);
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), 0);
    assert_int_equal(id_config_claim_bit(&c, "c15", 3), 15);
    snprintf(c.eligibility_claims + off, sizeof(c.eligibility_claims) - off, ",c16");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "more than 16"));
    c.eligibility_claims[0] = '\0';
    snprintf(c.account_created_claim, sizeof(c.account_created_claim), "has space");
    assert_int_equal(id_config_validate(&c, err, sizeof(err)), CM_EINVAL);
    assert_non_null(strstr(err, "identity.account_created_claim"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bits_and_created_at),
        cmocka_unit_test(test_malformed_not_an_error),
        cmocka_unit_test(test_cached_equal),
        cmocka_unit_test(test_config_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
