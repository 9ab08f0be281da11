/*
 * The fairness store in a fleet's Redis (key schema: gw_fair_redis.h). Every
 * command goes through the fleet's connection (inventory/inv_fleet.h), routed
 * by its first key: a script's keys share the sale's hash tag, so a
 * redis-cluster:// address works as a redis:// one does.
 */
#include "gateway/buy/gw_fair_redis.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_plant.h"
#include "inventory/inv_fleet.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reading a reply: short names for inv_fleet_reply_*, as hiredis's fields read. */
#define rtype inv_fleet_reply_type
#define rnum inv_fleet_reply_integer
#define rstr inv_fleet_reply_str
#define rlen inv_fleet_reply_len
#define relems inv_fleet_reply_elements
#define el inv_fleet_reply_element

/*---- the lottery ----*/

#define K_CONF "{flashgate:fair}:conf"

/* A key of the sale: {flashgate:fair:<sale>}:<what>. */
typedef struct fkey {
    char s[160];
} fkey_t;

static fkey_t fkey(const char *sale, const char *what)
{
    fkey_t k;
    snprintf(k.s, sizeof(k.s), "{flashgate:fair:%s}:%s", sale, what);
    return k;
}

/* A script of the store: its text, and its SHA1 in hex (scripts_init, once per process).
 * Each goes as EVALSHA, with its text only after NOSCRIPT (inv_fleet_vscript): a room
 * join's text is 1.6 kB that every join sent otherwise (bench/README.md, "The fairness
 * store's scripts by SHA1"). */
typedef struct script {
    const char *text;
    char sha1[41];
} script_t;

static void scripts_init(void);

/* r, or NULL with the reason in errbuf on a transport error (r NULL) or an error reply. */
static inv_fleet_reply_t *checked(inv_fleet_conn_t *c, inv_fleet_reply_t *r, char *errbuf,
                                  size_t errlen)
{
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "%s", inv_fleet_errstr(c));
        return NULL;
    }
    if (rtype(r) == INV_FLEET_REPLY_ERROR) {
        cm_errbuf_set(errbuf, errlen, "%s", rstr(r));
        inv_fleet_reply_free(r);
        return NULL;
    }
    return r;
}

/* One command (sc NULL: fmt is the command) or script sc (fmt: numkeys, the keys and the
 * arguments) on key's node; NULL with the reason in errbuf on a transport error or an
 * error reply. */
static inv_fleet_reply_t *call(inv_fleet_conn_t *c, const char *key, const script_t *sc,
                               char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    inv_fleet_reply_t *r;
    if (sc) {
        scripts_init();
        r = inv_fleet_vscript(c, key, sc->sha1, sc->text, fmt, ap);
    } else {
        r = inv_fleet_vcmd(c, key, fmt, ap);
    }
    va_end(ap);
    return checked(c, r, errbuf, errlen);
}

/* call for argc strings (sc NULL: the command's words; else numkeys, the keys and the
 * arguments), routed by argv[1]. */
static inv_fleet_reply_t *call_argv(inv_fleet_conn_t *c, const script_t *sc, int argc,
                                    const char **argv, char *errbuf, size_t errlen)
{
    size_t *argl = cm_xmalloc((size_t)argc * sizeof(*argl));
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    if (sc)
        scripts_init();
    inv_fleet_reply_t *r =
        sc ? inv_fleet_script_argv(c, argv[1], sc->sha1, sc->text, argc, argv, argl)
           : inv_fleet_cmd_argv(c, argv[1], argc, argv, argl);
    free(argl);
    return checked(c, r, errbuf, errlen);
}

/* "unexpected reply" in errbuf: CM_EBACKEND. */
static int unexpected(char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen, "unexpected reply");
    return CM_EBACKEND;
}

/* A call's reply for its effect: frees r; 0, or CM_EBACKEND when r is NULL. */
static int ran(inv_fleet_reply_t *r)
{
    inv_fleet_reply_free(r);
    return r ? 0 : CM_EBACKEND;
}

/* A call's integer reply into *out (when not NULL), else CM_EBACKEND with the reason.
 * Frees r. */
static int num(inv_fleet_reply_t *r, long long *out, char *errbuf, size_t errlen)
{
    if (!r)
        return CM_EBACKEND;
    int rc = rtype(r) == INV_FLEET_REPLY_INTEGER ? 0 : unexpected(errbuf, errlen);
    if (rc == 0 && out)
        *out = rnum(r);
    inv_fleet_reply_free(r);
    return rc;
}

/* A call's integer reply 1 as 1, any other integer as 0, else CM_EBACKEND with the
 * reason. Frees r. */
static int yes(inv_fleet_reply_t *r, char *errbuf, size_t errlen)
{
    long long n = 0;
    int rc = num(r, &n, errbuf, errlen);
    return rc ? rc : n == 1;
}

/* A call's reply into out[0..cap) when a string (*found; a nil: not found), else left
 * as it is; 0, or CM_EBACKEND when r is NULL. Frees r. */
static int str(inv_fleet_reply_t *r, char *out, size_t cap, bool *found)
{
    if (!r)
        return CM_EBACKEND;
    *found = rtype(r) == INV_FLEET_REPLY_STRING;
    if (*found && cap)
        snprintf(out, cap, "%s", rstr(r));
    inv_fleet_reply_free(r);
    return 0;
}

