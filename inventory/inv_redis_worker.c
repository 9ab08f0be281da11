/*
 * The Redis backend: a fleet of gateways shares one Redis (or one Redis
 * Cluster slot per sale) that holds the stock, the per-user purchases, the
 * orders and the idempotency keys of every sale; the Lua scripts in
 * inv_redis_lua.h make each step atomic.
 *
 * URL: redis://[[user]:password@]host[:port][/db][?key=value&...], or
 *      redis-cluster://[[user]:password@]host[:port][,host[:port]...][?key=value&...]
 *      for a Redis Cluster (a seed list; routing in inv_cluster.c)
 *   password        also from inventory.redis_password (inv_opts_t) when the URL has none
 *   pool=1          async connections per worker loop (1..64; INV_REDIS_POOL_DEFAULT)
 *   timeout_ms=40   per reserve call; older calls fail with CM_ETIMEOUT (1..60000;
 *                   INV_REDIS_TIMEOUT_MS_DEFAULT). inv_opts_t values win over these.
 *   admin_timeout_ms=2000  blocking admin calls (1..60000)
 *   breaker_failures=5     consecutive failures or timeouts that open the breaker (1..1000)
 *   breaker_cooldown_ms=250  open time before one probe is let through (1..60000)
 *   wait_replicas=0  a reserve is answered only once this many replicas have it
 *                    (WAIT after the script; 0..16, 0 = off): a failover after a
 *                    master crash then keeps every reserve that was answered
 *
 * Threads and connections:
 * - Each worker loop (inv_worker_open with a loop) has `pool` hiredis async
 *   contexts on that loop (our copy of adapters/libuv.h, see rl_attach). inv_reserve sends one EVALSHA
 *   and returns INV_PENDING; hiredis pipelines everything in flight. A timer
 *   per worker fails calls older than timeout_ms (req->done exactly once);
 *   a late answer that reserved units is compensated by a release. A lost
 *   connection is re-opened with a backoff (50 ms doubling to 2 s).
 * - A worker without a loop (tests, blocking callers) has one blocking
 *   connection of its own and answers inline.
 * - Admin calls share one blocking connection under a mutex.
 * - A background thread with its own loop holds a subscriber on
 *   flashgate:sales and a query connection: every announced sale is re-read
 *   into the local view (inv__sale_publish), and every known sale is re-read
 *   each second as a fallback. So the sold-out flag and admin changes reach
 *   every gateway within a second.
 * - One circuit breaker per master (one on a single Redis), atomics only:
 *   after breaker_failures consecutive failures or timeouts of calls to a
 *   master it opens, and a reserve of a sale on that master fails fast with
 *   CM_EBACKEND; after the cool-down one probe goes through, whose success
 *   closes it. Sales on the other masters are not affected.
 *
 * Redis Cluster: every key of a sale has the hash tag {sale:ID}, so each
 * script runs on one slot. The blocking paths go through inv_cluster's routed
 * client; the worker loops keep `pool` connections per master, opened when
 * first routed to, and follow MOVED (the map takes the new owner at once and
 * the sync thread re-reads CLUSTER SLOTS) and ASK (ASKING, this command only),
 * at most INV_CLUSTER_REDIRECTS_MAX times per call. A redirect (or NOSCRIPT)
 * means the script did not run, so resending a reserve cannot take units
 * twice; a TRYAGAIN / CLUSTERDOWN / LOADING reply did not run either, and the
 * caller hears CM_EBACKEND (503) at once; a reserve whose connection died
 * after it was sent goes through the same release-when-back path as on a single Redis (the
 * release is exactly-once per order id: the script's HDEL decides), routed to
 * whichever master owns the sale by then. A plain redis:// is a map of one node.
 */
#include "inventory/inv_backend.h"
#include "inventory/inv_cluster.h"
#include "inventory/inv_redis.h"
#include "inventory/inv_redis_lua.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_url.h"
#include "common/cm_log.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum {
    SC_RESERVE,
    SC_RELEASE,
    SC_PUT,
    SC_RESTOCK,
    SC_READ,
    SC_CLAIM,
    SC_RESERVE_BATCH,
    SC_RESERVE_ONCE,
    SC_N
};

static const char *const inv__redis_script_text[SC_N] = {
    INV_REDIS_LUA_RESERVE,
    INV_REDIS_LUA_RELEASE,
    INV_REDIS_LUA_PUT,
    INV_REDIS_LUA_RESTOCK,
    INV_REDIS_LUA_READ,
    INV_REDIS_LUA_CLAIM,
    INV_REDIS_LUA_RESERVE_BATCH,
    INV_REDIS_LUA_RESERVE_ONCE,
};

enum { BR_CLOSED = 0, BR_OPEN = 1, BR_HALF_OPEN = 2 };

#define KEY_MAX (INV_SALE_ID_MAX + 16)
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define POLL_MS 1000
#define MAP_CHECK_MS 100 /* how soon a stale cluster map is re-read */

typedef struct rb {
    inv_t *inv;
    cm_redis_url_t addr; /* host, port, db, user, password */
    uint32_t pool;
    uint32_t batch; /* reserves of one sale per script call at most (1: one call each) */
    uint32_t timeout_ms;
    uint32_t admin_timeout_ms;
    uint32_t br_failures;
    uint32_t br_cooldown_ms;
    uint32_t wait_replicas;
    char sha[SC_N][41]; /* set at open, read-only after */

    inv_cluster_t *cl;  /* the slot map (one node for redis://) */

    pthread_mutex_t admin_mu;
    inv_cluster_sync_t *admin; /* guarded by admin_mu */

    /* One circuit breaker per master (node index; [0] on a single Redis): a
     * master that refuses or times out must not shut out the sales of the
     * healthy ones (a slot in migration answers TRYAGAIN for seconds). */
    struct {
        _Atomic int state;
        _Atomic uint32_t fails;
        _Atomic uint64_t until_ms;
    } br[INV_CLUSTER_NODES_MAX];
    _Atomic uint64_t br_opens; /* counted, and logged in the gateway's periodic summary */

    /* the sync thread and what only it touches */
    uv_thread_t thr;
    bool thr_started;
    uv_loop_t sloop;
    uv_async_t stop_async;
    uv_timer_t poll_timer;
    uv_timer_t map_timer;
    uv_async_t map_async;          /* a worker saw the map go stale */
    redisAsyncContext *sub;
    inv_cluster_sync_t *query; /* blocking, on the sync thread only */
    unsigned sub_rr;           /* which node the subscriber tries next */
    bool stopping;
} rb_t;

/*---- Helpers ----*/


/* Our own monotonic clock: the breaker must keep working when a test fakes cm_time. */
static uint64_t inv__redis_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void inv__redis_sale_key(char *buf, const char *sale_id, const char *part)
{
    snprintf(buf, KEY_MAX, "{sale:%s}:%s", sale_id, part);
}

static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    char tmp[32];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool inv__redis_reply_i64(const redisReply *r, int64_t *out)
{
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type == REDIS_REPLY_STRING)
        return parse_i64(r->str, r->len, out);
    return false;
}

/* A reserve's answer (INV_REDIS_LUA_RESERVE): the code, the stock left, the user's units. */
typedef struct reserve_ans {
    int code;
    int64_t left;
    int64_t units;
    bool claimed; /* a duplicate's order carries a claim mark (INV_REDIS_CLAIM) */
} reserve_ans_t;

/*
 * Reads a reserve's reply: a reservation packed into one integer, or the
 * array {code, left, units[, order, qty, claimed]} (a duplicate must carry the
 * order and qty). false for anything else (an error reply, a protocol surprise).
 */
static bool inv__redis_reserve_parse(const redisReply *r, reserve_ans_t *out)
{
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        if (r->integer < 0)
            return false;
        out->code = INV_RESERVED;
        out->claimed = false;
        out->left = r->integer >> INV_REDIS_RESERVED_SHIFT;
        out->units = r->integer & ((1LL << INV_REDIS_RESERVED_SHIFT) - 1);
        return true;
    }
    int64_t code;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        !inv__redis_reply_i64(r->element[0], &code) ||
        !inv__redis_reply_i64(r->element[1], &out->left) ||
        !inv__redis_reply_i64(r->element[2], &out->units))
        return false;
    if ((code < INV_RESERVED || code > INV_UNKNOWN_SALE) && code != INV_RESERVED_BEFORE)
        return false;
    if (code == INV_DUPLICATE &&
        (r->elements < 5 || r->element[3]->type != REDIS_REPLY_STRING ||
         r->element[4]->type != REDIS_REPLY_INTEGER))
        return false;
    out->code = (int)code;
    out->claimed = code == INV_DUPLICATE && r->elements >= 6 &&
                   r->element[5]->type == REDIS_REPLY_INTEGER && r->element[5]->integer == 1;
    return true;
}

/* Parses the 8 fields of INV_REDIS_LUA_STATE (HMGET order). CM_ENOTFOUND if the sale has none. */
static int inv__redis_parse_state(const redisReply *r, const char *sale_id, inv_sale_info_t *out)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 8)
        return CM_EBACKEND;
    if (r->element[0]->type == REDIS_REPLY_NIL)
        return CM_ENOTFOUND;
    int64_t v[8] = {0};
    for (size_t i = 0; i < 8; i++) {
        if (r->element[i]->type == REDIS_REPLY_NIL)
            continue; /* an absent counter is 0 */
        if (!inv__redis_reply_i64(r->element[i], &v[i]))
            return CM_EBACKEND;
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->sale_id, sizeof(out->sale_id), "%s", sale_id);
    out->stock_total = v[0];
    out->stock_left = v[1] < 0 ? 0 : v[1];
    out->accepted_units = v[2];
    out->accepted_orders = v[3];
    out->per_user_limit = (uint32_t)v[4];
    out->starts_at_ms = v[5];
    out->ends_at_ms = v[6];
    out->version = (uint64_t)v[7];
    return 0;
}

static void inv__redis_publish_local(rb_t *rb, const inv_sale_info_t *info)
{
    inv_sale_t *s = inv__sale_get_or_create(rb->inv, info->sale_id);
    if (s)
        inv__sale_publish(s, info);
}

static bool inv__redis_is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/*---- Circuit breakers (one per master, shared by every worker; atomics only) ----*/

/* `node` is the master a call goes to; -1 (no master serves the slot: the
 * call fails at once anyway) has no breaker. */

/* true if a call may go out; in HALF_OPEN exactly one caller (the probe) gets true. */
static bool inv__redis_br_allow(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return true;
    int st = atomic_load(&rb->br[node].state);
    if (st == BR_CLOSED)
        return true;
    if (st == BR_HALF_OPEN)
        return false;
    if (inv__redis_now_ms() < atomic_load(&rb->br[node].until_ms))
        return false;
    int open = BR_OPEN;
    return atomic_compare_exchange_strong(&rb->br[node].state, &open, BR_HALF_OPEN);
}

static void inv__redis_br_success(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return;
    atomic_store_explicit(&rb->br[node].fails, 0, memory_order_relaxed);
    if (atomic_load_explicit(&rb->br[node].state, memory_order_relaxed) != BR_CLOSED)
        atomic_store(&rb->br[node].state, BR_CLOSED); /* no log line per event: see br_opens */
}

static void inv__redis_br_failure(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return;
    uint32_t n = atomic_fetch_add(&rb->br[node].fails, 1) + 1;
    int st = atomic_load(&rb->br[node].state);
    if (st == BR_OPEN)
        return; /* stragglers of the burst that opened it do not extend the cool-down */
    if (st == BR_HALF_OPEN || n >= rb->br_failures) {
        atomic_store(&rb->br[node].until_ms, inv__redis_now_ms() + rb->br_cooldown_ms);
        if (atomic_compare_exchange_strong(&rb->br[node].state, &st, BR_OPEN))
            atomic_fetch_add_explicit(&rb->br_opens, 1, memory_order_relaxed);
    }
}

/*---- Blocking connections (admin, loop-less workers, open) ----*/

