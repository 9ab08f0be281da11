/*
 * The fleet's shared state in the inventory's Redis, behind an interface that
 * exposes no hiredis type: the gateway (gateway/base/gw_fleet.c, gw_token.c) sees
 * connections as an opaque handle and operations by what they mean. This
 * module owns the keys, the scripts and the reply shapes.
 *
 * Redis keys (all in the inventory's db, one hash tag so the scripts run on
 * one Redis Cluster slot):
 *   {flashgate:fleet}:members     ZSET member -> expiry (Redis TIME, ms).
 *   {flashgate:fleet}:config      HASH version, limits (JSON), by, at.
 *   flashgate:fleet:events        pub/sub channel: "config <v>", "join <m>",
 *                                 "leave <m>".
 *   {flashgate:fleet}:nodeid:<n>  the member holding node id n (SET NX PX).
 *   {flashgate:fleet}:nodeid_floor HASH n -> the last millisecond (wall, ms) up
 *                                 to which a holder of node id n may have made
 *                                 order ids: a new holder starts after it.
 *   {flashgate:fleet}:status_key  the fleet's order status key (SET NX).
 *   {flashgate:fleet}:figures     HASH member -> its dashboard figures (JSON).
 *   {flashgate:fleet}:uprio_key   the fleet's overload user-priority secret (SET NX).
 *
 * A connection is used by one thread at a time (callers serialise); the
 * functions below are thread-safe on distinct connections. Every call blocks
 * up to the connection's timeout. After an operation fails the connection may
 * be desynchronised: close it and connect again.
 */
#ifndef INV_FLEET_H
#define INV_FLEET_H

#include "common/cm_url.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_FLEET_KEY_CONFIG "{flashgate:fleet}:config"
#define INV_FLEET_KEY_STATUS "{flashgate:fleet}:status_key"
#define INV_FLEET_KEY_UPRIO "{flashgate:fleet}:uprio_key"
#define INV_FLEET_KEY_FLOORS "{flashgate:fleet}:nodeid_floor"

typedef struct inv_fleet_conn inv_fleet_conn_t;

/*
 * Connects to addr, authenticates and selects its db, with timeout_ms per
 * step and per command. Returns the connection, or NULL with
 * "redis: <what failed>" in errbuf. Thread-safe (a new connection each call).
 */
inv_fleet_conn_t *inv_fleet_connect(const cm_redis_url_t *addr, uint32_t timeout_ms,
                                    char *errbuf, size_t errlen);

/* Closes c (NULL is fine). Not thread-safe on c. */
void inv_fleet_close(inv_fleet_conn_t *c);

/* The connection's last transport error text ("" if none). Not thread-safe on c. */
const char *inv_fleet_errstr(const inv_fleet_conn_t *c);

/* The connection's socket, for poll(2). Not thread-safe on c. */
int inv_fleet_fd(const inv_fleet_conn_t *c);

/*
 * One heartbeat: refreshes `member` (live member_ttl_ms), trims the dead,
 * counts the live members into *members, returns the config version in
 * *version; with node_key (node id node_id), also holds that node id key
 * (nodeid_ttl_ms) and sets *node to 1 (held), 2 (was free, claimed again) or
 * -1 (held by another); when held, raises the node id's floor to limit_ms and
 * returns the floor before in *floor (-1: none recorded, i.e. never used or
 * lost by Redis). Without node_key *node and *floor are 0.
 * Returns 0, or CM_EBACKEND with the reason in errbuf. Not thread-safe on c.
 */
int inv_fleet_heartbeat(inv_fleet_conn_t *c, const char *member, const char *node_key,
                        uint32_t node_id, int64_t limit_ms, int member_ttl_ms,
                        int nodeid_ttl_ms, uint32_t *members, uint64_t *version,
                        long long *node, int64_t *floor, char *errbuf, size_t errlen);

/*
 * Reads the shared config: *version (0 if unset), *limits (the JSON text,
 * malloc'd, NULL if unset; its length in *limits_len) and *by (malloc'd, NULL
 * if unset). Returns 0 or CM_EBACKEND (nothing allocated). Not thread-safe on c.
 */
int inv_fleet_config_get(inv_fleet_conn_t *c, uint64_t *version, char **limits,
                         size_t *limits_len, char **by);