/* HGETALL of key: fn for each field and value; 0 or CM_EBACKEND (errbuf). */
static int fpairs(inv_fleet_conn_t *c, const char *key, inv_fleet_pair_fn fn, void *ctx,
                  char *errbuf, size_t errlen)
{
    inv_fleet_reply_t *r = call(c, key, NULL, errbuf, errlen, "HGETALL %s", key);
    if (!r)
        return CM_EBACKEND;
    for (size_t i = 0; rtype(r) == INV_FLEET_REPLY_ARRAY && i + 1 < relems(r); i += 2)
        if (rstr(el(r, i)) && rstr(el(r, i + 1)))
            fn(ctx, rstr(el(r, i)), rstr(el(r, i + 1)));
    inv_fleet_reply_free(r);
    return 0;
}

/* ZRANGE of key, ranks start..stop: fn for each member; 0 or CM_EBACKEND (errbuf). */
static int fmembers(inv_fleet_conn_t *c, const char *key, long long start, long long stop,
                    void (*fn)(void *ctx, const char *member), void *ctx, char *errbuf,
                    size_t errlen)
{
    inv_fleet_reply_t *r =
        call(c, key, NULL, errbuf, errlen, "ZRANGE %s %lld %lld", key, start, stop);
    if (!r)
        return CM_EBACKEND;
    for (size_t i = 0; rtype(r) == INV_FLEET_REPLY_ARRAY && i < relems(r); i++)
        if (rstr(el(r, i)))
            fn(ctx, rstr(el(r, i)));
    inv_fleet_reply_free(r);
    return 0;
}

int gw_fair_redis_lottery_conf_all(inv_fleet_conn_t *c, inv_fleet_pair_fn fn, void *ctx,
                                   char *errbuf, size_t errlen)
{
    return fpairs(c, K_CONF, fn, ctx, errbuf, errlen);
}

int gw_fair_redis_lottery_conf_get(inv_fleet_conn_t *c, const char *sale, char *out, size_t cap,
                                   bool *found, char *errbuf, size_t errlen)
{
    return str(call(c, K_CONF, NULL, errbuf, errlen, "HGET %s %s", K_CONF, sale), out, cap, found);
}

int gw_fair_redis_lottery_conf_put(inv_fleet_conn_t *c, const char *sale, const char *value,
                                   char *errbuf, size_t errlen)
{
    return num(call(c, K_CONF, NULL, errbuf, errlen, "HSET %s %s %s", K_CONF, sale, value), NULL,
               errbuf, errlen);
}

/* KEYS conf; ARGV sale, "lot" or "reg", text. The lottery's part is the value's head, the
 * registration's token (" r=...") its tail: each writer replaces its own part and keeps the
 * other as Redis holds it, in one step, so two PUTs of one sale on two gateways (or a
 * lottery PUT whose gateway has not polled another's window yet) lose neither part. A
 * registration's part of a sale with no configuration, or a deleted one, is not written. */
static const char LUA_CONF_PART[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local head, tail = v or '', ''\n"
    "local i = v and string.find(v, ' r=', 1, true)\n"
    "if i then head, tail = string.sub(v, 1, i - 1), string.sub(v, i) end\n"
    "if ARGV[2] == 'lot' then head = ARGV[3]\n"
    "elseif not v or v == '-' then return 0\n"
    "else tail = ARGV[3] end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], head .. tail)\n"
    "return 1\n";
static script_t SC_CONF_PART = {.text = LUA_CONF_PART};

int gw_fair_redis_conf_part(inv_fleet_conn_t *c, const char *sale, bool reg, const char *text,
                            char *errbuf, size_t errlen)
{
    return num(call(c, K_CONF, &SC_CONF_PART, errbuf, errlen, "1 %s %s %s %s", K_CONF, sale,
                    reg ? "reg" : "lot", text),
               NULL, errbuf, errlen);
}

int gw_fair_redis_elig_put(inv_fleet_conn_t *c, const char *sale, const char *value, char *errbuf,
                           size_t errlen)
{
    char field[200];
    snprintf(field, sizeof(field), GW_FAIR_REDIS_ELIG_PREFIX "%s", sale);
    if (!value)
        return ran(call(c, K_CONF, NULL, errbuf, errlen, "HDEL %s %s", K_CONF, field));
    return num(call(c, K_CONF, NULL, errbuf, errlen, "HSET %s %s %s", K_CONF, field, value), NULL,
               errbuf, errlen);
}

int gw_fair_redis_lottery_clear(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    static const char *const names[] = {"e",    "drawn",   "pushed", "lock", "seed",  "won",
                                        "done", "entered", "reg",    "wr",   "wrpre", "wrpl",
                                        "wl",   "wlock",   "wp",     "ep",   "ei"};
    enum { N = sizeof(names) / sizeof(names[0]) };
    fkey_t keys[N];
    const char *argv[N + 1] = {"DEL"};
    for (size_t i = 0; i < N; i++) {
        keys[i] = fkey(sale, names[i]);
        argv[i + 1] = keys[i].s;
    }
    return num(call_argv(c, NULL, N + 1, argv, errbuf, errlen), NULL, errbuf, errlen);
}

int gw_fair_redis_lottery_push_add(inv_fleet_conn_t *c, const char *sale, const char *user,
                                   const char *value)
{
    fkey_t ke = fkey(sale, "e");
    /* the first command picks the pipeline's node: the sale's */
    return inv_fleet_pipe_append(c, ke.s, "HSETNX %s %s %s", ke.s, user, value) == 0 ? 0
                                                                                     : CM_EBACKEND;
}

int gw_fair_redis_lottery_push_finish(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                      bool all_added, char *errbuf, size_t errlen)
{
    fkey_t kp = fkey(sale, "pushed");
    bool ok = false;
    if (all_added) {
        int rc = inv_fleet_pipe_append(c, kp.s, "SADD %s %u", kp.s, node_id);
        if (rc == CM_EBACKEND) { /* no connection to the node */
            cm_errbuf_set(errbuf, errlen, "%s", inv_fleet_errstr(c));
            return CM_EBACKEND;
        }
        ok = rc == 0;
    }
    size_t errors = 0;
    if (inv_fleet_pipe_read(c, &errors) != 0) {
        cm_errbuf_set(errbuf, errlen, "%s", inv_fleet_errstr(c));
        return CM_EBACKEND;
    }
    return ok && errors == 0 ? 1 : 0;
}

/* KEYS pushed, entered. {gateways that pushed, gateways that hold entries and have not}. */
static const char LUA_PUSHED[] =
    "local m = 0 for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do "
    "if redis.call('SISMEMBER', KEYS[1], n) == 0 then m = m + 1 end end "
    "return {redis.call('SCARD', KEYS[1]), m}";
static script_t SC_PUSHED = {.text = LUA_PUSHED};

int gw_fair_redis_lottery_pushed_count(inv_fleet_conn_t *c, const char *sale, long long *n,
                                       long long *missing, char *errbuf, size_t errlen)
{
    fkey_t kp = fkey(sale, "pushed"), ke = fkey(sale, "entered");
    inv_fleet_reply_t *r = call(c, kp.s, &SC_PUSHED, errbuf, errlen, "2 %s %s", kp.s, ke.s);
    if (!r)
        return CM_EBACKEND;
    bool two = rtype(r) == INV_FLEET_REPLY_ARRAY && relems(r) == 2;
    *n = two ? rnum(el(r, 0)) : -1;
    *missing = two ? rnum(el(r, 1)) : -1;
    inv_fleet_reply_free(r);
    return 0;
}

/* Whether the sale's lottery key `name` exists. */
static int lottery_key_exists(inv_fleet_conn_t *c, const char *sale, const char *name, bool *out,
                              char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, name);
    int rc = yes(call(c, k.s, NULL, errbuf, errlen, "EXISTS %s", k.s), errbuf, errlen);
    *out = rc == 1;
    return rc < 0 ? rc : 0;
}

