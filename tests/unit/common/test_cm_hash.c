/* SipHash-2-4 against the paper's reference vectors (key 00..0f, message 00..len-1). */
#include "common/cm_hash.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static const uint64_t vectors[64] = {
    0x726fdb47dd0e0e31ull, 0x74f839c593dc67fdull, 0x0d6c8009d9a94f5aull, 0x85676696d7fb7e2dull,
    0xcf2794e0277187b7ull, 0x18765564cd99a68dull, 0xcbc9466e58fee3ceull, 0xab0200f58b01d137ull,
    0x93f5f5799a932462ull, 0x9e0082df0ba9e4b0ull, 0x7a5dbbc594ddb9f3ull, 0xf4b32f46226bada7ull,
    0x751e8fbc860ee5fbull, 0x14ea5627c0843d90ull, 0xf723ca908e7af2eeull, 0xa129ca6149be45e5ull,
    0x3f2acc7f57c29bdbull, 0x699ae9f52cbe4794ull, 0x4bc1b3f0968dd39cull, 0xbb6dc91da77961bdull,
    0xbed65cf21aa2ee98ull, 0xd0f2cbb02e3b67c7ull, 0x93536795e3a33e88ull, 0xa80c038ccd5ccec8ull,
    0xb8ad50c6f649af94ull, 0xbce192de8a85b8eaull, 0x17d835b85bbb15f3ull, 0x2f2e6163076bcfadull,
    0xde4daaaca71dc9a5ull, 0xa6a2506687956571ull, 0xad87a3535c49ef28ull, 0x32d892fad841c342ull,
    0x7127512f72f27cceull, 0xa7f32346f95978e3ull, 0x12e0b01abb051238ull, 0x15e034d40fa197aeull,
    0x314dffbe0815a3b4ull, 0x027990f029623981ull, 0xcadcd4e59ef40c4dull, 0x9abfd8766a33735cull,
    0x0e3ea96b5304a7d0ull, 0xad0c42d6fc585992ull, 0x187306c89bc215a9ull, 0xd4a60abcf3792b95ull,
    0xf935451de4f21df2ull, 0xa9538f0419755787ull, 0xdb9acddff56ca510ull, 0xd06c98cd5c0975ebull,
    0xe612a3cb9ecba951ull, 0xc766e62cfcadaf96ull, 0xee64435a9752fe72ull, 0xa192d576b245165aull,
    0x0a8787bf8ecb74b2ull, 0x81b3e73d20b49b6full, 0x7fa8220ba3b2eceaull, 0x245731c13ca42499ull,
    0xb78dbfaf3a8d83bdull, 0xea1ad565322a1a0bull, 0x60e61c23a3795013ull, 0x6606d7e446282b93ull,
    0x6ca4ecb15c5f91e1ull, 0x9f626da15c9625f3ull, 0xe51b38608ef25f57ull, 0x958a324ceb064572ull,
};

static const cm_hash_key_t paper_key = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};

static void test_reference_vectors(void **state)
{
    (void)state;
    uint8_t msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t len = 0; len < 64; len++)
        assert_int_equal(cm_hash_sip24(&paper_key, msg, len), vectors[len]);
    /* The paper's worked example (Appendix A): 15 bytes -> a129ca6149be45e5. */
    assert_int_equal(cm_hash_sip24(&paper_key, msg, 15), 0xa129ca6149be45e5ull);
}

static void test_incremental_any_split(void **state)
{
    (void)state;
    uint8_t msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t len = 0; len < 64; len++) {
        for (size_t a = 0; a <= len; a++) {
            for (size_t b = a; b <= len; b++) {
                cm_hash_sip_t s;
                cm_hash_sip_init(&s, &paper_key);
                cm_hash_sip_update(&s, msg, a);
                cm_hash_sip_update(&s, msg + a, b - a);
                cm_hash_sip_update(&s, msg + b, len - b);
                assert_int_equal(cm_hash_sip_final(&s), vectors[len]);
            }
        }
    }
}

static void test_key_matters(void **state)
{
    (void)state;
    cm_hash_key_t k = paper_key;
    k.k1 ^= 1;
    assert_int_not_equal(cm_hash_sip24(&k, "", 0), vectors[0]);
    k = paper_key;
    k.k0 ^= 1ull << 63;
    assert_int_not_equal(cm_hash_sip24(&k, "", 0), vectors[0]);
}

static void test_seed_random(void **state)
{
    (void)state;
    cm_hash_key_t a, b;
    assert_int_equal(cm_hash_seed_random(&a), 0);
    assert_int_equal(cm_hash_seed_random(&b), 0);
    /* 128 random bits twice the same: probability 2^-128. */
    assert_false(a.k0 == b.k0 && a.k1 == b.k1);
    assert_false(a.k0 == 0 && a.k1 == 0);
}

/* The table hash that replaced the hand-copied FNV-1a: deterministic within a
 * process, keyed (not the public stable key), spreads short ids. */
static void test_table_hash(void **state)
{
    (void)state;
    assert_true(cm_hash_str("user-1") == cm_hash_mem("user-1", 6));
    assert_true(cm_hash_str("user-1") == cm_hash_str("user-1"));
    assert_true(cm_hash_str("user-1") != cm_hash_str("user-2"));
    assert_true(cm_hash_mem("user-1", 6) != cm_hash_stable("user-1", 6));
    assert_true(cm_hash_stable("host|:8080|data", 15) == cm_hash_stable("host|:8080|data", 15));
    /* 64 shards by the low bits: 6400 sequential ids land in every shard */
    unsigned hits[64] = {0};
    char id[32];
    for (int i = 0; i < 6400; i++) {
        int n = snprintf(id, sizeof(id), "u%d", i);
        hits[cm_hash_mem(id, (size_t)n) & 63]++;
    }
    for (int b = 0; b < 64; b++)
        assert_true(hits[b] > 50 && hits[b] < 160);
}

/* The unkeyed pre-filter hash: deterministic, every byte and the length count,
 * alignment does not, and short ids spread like the keyed one's. */
static void test_fast_hash(void **state)
{
    (void)state;
    char buf[80];
    memcpy(buf + 1, "user-1234567890", 15);
    assert_true(cm_hash_fast("user-1234567890", 15) == cm_hash_fast(buf + 1, 15));
    assert_true(cm_hash_fast("a", 1) != cm_hash_fast("a\0", 2));
    assert_true(cm_hash_fast("", 0) != cm_hash_fast("\0", 1));
    for (size_t len = 1; len <= 64; len++) {
        memset(buf, 'x', sizeof(buf));
        uint64_t h = cm_hash_fast(buf, len);
        for (size_t i = 0; i < len; i++) {
            buf[i] ^= 1;
            assert_true(cm_hash_fast(buf, len) != h);
            buf[i] ^= 1;
        }
        assert_true(cm_hash_fast(buf, len) == h);
    }
    unsigned hits[64] = {0};
    for (int i = 0; i < 6400; i++) {
        int n = snprintf(buf, sizeof(buf), "u%d", i);
        hits[cm_hash_fast(buf, (size_t)n) & 63]++;
    }
    for (int b = 0; b < 64; b++)
        assert_true(hits[b] > 50 && hits[b] < 160);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
        cmocka_unit_test(test_incremental_any_split),
        cmocka_unit_test(test_key_matters),
        cmocka_unit_test(test_seed_random),
        cmocka_unit_test(test_table_hash),
        cmocka_unit_test(test_fast_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
