/*
 * gateway/ctl: the server's lifecycle (gw_server.c), the admin API
 * (gw_admin.c), its audit log (gw_audit.h), /metrics (gw_metrics.c) and the
 * Kafka hand-off (gw_kafka.c). The top layer: it may use every folder.
 */
#ifndef GW_CTL_H
#define GW_CTL_H

#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_types.h"
#include "gateway/ctl/gw_ctl_t.h"

/*
 * Everything a start checks before it binds, without changing anything: the
 * data dir exists as a writable directory or can be created, the listen
 * addresses parse, server.trusted_proxies parses, <data-dir>/status.key (when
 * present) is a key of the owner's alone, and the admin listener's tokens and
 * TLS files are as gw_admin_start needs them. gw_server_start and
 * --check-config both run it, so a configuration the check passes does not
 * then fail to start short of binding. Returns 0 or a negative CM_E* with the
 * reason in errbuf. Thread-safe as long as nothing starts the admin listener
 * at the same time (its TLS state is the process's).
 */
int gw_server_check(const gw_config_t *cfg, char *errbuf, size_t errlen);

/* The admin listener's part of gw_server_check: token files,
 * server.admin_listen and the rules on it, the TLS files. Loads nothing it
 * keeps. Returns 0 or a negative CM_E* (errbuf says why). */
int gw_admin_check(const gw_config_t *cfg, char *errbuf, size_t errlen);

/*
 * Starts the server: opens inventory, spool (replaying it), limiter, workers
 * and the admin listener. Returns 0, or a negative cm_err_t with the reason in
 * errbuf. Single-threaded init.
 */
int gw_server_start(gw_server_t *srv, gw_config_t *cfg, cm_conf_t *conf, char *errbuf,
                    size_t errlen);
/* Stops accepting, drains, and frees everything. */
void gw_server_stop(gw_server_t *srv);

/*
 * The first step of a graceful stop: /readyz answers 503 "draining" from now
 * on, so load balancers and orchestrators take this gateway out, while every
 * other route keeps serving until gw_server_stop. Thread-safe.
 */
void gw_server_leave(gw_server_t *srv);

/*
 * SIGHUP: reads the configuration again from the same sources (argv, the
 * environment, the --config file) and applies the keys whose value changed
 * since it was last read and that can change at run time (CM_OPT_RUNTIME keys
 * and log.level); keys that cannot are logged as needing a restart and keep
 * their value. A configuration that does not validate changes nothing.
 * Returns 0 with the counts in *applied and *restart, or CM_EINVAL (errors
 * logged). Main thread only (the one that calls gw_server_start/stop).
 */
int gw_server_reload(gw_server_t *srv, int argc, char **argv, unsigned *applied,
                     unsigned *restart);

/*
 * Liveness (gw_liveness.c): whether every running worker loop has turned
 * within server.liveness_timeout. True if so (or the check is off, or the
 * workers are not serving); false fills *out with the worker whose loop has
 * waited longest and its age. Thread-safe; never blocks.
 */
typedef struct gw_liveness {
    unsigned worker;     /* the stuck worker's index */
    uint64_t age_ms;     /* since its loop last turned */
    uint64_t timeout_ms; /* server.liveness_timeout */
} gw_liveness_t;
bool gw_liveness_check(gw_server_t *srv, gw_liveness_t *out);
/* GET /healthz on the admin listener: gw_http_health's 200 "alive", or 503
 * {"status":"stuck","code":"loop_stuck","worker":N,"age_ms":A,...} while
 * gw_liveness_check fails. Thread-safe. */
void gw_liveness_health(gw_server_t *srv, gw_resp_t *out);
/* A periodic watcher's step (main.c's systemd watchdog timer): the check,
 * logged once when a loop gets stuck and once when all turn again. Returns
 * the check's answer. `st` is the caller's, zeroed before the first call. */
typedef struct gw_liveness_watch {
    bool stuck;
    unsigned worker;
} gw_liveness_watch_t;
bool gw_liveness_watch(gw_server_t *srv, gw_liveness_watch_t *st);

/* Admin tokens: a name (the audit's "who"), a role, the secret. */
typedef struct gw_admin_token {
    char name[33];
    gw_role_t role;
    char token[257];
    size_t len;
} gw_admin_token_t;

/* The dashboard's files, embedded at build time (generated gw_dashboard_assets.c). */
typedef struct gw_asset {
    const char *name; /* "index.html", "uPlot.iife.min.js", ... */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
} gw_asset_t;
extern const gw_asset_t gw_assets[];
extern const size_t gw_nassets;

/* The admin API's routing of one request, apart from its connection (the
 * seam its unit test drives). route: index of the route of this method and
 * path, -1 if none; role: that route's; any: some route has this path; allow:
 * the methods of the path's routes ("GET, PUT"); arg: the {parameter} segment;
 * needs_token: the route (or, with no route of this method, every route of the
 * path) is not open to all. */
typedef struct gw_admin_match {
    int route;
    gw_role_t role;
    bool any, needs_token;
    char allow[96];
    char arg[160];
} gw_admin_match_t;
/* Matches method and url against the admin routes (the debug ones only with
 * debug_routes). Pure, thread-safe. */
void gw__admin_match(const char *method, const char *url, bool debug_routes,
                     gw_admin_match_t *m);
/* The answer the admin API gives a match before any route runs, given the role
 * of the token presented (GW_ROLE_NONE: none, or a wrong one): 401, 404, 405 or
 * 403 in that order, else GW_R_OK (the route runs). Pure, thread-safe. */
gw_reply_t gw__admin_verdict(const gw_admin_match_t *m, gw_role_t token_role);
/* The assembled route table (the owners' tables, assembled on first use): its
 * rows in *routes, their number returned. Thread-safe. */
size_t gw__admin_routes(const gw_admin_route_t **routes);

/* Admin API (gw_admin.c). */
int gw_admin_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_admin_stop(gw_server_t *srv);

/* Adds relay/queue figures to the stats object (json_t *). */
void gw_kafka_stats(gw_server_t *srv, void *json_obj);

/* The Kafka side (gw_kafka.c): relay, outcomes, cancel commands. */
int gw_kafka_start(gw_server_t *srv, char *errbuf, size_t errlen);
void gw_kafka_stop(gw_server_t *srv);
/* Fault injection: takes the embedded broker down or up. CM_ENOTFOUND without one. */
int gw_kafka_broker_set_down(gw_server_t *srv, bool down);
/* Fault injection: the embedded broker answers rtt_ms late (0 = normal). CM_ENOTFOUND without one. */
int gw_kafka_broker_set_rtt(gw_server_t *srv, int rtt_ms);
/* The Prometheus exposition of /metrics (gw_metrics.c); malloc'd, caller frees. */
char *gw_metrics_text(gw_server_t *srv, size_t *len);

/* Applies limits from the config struct to the limiter. */
void gw_apply_limits(gw_server_t *srv);

/* The admin routes of the configuration (gw_admin_config.c), of the
 * dashboard's figures (gw_admin_stats.c) and of fault injection and orders
 * (gw_admin_debug.c): tables of *n routes gw_admin.c assembles at start. */
const gw_admin_route_t *gw_admin_config_routes(size_t *n);
const gw_admin_route_t *gw_admin_stats_routes(size_t *n);
const gw_admin_route_t *gw_admin_debug_routes(size_t *n);

#endif
