/*
 * The Redis backend's worker loops (see inv_redis_internal.h): their
 * connections per node, the calls in flight and their timeouts, the RESP of a
 * reserve, redirects, and the reserves whose answer was lost (in doubt).
 */
#include "inventory/inv_redis_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- Workers ----*/


static void conn_start(rconn_t *c);

/*
 * A reserve's op lives from its send until its reply, so a worker has a whole pipeline of
 * them (the connections' in-flight requests) allocated at once, and a batch of replies
 * frees them together: more than glibc's per-thread cache holds per size (7), so most of
 * them went through _int_malloc and _int_free (~300 instructions a Redis order;
 * callgrind: python3 bench/profile.py build redis calls). The worker keeps the ones it
 * freed; the list is bounded, and emptied once the worker closes (ops freed from then on
 * go back to malloc).
 */
#define FREE_OPS_MAX 1024

rop_t *inv__redis_op_new(rw_t *w)
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

void inv__redis_op_free(rop_t *op)
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

void inv__redis_free_ops_drain(rw_t *w)
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

void inv__redis_tick_closed(uv_handle_t *h)
{
    rw_release(h->data);
}





static void op_rtt(const rop_t *op, inv_reserve_req_t *req)
{
    if (op->sent_us && op->w->arrival_us)
        req->rtt_us = op->w->arrival_us > op->sent_us ? op->w->arrival_us - op->sent_us : 0;
}

void inv__redis_retry_closed(uv_handle_t *h)
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
    if (inv__redis_is_stepped(c->w->rb))
        c->retry_at_ms = inv__redis_now_ms(c->w->rb) + c->backoff_ms;
    else
        uv_timer_start(&c->retry, conn_retry_cb, c->backoff_ms, 0);
}


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
    else if (!inv__redis_is_stepped(c->w->rb)) {
        ((rl_events_t *)c->ac->ev.data)->w = c->w;
        inv__redis_rx_stamps_on(c->ac->c.fd);
    }
}

/* Sets up (once) and opens the pool of `node` on w's loop. */
void inv__redis_node_open(rw_t *w, int node)
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
rconn_t *inv__redis_node_conn(rw_t *w, int node, bool up_only)
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
int inv__redis_slot_node(rb_t *rb, uint16_t slot)
{
    if (!inv_cluster_enabled(rb->cl))
        return 0;
    int n = inv_cluster_route(rb->cl, slot);
    if (n < 0)
        map_stale(rb);
    return n;
}

uint16_t inv__redis_sale_slot(const char *sale_id)
{
    char key[KEY_MAX];
    inv__redis_sale_key(key, sale_id, "meta");
    return inv_cluster_key_slot(key, strlen(key));
}

/* The master of a sale as the map has it now (its breaker), 0 on a single Redis. */
int inv__redis_sale_node(rb_t *rb, const char *sale_id)
{
    return inv_cluster_enabled(rb->cl) ? inv_cluster_route(rb->cl, inv__redis_sale_slot(sale_id))
                                       : 0;
}

/* The master an op was last sent to (its breaker), -1 if none. */
int inv__redis_op_node(const rop_t *op)
{
    return op->conn ? op->conn->node : -1;
}

void inv__redis_pending_add(rw_t *w, rop_t *op)
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
void inv__redis_op_complete(rop_t *op, int outcome)
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
            if (!inv__redis_is_stepped(w->rb))
                inv__redis_rw_read_stamp(w, c->ac->c.fd);
            inv__redis_async_read(w->rb, c->ac); /* may drop the context: c->ac is NULL then */
        }
    }
}

/* The loop's time (ms): uv_now, or the transport's clock when stepped. */
uint64_t inv__redis_rw_now(const rw_t *w)
{
    return inv__redis_is_stepped(w->rb) ? inv__redis_now_ms(w->rb) : uv_now(w->loop);
}

/* Arms the tick delay_ms from now (the timer, or the owner's step when stepped). */
void inv__redis_tick_arm(rw_t *w, uint64_t delay_ms)
{
    if (inv__redis_is_stepped(w->rb))
        w->tick_at_ms = inv__redis_now_ms(w->rb) + delay_ms;
    else
        uv_timer_start(&w->tick, inv__redis_tick_cb, delay_ms, 0);
}

void inv__redis_tick_cb(uv_timer_t *t)
{
    rw_t *w = t->data;
    uint64_t now = inv__redis_rw_now(w);
    w->tick_at_ms = 0;
    if (w->pending.next != &w->pending && w->pending.next->deadline <= now)
        drain_replies(w);
    while (w->pending.next != &w->pending && w->pending.next->deadline <= now) {
        inv__redis_br_failure(w->rb, inv__redis_op_node(w->pending.next));
        inv__redis_op_complete(w->pending.next, CM_ETIMEOUT);
    }
    if (w->pending.next != &w->pending && !w->is_closing)
        inv__redis_tick_arm(w, w->pending.next->deadline - now);
}

/*
 * A stepped worker's timers (inv_redis_worker_step): the tick (timeouts) and
 * the connections' retries whose time has come on the transport's clock.
 */