redisContext *inv_redis_connect(const cm_redis_url_t *addr, uint32_t timeout_ms, char *errbuf,
                                size_t errlen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(addr->host, addr->port, tv);
    if (!c || c->err) {
        cm_errbuf_set(errbuf, errlen, "redis: connect %s:%d: %s", addr->host, addr->port,
                c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (addr->pass[0]) {
        if (addr->user[0])
            r = redisCommand(c, "AUTH %s %s", addr->user, addr->pass);
        else
            r = redisCommand(c, "AUTH %s", addr->pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            cm_errbuf_set(errbuf, errlen, "redis: AUTH: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (addr->db) {
        r = redisCommand(c, "SELECT %d", addr->db);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            cm_errbuf_set(errbuf, errlen, "redis: SELECT %d: %s", addr->db, r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/*
 * Runs script `sc` with the sale's first `nkeys` keys (meta, users, orders,
 * idem) and `nargs` arguments on the sale's node; reloads it on NOSCRIPT.
 * Returns the reply (caller frees) or NULL with *err set (CM_ETIMEOUT or
 * CM_EBACKEND); the routed client reconnects on the next call after an I/O
 * error. `quiet`: a transport failure is not logged (the caller retries).
 */
static redisReply *inv__redis_sync_eval_log(inv_cluster_sync_t *c, const rb_t *rb, int sc,
                                 const char *sale_id, int nkeys, int nargs, const char **args,
                                 int *err, bool quiet)
{
    char keys[4][KEY_MAX];
    static const char *const parts[4] = {"meta", "users", "orders", "idem"};
    const char *argv[16];
    size_t argl[16];
    char nk[4];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    int argc = 0;
    argv[argc++] = "EVALSHA";
    argv[argc++] = rb->sha[sc];
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++) {
        inv__redis_sale_key(keys[i], sale_id, parts[i]);
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    redisReply *r = inv_cluster_sync_argv(c, keys[0], argc, argv, argl, err);
    if (inv__redis_is_noscript(r)) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = inv__redis_script_text[sc];
        argl[0] = 4;
        argl[1] = strlen(inv__redis_script_text[sc]);
        r = inv_cluster_sync_argv(c, keys[0], argc, argv, argl, err);
    }
    if (!r) {
        if (!quiet)
            cm_log_warn("inv", "redis call failed", "err=\"%s\"", inv_cluster_sync_errstr(c));
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        cm_log_error("inv", "redis script error", "err=\"%s\"", r->str);
        freeReplyObject(r);
        *err = CM_EBACKEND;
        return NULL;
    }
    return r;
}

static redisReply *inv__redis_sync_eval(inv_cluster_sync_t *c, const rb_t *rb, int sc,
                                        const char *sale_id, int nkeys, int nargs,
                                        const char **args, int *err)
{
    return inv__redis_sync_eval_log(c, rb, sc, sale_id, nkeys, nargs, args, err, false);
}

/*
 * A plain command on the admin connection of key's node (NULL: any node).
 * The routed client PINGs a connection that sat idle before it risks a
 * command on it: a server restart leaves a dead socket, and a script whose
 * fate is unknown must not be sent (restock must not run twice). Caller
 * holds admin_mu.
 */
static redisReply *inv__redis_admin_cmd(rb_t *rb, const char *key, int *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = inv_cluster_sync_vcmd(rb->admin, key, err, fmt, ap);
    va_end(ap);
    if (!r) {
        cm_log_warn("inv", "redis admin call failed", "err=\"%s\"",
                    inv_cluster_sync_errstr(rb->admin));
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        cm_log_error("inv", "redis command error", "err=\"%s\"", r->str);
        freeReplyObject(r);
        *err = CM_EBACKEND;
        return NULL;
    }
    return r;
}

/* Reads a sale's state on the admin connection. Caller holds admin_mu. */
static int inv__redis_admin_state(rb_t *rb, const char *sale_id, inv_sale_info_t *out)
{
    int err = 0;
    /* a script: the units and orders are derived from meta and the orders hash at once */
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_READ, sale_id, 3, 0, NULL, &err);
    if (!r)
        return err;
    int rc = inv__redis_parse_state(r, sale_id, out);
    freeReplyObject(r);
    return rc;
}

/*---- Async connections (worker loops and the sync thread) ----*/

/*
 * hiredis 0.14's adapters/libuv.h, with one fix: libuv reports POLLERR (a
 * refused non-blocking connect, a reset connection) as status UV_EBADF and
 * stops the handle, and that adapter then just returns, so hiredis never
 * learns of it: the context stays "connecting" (or "up") forever, its
 * commands never answer and it is never re-opened (seen after a Redis
 * restart). Here an error is handed to hiredis as readiness for what it was
 * waiting for, so its own read/connect check fails the context as usual.
 *
 * And one change: hiredis asks for write readiness on every command, and
 * each uv_poll_start costs an epoll_ctl (libuv drops the fd from epoll and
 * adds it back on the next poll), then the write waits for the next poll:
 * two or three syscalls per reserve and a loop iteration of latency (bench/
 * README.md, Redis). A connected context instead writes everything queued in
 * a loop iteration at once, from a prepare handle (the phase just before the
 * loop polls), so a burst of reserves is one write(2); the poll handle stays
 * armed for reads and is started again only when its mask really changes:
 * while connecting, or when the socket took only part of the buffer.
 */
struct rw;
static void inv__redis_rw_read_stamp(struct rw *w, int fd);

typedef struct rl_events {
    redisAsyncContext *context;
    struct rw *w; /* a worker's connection: its replies are timed (inv__redis_rw_read_stamp) */
    uv_poll_t handle;
    uv_prepare_t flush; /* active while a connected context has output queued */
    int events;         /* the mask the poll handle watches now */
    bool in_flush;      /* inside inv__redis_rl_flush: a new write request means "socket full" */
    int open_handles;   /* freed when both handles are closed */
} rl_events_t;

static void rl_poll(uv_poll_t *handle, int status, int events)
{
    rl_events_t *p = handle->data;
    if (status != 0) {
        events = p->events ? p->events : UV_READABLE | UV_WRITABLE;
        p->events = 0; /* libuv stopped the handle: the next request re-arms it */
    }
    if (p->context != NULL && (events & UV_READABLE)) {
        if (p->w)
            inv__redis_rw_read_stamp(p->w, p->context->c.fd);
        redisAsyncHandleRead(p->context);
    }
    if (p->context != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void rl_set(rl_events_t *p, int events)
{
    if (events == p->events)
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, rl_poll);
    else
        uv_poll_stop(&p->handle);
}

static void rl_add_read(void *privdata);
static void rl_del_write(void *privdata);

/*
 * hiredis's own write frees the output buffer once it is all written and the
 * next command starts a new one, which then doubles its way up (a realloc per
 * doubling) to the size of a loop iteration's reserves: 5-8 KiB at 20-60
 * reserves, and glibc consolidates its fast bins on every allocation of 1 KiB
 * or more (bench/README.md, Redis). So the flush writes the buffer here and,
 * once it is all written, keeps it (up to OBUF_KEEP; hiredis's way above
 * that). A part taken or EAGAIN does what hiredis's write does then (the rest
 * stays in the buffer, wait for writable, read meanwhile); an error is left to
 * hiredis's write, which meets it again and disconnects (a reset peer then
 * reads as EPIPE there, not ECONNRESET). true if the write was handled here.
 */
#define OBUF_KEEP (64 * 1024)

static bool rl_write_all(rl_events_t *p)
{
    redisContext *c = &p->context->c;
    size_t len = sdslen(c->obuf);
    if (c->err || !(c->flags & REDIS_CONNECTED) || len == 0)
        return false;
    ssize_t n = write(c->fd, c->obuf, len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        n = 0;
    else if (n <= 0)
        return false; /* an error (or EINTR): hiredis's write */
    if ((size_t)n < len) {
        sdsrange(c->obuf, n, -1);
        rl_set(p, p->events | UV_WRITABLE | UV_READABLE);
        return true;
    }
    sds empty = sdsAllocSize(c->obuf) > OBUF_KEEP ? sdsempty() : NULL;
    if (empty) {
        sdsfree(c->obuf);
        c->obuf = empty;
    } else {
        sdsclear(c->obuf); /* written: it must not go out twice */
    }
    rl_del_write(p);
    rl_add_read(p);
    return true;
}

static void inv__redis_rl_flush(uv_prepare_t *h)
{
    rl_events_t *p = h->data;
    uv_prepare_stop(h);
    if (!p->context || rl_write_all(p))
        return;
    p->in_flush = true;
    redisAsyncHandleWrite(p->context); /* may free the context; p lives until both closes */
    p->in_flush = false;
}

static void rl_add_read(void *privdata)
{
    rl_events_t *p = privdata;
    rl_set(p, p->events | UV_READABLE);
}

static void rl_del_read(void *privdata)
{
    rl_events_t *p = privdata;
    rl_set(p, p->events & ~UV_READABLE);
}

static void rl_add_write(void *privdata)
{
    rl_events_t *p = privdata;
    if (p->in_flush || !(p->context->c.flags & REDIS_CONNECTED)) {
        rl_set(p, p->events | UV_WRITABLE); /* connecting, or the socket is full: wait */
        return;
    }
    if (!(p->events & UV_WRITABLE) && !uv_is_active((uv_handle_t *)&p->flush))
        uv_prepare_start(&p->flush, inv__redis_rl_flush);
}

static void rl_del_write(void *privdata)
{
    rl_events_t *p = privdata;
    uv_prepare_stop(&p->flush);
    rl_set(p, p->events & ~UV_WRITABLE);
}

static void rl_on_close(uv_handle_t *handle)
{
    rl_events_t *p = handle->data;
    if (--p->open_handles == 0)
        free(p);
}

static void rl_cleanup(void *privdata)
{
    rl_events_t *p = privdata;
    p->context = NULL;
    uv_close((uv_handle_t *)&p->handle, rl_on_close);
    uv_close((uv_handle_t *)&p->flush, rl_on_close);
}

static int rl_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return REDIS_ERR;
    rl_events_t *p = cm_xcalloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    uv_prepare_init(loop, &p->flush);
    p->flush.data = p;
    p->open_handles = 2;
    ac->ev.addRead = rl_add_read;
    ac->ev.delRead = rl_del_read;
    ac->ev.addWrite = rl_add_write;
    ac->ev.delWrite = rl_del_write;
    ac->ev.cleanup = rl_cleanup;
    ac->ev.data = p;
    p->handle.data = p;
    p->context = ac;
    return REDIS_OK;
}

/*
 * hiredis's reply objects for the async contexts, in hiredis's own layout (the
 * callbacks read them as usual) but allocated our way: an array is one block
 * that also holds its element vector and a slot per element, so a reserve's
 * answer (an array of three integers) is one malloc instead of five (the
 * array, its vector, three integers), and only a string element adds its
 * text. hiredis frees a reply after its callback through ro_free (roots
 * only). Before: glibc's calloc per object (no per-thread cache), then a
 * malloc and a free per object: ~600 instructions a Redis order (callgrind,
 * bench/README.md, Redis). A scalar element is linked into its parent only
 * once it is whole; a nested array is linked before its elements are read,
 * and its vector starts zeroed, so ro_free walks a half-read reply (a failed
 * allocation, a protocol error) and frees each part once.
 */
static redisReply *ro_alloc(int type, size_t extra)
{
    redisReply *r = malloc(sizeof(*r) + extra);
    if (r) {
        memset(r, 0, sizeof(*r));
        r->type = type;
    }
    return r;
}

/* Element idx's slot inside its parent's block (see ro_array), or NULL for a root. */
static redisReply *ro_slot(const redisReadTask *task)
{
    if (!task->parent)
        return NULL;
    redisReply *parent = task->parent->obj;
    redisReply *slots = (redisReply *)(void *)(parent->element + parent->elements);
    redisReply *s = &slots[task->idx];
    memset(s, 0, sizeof(*s));
    return s;
}

static void *ro_link(const redisReadTask *task, redisReply *r)
{
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *ro_string(const redisReadTask *task, char *str, size_t len)
{
    char *buf = malloc(len + 1);
    if (!buf)
        return NULL;
    redisReply *r = ro_slot(task);
    if (r) {
        r->type = task->type;
    } else if (!(r = ro_alloc(task->type, 0))) {
        free(buf);
        return NULL;
    }
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return ro_link(task, r);
}

static void *ro_array(const redisReadTask *task, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    /* A server's "*<n>" must not wrap the size (a 32-bit build): out of memory. */
    if (n > (SIZE_MAX - sizeof(redisReply)) / (sizeof(redisReply *) + sizeof(redisReply)))
        return NULL;
    /* the element vector, then a slot per element: same alignment as the header */
    redisReply *r = ro_alloc(REDIS_REPLY_ARRAY, n * (sizeof(redisReply *) + sizeof(redisReply)));
    if (!r)
        return NULL;
    if (n) {
        r->element = (redisReply **)(void *)(r + 1);
        memset(r->element, 0, n * sizeof(*r->element)); /* ro_free walks a half-read array */
        r->elements = n;
    }
    return ro_link(task, r);
}

static void *ro_integer(const redisReadTask *task, long long value)
{
    redisReply *r = ro_slot(task);
    if (!r && !(r = ro_alloc(REDIS_REPLY_INTEGER, 0)))
        return NULL;
    r->type = REDIS_REPLY_INTEGER;
    r->integer = value;
    return ro_link(task, r);
}

static void *ro_nil(const redisReadTask *task)
{
    redisReply *r = ro_slot(task);
    if (!r && !(r = ro_alloc(REDIS_REPLY_NIL, 0)))
        return NULL;
    r->type = REDIS_REPLY_NIL;
    return ro_link(task, r);
}

/* Frees r's text and elements; r itself too unless it sits in its parent's block. */
static void ro_free_tree(redisReply *r, bool in_block)
{
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        redisReply *slots = (redisReply *)(void *)(r->element + r->elements);
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i])
                ro_free_tree(r->element[i], r->element[i] == &slots[i]);
    } else {
        free(r->str); /* NULL for integers and nils */
    }
    if (!in_block)
        free(r);
}

static void ro_free(void *reply)
{
    if (reply)
        ro_free_tree(reply, false);
}

/* hiredis keeps a non-const pointer to it; nothing writes it */
static redisReplyObjectFunctions ro_fns = {ro_string, ro_array, ro_integer, ro_nil, ro_free};

/* Opens an async context to cluster node `node` on `loop`, queues AUTH and
 * SELECT. NULL if it failed at once. */
static redisAsyncContext *inv__redis_async_open(rb_t *rb, int node, uv_loop_t *loop, void *data,
                                     redisConnectCallback *on_conn,
                                     redisDisconnectCallback *on_disc)
{
    char host[256];
    int port;
    if (inv_cluster_node(rb->cl, node, host, sizeof(host), &port) != 0)
        return NULL;
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    if (!ac)
        return NULL;
    if (ac->err) {
        cm_log_debug("inv", "redis async connect failed", "err=\"%s\"", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    ac->c.reader->fn = &ro_fns;
    if (rl_attach(ac, loop) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    /* Replies come back in order, so the scripts sent after these run authenticated. */
    if (rb->addr.pass[0]) {
        if (rb->addr.user[0])
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", rb->addr.user, rb->addr.pass);
        else
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s", rb->addr.pass);
    }
    if (rb->addr.db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", rb->addr.db);
    return ac;
}

/*---- Workers ----*/

typedef struct rw rw_t;

typedef struct rconn {
    rw_t *w;
    int node;              /* the cluster node it talks to */
    bool is_inited;        /* retry timer initialised (opened on first use) */
    redisAsyncContext *ac; /* NULL while disconnected */
    bool is_up;            /* connect callback said OK */
    uint32_t backoff_ms;
    uv_timer_t retry;
} rconn_t;

/* One call in flight. Freed only by its hiredis callback (which always comes:
 * with the reply, or with NULL when the context goes away). */
typedef struct rop {
    struct rop *prev, *next; /* pending list, oldest first (all share one timeout) */
    rw_t *w;
    rconn_t *conn;
    inv_reserve_req_t *req; /* NULL once req->done was called */
    uint64_t deadline;
    bool is_reloaded;       /* sent again as EVAL after NOSCRIPT */
    bool is_compensation;   /* a give-back: the release of a reserve whose caller did not
                               hear INV_RESERVED (INV_REDIS_CLAIM) */
    bool is_claim;          /* inv_claim's call (SC_CLAIM), not a reserve */
    bool is_asking;         /* an ASK redirect: ASKING goes first, this once */
    uint8_t redirects;      /* MOVED/ASK followed so far */
    uint16_t slot;          /* the sale's cluster slot */
    uint64_t sent_us;       /* when the write that carried it left, wall clock (0: not yet) */
    struct rop *qnext;      /* the worker's queue of unsent reserves, then its batch */
    int64_t w_left;         /* wait_replicas: the reserve's answer, held until WAIT says */
    uint32_t w_units;
    char sale_id[INV_SALE_ID_MAX + 1]; /* from here on set at allocation; above, zeroed */
    char user_id[INV_USER_ID_MAX + 1];
    char qty[12];
    char idem_key[INV_IDEM_KEY_MAX + 1];
    char order_id[INV_ORDER_ID_MAX + 1];
} rop_t;

struct rw {
    rb_t *rb;
    uv_loop_t *loop;
    inv_cluster_sync_t *sync; /* loop-less worker: blocking connection(s) */
    rconn_t *conns;           /* `pool` per node: conns[node * pool + i], opened on first use */
    uint32_t nconns, nnodes, rr;
    uv_timer_t tick;
    uv_prepare_t send_prep;  /* stamps the sends (inv__redis_rw_send_cb) */
    uint64_t arrival_us; /* of the replies being read now (inv__redis_rw_read_stamp), 0: unknown */
    rop_t pending; /* sentinel */
    /* Reserves queued in this loop iteration, sent in batches from the prepare
     * phase (inv__redis_queue_send), oldest first. */
    rop_t *q_head, *q_tail;
    /* While inv__redis_batch_each hands out a batch's reply: its reserves that wait for
     * the replicas (wait_replicas), for one WAIT after the last. */
    rop_t **wait_batch;
    rop_t doubt;   /* sentinel: reserves whose answer was lost with the connection */
    uint32_t ndoubt;
    uint32_t nops;             /* ops allocated and not freed: calls in flight, doubts */
    uint64_t doubt_retry_ms;   /* inv_worker_inflight's last inv__redis_doubt_flush (loop time) */
    inv_orphan_fn orphan;      /* at close: who gets the reserves still in doubt */
    void *orphan_ctx;
    bool is_closing;
    int open_handles;
    /* The RESP of a reserve up to its arguments (EVALSHA, the SHA, the key
     * count, the sale's 4 keys) is the same for every reserve of a sale: kept
     * for the last sale this worker reserved on (see op_format). */
    char pfx_sale[INV_SALE_ID_MAX + 1];
    size_t pfx_len; /* 0: none */
    char pfx[4 * (KEY_MAX + 16) + 96];
    /* Ops of finished calls, for the next ones (see inv__redis_op_new). */
    rop_t *free_ops;
    uint32_t nfree_ops;
};

static void conn_start(rconn_t *c);

/*
 * A reserve's op lives from its send until its reply, so a worker has a whole
 * pipeline of them (the connections' in-flight requests) allocated at once,
 * and a batch of replies frees them together: more than glibc's per-thread
 * cache holds per size (7), so most of them went through _int_malloc and
 * _int_free (~300 instructions a Redis order, callgrind; bench/README.md,
 * Redis). The worker keeps the ones it freed; the list is bounded, and emptied
 * once the worker closes (ops freed from then on go back to malloc).
 */
#define FREE_OPS_MAX 1024

static rop_t *inv__redis_op_new(rw_t *w)
{
    rop_t *op = w->free_ops;
    w->nops++;
    if (op) {
        w->free_ops = op->next;
        w->nfree_ops--;
        return op;
    }
    return cm_xmalloc(sizeof(*op));
}

static void inv__redis_op_free(rop_t *op)
{
    rw_t *w = op->w;
    w->nops--;
    if (w->is_closing || w->nfree_ops >= FREE_OPS_MAX) {
        free(op);
        return;
    }
    op->next = w->free_ops;
    w->free_ops = op;
    w->nfree_ops++;
}

static void inv__redis_free_ops_drain(rw_t *w)
{
    while (w->free_ops) {
        rop_t *op = w->free_ops;
        w->free_ops = op->next;
        free(op);
    }
    w->nfree_ops = 0;
}

static void rw_release(rw_t *w)
{
    if (--w->open_handles == 0) {
        free(w->conns);
        free(w);
    }
}

static void inv__redis_tick_closed(uv_handle_t *h)
{
    rw_release(h->data);
}

/*
 * A reserve's own time (inv_reserve_req_t.rtt_us): from the write that carried
 * it to the moment its reply reached this host, both on the wall clock; not
 * from the caller's request to the callback. The gateway's adaptive limit for
 * Redis reacts to it. Timed to the callback, it measured the gateway's own
 * loop on a busy machine: a command waits for the end of the iteration to be
 * written, its reply waits in the socket while the loop works, a batch's
 * callbacks run one after the other (25-40 ms against 1-3 ms in Redis), and
 * the limit fell to 6-24 with Redis idle (bench/README.md, Redis, finding 4).
 * An event loop cannot tell when bytes arrived; the kernel can: with
 * SO_TIMESTAMPNS a TCP socket stamps what it receives, and a 1-byte
 * recvmsg(MSG_PEEK) before hiredis reads returns the stamp of the unread data
 * (of the newest segment, when the kernel merged several while we did not
 * read: an upper bound for the older replies of the batch). One syscall per
 * read of a batch of replies, not per reply.
 */
static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Asks the kernel to stamp what the socket receives; best effort (no stamp: no sample). */
static void rx_stamps_on(int fd)
{
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
}

/* When the unread data of `fd` arrived (wall clock, µs), 0 if unknown. */
static uint64_t rx_stamp_us(int fd)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof(u.buf)};
    if (fd < 0 || recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT) <= 0)
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        }
    }
    return 0;
}

static void inv__redis_queue_send(rw_t *w);

/*
 * The prepare phase, just before the loop polls: the worker's queued reserves
 * go out (inv__redis_queue_send), and the connections' flushes
 * write everything queued in this iteration (inv__redis_rl_flush), so that is each new
 * op's send time. Ops are appended to the pending list as they are queued;
 * the walk stops at the first one already stamped (a resent op keeps its
 * first send).
 */
static void inv__redis_rw_send_cb(uv_prepare_t *h)
{
    rw_t *w = h->data;
    if (w->q_head)
        inv__redis_queue_send(w);
    if (w->pending.prev == &w->pending || w->pending.prev->sent_us)
        return;
    uint64_t now = wall_us();
    for (rop_t *op = w->pending.prev; op != &w->pending && !op->sent_us; op = op->prev)
        op->sent_us = now;
}

static void inv__redis_rw_read_stamp(struct rw *w, int fd)
{
    w->arrival_us = rx_stamp_us(fd);
}

static void op_rtt(const rop_t *op, inv_reserve_req_t *req)
{
    if (op->sent_us && op->w->arrival_us)
        req->rtt_us = op->w->arrival_us > op->sent_us ? op->w->arrival_us - op->sent_us : 0;
}

static void inv__redis_retry_closed(uv_handle_t *h)
{
    rconn_t *c = h->data;
    rw_release(c->w);
}

static void conn_retry_cb(uv_timer_t *t)
{
    conn_start(t->data);
}

/* Re-opens the connection after a backoff: 50 ms, doubling to 2 s, reset on success. */
static void conn_retry(rconn_t *c)
{
    if (c->w->is_closing)
        return;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    uv_timer_start(&c->retry, conn_retry_cb, c->backoff_ms, 0);
}

static void inv__redis_doubt_flush(rw_t *w);

/* A node lost or refusing: on a cluster its slots may have a new master. */
static void map_stale(rb_t *rb)
{
    if (!inv_cluster_enabled(rb->cl))
        return;
    inv_cluster_mark_stale(rb->cl);
    uv_async_send(&rb->map_async);
}

static void conn_on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        cm_log_debug("inv", "redis connect failed", "err=\"%s\"", ac->errstr);
        c->ac = NULL;
        c->is_up = false;
        if (!c->w->is_closing)
            map_stale(c->w->rb);
        conn_retry(c);
        return;
    }
    c->is_up = true;
    c->backoff_ms = 0;
    inv__redis_doubt_flush(c->w);
}

static void conn_on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn_t *c = ac->data;
    if (status != REDIS_OK && !c->w->is_closing)
        cm_log_warn("inv", "redis connection lost", "err=\"%s\"", ac->errstr);
    c->ac = NULL;
    c->is_up = false;
    if (!c->w->is_closing)
        map_stale(c->w->rb);
    conn_retry(c);
}

