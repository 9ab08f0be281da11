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

/* The person id of person p: "p<seed>-<p>" (people and bots are one person each; an
 * operator's accounts share its few persons). The one place it is formed. */
void lt_person_id(uint64_t seed, uint64_t p, char *out, size_t len);

/*
 * Who holds which account: persons[u] for every account u of the scenario
 * (lt_scenario_accounts). People and bots (sc->users accounts) are persons
 * 0 .. users-1, one account each, in account order. The operators' accounts
 * are dealt at random among them (seeded by sc->seed; account order is
 * arrival order, so they arrive mixed with the crowd): operator o's persons
 * are users + o * persons_per_operator + m, each taking its accounts in turn
 * (an operator's accounts_per_operator split as evenly as they go). Without
 * operators persons[u] = u. An account is an operator's iff persons[u] >= users.
 */
void lt_crowd_persons(const lt_scenario_t *sc, uint32_t *persons);

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
 * Mints a token for each of the scenario's accounts (lt_scenario_accounts)
 * with the key at sc->identity_key (iss/aud from the scenario, exp after the
 * run plus an hour), over `threads` threads (1..16). Every token carries the
 * account's person in the claim sc->identity_person_claim ("person" when
 * empty): persons[u] is account u's person index (borrowed; NULL = each
 * account is a person of its own, index u). Returns 0, or CM_EINVAL with a
 * sentence in eb (unreadable key, a key group/others may read, ...).
 * Single-threaded caller; t is freed with lt_tokens_free.
 */
int lt_tokens_mint(lt_tokens_t *t, const lt_scenario_t *sc, const uint32_t *persons,
                   unsigned threads, char *eb, size_t el);
/* Account u's token (NUL-terminated), borrowed while t lives. Thread-safe (read-only). */
const char *lt_tokens_get(const lt_tokens_t *t, uint64_t u);
void lt_tokens_free(lt_tokens_t *t);

#endif
