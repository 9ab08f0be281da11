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
#include <pthread.h>
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

struct inv_fleet_conn {
    inv_cluster_t *cl;     /* the slot map (one node for redis://) */
    inv_cluster_sync_t *s; /* owns the connections */
    redisContext *rc;      /* the subscriber's or the pipeline's connection, else NULL */
    size_t piped;          /* commands appended to rc (or tq), not yet read */
    /* Through a transport (the simulator's, inv_cluster.h) a pipeline has no raw
     * connection: its commands wait here, formatted, and go one call each at the read. */
    char **tq;
    size_t *tql;
    size_t tcap;
    char tkey[256];        /* the pipeline's first key: its node */
    bool broken;           /* a transport failure: close and connect again */
    char err[256];
};

/* A transport failure of the routed client: c is broken. */
static void routed_failed(inv_fleet_conn_t *c)
{
    c->broken = true;
    snprintf(c->err, sizeof(c->err), "%s", inv_cluster_sync_errstr(c->s));
}

/* One routed command; NULL on a transport failure (c is then broken). */
static redisReply *fcall(inv_fleet_conn_t *c, const char *key, const char *fmt, ...)
{
    int err = 0;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = inv_cluster_sync_vcmd(c->s, key, &err, fmt, ap);
    va_end(ap);
    if (!r)
        routed_failed(c);
    return r;
}

/*
 * A script of the fleet: its text, and its SHA1 (scripts_hash, once per
 * process). Each call goes as EVALSHA, with its text only after NOSCRIPT
 * (inv_cluster_sync_vscript): Redis reads 250 bytes a heartbeat instead of
 * 1019, 176 a node id claim instead of 389 (build/tests/unit.inv_fleet_redis
 * prints them).
 */
typedef struct fscript {
    const char *text;
    char sha1[41];
} fscript_t;

static fscript_t SC_HEARTBEAT = {LUA_HEARTBEAT, ""};
static fscript_t SC_CLAIM = {LUA_CLAIM, ""};
static fscript_t SC_LEAVE = {LUA_LEAVE, ""};
static fscript_t SC_PUBLISH = {LUA_PUBLISH, ""};
static fscript_t SC_FIGURES = {LUA_FIGURES, ""};

static void scripts_hash(void)
{
    fscript_t *const all[] = {&SC_HEARTBEAT, &SC_CLAIM, &SC_LEAVE, &SC_PUBLISH, &SC_FIGURES};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        inv_cluster_script_sha1(all[i]->text, all[i]->sha1);
}

