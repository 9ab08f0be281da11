/*
 * The fairness store in a fleet's Redis (key schema: docs/fleet.md). Every
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

#define K_CONF "{flashgate:fair}:conf"

/*---- the one call path of every command and script ----*/

/* A script of the store: its text, and its SHA1 in hex (scripts_init, once per process).
 * Each goes as EVALSHA, with its text only after NOSCRIPT (inv_fleet_script_argv): a room
 * join's text is 1.6 kB that every join sent otherwise (bench/README.md, "The fairness
 * store's scripts by SHA1"). */
typedef struct script {
    const char *text;
    char sha1[41];
} script_t;

static void scripts_init(void);

/* A call's words at most (a %v's aside), and their text's bytes. */
#define CALL_WORDS 24
#define CALL_TEXT 4096

/* "unexpected reply" in errbuf: CM_EBACKEND. */
static int unexpected(char *errbuf, size_t errlen)
{
    cm_errbuf_set(errbuf, errlen, "unexpected reply");
    return CM_EBACKEND;
}

/* Whether r has shape: "" any, "i" an integer, "*" then one letter per element of an
 * array of exactly as many (s a string, i an integer, . any). */
static bool shaped(const inv_fleet_reply_t *r, const char *shape)
{
    if (shape[0] != '*')
        return shape[0] != 'i' || rtype(r) == INV_FLEET_REPLY_INTEGER;
    if (rtype(r) != INV_FLEET_REPLY_ARRAY || relems(r) != strlen(shape + 1))
        return false;
    for (size_t i = 0; i < relems(r); i++)
        if ((shape[i + 1] == 's' && rtype(el(r, i)) != INV_FLEET_REPLY_STRING) ||
            (shape[i + 1] == 'i' && rtype(el(r, i)) != INV_FLEET_REPLY_INTEGER))
            return false;
    return true;
}

/* One word of fmt (p, len) that is not a string given (%s, %v) into out[0..room): its
 * length, or -1 when it does not fit. */
static int word(char *out, size_t room, const char *p, size_t len, const char *sale, va_list *ap)
{
    int k;
#define IS(s) (len == sizeof(s) - 1 && memcmp(p, s, len) == 0)
    if (IS("%d"))
        k = snprintf(out, room, "%d", va_arg(*ap, int));
    else if (IS("%u"))
        k = snprintf(out, room, "%u", va_arg(*ap, unsigned));
    else if (IS("%lld"))
        k = snprintf(out, room, "%lld", va_arg(*ap, long long));
    else if (IS("%llu"))
        k = snprintf(out, room, "%llu", va_arg(*ap, unsigned long long));
    else if (IS("%k"))
        k = snprintf(out, room, "{flashgate:fair:%s}:%s", sale, va_arg(*ap, const char *));
    else if (*p == ':')
        k = snprintf(out, room, "{flashgate:fair:%s}%.*s", sale, (int)len, p);
    else if (*p == '%') /* a conversion this does not know: refused, never sent as text */
        k = -1;
    else
        k = snprintf(out, room, "%.*s", (int)len, p);
#undef IS
    return k >= 0 && (size_t)k < room ? k : -1;
}

/*
 * A command (sc NULL) or the script sc on the sale's node, and its reply of the given
 * shape (shaped). fmt's words, split at single spaces: ":name" the sale's key
 * {flashgate:fair:<sale>}:name, "%k" the same of a name given, "%s" a string (an empty
 * one too), "%d", "%u", "%lld", "%llu" a number, "%v" n strings (a size_t, then a
 * const char *const *; last); any other word is itself. A script's KEYS are its leading
 * key words (:name, %k, {...}). Routed by the word after the command (a script's first
 * key). The reply, or NULL with the reason in errbuf: a transport error (c broken), an
 * error reply or an unexpected one.
 */
