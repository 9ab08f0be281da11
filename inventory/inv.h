/*
 * Inventory: the stock of each sale and each user's purchases, with one
 * atomic step that checks the per-user limit and the stock, takes the units,
 * and records the purchase (and its idempotency key).
 *
 * Backends sit behind a vtable (inv_backend.h): "memory" (one node, atomics)
 * and "redis://..." (a fleet; Lua script). The gateway never sees which.
 *
 * The inventory's "user" is the PERSON: the gateway passes the verified
 * person (identity.person_claim, else the account) wherever a user id is
 * taken here (inv_reserve_req_t.user_id, inv_replay, inv_release,
 * inv_giveback, inv_claim, inv_user_units; inv_order_user answers it), so
 * per_user_limit counts the units a person holds over all their accounts.
 * The order record keeps the account (oq_order_t.user_id) and names the
 * person beside it when they differ (oq_order_t.person, oq_order_person).
 * An idempotency key is deduplicated per (person, key); the gateway scopes
 * a verified buyer's key by the account first (gw_identity.c), so it stays
 * per account.
 *
 * Every sale also has a local view (inv_sale_t) that stays at the same address
 * for the life of the process, so HTTP workers read its state with plain
 * atomic loads and answer sold_out from a local flag without a round trip.
 */
#ifndef INV_H
#define INV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_SALE_ID_MAX 64  /* 1..64 of [A-Za-z0-9._-] */
#define INV_USER_ID_MAX 64  /* 1..64 of [A-Za-z0-9._-] */
#define INV_IDEM_KEY_MAX 128 /* 1..128 printable ASCII, no spaces */
#define INV_ORDER_ID_MAX 31 /* order ids are shorter; buffers are INV_ORDER_ID_MAX + 1 */

typedef struct inv inv_t;
typedef struct inv_sale inv_sale_t;
typedef struct inv_worker inv_worker_t;
struct uv_loop_s;

/* What an admin defines. starts_at_ms 0 = live now; ends_at_ms 0 = no end. */
typedef struct inv_sale_def {
    char sale_id[INV_SALE_ID_MAX + 1];
    int64_t stock;           /* total units of the sale (>= units already accepted) */
    uint32_t per_user_limit; /* units one user may hold, >= 1 */
    int64_t starts_at_ms;
    int64_t ends_at_ms;
} inv_sale_def_t;

/* A consistent snapshot of a sale. */
typedef struct inv_sale_info {
    char sale_id[INV_SALE_ID_MAX + 1];
    int64_t stock_total;     /* units made available: the definition plus restocks */
    int64_t stock_left;      /* stock_total - accepted_units (never negative) */
    int64_t accepted_units;  /* units held by accepted, not released, orders */
    int64_t accepted_orders; /* orders accepted, not released */
    uint32_t per_user_limit;
    int64_t starts_at_ms;
    int64_t ends_at_ms;
    uint64_t version;        /* bumped by every admin change */
} inv_sale_info_t;

typedef enum {
    INV_RESERVED = 0,      /* units taken; req->order_id is the new order */
    INV_SOLD_OUT = 1,      /* not enough stock left; nothing changed */
    INV_LIMIT_REACHED = 2, /* the user would exceed per_user_limit; nothing changed */
    INV_DUPLICATE = 3,     /* this user's idempotency key was used before: req->order_id and
                              req->qty now hold the original order; nothing changed */
    INV_UNKNOWN_SALE = 4,  /* no such sale */
    INV_PENDING = 5,       /* answered later through req->done on the worker's loop */
} inv_outcome_t;

typedef struct inv_reserve_req inv_reserve_req_t;
#define INV_RTT_NONE UINT64_MAX
typedef void (*inv_reserve_cb)(inv_reserve_req_t *req, int outcome);

