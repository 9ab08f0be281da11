/*
 * The fleet's shared state in Redis: see inv_fleet.h. The scripts and key
 * names were gateway/base/gw_fleet.c's and gw_token.c's; moved here unchanged.
 *
 * Every command goes through inv_cluster's routed client, by its first key
 * (each script's keys share one hash tag), so a redis-cluster:// address
 * works as a redis:// one does; a subscriber and a pipeline use the raw
 * connection of their node.
 */
#include "inventory/inv_cluster.h"
#include "inventory/inv_fleet.h"
#include "inventory/inv_redis.h"

#include "common/cm_err.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MEMBERS "{flashgate:fleet}:members"
#define KEY_CONFIG INV_FLEET_KEY_CONFIG
#define CHAN_EVENTS "flashgate:fleet:events"
#define KEY_NODEID_FMT "{flashgate:fleet}:nodeid:%u"
#define KEY_FLOORS INV_FLEET_KEY_FLOORS

/*
 * Heartbeat: KEYS members, config[, nodeid, floors]; ARGV member, ttl_ms,
 * nodeid_ttl_ms[, n, limit_ms]. With the node id key held (or free, and taken
 * again), its floor is raised to limit_ms; the floor before is returned, -1
 * when none is recorded (never used, or Redis lost it: the caller cannot tell).
 */
static const char LUA_HEARTBEAT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "local n = redis.call('ZCARD', KEYS[1])\n"
    "local node = 0\n"
    "local floor = 0\n"
    "if #KEYS >= 4 then\n"
    "  local cur = redis.call('GET', KEYS[3])\n"
    "  if cur == false then\n"
    "    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) node = 2\n"
    "  elseif cur == ARGV[1] then\n"
    "    redis.call('PEXPIRE', KEYS[3], ARGV[3]) node = 1\n"
    "  else node = -1 end\n"
    "  if node > 0 then\n"
    "    floor = tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '-1')\n"
    "    if tonumber(ARGV[5]) > floor then redis.call('HSET', KEYS[4], ARGV[4], ARGV[5]) end\n"
    "  end\n"
    "end\n"
    "local v = redis.call('HGET', KEYS[2], 'version')\n"
    "return {n, tonumber(v or '0'), node, floor}\n";

/*
 * Claim: KEYS nodeid, floors; ARGV member, ttl_ms, n, limit_ms. {1, the floor
 * before (-1: none recorded)}, or {0}: taken.
 */
static const char LUA_CLAIM[] =
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end\n"
    "local floor = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '-1')\n"
    "if tonumber(ARGV[4]) > floor then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end\n"
    "return {1, floor}\n";

/*
 * Leave: KEYS members[, nodeid, floors]; ARGV member, channel[, n, mine, last_ms]. A
 * floor still at what we wrote (`mine`: nobody raised it since) comes down to the
 * millisecond of our last id, so a quick restart does not start its ids in the future.
 */
static const char LUA_LEAVE[] =
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "if #KEYS >= 3 and redis.call('GET', KEYS[2]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  if redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[4] then\n"
    "    redis.call('HSET', KEYS[3], ARGV[3], ARGV[5]) end\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[2], 'leave ' .. ARGV[1])\n"
    "return 1\n";

/*
 * Publish, a compare-and-set: KEYS config; ARGV limits json, member, channel,
 * wall ms, base. `base` is the version the caller's limits were merged over;
 * when the stored version is another (a gateway published since), nothing is
 * written and {0, stored version} comes back, so a change merged over stale
 * limits cannot overwrite a newer version (a lost update). Checked and written
 * in one script: no other publish can land between the check and the write.
 */
static const char LUA_PUBLISH[] =
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')\n"
    "if cur == nil then return redis.error_reply('fleet config version is not a number') end\n"
    "if cur ~= tonumber(ARGV[5]) then return {0, cur} end\n"
    "local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "redis.call('HSET', KEYS[1], 'limits', ARGV[1], 'by', ARGV[2], 'at', ARGV[4])\n"
    "redis.call('PUBLISH', ARGV[3], 'config ' .. v)\n"
    "return {1, v}\n";

struct inv_fleet_conn {
    inv_cluster_t *cl;     /* the slot map (one node for redis://) */
    inv_cluster_sync_t *s; /* owns the connections */
    redisContext *rc;      /* the subscriber's or the pipeline's connection, else NULL */
    size_t piped;          /* commands appended to rc, not yet read */
    bool broken;           /* a transport failure: close and connect again */
    char err[256];
};

/* One routed command; NULL on a transport failure (c is then broken). */
static redisReply *fcall(inv_fleet_conn_t *c, const char *key, const char *fmt, ...)
{
    int err = 0;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = inv_cluster_sync_vcmd(c->s, key, &err, fmt, ap);
    va_end(ap);
    if (!r) {
        c->broken = true;
        snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
    }
    return r;
}

/* A transport failure on the raw connection c->rc. */
static void raw_failed(inv_fleet_conn_t *c)
{
    c->broken = true;
    if (c->rc)
        snprintf(c->err, sizeof(c->err), "%s", c->rc->errstr);
}

inv_fleet_conn_t *inv_fleet_connect(const cm_redis_url_t *addr, uint32_t timeout_ms,
                                    char *errbuf, size_t errlen)
{
    inv_cluster_t *cl = inv_cluster_open(addr, timeout_ms, errbuf, errlen);
    if (!cl)
        return NULL;
    inv_fleet_conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        inv_cluster_close(cl);
        cm_errbuf_set(errbuf, errlen, "redis: out of memory");
        return NULL;
    }
    c->cl = cl;
    c->s = inv_cluster_sync_new(cl, timeout_ms);
    /* connect now, as callers expect of a connect */
    int err = 0;
    if (!inv_cluster_sync_ctx(c->s, NULL, &err)) {
        cm_errbuf_set(errbuf, errlen, "%s", inv_cluster_sync_errstr(c->s));
        inv_fleet_close(c);
        return NULL;
    }
    return c;
}

void inv_fleet_close(inv_fleet_conn_t *c)
{
    if (!c)
        return;
    inv_cluster_sync_free(c->s);
    inv_cluster_close(c->cl);
    free(c);
}

const char *inv_fleet_errstr(const inv_fleet_conn_t *c)
{
    return c->broken ? c->err : "";
}

int inv_fleet_fd(const inv_fleet_conn_t *c)
{
    return c->rc ? c->rc->fd : -1;
}

int inv_fleet_heartbeat(inv_fleet_conn_t *c, const char *member, const char *node_key,
                        uint32_t node_id, int64_t limit_ms, int member_ttl_ms,
                        int nodeid_ttl_ms, uint32_t *members, uint64_t *version,
                        long long *node, int64_t *floor, char *errbuf, size_t errlen)
{
    char ttl[16], nttl[16], n[16], lim[24];
    snprintf(ttl, sizeof(ttl), "%d", member_ttl_ms);
    snprintf(nttl, sizeof(nttl), "%d", nodeid_ttl_ms);
    snprintf(n, sizeof(n), "%u", node_id);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit_ms);
    redisReply *r;
    if (node_key)
        r = fcall(c, KEY_MEMBERS, "EVAL %s 4 %s %s %s %s %s %s %s %s %s", LUA_HEARTBEAT,
                  KEY_MEMBERS, KEY_CONFIG, node_key, KEY_FLOORS, member, ttl, nttl, n, lim);
    else
        r = fcall(c, KEY_MEMBERS, "EVAL %s 2 %s %s %s %s %s", LUA_HEARTBEAT, KEY_MEMBERS,
                  KEY_CONFIG, member, ttl, nttl);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        cm_errbuf_set(errbuf, errlen, "%s",
                      !r ? c->err : (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        if (r)
            freeReplyObject(r);
        return CM_EBACKEND;
    }
    *members = (uint32_t)r->element[0]->integer;
    *version = (uint64_t)r->element[1]->integer;
    *node = r->element[2]->integer;
    *floor = r->element[3]->integer;
    freeReplyObject(r);
    return 0;
}