static void conn_start(rconn_t *c)
{
    if (c->w->is_closing || c->ac)
        return;
    c->ac = inv__redis_async_open(c->w->rb, c->node, c->w->loop, c, conn_on_connect,
                                  conn_on_disconnect);
    if (!c->ac)
        conn_retry(c);
    else {
        ((rl_events_t *)c->ac->ev.data)->w = c->w;
        rx_stamps_on(c->ac->c.fd);
    }
}

/* Sets up (once) and opens the pool of `node` on w's loop. */
static void inv__redis_node_open(rw_t *w, int node)
{
    for (uint32_t i = 0; i < w->rb->pool; i++) {
        rconn_t *c = &w->conns[(uint32_t)node * w->rb->pool + i];
        if (!c->is_inited) {
            c->w = w;
            c->node = node;
            uv_timer_init(w->loop, &c->retry);
            c->retry.data = c;
            c->is_inited = true;
            w->open_handles++;
            conn_start(c);
        }
    }
}

/*
 * A connection to `node` for one call: round robin over its pool, one that is
 * up first, else one still connecting (hiredis sends once it is up). With
 * up_only, only a connection that is up. NULL if none.
 */
static rconn_t *inv__redis_node_conn(rw_t *w, int node, bool up_only)
{
    if (node < 0 || (uint32_t)node >= w->nnodes)
        return NULL;
    inv__redis_node_open(w, node);
    uint32_t pool = w->rb->pool;
    rconn_t *base = &w->conns[(uint32_t)node * pool];
    for (int pass = 0; pass < (up_only ? 1 : 2); pass++) {
        for (uint32_t i = 0; i < pool; i++) {
            rconn_t *cand = &base[(w->rr + i) % pool];
            if (cand->ac && (cand->is_up || pass == 1)) {
                w->rr = (w->rr + i + 1) % pool;
                return cand;
            }
        }
    }
    return NULL;
}