int gw_fair_redis_lottery_done(inv_fleet_conn_t *c, const char *sale, bool *done, char *errbuf,
                               size_t errlen)
{
    return lottery_key_exists(c, sale, "done", done, errbuf, errlen);
}

int gw_fair_redis_lottery_done_set(inv_fleet_conn_t *c, const char *sale, size_t n, char *errbuf,
                                   size_t errlen)
{
    fkey_t k = fkey(sale, "done");
    return ran(call(c, k.s, NULL, errbuf, errlen, "SET %s %llu", k.s, (unsigned long long)n));
}

int gw_fair_redis_lottery_entered_mark(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                       char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "entered");
    return ran(call(c, k.s, NULL, errbuf, errlen, "SADD %s %u", k.s, node_id));
}

int gw_fair_redis_lottery_entered(inv_fleet_conn_t *c, const char *sale, bool *busy, char *errbuf,
                                  size_t errlen)
{
    bool entered = false, drawn = false;
    if (lottery_key_exists(c, sale, "entered", &entered, errbuf, errlen) != 0 ||
        (entered && lottery_key_exists(c, sale, "done", &drawn, errbuf, errlen) != 0))
        return CM_EBACKEND;
    *busy = entered && !drawn;
    return 0;
}

/* Taken, or held by this node already: a drawer whose draw stopped on a
 * Redis error resumes at its next tick instead of waiting out its own
 * lock (nobody else may take it meanwhile either). */
static const char LUA_LOTTERY_LOCK[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end return 0";
static script_t SC_LOTTERY_LOCK = {.text = LUA_LOTTERY_LOCK};

int gw_fair_redis_lottery_lock(inv_fleet_conn_t *c, const char *sale, uint32_t node_id, int ttl_ms,
                               bool *mine, char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "lock");
    int rc = yes(call(c, k.s, &SC_LOTTERY_LOCK, errbuf, errlen, "1 %s %u %d", k.s, node_id, ttl_ms),
                 errbuf, errlen);
    *mine = rc == 1;
    return rc < 0 ? rc : 0;
}

int gw_fair_redis_lottery_lock_renew(inv_fleet_conn_t *c, const char *sale, int ttl_ms,
                                     char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "lock");
    return ran(call(c, k.s, NULL, errbuf, errlen, "PEXPIRE %s %d", k.s, ttl_ms));
}

int gw_fair_redis_lottery_freeze(inv_fleet_conn_t *c, const char *sale)
{
    fkey_t ke = fkey(sale, "e"), kd = fkey(sale, "drawn");
    return ran(inv_fleet_cmd(c, ke.s, "RENAMENX %s %s", ke.s, kd.s));
}

int gw_fair_redis_lottery_entrants(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                   void *ctx, char *errbuf, size_t errlen)
{
    return fpairs(c, fkey(sale, "drawn").s, fn, ctx, errbuf, errlen);
}

int gw_fair_redis_lottery_seed_offer(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                                     char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "seed");
    return ran(call(c, k.s, NULL, errbuf, errlen, "SET %s %s NX", k.s, seed_hex));
}

int gw_fair_redis_lottery_seed_get(inv_fleet_conn_t *c, const char *sale, uint64_t *seed,
                                   bool *seeded, char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "seed");
    char hex[64];
    int rc = str(call(c, k.s, NULL, errbuf, errlen, "GET %s", k.s), hex, sizeof(hex), seeded);
    if (rc == 0 && *seeded)
        *seed = strtoull(hex, NULL, 16);
    return rc;
}

int gw_fair_redis_lottery_winners(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                  void *ctx, char *errbuf, size_t errlen)
{
    return fpairs(c, fkey(sale, "won").s, fn, ctx, errbuf, errlen);
}

