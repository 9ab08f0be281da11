/*
 * The simulated Redis (see sim_redis.h).
 *
 * Written by hand, only as much as the backend's scripts and calls need
 * (inventory/inv_redis_lua.h, inv_redis_admin.c, inv_redis_sync.c) and the
 * fairness store's (gateway/buy/gw_fair_redis.c): strings, hashes, sets and
 * sorted sets, a key's expiry on the simulated wall clock (lazy, as Redis's);
 * the commands are PING, SCRIPT LOAD, EVAL, EVALSHA (NOSCRIPT when the cache
 * lacks it), GET, SET [NX] [PX], PEXPIRE, PTTL, TIME, RENAMENX, HGET, HMGET,
 * HGETALL, HSET, HSETNX, HEXISTS, HINCRBY, HDEL, HLEN, EXISTS, DEL, SADD,
 * SREM, SCARD, SMEMBERS (insertion order), SISMEMBER, ZADD, ZCARD, ZSCORE,
 * ZRANK, ZRANGE, PUBLISH (no subscriber: 0) and WAIT. A logged write replays
 * its expiry from the replay's clock (Redis's AOF writes an absolute time).
 * A script runs in Lua 5.1 with redis.call / redis.pcall and Redis's
 * conversions both ways (an integer reply is a number, a nil bulk false, a
 * table with err an error reply); a script's writes before an error stay, as
 * in Redis. A script's id is 40 hex digits derived from its text (FNV-1a and
 * splitmix, not SHA-1: the backend only sends back what SCRIPT LOAD said).
 *
 * Persistence and replication keep the commands that wrote, in order (the
 * scripts by id, their texts kept apart: Redis's verbatim script replication):
 * a restart with persistence replays them all (appendfsync always: what ran
 * is on disk), the replica holds a prefix of them, and a failover replays
 * that prefix.
 */
#include "sim/sim_redis.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <ctype.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*---- a dictionary of byte strings ----*/

typedef struct sd_ent {
    struct sd_ent *next;  /* in the bucket */
    struct sd_ent *onext; /* insertion order */
    struct sd_ent *oprev;
    size_t klen, vlen;
    char *k;
    char *v; /* a hash's value; a set's members have none; the keyspace's: obj_t */
} sd_ent_t;

typedef struct sd {
    sd_ent_t **b;
    size_t nb, n;
    sd_ent_t *ohead, *otail;
} sd_t;

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static sd_t *sd_new(void)
{
    sd_t *d = cm_xcalloc(1, sizeof(*d));
    d->nb = 16;
    d->b = cm_xcalloc(d->nb, sizeof(*d->b));
    return d;
}

static sd_ent_t *sd_find(const sd_t *d, const char *k, size_t kl)
{
    for (sd_ent_t *e = d->b[fnv(k, kl) & (d->nb - 1)]; e; e = e->next)
        if (e->klen == kl && memcmp(e->k, k, kl) == 0)
            return e;
    return NULL;
}

static void sd_grow(sd_t *d)
{
    size_t nb = d->nb * 2;
    sd_ent_t **b = cm_xcalloc(nb, sizeof(*b));
    for (sd_ent_t *e = d->ohead; e; e = e->onext) {
        size_t i = fnv(e->k, e->klen) & (nb - 1);
        e->next = b[i];
        b[i] = e;
    }
    free(d->b);
    d->b = b;
    d->nb = nb;
}