/* The node that serves `slot` now (0 on a single Redis), or -1 (the map is then stale). */
static int inv__redis_slot_node(rb_t *rb, uint16_t slot)
{
    if (!inv_cluster_enabled(rb->cl))
        return 0;
    int n = inv_cluster_route(rb->cl, slot);
    if (n < 0)
        map_stale(rb);
    return n;
}

static uint16_t inv__redis_sale_slot(const char *sale_id)
{
    char key[KEY_MAX];
    inv__redis_sale_key(key, sale_id, "meta");
    return inv_cluster_key_slot(key, strlen(key));
}

/* The master of a sale as the map has it now (its breaker), 0 on a single Redis. */
static int inv__redis_sale_node(rb_t *rb, const char *sale_id)
{
    return inv_cluster_enabled(rb->cl) ? inv_cluster_route(rb->cl, inv__redis_sale_slot(sale_id))
                                       : 0;
}

/* The master an op was last sent to (its breaker), -1 if none. */
static int inv__redis_op_node(const rop_t *op)
{
    return op->conn ? op->conn->node : -1;
}

static void inv__redis_pending_add(rw_t *w, rop_t *op)
{
    op->prev = w->pending.prev;
    op->next = &w->pending;
    w->pending.prev->next = op;
    w->pending.prev = op;
}

static void pending_del(rop_t *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    op->prev = op->next = op;
}

/* Calls req->done exactly once and forgets the request; the op lives on until its reply. */
static void inv__redis_op_complete(rop_t *op, int outcome)
{
    inv_reserve_req_t *req = op->req;
    if (!req)
        return;
    op->req = NULL;
    pending_del(op);
    req->done(req, outcome);
}

/*
 * libuv runs timers before it polls: after this thread stood still past a
 * deadline (a busy machine, a long iteration), answers that came in time wait
 * unread in the sockets, and expiring at once would fail them, open the
 * breaker and release units that were sold (seen in the bench at load 20:
 * 60-85% fast 503s). Read what is there first; only calls still unanswered
 * time out.
 */
static void drain_replies(rw_t *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        rconn_t *c = &w->conns[i];
        if (c->ac && c->is_up) {
            inv__redis_rw_read_stamp(w, c->ac->c.fd);
            redisAsyncHandleRead(c->ac); /* may drop the context: c->ac is NULL then */
        }
    }
}

static void inv__redis_tick_cb(uv_timer_t *t)
{
    rw_t *w = t->data;
    uint64_t now = uv_now(w->loop);
    if (w->pending.next != &w->pending && w->pending.next->deadline <= now)
        drain_replies(w);
    while (w->pending.next != &w->pending && w->pending.next->deadline <= now) {
        inv__redis_br_failure(w->rb, inv__redis_op_node(w->pending.next));
        inv__redis_op_complete(w->pending.next, CM_ETIMEOUT);
    }
    if (w->pending.next != &w->pending && !w->is_closing)
        uv_timer_start(&w->tick, inv__redis_tick_cb, w->pending.next->deadline - now, 0);
}

static void inv__redis_reserve_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void inv__redis_wait_reply(redisAsyncContext *ac, void *reply, void *privdata);

/*
 * RESP written by hand: hiredis's argv formatter grows an sds argument by
 * argument (sdscatfmt, realloc) and our keys went through snprintf: together
 * ~17k instructions of the ~33k that a Redis order cost the gateway more than
 * a memory order (callgrind, bench/README.md). `need` counts past the end, so
 * a caller can retry with a buffer that fits (EVAL carries the script text).
 */
typedef struct resp {
    char *p;
    size_t cap, need;
} resp_t;

static void resp_put(resp_t *b, const char *s, size_t n)
{
    if (b->need + n <= b->cap)
        memcpy(b->p + b->need, s, n);
    b->need += n;
}

static void resp_num(resp_t *b, char tag, size_t v)
{
    char t[24];
    size_t i = sizeof(t);
    t[--i] = '\n';
    t[--i] = '\r';
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    t[--i] = tag;
    resp_put(b, t + i, sizeof(t) - i);
}

static void inv__redis_resp_arg(resp_t *b, const char *s, size_t n)
{
    resp_num(b, '$', n);
    resp_put(b, s, n);
    resp_put(b, "\r\n", 2);
}

/* The key "{sale:ID}:part" (inv__redis_sale_key's layout) as one argument. */
static void resp_key(resp_t *b, const char *sale_id, size_t idlen, const char *part)
{
    size_t plen = strlen(part);
    resp_num(b, '$', 6 + idlen + 2 + plen);
    resp_put(b, "{sale:", 6);
    resp_put(b, sale_id, idlen);
    resp_put(b, "}:", 2);
    resp_put(b, part, plen);
    resp_put(b, "\r\n", 2);
}

/* A script call up to its arguments: EVALSHA (EVAL with the text after
 * NOSCRIPT), the script, and the sale's 4 keys; nargs arguments follow. */
static void inv__redis_script_head(resp_t *b, const rb_t *rb, int sc, bool reloaded, size_t nargs,
                        const char *sale_id)
{
    static const char *const parts[4] = {"meta", "users", "orders", "idem"};
    const char *body = reloaded ? inv__redis_script_text[sc] : rb->sha[sc];
    resp_num(b, '*', 3 + 4 + nargs);
    if (reloaded)
        inv__redis_resp_arg(b, "EVAL", 4);
    else
        inv__redis_resp_arg(b, "EVALSHA", 7);
    inv__redis_resp_arg(b, body, strlen(body));
    inv__redis_resp_arg(b, "4", 1);
    size_t idlen = strlen(sale_id);
    for (int i = 0; i < 4; i++)
        resp_key(b, sale_id, idlen, parts[i]);
}

/* EVALSHA (EVAL after NOSCRIPT) of script sc with the sale's 4 keys; returns the length. */
static size_t op_format(const rop_t *op, int sc, char *buf, size_t cap)
{
    const char *args[4];
    int nargs = 0;
    if (sc == SC_RESERVE) { /* the sale id is in the keys: the script cuts it out of KEYS[1] */
        args[nargs++] = op->user_id;
        args[nargs++] = op->qty;
        args[nargs++] = op->idem_key;
        args[nargs++] = op->order_id;
    } else { /* SC_RELEASE (from a loop, always a give-back) or SC_CLAIM */
        args[nargs++] = op->order_id;
        args[nargs++] = op->user_id;
        args[nargs++] = op->sale_id;
        if (sc == SC_RELEASE)
            args[nargs++] = "1";
    }
    resp_t b = {buf, cap, 0};
    rw_t *w = op->w;
    bool cacheable = sc == SC_RESERVE && !op->is_reloaded;
    if (cacheable && w->pfx_len && strcmp(w->pfx_sale, op->sale_id) == 0) {
        /* a copy instead of ~15 formatted pieces: ~1k instructions a reserve (callgrind) */
        resp_put(&b, w->pfx, w->pfx_len);
    } else {
        inv__redis_script_head(&b, w->rb, sc, op->is_reloaded, (size_t)nargs, op->sale_id);
        if (cacheable && b.need <= b.cap && b.need <= sizeof(w->pfx)) {
            memcpy(w->pfx, buf, b.need);
            w->pfx_len = b.need;
            memcpy(w->pfx_sale, op->sale_id, strlen(op->sale_id) + 1);
        }
    }
    for (int i = 0; i < nargs; i++)
        inv__redis_resp_arg(&b, args[i], strlen(args[i]));
    return b.need;
}

/* The script an op runs: a reserve, its give-back, or a claim. */
static int op_script(const rop_t *op)
{
    return op->is_compensation ? SC_RELEASE : op->is_claim ? SC_CLAIM : SC_RESERVE;
}

static int inv__redis_op_send(rop_t *op, int sc)
{
    if (!op->conn || !op->conn->ac)
        return CM_EBACKEND;
    /* ASKING applies to the next command of this connection: both are queued
     * back to back on this loop, so nothing can come between them. */
    if (op->is_asking && redisAsyncCommand(op->conn->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return CM_EBACKEND;
    char stack[1024];
    char *buf = stack;
    size_t len = op_format(op, sc, stack, sizeof(stack));
    if (len > sizeof(stack)) { /* EVAL with the script's text: rare */
        buf = cm_xmalloc(len);
        op_format(op, sc, buf, len);
    }
    int rc = redisAsyncFormattedCommand(op->conn->ac, inv__redis_reserve_reply, op, buf, len);
    if (buf != stack)
        free(buf);
    return rc == REDIS_OK ? 0 : CM_EBACKEND;
}

/* strlcpy: the request's fields are NUL-terminated within their sizes already. */
static void inv__redis_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A uint32 in decimal, NUL-terminated, into 11+ bytes (no snprintf on the buy path). */
static void inv__redis_u32_text(uint32_t v, char *out)
{
    char t[10];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = t[n - 1 - i];
    out[n] = '\0';
}

static void inv__redis_doubt_add(rop_t *op);

/* A reserve that reserved after its caller was told "timed out": give the units back. */
static void op_compensate(rop_t *op)
{
    op->is_compensation = true;
    op->is_claim = false;
    op->is_reloaded = false;
    op->is_asking = false;
    op->redirects = 0;
    if (!op->w->is_closing && !op->conn->ac) /* elsewhere: whoever serves the sale now */
        op->conn = inv__redis_node_conn(op->w, inv__redis_slot_node(op->w->rb, op->slot), false);
    if (op->w->is_closing || !op->conn || inv__redis_op_send(op, SC_RELEASE) < 0) {
        /* sent once a connection is back; a closing worker hands it to its orphan callback */
        inv__redis_doubt_add(op);
        return;
    }
    /* Under overload this happens per request: debug only (the timeouts are
     * counted by the gateway's overload summary as drops). */
    cm_log_debug("inv", "releasing a reservation answered after its timeout", "sale=%s order=%s",
                 op->sale_id, op->order_id);
}

#define DOUBT_MAX 100000

static void inv__redis_doubt_add(rop_t *op)
{
    rw_t *w = op->w;
    if (w->ndoubt >= DOUBT_MAX) {
        cm_log_error("inv", "too many reserves with a lost answer; this one stays held",
                     "sale=%s order=%s", op->sale_id, op->order_id);
        inv__redis_op_free(op);
        return;
    }
    op->prev = w->doubt.prev;
    op->next = &w->doubt;
    w->doubt.prev->next = op;
    w->doubt.prev = op;
    w->ndoubt++;
}

/*
 * Sends a release for every reserve whose answer was lost, each on a
 * connection that is up to the master serving its sale now; the others wait
 * for the next connect.
 */
static void inv__redis_doubt_flush(rw_t *w)
{
    if (w->doubt.next == &w->doubt || w->is_closing)
        return;
    /* take the whole list: what cannot go now is put back on w->doubt */
    rop_t *head = w->doubt.next;
    w->doubt.prev->next = NULL;
    w->doubt.next = w->doubt.prev = &w->doubt;
    w->ndoubt = 0;
    uint32_t sent = 0;
    while (head) {
        rop_t *op = head;
        head = op->next;
        op->prev = op->next = op;
        op->conn = inv__redis_node_conn(w, inv__redis_slot_node(w->rb, op->slot), true);
        op->is_compensation = true;
        op->is_reloaded = false;
        op->is_asking = false;
        op->redirects = 0;
        if (!op->conn || inv__redis_op_send(op, SC_RELEASE) < 0)
            inv__redis_doubt_add(op); /* its master is not up: next time */
        else
            sent++;
    }
    if (sent)
        cm_log_warn("inv", "releasing reserves whose answer was lost with the connection",
                    "count=%u left=%u", sent, w->ndoubt);
}

/*
 * A MOVED or ASK reply: the script did not run there, so it is sent again
 * where the cluster says (at most INV_CLUSTER_REDIRECTS_MAX times). true if
 * it was sent; false leaves the reply to the caller as an error.
 */
static bool op_redirect(rop_t *op, const redisReply *r)
{
    rb_t *rb = op->w->rb;
    uint16_t slot;
    char host[256];
    int port;
    int kind = inv_cluster_redirect_parse(r->str, r->len, &slot, host, sizeof(host), &port);
    if (kind == INV_CLUSTER_REDIR_NONE || op->redirects >= INV_CLUSTER_REDIRECTS_MAX ||
        op->w->is_closing)
        return false;
    if (!op->req && !op->is_compensation)
        return false; /* timed out already, and it did not run: nothing to do */
    /* The node answered: its breaker hears a success (this may be the probe
     * its open breaker let through); what comes next is the new node's. */
    if (op->req)
        inv__redis_br_success(rb, inv__redis_op_node(op));
    op->redirects++;
    if (!host[0] && inv_cluster_node(rb->cl, op->conn->node, host, sizeof(host), &(int){0}) != 0)
        return false;
    int node;
    if (kind == INV_CLUSTER_REDIR_MOVED) {
        node = inv_cluster_moved(rb->cl, slot, host, port);
        map_stale(rb);
    } else {
        node = inv_cluster_intern(rb->cl, host, port);
    }
    rconn_t *c = inv__redis_node_conn(op->w, node, false);
    if (!c)
        return false;
    op->conn = c;
    op->is_asking = kind == INV_CLUSTER_REDIR_ASK;
    return inv__redis_op_send(op, op_script(op)) == 0;
}

/* An error reply that says "not run, try later" (a release is then kept for later). */
static bool inv__redis_is_retry_later(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "LOADING", 7) == 0 || inv_cluster_is_transient(r->str) ||
            strncmp(r->str, "MOVED", 5) == 0 || strncmp(r->str, "ASK", 3) == 0);
}