/*
 * Publishes limits as the next config version (by `member`, at wall time
 * `at`) and announces it on the events channel, atomically, if the stored
 * version is still `base` (0: none yet), the version the limits were merged
 * over: a compare-and-set, so a change made over stale limits cannot
 * overwrite a newer version. Returns 1 with the new version in *version, 0
 * (nothing written) with the stored version in *version when it moved on, or
 * CM_EBACKEND with the reason in errbuf. Not thread-safe on c.
 */
int inv_fleet_config_publish(inv_fleet_conn_t *c, const char *limits, uint64_t base,
                             const char *member, const char *at, uint64_t *version, char *errbuf,
                             size_t errlen);

/*
 * Tries to claim node id n for member (SET NX PX ttl_ms) and raises its floor
 * to limit_ms. Returns 1 claimed (its key in key_out, the floor before in
 * *floor: the claimer's ids must come after it; -1 when none is recorded,
 * i.e. never used or lost by Redis), 0 taken, or CM_EBACKEND with
 * the reason in errbuf. Not thread-safe on c.
 */
int inv_fleet_nodeid_claim(inv_fleet_conn_t *c, uint32_t n, const char *member, int ttl_ms,
                           int64_t limit_ms, int64_t *floor, char *key_out, size_t key_len,
                           char *errbuf, size_t errlen);

/* Deletes a node id key (best effort). Not thread-safe on c. */
void inv_fleet_nodeid_release(inv_fleet_conn_t *c, const char *node_key);

/* Announces "join <member>" on the events channel (best effort). Not thread-safe on c. */
void inv_fleet_announce_join(inv_fleet_conn_t *c, const char *member);

/*
 * Leaves: removes member, frees node_key (when given and still ours; its
 * floor, if still mine_ms, the last floor we wrote, comes down to last_ms,
 * the millisecond of our last id) and announces "leave <member>" (best
 * effort). Not thread-safe on c.
 */
void inv_fleet_leave(inv_fleet_conn_t *c, const char *member, const char *node_key,
                     uint32_t node_id, int64_t mine_ms, int64_t last_ms);

/*
 * Subscribes c to the events channel; c is then a subscriber only. Returns 0,
 * or CM_EBACKEND with the reason in errbuf. Not thread-safe on c.
 */
int inv_fleet_subscribe(inv_fleet_conn_t *c, char *errbuf, size_t errlen);

/*
 * Reads what the subscriber's socket holds, without blocking past the
 * timeout. Returns 0 or CM_EBACKEND (see inv_fleet_errstr). Not thread-safe on c.
 */
int inv_fleet_sub_read(inv_fleet_conn_t *c);

/*
 * Consumes every complete message already read; *any is set when one was an
 * event. Returns 0 or CM_EBACKEND (see inv_fleet_errstr). Not thread-safe on c.
 */
int inv_fleet_sub_drain(inv_fleet_conn_t *c, bool *any);

/*
 * Offers hex (its length hex_len) as the fleet's status key (SET NX) and reads
 * back the one in force into out (hex_len bytes, not terminated). Returns 0,
 * or CM_EBACKEND when it cannot be read or is not hex_len long. The reply's
 * copy is wiped. Not thread-safe on c.
 */
int inv_fleet_status_key(inv_fleet_conn_t *c, const char *hex, size_t hex_len, char *out);
/* The same for any of the fleet's secrets set once: `key` is one of the
 * INV_FLEET_KEY_* above (INV_FLEET_KEY_STATUS, INV_FLEET_KEY_UPRIO). */
int inv_fleet_secret(inv_fleet_conn_t *c, const char *key, const char *hex, size_t hex_len,
                     char *out);

/* Called with each field and value of a hash (neither NULL). */
typedef void (*inv_fleet_pair_fn)(void *ctx, const char *field, const char *value);

/*
 * The dashboard's fleet view: each gateway's current figures (a small JSON
 * text, gateway/ctl/gw_ring.c) in {flashgate:fleet}:figures, HASH member ->
 * text. Writes `member`'s figures (json NULL: writes nothing), drops the
 * fields of members no longer live in {flashgate:fleet}:members (so the hash
 * holds the live members only) and calls fn(ctx, member, json) for each live
 * member that has figures. One script, one round trip. Returns 0 or
 * CM_EBACKEND with the reason in errbuf. Not thread-safe on c.
 */
int inv_fleet_figures(inv_fleet_conn_t *c, const char *member, const char *json,
                      inv_fleet_pair_fn fn, void *ctx, char *errbuf, size_t errlen);

/* True when c's transport failed (it must be closed). Not thread-safe on c. */
bool inv_fleet_broken(const inv_fleet_conn_t *c);

