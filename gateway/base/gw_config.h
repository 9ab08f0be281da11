/*
 * flashgate's configuration: the struct every part of the gateway reads, and
 * its option table (gw_config.c). Keys marked RUNTIME may change while the
 * process runs (admin API); those fields are read with atomics by the workers
 * through the limiter and sale objects, never straight from this struct.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include "common/cm_config.h"
#include "identity/id.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { GW_DURABILITY_WRITE = 0, GW_DURABILITY_FSYNC = 1 } gw_durability_t;

/* identity.mode: who the buyer is (docs/identity.md). */
typedef enum { GW_ID_NONE = 0, GW_ID_JWT = 1, GW_ID_HEADER = 2 } gw_id_mode_t;

/* The shortest admin bearer token accepted wherever one enters (server.admin_token
 * by flag, environment or file, server.admin_token_file, server.admin_tokens_file):
 * 16 characters. A generated one is 64 hex digits. */
#define GW_ADMIN_TOKEN_MIN 16

typedef struct gw_config {
    /* server */
    char listen[128];          /* server.listen "0.0.0.0:8080" (flag --listen) */
    char admin_listen[128];    /* server.admin_listen "127.0.0.1:9090" (--admin-listen) */
    char admin_token[256];     /* server.admin_token (--admin-token, FLASHGATE_ADMIN_TOKEN) */
    char admin_tokens_file[512]; /* server.admin_tokens_file: named read/write tokens */
    char admin_token_file[512];  /* server.admin_token_file: the admin token, read at start */
    char admin_cgroup[256];    /* server.admin_cgroup: the admin listener's threads' CPU cgroup */
    char admin_tls_cert[512];  /* server.admin_tls_cert: PEM chain; "" = plain HTTP */
    char admin_tls_key[512];   /* server.admin_tls_key: the certificate's PEM private key */
    char admin_tls_client_ca[512]; /* server.admin_tls_client_ca: PEM CAs clients must chain to */
    bool admin_debug_routes;   /* server.admin_debug_routes (--enable-debug-routes) */
    uint64_t liveness_timeout_ms; /* server.liveness_timeout: /healthz 503 past it, 0 = off */
    /* debug.* test seams: refused unless server.admin_debug_routes */
    char debug_wall_offset_ms[24]; /* debug.wall_offset_ms: signed ms, "" = 0 */
    uint64_t debug_fleet_tick_ms;  /* debug.fleet_tick: 0 = the fleet's own tick */
    uint64_t threads;          /* server.threads, 0 = one per CPU (--threads) */
    uint64_t node_id;          /* server.node_id 0..1023 (--node-id); 1024 = derive */
    uint64_t body_limit;       /* server.body_limit bytes, default 4k */
    uint64_t max_connections;  /* server.max_connections per worker */
    uint64_t connection_timeout_ms; /* server.connection_timeout idle keep-alive timeout */
    uint64_t drain_grace_ms;   /* server.drain_grace: after SIGTERM, /readyz 503 while serving on */
    uint64_t drain_timeout_ms; /* server.drain_timeout: bound on the rest of a graceful stop */
    uint64_t max_connections_per_ip; /* server.max_connections_per_ip, 0 = no cap */
    uint64_t proxy_max_connections; /* server.proxy_max_connections per trusted proxy, 0 = no cap */
    uint64_t head_timeout_ms;  /* server.head_timeout: the whole request head */
    uint64_t body_min_rate;    /* server.body_min_rate bytes/s, 0 = off */
    char trusted_proxies[1024];/* server.trusted_proxies "10.0.0.0/8,127.0.0.1" CIDR list */
    uint64_t max_sales;        /* server.max_sales */
    uint64_t default_fair_window_ms; /* sales.default_fair_window_ms: a new sale's window */
    uint64_t max_registrations; /* sales.max_registrations: persons per sale's registration */
    uint64_t max_lottery_entries;    /* sales.max_lottery_entries: entries per sale's lottery */
    uint64_t default_fair_early_ms;  /* sales.default_fair_early_ms: its early acceptance */
    uint64_t summary_interval_ms; /* log.summary_interval: periodic rejection summary */
    char data_dir[512];        /* server.data_dir "./data" (--data-dir) */
    int log_level;             /* log.level error|warn|info|debug */
    int log_format;            /* log.format logfmt|json */
    uint64_t access_sample_milli; /* log.access_sample: fraction of requests logged, x1000 */

    /* inventory */
    char inventory[512];       /* inventory.backend "memory" | "redis://host:port[/db]" (--inventory) */
    uint64_t redis_timeout_ms; /* inventory.redis_timeout */
    uint64_t redis_pool;       /* inventory.redis_pool connections per worker */
    uint64_t redis_batch;      /* inventory.redis_batch reserves per script call at most */
    uint64_t inv_max_held_orders; /* inventory.max_held_orders (memory backend) */
    char redis_password[256];  /* inventory.redis_password (secret); "" = the URL's */

    /* durability and queue */
    int durability;            /* spool.durability write|fsync (--durability) */
    uint64_t spool_max_bytes;  /* spool.max_bytes: past it the buy path answers 503 */
    uint64_t spool_segment_bytes; /* spool.segment_bytes */
    char kafka_brokers[1024];  /* kafka.brokers "embedded" | "host:port,..." (--kafka-brokers) */
    char kafka_topic[256];     /* kafka.topic "flashgate.orders" (--kafka-topic) */
    char kafka_outcomes_topic[256]; /* kafka.outcomes_topic "flashgate.outcomes" */
    char kafka_properties[4096];/* kafka.properties librdkafka pass-through, k=v lines */

    /* limits (RUNTIME); rates in thousandths of a request per second, 0 = off */
    uint64_t global_rps, global_burst;
    uint64_t sale_rps, sale_burst;
    uint64_t user_rps, user_burst;
    uint64_t ip_rps, ip_burst;
    uint64_t subnet_rps, subnet_burst; /* per /24 (IPv4) or /48 (IPv6); 0 = off */
    uint64_t limiter_max_keys; /* limits.max_keys: cap on tracked users + IPs */
    uint64_t orders_max_known; /* orders.max_known: cap on orders GET /v1/orders answers for */

    /* overload control (gw_overload.h) */
    int ol_level;              /* overload.level: 0 = auto, 1..4 = pinned level 0..3 */
    bool ol_adaptive;          /* overload.adaptive: per-dependency concurrency limits */
    bool ol_accept_pause;      /* overload.accept_pause: the door (gw_overload.c) */
    bool ol_shed_buys;         /* overload.shed_buys: DAGOR user priority on the buy path */
    uint64_t ol_queue_target_ms, ol_queue_interval_ms, ol_exit_hold_ms;
    uint64_t ol_limit_min, ol_limit_initial, ol_up_limit_initial, ol_limit_max;
    uint64_t ol_retry_min_s, ol_retry_max_s;
    char ol_priority_key_file[512]; /* overload.priority_key_file: the user-priority secret */

    /* non-core routes reverse-proxied to upstreams (gw_proxy.c) */
    char proxy_routes[4096];   /* proxy.routes: JSON list, see gw_proxy_routes_parse */
    uint64_t proxy_max_conns;  /* proxy.max_connections per upstream per worker */
    uint64_t proxy_max_body;   /* proxy.max_body: request and response body cap */
    uint64_t proxy_breaker_failures, proxy_breaker_cooldown_ms;

    /* buyer identity (gateway/buy/gw_identity.c, docs/identity.md): the
     * strings of identity.* go straight into `identity`; its numbers are
     * copied from the uint64_t fields below by gw_identity_config */
    int id_mode;               /* identity.mode none|jwt|header (gw_id_mode_t) */
    id_config_t identity;
    uint64_t id_leeway_s, id_jwks_refresh_ms, id_jwks_min_refetch_ms, id_jwks_timeout_ms;
    uint64_t id_max_token_bytes;
    uint64_t id_jwks_max_stale_ms, id_max_lifetime_s;
    char id_header[128];       /* identity.header: header mode's user header */
    char id_cookie[128];       /* identity.cookie: a cookie that may carry the token */
    bool id_own_key_on_redis;  /* identity.own_key_on_redis: allow the data dir's key on Redis */
} gw_config_t;

