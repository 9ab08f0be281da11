/* gw_limit: scope order, refunds, verdict fields, runtime changes, share, eviction, memory. */
#include "gateway/base/gw_limit.h"

#include "common/cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define SEC 1000000000ull
#define T0 (1000 * SEC)

static cm_rate_policy_t pol(uint64_t rate_milli, uint64_t burst)
{
    return (cm_rate_policy_t){.rate_milli = rate_milli, .burst = burst};
}

static bool admit(gw_limits_t *l, const char *u, const char *ip, const char *sale, uint64_t now,
                  gw_limit_verdict_t *v)
{
    gw_limit_verdict_t tmp;
    gw_limit_verdict_t *out = v ? v : &tmp;
    gw_limits_admit(l, u, u ? strlen(u) : 0, ip, ip ? strlen(ip) : 0, sale,
                    sale ? strlen(sale) : 0, now, out);
    return out->allowed;
}

static int setup(void **state)
{
    *state = gw_limits_new(10000);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    gw_limits_free(*state);
    return 0;
}

static void test_all_off_allows(void **state)
{
    gw_limits_t *l = *state;
    gw_limit_verdict_t v;
    for (int i = 0; i < 1000; i++)
        assert_true(admit(l, "u1", "1.2.3.4", "s1", T0, &v));
    assert_int_equal(v.policy.rate_milli, 0);
    assert_int_equal(v.remaining, UINT64_MAX);
    assert_string_equal(gw_scope_name(GW_SCOPE_IP), "ip");
    assert_string_equal(gw_scope_name(GW_SCOPE_GLOBAL), "global");
}

static void test_user_limit_exact(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_USER, pol(3000, 5)); /* 3/s, burst 5 */
    uint64_t n = 0;
    for (uint64_t t = T0; t <= T0 + 1000 * SEC; t += SEC / 100)
        while (admit(l, "alice", NULL, NULL, t, NULL))
            n++;
    assert_int_equal(n, 3000 + 5);
    /* Another user has a bucket of their own. */
    assert_true(admit(l, "bob", NULL, NULL, T0 + 1000 * SEC, NULL));
}

/* Subnet scope: keys are the binary IP keys of gw_client_key (4 bytes IPv4,
 * 8 bytes of an IPv6 /64); addresses of one /24 (IPv6 /48) share a bucket. */
static bool admit_ip(gw_limits_t *l, const char *u, const uint8_t *ip, size_t iplen,
                     gw_limit_verdict_t *v)
{
    gw_limits_admit(l, u, strlen(u), (const char *)ip, iplen, "s1", 2, T0, v);
    return v->allowed;
}

/* gw_limits_prefetch_user's memo of the user's hash is for that user and
 * that limiter only: another user (same length), or the same one on another
 * limiter, gets its own bucket. */
static void test_prefetch_memo(void **state)
{
    gw_limits_t *l = *state;
    gw_limit_verdict_t v;
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 1)); /* one at once */
    gw_limits_prefetch_user(l, "alice", 5);
    assert_true(admit(l, "alice", NULL, "s1", T0, &v));
    gw_limits_prefetch_user(l, "alice", 5);
    assert_false(admit(l, "alice", NULL, "s1", T0, &v)); /* her bucket, memoised */
    assert_true(admit(l, "alicf", NULL, "s1", T0, &v)); /* not hers: the memo is alice's */
    /* another limiter hashes with its own key: bob's memo from l is not his hash there */
    gw_limits_t *l2 = gw_limits_new(10000);
    gw_limits_set(l2, GW_SCOPE_USER, pol(1, 1));
    gw_limits_prefetch_user(l2, "bob", 3);
    assert_true(admit(l2, "bob", NULL, "s1", T0, &v));
    gw_limits_prefetch_user(l, "bob", 3);
    assert_false(admit(l2, "bob", NULL, "s1", T0, &v)); /* l's hash would find a fresh slot */
    gw_limits_free(l2);
}

