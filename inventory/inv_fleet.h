/*
 * The fleet's shared state in the inventory's Redis, behind an interface that
 * exposes no hiredis type: the gateway (gateway/base/gw_fleet.c, gw_token.c) sees
 * connections as an opaque handle and operations by what they mean. This
 * module owns the keys, the scripts and the reply shapes of the fleet's own
 * state below; the fairness store (gateway/buy/gw_fair_redis.c) owns its keys
 * and sends its commands through inv_fleet_cmd and its kin at the end.
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

#include <stdarg.h>
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

/*---- commands for a store above inventory (gateway/buy/gw_fair_redis.c) ----
 *
 * The fairness store keeps its own keys and scripts on the fleet's connection; these
 * calls carry its commands and hand back their replies without hiredis types, so the
 * gateway includes no hiredis and this module names no key of the store. A command is
 * routed by `key` (its hash tag picks the Redis Cluster node: every key of one script
 * shares one tag); its format is hiredis's (printf-like, %b a binary-safe string and
 * its length, each %s one argument, so an empty string needs %b). Not thread-safe on c.
 */

/* A reply, read through the functions below; freed with inv_fleet_reply_free. */
typedef struct inv_fleet_reply inv_fleet_reply_t;

typedef enum inv_fleet_reply_type {
    INV_FLEET_REPLY_OTHER = 0, /* a RESP3 type the store does not ask for */
    INV_FLEET_REPLY_STRING,
    INV_FLEET_REPLY_ARRAY,
    INV_FLEET_REPLY_INTEGER,
    INV_FLEET_REPLY_NIL,
    INV_FLEET_REPLY_STATUS,
    INV_FLEET_REPLY_ERROR
} inv_fleet_reply_type_t;

/*
 * Sends one command on key's node and reads its reply. Returns a new reply (an error
 * reply too), or NULL on a transport failure: c is then broken and inv_fleet_errstr
 * says why.
 */
inv_fleet_reply_t *inv_fleet_cmd(inv_fleet_conn_t *c, const char *key, const char *fmt, ...);
inv_fleet_reply_t *inv_fleet_vcmd(inv_fleet_conn_t *c, const char *key, const char *fmt,
                                  va_list ap);
/* The same with argc arguments (argv borrowed, argl their lengths). */
inv_fleet_reply_t *inv_fleet_cmd_argv(inv_fleet_conn_t *c, const char *key, int argc,
                                      const char **argv, const size_t *argl);

/*
 * Runs a Lua script of the store by its SHA1 (EVALSHA), and once more with its text
 * (EVAL, which loads it) when the node answers NOSCRIPT: a restarted or flushed Redis,
 * a Cluster node that never ran it. The text then crosses the network once per node
 * and flush, not with every call. sha1: the text's SHA1 in 40 hex digits (the caller
 * computes it once). fmt gives what follows the script (numkeys, the keys, the
 * arguments), as inv_fleet_cmd's; the argv form takes them borrowed. Returns as
 * inv_fleet_cmd.
 */
inv_fleet_reply_t *inv_fleet_vscript(inv_fleet_conn_t *c, const char *key, const char *sha1,
                                     const char *text, const char *fmt, va_list ap);
inv_fleet_reply_t *inv_fleet_script_argv(inv_fleet_conn_t *c, const char *key, const char *sha1,
                                         const char *text, int argc, const char **argv,
                                         const size_t *argl);
/* The sha1 those take: the SHA1 of text in 40 lowercase hex digits and a NUL. */
void inv_fleet_script_sha1(const char *text, char sha1[41]);

/* Frees r (NULL is fine). */
void inv_fleet_reply_free(inv_fleet_reply_t *r);
/* r's type. */
inv_fleet_reply_type_t inv_fleet_reply_type(const inv_fleet_reply_t *r);
/* An integer reply's value (0 for the other types). */
long long inv_fleet_reply_integer(const inv_fleet_reply_t *r);
/* The text of a string, status or error reply (NUL-terminated, borrowed from r; its
 * length in inv_fleet_reply_len), NULL for the other types. */
const char *inv_fleet_reply_str(const inv_fleet_reply_t *r);
size_t inv_fleet_reply_len(const inv_fleet_reply_t *r);
/* An array reply's elements (0 for the other types) and element i < that (borrowed). */
size_t inv_fleet_reply_elements(const inv_fleet_reply_t *r);
const inv_fleet_reply_t *inv_fleet_reply_element(const inv_fleet_reply_t *r, size_t i);

/*
 * A pipeline on one node: inv_fleet_pipe_append queues a command without waiting (the
 * first one after a read picks the node by its key; the ones after go to that node:
 * give them keys of one hash tag). Returns 0, CM_EBACKEND when the node cannot be
 * reached (c broken), or CM_ENOMEM when the command was not queued.
 * inv_fleet_pipe_read reads every queued command's reply in order, counting the error
 * replies into *errors; returns 0, or CM_EBACKEND on a transport failure (c broken).
 * Nothing is queued after it.
 */
int inv_fleet_pipe_append(inv_fleet_conn_t *c, const char *key, const char *fmt, ...);
int inv_fleet_pipe_read(inv_fleet_conn_t *c, size_t *errors);

#endif
