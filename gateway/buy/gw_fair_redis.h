/*
 * The fairness store in a fleet's Redis: the one file that knows the keys,
 * the scripts and the reply shapes of the lottery, its waitlist, registration
 * and the waiting room. It speaks to Redis through the fleet's connection
 * (inventory/inv_fleet.h: inv_fleet_cmd and its kin), which names none of
 * these keys.
 *
 * Keys: docs/fleet.md's table (its {flashgate:fair...} rows). Every per-sale key
 * carries the hash tag {flashgate:fair:<sale>}, so each script's keys share one
 * Redis Cluster slot and gw_fair_redis_lottery_clear deletes them all in one DEL
 * (a :wrjti key goes by its own expiry).
 *
 * (":x" is {flashgate:fair:<sale>}:x.) Unless said otherwise the calls return
 * 0, or CM_EBACKEND with the reason in errbuf (then inv_fleet_broken tells a
 * transport failure from an error reply). Each blocks up to the connection's
 * timeout. Not thread-safe on c (callers serialise a connection's use).
 */
#ifndef GW_FAIR_REDIS_H
#define GW_FAIR_REDIS_H

#include "gateway/buy/gw_fair.h"
#include "inventory/inv_fleet.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*---- the fair-start lottery (gateway/buy/gw_fair_fleet.c) ----*/

/* Every sale's lottery configuration: fn(ctx, sale, value). */
int gw_fair_redis_lottery_conf_all(inv_fleet_conn_t *c, inv_fleet_pair_fn fn, void *ctx,
                                   char *errbuf, size_t errlen);

/* One sale's configuration into out (*found false when unset or not a string). */
int gw_fair_redis_lottery_conf_get(inv_fleet_conn_t *c, const char *sale, char *out, size_t cap,
                                   bool *found, char *errbuf, size_t errlen);

/*
 * A deleted sale's lottery: the configuration's value GW_FAIR_REDIS_LOTTERY_DELETED
 * (a tombstone: every gateway drops its own record of the lottery when it
 * reads it, and a sale created again under the id starts a new one), and
 * gw_fair_redis_lottery_clear deletes every per-sale key (entries, entrants, pushed,
 * lock, seed, winners, done, entered, entry marks, registrations, the waiting
 * room's wr/wrpre/wrpl, the waitlist's, the generation offered) in one DEL: they share
 * one slot.
 */
#define GW_FAIR_REDIS_LOTTERY_DELETED "-"
int gw_fair_redis_lottery_clear(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen);

/* A lottery's generation offered for its put-back (:gen, gw_fair_fleet.c): a gateway whose
 * copy the fleet's configuration held finds the configuration gone (Redis lost it). _offer
 * sets it unless set (*taken: this one is); _offered reads it (*gen 0: none). Cleared with
 * the lottery's keys. */
int gw_fair_redis_lottery_gen_offer(inv_fleet_conn_t *c, const char *sale, uint64_t gen,
                                    bool *taken, char *errbuf, size_t errlen);
int gw_fair_redis_lottery_gen_offered(inv_fleet_conn_t *c, const char *sale, uint64_t *gen,
                                      char *errbuf, size_t errlen);

/* Stores one sale's configuration. */
int gw_fair_redis_lottery_conf_put(inv_fleet_conn_t *c, const char *sale, const char *value,
                                   char *errbuf, size_t errlen);

/* Writes one part of a sale's configuration, the other part kept as Redis holds it:
 * reg false, the lottery's (text: "<window> <early> <k0> <k1> <rate> <lot_gen>", the last
 * the lottery's generation, gw_fair_internal.h); reg true, the registration's token
 * (text: " r=<opens>:<closes>", or "" for none), not written to a sale with no configuration
 * or a deleted one. One script: no read-modify-write. */
int gw_fair_redis_conf_part(inv_fleet_conn_t *c, const char *sale, bool reg, const char *text,
                            char *errbuf, size_t errlen);

/*---- eligibility (gateway/buy/gw_elig_fleet.c) ----*/