struct inv_reserve_req {
    inv_sale_t *sale;                          /* from inv_sale_find */
    char user_id[INV_USER_ID_MAX + 1];         /* the person (see the top of this file) */
    uint32_t qty;                              /* in; on INV_DUPLICATE, the original qty */
    char idem_key[INV_IDEM_KEY_MAX + 1];       /* "" = none */
    /* inv_idem_key_fp of the Idempotency-Key as the client sent it, when
     * idem_key is another form of it (identity's scoped key); 0: idem_key
     * is the raw key, or unknown (see inv_sale_key_may_hold) */
    uint32_t raw_key_fp;
    char order_id[INV_ORDER_ID_MAX + 1];       /* in: the id to record; out on INV_DUPLICATE */
    /* out */
    int64_t stock_left;                        /* after the step, when known (else -1) */
    uint32_t user_units;                       /* units the user holds after the step */
    bool claimed; /* on INV_DUPLICATE: a gateway claimed the order (inv_claim) */
    /* The backend's own time for the call, when it has one: from the write
     * that carried the command to the kernel's receive stamp of the answer
     * (inv_redis_worker.c), so the caller's loop queueing is not in it.
     * INV_RTT_NONE when answered inline or unknown. */
    uint64_t rtt_us;
    /* asynchronous completion (Redis): called once, on the worker's loop thread */
    inv_reserve_cb done;
    void *data;
};

/* One default per fact: the config table (inventory.redis_pool,
 * inventory.redis_timeout, inventory.redis_batch) and the URL parameters (pool=,
 * timeout_ms=, batch=) use these.
 * One connection per worker: every reserve of a loop iteration goes out in one
 * write and redis-server reads and answers it with one read and one write; two
 * connections took a read and a write each per wakeup of redis-server, and at
 * 64 connections that was +0.2-0.5 us of its system time per reserve
 * (VARIANTS='pool2|build|--inventory-redis-pool 2;pool1|build|' python3 bench/redis_ab.py).
 * The timeout sits inside the buy path's latency budget (p99 < 50 ms) with
 * 10 ms to spare for the gateway's own queue and work: at 50 ms every call
 * that timed out was answered past the budget, and a Redis stall longer than
 * the timeout showed as a window of 503s at 50-56 ms; 40 ms converged 9 of 9
 * dependency-bound steps against 6 of 9 at the same goodput (python3
 * bench/overload.py --cases dep --loads 5 --steps 9, with each timeout). */
#define INV_REDIS_POOL_DEFAULT 1
#define INV_REDIS_TIMEOUT_MS_DEFAULT 40
/* Reserves of one sale per script call at most (inventory.redis_batch, the URL's
 * batch=; 1: a call each): a loop iteration's reserves of a sale go out as one
 * call of INV_REDIS_LUA_RESERVE_BATCH, 4.5 against 8.3 us of redis-server CPU
 * a reserve at 32 a call (python3 bench/redis_ab.py, VARIANTS with
 * --inventory-redis-batch 1 and 32). 64 holds the 12-30
 * reserves of a wrk -c64 iteration; redis-server runs a full batch in ~0.3 ms,
 * and holds every other client that long. */
#define INV_REDIS_BATCH_DEFAULT 64
#define INV_REDIS_BATCH_MAX 256

/* What the configuration says about the backend, beside its URL. */
typedef struct inv_opts {
    const char *data_dir;       /* see inv_open */
    uint32_t max_sales;
    uint32_t redis_pool;        /* 0 = the URL's pool=, else INV_REDIS_POOL_DEFAULT */
    uint32_t redis_batch;       /* 0 = the URL's batch=, else INV_REDIS_BATCH_DEFAULT */
    uint32_t redis_timeout_ms;  /* 0 = the URL's timeout_ms=, else the default */
    const char *redis_password; /* NULL or "" = the URL's, else none */
    uint64_t max_held_orders;   /* memory backend: 0 = INV_MEM_MAX_HELD_DEFAULT */
} inv_opts_t;

/*
 * The memory backend keeps each held order (accepted, not released) in 24
 * bytes of a per-sale open-addressing table, 27-34 bytes with the table's
 * room to grow in a sale of some thousands of orders or more (more in small
 * sales: each of 256 shards starts at 192 bytes; and up to ~55-64 between
 * ~30,000 and ~60,000 orders, while the shards' tables cross into whole
 * pages), and at most max_held_orders of them over all sales
 * (inventory.max_held_orders): past it a buy that would hold a new order gets
 * CM_EFULL (the gateway answers 503), nothing is taken, and refused_full
 * counts it. Releases make room again. A replay at start is never refused
 * (the order was accepted): over_cap_replayed counts those past the cap.
 */
