/*
 * The fleet's shared state in the inventory's Redis, behind an interface that
 * exposes no hiredis type: the gateway (gateway/gw_fleet.c, gw_token.c) sees
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
 *   {flashgate:fleet}:status_key  the fleet's order status key (SET NX).
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
 * *version; with node_key, also holds that node id key (nodeid_ttl_ms) and
 * sets *node to 1 (held), 2 (was free, claimed again) or -1 (held by another);
 * else *node is 0. Returns 0, or CM_EBACKEND with the reason in errbuf.
 * Not thread-safe on c.
 */
int inv_fleet_heartbeat(inv_fleet_conn_t *c, const char *member, const char *node_key,
                        int member_ttl_ms, int nodeid_ttl_ms, uint32_t *members,
                        uint64_t *version, long long *node, char *errbuf, size_t errlen);

/*
 * Reads the shared config: *version (0 if unset), *limits (the JSON text,
 * malloc'd, NULL if unset; its length in *limits_len) and *by (malloc'd, NULL
 * if unset). Returns 0 or CM_EBACKEND (nothing allocated). Not thread-safe on c.
 */
int inv_fleet_config_get(inv_fleet_conn_t *c, uint64_t *version, char **limits,
                         size_t *limits_len, char **by);

/*
 * Publishes limits as the next config version (by `member`, at wall time
 * `at`) and announces it on the events channel, atomically. Returns 0 with
 * the new version in *version, or CM_EBACKEND with the reason in errbuf.
 * Not thread-safe on c.
 */
int inv_fleet_config_publish(inv_fleet_conn_t *c, const char *limits, const char *member,
                             const char *at, uint64_t *version, char *errbuf, size_t errlen);

/*
 * Tries to claim node id n for member (SET NX PX ttl_ms). Returns 1 claimed
 * (its key in key_out), 0 taken, or CM_EBACKEND with the reason in errbuf.
 * Not thread-safe on c.
 */
int inv_fleet_nodeid_claim(inv_fleet_conn_t *c, uint32_t n, const char *member, int ttl_ms,
                           char *key_out, size_t key_len, char *errbuf, size_t errlen);

/* Deletes a node id key (best effort). Not thread-safe on c. */
void inv_fleet_nodeid_release(inv_fleet_conn_t *c, const char *node_key);

/* Announces "join <member>" on the events channel (best effort). Not thread-safe on c. */
void inv_fleet_announce_join(inv_fleet_conn_t *c, const char *member);

/*
 * Leaves: removes member, frees node_key (when given and still ours) and
 * announces "leave <member>" (best effort). Not thread-safe on c.
 */
void inv_fleet_leave(inv_fleet_conn_t *c, const char *member, const char *node_key);

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

#endif