static inv_fleet_reply_t *call(inv_fleet_conn_t *c, const script_t *sc, const char *sale,
                               const char *shape, char *errbuf, size_t errlen, const char *fmt, ...)
{
    char text[CALL_TEXT];
    const char *w[CALL_WORDS], *const *more = NULL, *p = fmt;
    size_t n = sc ? 1 : 0, nmore = 0, used = 0, nkeys = 0, al[CALL_WORDS];
    int k = 0;
    va_list ap;
    va_start(ap, fmt);
    for (size_t len; *p && n < CALL_WORDS && k >= 0; p += len + (p[len] == ' ')) {
        len = strcspn(p, " ");
        if (sc && n == 1 + nkeys &&
            (*p == ':' || *p == '{' || (len == 2 && memcmp(p, "%k", 2) == 0)))
            nkeys++;
        if (len == 2 && memcmp(p, "%s", 2) == 0) {
            w[n++] = va_arg(ap, const char *);
        } else if (len == 2 && memcmp(p, "%v", 2) == 0) {
            nmore = va_arg(ap, size_t);
            more = va_arg(ap, const char *const *);
        } else if ((k = word(text + used, sizeof(text) - used, p, len, sale, &ap)) >= 0) {
            w[n++] = text + used;
            used += (size_t)k + 1;
        }
    }
    va_end(ap);
    if (sc && k >= 0 && (k = snprintf(text + used, sizeof(text) - used, "%zu", nkeys)) >= 0 &&
        (size_t)k >= sizeof(text) - used)
        k = -1;
    if (*p || k < 0 || n < 2) {
        cm_errbuf_set(errbuf, errlen, "command too long");
        return NULL;
    }
    if (sc)
        w[0] = text + used;
    size_t argc = n + nmore;
    const char **argv = nmore ? cm_xmalloc(argc * sizeof(*argv)) : w;
    size_t *argl = nmore ? cm_xmalloc(argc * sizeof(*argl)) : al;
    if (nmore) {
        memcpy(argv, w, n * sizeof(*w));
        memcpy(argv + n, more, nmore * sizeof(*more));
    }
    for (size_t i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    if (sc)
        scripts_init();
    inv_fleet_reply_t *r =
        sc ? inv_fleet_script_argv(c, argv[1], sc->sha1, sc->text, (int)argc, argv, argl)
           : inv_fleet_cmd_argv(c, argv[1], (int)argc, argv, argl);
    if (nmore) {
        free(argv);
        free(argl);
    }
    if (!r)
        cm_errbuf_set(errbuf, errlen, "%s", inv_fleet_errstr(c));
    else if (rtype(r) == INV_FLEET_REPLY_ERROR)
        cm_errbuf_set(errbuf, errlen, "%s", rstr(r));
    else if (!shaped(r, shape))
        unexpected(errbuf, errlen);
    else
        return r;
    inv_fleet_reply_free(r);
    return NULL;
}

/* A call's reply for its effect: frees r; 0, or CM_EBACKEND when r is NULL. */
static int ran(inv_fleet_reply_t *r)
{
    inv_fleet_reply_free(r);
    return r ? 0 : CM_EBACKEND;
}

/* A call's integer reply into *out; 0, or CM_EBACKEND when r is NULL. Frees r. */
static int num(inv_fleet_reply_t *r, long long *out)
{
    if (r)
        *out = rnum(r);
    return ran(r);
}

/* A call's integer reply 1 as 1, any other as 0, or CM_EBACKEND when r is NULL. */
static int yes(inv_fleet_reply_t *r)
{
    long long n = 0;
    return num(r, &n) ? CM_EBACKEND : n == 1;
}

/* yes into *out: 0 or CM_EBACKEND. */
static int flag(inv_fleet_reply_t *r, bool *out)
{
    int rc = yes(r);
    *out = rc == 1;
    return rc < 0 ? rc : 0;
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
    return ran(r);
}

/* A call's HGETALL reply: fn for each field and value; 0 or CM_EBACKEND. Frees r. */
static int pairs(inv_fleet_reply_t *r, inv_fleet_pair_fn fn, void *ctx)
{
    for (size_t i = 0; r && i + 1 < relems(r); i += 2)
        if (rstr(el(r, i)) && rstr(el(r, i + 1)))
            fn(ctx, rstr(el(r, i)), rstr(el(r, i + 1)));
    return ran(r);
}

/*---- the lottery ----*/

int gw_fair_redis_lottery_conf_all(inv_fleet_conn_t *c, inv_fleet_pair_fn fn, void *ctx,
                                   char *errbuf, size_t errlen)
{
    return pairs(call(c, NULL, NULL, "", errbuf, errlen, "HGETALL " K_CONF), fn, ctx);
}

int gw_fair_redis_lottery_conf_get(inv_fleet_conn_t *c, const char *sale, char *out, size_t cap,
                                   bool *found, char *errbuf, size_t errlen)
{
    return str(call(c, NULL, sale, "", errbuf, errlen, "HGET " K_CONF " %s", sale), out, cap,
               found);
}

int gw_fair_redis_lottery_conf_put(inv_fleet_conn_t *c, const char *sale, const char *value,
                                   char *errbuf, size_t errlen)
{
    return ran(call(c, NULL, sale, "i", errbuf, errlen, "HSET " K_CONF " %s %s", sale, value));
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
    return ran(call(c, &SC_CONF_PART, sale, "i", errbuf, errlen, K_CONF " %s %s %s", sale,
                    reg ? "reg" : "lot", text));
}

int gw_fair_redis_elig_put(inv_fleet_conn_t *c, const char *sale, const char *value, char *errbuf,
                           size_t errlen)
{
    char field[200];
    snprintf(field, sizeof(field), GW_FAIR_REDIS_ELIG_PREFIX "%s", sale);
    if (!value)
        return ran(call(c, NULL, sale, "", errbuf, errlen, "HDEL " K_CONF " %s", field));
    return ran(call(c, NULL, sale, "i", errbuf, errlen, "HSET " K_CONF " %s %s", field, value));
}

int gw_fair_redis_lottery_clear(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    return ran(call(c, NULL, sale, "i", errbuf, errlen,
                    "DEL :e :drawn :pushed :lock :seed :won :done :entered :reg :wr :wrpre :wrpl "
                    ":wl :wlock :wp :ep :ei :gen"));
}

int gw_fair_redis_lottery_gen_offer(inv_fleet_conn_t *c, const char *sale, uint64_t gen,
                                    bool *taken, char *errbuf, size_t errlen)
{
    char hex[24];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)gen);
    inv_fleet_reply_t *r = call(c, NULL, sale, "", errbuf, errlen, "SET :gen %s NX", hex);
    if (r)
        *taken = rtype(r) == INV_FLEET_REPLY_STATUS; /* OK; nil: an offer stands */
    return ran(r);
}