/*---- the fair-start lottery (gateway/buy/gw_fair_fleet.c) ----
 *
 * Keys: {flashgate:fair}:conf HASH sale -> "window early k0 k1 [wr_rate]", and
 * "elig:<sale>" -> the sale's eligibility rule (gateway/buy/gw_elig.c);
 * per sale {flashgate:fair:<sale>}:e (HASH user -> "order qty idem node", the
 * entries pushed), :pushed (SET of node ids that pushed), :drawn (the entries
 * frozen for the draw), :seed, :won (HASH user -> order), :lock (the
 * drawer's, SET NX PX), :done (the number drawn, once the draw is complete),
 * :entered (SET of node ids that took an entry, before they push), :ep and :ei
 * (each person's entry, taken at entry: below); the waitlist's :wl, :wlock and :wp
 * (below).
 *
 * Unless said otherwise the calls return 0, or CM_EBACKEND with the reason in
 * errbuf (then inv_fleet_broken tells a transport failure from an error
 * reply). Not thread-safe on c.
 */


/* Every sale's lottery configuration: fn(ctx, sale, value). */
int inv_lottery_conf_all(inv_fleet_conn_t *c, inv_fleet_pair_fn fn, void *ctx, char *errbuf,
                         size_t errlen);

/* One sale's configuration into out (*found false when unset or not a string). */
int inv_lottery_conf_get(inv_fleet_conn_t *c, const char *sale, char *out, size_t cap,
                         bool *found, char *errbuf, size_t errlen);

/*
 * A deleted sale's lottery: the configuration's value INV_LOTTERY_DELETED
 * (a tombstone: every gateway drops its own record of the lottery when it
 * reads it, and a sale created again under the id starts a new one), and
 * inv_lottery_clear deletes every per-sale key (entries, entrants, pushed,
 * lock, seed, winners, done, entered, entry marks, registrations, the waiting
 * room's wr/wrpre/wrpl) in one DEL: they share one slot.
 */
#define INV_LOTTERY_DELETED "-"
int inv_lottery_clear(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen);

/* Stores one sale's configuration. */
int inv_lottery_conf_put(inv_fleet_conn_t *c, const char *sale, const char *value, char *errbuf,
                         size_t errlen);
/* Deletes one field of the configuration hash (HDEL; absent is fine). */
int inv_lottery_conf_del(inv_fleet_conn_t *c, const char *field, char *errbuf, size_t errlen);

/*
 * Pushing entries is one pipeline: inv_lottery_push_add queues one entry
 * (HSETNX, so the first push of a user wins) and returns 0 if queued;
 * inv_lottery_push_finish queues "node pushed" when all_added, sends, and
 * reads the `added` replies (plus that one). Returns 1 when every reply was
 * a success, 0 when one was an error reply, or CM_EBACKEND on a transport
 * failure (reason in errbuf).
 */
int inv_lottery_push_add(inv_fleet_conn_t *c, const char *sale, const char *user,
                         const char *value);
int inv_lottery_push_finish(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                            size_t added, bool all_added, char *errbuf, size_t errlen);

/* How many gateways pushed (*n is -1 on an unexpected reply). */
int inv_lottery_pushed_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                             size_t errlen);

/* Whether the draw is complete. */
int inv_lottery_done(inv_fleet_conn_t *c, const char *sale, bool *done, char *errbuf,
                     size_t errlen);

/* Marks the draw complete with n entrants. */
int inv_lottery_done_set(inv_fleet_conn_t *c, const char *sale, size_t n, char *errbuf,
                         size_t errlen);

/*
 * Marks that node_id holds entries of the sale (its window cannot change any
 * more); *busy: whether some gateway holds entries and the draw is not done.
 */
int inv_lottery_entered_mark(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, char *errbuf,
                             size_t errlen);
int inv_lottery_entered(inv_fleet_conn_t *c, const char *sale, bool *busy, char *errbuf,
                        size_t errlen);

/* Tries to take the drawer's lock for node_id (ttl_ms); *mine when taken or node_id's already
 * (then extended). */
int inv_lottery_lock(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, int ttl_ms,
                     bool *mine, char *errbuf, size_t errlen);

/* Extends the drawer's lock to ttl_ms. */
int inv_lottery_lock_renew(inv_fleet_conn_t *c, const char *sale, int ttl_ms, char *errbuf,
                           size_t errlen);

/*
 * Freezes the pushed entries as the draw's entrants (a no-op when a drawer
 * before did, or nobody entered: that error reply is ignored). Returns
 * CM_EBACKEND only on a transport failure.
 */
