/*
 * The gateway's rate limits: global, per sale, per user and per client IP,
 * each a cm_rate policy changeable at run time without resetting buckets.
 *
 * Per-user and per-IP buckets live in one sharded table (lock per shard,
 * memcached-style striping) keyed by a 64-bit keyed hash (SipHash) of
 * scope + key. Memory is capped: limits.max_keys entries, allocated up front,
 * GW_LIMIT_BYTES_PER_KEY each. A bucket that has refilled completely carries
 * no information and is reclaimed first; when a shard is full of busy keys,
 * the least recently used one in the probe window is evicted (fail-open for
 * that key: it starts again with a full bucket).
 *
 * Global and per-sale buckets are few and hot; each has its own lock.
 */
#ifndef GW_LIMIT_H
#define GW_LIMIT_H

#include "common/cm_rate.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GW_SCOPE_USER = 0,
    GW_SCOPE_IP = 1,
    GW_SCOPE_SALE = 2,
    GW_SCOPE_GLOBAL = 3,
    GW_SCOPE_SUBNET = 4, /* the client's /24 (IPv4) or /48 (IPv6: per-IP is already its /64) */
    GW_SCOPE_COUNT
} gw_scope_t;

#define GW_LIMIT_BYTES_PER_KEY 32 /* see gw_limit.c: hash + bucket, at 75% load */

typedef struct gw_limits gw_limits_t;

/*
 * A per-sale rule: its own per-user and per-sale rates for one
 * sale, checked in addition to the global scopes (a hot sale gets tighter or
 * looser-but-separate buckets). A rate of 0 turns that part off. A dry-run
 * rule refuses nothing: it takes tokens like a real one and counts what it
 * would have refused. Rules are local to this gateway (not shared with the
 * fleet, not divided by the fleet share).
 */
#define GW_LIMIT_RULES_MAX 64
typedef struct gw_rule {
    char sale_id[65];
    cm_rate_policy_t user, sale;
    bool dry_run;
    /* read-only counters, filled by gw_limits_get_rules: refused (enforced)
     * and would-refuse (dry run), per part [0] user [1] sale */
    uint64_t rejected[2], dry_run_rejected[2];
} gw_rule_t;

typedef struct gw_limit_verdict {
    bool allowed;
    bool by_rule;            /* refused by a per-sale rule (scope is its user or sale part) */
    gw_scope_t scope;        /* the scope that refused (when !allowed) */
    cm_rate_policy_t policy; /* that scope's policy, for RateLimit-Policy */
    uint64_t remaining;      /* of the refusing scope, or the tightest one when allowed */
    uint64_t retry_after_ns;
    uint64_t reset_ns;
} gw_limit_verdict_t;

/* max_keys: cap on user + IP entries (rounded up per shard). Single-threaded init. */
gw_limits_t *gw_limits_new(uint64_t max_keys);
void gw_limits_free(gw_limits_t *l);

/* Sets a scope's policy at run time; existing buckets keep their tokens. Thread-safe. */
void gw_limits_set(gw_limits_t *l, gw_scope_t scope, cm_rate_policy_t p);
/* The policy as set (clamped; burst >= 1 with a rate): a scope that is off
 * (rate 0) keeps its burst, the one it takes when its rate is turned on. */
cm_rate_policy_t gw_limits_get(gw_limits_t *l, gw_scope_t scope);
/*
 * Fleet share: global and sale rates are divided by `n` live
 * gateways (n >= 1) when applied. Thread-safe.
 */
void gw_limits_set_share(gw_limits_t *l, uint32_t n);

/*
 * Admits one request: checks the sale's rule (if any) for the user, user,
 * IP, subnet, the rule for the sale, sale, then global (the specific ones
 * first, so an abuser never spends the shared budget). The subnet key is
 * derived from the IP key of gw_client_key (4 bytes IPv4 -> its /24, 8 bytes
 * of an IPv6 /64 -> its /48): no extra parsing per request. If one
 * refuses, the tokens taken by the earlier ones are given back: a refused
 * request consumes nothing. Empty keys skip their scope. Thread-safe.
 */