#define INV_MEM_MAX_HELD_DEFAULT 20000000
typedef struct inv_mem_stats {
    uint64_t held_orders, max_held_orders;
    uint64_t table_bytes; /* the tables' slots, all sales */
    /* raw Idempotency-Key fingerprints in the sales' sold-out key sets, all
     * sales: at most max_held_orders (inv_keyset.h) */
    uint64_t key_fingerprints;
    uint64_t refused_full, over_cap_replayed;
} inv_mem_stats_t;
/* The memory backend's table figures; CM_ENOTFOUND for another backend. Thread-safe. */
int inv_mem_stats(inv_t *inv, inv_mem_stats_t *out);

/* inv_open with the configuration's values (they win over the URL's parameters). */
int inv_open_opts(inv_t **out, const char *url, const inv_opts_t *opts, char *errbuf,
                  size_t errlen);

/*
 * Opens the backend named by `url`: "memory" or "redis://[:password@]host:port[/db]".
 * `data_dir` is where the memory backend keeps its sale definitions (sales.json)
 * so that a restart finds them; may be NULL in tests (nothing persisted).
 * Returns 0 and *out, or a negative cm_err_t with a reason in errbuf.
 * Single-threaded init; may block (connects).
 */
int inv_open(inv_t **out, const char *url, const char *data_dir, uint32_t max_sales,
             char *errbuf, size_t errlen);
void inv_close(inv_t *inv);
/* "memory" or "redis": for logs and stats; decide on inv_caps(), not on the name. */
const char *inv_backend_name(const inv_t *inv);

/* What a backend is, for the parts that must act differently. */
#define INV_CAP_REBUILT_FROM_SPOOL 0x1u /* keeps nothing itself: inv_replay rebuilds it at start
                                           from the spool, whose segments must then be kept */
#define INV_CAP_SHARED 0x2u             /* one remote store shared by a fleet of gateways */
/* INV_CAP_* flags of the backend. Thread-safe. */
unsigned inv_caps(const inv_t *inv);

/*
 * A per-loop handle for the buy path (a Redis backend keeps its async
 * connections here). Loop thread only. `loop` may be NULL for the memory
 * backend and for blocking callers (tests, admin).
 */
int inv_worker_open(inv_t *inv, struct uv_loop_s *loop, inv_worker_t **out);
void inv_worker_close(inv_worker_t *w);
/*
 * A reserve whose outcome is unknown when its worker closes: it was sent and
 * its answer never came (or came after its caller heard "unavailable"), or its
 * give-back still waited for a connection. Redis may hold its units with no
 * order behind them; the callee gives them back (inv_giveback, durably: the
 * gateway spools a give-back event and its releaser sends it).
 */
typedef void (*inv_orphan_fn)(void *ctx, const char *sale_id, const char *user_id, uint32_t qty,
                              const char *order_id);
/*
 * Calls still in flight on w: reserves, claims and give-backs sent and not
 * answered, and give-backs waiting for a connection (these are retried now
 * if one is up). 0 for a backend that answers inline. A worker that closes
 * gracefully runs its loop until this is 0, for a bounded time, then closes
 * with inv_worker_close_orphans. Loop thread of w only.
 */
size_t inv_worker_inflight(inv_worker_t *w);
/*
 * inv_worker_close, handing fn every reserve whose outcome is still unknown
 * (inv_orphan_fn) instead of leaving its units held. fn runs before this
 * returns, on the calling thread; NULL: they are logged and stay held.
 */
void inv_worker_close_orphans(inv_worker_t *w, inv_orphan_fn fn, void *ctx);
/*
 * Sends the reserves this loop iteration queued (a Redis backend batches them
 * per iteration). A libuv loop run by uv_run does it by itself, in its prepare
 * phase; a loop that runs libuv inside its own (gw_h1_run: uv_run only when
 * libuv has I/O or a timer due, so its prepare phase does not come every
 * iteration) calls this at the end of each iteration, before it sleeps.
 * No-op for a backend that queues nothing, and for w NULL.
 */
void inv_flush(inv_worker_t *w);

