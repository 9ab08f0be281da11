/*
 * redis://[[user]:password@]host[:port][/db][?key=value&...] URLs, parsed
 * once for every part that talks to Redis (the inventory backend and the
 * fleet membership), so both read the same address the same way.
 */
#ifndef CM_URL_H
#define CM_URL_H

#include <stddef.h>

typedef struct cm_redis_url {
    char user[128];
    char pass[256];  /* from the URL, else "" (see cm_redis_url_default_password) */
    char host[256];  /* without brackets for IPv6 */
    int port;        /* default 6379 */
    int db;          /* default 0 */
    char query[512]; /* the parameters after '?', "" if none: the caller's to read */
} cm_redis_url_t;

/*
 * Parses url. Returns 0, or CM_EINVAL with "redis url: <what>" in errbuf
 * (rediss:// is refused: no TLS client here). Thread-safe.
 */
int cm_redis_url_parse(const char *url, cm_redis_url_t *out, char *errbuf, size_t errlen);

/*
 * Uses `password` (a config value: inventory.redis_password) when the URL
 * had none; the URL's wins. No environment is read here: configuration comes
 * through the config engine only. Returns 0 or CM_EINVAL (too long).
 */
int cm_redis_url_default_password(cm_redis_url_t *u, const char *password);

#endif
