/*
 * Fleet mode: see gw_fleet.h. Redis itself is spoken by inventory/inv_fleet.h
 * (keys, scripts, replies); this file keeps the policy.
 *
 * Redis keys (all in the inventory's db; names owned by inv_fleet):
 *   {flashgate:fleet}:members ZSET member -> expiry (Redis TIME, ms). A
 *                             member is live while its expiry is ahead; the
 *                             heartbeat refreshes it and trims the dead.
 *   {flashgate:fleet}:config  HASH version (INCR'd by every publish), limits
 *                             (JSON, rates in thousandths of req/s), by, at.
 *   flashgate:fleet:events    pub/sub channel: "config <v>", "join <m>",
 *                             "leave <m>"; any message makes every gateway
 *                             run its tick at once.
 *   {flashgate:fleet}:nodeid:<n>  the member that holds node id n (SET NX, PX
 *                             TTL refreshed by the heartbeat).
 *   {flashgate:fleet}:nodeid_floor  HASH n -> the last millisecond a holder of
 *                             node id n may have put in an order id.
 *
 * Node ids: order ids carry the node id (common/cm_id.h), so a node id held by
 * two gateways at once could repeat an order id. The key can vanish under a
 * live holder (paused past its TTL, DEL, a failover that lost it) and be taken
 * by another gateway. So the generator only makes ids under a lease: every
 * heartbeat that finds the key ours first raises the node id's floor in Redis
 * to now + NODEID_LEASE_MS (past the generator's last id if that is ahead),
 * then lets the generator make ids up to that millisecond (cm_id_gen_lease);
 * whoever claims the node id starts after the floor (cm_id_gen_after_ms), or
 * after its own now + NODEID_LEASE_MS when Redis has none (node_adopt). The
 * holder's ids are all <= the floor it wrote, the next holder's all > it:
 * they cannot meet, whenever the loss is noticed.
 * A heartbeat that finds the key another gateway's revokes the lease (buys
 * answer 503 naming the cause) and claims a free node id, its own first; a
 * heartbeat that cannot run lets the lease run out (503) within
 * NODEID_LEASE_MS.
 *
 * One thread (fleet) owns two blocking Redis connections (inv_fleet_conn_t): `cmd` for the
 * heartbeat script and config reads, `sub` subscribed to the events channel.
 * It sleeps in poll(2) on the subscriber's socket and an eventfd (stop) for
 * at most TICK_MS, then runs a tick: one Lua script that heartbeats, counts
 * the live members, refreshes the node id and returns the config version;
 * when that version is newer than the one applied, the limits are read and
 * applied (so a lost pub/sub message costs at most one tick). The admin
 * thread publishes on a third connection (`pub`, under pub_mu) so it never
 * waits behind a stalled heartbeat.
 *
 * Limits are published with a compare-and-set (publish_locked): a publish
 * carries the version its limits were merged over (applied_version), and the
 * script writes nothing when the stored version has moved on. The change is
 * then merged again over the newer version: that version is read and applied
 * here, the fields the change set (a mask, `pending`) are laid over it, and
 * the result is published again, at most PUBLISH_TRIES times, so a gateway
 * that PATCHes over limits it has not yet seen (newer ones published by
 * another gateway less than a tick before) never writes its stale copy of the
 * other fields back over the newer version.
 *
 * Redis down: the last member count and limits stay in force; the heartbeat
 * retries every tick and the subscriber re-subscribes, then reloads. A limit
 * change that could not be published stays in force here, its fields in
 * `pending`, and is published by the thread once Redis is back, by the same
 * compare-and-set: over a version published meanwhile by another gateway, its
 * fields are laid over that version (they win: they are the later write of
 * those fields) and the fields it did not set keep that version's values.
 *
 * Test seam: debug.fleet_tick (with the debug routes only, read at start) sets
 * the tick's period, so a test can keep a gateway from polling the config
 * (tests/integration/59-fleet-config-cas.py); a pub/sub message still runs it.
 */
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "inventory/inv_fleet.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_url.h"
#include "common/cm_log.h"
#include "common/cm_time.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TICK_MS 1000         /* heartbeat and config poll period */
#define MEMBER_TTL_MS 3000   /* a member missing 3 heartbeats is gone */
#define NODEID_TTL_MS 10000  /* a dead gateway's node id is free after 10 s */
#define NODEID_LEASE_MS 5000 /* order ids run at most this far past the last heartbeat */
#define REDIS_TIMEOUT_MS 1000
#define MIN_TICK_GAP_MS 20   /* pub/sub bursts run the tick at most this often */
/*
 * Publishes of one change before it gives up when the fleet's version keeps
 * moving on under it (each refused publish means another gateway published
 * in between). Bounded because the admin thread holds the limits lock (and
 * its client waits) meanwhile; a gateway beaten this often by the others is
 * better told so (409) than left spinning.
 */
#define PUBLISH_TRIES 4
#define LIMIT_FIELDS 10 /* limit_names: rps and burst of 5 scopes */

typedef struct gw_fleet {
    gw_server_t *srv;
    cm_redis_url_t addr; /* host, port, db, user, password */
    char member[320];
    atomic_bool has_node_key; /* we hold flashgate:nodeid:<node_n> */
    char node_key[64];        /* fleet thread (and start/stop around it) */
    uint32_t node_n;          /* the node id we hold or held last */
    int64_t floor_mine;       /* the highest floor of node_n we wrote (wall ms) */
    _Atomic int node_state;   /* NODE_* */
    _Atomic int64_t lease_until_ms; /* the generator's lease (wall ms) */
    _Atomic uint64_t node_lost;     /* times the node id was found gone or another's */
    _Atomic uint64_t node_refused;  /* buys refused for want of an order id */
    uint64_t last_claim_log_ms;

    pthread_t thread;
    bool thread_started;
    int stop_fd; /* eventfd */
    atomic_bool stopping;

    inv_fleet_conn_t *cmd; /* fleet thread only (and start/stop around it) */
    inv_fleet_conn_t *sub; /* fleet thread only */
    bool sub_fresh;    /* re-subscribed: reload on the next tick */
    uint64_t next_tick_ms;
    bool tick_again; /* the lease leaves the generator no room: heartbeat again at once */
    uint64_t last_err_log_ms;

    pthread_mutex_t pub_mu; /* pub connection, dirty, pending */
    inv_fleet_conn_t *pub;
    bool dirty;       /* a local change not yet in Redis */
    uint32_t pending; /* the fields (gw_fleet_limit_bit) such changes set */
    uint64_t tick_ms; /* TICK_MS, or the test seam's */

    pthread_mutex_t cfg_mu; /* srv->cfg limit fields written by us, applied_version */
    uint64_t applied_version;

    _Atomic uint32_t members;
    _Atomic uint64_t version;
    atomic_bool redis_ok;
    _Atomic uint64_t heartbeats;
    _Atomic uint64_t errors;
    _Atomic uint64_t config_applied;
    _Atomic uint64_t config_conflicts; /* publishes refused: the fleet's version had moved on */
    _Atomic int64_t last_heartbeat_ms;

    pthread_mutex_t fig_mu; /* fig_mine, fig_view, fig_at_ms */
    char *fig_mine;         /* this gateway's figures, put by the next tick */
    char *fig_view;         /* the fleet's, as the last tick read them (JSON array) */
    int64_t fig_at_ms;      /* when (wall ms) */
} gw_fleet_t;

