/*
 * The releaser: gives reserved units back to the inventory off the worker
 * loops (a Redis release is a blocking EVAL), retrying until the inventory
 * says done (inv_release is exactly once per order id), each release a spool
 * "release" EVENT first, and a compensated order marked final only once its
 * units are back: docs/design.md "Giving units back (compensation)".
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/overload/gw_ol.h"
#include "queue/oq_relay.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
/* a stop still tries the queued releases this long, until one fails */
#define RELEASER_STOP_WAIT_MS 2000

typedef struct item {
    struct item *next;
    oq_order_t o;
    int final_status; /* oq_status_t to set once released, or -1 */
    char reason[128];
    uint64_t not_before_ms;
    uint32_t backoff_ms;
    uint32_t tries;
    bool commit;        /* make the spool's release event durable before the first try */
    oq_pos_t commit_to; /* where that event ends */
} item_t;

struct gw_releaser {
    gw_server_t *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item_t *head, **tail; /* FIFO of pending releases (mu) */
    item_t *busy;         /* the one being released now (mu) */
    bool stop;
    uint64_t stop_until_ms; /* stopping: what is queued is still tried until then (mono) */
    bool started;
    _Atomic uint64_t pending, done, retries;
};

/* it releases order_id (a give-back only if givebacks) */
static bool releases(const item_t *it, const char *order_id, bool givebacks)
{
    return it && strcmp(it->o.order_id, order_id) == 0 && (givebacks || !it->o.giveback);
}

static void finish(gw_releaser_t *rl, item_t *it)
{
    if (it->final_status >= 0)
        gw_orders_set_status(rl->srv->stores.orders, it->o.order_id, &it->o,
                             (oq_status_t)it->final_status, it->reason[0] ? it->reason : NULL);
    atomic_fetch_add_explicit(&rl->done, 1, memory_order_relaxed);
}

/*---- the cores' order table and the replay's shell (gw_replay.h) ----*/

static bool book_get(void *ud, const char *order_id, oq_order_t *out)
{
    return gw_orders_get(ud, order_id, out);
}

static void book_put(void *ud, const oq_order_t *o)
{
    gw_orders_put(ud, o);
}

static void book_set_status(void *ud, const char *order_id, const oq_order_t *o, oq_status_t st,
                            const char *reason)
{
    gw_orders_set_status(ud, order_id, o, st, reason);
}

void gw_server_book(gw_server_t *srv, gw_book_t *out)
{
    *out = (gw_book_t){
        .get = book_get, .put = book_put, .set_status = book_set_status, .ud = srv->stores.orders};
}

static void replay_order(void *ud, const oq_order_t *o)
{
    gw_identity_order_put(ud, o->order_id, o->user_id);
}

static void replay_release(void *ud, const oq_order_t *o, int rc, int final_status,
                           const char *reason)
{
    if (!gw_release_ok(o, rc)) /* e.g. Redis down at start: the releaser retries */
        gw_releaser_push(ud, o, final_status, reason, NULL); /* read from the spool: on disk */
}

void gw_replay_init(gw_server_t *srv, gw_replay_ctx_t *ctx, gw_book_t *book,
                    bool settled_before_release)
{
    memset(ctx, 0, sizeof(*ctx));
    gw_server_book(srv, book);
    ctx->inv = srv->stores.inv;
    ctx->book = book;
    ctx->node_id = srv->node.id;
    ctx->settled_before_release = settled_before_release;
    ctx->released = oq_spool_released(srv->stores.spool);
    ctx->on_order = replay_order;
    ctx->on_release = replay_release;
    ctx->ud = srv;
}

/* One try of it, taken off the queue (rl->busy, mu not held): true when done. */
static bool try_one(gw_releaser_t *rl, item_t *it)
{
    const oq_order_t *o = &it->o;
    if (it->commit) { /* a give-back's event on disk first (gw_release_unaccepted) */
        it->commit = false;
        int crc = oq_spool_commit_to(rl->srv->stores.spool, it->commit_to);
        if (crc != 0)
            cm_log_error("gw", "cannot make a give-back durable in the spool", "order=%s err=%s",
                         o->order_id, cm_errname(crc));
    }
    int rc = gw_units_release(rl->srv->stores.inv, o);
    if (o->giveback && rc == CM_ECONFLICT) /* claimed: answered 202 elsewhere, kept */
        cm_log_info("gw", "give-back refused: a keyed retry was accepted with the order",
                    "order=%s sale=%s", o->order_id, o->sale_id);
    bool ok = gw_release_ok(o, rc);
    if (ok) {
        finish(rl, it);
        if (it->tries)
            cm_log_info("gw", "release succeeded after retries", "order=%s tries=%u",
                        it->o.order_id, it->tries + 1);
    } else {
        it->tries++;
        atomic_fetch_add_explicit(&rl->retries, 1, memory_order_relaxed);
        if (it->tries == 1 || it->tries % 32 == 0)
            cm_log_warn("gw", "release failed; retrying", "order=%s err=%s tries=%u",
                        it->o.order_id, cm_errname(rc), it->tries);
        it->backoff_ms = it->backoff_ms ? it->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (it->backoff_ms > BACKOFF_MAX_MS)
            it->backoff_ms = BACKOFF_MAX_MS;
        it->not_before_ms = cm_mono_ms() + it->backoff_ms;
    }
    return ok;
}

