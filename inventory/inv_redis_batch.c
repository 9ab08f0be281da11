/*
 * The Redis backend's batches (see inv_redis_internal.h): a sale's reserves of
 * one loop iteration go in one script call; and the worker-facing ops
 * (reserve, claim, flush, worker open/close).
 */
#include "inventory/inv_redis_internal.h"
#include "inventory/inv_redis.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_plant.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

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
    int rc = inv__redis_async_send(b->w->rb, b->conn->ac, batch_reply, b, buf, len);
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
static void batch_each(redisAsyncContext *ac, rbatch_t *b, redisReply *r, bool split)
{
    rw_t *w = b->w;
    rconn_t *c = b->conn;
    rop_t *waiting = NULL;
    w->wait_batch = &waiting;
    rop_t *op = b->ops;
    for (uint32_t i = 0; op; i++) {
        rop_t *next = op->qnext;
        op->qnext = NULL;
        uint32_t at = CM_PLANT(INV_REDIS_BATCH_SHIFT) ? (i + 1) % b->n : i;
        inv__redis_reserve_reply(ac, split && r ? r->element[at] : r, op);
        op = next;
    }
    w->wait_batch = NULL;
    free(b);
    if (!waiting)
        return;
    if (c->ac && inv__redis_async_wait(w->rb, c->ac, wait_batch_reply, waiting) == REDIS_OK)
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
    if (inv_cluster_script_retry(r, &b->is_reloaded)) {
        if (batch_send(b) == 0)
            return;
        r = NULL;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == b->n) {
        batch_each(ac, b, r, true);
        return;
    }
    if (r && r->type == REDIS_REPLY_ERROR && inv__redis_is_retry_later(r)) {
        batch_each(ac, b, r, false); /* did not run: a redirect each, or an error each */
        return;
    }
    if (r)
        cm_log_error("inv", "redis batch reserve error; its reserves are given back",
                     "reserves=%u err=\"%.*s\"", b->n,
                     r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
                     r->type == REDIS_REPLY_ERROR ? r->str : "");
    /* The fate of each reserve is unknown (the script may have stopped half
     * way): as with a lost connection, "unavailable" and a give-back each. */
    batch_each(ac, b, NULL, false);
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
void inv__redis_queue_send(rw_t *w)
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
        if (c->ac && !inv__redis_is_stepped(w->rb) && (c->ac->c.flags & REDIS_CONNECTED)) {
            rl_events_t *p = c->ac->ev.data;
            if (uv_is_active((uv_handle_t *)&p->flush))
                inv__redis_rl_flush(&p->flush);
        }
    }
}


/*
 * wait_replicas on the blocking path: WAIT on the connection that just ran
 * the script (the routed client keeps one per node, and reconnects only
 * before a command, after an idle spell). true once enough replicas have
 * every write made before it.
 */
static bool sync_wait(rw_t *w, const char *sale_id)
{
    rb_t *rb = w->rb;
    char key[KEY_MAX];
    inv__redis_sale_key(key, sale_id, "meta");
    int err = 0;
    redisReply *r = inv_cluster_sync_cmd(w->sync, key, &err, "WAIT %u %u", rb->wait_replicas,
                                         rb->timeout_ms);
    bool ok = r && r->type == REDIS_REPLY_INTEGER && r->integer >= (long long)rb->wait_replicas;
    if (r)
        freeReplyObject(r);
    return ok;
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
    if (rc == INV_RESERVED && rb->wait_replicas && !CM_PLANT(INV_REDIS_NO_WAIT) &&
        !sync_wait(w, req->sale->sale_id)) {
        rc = CM_EBACKEND;
        /* A winner's units (SC_RESERVE_ONCE) stay held: a release would leave the
         * once-per-order mark, the retry would answer INV_RESERVED_BEFORE and the caller
         * would record a winner with no order. Held, the retry finds them by its key
         * (INV_DUPLICATE, the same order id) and goes on to inv_claim, which waits for the
         * replicas, then the spool: "won" always has an order.
         * A purchase (SC_RESERVE) is not answered 202 unless the replicas have it (a
         * failover would lose it): given back now as the loop's path does; if that fails
         * too, the caller's give-back (it holds the order id) or nobody's: the units stay
         * held, never sold twice. */
        if (sc == SC_RESERVE) {
            const char *rel[4] = {req->order_id, req->user_id, req->sale->sale_id, "1"};
            int rerr = 0;
            redisReply *g = inv__redis_sync_eval(w->sync, rb, SC_RELEASE, req->sale->sale_id,
                                                 4, 4, rel, &rerr);
            if (g)
                freeReplyObject(g);
        }
    }
    if (rc < 0)
        inv__redis_br_failure(rb, node);
    else
        inv__redis_br_success(rb, node);
    return rc;
}