int gw_fair_redis_lottery_gen_offered(inv_fleet_conn_t *c, const char *sale, uint64_t *gen,
                                      char *errbuf, size_t errlen)
{
    char hex[24] = "";
    bool found = false;
    int rc = str(call(c, NULL, sale, "", errbuf, errlen, "GET :gen"), hex, sizeof(hex), &found);
    *gen = rc == 0 && found ? strtoull(hex, NULL, 16) : 0;
    return rc;
}

int gw_fair_redis_lottery_push_add(inv_fleet_conn_t *c, const char *sale, const char *user,
                                   const char *value)
{
    char k[160];
    snprintf(k, sizeof(k), "{flashgate:fair:%s}:e", sale);
    /* the first command picks the pipeline's node: the sale's */
    return inv_fleet_pipe_append(c, k, "HSETNX %s %s %s", k, user, value) == 0 ? 0 : CM_EBACKEND;
}

int gw_fair_redis_lottery_push_finish(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                      bool all_added, char *errbuf, size_t errlen)
{
    char k[160];
    snprintf(k, sizeof(k), "{flashgate:fair:%s}:pushed", sale);
    int rc = all_added ? inv_fleet_pipe_append(c, k, "SADD %s %u", k, node_id) : 1;
    size_t errors = 0;
    /* CM_EBACKEND: no connection to the node */
    if (rc == CM_EBACKEND || inv_fleet_pipe_read(c, &errors) != 0) {
        cm_errbuf_set(errbuf, errlen, "%s", inv_fleet_errstr(c));
        return CM_EBACKEND;
    }
    return rc == 0 && errors == 0 ? 1 : 0;
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
    inv_fleet_reply_t *r = call(c, &SC_PUSHED, sale, "", errbuf, errlen, ":pushed :entered");
    bool two = r && shaped(r, "*..");
    *n = two ? rnum(el(r, 0)) : -1;
    *missing = two ? rnum(el(r, 1)) : -1;
    return ran(r);
}