/*---- URL: redis://[[user]:password@]host[:port][/db][?params] ----*/

static int parse_url(gw_fleet_t *f, const char *url, char *errbuf, size_t errlen)
{
    cm_redis_url_t u;
    char why[200];
    if (cm_redis_url_parse(url, &u, why, sizeof(why)) != 0) {
        cm_errbuf_set(errbuf, errlen, "fleet: %s", why);
        return CM_EINVAL;
    }
    /* u.query holds the inventory's own parameters: not ours. */
    if (cm_redis_url_default_password(&u, f->srv->cfg->redis_password) != 0) {
        cm_errbuf_set(errbuf, errlen, "fleet: redis password too long");
        return CM_EINVAL;
    }
    f->addr = u;
    return 0;
}

/*---- connections ----*/

static inv_fleet_conn_t *connect_redis(gw_fleet_t *f, char *errbuf, size_t errlen)
{
    return inv_fleet_connect(&f->addr, REDIS_TIMEOUT_MS, errbuf, errlen);
}

/* Logs a Redis problem at most once every 5 s (a down Redis must not flood the log). */
static void redis_trouble(gw_fleet_t *f, const char *what, const char *why)
{
    atomic_fetch_add(&f->errors, 1);
    bool was_ok = atomic_exchange(&f->redis_ok, false);
    uint64_t now = cm_mono_ms();
    if (was_ok || now - f->last_err_log_ms >= 5000) {
        f->last_err_log_ms = now;
        cm_log_warn("fleet", "redis trouble; keeping the last members and limits",
                    "what=%s err=\"%s\"", what, why);
    }
}

/* A reply that is not what we expect: drop the connection (it may be desynchronised). */
static void drop(inv_fleet_conn_t **c)
{
    if (*c)
        inv_fleet_close(*c);
    *c = NULL;
}

/*---- limits <-> JSON ----*/

static const struct {
    const char *rps, *burst;
    gw_scope_t scope;
} limit_names[] = {
    {"global_rps", "global_burst", GW_SCOPE_GLOBAL},
    {"sale_rps", "sale_burst", GW_SCOPE_SALE},
    {"user_rps", "user_burst", GW_SCOPE_USER},
    {"ip_rps", "ip_burst", GW_SCOPE_IP},
    {"subnet_rps", "subnet_burst", GW_SCOPE_SUBNET},
};

static uint64_t *cfg_rate(gw_config_t *c, gw_scope_t s)
{
    switch (s) {
    case GW_SCOPE_GLOBAL: return &c->global_rps;
    case GW_SCOPE_SALE: return &c->sale_rps;
    case GW_SCOPE_USER: return &c->user_rps;
    case GW_SCOPE_SUBNET: return &c->subnet_rps;
    default: return &c->ip_rps;
    }
}

static uint64_t *cfg_burst(gw_config_t *c, gw_scope_t s)
{
    switch (s) {
    case GW_SCOPE_GLOBAL: return &c->global_burst;
    case GW_SCOPE_SALE: return &c->sale_burst;
    case GW_SCOPE_USER: return &c->user_burst;
    case GW_SCOPE_SUBNET: return &c->subnet_burst;
    default: return &c->ip_burst;
    }
}

