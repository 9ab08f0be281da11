/*
 * Private to inventory/inv_redis_*.c: the Redis backend's shared state and
 * the functions its files call in one another (prefix inv__redis_).
 *
 * The files call down only, in this order (tests/unit/gateway_interfaces.sh
 * refuses a cycle between them): inv_redis_admin.c
 * (the backend's ops) over inv_redis_sync.c and inv_redis_batch.c, the batches
 * over inv_redis_worker.c, the worker loops over inv_redis_conn.c, and all of
 * them over inv_cluster.c (the routed client and inv_redis_connect) and
 * inv_resp.c (the RESP writer, a leaf).
 *
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
 *   wait_replicas=0  a reserve (and a claim) is answered only once this many replicas have it
 *                    (WAIT after the script; 0..16, 0 = off): a failover after a
 *                    master crash then keeps every reserve that was answered
 *
 * Threads and connections: - Each worker loop (inv_worker_open with a loop) has `pool`
 * hiredis async contexts on that loop (our copy of adapters/libuv.h, see rl_attach).
 * inv_reserve sends one EVALSHA
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
#ifndef INV_REDIS_INTERNAL_H
#define INV_REDIS_INTERNAL_H

#include "inventory/inv_backend.h"
#include "inventory/inv_cluster.h"
#include "inventory/inv_redis.h"
#include "inventory/inv_redis_lua.h"
#include "inventory/inv_resp.h"
#include "common/cm_url.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
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

/* The scripts' text, by SC_* (inv_redis_conn.c). The plant build's can be
 * swapped for planted ones (inv__redis_plant_scripts, at open). */
#ifdef FLASHGATE_PLANTS
extern const char *inv__redis_script_text[SC_N];
void inv__redis_plant_scripts(void);
#else
extern const char *const inv__redis_script_text[SC_N];
#endif

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
    /* The transport set at open (inv_cluster_transport), NULL: hiredis. With an
     * async side, the worker loops talk through it and their timers and the
     * breakers read its clock (inv__redis_now_ms); the owner steps them. */
    const inv_cluster_transport_t *tr;

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

/* A reserve's answer (INV_REDIS_LUA_RESERVE): the code, the stock left, the user's units. */
typedef struct reserve_ans {
    int code;
    int64_t left;
    int64_t units;
    bool claimed; /* a duplicate's order carries a claim mark (INV_REDIS_CLAIM) */
} reserve_ans_t;

struct rw;

typedef struct rl_events {
    redisAsyncContext *context;
    struct rw *w; /* a worker's connection: its replies are timed (inv__redis_rw_read_stamp) */
    uv_poll_t handle;
    uv_prepare_t flush; /* active while a connected context has output queued */
    int events;         /* the mask the poll handle watches now */
    bool in_flush;      /* inside inv__redis_rl_flush: a new write request means "socket full" */
    int open_handles;   /* freed when both handles are closed */
} rl_events_t;

typedef struct rw rw_t;