int inv_fleet_config_get(inv_fleet_conn_t *c, uint64_t *version, char **limits,
                         size_t *limits_len, char **by)
{
    *limits = *by = NULL;
    *limits_len = 0;
    redisReply *r = fcall(c, KEY_CONFIG, "HMGET %s version limits by", KEY_CONFIG);
    if (!r)
        return CM_EBACKEND;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        freeReplyObject(r);
        return CM_EBACKEND;
    }
    *version = r->element[0]->type == REDIS_REPLY_STRING
                   ? strtoull(r->element[0]->str, NULL, 10)
                   : 0;
    if (r->element[1]->type == REDIS_REPLY_STRING) {
        *limits = malloc(r->element[1]->len + 1);
        if (*limits) {
            memcpy(*limits, r->element[1]->str, r->element[1]->len);
            (*limits)[r->element[1]->len] = '\0';
            *limits_len = r->element[1]->len;
        }
    }
    if (r->element[2]->type == REDIS_REPLY_STRING)
        *by = strdup(r->element[2]->str);
    freeReplyObject(r);
    return 0;
}

int inv_fleet_config_publish(inv_fleet_conn_t *c, const char *limits, uint64_t base,
                             const char *member, const char *at, uint64_t *version, char *errbuf,
                             size_t errlen)
{
    char b[24];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)base);
    redisReply *r = fcall(c, KEY_CONFIG, "EVAL %s 1 %s %s %s %s %s %s", LUA_PUBLISH, KEY_CONFIG,
                          limits, member, CHAN_EVENTS, at, b);
    int rc;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->integer >= 0) {
        rc = r->element[0]->integer == 1 ? 1 : 0;
        *version = (uint64_t)r->element[1]->integer;
    } else {
        cm_errbuf_set(errbuf, errlen, "%s",
                      r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply") : c->err);
        rc = CM_EBACKEND;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

int inv_fleet_nodeid_claim(inv_fleet_conn_t *c, uint32_t n, const char *member, int ttl_ms,
                           int64_t limit_ms, int64_t *floor, char *key_out, size_t key_len,
                           char *errbuf, size_t errlen)
{
    char key[64], nb[16], ttl[16], lim[24];
    snprintf(key, sizeof(key), KEY_NODEID_FMT, n);
    snprintf(nb, sizeof(nb), "%u", n);
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit_ms);
    redisReply *r = fcall(c, key, "EVAL %s 2 %s %s %s %s %s %s", LUA_CLAIM, key, KEY_FLOORS,
                          member, ttl, nb, lim);
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "%s", c->err);
        return CM_EBACKEND;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        (r->element[0]->integer == 1 &&
         (r->elements != 2 || r->element[1]->type != REDIS_REPLY_INTEGER))) {
        cm_errbuf_set(errbuf, errlen, "%s",
                      r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return CM_EBACKEND;
    }
    bool ok = r->element[0]->integer == 1;
    if (ok) {
        *floor = r->element[1]->integer;
        snprintf(key_out, key_len, "%s", key);
    }
    freeReplyObject(r);
    return ok ? 1 : 0;
}

void inv_fleet_nodeid_release(inv_fleet_conn_t *c, const char *node_key)
{
    redisReply *d = fcall(c, node_key, "DEL %s", node_key);
    if (d)
        freeReplyObject(d);
}

void inv_fleet_announce_join(inv_fleet_conn_t *c, const char *member)
{
    /* one argument: hiredis splits its format at spaces, and "PUBLISH ch join m"
     * (four arguments) was refused, so no join was ever announced */
    char msg[400];
    snprintf(msg, sizeof(msg), "join %s", member);
    redisReply *r = fcall(c, NULL, "PUBLISH %s %s", CHAN_EVENTS, msg);
    if (r)
        freeReplyObject(r);
}

void inv_fleet_leave(inv_fleet_conn_t *c, const char *member, const char *node_key,
                     uint32_t node_id, int64_t mine_ms, int64_t last_ms)
{
    char nb[16], mine[24], last[24];
    snprintf(nb, sizeof(nb), "%u", node_id);
    snprintf(mine, sizeof(mine), "%lld", (long long)mine_ms);
    snprintf(last, sizeof(last), "%lld", (long long)last_ms);
    redisReply *r = node_key ? fcall(c, KEY_MEMBERS, "EVAL %s 3 %s %s %s %s %s %s %s %s",
                                     LUA_LEAVE, KEY_MEMBERS, node_key, KEY_FLOORS, member,
                                     CHAN_EVENTS, nb, mine, last)
                             : fcall(c, KEY_MEMBERS, "EVAL %s 1 %s %s %s", LUA_LEAVE,
                                     KEY_MEMBERS, member, CHAN_EVENTS);
    if (r)
        freeReplyObject(r);
}

int inv_fleet_subscribe(inv_fleet_conn_t *c, char *errbuf, size_t errlen)
{
    /* any node: a cluster forwards every PUBLISH to all of its nodes */
    int err = 0;
    c->rc = inv_cluster_sync_ctx(c->s, NULL, &err);
    if (!c->rc) {
        c->broken = true;
        snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
        cm_errbuf_set(errbuf, errlen, "%s", c->err);
        return CM_EBACKEND;
    }
    redisReply *r = redisCommand(c->rc, "SUBSCRIBE %s", CHAN_EVENTS);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (!r)
            raw_failed(c);
        cm_errbuf_set(errbuf, errlen, "%s", r ? "unexpected reply" : c->err);
        if (r)
            freeReplyObject(r);
        return CM_EBACKEND;
    }
    freeReplyObject(r);
    return 0;
}

int inv_fleet_sub_read(inv_fleet_conn_t *c)
{
    if (!c->rc || redisBufferRead(c->rc) != REDIS_OK) {
        raw_failed(c);
        return CM_EBACKEND;
    }
    return 0;
}

int inv_fleet_sub_drain(inv_fleet_conn_t *c, bool *any)
{
    if (!c->rc)
        return CM_EBACKEND;
    for (;;) {
        void *rv = NULL;
        if (redisGetReplyFromReader(c->rc, &rv) != REDIS_OK) {
            raw_failed(c);
            return CM_EBACKEND;
        }
        if (!rv)
            return 0;
        redisReply *r = rv;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0)
            *any = true;
        freeReplyObject(r);
    }
}

int inv_fleet_status_key(inv_fleet_conn_t *c, const char *hex, size_t hex_len, char *out)
{
    return inv_fleet_secret(c, INV_FLEET_KEY_STATUS, hex, hex_len, out);
}

