/*
 * SipHash-2-4, written from the paper's description (2 compression rounds per
 * 8-byte word, 4 finalisation rounds, 64-bit output). Checked against the
 * paper's 64 reference vectors in tests/unit/common/test_cm_hash.c.
 */
#include "common/cm_hash.h"

#include "common/cm_err.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <string.h>
#include <sys/random.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sip_round(cm_hash_sip_t *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static inline void sip_word(cm_hash_sip_t *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

void cm_hash_sip_init(cm_hash_sip_t *s, const cm_hash_key_t *key)
{
    s->v0 = key->k0 ^ 0x736f6d6570736575ull; /* "somepseudorandomlygeneratedbytes" */
    s->v1 = key->k1 ^ 0x646f72616e646f6dull;
    s->v2 = key->k0 ^ 0x6c7967656e657261ull;
    s->v3 = key->k1 ^ 0x7465646279746573ull;
    s->tail = 0;
    s->total = 0;
}

void cm_hash_sip_update(cm_hash_sip_t *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    unsigned fill = (unsigned)(s->total & 7);
    s->total += len;
    /* Complete a pending partial word first. */
    if (fill) {
        while (fill < 8 && len) {
            s->tail |= (uint64_t)*p++ << (8 * fill++);
            len--;
        }
        if (fill < 8)
            return;
        sip_word(s, s->tail);
        s->tail = 0;
    }
    for (; len >= 8; p += 8, len -= 8)
        sip_word(s, load_le64(p));
    for (unsigned i = 0; i < len; i++)
        s->tail |= (uint64_t)p[i] << (8 * i);
}

uint64_t cm_hash_sip_final(cm_hash_sip_t *s)
{
    sip_word(s, s->tail | (s->total & 0xff) << 56);
    s->v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/*
 * The one-shot form: whole words, then the last 0..7 bytes gathered at once
 * with the length byte. The same value as init/update/final (the paper's
 * vectors check both), without their per-byte tail loop and calls: ~110
 * instructions for a short id instead of ~230 (callgrind: python3
 * bench/profile.py build rate calls).
 */
uint64_t cm_hash_sip24(const cm_hash_key_t *key, const void *data, size_t len)
{
    cm_hash_sip_t s;
    cm_hash_sip_init(&s, key);
    const uint8_t *p = data;
    size_t n = len;
    for (; n >= 8; p += 8, n -= 8)
        sip_word(&s, load_le64(p));
    uint64_t last = (uint64_t)(len & 0xff) << 56;
    switch (n) {
    case 7:
        last |= (uint64_t)p[6] << 48;
        /* fall through */
    case 6:
        last |= (uint64_t)p[5] << 40;
        /* fall through */
    case 5:
        last |= (uint64_t)p[4] << 32;
        /* fall through */
    case 4:
        last |= (uint64_t)p[3] << 24;
        /* fall through */
    case 3:
        last |= (uint64_t)p[2] << 16;
        /* fall through */
    case 2:
        last |= (uint64_t)p[1] << 8;
        /* fall through */
    case 1:
        last |= (uint64_t)p[0];
        break;
    default:
        break;
    }
    sip_word(&s, last);
    s.v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

static uint64_t (*fake_fn)(void *arg);
static void *fake_arg;

void cm_hash_seed_set_fake(uint64_t (*fn)(void *arg), void *arg)
{
    fake_fn = fn;
    fake_arg = arg;
}

int cm_hash_seed_random(cm_hash_key_t *out)
{
    if (fake_fn) {
        out->k0 = fake_fn(fake_arg);
        out->k1 = fake_fn(fake_arg);
        return 0;
    }
    uint8_t buf[16];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = getrandom(buf + got, sizeof buf - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return CM_EIO;
        }
        got += (size_t)n;
    }
    out->k0 = load_le64(buf);
    out->k1 = load_le64(buf + 8);
    return 0;
}

/*---- the project's table hash ----*/

static const cm_hash_key_t stable_key = {0x666c617368676174ull, 0x652d686173682d31ull};
static cm_hash_key_t mem_key;
static pthread_once_t mem_once = PTHREAD_ONCE_INIT;

static void mem_key_init(void)
{
    if (cm_hash_seed_random(&mem_key) != 0) /* no kernel randomness: still a good spread */
        mem_key = (cm_hash_key_t){stable_key.k0 ^ (uint64_t)getpid(), stable_key.k1};
}

uint64_t cm_hash_mem(const void *data, size_t len)
{
    pthread_once(&mem_once, mem_key_init);
    return cm_hash_sip24(&mem_key, data, len);
}

uint64_t cm_hash_str(const char *s)
{
    return cm_hash_mem(s, strlen(s));
}

uint64_t cm_hash_stable(const void *data, size_t len)
{
    return cm_hash_sip24(&stable_key, data, len);
}

/*---- the unkeyed pre-filter hash (cm_hash.h says where it is allowed) ----*/

static inline uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t m;
    memcpy(&m, p, 8); /* one load, host byte order (the value is never kept) */
    return m;
}

static inline uint64_t load32(const uint8_t *p)
{
    uint32_t m;
    memcpy(&m, p, 4);
    return m;
}

static inline uint64_t fast_mix(uint64_t h, uint64_t m)
{
    return ROTL(h ^ (m * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full;
}

uint64_t cm_hash_fast(const void *data, size_t len)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    /* The last partial word is read as whole loads that overlap bytes already
     * mixed in (as the length is too, every byte counts exactly once more). */
    if (len >= 8) {
        for (; end - p >= 8; p += 8)
            h = fast_mix(h, load64(p));
        if (p < end)
            h = fast_mix(h, load64(end - 8));
    } else if (len >= 4) {
        h = fast_mix(h, load32(p) | load32(end - 4) << 32);
    } else if (len) {
        h = fast_mix(h, (uint64_t)p[0] | (uint64_t)p[len / 2] << 8 | (uint64_t)end[-1] << 16);
    }
    return fmix64(h);
}