/*
 * The WAIT after a reserve (wait_replicas): enough replicas have it, so the
 * reserve is answered; else (too few in time, or the connection lost) the
 * caller hears "unavailable" and the units are given back: at once, or once a
 * connection is back. A keyed reserve too: a retry with its key that another
 * gateway of the fleet answered 202 for (gw_buy.c after_reserve) claimed the
 * order first, and the give-back leaves a claimed order held
 * (INV_REDIS_CLAIM).
 */
static void inv__redis_wait_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    const redisReply *r = reply;
    rop_t *op = privdata;
    rb_t *rb = op->w->rb;
    bool acked = r && r->type == REDIS_REPLY_INTEGER && r->integer >= (long long)rb->wait_replicas;
    if (acked && op->req) {
        inv_reserve_req_t *req = op->req;
        req->stock_left = op->w_left;
        req->user_units = op->w_units;
        op_rtt(op, req);
        if (req->stock_left == 0) {
            atomic_store(&req->sale->stock_left, 0);
            atomic_store_explicit(&req->sale->sold_out, true, memory_order_release);
        }
        inv__redis_op_complete(op, INV_RESERVED);
        inv__redis_op_free(op);
        return;
    }
    if (op->req) {
        inv__redis_br_failure(rb, inv__redis_op_node(op));
        inv__redis_op_complete(op, CM_EBACKEND);
    }
    if (!r || op->w->is_closing) { /* given back once a connection is back, or at close */
        inv__redis_doubt_add(op);
        return;
    }
    cm_log_debug("inv", "releasing a reserve the replicas did not confirm in time",
                 "sale=%s order=%s", op->sale_id, op->order_id);
    op_compensate(op);
}

static void inv__redis_reserve_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redisReply *r = reply;
    rop_t *op = privdata;
    rb_t *rb = op->w->rb;

    if (inv__redis_is_noscript(r) && !op->is_reloaded) {
        /* SCRIPT FLUSH, a restarted server or another master: EVAL loads it
         * again for everyone. */
        op->is_reloaded = true;
        op->is_asking = false;
        if (inv__redis_op_send(op, op_script(op)) == 0)
            return;
        r = NULL;
    }
    op->is_asking = false; /* ASKING covered one command */
    if (r && r->type == REDIS_REPLY_ERROR && op_redirect(op, r))
        return;
    if (op->is_claim) {
        /* A claim answered after its timeout, or lost with its connection,
         * may have set the mark: the order then stays held, and the client's
         * next retry with the key claims it again (a no-op) and spools it. */
        if (op->req) {
            int rc = CM_EBACKEND;
            if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
                rc = INV_RESERVED;
            else if (r && r->type == REDIS_REPLY_INTEGER && r->integer == CM_ENOTFOUND)
                rc = CM_ENOTFOUND;
            if (rc == CM_EBACKEND)
                inv__redis_br_failure(rb, inv__redis_op_node(op));
            else
                inv__redis_br_success(rb, inv__redis_op_node(op));
            op_rtt(op, op->req);
            inv__redis_op_complete(op, rc);
        }
        inv__redis_op_free(op);
        return;
    }
    if (!r) {
        /* Sent, then the connection went away (Redis killed or restarted, or
         * the worker closing): Redis may have run it, and with AOF kept it,
         * with no one to hold the order. The caller hears "unavailable"; the
         * release is sent once a connection is back (a no-op if it never
         * reserved), or at close handed to the orphan callback. With an
         * idempotency key a retry may have claimed the order meanwhile: the
         * give-back then leaves it held (INV_REDIS_CLAIM). */
        if (op->req) {
            inv__redis_br_failure(rb, inv__redis_op_node(op));
            inv__redis_op_complete(op, CM_EBACKEND);
        }
        inv__redis_doubt_add(op);
        return;
    }
    if (op->is_compensation) {
        if (inv__redis_is_retry_later(r)) {
            /* a restarted Redis still reading its AOF, a cluster between
             * masters: again later */
            inv__redis_doubt_add(op);
            return;
        }
        if (!r || r->type == REDIS_REPLY_ERROR)
            cm_log_error("inv", "late reservation could not be released", "sale=%s order=%s",
                         op->sale_id, op->order_id);
        inv__redis_op_free(op);
        return;
    }
    reserve_ans_t ans;
    bool ok = inv__redis_reserve_parse(r, &ans);
    int code = ok ? ans.code : -1;

    if (!op->req) { /* timed out before: the answer is news only if it took units */
        if (ok && code == INV_RESERVED)
            op_compensate(op);
        else
            inv__redis_op_free(op);
        return;
    }
    if (!ok) {
        if (r && r->type == REDIS_REPLY_ERROR)
            cm_log_error("inv", "redis reserve error", "err=\"%s\"", r->str);
        inv__redis_br_failure(rb, inv__redis_op_node(op));
        inv__redis_op_complete(op, CM_EBACKEND);
        inv__redis_op_free(op);
        return;
    }
    inv__redis_br_success(rb, inv__redis_op_node(op));
    if (code == INV_RESERVED && rb->wait_replicas) {
        /* the answer waits until the replicas have the write */
        op->w_left = ans.left;
        op->w_units = (uint32_t)ans.units;
        if (op->w->wait_batch) { /* a batch's reply: one WAIT for all of it (inv__redis_batch_each)
                                  */
            op->qnext = *op->w->wait_batch;
            *op->w->wait_batch = op;
            return;
        }
        if (redisAsyncCommand(op->conn->ac, inv__redis_wait_reply, op, "WAIT %u %u",
                              rb->wait_replicas, rb->timeout_ms) == REDIS_OK)
            return;
        inv__redis_op_complete(op, CM_EBACKEND);
        inv__redis_doubt_add(op);
        return;
    }
    inv_reserve_req_t *req = op->req;
    op_rtt(op, req);
    req->stock_left = ans.left;
    req->user_units = (uint32_t)ans.units;
    if (code == INV_DUPLICATE && r) { /* r: parsed (the analyzer loses that across calls) */
        snprintf(req->order_id, sizeof(req->order_id), "%.*s", (int)r->element[3]->len,
                 r->element[3]->str);
        req->qty = (uint32_t)r->element[4]->integer;
        req->claimed = ans.claimed;
    }
    if ((code == INV_RESERVED || code == INV_SOLD_OUT) && req->stock_left == 0) {
        /* This gateway knows at once; the others learn from the script's PUBLISH. */
        atomic_store(&req->sale->stock_left, 0);
        atomic_store_explicit(&req->sale->sold_out, true, memory_order_release);
    }
    inv__redis_op_complete(op, code);
    inv__redis_op_free(op);
}

/*---- Batches: a sale's reserves of one loop iteration in one script call ----*/

/*
 * op_start queues a reserve instead of sending it; the worker's prepare
 * handle (inv__redis_rw_send_cb, once per iteration, just before the loop polls) sends
 * the queue: consecutive reserves of one sale, up to rb->batch, as one
 * EVALSHA of INV_REDIS_LUA_RESERVE_BATCH, a lone one as the plain reserve.
 * The reserves waited for the end of the iteration before too (the flush is in
 * the prepare phase), so a batch adds no latency. What changes is the reply:
 * one array for the batch, whose elements go to inv__redis_reserve_reply one by one, so
 * each op is handled exactly as if it had been sent alone. A batch that did
 * not run (NOSCRIPT: sent again as EVAL; MOVED, ASK, LOADING, a cluster in
 * transit: each op follows it alone) or whose fate is unknown (the connection
 * lost, a script error, a reply of the wrong shape: each op's caller hears
 * "unavailable" and its units are given back, a no-op for a reserve that did
 * not run) ends as the ops would have alone.
 */
typedef struct rbatch {
    rw_t *w;
    rconn_t *conn;
    rop_t *ops; /* linked by qnext, in ARGV order */
    uint32_t n;
    bool is_reloaded; /* sent again as EVAL after NOSCRIPT */
} rbatch_t;

static void batch_reply(redisAsyncContext *ac, void *reply, void *privdata);

static size_t batch_format(const rbatch_t *b, char *buf, size_t cap)
{
    resp_t o = {buf, cap, 0};
    inv__redis_script_head(&o, b->w->rb, SC_RESERVE_BATCH, b->is_reloaded, 4 * (size_t)b->n,
                b->ops->sale_id);
    for (const rop_t *op = b->ops; op; op = op->qnext) {
        inv__redis_resp_arg(&o, op->user_id, strlen(op->user_id));
        inv__redis_resp_arg(&o, op->qty, strlen(op->qty));
        inv__redis_resp_arg(&o, op->idem_key, strlen(op->idem_key));
        inv__redis_resp_arg(&o, op->order_id, strlen(op->order_id));
    }
    return o.need;
}

static int batch_send(rbatch_t *b)
{
    if (!b->conn->ac)
        return CM_EBACKEND;
    char stack[8192];
    char *buf = stack;
    size_t len = batch_format(b, stack, sizeof(stack));
    if (len > sizeof(stack)) {
        buf = cm_xmalloc(len);
        batch_format(b, buf, len);
    }
    int rc = redisAsyncFormattedCommand(b->conn->ac, batch_reply, b, buf, len);
    if (buf != stack)
        free(buf);
    return rc == REDIS_OK ? 0 : CM_EBACKEND;
}

/* Ops that never left, linked by qnext: each caller hears "unavailable" (nothing ran in Redis). */
static void ops_unsent(rop_t *op)
{
    while (op) {
        rop_t *next = op->qnext;
        op->qnext = NULL;
        if (op->req) {
            inv__redis_br_failure(op->w->rb, inv__redis_op_node(op));
            inv__redis_op_complete(op, CM_EBACKEND);
        }
        inv__redis_op_free(op);
        op = next;
    }
}

/* One WAIT's reply for every reserve of a batch that waited for it: each hears
 * it as if the WAIT had been its own (inv__redis_wait_reply). */
static void wait_batch_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rop_t *op = privdata;
    while (op) {
        rop_t *next = op->qnext;
        op->qnext = NULL;
        inv__redis_wait_reply(ac, reply, op);
        op = next;
    }
}

/*
 * Hands each op of b its part of the reply r (the whole r for each when r is
 * not the batch's array), then frees b. inv__redis_reserve_reply may free an op. With
 * wait_replicas, the reserves it took wait for one WAIT sent after the last
 * (WAIT counts the replicas that have every write this connection made before
 * it): one command a batch instead of one a reserve.
 */
static void inv__redis_batch_each(redisAsyncContext *ac, rbatch_t *b, redisReply *r, bool split)
{
    rw_t *w = b->w;
    rconn_t *c = b->conn;
    rop_t *waiting = NULL;
    w->wait_batch = &waiting;
    rop_t *op = b->ops;
    for (uint32_t i = 0; op; i++) {
        rop_t *next = op->qnext;
        op->qnext = NULL;
        inv__redis_reserve_reply(ac, split && r ? r->element[i] : r, op);
        op = next;
    }
    w->wait_batch = NULL;
    free(b);
    if (!waiting)
        return;
    if (c->ac && redisAsyncCommand(c->ac, wait_batch_reply, waiting, "WAIT %u %u",
                                   w->rb->wait_replicas, w->rb->timeout_ms) == REDIS_OK)
        return;
    while (waiting) { /* as inv__redis_reserve_reply does when its WAIT cannot be sent */
        op = waiting;
        waiting = op->qnext;
        op->qnext = NULL;
        inv__redis_op_complete(op, CM_EBACKEND);
        inv__redis_doubt_add(op);
    }
}

static void batch_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    rbatch_t *b = privdata;
    if (inv__redis_is_noscript(r) && !b->is_reloaded) {
        b->is_reloaded = true;
        if (batch_send(b) == 0)
            return;
        r = NULL;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == b->n) {
        inv__redis_batch_each(ac, b, r, true);
        return;
    }
    if (r && r->type == REDIS_REPLY_ERROR && inv__redis_is_retry_later(r)) {
        inv__redis_batch_each(ac, b, r, false); /* did not run: a redirect each, or an error each */
        return;
    }
    if (r)
        cm_log_error("inv", "redis batch reserve error; its reserves are given back",
                     "reserves=%u err=\"%.*s\"", b->n,
                     r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
                     r->type == REDIS_REPLY_ERROR ? r->str : "");
    /* The fate of each reserve is unknown (the script may have stopped half
     * way): as with a lost connection, "unavailable" and a give-back each. */
    inv__redis_batch_each(ac, b, NULL, false);
}