/* A sale's eligibility rule is the configuration's field GW_FAIR_REDIS_ELIG_PREFIX "<sale>"
 * (gw_fair_redis_lottery_conf_all hands it over with the prefix; a sale id has no ':'). */
#define GW_FAIR_REDIS_ELIG_PREFIX "elig:"
/* Stores the sale's rule text, or deletes it when value is NULL (absent is fine). */
int gw_fair_redis_elig_put(inv_fleet_conn_t *c, const char *sale, const char *value, char *errbuf,
                           size_t errlen);

/* Pushing entries is one pipeline: _push_add queues one entry (HSETNX: a user's first
 * push wins), 0 if queued; _push_finish queues "node pushed" when all_added, sends and
 * reads every reply: 1 all succeeded, 0 one was an error reply, or CM_EBACKEND. */
int gw_fair_redis_lottery_push_add(inv_fleet_conn_t *c, const char *sale, const char *user,
                                   const char *value);
int gw_fair_redis_lottery_push_finish(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                      bool all_added, char *errbuf, size_t errlen);

/* How many gateways pushed (*n), and how many of the gateways that marked entries
 * (gw_fair_redis_lottery_entered_mark) have not (*missing); both -1 on an unexpected
 * reply. */
int gw_fair_redis_lottery_pushed_count(inv_fleet_conn_t *c, const char *sale, long long *n,
                                       long long *missing, char *errbuf, size_t errlen);

/* Whether the draw is complete; marks it complete with n entrants. */
int gw_fair_redis_lottery_done(inv_fleet_conn_t *c, const char *sale, bool *done, char *errbuf,
                               size_t errlen);
int gw_fair_redis_lottery_done_set(inv_fleet_conn_t *c, const char *sale, size_t n, char *errbuf,
                                   size_t errlen);

/* Marks that node_id holds entries of the sale (its window cannot change any more);
 * *busy: whether some gateway holds entries and the draw is not done. */
int gw_fair_redis_lottery_entered_mark(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                       char *errbuf, size_t errlen);
int gw_fair_redis_lottery_entered(inv_fleet_conn_t *c, const char *sale, bool *busy, char *errbuf,
                                  size_t errlen);

/* Tries to take the drawer's lock for node_id (ttl_ms); *mine when taken or node_id's already
 * (then extended). _renew extends it. */
int gw_fair_redis_lottery_lock(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, int ttl_ms,
                               bool *mine, char *errbuf, size_t errlen);
int gw_fair_redis_lottery_lock_renew(inv_fleet_conn_t *c, const char *sale, int ttl_ms,
                                     char *errbuf, size_t errlen);

/* The draw's seed step, one script: freezes the pushed entries as the entrants (once),
 * offers seed_hex as the seed and mode as the waitlist's: the first drawer's stay. */
int gw_fair_redis_lottery_seed(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                               char mode, char *errbuf, size_t errlen);

/* The frozen entrants: fn(ctx, person, value pushed); the seed (*seeded false: none yet). */
int gw_fair_redis_lottery_entrants(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                   void *ctx, char *errbuf, size_t errlen);
int gw_fair_redis_lottery_seed_get(inv_fleet_conn_t *c, const char *sale, uint64_t *seed,
                                   bool *seeded, char *errbuf, size_t errlen);

/* The recorded outcomes: fn(ctx, person, order id), or _NOT_ACCEPTED for an entrant drawn
 * and reserved whose order was refused (given back: not a winner, not drawn again);
 * _winner_put records one. */
#define GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED "-"
int gw_fair_redis_lottery_winners(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                  void *ctx, char *errbuf, size_t errlen);
int gw_fair_redis_lottery_winner_put(inv_fleet_conn_t *c, const char *sale, const char *user,
                                     const char *order_id, char *errbuf, size_t errlen);

/* One entry per person across the fleet (:ep and :ei, set in one script: two gateways
 * taking entries of one person at once cannot both hold the mark). _entry_mark takes the
 * mark when the person holds none (*taken), else copies the value held into held;
 * _entry_drop deletes it while it is order_id's; _entry_get reads an order id's entry on
 * any gateway (*found false: none). */
