/*
 * redis://[[user]:password@]host[:port][/db][?key=value&...] URLs, parsed
 * once for every part that talks to Redis (the inventory backend and the
 * fleet membership), so both read the same address the same way.
 *
 * redis-cluster://[[user]:password@]host[:port][,host[:port]...][?key=value&...]
 * names a Redis Cluster by a seed list: any reachable seed gives the slot map
 * (inventory/inv_cluster.c). A cluster has database 0 only, so no /db.
 *
 * Each host[:port] is read by cm_hostport_parse (common/cm_addr.h) with the
 * port optional: an IP literal or a DNS name, IPv6 in brackets.
 */
#ifndef CM_URL_H
#define CM_URL_H

#include <stdbool.h>
#include <stddef.h>

#define CM_REDIS_SEEDS_MAX 8

typedef struct cm_redis_url {
    char user[128];
    char pass[256];  /* from the URL, else "" (see cm_redis_url_default_password) */
    char host[256];  /* without brackets for IPv6 */
    int port;        /* default 6379 */
    int db;          /* default 0 */
    char query[512]; /* the parameters after '?', "" if none: the caller's to read */
    bool cluster;    /* redis-cluster://: host:port is the first seed */
    int nseeds;      /* 1..CM_REDIS_SEEDS_MAX (1 for redis://: host:port) */
    struct {
        char host[256];
        int port;
    } seed[CM_REDIS_SEEDS_MAX];
} cm_redis_url_t;

/* true if s names a Redis (redis:// or redis-cluster://), not "memory". Thread-safe. */
bool cm_redis_url_is(const char *s);

/*
 * Parses url (redis:// or redis-cluster://). Returns 0, or CM_EINVAL with
 * "redis url: <what>" in errbuf (rediss:// is refused: no TLS client here).
 * Thread-safe.
 */
int cm_redis_url_parse(const char *url, cm_redis_url_t *out, char *errbuf, size_t errlen);

/*
 * Uses `password` (a config value: inventory.redis_password) when the URL
 * had none; the URL's wins. No environment is read here: configuration comes
 * through the config engine only. Returns 0 or CM_EINVAL (too long).
 */
int cm_redis_url_default_password(cm_redis_url_t *u, const char *password);

#endif