int inv_fleet_secret(inv_fleet_conn_t *c, const char *key, const char *hex, size_t hex_len,
                     char *out)
{
    redisReply *r = fcall(c, key, "SET %s %b NX", key, hex, hex_len);
    freeReplyObject(r);
    r = fcall(c, key, "GET %s", key);
    int rc = 0;
    if (!r || r->type != REDIS_REPLY_STRING || r->len != hex_len) {
        rc = CM_EBACKEND;
    } else {
        memcpy(out, r->str, hex_len);
        explicit_bzero(r->str, r->len);
    }
    freeReplyObject(r);
    return rc;
}

bool inv_fleet_broken(const inv_fleet_conn_t *c)
{
    return c->broken;
}

/*---- the dashboard's fleet figures ----*/

#define KEY_FIGURES "{flashgate:fleet}:figures"

/*
 * KEYS figures, members; ARGV member, json (empty: read only). Writes the
 * member's figures, drops the fields of members whose heartbeat expired (or
 * who left), so the hash stays as small as the fleet, and returns {member,
 * json, ...} of the live members that have figures. Each gateway runs it once
 * a second: HKEYS reads as many fields as there are gateways.
 */
static const char LUA_FIGURES[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end\n"
    "local out = {}\n"
    "for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  local e = redis.call('ZSCORE', KEYS[2], m)\n"
    "  if e and tonumber(e) > now then\n"
    "    out[#out + 1] = m out[#out + 1] = redis.call('HGET', KEYS[1], m)\n"
    "  elseif m ~= ARGV[1] then redis.call('HDEL', KEYS[1], m) end\n"
    "end\n"
    "return out\n";

int inv_fleet_figures(inv_fleet_conn_t *c, const char *member, const char *json,
                      inv_fleet_pair_fn fn, void *ctx, char *errbuf, size_t errlen)
{
    redisReply *r = fcall(c, KEY_FIGURES, "EVAL %s 2 %s %s %s %s", LUA_FIGURES, KEY_FIGURES,
                          KEY_MEMBERS, member, json ? json : "");
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        cm_errbuf_set(errbuf, errlen, "%s",
                      !r ? c->err : (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        if (r)
            freeReplyObject(r);
        return CM_EBACKEND;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str)
            fn(ctx, r->element[i]->str, r->element[i + 1]->str);
    freeReplyObject(r);
    return 0;
}

/*---- the lottery ----*/

#define K_CONF "{flashgate:fair}:conf"

static void fkey(char *out, size_t cap, const char *sale, const char *what)
{
    snprintf(out, cap, "{flashgate:fair:%s}:%s", sale, what);
}

/* One command on key's node; NULL with the reason in errbuf on a transport error or an
 * error reply. */
static redisReply *vfcmd(inv_fleet_conn_t *c, const char *key, char *errbuf, size_t errlen,
                         const char *fmt, va_list ap)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_vcmd(c->s, key, &err, fmt, ap);
    if (!r) {
        c->broken = true;
        snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
        cm_errbuf_set(errbuf, errlen, "%s", c->err);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        cm_errbuf_set(errbuf, errlen, "%s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static redisReply *fcmd(inv_fleet_conn_t *c, const char *key, char *errbuf, size_t errlen,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vfcmd(c, key, errbuf, errlen, fmt, ap);
    va_end(ap);
    return r;
}

/* One command on key's node for its effect or its integer: 0, with *out (when not
 * NULL) the reply's integer, or `dflt` when the reply is not one; CM_EBACKEND with
 * the reason in errbuf. */
static int fint(inv_fleet_conn_t *c, const char *key, long long *out, long long dflt,
                char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vfcmd(c, key, errbuf, errlen, fmt, ap);
    va_end(ap);
    if (!r)
        return CM_EBACKEND;
    if (out)
        *out = r->type == REDIS_REPLY_INTEGER ? r->integer : dflt;
    freeReplyObject(r);
    return 0;
}

/* HGETALL of key: fn for each field and value; 0 or CM_EBACKEND (errbuf). */
static int fpairs(inv_fleet_conn_t *c, const char *key, inv_fleet_pair_fn fn, void *ctx,
                  char *errbuf, size_t errlen)
{
    redisReply *r = fcmd(c, key, errbuf, errlen, "HGETALL %s", key);
    if (!r)
        return CM_EBACKEND;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str)
            fn(ctx, r->element[i]->str, r->element[i + 1]->str);
    freeReplyObject(r);
    return 0;
}

int inv_lottery_conf_all(inv_fleet_conn_t *c, inv_fleet_pair_fn fn, void *ctx, char *errbuf,
                         size_t errlen)
{
    return fpairs(c, K_CONF, fn, ctx, errbuf, errlen);
}

int inv_lottery_conf_get(inv_fleet_conn_t *c, const char *sale, char *out, size_t cap,
                         bool *found, char *errbuf, size_t errlen)
{
    redisReply *r = fcmd(c, K_CONF, errbuf, errlen, "HGET %s %s", K_CONF, sale);
    if (!r)
        return CM_EBACKEND;
    *found = r->type == REDIS_REPLY_STRING;
    if (*found)
        snprintf(out, cap, "%s", r->str);
    freeReplyObject(r);
    return 0;
}

int inv_lottery_conf_put(inv_fleet_conn_t *c, const char *sale, const char *value, char *errbuf,
                         size_t errlen)
{
    redisReply *r = fcmd(c, K_CONF, errbuf, errlen, "HSET %s %s %s", K_CONF, sale, value);
    if (!r)
        return CM_EBACKEND;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : CM_EBACKEND;
    if (rc)
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_lottery_conf_del(inv_fleet_conn_t *c, const char *field, char *errbuf, size_t errlen)
{
    return fint(c, K_CONF, NULL, 0, errbuf, errlen, "HDEL %s %s", K_CONF, field);
}

int inv_lottery_clear(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    static const char *const names[] = {"e",    "drawn", "pushed",  "lock", "seed", "won",
                                        "done", "entered", "reg", "wr",   "wrpre", "wrpl",
                                        "wl",   "wlock", "wp",  "ep",   "ei"};
    enum { N = sizeof(names) / sizeof(names[0]) };
    char keys[N][160];
    const char *argv[N + 1];
    size_t argl[N + 1];
    argv[0] = "DEL";
    argl[0] = 3;
    for (size_t i = 0; i < N; i++) {
        fkey(keys[i], sizeof(keys[i]), sale, names[i]);
        argv[i + 1] = keys[i];
        argl[i + 1] = strlen(keys[i]);
    }
    int err = 0;
    redisReply *r = inv_cluster_sync_argv(c->s, keys[0], N + 1, argv, argl, &err);
    if (!r) {
        c->broken = true;
        snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
        cm_errbuf_set(errbuf, errlen, "%s", c->err);
        return CM_EBACKEND;
    }
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : CM_EBACKEND;
    if (rc)
        cm_errbuf_set(errbuf, errlen, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_lottery_push_add(inv_fleet_conn_t *c, const char *sale, const char *user,
                         const char *value)
{
    char ke[160];
    fkey(ke, sizeof(ke), sale, "e");
    if (c->piped == 0) { /* one connection for the whole pipeline: the sale's node */
        int err = 0;
        c->rc = inv_cluster_sync_ctx(c->s, ke, &err);
        if (!c->rc) {
            c->broken = true;
            snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
            return CM_EBACKEND;
        }
    }
    if (redisAppendCommand(c->rc, "HSETNX %s %s %s", ke, user, value) != REDIS_OK)
        return CM_EBACKEND;
    c->piped++;
    return 0;
}

int inv_lottery_push_finish(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                            size_t added, bool all_added, char *errbuf, size_t errlen)
{
    char kp[160];
    fkey(kp, sizeof(kp), sale, "pushed");
    (void)added; /* counted by push_add */
    if (c->piped == 0 && all_added) {
        int err = 0;
        c->rc = inv_cluster_sync_ctx(c->s, kp, &err);
        if (!c->rc) {
            c->broken = true;
            snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
            cm_errbuf_set(errbuf, errlen, "%s", c->err);
            return CM_EBACKEND;
        }
    }
    bool ok = all_added && redisAppendCommand(c->rc, "SADD %s %u", kp, node_id) == REDIS_OK;
    size_t sent = c->piped + (ok ? 1 : 0);
    c->piped = 0;
    for (size_t i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK) {
            raw_failed(c);
            cm_errbuf_set(errbuf, errlen, "%s", c->err);
            return CM_EBACKEND;
        }
        if (r->type == REDIS_REPLY_ERROR)
            ok = false;
        freeReplyObject(r);
    }
    return ok ? 1 : 0;
}

int inv_lottery_pushed_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                             size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "pushed");
    return fint(c, k, n, -1, errbuf, errlen, "SCARD %s", k);
}

/* Whether the sale's lottery key `name` exists. */
static int lottery_key_exists(inv_fleet_conn_t *c, const char *sale, const char *name, bool *out,
                              char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, name);
    long long v = 0;
    if (fint(c, k, &v, 0, errbuf, errlen, "EXISTS %s", k) != 0)
        return CM_EBACKEND;
    *out = v == 1;
    return 0;
}

int inv_lottery_done(inv_fleet_conn_t *c, const char *sale, bool *done, char *errbuf,
                     size_t errlen)
{
    return lottery_key_exists(c, sale, "done", done, errbuf, errlen);
}

int inv_lottery_done_set(inv_fleet_conn_t *c, const char *sale, size_t n, char *errbuf,
                         size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "done");
    return fint(c, k, NULL, 0, errbuf, errlen, "SET %s %llu", k, (unsigned long long)n);
}