void inv__redis_rw_step(rw_t *w)
{
    uint64_t now = inv__redis_now_ms(w->rb);
    if (w->tick_at_ms && w->tick_at_ms <= now)
        inv__redis_tick_cb(&w->tick);
    for (uint32_t i = 0; i < w->nconns && !w->is_closing; i++) {
        rconn_t *c = &w->conns[i];
        if (c->is_inited && c->retry_at_ms && c->retry_at_ms <= now) {
            c->retry_at_ms = 0;
            conn_start(c);
        }
    }
}




/* A script call up to its arguments: EVALSHA (EVAL with the text after
 * NOSCRIPT), the script, and the sale's 4 keys; nargs arguments follow. */
void inv__redis_script_head(resp_t *b, const rb_t *rb, int sc, bool reloaded, size_t nargs,
                        const char *sale_id)
{
    static const char *const parts[4] = {"meta", "users", "orders", "idem"};
    const char *body = reloaded ? inv__redis_script_text[sc] : rb->sha[sc];
    inv__redis_resp_head(b, 3 + 4 + nargs);
    if (reloaded)
        inv__redis_resp_arg(b, "EVAL", 4);
    else
        inv__redis_resp_arg(b, "EVALSHA", 7);
    inv__redis_resp_arg(b, body, strlen(body));
    inv__redis_resp_arg(b, "4", 1);
    size_t idlen = strlen(sale_id);
    for (int i = 0; i < 4; i++)
        inv__redis_resp_key(b, sale_id, idlen, parts[i]);
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
            args[nargs++] = CM_PLANT(INV_REDIS_GIVEBACK_CLAIMED) ? "0" : "1";
    }
    resp_t b = {buf, cap, 0};
    rw_t *w = op->w;
    bool cacheable = sc == SC_RESERVE && !op->is_reloaded;
    if (cacheable && w->pfx_len && strcmp(w->pfx_sale, op->sale_id) == 0) {
        /* a copy instead of ~15 formatted pieces: ~1k instructions a reserve (callgrind) */
        inv__redis_resp_put(&b, w->pfx, w->pfx_len);
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

int inv__redis_op_send(rop_t *op, int sc)
{
    if (!op->conn || !op->conn->ac)
        return CM_EBACKEND;
    /* ASKING applies to the next command of this connection: both are queued
     * back to back on this loop, so nothing can come between them. */
    static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
    if (op->is_asking && inv__redis_async_send(op->w->rb, op->conn->ac, NULL, NULL, asking,
                                               sizeof(asking) - 1) != REDIS_OK)
        return CM_EBACKEND;
    char stack[1024];
    char *buf = stack;
    size_t len = op_format(op, sc, stack, sizeof(stack));
    if (len > sizeof(stack)) { /* EVAL with the script's text: rare */
        buf = cm_xmalloc(len);
        op_format(op, sc, buf, len);
    }
    int rc = inv__redis_async_send(op->w->rb, op->conn->ac, inv__redis_reserve_reply, op, buf,
                                   len);
    if (buf != stack)
        free(buf);
    return rc == REDIS_OK ? 0 : CM_EBACKEND;
}



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

void inv__redis_doubt_add(rop_t *op)
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
void inv__redis_doubt_flush(rw_t *w)
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
bool inv__redis_is_retry_later(const redisReply *r)
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
 * The WAIT after a claim: a claimed order is answered reserved (202) only once
 * the replicas have it and its mark (the reserve that took it may have been
 * answered 503 for want of them); else "unavailable", with nothing given back
 * (the client's next retry with the key claims it again).
 */
void inv__redis_wait_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    const redisReply *r = reply;
    rop_t *op = privdata;
    rb_t *rb = op->w->rb;
    bool acked = r && r->type == REDIS_REPLY_INTEGER && r->integer >= (long long)rb->wait_replicas;
    if (op->is_claim) { /* nothing to give back: unconfirmed, the order stays held and marked */
        if (op->req) {
            if (acked) {
                op_rtt(op, op->req);
                inv__redis_op_complete(op, INV_RESERVED);
            } else {
                inv__redis_br_failure(rb, inv__redis_op_node(op));
                inv__redis_op_complete(op, CM_EBACKEND);
            }
        }
        inv__redis_op_free(op);
        return;
    }
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

void inv__redis_reserve_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redisReply *r = reply;
    rop_t *op = privdata;
    rb_t *rb = op->w->rb;

    if (inv_cluster_script_retry(r, &op->is_reloaded)) {
        /* SCRIPT FLUSH, a restarted server or another master: EVAL loads it
         * again for everyone. */
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
            if (rc == INV_RESERVED && rb->wait_replicas && !CM_PLANT(INV_REDIS_ASYNC_NO_WAIT)) {
                /* the answer waits until the replicas have the mark (inv__redis_wait_reply) */
                if (inv__redis_async_wait(rb, op->conn->ac, inv__redis_wait_reply, op) == REDIS_OK)
                    return;
                rc = CM_EBACKEND;
            }
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
    if (code == INV_RESERVED && rb->wait_replicas && !CM_PLANT(INV_REDIS_ASYNC_NO_WAIT)) {
        /* the answer waits until the replicas have the write */
        op->w_left = ans.left;
        op->w_units = (uint32_t)ans.units;
        if (op->w->wait_batch) { /* a batch's reply: one WAIT for all of it (batch_each)
                                  */
            op->qnext = *op->w->wait_batch;
            *op->w->wait_batch = op;
            return;
        }
        if (inv__redis_async_wait(rb, op->conn->ac, inv__redis_wait_reply, op) == REDIS_OK)
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