/* The limits now in srv->cfg as JSON (rates in thousandths). Caller holds cfg_mu. Caller frees. */
static char *limits_to_json(gw_fleet_t *f)
{
    json_t *o = json_object();
    pthread_mutex_lock(&f->srv->config.mu);
    for (size_t i = 0; i < sizeof(limit_names) / sizeof(limit_names[0]); i++) {
        json_object_set_new(o, limit_names[i].rps,
                            json_integer((json_int_t)*cfg_rate(f->srv->cfg, limit_names[i].scope)));
        json_object_set_new(o, limit_names[i].burst,
                            json_integer((json_int_t)*cfg_burst(f->srv->cfg, limit_names[i].scope)));
    }
    pthread_mutex_unlock(&f->srv->config.mu);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* Marks limits.<name> as set at run time. Caller holds cfg_mu. */
static void mark_runtime(gw_fleet_t *f, const char *name)
{
    char key[48];
    snprintf(key, sizeof(key), "limits.%s", name);
    gw_config_mark_runtime(f->srv->config.conf, key);
}

/*
 * Applies a published limits document: to the limiter (thread-safe) and to
 * srv->cfg (so /admin/v1/config and a later gw_apply_limits agree). A scope
 * whose values are missing or out of range keeps its current policy.
 * Caller holds cfg_mu. Returns the number of scopes applied, or -1 if the
 * document is not a JSON object.
 */
static int apply_limits_json(gw_fleet_t *f, const char *s, size_t len)
{
    json_t *o = json_loadb(s, len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return -1;
    }
    int applied = 0;
    for (size_t i = 0; i < sizeof(limit_names) / sizeof(limit_names[0]); i++) {
        json_t *r = json_object_get(o, limit_names[i].rps);
        json_t *b = json_object_get(o, limit_names[i].burst);
        if (!json_is_integer(r) || !json_is_integer(b))
            continue;
        json_int_t rv = json_integer_value(r), bv = json_integer_value(b);
        if (rv < 0 || (uint64_t)rv > CM_RATE_MILLI_MAX || bv < 0 ||
            (uint64_t)bv > CM_RATE_BURST_MAX || (rv > 0 && bv < 1))
            continue;
        gw_scope_t sc = limit_names[i].scope;
        pthread_mutex_lock(&f->srv->config.mu);
        /* Another gateway's admin change: "runtime" in GET /admin/v1/config, as
         * on that gateway, not the source of the value it replaced. */
        if (*cfg_rate(f->srv->cfg, sc) != (uint64_t)rv)
            mark_runtime(f, limit_names[i].rps);
        if (*cfg_burst(f->srv->cfg, sc) != (uint64_t)bv)
            mark_runtime(f, limit_names[i].burst);
        *cfg_rate(f->srv->cfg, sc) = (uint64_t)rv;
        *cfg_burst(f->srv->cfg, sc) = (uint64_t)bv;
        pthread_mutex_unlock(&f->srv->config.mu);
        gw_limits_set(f->srv->stores.limits, sc,
                      (cm_rate_policy_t){.rate_milli = (uint64_t)rv, .burst = (uint64_t)bv});
        applied++;
    }
    json_decref(o);
    return applied;
}

/*---- config: load and publish ----*/

_Static_assert(sizeof(limit_names) / sizeof(limit_names[0]) * 2 == LIMIT_FIELDS,
               "a rate and a burst per scope");

uint32_t gw_fleet_limit_bit(const char *name)
{
    for (size_t i = 0; i < LIMIT_FIELDS / 2; i++) {
        if (strcmp(name, limit_names[i].rps) == 0)
            return 1u << (2 * i);
        if (strcmp(name, limit_names[i].burst) == 0)
            return 1u << (2 * i + 1);
    }
    return 0;
}

/* The limit fields in srv->cfg, by bit (rate, burst of limit_names[i] at 2i, 2i + 1). */
static void limits_get(gw_fleet_t *f, uint64_t *v)
{
    pthread_mutex_lock(&f->srv->config.mu);
    for (size_t i = 0; i < LIMIT_FIELDS / 2; i++) {
        v[2 * i] = *cfg_rate(f->srv->cfg, limit_names[i].scope);
        v[2 * i + 1] = *cfg_burst(f->srv->cfg, limit_names[i].scope);
    }
    pthread_mutex_unlock(&f->srv->config.mu);
}

/* Puts the limit fields v in force (srv->cfg and the limiter), as an admin
 * change does: a changed field says "runtime". Caller holds cfg_mu. */
static void limits_set(gw_fleet_t *f, const uint64_t *v)
{
    for (size_t i = 0; i < LIMIT_FIELDS / 2; i++) {
        gw_scope_t sc = limit_names[i].scope;
        pthread_mutex_lock(&f->srv->config.mu);
        uint64_t *r = cfg_rate(f->srv->cfg, sc), *b = cfg_burst(f->srv->cfg, sc);
        bool same = *r == v[2 * i] && *b == v[2 * i + 1];
        if (*r != v[2 * i])
            mark_runtime(f, limit_names[i].rps);
        if (*b != v[2 * i + 1])
            mark_runtime(f, limit_names[i].burst);
        *r = v[2 * i];
        *b = v[2 * i + 1];
        pthread_mutex_unlock(&f->srv->config.mu);
        if (!same)
            gw_limits_set(f->srv->stores.limits, sc,
                          (cm_rate_policy_t){.rate_milli = v[2 * i], .burst = v[2 * i + 1]});
    }
}

/*
 * Into out: the limits in force (a newer version of the fleet's, just
 * applied) with the fields in `mask` taken from `want` (a change's values).
 * A scope left with a rate but no burst is not a limit (the newer version
 * turned it off, 0/0, and the change set its rate alone, or the reverse):
 * with `fix` such a scope takes both fields from `want` (valid: they were in
 * force), else the first one's index comes back (-1: every scope valid).
 */
static int limits_merge(gw_fleet_t *f, const uint64_t *want, uint32_t mask, bool fix, uint64_t *out)
{
    limits_get(f, out);
    int bad = -1;
    for (size_t i = 0; i < LIMIT_FIELDS / 2; i++) {
        for (size_t k = 2 * i; k < 2 * i + 2; k++)
            if (mask & (1u << k))
                out[k] = want[k];
        if (out[2 * i] == 0 || out[2 * i + 1] >= 1)
            continue;
        if (fix) {
            out[2 * i] = want[2 * i];
            out[2 * i + 1] = want[2 * i + 1];
        } else if (bad < 0) {
            bad = (int)i;
        }
    }
    return bad;
}

/* Applies the stored config (version v, its limits, by) if newer than the
 * one applied. Caller holds cfg_mu. */
static void config_apply_locked(gw_fleet_t *f, uint64_t v, const char *limits, size_t limits_len,
                                const char *by, const char *what)
{
    if (v > f->applied_version && limits) {
        int n = apply_limits_json(f, limits, limits_len);
        if (n < 0) {
            cm_log_warn("fleet", "fleet config limits are not a JSON object; ignored",
                        "version=%llu", (unsigned long long)v);
        } else {
            atomic_fetch_add(&f->config_applied, 1);
            cm_log_info("fleet", what, "version=%llu by=%s limits=%s scopes=%d",
                        (unsigned long long)v, by ? by : "?", limits, n);
        }
    }
    if (v > f->applied_version)
        f->applied_version = v;
    atomic_store(&f->version, f->applied_version);
}

/* Reads the config hash on `c` and applies it if newer than what we have. */
static int load_config(gw_fleet_t *f, inv_fleet_conn_t *c, bool at_start)
{
    uint64_t v = 0;
    char *limits = NULL, *by = NULL;
    size_t limits_len = 0;
    if (inv_fleet_config_get(c, &v, &limits, &limits_len, &by) < 0)
        return CM_EBACKEND;
    pthread_mutex_lock(&f->cfg_mu);
    config_apply_locked(f, v, limits, limits_len, by,
                        at_start ? "fleet limits loaded" : "fleet limits applied");
    pthread_mutex_unlock(&f->cfg_mu);
    free(limits);
    free(by);
    return 0;
}

/*
 * Lock order, whoever takes more than one: pub_mu, then cfg_mu, then
 * srv->config.mu (then the limiter's own locks, which are leaves). The fleet
 * thread takes cfg_mu alone to apply a peer's change (load_config), and
 * pub_mu alone, or pub_mu then cfg_mu, to publish; the admin thread takes
 * pub_mu then cfg_mu (lock_limits) around a whole change of the limits. A
 * publish refused by the compare-and-set reads and applies the newer version
 * on the pub connection, inside that same hold: no new lock, no new order.
 */

/* pub_mu, with the pub connection made if it can be (before cfg_mu: the connect
 * blocks, and the fleet thread's apply must not wait behind it), then cfg_mu. */
static void lock_limits(gw_fleet_t *f, char *errbuf, size_t errlen)
{
    pthread_mutex_lock(&f->pub_mu);
    if (!f->pub) {
        char why[200] = "";
        f->pub = connect_redis(f, why, sizeof(why));
        if (!f->pub)
            cm_errbuf_set(errbuf, errlen, "fleet: redis %s", why);
    }
    pthread_mutex_lock(&f->cfg_mu);
}

static void unlock_limits(gw_fleet_t *f)
{
    pthread_mutex_unlock(&f->cfg_mu);
    pthread_mutex_unlock(&f->pub_mu);
}

/*
 * Publishes the limits in srv->cfg on the pub connection, a change that set
 * `fields`, by compare-and-set over applied_version (the version they were
 * merged over). Caller holds lock_limits (errbuf holds its connect error, if
 * any).
 *
 * Refused (the stored version moved on): the newer version is read and
 * applied, `replaced` is told (the limits in force are now the ones the change
 * replaces, for its audit), the change's fields, and those of an earlier
 * change not yet in Redis, are laid over it and published again, up to
 * PUBLISH_TRIES publishes. Why merge again rather than answer 409 at once: a
 * PATCH names the fields it sets and no others, so the operator's intent is
 * as clear over the newer version as over the one it was made on, and the
 * race it lost (a tick, ~5 ms after a peer's publish) is not the operator's
 * doing. It does answer 409 (CM_ECONFLICT, when `refuse`) where merging again
 * cannot keep that intent: a merged scope would be no valid limit (the newer
 * version set its rate or burst to 0 and the change set the other field), or
 * the version kept moving on. The change is then not in force here: the
 * fleet's version is. Without `refuse` (the thread's late publish of a change
 * made while Redis was away, a reload: nobody to answer) an invalid scope
 * takes the change's rate and burst both, and a version that keeps moving on
 * leaves the change pending for the next tick.
 *
 * Returns 0, CM_EBACKEND (not published: the change stays in force here and
 * pending; the thread publishes it once Redis is back) or CM_ECONFLICT.
 */
static int publish_locked(gw_fleet_t *f, uint32_t fields, bool refuse, void (*replaced)(void *ctx),
                          void *ctx, char *errbuf, size_t errlen)
{
    uint32_t earlier = f->pending;
    f->pending |= fields;
    f->dirty = true; /* until published */
    if (!f->pub)
        return CM_EBACKEND;
    uint64_t base = f->applied_version;
    for (int t = 1;; t++) {
        /* cfg_mu held across the write so a concurrent apply cannot land between
         * reading our limits and recording the version they became. */
        char *js = limits_to_json(f);
        char at[32];
        snprintf(at, sizeof(at), "%lld", (long long)cm_wall_ms());
        uint64_t v = 0;
        char why[256] = "";
        int rc = inv_fleet_config_publish(f->pub, js, base, f->member, at, &v, why, sizeof(why));
        if (rc == 1) {
            if (v > f->applied_version)
                f->applied_version = v;
            atomic_store(&f->version, f->applied_version);
            f->dirty = false;
            f->pending = 0;
            cm_log_info("fleet", "limits published to the fleet",
                        "version=%llu base=%llu publishes=%d limits=%s", (unsigned long long)v,
                        (unsigned long long)base, t, js);
            free(js);
            return 0;
        }
        free(js);
        if (rc < 0) {
            cm_errbuf_set(errbuf, errlen, "fleet: publish: %s", why);
            drop(&f->pub);
            return CM_EBACKEND;
        }
        /* Refused: version v is stored, not base. Read it (its limits with it). */
        atomic_fetch_add(&f->config_conflicts, 1);
        uint64_t want[LIMIT_FIELDS], merged[LIMIT_FIELDS];
        limits_get(f, want);
        uint64_t sv = 0;
        char *limits = NULL, *by = NULL;
        size_t limits_len = 0;
        if (inv_fleet_config_get(f->pub, &sv, &limits, &limits_len, &by) < 0) {
            cm_errbuf_set(errbuf, errlen,
                          "fleet: publish: the fleet holds version %llu, newer than %llu, and "
                          "reading it failed: %s",
                          (unsigned long long)v, (unsigned long long)base,
                          inv_fleet_errstr(f->pub));
            drop(&f->pub);
            return CM_EBACKEND;
        }
        config_apply_locked(f, sv, limits, limits_len, by,
                            "fleet limits applied (newer than a change here was made over)");
        char who[128];
        snprintf(who, sizeof(who), "%s", by ? by : "?");
        free(limits);
        free(by);
        /* merged over sv's limits now (or over ours, when Redis lost its history
         * and holds an older version than ours: nothing newer to take) */
        base = sv;
        if (!f->pending) {
            f->dirty = false; /* nothing of ours to carry: sv is the whole truth */
            return 0;
        }
        if (replaced)
            replaced(ctx);
        int bad = limits_merge(f, want, f->pending, !refuse, merged);
        if (bad < 0 && t < PUBLISH_TRIES) {
            limits_set(f, merged);
            cm_log_info("fleet",
                        "the fleet's limits moved on under a change here; its fields merged "
                        "over the newer version",
                        "version=%llu by=%s fields=0x%x", (unsigned long long)sv, who, f->pending);
            continue;
        }
        if (!refuse) {
            limits_set(f, merged);
            cm_errbuf_set(errbuf, errlen,
                          "fleet: the fleet's limits kept moving on (%d newer versions, the last "
                          "%llu by %s); the change stays here and is published at the next tick",
                          t, (unsigned long long)sv, who);
            return CM_ECONFLICT;
        }
        /* Not applied: the fleet's version stays in force; an earlier change not
         * yet in Redis keeps its other fields, for the thread to publish. */
        uint32_t keep = earlier & ~fields;
        limits_merge(f, want, keep, true, merged);
        limits_set(f, merged);
        f->pending = keep;
        f->dirty = keep != 0;
        if (bad >= 0)
            cm_errbuf_set(errbuf, errlen,
                          "the fleet's limits moved on to version %llu (by %s) since this "
                          "gateway read them, and this change merged over them leaves %s > 0 "
                          "with %s 0, which is no limit; nothing changed (version %llu is in "
                          "force): send %s and %s together",
                          (unsigned long long)sv, who, limit_names[bad].rps, limit_names[bad].burst,
                          (unsigned long long)sv, limit_names[bad].rps, limit_names[bad].burst);
        else
            cm_errbuf_set(errbuf, errlen,
                          "the fleet's limits kept moving on under this change (%d newer "
                          "versions, the last %llu by %s); nothing changed (version %llu is in "
                          "force): try again",
                          t, (unsigned long long)sv, who, (unsigned long long)sv);
        cm_log_warn("fleet", "a limits change refused: the fleet's version moved on",
                    "version=%llu by=%s reason=\"%s\"", (unsigned long long)sv, who,
                    errbuf ? errbuf : "");
        return CM_ECONFLICT;
    }
}

/* Publishes the limits in srv->cfg on the pub connection. Takes pub_mu and cfg_mu. */
static int publish_now(gw_fleet_t *f, char *errbuf, size_t errlen)
{
    lock_limits(f, errbuf, errlen);
    int rc = publish_locked(f, 0, false, NULL, NULL, errbuf, errlen);
    unlock_limits(f);
    return rc;
}

/*---- node id ----*/

enum { NODE_FIXED = 0, NODE_HELD = 1, NODE_LOST = 2 };

/*
 * The lease a heartbeat or a claim asks for: NODEID_LEASE_MS past now, or past
 * the generator's last id when that is ahead of the wall clock (ids never go
 * back: after the clock stepped back, or after a floor ahead of it). A lease
 * of "now + 5 s" below the last id left the generator no id to make: every
 * buy 503 until the clock caught up (integration.69-fleet-lease).
 */
static int64_t lease_limit(gw_fleet_t *f)
{
    int64_t now = cm_wall_ms(), last = cm_id_gen_last_ms(&f->srv->node.ids);
    return (last > now ? last : now) + NODEID_LEASE_MS;
}

/*
 * Node id n is ours, its floor raised to `limit` (the floor before: `floor`):
 * the generator makes ids of n up to limit. A fresh claim, or a floor raised
 * by someone else since we wrote it, means another gateway may have made ids
 * of n up to that floor: ours start after it. No floor recorded (-1) is
 * either a node id never used or one Redis lost (FLUSHALL, a restart without
 * persistence): then a holder may still make ids under a lease it wrote
 * before, up to NODEID_LEASE_MS past its last heartbeat, so ours start after
 * `limit` (now + NODEID_LEASE_MS), which is past that on a clock like ours.
 * Taking it as 0 would start ours at the wall clock, in the milliseconds a
 * paused holder makes its ids in after it resumes (integration.69-fleet-lease).
 * The generator is moved first and the lease stored after (cm_id_next reads
 * them in the other order).
 */
static void node_adopt(gw_fleet_t *f, uint32_t n, int64_t floor, int64_t limit, bool fresh)
{
    cm_id_gen_t *g = &f->srv->node.ids;
    if (floor < 0)
        floor = limit;
    if (fresh || floor > f->floor_mine) {
        cm_id_gen_after_ms(g, floor);
        /* ids of n at or below the floor are another holder's, not this process's */
        if (floor > atomic_load(&f->srv->node.since_ms))
            atomic_store(&f->srv->node.since_ms, floor);
    }
    if (fresh || limit > f->floor_mine)
        f->floor_mine = limit;
    f->node_n = n;
    atomic_store(&f->srv->node.id, n);
    cm_id_gen_lease(g, n, limit);
    atomic_store(&f->lease_until_ms, limit);
    atomic_store(&f->has_node_key, true);
    atomic_store(&f->node_state, NODE_HELD);
    /* a floor at or past the lease asked for (another gateway's clock or ids
     * ahead): the next heartbeat asks past it, so run it now, not in a second */
    if (cm_id_gen_last_ms(g) >= limit)
        f->tick_again = true;
}

/*
 * Claims a free node id starting at `start` (the derived one at start; our
 * lost one after a loss, so it is taken again if free). On `c`.
 */
static int claim_node_id(gw_fleet_t *f, inv_fleet_conn_t *c, uint32_t start, char *errbuf,
                         size_t errlen)
{
    start %= CM_ID_NODE_MAX + 1;
    for (uint32_t i = 0; i <= CM_ID_NODE_MAX; i++) {
        uint32_t n = (start + i) % (CM_ID_NODE_MAX + 1);
        char why[200] = "";
        int64_t limit = lease_limit(f), floor = 0;
        int got = inv_fleet_nodeid_claim(c, n, f->member, NODEID_TTL_MS, limit, &floor,
                                         f->node_key, sizeof(f->node_key), why, sizeof(why));
        if (got < 0) {
            cm_errbuf_set(errbuf, errlen, "fleet: node id claim: %s", why);
            return CM_EBACKEND;
        }
        if (got > 0) {
            node_adopt(f, n, floor, limit, true);
            return 0;
        }
    }
    cm_errbuf_set(errbuf, errlen, "fleet: all %u node ids are taken", CM_ID_NODE_MAX + 1);
    return CM_EBUSY;
}

/* Another gateway holds our node id: no more ids under it, from now on. */
static void node_lost(gw_fleet_t *f)
{
    cm_id_gen_revoke(&f->srv->node.ids);
    atomic_store(&f->node_state, NODE_LOST);
    atomic_store(&f->has_node_key, false);
    atomic_fetch_add(&f->node_lost, 1);
    cm_log_error("fleet",
                 "another gateway holds our node id (ours vanished from redis: paused past its "
                 "TTL, or lost); no order ids under it from now on, buys answer 503 until a "
                 "free node id is claimed",
                 "key=%s node_id=%u", f->node_key, f->node_n);
}

/* After a loss: claims our node id again if it is free, else another free one. */
static void node_reclaim(gw_fleet_t *f)
{
    char why[256] = "";
    uint32_t was = f->node_n;
    int rc = claim_node_id(f, f->cmd, was, why, sizeof(why));
    if (rc == 0) {
        cm_log_warn("fleet", "node id claimed after a loss; order ids again", "node_id=%u was=%u",
                    f->node_n, was);
        return;
    }
    if (rc == CM_EBACKEND)
        drop(&f->cmd);
    uint64_t now = cm_mono_ms();
    if (now - f->last_claim_log_ms >= 5000) {
        f->last_claim_log_ms = now;
        cm_log_error("fleet", "no node id to claim; buys answer 503", "err=\"%s\"", why);
    }
}

/*---- the thread ----*/

static void sub_connect(gw_fleet_t *f)
{
    char why[200] = "";
    inv_fleet_conn_t *c = connect_redis(f, why, sizeof(why));
    if (!c) {
        redis_trouble(f, "subscribe", why);
        return;
    }
    if (inv_fleet_subscribe(c, why, sizeof(why)) < 0) {
        redis_trouble(f, "subscribe", why);
        inv_fleet_close(c);
        return;
    }
    f->sub = c;
    f->sub_fresh = true; /* anything announced while we were away: reload now */
}

static void apply_members(gw_fleet_t *f, uint32_t n)
{
    if (n < 1)
        n = 1;
    uint32_t old = atomic_exchange(&f->members, n);
    if (old != n) {
        gw_limits_set_share(f->srv->stores.limits, n);
        cm_log_info("fleet", "fleet members changed; limits share re-balanced",
                    "members=%u was=%u", n, old);
    }
}

/*---- the dashboard's fleet view ----*/

static void figures_one(void *ctx, const char *member, const char *json)
{
    json_t *arr = ctx;
    json_error_t e;
    json_t *fig = json_loads(json, 0, &e);
    json_array_append_new(arr, json_pack("{s:s,s:o}", "member", member, "figures",
                                         fig ? fig : json_null()));
}

/*
 * Puts this gateway's latest figures and reads every live member's, in one
 * script on the heartbeat's connection: the admin route then answers the
 * fleet view from memory, with no Redis work per request, and Redis sees one
 * small script per gateway per tick.
 */
static void figures_sync(gw_fleet_t *f)
{
    pthread_mutex_lock(&f->fig_mu);
    char *mine = f->fig_mine;
    f->fig_mine = NULL;
    pthread_mutex_unlock(&f->fig_mu);
    json_t *arr = json_array();
    char why[200] = "";
    int rc = inv_fleet_figures(f->cmd, f->member, mine, figures_one, arr, why, sizeof(why));
    free(mine);
    if (rc < 0) {
        json_decref(arr);
        redis_trouble(f, "figures", why);
        if (inv_fleet_broken(f->cmd))
            drop(&f->cmd);
        return;
    }
    char *view = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    pthread_mutex_lock(&f->fig_mu);
    free(f->fig_view);
    f->fig_view = view;
    f->fig_at_ms = cm_wall_ms();
    pthread_mutex_unlock(&f->fig_mu);
}

/* One heartbeat + membership count + node id refresh + config check. */
static void tick(gw_fleet_t *f)
{
    char why[200] = "";
    if (!f->cmd && !(f->cmd = connect_redis(f, why, sizeof(why)))) {
        redis_trouble(f, "heartbeat", why);
        return;
    }
    uint32_t n = 0;
    uint64_t v = 0;
    long long node = 0;
    int64_t floor = 0;
    bool held = atomic_load(&f->has_node_key);
    /* the lease this heartbeat asks for, from before it is sent */
    int64_t limit = lease_limit(f);
    f->tick_again = false;
    if (inv_fleet_heartbeat(f->cmd, f->member, held ? f->node_key : NULL, f->node_n, limit,
                            MEMBER_TTL_MS, NODEID_TTL_MS, &n, &v, &node, &floor, why,
                            sizeof(why)) < 0) {
        redis_trouble(f, "heartbeat", why);
        drop(&f->cmd);
        return;
    }
    if (!atomic_exchange(&f->redis_ok, true))
        cm_log_info("fleet", "redis reachable; heartbeat running", "members=%u", n);
    atomic_fetch_add(&f->heartbeats, 1);
    atomic_store(&f->last_heartbeat_ms, cm_wall_ms());
    apply_members(f, n);
    if (held && node == 1) {
        node_adopt(f, f->node_n, floor, limit, false);
    } else if (held && node == 2) {
        /* gone and taken again by this heartbeat: if another gateway held it
         * meanwhile, its floor is above ours and our ids start after it */
        atomic_fetch_add(&f->node_lost, 1);
        cm_log_warn("fleet", "node id had vanished from redis (expired or lost); claimed again",
                    "key=%s floor_ms=%lld ours_ms=%lld", f->node_key, (long long)floor,
                    (long long)f->floor_mine);
        node_adopt(f, f->node_n, floor, limit, false);
    } else if (held && node < 0) {
        node_lost(f);
    }
    if (atomic_load(&f->node_state) == NODE_LOST) {
        node_reclaim(f);
        if (!f->cmd)
            return;
    }
    figures_sync(f);
    if (!f->cmd)
        return;

    pthread_mutex_lock(&f->pub_mu);
    bool dirty = f->dirty;
    pthread_mutex_unlock(&f->pub_mu);
    if (dirty) {
        char e[256] = "";
        int rc = publish_now(f, e, sizeof(e));
        if (rc == 0)
            cm_log_info("fleet", "a limit change made while redis was away is now published",
                        NULL);
        else if (rc == CM_ECONFLICT)
            cm_log_warn("fleet", "a limit change made while redis was away is not published yet",
                        "reason=\"%s\"", e);
        return;
    }
    pthread_mutex_lock(&f->cfg_mu);
    bool newer = v > f->applied_version;
    pthread_mutex_unlock(&f->cfg_mu);
    if ((newer || f->sub_fresh) && load_config(f, f->cmd, false) < 0) {
        redis_trouble(f, "config", inv_fleet_errstr(f->cmd));
        drop(&f->cmd);
        return;
    }
    f->sub_fresh = false;
}

/* Reads every complete message waiting on the subscriber. Returns true if any. */
static bool drain_sub(gw_fleet_t *f)
{
    bool any = false;
    if (inv_fleet_sub_drain(f->sub, &any) < 0) {
        redis_trouble(f, "subscriber", inv_fleet_errstr(f->sub));
        drop(&f->sub);
    }
    return any;
}

static void *fleet_thread(void *arg)
{
    gw_fleet_t *f = arg;
    uint64_t last_tick = 0;
    f->next_tick_ms = cm_mono_ms() + f->tick_ms;
    while (!atomic_load(&f->stopping)) {
        if (!f->sub)
            sub_connect(f);
        bool wake = f->sub_fresh;
        if (f->sub)
            wake |= drain_sub(f);
        uint64_t now = cm_mono_ms();
        if (wake && now - last_tick < MIN_TICK_GAP_MS) {
            /* a burst of events: run once, shortly */
            f->next_tick_ms = last_tick + MIN_TICK_GAP_MS;
            wake = false;
        }
        if (wake || now >= f->next_tick_ms) {
            tick(f);
            last_tick = cm_mono_ms();
            f->next_tick_ms = last_tick + (f->tick_again ? MIN_TICK_GAP_MS : f->tick_ms);
            continue;
        }
        struct pollfd pf[2] = {{.fd = f->stop_fd, .events = POLLIN},
                               {.fd = f->sub ? inv_fleet_fd(f->sub) : -1, .events = POLLIN}};
        int timeout = (int)(f->next_tick_ms - now);
        int n = poll(pf, 2, timeout);
        if (n > 0 && (pf[1].revents & (POLLIN | POLLERR | POLLHUP)) && f->sub) {
            if (inv_fleet_sub_read(f->sub) < 0) {
                redis_trouble(f, "subscriber", inv_fleet_errstr(f->sub));
                drop(&f->sub);
            }
        }
    }
    return NULL;
}

/*---- public ----*/

static bool fleet_enabled(const gw_server_t *srv)
{
    return cm_redis_url_is(srv->cfg->inventory);
}

static void fleet_free(gw_fleet_t *f)
{
    drop(&f->cmd);
    drop(&f->sub);
    drop(&f->pub);
    if (f->stop_fd >= 0)
        close(f->stop_fd);
    pthread_mutex_destroy(&f->pub_mu);
    pthread_mutex_destroy(&f->cfg_mu);
    pthread_mutex_destroy(&f->fig_mu);
    free(f->fig_mine);
    free(f->fig_view);
    free(f);
}

int gw_fleet_start(struct gw_server *srv, char *errbuf, size_t errlen)
{
    if (!fleet_enabled(srv))
        return 0;
    gw_fleet_t *f = cm_xcalloc(1, sizeof(*f));
    f->srv = srv;
    f->stop_fd = -1;
    pthread_mutex_init(&f->pub_mu, NULL);
    pthread_mutex_init(&f->cfg_mu, NULL);
    pthread_mutex_init(&f->fig_mu, NULL);
    atomic_init(&f->members, 1);
    f->tick_ms = TICK_MS;
    if (srv->cfg->debug_fleet_tick_ms) /* test seam: see the top */
        f->tick_ms = srv->cfg->debug_fleet_tick_ms;
    int rc = parse_url(f, srv->cfg->inventory, errbuf, errlen);
    if (rc < 0)
        goto fail;
    char host[128] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(f->member, sizeof(f->member), "%s:%ld:%s", host, (long)getpid(), srv->cfg->listen);

    char why[200] = "";
    f->cmd = connect_redis(f, why, sizeof(why));
    if (!f->cmd) {
        cm_errbuf_set(errbuf, errlen, "fleet: redis %s", why);
        rc = CM_EBACKEND;
        goto fail;
    }
    if (srv->cfg->node_id > CM_ID_NODE_MAX) {
        cm_id_gen_revoke(&srv->node.ids); /* until a node id is ours */
        if ((rc = claim_node_id(f, f->cmd, srv->node.id, errbuf, errlen)) < 0)
            goto fail;
        cm_log_info("fleet", "node id claimed", "node_id=%u key=%s", srv->node.id, f->node_key);
    }
    /* The fleet's limits win over the local flags: a restart rejoins them. */
    if ((rc = load_config(f, f->cmd, true)) < 0) {
        cm_errbuf_set(errbuf, errlen, "fleet: cannot read %s: %s", INV_FLEET_KEY_CONFIG,
                      inv_fleet_errstr(f->cmd));
        goto fail;
    }
    atomic_store(&f->redis_ok, true);
    tick(f); /* register and learn the member count before the first request */
    inv_fleet_announce_join(f->cmd, f->member);
    f->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f->stop_fd < 0) {
        cm_errbuf_set(errbuf, errlen, "fleet: eventfd: %s", strerror(errno));
        rc = CM_EIO;
        goto fail;
    }
    if (pthread_create(&f->thread, NULL, fleet_thread, f) != 0) {
        cm_errbuf_set(errbuf, errlen, "fleet: cannot start the fleet thread");
        rc = CM_ENOMEM;
        goto fail;
    }
    f->thread_started = true;
    srv->node.fleet = f;
    cm_log_info("fleet", "fleet member registered",
                "member=%s members=%u node_id=%u config_version=%llu", f->member,
                atomic_load(&f->members), srv->node.id,
                (unsigned long long)atomic_load(&f->version));
    return 0;
fail:
    if (atomic_load(&f->has_node_key) && f->cmd)
        inv_fleet_nodeid_release(f->cmd, f->node_key);
    fleet_free(f);
    return rc;
}

