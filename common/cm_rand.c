#include "common/cm_rand.h"

uint64_t cm_rand_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t cm_rand_splitmix64(uint64_t *x)
{
    return cm_rand_mix64(*x += 0x9e3779b97f4a7c15ull);
}

void cm_rand_seed(cm_rand_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = cm_rand_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t cm_rand_next(cm_rand_t *r)
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

uint64_t cm_rand_below(cm_rand_t *r, uint64_t n)
{
    /* Values below 2^64 mod n would make the low residues likelier: redraw them. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = cm_rand_next(r);
        if (x >= threshold)
            return x % n;
    }
}

double cm_rand_unit(cm_rand_t *r)
{
    return (double)(cm_rand_next(r) >> 11) * 0x1.0p-53;
}
