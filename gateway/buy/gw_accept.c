/*
 * The accept sequence of the orders no buy request made: a lottery winner,
 * a waitlist promotion (see gw_accept.h).
 */
#include "gateway/buy/gw_accept.h"

#include "common/cm_err.h"
#include "common/cm_plant.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_identity.h"

#include <stdatomic.h>
#include <string.h>

static int take(void *ctx, const gw_accept_req_t *req, gw_accept_t *a)
{
    gw_server_t *srv = ctx;
    inv_reserve_req_t *rq = req->rq;
    char order_id[INV_ORDER_ID_MAX + 1];
    memcpy(order_id, rq->order_id, sizeof(order_id));
    /* once per order id: a memory inventory just reserves; a fleet's marks the
     * id, so that a drawer that resumes never reserves a winner twice */
    int rc = inv_reserve_once(req->inv, rq);
    if (rc < 0)
        return rc;
    /* Found held under its key with its own id (a drawer that died after its
     * reserve, or whose spool refused it and whose give-back is still
     * pending): claimed before it is spooled, so that give-back leaves it
     * held; given back already, the next try reserves it anew. */
    bool again = rc == INV_DUPLICATE && strcmp(rq->order_id, order_id) == 0;
    if (again) {
        int c = inv_claim(req->inv, rq);
        if (c != INV_RESERVED)
            return c < 0 ? c : CM_EBACKEND;
    } else if (rc != INV_RESERVED) {
        return rc == INV_SOLD_OUT          ? GW_ACCEPT_SOLD_OUT
               : rc == INV_UNKNOWN_SALE    ? GW_ACCEPT_UNKNOWN_SALE
               : rc == INV_RESERVED_BEFORE ? GW_ACCEPT_BEFORE
                                           : GW_ACCEPT_REFUSED;
    }
    gw_order_of_reserve(&a->o, rq, req->user, req->sale_id, req->accepted_at_ms, srv->node.id);
    a->fresh = true;
    a->durable = false;
    const oq_order_t *one = &a->o;
    if (oq_spool_append_batch(srv->stores.spool, &one, 1, NULL, &a->end) != 0) {
        gw_release_unaccepted(srv, &a->o, req->why);
        return GW_ACCEPT_SPOOL_REFUSED;
    }
    return GW_ACCEPT_SPOOLED;
}

/*
 * One wait for the last record (appended last, so it ends last); after a
 * failure each record is asked by its own end (answered at once: no fdatasync
 * after a CM_EIO). A record that a round made durable is relayed, settled and
 * replayed at a restart whatever later round failed (another thread's
 * records): its order stands. A wait for the spool's whole end instead would
 * fail after any failed fdatasync and disown such an order.
 */
static void commit(void *ctx, gw_accept_t *a, size_t n)
{
    gw_server_t *srv = ctx;
    if (!n)
        return;
    if (CM_PLANT(ACCEPT_UNSYNCED)) { /* planted: durable at the write, no fdatasync waited for */
        for (size_t i = 0; i < n; i++)
            a[i].durable = true;
        return;
    }
    bool all = oq_spool_commit_to(srv->stores.spool, a[n - 1].end) == 0;
    for (size_t i = 0; i < n; i++)
        a[i].durable = all || (i + 1 < n && oq_spool_commit_to(srv->stores.spool, a[i].end) == 0);
}

static void publish(void *ctx, const gw_accept_t *a, size_t n)
{
    gw_server_t *srv = ctx;
    bool fresh = false;
    for (size_t i = 0; i < n; i++) {
        const oq_order_t *o = &a[i].o;
        if (a[i].fresh || !gw_orders_get(srv->stores.orders, o->order_id, NULL)) {
            gw_orders_put(srv->stores.orders, o);
            gw_identity_order_put(srv, o->order_id, o->user_id);
        }
        if (!a[i].fresh)
            continue;
        fresh = true;
        if (srv->pool.workers)
            atomic_fetch_add_explicit(&srv->pool.workers[0].ctr.accepted_units, o->qty,
                                      memory_order_relaxed);
    }
    if (fresh)
        gw_buy_relay_notify(srv);
}

typedef struct spool_find {
    const char *order_id;
    gw_accept_t *a;
    bool found;
} spool_find_t;

static int spool_find_one(const oq_rec_t *rec, void *ctx)
{
    spool_find_t *x = ctx;
    if (rec->type != OQ_REC_ORDER || strcmp(rec->order->order_id, x->order_id) != 0)
        return 0;
    x->a->o = *rec->order;
    x->found = true;
    return 1;
}

static int find(void *ctx, const char *order_id, gw_accept_t *a)
{
    gw_server_t *srv = ctx;
    spool_find_t sf = {.order_id = order_id, .a = a};
    long rc = oq_spool_scan(srv->stores.spool, (oq_pos_t){0, 0}, spool_find_one, &sf);
    if (rc < 0)
        return (int)rc;
    if (!sf.found)
        return 0;
    a->fresh = false;
    a->durable = true;
    return 1;
}

static const gw_accept_ops_t accept_ops = {
    .take = take,
    .commit = commit,
    .publish = publish,
    .find = find,
};

gw_acceptor_t gw_acceptor(gw_server_t *srv)
{
    return (gw_acceptor_t){.ops = &accept_ops, .ctx = srv};
}