void gw_fleet_stop_request(struct gw_server *srv)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f || atomic_exchange(&f->stopping, true))
        return;
    uint64_t one = 1;
    if (write(f->stop_fd, &one, sizeof(one)) < 0)
        cm_log_warn("fleet", "cannot wake the fleet thread", "err=\"%s\"", strerror(errno));
}

void gw_fleet_stop(struct gw_server *srv)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f)
        return;
    gw_fleet_stop_request(srv);
    if (f->thread_started)
        pthread_join(f->thread, NULL);
    /* Leave now, so the others re-balance without waiting for our TTL. */
    char why[200] = "";
    if (!f->cmd)
        f->cmd = connect_redis(f, why, sizeof(why));
    if (f->cmd) {
        /* the workers are stopped: no id comes after the generator's last */
        inv_fleet_leave(f->cmd, f->member, atomic_load(&f->has_node_key) ? f->node_key : NULL,
                        f->node_n, f->floor_mine, cm_id_gen_last_ms(&srv->node.ids));
        cm_log_info("fleet", "left the fleet", "member=%s", f->member);
    } else {
        cm_log_warn("fleet", "cannot deregister; the others see us leave after the TTL",
                    "err=\"%s\" ttl_ms=%d", why, MEMBER_TTL_MS);
    }
    srv->node.fleet = NULL;
    fleet_free(f);
}

