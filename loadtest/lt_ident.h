/*
 * flashgate-load's identities: the user id of each simulated account and,
 * with a scenario identity key, the bearer token minted for it.
 */
#ifndef LT_IDENT_H
#define LT_IDENT_H

#include "loadtest/lt_scenario.h"

#include <stddef.h>
#include <stdint.h>

/* The user id of account u of a run seeded `seed`: "u<seed>-<u>". The one place it is formed. */
void lt_user_id(uint64_t seed, uint64_t u, char *out, size_t len);

/* The longest token minted (a request's head, token included, fits in 2 KiB). */
#define LT_TOKEN_MAX 1024

/* One token per account, in one block (fixed stride). */
typedef struct lt_tokens {
    char *arena;
    size_t stride;
    uint64_t n;
    double mint_s; /* wall time the minting took */
} lt_tokens_t;

/*
 * Mints a token for each of sc->users accounts with the key at
 * sc->identity_key (iss/aud from the scenario, exp after the run plus an
 * hour), over `threads` threads (1..16). Returns 0, or CM_EINVAL with a
 * sentence in eb (unreadable key, a key group/others may read, ...).
 * Single-threaded caller; t is freed with lt_tokens_free.
 */
int lt_tokens_mint(lt_tokens_t *t, const lt_scenario_t *sc, unsigned threads, char *eb, size_t el);
/* Account u's token (NUL-terminated), borrowed while t lives. Thread-safe (read-only). */
const char *lt_tokens_get(const lt_tokens_t *t, uint64_t u);
void lt_tokens_free(lt_tokens_t *t);

#endif