int inv_lottery_entered_mark(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, char *errbuf,
                             size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "entered");
    return fint(c, k, NULL, 0, errbuf, errlen, "SADD %s %u", k, node_id);
}

int inv_lottery_entered(inv_fleet_conn_t *c, const char *sale, bool *busy, char *errbuf,
                        size_t errlen)
{
    bool entered = false, done = false;
    if (lottery_key_exists(c, sale, "entered", &entered, errbuf, errlen) != 0 ||
        (entered && lottery_key_exists(c, sale, "done", &done, errbuf, errlen) != 0))
        return CM_EBACKEND;
    *busy = entered && !done;
    return 0;
}

int inv_lottery_lock(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, int ttl_ms,
                     bool *mine, char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "lock");
    /* Taken, or held by this node already: a drawer whose draw stopped on a
     * Redis error resumes at its next tick instead of waiting out its own
     * lock (nobody else may take it meanwhile either). */
    static const char script[] =
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
        "if redis.call('GET', KEYS[1]) == ARGV[1] then "
        "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0";
    long long v = 0;
    if (fint(c, k, &v, 0, errbuf, errlen, "EVAL %s 1 %s %u %d", script, k, node_id, ttl_ms) != 0)
        return CM_EBACKEND;
    *mine = v == 1;
    return 0;
}

int inv_lottery_lock_renew(inv_fleet_conn_t *c, const char *sale, int ttl_ms, char *errbuf,
                           size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "lock");
    return fint(c, k, NULL, 0, errbuf, errlen, "PEXPIRE %s %d", k, ttl_ms);
}

int inv_lottery_freeze(inv_fleet_conn_t *c, const char *sale)
{
    char ke[160], kd[160];
    fkey(ke, sizeof(ke), sale, "e");
    fkey(kd, sizeof(kd), sale, "drawn");
    redisReply *r = fcall(c, ke, "RENAMENX %s %s", ke, kd);
    if (!r)
        return CM_EBACKEND;
    freeReplyObject(r);
    return 0;
}

int inv_lottery_entrants(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn, void *ctx,
                         char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "drawn");
    return fpairs(c, k, fn, ctx, errbuf, errlen);
}

int inv_lottery_seed_offer(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                           char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "seed");
    return fint(c, k, NULL, 0, errbuf, errlen, "SET %s %s NX", k, seed_hex);
}

int inv_lottery_seed_get(inv_fleet_conn_t *c, const char *sale, uint64_t *seed, bool *seeded,
                         char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "seed");
    redisReply *r = fcmd(c, k, errbuf, errlen, "GET %s", k);
    if (!r)
        return CM_EBACKEND;
    *seeded = r->type == REDIS_REPLY_STRING;
    if (*seeded)
        *seed = strtoull(r->str, NULL, 16);
    freeReplyObject(r);
    return 0;
}

int inv_lottery_winners(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn, void *ctx,
                        char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "won");
    return fpairs(c, k, fn, ctx, errbuf, errlen);
}

int inv_lottery_winner_put(inv_fleet_conn_t *c, const char *sale, const char *user,
                           const char *order_id, char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "won");
    return fint(c, k, NULL, 0, errbuf, errlen, "HSET %s %s %s", k, user, order_id);
}

/* KEYS ep, ei; ARGV person, order id, value. {1} taken, or {0, the value held}. */
static const char LUA_ENTRY_MARK[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if v then return {0, v} end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])\n"
    "return {1}\n";

/* KEYS ep, ei; ARGV person, order id. Deletes the mark only while it is that order's. */
static const char LUA_ENTRY_DROP[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[2]) return 1 end\n"
    "return 0\n";

/* KEYS ep, ei; ARGV order id. {person, value}, or {} when the id names no entry. */
static const char LUA_ENTRY_GET[] =
    "local p = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if not p then return {} end\n"
    "local v = redis.call('HGET', KEYS[1], p)\n"
    "if not v then return {} end\n"
    "return {p, v}\n";

