/*
 * inventory/inv_cluster.c without a server: the key slot (CRC16 vectors of
 * the Redis Cluster spec, hash tags, every slot value checked against
 * `redis-cli cluster keyslot` of redis-server 7.0), the MOVED/ASK parser
 * and the redis-cluster:// seed list of cm_url. The routing against a live
 * 3-master cluster is integration.84-redis-cluster.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <string.h>

#include "common/cm_err.h"
#include "common/cm_url.h"
#include "inventory/inv_cluster.h"

static uint16_t slot_of(const char *k)
{
    return inv_cluster_key_slot(k, strlen(k));
}

static void test_crc16(void **state)
{
    (void)state;
    /* the spec's check value of CRC16-CCITT (XMODEM) */
    assert_int_equal(inv_cluster_crc16("123456789", 9), 0x31C3);
    assert_int_equal(inv_cluster_crc16("", 0), 0);
    assert_int_equal(slot_of("123456789"), 0x31C3 & 16383);
}

static void test_slots_match_redis(void **state)
{
    (void)state;
    /* CLUSTER KEYSLOT of redis-server 7.0.15 */
    assert_int_equal(slot_of("123456789"), 12739);
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of("hello"), 866);
    assert_int_equal(slot_of("{sale:s1}:meta"), 2087);
}