int inv_lottery_freeze(inv_fleet_conn_t *c, const char *sale);

/* The frozen entrants: fn(ctx, user, "order qty idem node"). */
int inv_lottery_entrants(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn, void *ctx,
                         char *errbuf, size_t errlen);

/* Offers seed_hex as the draw's seed (SET NX: the first drawer's stays). */
int inv_lottery_seed_offer(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                           char *errbuf, size_t errlen);

/* The draw's seed (*seeded false when none yet). */
int inv_lottery_seed_get(inv_fleet_conn_t *c, const char *sale, uint64_t *seed, bool *seeded,
                         char *errbuf, size_t errlen);

/*
 * The recorded winners: fn(ctx, user, order id), or fn(ctx, user,
 * INV_LOTTERY_NOT_ACCEPTED) for an entrant drawn and reserved whose order the
 * drawer's spool refused (given back: not a winner, and not drawn again).
 */
#define INV_LOTTERY_NOT_ACCEPTED "-"
int inv_lottery_winners(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn, void *ctx,
                        char *errbuf, size_t errlen);

/* Records user's winning order. */
int inv_lottery_winner_put(inv_fleet_conn_t *c, const char *sale, const char *user,
                           const char *order_id, char *errbuf, size_t errlen);

/*
 * One entry per person across the fleet, taken at entry: {flashgate:fair:<sale>}:ep
 * (HASH person -> value, "order node account qty at_ms" as gw_fair_fleet.c writes it)
 * and :ei (HASH order id -> person), both set in one script, so two gateways that take
 * entries of one person at once cannot both hold the mark. inv_lottery_entry_mark sets
 * the mark when the person holds none (*taken true), else copies the value held into
 * held. inv_lottery_entry_drop deletes the mark while it is order_id's (an entry that
 * was not written after all). inv_lottery_entry_get reads the entry of an order id on
 * any gateway (*found false: none). Deleted by inv_lottery_clear with the rest.
 */
int inv_lottery_entry_mark(inv_fleet_conn_t *c, const char *sale, const char *person,
                           const char *order_id, const char *value, bool *taken, char *held,
                           size_t cap, char *errbuf, size_t errlen);
/* The marks of n entries in one script, args person, order id, value for each (3 * n
 * strings, borrowed): each taken unless its person holds one. */
int inv_lottery_entry_mark_many(inv_fleet_conn_t *c, const char *sale, const char *const *args,
                                size_t n, char *errbuf, size_t errlen);
int inv_lottery_entry_drop(inv_fleet_conn_t *c, const char *sale, const char *person,
                           const char *order_id, char *errbuf, size_t errlen);
int inv_lottery_entry_get(inv_fleet_conn_t *c, const char *sale, const char *order_id,
                          bool *found, char *person, size_t pcap, char *value, size_t vcap,
                          char *errbuf, size_t errlen);

/*---- the fleet's waitlist (gateway/buy/gw_fair_fleet.c) ----
 *
 * Leftovers by lot across the fleet: the draw's losers wait, in draw order,
 * for units freed after it, and one gateway at a time promotes them. Keys (the
 * lottery's slot, deleted by inv_lottery_clear): {flashgate:fair:<sale>}:wl
 * HASH mode ("w" losers wait, "l" they are lost; unset: an older drawer, lost),
 * ended (the sale ended: the rest are lost), gen (bumped by every change a
 * gateway must learn), head (the draw index before which nobody waits),
 * promoted; :wlock the promoter's lock (its owner id, SET PX); :wp the
 * promotion in progress, "person order owner at_ms", set before its reserve
 * and deleted with its outcome; each outcome goes to :won (person -> order
 * id, or INV_LOTTERY_NOT_ACCEPTED: lost for cause) in the same script.
 * Owner ids are a gateway's data directory's (they survive a restart, which a
 * node id does not). Returns as the lottery calls above. Not thread-safe on c.
 */

/* The waitlist's state, one script: mode ('w', 'l' or 0), ended, gen, head, promoted, and
 * the pending promotion's owner ("" when none). */
typedef struct inv_wl_state {
    char mode;
    bool ended;
    long long gen, head, promoted;
    char owner[40];
} inv_wl_state_t;
int inv_wl_state(inv_fleet_conn_t *c, const char *sale, inv_wl_state_t *st, char *errbuf,
                 size_t errlen);