int gw_fair_redis_lottery_winner_put(inv_fleet_conn_t *c, const char *sale, const char *user,
                                     const char *order_id, char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "won");
    return ran(call(c, k.s, NULL, errbuf, errlen, "HSET %s %s %s", k.s, user, order_id));
}

/* KEYS ep, ei, entered; ARGV person, order id, value ("order node ..."), ... Each mark
 * not held yet is taken; the reply is the values of those held already, in order ({}:
 * every one taken). A mark's node joins :entered with it: an entry answered before the
 * lottery thread's own :entered mark (Redis away after it, across the close) still makes
 * the draw wait for that node's push (sim/seeds.txt, --fairfleet). */
static const char LUA_ENTRY_MARK[] =
    "local held = {}\n"
    "for i = 1, #ARGV - 2, 3 do\n"
    "  local v = redis.call('HGET', KEYS[1], ARGV[i])\n"
    "  if v then held[#held + 1] = v else\n"
    "    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])\n"
    "    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i])\n"
    "    local n = string.match(ARGV[i + 2], '^%S+ (%S+)')\n"
    "    if n then redis.call('SADD', KEYS[3], n) end end\n"
    "end\n"
    "return held\n";
static script_t SC_ENTRY_MARK = {.text = LUA_ENTRY_MARK};

/* KEYS ep, ei; ARGV person, order id. Deletes the mark only while it is that order's. */
static const char LUA_ENTRY_DROP[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[2]) return 1 end\n"
    "return 0\n";
static script_t SC_ENTRY_DROP = {.text = LUA_ENTRY_DROP};

/* KEYS ep, ei; ARGV order id. {person, value}, or {} when the id names no entry. */
static const char LUA_ENTRY_GET[] = "local p = redis.call('HGET', KEYS[2], ARGV[1])\n"
                                    "if not p then return {} end\n"
                                    "local v = redis.call('HGET', KEYS[1], p)\n"
                                    "if not v then return {} end\n"
                                    "return {p, v}\n";
static script_t SC_ENTRY_GET = {.text = LUA_ENTRY_GET};

int gw_fair_redis_lottery_entry_mark(inv_fleet_conn_t *c, const char *sale, const char *person,
                                     const char *order_id, const char *value, bool *taken,
                                     char *held, size_t cap, char *errbuf, size_t errlen)
{
    fkey_t kp = fkey(sale, "ep"), ki = fkey(sale, "ei"), ke = fkey(sale, "entered");
    inv_fleet_reply_t *r = call(c, kp.s, &SC_ENTRY_MARK, errbuf, errlen, "3 %s %s %s %s %s %s",
                                kp.s, ki.s, ke.s, person, order_id, value);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    if (rtype(r) != INV_FLEET_REPLY_ARRAY || relems(r) > 1 ||
        (relems(r) == 1 && rtype(el(r, 0)) != INV_FLEET_REPLY_STRING)) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply to the entry mark");
        rc = CM_EBACKEND;
    } else {
        *taken = relems(r) == 0 || CM_PLANT(FAIR_REDIS_MARK_HELD);
        snprintf(held, cap, "%s", *taken ? "" : rstr(el(r, 0)));
    }
    inv_fleet_reply_free(r);
    return rc;
}

int gw_fair_redis_lottery_entry_mark_many(inv_fleet_conn_t *c, const char *sale,
                                          const char *const *args, size_t n, char *errbuf,
                                          size_t errlen)
{
    fkey_t kp = fkey(sale, "ep"), ki = fkey(sale, "ei"), ke = fkey(sale, "entered");
    const char **argv = cm_xmalloc((4 + 3 * n) * sizeof(*argv));
    argv[0] = "3";
    argv[1] = kp.s;
    argv[2] = ki.s;
    argv[3] = ke.s;
    memcpy(argv + 4, args, 3 * n * sizeof(*args));
    inv_fleet_reply_t *r = call_argv(c, &SC_ENTRY_MARK, (int)(4 + 3 * n), argv, errbuf, errlen);
    free(argv);
    return ran(r);
}

int gw_fair_redis_lottery_entry_drop(inv_fleet_conn_t *c, const char *sale, const char *person,
                                     const char *order_id, char *errbuf, size_t errlen)
{
    fkey_t kp = fkey(sale, "ep"), ki = fkey(sale, "ei");
    return ran(call(c, kp.s, &SC_ENTRY_DROP, errbuf, errlen, "2 %s %s %s %s", kp.s, ki.s, person,
                    order_id));
}

int gw_fair_redis_lottery_entry_get(inv_fleet_conn_t *c, const char *sale, const char *order_id,
                                    bool *found, char *person, size_t pcap, char *value,
                                    size_t vcap, char *errbuf, size_t errlen)
{
    fkey_t kp = fkey(sale, "ep"), ki = fkey(sale, "ei");
    inv_fleet_reply_t *r =
        call(c, kp.s, &SC_ENTRY_GET, errbuf, errlen, "2 %s %s %s", kp.s, ki.s, order_id);
    if (!r)
        return CM_EBACKEND;
    *found = rtype(r) == INV_FLEET_REPLY_ARRAY && relems(r) == 2 &&
             rtype(el(r, 0)) == INV_FLEET_REPLY_STRING && rtype(el(r, 1)) == INV_FLEET_REPLY_STRING;
    if (*found) {
        snprintf(person, pcap, "%s", rstr(el(r, 0)));
        snprintf(value, vcap, "%s", rstr(el(r, 1)));
    }
    inv_fleet_reply_free(r);
    return 0;
}

/*---- the fleet's waitlist ----*/