void gw_limits_admit(gw_limits_t *l, const char *user, size_t user_len, const char *ip,
                     size_t ip_len, const char *sale, size_t sale_len, uint64_t now_ns,
                     gw_limit_verdict_t *v);
/*
 * The client address's scopes alone (IP, then subnet), as gw_limits_admit
 * takes them: the buy path with identity on checks them before a token is
 * verified, and the user's, the sale's and the global scopes after it with
 * gw_limits_admit(user, no IP, sale). Thread-safe.
 */
void gw_limits_admit_ip(gw_limits_t *l, const char *ip, size_t ip_len, uint64_t now_ns,
                        gw_limit_verdict_t *v);
/* A hint: gw_limits_admit of this user comes soon (the global user scope's
 * bucket is fetched into the cache). Thread-safe. */
void gw_limits_prefetch_user(gw_limits_t *l, const char *user, size_t user_len);

/*
 * Replaces the rule set: at most GW_LIMIT_RULES_MAX rules, one per sale
 * (the caller validates). Counters of a sale's rule carry over; its buckets
 * keep their tokens. A removed rule's counters are dropped with the old set
 * (a reader still holding it counts into them, never into another rule's);
 * a rule added (again) starts from zero. Readers switch to the new set at
 * once; the old set is freed once every declared reader has passed a
 * quiescent point (gw_limits_set_readers; without declared readers, old sets
 * are kept until gw_limits_free). Returns 0, CM_EINVAL (too many) or
 * CM_ENOMEM (nothing changed). Thread-safe.
 */
int gw_limits_set_rules(gw_limits_t *l, const gw_rule_t *rules, size_t n);
/*
 * Readers (the threads that call gw_limits_admit while the rules may change:
 * the gateway's workers) are declared once, numbered 0..n-1, before any of
 * them reads; each starts holding back every free until its first quiescent
 * point. gw_limits_quiescent(l, i): reader i holds no rule set now (between
 * two gw_limits_admit calls, e.g. at the end of each loop iteration); two
 * loads, a store when the rules changed since, no lock. Only reader i may
 * call it for i. gw_limits_reader_offline(l, i): reader i reads no more
 * (its thread has ended). Replaced sets are freed by gw_limits_set_rules,
 * gw_limits_stats and gw_limits_reader_offline once every reader has passed a
 * quiescent point since the replacement; a reader that passes none only
 * delays that. set_readers returns 0, CM_EINVAL (n = 0 or called twice) or
 * CM_ENOMEM; it is not thread-safe (before the readers start).
 */
int gw_limits_set_readers(gw_limits_t *l, unsigned n);
void gw_limits_quiescent(gw_limits_t *l, unsigned reader);
void gw_limits_reader_offline(gw_limits_t *l, unsigned reader);
/*
 * For the contract tests only: a reader in the middle of gw_limits_admit.
 * gw_limits__rule_hold returns the rule of `sale` in the set in force (NULL:
 * none), as gw_limits_admit looks it up; gw_limits__admit_held runs the rest
 * of gw_limits_admit (no IP) with that rule, as a reader that looked it up
 * before a rule change and goes on after it. The caller is then reader that
 * has passed no quiescent point since the hold.
 */
const void *gw_limits__rule_hold(gw_limits_t *l, const char *sale);
void gw_limits__admit_held(gw_limits_t *l, const void *held, const char *user, size_t user_len,
                           const char *sale, size_t sale_len, uint64_t now_ns,
                           gw_limit_verdict_t *v);
/* Copies the rules with their counters into out (at most max); returns the count. Thread-safe. */
size_t gw_limits_get_rules(gw_limits_t *l, gw_rule_t *out, size_t max);

/* Table occupancy and evictions, for stats; rule_sets: rule sets allocated
 * (the one in force and replaced ones not yet freed). Thread-safe. */
typedef struct gw_limits_stats {
    uint64_t keys, capacity, evicted_idle, evicted_busy, bytes;
    uint64_t rule_sets;
} gw_limits_stats_t;
void gw_limits_stats(gw_limits_t *l, gw_limits_stats_t *out);

const char *gw_scope_name(gw_scope_t s);

#endif