/*
 * The identity.* settings as identity/ takes them: cfg->identity with the
 * numbers filled in from the uint64_t fields. Thread-safe on data the caller owns.
 */
void gw_identity_config(const gw_config_t *cfg, id_config_t *out);

/* One non-core route of proxy.routes. */
#define GW_PROXY_ROUTES_MAX 32
typedef struct gw_proxy_route {
    char prefix[128];      /* "/v1/recs/": requests whose path starts with it */
    char upstream[256];    /* "http://127.0.0.1:8081": the path and query are appended */
    uint32_t timeout_ms;   /* whole upstream exchange; default 1000 */
    uint32_t latency_target_ms; /* an answer slower is a queue (gw_alimit_set_target); 0 none */
    int crit;              /* gw_crit_t; default sheddable */
    bool has_fallback;
    unsigned fb_status;    /* fallback answer when degraded or shed */
    char fb_type[96];
    char fb_body[1024];
    size_t fb_len;
} gw_proxy_route_t;

/*
 * Parses proxy.routes: a JSON list of objects
 *   {"prefix":"/v1/recs/","upstream":"http://127.0.0.1:8081","timeout_ms":300,
 *    "latency_target_ms":20,"criticality":"critical|degradable|sheddable",
 *    "fallback":{"status":200,"content_type":"application/json","body":"{}"}}
 * "" is no routes. Each prefix at most once (a request goes to the route with
 * the longest matching prefix, whatever the order). Fills out[0..*n) (at most
 * GW_PROXY_ROUTES_MAX). Returns 0, or CM_EINVAL with the rule broken in errbuf.
 * Thread-safe.
 */