/* The pending promotion's owner w (KEYS[2], :wp "person order owner at_ms"), nil if none;
 * now: Redis's clock in ms, one clock for every gateway's grace. */
#define LUA_WL_OWNER                                                                               \
    "local p = redis.call('GET', KEYS[2])\n"                                                       \
    "local w = p and string.match(p, '^%S+ %S+ (%S+)')\n"
#define LUA_NOW                                                                                    \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS wl, wp. {mode, ended, gen, head, promoted, pending owner}. */
static const char LUA_WL_STATE[] =
    "local v = redis.call('HMGET', KEYS[1], 'mode', 'ended', 'gen', 'head', "
    "'promoted')\n" LUA_WL_OWNER
    "return {v[1] or '', v[2] and 1 or 0, tonumber(v[3] or '0'), tonumber(v[4] or '0'),\n"
    "        tonumber(v[5] or '0'), w or ''}\n";
static script_t SC_WL_STATE = {.text = LUA_WL_STATE};

/* KEYS wlock, wp; ARGV owner, ttl_ms. The pending promotion's owner takes the lock over. */
static const char LUA_WL_LOCK[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n" LUA_WL_OWNER
    "if cur == false or w == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end\n"
    "return 0\n";
static script_t SC_WL_LOCK = {.text = LUA_WL_LOCK};

/* KEYS wlock, wp, won, wl; ARGV owner, person, order. */
static const char LUA_WL_BEGIN[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "if redis.call('HEXISTS', KEYS[4], 'ended') == 1 then return 0 end\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
    "if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end\n" LUA_NOW
    "redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[1] .. ' ' .. now)\n"
    "return 1\n";
static script_t SC_WL_BEGIN = {.text = LUA_WL_BEGIN};

/* KEYS wlock, wp; ARGV owner, grace_ms. */
static const char LUA_WL_ADOPT[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "local p = redis.call('GET', KEYS[2])\n"
    "if not p then return 0 end\n"
    "local u, o, w, at = string.match(p, '^(%S+) (%S+) (%S+) (%d+)$')\n"
    "if not u then return 0 end\n"
    "if w == ARGV[1] then return 1 end\n" LUA_NOW
    "if now - tonumber(at) < tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('SET', KEYS[2], u .. ' ' .. o .. ' ' .. ARGV[1] .. ' ' .. at)\n"
    "return 1\n";
static script_t SC_WL_ADOPT = {.text = LUA_WL_ADOPT};

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
static script_t SC_WL_FINISH = {.text = LUA_WL_FINISH};

/* KEYS wl, wp. 0 while a promotion begun before the end is pending. */
static const char LUA_WL_END[] = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
                                 "if redis.call('HSETNX', KEYS[1], 'ended', '1') == 1 then\n"
                                 "  redis.call('HINCRBY', KEYS[1], 'gen', 1) end\n"
                                 "return 1\n";
static script_t SC_WL_END = {.text = LUA_WL_END};

/* The waitlist's keys of a sale. */
typedef struct wl_keys {
    fkey_t wl, wlock, wp, won;
} wl_keys_t;

static wl_keys_t wl_keys(const char *sale)
{
    return (wl_keys_t){fkey(sale, "wl"), fkey(sale, "wlock"), fkey(sale, "wp"), fkey(sale, "won")};
}

int gw_fair_redis_wl_state(inv_fleet_conn_t *c, const char *sale, gw_fair_redis_wl_state_t *st,
                           char *errbuf, size_t errlen)
{
    fkey_t kl = fkey(sale, "wl"), kp = fkey(sale, "wp");
    memset(st, 0, sizeof(*st));
    inv_fleet_reply_t *r = call(c, kl.s, &SC_WL_STATE, errbuf, errlen, "2 %s %s", kl.s, kp.s);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    if (rtype(r) != INV_FLEET_REPLY_ARRAY || relems(r) != 6 ||
        rtype(el(r, 0)) != INV_FLEET_REPLY_STRING || rtype(el(r, 5)) != INV_FLEET_REPLY_STRING) {
        rc = unexpected(errbuf, errlen);
    } else {
        st->mode = rlen(el(r, 0)) == 1 ? rstr(el(r, 0))[0] : 0;
        st->ended = rnum(el(r, 1)) != 0;
        st->gen = rnum(el(r, 2));
        st->head = rnum(el(r, 3));
        st->promoted = rnum(el(r, 4));
        snprintf(st->owner, sizeof(st->owner), "%s", rstr(el(r, 5)));
    }
    inv_fleet_reply_free(r);
    return rc;
}

int gw_fair_redis_wl_mode_set(inv_fleet_conn_t *c, const char *sale, char mode, char *errbuf,
                              size_t errlen)
{
    fkey_t k = fkey(sale, "wl");
    char m[2] = {mode, '\0'};
    return num(call(c, k.s, NULL, errbuf, errlen, "HSETNX %s mode %s", k.s, m), NULL, errbuf,
               errlen);
}

int gw_fair_redis_wl_lock(inv_fleet_conn_t *c, const char *sale, const char *owner, int ttl_ms,
                          bool *mine, char *errbuf, size_t errlen)
{
    fkey_t kl = fkey(sale, "wlock"), kp = fkey(sale, "wp");
    int rc =
        yes(call(c, kl.s, &SC_WL_LOCK, errbuf, errlen, "2 %s %s %s %d", kl.s, kp.s, owner, ttl_ms),
            errbuf, errlen);
    *mine = rc == 1;
    return rc < 0 ? rc : 0;
}

int gw_fair_redis_wl_pending(inv_fleet_conn_t *c, const char *sale, bool *found, char *person,
                             size_t person_cap, char *order, size_t order_cap, char *errbuf,
                             size_t errlen)
{
    fkey_t k = fkey(sale, "wp");
    char v[512], p[128], o[64], w[64];
    int rc = str(call(c, k.s, NULL, errbuf, errlen, "GET %s", k.s), v, sizeof(v), found);
    /* "person order owner at_ms": the owner is read (a :wp without one is not a promotion) */
    *found = rc == 0 && *found && sscanf(v, "%127s %63s %63s", p, o, w) == 3;
    if (*found) {
        snprintf(person, person_cap, "%s", p);
        snprintf(order, order_cap, "%s", o);
    }
    return rc;
}

int gw_fair_redis_wl_begin(inv_fleet_conn_t *c, const char *sale, const char *owner,
                           const char *person, const char *order, char *errbuf, size_t errlen)
{
    wl_keys_t k = wl_keys(sale);
    return yes(call(c, k.wlock.s, &SC_WL_BEGIN, errbuf, errlen, "4 %s %s %s %s %s %s %s", k.wlock.s,
                    k.wp.s, k.won.s, k.wl.s, owner, person, order),
               errbuf, errlen);
}

int gw_fair_redis_wl_adopt(inv_fleet_conn_t *c, const char *sale, const char *owner, int grace_ms,
                           char *errbuf, size_t errlen)
{
    fkey_t kl = fkey(sale, "wlock"), kp = fkey(sale, "wp");
    return yes(
        call(c, kl.s, &SC_WL_ADOPT, errbuf, errlen, "2 %s %s %s %d", kl.s, kp.s, owner, grace_ms),
        errbuf, errlen);
}

int gw_fair_redis_wl_finish(inv_fleet_conn_t *c, const char *sale, const char *owner,
                            const char *person, const char *result, long long head, long long *gen,
                            char *errbuf, size_t errlen)
{
    wl_keys_t k = wl_keys(sale);
    long long n = 0;
    /* %b: the result may be empty, which a plain %s would drop as an argument */
    int rc = num(call(c, k.wlock.s, &SC_WL_FINISH, errbuf, errlen, "4 %s %s %s %s %s %s %b %lld %s",
                      k.wlock.s, k.wp.s, k.won.s, k.wl.s, owner, person, result, strlen(result),
                      head, GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED),
                 &n, errbuf, errlen);
    if (rc || n < 0)
        return rc;
    *gen = n;
    return 1;
}

int gw_fair_redis_wl_end(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    wl_keys_t k = wl_keys(sale);
    return yes(call(c, k.wl.s, &SC_WL_END, errbuf, errlen, "2 %s %s", k.wl.s, k.wp.s), errbuf,
               errlen);
}

/*---- registration (gateway/buy/gw_reg.c) ----*/

/* KEYS reg; ARGV person, cap. 0 registered already, -1 full, 1 added. */
static const char LUA_REG_ADD[] = "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end "
                                  "local n = redis.call('ZCARD', KEYS[1]) "
                                  "if n >= tonumber(ARGV[2]) then return -1 end "
                                  "redis.call('ZADD', KEYS[1], n + 1, ARGV[1]) return 1";
static script_t SC_REG_ADD = {.text = LUA_REG_ADD};

int gw_fair_redis_reg_add(inv_fleet_conn_t *c, const char *sale, const char *person, long long cap,
                          int *added, char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "reg");
    /* The score is the registration's rank (ZCARD + 1: nothing is ever
     * removed but the whole key), so ZRANGE by rank pages exactly. */
    long long n = 0;
    int rc = num(call(c, k.s, &SC_REG_ADD, errbuf, errlen, "1 %s %s %lld", k.s, person, cap), &n,
                 errbuf, errlen);
    if (rc == 0)
        *added = (int)n;
    return rc;
}

int gw_fair_redis_reg_has(inv_fleet_conn_t *c, const char *sale, const char *person, bool *has,
                          char *errbuf, size_t errlen)
{
    fkey_t k = fkey(sale, "reg");
    return str(call(c, k.s, NULL, errbuf, errlen, "ZSCORE %s %s", k.s, person), NULL, 0, has);
}

int gw_fair_redis_reg_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                            size_t errlen)
{
    fkey_t k = fkey(sale, "reg");
    return num(call(c, k.s, NULL, errbuf, errlen, "ZCARD %s", k.s), n, errbuf, errlen);
}

int gw_fair_redis_reg_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                            void (*fn)(void *ctx, const char *person), void *ctx, char *errbuf,
                            size_t errlen)
{
    return fmembers(c, fkey(sale, "reg").s, start, stop, fn, ctx, errbuf, errlen);
}