/* fcall for script sc; fmt gives numkeys, the keys and the arguments. */
static redisReply *fscript(inv_fleet_conn_t *c, const char *key, const fscript_t *sc,
                           const char *fmt, ...)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, scripts_hash);
    int err = 0;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = inv_cluster_sync_vscript(c->s, key, sc->sha1, sc->text, &err, fmt, ap);
    va_end(ap);
    if (!r)
        routed_failed(c);
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
    /* connect now, as callers expect of a connect; through a transport (the
     * simulator's) there is no raw connection: a PING opens one */
    int err = 0;
    redisReply *ping =
        inv_cluster_transport() ? inv_cluster_sync_cmd(c->s, NULL, &err, "PING") : NULL;
    freeReplyObject(ping);
    if (inv_cluster_transport() ? !ping : !inv_cluster_sync_ctx(c->s, NULL, &err)) {
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
    for (size_t i = 0; c->tq && i < c->piped; i++)
        redisFreeCommand(c->tq[i]);
    free(c->tq);
    free(c->tql);
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
        r = fscript(c, KEY_MEMBERS, &SC_HEARTBEAT, "4 %s %s %s %s %s %s %s %s %s", KEY_MEMBERS,
                    KEY_CONFIG, node_key, KEY_FLOORS, member, ttl, nttl, n, lim);
    else
        r = fscript(c, KEY_MEMBERS, &SC_HEARTBEAT, "2 %s %s %s %s %s", KEY_MEMBERS, KEY_CONFIG,
                    member, ttl, nttl);
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
    redisReply *r = fscript(c, KEY_CONFIG, &SC_PUBLISH, "1 %s %s %s %s %s %s", KEY_CONFIG, limits,
                            member, CHAN_EVENTS, at, b);
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
    redisReply *r =
        fscript(c, key, &SC_CLAIM, "2 %s %s %s %s %s %s", key, KEY_FLOORS, member, ttl, nb, lim);
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
    redisReply *r =
        node_key
            ? fscript(c, KEY_MEMBERS, &SC_LEAVE, "3 %s %s %s %s %s %s %s %s", KEY_MEMBERS, node_key,
                      KEY_FLOORS, member, CHAN_EVENTS, nb, mine, last)
            : fscript(c, KEY_MEMBERS, &SC_LEAVE, "1 %s %s %s", KEY_MEMBERS, member, CHAN_EVENTS);
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

/*---- the dashboard's fleet figures (LUA_FIGURES) ----*/

int inv_fleet_figures(inv_fleet_conn_t *c, const char *member, const char *json,
                      inv_fleet_pair_fn fn, void *ctx, char *errbuf, size_t errlen)
{
    redisReply *r = fscript(c, KEY_FIGURES, &SC_FIGURES, "2 %s %s %s %s", KEY_FIGURES, KEY_MEMBERS,
                            member, json ? json : "");
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

/*---- commands for a store above inventory ----*/

/* A reply is hiredis's: the type is only a name the gateway can hold. */
static const redisReply *rr(const inv_fleet_reply_t *r)
{
    return (const redisReply *)(const void *)r;
}

inv_fleet_reply_t *inv_fleet_vcmd(inv_fleet_conn_t *c, const char *key, const char *fmt, va_list ap)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_vcmd(c->s, key, &err, fmt, ap);
    if (!r)
        routed_failed(c);
    return (inv_fleet_reply_t *)(void *)r;
}

inv_fleet_reply_t *inv_fleet_cmd(inv_fleet_conn_t *c, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    inv_fleet_reply_t *r = inv_fleet_vcmd(c, key, fmt, ap);
    va_end(ap);
    return r;
}

inv_fleet_reply_t *inv_fleet_cmd_argv(inv_fleet_conn_t *c, const char *key, int argc,
                                      const char **argv, const size_t *argl)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_argv(c->s, key, argc, argv, argl, &err);
    if (!r)
        routed_failed(c);
    return (inv_fleet_reply_t *)(void *)r;
}

void inv_fleet_script_sha1(const char *text, char sha1[41])
{
    inv_cluster_script_sha1(text, sha1);
}

inv_fleet_reply_t *inv_fleet_vscript(inv_fleet_conn_t *c, const char *key, const char *sha1,
                                     const char *text, const char *fmt, va_list ap)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_vscript(c->s, key, sha1, text, &err, fmt, ap);
    if (!r)
        routed_failed(c);
    return (inv_fleet_reply_t *)(void *)r;
}

inv_fleet_reply_t *inv_fleet_script_argv(inv_fleet_conn_t *c, const char *key, const char *sha1,
                                         const char *text, int argc, const char **argv,
                                         const size_t *argl)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_script(c->s, key, sha1, text, argc, argv, argl, &err);
    if (!r)
        routed_failed(c);
    return (inv_fleet_reply_t *)(void *)r;
}

void inv_fleet_reply_free(inv_fleet_reply_t *r)
{
    if (r)
        freeReplyObject(r);
}

inv_fleet_reply_type_t inv_fleet_reply_type(const inv_fleet_reply_t *r)
{
    switch (rr(r)->type) {
    case REDIS_REPLY_STRING:
        return INV_FLEET_REPLY_STRING;
    case REDIS_REPLY_ARRAY:
        return INV_FLEET_REPLY_ARRAY;
    case REDIS_REPLY_INTEGER:
        return INV_FLEET_REPLY_INTEGER;
    case REDIS_REPLY_NIL:
        return INV_FLEET_REPLY_NIL;
    case REDIS_REPLY_STATUS:
        return INV_FLEET_REPLY_STATUS;
    case REDIS_REPLY_ERROR:
        return INV_FLEET_REPLY_ERROR;
    default:
        return INV_FLEET_REPLY_OTHER;
    }
}