/* Sends n queued ops of one sale, starting at head, linked by qnext. */
static void batch_go(rw_t *w, rop_t *head, uint32_t n)
{
    rconn_t *c = head->conn;
    if (!c || !c->ac)
        c = inv__redis_node_conn(w, inv__redis_slot_node(w->rb, head->slot), false);
    if (!c) {
        ops_unsent(head);
        return;
    }
    for (rop_t *op = head; op; op = op->qnext)
        op->conn = c;
    if (n == 1) {
        if (inv__redis_op_send(head, SC_RESERVE) < 0)
            ops_unsent(head);
        return;
    }
    rbatch_t *b = cm_xmalloc(sizeof(*b));
    *b = (rbatch_t){.w = w, .conn = c, .ops = head, .n = n};
    if (batch_send(b) < 0) {
        free(b);
        ops_unsent(head);
    }
}

/*
 * Sends the worker's queue: runs of one sale in batches. An op whose caller
 * heard its timeout while it waited here (an iteration longer than the
 * timeout) is dropped unsent. Then the connections' output is written now:
 * a flush handle started from this prepare phase would run only in the next
 * iteration, after the loop has slept.
 */
static void inv__redis_queue_send(rw_t *w)
{
    rop_t *op = w->q_head;
    w->q_head = w->q_tail = NULL;
    while (op) {
        rop_t *head = NULL, *tail = NULL;
        uint32_t n = 0;
        while (op && n < w->rb->batch && (!head || strcmp(op->sale_id, head->sale_id) == 0)) {
            rop_t *next = op->qnext;
            op->qnext = NULL;
            if (!op->req) {
                inv__redis_op_free(op);
            } else {
                if (tail)
                    tail->qnext = op;
                else
                    head = op;
                tail = op;
                n++;
            }
            op = next;
        }
        if (head)
            batch_go(w, head, n);
    }
    for (uint32_t i = 0; i < w->nconns; i++) {
        rconn_t *c = &w->conns[i];
        if (c->ac && (c->ac->c.flags & REDIS_CONNECTED)) {
            rl_events_t *p = c->ac->ev.data;
            if (uv_is_active((uv_handle_t *)&p->flush))
                inv__redis_rl_flush(&p->flush);
        }
    }
}


/* sc: SC_RESERVE, or SC_RESERVE_ONCE (inv_reserve_once) */
static int sync_reserve(rw_t *w, inv_reserve_req_t *req, int sc)
{
    rb_t *rb = w->rb;
    int node = inv__redis_sale_node(rb, req->sale->sale_id);
    if (!inv__redis_br_allow(rb, node))
        return CM_EBACKEND;
    if (!w->sync)
        w->sync = inv_cluster_sync_new(rb->cl, rb->timeout_ms);
    char qty[12];
    snprintf(qty, sizeof(qty), "%u", req->qty);
    const char *args[4] = {req->user_id, qty, req->idem_key, req->order_id};
    int err = 0;
    redisReply *r = inv__redis_sync_eval(w->sync, rb, sc, req->sale->sale_id, 4, 4, args, &err);
    if (!r) {
        inv__redis_br_failure(rb, node);
        return err;
    }
    int rc = CM_EBACKEND;
    reserve_ans_t ans;
    if (inv__redis_reserve_parse(r, &ans)) {
        rc = ans.code;
        req->stock_left = ans.left;
        req->user_units = (uint32_t)ans.units;
        if (ans.code == INV_DUPLICATE) {
            snprintf(req->order_id, sizeof(req->order_id), "%.*s", (int)r->element[3]->len,
                     r->element[3]->str);
            req->qty = (uint32_t)r->element[4]->integer;
            req->claimed = ans.claimed;
        }
        if ((ans.code == INV_RESERVED || ans.code == INV_SOLD_OUT) && ans.left == 0) {
            atomic_store(&req->sale->stock_left, 0);
            atomic_store(&req->sale->sold_out, true);
        }
    }
    freeReplyObject(r);
    if (rc < 0)
        inv__redis_br_failure(rb, node);
    else
        inv__redis_br_success(rb, node);
    return rc;
}

static int op_start(rw_t *w, inv_reserve_req_t *req, bool is_claim);

/* inv_flush: the prepare phase's work (inv__redis_rw_send_cb), for a loop that runs libuv
 * inside its own and calls this at the end of each iteration. */
static void inv__redis_flush(inv_worker_t *wk)
{
    rw_t *w = wk->backend;
    if (w->loop)
        inv__redis_rw_send_cb(&w->send_prep);
}

static int inv__redis_reserve(inv_worker_t *wk, inv_reserve_req_t *req)
{
    rw_t *w = wk->backend;
    /* Known sold out and no key to look up: answer from the flag (as the memory backend does). */
    if (req->idem_key[0] == '\0' &&
        atomic_load_explicit(&req->sale->sold_out, memory_order_acquire)) {
        req->stock_left = 0;
        return INV_SOLD_OUT;
    }
    if (!w->loop)
        return sync_reserve(w, req, SC_RESERVE);
    if (w->ndoubt)
        inv__redis_doubt_flush(w); /* e.g. Redis answered LOADING when the connection came back */
    if (!req->done)
        return CM_EINVAL;
    return op_start(w, req, false);
}

/* Sends req's reserve (or claim) on w's loop; INV_PENDING or CM_EBACKEND
 * (also at once while the breaker of the sale's master is open). */
static int op_start(rw_t *w, inv_reserve_req_t *req, bool is_claim)
{
    rb_t *rb = w->rb;
    /* The sale's master (the only node on a single Redis): round robin over
     * its connected contexts; one still connecting will do too (hiredis sends
     * once the connect completes). */
    uint16_t slot = inv_cluster_enabled(rb->cl) ? inv__redis_sale_slot(req->sale->sale_id) : 0;
    int node = inv__redis_slot_node(rb, slot);
    if (!inv__redis_br_allow(rb, node))
        return CM_EBACKEND;
    rconn_t *c = inv__redis_node_conn(w, node, false);
    if (!c) {
        inv__redis_br_failure(rb, node);
        return CM_EBACKEND;
    }
    /* malloc, not calloc: glibc's calloc skips the per-thread cache and clears
     * the ~450 bytes; only the fields before the strings need zeroing (the
     * strings are all copied below). ~1k instructions a Redis order (callgrind). */
    rop_t *op = inv__redis_op_new(w);
    memset(op, 0, offsetof(rop_t, sale_id));
    op->w = w;
    op->conn = c;
    op->req = req;
    op->slot = slot;
    op->is_claim = is_claim;
    inv__redis_copy_str(op->sale_id, sizeof(op->sale_id), req->sale->sale_id);
    inv__redis_copy_str(op->user_id, sizeof(op->user_id), req->user_id);
    inv__redis_u32_text(req->qty, op->qty);
    inv__redis_copy_str(op->idem_key, sizeof(op->idem_key), req->idem_key);
    inv__redis_copy_str(op->order_id, sizeof(op->order_id), req->order_id);
    if (!is_claim && rb->batch > 1) {
        /* sent from the prepare phase with the iteration's other reserves */
        op->qnext = NULL;
        if (w->q_tail)
            w->q_tail->qnext = op;
        else
            w->q_head = op;
        w->q_tail = op;
    } else if (inv__redis_op_send(op, is_claim ? SC_CLAIM : SC_RESERVE) < 0) {
        inv__redis_op_free(op);
        inv__redis_br_failure(rb, node);
        return CM_EBACKEND;
    }
    op->deadline = uv_now(w->loop) + rb->timeout_ms;
    bool was_empty = w->pending.next == &w->pending;
    inv__redis_pending_add(w, op);
    if (was_empty)
        uv_timer_start(&w->tick, inv__redis_tick_cb, rb->timeout_ms, 0);
    return INV_PENDING;
}

/* inv_reserve_once: a blocking call (a loop-less handle: the lottery thread's). */
static int inv__redis_reserve_once(inv_worker_t *wk, inv_reserve_req_t *req)
{
    rw_t *w = wk->backend;
    if (w->loop)
        return CM_EINVAL;
    return sync_reserve(w, req, SC_RESERVE_ONCE);
}

static int inv__redis_claim(inv_worker_t *wk, inv_reserve_req_t *req)
{
    rw_t *w = wk->backend;
    rb_t *rb = w->rb;
    if (w->loop) {
        if (!req->done)
            return CM_EINVAL;
        return op_start(w, req, true);
    }
    int node = inv__redis_sale_node(rb, req->sale->sale_id);
    if (!inv__redis_br_allow(rb, node))
        return CM_EBACKEND;
    if (!w->sync)
        w->sync = inv_cluster_sync_new(rb->cl, rb->timeout_ms);
    const char *args[3] = {req->order_id, req->user_id, req->sale->sale_id};
    int err = 0;
    redisReply *r =
        inv__redis_sync_eval(w->sync, rb, SC_CLAIM, req->sale->sale_id, 4, 3, args, &err);
    if (!r) {
        inv__redis_br_failure(rb, node);
        return err;
    }
    int rc = r->type != REDIS_REPLY_INTEGER ? CM_EBACKEND
             : r->integer == 0               ? INV_RESERVED
             : r->integer == CM_ENOTFOUND    ? CM_ENOTFOUND
                                             : CM_EBACKEND;
    freeReplyObject(r);
    if (rc == CM_EBACKEND)
        inv__redis_br_failure(rb, node);
    else
        inv__redis_br_success(rb, node);
    return rc;
}

static int inv__redis_worker_open(inv_t *inv, struct uv_loop_s *loop, inv_worker_t *wk)
{
    rb_t *rb = inv->backend;
    rw_t *w = cm_xcalloc(1, sizeof(*w));
    w->rb = rb;
    w->loop = loop;
    w->pending.next = w->pending.prev = &w->pending;
    w->doubt.next = w->doubt.prev = &w->doubt;
    wk->backend = w;
    if (!loop)
        return 0; /* connects on first use */
    /* a pool per node; on a cluster, opened when a sale is first routed there */
    w->nnodes = inv_cluster_enabled(rb->cl) ? INV_CLUSTER_NODES_MAX : 1;
    w->nconns = w->nnodes * rb->pool;
    w->conns = cm_xcalloc(w->nconns, sizeof(*w->conns));
    uv_timer_init(loop, &w->tick);
    w->tick.data = w;
    uv_prepare_init(loop, &w->send_prep);
    w->send_prep.data = w;
    uv_prepare_start(&w->send_prep, inv__redis_rw_send_cb);
    w->open_handles = 2;
    if (!inv_cluster_enabled(rb->cl))
        inv__redis_node_open(w, 0);
    return 0;
}

/* inv_worker_inflight: every op not freed (sent and unanswered, or in doubt). */
static size_t inv__redis_worker_inflight(inv_worker_t *wk)
{
    rw_t *w = wk->backend;
    if (!w || !w->loop)
        return 0;
    /* doubts wait for a connect; one that is up already gets them now (at
     * most every 100 ms: a Redis still LOADING answers each "later") */
    uint64_t now = uv_now(w->loop);
    if (w->ndoubt && now - w->doubt_retry_ms >= 100) {
        w->doubt_retry_ms = now;
        inv__redis_doubt_flush(w);
    }
    return w->nops;
}

static void inv__redis_worker_close(inv_worker_t *wk)
{
    rw_t *w = wk->backend;
    wk->backend = NULL;
    if (!w)
        return;
    if (!w->loop) {
        inv_cluster_sync_free(w->sync);
        free(w);
        return;
    }
    w->orphan = wk->orphan;
    w->orphan_ctx = wk->orphan_ctx;
    w->is_closing = true;
    rop_t *queued = w->q_head; /* never sent */
    w->q_head = w->q_tail = NULL;
    ops_unsent(queued);
    inv__redis_free_ops_drain(w);
    /* Freeing a context calls every callback still pending with a NULL reply:
     * the pending requests complete with CM_EBACKEND, and the ops are freed,
     * or, a reserve or give-back whose outcome is now unknown, put in doubt. */
    for (uint32_t i = 0; i < w->nconns; i++) {
        rconn_t *c = &w->conns[i];
        if (c->ac) {
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            c->is_up = false;
            redisAsyncFree(ac);
        }
    }
    while (w->pending.next != &w->pending)
        inv__redis_op_complete(w->pending.next, CM_EBACKEND); /* cannot happen; belt and braces */
    if (w->ndoubt && w->orphan)
        cm_log_warn("inv", "closing with reserves whose outcome is unknown; giving them back",
                    "count=%u", w->ndoubt);
    else if (w->ndoubt)
        cm_log_warn("inv", "closing with reserves whose answer was lost; they stay held",
                    "count=%u", w->ndoubt);
    while (w->doubt.next != &w->doubt) {
        rop_t *op = w->doubt.next;
        /* Unlinked before it is freed; the analyzer loses track of the sentinel
         * list across redisAsyncFree's callbacks above (inv__redis_doubt_add frees only ops
         * it does not link). */
        op->prev->next = op->next; // NOLINT(clang-analyzer-unix.Malloc)
        op->next->prev = op->prev;
        if (w->orphan)
            w->orphan(w->orphan_ctx, op->sale_id, op->user_id,
                      (uint32_t)strtoul(op->qty, NULL, 10), op->order_id);
        w->nops--;
        free(op); /* closing: inv__redis_op_free would too */
    }
    w->ndoubt = 0;
    for (uint32_t i = 0; i < w->nconns; i++) {
        if (!w->conns[i].is_inited)
            continue;
        uv_timer_stop(&w->conns[i].retry);
        uv_close((uv_handle_t *)&w->conns[i].retry, inv__redis_retry_closed);
    }
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, inv__redis_tick_closed);
    uv_prepare_stop(&w->send_prep);
    uv_close((uv_handle_t *)&w->send_prep, inv__redis_tick_closed);
}