/*---- the waiting room (gateway/buy/gw_room_fleet.c) ----*/

/* The seal, shared by the tick and the join: the pre-queue's size becomes npre
 * and the later arrivals' places start after it. */
#define LUA_ROOM_SEAL                                                                              \
    "local function seal(now)\n"                                                                   \
    "  local n = redis.call('ZCARD', KEYS[2])\n"                                                   \
    "  redis.call('HSET', KEYS[1], 'sealed', now, 'npre', n)\n"                                    \
    "  redis.call('HINCRBY', KEYS[1], 'next', n)\n"                                                \
    "end\n"                                                                                        \
    "local want, offer = ARGV[1], true\n"                                                          \
    "if string.sub(want, 1, 1) == '-' then want = string.sub(want, 2) offer = false end\n"         \
    "local s = redis.call('HGET', KEYS[1], 'seed')\n"                                              \
    "if not s and not offer then return {-3} end\n"                                                \
    "if not s then redis.call('HSET', KEYS[1], 'seed', want) s = want end\n"

/*
 * Tick: KEYS wr, wrpre; ARGV seed ("-seed": not to offer), started, now_ms, add_milli, ahead.
 * {seed, sealed ms or 0, npre, next, front}; {-3}: no seed and none offered.
 */
static const char LUA_ROOM_TICK[] =
    LUA_ROOM_SEAL "local sealed = redis.call('HGET', KEYS[1], 'sealed')\n"
                  "if not sealed and ARGV[2] == '1' then seal(ARGV[3]) sealed = ARGV[3] end\n"
                  "local nx = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')\n"
                  "local front = tonumber(redis.call('HGET', KEYS[1], 'front') or '0')\n"
                  "local add, cap = tonumber(ARGV[4]), (nx + tonumber(ARGV[5])) * 1000\n"
                  "if sealed and add > 0 and front < cap then\n"
                  "  front = math.min(front + add, cap)\n"
                  "  redis.call('HSET', KEYS[1], 'front', string.format('%d', front))\n"
                  "end\n"
                  "local npre = sealed and tonumber(redis.call('HGET', KEYS[1], 'npre') or '0')\n"
                  "  or redis.call('ZCARD', KEYS[2])\n"
                  "return {s, sealed or '0', npre, nx, string.format('%d', front)}\n";