/* The queue's two ends (mu held). */
static void enqueue(gw_releaser_t *rl, item_t *it)
{
    it->next = NULL;
    *rl->tail = it;
    rl->tail = &it->next;
}

static item_t *pop(gw_releaser_t *rl)
{
    item_t *it = rl->head;
    rl->head = it->next;
    if (!rl->head)
        rl->tail = &rl->head;
    return it;
}

/* Tries the queue's head once (mu held, released for the try, rl->busy meanwhile):
 * done, or to the back (one stuck order does not hold up the others). */
static bool try_head(gw_releaser_t *rl)
{
    item_t *it = rl->busy = pop(rl);
    pthread_mutex_unlock(&rl->mu);
    bool ok = try_one(rl, it);
    pthread_mutex_lock(&rl->mu);
    rl->busy = NULL;
    if (ok) {
        atomic_fetch_sub_explicit(&rl->pending, 1, memory_order_relaxed);
        free(it);
    } else {
        enqueue(rl, it);
    }
    return ok;
}

static void *releaser_main(void *arg)
{
    gw_releaser_t *rl = arg;
    pthread_setname_np(pthread_self(), "fg-release");
    pthread_mutex_lock(&rl->mu);
    for (;;) {
        uint64_t now = cm_mono_ms();
        item_t *it = rl->head;
        /* Stopping: the releases queued (the give-backs of the workers' last
         * reserves among them) are still tried, for a bounded time; what is
         * left then is in the spool, replayed at the next start. */
        if (rl->stop && (!it || now >= rl->stop_until_ms))
            break;
        if (!it) {
            pthread_cond_wait(&rl->cv, &rl->mu);
            continue;
        }
        if (it->not_before_ms > now) {
            /* the head waits longest; a short sleep keeps this simple and cheap */
            uint64_t until = it->not_before_ms;
            if (rl->stop && until > rl->stop_until_ms)
                until = rl->stop_until_ms;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (until - now) * 1000000u;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&rl->cv, &rl->mu, &ts);
            continue;
        }
        bool ok = try_head(rl);
        /* Stopping, a failed try ends them: each further try would wait the
         * inventory's timeout again, past the stop's bound. The spool replays
         * what is left at the next start. */
        if (!ok && rl->stop)
            break;
    }
    pthread_mutex_unlock(&rl->mu);
    return NULL;
}

static gw_releaser_t *releaser_new(gw_server_t *srv)
{
    gw_releaser_t *rl = cm_xcalloc(1, sizeof(*rl));
    rl->srv = srv;
    rl->tail = &rl->head;
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->cv, NULL);
    srv->stores.releaser = rl;
    return rl;
}

void gw_releaser_open_stepped(gw_server_t *srv)
{
    (void)releaser_new(srv);
}

void gw_releaser_step(gw_server_t *srv)
{
    gw_releaser_t *rl = srv->stores.releaser;
    if (!rl || rl->started)
        return;
    uint64_t now = cm_mono_ms();
    pthread_mutex_lock(&rl->mu);
    /* each once: stepped, the queue holds every pending release and none is busy */
    for (uint64_t n = atomic_load(&rl->pending); n > 0 && rl->head; n--) {
        if (rl->head->not_before_ms > now) /* not due: to the back, untried */
            enqueue(rl, pop(rl));
        else
            (void)try_head(rl);
    }
    pthread_mutex_unlock(&rl->mu);
}

int gw_releaser_start(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_releaser_t *rl = releaser_new(srv);
    int e = pthread_create(&rl->thread, NULL, releaser_main, rl);
    if (e != 0) {
        snprintf(errbuf, errlen, "cannot start the release thread: %s", strerror(e));
        return CM_EIO;
    }
    rl->started = true;
    return 0;
}