static void test_subnet_scope(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_IP, pol(1000, 3));     /* an address: 3 at once */
    gw_limits_set(l, GW_SCOPE_SUBNET, pol(1000, 5)); /* its /24: 5 at once */
    gw_limit_verdict_t v;
    uint8_t a[4] = {198, 18, 7, 1}, b[4] = {198, 18, 7, 2}, c[4] = {198, 18, 8, 1};
    for (int i = 0; i < 3; i++)
        assert_true(admit_ip(l, "u", a, 4, &v));
    assert_false(admit_ip(l, "u", a, 4, &v));
    assert_int_equal(v.scope, GW_SCOPE_IP); /* the address first */
    assert_true(admit_ip(l, "u", b, 4, &v));
    assert_true(admit_ip(l, "u", b, 4, &v));
    assert_false(admit_ip(l, "u", b, 4, &v)); /* b has tokens; the /24 has none */
    assert_int_equal(v.scope, GW_SCOPE_SUBNET);
    assert_string_equal(gw_scope_name(v.scope), "subnet");
    assert_true(admit_ip(l, "u", c, 4, &v)); /* another /24 */
    /* IPv6: /64 keys of 8 bytes; the subnet is their /48 */
    uint8_t x[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 1}, y[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2},
            z[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 1};
    for (int i = 0; i < 3; i++)
        assert_true(admit_ip(l, "u", x, 8, &v));
    assert_true(admit_ip(l, "u", y, 8, &v));
    assert_true(admit_ip(l, "u", y, 8, &v));
    assert_false(admit_ip(l, "u", y, 8, &v));
    assert_int_equal(v.scope, GW_SCOPE_SUBNET);
    assert_true(admit_ip(l, "u", z, 8, &v));
    /* off by default: rate 0 */
    gw_limits_set(l, GW_SCOPE_SUBNET, pol(0, 0));
    assert_true(admit_ip(l, "u", (const uint8_t[4]){198, 18, 7, 9}, 4, &v));
}

/* The identity split of the buy path: the address's scopes alone (no user, sale or
 * global token taken), then the rest without the address (the global token once). */
