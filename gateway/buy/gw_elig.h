/*
 * Per-sale eligibility: a sale may require verified claims of its buyers
 * (require_claims: names from identity.eligibility_claims that must be true in
 * the token) and an account age (min_account_age_days, read from
 * identity.account_created_claim). A buy, a lottery entry or a waiting-room
 * join of a buyer who lacks one is answered 403 not_eligible with a "reason"
 * naming what is missing, before anything keyed by the buyer changes.
 *
 * The rules live in a table of their own, kept in <data_dir>/eligibility.json
 * (rewritten atomically on every change, loaded at start). In a fleet (a Redis
 * inventory) they also live in the fleet's fair configuration, which every
 * gateway polls and makes its table (gw_elig_fleet.c), so every gateway
 * enforces every rule.
 *
 * Threads: the buy path reads rules without locks (a rule is immutable once
 * published; a replaced one is freed at close); admin calls change them.
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

/*
 * Admin: checks a PUT's require_claims (a json_t * object of name -> true, or
 * NULL = none) and min_account_age_days into *out for sale_id. Refuses (CM_EINVAL,
 * a sentence naming the field or claim in errbuf) a value that is not an object
 * of true, a name not in identity.eligibility_claims, a day count outside
 * 0..36500 or without identity.account_created_claim, any rule while
 * identity.mode is not jwt. Changes nothing.
 * Admin thread.
 */
int gw_elig_parse(struct gw_server *srv, const char *sale_id, const void *require_claims,
                  int64_t min_age_days, gw_elig_rule_t *out, char *errbuf, size_t errlen);
/*
 * Admin: makes *rule the sale's (a rule without claims and age removes it) and
 * rewrites eligibility.json; in a fleet, Redis first. 0, or CM_EIO, CM_EINVAL
 * (table full) or CM_EBACKEND (Redis: nothing changed) with a reason. Admin thread.
 */
int gw_elig_set(struct gw_server *srv, const gw_elig_rule_t *rule, char *errbuf, size_t errlen);
/* The sale's rule into *out; false when it has none. Thread-safe. */
bool gw_elig_get(struct gw_server *srv, const char *sale_id, gw_elig_rule_t *out);
/* Admin: the sale was deleted; its rule goes (in a fleet from Redis too, best effort: a
 * sale created again under the id writes its own). Admin thread. */
void gw_elig_sale_deleted(struct gw_server *srv, const char *sale_id);

/*
 * The buy path's check of r's verified buyer (r->eligible, r->created_at; with
 * identity off nothing is verified, so a rule refuses everyone) against the
 * sale's rule at wall time now_ms. True when the sale has no rule or the buyer
 * meets it; false with r->resp filled (403 not_eligible, "reason":"claim X",
 * "account younger than N days" or "account age unknown"). Changes nothing.
 * Worker loops; lock-free.
 */
bool gw_elig_check(struct gw_req *r, const char *sale_id, int64_t now_ms);

#endif
