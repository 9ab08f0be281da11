#include "common/cm_url.h"
#include "common/cm_addr.h"
#include "common/cm_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_int(const char *s, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return CM_EINVAL;
    *out = (int)v;
    return 0;
}

static int copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return CM_EINVAL;
    memcpy(dst, src, n + 1);
    return 0;
}

bool cm_redis_url_is(const char *s)
{
    return strncmp(s, "redis://", 8) == 0 || strncmp(s, "redis-cluster://", 16) == 0;
}

int cm_redis_url_parse(const char *url, cm_redis_url_t *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        cm_errbuf_set(errbuf, errlen, "redis url: rediss:// (TLS) is not supported; use redis://");
        return CM_EINVAL;
    }
    size_t skip;
    if (strncmp(url, "redis://", 8) == 0) {
        skip = 8;
    } else if (strncmp(url, "redis-cluster://", 16) == 0) {
        skip = 16;
        out->cluster = true;
    } else {
        cm_errbuf_set(errbuf, errlen, "redis url: must start with redis:// or redis-cluster://");
        return CM_EINVAL;
    }
    char buf[1024];
    if (copy(buf, sizeof(buf), url + skip) != 0) {
        cm_errbuf_set(errbuf, errlen, "redis url: too long");
        return CM_EINVAL;
    }
    char *query = strchr(buf, '?');
    if (query) {
        *query++ = '\0';
        if (copy(out->query, sizeof(out->query), query) != 0) {
            cm_errbuf_set(errbuf, errlen, "redis url: parameters too long");
            return CM_EINVAL;
        }
    }
    char *hostpart = buf;
    char *at = strrchr(buf, '@');
    if (at) {
        *at = '\0';
        char *colon = strchr(buf, ':');
        if (!colon) {
            cm_errbuf_set(errbuf, errlen, "redis url: want [user]:password@ before the host");
            return CM_EINVAL;
        }
        *colon = '\0';
        if (copy(out->user, sizeof(out->user), buf) || copy(out->pass, sizeof(out->pass), colon + 1)) {
            cm_errbuf_set(errbuf, errlen, "redis url: user or password too long");
            return CM_EINVAL;
        }
        hostpart = at + 1;
    }
    char *slash = strchr(hostpart, '/');
    if (slash) {
        *slash = '\0';
        if (slash[1] && parse_int(slash + 1, 0, 65535, &out->db) != 0) {
            cm_errbuf_set(errbuf, errlen, "redis url: bad db '%s'", slash + 1);
            return CM_EINVAL;
        }
        if (out->cluster && out->db != 0) {
            cm_errbuf_set(errbuf, errlen, "redis url: a cluster has database 0 only");
            return CM_EINVAL;
        }
    }
    if (!out->cluster && strchr(hostpart, ',')) {
        cm_errbuf_set(errbuf, errlen, "redis url: a seed list wants redis-cluster://");
        return CM_EINVAL;
    }
    size_t hl = strlen(hostpart);
    if (hl && (hostpart[0] == ',' || hostpart[hl - 1] == ',' || strstr(hostpart, ",,"))) {
        cm_errbuf_set(errbuf, errlen, "redis url: an empty seed in the list");
        return CM_EINVAL;
    }
    char *save = NULL;
    for (char *hp = strtok_r(hostpart, ",", &save); hp; hp = strtok_r(NULL, ",", &save)) {
        if (out->nseeds == CM_REDIS_SEEDS_MAX) {
            cm_errbuf_set(errbuf, errlen, "redis url: more than %d seeds", CM_REDIS_SEEDS_MAX);
            return CM_EINVAL;
        }
        int i = out->nseeds++;
        out->seed[i].port = 6379;
        char why[200];
        if (cm_hostport_parse(hp, CM_HOSTPORT_PORT_OPTIONAL, out->seed[i].host,
                              sizeof(out->seed[i].host), &out->seed[i].port, why, sizeof(why)) != 0) {
            cm_errbuf_set(errbuf, errlen, "redis url: %s", why);
            return CM_EINVAL;
        }
    }
    if (out->nseeds == 0) {
        cm_errbuf_set(errbuf, errlen, "redis url: no host");
        return CM_EINVAL;
    }
    memcpy(out->host, out->seed[0].host, sizeof(out->seed[0].host));
    out->port = out->seed[0].port;
    return 0;
}

int cm_redis_url_default_password(cm_redis_url_t *u, const char *password)
{
    if (u->pass[0] || !password || !password[0])
        return 0;
    return copy(u->pass, sizeof(u->pass), password);
}