long long inv_fleet_reply_integer(const inv_fleet_reply_t *r)
{
    return rr(r)->integer;
}

const char *inv_fleet_reply_str(const inv_fleet_reply_t *r)
{
    return rr(r)->str;
}

size_t inv_fleet_reply_len(const inv_fleet_reply_t *r)
{
    return rr(r)->len;
}

size_t inv_fleet_reply_elements(const inv_fleet_reply_t *r)
{
    return rr(r)->type == REDIS_REPLY_ARRAY ? rr(r)->elements : 0;
}

const inv_fleet_reply_t *inv_fleet_reply_element(const inv_fleet_reply_t *r, size_t i)
{
    return (const inv_fleet_reply_t *)(const void *)rr(r)->element[i];
}

/* inv_fleet_pipe_append through a transport: the command waits in c->tq. */
static int tpipe_append(inv_fleet_conn_t *c, const char *key, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0)
        return CM_ENOMEM;
    if (c->piped == c->tcap) {
        size_t cap = c->tcap ? c->tcap * 2 : 16;
        char **q = realloc(c->tq, cap * sizeof(*q));
        size_t *ql = q ? realloc(c->tql, cap * sizeof(*ql)) : NULL;
        if (q)
            c->tq = q;
        if (!ql) {
            redisFreeCommand(cmd);
            return CM_ENOMEM;
        }
        c->tql = ql;
        c->tcap = cap;
    }
    if (c->piped == 0)
        snprintf(c->tkey, sizeof(c->tkey), "%s", key ? key : "");
    c->tq[c->piped] = cmd;
    c->tql[c->piped++] = (size_t)len;
    return 0;
}

/* inv_fleet_pipe_read through a transport: one call per command, in order; the
 * first transport failure ends it (the commands after it are not sent). */
static int tpipe_read(inv_fleet_conn_t *c, size_t *errors)
{
    size_t sent = c->piped;
    c->piped = 0;
    int rc = 0;
    for (size_t i = 0; i < sent; i++) {
        int err = 0;
        redisReply *r = rc ? NULL
                           : inv_cluster_sync_formatted(c->s, c->tkey[0] ? c->tkey : NULL, c->tq[i],
                                                        c->tql[i], &err);
        redisFreeCommand(c->tq[i]);
        if (rc)
            continue;
        if (!r) {
            routed_failed(c);
            rc = CM_EBACKEND;
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR)
            (*errors)++;
        freeReplyObject(r);
    }
    return rc;
}

int inv_fleet_pipe_append(inv_fleet_conn_t *c, const char *key, const char *fmt, ...)
{
    if (inv_cluster_transport()) {
        va_list ap;
        va_start(ap, fmt);
        int rc = tpipe_append(c, key, fmt, ap);
        va_end(ap);
        return rc;
    }
    if (c->piped == 0) { /* one connection for the whole pipeline: key's node */
        int err = 0;
        c->rc = inv_cluster_sync_ctx(c->s, key, &err);
        if (!c->rc) {
            routed_failed(c);
            return CM_EBACKEND;
        }
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(c->rc, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return CM_ENOMEM;
    c->piped++;
    return 0;
}

int inv_fleet_pipe_read(inv_fleet_conn_t *c, size_t *errors)
{
    *errors = 0;
    if (inv_cluster_transport())
        return tpipe_read(c, errors);
    size_t sent = c->piped;
    c->piped = 0;
    for (size_t i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK) {
            raw_failed(c);
            return CM_EBACKEND;
        }
        if (r->type == REDIS_REPLY_ERROR)
            (*errors)++;
        freeReplyObject(r);
    }
    return 0;
}