static char *mem_dup(const char *s, size_t n)
{
    char *p = cm_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* The entry of k, created (no value) if missing; *created says which. */
static sd_ent_t *sd_get(sd_t *d, const char *k, size_t kl, bool *created)
{
    sd_ent_t *e = sd_find(d, k, kl);
    *created = e == NULL;
    if (e)
        return e;
    if (d->n + 1 > d->nb)
        sd_grow(d);
    e = cm_xcalloc(1, sizeof(*e));
    e->k = mem_dup(k, kl);
    e->klen = kl;
    size_t i = fnv(k, kl) & (d->nb - 1);
    e->next = d->b[i];
    d->b[i] = e;
    e->oprev = d->otail;
    if (d->otail)
        d->otail->onext = e;
    else
        d->ohead = e;
    d->otail = e;
    d->n++;
    return e;
}

/* Unlinks and returns k's entry (the caller frees its value), or NULL. */
static sd_ent_t *sd_take(sd_t *d, const char *k, size_t kl)
{
    sd_ent_t **pp = &d->b[fnv(k, kl) & (d->nb - 1)];
    for (; *pp; pp = &(*pp)->next) {
        sd_ent_t *e = *pp;
        if (e->klen != kl || memcmp(e->k, k, kl) != 0)
            continue;
        *pp = e->next;
        if (e->oprev)
            e->oprev->onext = e->onext;
        else
            d->ohead = e->onext;
        if (e->onext)
            e->onext->oprev = e->oprev;
        else
            d->otail = e->oprev;
        d->n--;
        return e;
    }
    return NULL;
}

static void sd_free(sd_t *d, void (*vfree)(char *v))
{
    if (!d)
        return;
    for (sd_ent_t *e = d->ohead, *nx; e; e = nx) {
        nx = e->onext;
        if (vfree)
            vfree(e->v);
        else
            free(e->v);
        free(e->k);
        free(e);
    }
    free(d->b);
    free(d);
}

/*---- the server ----*/

enum { T_HASH = 1, T_SET = 2, T_STR = 3, T_ZSET = 4 };

typedef struct obj {
    int type;
    sd_t *d; /* a hash's, a set's, a sorted set's (member -> score text) */
    char *s; /* a string's value */
    size_t sl;
    int64_t expire_ms; /* the wall clock's ms it goes at (PX, PEXPIRE); 0: never */
} obj_t;

static void obj_free(char *v)
{
    obj_t *o = (obj_t *)(void *)v;
    if (o) {
        sd_free(o->d, NULL);
        free(o->s);
        free(o);
    }
}

typedef struct cmd {
    int argc;
    char **argv;
    size_t *argl;
    int64_t at_ms; /* a logged write's clock: its replay runs at it */
} cmd_t;

typedef struct late {
    struct late *next;
    cmd_t c;
    uint64_t due; /* the step it runs at */
} late_t;

typedef struct conn {
    uint64_t epoch; /* the server's life it belongs to */
} conn_t;

struct sim_redis {
    cm_rand_t *rng;
    sd_t *ks;      /* key -> obj_t */
    sd_t *scripts; /* id -> text: the script cache */
    sd_t *texts;   /* id -> text: every script ever loaded (the log's EVALSHA replay) */
    lua_State *L;
    uint64_t dirty; /* writes so far (a command that moved it is logged) */
    cmd_t *log;
    size_t nlog, caplog;
    size_t repl; /* the replica has log[0..repl) */
    uint64_t epoch;
    uint64_t step;
    late_t *late;
    bool replaying;
    int64_t replay_ms; /* the clock of the write being replayed */
    int64_t skew_ms;   /* the caller's clock minus the server's (sim_redis_skew) */
    sim_redis_faults_t faults;
    sim_redis_stats_t stats;
    bool (*gone)(void *ctx); /* sim_redis_dies_with's: the caller's process is gone */
    void *gone_ctx;
    inv_cluster_transport_t tr;
    inv_cluster_async_t atr;
    struct aconn *aconns; /* the worker loops' connections, oldest first */
    uint64_t aconn_ids;
};

static redisReply *rep_new(int type)
{
    redisReply *r = cm_xcalloc(1, sizeof(*r));
    r->type = type;
    return r;
}

static redisReply *rep_int(long long v)
{
    redisReply *r = rep_new(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *rep_str(int type, const char *s, size_t n)
{
    redisReply *r = rep_new(type);
    r->str = mem_dup(s, n);
    r->len = n;
    return r;
}

static redisReply *rep_err(const char *msg)
{
    return rep_str(REDIS_REPLY_ERROR, msg, strlen(msg));
}

static redisReply *rep_arr(size_t n)
{
    redisReply *r = rep_new(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = cm_xcalloc(n ? n : 1, sizeof(*r->element));
    return r;
}

/* k's entry in the keyspace, or NULL; a key past its expiry goes first (Redis's lazy
 * expiry, on the simulated wall clock). */
/* The clock: a replay runs each write at its own time, as the AOF's effects (absolute expiries,
 * TIME's value) keep it, so a script reads on replay what it read when it ran. */
static int64_t sr_now(const sim_redis_t *r)
{
    return r->replaying ? r->replay_ms : cm_wall_ms() - r->skew_ms;
}

void sim_redis_skew(sim_redis_t *r, int64_t ms)
{
    r->skew_ms = ms;
}

static sd_ent_t *ks_find(sim_redis_t *r, const char *k, size_t kl)
{
    sd_ent_t *e = sd_find(r->ks, k, kl);
    if (!e)
        return NULL;
    obj_t *o = (obj_t *)(void *)e->v;
    if (o->expire_ms == 0 || sr_now(r) < o->expire_ms)
        return e;
    e = sd_take(r->ks, k, kl);
    obj_free(e->v);
    free(e->k);
    free(e);
    return NULL;
}

static obj_t *lookup(sim_redis_t *r, const char *k, size_t kl, int type, bool *wrong)
{
    sd_ent_t *e = ks_find(r, k, kl);
    *wrong = false;
    if (!e)
        return NULL;
    obj_t *o = (obj_t *)(void *)e->v;
    if (o->type != type) {
        *wrong = true;
        return NULL;
    }
    return o;
}

static obj_t *lookup_create(sim_redis_t *r, const char *k, size_t kl, int type, bool *wrong)
{
    obj_t *o = lookup(r, k, kl, type, wrong);
    if (o || *wrong)
        return o;
    bool created;
    sd_ent_t *e = sd_get(r->ks, k, kl, &created);
    o = cm_xcalloc(1, sizeof(*o));
    o->type = type;
    o->d = type == T_STR ? NULL : sd_new();
    e->v = (char *)(void *)o;
    return o;
}

/* A hash or set left empty goes away, as in Redis. */
static void drop_if_empty(sim_redis_t *r, const char *k, size_t kl)
{
    sd_ent_t *e = sd_find(r->ks, k, kl);
    if (e && ((obj_t *)(void *)e->v)->d && ((obj_t *)(void *)e->v)->d->n == 0) {
        e = sd_take(r->ks, k, kl);
        obj_free(e->v);
        free(e->k);
        free(e);
    }
}

static bool parse_ll(const char *s, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return false;
    char buf[24];
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

/* A script's id, Redis's own: the SHA1 of its text in hex, so that a client
 * that hashes the text itself (gw_fair_redis.c) finds it with EVALSHA. */
static void script_id(const char *text, size_t n, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(text, n, md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        abort();
    for (unsigned int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[40] = '\0';
}

static redisReply *exec(sim_redis_t *r, int argc, char **argv, size_t *argl);

/*---- Lua ----*/

static sim_redis_t *lua_server(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Pushes a reply as Lua sees it; an error reply is pushed as {err=...}. */
static void push_reply(lua_State *L, const redisReply *rp)
{
    switch (rp->type) {
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)rp->integer);
        break;
    case REDIS_REPLY_STRING:
        lua_pushlstring(L, rp->str, rp->len);
        break;
    case REDIS_REPLY_NIL:
        lua_pushboolean(L, 0);
        break;
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        lua_newtable(L);
        lua_pushstring(L, rp->type == REDIS_REPLY_STATUS ? "ok" : "err");
        lua_pushlstring(L, rp->str, rp->len);
        lua_settable(L, -3);
        break;
    case REDIS_REPLY_ARRAY:
        lua_newtable(L);
        for (size_t i = 0; i < rp->elements; i++) {
            lua_pushnumber(L, (lua_Number)(i + 1));
            push_reply(L, rp->element[i]);
            lua_settable(L, -3);
        }
        break;
    default:
        lua_pushboolean(L, 0);
    }
}

static int lua_call_impl(lua_State *L, bool raise)
{
    sim_redis_t *r = lua_server(L);
    int argc = lua_gettop(L);
    if (argc < 1 || argc > 64)
        return luaL_error(L, "Please specify at least one argument for redis.call()");
    char *argv[64];
    size_t argl[64];
    for (int i = 0; i < argc; i++) {
        size_t n;
        const char *s = lua_tolstring(L, i + 1, &n); /* numbers become strings, as in Redis */
        if (!s)
            return luaL_error(L, "Lua redis() command arguments must be strings or integers");
        argv[i] = (char *)s;
        argl[i] = n;
    }
    if (!strcasecmp(argv[0], "EVAL") || !strcasecmp(argv[0], "EVALSHA") ||
        !strcasecmp(argv[0], "WAIT") || !strcasecmp(argv[0], "SCRIPT"))
        return luaL_error(L, "This Redis command is not allowed from scripts");
    redisReply *rp = exec(r, argc, argv, argl);
    if (rp->type == REDIS_REPLY_ERROR && raise) {
        lua_pushlstring(L, rp->str, rp->len);
        freeReplyObject(rp);
        return lua_error(L);
    }
    push_reply(L, rp);
    freeReplyObject(rp);
    return 1;
}

static int lua_redis_call(lua_State *L)
{
    return lua_call_impl(L, true);
}

static int lua_redis_pcall(lua_State *L)
{
    return lua_call_impl(L, false);
}

/* The value at the top of the stack as a reply, Redis's rules. */
static redisReply *lua_to_reply(lua_State *L)
{
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER:
        return rep_int((long long)lua_tonumber(L, -1));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        return rep_str(REDIS_REPLY_STRING, s, n);
    }
    case LUA_TBOOLEAN:
        return lua_toboolean(L, -1) ? rep_int(1) : rep_new(REDIS_REPLY_NIL);
    case LUA_TTABLE: {
        lua_pushstring(L, "err");
        lua_gettable(L, -2);
        if (lua_isstring(L, -1)) {
            redisReply *e = rep_err(lua_tostring(L, -1));
            lua_pop(L, 1);
            return e;
        }
        lua_pop(L, 1);
        lua_pushstring(L, "ok");
        lua_gettable(L, -2);
        if (lua_isstring(L, -1)) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            redisReply *e = rep_str(REDIS_REPLY_STATUS, s, n);
            lua_pop(L, 1);
            return e;
        }
        lua_pop(L, 1);
        size_t n = 0;
        for (;; n++) { /* up to the first nil */
            lua_rawgeti(L, -1, (int)n + 1);
            bool nil = lua_isnil(L, -1);
            lua_pop(L, 1);
            if (nil)
                break;
        }
        redisReply *a = rep_arr(n);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            a->element[i] = lua_to_reply(L);
            lua_pop(L, 1);
        }
        return a;
    }
    default:
        return rep_new(REDIS_REPLY_NIL);
    }
}

static void lua_setup(sim_redis_t *r)
{
    lua_State *L = luaL_newstate();
    /* the libraries Redis gives a script (less cjson, struct, cmsgpack, bit: unused) */
    lua_pushcfunction(L, luaopen_base);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_table);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_string);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_math);
    lua_call(L, 0, 0);
    lua_newtable(L);
    lua_pushstring(L, "call");
    lua_pushlightuserdata(L, r);
    lua_pushcclosure(L, lua_redis_call, 1);
    lua_settable(L, -3);
    lua_pushstring(L, "pcall");
    lua_pushlightuserdata(L, r);
    lua_pushcclosure(L, lua_redis_pcall, 1);
    lua_settable(L, -3);
    lua_setglobal(L, "redis");
    r->L = L;
}