int inv_lottery_entry_mark(inv_fleet_conn_t *c, const char *sale, const char *person,
                           const char *order_id, const char *value, bool *taken, char *held,
                           size_t cap, char *errbuf, size_t errlen)
{
    char kp[160], ki[160];
    fkey(kp, sizeof(kp), sale, "ep");
    fkey(ki, sizeof(ki), sale, "ei");
    redisReply *r = fcmd(c, kp, errbuf, errlen, "EVAL %s 2 %s %s %s %s %s", LUA_ENTRY_MARK, kp,
                         ki, person, order_id, value);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        (r->element[0]->integer == 0 &&
         (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING))) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply to the entry mark");
        rc = CM_EBACKEND;
    } else {
        *taken = r->element[0]->integer == 1;
        snprintf(held, cap, "%s", *taken ? "" : r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

/* KEYS ep, ei; ARGV person, order id, value, ... The marks not held yet are taken. */
static const char LUA_ENTRY_MARK_MANY[] =
    "local n = 0\n"
    "for i = 1, #ARGV - 2, 3 do\n"
    "  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then\n"
    "    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i]) n = n + 1 end\n"
    "end\n"
    "return n\n";

int inv_lottery_entry_mark_many(inv_fleet_conn_t *c, const char *sale, const char *const *args,
                                size_t n, char *errbuf, size_t errlen)
{
    char kp[160], ki[160];
    fkey(kp, sizeof(kp), sale, "ep");
    fkey(ki, sizeof(ki), sale, "ei");
    size_t argc = 5 + 3 * n;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *argl = malloc(argc * sizeof(*argl));
    if (!argv || !argl) {
        free(argv);
        free(argl);
        cm_errbuf_set(errbuf, errlen, "out of memory");
        return CM_EBACKEND;
    }
    argv[0] = "EVAL";
    argv[1] = LUA_ENTRY_MARK_MANY;
    argv[2] = "2";
    argv[3] = kp;
    argv[4] = ki;
    for (size_t i = 0; i < 3 * n; i++)
        argv[5 + i] = args[i];
    for (size_t i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    int err = 0;
    redisReply *r = inv_cluster_sync_argv(c->s, kp, (int)argc, argv, argl, &err);
    free(argv);
    free(argl);
    if (!r) {
        c->broken = true;
        snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
        cm_errbuf_set(errbuf, errlen, "%s", c->err);
        return CM_EBACKEND;
    }
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : CM_EBACKEND;
    if (rc)
        cm_errbuf_set(errbuf, errlen, "%s",
                      r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_lottery_entry_drop(inv_fleet_conn_t *c, const char *sale, const char *person,
                           const char *order_id, char *errbuf, size_t errlen)
{
    char kp[160], ki[160];
    fkey(kp, sizeof(kp), sale, "ep");
    fkey(ki, sizeof(ki), sale, "ei");
    return fint(c, kp, NULL, 0, errbuf, errlen, "EVAL %s 2 %s %s %s %s", LUA_ENTRY_DROP, kp, ki,
                person, order_id);
}

int inv_lottery_entry_get(inv_fleet_conn_t *c, const char *sale, const char *order_id,
                          bool *found, char *person, size_t pcap, char *value, size_t vcap,
                          char *errbuf, size_t errlen)
{
    char kp[160], ki[160];
    fkey(kp, sizeof(kp), sale, "ep");
    fkey(ki, sizeof(ki), sale, "ei");
    redisReply *r =
        fcmd(c, kp, errbuf, errlen, "EVAL %s 2 %s %s %s", LUA_ENTRY_GET, kp, ki, order_id);
    if (!r)
        return CM_EBACKEND;
    *found = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING &&
             r->element[1]->type == REDIS_REPLY_STRING;
    if (*found) {
        snprintf(person, pcap, "%s", r->element[0]->str);
        snprintf(value, vcap, "%s", r->element[1]->str);
    }
    freeReplyObject(r);
    return 0;
}

/*---- the fleet's waitlist ----*/

/* KEYS wl, wp. {mode, ended, gen, head, promoted, pending owner}. */
static const char LUA_WL_STATE[] =
    "local v = redis.call('HMGET', KEYS[1], 'mode', 'ended', 'gen', 'head', 'promoted')\n"
    "local p = redis.call('GET', KEYS[2])\n"
    "local w = p and string.match(p, '^%S+ %S+ (%S+)') or ''\n"
    "return {v[1] or '', v[2] and 1 or 0, tonumber(v[3] or '0'), tonumber(v[4] or '0'),\n"
    "        tonumber(v[5] or '0'), w}\n";

/* KEYS wlock, wp; ARGV owner, ttl_ms. The pending promotion's owner takes the lock over. */
static const char LUA_WL_LOCK[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n"
    "local p = redis.call('GET', KEYS[2])\n"
    "local w = p and string.match(p, '^%S+ %S+ (%S+)')\n"
    "if cur == false or w == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end\n"
    "return 0\n";

/* KEYS wlock, wp, won, wl; ARGV owner, person, order. */
static const char LUA_WL_BEGIN[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "if redis.call('HEXISTS', KEYS[4], 'ended') == 1 then return 0 end\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
    "if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[1] .. ' ' .. now)\n"
    "return 1\n";

/* KEYS wlock, wp; ARGV owner, grace_ms. */
static const char LUA_WL_ADOPT[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "local p = redis.call('GET', KEYS[2])\n"
    "if not p then return 0 end\n"
    "local u, o, w, at = string.match(p, '^(%S+) (%S+) (%S+) (%d+)$')\n"
    "if not u then return 0 end\n"
    "if w == ARGV[1] then return 1 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "if now - tonumber(at) < tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('SET', KEYS[2], u .. ' ' .. o .. ' ' .. ARGV[1] .. ' ' .. at)\n"
    "return 1\n";

/* KEYS wlock, wp, won, wl; ARGV owner, person, result ("" = none), head, not_accepted. */
static const char LUA_WL_FINISH[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "redis.call('DEL', KEYS[2])\n"
    "local h = tonumber(redis.call('HGET', KEYS[4], 'head') or '0')\n"
    "if tonumber(ARGV[4]) > h then redis.call('HSET', KEYS[4], 'head', ARGV[4]) end\n"
    "if ARGV[3] == '' then return tonumber(redis.call('HGET', KEYS[4], 'gen') or '0') end\n"
    "redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])\n"
    "if ARGV[3] ~= ARGV[5] then redis.call('HINCRBY', KEYS[4], 'promoted', 1) end\n"
    "return redis.call('HINCRBY', KEYS[4], 'gen', 1)\n";

/* KEYS wl. */
static const char LUA_WL_END[] =
    "if redis.call('HSETNX', KEYS[1], 'ended', '1') == 1 then\n"
    "  redis.call('HINCRBY', KEYS[1], 'gen', 1) end\n"
    "return 1\n";

/* The waitlist's keys of a sale: wl, wlock, wp, won. */
typedef struct wl_keys {
    char wl[160], wlock[160], wp[160], won[160];
} wl_keys_t;

static void wl_keys(wl_keys_t *k, const char *sale)
{
    fkey(k->wl, sizeof(k->wl), sale, "wl");
    fkey(k->wlock, sizeof(k->wlock), sale, "wlock");
    fkey(k->wp, sizeof(k->wp), sale, "wp");
    fkey(k->won, sizeof(k->won), sale, "won");
}

/* An integer reply into *out, else CM_EBACKEND with the reason. Frees r. */
static int int_reply(redisReply *r, long long *out, char *errbuf, size_t errlen)
{
    if (!r)
        return CM_EBACKEND;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : CM_EBACKEND;
    if (rc)
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
    else
        *out = r->integer;
    freeReplyObject(r);
    return rc;
}

int inv_wl_state(inv_fleet_conn_t *c, const char *sale, inv_wl_state_t *st, char *errbuf,
                 size_t errlen)
{
    wl_keys_t k;
    wl_keys(&k, sale);
    memset(st, 0, sizeof(*st));
    redisReply *r = fcmd(c, k.wl, errbuf, errlen, "EVAL %s 2 %s %s", LUA_WL_STATE, k.wl, k.wp);
    if (!r)
        return CM_EBACKEND;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 6 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[5]->type != REDIS_REPLY_STRING) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
        freeReplyObject(r);
        return CM_EBACKEND;
    }
    st->mode = r->element[0]->len == 1 ? r->element[0]->str[0] : 0;
    st->ended = r->element[1]->integer != 0;
    st->gen = r->element[2]->integer;
    st->head = r->element[3]->integer;
    st->promoted = r->element[4]->integer;
    snprintf(st->owner, sizeof(st->owner), "%s", r->element[5]->str);
    freeReplyObject(r);
    return 0;
}

int inv_wl_mode_set(inv_fleet_conn_t *c, const char *sale, char mode, char *errbuf,
                    size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "wl");
    long long n;
    char m[2] = {mode, '\0'};
    return int_reply(fcmd(c, k, errbuf, errlen, "HSETNX %s mode %s", k, m), &n, errbuf, errlen);
}

int inv_wl_lock(inv_fleet_conn_t *c, const char *sale, const char *owner, int ttl_ms, bool *mine,
                char *errbuf, size_t errlen)
{
    wl_keys_t k;
    wl_keys(&k, sale);
    long long n = 0;
    int rc = int_reply(fcmd(c, k.wlock, errbuf, errlen, "EVAL %s 2 %s %s %s %d", LUA_WL_LOCK,
                            k.wlock, k.wp, owner, ttl_ms),
                       &n, errbuf, errlen);
    *mine = rc == 0 && n == 1;
    return rc;
}

int inv_wl_pending(inv_fleet_conn_t *c, const char *sale, bool *found, char *person,
                   size_t person_cap, char *order, size_t order_cap, char *owner,
                   size_t owner_cap, char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "wp");
    redisReply *r = fcmd(c, k, errbuf, errlen, "GET %s", k);
    if (!r)
        return CM_EBACKEND;
    *found = false;
    if (r->type == REDIS_REPLY_STRING) {
        char p[128], o[64], w[64];
        if (sscanf(r->str, "%127s %63s %63s", p, o, w) == 3) {
            snprintf(person, person_cap, "%s", p);
            snprintf(order, order_cap, "%s", o);
            snprintf(owner, owner_cap, "%s", w);
            *found = true;
        }
    }
    freeReplyObject(r);
    return 0;
}

int inv_wl_begin(inv_fleet_conn_t *c, const char *sale, const char *owner, const char *person,
                 const char *order, char *errbuf, size_t errlen)
{
    wl_keys_t k;
    wl_keys(&k, sale);
    long long n = 0;
    int rc = int_reply(fcmd(c, k.wlock, errbuf, errlen, "EVAL %s 4 %s %s %s %s %s %s %s",
                            LUA_WL_BEGIN, k.wlock, k.wp, k.won, k.wl, owner, person, order),
                       &n, errbuf, errlen);
    return rc ? rc : n == 1;
}

int inv_wl_adopt(inv_fleet_conn_t *c, const char *sale, const char *owner, int grace_ms,
                 char *errbuf, size_t errlen)
{
    wl_keys_t k;
    wl_keys(&k, sale);
    long long n = 0;
    int rc = int_reply(fcmd(c, k.wlock, errbuf, errlen, "EVAL %s 2 %s %s %s %d", LUA_WL_ADOPT,
                            k.wlock, k.wp, owner, grace_ms),
                       &n, errbuf, errlen);
    return rc ? rc : n == 1;
}

int inv_wl_finish(inv_fleet_conn_t *c, const char *sale, const char *owner, const char *person,
                  const char *result, long long head, long long *gen, char *errbuf,
                  size_t errlen)
{
    wl_keys_t k;
    wl_keys(&k, sale);
    long long n = 0;
    /* %b: the result may be empty, which a plain %s would drop as an argument */
    int rc = int_reply(fcmd(c, k.wlock, errbuf, errlen, "EVAL %s 4 %s %s %s %s %s %s %b %lld %s",
                            LUA_WL_FINISH, k.wlock, k.wp, k.won, k.wl, owner, person, result,
                            strlen(result), head, INV_LOTTERY_NOT_ACCEPTED),
                       &n, errbuf, errlen);
    if (rc)
        return rc;
    if (n < 0)
        return 0;
    *gen = n;
    return 1;
}

int inv_wl_end(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "wl");
    long long n;
    return int_reply(fcmd(c, k, errbuf, errlen, "EVAL %s 1 %s", LUA_WL_END, k), &n, errbuf,
                     errlen);
}

/*---- registration (gateway/buy/gw_reg.c) ----*/

int inv_reg_add(inv_fleet_conn_t *c, const char *sale, const char *person, long long cap,
                int *added, char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "reg");
    /* The score is the registration's rank (ZCARD + 1: nothing is ever
     * removed but the whole key), so ZRANGE by rank pages exactly. */
    static const char script[] =
        "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end "
        "local n = redis.call('ZCARD', KEYS[1]) "
        "if n >= tonumber(ARGV[2]) then return -1 end "
        "redis.call('ZADD', KEYS[1], n + 1, ARGV[1]) return 1";
    redisReply *r = fcmd(c, k, errbuf, errlen, "EVAL %s 1 %s %s %lld", script, k, person, cap);
    if (!r)
        return CM_EBACKEND;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : CM_EBACKEND;
    if (rc)
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
    else
        *added = (int)r->integer;
    freeReplyObject(r);
    return rc;
}

int inv_reg_has(inv_fleet_conn_t *c, const char *sale, const char *person, bool *has,
                char *errbuf, size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "reg");
    redisReply *r = fcmd(c, k, errbuf, errlen, "ZSCORE %s %s", k, person);
    if (!r)
        return CM_EBACKEND;
    *has = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return 0;
}

int inv_reg_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                  size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "reg");
    return fint(c, k, n, 0, errbuf, errlen, "ZCARD %s", k);
}