void gw_fleet_limits_lock(struct gw_server *srv, char *errbuf, size_t errlen)
{
    if (srv->node.fleet)
        lock_limits(srv->node.fleet, errbuf, errlen);
}

void gw_fleet_limits_unlock(struct gw_server *srv)
{
    if (srv->node.fleet)
        unlock_limits(srv->node.fleet);
}

int gw_fleet_publish_limits(struct gw_server *srv, uint32_t fields, bool refuse,
                            void (*replaced)(void *ctx), void *ctx, char *errbuf, size_t errlen)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f)
        return 0;
    return publish_locked(f, fields, refuse, replaced, ctx, errbuf, errlen);
}

uint32_t (*gw_fleet__members_sim)(struct gw_server *srv);

uint32_t gw_fleet_members(struct gw_server *srv)
{
    if (gw_fleet__members_sim)
        return gw_fleet__members_sim(srv);
    gw_fleet_t *f = srv->node.fleet;
    uint32_t n = f ? atomic_load(&f->members) : 1;
    return n ? n : 1;
}

void gw_fleet_stats(struct gw_server *srv, void *json_obj)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f || !json_obj)
        return;
    uint32_t n = atomic_load(&f->members);
    int64_t last = atomic_load(&f->last_heartbeat_ms);
    int state = atomic_load(&f->node_state);
    int64_t lease = atomic_load(&f->lease_until_ms);
    json_t *o = json_pack(
        "{s:b,s:s,s:I,s:I,s:I,s:I,s:b,s:b,s:s,s:I,s:I,s:I,s:b,s:I,s:I,s:I,s:I}", "enabled", 1,
        "member", f->member, "members", (json_int_t)n, "share", (json_int_t)n, "config_version",
        (json_int_t)atomic_load(&f->version), "node_id", (json_int_t)srv->node.id,
        "node_id_claimed", atomic_load(&f->has_node_key), "node_id_conflict",
        state == NODE_LOST, "node_id_state",
        state == NODE_FIXED ? "fixed" : state == NODE_LOST ? "lost" : "held", "node_id_lost",
        (json_int_t)atomic_load(&f->node_lost), "node_id_refused",
        (json_int_t)atomic_load(&f->node_refused), "node_id_lease_ms",
        (json_int_t)(state == NODE_FIXED ? -1 : lease - cm_wall_ms()),
        "redis_ok", atomic_load(&f->redis_ok), "heartbeats",
        (json_int_t)atomic_load(&f->heartbeats), "errors", (json_int_t)atomic_load(&f->errors),
        "config_applied", (json_int_t)atomic_load(&f->config_applied), "last_heartbeat_ms_ago",
        (json_int_t)(last ? cm_wall_ms() - last : -1));
    if (!o)
        return;
    json_object_set_new(o, "config_conflicts",
                        json_integer((json_int_t)atomic_load(&f->config_conflicts)));
    /* What this gateway enforces of the fleet-wide scopes (req/s, rounded up as gw_limit does). */
    uint32_t d = n ? n : 1;
    cm_rate_policy_t g = gw_limits_get(srv->stores.limits, GW_SCOPE_GLOBAL);
    cm_rate_policy_t s = gw_limits_get(srv->stores.limits, GW_SCOPE_SALE);
    uint64_t g_share = (g.rate_milli + d - 1) / d, s_share = (s.rate_milli + d - 1) / d;
    json_object_set_new(o, "global_rps_share", json_real((double)g_share / 1000.0));
    json_object_set_new(o, "sale_rps_share", json_real((double)s_share / 1000.0));
    json_object_set_new(json_obj, "fleet", o);
}