/* Decides the mode once (HSETNX: a resumed draw keeps the first drawer's). */
int inv_wl_mode_set(inv_fleet_conn_t *c, const char *sale, char mode, char *errbuf,
                    size_t errlen);
/*
 * Takes or renews the promoter's lock for owner (ttl_ms); *mine when held
 * now. The owner of the pending promotion takes it over from whoever holds
 * it: only it can tell from its spool whether that promotion's order exists.
 */
int inv_wl_lock(inv_fleet_conn_t *c, const char *sale, const char *owner, int ttl_ms, bool *mine,
                char *errbuf, size_t errlen);
/* The pending promotion: *found, and its person, order id and owner (cut to each cap). */
int inv_wl_pending(inv_fleet_conn_t *c, const char *sale, bool *found, char *person,
                   size_t person_cap, char *order, size_t order_cap, char *owner,
                   size_t owner_cap, char *errbuf, size_t errlen);
/*
 * Begins the promotion of person's entry order by owner, who must hold the
 * lock: 1 begun (:wp set), 0 refused (the lock is not owner's, the sale
 * ended, a promotion is pending, or person has an outcome already).
 */
int inv_wl_begin(inv_fleet_conn_t *c, const char *sale, const char *owner, const char *person,
                 const char *order, char *errbuf, size_t errlen);
/*
 * The lock's holder owner adopts a pending promotion of another owner that
 * is at least grace_ms old (its owner did not come back to finish it): 1
 * adopted (or owner's already), 0 not (yet).
 */
int inv_wl_adopt(inv_fleet_conn_t *c, const char *sale, const char *owner, int grace_ms,
                 char *errbuf, size_t errlen);
/*
 * Ends the pending promotion of person by the lock's holder owner: result an
 * order id (a winner, counted as promoted), INV_LOTTERY_NOT_ACCEPTED (lost
 * for cause) or "" (no outcome: the stock was gone, the entry still waits);
 * head raised to at least `head`. 1 done (*gen: the generation after it), 0
 * the lock is not owner's (nothing written).
 */
int inv_wl_finish(inv_fleet_conn_t *c, const char *sale, const char *owner, const char *person,
                  const char *result, long long head, long long *gen, char *errbuf,
                  size_t errlen);
/* The sale ended: the waitlist's rest is lost (once; gen bumped). */
int inv_wl_end(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen);

/*---- registration (gateway/buy/gw_reg.c) ----
 *
 * Key: {flashgate:fair:<sale>}:reg, a ZSET person -> rank (1, 2, ...), in the
 * lottery's slot (inv_lottery_clear deletes it with the rest). Returns 0 or
 * CM_EBACKEND with the reason in errbuf. Not thread-safe on c.
 */

/* Registers person, one script: *added 1 (new), 0 (registered already) or -1 (cap reached). */
int inv_reg_add(inv_fleet_conn_t *c, const char *sale, const char *person, long long cap,
                int *added, char *errbuf, size_t errlen);
/* Whether person is registered (ZSCORE). */
int inv_reg_has(inv_fleet_conn_t *c, const char *sale, const char *person, bool *has,
                char *errbuf, size_t errlen);
/* How many persons are registered (ZCARD). */
int inv_reg_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                  size_t errlen);
/* The persons of ranks start..stop (0-based, inclusive) in registration order: fn(ctx, person). */
int inv_reg_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                  void (*fn)(void *ctx, const char *person), void *ctx, char *errbuf,
                  size_t errlen);

/*---- the waiting room (gateway/buy/gw_room_fleet.c) ----
 *
 * Keys, in the lottery's slot (inv_lottery_clear deletes the first three):
 *   {flashgate:fair:<sale>}:wr     HASH seed (32 hex digits, the first offered
 *                                  stays), sealed (ms, absent before the seal),
 *                                  npre, next (places given), front (admitted
 *                                  through, thousandths of a place).
 *   {flashgate:fair:<sale>}:wrpre  ZSET of the pre-queue, every score 0 and
 *                                  each member INV_ROOM_KEY_HEX hex digits of
 *                                  SipHash(seed, person) followed by the person:
 *                                  ZRANK is the rank by the hash (lexicographic
 *                                  order of fixed-width hex is numeric order).
 *   {flashgate:fair:<sale>}:wrpl   HASH person -> "pos exp_s": later arrivals'
 *                                  places and admitted places' token expiry.
 *   {flashgate:fair:<sale>}:wrjti:<jti> the claim of a spent admission token
 *                                  (the Idempotency-Key fingerprint, decimal),
 *                                  PX the token's remaining life: it goes by
 *                                  itself, and a room made again has a new seed
 *                                  and so new replay ids.
 * Returns 0 or CM_EBACKEND with the reason in errbuf, unless said otherwise.
 * Not thread-safe on c.
 */