int gw_fair_redis_lottery_done(inv_fleet_conn_t *c, const char *sale, bool *done, char *errbuf,
                               size_t errlen)
{
    return flag(call(c, NULL, sale, "i", errbuf, errlen, "EXISTS :done"), done);
}

int gw_fair_redis_lottery_done_set(inv_fleet_conn_t *c, const char *sale, size_t n, char *errbuf,
                                   size_t errlen)
{
    return ran(call(c, NULL, sale, "", errbuf, errlen, "SET :done %llu", (unsigned long long)n));
}

int gw_fair_redis_lottery_entered_mark(inv_fleet_conn_t *c, const char *sale, uint32_t node_id,
                                       char *errbuf, size_t errlen)
{
    return ran(call(c, NULL, sale, "", errbuf, errlen, "SADD :entered %u", node_id));
}

int gw_fair_redis_lottery_entered(inv_fleet_conn_t *c, const char *sale, bool *busy, char *errbuf,
                                  size_t errlen)
{
    bool entered = false, drawn = false;
    if (flag(call(c, NULL, sale, "i", errbuf, errlen, "EXISTS :entered"), &entered) != 0 ||
        (entered && gw_fair_redis_lottery_done(c, sale, &drawn, errbuf, errlen) != 0))
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
    return flag(
        call(c, &SC_LOTTERY_LOCK, sale, "i", errbuf, errlen, ":lock %u %d", node_id, ttl_ms), mine);
}

int gw_fair_redis_lottery_lock_renew(inv_fleet_conn_t *c, const char *sale, int ttl_ms,
                                     char *errbuf, size_t errlen)
{
    return ran(call(c, NULL, sale, "", errbuf, errlen, "PEXPIRE :lock %d", ttl_ms));
}

/* KEYS e, drawn, seed, wl; ARGV seed, mode. The entries frozen as the draw's entrants
 * (RENAMENX: its error, nobody entered, is ignored; a no-op when a drawer before did),
 * the seed offered (SET NX: the first drawer's stays), the losers' mode decided once
 * (HSETNX: a resumed draw keeps the first drawer's). */
static const char LUA_LOTTERY_SEED[] = "redis.pcall('RENAMENX', KEYS[1], KEYS[2])\n"
                                       "redis.call('SET', KEYS[3], ARGV[1], 'NX')\n"
                                       "redis.call('HSETNX', KEYS[4], 'mode', ARGV[2])\n"
                                       "return 1\n";
static script_t SC_LOTTERY_SEED = {.text = LUA_LOTTERY_SEED};

int gw_fair_redis_lottery_seed(inv_fleet_conn_t *c, const char *sale, const char *seed_hex,
                               char mode, char *errbuf, size_t errlen)
{
    char m[2] = {mode, '\0'};
    return ran(call(c, &SC_LOTTERY_SEED, sale, "", errbuf, errlen, ":e :drawn :seed :wl %s %s",
                    seed_hex, m));
}

int gw_fair_redis_lottery_entrants(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                   void *ctx, char *errbuf, size_t errlen)
{
    return pairs(call(c, NULL, sale, "", errbuf, errlen, "HGETALL :drawn"), fn, ctx);
}