typedef struct rconn {
    rw_t *w;
    int node;              /* the cluster node it talks to */
    bool is_inited;        /* retry timer initialised (opened on first use) */
    redisAsyncContext *ac; /* NULL while disconnected */
    bool is_up;            /* connect callback said OK */
    uint32_t backoff_ms;
    uv_timer_t retry;
    uint64_t retry_at_ms;  /* stepped (inv__redis_is_stepped): when the retry is due, 0: none */
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
    /* While batch_each hands out a batch's reply: its reserves that wait for
     * the replicas (wait_replicas), for one WAIT after the last. */
    rop_t **wait_batch;
    rop_t doubt;   /* sentinel: reserves whose answer was lost with the connection */
    uint32_t ndoubt;
    uint32_t nops;             /* ops allocated and not freed: calls in flight, doubts */
    uint64_t doubt_retry_ms;   /* inv_worker_inflight's last inv__redis_doubt_flush (loop time) */
    uint64_t tick_at_ms;       /* stepped: when the tick is due, 0: not armed */
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

/* inv_redis_conn.c: helpers, circuit breakers, blocking and async connections, receive stamps.
 * Each is described at
 * its definition. */
void inv__redis_sale_key(char *buf, const char *sale_id, const char *part);
bool inv__redis_reply_i64(const redisReply *r, int64_t *out);
bool inv__redis_reserve_parse(const redisReply *r, reserve_ans_t *out);
int inv__redis_parse_state(const redisReply *r, const char *sale_id, inv_sale_info_t *out);
void inv__redis_publish_local(rb_t *rb, const inv_sale_info_t *info);
bool inv__redis_br_allow(rb_t *rb, int node);
void inv__redis_br_success(rb_t *rb, int node);
void inv__redis_br_failure(rb_t *rb, int node);
redisReply *inv__redis_sync_eval_log(inv_cluster_sync_t *c, const rb_t *rb, int sc,
                                     const char *sale_id, int nkeys, int nargs, const char **args,
                                     int *err, bool quiet);
redisReply *inv__redis_sync_eval(inv_cluster_sync_t *c, const rb_t *rb, int sc, const char *sale_id,
                                 int nkeys, int nargs, const char **args, int *err);
redisReply *inv__redis_admin_cmd(rb_t *rb, const char *key, int *err, const char *fmt, ...);
int inv__redis_admin_state(rb_t *rb, const char *sale_id, inv_sale_info_t *out);
void inv__redis_rl_flush(uv_prepare_t *h);
uint64_t inv__redis_now_ms(const rb_t *rb);
void inv__redis_rx_stamps_on(int fd);
void inv__redis_rw_read_stamp(struct rw *w, int fd);
bool inv__redis_is_stepped(const rb_t *rb);
int inv__redis_async_send(const rb_t *rb, redisAsyncContext *ac, redisCallbackFn *cb, void *priv,
                          const char *cmd, size_t len);
int inv__redis_async_wait(const rb_t *rb, redisAsyncContext *ac, redisCallbackFn *cb, void *priv);
void inv__redis_async_read(const rb_t *rb, redisAsyncContext *ac);
void inv__redis_async_free(const rb_t *rb, redisAsyncContext *ac);
redisAsyncContext *inv__redis_async_open(rb_t *rb, int node, uv_loop_t *loop, void *data,
                                         redisConnectCallback *on_conn,
                                         redisDisconnectCallback *on_disc);

/* inv_redis_worker.c: worker loops, calls in flight, the RESP of a reserve, doubts. Each is
 * described at its definition. */
rop_t *inv__redis_op_new(rw_t *w);
void inv__redis_op_free(rop_t *op);
void inv__redis_free_ops_drain(rw_t *w);
void inv__redis_tick_closed(uv_handle_t *h);
void inv__redis_retry_closed(uv_handle_t *h);
void inv__redis_node_open(rw_t *w, int node);
rconn_t *inv__redis_node_conn(rw_t *w, int node, bool up_only);
int inv__redis_slot_node(rb_t *rb, uint16_t slot);
uint16_t inv__redis_sale_slot(const char *sale_id);
int inv__redis_sale_node(rb_t *rb, const char *sale_id);
int inv__redis_op_node(const rop_t *op);
void inv__redis_pending_add(rw_t *w, rop_t *op);
void inv__redis_op_complete(rop_t *op, int outcome);
void inv__redis_tick_cb(uv_timer_t *t);
uint64_t inv__redis_rw_now(const rw_t *w);
void inv__redis_tick_arm(rw_t *w, uint64_t delay_ms);
void inv__redis_rw_step(rw_t *w);
void inv__redis_script_head(resp_t *b, const rb_t *rb, int sc, bool reloaded, size_t nargs,
                            const char *sale_id);
int inv__redis_op_send(rop_t *op, int sc);
void inv__redis_doubt_add(rop_t *op);
void inv__redis_doubt_flush(rw_t *w);
bool inv__redis_is_retry_later(const redisReply *r);
void inv__redis_wait_reply(redisAsyncContext *ac, void *reply, void *privdata);
void inv__redis_reserve_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* inv_redis_batch.c: batches and the worker-facing ops. Each is described at its definition. */
void inv__redis_queue_send(rw_t *w);
void inv__redis_rw_send_cb(uv_prepare_t *h);
void inv__redis_flush(inv_worker_t *wk);
int inv__redis_reserve(inv_worker_t *wk, inv_reserve_req_t *req);
int inv__redis_reserve_once(inv_worker_t *wk, inv_reserve_req_t *req);
int inv__redis_claim(inv_worker_t *wk, inv_reserve_req_t *req);
int inv__redis_worker_open(inv_t *inv, struct uv_loop_s *loop, inv_worker_t *wk);
size_t inv__redis_worker_inflight(inv_worker_t *wk);
void inv__redis_worker_close(inv_worker_t *wk);

/* inv_redis_sync.c: the sync thread. Each is described at its definition. */
int inv__redis_sync_start(rb_t *rb);
void inv__redis_sync_stop(rb_t *rb);

#endif