int inv_reg_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                  void (*fn)(void *ctx, const char *person), void *ctx, char *errbuf,
                  size_t errlen)
{
    char k[160];
    fkey(k, sizeof(k), sale, "reg");
    redisReply *r = fcmd(c, k, errbuf, errlen, "ZRANGE %s %lld %lld", k, start, stop);
    if (!r)
        return CM_EBACKEND;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->str)
            fn(ctx, r->element[i]->str);
    freeReplyObject(r);
    return 0;
}

/*---- the waiting room (gateway/buy/gw_room_fleet.c) ----*/

/* The seal, shared by the tick and the join: the pre-queue's size becomes npre
 * and the later arrivals' places start after it. */
#define LUA_ROOM_SEAL                                                                  \
    "local function seal(now)\n"                                                       \
    "  local n = redis.call('ZCARD', KEYS[2])\n"                                       \
    "  redis.call('HSET', KEYS[1], 'sealed', now, 'npre', n)\n"                        \
    "  redis.call('HINCRBY', KEYS[1], 'next', n)\n"                                    \
    "end\n"                                                                            \
    "local want, offer = ARGV[1], true\n"                                              \
    "if string.sub(want, 1, 1) == '-' then want = string.sub(want, 2) offer = false end\n" \
    "local s = redis.call('HGET', KEYS[1], 'seed')\n"                                  \
    "if not s and not offer then return {-3} end\n"                                   \
    "if not s then redis.call('HSET', KEYS[1], 'seed', want) s = want end\n"