#define INV_ROOM_KEY_HEX 16
#define INV_ROOM_SEED_HEX 32

/* A room's shared state, as the tick and the export read it. */
typedef struct inv_room_state {
    char seed[INV_ROOM_SEED_HEX + 1]; /* "" when none yet */
    int64_t sealed_ms;                /* 0 = not sealed */
    uint64_t npre;                    /* the pre-queue's persons (counted live before the seal) */
    uint64_t next;                    /* places given, the pre-queue's included once sealed */
    uint64_t front_milli;             /* admitted through, thousandths of a place */
} inv_room_state_t;

/*
 * The lottery thread's step for one room: offers seed_hex as the room's seed
 * (kept if none yet; "-<seed>" offers none: CM_ENOTFOUND when the room has none), seals the pre-queue when started (at now_ms: npre is
 * its size and the later arrivals' places come after it), then, sealed, adds
 * add_milli to the front without passing (next + ahead) places. Fills *st.
 */
int inv_room_tick(inv_fleet_conn_t *c, const char *sale, const char *seed_hex, bool started,
                  int64_t now_ms, uint64_t add_milli, uint64_t ahead, inv_room_state_t *st,
                  char *errbuf, size_t errlen);

/* What inv_room_join found. */
typedef struct inv_room_join {
    bool prequeue; /* not sealed and before the start: in the pre-queue (or looked), no place */
    bool full;     /* a join into a pre-queue of cap persons: refused */
    uint64_t pos;  /* the 1-based place, 0 = none */
    int64_t exp_s; /* the place is admitted: its token's expiry, else 0 */
    char seed[INV_ROOM_SEED_HEX + 1]; /* the room's seed when it is not seed_hex */
} inv_room_join_t;

/*
 * A person's join (take) or look at the room, one script: checks seed_hex is
 * the room's (else out->seed is set and nothing else is done; offered as the
 * room's when it has none, unless given as "-<seed>": then CM_ENOTFOUND), enters the
 * pre-queue before the start (member: the key's hex and the person), seals it
 * at the start, finds the place (the pre-queue rank, a later place, or with
 * take a new one at the back; a place whose token expired unused is given up
 * for one at the back) and admits it when the shared front passed it, the
 * token's expiry fixed at now_s + ttl_s on its first admission.
 */
int inv_room_join(inv_fleet_conn_t *c, const char *sale, const char *seed_hex, const char *member,
                  const char *person, bool before_start, bool take, int64_t now_ms,
                  int ttl_s, uint64_t cap, inv_room_join_t *out, char *errbuf, size_t errlen);

/*
 * Claims an admission token's replay id: SET NX PX ttl_ms of the value
 * "fp:nonce", nonce random per claim, unless this claim was given back
 * already (its void mark, inv_room_unclaim). Returns 0 claimed, 1 spent (or
 * held by a buy in flight), 2 held with the same non-zero fp (the spending
 * buy's retry: this claim holds it too, with its own nonce, until its own
 * give-back), or CM_EBACKEND (a transport error or an error reply: the claim
 * may still run later; inv_room_unclaim with the same nonce undoes it).
 */
int inv_room_claim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                   uint64_t nonce, int64_t ttl_ms, char *errbuf, size_t errlen);

/*
 * Gives back the claim of (jti, fp, nonce): takes that claim's nonce out of
 * the replay id's holders and deletes it with the last one (another buy's
 * claim of the same token stays, a retry's of the same key too),
 * else marks the claim void for ttl_ms, so that a claim still on its way
 * (sent, its reply lost) claims nothing. Returns 1 given back, 0 not held
 * (now void), or CM_EBACKEND. Idempotent.
 */
int inv_room_unclaim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                     uint64_t nonce, int64_t ttl_ms, char *errbuf, size_t errlen);

/* The room's state without changing it. */
int inv_room_state(inv_fleet_conn_t *c, const char *sale, inv_room_state_t *st, char *errbuf,
                   size_t errlen);

/* The pre-queue's members of ranks start..stop (0-based, inclusive) in rank
 * order: fn(ctx, member) (INV_ROOM_KEY_HEX hex digits, then the person). */
int inv_room_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                   void (*fn)(void *ctx, const char *member), void *ctx, char *errbuf,
                   size_t errlen);

#endif