static int op_start(rw_t *w, inv_reserve_req_t *req, bool is_claim);

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * The prepare phase, just before the loop polls: the worker's queued reserves
 * go out (inv__redis_queue_send), and the connections' flushes
 * write everything queued in this iteration (inv__redis_rl_flush), so that is each new
 * op's send time. Ops are appended to the pending list as they are queued;
 * the walk stops at the first one already stamped (a resent op keeps its
 * first send).
 */
void inv__redis_rw_send_cb(uv_prepare_t *h)
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

/* inv_flush: the prepare phase's work (inv__redis_rw_send_cb), for a loop that runs libuv
 * inside its own and calls this at the end of each iteration. */
void inv__redis_flush(inv_worker_t *wk)
{
    rw_t *w = wk->backend;
    if (w->loop)
        inv__redis_rw_send_cb(&w->send_prep);
}

int inv__redis_reserve(inv_worker_t *wk, inv_reserve_req_t *req)
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
    op->deadline = inv__redis_rw_now(w) + rb->timeout_ms;
    bool was_empty = w->pending.next == &w->pending;
    inv__redis_pending_add(w, op);
    if (was_empty)
        inv__redis_tick_arm(w, rb->timeout_ms);
    return INV_PENDING;
}

/* inv_reserve_once: a blocking call (a loop-less handle: the lottery thread's). */
int inv__redis_reserve_once(inv_worker_t *wk, inv_reserve_req_t *req)
{
    rw_t *w = wk->backend;
    if (w->loop)
        return CM_EINVAL;
    return sync_reserve(w, req, SC_RESERVE_ONCE);
}

int inv__redis_claim(inv_worker_t *wk, inv_reserve_req_t *req)
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
    /* A claimed order is answered 202: only once the replicas have it and its claim
     * mark (the reserve that took it may have been answered 503 for want of them). */
    if (rc == INV_RESERVED && rb->wait_replicas && !CM_PLANT(INV_REDIS_NO_WAIT) &&
        !sync_wait(w, req->sale->sale_id))
        rc = CM_EBACKEND;
    if (rc == CM_EBACKEND)
        inv__redis_br_failure(rb, node);
    else
        inv__redis_br_success(rb, node);
    return rc;
}

int inv__redis_worker_open(inv_t *inv, struct uv_loop_s *loop, inv_worker_t *wk)
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

int inv_redis_worker_step(inv_worker_t *wk)
{
    rw_t *w = wk ? wk->backend : NULL;
    if (!w || !w->loop || !inv__redis_is_stepped(w->rb))
        return CM_EINVAL;
    inv__redis_rw_step(w);
    return 0;
}

/* inv_worker_inflight: every op not freed (sent and unanswered, or in doubt). */
size_t inv__redis_worker_inflight(inv_worker_t *wk)
{
    rw_t *w = wk->backend;
    if (!w || !w->loop)
        return 0;
    /* doubts wait for a connect; one that is up already gets them now (at
     * most every 100 ms: a Redis still LOADING answers each "later") */
    uint64_t now = inv__redis_rw_now(w);
    if (w->ndoubt && now - w->doubt_retry_ms >= 100) {
        w->doubt_retry_ms = now;
        inv__redis_doubt_flush(w);
    }
    return w->nops;
}

void inv__redis_worker_close(inv_worker_t *wk)
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
            inv__redis_async_free(w->rb, ac);
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