static script_t SC_ROOM_TICK = {.text = LUA_ROOM_TICK};

/*
 * Join: KEYS wr, wrpre, wrpl; ARGV seed ("-seed": not to offer), member, person,
 * before_start, take, now_ms, ttl_s, cap. {-3}: no seed and none offered;
 * {-2, seed}: another seed; {-1}: the pre-queue is full; {0}: pre-queue;
 * {1, pos, exp_s}.
 */
static const char LUA_ROOM_JOIN[] = LUA_ROOM_SEAL
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
    "  local p, e = string.match(v, '^(%d+) (%d+)')\n"
    "  pos, exp = tonumber(p), tonumber(e)\n"
    "else\n"
    "  pos = (redis.call('ZRANK', KEYS[2], ARGV[2]) or -1) + 1\n"
    "end\n"
    "if pos == 0 or (exp > 0 and exp < now) then\n"
    "  if not take then return {1, pos, 0} end\n"
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
static script_t SC_ROOM_JOIN = {.text = LUA_ROOM_JOIN};

/* Claim (ARGV[5] '0') or give-back ('1'), gw_fair_redis_room_claim: KEYS jti, the claim's
 * void mark; ARGV "fp:nonce", ttl_ms, fp, nonce. A claim answers 3 when it was given back
 * before it ran. At most 64 holders: a key's retries in flight at once beyond that read
 * the token spent. A value of the bare fingerprint (no ':') gets its first nonce after a
 * ':'. */
static const char LUA_ROOM_CLAIM[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local mine = v and string.match(v, '^[^:]*') == ARGV[3]\n"
    "local function keep(nv)\n"
    "  local t = redis.call('PTTL', KEYS[1])\n"
    "  redis.call('SET', KEYS[1], nv, 'PX', t > 0 and t or ARGV[2])\n"
    "end\n"
    "if ARGV[5] == '0' then\n"
    "  if redis.call('EXISTS', KEYS[2]) == 1 then return 3 end\n"
    "  if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 0 end\n"
    "  local _, n = string.gsub(v, ',', ',')\n"
    "  if ARGV[3] == '0' or not mine or n >= 63 then return 1 end\n"
    "  keep(v .. (string.find(v, ':', 1, true) and ',' or ':') .. ARGV[4])\n"
    "  return 2\n"
    "end\n"
    "if mine then\n"
    "  local left, found = {}, false\n"
    "  for x in string.gmatch(string.sub(v, #ARGV[3] + 2), '[^,]+') do\n"
    "    if x == ARGV[4] and not found then found = true else left[#left + 1] = x end\n"
    "  end\n"
    "  if found then\n"
    "    if #left == 0 then redis.call('DEL', KEYS[1])\n"
    "    else keep(ARGV[3] .. ':' .. table.concat(left, ',')) end\n"
    "    return 1\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])\n"
    "return 0\n";
static script_t SC_ROOM_CLAIM = {.text = LUA_ROOM_CLAIM};

static uint64_t reply_u64(const inv_fleet_reply_t *e)
{
    if (rtype(e) == INV_FLEET_REPLY_INTEGER)
        return rnum(e) > 0 ? (uint64_t)rnum(e) : 0;
    if (rtype(e) == INV_FLEET_REPLY_STRING)
        return strtoull(rstr(e), NULL, 10);
    return 0;
}

/* The answer to a script that found the room without a seed and was offered none. */
static int no_seed(char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen, "the room has no seed (deleted?) and none was offered");
    return CM_ENOTFOUND;
}

int gw_fair_redis_room_tick(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                            bool started, int64_t now_ms, uint64_t add_milli, uint64_t ahead,
                            gw_fair_redis_room_state_t *st, char *errbuf, size_t errlen)
{
    fkey_t wr = fkey(sale, "wr"), pre = fkey(sale, "wrpre");
    inv_fleet_reply_t *r =
        call(c, wr.s, &SC_ROOM_TICK, errbuf, errlen, "2 %s %s %s %d %lld %llu %llu", wr.s, pre.s,
             seed_hex, started ? 1 : 0, (long long)now_ms, (unsigned long long)add_milli,
             (unsigned long long)ahead);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    if (rtype(r) == INV_FLEET_REPLY_ARRAY && relems(r) == 1)
        rc = no_seed(errbuf, errlen);
    else if (rtype(r) != INV_FLEET_REPLY_ARRAY || relems(r) != 5 ||
             rtype(el(r, 0)) != INV_FLEET_REPLY_STRING)
        rc = unexpected(errbuf, errlen);
    else {
        memset(st, 0, sizeof(*st));
        snprintf(st->seed, sizeof(st->seed), "%s", rstr(el(r, 0)));
        st->sealed_ms = (int64_t)reply_u64(el(r, 1));
        st->npre = reply_u64(el(r, 2));
        st->next = reply_u64(el(r, 3));
        st->front_milli = reply_u64(el(r, 4));
    }
    inv_fleet_reply_free(r);
    return rc;
}

