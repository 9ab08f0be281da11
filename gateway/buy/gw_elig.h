/*
 * Per-sale eligibility (docs/identity.md "Eligibility"): verified claims
 * (require_claims) and an account age (min_account_age_days) a buy, a lottery
 * entry or a waiting-room join needs, else 403 not_eligible. The rules are kept
 * in <data_dir>/eligibility.json, in a fleet in Redis as well (gw_elig_fleet.c).
 * The buy path reads rules without locks (a rule is immutable once published;
 * a replaced one is freed at close); admin calls change them.
 */
#ifndef GW_ELIG_H
#define GW_ELIG_H

#include "identity/id.h"
#include "inventory/inv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_server;
struct gw_req;

#define GW_ELIG_AGE_MAX_DAYS 36500

/* A sale's eligibility rule. */
typedef struct gw_elig_rule {
    char sale_id[INV_SALE_ID_MAX + 1];
    uint32_t n_claims;
    char claims[ID_ELIG_MAX][ID_CLAIM_NAME_MAX + 1]; /* required true claims */
    int8_t bits[ID_ELIG_MAX]; /* each one's bit in identity.eligibility_claims; -1 = not listed */
    uint32_t min_age_days;    /* 0 = none */
} gw_elig_rule_t;

/* Loads <data_dir>/eligibility.json (absent = no rules). 0, or CM_EINVAL/CM_EIO with a reason.
 * Single-threaded start, after gw_fair_open (whose store choice is eligibility's too). */
int gw_elig_open(struct gw_server *srv, char *errbuf, size_t errlen);
/* Frees the table. After the workers and the admin API stopped. */
void gw_elig_close(struct gw_server *srv);

/* Admin: checks a PUT's require_claims (a json_t * object of name -> true, or NULL)
 * and min_account_age_days into *out: 0, or CM_EINVAL with a sentence naming the
 * field or claim. Changes nothing. Admin thread. */
int gw_elig_parse(struct gw_server *srv, const char *sale_id, const void *require_claims,
                  int64_t min_age_days, gw_elig_rule_t *out, char *errbuf, size_t errlen);
/* Admin: makes *rule the sale's (without claims and age: removes it), in a fleet in
 * Redis first. 0, or CM_EIO, CM_EINVAL (table full) or CM_EBACKEND (nothing changed)
 * with a reason. Admin thread. */
int gw_elig_set(struct gw_server *srv, const gw_elig_rule_t *rule, char *errbuf, size_t errlen);
/* The sale's rule into *out; false when it has none. Thread-safe. */
bool gw_elig_get(struct gw_server *srv, const char *sale_id, gw_elig_rule_t *out);
/* Admin: the sale was deleted; its rule goes (in a fleet from Redis too, best effort: a
 * sale created again under the id writes its own). Admin thread. */
void gw_elig_sale_deleted(struct gw_server *srv, const char *sale_id);

/* The buy path's check of r's verified buyer against the sale's rule at wall time
 * now_ms (with identity off nothing is verified: a rule refuses everyone). True when
 * met or no rule; false with r->resp filled (403 not_eligible). Worker loops; lock-free. */
bool gw_elig_check(struct gw_req *r, const char *sale_id, int64_t now_ms);

#endif