static void test_hash_tags(void **state)
{
    (void)state;
    /* the spec's examples: the tag is between the first '{' and the next '}' */
    assert_int_equal(slot_of("{user1000}.following"), 3443);
    assert_int_equal(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    assert_int_equal(slot_of("foo{bar}{zap}"), 5061);      /* "bar" */
    assert_int_equal(slot_of("foo{{bar}}zap"), 4015);      /* "{bar" */
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    assert_int_equal(slot_of("foo{}{bar}"), 8363);         /* empty tag: the whole key */
    assert_int_equal(slot_of("a{}"), 6082);
    assert_int_equal(slot_of("nobrace}{"), inv_cluster_crc16("nobrace}{", 9) & 16383);
    /* every key of a sale shares one slot */
    uint16_t s = slot_of("{sale:demo}:meta");
    assert_int_equal(slot_of("{sale:demo}:users"), s);
    assert_int_equal(slot_of("{sale:demo}:orders"), s);
    assert_int_equal(slot_of("{sale:demo}:idem"), s);
    assert_int_equal(slot_of("{flashgate:fleet}:members"), slot_of("{flashgate:fleet}:config"));
}

static void test_redirect_parse(void **state)
{
    (void)state;
    uint16_t slot = 0;
    char host[64];
    int port = 0;
    const char *m = "MOVED 3999 127.0.0.1:6381";
    assert_int_equal(inv_cluster_redirect_parse(m, strlen(m), &slot, host, sizeof(host), &port),
                     INV_CLUSTER_REDIR_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    const char *a = "ASK 12182 10.0.0.7:7002";
    assert_int_equal(inv_cluster_redirect_parse(a, strlen(a), &slot, host, sizeof(host), &port),
                     INV_CLUSTER_REDIR_ASK);
    assert_int_equal(slot, 12182);
    assert_string_equal(host, "10.0.0.7");
    assert_int_equal(port, 7002);
    const char *v6 = "MOVED 1 [::1]:7000";
    assert_int_equal(inv_cluster_redirect_parse(v6, strlen(v6), &slot, host, sizeof(host), &port),
                     INV_CLUSTER_REDIR_MOVED);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    const char *v6b = "ASK 2 fe80::1:7001"; /* bare v6: the port follows the last ':' */
    assert_int_equal(inv_cluster_redirect_parse(v6b, strlen(v6b), &slot, host, sizeof(host), &port),
                     INV_CLUSTER_REDIR_ASK);
    assert_string_equal(host, "fe80::1");
    assert_int_equal(port, 7001);
    const char *empty = "MOVED 5 :7005"; /* the node did not announce its address */
    assert_int_equal(
        inv_cluster_redirect_parse(empty, strlen(empty), &slot, host, sizeof(host), &port),
        INV_CLUSTER_REDIR_MOVED);
    assert_string_equal(host, "");

    static const char *const bad[] = {
        "NOSCRIPT No matching script", "MOVED", "MOVED 3999", "MOVED x 1.2.3.4:5",
        "MOVED 16384 1.2.3.4:5", "MOVED 1 1.2.3.4", "MOVED 1 1.2.3.4:0", "MOVED 1 1.2.3.4:70000",
        "MOVED 1 1.2.3.4:5x", "ASKING", "TRYAGAIN Multiple keys", "CLUSTERDOWN Hash slot not served",
        "moved 1 1.2.3.4:5",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(
            inv_cluster_redirect_parse(bad[i], strlen(bad[i]), &slot, host, sizeof(host), &port),
            INV_CLUSTER_REDIR_NONE);
    char small[4];
    assert_int_equal(inv_cluster_redirect_parse(m, strlen(m), &slot, small, sizeof(small), &port),
                     INV_CLUSTER_REDIR_NONE);
    assert_true(inv_cluster_is_transient("TRYAGAIN Multiple keys request during rehashing"));
    assert_true(inv_cluster_is_transient("CLUSTERDOWN The cluster is down"));
    assert_false(inv_cluster_is_transient("ERR unknown command"));
}

/* A script's name is Redis's (SCRIPT LOAD "return 1" answers this SHA1), and a
 * call sent from a loop goes again with its text after one NOSCRIPT, not twice. */
static void test_script_sha1_retry(void **state)
{
    (void)state;
    char sha1[41];
    inv_cluster_script_sha1("return 1", sha1);
    assert_string_equal(sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    char noscript[] = "NOSCRIPT No matching script. Please use EVAL.", other[] = "ERR x";
    redisReply r = {.type = REDIS_REPLY_ERROR, .str = noscript, .len = strlen(noscript)};
    redisReply e = {.type = REDIS_REPLY_ERROR, .str = other, .len = strlen(other)};
    bool reloaded = false;
    assert_false(inv_cluster_script_retry(&e, &reloaded));
    assert_false(inv_cluster_script_retry(NULL, &reloaded));
    assert_false(reloaded);
    assert_true(inv_cluster_script_retry(&r, &reloaded));
    assert_true(reloaded);
    assert_false(inv_cluster_script_retry(&r, &reloaded));
}

static void test_url_seeds(void **state)
{
    (void)state;
    cm_redis_url_t u;
    char err[200] = "";
    assert_int_equal(cm_redis_url_parse("redis-cluster://:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002"
                                        "?pool=4",
                                        &u, err, sizeof(err)),
                     0);
    assert_true(u.cluster);
    assert_int_equal(u.nseeds, 3);
    assert_string_equal(u.seed[0].host, "10.0.0.1");
    assert_int_equal(u.seed[0].port, 7000);
    assert_string_equal(u.seed[1].host, "10.0.0.2");
    assert_int_equal(u.seed[1].port, 6379);
    assert_string_equal(u.seed[2].host, "::1");
    assert_int_equal(u.seed[2].port, 7002);
    assert_string_equal(u.host, "10.0.0.1"); /* the first seed */
    assert_int_equal(u.port, 7000);
    assert_string_equal(u.pass, "pw");
    assert_string_equal(u.query, "pool=4");
    assert_true(cm_redis_url_is("redis-cluster://h"));
    assert_true(cm_redis_url_is("redis://h"));
    assert_false(cm_redis_url_is("memory"));

    assert_int_equal(cm_redis_url_parse("redis://h:1", &u, err, sizeof(err)), 0);
    assert_false(u.cluster);
    assert_int_equal(u.nseeds, 1);

    static const char *const bad[] = {
        "redis-cluster://h:1/3",         /* a cluster has db 0 only */
        "redis://a:1,b:2",               /* a seed list wants redis-cluster:// */
        "redis-cluster://",              /* no seed */
        "redis-cluster://a:1,:2",        /* empty host */
        "redis-cluster://a:1,",          /* empty seed */
        "redis-cluster://a:1,,b:2",
        "redis-cluster://a:99999",       /* bad port */
        "redis-cluster://a,b,c,d,e,f,g,h,i", /* more than CM_REDIS_SEEDS_MAX */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cm_redis_url_parse(bad[i], &u, err, sizeof(err)), CM_EINVAL);
    assert_int_equal(cm_redis_url_parse("redis-cluster://h:1/0", &u, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),     cmocka_unit_test(test_slots_match_redis),
        cmocka_unit_test(test_hash_tags), cmocka_unit_test(test_redirect_parse),
        cmocka_unit_test(test_url_seeds), cmocka_unit_test(test_script_sha1_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