/*---- The sync thread: subscriber + poll → local views ----*/

/*
 * The subscriber is asynchronous (any node: a cluster forwards every PUBLISH
 * to all its nodes); the re-reads are blocking calls through the routed
 * client, on this thread only, so each sale is read from its own master.
 */

/* true if sale_id is in the index (or the index cannot be read: keep the sale). */
static bool in_index(rb_t *rb, const char *sale_id)
{
    int err = 0;
    redisReply *r = inv_cluster_sync_cmd(rb->query, INV_REDIS_INDEX, &err, "SISMEMBER %s %s",
                                         INV_REDIS_INDEX, sale_id);
    bool in = !r || r->type != REDIS_REPLY_INTEGER || r->integer != 0;
    if (r)
        freeReplyObject(r);
    return in;
}

/*
 * Re-reads one sale into the local view. false after a transport failure.
 * A sale without meta is being created (the index is written first) or was
 * deleted (the index entry goes after the keys): only a sale missing from
 * both is taken out of the local view; `listed` says the index was just read.
 */
static bool refresh_sale(rb_t *rb, const char *sale_id, size_t len, bool listed)
{
    if (rb->stopping || len == 0 || len > INV_SALE_ID_MAX)
        return true;
    char id[INV_SALE_ID_MAX + 1];
    memcpy(id, sale_id, len);
    id[len] = '\0';
    if (!inv_id_valid(id, len, INV_SALE_ID_MAX))
        return true;
    int err = 0;
    /*
     * The read and its publish under admin_mu, as an admin change holds it
     * around its script and its own publish: else a read taken before a
     * release, published after the release's, put the stale "sold out" back
     * (the release's news corrects it one round trip later; seen under ASan
     * in unit.inv_redis). The lock is held for one small script (two when
     * the sale is gone).
     */
    pthread_mutex_lock(&rb->admin_mu);
    /* quiet: the sync thread retries every second while Redis is away */
    redisReply *r = inv__redis_sync_eval_log(rb->query, rb, SC_READ, id, 3, 0, NULL, &err, true);
    if (!r) {
        pthread_mutex_unlock(&rb->admin_mu);
        return false;
    }
    inv_sale_info_t info;
    int rc = inv__redis_parse_state(r, id, &info);
    freeReplyObject(r);
    if (rc == 0)
        inv__redis_publish_local(rb, &info);
    else if (rc == CM_ENOTFOUND && !listed && !in_index(rb, id)) /* deleted by the fleet */
        inv__sale_remove(rb->inv, id);
    pthread_mutex_unlock(&rb->admin_mu);
    return true;
}

/* Re-reads every sale of the index; stops at the first transport failure. */
static void refresh_all(rb_t *rb)
{
    if (rb->stopping)
        return;
    int err = 0;
    redisReply *r = inv_cluster_sync_cmd(rb->query, INV_REDIS_INDEX, &err, "SMEMBERS %s",
                                         INV_REDIS_INDEX);
    if (!r)
        return;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            !refresh_sale(rb, r->element[i]->str, r->element[i]->len, true))
            break;
    freeReplyObject(r);
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    rb_t *rb = ac->data;
    redisReply *r = reply;
    if (!r || rb->stopping || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    if (r->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(r->element[0]->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
        (void)refresh_sale(rb, r->element[2]->str, r->element[2]->len, false);
    else if (strcmp(r->element[0]->str, "subscribe") == 0)
        /* Changes announced before the subscription took effect were missed: re-read all. */
        refresh_all(rb);
}

static void sync_on_connect(const redisAsyncContext *ac, int status)
{
    rb_t *rb = ac->data;
    if (status != REDIS_OK && ac == rb->sub)
        rb->sub = NULL;
}

static void sync_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    rb_t *rb = ac->data;
    if (ac == rb->sub)
        rb->sub = NULL;
}

static void sync_connect_all(rb_t *rb)
{
    if (rb->stopping || rb->sub)
        return;
    /* a node the map believes in; the next one after a failure */
    int node = inv_cluster_enabled(rb->cl) ? inv_cluster_any(rb->cl, rb->sub_rr++) : 0;
    if (node < 0)
        return;
    rb->sub = inv__redis_async_open(rb, node, &rb->sloop, rb, sync_on_connect, sync_on_disconnect);
    if (rb->sub)
        redisAsyncCommand(rb->sub, on_message, NULL, "SUBSCRIBE %s", INV_REDIS_CHANNEL);
}

static void map_check(rb_t *rb);

static void poll_cb(uv_timer_t *t)
{
    rb_t *rb = t->data;
    map_check(rb);
    sync_connect_all(rb);
    refresh_all(rb);
}

/* Re-reads a stale cluster map (a worker saw MOVED or lost a node). */
static void map_check(rb_t *rb)
{
    if (rb->stopping || !inv_cluster_take_stale(rb->cl))
        return;
    char why[256];
    if (inv_cluster_refresh(rb->cl, why, sizeof(why)) != 0) {
        cm_log_warn("inv", "redis cluster map refresh failed", "err=\"%s\"", why);
        inv_cluster_mark_stale(rb->cl); /* again at the next tick */
    }
}

static void map_timer_cb(uv_timer_t *t)
{
    map_check(t->data);
}

static void map_async_cb(uv_async_t *a)
{
    /* at most one refresh per MAP_CHECK_MS however many workers call */
    rb_t *rb = a->data;
    if (!uv_is_active((uv_handle_t *)&rb->map_timer) && !rb->stopping)
        uv_timer_start(&rb->map_timer, map_timer_cb, MAP_CHECK_MS, 0);
}

static void stop_cb(uv_async_t *a)
{
    rb_t *rb = a->data;
    rb->stopping = true;
    uv_timer_stop(&rb->poll_timer);
    uv_close((uv_handle_t *)&rb->poll_timer, NULL);
    uv_timer_stop(&rb->map_timer);
    uv_close((uv_handle_t *)&rb->map_timer, NULL);
    uv_close((uv_handle_t *)&rb->map_async, NULL);
    uv_close((uv_handle_t *)&rb->stop_async, NULL);
    if (rb->sub) {
        redisAsyncContext *ac = rb->sub;
        rb->sub = NULL;
        redisAsyncFree(ac);
    }
}

static void sync_thread(void *arg)
{
    rb_t *rb = arg;
    uv_run(&rb->sloop, UV_RUN_DEFAULT);
}

static int inv__redis_sync_start(rb_t *rb)
{
    if (uv_loop_init(&rb->sloop) != 0)
        return CM_EBACKEND;
    rb->query = inv_cluster_sync_new(rb->cl, rb->admin_timeout_ms);
    uv_async_init(&rb->sloop, &rb->stop_async, stop_cb);
    rb->stop_async.data = rb;
    uv_async_init(&rb->sloop, &rb->map_async, map_async_cb);
    rb->map_async.data = rb;
    uv_timer_init(&rb->sloop, &rb->map_timer);
    rb->map_timer.data = rb;
    uv_timer_init(&rb->sloop, &rb->poll_timer);
    rb->poll_timer.data = rb;
    uv_timer_start(&rb->poll_timer, poll_cb, POLL_MS, POLL_MS);
    sync_connect_all(rb);
    if (uv_thread_create(&rb->thr, sync_thread, rb) != 0) {
        stop_cb(&rb->stop_async);
        uv_run(&rb->sloop, UV_RUN_DEFAULT);
        uv_loop_close(&rb->sloop);
        return CM_EBACKEND;
    }
    rb->thr_started = true;
    return 0;
}

static void inv__redis_sync_stop(rb_t *rb)
{
    if (!rb->thr_started)
        return;
    uv_async_send(&rb->stop_async);
    uv_thread_join(&rb->thr);
    uv_run(&rb->sloop, UV_RUN_DEFAULT); /* any close callbacks left */
    uv_loop_close(&rb->sloop);
    rb->thr_started = false;
}

/*---- URL ----*/

static int parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return CM_EINVAL;
    *out = (uint32_t)x;
    return 0;
}

static int parse_url(rb_t *rb, const char *url, char *errbuf, size_t errlen)
{
    cm_redis_url_t u;
    char why[200];
    if (cm_redis_url_parse(url, &u, why, sizeof(why)) != 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: %s", why);
        return CM_EINVAL;
    }
    rb->addr = u;
    char *query = u.query[0] ? u.query : NULL;

    rb->pool = INV_REDIS_POOL_DEFAULT;
    rb->batch = INV_REDIS_BATCH_DEFAULT;
    rb->timeout_ms = INV_REDIS_TIMEOUT_MS_DEFAULT;
    rb->admin_timeout_ms = 2000;
    rb->br_failures = 5;
    rb->br_cooldown_ms = 250;
    static const struct {
        const char *name;
        size_t off;
        uint32_t min, max;
    } params[] = {
        {"pool", offsetof(rb_t, pool), 1, 64},
        {"batch", offsetof(rb_t, batch), 1, INV_REDIS_BATCH_MAX},
        {"timeout_ms", offsetof(rb_t, timeout_ms), 1, 60000},
        {"admin_timeout_ms", offsetof(rb_t, admin_timeout_ms), 1, 60000},
        {"breaker_failures", offsetof(rb_t, br_failures), 1, 1000},
        {"breaker_cooldown_ms", offsetof(rb_t, br_cooldown_ms), 1, 60000},
        {"wait_replicas", offsetof(rb_t, wait_replicas), 0, 16},
    };
    char *save = NULL;
    for (char *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            cm_errbuf_set(errbuf, errlen, "inventory: redis url: '%s' wants key=value", kv);
            return CM_EINVAL;
        }
        *eq = '\0';
        size_t i;
        for (i = 0; i < sizeof(params) / sizeof(params[0]); i++)
            if (strcmp(kv, params[i].name) == 0)
                break;
        if (i == sizeof(params) / sizeof(params[0])) {
            cm_errbuf_set(errbuf, errlen,
                    "inventory: redis url: unknown parameter '%s' (pool, batch, timeout_ms, "
                    "admin_timeout_ms, breaker_failures, breaker_cooldown_ms, wait_replicas)",
                    kv);
            return CM_EINVAL;
        }
        uint32_t *dst = (uint32_t *)((char *)rb + params[i].off);
        if (parse_u32(eq + 1, params[i].min, params[i].max, dst) < 0) {
            cm_errbuf_set(errbuf, errlen, "inventory: redis url: %s=%s must be between %u and %u",
                          kv, eq + 1, params[i].min, params[i].max);
            return CM_EINVAL;
        }
    }
    /* the configuration's values win over the URL's */
    if (rb->inv->redis_pool)
        rb->pool = rb->inv->redis_pool;
    if (rb->inv->redis_timeout_ms)
        rb->timeout_ms = rb->inv->redis_timeout_ms;
    if (rb->inv->redis_batch)
        rb->batch = rb->inv->redis_batch;
    if (cm_redis_url_default_password(&rb->addr, rb->inv->redis_password) != 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: redis password too long");
        return CM_EINVAL;
    }
    return 0;
}

/*---- Open / close ----*/

static void rb_free(rb_t *rb)
{
    inv_cluster_sync_free(rb->admin);
    inv_cluster_sync_free(rb->query);
    inv_cluster_close(rb->cl);
    pthread_mutex_destroy(&rb->admin_mu);
    free(rb);
}