void gw_releaser_stop(gw_server_t *srv)
{
    gw_releaser_t *rl = srv->stores.releaser;
    if (!rl)
        return;
    pthread_mutex_lock(&rl->mu);
    rl->stop = true;
    rl->stop_until_ms = cm_mono_ms() + RELEASER_STOP_WAIT_MS;
    pthread_cond_broadcast(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
    if (rl->started)
        pthread_join(rl->thread, NULL);
    uint64_t left = 0;
    for (; rl->head; left++)
        free(pop(rl));
    if (left)
        cm_log_warn("gw", "releases still pending at stop; the spool replays them at start",
                    "pending=%llu", (unsigned long long)left);
    pthread_mutex_destroy(&rl->mu);
    pthread_cond_destroy(&rl->cv);
    free(rl);
    srv->stores.releaser = NULL;
}

void gw_releaser_push(gw_server_t *srv, const oq_order_t *o, int final_status, const char *reason,
                      const oq_pos_t *commit_to)
{
    gw_releaser_t *rl = srv->stores.releaser;
    item_t *it = cm_xcalloc(1, sizeof(*it));
    it->o = *o;
    it->final_status = final_status;
    it->commit = commit_to != NULL;
    if (commit_to)
        it->commit_to = *commit_to;
    if (reason)
        snprintf(it->reason, sizeof(it->reason), "%s", reason);
    pthread_mutex_lock(&rl->mu);
    enqueue(rl, it);
    atomic_fetch_add_explicit(&rl->pending, 1, memory_order_relaxed);
    pthread_cond_signal(&rl->cv);
    pthread_mutex_unlock(&rl->mu);
}

bool gw_releaser_pending(gw_server_t *srv, const char *order_id, bool givebacks)
{
    gw_releaser_t *rl = srv->stores.releaser;
    if (!rl || atomic_load_explicit(&rl->pending, memory_order_relaxed) == 0)
        return false;
    pthread_mutex_lock(&rl->mu);
    bool found = releases(rl->busy, order_id, givebacks);
    for (item_t *it = rl->head; it && !found; it = it->next)
        found = releases(it, order_id, givebacks);
    pthread_mutex_unlock(&rl->mu);
    return found;
}

void gw_releaser_stats(gw_server_t *srv, uint64_t *pending, uint64_t *done, uint64_t *retries)
{
    gw_releaser_t *rl = srv->stores.releaser;
    *pending = rl ? atomic_load_explicit(&rl->pending, memory_order_relaxed) : 0;
    *done = rl ? atomic_load_explicit(&rl->done, memory_order_relaxed) : 0;
    *retries = rl ? atomic_load_explicit(&rl->retries, memory_order_relaxed) : 0;
}

/* The "release" EVENT: the durable record that the units of an order go back. */
static int release_event(gw_server_t *srv, const oq_order_t *o, oq_status_t st, const char *reason,
                         bool giveback, oq_pos_t *end)
{
    oq_order_t ev;
    gw_release_event_fill(&ev, o, st, reason, giveback, cm_wall_ms());
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(&ev, buf, sizeof(buf));
    if (n < 0)
        return n;
    return oq_spool_append_event_end(srv->stores.spool, buf, (size_t)n, end);
}

int gw_compensate(gw_server_t *srv, const char *order_id, const oq_order_t *o, oq_status_t st,
                  const char *reason)
{
    oq_order_t ord;
    gw_book_t book;
    gw_server_book(srv, &book);
    int rc = gw_comp_check(&book, order_id, o, gw_releaser_pending(srv, order_id, false), &ord);
    if (rc != 0)
        return rc;
    /* Durable first, so a restart replays the release (memory inventory, or a
     * release still pending when the process stopped). */
    oq_pos_t end;
    rc = release_event(srv, &ord, st, reason, false, &end);
    if (rc == 0) /* fsync durability: on disk before the release (its own record only) */
        rc = oq_spool_commit_to(srv->stores.spool, end);
    if (rc != 0)
        cm_log_error("gw", "cannot record a release in the spool", "order=%s err=%s", order_id,
                     cm_errname(rc));
    rc = gw_comp_release(srv->stores.inv, &book, &ord, st, reason);
    if (rc < 0) {
        cm_log_warn("gw", "release failed; the releaser retries", "order=%s err=%s", order_id,
                    cm_errname(rc));
        gw_releaser_push(srv, &ord, (int)st, reason, NULL); /* committed above */
        return 0;
    }
    cm_log_info("gw", "units returned to stock", "order=%s sale=%s qty=%u status=%s", order_id,
                ord.sale_id, ord.qty, oq_status_name(st));
    return 0;
}

void gw_release_unaccepted(gw_server_t *srv, const oq_order_t *o, const char *why)
{
    /* A give-back: a keyed retry may have found the order on another gateway
     * and been answered 202 for it there (inv_claim); then it stays held. */
    oq_order_t gb = *o;
    gb.giveback = true;
    oq_pos_t end;
    int rc = release_event(srv, &gb, OQ_STATUS_FAILED, why, true, &end);
    if (rc != 0)
        cm_log_error("gw", "cannot record a release in the spool; retried in memory only",
                     "order=%s err=%s", o->order_id, cm_errname(rc));
    /* Durable first, as gw_compensate's release, but not on this worker loop: the
     * releaser commits it before its first try (the spool's group commit), as no
     * later order's sync may come to cover it (the spool full, the sale over). */
    gw_releaser_push(srv, &gb, -1, NULL, rc == 0 ? &end : NULL);
}

int gw_order_cancel(gw_server_t *srv, const oq_order_t *ord, const char *reason)
{
    if (ord->status == OQ_STATUS_FAILED || ord->status == OQ_STATUS_CANCELLED)
        return 1;
    if (!srv->stores.relay)
        return gw_compensate(srv, ord->order_id, ord, OQ_STATUS_CANCELLED, reason);
    /* Settlement decides: it cancels a settled order once and publishes the outcome. */
    return oq_relay_cancel(srv->stores.relay, ord, reason);
}