/*
 * Tick: KEYS wr, wrpre; ARGV seed ("-seed": not to offer), started, now_ms, add_milli, ahead.
 * {seed, sealed ms or 0, npre, next, front}; {-3}: no seed and none offered.
 */
static const char LUA_ROOM_TICK[] =
    LUA_ROOM_SEAL
    "local sealed = redis.call('HGET', KEYS[1], 'sealed')\n"
    "if not sealed and ARGV[2] == '1' then seal(ARGV[3]) sealed = ARGV[3] end\n"
    "local nx = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')\n"
    "local front = tonumber(redis.call('HGET', KEYS[1], 'front') or '0')\n"
    "local npre\n"
    "if sealed then\n"
    "  npre = tonumber(redis.call('HGET', KEYS[1], 'npre') or '0')\n"
    "  local add = tonumber(ARGV[4])\n"
    "  if add > 0 then\n"
    "    local cap = (nx + tonumber(ARGV[5])) * 1000\n"
    "    if front < cap then\n"
    "      front = math.min(front + add, cap)\n"
    "      redis.call('HSET', KEYS[1], 'front', string.format('%d', front))\n"
    "    end\n"
    "  end\n"
    "else npre = redis.call('ZCARD', KEYS[2]) end\n"
    "return {s, sealed or '0', npre, nx, string.format('%d', front)}\n";

/*
 * Join: KEYS wr, wrpre, wrpl; ARGV seed ("-seed": not to offer), member, person,
 * before_start, take, now_ms, ttl_s, cap. {-3}: no seed and none offered;
 * {-2, seed}: another seed; {-1}: the pre-queue is full; {0}: pre-queue;
 * {1, pos, exp_s}.
 */
static const char LUA_ROOM_JOIN[] =
    LUA_ROOM_SEAL
    "if s ~= want then return {-2, s} end\n"
    "local take = ARGV[5] == '1'\n"
    "if not redis.call('HGET', KEYS[1], 'sealed') then\n"
    "  if ARGV[4] == '1' then\n"
    "    if take and not redis.call('ZSCORE', KEYS[2], ARGV[2]) then\n"
    "      if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[8]) then return {-1} end\n"
    "      redis.call('ZADD', KEYS[2], 0, ARGV[2])\n"
    "    end\n"
    "    return {0}\n"
    "  end\n"
    "  seal(ARGV[6])\n"
    "end\n"
    "local now = math.floor(tonumber(ARGV[6]) / 1000)\n"
    "local pos, exp = 0, 0\n"
    "local v = redis.call('HGET', KEYS[3], ARGV[3])\n"
    "if v then\n"
    "  local sp = string.find(v, ' ')\n"
    "  pos = tonumber(string.sub(v, 1, sp - 1)) exp = tonumber(string.sub(v, sp + 1))\n"
    "else\n"
    "  local r = redis.call('ZRANK', KEYS[2], ARGV[2])\n"
    "  if r then pos = r + 1 end\n"
    "end\n"
    "if pos > 0 and exp > 0 and exp < now then\n"
    "  if not take then return {1, pos, 0} end\n"
    "  pos = 0\n"
    "end\n"
    "if pos == 0 then\n"
    "  if not take then return {1, 0, 0} end\n"
    "  pos = redis.call('HINCRBY', KEYS[1], 'next', 1) exp = 0\n"
    "  redis.call('HSET', KEYS[3], ARGV[3], pos .. ' 0')\n"
    "end\n"
    "local front = math.floor(tonumber(redis.call('HGET', KEYS[1], 'front') or '0') / 1000)\n"
    "if pos > front then return {1, pos, 0} end\n"
    "if exp == 0 then\n"
    "  exp = now + tonumber(ARGV[7])\n"
    "  redis.call('HSET', KEYS[3], ARGV[3], pos .. ' ' .. exp)\n"
    "end\n"
    "return {1, pos, exp}\n";

/* Claim: KEYS jti, the claim's void mark; ARGV "fp:nonce", ttl_ms, fp, nonce. 0 claimed,
 * 1 spent, 2 the same fingerprint's (this claim's nonce joins the holders), 3 given back
 * before it ran (its caller gave up on it). The value is "fp:nonce[,nonce...]": the
 * buys of one Idempotency-Key that hold the token, each until its own give-back, so
 * that a retry going on past the claim holds it too and the first buy's give-back
 * leaves it held (an order of the key may be the retry's). At most 64 holders: a key's
 * retries in flight at once beyond that read the token spent. A value of the bare
 * fingerprint (no ':') gets its first nonce after a ':'. */
static const char LUA_ROOM_CLAIM[] =
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end\n"
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end\n"
    "if ARGV[3] ~= '0' then\n"
    "  local v = redis.call('GET', KEYS[1])\n"
    "  if v and string.match(v, '^[^:]*') == ARGV[3] then\n"
    "    local _, n = string.gsub(v, ',', ',')\n"
    "    if n >= 63 then return 1 end\n"
    "    local t = redis.call('PTTL', KEYS[1])\n"
    "    local sep = string.find(v, ':', 1, true) and ',' or ':'\n"
    "    redis.call('SET', KEYS[1], v .. sep .. ARGV[4], 'PX', t > 0 and t or ARGV[2])\n"
    "    return 2\n"
    "  end\n"
    "end\n"
    "return 1\n";

/* Give-back: KEYS jti, the claim's void mark; ARGV ttl_ms, fp, nonce. Takes this
 * claim's nonce out of the holders, deleting the claim with the last one (1); else
 * marks the claim void (0), so that the claim, should it still run, claims nothing. */
static const char LUA_ROOM_UNCLAIM[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and string.match(v, '^[^:]*') == ARGV[2] then\n"
    "  local left, found = {}, false\n"
    "  for x in string.gmatch(string.sub(v, #ARGV[2] + 2), '[^,]+') do\n"
    "    if x == ARGV[3] and not found then found = true else left[#left + 1] = x end\n"
    "  end\n"
    "  if found then\n"
    "    if #left == 0 then redis.call('DEL', KEYS[1]) else\n"
    "      local t = redis.call('PTTL', KEYS[1])\n"
    "      redis.call('SET', KEYS[1], ARGV[2] .. ':' .. table.concat(left, ','),\n"
    "                 'PX', t > 0 and t or ARGV[1])\n"
    "    end\n"
    "    return 1\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])\n"
    "return 0\n";

static void room_keys(const char *sale, char wr[160], char pre[160], char pl[160])
{
    fkey(wr, 160, sale, "wr");
    fkey(pre, 160, sale, "wrpre");
    fkey(pl, 160, sale, "wrpl");
}

static uint64_t reply_u64(const redisReply *e)
{
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer > 0 ? (uint64_t)e->integer : 0;
    if (e->type == REDIS_REPLY_STRING)
        return strtoull(e->str, NULL, 10);
    return 0;
}

int inv_room_tick(inv_fleet_conn_t *c, const char *sale, const char *seed_hex, bool started,
                  int64_t now_ms, uint64_t add_milli, uint64_t ahead, inv_room_state_t *st,
                  char *errbuf, size_t errlen)
{
    char wr[160], pre[160], pl[160];
    room_keys(sale, wr, pre, pl);
    redisReply *r = fcmd(c, wr, errbuf, errlen, "EVAL %s 2 %s %s %s %d %lld %llu %llu",
                         LUA_ROOM_TICK, wr, pre, seed_hex, started ? 1 : 0, (long long)now_ms,
                         (unsigned long long)add_milli, (unsigned long long)ahead);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        cm_errbuf_set(errbuf, errlen, "the room has no seed (deleted?) and none was offered");
        rc = CM_ENOTFOUND;
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
               r->element[0]->type != REDIS_REPLY_STRING) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
        rc = CM_EBACKEND;
    } else {
        memset(st, 0, sizeof(*st));
        snprintf(st->seed, sizeof(st->seed), "%s", r->element[0]->str);
        st->sealed_ms = (int64_t)reply_u64(r->element[1]);
        st->npre = reply_u64(r->element[2]);
        st->next = reply_u64(r->element[3]);
        st->front_milli = reply_u64(r->element[4]);
    }
    freeReplyObject(r);
    return rc;
}