int gw_proxy_routes_parse(const char *text, gw_proxy_route_t *out, size_t *n, char *errbuf,
                    size_t errlen);

/* Whether a route with this prefix takes path: path starts with prefix, at a
 * segment's end ("/v1/page" takes "/v1/page" and "/v1/page/x", not
 * "/v1/pages"; "/v1/page/" takes what is under it). */
bool gw_route_prefix_matches(const char *path, const char *prefix);

/* The option table; terminated by {NULL}. */
extern const cm_opt_t gw_config_opts[];

/*
 * Parses flashgate's configuration from defaults, file, environment and argv.
 * Returns 0, or CM_EINVAL with every problem in errbuf. Runs the cross-key
 * checks too (e.g. a burst needs its rate). Single-threaded init.
 */
int gw_config_load(gw_config_t *cfg, cm_conf_t *conf, int argc, char **argv, char *errbuf,
                   size_t errlen);

/*
 * The cross-key rules (a rate > 0 needs a burst >= 1, listen != admin_listen,
 * spool.segment_bytes <= spool.max_bytes, kafka.topic != kafka.outcomes_topic,
 * server.admin_token empty or at least GW_ADMIN_TOKEN_MIN characters: checked
 * here, not by the option's value rule, because after gw_config_seal_secrets
 * a reload reads "*" from the wiped argv, which is the sealed token, not a new
 * one; a token in the config file is checked at every load).
 * Appends one "config: ..." line per broken rule to the NUL-terminated text
 * in errbuf (sources from `conf`) and returns CM_EINVAL, or returns 0. `cfg`
 * need not be conf->base: the admin API copies the struct, applies changes
 * with cm_conf_set on a cm_conf_t whose base points at the copy, checks the
 * copy here, and only then commits it. (Such a shallow cm_conf_t copy shares
 * the src arrays, so sources are updated even for a change then dropped.)
 * Thread-safe on data the caller owns.
 */
int gw_config_check(const gw_config_t *cfg, const cm_conf_t *conf, char *errbuf, size_t errlen);

/*
 * Takes server.admin_token out of every place a process dump, `ps` or
 * /proc/PID/environ would show it: copies it into a secret page (mlock'ed where
 * allowed, MADV_DONTDUMP: gw_secret_alloc), overwrites its argv copies in place
 * with "*", wipes and unsets FLASHGATE_ADMIN_TOKEN and
 * FLASHGATE_SERVER_ADMIN_TOKEN, and leaves "<set>" in cfg->admin_token (the
 * config dump still says a token is set). Later gw_config_load calls (SIGHUP
 * reload) leave the same marker: argv and the environment cannot change while
 * the process runs; a different token in the config file reads as a change
 * that needs a restart. Once, in main, before any thread starts.
 */
void gw_config_seal_secrets(gw_config_t *cfg, const cm_conf_t *conf, int argc, char **argv);

/* The sealed server.admin_token (in its secret page) and its length, or NULL
 * when none was configured or gw_config_seal_secrets never ran. */
const char *gw_config_admin_token(size_t *len);

/* Marks `key` (e.g. "limits.user_rps") as set at run time: GET /admin/v1/config
 * then says "runtime", not the default or the file whose value it no longer
 * holds. The caller changed the value and holds srv->config.mu. NULL conf: nothing. */
void gw_config_mark_runtime(cm_conf_t *conf, const char *key);

/* Splits "host:port" / "[v6]:port" into parts (host without brackets; port
 * 0..65535). Returns 0 or CM_EINVAL. Thread-safe. */
int gw_config_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port);

#endif
