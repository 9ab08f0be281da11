/*
 * Fleet mode (inventory.backend = redis://...): the gateways of a fleet share
 * their limits and runtime configuration through Redis.
 *
 *  - Membership: each gateway registers itself with a TTL heartbeat; the
 *    number of live gateways n is known within a few seconds of a join or a
 *    leave, and global and per-sale limits are enforced as limit / n on each
 *    gateway (gw_limits_set_share). Per-user limits stay local; the purchase
 *    limit itself is exact in the inventory's Lua script.
 *  - Node ids: a gateway whose node id is not configured claims a free one
 *    in Redis, so order ids stay unique across the fleet.
 *  - Runtime configuration (the limits now; degrade levels later) is versioned
 *    in Redis: an admin change on any gateway is written there (a
 *    compare-and-set on the version it was made on) and published,
 *    every gateway applies it within one second (pub/sub, with a poll as a
 *    fallback), and a restarted gateway loads it at start.
 *
 * Without a Redis inventory every function is a no-op returning 0.
 * Runs its own thread; never touches a worker loop.
 */
#ifndef GW_FLEET_H
#define GW_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_server;

/*
 * Connects, claims a node id if srv->cfg->node_id is 1024 ("derive": sets
 * srv->node.id), registers, loads the fleet's runtime configuration (applying
 * it to srv->stores.limits and srv->cfg) and starts the heartbeat/subscriber thread.
 * Called by gw_server_start after the inventory is open and before the
 * workers start. Returns 0 or a negative cm_err_t with a reason in errbuf.
 */
int gw_fleet_start(struct gw_server *srv, char *errbuf, size_t errlen);
/*
 * Tells the heartbeat/subscriber thread to stop, without waiting for it: the
 * start of a graceful stop, so that a heartbeat blocked on an unresponsive
 * Redis times out while the workers drain instead of after them. Idempotent.
 */
void gw_fleet_stop_request(struct gw_server *srv);
/* Stops the thread and deregisters (so the others re-balance at once). */
void gw_fleet_stop(struct gw_server *srv);
/*
 * Around a whole change of the limits by the admin API (read the current
 * limits, merge, apply, publish, audit): holds off the fleet thread's apply of
 * another gateway's change, which would otherwise land between the read and
 * the publish and be written back over (a lost update). Takes the fleet's pub
 * and config locks (in that order; the Redis connect, if needed, before the
 * config lock); errbuf gets a connect failure, which the publish then reports.
 * No-ops without a fleet. Admin thread.
 */
void gw_fleet_limits_lock(struct gw_server *srv, char *errbuf, size_t errlen);
void gw_fleet_limits_unlock(struct gw_server *srv);
/*
 * A limit field's bit in a change's `fields` (the admin API's names:
 * "global_rps", "global_burst", ... "subnet_burst"); 0 for any other name.
 */
uint32_t gw_fleet_limit_bit(const char *name);
#define GW_FLEET_LIMITS_ALL 0x3ffu /* all ten */
/*
 * Publishes the limits now in srv->cfg (already applied locally by the admin
 * API), a change that set `fields`, as a new version of the fleet
 * configuration, by compare-and-set over the version the change was made on:
 * when another gateway published since, that version is applied here, the
 * change's fields are laid over it and published again (`replaced`, if given,
 * is called each time, under the lock: the limits in force are then the ones
 * the change replaces). Returns 0, or a negative cm_err_t: CM_EBACKEND (Redis
 * unreachable: the change stays in force here and is published once Redis is
 * back, merged the same way) or, only when `refuse`, CM_ECONFLICT (the change
 * could not be merged over the fleet's newer version, or the version kept
 * moving on: the change is not in force, the fleet's version is; errbuf says
 * which version and why, for a 409).
 * Admin thread (or a reload), between gw_fleet_limits_lock and _unlock.
 */
int gw_fleet_publish_limits(struct gw_server *srv, uint32_t fields, bool refuse,
                            void (*replaced)(void *ctx), void *ctx, char *errbuf, size_t errlen);
/* Live gateways of the fleet as last seen (1 without a fleet). Thread-safe. */
uint32_t gw_fleet_members(struct gw_server *srv);
/* The simulator's seam (sim/sim_fairfleet.c), NULL otherwise: the members its
 * gateways, which run no heartbeat thread, are told. Set before any call. */
extern uint32_t (*gw_fleet__members_sim)(struct gw_server *srv);
/* Adds {"fleet": {...}} (members, share, config version, node id) to a jansson object. */
void gw_fleet_stats(struct gw_server *srv, void *json_obj);
/*
 * The generator made no order id (cm_id_next returned 0: the node id was
 * found another gateway's, or its lease ran out): counts the refusal and
 * returns its cause, for the 503. Thread-safe.
 */
const char *gw_fleet_ids_refused(struct gw_server *srv);
/* Node id losses, buys refused for want of an order id, and whether a node id is held
 * (1 without a fleet). Thread-safe. */
void gw_fleet_node_counters(struct gw_server *srv, uint64_t *lost, uint64_t *refused,
                            int *held);

/*
 * The dashboard's fleet view (gateway/ctl/gw_ring.c publishes, the admin API
 * reads). Each tick of the fleet thread puts this gateway's figures, the last
 * JSON text given here (copied), into Redis and reads every live member's
 * back, in one script; a gateway therefore shows its peers' figures at most
 * two ticks old. No-op without a fleet. Thread-safe.
 */
void gw_fleet_figures_set(struct gw_server *srv, const char *json);
/*
 * The fleet's figures as the last tick read them: a JSON array text
 * [{"member": ..., "figures": {...}}, ...] (a new string, the caller frees),
 * and when it was read (wall ms) in *at_ms; NULL without a fleet or before the
 * first read. Thread-safe.
 */
char *gw_fleet_figures_get(struct gw_server *srv, int64_t *at_ms);
/* This gateway's member name in the fleet ("host:pid:listen"), or NULL without a
 * fleet. Valid while the fleet runs. Thread-safe. */
const char *gw_fleet_member(struct gw_server *srv);

#endif