static void test_admit_ip_then_user(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_IP, pol(1000, 2));
    gw_limits_set(l, GW_SCOPE_SUBNET, pol(1000, 3));
    gw_limits_set(l, GW_SCOPE_USER, pol(1000, 1));
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(1000, 2));
    gw_limit_verdict_t v;
    const uint8_t a[4] = {198, 18, 9, 1}, b[4] = {198, 18, 9, 2};
    gw_limits_admit_ip(l, (const char *)a, 4, T0, &v);
    assert_true(v.allowed);
    gw_limits_admit_ip(l, (const char *)a, 4, T0, &v);
    assert_true(v.allowed); /* the global bucket (2) was not touched by these */
    gw_limits_admit_ip(l, (const char *)a, 4, T0, &v);
    assert_false(v.allowed);
    assert_int_equal(v.scope, GW_SCOPE_IP);
    gw_limits_admit_ip(l, (const char *)b, 4, T0, &v);
    assert_true(v.allowed); /* the /24's third token (a's refusal took none) */
    gw_limits_admit_ip(l, (const char *)b, 4, T0, &v);
    assert_false(v.allowed);
    assert_int_equal(v.scope, GW_SCOPE_SUBNET);
    /* the second half: the user and the global, never the address */
    assert_true(admit(l, "u1", NULL, "s1", T0, &v));
    assert_false(admit(l, "u1", NULL, "s1", T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_USER);
    assert_true(admit(l, "u2", NULL, "s1", T0, &v));
    assert_false(admit(l, "u3", NULL, "s1", T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_GLOBAL); /* 2 global tokens: u1 and u2 */
}

static void test_refusal_fields_and_order(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_USER, pol(1000, 2));
    gw_limits_set(l, GW_SCOPE_IP, pol(2000, 3));
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(1000000, 1000));
    gw_limit_verdict_t v;
    assert_true(admit(l, "u", "10.0.0.1", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_USER); /* tightest: user has 1 left, IP 2 */
    assert_int_equal(v.remaining, 1);
    assert_int_equal(v.reset_ns, SEC);
    assert_true(admit(l, "u", "10.0.0.1", NULL, T0, &v));
    assert_false(admit(l, "u", "10.0.0.1", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_USER);
    assert_int_equal(v.policy.rate_milli, 1000);
    assert_int_equal(v.policy.burst, 2);
    assert_int_equal(v.remaining, 0);
    assert_int_equal(v.retry_after_ns, SEC);
    assert_int_equal(v.reset_ns, 2 * SEC);
    /* A second user on the same IP: IP has one token left, then refuses. */
    assert_true(admit(l, "w", "10.0.0.1", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_IP);
    assert_int_equal(v.remaining, 0);
    assert_false(admit(l, "x", "10.0.0.1", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_IP);
    assert_int_equal(v.retry_after_ns, SEC / 2);
    /* The refused request took nothing from user "x": it still has its whole burst. */
    gw_limits_set(l, GW_SCOPE_IP, pol(0, 0));
    assert_true(admit(l, "x", "10.0.0.1", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_USER);
    assert_int_equal(v.remaining, 1);
    /* Empty keys skip their scope. */
    assert_true(admit(l, "", "", NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_GLOBAL);
}

static void test_refund_on_global_refusal(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 3));
    gw_limits_set(l, GW_SCOPE_IP, pol(1, 3));
    gw_limits_set(l, GW_SCOPE_SALE, pol(1, 3));
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(1, 1));
    gw_limit_verdict_t v;
    assert_true(admit(l, "u", "ip", "sale", T0, &v));
    for (int i = 0; i < 10; i++) {
        assert_false(admit(l, "u", "ip", "sale", T0, &v));
        assert_int_equal(v.scope, GW_SCOPE_GLOBAL);
    }
    /* Lift the global limit: user, IP and sale each still hold 2 of 3. */
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(0, 0));
    assert_true(admit(l, "u", "ip", "sale", T0, &v));
    assert_int_equal(v.remaining, 1);
    assert_true(admit(l, "u", "ip", "sale", T0, &v));
    assert_int_equal(v.remaining, 0);
    assert_false(admit(l, "u", "ip", "sale", T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_USER);
    /* Sale refusal refunds user and IP. */
    assert_true(admit(l, "u2", "ip2", "sale2", T0, &v));
    assert_true(admit(l, "u3", "ip3", "sale2", T0, &v));
    assert_true(admit(l, "u4", "ip4", "sale2", T0, &v));
    assert_false(admit(l, "u5", "ip5", "sale2", T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_SALE);
    gw_limits_set(l, GW_SCOPE_SALE, pol(0, 0));
    for (int i = 0; i < 3; i++)
        assert_true(admit(l, "u5", "ip5", "sale2", T0, &v));
    assert_false(admit(l, "u5", "ip5", "sale2", T0, &v));
}

static void test_runtime_change_keeps_tokens(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 10));
    gw_limit_verdict_t v;
    for (int i = 0; i < 4; i++)
        assert_true(admit(l, "k", NULL, NULL, T0, &v));
    assert_int_equal(v.remaining, 6);
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 100)); /* larger: tokens kept, not reset */
    assert_int_equal(gw_limits_get(l, GW_SCOPE_USER).burst, 100);
    assert_true(admit(l, "k", NULL, NULL, T0, &v));
    assert_int_equal(v.remaining, 5);
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 3)); /* smaller: clamped */
    assert_true(admit(l, "k", NULL, NULL, T0, &v));
    assert_int_equal(v.remaining, 2);
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(1, 4));
    for (int i = 0; i < 3; i++)
        assert_true(admit(l, NULL, NULL, NULL, T0, &v));
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(5, 40));
    assert_true(admit(l, NULL, NULL, NULL, T0, &v));
    assert_int_equal(v.remaining, 0);
    assert_false(admit(l, NULL, NULL, NULL, T0, &v));
    assert_int_equal(v.policy.rate_milli, 5);
    /* Burst 0 with a rate means 1; a rate of 0 switches the scope off. */
    gw_limits_set(l, GW_SCOPE_SALE, pol(1000, 0));
    assert_int_equal(gw_limits_get(l, GW_SCOPE_SALE).burst, 1);
    /* A scope switched off keeps its burst, for when its rate is turned on
     * again (PATCH {"sale_rps":5} alone), and refuses nothing meanwhile. */
    gw_limits_set(l, GW_SCOPE_SALE, pol(0, 1000));
    assert_int_equal(gw_limits_get(l, GW_SCOPE_SALE).rate_milli, 0);
    assert_int_equal(gw_limits_get(l, GW_SCOPE_SALE).burst, 1000);
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(0, 10000));
    for (int i = 0; i < 50; i++)
        assert_true(admit(l, NULL, NULL, "s-off", T0, &v));
}