int gw_fair_redis_lottery_entry_mark(inv_fleet_conn_t *c, const char *sale, const char *person,
                                     const char *order_id, const char *value, bool *taken,
                                     char *held, size_t cap, char *errbuf, size_t errlen);
/* The marks of n entries in one script, args person, order id, value for each (3 * n
 * strings, borrowed): each taken unless its person holds one. */
int gw_fair_redis_lottery_entry_mark_many(inv_fleet_conn_t *c, const char *sale,
                                          const char *const *args, size_t n, char *errbuf,
                                          size_t errlen);
int gw_fair_redis_lottery_entry_drop(inv_fleet_conn_t *c, const char *sale, const char *person,
                                     const char *order_id, char *errbuf, size_t errlen);
int gw_fair_redis_lottery_entry_get(inv_fleet_conn_t *c, const char *sale, const char *order_id,
                                    bool *found, char *person, size_t pcap, char *value,
                                    size_t vcap, char *errbuf, size_t errlen);

/*---- the fleet's waitlist (gw_fair_fleet.c, gw_waitlist_fleet.c): one gateway at a time
 * promotes; each outcome goes to :won in the same script. Owner ids are a gateway's data
 * directory's (they survive a restart, which a node id does not). ----*/

/* The waitlist's state, one script: mode ('w', 'l' or 0), ended, gen, head, promoted, and
 * the pending promotion's owner ("" when none). */
typedef struct gw_fair_redis_wl_state {
    char mode;
    bool ended;
    long long gen, head, promoted;
    char owner[40];
} gw_fair_redis_wl_state_t;
int gw_fair_redis_wl_state(inv_fleet_conn_t *c, const char *sale, gw_fair_redis_wl_state_t *st,
                           char *errbuf, size_t errlen);
/* Takes or renews the promoter's lock for owner (ttl_ms); *mine when held now. The owner
 * of the pending promotion takes it over from whoever holds it: only its spool can tell
 * whether that promotion's order exists. */
int gw_fair_redis_wl_lock(inv_fleet_conn_t *c, const char *sale, const char *owner, int ttl_ms,
                          bool *mine, char *errbuf, size_t errlen);
/* The pending promotion: *found, and its person and order id (cut to each cap; its owner
 * is gw_fair_redis_wl_state's). */
int gw_fair_redis_wl_pending(inv_fleet_conn_t *c, const char *sale, bool *found, char *person,
                             size_t person_cap, char *order, size_t order_cap, char *errbuf,
                             size_t errlen);
/* Begins the promotion of person's entry order by owner: 1 begun (:wp set), 0 refused (the
 * lock is not owner's, the sale ended, a promotion is pending, or person has an outcome). */
int gw_fair_redis_wl_begin(inv_fleet_conn_t *c, const char *sale, const char *owner,
                           const char *person, const char *order, char *errbuf, size_t errlen);
/* The lock's holder owner adopts a pending promotion of another owner at least grace_ms
 * old (its owner did not come back to finish it): 1 adopted (or owner's already), 0 not. */
int gw_fair_redis_wl_adopt(inv_fleet_conn_t *c, const char *sale, const char *owner, int grace_ms,
                           char *errbuf, size_t errlen);
/* Ends the pending promotion of person by the lock's holder owner: result an order id (a
 * winner, counted as promoted), _NOT_ACCEPTED (lost for cause) or "" (no outcome: the
 * entry still waits); head raised to at least `head`. 1 done (*gen: the generation after
 * it), 0 the lock is not owner's (nothing written). */
int gw_fair_redis_wl_finish(inv_fleet_conn_t *c, const char *sale, const char *owner,
                            const char *person, const char *result, long long head, long long *gen,
                            char *errbuf, size_t errlen);
/* The sale ended: the waitlist's rest is lost (once; gen bumped). 1 ended, 0 not yet: a
 * promotion begun before the end is pending and is finished first. */
int gw_fair_redis_wl_end(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen);

/*---- registration (gateway/buy/gw_reg.c): :reg above ----*/

/* Registers person, one script: *added 1 (new), 0 (registered already) or -1 (cap reached). */
int gw_fair_redis_reg_add(inv_fleet_conn_t *c, const char *sale, const char *person, long long cap,
                          int *added, char *errbuf, size_t errlen);
