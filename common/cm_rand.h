/*
 * The one pseudo-random generator of the project: xoshiro256** (Blackman &
 * Vigna) seeded through splitmix64. Reproducible across machines and builds:
 * the same seed gives the same sequence, which is what the lottery's draw,
 * the load tester's schedule and the simulator's replays rely on.
 *
 * Not a cryptographic generator: secrets (keys, tokens, seeds a client must not
 * predict) come from getrandom(2), never from here.
 *
 * A cm_rand_t is caller-provided storage with no locking: one per thread or
 * per owner. All functions are pure apart from advancing the state.
 */
#ifndef CM_RAND_H
#define CM_RAND_H

#include <stdint.h>

typedef struct cm_rand {
    uint64_t s[4];
} cm_rand_t;

/* Seeds the state from a 64-bit seed (four splitmix64 outputs). Any seed, 0 too. */
void cm_rand_seed(cm_rand_t *r, uint64_t seed);

/* The next 64 random bits. */
uint64_t cm_rand_next(cm_rand_t *r);

/* Uniform in [0, n) without modulo bias (rejection); n >= 1. */
uint64_t cm_rand_below(cm_rand_t *r, uint64_t n);

/* Uniform in [0, 1), 53 bits of precision. */
double cm_rand_unit(cm_rand_t *r);

/*
 * splitmix64's step: advances *x by the golden-ratio increment and returns
 * its mixed value. Useful to derive independent seeds from one seed.
 */
uint64_t cm_rand_splitmix64(uint64_t *x);

/*
 * splitmix64's finaliser alone: a bijective 64-bit mix of x (a counter, a
 * clock, an id) into well-spread bits. Unkeyed: never for placement of keys
 * a client chooses (cm_hash_mem is for that).
 */
uint64_t cm_rand_mix64(uint64_t x);

#endif