/*
 * The local view of a sale, or NULL if unknown. The pointer stays valid until
 * inv_close. Thread-safe, lock-free after the lookup, never blocks.
 */
inv_sale_t *inv_sale_find(inv_t *inv, const char *sale_id);

/*
 * A one-sale memo of inv_sale_find for one thread (a worker loop): a crowd buys one sale,
 * and each lookup otherwise takes the map's shared read lock (two locked instructions on
 * a line every worker writes) and a SipHash of the id, ~380 instructions, ~5% of a
 * sold-out answer (callgrind: python3 bench/profile.py build sold calls). The memo is
 * checked against the map's count of removals: a removed sale is looked up again.
 * It keeps the last id that found no sale too, checked against the map's count
 * of additions (a crowd polling a sale not created yet: the 404 costs no
 * lookup). Zero-initialise it.
 */
typedef struct inv_sale_memo {
    inv_sale_t *sale;
    uint64_t removals;
    char id[INV_SALE_ID_MAX + 1];
    uint64_t additions; /* when miss_id found no sale */
    char miss_id[INV_SALE_ID_MAX + 1]; /* "" = none */
} inv_sale_memo_t;

/* inv_sale_find through m (owned by the calling thread). */
inv_sale_t *inv_sale_find_memo(inv_t *inv, inv_sale_memo_t *m, const char *sale_id);
/* Fills *out from the local view (may lag the backend by < 1 s in a fleet). Thread-safe. */
void inv_sale_snapshot(const inv_sale_t *sale, inv_sale_info_t *out);
/* What a buy checks of its sale, read as inv_sale_snapshot reads it (under
 * the sale view's seqlock: one publish's terms, never a mix of two): the buy
 * path's snapshot without the copies it does not read. */
typedef struct inv_sale_terms {
    int64_t starts_at_ms, ends_at_ms;
    uint32_t per_user_limit;
} inv_sale_terms_t;
void inv_sale_terms(const inv_sale_t *sale, inv_sale_terms_t *out);
/* The local sold-out flag: true once stock_left reached 0 and no restock since. Thread-safe. */
bool inv_sale_sold_out(const inv_sale_t *sale);
/*
 * false only if no order of the sale could be a retry of the raw key whose
 * inv_idem_key_fp is raw_key_fp (any user's): a keyed buy on a sold-out sale
 * is then answered sold out like an unkeyed one, with nothing verified or
 * looked up. true may be a false positive (a fingerprint, a released order,
 * a set saturated by orders whose raw key is unknown), never a false
 * negative. The memory backend keeps the fingerprints per sale (inv_mem.c,
 * mem_sale_t.keys); Redis answers true (the order may have been taken by
 * another gateway: docs/identity.md). Thread-safe.
 */
bool inv_sale_key_may_hold(inv_t *inv, const inv_sale_t *sale, uint32_t raw_key_fp);
/* The 32-bit fingerprint of a raw Idempotency-Key that inv_sale_key_may_hold
 * and inv_reserve_req_t.raw_key_fp take: SipHash under inv_idem_fp_key_set's
 * secret (until it is set, under a key drawn per process), never 0 for a key
 * ("" gives 0). Thread-safe. */
uint32_t inv_idem_key_fp(const char *key);
/*
 * Keys inv_idem_key_fp with a 16-byte secret that outlives the process (the
 * gateway derives it from its status key), so that a fingerprint an order
 * record keeps (inv_idem_fp_stamp) still means its raw key after a restart.
 * Copies the secret. Single-threaded init, before any other inv_ call.
 */
void inv_idem_fp_key_set(const uint8_t secret[16]);
/*
 * The form of a fingerprint a record keeps (an order's key_fp, a lottery
 * entry's): a 20-bit tag of the secret above the 32 bits, 1..2^52-1; 0 for
 * fp 0 or before inv_idem_fp_key_set. A keyed 32-bit hash: it does not reveal
 * the raw key. Thread-safe after the key is set.
 */
uint64_t inv_idem_fp_stamp(uint32_t fp);
/* The fingerprint of a stamp made under the current secret; 0 (unknown) for
 * 0 or a stamp of another secret (status.key replaced). Thread-safe. */
