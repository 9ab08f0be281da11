/*
 * The Redis backend's connections (see inv_redis_internal.h): reply helpers,
 * the circuit breakers, the blocking connections (admin, loop-less workers,
 * open), the receive stamps, and the async ones on a libuv loop (worker loops
 * and the sync thread).
 */
#include "inventory/inv_redis_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"

#include <errno.h>
#include <hiredis/sds.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef FLASHGATE_PLANTS
const char *inv__redis_script_text[SC_N] = {
#else
const char *const inv__redis_script_text[SC_N] = {
#endif
    INV_REDIS_LUA_RESERVE,
    INV_REDIS_LUA_RELEASE,
    INV_REDIS_LUA_PUT,
    INV_REDIS_LUA_RESTOCK,
    INV_REDIS_LUA_READ,
    INV_REDIS_LUA_CLAIM,
    INV_REDIS_LUA_RESERVE_BATCH,
    INV_REDIS_LUA_RESERVE_ONCE,
};

#ifdef FLASHGATE_PLANTS
/* The planted scripts of the active plant (the simulator's self-test); the
 * real ones otherwise. Single-threaded: called at open. */
void inv__redis_plant_scripts(void)
{
    static char reserve[sizeof(INV_REDIS_LUA_RESERVE) + 64];
    static const char check[] = "if have > limit then\n";
    inv__redis_script_text[SC_RESERVE] = INV_REDIS_LUA_RESERVE;
    const char *at = strstr(INV_REDIS_LUA_RESERVE, check);
    if (CM_PLANT(INV_REDIS_LIMIT_KEYED) && at) {
        size_t head = (size_t)(at - INV_REDIS_LUA_RESERVE);
        snprintf(reserve, sizeof(reserve), "%.*sif have > limit and ARGV[3] == '' then\n%s",
                 (int)head, INV_REDIS_LUA_RESERVE, at + strlen(check));
        inv__redis_script_text[SC_RESERVE] = reserve;
    }
    static char release[sizeof(INV_REDIS_LUA_RELEASE)];
    static const char del[] = "redis.call('HDEL', KEYS[3], ARGV[1])\n";
    inv__redis_script_text[SC_RELEASE] = INV_REDIS_LUA_RELEASE;
    at = strstr(INV_REDIS_LUA_RELEASE, del);
    if (CM_PLANT(INV_REDIS_RELEASE_KEEPS_ORDER) && at) {
        size_t head = (size_t)(at - INV_REDIS_LUA_RELEASE);
        snprintf(release, sizeof(release), "%.*s%s", (int)head, INV_REDIS_LUA_RELEASE,
                 at + strlen(del));
        inv__redis_script_text[SC_RELEASE] = release;
    }
}
#endif

/*---- Helpers ----*/


/*
 * The breakers' clock (ms): the transport's when one is set (the simulator's
 * is cm_time's fake), else our own monotonic clock, not cm_time: the breaker
 * must keep working when a test fakes cm_time. Thread-safe.
 */
uint64_t inv__redis_now_ms(const rb_t *rb)
{
    if (rb->tr && rb->tr->now_ms)
        return rb->tr->now_ms(rb->tr->arg);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The worker loops are stepped by the owner (a transport with an async side). */
bool inv__redis_is_stepped(const rb_t *rb)
{
    return rb->tr && rb->tr->async;
}

void inv__redis_sale_key(char *buf, const char *sale_id, const char *part)
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

bool inv__redis_reply_i64(const redisReply *r, int64_t *out)
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


/*
 * Reads a reserve's reply: a reservation packed into one integer, or the
 * array {code, left, units[, order, qty, claimed]} (a duplicate must carry the
 * order and qty). false for anything else (an error reply, a protocol surprise).
 */
bool inv__redis_reserve_parse(const redisReply *r, reserve_ans_t *out)
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
int inv__redis_parse_state(const redisReply *r, const char *sale_id, inv_sale_info_t *out)
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

void inv__redis_publish_local(rb_t *rb, const inv_sale_info_t *info)
{
    inv_sale_t *s = inv__sale_get_or_create(rb->inv, info->sale_id);
    if (s)
        inv__sale_publish(s, info);
}

/*---- Circuit breakers (one per master, shared by every worker; atomics only) ----*/

/* `node` is the master a call goes to; -1 (no master serves the slot: the
 * call fails at once anyway) has no breaker. */

/* true if a call may go out; in HALF_OPEN exactly one caller (the probe) gets true. */
bool inv__redis_br_allow(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return true;
    int st = atomic_load(&rb->br[node].state);
    if (st == BR_CLOSED)
        return true;
    if (st == BR_HALF_OPEN)
        return false;
    if (inv__redis_now_ms(rb) < atomic_load(&rb->br[node].until_ms))
        return false;
    int open = BR_OPEN;
    return atomic_compare_exchange_strong(&rb->br[node].state, &open, BR_HALF_OPEN);
}

void inv__redis_br_success(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return;
    atomic_store_explicit(&rb->br[node].fails, 0, memory_order_relaxed);
    if (atomic_load_explicit(&rb->br[node].state, memory_order_relaxed) != BR_CLOSED)
        atomic_store(&rb->br[node].state, BR_CLOSED); /* no log line per event: see br_opens */
}

void inv__redis_br_failure(rb_t *rb, int node)
{
    if (node < 0 || node >= INV_CLUSTER_NODES_MAX)
        return;
    uint32_t n = atomic_fetch_add(&rb->br[node].fails, 1) + 1;
    int st = atomic_load(&rb->br[node].state);
    if (st == BR_OPEN)
        return; /* stragglers of the burst that opened it do not extend the cool-down */
    if (st == BR_HALF_OPEN || n >= rb->br_failures) {
        atomic_store(&rb->br[node].until_ms, inv__redis_now_ms(rb) + rb->br_cooldown_ms);
        if (atomic_compare_exchange_strong(&rb->br[node].state, &st, BR_OPEN))
            atomic_fetch_add_explicit(&rb->br_opens, 1, memory_order_relaxed);
    }
}

/*---- Blocking connections (admin, loop-less workers, open) ----*/

/*
 * Runs script `sc` with the sale's first `nkeys` keys (meta, users, orders,
 * idem) and `nargs` arguments on the sale's node; reloads it on NOSCRIPT.
 * Returns the reply (caller frees) or NULL with *err set (CM_ETIMEOUT or
 * CM_EBACKEND); the routed client reconnects on the next call after an I/O
 * error. `quiet`: a transport failure is not logged (the caller retries).
 */
redisReply *inv__redis_sync_eval_log(inv_cluster_sync_t *c, const rb_t *rb, int sc,
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
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++) {
        inv__redis_sale_key(keys[i], sale_id, parts[i]);
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    redisReply *r = inv_cluster_sync_script(c, keys[0], rb->sha[sc], inv__redis_script_text[sc],
                                            argc, argv, argl, err);
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

redisReply *inv__redis_sync_eval(inv_cluster_sync_t *c, const rb_t *rb, int sc,
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
redisReply *inv__redis_admin_cmd(rb_t *rb, const char *key, int *err, const char *fmt, ...)
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
int inv__redis_admin_state(rb_t *rb, const char *sale_id, inv_sale_info_t *out)
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

/*---- Receive stamps (a reserve's own time) ----*/

/*
 * A reserve's own time (inv_reserve_req_t.rtt_us): from the write that carried
 * it to the moment its reply reached this host, both on the wall clock; not
 * from the caller's request to the callback. The gateway's adaptive limit for
 * Redis reacts to it. Timed to the callback, it would measure the gateway's
 * own loop on a busy machine: a command waits for the end of the iteration to
 * be written, its reply waits in the socket while the loop works, a batch's
 * callbacks run one after the other (25-40 ms against 1-3 ms in Redis), and
 * the limit falls to 6-24 with Redis idle (bench/README.md "Redis").
 * An event loop cannot tell when bytes arrived; the kernel can: with
 * SO_TIMESTAMPNS a TCP socket stamps what it receives, and a 1-byte
 * recvmsg(MSG_PEEK) before hiredis reads returns the stamp of the unread data
 * (of the newest segment, when the kernel merged several while we did not
 * read: an upper bound for the older replies of the batch). One syscall per
 * read of a batch of replies, not per reply.
 */

/* Asks the kernel to stamp what the socket receives; best effort (no stamp: no sample). */
void inv__redis_rx_stamps_on(int fd)
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

void inv__redis_rw_read_stamp(struct rw *w, int fd)
{
    w->arrival_us = rx_stamp_us(fd);
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
 * or more (bench/README.md "Memory and tables"). So the flush writes the buffer here and,
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

void inv__redis_rl_flush(uv_prepare_t *h)
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
 * malloc and a free per object: ~600 instructions a Redis order (callgrind:
 * python3 bench/profile.py build redis calls). A scalar element is linked into its parent only
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
/*
 * The async seam (inv_cluster_async_t): hiredis's calls, or the transport's
 * when it has an async side. One test of a pointer each in production.
 */
int inv__redis_async_send(const rb_t *rb, redisAsyncContext *ac, redisCallbackFn *cb, void *priv,
                          const char *cmd, size_t len)
{
    if (rb->tr && rb->tr->async)
        return rb->tr->async->send(rb->tr->arg, ac, cb, priv, cmd, len);
    return redisAsyncFormattedCommand(ac, cb, priv, cmd, len);
}

/* WAIT wait_replicas timeout_ms on ac (RESP by hand, as the reserves are). */
int inv__redis_async_wait(const rb_t *rb, redisAsyncContext *ac, redisCallbackFn *cb, void *priv)
{
    char n[12], t[12], buf[64];
    inv__redis_u32_text(rb->wait_replicas, n);
    inv__redis_u32_text(rb->timeout_ms, t);
    resp_t b = {buf, sizeof(buf), 0};
    inv__redis_resp_head(&b, 3);
    inv__redis_resp_arg(&b, "WAIT", 4);
    inv__redis_resp_arg(&b, n, strlen(n));
    inv__redis_resp_arg(&b, t, strlen(t));
    return inv__redis_async_send(rb, ac, cb, priv, buf, b.need);
}

void inv__redis_async_read(const rb_t *rb, redisAsyncContext *ac)
{
    if (rb->tr && rb->tr->async)
        rb->tr->async->read(rb->tr->arg, ac);
    else
        redisAsyncHandleRead(ac);
}

void inv__redis_async_free(const rb_t *rb, redisAsyncContext *ac)
{
    if (rb->tr && rb->tr->async)
        rb->tr->async->free(rb->tr->arg, ac);
    else
        redisAsyncFree(ac);
}

redisAsyncContext *inv__redis_async_open(rb_t *rb, int node, uv_loop_t *loop, void *data,
                                     redisConnectCallback *on_conn,
                                     redisDisconnectCallback *on_disc)
{
    char host[256];
    int port;
    if (inv_cluster_node(rb->cl, node, host, sizeof(host), &port) != 0)
        return NULL;
    if (rb->tr && rb->tr->async) /* the transport authenticates and selects, if at all */
        return rb->tr->async->open(rb->tr->arg, host, port, data, on_conn, on_disc);
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