int inv_room_join(inv_fleet_conn_t *c, const char *sale, const char *seed_hex, const char *member,
                  const char *person, bool before_start, bool take, int64_t now_ms,
                  int ttl_s, uint64_t cap, inv_room_join_t *out, char *errbuf, size_t errlen)
{
    char wr[160], pre[160], pl[160];
    room_keys(sale, wr, pre, pl);
    memset(out, 0, sizeof(*out));
    redisReply *r = fcmd(c, wr, errbuf, errlen, "EVAL %s 3 %s %s %s %s %s %s %d %d %lld %d %llu",
                         LUA_ROOM_JOIN, wr, pre, pl, seed_hex, member, person,
                         before_start ? 1 : 0, take ? 1 : 0, (long long)now_ms, ttl_s,
                         (unsigned long long)cap);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    long long kind = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                             r->element[0]->type == REDIS_REPLY_INTEGER
                         ? r->element[0]->integer
                         : -9;
    if (kind == -2 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(out->seed, sizeof(out->seed), "%s", r->element[1]->str);
    } else if (kind == -3) {
        cm_errbuf_set(errbuf, errlen, "the room has no seed (deleted?) and none was offered");
        rc = CM_ENOTFOUND;
    } else if (kind == -1 || kind == 0) {
        out->prequeue = true;
        out->full = kind == -1;
    } else if (kind == 1 && r->elements == 3) {
        out->pos = reply_u64(r->element[1]);
        out->exp_s = (int64_t)reply_u64(r->element[2]);
    } else {
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
        rc = CM_EBACKEND;
    }
    freeReplyObject(r);
    return rc;
}

static void jti_key(char *out, size_t cap, const char *sale, uint64_t jti)
{
    char what[40];
    snprintf(what, sizeof(what), "wrjti:%016llx", (unsigned long long)jti);
    fkey(out, cap, sale, what);
}

/* The claim's key, its void mark's key, its value "fp:nonce", fp and the nonce alone. */
static void claim_keys(const char *sale, uint64_t jti, uint64_t fp, uint64_t nonce, char k[200],
                       char vk[240], char val[48], char fps[24], char ns[24])
{
    jti_key(k, 200, sale, jti);
    snprintf(vk, 240, "%s:void:%016llx", k, (unsigned long long)nonce);
    snprintf(fps, 24, "%llu", (unsigned long long)fp);
    snprintf(ns, 24, "%016llx", (unsigned long long)nonce);
    snprintf(val, 48, "%s:%s", fps, ns);
}

int inv_room_claim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                   uint64_t nonce, int64_t ttl_ms, char *errbuf, size_t errlen)
{
    char k[200], vk[240], val[48], fps[24], ns[24];
    claim_keys(sale, jti, fp, nonce, k, vk, val, fps, ns);
    redisReply *r = fcmd(c, k, errbuf, errlen, "EVAL %s 2 %s %s %s %lld %s %s", LUA_ROOM_CLAIM, k,
                         vk, val, (long long)(ttl_ms > 0 ? ttl_ms : 1), fps, ns);
    if (!r)
        return CM_EBACKEND;
    int rc = r->type == REDIS_REPLY_INTEGER && r->integer >= 0 && r->integer <= 2
                 ? (int)r->integer
                 : CM_EBACKEND;
    if (rc < 0)
        cm_errbuf_set(errbuf, errlen,
                      r->type == REDIS_REPLY_INTEGER && r->integer == 3
                          ? "the claim was given back before it ran"
                          : "unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_room_unclaim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                     uint64_t nonce, int64_t ttl_ms, char *errbuf, size_t errlen)
{
    char k[200], vk[240], val[48], fps[24], ns[24];
    claim_keys(sale, jti, fp, nonce, k, vk, val, fps, ns);
    redisReply *r = fcmd(c, k, errbuf, errlen, "EVAL %s 2 %s %s %lld %s %s", LUA_ROOM_UNCLAIM, k,
                         vk, (long long)(ttl_ms > 0 ? ttl_ms : 1), fps, ns);
    if (!r)
        return CM_EBACKEND;
    int rc = r->type == REDIS_REPLY_INTEGER && (r->integer == 0 || r->integer == 1)
                 ? (int)r->integer
                 : CM_EBACKEND;
    if (rc < 0)
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
    freeReplyObject(r);
    return rc;
}

int inv_room_state(inv_fleet_conn_t *c, const char *sale, inv_room_state_t *st, char *errbuf,
                   size_t errlen)
{
    char wr[160], pre[160], pl[160];
    room_keys(sale, wr, pre, pl);
    redisReply *r = fcmd(c, wr, errbuf, errlen, "HMGET %s seed sealed npre next front", wr);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    memset(st, 0, sizeof(*st));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply");
        rc = CM_EBACKEND;
    } else {
        if (r->element[0]->type == REDIS_REPLY_STRING)
            snprintf(st->seed, sizeof(st->seed), "%s", r->element[0]->str);
        st->sealed_ms = (int64_t)reply_u64(r->element[1]);
        st->npre = reply_u64(r->element[2]);
        st->next = reply_u64(r->element[3]);
        st->front_milli = reply_u64(r->element[4]);
    }
    freeReplyObject(r);
    if (rc == 0 && !st->sealed_ms) {
        r = fcmd(c, pre, errbuf, errlen, "ZCARD %s", pre);
        if (!r)
            return CM_EBACKEND;
        st->npre = reply_u64(r);
        freeReplyObject(r);
    }
    return rc;
}

int inv_room_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                   void (*fn)(void *ctx, const char *member), void *ctx, char *errbuf,
                   size_t errlen)
{
    char wr[160], pre[160], pl[160];
    room_keys(sale, wr, pre, pl);
    redisReply *r = fcmd(c, pre, errbuf, errlen, "ZRANGE %s %lld %lld", pre, start, stop);
    if (!r)
        return CM_EBACKEND;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->str)
            fn(ctx, r->element[i]->str);
    freeReplyObject(r);
    return 0;
}