static void test_share(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(10000, 10)); /* 10/s, burst 10 */
    gw_limits_set(l, GW_SCOPE_SALE, pol(7000, 5));
    gw_limits_set(l, GW_SCOPE_USER, pol(10000, 10));
    gw_limits_set_share(l, 3);
    gw_limit_verdict_t v;
    assert_true(admit(l, NULL, NULL, NULL, T0, &v));
    assert_int_equal(v.policy.rate_milli, 3334); /* ceil(10000 / 3) */
    assert_int_equal(v.policy.burst, 4);         /* ceil(10 / 3) */
    assert_true(admit(l, NULL, NULL, "s", T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_SALE); /* sale 2 left (burst ceil(5/3)=2, minus 1) */
    assert_int_equal(v.policy.rate_milli, 2334);
    assert_int_equal(v.policy.burst, 2);
    assert_int_equal(gw_limits_get(l, GW_SCOPE_GLOBAL).rate_milli, 10000); /* as set */
    gw_limits_set_share(l, 100);
    /* Global burst now 1: the 2 tokens left are clamped to 1, then used up. */
    assert_true(admit(l, "u", NULL, NULL, T0, &v));
    assert_false(admit(l, "u", NULL, NULL, T0, &v));
    assert_int_equal(v.scope, GW_SCOPE_GLOBAL);
    assert_int_equal(v.policy.burst, 1);
    assert_int_equal(v.policy.rate_milli, 100);
    gw_limits_set_share(l, 1);
    assert_true(admit(l, "u", NULL, NULL, T0 + SEC, &v));
    /* User scope is never divided. */
    assert_int_equal(v.scope, GW_SCOPE_USER);
    assert_int_equal(v.policy.rate_milli, 10000);
}

static void test_high_rate_global(void **state)
{
    gw_limits_t *l = *state;
    gw_limits_set(l, GW_SCOPE_GLOBAL, pol(100000ull * 1000, 100));
    uint64_t n = 0;
    for (uint64_t t = T0; t <= T0 + SEC; t += 10000)
        while (admit(l, NULL, NULL, "s", t, NULL))
            n++;
    assert_int_equal(n, 100000 + 100);
}

/* Table at its cap: busy keys are evicted LRU, idle ones reclaimed first. */
static void test_eviction(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(256); /* 1 key per shard, 2 slots */
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_USER, pol(1000, 2)); /* 1/s */
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    assert_int_equal(st.capacity, 256);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "user-%d", i);
        assert_true(admit(l, k, NULL, NULL, T0 + (uint64_t)i, NULL)); /* new buckets start full */
    }
    gw_limits_stats(l, &st);
    assert_true(st.keys <= st.capacity);
    assert_true(st.keys >= st.capacity * 3 / 4);
    assert_int_equal(st.keys + st.evicted_idle + st.evicted_busy, 5000);
    assert_true(st.evicted_busy > 0);
    assert_int_equal(st.evicted_idle, 0); /* nothing had time to refill */
    /* Two seconds later every bucket is full again: reclaiming is lossless. */
    uint64_t busy = st.evicted_busy;
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "later-%d", i);
        assert_true(admit(l, k, NULL, NULL, T0 + 3 * SEC + (uint64_t)i, NULL));
    }
    gw_limits_stats(l, &st);
    assert_int_equal(st.keys + st.evicted_idle + st.evicted_busy, 6000);
    assert_true(st.evicted_idle > 0);
    /* Some "later" keys land in the same window as each other and are busy. */
    assert_true(st.evicted_busy - busy < 1000);
    gw_limits_free(l);
}

static void test_lru_keeps_hot_key(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(256 * 3); /* 3 keys per shard, 4 slots, window 4 */
    assert_non_null(l);
    gw_limits_set(l, GW_SCOPE_USER, pol(1, 3)); /* 0.001/s: no refill to speak of */
    uint64_t t = T0;
    for (int i = 0; i < 3; i++)
        assert_true(admit(l, "hot", NULL, NULL, t++, NULL));
    assert_false(admit(l, "hot", NULL, NULL, t++, NULL));
    char k[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "cold-%d", i);
        assert_true(admit(l, k, NULL, NULL, t++, NULL));
        /* Were "hot" ever evicted, it would come back with a full bucket. */
        assert_false(admit(l, "hot", NULL, NULL, t++, NULL));
    }
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    assert_true(st.evicted_busy > 10000);
    gw_limits_free(l);
}