static int redis_open(inv_t *inv, const char *url, char *errbuf, size_t errlen)
{
    rb_t *rb = cm_xcalloc(1, sizeof(*rb));
    rb->inv = inv;
    pthread_mutex_init(&rb->admin_mu, NULL);
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++) {
        atomic_init(&rb->br[i].state, BR_CLOSED);
        atomic_init(&rb->br[i].fails, 0);
        atomic_init(&rb->br[i].until_ms, 0);
    }
    atomic_init(&rb->br_opens, 0);
    int rc = parse_url(rb, url, errbuf, errlen);
    if (rc < 0) {
        rb_free(rb);
        return rc;
    }
    rb->cl = inv_cluster_open(&rb->addr, rb->admin_timeout_ms, errbuf, errlen);
    if (!rb->cl) {
        rb_free(rb);
        return CM_EBACKEND;
    }
    rb->admin = inv_cluster_sync_new(rb->cl, rb->admin_timeout_ms);
    /* On a cluster the scripts land on one master here; the others load them
     * on their first NOSCRIPT (every caller falls back to EVAL). */
    for (int i = 0; i < SC_N; i++) {
        int err = 0;
        redisReply *r = inv_cluster_sync_cmd(rb->admin, NULL, &err, "SCRIPT LOAD %s",
                                             inv__redis_script_text[i]);
        if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
            cm_errbuf_set(errbuf, errlen, "redis: SCRIPT LOAD: %s",
                    r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                      : inv_cluster_sync_errstr(rb->admin));
            if (r)
                freeReplyObject(r);
            rb_free(rb);
            return CM_EBACKEND;
        }
        memcpy(rb->sha[i], r->str, 40);
        freeReplyObject(r);
    }
    /* The local views of every sale the fleet knows, before the first request. */
    int merr = 0;
    redisReply *m = inv_cluster_sync_cmd(rb->admin, INV_REDIS_INDEX, &merr, "SMEMBERS %s",
                                         INV_REDIS_INDEX);
    if (m && m->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < m->elements; i++) {
            const redisReply *e = m->element[i];
            if (e->type != REDIS_REPLY_STRING || !inv_id_valid(e->str, e->len, INV_SALE_ID_MAX))
                continue;
            inv_sale_info_t info;
            if (inv__redis_admin_state(rb, e->str, &info) == 0)
                inv__redis_publish_local(rb, &info);
        }
    }
    if (m)
        freeReplyObject(m);
    inv->backend = rb;
    rc = inv__redis_sync_start(rb);
    if (rc < 0) {
        cm_errbuf_set(errbuf, errlen, "inventory: cannot start the redis sync thread");
        inv->backend = NULL;
        rb_free(rb);
        return rc;
    }
    cm_log_info("inv", "redis inventory open",
                "host=%s port=%d db=%d cluster=%s pool=%u timeout_ms=%u breaker_failures=%u "
                "breaker_cooldown_ms=%u wait_replicas=%u",
                rb->addr.host, rb->addr.port, rb->addr.db, rb->addr.cluster ? "yes" : "no",
                rb->pool, rb->timeout_ms, rb->br_failures, rb->br_cooldown_ms, rb->wait_replicas);
    return 0;
}

static void redis_close(inv_t *inv)
{
    rb_t *rb = inv->backend;
    if (!rb)
        return;
    inv__redis_sync_stop(rb);
    rb_free(rb);
    inv->backend = NULL;
}

/*---- Admin operations (blocking, admin_mu) ----*/

static int redis_sale_put(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out,
                          char *errbuf, size_t errlen)
{
    rb_t *rb = inv->backend;
    if (!inv__sale_get_or_create(inv, def->sale_id)) {
        cm_errbuf_set(errbuf, errlen, "too many sales (max_sales=%u)", inv->max_sales);
        return CM_EINVAL;
    }
    char stock[24], limit[12], starts[24], ends[24];
    snprintf(stock, sizeof(stock), "%lld", (long long)def->stock);
    snprintf(limit, sizeof(limit), "%u", def->per_user_limit);
    snprintf(starts, sizeof(starts), "%lld", (long long)def->starts_at_ms);
    snprintf(ends, sizeof(ends), "%lld", (long long)def->ends_at_ms);
    const char *args[5] = {def->sale_id, stock, limit, starts, ends};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    /* The index lies outside the sale's slot, so it is not in the script. It is
     * written first: a gateway that subscribes after the script's PUBLISH then
     * still finds the sale when it re-reads the index (a listed sale without
     * meta is skipped). */
    redisReply *a = inv__redis_admin_cmd(rb, INV_REDIS_INDEX, &err, "SADD %s %s", INV_REDIS_INDEX,
                                         def->sale_id);
    if (!a) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    freeReplyObject(a);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_PUT, def->sale_id, 3, 5, args, &err);
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    inv_sale_info_t info;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        cm_errbuf_set(errbuf, errlen, "stock=%lld is below the %lld units already accepted",
                (long long)def->stock, (long long)r->element[1]->integer);
        rc = CM_EINVAL;
    } else {
        rc = inv__redis_parse_state(r, def->sale_id, &info);
        if (rc < 0)
            cm_errbuf_set(errbuf, errlen, "redis: bad reply to sale put");
    }
    freeReplyObject(r);
    if (rc < 0)
        goto out;
    inv__redis_publish_local(rb, &info);
    if (out)
        *out = info;
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out);

static int redis_restock(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                         inv_sale_info_t *out, char *errbuf, size_t errlen)
{
    rb_t *rb = inv->backend;
    char addbuf[24];
    snprintf(addbuf, sizeof(addbuf), "%lld", (long long)add);
    const char *args[3] = {sale_id, addbuf, key ? key : ""};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_RESTOCK, sale_id, 4, 3, args, &err);
    if (!r) {
        cm_errbuf_set(errbuf, errlen, "redis: %s", cm_strerror(err));
        rc = err;
        goto out;
    }
    inv_sale_info_t info;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == CM_EEXISTS) {
        rc = INV_RESTOCK_REPLAYED; /* this key was used before: nothing added */
    } else if (r->type == REDIS_REPLY_INTEGER) {
        rc = r->integer == CM_ENOTFOUND ? CM_ENOTFOUND : CM_EINVAL;
        if (rc == CM_ENOTFOUND)
            cm_errbuf_set(errbuf, errlen, "no sale %s", sale_id);
        else
            cm_errbuf_set(errbuf, errlen, "add=%lld would overflow the stock", (long long)add);
    } else {
        rc = inv__redis_parse_state(r, sale_id, &info);
        if (rc < 0)
            cm_errbuf_set(errbuf, errlen, "redis: bad reply to restock");
    }
    freeReplyObject(r);
    if (rc == 0) {
        inv__redis_publish_local(rb, &info);
        if (out)
            *out = info;
    }
out:
    pthread_mutex_unlock(&rb->admin_mu);
    if (rc == INV_RESTOCK_REPLAYED && out) {
        int grc = redis_sale_get(inv, sale_id, out);
        if (grc < 0)
            rc = grc;
    }
    return rc;
}

static int redis_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out)
{
    rb_t *rb = inv->backend;
    pthread_mutex_lock(&rb->admin_mu);
    int rc = inv__redis_admin_state(rb, sale_id, out);
    pthread_mutex_unlock(&rb->admin_mu);
    if (rc == 0) {
        inv_sale_t *s = inv_sale_find(inv, sale_id);
        if (s)
            inv__sale_publish(s, out);
    }
    return rc;
}

static int redis_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                         const char *order_id, bool giveback)
{
    (void)qty; /* the recorded qty is the truth */
    rb_t *rb = inv->backend;
    const char *args[4] = {order_id, user_id, sale_id, giveback ? "1" : "0"};
    int err = 0, rc;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_sync_eval(rb->admin, rb, SC_RELEASE, sale_id, 4, 4, args, &err);
    if (!r) {
        rc = err;
        goto out;
    }
    rc = r->type != REDIS_REPLY_INTEGER ? CM_EBACKEND
         : r->integer == CM_ECONFLICT   ? CM_ECONFLICT
         : r->integer < 0               ? CM_ENOTFOUND
                                        : 0;
    freeReplyObject(r);
    inv_sale_info_t info;
    inv_sale_t *s;
    if (rc == 0 && (s = inv_sale_find(inv, sale_id)) &&
        inv__redis_admin_state(rb, sale_id, &info) == 0)
        inv__sale_publish(s, &info);
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                        const char *order_id, const char *idem_key)
{
    (void)inv, (void)sale_id, (void)user_id, (void)qty, (void)order_id, (void)idem_key;
    return 0; /* Redis is the truth */
}

static int redis_user_units(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out)
{
    rb_t *rb = inv->backend;
    char meta[KEY_MAX], users[KEY_MAX];
    inv__redis_sale_key(meta, sale_id, "meta");
    inv__redis_sale_key(users, sale_id, "users");
    int err = 0, rc = 0;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *e = inv__redis_admin_cmd(rb, meta, &err, "EXISTS %s", meta);
    if (!e) {
        rc = err;
        goto out;
    }
    bool exists = e->type == REDIS_REPLY_INTEGER && e->integer == 1;
    freeReplyObject(e);
    if (!exists) {
        rc = CM_ENOTFOUND;
        goto out;
    }
    redisReply *r = inv__redis_admin_cmd(rb, users, &err, "HGET %s %s", users, user_id);
    if (!r) {
        rc = err;
        goto out;
    }
    int64_t v = 0;
    if (r->type != REDIS_REPLY_NIL && !inv__redis_reply_i64(r, &v))
        rc = CM_EBACKEND;
    *out = v > 0 ? (uint32_t)v : 0;
    freeReplyObject(r);
out:
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_order_user(inv_t *inv, const char *sale_id, const char *order_id,
                            char *user_out)
{
    rb_t *rb = inv->backend;
    char orders[KEY_MAX];
    inv__redis_sale_key(orders, sale_id, "orders");
    int err = 0, rc = CM_ENOTFOUND;
    pthread_mutex_lock(&rb->admin_mu);
    redisReply *r = inv__redis_admin_cmd(rb, orders, &err, "HGET %s %s", orders, order_id);
    if (!r) {
        rc = err;
    } else {
        /* the record is "user qty idem" (see the reserve script) */
        if (r->type == REDIS_REPLY_STRING) {
            size_t n = strcspn(r->str, " ");
            if (inv_id_valid(r->str, n, INV_USER_ID_MAX)) {
                memcpy(user_out, r->str, n);
                user_out[n] = '\0';
                rc = 0;
            } else {
                rc = CM_EBACKEND;
            }
        } else if (r->type != REDIS_REPLY_NIL) {
            rc = CM_EBACKEND;
        }
        freeReplyObject(r);
    }
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

static int redis_sale_delete(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf,
                             size_t errlen)
{
    rb_t *rb = inv->backend;
    pthread_mutex_lock(&rb->admin_mu);
    inv_sale_info_t info;
    int rc = inv__redis_admin_state(rb, sale_id, &info);
    if (rc == 0)
        rc = inv__sale_deletable(&info, now_ms, errbuf, errlen);
    if (rc == 0) {
        /* all four keys of the sale (one slot), then the index, then the news */
        char k[4][KEY_MAX];
        inv__redis_sale_key(k[0], sale_id, "meta");
        inv__redis_sale_key(k[1], sale_id, "users");
        inv__redis_sale_key(k[2], sale_id, "orders");
        inv__redis_sale_key(k[3], sale_id, "idem");
        int err = 0;
        redisReply *r =
            inv__redis_admin_cmd(rb, k[0], &err, "DEL %s %s %s %s", k[0], k[1], k[2], k[3]);
        if (!r) {
            rc = err;
        } else {
            freeReplyObject(r);
            if ((r = inv__redis_admin_cmd(rb, INV_REDIS_INDEX, &err, "SREM %s %s", INV_REDIS_INDEX,
                                          sale_id)))
                freeReplyObject(r);
            if ((r = inv__redis_admin_cmd(rb, NULL, &err, "PUBLISH %s %s", INV_REDIS_CHANNEL,
                                          sale_id)))
                freeReplyObject(r);
            inv__sale_remove(inv, sale_id);
        }
    }
    pthread_mutex_unlock(&rb->admin_mu);
    return rc;
}

const inv_ops_t inv__redis_ops = {
    .name = "redis",
    .caps = INV_CAP_SHARED,
    .open = redis_open,
    .close = redis_close,
    .worker_open = inv__redis_worker_open,
    .worker_close = inv__redis_worker_close,
    .worker_inflight = inv__redis_worker_inflight,
    .flush = inv__redis_flush,
    .reserve = inv__redis_reserve,
    .reserve_once = inv__redis_reserve_once,
    .sale_put = redis_sale_put,
    .restock = redis_restock,
    .sale_get = redis_sale_get,
    .release = redis_release,
    .replay = redis_replay,
    .claim = inv__redis_claim,
    .user_units = redis_user_units,
    .order_user = redis_order_user,
    .sale_delete = redis_sale_delete,
};

int inv_redis_breaker(struct inv *inv, uint64_t *opens)
{
    if (!inv || inv->ops != &inv__redis_ops)
        return -1;
    rb_t *rb = inv->backend;
    *opens = atomic_load_explicit(&rb->br_opens, memory_order_relaxed);
    /* the most open of the masters' breakers: open, else half-open, else closed */
    int worst = BR_CLOSED;
    for (int i = 0; i < INV_CLUSTER_NODES_MAX; i++) {
        int st = atomic_load_explicit(&rb->br[i].state, memory_order_relaxed);
        if (st == BR_OPEN)
            return BR_OPEN;
        if (st == BR_HALF_OPEN)
            worst = BR_HALF_OPEN;
    }
    return worst;
}