/* Whether person is registered; how many are. */
int gw_fair_redis_reg_has(inv_fleet_conn_t *c, const char *sale, const char *person, bool *has,
                          char *errbuf, size_t errlen);
int gw_fair_redis_reg_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                            size_t errlen);
/* The persons of ranks start..stop (0-based, inclusive) in registration order: fn(ctx, person). */
int gw_fair_redis_reg_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                            void (*fn)(void *ctx, const char *person), void *ctx, char *errbuf,
                            size_t errlen);

/*---- the waiting room (gw_room_fleet.c, gw_room.c) ----*/
#define GW_FAIR_REDIS_ROOM_KEY_HEX 16
#define GW_FAIR_REDIS_ROOM_SEED_HEX 32

/* A room's shared state, as the tick and the export read it. */
typedef struct gw_fair_redis_room_state {
    char seed[GW_FAIR_REDIS_ROOM_SEED_HEX + 1]; /* "" when none yet */
    int64_t sealed_ms;                          /* 0 = not sealed */
    uint64_t npre;        /* the pre-queue's persons (counted live before the seal) */
    uint64_t next;        /* places given, the pre-queue's included once sealed */
    uint64_t front_milli; /* admitted through, thousandths of a place */
} gw_fair_redis_room_state_t;

/* The lottery thread's step for one room: offers seed_hex as the room's seed (kept if none
 * yet; "-<seed>" offers none: CM_ENOTFOUND when the room has none), seals the pre-queue when
 * started (at now_ms), then, sealed, adds add_milli to the front without passing (next +
 * ahead) places. Fills *st. With "-", not started and add_milli 0 it only reads. */
int gw_fair_redis_room_tick(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                            bool started, int64_t now_ms, uint64_t add_milli, uint64_t ahead,
                            gw_fair_redis_room_state_t *st, char *errbuf, size_t errlen);

/* A person's join (take) or look at the room, one script: checks seed_hex is the room's
 * (offered as in _tick), enters the pre-queue before the start (member: the key's hex and
 * the person), seals it at the start, finds the place (the pre-queue rank, a later place,
 * or with take a new one at the back, also for a place whose token expired unused) and
 * admits it once the front passed it, the token's expiry fixed at now_s + ttl_s on its
 * first admission. Returns 0 (out: prequeue, or the place and, admitted, the expiry),
 * CM_EBUSY (out->prequeue: the pre-queue holds cap persons), CM_ECONFLICT (seed gets the
 * room's, nothing done), CM_ENOTFOUND (no seed, none offered) or CM_EBACKEND. */
int gw_fair_redis_room_join(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                            const char *member, const char *person, bool before_start, bool take,
                            int64_t now_ms, int ttl_s, uint64_t cap, gw_wr_join_t *out,
                            char seed[GW_FAIR_REDIS_ROOM_SEED_HEX + 1], char *errbuf,
                            size_t errlen);

/* Claims an admission token's replay id (give_back false), unless this claim was given
 * back already: 0 claimed, 1 spent (or held by a buy in flight), 2 held with the same
 * non-zero fp (the buys of one Idempotency-Key hold it together, each by its nonce),
 * GW_WR_CLAIMED, _SPENT and _REPLAY's values; or CM_EBACKEND (the claim may still run
 * later: its give-back undoes it). Gives the claim of (jti, fp, nonce) back (give_back
 * true): its nonce leaves the holders (the key goes with the last), else the claim is
 * marked void for ttl_ms, so one still on its way claims nothing: 1 given back, 0 not
 * held (now void), or CM_EBACKEND. Idempotent. */
int gw_fair_redis_room_claim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                             uint64_t nonce, int64_t ttl_ms, bool give_back, char *errbuf,
                             size_t errlen);

/* The pre-queue's members of ranks start..stop (0-based, inclusive): fn(ctx, member). */
int gw_fair_redis_room_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                             void (*fn)(void *ctx, const char *member), void *ctx, char *errbuf,
                             size_t errlen);

#endif