int gw_fair_redis_lottery_seed_get(inv_fleet_conn_t *c, const char *sale, uint64_t *seed,
                                   bool *seeded, char *errbuf, size_t errlen)
{
    char hex[64];
    int rc = str(call(c, NULL, sale, "", errbuf, errlen, "GET :seed"), hex, sizeof(hex), seeded);
    if (rc == 0 && *seeded)
        *seed = strtoull(hex, NULL, 16);
    return rc;
}

int gw_fair_redis_lottery_winners(inv_fleet_conn_t *c, const char *sale, inv_fleet_pair_fn fn,
                                  void *ctx, char *errbuf, size_t errlen)
{
    return pairs(call(c, NULL, sale, "", errbuf, errlen, "HGETALL :won"), fn, ctx);
}

int gw_fair_redis_lottery_winner_put(inv_fleet_conn_t *c, const char *sale, const char *user,
                                     const char *order_id, char *errbuf, size_t errlen)
{
    return ran(call(c, NULL, sale, "", errbuf, errlen, "HSET :won %s %s", user, order_id));
}

/* KEYS ep, ei, entered; ARGV person, order id, value ("order node ..."), ... Each mark
 * not held yet is taken; the reply is the values of those held already, in order ({}:
 * every one taken). A mark's node joins :entered with it: an entry answered before the
 * lottery thread's own :entered mark (Redis away after it, across the close) still makes
 * the draw wait for that node's push (sim/seeds.txt, --fairfleet). */
static const char LUA_ENTRY_MARK[] = "local held = {}\n"
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
    inv_fleet_reply_t *r = call(c, &SC_ENTRY_MARK, sale, "", errbuf, errlen,
                                ":ep :ei :entered %s %s %s", person, order_id, value);
    if (r && !shaped(r, "*") && !shaped(r, "*s")) {
        cm_errbuf_set(errbuf, errlen, "unexpected reply to the entry mark");
        inv_fleet_reply_free(r);
        return CM_EBACKEND;
    }
    if (r) {
        *taken = relems(r) == 0 || CM_PLANT(FAIR_REDIS_MARK_HELD);
        snprintf(held, cap, "%s", *taken ? "" : rstr(el(r, 0)));
    }
    return ran(r);
}

int gw_fair_redis_lottery_entry_mark_many(inv_fleet_conn_t *c, const char *sale,
                                          const char *const *args, size_t n, char *errbuf,
                                          size_t errlen)
{
    return ran(
        call(c, &SC_ENTRY_MARK, sale, "", errbuf, errlen, ":ep :ei :entered %v", 3 * n, args));
}

int gw_fair_redis_lottery_entry_drop(inv_fleet_conn_t *c, const char *sale, const char *person,
                                     const char *order_id, char *errbuf, size_t errlen)
{
    return ran(
        call(c, &SC_ENTRY_DROP, sale, "", errbuf, errlen, ":ep :ei %s %s", person, order_id));
}