int gw_fair_redis_room_join(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                            const char *member, const char *person, bool before_start, bool take,
                            int64_t now_ms, int ttl_s, uint64_t cap, gw_wr_join_t *out,
                            char seed[GW_FAIR_REDIS_ROOM_SEED_HEX + 1], char *errbuf, size_t errlen)
{
    fkey_t wr = fkey(sale, "wr"), pre = fkey(sale, "wrpre"), pl = fkey(sale, "wrpl");
    memset(out, 0, sizeof(*out));
    seed[0] = '\0';
    inv_fleet_reply_t *r =
        call(c, wr.s, &SC_ROOM_JOIN, errbuf, errlen, "3 %s %s %s %s %s %s %d %d %lld %d %llu", wr.s,
             pre.s, pl.s, seed_hex, member, person, before_start ? 1 : 0, take ? 1 : 0,
             (long long)now_ms, ttl_s, (unsigned long long)cap);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    long long kind = rtype(r) == INV_FLEET_REPLY_ARRAY && relems(r) >= 1 &&
                             rtype(el(r, 0)) == INV_FLEET_REPLY_INTEGER
                         ? rnum(el(r, 0))
                         : -9;
    if (kind == -2 && relems(r) == 2 && rtype(el(r, 1)) == INV_FLEET_REPLY_STRING) {
        snprintf(seed, GW_FAIR_REDIS_ROOM_SEED_HEX + 1, "%s", rstr(el(r, 1)));
        rc = CM_ECONFLICT;
    } else if (kind == -3) {
        rc = no_seed(errbuf, errlen);
    } else if (kind == -1 || kind == 0) {
        out->prequeue = true;
        rc = kind == -1 ? CM_EBUSY : 0;
    } else if (kind == 1 && relems(r) == 3) {
        out->pos = reply_u64(el(r, 1));
        out->exp_s = (int64_t)reply_u64(el(r, 2));
    } else {
        rc = unexpected(errbuf, errlen);
    }
    inv_fleet_reply_free(r);
    return rc;
}

/* The claim's key, its void mark's key, its value "fp:nonce", fp and the nonce alone. */
typedef struct claim_keys {
    char k[200], vk[240], val[48], fps[24], ns[24];
} claim_keys_t;

static void claim_keys(claim_keys_t *ck, const char *sale, uint64_t jti, uint64_t fp,
                       uint64_t nonce)
{
    snprintf(ck->k, sizeof(ck->k), "{flashgate:fair:%s}:wrjti:%016llx", sale,
             (unsigned long long)jti);
    snprintf(ck->vk, sizeof(ck->vk), "%s:void:%016llx", ck->k, (unsigned long long)nonce);
    snprintf(ck->fps, sizeof(ck->fps), "%llu", (unsigned long long)fp);
    snprintf(ck->ns, sizeof(ck->ns), "%016llx", (unsigned long long)nonce);
    snprintf(ck->val, sizeof(ck->val), "%s:%s", ck->fps, ck->ns);
}

int gw_fair_redis_room_claim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                             uint64_t nonce, int64_t ttl_ms, bool give_back, char *errbuf,
                             size_t errlen)
{
    claim_keys_t ck;
    claim_keys(&ck, sale, jti, fp, nonce);
    long long n = -1;
    int rc =
        num(call(c, ck.k, &SC_ROOM_CLAIM, errbuf, errlen, "2 %s %s %s %lld %s %s %d", ck.k, ck.vk,
                 ck.val, (long long)(ttl_ms > 0 ? ttl_ms : 1), ck.fps, ck.ns, give_back),
            &n, errbuf, errlen);
    if (rc == 0 && n == 3 && !give_back) {
        cm_errbuf_set(errbuf, errlen, "the claim was given back before it ran");
        rc = CM_EBACKEND;
    } else if (rc == 0 && (n < 0 || n > (give_back ? 1 : 2))) {
        rc = unexpected(errbuf, errlen);
    }
    return rc ? rc : (int)n;
}

int gw_fair_redis_room_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                             void (*fn)(void *ctx, const char *member), void *ctx, char *errbuf,
                             size_t errlen)
{
    return fmembers(c, fkey(sale, "wrpre").s, start, stop, fn, ctx, errbuf, errlen);
}

/*---- the scripts' SHA1s ----*/

static script_t *const scripts[] = {
    &SC_CONF_PART, &SC_LOTTERY_LOCK, &SC_ENTRY_MARK, &SC_ENTRY_DROP, &SC_ENTRY_GET, &SC_WL_STATE,
    &SC_WL_LOCK,   &SC_WL_BEGIN,     &SC_WL_ADOPT,   &SC_WL_FINISH,  &SC_WL_END,    &SC_REG_ADD,
    &SC_ROOM_TICK, &SC_ROOM_JOIN,    &SC_ROOM_CLAIM, &SC_PUSHED,
};

static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_hash(void)
{
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        inv_fleet_script_sha1(scripts[i]->text, scripts[i]->sha1);
}

/* Thread-safe: the first call hashes every script, the others wait for it. */
static void scripts_init(void)
{
    pthread_once(&scripts_once, scripts_hash);
}