/* 10 million tracked keys in under 1 GiB, really allocated. */
static void test_ten_million_keys_memory(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(10000000);
    assert_non_null(l);
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    assert_true(st.capacity >= 10000000);
    assert_true(st.bytes < (1ull << 30));
    /* Within 1% of the documented per-key cost. */
    assert_true(st.bytes <= 10000000ull * GW_LIMIT_BYTES_PER_KEY * 101 / 100);
    printf("# max_keys=10000000 bytes=%llu (%.1f MiB, %.2f B/key)\n",
           (unsigned long long)st.bytes, st.bytes / 1048576.0, st.bytes / 1e7);
    gw_limits_set(l, GW_SCOPE_USER, pol(1000, 1));
    gw_limits_set(l, GW_SCOPE_IP, pol(1000, 1));
    char k[32];
    /* Each new key touches a fresh page somewhere in the table: keep the count
     * modest so that TSan's shadow mapping stays cheap. */
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "u%d", i);
        assert_true(admit(l, k, k, NULL, T0, NULL));
        assert_false(admit(l, k, NULL, NULL, T0, NULL));
    }
    gw_limits_stats(l, &st);
    assert_int_equal(st.keys, 10000);
    assert_int_equal(st.evicted_busy + st.evicted_idle, 0);
    gw_limits_free(l);
}

static uint64_t rule_sets(gw_limits_t *l)
{
    gw_limits_stats_t st;
    gw_limits_stats(l, &st);
    return st.rule_sets;
}

static void set_rule(gw_limits_t *l, uint64_t sale_rate_milli)
{
    gw_rule_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.sale_id, sizeof(r.sale_id), "s1");
    r.sale = pol(sale_rate_milli, 3);
    assert_int_equal(gw_limits_set_rules(l, &r, 1), 0);
}

/*
 * Replaced rule sets are freed once every declared reader has passed a
 * quiescent point since the replacement, and not before: a reader that has
 * not holds back every set replaced since its last one (it may still be
 * reading any of them); an offline reader holds back none.
 */
static void test_rule_sets_grace_period(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    assert_int_equal(gw_limits_set_readers(l, 2), 0);
    assert_int_equal(gw_limits_set_readers(l, 3), CM_EINVAL); /* once */
    assert_int_equal(rule_sets(l), 0);
    set_rule(l, 1000);
    assert_int_equal(rule_sets(l), 1);
    set_rule(l, 2000); /* the first set retired: neither reader has passed a point */
    assert_int_equal(rule_sets(l), 2);
    gw_limits_quiescent(l, 0);
    assert_int_equal(rule_sets(l), 2); /* reader 1 may still hold it */
    gw_limits_quiescent(l, 1);
    assert_int_equal(rule_sets(l), 1);
    /* Reader 0 passes a point between two changes, reader 1 none: all wait for 1. */
    set_rule(l, 3000);
    gw_limits_quiescent(l, 0);
    set_rule(l, 4000);
    set_rule(l, 5000);
    assert_int_equal(rule_sets(l), 4);
    gw_limits_quiescent(l, 1); /* reader 0 has not seen the last two changes */
    assert_int_equal(rule_sets(l), 3);
    gw_limits_quiescent(l, 0);
    assert_int_equal(rule_sets(l), 1);
    /* An offline reader holds nothing back; out-of-range readers are ignored. */
    gw_limits_reader_offline(l, 0);
    gw_limits_quiescent(l, 7);
    gw_limits_reader_offline(l, 7);
    set_rule(l, 6000);
    assert_int_equal(rule_sets(l), 2);
    gw_limits_quiescent(l, 1);
    assert_int_equal(rule_sets(l), 1);
    /* The set in force is the last one written. */
    gw_limit_verdict_t v;
    for (int i = 0; i < 3; i++)
        assert_true(admit(l, "u", NULL, "s1", T0, &v));
    assert_false(admit(l, "u", NULL, "s1", T0, &v));
    assert_true(v.by_rule);
    assert_int_equal(v.policy.rate_milli, 6000);
    gw_limits_free(l);
}

/* Memory does not grow with the number of rule changes: 10,000 edits with the
 * readers passing their points leave at most the set in force and the one
 * replaced last; without declared readers, every set is kept (as before). */