const char *gw_fleet_ids_refused(struct gw_server *srv)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f)
        return "no order id can be made";
    atomic_fetch_add_explicit(&f->node_refused, 1, memory_order_relaxed);
    return atomic_load(&f->node_state) == NODE_LOST
               ? "this gateway's node id was taken by another gateway and no free one is "
                 "claimed yet, so it cannot make order ids that are unique"
               : "this gateway's node id is not confirmed in redis yet (just claimed, or "
                 "the fleet heartbeat is late), so it cannot make order ids that are unique";
}

void gw_fleet_node_counters(struct gw_server *srv, uint64_t *lost, uint64_t *refused,
                            int *held)
{
    gw_fleet_t *f = srv->node.fleet;
    *lost = f ? atomic_load(&f->node_lost) : 0;
    *refused = f ? atomic_load(&f->node_refused) : 0;
    *held = !f || atomic_load(&f->node_state) != NODE_LOST;
}

void gw_fleet_figures_set(struct gw_server *srv, const char *json)
{
    gw_fleet_t *f = srv->node.fleet;
    if (!f)
        return;
    char *copy = cm_xstrdup(json);
    pthread_mutex_lock(&f->fig_mu);
    free(f->fig_mine);
    f->fig_mine = copy;
    pthread_mutex_unlock(&f->fig_mu);
}

char *gw_fleet_figures_get(struct gw_server *srv, int64_t *at_ms)
{
    gw_fleet_t *f = srv->node.fleet;
    *at_ms = 0;
    if (!f)
        return NULL;
    pthread_mutex_lock(&f->fig_mu);
    char *s = f->fig_view ? cm_xstrdup(f->fig_view) : NULL;
    *at_ms = f->fig_at_ms;
    pthread_mutex_unlock(&f->fig_mu);
    return s;
}

const char *gw_fleet_member(struct gw_server *srv)
{
    return srv->node.fleet ? srv->node.fleet->member : NULL;
}