uint32_t inv_idem_fp_unstamp(uint64_t stamp);
/* Calls fn for every known sale (admin listing). Thread-safe. */
void inv_sale_foreach(inv_t *inv, void (*fn)(inv_sale_t *sale, void *ctx), void *ctx);

/*
 * The atomic step. Returns an inv_outcome_t: INV_RESERVED, INV_SOLD_OUT,
 * INV_LIMIT_REACHED, INV_DUPLICATE, INV_UNKNOWN_SALE when answered at once
 * (req->done is then NOT called), INV_PENDING when req->done will be called
 * later on w's loop thread with the outcome or an error, or a negative
 * cm_err_t (CM_EBACKEND, CM_ETIMEOUT, CM_EFULL (memory: max_held_orders):
 * nothing was reserved).
 * Loop thread of w only. The memory backend never returns INV_PENDING.
 */
int inv_reserve(inv_worker_t *w, inv_reserve_req_t *req);
/*
 * inv_reserve for an order id that must never be reserved twice, whatever
 * happened to its first reservation (the fleet draw's winners, gw_fair_fleet.c):
 * besides inv_reserve's outcomes, INV_RESERVED_BEFORE when this call reserved
 * the order id before and it has been released since (failed, cancelled,
 * given back): nothing changed. A reservation and its mark are one atomic
 * step; no release removes the mark (it goes with the sale). req->idem_key
 * must be set (a held order is found by it: INV_DUPLICATE). The Redis backend
 * needs a loop-less handle (inv_worker_open with no loop): a blocking call.
 * A backend of one gateway (memory) just reserves. Not the buy path's step.
 */
#define INV_RESERVED_BEFORE 6
int inv_reserve_once(inv_worker_t *w, inv_reserve_req_t *req);
/*
 * A hint that inv_reserve of user_id (a valid id) in sale comes soon: the
 * memory backend fetches the user's place in its table into the cache, so
 * that the reserve's cache miss overlaps the caller's work in between.
 * Changes nothing. Loop thread of w only.
 */
void inv_prefetch(inv_worker_t *w, inv_sale_t *sale, const char *user_id);

/*
 * Admin operations. They may block (a Redis round trip) and so run on the
 * admin thread, never on a worker loop. Each returns 0 and the sale's new
 * state in *out (may be NULL), or a negative cm_err_t with a reason in errbuf
 * (CM_EINVAL: the request breaks a rule, nothing changed; CM_ENOTFOUND;
 * CM_EBACKEND; inv_sale_put: CM_ECONFLICT for the id of a sale deleted with
 * orders held from a memory backend with a data_dir: the spool replays them).
 * Thread-safe.
 */
int inv_sale_put(inv_t *inv, const inv_sale_def_t *def, inv_sale_info_t *out, char *errbuf,
                 size_t errlen);
int inv_restock(inv_t *inv, const char *sale_id, int64_t add, inv_sale_info_t *out,
                char *errbuf, size_t errlen);
/*
 * Restock made idempotent by an operator's key (1..128 visible ASCII chars):
 * the first call with `key` for this sale adds the units and returns 0; any
 * later call with the same key changes nothing and returns
 * INV_RESTOCK_REPLAYED with the current state in *out, so a retried admin
 * request never adds twice. The Redis backend keeps the keys with the sale;
 * the memory backend keeps the last INV_RESTOCK_KEYS_MEM keys of each sale in
 * memory (not across a restart). key NULL or "" = inv_restock.
 */
#define INV_RESTOCK_REPLAYED 1
#define INV_RESTOCK_KEYS_MEM 256
int inv_restock_keyed(inv_t *inv, const char *sale_id, int64_t add, const char *key,
                      inv_sale_info_t *out, char *errbuf, size_t errlen);
/* The exact state from the backend (not the local view). */
int inv_sale_get(inv_t *inv, const char *sale_id, inv_sale_info_t *out);

/*
 * Compensation: gives back the units of `order_id` (user `user_id`, or "" for whoever
 * holds it; `qty` units) and frees the user's purchase slot. Exactly once per order:
 * returns 0 the first time, CM_ENOTFOUND if the order is unknown or was released already
 * (nothing changes). Thread-safe; may block (admin/settlement path).
 */
int inv_release(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                const char *order_id);

