/*
 * The Redis backend's sync thread (see inv_redis_internal.h): a subscriber on
 * flashgate:sales and a poll each second re-read every sale into the local
 * view; a stale cluster map is re-read here.
 */
#include "inventory/inv_redis_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <stddef.h>
#include <string.h>

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

int inv__redis_sync_start(rb_t *rb)
{
    const inv_cluster_transport_t *t = inv_cluster_transport();
    if (t && t->stepped) { /* the owner calls inv_redis_sync_step */
        rb->query = inv_cluster_sync_new(rb->cl, rb->admin_timeout_ms);
        return 0;
    }
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

void inv__redis_sync_stop(rb_t *rb)
{
    if (!rb->thr_started)
        return;
    uv_async_send(&rb->stop_async);
    uv_thread_join(&rb->thr);
    uv_run(&rb->sloop, UV_RUN_DEFAULT); /* any close callbacks left */
    uv_loop_close(&rb->sloop);
    rb->thr_started = false;
}

int inv_redis_sync_step(inv_t *inv)
{
    rb_t *rb = inv->backend;
    if (!rb || rb->thr_started || !rb->query)
        return CM_EINVAL;
    refresh_all(rb);
    return 0;
}