static void test_rule_sets_do_not_grow(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    assert_int_equal(gw_limits_set_readers(l, 2), 0);
    uint64_t most = 0;
    for (int i = 0; i < 10000; i++) {
        set_rule(l, 1000 + (uint64_t)i);
        uint64_t n = rule_sets(l);
        most = n > most ? n : most;
        gw_limit_verdict_t v;
        admit(l, "u", NULL, "s1", T0, &v);
        gw_limits_quiescent(l, (unsigned)i % 2);
        gw_limits_quiescent(l, (unsigned)(i + 1) % 2);
    }
    assert_true(most <= 2);
    assert_int_equal(rule_sets(l), 1);
    gw_limits_free(l);

    l = gw_limits_new(1000);
    assert_non_null(l);
    for (int i = 0; i < 100; i++)
        set_rule(l, 1000 + (uint64_t)i);
    assert_int_equal(rule_sets(l), 100);
    gw_limits_free(l); /* frees them all (ASan/LSan: no leak) */
}

static gw_rule_t user_rule(const char *sale)
{
    gw_rule_t r;
    memset(&r, 0, sizeof(r));
    snprintf(r.sale_id, sizeof(r.sale_id), "%s", sale);
    r.user = pol(1, 1); /* one at once */
    return r;
}

/*
 * A rule's counters are never shared with another sale's rule: a reader that
 * looked up sale a's rule before a change removed it, and refuses after it
 * (gw_limits__admit_held: that interleaving, injected), counts into a's
 * counters, not into those of the rule that came in (b), whose counters
 * start from zero. The held rule stays readable until the reader passes a
 * quiescent point (ASan: no use after free).
 */
static void test_rule_counters_not_reused_within_grace(void **state)
{
    (void)state;
    gw_limits_t *l = gw_limits_new(1000);
    assert_non_null(l);
    assert_int_equal(gw_limits_set_readers(l, 1), 0);
    gw_rule_t ra = user_rule("a"), rb = user_rule("b");
    assert_int_equal(gw_limits_set_rules(l, &ra, 1), 0);
    gw_limits_quiescent(l, 0);
    const void *held = gw_limits__rule_hold(l, "a");
    assert_non_null(held);
    assert_null(gw_limits__rule_hold(l, "c"));
    assert_int_equal(gw_limits_set_rules(l, &rb, 1), 0); /* a out, b in */
    gw_limit_verdict_t v;
    gw_limits__admit_held(l, held, "u", 1, "a", 1, T0, &v);
    assert_true(v.allowed);
    gw_limits__admit_held(l, held, "u", 1, "a", 1, T0, &v);
    assert_false(v.allowed); /* refused by the held rule of a: counted into a's */
    assert_true(v.by_rule);
    gw_rule_t out[2];
    assert_int_equal(gw_limits_get_rules(l, out, 2), 1);
    assert_string_equal(out[0].sale_id, "b");
    assert_int_equal(out[0].rejected[0], 0);
    assert_int_equal(out[0].dry_run_rejected[0], 0);
    /* b's own refusals count as before */
    assert_true(admit(l, "u", NULL, "b", T0, &v));
    assert_false(admit(l, "u", NULL, "b", T0, &v));
    assert_int_equal(gw_limits_get_rules(l, out, 2), 1);
    assert_int_equal(out[0].rejected[0], 1);
    /* Past the grace period the old set and a's counters are freed; many
     * changes between a rule and another leave the counts exact. */
    gw_limits_quiescent(l, 0);
    assert_int_equal(rule_sets(l), 1);
    for (int i = 0; i < 200; i++) {
        gw_rule_t r = user_rule(i % 2 ? "a" : "c");
        gw_rule_t two[2] = {rb, r};
        assert_int_equal(gw_limits_set_rules(l, two, 2), 0);
        if (i % 3 == 0)
            gw_limits_quiescent(l, 0);
    }
    gw_limits_quiescent(l, 0);
    assert_int_equal(rule_sets(l), 1);
    assert_int_equal(gw_limits_get_rules(l, out, 2), 2);
    assert_string_equal(out[0].sale_id, "b");
    assert_int_equal(out[0].rejected[0], 1); /* carried over every change */
    assert_int_equal(out[1].rejected[0], 0);
    gw_limits_free(l); /* frees every counter (LSan: no leak) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_off_allows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_limit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_memo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_fields_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subnet_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_ip_then_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_on_global_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_change_keeps_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_high_rate_global, setup, teardown),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_lru_keeps_hot_key),
        cmocka_unit_test(test_ten_million_keys_memory),
        cmocka_unit_test(test_rule_sets_grace_period),
        cmocka_unit_test(test_rule_sets_do_not_grow),
        cmocka_unit_test(test_rule_counters_not_reused_within_grace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