/*
 * A give-back: inv_release of an order whose client was not told 202 (its
 * reserve answered too late, or its spool write failed). Returns what
 * inv_release returns, or CM_ECONFLICT, nothing changed, if a gateway claimed
 * the order (inv_claim): a keyed retry found it and was answered 202 for it,
 * so it stays held. A backend of one gateway has no claims: inv_release.
 */
int inv_giveback(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                 const char *order_id);

/*
 * Claims order req->order_id of req->user_id in req->sale, found held by a
 * keyed retry (INV_DUPLICATE) that the caller is about to accept as its own:
 * another gateway of the fleet, or an earlier life of this one, reserved it,
 * and its client was perhaps never told 202. From then on a give-back leaves
 * it held. Returns INV_RESERVED (claimed: the order is held and may be
 * answered 202), CM_ENOTFOUND (given back meanwhile: the key is free, no
 * 202), INV_PENDING (req->done is called later on w's loop thread with one of
 * those or an error), or another negative cm_err_t. A backend of one gateway
 * answers INV_RESERVED at once. Loop thread of w only.
 */
int inv_claim(inv_worker_t *w, inv_reserve_req_t *req);

/*
 * Start-up replay (memory backend): records an order that the spool says was
 * accepted before a restart, taking its units as the original step did, even
 * beyond the stock the sale has now (the release events that follow it in the
 * spool give units back; until then the sale reads 0 left and sold out). A
 * no-op for backends that keep their own state (Redis). Single-threaded init.
 */
int inv_replay(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
               const char *order_id, const char *idem_key);
/* inv_replay of an order whose record kept key_stamp (inv_idem_fp_stamp of its
 * raw Idempotency-Key's fingerprint, 0: none): the memory backend counts that
 * fingerprint in the sale's key set (inv_sale_key_may_hold) where idem_key is
 * identity's scoped form, whose raw key it cannot know (without a stamp of
 * the current secret, such an order saturates the set). */
int inv_replay_keyed(inv_t *inv, const char *sale_id, const char *user_id, uint32_t qty,
                     const char *order_id, const char *idem_key, uint64_t key_stamp);

/*
 * The user who holds order `order_id` of `sale_id` (accepted, not released):
 * copies it into user_out (INV_USER_ID_MAX + 1 bytes). Returns 0, CM_ENOTFOUND
 * or a negative cm_err_t. Admin path (an operator's cancel: the gateway's
 * order-status table keeps no user ids); thread-safe; may block (one Redis
 * round trip). The memory backend keeps a keyed hash of each user id, not the
 * id, and always answers CM_ENOTFOUND: release such an order with user "".
 */
int inv_order_user(inv_t *inv, const char *sale_id, const char *order_id, char *user_out);

/*
 * Deletes an ended sale (ends_at set and passed): its definition, stock,
 * purchases and idempotency keys, locally and (Redis) for the whole fleet;
 * persisted (memory: sales.json). Its orders stay in the spool, the topics
 * and the orders database. Returns 0, CM_ENOTFOUND, CM_ECONFLICT (live,
 * upcoming or without an end: reason in errbuf) or a negative cm_err_t.
 * Admin path; thread-safe; may block.
 */
int inv_sale_delete(inv_t *inv, const char *sale_id, int64_t now_ms, char *errbuf, size_t errlen);

/* Units `user_id` holds in `sale_id` (0 if none); for audits and tests. */
int inv_user_units(inv_t *inv, const char *sale_id, const char *user_id, uint32_t *out);

/* true if s is 1..max chars of [A-Za-z0-9._-] (sale and user ids). */
bool inv_id_valid(const char *s, size_t len, size_t max);
/* true if s is 1..INV_IDEM_KEY_MAX bytes of printable ASCII without spaces. */
bool inv_idem_key_valid(const char *s, size_t len);

/*
 * The Redis backend's circuit breaker: returns its state (0 closed, 1 open,
 * 2 half-open; on a Redis Cluster, where each master has its own, the most
 * open of them) and how often it opened since start in *opens, or -1 when
 * `inv` is not the Redis backend. Thread-safe (atomics).
 */
int inv_redis_breaker(inv_t *inv, uint64_t *opens);

#endif
