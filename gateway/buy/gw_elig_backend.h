/*
 * Eligibility's store, private to gateway/buy/: one gateway's (no op:
 * eligibility.json is the whole store) or a fleet's (gw_elig__fleet_ops,
 * gw_elig_fleet.c), picked by the fairness store's one choice
 * (gw_fair_lot_ops_t.elig). Both keep eligibility.json: a fleet's gateway
 * started while Redis is down enforces the rules it read last.
 */
#ifndef GW_ELIG_BACKEND_H
#define GW_ELIG_BACKEND_H

#include "gateway/buy/gw_elig.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct gw_server;

#define GW_ELIG_MAX_SALES 1024 /* sales with a rule */

typedef struct gw_elig_ops {
    /* Makes rule the store's before the table takes it (a rule without claims and
     * age removes the sale's): 0, or CM_EBACKEND with the reason in errbuf and
     * nothing changed. NULL: the table's file is the whole store. Admin thread;
     * blocks up to the store's timeout. */
    int (*put)(struct gw_server *srv, const gw_elig_rule_t *rule, char *errbuf, size_t errlen);
} gw_elig_ops_t;

extern const gw_elig_ops_t gw_elig__fleet_ops;

typedef struct gw_elig_retired {
    struct gw_elig_retired *next;
    gw_elig_rule_t *rule;
} gw_elig_retired_t;

struct gw_elig {
    const gw_elig_ops_t *ops; /* the store (gw_fair_lot_ops_t.elig) */
    pthread_mutex_t mu;       /* writers: the slots, n, retired, seen, the file */
    /* A slot holds one sale's rule (NULL once removed: the slot is reused).
     * Readers scan slots [0, n) without a lock; a published rule is never
     * changed, and a replaced one is freed only at close. */
    _Atomic(gw_elig_rule_t *) slots[GW_ELIG_MAX_SALES];
    _Atomic size_t n;
    _Atomic size_t live; /* rules set: 0 lets the buy path skip the scan */
    gw_elig_retired_t *retired;
    char path[600];
    /* The slots published since gw_elig_fleet_begin: the rules a poll did not read
     * (an admin write during the poll counts as read). */
    bool seen[GW_ELIG_MAX_SALES];
};

/* The sale's rule and its slot (*slot when not NULL), or NULL. Lock-free. */
gw_elig_rule_t *gw_elig__find(struct gw_elig *e, const char *sale_id, size_t *slot);
/* Publishes r (steals it; a rule without claims and age, or NULL, removes the sale's)
 * and marks its slot seen: 0, or CM_EINVAL when the table is full (r freed). e->mu held. */
int gw_elig__publish(struct gw_elig *e, const char *sale_id, gw_elig_rule_t *r);
/* Rewrites eligibility.json atomically: 0 or CM_EIO. e->mu held. */
int gw_elig__save(struct gw_elig *e);
/* Each required claim's bit under the current identity.eligibility_claims. */
void gw_elig__bind_bits(const struct gw_server *srv, gw_elig_rule_t *r);
/* A claim name as identity.eligibility_claims allows it (safe inside a JSON string; no
 * ',', the separator of that list and of the fleet's text of a rule). */
bool gw_elig__name_ok(const char *s);

/* A fleet's poll: the rules in Redis replace the table. begin, apply for each
 * GW_FAIR_REDIS_ELIG_PREFIX field (its whole name and text), then end with complete
 * true when every field was read: rules not applied since begin go. Lottery thread. */
void gw_elig_fleet_begin(struct gw_server *srv);
void gw_elig_fleet_apply(struct gw_server *srv, const char *field, const char *value);
void gw_elig_fleet_end(struct gw_server *srv, bool complete);

#endif