static void set_argv_table(lua_State *L, const char *name, int n, char **argv, size_t *argl)
{
    lua_newtable(L);
    for (int i = 0; i < n; i++) {
        lua_pushlstring(L, argv[i], argl[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, name);
}

/* Runs a script (its id and text) with its keys and arguments (argv from the key count on). */
static redisReply *run_script(sim_redis_t *r, const char *id, const char *text, size_t tlen,
                              int argc, char **argv, size_t *argl)
{
    long long nk;
    if (argc < 1 || !parse_ll(argv[0], argl[0], &nk) || nk < 0 || nk > argc - 1)
        return rep_err("ERR Number of keys can't be greater than number of args");
    lua_State *L = r->L;
    r->stats.scripts++;
    /* compiled once per text, as Redis keeps f_<sha> */
    lua_getfield(L, LUA_REGISTRYINDEX, id);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (luaL_loadbuffer(L, text, tlen, "@user_script") != 0) {
            char msg[300];
            snprintf(msg, sizeof(msg), "ERR Error compiling script: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
            return rep_err(msg);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, id);
    }
    set_argv_table(L, "KEYS", (int)nk, argv + 1, argl + 1);
    set_argv_table(L, "ARGV", argc - 1 - (int)nk, argv + 1 + nk, argl + 1 + nk);
    if (lua_pcall(L, 0, 1, 0) != 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "ERR Error running script: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return rep_err(msg);
    }
    redisReply *rp = lua_to_reply(L);
    lua_pop(L, 1);
    return rp;
}

/*---- commands ----*/

static bool is(const char *a, const char *name)
{
    return strcasecmp(a, name) == 0;
}

static redisReply *wrongtype(void)
{
    return rep_err("WRONGTYPE Operation against a key holding the wrong kind of value");
}

/* Caches a script's text under its id (and keeps it for the log's replay). */
static void remember(sim_redis_t *r, const char *id, const char *text, size_t n)
{
    sd_t *d[2] = {r->scripts, r->texts};
    for (int i = 0; i < 2; i++) {
        bool created;
        sd_ent_t *e = sd_get(d[i], id, 40, &created);
        if (created) {
            e->v = mem_dup(text, n);
            e->vlen = n;
        }
    }
}

/* A sorted set's member and score, for ZRANK and ZRANGE's order. */
typedef struct zm {
    double score;
    const char *m;
    size_t ml;
} zm_t;

static int zm_cmp(const void *a, const void *b)
{
    const zm_t *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    size_t n = x->ml < y->ml ? x->ml : y->ml;
    int c = memcmp(x->m, y->m, n);
    return c ? c : (x->ml > y->ml) - (x->ml < y->ml);
}

/* A sorted set's members in Redis's order (score, then the bytes); *n of them. */
static zm_t *z_sorted(const obj_t *o, size_t *n)
{
    *n = o ? o->d->n : 0;
    zm_t *v = cm_xcalloc(*n ? *n : 1, sizeof(*v));
    size_t i = 0;
    for (sd_ent_t *e = o ? o->d->ohead : NULL; e; e = e->onext, i++)
        v[i] = (zm_t){strtod(e->v, NULL), e->k, e->klen};
    qsort(v, *n, sizeof(*v), zm_cmp);
    return v;
}

/* The replies of a whole hash (HGETALL): field, value, ... */
static redisReply *hgetall(const obj_t *o)
{
    redisReply *a = rep_arr(o ? 2 * o->d->n : 0);
    size_t i = 0;
    for (sd_ent_t *e = o ? o->d->ohead : NULL; e; e = e->onext) {
        a->element[i++] = rep_str(REDIS_REPLY_STRING, e->k, e->klen);
        a->element[i++] = rep_str(REDIS_REPLY_STRING, e->v, e->vlen);
    }
    return a;
}

/*
 * The strings (GET, SET [NX] [PX ms]), expiries (PEXPIRE, PTTL), TIME,
 * RENAMENX, HGETALL, HSETNX, SCARD and the sorted sets (ZADD, ZCARD, ZSCORE,
 * ZRANK, ZRANGE) the fairness store's scripts and calls need
 * (gateway/buy/gw_fair_redis.c); NULL when the command is none of these.
 */
static redisReply *exec_more(sim_redis_t *r, int argc, char **argv, size_t *argl)
{
    const char *c = argv[0];
    bool wrong;
    if (is(c, "TIME") && argc == 1) {
        int64_t ms = sr_now(r);
        char a[24], b[24];
        int na = snprintf(a, sizeof(a), "%lld", (long long)(ms / 1000));
        int nb = snprintf(b, sizeof(b), "%lld", (long long)(ms % 1000) * 1000);
        redisReply *t = rep_arr(2);
        t->element[0] = rep_str(REDIS_REPLY_STRING, a, (size_t)na);
        t->element[1] = rep_str(REDIS_REPLY_STRING, b, (size_t)nb);
        return t;
    }
    if (argc < 2)
        return NULL;
    if (is(c, "GET") && argc == 2) {
        obj_t *o = lookup(r, argv[1], argl[1], T_STR, &wrong);
        if (wrong)
            return wrongtype();
        return o ? rep_str(REDIS_REPLY_STRING, o->s, o->sl) : rep_new(REDIS_REPLY_NIL);
    }
    if (is(c, "SET") && argc >= 3) {
        bool nx = false;
        long long px = 0;
        for (int i = 3; i < argc; i++) {
            if (is(argv[i], "NX"))
                nx = true;
            else if (is(argv[i], "PX") && i + 1 < argc && parse_ll(argv[i + 1], argl[i + 1], &px) &&
                     px > 0)
                i++;
            else
                return rep_err("ERR syntax error (simulated Redis: SET takes NX and PX)");
        }
        sd_ent_t *e = ks_find(r, argv[1], argl[1]);
        if (e && nx)
            return rep_new(REDIS_REPLY_NIL);
        if (e) { /* SET replaces any type */
            e = sd_take(r->ks, argv[1], argl[1]);
            obj_free(e->v);
            free(e->k);
            free(e);
        }
        obj_t *o = lookup_create(r, argv[1], argl[1], T_STR, &wrong);
        o->s = mem_dup(argv[2], argl[2]);
        o->sl = argl[2];
        o->expire_ms = px ? sr_now(r) + px : 0;
        r->dirty++;
        return rep_str(REDIS_REPLY_STATUS, "OK", 2);
    }
    if (is(c, "PEXPIRE") && argc == 3) {
        long long ms;
        if (!parse_ll(argv[2], argl[2], &ms))
            return rep_err("ERR value is not an integer or out of range");
        sd_ent_t *e = ks_find(r, argv[1], argl[1]);
        if (!e)
            return rep_int(0);
        ((obj_t *)(void *)e->v)->expire_ms = sr_now(r) + ms;
        r->dirty++;
        return rep_int(1);
    }
    if (is(c, "PTTL") && argc == 2) {
        sd_ent_t *e = ks_find(r, argv[1], argl[1]);
        if (!e)
            return rep_int(-2);
        obj_t *o = (obj_t *)(void *)e->v;
        return rep_int(o->expire_ms ? o->expire_ms - sr_now(r) : -1);
    }
    if (is(c, "RENAMENX") && argc == 3) {
        if (!ks_find(r, argv[1], argl[1]))
            return rep_err("ERR no such key");
        if (ks_find(r, argv[2], argl[2]))
            return rep_int(0);
        sd_ent_t *e = sd_take(r->ks, argv[1], argl[1]);
        bool created;
        sd_ent_t *n = sd_get(r->ks, argv[2], argl[2], &created);
        n->v = e->v;
        free(e->k);
        free(e);
        r->dirty++;
        return rep_int(1);
    }
    if (is(c, "HGETALL") && argc == 2) {
        obj_t *o = lookup(r, argv[1], argl[1], T_HASH, &wrong);
        return wrong ? wrongtype() : hgetall(o);
    }
    if (is(c, "HSETNX") && argc == 4) {
        obj_t *o = lookup_create(r, argv[1], argl[1], T_HASH, &wrong);
        if (wrong)
            return wrongtype();
        bool created;
        sd_ent_t *e = sd_get(o->d, argv[2], argl[2], &created);
        if (!created)
            return rep_int(0);
        e->v = mem_dup(argv[3], argl[3]);
        e->vlen = argl[3];
        r->dirty++;
        return rep_int(1);
    }
    if (is(c, "SCARD") && argc == 2) {
        obj_t *o = lookup(r, argv[1], argl[1], T_SET, &wrong);
        return wrong ? wrongtype() : rep_int(o ? (long long)o->d->n : 0);
    }
    if (toupper((unsigned char)c[0]) != 'Z')
        return NULL;
    obj_t *o = lookup(r, argv[1], argl[1], T_ZSET, &wrong);
    if (wrong)
        return wrongtype();
    if (is(c, "ZADD") && argc >= 4 && argc % 2 == 0) {
        o = lookup_create(r, argv[1], argl[1], T_ZSET, &wrong);
        long long added = 0;
        for (int i = 2; i < argc; i += 2) {
            char *end;
            (void)strtod(argv[i], &end);
            if (end == argv[i] || *end)
                return rep_err("ERR value is not a valid float");
            bool created;
            sd_ent_t *e = sd_get(o->d, argv[i + 1], argl[i + 1], &created);
            added += created;
            free(e->v);
            e->v = mem_dup(argv[i], argl[i]);
            e->vlen = argl[i];
        }
        r->dirty++;
        return rep_int(added);
    }
    if (is(c, "ZCARD") && argc == 2)
        return rep_int(o ? (long long)o->d->n : 0);
    if (is(c, "ZSCORE") && argc == 3) {
        sd_ent_t *e = o ? sd_find(o->d, argv[2], argl[2]) : NULL;
        return e ? rep_str(REDIS_REPLY_STRING, e->v, e->vlen) : rep_new(REDIS_REPLY_NIL);
    }
    if ((is(c, "ZRANK") && argc == 3) || (is(c, "ZRANGE") && argc == 4)) {
        size_t n;
        zm_t *v = z_sorted(o, &n);
        redisReply *rp = NULL;
        if (is(c, "ZRANK")) {
            for (size_t i = 0; i < n && !rp; i++)
                if (v[i].ml == argl[2] && memcmp(v[i].m, argv[2], argl[2]) == 0)
                    rp = rep_int((long long)i);
            if (!rp)
                rp = rep_new(REDIS_REPLY_NIL);
        } else {
            long long a, b;
            if (!parse_ll(argv[2], argl[2], &a) || !parse_ll(argv[3], argl[3], &b)) {
                free(v);
                return rep_err("ERR value is not an integer or out of range");
            }
            if (a < 0)
                a += (long long)n;
            if (b < 0)
                b += (long long)n;
            if (a < 0)
                a = 0;
            if (b >= (long long)n)
                b = (long long)n - 1;
            size_t k = a <= b ? (size_t)(b - a + 1) : 0;
            rp = rep_arr(k);
            for (size_t i = 0; i < k; i++)
                rp->element[i] =
                    rep_str(REDIS_REPLY_STRING, v[a + (long long)i].m, v[a + (long long)i].ml);
        }
        free(v);
        return rp;
    }
    return NULL;
}

static redisReply *exec(sim_redis_t *r, int argc, char **argv, size_t *argl)
{
    const char *c = argv[0];
    bool wrong;
    if (is(c, "PING"))
        return rep_str(REDIS_REPLY_STATUS, "PONG", 4);
    if (is(c, "SCRIPT") && argc == 3 && is(argv[1], "LOAD")) {
        char id[41];
        script_id(argv[2], argl[2], id);
        remember(r, id, argv[2], argl[2]);
        return rep_str(REDIS_REPLY_STRING, id, 40);
    }
    if (is(c, "EVAL") && argc >= 3) {
        char id[41];
        script_id(argv[1], argl[1], id);
        remember(r, id, argv[1], argl[1]);
        return run_script(r, id, argv[1], argl[1], argc - 2, argv + 2, argl + 2);
    }
    if (is(c, "EVALSHA") && argc >= 3) {
        /* the log's replay finds every script (the verbatim EVAL of replication) */
        sd_ent_t *e = sd_find(r->replaying ? r->texts : r->scripts, argv[1], argl[1]);
        if (!e || argl[1] != 40)
            return rep_err("NOSCRIPT No matching script. Please use EVAL.");
        return run_script(r, e->k, e->v, e->vlen, argc - 2, argv + 2, argl + 2);
    }
    if (is(c, "PUBLISH") && argc == 3)
        return rep_int(0);
    if (is(c, "WAIT") && argc == 3) {
        if (r->faults.replica_lags)
            return rep_int(r->repl == r->nlog);
        r->repl = r->nlog;
        return rep_int(1);
    }
    if ((is(c, "EXISTS") || is(c, "DEL")) && argc >= 2) {
        long long n = 0;
        for (int i = 1; i < argc; i++) {
            if (is(c, "EXISTS")) {
                n += ks_find(r, argv[i], argl[i]) != NULL;
                continue;
            }
            sd_ent_t *e = ks_find(r, argv[i], argl[i]) ? sd_take(r->ks, argv[i], argl[i]) : NULL;
            if (e) {
                n++;
                r->dirty++;
                obj_free(e->v);
                free(e->k);
                free(e);
            }
        }
        return rep_int(n);
    }
    redisReply *more = exec_more(r, argc, argv, argl);
    if (more)
        return more;
    bool hash = toupper((unsigned char)c[0]) == 'H';
    bool set = toupper((unsigned char)c[0]) == 'S';
    if ((!hash && !set) || argc < 2)
        return rep_err("ERR unknown command or wrong number of arguments (simulated Redis)");
    obj_t *o = lookup(r, argv[1], argl[1], hash ? T_HASH : T_SET, &wrong);
    if (wrong)
        return wrongtype();
    if (is(c, "HGET") && argc == 3) {
        sd_ent_t *e = o ? sd_find(o->d, argv[2], argl[2]) : NULL;
        return e ? rep_str(REDIS_REPLY_STRING, e->v, e->vlen) : rep_new(REDIS_REPLY_NIL);
    }
    if (is(c, "HMGET") && argc >= 3) {
        redisReply *a = rep_arr((size_t)argc - 2);
        for (int i = 2; i < argc; i++) {
            sd_ent_t *e = o ? sd_find(o->d, argv[i], argl[i]) : NULL;
            a->element[i - 2] =
                e ? rep_str(REDIS_REPLY_STRING, e->v, e->vlen) : rep_new(REDIS_REPLY_NIL);
        }
        return a;
    }
    if (is(c, "HEXISTS") && argc == 3)
        return rep_int(o && sd_find(o->d, argv[2], argl[2]) != NULL);
    if (is(c, "HLEN") && argc == 2)
        return rep_int(o ? (long long)o->d->n : 0);
    if (is(c, "SISMEMBER") && argc == 3)
        return rep_int(o && sd_find(o->d, argv[2], argl[2]) != NULL);
    if (is(c, "SMEMBERS") && argc == 2) {
        redisReply *a = rep_arr(o ? o->d->n : 0);
        size_t i = 0;
        for (sd_ent_t *e = o ? o->d->ohead : NULL; e; e = e->onext)
            a->element[i++] = rep_str(REDIS_REPLY_STRING, e->k, e->klen);
        return a;
    }
    if (is(c, "HINCRBY") && argc == 4) {
        long long by, cur = 0;
        if (!parse_ll(argv[3], argl[3], &by))
            return rep_err("ERR value is not an integer or out of range");
        o = lookup_create(r, argv[1], argl[1], T_HASH, &wrong);
        bool created;
        sd_ent_t *e = sd_get(o->d, argv[2], argl[2], &created);
        if (!created && !parse_ll(e->v, e->vlen, &cur))
            return rep_err("ERR hash value is not an integer");
        char buf[24];
        int n = snprintf(buf, sizeof(buf), "%lld", cur + by);
        free(e->v);
        e->v = mem_dup(buf, (size_t)n);
        e->vlen = (size_t)n;
        r->dirty++;
        return rep_int(cur + by);
    }
    if (is(c, "HSET") && argc >= 4 && argc % 2 == 0) {
        o = lookup_create(r, argv[1], argl[1], T_HASH, &wrong);
        long long added = 0;
        for (int i = 2; i < argc; i += 2) {
            bool created;
            sd_ent_t *e = sd_get(o->d, argv[i], argl[i], &created);
            added += created;
            free(e->v);
            e->v = mem_dup(argv[i + 1], argl[i + 1]);
            e->vlen = argl[i + 1];
        }
        r->dirty++;
        return rep_int(added);
    }
    if ((is(c, "HDEL") || is(c, "SREM")) && argc >= 3) {
        long long n = 0;
        for (int i = 2; o && i < argc; i++) {
            sd_ent_t *e = sd_take(o->d, argv[i], argl[i]);
            if (e) {
                n++;
                free(e->v);
                free(e->k);
                free(e);
            }
        }
        if (n) {
            r->dirty++;
            drop_if_empty(r, argv[1], argl[1]);
        }
        return rep_int(n);
    }
    if (is(c, "SADD") && argc >= 3) {
        o = lookup_create(r, argv[1], argl[1], T_SET, &wrong);
        long long n = 0;
        for (int i = 2; i < argc; i++) {
            bool created;
            sd_get(o->d, argv[i], argl[i], &created);
            n += created;
        }
        r->dirty++;
        return rep_int(n);
    }
    return rep_err("ERR unknown command or wrong number of arguments (simulated Redis)");
}

/*---- the log, replication, restarts ----*/

static void cmd_copy(cmd_t *dst, int argc, char **argv, size_t *argl)
{
    dst->argc = argc;
    dst->argv = cm_xcalloc((size_t)argc, sizeof(*dst->argv));
    dst->argl = cm_xcalloc((size_t)argc, sizeof(*dst->argl));
    for (int i = 0; i < argc; i++) {
        dst->argv[i] = mem_dup(argv[i], argl[i]);
        dst->argl[i] = argl[i];
    }
}

static void cmd_free(cmd_t *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->argl);
}

/* Runs a client's command: logged (as EVAL for a script) when it wrote. */
static redisReply *run_logged(sim_redis_t *r, int argc, char **argv, size_t *argl)
{
    if (argc <= 0 || !argv)
        return rep_err("ERR empty command (simulated Redis)");
    uint64_t d0 = r->dirty;
    redisReply *rp = exec(r, argc, argv, argl);
    if (r->dirty == d0 || r->replaying)
        return rp;
    if (r->nlog == r->caplog) {
        r->caplog = r->caplog ? r->caplog * 2 : 64;
        r->log = cm_xrealloc(r->log, r->caplog * sizeof(*r->log));
    }
    cmd_t *c = &r->log[r->nlog++];
    cmd_copy(c, argc, argv, argl);
    c->at_ms = sr_now(r);
    if (is(argv[0], "EVAL")) { /* logged by id: the replay finds its text in r->texts */
        char id[41];
        script_id(argv[1], argl[1], id);
        free(c->argv[0]);
        free(c->argv[1]);
        c->argv[0] = mem_dup("EVALSHA", 7);
        c->argl[0] = 7;
        c->argv[1] = mem_dup(id, 40);
        c->argl[1] = 40;
    }
    return rp;
}

static void late_drop_all(sim_redis_t *r)
{
    while (r->late) {
        late_t *l = r->late;
        r->late = l->next;
        cmd_free(&l->c);
        free(l);
    }
}

/* A new keyspace from log[0..n): the rest of the log is forgotten. */
static void rebuild(sim_redis_t *r, size_t n)
{
    sd_free(r->ks, obj_free);
    r->ks = sd_new();
    r->replaying = true;
    for (size_t i = 0; i < n; i++) {
        r->replay_ms = r->log[i].at_ms;
        redisReply *rp = exec(r, r->log[i].argc, r->log[i].argv, r->log[i].argl);
        freeReplyObject(rp);
    }
    r->replaying = false;
    for (size_t i = n; i < r->nlog; i++)
        cmd_free(&r->log[i]);
    r->nlog = n;
    if (r->repl > n)
        r->repl = n;
    r->epoch++; /* every connection breaks */
    late_drop_all(r);
}

void sim_redis_restart(sim_redis_t *r, bool persist)
{
    r->stats.restarts++;
    sd_free(r->scripts, NULL);
    r->scripts = sd_new();
    rebuild(r, persist ? r->nlog : 0);
    r->repl = r->nlog; /* the replica resynchronises from the restarted master */
}

void sim_redis_failover(sim_redis_t *r)
{
    r->stats.failovers++;
    rebuild(r, r->repl); /* the replica's script cache: SCRIPT LOAD and EVAL replicate */
}

size_t sim_redis_failover_lose(sim_redis_t *r, size_t k)
{
    size_t keep = r->nlog > k ? r->nlog - k : 0, lost = r->nlog - keep;
    r->stats.failovers++;
    rebuild(r, keep);
    r->repl = r->nlog; /* the new master's replica starts from it */
    return lost;
}

void sim_redis_replicate(sim_redis_t *r)
{
    if (!r->faults.replica_lags)
        r->repl = r->nlog;
}

void sim_redis_replicate_one(sim_redis_t *r)
{
    if (r->repl < r->nlog)
        r->repl++;
}

void sim_redis_step(sim_redis_t *r, uint64_t step)
{
    r->step = step;
    for (late_t **pp = &r->late; *pp;) {
        late_t *l = *pp;
        if (l->due > step || r->faults.down) {
            pp = &l->next;
            continue;
        }
        *pp = l->next;
        r->stats.late_ran++;
        freeReplyObject(run_logged(r, l->c.argc, l->c.argv, l->c.argl));
        cmd_free(&l->c);
        free(l);
    }
}

/*---- the transport ----*/

/* The caller is gone: killed at a call (die_after), or its process died elsewhere. */
static bool caller_dead(const sim_redis_t *r)
{
    return r->faults.dead || (r->gone && r->gone(r->gone_ctx));
}

void sim_redis_dies_with(sim_redis_t *r, bool (*gone)(void *ctx), void *ctx)
{
    r->gone = gone;
    r->gone_ctx = ctx;
}

static void *tr_open(void *arg, const char *host, int port, char *errbuf, size_t errlen)
{
    (void)host, (void)port;
    sim_redis_t *r = arg;
    if (r->faults.down || caller_dead(r)) {
        snprintf(errbuf, errlen, "redis: connect: Connection refused (simulated)");
        return NULL;
    }
    conn_t *c = cm_xcalloc(1, sizeof(*c));
    c->epoch = r->epoch;
    return c;
}

static void tr_close(void *arg, void *conn)
{
    (void)arg;
    free(conn);
}

static uint64_t tr_now_ms(void *arg)
{
    (void)arg;
    return cm_mono_ms();
}

/* Splits a RESP multibulk (as hiredis formats every command) in place. */
static int parse_resp(char *p, size_t len, char **argv, size_t *argl, int max)
{
    char *end = p + len;
    if (p >= end || *p != '*')
        return -1;
    int argc = (int)strtol(p + 1, &p, 10);
    if (argc < 1 || argc > max)
        return -1;
    p += 2;
    for (int i = 0; i < argc; i++) {
        if (p >= end || *p != '$')
            return -1;
        long n = strtol(p + 1, &p, 10);
        p += 2;
        if (n < 0 || p + n + 2 > end)
            return -1;
        argv[i] = p;
        argl[i] = (size_t)n;
        p[n] = '\0'; /* over the \r */
        p += n + 2;
    }
    return argc;
}

static int tr_call(void *arg, void *conn, const char *cmd, size_t len, redisReply **out)
{
    sim_redis_t *r = arg;
    conn_t *c = conn;
    *out = NULL;
    r->stats.calls++;
    if (r->faults.down || caller_dead(r) || c->epoch != r->epoch)
        return CM_EBACKEND; /* reset: nothing ran */
    char *buf = mem_dup(cmd, len);
    char *argv[80];
    size_t argl[80];
    int argc = parse_resp(buf, len, argv, argl, 80);
    if (argc < 0) {
        free(buf);
        *out = rep_err("ERR Protocol error (simulated Redis)");
        return 0;
    }
    bool ping = is(argv[0], "PING");
    if (!ping && cm_rand_unit(r->rng) < r->faults.p_timeout) {
        r->stats.timeouts++;
        switch (cm_rand_below(r->rng, 3)) {
        case 0: /* it ran; the reply came too late */
            freeReplyObject(run_logged(r, argc, argv, argl));
            break;
        case 1: { /* it sits in the server's input and runs K steps later */
            late_t *l = cm_xcalloc(1, sizeof(*l));
            cmd_copy(&l->c, argc, argv, argl);
            l->due = r->step + 1 + cm_rand_below(r->rng, 20);
            late_t **pp = &r->late;
            while (*pp)
                pp = &(*pp)->next;
            *pp = l;
            break;
        }
        default: /* never read: the client closed first */
            break;
        }
        free(buf);
        return CM_ETIMEOUT;
    }
    redisReply *rp = run_logged(r, argc, argv, argl);
    free(buf);
    if (r->faults.die_after && --r->faults.die_after == 0) { /* killed: no draw taken */
        r->faults.dead = true;
        freeReplyObject(rp);
        return CM_EBACKEND;
    }
    if (!ping && cm_rand_unit(r->rng) < r->faults.p_lost) {
        r->stats.lost++;
        freeReplyObject(rp);
        return CM_EBACKEND;
    }
    *out = rp;
    return 0;
}


/*---- the asynchronous transport (the worker loops') ----*/

/*
 * A worker loop's connection: the commands it sent and the server has not
 * read yet (run in order, some each step), then the replies the server wrote
 * and the worker has not read (handed over in order, from the owner's step or
 * the worker's drain). Faults: a reply held past the client's timeout (the
 * command ran), a connection that stalls (nothing read for a while: the
 * command has not run), then runs on or breaks (it never runs), a reply lost
 * with the connection after the command ran; a server down refuses connects
 * and breaks connections; a restart or failover breaks them all.
 */
typedef struct areq {
    struct areq *next;
    redisCallbackFn *cb;
    void *priv;
    cmd_t c;            /* until it runs */
    redisReply *reply;  /* once it ran */
    uint64_t due;       /* its reply is held until this step */
} areq_t;

enum { AC_CONNECTING, AC_UP };

typedef struct aconn {
    redisAsyncContext ac; /* what the worker holds: data, errstr */
    struct aconn *next;
    uint64_t id;
    uint64_t epoch;
    int state;
    bool closing;          /* in its teardown: sends are refused, as hiredis does */
    uint64_t stall_until;  /* nothing is read before this step */
    bool break_at_stall;   /* ... and then it breaks: what it held never runs */
    redisConnectCallback *on_conn;
    redisDisconnectCallback *on_disc;
    areq_t *in, *in_tail;
    areq_t *out, *out_tail;
} aconn_t;

static aconn_t *aconn_of(redisAsyncContext *ac)
{
    return (aconn_t *)(void *)ac;
}

static void areq_free(areq_t *q)
{
    if (q->c.argv)
        cmd_free(&q->c);
    if (q->reply)
        freeReplyObject(q->reply);
    free(q);
}

static redisAsyncContext *a_open(void *arg, const char *host, int port, void *data,
                                 redisConnectCallback *on_conn, redisDisconnectCallback *on_disc)
{
    (void)host, (void)port;
    sim_redis_t *r = arg;
    aconn_t *c = cm_xcalloc(1, sizeof(*c));
    c->ac.data = data;
    c->ac.errstr = c->ac.c.errstr;
    c->id = ++r->aconn_ids;
    c->epoch = r->epoch;
    c->state = AC_CONNECTING;
    c->on_conn = on_conn;
    c->on_disc = on_disc;
    aconn_t **pp = &r->aconns;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    return &c->ac;
}

static int a_send(void *arg, redisAsyncContext *ac, redisCallbackFn *cb, void *priv,
                  const char *cmd, size_t len)
{
    (void)arg;
    aconn_t *c = aconn_of(ac);
    if (c->closing)
        return REDIS_ERR;
    char *buf = mem_dup(cmd, len);
    char *argv[80];
    size_t argl[80];
    int argc = parse_resp(buf, len, argv, argl, 80);
    areq_t *q = cm_xcalloc(1, sizeof(*q));
    q->cb = cb;
    q->priv = priv;
    if (argc > 0)
        cmd_copy(&q->c, argc, argv, argl);
    else
        q->reply = rep_err("ERR Protocol error (simulated Redis)");
    free(buf);
    if (c->in_tail)
        c->in_tail->next = q;
    else
        c->in = q;
    c->in_tail = q;
    return REDIS_OK;
}

/* Hands over the replies in order, up to the first one held back. */
static void a_deliver(sim_redis_t *r, aconn_t *c)
{
    while (c->out && c->out->due <= r->step && !c->closing) {
        areq_t *q = c->out;
        c->out = q->next;
        if (!c->out)
            c->out_tail = NULL;
        if (q->cb)
            q->cb(&c->ac, q->reply, q->priv);
        areq_free(q); /* the reply is freed after the callback, as hiredis does */
    }
}

static void a_read(void *arg, redisAsyncContext *ac)
{
    a_deliver(arg, aconn_of(ac));
}

/* Unlinks c; every command it holds hears NULL; then the connect or disconnect
 * callback as hiredis calls it; then c is freed. */
static void a_teardown(sim_redis_t *r, aconn_t *c, int status)
{
    for (aconn_t **pp = &r->aconns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    c->closing = true;
    snprintf(c->ac.c.errstr, sizeof(c->ac.c.errstr), "%s",
             status == REDIS_OK ? "" : "Connection reset by peer (simulated)");
    if (c->state == AC_CONNECTING && status != REDIS_OK && c->on_conn)
        c->on_conn(&c->ac, REDIS_ERR);
    for (int pass = 0; pass < 2; pass++) {
        areq_t **list = pass == 0 ? &c->out : &c->in;
        while (*list) {
            areq_t *q = *list;
            *list = q->next;
            if (q->cb)
                q->cb(&c->ac, NULL, q->priv);
            areq_free(q);
        }
    }
    if (c->state == AC_UP && c->on_disc)
        c->on_disc(&c->ac, status);
    free(c);
}

/* The client closes (redisAsyncFree; a gateway's crash too): what the server
 * had read of it may still run, a prefix of what it sent. */
static void a_free(void *arg, redisAsyncContext *ac)
{
    sim_redis_t *r = arg;
    aconn_t *c = aconn_of(ac);
    for (areq_t *q = c->in; q && c->state == AC_UP && !r->faults.down && c->epoch == r->epoch &&
                            cm_rand_below(r->rng, 2);
         q = q->next) {
        if (q->c.argv) { /* it runs; its callback hears NULL all the same */
            freeReplyObject(run_logged(r, q->c.argc, q->c.argv, q->c.argl));
            cmd_free(&q->c);
            q->c.argv = NULL;
        }
    }
    a_teardown(r, c, REDIS_OK);
}

/* Reads and runs c's next command; false if c broke (then freed). */
static bool a_run_one(sim_redis_t *r, aconn_t *c)
{
    areq_t *q = c->in;
    bool ping = q->c.argv && is(q->c.argv[0], "PING");
    if (!ping && cm_rand_unit(r->rng) < r->faults.p_timeout) {
        r->stats.timeouts++;
        switch (cm_rand_below(r->rng, 3)) {
        case 0: /* it runs; its reply comes past the client's timeout */
            q->due = r->step + 10 + cm_rand_below(r->rng, 40);
            break;
        case 1: /* the server reads nothing of c for a while, then goes on */
            c->stall_until = r->step + 1 + cm_rand_below(r->rng, 40);
            return true;
        default: /* ... then the connection breaks: it never runs */
            c->stall_until = r->step + 1 + cm_rand_below(r->rng, 40);
            c->break_at_stall = true;
            return true;
        }
    }
    c->in = q->next;
    if (!c->in)
        c->in_tail = NULL;
    q->next = NULL;
    if (!q->reply) {
        r->stats.calls++;
        q->reply = run_logged(r, q->c.argc, q->c.argv, q->c.argl);
        cmd_free(&q->c);
        q->c.argv = NULL;
    }
    if (c->out_tail)
        c->out_tail->next = q;
    else
        c->out = q;
    c->out_tail = q;
    if (!ping && cm_rand_unit(r->rng) < r->faults.p_lost) {
        r->stats.lost++;
        a_teardown(r, c, REDIS_ERR);
        return false;
    }
    return true;
}

static aconn_t *a_find(sim_redis_t *r, uint64_t id)
{
    for (aconn_t *c = r->aconns; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

void sim_redis_async_step(sim_redis_t *r)
{
    uint64_t ids[64];
    size_t n = 0;
    for (aconn_t *c = r->aconns; c && n < 64; c = c->next)
        ids[n++] = c->id;
    for (size_t i = n; i > 1; i--) { /* connections in a random order */
        size_t j = cm_rand_below(r->rng, i);
        uint64_t t = ids[i - 1];
        ids[i - 1] = ids[j];
        ids[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        aconn_t *c = a_find(r, ids[i]); /* a callback may have closed it */
        if (!c)
            continue;
        if (c->state == AC_CONNECTING) {
            if (r->faults.down || c->epoch != r->epoch) {
                a_teardown(r, c, REDIS_ERR);
                continue;
            }
            c->state = AC_UP;
            if (c->on_conn)
                c->on_conn(&c->ac, REDIS_OK);
            continue;
        }
        if (r->faults.down || c->epoch != r->epoch) {
            a_teardown(r, c, REDIS_ERR);
            continue;
        }
        if (c->stall_until > r->step)
            continue;
        if (c->break_at_stall) {
            a_teardown(r, c, REDIS_ERR);
            continue;
        }
        uint32_t k = (uint32_t)cm_rand_below(r->rng, 4); /* commands it reads this step */
        bool alive = true;
        while (k-- && c->in && c->stall_until <= r->step && (alive = a_run_one(r, c)))
            ;
        if (alive && cm_rand_below(r->rng, 4) != 0)
            a_deliver(r, c);
    }
}

sim_redis_t *sim_redis_new(cm_rand_t *rng)
{
    sim_redis_t *r = cm_xcalloc(1, sizeof(*r));
    r->rng = rng;
    r->ks = sd_new();
    r->scripts = sd_new();
    r->texts = sd_new();
    lua_setup(r);
    r->tr = (inv_cluster_transport_t){.open = tr_open,
                                      .call = tr_call,
                                      .close = tr_close,
                                      .arg = r,
                                      .now_ms = tr_now_ms,
                                      .stepped = true};
    r->atr = (inv_cluster_async_t){.open = a_open, .send = a_send, .read = a_read,
                                   .free = a_free};
    return r;
}

void sim_redis_free(sim_redis_t *r)
{
    if (!r)
        return;
    while (r->aconns) /* none when every worker closed first */
        a_teardown(r, r->aconns, REDIS_OK);
    late_drop_all(r);
    for (size_t i = 0; i < r->nlog; i++)
        cmd_free(&r->log[i]);
    free(r->log);
    sd_free(r->ks, obj_free);
    sd_free(r->scripts, NULL);
    sd_free(r->texts, NULL);
    lua_close(r->L);
    free(r);
}

const inv_cluster_transport_t *sim_redis_transport(sim_redis_t *r, bool async)
{
    r->tr.async = async ? &r->atr : NULL;
    return &r->tr;
}

sim_redis_faults_t *sim_redis_faults(sim_redis_t *r)
{
    return &r->faults;
}

const sim_redis_stats_t *sim_redis_stats(const sim_redis_t *r)
{
    return &r->stats;
}

const char *sim_redis_hget(sim_redis_t *r, const char *key, const char *field)
{
    bool wrong;
    obj_t *o = lookup(r, key, strlen(key), T_HASH, &wrong);
    sd_ent_t *e = o ? sd_find(o->d, field, strlen(field)) : NULL;
    return e ? e->v : NULL;
}

const char *sim_redis_get(sim_redis_t *r, const char *key)
{
    bool wrong;
    obj_t *o = lookup(r, key, strlen(key), T_STR, &wrong);
    return o ? o->s : NULL;
}

void sim_redis_hforeach(sim_redis_t *r, const char *key,
                        void (*fn)(const char *field, const char *val, void *ctx), void *ctx)
{
    bool wrong;
    obj_t *o = lookup(r, key, strlen(key), T_HASH, &wrong);
    for (sd_ent_t *e = o ? o->d->ohead : NULL; e; e = e->onext)
        fn(e->k, e->v, ctx);
}