int gw_fair_redis_lottery_entry_get(inv_fleet_conn_t *c, const char *sale, const char *order_id,
                                    bool *found, char *person, size_t pcap, char *value,
                                    size_t vcap, char *errbuf, size_t errlen)
{
    inv_fleet_reply_t *r = call(c, &SC_ENTRY_GET, sale, "", errbuf, errlen, ":ep :ei %s", order_id);
    if (r && (*found = shaped(r, "*ss"))) {
        snprintf(person, pcap, "%s", rstr(el(r, 0)));
        snprintf(value, vcap, "%s", rstr(el(r, 1)));
    }
    return ran(r);
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

int gw_fair_redis_wl_state(inv_fleet_conn_t *c, const char *sale, gw_fair_redis_wl_state_t *st,
                           char *errbuf, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    inv_fleet_reply_t *r = call(c, &SC_WL_STATE, sale, "*s....s", errbuf, errlen, ":wl :wp");
    if (r) {
        st->mode = rlen(el(r, 0)) == 1 ? rstr(el(r, 0))[0] : 0;
        st->ended = rnum(el(r, 1)) != 0;
        st->gen = rnum(el(r, 2));
        st->head = rnum(el(r, 3));
        st->promoted = rnum(el(r, 4));
        snprintf(st->owner, sizeof(st->owner), "%s", rstr(el(r, 5)));
    }
    return ran(r);
}

int gw_fair_redis_wl_lock(inv_fleet_conn_t *c, const char *sale, const char *owner, int ttl_ms,
                          bool *mine, char *errbuf, size_t errlen)
{
    return flag(call(c, &SC_WL_LOCK, sale, "i", errbuf, errlen, ":wlock :wp %s %d", owner, ttl_ms),
                mine);
}

int gw_fair_redis_wl_pending(inv_fleet_conn_t *c, const char *sale, bool *found, char *person,
                             size_t person_cap, char *order, size_t order_cap, char *errbuf,
                             size_t errlen)
{
    char v[512], p[128], o[64], w[64];
    int rc = str(call(c, NULL, sale, "", errbuf, errlen, "GET :wp"), v, sizeof(v), found);
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
    return yes(call(c, &SC_WL_BEGIN, sale, "i", errbuf, errlen, ":wlock :wp :won :wl %s %s %s",
                    owner, person, order));
}

int gw_fair_redis_wl_adopt(inv_fleet_conn_t *c, const char *sale, const char *owner, int grace_ms,
                           char *errbuf, size_t errlen)
{
    return yes(
        call(c, &SC_WL_ADOPT, sale, "i", errbuf, errlen, ":wlock :wp %s %d", owner, grace_ms));
}

int gw_fair_redis_wl_finish(inv_fleet_conn_t *c, const char *sale, const char *owner,
                            const char *person, const char *result, long long head, long long *gen,
                            char *errbuf, size_t errlen)
{
    long long n = 0;
    int rc = num(call(c, &SC_WL_FINISH, sale, "i", errbuf, errlen,
                      ":wlock :wp :won :wl %s %s %s %lld %s", owner, person, result, head,
                      GW_FAIR_REDIS_LOTTERY_NOT_ACCEPTED),
                 &n);
    if (rc || n < 0)
        return rc;
    *gen = n;
    return 1;
}

int gw_fair_redis_wl_end(inv_fleet_conn_t *c, const char *sale, char *errbuf, size_t errlen)
{
    return yes(call(c, &SC_WL_END, sale, "i", errbuf, errlen, ":wl :wp"));
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
    /* The score is the registration's rank (ZCARD + 1: nothing is ever
     * removed but the whole key), so ZRANGE by rank pages exactly. */
    long long n = 0;
    int rc = num(call(c, &SC_REG_ADD, sale, "i", errbuf, errlen, ":reg %s %lld", person, cap), &n);
    if (rc == 0)
        *added = (int)n;
    return rc;
}

int gw_fair_redis_reg_has(inv_fleet_conn_t *c, const char *sale, const char *person, bool *has,
                          char *errbuf, size_t errlen)
{
    return str(call(c, NULL, sale, "", errbuf, errlen, "ZSCORE :reg %s", person), NULL, 0, has);
}

int gw_fair_redis_reg_count(inv_fleet_conn_t *c, const char *sale, long long *n, char *errbuf,
                            size_t errlen)
{
    return num(call(c, NULL, sale, "i", errbuf, errlen, "ZCARD :reg"), n);
}

/* ZRANGE of the sale's key `name`, ranks start..stop: fn for each member; 0 or
 * CM_EBACKEND (errbuf). */
static int members(inv_fleet_conn_t *c, const char *sale, const char *name, long long start,
                   long long stop, void (*fn)(void *ctx, const char *member), void *ctx,
                   char *errbuf, size_t errlen)
{
    inv_fleet_reply_t *r =
        call(c, NULL, sale, "", errbuf, errlen, "ZRANGE %k %lld %lld", name, start, stop);
    for (size_t i = 0; r && i < relems(r); i++)
        if (rstr(el(r, i)))
            fn(ctx, rstr(el(r, i)));
    return ran(r);
}

int gw_fair_redis_reg_range(inv_fleet_conn_t *c, const char *sale, long long start, long long stop,
                            void (*fn)(void *ctx, const char *person), void *ctx, char *errbuf,
                            size_t errlen)
{
    return members(c, sale, "reg", start, stop, fn, ctx, errbuf, errlen);
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
    return rtype(e) == INV_FLEET_REPLY_STRING ? strtoull(rstr(e), NULL, 10) : 0;
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
    inv_fleet_reply_t *r =
        call(c, &SC_ROOM_TICK, sale, "", errbuf, errlen, ":wr :wrpre %s %d %lld %llu %llu",
             seed_hex, started ? 1 : 0, (long long)now_ms, (unsigned long long)add_milli,
             (unsigned long long)ahead);
    int rc = !r                     ? CM_EBACKEND
             : relems(r) == 1       ? no_seed(errbuf, errlen)
             : !shaped(r, "*s....") ? unexpected(errbuf, errlen)
                                    : 0;
    if (rc == 0) {
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
    memset(out, 0, sizeof(*out));
    seed[0] = '\0';
    inv_fleet_reply_t *r =
        call(c, &SC_ROOM_JOIN, sale, "", errbuf, errlen,
             ":wr :wrpre :wrpl %s %s %s %d %d %lld %d %llu", seed_hex, member, person,
             before_start ? 1 : 0, take ? 1 : 0, (long long)now_ms, ttl_s, (unsigned long long)cap);
    if (!r)
        return CM_EBACKEND;
    int rc = 0;
    long long kind =
        relems(r) >= 1 && rtype(el(r, 0)) == INV_FLEET_REPLY_INTEGER ? rnum(el(r, 0)) : -9;
    if (kind == -2 && shaped(r, "*is")) {
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

int gw_fair_redis_room_claim(inv_fleet_conn_t *c, const char *sale, uint64_t jti, uint64_t fp,
                             uint64_t nonce, int64_t ttl_ms, bool give_back, char *errbuf,
                             size_t errlen)
{
    /* the claim's key, its void mark's key, its value "fp:nonce", fp and the nonce alone */
    char k[48], vk[80], val[48], fps[24], ns[24];
    snprintf(k, sizeof(k), "wrjti:%016llx", (unsigned long long)jti);
    snprintf(vk, sizeof(vk), "%s:void:%016llx", k, (unsigned long long)nonce);
    snprintf(fps, sizeof(fps), "%llu", (unsigned long long)fp);
    snprintf(ns, sizeof(ns), "%016llx", (unsigned long long)nonce);
    snprintf(val, sizeof(val), "%s:%s", fps, ns);
    long long n = -1;
    int rc = num(call(c, &SC_ROOM_CLAIM, sale, "i", errbuf, errlen, "%k %k %s %lld %s %s %d", k, vk,
                      val, (long long)(ttl_ms > 0 ? ttl_ms : 1), fps, ns, give_back),
                 &n);
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
    return members(c, sale, "wrpre", start, stop, fn, ctx, errbuf, errlen);
}

/*---- the scripts' SHA1s ----*/

static script_t *const scripts[] = {
    &SC_CONF_PART, &SC_LOTTERY_LOCK, &SC_ENTRY_MARK, &SC_ENTRY_DROP, &SC_ENTRY_GET,    &SC_WL_STATE,
    &SC_WL_LOCK,   &SC_WL_BEGIN,     &SC_WL_ADOPT,   &SC_WL_FINISH,  &SC_WL_END,       &SC_REG_ADD,
    &SC_ROOM_TICK, &SC_ROOM_JOIN,    &SC_ROOM_CLAIM, &SC_PUSHED,     &SC_LOTTERY_SEED,
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
